//! Turning a task into module calls for one host: `when`, `loop` and the arguments rendered in
//! the host's scope and typed. The same code checks every task before the run, with placeholder
//! facts, so that bad input is found before any host is touched.

use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::value::{Value, ValueKind};

use crate::modules::{Action, ArgsError, Spec};
use crate::roles::{Condition, LoopForm, Role, Task};
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

/// The items of a loop whose rendered value is `list`, as its form gives them.
fn loop_items(form: LoopForm, list: Vec<Value>) -> Result<Vec<Value>, String> {
    let seq = |v: &Value, what: &str| -> Result<Vec<Value>, String> {
        match v.kind() {
            ValueKind::Seq => Ok(v.try_iter().map_err(|e| e.to_string())?.collect()),
            other => Err(format!("{what}: expected a list, got {other}")),
        }
    };
    Ok(match form {
        LoopForm::List => list,
        LoopForm::Items => template::flatten_once(list),
        LoopForm::Nested => {
            let mut out: Vec<Vec<Value>> = vec![Vec::new()];
            for l in &list {
                let items = seq(l, "with_nested")?;
                out = out
                    .into_iter()
                    .flat_map(|prefix| {
                        items.iter().map(move |i| {
                            let mut p = prefix.clone();
                            p.push(i.clone());
                            p
                        })
                    })
                    .collect();
            }
            if list.is_empty() {
                Vec::new()
            } else {
                out.into_iter().map(Value::from).collect()
            }
        }
        LoopForm::Together => {
            let lists = list
                .iter()
                .map(|l| seq(l, "with_together"))
                .collect::<Result<Vec<_>, _>>()?;
            let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
            (0..longest)
                .map(|i| {
                    Value::from(
                        lists
                            .iter()
                            .map(|l| l.get(i).cloned().unwrap_or(Value::from(())))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect()
        }
        LoopForm::Subelements => {
            let [outer, key, rest @ ..] = list.as_slice() else {
                return Err("with_subelements: expected [list, key]".into());
            };
            let skip_missing = rest
                .first()
                .and_then(|o| o.get_attr("skip_missing").ok())
                .is_some_and(|v| v.is_true());
            let key = key.as_str().ok_or("with_subelements: the key is a name")?;
            let mut out = Vec::new();
            for item in seq(outer, "with_subelements")? {
                let sub = item.get_attr(key).unwrap_or(Value::UNDEFINED);
                if sub.is_undefined() || sub.is_none() {
                    if skip_missing {
                        continue;
                    }
                    return Err(format!("with_subelements: an item has no `{key}`"));
                }
                for s in seq(&sub, "with_subelements")? {
                    out.push(Value::from(vec![item.clone(), s]));
                }
            }
            out
        }
        LoopForm::Sequence => {
            let spec: String = list
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" ");
            sequence(&spec)?.into_iter().map(Value::from).collect()
        }
    })
}

/// Ansible's `with_sequence`: `start=N end=M` or `count=C`, `stride=S`, `format=F` (`%d`,
/// `%02d`, `%x`, `%o`), or the short form `[start-]end[/stride][:format]`.
fn sequence(spec: &str) -> Result<Vec<String>, String> {
    let bad = |what: &str| format!("with_sequence: {what} in `{spec}`");
    let number = |s: &str| -> Result<i64, String> {
        let s = s.trim();
        if let Some(hex) = s.strip_prefix("0x") {
            i64::from_str_radix(hex, 16).map_err(|_| bad("not a number"))
        } else {
            s.parse().map_err(|_| bad("not a number"))
        }
    };
    let (mut start, mut end, mut count, mut stride, mut format) =
        (1i64, None::<i64>, None::<i64>, 1i64, "%d".to_string());
    if spec.contains('=') {
        for word in spec.split_whitespace() {
            let (k, v) = word
                .split_once('=')
                .ok_or_else(|| bad("expected key=value"))?;
            match k {
                "start" => start = number(v)?,
                "end" => end = Some(number(v)?),
                "count" => count = Some(number(v)?),
                "stride" => stride = number(v)?,
                "format" => format = v.to_string(),
                _ => return Err(bad(&format!("unknown key `{k}`"))),
            }
        }
    } else {
        let (range, fmt) = match spec.split_once(':') {
            Some((r, f)) => (r, Some(f)),
            None => (spec, None),
        };
        let (range, step) = match range.split_once('/') {
            Some((r, s)) => (r, Some(number(s)?)),
            None => (range, None),
        };
        match range.trim().split_once('-') {
            Some((a, b)) => {
                start = number(a)?;
                end = Some(number(b)?);
            }
            None => end = Some(number(range)?),
        }
        if let Some(s) = step {
            stride = s;
        }
        if let Some(f) = fmt {
            format = f.to_string();
        }
    }
    let end = match (end, count) {
        (Some(_), Some(_)) => return Err(bad("both end and count")),
        (Some(e), None) => e,
        (None, Some(0)) => return Ok(Vec::new()),
        (None, Some(c)) => start + (c - 1) * stride,
        (None, None) => return Err(bad("no end or count")),
    };
    if stride == 0 || (end - start).signum() * stride.signum() < 0 {
        return Err(bad("the stride does not lead from start to end"));
    }
    let mut out = Vec::new();
    let mut i = start;
    while (stride > 0 && i <= end) || (stride < 0 && i >= end) {
        out.push(printf(&format, i).ok_or_else(|| bad("unsupported format"))?);
        i += stride;
    }
    Ok(out)
}

/// One `%d`-style conversion of `n` in `format` (`%d`, `%Nd`, `%0Nd`, `%x`, `%X`, `%o`, `%%`).
fn printf(format: &str, n: i64) -> Option<String> {
    static CONVERSION: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"%(0?)(\d*)([dixXo%])").ok());
    let re = CONVERSION.as_ref()?;
    let mut done = false;
    let mut bad = false;
    let out = re.replace_all(format, |c: &regex::Captures| {
        let conv = &c[3];
        if conv == "%" {
            return "%".to_string();
        }
        if done {
            bad = true;
            return String::new();
        }
        done = true;
        let width: usize = c[2].parse().unwrap_or(0);
        let text = match conv {
            "x" => format!("{n:x}"),
            "X" => format!("{n:X}"),
            "o" => format!("{n:o}"),
            _ => n.to_string(),
        };
        if c[1].is_empty() {
            format!("{text:>width$}")
        } else {
            format!("{text:0>width$}")
        }
    });
    (!bad).then(|| out.into_owned())
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
    /// The host's variables with `overlay` on top, as the task was rendered in.
    pub scope: Arc<Scope>,
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
            let list: Vec<Value> = match (value.kind(), task.loop_form) {
                (ValueKind::String, LoopForm::Sequence) => vec![value],
                (ValueKind::Seq | ValueKind::Iterable, _) => {
                    value.try_iter().map_err(|e| e.to_string())?.collect()
                }
                (kind, _) => {
                    return Err(TaskError(format!(
                        "{}:{}: loop: expected a list, got {kind}",
                        task.file, task.line
                    )))
                }
            };
            loop_items(task.loop_form, list)
                .map_err(|e| format!("{}:{}: {e}", task.file, task.line))?
                .into_iter()
                .map(Some)
                .collect()
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
    let become_user = task
        .become_user
        .as_ref()
        .or(play_become_user)
        .map(text)
        .transpose()?;
    let delegate = task.delegate_to.as_ref().map(text).transpose()?;
    Ok(Prepared::Calls(Ready {
        calls,
        env,
        become_user,
        delegate,
        overlay: overlay.clone(),
        scope,
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

#[cfg(test)]
mod loop_tests {
    use super::*;

    fn items(form: LoopForm, json: serde_json::Value) -> Result<String, String> {
        let list: Vec<Value> = template::value_of(json)
            .try_iter()
            .map_err(|e| e.to_string())?
            .collect();
        Ok(serde_json::to_string(&loop_items(form, list)?).unwrap_or_default())
    }

    #[test]
    fn ansibles_with_forms_give_ansibles_items() {
        assert_eq!(
            items(LoopForm::Items, serde_json::json!([[1, 2], 3, [[4]]])).unwrap(),
            "[1,2,3,[4]]"
        );
        assert_eq!(
            items(LoopForm::Nested, serde_json::json!([["a", "b"], [1, 2]])).unwrap(),
            r#"[["a",1],["a",2],["b",1],["b",2]]"#
        );
        assert_eq!(
            items(LoopForm::Together, serde_json::json!([["a", "b"], [1]])).unwrap(),
            r#"[["a",1],["b",null]]"#
        );
        assert_eq!(
            items(
                LoopForm::Subelements,
                serde_json::json!([[{"n": "ann", "keys": ["k1", "k2"]}, {"n": "bob", "keys": []}], "keys"])
            )
            .unwrap(),
            r#"[[{"n":"ann","keys":["k1","k2"]},"k1"],[{"n":"ann","keys":["k1","k2"]},"k2"]]"#
        );
        let missing = serde_json::json!([[{"n": "ann"}], "keys"]);
        assert!(items(LoopForm::Subelements, missing.clone())
            .unwrap_err()
            .contains("no `keys`"));
        let skip = serde_json::json!([[{"n": "ann"}], "keys", {"skip_missing": true}]);
        assert_eq!(items(LoopForm::Subelements, skip).unwrap(), "[]");
    }

    #[test]
    fn with_sequence_counts_as_ansible_does() {
        assert_eq!(
            sequence("start=1 end=3 format=web%02d").unwrap(),
            ["web01", "web02", "web03"]
        );
        assert_eq!(
            sequence("count=3 start=0 stride=2").unwrap(),
            ["0", "2", "4"]
        );
        assert_eq!(sequence("4-8/2:h%d").unwrap(), ["h4", "h6", "h8"]);
        assert_eq!(
            sequence("start=0x0a end=0x0c format=%x").unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(sequence("count=0").unwrap(), Vec::<String>::new());
        assert!(sequence("start=5 end=1").is_err());
        assert!(sequence("end=3 count=2").is_err());
    }
}
