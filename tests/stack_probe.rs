//! `hactl probe` on the lab: the installed prober (role prober) scraped by Prometheus with
//! every probe succeeding; what it records during a kill-node failover; and the postgres, write,
//! etcd and patroni probe types against the lab's real servers — success, failure and timeout.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http::http_get;
use common::metrics::Metrics;
use common::{eventually, lab, text, Lab};
use serde_json::Value;

/// The prober that apply installs on the monitoring host.
const PROBER: &str = "10.213.0.21:9313";

/// The /metrics page of the prober at `addr`; an empty page while it does not answer.
fn metrics(addr: &str) -> Metrics {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    Metrics::parse(&http_get(addr, "/metrics").map(|r| r.1).unwrap_or_default())
}

/// The /metrics page of the prober on the monitoring host (https, basic auth).
fn remote_metrics(lab: &Lab) -> Metrics {
    Metrics::parse(&lab.monitoring_get(&format!("https://{PROBER}/metrics")))
}

fn prometheus(lab: &Lab, query: &str) -> Value {
    let out = lab.run(
        "prmt-1",
        &format!(
            "curl -sf --cacert /etc/prometheus/tls/ca.crt -u prometheus:{} \
             https://10.213.0.21:9090/api/v1/query --data-urlencode 'query={query}'",
            lab.secret("monitoring")
        ),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{query}: {e}: {out}"))
}

#[test]
fn after_apply_prometheus_scrapes_the_prober_and_every_probe_succeeds() {
    let mut lab = lab();
    lab.stack();
    assert_eq!(
        lab.run("prmt-1", "systemctl is-active hactl-prober"),
        "active"
    );
    // The prober reads its probes (and their password) but cannot rewrite them.
    assert_eq!(
        lab.run(
            "prmt-1",
            "stat -c '%a %U %G' /etc/hactl/probes.yml /etc/hactl"
        ),
        "640 root hactl-prober\n755 root root"
    );
    assert_eq!(
        lab.run(
            "prmt-1",
            "systemctl show -p User,Group --value hactl-prober"
        ),
        "hactl-prober\nhactl-prober"
    );
    assert_eq!(
        lab.run(
            "prmt-1",
            "runuser -u hactl-prober -- sh -c 'test -r /etc/hactl/probes.yml && echo reads; \
             test -w /etc/hactl/probes.yml || test -w /etc/hactl || echo cannot-write'"
        ),
        "reads\ncannot-write"
    );
    // Prometheus has the prober as a target, up.
    eventually(
        "the prober target is up in Prometheus",
        Duration::from_secs(90),
        || {
            let r = prometheus(&lab, "up{job=\"prober\"}");
            match r["data"]["result"][0]["value"][1].as_str() {
                Some("1") => Ok(()),
                other => Err(format!("{other:?}: {r}")),
            }
        },
    );
    // Every probe of every target succeeds, as Prometheus sees it.
    let names = [
        "patroni_api",
        "patroni_topology",
        "postgres",
        "write",
        "etcd",
        "node_exporter",
        "endpoint",
        "backup",
    ];
    eventually(
        "every probe succeeds in Prometheus",
        Duration::from_secs(120),
        || {
            let r = prometheus(&lab, "probe_success{job=\"prober\"}");
            let results = r["data"]["result"].as_array().cloned().unwrap_or_default();
            // 3 members × (api, topology, postgres) + 1 write + 3 etcd + 4 node_exporter + the
            // endpoint (the VIP) + the backup repository.
            if results.len() != 19 {
                return Err(format!("{} series: {r}", results.len()));
            }
            let failing: Vec<String> = results
                .iter()
                .filter(|s| s["value"][1] != "1")
                .map(|s| format!("{} {}", s["metric"]["probe"], s["metric"]["dst"]))
                .collect();
            let seen: Vec<&str> = results
                .iter()
                .filter_map(|s| s["metric"]["probe"].as_str())
                .collect();
            if let Some(missing) = names.iter().find(|n| !seen.contains(n)) {
                return Err(format!("no {missing} series"));
            }
            if failing.is_empty() {
                Ok(())
            } else {
                Err(format!("failing: {failing:?}"))
            }
        },
    );
    // The domain gauges say the same: one leader, both replicas streaming, writes flowing.
    let page = lab.monitoring_get(&format!("https://{PROBER}/metrics"));
    let m = Metrics::parse(&page);
    assert_eq!(m.sum("hactl_patroni_leaders", &[]), 1.0, "{page}");
    assert_eq!(
        m.sum("hactl_patroni_replicas_streaming", &[]),
        2.0,
        "{page}"
    );
    assert_eq!(m.sum("hactl_etcd_has_leader", &[]), 3.0, "{page}");
    assert!(
        m.sum("hactl_write_seconds_since_success", &[]) < 3.0,
        "{page}"
    );
    // It logs in as its own role, which is no superuser.
    let probes = lab.run("prmt-1", "cat /etc/hactl/probes.yml");
    assert!(probes.contains("user: \"hactl_prober\""), "{probes}");
    let leader = lab.leader();
    let role = lab.run(
        &leader,
        "cd /tmp && runuser -u postgres -- psql -tAXc \"select rolsuper, pg_has_role('hactl_prober', 'pg_monitor', 'member') from pg_roles where rolname = 'hactl_prober'\"",
    );
    assert_eq!(role, "f|t", "hactl_prober: superuser | in pg_monitor");
    // The prober's journal never shows the PostgreSQL password.
    let secrets = std::fs::read_to_string(lab.secrets()).expect("the lab's secret store");
    let journal = lab.run("prmt-1", "journalctl -u hactl-prober --no-pager -o cat");
    for line in secrets.lines() {
        if let Some((_, secret)) = line.split_once(": ") {
            let secret = secret.trim().trim_matches('"');
            if secret.len() >= 8 {
                assert!(
                    !journal.contains(secret),
                    "a secret in the prober's journal"
                );
            }
        }
    }
}

#[test]
fn during_kill_node_the_prober_records_the_leader_change_and_the_write_outage() {
    let mut lab = lab();
    lab.stack();
    let before = eventually(
        "the prober sees a healthy cluster",
        Duration::from_secs(60),
        || {
            let m = remote_metrics(&lab);
            if m.sum("hactl_patroni_leaders", &[]) == 1.0
                && m.sum("hactl_write_seconds_since_success", &[]) < 3.0
            {
                Ok(m)
            } else {
                Err(m.text)
            }
        },
    );
    let (out, report) = lab.failover("kill-node");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let downtime = report["write_downtime_s"].as_f64().expect("write downtime");
    let new_leader = report["new_leader"].as_str().expect("new leader");
    let changes = |m: &Metrics| m.sum("hactl_patroni_leader_changes_total", &[]);
    let outages = |m: &Metrics| m.sum("hactl_write_outages_total", &[]);
    let after = eventually(
        "the prober records the failover",
        Duration::from_secs(30),
        || {
            let m = remote_metrics(&lab);
            if changes(&m) > changes(&before)
                && outages(&m) > outages(&before)
                && m.sum("hactl_patroni_leader", &[("member", new_leader)]) == 1.0
            {
                Ok(m)
            } else {
                Err(m.text)
            }
        },
    );
    let outage = after.sum("hactl_write_last_outage_seconds", &[]);
    eprintln!("failover report: {downtime} s of write downtime; write probe: {outage} s");
    assert!(
        (outage - downtime).abs() <= 3.0,
        "the write probe saw {outage} s without writes, the failover test {downtime} s"
    );
}

/// A local server that accepts connections and never answers: every probe of it times out.
fn silent() -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
            if held.len() > 200 {
                break;
            }
        }
    });
    (addr, h)
}

struct Prober(Child);

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn postgres_write_etcd_and_patroni_probes_succeed_fail_and_time_out_on_the_lab() {
    let mut lab = lab();
    lab.stack();
    let (quiet, _h) = silent();
    let listen = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("lab.yml");
    // The prober's own role (role postgresql_prober): pg_monitor and its table, no superuser.
    let pg = "postgres: {user: hactl_prober, password_secret: postgresql_prober}";
    // hactl's own certificate (from the lab inventory's PKI): etcd's user `hactl` may read.
    let pki = std::path::Path::new(&lab.inventory()).with_file_name("lab.pki");
    let tls = format!(
        "{{ca_file: {}, cert_file: {}, key_file: {}}}",
        pki.join("ca.crt").display(),
        pki.join("control/hactl.crt").display(),
        pki.join("control/hactl.key").display()
    );
    std::fs::write(
        &config,
        format!(
            "probes:
  - {{name: pg_any, type: postgres, interval: 1s, timeout: 900ms, targets: {{group: postgres_cluster, port: 5432}}, {pg}, tls: {tls}}}
  - {{name: pg_primary, type: postgres, interval: 1s, timeout: 900ms, targets: {{group: postgres_cluster, port: 5432}}, postgres: {{user: hactl_prober, password_secret: postgresql_prober, expect: primary}}, tls: {tls}}}
  - {{name: pg_badpass, type: postgres, interval: 1s, timeout: 900ms, targets: [\"10.213.0.11:5432\"], postgres: {{user: hactl_prober, password: not-the-password}}, tls: {tls}}}
  - {{name: pg_silent, type: postgres, interval: 1s, timeout: 500ms, targets: [\"{quiet}\"], {pg}, tls: {tls}}}
  - {{name: write_ok, type: write, interval: 1s, timeout: 900ms, targets: {{group: postgres_cluster, port: 5432}}, {pg}, tls: {tls}}}
  - {{name: write_silent, type: write, interval: 1s, timeout: 500ms, targets: [\"{quiet}\"], {pg}, tls: {tls}}}
  - {{name: etcd_ok, type: etcd, interval: 1s, timeout: 900ms, targets: {{group: etcd_cluster, port: 2379}}, tls: {tls}}}
  - {{name: etcd_wrong, type: etcd, interval: 1s, timeout: 900ms, targets: [\"10.213.0.11:9100\"], tls: {tls}}}
  - {{name: etcd_silent, type: etcd, interval: 1s, timeout: 500ms, targets: [\"{quiet}\"], tls: {tls}}}
  - {{name: patroni_ok, type: patroni, interval: 1s, timeout: 900ms, targets: {{group: postgres_cluster, port: 8008}}, tls: {tls}}}
  - {{name: patroni_wrong, type: patroni, interval: 1s, timeout: 900ms, targets: [\"10.213.0.11:9100\"], tls: {tls}}}
  - {{name: patroni_silent, type: patroni, interval: 1s, timeout: 500ms, targets: [\"{quiet}\"], tls: {tls}}}
"
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("stderr")).expect("log");
    let _prober = Prober(
        Command::new(env!("CARGO_BIN_EXE_hactl"))
            .args(["probe", "--config"])
            .arg(&config)
            .args(["-i", &lab.inventory(), "--listen", &listen])
            .current_dir(common::repo())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the prober"),
    );
    let m = eventually(
        "every probe has run at least 3 times",
        Duration::from_secs(30),
        || {
            let m = metrics(&listen);
            let probes = [
                "pg_any",
                "pg_primary",
                "pg_badpass",
                "pg_silent",
                "write_ok",
                "write_silent",
                "etcd_ok",
                "etcd_wrong",
                "etcd_silent",
                "patroni_ok",
                "patroni_wrong",
                "patroni_silent",
            ];
            for p in probes {
                let runs = m
                    .with("total", &[("probe", p)])
                    .map(|s| s.value)
                    .fold(f64::MAX, f64::min);
                if runs == f64::MAX || runs < 3.0 {
                    return Err(format!("{p}: {runs} runs"));
                }
            }
            Ok(m)
        },
    );
    let ok = |p: &str| m.sum("probe_success", &[("probe", p)]);
    let timeouts = |p: &str| m.sum("timeouts", &[("probe", p)]);
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    // Success: every member answers; the one primary is the leader; writes go through.
    assert_eq!(ok("pg_any"), 3.0, "{stderr}");
    assert_eq!(
        ok("pg_primary"),
        1.0,
        "exactly one member is the primary: {stderr}"
    );
    assert_eq!(
        m.sum("hactl_postgres_is_primary", &[("probe", "pg_any")]),
        1.0
    );
    assert_eq!(ok("write_ok"), 1.0, "{stderr}");
    assert_eq!(ok("etcd_ok"), 3.0, "{stderr}");
    assert_eq!(m.sum("hactl_etcd_has_leader", &[("probe", "etcd_ok")]), 3.0);
    assert_eq!(ok("patroni_ok"), 3.0, "{stderr}");
    assert_eq!(
        m.sum("hactl_patroni_leaders", &[("probe", "patroni_ok")]),
        1.0
    );
    // Failure, not timeout: a wrong password, a port that is not etcd or Patroni.
    for p in ["pg_badpass", "etcd_wrong", "patroni_wrong"] {
        assert_eq!(ok(p), 0.0, "{p} succeeded");
        assert_eq!(timeouts(p), 0.0, "{p} timed out instead of failing");
    }
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    // Timeout: a server that never answers.
    for p in ["pg_silent", "write_silent", "etcd_silent", "patroni_silent"] {
        assert_eq!(ok(p), 0.0, "{p} succeeded");
        assert!(timeouts(p) >= 1.0, "{p} did not time out: {stderr}");
    }
    assert!(
        m.sum(
            "hactl_write_seconds_since_success",
            &[("probe", "write_silent")]
        ) > 1.0
    );
}
