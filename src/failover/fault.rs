//! The faults, and how each one is undone so the cluster is left healthy. A power loss depends
//! on where the members run, so it comes from the caller as a [`PowerLoss`].

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;

use super::cluster::Cluster;
use crate::inventory::{Inventory, InventoryError};
use crate::ssh::{self, HostKeyPolicy, Session, SshError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Planned: Patroni's POST /switchover.
    Switchover,
    /// Graceful stop of Patroni on the leader.
    Stop,
    /// SIGKILL to the leader's postmaster.
    KillPostgres,
    /// Power loss of the leader (the lab: `lab kill`; elsewhere: SIGKILL to Patroni and
    /// PostgreSQL through systemd).
    KillNode,
    /// The leader cut off from etcd and its peers by nft rules that a timer on that host
    /// removes by itself.
    Partition,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Mode::Switchover => "switchover",
            Mode::Stop => "stop",
            Mode::KillPostgres => "kill-postgres",
            Mode::KillNode => "kill-node",
            Mode::Partition => "partition",
        };
        f.write_str(name)
    }
}

/// A fault that could not be injected or undone.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The inventory does not say how to reach the host.
    #[error("{0}")]
    Target(InventoryError),
    #[error("{0}")]
    Ssh(SshError),
    #[error("{what}: {stderr}")]
    Command { what: String, stderr: String },
    #[error("no member {0}")]
    NoMember(String),
    #[error("POST /switchover: {0}")]
    Switchover(String),
    /// Powering a host off or on again failed.
    #[error("{what}: {error}")]
    Power {
        what: String,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A member's power loss and its return: the fault that depends on where the members run.
/// `hactl failover-test` passes the lab's for a lab inventory and [`SystemdKill`] elsewhere.
pub trait PowerLoss: Send + Sync {
    /// `host` stops at once, as if its power were cut.
    fn power_off<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<(), FaultError>>;
    /// `host` runs again, after [`PowerLoss::power_off`].
    fn power_on<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<(), FaultError>>;
}

/// Power loss on hosts hactl cannot switch off: SIGKILL to Patroni and PostgreSQL through
/// systemd, which restarts them by itself.
pub struct SystemdKill<'a> {
    pub inventory: &'a Inventory,
}

impl PowerLoss for SystemdKill<'_> {
    fn power_off<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<(), FaultError>> {
        Box::pin(async move {
            let s = session(self.inventory, host).await?;
            run(
                &s,
                "SIGKILL to Patroni and PostgreSQL",
                "systemctl kill -s KILL --kill-whom=all patroni",
            )
            .await
        })
    }

    fn power_on<'a>(&'a self, _host: &'a str) -> BoxFuture<'a, Result<(), FaultError>> {
        Box::pin(async { Ok(()) })
    }
}

/// What undoing the fault needs.
pub struct Injected {
    session: Option<Session>,
    host: String,
}

const HEAL_UNIT: &str = "hactl-partition-heal";
/// The shortest time after which a partition heals by itself: the fault must last long enough
/// to be a fault.
const MIN_PARTITION: Duration = Duration::from_secs(10);
/// Patroni answers a switchover only once the new leader runs (or it gave up).
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(30);

async fn session(inventory: &Inventory, host: &str) -> Result<Session, FaultError> {
    let target = ssh::target(inventory, host).map_err(FaultError::Target)?;
    Session::connect(&target, HostKeyPolicy::Strict)
        .await
        .map_err(FaultError::Ssh)
}

async fn run(session: &Session, what: &str, script: &str) -> Result<(), FaultError> {
    let out = session.exec(script, b"").await.map_err(FaultError::Ssh)?;
    if !out.success() {
        return Err(FaultError::Command {
            what: what.to_string(),
            stderr: out.stderr_text().trim().to_string(),
        });
    }
    Ok(())
}

/// Planned switchover from `leader` (Patroni picks the synchronous standby).
async fn switchover(cluster: &Cluster, leader: &str) -> Result<(), FaultError> {
    let member = cluster
        .member(leader)
        .ok_or_else(|| FaultError::NoMember(leader.to_string()))?;
    let credentials = &cluster.patroni_api;
    let resp = cluster
        .patroni
        .http()
        .post(format!("{}/switchover", member.api_url()))
        .basic_auth(&credentials.user, Some(&credentials.password))
        .json(&json!({"leader": leader}))
        .timeout(SWITCHOVER_TIMEOUT)
        .send()
        .await
        .map_err(|e| FaultError::Switchover(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(FaultError::Switchover(format!("{status} {body}")));
    }
    Ok(())
}

/// Fails `leader` as `mode` says.
pub async fn inject(
    mode: Mode,
    inventory: &Inventory,
    cluster: &Cluster,
    leader: &str,
    heal_after: Duration,
    power: &dyn PowerLoss,
) -> Result<Injected, FaultError> {
    let mut injected = Injected {
        session: None,
        host: leader.to_string(),
    };
    match mode {
        Mode::Switchover => switchover(cluster, leader).await?,
        Mode::Stop => {
            let s = session(inventory, leader).await?;
            run(&s, "systemctl stop patroni", "systemctl stop patroni").await?;
            injected.session = Some(s);
        }
        Mode::KillPostgres => {
            let s = session(inventory, leader).await?;
            run(
                &s,
                "SIGKILL to the postmaster",
                "kill -KILL $(pgrep -o -u postgres -x postgres)",
            )
            .await?;
            injected.session = Some(s);
        }
        Mode::KillNode => power.power_off(leader).await?,
        Mode::Partition => {
            let s = session(inventory, leader).await?;
            let me = cluster.address(leader);
            let mut peers: Vec<String> = cluster
                .stack
                .postgres
                .iter()
                .map(|m| m.address.clone())
                .chain(cluster.stack.etcd.iter().map(|m| m.address.clone()))
                .filter(|a| *a != me)
                .collect();
            peers.sort();
            peers.dedup();
            let set = peers.join(", ");
            // The timer goes first: whatever happens to hactl, the partition ends by itself.
            let script = format!(
                "systemctl stop {HEAL_UNIT}.timer >/dev/null 2>&1; systemctl reset-failed {HEAL_UNIT}.service >/dev/null 2>&1; \
                 systemd-run --quiet --unit={HEAL_UNIT} --on-active={secs}s nft delete table inet hactl_partition && \
                 nft -f - <<'EOF'\n\
                 table inet hactl_partition {{\n\
                   chain input {{ type filter hook input priority -10; policy accept; ip saddr {{ {set} }} drop; }}\n\
                   chain output {{ type filter hook output priority -10; policy accept; ip daddr {{ {set} }} drop; }}\n\
                 }}\n\
                 EOF",
                secs = heal_after.max(MIN_PARTITION).as_secs()
            );
            run(&s, "nft partition", &script).await?;
            injected.session = Some(s);
        }
    }
    Ok(injected)
}

impl Injected {
    /// Undoes the fault: starts what was stopped, powers on what lost power, heals the partition.
    pub async fn heal(self, mode: Mode, power: &dyn PowerLoss) -> Result<(), FaultError> {
        match (mode, &self.session) {
            (Mode::Stop, Some(s)) => {
                run(s, "systemctl start patroni", "systemctl start patroni").await
            }
            (Mode::KillNode, _) => power.power_on(&self.host).await,
            (Mode::Partition, Some(s)) => {
                run(
                    s,
                    "healing the partition",
                    &format!("nft delete table inet hactl_partition 2>/dev/null; systemctl stop {HEAL_UNIT}.timer >/dev/null 2>&1; true"),
                )
                .await
            }
            _ => Ok(()),
        }
    }
}
