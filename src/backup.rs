//! `hactl backup` and `hactl backup list`: pgBackRest on the repository host (roles pgbackrest
//! and pgbackrest_repo), over one SSH connection to it.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::inventory::{Inventory, InventoryError};
use crate::ssh::{self, shell_quote, HostKeyPolicy, Session, SshError};
use crate::stack::{BackupRepo, Stack, StackError};

/// How often a running backup's progress is read.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(
        "{0}: no backup repository: the inventory has no host in group `backup` (backup_group) \
         and no monitoring host"
    )]
    NoRepository(String),
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{host}: {what} failed: {detail}")]
    Failed {
        host: String,
        what: String,
        detail: String,
    },
    #[error("{host}: pgBackRest's `info` is not what hactl reads: {detail}")]
    Info { host: String, detail: String },
}

impl crate::exit::Code for BackupError {
    fn exit_code(&self) -> u8 {
        match self {
            BackupError::Stack(_) | BackupError::Inventory(_) | BackupError::NoRepository(_) => {
                crate::exit::BAD_INPUT
            }
            BackupError::Ssh(_) => crate::exit::UNREACHABLE,
            BackupError::Failed { .. } | BackupError::Info { .. } => crate::exit::FAILURE,
        }
    }
}

/// A backup's type, as pgBackRest names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Everything.
    Full,
    /// What changed since the last full backup.
    Diff,
    /// What changed since the last backup of any type.
    Incr,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Diff => "diff",
            Kind::Incr => "incr",
        }
    }
}

/// One backup in the repository.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Backup {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// UTC, RFC 3339.
    pub start: String,
    pub stop: String,
    pub duration_s: u64,
    /// The database's size when it was taken.
    pub database_bytes: u64,
    /// What this backup adds to the repository (compressed, encrypted).
    pub repository_bytes: u64,
    /// The WAL it needs to be consistent: from its first segment to its last.
    pub wal_start: String,
    pub wal_stop: String,
    /// The backup it builds on (diff and incr).
    pub prior: Option<String>,
    pub unix_stop: i64,
}

/// The repository: its backups and the archive's WAL range.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub repository_host: String,
    pub stanza: String,
    /// pgBackRest's status: `ok`, or why not.
    pub status: String,
    pub cipher: String,
    /// The PostgreSQL major version the repository's backups are of.
    pub pg_version: Option<String>,
    pub wal_min: Option<String>,
    pub wal_max: Option<String>,
    pub backups: Vec<Backup>,
}

/// The repository host, connected.
pub struct Repository {
    pub repo: BackupRepo,
    pub(crate) session: Session,
}

impl Repository {
    pub async fn connect(inventory: &Inventory, stack: &Stack) -> Result<Repository, BackupError> {
        let repo = stack
            .backup
            .clone()
            .ok_or_else(|| BackupError::NoRepository(inventory.path.display().to_string()))?;
        let target = ssh::target(inventory, &repo.host)?;
        let session = Session::connect(&target, HostKeyPolicy::Strict).await?;
        Ok(Repository { repo, session })
    }

    /// `pgbackrest --stanza=S ARGS` as postgres on the repository host.
    fn pgbackrest(&self, args: &str) -> String {
        format!(
            "runuser -u postgres -- pgbackrest --stanza={} {args}",
            shell_quote(&self.repo.stanza)
        )
    }

    pub(crate) async fn run(&self, what: &str, script: &str) -> Result<String, BackupError> {
        let out = self.session.exec(script, b"").await?;
        if out.success() {
            Ok(out.stdout_text())
        } else {
            let mut detail = condense(&out.stderr_text());
            if detail.is_empty() {
                detail = condense(&out.stdout_text());
            }
            Err(BackupError::Failed {
                host: self.repo.host.clone(),
                what: what.to_string(),
                detail,
            })
        }
    }

    /// The repository's backups, oldest first.
    pub async fn list(&self) -> Result<Listing, BackupError> {
        let json = self
            .run("pgbackrest info", &self.pgbackrest("--output=json info"))
            .await?;
        parse_info(&json, &self.repo).map_err(|detail| BackupError::Info {
            host: self.repo.host.clone(),
            detail,
        })
    }

    /// Takes one backup now, waiting for a running one (a timer's) to end first; `progress`
    /// hears how far it got. Returns the new backup.
    pub async fn take(
        &self,
        kind: Kind,
        mut progress: impl FnMut(&str),
    ) -> Result<Backup, BackupError> {
        let before = self.list().await?;
        // The file log at `detail` names each file copied with the share done so far.
        let log = format!("/var/log/pgbackrest/{}-backup.log", self.repo.stanza);
        let mark = self
            .run(
                "reading the backup log",
                &format!("wc -l < {0} 2>/dev/null || echo 0", shell_quote(&log)),
            )
            .await?
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
        let script = format!(
            "runuser -u postgres -- flock {lock} pgbackrest --stanza={stanza} --type={kind} \
             --log-level-console=warn --log-level-file=detail backup; rc=$?; \
             systemctl start --no-block hactl-backup-status.service >/dev/null 2>&1; exit $rc",
            lock = shell_quote(&self.repo.lock_file),
            stanza = shell_quote(&self.repo.stanza),
            kind = kind.as_str(),
        );
        let started = Instant::now();
        let what = format!("pgbackrest {} backup", kind.as_str());
        let backup = self.run(&what, &script);
        tokio::pin!(backup);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let mut last = String::new();
        let done = loop {
            tokio::select! {
                r = &mut backup => break r,
                _ = tick.tick() => {
                    let peek = format!(
                        "tail -n +{} {} 2>/dev/null | grep -o '[0-9.]*%)' | tail -n 1",
                        mark + 1,
                        shell_quote(&log)
                    );
                    if let Ok(out) = self.session.exec(&peek, b"").await {
                        let pct = out.stdout_text().trim().trim_end_matches(')').to_string();
                        let line = format!(
                            "{} backup: {} ({} s)",
                            kind.as_str(),
                            if pct.is_empty() { "starting".to_string() } else { pct },
                            started.elapsed().as_secs()
                        );
                        if line != last {
                            progress(&line);
                            last = line;
                        }
                    }
                }
            }
        };
        done?;
        let after = self.list().await?;
        after
            .backups
            .iter()
            .find(|b| !before.backups.iter().any(|o| o.label == b.label))
            .cloned()
            .ok_or_else(|| BackupError::Failed {
                host: self.repo.host.clone(),
                what: format!("pgbackrest {} backup", kind.as_str()),
                detail: "pgBackRest ended without error but lists no new backup".into(),
            })
    }
}

/// pgBackRest's complaint on one line: its ERROR and HINT lines (its WARNs, one per member it
/// could not use, only when there is no ERROR).
pub(crate) fn condense(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut keep = false;
    for line in text.lines() {
        let l = line.trim();
        // A HINT before any ERROR is a warning's ("a timeline switch has occurred ... HINT: this
        // is normal after promoting a standby"), not the error's.
        if l.starts_with("ERROR:") || (l.starts_with("HINT:") && !out.is_empty()) {
            keep = true;
            out.push(l.to_string());
        } else if keep && !l.is_empty() && !l.starts_with("WARN:") && !l.starts_with("INFO:") {
            // The rest of a wrapped ERROR or HINT.
            if let Some(last) = out.last_mut() {
                last.push(' ');
                last.push_str(l);
            }
        } else {
            keep = false;
        }
    }
    if out.is_empty() {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        out.join(" ")
    }
}

/// Reads `pgbackrest --output=json info` for one stanza.
fn parse_info(json: &str, repo: &BackupRepo) -> Result<Listing, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let stanza = v
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == repo.stanza.as_str()))
        .ok_or_else(|| format!("no stanza `{}`", repo.stanza))?;
    let text = |x: &serde_json::Value| x.as_str().map(str::to_string);
    let archive = stanza["archive"].as_array().and_then(|a| a.last());
    let mut backups = Vec::new();
    for b in stanza["backup"].as_array().into_iter().flatten() {
        let num = |x: &serde_json::Value| x.as_i64().unwrap_or(0);
        let (start, stop) = (num(&b["timestamp"]["start"]), num(&b["timestamp"]["stop"]));
        backups.push(Backup {
            label: text(&b["label"]).ok_or("a backup without a label")?,
            kind: text(&b["type"]).unwrap_or_default(),
            start: rfc3339(start),
            stop: rfc3339(stop),
            duration_s: (stop - start).max(0) as u64,
            database_bytes: b["info"]["size"].as_u64().unwrap_or(0),
            repository_bytes: b["info"]["repository"]["delta"].as_u64().unwrap_or(0),
            wal_start: text(&b["archive"]["start"]).unwrap_or_default(),
            wal_stop: text(&b["archive"]["stop"]).unwrap_or_default(),
            prior: text(&b["prior"]),
            unix_stop: stop,
        });
    }
    Ok(Listing {
        repository_host: repo.host.clone(),
        stanza: repo.stanza.clone(),
        status: text(&stanza["status"]["message"]).unwrap_or_default(),
        cipher: text(&stanza["cipher"]).unwrap_or_default(),
        pg_version: stanza["db"]
            .as_array()
            .and_then(|d| d.last())
            .and_then(|d| text(&d["version"])),
        wal_min: archive.and_then(|a| text(&a["min"])),
        wal_max: archive.and_then(|a| text(&a["max"])),
        backups,
    })
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

/// `hactl backup list` as a table.
pub fn table(listing: &Listing) -> String {
    let mut out = format!(
        "stanza {} on {} ({}, {}); WAL archived {} .. {}\n",
        listing.stanza,
        listing.repository_host,
        listing.status,
        listing.cipher,
        listing.wal_min.as_deref().unwrap_or("-"),
        listing.wal_max.as_deref().unwrap_or("-"),
    );
    out.push_str(&format!(
        "{:<34} {:<5} {:<20} {:<20} {:>6} {:>10} {:>10}  {}\n",
        "label", "type", "start", "stop", "secs", "database", "stored", "WAL"
    ));
    for b in &listing.backups {
        out.push_str(&format!(
            "{:<34} {:<5} {:<20} {:<20} {:>6} {:>10} {:>10}  {}..{}\n",
            b.label,
            b.kind,
            b.start,
            b.stop,
            b.duration_s,
            bytes(b.database_bytes),
            bytes(b.repository_bytes),
            b.wal_start,
            b.wal_stop
        ));
    }
    if listing.backups.is_empty() {
        out.push_str("(no backup)\n");
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> BackupRepo {
        BackupRepo {
            host: "prmt-1".into(),
            stanza: "hactl".into(),
            lock_file: "/run/lock/hactl-backup.lock".into(),
            drill_dir: "/var/lib/pgbackrest-drill".into(),
            drill_port: 55432,
        }
    }

    /// pgBackRest 2.45's `info --output=json`, as the lab printed it (one full, one incr).
    const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000040000000000000014","min":"00000004000000000000000F"}],"backup":[{"archive":{"start":"000000040000000000000012","stop":"000000040000000000000012"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":26251530,"repository":{"delta":3104624,"size":3104624},"size":26251530},"label":"20261207-073924F","lsn":{"start":"0/12000028","stop":"0/12001138"},"prior":null,"reference":null,"timestamp":{"start":1796629164,"stop":1796629167},"type":"full"},{"archive":{"start":"000000040000000000000014","stop":"000000040000000000000014"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":327987,"repository":{"delta":66560,"size":3104624},"size":26251530},"label":"20261207-073924F_20261207-073931I","lsn":{"start":"0/14000028","stop":"0/14000100"},"prior":"20261207-073924F","reference":["20261207-073924F"],"timestamp":{"start":1796629171,"stop":1796629173},"type":"incr"}],"cipher":"aes-256-cbc","db":[{"id":1,"repo-key":1,"system-id":7716452629507263849,"version":"15"}],"name":"hactl","repo":[{"cipher":"aes-256-cbc","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

    #[test]
    fn info_is_read_into_type_times_sizes_and_wal_range() {
        let l = parse_info(INFO, &repo()).unwrap();
        assert_eq!(l.status, "ok");
        assert_eq!(l.cipher, "aes-256-cbc");
        assert_eq!(l.pg_version.as_deref(), Some("15"));
        assert_eq!(l.wal_min.as_deref(), Some("00000004000000000000000F"));
        assert_eq!(l.backups.len(), 2);
        let (full, incr) = (&l.backups[0], &l.backups[1]);
        assert_eq!((full.kind.as_str(), incr.kind.as_str()), ("full", "incr"));
        assert_eq!(full.start, "2026-12-07T07:39:24Z");
        assert_eq!(full.duration_s, 3);
        assert_eq!(full.repository_bytes, 3104624);
        assert_eq!(incr.prior.as_deref(), Some("20261207-073924F"));
        assert_eq!(incr.wal_start, "000000040000000000000014");
        let t = table(&l);
        let row: Vec<&str> = t
            .lines()
            .find(|l| l.starts_with("20261207-073924F_20261207-073931I"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        assert_eq!(row.get(1), Some(&"incr"), "{t}");
        assert_eq!(row.get(7), Some(&"65.0"), "{t}");
    }

    #[test]
    fn pgbackrests_complaint_is_its_error_and_hint_on_one_line() {
        let text = "WARN: unable to check pg2: [DbConnectError] raised from remote-0: unable to connect\n      \tIs the server running?\nERROR: [056]: unable to find primary cluster - cannot proceed\n       HINT: are all available clusters in recovery?\n";
        assert_eq!(
            condense(text),
            "ERROR: [056]: unable to find primary cluster - cannot proceed HINT: are all available clusters in recovery?"
        );
        assert_eq!(condense("could not\n  do it\n"), "could not do it");
        // As seen during a switchover: the warning's hint comes first.
        let text = "WARN: a timeline switch has occurred since the 20261207-151802F_20261207-152041I backup, enabling delta checksum\n      HINT: this is normal after restoring from backup or promoting a standby.\nERROR: [101]: raised from remote-0 tls protocol on '10.213.0.11': NULL result required to complete request\n";
        assert_eq!(
            condense(text),
            "ERROR: [101]: raised from remote-0 tls protocol on '10.213.0.11': NULL result required to complete request"
        );
    }

    #[test]
    fn a_stanza_that_is_not_there_is_an_error_naming_it() {
        let mut r = repo();
        r.stanza = "other".into();
        assert_eq!(parse_info(INFO, &r).unwrap_err(), "no stanza `other`");
        assert!(parse_info("not json", &repo()).is_err());
    }
}
