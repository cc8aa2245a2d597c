//! `service`: a systemd unit started, stopped, restarted or reloaded, enabled or not; a
//! daemon-reload first when systemd says a unit file changed.

use serde::Deserialize;

use super::{de_bool, fail, run, Ctx, Module, Outcome, Plan, Result};
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
    pub name: String,
    pub state: Option<State>,
    #[serde(default, deserialize_with = "de_bool")]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "de_bool")]
    pub daemon_reload: Option<bool>,
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
    let n = shell_quote(&args.name);
    let mut cmds = Vec::new();
    let mut notes = Vec::new();
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
            cmds.push(format!("systemctl start -- {n}"));
            notes.push("started");
        }
        Some(State::Stopped) if running(&unit.active) => {
            cmds.push(format!("systemctl stop -- {n}"));
            notes.push("stopped");
        }
        Some(State::Restarted) => {
            cmds.push(format!("systemctl restart -- {n}"));
            notes.push("restarted");
        }
        Some(State::Reloaded) if running(&unit.active) => {
            cmds.push(format!("systemctl reload -- {n}"));
            notes.push("reloaded");
        }
        Some(State::Reloaded) => {
            cmds.push(format!("systemctl start -- {n}"));
            notes.push("started");
        }
        _ => {}
    }
    if notes.is_empty() {
        return (cmds, Outcome::ok());
    }
    (
        cmds,
        Outcome::changed(format!("{} {}", notes.join(", "), args.name)),
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

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Observed> {
        let show = show_script(&args.name);
        let out = run(ctx, &format!("reading unit {}", args.name), &show).await?;
        Ok(Observed {
            unit: parse_show(&out.stdout_text()),
            written: ctx.units_changed.load(std::sync::atomic::Ordering::SeqCst),
        })
    }

    fn plan(args: &Args, Observed { unit, written }: Observed) -> Result<Plan<Todo>> {
        // A unit file new in /etc/systemd/system shadows the package's without systemd noticing
        // (NeedDaemonReload stays "no"): hence the Shadow check and the run's record of unit
        // files written (a drop-in, say).
        let reload = unit.need_reload
            || written
            || unit.load == "not-found"
            || args.daemon_reload == Some(true);
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
                let show = show_script(&args.name);
                let out = run(
                    ctx,
                    "systemctl daemon-reload",
                    &format!("systemctl daemon-reload && {show}"),
                )
                .await?;
                ctx.units_changed
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                let unit = parse_show(&out.stdout_text());
                if unit.load == "not-found" {
                    return fail(format!("unit {} not found", args.name));
                }
                let (cmds, outcome) = changes(args, &unit);
                if cmds.is_empty() {
                    return Ok(outcome);
                }
                (cmds, outcome)
            }
        };
        let n = shell_quote(&args.name);
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
