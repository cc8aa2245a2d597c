//! `patroni_restart`: restarts the members where Patroni reports `pending_restart` — replicas
//! first, one at a time, then a switchover away from the leader, then the old leader — so a
//! parameter that needs a restart never costs more than one switchover.

use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::json;

use super::http::{request, Api, Auth};
use super::{de_u64, fail, Ctx, Module, ModuleError, Outcome, Plan, Result};
use crate::stack::patroni::{Cluster, Member, Role};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// A directory of the host with `ca.crt`, `server.crt` and `server.key`: the REST API is
    /// asked over https, its certificate checked against that CA, this one shown as the client's.
    pub tls_dir: Option<String>,
    /// The REST API asked for the cluster's state and the switchover: `http://10.0.0.11:8008`.
    pub url: String,
    /// Each member's REST API by its Patroni name, as the inventory knows it.
    pub members: Members,
    pub username: String,
    pub password: String,
    /// Seconds to wait for each member (default 300).
    #[serde(default, deserialize_with = "de_u64")]
    pub timeout: Option<u64>,
}

pub struct PatroniRestart;

/// Member name → REST API: a mapping, or `name=url,name=url` (as etcd's initial cluster is
/// written, and as a role renders it in one line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members(pub IndexMap<String, String>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Members, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum TextOrMap {
            Text(String),
            Map(IndexMap<String, String>),
        }
        match TextOrMap::deserialize(d)? {
            TextOrMap::Map(m) => Ok(Members(m)),
            TextOrMap::Text(text) => text
                .split(',')
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
                .map(|pair| match pair.split_once('=') {
                    Some((name, url)) => Ok((name.trim().to_string(), url.trim().to_string())),
                    None => Err(serde::de::Error::custom(format!(
                        "members: expected name=url, got `{pair}`"
                    ))),
                })
                .collect::<std::result::Result<_, _>>()
                .map(Members),
        }
    }
}

/// A member to restart, and where its REST API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub api: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Todo {
    Restart {
        /// In order, one at a time.
        replicas: Vec<Target>,
        /// Switched away from, then restarted.
        leader: Option<Target>,
    },
    /// The cluster could not be read: a run fails with this. (In check mode a cluster that
    /// is not running yet has nothing to restart.)
    Unreadable(String),
}

fn base(args: &Args) -> Api<'_> {
    Api {
        url: args.url.trim_end_matches('/'),
        tls: args.tls_dir.as_deref(),
    }
}

fn target(args: &Args, member: &Member) -> Result<Target> {
    match args.members.0.get(&member.name) {
        Some(api) => Ok(Target {
            name: member.name.clone(),
            api: api.trim_end_matches('/').to_string(),
        }),
        None => {
            fail(format!(
            "{} needs a restart, but `members` does not say where its REST API is (it names {})",
            member.name,
            args.members.0.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
        }
    }
}

pub(crate) async fn read_cluster(ctx: &Ctx<'_>, base: Api<'_>) -> Result<Cluster> {
    let resp = request(ctx, base.tls, "GET", &format!("{base}/cluster"), None, None).await?;
    if resp.status != 200 {
        return fail(format!(
            "GET {base}/cluster: status {} {}",
            resp.status,
            resp.body.trim()
        ));
    }
    Cluster::parse(&resp.body).map_err(|e| ModuleError::Failed(format!("GET {base}/cluster: {e}")))
}

/// Polls the cluster until `done` holds, or fails after `timeout`.
pub(crate) async fn wait_until(
    ctx: &Ctx<'_>,
    base: Api<'_>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Cluster) -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(cluster) = read_cluster(ctx, base).await {
            if done(&cluster) {
                return Ok(());
            }
        }
        if start.elapsed() > timeout {
            return fail(format!(
                "timed out after {} s waiting for {what}",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Running again. (Not "no longer pending": Patroni 3.0.2 keeps pending_restart on replicas
/// whose max_connections it sets on the command line, restart or not.)
fn running(cluster: &Cluster, name: &str) -> bool {
    cluster.member(name).is_some_and(Member::is_running)
}

async fn restart(ctx: &Ctx<'_>, args: &Args, m: &Target, timeout: Duration) -> Result<()> {
    let auth = Auth {
        user: &args.username,
        password: &args.password,
    };
    let url = format!("{}/restart", m.api);
    let resp = request(
        ctx,
        base(args).tls,
        "POST",
        &url,
        Some(auth),
        Some(&json!({})),
    )
    .await?;
    if resp.status != 200 {
        return fail(format!(
            "restart of {}: status {} {}",
            m.name,
            resp.status,
            resp.body.trim()
        ));
    }
    let what = format!("{} to run again", m.name);
    wait_until(ctx, base(args), timeout, &what, |c| running(c, &m.name)).await
}

/// Hands the lead from `old` to a running replica (the synchronous standby in synchronous
/// mode), then restarts `old` if it still needs it. Returns who leads now.
async fn switch_over(
    ctx: &Ctx<'_>,
    args: &Args,
    old: &Target,
    timeout: Duration,
) -> Result<String> {
    let auth = Auth {
        user: &args.username,
        password: &args.password,
    };
    let candidate = hand_over(ctx, base(args), auth, &old.name, timeout).await?;
    let after = read_cluster(ctx, base(args)).await?;
    if after.member(&old.name).is_some_and(|m| m.pending_restart) {
        restart(ctx, args, old, timeout).await?;
    }
    Ok(candidate)
}

/// Switches over from the leader `old` to a running replica (the synchronous standby in
/// synchronous mode), asking the REST API at `base`, and waits until the replica leads and
/// `old` runs again. Returns the new leader.
pub(crate) async fn hand_over(
    ctx: &Ctx<'_>,
    base: Api<'_>,
    auth: Auth<'_>,
    old: &str,
    timeout: Duration,
) -> Result<String> {
    // In synchronous mode only the synchronous standby may take over; after the replica
    // restarts it takes Patroni a loop or two to name one again.
    let config = request(ctx, base.tls, "GET", &format!("{base}/config"), None, None).await?;
    let sync_mode = config
        .json()
        .is_some_and(|c| c["synchronous_mode"].as_bool() == Some(true));
    if sync_mode {
        wait_until(ctx, base, timeout, "a running synchronous standby", |c| {
            c.sync_standby().is_some()
        })
        .await?;
    }
    let cluster = read_cluster(ctx, base).await?;
    let candidate = cluster
        .members
        .iter()
        .filter(|m| m.name != old && m.is_running())
        .find(|m| !sync_mode || m.role == Role::SyncStandby)
        .map(|m| m.name.clone());
    let Some(candidate) = candidate else {
        return fail(format!(
            "{old} must hand over the lead, but no healthy replica can take over"
        ));
    };
    let body = json!({"leader": old, "candidate": candidate});
    let resp = request(
        ctx,
        base.tls,
        "POST",
        &format!("{base}/switchover"),
        Some(auth),
        Some(&body),
    )
    .await?;
    if resp.status != 200 {
        return fail(format!(
            "switchover to {candidate}: status {} {}",
            resp.status,
            resp.body.trim()
        ));
    }
    wait_until(ctx, base, timeout, &format!("{candidate} to lead"), |c| {
        c.member(&candidate).is_some_and(Member::is_leader) && running(c, old)
    })
    .await?;
    Ok(candidate)
}

impl Module for PatroniRestart {
    const NAME: &'static str = "patroni_restart";
    type Args = Args;
    /// The cluster, or why it could not be read.
    type Observed = std::result::Result<Cluster, String>;
    type Todo = Todo;

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Self::Observed> {
        match read_cluster(ctx, base(args)).await {
            Ok(cluster) => Ok(Ok(cluster)),
            Err(ModuleError::Failed(why)) => Ok(Err(why)),
            Err(e) => Err(e),
        }
    }

    fn plan(args: &Args, observed: Self::Observed) -> Result<Plan<Todo>> {
        let cluster = match observed {
            Ok(cluster) => cluster,
            Err(why) => {
                return Ok(Plan {
                    outcome: Outcome::ok(),
                    todo: Some(Todo::Unreadable(why)),
                })
            }
        };
        let pending: Vec<&Member> = cluster
            .members
            .iter()
            .filter(|m| m.pending_restart)
            .collect();
        if pending.is_empty() {
            return Ok(Plan::nothing());
        }
        let mut replicas = Vec::new();
        let mut leader = None;
        for m in pending {
            if m.is_leader() {
                leader = Some(target(args, m)?);
            } else {
                replicas.push(target(args, m)?);
            }
        }
        let mut notes: Vec<String> = replicas
            .iter()
            .map(|m| format!("restarted {}", m.name))
            .collect();
        if let Some(l) = &leader {
            notes.push(format!("switched over from {} and restarted it", l.name));
        }
        Ok(Plan::change(
            notes.join(", "),
            Todo::Restart { replicas, leader },
        ))
    }

    async fn apply(args: &Args, todo: Todo, _: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        let (replicas, leader) = match todo {
            Todo::Unreadable(why) => return fail(why),
            Todo::Restart { replicas, leader } => (replicas, leader),
        };
        let timeout = Duration::from_secs(args.timeout.unwrap_or(300));
        let mut notes = Vec::new();
        for m in &replicas {
            restart(ctx, args, m, timeout).await?;
            notes.push(format!("restarted {}", m.name));
        }
        if let Some(old) = leader {
            let new = switch_over(ctx, args, &old, timeout).await?;
            notes.push(format!(
                "switched over from {} to {new} and restarted it",
                old.name
            ));
        }
        Ok(Outcome::changed(notes.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::modules::fake::{typed, TestHost};
    use crate::modules::http::fake_api;
    use serde_json::Value;

    fn args() -> Args {
        typed::<PatroniRestart>(json!({
            "url": "http://10.0.0.11:8008", "username": "patroni", "password": "pw",
            "members": "a=http://10.0.0.11:8008, b=http://10.0.0.12:8008,c=http://10.0.0.13:8008/",
        }))
    }

    fn cluster(members: Value) -> Cluster {
        serde_json::from_value(json!({ "members": members })).unwrap()
    }

    fn target(name: &str, api: &str) -> Target {
        Target {
            name: name.into(),
            api: api.into(),
        }
    }

    #[test]
    fn members_are_a_mapping_or_one_line() {
        let line = args().members;
        let map = typed::<PatroniRestart>(json!({
            "url": "u", "username": "u", "password": "p",
            "members": {"a": "http://10.0.0.11:8008", "b": "http://10.0.0.12:8008", "c": "http://10.0.0.13:8008/"},
        }))
        .members;
        assert_eq!(line, map);
        let bad = crate::modules::args::parse::<PatroniRestart>(json!({
            "url": "u", "username": "u", "password": "p", "members": "a:8008"
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn nothing_pending_needs_nothing() {
        let c = cluster(json!([
            {"name": "a", "role": "leader", "state": "running"},
            {"name": "b", "role": "replica", "state": "streaming"},
        ]));
        assert!(PatroniRestart::plan(&args(), Ok(c)).unwrap().todo.is_none());
    }

    #[test]
    fn pending_replicas_come_first_and_a_pending_leader_is_switched_away_from() {
        let c = cluster(json!([
            {"name": "a", "role": "leader", "state": "running", "pending_restart": true},
            {"name": "b", "role": "replica", "state": "streaming"},
            {"name": "c", "role": "sync_standby", "state": "streaming", "pending_restart": true},
        ]));
        let plan = PatroniRestart::plan(&args(), Ok(c)).unwrap();
        assert_eq!(
            plan.outcome,
            Outcome::changed("restarted c, switched over from a and restarted it")
        );
        assert_eq!(
            plan.todo,
            Some(Todo::Restart {
                replicas: vec![target("c", "http://10.0.0.13:8008")],
                leader: Some(target("a", "http://10.0.0.11:8008")),
            })
        );
    }

    #[test]
    fn a_pending_member_missing_from_members_is_refused() {
        let c = cluster(json!([
            {"name": "z", "role": "replica", "state": "running", "pending_restart": true},
        ]));
        let err = PatroniRestart::plan(&args(), Ok(c)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("z needs a restart, but `members`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unreadable_cluster_fails_a_run_and_is_nothing_to_do_in_check_mode() {
        let host = TestHost::new(fake_api(|_, _, _| (503, "down".into())));
        let checked = crate::modules::execute::<PatroniRestart>(&args(), &host.ctx(), true).await;
        assert_eq!(checked.unwrap(), Outcome::ok());
        let run = crate::modules::execute::<PatroniRestart>(&args(), &host.ctx(), false).await;
        assert_eq!(
            run.unwrap_err().to_string(),
            "GET http://10.0.0.11:8008/cluster: status 503 down"
        );
    }

    /// A three-member cluster that restarts and switches over as asked, and logs the changes.
    fn patroni() -> (crate::modules::fake::FakeRemote, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new(("a".to_string(), vec!["a", "b"])));
        let seen = log.clone();
        let remote = fake_api(move |method, url, body| {
            let mut state = state.lock().unwrap();
            let (leader, pending) = &mut *state;
            if method != "GET" {
                seen.lock().unwrap().push(format!("{method} {url}"));
            }
            match (method, url.rsplit('/').next().unwrap_or_default()) {
                ("GET", "cluster") => {
                    let members: Vec<Value> = ["a", "b", "c"]
                        .iter()
                        .map(|n| {
                            json!({"name": n, "state": "running", "pending_restart": pending.contains(n),
                                   "role": if n == leader { "leader" } else { "replica" }})
                        })
                        .collect();
                    (200, json!({ "members": members }).to_string())
                }
                ("GET", "config") => (200, json!({"synchronous_mode": false}).to_string()),
                ("POST", "restart") => {
                    let host = if url.contains(".11:") { "a" } else { "b" };
                    pending.retain(|p| *p != host);
                    (200, "ok".into())
                }
                ("POST", "switchover") => {
                    *leader = body["candidate"].as_str().unwrap_or_default().to_string();
                    (200, "ok".into())
                }
                _ => (404, "no".into()),
            }
        });
        (remote, log)
    }

    #[tokio::test]
    async fn a_run_restarts_the_replica_switches_over_then_restarts_the_old_leader() {
        let (remote, log) = patroni();
        let host = TestHost::new(remote);
        let done = crate::modules::execute::<PatroniRestart>(&args(), &host.ctx(), false)
            .await
            .unwrap();
        assert_eq!(
            done,
            Outcome::changed("restarted b, switched over from a to b and restarted it")
        );
        assert_eq!(
            *log.lock().unwrap(),
            [
                "POST http://10.0.0.12:8008/restart",
                "POST http://10.0.0.11:8008/switchover",
                "POST http://10.0.0.11:8008/restart",
            ]
        );
    }

    #[tokio::test]
    async fn check_mode_reads_the_cluster_and_restarts_nothing() {
        let (remote, log) = patroni();
        let host = TestHost::new(remote);
        let planned = crate::modules::execute::<PatroniRestart>(&args(), &host.ctx(), true)
            .await
            .unwrap();
        assert_eq!(
            planned,
            Outcome::changed("restarted b, switched over from a and restarted it")
        );
        assert!(log.lock().unwrap().is_empty());
        assert_eq!(host.remote.commands().len(), 1);
    }
}
