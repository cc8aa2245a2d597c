//! `wait_for`: wait on the host until a TCP port accepts, an HTTP URL answers with a status, or a
//! command succeeds — one remote loop, not one round trip per try.

use serde::Deserialize;

use super::{de_u64, Ctx, Outcome, Result, Spec};
use crate::ssh::shell_quote;

pub const SPEC: Spec = Spec {
    name: "wait_for",
    args: &[
        "host", "port", "url", "status", "command", "timeout", "interval", "delay",
    ],
    required: &["port|url|command"],
    free_form: false,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub host: Option<String>,
    #[serde(default, deserialize_with = "de_u64")]
    pub port: Option<u64>,
    pub url: Option<String>,
    #[serde(default, deserialize_with = "de_u64")]
    pub status: Option<u64>,
    pub command: Option<String>,
    /// Seconds (default 60).
    #[serde(default, deserialize_with = "de_u64")]
    pub timeout: Option<u64>,
    /// Seconds between tries (default 1).
    #[serde(default, deserialize_with = "de_u64")]
    pub interval: Option<u64>,
    /// Seconds before the first try.
    #[serde(default, deserialize_with = "de_u64")]
    pub delay: Option<u64>,
}

/// `http://host:port/path` split for bash's /dev/tcp.
fn split_url(url: &str) -> std::result::Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("wait_for: url must start with http:// (got {url})"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .map_err(|_| format!("wait_for: bad port in {url}"))?,
        ),
        None => (authority, 80),
    };
    Ok((host.to_string(), port, path.to_string()))
}

fn probe(args: &Args) -> std::result::Result<(String, String), String> {
    if let Some(port) = args.port {
        let host = args.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        return Ok((
            format!("(exec 3<>/dev/tcp/{host}/{port}) 2>/dev/null"),
            format!("port {host}:{port}"),
        ));
    }
    if let Some(url) = &args.url {
        let (host, port, path) = split_url(url)?;
        let status = args.status.unwrap_or(200);
        let request =
            format!("GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n");
        return Ok((
            format!("(exec 3<>/dev/tcp/{host}/{port} && printf '{request}' >&3 && head -n1 <&3 | grep -q '^HTTP/[0-9.]* {status} ') 2>/dev/null"),
            format!("{url} answering {status}"),
        ));
    }
    if let Some(command) = &args.command {
        return Ok((
            format!("sh -c {} >/dev/null 2>&1", shell_quote(command)),
            format!("`{command}` succeeding"),
        ));
    }
    Err("wait_for: give `port`, `url` or `command`".into())
}

pub async fn run_wait(args: &Args, ctx: &Ctx<'_>) -> Result<Outcome> {
    let (check, what) = probe(args).map_err(super::ModuleError::Failed)?;
    if ctx.check {
        return Ok(Outcome {
            skipped: true,
            ..Outcome::default()
        });
    }
    let timeout = args.timeout.unwrap_or(60);
    let interval = args.interval.unwrap_or(1).max(1);
    let delay = args.delay.unwrap_or(0);
    let script = format!(
        "sleep {delay}; end=$(( $(date +%s) + {timeout} )); \
         while :; do if {check}; then exit 0; fi; \
         if [ $(date +%s) -ge $end ]; then exit 1; fi; sleep {interval}; done"
    );
    let out = ctx
        .session
        .exec(&format!("bash -c {}", shell_quote(&script)), b"")
        .await?;
    if !out.success() {
        return super::fail(format!("timed out after {timeout} s waiting for {what}"));
    }
    Ok(Outcome::ok())
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            split_url("http://10.0.0.1:8008/health").unwrap(),
            ("10.0.0.1".to_string(), 8008, "/health".to_string())
        );
        assert_eq!(
            split_url("http://h").unwrap(),
            ("h".to_string(), 80, "/".to_string())
        );
        assert!(split_url("https://h").is_err());
    }
}
