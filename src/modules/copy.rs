//! `copy`: a file from the role's `files/` (or inline `content`) onto the host.

use serde::Deserialize;
use sha2::Digest as _;

use super::{fix_attrs, parse_stat, run, stat_script, Ctx, Diff, Mode, Outcome, Result, Spec};
use crate::ssh::shell_quote;

pub const SPEC: Spec = Spec {
    name: "copy",
    args: &[
        "src", "content", "dest", "mode", "owner", "group", "force", "validate",
    ],
    required: &["src|content", "dest"],
    free_form: false,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub src: Option<String>,
    pub content: Option<String>,
    pub dest: String,
    pub mode: Option<Mode>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// false: write the file only if it does not exist yet.
    #[serde(default, deserialize_with = "super::de_bool")]
    pub force: Option<bool>,
    /// A command that must accept the new file (`%s`) before it replaces the old one.
    pub validate: Option<String>,
}

/// Files larger than this are compared by checksum only, never shown in a diff.
const DIFF_LIMIT: usize = 256 * 1024;

/// How a file is to be put.
#[derive(Debug, Default, Clone, Copy)]
pub struct Put<'a> {
    pub mode: Option<Mode>,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    /// Leave an existing file alone.
    pub keep_existing: bool,
    pub validate: Option<&'a str>,
}

/// Puts `contents` at `dest` unless it is already there with the right attributes: one command
/// to read the state, one upload (or chmod/chown) to change it.
pub async fn put(ctx: &Ctx<'_>, dest: &str, contents: &[u8], how: Put<'_>) -> Result<Outcome> {
    let Put {
        mode,
        owner,
        group,
        keep_existing,
        validate,
    } = how;
    let p = shell_quote(dest);
    let want_text = ctx.diff && contents.len() <= DIFF_LIMIT;
    let read = if want_text {
        format!("head -c {} -- {p} 2>/dev/null", DIFF_LIMIT + 1)
    } else {
        format!("sha256sum < {p} 2>/dev/null | cut -c1-64")
    };
    let script = format!(
        "{}; if [ -f {p} ]; then echo; {read}; fi",
        stat_script(dest)
    );
    let out = run(ctx, &format!("reading {dest}"), &script).await?;
    let split = out
        .stdout
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(out.stdout.len());
    let state = parse_stat(&String::from_utf8_lossy(&out.stdout[..split]));
    let rest = out.stdout.get(split + 2..).unwrap_or_default();
    if let Some(s) = &state {
        if s.kind == "directory" {
            return super::fail(format!("{dest} is a directory"));
        }
    }
    if keep_existing && state.is_some() {
        return Ok(Outcome::ok());
    }
    let want_hash = crate::template::hex(&sha2::Sha256::digest(contents));
    let (same, before) = match (&state, want_text) {
        (None, _) => (false, String::new()),
        (Some(_), true) => (rest == contents, String::from_utf8_lossy(rest).to_string()),
        (Some(_), false) => (
            String::from_utf8_lossy(rest).trim() == want_hash,
            String::new(),
        ),
    };
    let mut outcome = Outcome::ok();
    if !same {
        outcome.changed = true;
        outcome.msg = if state.is_none() {
            format!("created {dest}")
        } else {
            format!("updated {dest}")
        };
        if want_text {
            outcome.diffs.push(Diff {
                path: dest.to_string(),
                before,
                after: String::from_utf8_lossy(contents).to_string(),
            });
        }
        if !ctx.check {
            let mode = mode
                .map(|m| m.0)
                .or(state.as_ref().map(|s| s.mode))
                .unwrap_or(0o644);
            let chown = match (owner, group) {
                (Some(o), Some(g)) => Some(format!("{o}:{g}")),
                (Some(o), None) => Some(o.to_string()),
                (None, Some(g)) => Some(format!(":{g}")),
                (None, None) => state.as_ref().map(|s| format!("{}:{}", s.owner, s.group)),
            };
            match validate {
                None => {
                    ctx.session
                        .upload(dest, contents, mode, chown.as_deref())
                        .await?
                }
                Some(check) => {
                    // The new file is checked where it will live, then moved over the old one.
                    let staged = format!("{dest}.hactl-new");
                    ctx.session
                        .upload(&staged, contents, mode, chown.as_deref())
                        .await?;
                    let q = shell_quote(&staged);
                    let script = format!(
                        "{} || {{ rc=$?; rm -f -- {q}; exit $rc; }}; mv -f -- {q} {p}",
                        check.replace("%s", &q)
                    );
                    run(ctx, &format!("validating {dest} with `{check}`"), &script).await?;
                }
            }
        }
        return Ok(outcome);
    }
    let (cmds, notes) = fix_attrs(dest, state.as_ref(), mode, owner, group);
    if !cmds.is_empty() {
        outcome.changed = true;
        outcome.msg = format!("{dest}: {}", notes.join(", "));
        if !ctx.check {
            run(
                ctx,
                &format!("setting {}", notes.join(", ")),
                &cmds.join(" && "),
            )
            .await?;
        }
    }
    Ok(outcome)
}

impl Args {
    fn put(&self) -> Put<'_> {
        Put {
            mode: self.mode,
            owner: self.owner.as_deref(),
            group: self.group.as_deref(),
            keep_existing: self.force == Some(false),
            validate: self.validate.as_deref(),
        }
    }
}

pub async fn run_copy(args: &Args, src_bytes: Option<&[u8]>, ctx: &Ctx<'_>) -> Result<Outcome> {
    let contents = match (&args.content, src_bytes) {
        (Some(c), _) => c.as_bytes(),
        (None, Some(b)) => b,
        (None, None) => return super::fail("copy: needs `src` or `content`"),
    };
    put(ctx, &args.dest, contents, args.put()).await
}
