//! Shared by the integration tests: running hactl, waiting for a condition, and the lab — one
//! lab per test run, brought up on first use, one lab test at a time.

#![allow(dead_code)]

pub mod ansible;
pub mod events;
pub mod fixture;
pub mod http;
pub mod metrics;
pub mod release;
pub mod sinks;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const HOSTS: [&str; 4] = ["ptrn-1", "ptrn-2", "ptrn-3", "prmt-1"];
/// The stack's PostgreSQL and Patroni members.
pub const CLUSTER: [&str; 3] = ["ptrn-1", "ptrn-2", "ptrn-3"];
/// curl on a PostgreSQL member asking its own Patroni REST API (`path`: `/cluster`), over https
/// with the lab's CA and the member's certificate.
pub fn patroni_api(path: &str) -> String {
    format!(
        "curl -sf --cacert /etc/patroni/tls/ca.crt --cert /etc/patroni/tls/server.crt \
         --key /etc/patroni/tls/server.key https://$(hostname -I | cut -d' ' -f1):8008{path}"
    )
}

/// etcdctl on an etcd member, over TLS with the member's certificate: its common name is no etcd
/// user, so it may read the cluster's state but no key.
pub const ETCDCTL: &str = "ETCDCTL_API=3 etcdctl --cacert /etc/etcd/tls/ca.crt \
    --cert /etc/etcd/tls/server.crt --key /etc/etcd/tls/server.key";

/// The lab's state directory (`hactl_lab_state_dir` of inventory/lab.yml): `lab down` removes it.
pub const STATE_DIR: &str = "/var/lib/hactl/lab";
/// The lab inventory as shipped. Only read: commands keep state beside their inventory.
const SHIPPED_INVENTORY: &str = "inventory/lab.yml";

/// What this test binary knows of the lab.
struct State {
    up: bool,
    /// The stack was applied and no lab test has failed since.
    stack: bool,
}

static LAB: Mutex<State> = Mutex::new(State {
    up: false,
    stack: false,
});

/// The lab, up, and held by this test alone until the guard is dropped.
pub struct Lab {
    up: MutexGuard<'static, State>,
}

/// Brings the lab up once per test run (later calls find it up) and locks it for one test.
pub fn lab() -> Lab {
    assert!(
        nix_is_root(),
        "the lab tests need root (they make a bridge, mounts and containers): run `sudo scripts/test.sh`"
    );
    let mut up = LAB.lock().unwrap_or_else(|poisoned| {
        // A lab test failed holding it: what it left is not known to be a healthy stack.
        let mut state = poisoned.into_inner();
        state.stack = false;
        state
    });
    if !up.up {
        let out = hactl(&["lab", "up", "-i", &lab_inventory()]);
        assert!(out.status.success(), "lab up failed:\n{}", text(&out));
        up.up = true;
    }
    Lab { up }
}

/// The lab inventory the tests run every command with: a copy of inventory/lab.yml in the lab's
/// state directory, so that what apply, failover-test and probe keep beside an inventory (the
/// secret store) lives and dies with the lab instead of landing in the checkout. A lab made
/// outside the tests (scripts/demo.sh) was applied with the secrets kept beside
/// inventory/lab.yml: the copy starts with those, so the stack's passwords stay the same.
fn lab_inventory() -> String {
    let dir = Path::new(STATE_DIR).join("tests");
    let copy = dir.join("lab.yml");
    if !copy.exists() {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let shipped_store = repo().join("inventory/lab.secrets.yml");
        if shipped_store.exists() {
            std::fs::copy(&shipped_store, dir.join("lab.secrets.yml"))
                .unwrap_or_else(|e| panic!("copy {}: {e}", shipped_store.display()));
        }
        // The CA too, so that the hosts' certificates stay what they are.
        let shipped_pki = repo().join("inventory/lab.pki");
        if shipped_pki.exists() {
            let out = Command::new("cp")
                .arg("-a")
                .arg(&shipped_pki)
                .arg(dir.join("lab.pki"))
                .output()
                .expect("cp");
            assert!(
                out.status.success(),
                "copy {}: {}",
                shipped_pki.display(),
                text(&out)
            );
        }
        std::fs::copy(repo().join(SHIPPED_INVENTORY), &copy)
            .unwrap_or_else(|e| panic!("copy the lab inventory to {}: {e}", copy.display()));
    }
    copy.to_string_lossy().into_owned()
}

impl Lab {
    /// The lab inventory to pass to hactl (see `lab_inventory`).
    pub fn inventory(&self) -> String {
        lab_inventory()
    }

    /// The lab inventory's secret store, as apply fills it.
    /// One secret of the lab's store (the stack's passwords), read as the runner wrote it.
    pub fn secret(&self, name: &str) -> String {
        let path = self.secrets();
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("{}: no secret {name}", path.display()))
    }

    /// curl on this machine asking a monitoring endpoint (`https://10.213.0.21:9090/...`): the
    /// lab's CA and the monitoring credentials. Fails (-f) on an HTTP error.
    pub fn monitoring_curl(&self) -> String {
        let ca = Path::new(&self.inventory()).with_file_name("lab.pki/ca.crt");
        format!(
            "curl -sf --max-time 10 --cacert {} -u prometheus:{}",
            ca.display(),
            self.secret("monitoring")
        )
    }

    /// What a monitoring endpoint answers this machine (empty when it does not).
    pub fn monitoring_get(&self, url: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{} {url}", self.monitoring_curl()))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Prometheus's answer on the monitoring host to an instant `query` (the whole JSON: a query
    /// that does not parse answers `"status": "error"`); Null when it does not answer.
    pub fn prometheus(&self, query: &str) -> serde_json::Value {
        // Percent-encoded: the URL goes through a shell.
        let q: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} https://10.213.0.21:9090/api/v1/query?query={q}",
                self.monitoring_curl().replace("curl -sf", "curl -s")
            ))
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    pub fn secrets(&self) -> PathBuf {
        Path::new(&lab_inventory()).with_file_name("lab.secrets.yml")
    }

    /// Runs a command on a lab host through `hactl lab ssh` (strict host key checking).
    pub fn ssh(&self, host: &str, command: &str) -> Output {
        hactl(&["lab", "ssh", "-i", &self.inventory(), host, command])
    }

    /// Like `ssh`, but the command must succeed; returns its trimmed stdout.
    pub fn run(&self, host: &str, command: &str) -> String {
        let out = self.ssh(host, command);
        assert!(
            out.status.success(),
            "`{command}` on {host} failed:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `hactl lab ACTION HOST` (kill, cut, heal), which must succeed.
    pub fn act(&self, action: &str, host: &str) {
        let out = hactl(&["lab", action, "-i", &self.inventory(), host]);
        assert!(out.status.success(), "lab {action} {host}:\n{}", text(&out));
    }

    /// The leader, as Patroni's `/leader` endpoint answers it on each member (waits up to a
    /// minute for one).
    pub fn leader(&self) -> String {
        eventually(
            "a member answers 200 on Patroni's /leader",
            Duration::from_secs(60),
            || {
                let codes: Vec<String> = CLUSTER
                    .iter()
                    .map(|h| {
                        self.run(
                            h,
                            &format!(
                                "{} -o /dev/null -w '%{{http_code}}' || true",
                                patroni_api("/leader").replace("curl -sf", "curl -s")
                            ),
                        )
                    })
                    .collect();
                CLUSTER
                    .iter()
                    .zip(&codes)
                    .find(|(_, code)| code.trim() == "200")
                    .map(|(h, _)| h.to_string())
                    .ok_or_else(|| format!("answers: {codes:?}"))
            },
        )
    }

    /// The HA stack (the built-in roles/site.yml) applied once per test file: later tests find it
    /// applied, unless a lab test failed since (then it is applied again, which also heals what
    /// that test may have left).
    /// Building it on bare hosts takes minutes, so the files of the tests that need it are named
    /// `stack*.rs`: cargo runs test files in name order, so they run together, after
    /// lab_lifecycle.rs has taken the lab down and stack.rs has built the stack again.
    pub fn stack(&mut self) {
        if self.up.stack {
            return;
        }
        let out = hactl(&["apply", &self.inventory()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        self.up.stack = true;
    }

    /// `hactl failover-test --mode MODE` on the lab by its default path (the lab inventory has
    /// a VIP: through it, HAProxy and PgBouncer), held to the mode's own goal, with a JSON
    /// report: the output and the report.
    pub fn failover(&self, mode: &str) -> (Output, serde_json::Value) {
        self.failover_via(mode, "endpoint")
    }

    /// The same, through `via` (`endpoint` or `direct`).
    pub fn failover_via(&self, mode: &str, via: &str) -> (Output, serde_json::Value) {
        let out = hactl(&[
            "failover-test",
            "-i",
            &self.inventory(),
            "--via",
            via,
            "--mode",
            mode,
            "--output",
            "json",
        ]);
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{mode}: no JSON report ({e}):\n{}", text(&out)));
        (out, report)
    }

    /// Takes the lab down, which must succeed; the next `lab()` brings it up again.
    pub fn down(&mut self) {
        self.up.up = false;
        self.up.stack = false;
        let out = hactl(&["lab", "down", "-i", &self.inventory()]);
        assert!(out.status.success(), "lab down:\n{}", text(&out));
    }

    /// Boots whatever is not running (after a kill, a down or a crash) and waits for it.
    pub fn up(&mut self) {
        let out = hactl(&["lab", "up", "-i", &self.inventory()]);
        assert!(out.status.success(), "lab up:\n{}", text(&out));
        self.up.up = true;
    }
}

/// Calls `check` until it gives a value, every 200 ms for up to `within` (how a test waits for
/// an event: never a bare sleep); then panics naming `what` it waited for, with the last reason
/// `check` gave (a page or a log can run to many lines, so it starts on a line of its own).
pub fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("gave up after {within:?} waiting for: {what}\nthe last check said:\n{last}")
            }
            // The poll interval, not a synchronization: the condition is checked again.
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `eventually`, for what a running `child` should bring about: panics at once if the child
/// ends first.
pub fn eventually_while<T>(
    child: &mut Child,
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    eventually(what, within, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what}: never so, the command ended ({status}) first");
        }
        check()
    })
}

/// Starts hactl in the repository, its output piped.
pub fn spawn_hactl(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(args)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hactl")
}

/// Runs hactl in the repository.
pub fn hactl(args: &[&str]) -> Output {
    hactl_in(&repo(), args)
}

/// Runs hactl in `dir`, so that relative paths in its messages are short.
pub fn hactl_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run hactl")
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// stdout and stderr together, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that `who` (a program) succeeded, showing what it printed otherwise.
#[track_caller]
pub fn assert_success(who: &str, out: &Output) {
    assert!(out.status.success(), "{who} failed:\n{}", text(out));
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL clients' TLS on the lab: the server's certificate checked against the CA in `ca`
/// and the name connected to (verify-full).
pub fn postgres_tls(ca: &Path) -> tokio_postgres_rustls::MakeRustlsConnect {
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.expect("PEM")).expect("CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(tls)
}
