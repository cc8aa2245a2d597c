//! `command` and `shell`: run something, unless `creates` already exists or `removes` does not.
//! `command` runs its words as they are (no shell); `shell` runs its text through `sh`.
//! What a command changes cannot be known without running it: check mode reports "would run"
//! (after asking the host about `creates`/`removes`), and the run reports its exit code.

use serde::Deserialize;

use super::{ArgsError, Ctx, Module, ModuleError, Outcome, Plan, Ran, Result};
use crate::ssh::shell_quote;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// `command`: the command line, split into words as a shell would (but run without one);
    /// `shell`: the text the shell runs.
    pub cmd: Option<String>,
    pub argv: Option<Vec<String>>,
    pub creates: Option<String>,
    pub removes: Option<String>,
    pub chdir: Option<String>,
    pub stdin: Option<String>,
}

/// `command` (`SHELL` false) or `shell`.
pub struct Run<const SHELL: bool>;
pub type Command = Run<false>;
pub type Shell = Run<true>;

/// What either module runs, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The text for `sh -c`: the guard, `cd`, then the command.
    pub script: String,
    /// Exits before the command when `creates`/`removes` say it has nothing to do.
    pub guard: String,
    pub stdin: String,
}

const SKIPPED: &str = "__hactl_skipped__";

fn job(command: String, args: &Args) -> Job {
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
    let cd = args
        .chdir
        .as_ref()
        .map(|d| format!("cd {} && ", shell_quote(d)))
        .unwrap_or_default();
    Job {
        script: format!("{guard}{cd}{command}"),
        guard,
        stdin: args.stdin.clone().unwrap_or_default(),
    }
}

/// The text for `sh -c`: `shell`'s `cmd` as it is; `command`'s split into words, or `argv`, each
/// quoted.
fn command(args: &Args, shell: bool) -> std::result::Result<String, ArgsError> {
    let quoted = |words: &[String]| {
        words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match (&args.cmd, &args.argv) {
        (Some(cmd), None) if shell => Ok(cmd.clone()),
        (Some(cmd), None) => shlex::split(cmd).map(|w| quoted(&w)).ok_or_else(|| {
            ArgsError::Invalid(format!(
                "cannot split the command line `{cmd}` (unbalanced quotes?)"
            ))
        }),
        (None, Some(argv)) if !argv.is_empty() => Ok(quoted(argv)),
        _ => Err(ArgsError::Invalid(
            "give either `cmd` or a non-empty `argv`".into(),
        )),
    }
}

impl<const SHELL: bool> Module for Run<SHELL> {
    const NAME: &'static str = if SHELL { "shell" } else { "command" };
    type Args = Args;
    type Observed = ();
    type Todo = Job;

    fn free_form(line: String) -> Option<Args> {
        Some(Args {
            cmd: Some(line),
            ..Args::default()
        })
    }

    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        command(args, SHELL).map(drop)
    }

    /// The guard is asked together with the run: nothing to read first.
    async fn observe(_: &Args, _: &Ctx<'_>) -> Result<()> {
        Ok(())
    }

    /// A command always has something to run: what it changes, only running it tells.
    fn plan(args: &Args, _: ()) -> Result<Plan<Job>> {
        let command = command(args, SHELL).map_err(|e| ModuleError::Failed(e.to_string()))?;
        Ok(Plan::change("would run", job(command, args)))
    }

    /// Check mode learns only whether the guard would let the command run.
    async fn rehearse(_: &Args, job: Job, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        if job.guard.is_empty() {
            return Ok(planned);
        }
        let out = ctx
            .remote
            .exec(&format!("{}exit 1", job.guard), b"")
            .await?;
        Ok(if out.stdout_text().contains(SKIPPED) {
            Outcome::ok()
        } else {
            planned
        })
    }

    async fn apply(_: &Args, job: Job, _: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        let out = ctx.remote.exec(&job.script, job.stdin.as_bytes()).await?;
        let stdout = out.stdout_text();
        if out.success() && stdout.trim() == SKIPPED {
            // Ansible's way: not run because of creates/removes is ok, not skipped.
            return Ok(Outcome::ok());
        }
        Ok(Outcome {
            ran: Some(Ran {
                rc: out.exit_status.map_or(-1, i64::from),
                stdout,
                stderr: out.stderr_text(),
            }),
            ..Outcome::changed("")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{output, typed, FakeRemote, TestHost};
    use serde_json::json;

    #[test]
    fn a_command_line_is_split_and_quoted_without_a_shell() {
        let plan = Command::plan(&typed::<Command>(json!("echo 'a b' $HOME")), ()).unwrap();
        assert_eq!(plan.todo.unwrap().script, "echo 'a b' '$HOME'");
        let plan = Shell::plan(&typed::<Shell>(json!("echo $HOME")), ()).unwrap();
        assert_eq!(plan.todo.unwrap().script, "echo $HOME");
    }

    #[test]
    fn a_command_needs_cmd_or_argv_that_splits() {
        let err = |v| {
            super::super::args::parse::<Command>(v)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(json!({"chdir": "/"})),
            "give either `cmd` or a non-empty `argv`"
        );
        assert!(err(json!("echo 'open")).contains("unbalanced quotes"));
    }

    #[tokio::test]
    async fn a_command_runs_and_reports_its_exit_code_and_output() {
        let host = TestHost::new(
            FakeRemote::new().answer_with("false", |_, _| output(3, "out\n", "bad\n")),
        );
        let done = host
            .apply::<Command>(json!({"argv": ["false"], "chdir": "/tmp", "stdin": "x"}))
            .await
            .unwrap();
        assert!(done.changed);
        let ran = done.ran.unwrap();
        assert_eq!(
            (ran.rc, ran.stdout.as_str(), ran.stderr.as_str()),
            (3, "out\n", "bad\n")
        );
        assert_eq!(host.remote.commands(), ["cd /tmp && false"]);
    }

    #[tokio::test]
    async fn creates_already_there_runs_nothing() {
        let host = TestHost::new(FakeRemote::new().answer("if [ -e /done ]", SKIPPED));
        let args = json!({"cmd": "touch /done", "creates": "/done"});
        assert_eq!(
            host.apply::<Command>(args.clone()).await.unwrap(),
            Outcome::ok()
        );
        assert_eq!(host.check::<Command>(args).await.unwrap(), Outcome::ok());
    }

    #[tokio::test]
    async fn check_mode_asks_only_the_guard_and_says_it_would_run() {
        let host = TestHost::new(FakeRemote::new());
        let args = json!({"cmd": "touch /done", "creates": "/done"});
        let planned = host.check::<Command>(args).await.unwrap();
        assert_eq!(planned, Outcome::changed("would run"));
        let commands = host.remote.commands();
        assert_eq!(commands.len(), 1);
        assert!(commands[0].ends_with("exit 1"), "{commands:?}");
        assert!(!commands[0].contains("touch"), "{commands:?}");

        let host = TestHost::new(FakeRemote::new());
        let planned = host.check::<Shell>(json!("rm -rf /x")).await.unwrap();
        assert_eq!(planned, Outcome::changed("would run"));
        assert!(host.remote.sent().is_empty());
    }
}
