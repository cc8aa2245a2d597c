//! What the prober exposes on /metrics. Every name here is documented in the README.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Labels of the per-target series, as cloudprober names them.
pub const LABELS: [&str; 3] = ["probe", "dst", "ptype"];

pub struct Metrics {
    registry: Registry,
    // cloudprober-compatible
    pub total: IntCounterVec,
    pub success: IntCounterVec,
    pub latency: IntCounterVec,
    pub timeouts: IntCounterVec,
    // hactl's own histogram
    pub duration: HistogramVec,
    // blackbox_exporter-compatible
    pub probe_success: IntGaugeVec,
    pub probe_duration: GaugeVec,
    // domain gauges
    pub http_status: IntGaugeVec,
    pub cert_expiry: GaugeVec,
    pub pg_is_primary: IntGaugeVec,
    pub pg_lag_bytes: GaugeVec,
    pub pg_lag_seconds: GaugeVec,
    pub etcd_has_leader: IntGaugeVec,
    pub etcd_leader_id: GaugeVec,
    pub etcd_raft_term: GaugeVec,
    pub etcd_raft_index: GaugeVec,
    pub etcd_db_size: GaugeVec,
    pub etcd_alarms: IntGaugeVec,
    pub patroni_leaders: IntGaugeVec,
    pub patroni_leader: IntGaugeVec,
    pub patroni_members: IntGaugeVec,
    pub patroni_running: IntGaugeVec,
    pub patroni_streaming: IntGaugeVec,
    pub patroni_lag: GaugeVec,
    pub patroni_timeline: IntGaugeVec,
    pub patroni_leader_changes: IntCounterVec,
    pub write_since_success: GaugeVec,
    pub write_last_outage: GaugeVec,
    pub write_longest_outage: GaugeVec,
    pub write_outages: IntCounterVec,
    /// `external` probes' own metrics, by (probe, dst): the lines to append as they came.
    pub external: Mutex<BTreeMap<(String, String), Vec<ExternalSample>>>,
    /// The members each patroni probe has series for.
    pub patroni_members_of: Mutex<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExternalSample {
    pub name: String,
    /// `k="v"` pairs, already escaped.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn igauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hactl_probe_duration_seconds",
                "Time a probe's runs took, over all its targets.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            // Per probe, not per target: 14 buckets for each of 10,000 targets would make most
            // of /metrics and of the prober's memory.
            &["probe", "ptype"],
        )
        .expect("a valid metric");
        r.register(Box::new(duration.clone()))
            .expect("registered once");
        let probe = ["probe"];
        let member = ["probe", "member"];
        Metrics {
            total: counter(&r, "total", "Probe runs (cloudprober).", &LABELS),
            success: counter(&r, "success", "Successful probe runs (cloudprober).", &LABELS),
            latency: counter(
                &r,
                "latency",
                "Microseconds spent in successful probe runs (cloudprober).",
                &LABELS,
            ),
            timeouts: counter(&r, "timeouts", "Probe runs that timed out (cloudprober).", &LABELS),
            duration,
            probe_success: igauge(
                &r,
                "probe_success",
                "1 if the last run succeeded (blackbox_exporter).",
                &LABELS,
            ),
            probe_duration: gauge(
                &r,
                "probe_duration_seconds",
                "How long the last run took (blackbox_exporter).",
                &LABELS,
            ),
            http_status: igauge(&r, "hactl_http_status_code", "The last HTTP status code.", &["probe", "dst"]),
            cert_expiry: gauge(
                &r,
                "hactl_tls_cert_expiry_seconds",
                "Seconds until the server certificate expires.",
                &["probe", "dst"],
            ),
            pg_is_primary: igauge(
                &r,
                "hactl_postgres_is_primary",
                "1 if the server accepts writes, 0 if it is in recovery.",
                &["probe", "dst"],
            ),
            pg_lag_bytes: gauge(
                &r,
                "hactl_postgres_replication_lag_bytes",
                "WAL received but not yet replayed by a replica.",
                &["probe", "dst"],
            ),
            pg_lag_seconds: gauge(
                &r,
                "hactl_postgres_replication_lag_seconds",
                "Age of the last replayed transaction while WAL waits to be replayed (0 when caught up).",
                &["probe", "dst"],
            ),
            etcd_has_leader: igauge(&r, "hactl_etcd_has_leader", "1 if the member knows a leader.", &["probe", "dst"]),
            etcd_leader_id: gauge(&r, "hactl_etcd_leader_id", "The leader's member id, as the member sees it.", &["probe", "dst"]),
            etcd_raft_term: gauge(&r, "hactl_etcd_raft_term", "The member's raft term.", &["probe", "dst"]),
            etcd_raft_index: gauge(&r, "hactl_etcd_raft_index", "The member's raft index.", &["probe", "dst"]),
            etcd_db_size: gauge(&r, "hactl_etcd_db_size_bytes", "The member's database size.", &["probe", "dst"]),
            etcd_alarms: igauge(&r, "hactl_etcd_alarms", "Active alarms (NOSPACE, CORRUPT) in the cluster.", &["probe", "dst"]),
            patroni_leaders: igauge(&r, "hactl_patroni_leaders", "Leaders in the cluster (should be 1).", &probe),
            patroni_leader: igauge(&r, "hactl_patroni_leader", "1 for the current leader.", &member),
            patroni_members: igauge(&r, "hactl_patroni_members", "Members the cluster lists.", &probe),
            patroni_running: igauge(&r, "hactl_patroni_members_running", "Members whose PostgreSQL runs.", &probe),
            patroni_streaming: igauge(
                &r,
                "hactl_patroni_replicas_streaming",
                "Replicas on the leader's timeline with a known lag under the bound.",
                &probe,
            ),
            patroni_lag: gauge(&r, "hactl_patroni_replica_lag_bytes", "A replica's lag, as Patroni reports it.", &member),
            patroni_timeline: igauge(&r, "hactl_patroni_timeline", "The leader's timeline.", &probe),
            patroni_leader_changes: counter(
                &r,
                "hactl_patroni_leader_changes_total",
                "Leader changes the prober has seen.",
                &probe,
            ),
            write_since_success: gauge(
                &r,
                "hactl_write_seconds_since_success",
                "Seconds since the last acknowledged write.",
                &probe,
            ),
            write_last_outage: gauge(
                &r,
                "hactl_write_last_outage_seconds",
                "The most recent window without acknowledged writes (longer than two intervals).",
                &probe,
            ),
            write_longest_outage: gauge(
                &r,
                "hactl_write_longest_outage_seconds",
                "The longest window without acknowledged writes since the prober started.",
                &probe,
            ),
            write_outages: counter(
                &r,
                "hactl_write_outages_total",
                "Windows without acknowledged writes longer than two intervals.",
                &probe,
            ),
            external: Mutex::new(BTreeMap::new()),
            patroni_members_of: Mutex::new(BTreeMap::new()),
            registry: r,
        }
    }

    /// The text exposition format, external probes' metrics last.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            buf.clear();
        }
        let mut out = String::from_utf8(buf).unwrap_or_default();
        let external = self.external.lock().unwrap_or_else(|e| e.into_inner());
        let mut typed = std::collections::BTreeSet::new();
        for ((probe, dst), samples) in external.iter() {
            for s in samples {
                if typed.insert(s.name.clone()) {
                    out.push_str(&format!("# TYPE {} untyped\n", s.name));
                }
                let mut labels = vec![
                    format!("probe=\"{}\"", escape(probe)),
                    format!("dst=\"{}\"", escape(dst)),
                ];
                labels.extend(s.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")));
                out.push_str(&format!("{}{{{}}} {}\n", s.name, labels.join(","), s.value));
            }
        }
        out
    }

    /// Forgets the per-probe series (Patroni topology, write availability, the histogram) of a
    /// probe that is no longer configured.
    pub fn forget_probe(&self, probe: &str) {
        for g in [
            &self.patroni_leaders,
            &self.patroni_members,
            &self.patroni_running,
            &self.patroni_streaming,
            &self.patroni_timeline,
        ] {
            let _ = g.remove_label_values(&[probe]);
        }
        for g in [
            &self.write_since_success,
            &self.write_last_outage,
            &self.write_longest_outage,
        ] {
            let _ = g.remove_label_values(&[probe]);
        }
        let _ = self.patroni_leader_changes.remove_label_values(&[probe]);
        let _ = self.write_outages.remove_label_values(&[probe]);
        for ptype in [
            "http", "tcp", "postgres", "etcd", "patroni", "write", "external",
        ] {
            let _ = self.duration.remove_label_values(&[probe, ptype]);
        }
        self.patroni_members_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(probe)
            .into_iter()
            .flatten()
            .for_each(|m| {
                let _ = self.patroni_leader.remove_label_values(&[probe, &m]);
                let _ = self.patroni_lag.remove_label_values(&[probe, &m]);
            });
    }

    /// Forgets every series of a target that is no longer probed.
    pub fn forget(&self, probe: &str, dst: &str, ptype: &str) {
        let l = [probe, dst, ptype];
        let _ = self.total.remove_label_values(&l);
        let _ = self.success.remove_label_values(&l);
        let _ = self.latency.remove_label_values(&l);
        let _ = self.timeouts.remove_label_values(&l);
        let _ = self.probe_success.remove_label_values(&l);
        let _ = self.probe_duration.remove_label_values(&l);
        let pd = [probe, dst];
        for g in [
            &self.cert_expiry,
            &self.pg_lag_bytes,
            &self.pg_lag_seconds,
            &self.etcd_leader_id,
            &self.etcd_raft_term,
            &self.etcd_raft_index,
            &self.etcd_db_size,
        ] {
            let _ = g.remove_label_values(&pd);
        }
        for g in [
            &self.http_status,
            &self.pg_is_primary,
            &self.etcd_has_leader,
            &self.etcd_alarms,
        ] {
            let _ = g.remove_label_values(&pd);
        }
        self.external
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(probe.to_string(), dst.to_string()));
    }
}

pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
