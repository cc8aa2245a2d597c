//! What a module may do to a host: run a command, write a file. The SSH session is one; the
//! unit tests' in-memory host (`fake.rs`) is the other.

use async_trait::async_trait;

use crate::ssh::{Output, Session, SshError};

#[async_trait]
pub trait Remote: Send + Sync {
    /// Runs `script` through `sh -c` (as root where the host needs become), feeding `stdin`.
    async fn exec(&self, script: &str, stdin: &[u8]) -> Result<Output, SshError>;

    /// Writes `path` atomically, with `mode` and `owner` (`user`, `user:group` or `:group`).
    async fn upload(
        &self,
        path: &str,
        contents: &[u8],
        mode: u32,
        owner: Option<&str>,
    ) -> Result<(), SshError>;
}

#[async_trait]
impl Remote for Session {
    async fn exec(&self, script: &str, stdin: &[u8]) -> Result<Output, SshError> {
        Session::exec(self, script, stdin).await
    }

    async fn upload(
        &self,
        path: &str,
        contents: &[u8],
        mode: u32,
        owner: Option<&str>,
    ) -> Result<(), SshError> {
        Session::upload(self, path, contents, mode, owner).await
    }
}
