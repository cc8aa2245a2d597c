//! `endpoint`: the stack's one address as an application uses it (HAProxy on the balancers, then
//! a member's PgBouncer): a write through the read-write port and a read through the read-only
//! one. A read served by the primary fails the run while Patroni says a replica is fit for reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::postgres::{pg_error, Login};
use super::write::{is_table_name, TABLE};
use super::{patroni, BadTarget, Env, Failure, Kind, Mistake, Run};
use crate::probe::config::Probe;
use crate::probe::metrics::{Per, Registrar};
use crate::stack::tls::ClientTls;

pub(crate) struct Endpoint;

/// `endpoint:` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Options {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// A name in the inventory's secret store (`-i`): the password is read from there.
    #[serde(default)]
    password_secret: Option<String>,
    #[serde(default)]
    dbname: Option<String>,
    /// The table written to through the read-write port (as a write probe's).
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    rw_port: Option<u16>,
    #[serde(default)]
    ro_port: Option<u16>,
    /// The members' REST APIs (`HOST:PORT` or a URL), asked which replicas are fit for reads.
    #[serde(default)]
    patroni: Option<Vec<String>>,
    /// The lag bound of Patroni's `GET /replica?lag=` (HAProxy's check of the read-only pool).
    #[serde(default)]
    replica_max_lag: Option<Size>,
}

/// A size as Patroni reads it: bytes, or a number with a unit (`16MB`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    login: Login,
    table: String,
    rw_port: u16,
    ro_port: u16,
    patroni: Vec<String>,
    /// The path HAProxy checks a replica with: `/replica?lag=...`.
    replica_check: String,
}

/// The password, and a client of the members' REST APIs when the probe lists them.
pub(crate) struct State {
    password: Option<String>,
    patroni: Option<crate::stack::patroni::Client>,
}

pub(crate) struct Series {
    reachable: IntGaugeVec,
    write_success: IntGaugeVec,
    write_seconds: GaugeVec,
    read_success: IntGaugeVec,
    read_seconds: GaugeVec,
    read_from_primary: IntGaugeVec,
    replicas_fit: IntGaugeVec,
    writes: IntCounterVec,
    reads: IntCounterVec,
    /// The members each probe has series for, to remove them with the probe.
    members_of: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl Series {
    /// Counts a statement served by `member` (its address as PostgreSQL reports it).
    fn served(&self, by: &IntCounterVec, probe: &str, member: &str) {
        by.with_label_values(&[probe, member]).inc();
        self.members_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(probe.to_string())
            .or_default()
            .insert(member.to_string());
    }
}

/// What one path through the endpoint did: whether its address took the TCP connection, the
/// outcome (the address of the member that served it, and for a read whether that member is
/// in recovery) and how long it took.
struct Path<T> {
    reached: bool,
    result: Result<T, Failure>,
    took: Duration,
}

/// A read: the member's address and whether it is a replica.
struct Read {
    member: Option<String>,
    in_recovery: bool,
}

impl Kind for Endpoint {
    const NAME: &'static str = "endpoint";
    const BLOCK: Option<&'static str> = Some("endpoint");
    type Options = Options;
    type Spec = Spec;
    type State = State;
    type Series = Series;

    fn check(o: Options) -> Result<Spec, Mistake> {
        let table = o.table.unwrap_or_else(|| TABLE.into());
        // It is written into SQL statements.
        if !is_table_name(&table) {
            return Err(Mistake::new(
                "endpoint.table",
                format!("{table:?} is not a table name (letters, digits and _, optionally SCHEMA.TABLE)"),
            ));
        }
        let rw_port = o.rw_port.unwrap_or(5000);
        let ro_port = o.ro_port.unwrap_or(5001);
        if rw_port == ro_port {
            return Err(Mistake::new(
                "endpoint.ro_port",
                format!("{ro_port} is the read-write port too: reads and writes need their own"),
            ));
        }
        let patroni = o.patroni.unwrap_or_default();
        if let Some(bad) = patroni.iter().find(|p| p.is_empty() || p.contains(',')) {
            return Err(Mistake::new(
                "endpoint.patroni",
                format!("{bad:?} is not HOST:PORT or a URL of a member's REST API"),
            ));
        }
        let lag = match o.replica_max_lag {
            None => "16MB".to_string(),
            Some(Size::Bytes(n)) => n.to_string(),
            Some(Size::Text(t)) => t,
        };
        // It goes into the check's URL: a number of bytes, or with a unit (16MB, 1GB).
        let digits = lag.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(Mistake::new(
                "endpoint.replica_max_lag",
                format!("{lag:?} is not a size (bytes, or with a unit: 16MB, 1GB)"),
            ));
        }
        Ok(Spec {
            login: Login::new(o.user, o.dbname, o.password, o.password_secret),
            table,
            rw_port,
            ro_port,
            patroni,
            replica_check: format!("/replica?lag={lag}"),
        })
    }

    fn check_target(_: &Spec, target: &str) -> Result<(), BadTarget> {
        let is_host_port = target
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok());
        if target.is_empty() || target.contains([',', '/']) || is_host_port {
            return Err(BadTarget(
                "is not a host: the ports are endpoint.rw_port and endpoint.ro_port",
            ));
        }
        Ok(())
    }

    fn group_target(_: &Spec, host_port: String) -> String {
        match host_port.rsplit_once(':') {
            Some((host, _)) => host.to_string(),
            None => host_port,
        }
    }

    fn state(spec: &Spec, probe: &Probe, env: &Env) -> Result<State, Mistake> {
        let patroni = if spec.patroni.is_empty() {
            None
        } else {
            Some(
                crate::stack::patroni::Client::new(probe.timeout, probe.tls.as_ref())
                    .map_err(|e| Mistake::new("endpoint.patroni", e.to_string()))?,
            )
        };
        Ok(State {
            password: spec
                .login
                .password(env)
                .map_err(|m| Mistake::new("endpoint.password_secret", m.message))?,
            patroni,
        })
    }

    async fn run(run: Run<'_, Self>) -> Result<(), Failure> {
        let (write, read, fit) = tokio::join!(write(&run), read(&run), replicas_fit(&run));
        let p = run.probe.name.as_str();
        let l = [p, run.target];
        let s = run.series;
        s.reachable
            .with_label_values(&l)
            .set(i64::from(write.reached || read.reached));
        s.write_success
            .with_label_values(&l)
            .set(i64::from(write.result.is_ok()));
        s.write_seconds
            .with_label_values(&l)
            .set(write.took.as_secs_f64());
        s.read_success
            .with_label_values(&l)
            .set(i64::from(read.result.is_ok()));
        s.read_seconds
            .with_label_values(&l)
            .set(read.took.as_secs_f64());
        if let Some(fit) = fit {
            s.replicas_fit.with_label_values(&[p]).set(fit as i64);
        }
        if let Ok(Some(member)) = &write.result {
            s.served(&s.writes, p, member);
        }
        let mut problems = Vec::new();
        if let Err(e) = &write.result {
            problems.push(format!("write through port {}: {e}", run.spec.rw_port));
        }
        match &read.result {
            Err(e) => problems.push(format!("read through port {}: {e}", run.spec.ro_port)),
            Ok(r) => {
                if let Some(member) = &r.member {
                    s.served(&s.reads, p, member);
                }
                s.read_from_primary
                    .with_label_values(&l)
                    .set(i64::from(!r.in_recovery));
                match fit {
                    Some(n) if n > 0 && !r.in_recovery => problems.push(format!(
                        "read through port {} served by the primary ({}) while Patroni finds {n} replica(s) fit for reads",
                        run.spec.ro_port,
                        r.member.as_deref().unwrap_or("?"),
                    )),
                    _ => {}
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Failure(problems.join("; ")))
        }
    }

    fn series(r: &mut Registrar) -> Series {
        Series {
            reachable: r.int_gauge(
                "hactl_endpoint_reachable",
                "1 if the address took a TCP connection on the read-write or the read-only port.",
                Per::Target,
            ),
            write_success: r.int_gauge(
                "hactl_endpoint_write_success",
                "1 if the last write through the read-write port was acknowledged.",
                Per::Target,
            ),
            write_seconds: r.gauge(
                "hactl_endpoint_write_seconds",
                "How long the last write through the read-write port took, connecting included.",
                Per::Target,
            ),
            read_success: r.int_gauge(
                "hactl_endpoint_read_success",
                "1 if the last read through the read-only port was answered.",
                Per::Target,
            ),
            read_seconds: r.gauge(
                "hactl_endpoint_read_seconds",
                "How long the last read through the read-only port took, connecting included.",
                Per::Target,
            ),
            read_from_primary: r.int_gauge(
                "hactl_endpoint_read_from_primary",
                "1 if the last read through the read-only port was served by the primary.",
                Per::Target,
            ),
            replicas_fit: r.int_gauge(
                "hactl_endpoint_replicas_fit",
                "Members whose Patroni answers the read-only pool's check (GET /replica?lag=) with 200.",
                Per::Probe,
            ),
            writes: r.counter(
                "hactl_endpoint_writes_total",
                "Writes through the read-write port acknowledged, by the member that served them (its address).",
                Per::Member,
            ),
            reads: r.counter(
                "hactl_endpoint_reads_total",
                "Reads through the read-only port answered, by the member that served them (its address).",
                Per::Member,
            ),
            members_of: Mutex::new(BTreeMap::new()),
        }
    }

    fn forget_probe(series: &Series, probe: &str) {
        let members = series
            .members_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(probe);
        for m in members.into_iter().flatten() {
            let _ = series.writes.remove_label_values(&[probe, &m]);
            let _ = series.reads.remove_label_values(&[probe, &m]);
        }
    }
}

/// An upsert of the probe's row through the read-write port: the address of the member that
/// acknowledged it. One unnamed statement: PgBouncer pools by transaction, so a statement
/// prepared in one is gone in the next.
async fn write(run: &Run<'_, Endpoint>) -> Path<Option<String>> {
    let table = &run.spec.table;
    let insert = format!(
        "insert into {table} values ($1, 1, clock_timestamp())
         on conflict (probe) do update set writes = {table}.writes + 1, at = excluded.at
         returning host(inet_server_addr())"
    );
    through(run, run.spec.rw_port, |client| async move {
        let rows = client
            .query_typed(&insert, &[(&run.probe.name, Type::TEXT)])
            .await
            .map_err(pg_error)?;
        let row = rows
            .first()
            .ok_or(Failure::new("the write returned no row"))?;
        row.try_get::<_, Option<String>>(0).map_err(pg_error)
    })
    .await
}

/// A read through the read-only port: which member answered, and whether it is in recovery.
async fn read(run: &Run<'_, Endpoint>) -> Path<Read> {
    through(run, run.spec.ro_port, |client| async move {
        let messages = client
            .simple_query("select pg_is_in_recovery(), host(inet_server_addr())")
            .await
            .map_err(pg_error)?;
        let row = messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .ok_or(Failure::new("the read returned no row"))?;
        let in_recovery = match row.get(0) {
            Some("t") => true,
            Some("f") => false,
            other => return Err(Failure(format!("pg_is_in_recovery() answered {other:?}"))),
        };
        Ok(Read {
            member: row.get(1).map(str::to_string),
            in_recovery,
        })
    })
    .await
}

/// Runs `work` in a new session through `port` of the target: a new session each run, so that
/// the balancer chooses a member each time as it does for an application.
async fn through<T, F, Fut>(run: &Run<'_, Endpoint>, port: u16, work: F) -> Path<T>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let started = Instant::now();
    let host = run.target;
    let (reached, result) = match tokio::time::timeout(
        run.probe.timeout,
        TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(tcp)) => {
            let config = config(&run.spec.login, run.state.password.as_deref());
            let result = match session(&config, tcp, host, run.probe.tls.as_ref()).await {
                Ok(client) => work(client).await,
                Err(e) => Err(e),
            };
            (true, result)
        }
        Ok(Err(e)) => (false, Err(Failure(format!("{host}:{port}: {e}")))),
        Err(_) => (false, Err(Failure(format!("{host}:{port}: connect timed out")))),
    };
    Path {
        reached,
        result,
        took: started.elapsed(),
    }
}

/// The login as PgBouncer takes it: no `options` (PgBouncer refuses startup parameters it does
/// not know).
fn config(login: &Login, password: Option<&str>) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.user(&login.user)
        .dbname(&login.dbname)
        .application_name("hactl-probe");
    if let Some(p) = password {
        c.password(p);
    }
    c
}

/// A session over `tcp`: with `tls`, the server's certificate must chain to the probe's CA and
/// name `host` (the endpoint's address, which every member's certificate names: verify-full).
async fn session(
    config: &tokio_postgres::Config,
    tcp: TcpStream,
    host: &str,
    tls: Option<&ClientTls>,
) -> Result<Client, Failure> {
    match tls {
        Some(tls) => {
            use tokio_postgres::tls::MakeTlsConnect;
            let mut make = tls.postgres().map_err(|e| Failure(e.to_string()))?;
            let connect = MakeTlsConnect::<TcpStream>::make_tls_connect(&mut make, host)
                .unwrap_or_else(|never| match never {});
            let mut config = config.clone();
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, conn) = config
                .connect_raw(tcp, connect)
                .await
                .map_err(pg_error)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(client)
        }
        None => {
            let (client, conn) = config.connect_raw(tcp, NoTls).await.map_err(pg_error)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(client)
        }
    }
}

/// How many members Patroni finds fit for the read-only pool, by the check HAProxy makes
/// (`GET /replica?lag=`, 200 or not); a member that does not answer is not fit, for HAProxy
/// either. None: the probe lists no REST API.
async fn replicas_fit(run: &Run<'_, Endpoint>) -> Option<usize> {
    let client = run.state.patroni.as_ref()?;
    let tls = run.probe.tls.is_some();
    let checks = run.spec.patroni.iter().map(|member| {
        let url = format!("{}{}", patroni::api_base(member, tls), run.spec.replica_check);
        async move {
            client
                .http()
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
        }
    });
    let answers = futures::future::join_all(checks).await;
    Some(answers.into_iter().filter(|fit| *fit).count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::config::tests::{assert_errors, probe};
    use crate::probe::kinds::Spec as AnySpec;

    fn spec(text: &str) -> Spec {
        match probe(text).spec {
            AnySpec::Endpoint(s) => s,
            other => panic!("not an endpoint spec: {other:?}"),
        }
    }

    #[test]
    fn options_are_read_with_their_defaults() {
        let s = spec("probes:\n  - {name: e, type: endpoint, targets: [10.0.0.10]}\n");
        assert_eq!(s.login, Login::new(None, None, None, None));
        assert_eq!((s.rw_port, s.ro_port), (5000, 5001));
        assert_eq!(s.table, "hactl_probe_write");
        assert!(s.patroni.is_empty());
        assert_eq!(s.replica_check, "/replica?lag=16MB");
        let s = spec(
            "probes:
  - name: e
    type: endpoint
    targets: [10.0.0.10]
    endpoint:
      user: hactl_prober
      password: p
      dbname: d
      table: probes.w
      rw_port: 6000
      ro_port: 6001
      patroni: [\"10.0.0.1:8008\", \"https://10.0.0.2:8008\"]
      replica_max_lag: 1048576
",
        );
        assert_eq!(
            s.login,
            Login::new(Some("hactl_prober".into()), Some("d".into()), Some("p".into()), None)
        );
        assert_eq!((s.table.as_str(), s.rw_port, s.ro_port), ("probes.w", 6000, 6001));
        assert_eq!(s.patroni, ["10.0.0.1:8008", "https://10.0.0.2:8008"]);
        assert_eq!(s.replica_check, "/replica?lag=1048576");
    }

    #[test]
    fn a_target_is_the_address_alone() {
        for ok in ["10.0.0.10", "db.example.com", "::1"] {
            spec(&format!("probes:\n  - {{name: e, type: endpoint, targets: [\"{ok}\"]}}\n"));
        }
        let head = "probes:\n  - name: e\n    type: endpoint\n    targets:\n";
        assert_errors(head, &[
            (
                "      - 10.0.0.10:5000\n",
                "probes.yml:5: targets[0]: \"10.0.0.10:5000\" is not a host: the ports are endpoint.rw_port and endpoint.ro_port",
            ),
            (
                "      - \"a,b\"\n",
                "probes.yml:5: targets[0]: \"a,b\" is not a host: the ports are endpoint.rw_port and endpoint.ro_port",
            ),
        ]);
    }

    #[test]
    fn group_targets_drop_the_port() {
        let s = spec("probes:\n  - {name: e, type: endpoint, targets: [vip]}\n");
        assert_eq!(Endpoint::group_target(&s, "10.0.0.3:5000".into()), "10.0.0.3");
    }

    #[test]
    fn mistakes_name_line_and_key() {
        let head = "probes:\n  - name: e\n    type: endpoint\n    targets: [10.0.0.10]\n    endpoint:\n";
        assert_errors(head, &[
            (
                "      table: \"t; drop table x\"\n",
                "probes.yml:6: endpoint.table: \"t; drop table x\" is not a table name (letters, digits and _, optionally SCHEMA.TABLE)",
            ),
            (
                "      ro_port: 5000\n",
                "probes.yml:6: endpoint.ro_port: 5000 is the read-write port too: reads and writes need their own",
            ),
            (
                "      replica_max_lag: \"16 MB&x=1\"\n",
                "probes.yml:6: endpoint.replica_max_lag: \"16 MB&x=1\" is not a size (bytes, or with a unit: 16MB, 1GB)",
            ),
            (
                "      patroni: [\"\"]\n",
                "probes.yml:6: endpoint.patroni: \"\" is not HOST:PORT or a URL of a member's REST API",
            ),
            (
                "      rw_port: 70000\n",
                "probes.yml:6: probes[0]: endpoint.rw_port: invalid value: integer `70000`, expected u16",
            ),
            (
                "      query: select 1\n",
                "probes.yml:6: probes[0]: endpoint.query: unknown field `query`, expected one of `user`, `password`, `password_secret`, `dbname`, `table`, `rw_port`, `ro_port`, `patroni`, `replica_max_lag`",
            ),
        ]);
    }

    #[test]
    fn a_postgres_block_is_not_an_endpoint_probes() {
        let head = "probes:\n  - name: e\n    type: endpoint\n    targets: [10.0.0.10]\n";
        assert_errors(head, &[(
            "    postgres: {user: u}\n",
            "probes.yml:5: postgres: only for probes of type postgres or write",
        )]);
    }

    #[test]
    fn a_password_from_the_secret_store_needs_an_inventory() {
        let p = probe(
            "probes:\n  - {name: e, type: endpoint, targets: [vip], endpoint: {password_secret: prober}}\n",
        );
        let err = crate::probe::kinds::Kit::new(&p, &Env { inventory: None })
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("endpoint.password_secret: \"prober\" needs an inventory (-i INVENTORY)")
        );
    }

    #[test]
    fn the_login_is_what_pgbouncer_accepts() {
        let login = Login::new(Some("hactl_prober".into()), None, None, None);
        let c = config(&login, Some("pw"));
        assert_eq!(c.get_user(), Some("hactl_prober"));
        assert_eq!(c.get_dbname(), Some("postgres"));
        assert_eq!(c.get_password(), Some(&b"pw"[..]));
        // PgBouncer 1.18 refuses the `options` startup parameter.
        assert_eq!(c.get_options(), None);
    }
}
