//! `service` (and Ansible's `systemd` / `systemd_service`, with their argument names): a systemd
//! unit started, stopped, restarted or reloaded, enabled or not, masked or not; a daemon-reload
//! first when systemd says a unit file changed, or alone (`daemon_reload` without `name`).

use serde::Deserialize;

use super::{de_bool, fail, run, ArgsError, Ctx, Module, Outcome, Plan, Result};
use crate::ssh::shell_quote;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Started,
    Stopped,
    Restarted,
    Reloaded,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// None only with `daemon_reload` or `daemon_reexec` alone.
    #[serde(default, alias = "service", alias = "unit")]
    pub name: Option<String>,
    pub state: Option<State>,
    #[serde(default, deserialize_with = "de_bool")]
    pub enabled: Option<bool>,
    /// Masked (linked to /dev/null: nothing can start it) or unmasked.
    #[serde(default, deserialize_with = "de_bool")]
    pub masked: Option<bool>,
    #[serde(default, alias = "daemon-reload", deserialize_with = "de_bool")]
    pub daemon_reload: Option<bool>,
    #[serde(default, alias = "daemon-reexec", deserialize_with = "de_bool")]
    pub daemon_reexec: Option<bool>,
    /// Start, stop, restart or reload without waiting for the job to finish.
    #[serde(default, deserialize_with = "de_bool")]
    pub no_block: Option<bool>,
    /// Only `system`: hactl manages system units.
    #[serde(default)]
    pub scope: Option<String>,
}

impl Args {
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// systemd re-executes or re-reads its units before anything else.
    fn reexec(&self) -> &'static str {
        if self.daemon_reexec == Some(true) {
            "systemctl daemon-reexec && "
        } else {
            ""
        }
    }
}

pub struct Service;

/// What `systemctl show` says of a unit.
#[derive(Debug, Default, PartialEq, Eq)]
struct Unit {
    load: String,
    active: String,
    file: String,
    need_reload: bool,
    fragment: String,
}

fn parse_show(text: &str) -> Unit {
    let mut unit = Unit::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("LoadState", v)) => unit.load = v.to_string(),
            Some(("ActiveState", v)) => unit.active = v.to_string(),
            Some(("UnitFileState", v)) => unit.file = v.to_string(),
            Some(("NeedDaemonReload", v)) => unit.need_reload |= v == "yes",
            Some(("FragmentPath", v)) => unit.fragment = v.to_string(),
            // A unit file that takes precedence over the one systemd has loaded.
            Some(("Shadow", v)) => unit.need_reload |= v != unit.fragment,
            _ => {}
        }
    }
    unit
}

fn unit_file(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

fn running(active: &str) -> bool {
    matches!(active, "active" | "activating" | "reloading")
}

/// One command for the unit's state, and the unit files that would shadow the loaded one.
fn show_script(name: &str) -> String {
    format!(
        "systemctl show -p LoadState,ActiveState,UnitFileState,NeedDaemonReload,FragmentPath -- {}; \
         for d in /etc/systemd/system /run/systemd/system; do \
         [ -e $d/{file} ] && echo Shadow=$d/{file}; done; true",
        shell_quote(name),
        file = shell_quote(&unit_file(name))
    )
}

/// The `systemctl` commands that bring `unit` where `args` want it, and what they would change.
fn changes(args: &Args, unit: &Unit) -> (Vec<String>, Outcome) {
    let n = shell_quote(args.name());
    let mut cmds = Vec::new();
    let mut notes = Vec::new();
    match args.masked {
        Some(true) if unit.file != "masked" => {
            cmds.push(format!("systemctl mask -q -- {n}"));
            notes.push("masked");
        }
        Some(false) if unit.file == "masked" => {
            cmds.push(format!("systemctl unmask -q -- {n}"));
            notes.push("unmasked");
        }
        _ => {}
    }
    let block = if args.no_block == Some(true) {
        " --no-block"
    } else {
        ""
    };
    match args.enabled {
        Some(true)
            if !matches!(
                unit.file.as_str(),
                "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" | "generated"
            ) =>
        {
            cmds.push(format!("systemctl enable -q -- {n}"));
            notes.push("enabled");
        }
        Some(false) if matches!(unit.file.as_str(), "enabled" | "enabled-runtime") => {
            cmds.push(format!("systemctl disable -q -- {n}"));
            notes.push("disabled");
        }
        _ => {}
    }
    match args.state {
        Some(State::Started) if !running(&unit.active) => {
            cmds.push(format!("systemctl start{block} -- {n}"));
            notes.push("started");
        }
        Some(State::Stopped) if running(&unit.active) => {
            cmds.push(format!("systemctl stop{block} -- {n}"));
            notes.push("stopped");
        }
        Some(State::Restarted) => {
            cmds.push(format!("systemctl restart{block} -- {n}"));
            notes.push("restarted");
        }
        Some(State::Reloaded) if running(&unit.active) => {
            cmds.push(format!("systemctl reload{block} -- {n}"));
            notes.push("reloaded");
        }
        Some(State::Reloaded) => {
            cmds.push(format!("systemctl start{block} -- {n}"));
            notes.push("started");
        }
        _ => {}
    }
    if notes.is_empty() {
        return (cmds, Outcome::ok());
    }
    (
        cmds,
        Outcome::changed(format!("{} {}", notes.join(", "), args.name())),
    )
}

/// Directories systemd reads unit files from.
const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/",
    "/lib/systemd/",
    "/usr/lib/systemd/",
    "/run/systemd/",
];

/// Notes that a file was (or, in check mode, would be) written at `path`: if it is a unit file,
/// systemd must re-read them before the next `service` acts.
pub fn note_written(ctx: &Ctx<'_>, path: &str) {
    if UNIT_DIRS.iter().any(|dir| path.starts_with(dir)) {
        ctx.units_changed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What a service task finds.
#[derive(Debug)]
pub struct Observed {
    unit: Unit,
    /// A unit file was written earlier in this run, and systemd has not re-read them since.
    written: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Todo {
    /// systemd re-reads the unit files first; what to do is decided again from what it then
    /// says of the unit.
    Reload,
    Run(Vec<String>),
}

impl Module for Service {
    const NAME: &'static str = "service";
    type Args = Args;
    type Observed = Observed;
    type Todo = Todo;

    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        if args.name.as_deref().is_none_or(str::is_empty)
            && args.daemon_reload != Some(true)
            && args.daemon_reexec != Some(true)
        {
            return Err(ArgsError::Invalid(
                "give `name` (or `daemon_reload: true` alone)".into(),
            ));
        }
        match args.scope.as_deref() {
            None | Some("system") => Ok(()),
            Some(other) => Err(ArgsError::Invalid(format!(
                "scope `{other}`: hactl manages system units only"
            ))),
        }
    }

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Observed> {
        let written = ctx.units_changed.load(std::sync::atomic::Ordering::SeqCst);
        let Some(name) = &args.name else {
            return Ok(Observed {
                unit: Unit::default(),
                written,
            });
        };
        let out = run(ctx, &format!("reading unit {name}"), &show_script(name)).await?;
        Ok(Observed {
            unit: parse_show(&out.stdout_text()),
            written,
        })
    }

    fn plan(args: &Args, Observed { unit, written }: Observed) -> Result<Plan<Todo>> {
        if args.name.is_none() {
            // `daemon_reload` alone: systemd re-reads its units, which changes nothing a user
            // would see (as Ansible reports it).
            return Ok(Plan {
                outcome: Outcome::ok(),
                todo: Some(Todo::Reload),
            });
        }
        // A unit file new in /etc/systemd/system shadows the package's without systemd noticing
        // (NeedDaemonReload stays "no"): hence the Shadow check and the run's record of unit
        // files written (a drop-in, say).
        let reload = unit.need_reload
            || written
            || unit.load == "not-found"
            || args.daemon_reload == Some(true)
            || args.daemon_reexec == Some(true);
        let (cmds, outcome) = changes(args, &unit);
        let todo = if reload {
            Some(Todo::Reload)
        } else {
            (!cmds.is_empty()).then_some(Todo::Run(cmds))
        };
        Ok(Plan { outcome, todo })
    }

    async fn apply(args: &Args, todo: Todo, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        let (cmds, outcome) = match todo {
            Todo::Run(cmds) => (cmds, planned),
            Todo::Reload => {
                let show = match &args.name {
                    Some(name) => format!(" && {}", show_script(name)),
                    None => String::new(),
                };
                let out = run(
                    ctx,
                    "systemctl daemon-reload",
                    &format!("{}systemctl daemon-reload{show}", args.reexec()),
                )
                .await?;
                ctx.units_changed
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                if args.name.is_none() {
                    return Ok(planned);
                }
                let unit = parse_show(&out.stdout_text());
                // Masking needs no unit file: a unit can be masked before it is installed.
                let mask_only =
                    args.masked == Some(true) && args.state.is_none() && args.enabled.is_none();
                if unit.load == "not-found" && !mask_only {
                    return fail(format!("unit {} not found", args.name()));
                }
                let (cmds, outcome) = changes(args, &unit);
                if cmds.is_empty() {
                    return Ok(outcome);
                }
                (cmds, outcome)
            }
        };
        let n = shell_quote(args.name());
        run(
            ctx,
            &outcome.msg,
            &format!(
                "{} || {{ rc=$?; journalctl -u {n} -n 8 --no-pager -o cat >&2; exit $rc; }}",
                cmds.join(" && ")
            ),
        )
        .await?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{typed, FakeRemote, TestHost};
    use serde_json::json;

    const ACTIVE: &str =
        "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\nNeedDaemonReload=no\n";
    const INACTIVE: &str =
        "LoadState=loaded\nActiveState=inactive\nUnitFileState=disabled\nNeedDaemonReload=no\n";
    const MISSING: &str = "LoadState=not-found\nActiveState=inactive\nUnitFileState=\n";

    fn plan(show: &str, written: bool) -> Plan<Todo> {
        let args = typed::<Service>(json!({"name": "etcd", "state": "started", "enabled": true}));
        let unit = parse_show(show);
        Service::plan(&args, Observed { unit, written }).unwrap()
    }

    #[test]
    fn inactive_is_not_running() {
        let unit = parse_show(INACTIVE);
        assert!(!running(&unit.active));
        assert_eq!(unit.file, "disabled");
        assert!(!unit.need_reload);
    }

    #[test]
    fn a_running_enabled_unit_needs_nothing() {
        assert!(plan(ACTIVE, false).todo.is_none());
    }

    #[test]
    fn a_stopped_unit_is_enabled_and_started_in_one_command() {
        let p = plan(INACTIVE, false);
        assert_eq!(p.outcome, Outcome::changed("enabled, started etcd"));
        assert_eq!(
            p.todo,
            Some(Todo::Run(vec![
                "systemctl enable -q -- etcd".into(),
                "systemctl start -- etcd".into()
            ]))
        );
    }

    #[test]
    fn a_unit_file_not_loaded_yet_or_written_in_this_run_reloads_systemd_first() {
        let missing = plan(MISSING, false);
        assert_eq!(missing.todo, Some(Todo::Reload));
        assert_eq!(missing.outcome, Outcome::changed("enabled, started etcd"));
        assert_eq!(plan(ACTIVE, true).todo, Some(Todo::Reload));
        let shadowed = "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\
                        FragmentPath=/lib/systemd/system/etcd.service\n\
                        Shadow=/etc/systemd/system/etcd.service\n";
        assert_eq!(plan(shadowed, false).todo, Some(Todo::Reload));
    }

    #[test]
    fn reloaded_starts_a_stopped_unit() {
        let args = typed::<Service>(json!({"name": "patroni", "state": "reloaded"}));
        let stopped = Service::plan(
            &args,
            Observed {
                unit: parse_show(INACTIVE),
                written: false,
            },
        );
        assert_eq!(stopped.unwrap().outcome.msg, "started patroni");
        let active = Service::plan(
            &args,
            Observed {
                unit: parse_show(ACTIVE),
                written: false,
            },
        );
        assert_eq!(active.unwrap().outcome.msg, "reloaded patroni");
    }

    #[tokio::test]
    async fn after_the_reload_the_unit_is_read_again_and_the_flag_cleared() {
        let host = TestHost::new(
            FakeRemote::new()
                .answer("daemon-reload", ACTIVE)
                .answer("systemctl show", INACTIVE),
        );
        host.units_changed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let done = host
            .apply::<Service>(json!({"name": "etcd", "state": "started"}))
            .await
            .unwrap();
        assert_eq!(
            done,
            Outcome::ok(),
            "running once systemd re-read its units"
        );
        assert_eq!(host.remote.commands().len(), 2);
        assert!(!host.units_changed.load(std::sync::atomic::Ordering::SeqCst));

        let host = TestHost::new(FakeRemote::new().answer("systemctl show", MISSING));
        let err = host
            .apply::<Service>(json!({"name": "etcd", "state": "started"}))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "unit etcd not found");
    }

    #[test]
    fn systemds_own_argument_names_mask_and_do_not_wait() {
        let args = typed::<Service>(json!({"unit": "x", "masked": true, "no_block": true,
                                           "state": "stopped", "scope": "system"}));
        let (cmds, outcome) = changes(&args, &parse_show(ACTIVE));
        assert_eq!(
            cmds,
            ["systemctl mask -q -- x", "systemctl stop --no-block -- x"]
        );
        assert_eq!(outcome, Outcome::changed("masked, stopped x"));
        let masked = "LoadState=masked\nActiveState=inactive\nUnitFileState=masked\n";
        assert!(changes(&args, &parse_show(masked)).0.is_empty());
        let unmask = typed::<Service>(json!({"name": "x", "masked": false, "enabled": true}));
        assert_eq!(
            changes(&unmask, &parse_show(masked)).0,
            ["systemctl unmask -q -- x", "systemctl enable -q -- x"]
        );
    }

    #[tokio::test]
    async fn daemon_reload_alone_reloads_and_changes_nothing() {
        let host = TestHost::new(FakeRemote::new().answer("daemon-reload", ""));
        let done = host
            .apply::<Service>(json!({"daemon-reload": true, "daemon_reexec": true}))
            .await
            .unwrap();
        assert_eq!(done, Outcome::ok());
        assert_eq!(
            host.remote.commands(),
            ["systemctl daemon-reexec && systemctl daemon-reload"]
        );
        for (args, why) in [
            (json!({"state": "started"}), "give `name`"),
            (json!({"name": "x", "scope": "user"}), "system units only"),
        ] {
            let args: Args = serde_json::from_value(args).unwrap();
            let err = Service::validate(&args).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[tokio::test]
    async fn check_mode_reads_the_unit_and_changes_nothing() {
        let host = TestHost::new(FakeRemote::new().answer("systemctl show", MISSING));
        let planned = host
            .check::<Service>(json!({"name": "etcd", "state": "started", "enabled": true}))
            .await
            .unwrap();
        assert_eq!(planned, Outcome::changed("enabled, started etcd"));
        let commands = host.remote.commands();
        assert_eq!(commands.len(), 1);
        assert!(commands[0].starts_with("systemctl show"), "{commands:?}");
    }
}
