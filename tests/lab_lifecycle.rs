//! The lab end to end: hosts reachable over SSH, power loss, a cut cable, a crashed `lab up`,
//! and a `lab down` that leaves nothing behind.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::{eventually, eventually_while, hactl, lab, spawn_hactl, text, HOSTS, STATE_DIR};

const BRIDGE: &str = "hactl0";
const PROXY_PORT: u16 = 3142;

#[test]
fn every_host_answers_over_ssh_with_its_name_and_a_finished_boot() {
    let lab = lab();
    for host in HOSTS {
        assert_eq!(lab.run(host, "hostname"), host);
        assert_eq!(lab.run(host, "systemctl is-system-running"), "running");
    }
    let status = hactl(&["lab", "status", "-i", &lab.inventory()]);
    assert!(status.status.success(), "{}", text(&status));
    let known =
        std::fs::read_to_string(Path::new(STATE_DIR).join("known_hosts")).expect("known_hosts");
    for host in HOSTS {
        assert!(
            known.lines().any(|l| l.starts_with(&format!("{host},"))),
            "{host} not in known_hosts"
        );
    }
}

#[test]
fn hosts_reach_debian_packages_through_the_lab_proxy() {
    let lab = lab();
    let out = lab.run(
        "prmt-1",
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends jq >/dev/null && jq --version",
    );
    assert!(out.starts_with("jq-"), "{out}");
}

#[test]
fn a_killed_host_is_unreachable_and_boots_again_with_its_disk() {
    let mut lab = lab();
    lab.run("ptrn-3", "echo survives > /var/tmp/marker && sync");
    lab.act("kill", "ptrn-3");
    assert!(
        !lab.ssh("ptrn-3", "true").status.success(),
        "ptrn-3 still answers after a power loss"
    );
    let status = hactl(&["lab", "status", "-i", &lab.inventory()]);
    let table = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        !status.status.success(),
        "status claims all is well:\n{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ptrn-3") && l.contains("stopped")),
        "{table}"
    );
    lab.up();
    assert_eq!(lab.run("ptrn-3", "cat /var/tmp/marker"), "survives");
}

#[test]
fn a_cut_host_goes_away_and_comes_back_when_healed() {
    let lab = lab();
    let ssh_port = |host_ip: &str| {
        format!("{host_ip}:22")
            .parse::<SocketAddr>()
            .expect("address")
    };
    let addr = ssh_port("10.213.0.12");
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    lab.act("cut", "ptrn-2");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "ptrn-2 answers on port 22 with its cable cut"
    );
    assert!(!lab.ssh("ptrn-2", "true").status.success());
    lab.act("heal", "ptrn-2");
    eventually(
        "ptrn-2 answers on port 22 after heal",
        Duration::from_secs(20),
        || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .map(drop)
                .map_err(|e| e.to_string())
        },
    );
    assert_eq!(lab.run("ptrn-2", "hostname"), "ptrn-2");
}

#[test]
fn a_crashed_lab_up_is_recovered_and_down_leaves_nothing_behind() {
    let mut lab = lab();
    lab.down();
    assert_nothing_left();

    // `lab up` killed while it boots the hosts, as a crash or a Ctrl-C would leave it.
    let mut child = spawn_hactl(&["lab", "up", "-i", &lab.inventory()]);
    eventually_while(
        &mut child,
        "lab up started booting a host",
        Duration::from_secs(60),
        || {
            let booting = live_processes()
                .into_iter()
                .any(|cmd| cmd.contains("systemd-nspawn"));
            booting
                .then_some(())
                .ok_or_else(|| "no systemd-nspawn process".to_string())
        },
    );
    child.kill().expect("kill hactl");
    let _ = child.wait();

    lab.up();
    for host in HOSTS {
        assert_eq!(lab.run(host, "systemctl is-system-running"), "running");
    }
    lab.down();
    assert_nothing_left();
    let again = hactl(&["lab", "down", "-i", &lab.inventory()]);
    assert!(
        again.status.success(),
        "a second down fails:\n{}",
        text(&again)
    );
}

/// No bridge, link, live lab process, mount, proxy, cgroup or state of the lab is left.
fn assert_nothing_left() {
    assert!(
        !Path::new("/sys/class/net").join(BRIDGE).exists(),
        "bridge {BRIDGE} left"
    );
    for host in HOSTS {
        assert!(
            !Path::new("/sys/class/net")
                .join(format!("vb-{host}"))
                .exists(),
            "link of {host} left"
        );
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mountinfo.contains(STATE_DIR), "mounts left:\n{mountinfo}");
    let left: Vec<String> = live_processes()
        .into_iter()
        .filter(|cmd| cmd.contains(STATE_DIR) || cmd.contains("systemd-nspawn"))
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
    // Read from the kernel's table: with the bridge gone, a connect would leave the machine.
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = format!(":{PROXY_PORT:04X}");
    let listening = tcp.lines().skip(1).any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        fields.len() > 3 && fields[3] == "0A" && fields[1].ends_with(&port)
    });
    assert!(
        !listening,
        "something still listens on the apt proxy port {PROXY_PORT}"
    );
    assert!(!Path::new(STATE_DIR).exists(), "{STATE_DIR} left");
    for hierarchy in [
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        let cgroup = Path::new(hierarchy).join(format!("hactl-lab-{BRIDGE}"));
        assert!(!cgroup.exists(), "cgroup {} left", cgroup.display());
    }
}

/// Command lines of every process that is not a zombie (those wait only for init to reap them).
fn live_processes() -> Vec<String> {
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next());
        if matches!(state, Some("Z") | Some("X")) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            out.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
        }
    }
    out
}
