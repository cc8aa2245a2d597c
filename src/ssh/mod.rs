//! The transport: one russh connection per host, reused for a whole run, with concurrent
//! channels; host keys checked against a known_hosts file; exec, become and atomic upload.

mod channel;
mod sudo;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::known_hosts::{
    check_known_hosts_path, known_host_keys_path, learn_known_hosts_path,
};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// sshd refuses more than `MaxSessions` (10 by default) open channels on one connection, and
/// frees a closed one a little after the close: stay well below, and retry a refused open.
const MAX_CHANNELS: usize = 6;
const OPEN_RETRIES: u32 = 40;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long sudo may take to ask for the password, or to run the command once it has it.
const SUDO_PATIENCE: Duration = Duration::from_secs(30);

/// Where and how to reach one host.
#[derive(Debug, Clone)]
pub struct Target {
    /// The inventory name, used in every message.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub private_key_file: Option<PathBuf>,
    pub known_hosts: PathBuf,
    pub become_root: bool,
    /// For sudo that asks; never logged.
    pub become_password: Option<String>,
}

/// A task's own `become` and `become_user` (None: the connection's `ansible_become`, root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Become {
    pub root: Option<bool>,
    pub user: Option<String>,
}

/// What to do with a host key that the known_hosts file does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse it: the default.
    Strict,
    /// Record it in the known_hosts file (`--accept-new-host-keys`); a changed key is still refused.
    AcceptNew,
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{host}: cannot connect to {address}: {reason}")]
    Connect {
        host: String,
        address: String,
        reason: String,
    },
    #[error("{host}: host key {fingerprint} is not in {} — check it, then add it there or run with --accept-new-host-keys", file.display())]
    UnknownHostKey {
        host: String,
        fingerprint: String,
        file: PathBuf,
    },
    #[error("{host}: HOST KEY CHANGED — {fingerprint} does not match {}:{line}; refusing to connect (if the host was rebuilt, remove that line)", file.display())]
    ChangedHostKey {
        host: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },
    #[error("{host}: the server offered a host certificate; only plain host keys are supported")]
    HostCertificate { host: String },
    #[error("{host}: {}: {reason}", file.display())]
    KnownHosts {
        host: String,
        file: PathBuf,
        reason: String,
    },
    #[error("{host}: cannot read the private key {}: {reason}", file.display())]
    PrivateKey {
        host: String,
        file: PathBuf,
        reason: String,
    },
    #[error("{host}: authentication as {user} failed (tried: {tried})")]
    Auth {
        host: String,
        user: String,
        tried: String,
    },
    #[error("{host}: connection lost: {reason}")]
    Lost { host: String, reason: String },
    #[error("{host}: sudo: wrong become password (--ask-become-pass or ansible_become_password)")]
    WrongBecomePassword { host: String },
    #[error("{host}: sudo neither asked for the password nor ran the command within {} s (does PAM ask for something other than a password?)", waited.as_secs())]
    SudoSilent { host: String, waited: Duration },
    #[error("{host}: upload of {path} failed: {reason}")]
    Upload {
        host: String,
        path: String,
        reason: String,
    },
    #[error(transparent)]
    Russh(#[from] russh::Error),
}

/// The result of one command.
#[derive(Debug, Default, Clone)]
pub struct Output {
    /// None when the command died of a signal or the server sent no status.
    pub exit_status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).to_string()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).to_string()
    }
}

/// One open connection to one host. Cheap to share: every call opens its own channel.
pub struct Session {
    target: Target,
    handle: Handle<Checker>,
    channels: Semaphore,
    /// For sudo, when it asks (`--ask-become-pass`); never logged.
    become_password: Option<String>,
    /// sudo's prompt and the command's announcement, random per session.
    sudo_markers: sudo::Markers,
    /// Commands and uploads sent, for the benchmarks.
    round_trips: std::sync::atomic::AtomicU32,
}

struct Checker {
    host: String,
    address: String,
    port: u16,
    known_hosts: PathBuf,
    policy: HostKeyPolicy,
}

impl client::Handler for Checker {
    type Error = SshError;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, SshError> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = offered else {
            return Err(SshError::HostCertificate {
                host: self.host.clone(),
            });
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let file_error = |e: russh::keys::Error| SshError::KnownHosts {
            host: self.host.clone(),
            file: self.known_hosts.clone(),
            reason: e.to_string(),
        };
        match check_known_hosts_path(&self.address, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) => {
                let known = known_host_keys_path(&self.address, self.port, &self.known_hosts)
                    .map_err(file_error)?;
                if self.policy == HostKeyPolicy::AcceptNew && known.is_empty() {
                    learn_known_hosts_path(&self.address, self.port, key, &self.known_hosts)
                        .map_err(file_error)?;
                    return Ok(true);
                }
                // A key of another algorithm is on file: treat it as a changed key, not a new one.
                match known.first() {
                    Some((line, _)) => Err(SshError::ChangedHostKey {
                        host: self.host.clone(),
                        fingerprint,
                        file: self.known_hosts.clone(),
                        line: *line,
                    }),
                    None => Err(SshError::UnknownHostKey {
                        host: self.host.clone(),
                        fingerprint,
                        file: self.known_hosts.clone(),
                    }),
                }
            }
            Err(russh::keys::Error::KeyChanged { line }) => Err(SshError::ChangedHostKey {
                host: self.host.clone(),
                fingerprint,
                file: self.known_hosts.clone(),
                line,
            }),
            Err(e) => Err(file_error(e)),
        }
    }
}

impl Session {
    /// Connects, checks the host key, and authenticates with the key file, then the ssh-agent.
    pub async fn connect(target: &Target, policy: HostKeyPolicy) -> Result<Session, SshError> {
        let config = Arc::new(client::Config {
            // Keepalives, not an inactivity timeout: a long quiet apt-get must not be cut off.
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_max: 3,
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        });
        let checker = Checker {
            host: target.name.clone(),
            address: target.address.clone(),
            port: target.port,
            known_hosts: target.known_hosts.clone(),
            policy,
        };
        let connect_error = |reason: String| SshError::Connect {
            host: target.name.clone(),
            address: format!("{}:{}", target.address, target.port),
            reason,
        };
        let connecting = client::connect(config, (target.address.as_str(), target.port), checker);
        let mut handle = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(connect_error(format!(
                    "no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(SshError::Russh(e))) => return Err(connect_error(e.to_string())),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(handle)) => handle,
        };
        let authenticated =
            tokio::time::timeout(CONNECT_TIMEOUT, authenticate(&mut handle, target))
                .await
                .map_err(|_| connect_error("authentication did not finish in time".into()))??;
        if !authenticated.0 {
            return Err(SshError::Auth {
                host: target.name.clone(),
                user: target.user.clone(),
                tried: authenticated.1.join(", "),
            });
        }
        let sudo_markers = sudo::Markers::random()
            .map_err(|e| connect_error(format!("no random sudo prompt (/dev/urandom: {e})")))?;
        Ok(Session {
            target: target.clone(),
            handle,
            channels: Semaphore::new(MAX_CHANNELS),
            become_password: target.become_password.clone(),
            sudo_markers,
            round_trips: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// The password for sudo when it asks (`--ask-become-pass`), over the inventory's.
    pub fn with_become_password(mut self, password: Option<String>) -> Session {
        if password.is_some() {
            self.become_password = password;
        }
        self
    }

    /// Runs a command through `sh -c` (with sudo when the host needs become), feeding `stdin`,
    /// and reads until the channel ends.
    pub async fn exec(&self, command: &str, stdin: &[u8]) -> Result<Output, SshError> {
        self.exec_as(command, stdin, &Become::default()).await
    }

    /// Whether `how` runs commands through sudo here, and as whom ("" for root).
    fn sudo_for<'a>(&'a self, how: &'a Become) -> Option<&'a str> {
        let on = how.root.unwrap_or(self.target.become_root);
        on.then(|| how.user.as_deref().filter(|u| *u != "root").unwrap_or(""))
    }

    /// [`Session::exec`] with a task's own `become` / `become_user`.
    pub async fn exec_as(
        &self,
        command: &str,
        stdin: &[u8],
        how: &Become,
    ) -> Result<Output, SshError> {
        let Some(user) = self.sudo_for(how) else {
            return self.exec_raw(command, stdin, None).await;
        };
        let as_user = if user.is_empty() {
            String::new()
        } else {
            format!("-u {} ", shell_quote(user))
        };
        match &self.become_password {
            None => {
                let wrapped = format!("sudo -n -H {as_user}-- sh -c {}", shell_quote(command));
                self.exec_raw(&wrapped, stdin, None).await
            }
            Some(password) => {
                // The password goes only where sudo asks for it with our marker; where sudo does
                // not ask (a cached ticket, NOPASSWD), it would land in the command's stdin.
                let sudo = channel::Sudo {
                    markers: &self.sudo_markers,
                    password,
                    patience: SUDO_PATIENCE,
                };
                let wrapped = self.sudo_markers.wrap_as(command, user);
                self.exec_raw(&wrapped, stdin, Some(sudo)).await
            }
        }
    }

    /// Commands and uploads sent so far on this connection.
    pub fn round_trips(&self) -> u32 {
        self.round_trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn exec_raw(
        &self,
        command: &str,
        stdin: &[u8],
        sudo: Option<channel::Sudo<'_>>,
    ) -> Result<Output, SshError> {
        self.round_trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _slot = self
            .channels
            .acquire()
            .await
            .map_err(|e| self.lost(e.to_string()))?;
        let (mut rx, tx) = self.open_channel().await?.split();
        let run = async {
            tx.exec(true, command)
                .await
                .map_err(channel::Failure::Channel)?;
            channel::converse(&mut rx, &tx, stdin, sudo).await
        };
        let failure = match run.await {
            // A channel that ends without an exit status on a closed connection: the host is gone.
            Ok(out) if out.exit_status.is_none() && self.handle.is_closed() => {
                return Err(self.lost("the connection dropped while the command ran".into()))
            }
            Ok(out) => return Ok(out),
            Err(failure) => failure,
        };
        let _ = tx.close().await;
        let host = self.target.name.clone();
        Err(match failure {
            channel::Failure::Channel(e) => self.lost(e.to_string()),
            channel::Failure::WrongPassword => SshError::WrongBecomePassword { host },
            channel::Failure::SudoSilent => SshError::SudoSilent {
                host,
                waited: SUDO_PATIENCE,
            },
        })
    }

    /// Writes a file atomically: a temporary file in the target directory, owner and mode set,
    /// then renamed over the target — a reader never sees half a file.
    pub async fn upload(
        &self,
        path: &str,
        contents: &[u8],
        mode: u32,
        owner: Option<&str>,
    ) -> Result<(), SshError> {
        self.upload_as(path, contents, mode, owner, &Become::default())
            .await
    }

    /// [`Session::upload`] with a task's own `become` / `become_user`: the file is written by
    /// that user (and owned by them unless `owner` says otherwise).
    pub async fn upload_as(
        &self,
        path: &str,
        contents: &[u8],
        mode: u32,
        owner: Option<&str>,
        how: &Become,
    ) -> Result<(), SshError> {
        let upload_error = |reason: String| SshError::Upload {
            host: self.target.name.clone(),
            path: path.to_string(),
            reason,
        };
        let dir = Path::new(path)
            .parent()
            .map(|p| p.to_string_lossy().to_string())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| upload_error("the path must be absolute".into()))?;
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .ok_or_else(|| upload_error("the path names no file".into()))?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let temp = format!("{dir}/.{name}.hactl-{nonce}");
        let chown = owner
            .map(|o| format!("chown {} {} && ", shell_quote(o), shell_quote(&temp)))
            .unwrap_or_default();
        let finish = format!(
            "{chown}chmod {mode:o} {t} && mv -f {t} {p}",
            t = shell_quote(&temp),
            p = shell_quote(path)
        );
        if self.sudo_for(how).is_some() || *how != Become::default() {
            // SFTP runs as the login user: stream through sudo into the target directory instead.
            let script = format!("umask 077 && cat > {} && {finish}", shell_quote(&temp));
            let out = self.exec_as(&script, contents, how).await?;
            if !out.success() {
                let _ = self
                    .exec_as(&format!("rm -f {}", shell_quote(&temp)), b"", how)
                    .await;
                return Err(upload_error(out.stderr_text().trim().to_string()));
            }
            return Ok(());
        }
        self.sftp_write(&temp, contents)
            .await
            .map_err(upload_error)?;
        let out = self.exec_raw(&finish, b"", None).await?;
        if !out.success() {
            let _ = self
                .exec_raw(&format!("rm -f {}", shell_quote(&temp)), b"", None)
                .await;
            return Err(upload_error(out.stderr_text().trim().to_string()));
        }
        Ok(())
    }

    async fn sftp_write(&self, path: &str, contents: &[u8]) -> Result<(), String> {
        self.round_trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _slot = self.channels.acquire().await.map_err(|e| e.to_string())?;
        let channel = self.open_channel().await.map_err(|e| e.to_string())?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| e.to_string())?;
        let sftp = SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| e.to_string())?;
        let attrs = FileAttributes {
            permissions: Some(0o600),
            ..Default::default()
        };
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        let mut file = sftp
            .open_with_flags_and_attributes(path, flags, attrs)
            .await
            .map_err(|e| e.to_string())?;
        file.write_all(contents).await.map_err(|e| e.to_string())?;
        file.shutdown().await.map_err(|e| e.to_string())?;
        sftp.close().await.map_err(|e| e.to_string())
    }

    async fn open_channel(&self) -> Result<russh::Channel<client::Msg>, SshError> {
        let mut attempt = 0;
        loop {
            match self.handle.channel_open_session().await {
                Ok(channel) => return Ok(channel),
                Err(russh::Error::ChannelOpenFailure(_)) if attempt < OPEN_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => return Err(self.lost(e.to_string())),
            }
        }
    }

    /// Ends the connection politely.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    fn lost(&self, reason: String) -> SshError {
        SshError::Lost {
            host: self.target.name.clone(),
            reason,
        }
    }
}

/// Tries the key file, then every key of the ssh-agent. Returns whether one worked and what was tried.
async fn authenticate(
    handle: &mut Handle<Checker>,
    target: &Target,
) -> Result<(bool, Vec<String>), SshError> {
    let mut tried = vec![];
    if let Some(file) = &target.private_key_file {
        let key = russh::keys::load_secret_key(file, None).map_err(|e| SshError::PrivateKey {
            host: target.name.clone(),
            file: file.clone(),
            reason: e.to_string(),
        })?;
        let hash = if key.algorithm().is_rsa() {
            handle.best_supported_rsa_hash().await?.flatten()
        } else {
            None
        };
        tried.push(format!("key {}", file.display()));
        let result = handle
            .authenticate_publickey(
                &target.user,
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await?;
        if result.success() {
            return Ok((true, tried));
        }
    }
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        use russh::keys::agent::client::AgentClient;
        use russh::keys::agent::AgentIdentity;
        tried.push("ssh-agent".into());
        if let Ok(mut agent) = AgentClient::connect_env().await {
            let identities = agent.request_identities().await.unwrap_or_default();
            let rsa_hash = handle.best_supported_rsa_hash().await?.flatten();
            for identity in identities {
                let AgentIdentity::PublicKey { key, .. } = identity else {
                    continue;
                };
                if let Ok(result) = handle
                    .authenticate_publickey_with(&target.user, key, rsa_hash, &mut agent)
                    .await
                {
                    if result.success() {
                        return Ok((true, tried));
                    }
                }
            }
        }
    }
    Ok((false, tried))
}

/// Quotes a word for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// How to reach an inventory host: its connection vars, and `hactl_known_hosts` (default
/// `~/.ssh/known_hosts`) for the host keys.
pub fn target(
    inventory: &crate::inventory::Inventory,
    host: &str,
) -> Result<Target, crate::inventory::InventoryError> {
    let connection = inventory.connection(host)?;
    let vars = inventory.host_vars(host);
    let known_hosts = vars
        .get("hactl_known_hosts")
        .and_then(|v| v.value.as_str().map(str::to_string))
        .unwrap_or_else(|| "~/.ssh/known_hosts".to_string());
    Ok(Target {
        name: host.to_string(),
        address: connection.address,
        port: connection.port,
        user: connection.user,
        private_key_file: connection.private_key_file.map(|p| expand_home(&p)),
        known_hosts: expand_home(Path::new(&known_hosts)),
        become_root: connection.become_root,
        become_password: connection.become_password,
    })
}

/// The connection variables given with `-e`, over the inventory's (as in Ansible, where extra
/// vars win over everything): ansible_host, ansible_port, ansible_user,
/// ansible_ssh_private_key_file, ansible_become, ansible_become_password (or _pass).
pub fn override_target(
    target: &mut Target,
    extra: &indexmap::IndexMap<String, serde_json::Value>,
) -> Result<(), String> {
    use serde_json::Value as J;
    let text = |key: &str| -> Result<Option<String>, String> {
        match extra.get(key) {
            None => Ok(None),
            Some(J::String(s)) => Ok(Some(s.clone())),
            Some(J::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(format!("-e {key}: expected a string, not {other}")),
        }
    };
    if let Some(a) = text("ansible_host")? {
        target.address = a;
    }
    if let Some(p) = text("ansible_port")? {
        target.port = p.parse().ok().filter(|p| *p > 0).ok_or(format!(
            "-e ansible_port: {p} is not a port number (1-65535)"
        ))?;
    }
    if let Some(u) = text("ansible_user")? {
        target.user = u;
    }
    if let Some(k) = text("ansible_ssh_private_key_file")? {
        target.private_key_file = Some(expand_home(Path::new(&k)));
    }
    if let Some(b) = extra.get("ansible_become") {
        target.become_root = match b {
            J::Bool(b) => *b,
            J::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => true,
                "false" | "no" | "off" | "0" => false,
                _ => {
                    return Err(format!(
                        "-e ansible_become: expected true or false, not {s}"
                    ))
                }
            },
            other => {
                return Err(format!(
                    "-e ansible_become: expected true or false, not {other}"
                ))
            }
        };
    }
    if let Some(p) = text("ansible_become_password")?.or(text("ansible_become_pass")?) {
        target.become_password = Some(p);
    }
    Ok(())
}

/// `~/x` → `$HOME/x`, as ssh reads such paths.
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("/etc/hosts"), "/etc/hosts");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
