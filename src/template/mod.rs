//! Jinja2 templating for roles: one minijinja environment with Ansible's everyday filters, and
//! the lazy variable scope that task arguments, `when` and template files are rendered in.

mod filters;

pub use filters::{flatten_once, hex};
mod scope;

use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior, Value};

pub use scope::{HostData, Scope, World};

/// A template or expression that failed, with where it came from.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{location}: {message}")]
pub struct TemplateError {
    /// `file:line`.
    pub location: String,
    pub message: String,
}

/// Where a string to render came from: the file, and the line its text starts on.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub file: &'a str,
    pub line: usize,
}

/// The environment shared by every render of a run: Ansible's Jinja2 settings (trim_blocks,
/// trailing newline kept, none written as nothing), strict undefined, and the filters roles use.
pub fn environment(secrets: Option<Arc<crate::secrets::SecretStore>>) -> Arc<Environment<'static>> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .keep_trailing_newline(true)
        .build();
    if let Ok(syntax) = syntax {
        env.set_syntax(syntax);
    }
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    // As Ansible's finalize: `{{ none }}` writes nothing (inside a list it is still None).
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    filters::register(&mut env, secrets);
    Arc::new(env)
}

/// True when a string needs rendering at all.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// Renders one string. A string that is exactly one `{{ expression }}` keeps the expression's
/// type (a list stays a list), as Ansible does; anything else renders to a string.
pub fn render_value(
    env: &Environment<'static>,
    text: &str,
    ctx: &Value,
    source: &Source,
) -> Result<Value, TemplateError> {
    if !is_template(text) {
        return Ok(Value::from(text));
    }
    if let Some(expr) = single_expression(text) {
        let value = eval(env, expr, ctx, source).map_err(|e| e.with_snippet(text))?;
        if value.is_undefined() {
            return Err(TemplateError {
                location: format!("{}:{}", source.file, source.line),
                message: format!("undefined variable in `{}`", text.trim()),
            });
        }
        return Ok(value);
    }
    render_str(env, text, ctx, source).map(Value::from)
}

/// Renders a whole template text to a string.
pub fn render_str(
    env: &Environment<'static>,
    text: &str,
    ctx: &Value,
    source: &Source,
) -> Result<String, TemplateError> {
    let template = env
        .template_from_named_str(source.file, text)
        .map_err(|e| error_at(&e, text, source))?;
    template
        .render(ctx.clone())
        .map_err(|e| error_at(&e, text, source))
}

/// Evaluates a bare expression (`when`, `changed_when`, `loop`).
pub fn eval(
    env: &Environment<'static>,
    expr: &str,
    ctx: &Value,
    source: &Source,
) -> Result<Value, TemplateError> {
    let compiled = env
        .compile_expression(expr)
        .map_err(|e| error_at(&e, expr, source))?;
    compiled
        .eval(ctx.clone())
        .map_err(|e| error_at(&e, expr, source))
}

/// Checks that a template parses, without rendering it.
pub fn check_syntax(
    env: &Environment<'static>,
    text: &str,
    source: &Source,
) -> Result<(), TemplateError> {
    env.template_from_named_str(source.file, text)
        .map(|_| ())
        .map_err(|e| error_at(&e, text, source))
}

/// A string that is one `{{ expression }}` and nothing else: text around it (a newline, a
/// space) makes the result a string, as in Ansible.
fn single_expression(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then_some(inner)
}

fn error_at(err: &minijinja::Error, text: &str, source: &Source) -> TemplateError {
    let line = source.line + err.line().unwrap_or(1).saturating_sub(1);
    let mut message = match err.kind() {
        minijinja::ErrorKind::UndefinedError => "undefined variable".to_string(),
        kind => kind.to_string(),
    };
    if let Some(detail) = err.detail() {
        message.push_str(&format!(": {detail}"));
    }
    if let Some(range) = err.range() {
        if let Some(snippet) = text.get(range).map(str::trim) {
            if !message.contains(&format!("`{snippet}`")) {
                message.push_str(&format!(" in `{snippet}`"));
            }
        }
    }
    let mut cause = std::error::Error::source(err);
    while let Some(inner) = cause {
        message.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    TemplateError {
        location: format!("{}:{line}", source.file),
        message,
    }
}

impl TemplateError {
    fn with_snippet(mut self, text: &str) -> Self {
        if !self.message.contains(" in `") {
            self.message.push_str(&format!(" in `{}`", text.trim()));
        }
        self
    }
}

/// Any serializable value (JSON from YAML, mostly) as a template value.
pub fn value_of<T: serde::Serialize>(value: T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

/// Converts rendered values back to JSON, the shape module arguments are parsed from.
pub fn to_json(value: &Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Value {
        crate::template::value_of(serde_json::json!({"name": "db", "ports": [5432, 8008]}))
    }

    #[test]
    fn a_lone_expression_keeps_its_type() {
        let env = environment(None);
        let src = Source {
            file: "t.yml",
            line: 3,
        };
        let v = render_value(&env, "{{ ports }}", &ctx(), &src).unwrap();
        assert_eq!(to_json(&v), serde_json::json!([5432, 8008]));
        let v = render_value(&env, "x-{{ name }}", &ctx(), &src).unwrap();
        assert_eq!(to_json(&v), serde_json::json!("x-db"));
    }

    #[test]
    fn an_undefined_variable_names_file_line_and_expression() {
        let env = environment(None);
        let src = Source {
            file: "roles/r/templates/a.j2",
            line: 1,
        };
        let err = render_str(&env, "a\nb {{ missing }}\n", &ctx(), &src).unwrap_err();
        assert_eq!(err.location, "roles/r/templates/a.j2:2");
        assert!(err.message.contains("undefined"), "{}", err.message);
        assert!(err.message.contains("missing"), "{}", err.message);
    }
}
