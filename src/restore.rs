//! `hactl restore`: point-in-time recovery of the whole cluster from pgBackRest's repository.
//!
//! Patroni stops on every member; its state in the DCS is removed (the dynamic configuration is
//! kept aside and put back); one member (the leader, if there is one) is restored to the target
//! with pgBackRest, recovers and is promoted on a new timeline; the other members' data
//! directories are emptied, so that Patroni rebuilds them as replicas of the restored one.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;

use crate::backup::BackupError;
use crate::inventory::Inventory;
use crate::ssh::{self, shell_quote, HostKeyPolicy, Session};
use crate::stack::Stack;

/// How long the restored member may take to lead once Patroni runs, and the others to stream.
const LEADER_TIMEOUT: Duration = Duration::from_secs(180);
const REPLICAS_TIMEOUT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_secs(1);
/// Where the restored member keeps the dynamic configuration while the DCS is empty (root's).
const SAVED_CONFIG: &str = "/root/hactl-restore-config.yml";

/// What to restore to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The end of the archived WAL.
    Latest,
    /// A point in time, with its time zone (`2026-12-07 08:00:00+00`).
    Time(String),
    /// The end of one backup (its label, as `hactl backup list` shows it).
    Backup(String),
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let t = text.trim();
        if t == "latest" {
            return Ok(Target::Latest);
        }
        if is_label(t) {
            return Ok(Target::Backup(t.to_string()));
        }
        check_time(t)?;
        Ok(Target::Time(t.to_string()))
    }

    fn describe(&self) -> String {
        match self {
            Target::Latest => "the end of the archived WAL (latest)".into(),
            Target::Time(t) => format!("the time {t}"),
            Target::Backup(l) => format!("the end of backup {l}"),
        }
    }

    /// pgBackRest's restore options for it.
    fn options(&self) -> String {
        match self {
            Target::Latest => "--type=default".into(),
            Target::Time(t) => format!(
                "--type=time --target={} --target-action=promote",
                shell_quote(t)
            ),
            Target::Backup(l) => format!(
                "--set={} --type=immediate --target-action=promote",
                shell_quote(l)
            ),
        }
    }
}

/// `20261207-073924F` or `20261207-073924F_20261207-073931I`.
fn is_label(t: &str) -> bool {
    let stamp = |s: &str| {
        s.len() == 15
            && s.char_indices()
                .all(|(i, c)| if i == 8 { c == '-' } else { c.is_ascii_digit() })
    };
    let (full, rest) = match t.split_once('_') {
        Some((f, r)) => (f, Some(r)),
        None => (t, None),
    };
    let full_ok = full.len() == 16 && stamp(&full[..15]) && full.ends_with('F');
    full_ok
        && rest.is_none_or(|r| {
            r.len() == 16 && stamp(&r[..15]) && (r.ends_with('D') || r.ends_with('I'))
        })
}

/// `YYYY-MM-DD HH:MM:SS[.frac](Z|+HH[:MM]|-HH[:MM])`: PostgreSQL reads it as a timestamptz; the
/// zone is required, so that nobody recovers to the wrong hour.
fn check_time(t: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "--target {t}: expected `latest`, a backup label (hactl backup list) or a time with \
             its zone, as `2026-12-07 08:00:00+00`"
        )
    };
    let b = t.as_bytes();
    if b.len() < 20 {
        return Err(bad());
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shape = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b' ' || b[10] == b'T')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return Err(bad());
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(bad());
        }
        rest = &frac[n..];
    }
    let zone_ok = rest == "Z"
        || ((rest.starts_with('+') || rest.starts_with('-'))
            && matches!(rest.len(), 3 | 5 | 6)
            && rest[1..].bytes().all(|c| c.is_ascii_digit() || c == b':'));
    if zone_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// What a restore did, and how long each step took.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    /// The member restored from the repository; the others were rebuilt from it.
    pub restored_member: String,
    pub leader_after: Option<String>,
    pub timeline_after: Option<u64>,
    /// The last transaction recovery replayed (its commit time), as PostgreSQL tells it.
    pub replayed_to: Option<String>,
    pub streaming_replicas: Vec<String>,
    pub stop_s: f64,
    pub restore_s: f64,
    pub recovery_s: f64,
    pub leader_s: f64,
    pub replicas_s: f64,
    pub total_s: f64,
}

/// The plan, shown without `--yes`.
pub fn plan(stack: &Stack, target: &Target, member: &str) -> String {
    let others: Vec<&str> = stack
        .postgres
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| *n != member)
        .collect();
    let repo = stack
        .backup
        .as_ref()
        .map(|b| b.host.as_str())
        .unwrap_or("-");
    format!(
        "hactl restore would, for cluster {scope}:\n\
         1. stop Patroni (and PostgreSQL) on {all}: no writes from here on;\n\
         2. remove the cluster's state from the DCS (keeping its dynamic configuration aside);\n\
         3. restore {member} from the repository on {repo} to {target}, recover and promote it;\n\
         4. empty the data directories of {others}: they are rebuilt from {member};\n\
         5. start Patroni on {member}, put the dynamic configuration back, then start it on the others.\n\
         Everything written after the target is lost. Run again with --yes to do it.\n",
        scope = stack.scope,
        all = stack
            .postgres
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        target = target.describe(),
        others = if others.is_empty() {
            "no other member".to_string()
        } else {
            others.join(", ")
        },
    )
}

struct Member {
    name: String,
    session: Session,
    api: String,
}

/// A member's script, as root: `DATA`, `BIN` and `PATRONICTL` set from its Patroni config.
fn with_paths(script: &str) -> String {
    format!(
        "set -eu\n\
         DATA=$(awk '/^  data_dir:/ {{print $2; exit}}' /etc/patroni/config.yml)\n\
         BIN=$(awk '/^  bin_dir:/ {{print $2; exit}}' /etc/patroni/config.yml)\n\
         PATRONICTL=$(command -v patronictl || echo /opt/patroni/bin/patronictl)\n\
         [ -n \"$DATA\" ] && [ -n \"$BIN\" ] || {{ echo 'no data_dir or bin_dir in /etc/patroni/config.yml' >&2; exit 1; }}\n\
         pg() {{ runuser -u postgres -- \"$BIN/$@\"; }}\n\
         {script}"
    )
}

async fn run(m: &Member, what: &str, script: &str) -> Result<String, BackupError> {
    let out = m.session.exec(&with_paths(script), b"").await?;
    if out.success() {
        Ok(out.stdout_text())
    } else {
        Err(BackupError::Failed {
            host: m.name.clone(),
            what: what.to_string(),
            detail: out.stderr_text().trim().to_string(),
        })
    }
}

/// On the primary: its current WAL switched and archived, as `pgbackrest check` does and waits
/// for (it fails on a standby).
fn archive_current_wal(stanza: &str) -> String {
    format!(
        "runuser -u postgres -- pgbackrest --stanza={} --log-level-console=warn check",
        shell_quote(stanza)
    )
}

/// The member to restore: the leader if the cluster has one, else the first member.
pub async fn pick_member(stack: &Stack) -> String {
    let client = stack.client_tls().ok().and_then(|tls| {
        crate::stack::patroni::Client::new(Duration::from_secs(3), Some(&tls)).ok()
    });
    if let Some(client) = client {
        for m in &stack.postgres {
            if let Ok(c) = client.cluster(&m.api_url()).await {
                if let Some(l) = c.leader() {
                    return l.name.clone();
                }
            }
        }
    }
    stack
        .postgres
        .first()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

/// Restores the whole cluster to `target` through `member`; `progress` hears each step.
pub async fn restore(
    inventory: &Inventory,
    stack: &Stack,
    target: &Target,
    member: &str,
    progress: impl Fn(&str),
) -> Result<Report, BackupError> {
    let repo = stack
        .backup
        .clone()
        .ok_or_else(|| BackupError::NoRepository(inventory.path.display().to_string()))?;
    let t0 = Instant::now();
    let tls = stack.client_tls()?;
    let client =
        crate::stack::patroni::Client::new(Duration::from_secs(5), Some(&tls)).map_err(|e| {
            BackupError::Failed {
                host: member.to_string(),
                what: "Patroni's REST API client".into(),
                detail: e.0,
            }
        })?;
    let connects = stack.postgres.iter().map(|m| async move {
        let target = ssh::target(inventory, &m.name)?;
        let session = Session::connect(&target, HostKeyPolicy::Strict).await?;
        Ok::<_, BackupError>(Member {
            name: m.name.clone(),
            session,
            api: m.api_url(),
        })
    });
    let members: Vec<Member> = join_all(connects)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let chosen = members
        .iter()
        .find(|m| m.name == member)
        .ok_or_else(|| BackupError::Failed {
            host: member.to_string(),
            what: "restore".into(),
            detail: format!("{member} is not a member of group {}", stack.postgres_group),
        })?;
    let others: Vec<&Member> = members.iter().filter(|m| m.name != member).collect();

    progress("archiving the primary's current WAL");
    let check = archive_current_wal(&repo.stanza);
    for m in &members {
        let primary = "[ \"$(runuser -u postgres -- psql -qtAXc 'select pg_is_in_recovery()' 2>/dev/null)\" = f ]";
        if run(m, "archive check", &format!("{primary} && {check}"))
            .await
            .is_ok()
        {
            break;
        }
    }

    progress("stopping Patroni and PostgreSQL on every member");
    let stops = members.iter().map(|m| {
        run(
            m,
            "stopping Patroni",
            "systemctl stop patroni\n\
             if pg pg_ctl -D \"$DATA\" status >/dev/null 2>&1; then pg pg_ctl -D \"$DATA\" -m fast -w stop; fi",
        )
    });
    for r in join_all(stops).await {
        r?;
    }
    let stop_s = t0.elapsed().as_secs_f64();

    progress("removing the cluster's state from the DCS, its dynamic configuration kept aside");
    let scope = shell_quote(&stack.scope);
    run(
        chosen,
        "patronictl remove",
        &format!(
            "ctl() {{ \"$PATRONICTL\" -c /etc/patroni/config.yml \"$@\"; }}\n\
             umask 077\n\
             ctl show-config > {SAVED_CONFIG}.new && [ -s {SAVED_CONFIG}.new ] && mv {SAVED_CONFIG}.new {SAVED_CONFIG} || rm -f {SAVED_CONFIG}.new\n\
             # A leader killed a moment ago still holds its key: patronictl asks for its name.\n\
             LEADER=$(ctl list -f json | python3 -c 'import json,sys; print(next((m[\"Member\"] for m in json.load(sys.stdin) if m.get(\"Role\") == \"Leader\"), \"\"))')\n\
             printf '%s\\nYes I am aware\\n%s\\n' {scope} \"$LEADER\" | ctl remove {scope} >/dev/null"
        ),
    )
    .await?;

    progress(&format!(
        "restoring {member} to {} and emptying the others",
        target.describe()
    ));
    let t_restore = Instant::now();
    let restore_script = format!(
        "install -d -o postgres -g postgres -m 0700 \"$DATA\"\n\
         rm -f \"$DATA/recovery.signal\" \"$DATA/standby.signal\"\n\
         runuser -u postgres -- pgbackrest --stanza={stanza} --delta --log-level-console=warn {opts} restore",
        stanza = shell_quote(&repo.stanza),
        opts = target.options()
    );
    let wipe = "if [ -d \"$DATA\" ]; then find \"$DATA\" -mindepth 1 -delete; fi";
    let (restored, wiped) = tokio::join!(
        run(chosen, "pgbackrest restore", &restore_script),
        join_all(
            others
                .iter()
                .map(|m| run(m, "emptying the data directory", wipe))
        )
    );
    restored?;
    for w in wiped {
        w?;
    }
    let restore_s = t_restore.elapsed().as_secs_f64();

    progress(&format!("recovering {member}"));
    let t_recovery = Instant::now();
    let port = stack.pg_member(member).map(|m| m.pg_port).unwrap_or(5432);
    // Only the local socket during recovery; archiving stays on, so the new timeline's history
    // and first segments reach the repository. No hot standby: pg_ctl waits for the end of
    // recovery, and the WAL may hold settings (max_connections raised, then lowered) that a
    // hot standby would refuse to replay with the current ones.
    let recovered = run(
        chosen,
        "recovery",
        &format!("PORT={port}\n\
         pg pg_ctl -D \"$DATA\" -w -t 86400 -l /var/log/postgresql/hactl-restore.log \
           -o \"-c listen_addresses='' -c hot_standby=off\" start >/dev/null \
           || {{ tail -n 20 /var/log/postgresql/hactl-restore.log >&2; exit 1; }}\n\
         psql() {{ runuser -u postgres -- \"$BIN/psql\" -h /var/run/postgresql -p \"$PORT\" -qtAX \"$@\"; }}\n\
         for i in $(seq 1 432000); do\n\
           [ \"$(psql -c 'select pg_is_in_recovery()' 2>/dev/null)\" = f ] && break\n\
           pg pg_ctl -D \"$DATA\" status >/dev/null || {{ tail -n 20 /var/log/postgresql/hactl-restore.log >&2; exit 1; }}\n\
           sleep 0.2\n\
         done\n\
         psql -c \"select coalesce(to_char(pg_last_xact_replay_timestamp() at time zone 'UTC', 'YYYY-MM-DD\\\"T\\\"HH24:MI:SS.MS\\\"Z\\\"'), '')\"\n\
         psql -c 'alter system reset all' >/dev/null\n\
         pg pg_ctl -D \"$DATA\" -m fast -w stop >/dev/null"),
    )
    .await?;
    let replayed_to = Some(recovered.trim().to_string()).filter(|s| !s.is_empty());
    let recovery_s = t_recovery.elapsed().as_secs_f64();

    progress(&format!("starting Patroni on {member}"));
    let t_leader = Instant::now();
    run(chosen, "starting Patroni", "systemctl start patroni").await?;
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let leader = loop {
        if let Ok(c) = client.cluster(&chosen.api).await {
            if let Some(l) = c.leader().filter(|l| l.name == member && l.is_running()) {
                break l.clone();
            }
        }
        if Instant::now() > deadline {
            return Err(BackupError::Failed {
                host: member.to_string(),
                what: "leading after the restore".into(),
                detail: format!("no leader within {LEADER_TIMEOUT:?} (journalctl -u patroni)"),
            });
        }
        tokio::time::sleep(POLL).await;
    };
    // The dynamic configuration as it was (it lives in the DCS, which patronictl reads even
    // with Patroni down): Patroni took its bootstrap section's when it took the cluster over.
    run(
        chosen,
        "putting the dynamic configuration back",
        &format!(
            "[ -s {SAVED_CONFIG} ] || exit 0\n\
             \"$PATRONICTL\" -c /etc/patroni/config.yml edit-config --force --replace {SAVED_CONFIG} >/dev/null\n\
             rm -f {SAVED_CONFIG}"
        ),
    )
    .await?;
    let leader_s = t_leader.elapsed().as_secs_f64();

    progress("starting Patroni on the other members: they copy the restored member");
    let t_replicas = Instant::now();
    for r in join_all(
        others
            .iter()
            .map(|m| run(m, "starting Patroni", "systemctl start patroni")),
    )
    .await
    {
        r?;
    }
    let want: Vec<String> = others.iter().map(|m| m.name.clone()).collect();
    let deadline = Instant::now() + REPLICAS_TIMEOUT;
    let (streaming, timeline) = loop {
        if let Ok(c) = client.cluster(&chosen.api).await {
            let streaming: Vec<String> = c
                .replicas()
                .filter(|m| c.is_streaming(m, 16 * 1024 * 1024))
                .map(|m| m.name.clone())
                .collect();
            let timeline = c.leader().and_then(|l| l.timeline);
            if want.iter().all(|w| streaming.contains(w)) {
                break (streaming, timeline);
            }
            if Instant::now() > deadline {
                return Err(BackupError::Failed {
                    host: member.to_string(),
                    what: "rebuilding the replicas".into(),
                    detail: format!(
                        "streaming after {REPLICAS_TIMEOUT:?}: {streaming:?} of {want:?}"
                    ),
                });
            }
        }
        tokio::time::sleep(POLL).await;
    };
    let replicas_s = t_replicas.elapsed().as_secs_f64();
    for m in members {
        m.session.close().await;
    }
    Ok(Report {
        target: match target {
            Target::Latest => "latest".into(),
            Target::Time(t) | Target::Backup(t) => t.clone(),
        },
        restored_member: member.to_string(),
        leader_after: Some(leader.name.clone()),
        timeline_after: timeline.or(leader.timeline),
        replayed_to,
        streaming_replicas: streaming,
        stop_s,
        restore_s,
        recovery_s,
        leader_s,
        replicas_s,
        total_s: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_latest_a_label_or_a_time_with_its_zone() {
        assert_eq!(Target::parse("latest"), Ok(Target::Latest));
        assert_eq!(
            Target::parse("20261207-073924F_20261207-073931I"),
            Ok(Target::Backup("20261207-073924F_20261207-073931I".into()))
        );
        assert_eq!(
            Target::parse("20261207-073924F"),
            Ok(Target::Backup("20261207-073924F".into()))
        );
        for ok in [
            "2026-12-07 08:00:00+00",
            "2026-12-07T08:00:00Z",
            "2026-12-07 08:00:00.123456+01:00",
            "2026-12-07 08:00:00-0530",
        ] {
            assert_eq!(Target::parse(ok), Ok(Target::Time(ok.into())), "{ok}");
        }
        for bad in [
            "2026-12-07 08:00:00",
            "yesterday",
            "2026-12-07",
            "20261207-073924X",
            "2026-12-07 08:00:00+00; rm -rf /",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.contains("time with its zone"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_time_target_reaches_pgbackrest_quoted() {
        let t = Target::Time("2026-12-07 08:00:00+00".into());
        assert_eq!(
            t.options(),
            "--type=time --target='2026-12-07 08:00:00+00' --target-action=promote"
        );
    }
}

/// A table the drill compares with the primary: the rows written up to the restore point, by a
/// column that holds when each row was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTable {
    pub table: String,
    pub column: String,
    /// Absent from both sides is no failure (failover-test's table, before it ever ran).
    pub optional: bool,
}

impl CheckTable {
    /// `TABLE:COLUMN`, each a plain identifier (optionally `schema.table`).
    pub fn parse(text: &str) -> Result<CheckTable, String> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.split('.').count() <= 2
                && s.split('.').all(|p| {
                    !p.is_empty()
                        && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !p.starts_with(|c: char| c.is_ascii_digit())
                })
        };
        match text.split_once(':') {
            Some((t, c)) if plain(t) && plain(c) && !c.contains('.') => Ok(CheckTable {
                table: t.to_string(),
                column: c.to_string(),
                optional: false,
            }),
            _ => Err(format!(
                "--table {text}: expected TABLE:COLUMN (a table, and its column of when each row was written)"
            )),
        }
    }
}

/// One table's rows up to the restore point, in the drill's instance and on the primary.
#[derive(Debug, Clone, Serialize)]
pub struct TableCount {
    pub table: String,
    /// None: the table is not there.
    pub restored: Option<u64>,
    pub primary: Option<u64>,
}

/// What `hactl restore-test` found.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub backup: String,
    /// How old the newest backup was when the drill began.
    pub backup_age_s: u64,
    /// The last transaction replayed, as the restored instance tells it.
    pub replayed_to: Option<String>,
    pub restore_s: f64,
    pub recovery_s: f64,
    /// `ok`, or what pg_amcheck found.
    pub amcheck: String,
    pub tables: Vec<TableCount>,
    pub total_s: f64,
    pub passed: bool,
    pub problems: Vec<String>,
}

/// `hactl restore-test`: the newest backup and the archived WAL after it restored into a scratch
/// instance on the repository host, recovered, checked and removed. The cluster is only read.
pub async fn drill(
    inventory: &Inventory,
    stack: &Stack,
    tables: &[CheckTable],
    progress: impl Fn(&str),
) -> Result<DrillReport, BackupError> {
    let t0 = Instant::now();
    let repo = crate::backup::Repository::connect(inventory, stack).await?;
    let listing = repo.list().await?;
    let newest = listing.backups.last().ok_or_else(|| BackupError::Failed {
        host: repo.repo.host.clone(),
        what: "restore-test".into(),
        detail: "the repository has no backup (hactl backup)".into(),
    })?;
    let version = listing.pg_version.clone().unwrap_or_default();
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let backup_age_s = (unix_now - newest.unix_stop).max(0) as u64;
    // The primary's current WAL reaches the archive first (a WAL switch; nothing else of the
    // cluster is touched), so that the drill recovers to a minute ago at most.
    progress("archiving the primary's current WAL");
    let leader = pick_member(stack).await;
    if let Ok(target) = ssh::target(inventory, &leader) {
        if let Ok(session) = Session::connect(&target, HostKeyPolicy::Strict).await {
            let _ = session
                .exec(&archive_current_wal(&repo.repo.stanza), b"")
                .await;
            session.close().await;
        }
    }
    let b = &repo.repo;
    let dir = format!("{}/{}", b.drill_dir.trim_end_matches('/'), b.stanza);
    let sock = format!("/run/hactl-drill-{}", b.stanza);
    progress(&format!(
        "restoring backup {} and the WAL after it into {dir} on {}",
        newest.label, b.host
    ));
    let counts: String = tables
        .iter()
        .map(|t| {
            format!(
                "if [ \"$(psql -c \"select to_regclass('{t}') is not null\")\" = t ]; then \
                 echo \"count {t} $(psql -c \"select count(*) from {t} where {c} <= '$REPLAYED'\")\"; \
                 else echo 'count {t} absent'; fi\n",
                t = t.table,
                c = t.column
            )
        })
        .collect();
    let script = format!(
        "set -eu\n\
         DIR={dir}; SOCK={sock}; PORT={port}; BIN=/usr/lib/postgresql/{version}/bin\n\
         pg() {{ runuser -u postgres -- \"$BIN/$@\"; }}\n\
         psql() {{ runuser -u postgres -- \"$BIN/psql\" -h \"$SOCK\" -p \"$PORT\" -qtAX \"$@\"; }}\n\
         clean() {{ if [ -f \"$DIR/postmaster.pid\" ]; then pg pg_ctl -D \"$DIR\" -m immediate -w stop >/dev/null 2>&1 || true; fi; rm -rf \"$DIR\" \"$SOCK\"; }}\n\
         trap clean EXIT\n\
         clean\n\
         install -d -o postgres -g postgres -m 0700 \"$DIR\" \"$SOCK\"\n\
         t0=$(date +%s.%N)\n\
         runuser -u postgres -- pgbackrest --stanza={stanza} --reset-pg1-host --pg1-path=\"$DIR\" \
           --archive-mode=off --log-level-console=warn restore\n\
         t1=$(date +%s.%N)\n\
         # Its own socket only; no TLS, no archiving: nothing of it reaches the cluster or the repository.\n\
         pg pg_ctl -D \"$DIR\" -w -t 86400 -l \"$SOCK/log\" -o \"-c port=$PORT -c listen_addresses= \
           -c unix_socket_directories=$SOCK -c ssl=off -c archive_mode=off -c hot_standby=off \
           -c cluster_name=hactl-drill -c synchronous_standby_names= -c hba_file=$DIR/pg_hba.conf -c ident_file=$DIR/pg_ident.conf\" start >/dev/null \
           || {{ tail -n 20 \"$SOCK/log\" >&2; exit 1; }}\n\
         while [ \"$(psql -c 'select pg_is_in_recovery()' 2>/dev/null)\" != f ]; do\n\
           pg pg_ctl -D \"$DIR\" status >/dev/null || {{ tail -n 20 \"$SOCK/log\" >&2; exit 1; }}\n\
           sleep 0.2\n\
         done\n\
         t2=$(date +%s.%N)\n\
         REPLAYED=$(psql -c \"select coalesce(to_char(pg_last_xact_replay_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00', '')\")\n\
         echo \"restore_s $(awk \"BEGIN {{ print $t1 - $t0 }}\")\"\n\
         echo \"recovery_s $(awk \"BEGIN {{ print $t2 - $t1 }}\")\"\n\
         echo \"replayed_to $REPLAYED\"\n\
         if out=$(pg pg_amcheck -h \"$SOCK\" -p \"$PORT\" --all --install-missing 2>&1); then echo 'amcheck ok'; \
         else echo \"amcheck $(echo \"$out\" | head -n 5 | tr '\\n' ' ')\"; fi\n\
         {counts}",
        dir = shell_quote(&dir),
        sock = shell_quote(&sock),
        port = b.drill_port,
        version = shell_quote(&version),
        stanza = shell_quote(&b.stanza),
    );
    let out = repo.run("restore-test", &script).await?;
    let mut report = DrillReport {
        backup: newest.label.clone(),
        backup_age_s,
        replayed_to: None,
        restore_s: 0.0,
        recovery_s: 0.0,
        amcheck: String::new(),
        tables: Vec::new(),
        total_s: 0.0,
        passed: false,
        problems: Vec::new(),
    };
    for line in out.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "restore_s" => report.restore_s = value.trim().parse().unwrap_or(0.0),
            "recovery_s" => report.recovery_s = value.trim().parse().unwrap_or(0.0),
            "replayed_to" => {
                report.replayed_to = Some(value.trim().to_string()).filter(|v| !v.is_empty())
            }
            "amcheck" => report.amcheck = value.trim().to_string(),
            "count" => {
                if let Some((t, n)) = value.split_once(' ') {
                    report.tables.push(TableCount {
                        table: t.to_string(),
                        restored: n.trim().parse().ok(),
                        primary: None,
                    });
                }
            }
            _ => {}
        }
    }
    // The same tables on the primary, up to the same point.
    let mut uncounted = Vec::new();
    if let (Some(replayed), false) = (&report.replayed_to, report.tables.is_empty()) {
        progress("counting the same rows on the primary");
        let target = ssh::target(inventory, &leader)?;
        let session = Session::connect(&target, HostKeyPolicy::Strict).await?;
        for t in report.tables.iter_mut() {
            let column = tables
                .iter()
                .find(|c| c.table == t.table)
                .map(|c| c.column.clone())
                .unwrap_or_default();
            let exists = format!("select to_regclass('{}') is not null", t.table);
            let sql = format!(
                "select count(*) from {} where {column} <= '{replayed}'",
                t.table
            );
            let o = session
                .exec(
                    &format!(
                        "cd /tmp; psql() {{ runuser -u postgres -- psql -qtAX \"$@\"; }}\n\
                         if [ \"$(psql -c {})\" = t ]; then psql -c {}; else echo absent; fi",
                        shell_quote(&exists),
                        shell_quote(&sql)
                    ),
                    b"",
                )
                .await?;
            let text = o.stdout_text();
            match text.trim().parse() {
                Ok(n) if o.success() => t.primary = Some(n),
                _ if o.success() && text.trim() == "absent" => t.primary = None,
                _ => uncounted.push(format!(
                    "{}: counting on the primary ({leader}) failed: {}",
                    t.table,
                    o.stderr_text().trim()
                )),
            }
        }
        session.close().await;
    }
    if report.replayed_to.is_none() {
        report
            .problems
            .push("the restored instance replayed no transaction".into());
    }
    if report.amcheck != "ok" {
        report
            .problems
            .push(format!("pg_amcheck: {}", report.amcheck));
    }
    let failed_counts = !uncounted.is_empty();
    report.problems.extend(uncounted);
    for t in report.tables.iter().filter(|_| !failed_counts) {
        let optional = tables.iter().any(|c| c.table == t.table && c.optional);
        match (t.restored, t.primary) {
            (None, None) if optional => {}
            (None, None) => report.problems.push(format!(
                "{}: no such table, neither restored nor on the primary",
                t.table
            )),
            (Some(r), None) => report.problems.push(format!(
                "{}: {r} rows restored up to the restore point, and no such table on the primary",
                t.table
            )),
            // A table made after the restore point has no row before it on the primary.
            (r, Some(p)) if r.unwrap_or(0) != p => report.problems.push(format!(
                "{}: {} rows restored up to the restore point, {p} on the primary",
                t.table,
                r.map_or("no table, no".to_string(), |r| r.to_string())
            )),
            _ => {}
        }
    }
    report.passed = report.problems.is_empty();
    report.total_s = t0.elapsed().as_secs_f64();
    Ok(report)
}
