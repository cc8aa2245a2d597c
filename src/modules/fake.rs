//! An in-memory host for unit tests: it answers commands by a part of their text, and records
//! every command and upload, so a test asserts what a module would have done to a real host.

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use super::{args, execute, release, Ctx, Module, Outcome, Remote, Result, Upload};
use crate::ssh::{Output, SshError};
use async_trait::async_trait;

type Answer = Box<dyn Fn(&str, &[u8]) -> Output + Send + Sync>;

/// What a module sent to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Exec { script: String, stdin: Vec<u8> },
    Upload(Upload),
}

/// A host whose commands succeed with no output unless an answer says otherwise.
#[derive(Default)]
pub struct FakeRemote {
    answers: Vec<(String, Answer)>,
    sent: Mutex<Vec<Sent>>,
}

pub fn output(code: u32, stdout: &str, stderr: &str) -> Output {
    Output {
        exit_status: Some(code),
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

impl FakeRemote {
    pub fn new() -> FakeRemote {
        FakeRemote::default()
    }

    /// A command containing `part` prints `stdout` and succeeds. The first matching answer wins.
    pub fn answer(self, part: &str, stdout: &str) -> FakeRemote {
        let out = output(0, stdout, "");
        self.answer_with(part, move |_, _| out.clone())
    }

    /// A command containing `part` is answered by `f(script, stdin)`.
    pub fn answer_with(
        mut self,
        part: &str,
        f: impl Fn(&str, &[u8]) -> Output + Send + Sync + 'static,
    ) -> FakeRemote {
        self.answers.push((part.to_string(), Box::new(f)));
        self
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The scripts run, in order.
    pub fn commands(&self) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter_map(|s| match s {
                Sent::Exec { script, .. } => Some(script),
                Sent::Upload(_) => None,
            })
            .collect()
    }

    /// The paths written, in order.
    pub fn uploads(&self) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter_map(|s| match s {
                Sent::Upload(file) => Some(file.path),
                Sent::Exec { .. } => None,
            })
            .collect()
    }

    fn record(&self, sent: Sent) {
        if let Ok(mut log) = self.sent.lock() {
            log.push(sent);
        }
    }
}

#[async_trait]
impl Remote for FakeRemote {
    async fn exec(&self, script: &str, stdin: &[u8]) -> std::result::Result<Output, SshError> {
        self.record(Sent::Exec {
            script: script.to_string(),
            stdin: stdin.to_vec(),
        });
        Ok(self
            .answers
            .iter()
            .find(|(part, _)| script.contains(part.as_str()))
            .map_or_else(|| output(0, "", ""), |(_, f)| f(script, stdin)))
    }

    async fn upload(&self, file: &Upload) -> std::result::Result<(), SshError> {
        self.record(Sent::Upload(file.clone()));
        Ok(())
    }
}

/// This machine as a host: scripts run under the local `sh`, uploads write local files — for
/// the tests that check what real tools (`stat`, `tar`, `curl`) answer to a module's scripts.
pub struct LocalRemote;

#[async_trait]
impl Remote for LocalRemote {
    async fn exec(&self, script: &str, stdin: &[u8]) -> std::result::Result<Output, SshError> {
        use tokio::io::AsyncWriteExt as _;
        let lost = |e: std::io::Error| SshError::Lost {
            host: "localhost".into(),
            reason: e.to_string(),
        };
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(lost)?;
        if let Some(mut pipe) = child.stdin.take() {
            let input = stdin.to_vec();
            // A script that exits without reading all of its stdin is not an error.
            tokio::spawn(async move { pipe.write_all(&input).await });
        }
        let out = child.wait_with_output().await.map_err(lost)?;
        Ok(Output {
            exit_status: out.status.code().map(|c| c as u32),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    async fn upload(&self, file: &Upload) -> std::result::Result<(), SshError> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&file.path, &file.contents)
            .and_then(|()| {
                std::fs::set_permissions(&file.path, std::fs::Permissions::from_mode(file.mode))
            })
            .map_err(|e| SshError::Upload {
                host: "localhost".into(),
                path: file.path.clone(),
                reason: e.to_string(),
            })
    }
}

/// A fake host with what the run keeps for it: a module runs against it as the engine runs one.
pub struct TestHost<R: Remote = FakeRemote> {
    pub remote: R,
    pub releases: release::Cache,
    pub pki: crate::pki::Pki,
    pub units_changed: AtomicBool,
    pub diff: bool,
}

impl<R: Remote> TestHost<R> {
    pub fn new(remote: R) -> TestHost<R> {
        TestHost {
            remote,
            releases: release::Cache::new(None),
            pki: crate::pki::Pki::new(
                std::env::temp_dir().join("hactl-fake-host.pki"),
                crate::pki::CaSource::Own,
            ),
            units_changed: AtomicBool::new(false),
            diff: false,
        }
    }

    pub fn ctx(&self) -> Ctx<'_> {
        Ctx {
            remote: &self.remote,
            host: "fake-host",
            diff: self.diff,
            releases: &self.releases,
            pki: &self.pki,
            units_changed: &self.units_changed,
        }
    }

    /// Runs `M` with `args` (as a task writes them) in check mode.
    pub async fn check<M: Module>(&self, args: serde_json::Value) -> Result<Outcome> {
        execute::<M>(&typed::<M>(args), &self.ctx(), true).await
    }

    /// Runs `M` with `args` for real.
    pub async fn apply<M: Module>(&self, args: serde_json::Value) -> Result<Outcome> {
        execute::<M>(&typed::<M>(args), &self.ctx(), false).await
    }
}

/// Arguments that must parse: a test's own input.
pub fn typed<M: Module>(args: serde_json::Value) -> M::Args {
    match args::parse::<M>(args) {
        Ok(a) => a,
        Err(e) => panic!("{}: {e}", M::NAME),
    }
}
