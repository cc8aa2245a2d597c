//! `hactl failover-test`: fails part of the cluster (the leader, a replica, etcd) while writers
//! run, and reports what users felt — seconds without writes, acknowledged writes lost, split
//! brain, what was hit coming back — against what the mode expects.

mod cluster;
mod expect;
mod fault;
mod html;
mod report;
mod summary;
mod verdict;
mod vip;
mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::exit;
use crate::inventory::Inventory;
use crate::stack::etcd::{self, EtcdError};
use crate::stack::tls::ClientTls;
use crate::stack::{PgMember, StackError};
use cluster::Cluster;
use expect::{Back, LeaderChange};
pub use fault::{FaultError, Mode, PowerLoss, SystemdKill};
#[doc(hidden)]
pub use html::example as example_report;
pub use report::{table, Report};
pub use summary::{run_line, table as summary_table, Repeated};
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
/// What spares the leader lasts this long once writes are seen to go on (or resume): long enough
/// for an outage it causes late to show.
const WRITES_DURING_FAULT: Duration = Duration::from_secs(5);
/// How long etcd may take to elect a new leader, or Patroni to name another synchronous standby,
/// while the fault lasts.
const DURING_FAULT_LOOKUP: Duration = Duration::from_secs(15);
/// How long the cluster may take to pass the pre-flight check before each run after the first
/// of `--repeat`: the last run's member may still be catching up.
const REPEAT_SETTLE: Duration = Duration::from_secs(300);
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
    #[error("the Patroni REST API client: {0}")]
    Http(#[from] crate::stack::patroni::ApiError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::stack::tls::TlsError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("{what}: {error}")]
    Postgres {
        what: &'static str,
        error: tokio_postgres::Error,
    },
    #[error(transparent)]
    Fault(#[from] FaultError),
    /// The cluster has nothing the mode could hit: nothing was done.
    #[error("nothing was done: {0}")]
    NoTarget(String),
    #[error("Patroni's dynamic configuration (GET /config): {0}")]
    Config(String),
    /// `--report FILE` cannot be written, found before the test: nothing was done.
    #[error("--report {}: {error}: nothing was done; its directory must exist and be writable", path.display())]
    ReportPath {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Writing `--report FILE` after the test failed.
    #[error("writing the HTML report {}: {error}", path.display())]
    Report {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl exit::Code for FailoverError {
    fn exit_code(&self) -> u8 {
        match self {
            FailoverError::Stack(_)
            | FailoverError::TooFewMembers { .. }
            | FailoverError::NoTarget(_)
            | FailoverError::ReportPath { .. }
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
    /// `--max-downtime`; None: the mode's default goal.
    pub max_downtime: Option<f64>,
    pub max_lost: u64,
    /// Replication lag a replica may have at the start (bytes).
    pub max_lag: u64,
    /// When the partition heals by itself at the latest, and what another mode stopped is
    /// started again by itself (no earlier than etcd's quorum returns in lose-etcd-quorum).
    pub partition_heal_after: Duration,
    /// How long the cluster may take to be healthy before the test refuses to start.
    pub settle: Duration,
    /// What `--mode command` runs.
    pub command: Option<String>,
    /// `--via`; None: through the endpoint when the inventory declares one (a VIP or a
    /// balancers group), else direct.
    pub via: Option<Path>,
    /// `--report`: where the run's HTML page goes (written even when the test fails).
    pub report: Option<PathBuf>,
}

/// `--via`: the path the writers take to the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Path {
    /// The VIP (or the first balancer) and HAProxy's read-write port, then PgBouncer.
    Endpoint,
    /// Straight to PostgreSQL on the members (multi-host, read-write session).
    Direct,
}

/// The writers' path for `choice` on `cluster`.
fn via(cluster: &Cluster, choice: Option<Path>) -> Result<workload::Via, FailoverError> {
    let endpoint = cluster.stack.endpoint.as_ref();
    let choice = choice.unwrap_or(match endpoint {
        Some(e) if e.declared => Path::Endpoint,
        _ => Path::Direct,
    });
    Ok(match (choice, endpoint) {
        (Path::Direct, _) => workload::Via::Direct,
        (Path::Endpoint, Some(e)) => workload::Via::Endpoint {
            address: e.address.clone(),
            port: e.rw_port,
        },
        (Path::Endpoint, None) => {
            return Err(FailoverError::NoTarget(
                "--via endpoint: the inventory has no balancers".into(),
            ))
        }
    })
}

type KeyEvents = Arc<Mutex<Vec<KeyEvent>>>;

/// A watch of the leader key, from `revision` on when given.
async fn leader_key_watch(
    endpoints: &[String],
    tls: &ClientTls,
    key: &str,
    revision: Option<i64>,
) -> Result<etcd_client::WatchStream, EtcdError> {
    let mut client = etcd::connect(endpoints, ETCD_TIMEOUT, Some(tls)).await?;
    let options = revision.map(|r| etcd_client::WatchOptions::new().with_start_revision(r));
    client.watch(key, options).await.map_err(|e| EtcdError {
        what: "watch",
        why: e.to_string(),
    })
}

/// Records every change of the leader key into `events`, from now until `stop` turns true.
/// A watch that breaks (its etcd member died, etcd lost its quorum) is made again from the
/// revision after the last event seen, so nothing in between is missed.
async fn watch_leader_key(
    cluster: &Cluster,
    old_address: &str,
    events: KeyEvents,
    mut stop: watch::Receiver<bool>,
) -> Result<(), FailoverError> {
    // Not through the old leader's host: it may be the one that fails.
    let endpoints: Vec<String> = cluster
        .stack
        .etcd
        .iter()
        .filter(|m| m.address != old_address)
        .map(|m| m.client_url())
        .collect();
    let key = cluster.stack.leader_key();
    let tls = cluster.tls.clone();
    let mut stream = Some(leader_key_watch(&endpoints, &tls, &key, None).await?);
    tokio::spawn(async move {
        let mut next_revision = None;
        loop {
            if let Some(mut s) = stream.take() {
                loop {
                    let message = tokio::select! {
                        m = s.message() => m,
                        _ = stop.changed() => return,
                    };
                    let Ok(Some(resp)) = message else { break };
                    let now = Instant::now();
                    for event in resp.events() {
                        let holder = match event.event_type() {
                            etcd_client::EventType::Put => event
                                .kv()
                                .and_then(|kv| kv.value_str().ok())
                                .map(str::to_string),
                            etcd_client::EventType::Delete => None,
                        };
                        if let Some(kv) = event.kv() {
                            next_revision = Some(kv.mod_revision() + 1);
                        }
                        lock(&events).push(KeyEvent { at: now, holder });
                    }
                }
            }
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(CLUSTER_POLL) => {}
                _ = stop.changed() => return,
            }
            stream = leader_key_watch(&endpoints, &tls, &key, next_revision)
                .await
                .ok();
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

/// `--repeat N`: [`run`] `runs` times, each after the cluster is healthy again (up to
/// [`REPEAT_SETTLE`]); `each` hears of every report as it comes. A run that gives no report
/// stops the repeat: its error comes back beside the reports.
pub async fn repeat(
    inventory: &Inventory,
    opts: &Options,
    power: &dyn PowerLoss,
    runs: usize,
    mut each: impl FnMut(usize, &Report),
) -> (Repeated, Option<FailoverError>) {
    let mut reports = Vec::new();
    for i in 1..=runs {
        let settle = if i == 1 {
            opts.settle
        } else {
            opts.settle.max(REPEAT_SETTLE)
        };
        let opts = Options {
            settle,
            report: opts.report.as_deref().map(|p| numbered(p, i)),
            ..opts.clone()
        };
        match run(inventory, &opts, power).await {
            Ok(report) => {
                each(i, &report);
                reports.push(report);
            }
            Err(e) => {
                let why = format!("run {i} of {runs}: {e}");
                return (Repeated::of(reports, Some(why)), Some(e));
            }
        }
    }
    (Repeated::of(reports, None), None)
}

/// `path` with the run number `i` before its extension: `report.html` → `report-2.html`.
fn numbered(path: &std::path::Path, i: usize) -> PathBuf {
    let mut name = path.file_stem().unwrap_or_default().to_os_string();
    name.push(format!("-{i}"));
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

/// Fails unless `path` can be written, and leaves it as it was: a `--report` in a directory that
/// does not exist should not cost a failover.
fn writable(path: &std::path::Path) -> Result<(), FailoverError> {
    let existed = path.exists();
    let opened = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path);
    match opened {
        Ok(_) if !existed => std::fs::remove_file(path),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|error| FailoverError::ReportPath {
        path: path.to_path_buf(),
        error,
    })
}

/// The whole test: pre-flight, writers, fault, observation, healing, verification. `power`
/// is how a member loses power in `--mode kill-node` and `kill-replica`. With `--report`, the
/// HTML page is written once there is a report, passed or not.
pub async fn run(
    inventory: &Inventory,
    opts: &Options,
    power: &dyn PowerLoss,
) -> Result<Report, FailoverError> {
    let mode = opts.mode;
    match (mode, &opts.command) {
        (Mode::Command, None) => {
            return Err(FailoverError::NoTarget(
                "--mode command needs --command 'CMD': what to run while the writers write".into(),
            ))
        }
        (Mode::Command, Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            return Err(FailoverError::NoTarget(format!(
                "--command is for --mode command, not {mode}"
            )))
        }
    }
    if let Some(path) = &opts.report {
        writable(path)?;
    }
    let cluster = Cluster::load(inventory)?;
    let (old_leader, topology) = settled(&cluster, opts.max_lag, opts.settle).await?;
    let config = cluster.dynamic_config(&old_leader).await?;
    let path = via(&cluster, opts.via)?;
    let mut expected = expect::expectation(mode, &config, opts.rate, opts.max_downtime);
    if let workload::Via::Endpoint { .. } = path {
        expected = expect::through_endpoint(expected, mode);
    }
    let etcd_leader_before = match mode {
        Mode::KillEtcdLeader => cluster.etcd_leader(None).await,
        _ => None,
    };
    let vip = vip::Vip::connect(inventory, cluster.stack.endpoint.as_ref())
        .await?
        .map(Arc::new);
    let balancer = match (mode, &vip) {
        (Mode::KillBalancer, Some(v)) => Some(balancer_to_kill(v, &topology, &old_leader).await?),
        (Mode::KillBalancer, None) => {
            return Err(FailoverError::NoTarget(format!(
                "{mode} needs a VIP: set cluster_vip in {}",
                inventory.path.display()
            )))
        }
        _ => None,
    };
    let hit = fault::targets(
        mode,
        &topology,
        &old_leader,
        &cluster.stack.etcd,
        etcd_leader_before.as_deref(),
        balancer.as_deref(),
    )
    .map_err(FailoverError::NoTarget)?;
    // A balancer that is no PostgreSQL member has no member to stream again.
    if mode == Mode::KillBalancer && hit.iter().all(|h| cluster.member(h).is_none()) {
        expected.back = Back::Nothing;
    }
    let hold = expect::quorum_hold(&config);
    // What a mode stops comes back by itself only after the fault is meant to end.
    let heal_after = match mode {
        Mode::LoseEtcdQuorum => opts.partition_heal_after.max(hold * 2),
        _ => opts.partition_heal_after,
    };
    let old_address = cluster.address(&old_leader);
    let pg = workload::config(&cluster);
    let writers_pg = workload::writers(&cluster, &path);
    workload::prepare_table(&pg, &cluster.writer.user)
        .await
        .map_err(|error| FailoverError::Postgres {
            what: "PostgreSQL on the leader",
            error,
        })?;

    let key_events: KeyEvents = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    watch_leader_key(&cluster, &old_address, key_events.clone(), stop_rx.clone()).await?;
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let vip_samples = vip.clone().map(|v| v.sample(stop_rx.clone()));
    let run = run_id();
    let writers: Vec<_> = (0..opts.writers.max(1))
        .map(|i| {
            tokio::spawn(workload::writer(
                writers_pg.clone(),
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
        mode,
        inventory,
        &cluster,
        &hit,
        heal_after,
        power,
        opts.command.as_deref(),
    )
    .await;
    let injected = match injected {
        Ok(i) => i,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e.into());
        }
    };
    // Writes that count as resumed: over a new connection when the leader may change (the old
    // one may take a last write before the fault takes hold); else sent once the fault held.
    // A command has run to its end: any write since counts (the longest gap is the downtime).
    let resumed_since = match expected.leader {
        _ if mode == Mode::Command => Since::SentAfter(Instant::now()),
        LeaderChange::Expected | LeaderChange::Either => Since::NewConnection(fault_at),
        LeaderChange::Unchanged => Since::SentAfter(Instant::now()),
    };

    let mut resumed_at = None;
    if mode == Mode::LoseEtcdQuorum {
        tokio::time::sleep(hold).await;
    } else {
        resumed_at = writes_resumed(&acks, resumed_since).await;
        if expected.leader == LeaderChange::Unchanged && resumed_at.is_some() {
            tokio::time::sleep(WRITES_DURING_FAULT).await;
        }
    }
    let sync_standby_during = match mode {
        Mode::KillSyncStandby => another_sync_standby(&cluster, &hit).await,
        _ => None,
    };
    let etcd_leader_after = match mode {
        Mode::KillEtcdLeader => another_etcd_leader(&cluster, &hit).await,
        _ => None,
    };
    let heal_error = injected
        .heal(mode, power)
        .await
        .err()
        .map(|e| e.to_string());
    if mode == Mode::LoseEtcdQuorum {
        resumed_at = writes_resumed(&acks, resumed_since).await;
    }
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
    let first_hit = hit.first().map(String::as_str).unwrap_or_default();
    let back = match (expected.back, new_member) {
        (Back::OldLeaderRejoins, Some(new)) if new.name != old_leader => {
            rejoined(&cluster, new, &old_address, fault_at).await
        }
        (Back::Streams, Some(leader)) => {
            rejoined(&cluster, leader, &cluster.address(first_hit), fault_at).await
        }
        (Back::EtcdHealthy, _) => etcd_back(&cluster, &hit, fault_at).await,
        _ => None,
    };
    let stored = stored(&pg, &run).await?;
    let acks = lock(&acks).clone();
    let key_events = lock(&key_events).clone();
    let unhealthy_after = settled(&cluster, opts.max_lag, HEALTHY_AGAIN_TIMEOUT)
        .await
        .err()
        .map(|e| e.to_string());
    let recording = Recording {
        mode,
        path: path.to_string(),
        expected,
        hit,
        new_leader_address: new_member.map(|m| m.address.clone()),
        old_leader,
        new_leader,
        fault_at,
        resumed_at,
        acks,
        stored,
        key_events,
        back,
        sync_standby_during,
        etcd_leader_before,
        etcd_leader_after,
        heal_error,
        unhealthy_after,
    };
    let mut report = verdict::verdict(&recording, opts.max_lost);
    if let (Some(v), Some(samples)) = (&vip, vip_samples) {
        let judged = vip::judge(
            &v.address,
            &lock(&samples),
            &recording.key_events,
            &recording.old_leader,
            v.follows_leader,
            config.loop_wait as f64,
        );
        report.problems.extend(judged.problems.iter().cloned());
        report.passed = report.problems.is_empty();
        report.vip = Some(judged);
    }
    if let Some(path) = &opts.report {
        std::fs::write(path, html::html(&recording, &report)).map_err(|error| {
            FailoverError::Report {
                path: path.clone(),
                error,
            }
        })?;
    }
    Ok(report)
}

/// The balancer `kill-balancer` powers off: the VIP's holder, once moved to a balancer that is
/// neither the leader's host nor the synchronous standby's (losing those is kill-node's and
/// kill-sync-standby's fault, not the balancer's).
async fn balancer_to_kill(
    vip: &vip::Vip,
    topology: &crate::stack::patroni::Cluster,
    leader: &str,
) -> Result<String, FailoverError> {
    if vip.follows_leader {
        return Err(FailoverError::NoTarget(
            "kill-balancer: the VIP follows the leader (cluster_vip_follows_leader), so its balancer is the leader's host: kill-node measures its loss".into(),
        ));
    }
    let sync = topology.sync_standby().map(|m| m.name.clone());
    let spare = |b: &String| b != leader && Some(b) != sync.as_ref();
    let holders = vip.holders().await;
    if let [holder] = holders.as_slice() {
        if spare(holder) {
            return Ok(holder.clone());
        }
    }
    let Some(want) = vip.balancers().into_iter().find(|b| spare(b)) else {
        return Err(FailoverError::NoTarget(format!(
            "kill-balancer needs a balancer that is neither the leader's host ({leader}) nor the synchronous standby's: add a balancer or a member"
        )));
    };
    vip.move_to(&want).await?;
    Ok(want)
}

/// Which acknowledgements show that writes resumed after the fault.
#[derive(Debug, Clone, Copy)]
enum Since {
    /// Over a connection made after this.
    NewConnection(Instant),
    /// Sent after this.
    SentAfter(Instant),
}

/// The first write acknowledged after the fault (by a new primary, or the old one after a
/// crash it recovers from, or the leader that stayed), waiting up to [`WRITES_RESUME_TIMEOUT`].
async fn writes_resumed(acks: &Mutex<Vec<Ack>>, since: Since) -> Option<Instant> {
    let (Since::NewConnection(from) | Since::SentAfter(from)) = since;
    let resumed_by = from + WRITES_RESUME_TIMEOUT;
    loop {
        let found = lock(acks)
            .iter()
            .filter(|a| match since {
                Since::NewConnection(t) => a.connected_at > t,
                Since::SentAfter(t) => a.sent_at > t,
            })
            .map(|a| a.at)
            .min();
        if found.is_some() || Instant::now() > resumed_by {
            return found;
        }
        tokio::time::sleep(ACK_POLL).await;
    }
}

/// The synchronous standby Patroni names instead of the killed one (`hit`), if it does within
/// [`DURING_FAULT_LOOKUP`].
async fn another_sync_standby(cluster: &Cluster, hit: &[String]) -> Option<String> {
    let deadline = Instant::now() + DURING_FAULT_LOOKUP;
    loop {
        let named = cluster.topology(hit.first().map(String::as_str)).await;
        let other = named
            .as_ref()
            .and_then(|t| t.sync_standby())
            .map(|m| m.name.clone())
            .filter(|n| !hit.contains(n));
        if other.is_some() || Instant::now() > deadline {
            return other;
        }
        tokio::time::sleep(CLUSTER_POLL).await;
    }
}

/// etcd's leader once another member than the killed one (`hit`) leads, if one does within
/// [`DURING_FAULT_LOOKUP`]; else whichever the others last named.
async fn another_etcd_leader(cluster: &Cluster, hit: &[String]) -> Option<String> {
    let deadline = Instant::now() + DURING_FAULT_LOOKUP;
    loop {
        let leader = cluster.etcd_leader(hit.first().map(String::as_str)).await;
        let elected = leader.as_ref().is_some_and(|l| !hit.contains(l));
        if elected || Instant::now() > deadline {
            return leader;
        }
        tokio::time::sleep(CLUSTER_POLL).await;
    }
}

/// Fault to etcd on every one of `hosts` answering with a leader, if within [`REJOIN_TIMEOUT`].
async fn etcd_back(cluster: &Cluster, hosts: &[String], fault_at: Instant) -> Option<Duration> {
    let deadline = Instant::now() + REJOIN_TIMEOUT;
    while Instant::now() < deadline {
        if cluster.etcd_healthy(hosts).await {
            return Some(fault_at.elapsed());
        }
        tokio::time::sleep(CLUSTER_POLL).await;
    }
    None
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

/// Fault to the member at `address` (the old leader, a replica) streaming from the leader
/// `new`, if it does within [`REJOIN_TIMEOUT`].
async fn rejoined(
    cluster: &Cluster,
    new: &PgMember,
    address: &str,
    fault_at: Instant,
) -> Option<Duration> {
    let deadline = Instant::now() + REJOIN_TIMEOUT;
    let new_pg = workload::single_host(cluster, new);
    while Instant::now() < deadline {
        if let Ok(client) = workload::connect(&new_pg).await {
            if workload::streams_from(&client, address).await {
                return Some(fault_at.elapsed());
            }
        }
        tokio::time::sleep(CLUSTER_POLL).await;
    }
    None
}

/// What the primary holds of the run.
async fn stored(pg: &workload::Pg, run: &str) -> Result<Stored, FailoverError> {
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

/// The leader and the members, once the cluster passes the pre-flight check (retried for up to
/// `wait`).
async fn settled(
    cluster: &Cluster,
    max_lag: u64,
    wait: Duration,
) -> Result<(String, crate::stack::patroni::Cluster), FailoverError> {
    let deadline = Instant::now() + wait;
    loop {
        match cluster.preflight(max_lag).await {
            Ok(settled) => return Ok(settled),
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
            max_downtime: None,
            max_lost: 0,
            max_lag: 0,
            partition_heal_after: Duration::from_secs(90),
            settle: Duration::from_secs(0),
            command: None,
            via: None,
            report: None,
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

    #[tokio::test]
    async fn command_mode_without_a_command_or_a_command_elsewhere_is_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let inventory = inventory(
            dir.path(),
            "all:\n  children:\n    postgres_cluster:\n      hosts:\n        pg-a:\n        pg-b:\n",
        );
        let power = SystemdKill {
            inventory: &inventory,
        };
        let missing = Options {
            mode: Mode::Command,
            ..opts()
        };
        let err = run(&inventory, &missing, &power).await.unwrap_err();
        assert!(err.to_string().contains("needs --command"), "{err}");
        assert_eq!(err.exit_code(), exit::BAD_INPUT);
        let elsewhere = Options {
            command: Some("true".into()),
            ..opts()
        };
        let err = run(&inventory, &elsewhere, &power).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "nothing was done: --command is for --mode command, not kill-node"
        );
        assert_eq!(err.exit_code(), exit::BAD_INPUT);
    }

    #[test]
    fn each_repeated_run_has_its_page_numbered_before_the_extension() {
        let p = std::path::Path::new;
        assert_eq!(numbered(p("out/report.html"), 2), p("out/report-2.html"));
        assert_eq!(numbered(p("report"), 10), p("report-10"));
        assert_eq!(numbered(p("a.b.html"), 1), p("a.b-1.html"));
    }

    #[tokio::test]
    async fn a_report_in_a_missing_directory_is_bad_input_before_anything_is_tried() {
        let dir = tempfile::tempdir().unwrap();
        let inventory = inventory(
            dir.path(),
            "all:\n  children:\n    postgres_cluster:\n      hosts:\n        pg-a:\n        pg-b:\n",
        );
        let power = SystemdKill {
            inventory: &inventory,
        };
        let path = dir.path().join("missing/report.html");
        let opts = Options {
            report: Some(path.clone()),
            ..opts()
        };
        let err = run(&inventory, &opts, &power).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("--report {}: ", path.display())),
            "{message}"
        );
        assert_eq!(err.exit_code(), exit::BAD_INPUT);
    }

    #[test]
    fn checking_the_report_path_leaves_no_file_and_keeps_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.html");
        writable(&new).unwrap();
        assert!(!new.exists());
        let old = dir.path().join("old.html");
        std::fs::write(&old, "last week's").unwrap();
        writable(&old).unwrap();
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "last week's");
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
