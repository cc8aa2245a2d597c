//! The move from Debian's Patroni 3.0.2 (`patroni_install: package`) to Patroni 4 from the
//! locked wheels, on a cluster that takes writes all along: replicas first, then a switchover,
//! then the old leader, and no acknowledged write lost.

mod common;

use common::{hactl, lab, patroni_api, text, Lab, CLUSTER};
use serde_json::Value;

fn patroni_version(lab: &Lab, host: &str) -> String {
    let body = lab.run(host, &patroni_api("/patroni"));
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{host}: {e}: {body}"));
    v["patroni"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_cluster_on_debians_patroni_moves_to_patroni_4_one_member_at_a_time_losing_no_write() {
    let mut lab = lab();
    lab.down();
    lab.up();
    let inventory = lab.inventory();

    let package = hactl(&["apply", &inventory, "-e", "patroni_install=package"]);
    assert_eq!(package.status.code(), Some(0), "{}", text(&package));
    for host in CLUSTER {
        assert_eq!(patroni_version(&lab, host), "3.0.2", "{host}");
    }

    // The move is an apply with the default (pip), run while failover-test's writers write.
    let apply = format!("{} apply {inventory}", env!("CARGO_BIN_EXE_hactl"));
    let out = hactl(&[
        "failover-test",
        "-i",
        &inventory,
        "--mode",
        "command",
        "--command",
        &apply,
        "--output",
        "json",
    ]);
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{}", text(&out)));
    eprintln!("the move under writes: {r}");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["lost_acked_writes"], 0, "{r}");
    assert_eq!(r["duplicated_writes"], 0, "{r}");
    assert_eq!(r["split_brain"], false, "{r}");
    assert!(r["acked_writes"].as_u64().unwrap_or(0) > 100, "{r}");
    // The leader went last, after handing over: one switchover, not a failover.
    assert_ne!(r["old_leader"], r["new_leader"], "{r}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("replicas run the installed Patroni — restarted Patroni 3.0.2 as 4.1.5"),
        "{log}"
    );
    assert!(
        log.contains(
            "the old leader runs the installed Patroni, after a switchover — switched over from"
        ),
        "{log}"
    );

    for host in CLUSTER {
        assert_eq!(patroni_version(&lab, host), "4.1.5", "{host}");
        let exec = lab.run(host, "systemctl show -p ExecStart --value patroni");
        assert!(
            exec.contains("path=/opt/patroni/bin/patroni "),
            "{host}: {exec}"
        );
    }
    let cluster: Value =
        serde_json::from_str(&lab.run("ptrn-1", &patroni_api("/cluster"))).expect("/cluster");
    let members = cluster["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        members.iter().filter(|m| m["role"] == "leader").count(),
        1,
        "{cluster}"
    );
    assert_eq!(
        members.iter().filter(|m| m["state"] == "streaming").count(),
        2,
        "{cluster}"
    );

    let again = hactl(&["apply", &inventory]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let changed: Vec<&str> = std::str::from_utf8(&again.stdout)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("changed:"))
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
}
