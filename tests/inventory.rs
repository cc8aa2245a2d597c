//! `hactl inventory list` and `hactl inventory graph`: Ansible's YAML inventory format as hactl
//! reads it. Precedence, nested groups, host ranges, group_vars/ and host_vars/, errors with
//! their exact position, masked secrets, and the inventories shipped in inventory/.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

use common::fixture::{groups_of, yaml, Fixture};
use common::{assert_success, hactl_in};

impl Fixture {
    /// Runs hactl in the directory, so that relative paths in messages are short.
    fn hactl(&self, args: &[&str]) -> Output {
        hactl_in(self.dir.path(), args)
    }

    /// `hactl inventory list FILE --output json`, which must succeed.
    fn list_json(&self, file: &str) -> Value {
        let out = self.hactl(&["inventory", "list", file, "--output", "json"]);
        json_of(&out)
    }

    /// `hactl inventory list FILE` (text), which must succeed.
    fn list_text(&self, file: &str) -> String {
        let out = self.hactl(&["inventory", "list", file]);
        assert_success("hactl", &out);
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// The merged vars of one host.
    fn vars_of(&self, file: &str, host: &str) -> Value {
        let listing = self.list_json(file);
        let vars = &listing["_meta"]["hostvars"][host];
        assert!(vars.is_object(), "no hostvars for {host} in {listing:#}");
        vars.clone()
    }

    /// Asserts that `inventory list` and `inventory graph` both reject the inventory with
    /// exit code 4, print nothing on stdout, and print `hactl: AT: ...` on stderr where
    /// the message holds every one of `words`. Returns the message.
    fn assert_rejected(&self, file: &str, at: &str, words: &[&str]) -> String {
        let mut messages = vec![];
        for args in [
            vec!["inventory", "list", file],
            vec!["inventory", "list", file, "--output", "json"],
            vec!["inventory", "graph", file],
        ] {
            let out = self.hactl(&args);
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert_eq!(
                out.status.code(),
                Some(4),
                "{args:?}: exit code; stderr: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{args:?}: stdout must be empty");
            let prefix = format!("hactl: {at}: ");
            assert!(
                stderr.starts_with(&prefix),
                "{args:?}: stderr should start with {prefix:?}, got {stderr:?}"
            );
            assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr:?}");
            for word in words {
                assert!(
                    stderr.contains(word),
                    "{args:?}: {word:?} not in {stderr:?}"
                );
            }
            messages.push(stderr);
        }
        assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
        messages.remove(0)
    }
}

fn json_of(out: &Output) -> Value {
    assert_success("hactl", out);
    serde_json::from_slice(&out.stdout).expect("hactl prints valid JSON")
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Precedence: all inline < group inline < group_vars/all < group_vars/<group>
//             < inline host vars < host_vars/<host>
// ---------------------------------------------------------------------------------------

/// Variable `vN` is set in the first N layers of the precedence ladder, each time to the
/// layer's name: the value that comes out tells which layer won.
fn precedence_ladder() -> Fixture {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  vars:",
            "    v1: all inline",
            "    v2: all inline",
            "    v3: all inline",
            "    v4: all inline",
            "    v5: all inline",
            "    v6: all inline",
            "  children:",
            "    db:",
            "      vars:",
            "        v2: group inline",
            "        v3: group inline",
            "        v4: group inline",
            "        v5: group inline",
            "        v6: group inline",
            "      hosts:",
            "        db1:",
            "          v5: host inline",
            "          v6: host inline",
            "    web:",
            "      hosts:",
            "        web1:",
        ]),
    )
    .file(
        "group_vars/all.yml",
        "v3: group_vars/all\nv4: group_vars/all\nv5: group_vars/all\nv6: group_vars/all\n",
    )
    .file(
        "group_vars/db.yml",
        "v4: group_vars/db\nv5: group_vars/db\nv6: group_vars/db\n",
    )
    .file("host_vars/db1.yml", "v6: host_vars/db1\n");
    f
}

#[test]
fn all_inline_vars_reach_every_host() {
    let f = precedence_ladder();
    assert_eq!(f.vars_of("hosts.yml", "db1")["v1"], "all inline");
    assert_eq!(f.vars_of("hosts.yml", "web1")["v1"], "all inline");
    assert_eq!(f.vars_of("hosts.yml", "web1")["v2"], "all inline");
}

#[test]
fn child_group_inline_vars_beat_all_inline_vars() {
    assert_eq!(
        precedence_ladder().vars_of("hosts.yml", "db1")["v2"],
        "group inline"
    );
}

#[test]
fn group_vars_all_beats_inline_group_vars() {
    let f = precedence_ladder();
    assert_eq!(f.vars_of("hosts.yml", "db1")["v3"], "group_vars/all");
    assert_eq!(f.vars_of("hosts.yml", "web1")["v3"], "group_vars/all");
}

#[test]
fn group_vars_of_a_group_beat_group_vars_all() {
    let f = precedence_ladder();
    assert_eq!(f.vars_of("hosts.yml", "db1")["v4"], "group_vars/db");
    assert_eq!(f.vars_of("hosts.yml", "web1")["v4"], "group_vars/all");
}

#[test]
fn inline_host_vars_beat_group_vars_files() {
    assert_eq!(
        precedence_ladder().vars_of("hosts.yml", "db1")["v5"],
        "host inline"
    );
}

#[test]
fn host_vars_file_beats_inline_host_vars() {
    assert_eq!(
        precedence_ladder().vars_of("hosts.yml", "db1")["v6"],
        "host_vars/db1"
    );
}

#[test]
fn the_whole_precedence_ladder_merges_into_one_set_of_hostvars() {
    let vars = precedence_ladder().vars_of("hosts.yml", "db1");
    assert_eq!(
        vars,
        json!({
            "v1": "all inline",
            "v2": "group inline",
            "v3": "group_vars/all",
            "v4": "group_vars/db",
            "v5": "host inline",
            "v6": "host_vars/db1",
        })
    );
}

#[test]
fn deeper_group_beats_shallower_group_whatever_the_names_and_file_order() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    outer:",
            "      children:",
            "        aa_inner:",
            "          vars:",
            "            color: inner",
            "          hosts:",
            "            h1:",
            "    zz_top:",
            "      vars:",
            "        color: top",
            "      hosts:",
            "        h1:",
        ]),
    )
    .file("group_vars/aa_inner.yml", "size: inner\n")
    .file("group_vars/zz_top.yml", "size: top\n");
    let vars = f.vars_of("hosts.yml", "h1");
    assert_eq!(vars["color"], "inner", "inline group vars");
    assert_eq!(vars["size"], "inner", "group_vars files");
}

#[test]
fn groups_of_the_same_depth_apply_in_name_order_so_the_last_name_wins() {
    let f = Fixture::new();
    // alpha comes last in the file: if file order counted, alpha would win.
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    beta:",
            "      vars:",
            "        color: beta",
            "      hosts:",
            "        h1:",
            "    alpha:",
            "      vars:",
            "        color: alpha",
            "      hosts:",
            "        h1:",
        ]),
    )
    .file("group_vars/alpha.yml", "size: alpha\n")
    .file("group_vars/beta.yml", "size: beta\n");
    let vars = f.vars_of("hosts.yml", "h1");
    assert_eq!(vars["color"], "beta");
    assert_eq!(vars["size"], "beta");
}

#[test]
fn ansible_group_priority_beats_name_order_at_the_same_depth() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    alpha:",
            "      vars:",
            "        ansible_group_priority: 10",
            "        color: alpha",
            "      hosts:",
            "        h1:",
            "    beta:",
            "      vars:",
            "        color: beta",
            "      hosts:",
            "        h1:",
        ]),
    )
    .file("group_vars/alpha.yml", "size: alpha\n")
    .file("group_vars/beta.yml", "size: beta\n");
    let vars = f.vars_of("hosts.yml", "h1");
    assert_eq!(vars["color"], "alpha");
    assert_eq!(vars["size"], "alpha");
    // As in Ansible, the priority is a property of the group, not a variable.
    assert_eq!(vars, json!({"color": "alpha", "size": "alpha"}));
}

#[test]
fn ansible_group_priority_does_not_beat_depth() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    shallow:",
            "      vars:",
            "        ansible_group_priority: 100",
            "        color: shallow",
            "      hosts:",
            "        h1:",
            "    parent:",
            "      children:",
            "        deep:",
            "          vars:",
            "            color: deep",
            "          hosts:",
            "            h1:",
        ]),
    );
    assert_eq!(f.vars_of("hosts.yml", "h1")["color"], "deep");
}

#[test]
fn ansible_group_priority_in_group_vars_is_an_ordinary_variable() {
    // Ansible reads the priority from the inventory only, since it orders group_vars/.
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    alpha:",
            "      hosts:",
            "        h1:",
            "    beta:",
            "      hosts:",
            "        h1:",
        ]),
    )
    .file(
        "group_vars/alpha.yml",
        "ansible_group_priority: 10\nsize: alpha\n",
    )
    .file("group_vars/beta.yml", "size: beta\n");
    let vars = f.vars_of("hosts.yml", "h1");
    assert_eq!(vars["size"], "beta");
    assert_eq!(vars["ansible_group_priority"], 10);
}

#[test]
fn ansible_group_priority_that_is_not_a_number_is_an_error_at_its_value() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    alpha:",
            "      vars:",
            "        ansible_group_priority: high",
            "      hosts:",
            "        h1:",
        ]),
    );
    // Line 5: 8 spaces, "ansible_group_priority: " is 24 characters, so "high" is at 33.
    f.assert_rejected(
        "hosts.yml",
        "hosts.yml:5:33",
        &["ansible_group_priority", "alpha", "integer"],
    );
}

// ---------------------------------------------------------------------------------------
// group_vars/ and host_vars/ layouts
// ---------------------------------------------------------------------------------------

fn one_db_host() -> Fixture {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    db:",
            "      hosts:",
            "        db1:",
        ]),
    );
    f
}

#[test]
fn group_vars_directory_files_merge_in_name_order_and_recurse() {
    let f = one_db_host();
    f.file(
        "group_vars/db/10-base.yml",
        "a: base\nb: base\nc: base\nd: base\n",
    )
    .file("group_vars/db/20-tuning.yaml", "b: tuning\n")
    .file(
        "group_vars/db/30-extra/settings.json",
        "{\"c\": \"json\"}\n",
    )
    .file("group_vars/db/40-plain", "d: no extension\n")
    // Not read, as in Ansible: other extensions, backups, hidden files, dirs with an extension.
    .file("group_vars/db/50-notes.txt", "a: txt\n")
    .file("group_vars/db/60-old.yml~", "a: backup\n")
    .file("group_vars/db/.70-hidden.yml", "a: hidden\n")
    .file(
        "group_vars/db/80-skip.d/inner.yml",
        "a: dir with an extension\n",
    );
    assert_eq!(
        f.vars_of("hosts.yml", "db1"),
        json!({"a": "base", "b": "tuning", "c": "json", "d": "no extension"})
    );
}

#[test]
fn group_vars_directory_shadows_a_file_named_after_the_group() {
    let f = one_db_host();
    f.file("group_vars/db/main.yml", "from: directory\n")
        .file("group_vars/db.yml", "from: file\nonly_in_file: 1\n");
    assert_eq!(f.vars_of("hosts.yml", "db1"), json!({"from": "directory"}));
}

#[test]
fn only_the_first_of_yml_yaml_json_found_for_a_name_is_read() {
    let f = one_db_host();
    f.file("group_vars/db.yml", "from: yml\n")
        .file("group_vars/db.yaml", "from: yaml\nonly_in_yaml: 1\n")
        .file("group_vars/db.json", "{\"from\": \"json\"}\n")
        .file("host_vars/db1.yaml", "host_from: yaml\n")
        .file("host_vars/db1.json", "{\"host_from\": \"json\"}\n");
    assert_eq!(
        f.vars_of("hosts.yml", "db1"),
        json!({"from": "yml", "host_from": "yaml"})
    );
}

#[test]
fn host_vars_can_be_a_directory_of_files() {
    let f = one_db_host();
    f.file("host_vars/db1/a.yml", "x: 1\ny: 1\n")
        .file("host_vars/db1/b.yml", "y: 2\n");
    assert_eq!(f.vars_of("hosts.yml", "db1"), json!({"x": 1, "y": 2}));
}

#[test]
fn group_vars_are_found_beside_an_inventory_given_by_absolute_path() {
    let f = one_db_host();
    f.file("group_vars/db.yml", "port: 5432\n");
    let file = f.dir.path().join("hosts.yml");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let out = hactl_in(
        elsewhere.path(),
        &[
            "inventory",
            "list",
            file.to_str().expect("utf-8"),
            "--output",
            "json",
        ],
    );
    assert_eq!(
        json_of(&out)["_meta"]["hostvars"]["db1"],
        json!({"port": 5432})
    );
}

// ---------------------------------------------------------------------------------------
// Groups and hosts
// ---------------------------------------------------------------------------------------

fn three_levels() -> Fixture {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    europe:",
            "      vars:",
            "        continent: europe",
            "      children:",
            "        paris:",
            "          vars:",
            "            city: paris",
            "          children:",
            "            rack1:",
            "              hosts:",
            "                p1:",
            "                p2:",
            "          hosts:",
            "            p3:",
            "        berlin:",
            "          hosts:",
            "            b1:",
            "    standalone:",
            "      hosts:",
            "        s1:",
        ]),
    );
    f
}

#[test]
fn hosts_of_a_nested_group_belong_to_every_ancestor_group() {
    let listing = three_levels().list_json("hosts.yml");
    assert_eq!(
        groups_of(&listing, "p1"),
        set(&["all", "europe", "paris", "rack1"])
    );
    assert_eq!(groups_of(&listing, "p3"), set(&["all", "europe", "paris"]));
    assert_eq!(groups_of(&listing, "b1"), set(&["all", "europe", "berlin"]));
    assert_eq!(groups_of(&listing, "s1"), set(&["all", "standalone"]));
}

#[test]
fn list_json_gives_each_group_its_direct_hosts_and_children() {
    let listing = three_levels().list_json("hosts.yml");
    assert_eq!(
        listing["all"],
        json!({"children": ["europe", "standalone"]})
    );
    assert_eq!(listing["europe"], json!({"children": ["paris", "berlin"]}));
    assert_eq!(
        listing["paris"],
        json!({"children": ["rack1"], "hosts": ["p3"]})
    );
    assert_eq!(listing["rack1"], json!({"hosts": ["p1", "p2"]}));
    assert_eq!(listing["berlin"], json!({"hosts": ["b1"]}));
    assert!(listing.get("ungrouped").is_none(), "no ungrouped hosts");
}

#[test]
fn vars_of_a_grandparent_group_reach_the_hosts_of_its_grandchildren() {
    let f = three_levels();
    assert_eq!(
        f.vars_of("hosts.yml", "p1"),
        json!({"continent": "europe", "city": "paris"})
    );
    assert_eq!(f.vars_of("hosts.yml", "b1"), json!({"continent": "europe"}));
    assert_eq!(f.vars_of("hosts.yml", "s1"), json!({}));
}

#[test]
fn list_text_shows_each_host_with_all_its_groups_and_vars() {
    let text = three_levels().list_text("hosts.yml");
    assert!(
        text.contains("p1  groups: europe, paris, rack1\n    continent: europe\n    city: paris\n"),
        "{text}"
    );
    assert!(text.contains("s1  groups: standalone\n"), "{text}");
}

#[test]
fn hosts_under_all_and_in_no_group_are_ungrouped() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  hosts:",
            "    loner:",
            "    both:",
            "  children:",
            "    web:",
            "      hosts:",
            "        both:",
        ]),
    );
    let listing = f.list_json("hosts.yml");
    assert_eq!(listing["ungrouped"], json!({"hosts": ["loner"]}));
    assert_eq!(groups_of(&listing, "loner"), set(&["all", "ungrouped"]));
    assert_eq!(groups_of(&listing, "both"), set(&["all", "web"]));
}

#[test]
fn host_range_expands_to_one_host_per_number_each_with_the_vars() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    web:",
            "      hosts:",
            "        web[1:3]:",
            "          http_port: 8080",
        ]),
    );
    let listing = f.list_json("hosts.yml");
    assert_eq!(listing["web"], json!({"hosts": ["web1", "web2", "web3"]}));
    for host in ["web1", "web2", "web3"] {
        assert_eq!(
            listing["_meta"]["hostvars"][host],
            json!({"http_port": 8080})
        );
    }
}

#[test]
fn host_ranges_keep_leading_zeros_and_take_letters_and_steps() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    db:",
            "      hosts:",
            "        db[01:03].lan:",
            "    cache:",
            "      hosts:",
            "        cache-[a:c]:",
            "    shard:",
            "      hosts:",
            "        s[0:10:5]:",
        ]),
    );
    let listing = f.list_json("hosts.yml");
    assert_eq!(
        listing["db"]["hosts"],
        json!(["db01.lan", "db02.lan", "db03.lan"])
    );
    assert_eq!(
        listing["cache"]["hosts"],
        json!(["cache-a", "cache-b", "cache-c"])
    );
    assert_eq!(listing["shard"]["hosts"], json!(["s0", "s5", "s10"]));
}

#[test]
fn host_listed_in_several_groups_merges_its_inline_vars_in_file_order() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    etcd:",
            "      hosts:",
            "        n1:",
            "          ansible_host: 10.0.0.1",
            "          role: etcd",
            "          etcd_port: 2379",
            "    pg:",
            "      hosts:",
            "        n1:",
            "          ansible_host: 10.0.0.1",
            "          role: pg",
        ]),
    );
    assert_eq!(
        f.vars_of("hosts.yml", "n1"),
        json!({"ansible_host": "10.0.0.1", "role": "pg", "etcd_port": 2379})
    );
}

// ---------------------------------------------------------------------------------------
// Errors: exit code 4 and `hactl: FILE:LINE:COL: message` on stderr
// ---------------------------------------------------------------------------------------

#[test]
fn yaml_syntax_error_is_reported_at_its_line_and_column() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  hosts:",
            "    db1:",
            "      motd: welcome: home",
            "    db2:",
        ]),
    );
    // Line 4: 6 spaces, "motd: " ends at 12, "welcome" is 13-19: the second ':' is at 20.
    f.assert_rejected(
        "hosts.yml",
        "hosts.yml:4:20",
        &["YAML syntax error", "mapping values"],
    );
}

#[test]
fn unterminated_quote_is_reported_where_it_opens() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  hosts:",
            "    db1:",
            "      motd: \"welcome",
            "    db2:",
        ]),
    );
    // Line 4: 6 spaces and "motd: " are 12 characters: the quote is at 13.
    f.assert_rejected("hosts.yml", "hosts.yml:4:13", &["YAML syntax error"]);
}

#[test]
fn unknown_key_where_a_group_belongs_is_named_at_its_position() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    postgres:",
            "      childs:",
            "        replicas:",
        ]),
    );
    // Line 4: "childs" after 6 spaces.
    f.assert_rejected(
        "hosts.yml",
        "hosts.yml:4:7",
        &["unknown key \"childs\"", "group \"postgres\"", "children"],
    );
}

#[test]
fn group_nested_inside_itself_is_an_error_at_the_repeated_name() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    a:",
            "      children:",
            "        b:",
            "          children:",
            "            a:",
            "              hosts:",
            "                h1:",
        ]),
    );
    // Line 7: the inner "a" after 12 spaces.
    f.assert_rejected(
        "hosts.yml",
        "hosts.yml:7:13",
        &["group \"a\"", "includes itself", "a -> b -> a"],
    );
}

#[test]
fn group_made_its_own_ancestor_by_two_definitions_is_an_error() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    a:",
            "      children:",
            "        b:",
            "    b:",
            "      children:",
            "        a:",
        ]),
    );
    // Line 8: "a" as a child of b (8 spaces) closes the loop a -> b -> a.
    f.assert_rejected(
        "hosts.yml",
        "hosts.yml:8:9",
        &["group \"a\"", "includes itself", "\"b\""],
    );
}

#[test]
fn group_made_its_own_ancestor_at_the_top_level_is_an_error() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "web:",
            "  children:",
            "    frontend:",
            "frontend:",
            "  children:",
            "    web:",
        ]),
    );
    // Line 6: "web" as a child of frontend, after 4 spaces.
    f.assert_rejected(
        "hosts.yml",
        "hosts.yml:6:5",
        &["group \"web\"", "includes itself", "\"frontend\""],
    );
}

#[test]
fn same_host_with_two_different_ansible_host_addresses_is_an_error() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    etcd:",
            "      hosts:",
            "        n1:",
            "          ansible_host: 10.0.0.1",
            "    pg:",
            "      hosts:",
            "        n1:",
            "          ansible_host: 10.0.0.2",
        ]),
    );
    // Line 10: the second "ansible_host" after 10 spaces; the first is at 6:11.
    f.assert_rejected(
        "hosts.yml",
        "hosts.yml:10:11",
        &[
            "host \"n1\"",
            "ansible_host",
            "10.0.0.2",
            "10.0.0.1",
            "hosts.yml:6:11",
        ],
    );
}

#[test]
fn same_host_with_the_same_address_twice_is_fine() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  children:",
            "    etcd:",
            "      hosts:",
            "        n1: { ansible_host: 10.0.0.1 }",
            "    pg:",
            "      hosts:",
            "        n1: { ansible_host: 10.0.0.1 }",
        ]),
    );
    assert_eq!(
        f.vars_of("hosts.yml", "n1"),
        json!({"ansible_host": "10.0.0.1"})
    );
}

#[test]
fn group_vars_file_that_is_a_list_is_an_error_at_the_list() {
    let f = one_db_host();
    f.file(
        "group_vars/db.yml",
        &yaml(&[
            "# PostgreSQL settings",
            "- max_connections: 100",
            "- work_mem: 4MB",
        ]),
    );
    // The list starts on line 2, column 1.
    f.assert_rejected(
        "hosts.yml",
        "group_vars/db.yml:2:1",
        &["vars file must be a mapping", "not a list"],
    );
}

#[test]
fn group_vars_file_in_a_directory_that_is_a_list_is_an_error_at_the_list() {
    let f = one_db_host();
    f.file("group_vars/db/10-ok.yml", "a: 1\n").file(
        "group_vars/db/20-bad.yml",
        &yaml(&["---", "", "  - one", "  - two"]),
    );
    // The list starts on line 3 after 2 spaces.
    f.assert_rejected(
        "hosts.yml",
        "group_vars/db/20-bad.yml:3:3",
        &["vars file must be a mapping", "not a list"],
    );
}

#[test]
fn host_vars_file_that_is_not_a_mapping_is_an_error_at_its_value() {
    let f = one_db_host();
    f.file("host_vars/db1.yml", "\n\njust a sentence\n");
    f.assert_rejected(
        "hosts.yml",
        "host_vars/db1.yml:3:1",
        &["vars file must be a mapping", "not a string"],
    );
    f.file("host_vars/db1.yml", "[10.0.0.1, 10.0.0.2]\n");
    f.assert_rejected(
        "hosts.yml",
        "host_vars/db1.yml:1:1",
        &["vars file must be a mapping", "not a list"],
    );
}

#[test]
fn yaml_syntax_error_in_a_host_vars_file_names_that_file() {
    let f = one_db_host();
    f.file(
        "host_vars/db1.yml",
        &yaml(&["ports: [5432, 6432", "user: postgres"]),
    );
    // Line 2 "user" continues the unclosed list's plain scalar; its ':' at 2:5 is the error.
    f.assert_rejected("hosts.yml", "host_vars/db1.yml:2:5", &["YAML syntax error"]);
}

#[test]
fn missing_inventory_file_is_bad_input() {
    let f = Fixture::new();
    let out = f.hactl(&["inventory", "list", "nope.yml"]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("hactl: nope.yml: "), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

fn inventory_with_secrets() -> Fixture {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  vars:",
            "    postgres_password: hunter2",
            "    ansible_ssh_private_key_file: /keys/id_ed25519",
            "  children:",
            "    db:",
            "      vars:",
            "        replication_password: s3cr3t-repl",
            "      hosts:",
            "        db1:",
            "          ansible_host: 10.0.0.1",
            "          ansible_become_pass: b3come-me",
            "          api_token: !vault |",
            "            $ANSIBLE_VAULT;1.1;AES256",
            "            6231396566",
        ]),
    )
    .file("group_vars/db.yml", "patroni_api_secret: patr0ni-secret\n")
    .file("host_vars/db1.yml", "telegram_bot_token: 12345:tok3n\n");
    f
}

const SECRETS: [&str; 6] = [
    "hunter2",
    "s3cr3t-repl",
    "b3come-me",
    "ANSIBLE_VAULT",
    "patr0ni-secret",
    "tok3n",
];

#[test]
fn secrets_are_masked_in_the_text_listing() {
    let text = inventory_with_secrets().list_text("hosts.yml");
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(text.contains("    postgres_password: ********\n"), "{text}");
    assert!(text.contains("    api_token: ********\n"), "{text}");
    // Paths to keys are not secrets.
    assert!(
        text.contains("    ansible_ssh_private_key_file: /keys/id_ed25519\n"),
        "{text}"
    );
}

#[test]
fn secrets_are_masked_in_the_json_listing() {
    let f = inventory_with_secrets();
    let out = f.hactl(&["inventory", "list", "hosts.yml", "--output", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    for secret in SECRETS {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    let vars = &json_of(&out)["_meta"]["hostvars"]["db1"];
    assert_eq!(
        *vars,
        json!({
            "postgres_password": "********",
            "ansible_ssh_private_key_file": "/keys/id_ed25519",
            "replication_password": "********",
            "patroni_api_secret": "********",
            "ansible_host": "10.0.0.1",
            "ansible_become_pass": "********",
            "api_token": "********",
            "telegram_bot_token": "********",
        })
    );
}

fn inventory_with_nested_secrets() -> Fixture {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  hosts:",
            "    mon1:",
            "      alertmanager_receivers:",
            "        - name: ops",
            "          telegram_configs:",
            "            - bot_token: '123:tg-tok3n'",
            "              chat_id: 42",
            "        - name: mail",
            "          email_configs:",
            "            - auth_password: m4il-pw",
            "              to: ops@example.org",
            "      backup:",
            "        s3: {key: s3-k3y, bucket: pg}",
        ]),
    );
    f
}

#[test]
fn secrets_nested_in_maps_and_lists_are_masked_in_the_json_listing() {
    let f = inventory_with_nested_secrets();
    let out = f.hactl(&["inventory", "list", "hosts.yml", "--output", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    for secret in ["tg-tok3n", "m4il-pw", "s3-k3y"] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    let vars = &json_of(&out)["_meta"]["hostvars"]["mon1"];
    assert_eq!(
        *vars,
        json!({
            "alertmanager_receivers": [
                {"name": "ops", "telegram_configs": [{"bot_token": "********", "chat_id": 42}]},
                {"name": "mail", "email_configs": [{"auth_password": "********", "to": "ops@example.org"}]},
            ],
            "backup": {"s3": {"key": "********", "bucket": "pg"}},
        })
    );
}

#[test]
fn secrets_nested_in_maps_and_lists_are_masked_in_the_text_listing() {
    let text = inventory_with_nested_secrets().list_text("hosts.yml");
    for secret in ["tg-tok3n", "m4il-pw", "s3-k3y"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(text.contains(r#""bot_token":"********""#), "{text}");
    assert!(text.contains("ops@example.org"), "{text}");
}

#[test]
fn secrets_are_not_printed_by_the_graph() {
    let f = inventory_with_secrets();
    let out = f.hactl(&["inventory", "graph", "hosts.yml"]);
    assert_success("hactl", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for secret in SECRETS {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
}

// ---------------------------------------------------------------------------------------
// Graph
// ---------------------------------------------------------------------------------------

#[test]
fn graph_draws_nested_groups_with_their_hosts_sorted_by_name() {
    let f = three_levels();
    let out = f.hactl(&["inventory", "graph", "hosts.yml"]);
    assert_success("hactl", &out);
    let expected = "\
@all:
  |--@europe:
  |  |--@berlin:
  |  |  |--b1
  |  |--@paris:
  |  |  |--@rack1:
  |  |  |  |--p1
  |  |  |  |--p2
  |  |  |--p3
  |--@standalone:
  |  |--s1
";
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn graph_shows_ungrouped_hosts_only_when_there_are_some() {
    let f = Fixture::new();
    f.file(
        "hosts.yml",
        &yaml(&[
            "all:",
            "  hosts:",
            "    loner:",
            "  children:",
            "    web:",
            "      hosts:",
            "        web1:",
        ]),
    );
    let out = f.hactl(&["inventory", "graph", "hosts.yml"]);
    assert_success("hactl", &out);
    let expected = "\
@all:
  |--@ungrouped:
  |  |--loner
  |--@web:
  |  |--web1
";
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

// ---------------------------------------------------------------------------------------
// The shipped inventories
// ---------------------------------------------------------------------------------------

const SHIPPED: [&str; 3] = [
    "inventory/lab.yml",
    "inventory/vagrant.yml",
    "inventory/prod.example.yml",
];

fn shipped(path: &str) -> Value {
    let file = common::repo().join(path);
    let out = hactl_in(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &[
            "inventory",
            "list",
            file.to_str().expect("utf-8"),
            "--output",
            "json",
        ],
    );
    json_of(&out)
}

#[test]
fn shipped_inventories_load_for_list_and_graph() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for path in SHIPPED {
        for args in [
            vec!["inventory", "list", path],
            vec!["inventory", "list", path, "--output", "json"],
            vec!["inventory", "graph", path],
        ] {
            let out = hactl_in(root, &args);
            assert_success("hactl", &out);
            assert!(!out.stdout.is_empty(), "{args:?} printed nothing");
        }
    }
}

#[test]
fn shipped_inventories_have_the_same_four_hosts_in_the_same_roles() {
    for path in SHIPPED {
        let listing = shipped(path);
        let hosts: BTreeSet<String> = listing["_meta"]["hostvars"]
            .as_object()
            .expect("hostvars")
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            hosts,
            set(&["ptrn-1", "ptrn-2", "ptrn-3", "prmt-1"]),
            "{path}"
        );
        for host in ["ptrn-1", "ptrn-2", "ptrn-3"] {
            let groups = groups_of(&listing, host);
            for group in ["all", "etcd_cluster", "postgres_cluster"] {
                assert!(groups.contains(group), "{path}: {host} not in {group}");
            }
            assert!(!groups.contains("monitoring"), "{path}: {host}");
        }
        assert_eq!(
            groups_of(&listing, "prmt-1"),
            set(&["all", "monitoring", "grafana"]),
            "{path}"
        );
    }
}

#[test]
fn prod_example_has_the_four_hosts_with_their_addresses_and_groups() {
    let listing = shipped("inventory/prod.example.yml");
    let expected = [
        (
            "ptrn-1",
            "192.168.2.96",
            &["etcd_cluster", "postgres_cluster", "master"][..],
        ),
        (
            "ptrn-2",
            "192.168.2.91",
            &["etcd_cluster", "postgres_cluster", "replica"],
        ),
        (
            "ptrn-3",
            "192.168.2.98",
            &["etcd_cluster", "postgres_cluster", "replica"],
        ),
        ("prmt-1", "192.168.2.99", &["monitoring", "grafana"]),
    ];
    for (host, address, groups) in expected {
        let vars = &listing["_meta"]["hostvars"][host];
        assert_eq!(vars["ansible_host"], address, "{host}");
        assert_eq!(vars["ansible_user"], "deploy", "{host}");
        assert_eq!(vars["ansible_become"], true, "{host}");
        let mut want = set(groups);
        want.insert("all".into());
        assert_eq!(groups_of(&listing, host), want, "{host}");
    }
    assert_eq!(
        listing["postgres_cluster"],
        json!({"children": ["master", "replica"]})
    );
    assert_eq!(listing["master"], json!({"hosts": ["ptrn-1"]}));
    assert_eq!(listing["replica"], json!({"hosts": ["ptrn-2", "ptrn-3"]}));
}

#[test]
fn lab_inventory_puts_the_hosts_on_the_lab_network() {
    let listing = shipped("inventory/lab.yml");
    for (host, address) in [
        ("ptrn-1", "10.213.0.11"),
        ("ptrn-2", "10.213.0.12"),
        ("ptrn-3", "10.213.0.13"),
        ("prmt-1", "10.213.0.21"),
    ] {
        let vars = &listing["_meta"]["hostvars"][host];
        assert_eq!(vars["ansible_host"], address, "{host}");
        assert_eq!(vars["ansible_user"], "root", "{host}");
    }
}

#[test]
fn vagrant_inventory_matches_the_vagrantfile() {
    let listing = shipped("inventory/vagrant.yml");
    let vagrantfile = fs::read_to_string(common::repo().join("vagrant/Vagrantfile"))
        .expect("read vagrant/Vagrantfile");
    for (host, address) in [
        ("ptrn-1", "192.168.56.11"),
        ("ptrn-2", "192.168.56.12"),
        ("ptrn-3", "192.168.56.13"),
        ("prmt-1", "192.168.56.21"),
    ] {
        let vars = &listing["_meta"]["hostvars"][host];
        assert_eq!(vars["ansible_host"], address, "{host}");
        assert_eq!(vars["ansible_user"], "vagrant", "{host}");
        assert!(
            vagrantfile.lines().any(
                |l| l.contains(&format!("\"{host}\"")) && l.contains(&format!("\"{address}\""))
            ),
            "vagrant/Vagrantfile has no line giving {host} the address {address}"
        );
    }
}
