//! The few things the lab asks of the local system: commands, processes, mounts, links.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::LabError;

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: format!("{program} {}", args.join(" ")),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

pub fn has_program(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// A live process: present and not a zombie waiting to be reaped.
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z" && s != "X"))
        })
        .unwrap_or(false)
}

pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub args: Vec<String>,
}

/// Every live process, with its parent and command line.
pub fn processes() -> Vec<Process> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let args = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            Some(Process { pid, ppid, args })
        })
        .collect()
}

/// Mount points at or below `dir`, deepest first, as the kernel lists them.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&raw[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Unmounts everything below `dir`, then removes it. Never follows a mount into another
/// file system (debootstrap leaves /proc mounted in its target when it is interrupted).
pub fn remove_tree(dir: &Path) -> Result<(), LabError> {
    for mount in mounts_under(dir) {
        let path = mount.to_string_lossy().to_string();
        run("umount", &["--lazy", &path])?;
    }
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|source| LabError::Io {
            what: format!("removing {}", dir.display()),
            source,
        })?;
    }
    Ok(())
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// `up` when the link is administratively up.
pub fn link_is_up(name: &str) -> bool {
    fs::read_to_string(Path::new("/sys/class/net").join(name).join("flags"))
        .ok()
        .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|flags| flags & 1 == 1)
}

pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), LabError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| LabError::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    fs::write(path, contents).map_err(io)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)
}

pub fn create_dir(path: &Path) -> Result<(), LabError> {
    fs::create_dir_all(path).map_err(|source| LabError::Io {
        what: format!("creating {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_with_spaces_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    #[test]
    fn this_process_is_alive_and_listed() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(processes().iter().any(|p| p.pid == me));
    }
}
