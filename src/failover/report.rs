//! The report of one failover test, as JSON (its field names are documented in the README and
//! read by the lab tests) and as a table.

use serde::Serialize;

use super::Mode;

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: Mode,
    /// How the writers reached the primary: `endpoint ADDRESS:PORT` or `direct`.
    pub path: String,
    /// The outcome the mode expects, which the verdict checked.
    pub expected: String,
    /// The hosts the fault hit.
    pub hit: Vec<String>,
    pub old_leader: String,
    pub new_leader: Option<String>,
    /// Last acknowledged write before the fault to the first one after it (client clock).
    pub write_downtime_s: Option<f64>,
    /// The same gap, read from the rows' clock_timestamp() on the new primary.
    pub db_write_gap_s: Option<f64>,
    /// Fault to the leader key's loss in etcd (None for a switchover, which hands it over).
    pub leader_key_lost_s: Option<f64>,
    /// Fault to a new leader key in etcd.
    pub leader_elected_s: Option<f64>,
    pub acked_writes: usize,
    pub lost_acked_writes: usize,
    pub duplicated_writes: u64,
    pub timeline_before: Option<i32>,
    pub timeline_after: Option<i32>,
    pub split_brain: bool,
    /// Writes acknowledged on an older timeline after a newer one had acknowledged writes: by
    /// a server that was no longer primary.
    pub stale_primary_acks: usize,
    /// Where the VIP was during the test (sampled every 200 ms), when there is one.
    pub vip: Option<super::vip::VipReport>,
    /// Fault to the old leader streaming again as a replica.
    pub old_leader_rejoined_s: Option<f64>,
    /// Fault to what was hit being back: the old leader streaming again (when the leader
    /// changed), the replica streaming again, or etcd on the hit hosts healthy again.
    pub back_s: Option<f64>,
    /// The synchronous standby while the killed one was down (kill-sync-standby).
    pub sync_standby_during: Option<String>,
    /// etcd's leader before the fault and during it (kill-etcd-leader).
    pub etcd_leader_before: Option<String>,
    pub etcd_leader_after: Option<String>,
    pub max_downtime_s: f64,
    /// Where `max_downtime_s` came from: `--max-downtime` or the mode's default.
    pub max_downtime_from: String,
    pub max_lost: u64,
    pub passed: bool,
    /// Why it did not pass.
    pub problems: Vec<String>,
}

/// The report as a table.
pub fn table(r: &Report) -> String {
    rows(r)
        .iter()
        .map(|(k, v)| format!("{k:<34} {v}\n"))
        .collect()
}

/// The report's figures, a (name, value) row each, the result last.
pub fn rows(r: &Report) -> Vec<(&'static str, String)> {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{s:.3} s"));
    let name = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    vec![
        ("mode", r.mode.to_string()),
        ("path", r.path.clone()),
        ("expected", r.expected.clone()),
        ("hit", r.hit.join(", ")),
        ("old leader", r.old_leader.clone()),
        (
            "new leader",
            r.new_leader.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "write downtime",
            format!(
                "{} (at most {} s: {})",
                opt(r.write_downtime_s),
                r.max_downtime_s,
                r.max_downtime_from
            ),
        ),
        ("write gap in the database", opt(r.db_write_gap_s)),
        ("leader key lost after", opt(r.leader_key_lost_s)),
        ("new leader key after", opt(r.leader_elected_s)),
        ("acknowledged writes", r.acked_writes.to_string()),
        (
            "acknowledged writes lost",
            format!("{} (at most {})", r.lost_acked_writes, r.max_lost),
        ),
        ("duplicated writes", r.duplicated_writes.to_string()),
        (
            "timeline",
            format!(
                "{} -> {}",
                r.timeline_before.map_or("-".into(), |t| t.to_string()),
                r.timeline_after.map_or("-".into(), |t| t.to_string())
            ),
        ),
        (
            "split brain",
            if r.split_brain { "YES" } else { "no" }.to_string(),
        ),
        (
            "acked by a former primary",
            r.stale_primary_acks.to_string(),
        ),
        (
            "VIP before -> after",
            r.vip.as_ref().map_or("-".into(), |v| {
                format!("{} -> {}", name(&v.holder_before), name(&v.holder_after))
            }),
        ),
        (
            "VIP 2 hosts / unheld / off leader",
            r.vip.as_ref().map_or("-".into(), |v| {
                format!(
                    "{:.1} s / {:.1} s / {:.1} s ({} samples)",
                    v.on_two_hosts_s, v.unheld_max_s, v.off_leader_max_s, v.samples
                )
            }),
        ),
        (
            "old leader streaming again after",
            opt(r.old_leader_rejoined_s),
        ),
        ("hit member back after", opt(r.back_s)),
        (
            "sync standby during the fault",
            name(&r.sync_standby_during),
        ),
        (
            "etcd leader before -> during",
            format!(
                "{} -> {}",
                name(&r.etcd_leader_before),
                name(&r.etcd_leader_after)
            ),
        ),
        (
            "result",
            if r.passed {
                "PASSED".to_string()
            } else {
                format!("FAILED: {}", r.problems.join("; "))
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            mode: Mode::KillNode,
            path: "direct".into(),
            expected: "a replica takes over".into(),
            hit: vec!["pg-a".into()],
            old_leader: "pg-a".into(),
            new_leader: Some("pg-b".into()),
            write_downtime_s: Some(5.05),
            db_write_gap_s: Some(5.049),
            leader_key_lost_s: Some(1.0),
            leader_elected_s: None,
            acked_writes: 15,
            lost_acked_writes: 1,
            duplicated_writes: 0,
            timeline_before: Some(3),
            timeline_after: Some(4),
            split_brain: false,
            stale_primary_acks: 0,
            vip: None,
            old_leader_rejoined_s: Some(20.0),
            back_s: Some(20.0),
            sync_standby_during: None,
            etcd_leader_before: None,
            etcd_leader_after: None,
            max_downtime_s: 45.0,
            max_downtime_from: "--max-downtime".into(),
            max_lost: 0,
            passed: false,
            problems: vec!["1 acknowledged writes lost (at most 0 allowed)".into()],
        }
    }

    #[test]
    fn the_json_report_has_the_fields_the_readme_documents() {
        let json = serde_json::to_value(report()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "mode",
                "path",
                "expected",
                "hit",
                "old_leader",
                "new_leader",
                "write_downtime_s",
                "db_write_gap_s",
                "leader_key_lost_s",
                "leader_elected_s",
                "acked_writes",
                "lost_acked_writes",
                "duplicated_writes",
                "timeline_before",
                "timeline_after",
                "split_brain",
                "stale_primary_acks",
                "vip",
                "old_leader_rejoined_s",
                "back_s",
                "sync_standby_during",
                "etcd_leader_before",
                "etcd_leader_after",
                "max_downtime_s",
                "max_downtime_from",
                "max_lost",
                "passed",
                "problems",
            ]
        );
        assert_eq!(json["mode"], "kill-node");
        assert_eq!(json["leader_elected_s"], serde_json::Value::Null);
    }

    #[test]
    fn the_table_has_a_row_per_figure_and_the_result_last() {
        assert_eq!(
            table(&report()),
            "\
mode                               kill-node
path                               direct
expected                           a replica takes over
hit                                pg-a
old leader                         pg-a
new leader                         pg-b
write downtime                     5.050 s (at most 45 s: --max-downtime)
write gap in the database          5.049 s
leader key lost after              1.000 s
new leader key after               -
acknowledged writes                15
acknowledged writes lost           1 (at most 0)
duplicated writes                  0
timeline                           3 -> 4
split brain                        no
acked by a former primary          0
VIP before -> after                -
VIP 2 hosts / unheld / off leader  -
old leader streaming again after   20.000 s
hit member back after              20.000 s
sync standby during the fault      -
etcd leader before -> during       - -> -
result                             FAILED: 1 acknowledged writes lost (at most 0 allowed)
"
        );
    }
}
