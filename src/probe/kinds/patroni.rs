//! `patroni`: the topology from a member's `/cluster`, as the stack model reads it: exactly one
//! leader, every member running, every replica streaming (on the leader's timeline, with a lag
//! under the bound).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec};
use serde::Deserialize;

use super::{Env, Failure, Kind, Mistake, Run};
use crate::probe::config::Probe;
use crate::probe::board::{Board, What};
use crate::probe::metrics::{Per, Registrar};
use crate::stack::patroni::Client;

pub(crate) struct Patroni;

/// `patroni:` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Options {
    /// Replicas lagging more bytes than this fail the probe (default 16 MiB).
    #[serde(default)]
    max_lag_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    max_lag_bytes: u64,
}

/// What a patroni probe keeps across runs and targets: its client and the last leader it saw.
pub(crate) struct State {
    client: Client,
    leader: Mutex<Option<String>>,
}

/// The cluster's series carry the probe's name: one patroni probe per cluster, named after it.
pub(crate) struct Series {
    leaders: IntGaugeVec,
    leader: IntGaugeVec,
    members: IntGaugeVec,
    running: IntGaugeVec,
    streaming: IntGaugeVec,
    lag: GaugeVec,
    timeline: IntGaugeVec,
    leader_changes: IntCounterVec,
    /// The members each probe has series for (`leader`, `lag`), to remove those of a member
    /// that leaves and of a probe that goes.
    members_of: Mutex<BTreeMap<String, Vec<String>>>,
    /// The status page: the members as last seen, and leader changes.
    board: Arc<Board>,
}

impl Series {
    fn forget_member(&self, probe: &str, member: &str) {
        let _ = self.leader.remove_label_values(&[probe, member]);
        let _ = self.lag.remove_label_values(&[probe, member]);
    }
}

impl Kind for Patroni {
    const NAME: &'static str = "patroni";
    const BLOCK: Option<&'static str> = Some("patroni");
    type Options = Options;
    type Spec = Spec;
    type State = State;
    type Series = Series;

    fn check(o: Options) -> Result<Spec, Mistake> {
        Ok(Spec {
            max_lag_bytes: o.max_lag_bytes.unwrap_or(16 << 20),
        })
    }

    fn state(_: &Spec, probe: &Probe, _: &Env) -> Result<State, Mistake> {
        // A second beyond the run's timeout: the scheduler's timeout is the one that counts.
        let client = Client::new(probe.timeout + Duration::from_secs(1), probe.tls.as_ref())
            .map_err(|e| Mistake::new("patroni", e.to_string()))?;
        Ok(State {
            client,
            leader: Mutex::new(None),
        })
    }

    async fn run(run: Run<'_, Self>) -> Result<(), Failure> {
        let base = api_base(run.target, run.probe.tls.is_some());
        let cluster = run
            .state
            .client
            .cluster(&base)
            .await
            .map_err(|e| Failure(e.to_string()))?;
        let max_lag = run.spec.max_lag_bytes;
        let probe = run.probe.name.as_str();
        let s = run.series;
        s.board.cluster(probe, &cluster);
        let leaders = cluster.leaders();
        for m in cluster.replicas() {
            if let Some(lag) = m.lag {
                s.lag.with_label_values(&[probe, &m.name]).set(lag as f64);
            }
        }
        let streaming = cluster
            .replicas()
            .filter(|m| cluster.is_streaming(m, max_lag))
            .count();
        let running = cluster.members.iter().filter(|m| m.is_running()).count();
        s.leaders
            .with_label_values(&[probe])
            .set(leaders.len() as i64);
        s.members
            .with_label_values(&[probe])
            .set(cluster.members.len() as i64);
        s.running.with_label_values(&[probe]).set(running as i64);
        s.streaming
            .with_label_values(&[probe])
            .set(streaming as i64);
        if let Some(tl) = leaders.first().and_then(|l| l.timeline) {
            s.timeline.with_label_values(&[probe]).set(tl as i64);
        }
        let now: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
        let mut last_leader = run.state.leader.lock().unwrap_or_else(|e| e.into_inner());
        let before = s
            .members_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(probe.to_string(), now.clone())
            .unwrap_or_default();
        for gone in before.iter().filter(|g| !now.contains(g)) {
            s.forget_member(probe, gone);
        }
        if let [leader] = leaders.as_slice() {
            let leader = &leader.name;
            if last_leader.as_ref() != Some(leader) {
                match &*last_leader {
                    Some(old) => {
                        s.leader_changes.with_label_values(&[probe]).inc();
                        tracing::warn!(probe = %probe, from = %old, to = %leader, "leader changed");
                        s.board.event(
                            probe,
                            What::LeaderChange {
                                from: old.clone(),
                                to: leader.clone(),
                            },
                        );
                    }
                    // The counter exists from the first leader on, so that increase() sees the
                    // first change.
                    None => s.leader_changes.with_label_values(&[probe]).inc_by(0),
                }
                *last_leader = Some(leader.clone());
            }
            let _ = s.lag.remove_label_values(&[probe, leader]);
            for member in &now {
                s.leader
                    .with_label_values(&[probe, member])
                    .set(i64::from(member == leader));
            }
        }
        let problems = cluster.problems(&[], max_lag);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Failure(problems.join("; ")))
        }
    }

    fn series(r: &mut Registrar) -> Series {
        Series {
            leaders: r.int_gauge("hactl_patroni_leaders", "Leaders in the cluster (should be 1).", Per::Probe),
            leader: r.int_gauge("hactl_patroni_leader", "1 for the current leader.", Per::Member),
            members: r.int_gauge("hactl_patroni_members", "Members the cluster lists.", Per::Probe),
            running: r.int_gauge(
                "hactl_patroni_members_running",
                "Members whose PostgreSQL runs.",
                Per::Probe,
            ),
            streaming: r.int_gauge(
                "hactl_patroni_replicas_streaming",
                "Replicas on the leader's timeline with a known lag under the bound.",
                Per::Probe,
            ),
            lag: r.gauge(
                "hactl_patroni_replica_lag_bytes",
                "A replica's lag, as Patroni reports it.",
                Per::Member,
            ),
            timeline: r.int_gauge("hactl_patroni_timeline", "The leader's timeline.", Per::Probe),
            leader_changes: r.counter(
                "hactl_patroni_leader_changes_total",
                "Leader changes the prober has seen.",
                Per::Probe,
            ),
            members_of: Mutex::new(BTreeMap::new()),
            board: r.board(),
        }
    }

    fn forget_probe(series: &Series, probe: &str) {
        let members = series
            .members_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(probe);
        for m in members.into_iter().flatten() {
            series.forget_member(probe, &m);
        }
    }
}

/// A member's REST API as written (`HOST:PORT`, or a URL): its base URL, https with `tls`.
pub(super) fn api_base(target: &str, tls: bool) -> String {
    if target.contains("://") {
        target.trim_end_matches('/').to_string()
    } else {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{target}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::config::tests::{assert_errors, probe};
    use crate::probe::kinds::Spec as AnySpec;

    fn spec(text: &str) -> Spec {
        match probe(text).spec {
            AnySpec::Patroni(s) => s,
            other => panic!("not a patroni spec: {other:?}"),
        }
    }

    #[test]
    fn the_lag_bound_defaults_to_16_mib() {
        let head = "probes:\n  - name: p\n    type: patroni\n    targets: [\"h:8008\"]\n";
        assert_eq!(spec(head).max_lag_bytes, 16 << 20);
        assert_eq!(spec(&format!("{head}    patroni:\n")).max_lag_bytes, 16 << 20);
        assert_eq!(spec(&format!("{head}    patroni: {{max_lag_bytes: 4096}}\n")).max_lag_bytes, 4096);
    }

    #[test]
    fn mistakes_name_line_and_key() {
        let head = "probes:\n  - name: p\n    type: patroni\n    targets: [\"h:8008\"]\n    patroni:\n";
        assert_errors(head, &[
            (
                "      max_lag_bytes: -1\n",
                "probes.yml:6: probes[0]: patroni.max_lag_bytes: invalid value: integer `-1`, expected u64",
            ),
            // The cluster is the probe's name (its `probe` label): there is no option for it.
            (
                "      cluster: main\n",
                "probes.yml:6: probes[0]: patroni.cluster: unknown field `cluster`, expected `max_lag_bytes`",
            ),
        ]);
    }
}
