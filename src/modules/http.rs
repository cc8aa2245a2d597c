//! HTTP requests made on a host (to APIs that listen on the cluster network only), through the
//! host's python3 — Patroni needs it anyway. Credentials and bodies travel on stdin, never on a
//! command line.

use serde_json::{json, Value};

use super::{fail, Ctx, Result};

const CLIENT: &str = r#"
import base64, json, sys, urllib.request, urllib.error
r = json.load(sys.stdin)
req = urllib.request.Request(r["url"], method=r["method"])
if r.get("user") is not None:
    token = base64.b64encode((r["user"] + ":" + r["password"]).encode()).decode()
    req.add_header("Authorization", "Basic " + token)
data = None
if r.get("body") is not None:
    data = json.dumps(r["body"]).encode()
    req.add_header("Content-Type", "application/json")
try:
    with urllib.request.urlopen(req, data=data, timeout=r["timeout"]) as resp:
        status, text = resp.status, resp.read().decode("utf-8", "replace")
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode("utf-8", "replace")
except Exception as e:
    status, text = 0, str(e)
print(json.dumps({"status": status, "body": text}))
"#;

/// Who to authenticate as, for unsafe methods.
#[derive(Debug, Clone, Copy)]
pub struct Auth<'a> {
    pub user: &'a str,
    pub password: &'a str,
}

/// A response: status 0 when the request got no answer at all.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

pub async fn request(
    ctx: &Ctx<'_>,
    method: &str,
    url: &str,
    auth: Option<Auth<'_>>,
    body: Option<&Value>,
) -> Result<Response> {
    let input = json!({
        "method": method, "url": url, "timeout": 30,
        "user": auth.map(|a| a.user), "password": auth.map(|a| a.password), "body": body,
    });
    let script = format!("python3 -c {}", crate::ssh::shell_quote(CLIENT));
    let out = ctx
        .session
        .exec(&script, input.to_string().as_bytes())
        .await?;
    let text = out.stdout_text();
    let parsed: Value = match serde_json::from_str(text.trim()) {
        Ok(v) => v,
        Err(_) => {
            return fail(format!(
                "{method} {url}: no answer from python3 on the host: {}",
                super::last_lines(&out.stderr_text(), 3)
            ))
        }
    };
    Ok(Response {
        status: parsed["status"].as_u64().unwrap_or(0) as u16,
        body: parsed["body"].as_str().unwrap_or_default().to_string(),
    })
}
