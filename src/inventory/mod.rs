//! Ansible's YAML inventory format: hosts, nested groups, inline vars, group_vars/ and
//! host_vars/ beside the file, merged with Ansible's precedence.

mod error;
mod load;
mod output;
mod vars;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;

pub use error::InventoryError;
pub use output::{graph, list_json, list_text};
pub use vars::{masked, secret_values, Origin, Var, Vars};

/// The group every host and group belongs to.
pub const ALL: &str = "all";
/// Hosts that are in no group but `all`.
pub const UNGROUPED: &str = "ungrouped";

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub children: Vec<String>,
    pub parents: Vec<String>,
    pub hosts: Vec<String>,
    /// `vars:` written in the inventory file.
    pub inline_vars: Vars,
    /// `group_vars/<name>` beside the inventory.
    pub file_vars: Vars,
    /// Longest path from `all`, as Ansible counts it to order groups.
    pub depth: usize,
    /// `ansible_group_priority` from the inventory file: not a variable, and (as in Ansible)
    /// not read from group_vars/.
    priority: i64,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// Groups that list the host directly.
    pub groups: Vec<String>,
    /// Vars given where the host is listed, merged in file order.
    pub inline_vars: Vars,
    /// `host_vars/<name>` beside the inventory.
    pub file_vars: Vars,
}

#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    pub groups: IndexMap<String, Group>,
    pub hosts: IndexMap<String, Host>,
}

/// How to reach a host, from its merged vars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub address: String,
    pub port: u16,
    pub user: String,
    pub private_key_file: Option<PathBuf>,
    pub become_root: bool,
    /// `ansible_become_password` (or `ansible_become_pass`), for sudo that asks.
    pub become_password: Option<String>,
}

impl Inventory {
    /// Reads an inventory file and the group_vars/ and host_vars/ beside it.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        load::load(path)
    }

    /// A variable of group `all` (its `vars:` in the inventory file, else group_vars/all): where
    /// hactl reads the settings of its own state beside the inventory (secret store, PKI).
    pub fn all_var(&self, name: &str) -> Option<&serde_json::Value> {
        let all = self.groups.get("all")?;
        all.inline_vars
            .get(name)
            .or(all.file_vars.get(name))
            .map(|v| &v.value)
    }

    /// The hosts of a group (its children's included), in inventory order.
    pub fn hosts_in(&self, group: &str) -> Vec<String> {
        self.hosts
            .keys()
            .filter(|h| self.groups_of(h).iter().any(|g| g == group))
            .cloned()
            .collect()
    }

    /// Every group the host belongs to, directly or through `children`, `all` included.
    pub fn groups_of(&self, host: &str) -> Vec<String> {
        let mut seen: Vec<String> = vec![];
        let mut todo: Vec<String> = self
            .hosts
            .get(host)
            .map(|h| h.groups.clone())
            .unwrap_or_default();
        while let Some(name) = todo.pop() {
            if seen.contains(&name) {
                continue;
            }
            if let Some(group) = self.groups.get(&name) {
                todo.extend(group.parents.iter().cloned());
            }
            seen.push(name);
        }
        if !seen.iter().any(|g| g == ALL) {
            seen.push(ALL.to_string());
        }
        seen
    }

    /// The host's vars with Ansible's precedence: `all` inline vars < other groups' inline
    /// vars < group_vars/all < group_vars/<group> < inline host vars < host_vars/<host>;
    /// groups ordered by depth, then `ansible_group_priority`, then name.
    pub fn host_vars(&self, host: &str) -> Vars {
        let mut merged = Vars::new();
        let Some(h) = self.hosts.get(host) else {
            return merged;
        };
        let mut groups: Vec<&Group> = self
            .groups_of(host)
            .iter()
            .filter(|g| g.as_str() != ALL)
            .filter_map(|g| self.groups.get(g))
            .collect();
        groups.sort_by(|a, b| {
            (a.depth, a.priority(), &a.name).cmp(&(b.depth, b.priority(), &b.name))
        });
        let all = self.groups.get(ALL);
        let layers = all
            .map(|g| &g.inline_vars)
            .into_iter()
            .chain(groups.iter().map(|g| &g.inline_vars))
            .chain(all.map(|g| &g.file_vars))
            .chain(groups.iter().map(|g| &g.file_vars))
            .chain([&h.inline_vars, &h.file_vars]);
        for layer in layers {
            for (k, v) in layer {
                merged.insert(k.clone(), v.clone());
            }
        }
        merged
    }

    /// Connection settings from the host's merged vars.
    pub fn connection(&self, host: &str) -> Result<Connection, InventoryError> {
        let vars = self.host_vars(host);
        let text = |key: &str| -> Result<Option<String>, InventoryError> {
            match vars.get(key) {
                None => Ok(None),
                Some(var) => match &var.value {
                    serde_json::Value::String(s) => Ok(Some(s.clone())),
                    serde_json::Value::Number(n) => Ok(Some(n.to_string())),
                    other => Err(var.origin.error(format!(
                        "{key} of host \"{host}\" must be a string, not {other}"
                    ))),
                },
            }
        };
        let port = match vars.get("ansible_port") {
            None => 22,
            Some(var) => var
                .value
                .as_u64()
                .or_else(|| var.value.as_str().and_then(|s| s.parse().ok()))
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    var.origin.error(format!(
                        "ansible_port of host \"{host}\" must be a port number (1-65535), not {}",
                        var.value
                    ))
                })?,
        };
        let become_root = match vars.get("ansible_become") {
            None => false,
            Some(var) => var.value.as_bool().ok_or_else(|| {
                var.origin.error(format!(
                    "ansible_become of host \"{host}\" must be true or false, not {}",
                    var.value
                ))
            })?,
        };
        Ok(Connection {
            address: text("ansible_host")?.unwrap_or_else(|| host.to_string()),
            port,
            user: text("ansible_user")?.unwrap_or_else(|| "root".to_string()),
            private_key_file: text("ansible_ssh_private_key_file")?.map(PathBuf::from),
            become_root,
            become_password: match text("ansible_become_password")? {
                Some(p) => Some(p),
                None => text("ansible_become_pass")?,
            },
        })
    }
}

impl Group {
    fn new(name: &str) -> Group {
        Group {
            name: name.to_string(),
            children: vec![],
            parents: vec![],
            hosts: vec![],
            inline_vars: Vars::new(),
            file_vars: Vars::new(),
            depth: 0,
            priority: 1,
        }
    }

    /// `ansible_group_priority` as set in the inventory file, 1 unless set. Ansible ignores it
    /// in group_vars/ (there it is an ordinary variable), as those are loaded in this order.
    pub fn priority(&self) -> i64 {
        self.priority
    }
}
