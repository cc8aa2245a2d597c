//! `blockinfile`: a block of lines between two marker lines in a text file, as Ansible's
//! `blockinfile` has it — replaced where the markers are, else inserted by `insertafter` /
//! `insertbefore`; removed, markers and all, with `state: absent` or an empty block.

use serde::Deserialize;

use super::lineinfile::{plan_edit, read, text_of, without_newline, Anchor, Attrs, Found, Pattern};
use super::{
    apply_steps, fail, ArgsError, Ctx, Mode, Module, Outcome, Plan, Presence, Result, Step,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub path: String,
    /// The lines between the markers; none (or empty) removes the block.
    pub block: Option<String>,
    /// The marker lines: `{mark}` becomes `marker_begin`, then `marker_end`.
    #[serde(default = "marker")]
    pub marker: String,
    #[serde(default = "begin")]
    pub marker_begin: String,
    #[serde(default = "end")]
    pub marker_end: String,
    #[serde(default)]
    pub state: Presence,
    /// Without markers in the file: `EOF` (the default), or after the last line this matches
    /// (the whole text, when the expression starts with `(?m)`).
    pub insertafter: Option<Anchor>,
    /// Without markers in the file: `BOF`, or before the last line this matches.
    pub insertbefore: Option<Anchor>,
    /// Create a missing file rather than fail.
    #[serde(default, deserialize_with = "super::de_bool")]
    pub create: Option<bool>,
    /// A blank line after the block, unless one is there or the block ends the file.
    #[serde(default, deserialize_with = "super::de_bool")]
    pub append_newline: Option<bool>,
    /// A blank line before the block, unless one is there or the block starts the file.
    #[serde(default, deserialize_with = "super::de_bool")]
    pub prepend_newline: Option<bool>,
    pub mode: Option<Mode>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

fn marker() -> String {
    "# {mark} ANSIBLE MANAGED BLOCK".into()
}

fn begin() -> String {
    "BEGIN".into()
}

fn end() -> String {
    "END".into()
}

pub struct BlockInFile;

impl Module for BlockInFile {
    const NAME: &'static str = "blockinfile";
    type Args = Args;
    type Observed = Found;
    type Todo = Vec<Step>;

    fn writes(args: &Args) -> Option<&str> {
        Some(&args.path)
    }

    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        let why = match (&args.insertafter, &args.insertbefore) {
            (Some(_), Some(_)) => "give `insertafter` or `insertbefore`, not both",
            (Some(Anchor::Bof), _) => {
                "`insertafter` takes EOF or a regular expression; for the start, `insertbefore: BOF`"
            }
            (_, Some(Anchor::Eof)) => {
                "`insertbefore` takes BOF or a regular expression; for the end, `insertafter: EOF`"
            }
            _ => return Ok(()),
        };
        Err(ArgsError::Invalid(why.into()))
    }

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Found> {
        read(&args.path, ctx).await
    }

    /// Ansible's `blockinfile`, step for step.
    fn plan(args: &Args, found: Found) -> Result<Plan<Vec<Step>>> {
        let path = args.path.as_str();
        let text = text_of(path, &found)?;
        let present = args.state == Presence::Present;
        if text.is_none() && !present {
            return Ok(Plan::nothing());
        }
        if text.is_none() && args.create != Some(true) {
            return fail(format!(
                "{path} does not exist (give `create: true` to create it)"
            ));
        }
        let original = text.unwrap_or_default();
        let mut lines = split_lines(original);
        let marker = |mark: &str| format!("{}\n", args.marker.replace("{mark}", mark)).into_bytes();
        let (begin, end) = (marker(&args.marker_begin), marker(&args.marker_end));
        let block = args.block.as_deref().unwrap_or_default();
        let block_lines = if present && !block.is_empty() {
            let block = match block.ends_with('\n') {
                true => block.to_string(),
                false => format!("{block}\n"),
            };
            [
                vec![begin.clone()],
                split_lines(block.as_bytes()),
                vec![end.clone()],
            ]
            .concat()
        } else {
            Vec::new()
        };
        let removing = block_lines.is_empty();

        let last = |marker: &[u8]| lines.iter().rposition(|l| l == marker);
        let mut at = match (last(&begin), last(&end)) {
            (Some(b), Some(e)) => {
                let (first, last) = (b.min(e), b.max(e));
                lines.drain(first..=last);
                first
            }
            _ => insert_position(args, original, &lines).min(lines.len()),
        };
        if at > 0 && !lines[at - 1].ends_with(b"\n") {
            lines[at - 1].push(b'\n');
        }
        if args.prepend_newline == Some(true) && present && at != 0 && lines[at - 1] != b"\n" {
            lines.insert(at, b"\n".to_vec());
            at += 1;
        }
        let after_block = at + block_lines.len();
        lines.splice(at..at, block_lines);
        if args.append_newline == Some(true)
            && present
            && after_block < lines.len()
            && lines[after_block] != b"\n"
        {
            lines.insert(after_block, b"\n".to_vec());
        }

        let result = lines.concat();
        let note = match text {
            Some(t) if t == result => None,
            None => Some(format!("created {path}")),
            Some(_) if removing => Some(format!("block removed from {path}")),
            Some(_) => Some(format!("block inserted into {path}")),
        };
        let attrs = Attrs {
            mode: args.mode,
            owner: args.owner.as_deref(),
            group: args.group.as_deref(),
        };
        Ok(plan_edit(path, &found, note.map(|n| (n, result)), attrs))
    }

    async fn apply(_: &Args, steps: Vec<Step>, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        apply_steps(ctx, &steps, planned).await
    }
}

/// Where a block goes when the file has no markers: by the last line the anchor matches (or,
/// for an expression that starts with `(?m)`, by its first match in the whole text), else at
/// the end.
fn insert_position(args: &Args, original: &[u8], lines: &[Vec<u8>]) -> usize {
    let after = matches!(args.insertafter, Some(Anchor::Line(_)));
    let pattern = match (&args.insertafter, &args.insertbefore) {
        (Some(Anchor::Line(p)), _) | (_, Some(Anchor::Line(p))) => p,
        (_, Some(Anchor::Bof)) => return 0,
        _ => return lines.len(),
    };
    let hit = if multiline(pattern) {
        pattern.0.find(original).map(|m| {
            let upto = if after { m.end() } else { m.start() };
            original[..upto].iter().filter(|b| **b == b'\n').count()
        })
    } else {
        lines
            .iter()
            .rposition(|l| pattern.0.is_match(without_newline(l)))
    };
    hit.map_or(lines.len(), |i| i + usize::from(after))
}

/// Whether Python would compile the expression with `re.MULTILINE`: a leading `(?m)` (or
/// `(?im)` and the like).
fn multiline(pattern: &Pattern) -> bool {
    let mut rest = pattern.0.as_str();
    while let Some(group) = rest.strip_prefix("(?") {
        let Some(close) = group.find(')') else {
            return false;
        };
        let flags = &group[..close];
        if flags.is_empty() || !flags.chars().all(|c| "aiLmsux".contains(c)) {
            return false;
        }
        if flags.contains('m') {
            return true;
        }
        rest = &group[close + 1..];
    }
    false
}

/// Python's `bytes.splitlines(keepends=True)`: lines ended by `\n`, `\r\n` or `\r`.
fn split_lines(text: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        let end = match (text[i], text.get(i + 1)) {
            (b'\r', Some(b'\n')) => Some(i + 1),
            (b'\r' | b'\n', _) => Some(i),
            _ => None,
        };
        if let Some(end) = end {
            lines.push(text[start..=end].to_vec());
            (start, i) = (end + 1, end);
        }
        i += 1;
    }
    if start < text.len() {
        lines.push(text[start..].to_vec());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{typed, FakeRemote, TestHost};
    use crate::modules::Upload;
    use serde_json::{json, Value};
    use std::sync::Arc;

    use crate::modules::lineinfile::support::{found_as, text_written};

    fn found(content: Option<&str>) -> Found {
        found_as(content, "regular file|644|root|root", false)
    }

    fn planned(args: Value, content: Option<&str>) -> Result<Plan<Vec<Step>>> {
        BlockInFile::plan(&typed::<BlockInFile>(args), found(content))
    }

    fn written(args: Value, content: Option<&str>) -> Option<String> {
        text_written(planned(args, content))
    }

    fn twice(args: Value, content: &str) -> String {
        crate::modules::lineinfile::support::twice(written, args, content)
    }

    fn block(extra: Value) -> Value {
        let mut args = json!({"path": "/etc/x", "block": "x=1\ny=2"});
        args.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        args
    }

    const BEGIN: &str = "# BEGIN ANSIBLE MANAGED BLOCK\n";
    const END: &str = "# END ANSIBLE MANAGED BLOCK\n";

    #[test]
    fn a_block_is_inserted_at_the_end_between_markers_once() {
        let plan = planned(block(json!({})), Some("a\n")).unwrap();
        assert_eq!(plan.outcome.msg, "block inserted into /etc/x");
        assert_eq!(
            twice(block(json!({})), "a\n"),
            format!("a\n{BEGIN}x=1\ny=2\n{END}")
        );
        assert_eq!(
            twice(block(json!({})), "a"),
            format!("a\n{BEGIN}x=1\ny=2\n{END}")
        );
    }

    #[test]
    fn the_block_between_the_markers_is_replaced_in_place() {
        let before = format!("a\n{BEGIN}old\n{END}b\n");
        assert_eq!(
            twice(block(json!({})), &before),
            format!("a\n{BEGIN}x=1\ny=2\n{END}b\n")
        );
        let anchored = block(json!({"insertbefore": "BOF"}));
        assert_eq!(
            twice(anchored, &before),
            format!("a\n{BEGIN}x=1\ny=2\n{END}b\n")
        );
    }

    #[test]
    fn absent_or_an_empty_block_removes_the_markers_and_the_block() {
        let before = format!("a\n{BEGIN}old\n{END}b\n");
        let plan = planned(block(json!({"state": "absent"})), Some(&before)).unwrap();
        assert_eq!(plan.outcome.msg, "block removed from /etc/x");
        assert_eq!(twice(block(json!({"state": "absent"})), &before), "a\nb\n");
        assert_eq!(twice(block(json!({"block": ""})), &before), "a\nb\n");
        assert_eq!(
            written(block(json!({"state": "absent"})), Some("a\n")),
            None
        );
        assert!(planned(block(json!({"state": "absent"})), None)
            .unwrap()
            .todo
            .is_none());
    }

    #[test]
    fn custom_markers_frame_the_block() {
        let args = block(
            json!({"marker": "<!-- {mark} hactl -->", "marker_begin": "start",
                                "marker_end": "stop"}),
        );
        assert_eq!(
            twice(args.clone(), "<body>\n"),
            "<body>\n<!-- start hactl -->\nx=1\ny=2\n<!-- stop hactl -->\n"
        );
        let other = format!("<body>\n{BEGIN}keep\n{END}");
        assert_eq!(
            twice(args, &other),
            format!("{other}<!-- start hactl -->\nx=1\ny=2\n<!-- stop hactl -->\n")
        );
    }

    #[test]
    fn without_markers_the_anchor_places_the_block() {
        let conf = "a\nb\na\nc\n";
        let framed = format!("{BEGIN}x=1\ny=2\n{END}");
        let at = |anchor: Value| twice(block(anchor), conf);
        assert_eq!(
            at(json!({"insertafter": "^a$"})),
            format!("a\nb\na\n{framed}c\n")
        );
        assert_eq!(
            at(json!({"insertbefore": "^a"})),
            format!("a\nb\n{framed}a\nc\n")
        );
        assert_eq!(
            at(json!({"insertbefore": "BOF"})),
            format!("{framed}{conf}")
        );
        assert_eq!(
            at(json!({"insertafter": "^zzz"})),
            format!("{conf}{framed}")
        );
        assert_eq!(
            at(json!({"insertafter": "(?m)^a\\nb$"})),
            format!("a\nb\n{framed}a\nc\n")
        );
    }

    #[test]
    fn blank_lines_around_the_block_on_request() {
        let args = block(json!({"insertafter": "^a", "prepend_newline": true,
                                "append_newline": true}));
        assert_eq!(
            twice(args, "a\nb\n"),
            format!("a\n\n{BEGIN}x=1\ny=2\n{END}\nb\n")
        );
    }

    #[test]
    fn a_missing_file_fails_unless_create_makes_it() {
        let err = planned(block(json!({})), None).unwrap_err();
        assert!(
            err.to_string().starts_with("/etc/x does not exist"),
            "{err}"
        );
        let plan = planned(block(json!({"create": "yes", "mode": "0600"})), None).unwrap();
        assert_eq!(plan.outcome.msg, "created /etc/x, mode 0600");
        assert_eq!(
            plan.todo.unwrap(),
            [
                Step::run("creating /etc", "mkdir -p -- /etc"),
                Step::Upload(Upload {
                    path: "/etc/x".into(),
                    contents: Arc::from(format!("{BEGIN}x=1\ny=2\n{END}").as_bytes()),
                    mode: 0o600,
                    owner: None,
                }),
            ]
        );
    }

    #[test]
    fn anchors_follow_ansibles_rules() {
        let err = |v| {
            crate::modules::args::parse::<BlockInFile>(v)
                .unwrap_err()
                .to_string()
        };
        assert!(err(block(json!({"insertafter": "a", "insertbefore": "b"}))).contains("not both"));
        assert!(err(block(json!({"insertafter": "BOF"}))).contains("insertbefore: BOF"));
        assert!(err(block(json!({"insertbefore": "EOF"}))).contains("insertafter: EOF"));
    }

    #[test]
    fn lines_split_as_python_splits_them() {
        assert_eq!(
            split_lines(b"a\r\nb\rc\nd"),
            [&b"a\r\n"[..], b"b\r", b"c\n", b"d"]
        );
        assert!(split_lines(b"").is_empty());
    }

    #[tokio::test]
    async fn check_mode_reports_the_change_and_uploads_nothing() {
        let answer = "/etc/x\nregular file|644|root|root\na\n";
        let mut host = TestHost::new(FakeRemote::new().answer("readlink -f", answer));
        host.diff = true;
        let planned = host.check::<BlockInFile>(block(json!({}))).await.unwrap();
        assert_eq!(planned.msg, "block inserted into /etc/x");
        assert_eq!(planned.diffs[0].after, format!("a\n{BEGIN}x=1\ny=2\n{END}"));
        assert_eq!(host.remote.commands().len(), 1);
        assert!(host.remote.uploads().is_empty());
    }
}
