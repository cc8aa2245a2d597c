//! The built-in roles' shell lines: every value in them is quoted for the shell, and for SQL
//! where it goes into SQL.

use std::os::unix::fs::PermissionsExt as _;

use serde_json::{json, Value};

use super::source::{builtin_roles, builtin_text};

/// What a shell runs, in a task: `shell`, `command`, `wait_for.command`, `validate`.
fn shell_texts(task: &Value) -> Vec<String> {
    let mut out = vec![];
    for module in ["shell", "command"] {
        match &task[module] {
            Value::String(s) => out.push(s.clone()),
            v => out.extend(v["cmd"].as_str().map(str::to_string)),
        }
    }
    out.extend(task["wait_for"]["command"].as_str().map(str::to_string));
    for module in ["template", "copy"] {
        out.extend(task[module]["validate"].as_str().map(str::to_string));
    }
    out
}

/// Every task and handler of the built-in roles: (file, task).
fn builtin_tasks() -> Vec<(String, Value)> {
    let mut out = vec![];
    for role in builtin_roles() {
        for file in ["tasks.yml", "handlers.yml"] {
            let path = format!("{role}/{file}");
            let Some(text) = builtin_text(&path) else {
                continue;
            };
            let node = crate::yaml::parse(&text).unwrap_or_else(|e| panic!("{path}: {e:?}"));
            for task in node.to_json().as_array().into_iter().flatten() {
                out.push((path.clone(), task.clone()));
            }
        }
    }
    out
}

fn prober_script() -> String {
    builtin_tasks()
        .into_iter()
        .find(|(_, t)| t["name"] == "hactl's login roles")
        .and_then(|(_, t)| t["shell"]["cmd"].as_str().map(str::to_string))
        .expect("role postgresql_prober's script")
}

/// Variables that hold the start of a command line (a program and its TLS options): each value
/// inside their definitions is quoted, which the test below checks.
const COMMAND_PREFIXES: [&str; 3] = ["etcd_ctl", "etcd_ctl_local", "patroni_curl"];

#[test]
fn the_command_prefixes_quote_every_value_inside() {
    let expression = regex::Regex::new(r"(?s)\{\{(.*?)\}\}").unwrap();
    let mut found = 0;
    for role in builtin_roles() {
        let path = format!("{role}/defaults.yml");
        let Some(text) = builtin_text(&path) else {
            continue;
        };
        let node = crate::yaml::parse(&text).unwrap_or_else(|e| panic!("{path}: {e:?}"));
        for name in COMMAND_PREFIXES {
            let Some(definition) = node.to_json()[name].as_str().map(str::to_string) else {
                continue;
            };
            found += 1;
            for inner in expression.captures_iter(&definition) {
                let expr = inner[1].trim();
                assert!(
                    expr.ends_with("| quote") || COMMAND_PREFIXES.contains(&expr),
                    "{path}: {name}: `{{{{ {expr} }}}}` reaches a shell unquoted"
                );
            }
        }
    }
    assert_eq!(found, COMMAND_PREFIXES.len(), "each prefix is defined once");
}

#[test]
fn every_value_in_a_built_in_roles_shell_line_is_quoted() {
    let expression = regex::Regex::new(r"(?s)\{\{(.*?)\}\}").unwrap();
    let mut lines = 0;
    for (file, task) in builtin_tasks() {
        for text in shell_texts(&task) {
            lines += 1;
            for found in expression.captures_iter(&text) {
                let expr = found[1].trim();
                assert!(
                    expr.ends_with("| quote") || COMMAND_PREFIXES.contains(&expr),
                    "{file}: task {}: `{{{{ {expr} }}}}` reaches a shell unquoted",
                    task["name"]
                );
            }
        }
    }
    assert!(
        lines > 10,
        "only {lines} shell lines found: is the walk right?"
    );
}

#[test]
fn the_probers_role_and_table_names_are_quoted_for_the_shell_and_for_sql() {
    let user = r#"o'x"$(id); drop role y; --"#;
    let table = r#"t"; drop table z; --"#;
    let env = crate::template::environment(None);
    // The loop's item for the prober's role: in pg_monitor, with its table.
    let vars =
        json!({"postgresql_port": 5432, "item": {"user": user, "monitor": true, "table": table}});
    let script = env
        .render_str(
            &prober_script(),
            minijinja::Value::from(minijinja::value::Serde(vars)),
        )
        .expect("render");
    // runuser runs what follows `--`; psql logs its arguments and its stdin, answers 0 to the
    // counts, and refuses the prober's login over TCP (so the password is set).
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let fake = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    fake(
        "runuser",
        "while [ \"$1\" != -- ]; do shift; done; shift; exec \"$@\"\n",
    );
    fake(
        "psql",
        r#"for a in "$@"; do printf 'arg: %s\n' "$a" >> "$FAKE_LOG"; done
case " $* " in *" -h "*) exit 2;; *" -f - "*) sed 's/^/stdin: /' >> "$FAKE_LOG";; esac
case "$*" in *"select count(*)"*) echo 0;; esac
"#,
    );
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("PATH", path)
        .env("FAKE_LOG", &log)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"pw'\\x\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("created {user}, password set, table {table}\n")
    );
    let log = std::fs::read_to_string(&log).unwrap();
    for expected in [
        r#"arg: select count(*) from pg_roles where rolname = 'o''x"$(id); drop role y; --'"#,
        r#"arg: create role "o'x""$(id); drop role y; --" login in role pg_monitor"#,
        r#"arg: o'x"$(id); drop role y; --"#,
        r#"stdin: alter role "o'x""$(id); drop role y; --" password E'pw''\\x'"#,
        r#"arg: select count(*) from pg_tables where tablename = 't"; drop table z; --' and tableowner = 'o''x"$(id); drop role y; --'"#,
        r#"arg: create table if not exists "t""; drop table z; --" (probe text primary key, writes bigint not null, at timestamptz not null)"#,
        r#"arg: alter table "t""; drop table z; --" owner to "o'x""$(id); drop role y; --""#,
    ] {
        assert!(
            log.lines().any(|l| l == expected),
            "missing: {expected}\nlog:\n{log}"
        );
    }
}
