//! What a module may do to a host: run a command, write a file. The SSH session is one; the
//! unit tests' in-memory host (`fake.rs`) is the other.

use std::sync::Arc;

use async_trait::async_trait;

use crate::ssh::{Output, Session, SshError};

/// A file to write, with its mode and owner (`user`, `user:group` or `:group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub path: String,
    pub contents: Arc<[u8]>,
    pub mode: u32,
    pub owner: Option<String>,
}

#[async_trait]
pub trait Remote: Send + Sync {
    /// Runs `script` through `sh -c` (as root where the host needs become), feeding `stdin`.
    async fn exec(&self, script: &str, stdin: &[u8]) -> Result<Output, SshError>;

    /// Writes a file atomically: a reader sees the old file or the new one, never half.
    async fn upload(&self, file: &Upload) -> Result<(), SshError>;
}

#[async_trait]
impl Remote for Session {
    async fn exec(&self, script: &str, stdin: &[u8]) -> Result<Output, SshError> {
        Session::exec(self, script, stdin).await
    }

    async fn upload(&self, f: &Upload) -> Result<(), SshError> {
        Session::upload(self, &f.path, &f.contents, f.mode, f.owner.as_deref()).await
    }
}

/// A session as one task uses it: its own `become` / `become_user`, and its `environment`
/// exported before every command (as Ansible does, the values are in the command line).
pub struct As<'a> {
    pub session: &'a Session,
    pub how: crate::ssh::Become,
    /// `export NAME='value'; ` for each variable of `environment`.
    pub env: String,
}

#[async_trait]
impl Remote for As<'_> {
    async fn exec(&self, script: &str, stdin: &[u8]) -> Result<Output, SshError> {
        let script = format!("{}{script}", self.env);
        self.session.exec_as(&script, stdin, &self.how).await
    }

    async fn upload(&self, f: &Upload) -> Result<(), SshError> {
        self.session
            .upload_as(&f.path, &f.contents, f.mode, f.owner.as_deref(), &self.how)
            .await
    }
}

/// This machine, for `delegate_to: localhost`: commands run by `sh -c` as the user running
/// hactl, files written in place (a temporary file, then renamed).
pub struct Local {
    pub env: String,
}

#[async_trait]
impl Remote for Local {
    async fn exec(&self, script: &str, stdin: &[u8]) -> Result<Output, SshError> {
        use tokio::io::AsyncWriteExt;
        let lost = |e: std::io::Error| SshError::Lost {
            host: "localhost".into(),
            reason: e.to_string(),
        };
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{}{script}", self.env))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(lost)?;
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin).await;
        }
        let out = child.wait_with_output().await.map_err(lost)?;
        Ok(Output {
            exit_status: out.status.code().and_then(|c| u32::try_from(c).ok()),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    async fn upload(&self, f: &Upload) -> Result<(), SshError> {
        let fail = |reason: String| SshError::Upload {
            host: "localhost".into(),
            path: f.path.clone(),
            reason,
        };
        let path = std::path::Path::new(&f.path);
        let dir = path
            .parent()
            .filter(|d| d.is_absolute())
            .ok_or_else(|| fail("the path must be absolute".into()))?;
        let name = path
            .file_name()
            .ok_or_else(|| fail("the path names no file".into()))?;
        let temp = dir.join(format!(
            ".{}.hactl-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        std::fs::write(&temp, &f.contents).map_err(|e| fail(e.to_string()))?;
        use std::os::unix::fs::PermissionsExt;
        let done = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(f.mode))
            .map_err(|e| e.to_string())
            .and_then(|()| match &f.owner {
                None => Ok(()),
                Some(owner) => std::process::Command::new("chown")
                    .arg(owner)
                    .arg(&temp)
                    .status()
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        if s.success() {
                            Ok(())
                        } else {
                            Err(format!("chown {owner} failed"))
                        }
                    }),
            })
            .and_then(|()| std::fs::rename(&temp, path).map_err(|e| e.to_string()));
        if let Err(e) = done {
            let _ = std::fs::remove_file(&temp);
            return Err(fail(e));
        }
        Ok(())
    }
}
