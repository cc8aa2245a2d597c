//! `http`: a request whose status, body and (HTTPS) certificate expiry are checked.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Ctx;
use crate::probe::config::Probe;

/// The client a probe uses for all its targets.
pub fn client(probe: &Probe) -> Result<reqwest::Client, String> {
    // No client timeout: the scheduler's timeout ends a run, and counts it in `timeouts`.
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_info(true)
        .user_agent(concat!("hactl-probe/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &probe.http.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("http.ca_file {path}: {e}"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("http.ca_file {path}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("http.ca_file {path}: no PEM certificate in it"));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if !probe.http.keep_alive {
        // A new connection per run, as blackbox_exporter and cloudprober do by default: the
        // connect is part of what is measured.
        b = b.pool_max_idle_per_host(0);
    }
    b.build().map_err(|e| e.to_string())
}

pub async fn run(ctx: &Ctx<'_>, client: &reqwest::Client) -> Result<(), String> {
    let p = ctx.probe;
    let method = p
        .http
        .method
        .as_deref()
        .and_then(|m| reqwest::Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(reqwest::Method::GET);
    let mut req = client.request(method, ctx.target);
    for (k, v) in &p.http.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status().as_u16();
    ctx.metrics
        .http_status
        .with_label_values(&[&p.name, ctx.target])
        .set(i64::from(status));
    let expiry = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .and_then(not_after);
    let body = resp
        .text()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    let status_ok = if p.http.status.is_empty() {
        (200..300).contains(&status)
    } else {
        p.http.status.contains(&status)
    };
    if !status_ok {
        return Err(format!("status {status}"));
    }
    if let Some(re) = &p.body {
        if !re.is_match(&body) {
            return Err(format!("the body does not match {:?}", re.as_str()));
        }
    }
    if let Some(expiry) = expiry {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let left = expiry - now;
        ctx.metrics
            .cert_expiry
            .with_label_values(&[&p.name, ctx.target])
            .set(left as f64);
        if let Some(min) = p.http.cert_expiry_min {
            if left < min.0.as_secs() as i64 {
                return Err(format!(
                    "the certificate expires in {}",
                    human(Duration::from_secs(left.max(0) as u64))
                ));
            }
        }
    }
    Ok(())
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
pub fn not_after(der: &[u8]) -> Option<i64> {
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
    use super::days_from_civil;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(days_from_civil(2026, 11, 26), 20783);
    }
}
