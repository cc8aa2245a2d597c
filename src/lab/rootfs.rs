//! Root file systems: one Debian base built by debootstrap and cached, and per host an
//! overlay on it whose upper layer holds what the host changed (it survives `kill` and `up`).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::config::{LabConfig, LabHost};
use super::sys::{self, run};
use super::LabError;

/// Packages of the base, beyond minbase: what a host needs to boot, be reached and be managed.
const BASE_PACKAGES: &str =
    "systemd,systemd-sysv,dbus,openssh-server,iproute2,python3,ca-certificates,sudo,procps";
/// Written last into a finished base; a base without it (or with other packages) is rebuilt.
const MARKER: &str = ".hactl-base";

pub fn base_is_ready(config: &LabConfig) -> bool {
    fs::read_to_string(config.base_dir().join(MARKER)).is_ok_and(|m| m.trim() == BASE_PACKAGES)
}

/// Builds the base root file system unless the cache has it. Built aside and renamed into
/// place, so an interrupted build never passes for a finished one.
pub fn ensure_base(config: &LabConfig) -> Result<(), LabError> {
    if base_is_ready(config) {
        return Ok(());
    }
    let mirror = config.resolved_mirror()?;
    sys::create_dir(&config.cache_dir)?;
    let target = config.base_dir();
    let building = config
        .cache_dir
        .join(format!("base-{}.building", config.suite));
    sys::remove_tree(&building)?;
    let building_text = building.to_string_lossy().to_string();
    run(
        "debootstrap",
        &[
            "--variant=minbase",
            &format!("--include={BASE_PACKAGES}"),
            &config.suite,
            &building_text,
            &mirror,
        ],
    )?;
    // Each host gets its own host keys and machine id.
    for entry in
        fs::read_dir(building.join("etc/ssh")).map_err(|source| io("reading etc/ssh", source))?
    {
        let path = entry
            .map_err(|source| io("reading etc/ssh", source))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if name.starts_with("ssh_host_") {
            fs::remove_file(&path).map_err(|source| io("removing base host keys", source))?;
        }
    }
    sys::write_file(&building.join("etc/machine-id"), b"", 0o444)?;
    let wants = building.join("etc/systemd/system/multi-user.target.wants");
    sys::create_dir(&wants)?;
    let link = wants.join("systemd-networkd.service");
    if !link.exists() {
        symlink("/lib/systemd/system/systemd-networkd.service", &link)
            .map_err(|source| io("enabling systemd-networkd", source))?;
    }
    sys::write_file(&building.join(MARKER), BASE_PACKAGES.as_bytes(), 0o644)?;
    sys::remove_tree(&target)?;
    fs::rename(&building, &target).map_err(|source| io("moving the base into the cache", source))
}

pub struct Roots {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub root: PathBuf,
}

pub fn roots(config: &LabConfig, host: &str) -> Roots {
    let dir = config.machine_dir(host);
    Roots {
        upper: dir.join("upper"),
        work: dir.join("work"),
        root: dir.join("root"),
    }
}

/// Mounts the host's overlay (unless mounted) and writes what makes it this host.
pub fn prepare(
    config: &LabConfig,
    host: &LabHost,
    lab_public_key: &str,
) -> Result<PathBuf, LabError> {
    let r = roots(config, &host.name);
    for dir in [&r.upper, &r.work, &r.root] {
        sys::create_dir(dir)?;
    }
    if !sys::mounts_under(&r.root).contains(&r.root) {
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            config.base_dir().display(),
            r.upper.display(),
            r.work.display()
        );
        run(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &options,
                &r.root.to_string_lossy(),
            ],
        )?;
    }
    let key = host_key(config, &host.name)?;
    let root = &r.root;
    sys::write_file(
        &root.join("etc/hostname"),
        format!("{}\n", host.name).as_bytes(),
        0o644,
    )?;
    // Sorts before the image's own 80-container-host0.network, so it wins.
    let network = format!(
        "[Match]\nName=host0\n\n[Network]\nAddress={}/{}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
        host.address, config.prefix
    );
    sys::write_file(
        &root.join("etc/systemd/network/10-host0.network"),
        network.as_bytes(),
        0o644,
    )?;
    sys::create_dir(&root.join("root/.ssh"))?;
    fs::set_permissions(
        root.join("root/.ssh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .map_err(|source| io("setting /root/.ssh mode", source))?;
    sys::write_file(
        &root.join("root/.ssh/authorized_keys"),
        lab_public_key.as_bytes(),
        0o600,
    )?;
    let private = fs::read(&key).map_err(|source| io("reading a host key", source))?;
    let public =
        fs::read(public_key_path(&key)).map_err(|source| io("reading a host key", source))?;
    sys::write_file(&root.join("etc/ssh/ssh_host_ed25519_key"), &private, 0o600)?;
    sys::write_file(
        &root.join("etc/ssh/ssh_host_ed25519_key.pub"),
        &public,
        0o644,
    )?;
    let proxy = format!("Acquire::http::Proxy \"{}\";\n", config.proxy_url());
    sys::write_file(
        &root.join("etc/apt/apt.conf.d/01hactl-lab-proxy"),
        proxy.as_bytes(),
        0o644,
    )?;
    Ok(r.root)
}

/// The host's ed25519 host key pair, made once per lab; returns the private key's path.
pub fn host_key(config: &LabConfig, host: &str) -> Result<PathBuf, LabError> {
    let path = config.machine_dir(host).join("ssh_host_ed25519_key");
    ensure_key(&path, host)?;
    Ok(path)
}

/// Where ssh-keygen puts the public half of the key at `path`: `path` + `.pub`.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// An ed25519 key pair at `path` (and `path.pub`) unless one is there.
pub fn ensure_key(path: &Path, comment: &str) -> Result<(), LabError> {
    if path.exists() && public_key_path(path).exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        sys::create_dir(parent)?;
    }
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(public_key_path(path));
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            comment,
            "-f",
            &path.to_string_lossy(),
        ],
    )?;
    Ok(())
}

fn io(what: &str, source: std::io::Error) -> LabError {
    LabError::Io {
        what: what.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::public_key_path;
    use std::path::Path;

    #[test]
    fn the_public_key_sits_beside_the_private_one_with_pub_appended() {
        assert_eq!(
            public_key_path(Path::new("/k/id_ed25519")),
            Path::new("/k/id_ed25519.pub")
        );
        assert_eq!(
            public_key_path(Path::new("/k/lab.key")),
            Path::new("/k/lab.key.pub")
        );
    }
}
