//! Patroni's REST API, typed: one `Member` as `/cluster` shows it, and the one definition each of
//! leader, running, streaming and healthy that apply, failover-test and the prober share.

use std::time::Duration;

use super::tls::ClientTls;

use serde::Deserialize;

/// A member's role as `/cluster` names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Leader,
    /// The leader of a standby cluster (replicating from another cluster): leads this one.
    StandbyLeader,
    SyncStandby,
    Replica,
    #[serde(other)]
    Other,
}

/// A member's state. Patroni 3.0.2 says `running` for a streaming replica; 3.1 and later say
/// `streaming`. States hactl does not act on keep Patroni's words, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running,
    Streaming,
    Stopped,
    StartFailed,
    Crashed,
    Other(String),
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<State, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "running" => State::Running,
            "streaming" => State::Streaming,
            "stopped" => State::Stopped,
            "start failed" => State::StartFailed,
            "crashed" => State::Crashed,
            other => State::Other(other.to_string()),
        })
    }
}

/// One member as `/cluster` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    pub name: String,
    pub role: Role,
    pub state: State,
    #[serde(default)]
    pub timeline: Option<u64>,
    /// Bytes behind the leader (Patroni reports `"unknown"` when it cannot tell: None).
    #[serde(default, deserialize_with = "lag")]
    pub lag: Option<u64>,
    #[serde(default)]
    pub pending_restart: bool,
}

fn lag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_u64())
}

impl State {
    /// As Patroni writes it.
    pub fn name(&self) -> &str {
        match self {
            State::Running => "running",
            State::Streaming => "streaming",
            State::Stopped => "stopped",
            State::StartFailed => "start failed",
            State::Crashed => "crashed",
            State::Other(words) => words,
        }
    }
}

impl Member {
    /// Leads the cluster: the leader, or the standby leader of a standby cluster.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader | Role::StandbyLeader)
    }

    /// PostgreSQL is up and Patroni manages it.
    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running | State::Streaming)
    }
}

/// `/cluster`: the members as one member sees them.
#[derive(Debug, Clone, Deserialize)]
pub struct Cluster {
    #[serde(default)]
    pub members: Vec<Member>,
}

/// Why a cluster is not healthy, in words a user acts on.
pub type Problems = Vec<String>;

/// A REST API call that failed: what was asked and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ApiError(pub String);

impl Cluster {
    pub fn parse(body: &str) -> Result<Cluster, ApiError> {
        serde_json::from_str(body).map_err(|e| ApiError(format!("not Patroni's /cluster: {e}")))
    }

    pub fn leaders(&self) -> Vec<&Member> {
        self.members.iter().filter(|m| m.is_leader()).collect()
    }

    /// The one running leader, if there is exactly one.
    pub fn leader(&self) -> Option<&Member> {
        match self.leaders().as_slice() {
            [l] if l.is_running() => Some(l),
            _ => None,
        }
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    pub fn replicas(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.is_leader())
    }

    /// The running synchronous standby, if any.
    pub fn sync_standby(&self) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.role == Role::SyncStandby && m.is_running())
    }

    /// A replica that is running, on the leader's timeline and within `max_lag` bytes: it
    /// streams (Patroni 3.0.2 has no `streaming` state, so this is what streaming means here).
    pub fn is_streaming(&self, member: &Member, max_lag: u64) -> bool {
        self.replica_problem(member, max_lag).is_none()
    }

    fn replica_problem(&self, m: &Member, max_lag: u64) -> Option<String> {
        let leader = self.leader();
        let leader_tl = leader.and_then(|l| l.timeline);
        let tl = |t: Option<u64>| t.map_or("?".into(), |t| t.to_string());
        if !m.is_running() {
            return Some(format!("{} is {}", m.name, m.state.name()));
        }
        if leader_tl.is_none() || m.timeline != leader_tl {
            // A replica left on an old timeline (a diverged former leader) never catches up.
            return Some(format!(
                "{} is on timeline {}, the leader {} on {}",
                m.name,
                tl(m.timeline),
                leader.map_or("?", |l| l.name.as_str()),
                tl(leader_tl)
            ));
        }
        match m.lag {
            Some(lag) if lag <= max_lag => None,
            Some(lag) => Some(format!("{} lags {lag} bytes (at most {max_lag})", m.name)),
            None => Some(format!(
                "{} reports no replication lag: not streaming",
                m.name
            )),
        }
    }

    /// Healthy: exactly one running leader, and every other member streaming from it within
    /// `max_lag` bytes. `expected` names members that must be there (the inventory's).
    pub fn problems(&self, expected: &[String], max_lag: u64) -> Problems {
        let mut problems = Vec::new();
        let leaders = self.leaders();
        if leaders.len() != 1 {
            problems.push(format!("{} leaders instead of 1", leaders.len()));
        } else if !leaders[0].is_running() {
            problems.push(format!(
                "the leader {} is {}",
                leaders[0].name,
                leaders[0].state.name()
            ));
        }
        for name in expected {
            if self.member(name).is_none() {
                problems.push(format!("{name} is not a member of the Patroni cluster"));
            }
        }
        if leaders.len() == 1 {
            for m in self.replicas() {
                if let Some(p) = self.replica_problem(m, max_lag) {
                    problems.push(p);
                }
            }
        }
        problems
    }
}

/// The part of Patroni's dynamic configuration (`GET /config`) whose timing a test depends on;
/// what the DCS leaves out has Patroni's default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DynamicConfig {
    /// Seconds the leader key lives without being renewed.
    #[serde(default = "default_ttl")]
    pub ttl: u64,
    /// Seconds between two runs of Patroni's loop.
    #[serde(default = "default_loop_wait")]
    pub loop_wait: u64,
    /// The leader keeps leading without etcd while every member confirms it (Patroni 3.0+).
    #[serde(default)]
    pub failsafe_mode: bool,
    /// Commits wait for a synchronous standby that Patroni names.
    #[serde(default)]
    pub synchronous_mode: bool,
}

fn default_ttl() -> u64 {
    30
}

fn default_loop_wait() -> u64 {
    10
}

impl DynamicConfig {
    pub fn parse(body: &str) -> Result<DynamicConfig, ApiError> {
        serde_json::from_str(body).map_err(|e| ApiError(format!("not Patroni's /config: {e}")))
    }
}

/// Patroni's REST API on one member, from the control machine (failover-test, the prober).
/// Redirects are never followed: an answer comes from the member asked, or not at all.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// With `tls`, only the inventory's CA is trusted and the client certificate is shown.
    pub fn new(timeout: Duration, tls: Option<&ClientTls>) -> Result<Client, ApiError> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(tls) = tls {
            builder = tls.reqwest(builder).map_err(|e| ApiError(e.to_string()))?;
        }
        Ok(Client {
            http: builder.build().map_err(|e| ApiError(e.to_string()))?,
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET {base}/cluster`, where `base` is `http://HOST:PORT`.
    pub async fn cluster(&self, base: &str) -> Result<Cluster, ApiError> {
        Cluster::parse(&self.get(base, "/cluster").await?)
    }

    /// `GET {base}/config`: the dynamic configuration as the DCS holds it.
    pub async fn config(&self, base: &str) -> Result<DynamicConfig, ApiError> {
        DynamicConfig::parse(&self.get(base, "/config").await?)
    }

    /// The body of a successful `GET {base}{path}`.
    async fn get(&self, base: &str, path: &str) -> Result<String, ApiError> {
        let resp = self
            .http
            .get(format!("{}{path}", base.trim_end_matches('/')))
            .send()
            .await
            .map_err(|e| {
                ApiError(if e.is_timeout() {
                    format!("GET {path}: timed out")
                } else {
                    format!("GET {path}: {e}")
                })
            })?;
        if !resp.status().is_success() {
            return Err(ApiError(format!(
                "GET {path}: status {}",
                resp.status().as_u16()
            )));
        }
        resp.text()
            .await
            .map_err(|e| ApiError(format!("GET {path}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(json: serde_json::Value) -> Cluster {
        serde_json::from_value(json).unwrap()
    }

    fn healthy() -> Cluster {
        cluster(serde_json::json!({"members": [
            {"name": "a", "role": "leader", "state": "running", "timeline": 3, "api_url": "http://x/patroni"},
            {"name": "b", "role": "sync_standby", "state": "streaming", "timeline": 3, "lag": 0},
            {"name": "c", "role": "replica", "state": "running", "timeline": 3, "lag": 120},
        ]}))
    }

    #[test]
    fn the_dynamic_configuration_falls_back_to_patronis_defaults() {
        let set = DynamicConfig::parse(
            r#"{"ttl": 30, "loop_wait": 6, "failsafe_mode": true, "postgresql": {}}"#,
        )
        .unwrap();
        assert_eq!(
            set,
            DynamicConfig {
                ttl: 30,
                loop_wait: 6,
                failsafe_mode: true,
                synchronous_mode: false,
            }
        );
        let unset = DynamicConfig::parse("{}").unwrap();
        assert_eq!(
            (unset.ttl, unset.loop_wait, unset.failsafe_mode),
            (30, 10, false)
        );
    }

    #[test]
    fn one_running_leader_and_streaming_replicas_is_healthy() {
        let c = healthy();
        assert_eq!(c.leader().map(|l| l.name.as_str()), Some("a"));
        assert_eq!(c.sync_standby().map(|m| m.name.as_str()), Some("b"));
        assert!(c
            .problems(&["a".into(), "b".into(), "c".into()], 1 << 20)
            .is_empty());
    }

    #[test]
    fn a_standby_leader_leads() {
        let c = cluster(serde_json::json!({"members": [
            {"name": "a", "role": "standby_leader", "state": "streaming", "timeline": 1},
        ]}));
        assert_eq!(c.leader().map(|l| l.name.as_str()), Some("a"));
    }

    #[test]
    fn problems_name_the_member_and_what_is_wrong() {
        let c = cluster(serde_json::json!({"members": [
            {"name": "a", "role": "leader", "state": "running", "timeline": 4},
            {"name": "b", "role": "replica", "state": "running", "timeline": 3, "lag": 0},
            {"name": "c", "role": "replica", "state": "running", "timeline": 4, "lag": "unknown"},
            {"name": "d", "role": "replica", "state": "start failed", "timeline": 4},
            {"name": "e", "role": "replica", "state": "running", "timeline": 4, "lag": 5000},
        ]}));
        let p = c.problems(&["a".into(), "f".into()], 4096);
        assert_eq!(
            p,
            vec![
                "f is not a member of the Patroni cluster",
                "b is on timeline 3, the leader a on 4",
                "c reports no replication lag: not streaming",
                "d is start failed",
                "e lags 5000 bytes (at most 4096)",
            ]
        );
    }

    #[test]
    fn two_leaders_or_none_is_no_leader() {
        let none = cluster(serde_json::json!({"members": [
            {"name": "a", "role": "replica", "state": "running"},
        ]}));
        assert!(none.leader().is_none());
        assert_eq!(none.problems(&[], 0), vec!["0 leaders instead of 1"]);
        let stopped = cluster(serde_json::json!({"members": [
            {"name": "a", "role": "leader", "state": "stopped"},
        ]}));
        assert!(stopped.leader().is_none());
        assert_eq!(stopped.problems(&[], 0), vec!["the leader a is stopped"]);
    }

    #[test]
    fn unknown_roles_and_states_parse() {
        let c = Cluster::parse(
            r#"{"members": [{"name": "a", "role": "quorum_standby", "state": "restarting"}], "scope": "x"}"#,
        )
        .unwrap();
        assert_eq!(c.members[0].role, Role::Other);
        assert_eq!(c.members[0].state, State::Other("restarting".into()));
        assert_eq!(c.members[0].state.name(), "restarting");
        assert!(Cluster::parse("<html>").is_err());
    }
}
