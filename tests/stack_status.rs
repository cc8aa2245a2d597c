//! `hactl status` on the lab: one leader and two streaming replicas, etcd, the endpoint, the
//! backups and the alerts on one screen; a replica powered off shows as down, with etcd's member
//! on that host, and the exit code says the cluster is not healthy; booted again, it is.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{eventually, lab, text, Lab, CLUSTER};
use serde_json::Value;

fn status(lab: &Lab) -> (Output, Value) {
    let out = common::hactl(&["status", "-i", &lab.inventory(), "--output", "json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

fn member<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == name))
        .unwrap_or(&Value::Null)
}

#[test]
fn status_shows_the_leader_and_streaming_replicas_and_a_killed_replica_as_down() {
    let mut lab = lab();
    lab.stack();
    let leader = lab.leader();
    let replicas: Vec<&str> = CLUSTER.iter().copied().filter(|h| *h != leader).collect();

    // Healthy: exit 0, one leader, both replicas streaming on its timeline, etcd whole, the
    // endpoint taking connections, a full backup, the alerts read.
    let v = eventually("hactl status says healthy", Duration::from_secs(90), || {
        let (out, v) = status(&lab);
        if out.status.code() == Some(0) {
            Ok(v)
        } else {
            Err(format!("{}\n{v}", text(&out)))
        }
    });
    assert_eq!(v["leader"], leader.as_str(), "{v}");
    assert_eq!(member(&v, &leader)["role"], "leader", "{v}");
    for r in &replicas {
        let m = member(&v, r);
        assert!(
            m["role"] == "replica" || m["role"] == "sync_standby",
            "{r}: {v}"
        );
        assert_eq!(m["state"], "streaming", "{r}: {v}");
        assert_eq!(m["timeline"], member(&v, &leader)["timeline"], "{v}");
    }
    let etcd = v["etcd"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        etcd.iter().filter(|e| e["healthy"] == true).count(),
        3,
        "{v}"
    );
    assert_eq!(
        etcd.iter().filter(|e| e["leader"] == true).count(),
        1,
        "{v}"
    );
    assert_eq!(v["endpoint"]["reachable"], true, "{v}");
    assert!(
        v["backups"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["type"] == "full")),
        "{v}"
    );
    assert!(v["alerts"].is_array(), "Prometheus's alerts read: {v}");

    // The screen says the same in words.
    let out = common::hactl(&["status", "-i", &lab.inventory()]);
    common::assert_success("hactl status", &out);
    let screen = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        screen.starts_with(&format!("Cluster hactl — leader {leader}\n")),
        "{screen}"
    );
    for r in &replicas {
        assert!(
            screen
                .lines()
                .any(|l| l.split_whitespace().next() == Some(r) && l.contains("streaming")),
            "{r} streaming: {screen}"
        );
    }
    for line in [
        "etcd: 3 of 3 members healthy",
        "endpoint 10.213.0.10:5000: takes connections",
        "backups: full ",
        "healthy",
    ] {
        assert!(screen.contains(line), "{line:?} in:\n{screen}");
    }

    // A replica loses power: it shows as down (Patroni's member key expires), so does the etcd
    // member on that host, and the exit code is 1.
    let victim = replicas[0];
    lab.act("kill", victim);
    let v = eventually(
        "hactl status shows the killed replica down",
        Duration::from_secs(90),
        || {
            let (out, v) = status(&lab);
            let down = member(&v, victim)["role"] == "down";
            if out.status.code() == Some(1) && down {
                Ok(v)
            } else {
                Err(format!("exit {:?}: {v}", out.status.code()))
            }
        },
    );
    let problems = v["problems"].to_string();
    assert!(problems.contains(victim), "the problems name {victim}: {v}");
    let etcd_down: Vec<&Value> = v["etcd"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["healthy"] == false)
        .collect();
    assert_eq!(etcd_down.len(), 1, "{v}");
    assert_eq!(etcd_down[0]["name"], victim, "{v}");
    let out = common::hactl(&["status", "-i", &lab.inventory()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let screen = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        screen
            .lines()
            .any(|l| l.split_whitespace().next() == Some(victim) && l.contains(" down ")),
        "{victim} down: {screen}"
    );
    assert!(screen.contains("etcd: 2 of 3 members healthy"), "{screen}");
    assert!(screen.contains("\nproblems:\n"), "{screen}");

    // Booted again, it rejoins and the cluster is healthy.
    lab.up();
    eventually(
        "hactl status healthy again",
        Duration::from_secs(180),
        || {
            let (out, v) = status(&lab);
            (out.status.code() == Some(0))
                .then_some(())
                .ok_or_else(|| format!("{v}"))
        },
    );
}
