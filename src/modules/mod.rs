//! The modules tasks call. Each one reads the host's state (one command), plans from that alone
//! what differs and what would change it, and only then changes it — so `--check` reports the
//! plan, exactly what a run would change, and each plan is unit-tested against a fake host.
//!
//! Adding a module: one file and one line.
//! 1. `src/modules/NAME.rs`: an `Args` struct (`Deserialize`, `deny_unknown_fields`; its field
//!    names are the argument names, and a field neither `Option` nor defaulted is required), a
//!    unit struct, and `impl Module` for it: `observe` (one command with machine-readable
//!    output), a pure `plan` (notes, diffs, the [`Step`]s to take), `apply` (usually
//!    [`apply_steps`]); `validate` for rules between arguments, `rehearse` if check mode can ask
//!    the host more, `writes` if it writes a file, `registers` if its outcomes carry fields for
//!    `register` ([`Outcome::data`]: `stat`'s `stat`). Unit-test `plan` and check mode against
//!    [`fake::FakeRemote`]: absent, present and equal, present and different.
//! 2. `pub mod NAME;` and a line `Variant => NAME::Type,` in `registry!` below.
//!
//! Only a module that needs a file from its role (as `copy`, `template`, `unarchive` and `wheels`
//! do) touches more: `engine::prepare` reads or renders it into the arguments.

mod args;
pub mod blockinfile;
pub mod certificate;
pub mod command;
pub mod copy;
pub mod debug;
mod digest;
#[cfg(test)]
pub(crate) mod fake;
pub mod file;
pub mod get_url;
pub mod group;
pub mod http;
pub mod lineinfile;
pub mod package;
mod paths;
pub mod patroni_config;
pub mod patroni_restart;
pub mod patroni_upgrade;
mod plan;
pub mod release;
mod remote;
pub mod service;
pub mod slurp;
pub mod stat;
pub mod unarchive;
pub mod uri;
pub mod user;
pub mod wait_for;
pub mod wheels;

use std::sync::atomic::AtomicBool;
use std::sync::LazyLock;

use serde::de::DeserializeOwned;

use crate::ssh::SshError;

pub(crate) use args::{de_bool, de_u64};
pub use args::{ArgsError, Mode, Names, Presence};
pub(crate) use paths::{fix_attrs, owner_spec, parse_stat, stat_script, PathState};
pub use plan::{apply_steps, Diff, Outcome, Plan, Ran, Step};
pub use remote::{As, Local, Remote, Upload};

/// Generates the `Action` enum (a typed call of each module), the table of [`Spec`]s, and the
/// dispatch from one to the module's code.
macro_rules! registry {
    ($($variant:ident => $module:ty,)*) => {
        /// A module call with its arguments rendered and typed (boxed: their sizes differ).
        #[derive(Debug)]
        pub(crate) enum Action {
            $($variant(Box<<$module as Module>::Args>),)*
        }

        static SPECS: LazyLock<Vec<Spec>> = LazyLock::new(|| {
            vec![$(Spec::of::<$module>(|a| {
                args::parse::<$module>(a).map(|a| Action::$variant(Box::new(a)))
            }),)*]
        });

        impl Action {
            /// Observes, plans, and applies the plan unless `check`.
            pub(crate) async fn run(&self, ctx: &Ctx<'_>, check: bool) -> Result<Outcome> {
                match self {
                    $(Action::$variant(a) => execute::<$module>(a, ctx, check).await,)*
                }
            }
        }
    };
}

registry! {
    BlockInFile => blockinfile::BlockInFile,
    Certificate => certificate::Certificate,
    Command => command::Command,
    Shell => command::Shell,
    Copy => copy::Copy,
    Debug => debug::Debug,
    Fail => debug::Fail,
    File => file::File,
    GetUrl => get_url::GetUrl,
    Group => group::Group,
    LineInFile => lineinfile::LineInFile,
    Package => package::Package,
    PatroniConfig => patroni_config::PatroniConfig,
    PatroniRestart => patroni_restart::PatroniRestart,
    PatroniUpgrade => patroni_upgrade::PatroniUpgrade,
    Release => release::Release,
    Service => service::Service,
    Slurp => slurp::Slurp,
    Stat => stat::Stat,
    Template => copy::Template,
    Unarchive => unarchive::Unarchive,
    Uri => uri::Uri,
    User => user::User,
    WaitFor => wait_for::WaitFor,
    Wheels => wheels::Wheels,
}

/// The contract: observe the host, plan from what was observed, apply the plan. The engine
/// decides between applying and only reporting (check mode); a module never knows which.
pub(crate) trait Module {
    /// What tasks call it.
    const NAME: &'static str;
    /// The arguments, typed; their names are the struct's field names.
    type Args: DeserializeOwned + std::fmt::Debug;
    /// What `observe` reads of the host.
    type Observed;
    /// What `apply` does to the host.
    type Todo;

    /// The arguments a command line stands for (`command: systemctl daemon-reload`), for the
    /// modules that take one.
    fn free_form(_line: String) -> Option<Self::Args> {
        None
    }

    /// Rules between arguments the types cannot say (one of `cmd` or `argv`).
    fn validate(_args: &Self::Args) -> std::result::Result<(), ArgsError> {
        Ok(())
    }

    /// The file it writes, if any: the run notes unit files written, for `service`.
    fn writes(_args: &Self::Args) -> Option<&str> {
        None
    }

    /// The fields its outcomes register besides the engine's ([`Outcome::data`]), with made-up
    /// values: tasks are checked before the run against them (`when: st.stat.exists`).
    fn registers() -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Reads the host's state: one round trip.
    async fn observe(args: &Self::Args, ctx: &Ctx<'_>) -> Result<Self::Observed>;

    /// What differs, and what would change it; no I/O.
    fn plan(args: &Self::Args, observed: Self::Observed) -> Result<Plan<Self::Todo>>;

    /// Check mode: what a run would report, changing nothing. The plan, unless a module can ask
    /// the host more without changing it (apt's `--simulate`, a command's `creates`).
    async fn rehearse(
        _args: &Self::Args,
        _todo: Self::Todo,
        planned: Outcome,
        _ctx: &Ctx<'_>,
    ) -> Result<Outcome> {
        Ok(planned)
    }

    /// Makes the planned change; returns what was done (usually `planned`).
    async fn apply(
        args: &Self::Args,
        todo: Self::Todo,
        planned: Outcome,
        ctx: &Ctx<'_>,
    ) -> Result<Outcome>;
}

/// Observes, plans and, unless `check`, applies.
pub(crate) async fn execute<M: Module>(
    args: &M::Args,
    ctx: &Ctx<'_>,
    check: bool,
) -> Result<Outcome> {
    let observed = M::observe(args, ctx).await?;
    let Plan { outcome, todo } = M::plan(args, observed)?;
    let outcome = match todo {
        None => outcome,
        Some(todo) if check => M::rehearse(args, todo, outcome, ctx).await?,
        Some(todo) => M::apply(args, todo, outcome, ctx).await?,
    };
    if let (true, Some(path)) = (outcome.changed, M::writes(args)) {
        service::note_written(ctx, path);
    }
    Ok(outcome)
}

/// A module as tasks name it, with what its `Args` type says of itself.
pub struct Spec {
    pub name: &'static str,
    /// Every argument it takes.
    pub args: &'static [&'static str],
    /// The arguments it cannot do without.
    pub required: Vec<&'static str>,
    /// Takes a command line instead of a mapping (`command: systemctl daemon-reload`).
    pub free_form: bool,
    /// Stand-ins for the fields a call registers besides the engine's.
    pub registers: serde_json::Value,
    parse: fn(serde_json::Value) -> std::result::Result<Action, ArgsError>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Spec {
    fn of<M: Module>(
        parse: fn(serde_json::Value) -> std::result::Result<Action, ArgsError>,
    ) -> Spec {
        Spec {
            name: M::NAME,
            args: args::fields::<M::Args>(),
            required: args::required::<M::Args>(),
            free_form: M::free_form(String::new()).is_some(),
            registers: M::registers(),
            parse,
        }
    }
}

/// Every module.
pub fn specs() -> &'static [Spec] {
    &SPECS
}

/// The module a task names: by hactl's name, or by Ansible's (`ansible.builtin.` prefixed, `apt`
/// for `package`, `systemd` and `systemd_service` for `service`: the same arguments).
pub fn spec(name: &str) -> Option<&'static Spec> {
    let name = name
        .strip_prefix("ansible.builtin.")
        .or_else(|| name.strip_prefix("ansible.legacy."))
        .unwrap_or(name);
    let name = match name {
        "apt" => "package",
        "systemd" | "systemd_service" => "service",
        other => other,
    };
    specs().iter().find(|s| s.name == name)
}

impl Action {
    /// Types the rendered arguments of a call of the module `spec`.
    pub(crate) fn parse(
        spec: &Spec,
        args: serde_json::Value,
    ) -> std::result::Result<Action, ArgsError> {
        (spec.parse)(args)
    }
}

/// What a module sees of the host and the run.
pub struct Ctx<'a> {
    pub remote: &'a dyn Remote,
    /// The host's inventory name.
    pub host: &'a str,
    /// Read files' text, so that plans carry their diffs (`--diff`).
    pub diff: bool,
    pub releases: &'a release::Cache,
    /// The inventory's CA, on the control machine.
    pub pki: &'a crate::pki::Pki,
    /// Set when a unit file was written on this host and systemd has not re-read them since.
    pub units_changed: &'a AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Ssh(#[from] SshError),
}

pub type Result<T> = std::result::Result<T, ModuleError>;

pub(crate) fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(ModuleError::Failed(msg.into()))
}

/// Runs a read-only or changing command and returns its output, failing on a non-zero exit
/// with the command's own words.
pub(crate) async fn run(ctx: &Ctx<'_>, what: &str, script: &str) -> Result<crate::ssh::Output> {
    let out = ctx.remote.exec(script, b"").await?;
    if !out.success() {
        let stderr = out.stderr_text();
        let stdout = out.stdout_text();
        let detail = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        return fail(format!(
            "{what} failed (exit {}): {}",
            out.exit_status
                .map_or("by signal".into(), |c| c.to_string()),
            last_lines(&detail, 6)
        ));
    }
    Ok(out)
}

pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the role loader checks before rendering comes from each module's `Args` type.
    #[test]
    fn every_module_knows_its_arguments_from_its_type() {
        for spec in specs() {
            assert!(!spec.args.is_empty(), "{}", spec.name);
            for r in &spec.required {
                assert!(spec.args.contains(r), "{}: {r}", spec.name);
            }
        }
        let file = spec("file").unwrap();
        assert_eq!(
            file.args,
            ["path", "state", "mode", "owner", "group", "src"]
        );
        assert_eq!(file.required, ["path"]);
        assert_eq!(spec("release").unwrap().required, ["url", "binaries"]);
        assert_eq!(spec("patroni_config").unwrap().required, ["url", "config"]);
        assert!(spec("shell").unwrap().free_form && !spec("copy").unwrap().free_form);
    }

    /// Reads with one command, changes with another.
    struct Probe;

    impl Module for Probe {
        const NAME: &'static str = "probe";
        type Args = debug::Args;
        type Observed = ();
        type Todo = ();

        async fn observe(_: &debug::Args, ctx: &Ctx<'_>) -> Result<()> {
            run(ctx, "reading", "read").await.map(drop)
        }

        fn plan(args: &debug::Args, _: ()) -> Result<Plan<()>> {
            Ok(Plan::change(args.msg.clone(), ()))
        }

        async fn apply(_: &debug::Args, _: (), planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
            run(ctx, "changing", "change").await?;
            Ok(planned)
        }
    }

    #[tokio::test]
    async fn check_mode_reports_the_plan_and_never_applies_it() {
        let host = fake::TestHost::new(fake::FakeRemote::new());
        let args = serde_json::json!({"msg": "would change"});
        let planned = host.check::<Probe>(args.clone()).await.unwrap();
        assert_eq!(planned, Outcome::changed("would change"));
        assert_eq!(host.remote.commands(), ["read"]);
        let done = host.apply::<Probe>(args).await.unwrap();
        assert_eq!(done, planned);
        assert_eq!(host.remote.commands(), ["read", "read", "change"]);
    }

    #[test]
    fn a_module_name_is_called_once() {
        let mut names: Vec<&str> = specs().iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), specs().len());
    }
}
