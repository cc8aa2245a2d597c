//! The verdict: what a failover test recorded, turned into its report. No I/O here, so that
//! every rule (downtime, lost and duplicated writes, split brain, the mode's expected outcome,
//! pass or fail) is unit-tested.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::expect::{Back, Expectation, LeaderChange};
use super::report::Report;
use super::workload::Ack;
use super::{Mode, HEALTHY_AGAIN_TIMEOUT, REJOIN_TIMEOUT, WRITES_RESUME_TIMEOUT};

/// A change of Patroni's leader key in etcd: when it was seen, and the new holder (None: deleted).
#[derive(Debug, Clone)]
pub struct KeyEvent {
    pub at: Instant,
    pub holder: Option<String>,
}

/// One row of the run as the new primary holds it.
#[derive(Debug, Clone)]
pub struct Row {
    pub writer: i32,
    pub seq: i64,
    /// The row's clock_timestamp() on the server that wrote it, in seconds since the epoch.
    pub at: f64,
}

/// What the new primary holds of the run, or why it could not be read.
#[derive(Debug, Clone)]
pub enum Stored {
    Rows(Vec<Row>),
    Unreadable(String),
}

/// Everything a test recorded, on the control machine's monotonic clock.
#[derive(Debug, Clone)]
pub struct Recording {
    pub mode: Mode,
    /// How the writers reached the primary.
    pub path: String,
    /// What the mode expects, and the goal.
    pub expected: Expectation,
    /// The hosts the fault hit.
    pub hit: Vec<String>,
    pub old_leader: String,
    /// Who leads at the end (etcd's leader key, else Patroni's /cluster).
    pub new_leader: Option<String>,
    /// The new leader's address as the inventory gives it: writes it acknowledged carry it.
    pub new_leader_address: Option<String>,
    pub fault_at: Instant,
    /// The first write acknowledged after the fault (over a connection made after it when the
    /// leader may change; sent after the fault took hold when it should not), if one came within
    /// [`WRITES_RESUME_TIMEOUT`].
    pub resumed_at: Option<Instant>,
    /// Every acknowledged write, in any order.
    pub acks: Vec<Ack>,
    pub stored: Stored,
    pub key_events: Vec<KeyEvent>,
    /// Fault to what the mode expects back ([`Expectation::back`]) being back, if it was within
    /// [`REJOIN_TIMEOUT`] (the old leader is looked for only when the leader changed).
    pub back: Option<Duration>,
    /// The synchronous standby while the old one was down (kill-sync-standby).
    pub sync_standby_during: Option<String>,
    /// etcd's leader before the fault and during it (kill-etcd-leader).
    pub etcd_leader_before: Option<String>,
    pub etcd_leader_after: Option<String>,
    /// Why undoing the fault failed.
    pub heal_error: Option<String>,
    /// Why the cluster was not healthy again within [`HEALTHY_AGAIN_TIMEOUT`].
    pub unhealthy_after: Option<String>,
}

/// The holder of the leader key set last since `fault_at`: who etcd says leads now (a deletion
/// does not count, an old leader back from a partition may still think it leads).
pub fn key_holder(events: &[KeyEvent], fault_at: Instant) -> Option<String> {
    events
        .iter()
        .rev()
        .find_map(|e| e.holder.clone().filter(|_| e.at >= fault_at))
}

/// The first change of the leader key since `fault_at` to a member other than `old_leader`: the
/// new leader's election.
pub fn elected<'a>(
    events: &'a [KeyEvent],
    fault_at: Instant,
    old_leader: &str,
) -> Option<&'a KeyEvent> {
    events
        .iter()
        .find(|e| e.at >= fault_at && e.holder.as_ref().is_some_and(|h| h != old_leader))
}

/// The report of `rec`, judged against its mode's expectation and `max_lost`.
pub fn verdict(rec: &Recording, max_lost: u64) -> Report {
    let mode = rec.mode;
    let expected = &rec.expected;
    let old_leader = &rec.old_leader;
    let hit = rec.hit.join(", ");
    let fault_at = rec.fault_at;
    let acks = &rec.acks;
    let mut problems = Vec::new();
    if let Some(e) = &rec.heal_error {
        problems.push(format!("healing: {e}"));
    }
    let leader_changed = rec.new_leader.as_ref().is_some_and(|n| n != old_leader);
    match (expected.leader, &rec.new_leader) {
        (LeaderChange::Expected, Some(new)) if !leader_changed => problems.push(format!(
            "the leader stayed {new}: {mode} expects another member to lead"
        )),
        (LeaderChange::Unchanged, Some(new)) if leader_changed => problems.push(format!(
            "the leader changed from {old_leader} to {new}: {mode} expects it to stay"
        )),
        _ => {}
    }
    let back_needed = match expected.back {
        Back::OldLeaderRejoins => leader_changed,
        Back::Streams | Back::EtcdHealthy => true,
        Back::Nothing => false,
    };
    if back_needed && rec.back.is_none() {
        let within = REJOIN_TIMEOUT.as_secs();
        problems.push(match expected.back {
            Back::OldLeaderRejoins => {
                format!("{old_leader} did not come back as a streaming replica within {within} s")
            }
            Back::Streams => format!("{hit} did not stream again within {within} s"),
            Back::EtcdHealthy => format!("etcd on {hit} was not healthy again within {within} s"),
            Back::Nothing => String::new(),
        });
    }
    match mode {
        Mode::KillSyncStandby => match &rec.sync_standby_during {
            Some(s) if !rec.hit.contains(s) => {}
            _ => problems.push(format!(
                "no other member became synchronous standby while {hit} was down"
            )),
        },
        Mode::KillEtcdLeader => match &rec.etcd_leader_after {
            Some(after) if rec.etcd_leader_before.as_ref() != Some(after) => {}
            _ => problems.push(format!("etcd elected no new leader after {hit} was killed")),
        },
        _ => {}
    }

    let mut stored: HashSet<(i32, i64)> = HashSet::new();
    let mut duplicated = 0u64;
    let mut db_gap = None;
    match &rec.stored {
        Stored::Rows(rows) => {
            let mut times: Vec<f64> = Vec::with_capacity(rows.len());
            for row in rows {
                if !stored.insert((row.writer, row.seq)) {
                    duplicated += 1;
                }
                times.push(row.at);
            }
            times.sort_by(f64::total_cmp);
            let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
            db_gap = Some((gap * 1000.0).round() / 1000.0);
        }
        Stored::Unreadable(e) => problems.push(format!("cannot read the rows back: {e}")),
    }
    let lost = acks
        .iter()
        .filter(|a| !stored.contains(&(a.writer, a.seq)))
        .count();

    // Write downtime: the longest time without any acknowledged write, from just before the
    // fault on (a switchover's old primary still takes writes for a moment after the POST).
    let mut times: Vec<Instant> = acks.iter().map(|a| a.at).collect();
    times.sort();
    let window_start = fault_at
        .checked_sub(Duration::from_secs(1))
        .unwrap_or(fault_at);
    let downtime = rec.resumed_at.map(|_| {
        let gaps = times
            .windows(2)
            .filter(|w| w[1] > window_start)
            .map(|w| w[1] - w[0]);
        secs(gaps.max().unwrap_or_default())
    });
    if rec.resumed_at.is_none() {
        problems.push(format!(
            "no write was acknowledged within {} s of the fault",
            WRITES_RESUME_TIMEOUT.as_secs()
        ));
    }

    // Split brain: another member acknowledging after the leader at the end first did since
    // the fault.
    let split_brain = rec.new_leader_address.as_deref().is_some_and(|leader| {
        let first = acks
            .iter()
            .filter(|a| a.server == leader && a.at >= fault_at)
            .map(|a| a.at)
            .min();
        first.is_some_and(|t| acks.iter().any(|a| a.at > t && a.server != leader))
    });
    // A server that is no longer primary acknowledging: a write on an older timeline after one
    // on a newer timeline was acknowledged.
    let mut by_time: Vec<&Ack> = acks.iter().collect();
    by_time.sort_by_key(|a| a.at);
    let mut newest = i32::MIN;
    let mut stale = Vec::new();
    for a in by_time {
        if a.timeline < newest {
            stale.push(a);
        }
        newest = newest.max(a.timeline);
    }
    if let Some(a) = stale.first() {
        problems.push(format!(
            "{} writes acknowledged by a former primary ({} on timeline {}) after timeline {newest} took writes",
            stale.len(),
            a.server,
            a.timeline
        ));
    }
    let timeline_before = acks
        .iter()
        .filter(|a| a.at <= fault_at)
        .map(|a| a.timeline)
        .max();
    let timeline_after = acks
        .iter()
        .filter(|a| a.at > fault_at)
        .map(|a| a.timeline)
        .max();
    let since_fault = |e: &KeyEvent| (e.at >= fault_at).then(|| secs(e.at - fault_at));
    let leader_key_lost = rec
        .key_events
        .iter()
        .filter(|e| e.holder.is_none())
        .find_map(since_fault);
    let leader_elected = elected(&rec.key_events, fault_at, old_leader).and_then(since_fault);

    let goal = &expected.goal;
    if let Some(d) = downtime.filter(|d| *d > goal.max_downtime_s) {
        problems.push(format!(
            "write downtime {d} s is over the {} s allowed",
            goal.max_downtime_s
        ));
    }
    if lost as u64 > max_lost {
        problems.push(format!(
            "{lost} acknowledged writes lost (at most {max_lost} allowed)"
        ));
    }
    if split_brain {
        problems.push("two members acknowledged writes after the failover (split brain)".into());
    }
    if rec.new_leader.is_none() {
        problems.push("no leader at the end".into());
    }
    if let Some(e) = &rec.unhealthy_after {
        problems.push(format!(
            "not healthy again within {} s: {e}",
            HEALTHY_AGAIN_TIMEOUT.as_secs()
        ));
    }
    let back = rec.back.filter(|_| back_needed).map(secs);
    Report {
        mode,
        path: rec.path.clone(),
        expected: expected.outcome.clone(),
        hit: rec.hit.clone(),
        old_leader: old_leader.clone(),
        new_leader: rec.new_leader.clone(),
        write_downtime_s: downtime,
        db_write_gap_s: db_gap,
        leader_key_lost_s: leader_key_lost,
        leader_elected_s: leader_elected,
        acked_writes: acks.len(),
        lost_acked_writes: lost,
        duplicated_writes: duplicated,
        timeline_before,
        timeline_after,
        split_brain,
        stale_primary_acks: stale.len(),
        vip: None,
        old_leader_rejoined_s: back.filter(|_| expected.back == Back::OldLeaderRejoins),
        back_s: back,
        sync_standby_during: rec.sync_standby_during.clone(),
        etcd_leader_before: rec.etcd_leader_before.clone(),
        etcd_leader_after: rec.etcd_leader_after.clone(),
        max_downtime_s: goal.max_downtime_s,
        max_downtime_from: goal.source.clone(),
        max_lost,
        passed: problems.is_empty(),
        problems,
    }
}

/// Seconds, rounded to the millisecond, for reports.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::expect::expectation;
    use crate::stack::patroni::DynamicConfig;

    const A: &str = "10.0.0.1";
    const B: &str = "10.0.0.2";

    /// Times in milliseconds from the fault (negative: before it).
    struct Clock {
        fault_at: Instant,
    }

    impl Clock {
        fn new() -> Clock {
            Clock {
                fault_at: Instant::now() + Duration::from_secs(100),
            }
        }

        fn at(&self, ms: i64) -> Instant {
            let d = Duration::from_millis(ms.unsigned_abs());
            if ms < 0 {
                self.fault_at - d
            } else {
                self.fault_at + d
            }
        }

        /// Writer 0's write `seq`, acknowledged by `server` at `ms` over a connection made at
        /// `connected_ms`.
        fn ack(&self, seq: i64, ms: i64, server: &str, timeline: i32, connected_ms: i64) -> Ack {
            Ack {
                writer: 0,
                seq,
                sent_at: self.at(ms - 5),
                at: self.at(ms),
                server: server.into(),
                timeline,
                connected_at: self.at(connected_ms),
            }
        }
    }

    const CONFIG: DynamicConfig = DynamicConfig {
        ttl: 30,
        loop_wait: 6,
        failsafe_mode: true,
        synchronous_mode: true,
    };

    /// `mode`'s expectation with the stack's timings, 10 inserts per second per writer, and
    /// `max_downtime` given (None: the mode's default goal).
    fn expected(mode: Mode, max_downtime: Option<f64>) -> Expectation {
        expectation(mode, &CONFIG, 10.0, max_downtime)
    }

    /// The database's clock, in seconds, as rows carry it.
    fn row(seq: i64, at_s: f64) -> Row {
        Row {
            writer: 0,
            seq,
            at: 1_700_000_000.0 + at_s,
        }
    }

    /// A power loss of pg-a: writes on A every 100 ms up to 50 ms before the fault, then on B
    /// from 5 s after it over new connections, every write stored; etcd saw the key deleted
    /// after 1 s and taken by pg-b after 2.5 s; pg-a streams again after 20 s.
    fn failover(c: &Clock) -> Recording {
        let mut acks: Vec<Ack> = (1..=10)
            .map(|i| c.ack(i, -1050 + i * 100, A, 3, -60_000))
            .collect();
        acks.extend((11..=15).map(|i| c.ack(i, 5000 + (i - 11) * 100, B, 4, 4900)));
        let rows = (1..=10)
            .map(|i| row(i, (i * 100) as f64 / 1000.0))
            .chain((11..=15).map(|i| row(i, 6.05 + ((i - 11) * 100) as f64 / 1000.0)))
            .collect();
        Recording {
            path: "direct".into(),
            mode: Mode::KillNode,
            expected: expected(Mode::KillNode, Some(10.0)),
            hit: vec!["pg-a".into()],
            old_leader: "pg-a".into(),
            new_leader: Some("pg-b".into()),
            new_leader_address: Some(B.into()),
            fault_at: c.fault_at,
            resumed_at: Some(c.at(5000)),
            acks,
            stored: Stored::Rows(rows),
            key_events: vec![
                KeyEvent {
                    at: c.at(-5000),
                    holder: Some("pg-a".into()),
                },
                KeyEvent {
                    at: c.at(1000),
                    holder: None,
                },
                KeyEvent {
                    at: c.at(2500),
                    holder: Some("pg-b".into()),
                },
            ],
            back: Some(Duration::from_millis(20_000)),
            sync_standby_during: None,
            etcd_leader_before: None,
            etcd_leader_after: None,
            heal_error: None,
            unhealthy_after: None,
        }
    }

    #[test]
    fn a_clean_failover_passes_and_its_downtime_straddles_the_fault() {
        let c = Clock::new();
        let r = verdict(&failover(&c), 0);
        assert!(r.passed, "{:?}", r.problems);
        assert!(r.problems.is_empty());
        assert_eq!(r.old_leader, "pg-a");
        assert_eq!(r.new_leader.as_deref(), Some("pg-b"));
        // The last write on A was 50 ms before the fault, the first on B 5 s after it.
        assert_eq!(r.write_downtime_s, Some(5.05));
        assert_eq!(r.db_write_gap_s, Some(5.05));
        assert_eq!(r.leader_key_lost_s, Some(1.0));
        assert_eq!(r.leader_elected_s, Some(2.5));
        assert_eq!(r.acked_writes, 15);
        assert_eq!(r.lost_acked_writes, 0);
        assert_eq!(r.duplicated_writes, 0);
        assert_eq!((r.timeline_before, r.timeline_after), (Some(3), Some(4)));
        assert!(!r.split_brain);
        assert_eq!(r.old_leader_rejoined_s, Some(20.0));
        assert_eq!((r.max_downtime_s, r.max_lost), (10.0, 0));
        assert_eq!(r.max_downtime_from, "--max-downtime");
        assert_eq!(r.hit, ["pg-a"]);
        assert_eq!(r.back_s, Some(20.0));
    }

    #[test]
    fn a_gap_well_before_the_fault_is_not_downtime() {
        let c = Clock::new();
        let mut rec = failover(&c);
        // 6 s without writes, ending 4 s before the fault: the writers' own hiccup.
        rec.acks.push(c.ack(100, -10_000, A, 3, -60_000));
        rec.acks.push(c.ack(101, -4_000, A, 3, -60_000));
        if let Stored::Rows(rows) = &mut rec.stored {
            rows.extend([row(100, -9.0), row(101, -3.0)]);
        }
        let r = verdict(&rec, 0);
        assert_eq!(r.write_downtime_s, Some(5.05));
        assert!(r.passed, "{:?}", r.problems);
    }

    #[test]
    fn downtime_over_the_limit_fails() {
        let c = Clock::new();
        let mut rec = failover(&c);
        rec.expected.goal.max_downtime_s = 3.0;
        let r = verdict(&rec, 0);
        assert!(!r.passed);
        assert_eq!(
            r.problems,
            ["write downtime 5.05 s is over the 3 s allowed"]
        );
    }

    #[test]
    fn the_old_leader_acknowledging_after_the_new_one_is_split_brain() {
        let c = Clock::new();
        let mut rec = failover(&c);
        // pg-a, cut off but still believing it leads, takes a write after pg-b's first.
        rec.acks.push(c.ack(16, 5050, A, 3, -60_000));
        if let Stored::Rows(rows) = &mut rec.stored {
            rows.push(row(16, 6.1));
        }
        let r = verdict(&rec, 0);
        assert!(r.split_brain);
        assert!(!r.passed);
        // Its timeline proves it too: timeline 3 acknowledged after timeline 4 had.
        assert_eq!(r.stale_primary_acks, 1);
        assert_eq!(
            r.problems,
            [
                "1 writes acknowledged by a former primary (10.0.0.1 on timeline 3) after timeline 4 took writes",
                "two members acknowledged writes after the failover (split brain)"
            ]
        );
    }

    #[test]
    fn writes_on_the_old_leader_before_the_new_ones_first_are_no_split_brain() {
        let c = Clock::new();
        let mut rec = failover(&c);
        // A switchover's old primary takes a last write just after the POST.
        rec.acks.push(c.ack(16, 200, A, 3, -60_000));
        if let Stored::Rows(rows) = &mut rec.stored {
            rows.push(row(16, 1.2));
        }
        let r = verdict(&rec, 0);
        assert!(!r.split_brain);
        assert!(r.passed, "{:?}", r.problems);
    }

    #[test]
    fn a_leader_that_stays_cannot_split_the_brain() {
        let c = Clock::new();
        let mut rec = failover(&c);
        // kill-postgres: pg-a recovers and leads again; B's acknowledgements do not matter.
        rec.mode = Mode::KillPostgres;
        rec.expected = expected(Mode::KillPostgres, Some(10.0));
        rec.new_leader = Some("pg-a".into());
        rec.new_leader_address = Some(A.into());
        rec.back = None;
        rec.acks.push(c.ack(16, 6000, A, 3, 5500));
        let r = verdict(&rec, 0);
        assert!(!r.split_brain);
        assert_eq!(r.lost_acked_writes, 1);
        // B's writes were on timeline 4: A's on 3 after them came from a former primary.
        assert_eq!(
            r.problems,
            [
                "1 writes acknowledged by a former primary (10.0.0.1 on timeline 3) after timeline 4 took writes",
                "1 acknowledged writes lost (at most 0 allowed)"
            ]
        );
    }

    #[test]
    fn duplicated_rows_are_counted() {
        let c = Clock::new();
        let mut rec = failover(&c);
        if let Stored::Rows(rows) = &mut rec.stored {
            rows.push(row(12, 6.15));
            rows.push(row(12, 6.16));
        }
        let r = verdict(&rec, 0);
        assert_eq!(r.duplicated_writes, 2);
        assert_eq!(r.lost_acked_writes, 0);
    }

    #[test]
    fn acknowledged_writes_missing_on_the_new_primary_are_lost() {
        let c = Clock::new();
        let mut rec = failover(&c);
        if let Stored::Rows(rows) = &mut rec.stored {
            // The last two writes on A never reached pg-b.
            rows.retain(|r| r.seq != 9 && r.seq != 10);
        }
        let r = verdict(&rec, 0);
        assert_eq!(r.lost_acked_writes, 2);
        assert!(!r.passed);
        assert_eq!(
            r.problems,
            ["2 acknowledged writes lost (at most 0 allowed)"]
        );
        let allowed = verdict(&rec, 2);
        assert!(allowed.passed, "{:?}", allowed.problems);
    }

    #[test]
    fn rows_that_cannot_be_read_back_count_every_write_as_lost() {
        let c = Clock::new();
        let mut rec = failover(&c);
        rec.stored = Stored::Unreadable("connection refused".into());
        let r = verdict(&rec, 0);
        assert_eq!(r.db_write_gap_s, None);
        assert_eq!(r.lost_acked_writes, 15);
        assert_eq!(
            r.problems,
            [
                "cannot read the rows back: connection refused",
                "15 acknowledged writes lost (at most 0 allowed)"
            ]
        );
    }

    #[test]
    fn no_write_after_the_fault_has_no_downtime_and_fails() {
        let c = Clock::new();
        let mut rec = failover(&c);
        rec.acks.retain(|a| a.at < c.fault_at);
        rec.resumed_at = None;
        if let Stored::Rows(rows) = &mut rec.stored {
            rows.retain(|r| r.seq <= 10);
        }
        let r = verdict(&rec, 0);
        assert_eq!(r.write_downtime_s, None);
        assert_eq!(r.timeline_after, None);
        assert!(!r.passed);
        assert_eq!(
            r.problems,
            ["no write was acknowledged within 120 s of the fault"]
        );
    }

    #[test]
    fn every_problem_is_reported_in_order() {
        let c = Clock::new();
        let mut rec = failover(&c);
        rec.heal_error = Some("booting pg-a again: no".into());
        rec.back = None;
        rec.unhealthy_after = Some("etcd has no quorum".into());
        let r = verdict(&rec, 0);
        assert_eq!(
            r.problems,
            [
                "healing: booting pg-a again: no",
                "pg-a did not come back as a streaming replica within 180 s",
                "not healthy again within 90 s: etcd has no quorum",
            ]
        );
        let mut leaderless = failover(&c);
        leaderless.new_leader = None;
        leaderless.new_leader_address = None;
        let r = verdict(&leaderless, 0);
        assert_eq!(r.problems, ["no leader at the end"]);
    }

    /// `mode` hit `hit` and the leader pg-a stayed: writes on A every 100 ms from 1 s before the
    /// fault to 12 s after it, none in `gap` (ms from, ms to, open), every one stored; the member
    /// hit is back after 15 s.
    fn steady(c: &Clock, mode: Mode, hit: &[&str], gap: Option<(i64, i64)>) -> Recording {
        let times: Vec<i64> = (-10..=120)
            .map(|i| i * 100)
            .filter(|ms| gap.is_none_or(|(from, to)| *ms <= from || *ms >= to))
            .collect();
        let acks = (1..)
            .zip(&times)
            .map(|(seq, ms)| c.ack(seq, *ms, A, 3, -60_000));
        let rows = (1..)
            .zip(&times)
            .map(|(seq, ms)| row(seq, *ms as f64 / 1000.0));
        let resumed = times.iter().find(|ms| **ms > 0).map(|ms| c.at(*ms));
        Recording {
            mode,
            path: "direct".into(),
            expected: expected(mode, None),
            hit: hit.iter().map(|h| h.to_string()).collect(),
            old_leader: "pg-a".into(),
            new_leader: Some("pg-a".into()),
            new_leader_address: Some(A.into()),
            fault_at: c.fault_at,
            resumed_at: resumed,
            acks: acks.collect(),
            stored: Stored::Rows(rows.collect()),
            key_events: Vec::new(),
            back: Some(Duration::from_secs(15)),
            sync_standby_during: None,
            etcd_leader_before: None,
            etcd_leader_after: None,
            heal_error: None,
            unhealthy_after: None,
        }
    }

    #[test]
    fn a_killed_replica_passes_when_the_leader_stays_and_it_streams_again() {
        let c = Clock::new();
        let r = verdict(&steady(&c, Mode::KillReplica, &["pg-c"], None), 0);
        assert!(r.passed, "{:?}", r.problems);
        assert_eq!(
            r.expected,
            "no leader change; writes continue; the replica streams again once powered on"
        );
        assert_eq!(r.hit, ["pg-c"]);
        assert_eq!(r.write_downtime_s, Some(0.1));
        assert_eq!((r.back_s, r.old_leader_rejoined_s), (Some(15.0), None));
        assert_eq!(r.max_downtime_s, 1.0);
        assert_eq!(r.max_downtime_from, "the kill-replica default");
    }

    #[test]
    fn a_killed_replica_that_does_not_stream_again_or_moves_the_leader_fails() {
        let c = Clock::new();
        let mut rec = steady(&c, Mode::KillReplica, &["pg-c"], None);
        rec.back = None;
        assert_eq!(
            verdict(&rec, 0).problems,
            ["pg-c did not stream again within 180 s"]
        );
        let mut moved = steady(&c, Mode::KillReplica, &["pg-c"], None);
        moved.new_leader = Some("pg-b".into());
        moved.new_leader_address = Some(B.into());
        assert_eq!(
            verdict(&moved, 0).problems,
            ["the leader changed from pg-a to pg-b: kill-replica expects it to stay"]
        );
    }

    #[test]
    fn another_member_acknowledging_while_the_leader_stays_is_split_brain() {
        let c = Clock::new();
        let mut rec = steady(&c, Mode::KillReplica, &["pg-c"], None);
        rec.acks.push(c.ack(1000, 5050, B, 3, 5000));
        if let Stored::Rows(rows) = &mut rec.stored {
            rows.push(row(1000, 5.05));
        }
        let r = verdict(&rec, 0);
        assert!(r.split_brain);
        assert!(!r.passed);
    }

    #[test]
    fn a_killed_sync_standby_passes_when_writes_stall_until_another_is_named() {
        let c = Clock::new();
        let mut rec = steady(&c, Mode::KillSyncStandby, &["pg-b"], Some((0, 4000)));
        rec.sync_standby_during = Some("pg-c".into());
        let r = verdict(&rec, 0);
        assert!(r.passed, "{:?}", r.problems);
        assert_eq!(r.write_downtime_s, Some(4.0));
        assert_eq!(r.max_downtime_s, 8.0);
        assert_eq!(r.sync_standby_during.as_deref(), Some("pg-c"));
    }

    #[test]
    fn a_killed_sync_standby_fails_without_a_new_one_or_with_a_long_stall() {
        let c = Clock::new();
        let mut rec = steady(&c, Mode::KillSyncStandby, &["pg-b"], Some((0, 9000)));
        rec.sync_standby_during = Some("pg-b".into());
        assert_eq!(
            verdict(&rec, 0).problems,
            [
                "no other member became synchronous standby while pg-b was down",
                "write downtime 9 s is over the 8 s allowed",
            ]
        );
    }

    #[test]
    fn a_killed_etcd_leader_passes_when_etcd_elects_another_and_writes_go_on() {
        let c = Clock::new();
        let mut rec = steady(&c, Mode::KillEtcdLeader, &["e-1"], None);
        rec.etcd_leader_before = Some("e-1".into());
        rec.etcd_leader_after = Some("e-2".into());
        let r = verdict(&rec, 0);
        assert!(r.passed, "{:?}", r.problems);
        assert_eq!(r.max_downtime_s, 1.0);
        assert_eq!(r.etcd_leader_after.as_deref(), Some("e-2"));
    }

    #[test]
    fn a_killed_etcd_leader_fails_when_no_other_leads_or_etcd_stays_down() {
        let c = Clock::new();
        let mut rec = steady(&c, Mode::KillEtcdLeader, &["e-1"], None);
        rec.etcd_leader_before = Some("e-1".into());
        rec.etcd_leader_after = Some("e-1".into());
        rec.back = None;
        assert_eq!(
            verdict(&rec, 0).problems,
            [
                "etcd on e-1 was not healthy again within 180 s",
                "etcd elected no new leader after e-1 was killed",
            ]
        );
    }

    #[test]
    fn losing_etcd_quorum_with_failsafe_mode_passes_without_any_gap() {
        let c = Clock::new();
        let r = verdict(&steady(&c, Mode::LoseEtcdQuorum, &["e-1", "e-2"], None), 0);
        assert!(r.passed, "{:?}", r.problems);
        // One writer's interval at 10/s plus the slack.
        assert_eq!(r.max_downtime_s, 1.1);
        assert_eq!(r.hit, ["e-1", "e-2"]);
    }

    #[test]
    fn losing_etcd_quorum_with_failsafe_mode_fails_on_a_gap_over_the_slack() {
        let c = Clock::new();
        let rec = steady(
            &c,
            Mode::LoseEtcdQuorum,
            &["e-1", "e-2"],
            Some((2000, 3300)),
        );
        assert_eq!(
            verdict(&rec, 0).problems,
            ["write downtime 1.3 s is over the 1.1 s allowed"]
        );
    }

    #[test]
    fn a_switchover_that_leaves_the_leader_in_place_fails() {
        let c = Clock::new();
        let mut rec = steady(&c, Mode::Switchover, &["pg-a"], None);
        rec.back = None;
        assert_eq!(
            verdict(&rec, 0).problems,
            ["the leader stayed pg-a: switchover expects another member to lead"]
        );
    }

    #[test]
    fn the_leader_key_set_last_since_the_fault_names_the_new_leader() {
        let c = Clock::new();
        let event = |ms, holder: Option<&str>| KeyEvent {
            at: c.at(ms),
            holder: holder.map(str::to_string),
        };
        let events = [
            event(-100, Some("pg-a")),
            event(1000, None),
            event(2000, Some("pg-b")),
            event(9000, Some("pg-b")),
            event(9500, None),
        ];
        assert_eq!(key_holder(&events, c.fault_at).as_deref(), Some("pg-b"));
        assert_eq!(key_holder(&events[..2], c.fault_at), None);
    }
}
