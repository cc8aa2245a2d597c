//! `hactl apply` end to end on the lab: the test role set (tests/roles, every module) checked,
//! applied, and applied again; a killed host, a changed host key and a dropped connection.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::events::{changed, events, recap};
use common::fixture::Fixture;
use common::release::{ReleaseServer, BINARY_OUTPUT};
use common::{eventually_while, lab, spawn_hactl, text, Lab, CLUSTER, HOSTS, STATE_DIR};

const SITE: &str = "tests/roles/site.yml";
const TOKEN: &str = "tok-Q8vX2-secret";

/// Removes everything the test role set makes, so a run starts from a clean host.
fn clean(lab: &Lab) {
    for host in HOSTS {
        lab.run(
            host,
            "systemctl disable --now hactl-test >/dev/null 2>&1; \
             rm -f /etc/systemd/system/hactl-test.service; systemctl daemon-reload; \
             rm -rf /etc/hactl-test /var/lib/hactltest /usr/local/bin/hactl-hello; \
             userdel hactltest 2>/dev/null; groupdel hactltest 2>/dev/null; \
             DEBIAN_FRONTEND=noninteractive apt-get -q -y remove tree bc >/dev/null 2>&1; true",
        );
    }
}

/// The test role set applied to the lab, with its release served by `server`.
fn apply(lab: &Lab, server: &ReleaseServer, cache: &Path, extra: &[&str]) -> Output {
    let url = format!("test_release_url={}", server.url());
    let sum = format!("test_release_sha256={}", server.sha256);
    let token = format!("test_api_token={TOKEN}");
    let inventory = lab.inventory();
    let mut args = vec![
        "apply", &inventory, "--site", SITE, "-e", &url, "-e", &sum, "-e", &token,
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(&args)
        .current_dir(common::repo())
        .env("HACTL_CACHE_DIR", cache)
        .output()
        .expect("run hactl apply")
}

/// The (host, "role : task") pairs a run reports changed.
fn changed_set(out: &Output) -> BTreeSet<(String, String)> {
    changed(&events(out)).into_iter().collect()
}

/// What a user would check on a host that nothing was done to.
fn assert_untouched(lab: &Lab) {
    for host in HOSTS {
        let out = lab.ssh(
            host,
            "test ! -e /etc/hactl-test && ! getent passwd hactltest && ! test -e /usr/local/bin/hactl-hello \
             && ! dpkg -s tree >/dev/null 2>&1 && ! test -e /etc/systemd/system/hactl-test.service",
        );
        assert!(
            out.status.success(),
            "{host} was changed by --check:\n{}",
            text(&out)
        );
    }
}

#[test]
fn check_reports_the_changes_the_first_apply_makes_and_the_second_apply_changes_nothing() {
    let lab = lab();
    clean(&lab);
    let server = ReleaseServer::start();
    let cache = tempfile::tempdir().expect("tempdir");

    let check = apply(
        &lab,
        &server,
        cache.path(),
        &["--check", "--output", "json"],
    );
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let planned = changed_set(&check);
    assert_untouched(&lab);
    for host in HOSTS {
        for task in [
            "testbase : system user",
            "testbase : packages",
            "testbase : released binary",
        ] {
            assert!(
                planned.contains(&(host.to_string(), task.to_string())),
                "--check did not plan `{task}` on {host}"
            );
        }
    }

    let first = apply(&lab, &server, cache.path(), &["--output", "json"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(
        changed_set(&first),
        planned,
        "the first apply did not make exactly the changes --check reported"
    );

    for host in HOSTS {
        assert_eq!(
            lab.run(
                host,
                "stat -c %a:%U:%G /etc/hactl-test/token /var/lib/hactltest"
            ),
            "600:hactltest:hactltest\n750:hactltest:hactltest"
        );
        assert_eq!(
            lab.run(host, "cat /etc/hactl-test/token"),
            format!("token={TOKEN}")
        );
        assert_eq!(
            lab.run(host, "readlink /etc/hactl-test/state"),
            "/var/lib/hactltest"
        );
        assert_eq!(lab.run(host, "hactl-hello"), BINARY_OUTPUT);
        assert_eq!(
            lab.run(host, "getent passwd hactltest | cut -d: -f6,7"),
            "/var/lib/hactltest:/usr/sbin/nologin"
        );
        lab.run(host, "dpkg -s tree bc >/dev/null && test -f /var/lib/hactltest/initialized && test -d /etc/hactl-test/conf.d");
        let conf = lab.run(host, "cat /etc/hactl-test/app.conf");
        assert!(conf.contains(&format!("name = {host}")), "{conf}");
        assert!(conf.contains("peer.prmt-1 = 10.213.0.21"), "{conf}");
        assert!(conf.contains("motd_lines = 2"), "{conf}");
        let monitoring = lab
            .ssh(host, "test -e /etc/hactl-test/monitoring")
            .status
            .success();
        assert_eq!(monitoring, host == "prmt-1", "the `when` marker on {host}");
    }
    for host in CLUSTER {
        assert_eq!(
            lab.run(
                host,
                "systemctl is-active hactl-test; systemctl is-enabled hactl-test"
            ),
            "active\nenabled"
        );
        let address = lab
            .run(host, "hostname -I")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        lab.run(host, &format!("python3 -c 'import urllib.request; urllib.request.urlopen(\"http://{address}:8081/\")'"));
    }
    let out = String::from_utf8_lossy(&first.stdout).to_string()
        + &String::from_utf8_lossy(&first.stderr);
    assert!(!out.contains(TOKEN), "the secret was printed");

    let second = apply(&lab, &server, cache.path(), &["--output", "json", "--diff"]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let second_events = events(&second);
    assert_eq!(changed(&second_events), vec![]);
    let stats = recap(&second_events);
    for host in HOSTS {
        assert_eq!(stats[host]["changed"], 0, "{host}: {stats}");
        assert_eq!(stats[host]["failed"], 0, "{host}: {stats}");
        assert!(
            stats[host]["ok"].as_u64().unwrap_or(0) > 10,
            "{host}: {stats}"
        );
    }
    assert_eq!(
        server.downloads(),
        1,
        "the release tarball is downloaded once and then cached"
    );
}

#[test]
fn a_changed_file_shows_a_diff_with_the_secret_masked_and_is_put_back() {
    let lab = lab();
    let server = ReleaseServer::start();
    let cache = tempfile::tempdir().expect("tempdir");
    let setup = apply(&lab, &server, cache.path(), &[]);
    assert_eq!(setup.status.code(), Some(0), "{}", text(&setup));
    lab.run("ptrn-1", "echo 'token=old-value' > /etc/hactl-test/token; echo local-edit >> /etc/hactl-test/app.conf");

    let check = apply(
        &lab,
        &server,
        cache.path(),
        &["--check", "--diff", "--limit", "ptrn-1"],
    );
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains("-local-edit"), "{out}");
    assert!(
        out.contains("/etc/hactl-test/token holds a secret: diff not shown"),
        "{out}"
    );
    assert!(!out.contains(TOKEN) && !out.contains("old-value"), "{out}");
    assert!(out.contains("ptrn-1 : ok="), "{out}");
    assert!(
        !out.contains("ptrn-2 :"),
        "--limit ptrn-1 ran elsewhere: {out}"
    );
    assert_eq!(
        lab.run("ptrn-1", "cat /etc/hactl-test/token"),
        "token=old-value"
    );

    let fix = apply(
        &lab,
        &server,
        cache.path(),
        &["--limit", "ptrn-1", "--tags", "secrets,config"],
    );
    assert_eq!(fix.status.code(), Some(0), "{}", text(&fix));
    let out = String::from_utf8_lossy(&fix.stdout);
    assert!(
        out.contains("ptrn-1 : ok=3 changed=2 unreachable=0 failed=0 skipped=0"),
        "{out}"
    );
    assert_eq!(
        lab.run("ptrn-1", "cat /etc/hactl-test/token"),
        format!("token={TOKEN}")
    );
}

#[test]
fn a_killed_host_is_unreachable_and_the_others_converge() {
    let mut lab = lab();
    let server = ReleaseServer::start();
    let cache = tempfile::tempdir().expect("tempdir");
    lab.act("kill", "ptrn-3");
    lab.run("ptrn-1", "rm -f /etc/hactl-test/motd");

    let out = apply(&lab, &server, cache.path(), &[]);
    lab.up();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ptrn-3 : ok=0 changed=0 unreachable=1 failed=0 skipped=0"),
        "{stdout}"
    );
    assert!(stdout.contains("unreachable: [ptrn-3] connect"), "{stdout}");
    for host in ["ptrn-1", "ptrn-2", "prmt-1"] {
        assert!(
            stdout.contains(&format!("{host} : ok="))
                && !stdout.contains(&format!("{host} : ok=0")),
            "{stdout}"
        );
        assert!(
            !stdout.contains(&format!("failed:     [{host}]")),
            "{stdout}"
        );
    }
    assert!(lab
        .run("ptrn-1", "cat /etc/hactl-test/motd")
        .starts_with("Managed by hactl"));
}

/// A site of one role, `probe`, whose tasks are `tasks`, on every host, in a temporary folder.
fn site_with(tasks: &str) -> (Fixture, String) {
    let site = Fixture::new();
    let file = site.site("all", "probe", tasks);
    (site, file.to_string_lossy().into_owned())
}

/// `hactl apply INVENTORY --site SITE`.
fn apply_site(inventory: &str, site: &str) -> Output {
    common::hactl(&["apply", inventory, "--site", site])
}

#[test]
fn an_undefined_variable_in_a_template_is_reported_with_its_line_and_touches_no_host() {
    let lab = lab();
    lab.run("ptrn-1", "rm -f /tmp/hactl-must-not-exist");
    let (site, site_file) = site_with(
        "- name: marker\n  file: {path: /tmp/hactl-must-not-exist, state: touch}\n\
         - name: config\n  template: {src: bad.conf.j2, dest: /tmp/bad.conf}\n",
    );
    site.file(
        "probe/templates/bad.conf.j2",
        "# line 1\nname = {{ inventory_hostname }}\nport = {{ no_such_port }}\n",
    );
    let out = apply_site(&lab.inventory(), &site_file);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("probe/templates/bad.conf.j2:3: undefined variable"),
        "{stderr}"
    );
    assert!(stderr.contains("no_such_port"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing may run: {}", text(&out));
    for host in HOSTS {
        let marker = lab.ssh(host, "test -e /tmp/hactl-must-not-exist");
        assert!(!marker.status.success(), "{host} was touched");
    }
}

#[test]
fn a_changed_host_key_is_refused_and_nothing_runs_on_that_host() {
    let lab = lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let lab_known_hosts = Path::new(STATE_DIR).join("known_hosts");
    let known = std::fs::read_to_string(&lab_known_hosts).expect("lab known_hosts");
    let ptrn1_key = known
        .lines()
        .find(|l| l.starts_with("ptrn-1,"))
        .and_then(|l| l.split_once(' '))
        .map(|(_, key)| key.to_string())
        .expect("ptrn-1's key");
    let forged: String = known
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((names, _)) if names.starts_with("ptrn-2,") => format!("{names} {ptrn1_key}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    let known_path = dir.path().join("known_hosts");
    std::fs::write(&known_path, &forged).expect("forged known_hosts");
    let inventory = std::fs::read_to_string(lab.inventory())
        .expect("lab inventory")
        .replace(
            &format!("hactl_known_hosts: {}", lab_known_hosts.display()),
            &format!("hactl_known_hosts: {}", known_path.display()),
        );
    let inventory_path = dir.path().join("lab.yml");
    std::fs::write(&inventory_path, inventory).expect("inventory");
    for host in HOSTS {
        lab.run(host, "rm -f /tmp/hactl-hostkey-marker");
    }
    let (_site, site_file) =
        site_with("- name: marker\n  file: {path: /tmp/hactl-hostkey-marker, state: touch}\n");

    let out = apply_site(&inventory_path.to_string_lossy(), &site_file);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("unreachable: [ptrn-2] connect — ptrn-2: HOST KEY CHANGED"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}:2", known_path.display())),
        "names the file and line: {stdout}"
    );
    assert!(
        !lab.ssh("ptrn-2", "test -e /tmp/hactl-hostkey-marker")
            .status
            .success(),
        "ran on ptrn-2"
    );
    for host in ["ptrn-1", "ptrn-3", "prmt-1"] {
        lab.run(
            host,
            "test -e /tmp/hactl-hostkey-marker && rm /tmp/hactl-hostkey-marker",
        );
    }
}

/// Heals a cut link even when the test fails.
struct Healed<'a>(&'a Lab, &'a str);

impl Drop for Healed<'_> {
    fn drop(&mut self) {
        let _ = common::hactl(&["lab", "heal", "-i", &self.0.inventory(), self.1]);
    }
}

#[test]
fn a_connection_dropped_mid_task_fails_that_host_within_the_timeout_and_the_others_finish() {
    let lab = lab();
    for host in HOSTS {
        lab.run(host, "rm -f /tmp/hactl-drop-started /tmp/hactl-drop-marker");
    }
    // The step must still run when the cable is cut: 8 s is the time the test has to cut it.
    let (_site, site_file) = site_with(
        "- name: slow step\n  shell: touch /tmp/hactl-drop-started && sleep 8 && touch /tmp/hactl-drop-marker\n",
    );
    let started = Instant::now();
    let mut child = spawn_hactl(&["apply", &lab.inventory(), "--site", &site_file]);
    eventually_while(
        &mut child,
        "the slow step started on ptrn-2",
        Duration::from_secs(60),
        || {
            let started = lab.ssh("ptrn-2", "test -e /tmp/hactl-drop-started");
            started
                .status
                .success()
                .then_some(())
                .ok_or_else(|| "no /tmp/hactl-drop-started on ptrn-2".to_string())
        },
    );
    let _healed = Healed(&lab, "ptrn-2");
    lab.act("cut", "ptrn-2");
    let out = child.wait_with_output().expect("hactl apply");
    let took = started.elapsed();

    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(took < Duration::from_secs(75), "took {took:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("unreachable: [ptrn-2] probe : slow step — ptrn-2: connection lost"),
        "{stdout}"
    );
    for host in ["ptrn-1", "ptrn-3", "prmt-1"] {
        assert!(
            stdout.contains(&format!("changed:    [{host}] probe : slow step")),
            "{stdout}"
        );
        lab.run(host, "test -e /tmp/hactl-drop-marker");
    }
}

#[test]
fn become_through_sudo_with_a_password_from_ask_become_pass() {
    let lab = lab();
    lab.run(
        "ptrn-1",
        "id deploy >/dev/null 2>&1 || useradd -m -s /bin/bash deploy; \
         echo 'deploy:Pw-deploy-7731' | chpasswd; \
         install -d -o deploy -g deploy -m 700 /home/deploy/.ssh; \
         install -o deploy -g deploy -m 600 /root/.ssh/authorized_keys /home/deploy/.ssh/authorized_keys; \
         echo 'deploy ALL=(ALL) ALL' > /etc/sudoers.d/deploy; chmod 440 /etc/sudoers.d/deploy; \
         rm -f /root/hactl-become-marker",
    );
    let (site, site_file) = site_with(
        "- name: root-only file\n  copy: {content: \"made as root\\n\", dest: /root/hactl-become-marker, mode: \"0600\"}\n",
    );
    site.file(
        "deploy.yml",
        &format!(
            "all:\n  vars:\n    ansible_ssh_private_key_file: {STATE_DIR}/id_ed25519\n    \
             hactl_known_hosts: {STATE_DIR}/known_hosts\n  hosts:\n    \
             ptrn-1: {{ansible_host: 10.213.0.11, ansible_user: deploy, ansible_become: true}}\n"
        ),
    );
    let inventory = site.path("deploy.yml");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "apply".to_string(),
            inventory.to_string_lossy().to_string(),
            "--site".to_string(),
            site_file.clone(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    let without = Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(args(&[]))
        .output()
        .expect("hactl apply");
    assert_eq!(without.status.code(), Some(2), "{}", text(&without));
    assert!(
        String::from_utf8_lossy(&without.stdout).contains("a password is required"),
        "{}",
        text(&without)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(args(&["--ask-become-pass"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hactl apply -K");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(b"Pw-deploy-7731\n").expect("password");
    }
    let with = child.wait_with_output().expect("hactl apply -K");
    assert_eq!(with.status.code(), Some(0), "{}", text(&with));
    assert!(!text(&with).contains("Pw-deploy-7731"));
    assert_eq!(
        lab.run(
            "ptrn-1",
            "stat -c %U:%a /root/hactl-become-marker; cat /root/hactl-become-marker"
        ),
        "root:600\nmade as root"
    );
    lab.run("ptrn-1", "rm -f /root/hactl-become-marker /etc/sudoers.d/deploy; userdel -r deploy 2>/dev/null; true");
}
