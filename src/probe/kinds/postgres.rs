//! `postgres`: connect, run a query, check primary or replica, read the replication lag. The
//! `postgres:` block, the login and the connection helpers here serve `write` too.

use std::time::Duration;

use prometheus::{GaugeVec, IntGaugeVec};
use serde::Deserialize;
use tokio_postgres::{Client, NoTls};

use super::write::Write;
use super::{Env, Failure, Kind, Mistake, Run};
use crate::probe::config::Probe;
use crate::probe::metrics::{Per, Registrar};

pub(crate) struct Postgres;

/// `postgres:` as written, for a postgres or a write probe: each takes the login and its own
/// keys.
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
    /// postgres: a query to run.
    #[serde(default)]
    pub(super) query: Option<String>,
    /// postgres: what the server must be (default any).
    #[serde(default)]
    pub(super) expect: Option<Role>,
    /// postgres: replicas lagging more bytes than this fail the probe.
    #[serde(default)]
    pub(super) max_lag_bytes: Option<u64>,
    /// write: the table written to (created when missing).
    #[serde(default)]
    pub(super) table: Option<String>,
}

impl Options {
    /// The login; `others`, the keys of probes of type `owner` (and whether each is given),
    /// must not be given.
    pub(super) fn login(&self, others: &[(&str, bool)], owner: &str) -> Result<Login, Mistake> {
        if let Some((key, _)) = others.iter().find(|(_, given)| *given) {
            return Err(Mistake::new(
                &format!("postgres.{key}"),
                format!("only for probes of type {owner}"),
            ));
        }
        Ok(Login::new(
            self.user.clone(),
            self.dbname.clone(),
            self.password.clone(),
            self.password_secret.clone(),
        ))
    }
}

/// What a postgres probe expects the server to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    #[default]
    Any,
    Primary,
    Replica,
}

/// Who logs in, where to, and where the password comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Login {
    pub user: String,
    pub dbname: String,
    pub password: Option<String>,
    pub password_secret: Option<String>,
}

impl Login {
    pub fn new(
        user: Option<String>,
        dbname: Option<String>,
        password: Option<String>,
        password_secret: Option<String>,
    ) -> Login {
        Login {
            user: user.unwrap_or_else(|| "postgres".into()),
            dbname: dbname.unwrap_or_else(|| "postgres".into()),
            password,
            password_secret,
        }
    }

    /// The password: written out, or read from the inventory's secret store.
    pub fn password(&self, env: &Env) -> Result<Option<String>, Mistake> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        let Some(name) = &self.password_secret else {
            return Ok(None);
        };
        let key = "postgres.password_secret";
        let Some(inv) = env.inventory else {
            return Err(Mistake::new(
                key,
                format!("{name:?} needs an inventory (-i INVENTORY)"),
            ));
        };
        crate::secrets::SecretStore::of(inv)
            .get_or_create(name, None)
            .map(Some)
            .map_err(|e| Mistake::new(key, e.to_string()))
    }

    /// A connection configuration for one target: `HOST:PORT`, or for `write` a
    /// comma-separated list of them (the session goes to whichever accepts writes).
    pub fn config(
        &self,
        password: Option<&str>,
        target: &str,
        timeout: Duration,
        write: bool,
    ) -> Result<tokio_postgres::Config, Failure> {
        let mut c = tokio_postgres::Config::new();
        let hosts = target.split(',').count().max(1) as u32;
        for hp in target.split(',') {
            let (host, port) = match hp.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    p.parse::<u16>()
                        .map_err(|_| Failure(format!("{hp}: the port is not a number")))?,
                ),
                None => (hp, 5432),
            };
            c.host(host).port(port);
        }
        c.user(&self.user)
            .dbname(&self.dbname)
            .application_name("hactl-probe")
            .options("-c client_min_messages=warning")
            // One host: a second beyond the run's timeout, so that the scheduler's timeout
            // counts. Several (write): a dead host must leave time to try the next one.
            .connect_timeout(if hosts > 1 {
                timeout / hosts
            } else {
                timeout + Duration::from_secs(1)
            });
        if let Some(p) = password {
            c.password(p);
        }
        if write {
            c.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        }
        Ok(c)
    }
}

/// A session over TLS (the server's certificate checked against the probe's CA and the address,
/// as libpq's verify-full) when the probe has `tls:`, in clear text otherwise.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
    tls: Option<&crate::stack::tls::ClientTls>,
) -> Result<Client, Failure> {
    let client = match tls {
        Some(tls) => {
            let connector = tls.postgres().map_err(|e| Failure(e.to_string()))?;
            let mut config = config.clone();
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, conn) = config.connect(connector).await.map_err(pg_error)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            client
        }
        None => {
            let (client, conn) = config.connect(NoTls).await.map_err(pg_error)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            client
        }
    };
    Ok(client)
}

/// The server's message, or the client's error with its cause.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> Failure {
    Failure(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            use std::error::Error;
            match e.source() {
                Some(s) => format!("{e}: {s}"),
                None => e.to_string(),
            }
        }
    })
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    login: Login,
    query: Option<String>,
    expect: Role,
    max_lag_bytes: Option<u64>,
}

/// Per target: primary or not, and a replica's replay lag.
pub(crate) struct Series {
    is_primary: IntGaugeVec,
    lag_bytes: GaugeVec,
    lag_seconds: GaugeVec,
}

impl Kind for Postgres {
    const NAME: &'static str = "postgres";
    const BLOCK: Option<&'static str> = Some("postgres");
    type Options = Options;
    type Spec = Spec;
    /// The password, looked up.
    type State = Option<String>;
    type Series = Series;

    fn check(o: Options) -> Result<Spec, Mistake> {
        Ok(Spec {
            login: o.login(&[("table", o.table.is_some())], Write::NAME)?,
            query: o.query,
            expect: o.expect.unwrap_or_default(),
            max_lag_bytes: o.max_lag_bytes,
        })
    }

    fn state(spec: &Spec, _: &Probe, env: &Env) -> Result<Option<String>, Mistake> {
        spec.login.password(env)
    }

    async fn run(run: Run<'_, Self>) -> Result<(), Failure> {
        let spec = run.spec;
        let config =
            spec.login
                .config(run.state.as_deref(), run.target, run.probe.timeout, false)?;
        let client = connect(&config, run.probe.tls.as_ref()).await?;
        if let Some(q) = &spec.query {
            client.simple_query(q).await.map_err(pg_error)?;
        }
        let row = client
            .query_one(
                "select pg_is_in_recovery(),
                    coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::float8,
                    case when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0
                         else coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0) end::float8",
                &[],
            )
            .await
            .map_err(pg_error)?;
        let in_recovery: bool = row.get(0);
        let lag_bytes: f64 = row.get(1);
        let lag_secs: f64 = row.get(2);
        let l = [run.probe.name.as_str(), run.target];
        let s = run.series;
        s.is_primary.with_label_values(&l).set(i64::from(!in_recovery));
        if in_recovery {
            s.lag_bytes.with_label_values(&l).set(lag_bytes);
            s.lag_seconds.with_label_values(&l).set(lag_secs);
        } else {
            let _ = s.lag_bytes.remove_label_values(&l);
            let _ = s.lag_seconds.remove_label_values(&l);
        }
        match (spec.expect, in_recovery) {
            (Role::Primary, true) => return Err(Failure::new("a replica, not the primary")),
            (Role::Replica, false) => return Err(Failure::new("the primary, not a replica")),
            _ => {}
        }
        if let (true, Some(max)) = (in_recovery, spec.max_lag_bytes) {
            if lag_bytes > max as f64 {
                return Err(Failure(format!("lags {lag_bytes} bytes (at most {max})")));
            }
        }
        Ok(())
    }

    fn series(r: &mut Registrar) -> Series {
        Series {
            is_primary: r.int_gauge(
                "hactl_postgres_is_primary",
                "1 if the server accepts writes, 0 if it is in recovery.",
                Per::Target,
            ),
            lag_bytes: r.gauge(
                "hactl_postgres_replication_lag_bytes",
                "WAL received but not yet replayed by a replica.",
                Per::Target,
            ),
            lag_seconds: r.gauge(
                "hactl_postgres_replication_lag_seconds",
                "Age of the last replayed transaction while WAL waits to be replayed (0 when caught up).",
                Per::Target,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::config::tests::{assert_errors, probe};
    use crate::probe::kinds::{Kit, Spec as AnySpec};

    fn spec(text: &str) -> Spec {
        match probe(text).spec {
            AnySpec::Postgres(s) => s,
            other => panic!("not a postgres spec: {other:?}"),
        }
    }

    #[test]
    fn options_are_read_with_their_defaults() {
        let s = spec("probes:\n  - {name: pg, type: postgres, targets: [\"h:5432\"]}\n");
        assert_eq!(s.login, Login::new(None, None, None, None));
        assert_eq!((s.login.user.as_str(), s.login.dbname.as_str()), ("postgres", "postgres"));
        assert_eq!((s.query, s.expect, s.max_lag_bytes), (None, Role::Any, None));
        let s = spec(
            "probes:
  - name: pg
    type: postgres
    targets: [\"h:5432\"]
    postgres: {user: u, password: p, dbname: d, query: select 1, expect: replica, max_lag_bytes: 5}
",
        );
        assert_eq!(
            s.login,
            Login::new(Some("u".into()), Some("d".into()), Some("p".into()), None)
        );
        assert_eq!(s.query.as_deref(), Some("select 1"));
        assert_eq!((s.expect, s.max_lag_bytes), (Role::Replica, Some(5)));
    }

    #[test]
    fn mistakes_name_line_and_key() {
        let head = "probes:\n  - name: pg\n    type: postgres\n    targets: [\"h:5432\"]\n    postgres:\n";
        assert_errors(head, &[
            (
                "      expect: leader\n",
                "probes.yml:6: probes[0]: postgres.expect: unknown variant `leader`, expected one of `any`, `primary`, `replica`",
            ),
            (
                "      table: t\n",
                "probes.yml:6: postgres.table: only for probes of type write",
            ),
            (
                "      users: x\n",
                "probes.yml:6: probes[0]: postgres.users: unknown field `users`, expected one of `user`, `password`, `password_secret`, `dbname`, `query`, `expect`, `max_lag_bytes`, `table`",
            ),
        ]);
    }

    #[test]
    fn a_password_from_the_secret_store_needs_an_inventory() {
        let p = probe(
            "probes:\n  - {name: pg, type: postgres, targets: [\"h:5432\"], postgres: {password_secret: prober}}\n",
        );
        let err = Kit::new(&p, &Env { inventory: None }).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("postgres.password_secret: \"prober\" needs an inventory (-i INVENTORY)")
        );
    }

    #[test]
    fn a_target_is_host_port_and_the_port_a_number() {
        let login = Login::new(None, None, None, None);
        let timeout = Duration::from_secs(2);
        let c = login.config(None, "10.0.0.1:6432", timeout, false).unwrap();
        assert_eq!(c.get_ports(), [6432]);
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        let err = login.config(None, "h:x", timeout, false).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("h:x: the port is not a number"));
    }
}
