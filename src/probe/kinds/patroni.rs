//! `patroni`: the topology from a member's `/cluster`: exactly one leader, every member
//! running, every replica on the leader's timeline with a known lag under the bound.

use serde_json::Value;

use super::Ctx;

/// What a patroni probe remembers across runs and targets: the last leader it saw. (The
/// members it has series for are in `Metrics::patroni_members_of`.)
#[derive(Default)]
pub struct PatroniState {
    pub leader: Option<String>,
}

pub async fn run(
    ctx: &Ctx<'_>,
    client: &reqwest::Client,
    state: &std::sync::Mutex<PatroniState>,
) -> Result<(), String> {
    let p = ctx.probe;
    let url = if ctx.target.contains("://") {
        format!("{}/cluster", ctx.target.trim_end_matches('/'))
    } else {
        format!("http://{}/cluster", ctx.target)
    };
    let resp = client.get(url).send().await.map_err(|e| {
        if e.is_timeout() {
            "timed out".to_string()
        } else {
            format!("GET /cluster: {e}")
        }
    })?;
    if !resp.status().is_success() {
        return Err(format!("GET /cluster: status {}", resp.status().as_u16()));
    }
    let body: Value = resp
        .json()
        .await
        .map_err(|e| format!("GET /cluster: {e}"))?;
    let members = body["members"].as_array().cloned().unwrap_or_default();
    let name = |m: &Value| m["name"].as_str().unwrap_or_default().to_string();
    let leaders: Vec<&Value> = members
        .iter()
        .filter(|m| matches!(m["role"].as_str(), Some("leader" | "standby_leader")))
        .collect();
    let running = members
        .iter()
        .filter(|m| matches!(m["state"].as_str(), Some("running" | "streaming")))
        .count();
    let max_lag = p.patroni.max_lag_bytes.unwrap_or(16 << 20);
    let leader_tl = leaders.first().and_then(|l| l["timeline"].as_u64());
    let mut streaming = 0;
    let mut problems = Vec::new();
    let cluster = p.name.as_str();
    let m = ctx.metrics;
    for member in &members {
        if leaders.iter().any(|l| name(l) == name(member)) {
            continue;
        }
        let lag = member["lag"].as_u64();
        if let Some(lag) = lag {
            m.patroni_lag
                .with_label_values(&[cluster, &name(member)])
                .set(lag as f64);
        }
        let on_timeline = leader_tl.is_some() && member["timeline"].as_u64() == leader_tl;
        match lag {
            Some(lag) if on_timeline && lag <= max_lag => streaming += 1,
            Some(lag) if on_timeline => problems.push(format!("{} lags {lag} bytes", name(member))),
            _ if !on_timeline => problems.push(format!(
                "{} is on timeline {}, the leader on {}",
                name(member),
                member["timeline"]
                    .as_u64()
                    .map_or("?".into(), |t| t.to_string()),
                leader_tl.map_or("?".into(), |t| t.to_string())
            )),
            _ => problems.push(format!("{} is not streaming", name(member))),
        }
    }
    m.patroni_leaders
        .with_label_values(&[cluster])
        .set(leaders.len() as i64);
    m.patroni_members
        .with_label_values(&[cluster])
        .set(members.len() as i64);
    m.patroni_running
        .with_label_values(&[cluster])
        .set(running as i64);
    m.patroni_streaming
        .with_label_values(&[cluster])
        .set(streaming);
    if let Some(tl) = leader_tl {
        m.patroni_timeline
            .with_label_values(&[cluster])
            .set(tl as i64);
    }
    {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let now: Vec<String> = members.iter().map(name).collect();
        let before = m
            .patroni_members_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cluster.to_string(), now.clone())
            .unwrap_or_default();
        for gone in before.iter().filter(|g| !now.contains(g)) {
            let _ = m.patroni_lag.remove_label_values(&[cluster, gone]);
            let _ = m.patroni_leader.remove_label_values(&[cluster, gone]);
        }
        if leaders.len() == 1 {
            let leader = name(leaders[0]);
            if st.leader.as_deref() != Some(leader.as_str()) {
                if let Some(old) = &st.leader {
                    m.patroni_leader_changes.with_label_values(&[cluster]).inc();
                    tracing::warn!(probe = %p.name, from = %old, to = %leader, "leader changed");
                }
                st.leader = Some(leader.clone());
            }
            let _ = m.patroni_lag.remove_label_values(&[cluster, &leader]);
            for member in &now {
                m.patroni_leader
                    .with_label_values(&[cluster, member])
                    .set(i64::from(*member == leader));
            }
        }
    }
    if leaders.len() != 1 {
        return Err(format!("{} leaders", leaders.len()));
    }
    if running < members.len() {
        let down: Vec<String> = members
            .iter()
            .filter(|m| !matches!(m["state"].as_str(), Some("running" | "streaming")))
            .map(|m| format!("{} is {}", name(m), m["state"].as_str().unwrap_or("?")))
            .collect();
        problems.extend(down);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
