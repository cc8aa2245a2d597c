use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;

use super::{Group, Host, Inventory, InventoryError, Origin, Var, Vars, ALL, UNGROUPED};
use crate::yaml::{self, Kind, Node};

const GROUP_KEYS: [&str; 3] = ["hosts", "children", "vars"];
/// What Ansible's host_group_vars plugin accepts, in the order it loads them.
const VARS_EXTENSIONS: [&str; 4] = ["", ".yml", ".yaml", ".json"];

pub(super) fn load(path: &Path) -> Result<Inventory, InventoryError> {
    let file = Arc::new(path.to_path_buf());
    let root = read_yaml(&file)?;
    let mut loader = Loader {
        file: file.clone(),
        inventory: Inventory {
            path: path.to_path_buf(),
            groups: IndexMap::new(),
            hosts: IndexMap::new(),
        },
        addresses: HashMap::new(),
    };
    loader.group_entry(ALL);
    loader.group_entry(UNGROUPED);
    match &root.kind {
        Kind::Map(entries) => {
            for (key, value) in entries {
                let name = loader.name(key, "group")?;
                loader.parse_group(&name, key, value, &[])?;
            }
        }
        Kind::Null => {
            return Err(at(
                &file,
                &root,
                "the inventory is empty — start it with `all:` and list hosts under `hosts:`",
            ))
        }
        _ => {
            return Err(at(
                &file,
                &root,
                format!(
                    "an inventory must be a mapping of group names (usually `all:`), not {}",
                    root.type_name()
                ),
            ))
        }
    }
    let mut inventory = loader.inventory;
    reconcile(&mut inventory);
    load_vars_files(&mut inventory)?;
    Ok(inventory)
}

struct Loader {
    file: Arc<PathBuf>,
    inventory: Inventory,
    /// ansible_host of each host and where it was given.
    addresses: HashMap<String, (serde_json::Value, Origin)>,
}

impl Loader {
    fn origin(&self, node: &Node) -> Origin {
        Origin {
            path: self.file.clone(),
            mark: node.mark,
        }
    }

    fn name(&self, key: &Node, what: &str) -> Result<String, InventoryError> {
        match &key.kind {
            Kind::Str(s) if !s.trim().is_empty() => Ok(s.clone()),
            Kind::Int(_) | Kind::Float(_) => Ok(key.key_text()),
            _ => Err(at(
                &self.file,
                key,
                format!("a {what} name must be text, not {}", key.type_name()),
            )),
        }
    }

    fn group_entry(&mut self, name: &str) -> &mut Group {
        self.inventory
            .groups
            .entry(name.to_string())
            .or_insert_with(|| Group::new(name))
    }

    fn parse_group(
        &mut self,
        name: &str,
        key: &Node,
        body: &Node,
        ancestors: &[String],
    ) -> Result<(), InventoryError> {
        if ancestors.iter().any(|a| a == name) {
            let chain = [ancestors, &[name.to_string()]].concat().join(" -> ");
            return Err(at(
                &self.file,
                key,
                format!("group \"{name}\" includes itself through children ({chain}) — remove it from its own children"),
            ));
        }
        self.group_entry(name);
        let entries = match &body.kind {
            Kind::Null => return Ok(()),
            Kind::Map(entries) => entries,
            _ => {
                return Err(at(
                    &self.file,
                    body,
                    format!(
                    "group \"{name}\" must be a mapping with hosts:, children: or vars:, not {}",
                    body.type_name()
                ),
                ))
            }
        };
        for (section, value) in entries {
            let section_name = section.key_text();
            if !GROUP_KEYS.contains(&section_name.as_str()) {
                return Err(at(
                    &self.file,
                    section,
                    format!(
                        "unknown key \"{section_name}\" in group \"{name}\" — a group holds only hosts:, children: and vars:"
                    ),
                ));
            }
            let items: Vec<(Node, Node)> = match &value.kind {
                Kind::Null => vec![],
                Kind::Map(items) => items.clone(),
                // Ansible reads `hosts: web1` as a single host without vars.
                Kind::Str(_) if section_name != "vars" => vec![(
                    value.clone(),
                    Node {
                        mark: value.mark,
                        kind: Kind::Null,
                    },
                )],
                _ => {
                    return Err(at(
                        &self.file,
                        value,
                        format!(
                            "{section_name}: of group \"{name}\" must be a mapping, not {}",
                            value.type_name()
                        ),
                    ))
                }
            };
            match section_name.as_str() {
                "vars" => {
                    for (k, v) in &items {
                        let var = self.name(k, "variable")?;
                        if var == "ansible_group_priority" {
                            // Ansible makes it the group's priority, not a variable.
                            let priority = match &v.kind {
                                Kind::Int(i) => Some(*i),
                                Kind::Str(s) => s.trim().parse().ok(),
                                _ => None,
                            }
                            .ok_or_else(|| {
                                let why = format!(
                                    "ansible_group_priority of group \"{name}\" must be an integer, not {}",
                                    v.type_name()
                                );
                                at(&self.file, v, why)
                            })?;
                            self.group_entry(name).priority = priority;
                            continue;
                        }
                        let value = Var {
                            value: v.to_json(),
                            origin: self.origin(k),
                        };
                        self.group_entry(name).inline_vars.insert(var, value);
                    }
                }
                "children" => {
                    let lineage = [ancestors, &[name.to_string()]].concat();
                    for (k, v) in &items {
                        let child = self.name(k, "group")?;
                        self.parse_group(&child, k, v, &lineage)?;
                        self.add_child(name, &child, k)?;
                    }
                }
                _ => {
                    for (k, v) in &items {
                        let pattern = self.name(k, "host")?;
                        let names = expand_host_pattern(&pattern).map_err(|why| {
                            at(&self.file, k, format!("host pattern \"{pattern}\": {why}"))
                        })?;
                        for host in names {
                            self.add_host(name, &host, v)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn add_child(&mut self, parent: &str, child: &str, key: &Node) -> Result<(), InventoryError> {
        if parent == child || self.is_descendant(parent, child) {
            return Err(at(
                &self.file,
                key,
                format!("group \"{child}\" includes itself through children (it is already an ancestor of \"{parent}\") — remove one of the two links"),
            ));
        }
        if child == ALL {
            return Err(at(
                &self.file,
                key,
                "group \"all\" cannot be a child of another group",
            ));
        }
        let p = self.group_entry(parent);
        if !p.children.iter().any(|c| c == child) {
            p.children.push(child.to_string());
        }
        let c = self.group_entry(child);
        if !c.parents.iter().any(|p| p == parent) {
            c.parents.push(parent.to_string());
        }
        Ok(())
    }

    /// Whether `group` can be reached from `from` through children.
    fn is_descendant(&self, group: &str, from: &str) -> bool {
        let mut todo = vec![from.to_string()];
        let mut seen = vec![];
        while let Some(g) = todo.pop() {
            if g == group {
                return true;
            }
            if seen.contains(&g) {
                continue;
            }
            if let Some(entry) = self.inventory.groups.get(&g) {
                todo.extend(entry.children.iter().cloned());
            }
            seen.push(g);
        }
        false
    }

    fn add_host(&mut self, group: &str, host: &str, body: &Node) -> Result<(), InventoryError> {
        let vars = match &body.kind {
            Kind::Null => &[],
            Kind::Map(entries) => entries.as_slice(),
            _ => {
                return Err(at(
                    &self.file,
                    body,
                    format!(
                        "host \"{host}\" must be followed by a mapping of its vars, not {}",
                        body.type_name()
                    ),
                ))
            }
        };
        let entry = self
            .inventory
            .hosts
            .entry(host.to_string())
            .or_insert_with(|| Host {
                name: host.to_string(),
                groups: vec![],
                inline_vars: Vars::new(),
                file_vars: Vars::new(),
            });
        if !entry.groups.iter().any(|g| g == group) {
            entry.groups.push(group.to_string());
        }
        let g = self.group_entry(group);
        if !g.hosts.iter().any(|h| h == host) {
            g.hosts.push(host.to_string());
        }
        for (k, v) in vars {
            let name = self.name(k, "variable")?;
            let var = Var {
                value: v.to_json(),
                origin: self.origin(k),
            };
            if name == "ansible_host" {
                self.check_address(host, &var)?;
            }
            if let Some(h) = self.inventory.hosts.get_mut(host) {
                h.inline_vars.insert(name, var);
            }
        }
        Ok(())
    }

    fn check_address(&mut self, host: &str, var: &Var) -> Result<(), InventoryError> {
        match self.addresses.get(host) {
            Some((first, origin)) if *first != var.value => Err(var.origin.error(format!(
                "host \"{host}\" is given two addresses: {} here and {} at {}:{} — a host has one ansible_host; rename one of them if they are two machines",
                var.value,
                first,
                origin.path.display(),
                origin.mark
            ))),
            Some(_) => Ok(()),
            None => {
                self.addresses
                    .insert(host.to_string(), (var.value.clone(), var.origin.clone()));
                Ok(())
            }
        }
    }
}

/// What Ansible does after reading: top-level groups become children of `all`, hosts in no
/// group but `all` go to `ungrouped`, and every group gets its depth.
fn reconcile(inventory: &mut Inventory) {
    let orphans: Vec<String> = inventory
        .groups
        .values()
        .filter(|g| g.name != ALL && g.parents.is_empty())
        .map(|g| g.name.clone())
        .collect();
    for name in orphans {
        if let Some(all) = inventory.groups.get_mut(ALL) {
            all.children.push(name.clone());
        }
        if let Some(g) = inventory.groups.get_mut(&name) {
            g.parents.push(ALL.to_string());
        }
    }
    let lonely: Vec<String> = inventory
        .hosts
        .values()
        .filter(|h| h.groups.iter().all(|g| g == ALL))
        .map(|h| h.name.clone())
        .collect();
    for host in lonely {
        if let Some(h) = inventory.hosts.get_mut(&host) {
            h.groups.push(UNGROUPED.to_string());
        }
        if let Some(g) = inventory.groups.get_mut(UNGROUPED) {
            g.hosts.push(host);
        }
    }
    let names: Vec<String> = inventory.groups.keys().cloned().collect();
    for name in names {
        let depth = depth_of(inventory, &name);
        if let Some(g) = inventory.groups.get_mut(&name) {
            g.depth = depth;
        }
    }
}

fn depth_of(inventory: &Inventory, group: &str) -> usize {
    inventory
        .groups
        .get(group)
        .map(|g| {
            g.parents
                .iter()
                .map(|p| depth_of(inventory, p) + 1)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn load_vars_files(inventory: &mut Inventory) -> Result<(), InventoryError> {
    let dir = inventory
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for group in inventory.groups.values_mut() {
        group.file_vars = read_vars_for(&dir.join("group_vars"), &group.name)?;
    }
    for host in inventory.hosts.values_mut() {
        host.file_vars = read_vars_for(&dir.join("host_vars"), &host.name)?;
    }
    Ok(())
}

/// `dir/<name>`, `<name>.yml`, `.yaml`, `.json`, or a directory `dir/<name>/` of such files:
/// only the first of these that exists, as Ansible's `find_vars_files` does.
fn read_vars_for(dir: &Path, name: &str) -> Result<Vars, InventoryError> {
    let mut vars = Vars::new();
    for ext in VARS_EXTENSIONS {
        let path = dir.join(format!("{name}{ext}"));
        let files = if path.is_dir() {
            files_under(&path)?
        } else if path.is_file() {
            vec![path]
        } else {
            continue;
        };
        for file in files {
            vars.extend(read_vars_file(&file)?);
        }
        break;
    }
    Ok(vars)
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>, InventoryError> {
    let read_err = |error| InventoryError::Read {
        path: dir.to_path_buf(),
        error,
    };
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let ext = p.extension().map(|e| format!(".{}", e.to_string_lossy()));
            // Ansible skips hidden files, backups (`~`) and directories with an extension.
            !name.starts_with('.')
                && !name.ends_with('~')
                && if p.is_dir() {
                    ext.is_none()
                } else {
                    ext.is_none_or(|e| VARS_EXTENSIONS.contains(&e.as_str()))
                }
        })
        .collect();
    entries.sort();
    let mut files = vec![];
    for entry in entries {
        if entry.is_dir() {
            files.extend(files_under(&entry)?);
        } else {
            files.push(entry);
        }
    }
    Ok(files)
}

fn read_vars_file(path: &Path) -> Result<Vars, InventoryError> {
    let file = Arc::new(path.to_path_buf());
    let root = read_yaml(&file)?;
    let entries = match &root.kind {
        Kind::Null => return Ok(Vars::new()),
        Kind::Map(entries) => entries,
        _ => {
            return Err(at(
                &file,
                &root,
                format!(
                    "a vars file must be a mapping of variable names to values, not {}",
                    root.type_name()
                ),
            ))
        }
    };
    let mut vars = Vars::new();
    for (k, v) in entries {
        let origin = Origin {
            path: file.clone(),
            mark: k.mark,
        };
        let name = match &k.kind {
            Kind::Str(s) => s.clone(),
            _ => {
                return Err(origin.error(format!(
                    "a variable name must be text, not {}",
                    k.type_name()
                )))
            }
        };
        vars.insert(
            name,
            Var {
                value: v.to_json(),
                origin,
            },
        );
    }
    Ok(vars)
}

fn read_yaml(file: &Arc<PathBuf>) -> Result<Node, InventoryError> {
    let text = fs::read_to_string(file.as_ref()).map_err(|error| InventoryError::Read {
        path: file.as_ref().clone(),
        error,
    })?;
    yaml::parse(&text).map_err(|e| InventoryError::At {
        path: file.as_ref().clone(),
        mark: e.mark,
        message: format!("YAML syntax error: {}", e.message),
    })
}

fn at(file: &Arc<PathBuf>, node: &Node, message: impl Into<String>) -> InventoryError {
    InventoryError::At {
        path: file.as_ref().clone(),
        mark: node.mark,
        message: message.into(),
    }
}

/// Ansible's host ranges: `web[01:03]`, `db-[a:c]`, `n[0:10:5]`.
fn expand_host_pattern(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('[') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or("a range opened with [ must close with ]")?;
    let (head, range, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let parts: Vec<&str> = range.split(':').collect();
    let (start, end, step) = match parts.as_slice() {
        [s, e] => (*s, *e, 1),
        [s, e, st] => (
            *s,
            *e,
            st.parse::<usize>()
                .map_err(|_| format!("step \"{st}\" is not a number"))?,
        ),
        _ => return Err("a range is [start:end] or [start:end:step]".into()),
    };
    if step == 0 {
        return Err("the step of a range cannot be 0".into());
    }
    let items: Vec<String> = if let (Ok(a), Ok(b)) = (start.parse::<usize>(), end.parse::<usize>())
    {
        let width = if start.starts_with('0') {
            start.len()
        } else {
            0
        };
        (a..=b)
            .step_by(step)
            .map(|i| format!("{i:0width$}"))
            .collect()
    } else if let ([a], [b]) = (start.as_bytes(), end.as_bytes()) {
        (*a..=*b)
            .step_by(step)
            .map(|c| (c as char).to_string())
            .collect()
    } else {
        return Err(format!(
            "[{range}] is neither a numeric nor a single-letter range"
        ));
    };
    if items.is_empty() {
        return Err(format!("[{range}] is empty: the start is after the end"));
    }
    let mut out = vec![];
    for item in items {
        for rest in expand_host_pattern(tail)? {
            out.push(format!("{head}{item}{rest}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand_host_pattern;

    #[test]
    fn host_ranges_expand_as_in_ansible() {
        assert_eq!(
            expand_host_pattern("ptrn-[1:3]").unwrap(),
            ["ptrn-1", "ptrn-2", "ptrn-3"]
        );
        assert_eq!(
            expand_host_pattern("db[01:02].lan").unwrap(),
            ["db01.lan", "db02.lan"]
        );
        assert_eq!(expand_host_pattern("n[a:c]").unwrap(), ["na", "nb", "nc"]);
        assert_eq!(
            expand_host_pattern("n[0:10:5]").unwrap(),
            ["n0", "n5", "n10"]
        );
        assert!(expand_host_pattern("n[3:1]").is_err());
        assert!(expand_host_pattern("n[1:3").is_err());
    }
}
