//! The lab: local test hosts as systemd-nspawn machines on a private bridge, made from the
//! lab inventory, so that apply, failover-test and probe run for real on one Linux machine.

mod config;
mod machine;
mod progress;
mod proxy;
mod rootfs;
mod sys;

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use config::{LabConfig, LabHost};
use progress::Progress;

use crate::cli::{LabAction, LabArgs};
use crate::exit;
use crate::inventory::{Inventory, InventoryError};

/// Packages the lab needs on this machine, by the program that tells whether each is there.
const HOST_PACKAGES: [(&str, &str); 7] = [
    ("debootstrap", "debootstrap"),
    ("systemd-nspawn", "systemd-container"),
    ("dbus-daemon", "dbus"),
    ("apt-cacher-ng", "apt-cacher-ng"),
    ("ip", "iproute2"),
    ("ssh", "openssh-client"),
    ("mount", "mount"),
];
/// How long a booting host may take to answer over SSH with a finished boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The lab's settings in the inventory cannot be used: nothing was done.
    #[error("{0}")]
    Config(String),
    /// The lab is not in a state to do what was asked (down, a machine stopped, ...).
    #[error("{0}")]
    State(String),
    #[error("the lab needs root (it makes a bridge, mounts and containers) — run it with sudo")]
    NotRoot,
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Timeout(String),
}

/// Runs a `hactl lab` action.
pub fn run(args: &LabArgs) -> Result<u8, LabError> {
    let inventory = Inventory::load(&args.inventory)?;
    let config = LabConfig::from_inventory(&inventory)?;
    match &args.action {
        LabAction::Up => up(&config)?,
        LabAction::Down => down(&config)?,
        LabAction::Status => return Ok(status(&config)),
        LabAction::Ssh { host, command } => return ssh(&config, host, command),
        LabAction::Kill { host } => kill(&config, host)?,
        LabAction::Cut { host } => set_link(&config, host, false)?,
        LabAction::Heal { host } => set_link(&config, host, true)?,
    }
    Ok(exit::OK)
}

/// Makes whatever is missing and boots every host that is not running; returns once every
/// host answers over SSH with a finished boot.
pub fn up(config: &LabConfig) -> Result<(), LabError> {
    require_root()?;
    let started = Instant::now();
    let progress = Progress::new();
    install_host_packages(&progress)?;
    check_network(config)?;
    ensure_system_bus(config)?;
    remove_strays(config, &progress)?;
    if !rootfs::base_is_ready(config) {
        progress.step("building the base root file system with debootstrap (once; cached)");
        rootfs::ensure_base(config)?;
    }
    progress.step("bridge and apt proxy");
    ensure_bridge(config)?;
    proxy::ensure(config)?;
    progress.step("keys");
    rootfs::ensure_key(&config.private_key, "hactl-lab")?;
    let public_key = read(&rootfs::public_key_path(&config.private_key))?;
    write_known_hosts(config)?;
    let mut booting = vec![];
    let mut pids = vec![];
    for host in &config.hosts {
        if let Some(pid) = machine::nspawn_pid(config, &host.name) {
            pids.push(pid);
            continue;
        }
        progress.step(&format!("booting {}", host.name));
        let root = rootfs::prepare(config, host, &public_key)?;
        let _ =
            std::fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&host.name));
        pids.push(machine::spawn(config, &host.name, &root)?);
        booting.push(host.name.clone());
    }
    progress.step("waiting for every host to answer over SSH");
    let results: Vec<(String, Result<String, LabError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = config
            .hosts
            .iter()
            .zip(pids)
            .map(|(h, pid)| {
                (
                    h.name.clone(),
                    scope.spawn(move || wait_booted(config, h, pid)),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, handle)| {
                let result = handle
                    .join()
                    .unwrap_or_else(|_| Err(LabError::State("a boot watcher panicked".into())));
                (name, result)
            })
            .collect()
    });
    progress.finish();
    let mut failures = vec![];
    for (name, result) in results {
        match result {
            Ok(state) => eprintln!("{name}: {state}"),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    if !failures.is_empty() {
        return Err(LabError::Timeout(failures.join("\n")));
    }
    eprintln!(
        "lab up: {} hosts running ({} booted) in {:.1} s",
        config.hosts.len(),
        booting.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Removes every machine, mount, link, proxy, bus and file of the lab, whatever state a
/// crash left it in.
pub fn down(config: &LabConfig) -> Result<(), LabError> {
    require_root()?;
    for host in &config.hosts {
        machine::power_off(config, &host.name)?;
    }
    // Machines of hosts that the inventory no longer lists.
    for pid in machine::all_nspawn(config) {
        machine::kill_and_wait(pid, Duration::from_secs(10))?;
    }
    machine::remove_cgroups(config);
    proxy::stop(config)?;
    if sys::link_exists(&config.bridge) {
        sys::run("ip", &["link", "delete", &config.bridge])?;
    }
    stop_system_bus(config)?;
    for host in &config.hosts {
        let _ =
            std::fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&host.name));
    }
    sys::remove_tree(&config.state_dir)?;
    for file in [
        &config.private_key,
        &rootfs::public_key_path(&config.private_key),
        &config.known_hosts,
    ] {
        let _ = std::fs::remove_file(file);
    }
    eprintln!("lab down: no machine, bridge, mount, proxy or state left");
    Ok(())
}

/// Prints each host's state; exit code 0 only when every host answers over SSH.
fn status(config: &LabConfig) -> u8 {
    println!(
        "{:<12} {:<15} {:<9} {:<5} SSH",
        "HOST", "ADDRESS", "MACHINE", "LINK"
    );
    let mut all_up = true;
    for host in &config.hosts {
        let running = machine::nspawn_pid(config, &host.name).is_some();
        let link = machine::link_name(&host.name);
        let link_state = match (sys::link_exists(&link), sys::link_is_up(&link)) {
            (false, _) => "-",
            (true, true) => "up",
            (true, false) => "cut",
        };
        let answer = if running {
            ssh_output(config, host, &["systemctl", "is-system-running"], 3)
                .unwrap_or_else(|_| "unreachable".to_string())
        } else {
            "-".to_string()
        };
        all_up &= answer == "running";
        println!(
            "{:<12} {:<15} {:<9} {:<5} {answer}",
            host.name,
            host.address.to_string(),
            if running { "running" } else { "stopped" },
            link_state
        );
    }
    if all_up {
        exit::OK
    } else {
        exit::FAILURE
    }
}

/// Opens a shell on a host, or runs a command there, through the system's ssh client.
fn ssh(config: &LabConfig, host: &str, command: &[String]) -> Result<u8, LabError> {
    let host = config.host(host)?;
    // Without the bridge the lab's addresses would be routed off this machine.
    if !sys::link_exists(&config.bridge) {
        return Err(LabError::State(format!(
            "the lab is down (no bridge {}) — `hactl lab up` first",
            config.bridge
        )));
    }
    let mut cmd = ssh_command(config, host, 10);
    if command.is_empty() && std::io::stdin().is_terminal() {
        cmd.arg("-t");
    }
    cmd.arg("--").args(command);
    let err = cmd.exec();
    Err(LabError::Spawn {
        program: "ssh".into(),
        source: err,
    })
}

pub fn kill(config: &LabConfig, host: &str) -> Result<(), LabError> {
    require_root()?;
    let host = config.host(host)?;
    if machine::power_off(config, &host.name)? {
        eprintln!(
            "{}: powered off (boot it again with `hactl lab up`)",
            host.name
        );
    } else {
        eprintln!("{}: was not running", host.name);
    }
    Ok(())
}

fn set_link(config: &LabConfig, host: &str, up: bool) -> Result<(), LabError> {
    require_root()?;
    let host = config.host(host)?;
    let link = machine::link_name(&host.name);
    if !sys::link_exists(&link) {
        return Err(LabError::State(format!(
            "{} is not running (no link {link}) — `hactl lab up` boots it",
            host.name
        )));
    }
    sys::run(
        "ip",
        &["link", "set", &link, if up { "up" } else { "down" }],
    )?;
    eprintln!(
        "{}: network {}",
        host.name,
        if up {
            "back (link up)"
        } else {
            "cut (link down)"
        }
    );
    Ok(())
}

fn require_root() -> Result<(), LabError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

/// Installs the lab's packages on this machine, without starting their services.
fn install_host_packages(progress: &Progress) -> Result<(), LabError> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .filter(|(program, _)| {
            !sys::has_program(program) && !Path::new("/usr/sbin").join(program).exists()
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    progress.step(&format!("installing {}", missing.join(" ")));
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        sys::write_file(policy, b"#!/bin/sh\nexit 101\n", 0o755)?;
    }
    let result = sys::run("apt-get", &["update", "-qq"]).and_then(|_| {
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        sys::run("apt-get", &args)
    });
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    result.map(|_| ())
}

/// The lab network must not overlap any network this machine already routes elsewhere.
fn check_network(config: &LabConfig) -> Result<(), LabError> {
    let routes = sys::run("ip", &["-o", "-4", "route", "show", "table", "all"])?;
    for line in routes.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let dev = words.windows(2).find(|w| w[0] == "dev").map(|w| w[1]);
        if dev == Some(config.bridge.as_str()) {
            continue;
        }
        let Some((dest, net)) = words
            .iter()
            .find_map(|w| config::parse_route_dest(w).map(|net| (*w, net)))
        else {
            continue;
        };
        if matches!(words.first(), Some(&"local") | Some(&"broadcast")) && dev == Some("lo") {
            continue;
        }
        if net.1 > 0 && config::overlaps((config.network, config.prefix), net) {
            return Err(LabError::Config(format!(
                "the lab network {}/{} overlaps {dest} on {} — set hactl_lab_network in the lab inventory to a free range",
                config.network,
                config.prefix,
                dev.unwrap_or("this machine")
            )));
        }
    }
    Ok(())
}

const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";

/// nspawn wants a system bus; a machine without systemd as PID 1 may have none running.
fn ensure_system_bus(config: &LabConfig) -> Result<(), LabError> {
    if std::os::unix::net::UnixStream::connect(SYSTEM_BUS).is_ok() {
        return Ok(());
    }
    sys::create_dir(Path::new("/run/dbus"))?;
    // A bus that died leaves its socket and pid file; dbus-daemon refuses to start over them.
    let _ = std::fs::remove_file(SYSTEM_BUS);
    let _ = std::fs::remove_file("/run/dbus/pid");
    let pid = sys::run("dbus-daemon", &["--system", "--fork", "--print-pid"])?;
    sys::write_file(
        &config.state_dir.join("dbus.pid"),
        pid.trim().as_bytes(),
        0o644,
    )
}

fn stop_system_bus(config: &LabConfig) -> Result<(), LabError> {
    let pid_file = config.state_dir.join("dbus.pid");
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    if let Ok(pid) = text.trim().parse::<u32>() {
        let is_bus = sys::processes()
            .iter()
            .any(|p| p.pid == pid && p.args.first().is_some_and(|a| a.ends_with("dbus-daemon")));
        if is_bus {
            machine::kill_and_wait(pid, Duration::from_secs(5))?;
        }
    }
    let _ = std::fs::remove_file(SYSTEM_BUS);
    let _ = std::fs::remove_file("/run/dbus/pid");
    Ok(())
}

/// Machines of an earlier lab that the inventory no longer lists.
fn remove_strays(config: &LabConfig, progress: &Progress) -> Result<(), LabError> {
    let Ok(dir) = std::fs::read_dir(config.machines_dir()) else {
        return Ok(());
    };
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        if config.hosts.iter().any(|h| h.name == name) {
            continue;
        }
        progress.step(&format!(
            "removing {name}, a machine the inventory no longer lists"
        ));
        if let Some(pid) = machine::nspawn_pid(config, &name) {
            machine::kill_and_wait(pid, Duration::from_secs(10))?;
        }
        sys::remove_tree(&entry.path())?;
    }
    Ok(())
}

fn ensure_bridge(config: &LabConfig) -> Result<(), LabError> {
    if !sys::link_exists(&config.bridge) {
        sys::run("ip", &["link", "add", &config.bridge, "type", "bridge"])?;
    }
    let address = format!("{}/{}", config.gateway(), config.prefix);
    sys::run("ip", &["addr", "replace", &address, "dev", &config.bridge])?;
    sys::run("ip", &["link", "set", &config.bridge, "up"])?;
    Ok(())
}

fn write_known_hosts(config: &LabConfig) -> Result<(), LabError> {
    let mut lines = String::new();
    for host in &config.hosts {
        let key = rootfs::host_key(config, &host.name)?;
        let public = read(&rootfs::public_key_path(&key))?;
        let mut words = public.split_whitespace();
        let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
            return Err(LabError::State(format!(
                "{}: not an SSH public key",
                key.display()
            )));
        };
        lines.push_str(&format!("{},{} {kind} {blob}\n", host.name, host.address));
    }
    sys::write_file(&config.known_hosts, lines.as_bytes(), 0o644)
}

fn read(path: &Path) -> Result<String, LabError> {
    std::fs::read_to_string(path).map_err(|source| LabError::Io {
        what: format!("reading {}", path.display()),
        source,
    })
}

/// The system ssh client with the lab's key and strict checking against the lab's known_hosts.
fn ssh_command(config: &LabConfig, host: &LabHost, connect_timeout: u64) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.arg("-i")
        .arg(&config.private_key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            config.known_hosts.display()
        ))
        .arg("-o")
        .arg(format!("ConnectTimeout={connect_timeout}"))
        .arg(format!("root@{}", host.address));
    cmd
}

/// Runs a command on a host in batch mode and returns its trimmed stdout.
fn ssh_output(
    config: &LabConfig,
    host: &LabHost,
    command: &[&str],
    timeout: u64,
) -> Result<String, LabError> {
    let output = ssh_command(config, host, timeout)
        .args(["-o", "BatchMode=yes", "--"])
        .args(command)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            program: "ssh".into(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    // is-system-running exits non-zero for every state but "running"; its word is the answer.
    if output.status.code() == Some(255) {
        return Err(LabError::Command {
            command: format!("ssh {}", host.name),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(stdout)
}

/// Waits until the host answers over SSH and systemd has finished booting it.
fn wait_booted(config: &LabConfig, host: &LabHost, nspawn: u32) -> Result<String, LabError> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if !sys::alive(nspawn) {
            let log = config.machine_dir(&host.name).join("console.log");
            return Err(LabError::State(format!(
                "the machine stopped while booting — see {}",
                log.display()
            )));
        }
        match ssh_output(
            config,
            host,
            &["systemctl", "is-system-running", "--wait"],
            2,
        ) {
            Ok(state) if state == "running" => return Ok(state),
            Ok(state) if state == "degraded" => {
                let failed = ssh_output(
                    config,
                    host,
                    &["systemctl", "--failed", "--plain", "--no-legend"],
                    5,
                )
                .unwrap_or_default();
                return Err(LabError::State(format!(
                    "booted degraded; failed units: {failed}"
                )));
            }
            Ok(state) => last = state,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(LabError::Timeout(format!(
        "no finished boot within {} s (last: {last})",
        BOOT_TIMEOUT.as_secs()
    )))
}
