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

#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub module: &'static modules::Spec,
    /// The arguments as written (a mapping, or a string for free-form modules).
    pub args: serde_json::Value,
    pub args_line: usize,
    pub when: Condition,
    pub notify: Vec<String>,
    pub register: Option<String>,
    pub changed_when: Option<Condition>,
    pub failed_when: Option<Condition>,
    pub tags: Vec<String>,
    pub run_once: bool,
    /// At most this many hosts at a time (rolling restarts).
    pub throttle: Option<usize>,
    pub loop_over: Option<serde_json::Value>,
    pub check_mode: Option<bool>,
    pub ignore_errors: bool,
    pub no_log: bool,
    pub file: Arc<str>,
    pub line: usize,
}

const KEYWORDS: &str = "name, when, notify, register, changed_when, failed_when, tags, run_once, throttle, loop, check_mode, ignore_errors, no_log";

pub fn parse(file: &Arc<str>, node: &Node) -> Result<Task, RoleError> {
    let Kind::Map(entries) = &node.kind else {
        return Err(RoleError::at(
            file,
            node.mark.line,
            format!("a task is a mapping, not {}", node.type_name()),
        ));
    };
    let mut task = Task {
        name: String::new(),
        module: &modules::specs()[0],
        args: serde_json::Value::Null,
        args_line: node.mark.line,
        when: Vec::new(),
        notify: Vec::new(),
        register: None,
        changed_when: None,
        failed_when: None,
        tags: Vec::new(),
        run_once: false,
        throttle: None,
        loop_over: None,
        check_mode: None,
        ignore_errors: false,
        no_log: false,
        file: file.clone(),
        line: node.mark.line,
    };
    let mut module: Option<(&'static modules::Spec, &Node)> = None;
    for (key, value) in entries {
        let line = value.mark.line;
        let at = |message: String| RoleError::at(file, line, message);
        let key_name = key.key_text();
        match key_name.as_str() {
            "name" => {
                task.name =
                    scalar_text(value).ok_or_else(|| at("name: expected a string".into()))?
            }
            "when" => task.when = condition(file, value)?,
            "changed_when" => task.changed_when = Some(condition(file, value)?),
            "failed_when" => task.failed_when = Some(condition(file, value)?),
            "notify" => {
                task.notify = string_list(value)
                    .ok_or_else(|| at("notify: expected a handler name or a list of them".into()))?
            }
            "tags" => {
                task.tags = string_list(value)
                    .ok_or_else(|| at("tags: expected a tag or a list of tags".into()))?
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
            "check_mode" => {
                task.check_mode = Some(
                    boolean(value)
                        .ok_or_else(|| at("check_mode: expected true or false".into()))?,
                )
            }
            "ignore_errors" => {
                task.ignore_errors = boolean(value)
                    .ok_or_else(|| at("ignore_errors: expected true or false".into()))?
            }
            "no_log" => {
                task.no_log =
                    boolean(value).ok_or_else(|| at("no_log: expected true or false".into()))?
            }
            "loop" | "with_items" => match &value.kind {
                Kind::Seq(_) | Kind::Str(_) => task.loop_over = Some(value.to_json()),
                _ => {
                    return Err(at(format!(
                        "{key_name}: expected a list or a \"{{{{ expression }}}}\""
                    )))
                }
            },
            other => {
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
    check_args(file, spec, args)?;
    task.module = spec;
    task.args = args.to_json();
    task.args_line = args.mark.line;
    if task.name.is_empty() {
        task.name = spec.name.to_string();
    }
    Ok(task)
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
