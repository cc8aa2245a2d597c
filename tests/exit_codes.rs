//! The README's exit codes, for every command that can give each: 0 ok · 1 a check or target
//! failed · 2 a host failed · 3 a host unreachable (and none failed) · 4 bad input, nothing was
//! run. Each case runs hactl as a user would and checks the code and what the user reads; a test
//! runs all its cases and lists every miss.
//!
//! Tests whose names end in `on_lab_hosts` need the lab. A failover-test that passes (0) and one
//! that refuses the lab's stack with a stopped replica (1) are in tests/stack_failover.rs.

mod common;

use std::path::Path;
use std::process::Output;

use common::fixture::Fixture;
use common::{hactl_in, lab, text, HOSTS, STATE_DIR};

/// Every way the commands of one test missed what they should do.
#[derive(Default)]
struct Misses(Vec<String>);

impl Misses {
    /// `hactl ARGS`, run in `dir`, exits `code` and prints each of `stdout` and `stderr`.
    fn expect(&mut self, dir: &Path, args: &[&str], code: i32, stdout: &[&str], stderr: &[&str]) {
        let out = hactl_in(dir, args);
        let mut wrong = vec![];
        if out.status.code() != Some(code) {
            wrong.push(format!("exit {code} expected"));
        }
        let printed = String::from_utf8_lossy(&out.stdout);
        let errors = String::from_utf8_lossy(&out.stderr);
        wrong.extend(
            stdout
                .iter()
                .filter(|s| !printed.contains(*s))
                .map(|s| format!("{s:?} expected on stdout")),
        );
        wrong.extend(
            stderr
                .iter()
                .filter(|s| !errors.contains(*s))
                .map(|s| format!("{s:?} expected on stderr")),
        );
        self.add(args, &wrong, &out);
    }

    /// `hactl ARGS`, run in `dir`, refuses its input: exit 4, nothing on stdout, and one line
    /// on stderr that starts with `hactl: AT` and says each of `says` once.
    fn bad_input(&mut self, dir: &Path, args: &[&str], at: &str, says: &[&str]) {
        let out = hactl_in(dir, args);
        let mut wrong = vec![];
        if out.status.code() != Some(4) {
            wrong.push("exit 4 expected".to_string());
        }
        if !out.stdout.is_empty() {
            wrong.push("nothing expected on stdout".to_string());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.lines().count() != 1 {
            wrong.push("one line expected on stderr".to_string());
        }
        let prefix = format!("hactl: {at}");
        if !stderr.starts_with(&prefix) {
            wrong.push(format!("stderr should start with {prefix:?}"));
        }
        for part in says {
            let times = stderr.matches(part).count();
            if times != 1 {
                wrong.push(format!(
                    "{part:?} expected once on stderr, found {times} times"
                ));
            }
        }
        self.add(args, &wrong, &out);
    }

    fn add(&mut self, args: &[&str], wrong: &[String], out: &Output) {
        if !wrong.is_empty() {
            self.0.push(format!(
                "hactl {}: {}\n{}",
                args.join(" "),
                wrong.join("; "),
                text(out)
            ));
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} of the commands missed:\n\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}

/// Two hosts on a closed loopback port, with the stack's ports closed too: whatever connects
/// to them is refused at once.
const CLOSED: &str = "all:
  vars:
    ansible_port: 1
    patroni_api_port: 1
    postgresql_port: 1
    etcd_client_port: 1
  children:
    etcd_cluster:
      hosts:
        db1: { ansible_host: 127.0.0.1 }
        db2: { ansible_host: 127.0.0.1 }
    postgres_cluster:
      hosts:
        db1:
        db2:
";

/// Probes of two kinds, one with group targets.
const PROBES: &str = "probes:
  - name: api
    type: tcp
    targets: {group: postgres_cluster, port: 8008}
  - name: web
    type: http
    targets: [\"http://127.0.0.1:1/\"]
";

#[test]
fn success_is_0_for_inventory_list_and_graph_and_probe_check() {
    let fx = Fixture::new();
    fx.file("inventory.yml", CLOSED);
    fx.file("probes.yml", PROBES);
    let dir = fx.path("");
    let mut misses = Misses::default();
    misses.expect(
        &dir,
        &["inventory", "list", "inventory.yml"],
        0,
        &["db1", "db2", "postgres_cluster"],
        &[],
    );
    misses.expect(
        &dir,
        &["inventory", "list", "inventory.yml", "--output", "json"],
        0,
        &["\"hostvars\"", "\"db1\""],
        &[],
    );
    misses.expect(
        &dir,
        &["inventory", "graph", "inventory.yml"],
        0,
        &["@postgres_cluster:", "db2"],
        &[],
    );
    misses.expect(
        &dir,
        &[
            "probe",
            "--check",
            "--config",
            "probes.yml",
            "-i",
            "inventory.yml",
        ],
        0,
        &["probes.yml: 2 probes, 3 targets"],
        &[],
    );
    misses.assert_none();
}

#[test]
fn success_is_0_for_apply_and_lab_status_on_lab_hosts() {
    let lab = lab();
    let site = Fixture::new();
    let site_file = site.site("all", "r", "- name: nothing to fail\n  command: \"true\"\n");
    let inventory = lab.inventory();
    let mut misses = Misses::default();
    misses.expect(
        &site.path(""),
        &[
            "apply",
            &inventory,
            "--site",
            &site_file.to_string_lossy(),
            "--limit",
            "ptrn-1",
        ],
        0,
        &["ptrn-1 : ok=1 changed=1 unreachable=0 failed=0 skipped=0"],
        &[],
    );
    let running: Vec<String> = HOSTS.iter().map(|h| format!("{h} ")).collect();
    let running: Vec<&str> = running
        .iter()
        .map(String::as_str)
        .chain(["running"])
        .collect();
    misses.expect(
        &site.path(""),
        &["lab", "status", "-i", &inventory],
        0,
        &running,
        &[],
    );
    misses.assert_none();
}

/// A Patroni REST API on loopback (https, a certificate of the test PKI) whose `/cluster` shows a leader, a stopped replica and a
/// streaming one; returns its port.
fn sick_patroni(cert: &std::path::Path, key: &std::path::Path) -> u16 {
    // Where Patroni says each member's API is: hactl goes by the inventory's addresses instead.
    let api = "https://127.0.0.1:8008/patroni";
    let body = format!(
        r#"{{"members": [
  {{"name": "db1", "role": "leader", "state": "running", "api_url": "{api}", "host": "127.0.0.1", "port": 5432, "timeline": 3}},
  {{"name": "db2", "role": "replica", "state": "stopped", "api_url": "{api}", "host": "127.0.0.1", "port": 5432, "lag": "unknown"}},
  {{"name": "db3", "role": "sync_standby", "state": "running", "api_url": "{api}", "host": "127.0.0.1", "port": 5432, "timeline": 3, "lag": 0}}
], "scope": "hactl"}}"#
    );
    common::http::serve_tls(cert, key, move |path| match path {
        "/cluster" => ("200 OK", body.clone().into_bytes()),
        _ => ("404 Not Found", b"{}".to_vec()),
    })
}

/// The PKI of the inventory `NAME.yml` in `dir` as apply would leave it (`NAME.pki/`: the CA
/// and hactl's client certificate), plus a server certificate for 127.0.0.1: (cert, key).
fn test_pki(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let pki = dir.join(format!("{name}.pki"));
    std::fs::create_dir_all(pki.join("control")).expect("pki dir");
    let script = "set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 30 -subj '/CN=test CA' 2>/dev/null
for who in server control/hactl; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $who.key -out $who.csr -subj /CN=$(basename $who) 2>/dev/null
done
printf 'subjectAltName=IP:127.0.0.1\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 30 -extfile server.ext 2>/dev/null
openssl x509 -req -in control/hactl.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out control/hactl.crt -days 30 -extfile client.ext 2>/dev/null
chmod 600 ca.key server.key control/hactl.key";
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(&pki)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (pki.join("server.crt"), pki.join("server.key"))
}

#[test]
fn a_failed_check_is_1_for_failover_test_and_lab_status() {
    let fx = Fixture::new();
    let (cert, key) = test_pki(&fx.path(""), "sick");
    let api_port = sick_patroni(&cert, &key);
    fx.file(
        "sick.yml",
        &format!(
            "all:
  vars:
    patroni_api_port: {api_port}
    postgresql_port: 1
    etcd_client_port: 1
  children:
    etcd_cluster:
      hosts:
        db1: {{ ansible_host: 127.0.0.1 }}
        db2: {{ ansible_host: 127.0.0.1 }}
        db3: {{ ansible_host: 127.0.0.1 }}
    postgres_cluster:
      hosts:
        db1:
        db2:
        db3:
"
        ),
    );
    // A lab this machine never made: its own state directory, bridge and network.
    let state = fx.path("lab-state");
    fx.file(
        "unmade-lab.yml",
        &format!(
            "all:
  vars:
    ansible_user: root
    hactl_lab_bridge: hactlx9
    hactl_lab_network: 10.219.0.0/24
    hactl_lab_state_dir: {}
  hosts:
    unmade-1: {{ ansible_host: 10.219.0.11 }}
    unmade-2: {{ ansible_host: 10.219.0.12 }}
",
            state.display()
        ),
    );
    let dir = fx.path("");
    let mut misses = Misses::default();
    misses.expect(
        &dir,
        &[
            "failover-test",
            "-i",
            "sick.yml",
            "--mode",
            "switchover",
            "--settle",
            "1",
        ],
        1,
        &[],
        &[
            "the cluster is not healthy, nothing was done",
            "db2 is stopped",
        ],
    );
    misses.expect(
        &dir,
        &["lab", "status", "-i", "unmade-lab.yml"],
        1,
        &["unmade-1 ", "unmade-2 ", "stopped"],
        &[],
    );
    misses.assert_none();
    assert!(!state.exists(), "lab status made {}", state.display());
}

#[test]
fn a_failed_host_is_2_for_apply_even_beside_an_unreachable_one_on_lab_hosts() {
    let lab = lab();
    let site = Fixture::new();
    let site_file = site.site("all", "r", "- name: fails\n  command: \"false\"\n");
    let site_file = site_file.to_string_lossy();
    // ptrn-1 fails its task; db-999, a closed port, cannot be reached.
    site.file(
        "mixed.yml",
        &format!(
            "all:
  vars:
    ansible_user: root
    ansible_ssh_private_key_file: {STATE_DIR}/id_ed25519
    hactl_known_hosts: {STATE_DIR}/known_hosts
  hosts:
    ptrn-1: {{ ansible_host: 10.213.0.11 }}
    db-999: {{ ansible_host: 127.0.0.1, ansible_port: 1 }}
"
        ),
    );
    let dir = site.path("");
    let mut misses = Misses::default();
    misses.expect(
        &dir,
        &[
            "apply",
            &lab.inventory(),
            "--site",
            &site_file,
            "--limit",
            "ptrn-1",
        ],
        2,
        &[
            "failed:     [ptrn-1] r : fails",
            "ptrn-1 : ok=0 changed=0 unreachable=0 failed=1 skipped=0",
        ],
        &[],
    );
    misses.expect(
        &dir,
        &["apply", "mixed.yml", "--site", &site_file],
        2,
        &[
            "unreachable: [db-999] connect",
            "failed:     [ptrn-1] r : fails",
            "ptrn-1 : ok=0 changed=0 unreachable=0 failed=1 skipped=0",
            "db-999 : ok=0 changed=0 unreachable=1 failed=0 skipped=0",
        ],
        &[],
    );
    misses.assert_none();
}

#[test]
fn an_unreachable_host_is_3_for_apply_and_failover_test() {
    let fx = Fixture::new();
    fx.file("closed.yml", CLOSED);
    let site_file = fx.site("all", "r", "- name: a\n  command: \"true\"\n");
    let dir = fx.path("");
    let mut misses = Misses::default();
    misses.expect(
        &dir,
        &[
            "apply",
            "closed.yml",
            "--site",
            &site_file.to_string_lossy(),
        ],
        3,
        &[
            "unreachable: [db1] connect",
            "db1 : ok=0 changed=0 unreachable=1 failed=0 skipped=0",
            "db2 : ok=0 changed=0 unreachable=1 failed=0 skipped=0",
        ],
        &[],
    );
    misses.expect(
        &dir,
        &[
            "failover-test",
            "-i",
            "closed.yml",
            "--mode",
            "switchover",
            "--settle",
            "1",
        ],
        3,
        &[],
        &["nothing was done", "Patroni"],
    );
    misses.assert_none();
}

#[test]
fn bad_input_is_4_for_every_command_with_one_message_naming_the_file() {
    let fx = Fixture::new();
    fx.file("closed.yml", CLOSED);
    fx.file("probes.yml", PROBES);
    fx.file("childs.yml", "all:\n  childs:\n    db: {}\n");
    fx.file(
        "one-member.yml",
        "all:\n  children:\n    postgres_cluster:\n      hosts:\n        db1: { ansible_host: 127.0.0.1 }\n",
    );
    fx.file(
        "bad-port.yml",
        &CLOSED.replace("patroni_api_port: 1", "patroni_api_port: notaport"),
    );
    fx.file(
        "bad-type.yml",
        "probes:\n  - name: a\n    type: htp\n    targets: [\"127.0.0.1:1\"]\n",
    );
    fx.file(
        "no-group.yml",
        "probes:\n  - name: a\n    type: tcp\n    targets: {group: nope, port: 1}\n",
    );
    fx.file(
        "bad-network.yml",
        "all:\n  vars:\n    hactl_lab_network: 300.1.0.0/24\n  hosts:\n    lab-1: {}\n",
    );
    fx.site("all", "r", "- name: a\n  pakage: {name: curl}\n");
    let dir = fx.path("");
    let missing = "No such file or directory (os error 2)";
    let mut misses = Misses::default();

    // A file that is not there, for every command that reads one.
    for args in [
        &["apply", "missing.yml"][..],
        &["apply", "closed.yml", "--site", "missing.yml"],
        &["failover-test", "-i", "missing.yml"],
        &["probe", "--check", "--config", "missing.yml"],
        &[
            "probe",
            "--check",
            "--config",
            "probes.yml",
            "-i",
            "missing.yml",
        ],
        &["inventory", "list", "missing.yml"],
        &["inventory", "graph", "missing.yml"],
        &["lab", "status", "-i", "missing.yml"],
        &["backup", "-i", "missing.yml"],
        &["backup", "list", "-i", "missing.yml"],
        &["restore", "-i", "missing.yml", "--target", "latest"],
        &["restore-test", "-i", "missing.yml"],
    ] {
        misses.bad_input(&dir, args, "missing.yml: ", &[missing]);
    }
    // An inventory with a key no group has, for every command that reads one.
    for args in [
        &["apply", "childs.yml"][..],
        &["failover-test", "-i", "childs.yml"],
        &[
            "probe",
            "--check",
            "--config",
            "probes.yml",
            "-i",
            "childs.yml",
        ],
        &["inventory", "list", "childs.yml"],
        &["inventory", "graph", "childs.yml"],
        &["lab", "status", "-i", "childs.yml"],
        &["backup", "list", "-i", "childs.yml"],
        &["restore", "-i", "childs.yml", "--target", "latest"],
    ] {
        misses.bad_input(&dir, args, "childs.yml:2:3: ", &["unknown key \"childs\""]);
    }
    // What each command reads besides the inventory.
    misses.bad_input(
        &dir,
        &["apply", "closed.yml", "--site", "site.yml"],
        "r/tasks.yml:2: ",
        &["pakage"],
    );
    misses.bad_input(
        &dir,
        &["apply", "closed.yml", "-e", "novalue"],
        "-e novalue: ",
        &["KEY=VALUE"],
    );
    // Backups need a repository host; a restore, a target it can name.
    for args in [
        &["backup", "-i", "one-member.yml"][..],
        &["backup", "list", "-i", "one-member.yml"],
        &["restore", "-i", "one-member.yml", "--target", "latest"],
        &["restore-test", "-i", "one-member.yml"],
    ] {
        misses.bad_input(&dir, args, "one-member.yml: ", &["no backup repository"]);
    }
    misses.bad_input(
        &dir,
        &["restore", "-i", "closed.yml", "--target", "yesterday"],
        "--target yesterday: ",
        &["time with its zone"],
    );
    misses.bad_input(
        &dir,
        &["restore-test", "-i", "closed.yml", "--table", "t;drop"],
        "--table t;drop: ",
        &["TABLE:COLUMN"],
    );
    misses.bad_input(
        &dir,
        &["failover-test", "-i", "one-member.yml"],
        "one-member.yml",
        &["postgres_cluster"],
    );
    misses.bad_input(
        &dir,
        &[
            "failover-test",
            "-i",
            "closed.yml",
            "--report",
            "missing/report.html",
        ],
        "--report missing/report.html: ",
        &[missing, "nothing was done"],
    );
    misses.bad_input(
        &dir,
        &["failover-test", "-i", "bad-port.yml", "--settle", "1"],
        "",
        &["patroni_api_port", "notaport"],
    );
    misses.bad_input(
        &dir,
        &["probe", "--check", "--config", "bad-type.yml"],
        "bad-type.yml:3: ",
        &["htp"],
    );
    misses.bad_input(
        &dir,
        &[
            "probe",
            "--check",
            "--config",
            "no-group.yml",
            "-i",
            "closed.yml",
        ],
        "no-group.yml:4: ",
        &["\"nope\""],
    );
    misses.bad_input(
        &dir,
        &["lab", "status", "-i", "bad-network.yml"],
        "bad-network.yml:3:",
        &["hactl_lab_network", "300.1.0.0/24"],
    );
    misses.assert_none();
}
