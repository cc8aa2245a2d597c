//! One task of a role: a module call and the keywords around it, in Ansible's spelling.

use std::sync::Arc;

use crate::modules;
use crate::yaml::{Kind, Node};

use super::{scalar_text, string_list, RoleError};

/// A Jinja2 expression and the line it is written on.
#[derive(Debug, Clone)]
pub struct Expr {
    pub text: String,
    pub line: usize,
}

/// `when`, `changed_when`, `failed_when`: one expression or a list, all of which must hold.
pub type Condition = Vec<Expr>;

/// Which part of a block a task is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Block,
    Rescue,
    Always,
}

/// A task's place in one enclosing `block`: the block (unique in the run), the part, and
/// whether the block has a `rescue` (which takes over a failure in its `block` part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InBlock {
    pub id: u32,
    pub part: Part,
    pub has_rescue: bool,
}

/// What the engine itself does instead of calling a module.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// `meta: flush_handlers`: the notified handlers run now.
    FlushHandlers,
    /// The end of a block (after its `always`): a failure no `rescue` took over goes to the
    /// enclosing block, or fails the host.
    EndBlock { id: u32, has_rescue: bool },
    /// `set_fact`: its arguments become the host's variables.
    SetFact,
    /// `assert`: `that` must hold.
    Assert,
    /// `meta: end_host`: the play ends for the hosts where the task's `when` holds, without
    /// failing them.
    EndHost,
    /// `meta: end_play`: the play ends for every host, without failing them.
    EndPlay,
    /// `meta: noop`.
    Noop,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub module: &'static modules::Spec,
    /// The arguments as written (a mapping, or a string for free-form modules).
    pub args: serde_json::Value,
    pub args_line: usize,
    pub when: Condition,
    pub notify: Vec<String>,
    /// A handler's `listen`: the topics whose `notify` runs it besides its name.
    pub listen: Vec<String>,
    pub register: Option<String>,
    pub changed_when: Option<Condition>,
    pub failed_when: Option<Condition>,
    pub tags: Vec<String>,
    pub run_once: bool,
    /// At most this many hosts at a time (rolling restarts).
    pub throttle: Option<usize>,
    pub loop_over: Option<serde_json::Value>,
    /// How the rendered `loop_over` gives the items (`with_items`, `with_nested`, ...).
    pub loop_form: LoopForm,
    pub check_mode: Option<bool>,
    pub ignore_errors: bool,
    pub no_log: bool,
    /// `vars:` of the task and of its blocks and includes (outer first), rendered in order.
    pub vars: Vec<(String, serde_json::Value)>,
    /// `become` / `become_user`, as the task or an enclosing block or play says.
    pub become_root: Option<bool>,
    pub become_user: Option<String>,
    /// `environment:` (a mapping, or an expression giving one).
    pub environment: Option<serde_json::Value>,
    /// `delegate_to:` another inventory host (or localhost: this machine).
    pub delegate_to: Option<String>,
    /// `until` with `retries` (default 3) and `delay` (seconds, default 5).
    pub until: Option<Condition>,
    pub retries: Option<serde_json::Value>,
    pub delay: Option<serde_json::Value>,
    /// `loop_control`: the loop variable (default `item`) and the label shown per item.
    pub loop_var: String,
    pub loop_label: Option<String>,
    /// The enclosing blocks, outermost first.
    pub blocks: Vec<InBlock>,
    pub control: Option<Control>,
    pub file: Arc<str>,
    pub line: usize,
}

const KEYWORDS: &str = "name, when, notify, listen, register, changed_when, failed_when, tags, run_once, throttle, loop, with_items, with_dict, with_list, with_nested, with_together, with_subelements, with_sequence, loop_control, check_mode, ignore_errors, no_log, args, vars, become, become_user, environment, delegate_to, until, retries, delay; and block (rescue, always), include_tasks, import_tasks, local_action, meta: flush_handlers/end_host/end_play/noop, set_fact, assert";

/// How a task's rendered loop gives its items: `loop`/`with_list` as it is, and the forms of
/// Ansible's `with_*` lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopForm {
    List,
    /// `with_items`: lists in the list flattened one level.
    Items,
    /// `with_nested`: every combination of one item from each list, as a list.
    Nested,
    /// `with_together`: the lists zipped (missing items none).
    Together,
    /// `with_subelements: [list, key]`: (item, sub-item) for each sub-item under `key`.
    Subelements,
    /// `with_sequence: start=1 end=3 format=web%02d`: the numbers, as text.
    Sequence,
}

/// What tasks get from the blocks, includes and play around them.
#[derive(Debug, Clone, Default)]
pub struct Inherit {
    pub when: Condition,
    pub tags: Vec<String>,
    pub vars: Vec<(String, serde_json::Value)>,
    pub become_root: Option<bool>,
    pub become_user: Option<String>,
    pub environment: Option<serde_json::Value>,
    pub delegate_to: Option<String>,
    pub ignore_errors: Option<bool>,
    pub no_log: Option<bool>,
    pub check_mode: Option<bool>,
    pub blocks: Vec<InBlock>,
    /// Files being included, to refuse an include of itself.
    pub including: Vec<String>,
}

impl Inherit {
    /// Nothing to give.
    pub fn is_empty(&self) -> bool {
        self.when.is_empty()
            && self.tags.is_empty()
            && self.vars.is_empty()
            && self.become_root.is_none()
            && self.become_user.is_none()
            && self.environment.is_none()
            && self.delegate_to.is_none()
            && self.ignore_errors.is_none()
            && self.no_log.is_none()
            && self.check_mode.is_none()
            && self.blocks.is_empty()
    }
}

/// Reads a task file that an `include_tasks`/`import_tasks` names, relative to the role's
/// tasks (or to the site file): its display name and text.
pub type ReadTasks<'a> = &'a dyn Fn(&str) -> Option<(Arc<str>, String)>;

static BLOCK_IDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Parses a list of task entries (tasks, blocks, includes) into `out`, flat: blocks become the
/// `blocks` of their tasks followed by an `EndBlock`, includes are read where they stand.
pub fn parse_list(
    file: &Arc<str>,
    items: &[Node],
    inherit: &Inherit,
    read: ReadTasks,
    out: &mut Vec<Task>,
) -> Result<(), RoleError> {
    for item in items {
        parse_entry(file, item, inherit, read, out)?;
    }
    Ok(())
}

const BLOCK_KEYWORDS: &str = "block, rescue, always, name, when, tags, vars, become, become_user, environment, delegate_to, ignore_errors, no_log, check_mode";
const INCLUDE_KEYWORDS: &str = "name, when, tags, vars, become, become_user, environment, delegate_to, ignore_errors, no_log, check_mode";

fn entries_of<'a>(file: &str, node: &'a Node) -> Result<&'a [(Node, Node)], RoleError> {
    match &node.kind {
        Kind::Map(entries) => Ok(entries),
        _ => Err(RoleError::at(
            file,
            node.mark.line,
            format!("a task is a mapping, not {}", node.type_name()),
        )),
    }
}

/// The module or keyword name without Ansible's collection prefix.
fn short(key: &str) -> &str {
    key.strip_prefix("ansible.builtin.")
        .or_else(|| key.strip_prefix("ansible.legacy."))
        .unwrap_or(key)
}

fn parse_entry(
    file: &Arc<str>,
    node: &Node,
    inherit: &Inherit,
    read: ReadTasks,
    out: &mut Vec<Task>,
) -> Result<(), RoleError> {
    let entries = entries_of(file, node)?;
    let has = |k: &str| entries.iter().any(|(key, _)| short(&key.key_text()) == k);
    if has("block") {
        return parse_block(file, node, entries, inherit, read, out);
    }
    if has("include_tasks") || has("import_tasks") {
        return parse_include(file, node, entries, inherit, read, out);
    }
    let mut task = parse(file, node)?;
    apply_inherit(&mut task, inherit);
    out.push(task);
    Ok(())
}

/// The keywords blocks, includes and tasks share, read into `inherit` (outer values kept when a
/// keyword is not given).
pub(crate) fn shared_keyword(
    file: &str,
    key: &str,
    value: &Node,
    inherit: &mut Inherit,
) -> Result<bool, RoleError> {
    let at = |message: String| RoleError::at(file, value.mark.line, message);
    match key {
        "when" => inherit.when.extend(condition(file, value)?),
        "tags" => inherit.tags.extend(
            string_list(value)
                .ok_or_else(|| at("tags: expected a tag or a list of tags".into()))?,
        ),
        "vars" => inherit.vars.extend(vars_of(file, value)?),
        "become" => {
            inherit.become_root =
                Some(boolean(value).ok_or_else(|| at("become: expected true or false".into()))?)
        }
        "become_user" => {
            inherit.become_user = Some(
                scalar_text(value).ok_or_else(|| at("become_user: expected a user name".into()))?,
            )
        }
        "environment" => {
            inherit.environment = Some(match &value.kind {
                Kind::Map(_) | Kind::Str(_) => value.to_json(),
                _ => return Err(at("environment: expected a mapping of variables".into())),
            })
        }
        "delegate_to" => {
            inherit.delegate_to =
                Some(scalar_text(value).ok_or_else(|| at("delegate_to: expected a host".into()))?)
        }
        "ignore_errors" => {
            inherit.ignore_errors = Some(
                boolean(value).ok_or_else(|| at("ignore_errors: expected true or false".into()))?,
            )
        }
        "no_log" => {
            inherit.no_log =
                Some(boolean(value).ok_or_else(|| at("no_log: expected true or false".into()))?)
        }
        "check_mode" => {
            inherit.check_mode = Some(
                boolean(value).ok_or_else(|| at("check_mode: expected true or false".into()))?,
            )
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn parse_block(
    file: &Arc<str>,
    node: &Node,
    entries: &[(Node, Node)],
    outer: &Inherit,
    read: ReadTasks,
    out: &mut Vec<Task>,
) -> Result<(), RoleError> {
    let mut inherit = outer.clone();
    let (mut main, mut rescue, mut always) = (None, None, None);
    for (key, value) in entries {
        let name = key.key_text();
        let list = |v: &Node| -> Result<Vec<Node>, RoleError> {
            match &v.kind {
                Kind::Seq(items) => Ok(items.clone()),
                Kind::Null => Ok(Vec::new()),
                _ => Err(RoleError::at(
                    file,
                    v.mark.line,
                    format!("{name}: expected a list of tasks"),
                )),
            }
        };
        match short(&name) {
            "block" => main = Some(list(value)?),
            "rescue" => rescue = Some(list(value)?),
            "always" => always = Some(list(value)?),
            "name" => {}
            other => {
                if !shared_keyword(file, other, value, &mut inherit)? {
                    return Err(RoleError::at(
                        file,
                        key.mark.line,
                        format!("unknown block keyword `{other}` (keywords: {BLOCK_KEYWORDS})"),
                    ));
                }
            }
        }
    }
    let id = BLOCK_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let has_rescue = rescue.as_ref().is_some_and(|r| !r.is_empty());
    for (part, items) in [
        (Part::Block, main),
        (Part::Rescue, rescue),
        (Part::Always, always),
    ] {
        let mut inner = inherit.clone();
        inner.blocks.push(InBlock {
            id,
            part,
            has_rescue,
        });
        parse_list(file, &items.unwrap_or_default(), &inner, read, out)?;
    }
    let mut end = control_task(
        file,
        node.mark.line,
        "end of block",
        Control::EndBlock { id, has_rescue },
    );
    end.blocks = outer.blocks.clone();
    end.tags = vec!["always".into()];
    out.push(end);
    Ok(())
}

fn parse_include(
    file: &Arc<str>,
    node: &Node,
    entries: &[(Node, Node)],
    outer: &Inherit,
    read: ReadTasks,
    out: &mut Vec<Task>,
) -> Result<(), RoleError> {
    let mut inherit = outer.clone();
    let mut target = None;
    for (key, value) in entries {
        let name = key.key_text();
        match short(&name) {
            k @ ("include_tasks" | "import_tasks") => {
                let k: &'static str = if k == "include_tasks" {
                    "include_tasks"
                } else {
                    "import_tasks"
                };
                let path = match &value.kind {
                    Kind::Str(s) => Some(s.clone()),
                    Kind::Map(m) => m
                        .iter()
                        .find(|(k, _)| k.key_text() == "file")
                        .and_then(|(_, v)| scalar_text(v)),
                    _ => None,
                }
                .ok_or_else(|| {
                    RoleError::at(file, value.mark.line, format!("{k}: expected a file name"))
                })?;
                if crate::template::is_template(&path) {
                    return Err(RoleError::at(
                        file,
                        value.mark.line,
                        format!("{k}: `{path}`: hactl reads included files when it loads the role, so the name cannot be an expression"),
                    ));
                }
                target = Some((k, path, value.mark.line));
            }
            "name" => {}
            other => {
                if !shared_keyword(file, other, value, &mut inherit)? {
                    return Err(RoleError::at(
                        file,
                        key.mark.line,
                        format!("unknown keyword `{other}` beside an include (keywords: {INCLUDE_KEYWORDS})"),
                    ));
                }
            }
        }
    }
    let Some((keyword, path, line)) = target else {
        return Err(RoleError::at(
            file,
            node.mark.line,
            "expected include_tasks or import_tasks",
        ));
    };
    let Some((included, text)) = read(&path) else {
        return Err(RoleError::at(
            file,
            line,
            format!("{keyword}: no task file `{path}`"),
        ));
    };
    if inherit.including.iter().any(|f| *f == *included) || inherit.including.len() > 20 {
        return Err(RoleError::at(
            file,
            line,
            format!("{keyword}: `{path}` includes itself"),
        ));
    }
    inherit.including.push(included.to_string());
    let root =
        crate::yaml::parse(&text).map_err(|e| RoleError::at(&included, e.mark.line, e.message))?;
    match &root.kind {
        Kind::Null => Ok(()),
        Kind::Seq(items) => parse_list(&included, items, &inherit, read, out),
        _ => Err(RoleError::at(
            &included,
            root.mark.line,
            format!("a task file is a list of tasks, not {}", root.type_name()),
        )),
    }
}

/// A task that calls nothing yet: every keyword at its default.
fn blank(file: &Arc<str>, line: usize) -> Task {
    Task {
        name: String::new(),
        module: modules::spec("debug").unwrap_or(&modules::specs()[0]),
        args: serde_json::Value::Null,
        args_line: line,
        when: Vec::new(),
        notify: Vec::new(),
        listen: Vec::new(),
        register: None,
        changed_when: None,
        failed_when: None,
        tags: Vec::new(),
        run_once: false,
        throttle: None,
        loop_over: None,
        loop_form: LoopForm::List,
        check_mode: None,
        ignore_errors: false,
        no_log: false,
        vars: Vec::new(),
        become_root: None,
        become_user: None,
        environment: None,
        delegate_to: None,
        until: None,
        retries: None,
        delay: None,
        loop_var: "item".into(),
        loop_label: None,
        blocks: Vec::new(),
        control: None,
        file: file.clone(),
        line,
    }
}

/// A task the engine carries out itself (`control`), named `name`.
pub fn control_task(file: &Arc<str>, line: usize, name: &str, control: Control) -> Task {
    Task {
        name: name.into(),
        control: Some(control),
        ..blank(file, line)
    }
}

/// What the blocks, includes and play around a task give it: their conditions before its own,
/// their tags and vars with its own, their other keywords unless it sets them.
pub(crate) fn apply_inherit(task: &mut Task, inherit: &Inherit) {
    let mut when = inherit.when.clone();
    when.append(&mut task.when);
    task.when = when;
    let mut tags = inherit.tags.clone();
    tags.append(&mut task.tags);
    task.tags = tags;
    let mut vars = inherit.vars.clone();
    vars.append(&mut task.vars);
    task.vars = vars;
    task.become_root = task.become_root.or(inherit.become_root);
    if task.become_user.is_none() {
        task.become_user = inherit.become_user.clone();
    }
    if task.environment.is_none() {
        task.environment = inherit.environment.clone();
    }
    if task.delegate_to.is_none() {
        task.delegate_to = inherit.delegate_to.clone();
    }
    if !task.ignore_errors {
        task.ignore_errors = inherit.ignore_errors.unwrap_or(false);
    }
    if !task.no_log {
        task.no_log = inherit.no_log.unwrap_or(false);
    }
    task.check_mode = task.check_mode.or(inherit.check_mode);
    let mut blocks = inherit.blocks.clone();
    blocks.append(&mut task.blocks);
    task.blocks = blocks;
}

fn vars_of(file: &str, node: &Node) -> Result<Vec<(String, serde_json::Value)>, RoleError> {
    match &node.kind {
        Kind::Map(entries) => Ok(entries
            .iter()
            .map(|(k, v)| (k.key_text(), v.to_json()))
            .collect()),
        Kind::Null => Ok(Vec::new()),
        _ => Err(RoleError::at(
            file,
            node.mark.line,
            format!("vars: expected a mapping, not {}", node.type_name()),
        )),
    }
}

pub fn parse(file: &Arc<str>, node: &Node) -> Result<Task, RoleError> {
    let Kind::Map(entries) = &node.kind else {
        return Err(RoleError::at(
            file,
            node.mark.line,
            format!("a task is a mapping, not {}", node.type_name()),
        ));
    };
    let mut task = blank(file, node.mark.line);
    let mut module: Option<(&'static modules::Spec, &Node)> = None;
    // `local_action`: the module and its arguments, delegated to this machine.
    let mut local: Option<(&'static modules::Spec, Node)> = None;
    let mut extra_args: Option<&Node> = None;
    let mut shared = Inherit::default();
    for (key, value) in entries {
        let line = value.mark.line;
        let at = |message: String| RoleError::at(file, line, message);
        let key_name = key.key_text();
        match key_name.as_str() {
            "name" => {
                task.name =
                    scalar_text(value).ok_or_else(|| at("name: expected a string".into()))?
            }
            "changed_when" => task.changed_when = Some(condition(file, value)?),
            "failed_when" => task.failed_when = Some(condition(file, value)?),
            "notify" => {
                task.notify = string_list(value)
                    .ok_or_else(|| at("notify: expected a handler name or a list of them".into()))?
            }
            "listen" => {
                task.listen = string_list(value)
                    .ok_or_else(|| at("listen: expected a topic or a list of them".into()))?
            }
            "register" => {
                let name = scalar_text(value)
                    .filter(|n| is_identifier(n))
                    .ok_or_else(|| at("register: expected a variable name".into()))?;
                task.register = Some(name);
            }
            "run_once" => {
                task.run_once =
                    boolean(value).ok_or_else(|| at("run_once: expected true or false".into()))?
            }
            "throttle" => match value.kind {
                Kind::Int(n) if n > 0 => task.throttle = Some(n as usize),
                _ => return Err(at("throttle: expected a positive number of hosts".into())),
            },
            "loop" | "with_items" | "with_list" => match &value.kind {
                Kind::Seq(_) | Kind::Str(_) => {
                    task.loop_over = Some(value.to_json());
                    if key_name == "with_items" {
                        task.loop_form = LoopForm::Items;
                    }
                }
                _ => {
                    return Err(at(format!(
                        "{key_name}: expected a list or a \"{{{{ expression }}}}\""
                    )))
                }
            },
            "with_nested" | "with_cartesian" | "with_together" | "with_subelements"
            | "with_sequence" => {
                let form = match key_name.as_str() {
                    "with_nested" | "with_cartesian" => LoopForm::Nested,
                    "with_together" => LoopForm::Together,
                    "with_subelements" => LoopForm::Subelements,
                    _ => LoopForm::Sequence,
                };
                let fits = match (&value.kind, form) {
                    (Kind::Str(_), LoopForm::Sequence) => true,
                    (Kind::Seq(_), LoopForm::Sequence) => false,
                    (Kind::Seq(_) | Kind::Str(_), _) => true,
                    _ => false,
                };
                if !fits {
                    return Err(at(format!(
                        "{key_name}: expected {}",
                        if form == LoopForm::Sequence {
                            "`start=N end=M` (`count=`, `stride=`, `format=`)"
                        } else {
                            "a list"
                        }
                    )));
                }
                task.loop_over = Some(value.to_json());
                task.loop_form = form;
            }
            // Ansible's dict2items: [{key, value}, ...].
            "with_dict" => match &value.kind {
                Kind::Map(_) | Kind::Str(_) => {
                    let expr = match value.to_json() {
                        serde_json::Value::String(s) => strip_braces(&s),
                        other => other.to_string(),
                    };
                    task.loop_over = Some(serde_json::Value::String(format!(
                        "{{{{ ({expr}) | dict2items }}}}"
                    )))
                }
                _ => {
                    return Err(at(
                        "with_dict: expected a mapping or an expression giving one".into(),
                    ))
                }
            },
            "loop_control" => {
                let Kind::Map(opts) = &value.kind else {
                    return Err(at(
                        "loop_control: expected a mapping (loop_var, label)".into()
                    ));
                };
                for (k, v) in opts {
                    match k.key_text().as_str() {
                        "loop_var" => {
                            task.loop_var =
                                scalar_text(v).filter(|n| is_identifier(n)).ok_or_else(|| {
                                    at("loop_control.loop_var: expected a variable name".into())
                                })?
                        }
                        "label" => {
                            task.loop_label = Some(scalar_text(v).ok_or_else(|| {
                                at("loop_control.label: expected a string".into())
                            })?)
                        }
                        other => {
                            return Err(RoleError::at(
                                file,
                                k.mark.line,
                                format!("loop_control: unsupported `{other}` (loop_var, label)"),
                            ))
                        }
                    }
                }
            }
            "until" => task.until = Some(condition(file, value)?),
            "retries" | "delay" => {
                let v = match &value.kind {
                    Kind::Int(n) if *n >= 0 => value.to_json(),
                    Kind::Str(s) if crate::template::is_template(s) => value.to_json(),
                    _ => return Err(at(format!("{key_name}: expected a number"))),
                };
                if key_name == "retries" {
                    task.retries = Some(v)
                } else {
                    task.delay = Some(v)
                }
            }
            "args" => match &value.kind {
                Kind::Map(_) => extra_args = Some(value),
                _ => {
                    return Err(at(
                        "args: expected a mapping of the module's arguments".into()
                    ))
                }
            },
            "meta" | "ansible.builtin.meta" | "ansible.legacy.meta" => {
                let what = scalar_text(value).unwrap_or_default();
                let (control, name) = match what.as_str() {
                    "flush_handlers" => (Control::FlushHandlers, "flush handlers"),
                    "end_host" => (Control::EndHost, "end host"),
                    "end_play" => (Control::EndPlay, "end play"),
                    "noop" => (Control::Noop, "noop"),
                    _ => {
                        return Err(at(format!(
                            "meta: `{what}` is not supported (flush_handlers, end_host, end_play, noop)"
                        )))
                    }
                };
                task.control = Some(control);
                if task.name.is_empty() {
                    task.name = name.into();
                }
            }
            "local_action" | "ansible.builtin.local_action" => {
                local = Some(local_action(file, value)?);
            }
            other if shared_keyword(file, other, value, &mut shared)? => {}
            other => {
                let other = short(other);
                let (other, control) = match other {
                    "set_fact" => ("debug", Some(Control::SetFact)),
                    "assert" => ("debug", Some(Control::Assert)),
                    o => (o, None),
                };
                if let Some(c) = control {
                    let Kind::Map(_) = &value.kind else {
                        return Err(at(format!("{}: expected a mapping", short(&key_name))));
                    };
                    if module.is_some() || task.control.is_some() {
                        return Err(RoleError::at(
                            file,
                            key.mark.line,
                            "a task calls one module",
                        ));
                    }
                    task.control = Some(c);
                    task.args = value.to_json();
                    task.args_line = value.mark.line;
                    if task.name.is_empty() {
                        task.name = short(&key_name).to_string();
                    }
                    continue;
                }
                let Some(spec) = modules::spec(other) else {
                    return Err(RoleError::at(
                        file,
                        key.mark.line,
                        format!(
                            "unknown module or keyword `{other}` (modules: {}; keywords: {KEYWORDS})",
                            modules::specs().iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                };
                if let Some((first, _)) = module {
                    return Err(RoleError::at(
                        file,
                        key.mark.line,
                        format!(
                            "a task calls one module; this one also calls `{}`",
                            first.name
                        ),
                    ));
                }
                module = Some((spec, value));
            }
        }
    }
    task.when = shared.when;
    task.tags = shared.tags;
    task.check_mode = shared.check_mode;
    task.ignore_errors = shared.ignore_errors.unwrap_or(false);
    task.no_log = shared.no_log.unwrap_or(false);
    task.vars = shared.vars;
    task.become_root = shared.become_root;
    task.become_user = shared.become_user;
    task.environment = shared.environment;
    task.delegate_to = shared.delegate_to;
    if let Some((spec, args)) = &local {
        if module.is_some() || task.control.is_some() {
            return Err(RoleError::at(
                file,
                node.mark.line,
                "a task calls one module (local_action is one)",
            ));
        }
        task.delegate_to = Some("localhost".into());
        module = Some((spec, args));
    }
    if let Some(c) = &task.control {
        if module.is_some() {
            return Err(RoleError::at(
                file,
                node.mark.line,
                "a task calls one module",
            ));
        }
        if *c == Control::Assert {
            let has_that =
                matches!(&task.args, serde_json::Value::Object(m) if m.contains_key("that"));
            if !has_that {
                return Err(RoleError::at(
                    file,
                    task.args_line,
                    "assert: missing argument `that`",
                ));
            }
        }
        return Ok(task);
    }
    let Some((spec, args)) = module else {
        return Err(RoleError::at(
            file,
            node.mark.line,
            format!(
                "task {}calls no module (one of: {})",
                if task.name.is_empty() {
                    String::new()
                } else {
                    format!("`{}` ", task.name)
                },
                modules::specs()
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let from_kv;
    let args = match &args.kind {
        Kind::Str(text) => match key_values(spec, text, args.mark) {
            Ok(Some(map)) => {
                from_kv = map;
                &from_kv
            }
            Ok(None) => args,
            Err(message) => return Err(RoleError::at(file, args.mark.line, message)),
        },
        _ => args,
    };
    let with_msg;
    let args = match debug_var(spec, args) {
        Some(node) => {
            with_msg = node;
            &with_msg
        }
        None => args,
    };
    let merged;
    let args = match extra_args {
        None => args,
        Some(extra) => {
            // `args:` adds to the module's arguments; a command line stays the command.
            let Kind::Map(more) = &extra.kind else {
                unreachable!("checked above")
            };
            let mut all: Vec<(Node, Node)> = match &args.kind {
                Kind::Map(m) => m.clone(),
                Kind::Str(_) if spec.free_form => {
                    vec![(key_node("cmd", args.mark), args.clone())]
                }
                Kind::Null => Vec::new(),
                _ => return check_args(file, spec, args).map(|_| task),
            };
            all.extend(more.iter().cloned());
            merged = Node {
                kind: Kind::Map(all),
                mark: args.mark,
            };
            &merged
        }
    };
    check_args(file, spec, args)?;
    task.module = spec;
    task.args = args.to_json();
    task.args_line = args.mark.line;
    if task.name.is_empty() {
        task.name = spec.name.to_string();
    }
    Ok(task)
}

/// `local_action: {module: NAME, ...arguments}` or `local_action: NAME ARGUMENTS`.
fn local_action(file: &str, value: &Node) -> Result<(&'static modules::Spec, Node), RoleError> {
    let at = |message: String| RoleError::at(file, value.mark.line, message);
    let (name, args) = match &value.kind {
        Kind::Map(entries) => {
            let name = entries
                .iter()
                .find(|(k, _)| k.key_text() == "module")
                .and_then(|(_, v)| scalar_text(v))
                .ok_or_else(|| at("local_action: expected `module: NAME`".into()))?;
            let rest: Vec<(Node, Node)> = entries
                .iter()
                .filter(|(k, _)| k.key_text() != "module")
                .cloned()
                .collect();
            (
                name,
                Node {
                    mark: value.mark,
                    kind: Kind::Map(rest),
                },
            )
        }
        Kind::Str(text) => {
            let (name, rest) = text
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or((text.trim(), ""));
            (
                name.to_string(),
                Node {
                    mark: value.mark,
                    kind: if rest.trim().is_empty() {
                        Kind::Null
                    } else {
                        Kind::Str(rest.trim().to_string())
                    },
                },
            )
        }
        _ => {
            return Err(at(
                "local_action: expected a module and its arguments".into()
            ))
        }
    };
    let spec =
        modules::spec(&name).ok_or_else(|| at(format!("local_action: unknown module `{name}`")))?;
    Ok((spec, args))
}

/// Ansible's `key=value` form of a module's arguments (`file: path=/etc/x state=touch`), as a
/// mapping; for a module whose free form is a command line, only its own keys (`chdir=`,
/// `creates=`, `removes=`, `stdin=`) are taken out of the line, and the rest is the command.
/// None when the text stays as it is (a command line without such keys).
fn key_values(
    spec: &modules::Spec,
    text: &str,
    mark: crate::yaml::Mark,
) -> Result<Option<Node>, String> {
    const COMMAND_KEYS: [&str; 5] = ["chdir", "creates", "removes", "stdin", "executable"];
    let words = split_args(text);
    let pair = |word: &str| {
        let (k, v) = word.split_once('=')?;
        let plain = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        plain.then(|| (k.to_string(), unquote(v)))
    };
    let node = |text: String| Node {
        mark,
        kind: Kind::Str(text),
    };
    let mut entries = Vec::new();
    if spec.free_form {
        let mut command = Vec::new();
        for word in &words {
            match pair(word) {
                Some((k, v)) if COMMAND_KEYS.contains(&k.as_str()) => {
                    if k == "executable" {
                        // Accepted for Ansible's sake: shell's commands run in /bin/sh.
                        continue;
                    }
                    entries.push((key_node(&k, mark), node(v)));
                }
                _ => command.push(word.as_str()),
            }
        }
        if entries.is_empty() {
            return Ok(None);
        }
        entries.insert(0, (key_node("cmd", mark), node(command.join(" "))));
        return Ok(Some(Node {
            mark,
            kind: Kind::Map(entries),
        }));
    }
    for word in &words {
        let Some((k, v)) = pair(word) else {
            return Err(format!(
                "{}: expected a mapping of arguments or key=value pairs, and `{word}` is not one",
                spec.name
            ));
        };
        entries.push((key_node(&k, mark), node(v)));
    }
    Ok(Some(Node {
        mark,
        kind: Kind::Map(entries),
    }))
}

/// Splits Ansible's `key=value` text on whitespace outside quotes and outside `{{ }}`, `{% %}`
/// and `{# #}`, keeping the quotes (as Ansible's `split_args`).
fn split_args(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q && !word.ends_with('\\') => quote = None,
            (None, '"' | '\'') if depth == 0 => quote = Some(c),
            (None, '{') if matches!(chars.peek(), Some('{' | '%' | '#')) => depth += 1,
            (None, '}' | '%' | '#') if depth > 0 && chars.peek() == Some(&'}') => depth -= 1,
            (None, c) if c.is_whitespace() && depth == 0 => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                continue;
            }
            _ => {}
        }
        word.push(c);
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// A value without its outer quotes, if it has matching ones.
fn unquote(value: &str) -> String {
    let b = value.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        value[1..value.len() - 1].to_string()
    } else {
        value.to_string()
    }
}

/// `debug: var=NAME` as the message `NAME: VALUE` (or that it is not defined).
fn debug_var(spec: &modules::Spec, args: &Node) -> Option<Node> {
    let Kind::Map(entries) = &args.kind else {
        return None;
    };
    if spec.name != "debug" {
        return None;
    }
    let (_, var) = entries.iter().find(|(k, _)| k.key_text() == "var")?;
    let name = strip_braces(&scalar_text(var)?);
    let msg = format!("{name}: {{{{ ({name}) | default('VARIABLE IS NOT DEFINED!') }}}}");
    let mut rest: Vec<(Node, Node)> = entries
        .iter()
        .filter(|(k, _)| k.key_text() != "var")
        .cloned()
        .collect();
    rest.push((
        key_node("msg", var.mark),
        Node {
            mark: var.mark,
            kind: Kind::Str(msg),
        },
    ));
    Some(Node {
        mark: args.mark,
        kind: Kind::Map(rest),
    })
}

/// Unknown and missing argument names, found before anything is rendered. (Rules between
/// arguments — one of `cmd` or `argv` — are the module's, checked once they are rendered.)
fn check_args(file: &str, spec: &modules::Spec, args: &Node) -> Result<(), RoleError> {
    match &args.kind {
        Kind::Map(entries) => {
            for (k, _) in entries {
                let name = k.key_text();
                if !spec.args.contains(&name.as_str()) {
                    return Err(RoleError::at(
                        file,
                        k.mark.line,
                        format!(
                            "{}: unknown argument `{name}` (arguments: {})",
                            spec.name,
                            spec.args.join(", ")
                        ),
                    ));
                }
            }
            for required in &spec.required {
                if !entries.iter().any(|(k, _)| k.key_text() == *required) {
                    return Err(RoleError::at(
                        file,
                        args.mark.line,
                        format!("{}: missing argument `{required}`", spec.name),
                    ));
                }
            }
            Ok(())
        }
        Kind::Str(_) if spec.free_form => Ok(()),
        _ => Err(RoleError::at(
            file,
            args.mark.line,
            format!(
                "{}: expected a mapping of arguments{}, not {}",
                spec.name,
                if spec.free_form {
                    " or a command line"
                } else {
                    ""
                },
                args.type_name()
            ),
        )),
    }
}

fn condition(file: &str, node: &Node) -> Result<Condition, RoleError> {
    let one = |n: &Node| -> Result<Expr, RoleError> {
        let text = match &n.kind {
            Kind::Bool(b) => b.to_string(),
            Kind::Str(s) => strip_braces(s),
            _ => {
                return Err(RoleError::at(
                    file,
                    n.mark.line,
                    format!("a condition is an expression, not {}", n.type_name()),
                ))
            }
        };
        Ok(Expr {
            text,
            line: n.mark.line,
        })
    };
    match &node.kind {
        Kind::Seq(items) => items.iter().map(one).collect(),
        _ => Ok(vec![one(node)?]),
    }
}

/// Ansible allows (and warns about) `when: "{{ x }}"`; the braces add nothing.
fn strip_braces(text: &str) -> String {
    let t = text.trim();
    match t.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
        Some(inner) if !inner.contains("{{") => inner.trim().to_string(),
        _ => t.to_string(),
    }
}

fn boolean(node: &Node) -> Option<bool> {
    match node.kind {
        Kind::Bool(b) => Some(b),
        _ => None,
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn key_node(name: &str, mark: crate::yaml::Mark) -> Node {
    Node {
        mark,
        kind: Kind::Str(name.into()),
    }
}

/// A condition written in a module's arguments (`assert`'s `that`), as `when` reads one.
pub fn task_expr(text: &str, line: usize) -> Expr {
    Expr {
        text: strip_braces(text),
        line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one task of `yaml`.
    fn task(yaml: &str) -> Result<Task, RoleError> {
        let root = crate::yaml::parse(yaml).expect("YAML");
        let Kind::Seq(items) = &root.kind else {
            panic!("a list")
        };
        parse(&Arc::from("tasks.yml"), &items[0])
    }

    #[test]
    fn key_value_arguments_split_outside_quotes_and_expressions() {
        assert_eq!(
            split_args("path=/etc/{{ a | default('x y') }} mode=0644 line='a b' x=\"c d\"  e={# a b #}{% if 1 %}1{% endif %}"),
            [
                "path=/etc/{{ a | default('x y') }}",
                "mode=0644",
                "line='a b'",
                "x=\"c d\"",
                "e={# a b #}{% if 1 %}1{% endif %}"
            ]
        );
        let t = task("- file: path=/tmp/{{ x }} state=touch mode='0644'\n").unwrap();
        assert_eq!(
            t.args,
            serde_json::json!({"path": "/tmp/{{ x }}", "state": "touch", "mode": "0644"})
        );
        let err = task("- file: path=/tmp/x touch\n").unwrap_err().to_string();
        assert!(
            err.contains("tasks.yml:1") && err.contains("`touch` is not one"),
            "{err}"
        );
        let err = task("- file: path=/tmp/x stat=touch\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown argument `stat`"), "{err}");
    }

    #[test]
    fn a_command_line_keeps_its_words_and_gives_up_its_own_keys() {
        let t = task("- shell: echo 'a  b' > out chdir=/tmp creates=/tmp/out\n").unwrap();
        assert_eq!(
            t.args,
            serde_json::json!({"cmd": "echo 'a  b' > out", "chdir": "/tmp", "creates": "/tmp/out"})
        );
        let t = task("- command: grep -c x=1 /etc/hosts\n").unwrap();
        assert_eq!(t.args, serde_json::json!("grep -c x=1 /etc/hosts"));
    }

    #[test]
    fn debug_var_shows_the_name_and_the_value() {
        let t = task("- debug: var=result.stdout_lines\n").unwrap();
        assert_eq!(
            t.args,
            serde_json::json!({"msg": "result.stdout_lines: {{ (result.stdout_lines) | default('VARIABLE IS NOT DEFINED!') }}"})
        );
        let t = task("- debug: {var: x, verbosity: 1}\n").unwrap();
        assert_eq!(t.args["verbosity"], 1);
    }

    #[test]
    fn a_handler_listens_to_topics() {
        let t = task("- name: h\n  command: 'true'\n  listen: [restart web, reload]\n").unwrap();
        assert_eq!(t.listen, ["restart web", "reload"]);
    }
}
