//! `hactl failover-test` on the lab's stack: every mode end to end with its report checked,
//! kill-node five times in a row, and the refusal to start on an unhealthy cluster.

mod common;

use std::process::Output;

use common::{lab, text, CLUSTER};
use serde_json::Value;

/// What every passing run must show.
fn assert_healthy_failover(mode: &str, out: &Output, r: &Value, leader_changes: bool) {
    assert_eq!(out.status.code(), Some(0), "{mode}: {}", text(out));
    assert_eq!(r["mode"], mode);
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["lost_acked_writes"], 0, "{r}");
    assert_eq!(r["duplicated_writes"], 0, "{r}");
    assert_eq!(r["split_brain"], false, "{r}");
    assert!(r["acked_writes"].as_u64().unwrap_or(0) > 100, "{r}");
    let old = r["old_leader"].as_str().unwrap_or_default();
    let new = r["new_leader"].as_str().unwrap_or_default();
    assert!(CLUSTER.contains(&old) && CLUSTER.contains(&new), "{r}");
    assert!(
        r["write_downtime_s"].as_f64().is_some_and(|d| d > 0.0),
        "{r}"
    );
    assert!(r["db_write_gap_s"].as_f64().is_some_and(|d| d > 0.0), "{r}");
    if leader_changes {
        assert_ne!(old, new, "{r}");
        assert!(r["old_leader_rejoined_s"].as_f64().is_some(), "{r}");
        assert!(r["leader_elected_s"].as_f64().is_some(), "{r}");
        assert!(
            r["timeline_after"].as_i64() > r["timeline_before"].as_i64(),
            "{r}"
        );
    }
}

#[test]
fn switchover_stop_and_kill_postgres_fail_over_and_leave_the_cluster_healthy() {
    let lab = lab();
    lab.stack();
    // Goals: a planned switchover within 3 s of write downtime, a graceful stop and a crashed
    // postmaster within 10 s.
    for (mode, goal, leader_changes) in [
        ("switchover", "3", true),
        ("stop", "10", true),
        ("kill-postgres", "10", false),
    ] {
        let (out, report) = lab.failover(mode, goal);
        eprintln!("{mode}: {report}");
        assert_healthy_failover(mode, &out, &report, leader_changes);
    }
}

/// Power loss of the leader, five times in a row: with synchronous mode no acknowledged write is
/// lost, nobody else accepts writes meanwhile, and the old leader comes back as a replica each
/// time. Goal: ttl + loop_wait = 36 s of write downtime.
#[test]
fn kill_node_five_times_in_a_row_loses_no_acknowledged_write() {
    let lab = lab();
    lab.stack();
    for round in 1..=5 {
        let (out, report) = lab.failover("kill-node", "36");
        eprintln!("kill-node #{round}: {report}");
        assert_healthy_failover("kill-node", &out, &report, true);
        let old = report["old_leader"].as_str().unwrap_or_default();
        let up = lab.run(old, "systemctl is-active patroni etcd");
        assert_eq!(
            up.split_whitespace().collect::<Vec<_>>(),
            ["active", "active"],
            "{old}: {up}"
        );
    }
}

/// The leader cut off from etcd and its peers: it demotes itself, a replica takes over, and once
/// the partition heals the old leader follows the new one instead of taking its key back (Debian
/// 12's Patroni 3.0.2 did the latter until the patroni role carried upstream's fix).
#[test]
fn partition_fails_over_and_the_old_leader_follows_after_healing() {
    let lab = lab();
    lab.stack();
    let (out, report) = lab.failover("partition", "36");
    eprintln!("partition: {report}");
    assert_healthy_failover("partition", &out, &report, true);
    let old = report["old_leader"].as_str().unwrap_or_default();
    let tables = lab.run(old, "nft list tables");
    assert!(!tables.contains("hactl_partition"), "{old}: {tables}");
    let timer = lab.run(
        old,
        "systemctl is-active hactl-partition-heal.timer || true",
    );
    assert_ne!(
        timer.trim(),
        "active",
        "{old}: the heal timer is left behind"
    );
}

/// A replica whose Patroni is stopped: the test refuses to start, names the member, and injects
/// nothing (the leader stays the leader).
#[test]
fn an_unhealthy_cluster_is_refused_and_left_alone() {
    let lab = lab();
    lab.stack();
    let leader_before = lab.leader();
    let replica = CLUSTER
        .iter()
        .find(|h| **h != leader_before)
        .copied()
        .unwrap_or("ptrn-3");
    lab.run(replica, "systemctl stop patroni");
    let out = common::hactl(&[
        "failover-test",
        "-i",
        &lab.inventory(),
        "--mode",
        "kill-node",
        "--settle",
        "5",
    ]);
    lab.run(replica, "systemctl start patroni");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains("the cluster is not healthy, nothing was done") && err.contains(replica),
        "{err}"
    );
    assert_eq!(lab.leader(), leader_before, "a fault was injected");
    assert_eq!(
        lab.run(&leader_before, "systemctl is-active patroni")
            .trim(),
        "active"
    );
    // Left healthy for the next test: the replica streams again.
    let (out, report) = lab.failover("switchover", "3");
    assert_healthy_failover("switchover", &out, &report, true);
}
