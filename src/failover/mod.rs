//! `hactl failover-test`: fails the Patroni leader while writers run, and reports what users
//! felt — seconds without writes, acknowledged writes lost, split brain, the old leader's return.

mod cluster;
mod fault;
mod report;
mod verdict;
mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::exit;
use crate::inventory::Inventory;
use crate::stack::etcd::{self, EtcdError};
use crate::stack::{PgMember, StackError};
use cluster::Cluster;
pub use fault::{FaultError, Mode, PowerLoss, SystemdKill};
pub use report::{table, Report};
use verdict::{KeyEvent, Recording, Stored};
use workload::Ack;

/// Writers run this long before the fault: every writer has its connection and the report has
/// writes (and a timeline) from before the fault to measure from.
const WARM_UP: Duration = Duration::from_secs(3);
/// How long writes may take to resume after the fault before the test calls it failed: well
/// past a power loss's ttl + loop_wait (36 s with the stack's timings) and past a partition's
/// self-healing (`--partition-heal-after`, 90 s by default), so a slow failover is measured
/// rather than cut short.
const WRITES_RESUME_TIMEOUT: Duration = Duration::from_secs(120);
/// Writers keep writing this long after the fault is undone: an old leader that comes back
/// believing it still leads would take writes now, and the split brain shows.
const AFTER_HEAL: Duration = Duration::from_secs(3);
/// When etcd showed no leader key since the fault, Patroni's `/cluster` is asked for a leader
/// this long: one ttl, after which a cluster without a leader elects one.
const LEADER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the old leader may take to stream from the new one: Patroni starts it, may
/// pg_rewind it or clone it again, and it catches up on what it missed.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the cluster may take to pass the pre-flight check again once the old leader
/// streams: its lag drains and every etcd member answers again.
const HEALTHY_AGAIN_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the wait for writes after the fault looks at the acknowledgements.
const ACK_POLL: Duration = Duration::from_millis(100);
/// How often the cluster is asked again while waiting for a leader or the old leader's return.
const CLUSTER_POLL: Duration = Duration::from_millis(500);
/// How often the pre-flight check is retried while the cluster settles.
const SETTLE_POLL: Duration = Duration::from_secs(1);
/// etcd's answer to connecting the leader key's watch.
const ETCD_TIMEOUT: Duration = Duration::from_secs(2);

/// Why failover-test gave no report.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// The inventory does not describe a stack: nothing was done.
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("{}: the group {group} needs at least 2 hosts for a failover", inventory.display())]
    TooFewMembers { inventory: PathBuf, group: String },
    /// The cluster is not healthy before the test: nothing was injected.
    #[error("the cluster is not healthy, nothing was done: {}", .0.join("; "))]
    Unhealthy(Vec<String>),
    /// No member could be asked at all: nothing was injected.
    #[error("nothing was done: no member's Patroni REST API answers ({})", .0.join(", "))]
    Unreachable(Vec<String>),
    #[error("the Patroni REST API client: {error}")]
    Http { error: reqwest::Error },
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("{what}: {error}")]
    Postgres {
        what: &'static str,
        error: tokio_postgres::Error,
    },
    #[error(transparent)]
    Fault(#[from] FaultError),
}

impl exit::Code for FailoverError {
    fn exit_code(&self) -> u8 {
        match self {
            FailoverError::Stack(_)
            | FailoverError::TooFewMembers { .. }
            | FailoverError::Fault(FaultError::Target(_)) => exit::BAD_INPUT,
            FailoverError::Unreachable(_) => exit::UNREACHABLE,
            _ => exit::FAILURE,
        }
    }
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

type KeyEvents = Arc<Mutex<Vec<KeyEvent>>>;

/// Records every change of the leader key into `events`, from now on.
async fn watch_leader_key(
    cluster: &Cluster,
    old_address: &str,
    events: KeyEvents,
) -> Result<(), FailoverError> {
    // Not through the old leader's host: it may be the one that fails.
    let endpoints: Vec<String> = cluster
        .stack
        .etcd
        .iter()
        .filter(|m| m.address != old_address)
        .map(|m| m.client_url())
        .collect();
    let mut client = etcd::connect(&endpoints, ETCD_TIMEOUT).await?;
    let mut stream = client
        .watch(cluster.stack.leader_key(), None)
        .await
        .map_err(|e| EtcdError {
            what: "watch",
            why: e.to_string(),
        })?;
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
                lock(&events).push(KeyEvent { at: now, holder });
            }
        }
    });
    Ok(())
}

/// A recording shared with the tasks that add to it; a task that panicked leaves it readable.
fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("run-{nanos}")
}

/// The whole test: pre-flight, writers, fault, observation, healing, verification. `power`
/// is how the leader loses power in `--mode kill-node`.
pub async fn run(
    inventory: &Inventory,
    opts: &Options,
    power: &dyn PowerLoss,
) -> Result<Report, FailoverError> {
    let cluster = Cluster::load(inventory)?;
    let old_leader = settled(&cluster, opts.max_lag, opts.settle).await?;
    let old_address = cluster.address(&old_leader);
    let pg = workload::config(&cluster);
    workload::prepare_table(&pg)
        .await
        .map_err(|error| FailoverError::Postgres {
            what: "PostgreSQL on the leader",
            error,
        })?;

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
    tokio::time::sleep(WARM_UP).await;

    let fault_at = Instant::now();
    let injected = fault::inject(
        opts.mode,
        inventory,
        &cluster,
        &old_leader,
        opts.partition_heal_after,
        power,
    )
    .await;
    let injected = match injected {
        Ok(i) => i,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e.into());
        }
    };

    let resumed_at = writes_resumed(&acks, fault_at).await;
    let heal_error = injected
        .heal(opts.mode, power)
        .await
        .err()
        .map(|e| e.to_string());
    tokio::time::sleep(AFTER_HEAL).await;
    let _ = stop_tx.send(true);
    for w in writers {
        let _ = w.await;
    }

    let key_holder = verdict::key_holder(&lock(&key_events), fault_at);
    let new_leader = match key_holder {
        Some(holder) => Some(holder),
        None => leader_at_the_end(&cluster, &old_leader).await,
    };
    let new_member = new_leader.as_deref().and_then(|n| cluster.member(n));
    let rejoined = match new_member.filter(|m| m.name != old_leader) {
        Some(new) => rejoined(&cluster, new, &old_address, fault_at).await,
        None => None,
    };
    let stored = stored(&pg, &run).await?;
    let acks = lock(&acks).clone();
    let key_events = lock(&key_events).clone();
    let unhealthy_after = settled(&cluster, opts.max_lag, HEALTHY_AGAIN_TIMEOUT)
        .await
        .err()
        .map(|e| e.to_string());
    let recording = Recording {
        new_leader_address: new_member.map(|m| m.address.clone()),
        old_leader,
        new_leader,
        fault_at,
        resumed_at,
        acks,
        stored,
        key_events,
        rejoined,
        heal_error,
        unhealthy_after,
    };
    Ok(verdict::verdict(&recording, opts))
}

/// The first write a primary acknowledged after the fault (a new one, or the old one after a
/// crash it recovers from), waiting up to [`WRITES_RESUME_TIMEOUT`] for it.
async fn writes_resumed(acks: &Mutex<Vec<Ack>>, fault_at: Instant) -> Option<Instant> {
    let resumed_by = fault_at + WRITES_RESUME_TIMEOUT;
    loop {
        let found = lock(acks)
            .iter()
            // Over a connection made after the fault: the old one may have taken a last write
            // before the fault took hold.
            .filter(|a| a.connected_at > fault_at)
            .map(|a| a.at)
            .min();
        if found.is_some() || Instant::now() > resumed_by {
            return found;
        }
        tokio::time::sleep(ACK_POLL).await;
    }
}

/// The leader as Patroni sees it, asked of the other members first: an old leader back from a
/// partition may still think it leads.
async fn leader_at_the_end(cluster: &Cluster, old_leader: &str) -> Option<String> {
    let deadline = Instant::now() + LEADER_LOOKUP_TIMEOUT;
    loop {
        let l = match cluster.leader(Some(old_leader)).await {
            Some(l) => Some(l),
            None => cluster.leader(None).await,
        };
        if l.is_some() || Instant::now() > deadline {
            return l;
        }
        tokio::time::sleep(CLUSTER_POLL).await;
    }
}

/// Fault to the old leader (at `old_address`) streaming from the new one, if it does within
/// [`REJOIN_TIMEOUT`].
async fn rejoined(
    cluster: &Cluster,
    new: &PgMember,
    old_address: &str,
    fault_at: Instant,
) -> Option<Duration> {
    let deadline = Instant::now() + REJOIN_TIMEOUT;
    let new_pg = workload::single_host(cluster, new);
    while Instant::now() < deadline {
        if let Ok(client) = workload::connect(&new_pg).await {
            if workload::streams_from(&client, old_address).await {
                return Some(fault_at.elapsed());
            }
        }
        tokio::time::sleep(CLUSTER_POLL).await;
    }
    None
}

/// What the primary holds of the run.
async fn stored(pg: &tokio_postgres::Config, run: &str) -> Result<Stored, FailoverError> {
    match workload::connect(pg).await {
        Ok(client) => workload::stored_rows(&client, run)
            .await
            .map(Stored::Rows)
            .map_err(|error| FailoverError::Postgres {
                what: "reading the rows back",
                error,
            }),
        Err(e) => Ok(Stored::Unreadable(e.to_string())),
    }
}

/// The leader, once the cluster passes the pre-flight check (retried for up to `wait`).
async fn settled(cluster: &Cluster, max_lag: u64, wait: Duration) -> Result<String, FailoverError> {
    let deadline = Instant::now() + wait;
    loop {
        match cluster.preflight(max_lag).await {
            Ok(leader) => return Ok(leader),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(SETTLE_POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Code as _;

    fn inventory(dir: &std::path::Path, yaml: &str) -> Inventory {
        let path = dir.join("hosts.yml");
        std::fs::write(&path, yaml).unwrap();
        Inventory::load(&path).unwrap()
    }

    fn opts() -> Options {
        Options {
            mode: Mode::KillNode,
            writers: 1,
            rate: 1.0,
            max_downtime: 45.0,
            max_lost: 0,
            max_lag: 0,
            partition_heal_after: Duration::from_secs(90),
            settle: Duration::from_secs(0),
        }
    }

    #[tokio::test]
    async fn one_postgres_host_is_bad_input_and_nothing_is_tried() {
        let dir = tempfile::tempdir().unwrap();
        let inventory = inventory(
            dir.path(),
            "all:\n  children:\n    postgres_cluster:\n      hosts:\n        pg-a:\n          ansible_host: 192.0.2.1\n",
        );
        let power = SystemdKill {
            inventory: &inventory,
        };
        let err = run(&inventory, &opts(), &power).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the group postgres_cluster needs at least 2 hosts for a failover",
                dir.path().join("hosts.yml").display()
            )
        );
        assert_eq!(err.exit_code(), exit::BAD_INPUT);
    }

    #[test]
    fn an_unhealthy_cluster_fails_and_says_why() {
        let err = FailoverError::Unhealthy(vec![
            "ptrn-2 is on timeline 9, the leader ptrn-1 on 11".into(),
            "etcd has no quorum: 1 of 3 members healthy".into(),
        ]);
        assert_eq!(
            err.to_string(),
            "the cluster is not healthy, nothing was done: ptrn-2 is on timeline 9, the leader ptrn-1 on 11; etcd has no quorum: 1 of 3 members healthy"
        );
        assert_eq!(err.exit_code(), exit::FAILURE);
    }
}
