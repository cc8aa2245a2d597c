//! `slurp`: a file of the host, registered base64-encoded as Ansible does (`content`,
//! `encoding`, `source`) — `{{ r.content | b64decode }}`. It never changes anything.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{fail, ArgsError, Ctx, Module, Outcome, Plan, Result};
use crate::ssh::shell_quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    #[serde(alias = "path")]
    pub src: Option<String>,
}

impl Args {
    fn src(&self) -> &str {
        self.src.as_deref().unwrap_or_default()
    }
}

pub struct Slurp;

/// Exit codes of the read for what Ansible names: no file, a directory, not readable.
const ABSENT: u32 = 3;
const DIRECTORY: u32 = 4;
const UNREADABLE: u32 = 5;

impl Module for Slurp {
    const NAME: &'static str = "slurp";
    type Args = Args;
    type Observed = Vec<u8>;
    type Todo = ();

    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        match &args.src {
            Some(p) if !p.is_empty() => Ok(()),
            _ => Err(ArgsError::Invalid("give `src` (or `path`)".into())),
        }
    }

    fn registers() -> Value {
        json!({"content": "", "encoding": "base64", "source": "/"})
    }

    /// The file's bytes, as they are: the channel carries binary output.
    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Vec<u8>> {
        let src = args.src();
        let p = shell_quote(src);
        let script = format!(
            "if [ ! -e {p} ]; then exit {ABSENT}; elif [ -d {p} ]; then exit {DIRECTORY}; \
             elif [ ! -r {p} ]; then exit {UNREADABLE}; fi; cat -- {p}"
        );
        let out = ctx.remote.exec(&script, b"").await?;
        match out.exit_status {
            Some(0) => Ok(out.stdout),
            Some(ABSENT) => fail(format!("file not found: {src}")),
            Some(DIRECTORY) => fail(format!("source is a directory and must be a file: {src}")),
            Some(UNREADABLE) => fail(format!("file is not readable: {src}")),
            _ => fail(format!(
                "unable to slurp file {src}: {}",
                super::last_lines(&out.stderr_text(), 3)
            )),
        }
    }

    fn plan(args: &Args, bytes: Vec<u8>) -> Result<Plan<()>> {
        let content = base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok(Plan {
            outcome: Outcome::ok().with_data(json!({
                "content": content, "encoding": "base64", "source": args.src(),
            })),
            todo: None,
        })
    }

    async fn apply(_: &Args, _: (), planned: Outcome, _: &Ctx<'_>) -> Result<Outcome> {
        Ok(planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{output, FakeRemote, LocalRemote, TestHost};

    #[tokio::test]
    async fn a_file_is_registered_base64_encoded() {
        let host = TestHost::new(FakeRemote::new().answer("cat -- /var/run/sshd.pid", "2179\n"));
        let outcome = host
            .check::<Slurp>(json!({"src": "/var/run/sshd.pid"}))
            .await
            .unwrap();
        assert!(!outcome.changed);
        assert_eq!(
            outcome.data,
            Some(
                json!({"content": "MjE3OQo=", "encoding": "base64", "source": "/var/run/sshd.pid"})
            )
        );
        assert_eq!(host.remote.commands().len(), 1);
    }

    #[tokio::test]
    async fn a_missing_file_or_a_directory_fails_as_ansible_says() {
        let answer = |code| FakeRemote::new().answer_with("cat", move |_, _| output(code, "", ""));
        let err = |code, path: &'static str| async move {
            TestHost::new(answer(code))
                .check::<Slurp>(json!({"path": path}))
                .await
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(ABSENT, "/nope").await, "file not found: /nope");
        assert_eq!(
            err(DIRECTORY, "/etc").await,
            "source is a directory and must be a file: /etc"
        );
        let missing = crate::modules::args::parse::<Slurp>(json!({})).unwrap_err();
        assert_eq!(missing.to_string(), "give `src` (or `path`)");
    }

    #[tokio::test]
    async fn binary_content_survives_the_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bin");
        let bytes: Vec<u8> = (0..=255).collect();
        std::fs::write(&file, &bytes).unwrap();
        let host = TestHost::new(LocalRemote);
        let outcome = host
            .check::<Slurp>(json!({"src": file.display().to_string()}))
            .await
            .unwrap();
        let content = outcome.data.unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(content)
            .unwrap();
        assert_eq!(decoded, bytes);
        let dir_err = host
            .check::<Slurp>(json!({"src": dir.path().display().to_string()}))
            .await
            .unwrap_err();
        assert!(dir_err.to_string().starts_with("source is a directory"));
    }
}
