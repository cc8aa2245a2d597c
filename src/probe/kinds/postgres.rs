//! `postgres`: connect, run a query, check primary or replica, read the replication lag.
//! `write`: an acknowledged write through the read-write endpoint, every interval.

use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use super::Ctx;
use crate::probe::config::{Probe, Role};

/// A connection configuration for one target: `HOST:PORT`, or for `write` a comma-separated
/// list of them (the session goes to whichever accepts writes).
pub fn pg_config(
    probe: &Probe,
    target: &str,
    password: Option<&str>,
    write: bool,
) -> Result<tokio_postgres::Config, String> {
    let o = &probe.postgres;
    let mut c = tokio_postgres::Config::new();
    let hosts = target.split(',').count().max(1) as u32;
    for hp in target.split(',') {
        let (host, port) = match hp.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{hp}: the port is not a number"))?,
            ),
            None => (hp, 5432),
        };
        c.host(host).port(port);
    }
    c.user(o.user.as_deref().unwrap_or("postgres"))
        .dbname(o.dbname.as_deref().unwrap_or("postgres"))
        .application_name("hactl-probe")
        .options("-c client_min_messages=warning")
        // One host: a second beyond the run's timeout, so that the scheduler's timeout counts.
        // Several (write): a dead host must leave time to try the next one.
        .connect_timeout(if hosts > 1 {
            probe.timeout / hosts
        } else {
            probe.timeout + Duration::from_secs(1)
        });
    if let Some(p) = password {
        c.password(p);
    }
    if write {
        c.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    Ok(c)
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, String> {
    let (client, conn) = config.connect(NoTls).await.map_err(|e| pg_error(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            use std::error::Error;
            match e.source() {
                Some(s) => format!("{e}: {s}"),
                None => e.to_string(),
            }
        }
    }
}

pub async fn run(ctx: &Ctx<'_>, config: &tokio_postgres::Config) -> Result<(), String> {
    let p = ctx.probe;
    let client = connect(config).await?;
    if let Some(q) = &p.postgres.query {
        client.simple_query(q).await.map_err(|e| pg_error(&e))?;
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
        .map_err(|e| pg_error(&e))?;
    let in_recovery: bool = row.get(0);
    let lag_bytes: f64 = row.get(1);
    let lag_secs: f64 = row.get(2);
    let l = [p.name.as_str(), ctx.target];
    ctx.metrics
        .pg_is_primary
        .with_label_values(&l)
        .set(i64::from(!in_recovery));
    if in_recovery {
        ctx.metrics
            .pg_lag_bytes
            .with_label_values(&l)
            .set(lag_bytes);
        ctx.metrics
            .pg_lag_seconds
            .with_label_values(&l)
            .set(lag_secs);
    } else {
        let _ = ctx.metrics.pg_lag_bytes.remove_label_values(&l);
        let _ = ctx.metrics.pg_lag_seconds.remove_label_values(&l);
    }
    match (p.postgres.expect, in_recovery) {
        (Role::Primary, true) => return Err("a replica, not the primary".into()),
        (Role::Replica, false) => return Err("the primary, not a replica".into()),
        _ => {}
    }
    if let (true, Some(max)) = (in_recovery, p.postgres.max_lag_bytes) {
        if lag_bytes > max as f64 {
            return Err(format!("lags {lag_bytes} bytes (at most {max})"));
        }
    }
    Ok(())
}

/// What a write probe keeps between runs: its connection and the last acknowledged write.
#[derive(Default)]
pub struct WriteState {
    client: Option<Client>,
    last_ok: Option<Instant>,
    started: Option<Instant>,
    longest: f64,
}

pub async fn write(
    ctx: &Ctx<'_>,
    config: &tokio_postgres::Config,
    state: &tokio::sync::Mutex<WriteState>,
) -> Result<(), String> {
    let p = ctx.probe;
    let table = p.postgres.table.as_deref().unwrap_or("hactl_probe_write");
    let mut st = state.lock().await;
    let now = Instant::now();
    st.started.get_or_insert(now);
    let result = async {
        if st.client.as_ref().is_none_or(|c| c.is_closed()) {
            st.client = Some(connect(config).await?);
        }
        let client = st.client.as_ref().ok_or("no connection")?;
        let insert = format!(
            "insert into {table} values ($1, 1, clock_timestamp())
             on conflict (probe) do update set writes = {table}.writes + 1, at = excluded.at"
        );
        match client.execute(&insert, &[&p.name]).await {
            Ok(_) => {}
            // The table is made on first use where the role may create it; the prober's own
            // role (role postgresql_prober) finds it made and owns it.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                client
                    .batch_execute(&format!(
                        "create table if not exists {table} (probe text primary key, writes bigint not null, at timestamptz not null)"
                    ))
                    .await
                    .map_err(|e| pg_error(&e))?;
                client
                    .execute(&insert, &[&p.name])
                    .await
                    .map_err(|e| pg_error(&e))?;
            }
            Err(e) => return Err(pg_error(&e)),
        }
        Ok::<(), String>(())
    }
    .await;
    let done = Instant::now();
    let l = [p.name.as_str()];
    let _ = now;
    match &result {
        Ok(()) => {
            if let Some(prev) = st.last_ok {
                let gap = done.duration_since(prev).as_secs_f64();
                if gap > 2.0 * p.interval.as_secs_f64() {
                    ctx.metrics.write_last_outage.with_label_values(&l).set(gap);
                    ctx.metrics.write_outages.with_label_values(&l).inc();
                    tracing::warn!(probe = %p.name, seconds = gap, "writes are acknowledged again");
                }
                if gap > st.longest {
                    st.longest = gap;
                    ctx.metrics
                        .write_longest_outage
                        .with_label_values(&l)
                        .set(gap);
                }
            } else {
                ctx.metrics.write_last_outage.with_label_values(&l).set(0.0);
                ctx.metrics
                    .write_longest_outage
                    .with_label_values(&l)
                    .set(0.0);
            }
            st.last_ok = Some(done);
            ctx.metrics
                .write_since_success
                .with_label_values(&l)
                .set(0.0);
        }
        Err(_) => write_failed(ctx, &mut st),
    }
    result
}

/// A failed or timed-out write: the session is not reused, and the time without writes grows.
pub fn write_failed(ctx: &Ctx<'_>, st: &mut WriteState) {
    st.client = None;
    let now = Instant::now();
    let since = st
        .last_ok
        .or(st.started)
        .map_or(Duration::ZERO, |t| now.duration_since(t));
    ctx.metrics
        .write_since_success
        .with_label_values(&[ctx.probe.name.as_str()])
        .set(since.as_secs_f64());
}
