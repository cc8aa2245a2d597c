//! What the prober exposes on /metrics: every run's series (cloudprober's and
//! blackbox_exporter's names) and each kind's own. Every name is documented in the README.
//!
//! Each family is registered with what its labels are ([`Per`]), so that the series of a
//! target or a probe that goes are removed without a list to keep in step.

use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use std::sync::Arc;

use super::board::Board;
use super::kinds;

/// What a family's series are per, which says when they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Per {
    /// Labels `probe`, `dst`, `ptype` (cloudprober's): every run's series.
    Run,
    /// Labels `probe`, `ptype`: the duration histogram.
    ProbeKind,
    /// Labels `probe`, `dst`: a kind's series per target, removed with the target.
    Target,
    /// Label `probe`: a kind's series per probe, removed with the probe.
    Probe,
    /// Labels `probe`, `member`: per cluster member; the kind removes them (it knows the
    /// members).
    Member,
    /// Labels `probe`, `dst`, `type`: per target and type (a backup's); the kind removes them
    /// (it knows the types).
    TargetType,
}

impl Per {
    fn labels(self) -> &'static [&'static str] {
        match self {
            Per::Run => &["probe", "dst", "ptype"],
            Per::ProbeKind => &["probe", "ptype"],
            Per::Target => &["probe", "dst"],
            Per::Probe => &["probe"],
            Per::Member => &["probe", "member"],
            Per::TargetType => &["probe", "dst", "type"],
        }
    }
}

/// A registered family: whose it is, what it is per, and the family itself.
struct Family {
    kind: Option<&'static str>,
    per: Per,
    vec: Box<dyn Remove>,
}

/// A family whose series can be removed by their label values.
trait Remove: Send + Sync {
    fn remove(&self, labels: &[&str]);
}

impl<T: MetricVecBuilder + 'static> Remove for MetricVec<T> {
    fn remove(&self, labels: &[&str]) {
        let _ = self.remove_label_values(labels);
    }
}

/// Every registered family, to remove the series of what goes.
#[derive(Default)]
struct Families(Vec<Family>);

impl Families {
    /// Removes the series of a target (`dst`) or, without one, of a probe of `kind` that goes.
    fn forget(&self, probe: &str, dst: Option<&str>, kind: &str) {
        for f in &self.0 {
            let own = f.kind == Some(kind);
            match (f.per, dst) {
                (Per::Run, Some(dst)) => f.vec.remove(&[probe, dst, kind]),
                (Per::Target, Some(dst)) if own => f.vec.remove(&[probe, dst]),
                (Per::ProbeKind, None) => f.vec.remove(&[probe, kind]),
                (Per::Probe, None) if own => f.vec.remove(&[probe]),
                _ => {}
            }
        }
    }
}

/// Registers families in the prober's registry, for every run (`kind` None) or for a kind.
pub(crate) struct Registrar<'a> {
    registry: &'a Registry,
    kind: Option<&'static str>,
    families: &'a mut Families,
    board: &'a Arc<Board>,
}

impl Registrar<'_> {
    /// The registrar of the runs' families, and then of each kind's.
    fn new<'a>(
        registry: &'a Registry,
        families: &'a mut Families,
        board: &'a Arc<Board>,
    ) -> Registrar<'a> {
        Registrar {
            registry,
            kind: None,
            families,
            board,
        }
    }

    /// The status page's board, for a kind that tells it of events or of its cluster.
    pub fn board(&self) -> Arc<Board> {
        self.board.clone()
    }

    /// The registrar of one kind's families.
    pub fn kind(&mut self, name: &'static str) -> Registrar<'_> {
        Registrar {
            registry: self.registry,
            kind: Some(name),
            families: self.families,
            board: self.board,
        }
    }

    pub fn counter(&mut self, name: &str, help: &str, per: Per) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), per.labels()), per)
    }

    pub fn gauge(&mut self, name: &str, help: &str, per: Per) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), per.labels()), per)
    }

    pub fn int_gauge(&mut self, name: &str, help: &str, per: Per) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), per.labels()), per)
    }

    fn histogram(&mut self, opts: HistogramOpts, per: Per) -> HistogramVec {
        self.add(HistogramVec::new(opts, per.labels()), per)
    }

    fn add<T: MetricVecBuilder + 'static>(
        &mut self,
        vec: prometheus::Result<MetricVec<T>>,
        per: Per,
    ) -> MetricVec<T> {
        // Names and labels are constants of this program: an error here is a bug.
        let vec = vec.expect("a valid metric");
        self.registry
            .register(Box::new(vec.clone()))
            .expect("registered once");
        self.families.0.push(Family {
            kind: self.kind,
            per,
            vec: Box::new(vec.clone()),
        });
        vec
    }
}

pub(crate) struct Metrics {
    registry: Registry,
    families: Families,
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
    /// Each kind's own.
    pub kinds: kinds::Series,
    /// What the status page shows.
    pub board: Arc<Board>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let mut families = Families::default();
        let board = Arc::new(Board::default());
        let mut r = Registrar::new(&registry, &mut families, &board);
        let duration = r.histogram(
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
            Per::ProbeKind,
        );
        let [total, success, latency, timeouts] = [
            ("total", "Probe runs (cloudprober)."),
            ("success", "Successful probe runs (cloudprober)."),
            (
                "latency",
                "Microseconds spent in successful probe runs (cloudprober).",
            ),
            ("timeouts", "Probe runs that timed out (cloudprober)."),
        ]
        .map(|(name, help)| r.counter(name, help, Per::Run));
        let probe_success = r.int_gauge(
            "probe_success",
            "1 if the last run succeeded (blackbox_exporter).",
            Per::Run,
        );
        let probe_duration = r.gauge(
            "probe_duration_seconds",
            "How long the last run took (blackbox_exporter).",
            Per::Run,
        );
        let kinds = kinds::Series::register(&mut r);
        Metrics {
            registry,
            families,
            total,
            success,
            latency,
            timeouts,
            duration,
            probe_success,
            probe_duration,
            kinds,
            board,
        }
    }

    /// The text exposition format; what kinds keep outside the registry comes last.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            buf.clear();
        }
        let mut out = String::from_utf8(buf).unwrap_or_default();
        self.kinds.render(&mut out);
        render_certificates(
            &mut out,
            &crate::stack::tls::certificates_seen(),
            crate::pki::now(),
        );
        out
    }

    /// Removes every series of a target of a probe of `kind` that is no longer probed.
    pub fn forget_target(&self, probe: &str, dst: &str, kind: &str) {
        self.families.forget(probe, Some(dst), kind);
        self.kinds.forget_target(kind, probe, dst);
        self.board.forget_target(probe, dst);
    }

    /// Removes the per-probe series of a probe of `kind` that is gone (or now of another kind).
    pub fn forget_probe(&self, probe: &str, kind: &str) {
        self.families.forget(probe, None, kind);
        self.kinds.forget_probe(kind, probe);
        self.board.forget_probe(probe);
    }
}

/// Days left on every certificate the probes' TLS clients verified, by server.
fn render_certificates(out: &mut String, seen: &[(String, i64)], now: i64) {
    if seen.is_empty() {
        return;
    }
    out.push_str("# HELP hactl_tls_cert_expiry_days Days until the certificate a server showed the prober ends.\n");
    out.push_str("# TYPE hactl_tls_cert_expiry_days gauge\n");
    for (server, not_after) in seen {
        let days = (not_after - now) as f64 / 86_400.0;
        let server = server.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "hactl_tls_cert_expiry_days{{server=\"{server}\"}} {days:.3}\n"
        ));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_certificate_met_gets_its_days_left() {
        let mut out = String::new();
        super::render_certificates(&mut out, &[("10.0.0.1".into(), 86_400 * 20)], 86_400 * 5);
        assert!(
            out.contains("hactl_tls_cert_expiry_days{server=\"10.0.0.1\"} 15.000\n"),
            "{out}"
        );
        let mut none = String::new();
        super::render_certificates(&mut none, &[], 0);
        assert!(none.is_empty());
    }

    use super::*;

    /// The series on a registry's page, one `name{labels}` a line.
    fn series(registry: &Registry) -> Vec<String> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_string())
            .collect()
    }

    #[test]
    fn what_goes_takes_its_series_and_only_those() {
        let registry = Registry::new();
        let mut families = Families::default();
        let board = Arc::new(Board::default());
        let mut r = Registrar::new(&registry, &mut families, &board);
        let runs = r.counter("total", "runs", Per::Run);
        let hist = r.histogram(HistogramOpts::new("took", "took"), Per::ProbeKind);
        let (a_target, a_probe, a_member) = {
            let mut a = r.kind("a");
            (
                a.gauge("a_target", "x", Per::Target),
                a.int_gauge("a_probe", "x", Per::Probe),
                a.gauge("a_member", "x", Per::Member),
            )
        };
        let b_target = r.kind("b").gauge("b_target", "x", Per::Target);
        for (probe, dst) in [("p", "d1"), ("p", "d2"), ("q", "d1")] {
            runs.with_label_values(&[probe, dst, "a"]).inc();
            a_target.with_label_values(&[probe, dst]).set(1.0);
            b_target.with_label_values(&[probe, dst]).set(1.0);
        }
        for probe in ["p", "q"] {
            hist.with_label_values(&[probe, "a"]).observe(1.0);
            a_probe.with_label_values(&[probe]).set(1);
            a_member.with_label_values(&[probe, "m1"]).set(1.0);
        }

        families.forget("p", Some("d1"), "a");
        let left = series(&registry);
        let gone = |s: &&String| s.contains(r#"dst="d1",probe="p""#) && !s.starts_with("b_");
        assert_eq!(left.iter().filter(gone).count(), 0, "{left:#?}");
        assert!(
            left.contains(&r#"b_target{dst="d1",probe="p"}"#.to_string()),
            "another kind's: {left:#?}"
        );
        assert!(
            left.contains(&r#"a_target{dst="d2",probe="p"}"#.to_string()),
            "{left:#?}"
        );
        assert!(
            left.contains(&r#"total{dst="d1",probe="q",ptype="a"}"#.to_string()),
            "{left:#?}"
        );

        families.forget("p", None, "a");
        let left = series(&registry);
        assert!(
            !left
                .iter()
                .any(|s| s.starts_with("a_probe{probe=\"p\"")
                    || s.starts_with("took_count{probe=\"p\"")),
            "{left:#?}"
        );
        assert!(
            left.contains(&r#"a_probe{probe="q"}"#.to_string()),
            "{left:#?}"
        );
        assert!(
            left.contains(&r#"a_member{member="m1",probe="p"}"#.to_string()),
            "the kind's to remove: {left:#?}"
        );
    }
}
