//! `patroni_restart`: restarts the members where Patroni reports `pending_restart` — replicas
//! first, one at a time, then a switchover away from the leader, then the old leader — so a
//! parameter that needs a restart never costs more than one switchover.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{request, Auth};
use super::{de_u64, fail, Ctx, Outcome, Result, Spec};

pub const SPEC: Spec = Spec {
    name: "patroni_restart",
    args: &["url", "username", "password", "timeout"],
    required: &["url", "username", "password"],
    free_form: false,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The REST API of any member: `http://10.0.0.11:8008`.
    pub url: String,
    pub username: String,
    pub password: String,
    /// Seconds to wait for each member (default 300).
    #[serde(default, deserialize_with = "de_u64")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone)]
struct Member {
    name: String,
    role: String,
    state: String,
    api: String,
    pending: bool,
}

async fn cluster(ctx: &Ctx<'_>, base: &str) -> Result<Vec<Member>> {
    let resp = request(ctx, "GET", &format!("{base}/cluster"), None, None).await?;
    let Some(body) = resp.json().filter(|_| resp.status == 200) else {
        return fail(format!(
            "GET {base}/cluster: status {} {}",
            resp.status,
            resp.body.trim()
        ));
    };
    let members = body["members"].as_array().cloned().unwrap_or_default();
    Ok(members
        .iter()
        .map(|m| Member {
            name: m["name"].as_str().unwrap_or_default().to_string(),
            role: m["role"].as_str().unwrap_or_default().to_string(),
            state: m["state"].as_str().unwrap_or_default().to_string(),
            api: m["api_url"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches("/patroni")
                .to_string(),
            pending: m["pending_restart"].as_bool().unwrap_or(false),
        })
        .collect())
}

/// Polls the cluster until `done` holds, or fails after `timeout`.
async fn wait_until(
    ctx: &Ctx<'_>,
    base: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[Member]) -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(members) = cluster(ctx, base).await {
            if done(&members) {
                return Ok(());
            }
        }
        if start.elapsed() > timeout {
            return fail(format!(
                "timed out after {} s waiting for {what}",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Running again. (Not "no longer pending": Patroni 3.0.2 keeps pending_restart on replicas
/// whose max_connections it sets on the command line, restart or not.)
fn running(members: &[Member], name: &str) -> bool {
    members
        .iter()
        .any(|m| m.name == name && matches!(m.state.as_str(), "running" | "streaming"))
}

pub async fn run_patroni_restart(args: &Args, ctx: &Ctx<'_>) -> Result<Outcome> {
    let base = args.url.trim_end_matches('/');
    let timeout = Duration::from_secs(args.timeout.unwrap_or(300));
    let auth = Some(Auth {
        user: &args.username,
        password: &args.password,
    });
    let members = match cluster(ctx, base).await {
        // A cluster that is not running yet has nothing to restart.
        Err(_) if ctx.check => return Ok(Outcome::ok()),
        other => other?,
    };
    let pending: Vec<Member> = members.iter().filter(|m| m.pending).cloned().collect();
    if pending.is_empty() {
        return Ok(Outcome::ok());
    }
    let leader = members.iter().find(|m| m.role == "leader").cloned();
    let leader_pending = leader.as_ref().is_some_and(|l| l.pending);
    let mut notes: Vec<String> = pending
        .iter()
        .filter(|m| m.role != "leader")
        .map(|m| format!("restarted {}", m.name))
        .collect();
    if ctx.check {
        if let Some(l) = leader.as_ref().filter(|l| l.pending) {
            notes.push(format!("switched over from {} and restarted it", l.name));
        }
        return Ok(Outcome::changed(notes.join(", ")));
    }
    for m in pending.iter().filter(|m| m.role != "leader") {
        let resp = request(
            ctx,
            "POST",
            &format!("{}/restart", m.api),
            auth,
            Some(&json!({})),
        )
        .await?;
        if resp.status != 200 {
            return fail(format!(
                "restart of {}: status {} {}",
                m.name,
                resp.status,
                resp.body.trim()
            ));
        }
        wait_until(
            ctx,
            base,
            timeout,
            &format!("{} to run again", m.name),
            |ms| running(ms, &m.name),
        )
        .await?;
    }
    if let (Some(old), true) = (leader, leader_pending) {
        // In synchronous mode only the synchronous standby may take over; after the replica
        // restarts it takes Patroni a loop or two to name one again.
        let config = request(ctx, "GET", &format!("{base}/config"), None, None).await?;
        let sync_mode = config
            .json()
            .is_some_and(|c| c["synchronous_mode"].as_bool() == Some(true));
        if sync_mode {
            wait_until(ctx, base, timeout, "a running synchronous standby", |ms| {
                ms.iter()
                    .any(|m| m.role == "sync_standby" && running(ms, &m.name))
            })
            .await?;
        }
        let members = cluster(ctx, base).await?;
        let candidate = members
            .iter()
            .filter(|m| m.name != old.name && running(&members, &m.name))
            .find(|m| !sync_mode || m.role == "sync_standby")
            .cloned();
        let Some(candidate) = candidate else {
            return fail(format!(
                "{} needs a restart, but no healthy replica can take over",
                old.name
            ));
        };
        let body: Value = json!({"leader": old.name, "candidate": candidate.name});
        let resp = request(
            ctx,
            "POST",
            &format!("{base}/switchover"),
            auth,
            Some(&body),
        )
        .await?;
        if resp.status != 200 {
            return fail(format!(
                "switchover to {}: status {} {}",
                candidate.name,
                resp.status,
                resp.body.trim()
            ));
        }
        wait_until(
            ctx,
            base,
            timeout,
            &format!("{} to lead", candidate.name),
            |ms| {
                ms.iter()
                    .any(|m| m.name == candidate.name && m.role == "leader")
                    && ms.iter().any(|m| {
                        m.name == old.name && matches!(m.state.as_str(), "running" | "streaming")
                    })
            },
        )
        .await?;
        let after = cluster(ctx, base).await?;
        if after.iter().any(|m| m.name == old.name && m.pending) {
            let resp = request(
                ctx,
                "POST",
                &format!("{}/restart", old.api),
                auth,
                Some(&json!({})),
            )
            .await?;
            if resp.status != 200 {
                return fail(format!(
                    "restart of {}: status {} {}",
                    old.name,
                    resp.status,
                    resp.body.trim()
                ));
            }
            wait_until(
                ctx,
                base,
                timeout,
                &format!("{} to run again", old.name),
                |ms| running(ms, &old.name),
            )
            .await?;
        }
        notes.push(format!(
            "switched over from {} to {} and restarted it",
            old.name, candidate.name
        ));
    }
    Ok(Outcome::changed(notes.join(", ")))
}
