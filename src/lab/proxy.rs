//! The hosts' apt proxy: an apt-cacher-ng of the lab's own, on the bridge address, caching
//! packages in the lab's cache directory so that a second lab installs them without a download.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::config::LabConfig;
use super::sys::{self, run};
use super::LabError;

const DEBIAN_MIRROR_LISTS: &str = "file:deb_mirror*.gz /debian";

/// The pid of the lab's proxy, if it runs.
pub fn running(config: &LabConfig) -> Option<u32> {
    let marker = config.proxy_dir().to_string_lossy().to_string();
    sys::processes()
        .into_iter()
        .find(|p| {
            p.args.first().is_some_and(|a| a.ends_with("apt-cacher-ng"))
                && p.args.iter().any(|a| a == &marker)
        })
        .map(|p| p.pid)
}

pub fn ensure(config: &LabConfig) -> Result<(), LabError> {
    let addr = SocketAddr::from((config.gateway(), config.proxy_port));
    if running(config).is_some()
        && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    {
        return Ok(());
    }
    stop(config)?;
    let mirror = config.resolved_mirror()?;
    let dir = config.proxy_dir();
    sys::create_dir(&dir)?;
    sys::create_dir(&config.apt_cache_dir())?;
    let conf = format!(
        "CacheDir: {cache}\nLogDir: {dir}\nSupportDir: /usr/lib/apt-cacher-ng\n\
         Port: {port}\nBindAddress: {addr}\nPidFile: {dir}/pid\nForeGround: 0\n\
         Remap-debrep: {DEBIAN_MIRROR_LISTS} ; {mirror}/\nExThreshold: 4\n",
        cache = config.apt_cache_dir().display(),
        dir = dir.display(),
        port = config.proxy_port,
        addr = config.gateway(),
    );
    sys::write_file(&dir.join("acng.conf"), conf.as_bytes(), 0o644)?;
    run("apt-cacher-ng", &["-c", &dir.to_string_lossy()])?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(LabError::Timeout(format!(
        "the apt proxy did not listen on {addr} within 15 s — see {}/apt-cacher.err",
        dir.display()
    )))
}

pub fn stop(config: &LabConfig) -> Result<(), LabError> {
    while let Some(pid) = running(config) {
        super::machine::kill_and_wait(pid, Duration::from_secs(5))?;
    }
    Ok(())
}
