//! One address for applications on the lab: the VIP on one balancer, HAProxy's read-write port
//! reaching the primary, the read-only port spreading over the replicas, the synchronous port
//! reaching the synchronous standby, all through PgBouncer with TLS; failover-test through it.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::{lab, Lab, CLUSTER};

const VIP: &str = "10.213.0.10";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn pki(lab: &Lab) -> PathBuf {
    std::path::Path::new(&lab.inventory()).with_file_name("lab.pki")
}

/// TLS that checks the server's certificate against the lab's CA and the name connected to.
fn verify_full(lab: &Lab) -> tokio_postgres_rustls::MakeRustlsConnect {
    common::postgres_tls(&pki(lab).join("ca.crt"))
}

fn config(port: u16, user: &str, password: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(VIP)
        .port(port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(5));
    config
}

/// (the server's address, whether it is in recovery) over a new connection to the VIP.
async fn served_by(lab: &Lab, port: u16, user: &str, password: &str) -> (String, bool) {
    let (client, conn) = config(port, user, password)
        .connect(verify_full(lab))
        .await
        .unwrap_or_else(|e| panic!("VIP:{port}: {e}"));
    tokio::spawn(conn);
    let rows = client
        .simple_query("select host(inet_server_addr()), pg_is_in_recovery()::text")
        .await
        .expect("the query");
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a row");
    (
        row.get(0).unwrap_or_default().to_string(),
        row.get(1) == Some("true"),
    )
}

fn address(host: &str) -> &'static str {
    match host {
        "ptrn-1" => "10.213.0.11",
        "ptrn-2" => "10.213.0.12",
        _ => "10.213.0.13",
    }
}

fn vip_holders(lab: &Lab) -> Vec<&'static str> {
    CLUSTER
        .into_iter()
        .filter(|h| {
            !lab.run(h, &format!("ip -o -4 addr show to {VIP}/32"))
                .trim()
                .is_empty()
        })
        .collect()
}

#[test]
fn the_vip_reaches_the_primary_the_replicas_and_the_synchronous_standby() {
    let mut lab = lab();
    lab.stack();
    assert_eq!(vip_holders(&lab).len(), 1, "one balancer holds the VIP");
    let leader = lab.leader();
    let cluster: serde_json::Value =
        serde_json::from_str(&lab.run(&leader, &common::patroni_api("/cluster")))
            .expect("/cluster");
    let sync = cluster["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["role"] == "sync_standby")
        .and_then(|m| m["name"].as_str())
        .expect("a synchronous standby")
        .to_string();
    let user = "hactl_failover";
    let password = lab.secret("postgresql_failover");
    runtime().block_on(async {
        let (server, recovery) = served_by(&lab, 5000, user, &password).await;
        assert_eq!(
            (server.as_str(), recovery),
            (address(&leader), false),
            "VIP:5000 is the primary"
        );

        let mut replicas = BTreeSet::new();
        for _ in 0..20 {
            let (server, recovery) = served_by(&lab, 5001, user, &password).await;
            assert!(recovery, "VIP:5001 landed on the primary {server}");
            replicas.insert(server);
        }
        let expected: BTreeSet<String> = CLUSTER
            .iter()
            .filter(|h| **h != leader)
            .map(|h| address(h).to_string())
            .collect();
        assert_eq!(replicas, expected, "20 reads spread over both replicas");

        let (server, recovery) = served_by(&lab, 5002, user, &password).await;
        assert_eq!(
            (server.as_str(), recovery),
            (address(&sync), true),
            "VIP:5002 is the synchronous standby"
        );

        // PgBouncer refuses a superuser (its lookup returns none) and a connection without TLS.
        let superuser = lab.secret("postgresql_superuser");
        let e = config(5000, "postgres", &superuser)
            .connect(verify_full(&lab))
            .await
            .err()
            .expect("a superuser cannot log in through PgBouncer");
        assert!(
            e.to_string().contains("password") || e.as_db_error().is_some(),
            "{e}"
        );
        let mut clear = config(5000, user, &password);
        clear.ssl_mode(tokio_postgres::config::SslMode::Disable);
        assert!(
            clear.connect(tokio_postgres::NoTls).await.is_err(),
            "PgBouncer took a connection without TLS"
        );
    });

    // No password in PgBouncer's files: the lookup user logs in with its certificate.
    for host in CLUSTER {
        assert_eq!(lab.run(host, "wc -c < /etc/pgbouncer/userlist.txt"), "0");
        let found = lab.ssh(
            host,
            &format!("grep -rlF -- {} /etc/pgbouncer", shell_quote(&password)),
        );
        assert_ne!(
            found.status.code(),
            Some(0),
            "a password in /etc/pgbouncer on {host}"
        );
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A failover-test report that passed, over `path`, with no write acknowledged by a former
/// primary and the VIP never on two hosts.
fn assert_passed(mode: &str, out: &std::process::Output, report: &serde_json::Value, path: &str) {
    assert_eq!(report["path"], path, "{}", common::text(out));
    assert_eq!(report["passed"], true, "{mode}: {report}");
    assert_eq!(report["lost_acked_writes"], 0, "{mode}: {report}");
    assert_eq!(report["split_brain"], false, "{mode}: {report}");
    assert_eq!(report["stale_primary_acks"], 0, "{mode}: {report}");
    assert_eq!(report["vip"]["on_two_hosts_s"], 0.0, "{mode}: {report}");
    assert_eq!(out.status.code(), Some(0), "{mode}: {}", common::text(out));
}

#[test]
fn a_switchover_measured_direct_and_through_the_endpoint() {
    let mut lab = lab();
    lab.stack();
    let (out, direct) = lab.failover_via("switchover", "direct");
    assert_passed("switchover", &out, &direct, "direct");
    let (out, endpoint) = lab.failover_via("switchover", "endpoint");
    assert_passed("switchover", &out, &endpoint, "endpoint 10.213.0.10:5000");
    let vip = &endpoint["vip"];
    assert!(
        vip["samples"].as_u64().unwrap_or(0) > 20,
        "sampled every 200 ms: {vip}"
    );
    assert_eq!(
        vip["unheld_max_s"], 0.0,
        "a switchover does not move the VIP: {vip}"
    );
}

#[test]
fn losing_the_balancer_that_holds_the_vip_moves_it_within_five_seconds() {
    let mut lab = lab();
    lab.stack();
    let leader = lab.leader();
    let (out, report) = lab.failover_via("kill-balancer", "endpoint");
    assert_passed("kill-balancer", &out, &report, "endpoint 10.213.0.10:5000");
    let hit = report["hit"][0]
        .as_str()
        .expect("the balancer hit")
        .to_string();
    assert_ne!(hit, leader, "the leader's host is kill-node's fault");
    assert_eq!(report["new_leader"], leader.as_str(), "{report}");
    let vip = &report["vip"];
    assert_eq!(vip["holder_before"], hit.as_str(), "{vip}");
    assert!(
        vip["holder_after"].is_string(),
        "one balancer holds it at the end: {vip}"
    );
    assert_ne!(vip["holder_after"], hit.as_str(), "{vip}");
    assert!(
        report["write_downtime_s"].as_f64().unwrap_or(99.0) <= 5.0,
        "{report}"
    );
    assert_eq!(
        vip_holders(&lab).len(),
        1,
        "one balancer holds the VIP after the test"
    );
}

#[test]
fn the_prober_writes_through_the_endpoint_and_reads_from_a_replica() {
    let mut lab = lab();
    lab.stack();
    common::eventually(
        "the endpoint probe's writes and reads",
        Duration::from_secs(60),
        || {
            let metrics = lab.monitoring_get("https://10.213.0.21:9313/metrics");
            let value = |name: &str| {
                metrics
                    .lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse::<f64>().ok())
            };
            for (name, want) in [
                ("hactl_endpoint_write_success{", 1.0),
                ("hactl_endpoint_read_success{", 1.0),
                ("hactl_endpoint_read_from_primary{", 0.0),
                ("hactl_endpoint_replicas_fit{", 2.0),
            ] {
                if value(name) != Some(want) {
                    return Err(format!("{name}: {:?}\n{metrics}", value(name)));
                }
            }
            Ok(())
        },
    );
}
