//! The SSH transport against the lab's real sshd: one connection per host with concurrent
//! channels, strict host keys, exec with stdin/stdout/stderr/exit status, become through
//! sudo, and atomic uploads.

mod common;

use std::path::Path;

use common::lab;
use hactl::inventory::Inventory;
use hactl::ssh::{self, HostKeyPolicy, Session, SshError, Target};

/// How hactl reaches a lab host, from the lab inventory as shipped.
fn target(host: &str) -> Target {
    let inventory =
        Inventory::load(&common::repo().join("inventory/lab.yml")).expect("lab inventory");
    ssh::target(&inventory, host).expect("lab host")
}

async fn connect(host: &str) -> Session {
    Session::connect(&target(host), HostKeyPolicy::Strict)
        .await
        .unwrap_or_else(|e| panic!("connect to {host}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_connection_per_host_carries_many_concurrent_commands() {
    let _lab = lab();
    let mut tasks = tokio::task::JoinSet::new();
    for host in common::HOSTS {
        tasks.spawn(async move {
            let session = connect(host).await;
            let runs = (0..24).map(|i| {
                let session = &session;
                async move { session.exec(&format!("echo {i}; hostname"), b"").await }
            });
            let outputs = futures::future::join_all(runs).await;
            for (i, out) in outputs.into_iter().enumerate() {
                let out = out.unwrap_or_else(|e| panic!("{host}: {e}"));
                assert!(out.success(), "{host}: {out:?}");
                assert_eq!(out.stdout_text(), format!("{i}\n{host}\n"));
            }
            // sshd sees exactly one connection from the control machine.
            let conns = session
                .exec(
                    "ss -Htn state established '( sport = :22 )' | grep -c 10.213.0.1:",
                    b"",
                )
                .await
                .expect("ss");
            assert_eq!(
                conns.stdout_text().trim(),
                "1",
                "{host}: {}",
                conns.stdout_text()
            );
            session.close().await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("host task");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_returns_exit_status_stdout_stderr_and_takes_stdin() {
    let _lab = lab();
    let session = connect("ptrn-1").await;
    let out = session
        .exec("echo out; echo err >&2; exit 3", b"")
        .await
        .expect("exec");
    assert_eq!(out.exit_status, Some(3));
    assert_eq!(out.stdout_text(), "out\n");
    assert_eq!(out.stderr_text(), "err\n");
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let echoed = session.exec("cat", &big).await.expect("cat");
    assert!(echoed.success());
    assert_eq!(echoed.stdout.len(), big.len());
    assert!(
        echoed.stdout == big,
        "2 MB through stdin and back came out different"
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_quiet_command_is_not_cut_off() {
    let _lab = lab();
    let session = connect("ptrn-2").await;
    // 25 s without a byte is the case under test: more than two keepalive intervals.
    let out = session
        .exec("sleep 25; echo done", b"")
        .await
        .expect("exec");
    assert_eq!(out.stdout_text(), "done\n");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_host_key_is_refused_naming_the_host_and_the_file() {
    let _lab = lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = target("ptrn-1");
    t.known_hosts = dir.path().join("known_hosts");
    let err = Session::connect(&t, HostKeyPolicy::Strict)
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("ptrn-1") && message.contains(&t.known_hosts.display().to_string()),
        "{message}"
    );
    assert!(
        !t.known_hosts.exists(),
        "strict mode wrote a known_hosts file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_new_records_an_unknown_key_and_strict_then_accepts_it() {
    let _lab = lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = target("ptrn-3");
    t.known_hosts = dir.path().join("known_hosts");
    let session = Session::connect(&t, HostKeyPolicy::AcceptNew)
        .await
        .expect("accept new");
    session.close().await;
    let recorded = std::fs::read_to_string(&t.known_hosts).expect("recorded");
    let lab_keys = std::fs::read_to_string(target("ptrn-3").known_hosts).expect("lab known_hosts");
    let ptrn3_key = lab_keys
        .lines()
        .find(|l| l.starts_with("ptrn-3,"))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("ptrn-3 in the lab's known_hosts");
    assert!(
        recorded.contains(ptrn3_key),
        "recorded a different key: {recorded}"
    );
    let again = Session::connect(&t, HostKeyPolicy::Strict)
        .await
        .expect("strict with the recorded key");
    again.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_host_key_is_refused_even_with_accept_new() {
    let _lab = lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let lab_keys = std::fs::read_to_string(target("ptrn-1").known_hosts).expect("lab known_hosts");
    let other = lab_keys
        .lines()
        .find(|l| l.starts_with("ptrn-2,"))
        .map(|l| l.split_once(' ').expect("key line").1)
        .expect("ptrn-2's key");
    let mut t = target("ptrn-1");
    t.known_hosts = dir.path().join("known_hosts");
    std::fs::write(&t.known_hosts, format!("{} {other}\n", t.address)).expect("write");
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let err = Session::connect(&t, policy).await.err().expect("refused");
        assert!(
            matches!(err, SshError::ChangedHostKey { line: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("ptrn-1"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_is_atomic_and_sets_owner_and_mode() {
    let _lab = lab();
    let session = connect("prmt-1").await;
    let path = "/etc/hactl-upload-test.conf";
    let a = vec![b'a'; 1_000_000];
    let b = vec![b'b'; 1_000_000];
    session
        .upload(path, &a, 0o640, Some("root:root"))
        .await
        .expect("upload");
    let stat = session
        .exec(&format!("stat -c '%a %U %G %s' {path}"), b"")
        .await
        .expect("stat");
    assert_eq!(stat.stdout_text().trim(), "640 root root 1000000");
    // A reader polling the file while it is replaced over and over sees only whole versions.
    let sums = session
        .exec("head -c 1000000 /dev/zero | tr '\\0' a | md5sum; head -c 1000000 /dev/zero | tr '\\0' b | md5sum", b"")
        .await
        .expect("sums");
    let whole: Vec<String> = sums.stdout_text().lines().map(str::to_string).collect();
    assert_eq!(whole.len(), 2, "{sums:?}");
    let poll = format!("for i in $(seq 300); do md5sum < {path}; done | sort -u");
    let reader = session.exec(&poll, b"");
    let writer = async {
        for i in 0..20 {
            let contents = if i % 2 == 0 { &b } else { &a };
            session
                .upload(path, contents, 0o640, None)
                .await
                .expect("upload");
        }
    };
    let (read, ()) = tokio::join!(reader, writer);
    let seen = read.expect("reader").stdout_text();
    assert!(!seen.trim().is_empty());
    for line in seen.lines() {
        assert!(
            whole.iter().any(|w| w == line),
            "a reader saw a torn file: {line} (whole: {whole:?})"
        );
    }
    let leftovers = session
        .exec("ls -a /etc | grep -c hactl-upload-test.conf.hactl-", b"")
        .await
        .expect("ls");
    assert_eq!(
        leftovers.stdout_text().trim(),
        "0",
        "temporary files left in /etc"
    );
    session
        .exec(&format!("rm -f {path}"), b"")
        .await
        .expect("cleanup");
    session.close().await;
}

/// The `deploy` user's password, for sudo that asks.
const DEPLOY_PASSWORD: &str = "hactl-Lab-pw-7";

/// Makes (or remakes) user `deploy` on `host`, logging in with the lab key, with the sudoers
/// rules `sudoers`; returns how to reach the host as deploy, become off.
async fn deploy_user(root: &Session, host: &str, sudoers: &str) -> Target {
    let public_key = std::fs::read_to_string(
        target(host)
            .private_key_file
            .expect("key")
            .with_extension("pub"),
    )
    .expect("lab public key");
    let setup = format!(
        "id deploy >/dev/null 2>&1 || useradd -m -s /bin/sh deploy; \
         echo 'deploy:{DEPLOY_PASSWORD}' | chpasswd; rm -rf /run/sudo/ts/deploy; \
         install -d -m 700 -o deploy -g deploy /home/deploy/.ssh; \
         printf '%s\\n' '{}' > /home/deploy/.ssh/authorized_keys; \
         chown deploy:deploy /home/deploy/.ssh/authorized_keys; chmod 600 /home/deploy/.ssh/authorized_keys; \
         printf '%s\\n' {} > /etc/sudoers.d/deploy; chmod 440 /etc/sudoers.d/deploy; visudo -cq",
        public_key.trim(),
        ssh::shell_quote(sudoers),
    );
    let out = root.exec(&setup, b"").await.expect("setup");
    assert!(out.success(), "{host}: making user deploy: {out:?}");
    let mut t = target(host);
    t.user = "deploy".into();
    t.become_root = false;
    t
}

async fn remove_deploy_user(root: &Session) {
    let cleanup =
        "rm -f /etc/hactl-become-test /etc/sudoers.d/deploy; rm -rf /run/sudo/ts/deploy; \
                   userdel -r deploy 2>/dev/null; true";
    assert!(root.exec(cleanup, b"").await.expect("cleanup").success());
}

/// A command's stdin and an uploaded file, through sudo, arrive as given: no password before
/// them, no marker in what is reported.
async fn assert_password_stays_out(became: &Session, root: &Session) {
    let input = b"line one\nline two\n";
    let out = became.exec("cat", input).await.expect("cat");
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout_text(), "line one\nline two\n");
    assert!(
        !out.stderr_text().contains("hactl-sudo"),
        "a marker leaked: {out:?}"
    );
    became
        .upload(
            "/etc/hactl-become-test",
            b"contents\n",
            0o600,
            Some("root:root"),
        )
        .await
        .expect("upload");
    let on_disk = root
        .exec("cat /etc/hactl-become-test", b"")
        .await
        .expect("cat");
    assert_eq!(on_disk.stdout_text(), "contents\n");
    assert!(!on_disk.stdout_text().contains(DEPLOY_PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn become_runs_commands_and_uploads_as_root_through_sudo() {
    let _lab = lab();
    let root = connect("ptrn-2").await;
    let mut t = deploy_user(&root, "ptrn-2", "deploy ALL=(ALL) NOPASSWD: ALL").await;
    let plain = Session::connect(&t, HostKeyPolicy::Strict)
        .await
        .expect("connect as deploy");
    assert_eq!(
        plain.exec("id -un", b"").await.expect("id").stdout_text(),
        "deploy\n"
    );
    plain.close().await;
    t.become_root = true;
    let became = Session::connect(&t, HostKeyPolicy::Strict)
        .await
        .expect("connect as deploy");
    assert_eq!(
        became.exec("id -un", b"").await.expect("id").stdout_text(),
        "root\n"
    );
    became
        .upload("/etc/hactl-become-test", b"x\n", 0o600, Some("root:root"))
        .await
        .expect("upload");
    let stat = root
        .exec(
            "stat -c '%a %U' /etc/hactl-become-test && cat /etc/hactl-become-test",
            b"",
        )
        .await
        .expect("stat");
    assert_eq!(stat.stdout_text(), "600 root\nx\n");
    became.close().await;
    remove_deploy_user(&root).await;
    root.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_become_password_with_a_sudo_ticket_reaches_neither_stdin_nor_uploads() {
    let _lab = lab();
    let root = connect("ptrn-2").await;
    // One ticket for all of deploy's sudo runs: without a tty, sudo keys it by parent process.
    let sudoers = "Defaults:deploy timestamp_type=global, timestamp_timeout=10\n\
                   deploy ALL=(ALL) ALL";
    let mut t = deploy_user(&root, "ptrn-2", sudoers).await;
    let plain = Session::connect(&t, HostKeyPolicy::Strict)
        .await
        .expect("connect as deploy");
    t.become_root = true;
    t.become_password = Some(DEPLOY_PASSWORD.into());
    let became = Session::connect(&t, HostKeyPolicy::Strict)
        .await
        .expect("connect as deploy");
    // No ticket yet: sudo asks, and the command still reads only its own stdin.
    let first = became.exec("cat", b"first\n").await.expect("first");
    assert_eq!(first.stdout_text(), "first\n", "{first:?}");
    let ticket = plain.exec("sudo -n true", b"").await.expect("sudo -n");
    assert!(ticket.success(), "no sudo ticket was left: {ticket:?}");
    assert_password_stays_out(&became, &root).await;
    became.close().await;
    plain.close().await;
    remove_deploy_user(&root).await;
    root.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_become_password_with_nopasswd_reaches_neither_stdin_nor_uploads() {
    let _lab = lab();
    let root = connect("ptrn-2").await;
    let mut t = deploy_user(&root, "ptrn-2", "deploy ALL=(ALL) NOPASSWD: ALL").await;
    t.become_root = true;
    t.become_password = Some(DEPLOY_PASSWORD.into());
    let became = Session::connect(&t, HostKeyPolicy::Strict)
        .await
        .expect("connect as deploy");
    assert_password_stays_out(&became, &root).await;
    became.close().await;
    remove_deploy_user(&root).await;
    root.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_become_password_fails_clearly_instead_of_hanging() {
    let _lab = lab();
    let root = connect("ptrn-2").await;
    let mut t = deploy_user(&root, "ptrn-2", "deploy ALL=(ALL) ALL").await;
    t.become_root = true;
    t.become_password = Some("not-the-password".into());
    let became = Session::connect(&t, HostKeyPolicy::Strict)
        .await
        .expect("connect as deploy");
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        became.exec("cat", b"input\n"),
    )
    .await
    .expect("a wrong password hung the command");
    let err = result.expect_err("a wrong password was accepted");
    assert!(matches!(err, SshError::WrongBecomePassword { .. }), "{err}");
    assert!(
        err.to_string().contains("sudo: wrong become password"),
        "{err}"
    );
    became.close().await;
    remove_deploy_user(&root).await;
    root.close().await;
}

#[test]
fn lab_inventory_targets_use_the_lab_key_and_known_hosts() {
    let t = target("ptrn-1");
    assert_eq!(t.address, "10.213.0.11");
    assert_eq!(t.user, "root");
    assert_eq!(t.known_hosts, Path::new("/var/lib/hactl/lab/known_hosts"));
    assert_eq!(
        t.private_key_file.as_deref(),
        Some(Path::new("/var/lib/hactl/lab/id_ed25519"))
    );
}
