//! The cluster under test as failover-test sees it from the control machine: the stack's model
//! (members through the inventory, never through addresses read from etcd), Patroni's `/cluster`
//! from whichever member answers, and the pre-flight health check.

use std::time::Duration;

use super::FailoverError;
use crate::inventory::Inventory;
use crate::stack::patroni::{self, Client};
use crate::stack::{etcd, Credentials, Login, PgMember, Stack};

/// Each call to a member's Patroni REST API or to etcd: a member that takes longer is counted
/// as not answering, and the next one is asked.
const API_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Cluster {
    pub stack: Stack,
    pub patroni: Client,
    /// The writers' login.
    pub superuser: Credentials,
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
        let patroni = Client::new(API_TIMEOUT).map_err(|error| FailoverError::Http { error })?;
        Ok(Cluster {
            superuser: stack.login(Login::Superuser)?,
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

    /// The leader, if the cluster is healthy now; else what is wrong, in words.
    pub async fn preflight(&self, max_lag: u64) -> Result<String, FailoverError> {
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
        let endpoints = self.stack.etcd_endpoints();
        let healthy = etcd::healthy_members(&endpoints, API_TIMEOUT).await;
        if !etcd::has_quorum(healthy, endpoints.len()) {
            return unhealthy(vec![format!(
                "etcd has no quorum: {healthy} of {} members healthy",
                endpoints.len()
            )]);
        }
        Ok(leader)
    }
}
