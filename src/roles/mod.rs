//! Roles as data: the site file (which roles run on which groups, in what order) and each role's
//! defaults, tasks, handlers, templates and files — loaded and checked before any host is touched.

mod source;
mod task;

#[cfg(test)]
mod shell_tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;

use crate::yaml::{self, Kind, Node};

pub use source::Source;
pub use task::{Condition, Task};

/// The site file used when `--site` is not given: the built-in one.
pub const BUILTIN_SITE: &str = "roles/site.yml";

/// A site file or role that cannot be used: where and what.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{location}: {message}")]
pub struct RoleError {
    pub location: String,
    pub message: String,
}

impl crate::exit::Code for RoleError {
    fn exit_code(&self) -> u8 {
        crate::exit::BAD_INPUT
    }
}

impl RoleError {
    pub fn at(file: &str, line: usize, message: impl Into<String>) -> RoleError {
        RoleError {
            location: format!("{file}:{line}"),
            message: message.into(),
        }
    }
}

/// A file shipped with a role (a template or a plain file).
#[derive(Debug, Clone)]
pub struct Asset {
    /// The path shown in messages.
    pub display: Arc<str>,
    pub bytes: Vec<u8>,
}

/// A variable with the place it was set.
pub type Defaults = IndexMap<String, (serde_json::Value, Arc<str>, usize)>;

#[derive(Debug)]
pub struct Role {
    pub name: String,
    pub defaults: Defaults,
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
    pub templates: IndexMap<String, Asset>,
    pub files: IndexMap<String, Asset>,
}

#[derive(Debug)]
pub struct Play {
    pub name: String,
    /// Inventory groups or hosts.
    pub hosts: Vec<String>,
    pub roles: Vec<Arc<Role>>,
    /// Hosts per batch for rolling changes; None = all at once.
    pub serial: Option<usize>,
    pub file: Arc<str>,
    pub line: usize,
}

#[derive(Debug)]
pub struct Site {
    pub plays: Vec<Play>,
    /// The `stack` role's defaults: the stack's groups, ports, scope and users, under every
    /// role's defaults (and read by every command through `stack::Stack`).
    pub stack: Defaults,
}

/// The role that holds the stack's shared variables.
const STACK_ROLE: &str = "stack";

/// The built-in `stack` role's defaults.
pub fn stack_defaults() -> Result<Defaults, RoleError> {
    stack_defaults_in(None)
}

fn stack_defaults_in(dir: Option<&Path>) -> Result<Defaults, RoleError> {
    let src = Source::find(STACK_ROLE, dir).ok_or_else(|| RoleError {
        location: format!("roles/{STACK_ROLE}"),
        message: "the stack role is missing from this build".into(),
    })?;
    Ok(load_role(STACK_ROLE, &src)?.defaults)
}

/// Loads a site file from disk, or the built-in one when `path` is None. Roles named in a site
/// file on disk are looked up beside it first, then among the built-in roles.
pub fn load_site(path: Option<&Path>) -> Result<Site, RoleError> {
    let (display, text, dir) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| RoleError {
                location: p.display().to_string(),
                message: e.to_string(),
            })?;
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            (p.display().to_string(), text, Some(dir))
        }
        None => {
            let text = source::builtin_text("site.yml").ok_or_else(|| RoleError {
                location: BUILTIN_SITE.into(),
                message: "the built-in site file is missing from this build".into(),
            })?;
            (format!("{BUILTIN_SITE} (built-in)"), text, None)
        }
    };
    let file: Arc<str> = Arc::from(display.as_str());
    let root = parse_yaml(&file, &text)?;
    let Kind::Seq(entries) = &root.kind else {
        return Err(RoleError::at(
            &file,
            root.mark.line,
            format!("a site file is a list of plays, not {}", root.type_name()),
        ));
    };
    let mut loaded: IndexMap<String, Arc<Role>> = IndexMap::new();
    let mut plays = Vec::new();
    for entry in entries {
        plays.push(parse_play(&file, entry, dir.as_deref(), &mut loaded)?);
    }
    let stack = stack_defaults_in(dir.as_deref())?;
    Ok(Site { plays, stack })
}

fn parse_play(
    file: &Arc<str>,
    node: &Node,
    dir: Option<&Path>,
    loaded: &mut IndexMap<String, Arc<Role>>,
) -> Result<Play, RoleError> {
    let Kind::Map(entries) = &node.kind else {
        return Err(RoleError::at(
            file,
            node.mark.line,
            format!("a play is a mapping, not {}", node.type_name()),
        ));
    };
    let mut name = None;
    let mut hosts = Vec::new();
    let mut roles = Vec::new();
    let mut serial = None;
    for (key, value) in entries {
        let at = |message: String| RoleError::at(file, value.mark.line, message);
        match key.key_text().as_str() {
            "name" => {
                name = Some(scalar_text(value).ok_or_else(|| at("name: expected a string".into()))?)
            }
            "hosts" => {
                hosts = string_list(value)
                    .ok_or_else(|| at("hosts: expected a group name or a list of them".into()))?
                    .iter()
                    .flat_map(|h| {
                        h.split([',', ':'])
                            .map(str::trim)
                            .filter(|h| !h.is_empty())
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            }
            "serial" => match value.kind {
                Kind::Int(n) if n > 0 => serial = Some(n as usize),
                _ => return Err(at("serial: expected a positive number of hosts".into())),
            },
            "roles" => {
                let Kind::Seq(items) = &value.kind else {
                    return Err(at("roles: expected a list of role names".into()));
                };
                for item in items {
                    let role_name = match &item.kind {
                        Kind::Str(s) => s.clone(),
                        Kind::Map(m) => m
                            .iter()
                            .find(|(k, _)| k.key_text() == "role")
                            .and_then(|(_, v)| scalar_text(v))
                            .ok_or_else(|| {
                                RoleError::at(
                                    file,
                                    item.mark.line,
                                    "a role entry needs `role: NAME`",
                                )
                            })?,
                        _ => {
                            return Err(RoleError::at(
                                file,
                                item.mark.line,
                                "roles: expected a role name",
                            ))
                        }
                    };
                    let role = match loaded.get(&role_name) {
                        Some(r) => r.clone(),
                        None => {
                            let src = Source::find(&role_name, dir).ok_or_else(|| {
                                RoleError::at(
                                    file,
                                    item.mark.line,
                                    format!("role `{role_name}` not found{} or among the built-in roles ({})",
                                        dir.map(|d| format!(" in {}", display_dir(d))).unwrap_or_default(),
                                        source::builtin_roles().join(", ")),
                                )
                            })?;
                            let role = Arc::new(load_role(&role_name, &src)?);
                            loaded.insert(role_name.clone(), role.clone());
                            role
                        }
                    };
                    roles.push(role);
                }
            }
            other => {
                return Err(RoleError::at(
                    file,
                    key.mark.line,
                    format!("unknown play key `{other}` (name, hosts, roles, serial)"),
                ))
            }
        }
    }
    if hosts.is_empty() {
        return Err(RoleError::at(
            file,
            node.mark.line,
            "a play needs `hosts:` (inventory groups or hosts)",
        ));
    }
    Ok(Play {
        name: name.unwrap_or_else(|| hosts.join(",")),
        hosts,
        roles,
        serial,
        file: file.clone(),
        line: node.mark.line,
    })
}

fn display_dir(dir: &Path) -> String {
    if dir.as_os_str().is_empty() {
        ".".into()
    } else {
        dir.display().to_string()
    }
}

/// Reads and checks one role.
pub fn load_role(name: &str, src: &Source) -> Result<Role, RoleError> {
    let mut role = Role {
        name: name.to_string(),
        defaults: IndexMap::new(),
        tasks: Vec::new(),
        handlers: Vec::new(),
        templates: src.assets("templates"),
        files: src.assets("files"),
    };
    if let Some((file, text)) = src.text("defaults.yml") {
        let root = parse_yaml(&file, &text)?;
        match &root.kind {
            Kind::Null => {}
            Kind::Map(entries) => {
                for (k, v) in entries {
                    role.defaults
                        .insert(k.key_text(), (v.to_json(), file.clone(), v.mark.line));
                }
            }
            _ => {
                return Err(RoleError::at(
                    &file,
                    root.mark.line,
                    format!(
                        "defaults are a mapping of variables, not {}",
                        root.type_name()
                    ),
                ))
            }
        }
    }
    for (which, list) in [
        ("tasks.yml", &mut role.tasks),
        ("handlers.yml", &mut role.handlers),
    ] {
        if let Some((file, text)) = src.text(which) {
            let root = parse_yaml(&file, &text)?;
            match &root.kind {
                Kind::Null => {}
                Kind::Seq(items) => {
                    for item in items {
                        list.push(task::parse(&file, item)?);
                    }
                }
                _ => {
                    return Err(RoleError::at(
                        &file,
                        root.mark.line,
                        format!("{which} is a list of tasks, not {}", root.type_name()),
                    ))
                }
            }
        }
    }
    if role.tasks.is_empty() && role.handlers.is_empty() && role.defaults.is_empty() {
        return Err(RoleError::at(
            &src.display("tasks.yml"),
            1,
            format!("role `{name}` has no tasks.yml, handlers.yml or defaults.yml"),
        ));
    }
    Ok(role)
}

fn parse_yaml(file: &str, text: &str) -> Result<Node, RoleError> {
    yaml::parse(text).map_err(|e| RoleError::at(file, e.mark.line, e.message))
}

pub(crate) fn scalar_text(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Str(s) => Some(s.clone()),
        Kind::Int(i) => Some(i.to_string()),
        Kind::Float(f) => Some(f.to_string()),
        Kind::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn string_list(node: &Node) -> Option<Vec<String>> {
    match &node.kind {
        Kind::Seq(items) => items.iter().map(scalar_text).collect(),
        _ => scalar_text(node).map(|s| vec![s]),
    }
}

/// A path relative to the working directory when it is under it, for shorter messages.
pub fn relative(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}
