//! Point-in-time recovery on the lab: a dropped table is undone by `hactl restore --target T`,
//! and a cluster whose members all lost their data comes back with `--target latest`, losing at
//! most the writes of the last archive_timeout seconds.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{lab, text, Lab, CLUSTER};

/// backup_archive_timeout on the lab (the default).
const ARCHIVE_TIMEOUT_S: f64 = 60.0;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// A writer on `host` for `seconds`: one row per insert, each printed as `id ack_epoch` once
/// PostgreSQL acknowledged it (the lab's machines share this machine's clock).
fn writer(lab: &Lab, host: &str, table: &str, seconds: u32) -> Child {
    let script = format!(
        "runuser -u postgres -- psql -qtAX -v ON_ERROR_STOP=1 -c \
           'create table if not exists {table} (id bigserial primary key, at timestamptz default clock_timestamp())' >/dev/null\n\
         end=$(( $(date +%s) + {seconds} ))\n\
         while [ $(date +%s) -lt $end ]; do\n\
           id=$(runuser -u postgres -- psql -qtAX -c 'insert into {table} default values returning id' 2>/dev/null) || continue\n\
           echo \"$id $(date +%s.%N)\"\n\
           sleep 0.02\n\
         done"
    );
    Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(["lab", "ssh", "-i", &lab.inventory(), host, &script])
        .current_dir(common::repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("writer")
}

/// (id, acknowledged at) of each row the writer saw committed.
fn acked(child: Child) -> Vec<(i64, f64)> {
    let out = child.wait_with_output().expect("writer");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (id, at) = l.split_once(' ')?;
            Some((id.trim().parse().ok()?, at.trim().parse().ok()?))
        })
        .collect()
}

/// (id, inserted at) of each row of `table` on the leader (none when the table is not there).
fn rows(lab: &Lab, table: &str) -> Vec<(i64, f64)> {
    let leader = lab.leader();
    let out = lab.ssh(
        &leader,
        &format!(
            "runuser -u postgres -- psql -qtAX -F ' ' -c 'select id, extract(epoch from at) from {table} order by id'"
        ),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert!(stderr.contains("does not exist"), "{}", text(&out));
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (id, at) = l.split_once(' ')?;
            Some((id.parse().ok()?, at.parse().ok()?))
        })
        .collect()
}

fn restore(lab: &Lab, target: &str) -> serde_json::Value {
    let out = common::hactl(&[
        "restore",
        "-i",
        &lab.inventory(),
        "--target",
        target,
        "--yes",
        "--output",
        "json",
    ]);
    common::assert_success("hactl restore", &out);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// One leader and every other member streaming from it, as Patroni's /cluster says.
fn assert_healthy(lab: &Lab, report: &serde_json::Value) {
    let leader = lab.leader();
    assert_eq!(report["leader_after"], leader.as_str(), "{report}");
    let mut streaming: Vec<String> = report["streaming_replicas"]
        .as_array()
        .expect("streaming_replicas")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    streaming.sort();
    let mut others: Vec<String> = CLUSTER
        .iter()
        .filter(|h| **h != leader)
        .map(|h| h.to_string())
        .collect();
    others.sort();
    assert_eq!(streaming, others, "{report}");
    common::eventually("two replicas streaming", Duration::from_secs(60), || {
        let body = lab.run(&leader, &common::patroni_api("/cluster"));
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let n = v["members"]
            .as_array()
            .map(|ms| ms.iter().filter(|m| m["state"] == "streaming").count())
            .unwrap_or(0);
        (n == 2).then_some(()).ok_or(body)
    });
}

fn utc(epoch: f64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{epoch:.6}"),
            "+%Y-%m-%d %H:%M:%S.%6N+00",
        ])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_dropped_table_is_undone_by_a_restore_to_a_time_before_the_mistake() {
    let mut lab = lab();
    lab.stack();
    let leader = lab.leader();
    lab.run(
        &leader,
        "runuser -u postgres -- psql -qc 'drop table if exists pitr_mistake'",
    );
    let w = writer(&lab, &leader, "pitr_mistake", 8);
    std::thread::sleep(Duration::from_secs(4));
    let t = now();
    let acks = acked(w);
    lab.run(
        &leader,
        "runuser -u postgres -- psql -qc 'drop table pitr_mistake'",
    );
    let before: Vec<i64> = acks
        .iter()
        .filter(|(_, a)| *a < t)
        .map(|(i, _)| *i)
        .collect();
    let after = acks.iter().filter(|(_, a)| *a > t).count();
    assert!(
        before.len() > 10 && after > 10,
        "writes on both sides of T: {} before, {after} after",
        before.len()
    );

    let report = restore(&lab, &utc(t));
    eprintln!("restore to T: {report}");
    let restored = rows(&lab, "pitr_mistake");
    let ids: BTreeSet<i64> = restored.iter().map(|(i, _)| *i).collect();
    let missing: Vec<&i64> = before.iter().filter(|i| !ids.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before T and missing: {missing:?}"
    );
    let late: Vec<&(i64, f64)> = restored.iter().filter(|(_, at)| *at > t).collect();
    assert!(late.is_empty(), "written after T and restored: {late:?}");
    assert_healthy(&lab, &report);

    let (out, switchover) = lab.failover("switchover");
    assert_eq!(switchover["passed"], true, "{}", text(&out));
    assert_eq!(switchover["lost_acked_writes"], 0, "{switchover}");
}

#[test]
fn a_cluster_that_lost_every_data_directory_comes_back_losing_at_most_archive_timeout() {
    let mut lab = lab();
    lab.stack();
    let leader = lab.leader();
    lab.run(
        &leader,
        "runuser -u postgres -- psql -qc 'drop table if exists pitr_lost'",
    );
    // Longer than archive_timeout, so that the archive has had to take some of it.
    let acks = acked(writer(
        &lab,
        &leader,
        "pitr_lost",
        ARCHIVE_TIMEOUT_S as u32 + 15,
    ));
    assert!(acks.len() > 100, "{} writes", acks.len());
    // Every member killed at once (masked, so that systemd does not start Patroni again), and
    // its data directory gone.
    let lost_at = now();
    std::thread::scope(|s| {
        for host in CLUSTER {
            let lab = &lab;
            s.spawn(move || {
                lab.run(
                    host,
                    "systemctl mask --runtime patroni && systemctl kill -s KILL patroni && \
                     (pkill -9 -x postgres || true) && systemctl stop patroni && \
                     rm -rf /var/lib/postgresql/15/hactl && systemctl unmask --runtime patroni",
                )
            });
        }
    });

    let report = restore(&lab, "latest");
    eprintln!("restore latest: {report}");
    let restored: BTreeSet<i64> = rows(&lab, "pitr_lost").iter().map(|(i, _)| *i).collect();
    let lost: Vec<&(i64, f64)> = acks.iter().filter(|(i, _)| !restored.contains(i)).collect();
    let rpo = lost
        .iter()
        .map(|(_, a)| lost_at - a)
        .fold(0.0_f64, f64::max);
    eprintln!(
        "whole cluster lost: {} of {} acknowledged writes lost, RPO {rpo:.1} s, restore {} s",
        lost.len(),
        acks.len(),
        report["total_s"]
    );
    assert!(
        lost.len() < acks.len(),
        "every write lost: the archive took nothing of {} s of writes",
        ARCHIVE_TIMEOUT_S + 15.0
    );
    assert!(
        rpo <= ARCHIVE_TIMEOUT_S,
        "writes acknowledged {rpo:.1} s before the loss are gone (archive_timeout {ARCHIVE_TIMEOUT_S} s): {lost:?}"
    );
    assert_healthy(&lab, &report);
}

#[test]
fn a_restore_drill_passes_while_writes_go_on_without_an_outage() {
    let mut lab = lab();
    lab.stack();
    let leader = lab.leader();
    lab.run(
        &leader,
        "runuser -u postgres -- psql -qc 'drop table if exists pitr_drill'",
    );
    let w = writer(&lab, &leader, "pitr_drill", 25);
    std::thread::sleep(Duration::from_secs(5));
    let out = common::hactl(&[
        "restore-test",
        "-i",
        &lab.inventory(),
        "--table",
        "pitr_drill:at",
        "--output",
        "json",
    ]);
    let acks = acked(w);
    common::assert_success("hactl restore-test", &out);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    eprintln!("restore-test: {report}");
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["amcheck"], "ok", "{report}");
    let table = &report["tables"][0];
    assert_eq!(table["table"], "pitr_drill", "{report}");
    assert!(
        table["restored"].as_u64().unwrap_or(0) > 0,
        "rows of the writer in the drill: {report}"
    );
    assert_eq!(table["restored"], table["primary"], "{report}");
    // The writer never waited: no gap between acknowledgments longer than a second.
    let gap = acks
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .fold(0.0_f64, f64::max);
    assert!(acks.len() > 100, "{} writes", acks.len());
    assert!(
        gap < 1.0,
        "the writes stopped for {gap:.2} s during the drill"
    );
    // Nothing of the drill is left on the repository host.
    let left = lab.run(
        "prmt-1",
        "ls -A /var/lib/pgbackrest-drill; ps -eo args | grep '^postgres: hactl-drill' || true",
    );
    assert_eq!(left, "", "left behind by the drill");

    // A table to check that exists neither in the drill nor on the primary fails the drill,
    // named (a mistyped --table is no pass).
    let out = common::hactl(&[
        "restore-test",
        "-i",
        &lab.inventory(),
        "--table",
        "pitr_no_such_table:at",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("FAILED: pitr_no_such_table: no such table"),
        "{}",
        text(&out)
    );
}
