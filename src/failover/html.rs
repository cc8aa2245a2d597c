//! `--report FILE`: one test as a self-contained HTML page (inline CSS and SVG, no script, nothing
//! fetched): the verdict, the report's figures, and a timeline of the acknowledged writes per
//! writer with the fault and what followed it marked. No I/O: unit-tested.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::report::{rows, Report};
use super::verdict::{self, KeyEvent, Recording, Row, Stored};
use super::workload::Ack;
use super::{expect, Mode};

/// A bucket of the timeline: 100 ms.
const BUCKET_NS: i128 = 100_000_000;
const BUCKETS_PER_S: i64 = 10;

// The chart's geometry (SVG user units): the plot spans LEFT..RIGHT and TOP..BOTTOM; above it,
// a row per marker's label (at most 5), so that close markers stay readable and no label
// covers a line.
const WIDTH: f64 = 1100.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 1080.0;
const LABEL_ROW: f64 = 15.0;
const FIRST_LABEL: f64 = 24.0;
const TOP: f64 = FIRST_LABEL + 5.0 * LABEL_ROW - 7.0;
const BOTTOM: f64 = 380.0;

/// A colour per writer, reused past eight writers.
const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
];

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 16px; margin: 16px 0 6px; }
.result { padding: 2px 8px; border-radius: 4px; color: #fff; }
.result.passed { background: #2e7d32; }
.result.failed { background: #c62828; }
.top { display: flex; gap: 24px; align-items: flex-start; }
.top section { flex: 0 1 440px; }
.figures { flex: 1 1 620px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; margin: 0; }
dt { color: #555; }
dd { margin: 0; font-weight: 600; }
.problems li { color: #c62828; }
table { border-collapse: collapse; font-size: 12px; line-height: 1.25; }
td { padding: 1px 6px; border-bottom: 1px solid #eee; vertical-align: top; }
td:first-child { color: #555; white-space: nowrap; }
.legend { list-style: none; padding: 0; margin: 0 0 4px; display: flex; gap: 16px; }
.legend span { display: inline-block; width: 14px; height: 3px; margin-right: 4px; vertical-align: middle; }
svg text { font: 12px system-ui, sans-serif; fill: #333; }
.grid { stroke: #eee; }
.axis { stroke: #888; }
.series { fill: none; stroke-width: 1.5; }
.marker line { stroke-width: 1.5; stroke-dasharray: 4 3; }
.marker text { paint-order: stroke; stroke: #fff; stroke-width: 3px; font-weight: 600; }
#marker-fault line { stroke: #c62828; stroke-dasharray: none; }
#marker-leader-key-lost line { stroke: #ef6c00; }
#marker-new-leader line { stroke: #2e7d32; }
#marker-writes-resumed line { stroke: #1565c0; }
#marker-back line { stroke: #6a1b9a; }
";

/// The page for `rec` and its `report`.
pub fn html(rec: &Recording, report: &Report) -> String {
    let series = series(&rec.acks, rec.fault_at);
    let markers = markers(rec, report);
    let verdict = if report.passed { "passed" } else { "failed" };
    let hit = rec.hit.join(", ");
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>hactl failover-test: {mode} on {hit}: {VERDICT}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n<h1>failover-test: {mode} on {hit} \
         <span class=\"result {verdict}\">{VERDICT}</span></h1>\n",
        mode = report.mode,
        hit = escape(&hit),
        VERDICT = verdict.to_uppercase(),
    );
    page.push_str("<div class=\"top\">\n<section>\n");
    page.push_str(&summary(report));
    page.push_str("</section>\n");
    page.push_str(&figures(report));
    page.push_str("</div>\n<h2>Acknowledged writes per 100 ms, per writer</h2>\n");
    page.push_str(&legend(&series));
    page.push_str(&chart(&series, &markers));
    page.push_str("</body>\n</html>\n");
    page
}

/// Mode, path, leaders, downtime, lost writes and the problems.
fn summary(r: &Report) -> String {
    let s = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{s:.3} s"));
    let items = [
        ("mode", r.mode.to_string()),
        ("path", r.path.clone()),
        (
            "leader",
            format!(
                "{} → {}",
                r.old_leader,
                r.new_leader.as_deref().unwrap_or("none")
            ),
        ),
        (
            "write downtime",
            format!("{} (at most {} s)", s(r.write_downtime_s), r.max_downtime_s),
        ),
        (
            "lost acknowledged writes",
            format!("{} (at most {})", r.lost_acked_writes, r.max_lost),
        ),
    ];
    let mut out = String::from("<dl>\n");
    for (k, v) in items {
        let _ = writeln!(out, "<dt>{k}</dt><dd>{}</dd>", escape(&v));
    }
    out.push_str("</dl>\n");
    if r.problems.is_empty() {
        out.push_str("<p>Every check passed.</p>\n");
    } else {
        out.push_str("<h2>Problems</h2>\n<ul class=\"problems\">\n");
        for p in &r.problems {
            let _ = writeln!(out, "<li>{}</li>", escape(p));
        }
        out.push_str("</ul>\n");
    }
    out
}

/// The report's figures, as the text table has them (the result is in the summary).
fn figures(r: &Report) -> String {
    let mut out = String::from("<table class=\"figures\">\n");
    for (k, v) in rows(r).iter().filter(|(k, _)| *k != "result") {
        let _ = writeln!(out, "<tr><td>{k}</td><td>{}</td></tr>", escape(v));
    }
    out.push_str("</table>\n");
    out
}

fn legend(series: &[Series]) -> String {
    let mut out = String::from("<ul class=\"legend\">");
    for (i, s) in series.iter().enumerate() {
        let _ = write!(
            out,
            "<li><span style=\"background:{}\"></span>writer {}</li>",
            colour(i),
            s.writer
        );
    }
    out.push_str("</ul>\n");
    out
}

fn colour(i: usize) -> &'static str {
    COLOURS[i % COLOURS.len()]
}

/// One writer's acknowledged writes per bucket: bucket k holds those from k × 100 ms to
/// (k + 1) × 100 ms after the fault (negative: before it).
#[derive(Debug, PartialEq)]
struct Series {
    writer: i32,
    per_bucket: BTreeMap<i64, usize>,
}

/// A series per writer that had a write acknowledged, by writer.
fn series(acks: &[Ack], fault_at: Instant) -> Vec<Series> {
    let mut by_writer: BTreeMap<i32, BTreeMap<i64, usize>> = BTreeMap::new();
    for a in acks {
        let bucket = nanos_from(fault_at, a.at).div_euclid(BUCKET_NS) as i64;
        *by_writer
            .entry(a.writer)
            .or_default()
            .entry(bucket)
            .or_default() += 1;
    }
    by_writer
        .into_iter()
        .map(|(writer, per_bucket)| Series { writer, per_bucket })
        .collect()
}

/// Nanoseconds from `fault_at` to `at` (negative: before the fault).
fn nanos_from(fault_at: Instant, at: Instant) -> i128 {
    match at.checked_duration_since(fault_at) {
        Some(d) => d.as_nanos() as i128,
        None => -((fault_at - at).as_nanos() as i128),
    }
}

fn seconds_from(fault_at: Instant, at: Instant) -> f64 {
    nanos_from(fault_at, at) as f64 / 1e9
}

/// A moment of the test drawn across the chart.
struct Marker {
    id: &'static str,
    /// Seconds from the fault.
    at_s: f64,
    label: String,
}

/// The fault, the leader key's loss, the new leader's election, the first write after the
/// fault, and what was hit being back: those the test saw.
fn markers(rec: &Recording, report: &Report) -> Vec<Marker> {
    let hit = rec.hit.join(", ");
    let mut markers = vec![Marker {
        id: "fault",
        at_s: 0.0,
        label: match hit.as_str() {
            "" => format!("fault: {}", rec.mode),
            _ => format!("fault: {} on {hit}", rec.mode),
        },
    }];
    let mut add = |id, at_s: Option<f64>, label: String| {
        if let Some(at_s) = at_s {
            markers.push(Marker { id, at_s, label });
        }
    };
    add(
        "leader-key-lost",
        report.leader_key_lost_s,
        "leader key lost".into(),
    );
    let elected = verdict::elected(&rec.key_events, rec.fault_at, &rec.old_leader)
        .and_then(|e| e.holder.as_deref());
    if let Some(holder) = elected {
        add(
            "new-leader",
            report.leader_elected_s,
            format!("new leader: {holder}"),
        );
    }
    add(
        "writes-resumed",
        rec.resumed_at.map(|t| seconds_from(rec.fault_at, t)),
        "first write after".into(),
    );
    let back = match report.old_leader_rejoined_s {
        Some(_) => format!("{} streaming again", rec.old_leader),
        None if hit.is_empty() => "back".into(),
        None => format!("{hit} back"),
    };
    add("back", report.back_s, back);
    markers
}

/// Seconds from the fault (whole seconds around every write and marker) to x, and acknowledged
/// writes per bucket (0 to `top`) to y.
struct Scale {
    from_s: i64,
    to_s: i64,
    top: usize,
    /// Writes between y tick labels: at most 5 steps.
    y_step: usize,
}

impl Scale {
    fn of(series: &[Series], markers: &[Marker]) -> Scale {
        let buckets = series.iter().flat_map(|s| s.per_bucket.keys().copied());
        let ends = buckets
            .flat_map(|b| {
                [
                    b as f64 / BUCKETS_PER_S as f64,
                    (b + 1) as f64 / BUCKETS_PER_S as f64,
                ]
            })
            .chain(markers.iter().map(|m| m.at_s));
        let (lo, hi) = ends.fold((0.0f64, 0.0f64), |(lo, hi), s| (lo.min(s), hi.max(s)));
        let from_s = lo.floor() as i64;
        let to_s = (hi.ceil() as i64).max(from_s + 1);
        let most = series
            .iter()
            .flat_map(|s| s.per_bucket.values().copied())
            .max()
            .unwrap_or(0);
        let y_step = most.div_ceil(5).max(1);
        Scale {
            from_s,
            to_s,
            top: most.max(1).div_ceil(y_step) * y_step,
            y_step,
        }
    }

    fn x(&self, s: f64) -> f64 {
        LEFT + (s - self.from_s as f64) / (self.to_s - self.from_s) as f64 * (RIGHT - LEFT)
    }

    fn y(&self, n: usize) -> f64 {
        BOTTOM - n as f64 / self.top as f64 * (BOTTOM - TOP)
    }
}

/// Seconds between x tick labels: at most 12 labels.
fn x_step(span_s: i64) -> i64 {
    [1, 2, 5, 10, 15, 30, 60, 120, 300, 600]
        .into_iter()
        .find(|step| span_s / step <= 12)
        .unwrap_or((span_s + 11) / 12)
}

fn chart(series: &[Series], markers: &[Marker]) -> String {
    let scale = Scale::of(series, markers);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" \
         aria-label=\"acknowledged writes per 100 ms, per writer, around the fault\">"
    );
    let step = x_step(scale.to_s - scale.from_s);
    let first_tick = scale.from_s.div_euclid(step) * step;
    for s in (first_tick..=scale.to_s)
        .step_by(step as usize)
        .filter(|s| *s >= scale.from_s)
    {
        let x = scale.x(s as f64);
        let _ = writeln!(
            svg,
            "<g class=\"xtick\" data-s=\"{s}\"><line class=\"grid\" x1=\"{x:.2}\" x2=\"{x:.2}\" \
             y1=\"{TOP}\" y2=\"{BOTTOM}\"/><text x=\"{x:.2}\" y=\"{}\" \
             text-anchor=\"middle\">{s}</text></g>",
            BOTTOM + 16.0
        );
    }
    for n in (0..=scale.top).step_by(scale.y_step) {
        let y = scale.y(n);
        let _ = writeln!(
            svg,
            "<g class=\"ytick\" data-n=\"{n}\"><line class=\"grid\" x1=\"{LEFT}\" x2=\"{RIGHT}\" \
             y1=\"{y:.2}\" y2=\"{y:.2}\"/><text x=\"{}\" y=\"{:.2}\" \
             text-anchor=\"end\">{n}</text></g>",
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{RIGHT}\" y1=\"{BOTTOM}\" y2=\"{BOTTOM}\"/>\n\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{BOTTOM}\"/>\n\
         <text x=\"{:.2}\" y=\"{}\" text-anchor=\"middle\">seconds from the fault</text>\n\
         <text transform=\"translate(16 {:.2}) rotate(-90)\" \
         text-anchor=\"middle\">acknowledged writes per 100 ms</text>",
        (LEFT + RIGHT) / 2.0,
        HEIGHT - 4.0,
        (TOP + BOTTOM) / 2.0
    );
    let buckets = scale.from_s * BUCKETS_PER_S..scale.to_s * BUCKETS_PER_S;
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = buckets
            .clone()
            .map(|b| {
                let n = s.per_bucket.get(&b).copied().unwrap_or(0);
                let middle = (b as f64 + 0.5) / BUCKETS_PER_S as f64;
                format!("{:.2},{:.2}", scale.x(middle), scale.y(n))
            })
            .collect();
        let _ = writeln!(
            svg,
            "<polyline class=\"series\" data-writer=\"{}\" stroke=\"{}\" points=\"{}\"/>",
            s.writer,
            colour(i),
            points.join(" ")
        );
    }
    for (row, m) in markers.iter().enumerate() {
        let x = scale.x(m.at_s);
        let y = FIRST_LABEL + row as f64 * LABEL_ROW;
        // Labels right of the middle end at their line, so that they stay inside the chart.
        let (anchor, text_x) = if x > (LEFT + RIGHT) / 2.0 {
            ("end", x - 4.0)
        } else {
            ("start", x + 4.0)
        };
        let label = escape(&m.label);
        let _ = writeln!(
            svg,
            "<g class=\"marker\" id=\"marker-{}\"><title>{label}: {:.3} s</title>\
             <line x1=\"{x:.2}\" x2=\"{x:.2}\" y1=\"{:.2}\" y2=\"{BOTTOM}\"/>\
             <text x=\"{text_x:.2}\" y=\"{y:.2}\" text-anchor=\"{anchor}\">{label}</text></g>",
            m.id,
            m.at_s,
            y - 11.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// `s` as HTML text or an attribute's value.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page of a made-up kill-node run, for the test that renders it in a browser: pg-a loses
/// power with writer 0 writing every 50 ms and writer 1 every 100 ms from 3 s before; etcd sees the leader key
/// lost after 1 s and pg-b take it after 2.5 s; writes resume on pg-b after 5 s; pg-a streams
/// again after 20 s. It fails: one acknowledged write is lost, and healing failed with
/// `ssh pg-a: <b>no route</b> & "retry"` (markup that must show as text).
#[doc(hidden)]
pub fn example() -> String {
    let rec = example_recording(Instant::now());
    html(&rec, &verdict::verdict(&rec, 0))
}

/// [`example`]'s recording, its fault 100 s after `now`.
fn example_recording(now: Instant) -> Recording {
    let fault_at = now + Duration::from_secs(100);
    let at = |ms: i64| match ms {
        0.. => fault_at + Duration::from_millis(ms as u64),
        _ => fault_at - Duration::from_millis(ms.unsigned_abs()),
    };
    let (a, b) = ("10.0.0.1", "10.0.0.2");
    let mut acks = Vec::new();
    let mut rows = Vec::new();
    for writer in 0..2 {
        let every = 50 * (i64::from(writer) + 1);
        let offset = 50 * i64::from(writer);
        let before = (-3_000 / every..0).map(|i| (i * every + offset, a, 3, -60_000));
        let after = (5_000 / every..=12_000 / every).map(|i| (i * every + offset, b, 4, 4_900));
        for (seq, (ms, server, timeline, connected_ms)) in (1..).zip(before.chain(after)) {
            acks.push(Ack {
                writer,
                seq,
                sent_at: at(ms - 5),
                at: at(ms),
                server: server.into(),
                timeline,
                connected_at: at(connected_ms),
            });
            // Writer 1's last write before the fault never reached pg-b.
            if !(writer == 1 && ms == -50) {
                rows.push(Row {
                    writer,
                    seq,
                    at: 1_700_000_000.0 + ms as f64 / 1000.0,
                });
            }
        }
    }
    let config = crate::stack::patroni::DynamicConfig {
        ttl: 30,
        loop_wait: 6,
        failsafe_mode: true,
        synchronous_mode: true,
    };
    let event = |ms, holder: Option<&str>| KeyEvent {
        at: at(ms),
        holder: holder.map(str::to_string),
    };
    Recording {
        mode: Mode::KillNode,
        path: "direct".into(),
        expected: expect::expectation(Mode::KillNode, &config, 10.0, None),
        hit: vec!["pg-a".into()],
        old_leader: "pg-a".into(),
        new_leader: Some("pg-b".into()),
        new_leader_address: Some(b.into()),
        fault_at,
        resumed_at: Some(at(5_000)),
        acks,
        stored: Stored::Rows(rows),
        key_events: vec![
            event(-5_000, Some("pg-a")),
            event(1_000, None),
            event(2_500, Some("pg-b")),
        ],
        back: Some(Duration::from_secs(20)),
        sync_standby_during: None,
        etcd_leader_before: None,
        etcd_leader_after: None,
        heal_error: Some("ssh pg-a: <b>no route</b> & \"retry\"".into()),
        unhealthy_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number in `attr="…"` after the first `anchor` in `page`.
    fn number_after(page: &str, anchor: &str, attr: &str) -> f64 {
        let from = page
            .find(anchor)
            .unwrap_or_else(|| panic!("{anchor} not in the page"));
        let rest = &page[from..];
        let start = rest.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
        let end = start + rest[start..].find('"').unwrap();
        rest[start..end].parse().unwrap()
    }

    fn tick_x(page: &str, s: i64) -> f64 {
        number_after(page, &format!("<g class=\"xtick\" data-s=\"{s}\">"), "x1")
    }

    fn marker_x(page: &str, id: &str) -> f64 {
        number_after(page, &format!("id=\"marker-{id}\""), "x1")
    }

    #[test]
    fn each_marker_sits_at_its_time_on_the_seconds_axis() {
        let rec = example_recording(Instant::now());
        let page = html(&rec, &verdict::verdict(&rec, 0));
        let zero = tick_x(&page, 0);
        let per_s = (tick_x(&page, 10) - zero) / 10.0;
        assert!(per_s > 0.0);
        for (id, s) in [
            ("fault", 0.0),
            ("leader-key-lost", 1.0),
            ("new-leader", 2.5),
            ("writes-resumed", 5.0),
            ("back", 20.0),
        ] {
            let x = marker_x(&page, id);
            assert!(
                (x - (zero + s * per_s)).abs() < 0.02,
                "{id} at x {x}, expected {s} s: {}",
                zero + s * per_s
            );
        }
        for label in [
            "fault: kill-node on pg-a",
            "leader key lost",
            "new leader: pg-b",
            "first write after",
            "pg-a streaming again",
        ] {
            assert!(page.contains(&format!(">{label}</text>")), "{label}");
        }
    }

    #[test]
    fn the_axis_spans_the_writes_and_the_markers_in_whole_seconds() {
        let rec = example_recording(Instant::now());
        let page = html(&rec, &verdict::verdict(&rec, 0));
        // From the first write, 3 s before the fault, to pg-a back 20 s after it: a label
        // every 2 s.
        let zero = LEFT + 3.0 / 23.0 * (RIGHT - LEFT);
        assert!((tick_x(&page, 0) - zero).abs() < 0.01);
        assert_eq!(tick_x(&page, 20), RIGHT);
        let labels: Vec<&str> = page
            .split("<g class=\"xtick\" data-s=\"")
            .skip(1)
            .map(|t| &t[..t.find('"').unwrap()])
            .collect();
        assert_eq!(
            labels,
            ["-2", "0", "2", "4", "6", "8", "10", "12", "14", "16", "18", "20"]
        );
    }

    #[test]
    fn a_marker_the_test_did_not_see_is_not_drawn() {
        let mut rec = example_recording(Instant::now());
        rec.key_events.clear();
        rec.back = None;
        rec.resumed_at = None;
        let page = html(&rec, &verdict::verdict(&rec, 0));
        assert!(page.contains("id=\"marker-fault\""));
        for id in ["leader-key-lost", "new-leader", "writes-resumed", "back"] {
            assert!(!page.contains(&format!("id=\"marker-{id}\"")), "{id}");
        }
    }

    #[test]
    fn the_old_leader_taking_the_key_again_is_no_new_leader() {
        let mut rec = example_recording(Instant::now());
        rec.key_events[2].holder = Some("pg-a".into());
        let page = html(&rec, &verdict::verdict(&rec, 0));
        assert!(!page.contains("id=\"marker-new-leader\""));
        assert!(page.contains("id=\"marker-leader-key-lost\""));
    }

    #[test]
    fn acknowledged_writes_are_counted_per_writer_per_100_ms_from_the_fault() {
        let now = Instant::now();
        let fault_at = now + Duration::from_secs(10);
        let ack = |writer, at| Ack {
            writer,
            seq: 0,
            sent_at: at,
            at,
            server: "10.0.0.1".into(),
            timeline: 1,
            connected_at: now,
        };
        let ms = Duration::from_millis;
        let acks = [
            ack(0, fault_at),
            ack(0, fault_at + ms(30)),
            ack(0, fault_at + ms(99)),
            ack(0, fault_at + ms(100)),
            ack(1, fault_at - ms(1)),
            ack(1, fault_at - ms(100)),
            ack(1, fault_at - ms(101)),
        ];
        assert_eq!(
            series(&acks, fault_at),
            [
                Series {
                    writer: 0,
                    per_bucket: BTreeMap::from([(0, 3), (1, 1)]),
                },
                Series {
                    writer: 1,
                    per_bucket: BTreeMap::from([(-2, 1), (-1, 2)]),
                },
            ]
        );
    }

    #[test]
    fn each_writer_has_one_line_with_a_point_per_bucket() {
        let rec = example_recording(Instant::now());
        let page = html(&rec, &verdict::verdict(&rec, 0));
        assert_eq!(page.matches("<polyline class=\"series\"").count(), 2);
        for writer in 0..2 {
            let from = page.find(&format!("data-writer=\"{writer}\"")).unwrap();
            let start = from + page[from..].find("points=\"").unwrap() + 8;
            let points = &page[start..start + page[start..].find('"').unwrap()];
            // -3 s to 20 s.
            assert_eq!(points.split(' ').count(), 230, "writer {writer}");
        }
        assert!(page.contains("writer 0</li>") && page.contains("writer 1</li>"));
        // Writer 0 writes twice per bucket: the y axis tops out at 2.
        assert!(page.contains("<g class=\"ytick\" data-n=\"2\">"));
        assert!(!page.contains("data-n=\"3\""));
    }

    #[test]
    fn host_names_and_problems_are_escaped() {
        let mut rec = example_recording(Instant::now());
        rec.hit = vec!["pg-<a>".into()];
        rec.old_leader = "pg-<a>".into();
        rec.new_leader = Some("pg-\"b\"&".into());
        rec.key_events[2].holder = Some("pg-\"b\"&".into());
        let page = html(&rec, &verdict::verdict(&rec, 0));
        assert!(!page.contains("<b>") && !page.contains("pg-<a>") && !page.contains("\"b\"&"));
        assert!(page.contains("ssh pg-a: &lt;b&gt;no route&lt;/b&gt; &amp; &quot;retry&quot;"));
        assert!(page.contains("fault: kill-node on pg-&lt;a&gt;"));
        assert!(page.contains("new leader: pg-&quot;b&quot;&amp;"));
        assert!(page.contains("pg-&lt;a&gt; → pg-&quot;b&quot;&amp;"));
    }

    #[test]
    fn the_summary_says_failed_with_each_problem_or_passed() {
        let rec = example_recording(Instant::now());
        let report = verdict::verdict(&rec, 0);
        let page = html(&rec, &report);
        assert!(page.contains("<span class=\"result failed\">FAILED</span>"));
        assert!(page.contains("<li>1 acknowledged writes lost (at most 0 allowed)</li>"));
        assert!(page.contains("<dt>write downtime</dt><dd>5.050 s (at most 36 s)</dd>"));
        assert!(page.contains("<dt>lost acknowledged writes</dt><dd>1 (at most 0)</dd>"));
        assert!(page.contains("<dt>path</dt><dd>direct</dd>"));
        assert!(page.contains("<tr><td>timeline</td><td>3 -&gt; 4</td></tr>"));

        let mut healed = example_recording(Instant::now());
        healed.heal_error = None;
        let page = html(&healed, &verdict::verdict(&healed, 1));
        assert!(page.contains("<span class=\"result passed\">PASSED</span>"));
        assert!(page.contains("Every check passed."));
        assert!(!page.contains("class=\"problems\""));
    }

    #[test]
    fn the_page_fetches_nothing_and_runs_no_script() {
        let page = example();
        assert!(page.starts_with("<!DOCTYPE html>"));
        for outside in ["<script", "src=", "href=", "@import", "url("] {
            assert!(!page.contains(outside), "{outside}");
        }
    }
}
