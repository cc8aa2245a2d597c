//! `command` and `shell`: run something, unless `creates` already exists or `removes` does not.
//! `command` runs its words as they are (no shell); `shell` runs its text through `sh`.

use serde::Deserialize;

use super::{Ctx, Outcome, Result, Spec};
use crate::ssh::shell_quote;

pub const SPEC: Spec = Spec {
    name: "command",
    args: &["cmd", "argv", "creates", "removes", "chdir", "stdin"],
    required: &["cmd|argv"],
    free_form: true,
};

pub const SHELL_SPEC: Spec = Spec {
    name: "shell",
    args: &["cmd", "argv", "creates", "removes", "chdir", "stdin"],
    required: &["cmd"],
    free_form: true,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    cmd: Option<String>,
    argv: Option<Vec<String>>,
    creates: Option<String>,
    removes: Option<String>,
    chdir: Option<String>,
    stdin: Option<String>,
}

#[derive(Debug)]
pub struct Args {
    /// The shell text to run.
    pub script: String,
    pub creates: Option<String>,
    pub removes: Option<String>,
    pub chdir: Option<String>,
    pub stdin: Option<String>,
}

impl Args {
    pub fn parse(args: serde_json::Value, shell: bool) -> std::result::Result<Args, String> {
        let raw: Raw = match args {
            serde_json::Value::String(s) => Raw {
                cmd: Some(s),
                argv: None,
                creates: None,
                removes: None,
                chdir: None,
                stdin: None,
            },
            other => super::typed(other)?,
        };
        let script = match (raw.cmd, raw.argv) {
            (Some(cmd), None) if shell => cmd,
            (Some(cmd), None) => {
                let words = shlex::split(&cmd).ok_or_else(|| {
                    format!("cannot split the command line `{cmd}` (unbalanced quotes?)")
                })?;
                words
                    .iter()
                    .map(|w| shell_quote(w))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            (None, Some(argv)) if !argv.is_empty() => argv
                .iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" "),
            _ => return Err("give either `cmd` or a non-empty `argv`".into()),
        };
        Ok(Args {
            script,
            creates: raw.creates,
            removes: raw.removes,
            chdir: raw.chdir,
            stdin: raw.stdin,
        })
    }
}

const SKIPPED: &str = "__hactl_skipped__";

pub async fn run_command(args: &Args, ctx: &Ctx<'_>) -> Result<Outcome> {
    let mut guard = String::new();
    if let Some(c) = &args.creates {
        guard.push_str(&format!(
            "if [ -e {} ]; then echo {SKIPPED}; exit 0; fi; ",
            shell_quote(c)
        ));
    }
    if let Some(r) = &args.removes {
        guard.push_str(&format!(
            "if [ ! -e {} ]; then echo {SKIPPED}; exit 0; fi; ",
            shell_quote(r)
        ));
    }
    if ctx.check {
        // Learn only whether it would run.
        if guard.is_empty() {
            return Ok(Outcome {
                changed: true,
                msg: "would run".into(),
                ..Outcome::default()
            });
        }
        let out = ctx.session.exec(&format!("{guard}exit 1"), b"").await?;
        return Ok(if out.stdout_text().contains(SKIPPED) {
            Outcome::ok()
        } else {
            Outcome::changed("would run")
        });
    }
    let cd = args
        .chdir
        .as_ref()
        .map(|d| format!("cd {} && ", shell_quote(d)))
        .unwrap_or_default();
    let script = format!("{guard}{cd}{}", args.script);
    let stdin = args.stdin.as_deref().unwrap_or_default().as_bytes();
    let out = ctx.session.exec(&script, stdin).await?;
    let stdout = out.stdout_text();
    if out.success() && stdout.trim() == SKIPPED {
        // Ansible's way: not run because of creates/removes is ok, not skipped.
        return Ok(Outcome::ok());
    }
    let stderr = out.stderr_text();
    let rc = out.exit_status.map_or(-1, i64::from);
    let mut outcome = Outcome::changed("");
    let data = &mut outcome.data;
    data.insert("rc".into(), rc.into());
    data.insert("stdout".into(), stdout.trim_end_matches('\n').into());
    data.insert("stderr".into(), stderr.trim_end_matches('\n').into());
    data.insert(
        "stdout_lines".into(),
        stdout.lines().collect::<Vec<_>>().into(),
    );
    data.insert(
        "stderr_lines".into(),
        stderr.lines().collect::<Vec<_>>().into(),
    );
    Ok(outcome)
}
