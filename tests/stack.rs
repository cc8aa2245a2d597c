//! The HA stack (roles/site.yml, built in) applied to bare lab hosts: a healthy etcd cluster, a
//! Patroni cluster that replicates, Prometheus scraping everything with its rules loaded; then
//! a no-op apply, a parameter change through Patroni, and a fourth etcd member.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::events::{changed, events};
use common::fixture::Fixture;
use common::{eventually, lab, patroni_api, text, Lab, CLUSTER, ETCDCTL, HOSTS};
use serde_json::Value;

fn apply(inventory: &str) -> Output {
    common::hactl(&["apply", inventory, "--output", "json"])
}

/// "role : task" of every task a run reports changed, one per host it changed on.
fn changed_tasks(out: &Output) -> Vec<String> {
    changed(&events(out))
        .into_iter()
        .map(|(_, task)| task)
        .collect()
}

fn assert_applied(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
}

/// Waits up to `secs` seconds for `check`; the last failure is the panic message.
fn within(secs: u64, what: &str, check: impl FnMut() -> Result<(), String>) {
    eventually(what, Duration::from_secs(secs), check)
}

fn json_from(lab: &Lab, host: &str, command: &str) -> Value {
    let out = lab.run(host, command);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{command} on {host}: {e}: {out}"))
}

fn patroni_cluster(lab: &Lab) -> Value {
    json_from(lab, "ptrn-1", &patroni_api("/cluster"))
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

/// Variants of the lab inventory in a temporary folder (never beside the checkout's): `lab.yml`
/// and the group_vars/ a step adds, sharing the lab's secret store and PKI so the passwords and
/// certificates stay.
struct Variants {
    dir: Fixture,
}

impl Variants {
    fn new(lab: &Lab) -> Variants {
        let dir = Fixture::new();
        let shipped = std::fs::read_to_string(lab.inventory()).expect("lab inventory");
        let store = format!(
            "  vars:\n    hactl_secrets_file: {}\n    hactl_pki_dir: {}\n",
            lab.secrets().display(),
            lab.secrets().with_file_name("lab.pki").display()
        );
        dir.file("lab.yml", &shipped.replacen("  vars:\n", &store, 1));
        Variants { dir }
    }

    /// Writes `name` beside lab.yml (a variant or a group_vars/ file); returns its path.
    fn write(&self, name: &str, text: &str) -> String {
        self.dir.file(name, text);
        self.dir.path(name).to_string_lossy().into_owned()
    }

    fn lab(&self) -> String {
        self.dir.path("lab.yml").to_string_lossy().into_owned()
    }
}

#[test]
fn one_apply_builds_the_ha_stack_from_bare_hosts_and_changes_only_what_changed() {
    let mut lab = lab();
    lab.down();
    lab.up();

    let started = Instant::now();
    let first = apply(&lab.inventory());
    let first_secs = started.elapsed().as_secs_f64();
    assert_applied(&first);
    eprintln!("first apply of the stack on bare hosts: {first_secs:.1} s");

    // etcd: three healthy members.
    let health = lab.run(
        "ptrn-1",
        &format!("{ETCDCTL} --endpoints=https://10.213.0.11:2379 endpoint health --cluster 2>&1"),
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
    // Patroni 4 (the default, from the locked wheels): the leader runs, the replicas stream.
    for m in members {
        let want = if m["role"] == "leader" {
            "running"
        } else {
            "streaming"
        };
        assert_eq!(m["state"], want, "{cluster}");
    }
    for host in CLUSTER {
        assert_eq!(
            lab.run(host, "/opt/patroni/bin/patroni --version"),
            "patroni 4.1.5",
            "{host}"
        );
    }
    let leader = lab.leader();
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
        within(20, &format!("the row on {replica}"), || {
            let got = psql(&lab, replica, "select note from hactl_check where id = 1");
            (got == "written on the leader").then_some(()).ok_or(got)
        });
    }

    // Prometheus: every target listed at once (apply waited for it), every target up, the
    // rule groups loaded without errors.
    let body = lab.monitoring_get("https://10.213.0.21:9090/api/v1/targets?state=active");
    let listed: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(
        listed["data"]["activeTargets"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0),
        4 + 3 * 5 + 3,
        "node ×4, etcd, patroni, postgres, pgbouncer, haproxy ×3, prometheus, alertmanager, prober: {body}"
    );
    within(90, "every Prometheus target up", || {
        let body = lab.monitoring_get("https://10.213.0.21:9090/api/v1/targets");
        let targets: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
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
            ("pgbouncer", 3),
            ("haproxy", 3),
            ("postgres", 3),
        ] {
            let up = active
                .iter()
                .filter(|t| t["labels"]["job"] == job && t["health"] == "up")
                .count();
            if up != count {
                return Err(format!("{job}: {up} of {count} up: {targets}"));
            }
            // Every endpoint is scraped over https.
            let plain: Vec<&Value> = active
                .iter()
                .filter(|t| {
                    !t["scrapeUrl"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("https://")
                })
                .collect();
            if !plain.is_empty() {
                return Err(format!("scraped without TLS: {plain:?}"));
            }
        }
        Ok(())
    });
    let rules: Value =
        serde_json::from_str(&lab.monitoring_get("https://10.213.0.21:9090/api/v1/rules"))
            .expect("the rules");
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    for expected in [
        "hactl-host",
        "hactl-etcd",
        "hactl-patroni",
        "hactl-prober",
        "hactl-endpoint",
        "hactl-backup",
        "hactl-postgres",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
    {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    // The installed replication-lag rule fires for a replica behind the leader, and never for
    // the leader (Patroni exports a received location of 0 there).
    let lag_test = r#"rule_files: [/etc/prometheus/rules/hactl-patroni.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - {series: 'patroni_xlog_location{scope="s",instance="a:8008",host="a"}', values: '300000000x10'}
      - {series: 'patroni_xlog_received_location{scope="s",instance="a:8008",host="a"}', values: '0x10'}
      - {series: 'patroni_replica{scope="s",instance="a:8008",host="a"}', values: '0x10'}
      - {series: 'patroni_xlog_location{scope="s",instance="b:8008",host="b"}', values: '0x10'}
      - {series: 'patroni_xlog_received_location{scope="s",instance="b:8008",host="b"}', values: '299999000x10'}
      - {series: 'patroni_replica{scope="s",instance="b:8008",host="b"}', values: '1x10'}
      - {series: 'patroni_xlog_location{scope="s",instance="c:8008",host="c"}', values: '0x10'}
      - {series: 'patroni_xlog_received_location{scope="s",instance="c:8008",host="c"}', values: '100000000x10'}
      - {series: 'patroni_replica{scope="s",instance="c:8008",host="c"}', values: '1x10'}
    alert_rule_test:
      - eval_time: 5m
        alertname: PatroniReplicationLag
        exp_alerts:
          - exp_labels: {severity: warning, scope: s, instance: "c:8008", host: c}
            exp_annotations: {summary: "replica c lags 190.7MiB behind the leader"}
"#;
    let out = lab.ssh(
        "prmt-1",
        &format!(
            "cat > /tmp/hactl-patroni-rules-test.yml <<'EOF'\n{lag_test}EOF\n\
             PATH=$PATH:/usr/local/bin promtool test rules /tmp/hactl-patroni-rules-test.yml"
        ),
    );
    assert!(out.status.success(), "promtool test rules: {}", text(&out));
    assert!(!lab
        .monitoring_get("https://10.213.0.21:9093/-/ready")
        .is_empty());

    // postgres_exporter: PostgreSQL itself seen on every member, through a role in pg_monitor
    // that is no superuser; every series the PostgreSQL alerts read is there.
    let query = |q: &str| -> Vec<Value> {
        lab.prometheus(q)["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    within(90, "pg_up is 1 on every member", || {
        let up = query("pg_up");
        let hosts: Vec<&str> = up
            .iter()
            .filter(|s| s["value"][1] == "1")
            .filter_map(|s| s["metric"]["host"].as_str())
            .collect();
        (hosts.len() == 3).then_some(()).ok_or(format!("{up:?}"))
    });
    assert_eq!(
        psql(
            &lab,
            &leader,
            "select rolsuper, pg_has_role('prometheus', 'pg_monitor', 'member') from pg_roles where rolname = 'prometheus'"
        ),
        "f|t",
        "the exporter's role: superuser | in pg_monitor"
    );
    for series in [
        "pg_settings_max_connections",
        "pg_stat_activity_count",
        "pg_stat_database_deadlocks",
        "pg_database_frozen_xid_wraparound_ratio",
        "pg_slot_retained_bytes",
        "pg_stat_replication_pg_wal_lsn_diff",
    ] {
        within(60, &format!("Prometheus has {series}"), || {
            (!query(series).is_empty())
                .then_some(())
                .ok_or_else(|| "no series".to_string())
        });
    }
    // A session left idle in its transaction is measured as the alert reads it.
    lab.run(
        &leader,
        "nohup sh -c \"(echo 'begin; select txid_current();'; sleep 60) | runuser -u postgres -- psql -q >/dev/null\" >/dev/null 2>&1 &",
    );
    within(90, "an idle-in-transaction session measured", || {
        let idle = query(&format!(
            "pg_stat_activity_max_tx_duration{{state=\"idle in transaction\",host=\"{leader}\"}} > 15"
        ));
        (!idle.is_empty())
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });

    // Secrets: generated once, 0600, never printed.
    let store = std::fs::read_to_string(lab.secrets()).expect("secret store");
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
    let second = apply(&lab.inventory());
    eprintln!(
        "no-op apply of the stack: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_applied(&second);
    assert_eq!(changed_tasks(&second), Vec::<String>::new());

    // work_mem in the inventory: changed through Patroni only, the leader not restarted.
    let leader = lab.leader();
    let started_at = psql(&lab, &leader, "select pg_postmaster_start_time()");
    let variants = Variants::new(&lab);
    variants.write(
        "group_vars/postgres_cluster.yml",
        "postgresql_parameters_extra:\n  work_mem: 8MB\n",
    );
    let change = apply(&variants.lab());
    assert_applied(&change);
    let changes = changed_tasks(&change);
    assert_eq!(
        changes,
        ["patroni : dynamic configuration, through Patroni"],
        "{changes:?}"
    );
    for host in CLUSTER {
        within(30, &format!("work_mem on {host}"), || {
            let v = psql(&lab, host, "show work_mem");
            (v == "8MB").then_some(()).ok_or(v)
        });
    }
    assert_eq!(lab.leader(), leader, "the leader changed");
    assert_eq!(
        psql(&lab, &leader, "select pg_postmaster_start_time()"),
        started_at,
        "the leader restarted"
    );

    // max_connections needs a restart: the replicas first, then a switchover, then the old leader.
    variants.write(
        "group_vars/postgres_cluster.yml",
        "postgresql_parameters_extra:\n  work_mem: 8MB\n  max_connections: 120\n",
    );
    let change = apply(&variants.lab());
    assert_applied(&change);
    let changes = changed_tasks(&change);
    assert!(
        changes
            .iter()
            .any(|c| c == "patroni_restart : pending restarts, replicas first"),
        "{changes:?}"
    );
    for host in CLUSTER {
        assert_eq!(psql(&lab, host, "show max_connections"), "120", "{host}");
    }
    let cluster = patroni_cluster(&lab);
    let members = cluster["members"].as_array().cloned().unwrap_or_default();
    assert!(
        members.iter().all(|m| m["pending_restart"].is_null()
            && (m["state"] == "running" || m["state"] == "streaming")),
        "{cluster}"
    );
    let new_leader = lab.leader();
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
    let four = std::fs::read_to_string(variants.lab())
        .expect("lab inventory")
        .replace(
            "        ptrn-3: { ansible_host: 10.213.0.13 }\n",
            "        ptrn-3: { ansible_host: 10.213.0.13 }\n        prmt-1: { ansible_host: 10.213.0.21 }\n",
        );
    let joined = apply(&variants.write("lab-etcd4.yml", &four));
    assert_applied(&joined);
    let list = lab.run(
        "ptrn-1",
        &format!("{ETCDCTL} --endpoints=https://10.213.0.11:2379 member list"),
    );
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.contains(", started, prmt-1, "), "{list}");
    let health = lab.run(
        "ptrn-1",
        &format!("{ETCDCTL} --endpoints=https://10.213.0.11:2379 endpoint health --cluster 2>&1"),
    );
    assert_eq!(health.matches("is healthy").count(), 4, "{health}");

    // ...and leaving it out of the inventory again is reported, with what to do.
    let left = apply(&variants.lab());
    assert_applied(&left);
    let report = String::from_utf8_lossy(&left.stdout);
    assert!(
        report.contains("etcd member prmt-1 at https://10.213.0.21:2380"),
        "{report}"
    );
    assert!(report.contains("etcdctl member remove"), "{report}");
    let list = lab.run(
        "ptrn-1",
        &format!("{ETCDCTL} --endpoints=https://10.213.0.11:2379 member list"),
    );
    assert_eq!(
        list.lines().count(),
        4,
        "hactl removed a member by itself: {list}"
    );
    // Back to three members for whatever runs next.
    let id = list
        .lines()
        .find(|l| l.contains("prmt-1"))
        .and_then(|l| l.split(',').next())
        .expect("prmt-1's id");
    lab.run(
        "ptrn-1",
        &format!(
            "ETCDCTL_USER=root:{} {ETCDCTL} --endpoints=https://10.213.0.11:2379 member remove {id}",
            lab.secret("etcd_root")
        ),
    );
    lab.run(
        "prmt-1",
        "systemctl disable --now etcd; rm -rf /var/lib/etcd/hactl/member",
    );
    for host in HOSTS {
        lab.run(host, "true");
    }
}
