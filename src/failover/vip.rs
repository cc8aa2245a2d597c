//! The VIP during a test: which balancers hold it, asked of each over its SSH session every
//! [`SAMPLE_EVERY`], and moving it to another balancer before `kill-balancer`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::fault::{session, FaultError};
use crate::inventory::Inventory;
use crate::ssh::Session;
use crate::stack::Endpoint;

/// How often the holders are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// A balancer that does not answer within this is taken as not holding the VIP: a host that
/// lost its power answers nothing, and holds nothing the network can reach.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long keepalived may take to hand the VIP to another balancer.
const MOVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Who held the VIP at one moment, and which balancers answered at all.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub holders: Vec<String>,
    pub answered: Vec<String>,
}

/// A session to each balancer.
pub struct Vip {
    pub address: String,
    pub follows_leader: bool,
    balancers: Vec<(String, Session)>,
}

impl Vip {
    /// Sessions to the balancers of `endpoint`, when it has a VIP.
    pub async fn connect(
        inventory: &Inventory,
        endpoint: Option<&Endpoint>,
    ) -> Result<Option<Vip>, FaultError> {
        let Some(e) = endpoint.filter(|e| e.vip) else {
            return Ok(None);
        };
        let sessions = futures::future::join_all(e.balancers.iter().map(|b| session(inventory, b)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Vip {
            address: e.address.clone(),
            follows_leader: e.follows_leader,
            balancers: e.balancers.iter().cloned().zip(sessions).collect(),
        }))
    }

    /// The balancers' names.
    pub fn balancers(&self) -> Vec<String> {
        self.balancers.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The balancers that hold the VIP now.
    pub async fn holders(&self) -> Vec<String> {
        self.ask().await.0
    }

    /// (the balancers holding the VIP, the balancers that answered).
    async fn ask(&self) -> (Vec<String>, Vec<String>) {
        let script = format!("ip -o -4 addr show to {}/32", self.address);
        let asks = self.balancers.iter().map(|(name, s)| {
            let script = script.clone();
            async move {
                match tokio::time::timeout(ASK_TIMEOUT, s.exec(&script, b"")).await {
                    Ok(Ok(o)) if o.success() => {
                        Some((name.clone(), !o.stdout_text().trim().is_empty()))
                    }
                    _ => None,
                }
            }
        });
        let answers: Vec<(String, bool)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let holders = answers.iter().filter(|(_, h)| *h).map(|(n, _)| n.clone());
        let answered = answers.iter().map(|(n, _)| n.clone());
        (holders.collect(), answered.collect())
    }

    /// Samples the holders until `stop` turns true.
    pub fn sample(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> Arc<Mutex<Vec<Sample>>> {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let into = samples.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let at = Instant::now();
                let (holders, answered) = self.ask().await;
                into.lock().unwrap_or_else(|p| p.into_inner()).push(Sample {
                    at,
                    holders,
                    answered,
                });
            }
        });
        samples
    }

    /// Moves the VIP to `want`: keepalived stops on every other balancer until `want` holds it,
    /// then starts again there (with `nopreempt`, a balancer that starts takes nothing back).
    /// The holder stops last, so `want` is the only backup left to take the VIP: two backups
    /// would both become MASTER for a moment and clients could keep the loser's ARP.
    pub async fn move_to(&self, want: &str) -> Result<(), FaultError> {
        let holders = self.holders().await;
        if holders == [want] {
            return Ok(());
        }
        let mut others: Vec<&(String, Session)> =
            self.balancers.iter().filter(|(n, _)| n != want).collect();
        others.sort_by_key(|(n, _)| holders.contains(n));
        for (name, s) in &others {
            systemctl(name, s, "stop").await?;
        }
        let deadline = Instant::now() + MOVE_TIMEOUT;
        let moved = loop {
            if self.holders().await == [want] {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        };
        for (name, s) in &others {
            systemctl(name, s, "start").await?;
        }
        if moved {
            Ok(())
        } else {
            Err(FaultError::Command {
                what: format!("moving the VIP to {want}"),
                stderr: format!(
                    "{want} did not take it within {MOVE_TIMEOUT:?} of keepalived stopping elsewhere"
                ),
            })
        }
    }
}

/// `systemctl VERB keepalived` on one balancer.
async fn systemctl(name: &str, s: &Session, verb: &str) -> Result<(), FaultError> {
    let out = s
        .exec(&format!("systemctl {verb} keepalived"), b"")
        .await
        .map_err(FaultError::Ssh)?;
    if out.success() {
        Ok(())
    } else {
        Err(FaultError::Command {
            what: format!("systemctl {verb} keepalived on {name}"),
            stderr: out.stderr_text().trim().to_string(),
        })
    }
}

/// What the samples show: where the VIP was, and for how long it was where it should not be.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VipReport {
    pub address: String,
    pub follows_leader: bool,
    pub samples: usize,
    pub holder_before: Option<String>,
    pub holder_after: Option<String>,
    /// Sampled time with the VIP on two or more balancers at once.
    pub on_two_hosts_s: f64,
    /// The longest stretch with no balancer holding it.
    pub unheld_max_s: f64,
    /// The longest stretch on another host than the one whose Patroni held the leader key, while
    /// that host's balancer answered (it could have held the VIP).
    pub off_leader_max_s: f64,
    /// How long `off_leader_max_s` may be when the VIP follows the leader: loop_wait.
    pub off_leader_allowed_s: Option<f64>,
    #[serde(skip)]
    pub problems: Vec<String>,
}

/// Judges `samples` against the leader key's `events` (the leader was `old_leader` before the
/// first). With `follows_leader`, the VIP may sit on another host than the leader's, while the
/// leader's balancer answers, for at most `loop_wait` seconds at a stretch (while the leader's
/// host is down, or no member holds the key, it has nowhere better to be).
pub fn judge(
    address: &str,
    samples: &[Sample],
    events: &[super::verdict::KeyEvent],
    old_leader: &str,
    follows_leader: bool,
    loop_wait: f64,
) -> VipReport {
    let leader_at = |t: Instant| -> Option<String> {
        events
            .iter()
            .rfind(|e| e.at <= t)
            .map_or(Some(old_leader.to_string()), |e| e.holder.clone())
    };
    let longest = |bad: &dyn Fn(&Sample) -> bool| -> f64 {
        let mut longest = Duration::ZERO;
        let mut since: Option<Instant> = None;
        for s in samples {
            match (bad(s), since) {
                (true, None) => since = Some(s.at),
                (true, Some(from)) => longest = longest.max(s.at - from),
                (false, Some(from)) => {
                    longest = longest.max(s.at - from);
                    since = None;
                }
                (false, None) => {}
            }
        }
        super::verdict::secs(longest)
    };
    let two = samples.iter().filter(|s| s.holders.len() > 1).count();
    let off_leader = longest(&|s: &Sample| {
        let leader = leader_at(s.at);
        s.holders.len() == 1
            && leader.as_ref().is_some_and(|l| s.answered.contains(l))
            && leader.as_deref() != Some(s.holders[0].as_str())
    });
    let mut problems = Vec::new();
    if let Some(s) = samples.iter().find(|s| s.holders.len() > 1) {
        problems.push(format!(
            "the VIP {address} was on {} at once ({two} samples)",
            s.holders.join(" and ")
        ));
    }
    let allowed = follows_leader.then_some(loop_wait);
    if let Some(a) = allowed.filter(|a| off_leader > *a) {
        problems.push(format!(
            "the VIP {address} stayed {off_leader} s on a host that did not lead (at most loop_wait {a} s)"
        ));
    }
    let single = |s: &Sample| (s.holders.len() == 1).then(|| s.holders[0].clone());
    VipReport {
        address: address.to_string(),
        follows_leader,
        samples: samples.len(),
        holder_before: samples.first().and_then(single),
        holder_after: samples.last().and_then(single),
        on_two_hosts_s: super::verdict::secs(SAMPLE_EVERY * two as u32),
        unheld_max_s: longest(&|s: &Sample| s.holders.is_empty()),
        off_leader_max_s: off_leader,
        off_leader_allowed_s: allowed,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::verdict::KeyEvent;

    fn sample(t0: Instant, ms: u64, holders: &[&str]) -> Sample {
        Sample {
            at: t0 + Duration::from_millis(ms),
            holders: holders.iter().map(|h| h.to_string()).collect(),
            answered: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn a_vip_that_follows_the_leader_late_or_sits_on_two_hosts_is_reported() {
        let t0 = Instant::now();
        let events = [KeyEvent {
            at: t0 + Duration::from_millis(1000),
            holder: Some("b".into()),
        }];
        // a leads until 1 s, then b; the VIP moves 600 ms late, with one sample on both.
        let samples = [
            sample(t0, 0, &["a"]),
            sample(t0, 800, &["a"]),
            sample(t0, 1200, &["a"]),
            sample(t0, 1400, &["a", "b"]),
            sample(t0, 1600, &["b"]),
            sample(t0, 1800, &[]),
            sample(t0, 2000, &["b"]),
        ];
        let r = judge("10.0.0.10", &samples, &events, "a", true, 6.0);
        assert_eq!(r.off_leader_max_s, 0.2);
        assert_eq!(r.on_two_hosts_s, 0.2);
        assert_eq!(r.unheld_max_s, 0.2);
        assert_eq!(
            (r.holder_before.as_deref(), r.holder_after.as_deref()),
            (Some("a"), Some("b"))
        );
        assert_eq!(
            r.problems,
            ["the VIP 10.0.0.10 was on a and b at once (1 samples)"]
        );
        let late = judge("10.0.0.10", &samples, &events, "a", true, 0.1);
        assert_eq!(late.problems.len(), 2, "{:?}", late.problems);
        // Not following the leader: sitting on a replica is how it works.
        let free = judge("10.0.0.10", &samples[..3], &events, "b", false, 0.1);
        assert!(free.problems.is_empty(), "{:?}", free.problems);
        assert_eq!(free.off_leader_max_s, 1.2);
        // The leader's host is down (it does not answer): the VIP elsewhere is where it can be.
        let mut down = samples[..3].to_vec();
        for s in &mut down {
            s.answered = vec!["a".into()];
        }
        let r = judge("10.0.0.10", &down, &events, "b", true, 0.1);
        assert_eq!(r.off_leader_max_s, 0.0, "{:?}", r.problems);
    }
}
