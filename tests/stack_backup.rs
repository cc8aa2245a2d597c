//! Backups on the lab: after one apply the repository on the monitoring host holds a full
//! backup taken from a standby, `pgbackrest check` passes, nothing in the repository is readable
//! without its key, the timers are set, and `hactl backup` takes one more while writes go on.

mod common;

use common::{lab, text};

const REPO_HOST: &str = "prmt-1";

fn pgbackrest(args: &str) -> String {
    format!("runuser -u postgres -- pgbackrest --stanza=hactl {args}")
}

fn list(lab: &common::Lab) -> serde_json::Value {
    let out = common::hactl(&["backup", "list", "-i", &lab.inventory(), "--output", "json"]);
    common::assert_success("hactl backup list", &out);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// (address, path) of each file of the newest backup, as pgBackRest's detail log names them.
fn files_of_last_backup(lab: &common::Lab) -> Vec<(String, String)> {
    let log = lab.run(
        REPO_HOST,
        "tac /var/log/pgbackrest/hactl-backup.log | sed '/backup command begin/q' | \
         grep -o 'backup file [0-9.]*:[^ ]*'",
    );
    log.lines()
        .filter_map(|l| {
            let (address, path) = l.trim_start_matches("backup file ").split_once(':')?;
            Some((address.to_string(), path.to_string()))
        })
        .collect()
}

#[test]
fn one_apply_archives_wal_and_keeps_an_encrypted_full_backup_taken_from_a_standby() {
    let mut lab = lab();
    lab.stack();

    // `hactl backup list`: the first full backup, in an encrypted repository.
    let listing = list(&lab);
    assert_eq!(listing["status"], "ok", "{listing}");
    assert_eq!(listing["cipher"], "aes-256-cbc", "{listing}");
    let backups = listing["backups"].as_array().expect("backups");
    assert!(
        backups.iter().any(|b| b["type"] == "full"),
        "a full backup after apply: {listing}"
    );
    for b in backups {
        assert!(b["wal_start"].as_str().unwrap_or("").len() == 24, "{b}");
        assert!(b["repository_bytes"].as_u64().unwrap_or(0) > 0, "{b}");
    }

    // The archive and the repository work end to end, as pgBackRest checks them.
    lab.run(REPO_HOST, &pgbackrest("check"));

    // Every 0600/0640 file is where it should be: the repository's key only in a file of
    // postgres's, 0600.
    let mode = lab.run(REPO_HOST, "stat -c '%a %U' /etc/pgbackrest/pgbackrest.conf");
    assert_eq!(mode, "600 postgres");

    // Timers for full, differential and incremental backups.
    let timers = lab.run(
        REPO_HOST,
        "systemctl is-enabled hactl-backup-full.timer hactl-backup-diff.timer hactl-backup-incr.timer && \
         systemctl is-active hactl-backup-full.timer hactl-backup-diff.timer hactl-backup-incr.timer",
    );
    assert_eq!(
        timers.lines().collect::<Vec<_>>(),
        ["enabled", "enabled", "enabled", "active", "active", "active"]
    );

    // A row with a value no page holds by chance, then a backup and the WAL it is in archived:
    // the value is in the primary's WAL in clear text, and nowhere in the repository.
    let leader = lab.leader();
    let canary = format!("hactl-canary-{}", std::process::id());
    lab.run(
        &leader,
        &format!(
            "runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qc \
             \"create table if not exists backup_canary (v text); \
               insert into backup_canary values ('{canary}'); checkpoint; select pg_switch_wal();\""
        ),
    );
    let out = common::hactl(&["backup", "-i", &lab.inventory(), "--type", "incr"]);
    common::assert_success("hactl backup --type incr", &out);
    lab.run(REPO_HOST, &pgbackrest("check"));
    let clear = lab.ssh(
        &leader,
        &format!("grep -rlF {canary} /var/lib/postgresql/15/hactl/pg_wal /var/lib/postgresql/15/hactl/base"),
    );
    assert!(
        clear.status.success(),
        "the canary is in the primary's files in clear text (else this test could not fail): {}",
        text(&clear)
    );
    let found = lab.ssh(
        REPO_HOST,
        &format!("grep -rlF {canary} /var/lib/pgbackrest"),
    );
    assert_ne!(
        found.status.code(),
        Some(0),
        "a repository file holds the row in clear text: {}",
        text(&found)
    );

    // The backup came from a standby: the data files were read from a member that is not the
    // leader; from the primary only what pgBackRest must take there (pg_control and files that
    // are not replicated).
    let leader_address = format!("10.213.0.1{}", &leader[leader.len() - 1..]);
    let files = files_of_last_backup(&lab);
    let data: Vec<&(String, String)> = files.iter().filter(|(_, p)| p.contains("/base/")).collect();
    assert!(
        !data.is_empty(),
        "the backup log names its data files: {files:?}"
    );
    let from_primary: Vec<&(String, String)> = data
        .iter()
        .copied()
        .filter(|(a, _)| *a == leader_address)
        .collect();
    assert!(
        from_primary.is_empty(),
        "data files read from the primary {leader_address}: {from_primary:?}"
    );
}

#[test]
fn hactl_backup_takes_each_type_while_writes_go_on_and_lists_it() {
    let mut lab = lab();
    lab.stack();
    let leader = lab.leader();
    lab.run(
        &leader,
        "runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qc \
         'create table if not exists backup_writes (id bigserial primary key, at timestamptz default now())'",
    );
    // A writer on the primary for the whole test.
    let writer = std::process::Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args([
            "lab",
            "ssh",
            "-i",
            &lab.inventory(),
            &leader,
            "for i in $(seq 1 150); do runuser -u postgres -- psql -qc 'insert into backup_writes default values' || exit 1; sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("writer");
    let mut labels = Vec::new();
    for kind in ["full", "diff", "incr"] {
        let out = common::hactl(&[
            "backup",
            "-i",
            &lab.inventory(),
            "--type",
            kind,
            "--output",
            "json",
        ]);
        common::assert_success(&format!("hactl backup --type {kind}"), &out);
        let b: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        assert_eq!(b["type"], kind, "{b}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("{kind} backup:")),
            "progress on stderr: {}",
            text(&out)
        );
        if kind != "full" {
            assert_eq!(b["prior"], labels[labels.len() - 1], "{b}");
        }
        labels.push(b["label"].clone());
    }
    let out = writer.wait_with_output().expect("writer");
    common::assert_success("the writer", &out);
    let listing = list(&lab);
    let listed: Vec<&serde_json::Value> = listing["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|b| &b["label"])
        .collect();
    for l in &labels {
        assert!(listed.contains(&l), "{l} listed: {listing}");
    }
    // The text form names each.
    let out = common::hactl(&["backup", "list", "-i", &lab.inventory()]);
    common::assert_success("hactl backup list", &out);
    let table = String::from_utf8_lossy(&out.stdout);
    for l in &labels {
        assert!(
            table.contains(l.as_str().unwrap_or("?")),
            "{l} in the table:\n{table}"
        );
    }
}

#[test]
fn backups_across_a_switchover_complete_or_fail_clearly_and_the_next_one_succeeds() {
    let mut lab = lab();
    lab.stack();
    let inventory = lab.inventory();
    // Backups back to back for as long as a switchover test runs, so that some overlap it.
    let done = std::sync::atomic::AtomicBool::new(false);
    let (report, outcomes) = std::thread::scope(|s| {
        let taker = s.spawn(|| {
            let mut outcomes = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let out = common::hactl(&["backup", "-i", &inventory, "--type", "incr"]);
                outcomes.push(out);
            }
            outcomes
        });
        let (out, report) = lab.failover("switchover");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(report["passed"], true, "{}", text(&out));
        (report, taker.join().expect("backups"))
    });
    assert!(
        outcomes.len() >= 3,
        "{} backups during the switchover",
        outcomes.len()
    );
    for out in &outcomes {
        if !out.status.success() {
            // A clear message: which host, what failed, pgBackRest's reason; exit 1.
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or_default();
            assert!(
                last.starts_with("hactl: prmt-1: pgbackrest incr backup failed: ERROR: ["),
                "{}",
                text(out)
            );
            assert_eq!(out.status.code(), Some(1), "{}", text(out));
        }
    }
    eprintln!(
        "switchover {}: {} backups, {} failed",
        report["write_downtime_s"],
        outcomes.len(),
        outcomes.iter().filter(|o| !o.status.success()).count()
    );
    let out = common::hactl(&["backup", "-i", &inventory, "--type", "incr"]);
    common::assert_success("the backup after the switchover", &out);
}
