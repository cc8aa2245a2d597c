//! The cluster under test as failover-test sees it from the control machine: the stack's model
//! (members through the inventory, never through addresses read from etcd), Patroni's `/cluster`
//! from whichever member answers, and the pre-flight health check.

use std::time::Duration;

use super::FailoverError;
use crate::inventory::Inventory;
use crate::stack::patroni::{self, Client, DynamicConfig};
use crate::stack::tls::ClientTls;
use crate::stack::{etcd, Credentials, EtcdMember, Login, PgMember, Stack};

/// Each call to a member's Patroni REST API or to etcd: a member that takes longer is counted
/// as not answering, and the next one is asked.
const API_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Cluster {
    pub stack: Stack,
    pub patroni: Client,
    /// hactl's client certificate and the inventory's CA.
    pub tls: ClientTls,
    /// PostgreSQL over TLS, the server's certificate checked (verify-full).
    pub pg_tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// The table's and the stored rows' login.
    pub superuser: Credentials,
    /// The writers' login (no superuser: PgBouncer refuses those).
    pub writer: Credentials,
    /// For the switchover.
    pub patroni_api: Credentials,
}

impl Cluster {
    /// The stack of `inventory`, with at least two PostgreSQL members to fail over between.
    pub fn load(inventory: &Inventory) -> Result<Cluster, FailoverError> {
        let stack = Stack::load(inventory, &indexmap::IndexMap::new())?;
        if stack.postgres.len() < 2 {
            return Err(FailoverError::TooFewMembers {
                inventory: inventory.path.clone(),
                group: stack.postgres_group.clone(),
            });
        }
        let tls = stack.client_tls()?;
        let patroni = Client::new(API_TIMEOUT, Some(&tls))?;
        let pg_tls = tls.postgres()?;
        Ok(Cluster {
            tls,
            pg_tls,
            superuser: stack.login(Login::Superuser)?,
            writer: stack.login(Login::FailoverWriter)?,
            patroni_api: stack.login(Login::PatroniApi)?,
            stack,
            patroni,
        })
    }

    pub fn member(&self, name: &str) -> Option<&PgMember> {
        self.stack.pg_member(name)
    }

    /// A member's address, as the inventory gives it ("" for a name it does not list).
    pub fn address(&self, name: &str) -> String {
        self.member(name)
            .map(|m| m.address.clone())
            .unwrap_or_default()
    }

    /// `/cluster` as the first member that answers sees it, skipping `except`.
    pub async fn topology(&self, except: Option<&str>) -> Option<patroni::Cluster> {
        for m in self
            .stack
            .postgres
            .iter()
            .filter(|m| Some(m.name.as_str()) != except)
        {
            if let Ok(cluster) = self.patroni.cluster(&m.api_url()).await {
                return Some(cluster);
            }
        }
        None
    }

    /// The running leader, as the first member that answers (other than `except`) sees it.
    pub async fn leader(&self, except: Option<&str>) -> Option<String> {
        Some(self.topology(except).await?.leader()?.name.clone())
    }

    /// Patroni's dynamic configuration, as `leader` serves it.
    pub async fn dynamic_config(&self, leader: &str) -> Result<DynamicConfig, FailoverError> {
        let member = self
            .member(leader)
            .ok_or_else(|| FailoverError::Config(format!("no member {leader}")))?;
        self.patroni
            .config(&member.api_url())
            .await
            .map_err(|e| FailoverError::Config(format!("{leader}: {e}")))
    }

    /// The host of etcd's leader, as the first member other than `except` that knows a leader
    /// says; None when none does, or the leader is not in the inventory.
    pub async fn etcd_leader(&self, except: Option<&str>) -> Option<String> {
        for m in self
            .stack
            .etcd
            .iter()
            .filter(|m| Some(m.name.as_str()) != except)
        {
            let Ok(mut client) =
                etcd::connect(&[m.client_url()], API_TIMEOUT, Some(&self.tls)).await
            else {
                continue;
            };
            let Ok(status) = client.status().await else {
                continue;
            };
            if status.leader() == 0 {
                continue;
            }
            let Ok(list) = client.member_list().await else {
                continue;
            };
            let urls = list
                .members()
                .iter()
                .find(|member| member.id() == status.leader())
                .map(|member| member.client_urls().to_vec())
                .unwrap_or_default();
            return member_at(&self.stack.etcd, &urls).map(|m| m.name.clone());
        }
        None
    }

    /// Whether etcd on each of `hosts` answers and knows a leader.
    pub async fn etcd_healthy(&self, hosts: &[String]) -> bool {
        let endpoints: Vec<String> = self
            .stack
            .etcd
            .iter()
            .filter(|m| hosts.contains(&m.name))
            .map(EtcdMember::client_url)
            .collect();
        etcd::healthy_members(&endpoints, API_TIMEOUT, Some(&self.tls)).await == endpoints.len()
    }

    /// The leader and the members as it sees them, if the cluster is healthy now; else what is
    /// wrong, in words.
    pub async fn preflight(
        &self,
        max_lag: u64,
    ) -> Result<(String, patroni::Cluster), FailoverError> {
        let unhealthy = |why: Vec<String>| Err(FailoverError::Unhealthy(why));
        let Some(topology) = self.topology(None).await else {
            let tried = self.stack.postgres.iter().map(|m| m.api_url()).collect();
            return Err(FailoverError::Unreachable(tried));
        };
        let expected: Vec<String> = self.stack.postgres.iter().map(|m| m.name.clone()).collect();
        let problems = topology.problems(&expected, max_lag);
        let leader = match topology.leader() {
            Some(leader) if problems.is_empty() => leader.name.clone(),
            _ => return unhealthy(problems),
        };
        // After a restart or a failover, the leader runs without a synchronous standby until
        // Patroni's next loop names one: a fault then would hit a cluster in transition.
        let config = self.dynamic_config(&leader).await?;
        if config.synchronous_mode && topology.sync_standby().is_none() {
            return unhealthy(vec![format!(
                "synchronous_mode is on and {leader} has no synchronous standby yet"
            )]);
        }
        let endpoints = self.stack.etcd_endpoints();
        let healthy = etcd::healthy_members(&endpoints, API_TIMEOUT, Some(&self.tls)).await;
        if !etcd::has_quorum(healthy, endpoints.len()) {
            return unhealthy(vec![format!(
                "etcd has no quorum: {healthy} of {} members healthy",
                endpoints.len()
            )]);
        }
        Ok((leader, topology))
    }
}

/// The inventory's etcd member that serves one of `client_urls` (as etcd's member list gives
/// them: `http://HOST:PORT`, maybe with a slash after).
fn member_at<'a>(members: &'a [EtcdMember], client_urls: &[String]) -> Option<&'a EtcdMember> {
    members.iter().find(|m| {
        client_urls
            .iter()
            .any(|u| u.trim_end_matches('/') == m.client_url())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_leader_is_found_by_its_client_url() {
        let members: Vec<EtcdMember> = ["e-1", "e-2"]
            .iter()
            .enumerate()
            .map(|(i, n)| EtcdMember {
                name: n.to_string(),
                address: format!("192.0.2.{}", i + 1),
                client_port: 2379,
            })
            .collect();
        let urls = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let found = member_at(
            &members,
            &urls(&["https://127.0.0.1:2379", "https://192.0.2.2:2379/"]),
        );
        assert_eq!(found.map(|m| m.name.as_str()), Some("e-2"));
        assert!(member_at(&members, &urls(&["https://192.0.2.2:2380"])).is_none());
    }
}
