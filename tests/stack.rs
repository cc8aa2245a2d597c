//! The HA stack (roles/site.yml, built in) applied to bare lab hosts: a healthy etcd cluster, a
//! Patroni cluster that replicates, Prometheus scraping everything with its rules loaded; then
//! a no-op apply, a parameter change through Patroni, and a fourth etcd member.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{lab, text, Lab, HOSTS, INVENTORY};
use serde_json::Value;

const CLUSTER: [&str; 3] = ["ptrn-1", "ptrn-2", "ptrn-3"];

fn apply(inventory: &str, extra: &[&str]) -> Output {
    let mut args = vec!["apply", inventory, "--output", "json"];
    args.extend_from_slice(extra);
    common::hactl(&args)
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn changed(out: &Output) -> Vec<String> {
    events(out)
        .iter()
        .filter(|e| e["event"] == "task" && e["status"] == "changed")
        .map(|e| {
            format!(
                "{} {} : {}",
                e["host"].as_str().unwrap_or(""),
                e["role"].as_str().unwrap_or(""),
                e["task"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn assert_applied(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
}

/// Retries `check` for up to `secs` seconds; the last failure is the panic message.
fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if start.elapsed() > Duration::from_secs(secs) => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

fn json_from(lab: &Lab, host: &str, command: &str) -> Value {
    let out = lab.run(host, command);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{command} on {host}: {e}: {out}"))
}

fn patroni_cluster(lab: &Lab) -> Value {
    json_from(lab, "ptrn-1", "curl -sf http://10.213.0.11:8008/cluster")
}

fn leader(lab: &Lab) -> String {
    patroni_cluster(lab)["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "leader"))
        .and_then(|m| m["name"].as_str())
        .expect("a leader")
        .to_string()
}

fn psql(lab: &Lab, host: &str, sql: &str) -> String {
    lab.run(
        host,
        &format!("runuser -u postgres -- psql -tAXc {}", shell_word(sql)),
    )
}

fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Removes a file under inventory/ when dropped, even if the test fails.
struct InventoryFile(PathBuf);

impl InventoryFile {
    fn write(relative: &str, text: &str) -> InventoryFile {
        let path = common::repo().join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("inventory dir");
        }
        std::fs::write(&path, text).expect("inventory file");
        InventoryFile(path)
    }
}

impl Drop for InventoryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent().filter(|d| d.ends_with("group_vars")) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn one_apply_builds_the_ha_stack_from_bare_hosts_and_changes_only_what_changed() {
    let mut lab = lab();
    let down = lab.down();
    assert!(down.status.success(), "{}", text(&down));
    let up = lab.up();
    assert!(up.status.success(), "{}", text(&up));

    let started = Instant::now();
    let first = apply(INVENTORY, &[]);
    let first_secs = started.elapsed().as_secs_f64();
    assert_applied(&first);
    eprintln!("first apply of the stack on bare hosts: {first_secs:.1} s");

    // etcd: three healthy members.
    let health = lab.run(
        "ptrn-1",
        "etcdctl --endpoints=http://10.213.0.11:2379 endpoint health --cluster 2>&1",
    );
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");

    // Patroni: one leader, two replicas, both streaming from it.
    let cluster = patroni_cluster(&lab);
    let members = cluster["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{cluster}");
    assert_eq!(
        members.iter().filter(|m| m["role"] == "leader").count(),
        1,
        "{cluster}"
    );
    assert_eq!(
        members
            .iter()
            .filter(|m| m["role"] == "replica" || m["role"] == "sync_standby")
            .count(),
        2,
        "{cluster}"
    );
    assert!(members.iter().all(|m| m["state"] == "running"), "{cluster}");
    let leader = leader(&lab);
    let streaming = psql(
        &lab,
        &leader,
        "select count(*) from pg_stat_replication where state = 'streaming'",
    );
    assert_eq!(streaming, "2");
    let sync = psql(
        &lab,
        &leader,
        "select count(*) from pg_stat_replication where sync_state = 'sync'",
    );
    assert_eq!(sync, "1", "synchronous_mode gives one synchronous standby");

    // A row written on the leader is read on both replicas.
    psql(
        &lab,
        &leader,
        "create table if not exists hactl_check (id int primary key, note text)",
    );
    psql(&lab, &leader, "insert into hactl_check values (1, 'written on the leader') on conflict (id) do update set note = excluded.note");
    for replica in CLUSTER.iter().filter(|h| **h != leader) {
        eventually(20, &format!("the row on {replica}"), || {
            let got = psql(&lab, replica, "select note from hactl_check where id = 1");
            (got == "written on the leader").then_some(()).ok_or(got)
        });
    }

    // Prometheus: every target up, the rule groups loaded without errors.
    eventually(90, "every Prometheus target up", || {
        let targets = json_from(
            &lab,
            "prmt-1",
            "curl -sf http://10.213.0.21:9090/api/v1/targets",
        );
        let active = targets["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (job, count) in [
            ("node", 4),
            ("etcd", 3),
            ("patroni", 3),
            ("prometheus", 1),
            ("prober", 1),
        ] {
            let up = active
                .iter()
                .filter(|t| t["labels"]["job"] == job && t["health"] == "up")
                .count();
            if up != count {
                return Err(format!("{job}: {up} of {count} up: {targets}"));
            }
        }
        Ok(())
    });
    let rules = json_from(
        &lab,
        "prmt-1",
        "curl -sf http://10.213.0.21:9090/api/v1/rules",
    );
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    for expected in ["hactl-host", "hactl-etcd", "hactl-patroni", "hactl-prober"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
    {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    lab.run("prmt-1", "curl -sf http://10.213.0.21:9093/-/ready");

    // Secrets: generated once, 0600, never printed.
    let store = std::fs::read_to_string(common::repo().join("inventory/lab.secrets.yml"))
        .expect("secret store");
    let output = text(&first);
    for line in store.lines().filter(|l| !l.starts_with('#')) {
        let value = line
            .split_once(": ")
            .map(|(_, v)| v.trim_matches('"'))
            .unwrap_or_default();
        assert!(
            value.len() >= 16 && !output.contains(value),
            "a secret was printed or is short"
        );
    }
    assert_eq!(
        lab.run("ptrn-1", "stat -c %a:%U /etc/patroni/config.yml"),
        "600:postgres"
    );

    // A second apply changes nothing.
    let started = Instant::now();
    let second = apply(INVENTORY, &[]);
    eprintln!(
        "no-op apply of the stack: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_applied(&second);
    assert_eq!(changed(&second), Vec::<String>::new());

    // work_mem in the inventory: changed through Patroni only, the leader not restarted.
    let leader = self::leader(&lab);
    let started_at = psql(&lab, &leader, "select pg_postmaster_start_time()");
    let params = InventoryFile::write(
        "inventory/group_vars/postgres_cluster.yml",
        "postgresql_parameters_extra:\n  work_mem: 8MB\n",
    );
    let change = apply(INVENTORY, &[]);
    assert_applied(&change);
    let changes = changed(&change);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        changes[0].ends_with("patroni : dynamic configuration, through Patroni"),
        "{changes:?}"
    );
    for host in CLUSTER {
        eventually(30, &format!("work_mem on {host}"), || {
            let v = psql(&lab, host, "show work_mem");
            (v == "8MB").then_some(()).ok_or(v)
        });
    }
    assert_eq!(self::leader(&lab), leader, "the leader changed");
    assert_eq!(
        psql(&lab, &leader, "select pg_postmaster_start_time()"),
        started_at,
        "the leader restarted"
    );

    // max_connections needs a restart: the replicas first, then a switchover, then the old leader.
    drop(params);
    let params = InventoryFile::write(
        "inventory/group_vars/postgres_cluster.yml",
        "postgresql_parameters_extra:\n  work_mem: 8MB\n  max_connections: 120\n",
    );
    let change = apply(INVENTORY, &[]);
    assert_applied(&change);
    let changes = changed(&change);
    assert!(
        changes
            .iter()
            .any(|c| c.ends_with("patroni_restart : pending restarts, replicas first")),
        "{changes:?}"
    );
    for host in CLUSTER {
        assert_eq!(psql(&lab, host, "show max_connections"), "120", "{host}");
    }
    let cluster = patroni_cluster(&lab);
    let members = cluster["members"].as_array().cloned().unwrap_or_default();
    assert!(
        members
            .iter()
            .all(|m| m["pending_restart"].is_null() && m["state"] == "running"),
        "{cluster}"
    );
    let new_leader = self::leader(&lab);
    assert_ne!(
        new_leader, leader,
        "the old leader was restarted in place instead of after a switchover"
    );
    assert_ne!(
        psql(&lab, &leader, "select pg_postmaster_start_time()"),
        started_at,
        "the old leader never restarted"
    );
    assert_eq!(
        psql(&lab, &leader, "select pg_is_in_recovery()"),
        "t",
        "the old leader is a replica now"
    );

    // A fourth etcd member joins the running cluster...
    let four = std::fs::read_to_string(common::repo().join(INVENTORY))
        .expect("lab inventory")
        .replace(
            "        ptrn-3: { ansible_host: 10.213.0.13 }\n",
            "        ptrn-3: { ansible_host: 10.213.0.13 }\n        prmt-1: { ansible_host: 10.213.0.21 }\n",
        )
        .replace("  vars:\n", "  vars:\n    hactl_secrets_file: lab.secrets.yml\n");
    let four_file = InventoryFile::write("inventory/lab-etcd4.yml", &four);
    let joined = apply("inventory/lab-etcd4.yml", &[]);
    assert_applied(&joined);
    let list = lab.run(
        "ptrn-1",
        "etcdctl --endpoints=http://10.213.0.11:2379 member list",
    );
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.contains(", started, prmt-1, "), "{list}");
    let health = lab.run(
        "ptrn-1",
        "etcdctl --endpoints=http://10.213.0.11:2379 endpoint health --cluster 2>&1",
    );
    assert_eq!(health.matches("is healthy").count(), 4, "{health}");
    drop(four_file);

    // ...and leaving it out of the inventory again is reported, with what to do.
    let left = apply(INVENTORY, &[]);
    assert_applied(&left);
    let report = String::from_utf8_lossy(&left.stdout);
    assert!(
        report.contains("etcd member prmt-1 at http://10.213.0.21:2380"),
        "{report}"
    );
    assert!(report.contains("etcdctl member remove"), "{report}");
    let list = lab.run(
        "ptrn-1",
        "etcdctl --endpoints=http://10.213.0.11:2379 member list",
    );
    assert_eq!(
        list.lines().count(),
        4,
        "hactl removed a member by itself: {list}"
    );
    drop(params);
    // Back to three members for whatever runs next.
    let id = list
        .lines()
        .find(|l| l.contains("prmt-1"))
        .and_then(|l| l.split(',').next())
        .expect("prmt-1's id");
    lab.run(
        "ptrn-1",
        &format!("etcdctl --endpoints=http://10.213.0.11:2379 member remove {id}"),
    );
    lab.run(
        "prmt-1",
        "systemctl disable --now etcd; rm -rf /var/lib/etcd/hactl/member",
    );
    for host in HOSTS {
        lab.run(host, "true");
    }
}
