//! `patroni_upgrade`: a member whose running Patroni is not the installed version is
//! restarted into it — a replica at once, the leader only after a switchover — so a new
//! Patroni (or the move from Debian's 3.0.2 to the venv's 4.x) rolls through the cluster
//! without a failover: replicas first, then a switchover, then the old leader.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::http::{request, Api, Auth};
use super::patroni_restart::{hand_over, read_cluster};
use super::{de_bool, de_u64, fail, run, Ctx, Module, Outcome, Plan, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// A directory of the host with `ca.crt`, `server.crt` and `server.key`: the REST API is
    /// asked over https, its certificate checked against that CA, this one shown as the client's.
    pub tls_dir: Option<String>,
    /// This member's REST API: `http://10.0.0.11:8008`.
    pub url: String,
    /// This member's Patroni name.
    pub name: String,
    /// The installed version, which must be the one running.
    pub version: String,
    pub username: String,
    pub password: String,
    /// A leader is left alone (to a later play that hands over its lead first): the replicas
    /// go first.
    #[serde(default, deserialize_with = "de_bool")]
    pub defer_leader: Option<bool>,
    /// Seconds to wait for the switchover and for the member to run again (default 300).
    #[serde(default, deserialize_with = "de_u64")]
    pub timeout: Option<u64>,
}

pub struct PatroniUpgrade;

/// What this member's Patroni says of itself (`GET /patroni`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Not answering: not started yet, so it starts with the installed code.
    Down,
    Running {
        version: String,
        leads: bool,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct Todo {
    from: String,
    hand_over: bool,
}

fn base(args: &Args) -> Api<'_> {
    Api {
        url: args.url.trim_end_matches('/'),
        tls: args.tls_dir.as_deref(),
    }
}

/// `GET /patroni` on the member, from the member.
async fn get_patroni(ctx: &Ctx<'_>, args: &Args) -> Result<super::http::Response> {
    let api = base(args);
    request(ctx, api.tls, "GET", &format!("{api}/patroni"), None, None).await
}

/// Reads `GET /patroni`'s version and role (3.x says `master`, 4.x `primary`).
fn parse(body: &serde_json::Value) -> Option<Observed> {
    let version = body["patroni"]["version"].as_str()?.to_string();
    let role = body["role"].as_str().unwrap_or_default();
    Some(Observed::Running {
        version,
        leads: matches!(role, "master" | "primary" | "standby_leader"),
    })
}

impl Module for PatroniUpgrade {
    const NAME: &'static str = "patroni_upgrade";
    type Args = Args;
    type Observed = Observed;
    type Todo = Todo;

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Observed> {
        let resp = get_patroni(ctx, args).await?;
        if resp.status == 0 {
            return Ok(Observed::Down);
        }
        match resp.json().as_ref().and_then(parse) {
            Some(o) => Ok(o),
            None => fail(format!(
                "GET {}/patroni: status {} and no version: {}",
                base(args),
                resp.status,
                resp.body.trim()
            )),
        }
    }

    fn plan(args: &Args, observed: Observed) -> Result<Plan<Todo>> {
        let Observed::Running { version, leads } = observed else {
            return Ok(Plan::nothing());
        };
        if version == args.version || (leads && args.defer_leader == Some(true)) {
            return Ok(Plan::nothing());
        }
        let note = if leads {
            format!(
                "switched over from {}, restarted Patroni {version} as {}",
                args.name, args.version
            )
        } else {
            format!("restarted Patroni {version} as {}", args.version)
        };
        Ok(Plan::change(
            note,
            Todo {
                from: version,
                hand_over: leads,
            },
        ))
    }

    async fn apply(args: &Args, todo: Todo, _: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        let timeout = Duration::from_secs(args.timeout.unwrap_or(300));
        let auth = Auth {
            user: &args.username,
            password: &args.password,
        };
        let mut note = String::new();
        if todo.hand_over {
            let new = hand_over(ctx, base(args), auth, &args.name, timeout).await?;
            note = format!("switched over from {} to {new}, ", args.name);
        }
        run(ctx, "restarting Patroni", "systemctl restart patroni").await?;
        let started = Instant::now();
        loop {
            let resp = get_patroni(ctx, args).await?;
            let version = resp.json().as_ref().and_then(parse);
            let running = matches!(&version, Some(Observed::Running { version, .. }) if *version == args.version);
            if running {
                let cluster = read_cluster(ctx, base(args)).await?;
                if cluster.member(&args.name).is_some_and(|m| m.is_running()) {
                    break;
                }
            }
            if started.elapsed() > timeout {
                return fail(format!(
                    "{} did not run Patroni {} within {} s of its restart",
                    args.name,
                    args.version,
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(Outcome::changed(format!(
            "{note}restarted Patroni {} as {}",
            todo.from, args.version
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::typed;
    use serde_json::json;

    fn args(defer: bool) -> Args {
        typed::<PatroniUpgrade>(json!({
            "url": "http://10.0.0.11:8008", "name": "a", "version": "4.1.5",
            "username": "patroni", "password": "pw", "defer_leader": defer,
        }))
    }

    fn running(version: &str, leads: bool) -> Observed {
        Observed::Running {
            version: version.into(),
            leads,
        }
    }

    #[test]
    fn both_versions_roles_are_read() {
        let old = json!({"role": "master", "patroni": {"version": "3.0.2", "scope": "s"}});
        assert_eq!(parse(&old), Some(running("3.0.2", true)));
        let new = json!({"role": "replica", "patroni": {"version": "4.1.5"}});
        assert_eq!(parse(&new), Some(running("4.1.5", false)));
        assert_eq!(parse(&json!({"role": "replica"})), None);
    }

    #[test]
    fn the_installed_version_running_or_a_member_not_started_is_left_alone() {
        for observed in [
            running("4.1.5", true),
            running("4.1.5", false),
            Observed::Down,
        ] {
            assert!(PatroniUpgrade::plan(&args(false), observed)
                .unwrap()
                .todo
                .is_none());
        }
    }

    #[test]
    fn a_replica_restarts_at_once_and_a_leader_after_handing_over_unless_deferred() {
        let replica = PatroniUpgrade::plan(&args(true), running("3.0.2", false)).unwrap();
        assert_eq!(
            replica.outcome,
            Outcome::changed("restarted Patroni 3.0.2 as 4.1.5")
        );
        assert!(!replica.todo.unwrap().hand_over);
        assert!(PatroniUpgrade::plan(&args(true), running("3.0.2", true))
            .unwrap()
            .todo
            .is_none());
        let leader = PatroniUpgrade::plan(&args(false), running("3.0.2", true)).unwrap();
        assert_eq!(
            leader.outcome,
            Outcome::changed("switched over from a, restarted Patroni 3.0.2 as 4.1.5")
        );
        assert!(leader.todo.unwrap().hand_over);
    }
}
