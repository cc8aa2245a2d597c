//! `patroni_config`: Patroni's dynamic configuration (the cluster-wide settings it keeps in the
//! DCS: PostgreSQL parameters, ttl, synchronous_mode, ...), changed only through `PATCH /config`
//! and only where it differs.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::http::{request, Auth};
use super::{fail, Ctx, Outcome, Result, Spec};

pub const SPEC: Spec = Spec {
    name: "patroni_config",
    args: &["url", "username", "password", "config"],
    required: &["url", "config"],
    free_form: false,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The REST API of any member: `http://10.0.0.11:8008`.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The settings to enforce; settings not named are left alone.
    pub config: Value,
}

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

pub async fn run_patroni_config(args: &Args, ctx: &Ctx<'_>) -> Result<Outcome> {
    let base = args.url.trim_end_matches('/');
    let current = request(ctx, "GET", &format!("{base}/config"), None, None).await?;
    if ctx.check && current.status != 200 {
        // Patroni is not running yet: a real run starts it before it gets here.
        let mut all = Vec::new();
        paths(&args.config, "", &mut all);
        return Ok(Outcome::changed(format!("set {}", all.join(", "))));
    }
    let Some(have) = current.json().filter(|_| current.status == 200) else {
        return fail(format!(
            "GET {base}/config: status {} {}",
            current.status,
            current.body.trim()
        ));
    };
    let Some(diff) = missing(&args.config, &have) else {
        return Ok(Outcome::ok());
    };
    let mut changed = Vec::new();
    paths(&diff, "", &mut changed);
    let note = format!("set {}", changed.join(", "));
    if !ctx.check {
        let auth = match (&args.username, &args.password) {
            (Some(user), Some(password)) => Some(Auth { user, password }),
            _ => None,
        };
        let resp = request(ctx, "PATCH", &format!("{base}/config"), auth, Some(&diff)).await?;
        if resp.status != 200 {
            return fail(format!(
                "PATCH {base}/config: status {} {}",
                resp.status,
                resp.body.trim()
            ));
        }
        // Members apply it on their next HA loop; only then do they report pending_restart.
        let loop_wait = have["loop_wait"].as_u64().unwrap_or(10);
        tokio::time::sleep(std::time::Duration::from_secs(loop_wait + 2)).await;
    }
    Ok(Outcome::changed(note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
