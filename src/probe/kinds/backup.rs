//! `backup`: the state of a pgBackRest stanza, as a user of the backups would check it: the age
//! of the newest backup of each type in the repository, and whether WAL reaches the archive
//! (`pg_stat_archiver` on whichever member is primary: failures, and the age of the last WAL
//! archived).
//!
//! The target is the URL where the repository host publishes its backups: role pgbackrest_repo
//! writes them as metrics for node_exporter's textfile collector (`hactl_backup_*`, from
//! `pgbackrest info` every minute and after each backup), so the prober reads the repository
//! without any right on it. The members, when listed, are asked about the archiver over a
//! PostgreSQL session to the primary.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{GaugeVec, IntGaugeVec};
use serde::Deserialize;

use super::postgres::{connect, pg_error, Login};
use super::{BadTarget, Env, Failure, Kind, Mistake, Run};
use crate::probe::config::{Dur, Probe};
use crate::probe::metrics::{Per, Registrar};

pub(crate) struct Backup;

/// The backup types pgBackRest takes, as the `type` label says them.
pub(crate) const TYPES: [&str; 3] = ["full", "diff", "incr"];

/// `backup:` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Options {
    /// The stanza whose backups are read (required).
    #[serde(default)]
    stanza: Option<String>,
    /// Request headers for the published page (node_exporter's basic auth).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The published list older than this fails the probe (default 5m): nothing reads the
    /// repository any more.
    #[serde(default)]
    max_status_age: Option<Dur>,
    /// The members (`HOST:PORT`): the archiver of the one that is primary is read.
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// A name in the inventory's secret store (`-i`): the password is read from there.
    #[serde(default)]
    password_secret: Option<String>,
    #[serde(default)]
    dbname: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    stanza: String,
    headers: BTreeMap<String, String>,
    max_status_age: Duration,
    /// The members as one comma-separated target, for a session to the primary.
    members: Option<String>,
    login: Login,
}

/// A backup probe's client for the published page, and its session to the primary.
pub(crate) struct State {
    http: reqwest::Client,
    password: Option<String>,
    session: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

/// Per target (repository) and, for the backups, per type.
pub(crate) struct Series {
    age: GaugeVec,
    count: IntGaugeVec,
    size: GaugeVec,
    status_age: GaugeVec,
    repo_status: IntGaugeVec,
    archive_age: GaugeVec,
    archive_failing: IntGaugeVec,
    archive_failed: GaugeVec,
    archived: GaugeVec,
}

impl Kind for Backup {
    const NAME: &'static str = "backup";
    const BLOCK: Option<&'static str> = Some("backup");
    type Options = Options;
    type Spec = Spec;
    type State = State;
    type Series = Series;

    fn check(o: Options) -> Result<Spec, Mistake> {
        let stanza = o
            .stanza
            .ok_or_else(|| Mistake::new("backup.stanza", "missing: the pgBackRest stanza"))?;
        if stanza.is_empty() || stanza.contains(['"', '\\', '\n']) {
            return Err(Mistake::new(
                "backup.stanza",
                format!("{stanza:?} is not a stanza name"),
            ));
        }
        for m in &o.members {
            let port = m.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(_))) || m.contains(',') {
                return Err(Mistake::new(
                    "backup.members",
                    format!("{m:?} is not HOST:PORT"),
                ));
            }
        }
        if o.members.is_empty()
            && (o.user.is_some() || o.password.is_some() || o.password_secret.is_some())
        {
            return Err(Mistake::new(
                "backup.members",
                "missing: the login is for the members' archiver",
            ));
        }
        Ok(Spec {
            stanza,
            headers: o.headers,
            max_status_age: o
                .max_status_age
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(300)),
            members: (!o.members.is_empty()).then(|| o.members.join(",")),
            login: Login::new(o.user, o.dbname, o.password, o.password_secret),
        })
    }

    fn check_target(_: &Spec, target: &str) -> Result<(), BadTarget> {
        if target.starts_with("http://") || target.starts_with("https://") {
            Ok(())
        } else {
            Err(BadTarget(
                "is not the http:// or https:// URL where the repository's backups are published",
            ))
        }
    }

    fn group_target(_: &Spec, host_port: String) -> String {
        format!("https://{host_port}/metrics")
    }

    fn state(spec: &Spec, probe: &Probe, env: &Env) -> Result<State, Mistake> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hactl-probe/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = &probe.tls {
            b = tls.reqwest(b).map_err(|e| Mistake::new("tls", e.to_string()))?;
        }
        Ok(State {
            http: b.build().map_err(|e| Mistake::new("backup", e.to_string()))?,
            password: spec.login.password(env)?,
            session: Default::default(),
        })
    }

    async fn run(run: Run<'_, Self>) -> Result<(), Failure> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        // Both halves are read and recorded; the repository's failure is reported first.
        let archive = match &run.spec.members {
            Some(members) => archiver(&run, members).await,
            None => Ok(()),
        };
        let repository = repository(&run, now).await;
        repository.and(archive)
    }

    fn series(r: &mut Registrar) -> Series {
        Series {
            age: r.gauge(
                "hactl_backup_age_seconds",
                "Seconds since the newest backup of this type ended.",
                Per::TargetType,
            ),
            count: r.int_gauge(
                "hactl_backup_count",
                "Backups of this type in the repository.",
                Per::TargetType,
            ),
            size: r.gauge(
                "hactl_backup_size_bytes",
                "What the newest backup of this type takes in the repository.",
                Per::TargetType,
            ),
            status_age: r.gauge(
                "hactl_backup_status_age_seconds",
                "Seconds since the repository host last read its backup list.",
                Per::Target,
            ),
            repo_status: r.int_gauge(
                "hactl_backup_repo_status_code",
                "pgBackRest's status of the stanza (0 ok; -1 its info command failed).",
                Per::Target,
            ),
            archive_age: r.gauge(
                "hactl_wal_archive_age_seconds",
                "Seconds since the primary last archived a WAL file (since it started, if none).",
                Per::Target,
            ),
            archive_failing: r.int_gauge(
                "hactl_wal_archive_failing",
                "1 if the primary's last archive attempt failed.",
                Per::Target,
            ),
            archive_failed: r.gauge(
                "hactl_wal_archive_failed_count",
                "Failed archive attempts on the primary since its statistics were reset.",
                Per::Target,
            ),
            archived: r.gauge(
                "hactl_wal_archived_count",
                "WAL files the primary archived since its statistics were reset.",
                Per::Target,
            ),
        }
    }

    fn forget_target(series: &Series, probe: &str, dst: &str) {
        for t in TYPES {
            let l = [probe, dst, t];
            let _ = series.age.remove_label_values(&l);
            let _ = series.count.remove_label_values(&l);
            let _ = series.size.remove_label_values(&l);
        }
    }
}

/// The repository's published backups: their ages, counts and sizes; fails when the list is
/// stale, the stanza is not ok, or there is no full backup.
async fn repository(run: &Run<'_, Backup>, now: f64) -> Result<(), Failure> {
    let (spec, s) = (run.spec, run.series);
    let mut req = run.state.http.get(run.target);
    for (k, v) in &spec.headers {
        req = req.header(k, v);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Failure(format!("the repository's page: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Failure(format!("the repository's page: status {status}")));
    }
    let page = resp
        .text()
        .await
        .map_err(|e| Failure(format!("the repository's page: {e}")))?;
    let published = Published::parse(&page, &spec.stanza);
    let t = [run.probe.name.as_str(), run.target];
    let Some(read_at) = published.read_at else {
        return Err(Failure(format!(
            "the page has no backup list of stanza {} (hactl_backup_info_timestamp_seconds)",
            spec.stanza
        )));
    };
    let status_age = (now - read_at).max(0.0);
    s.status_age.with_label_values(&t).set(status_age);
    s.repo_status
        .with_label_values(&t)
        .set(published.status.unwrap_or(-1));
    for ty in TYPES {
        let l = [run.probe.name.as_str(), run.target, ty];
        let b = published.types.get(ty);
        s.count
            .with_label_values(&l)
            .set(b.map(|b| b.count).unwrap_or(0));
        match b.and_then(|b| b.stop) {
            Some(stop) => s.age.with_label_values(&l).set((now - stop).max(0.0)),
            None => {
                let _ = s.age.remove_label_values(&l);
            }
        }
        match b.and_then(|b| b.size) {
            Some(size) => s.size.with_label_values(&l).set(size),
            None => {
                let _ = s.size.remove_label_values(&l);
            }
        }
    }
    if status_age > spec.max_status_age.as_secs_f64() {
        return Err(Failure(format!(
            "the backup list was last read {status_age:.0} s ago (hactl-backup-status.timer on the repository host)"
        )));
    }
    match published.status {
        Some(0) => {}
        Some(-1) | None => {
            return Err(Failure::new(
                "pgBackRest's info fails on the repository host (journalctl -u hactl-backup-status)",
            ))
        }
        Some(code) => {
            return Err(Failure(format!(
                "pgBackRest reports stanza {} with status {code}",
                spec.stanza
            )))
        }
    }
    if published.types.get("full").is_none_or(|b| b.count == 0) {
        return Err(Failure(format!(
            "no full backup of stanza {} in the repository",
            spec.stanza
        )));
    }
    Ok(())
}

/// The primary's archiver: failing when its last attempt failed.
async fn archiver(run: &Run<'_, Backup>, members: &str) -> Result<(), Failure> {
    let config = run.spec.login.config(
        run.state.password.as_deref(),
        members,
        run.probe.timeout,
        true,
    )?;
    let mut session = run.state.session.lock().await;
    if session.as_ref().is_none_or(|c| c.is_closed()) {
        *session = Some(connect(&config, run.probe.tls.as_ref()).await?);
    }
    let client = session.as_ref().ok_or(Failure::new("no connection"))?;
    let row = client
        .query_one(
            "select extract(epoch from now() - coalesce(last_archived_time, pg_postmaster_start_time()))::float8,
                    coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false),
                    failed_count::float8, archived_count::float8,
                    coalesce(last_failed_wal, '')
             from pg_stat_archiver",
            &[],
        )
        .await
        .map_err(|e| {
            // A session that broke (a failover) is made again on the next run.
            *session = None;
            pg_error(e)
        })?;
    let t = [run.probe.name.as_str(), run.target];
    let s = run.series;
    let age: f64 = row.get(0);
    let failing: bool = row.get(1);
    s.archive_age.with_label_values(&t).set(age.max(0.0));
    s.archive_failing
        .with_label_values(&t)
        .set(i64::from(failing));
    s.archive_failed.with_label_values(&t).set(row.get(2));
    s.archived.with_label_values(&t).set(row.get(3));
    if failing {
        let wal: String = row.get(4);
        return Err(Failure(format!(
            "the primary fails to archive WAL {wal} (its log says why)"
        )));
    }
    Ok(())
}

/// One backup type as the repository host published it.
#[derive(Debug, Default, PartialEq)]
struct Published1 {
    count: i64,
    stop: Option<f64>,
    size: Option<f64>,
}

/// The repository's page, for one stanza.
#[derive(Debug, Default, PartialEq)]
struct Published {
    read_at: Option<f64>,
    status: Option<i64>,
    types: BTreeMap<String, Published1>,
}

impl Published {
    /// The `hactl_backup_*` series of `stanza` in a Prometheus text page.
    fn parse(page: &str, stanza: &str) -> Published {
        let mut p = Published::default();
        for line in page.lines() {
            if !line.starts_with("hactl_backup_") {
                continue;
            }
            let Some((name, labels, value)) = sample(line) else {
                continue;
            };
            if labels.get("stanza").map(String::as_str) != Some(stanza) {
                continue;
            }
            let ty = labels.get("type").cloned();
            let mut of_type = |f: &dyn Fn(&mut Published1)| {
                if let Some(ty) = &ty {
                    f(p.types.entry(ty.clone()).or_default())
                }
            };
            match name {
                "hactl_backup_info_timestamp_seconds" => p.read_at = Some(value),
                "hactl_backup_info_status_code" => p.status = Some(value as i64),
                "hactl_backup_count" => of_type(&|e| e.count = value as i64),
                "hactl_backup_last_stop_timestamp_seconds" => of_type(&|e| e.stop = Some(value)),
                "hactl_backup_last_repo_size_bytes" => of_type(&|e| e.size = Some(value)),
                _ => {}
            }
        }
        p
    }
}

/// A sample line of the Prometheus text format: name, labels, value.
fn sample(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let (head, value) = line.trim_end().rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, rest) = match head.find('{') {
        Some(i) => (&head[..i], &head[i + 1..]),
        None => (head, "}"),
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest;
    loop {
        rest = rest.trim_start_matches(',');
        if rest.starts_with('}') {
            break;
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut val = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                '"' => break i,
                c => val.push(c),
            }
        };
        labels.insert(key.trim().to_string(), val);
        rest = &after[end + 1..];
    }
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::config::tests::{assert_errors, probe};
    use crate::probe::kinds::Spec as AnySpec;

    const PAGE: &str = r#"# HELP hactl_backup_count Backups of each type in the repository.
# TYPE hactl_backup_count gauge
hactl_backup_count{stanza="main",type="diff"} 0
hactl_backup_count{stanza="main",type="full"} 2
hactl_backup_count{stanza="main",type="incr"} 3
hactl_backup_count{stanza="other",type="full"} 9
hactl_backup_info_status_code{stanza="main"} 0
hactl_backup_info_timestamp_seconds{stanza="main"} 1.7651e+09
hactl_backup_last_repo_size_bytes{stanza="main",type="full"} 4.2e+06
hactl_backup_last_stop_timestamp_seconds{stanza="main",type="full"} 1.765e+09
hactl_backup_last_stop_timestamp_seconds{stanza="main",type="incr"} 1765090000
node_load1 0.5
"#;

    #[test]
    fn reads_the_published_backups_of_its_stanza() {
        let p = Published::parse(PAGE, "main");
        assert_eq!(p.read_at, Some(1.7651e9));
        assert_eq!(p.status, Some(0));
        assert_eq!(p.types["full"].count, 2);
        assert_eq!(p.types["full"].stop, Some(1.765e9));
        assert_eq!(p.types["full"].size, Some(4.2e6));
        assert_eq!(p.types["incr"].stop, Some(1765090000.0));
        assert_eq!(p.types["diff"], Published1::default());
        assert_eq!(Published::parse(PAGE, "none"), Published::default());
    }

    #[test]
    fn sample_lines_with_escaped_label_values() {
        let (name, labels, v) =
            sample(r#"m{a="x\"y",b="1,2"} 3"#).expect("a sample");
        assert_eq!((name, v), ("m", 3.0));
        assert_eq!(labels["a"], "x\"y");
        assert_eq!(labels["b"], "1,2");
        assert_eq!(sample("m 4").map(|s| s.2), Some(4.0));
        assert!(sample("m{a=\"x} 4").is_none());
    }

    #[test]
    fn options_are_read_with_their_defaults() {
        let p = probe(
            "probes:\n  - name: b\n    type: backup\n    targets: [\"https://r:9100/metrics\"]\n    backup:\n      stanza: main\n      members: [\"a:5432\", \"b:5432\"]\n      user: u\n      password: p\n",
        );
        let AnySpec::Backup(s) = &p.spec else {
            panic!("{:?}", p.spec)
        };
        assert_eq!(s.stanza, "main");
        assert_eq!(s.max_status_age, Duration::from_secs(300));
        assert_eq!(s.members.as_deref(), Some("a:5432,b:5432"));
        assert_eq!(s.login.user, "u");
        assert_eq!(
            p.spec.group_target("r:9100".into()),
            "https://r:9100/metrics"
        );
    }

    #[test]
    fn mistakes_name_line_and_key() {
        let head = "probes:\n  - name: b\n    type: backup\n    targets: [\"https://r:9100/metrics\"]\n";
        assert_errors(
            head,
            &[
                ("    backup: {}\n", "probes.yml:5: probes[0] (b): backup.stanza: missing: the pgBackRest stanza"),
                ("    backup: {stanza: m, members: [\"a\"]}\n", "probes.yml:5: backup.members: \"a\" is not HOST:PORT"),
                ("    backup: {stanza: m, user: u}\n", "probes.yml:5: probes[0] (b): backup.members: missing: the login is for the members' archiver"),
                ("    backup: {stanza: m, max_status_age: soon}\n", "probes.yml:5: probes[0]: backup.max_status_age: \"soon\" is not a duration (examples: 500ms, 5s, 2m, 1h)"),
                ("    backup: {stanza: m, tabel: t}\n", "probes.yml:5: probes[0]: backup.tabel: unknown field `tabel`, expected one of `stanza`, `headers`, `max_status_age`, `members`, `user`, `password`, `password_secret`, `dbname`"),
            ],
        );
    }
}
