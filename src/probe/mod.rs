//! `hactl probe`: scheduled probes of an HA PostgreSQL stack (HTTP, TCP, PostgreSQL, etcd,
//! Patroni topology, write availability, the client endpoint, external commands), exposed as
//! Prometheus metrics.
//!
//! Scheduling follows cloudprober: one timer per probe and target, first runs staggered across
//! the interval, a timeout per run, missed ticks skipped, group targets resolved again now and
//! then, and a bound on the runs in flight. What a run does, and which options and series it
//! has, is its kind's (`kinds/`, one file each).

mod board;
mod config;
mod kinds;
mod metrics;
mod server;
mod web;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use config::{Config, Probe, Targets};
use kinds::{Env, Failure, Kit};
use metrics::Metrics;

use crate::inventory::Inventory;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A configuration error: nothing is probed.
    #[error("{file}:{line}: {message}")]
    Config {
        file: String,
        line: usize,
        message: String,
    },
    /// The configuration file cannot be read.
    #[error("{}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
    #[error("--web-config {0}")]
    Web(#[from] web::WebConfigError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The signal handlers could not be set up: the system's failure, not bad input.
    #[error("handling signals: {0}")]
    Signal(std::io::Error),
}

impl crate::exit::Code for ProbeError {
    fn exit_code(&self) -> u8 {
        match self {
            ProbeError::Config { .. } | ProbeError::Read { .. } | ProbeError::Inventory(_) => {
                crate::exit::BAD_INPUT
            }
            _ => crate::exit::FAILURE,
        }
    }
}

pub struct Options {
    pub config: PathBuf,
    pub inventory: Option<PathBuf>,
    pub listen: SocketAddr,
    /// TLS and basic auth for /metrics and /healthz (the exporters' web configuration).
    pub web_config: Option<PathBuf>,
}

/// One probe with everything its runs need, and the targets it has now.
struct Planned {
    probe: Arc<Probe>,
    kit: Arc<Kit>,
    targets: Vec<String>,
}

/// Loads the configuration and resolves every probe's targets; any error names file:line.
fn plan(opts: &Options) -> Result<(Config, Vec<Planned>), ProbeError> {
    let config = Config::load(&opts.config)?;
    let inventory = match &opts.inventory {
        Some(p) => Some(Inventory::load(p)?),
        None => None,
    };
    let env = Env {
        inventory: inventory.as_ref(),
    };
    let mut out = Vec::new();
    for probe in &config.probes {
        let targets = resolve(&config, probe, inventory.as_ref())?;
        let kit = Kit::new(probe, &env).map_err(|e| bad(&config, probe, probe.line, e))?;
        out.push(Planned {
            probe: Arc::new(probe.clone()),
            kit: Arc::new(kit),
            targets,
        });
    }
    Ok((config, out))
}

fn bad(config: &Config, probe: &Probe, line: usize, message: impl std::fmt::Display) -> ProbeError {
    ProbeError::Config {
        file: config.file.display().to_string(),
        line,
        message: format!("probe {}: {message}", probe.name),
    }
}

/// The targets of a probe now: a group's hosts come from the inventory.
fn resolve(
    config: &Config,
    probe: &Probe,
    inventory: Option<&Inventory>,
) -> Result<Vec<String>, ProbeError> {
    let bad = |message: String| bad(config, probe, probe.targets_line, message);
    let mut targets = match &probe.targets {
        Targets::Static(list) => list.clone(),
        Targets::Group(g) => {
            let Some(inv) = inventory else {
                return Err(bad(format!(
                    "targets: the group {:?} needs an inventory (-i INVENTORY)",
                    g.group
                )));
            };
            if !inv.groups.contains_key(&g.group) {
                return Err(bad(format!(
                    "targets: no group {:?} in {}",
                    g.group,
                    inv.path.display()
                )));
            }
            let hosts: Vec<String> = inv
                .hosts_in(&g.group)
                .iter()
                .map(|h| {
                    let addr = inv
                        .host_vars(h)
                        .get("ansible_host")
                        .and_then(|v| v.value.as_str().map(str::to_string))
                        .unwrap_or_else(|| h.clone());
                    probe.spec.group_target(format!("{addr}:{}", g.port))
                })
                .collect();
            if hosts.is_empty() {
                return Err(bad(format!(
                    "targets: the group {:?} has no hosts",
                    g.group
                )));
            }
            hosts
        }
    };
    if probe.spec.one_target() && targets.len() > 1 {
        targets = vec![targets.join(",")];
    }
    Ok(targets)
}

/// Checks the configuration and resolves its targets: (probes, targets).
pub fn check(opts: &Options) -> Result<(usize, usize), ProbeError> {
    let (_, planned) = plan(opts)?;
    Ok((planned.len(), planned.iter().map(|p| p.targets.len()).sum()))
}

/// A target to probe: the probe, its kit, and the target's place among the probe's targets.
type Wanted = (Arc<Probe>, Arc<Kit>, usize, usize);

/// The timers that run: one task per (probe, target).
struct Scheduler {
    metrics: Arc<Metrics>,
    limit: Arc<Semaphore>,
    /// By (probe, target): the probe's kind and the task.
    tasks: HashMap<(String, String), (&'static str, JoinHandle<()>)>,
    /// The probes configured now and their kinds, to forget the series of one that goes.
    probes: HashMap<String, &'static str>,
}

impl Scheduler {
    fn new(metrics: Arc<Metrics>, concurrency: usize) -> Scheduler {
        Scheduler {
            metrics,
            limit: Arc::new(Semaphore::new(concurrency)),
            tasks: HashMap::new(),
            probes: HashMap::new(),
        }
    }

    /// Starts what is new, stops what is gone; `restart` also restarts what stays (a reload).
    async fn apply(&mut self, plan: &[Planned], restart: bool) {
        let mut wanted: HashMap<(String, String), Wanted> = HashMap::new();
        for p in plan {
            let n = p.targets.len();
            for (i, t) in p.targets.iter().enumerate() {
                wanted.insert(
                    (p.probe.name.clone(), t.clone()),
                    (p.probe.clone(), p.kit.clone(), i, n),
                );
            }
        }
        let mut stopped = Vec::new();
        let keys: Vec<(String, String)> = self.tasks.keys().cloned().collect();
        for key in keys {
            let (forget, stop) = match (wanted.get(&key), self.tasks.get(&key)) {
                (None, _) => (true, true),
                (Some((_, kit, ..)), Some((kind, _))) if *kind != kit.name() => (true, true),
                _ => (false, restart),
            };
            if stop {
                if let Some((kind, handle)) = self.tasks.remove(&key) {
                    handle.abort();
                    stopped.push((key, kind, handle, forget));
                }
            }
        }
        // Series are removed only once their task has stopped, so that none comes back.
        for (key, kind, handle, forget) in stopped {
            let _ = handle.await;
            if forget {
                self.metrics.forget_target(&key.0, &key.1, kind);
            }
        }
        let live: HashMap<String, &'static str> = plan
            .iter()
            .map(|p| (p.probe.name.clone(), p.kit.name()))
            .collect();
        // A probe that is gone, or now of another kind: its per-probe series of that kind go.
        for (name, kind) in std::mem::replace(&mut self.probes, live) {
            if self.probes.get(&name) != Some(&kind) {
                self.metrics.forget_probe(&name, kind);
            }
        }
        for (key, (probe, kit, i, n)) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let kind = kit.name();
            let handle = tokio::spawn(timer(
                probe,
                kit,
                key.1.clone(),
                self.metrics.clone(),
                self.limit.clone(),
                i,
                n,
            ));
            self.tasks.insert(key, (kind, handle));
        }
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }
}

/// One target of one probe, forever: staggered start, one run per tick, missed ticks skipped.
async fn timer(
    probe: Arc<Probe>,
    kit: Arc<Kit>,
    target: String,
    metrics: Arc<Metrics>,
    limit: Arc<Semaphore>,
    index: usize,
    count: usize,
) {
    let stagger = probe.interval.mul_f64(index as f64 / count.max(1) as f64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + stagger, probe.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let kind = kit.name();
    let labels = [probe.name.as_str(), target.as_str(), kind];
    let mut last_ok: Option<bool> = None;
    loop {
        tick.tick().await;
        let Ok(_permit) = limit.acquire().await else {
            return;
        };
        let start = Instant::now();
        let result =
            match tokio::time::timeout(probe.timeout, kit.run(&probe, &target, &metrics)).await {
                Ok(r) => r,
                Err(_) => {
                    kit.timed_out(&probe, &target, &metrics).await;
                    metrics.timeouts.with_label_values(&labels).inc();
                    Err(Failure(format!(
                        "timed out after {} s",
                        probe.timeout.as_secs_f64()
                    )))
                }
            };
        let took = start.elapsed();
        metrics.total.with_label_values(&labels).inc();
        metrics
            .duration
            .with_label_values(&[probe.name.as_str(), kind])
            .observe(took.as_secs_f64());
        metrics
            .probe_duration
            .with_label_values(&labels)
            .set(took.as_secs_f64());
        let ok = result.is_ok();
        metrics
            .probe_success
            .with_label_values(&labels)
            .set(i64::from(ok));
        metrics.board.run(&probe.name, kind, &target, ok, took);
        if ok {
            metrics.success.with_label_values(&labels).inc();
            metrics
                .latency
                .with_label_values(&labels)
                .inc_by(took.as_micros() as u64);
        }
        // Logs tell of changes, not of every run.
        match (&result, last_ok) {
            (Err(e), Some(true) | None) => {
                tracing::warn!(probe = %probe.name, dst = %target, ptype = kind, error = %e, "probe failing")
            }
            (Ok(()), Some(false)) => {
                tracing::info!(probe = %probe.name, dst = %target, ptype = kind, "probe succeeding again")
            }
            _ => {}
        }
        last_ok = Some(ok);
    }
}

/// Whether the prober runs a configuration: `/healthz` answers 200 only then.
#[derive(Default)]
pub(crate) struct Health {
    pub probes: std::sync::atomic::AtomicUsize,
}

/// Runs until SIGTERM or SIGINT. A configuration error at start is returned (file:line); on
/// SIGHUP a bad configuration keeps the running one and is logged.
pub async fn run(opts: Options) -> Result<(), ProbeError> {
    let (config, planned) = plan(&opts)?;
    use tokio::signal::unix::{signal, SignalKind};
    let sig = |k| signal(k).map_err(ProbeError::Signal);
    let mut hup = sig(SignalKind::hangup())?;
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ProbeError::Listen {
            addr: opts.listen,
            source,
        })?;
    let web = match &opts.web_config {
        Some(path) => web::Web::load(path)?,
        None => web::Web::open(),
    };
    tokio::spawn(server::serve(
        listener,
        metrics.clone(),
        health.clone(),
        Arc::new(web),
    ));
    let mut sched = Scheduler::new(metrics.clone(), config.concurrency);
    sched.apply(&planned, false).await;
    health
        .probes
        .store(sched.len(), std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        config = %opts.config.display(),
        listen = %opts.listen,
        probes = planned.len(),
        targets = sched.len(),
        "probing"
    );
    let (mut config, mut planned) = (config, planned);

    let mut resolve_tick = tokio::time::interval(config.resolve_every);
    resolve_tick.tick().await;
    loop {
        tokio::select! {
            _ = hup.recv() => match plan(&opts) {
                Ok((c, p)) => {
                    if c.concurrency != config.concurrency {
                        sched.limit = Arc::new(Semaphore::new(c.concurrency));
                    }
                    sched.apply(&p, true).await;
                    tracing::info!(probes = p.len(), targets = sched.len(), "configuration reloaded");
                    if c.resolve_every != config.resolve_every {
                        resolve_tick = tokio::time::interval(c.resolve_every);
                        resolve_tick.tick().await;
                    }
                    (config, planned) = (c, p);
                }
                Err(e) => tracing::error!(error = %e, "configuration not reloaded: keeping the running one"),
            },
            _ = resolve_tick.tick() => {
                // Group targets again, from the inventory as it is now.
                let inventory = opts.inventory.as_ref().map(|p| Inventory::load(p));
                match inventory.transpose() {
                    Ok(inv) => {
                        let mut changed = false;
                        for p in planned.iter_mut() {
                            if matches!(p.probe.targets, Targets::Group(_)) {
                                match resolve(&config, &p.probe, inv.as_ref()) {
                                    Ok(t) if t != p.targets => { p.targets = t; changed = true; }
                                    Ok(_) => {}
                                    Err(e) => tracing::error!(error = %e, "targets not resolved: keeping the last ones"),
                                }
                            }
                        }
                        if changed {
                            sched.apply(&planned, false).await;
                            tracing::info!(targets = sched.len(), "targets changed");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "inventory not read: keeping the last targets"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        health
            .probes
            .store(sched.len(), std::sync::atomic::Ordering::Relaxed);
    }
    tracing::info!("stopping");
    Ok(())
}
