//! `hactl failover-test` on the lab's stack: switchover, stop and kill-postgres end to end with
//! their reports checked. (kill-node and partition are not here yet: in some runs no new leader
//! is elected within 120 s — the open part of the failover-test issue.)

mod common;

use std::process::Output;

use common::{lab, text, Lab, INVENTORY};
use serde_json::Value;

const CLUSTER: [&str; 3] = ["ptrn-1", "ptrn-2", "ptrn-3"];

/// The stack, applied (a no-op when an earlier test built it).
fn stack(lab: &Lab) {
    let out = lab.hactl(&["apply", INVENTORY]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

fn failover(mode: &str, max_downtime: &str) -> (Output, Value) {
    let out = common::hactl(&[
        "failover-test",
        "-i",
        INVENTORY,
        "--mode",
        mode,
        "--max-downtime",
        max_downtime,
        "--output",
        "json",
    ]);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{mode}: no JSON report ({e}):\n{}", text(&out)));
    (out, report)
}

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
    stack(&lab);
    // Goals: a planned switchover within 3 s of write downtime, a graceful stop and a crashed
    // postmaster within 10 s.
    for (mode, goal, leader_changes) in [
        ("switchover", "3", true),
        ("stop", "10", true),
        ("kill-postgres", "10", false),
    ] {
        let (out, report) = failover(mode, goal);
        eprintln!("{mode}: {report}");
        assert_healthy_failover(mode, &out, &report, leader_changes);
    }
}
