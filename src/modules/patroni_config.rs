//! `patroni_config`: Patroni's dynamic configuration (the cluster-wide settings it keeps in the
//! DCS: PostgreSQL parameters, ttl, synchronous_mode, ...), changed only through `PATCH /config`
//! and only where it differs.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::http::{request, Auth, Response};
use super::{fail, Ctx, Module, Outcome, Plan, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// A directory of the host with `ca.crt`, `server.crt` and `server.key`: the REST API is
    /// asked over https, its certificate checked against that CA, this one shown as the client's.
    pub tls_dir: Option<String>,
    /// The REST API of any member: `http://10.0.0.11:8008`.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The settings to enforce; settings not named are left alone.
    pub config: Value,
}

pub struct PatroniConfig;

/// The part of `want` that `have` does not already hold (None when it holds all of it).
/// PostgreSQL parameters compare as text: Patroni keeps `work_mem: 8MB` and `port: 5432` alike.
pub fn missing(want: &Value, have: &Value) -> Option<Value> {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            let mut out = Map::new();
            for (k, v) in w {
                let current = h.get(k).unwrap_or(&Value::Null);
                if let Some(d) = missing(v, current) {
                    out.insert(k.clone(), d);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (w, h) if same_scalar(w, h) => None,
        (w, _) => Some(w.clone()),
    }
}

fn same_scalar(a: &Value, b: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    a == b || matches!((text(a), text(b)), (Some(x), Some(y)) if x == y)
}

fn paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                paths(v, &p, out);
            }
        }
        other => out.push(format!("{prefix}={other}")),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Todo {
    /// `PATCH /config` with the settings that differ, then wait for the members to apply them.
    Patch { diff: Value, settle: Duration },
    /// Patroni did not answer: a run fails with this. (Check mode assumes a run would have
    /// started Patroni by now, and reports every setting.)
    Unreadable(String),
}

fn noted(settings: &Value) -> String {
    let mut all = Vec::new();
    paths(settings, "", &mut all);
    format!("set {}", all.join(", "))
}

impl Module for PatroniConfig {
    const NAME: &'static str = "patroni_config";
    type Args = Args;
    type Observed = Response;
    type Todo = Todo;

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Response> {
        let base = args.url.trim_end_matches('/');
        request(
            ctx,
            args.tls_dir.as_deref(),
            "GET",
            &format!("{base}/config"),
            None,
            None,
        )
        .await
    }

    fn plan(args: &Args, current: Response) -> Result<Plan<Todo>> {
        let base = args.url.trim_end_matches('/');
        let unreadable = format!(
            "GET {base}/config: status {} {}",
            current.status,
            current.body.trim()
        );
        if current.status != 200 {
            return Ok(Plan::change(
                noted(&args.config),
                Todo::Unreadable(unreadable),
            ));
        }
        let Some(have) = current.json() else {
            return fail(unreadable);
        };
        let Some(diff) = missing(&args.config, &have) else {
            return Ok(Plan::nothing());
        };
        // Members apply it on their next HA loop; only then do they report pending_restart.
        let settle = Duration::from_secs(have["loop_wait"].as_u64().unwrap_or(10) + 2);
        Ok(Plan::change(noted(&diff), Todo::Patch { diff, settle }))
    }

    async fn apply(args: &Args, todo: Todo, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        let (diff, settle) = match todo {
            Todo::Unreadable(why) => return fail(why),
            Todo::Patch { diff, settle } => (diff, settle),
        };
        let base = args.url.trim_end_matches('/');
        let auth = match (&args.username, &args.password) {
            (Some(user), Some(password)) => Some(Auth { user, password }),
            _ => None,
        };
        let resp = request(
            ctx,
            args.tls_dir.as_deref(),
            "PATCH",
            &format!("{base}/config"),
            auth,
            Some(&diff),
        )
        .await?;
        if resp.status != 200 {
            return fail(format!(
                "PATCH {base}/config: status {} {}",
                resp.status,
                resp.body.trim()
            ));
        }
        tokio::time::sleep(settle).await;
        Ok(planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{typed, TestHost};
    use crate::modules::http::fake_api;
    use serde_json::json;

    fn args() -> Args {
        typed::<PatroniConfig>(json!({
            "url": "http://10.0.0.11:8008/", "username": "patroni", "password": "pw",
            "config": {"ttl": "30", "postgresql": {"parameters": {"work_mem": "8MB"}}}
        }))
    }

    fn answer(status: u16, body: Value) -> Response {
        Response {
            status,
            body: body.to_string(),
        }
    }

    #[test]
    fn only_what_differs_is_sent() {
        let have = json!({"ttl": 30, "postgresql": {"parameters": {"work_mem": "4MB", "max_connections": 100}}});
        let want = json!({"ttl": 30, "postgresql": {"parameters": {"work_mem": "8MB", "max_connections": "100"}}});
        assert_eq!(
            missing(&want, &have),
            Some(json!({"postgresql": {"parameters": {"work_mem": "8MB"}}}))
        );
        let same = json!({"postgresql": {"parameters": {"work_mem": "4MB"}}});
        assert_eq!(missing(&same, &have), None);
    }

    #[test]
    fn settings_already_there_need_nothing() {
        let have =
            json!({"ttl": 30, "loop_wait": 5, "postgresql": {"parameters": {"work_mem": "8MB"}}});
        assert!(PatroniConfig::plan(&args(), answer(200, have))
            .unwrap()
            .todo
            .is_none());
    }

    #[test]
    fn differing_settings_are_patched_and_given_a_loop_to_apply() {
        let have =
            json!({"ttl": 20, "loop_wait": 5, "postgresql": {"parameters": {"work_mem": "8MB"}}});
        let plan = PatroniConfig::plan(&args(), answer(200, have)).unwrap();
        assert_eq!(plan.outcome, Outcome::changed("set ttl=\"30\""));
        assert_eq!(
            plan.todo,
            Some(Todo::Patch {
                diff: json!({"ttl": "30"}),
                settle: Duration::from_secs(7)
            })
        );
    }

    #[test]
    fn patroni_not_answering_fails_a_run_but_check_mode_reports_every_setting() {
        let plan = PatroniConfig::plan(
            &args(),
            Response {
                status: 0,
                body: "refused".into(),
            },
        )
        .unwrap();
        assert_eq!(
            plan.outcome.msg,
            "set ttl=\"30\", postgresql.parameters.work_mem=\"8MB\""
        );
        assert_eq!(
            plan.todo,
            Some(Todo::Unreadable(
                "GET http://10.0.0.11:8008/config: status 0 refused".into()
            ))
        );
        let garbage = PatroniConfig::plan(
            &args(),
            Response {
                status: 200,
                body: "<html>".into(),
            },
        );
        assert!(garbage.is_err());
    }

    #[tokio::test]
    async fn check_mode_only_reads_the_configuration() {
        let host = TestHost::new(fake_api(|method, _, _| {
            assert_eq!(method, "GET", "check mode sent a change");
            (200, json!({"ttl": 20}).to_string())
        }));
        let planned = crate::modules::execute::<PatroniConfig>(&args(), &host.ctx(), true)
            .await
            .unwrap();
        assert!(planned.changed);
        assert_eq!(host.remote.commands().len(), 1);

        let down = TestHost::new(fake_api(|_, _, _| (0, "refused".into())));
        let err = crate::modules::execute::<PatroniConfig>(&args(), &down.ctx(), false)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GET http://10.0.0.11:8008/config: status 0 refused"
        );
    }
}
