//! A path's type, mode and owner, read with one `stat` and put right with `chmod`/`chown`.

use super::Mode;
use crate::ssh::shell_quote;

/// The state of a path, read with `stat` (no dereference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathState {
    pub kind: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
}

/// The shell snippet that prints a [`PathState`] line for `path`, or `absent`.
pub(crate) fn stat_script(path: &str) -> String {
    let p = shell_quote(path);
    format!("if [ -e {p} ] || [ -L {p} ]; then stat -c '%F|%a|%U|%G' -- {p}; else echo absent; fi")
}

pub(crate) fn parse_stat(line: &str) -> Option<PathState> {
    let mut parts = line.trim().split('|');
    let kind = parts.next()?.to_string();
    if kind == "absent" {
        return None;
    }
    Some(PathState {
        kind,
        mode: u32::from_str_radix(parts.next()?, 8).ok()?,
        owner: parts.next()?.to_string(),
        group: parts.next()?.to_string(),
    })
}

/// The `chmod`/`chown` commands (and the notes for the outcome) that make `state` match.
pub(crate) fn fix_attrs(
    path: &str,
    state: Option<&PathState>,
    mode: Option<Mode>,
    owner: Option<&str>,
    group: Option<&str>,
) -> (Vec<String>, Vec<String>) {
    let p = shell_quote(path);
    let mut cmds = Vec::new();
    let mut notes = Vec::new();
    if let Some(m) = mode {
        if state.is_none_or(|s| s.mode != m.0) {
            cmds.push(format!("chmod {:o} -- {p}", m.0));
            notes.push(format!("mode {m}"));
        }
    }
    let owner_differs = owner.filter(|o| state.is_none_or(|s| s.owner != *o));
    let group_differs = group.filter(|g| state.is_none_or(|s| s.group != *g));
    if let Some(spec) = owner_spec(owner_differs, group_differs) {
        cmds.push(format!("chown -h {} -- {p}", shell_quote(&spec)));
        notes.push(format!("owner {spec}"));
    }
    (cmds, notes)
}

/// `user:group`, `user` or `:group`, as chown takes them.
pub(crate) fn owner_spec(owner: Option<&str>, group: Option<&str>) -> Option<String> {
    match (owner, group) {
        (Some(o), Some(g)) => Some(format!("{o}:{g}")),
        (Some(o), None) => Some(o.to_string()),
        (None, Some(g)) => Some(format!(":{g}")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_already_right_need_no_command() {
        let state = parse_stat("directory|750|postgres|postgres").unwrap();
        let (cmds, _) = fix_attrs(
            "/d",
            Some(&state),
            Some(Mode(0o750)),
            Some("postgres"),
            None,
        );
        assert!(cmds.is_empty());
        let (cmds, notes) = fix_attrs("/d", Some(&state), Some(Mode(0o700)), Some("root"), None);
        assert_eq!(cmds, vec!["chmod 700 -- /d", "chown -h root -- /d"]);
        assert_eq!(notes, vec!["mode 0700", "owner root"]);
    }
}
