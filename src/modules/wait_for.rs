//! `wait_for`: wait on the host until a TCP port accepts, an HTTP URL answers with a status, or a
//! command succeeds — one remote loop, not one round trip per try.

use serde::Deserialize;

use super::{de_u64, fail, ArgsError, Ctx, Module, Outcome, Plan, Result};
use crate::ssh::shell_quote;

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
    /// An https `url`: the CA (a file on the host) its certificate must chain to, checked with
    /// curl; and the basic auth credentials, which travel on stdin.
    pub ca_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
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

pub struct WaitFor;

/// `http://host:port/path` split for bash's /dev/tcp.
fn split_url(url: &str) -> Result<(String, u16, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        return fail(format!("wait_for: url must start with http:// (got {url})"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(port) => (h, port),
            Err(_) => return fail(format!("wait_for: bad port in {url}")),
        },
        None => (authority, 80),
    };
    Ok((host.to_string(), port, path.to_string()))
}

/// The shell test for what is waited for, and its name in words. Host, port and path are
/// quoted: they come from the inventory.
fn probe(args: &Args) -> Result<(String, String)> {
    let tcp = |host: &str, port: u64| shell_quote(&format!("/dev/tcp/{host}/{port}"));
    if let Some(port) = args.port {
        let host = args.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        return Ok((
            format!("(exec 3<>{}) 2>/dev/null", tcp(&host, port)),
            format!("port {host}:{port}"),
        ));
    }
    if let Some(url) = &args.url {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return fail(format!(
                "wait_for: the url has a space or a control character (got {url:?})"
            ));
        }
        if url.starts_with("https://") {
            let status = args.status.unwrap_or(200);
            let ca = match &args.ca_file {
                Some(ca) => format!("--cacert {}", shell_quote(ca)),
                None => String::new(),
            };
            // The credentials were read from stdin into $cred; printf is the shell's own, so
            // they never show on a command line.
            let auth = if args.username.is_some() {
                "printf 'user = \"%s\"\n' \"$cred\" | "
            } else {
                ""
            };
            let config = if args.username.is_some() { "-K - " } else { "" };
            return Ok((
                format!(
                    "[ \"$({auth}curl -s {config}{ca} --max-time 5 -o /dev/null -w '%{{http_code}}' {})\" = {status} ]",
                    shell_quote(url)
                ),
                format!("{url} answering {status}"),
            ));
        }
        let (host, port, path) = split_url(url)?;
        let status = args.status.unwrap_or(200);
        let request = r"GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n";
        return Ok((
            format!(
                "(exec 3<>{} && printf '{request}' {} {} >&3 && head -n1 <&3 | grep -q '^HTTP/[0-9.]* {status} ') 2>/dev/null",
                tcp(&host, port.into()),
                shell_quote(&path),
                shell_quote(&host)
            ),
            format!("{url} answering {status}"),
        ));
    }
    if let Some(command) = &args.command {
        return Ok((
            format!("sh -c {} >/dev/null 2>&1", shell_quote(command)),
            format!("`{command}` succeeding"),
        ));
    }
    fail(GIVE_ONE)
}

const GIVE_ONE: &str = "give `port`, `url` or `command`";

/// One remote loop that tries until it succeeds or the time is up.
#[derive(Debug, PartialEq, Eq)]
pub struct Wait {
    pub script: String,
    /// What is waited for, in words: `port 10.0.0.1:8008`.
    pub what: String,
    pub timeout: u64,
    /// The credentials, when the check needs them.
    pub stdin: Vec<u8>,
}

impl Module for WaitFor {
    const NAME: &'static str = "wait_for";
    type Args = Args;
    type Observed = ();
    type Todo = Wait;

    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        if args.port.is_none() && args.url.is_none() && args.command.is_none() {
            return Err(ArgsError::Invalid(GIVE_ONE.into()));
        }
        Ok(())
    }

    async fn observe(_: &Args, _: &Ctx<'_>) -> Result<()> {
        Ok(())
    }

    /// Whether it would be ready cannot be known without waiting: check mode skips it.
    fn plan(args: &Args, _: ()) -> Result<Plan<Wait>> {
        let (check, what) = probe(args)?;
        let timeout = args.timeout.unwrap_or(60);
        let interval = args.interval.unwrap_or(1).max(1);
        let delay = args.delay.unwrap_or(0);
        let read = if args.username.is_some() {
            "IFS= read -r cred; "
        } else {
            ""
        };
        let script = format!(
            "{read}sleep {delay}; end=$(( $(date +%s) + {timeout} )); \
             while :; do if {check}; then exit 0; fi; \
             if [ $(date +%s) -ge $end ]; then exit 1; fi; sleep {interval}; done"
        );
        let stdin = match (&args.username, &args.password) {
            (Some(u), p) => format!("{u}:{}\n", p.as_deref().unwrap_or_default()).into_bytes(),
            _ => Vec::new(),
        };
        Ok(Plan {
            outcome: Outcome::skipped(),
            todo: Some(Wait {
                script: format!("bash -c {}", shell_quote(&script)),
                what,
                timeout,
                stdin,
            }),
        })
    }

    async fn apply(_: &Args, wait: Wait, _: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        let out = ctx.remote.exec(&wait.script, &wait.stdin).await?;
        if !out.success() {
            return fail(format!(
                "timed out after {} s waiting for {}",
                wait.timeout, wait.what
            ));
        }
        Ok(Outcome::ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{output, typed, FakeRemote, TestHost};
    use serde_json::json;

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

    #[test]
    fn a_port_an_url_or_a_command_is_waited_for_in_one_remote_loop() {
        let plan = |args| {
            WaitFor::plan(&typed::<WaitFor>(args), ())
                .unwrap()
                .todo
                .unwrap()
        };
        let port = plan(json!({"port": "8008", "timeout": 5}));
        assert_eq!(port.what, "port 127.0.0.1:8008");
        assert!(
            port.script.contains("/dev/tcp/127.0.0.1/8008"),
            "{}",
            port.script
        );
        assert!(port.script.contains("+ 5 ))"), "{}", port.script);
        let url = plan(json!({"url": "http://h:8008/health", "status": 503}));
        assert_eq!(url.what, "http://h:8008/health answering 503");
        let command = plan(json!({"command": "test -e /ready"}));
        assert_eq!(command.what, "`test -e /ready` succeeding");
        let err = crate::modules::args::parse::<WaitFor>(json!({"timeout": 5})).unwrap_err();
        assert_eq!(err.to_string(), GIVE_ONE);
    }

    #[test]
    fn inventory_values_stay_words_in_the_wait_script() {
        let dir = tempfile::tempdir().unwrap();
        let mark = |n: &str| dir.path().join(n).display().to_string();
        let plan = |args| {
            WaitFor::plan(&typed::<WaitFor>(args), ())
                .unwrap()
                .todo
                .unwrap()
        };
        let hostile = [
            plan(json!({"port": 1, "host": format!("x$(touch {})", mark("a")), "timeout": 0})),
            plan(json!({"port": 1, "host": format!("x;touch {};", mark("b")), "timeout": 0})),
            plan(
                json!({"url": format!("http://127.0.0.1:1/'$(touch{}{})'", "${IFS}", mark("c")), "timeout": 0}),
            ),
            plan(json!({"url": format!("http://x`touch${{IFS}}{}`:1/", mark("d")), "timeout": 0})),
        ];
        for wait in hostile {
            let out = std::process::Command::new("sh")
                .args(["-c", &wait.script])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{}: {out:?}", wait.script);
        }
        for n in ["a", "b", "c", "d"] {
            assert!(
                !dir.path().join(n).exists(),
                "a value ran as a command ({n})"
            );
        }
        let err = WaitFor::plan(
            &typed::<WaitFor>(json!({"url": "http://h:1/a\r\nX-Evil: 1"})),
            (),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("control character"), "{err}");
    }

    #[tokio::test]
    async fn ready_is_ok_and_never_ready_fails_with_what_was_awaited() {
        let host = TestHost::new(FakeRemote::new());
        let done = host.apply::<WaitFor>(json!({"port": 22})).await.unwrap();
        assert_eq!(done, Outcome::ok());
        let host = TestHost::new(FakeRemote::new().answer_with("bash", |_, _| output(1, "", "")));
        let err = host
            .apply::<WaitFor>(json!({"port": 22, "timeout": 3}))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 3 s waiting for port 127.0.0.1:22"
        );
    }

    #[tokio::test]
    async fn check_mode_skips_the_wait_without_touching_the_host() {
        let host = TestHost::new(FakeRemote::new());
        let planned = host.check::<WaitFor>(json!({"port": 22})).await.unwrap();
        assert_eq!(planned, Outcome::skipped());
        assert!(host.remote.sent().is_empty());
    }
}
