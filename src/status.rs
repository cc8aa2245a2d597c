//! `hactl status`: the cluster on one screen, as an operator checks it — Patroni's members
//! (`patronictl list`'s columns), etcd's members and health, the endpoint, the newest backups and
//! the alerts firing — and whether it is healthy (the exit code).

use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;

use crate::inventory::Inventory;
use crate::stack::patroni::{Client, Role};
use crate::stack::{Login, Stack};

/// Replicas lagging more than this are not streaming (the prober's default).
const MAX_LAG: u64 = 16 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(3);

/// One PostgreSQL member as the cluster sees it; `role` `down` when Patroni does not list it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub name: String,
    pub address: String,
    pub role: String,
    pub state: String,
    pub timeline: Option<u64>,
    pub lag_bytes: Option<u64>,
    pub pending_restart: bool,
}

/// One etcd member.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdStatus {
    pub name: String,
    pub endpoint: String,
    pub healthy: bool,
    pub leader: bool,
    pub db_size_bytes: Option<i64>,
    /// Why it is not healthy.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    pub address: String,
    pub rw_port: u16,
    pub reachable: bool,
}

/// The newest backup of one type.
#[derive(Debug, Clone, Serialize)]
pub struct BackupStatus {
    #[serde(rename = "type")]
    pub kind: String,
    pub label: String,
    pub age_s: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub name: String,
    pub severity: String,
    pub summary: String,
}

/// Everything `hactl status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub scope: String,
    pub leader: Option<String>,
    pub members: Vec<MemberStatus>,
    pub etcd: Vec<EtcdStatus>,
    pub endpoint: Option<EndpointStatus>,
    /// None: the inventory has no backup host; empty: the repository could not be read.
    pub backups: Option<Vec<BackupStatus>>,
    pub backups_error: Option<String>,
    /// None: no monitoring host answered.
    pub alerts: Option<Vec<Alert>>,
    /// The monitoring host whose Prometheus answered.
    pub alerts_from: Option<String>,
    /// What is wrong, in words a user acts on; empty: healthy.
    pub problems: Vec<String>,
}

impl Status {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads the cluster's state; every part is asked at once, each within a few seconds.
pub async fn read(inventory: &Inventory, stack: &Stack) -> Status {
    let tls = stack.client_tls().ok();
    let (cluster, etcd, endpoint, backups, answered) = tokio::join!(
        patroni(stack, tls.as_ref()),
        etcd(stack, tls.as_ref()),
        endpoint(stack),
        backups(inventory, stack),
        alerts(stack, tls.as_ref()),
    );
    let mut problems = Vec::new();
    if tls.is_none() {
        problems.push("no client certificate: run hactl apply first".to_string());
    }
    let expected: Vec<String> = stack.postgres.iter().map(|m| m.name.clone()).collect();
    let mut leader = None;
    let members = match &cluster {
        Some(c) => {
            problems.extend(c.problems(&expected, MAX_LAG));
            leader = c.leader().map(|l| l.name.clone());
            stack
                .postgres
                .iter()
                .map(|m| match c.member(&m.name) {
                    Some(p) => MemberStatus {
                        name: m.name.clone(),
                        address: m.address.clone(),
                        role: role_name(&p.role).to_string(),
                        state: p.state.name().to_string(),
                        timeline: p.timeline,
                        lag_bytes: if p.is_leader() { None } else { p.lag },
                        pending_restart: p.pending_restart,
                    },
                    None => MemberStatus {
                        name: m.name.clone(),
                        address: m.address.clone(),
                        role: "down".into(),
                        state: "not in the cluster".into(),
                        timeline: None,
                        lag_bytes: None,
                        pending_restart: false,
                    },
                })
                .collect()
        }
        None => {
            problems.push("no member's Patroni REST API answers".into());
            Vec::new()
        }
    };
    let healthy = etcd.iter().filter(|e| e.healthy).count();
    if !crate::stack::etcd::has_quorum(healthy, etcd.len()) {
        problems.push(format!(
            "etcd has no quorum: {healthy} of {} members healthy",
            etcd.len()
        ));
    }
    for e in etcd.iter().filter(|e| !e.healthy) {
        problems.push(format!(
            "etcd member {} is not healthy: {}",
            e.name,
            e.error.as_deref().unwrap_or("no leader")
        ));
    }
    if let Some(e) = endpoint.as_ref().filter(|e| !e.reachable) {
        problems.push(format!(
            "the endpoint {}:{} takes no connection",
            e.address, e.rw_port
        ));
    }
    let (backups, backups_error) = match backups {
        None => (None, None),
        Some(Ok(b)) => (Some(b), None),
        Some(Err(e)) => (Some(Vec::new()), Some(e)),
    };
    Status {
        scope: stack.scope.clone(),
        leader,
        members,
        etcd,
        endpoint,
        backups,
        backups_error,
        alerts_from: answered.as_ref().map(|a| a.0.clone()),
        alerts: answered.map(|a| a.1),
        problems,
    }
}

/// `/cluster` from the first member that answers.
async fn patroni(
    stack: &Stack,
    tls: Option<&crate::stack::tls::ClientTls>,
) -> Option<crate::stack::patroni::Cluster> {
    let client = Client::new(TIMEOUT, tls).ok()?;
    let client = &client;
    let asks = stack
        .postgres
        .iter()
        .map(|m| async move { client.cluster(&m.api_url()).await.ok() });
    join_all(asks).await.into_iter().flatten().next()
}

/// A role as Patroni names it.
fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::StandbyLeader => "standby_leader",
        Role::SyncStandby => "sync_standby",
        Role::Replica => "replica",
        Role::Other => "other",
    }
}

async fn etcd(stack: &Stack, tls: Option<&crate::stack::tls::ClientTls>) -> Vec<EtcdStatus> {
    let asks = stack.etcd.iter().map(|m| async move {
        let url = m.client_url();
        let status = async {
            let mut c = crate::stack::etcd::connect(std::slice::from_ref(&url), TIMEOUT, tls)
                .await
                .map_err(|e| e.to_string())?;
            c.status().await.map_err(|e| format!("status: {e}"))
        }
        .await;
        match status {
            Ok(s) => EtcdStatus {
                name: m.name.clone(),
                endpoint: url,
                healthy: s.leader() != 0,
                leader: s.leader() != 0 && s.leader() == s.header().map_or(0, |h| h.member_id()),
                db_size_bytes: Some(s.db_size()),
                error: (s.leader() == 0).then(|| "knows no leader".to_string()),
            },
            Err(e) => EtcdStatus {
                name: m.name.clone(),
                endpoint: url,
                healthy: false,
                leader: false,
                db_size_bytes: None,
                error: Some(e),
            },
        }
    });
    join_all(asks).await
}

async fn endpoint(stack: &Stack) -> Option<EndpointStatus> {
    let e = stack.endpoint.as_ref().filter(|e| e.declared)?;
    let addr = format!("{}:{}", e.address, e.rw_port);
    let reachable = matches!(
        tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(&addr)).await,
        Ok(Ok(_))
    );
    Some(EndpointStatus {
        address: e.address.clone(),
        rw_port: e.rw_port,
        reachable,
    })
}

/// The newest backup of each type, from the repository host (over SSH).
async fn backups(
    inventory: &Inventory,
    stack: &Stack,
) -> Option<Result<Vec<BackupStatus>, String>> {
    stack.backup.as_ref()?;
    let read = async {
        let repo = crate::backup::Repository::connect(inventory, stack)
            .await
            .map_err(|e| e.to_string())?;
        let listing = repo.list().await.map_err(|e| e.to_string());
        repo.session.close().await;
        listing
    };
    let listing = match tokio::time::timeout(Duration::from_secs(20), read).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return Some(Err(e)),
        Err(_) => return Some(Err("the repository host did not answer within 20 s".into())),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut newest: Vec<BackupStatus> = Vec::new();
    for kind in ["full", "diff", "incr"] {
        if let Some(b) = listing
            .backups
            .iter()
            .filter(|b| b.kind == kind)
            .max_by_key(|b| b.unix_stop)
        {
            newest.push(BackupStatus {
                kind: kind.into(),
                label: b.label.clone(),
                age_s: (now - b.unix_stop).max(0),
            });
        }
    }
    Some(Ok(newest))
}

/// The alerts firing, from the first monitoring host's Prometheus that answers (and its name).
async fn alerts(
    stack: &Stack,
    tls: Option<&crate::stack::tls::ClientTls>,
) -> Option<(String, Vec<Alert>)> {
    let creds = stack.login(Login::Monitoring).ok()?;
    let mut b = reqwest::Client::builder().timeout(TIMEOUT);
    if let Some(tls) = tls {
        b = tls.reqwest(b).ok()?;
    }
    let client = b.build().ok()?;
    for m in &stack.monitoring {
        let Ok(resp) = client
            .get(format!("{}/api/v1/alerts", m.prometheus_url()))
            .basic_auth(&creds.user, Some(&creds.password))
            .send()
            .await
        else {
            continue;
        };
        let Ok(v) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        let mut firing: Vec<Alert> = v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| Alert {
                name: a["labels"]["alertname"].as_str().unwrap_or("?").to_string(),
                severity: a["labels"]["severity"].as_str().unwrap_or("").to_string(),
                summary: a["annotations"]["summary"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            })
            .collect();
        firing.sort_by(|a, b| (&a.severity, &a.name).cmp(&(&b.severity, &b.name)));
        return Some((m.name.clone(), firing));
    }
    None
}

/// Seconds as a user reads an age: `45 s`, `12 min`, `3 h`, `2 d`.
fn age(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / 1048576.0),
    }
}

/// The screen.
pub fn text(s: &Status) -> String {
    let mut out = format!(
        "Cluster {} — leader {}\n",
        s.scope,
        s.leader.as_deref().unwrap_or("NONE")
    );
    let rows: Vec<[String; 6]> = s
        .members
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.address.clone(),
                m.role.clone(),
                format!("{}{}", m.state, if m.pending_restart { " *" } else { "" }),
                m.timeline.map_or(String::new(), |t| t.to_string()),
                m.lag_bytes.map_or(String::new(), bytes),
            ]
        })
        .collect();
    out.push_str(&table(
        &["MEMBER", "HOST", "ROLE", "STATE", "TL", "LAG"],
        &rows,
    ));
    let healthy = s.etcd.iter().filter(|e| e.healthy).count();
    out.push_str(&format!(
        "\netcd: {healthy} of {} members healthy\n",
        s.etcd.len()
    ));
    let rows: Vec<[String; 4]> = s
        .etcd
        .iter()
        .map(|e| {
            [
                e.name.clone(),
                e.endpoint.clone(),
                if e.healthy {
                    if e.leader { "leader" } else { "healthy" }.to_string()
                } else {
                    format!("DOWN: {}", e.error.as_deref().unwrap_or(""))
                },
                e.db_size_bytes
                    .map_or(String::new(), |b| bytes(b.max(0) as u64)),
            ]
        })
        .collect();
    out.push_str(&table(&["MEMBER", "ENDPOINT", "STATE", "DB SIZE"], &rows));
    if let Some(e) = &s.endpoint {
        out.push_str(&format!(
            "\nendpoint {}:{}: {}\n",
            e.address,
            e.rw_port,
            if e.reachable {
                "takes connections"
            } else {
                "UNREACHABLE"
            }
        ));
    }
    match (&s.backups, &s.backups_error) {
        (Some(_), Some(e)) => out.push_str(&format!("\nbackups: cannot be read: {e}\n")),
        (Some(b), None) if b.is_empty() => out.push_str("\nbackups: none\n"),
        (Some(b), None) => {
            let newest: Vec<String> = b
                .iter()
                .map(|b| format!("{} {} ago ({})", b.kind, age(b.age_s), b.label))
                .collect();
            out.push_str(&format!("\nbackups: {}\n", newest.join(", ")));
        }
        (None, _) => {}
    }
    let from = s.alerts_from.as_deref().unwrap_or("?");
    match &s.alerts {
        None => out.push_str("\nalerts: no Prometheus answered\n"),
        Some(a) if a.is_empty() => out.push_str(&format!("\nalerts firing ({from}): none\n")),
        Some(a) => {
            out.push_str(&format!("\nalerts firing ({from}): {}\n", a.len()));
            for a in a {
                out.push_str(&format!("  {} ({}): {}\n", a.name, a.severity, a.summary));
            }
        }
    }
    if s.problems.is_empty() {
        out.push_str("\nhealthy\n");
    } else {
        out.push_str("\nproblems:\n");
        for p in &s.problems {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    out
}

/// Columns padded to their widest cell.
fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&width) {
            l.push_str(&format!("  {c:<w$}"));
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(problems: Vec<String>) -> Status {
        Status {
            scope: "hactl".into(),
            leader: Some("a".into()),
            members: vec![
                MemberStatus {
                    name: "a".into(),
                    address: "10.0.0.1".into(),
                    role: "leader".into(),
                    state: "running".into(),
                    timeline: Some(3),
                    lag_bytes: None,
                    pending_restart: false,
                },
                MemberStatus {
                    name: "bb".into(),
                    address: "10.0.0.2".into(),
                    role: "down".into(),
                    state: "not in the cluster".into(),
                    timeline: None,
                    lag_bytes: None,
                    pending_restart: false,
                },
            ],
            etcd: vec![],
            endpoint: None,
            backups: Some(vec![BackupStatus {
                kind: "full".into(),
                label: "L".into(),
                age_s: 7300,
            }]),
            backups_error: None,
            alerts: Some(vec![]),
            alerts_from: Some("m".into()),
            problems,
        }
    }

    #[test]
    fn the_screen_shows_members_backups_alerts_and_problems() {
        let t = text(&status(vec![
            "bb is not a member of the Patroni cluster".into()
        ]));
        assert!(t.starts_with("Cluster hactl — leader a\n"), "{t}");
        assert!(
            t.contains("  MEMBER  HOST      ROLE    STATE               TL  LAG\n"),
            "{t}"
        );
        assert!(
            t.contains("  bb      10.0.0.2  down    not in the cluster\n"),
            "{t}"
        );
        assert!(t.contains("backups: full 2 h ago (L)\n"), "{t}");
        assert!(t.contains("alerts firing (m): none\n"), "{t}");
        assert!(
            t.ends_with("problems:\n  - bb is not a member of the Patroni cluster\n"),
            "{t}"
        );
        assert!(text(&status(vec![])).ends_with("\nhealthy\n"));
    }

    #[test]
    fn ages_and_sizes_read_as_a_user_reads_them() {
        assert_eq!(age(45), "45 s");
        assert_eq!(age(600), "10 min");
        assert_eq!(age(10_800), "3 h");
        assert_eq!(age(3 * 86400), "3 d");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(2048), "2.0 KiB");
    }
}
