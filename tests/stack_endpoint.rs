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
    use rustls::pki_types::pem::PemObject as _;
    let ca = std::fs::read(pki(lab).join("ca.crt")).expect("ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.expect("PEM")).expect("CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(tls)
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

#[test]
fn failover_test_through_the_endpoint_loses_no_acknowledged_write() {
    let mut lab = lab();
    lab.stack();
    for mode in ["switchover", "kill-postgres"] {
        let (out, report) = lab.failover_via(mode, "endpoint");
        assert_eq!(
            report["path"],
            "endpoint 10.213.0.10:5000",
            "{}",
            common::text(&out)
        );
        assert_eq!(report["passed"], true, "{mode}: {report}");
        assert_eq!(report["lost_acked_writes"], 0, "{mode}: {report}");
        assert_eq!(report["split_brain"], false, "{mode}: {report}");
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", common::text(&out));
    }
}
