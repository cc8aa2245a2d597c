//! A cross-check against the real thing: for inventories written the way an Ansible user
//! writes them, `hactl inventory list --output json` must agree with `ansible-inventory --list`
//! on the hosts, every host's groups, every group's children and every host's merged vars.
//!
//! ansible-core is installed once into `target/ansible-venv` (python3 -m venv + pip from PyPI)
//! and reused after that. Without python3, venv or pip the tests fail: they never pass silently.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use common::fixture::{groups_of, yaml, Fixture};
use common::{assert_success, hactl_in};

/// `target/ansible-venv/bin/ansible-inventory`, installing ansible-core first if needed.
fn ansible_inventory() -> PathBuf {
    common::ansible::tool("ansible-inventory")
}

/// `ansible-inventory -i FILE --list`, run from an empty directory with its own ANSIBLE_HOME
/// and an empty config, so that nothing of this machine's Ansible set-up takes part.
fn ansible_list(file: &Path) -> Value {
    let bin = ansible_inventory();
    let scratch = tempfile::tempdir().expect("create a temp dir");
    let cwd = scratch.path().join("cwd");
    fs::create_dir(&cwd).expect("create the cwd");
    let config = scratch.path().join("ansible.cfg");
    fs::write(&config, "").expect("write an empty ansible.cfg");
    let mut command = Command::new(&bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ANSIBLE_") {
            command.env_remove(key);
        }
    }
    let out = command
        .arg("-i")
        .arg(file)
        .arg("--list")
        .current_dir(&cwd)
        .env("ANSIBLE_HOME", scratch.path().join("ansible-home"))
        .env("ANSIBLE_CONFIG", &config)
        .env("ANSIBLE_LOCALHOST_WARNING", "False")
        .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "False")
        .env("ANSIBLE_NOCOLOR", "True")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("run ansible-inventory");
    parse_listing("ansible-inventory", &out)
}

fn hactl_list(file: &Path) -> Value {
    let cwd = tempfile::tempdir().expect("create a temp dir");
    let file = file.to_string_lossy();
    let out = hactl_in(
        cwd.path(),
        &["inventory", "list", &file, "--output", "json"],
    );
    parse_listing("hactl", &out)
}

fn parse_listing(who: &str, out: &Output) -> Value {
    assert_success(who, out);
    // Any warning but one means the inventory is not read as the test means it. The one:
    // Ansible warns when a key overrides the same key merged in with `<<: *anchor`.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings = stderr.matches("WARNING").count();
    let merge_overrides = stderr.matches("found a duplicate dict key").count();
    assert!(
        warnings == merge_overrides,
        "{who} warned about the test's inventory: {stderr}"
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{who} printed invalid JSON ({e}): {:?}", out.stdout))
}

/// What an `--list` JSON means, without the ways two correct outputs may differ: order,
/// hosts without vars left out of `_meta.hostvars`, empty groups left out, an empty
/// `ungrouped` listed or not among the children of `all`.
#[derive(Debug, PartialEq)]
struct Listing {
    hosts: BTreeSet<String>,
    /// Every group of each host, directly or through children, `all` included.
    groups_of: BTreeMap<String, BTreeSet<String>>,
    /// The children of every group that has some.
    children: BTreeMap<String, BTreeSet<String>>,
    hostvars: BTreeMap<String, Value>,
}

fn normalize(listing: &Value) -> Listing {
    let object = listing.as_object().expect("a JSON object");
    let groups: Vec<(&String, &Value)> = object.iter().filter(|(k, _)| *k != "_meta").collect();
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|n| n.as_str().expect("a name").to_string())
            .collect()
    };
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (group, body) in &groups {
        listed.extend(names(&body["hosts"]));
        for child in names(&body["children"]) {
            children.entry(group.to_string()).or_default().insert(child);
        }
    }
    let ungrouped_is_empty = names(&listing["ungrouped"]["hosts"]).is_empty();
    if ungrouped_is_empty {
        for kids in children.values_mut() {
            kids.remove("ungrouped");
        }
    }
    children.retain(|_, kids| !kids.is_empty());

    let meta = listing["_meta"]["hostvars"]
        .as_object()
        .expect("_meta.hostvars");
    let hosts: BTreeSet<String> = listed.into_iter().chain(meta.keys().cloned()).collect();
    let mut host_groups = BTreeMap::new();
    let mut hostvars = BTreeMap::new();
    for host in &hosts {
        let mut seen = groups_of(listing, host);
        seen.insert("all".to_string());
        host_groups.insert(host.clone(), seen);
        let vars = meta
            .get(host)
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        hostvars.insert(host.clone(), vars);
    }
    Listing {
        hosts,
        groups_of: host_groups,
        children,
        hostvars,
    }
}

/// Compares part by part, so that a failure says which host or group differs.
fn assert_same(file: &Path) {
    let ansible_json = ansible_list(file);
    let hactl_json = hactl_list(file);
    let ansible = normalize(&ansible_json);
    let hactl = normalize(&hactl_json);
    assert_eq!(
        hactl.hosts, ansible.hosts,
        "hosts (left: hactl, right: ansible)"
    );
    for host in &ansible.hosts {
        assert_eq!(
            hactl.groups_of[host], ansible.groups_of[host],
            "groups of {host} (left: hactl, right: ansible)"
        );
    }
    assert_eq!(
        hactl.children, ansible.children,
        "children of the groups (left: hactl, right: ansible)"
    );
    for host in &ansible.hosts {
        assert_eq!(
            hactl.hostvars[host], ansible.hostvars[host],
            "vars of {host} (left: hactl, right: ansible)\nhactl: {:#}\nansible: {:#}",
            hactl.hostvars[host], ansible.hostvars[host]
        );
    }
    assert_eq!(hactl, ansible);
}

/// Three levels of groups, a host in several groups, group_vars/ files and a directory,
/// host_vars/, and the same variables set at several levels.
fn typical_inventory() -> Fixture {
    let f = Fixture::new();
    f.file(
        "inventory/hosts.yml",
        &yaml(&[
            "all:",
            "  vars:",
            "    ntp_servers: [0.pool.ntp.org, 1.pool.ntp.org]",
            "    log_level: warning",
            "    backup_enabled: no",
            "    tier: all",
            "    max_connections: 100",
            "    ansible_user: deploy",
            "  children:",
            "    datacenter:",
            "      vars:",
            "        tier: datacenter",
            "        region: eu-west",
            "        ansible_become: true",
            "      children:",
            "        databases:",
            "          vars:",
            "            tier: databases",
            "            max_connections: 200",
            "            pg_settings:",
            "              shared_buffers: 1GB",
            "              work_mem: 16MB",
            "          children:",
            "            primaries:",
            "              hosts:",
            "                db1:",
            "                  ansible_host: 10.0.1.11",
            "                  pg_role: primary",
            "            replicas:",
            "              vars:",
            "                hot_standby: yes",
            "                pg_role: replica",
            "              hosts:",
            "                db2:",
            "                  ansible_host: 10.0.1.12",
            "                db3:",
            "                  ansible_host: 10.0.1.13",
            "                  max_connections: 150",
            "        webservers:",
            "          vars:",
            "            http_port: 8080",
            "          hosts:",
            "            web1:",
            "              ansible_host: 10.0.2.21",
            "            web2:",
            "              ansible_host: 10.0.2.22",
            "              log_level: debug",
            "    monitoring:",
            "      vars:",
            "        tier: monitoring",
            "        scrape_interval: 15",
            "      hosts:",
            "        mon1:",
            "          ansible_host: 10.0.3.31",
            "        db1:",
            "          node_exporter: true",
        ]),
    )
    .file(
        "inventory/group_vars/all.yml",
        &yaml(&[
            "log_level: info",
            "backup_enabled: true",
            "timezone: UTC",
            "ports:",
            "  ssh: 22",
            "  node_exporter: 9100",
            "region: default",
        ]),
    )
    .file(
        "inventory/group_vars/databases.yml",
        &yaml(&[
            "max_connections: 300",
            "pg_settings:",
            "  shared_buffers: 2GB",
            "pg_version: 16",
        ]),
    )
    .file(
        "inventory/group_vars/replicas/10-replication.yml",
        &yaml(&[
            "replication_slots: [slot_a, slot_b]",
            "sync_mode: false",
            "lag_limit_mb: 16",
        ]),
    )
    .file(
        "inventory/group_vars/replicas/20-tuning.yml",
        &yaml(&[
            "lag_limit_mb: 64",
            "pg_settings:",
            "  hot_standby_feedback: on",
        ]),
    )
    .file(
        "inventory/group_vars/monitoring.yml",
        &yaml(&[
            "retention_days: 30",
            "scrape_interval: 30",
            "tier: monitoring-file",
        ]),
    )
    .file(
        "inventory/host_vars/db3.yml",
        &yaml(&["max_connections: 120", "pg_role: delayed-replica"]),
    )
    .file(
        "inventory/host_vars/web1.yml",
        &yaml(&["log_level: error", "http_port: 8443"]),
    );
    f
}

#[test]
fn hactl_lists_a_typical_inventory_as_ansible_inventory_does() {
    let f = typical_inventory();
    assert_same(&f.path("inventory/hosts.yml"));
}

#[test]
fn hactl_and_ansible_agree_on_the_merged_vars_of_a_host_in_several_groups() {
    // Spelled out, so that the cross-check cannot pass on two equally wrong outputs.
    let f = typical_inventory();
    let file = f.path("inventory/hosts.yml");
    let ansible = normalize(&ansible_list(&file));
    let expected = serde_json::json!({
        "ntp_servers": ["0.pool.ntp.org", "1.pool.ntp.org"],
        "log_level": "info",
        "backup_enabled": true,
        // group_vars/monitoring.yml beats the inline vars of the deeper group databases:
        // every group_vars/ file beats every inline group var, whatever the depth.
        "tier": "monitoring-file",
        "max_connections": 300,
        "ansible_user": "deploy",
        "region": "default",
        "ansible_become": true,
        "pg_settings": {"shared_buffers": "2GB"},
        "scrape_interval": 30,
        "timezone": "UTC",
        "ports": {"ssh": 22, "node_exporter": 9100},
        "pg_version": 16,
        "retention_days": 30,
        "ansible_host": "10.0.1.11",
        "pg_role": "primary",
        "node_exporter": true,
    });
    assert_eq!(ansible.hostvars["db1"], expected, "ansible-inventory");
    assert_eq!(
        normalize(&hactl_list(&file)).hostvars["db1"],
        expected,
        "hactl"
    );
}

/// YAML 1.1 scalars as PyYAML reads them, anchors and merge keys, host ranges, a host list
/// given as a string, group priorities, and group_vars/ layouts Ansible reads in a set order.
fn edge_case_inventory() -> Fixture {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  vars:",
            "    defaults: &defaults",
            "      retries: 3",
            "      timeout: 10",
            "    derived:",
            "      <<: *defaults",
            "      timeout: 30",
            "    nothing:",
            "  hosts:",
            "    solo:",
            "      quoted_yes: \"yes\"",
            "      single_quoted: '0755'",
            "      floats: [1.5, 1.5e+3, 1.5e3, -.5, .5, 1., 1.10, +2.5, 1_000.5]",
            "      ints: [0755, 0x1F, 1_000, 09, -12, +7, 0b101, 0]",
            "      nulls: [~, null, Null]",
            "      bools: [on, Off, TRUE, no, Yes, false]",
            "      not_bools: [y, n, truthy]",
            "      ip: 10.0.0.1",
            "      date: 2024-01-31",
            "      literal: |",
            "        line one",
            "        line two",
            "      folded: >",
            "        folded",
            "        text",
            "      nested: {a: [1, {b: c}], d: {}}",
            "      empty_list: []",
            "  children:",
            "    alpha:",
            "      vars:",
            "        ansible_group_priority: 10",
            "        prio_winner: alpha",
            "      hosts:",
            "        node[1:3]:",
            "    beta:",
            "      vars:",
            "        prio_winner: beta",
            "        name_winner: beta",
            "      hosts:",
            "        node[1:2]:",
            "          from_beta_listing: true",
            "    gamma:",
            "      vars:",
            "        name_winner: gamma",
            "      hosts: node3",
            "    parent:",
            "      children:",
            "        deep:",
            "          vars:",
            "            depth_winner: deep",
            "          hosts:",
            "            node1:",
            "              from_deep_listing: true",
            "    shallow:",
            "      vars:",
            "        ansible_group_priority: 100",
            "        depth_winner: shallow",
            "      hosts:",
            "        node1:",
            "    padded:",
            "      hosts:",
            "        db[08:10].example.com:",
            "        cache-[a:c]:",
            "        s[0:10:5]:",
            "    empty:",
        ]),
    )
    // A directory shadows group_vars/alpha.yml; inside it, only some files count.
    .file(
        "group_vars/alpha/10-first.yml",
        "layout: dir\nfile_order: first\n",
    )
    .file("group_vars/alpha/20-second.yaml", "file_order: second\n")
    .file(
        "group_vars/alpha/30-more/inner.json",
        "{\"from_json\": [1, 2]}\n",
    )
    .file("group_vars/alpha/40-plain", "no_extension: read\n")
    .file("group_vars/alpha/50-notes.txt", "file_order: txt\n")
    .file("group_vars/alpha/60-old.yml~", "file_order: backup\n")
    .file("group_vars/alpha/.70-hidden.yml", "file_order: hidden\n")
    .file(
        "group_vars/alpha/80-skip.d/inner.yml",
        "file_order: dir-with-extension\n",
    )
    .file("group_vars/alpha.yml", "layout: file\n")
    // .yml is read before .yaml and .json; only the first found counts.
    .file(
        "group_vars/beta.yml",
        "beta_from: yml\nansible_group_priority: 99\n",
    )
    .file("group_vars/beta.yaml", "beta_from: yaml\n")
    .file(
        "group_vars/gamma.json",
        "{\"gamma_from\": \"json\", \"n\": 1.0}\n",
    )
    .file("host_vars/node2", "host_file: no extension\n")
    .file("host_vars/node3/a.yml", "host_file: dir a\nonly_a: 1\n")
    .file("host_vars/node3/b.yml", "host_file: dir b\n")
    .file("group_vars/empty.yml", "")
    .file("group_vars/ungrouped.yml", "ungrouped_var: 1\n");
    f
}

#[test]
fn hactl_lists_yaml_edge_cases_and_vars_layouts_as_ansible_inventory_does() {
    let f = edge_case_inventory();
    assert_same(&f.path("hosts.yml"));
}
