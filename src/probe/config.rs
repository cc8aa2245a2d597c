//! The prober's configuration (`probes/ha.yml`): read with line numbers kept, so that every
//! error names file:line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::kinds::{Mistake, Spec, KINDS};
use super::ProbeError;
use crate::yaml::{self, Kind, Mark, Node};

/// The whole file.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub file: PathBuf,
    /// Probe runs in flight at most, over all probes and targets.
    pub concurrency: usize,
    /// How often group targets are resolved again from the inventory.
    pub resolve_every: Duration,
    pub probes: Vec<Probe>,
}

/// Where a probe goes: a static list, or an inventory group's hosts with a port.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub(crate) enum Targets {
    Static(Vec<String>),
    Group(GroupTargets),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupTargets {
    pub group: String,
    pub port: u16,
}

/// The keys every probe has; each kind adds its options block.
const COMMON_KEYS: [&str; 6] = ["name", "type", "interval", "timeout", "targets", "tls"];

/// One probe as written in the file, but for its kind's options.
#[derive(Debug, Clone, Deserialize)]
struct RawProbe {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    interval: Option<Dur>,
    #[serde(default)]
    timeout: Option<Dur>,
    #[serde(default)]
    targets: Option<Targets>,
    #[serde(default)]
    tls: Option<RawTls>,
}

/// `tls:` of a probe: the CA its targets' certificates must chain to, and the client
/// certificate it shows (etcd, Patroni and PostgreSQL over TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: String,
    cert_file: String,
    key_file: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    resolve_every: Option<Dur>,
    #[serde(default)]
    probes: Vec<serde_json::Value>,
}

/// A duration: `250ms`, `5s`, `2m`, `1h`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let parsed = match &v {
            serde_json::Value::Number(n) => {
                n.as_f64().filter(|s| *s > 0.0).map(Duration::from_secs_f64)
            }
            serde_json::Value::String(s) => parse_duration(s),
            _ => None,
        };
        parsed.map(Dur).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{v} is not a duration (examples: 500ms, 5s, 2m, 1h)"
            ))
        })
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    (secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// One probe, checked and with its defaults filled in.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub name: String,
    /// Its kind, with that kind's options.
    pub spec: Spec,
    pub interval: Duration,
    pub timeout: Duration,
    pub targets: Targets,
    /// The CA and client certificate it connects with, read when the file is loaded.
    pub tls: Option<crate::stack::tls::ClientTls>,
    /// Where the probe is defined, and its targets, for messages.
    pub line: usize,
    pub targets_line: usize,
}

/// Why a kind's options could not be read: the block as written, or a check of the kind.
pub(crate) enum SpecError {
    Syntax(Mark, String),
    Mistake(Mistake),
}

/// A kind's spec from a probe's node: its options block read (serde, with the key's path) and
/// checked.
pub(crate) fn parse_spec<K: super::kinds::Kind>(probe: &Node) -> Result<K::Spec, SpecError> {
    let options = match K::BLOCK.and_then(|key| child(probe, key).map(|n| (key, n))) {
        Some((key, node)) => from_node::<Option<K::Options>>(node, key)
            .map_err(|(mark, message)| SpecError::Syntax(mark, message))?
            .unwrap_or_default(),
        None => K::Options::default(),
    };
    K::check(options).map_err(SpecError::Mistake)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ProbeError> {
        let text = std::fs::read_to_string(path).map_err(|error| ProbeError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ProbeError> {
        let file = path.display().to_string();
        let err = |line: usize, message: String| ProbeError::Config {
            file: file.clone(),
            line,
            message,
        };
        let root = yaml::parse(text).map_err(|e| err(e.mark.line, e.message))?;
        if !matches!(root.kind, Kind::Map(_)) {
            return Err(err(
                root.mark.line,
                format!("the file must be a mapping, not {}", root.type_name()),
            ));
        }
        let raw: RawConfig = from_node(&root, "").map_err(|(m, e)| err(m.line, e))?;
        let probes_node = child(&root, "probes");
        if raw.probes.is_empty() {
            return Err(err(
                probes_node.map_or(root.mark.line, |n| n.mark.line),
                "probes: at least one probe is needed".into(),
            ));
        }
        let mut probes = Vec::new();
        let mut names = BTreeMap::new();
        for (i, node) in seq(probes_node).iter().enumerate() {
            let probe = parse_probe(i, node).map_err(|(line, message)| err(line, message))?;
            if let Some(first) = names.insert(probe.name.clone(), node.mark.line) {
                return Err(err(
                    child(node, "name").map_or(node.mark.line, |n| n.mark.line),
                    format!(
                        "name: the probe {:?} is defined twice (first at line {first})",
                        probe.name
                    ),
                ));
            }
            probes.push(probe);
        }
        Ok(Config {
            file: path.to_path_buf(),
            concurrency: raw.concurrency.unwrap_or(256).max(1),
            resolve_every: raw.resolve_every.map_or(Duration::from_secs(60), |d| d.0),
            probes,
        })
    }
}

/// The `i`-th probe of the file; an error is (line, message).
fn parse_probe(i: usize, node: &Node) -> Result<Probe, (usize, String)> {
    let at = |key: &str| child(node, key).map_or(node.mark.line, |n| n.mark.line);
    check_keys(node).map_err(|(m, e)| (m.line, format!("probes[{i}]: {e}")))?;
    let raw: RawProbe =
        from_node(node, "").map_err(|(m, e)| (m.line, format!("probes[{i}]: {e}")))?;
    if !valid_name(&raw.name) {
        return Err((
            at("name"),
            format!("name: {:?} must be letters, digits, _ or - ", raw.name),
        ));
    }
    // Options for another kind are a mistake worth naming.
    if let Some((_, own)) = KINDS.iter().find(|(name, _)| *name == raw.kind) {
        for key in blocks().into_iter().filter(|key| Some(*key) != *own) {
            if child(node, key).is_some_and(|n| !matches!(n.kind, Kind::Null)) {
                let owners: Vec<&str> = KINDS
                    .iter()
                    .filter(|(_, block)| *block == Some(key))
                    .map(|(name, _)| *name)
                    .collect();
                return Err((
                    at(key),
                    format!("{key}: only for probes of type {}", owners.join(" or ")),
                ));
            }
        }
    }
    let spec = match Spec::parse(&raw.kind, node) {
        Some(Ok(spec)) => spec,
        Some(Err(SpecError::Syntax(mark, message))) => {
            return Err((mark.line, format!("probes[{i}]: {message}")))
        }
        Some(Err(SpecError::Mistake(m))) => {
            // At the key when it is written; a key that is missing is named with the probe.
            return Err(match path(node, &m.key) {
                (n, true) => (n.mark.line, m.to_string()),
                (n, false) => (n.mark.line, format!("probes[{i}] ({}): {m}", raw.name)),
            });
        }
        None => {
            let names: Vec<String> = KINDS.iter().map(|(n, _)| format!("`{n}`")).collect();
            return Err((
                at("type"),
                format!(
                    "probes[{i}]: type: unknown variant `{}`, expected one of {}",
                    raw.kind,
                    names.join(", ")
                ),
            ));
        }
    };
    let interval = raw.interval.map_or(Duration::from_secs(10), |d| d.0);
    let timeout = raw
        .timeout
        .map_or(interval.min(Duration::from_secs(5)), |d| d.0);
    if timeout > interval {
        return Err((
            at("timeout"),
            format!(
                "timeout: {} is longer than the interval ({})",
                secs(timeout),
                secs(interval)
            ),
        ));
    }
    let targets = match raw.targets {
        Some(t) => t,
        None => match spec.default_targets() {
            Some(list) => Targets::Static(list),
            None => {
                return Err((
                    node.mark.line,
                    format!("probes[{i}] ({}): targets: missing", raw.name),
                ))
            }
        },
    };
    if let Targets::Static(list) = &targets {
        // The line of the i-th listed target (of the list itself if it is written inline).
        let item = |i: usize| {
            seq(child(node, "targets"))
                .get(i)
                .map_or(at("targets"), |n| n.mark.line)
        };
        if list.is_empty() {
            return Err((at("targets"), "targets: the list is empty".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in list.iter().enumerate() {
            if !seen.insert(t) {
                return Err((item(i), format!("targets[{i}]: {t:?} is listed twice")));
            }
            if let Err(why) = spec.check_target(t) {
                return Err((item(i), format!("targets[{i}]: {t:?} {why}")));
            }
        }
    }
    let tls = match &raw.tls {
        None => None,
        Some(t) => Some(
            crate::stack::tls::TlsFiles {
                ca: t.ca_file.clone().into(),
                cert: t.cert_file.clone().into(),
                key: t.key_file.clone().into(),
            }
            .load("")
            .map_err(|e| (at("tls"), format!("tls: {e}")))?,
        ),
    };
    Ok(Probe {
        name: raw.name,
        spec,
        interval,
        timeout,
        targets,
        tls,
        line: node.mark.line,
        targets_line: at("targets"),
    })
}

/// Every key of a probe is a common one or some kind's options block.
fn check_keys(node: &Node) -> Result<(), (Mark, String)> {
    let Kind::Map(entries) = &node.kind else {
        return Ok(());
    };
    let mut known: Vec<&str> = COMMON_KEYS.to_vec();
    known.extend(blocks());
    for (k, _) in entries {
        let key = k.key_text();
        if !known.contains(&key.as_str()) {
            // As serde says it for the keys of a struct.
            let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            return Err((
                k.mark,
                format!(
                    "{key}: unknown field `{key}`, expected one of {}",
                    expected.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The kinds' options keys, each once, in the registry's order.
fn blocks() -> Vec<&'static str> {
    let mut keys = Vec::new();
    for key in KINDS.iter().filter_map(|(_, block)| *block) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The node at a dotted path (`http.body`) in a probe, or the deepest one on the way there;
/// true when the whole path is written.
fn path<'a>(probe: &'a Node, dotted: &str) -> (&'a Node, bool) {
    let mut at = probe;
    for key in dotted.split('.') {
        match child(at, key) {
            Some(n) => at = n,
            None => return (at, false),
        }
    }
    (at, true)
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn child<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    match &node.kind {
        Kind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.key_text() == key)
            .map(|(_, v)| v),
        _ => None,
    }
}

fn seq(node: Option<&Node>) -> &[Node] {
    match node.map(|n| &n.kind) {
        Some(Kind::Seq(items)) => items,
        _ => &[],
    }
}

/// Deserializes a node found at `base` (a key, or "" for the file or a probe); an error names
/// the key's path and comes with the mark of the deepest node that path reaches.
fn from_node<T: serde::de::DeserializeOwned>(node: &Node, base: &str) -> Result<T, (Mark, String)> {
    let json = node.to_json();
    serde_path_to_error::deserialize(json).map_err(|e| {
        let mut at = node;
        let mut keys: Vec<String> = Some(base.to_string())
            .filter(|b| !b.is_empty())
            .into_iter()
            .collect();
        for seg in e.path().iter() {
            use serde_path_to_error::Segment;
            let next = match seg {
                Segment::Map { key } => {
                    keys.push(key.clone());
                    match &at.kind {
                        Kind::Map(entries) => entries
                            .iter()
                            .find(|(k, _)| k.key_text() == *key)
                            .map(|(k, v)| if matches!(v.kind, Kind::Null) { k } else { v }),
                        _ => None,
                    }
                }
                Segment::Seq { index } => {
                    keys.push(format!("[{index}]"));
                    match &at.kind {
                        Kind::Seq(items) => items.get(*index),
                        _ => None,
                    }
                }
                _ => None,
            };
            match next {
                Some(n) => at = n,
                None => break,
            }
        }
        let path = keys.join(".").replace(".[", "[");
        let message = e.into_inner().to_string();
        let message = if path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        };
        // An unknown key: point at the key itself.
        let mark = unknown_key_mark(at, &message).unwrap_or(at.mark);
        (mark, message)
    })
}

fn unknown_key_mark(node: &Node, message: &str) -> Option<Mark> {
    let field = message.split("unknown field `").nth(1)?.split('`').next()?;
    match &node.kind {
        Kind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.key_text() == field)
            .map(|(k, _)| k.mark),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `text` as the file `probes.yml`.
    pub(crate) fn parse(text: &str) -> Result<Config, ProbeError> {
        Config::parse(Path::new("probes.yml"), text)
    }

    /// The one probe of `text`.
    pub(crate) fn probe(text: &str) -> Probe {
        let mut config = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.probes.len(), 1, "{text}");
        config.probes.remove(0)
    }

    /// The error `text` makes, as the user reads it (`probes.yml:LINE: message`).
    pub(crate) fn error(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("no error in:\n{text}\n{c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Asserts the error of each `(lines, error)` case written after `head`.
    #[track_caller]
    pub(crate) fn assert_errors(head: &str, cases: &[(&str, &str)]) {
        for (lines, want) in cases {
            let text = format!("{head}{lines}");
            assert_eq!(error(&text), *want, "\n{text}");
        }
    }

    #[test]
    fn defaults_fill_in_what_is_not_written() {
        let config = parse("probes:\n  - {name: a, type: tcp, targets: [\"h:1\"]}\n").unwrap();
        assert_eq!(config.concurrency, 256);
        assert_eq!(config.resolve_every, Duration::from_secs(60));
        let p = &config.probes[0];
        assert_eq!((p.name.as_str(), p.line, p.targets_line), ("a", 2, 2));
        assert_eq!(p.interval, Duration::from_secs(10));
        assert_eq!(p.timeout, Duration::from_secs(5));
        assert_eq!(p.targets, Targets::Static(vec!["h:1".into()]));
        let p = probe("probes:\n  - {name: a, type: tcp, interval: 2s, targets: [\"h:1\"]}\n");
        assert_eq!(p.timeout, Duration::from_secs(2), "the interval bounds it");
    }

    #[test]
    fn durations_take_units_or_seconds() {
        let p = probe(
            "probes:\n  - {name: a, type: tcp, interval: 1.5, timeout: 250ms, targets: [\"h:1\"]}\n",
        );
        assert_eq!(p.interval, Duration::from_millis(1500));
        assert_eq!(p.timeout, Duration::from_millis(250));
        for (text, secs) in [
            ("2m", 120.0),
            ("1h", 3600.0),
            ("1d", 86400.0),
            (" 5s ", 5.0),
        ] {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_secs_f64(secs)),
                "{text}"
            );
        }
        for text in ["1x", "s", "0s", "-1s", ""] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }

    #[test]
    fn group_targets_are_a_group_and_a_port() {
        let p =
            probe("probes:\n  - name: a\n    type: tcp\n    targets: {group: etcd, port: 2379}\n");
        assert_eq!(
            p.targets,
            Targets::Group(GroupTargets {
                group: "etcd".into(),
                port: 2379
            })
        );
        assert_eq!(p.targets_line, 4);
    }

    #[test]
    fn mistakes_in_the_common_keys_name_line_and_key() {
        let cases = [
            (
                "probes:\n  - name: a\n    type: tcp\n    intervall: 1s\n",
                "probes.yml:4: probes[0]: intervall: unknown field `intervall`, expected one of `name`, `type`, `interval`, `timeout`, `targets`, `tls`, `http`, `postgres`, `patroni`, `endpoint`, `backup`, `external`",
            ),
            (
                "probes:\n  - name: a\n    type: tcp\n    interval: 1x\n    targets: [\"h:1\"]\n",
                "probes.yml:4: probes[0]: interval: \"1x\" is not a duration (examples: 500ms, 5s, 2m, 1h)",
            ),
            (
                "probes:\n  - name: a\n    type: tcp\n    interval: 1s\n    timeout: 2s\n    targets: [\"h:1\"]\n",
                "probes.yml:5: timeout: 2 s is longer than the interval (1 s)",
            ),
            (
                "probes:\n  - {name: a, type: tcp, targets: [\"h:1\"]}\n  - {name: a, type: tcp, targets: [\"h:2\"]}\n",
                "probes.yml:3: name: the probe \"a\" is defined twice (first at line 2)",
            ),
            (
                "probes:\n  - name: \"a b\"\n    type: tcp\n",
                "probes.yml:2: name: \"a b\" must be letters, digits, _ or - ",
            ),
            (
                "probes:\n  - name: a\n    type: icmp\n",
                "probes.yml:3: probes[0]: type: unknown variant `icmp`, expected one of `http`, `tcp`, `postgres`, `etcd`, `patroni`, `write`, `endpoint`, `backup`, `external`",
            ),
            (
                "probes:\n  - name: a\n    targets: [\"h:1\"]\n",
                "probes.yml:2: probes[0]: missing field `type`",
            ),
            (
                "probes:\n  - name: a\n    type: tcp\n",
                "probes.yml:2: probes[0] (a): targets: missing",
            ),
            (
                "probes:\n  - name: a\n    type: tcp\n    targets: []\n",
                "probes.yml:4: targets: the list is empty",
            ),
            (
                "probes:\n  - name: a\n    type: tcp\n    targets:\n      - h:1\n      - h:1\n",
                "probes.yml:6: targets[1]: \"h:1\" is listed twice",
            ),
            (
                "probes:\n  - name: a\n    type: tcp\n    targets: {group: g, port: 1, x: 2}\n",
                "probes.yml:4: probes[0]: targets: data did not match any variant of untagged enum Targets",
            ),
            ("concurrency: 3\n", "probes.yml:1: probes: at least one probe is needed"),
            ("- a\n", "probes.yml:1: the file must be a mapping, not a list"),
        ];
        for (text, want) in cases {
            assert_eq!(error(text), want, "\n{text}");
        }
    }

    #[test]
    fn an_options_block_of_another_kind_is_named() {
        let head = "probes:\n  - name: a\n    type: tcp\n    targets: [\"h:1\"]\n";
        assert_errors(
            head,
            &[
                (
                    "    http: {status: [200]}\n",
                    "probes.yml:5: http: only for probes of type http",
                ),
                (
                    "    postgres: {user: x}\n",
                    "probes.yml:5: postgres: only for probes of type postgres or write",
                ),
                (
                    "    patroni: {max_lag_bytes: 1}\n",
                    "probes.yml:5: patroni: only for probes of type patroni",
                ),
                (
                    "    endpoint: {rw_port: 1}\n",
                    "probes.yml:5: endpoint: only for probes of type endpoint",
                ),
                (
                    "    external: {command: [x]}\n",
                    "probes.yml:5: external: only for probes of type external",
                ),
            ],
        );
        // An empty block is no options.
        probe("probes:\n  - name: a\n    type: tcp\n    targets: [\"h:1\"]\n    http:\n");
    }
}
