//! Turning a task into module calls for one host: `when`, `loop` and the arguments rendered in
//! the host's scope and typed. The same code checks every task before the run, with placeholder
//! facts, so that bad input is found before any host is touched.

use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::Value;

use crate::modules::{Action, ArgsError, Spec};
use crate::roles::{Condition, Role, Task};
use crate::template::{self, Scope, World};

/// One module call, ready to run.
pub struct Call {
    pub item: Option<Value>,
    /// `loop_control.label`, rendered for this item: what the output names the item by.
    pub label: Option<String>,
    pub action: Action,
}

/// What `omit` renders to: an argument whose value it is is left out, as in Ansible
/// (`mode: "{{ file_mode | default(omit) }}"`).
pub const OMIT: &str = "__omit_place_holder__hactl";

/// Removes the arguments, and the items of lists and mappings inside them, that are `omit`.
fn strip_omitted(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| v.as_str() != Some(OMIT));
            map.values_mut().for_each(strip_omitted);
        }
        serde_json::Value::Array(items) => {
            items.retain(|v| v.as_str() != Some(OMIT));
            items.iter_mut().for_each(strip_omitted);
        }
        _ => {}
    }
}

/// A task that cannot be run on a host as written: the message names `file:line`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TaskError(pub String);

impl From<String> for TaskError {
    fn from(message: String) -> TaskError {
        TaskError(message)
    }
}

pub enum Prepared {
    /// `when` was false (for every item).
    Skip,
    Calls(Ready),
}

/// A task ready to run on a host: its calls, and where and how they run.
pub struct Ready {
    pub calls: Vec<Call>,
    /// What the task sees besides the host's variables: registered results, its own `vars`.
    pub overlay: IndexMap<String, Value>,
    /// `environment:`, as shell `export`s.
    pub env: String,
    /// `become_user:` (the task's, else the play's), rendered.
    pub become_user: Option<String>,
    /// `delegate_to:`, rendered.
    pub delegate: Option<String>,
}

/// Evaluates a condition (all expressions must hold) in `scope`.
pub fn holds(cond: &Condition, scope: &Arc<Scope>, file: &str) -> Result<bool, TaskError> {
    let env = &scope.world().env;
    for expr in cond {
        let source = template::Source {
            file,
            line: expr.line,
        };
        let value = template::eval(env, &expr.text, &scope.value(), &source)
            .map_err(|e| TaskError(scope.explain(e).to_string()))?;
        if !value.is_true() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `overlay` with the task's `vars:` (and its blocks' and includes', outer first) rendered on
/// top, each seeing those before it.
pub fn with_task_vars(
    task: &Task,
    world: &Arc<World>,
    host: &str,
    overlay: &IndexMap<String, Value>,
) -> Result<IndexMap<String, Value>, TaskError> {
    let mut overlay = overlay.clone();
    let given = world.hosts.get(host);
    for (name, raw) in &task.vars {
        // `-e` wins over task vars, as in Ansible.
        let from_cli = given
            .and_then(|d| d.vars.get(name))
            .is_some_and(|(_, file, _)| &**file == crate::stack::EXTRA_VARS);
        if from_cli {
            continue;
        }
        let scope = world.scope(host, overlay.clone());
        let source = template::Source {
            file: &task.file,
            line: task.line,
        };
        let value = scope
            .render_json(raw, &source)
            .map_err(|e| format!("in vars `{name}`: {e}"))?;
        overlay.insert(name.clone(), value);
    }
    Ok(overlay)
}

/// Prepares `task` for `host` with `overlay` (registered results) on top of its variables;
/// `play_become_user` is the play's `become_user`, for a task that names none.
pub fn prepare(
    task: &Task,
    role: &Role,
    world: &Arc<World>,
    host: &str,
    overlay: &IndexMap<String, Value>,
    play_become_user: Option<&String>,
) -> Result<Prepared, TaskError> {
    let overlay = &with_task_vars(task, world, host, overlay)?;
    let scope = world.scope(host, overlay.clone());
    let items: Vec<Option<Value>> = match &task.loop_over {
        None => vec![None],
        Some(raw) => {
            let source = template::Source {
                file: &task.file,
                line: task.line,
            };
            let value = scope.render_json(raw, &source).map_err(|e| e.to_string())?;
            let list = value.try_iter().map_err(|_| {
                format!(
                    "{}:{}: loop: expected a list, got {}",
                    task.file,
                    task.line,
                    value.kind()
                )
            })?;
            if task.loop_flatten {
                list.flat_map(|item| match item.kind() {
                    minijinja::value::ValueKind::Seq => {
                        item.try_iter().into_iter().flatten().map(Some).collect()
                    }
                    _ => vec![Some(item)],
                })
                .collect()
            } else {
                list.map(Some).collect()
            }
        }
    };
    let mut calls = Vec::new();
    for item in items {
        let scope = match &item {
            None => scope.clone(),
            Some(v) => {
                let mut with_item = overlay.clone();
                with_item.insert(task.loop_var.clone(), v.clone());
                world.scope(host, with_item)
            }
        };
        if !holds(&task.when, &scope, &task.file)? {
            continue;
        }
        let source = template::Source {
            file: &task.file,
            line: task.args_line,
        };
        let rendered = scope
            .render_json(&task.args, &source)
            .map_err(|e| e.to_string())?;
        let mut args = template::to_json(&rendered);
        strip_omitted(&mut args);
        let mut action =
            Action::parse(task.module, args).map_err(|e| arg_error(task, task.module, &e))?;
        fill_in(&mut action, task, role, &scope)?;
        let label = match (&task.loop_label, &item) {
            (Some(label), Some(_)) => {
                let source = template::Source {
                    file: &task.file,
                    line: task.line,
                };
                let text = scope
                    .render_json(&serde_json::Value::String(label.clone()), &source)
                    .map_err(|e| e.to_string())?;
                Some(text.to_string())
            }
            _ => None,
        };
        calls.push(Call {
            item,
            label,
            action,
        });
    }
    if calls.is_empty() {
        return Ok(Prepared::Skip);
    }
    let source = template::Source {
        file: &task.file,
        line: task.line,
    };
    let text = |raw: &String| -> Result<String, TaskError> {
        Ok(scope
            .render_json(&serde_json::Value::String(raw.clone()), &source)
            .map_err(|e| e.to_string())?
            .to_string())
    };
    let env = match &task.environment {
        None => String::new(),
        Some(raw) => match scope
            .render_json(raw, &source)
            .map(|v| template::to_json(&v))
            .map_err(|e| e.to_string())?
        {
            serde_json::Value::Object(vars) => vars
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("export {k}={}; ", crate::ssh::shell_quote(&v))
                })
                .collect(),
            other => {
                return Err(TaskError(format!(
                    "{}:{}: environment: expected a mapping, got {other}",
                    task.file, task.line
                )))
            }
        },
    };
    Ok(Prepared::Calls(Ready {
        calls,
        env,
        become_user: task
            .become_user
            .as_ref()
            .or(play_become_user)
            .map(text)
            .transpose()?,
        delegate: task.delegate_to.as_ref().map(text).transpose()?,
        overlay: overlay.clone(),
    }))
}

fn arg_error(task: &Task, spec: &Spec, message: &ArgsError) -> String {
    format!("{}:{}: {}: {message}", task.file, task.args_line, spec.name)
}

/// Renders a `template`'s source, or reads a `copy`'s or an `unarchive`'s, from the role.
fn fill_in(
    action: &mut Action,
    task: &Task,
    role: &Role,
    scope: &Arc<Scope>,
) -> Result<(), TaskError> {
    match action {
        Action::Template(args) => {
            // The template's arguments were checked: `src` is there.
            let src = args.src.as_deref().unwrap_or_default();
            let asset = role.templates.get(src).ok_or_else(|| {
                format!(
                    "{}:{}: template: no `{src}` in role {}'s templates/ ({})",
                    task.file,
                    task.args_line,
                    role.name,
                    list(role.templates.keys())
                )
            })?;
            let text = String::from_utf8_lossy(&asset.bytes);
            let source = template::Source {
                file: &asset.display,
                line: 1,
            };
            let env = &scope.world().env;
            let rendered = template::render_str(env, &text, &scope.value(), &source)
                .map_err(|e| TaskError(scope.explain(e).to_string()))?;
            args.source = Some(rendered.into_bytes());
        }
        Action::Copy(args) => {
            args.source = match &args.src {
                None => None,
                Some(src) => Some(role_file(task, role, "copy", src)?),
            };
        }
        Action::Unarchive(args) if args.remote_src != Some(true) => {
            args.source = Some(role_file(task, role, "unarchive", &args.src)?);
        }
        Action::Wheels(args) => {
            let asset = role.files.get(&args.lock).ok_or_else(|| {
                format!(
                    "{}:{}: wheels: no `{}` in role {}'s files/ ({})",
                    task.file,
                    task.args_line,
                    args.lock,
                    role.name,
                    list(role.files.keys())
                )
            })?;
            let lock = crate::modules::wheels::Lock::parse(&asset.bytes, &asset.display)?;
            args.locked = Some(std::sync::Arc::new(lock));
        }
        _ => {}
    }
    Ok(())
}

/// The bytes of `src`: a file in the role's `files/`, or with an absolute path a file on this
/// (the control) machine, as in Ansible.
fn role_file(task: &Task, role: &Role, module: &str, src: &str) -> Result<Vec<u8>, TaskError> {
    if src.starts_with('/') {
        return std::fs::read(src).map_err(|e| {
            TaskError(format!(
                "{}:{}: {module}: {src} on this machine: {e}",
                task.file, task.args_line
            ))
        });
    }
    let asset = role.files.get(src).ok_or_else(|| {
        format!(
            "{}:{}: {module}: no `{src}` in role {}'s files/ ({})",
            task.file,
            task.args_line,
            role.name,
            list(role.files.keys())
        )
    })?;
    Ok(asset.bytes.clone())
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "it has none".into()
    } else {
        format!("it has {}", names.join(", "))
    }
}
