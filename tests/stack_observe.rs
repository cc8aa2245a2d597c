//! What people see of a failover on the lab: the prober's status page (checked in Chromium), the
//! failover-test's HTML report (checked in Chromium), and the alerts Alertmanager delivers to the
//! lab's receivers (inventory/lab.yml): a webhook sink and a stand-in for the Telegram Bot API,
//! both on the lab machine, firing and then resolved. Also: the Grafana host's dashboards and
//! datasource.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::sinks::{TelegramMessage, TelegramStandIn, Webhook};
use common::{eventually, lab, text};
use serde_json::Value;

/// The lab machine, as the lab hosts reach it (the bridge's address).
const LAB_MACHINE: &str = "10.213.0.1";
/// inventory/lab.yml's receivers.
const WEBHOOK_PORT: u16 = 9795;
const TELEGRAM_PORT: u16 = 9796;
const TELEGRAM_TOKEN: &str = "123456:hactl-lab";
const TELEGRAM_CHAT: i64 = 4242;
const PROBER: &str = "https://10.213.0.21:9313";

/// Where the test leaves what it rendered, for people to look at.
fn out_dir() -> PathBuf {
    let dir = common::repo().join("target/stack_observe");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Chromium, headless, on `file`: its DOM after load, and a screenshot at `png`.
fn chromium(file: &Path, png: &Path) -> String {
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ];
    let url = format!("file://{}", file.display());
    let shot = Command::new("chromium")
        .args(base)
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1280,1400")
        .arg(&url)
        .output()
        .expect("chromium (Debian's package `chromium`; scripts/preflight.sh installs it)");
    let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
    assert!(
        shot.status.success() && size > 10_000,
        "chromium made no screenshot of {url} ({size} bytes):\n{}",
        text(&shot)
    );
    let dom = Command::new("chromium")
        .args(base)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium");
    assert!(
        dom.status.success(),
        "chromium --dump-dom {url}:\n{}",
        text(&dom)
    );
    String::from_utf8_lossy(&dom.stdout).to_string()
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `YYYY-MM-DD HH:MM:SS` (UTC, as the status page writes it) in seconds since the epoch.
fn parse_utc(s: &str) -> Option<f64> {
    let out = Command::new("date")
        .args(["-u", "-d", s, "+%s"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The webhook's `name` alerts about member `member` that started at or after `since`: when each
/// arrived, and its status (`firing`, `resolved`). Alerts of earlier tests' failovers may still be
/// in flight: those started before.
fn hooked(hook: &Webhook, name: &str, member: &str, since: f64) -> Vec<(SystemTime, String)> {
    hook.messages()
        .into_iter()
        .flat_map(|(at, body)| {
            body["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a["labels"]["alertname"] == name && a["labels"]["member"] == member)
                .filter(|a| {
                    a["startsAt"]
                        .as_str()
                        .and_then(parse_utc)
                        .is_some_and(|t| t >= since)
                })
                .map(move |a| (at, a["status"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

/// A Telegram message (Alertmanager's default text) that lists `name` about `member` under
/// `section` (`Alerts Firing` or `Alerts Resolved`).
fn told(t: &TelegramStandIn, name: &str, member: &str, section: &str) -> Option<TelegramMessage> {
    t.messages().into_iter().find(|m| {
        m.text
            .split("Alerts ")
            .filter(|part| {
                section
                    .strip_prefix("Alerts ")
                    .is_some_and(|s| part.starts_with(s))
            })
            .any(|part| {
                part.split("Labels:").any(|alert| {
                    alert.contains(&format!("alertname = {name}"))
                        && alert.contains(&format!("member = {member}"))
                })
            })
    })
}

#[test]
fn after_a_kill_node_failover_the_page_the_report_and_the_receivers_tell_of_it() {
    let mut lab = lab();
    lab.stack();
    let at = |port| format!("{LAB_MACHINE}:{port}").parse().expect("an address");
    let hook = Webhook::start(at(WEBHOOK_PORT));
    let telegram = TelegramStandIn::start(at(TELEGRAM_PORT), TELEGRAM_TOKEN);
    let started = unix(SystemTime::now());
    let dir = out_dir();
    let report_file = dir.join("failover-report.html");
    let _ = std::fs::remove_file(&report_file);

    let out = common::hactl(&[
        "failover-test",
        "-i",
        &lab.inventory(),
        "--mode",
        "kill-node",
        "--output",
        "json",
        "--report",
        &report_file.to_string_lossy(),
    ]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{}", text(&out)));
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", text(&out));
    let old = report["old_leader"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let new = report["new_leader"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!new.is_empty() && new != old, "{report:#}");

    // The report: a self-contained page with the timeline, as Chromium draws it.
    let html = std::fs::read_to_string(&report_file)
        .unwrap_or_else(|e| panic!("--report {}: {e}", report_file.display()));
    let outside = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !outside.contains("<script")
            && !outside.contains("http://")
            && !outside.contains("https://"),
        "the report fetches nothing and runs no script"
    );
    let dom = chromium(&report_file, &dir.join("failover-report.png"));
    assert!(dom.contains("<svg"), "no SVG timeline:\n{dom}");
    for want in [old.as_str(), new.as_str()] {
        assert!(
            dom.contains(want),
            "the report does not name {want}:\n{dom}"
        );
    }

    // The status page: the new leader leads, and the outage is among the events with its length.
    let page_file = dir.join("status-page.html");
    let (page, outage_s, change_at) = eventually(
        "the prober's status page shows the new leader and the outage",
        Duration::from_secs(60),
        || {
            let page = lab.monitoring_get(&format!("{PROBER}/"));
            if !page.contains(&format!("<tr class=\"leader\"><td>{new}</td>")) {
                return Err(format!("{new} not leading on the page:\n{page}"));
            }
            let change = format!("leader changed from <b>{old}</b> to <b>{new}</b>");
            let change_at = page
                .lines()
                .find(|l| l.contains(&change))
                .and_then(|l| l.strip_prefix("<tr><td>"))
                .and_then(|l| l.split_once("</td>"))
                .and_then(|(at, _)| parse_utc(at))
                .ok_or(format!("no event `{change}`:\n{page}"))?;
            let outage = page
                .lines()
                .filter_map(|l| l.split_once("write outage: <b>"))
                .filter_map(|(_, rest)| rest.split_once(" s</b>"))
                .filter_map(|(s, _)| s.parse::<f64>().ok())
                .next()
                .ok_or(format!("no write outage:\n{page}"))?;
            Ok((page, outage, change_at))
        },
    );
    assert!(
        change_at >= started - 1.0,
        "the leader change event predates the test: {change_at} < {started}"
    );
    // The prober writes every second through the endpoint; the writers of failover-test saw
    // their own gap: both are the same outage, seen from two clients.
    let downtime = report["write_downtime_s"].as_f64().unwrap_or(0.0);
    assert!(
        outage_s >= 2.0 && outage_s <= downtime + 15.0,
        "the page's outage is {outage_s} s, failover-test saw {downtime} s"
    );
    std::fs::write(&page_file, &page).expect("write the page");
    let dom = chromium(&page_file, &dir.join("status-page.png"));
    assert!(
        dom.contains(&new) && dom.contains("write outage") && dom.contains("<svg"),
        "{dom}"
    );

    // Alerts: the leader change reaches both receivers within for (0) + 60 s of the change, and
    // then its resolution (prometheus_event_alert_window after it, in the lab 1 minute).
    let fired = eventually(
        "PatroniLeaderChanged at the webhook",
        Duration::from_secs(120),
        || {
            hooked(&hook, "PatroniLeaderChanged", &new, started)
                .into_iter()
                .find(|(_, s)| s == "firing")
                .map(|(at, _)| at)
                .ok_or(format!("received: {:#?}", hook.messages()))
        },
    );
    let after = unix(fired) - change_at;
    assert!(
        after <= 61.0,
        "the alert came {after:.0} s after the leader change"
    );
    let tg = eventually(
        "PatroniLeaderChanged on Telegram",
        Duration::from_secs(30),
        || {
            told(&telegram, "PatroniLeaderChanged", &new, "Alerts Firing")
                .ok_or(format!("received: {:#?}", telegram.messages()))
        },
    );
    assert_eq!(tg.chat_id, TELEGRAM_CHAT);
    let tg_after = unix(tg.at) - change_at;
    assert!(
        (0.0..=61.0).contains(&tg_after),
        "Telegram was told {tg_after:.0} s after the change: {tg:?}"
    );

    let wait = Instant::now();
    eventually(
        "PatroniLeaderChanged resolved at the webhook",
        Duration::from_secs(300),
        || {
            hooked(&hook, "PatroniLeaderChanged", &new, started)
                .into_iter()
                .find(|(_, s)| s == "resolved")
                .ok_or(format!("received: {:#?}", hook.messages()))
        },
    );
    eventually(
        "PatroniLeaderChanged resolved on Telegram",
        Duration::from_secs(60),
        || {
            told(&telegram, "PatroniLeaderChanged", &new, "Alerts Resolved")
                .ok_or(format!("received: {:#?}", telegram.messages()))
        },
    );
    eprintln!(
        "alert after the change: {after:.1} s; resolved {:.0} s later; page outage {outage_s} s, failover-test {downtime} s",
        wait.elapsed().as_secs_f64()
    );
    // The write outage went to them too.
    assert!(
        hook.messages().iter().any(|(_, b)| b["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["labels"]["alertname"] == "WriteOutage"))),
        "no WriteOutage at the webhook: {:#?}",
        hook.messages()
    );
}

#[test]
fn the_grafana_host_has_the_dashboards_and_a_datasource_that_reaches_prometheus() {
    let mut lab = lab();
    lab.stack();
    for d in ["cluster-overview", "etcd", "hosts", "postgresql", "prober"] {
        let want = std::fs::read_to_string(common::repo().join(format!("dashboards/{d}.json")))
            .expect("dashboard");
        let path = format!("/var/lib/grafana/dashboards/hactl/{d}.json");
        assert_eq!(
            lab.run("prmt-1", &format!("cat {path}")),
            want.trim_end(),
            "{path}"
        );
        assert_eq!(
            lab.run("prmt-1", &format!("stat -c '%a %U %G' {path}")),
            "640 root grafana"
        );
    }
    let ds = "/etc/grafana/provisioning/datasources/hactl.yml";
    assert_eq!(
        lab.run("prmt-1", &format!("stat -c '%a %U %G' {ds}")),
        "640 root grafana"
    );
    assert_eq!(
        lab.run(
            "prmt-1",
            &format!("grep -c '^ *uid: hactl-prometheus$' {ds}")
        ),
        "1",
        "{ds}: the dashboards' datasource uid"
    );
    let url = lab.run("prmt-1", &format!("sed -n 's/^ *url: //p' {ds}"));
    let url = url.trim_matches('"');
    assert!(url.starts_with("https://"), "{ds}: url {url}");
    assert_eq!(
        lab.run("prmt-1", &format!("grep -c '^ *basicAuthPassword: ' {ds}")),
        "1",
        "no password in {ds}"
    );
    // What Grafana would do with it: the query API with the CA and the credentials it names (read
    // on the host: the password stays there).
    let answer = lab.run(
        "prmt-1",
        &format!(
            "p=$(sed -n 's/^ *basicAuthPassword: \"\\(.*\\)\"$/\\1/p' {ds} | sed 's/[$][$]/$/g'); \
             curl -sf --max-time 10 --cacert /etc/grafana/hactl-tls/ca.crt -u \"prometheus:$p\" '{url}/api/v1/query?query=up'"
        ),
    );
    let v: Value = serde_json::from_str(&answer).unwrap_or_default();
    assert_eq!(v["status"], "success", "{answer}");
    let provider = lab.run(
        "prmt-1",
        "cat /etc/grafana/provisioning/dashboards/hactl.yml",
    );
    assert!(
        provider.contains("/var/lib/grafana/dashboards/hactl"),
        "{provider}"
    );
}
