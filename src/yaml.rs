//! YAML as PyYAML (and so Ansible) reads it, with the line and column of every node kept,
//! so that errors in inventories, roles and probe configs can point at the offending key.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a source file, both 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<Marker> for Mark {
    fn from(m: Marker) -> Self {
        Mark {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub mark: Mark,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// An Ansible Vault ciphertext (`!vault |`): kept opaque and never printed.
    Vault(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A YAML document that could not be read: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub mark: Mark,
    pub message: String,
}

impl Node {
    /// What a user would call this node in an error message.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) | Kind::Vault(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The key as text, for mappings whose keys are names (PyYAML would also accept `1:`).
    pub fn key_text(&self) -> String {
        match &self.kind {
            Kind::Str(s) | Kind::Vault(s) => s.clone(),
            Kind::Null => String::new(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::Float(x) => x.to_string(),
            Kind::Seq(_) | Kind::Map(_) => format!("<{}>", self.type_name()),
        }
    }

    /// Converts to JSON; a vault value becomes `{"__ansible_vault": ...}` as ansible-inventory shows it.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(x) => serde_json::Number::from_f64(*x)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(x.to_string())),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Vault(s) => serde_json::json!({ "__ansible_vault": s }),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Parses the first document of `text`; an empty file is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        mark: (*e.marker()).into(),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        mark: Mark { line: 1, col: 1 },
        kind: Kind::Null,
    }))
}

enum Frame {
    Seq(Mark, usize, Vec<Node>),
    Map(Mark, usize, Vec<(Node, Node)>, Option<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<SyntaxError>,
}

impl Builder {
    fn fail(&mut self, mark: Mark, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError { mark, message });
        }
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    let duplicate = matches!(key.kind, Kind::Str(_))
                        && entries.iter().any(|(k, _)| k.kind == key.kind);
                    if duplicate {
                        let message = format!("duplicate key \"{}\"", key.key_text());
                        let mark = key.mark;
                        self.fail(mark, message);
                    } else {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, marker: Marker) {
        let mark = Mark::from(marker);
        match ev {
            Event::Scalar(value, style, anchor, tag) => {
                let kind = resolve_scalar(value, style, tag.as_ref());
                self.finish(Node { mark, kind }, anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.mark = mark;
                    self.finish(node, 0);
                }
                None => self.fail(mark, "alias to an unknown anchor".into()),
            },
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(mark, anchor, vec![])),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(mark, anchor, vec![], None))
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(start, anchor, items)) = self.stack.pop() {
                    self.finish(
                        Node {
                            mark: start,
                            kind: Kind::Seq(items),
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(start, anchor, entries, _)) = self.stack.pop() {
                    let entries = apply_merge_keys(entries);
                    self.finish(
                        Node {
                            mark: start,
                            kind: Kind::Map(entries),
                        },
                        anchor,
                    );
                }
            }
            _ => {}
        }
    }
}

/// YAML 1.1 merge keys (`<<: *defaults`), as PyYAML applies them: explicit keys win.
fn apply_merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return entries;
    }
    let mut own: Vec<(Node, Node)> = vec![];
    let mut merged: Vec<(Node, Node)> = vec![];
    for (key, value) in entries {
        if !is_merge_key(&key) {
            own.push((key, value));
            continue;
        }
        let sources = match value.kind {
            Kind::Map(m) => vec![m],
            Kind::Seq(items) => items
                .into_iter()
                .filter_map(|n| match n.kind {
                    Kind::Map(m) => Some(m),
                    _ => None,
                })
                .collect(),
            _ => vec![],
        };
        for source in sources {
            for (k, v) in source {
                if !merged.iter().any(|(m, _)| m.kind == k.kind) {
                    merged.push((k, v));
                }
            }
        }
    }
    merged.retain(|(k, _)| !own.iter().any(|(o, _)| o.kind == k.kind));
    merged.extend(own);
    merged
}

fn is_merge_key(node: &Node) -> bool {
    matches!(&node.kind, Kind::Str(s) if s == "<<")
}

/// Resolves a scalar with PyYAML's YAML 1.1 rules, which is what Ansible uses.
fn resolve_scalar(value: String, style: TScalarStyle, tag: Option<&Tag>) -> Kind {
    if let Some(tag) = tag {
        match (tag.handle.as_str(), tag.suffix.as_str()) {
            ("!", "vault") => return Kind::Vault(value),
            ("!", "unsafe") | ("!!", "str") => return Kind::Str(value),
            _ => {}
        }
    }
    if style != TScalarStyle::Plain {
        return Kind::Str(value);
    }
    match value.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Kind::Bool(true)
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Kind::Bool(false)
        }
        _ => {}
    }
    if let Some(i) = parse_int(&value) {
        return Kind::Int(i);
    }
    if let Some(x) = parse_float(&value) {
        return Kind::Float(x);
    }
    Kind::Str(value)
}

fn parse_int(s: &str) -> Option<i64> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let digits: String = body.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || !digits.chars().next()?.is_ascii_digit() {
        return None;
    }
    let magnitude = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = digits.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else if digits.chars().all(|c| c.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -magnitude } else { magnitude })
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // PyYAML 1.1: `[-+]?[0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)?` or `\.[0-9_]+([eE][-+][0-9]+)?`.
    // A float needs a dot and an exponent needs a sign: `1e3`, `1.5e3` and `-.5` stay strings.
    let digits = |t: &str| t.chars().all(|c| c.is_ascii_digit() || c == '_');
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if let Some(exponent) = exponent {
        let power = exponent.strip_prefix(['-', '+'])?;
        if power.is_empty() || !power.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    let (whole, fraction) = mantissa.split_once('.')?;
    let ok = if whole.is_empty() {
        !fraction.is_empty() && digits(fraction)
    } else {
        let whole = whole.strip_prefix(['-', '+']).unwrap_or(whole);
        whole.starts_with(|c: char| c.is_ascii_digit()) && digits(whole) && digits(fraction)
    };
    if !ok {
        return None;
    }
    s.replace('_', "").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Kind {
        parse(text).expect("valid yaml").kind
    }

    #[test]
    fn scalars_resolve_as_pyyaml_does() {
        assert_eq!(kind("yes"), Kind::Bool(true));
        assert_eq!(kind("Off"), Kind::Bool(false));
        assert_eq!(kind("'yes'"), Kind::Str("yes".into()));
        assert_eq!(kind("0755"), Kind::Int(0o755));
        assert_eq!(kind("0x1F"), Kind::Int(31));
        assert_eq!(kind("-12"), Kind::Int(-12));
        assert_eq!(kind("1_000"), Kind::Int(1000));
        assert_eq!(kind("1.5"), Kind::Float(1.5));
        assert_eq!(kind("1e3"), Kind::Str("1e3".into()));
        assert_eq!(kind("1.5e3"), Kind::Str("1.5e3".into()));
        assert_eq!(kind("1.5e+3"), Kind::Float(1500.0));
        assert_eq!(kind("-.5"), Kind::Str("-.5".into()));
        assert_eq!(kind(".5"), Kind::Float(0.5));
        assert_eq!(kind("-1_0.5"), Kind::Float(-10.5));
        assert_eq!(kind("1."), Kind::Float(1.0));
        assert_eq!(kind("~"), Kind::Null);
        assert_eq!(kind("15"), Kind::Int(15));
        assert_eq!(kind("10.0.0.1"), Kind::Str("10.0.0.1".into()));
        assert_eq!(
            kind("!vault |\n  $ANSIBLE\n"),
            Kind::Vault("$ANSIBLE\n".into())
        );
    }

    #[test]
    fn marks_are_one_based_line_and_column() {
        let node = parse("a:\n  bb: 1\n").expect("valid yaml");
        let Kind::Map(outer) = node.kind else {
            panic!("not a map")
        };
        let Kind::Map(inner) = &outer[0].1.kind else {
            panic!("not a map")
        };
        assert_eq!(outer[0].0.mark, Mark { line: 1, col: 1 });
        assert_eq!(inner[0].0.mark, Mark { line: 2, col: 3 });
        assert_eq!(inner[0].1.mark, Mark { line: 2, col: 7 });
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").expect_err("invalid yaml");
        assert!(err.mark.line >= 1, "{err:?}");
    }

    #[test]
    fn duplicate_key_is_an_error_at_the_second_key() {
        let err = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(err.mark, Mark { line: 3, col: 1 });
        assert!(err.message.contains("duplicate key \"a\""));
    }

    #[test]
    fn merge_keys_and_aliases_work() {
        let node = parse("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n").expect("valid");
        let json = node.to_json();
        assert_eq!(json["derived"], serde_json::json!({"x": 1, "y": 3}));
    }
}
