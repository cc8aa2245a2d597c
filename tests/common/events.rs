//! What `hactl apply --output json` reports: one JSON event per line.

use std::process::Output;

use serde_json::Value;

/// Every event of a run; each line must be one.
pub fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// (host, "role : task") of every task reported changed, in the order reported.
pub fn changed(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "task" && e["status"] == "changed")
        .map(|e| {
            (
                e["host"].as_str().unwrap_or_default().to_string(),
                format!(
                    "{} : {}",
                    e["role"].as_str().unwrap_or_default(),
                    e["task"].as_str().unwrap_or_default()
                ),
            )
        })
        .collect()
}

/// The recap's counts per host.
pub fn recap(events: &[Value]) -> Value {
    events
        .iter()
        .find(|e| e["event"] == "recap")
        .map(|e| e["hosts"].clone())
        .expect("a recap event")
}
