//! What failover-test knows of the cluster: its members and how to reach them, Patroni's REST
//! API seen from the control machine, and the pre-flight health check.

use std::time::Duration;

use serde_json::{json, Value};

use super::FailoverError;
use crate::inventory::Inventory;
use crate::secrets::SecretStore;

#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub address: String,
}

/// Members, ports and credentials, from the inventory (and its secret store).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub members: Vec<Member>,
    pub etcd: Vec<String>,
    pub api_port: u16,
    pub pg_port: u16,
    pub scope: String,
    pub api_user: String,
    pub api_password: String,
    pub pg_password: String,
    http: reqwest::Client,
}

/// One member as Patroni's `/cluster` shows it.
#[derive(Debug, Clone)]
pub struct State {
    pub name: String,
    pub role: String,
    pub state: String,
    pub lag: Option<u64>,
    pub timeline: Option<u64>,
}

fn var(inventory: &Inventory, host: &str, name: &str) -> Option<String> {
    inventory.host_vars(host).get(name).map(|v| match &v.value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

impl Cluster {
    pub fn from_inventory(inventory: &Inventory) -> Result<Cluster, FailoverError> {
        let hosts = inventory.hosts_in("postgres_cluster");
        if hosts.len() < 2 {
            return Err(FailoverError::Input(format!(
                "{}: the group postgres_cluster needs at least 2 hosts for a failover",
                inventory.path.display()
            )));
        }
        let address = |h: &String| var(inventory, h, "ansible_host").unwrap_or_else(|| h.clone());
        let first = &hosts[0];
        let secrets = SecretStore::of(inventory);
        let secret = |var_name: &str, store_name: &str| -> Result<String, FailoverError> {
            match var(inventory, first, var_name) {
                Some(v) => Ok(v),
                None => secrets
                    .get_or_create(store_name, None)
                    .map_err(|e| FailoverError::Input(e.to_string())),
            }
        };
        let port = |name: &str, default: u16| {
            var(inventory, first, name)
                .and_then(|p| p.parse().ok())
                .unwrap_or(default)
        };
        Ok(Cluster {
            members: hosts
                .iter()
                .map(|h| Member {
                    name: h.clone(),
                    address: address(h),
                })
                .collect(),
            etcd: inventory
                .hosts_in("etcd_cluster")
                .iter()
                .map(address)
                .collect(),
            api_port: port("patroni_api_port", 8008),
            pg_port: port("postgresql_port", 5432),
            scope: var(inventory, first, "patroni_scope").unwrap_or_else(|| "hactl".into()),
            api_user: var(inventory, first, "patroni_api_username")
                .unwrap_or_else(|| "patroni".into()),
            api_password: secret("patroni_api_password", "patroni_api")?,
            pg_password: secret("postgresql_superuser_password", "postgresql_superuser")?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .map_err(|e| FailoverError::Input(e.to_string()))?,
        })
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    fn api(&self, member: &Member) -> String {
        format!("http://{}:{}", member.address, self.api_port)
    }

    /// `/cluster` as the first member that answers sees it, skipping `except`.
    pub async fn states(&self, except: Option<&str>) -> Option<Vec<State>> {
        for m in self
            .members
            .iter()
            .filter(|m| Some(m.name.as_str()) != except)
        {
            let Ok(resp) = self
                .http
                .get(format!("{}/cluster", self.api(m)))
                .send()
                .await
            else {
                continue;
            };
            let Ok(body) = resp.json::<Value>().await else {
                continue;
            };
            let members = body["members"].as_array().cloned().unwrap_or_default();
            return Some(
                members
                    .iter()
                    .map(|m| State {
                        name: m["name"].as_str().unwrap_or_default().to_string(),
                        role: m["role"].as_str().unwrap_or_default().to_string(),
                        state: m["state"].as_str().unwrap_or_default().to_string(),
                        lag: m["lag"].as_u64(),
                        timeline: m["timeline"].as_u64(),
                    })
                    .collect(),
            );
        }
        None
    }

    pub async fn leader(&self, except: Option<&str>) -> Option<String> {
        self.states(except)
            .await?
            .into_iter()
            .find(|s| s.role == "leader" && s.state == "running")
            .map(|s| s.name)
    }

    /// Planned switchover from `leader` (Patroni picks the synchronous standby).
    pub async fn switchover(&self, leader: &str) -> Result<(), FailoverError> {
        let member = self
            .member(leader)
            .ok_or_else(|| FailoverError::Cluster(format!("no member {leader}")))?;
        let resp = self
            .http
            .post(format!("{}/switchover", self.api(member)))
            .basic_auth(&self.api_user, Some(&self.api_password))
            .json(&json!({"leader": leader}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| FailoverError::Cluster(format!("POST /switchover: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(FailoverError::Cluster(format!(
                "POST /switchover: {status} {body}"
            )));
        }
        Ok(())
    }

    /// Refuses a cluster that is not healthy now: what is wrong, in words.
    pub async fn preflight(&self, max_lag: u64) -> Result<String, FailoverError> {
        let unhealthy = |why: String| Err(FailoverError::Unhealthy(why));
        let Some(states) = self.states(None).await else {
            return unhealthy("no member's Patroni REST API answers".into());
        };
        let leaders: Vec<&State> = states.iter().filter(|s| s.role == "leader").collect();
        if leaders.len() != 1 {
            return unhealthy(format!("{} leaders instead of 1", leaders.len()));
        }
        for m in &self.members {
            let Some(s) = states.iter().find(|s| s.name == m.name) else {
                return unhealthy(format!("{} is not a member of the Patroni cluster", m.name));
            };
            if s.state != "running" && s.state != "streaming" {
                return unhealthy(format!("{} is {}", m.name, s.state));
            }
            if s.role != "leader" && s.timeline != leaders[0].timeline {
                // A replica left on an old timeline (a diverged former leader) never catches up.
                return unhealthy(format!(
                    "{} is on timeline {}, the leader {} on {}",
                    m.name,
                    s.timeline.map_or("?".into(), |t| t.to_string()),
                    leaders[0].name,
                    leaders[0].timeline.map_or("?".into(), |t| t.to_string())
                ));
            }
            if s.role != "leader" {
                match s.lag {
                    Some(lag) if lag <= max_lag => {}
                    Some(lag) => {
                        return unhealthy(format!(
                            "{} lags {lag} bytes (at most {max_lag})",
                            m.name
                        ))
                    }
                    None => {
                        return unhealthy(format!(
                            "{} reports no replication lag: not streaming",
                            m.name
                        ))
                    }
                }
            }
        }
        let mut healthy = 0;
        for address in &self.etcd {
            let url = format!("http://{address}:2379/health");
            if let Ok(resp) = self.http.get(url).send().await {
                if let Ok(body) = resp.json::<Value>().await {
                    if body["health"] == "true" {
                        healthy += 1;
                    }
                }
            }
        }
        if healthy * 2 <= self.etcd.len() {
            return unhealthy(format!(
                "etcd has no quorum: {healthy} of {} members healthy",
                self.etcd.len()
            ));
        }
        Ok(leaders[0].name.clone())
    }
}
