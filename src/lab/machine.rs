//! Lab machines: systemd-nspawn containers booting real systemd, found again by their
//! command line, so that a crashed hactl leaves nothing that the next run cannot see.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::config::LabConfig;
use super::sys::{self, Process};
use super::LabError;

/// The veth end on the host side of a machine's network link.
pub fn link_name(host: &str) -> String {
    format!("vb-{host}")
}

/// The nspawn process of a lab machine, if it runs.
pub fn nspawn_pid(config: &LabConfig, host: &str) -> Option<u32> {
    let root = config.machine_dir(host).join("root");
    find_nspawn(&sys::processes(), &root)
}

fn find_nspawn(processes: &[Process], root: &Path) -> Option<u32> {
    let root = root.to_string_lossy();
    processes
        .iter()
        .find(|p| {
            p.args
                .first()
                .is_some_and(|a| a.ends_with("systemd-nspawn"))
                && p.args.windows(2).any(|w| w[0] == "-D" && w[1] == root)
        })
        .map(|p| p.pid)
}

/// Every nspawn process whose root lies in the lab's machines directory.
pub fn all_nspawn(config: &LabConfig) -> Vec<u32> {
    let dir = config.machines_dir();
    sys::processes()
        .into_iter()
        .filter(|p| {
            p.args
                .first()
                .is_some_and(|a| a.ends_with("systemd-nspawn"))
                && p.args
                    .windows(2)
                    .any(|w| w[0] == "-D" && Path::new(&w[1]).starts_with(&dir))
        })
        .map(|p| p.pid)
        .collect()
}

/// Boots the machine in the background; its console goes to `console.log` beside its root.
pub fn spawn(config: &LabConfig, host: &str, root: &Path) -> Result<u32, LabError> {
    let log_path = config.machine_dir(host).join("console.log");
    let log = File::create(&log_path).map_err(|source| LabError::Io {
        what: format!("creating {}", log_path.display()),
        source,
    })?;
    let err = log.try_clone().map_err(|source| LabError::Io {
        what: "duplicating the console log".into(),
        source,
    })?;
    // No systemd runs as PID 1 on the host: nspawn must neither register nor ask for a scope,
    // and so stays in the cgroup it starts in. Each machine gets its own (the shell moves
    // itself there, then becomes nspawn); machines sharing one trample on each other's units.
    let cgroups = machine_cgroups(config, host)?;
    let child = Command::new("sh")
        .arg("-c")
        .arg(
            r#"for g in $HACTL_CGROUPS; do echo $$ > "$g/cgroup.procs" || exit 1; done; exec "$@""#,
        )
        .arg("sh")
        .arg("systemd-nspawn")
        .env(
            "HACTL_CGROUPS",
            cgroups
                .iter()
                .map(|p| p.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
        )
        .arg("-D")
        .arg(root)
        .arg(format!("--machine={host}"))
        .args(["--boot", "--register=no", "--keep-unit", "--console=pipe"])
        .arg(format!("--network-bridge={}", config.bridge))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| LabError::Spawn {
            program: "systemd-nspawn".into(),
            source,
        })?;
    Ok(child.id())
}

/// The cgroup hierarchies that systemd in a machine uses: the named `systemd` one (cgroup
/// v1 and hybrid) and the unified one.
fn systemd_hierarchies() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut fields = right.split(' ');
            let fs_type = fields.next()?;
            let options = fields.nth(1).unwrap_or_default();
            let systemd_v1 = fs_type == "cgroup" && options.split(',').any(|o| o == "name=systemd");
            (fs_type == "cgroup2" || systemd_v1).then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// The lab's own cgroup in each hierarchy; a machine's lies below it.
pub fn lab_cgroups(config: &LabConfig) -> Vec<PathBuf> {
    systemd_hierarchies()
        .into_iter()
        .map(|h| h.join(format!("hactl-lab-{}", config.bridge)))
        .collect()
}

fn machine_cgroups(config: &LabConfig, host: &str) -> Result<Vec<PathBuf>, LabError> {
    let dirs: Vec<PathBuf> = lab_cgroups(config)
        .into_iter()
        .map(|d| d.join(host))
        .collect();
    // What a killed machine's systemd left behind would otherwise greet the next boot.
    remove_cgroup_trees(&dirs);
    for dir in &dirs {
        sys::create_dir(dir)?;
    }
    Ok(dirs)
}

/// Removes the lab's cgroups once no process is left in them.
pub fn remove_cgroups(config: &LabConfig) {
    remove_cgroup_trees(&lab_cgroups(config));
}

/// Removes cgroup directories deepest first; one that still holds a process stays.
fn remove_cgroup_trees(tops: &[PathBuf]) {
    for top in tops.iter().cloned() {
        let mut dirs = vec![];
        let mut todo = vec![top];
        while let Some(dir) = todo.pop() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                todo.extend(
                    entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.is_dir()),
                );
            }
            dirs.push(dir);
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Power loss: SIGKILL to the machine's init takes its whole PID namespace down at once.
pub fn power_off(config: &LabConfig, host: &str) -> Result<bool, LabError> {
    let Some(nspawn) = nspawn_pid(config, host) else {
        return Ok(false);
    };
    let init = sys::processes()
        .into_iter()
        .find(|p| p.ppid == nspawn)
        .map(|p| p.pid);
    match init {
        Some(init) => {
            signal(init, Signal::SIGKILL)?;
            wait_gone(nspawn, Duration::from_secs(10))?;
        }
        None => kill_and_wait(nspawn, Duration::from_secs(10))?,
    }
    Ok(true)
}

/// SIGTERM, then SIGKILL if the process is still there after `grace`.
pub fn kill_and_wait(pid: u32, grace: Duration) -> Result<(), LabError> {
    signal(pid, Signal::SIGTERM)?;
    if wait_gone(pid, grace).is_ok() {
        return Ok(());
    }
    signal(pid, Signal::SIGKILL)?;
    wait_gone(pid, Duration::from_secs(5))
}

fn signal(pid: u32, sig: Signal) -> Result<(), LabError> {
    let raw = i32::try_from(pid).map_err(|_| LabError::State(format!("bad pid {pid}")))?;
    match kill(Pid::from_raw(raw), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(LabError::Io {
            what: format!("sending {sig} to process {pid}"),
            source: e.into(),
        }),
    }
}

fn wait_gone(pid: u32, timeout: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    while sys::alive(pid) {
        if Instant::now() > deadline {
            return Err(LabError::Timeout(format!(
                "process {pid} still runs {} s after it was told to stop",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
