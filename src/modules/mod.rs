//! The modules tasks call. Each one reads the current state of the host (one command), works out
//! what differs, and changes only that — so `--check` reports exactly what a run would change.

pub mod command;
pub mod copy;
pub mod debug;
pub mod file;
pub mod group;
pub mod http;
pub mod package;
pub mod patroni_config;
pub mod patroni_restart;
pub mod release;
pub mod service;
pub mod template;
pub mod user;
pub mod wait_for;

use serde::de::DeserializeOwned;
use serde::Deserialize as _;

use crate::ssh::{Session, SshError};

/// A module's name and argument names (Ansible's, where Ansible has the module).
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// Arguments that must be given; `a|b` means one of them.
    pub required: &'static [&'static str],
    /// Accepts a command line instead of a mapping (`command: systemctl daemon-reload`).
    pub free_form: bool,
}

pub static SPECS: &[Spec] = &[
    command::SPEC,
    command::SHELL_SPEC,
    copy::SPEC,
    debug::SPEC,
    debug::FAIL_SPEC,
    file::SPEC,
    group::SPEC,
    package::SPEC,
    patroni_config::SPEC,
    patroni_restart::SPEC,
    release::SPEC,
    service::SPEC,
    template::SPEC,
    user::SPEC,
    wait_for::SPEC,
];

pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// A module call with its arguments rendered and typed.
#[derive(Debug)]
pub enum Action {
    Command(command::Args),
    Copy(copy::Args),
    Debug(debug::Args),
    Fail(debug::Args),
    File(file::Args),
    Group(group::Args),
    Package(package::Args),
    PatroniConfig(patroni_config::Args),
    PatroniRestart(patroni_restart::Args),
    Release(release::Args),
    Service(service::Args),
    Template(template::Args),
    User(user::Args),
    WaitFor(wait_for::Args),
}

impl Action {
    /// Types the rendered arguments of a `spec` module call.
    pub fn parse(spec: &Spec, args: serde_json::Value) -> std::result::Result<Action, String> {
        Ok(match spec.name {
            "command" => Action::Command(command::Args::parse(args, false)?),
            "shell" => Action::Command(command::Args::parse(args, true)?),
            "copy" => Action::Copy(typed(args)?),
            "debug" => Action::Debug(typed(args)?),
            "fail" => Action::Fail(typed(args)?),
            "file" => Action::File(typed(args)?),
            "group" => Action::Group(typed(args)?),
            "package" => Action::Package(typed(args)?),
            "patroni_config" => Action::PatroniConfig(typed(args)?),
            "patroni_restart" => Action::PatroniRestart(typed(args)?),
            "release" => Action::Release(typed(args)?),
            "service" => Action::Service(typed(args)?),
            "template" => Action::Template(typed(args)?),
            "user" => Action::User(typed(args)?),
            "wait_for" => Action::WaitFor(typed(args)?),
            other => return Err(format!("no module `{other}`")),
        })
    }
}

pub(crate) fn typed<T: DeserializeOwned>(
    args: serde_json::Value,
) -> std::result::Result<T, String> {
    serde_json::from_value(args).map_err(|e| e.to_string())
}

/// What a module needs from the run.
pub struct Ctx<'a> {
    pub session: &'a Session,
    pub host: &'a str,
    /// Report what would change, change nothing.
    pub check: bool,
    /// Collect the before/after of changed files.
    pub diff: bool,
    pub releases: &'a release::Cache,
    /// Set when a unit file was written on this host and systemd has not re-read them since.
    pub units_changed: &'a std::sync::atomic::AtomicBool,
}

/// A file's content before and after, for `--diff`.
#[derive(Debug, Clone)]
pub struct Diff {
    pub path: String,
    pub before: String,
    pub after: String,
}

/// What a module did (or, in check mode, would do).
#[derive(Debug, Default)]
pub struct Outcome {
    pub changed: bool,
    /// Not run at all (a command in check mode, `creates` already there).
    pub skipped: bool,
    /// A short note of what changed: `installed etcd-server`, `started patroni`.
    pub msg: String,
    pub diffs: Vec<Diff>,
    /// Extra fields for `register` (rc, stdout, ...).
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl Outcome {
    pub fn ok() -> Outcome {
        Outcome::default()
    }

    pub fn changed(msg: impl Into<String>) -> Outcome {
        Outcome {
            changed: true,
            msg: msg.into(),
            ..Outcome::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Ssh(#[from] SshError),
}

pub type Result<T> = std::result::Result<T, ModuleError>;

pub(crate) fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(ModuleError::Failed(msg.into()))
}

/// Runs a read-only or changing command and returns its output, failing on a non-zero exit
/// with the command's own words.
pub(crate) async fn run(ctx: &Ctx<'_>, what: &str, script: &str) -> Result<crate::ssh::Output> {
    let out = ctx.session.exec(script, b"").await?;
    if !out.success() {
        let stderr = out.stderr_text();
        let stdout = out.stdout_text();
        let detail = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        return fail(format!(
            "{what} failed (exit {}): {}",
            out.exit_status
                .map_or("by signal".into(), |c| c.to_string()),
            last_lines(&detail, 6)
        ));
    }
    Ok(out)
}

pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A file mode as Ansible takes it: `"0644"`, `"644"`, or a YAML 1.1 octal integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Mode, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let parsed = match &v {
            serde_json::Value::String(s) => u32::from_str_radix(s.trim(), 8).ok(),
            serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
            _ => None,
        };
        match parsed {
            Some(m) if m <= 0o7777 => Ok(Mode(m)),
            _ => Err(serde::de::Error::custom(format!(
                "mode: expected an octal string like \"0644\", got {v}"
            ))),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// A string or a list of strings (`name: etcd` or `name: [etcd, patroni]`).
#[derive(Debug, Clone, Default)]
pub struct Names(pub Vec<String>);

impl<'de> serde::Deserialize<'de> for Names {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Names, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => Names(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            OneOrMany::Many(v) => Names(v),
        })
    }
}

/// Ansible's booleans: true/false, yes/no, "true"/"false" as rendered by a template.
pub(crate) fn de_bool<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<bool>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match &v {
        serde_json::Value::Bool(b) => Ok(Some(*b)),
        serde_json::Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(Some(true)),
            "false" | "no" | "off" | "0" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!(
                "expected a boolean, got {v}"
            ))),
        },
        serde_json::Value::Null => Ok(None),
        _ => Err(serde::de::Error::custom(format!(
            "expected a boolean, got {v}"
        ))),
    }
}

/// Numbers as Ansible takes them: 5432 or "5432" (a rendered template is a string).
pub(crate) fn de_u64<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match &v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a whole number, got {v}"))),
        serde_json::Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected a whole number, got {v}"))),
        serde_json::Value::Null => Ok(None),
        _ => Err(serde::de::Error::custom(format!(
            "expected a whole number, got {v}"
        ))),
    }
}

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
    let p = crate::ssh::shell_quote(path);
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

/// The `chmod`/`chown` commands (and the note for the outcome) that make `state` match.
pub(crate) fn fix_attrs(
    path: &str,
    state: Option<&PathState>,
    mode: Option<Mode>,
    owner: Option<&str>,
    group: Option<&str>,
) -> (Vec<String>, Vec<String>) {
    let p = crate::ssh::shell_quote(path);
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
    if owner_differs.is_some() || group_differs.is_some() {
        let spec = match (owner_differs, group_differs) {
            (Some(o), Some(g)) => format!("{o}:{g}"),
            (Some(o), None) => o.to_string(),
            (None, Some(g)) => format!(":{g}"),
            (None, None) => String::new(),
        };
        cmds.push(format!(
            "chown -h {} -- {p}",
            crate::ssh::shell_quote(&spec)
        ));
        notes.push(format!("owner {spec}"));
    }
    (cmds, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names checked before rendering (Spec.args) are the names the typed arguments take.
    #[test]
    fn every_spec_lists_exactly_its_arguments() {
        for spec in SPECS {
            let err = Action::parse(spec, serde_json::json!({"__no_such_argument": 1}))
                .expect_err(spec.name);
            let listed = err
                .split("expected one of ")
                .nth(1)
                .or_else(|| err.split("expected ").nth(1))
                .unwrap_or_else(|| panic!("{}: {err}", spec.name));
            let mut expected: Vec<&str> = listed
                .split(", ")
                .map(|f| f.trim().trim_matches('`'))
                .collect();
            let mut args = spec.args.to_vec();
            expected.sort_unstable();
            args.sort_unstable();
            assert_eq!(args, expected, "{}", spec.name);
        }
    }

    #[test]
    fn modes_are_octal_however_written() {
        assert_eq!(
            typed::<Mode>(serde_json::json!("0640")).unwrap(),
            Mode(0o640)
        );
        assert_eq!(typed::<Mode>(serde_json::json!(420)).unwrap(), Mode(0o644));
        assert!(typed::<Mode>(serde_json::json!("rw-")).is_err());
    }

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
