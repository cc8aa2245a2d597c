//! `file`: a directory, a symbolic link, an empty file or nothing at a path, with owner, group
//! and mode.

use serde::Deserialize;

use super::{fix_attrs, parse_stat, run, stat_script, Ctx, Mode, Outcome, Result, Spec};
use crate::ssh::shell_quote;

pub const SPEC: Spec = Spec {
    name: "file",
    args: &["path", "state", "mode", "owner", "group", "src"],
    required: &["path"],
    free_form: false,
};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The path must exist; only its attributes are managed (Ansible's default).
    #[default]
    File,
    Directory,
    Link,
    Touch,
    Absent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub path: String,
    #[serde(default)]
    pub state: State,
    pub mode: Option<Mode>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// The link target, for `state: link`.
    pub src: Option<String>,
}

pub async fn run_file(args: &Args, ctx: &Ctx<'_>) -> Result<Outcome> {
    let p = shell_quote(&args.path);
    let script = format!(
        "{}; readlink -- {p} 2>/dev/null || true",
        stat_script(&args.path)
    );
    let out = run(ctx, &format!("reading {}", args.path), &script).await?;
    let text = out.stdout_text();
    let mut lines = text.lines();
    let state = lines.next().and_then(parse_stat);
    let link_target = lines.next().unwrap_or_default().to_string();
    let kind = state.as_ref().map(|s| s.kind.as_str());

    let mut cmds: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut attrs_of = state.clone();
    match args.state {
        State::Absent => {
            if state.is_some() {
                cmds.push(format!("rm -rf -- {p}"));
                notes.push(format!("removed {}", args.path));
            }
            attrs_of = None;
        }
        State::Directory => match kind {
            Some("directory") => {}
            None => {
                cmds.push(format!("mkdir -p -- {p}"));
                notes.push(format!("created directory {}", args.path));
                attrs_of = None;
            }
            Some(other) => {
                return super::fail(format!("{} is a {other}, not a directory", args.path))
            }
        },
        State::Link => {
            let Some(src) = &args.src else {
                return super::fail("file: state link needs `src`, the link target");
            };
            if kind != Some("symbolic link") || link_target != *src {
                if kind == Some("directory") {
                    return super::fail(format!("{} is a directory, not a link", args.path));
                }
                cmds.push(format!("ln -sfn -- {} {p}", shell_quote(src)));
                notes.push(format!("linked {} -> {src}", args.path));
                attrs_of = None;
            }
        }
        State::Touch => {
            if state.is_none() {
                cmds.push(format!("touch -- {p}"));
                notes.push(format!("created {}", args.path));
                attrs_of = None;
            }
        }
        State::File => match kind {
            None => {
                return super::fail(format!(
                "{} does not exist (state: file manages an existing file; use touch to create it)",
                args.path
            ))
            }
            Some("directory") => return super::fail(format!("{} is a directory", args.path)),
            Some(_) => {}
        },
    }
    if args.state != State::Absent {
        let mode = if args.state == State::Link {
            None
        } else {
            args.mode
        };
        let (more, more_notes) = fix_attrs(
            &args.path,
            attrs_of.as_ref(),
            mode,
            args.owner.as_deref(),
            args.group.as_deref(),
        );
        cmds.extend(more);
        if !notes.is_empty() || !more_notes.is_empty() {
            if notes.is_empty() {
                notes.push(args.path.clone());
            }
            notes.extend(more_notes);
        }
    }
    if cmds.is_empty() {
        return Ok(Outcome::ok());
    }
    if !ctx.check {
        run(ctx, &notes.join(", "), &cmds.join(" && ")).await?;
    }
    Ok(Outcome::changed(notes.join(", ")))
}
