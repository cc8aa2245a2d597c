//! `write`: an acknowledged write through the read-write endpoint, every interval: the time
//! without one, and the windows (outages) without one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{GaugeVec, IntCounterVec};

use super::postgres::{connect, pg_error, Login, Options, Postgres};
use super::{Env, Failure, Kind, Mistake, Run};
use crate::probe::config::Probe;
use crate::probe::board::{Board, What};
use crate::probe::metrics::{Per, Registrar};

pub(crate) struct Write;

/// The table written to by default: role postgresql_prober makes it, owned by the prober's role.
pub(super) const TABLE: &str = "hactl_probe_write";

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    login: Login,
    table: String,
}

/// What a write probe keeps between runs: the password, its session and the last
/// acknowledged write.
pub(crate) struct State {
    password: Option<String>,
    session: tokio::sync::Mutex<Session>,
}

#[derive(Default)]
struct Session {
    client: Option<tokio_postgres::Client>,
    last_ok: Option<Instant>,
    started: Option<Instant>,
    longest: f64,
}

/// Per probe: the time without an acknowledged write, and the windows without one.
pub(crate) struct Series {
    since_success: GaugeVec,
    last_outage: GaugeVec,
    longest_outage: GaugeVec,
    outages: IntCounterVec,
    /// The status page's events.
    board: Arc<Board>,
}

impl Kind for Write {
    const NAME: &'static str = "write";
    const BLOCK: Option<&'static str> = Some("postgres");
    // A write probe writes through the cluster, not through one member.
    const ONE_TARGET: bool = true;
    type Options = Options;
    type Spec = Spec;
    type State = State;
    type Series = Series;

    fn check(o: Options) -> Result<Spec, Mistake> {
        let login = o.login(
            &[
                ("query", o.query.is_some()),
                ("expect", o.expect.is_some()),
                ("max_lag_bytes", o.max_lag_bytes.is_some()),
            ],
            Postgres::NAME,
        )?;
        let table = o.table.unwrap_or_else(|| TABLE.into());
        // It is written into SQL statements.
        if !is_table_name(&table) {
            return Err(Mistake::new(
                "postgres.table",
                format!("{table:?} is not a table name (letters, digits and _, optionally SCHEMA.TABLE)"),
            ));
        }
        Ok(Spec { login, table })
    }

    fn state(spec: &Spec, _: &Probe, env: &Env) -> Result<State, Mistake> {
        Ok(State {
            password: spec.login.password(env)?,
            session: Default::default(),
        })
    }

    async fn run(run: Run<'_, Self>) -> Result<(), Failure> {
        let p = run.probe;
        let config = run.spec.login.config(
            run.state.password.as_deref(),
            run.target,
            p.timeout,
            true,
        )?;
        let table = &run.spec.table;
        let mut st = run.state.session.lock().await;
        st.started.get_or_insert_with(Instant::now);
        let result = async {
            if st.client.as_ref().is_none_or(|c| c.is_closed()) {
                st.client = Some(connect(&config, run.probe.tls.as_ref()).await?);
            }
            let client = st.client.as_ref().ok_or(Failure::new("no connection"))?;
            let insert = format!(
                "insert into {table} values ($1, 1, clock_timestamp())
                 on conflict (probe) do update set writes = {table}.writes + 1, at = excluded.at"
            );
            match client.execute(&insert, &[&p.name]).await {
                Ok(_) => {}
                // The table is made on first use where the role may create it; the prober's
                // own role (role postgresql_prober) finds it made and owns it.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                    client
                        .batch_execute(&format!(
                            "create table if not exists {table} (probe text primary key, writes bigint not null, at timestamptz not null)"
                        ))
                        .await
                        .map_err(pg_error)?;
                    client.execute(&insert, &[&p.name]).await.map_err(pg_error)?;
                }
                Err(e) => return Err(pg_error(e)),
            }
            Ok(())
        }
        .await;
        let done = Instant::now();
        let l = [p.name.as_str()];
        let s = run.series;
        match &result {
            Ok(()) => {
                if let Some(prev) = st.last_ok {
                    let gap = done.duration_since(prev).as_secs_f64();
                    if gap > 2.0 * p.interval.as_secs_f64() {
                        s.last_outage.with_label_values(&l).set(gap);
                        s.outages.with_label_values(&l).inc();
                        tracing::warn!(probe = %p.name, seconds = gap, "writes are acknowledged again");
                        s.board.event(&p.name, What::Outage { seconds: gap });
                    }
                    if gap > st.longest {
                        st.longest = gap;
                        s.longest_outage.with_label_values(&l).set(gap);
                    }
                } else {
                    s.last_outage.with_label_values(&l).set(0.0);
                    s.longest_outage.with_label_values(&l).set(0.0);
                    s.outages.with_label_values(&l).inc_by(0);
                }
                st.last_ok = Some(done);
                s.since_success.with_label_values(&l).set(0.0);
            }
            Err(_) => failed(&run, &mut st),
        }
        result
    }

    async fn timed_out(run: Run<'_, Self>) {
        failed(&run, &mut *run.state.session.lock().await);
    }

    fn series(r: &mut Registrar) -> Series {
        Series {
            since_success: r.gauge(
                "hactl_write_seconds_since_success",
                "Seconds since the last acknowledged write.",
                Per::Probe,
            ),
            last_outage: r.gauge(
                "hactl_write_last_outage_seconds",
                "The most recent window without acknowledged writes (longer than two intervals).",
                Per::Probe,
            ),
            longest_outage: r.gauge(
                "hactl_write_longest_outage_seconds",
                "The longest window without acknowledged writes since the prober started.",
                Per::Probe,
            ),
            outages: r.counter(
                "hactl_write_outages_total",
                "Windows without acknowledged writes longer than two intervals.",
                Per::Probe,
            ),
            board: r.board(),
        }
    }
}

/// A failed or timed-out write: the session is not reused, and the time without writes grows.
fn failed(run: &Run<'_, Write>, st: &mut Session) {
    st.client = None;
    let since = st
        .last_ok
        .or(st.started)
        .map_or(Duration::ZERO, |t| t.elapsed());
    run.series
        .since_success
        .with_label_values(&[run.probe.name.as_str()])
        .set(since.as_secs_f64());
}

/// `name` or `schema.name`, of letters, digits and `_`, not starting with a digit.
pub(super) fn is_table_name(s: &str) -> bool {
    let part = |p: &str| {
        p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    match s.split_once('.') {
        Some((schema, table)) => part(schema) && part(table),
        None => part(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::config::tests::{assert_errors, probe};
    use crate::probe::kinds::Spec as AnySpec;

    #[test]
    fn reads_postgres_options_and_probes_the_members_as_one_target() {
        let p = probe(
            "probes:\n  - {name: w, type: write, targets: [\"a:5432\", \"b:5432\"], postgres: {user: u, password_secret: s}}\n",
        );
        assert!(p.spec.one_target());
        let AnySpec::Write(s) = p.spec else {
            panic!("not a write spec: {:?}", p.spec)
        };
        assert_eq!(s.login, Login::new(Some("u".into()), None, None, Some("s".into())));
        assert_eq!(s.table, "hactl_probe_write");
        let p = probe(
            "probes:\n  - {name: w, type: write, targets: [\"a:5432\"], postgres: {table: probes.writes}}\n",
        );
        assert!(matches!(p.spec, AnySpec::Write(Spec { table, .. }) if table == "probes.writes"));
    }

    #[test]
    fn mistakes_name_line_and_key() {
        let head = "probes:\n  - name: w\n    type: write\n    targets: [\"h:5432\"]\n    postgres:\n";
        assert_errors(head, &[
            (
                "      table: \"t; drop table x\"\n",
                "probes.yml:6: postgres.table: \"t; drop table x\" is not a table name (letters, digits and _, optionally SCHEMA.TABLE)",
            ),
            (
                "      expect: primary\n",
                "probes.yml:6: postgres.expect: only for probes of type postgres",
            ),
            (
                "      max_lag_bytes: 1\n",
                "probes.yml:6: postgres.max_lag_bytes: only for probes of type postgres",
            ),
        ]);
    }

    #[test]
    fn table_names_are_identifiers() {
        for ok in ["t", "_t1", "s.t", "hactl_probe_write"] {
            assert!(is_table_name(ok), "{ok}");
        }
        for bad in ["", "1t", "s.t.u", "t-1", "t t", ".t", "\"T\""] {
            assert!(!is_table_name(bad), "{bad}");
        }
    }
}
