use std::fmt::Write;

use serde_json::{json, Map, Value};

use super::{masked, Inventory, ALL, UNGROUPED};

/// `ansible-inventory --list` JSON: groups with their hosts and children, and every host's
/// merged vars under `_meta.hostvars`, secrets masked at any depth.
pub fn list_json(inventory: &Inventory) -> Value {
    let mut out = Map::new();
    let mut hostvars = Map::new();
    for host in inventory.hosts.keys() {
        let vars: Map<String, Value> = inventory
            .host_vars(host)
            .into_iter()
            .map(|(k, v)| {
                let value = masked(&k, v.value);
                (k, value)
            })
            .collect();
        hostvars.insert(host.clone(), Value::Object(vars));
    }
    out.insert("_meta".into(), json!({ "hostvars": hostvars }));
    for group in inventory.groups.values() {
        if group.name == UNGROUPED && group.hosts.is_empty() {
            continue;
        }
        let mut entry = Map::new();
        let children: Vec<&String> = group
            .children
            .iter()
            .filter(|c| c.as_str() != UNGROUPED || !inventory.groups[UNGROUPED].hosts.is_empty())
            .collect();
        if !children.is_empty() {
            entry.insert("children".into(), json!(children));
        }
        if !group.hosts.is_empty() && group.name != ALL {
            entry.insert("hosts".into(), json!(group.hosts));
        }
        out.insert(group.name.clone(), Value::Object(entry));
    }
    Value::Object(out)
}

/// A readable listing: one block per host with its address, groups and merged vars.
pub fn list_text(inventory: &Inventory) -> String {
    let json = list_json(inventory);
    let mut out = String::new();
    for host in inventory.hosts.keys() {
        let mut groups: Vec<String> = inventory
            .groups_of(host)
            .into_iter()
            .filter(|g| g != ALL)
            .collect();
        groups.sort();
        let _ = writeln!(out, "{host}  groups: {}", groups.join(", "));
        if let Some(Value::Object(vars)) = json["_meta"]["hostvars"].get(host) {
            for (k, v) in vars {
                let shown = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let _ = writeln!(out, "    {k}: {shown}");
            }
        }
    }
    out
}

/// The group tree as `ansible-inventory --graph` draws it.
pub fn graph(inventory: &Inventory) -> String {
    let mut out = String::new();
    draw(inventory, ALL, 0, &mut out);
    out
}

fn draw(inventory: &Inventory, group: &str, depth: usize, out: &mut String) {
    let indent = |d: usize| "  |".repeat(d);
    if depth == 0 {
        let _ = writeln!(out, "@{group}:");
    } else {
        let _ = writeln!(out, "{}--@{group}:", indent(depth));
    }
    let Some(g) = inventory.groups.get(group) else {
        return;
    };
    let mut children = g.children.clone();
    children.sort();
    for child in children {
        if child == UNGROUPED && inventory.groups[UNGROUPED].hosts.is_empty() {
            continue;
        }
        draw(inventory, &child, depth + 1, out);
    }
    if group != ALL {
        let mut hosts = g.hosts.clone();
        hosts.sort();
        for host in hosts {
            let _ = writeln!(out, "{}--{host}", indent(depth + 1));
        }
    }
}
