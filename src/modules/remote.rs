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
