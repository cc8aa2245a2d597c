//! The Grafana dashboards in `dashboards/` against the lab's live data: every query of every
//! panel parses in the lab's Prometheus and returns series. A panel whose metric was renamed, or
//! never exported, fails here instead of showing "No data" on the day it is needed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, lab};
use serde_json::Value;

/// Every dashboard: (file name, its JSON).
fn dashboards() -> Vec<(String, Value)> {
    let dir = common::repo().join("dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a dashboard");
            let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name(&p), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

#[test]
fn the_dashboards_are_grafana_dashboards_on_the_provisioned_datasource() {
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "cluster-overview.json",
            "etcd.json",
            "hosts.json",
            "postgresql.json",
            "prober.json"
        ]
    );
    let mut uids = Vec::new();
    for (file, d) in &all {
        assert!(
            d["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("hactl: ")),
            "{file}"
        );
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(!uids.contains(&uid), "{file}: uid {uid} twice");
        uids.push(uid);
        let panels = d["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{file}");
        for p in panels {
            assert_eq!(p["datasource"]["uid"], "hactl-prometheus", "{file}: {p}");
            assert!(p["gridPos"]["w"].as_u64().is_some(), "{file}: {p}");
            assert!(
                p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "{file}: a panel without a query: {p}"
            );
        }
    }
    // Role grafana's provisioning names that datasource: tests/stack_observe.rs.
}

#[test]
fn every_query_of_every_panel_parses_and_returns_series_from_the_labs_prometheus() {
    let mut lab = lab();
    lab.stack();
    let queries: Vec<(String, String, String)> = dashboards()
        .into_iter()
        .flat_map(|(file, d)| {
            d["panels"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .flat_map(move |p| {
                    let file = file.clone();
                    let title = p["title"].as_str().unwrap_or("").to_string();
                    p["targets"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |t| {
                            (
                                file.clone(),
                                title.clone(),
                                t["expr"].as_str().unwrap_or("").to_string(),
                            )
                        })
                })
        })
        .collect();
    assert!(queries.len() >= 30, "{} queries", queries.len());
    // Rates need two scrapes in their window: a freshly built stack gets a few minutes.
    eventually(
        "every dashboard query returns series",
        Duration::from_secs(300),
        || {
            let mut failing = Vec::new();
            for (file, title, expr) in &queries {
                let answer = lab.prometheus(expr);
                if answer["status"] != "success" {
                    failing.push(format!("{file} {title:?}: {expr}: {answer}"));
                } else if answer["data"]["result"]
                    .as_array()
                    .is_none_or(|r| r.is_empty())
                {
                    failing.push(format!("{file} {title:?}: {expr}: no series"));
                }
            }
            if failing.is_empty() {
                Ok(())
            } else {
                Err(failing.join("\n"))
            }
        },
    );
}
