//! `http`: a request whose status, body and (HTTPS) certificate expiry are checked.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{GaugeVec, IntGaugeVec};
use serde::Deserialize;

use super::{BadTarget, Env, Failure, Kind, Mistake, Run};
use crate::probe::config::{Dur, Probe};
use crate::probe::metrics::{Per, Registrar};

pub(crate) struct Http;

/// `http:` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Options {
    /// For group targets: the URL is `SCHEME://HOST:PORT PATH`.
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Status codes that count as success (default: any 2xx).
    #[serde(default)]
    status: Vec<u16>,
    /// A regular expression the body must match.
    #[serde(default)]
    body: Option<String>,
    /// HTTPS: fail when the server's certificate expires sooner than this.
    #[serde(default)]
    cert_expiry_min: Option<Dur>,
    /// HTTPS: a PEM file of CA certificates trusted besides the system's (an internal CA).
    #[serde(default)]
    ca_file: Option<String>,
    /// Reuse connections between runs (default: a new connection per run, so the connect is
    /// measured, as blackbox_exporter and cloudprober do).
    #[serde(default)]
    keep_alive: bool,
}

/// Per target: the last status, and how long the server's certificate has to live.
pub(crate) struct Series {
    status: IntGaugeVec,
    cert_expiry: GaugeVec,
}

#[derive(Debug, Clone)]
pub(crate) struct Spec {
    scheme: String,
    path: String,
    method: reqwest::Method,
    headers: BTreeMap<String, String>,
    status: Vec<u16>,
    body: Option<regex::Regex>,
    cert_expiry_min: Option<Duration>,
    ca_file: Option<String>,
    keep_alive: bool,
}

impl Kind for Http {
    const NAME: &'static str = "http";
    const BLOCK: Option<&'static str> = Some("http");
    type Options = Options;
    type Spec = Spec;
    type State = reqwest::Client;
    type Series = Series;

    fn check(o: Options) -> Result<Spec, Mistake> {
        let body = match &o.body {
            Some(b) => Some(regex::Regex::new(b).map_err(|e| {
                Mistake::new("http.body", format!("not a regular expression: {e}"))
            })?),
            None => None,
        };
        let method = match &o.method {
            Some(m) => reqwest::Method::from_bytes(m.as_bytes())
                .map_err(|_| Mistake::new("http.method", format!("{m:?} is not an HTTP method")))?,
            None => reqwest::Method::GET,
        };
        Ok(Spec {
            scheme: o.scheme.unwrap_or_else(|| "http".into()),
            path: o.path.unwrap_or_else(|| "/".into()),
            method,
            headers: o.headers,
            status: o.status,
            body,
            cert_expiry_min: o.cert_expiry_min.map(|d| d.0),
            ca_file: o.ca_file,
            keep_alive: o.keep_alive,
        })
    }

    fn check_target(_: &Spec, target: &str) -> Result<(), BadTarget> {
        if target.starts_with("http://") || target.starts_with("https://") {
            Ok(())
        } else {
            Err(BadTarget("is not an http:// or https:// URL"))
        }
    }

    fn group_target(spec: &Spec, host_port: String) -> String {
        format!("{}://{host_port}{}", spec.scheme, spec.path)
    }

    /// The client a probe uses for all its targets.
    fn state(spec: &Spec, probe: &Probe, _: &Env) -> Result<reqwest::Client, Mistake> {
        // No client timeout: the scheduler's timeout ends a run, and counts it in `timeouts`.
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tls_info(true)
            .user_agent(concat!("hactl-probe/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = &probe.tls {
            if spec.ca_file.is_some() {
                return Err(Mistake::new(
                    "http.ca_file",
                    "give the CA in the probe's tls: block, not both",
                ));
            }
            b = tls.reqwest(b).map_err(|e| Mistake::new("tls", e.to_string()))?;
        }
        if let Some(path) = &spec.ca_file {
            let bad = |e: &dyn std::fmt::Display| Mistake::new("http.ca_file", format!("{path}: {e}"));
            let pem = std::fs::read(path).map_err(|e| bad(&e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(&e))?;
            if certs.is_empty() {
                return Err(bad(&"no PEM certificate in it"));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if !spec.keep_alive {
            // A new connection per run, as blackbox_exporter and cloudprober do by default: the
            // connect is part of what is measured.
            b = b.pool_max_idle_per_host(0);
        }
        b.build().map_err(|e| Mistake::new("http", e.to_string()))
    }

    async fn run(run: Run<'_, Self>) -> Result<(), Failure> {
        let (spec, series) = (run.spec, run.series);
        let labels = [run.probe.name.as_str(), run.target];
        let mut req = run.state.request(spec.method.clone(), run.target);
        for (k, v) in &spec.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| Failure(error_chain(&e)))?;
        let status = resp.status().as_u16();
        series
            .status
            .with_label_values(&labels)
            .set(i64::from(status));
        let expiry = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .and_then(not_after);
        let body = resp
            .text()
            .await
            .map_err(|e| Failure(format!("reading the body: {e}")))?;
        let status_ok = if spec.status.is_empty() {
            (200..300).contains(&status)
        } else {
            spec.status.contains(&status)
        };
        if !status_ok {
            return Err(Failure(format!("status {status}")));
        }
        if let Some(re) = &spec.body {
            if !re.is_match(&body) {
                return Err(Failure(format!("the body does not match {:?}", re.as_str())));
            }
        }
        if let Some(expiry) = expiry {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            let left = expiry - now;
            series
                .cert_expiry
                .with_label_values(&labels)
                .set(left as f64);
            if let Some(min) = spec.cert_expiry_min {
                if left < min.as_secs() as i64 {
                    return Err(Failure(format!(
                        "the certificate expires in {}",
                        human(Duration::from_secs(left.max(0) as u64))
                    )));
                }
            }
        }
        Ok(())
    }

    fn series(r: &mut Registrar) -> Series {
        Series {
            status: r.int_gauge("hactl_http_status_code", "The last HTTP status code.", Per::Target),
            cert_expiry: r.gauge(
                "hactl_tls_cert_expiry_seconds",
                "Seconds until the server certificate expires.",
                Per::Target,
            ),
        }
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86400 {
        format!("{} days", s / 86400)
    } else {
        format!("{s} s")
    }
}

/// reqwest's error with its causes ("error sending request: connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error;
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// One DER element: (tag, contents, rest).
fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *data.first()?;
    let first = *data.get(1)?;
    let (len, head) = if first & 0x80 == 0 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *data.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let body = data.get(head..head + len)?;
    Some((tag, body, &data[head + len..]))
}

/// The certificate's notAfter, in seconds since the epoch.
fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // version
    }
    for _ in 0..3 {
        // serialNumber, signature, issuer
        rest = tlv(rest)?.2;
    }
    let (_, validity, _) = tlv(rest)?;
    let (_, _, r) = tlv(validity)?;
    let (tag, time, _) = tlv(r)?;
    let text = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            let y: i64 = text.get(0..2)?.parse().ok()?;
            (if y >= 50 { 1900 + y } else { 2000 + y }, text.get(2..)?)
        }
        0x18 => (text.get(0..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| -> Option<i64> { rest.get(r)?.parse().ok() };
    let (mo, d, h, mi, s) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?);
    Some(days_from_civil(year, mo, d) * 86400 + h * 3600 + mi * 60 + s)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::config::tests::{assert_errors, error, probe};
    use crate::probe::kinds::Spec as AnySpec;

    fn spec(text: &str) -> (Spec, AnySpec) {
        let any = probe(text).spec;
        match &any {
            AnySpec::Http(s) => (s.clone(), any),
            other => panic!("not an http spec: {other:?}"),
        }
    }

    #[test]
    fn options_are_read_with_their_defaults() {
        let (s, any) = spec("probes:\n  - {name: w, type: http, targets: [\"http://h:1/\"]}\n");
        assert_eq!(s.method, reqwest::Method::GET);
        assert!(s.status.is_empty() && s.headers.is_empty() && s.body.is_none());
        assert_eq!((s.cert_expiry_min, s.keep_alive), (None, false));
        assert_eq!(any.group_target("10.0.0.1:8008".into()), "http://10.0.0.1:8008/");
        let (s, any) = spec(
            "probes:
  - name: w
    type: http
    targets: [\"https://h:1/\"]
    http:
      scheme: https
      path: /health
      method: POST
      headers: {X-A: b}
      status: [200, 204]
      body: \"ok|fine\"
      cert_expiry_min: 7d
      ca_file: /etc/ca.pem
      keep_alive: true
",
        );
        assert_eq!(s.method, reqwest::Method::POST);
        assert_eq!(s.status, vec![200, 204]);
        assert_eq!(s.headers.get("X-A").map(String::as_str), Some("b"));
        assert!(s.body.as_ref().is_some_and(|re| re.is_match("all fine")));
        assert_eq!(s.cert_expiry_min, Some(Duration::from_secs(7 * 86400)));
        assert_eq!((s.ca_file.as_deref(), s.keep_alive), (Some("/etc/ca.pem"), true));
        assert_eq!(any.group_target("h:1".into()), "https://h:1/health");
    }

    #[test]
    fn mistakes_name_line_and_key() {
        let head = "probes:\n  - name: w\n    type: http\n    targets: [\"http://h:1/\"]\n    http:\n";
        assert_errors(head, &[
            (
                "      body: \"([a-z\"\n",
                "probes.yml:6: http.body: not a regular expression: regex parse error:\n    ([a-z\n     ^\nerror: unclosed character class",
            ),
            ("      method: \"GE T\"\n", "probes.yml:6: http.method: \"GE T\" is not an HTTP method"),
            (
                "      statuss: [200]\n",
                "probes.yml:6: probes[0]: http.statuss: unknown field `statuss`, expected one of `scheme`, `path`, `method`, `headers`, `status`, `body`, `cert_expiry_min`, `ca_file`, `keep_alive`",
            ),
            (
                "      status: [abc]\n",
                "probes.yml:6: probes[0]: http.status[0]: invalid type: string \"abc\", expected u16",
            ),
            (
                "      cert_expiry_min: soon\n",
                "probes.yml:6: probes[0]: http.cert_expiry_min: \"soon\" is not a duration (examples: 500ms, 5s, 2m, 1h)",
            ),
        ]);
    }

    #[test]
    fn listed_targets_must_be_urls() {
        assert_eq!(
            error("probes:\n  - name: w\n    type: http\n    targets:\n      - \"http://h:1/\"\n      - \"h:80\"\n"),
            "probes.yml:6: targets[1]: \"h:80\" is not an http:// or https:// URL"
        );
    }

    #[test]
    fn an_unreadable_ca_file_is_named_when_the_client_is_made() {
        let p = probe(
            "probes:\n  - {name: w, type: http, targets: [\"https://h/\"], http: {ca_file: /nonexistent.pem}}\n",
        );
        let env = Env { inventory: None };
        let err = crate::probe::kinds::Kit::new(&p, &env).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("http.ca_file: /nonexistent.pem: No such file or directory (os error 2)")
        );
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(days_from_civil(2026, 11, 26), 20783);
    }
}
