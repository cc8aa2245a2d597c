//! Directories of inventory, site and role files for a test, and what hactl and
//! ansible-inventory list.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use serde_json::Value;
use tempfile::TempDir;

/// An inventory directory: inventory files with group_vars/ and host_vars/ beside them.
pub struct Fixture {
    pub dir: TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("create a temp dir"),
        }
    }

    /// Writes `path` (relative to the directory), creating its parent directories.
    pub fn file(&self, path: &str, text: &str) -> &Fixture {
        let path = self.dir.path().join(path);
        fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
        fs::write(&path, text).expect("write a fixture file");
        self
    }

    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.path().join(path)
    }

    /// `site.yml`, one play running role `role` (whose tasks are `tasks`) on `hosts`; returns
    /// the site file's path.
    pub fn site(&self, hosts: &str, role: &str, tasks: &str) -> PathBuf {
        self.file(
            "site.yml",
            &format!("- name: {role}\n  hosts: {hosts}\n  roles: [{role}]\n"),
        );
        self.file(&format!("{role}/tasks.yml"), tasks);
        self.path("site.yml")
    }
}

/// Lines joined with newlines, so that line N of the YAML is `lines[N - 1]`.
pub fn yaml(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Every group a host is in, directly or through `children`, from a `--list` JSON.
pub fn groups_of(listing: &Value, host: &str) -> BTreeSet<String> {
    let groups = listing.as_object().expect("an object");
    let mut parents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut found: Vec<&str> = vec![];
    for (name, group) in groups.iter().filter(|(name, _)| *name != "_meta") {
        for child in group["children"].as_array().into_iter().flatten() {
            parents
                .entry(child.as_str().expect("a group name"))
                .or_default()
                .push(name);
        }
        let hosts = group["hosts"].as_array().into_iter().flatten();
        if hosts.into_iter().any(|h| h == host) {
            found.push(name);
        }
    }
    let mut all = BTreeSet::new();
    while let Some(group) = found.pop() {
        if all.insert(group.to_string()) {
            found.extend(parents.get(group).into_iter().flatten());
        }
    }
    all
}
