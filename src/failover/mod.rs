//! `hactl failover-test`: fails the Patroni leader while writers run, and reports what users
//! felt — seconds without writes, acknowledged writes lost, split brain, the old leader's return.

pub mod cluster;
pub mod fault;
mod workload;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::inventory::Inventory;
use cluster::Cluster;
use fault::secs;
pub use fault::Mode;
use workload::Ack;

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("{0}")]
    Input(String),
    /// The cluster is not healthy before the test: nothing was injected.
    #[error("the cluster is not healthy, nothing was done: {0}")]
    Unhealthy(String),
    #[error("{0}")]
    Cluster(String),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub writers: usize,
    /// Inserts per second, per writer.
    pub rate: f64,
    pub max_downtime: f64,
    pub max_lost: u64,
    /// Replication lag a replica may have at the start (bytes).
    pub max_lag: u64,
    /// When the partition heals by itself at the latest.
    pub partition_heal_after: Duration,
    /// How long the cluster may take to be healthy before the test refuses to start.
    pub settle: Duration,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub old_leader: String,
    pub new_leader: Option<String>,
    /// Last acknowledged write before the fault to the first one after it (client clock).
    pub write_downtime_s: Option<f64>,
    /// The same gap, read from the rows' clock_timestamp() on the new primary.
    pub db_write_gap_s: Option<f64>,
    /// Fault to the leader key's loss in etcd (None for a switchover, which hands it over).
    pub leader_key_lost_s: Option<f64>,
    /// Fault to a new leader key in etcd.
    pub leader_elected_s: Option<f64>,
    pub acked_writes: usize,
    pub lost_acked_writes: usize,
    pub duplicated_writes: u64,
    pub timeline_before: Option<i32>,
    pub timeline_after: Option<i32>,
    pub split_brain: bool,
    /// Fault to the old leader streaming again as a replica.
    pub old_leader_rejoined_s: Option<f64>,
    pub max_downtime_s: f64,
    pub max_lost: u64,
    pub passed: bool,
    /// Why it did not pass.
    pub problems: Vec<String>,
}

/// Leader key events from etcd: when, and the new holder (None = deleted).
type KeyEvents = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

async fn watch_leader_key(
    cluster: &Cluster,
    old_address: &str,
    events: KeyEvents,
) -> Result<(), FailoverError> {
    // Not through the old leader's host: it may be the one that fails.
    let endpoints: Vec<String> = cluster
        .etcd
        .iter()
        .filter(|a| *a != old_address)
        .map(|a| format!("http://{a}:2379"))
        .collect();
    let mut client = etcd_client::Client::connect(endpoints, None)
        .await
        .map_err(|e| FailoverError::Cluster(format!("etcd: {e}")))?;
    let key = format!("/service/{}/leader", cluster.scope);
    let mut stream = client
        .watch(key, None)
        .await
        .map_err(|e| FailoverError::Cluster(format!("etcd watch: {e}")))?;
    tokio::spawn(async move {
        while let Ok(Some(resp)) = stream.message().await {
            let now = Instant::now();
            for event in resp.events() {
                let holder = match event.event_type() {
                    etcd_client::EventType::Put => event
                        .kv()
                        .and_then(|kv| kv.value_str().ok())
                        .map(str::to_string),
                    etcd_client::EventType::Delete => None,
                };
                events
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((now, holder));
            }
        }
    });
    Ok(())
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("run-{nanos}")
}

/// The whole test: pre-flight, writers, fault, observation, healing, verification.
pub async fn run(inventory: &Inventory, opts: &Options) -> Result<Report, FailoverError> {
    let cluster = Cluster::from_inventory(inventory)?;
    let old_leader = settled(&cluster, opts.max_lag, opts.settle).await?;
    let old_address = cluster
        .member(&old_leader)
        .map(|m| m.address.clone())
        .unwrap_or_default();
    let pg = workload::config(&cluster);
    workload::prepare_table(&pg)
        .await
        .map_err(|e| FailoverError::Cluster(format!("PostgreSQL on the leader: {e}")))?;

    let key_events: KeyEvents = Arc::default();
    watch_leader_key(&cluster, &old_address, key_events.clone()).await?;
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let run = run_id();
    let writers: Vec<_> = (0..opts.writers.max(1))
        .map(|i| {
            tokio::spawn(workload::writer(
                pg.clone(),
                run.clone(),
                i as i32,
                opts.rate,
                acks.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let fault_at = Instant::now();
    let injected = fault::inject(
        opts.mode,
        inventory,
        &cluster,
        &old_leader,
        opts.partition_heal_after,
    )
    .await;
    let injected = match injected {
        Ok(i) => i,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };

    // A new primary takes writes again (or the old one, after a crash it recovers from).
    let elected_by = fault_at + Duration::from_secs(120);
    let first_after = loop {
        let found = acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            // Over a connection made after the fault: the old one may have taken a last write
            // before the fault took hold.
            .filter(|a| a.connected_at > fault_at)
            .map(|a| a.at)
            .min();
        if found.is_some() || Instant::now() > elected_by {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut problems = Vec::new();
    if let Err(e) = injected.heal(opts.mode).await {
        problems.push(format!("healing: {e}"));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(true);
    for w in writers {
        let _ = w.await;
    }

    // Who holds the leader key now: etcd says it; an old leader just back from a partition may
    // still believe it leads.
    let key_holder = key_events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .rev()
        .find_map(|(t, v)| v.clone().filter(|_| *t >= fault_at));
    let new_leader = match key_holder {
        Some(holder) => Some(holder),
        None => {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let l = match cluster.leader(Some(&old_leader)).await {
                    Some(l) => Some(l),
                    None => cluster.leader(None).await,
                };
                if l.is_some() || Instant::now() > deadline {
                    break l;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };

    // The old leader back as a streaming replica (when there is a new leader at all).
    let mut rejoined = None;
    if let Some(new) = new_leader.as_ref().filter(|n| **n != old_leader) {
        let deadline = Instant::now() + Duration::from_secs(180);
        let new_pg = single_host(&cluster, new);
        while Instant::now() < deadline {
            if let Ok(client) = workload::connect(&new_pg).await {
                let streaming: Result<i64, _> = client
                    .query_one(
                        "select count(*) from pg_stat_replication where client_addr = $1::text::inet and state = 'streaming'",
                        &[&old_address],
                    )
                    .await
                    .map(|r| r.get(0));
                if matches!(streaming, Ok(n) if n > 0) {
                    rejoined = Some(fault_at.elapsed());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if rejoined.is_none() {
            problems.push(format!(
                "{old_leader} did not come back as a streaming replica within 180 s"
            ));
        }
    }

    // What the new primary holds of this run.
    let acks = acks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut stored: HashSet<(i32, i64)> = HashSet::new();
    let mut duplicated = 0u64;
    let mut db_gap = None;
    match workload::connect(&pg).await {
        Ok(client) => {
            let rows = client
                .query(
                    "select writer, seq, extract(epoch from at)::float8 from hactl_failover where run = $1 order by at",
                    &[&run],
                )
                .await
                .map_err(|e| FailoverError::Cluster(format!("reading the rows back: {e}")))?;
            let mut last: Option<f64> = None;
            let mut gap: f64 = 0.0;
            for row in &rows {
                if !stored.insert((row.get(0), row.get(1))) {
                    duplicated += 1;
                }
                let at: f64 = row.get(2);
                if let Some(prev) = last {
                    gap = gap.max(at - prev);
                }
                last = Some(at);
            }
            db_gap = Some((gap * 1000.0).round() / 1000.0);
        }
        Err(e) => problems.push(format!("cannot read the rows back: {e}")),
    }
    let lost = acks
        .iter()
        .filter(|a| !stored.contains(&(a.writer, a.seq)))
        .count();
    // Write downtime: the longest time without any acknowledged write, from just before the
    // fault on (a switchover's old primary still takes writes for a moment after the POST).
    let mut times: Vec<Instant> = acks.iter().map(|a| a.at).collect();
    times.sort();
    let window_start = fault_at
        .checked_sub(Duration::from_secs(1))
        .unwrap_or(fault_at);
    let downtime = first_after.map(|_| {
        let gaps = times
            .windows(2)
            .filter(|w| w[1] > window_start)
            .map(|w| w[1] - w[0]);
        secs(gaps.max().unwrap_or_default())
    });
    if first_after.is_none() {
        problems.push("no write was acknowledged within 120 s of the fault".into());
    }
    // Split brain: another member still acknowledging after the new leader started to.
    let new_address = new_leader
        .as_deref()
        .filter(|n| *n != old_leader)
        .and_then(|n| cluster.member(n))
        .map(|m| m.address.clone());
    let split_brain = new_address.is_some_and(|new| {
        let first_new = acks.iter().filter(|a| a.server == new).map(|a| a.at).min();
        first_new.is_some_and(|t| acks.iter().any(|a| a.at > t && a.server != new))
    });
    let timeline_before = acks
        .iter()
        .filter(|a| a.at <= fault_at)
        .map(|a| a.timeline)
        .max();
    let timeline_after = acks
        .iter()
        .filter(|a| a.at > fault_at)
        .map(|a| a.timeline)
        .max();
    let events = key_events.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let leader_key_lost = events
        .iter()
        .find(|(t, v)| *t >= fault_at && v.is_none())
        .map(|(t, _)| secs(*t - fault_at));
    let leader_elected = events
        .iter()
        .find(|(t, v)| *t >= fault_at && v.as_deref().is_some_and(|h| h != old_leader))
        .map(|(t, _)| secs(*t - fault_at));

    if let Some(d) = downtime.filter(|d| *d > opts.max_downtime) {
        problems.push(format!(
            "write downtime {d} s is over the {} s allowed",
            opts.max_downtime
        ));
    }
    if lost as u64 > opts.max_lost {
        problems.push(format!(
            "{lost} acknowledged writes lost (at most {} allowed)",
            opts.max_lost
        ));
    }
    if split_brain {
        problems.push("two members acknowledged writes after the failover (split brain)".into());
    }
    if new_leader.is_none() {
        problems.push("no leader at the end".into());
    }
    if let Err(e) = settled(&cluster, opts.max_lag, Duration::from_secs(90)).await {
        problems.push(format!("not healthy again within 90 s: {e}"));
    }
    Ok(Report {
        mode: opts.mode,
        old_leader,
        new_leader,
        write_downtime_s: downtime,
        db_write_gap_s: db_gap,
        leader_key_lost_s: leader_key_lost,
        leader_elected_s: leader_elected,
        acked_writes: acks.len(),
        lost_acked_writes: lost,
        duplicated_writes: duplicated,
        timeline_before,
        timeline_after,
        split_brain,
        old_leader_rejoined_s: rejoined.map(secs),
        max_downtime_s: opts.max_downtime,
        max_lost: opts.max_lost,
        passed: problems.is_empty(),
        problems,
    })
}

/// The leader, once the cluster passes the pre-flight check (retried for up to `wait`).
async fn settled(cluster: &Cluster, max_lag: u64, wait: Duration) -> Result<String, FailoverError> {
    let deadline = Instant::now() + wait;
    loop {
        match cluster.preflight(max_lag).await {
            Ok(leader) => return Ok(leader),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

fn single_host(cluster: &Cluster, name: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    let address = cluster
        .member(name)
        .map(|m| m.address.clone())
        .unwrap_or_default();
    config
        .host(&address)
        .port(cluster.pg_port)
        .user("postgres")
        .password(&cluster.pg_password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(1));
    config
}

/// The report as a table.
pub fn table(r: &Report) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{s:.3} s"));
    let rows = [
        ("mode", r.mode.to_string()),
        ("old leader", r.old_leader.clone()),
        (
            "new leader",
            r.new_leader.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "write downtime",
            format!(
                "{} (at most {} s)",
                opt(r.write_downtime_s),
                r.max_downtime_s
            ),
        ),
        ("write gap in the database", opt(r.db_write_gap_s)),
        ("leader key lost after", opt(r.leader_key_lost_s)),
        ("new leader key after", opt(r.leader_elected_s)),
        ("acknowledged writes", r.acked_writes.to_string()),
        (
            "acknowledged writes lost",
            format!("{} (at most {})", r.lost_acked_writes, r.max_lost),
        ),
        ("duplicated writes", r.duplicated_writes.to_string()),
        (
            "timeline",
            format!(
                "{} -> {}",
                r.timeline_before.map_or("-".into(), |t| t.to_string()),
                r.timeline_after.map_or("-".into(), |t| t.to_string())
            ),
        ),
        (
            "split brain",
            if r.split_brain { "YES" } else { "no" }.to_string(),
        ),
        (
            "old leader streaming again after",
            opt(r.old_leader_rejoined_s),
        ),
        (
            "result",
            if r.passed {
                "PASSED".to_string()
            } else {
                format!("FAILED: {}", r.problems.join("; "))
            },
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:<34} {v}\n")).collect()
}
