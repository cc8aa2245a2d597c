//! The status page at `/`, like cloudprober's: the clusters' members as the patroni probes last
//! saw them, each probe's success ratio and latency over the last hour (minute by minute, as
//! small inline SVG charts), and recent events (leader changes, write outages). Server-rendered
//! HTML that refreshes itself every 30 s; nothing on it is fetched from elsewhere.
//!
//! The board is fed by the scheduler (every run) and by the kinds that see events (`patroni`,
//! `write`); it keeps an hour of minutes per probe and the last [`EVENTS`] events, in memory.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::stack::patroni::{Cluster, Role};

/// Minutes of history per probe.
const MINUTES: u64 = 60;
/// Events kept.
const EVENTS: usize = 50;

/// One minute of a probe's runs, over all its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Minute {
    /// Minutes since the epoch.
    at: u64,
    runs: u32,
    ok: u32,
    /// Summed over the successful runs.
    latency_us: u64,
}

#[derive(Debug, Default)]
struct History {
    kind: &'static str,
    minutes: VecDeque<Minute>,
    /// Each target's last run: succeeded or not.
    last: BTreeMap<String, bool>,
}

/// A member as a patroni probe last saw it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemberView {
    pub name: String,
    pub role: &'static str,
    pub state: String,
    pub timeline: Option<u64>,
    pub lag: Option<u64>,
}

#[derive(Debug, Clone)]
struct ClusterView {
    at: SystemTime,
    members: Vec<MemberView>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum What {
    LeaderChange {
        from: String,
        to: String,
    },
    /// A window without acknowledged writes, which ended at the event's time.
    Outage {
        seconds: f64,
    },
}

#[derive(Debug, Clone)]
struct Event {
    at: SystemTime,
    probe: String,
    what: What,
}

#[derive(Default)]
struct Inner {
    probes: BTreeMap<String, History>,
    clusters: BTreeMap<String, ClusterView>,
    events: VecDeque<Event>,
}

#[derive(Default)]
pub(crate) struct Board {
    inner: Mutex<Inner>,
}

fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One run of `probe` against `target`.
    pub fn run(&self, probe: &str, kind: &'static str, target: &str, ok: bool, took: Duration) {
        self.run_at(SystemTime::now(), probe, kind, target, ok, took);
    }

    fn run_at(
        &self,
        now: SystemTime,
        probe: &str,
        kind: &'static str,
        target: &str,
        ok: bool,
        took: Duration,
    ) {
        let minute = minute_of(now);
        let mut inner = self.lock();
        let h = inner.probes.entry(probe.to_string()).or_default();
        h.kind = kind;
        if h.minutes.back().is_none_or(|m| m.at != minute) {
            h.minutes.push_back(Minute {
                at: minute,
                ..Minute::default()
            });
        }
        while h.minutes.front().is_some_and(|m| m.at + MINUTES <= minute) {
            h.minutes.pop_front();
        }
        if let Some(m) = h.minutes.back_mut() {
            m.runs += 1;
            if ok {
                m.ok += 1;
                m.latency_us += took.as_micros() as u64;
            }
        }
        h.last.insert(target.to_string(), ok);
    }

    /// The members of the cluster `probe` watches, as it just saw them.
    pub fn cluster(&self, probe: &str, cluster: &Cluster) {
        let members = cluster
            .members
            .iter()
            .map(|m| MemberView {
                name: m.name.clone(),
                role: match m.role {
                    Role::Leader => "leader",
                    Role::StandbyLeader => "standby leader",
                    Role::SyncStandby => "sync standby",
                    Role::Replica => "replica",
                    Role::Other => "other",
                },
                state: m.state.name().to_string(),
                timeline: m.timeline,
                lag: m.lag,
            })
            .collect();
        self.lock().clusters.insert(
            probe.to_string(),
            ClusterView {
                at: SystemTime::now(),
                members,
            },
        );
    }

    pub fn event(&self, probe: &str, what: What) {
        self.event_at(SystemTime::now(), probe, what);
    }

    fn event_at(&self, at: SystemTime, probe: &str, what: What) {
        let mut inner = self.lock();
        inner.events.push_back(Event {
            at,
            probe: probe.to_string(),
            what,
        });
        while inner.events.len() > EVENTS {
            inner.events.pop_front();
        }
    }

    /// A target no longer probed.
    pub fn forget_target(&self, probe: &str, target: &str) {
        if let Some(h) = self.lock().probes.get_mut(probe) {
            h.last.remove(target);
        }
    }

    /// A probe that is gone: its history and its cluster (its events stay: they happened).
    pub fn forget_probe(&self, probe: &str) {
        let mut inner = self.lock();
        inner.probes.remove(probe);
        inner.clusters.remove(probe);
    }

    /// The page.
    pub fn page(&self, host: &str) -> String {
        self.page_at(SystemTime::now(), host)
    }

    fn page_at(&self, now: SystemTime, host: &str) -> String {
        let inner = self.lock();
        let mut o = String::new();
        let title = format!("hactl probe on {}", esc(host));
        let _ = write!(
            o,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"30\"><title>{title}</title>\n<style>{CSS}</style></head>\n\
             <body><h1>{title}</h1><p class=\"dim\">{} UTC · refreshes every 30 s · \
             <a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a></p>\n",
            utc(now)
        );

        o.push_str("<h2>Clusters</h2>\n");
        if inner.clusters.is_empty() {
            o.push_str("<p class=\"dim\">No patroni probe has seen a cluster yet.</p>\n");
        }
        for (probe, c) in &inner.clusters {
            let ago = now.duration_since(c.at).unwrap_or_default().as_secs();
            let leaders = c
                .members
                .iter()
                .filter(|m| m.role.contains("leader"))
                .count();
            let _ = write!(
                o,
                "<section class=\"cluster\" id=\"cluster-{p}\"><h3>{p} <span class=\"dim\">seen {ago} s ago</span>{}</h3>\n\
                 <table><tr><th>Member</th><th>Role</th><th>State</th><th>Timeline</th><th>Lag</th></tr>\n",
                match leaders {
                    1 => String::new(),
                    0 => " <span class=\"bad\">no leader</span>".into(),
                    n => format!(" <span class=\"bad\">{n} leaders</span>"),
                },
                p = esc(probe),
            );
            for m in &c.members {
                let class = match (m.role, m.state.as_str()) {
                    (r, _) if r.contains("leader") => "leader",
                    (_, "streaming" | "running") => "ok",
                    _ => "bad",
                };
                let _ = writeln!(
                    o,
                    "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&m.name),
                    m.role,
                    esc(&m.state),
                    m.timeline.map_or("-".into(), |t| t.to_string()),
                    match (m.role.contains("leader"), m.lag) {
                        (true, _) => "-".to_string(),
                        (false, Some(l)) => bytes(l),
                        (false, None) => "unknown".into(),
                    },
                );
            }
            o.push_str("</table></section>\n");
        }

        let now_minute = minute_of(now);
        let _ = write!(
            o,
            "<h2>Probes</h2>\n<table class=\"probes\"><tr><th>Probe</th><th>Type</th><th>Targets up</th>\
             <th>Success, last hour</th><th>Success ratio per minute</th><th>Mean latency</th>\
             <th>Latency per minute</th></tr>\n"
        );
        for (probe, h) in &inner.probes {
            let minutes: Vec<Minute> = h
                .minutes
                .iter()
                .filter(|m| m.at + MINUTES > now_minute)
                .copied()
                .collect();
            let runs: u64 = minutes.iter().map(|m| u64::from(m.runs)).sum();
            let ok: u64 = minutes.iter().map(|m| u64::from(m.ok)).sum();
            let lat: u64 = minutes.iter().map(|m| m.latency_us).sum();
            let up = h.last.values().filter(|v| **v).count();
            let ratio = (runs > 0).then(|| ok as f64 / runs as f64);
            let class = match ratio {
                Some(r) if r >= 0.999 => "ok",
                Some(_) => "bad",
                None => "dim",
            };
            let _ = writeln!(
                o,
                "<tr id=\"probe-{p}\"><td>{p}</td><td>{}</td><td class=\"{}\">{up} of {}</td>\
                 <td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                h.kind,
                if up == h.last.len() { "ok" } else { "bad" },
                h.last.len(),
                ratio.map_or("-".into(), |r| format!("{:.2} % of {runs}", r * 100.0)),
                chart(
                    &series(&minutes, now_minute, |m| {
                        (m.runs > 0).then(|| f64::from(m.ok) / f64::from(m.runs))
                    }),
                    Some(1.0),
                    "success ratio"
                ),
                if ok > 0 {
                    millis(lat as f64 / ok as f64 / 1000.0)
                } else {
                    "-".into()
                },
                chart(
                    &series(&minutes, now_minute, |m| {
                        (m.ok > 0).then(|| m.latency_us as f64 / f64::from(m.ok) / 1000.0)
                    }),
                    None,
                    "ms"
                ),
                p = esc(probe),
            );
        }
        o.push_str("</table>\n");

        o.push_str("<h2>Recent events</h2>\n");
        if inner.events.is_empty() {
            o.push_str("<p class=\"dim\">None since the prober started.</p>\n");
        } else {
            o.push_str(
                "<table class=\"events\"><tr><th>When (UTC)</th><th>Probe</th><th>What</th></tr>\n",
            );
            for e in inner.events.iter().rev() {
                let what = match &e.what {
                    What::LeaderChange { from, to } => format!(
                        "leader changed from <b>{}</b> to <b>{}</b>",
                        esc(from),
                        esc(to)
                    ),
                    What::Outage { seconds } => format!(
                        "write outage: <b>{seconds:.1} s</b> without an acknowledged write, from {} to {}",
                        utc(e.at
                            .checked_sub(Duration::from_secs_f64(*seconds))
                            .unwrap_or(e.at)),
                        utc(e.at)
                    ),
                };
                let _ = writeln!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{what}</td></tr>",
                    utc(e.at),
                    esc(&e.probe)
                );
            }
            o.push_str("</table>\n");
        }
        o.push_str("</body></html>\n");
        o
    }
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}h3{font-size:1em}\
table{border-collapse:collapse}td,th{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}\
.dim{color:#888;font-weight:normal}.ok{color:#1a7f37}.bad{color:#c62828;font-weight:bold}\
tr.leader td:first-child{font-weight:bold}svg{display:block}";

/// The value of each of the last [`MINUTES`] minutes, oldest first (None: no run that minute).
fn series(
    minutes: &[Minute],
    now: u64,
    value: impl Fn(&Minute) -> Option<f64>,
) -> Vec<Option<f64>> {
    let first = (now + 1).saturating_sub(MINUTES);
    (first..=now)
        .map(|at| minutes.iter().find(|m| m.at == at).and_then(&value))
        .collect()
}

/// A small line chart of `values` (gaps where None), scaled to `max` or to the largest value.
fn chart(values: &[Option<f64>], max: Option<f64>, unit: &str) -> String {
    const W: f64 = 180.0;
    const H: f64 = 32.0;
    let top = max
        .or_else(|| values.iter().flatten().copied().reduce(f64::max))
        .filter(|t| *t > 0.0)
        .unwrap_or(1.0);
    let step = W / (values.len().max(2) - 1) as f64;
    let mut lines = Vec::new();
    let mut current = String::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => {
                let y = H - 2.0 - (v / top).clamp(0.0, 1.0) * (H - 4.0);
                let _ = write!(current, "{:.1},{:.1} ", i as f64 * step, y);
            }
            None if !current.is_empty() => lines.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    let mut svg = format!(
        "<svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\"><title>{} per minute, last hour (top: {})</title>\
         <rect width=\"{W}\" height=\"{H}\" fill=\"#f6f8fa\"/>",
        esc(unit),
        if unit == "ms" { millis(top) } else { format!("{top}") }
    );
    for points in lines {
        if points.split(' ').filter(|p| !p.is_empty()).count() == 1 {
            let (x, y) = points.trim().split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                svg,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"1.5\" fill=\"#0969da\"/>"
            );
        } else {
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"{}\"/>",
                points.trim()
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn millis(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}

/// `YYYY-MM-DD HH:MM:SS`, UTC.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match time::OffsetDateTime::from_unix_timestamp(secs as i64) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => secs.to_string(),
    }
}

/// Text for HTML.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u64, second: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(minute * 60 + second)
    }

    #[test]
    fn runs_are_counted_per_minute_and_an_hour_is_kept() {
        let b = Board::default();
        let ms = Duration::from_millis;
        b.run_at(at(1000, 1), "p", "tcp", "a", true, ms(2));
        b.run_at(at(1000, 30), "p", "tcp", "b", false, ms(9));
        b.run_at(at(1001, 0), "p", "tcp", "a", true, ms(4));
        {
            let inner = b.lock();
            let h = &inner.probes["p"];
            assert_eq!(
                h.minutes.iter().copied().collect::<Vec<_>>(),
                vec![
                    Minute {
                        at: 1000,
                        runs: 2,
                        ok: 1,
                        latency_us: 2000
                    },
                    Minute {
                        at: 1001,
                        runs: 1,
                        ok: 1,
                        latency_us: 4000
                    },
                ]
            );
            assert_eq!(h.last.get("b"), Some(&false));
        }
        // An hour later, only the last minute's run is left.
        b.run_at(at(1060, 0), "p", "tcp", "a", true, ms(1));
        let inner = b.lock();
        let kept: Vec<u64> = inner.probes["p"].minutes.iter().map(|m| m.at).collect();
        assert_eq!(kept, vec![1001, 1060]);
    }

    #[test]
    fn the_page_shows_members_ratios_charts_and_events_escaped() {
        let b = Board::default();
        let now = at(2000, 10);
        for (i, ok) in [true, true, false, true].into_iter().enumerate() {
            b.run_at(
                at(1990 + i as u64, 0),
                "write",
                "write",
                "a,b",
                ok,
                Duration::from_millis(3),
            );
        }
        let cluster = Cluster::parse(
            r#"{"members":[{"name":"pg-1","role":"leader","state":"running","timeline":3},
               {"name":"pg-2","role":"sync_standby","state":"streaming","timeline":3,"lag":0},
               {"name":"pg<3>","role":"replica","state":"stopped","lag":"unknown"}]}"#,
        )
        .unwrap();
        b.cluster("main", &cluster);
        b.event_at(
            at(1995, 5),
            "main",
            What::LeaderChange {
                from: "pg-2".into(),
                to: "pg-1".into(),
            },
        );
        b.event_at(at(1995, 9), "write", What::Outage { seconds: 12.34 });
        let page = b.page_at(now, "mon-1");
        assert!(
            page.contains("<title>hactl probe on mon-1</title>"),
            "{page}"
        );
        assert!(page.contains("<tr class=\"leader\"><td>pg-1</td><td>leader</td><td>running</td><td>3</td><td>-</td></tr>"), "{page}");
        assert!(
            page.contains(
                "<td>pg-2</td><td>sync standby</td><td>streaming</td><td>3</td><td>0 B</td>"
            ),
            "{page}"
        );
        assert!(
            page.contains(
                "<td>pg&lt;3&gt;</td><td>replica</td><td>stopped</td><td>-</td><td>unknown</td>"
            ),
            "{page}"
        );
        assert!(page.contains("75.00 % of 4"), "{page}");
        assert!(page.contains("<td class=\"ok\">1 of 1</td>"), "{page}");
        assert!(
            page.contains("leader changed from <b>pg-2</b> to <b>pg-1</b>"),
            "{page}"
        );
        assert!(page.contains("write outage: <b>12.3 s</b>"), "{page}");
        // Newest event first.
        assert!(page.find("write outage").unwrap() < page.find("leader changed").unwrap());
        assert_eq!(page.matches("<svg").count(), 2, "{page}");
        assert!(!page.contains("<script"), "no JavaScript");
    }

    #[test]
    fn charts_break_where_no_run_was_made() {
        let svg = chart(
            &[Some(1.0), Some(0.5), None, Some(1.0)],
            Some(1.0),
            "success ratio",
        );
        assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
        assert!(svg.contains("points=\"0.0,2.0 60.0,16.0\""), "{svg}");
    }

    #[test]
    fn events_are_bounded() {
        let b = Board::default();
        for i in 0..(EVENTS + 5) {
            b.event_at(at(i as u64, 0), "w", What::Outage { seconds: i as f64 });
        }
        let inner = b.lock();
        assert_eq!(inner.events.len(), EVENTS);
        assert_eq!(
            inner.events.front().map(|e| e.what.clone()),
            Some(What::Outage { seconds: 5.0 })
        );
    }
}
