//! `user`: a (system) account.

use serde::Deserialize;

use super::{apply_steps, de_bool, Ctx, Module, Names, Outcome, Plan, Presence, Result, Step};
use crate::ssh::shell_quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub name: String,
    #[serde(default)]
    pub state: Presence,
    /// A system account: its uid from the system range, no password aging.
    #[serde(default, deserialize_with = "de_bool")]
    pub system: Option<bool>,
    pub shell: Option<String>,
    pub home: Option<String>,
    #[serde(default, deserialize_with = "de_bool")]
    pub create_home: Option<bool>,
    /// The primary group.
    pub group: Option<String>,
    /// Supplementary groups, added to (never removed from).
    pub groups: Option<Names>,
    pub comment: Option<String>,
}

pub struct User;

/// An existing account, as `getent passwd` and `id` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    comment: String,
    home: String,
    shell: String,
    group: String,
    groups: Vec<String>,
}

fn parse_account(text: &str) -> Option<Account> {
    let mut lines = text.lines();
    let pw = lines.next()?;
    let f: Vec<&str> = pw.split(':').collect();
    (f.len() == 7).then(|| Account {
        comment: f[4].to_string(),
        home: f[5].to_string(),
        shell: f[6].to_string(),
        group: lines.next().unwrap_or_default().trim().to_string(),
        groups: lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    })
}

/// `useradd` with everything the arguments ask for.
fn useradd(args: &Args, n: &str) -> String {
    let mut flags: Vec<String> = Vec::new();
    if args.system.unwrap_or(false) {
        flags.push("--system".into());
    }
    if let Some(s) = &args.shell {
        flags.push(format!("--shell {}", shell_quote(s)));
    }
    if let Some(h) = &args.home {
        flags.push(format!("--home-dir {}", shell_quote(h)));
    }
    flags.push(if args.create_home.unwrap_or(true) {
        "--create-home".into()
    } else {
        "--no-create-home".into()
    });
    match &args.group {
        Some(g) => flags.push(format!("--gid {}", shell_quote(g))),
        None => flags.push("--user-group".into()),
    }
    if let Some(gs) = args.groups.as_ref().filter(|gs| !gs.0.is_empty()) {
        flags.push(format!("--groups {}", shell_quote(&gs.0.join(","))));
    }
    if let Some(c) = &args.comment {
        flags.push(format!("--comment {}", shell_quote(c)));
    }
    format!("useradd {} -- {n}", flags.join(" "))
}

/// `usermod` for what differs from `acct`, with notes; None when nothing does.
fn usermod(args: &Args, n: &str, acct: &Account) -> Option<(String, String)> {
    let mut flags: Vec<String> = Vec::new();
    let mut notes: Vec<String> = vec![format!("user {}:", args.name)];
    if let Some(s) = args.shell.as_ref().filter(|s| **s != acct.shell) {
        flags.push(format!("--shell {}", shell_quote(s)));
        notes.push(format!("shell {s}"));
    }
    if let Some(h) = args.home.as_ref().filter(|h| **h != acct.home) {
        flags.push(format!("--home {}", shell_quote(h)));
        notes.push(format!("home {h}"));
    }
    if let Some(g) = args.group.as_ref().filter(|g| **g != acct.group) {
        flags.push(format!("--gid {}", shell_quote(g)));
        notes.push(format!("group {g}"));
    }
    if let Some(c) = args.comment.as_ref().filter(|c| **c != acct.comment) {
        flags.push(format!("--comment {}", shell_quote(c)));
        notes.push("comment".into());
    }
    let missing: Vec<&str> = args
        .groups
        .iter()
        .flat_map(|g| g.0.iter())
        .filter(|g| !acct.groups.contains(g))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        flags.push(format!(
            "--append --groups {}",
            shell_quote(&missing.join(","))
        ));
        notes.push(format!("groups +{}", missing.join(",")));
    }
    (!flags.is_empty()).then(|| {
        (
            format!("usermod {} -- {n}", flags.join(" ")),
            notes.join(" "),
        )
    })
}

impl Module for User {
    const NAME: &'static str = "user";
    type Args = Args;
    type Observed = Option<Account>;
    type Todo = Vec<Step>;

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Option<Account>> {
        let n = shell_quote(&args.name);
        let out = ctx
            .remote
            .exec(
                &format!("getent passwd {n} && id -gn -- {n} && id -Gn -- {n} || true"),
                b"",
            )
            .await?;
        Ok(parse_account(&out.stdout_text()))
    }

    fn plan(args: &Args, account: Option<Account>) -> Result<Plan<Vec<Step>>> {
        let n = shell_quote(&args.name);
        Ok(args.state.plan(
            account.as_ref(),
            || (useradd(args, &n), format!("created user {}", args.name)),
            |acct| usermod(args, &n, acct),
            || {
                (
                    format!("userdel -- {n}"),
                    format!("removed user {}", args.name),
                )
            },
        ))
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

    const PASSWD: &str = "app:x:998:998:App:/var/lib/app:/usr/sbin/nologin\napp\napp adm\n";

    fn args() -> serde_json::Value {
        json!({"name": "app", "system": true, "shell": "/usr/sbin/nologin", "home": "/var/lib/app",
               "create_home": false, "groups": "adm"})
    }

    fn plan(args: serde_json::Value, found: &str) -> Plan<Vec<Step>> {
        User::plan(&typed::<User>(args), parse_account(found)).unwrap()
    }

    #[test]
    fn an_absent_user_is_created_as_asked() {
        let p = plan(args(), "");
        assert_eq!(p.outcome, Outcome::changed("created user app"));
        assert_eq!(
            p.todo.unwrap(),
            [Step::run(
                "created user app",
                "useradd --system --shell /usr/sbin/nologin --home-dir /var/lib/app \
                 --no-create-home --user-group --groups adm -- app"
            )]
        );
    }

    #[test]
    fn a_user_as_asked_needs_nothing() {
        assert!(plan(args(), PASSWD).todo.is_none());
    }

    #[test]
    fn only_what_differs_is_modified_and_groups_are_only_added() {
        let p = plan(
            json!({"name": "app", "shell": "/bin/bash", "groups": ["adm", "postgres"]}),
            PASSWD,
        );
        assert_eq!(p.outcome.msg, "user app: shell /bin/bash groups +postgres");
        assert_eq!(
            p.todo.unwrap(),
            [Step::run(
                "user app: shell /bin/bash groups +postgres",
                "usermod --shell /bin/bash --append --groups postgres -- app"
            )]
        );
        let gone = plan(json!({"name": "app", "state": "absent"}), PASSWD);
        assert_eq!(gone.outcome.msg, "removed user app");
        assert!(plan(json!({"name": "app", "state": "absent"}), "")
            .todo
            .is_none());
    }

    #[tokio::test]
    async fn check_mode_reads_the_account_and_changes_nothing() {
        let host = TestHost::new(FakeRemote::new());
        let planned = host.check::<User>(args()).await.unwrap();
        assert_eq!(planned, Outcome::changed("created user app"));
        assert_eq!(host.remote.commands().len(), 1);
        assert!(host.remote.commands()[0].starts_with("getent passwd app"));
    }
}
