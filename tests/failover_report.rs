//! `failover-test --report FILE`: the page renders in a real browser. A failover needs the lab,
//! so a made-up run's page (`hactl::failover_example_report`) is rendered by headless Chromium,
//! which must be installed (scripts/preflight.sh installs it): without it the test fails.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Chromium gets this long to render one page.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);

/// `chromium --headless ARGS file://PAGE`, with its own profile in `profile`.
fn chromium(profile: &Path, args: &[&str], page: &Path) -> Output {
    let mut child = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run chromium ({e}): this test needs it — apt-get install -y chromium \
                 (scripts/preflight.sh installs it)"
            )
        });
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium {args:?} did not finish within {CHROMIUM_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chromium {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_report_page_renders_its_timeline_and_verdict_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, hactl::failover_example_report()).unwrap();
    let profile = dir.path().join("profile");

    let dom = chromium(&profile, &["--dump-dom"], &page);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let mut missing: Vec<&str> = [
        "<svg",
        "<polyline class=\"series\" data-writer=\"0\"",
        "<polyline class=\"series\" data-writer=\"1\"",
        "pg-a → pg-b",
        "fault: kill-node on pg-a",
        "leader key lost",
        "new leader: pg-b",
        "first write after",
        "pg-a streaming again",
        "FAILED",
        "1 acknowledged writes lost (at most 0 allowed)",
        // The healing error's markup stays text once parsed.
        "ssh pg-a: &lt;b&gt;no route&lt;/b&gt; &amp; \"retry\"",
    ]
    .into_iter()
    .filter(|s| !dom.contains(s))
    .collect();
    if dom.contains("<b>no route</b>") {
        missing.push("(the healing error's <b> became an element)");
    }
    assert!(
        missing.is_empty(),
        "missing from the DOM: {missing:?}\n{dom}"
    );

    let png = dir.path().join("report.png");
    chromium(
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,900",
        ],
        &page,
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(
        bytes.len() > 1000,
        "{} has {} bytes",
        png.display(),
        bytes.len()
    );
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}
