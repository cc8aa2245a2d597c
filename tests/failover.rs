//! `hactl failover-test` on the lab's stack: every mode end to end with its report checked,
//! kill-node five times in a row without losing an acknowledged write, and a refusal when the
//! cluster is not healthy to begin with.

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
fn every_mode_fails_over_and_leaves_the_cluster_healthy() {
    let lab = lab();
    stack(&lab);
    // Goals: a planned switchover within 3 s of write downtime, a graceful stop and a crashed
    // postmaster within 10 s, a partition within ttl + loop_wait (40 s).
    for (mode, goal, leader_changes) in [
        ("switchover", "3", true),
        ("stop", "10", true),
        ("kill-postgres", "10", false),
        ("partition", "40", true),
    ] {
        let (out, report) = failover(mode, goal);
        eprintln!("{mode}: {report}");
        assert_healthy_failover(mode, &out, &report, leader_changes);
    }
}

#[test]
fn kill_node_five_times_in_a_row_loses_no_acknowledged_write() {
    let lab = lab();
    stack(&lab);
    for round in 1..=5 {
        let (out, report) = failover("kill-node", "40");
        eprintln!("kill-node #{round}: {report}");
        assert_healthy_failover("kill-node", &out, &report, true);
    }
}

#[test]
fn an_unhealthy_cluster_is_refused_and_nothing_is_injected() {
    let lab = lab();
    stack(&lab);
    let leader_before = lab.run("ptrn-1", "curl -sf http://10.213.0.11:8008/cluster");
    let leader = serde_json::from_str::<Value>(&leader_before)
        .ok()
        .and_then(|c| {
            c["members"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["role"] == "leader"))
                .and_then(|m| m["name"].as_str().map(str::to_string))
        });
    let leader = leader.expect("a leader");
    let replica = CLUSTER.iter().find(|h| **h != leader).expect("a replica");
    lab.run(replica, "systemctl stop patroni");
    let out = common::hactl(&[
        "failover-test",
        "-i",
        INVENTORY,
        "--mode",
        "stop",
        "--settle",
        "0",
    ]);
    lab.run(replica, "systemctl start patroni");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not healthy, nothing was done"), "{stderr}");
    assert!(stderr.contains(replica), "names the member: {stderr}");
    let after = lab.run("ptrn-1", "curl -sf http://10.213.0.11:8008/cluster");
    assert!(
        after.contains(&format!("\"name\": \"{leader}\", \"role\": \"leader\"")),
        "the leader changed: {after}"
    );
}
