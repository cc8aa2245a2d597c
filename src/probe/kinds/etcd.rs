//! `etcd`: one member's status: health, its view of the leader, raft term and index, database
//! size, and the cluster's alarms.

use super::Ctx;

pub async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let p = ctx.probe;
    let endpoint = if ctx.target.contains("://") {
        ctx.target.to_string()
    } else {
        format!("http://{}", ctx.target)
    };
    // A second beyond the run's timeout: the scheduler's timeout is the one that counts.
    let limit = p.timeout + std::time::Duration::from_secs(1);
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(limit)
        .with_timeout(limit);
    let mut client = etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let status = client.status().await.map_err(|e| format!("status: {e}"))?;
    let alarms = client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .map_err(|e| format!("alarms: {e}"))?;
    let l = [p.name.as_str(), ctx.target];
    let m = ctx.metrics;
    m.etcd_has_leader
        .with_label_values(&l)
        .set(i64::from(status.leader() != 0));
    m.etcd_leader_id
        .with_label_values(&l)
        .set(status.leader() as f64);
    m.etcd_raft_term
        .with_label_values(&l)
        .set(status.raft_term() as f64);
    m.etcd_raft_index
        .with_label_values(&l)
        .set(status.raft_index() as f64);
    m.etcd_db_size
        .with_label_values(&l)
        .set(status.db_size() as f64);
    m.etcd_alarms
        .with_label_values(&l)
        .set(alarms.alarms().len() as i64);
    if status.leader() == 0 {
        return Err("the member knows no leader".into());
    }
    if !status.errors().is_empty() {
        return Err(format!("errors: {}", status.errors().join("; ")));
    }
    if let Some(a) = alarms.alarms().first() {
        return Err(format!(
            "alarm {:?} on member {:x}",
            a.alarm(),
            a.member_id()
        ));
    }
    Ok(())
}
