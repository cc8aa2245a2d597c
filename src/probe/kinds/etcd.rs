//! `etcd`: one member's status: health, its view of the leader, raft term and index, database
//! size, and the cluster's alarms.

use prometheus::{GaugeVec, IntGaugeVec};

use super::{Env, Failure, Kind, Mistake, Run};
use crate::probe::config::Probe;
use crate::probe::metrics::{Per, Registrar};

pub(crate) struct Etcd;

/// Per target (member): its view of the leader, its raft state, its size, the alarms.
pub(crate) struct Series {
    has_leader: IntGaugeVec,
    leader_id: GaugeVec,
    raft_term: GaugeVec,
    raft_index: GaugeVec,
    db_size: GaugeVec,
    alarms: IntGaugeVec,
}

impl Kind for Etcd {
    const NAME: &'static str = "etcd";
    const BLOCK: Option<&'static str> = None;
    type Options = ();
    type Spec = ();
    type State = ();
    type Series = Series;

    fn check((): ()) -> Result<(), Mistake> {
        Ok(())
    }

    fn state((): &(), _: &Probe, _: &Env) -> Result<(), Mistake> {
        Ok(())
    }

    async fn run(run: Run<'_, Self>) -> Result<(), Failure> {
        let endpoint = if run.target.contains("://") {
            run.target.to_string()
        } else {
            let scheme = if run.probe.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", run.target)
        };
        // A second beyond the run's timeout: the scheduler's timeout is the one that counts.
        let limit = run.probe.timeout + std::time::Duration::from_secs(1);
        let mut client = crate::stack::etcd::connect(&[endpoint], limit, run.probe.tls.as_ref())
            .await
            .map_err(|e| Failure(e.to_string()))?;
        let status = client
            .status()
            .await
            .map_err(|e| Failure(format!("status: {e}")))?;
        let alarms = client
            .alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            )
            .await
            .map_err(|e| Failure(format!("alarms: {e}")))?;
        let l = [run.probe.name.as_str(), run.target];
        let s = run.series;
        s.has_leader
            .with_label_values(&l)
            .set(i64::from(status.leader() != 0));
        s.leader_id.with_label_values(&l).set(status.leader() as f64);
        s.raft_term
            .with_label_values(&l)
            .set(status.raft_term() as f64);
        s.raft_index
            .with_label_values(&l)
            .set(status.raft_index() as f64);
        s.db_size.with_label_values(&l).set(status.db_size() as f64);
        s.alarms
            .with_label_values(&l)
            .set(alarms.alarms().len() as i64);
        if status.leader() == 0 {
            return Err(Failure::new("the member knows no leader"));
        }
        if !status.errors().is_empty() {
            return Err(Failure(format!("errors: {}", status.errors().join("; "))));
        }
        if let Some(a) = alarms.alarms().first() {
            return Err(Failure(format!(
                "alarm {:?} on member {:x}",
                a.alarm(),
                a.member_id()
            )));
        }
        Ok(())
    }

    fn series(r: &mut Registrar) -> Series {
        Series {
            has_leader: r.int_gauge("hactl_etcd_has_leader", "1 if the member knows a leader.", Per::Target),
            leader_id: r.gauge(
                "hactl_etcd_leader_id",
                "The leader's member id, as the member sees it.",
                Per::Target,
            ),
            raft_term: r.gauge("hactl_etcd_raft_term", "The member's raft term.", Per::Target),
            raft_index: r.gauge("hactl_etcd_raft_index", "The member's raft index.", Per::Target),
            db_size: r.gauge("hactl_etcd_db_size_bytes", "The member's database size.", Per::Target),
            alarms: r.int_gauge(
                "hactl_etcd_alarms",
                "Active alarms (NOSPACE, CORRUPT) in the cluster.",
                Per::Target,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::probe::config::tests::{error, probe};
    use crate::probe::kinds::Spec;

    #[test]
    fn takes_member_targets_and_no_options() {
        let p = probe("probes:\n  - name: e\n    type: etcd\n    targets: {group: etcd_cluster, port: 2379}\n");
        assert!(matches!(p.spec, Spec::Etcd(())));
        assert_eq!(p.spec.group_target("10.0.0.1:2379".into()), "10.0.0.1:2379");
        assert_eq!(
            error("probes:\n  - name: e\n    type: etcd\n    targets: [\"h:2379\"]\n    patroni: {}\n"),
            "probes.yml:5: patroni: only for probes of type patroni"
        );
        assert_eq!(
            error("probes:\n  - name: e\n    type: etcd\n"),
            "probes.yml:2: probes[0] (e): targets: missing"
        );
    }
}
