//! `user`: a (system) account.

use serde::Deserialize;

use super::{de_bool, run, Ctx, Names, Outcome, Result, Spec};
use crate::ssh::shell_quote;

pub const SPEC: Spec = Spec {
    name: "user",
    args: &[
        "name",
        "state",
        "system",
        "shell",
        "home",
        "create_home",
        "group",
        "groups",
        "comment",
    ],
    required: &["name"],
    free_form: false,
};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub name: String,
    #[serde(default)]
    pub state: State,
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

struct Account {
    comment: String,
    home: String,
    shell: String,
    group: String,
    groups: Vec<String>,
}

pub async fn run_user(args: &Args, ctx: &Ctx<'_>) -> Result<Outcome> {
    let n = shell_quote(&args.name);
    let out = ctx
        .session
        .exec(
            &format!("getent passwd {n} && id -gn -- {n} && id -Gn -- {n} || true"),
            b"",
        )
        .await?;
    let text = out.stdout_text();
    let mut lines = text.lines();
    let account = lines.next().and_then(|pw| {
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
    });
    let mut flags: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let cmd = match (args.state, &account) {
        (State::Absent, None) => return Ok(Outcome::ok()),
        (State::Absent, Some(_)) => {
            notes.push(format!("removed user {}", args.name));
            format!("userdel -- {n}")
        }
        (State::Present, None) => {
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
            if let Some(gs) = &args.groups {
                if !gs.0.is_empty() {
                    flags.push(format!("--groups {}", shell_quote(&gs.0.join(","))));
                }
            }
            if let Some(c) = &args.comment {
                flags.push(format!("--comment {}", shell_quote(c)));
            }
            notes.push(format!("created user {}", args.name));
            format!("useradd {} -- {n}", flags.join(" "))
        }
        (State::Present, Some(acct)) => {
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
            let missing: Vec<&String> = args
                .groups
                .iter()
                .flat_map(|g| g.0.iter())
                .filter(|g| !acct.groups.contains(g))
                .collect();
            if !missing.is_empty() {
                let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                flags.push(format!(
                    "--append --groups {}",
                    shell_quote(&list.join(","))
                ));
                notes.push(format!("groups +{}", list.join(",")));
            }
            if flags.is_empty() {
                return Ok(Outcome::ok());
            }
            notes.insert(0, format!("user {}:", args.name));
            format!("usermod {} -- {n}", flags.join(" "))
        }
    };
    let note = notes.join(" ");
    if !ctx.check {
        run(ctx, &note, &cmd).await?;
    }
    Ok(Outcome::changed(note))
}
