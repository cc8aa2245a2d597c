//! The faults, and how each one is undone so the cluster is left healthy.

use std::time::Duration;

use super::cluster::Cluster;
use super::FailoverError;
use crate::inventory::Inventory;
use crate::ssh::{self, HostKeyPolicy, Session};

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

/// What undoing the fault needs.
pub struct Injected {
    session: Option<Session>,
    lab: Option<crate::lab::LabConfig>,
    host: String,
}

const HEAL_UNIT: &str = "hactl-partition-heal";

async fn session(inventory: &Inventory, host: &str) -> Result<Session, FailoverError> {
    let target = ssh::target(inventory, host).map_err(|e| FailoverError::Input(e.to_string()))?;
    Session::connect(&target, HostKeyPolicy::Strict)
        .await
        .map_err(|e| FailoverError::Cluster(e.to_string()))
}

async fn run(session: &Session, what: &str, script: &str) -> Result<(), FailoverError> {
    let out = session
        .exec(script, b"")
        .await
        .map_err(|e| FailoverError::Cluster(e.to_string()))?;
    if !out.success() {
        return Err(FailoverError::Cluster(format!(
            "{what}: {}",
            out.stderr_text().trim()
        )));
    }
    Ok(())
}

/// The lab, when the inventory is the lab's.
fn lab_of(inventory: &Inventory) -> Option<crate::lab::LabConfig> {
    let all = inventory.groups.get("all")?;
    all.inline_vars.get("hactl_lab_bridge")?;
    crate::lab::LabConfig::from_inventory(inventory).ok()
}

pub async fn inject(
    mode: Mode,
    inventory: &Inventory,
    cluster: &Cluster,
    leader: &str,
    heal_after: Duration,
) -> Result<Injected, FailoverError> {
    let mut injected = Injected {
        session: None,
        lab: None,
        host: leader.to_string(),
    };
    match mode {
        Mode::Switchover => cluster.switchover(leader).await?,
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
        Mode::KillNode => match lab_of(inventory) {
            Some(lab) => {
                let host = leader.to_string();
                let config = lab.clone();
                tokio::task::spawn_blocking(move || crate::lab::kill(&config, &host))
                    .await
                    .map_err(|e| FailoverError::Cluster(e.to_string()))?
                    .map_err(|e| FailoverError::Cluster(e.to_string()))?;
                injected.lab = Some(lab);
            }
            None => {
                let s = session(inventory, leader).await?;
                run(
                    &s,
                    "SIGKILL to Patroni and PostgreSQL",
                    "systemctl kill -s KILL --kill-whom=all patroni",
                )
                .await?;
                injected.session = Some(s);
            }
        },
        Mode::Partition => {
            let s = session(inventory, leader).await?;
            let me = cluster
                .member(leader)
                .map(|m| m.address.clone())
                .unwrap_or_default();
            let mut peers: Vec<String> = cluster
                .members
                .iter()
                .map(|m| m.address.clone())
                .chain(cluster.etcd.iter().cloned())
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
                secs = heal_after.as_secs().max(10)
            );
            run(&s, "nft partition", &script).await?;
            injected.session = Some(s);
        }
    }
    Ok(injected)
}

impl Injected {
    /// Undoes the fault: starts what was stopped, boots what was killed, heals the partition.
    pub async fn heal(self, mode: Mode) -> Result<(), FailoverError> {
        match (mode, &self.session, &self.lab) {
            (Mode::Stop, Some(s), _) => run(s, "systemctl start patroni", "systemctl start patroni").await,
            (Mode::KillNode, _, Some(lab)) => {
                let config = lab.clone();
                tokio::task::spawn_blocking(move || crate::lab::up(&config))
                    .await
                    .map_err(|e| FailoverError::Cluster(e.to_string()))?
                    .map_err(|e| FailoverError::Cluster(format!("booting {} again: {e}", self.host)))
            }
            (Mode::Partition, Some(s), _) => {
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

/// Seconds, for reports.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
