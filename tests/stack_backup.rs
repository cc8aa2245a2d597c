//! Backups on the lab: after one apply the repository on the monitoring host holds a full
//! backup taken from a standby, `pgbackrest check` passes, nothing in the repository is readable
//! without its key, the timers are set, and `hactl backup` takes one more while writes go on;
//! the prober's backup probe reports the backups' ages and the archiver, and the backup alerts
//! fire when archiving fails or backups grow old.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::metrics::Metrics;
use common::{eventually, lab, text};

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
    // One incremental backup first: run first after the stack's own full backup, an
    // incremental one took longer than the whole switchover twice (1 backup during it).
    let warm = common::hactl(&["backup", "-i", &inventory, "--type", "incr"]);
    common::assert_success("the backup before the switchover", &warm);
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

/// The prober on the monitoring host: its /metrics page.
fn prober(lab: &common::Lab) -> Metrics {
    Metrics::parse(&lab.monitoring_get("https://10.213.0.21:9313/metrics"))
}

const BACKUP_TARGET: &str = "https://10.213.0.21:9100/metrics";

/// The prober's backup series of one type.
fn of_type(m: &Metrics, name: &str, ty: &str) -> Option<f64> {
    m.get(
        name,
        &[("probe", "backup"), ("dst", BACKUP_TARGET), ("type", ty)],
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Prometheus's firing alerts named `name`, on the monitoring host.
fn firing(lab: &common::Lab, name: &str) -> usize {
    let out = lab.monitoring_get("https://10.213.0.21:9090/api/v1/alerts");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["data"]["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["labels"]["alertname"] == name && x["state"] == "firing")
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn the_prober_reports_backup_ages_and_the_archiver_and_the_backup_alerts_fire() {
    let mut lab = lab();
    lab.stack();
    let ages = |m: &Metrics| -> Result<(), String> {
        if m.of("probe_success", "backup", BACKUP_TARGET) != Some(1.0) {
            return Err("the backup probe does not succeed".into());
        }
        Ok(())
    };
    // The newest full backup's age, as the prober reports it, is the age `hactl backup list`
    // gives it.
    let listing = list(&lab);
    let newest_full = listing["backups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "full")
        .filter_map(|b| b["unix_stop"].as_f64())
        .fold(0.0, f64::max);
    assert!(newest_full > 0.0, "{listing}");
    let m = eventually("the backup probe succeeds", Duration::from_secs(90), || {
        let m = prober(&lab);
        ages(&m).map(|()| m)
    });
    let full_age = of_type(&m, "hactl_backup_age_seconds", "full").expect("a full backup's age");
    let want = now() - newest_full;
    assert!(
        (full_age - want).abs() < 30.0,
        "the prober says the newest full backup is {full_age} s old, the list {want} s"
    );
    assert!(of_type(&m, "hactl_backup_count", "full").unwrap_or(0.0) >= 1.0);
    assert!(of_type(&m, "hactl_backup_size_bytes", "full").unwrap_or(0.0) > 0.0);
    assert_eq!(
        m.of("hactl_wal_archive_failing", "backup", BACKUP_TARGET),
        Some(0.0)
    );
    let archive_age = m
        .of("hactl_wal_archive_age_seconds", "backup", BACKUP_TARGET)
        .expect("the archiver's age");
    assert!(
        archive_age < 120.0,
        "the primary last archived {archive_age} s ago (archive_timeout is 60 s)"
    );
    // The prober reads the repository without any right on it: nothing of pgBackRest's on the
    // monitoring host is readable by its user.
    let readable = lab.run(
        REPO_HOST,
        "runuser -u hactl-prober -- sh -c 'cat /etc/pgbackrest/pgbackrest.conf >/dev/null 2>&1 && echo conf; \
         ls /var/lib/pgbackrest >/dev/null 2>&1 && echo repo; ls /etc/pgbackrest/tls >/dev/null 2>&1 && echo tls; true'",
    );
    assert_eq!(readable, "", "the prober's user reads pgBackRest's files");

    // A new incremental backup shows within a minute: the prober counts what the repository
    // lists.
    let out = common::hactl(&["backup", "-i", &lab.inventory(), "--type", "incr"]);
    common::assert_success("hactl backup --type incr", &out);
    let listing = list(&lab);
    let incrs = listing["backups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "incr")
        .count() as f64;
    eventually(
        "the prober counts the new incremental backup",
        Duration::from_secs(60),
        || {
            let m = prober(&lab);
            let n = of_type(&m, "hactl_backup_count", "incr").unwrap_or(0.0);
            let age = of_type(&m, "hactl_backup_age_seconds", "incr").unwrap_or(f64::MAX);
            if n == incrs && age < 30.0 {
                Ok(())
            } else {
                Err(format!(
                    "{n} incremental backups ({incrs} listed), the newest {age} s old"
                ))
            }
        },
    );

    // The repository's TLS server stops: the primary cannot archive, the probe fails and
    // WalArchiveFailing fires.
    lab.run(REPO_HOST, "systemctl stop pgbackrest");
    let leader = lab.leader();
    let switch = "runuser -u postgres -- psql -qAtc 'select pg_switch_wal()' >/dev/null";
    eventually(
        "the prober sees the archiver failing",
        Duration::from_secs(120),
        || {
            let _ = lab.ssh(&leader, switch);
            let m = prober(&lab);
            match (
                m.of("hactl_wal_archive_failing", "backup", BACKUP_TARGET),
                m.of("probe_success", "backup", BACKUP_TARGET),
            ) {
                (Some(1.0), Some(0.0)) => Ok(()),
                other => Err(format!("failing, success: {other:?}")),
            }
        },
    );
    eventually(
        "WalArchiveFailing fires in Prometheus",
        Duration::from_secs(180),
        || match firing(&lab, "WalArchiveFailing") {
            0 => Err("not firing".into()),
            _ => Ok(()),
        },
    );
    // The server back: WAL is archived again and the probe succeeds.
    lab.run(REPO_HOST, "systemctl start pgbackrest");
    eventually("archiving works again", Duration::from_secs(120), || {
        let _ = lab.ssh(&leader, switch);
        let m = prober(&lab);
        match m.of("hactl_wal_archive_failing", "backup", BACKUP_TARGET) {
            Some(0.0) => ages(&m),
            other => Err(format!("failing: {other:?}")),
        }
    });
    lab.run(REPO_HOST, &pgbackrest("check"));

    // The installed rules fire on old backups and a stale archive, and not on fresh ones:
    // promtool runs them over series of the prober's names.
    let tests = r#"rule_files: [/etc/prometheus/rules/hactl-backup.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'hactl_backup_age_seconds{probe="backup",dst="r",type="full"}'
        values: '9000+120x40'
      - series: 'hactl_backup_count{probe="backup",dst="r",type="full"}'
        values: '1x40'
      - series: 'hactl_wal_archive_age_seconds{probe="backup",dst="r"}'
        values: '30x5 60+60x35'
      - series: 'hactl_wal_archive_failing{probe="backup",dst="r"}'
        values: '0x40'
    alert_rule_test:
      # The newest backup is 2.5 h old at first and ages: over 3 h from 15 min on, firing
      # 10 min later.
      - {eval_time: 5m, alertname: BackupTooOld, exp_alerts: []}
      - eval_time: 30m
        alertname: BackupTooOld
        exp_alerts:
          - exp_labels: {severity: critical, probe: backup, dst: r}
            exp_annotations:
              summary: "no recent backup in r: see hactl backup list and journalctl -u 'hactl-backup@*'"
      # Over 300 s without an archived WAL file from minute 11, firing 2 min later.
      - {eval_time: 12m, alertname: WalArchiveStale, exp_alerts: []}
      - eval_time: 15m
        alertname: WalArchiveStale
        exp_alerts:
          - exp_labels: {severity: warning, probe: backup, dst: r}
            exp_annotations: {summary: "the primary last archived a WAL file 10m 0s ago"}
      - {eval_time: 15m, alertname: WalArchiveFailing, exp_alerts: []}
  - interval: 1m
    input_series:
      - series: 'hactl_backup_count{probe="backup",dst="r",type="full"}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: BackupTooOld
        exp_alerts:
          - exp_labels: {severity: critical, probe: backup, dst: r, type: full}
            exp_annotations:
              summary: "no recent backup in r (full): see hactl backup list and journalctl -u 'hactl-backup@*'"
"#;
    let out = lab.ssh(
        REPO_HOST,
        &format!(
            "cat > /tmp/hactl-backup-rules-test.yml <<'EOF'\n{tests}EOF\n\
             PATH=$PATH:/usr/local/bin promtool test rules /tmp/hactl-backup-rules-test.yml"
        ),
    );
    assert!(out.status.success(), "promtool test rules: {}", text(&out));
}
