//! Variables as templates see them. Values are rendered lazily, on first use, so a variable may
//! refer to another (`etcd_url: "http://{{ facts.default_ipv4 }}:2379"`), and an undefined name
//! inside a variable nobody uses is no error — as in Ansible.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{Environment, Value};

use super::{render_value, Source, TemplateError};

/// What one host contributes to every scope: its variables (not yet rendered, with where each
/// came from) and its fixed values (facts, magic variables, registered results).
#[derive(Debug, Default, Clone)]
pub struct HostData {
    pub vars: IndexMap<String, (serde_json::Value, Arc<str>, usize)>,
    pub fixed: IndexMap<String, serde_json::Value>,
}

/// Everything a render can reach: the environment, every host's data and the groups.
#[derive(Debug)]
pub struct World {
    pub env: Arc<Environment<'static>>,
    pub hosts: IndexMap<String, Arc<HostData>>,
    pub groups: serde_json::Value,
}

impl World {
    pub fn new(
        env: Arc<Environment<'static>>,
        hosts: IndexMap<String, Arc<HostData>>,
        groups: serde_json::Value,
    ) -> Arc<World> {
        Arc::new(World { env, hosts, groups })
    }

    /// The scope of one host, with `overlay` (registered results, `item`) on top.
    pub fn scope(self: &Arc<Self>, host: &str, overlay: IndexMap<String, Value>) -> Arc<Scope> {
        Arc::new(Scope {
            world: self.clone(),
            host: host.to_string(),
            overlay,
            cache: Mutex::new(HashMap::new()),
            resolving: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
            failed: Mutex::default(),
        })
    }
}

/// The variables of one host for one render.
#[derive(Debug)]
pub struct Scope {
    world: Arc<World>,
    host: String,
    overlay: IndexMap<String, Value>,
    cache: Mutex<HashMap<String, Value>>,
    resolving: Mutex<Vec<String>>,
    /// Why a variable could not be rendered, kept for the message of the render that used it.
    failures: Mutex<Vec<TemplateError>>,
    /// Variables that failed once: not rendered again.
    failed: Mutex<std::collections::HashSet<String>>,
}

impl Scope {
    /// Adds the reason a variable failed, if one was recorded, to an error that used it.
    pub fn explain(&self, mut err: TemplateError) -> TemplateError {
        let failures = std::mem::take(&mut *lock(&self.failures));
        if let Some(first) = failures.into_iter().next() {
            err.message
                .push_str(&format!(" (because {}: {})", first.location, first.message));
        }
        err
    }

    /// This scope as a template context.
    pub fn value(self: &Arc<Self>) -> Value {
        Value::from_dyn_object(self.clone())
    }

    pub fn world(&self) -> &Arc<World> {
        &self.world
    }

    fn data(&self) -> Option<&Arc<HostData>> {
        self.world.hosts.get(&self.host)
    }

    fn resolve(self: &Arc<Self>, name: &str) -> Option<Value> {
        let data = self.data()?;
        let (raw, file, line) = data.vars.get(name)?;
        if lock(&self.failed).contains(name) {
            return None;
        }
        {
            let mut resolving = lock(&self.resolving);
            if resolving.iter().any(|n| n == name) {
                lock(&self.failures).push(TemplateError {
                    location: format!("{file}:{line}"),
                    message: format!("variable `{name}` refers to itself"),
                });
                return None;
            }
            resolving.push(name.to_string());
        }
        let source = Source { file, line: *line };
        let rendered = self.render_json(raw, &source);
        lock(&self.resolving).retain(|n| n != name);
        match rendered {
            Ok(value) => {
                lock(&self.cache).insert(name.to_string(), value.clone());
                Some(value)
            }
            Err(err) => {
                let err = TemplateError {
                    message: format!("in variable `{name}`: {}", err.message),
                    ..err
                };
                lock(&self.failures).push(err);
                lock(&self.failed).insert(name.to_string());
                None
            }
        }
    }

    /// Renders every string inside a JSON value.
    pub fn render_json(
        self: &Arc<Self>,
        raw: &serde_json::Value,
        source: &Source,
    ) -> Result<Value, TemplateError> {
        use serde_json::Value as J;
        Ok(match raw {
            J::String(s) => render_value(&self.world.env, s, &self.value(), source)
                .map_err(|e| self.explain(e))?,
            J::Array(items) => Value::from(
                items
                    .iter()
                    .map(|i| self.render_json(i, source))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            J::Object(map) => {
                let mut out = IndexMap::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.render_json(v, source)?);
                }
                Value::from_pairs(out)
            }
            other => crate::template::value_of(other),
        })
    }
}

impl Object for Scope {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        if let Some(v) = self.overlay.get(name) {
            return Some(v.clone());
        }
        match name {
            "hostvars" => return Some(Value::from_object(HostVars(self.world.clone()))),
            "groups" => return Some(crate::template::value_of(&self.world.groups)),
            _ => {}
        }
        if let Some(v) = self.data()?.fixed.get(name) {
            return Some(crate::template::value_of(v));
        }
        if let Some(v) = lock(&self.cache).get(name) {
            return Some(v.clone());
        }
        self.resolve(name)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<Value> = self
            .overlay
            .keys()
            .map(|k| Value::from(k.as_str()))
            .collect();
        if let Some(data) = self.data() {
            keys.extend(data.fixed.keys().map(|k| Value::from(k.as_str())));
            keys.extend(data.vars.keys().map(|k| Value::from(k.as_str())));
        }
        Enumerator::Iter(Box::new(keys.into_iter()))
    }
}

/// `hostvars`: every host's scope, by inventory name.
#[derive(Debug)]
struct HostVars(Arc<World>);

impl Object for HostVars {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let host = key.as_str()?;
        self.0
            .hosts
            .contains_key(host)
            .then(|| Value::from_dyn_object(self.0.scope(host, IndexMap::new())))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let hosts: Vec<Value> = self
            .0
            .hosts
            .keys()
            .map(|h| Value::from(h.as_str()))
            .collect();
        Enumerator::Iter(Box::new(hosts.into_iter()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
