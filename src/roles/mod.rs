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
pub use task::{control_task, task_expr, Condition, Control, Inherit, LoopForm, Part, Task};

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

#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub defaults: Defaults,
    /// `vars/main.yml`: above the inventory (as in Ansible), below `-e`.
    pub vars: Defaults,
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
    /// The play's own `pre_tasks`, `tasks`, `post_tasks` and `handlers` (with the site file's
    /// `templates/` and `files/`), as a role of the play.
    pub own: Option<Arc<Role>>,
    pub pre_tasks: usize,
    pub post_tasks: usize,
    /// `vars:` of the play: above the inventory, below role vars and `-e`.
    pub vars: Defaults,
    pub become_root: Option<bool>,
    pub become_user: Option<String>,
    /// `gather_facts: false`: no facts are read (hactl reads them with its connection anyway;
    /// they are then not given to the play's tasks).
    pub gather_facts: bool,
    pub any_errors_fatal: bool,
    pub max_fail_percentage: Option<f64>,
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
    let mut play_vars: Defaults = IndexMap::new();
    let mut become_root = None;
    let mut become_user = None;
    let mut gather_facts = true;
    let mut any_errors_fatal = false;
    let mut max_fail_percentage = None;
    let mut lists: IndexMap<&'static str, (Vec<Node>, usize)> = IndexMap::new();
    // `vars_files`: above the play's `vars`, as in Ansible.
    let mut files_vars: Defaults = IndexMap::new();
    for (key, value) in entries {
        let at = |message: String| RoleError::at(file, value.mark.line, message);
        match key.key_text().as_str() {
            k @ ("pre_tasks" | "tasks" | "post_tasks" | "handlers") => {
                let k: &'static str = match k {
                    "pre_tasks" => "pre_tasks",
                    "tasks" => "tasks",
                    "post_tasks" => "post_tasks",
                    _ => "handlers",
                };
                match &value.kind {
                    Kind::Seq(items) => {
                        lists.insert(k, (items.clone(), value.mark.line));
                    }
                    Kind::Null => {}
                    _ => return Err(at(format!("{k}: expected a list of tasks"))),
                }
            }
            "vars" => match &value.kind {
                Kind::Map(vars) => {
                    for (k, v) in vars {
                        play_vars.insert(k.key_text(), (v.to_json(), file.clone(), v.mark.line));
                    }
                }
                Kind::Null => {}
                _ => return Err(at("vars: expected a mapping".into())),
            },
            "vars_files" => {
                let names = string_list(value)
                    .ok_or_else(|| at("vars_files: expected a file name or a list of them".into()))?;
                for name in names {
                    if crate::template::is_template(&name) {
                        return Err(at(format!("vars_files: `{name}`: hactl reads these files when it loads the site, so the name cannot be an expression")));
                    }
                    let path = dir.map(|d| d.join(&name)).unwrap_or_else(|| PathBuf::from(&name));
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| at(format!("vars_files: {}: {e}", path.display())))?;
                    let shown: Arc<str> = Arc::from(relative(&path).display().to_string());
                    files_vars.extend(variables(&shown, &text, "vars_files")?);
                }
            }
            "become" => match value.kind {
                Kind::Bool(b) => become_root = Some(b),
                _ => return Err(at("become: expected true or false".into())),
            },
            "become_user" => {
                become_user = Some(scalar_text(value).ok_or_else(|| at("become_user: expected a user name".into()))?)
            }
            "gather_facts" => match value.kind {
                Kind::Bool(b) => gather_facts = b,
                _ => return Err(at("gather_facts: expected true or false".into())),
            },
            "any_errors_fatal" => match value.kind {
                Kind::Bool(b) => any_errors_fatal = b,
                _ => return Err(at("any_errors_fatal: expected true or false".into())),
            },
            "max_fail_percentage" => match value.kind {
                Kind::Int(n) if (0..=100).contains(&n) => max_fail_percentage = Some(n as f64),
                Kind::Float(f) if (0.0..=100.0).contains(&f) => max_fail_percentage = Some(f),
                _ => return Err(at("max_fail_percentage: expected a number from 0 to 100".into())),
            },
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
                    // A role entry's keywords (`when`, `tags`, `vars`, `become`, ...) and
                    // parameters (any other key: a variable of the role's tasks).
                    let mut entry = Inherit::default();
                    let role_name = match &item.kind {
                        Kind::Str(s) => s.clone(),
                        Kind::Map(m) => {
                            let mut params = Vec::new();
                            for (k, v) in m {
                                let key = k.key_text();
                                if key != "role"
                                    && key != "name"
                                    && !task::shared_keyword(file, &key, v, &mut entry)?
                                {
                                    params.push((key, v.to_json()));
                                }
                            }
                            entry.vars.extend(params);
                            m.iter()
                                .find(|(k, _)| matches!(k.key_text().as_str(), "role" | "name"))
                                .and_then(|(_, v)| scalar_text(v))
                                .ok_or_else(|| {
                                    RoleError::at(
                                        file,
                                        item.mark.line,
                                        "a role entry needs `role: NAME`",
                                    )
                                })?
                        }
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
                    roles.push(if entry.is_empty() {
                        role
                    } else {
                        Arc::new(role.with_entry(&entry))
                    });
                }
            }
            other => {
                return Err(RoleError::at(
                    file,
                    key.mark.line,
                    format!("unknown play key `{other}` (name, hosts, roles, serial, vars, vars_files, pre_tasks, tasks, post_tasks, handlers, become, become_user, gather_facts, any_errors_fatal, max_fail_percentage)"),
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
    play_vars.extend(files_vars);
    let mut own = None;
    let (mut pre_tasks, mut post_tasks) = (0, 0);
    if !lists.is_empty() {
        let name = name.clone().unwrap_or_else(|| hosts.join(","));
        let src = dir.map(|d| Source::Disk(d.to_path_buf()));
        let read = |path: &str| -> Option<(Arc<str>, String)> {
            let d = dir?;
            let p = d.join(path);
            let text = std::fs::read_to_string(&p).ok()?;
            Some((Arc::from(relative(&p).display().to_string()), text))
        };
        let mut role = Role {
            name: format!("play {name}"),
            defaults: IndexMap::new(),
            vars: IndexMap::new(),
            tasks: Vec::new(),
            handlers: Vec::new(),
            templates: src
                .as_ref()
                .map(|s| s.assets("templates"))
                .unwrap_or_default(),
            files: src.as_ref().map(|s| s.assets("files")).unwrap_or_default(),
        };
        let inherit = Inherit::default();
        let count = |key: &str, out: &mut Vec<Task>| -> Result<usize, RoleError> {
            let before = out.len();
            if let Some((items, _)) = lists.get(key) {
                task::parse_list(file, items, &inherit, &read, out)?;
            }
            Ok(out.len() - before)
        };
        pre_tasks = count("pre_tasks", &mut role.tasks)?;
        count("tasks", &mut role.tasks)?;
        post_tasks = count("post_tasks", &mut role.tasks)?;
        count("handlers", &mut role.handlers)?;
        own = Some(Arc::new(role));
    }
    Ok(Play {
        name: name.unwrap_or_else(|| hosts.join(",")),
        hosts,
        roles,
        own,
        pre_tasks,
        post_tasks,
        vars: play_vars,
        become_root,
        become_user,
        gather_facts,
        any_errors_fatal,
        max_fail_percentage,
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

/// The first of `names` the role has: hactl's flat file, or Ansible's `DIR/main.yml`.
fn first_text(src: &Source, names: &[&str]) -> Option<(Arc<str>, String)> {
    names.iter().find_map(|n| src.text(n))
}

fn variables(file: &Arc<str>, text: &str, what: &str) -> Result<Defaults, RoleError> {
    let root = parse_yaml(file, text)?;
    let mut out = IndexMap::new();
    match &root.kind {
        Kind::Null => {}
        Kind::Map(entries) => {
            for (k, v) in entries {
                out.insert(k.key_text(), (v.to_json(), file.clone(), v.mark.line));
            }
        }
        _ => {
            return Err(RoleError::at(
                file,
                root.mark.line,
                format!(
                    "{what} are a mapping of variables, not {}",
                    root.type_name()
                ),
            ))
        }
    }
    Ok(out)
}

impl Role {
    /// This role as a play's entry gives it: the entry's `when`, `tags`, `vars`, parameters and
    /// other keywords on every task and handler (as in Ansible, a handler of a role entry whose
    /// `when` is false does not run, whoever notifies its topic).
    fn with_entry(&self, entry: &Inherit) -> Role {
        let mut role = self.clone();
        for t in &mut role.tasks {
            if !matches!(
                t.control,
                Some(Control::EndBlock { .. } | Control::FlushHandlers)
            ) {
                task::apply_inherit(t, entry);
            }
        }
        for h in &mut role.handlers {
            task::apply_inherit(h, entry);
        }
        role
    }
}

/// Reads and checks one role, in hactl's layout (`tasks.yml`, `handlers.yml`, `defaults.yml`)
/// or Ansible's (`tasks/main.yml`, `handlers/main.yml`, `defaults/main.yml`, `vars/main.yml`).
pub fn load_role(name: &str, src: &Source) -> Result<Role, RoleError> {
    let mut role = Role {
        name: name.to_string(),
        defaults: IndexMap::new(),
        vars: IndexMap::new(),
        tasks: Vec::new(),
        handlers: Vec::new(),
        templates: src.assets("templates"),
        files: src.assets("files"),
    };
    if let Some((file, text)) = first_text(
        src,
        &["defaults.yml", "defaults/main.yml", "defaults/main.yaml"],
    ) {
        role.defaults = variables(&file, &text, "defaults")?;
    }
    if let Some((file, text)) = first_text(src, &["vars.yml", "vars/main.yml", "vars/main.yaml"]) {
        role.vars = variables(&file, &text, "vars")?;
    }
    for (which, names, list) in [
        (
            "tasks",
            ["tasks.yml", "tasks/main.yml", "tasks/main.yaml"],
            &mut role.tasks,
        ),
        (
            "handlers",
            ["handlers.yml", "handlers/main.yml", "handlers/main.yaml"],
            &mut role.handlers,
        ),
    ] {
        if let Some((file, text)) = first_text(src, &names) {
            // Included task files are found beside the file that includes them, as in Ansible
            // (tasks/other.yml for tasks/main.yml).
            let base = if names
                .iter()
                .any(|n| n.contains('/') && src.text(n).is_some())
            {
                format!("{which}/")
            } else {
                String::new()
            };
            let read = |path: &str| src.text(&format!("{base}{path}"));
            let root = parse_yaml(&file, &text)?;
            match &root.kind {
                Kind::Null => {}
                Kind::Seq(items) => {
                    task::parse_list(&file, items, &Inherit::default(), &read, list)?;
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
    if role.tasks.is_empty()
        && role.handlers.is_empty()
        && role.defaults.is_empty()
        && role.vars.is_empty()
    {
        return Err(RoleError::at(
            &src.display("tasks.yml"),
            1,
            format!("role `{name}` has no tasks, handlers, defaults or vars (tasks.yml or tasks/main.yml, ...)"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    #[test]
    fn a_playbook_directory_with_roles_in_ansibles_layout_loads() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                (
                    "site.yml",
                    "- hosts: all\n  become: true\n  vars: {a: 1}\n  pre_tasks:\n    - debug: {msg: pre}\n  roles: [r]\n  tasks:\n    - debug: {msg: t}\n  post_tasks:\n    - debug: {msg: post}\n",
                ),
                ("roles/r/defaults/main.yml", "d: 1\n"),
                ("roles/r/vars/main.yml", "v: 2\n"),
                ("roles/r/handlers/main.yml", "- name: h\n  debug: {msg: h}\n"),
                (
                    "roles/r/tasks/main.yml",
                    "- import_tasks: more.yml\n  when: d == 1\n  tags: [x]\n- name: c\n  command: echo\n  args: {chdir: /tmp}\n",
                ),
                ("roles/r/tasks/more.yml", "- name: inner\n  apt: {update_cache: true}\n"),
            ],
        );
        let site = load_site(Some(&dir.path().join("site.yml"))).unwrap();
        let play = &site.plays[0];
        assert_eq!(play.become_root, Some(true));
        assert!(play.vars.contains_key("a"));
        let role = &play.roles[0];
        assert!(role.defaults.contains_key("d") && role.vars.contains_key("v"));
        assert_eq!(role.handlers.len(), 1);
        let names: Vec<&str> = role.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["inner", "c"]);
        let inner = &role.tasks[0];
        assert_eq!(inner.module.name, "package");
        assert_eq!(inner.when[0].text, "d == 1");
        assert_eq!(inner.tags, ["x"]);
        assert!(
            inner.file.ends_with("roles/r/tasks/more.yml"),
            "{}",
            inner.file
        );
        assert_eq!(
            role.tasks[1].args,
            serde_json::json!({"cmd": "echo", "chdir": "/tmp"})
        );
        let own = play.own.as_ref().unwrap();
        assert_eq!(
            (play.pre_tasks, play.post_tasks, own.tasks.len()),
            (1, 1, 3)
        );
    }

    #[test]
    fn a_block_flattens_into_its_parts_and_an_end() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("site.yml", "- hosts: all\n  roles: [r]\n"),
                (
                    "r/tasks.yml",
                    "- block:\n    - {name: a, command: 'true'}\n    - block:\n        - {name: b, command: 'true'}\n      always:\n        - {name: c, command: 'true'}\n  rescue:\n    - {name: d, command: 'true'}\n  when: x\n  become_user: u\n",
                ),
            ],
        );
        let site = load_site(Some(&dir.path().join("site.yml"))).unwrap();
        let tasks = &site.plays[0].roles[0].tasks;
        type Shape = (String, Vec<(Part, bool)>, bool);
        let shape: Vec<Shape> = tasks
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.blocks.iter().map(|b| (b.part, b.has_rescue)).collect(),
                    matches!(t.control, Some(Control::EndBlock { .. })),
                )
            })
            .collect();
        use Part::*;
        assert_eq!(
            shape,
            vec![
                ("a".into(), vec![(Block, true)], false),
                ("b".into(), vec![(Block, true), (Block, false)], false),
                ("c".into(), vec![(Block, true), (Always, false)], false),
                ("end of block".into(), vec![(Block, true)], true),
                ("d".into(), vec![(Rescue, true)], false),
                ("end of block".into(), vec![], true),
            ]
        );
        assert!(tasks
            .iter()
            .filter(|t| t.control.is_none())
            .all(|t| t.when.len() == 1 && t.become_user.as_deref() == Some("u")));
    }

    #[test]
    fn unsupported_keywords_name_the_line_and_the_supported_ones() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("site.yml", "- hosts: all\n  roles: [r]\n"),
                ("r/tasks.yml", "- name: a\n  command: 'true'\n  async: 10\n"),
            ],
        );
        let err = load_site(Some(&dir.path().join("site.yml"))).unwrap_err();
        assert!(err.location.ends_with("r/tasks.yml:3"), "{err}");
        assert!(
            err.message.contains("unknown module or keyword `async`"),
            "{err}"
        );
        assert!(
            err.message.contains("become_user") && err.message.contains("block"),
            "{err}"
        );
        write(
            dir.path(),
            &[("r/tasks.yml", "- include_tasks: \"{{ os }}.yml\"\n")],
        );
        let err = load_site(Some(&dir.path().join("site.yml"))).unwrap_err();
        assert!(err.message.contains("cannot be an expression"), "{err}");
        write(dir.path(), &[("r/tasks.yml", "- meta: end_batch\n")]);
        let err = load_site(Some(&dir.path().join("site.yml"))).unwrap_err();
        assert!(
            err.message.contains(
                "`end_batch` is not supported (flush_handlers, end_host, end_play, noop)"
            ),
            "{err}"
        );
    }
}
