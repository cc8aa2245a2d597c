//! The prober's configuration (`probes/ha.yml`): read with line numbers kept, so that every
//! error names file:line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ProbeError;
use crate::yaml::{self, Kind, Mark, Node};

/// The whole file.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    /// Probe runs in flight at most, over all probes and targets.
    pub concurrency: usize,
    /// How often group targets are resolved again from the inventory.
    pub resolve_every: Duration,
    pub probes: Vec<Probe>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    Http,
    Tcp,
    Postgres,
    Etcd,
    Patroni,
    Write,
    External,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::Http => "http",
            Type::Tcp => "tcp",
            Type::Postgres => "postgres",
            Type::Etcd => "etcd",
            Type::Patroni => "patroni",
            Type::Write => "write",
            Type::External => "external",
        }
    }
}

/// Where a probe goes: a static list, or an inventory group's hosts with a port.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Targets {
    Static(Vec<String>),
    Group(GroupTargets),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupTargets {
    pub group: String,
    pub port: u16,
}

/// One probe as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    name: String,
    #[serde(rename = "type")]
    ptype: Type,
    #[serde(default)]
    interval: Option<Dur>,
    #[serde(default)]
    timeout: Option<Dur>,
    #[serde(default)]
    targets: Option<Targets>,
    #[serde(default)]
    http: Option<HttpOptions>,
    #[serde(default)]
    postgres: Option<PostgresOptions>,
    #[serde(default)]
    patroni: Option<PatroniOptions>,
    #[serde(default)]
    external: Option<ExternalOptions>,
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
pub struct Dur(pub Duration);

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

pub fn parse_duration(s: &str) -> Option<Duration> {
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

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {
    /// For group targets: the URL is `SCHEME://HOST:PORT PATH`.
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Status codes that count as success (default: any 2xx).
    #[serde(default)]
    pub status: Vec<u16>,
    /// A regular expression the body must match.
    #[serde(default)]
    pub body: Option<String>,
    /// HTTPS: fail when the server's certificate expires sooner than this.
    #[serde(default)]
    pub cert_expiry_min: Option<Dur>,
    /// HTTPS: a PEM file of CA certificates trusted besides the system's (an internal CA).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Reuse connections between runs (default: a new connection per run, so the connect is
    /// measured, as blackbox_exporter and cloudprober do).
    #[serde(default)]
    pub keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Any,
    Primary,
    Replica,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PostgresOptions {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A name in the inventory's secret store (`-i`): the password is read from there.
    #[serde(default)]
    pub password_secret: Option<String>,
    #[serde(default)]
    pub dbname: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub expect: Role,
    /// Replicas lagging more bytes than this fail the probe.
    #[serde(default)]
    pub max_lag_bytes: Option<u64>,
    /// `write` probes: the table written to (created when missing).
    #[serde(default)]
    pub table: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PatroniOptions {
    /// The cluster's name in metrics (default: the probe's name).
    #[serde(default)]
    pub cluster: Option<String>,
    /// Replicas lagging more bytes than this fail the probe (default 16 MiB).
    #[serde(default)]
    pub max_lag_bytes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExternalOptions {
    /// The program and its arguments; `{target}` is replaced by the target.
    pub command: Vec<String>,
}

/// One probe, checked and with its defaults filled in.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub ptype: Type,
    pub interval: Duration,
    pub timeout: Duration,
    pub targets: Targets,
    pub http: HttpOptions,
    pub body: Option<regex::Regex>,
    pub postgres: PostgresOptions,
    pub patroni: PatroniOptions,
    pub external: ExternalOptions,
    /// Where the probe is defined, and its targets, for messages.
    pub line: usize,
    pub targets_line: usize,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ProbeError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProbeError::Config {
            file: path.display().to_string(),
            line: 0,
            message: e.to_string(),
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
        let raw: RawConfig = from_node(&root).map_err(|(m, e)| err(m.line, e))?;
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
            let raw: RawProbe =
                from_node(node).map_err(|(m, e)| err(m.line, format!("probes[{i}]: {e}")))?;
            let at = |key: &str| child(node, key).map_or(node.mark.line, |n| n.mark.line);
            if let Some(first) = names.insert(raw.name.clone(), node.mark.line) {
                return Err(err(
                    at("name"),
                    format!(
                        "name: the probe {:?} is defined twice (first at line {first})",
                        raw.name
                    ),
                ));
            }
            if !valid_name(&raw.name) {
                return Err(err(
                    at("name"),
                    format!("name: {:?} must be letters, digits, _ or - ", raw.name),
                ));
            }
            let interval = raw.interval.map_or(Duration::from_secs(10), |d| d.0);
            let timeout = raw
                .timeout
                .map_or(interval.min(Duration::from_secs(5)), |d| d.0);
            if timeout > interval {
                return Err(err(
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
                None if raw.ptype == Type::External => Targets::Static(vec!["local".into()]),
                None => {
                    return Err(err(
                        node.mark.line,
                        format!("probes[{i}] ({}): targets: missing", raw.name),
                    ))
                }
            };
            // The line of the i-th listed target (of the list itself if it is written inline).
            let item = |i: usize| {
                seq(child(node, "targets"))
                    .get(i)
                    .map_or(at("targets"), |n| n.mark.line)
            };
            if let Targets::Static(list) = &targets {
                if list.is_empty() {
                    return Err(err(at("targets"), "targets: the list is empty".into()));
                }
                let mut seen = std::collections::HashSet::new();
                for (i, t) in list.iter().enumerate() {
                    if !seen.insert(t) {
                        return Err(err(item(i), format!("targets[{i}]: {t:?} is listed twice")));
                    }
                    if raw.ptype == Type::Http
                        && !(t.starts_with("http://") || t.starts_with("https://"))
                    {
                        return Err(err(
                            item(i),
                            format!("targets[{i}]: {t:?} is not an http:// or https:// URL"),
                        ));
                    }
                }
            }
            // Options for another probe type are a mistake worth naming.
            for (key, given, wanted) in [
                ("http", raw.http.is_some(), Type::Http),
                ("patroni", raw.patroni.is_some(), Type::Patroni),
                ("external", raw.external.is_some(), Type::External),
            ] {
                if given && raw.ptype != wanted {
                    return Err(err(
                        at(key),
                        format!("{key}: only for probes of type {}", wanted.name()),
                    ));
                }
            }
            if raw.postgres.is_some() && !matches!(raw.ptype, Type::Postgres | Type::Write) {
                return Err(err(
                    at("postgres"),
                    "postgres: only for probes of type postgres or write".into(),
                ));
            }
            let http = raw.http.unwrap_or_default();
            let body = match &http.body {
                Some(b) => Some(regex::Regex::new(b).map_err(|e| {
                    err(
                        child(node, "http")
                            .and_then(|h| child(h, "body"))
                            .map_or(at("http"), |n| n.mark.line),
                        format!("http.body: not a regular expression: {e}"),
                    )
                })?),
                None => None,
            };
            if let Some(m) = &http.method {
                if reqwest::Method::from_bytes(m.as_bytes()).is_err() {
                    return Err(err(
                        at("http"),
                        format!("http.method: {m:?} is not an HTTP method"),
                    ));
                }
            }
            let external = raw.external.unwrap_or_default();
            if raw.ptype == Type::External && external.command.is_empty() {
                return Err(err(
                    node.mark.line,
                    format!("probes[{i}] ({}): external.command: missing", raw.name),
                ));
            }
            probes.push(Probe {
                name: raw.name,
                ptype: raw.ptype,
                interval,
                timeout,
                targets,
                http,
                body,
                postgres: raw.postgres.unwrap_or_default(),
                patroni: raw.patroni.unwrap_or_default(),
                external,
                line: node.mark.line,
                targets_line: at("targets"),
            });
        }
        Ok(Config {
            file: path.to_path_buf(),
            concurrency: raw.concurrency.unwrap_or(256).max(1),
            resolve_every: raw.resolve_every.map_or(Duration::from_secs(60), |d| d.0),
            probes,
        })
    }
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

/// Deserializes a node; an error comes with the mark of the deepest node its path reaches.
fn from_node<T: serde::de::DeserializeOwned>(node: &Node) -> Result<T, (Mark, String)> {
    let json = node.to_json();
    serde_path_to_error::deserialize(json).map_err(|e| {
        let mut at = node;
        let mut keys = Vec::new();
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
