//! `file`: a directory, a symbolic link, an empty file or nothing at a path, with owner, group
//! and mode.

use serde::Deserialize;

use super::{
    apply_steps, fail, fix_attrs, parse_stat, run, stat_script, Ctx, Mode, Module, Outcome,
    PathState, Plan, Result, Step,
};
use crate::ssh::shell_quote;

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

pub struct File;

/// What is at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub state: Option<PathState>,
    /// Where it points, if it is a symbolic link.
    pub link_target: String,
}

impl Module for File {
    const NAME: &'static str = "file";
    type Args = Args;
    type Observed = Existing;
    type Todo = Vec<Step>;

    fn writes(args: &Args) -> Option<&str> {
        Some(&args.path)
    }

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Existing> {
        let script = format!(
            "{}; readlink -- {} 2>/dev/null || true",
            stat_script(&args.path),
            shell_quote(&args.path)
        );
        let out = run(ctx, &format!("reading {}", args.path), &script).await?;
        let text = out.stdout_text();
        let mut lines = text.lines();
        Ok(Existing {
            state: lines.next().and_then(parse_stat),
            link_target: lines.next().unwrap_or_default().to_string(),
        })
    }

    fn plan(args: &Args, existing: Existing) -> Result<Plan<Vec<Step>>> {
        let Existing { state, link_target } = existing;
        let p = shell_quote(&args.path);
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
                Some(other) => return fail(format!("{} is a {other}, not a directory", args.path)),
            },
            State::Link => {
                let Some(src) = &args.src else {
                    return fail("file: state link needs `src`, the link target");
                };
                if kind != Some("symbolic link") || link_target != *src {
                    if kind == Some("directory") {
                        return fail(format!("{} is a directory, not a link", args.path));
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
                    return fail(format!(
                        "{} does not exist (state: file manages an existing file; use touch to create it)",
                        args.path
                    ))
                }
                Some("directory") => return fail(format!("{} is a directory", args.path)),
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
            return Ok(Plan::nothing());
        }
        let note = notes.join(", ");
        Ok(Plan::change(
            note.clone(),
            vec![Step::run(note, cmds.join(" && "))],
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

    fn plan(args: serde_json::Value, stat: &str, link: &str) -> Result<Plan<Vec<Step>>> {
        let existing = Existing {
            state: parse_stat(stat),
            link_target: link.into(),
        };
        File::plan(&typed::<File>(args), existing)
    }

    fn dir() -> serde_json::Value {
        json!({"path": "/srv/d", "state": "directory", "mode": "0750", "owner": "app"})
    }

    #[test]
    fn an_absent_directory_is_made_with_its_attributes() {
        let p = plan(dir(), "absent", "").unwrap();
        assert_eq!(
            p.outcome,
            Outcome::changed("created directory /srv/d, mode 0750, owner app")
        );
        assert_eq!(
            p.todo.unwrap(),
            [Step::run(
                "created directory /srv/d, mode 0750, owner app",
                "mkdir -p -- /srv/d && chmod 750 -- /srv/d && chown -h app -- /srv/d"
            )]
        );
    }

    #[test]
    fn a_directory_as_asked_needs_nothing() {
        assert!(plan(dir(), "directory|750|app|app", "")
            .unwrap()
            .todo
            .is_none());
    }

    #[test]
    fn a_directory_with_other_attributes_gets_only_those_fixed() {
        let p = plan(dir(), "directory|755|app|app", "").unwrap();
        assert_eq!(p.outcome.msg, "/srv/d, mode 0750");
        assert_eq!(
            p.todo.unwrap(),
            [Step::run("/srv/d, mode 0750", "chmod 750 -- /srv/d")]
        );
        let err = plan(dir(), "regular file|644|root|root", "").unwrap_err();
        assert_eq!(err.to_string(), "/srv/d is a regular file, not a directory");
    }

    #[test]
    fn a_link_is_made_or_repointed_and_a_right_one_left() {
        let link = json!({"path": "/etc/a", "state": "link", "src": "/srv/a"});
        assert_eq!(
            plan(link.clone(), "absent", "").unwrap().outcome.msg,
            "linked /etc/a -> /srv/a"
        );
        assert!(plan(link.clone(), "symbolic link|777|root|root", "/srv/a")
            .unwrap()
            .todo
            .is_none());
        let repoint = plan(link, "symbolic link|777|root|root", "/srv/b").unwrap();
        assert_eq!(
            repoint.todo.unwrap(),
            [Step::run(
                "linked /etc/a -> /srv/a",
                "ln -sfn -- /srv/a /etc/a"
            )]
        );
    }

    #[test]
    fn absent_removes_what_is_there_and_state_file_needs_a_file() {
        let absent = json!({"path": "/tmp/x", "state": "absent"});
        assert!(plan(absent.clone(), "absent", "").unwrap().todo.is_none());
        assert_eq!(
            plan(absent, "directory|755|root|root", "")
                .unwrap()
                .outcome
                .msg,
            "removed /tmp/x"
        );
        let err = plan(json!({"path": "/tmp/x", "mode": "0600"}), "absent", "").unwrap_err();
        assert!(err.to_string().contains("use touch to create it"), "{err}");
    }

    #[tokio::test]
    async fn check_mode_reads_the_path_and_changes_nothing() {
        let host = TestHost::new(FakeRemote::new().answer("stat -c", "absent\n"));
        let planned = host.check::<File>(dir()).await.unwrap();
        assert!(planned.changed);
        assert_eq!(host.remote.commands().len(), 1);
    }
}
