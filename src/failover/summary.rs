//! `--repeat N`: every run's report, and each figure's min / median / max over the runs, as JSON
//! (`{"runs", "summary", "passed", "error"}`) and as text (a line per run, then a table).

use indexmap::IndexMap;
use serde::Serialize;

use super::Report;

/// A figure over the runs that have it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct Repeated {
    pub runs: Vec<Report>,
    /// Each figure by its report field's name; a figure no run has is left out.
    pub summary: IndexMap<&'static str, Spread>,
    /// Every run passed, and none failed to give a report.
    pub passed: bool,
    /// Why the run after the last one gave no report (the repeat stopped there).
    pub error: Option<String>,
}

impl Repeated {
    /// `runs`, and the error of the run that stopped the repeat, if one did.
    pub fn of(runs: Vec<Report>, error: Option<String>) -> Repeated {
        Repeated {
            summary: summary(&runs),
            passed: error.is_none() && runs.iter().all(|r| r.passed),
            runs,
            error,
        }
    }
}

/// The figures a run measured, by their report field names.
fn figures(r: &Report) -> [(&'static str, Option<f64>); 9] {
    [
        ("write_downtime_s", r.write_downtime_s),
        ("db_write_gap_s", r.db_write_gap_s),
        ("leader_key_lost_s", r.leader_key_lost_s),
        ("leader_elected_s", r.leader_elected_s),
        ("old_leader_rejoined_s", r.old_leader_rejoined_s),
        ("back_s", r.back_s),
        ("acked_writes", Some(r.acked_writes as f64)),
        ("lost_acked_writes", Some(r.lost_acked_writes as f64)),
        ("duplicated_writes", Some(r.duplicated_writes as f64)),
    ]
}

fn summary(runs: &[Report]) -> IndexMap<&'static str, Spread> {
    let mut values: IndexMap<&'static str, Vec<f64>> = IndexMap::new();
    for run in runs {
        for (name, value) in figures(run) {
            let seen = values.entry(name).or_default();
            seen.extend(value);
        }
    }
    values
        .into_iter()
        .filter_map(|(name, v)| Some((name, spread(v)?)))
        .collect()
}

/// Min, median (the mean of the middle two of an even count) and max; None for no values.
fn spread(mut values: Vec<f64>) -> Option<Spread> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    };
    Some(Spread {
        min: values[0],
        median: (median * 1000.0).round() / 1000.0,
        max: values[n - 1],
    })
}

/// Run `i` of `n` on one line.
pub fn run_line(i: usize, n: usize, r: &Report) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{s:.3} s"));
    let result = if r.passed {
        "PASSED".to_string()
    } else {
        format!("FAILED: {}", r.problems.join("; "))
    };
    format!(
        "run {i}/{n}: write downtime {} (at most {} s), acked {}, lost {}, duplicated {}, leader {} -> {}, back after {}: {result}",
        opt(r.write_downtime_s),
        r.max_downtime_s,
        r.acked_writes,
        r.lost_acked_writes,
        r.duplicated_writes,
        r.old_leader,
        r.new_leader.as_deref().unwrap_or("-"),
        opt(r.back_s),
    )
}

/// The summary as a table, and the result.
pub fn table(rep: &Repeated) -> String {
    let mut out = String::new();
    if !rep.summary.is_empty() {
        out.push_str(&format!(
            "{:<24} {:>10} {:>10} {:>10}\n",
            "figure", "min", "median", "max"
        ));
    }
    for (name, s) in &rep.summary {
        out.push_str(&format!(
            "{name:<24} {:>10} {:>10} {:>10}\n",
            s.min, s.median, s.max
        ));
    }
    let passed = rep.runs.iter().filter(|r| r.passed).count();
    out.push_str(&format!(
        "result: {passed} of {} runs passed{}\n",
        rep.runs.len(),
        rep.error.as_ref().map_or(String::new(), |e| format!(
            "; then a run gave no report: {e}"
        ))
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::Mode;

    fn run(downtime: f64, acked: usize, back: Option<f64>, passed: bool) -> Report {
        Report {
            mode: Mode::Switchover,
            path: "direct".into(),
            expected: "a new leader".into(),
            hit: vec!["pg-a".into()],
            old_leader: "pg-a".into(),
            new_leader: Some("pg-b".into()),
            write_downtime_s: Some(downtime),
            db_write_gap_s: None,
            leader_key_lost_s: None,
            leader_elected_s: None,
            acked_writes: acked,
            lost_acked_writes: 0,
            duplicated_writes: 0,
            timeline_before: Some(3),
            timeline_after: Some(4),
            split_brain: false,
            stale_primary_acks: 0,
            vip: None,
            old_leader_rejoined_s: back,
            back_s: back,
            sync_standby_during: None,
            etcd_leader_before: None,
            etcd_leader_after: None,
            max_downtime_s: 2.0,
            max_downtime_from: "the switchover default".into(),
            max_lost: 0,
            passed,
            problems: if passed {
                Vec::new()
            } else {
                vec!["write downtime 2.5 s is over the 2 s allowed".into()]
            },
        }
    }

    #[test]
    fn each_figure_has_its_min_median_and_max_over_the_runs_that_have_it() {
        let rep = Repeated::of(
            vec![
                run(1.9, 400, Some(12.0), true),
                run(1.8, 420, None, true),
                run(2.0, 410, Some(14.0), true),
            ],
            None,
        );
        assert!(rep.passed);
        let s = |name| rep.summary[name];
        assert_eq!(
            s("write_downtime_s"),
            Spread {
                min: 1.8,
                median: 1.9,
                max: 2.0
            }
        );
        assert_eq!(s("acked_writes").median, 410.0);
        // Two runs have it: the median is their mean.
        assert_eq!(s("back_s").median, 13.0);
        assert!(!rep.summary.contains_key("db_write_gap_s"));
        let json = serde_json::to_value(&rep).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["runs", "summary", "passed", "error"]);
        assert_eq!(json["summary"]["write_downtime_s"]["median"], 1.9);
    }

    #[test]
    fn one_failed_run_or_a_run_without_report_fails_the_repeat() {
        assert!(
            !Repeated::of(
                vec![run(1.0, 1, None, true), run(2.5, 1, None, false)],
                None
            )
            .passed
        );
        let stopped = Repeated::of(vec![run(1.0, 1, None, true)], Some("run 2 of 3: no".into()));
        assert!(!stopped.passed);
        assert!(table(&stopped)
            .ends_with("result: 1 of 1 runs passed; then a run gave no report: run 2 of 3: no\n"));
    }

    #[test]
    fn a_run_is_one_line_with_its_problems() {
        assert_eq!(
            run_line(2, 3, &run(2.5, 400, Some(12.0), false)),
            "run 2/3: write downtime 2.500 s (at most 2 s), acked 400, lost 0, duplicated 0, leader pg-a -> pg-b, back after 12.000 s: FAILED: write downtime 2.5 s is over the 2 s allowed"
        );
    }
}
