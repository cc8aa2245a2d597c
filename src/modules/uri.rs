//! `uri`: an HTTP request made from the host with its `curl`, as Ansible's `uri` — the status
//! checked against `status_code`, the answer registered (`status`, `url`, `msg`, the headers,
//! `json`, `content` with `return_content`), `dest` written only when its content differs.
//! Everything curl is told travels as a config on its stdin (`curl -K -`): the URL, headers and
//! credentials never show on a command line (`ps`). Check mode skips it, as Ansible does.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{de_bool, de_u64, fail, ArgsError, Ctx, Module, Outcome, Plan, Result};
use crate::ssh::shell_quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub url: String,
    /// Default GET.
    pub method: Option<String>,
    pub body: Option<Value>,
    #[serde(default)]
    pub body_format: BodyFormat,
    pub headers: Option<Map<String, Value>>,
    /// The statuses that mean success (default 200): a number, a list, or `200,201`.
    #[serde(default)]
    pub status_code: Statuses,
    /// Register the answer's body as `content` (default false).
    #[serde(default, deserialize_with = "de_bool")]
    pub return_content: Option<bool>,
    /// Seconds to connect, and seconds the answer may stall (default 30).
    #[serde(default, deserialize_with = "de_u64")]
    pub timeout: Option<u64>,
    #[serde(default, deserialize_with = "de_bool")]
    pub validate_certs: Option<bool>,
    /// Files on the host: the CA bundle, the client certificate and key.
    pub ca_path: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    #[serde(alias = "user")]
    pub url_username: Option<String>,
    #[serde(alias = "password")]
    pub url_password: Option<String>,
    /// Send basic auth with the first request rather than after a 401 (default false).
    #[serde(default, deserialize_with = "de_bool")]
    pub force_basic_auth: Option<bool>,
    #[serde(default)]
    pub follow_redirects: Redirects,
    /// A file (or directory) on the host to write the answer's body to.
    pub dest: Option<String>,
    pub creates: Option<String>,
    pub removes: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum BodyFormat {
    #[default]
    Raw,
    Json,
    FormUrlencoded,
}

impl TryFrom<String> for BodyFormat {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<BodyFormat, String> {
        match s.to_ascii_lowercase().as_str() {
            "raw" => Ok(BodyFormat::Raw),
            "json" => Ok(BodyFormat::Json),
            "form-urlencoded" => Ok(BodyFormat::FormUrlencoded),
            _ => Err(format!(
                "body_format: expected raw, json or form-urlencoded, got {s:?}"
            )),
        }
    }
}

/// Which redirects are followed: Ansible's `safe` (the default) follows them for GET and HEAD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Redirects {
    All,
    None,
    #[default]
    Safe,
}

impl TryFrom<String> for Redirects {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Redirects, String> {
        match s.to_ascii_lowercase().as_str() {
            "all" | "yes" | "urllib2" => Ok(Redirects::All),
            "none" | "no" => Ok(Redirects::None),
            "safe" => Ok(Redirects::Safe),
            _ => Err(format!(
                "follow_redirects: expected all, none or safe, got {s:?}"
            )),
        }
    }
}

/// The statuses that mean success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statuses(pub Vec<i64>);

impl Default for Statuses {
    fn default() -> Statuses {
        Statuses(vec![200])
    }
}

impl<'de> Deserialize<'de> for Statuses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Statuses, D::Error> {
        let v = Value::deserialize(d)?;
        let one = |v: &Value| -> Option<Vec<i64>> {
            match v {
                Value::Number(n) => n.as_i64().map(|n| vec![n]),
                Value::String(s) => s.split(',').map(|p| p.trim().parse().ok()).collect(),
                _ => None,
            }
        };
        let codes = match &v {
            Value::Array(items) => items
                .iter()
                .map(one)
                .collect::<Option<Vec<_>>>()
                .map(|l| l.concat()),
            other => one(other),
        };
        match codes {
            Some(c) if !c.is_empty() => Ok(Statuses(c)),
            _ => Err(serde::de::Error::custom(format!(
                "status_code: expected a status or a list of them, got {v}"
            ))),
        }
    }
}

pub struct Uri;

/// Python's `urlencode` of one word: letters, digits and `_.-~` as they are, space as `+`.
fn quote_plus(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A value as Python's `str` writes it (the form encoding's and the headers').
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

/// `body` as `body_format` sends it.
fn encode_body(body: &Value, format: BodyFormat) -> std::result::Result<String, String> {
    match (format, body) {
        (_, Value::String(s)) => Ok(s.clone()),
        (BodyFormat::Json, other) => Ok(other.to_string()),
        (BodyFormat::FormUrlencoded, body) => {
            let pairs: Vec<(String, &Value)> = match body {
                Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
                Value::Array(items) => items
                    .iter()
                    .map(|item| match item.as_array().map(Vec::as_slice) {
                        Some([k, v]) => Ok((text(k), v)),
                        _ => Err(format!("body: expected [key, value] pairs, got {item}")),
                    })
                    .collect::<std::result::Result<_, _>>()?,
                other => return Err(format!("body: cannot form-urlencode {other}")),
            };
            let mut encoded = Vec::new();
            for (k, v) in pairs {
                let values = match v {
                    Value::Array(vs) => vs.iter().collect(),
                    v => vec![v],
                };
                for v in values.into_iter().filter(|v| !v.is_null()) {
                    encoded.push(format!("{}={}", quote_plus(&k), quote_plus(&text(v))));
                }
            }
            Ok(encoded.join("&"))
        }
        (BodyFormat::Raw, Value::Number(_) | Value::Bool(_)) => Ok(text(body)),
        (BodyFormat::Raw, other) => Err(format!(
            "body: with body_format raw, give text (or body_format: json) — got {other}"
        )),
    }
}

/// A curl config value: quoted, with the escapes curl reads back.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What curl is told, on its stdin: the URL, the method, headers, body, credentials, TLS files.
fn config(args: &Args, method: &str) -> std::result::Result<String, String> {
    let mut lines = vec![format!("url = {}", quoted(&args.url))];
    let body = args
        .body
        .as_ref()
        .map(|b| encode_body(b, args.body_format))
        .transpose()?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in args.headers.iter().flatten() {
        let value = text(value);
        if name.is_empty()
            || name.chars().any(|c| c.is_control() || c == ':')
            || value.chars().any(char::is_control)
        {
            // The value is not shown: it may be a token.
            return Err(format!(
                "headers: `{name}` has a control character (or a colon in its name)"
            ));
        }
        headers.push((name.clone(), value));
    }
    let has_type = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    let content_type = match args.body_format {
        BodyFormat::Json => Some("application/json"),
        BodyFormat::FormUrlencoded => Some("application/x-www-form-urlencoded"),
        BodyFormat::Raw => None,
    };
    if let (Some(t), false) = (content_type, has_type) {
        headers.push(("Content-Type".into(), t.into()));
    }
    for (name, value) in headers {
        lines.push(format!("header = {}", quoted(&format!("{name}: {value}"))));
    }
    match (method, &body) {
        ("HEAD", _) => lines.push("head".into()),
        ("GET", None) | ("POST", Some(_)) => {}
        (m, _) => lines.push(format!("request = {}", quoted(m))),
    }
    if let Some(body) = &body {
        lines.push(format!("data-raw = {}", quoted(body)));
    }
    let follow = match args.follow_redirects {
        Redirects::All => true,
        Redirects::None => false,
        Redirects::Safe => matches!(method, "GET" | "HEAD"),
    };
    if follow {
        lines.push("location".into());
        lines.push("max-redirs = 10".into());
    }
    if let Some(user) = &args.url_username {
        let password = args.url_password.as_deref().unwrap_or_default();
        lines.push(format!("user = {}", quoted(&format!("{user}:{password}"))));
        let how = if args.force_basic_auth == Some(true) {
            "basic"
        } else {
            // Ansible's default: ask without credentials first, answer a 401's challenge.
            "anyauth"
        };
        lines.push(how.into());
    }
    let timeout = args.timeout.unwrap_or(30);
    // Ansible's timeout is a socket's: for connecting, and for each read of the answer.
    lines.push(format!("connect-timeout = {timeout}"));
    lines.push(format!("speed-time = {timeout}"));
    lines.push("speed-limit = 1".into());
    if args.validate_certs == Some(false) {
        lines.push("insecure".into());
    }
    for (option, file) in [
        ("cacert", &args.ca_path),
        ("cert", &args.client_cert),
        ("key", &args.client_key),
    ] {
        if let Some(f) = file {
            lines.push(format!("{option} = {}", quoted(f)));
        }
    }
    Ok(lines.join("\n") + "\n")
}

/// The last part of the URL's path, or `index.html`: the file a `dest` directory receives.
pub(crate) fn url_file_name(url: &str) -> String {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .split_once("://")
        .map_or(url, |(_, rest)| rest);
    match path.split_once('/').and_then(|(_, p)| p.rsplit('/').next()) {
        Some(name) if !name.is_empty() => name.into(),
        _ => "index.html".into(),
    }
}

const NO_CURL: u32 = 91;

/// The request on the host. It prints `curl's exit, header bytes, status, URL, seconds, content
/// type` on one line, what happened to `dest` on the next, then the headers and the body.
fn script(args: &Args) -> String {
    let statuses: Vec<String> = args.status_code.0.iter().map(i64::to_string).collect();
    let (body_file, dest, keep) = match &args.dest {
        None => (
            "b=$(mktemp) || { rm -f \"$h\"; exit 1; }".to_string(),
            "echo -".to_string(),
            "cat \"$b\"".to_string(),
        ),
        Some(dest) => (
            format!(
                "d={}; if [ -d \"$d\" ]; then d=\"${{d%/}}\"/{}; fi; \
                 b=$(mktemp \"$(dirname -- \"$d\")/.hactl-uri.XXXXXX\") || {{ rm -f \"$h\"; exit 1; }}",
                shell_quote(dest),
                shell_quote(&url_file_name(&args.url))
            ),
            // Written only when the status is a success (not 304) and the content differs;
            // a replaced file keeps its mode and owner.
            format!(
                "s=$(printf '%s' \"$m\" | cut -f1); \
                 case \" {} \" in *\" $s \"*) ok=1;; *) ok=;; esac; \
                 if [ -z \"$ok\" ] || [ \"$s\" = 304 ]; then echo -; \
                 elif [ -f \"$d\" ] && cmp -s \"$b\" \"$d\"; then echo \"same $d\"; \
                 else cp \"$b\" \"$b.w\" && \
                 if [ -e \"$d\" ]; then chmod --reference=\"$d\" \"$b.w\" && chown --reference=\"$d\" \"$b.w\"; \
                 else chmod 644 \"$b.w\"; fi && mv -f \"$b.w\" \"$d\" && echo \"wrote $d\" || exit 1; fi",
                statuses.join(" ")
            ),
            if args.return_content == Some(true) {
                "cat \"$b\"".to_string()
            } else {
                String::new()
            },
        ),
    };
    format!(
        "command -v curl >/dev/null 2>&1 || exit {NO_CURL}; \
         h=$(mktemp) || exit 1; {body_file}; trap 'rm -f \"$h\" \"$b\" \"$b.w\"' EXIT; \
         m=$(curl -sS -K - -D \"$h\" -o \"$b\" -w '%{{http_code}}\\t%{{url_effective}}\\t%{{time_total}}\\t%{{content_type}}'); \
         rc=$?; printf '%s\\t%s\\t%s\\n' \"$rc\" \"$(wc -c < \"$h\")\" \"$m\"; {dest}; cat \"$h\"; {keep}"
    )
}

/// What the host's curl answered.
#[derive(Debug, PartialEq)]
struct Answer {
    /// curl's exit code: not 0 when no answer came.
    curl: i64,
    status: i64,
    url: String,
    seconds: f64,
    content_type: String,
    /// `wrote PATH`, `same PATH` or `-`.
    dest: String,
    /// The final answer's status line and headers (after redirects).
    head: String,
    body: Vec<u8>,
}

fn parse(out: &[u8]) -> Option<Answer> {
    let (first, rest) = split_line(out)?;
    let (dest, rest) = split_line(rest)?;
    let f: Vec<&str> = first.splitn(6, '\t').collect();
    let [curl, head_len, status, url, seconds, content_type] = f.as_slice() else {
        return None;
    };
    let head_len: usize = head_len.trim().parse().ok()?;
    let head = rest.get(..head_len)?;
    // The headers of every answer on the way are there: the last block is the final answer's.
    let head = String::from_utf8_lossy(head);
    let last = head
        .trim_end()
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string();
    Some(Answer {
        curl: curl.parse().ok()?,
        status: status.parse().unwrap_or(0),
        url: url.to_string(),
        seconds: seconds.parse().unwrap_or(0.0),
        content_type: content_type.to_string(),
        dest: dest.to_string(),
        head: last,
        body: rest.get(head_len..)?.to_vec(),
    })
}

fn split_line(bytes: &[u8]) -> Option<(String, &[u8])> {
    let i = bytes.iter().position(|b| *b == b'\n')?;
    Some((
        String::from_utf8_lossy(&bytes[..i]).to_string(),
        &bytes[i + 1..],
    ))
}

/// Whether a content type is JSON (`application/json`, `application/problem+json`).
fn is_json(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    let sub = mime.split_once('/').map_or("", |(_, s)| s);
    let sub = sub.rsplit('+').next().unwrap_or(sub).to_ascii_lowercase();
    sub == "json" || sub == "javascript"
}

/// What the task registers, as Ansible's `uri`: the final answer's headers (lower case, `-` as
/// `_`), then `status`, `url`, `msg`, `redirected`, `elapsed`, `json`, `content`, `path`.
fn result(args: &Args, answer: &Answer, curl_error: &str) -> (Value, String) {
    let mut data = Map::new();
    let mut lines = answer.head.lines();
    let reason = lines
        .next()
        .and_then(|status_line| status_line.splitn(3, ' ').nth(2))
        .unwrap_or_default()
        .trim()
        .to_string();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let key = k.trim().to_ascii_lowercase().replace('-', "_");
            data.insert(key, v.trim().into());
        }
    }
    let status = if answer.curl == 0 { answer.status } else { -1 };
    let msg = if answer.curl != 0 {
        format!("Request failed: {curl_error}")
    } else if (200..300).contains(&status) {
        let length = data
            .get("content_length")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        format!("OK ({length} bytes)")
    } else {
        format!("HTTP Error {status}: {reason}")
    };
    data.insert("status".into(), status.into());
    data.insert("url".into(), answer.url.clone().into());
    data.insert("msg".into(), msg.clone().into());
    data.insert("redirected".into(), (answer.url != args.url).into());
    data.insert("elapsed".into(), (answer.seconds as i64).into());
    let content = String::from_utf8_lossy(&answer.body).to_string();
    if is_json(&answer.content_type) {
        if let Ok(parsed) = serde_json::from_str::<Value>(&content) {
            data.insert("json".into(), parsed);
        }
    }
    if args.return_content == Some(true) {
        data.insert("content".into(), content.into());
    }
    if let Some((_, path)) = answer.dest.split_once(' ') {
        data.insert("path".into(), path.into());
    }
    (Value::Object(data), msg)
}

/// The request, ready to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    script: String,
    /// curl's config: secrets included, hence never on a command line.
    config: String,
}

/// Whether `creates` exists and `removes` does not, as observed.
#[derive(Debug, Default)]
pub struct Guards {
    created: bool,
    removed: bool,
}

impl Module for Uri {
    const NAME: &'static str = "uri";
    type Args = Args;
    type Observed = Guards;
    type Todo = Request;

    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        let method = method(args);
        if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(ArgsError::Invalid(format!(
                "method: a single word like GET or POST, got {method:?}"
            )));
        }
        config(args, &method).map(drop).map_err(ArgsError::Invalid)
    }

    fn writes(args: &Args) -> Option<&str> {
        args.dest.as_deref()
    }

    fn registers() -> Value {
        json!({
            "status": 200, "url": "", "msg": "", "redirected": false, "elapsed": 0,
            "content": "", "json": {}, "path": "", "content_type": "", "location": "",
        })
    }

    /// Reads `creates` and `removes`, if given; otherwise there is nothing to read.
    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Guards> {
        if args.creates.is_none() && args.removes.is_none() {
            return Ok(Guards::default());
        }
        let test = |path: &Option<String>, word: &str| match path {
            Some(p) => format!("[ -e {} ] && echo {word}; ", shell_quote(p)),
            None => String::new(),
        };
        let script = format!(
            "{}{}true",
            test(&args.creates, "created"),
            test(&args.removes, "present")
        );
        let out = super::run(ctx, "reading creates/removes", &script).await?;
        let text = out.stdout_text();
        Ok(Guards {
            created: text.contains("created"),
            removed: args.removes.is_some() && !text.contains("present"),
        })
    }

    /// What a request answers, only sending it tells: check mode skips it.
    fn plan(args: &Args, guards: Guards) -> Result<Plan<Request>> {
        let skip = |why: String| Plan {
            outcome: Outcome {
                msg: why,
                ..Outcome::ok()
            },
            todo: None,
        };
        match (&args.creates, &args.removes) {
            (Some(c), _) if guards.created => {
                return Ok(skip(format!("skipped, since {c} exists")))
            }
            (_, Some(r)) if guards.removed => {
                return Ok(skip(format!("skipped, since {r} does not exist")))
            }
            _ => {}
        }
        let config = config(args, &method(args)).map_err(super::ModuleError::Failed)?;
        Ok(Plan {
            outcome: Outcome::skipped(),
            todo: Some(Request {
                script: script(args),
                config,
            }),
        })
    }

    async fn apply(args: &Args, request: Request, _: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        let out = ctx
            .remote
            .exec(&request.script, request.config.as_bytes())
            .await?;
        if out.exit_status == Some(NO_CURL) {
            return fail(format!(
                "{} {}: curl is not installed on the host",
                method(args),
                args.url
            ));
        }
        let Some(answer) = parse(&out.stdout).filter(|_| out.success()) else {
            return fail(format!(
                "{} {}: the request could not be made on the host: {}",
                method(args),
                args.url,
                super::last_lines(&out.stderr_text(), 3)
            ));
        };
        let (data, msg) = result(args, &answer, &super::last_lines(&out.stderr_text(), 1));
        let status = data["status"].as_i64().unwrap_or(-1);
        if !args.status_code.0.contains(&status) {
            return fail(format!(
                "Status code was {status} and not {:?}: {msg}",
                args.status_code.0
            ));
        }
        Ok(Outcome {
            changed: answer.dest.starts_with("wrote "),
            msg,
            ..Outcome::ok()
        }
        .with_data(data))
    }
}

fn method(args: &Args) -> String {
    args.method
        .as_deref()
        .unwrap_or("GET")
        .trim()
        .to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{output, typed, FakeRemote, LocalRemote, Sent, TestHost};

    fn head(status_line: &str, headers: &[&str]) -> String {
        let mut h = format!("{status_line}\r\n");
        for line in headers {
            h.push_str(line);
            h.push_str("\r\n");
        }
        h + "\r\n"
    }

    /// A host whose curl answers `status` with `headers` and `body`, `dest` saying what it did.
    fn host(status: u16, headers: &[&str], body: &str, dest: &str) -> TestHost {
        let head = head(&format!("HTTP/1.1 {status} Whatever"), headers);
        let content_type = headers
            .iter()
            .find_map(|h| h.strip_prefix("Content-Type: "))
            .unwrap_or_default();
        let answer = format!(
            "0\t{}\t{status}\thttp://api/x\t0.2\t{content_type}\n{dest}\n{head}{body}",
            head.len()
        );
        TestHost::new(FakeRemote::new().answer("curl -sS -K -", &answer))
    }

    #[tokio::test]
    async fn a_get_registers_status_json_and_headers_and_changes_nothing() {
        let host = host(
            200,
            &[
                "Content-Type: application/json",
                "Content-Length: 8",
                "X-Request-Id: 7",
            ],
            r#"{"a": 1}"#,
            "-",
        );
        let outcome = host
            .apply::<Uri>(json!({"url": "http://api/x"}))
            .await
            .unwrap();
        assert!(!outcome.changed);
        assert_eq!(outcome.msg, "OK (8 bytes)");
        let data = outcome.data.unwrap();
        assert_eq!(data["status"], 200);
        assert_eq!(data["json"], json!({"a": 1}));
        assert_eq!(data["x_request_id"], "7");
        assert_eq!(data["url"], "http://api/x");
        assert_eq!(data["redirected"], false);
        assert!(data.get("content").is_none());
        let with_content = host
            .apply::<Uri>(json!({"url": "http://api/x", "return_content": true}))
            .await
            .unwrap();
        assert_eq!(with_content.data.unwrap()["content"], r#"{"a": 1}"#);
    }

    #[tokio::test]
    async fn a_status_not_listed_fails_with_the_status() {
        let host = host(404, &[], "", "-");
        let err = host
            .apply::<Uri>(json!({"url": "http://api/x"}))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Status code was 404 and not [200]: HTTP Error 404: Whatever"
        );
        let ok = host
            .apply::<Uri>(json!({"url": "http://api/x", "status_code": [200, "404"]}))
            .await;
        assert_eq!(ok.unwrap().data.unwrap()["status"], 404);
        let one = host
            .apply::<Uri>(json!({"url": "http://api/x", "status_code": "200, 404"}))
            .await;
        assert!(one.is_ok());
    }

    #[tokio::test]
    async fn no_answer_is_status_minus_one_with_curls_words() {
        let remote = FakeRemote::new().answer_with("curl", |_, _| {
            output(
                0,
                "7\t0\t000\thttp://api/x\t0.0\t\n-\n",
                "curl: (7) Failed to connect to api port 80",
            )
        });
        let err = TestHost::new(remote)
            .apply::<Uri>(json!({"url": "http://api/x"}))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Status code was -1 and not [200]: Request failed: curl: (7) Failed to connect to api port 80"
        );
        let none = FakeRemote::new().answer_with("curl", |_, _| output(NO_CURL, "", ""));
        let err = TestHost::new(none)
            .apply::<Uri>(json!({"url": "http://api/x"}))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GET http://api/x: curl is not installed on the host"
        );
    }

    #[tokio::test]
    async fn secrets_travel_on_stdin_never_on_the_command_line() {
        let host = host(201, &[], "", "-");
        let args = json!({
            "url": "https://api/x?token=t0k3n", "method": "post", "url_username": "admin",
            "url_password": "s3cret", "headers": {"Authorization": "Bearer b34rer"},
            "body": {"name": "a b", "n": 1}, "body_format": "json", "status_code": 201,
            "force_basic_auth": true,
        });
        host.apply::<Uri>(args).await.unwrap();
        let sent = host.remote.sent();
        let [Sent::Exec { script, stdin }] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        for secret in ["s3cret", "b34rer", "t0k3n"] {
            assert!(!script.contains(secret), "{script}");
        }
        let config = String::from_utf8_lossy(stdin);
        assert_eq!(
            config.lines().take(6).collect::<Vec<_>>(),
            [
                r#"url = "https://api/x?token=t0k3n""#,
                r#"header = "Authorization: Bearer b34rer""#,
                r#"header = "Content-Type: application/json""#,
                r#"data-raw = "{\"name\":\"a b\",\"n\":1}""#,
                r#"user = "admin:s3cret""#,
                "basic",
            ]
        );
        assert!(
            !config.contains("location"),
            "POST follows no redirect by default: {config}"
        );
    }

    #[test]
    fn bodies_are_encoded_as_ansible_encodes_them() {
        let form = json!({"name": "a b&c", "ok": true, "tags": ["x", "y"], "none": null});
        assert_eq!(
            encode_body(&form, BodyFormat::FormUrlencoded).unwrap(),
            "name=a+b%26c&ok=True&tags=x&tags=y"
        );
        let pairs = json!([["k", "v"], ["k", "w"]]);
        assert_eq!(
            encode_body(&pairs, BodyFormat::FormUrlencoded).unwrap(),
            "k=v&k=w"
        );
        assert_eq!(
            encode_body(&json!("{\"pre\": 1}"), BodyFormat::Json).unwrap(),
            "{\"pre\": 1}"
        );
        assert!(encode_body(&json!({"a": 1}), BodyFormat::Raw)
            .unwrap_err()
            .starts_with("body:"));
        assert_eq!(quoted("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
    }

    #[test]
    fn arguments_are_checked_naming_the_argument_and_hiding_header_values() {
        let err = |v| {
            crate::modules::args::parse::<Uri>(v)
                .unwrap_err()
                .to_string()
        };
        assert!(err(json!({"url": "http://x", "method": "GET /"})).starts_with("method:"));
        assert!(
            err(json!({"url": "http://x", "body_format": "form-multipart"}))
                .contains("body_format")
        );
        let header = err(json!({"url": "http://x", "headers": {"X-Token": "a\nInjected: yes"}}));
        assert!(
            header.starts_with("headers: `X-Token`") && !header.contains("Injected"),
            "{header}"
        );
        assert!(err(json!({"url": "http://x", "status_code": "ok"})).contains("status_code"));
    }

    #[tokio::test]
    async fn check_mode_sends_nothing_and_creates_skips_the_request() {
        let host = host(200, &[], "", "-");
        let planned = host
            .check::<Uri>(json!({"url": "http://api/x"}))
            .await
            .unwrap();
        assert!(planned.skipped);
        assert!(host.remote.commands().is_empty());
        let created = TestHost::new(FakeRemote::new().answer("[ -e /done ]", "created\n"));
        let outcome = created
            .apply::<Uri>(json!({"url": "http://api/x", "creates": "/done"}))
            .await
            .unwrap();
        assert_eq!(outcome.msg, "skipped, since /done exists");
        assert_eq!(created.remote.commands().len(), 1);
    }

    #[tokio::test]
    async fn dest_is_reported_changed_only_when_written() {
        let wrote = host(200, &[], "", "wrote /srv/x");
        let outcome = wrote
            .apply::<Uri>(json!({"url": "http://api/x", "dest": "/srv/x"}))
            .await
            .unwrap();
        assert!(outcome.changed);
        assert_eq!(outcome.data.unwrap()["path"], "/srv/x");
        let same = host(200, &[], "", "same /srv/x");
        let outcome = same
            .apply::<Uri>(json!({"url": "http://api/x", "dest": "/srv/x"}))
            .await
            .unwrap();
        assert!(!outcome.changed);
        assert_eq!(url_file_name("https://h/a/b.tar.gz?x=1"), "b.tar.gz");
        assert_eq!(url_file_name("https://h/"), "index.html");
        assert_eq!(url_file_name("https://h"), "index.html");
    }

    /// The script against this machine's curl and a one-shot HTTP server.
    #[tokio::test]
    async fn the_hosts_curl_sends_the_request_and_the_answer_is_read() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = vec![0; 4096];
                while !request.ends_with(b"x=1") {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "{}", String::from_utf8_lossy(&request));
                    request.extend_from_slice(&buf[..n]);
                }
                requests.push(String::from_utf8_lossy(&request).to_string());
                let body = r#"{"ok": true}"#;
                let answer = format!(
                    "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
            requests
        });
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("answer.json");
        let host = TestHost::new(LocalRemote);
        let args = json!({
            "url": format!("http://127.0.0.1:{port}/api"), "method": "PUT", "body": "x=1",
            "headers": {"X-Token": "t0k3n"}, "status_code": [201], "return_content": true,
            "dest": dest.display().to_string(),
        });
        let outcome = host.apply::<Uri>(args.clone()).await.unwrap();
        assert!(outcome.changed, "{outcome:?}");
        let data = outcome.data.unwrap();
        assert_eq!(data["status"], 201);
        assert_eq!(data["json"], json!({"ok": true}));
        assert_eq!(data["content"], r#"{"ok": true}"#);
        assert_eq!(data["content_type"], "application/json");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), r#"{"ok": true}"#);
        let again = host.apply::<Uri>(args).await.unwrap();
        assert!(!again.changed, "the same content is not written again");
        let requests = server.await.unwrap();
        assert!(
            requests[0].starts_with("PUT /api HTTP/1.1"),
            "{}",
            requests[0]
        );
        assert!(requests[0].contains("X-Token: t0k3n") && requests[0].ends_with("x=1"));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn typed_defaults_are_ansibles() {
        let args = typed::<Uri>(json!({"url": "http://x"}));
        assert_eq!(args.status_code, Statuses(vec![200]));
        assert_eq!(
            (args.body_format, args.follow_redirects),
            (BodyFormat::Raw, Redirects::Safe)
        );
        let config = config(&args, "GET").unwrap();
        assert!(config.contains("location\n") && config.contains("connect-timeout = 30\n"));
    }
}
