//! The writers: N connections to whichever member is primary (multi-host, read-write session),
//! each inserting sequenced rows at a fixed rate and reconnecting after errors. Every
//! acknowledged row is recorded with when and where it was acknowledged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::config::SslMode;
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::types::Type;
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

/// Where and as whom to connect, and the TLS to do it with (verify-full against the CA).
#[derive(Clone)]
pub struct Pg {
    pub config: Config,
    pub tls: MakeRustlsConnect,
}

/// Whichever member is primary (a multi-host, read-write session), as the superuser: for the
/// table and the rows stored.
pub fn config(cluster: &Cluster) -> Pg {
    direct(cluster, &cluster.superuser)
}

/// The writers' way to the primary, as the writers' role.
pub fn writers(cluster: &Cluster, via: &Via) -> Pg {
    match via {
        Via::Direct => direct(cluster, &cluster.writer),
        Via::Endpoint { address, port } => {
            let mut config = Config::new();
            config.host(address).port(*port);
            login(&mut config, &cluster.writer).application_name("hactl-failover-test");
            Pg {
                config,
                tls: cluster.pg_tls.clone(),
            }
        }
    }
}

fn direct(cluster: &Cluster, who: &Credentials) -> Pg {
    let mut config = Config::new();
    for m in &cluster.stack.postgres {
        config.host(&m.address).port(m.pg_port);
    }
    login(&mut config, who)
        .application_name("hactl-failover-test")
        .target_session_attrs(TargetSessionAttrs::ReadWrite);
    Pg {
        config,
        tls: cluster.pg_tls.clone(),
    }
}

/// How the writers reach the primary.
#[derive(Debug, Clone)]
pub enum Via {
    /// Through the balancers (HAProxy, then the primary's PgBouncer), as applications do.
    Endpoint { address: String, port: u16 },
    /// Straight to the members: a multi-host connection that wants a read-write session.
    Direct,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Endpoint { address, port } => write!(f, "endpoint {address}:{port}"),
            Via::Direct => f.write_str("direct"),
        }
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

/// The writers' table, owned by the writers' role (`owner`, a plain identifier from the
/// inventory: quoted here).
pub async fn prepare_table(config: &Pg, owner: &str) -> Result<(), tokio_postgres::Error> {
    let client = connect(config).await?;
    let owner = format!("\"{}\"", owner.replace('"', "\"\""));
    client
        .batch_execute(&format!(
            "create table if not exists {TABLE} (
                run text not null, writer int not null, seq bigint not null,
                at timestamptz not null default clock_timestamp(),
                server text, timeline int,
                primary key (run, writer, seq));
             alter table {TABLE} owner to {owner}"
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
        // An unnamed statement, parsed and run in one round trip: PgBouncer's transaction
        // pooling may give the next round trip another server, where a named one would not be.
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 3] = [
            (&run, Type::TEXT),
            (&writer, Type::INT4),
            (&seq, Type::INT8),
        ];
        let sent_at = Instant::now();
        let insert = c.query_typed(INSERT, &params);
        match tokio::time::timeout(WRITE_TIMEOUT, insert).await {
            Ok(Ok(rows)) if rows.len() == 1 => {
                let row = &rows[0];
                let ack = Ack {
                    writer,
                    seq,
                    sent_at,
                    at: Instant::now(),
                    server: row
                        .try_get::<_, Option<String>>(0)
                        .ok()
                        .flatten()
                        .unwrap_or_default(),
                    timeline: row.try_get(1).unwrap_or_default(),
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
