//! What each mode expects: the outcome the verdict checks, in words for the report, and the
//! write downtime it allows when `--max-downtime` is not given. No I/O: unit-tested per mode.

use std::time::Duration;

use serde::Serialize;

use super::Mode;
use crate::stack::patroni::DynamicConfig;

/// A write stall shorter than one writer's interval plus this is latency, not an outage: with
/// etcd gone, the leader's loop calls every member's `/failsafe` and commits wait on the
/// synchronous standby meanwhile (0.06-0.69 s on the lab, over 5 runs).
pub const NO_OUTAGE_SLACK: f64 = 1.0;

/// Whether the fault should move the leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderChange {
    Expected,
    Unchanged,
    /// Either is fine (a crashed postmaster is restarted in place or fails over).
    Either,
}

/// What must come back after the fault, and is timed as the report's `back_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Back {
    /// The old leader streams from the new one (when the leader changed).
    OldLeaderRejoins,
    /// The member that was hit streams from the leader again.
    Streams,
    /// The etcd members that were hit answer with a leader again.
    EtcdHealthy,
    /// Nothing in particular was hit (`--command`).
    Nothing,
}

/// The write downtime allowed, and where that figure came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Goal {
    pub max_downtime_s: f64,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub leader: LeaderChange,
    pub back: Back,
    /// The outcome in words, as the report states it.
    pub outcome: String,
    pub goal: Goal,
}

/// How long `lose-etcd-quorum` keeps etcd without a quorum: ttl + 2 × loop_wait, so the
/// leader key would have expired and Patroni's loop has run twice more without etcd.
pub fn quorum_hold(config: &DynamicConfig) -> Duration {
    Duration::from_secs(config.ttl + 2 * config.loop_wait)
}

/// What `mode` expects, with `config` (Patroni's `/config`) and `rate` (inserts per second per
/// writer); `max_downtime` is `--max-downtime`, which replaces the mode's default goal.
pub fn expectation(
    mode: Mode,
    config: &DynamicConfig,
    rate: f64,
    max_downtime: Option<f64>,
) -> Expectation {
    let DynamicConfig {
        ttl,
        loop_wait,
        failsafe_mode,
        ..
    } = *config;
    let fixed = |s: f64| (s, format!("the {mode} default"));
    let failover_time = || {
        (
            (ttl + loop_wait) as f64,
            format!("the {mode} default: ttl {ttl} + loop_wait {loop_wait} (Patroni's /config)"),
        )
    };
    let hold = quorum_hold(config).as_secs();
    let (leader, back, outcome, (goal, source)) = match mode {
        // Patroni's demote sleeps a fixed 1 s after the shutdown checkpoint ("give replicas
        // some more time to catch up", ha.py) before it releases the key: with the checkpoint,
        // the shutdown and the promotion a switchover takes 1.8-2.3 s on the lab.
        Mode::Switchover => (
            LeaderChange::Expected,
            Back::OldLeaderRejoins,
            "the synchronous standby leads; the old leader streams from it".to_string(),
            fixed(2.5),
        ),
        Mode::Stop => (
            LeaderChange::Expected,
            Back::OldLeaderRejoins,
            "a replica takes over; the old leader streams from it once started again".to_string(),
            fixed(3.0),
        ),
        // Patroni finds the postmaster gone on its next loop; starting it and its crash recovery
        // take about 2.5 s more on the lab (4 s allows for a busier host).
        Mode::KillPostgres => (
            LeaderChange::Either,
            Back::OldLeaderRejoins,
            "Patroni restarts PostgreSQL, or a replica takes over and the old leader streams from it"
                .to_string(),
            (
                (loop_wait + 4) as f64,
                format!("the {mode} default: loop_wait {loop_wait} (Patroni's /config) + 4 to restart and recover"),
            ),
        ),
        Mode::Command => (
            LeaderChange::Either,
            Back::Nothing,
            "your command runs while the writers write: no acknowledged write lost, writes stall no longer than losing the synchronous standby".to_string(),
            (
                (loop_wait + 2) as f64,
                format!("the {mode} default: loop_wait {loop_wait} (Patroni's /config) + 2, as kill-sync-standby"),
            ),
        ),
        Mode::KillNode => (
            LeaderChange::Expected,
            Back::OldLeaderRejoins,
            "a replica takes over once the leader key expires; the old leader streams from it once powered on"
                .to_string(),
            failover_time(),
        ),
        Mode::Partition => (
            LeaderChange::Expected,
            Back::OldLeaderRejoins,
            "the old leader demotes itself, a replica takes over; the old leader follows it after healing"
                .to_string(),
            failover_time(),
        ),
        Mode::KillReplica => (
            LeaderChange::Unchanged,
            Back::Streams,
            "no leader change; writes continue; the replica streams again once powered on"
                .to_string(),
            fixed(1.0),
        ),
        Mode::KillSyncStandby => (
            LeaderChange::Unchanged,
            Back::Streams,
            "no leader change; writes stall until Patroni names another synchronous standby; the killed member streams again"
                .to_string(),
            (
                (loop_wait + 2) as f64,
                format!("the {mode} default: loop_wait {loop_wait} (Patroni's /config) + 2"),
            ),
        ),
        // keepalived notices the missing adverts after ~3 × advert_int (1 s) and the new holder
        // sends gratuitous ARP; the writers reconnect to its HAProxy.
        Mode::KillBalancer => (
            LeaderChange::Unchanged,
            Back::Streams,
            "no leader change; another balancer takes the VIP and writes resume through it; the balancer's member streams again once powered on"
                .to_string(),
            fixed(5.0),
        ),
        Mode::KillEtcdLeader => (
            LeaderChange::Unchanged,
            Back::EtcdHealthy,
            "no Patroni leader change; writes continue; etcd elects a new leader; the killed member is healthy again"
                .to_string(),
            fixed(1.0),
        ),
        Mode::LoseEtcdQuorum if failsafe_mode => {
            let interval = 1.0 / rate.max(0.1);
            (
                LeaderChange::Unchanged,
                Back::EtcdHealthy,
                format!("failsafe_mode on: no leader change and no write outage for the {hold} s without quorum"),
                (
                    round_ms(interval + NO_OUTAGE_SLACK),
                    format!(
                        "the {mode} default with failsafe_mode: no outage, i.e. no gap over one writer's interval {} s + {NO_OUTAGE_SLACK} s",
                        round_ms(interval)
                    ),
                ),
            )
        }
        Mode::LoseEtcdQuorum => (
            LeaderChange::Either,
            Back::EtcdHealthy,
            format!("failsafe_mode off: the leader demotes, writes stop until quorum returns after {hold} s, then a leader is elected and writes resume"),
            (
                (hold + loop_wait) as f64,
                format!(
                    "the {mode} default without failsafe_mode: held ttl {ttl} + 2 × loop_wait {loop_wait}, + loop_wait to elect"
                ),
            ),
        ),
    };
    let goal = match max_downtime {
        Some(s) => Goal {
            max_downtime_s: s,
            source: "--max-downtime".to_string(),
        },
        None => Goal {
            max_downtime_s: goal,
            source,
        },
    };
    Expectation {
        leader,
        back,
        outcome,
        goal,
    }
}

/// The goal through the endpoint, where the mode's default is not `--max-downtime`: HAProxy
/// notices a new primary within its checks (fall 2 × inter 1 s), and a balancer that dies takes
/// the VIP with it for keepalived's ~3 adverts. Switchover 3 s, stop 5 s, kill-replica 5 s (the
/// replica may hold the VIP); the others keep theirs (kill-postgres measured no slower).
pub fn through_endpoint(mut e: Expectation, mode: Mode) -> Expectation {
    if e.goal.source == "--max-downtime" {
        return e;
    }
    let goal = match mode {
        Mode::Switchover => 3.0,
        Mode::Stop => 5.0,
        Mode::KillReplica => 5.0,
        _ => return e,
    };
    e.goal = Goal {
        max_downtime_s: goal,
        source: format!(
            "the {mode} default through the endpoint (HAProxy's checks, keepalived's VIP)"
        ),
    };
    e
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(failsafe_mode: bool) -> DynamicConfig {
        DynamicConfig {
            ttl: 30,
            loop_wait: 6,
            failsafe_mode,
            synchronous_mode: true,
        }
    }

    fn goal(mode: Mode) -> f64 {
        expectation(mode, &config(true), 20.0, None)
            .goal
            .max_downtime_s
    }

    #[test]
    fn through_the_endpoint_the_checks_and_the_vip_get_their_time() {
        let via = |mode, given| {
            through_endpoint(expectation(mode, &config(true), 20.0, given), mode)
                .goal
                .max_downtime_s
        };
        assert_eq!(via(Mode::Switchover, None), 3.0);
        assert_eq!(via(Mode::Stop, None), 5.0);
        assert_eq!(via(Mode::KillReplica, None), 5.0);
        assert_eq!(via(Mode::KillBalancer, None), 5.0);
        assert_eq!(via(Mode::KillPostgres, None), goal(Mode::KillPostgres));
        assert_eq!(via(Mode::KillNode, None), goal(Mode::KillNode));
        // --max-downtime stays what was given.
        assert_eq!(via(Mode::Switchover, Some(2.0)), 2.0);
    }

    #[test]
    fn each_mode_has_its_default_goal() {
        assert_eq!(goal(Mode::Switchover), 2.5);
        assert_eq!(goal(Mode::Stop), 3.0);
        assert_eq!(goal(Mode::KillPostgres), 10.0);
        assert_eq!(goal(Mode::Command), 8.0);
        assert_eq!(goal(Mode::KillNode), 36.0);
        assert_eq!(goal(Mode::Partition), 36.0);
        assert_eq!(goal(Mode::KillReplica), 1.0);
        assert_eq!(goal(Mode::KillSyncStandby), 8.0);
        assert_eq!(goal(Mode::KillEtcdLeader), 1.0);
        // One writer's interval at 20/s plus the slack.
        assert_eq!(goal(Mode::LoseEtcdQuorum), 1.05);
    }

    #[test]
    fn the_goal_says_where_it_came_from() {
        let e = expectation(Mode::KillNode, &config(false), 20.0, None);
        assert_eq!(
            e.goal.source,
            "the kill-node default: ttl 30 + loop_wait 6 (Patroni's /config)"
        );
        let given = expectation(Mode::KillNode, &config(false), 20.0, Some(40.0));
        assert_eq!(
            given.goal,
            Goal {
                max_downtime_s: 40.0,
                source: "--max-downtime".into()
            }
        );
    }

    #[test]
    fn losing_etcd_quorum_expects_no_outage_only_with_failsafe_mode() {
        let on = expectation(Mode::LoseEtcdQuorum, &config(true), 20.0, None);
        assert_eq!(on.leader, LeaderChange::Unchanged);
        assert_eq!(
            on.outcome,
            "failsafe_mode on: no leader change and no write outage for the 42 s without quorum"
        );
        let off = expectation(Mode::LoseEtcdQuorum, &config(false), 20.0, None);
        assert_eq!(off.leader, LeaderChange::Either);
        assert_eq!(off.goal.max_downtime_s, 48.0);
        assert_eq!(quorum_hold(&config(false)), Duration::from_secs(42));
    }

    #[test]
    fn the_faults_that_spare_the_leader_expect_it_to_stay() {
        for mode in [
            Mode::KillReplica,
            Mode::KillSyncStandby,
            Mode::KillEtcdLeader,
        ] {
            let e = expectation(mode, &config(false), 20.0, None);
            assert_eq!(e.leader, LeaderChange::Unchanged, "{mode}");
        }
        for mode in [
            Mode::Switchover,
            Mode::Stop,
            Mode::KillNode,
            Mode::Partition,
        ] {
            let e = expectation(mode, &config(false), 20.0, None);
            assert_eq!(
                (e.leader, e.back),
                (LeaderChange::Expected, Back::OldLeaderRejoins),
                "{mode}"
            );
        }
    }
}
