//! Bad roles and site files are refused before any host is contacted: exit 4, and the message
//! names the file, the line and what is wrong. The inventory points at a closed loopback port,
//! so a run that did try to connect would end unreachable (exit 3) instead.

mod common;

use common::fixture::Fixture;
use common::text;

const INVENTORY: &str = "all:
  vars:
    ansible_port: 1
  children:
    etcd_cluster:
      hosts:
        db1: { ansible_host: 127.0.0.1 }
        db2: { ansible_host: 127.0.0.1 }
";

/// The inventory and a site with one role `r` whose tasks are `tasks`, plus extra files.
fn site(tasks: &str, files: &[(&str, &str)]) -> Fixture {
    let fx = Fixture::new();
    fx.file("inventory.yml", INVENTORY);
    fx.file(
        "site/site.yml",
        "- name: test\n  hosts: etcd_cluster\n  roles: [r]\n",
    );
    fx.file("site/r/tasks.yml", tasks);
    for (path, body) in files {
        fx.file(&format!("site/r/{path}"), body);
    }
    fx
}

/// `hactl apply` of [`site`]; returns (stderr, exit).
fn apply(tasks: &str, files: &[(&str, &str)], extra_args: &[&str]) -> (String, Option<i32>) {
    let fx = site(tasks, files);
    let mut args = vec!["apply", "inventory.yml", "--site", "site/site.yml"];
    args.extend_from_slice(extra_args);
    let out = common::hactl_in(&fx.path(""), &args);
    assert!(out.stdout.is_empty(), "something ran:\n{}", text(&out));
    (
        String::from_utf8_lossy(&out.stderr).to_string(),
        out.status.code(),
    )
}

fn assert_refused(result: (String, Option<i32>), expected: &[&str]) {
    let (stderr, code) = result;
    assert_eq!(code, Some(4), "{stderr}");
    for part in expected {
        assert!(stderr.contains(part), "expected `{part}` in:\n{stderr}");
    }
}

#[test]
fn an_unknown_module_names_its_line() {
    assert_refused(
        apply(
            "- name: a\n  file: {path: /tmp/a, state: touch}\n- name: b\n  pakage: {name: curl}\n",
            &[],
            &[],
        ),
        &["site/r/tasks.yml:4: unknown module or keyword `pakage`"],
    );
}

#[test]
fn an_unknown_argument_names_its_line() {
    assert_refused(
        apply(
            "- name: pkgs\n  package:\n    name: curl\n    stat: present\n",
            &[],
            &[],
        ),
        &["site/r/tasks.yml:4: package: unknown argument `stat`"],
    );
}

#[test]
fn a_missing_argument_is_refused() {
    assert_refused(
        apply("- name: dir\n  file: {state: directory}\n", &[], &[]),
        &["site/r/tasks.yml:2: file: missing argument `path`"],
    );
}

#[test]
fn a_wrongly_typed_argument_is_refused_after_rendering() {
    assert_refused(
        apply(
            "- name: wait\n  wait_for: {port: \"{{ inventory_hostname }}\"}\n",
            &[],
            &[],
        ),
        &["site/r/tasks.yml:2: wait_for: expected a whole number, got \"db1\""],
    );
}

#[test]
fn an_undefined_variable_in_arguments_names_its_line() {
    assert_refused(
        apply(
            "- name: a\n  file:\n    path: \"/etc/{{ nope }}\"\n    state: touch\n",
            &[],
            &[],
        ),
        &["site/r/tasks.yml:3: undefined variable", "nope"],
    );
}

#[test]
fn an_undefined_variable_inside_a_default_names_the_default() {
    assert_refused(
        apply(
            "- name: a\n  file: {path: \"{{ conf_dir }}\", state: directory}\n",
            &[(
                "defaults.yml",
                "base: /etc\nconf_dir: \"{{ base }}/{{ missing_name }}\"\n",
            )],
            &[],
        ),
        &["site/r/defaults.yml:2", "conf_dir", "missing_name"],
    );
}

#[test]
fn a_template_syntax_error_names_the_template_and_line() {
    assert_refused(
        apply(
            "- name: t\n  template: {src: a.j2, dest: /tmp/a}\n",
            &[("templates/a.j2", "ok\n{% if x %}\nnever closed\n")],
            &[],
        ),
        &["site/r/templates/a.j2:", "syntax error"],
    );
}

#[test]
fn a_missing_template_is_refused() {
    assert_refused(
        apply(
            "- name: t\n  template: {src: nope.j2, dest: /tmp/a}\n",
            &[("templates/a.j2", "x\n")],
            &[],
        ),
        &["site/r/tasks.yml:2: template: no `nope.j2` in role r's templates/ (it has a.j2)"],
    );
}

#[test]
fn notifying_a_handler_that_does_not_exist_is_refused() {
    assert_refused(
        apply(
            "- name: conf\n  copy: {content: x, dest: /tmp/x}\n  notify: restart nothing\n",
            &[(
                "handlers.yml",
                "- name: restart etcd\n  service: {name: etcd, state: restarted}\n",
            )],
            &[],
        ),
        &[
            "site/r/tasks.yml:1: notify: no handler `restart nothing`",
            "restart etcd",
        ],
    );
}

#[test]
fn a_yaml_error_in_tasks_names_its_line() {
    assert_refused(
        apply("- name: a\n  file: {path: /tmp/a\n- name: b\n", &[], &[]),
        &["site/r/tasks.yml:"],
    );
}

#[test]
fn a_role_that_does_not_exist_is_refused() {
    let fx = Fixture::new();
    fx.file("inventory.yml", INVENTORY);
    fx.file(
        "site.yml",
        "- name: test\n  hosts: etcd_cluster\n  roles:\n    - nope\n",
    );
    let out = common::hactl_in(
        &fx.path(""),
        &["apply", "inventory.yml", "--site", "site.yml"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("site.yml:4: role `nope` not found"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_play_on_a_group_the_inventory_lacks_is_refused() {
    let fx = Fixture::new();
    fx.file("inventory.yml", INVENTORY);
    fx.file(
        "site.yml",
        "- name: test\n  hosts: monitoring\n  roles: [r]\n",
    );
    fx.file("r/tasks.yml", "- name: a\n  command: \"true\"\n");
    let out = common::hactl_in(
        &fx.path(""),
        &["apply", "inventory.yml", "--site", "site.yml"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("site.yml:1: hosts: no group or host `monitoring`"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_command_line_values_are_refused() {
    let tasks = "- name: a\n  command: \"true\"\n";
    assert_refused(
        apply(tasks, &[], &["-e", "novalue"]),
        &["-e novalue: expected KEY=VALUE"],
    );
    assert_refused(
        apply(tasks, &[], &["--limit", "db9"]),
        &["--limit db9: no such host or group"],
    );
}

#[test]
fn a_closed_port_is_unreachable_not_bad_input() {
    let fx = Fixture::new();
    fx.file("inventory.yml", INVENTORY);
    fx.file(
        "site.yml",
        "- name: test\n  hosts: etcd_cluster\n  roles: [r]\n",
    );
    fx.file("r/tasks.yml", "- name: a\n  command: \"true\"\n");
    let out = common::hactl_in(
        &fx.path(""),
        &["apply", "inventory.yml", "--site", "site.yml"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("db1 : ok=0 changed=0 unreachable=1 failed=0 skipped=0"),
        "{stdout}"
    );
}

/// What a registered result holds is known only when the task has run: reading into it the way
/// Ansible users do passes the check (the run then fails to connect: exit 3, not 4), while an
/// undefined variable beside it is still refused.
#[test]
fn registered_results_of_unknown_shape_pass_the_check_but_a_typo_beside_them_does_not() {
    let reads = "- {name: api, uri: {url: 'http://localhost/'}, register: api}
- {name: list, command: 'echo []', register: listed}
- {name: each, command: 'echo {{ item }}', loop: [a, b], register: each}
- name: reads
  copy:
    dest: /tmp/reads
    content: \"{{ api.json.items[0].name }} {{ listed.stdout | from_json | length }} {{ each.results[1].stdout }}\"
  when: api.json.ready
";
    let fx = site(reads, &[]);
    let out = common::hactl_in(
        &fx.path(""),
        &["apply", "inventory.yml", "--site", "site/site.yml"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    let typo = format!("{reads}- {{name: typo, copy: {{dest: /tmp/t, content: \"{{{{ listed.stdout }}}}{{{{ nope }}}}\"}}}}\n");
    assert_refused(
        apply(&typo, &[], &[]),
        &["site/r/tasks.yml:9: undefined variable", "nope"],
    );
}
