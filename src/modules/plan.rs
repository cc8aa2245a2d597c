//! What a module decides and reports: the plan (what differs and what would change it), the
//! outcome a task shows, and the plain steps most modules change a host with.

use super::{run, Ctx, Result, Upload};

/// A module's decision: what to report, and what to do on the host to make it true.
#[derive(Debug)]
pub struct Plan<T> {
    /// What check mode reports; after `apply`, what apply says it did.
    pub outcome: Outcome,
    /// None: the host is as asked, nothing to do.
    pub todo: Option<T>,
}

impl<T> Plan<T> {
    /// The host is as asked.
    pub fn nothing() -> Plan<T> {
        Plan {
            outcome: Outcome::ok(),
            todo: None,
        }
    }

    /// `todo` makes the change `note` describes: `installed etcd-server`.
    pub fn change(note: impl Into<String>, todo: T) -> Plan<T> {
        Plan {
            outcome: Outcome::changed(note),
            todo: Some(todo),
        }
    }
}

/// A file's content before and after, for `--diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub path: String,
    pub before: String,
    pub after: String,
}

/// What a module did (or, in check mode, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub changed: bool,
    /// Not run at all (a command in check mode, `creates` already there).
    pub skipped: bool,
    /// A short note of what changed: `installed etcd-server`, `started patroni`.
    pub msg: String,
    pub diffs: Vec<Diff>,
    /// The command a task ran (`command`, `shell`): its exit code says whether it failed.
    pub ran: Option<Ran>,
    /// What else `register` stores, as a JSON object: `stat`'s `stat`, `uri`'s `status`. The
    /// engine's own fields (`changed`, `failed`, `skipped`, `msg`) are not overridden.
    pub data: Option<serde_json::Value>,
}

impl Outcome {
    pub fn ok() -> Outcome {
        Outcome::default()
    }

    pub fn changed(msg: impl Into<String>) -> Outcome {
        Outcome {
            changed: true,
            msg: msg.into(),
            ..Outcome::default()
        }
    }

    pub fn skipped() -> Outcome {
        Outcome {
            skipped: true,
            ..Outcome::default()
        }
    }

    /// This outcome, registering `data`'s fields too.
    pub fn with_data(self, data: serde_json::Value) -> Outcome {
        Outcome {
            data: Some(data),
            ..self
        }
    }
}

/// A command's result, for `register` and for deciding failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// The exit code; -1 when the command died of a signal.
    pub rc: i64,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn failed(&self) -> bool {
        self.rc != 0
    }
}

/// One change to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A command that must succeed; `what` names it when it does not.
    Run {
        what: String,
        script: String,
    },
    Upload(Upload),
}

impl Step {
    pub fn run(what: impl Into<String>, script: impl Into<String>) -> Step {
        Step::Run {
            what: what.into(),
            script: script.into(),
        }
    }
}

/// Takes `steps` in order, stopping at the first that fails.
pub async fn run_steps(ctx: &Ctx<'_>, steps: &[Step]) -> Result<()> {
    for step in steps {
        match step {
            Step::Run { what, script } => {
                run(ctx, what, script).await?;
            }
            Step::Upload(file) => ctx.remote.upload(file).await?,
        }
    }
    Ok(())
}

/// Applies a plan of `steps`: what it planned is what it did.
pub async fn apply_steps(ctx: &Ctx<'_>, steps: &[Step], planned: Outcome) -> Result<Outcome> {
    run_steps(ctx, steps).await?;
    Ok(planned)
}
