//! HTTP requests made on a host (to APIs that listen on the cluster network only), through the
//! host's python3 — Patroni needs it anyway. Credentials and bodies travel on stdin, never on a
//! command line.

use serde_json::{json, Value};

use super::{fail, Ctx, Result};

const CLIENT: &str = r#"
import base64, json, ssl, sys, urllib.request, urllib.error
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
r = json.load(sys.stdin)
handlers = [NoRedirect()]
if r.get("tls") is not None:
    d = r["tls"]
    ctx = ssl.create_default_context(cafile=d + "/ca.crt")
    ctx.load_cert_chain(d + "/server.crt", d + "/server.key")
    handlers.append(urllib.request.HTTPSHandler(context=ctx))
opener = urllib.request.build_opener(*handlers)
req = urllib.request.Request(r["url"], method=r["method"])
if r.get("user") is not None:
    token = base64.b64encode((r["user"] + ":" + r["password"]).encode()).decode()
    req.add_header("Authorization", "Basic " + token)
data = None
if r.get("body") is not None:
    data = json.dumps(r["body"]).encode()
    req.add_header("Content-Type", "application/json")
try:
    with opener.open(req, data=data, timeout=r["timeout"]) as resp:
        status, text = resp.status, resp.read().decode("utf-8", "replace")
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode("utf-8", "replace")
except Exception as e:
    status, text = 0, str(e)
print(json.dumps({"status": status, "body": text}))
"#;

/// A REST API as a host reaches it: its base URL and, for https, the host's TLS directory.
#[derive(Debug, Clone, Copy)]
pub struct Api<'a> {
    pub url: &'a str,
    pub tls: Option<&'a str>,
}

impl std::fmt::Display for Api<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url)
    }
}

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

/// A request from the host to `url`, never following a redirect. With `tls`, a directory of the
/// host holding `ca.crt` (the CA the server's certificate must chain to, with its name checked)
/// and `server.crt`/`server.key` (shown as the client's certificate).
pub async fn request(
    ctx: &Ctx<'_>,
    tls: Option<&str>,
    method: &str,
    url: &str,
    auth: Option<Auth<'_>>,
    body: Option<&Value>,
) -> Result<Response> {
    let input = json!({
        "method": method, "url": url, "timeout": 30, "tls": tls,
        "user": auth.map(|a| a.user), "password": auth.map(|a| a.password), "body": body,
    });
    let script = format!("python3 -c {}", crate::ssh::shell_quote(CLIENT));
    let out = ctx
        .remote
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

/// A fake host whose python3 answers requests with `api(method, url, body)`: (status, body).
#[cfg(test)]
pub(crate) fn fake_api(
    api: impl Fn(&str, &str, &Value) -> (u16, String) + Send + Sync + 'static,
) -> super::fake::FakeRemote {
    super::fake::FakeRemote::new().answer_with("python3 -c", move |_, stdin| {
        let r: Value = serde_json::from_slice(stdin).unwrap_or_default();
        let (status, body) = api(
            r["method"].as_str().unwrap_or_default(),
            r["url"].as_str().unwrap_or_default(),
            &r["body"],
        );
        let answer = json!({"status": status, "body": body}).to_string();
        super::fake::output(0, &answer, "")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{output, FakeRemote, Sent, TestHost};

    #[tokio::test]
    async fn credentials_and_body_travel_on_stdin_and_the_answer_is_read() {
        let host = TestHost::new(fake_api(|method, url, body| {
            (201, format!("{method} {url} {body}"))
        }));
        let auth = Auth {
            user: "patroni",
            password: "s3cret",
        };
        let resp = request(
            &host.ctx(),
            None,
            "POST",
            "http://h:8008/restart",
            Some(auth),
            Some(&json!({"a": 1})),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 201);
        assert_eq!(resp.body, r#"POST http://h:8008/restart {"a":1}"#);
        let sent = host.remote.sent();
        let [Sent::Exec { script, stdin }] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert!(!script.contains("s3cret"));
        assert!(String::from_utf8_lossy(stdin).contains("s3cret"));
    }

    #[tokio::test]
    async fn no_python_on_the_host_is_a_failure_that_says_so() {
        let host = TestHost::new(
            FakeRemote::new().answer_with("python3", |_, _| output(127, "", "python3: not found")),
        );
        let err = request(&host.ctx(), None, "GET", "http://h/x", None, None)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GET http://h/x: no answer from python3 on the host: python3: not found"
        );
        let json = Response {
            status: 200,
            body: "{\"a\": 1}".into(),
        };
        assert_eq!(json.json(), Some(json!({"a": 1})));
    }
}
