//! `lineinfile`: one line of a text file, as Ansible's `lineinfile` has it — the line a regular
//! expression (or a search string) finds is replaced, else the line is added where
//! `insertafter`/`insertbefore` say unless it is there already; or every such line removed.
//! One command reads the file; one upload writes the new text. Also the reading and rewriting
//! `blockinfile` shares.

use std::sync::Arc;

use regex::bytes::{Captures, Regex};
use serde::{Deserialize, Deserializer};

use super::{
    apply_steps, fail, fix_attrs, owner_spec, parse_stat, run, ArgsError, Ctx, Diff, Mode, Module,
    Outcome, PathState, Plan, Presence, Result, Step, Upload,
};
use crate::ssh::shell_quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub path: String,
    /// The line to have (`state: present`), or to remove.
    pub line: Option<String>,
    /// The line to replace (the last that matches) or, with `state: absent`, the lines to remove.
    pub regexp: Option<Pattern>,
    /// As `regexp`, a plain substring.
    pub search_string: Option<String>,
    #[serde(default)]
    pub state: Presence,
    /// `EOF` (the default), `BOF`, or after the last line this matches.
    pub insertafter: Option<Anchor>,
    /// `BOF`, or before the last line this matches.
    pub insertbefore: Option<Anchor>,
    /// Create a missing file rather than fail.
    #[serde(default, deserialize_with = "super::de_bool")]
    pub create: Option<bool>,
    /// `line` holds `\1`, `\g<name>`: the groups of `regexp`'s match; no match, no change.
    #[serde(default, deserialize_with = "super::de_bool")]
    pub backrefs: Option<bool>,
    /// The first line `regexp`, `search_string` or the insert anchor matches, not the last.
    #[serde(default, deserialize_with = "super::de_bool")]
    pub firstmatch: Option<bool>,
    pub mode: Option<Mode>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// A regular expression, compiled as the task is typed. Python's syntax where the `regex`
/// crate shares it (no look-around, no back-references in the pattern).
#[derive(Debug)]
pub struct Pattern(pub Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Pattern, D::Error> {
        let text = String::deserialize(d)?;
        Regex::new(&text)
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("bad regular expression {text:?}: {e}")))
    }
}

impl Pattern {
    /// Whether a line (its `\n` aside, as Python's `$` matches before it) holds a match.
    pub(crate) fn finds(&self, line: &[u8]) -> bool {
        self.0.is_match(without_newline(line))
    }
}

/// Where a line or block goes: the file's start or end, or next to a line that matches.
#[derive(Debug)]
pub enum Anchor {
    Bof,
    Eof,
    Line(Pattern),
}

impl<'de> Deserialize<'de> for Anchor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Anchor, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "BOF" => Anchor::Bof,
            "EOF" => Anchor::Eof,
            _ => Anchor::Line(Pattern::deserialize(
                serde::de::value::StringDeserializer::<D::Error>::new(text),
            )?),
        })
    }
}

pub struct LineInFile;

/// A text file as read for editing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where it is written: the path with its symbolic links resolved, as Ansible writes.
    pub real: String,
    pub state: Option<PathState>,
    pub content: Vec<u8>,
    /// Whether the plan carries the diff (`--diff`).
    pub diff: bool,
}

/// Reads `path` (through its links), its attributes and its text, in one command.
pub(crate) async fn read(path: &str, ctx: &Ctx<'_>) -> Result<Found> {
    let script = format!(
        "p={}; r=$(readlink -f -- \"$p\" 2>/dev/null) || r=$p; printf '%s\\n' \"$r\"; \
         if [ -e \"$r\" ]; then stat -c '%F|%a|%U|%G' -- \"$r\"; else echo absent; fi; \
         if [ -f \"$r\" ]; then cat -- \"$r\"; fi",
        shell_quote(path)
    );
    let out = run(ctx, &format!("reading {path}"), &script).await?;
    let mut parts = out.stdout.splitn(3, |b| *b == b'\n');
    let real = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
    let state = parse_stat(&String::from_utf8_lossy(parts.next().unwrap_or_default()));
    Ok(Found {
        real: if real.is_empty() { path.into() } else { real },
        state,
        content: parts.next().unwrap_or_default().to_vec(),
        diff: ctx.diff,
    })
}

/// The file's text, or None when there is no file; fails on what is not a regular file.
pub(crate) fn text_of<'a>(path: &str, found: &'a Found) -> Result<Option<&'a [u8]>> {
    match found.state.as_ref().map(|s| s.kind.as_str()) {
        None => Ok(None),
        Some(kind) if kind.starts_with("regular") => Ok(Some(&found.content)),
        Some("directory") => fail(format!("{path} is a directory")),
        Some(kind) => fail(format!("{path} is a {kind}, not a regular file")),
    }
}

/// The file's mode, owner and group, where the task gives them.
pub(crate) struct Attrs<'a> {
    pub mode: Option<Mode>,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
}

/// The plan that puts `found` right: `edit` (what changed, the new text) uploaded with the
/// attributes asked or kept, or only the attributes fixed.
pub(crate) fn plan_edit(
    path: &str,
    found: &Found,
    edit: Option<(String, Vec<u8>)>,
    attrs: Attrs<'_>,
) -> Plan<Vec<Step>> {
    let state = found.state.as_ref();
    let (cmds, notes) = fix_attrs(&found.real, state, attrs.mode, attrs.owner, attrs.group);
    let Some((note, after)) = edit else {
        if cmds.is_empty() || state.is_none() {
            return Plan::nothing();
        }
        let note = notes.join(", ");
        return Plan::change(
            format!("{path}: {note}"),
            vec![Step::run(format!("setting {note}"), cmds.join(" && "))],
        );
    };
    let owner = match state {
        Some(s) => Some(format!(
            "{}:{}",
            attrs.owner.unwrap_or(&s.owner),
            attrs.group.unwrap_or(&s.group)
        )),
        None => owner_spec(attrs.owner, attrs.group),
    };
    let diff = Diff {
        path: path.to_string(),
        before: String::from_utf8_lossy(&found.content).to_string(),
        after: String::from_utf8_lossy(&after).to_string(),
    };
    let upload = Step::Upload(Upload {
        path: found.real.clone(),
        contents: Arc::from(after),
        mode: attrs
            .mode
            .map(|m| m.0)
            .or(state.map(|s| s.mode))
            .unwrap_or(0o644),
        owner,
    });
    // A file created where no directory is yet gets one, as Ansible makes it.
    let dir = std::path::Path::new(&found.real)
        .parent()
        .map(|d| d.to_string_lossy().to_string())
        .filter(|d| state.is_none() && !d.is_empty() && d != "/");
    let steps = match dir {
        Some(dir) => vec![
            Step::run(
                format!("creating {dir}"),
                format!("mkdir -p -- {}", shell_quote(&dir)),
            ),
            upload,
        ],
        None => vec![upload],
    };
    let mut plan = Plan::change([vec![note], notes].concat().join(", "), steps);
    if found.diff {
        plan.outcome.diffs.push(diff);
    }
    plan
}

/// A line without its `\n`.
pub(crate) fn without_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// A line without its line break (Python's `rstrip(b'\r\n')`).
fn trim_eol(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| *b != b'\n' && *b != b'\r')
        .map_or(0, |i| i + 1);
    &line[..end]
}

/// A line with `\n` after it.
fn terminated(line: &[u8]) -> Vec<u8> {
    [line, b"\n"].concat()
}

fn contains(line: &[u8], part: &[u8]) -> bool {
    part.is_empty() || line.windows(part.len()).any(|w| w == part)
}

impl Module for LineInFile {
    const NAME: &'static str = "lineinfile";
    type Args = Args;
    type Observed = Found;
    type Todo = Vec<Step>;

    fn writes(args: &Args) -> Option<&str> {
        Some(&args.path)
    }

    /// Ansible's rules between the arguments.
    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        let why = if args.insertafter.is_some() && args.insertbefore.is_some() {
            "give `insertafter` or `insertbefore`, not both"
        } else if args.regexp.is_some() && args.search_string.is_some() {
            "give `regexp` or `search_string`, not both"
        } else if args.backrefs == Some(true) && args.regexp.is_none() {
            "`backrefs` needs `regexp`"
        } else if matches!(args.insertbefore, Some(Anchor::Eof)) {
            "`insertbefore` takes BOF or a regular expression; for the end, `insertafter: EOF`"
        } else if args.state == Presence::Present && args.line.is_none() {
            "give `line` (state present)"
        } else if args.state == Presence::Absent
            && args.line.is_none()
            && args.regexp.is_none()
            && args.search_string.is_none()
        {
            "give `line`, `regexp` or `search_string` (state absent)"
        } else {
            return Ok(());
        };
        Err(ArgsError::Invalid(why.into()))
    }

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Found> {
        read(&args.path, ctx).await
    }

    fn plan(args: &Args, found: Found) -> Result<Plan<Vec<Step>>> {
        let path = args.path.as_str();
        let text = text_of(path, &found)?;
        if text.is_none() && args.state == Presence::Absent {
            return Ok(Plan::nothing());
        }
        if text.is_none() && args.create != Some(true) {
            return fail(format!(
                "{path} does not exist (give `create: true` to create it)"
            ));
        }
        let mut lines: Vec<Vec<u8>> = text
            .unwrap_or_default()
            .split_inclusive(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        let note = match args.state {
            Presence::Present => put_line(args, &mut lines)?.map(|what| format!("{what} {path}")),
            Presence::Absent => {
                let before = lines.len();
                lines.retain(|l| !finds(args, l));
                let removed = before - lines.len();
                (removed > 0).then(|| format!("{removed} line(s) removed from {path}"))
            }
        };
        let edit = note.map(|n| (n, lines.concat()));
        let attrs = Attrs {
            mode: args.mode,
            owner: args.owner.as_deref(),
            group: args.group.as_deref(),
        };
        Ok(plan_edit(path, &found, edit, attrs))
    }

    async fn apply(_: &Args, steps: Vec<Step>, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        apply_steps(ctx, &steps, planned).await
    }
}

/// Whether `state: absent` removes `line`: `regexp` finds it, it holds `search_string`, or it
/// is `line`.
fn finds(args: &Args, line: &[u8]) -> bool {
    match (&args.regexp, &args.search_string, &args.line) {
        (Some(re), _, _) => re.finds(line),
        (None, Some(s), _) => contains(line, s.as_bytes()),
        (None, None, Some(l)) => trim_eol(line) == l.as_bytes(),
        (None, None, None) => false,
    }
}

/// Ansible's `present`, step for step: returns what changed (`line added to`), if anything.
fn put_line(args: &Args, lines: &mut Vec<Vec<u8>>) -> Result<Option<&'static str>> {
    let line = args.line.as_deref().unwrap_or_default().as_bytes();
    let firstmatch = args.firstmatch == Some(true);
    let after = match (&args.insertafter, &args.insertbefore) {
        (None, None) => Some(&Anchor::Eof),
        (after, _) => after.as_ref(),
    };
    let before = args.insertbefore.as_ref();
    let anchor = match (after, before) {
        (Some(Anchor::Line(p)), _) | (_, Some(Anchor::Line(p))) => Some(p),
        _ => None,
    };

    // The line to replace: the last (or first) that `regexp` or `search_string` finds.
    let mut found: Option<usize> = None;
    let mut matched = false;
    for (i, l) in lines.iter().enumerate() {
        let hit = match (&args.regexp, &args.search_string) {
            (Some(re), _) => re.finds(l),
            (None, Some(s)) => contains(l, s.as_bytes()),
            (None, None) => break,
        };
        if hit {
            (found, matched) = (Some(i), true);
            if firstmatch {
                break;
            }
        }
    }
    // Else the line itself, or where the anchor puts it.
    let mut insert_at: Option<usize> = None;
    if !matched {
        for (i, l) in lines.iter().enumerate() {
            if trim_eol(l) == line {
                found = Some(i);
            } else if anchor.is_some_and(|p| p.finds(l)) {
                insert_at = Some(if matches!(after, Some(Anchor::Line(_))) {
                    i + 1
                } else {
                    i
                });
                if firstmatch {
                    break;
                }
            }
        }
    }

    if let Some(i) = found {
        let mut new_line = match (&args.regexp, args.backrefs == Some(true) && matched) {
            (Some(re), true) => match re.0.captures(without_newline(&lines[i])) {
                Some(caps) => expand(line, &caps, &re.0)?,
                None => line.to_vec(),
            },
            _ => line.to_vec(),
        };
        if !new_line.ends_with(b"\n") {
            new_line.push(b'\n');
        }
        if lines[i] == new_line {
            return Ok(None);
        }
        lines[i] = new_line;
        return Ok(Some("line replaced in"));
    }
    if args.backrefs == Some(true) {
        // No match, no groups to fill the line with.
        return Ok(None);
    }
    let at_bof = matches!(before, Some(Anchor::Bof)) || matches!(after, Some(Anchor::Bof));
    match insert_at {
        _ if at_bof => lines.insert(0, terminated(line)),
        Some(k) if matches!(after, Some(Anchor::Line(_))) => {
            let next = if k == lines.len() { k - 1 } else { k };
            if trim_eol(&lines[next]) == line {
                return Ok(None);
            }
            if k == lines.len() {
                end_line(lines);
            }
            lines.insert(k, terminated(line));
        }
        Some(k) => lines.insert(k, terminated(line)),
        None => {
            end_line(lines);
            lines.push(terminated(line));
        }
    }
    Ok(Some("line added to"))
}

/// Ends the last line, if it is not ended, so that a line can follow it.
fn end_line(lines: &mut [Vec<u8>]) {
    if let Some(last) = lines.last_mut() {
        if !last.ends_with(b"\n") && !last.ends_with(b"\r") {
            last.push(b'\n');
        }
    }
}

/// Python's `match.expand(line)`: `\1`, `\g<1>` and `\g<name>` become the groups (empty where a
/// group took no part), `\n`, `\t` and the other escapes the bytes they name.
fn expand(template: &[u8], caps: &Captures, re: &Regex) -> Result<Vec<u8>> {
    let bad = |what: String| fail(format!("lineinfile: line: {what}"));
    let mut out = Vec::with_capacity(template.len());
    let mut rest = template;
    while let Some((&c, tail)) = rest.split_first() {
        rest = tail;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some((&e, tail)) = rest.split_first() else {
            return bad("bad escape (end of line)".into());
        };
        rest = tail;
        let group: Option<String> = match e {
            b'g' => {
                let Some(end) = rest.iter().position(|b| *b == b'>') else {
                    return bad("missing > in \\g<...>".into());
                };
                let name = rest.get(1..end).filter(|_| rest[0] == b'<');
                let Some(name) = name else {
                    return bad("missing < after \\g".into());
                };
                rest = &rest[end + 1..];
                Some(String::from_utf8_lossy(name).to_string())
            }
            b'0' => {
                let digits = rest
                    .iter()
                    .take(2)
                    .take_while(|b| (b'0'..=b'7').contains(*b))
                    .count();
                let value = rest[..digits]
                    .iter()
                    .fold(0u8, |v, d| v.wrapping_mul(8).wrapping_add(d - b'0'));
                rest = &rest[digits..];
                out.push(value);
                None
            }
            b'1'..=b'9' => {
                let two = rest.first().filter(|b| b.is_ascii_digit()).copied();
                rest = &rest[usize::from(two.is_some())..];
                let mut name = char::from(e).to_string();
                name.extend(two.map(char::from));
                Some(name)
            }
            _ => {
                let byte = match e {
                    b'a' => Some(7),
                    b'b' => Some(8),
                    b'f' => Some(12),
                    b'n' => Some(b'\n'),
                    b'r' => Some(b'\r'),
                    b't' => Some(b'\t'),
                    b'v' => Some(11),
                    b'\\' => Some(b'\\'),
                    _ if e.is_ascii_alphabetic() => {
                        return bad(format!("bad escape \\{}", char::from(e)))
                    }
                    _ => None,
                };
                match byte {
                    Some(b) => out.push(b),
                    None => out.extend([b'\\', e]),
                }
                None
            }
        };
        if let Some(name) = group {
            let m = match name.parse::<usize>() {
                Ok(n) if n < re.captures_len() => caps.get(n),
                Ok(n) => return bad(format!("invalid group reference {n}")),
                Err(_) if re.capture_names().any(|g| g == Some(name.as_str())) => caps.name(&name),
                Err(_) => return bad(format!("unknown group name {name:?}")),
            };
            out.extend_from_slice(m.map_or(&b""[..], |m| m.as_bytes()));
        }
    }
    Ok(out)
}

/// What the tests of `lineinfile` and `blockinfile` share.
#[cfg(test)]
pub(super) mod support {
    use super::*;

    /// A file at /etc/x with `content` (None: absent) and `stat` (`type|mode|owner|group`).
    pub fn found_as(content: Option<&str>, stat: &str, diff: bool) -> Found {
        Found {
            real: "/etc/x".into(),
            state: parse_stat(if content.is_some() { stat } else { "absent" }),
            content: content.unwrap_or_default().into(),
            diff,
        }
    }

    /// The text a plan writes, or None when it leaves the file as it is.
    pub fn text_written(plan: Result<Plan<Vec<Step>>>) -> Option<String> {
        match plan.expect("a plan").todo.as_deref() {
            None => None,
            Some([Step::Upload(u)]) => Some(String::from_utf8_lossy(&u.contents).into_owned()),
            Some(other) => panic!("{other:?}"),
        }
    }

    /// Written once, and the second run with the same arguments changes nothing.
    pub fn twice(
        written: impl Fn(serde_json::Value, Option<&str>) -> Option<String>,
        args: serde_json::Value,
        content: &str,
    ) -> String {
        let after = written(args.clone(), Some(content)).expect("a change");
        assert_eq!(written(args, Some(&after)), None, "second run");
        after
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{typed, FakeRemote, TestHost};
    use serde_json::{json, Value};

    use super::support::{found_as, text_written};

    fn found(content: Option<&str>) -> Found {
        found_as(content, "regular file|640|app|adm", true)
    }

    fn planned(args: Value, content: Option<&str>) -> Result<Plan<Vec<Step>>> {
        LineInFile::plan(&typed::<LineInFile>(args), found(content))
    }

    fn written(args: Value, content: Option<&str>) -> Option<String> {
        text_written(planned(args, content))
    }

    fn twice(args: Value, content: &str) -> String {
        super::support::twice(written, args, content)
    }

    const CONF: &str = "a=1\n#port=1\nb=2\nport=2\nc=3\n";

    #[test]
    fn a_missing_file_fails_unless_create_makes_it_with_the_line() {
        let err = planned(json!({"path": "/etc/x", "line": "a"}), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/x does not exist (give `create: true` to create it)"
        );
        let plan = planned(json!({"path": "/etc/x", "line": "a", "create": true}), None).unwrap();
        assert_eq!(plan.outcome.msg, "line added to /etc/x");
        assert_eq!(
            plan.todo.unwrap(),
            [
                Step::run("creating /etc", "mkdir -p -- /etc"),
                Step::Upload(Upload {
                    path: "/etc/x".into(),
                    contents: Arc::from(&b"a\n"[..]),
                    mode: 0o644,
                    owner: None,
                }),
            ]
        );
        let absent = json!({"path": "/etc/x", "line": "a", "state": "absent"});
        assert!(planned(absent, None).unwrap().todo.is_none());
    }

    #[test]
    fn regexp_replaces_the_last_line_it_matches_or_with_firstmatch_the_first() {
        let last = json!({"path": "/etc/x", "regexp": "^#?port=", "line": "port=5432"});
        assert_eq!(twice(last, CONF), "a=1\n#port=1\nb=2\nport=5432\nc=3\n");
        let first = json!({"path": "/etc/x", "regexp": "^#?port=", "line": "port=5432",
                           "firstmatch": true});
        assert_eq!(
            written(first, Some(CONF)).unwrap(),
            "a=1\nport=5432\nb=2\nport=2\nc=3\n"
        );
    }

    #[test]
    fn a_regexp_matching_nothing_adds_the_line_at_the_end_once() {
        let args = json!({"path": "/etc/x", "regexp": "^listen=", "line": "listen=*"});
        let plan = planned(args.clone(), Some(CONF)).unwrap();
        assert_eq!(plan.outcome.msg, "line added to /etc/x");
        assert_eq!(twice(args, CONF), format!("{CONF}listen=*\n"));
    }

    #[test]
    fn insertafter_and_insertbefore_place_the_line_by_the_last_line_they_match() {
        let at = |anchor: &str, value: &str| {
            let mut args = json!({"path": "/etc/x", "line": "new"});
            args[anchor] = json!(value);
            twice(args, CONF)
        };
        assert_eq!(
            at("insertafter", "^b="),
            "a=1\n#port=1\nb=2\nnew\nport=2\nc=3\n"
        );
        assert_eq!(
            at("insertafter", "port="),
            "a=1\n#port=1\nb=2\nport=2\nnew\nc=3\n"
        );
        assert_eq!(
            at("insertbefore", "port="),
            "a=1\n#port=1\nb=2\nnew\nport=2\nc=3\n"
        );
        assert_eq!(at("insertbefore", "BOF"), format!("new\n{CONF}"));
        assert_eq!(at("insertafter", "^nothing"), format!("{CONF}new\n"));
        let first = json!({"path": "/etc/x", "line": "new", "insertafter": "port=",
                           "firstmatch": true});
        assert_eq!(twice(first, CONF), "a=1\n#port=1\nnew\nb=2\nport=2\nc=3\n");
    }

    #[test]
    fn a_line_already_there_is_left_wherever_it_is() {
        let args = json!({"path": "/etc/x", "line": "b=2", "insertbefore": "BOF"});
        assert_eq!(written(args, Some(CONF)), None);
        let args = json!({"path": "/etc/x", "regexp": "^x=", "line": "b=2"});
        assert_eq!(written(args, Some(CONF)), None);
    }

    #[test]
    fn backrefs_fill_the_line_with_the_groups_and_without_a_match_change_nothing() {
        let args = json!({"path": "/etc/x", "regexp": r"^(?P<key>port)=(\d+)",
                          "line": r"\g<key>=\2\t# was \2", "backrefs": true});
        assert_eq!(
            twice(args, CONF),
            "a=1\n#port=1\nb=2\nport=2\t# was 2\nc=3\n"
        );
        let none = json!({"path": "/etc/x", "regexp": "^(nothing)=", "line": r"\1",
                          "backrefs": true});
        assert_eq!(written(none, Some(CONF)), None);
        let bad = json!({"path": "/etc/x", "regexp": "^(a)=", "line": r"\3", "backrefs": true});
        let err = planned(bad, Some(CONF)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "lineinfile: line: invalid group reference 3"
        );
    }

    #[test]
    fn absent_removes_every_line_found() {
        let args = json!({"path": "/etc/x", "regexp": "port=", "state": "absent"});
        let plan = planned(args.clone(), Some(CONF)).unwrap();
        assert_eq!(plan.outcome.msg, "2 line(s) removed from /etc/x");
        assert_eq!(twice(args, CONF), "a=1\nb=2\nc=3\n");
        let exact = json!({"path": "/etc/x", "line": "b=2", "state": "absent"});
        assert_eq!(twice(exact, CONF), "a=1\n#port=1\nport=2\nc=3\n");
        let substring = json!({"path": "/etc/x", "search_string": "=1", "state": "absent"});
        assert_eq!(twice(substring, CONF), "b=2\nport=2\nc=3\n");
    }

    #[test]
    fn a_file_without_a_final_newline_gets_one_before_the_added_line() {
        let args = json!({"path": "/etc/x", "line": "c=3"});
        assert_eq!(twice(args, "a=1\nb=2"), "a=1\nb=2\nc=3\n");
        let after = json!({"path": "/etc/x", "line": "c=3", "insertafter": "^b="});
        assert_eq!(twice(after, "a=1\nb=2"), "a=1\nb=2\nc=3\n");
        let replace = json!({"path": "/etc/x", "regexp": "^b=", "line": "b=3"});
        assert_eq!(twice(replace, "a=1\nb=2"), "a=1\nb=3\n");
    }

    #[test]
    fn the_file_keeps_its_attributes_unless_told_and_the_plan_shows_the_diff() {
        let plan = planned(json!({"path": "/etc/x", "line": "b"}), Some("a\n")).unwrap();
        let Some([Step::Upload(u)]) = plan.todo.as_deref() else {
            panic!("{:?}", plan.todo)
        };
        assert_eq!((u.mode, u.owner.as_deref()), (0o640, Some("app:adm")));
        assert_eq!(
            plan.outcome.diffs,
            [Diff {
                path: "/etc/x".into(),
                before: "a\n".into(),
                after: "a\nb\n".into()
            }]
        );
        let attrs = json!({"path": "/etc/x", "line": "a", "mode": "0600", "group": "root"});
        let plan = planned(attrs, Some("a\n")).unwrap();
        assert_eq!(plan.outcome.msg, "/etc/x: mode 0600, owner :root");
        assert_eq!(
            plan.todo.unwrap(),
            [Step::run(
                "setting mode 0600, owner :root",
                "chmod 600 -- /etc/x && chown -h :root -- /etc/x"
            )]
        );
    }

    #[test]
    fn arguments_follow_ansibles_rules() {
        let err = |v| {
            crate::modules::args::parse::<LineInFile>(v)
                .unwrap_err()
                .to_string()
        };
        assert!(err(json!({"path": "/x"})).contains("give `line`"));
        assert!(err(json!({"path": "/x", "state": "absent"})).contains("`regexp`"));
        assert!(
            err(json!({"path": "/x", "line": "a", "insertafter": "a", "insertbefore": "b"}))
                .contains("not both")
        );
        assert!(err(json!({"path": "/x", "line": "a", "backrefs": true})).contains("needs"));
        assert!(err(json!({"path": "/x", "line": "a", "regexp": "("})).contains("bad regular"));
    }

    #[tokio::test]
    async fn check_mode_reports_the_change_and_uploads_nothing() {
        let answer = "/etc/real\nregular file|644|root|root\na=1\n";
        let mut host = TestHost::new(FakeRemote::new().answer("readlink -f", answer));
        host.diff = true;
        let args = json!({"path": "/etc/x", "line": "b=2"});
        let planned = host.check::<LineInFile>(args.clone()).await.unwrap();
        assert_eq!(planned.msg, "line added to /etc/x");
        assert_eq!(planned.diffs[0].after, "a=1\nb=2\n");
        assert_eq!(host.remote.commands().len(), 1);
        assert!(host.remote.uploads().is_empty());
        let done = host.apply::<LineInFile>(args).await.unwrap();
        assert_eq!(done, planned);
        assert_eq!(host.remote.uploads(), ["/etc/real"]);
    }

    #[tokio::test]
    async fn a_directory_is_refused() {
        let answer = "/etc\ndirectory|755|root|root\n";
        let host = TestHost::new(FakeRemote::new().answer("readlink -f", answer));
        let err = host
            .apply::<LineInFile>(json!({"path": "/etc", "line": "a"}))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "/etc is a directory");
    }
}
