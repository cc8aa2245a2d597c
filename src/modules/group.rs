//! `group`: a (system) group.

use serde::Deserialize;

use super::{apply_steps, de_bool, de_u64, Ctx, Module, Outcome, Plan, Presence, Result, Step};
use crate::ssh::shell_quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub name: String,
    /// The group's id; by default the next free one.
    #[serde(default, deserialize_with = "de_u64")]
    pub gid: Option<u64>,
    /// A system group: its gid from the system range.
    #[serde(default, deserialize_with = "de_bool")]
    pub system: Option<bool>,
    #[serde(default)]
    pub state: Presence,
}

pub struct Group;

impl Module for Group {
    const NAME: &'static str = "group";
    type Args = Args;
    /// The group's gid, if it exists.
    type Observed = Option<u64>;
    type Todo = Vec<Step>;

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Option<u64>> {
        let getent = format!("getent group {} || true", shell_quote(&args.name));
        let line = ctx.remote.exec(&getent, b"").await?.stdout_text();
        Ok(line.trim().split(':').nth(2).and_then(|g| g.parse().ok()))
    }

    fn plan(args: &Args, gid: Option<u64>) -> Result<Plan<Vec<Step>>> {
        let n = shell_quote(&args.name);
        let add = || {
            let mut cmd = "groupadd".to_string();
            if args.system.unwrap_or(false) {
                cmd.push_str(" --system");
            }
            if let Some(g) = args.gid {
                cmd.push_str(&format!(" --gid {g}"));
            }
            (
                format!("{cmd} -- {n}"),
                format!("created group {}", args.name),
            )
        };
        let modify = |current: &u64| match args.gid {
            Some(g) if g != *current => Some((
                format!("groupmod --gid {g} -- {n}"),
                format!("group {} gid {current} -> {g}", args.name),
            )),
            _ => None,
        };
        let remove = || {
            (
                format!("groupdel -- {n}"),
                format!("removed group {}", args.name),
            )
        };
        Ok(args.state.plan(gid.as_ref(), add, modify, remove))
    }

    async fn apply(_: &Args, steps: Vec<Step>, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        apply_steps(ctx, &steps, planned).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{typed, FakeRemote, TestHost};
    use serde_json::json;

    fn plan(args: serde_json::Value, gid: Option<u64>) -> Plan<Vec<Step>> {
        Group::plan(&typed::<Group>(args), gid).unwrap()
    }

    #[test]
    fn a_group_is_added_changed_or_left_as_it_is() {
        let args = json!({"name": "app", "system": "yes", "gid": 990});
        assert_eq!(
            plan(args.clone(), None).todo.unwrap(),
            [Step::run(
                "created group app",
                "groupadd --system --gid 990 -- app"
            )]
        );
        assert!(plan(args.clone(), Some(990)).todo.is_none());
        assert!(plan(json!({"name": "app"}), Some(5)).todo.is_none());
        assert_eq!(
            plan(args, Some(5)).outcome,
            Outcome::changed("group app gid 5 -> 990")
        );
        assert_eq!(
            plan(json!({"name": "app", "state": "absent"}), Some(5))
                .outcome
                .msg,
            "removed group app"
        );
    }

    #[tokio::test]
    async fn check_mode_reads_the_group_and_changes_nothing() {
        let host = TestHost::new(FakeRemote::new().answer("getent group", "app:x:5:\n"));
        let planned = host
            .check::<Group>(json!({"name": "app", "gid": 990}))
            .await
            .unwrap();
        assert_eq!(planned, Outcome::changed("group app gid 5 -> 990"));
        assert_eq!(host.remote.commands(), ["getent group app || true"]);
    }
}
