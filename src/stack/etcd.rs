//! etcd as hactl's commands reach it: one way to connect (TLS, the client certificate's common
//! name as the user) and the cluster's health.

use std::time::Duration;

use super::tls::ClientTls;

/// An etcd call that failed: what was asked and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("etcd {what}: {why}")]
pub struct EtcdError {
    pub what: &'static str,
    pub why: String,
}

fn err(what: &'static str) -> impl Fn(etcd_client::Error) -> EtcdError {
    move |e| EtcdError {
        what,
        why: e.to_string(),
    }
}

/// A client of `endpoints` (`https://HOST:PORT`), each call bounded by `timeout`. With `tls`,
/// the CA checks the members and the certificate's common name is the etcd user.
pub async fn connect(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<etcd_client::Client, EtcdError> {
    let mut opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    if let Some(tls) = tls {
        opts = opts.with_tls(tls.etcd());
    }
    etcd_client::Client::connect(endpoints, Some(opts))
        .await
        .map_err(err("connect"))
}

/// How many of `endpoints` answer their status and know a leader.
pub async fn healthy_members(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> usize {
    let checks = endpoints.iter().map(|e| async move {
        let mut client = connect(std::slice::from_ref(e), timeout, tls).await.ok()?;
        let status = client.status().await.ok()?;
        (status.leader() != 0).then_some(())
    });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .count()
}

/// A majority of `total` members.
pub fn has_quorum(healthy: usize, total: usize) -> bool {
    healthy * 2 > total
}

#[cfg(test)]
mod tests {
    #[test]
    fn quorum_is_a_strict_majority() {
        assert!(super::has_quorum(2, 3));
        assert!(!super::has_quorum(1, 3));
        assert!(!super::has_quorum(2, 4));
        assert!(super::has_quorum(3, 5));
    }
}
