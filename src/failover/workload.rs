//! The writers: N connections to whichever member is primary (multi-host, read-write session),
//! each inserting sequenced rows at a fixed rate and reconnecting after errors. Every
//! acknowledged row is recorded with when and where it was acknowledged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::config::SslMode;
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::cluster::Cluster;
use super::verdict::Row;
use crate::stack::{Credentials, PgMember};

/// One acknowledged insert.
#[derive(Debug, Clone)]
pub struct Ack {
    pub writer: i32,
    pub seq: i64,
    /// When the insert was sent.
    pub sent_at: Instant,
    pub at: Instant,
    /// The member that acknowledged it (its address).
    pub server: String,
    pub timeline: i32,
    /// When the connection it came over was made.
    pub connected_at: Instant,
}

pub const TABLE: &str = "hactl_failover";

/// A connection attempt to one member: a member that does not answer within it is down or cut
/// off, and the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection or an insert that takes longer is dropped and made again: the member it went to
/// may be gone, and a write waiting on a lost synchronous standby should not stall the writer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whichever member is primary (a multi-host, read-write session), as the superuser.
/// Where and as whom to connect, and the TLS to do it with (verify-full against the CA).
#[derive(Clone)]
pub struct Pg {
    pub config: Config,
    pub tls: MakeRustlsConnect,
}

pub fn config(cluster: &Cluster) -> Pg {
    let mut config = Config::new();
    for m in &cluster.stack.postgres {
        config.host(&m.address).port(m.pg_port);
    }
    login(&mut config, &cluster.superuser)
        .application_name("hactl-failover-test")
        .target_session_attrs(TargetSessionAttrs::ReadWrite);
    Pg {
        config,
        tls: cluster.pg_tls.clone(),
    }
}

/// One member, as the superuser.
pub fn single_host(cluster: &Cluster, member: &PgMember) -> Pg {
    let mut config = Config::new();
    config.host(&member.address).port(member.pg_port);
    login(&mut config, &cluster.superuser);
    Pg {
        config,
        tls: cluster.pg_tls.clone(),
    }
}

fn login<'a>(config: &'a mut Config, login: &Credentials) -> &'a mut Config {
    config
        .user(&login.user)
        .password(&login.password)
        .dbname("postgres")
        .ssl_mode(SslMode::Require)
        .connect_timeout(CONNECT_TIMEOUT)
}

pub async fn connect(pg: &Pg) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = pg.config.connect(pg.tls.clone()).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

pub async fn prepare_table(config: &Pg) -> Result<(), tokio_postgres::Error> {
    let client = connect(config).await?;
    client
        .batch_execute(&format!(
            "create table if not exists {TABLE} (
                run text not null, writer int not null, seq bigint not null,
                at timestamptz not null default clock_timestamp(),
                server text, timeline int,
                primary key (run, writer, seq))"
        ))
        .await
}

const INSERT: &str = "insert into hactl_failover (run, writer, seq, server, timeline)
    values ($1, $2, $3, host(inet_server_addr()),
            ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int)
    returning server, timeline";

/// Runs one writer until `stop` turns true.
pub async fn writer(
    config: Pg,
    run: String,
    writer: i32,
    rate: f64,
    acks: Arc<Mutex<Vec<Ack>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut client: Option<Client> = None;
    let mut connected_at = Instant::now();
    let mut seq: i64 = 0;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let c = match &client {
            Some(c) if !c.is_closed() => c,
            _ => {
                client = tokio::time::timeout(WRITE_TIMEOUT, connect(&config))
                    .await
                    .ok()
                    .and_then(Result::ok);
                connected_at = Instant::now();
                match &client {
                    Some(c) => c,
                    None => continue,
                }
            }
        };
        seq += 1;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&run, &writer, &seq];
        let sent_at = Instant::now();
        let insert = c.query_one(INSERT, &params);
        match tokio::time::timeout(WRITE_TIMEOUT, insert).await {
            Ok(Ok(row)) => {
                let ack = Ack {
                    writer,
                    seq,
                    sent_at,
                    at: Instant::now(),
                    server: row.get(0),
                    timeline: row.get(1),
                    connected_at,
                };
                acks.lock().unwrap_or_else(|p| p.into_inner()).push(ack);
            }
            // Not acknowledged: maybe written, maybe not; only acknowledged rows are promised.
            _ => client = None,
        }
    }
}

/// The run's rows that `client`'s server holds.
pub async fn stored_rows(client: &Client, run: &str) -> Result<Vec<Row>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("select writer, seq, extract(epoch from at)::float8 from {TABLE} where run = $1 order by at"),
            &[&run],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Row {
                writer: r.try_get(0)?,
                seq: r.try_get(1)?,
                at: r.try_get(2)?,
            })
        })
        .collect()
}

/// Whether the member at `address` streams from `client`'s server.
pub async fn streams_from(client: &Client, address: &str) -> bool {
    let streaming: Result<i64, _> = client
        .query_one(
            "select count(*) from pg_stat_replication where client_addr = $1::text::inet and state = 'streaming'",
            &[&address],
        )
        .await
        .map(|r| r.get(0));
    matches!(streaming, Ok(n) if n > 0)
}
