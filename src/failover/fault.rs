//! The faults: whom each one hits, how it is injected, and how it is undone so the cluster is
//! left healthy. A power loss depends on where the members run, so it comes from the caller as a
//! [`PowerLoss`].

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;

use super::cluster::Cluster;
use crate::inventory::{Inventory, InventoryError};
use crate::ssh::{self, HostKeyPolicy, Session, SshError};
use crate::stack::patroni::{self, Role};
use crate::stack::EtcdMember;

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
    /// Power loss of a replica that is neither the leader nor the synchronous standby (the lab:
    /// `lab kill`; elsewhere: SIGKILL to its Patroni and PostgreSQL), powered on again after a
    /// few seconds of writes.
    KillReplica,
    /// SIGKILL to the synchronous standby's Patroni and PostgreSQL (the host stays up), started
    /// again once writes resumed.
    KillSyncStandby,
    /// SIGKILL to etcd on the host of etcd's leader, started again after a few seconds of writes.
    KillEtcdLeader,
    /// etcd stopped on a majority of its members for ttl + 2 × loop_wait, then started again.
    LoseEtcdQuorum,
    /// Power loss of the balancer holding the VIP, moved first to one that is neither the leader's
    /// host nor the synchronous standby's (the lab: `lab kill`), powered on again after a few seconds
    /// of writes: keepalived hands the VIP to another balancer.
    KillBalancer,
    /// `--command` runs here (an apply that upgrades Patroni, a rolling restart) while the
    /// writers write: whatever it does, it must lose no acknowledged write.
    Command,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Mode::Switchover => "switchover",
            Mode::Stop => "stop",
            Mode::KillPostgres => "kill-postgres",
            Mode::KillNode => "kill-node",
            Mode::Partition => "partition",
            Mode::KillReplica => "kill-replica",
            Mode::KillSyncStandby => "kill-sync-standby",
            Mode::KillEtcdLeader => "kill-etcd-leader",
            Mode::LoseEtcdQuorum => "lose-etcd-quorum",
            Mode::KillBalancer => "kill-balancer",
            Mode::Command => "command",
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
/// systemd, which restarts them by itself, and to a balancer's keepalived and HAProxy, which
/// power_on starts again.
pub struct SystemdKill<'a> {
    pub inventory: &'a Inventory,
}

impl PowerLoss for SystemdKill<'_> {
    fn power_off<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<(), FaultError>> {
        Box::pin(async move {
            let s = session(self.inventory, host).await?;
            run(
                &s,
                "SIGKILL to Patroni and PostgreSQL, keepalived and HAProxy",
                &format!(
                    "for u in patroni {BALANCER_UNITS}; do \
                       ! systemctl -q is-active $u || systemctl kill -s KILL --kill-whom=all $u || exit 1; done"
                ),
            )
            .await
        })
    }

    fn power_on<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<(), FaultError>> {
        Box::pin(async move {
            let s = session(self.inventory, host).await?;
            run(
                &s,
                "starting keepalived and HAProxy",
                &format!(
                    "for u in {BALANCER_UNITS}; do \
                       ! systemctl -q is-enabled $u 2>/dev/null || systemctl start $u || exit 1; done"
                ),
            )
            .await
        })
    }
}

/// What undoing the fault needs: the hosts it hit, and a session to each host it changed.
pub struct Injected {
    sessions: Vec<Session>,
    hosts: Vec<String>,
}

const HEAL_UNIT: &str = "hactl-partition-heal";
/// A balancer's services, which a power loss takes down with the host.
const BALANCER_UNITS: &str = "keepalived haproxy";
/// The timer that starts again what a fault stopped, should hactl not get to it.
const SAFETY_UNIT: &str = "hactl-failover-heal";
/// The shortest time after which a partition heals by itself: the fault must last long enough
/// to be a fault.
const MIN_PARTITION: Duration = Duration::from_secs(10);
/// Patroni answers a switchover only once the new leader runs (or it gave up).
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn session(inventory: &Inventory, host: &str) -> Result<Session, FaultError> {
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

/// The hosts `mode` hits, picked from a healthy `topology` led by `leader`, the inventory's
/// `etcd` members, etcd's leader (looked up for `kill-etcd-leader` only) and the balancer
/// holding the VIP (for `kill-balancer` only). `Err` says why the cluster has no such target.
pub fn targets(
    mode: Mode,
    topology: &patroni::Cluster,
    leader: &str,
    etcd: &[EtcdMember],
    etcd_leader: Option<&str>,
    vip_holder: Option<&str>,
) -> Result<Vec<String>, String> {
    let roles = || {
        let mut members: Vec<String> = topology
            .members
            .iter()
            .map(|m| format!("{} {}", m.name, role_name(&m.role)))
            .collect();
        members.sort();
        members.join(", ")
    };
    match mode {
        Mode::Switchover
        | Mode::Stop
        | Mode::KillPostgres
        | Mode::KillNode
        | Mode::Partition => Ok(vec![leader.to_string()]),
        Mode::KillReplica => {
            let mut replicas: Vec<&str> = topology
                .members
                .iter()
                .filter(|m| m.role == Role::Replica && m.is_running() && m.name != leader)
                .map(|m| m.name.as_str())
                .collect();
            replicas.sort();
            match replicas.first() {
                Some(r) => Ok(vec![r.to_string()]),
                None => Err(format!(
                    "{mode} needs a replica that is neither the leader nor the synchronous standby, and the cluster has none ({}): add a member",
                    roles()
                )),
            }
        }
        Mode::KillSyncStandby => match topology.sync_standby() {
            Some(s) => Ok(vec![s.name.clone()]),
            None => Err(format!(
                "{mode} needs a synchronous standby, and the cluster has none ({}): turn on synchronous_mode",
                roles()
            )),
        },
        Mode::KillEtcdLeader => match etcd_leader {
            Some(l) => Ok(vec![l.to_string()]),
            None => Err(format!(
                "{mode}: no etcd member names a leader that the inventory lists"
            )),
        },
        Mode::KillBalancer => match vip_holder {
            Some(h) => Ok(vec![h.to_string()]),
            None => Err(format!("{mode}: no balancer holds the VIP")),
        },
        Mode::Command => Ok(Vec::new()),
        // The first majority in the inventory's order: the same members every run.
        Mode::LoseEtcdQuorum => Ok(etcd
            .iter()
            .take(etcd.len() / 2 + 1)
            .map(|m| m.name.clone())
            .collect()),
    }
}

fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::StandbyLeader => "standby leader",
        Role::SyncStandby => "synchronous standby",
        Role::Replica => "replica",
        Role::Other => "(other role)",
    }
}

/// `fault`, after a timer on the host that runs `undo` after `after` should hactl not get to it.
fn with_safety_net(undo: &str, after: Duration, fault: &str) -> String {
    format!(
        "systemctl stop {SAFETY_UNIT}.timer >/dev/null 2>&1; systemctl reset-failed {SAFETY_UNIT}.service >/dev/null 2>&1; \
         systemd-run --quiet --unit={SAFETY_UNIT} --on-active={secs}s {undo} && {fault}",
        secs = after.max(MIN_PARTITION).as_secs()
    )
}

/// SIGKILL to every process of `unit`, which stays down (its `Restart=` held off by a runtime
/// drop-in) until [`started_again`]: a process that dies, not one systemd brings back at once.
fn kill_and_hold(unit: &str) -> String {
    format!(
        "mkdir -p /run/systemd/system/{unit}.service.d && \
         printf '[Service]\\nRestart=no\\n' > /run/systemd/system/{unit}.service.d/hactl-fault.conf && \
         systemctl daemon-reload && systemctl kill -s KILL --kill-whom=all {unit}"
    )
}

/// Undoes [`kill_and_hold`]: the drop-in gone, the unit started.
fn started_again(unit: &str) -> String {
    format!(
        "sh -c 'rm -f /run/systemd/system/{unit}.service.d/hactl-fault.conf; systemctl daemon-reload; systemctl start {unit}'"
    )
}

/// Runs `command` on this machine to its end, its output on stderr (stdout carries the report).
async fn run_here(command: &str) -> Result<(), FaultError> {
    use std::os::fd::AsFd as _;
    let failed = |why: String| FaultError::Command {
        what: format!("`{command}`"),
        stderr: why,
    };
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| failed(e.to_string()))?;
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .status()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if status.success() {
        Ok(())
    } else {
        Err(failed(format!("it exited with {status}")))
    }
}

/// `undo`, and the safety net's timer gone.
fn undo(undo: &str) -> String {
    format!("systemctl stop {SAFETY_UNIT}.timer >/dev/null 2>&1; {undo}")
}

/// Fails `hosts` (from [`targets`]) as `mode` says. What stops a service leaves a timer on its
/// host that starts it again after `heal_after`, should hactl die meanwhile.
#[allow(clippy::too_many_arguments)]
pub async fn inject(
    mode: Mode,
    inventory: &Inventory,
    cluster: &Cluster,
    hosts: &[String],
    heal_after: Duration,
    power: &dyn PowerLoss,
    command: Option<&str>,
) -> Result<Injected, FaultError> {
    let mut injected = Injected {
        sessions: Vec::new(),
        hosts: hosts.to_vec(),
    };
    let first = match (mode, hosts.first()) {
        (Mode::Command, _) => "",
        (_, Some(host)) => host.as_str(),
        (_, None) => return Err(FaultError::NoMember(format!("(no target for {mode})"))),
    };
    match mode {
        Mode::Command => run_here(command.unwrap_or_default()).await?,
        Mode::Switchover => switchover(cluster, first).await?,
        Mode::Stop => {
            let s = session(inventory, first).await?;
            run(&s, "systemctl stop patroni", "systemctl stop patroni").await?;
            injected.sessions.push(s);
        }
        Mode::KillPostgres => {
            let s = session(inventory, first).await?;
            run(
                &s,
                "SIGKILL to the postmaster",
                "kill -KILL $(pgrep -o -u postgres -x postgres)",
            )
            .await?;
            injected.sessions.push(s);
        }
        Mode::KillNode | Mode::KillReplica | Mode::KillBalancer => power.power_off(first).await?,
        Mode::Partition => {
            let s = session(inventory, first).await?;
            let me = cluster.address(first);
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
            injected.sessions.push(s);
        }
        Mode::KillSyncStandby => {
            let s = session(inventory, first).await?;
            run(
                &s,
                "SIGKILL to the synchronous standby's Patroni and PostgreSQL",
                &with_safety_net(
                    &started_again("patroni"),
                    heal_after,
                    &kill_and_hold("patroni"),
                ),
            )
            .await?;
            injected.sessions.push(s);
        }
        Mode::KillEtcdLeader => {
            let s = session(inventory, first).await?;
            run(
                &s,
                "SIGKILL to etcd",
                &with_safety_net(&started_again("etcd"), heal_after, &kill_and_hold("etcd")),
            )
            .await?;
            injected.sessions.push(s);
        }
        Mode::LoseEtcdQuorum => {
            for host in hosts {
                let s = session(inventory, host).await?;
                // Pushed before the stop: a later host's failure still starts this one again.
                injected.sessions.push(s);
                let s = injected.sessions.last().expect("just pushed");
                run(
                    s,
                    "systemctl stop etcd",
                    &with_safety_net("systemctl start etcd", heal_after, "systemctl stop etcd"),
                )
                .await?;
            }
        }
    }
    Ok(injected)
}

impl Injected {
    /// Undoes the fault: starts what was stopped, powers on what lost power, heals the partition.
    pub async fn heal(self, mode: Mode, power: &dyn PowerLoss) -> Result<(), FaultError> {
        let first = self.hosts.first().map(String::as_str).unwrap_or_default();
        match (mode, self.sessions.first()) {
            (Mode::Stop, Some(s)) => {
                run(s, "systemctl start patroni", "systemctl start patroni").await
            }
            (Mode::KillNode | Mode::KillReplica | Mode::KillBalancer, _) => {
                power.power_on(first).await
            }
            (Mode::Partition, Some(s)) => {
                run(
                    s,
                    "healing the partition",
                    &format!("nft delete table inet hactl_partition 2>/dev/null; systemctl stop {HEAL_UNIT}.timer >/dev/null 2>&1; true"),
                )
                .await
            }
            (Mode::KillSyncStandby, Some(s)) => {
                run(s, "systemctl start patroni", &undo(&started_again("patroni"))).await
            }
            (Mode::KillEtcdLeader, Some(s)) => {
                run(s, "systemctl start etcd", &undo(&started_again("etcd"))).await
            }
            // At once: a member's start waits for a quorum that the others' starts make.
            (Mode::LoseEtcdQuorum, _) => {
                let start = undo("systemctl start etcd");
                let starts = self
                    .sessions
                    .iter()
                    .map(|s| run(s, "systemctl start etcd", &start));
                futures::future::join_all(starts)
                    .await
                    .into_iter()
                    .collect()
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(members: serde_json::Value) -> patroni::Cluster {
        serde_json::from_value(serde_json::json!({ "members": members })).unwrap()
    }

    fn three() -> patroni::Cluster {
        topology(serde_json::json!([
            {"name": "pg-c", "role": "replica", "state": "streaming", "timeline": 3, "lag": 0},
            {"name": "pg-a", "role": "leader", "state": "running", "timeline": 3},
            {"name": "pg-b", "role": "sync_standby", "state": "running", "timeline": 3, "lag": 0},
        ]))
    }

    fn etcd(names: &[&str]) -> Vec<EtcdMember> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| EtcdMember {
                name: n.to_string(),
                address: format!("192.0.2.{}", i + 1),
                client_port: 2379,
            })
            .collect()
    }

    #[test]
    fn each_mode_hits_its_member() {
        let t = three();
        let e = etcd(&["e-1", "e-2", "e-3"]);
        let hit = |mode| targets(mode, &t, "pg-a", &e, Some("e-2"), Some("pg-c"));
        assert_eq!(hit(Mode::KillNode), Ok(vec!["pg-a".to_string()]));
        assert_eq!(hit(Mode::KillReplica), Ok(vec!["pg-c".to_string()]));
        assert_eq!(hit(Mode::KillSyncStandby), Ok(vec!["pg-b".to_string()]));
        assert_eq!(hit(Mode::KillEtcdLeader), Ok(vec!["e-2".to_string()]));
        assert_eq!(hit(Mode::KillBalancer), Ok(vec!["pg-c".to_string()]));
        assert_eq!(
            hit(Mode::LoseEtcdQuorum),
            Ok(vec!["e-1".to_string(), "e-2".to_string()])
        );
        let five = etcd(&["e-1", "e-2", "e-3", "e-4", "e-5"]);
        assert_eq!(
            targets(Mode::LoseEtcdQuorum, &t, "pg-a", &five, None, None).map(|h| h.len()),
            Ok(3)
        );
    }

    #[test]
    fn two_members_have_no_replica_to_kill_and_say_so() {
        let t = topology(serde_json::json!([
            {"name": "pg-a", "role": "leader", "state": "running", "timeline": 3},
            {"name": "pg-b", "role": "sync_standby", "state": "running", "timeline": 3, "lag": 0},
        ]));
        assert_eq!(
            targets(Mode::KillReplica, &t, "pg-a", &[], None, None),
            Err("kill-replica needs a replica that is neither the leader nor the synchronous standby, and the cluster has none (pg-a leader, pg-b synchronous standby): add a member".to_string())
        );
    }

    #[test]
    fn without_synchronous_mode_there_is_no_standby_to_kill() {
        let t = topology(serde_json::json!([
            {"name": "pg-a", "role": "leader", "state": "running", "timeline": 3},
            {"name": "pg-b", "role": "replica", "state": "running", "timeline": 3, "lag": 0},
        ]));
        let err = targets(Mode::KillSyncStandby, &t, "pg-a", &[], None, None).unwrap_err();
        assert!(err.ends_with("turn on synchronous_mode"), "{err}");
        assert!(targets(Mode::KillEtcdLeader, &t, "pg-a", &[], None, None).is_err());
        assert!(targets(Mode::KillBalancer, &t, "pg-a", &[], None, None).is_err());
    }

    #[test]
    fn a_stopped_service_is_started_again_by_a_timer_set_first() {
        assert_eq!(
            with_safety_net("systemctl start etcd", Duration::from_secs(90), "systemctl stop etcd"),
            "systemctl stop hactl-failover-heal.timer >/dev/null 2>&1; systemctl reset-failed hactl-failover-heal.service >/dev/null 2>&1; \
             systemd-run --quiet --unit=hactl-failover-heal --on-active=90s systemctl start etcd && systemctl stop etcd"
        );
    }
}
