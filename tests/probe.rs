//! `hactl probe` end to end, on this machine only: local HTTP, TCP and command targets, the real
//! binary as a child process, and what a user reads on /metrics and /healthz.

mod common;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::eventually;
use common::http::http_get;
use common::metrics::Metrics;
use tempfile::TempDir;

/// How long a test waits for the prober to get somewhere.
const PATIENCE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Local servers

/// A free local port: bound, then released.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// An HTTP/1.1 server on a thread: `/ok` answers 200 with a body the probes look for, `/fail`
/// 500, `/mismatch` 200 with another body, and `/hang` accepts the request and never answers.
fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the HTTP server");
    let addr = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || http_answer(stream));
        }
    });
    addr
}

fn http_answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (status, body) = match path.as_str() {
        "/ok" => ("200 OK", "hello from the test server: status=green\n"),
        "/fail" => ("500 Internal Server Error", "status=green but broken\n"),
        "/mismatch" => ("200 OK", "status=red\n"),
        // Patroni's view of a healthy cluster: a leader and a streaming replica.
        "/cluster" => (
            "200 OK",
            r#"{"members":[{"name":"m1","role":"leader","state":"running","timeline":1},{"name":"m2","role":"replica","state":"streaming","timeline":1,"lag":0}]}"#,
        ),
        "/hang" => {
            // Never answer; hold the connection until the prober gives up on it.
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            return;
        }
        _ => ("404 Not Found", "not found\n"),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.shutdown(Shutdown::Write);
}

/// A TCP listener that accepts (and drops) every connection.
fn tcp_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TCP server");
    let addr = listener.local_addr().expect("local addr");
    thread::spawn(move || for _stream in listener.incoming() {});
    addr
}

/// A TCP server that accepts every connection and never answers: each is held until the client
/// closes it (a PostgreSQL that never gets to its startup reply).
fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the silent server");
    let addr = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// A listener whose accept queue is full, so that a new connect hangs (the kernel drops the
/// SYN, and the client retransmits it after 1 s, 3 s, ...): its backlog is set to 0 with a
/// second listen(2), then connections are opened, and never accepted, until one times out.
/// The listener and the connections that got in are returned: they must stay open.
fn hanging_tcp_server() -> (TcpListener, Vec<TcpStream>) {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the full listener");
    let addr = listener.local_addr().expect("local addr");
    // SAFETY: listen(2) on a socket we own; Linux lets a listening socket change its backlog.
    let rc = unsafe { nix::libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(rc, 0, "listen(fd, 0): {}", std::io::Error::last_os_error());
    let mut queued = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => queued.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (listener, queued),
            Err(e) => panic!("filling the accept queue of {addr}: {e}"),
        }
    }
    panic!("the accept queue of {addr} never filled: connects do not hang on this kernel");
}

// ---------------------------------------------------------------------------------------------
// The prober

fn hactl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hactl"))
}

/// A YAML double-quoted scalar (a JSON string is one).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string")
}

/// A running `hactl probe`, killed when dropped (also when a test panics).
struct Prober {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
    stderr: PathBuf,
    dir: TempDir,
}

impl Prober {
    /// Writes `config` and starts `hactl probe` on it, listening on a free local port.
    fn start(config: &str) -> Prober {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("probes.yml");
        fs::write(&path, config).expect("write the config");
        let stderr = dir.path().join("stderr.log");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("an address");
        let child = hactl()
            .args(["probe", "--config"])
            .arg(&path)
            .args(["--listen", &addr.to_string()])
            .env("HACTL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).expect("create stderr.log"))
            .spawn()
            .expect("start hactl probe");
        Prober {
            child,
            addr,
            config: path,
            stderr,
            dir,
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// The /metrics text, or None when nothing answers (yet).
    fn metrics_text(&self) -> Option<String> {
        match http_get(self.addr, "/metrics") {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    fn metrics(&self) -> Metrics {
        let text = self
            .metrics_text()
            .unwrap_or_else(|| panic!("no /metrics on {}:\n{}", self.addr, self.stderr()));
        Metrics::parse(&text)
    }

    /// Polls /metrics until `done` holds; panics with the metrics and stderr after PATIENCE.
    fn wait_for(&mut self, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
        let mut last = String::new();
        eventually(what, PATIENCE, || {
            if let Some(text) = self.metrics_text() {
                let m = Metrics::parse(&text);
                if done(&m) {
                    return Ok(m);
                }
                last = text;
            }
            if !self.running() {
                panic!(
                    "hactl probe exited ({:?}) while waiting for {what}\nstderr:\n{}",
                    self.child.try_wait(),
                    self.stderr()
                );
            }
            Err(format!(
                "--- /metrics ---\n{last}\n--- stderr ---\n{}",
                self.stderr()
            ))
        })
    }

    /// Waits for `needle` on the prober's stderr (a log line); returns all of stderr.
    fn wait_for_log(&self, needle: &str) -> String {
        eventually(&format!("{needle:?} on stderr"), PATIENCE, || {
            let stderr = self.stderr();
            if stderr.contains(needle) {
                Ok(stderr)
            } else {
                Err(stderr)
            }
        })
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal hactl probe");
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// http

#[test]
fn http_probes_check_status_and_body_and_time_out_without_delaying_others() {
    let web = http_server();
    let url = |path: &str| format!("http://{web}{path}");
    let (ok, fail, mismatch, hang) = (url("/ok"), url("/fail"), url("/mismatch"), url("/hang"));
    let config = format!(
        r#"probes:
  - name: web_ok
    type: http
    interval: 200ms
    timeout: 150ms
    targets: [{ok}]
    http: {{status: [200], body: "status=(green|yellow)", method: GET, headers: {{X-Probe: hactl}}}}
  - name: web_fail
    type: http
    interval: 200ms
    timeout: 150ms
    targets: [{fail}]
    http: {{status: [200], body: "status=green"}}
  - name: web_mismatch
    type: http
    interval: 200ms
    timeout: 150ms
    targets: [{mismatch}]
    http: {{status: [200], body: "status=green"}}
  - name: web_hang
    type: http
    interval: 2s
    timeout: 1500ms
    targets: [{hang}]
"#,
        ok = q(&ok),
        fail = q(&fail),
        mismatch = q(&mismatch),
        hang = q(&hang),
    );
    let mut prober = Prober::start(&config);

    let m = prober.wait_for(
        "every http probe to run, and the hanging one to give up",
        |m| {
            m.count("total", "web_ok", &ok) >= 3.0
                && m.every_run("success", "web_ok", &ok)
                && m.count("total", "web_fail", &fail) >= 3.0
                && m.count("total", "web_mismatch", &mismatch) >= 3.0
                && m.count("total", "web_hang", &hang) >= 1.0
        },
    );

    // Success: 200 and a matching body.
    let total = m.count("total", "web_ok", &ok);
    m.assert_count("success", "web_ok", &ok, total);
    m.assert_is("probe_success", "web_ok", &ok, Some(1.0));
    m.assert_is("hactl_http_status_code", "web_ok", &ok, Some(200.0));
    assert_eq!(
        m.get("total", &[("probe", "web_ok"), ("ptype", "http")]),
        Some(total),
        "ptype label:\n{}",
        m.text
    );
    assert!(m.count("latency", "web_ok", &ok) > 0.0, "{}", m.text);
    assert!(
        m.get(
            "hactl_probe_duration_seconds_count",
            &[("probe", "web_ok"), ("ptype", "http")]
        )
        .is_some_and(|c| c >= total - 1.0),
        "histogram:\n{}",
        m.text
    );
    assert!(m.of("probe_duration_seconds", "web_ok", &ok).is_some());

    // A status that is not in the list fails, even with a matching body.
    m.assert_is("probe_success", "web_fail", &fail, Some(0.0));
    m.assert_count("success", "web_fail", &fail, 0.0);
    m.assert_is("hactl_http_status_code", "web_fail", &fail, Some(500.0));
    m.assert_count("timeouts", "web_fail", &fail, 0.0);

    // A body that does not match fails, even with 200.
    m.assert_is("probe_success", "web_mismatch", &mismatch, Some(0.0));
    m.assert_count("success", "web_mismatch", &mismatch, 0.0);
    m.assert_is(
        "hactl_http_status_code",
        "web_mismatch",
        &mismatch,
        Some(200.0),
    );

    // A server that never answers: a failure after the timeout (whether it also counts in
    // `timeouts` is http_timeouts_are_counted_as_timeouts).
    m.assert_is("probe_success", "web_hang", &hang, Some(0.0));
    m.assert_count("success", "web_hang", &hang, 0.0);
    let took = m.of("probe_duration_seconds", "web_hang", &hang);
    assert!(
        took.is_some_and(|t| (1.4..2.0).contains(&t)),
        "web_hang took {took:?} s with a 1.5 s timeout:\n{}",
        m.text
    );

    // The hanging target does not hold the healthy probe back: it keeps its 200 ms pace (8
    // runs take 1.6 s), while each run of web_hang waits 1.5 s of every 2, and the hanging
    // target is probed again (its first run ended before `start`, so the second ends within 2 s).
    let before = m.count("total", "web_ok", &ok);
    let start = Instant::now();
    let m = prober.wait_for(
        "web_ok to run 8 more times, and web_hang a second time",
        |m| {
            m.count("total", "web_ok", &ok) >= before + 8.0
                && m.count("total", "web_hang", &hang) >= 2.0
        },
    );
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} for 8 runs of web_ok at a 200 ms interval and a second of web_hang at 2 s:\n{}",
        m.text
    );
    prober.wait_for("every web_ok run to succeed", |m| {
        m.every_run("success", "web_ok", &ok)
    });
}

/// A run that times out counts in `timeouts`, as it does for tcp and external probes.
#[test]
fn http_timeouts_are_counted_as_timeouts() {
    let hang = format!("http://{}/hang", http_server());
    let config = format!(
        "probes:\n  - name: web_hang\n    type: http\n    interval: 600ms\n    timeout: 300ms\n    targets: [{}]\n",
        q(&hang)
    );
    let mut prober = Prober::start(&config);
    let m = prober.wait_for("three runs, all timed out", |m| {
        m.count("total", "web_hang", &hang) >= 3.0 && m.every_run("timeouts", "web_hang", &hang)
    });
    m.assert_is("probe_success", "web_hang", &hang, Some(0.0));
}

/// A CA and a server certificate for 127.0.0.1 valid `days` days, made with the openssl CLI,
/// served by `openssl s_server -www` (200 with a status page for any GET).
struct TlsServer {
    child: Child,
    addr: SocketAddr,
    ca: PathBuf,
    _dir: TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tls_server(days: u32) -> TlsServer {
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path();
    let days = days.to_string();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3650",
            "-subj",
            "/CN=hactl test CA",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext.cnf");
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            &days,
            "-extfile",
            "ext.cnf",
        ],
    );
    let port = free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(port.to_string())
        .args(["-cert", "server.pem", "-key", "server.key"])
        .current_dir(d)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
    eventually("openssl s_server to listen", PATIENCE, || {
        TcpStream::connect(addr)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    TlsServer {
        child,
        addr,
        ca: d.join("ca.pem"),
        _dir: dir,
    }
}

#[test]
fn https_probes_check_the_certificate_chain_and_its_expiry() {
    let server = tls_server(30);
    let url = format!("https://{}/", server.addr);
    let ca = server.ca.display().to_string();
    let config = format!(
        "probes:
  - name: tls_ok
    type: http
    interval: 500ms
    timeout: 400ms
    targets: [{u}]
    http: {{ca_file: {ca}, cert_expiry_min: 7d}}
  - name: tls_expiring
    type: http
    interval: 500ms
    timeout: 400ms
    targets: [{u}]
    http: {{ca_file: {ca}, cert_expiry_min: 60d}}
  - name: tls_untrusted
    type: http
    interval: 500ms
    timeout: 400ms
    targets: [{u}]
",
        u = q(&url),
        ca = q(&ca)
    );
    let mut prober = Prober::start(&config);
    let m = prober.wait_for("every https probe ran three times", |m| {
        ["tls_ok", "tls_expiring", "tls_untrusted"]
            .iter()
            .all(|p| m.count("total", p, &url) >= 3.0)
            && m.every_run("success", "tls_ok", &url)
    });
    // Trusted through ca_file, 30 days left: success, and the expiry is exported.
    m.assert_is("probe_success", "tls_ok", &url, Some(1.0));
    let left = m
        .get(
            "hactl_tls_cert_expiry_seconds",
            &[("probe", "tls_ok"), ("dst", &url)],
        )
        .unwrap_or_else(|| panic!("no expiry metric:\n{}", m.text));
    let day = 86_400.0;
    assert!(
        left > 29.0 * day && left <= 30.0 * day + 3600.0,
        "{left} s left, not about 30 days"
    );
    // 30 days left is less than the 60 wanted: a failure that says so.
    m.assert_is("probe_success", "tls_expiring", &url, Some(0.0));
    m.assert_count("timeouts", "tls_expiring", &url, 0.0);
    // Without the CA the chain is not trusted: a failure, not a timeout.
    m.assert_is("probe_success", "tls_untrusted", &url, Some(0.0));
    m.assert_count("success", "tls_untrusted", &url, 0.0);
    m.assert_count("timeouts", "tls_untrusted", &url, 0.0);
    let log = prober.stderr();
    assert!(
        log.contains("the certificate expires in 29 days")
            || log.contains("the certificate expires in 30 days"),
        "{log}"
    );
    assert!(log.contains("UnknownIssuer"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// tcp

#[test]
fn tcp_probes_connect_fail_on_refusal_and_time_out_on_a_full_backlog() {
    let open = tcp_server().to_string();
    let closed = format!("127.0.0.1:{}", free_port());
    let (full_listener, _queued) = hanging_tcp_server();
    let full = full_listener.local_addr().expect("local addr").to_string();
    let config = format!(
        r#"probes:
  - name: tcp_open
    type: tcp
    interval: 200ms
    timeout: 150ms
    targets: [{open}]
  - name: tcp_closed
    type: tcp
    interval: 200ms
    timeout: 150ms
    targets: [{closed}]
  - name: tcp_full
    type: tcp
    interval: 1s
    timeout: 300ms
    targets: [{full}]
"#,
        open = q(&open),
        closed = q(&closed),
        full = q(&full),
    );
    let mut prober = Prober::start(&config);
    let m = prober.wait_for("the tcp probes to run", |m| {
        m.count("total", "tcp_open", &open) >= 3.0
            && m.every_run("success", "tcp_open", &open)
            && m.count("total", "tcp_closed", &closed) >= 3.0
            && m.count("timeouts", "tcp_full", &full) >= 2.0
            && m.every_run("timeouts", "tcp_full", &full)
    });

    let total = m.count("total", "tcp_open", &open);
    m.assert_count("success", "tcp_open", &open, total);
    m.assert_is("probe_success", "tcp_open", &open, Some(1.0));
    assert_eq!(
        m.get("probe_success", &[("probe", "tcp_open"), ("ptype", "tcp")]),
        Some(1.0)
    );

    // Nothing listens: refused at once, a failure but no timeout.
    m.assert_is("probe_success", "tcp_closed", &closed, Some(0.0));
    m.assert_count("success", "tcp_closed", &closed, 0.0);
    m.assert_count("timeouts", "tcp_closed", &closed, 0.0);

    // The SYN is dropped: every run times out (waited for above).
    m.assert_is("probe_success", "tcp_full", &full, Some(0.0));
    m.assert_count("success", "tcp_full", &full, 0.0);
}

// ---------------------------------------------------------------------------------------------
// external

/// Whether a process exists; a zombie counts (dead, but not reaped: a leak of its own).
fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A process's state letter from /proc/PID/stat (R, S, Z, ...), None when it does not exist.
fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

#[test]
fn external_probes_export_metrics_fail_on_exit_codes_and_are_killed_on_timeout() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pidfile = dir.path().join("slow.pid");
    let config = format!(
        r#"probes:
  - name: ext_ok
    type: external
    interval: 300ms
    timeout: 250ms
    external:
      command: ["sh", "-c", {ok}]
  - name: ext_fail
    type: external
    interval: 300ms
    timeout: 250ms
    external:
      command: ["sh", "-c", "echo 'queue_depth 9'; echo broken >&2; exit 1"]
  - name: ext_slow
    type: external
    interval: 30s
    timeout: 300ms
    external:
      command: ["sh", "-c", {slow}]
"#,
        ok = q(r#"echo 'queue_depth 3'; echo 'rows{table="a b",db="x"} 7.5'; echo junk; exit 0"#),
        slow = q(&format!(
            "echo $$ > {}; exec sleep 5",
            pidfile.to_str().expect("a UTF-8 path")
        )),
    );
    let mut prober = Prober::start(&config);
    let m = prober.wait_for(
        "the external probes to run and the slow one to time out",
        |m| {
            m.count("total", "ext_ok", "local") >= 2.0
                && m.every_run("success", "ext_ok", "local")
                && m.count("total", "ext_fail", "local") >= 2.0
                && m.count("timeouts", "ext_slow", "local") >= 1.0
        },
    );

    let total = m.count("total", "ext_ok", "local");
    m.assert_count("success", "ext_ok", "local", total);
    m.assert_is("probe_success", "ext_ok", "local", Some(1.0));
    assert_eq!(
        m.get(
            "probe_success",
            &[("probe", "ext_ok"), ("ptype", "external")]
        ),
        Some(1.0)
    );
    // The command's own metrics, with the probe's labels.
    m.assert_is("queue_depth", "ext_ok", "local", Some(3.0));
    assert_eq!(
        m.get(
            "rows",
            &[
                ("probe", "ext_ok"),
                ("dst", "local"),
                ("table", "a b"),
                ("db", "x")
            ]
        ),
        Some(7.5),
        "{}",
        m.text
    );
    assert!(!m.text.contains("junk"), "{}", m.text);

    // Exit 1: a failure (its metrics still count).
    m.assert_is("probe_success", "ext_fail", "local", Some(0.0));
    m.assert_count("success", "ext_fail", "local", 0.0);
    m.assert_count("timeouts", "ext_fail", "local", 0.0);
    m.assert_is("queue_depth", "ext_fail", "local", Some(9.0));

    // Too slow: a timeout, and the command is killed, not left to run its 5 s.
    m.assert_is("probe_success", "ext_slow", "local", Some(0.0));
    m.assert_count("success", "ext_slow", "local", 0.0);
    let pid: i32 = fs::read_to_string(&pidfile)
        .expect("the slow command wrote its pid")
        .trim()
        .parse()
        .expect("a pid");
    eventually(
        &format!("`sleep 5` (pid {pid}) to be killed after its run timed out"),
        Duration::from_secs(2),
        || match pid_exists(pid) {
            false => Ok(()),
            true => Err(fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()),
        },
    );
}

/// A command that times out is killed with everything it started (its process group): a child
/// it left in the background does not outlive the run.
#[test]
fn a_timed_out_external_commands_own_children_are_killed_too() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pidfile = dir.path().join("child.pid");
    let script = format!(
        "sleep 7 & echo $! > '{}'; wait",
        pidfile.to_str().expect("a UTF-8 path")
    );
    let config = format!(
        "probes:\n  - name: ext_kids\n    type: external\n    interval: 1s\n    timeout: 300ms\n    external:\n      command: [\"sh\", \"-c\", {}]\n",
        q(&script)
    );
    let mut prober = Prober::start(&config);
    let m = prober.wait_for("a run of ext_kids to time out", |m| {
        m.count("timeouts", "ext_kids", "local") >= 1.0
    });
    m.assert_is("probe_success", "ext_kids", "local", Some(0.0));

    // The background `sleep 7` of a run (the file is rewritten by every run: retry a read that
    // catches it empty).
    let pid: i32 = eventually(
        &format!(
            "the command to write its child's pid to {}",
            pidfile.display()
        ),
        PATIENCE,
        || {
            let text = fs::read_to_string(&pidfile).unwrap_or_default();
            text.trim()
                .parse()
                .map_err(|_| format!("{text:?}\nstderr:\n{}", prober.stderr()))
        },
    );
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    // Do not leave it behind if it outlives its run.
    let _guard = KillOnPanic(pid);
    // Gone, or a zombie waiting for init to reap it: either way no longer running.
    eventually(
        &format!(
            "the timed-out command's background child `{cmdline}` (pid {pid}) to be killed with \
             the command's process group"
        ),
        Duration::from_secs(2),
        || match process_state(pid) {
            None | Some('Z' | 'X') => Ok(()),
            state => Err(format!(
                "state {state:?}\n/proc/{pid}/stat: {}",
                fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
            )),
        },
    );
}

/// SIGKILLs a process if the test fails while it may still run.
struct KillOnPanic(i32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// config errors

/// Runs hactl, waiting at most PATIENCE for it to exit: (status, stdout, stderr).
fn run_hactl(args: &[&str], dir: &Path) -> (ExitStatus, String, String) {
    let out = dir.join("out.log");
    let err = dir.join("err.log");
    let mut child = Reaped(
        hactl()
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("create out.log"))
            .stderr(File::create(&err).expect("create err.log"))
            .spawn()
            .expect("run hactl"),
    );
    let status = eventually(&format!("hactl {args:?} to exit"), PATIENCE, || match child
        .0
        .try_wait()
        .expect("try_wait")
    {
        Some(status) => Ok(status),
        None => Err(format!(
            "stderr:\n{}",
            fs::read_to_string(&err).unwrap_or_default()
        )),
    });
    (
        status,
        fs::read_to_string(&out).unwrap_or_default(),
        fs::read_to_string(&err).unwrap_or_default(),
    )
}

/// A child process, killed and reaped when dropped (also when a test panics).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The 1-based line of the first line of `text` that contains `needle` (after `after` lines).
fn line_of(text: &str, needle: &str, after: usize) -> usize {
    text.lines()
        .enumerate()
        .skip(after)
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} is not in:\n{text}"))
}

/// `config` makes `hactl probe` exit 4 with `FILE:LINE:` and `words` on stderr, and nothing
/// listening.
fn assert_config_error(case: &str, config: &str, line: usize, words: &[&str]) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("probes.yml");
    fs::write(&file, config).expect("write the config");
    let file = file.to_str().expect("a UTF-8 path");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (status, _, stderr) = run_hactl(
        &["probe", "--config", file, "--listen", &listen],
        dir.path(),
    );
    let context = format!("{case}: {status}\nstderr:\n{stderr}\nconfig:\n{config}");
    assert_eq!(status.code(), Some(4), "{context}");
    let at = format!("{file}:{line}: ");
    assert!(stderr.contains(&at), "{case}: expected {at:?}\n{context}");
    for w in words {
        assert!(stderr.contains(w), "{case}: expected {w:?}\n{context}");
    }
    assert!(
        TcpStream::connect_timeout(&listen.parse().expect("addr"), Duration::from_millis(500))
            .is_err(),
        "{case}: something listens on {listen}"
    );
    // --check says the same.
    let (status, stdout, check_err) =
        run_hactl(&["probe", "--config", file, "--check"], dir.path());
    assert_eq!(
        status.code(),
        Some(4),
        "{case} --check: {stdout}{check_err}"
    );
    assert!(check_err.contains(&at), "{case} --check:\n{check_err}");
}

#[test]
fn config_errors_name_file_line_and_key_and_exit_4() {
    let unknown = "probes:
  - name: a
    type: tcp
    intervall: 1s
    targets: [\"127.0.0.1:1\"]
";
    assert_config_error(
        "unknown key",
        unknown,
        line_of(unknown, "intervall", 0),
        &["intervall"],
    );

    let duration = "probes:
  - name: a
    type: tcp
    interval: 1x
    targets: [\"127.0.0.1:1\"]
";
    assert_config_error(
        "bad duration",
        duration,
        line_of(duration, "interval:", 0),
        &["interval", "1x", "not a duration"],
    );

    let longer = "probes:
  - name: a
    type: tcp
    interval: 1s
    timeout: 2s
    targets: [\"127.0.0.1:1\"]
";
    assert_config_error(
        "timeout > interval",
        longer,
        line_of(longer, "timeout:", 0),
        &["timeout", "interval"],
    );

    let twice = "concurrency: 4
probes:
  - name: a
    type: tcp
    targets: [\"127.0.0.1:1\"]
  - name: b
    type: tcp
    targets: [\"127.0.0.1:2\"]
  - name: a
    type: tcp
    targets: [\"127.0.0.1:3\"]
";
    let first = line_of(twice, "name: a", 0);
    assert_config_error(
        "duplicate name",
        twice,
        line_of(twice, "name: a", first),
        &["name", "\"a\"", &format!("first at line {first}")],
    );

    let regex = "probes:
  - name: web
    type: http
    targets: [\"http://127.0.0.1:1/\"]
    http:
      status: [200]
      body: \"([a-z\"
";
    assert_config_error(
        "bad regex",
        regex,
        line_of(regex, "body:", 0),
        &["http.body", "regular expression"],
    );

    let not_url = "probes:
  - name: web
    type: http
    interval: 1s
    targets:
      - \"127.0.0.1:80\"
";
    assert_config_error(
        "http target not a URL",
        not_url,
        line_of(not_url, "127.0.0.1:80", 0),
        &["targets", "127.0.0.1:80", "URL"],
    );

    // The error is found when the targets are resolved, and points at the probe's `targets:`.
    let group = "probes:
  - name: ok
    type: tcp
    targets: [\"127.0.0.1:1\"]
  - name: pg
    type: tcp
    targets: {group: postgres, port: 5432}
";
    assert_config_error(
        "group targets without -i",
        group,
        line_of(group, "targets: {group", 0),
        &["targets", "postgres", "-i"],
    );
}

// ---------------------------------------------------------------------------------------------
// SIGHUP

#[test]
fn sighup_reloads_and_a_bad_config_keeps_the_running_one() {
    use nix::sys::signal::Signal;
    let dst = tcp_server().to_string();
    let probe = |name: &str| {
        format!(
            "probes:\n  - name: {name}\n    type: tcp\n    interval: 200ms\n    timeout: 150ms\n    targets: [{}]\n",
            q(&dst)
        )
    };
    let mut prober = Prober::start(&probe("alpha"));
    prober.wait_for("alpha to run", |m| m.count("total", "alpha", &dst) >= 2.0);

    fs::write(&prober.config, probe("beta")).expect("rewrite the config");
    prober.signal(Signal::SIGHUP);
    let m = prober.wait_for("beta to replace alpha", |m| {
        m.count("total", "beta", &dst) >= 2.0 && !m.mentions("alpha")
    });
    m.assert_is("probe_success", "beta", &dst, Some(1.0));
    m.assert_is("total", "alpha", &dst, None);
    assert_eq!(
        http_get(prober.addr, "/healthz"),
        Some((200, "ok: 1 probe targets\n".into()))
    );

    let broken = "probes:\n  - name: gamma\n    type: tcp\n    intervall: 1s\n    targets: [\"127.0.0.1:1\"]\n";
    fs::write(&prober.config, broken).expect("break the config");
    prober.signal(Signal::SIGHUP);
    let stderr = prober.wait_for_log(&format!("{}:4:", prober.config.display()));
    assert!(stderr.contains("intervall"), "{stderr}");
    assert!(
        prober.running(),
        "a bad reload stopped the prober:\n{stderr}"
    );

    // beta goes on: runs after the bad reload was logged.
    let before = prober.metrics().count("total", "beta", &dst);
    let m = prober.wait_for("beta to run on after a bad reload", |m| {
        m.count("total", "beta", &dst) >= before + 2.0
    });
    assert!(!m.mentions("gamma"), "{}", m.text);
    m.assert_is("probe_success", "beta", &dst, Some(1.0));
    assert!(prober.running());
}

/// A probe whose type changes on reload (same name, same target) keeps none of the old type's
/// series: they would show the old probe, frozen, forever.
#[test]
fn sighup_type_change_leaves_no_series_of_the_old_type() {
    use nix::sys::signal::Signal;
    let dst = tcp_server().to_string();
    let mut prober = Prober::start(&format!(
        "probes:\n  - name: x\n    type: tcp\n    interval: 200ms\n    timeout: 150ms\n    targets: [{}]\n",
        q(&dst)
    ));
    let tcp = [("probe", "x"), ("ptype", "tcp")];
    let external = [("probe", "x"), ("ptype", "external")];
    prober.wait_for("x to run as a tcp probe", |m| {
        m.get("total", &tcp).is_some_and(|t| t >= 2.0)
            && m.get("probe_success", &tcp) == Some(1.0)
            && m.get("hactl_probe_duration_seconds_count", &tcp).is_some()
    });

    fs::write(
        &prober.config,
        format!(
            "probes:\n  - name: x\n    type: external\n    interval: 200ms\n    timeout: 150ms\n    targets: [{}]\n    external: {{command: [\"true\"]}}\n",
            q(&dst)
        ),
    )
    .expect("rewrite the config");
    prober.signal(Signal::SIGHUP);
    let m = prober.wait_for("x to run as an external probe", |m| {
        m.get("total", &external).is_some_and(|t| t >= 2.0)
    });
    let stale = m.series_with(&tcp);
    assert!(
        stale.is_empty(),
        "x is an external probe now, but series of it as a tcp probe remain:\n{}\n--- /metrics ---\n{}",
        stale.join("\n"),
        m.text
    );
    m.assert_is("total", "x", &dst, m.get("total", &external));

    let before = m.get("total", &external).unwrap_or(0.0);
    let m = prober.wait_for("x's external runs to go on", |m| {
        m.get("total", &external).is_some_and(|t| t >= before + 2.0)
    });
    assert_eq!(
        m.get("probe_success", &external),
        Some(1.0),
        "probe_success of x as an external probe:\n{}",
        m.text
    );
    let stale = m.series_with(&tcp);
    assert!(
        stale.is_empty(),
        "series of x as a tcp probe came back:\n{}",
        stale.join("\n")
    );
}

/// Removing a write or a patroni probe removes its per-probe series (write availability,
/// Patroni topology, the duration histogram) with its per-target ones.
#[test]
fn sighup_removing_write_and_patroni_probes_removes_their_series() {
    use nix::sys::signal::Signal;
    let keep = tcp_server().to_string();
    let silent = silent_server().to_string();
    let patroni = http_server().to_string();
    let keep_only = format!(
        "probes:\n  - name: keep\n    type: tcp\n    interval: 200ms\n    timeout: 150ms\n    targets: [{}]\n",
        q(&keep)
    );
    let config = format!(
        r#"{keep_only}  - name: w
    type: write
    interval: 500ms
    timeout: 300ms
    targets: [{silent}]
    postgres: {{user: postgres, password: x}}
  - name: p
    type: patroni
    interval: 300ms
    timeout: 250ms
    targets: [{patroni}]
"#,
        silent = q(&silent),
        patroni = q(&patroni),
    );
    let mut prober = Prober::start(&config);
    let m = prober.wait_for(
        "the write probe to time out and the patroni probe to see the cluster",
        |m| {
            m.count("timeouts", "w", &silent) >= 2.0
                && m.get("hactl_write_seconds_since_success", &[("probe", "w")])
                    .is_some()
                && m.get("hactl_probe_duration_seconds_count", &[("probe", "w")])
                    .is_some()
                && m.count("success", "p", &patroni) >= 2.0
                && m.get("hactl_patroni_leaders", &[("probe", "p")]) == Some(1.0)
                && m.get("hactl_patroni_leader", &[("probe", "p"), ("member", "m1")]) == Some(1.0)
                && m.get(
                    "hactl_patroni_replica_lag_bytes",
                    &[("probe", "p"), ("member", "m2")],
                )
                .is_some()
                && m.get("hactl_probe_duration_seconds_count", &[("probe", "p")])
                    .is_some()
                && m.count("total", "keep", &keep) >= 1.0
        },
    );
    m.assert_is("probe_success", "w", &silent, Some(0.0));
    assert!(
        m.get("hactl_write_seconds_since_success", &[("probe", "w")])
            .is_some_and(|s| s > 0.0),
        "{}",
        m.text
    );
    m.assert_is("probe_success", "p", &patroni, Some(1.0));

    fs::write(&prober.config, &keep_only).expect("rewrite the config");
    prober.signal(Signal::SIGHUP);
    let left = |m: &Metrics| {
        let mut left = m.series_with(&[("probe", "w")]);
        left.extend(m.series_with(&[("probe", "p")]));
        left
    };
    prober.wait_for(
        "the series of w and p to go after their removal (SIGHUP)",
        |m| left(m).is_empty(),
    );

    // They do not come back, and the probe that stays goes on.
    let before = prober.metrics().count("total", "keep", &keep);
    let m = prober.wait_for("keep to go on after the reload", |m| {
        m.count("total", "keep", &keep) >= before + 3.0
    });
    let left = left(&m);
    assert!(
        left.is_empty(),
        "series of the removed w and p came back:\n{}",
        left.join("\n")
    );
    m.assert_is("probe_success", "keep", &keep, Some(1.0));
}

// ---------------------------------------------------------------------------------------------
// /healthz and --check

#[test]
fn healthz_counts_targets_and_check_counts_probes() {
    let a = tcp_server().to_string();
    let b = tcp_server().to_string();
    let config = format!(
        r#"concurrency: 8
probes:
  - name: two
    type: tcp
    interval: 1s
    targets: [{a}, {b}]
  - name: cmd
    type: external
    interval: 1s
    timeout: 500ms
    external: {{command: ["true"]}}
"#,
        a = q(&a),
        b = q(&b),
    );
    let mut prober = Prober::start(&config);
    prober.wait_for("the first runs", |m| {
        m.count("total", "two", &a) >= 1.0
            && m.count("total", "two", &b) >= 1.0
            && m.count("total", "cmd", "local") >= 1.0
    });
    assert_eq!(
        http_get(prober.addr, "/healthz"),
        Some((200, "ok: 3 probe targets\n".into()))
    );
    assert_eq!(http_get(prober.addr, "/nowhere").map(|r| r.0), Some(404));

    let (status, stdout, stderr) = run_hactl(
        &[
            "probe",
            "--config",
            prober.config.to_str().expect("a UTF-8 path"),
            "--check",
        ],
        prober.dir.path(),
    );
    assert!(status.success(), "--check: {status}\n{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!("{}: 2 probes, 3 targets\n", prober.config.display())
    );
}
