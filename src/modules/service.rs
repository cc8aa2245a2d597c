//! `service`: a systemd unit started, stopped, restarted or reloaded, enabled or not; a
//! daemon-reload first when systemd says a unit file changed.

use serde::Deserialize;

use super::{de_bool, run, Ctx, Outcome, Result, Spec};
use crate::ssh::shell_quote;

pub const SPEC: Spec = Spec {
    name: "service",
    args: &["name", "state", "enabled", "daemon_reload"],
    required: &["name"],
    free_form: false,
};

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

pub async fn run_service(args: &Args, ctx: &Ctx<'_>) -> Result<Outcome> {
    let n = shell_quote(&args.name);
    let show =
        format!("systemctl show -p LoadState,ActiveState,UnitFileState,NeedDaemonReload,FragmentPath -- {n}; \
                 for d in /etc/systemd/system /run/systemd/system; do \
                 [ -e $d/{file} ] && echo Shadow=$d/{file}; done; true",
            file = shell_quote(&unit_file(&args.name)));
    let out = run(ctx, &format!("reading unit {}", args.name), &show).await?;
    let mut unit = parse_show(&out.stdout_text());
    let mut cmds = Vec::new();
    // A unit file new in /etc/systemd/system shadows the package's without systemd noticing
    // (NeedDaemonReload stays "no"): hence the Shadow check and the run's record of unit files
    // written (a drop-in, say).
    let written = ctx.units_changed.load(std::sync::atomic::Ordering::SeqCst);
    if unit.need_reload || written || unit.load == "not-found" || args.daemon_reload == Some(true) {
        // A unit file written earlier in this run: systemd must read it before anything else.
        if !ctx.check {
            let out = run(
                ctx,
                "systemctl daemon-reload",
                &format!("systemctl daemon-reload && {show}"),
            )
            .await?;
            ctx.units_changed
                .store(false, std::sync::atomic::Ordering::SeqCst);
            unit = parse_show(&out.stdout_text());
        } else {
            cmds.push("systemctl daemon-reload".to_string());
        }
    }
    if unit.load == "not-found" && !ctx.check {
        return super::fail(format!("unit {} not found", args.name));
    }
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
        Some(State::Reloaded) => {
            let verb = if running(&unit.active) {
                "reload"
            } else {
                "start"
            };
            cmds.push(format!("systemctl {verb} -- {n}"));
            notes.push(if verb == "reload" {
                "reloaded"
            } else {
                "started"
            });
        }
        _ => {}
    }
    if notes.is_empty() {
        return Ok(Outcome::ok());
    }
    let note = format!("{} {}", notes.join(", "), args.name);
    if !ctx.check {
        let script = cmds.join(" && ");
        run(
            ctx,
            &note,
            &format!(
                "{script} || {{ rc=$?; journalctl -u {n} -n 8 --no-pager -o cat >&2; exit $rc; }}"
            ),
        )
        .await?;
    }
    Ok(Outcome::changed(note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_is_not_running() {
        let unit = parse_show(
            "LoadState=loaded\nActiveState=inactive\nUnitFileState=disabled\nNeedDaemonReload=no\n",
        );
        assert!(!running(&unit.active));
        assert_eq!(unit.file, "disabled");
        assert!(!unit.need_reload);
    }
}
