//! `copy` and `template`: a file put on the host — `copy`'s from the role's `files/` (or inline
//! `content`), `template`'s a Jinja2 template from the role's `templates/`, rendered on the
//! control machine with the host's variables. One command reads what is there; one upload (or
//! chmod/chown) puts it right.

use std::sync::Arc;

use serde::Deserialize;
use sha2::Digest as _;

use super::{
    apply_steps, fail, fix_attrs, owner_spec, parse_stat, run, stat_script, ArgsError, Ctx, Diff,
    Mode, Module, Outcome, PathState, Plan, Result, Step, Upload,
};
use crate::ssh::shell_quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// `copy`: a file in the role's `files/` (or an absolute path on this machine);
    /// `template`: a template in the role's `templates/`.
    pub src: Option<String>,
    /// `copy` only: the text itself.
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
    /// What `src` names, filled in by the engine: the file's bytes, or the rendered template.
    #[serde(skip)]
    pub source: Option<Vec<u8>>,
}

impl Args {
    fn contents(&self) -> Result<&[u8]> {
        match (&self.content, &self.source) {
            (Some(c), _) => Ok(c.as_bytes()),
            (None, Some(b)) => Ok(b),
            (None, None) => fail(format!("{}: nothing read for `src`", self.dest)),
        }
    }
}

/// `copy` (`TEMPLATE` false) or `template`.
pub struct Put<const TEMPLATE: bool>;
pub type Copy = Put<false>;
pub type Template = Put<true>;

/// Files larger than this are compared by checksum only, never shown in a diff.
const DIFF_LIMIT: usize = 256 * 1024;

/// What is at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub state: Option<PathState>,
    pub content: Content,
}

/// A regular file's content (empty when there is none), as much of it as was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The text, read for a diff.
    Text(Vec<u8>),
    /// Its sha256, when no diff is asked for or the file is too large to show.
    Sum(String),
}

impl<const TEMPLATE: bool> Module for Put<TEMPLATE> {
    const NAME: &'static str = if TEMPLATE { "template" } else { "copy" };
    type Args = Args;
    type Observed = Existing;
    type Todo = Vec<Step>;

    fn writes(args: &Args) -> Option<&str> {
        Some(&args.dest)
    }

    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        let why = match (&args.src, &args.content) {
            (None, _) if TEMPLATE => "give `src`, a template in the role's templates/",
            (_, Some(_)) if TEMPLATE => "takes no `content`: give `src`, a template",
            (None, None) => "give `src` or `content`",
            _ => return Ok(()),
        };
        Err(ArgsError::Invalid(why.into()))
    }

    /// The destination's attributes and content (or checksum), in one command.
    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Existing> {
        let dest = &args.dest;
        let p = shell_quote(dest);
        let want_text = ctx.diff && args.contents()?.len() <= DIFF_LIMIT;
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
        let content = if want_text {
            Content::Text(rest.to_vec())
        } else {
            Content::Sum(String::from_utf8_lossy(rest).trim().to_string())
        };
        Ok(Existing { state, content })
    }

    /// The upload (or chmod/chown) that makes the destination hold the file.
    fn plan(args: &Args, existing: Existing) -> Result<Plan<Vec<Step>>> {
        let dest = args.dest.as_str();
        let contents = args.contents()?;
        let (owner, group) = (args.owner.as_deref(), args.group.as_deref());
        let Existing { state, content } = existing;
        if state.as_ref().is_some_and(|s| s.kind == "directory") {
            return fail(format!("{dest} is a directory"));
        }
        if args.force == Some(false) && state.is_some() {
            return Ok(Plan::nothing());
        }
        let same = state.is_some()
            && match &content {
                Content::Text(text) => text == contents,
                Content::Sum(sum) => *sum == crate::template::hex(&sha2::Sha256::digest(contents)),
            };
        if same {
            let (cmds, notes) = fix_attrs(dest, state.as_ref(), args.mode, owner, group);
            if cmds.is_empty() {
                return Ok(Plan::nothing());
            }
            return Ok(Plan::change(
                format!("{dest}: {}", notes.join(", ")),
                vec![Step::run(
                    format!("setting {}", notes.join(", ")),
                    cmds.join(" && "),
                )],
            ));
        }
        let note = if state.is_none() {
            format!("created {dest}")
        } else {
            format!("updated {dest}")
        };
        let upload = |path: String| {
            Step::Upload(Upload {
                path,
                contents: Arc::from(contents),
                mode: args
                    .mode
                    .map(|m| m.0)
                    .or(state.as_ref().map(|s| s.mode))
                    .unwrap_or(0o644),
                owner: owner_spec(owner, group)
                    .or_else(|| state.as_ref().map(|s| format!("{}:{}", s.owner, s.group))),
            })
        };
        let steps = match &args.validate {
            None => vec![upload(dest.to_string())],
            Some(check) => {
                // The new file is checked where it will live, then moved over the old one.
                let staged = format!("{dest}.hactl-new");
                let q = shell_quote(&staged);
                let script = format!(
                    "{} || {{ rc=$?; rm -f -- {q}; exit $rc; }}; mv -f -- {q} {}",
                    check.replace("%s", &q),
                    shell_quote(dest)
                );
                vec![
                    upload(staged),
                    Step::run(format!("validating {dest} with `{check}`"), script),
                ]
            }
        };
        let mut planned = Plan::change(note, steps);
        if let Content::Text(before) = content {
            planned.outcome.diffs.push(Diff {
                path: dest.to_string(),
                // Nothing was read of a file that is not there.
                before: String::from_utf8_lossy(&before).to_string(),
                after: String::from_utf8_lossy(contents).to_string(),
            });
        }
        Ok(planned)
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

    const SUM_OF_HELLO: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    fn args() -> serde_json::Value {
        json!({"content": "hello\n", "dest": "/etc/x", "mode": "0640", "owner": "app"})
    }

    fn existing(stat: &str, content: Content) -> Existing {
        Existing {
            state: parse_stat(stat),
            content,
        }
    }

    fn planned(args: serde_json::Value, found: Existing) -> Plan<Vec<Step>> {
        Copy::plan(&typed::<Copy>(args), found).unwrap()
    }

    #[test]
    fn an_absent_file_is_uploaded_with_its_mode_and_owner() {
        let plan = planned(args(), existing("absent", Content::Sum(String::new())));
        assert_eq!(plan.outcome, Outcome::changed("created /etc/x"));
        assert_eq!(
            plan.todo.unwrap(),
            [Step::Upload(Upload {
                path: "/etc/x".into(),
                contents: Arc::from(&b"hello\n"[..]),
                mode: 0o640,
                owner: Some("app".into()),
            })]
        );
    }

    #[test]
    fn the_same_file_with_the_same_attributes_needs_nothing() {
        let found = existing(
            "regular file|640|app|app",
            Content::Sum(SUM_OF_HELLO.into()),
        );
        assert!(planned(args(), found).todo.is_none());
        let found = existing(
            "regular file|640|app|app",
            Content::Text(b"hello\n".to_vec()),
        );
        assert!(planned(args(), found).todo.is_none());
    }

    #[test]
    fn the_same_content_with_other_attributes_is_chmodded_not_uploaded() {
        let found = existing(
            "regular file|644|root|root",
            Content::Sum(SUM_OF_HELLO.into()),
        );
        let plan = planned(args(), found);
        assert_eq!(
            plan.outcome,
            Outcome::changed("/etc/x: mode 0640, owner app")
        );
        assert_eq!(
            plan.todo.unwrap(),
            [Step::run(
                "setting mode 0640, owner app",
                "chmod 640 -- /etc/x && chown -h app -- /etc/x"
            )]
        );
    }

    #[test]
    fn other_content_is_replaced_keeping_the_old_attributes_and_shown_as_a_diff() {
        let found = existing("regular file|600|db|db", Content::Text(b"old\n".to_vec()));
        let plan = planned(json!({"content": "hello\n", "dest": "/etc/x"}), found);
        assert_eq!(plan.outcome.msg, "updated /etc/x");
        assert_eq!(
            plan.outcome.diffs,
            [Diff {
                path: "/etc/x".into(),
                before: "old\n".into(),
                after: "hello\n".into()
            }]
        );
        let Some([Step::Upload(Upload { mode, owner, .. })]) = plan.todo.as_deref() else {
            panic!("{:?}", plan.todo)
        };
        assert_eq!((*mode, owner.as_deref()), (0o600, Some("db:db")));
    }

    #[test]
    fn a_validated_file_is_staged_checked_then_moved() {
        let found = existing("absent", Content::Sum(String::new()));
        let plan = planned(
            json!({"content": "x", "dest": "/etc/sudoers.d/a", "validate": "visudo -cf %s"}),
            found,
        );
        let steps = plan.todo.unwrap();
        assert!(matches!(&steps[0], Step::Upload(u) if u.path == "/etc/sudoers.d/a.hactl-new"));
        let Step::Run { script, .. } = &steps[1] else {
            panic!("{steps:?}")
        };
        assert!(
            script.starts_with("visudo -cf /etc/sudoers.d/a.hactl-new ||"),
            "{script}"
        );
        assert!(script.ends_with("mv -f -- /etc/sudoers.d/a.hactl-new /etc/sudoers.d/a"));
    }

    #[test]
    fn force_false_leaves_an_existing_file_and_a_directory_is_refused() {
        let found = existing("regular file|600|db|db", Content::Sum("other".into()));
        assert!(
            planned(json!({"content": "x", "dest": "/x", "force": "no"}), found)
                .todo
                .is_none()
        );
        let dir = existing("directory|755|root|root", Content::Sum(String::new()));
        let err = Copy::plan(&typed::<Copy>(args()), dir).unwrap_err();
        assert_eq!(err.to_string(), "/etc/x is a directory");
    }

    #[tokio::test]
    async fn check_mode_reads_the_file_and_writes_nothing() {
        let mut host =
            TestHost::new(FakeRemote::new().answer("stat -c", "regular file|640|app|app\n\nold\n"));
        host.diff = true;
        let planned = host.check::<Copy>(args()).await.unwrap();
        assert_eq!(planned.msg, "updated /etc/x");
        assert_eq!(planned.diffs[0].before, "old\n");
        assert_eq!(host.remote.commands().len(), 1);
        assert!(host.remote.uploads().is_empty());
    }

    #[tokio::test]
    async fn a_unit_file_written_tells_the_run_systemd_must_reload() {
        let host = TestHost::new(FakeRemote::new().answer("stat -c", "absent\n"));
        let unit = json!({"content": "[Unit]\n", "dest": "/etc/systemd/system/a.service"});
        host.apply::<Copy>(unit).await.unwrap();
        assert_eq!(host.remote.uploads(), ["/etc/systemd/system/a.service"]);
        assert!(host.units_changed.load(std::sync::atomic::Ordering::SeqCst));
    }

    fn template(text: &str) -> Args {
        Args {
            source: Some(text.as_bytes().to_vec()),
            ..typed::<Template>(json!({"src": "a.j2", "dest": "/etc/a.conf", "mode": "0644"}))
        }
    }

    #[test]
    fn a_template_is_put_where_its_rendered_text_differs() {
        let absent = Template::plan(
            &template("a=1\n"),
            existing("absent", Content::Text(vec![])),
        );
        assert_eq!(absent.unwrap().outcome.msg, "created /etc/a.conf");
        let found = |text: &str| existing("regular file|644|root|root", Content::Text(text.into()));
        let same = Template::plan(&template("a=1\n"), found("a=1\n"));
        assert!(same.unwrap().todo.is_none());
        let other = Template::plan(&template("a=2\n"), found("a=1\n")).unwrap();
        assert_eq!(other.outcome.msg, "updated /etc/a.conf");
        assert_eq!(other.outcome.diffs[0].after, "a=2\n");
    }

    #[test]
    fn a_template_needs_src_and_takes_no_content() {
        let err = |v| {
            crate::modules::args::parse::<Template>(v)
                .unwrap_err()
                .to_string()
        };
        assert!(err(json!({"dest": "/x"})).starts_with("give `src`"));
        assert!(err(json!({"src": "a.j2", "content": "x", "dest": "/x"})).contains("no `content`"));
        let copy = crate::modules::args::parse::<Copy>(json!({"dest": "/x"})).unwrap_err();
        assert_eq!(copy.to_string(), "give `src` or `content`");
    }

    #[tokio::test]
    async fn check_mode_uploads_no_template() {
        let host = TestHost::new(FakeRemote::new().answer("stat -c", "absent\n"));
        let outcome = crate::modules::execute::<Template>(&template("a=1\n"), &host.ctx(), true)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::changed("created /etc/a.conf"));
        assert!(host.remote.uploads().is_empty());
    }
}
