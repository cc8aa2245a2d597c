//! `group`: a (system) group.

use serde::Deserialize;

use super::{de_bool, de_u64, run, Ctx, Outcome, Result, Spec};
use crate::ssh::shell_quote;

pub const SPEC: Spec = Spec {
    name: "group",
    args: &["name", "state", "system", "gid"],
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
    #[serde(default, deserialize_with = "de_u64")]
    pub gid: Option<u64>,
}

pub async fn run_group(args: &Args, ctx: &Ctx<'_>) -> Result<Outcome> {
    let n = shell_quote(&args.name);
    let out = ctx
        .session
        .exec(&format!("getent group {n} || true"), b"")
        .await?;
    let line = out.stdout_text();
    let gid: Option<u64> = line.trim().split(':').nth(2).and_then(|g| g.parse().ok());
    let (cmd, note) = match (args.state, gid) {
        (State::Present, None) => {
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
        }
        (State::Present, Some(current)) => match args.gid {
            Some(g) if g != current => (
                format!("groupmod --gid {g} -- {n}"),
                format!("group {} gid {current} -> {g}", args.name),
            ),
            _ => return Ok(Outcome::ok()),
        },
        (State::Absent, Some(_)) => (
            format!("groupdel -- {n}"),
            format!("removed group {}", args.name),
        ),
        (State::Absent, None) => return Ok(Outcome::ok()),
    };
    if !ctx.check {
        run(ctx, &note, &cmd).await?;
    }
    Ok(Outcome::changed(note))
}
