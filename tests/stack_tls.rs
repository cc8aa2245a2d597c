//! TLS and authentication on the lab's stack, with the lab machine as the outsider on the LAN:
//! etcd refuses clients without a certificate and keeps each user to its keys, Patroni's REST
//! API answers unsafe methods only with credentials and from the allowlist, PostgreSQL takes
//! only TLS and verifies members to each other, and a renewal reaches every service without a
//! leader change or a write outage.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{lab, text, Lab, CLUSTER};

const LEADER_KEY: &str = "/service/hactl/leader";

/// The lab inventory's PKI on this machine (made by the first apply).
fn pki(lab: &Lab) -> PathBuf {
    std::path::Path::new(&lab.inventory()).with_file_name("lab.pki")
}

fn address(host: &str) -> &'static str {
    match host {
        "ptrn-1" => "10.213.0.11",
        "ptrn-2" => "10.213.0.12",
        "ptrn-3" => "10.213.0.13",
        _ => "10.213.0.21",
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A command on this machine: (exit code, stdout + stderr).
fn local(script: &str) -> (i32, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh");
    let mut both = String::from_utf8_lossy(&out.stdout).to_string();
    both.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), both)
}

/// An etcd client over TLS with the certificate `holder/name` of the lab's PKI, as `user`.
async fn etcd_as(
    lab: &Lab,
    holder: &str,
    name: &str,
    user: Option<(&str, String)>,
) -> Result<etcd_client::Client, etcd_client::Error> {
    let dir = pki(lab);
    let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(dir.join("ca.crt"))))
        .identity(etcd_client::Identity::from_pem(
            read(dir.join(holder).join(format!("{name}.crt"))),
            read(dir.join(holder).join(format!("{name}.key"))),
        ));
    let mut opts = etcd_client::ConnectOptions::new()
        .with_tls(tls)
        .with_timeout(Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(5));
    if let Some((u, p)) = user {
        opts = opts.with_user(u, p);
    }
    etcd_client::Client::connect(["https://10.213.0.11:2379"], Some(opts)).await
}

#[test]
fn etcd_refuses_a_client_without_a_certificate_and_keeps_each_user_to_its_keys() {
    let mut lab = lab();
    lab.stack();
    let ca = pki(&lab).join("ca.crt");
    // The prober's certificate: its common name is a read-only user.
    let rt = runtime();
    let mut prober = rt
        .block_on(etcd_as(&lab, "prmt-1", "prober", None))
        .expect("the prober connects");
    let leader = rt
        .block_on(prober.get(LEADER_KEY, None))
        .expect("the prober may read");
    assert_eq!(leader.kvs().len(), 1, "a leader key");
    let before = leader.kvs()[0].value().to_vec();

    // No client certificate: the TLS handshake itself fails (curl gets no HTTP answer at all:
    // 35 handshake failed, 55/56 the connection closed by the server's alert), nothing is
    // written.
    let (code, out) = local(&format!(
        "curl -sS --max-time 5 --cacert {} https://10.213.0.11:2379/v3/kv/put \
         -d '{{\"key\": \"L3NlcnZpY2UvaGFjdGwvbGVhZGVy\", \"value\": \"b3V0c2lkZXI=\"}}'",
        ca.display()
    ));
    assert!(
        [35, 55, 56].contains(&code),
        "not refused at the handshake: {out}"
    );
    // Plain http on the client port gets no answer either.
    let (code, out) = local("curl -sS --max-time 5 http://10.213.0.11:2379/version");
    assert_ne!(code, 0, "{out}");

    rt.block_on(async {
        let put = prober.put(LEADER_KEY, "outsider", None).await;
        let e = put.expect_err("the prober may not write").to_string();
        assert!(e.contains("permission denied"), "{e}");

        // Patroni's user: its own prefix only.
        let patroni = ("patroni", lab.secret("etcd_patroni"));
        let mut client = etcd_as(&lab, "ptrn-1", "etcd-client", Some(patroni))
            .await
            .expect("Patroni's user connects");
        let own = client.get(LEADER_KEY, None).await.expect("its own prefix");
        assert_eq!(own.kvs()[0].value(), &before[..]);
        for key in [
            "/service/other/leader",
            "/hactl-outside",
            "/service/hactl-x",
        ] {
            let e = client
                .put(key, "x", None)
                .await
                .expect_err("outside its prefix")
                .to_string();
            assert!(e.contains("permission denied"), "{key}: {e}");
            let e = client
                .get(key, None)
                .await
                .expect_err("outside its prefix")
                .to_string();
            assert!(e.contains("permission denied"), "{key}: {e}");
        }
        let after = prober.get(LEADER_KEY, None).await.expect("read");
        assert_eq!(
            after.kvs()[0].value(),
            &before[..],
            "the leader key changed"
        );
    });
}

#[test]
fn patronis_api_refuses_http_unauthenticated_switchovers_and_callers_outside_the_allowlist() {
    let mut lab = lab();
    lab.stack();
    let leader = lab.leader();
    let dir = pki(&lab);
    let curl = format!(
        "curl -s --max-time 5 --cacert {ca} --cert {crt} --key {key}",
        ca = dir.join("ca.crt").display(),
        crt = dir.join("control/hactl.crt").display(),
        key = dir.join("control/hactl.key").display()
    );
    let url = format!("https://{}:8008", address(&leader));
    let body = format!("-H 'Content-Type: application/json' -d '{{\"leader\": \"{leader}\"}}'");

    // Plain http: no answer.
    let (code, out) = local(&format!(
        "curl -sS --max-time 5 http://{}:8008/cluster",
        address(&leader)
    ));
    assert_ne!(code, 0, "plain http answered: {out}");

    // https with hactl's certificate but no credentials: 401.
    let (_, status) = local(&format!(
        "{curl} -o /dev/null -w '%{{http_code}}' -X POST {url}/switchover {body}"
    ));
    assert_eq!(status.trim(), "401", "without credentials");

    // From an address of the LAN that is not in the allowlist: 403, credentials or not.
    let outsider = "10.213.0.250";
    local(&format!(
        "ip addr add {outsider}/24 dev hactl0 2>/dev/null || true"
    ));
    let api_user = "patroni";
    let password = lab.secret("patroni_api");
    let (_, status) = local(&format!(
        "{curl} --interface {outsider} -u {api_user}:{password} -o /dev/null -w '%{{http_code}}' \
         -X POST {url}/switchover {body}"
    ));
    local(&format!("ip addr del {outsider}/24 dev hactl0"));
    assert_eq!(status.trim(), "403", "from outside the allowlist");

    // GETs stay open to monitoring, over https.
    let (_, status) = local(&format!(
        "{curl} -o /dev/null -w '%{{http_code}}' {url}/cluster"
    ));
    assert_eq!(status.trim(), "200");
    assert_eq!(lab.leader(), leader, "the leader changed");
}

#[test]
fn postgresql_takes_only_tls_and_its_members_replicate_over_it() {
    let mut lab = lab();
    lab.stack();
    let leader = lab.leader();
    let dir = pki(&lab);
    let password = lab.secret("postgresql_superuser");
    runtime().block_on(async {
        let mut config = tokio_postgres::Config::new();
        config
            .host(address(&leader))
            .port(5432)
            .user("postgres")
            .password(&password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));

        // sslmode=disable: pg_hba has no line for it.
        let mut clear = config.clone();
        clear.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let e = clear
            .connect(tokio_postgres::NoTls)
            .await
            .err()
            .expect("a connection without TLS is refused");
        let db = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(
            db.contains("no pg_hba.conf entry") && db.contains("no encryption"),
            "{e}: {db}"
        );

        // verify-full with the CA: the server's certificate chains to it and names its address.
        let mut verified = config.clone();
        verified.ssl_mode(tokio_postgres::config::SslMode::Require);
        let (client, conn) = verified
            .connect(common::postgres_tls(&dir.join("ca.crt")))
            .await
            .expect("verify-full with the lab's CA");
        tokio::spawn(conn);
        let row = client
            .query_one(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_ssl");
        assert!(row.get::<_, bool>(0), "this session is not encrypted");

        // Every replication connection is encrypted.
        let rows = client
            .query(
                "select r.application_name, coalesce(s.ssl, false) from pg_stat_replication r \
                 left join pg_stat_ssl s using (pid)",
                &[],
            )
            .await
            .expect("pg_stat_replication");
        assert_eq!(rows.len(), CLUSTER.len() - 1, "replicas streaming");
        for r in rows {
            let (name, ssl): (String, bool) = (r.get(0), r.get(1));
            assert!(ssl, "{name} replicates in clear text");
        }
    });
}

/// The serial of the certificate a TLS server shows on `address:port` (`starttls`: openssl's
/// `-starttls` protocol), asked with hactl's client certificate.
fn served_serial(lab: &Lab, address: &str, port: u16, starttls: Option<&str>) -> String {
    let dir = pki(lab);
    let (code, out) = local(&format!(
        "openssl s_client -connect {address}:{port} {} -CAfile {ca} -cert {crt} -key {key} \
         </dev/null 2>/dev/null | openssl x509 -noout -serial",
        starttls
            .map(|s| format!("-starttls {s}"))
            .unwrap_or_default(),
        ca = dir.join("ca.crt").display(),
        crt = dir.join("control/hactl.crt").display(),
        key = dir.join("control/hactl.key").display()
    ));
    assert_eq!(code, 0, "{address}:{port}: {out}");
    out.trim().to_string()
}

fn kept_serial(lab: &Lab, host: &str) -> String {
    let path = pki(lab).join(host).join("server.crt");
    let (code, out) = local(&format!(
        "openssl x509 -noout -serial -in {}",
        path.display()
    ));
    assert_eq!(code, 0, "{out}");
    out.trim().to_string()
}

/// What the prober on the monitoring host counts of the write probe: (runs, successes).
fn write_probe(lab: &Lab) -> (f64, f64) {
    let m =
        common::metrics::Metrics::parse(&lab.monitoring_get("https://10.213.0.21:9313/metrics"));
    (
        m.sum("total", &[("probe", "write")]),
        m.sum("success", &[("probe", "write")]),
    )
}

#[test]
fn certificates_near_their_end_are_renewed_and_served_without_a_leader_change_or_write_outage() {
    let mut lab = lab();
    lab.stack();
    let leader = lab.leader();
    let before: Vec<String> = CLUSTER.iter().map(|h| kept_serial(&lab, h)).collect();
    let (runs_before, ok_before) = write_probe(&lab);

    // Every certificate has about 365 days left: renewing below 400 reissues them all.
    let inventory = lab.inventory();
    let out = common::hactl(&["apply", &inventory, "-e", "hactl_cert_renew_days=400"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("fewer than 400"), "{report}");

    for (host, old) in CLUSTER.iter().zip(&before) {
        let new = kept_serial(&lab, host);
        assert_ne!(&new, old, "{host}: not reissued");
        let a = address(host);
        common::eventually(
            &format!("{host} serves its new certificate"),
            Duration::from_secs(30),
            || {
                let served = [
                    ("etcd", served_serial(&lab, a, 2379, None)),
                    ("Patroni", served_serial(&lab, a, 8008, None)),
                    ("PostgreSQL", served_serial(&lab, a, 5432, Some("postgres"))),
                    ("node_exporter", served_serial(&lab, a, 9100, None)),
                ];
                match served.iter().find(|(_, s)| *s != new) {
                    Some((what, s)) => Err(format!("{what} serves {s}, not {new}")),
                    None => Ok(()),
                }
            },
        );
    }
    assert_eq!(lab.leader(), leader, "the leader changed");
    std::thread::sleep(Duration::from_secs(3));
    let (runs_after, ok_after) = write_probe(&lab);
    assert!(runs_after > runs_before, "the write probe did not run");
    assert_eq!(
        runs_after - runs_before,
        ok_after - ok_before,
        "the write probe failed during the renewal"
    );

    // The apply after that changes nothing.
    let again = common::hactl(&["apply", &inventory]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let recap = text(&again);
    assert!(
        recap
            .lines()
            .filter(|l| l.contains(" changed="))
            .all(|l| l.contains(" changed=0 ")),
        "{recap}"
    );
}

#[test]
fn monitoring_endpoints_answer_only_https_with_credentials_and_prometheus_scrapes_them_so() {
    let mut lab = lab();
    lab.stack();
    let ca = pki(&lab).join("ca.crt");
    let mut endpoints: Vec<String> = ["ptrn-1", "ptrn-2", "ptrn-3", "prmt-1"]
        .iter()
        .map(|h| format!("{}:9100/metrics", address(h)))
        .collect();
    endpoints.extend([
        "10.213.0.21:9090/-/ready".to_string(),
        "10.213.0.21:9093/-/ready".to_string(),
        "10.213.0.21:9313/metrics".to_string(),
    ]);
    for e in &endpoints {
        let (code, out) = local(&format!("curl -sS --max-time 5 -o /dev/null http://{e}"));
        let status = local(&format!(
            "curl -s --max-time 5 -o /dev/null -w '%{{http_code}}' http://{e}"
        ))
        .1;
        assert!(
            code != 0 || status.trim() == "400",
            "{e}: plain http answered ({status}): {out}"
        );
        let (_, status) = local(&format!(
            "curl -s --max-time 5 --cacert {} -o /dev/null -w '%{{http_code}}' https://{e}",
            ca.display()
        ));
        assert_eq!(status.trim(), "401", "{e} without credentials");
        let (_, status) = local(&format!(
            "{} -o /dev/null -w '%{{http_code}}' https://{e}",
            lab.monitoring_curl()
        ));
        assert_eq!(status.trim(), "200", "{e} with the credentials");
    }

    // Prometheus reaches every target, each over https.
    common::eventually(
        "every target up over https",
        Duration::from_secs(60),
        || {
            let body = lab.monitoring_get("https://10.213.0.21:9090/api/v1/targets");
            let targets: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
            let active = targets["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if active.len() < 12 {
                return Err(format!("{} targets: {body}", active.len()));
            }
            let bad: Vec<String> = active
                .iter()
                .filter(|t| {
                    t["health"] != "up"
                        || !t["scrapeUrl"]
                            .as_str()
                            .unwrap_or("")
                            .starts_with("https://")
                })
                .map(|t| format!("{} {} {}", t["scrapeUrl"], t["health"], t["lastError"]))
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(bad.join("; "))
            }
        },
    );
}
