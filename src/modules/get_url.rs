//! `get_url`: a file downloaded on the control machine (as `release` does: once per run for all
//! hosts, and with a sha256 `checksum` through the cache in `~/.cache/hactl/releases`), checked
//! against `checksum`, and pushed where the host has something else — hosts need no internet.
//! As Ansible's: an existing `dest` is left alone unless `force`, or a `checksum` it fails.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Digest as _;

use super::digest::Algorithm;
use super::release::{fetch_with, file_name, verified_fetch};
use super::uri::url_file_name;
use super::{
    apply_steps, de_bool, de_u64, fail, fix_attrs, owner_spec, parse_stat, run, ArgsError, Ctx,
    Mode, Module, ModuleError, Outcome, PathState, Plan, Result, Step, Upload,
};
use crate::ssh::shell_quote;
use crate::template::hex;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub url: String,
    /// An absolute path on the host; a directory receives the URL's file name.
    pub dest: String,
    pub mode: Option<Mode>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// `ALGORITHM:HEX` or `ALGORITHM:URL` of a checksums file (`sha256:https://.../SHA256SUMS`).
    pub checksum: Option<String>,
    /// Download even when `dest` exists (default false).
    #[serde(default, deserialize_with = "de_bool")]
    pub force: Option<bool>,
    pub headers: Option<Map<String, Value>>,
    /// Seconds to connect and for each read (default 10).
    #[serde(default, deserialize_with = "de_u64")]
    pub timeout: Option<u64>,
    #[serde(default, deserialize_with = "de_bool")]
    pub validate_certs: Option<bool>,
    /// Basic auth, sent with the first request.
    #[serde(alias = "username")]
    pub url_username: Option<String>,
    #[serde(alias = "password")]
    pub url_password: Option<String>,
}

pub struct GetUrl;

/// Where the expected digest comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    Digest(String),
    /// A checksums file listing the URL's file name.
    Listed(String),
}

/// Ansible's `checksum`: `ALGORITHM:HEX` or `ALGORITHM:URL`.
fn checksum(args: &Args) -> std::result::Result<Option<(Algorithm, Expected)>, String> {
    let Some(text) = args.checksum.as_deref().filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let Some((algorithm, value)) = text.split_once(':') else {
        return Err("checksum: expected ALGORITHM:CHECKSUM or ALGORITHM:URL (sha256:...)".into());
    };
    let algorithm = Algorithm::try_from(algorithm.to_string())?;
    let is_url = ["http://", "https://", "ftp://", "file://"]
        .iter()
        .any(|s| value.starts_with(s));
    if is_url {
        return Ok(Some((algorithm, Expected::Listed(value.to_string()))));
    }
    Ok(Some((algorithm, Expected::Digest(clean_digest(value)?))))
}

/// A digest without the characters pasted around it (spaces, a zero-width space), in lower
/// case, as Ansible reads it.
fn clean_digest(text: &str) -> std::result::Result<String, String> {
    let digest: String = text
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect::<String>()
        .to_ascii_lowercase();
    if digest.is_empty() || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("checksum: {text:?} is not a hex digest"));
    }
    Ok(digest)
}

/// The digest a checksums file gives `name`: a lone digest, or `DIGEST  NAME` lines (`*NAME`
/// for binary, `./NAME` tolerated), as Ansible reads them.
fn listed(list: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = list.lines().collect();
    if let [only] = lines.as_slice() {
        if only.split_whitespace().count() == 1 {
            return Some(only.trim().to_string());
        }
    }
    lines.iter().find_map(|line| {
        let (sum, file) = line.split_once(' ')?;
        let file = file.strip_prefix([' ', '*']).unwrap_or(file);
        (file.trim_start_matches(['.', '/']) == name).then(|| sum.to_string())
    })
}

/// The client `timeout` and `validate_certs` ask for.
fn client(args: &Args) -> std::result::Result<reqwest::Client, String> {
    let timeout = Duration::from_secs(args.timeout.unwrap_or(10));
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .danger_accept_invalid_certs(args.validate_certs == Some(false))
        .build()
        .map_err(|e| format!("get_url: cannot make an HTTP client: {e}"))
}

/// A GET of `url` with the task's headers and credentials.
fn request(
    args: &Args,
    client: &reqwest::Client,
    url: &str,
) -> std::result::Result<reqwest::RequestBuilder, String> {
    let mut request = client.get(url);
    for (name, value) in args.headers.iter().flatten() {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes());
        let value = reqwest::header::HeaderValue::from_str(&value);
        let (Ok(n), Ok(v)) = (name, value) else {
            // The value is not shown: it may be a token.
            return Err("headers: a header name or value is not valid in HTTP".into());
        };
        request = request.header(n, v);
    }
    if let Some(user) = &args.url_username {
        request = request.basic_auth(user, args.url_password.as_deref());
    }
    Ok(request)
}

/// The key the run shares one download under.
fn key(args: &Args, what: &str) -> String {
    let headers = args
        .headers
        .as_ref()
        .map(|h| Value::Object(h.clone()).to_string())
        .unwrap_or_default();
    format!(
        "get_url|{what}|{}|{headers}|{:?}|{:?}|{:?}|{:?}",
        args.url, args.checksum, args.url_username, args.url_password, args.validate_certs
    )
}

/// The expected digest, reading the checksums file (once per run) if it is one.
async fn expected(args: &Args, ctx: &Ctx<'_>) -> Result<Option<(Algorithm, String)>> {
    let Some((algorithm, expected)) = checksum(args).map_err(ModuleError::Failed)? else {
        return Ok(None);
    };
    let list_url = match expected {
        Expected::Digest(d) => return Ok(Some((algorithm, d))),
        Expected::Listed(u) => u,
    };
    let list = ctx
        .releases
        .bundle(key(args, "checksums"), |_| async {
            let client = client(args)?;
            let bytes = fetch_with(&list_url, request(args, &client, &list_url)?).await?;
            Ok(Arc::from(bytes))
        })
        .await
        .map_err(ModuleError::Failed)?;
    let name = url_file_name(&args.url);
    match listed(&String::from_utf8_lossy(&list), &name) {
        Some(sum) => Ok(Some((
            algorithm,
            clean_digest(&sum).map_err(ModuleError::Failed)?,
        ))),
        None => fail(format!(
            "Unable to find a checksum for file '{name}' in '{list_url}'"
        )),
    }
}

/// The file at `url`, downloaded once per run and checked against `expected`.
async fn download(
    args: &Args,
    ctx: &Ctx<'_>,
    expected: Option<&(Algorithm, String)>,
) -> Result<Arc<[u8]>> {
    let url = args.url.as_str();
    ctx.releases
        .bundle(key(args, "file"), |dir| async move {
            let client = client(args)?;
            let get = request(args, &client, url)?;
            let bytes = match expected {
                // A pinned sha256 is what the cache is keyed by.
                Some((Algorithm::Sha256, sum)) => verified_fetch(dir.as_deref(), url, sum, get).await?,
                Some((algorithm, sum)) => {
                    let bytes = fetch_with(url, get).await?;
                    let got = algorithm.of(&bytes);
                    if got != *sum {
                        return Err(format!(
                            "{url}: {} {got} does not match the expected {sum} — refusing to install it",
                            algorithm.name()
                        ));
                    }
                    bytes
                }
                None => fetch_with(url, get).await?,
            };
            Ok(Arc::from(bytes))
        })
        .await
        .map_err(ModuleError::Failed)
}

/// What the host has at `dest`, and the file if it had to be downloaded.
#[derive(Debug)]
pub struct Observed {
    /// `dest`, or the URL's file name in it when `dest` is a directory.
    path: String,
    into_dir: bool,
    state: Option<PathState>,
    /// The sha256 of what is at `path`, and its digest by the `checksum`'s algorithm.
    sha256: String,
    digest: String,
    expected: Option<(Algorithm, String)>,
    fetched: Option<Arc<[u8]>>,
}

/// Whether the file must be downloaded: Ansible's rules.
fn needs_download(args: &Args, o: &Observed) -> bool {
    o.into_dir
        || o.state.is_none()
        || args.force == Some(true)
        || o.expected.as_ref().is_some_and(|(_, sum)| *sum != o.digest)
}

impl Module for GetUrl {
    const NAME: &'static str = "get_url";
    type Args = Args;
    type Observed = Observed;
    type Todo = Vec<Step>;

    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        if !args.dest.starts_with('/') {
            return Err(ArgsError::Invalid(format!(
                "dest: an absolute path on the host, got {:?}",
                args.dest
            )));
        }
        checksum(args).map(drop).map_err(ArgsError::Invalid)?;
        client(args)
            .and_then(|c| request(args, &c, &args.url))
            .map(drop)
            .map_err(ArgsError::Invalid)
    }

    fn writes(args: &Args) -> Option<&str> {
        Some(&args.dest)
    }

    fn registers() -> Value {
        json!({"dest": "", "url": "", "checksum_src": ""})
    }

    /// One command reads `dest` (its type, attributes and digests); the file is downloaded
    /// only when Ansible would.
    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Observed> {
        let expected = expected(args, ctx).await?;
        let algorithm = expected.as_ref().map_or(Algorithm::Sha256, |(a, _)| *a);
        let script = format!(
            "d={}; if [ -d \"$d\" ]; then d=\"${{d%/}}\"/{}; echo dir; else echo file; fi; \
             printf '%s\\n' \"$d\"; \
             if [ -e \"$d\" ] || [ -L \"$d\" ]; then stat -c '%F|%a|%U|%G' -- \"$d\"; else echo absent; fi; \
             if [ -f \"$d\" ]; then sha256sum < \"$d\" | cut -d' ' -f1; {} < \"$d\" | cut -d' ' -f1; fi",
            shell_quote(&args.dest),
            shell_quote(&url_file_name(&args.url)),
            algorithm.command()
        );
        let out = run(ctx, &format!("reading {}", args.dest), &script).await?;
        let text = out.stdout_text();
        let mut lines = text.lines();
        let mut next = || lines.next().unwrap_or_default().trim().to_string();
        let (kind, path, stat, sha256, digest) = (next(), next(), next(), next(), next());
        if path.is_empty() {
            return fail(format!("reading {}: no answer from the host", args.dest));
        }
        let mut observed = Observed {
            path,
            into_dir: kind == "dir",
            state: parse_stat(&stat),
            sha256,
            digest,
            expected,
            fetched: None,
        };
        if needs_download(args, &observed) {
            observed.fetched = Some(download(args, ctx, observed.expected.as_ref()).await?);
        }
        Ok(observed)
    }

    fn plan(args: &Args, o: Observed) -> Result<Plan<Vec<Step>>> {
        let path = o.path.as_str();
        if o.state.as_ref().is_some_and(|s| s.kind == "directory") {
            return fail(format!("{path} is a directory"));
        }
        let (owner, group) = (args.owner.as_deref(), args.group.as_deref());
        let checksum_src = o.fetched.as_deref().map(|b| Algorithm::Sha1.of(b));
        let data = json!({"dest": path, "url": args.url, "checksum_src": checksum_src});
        let same = match &o.fetched {
            None => true,
            Some(bytes) => o.state.is_some() && hex(&sha2::Sha256::digest(bytes)) == o.sha256,
        };
        let mut plan = match (&o.fetched, same) {
            (Some(bytes), false) => {
                let upload = Upload {
                    path: path.to_string(),
                    contents: bytes.clone(),
                    mode: args
                        .mode
                        .map(|m| m.0)
                        .or(o.state.as_ref().map(|s| s.mode))
                        .unwrap_or(0o644),
                    owner: owner_spec(owner, group)
                        .or_else(|| o.state.as_ref().map(|s| format!("{}:{}", s.owner, s.group))),
                };
                let note = format!("downloaded {} to {path}", file_name(&args.url));
                Plan::change(note, vec![Step::Upload(upload)])
            }
            _ => {
                let (cmds, notes) = fix_attrs(path, o.state.as_ref(), args.mode, owner, group);
                if cmds.is_empty() {
                    let mut plan = Plan::nothing();
                    if o.fetched.is_none() {
                        plan.outcome.msg = "file already exists".into();
                    }
                    plan
                } else {
                    Plan::change(
                        format!("{path}: {}", notes.join(", ")),
                        vec![Step::run(
                            format!("setting {}", notes.join(", ")),
                            cmds.join(" && "),
                        )],
                    )
                }
            }
        };
        plan.outcome.data = Some(data);
        Ok(plan)
    }

    async fn apply(_: &Args, steps: Vec<Step>, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        apply_steps(ctx, &steps, planned).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{typed, FakeRemote, TestHost};

    const HELLO_SHA256: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    const HELLO_SHA1: &str = "f572d396fae9206628714fb2ce00f72e94f2258f";

    /// A server answering `body` to every GET, and the requests it got.
    async fn serve(body: &'static str) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/files/hello.txt", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(n) if n > 0 => request.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&request).to_string());
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (url, seen)
    }

    /// A host whose `dest` answers `reading` (kind, path, stat line, sha256, digest).
    fn host(reading: &str) -> TestHost {
        TestHost::new(FakeRemote::new().answer("stat -c", reading))
    }

    #[tokio::test]
    async fn an_absent_file_is_downloaded_here_and_pushed_then_left_alone() {
        let (url, seen) = serve("hello\n").await;
        let args = json!({"url": url, "dest": "/opt/hello.txt", "headers": {"X-Token": "t"}});
        let absent = host("file\n/opt/hello.txt\nabsent\n");
        let outcome = absent.apply::<GetUrl>(args.clone()).await.unwrap();
        assert_eq!(outcome.msg, "downloaded hello.txt to /opt/hello.txt");
        assert_eq!(outcome.data.unwrap()["checksum_src"], HELLO_SHA1);
        let uploads = absent.remote.sent();
        let Some(crate::modules::fake::Sent::Upload(up)) = uploads.last() else {
            panic!("{uploads:?}")
        };
        assert_eq!((&*up.contents, up.mode), (&b"hello\n"[..], 0o644));
        assert!(seen.lock().unwrap()[0].contains("x-token: t"));
        // Present, no checksum, no force: not even downloaded.
        let present = host("file\n/opt/hello.txt\nregular file|644|root|root\nother\n");
        let outcome = present.apply::<GetUrl>(args).await.unwrap();
        assert_eq!(
            (outcome.changed, outcome.msg.as_str()),
            (false, "file already exists")
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn with_force_the_same_file_is_unchanged_and_another_replaced() {
        let (url, _) = serve("hello\n").await;
        let args = json!({"url": url, "dest": "/opt/", "force": true, "mode": "0600"});
        let same = host(&format!(
            "dir\n/opt/hello.txt\nregular file|600|root|root\n{HELLO_SHA256}\n{HELLO_SHA256}\n"
        ));
        let outcome = same.apply::<GetUrl>(args.clone()).await.unwrap();
        assert!(!outcome.changed);
        assert!(same.remote.uploads().is_empty());
        let other = host("dir\n/opt/hello.txt\nregular file|644|app|app\nx\nx\n");
        let outcome = other.check::<GetUrl>(args).await.unwrap();
        assert_eq!(outcome.msg, "downloaded hello.txt to /opt/hello.txt");
        assert_eq!(outcome.data.unwrap()["dest"], "/opt/hello.txt");
        assert!(
            other.remote.uploads().is_empty(),
            "check mode pushes nothing"
        );
    }

    #[tokio::test]
    async fn a_checksum_the_file_matches_spares_the_download_and_a_pinned_sha256_uses_the_cache() {
        // Nothing listens there: a download would fail.
        let url = "http://127.0.0.1:9/hello.txt";
        let pinned = format!("sha256:{}", HELLO_SHA256.to_uppercase());
        let args = json!({"url": url, "dest": "/opt/hello.txt", "checksum": pinned});
        let matching = host(&format!(
            "file\n/opt/hello.txt\nregular file|644|root|root\n{HELLO_SHA256}\n{HELLO_SHA256}\n"
        ));
        assert!(
            !matching
                .apply::<GetUrl>(args.clone())
                .await
                .unwrap()
                .changed
        );
        let cache = tempfile::tempdir().unwrap();
        std::fs::write(
            cache.path().join(format!("{HELLO_SHA256}-hello.txt")),
            "hello\n",
        )
        .unwrap();
        let mut stale = host("file\n/opt/hello.txt\nregular file|644|root|root\nold\nold\n");
        stale.releases = crate::modules::release::Cache::new(Some(cache.path().to_path_buf()));
        let outcome = stale.apply::<GetUrl>(args).await.unwrap();
        assert!(outcome.changed);
        assert_eq!(stale.remote.uploads(), ["/opt/hello.txt"]);
    }

    #[tokio::test]
    async fn a_download_that_fails_its_checksum_is_refused() {
        let (url, _) = serve("tampered\n").await;
        let args =
            json!({"url": url, "dest": "/opt/hello.txt", "checksum": format!("sha1:{HELLO_SHA1}")});
        let err = host("file\n/opt/hello.txt\nabsent\n")
            .apply::<GetUrl>(args)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("sha1"), "{err}");
        assert!(err.to_string().contains("refusing to install it"), "{err}");
    }

    #[tokio::test]
    async fn a_checksums_file_gives_the_digest_for_the_urls_file_name() {
        let (list_url, _) = serve("abc  other.txt\n5891B5B522D5DF086D0FF0B110FBD9D21BB4FC7163AF34D08286A2E846F6BE03 *./hello.txt\n").await;
        let args = json!({
            "url": "http://127.0.0.1:9/hello.txt", "dest": "/opt/hello.txt",
            "checksum": format!("sha256:{list_url}"),
        });
        let matching = host(&format!(
            "file\n/opt/hello.txt\nregular file|644|root|root\n{HELLO_SHA256}\n{HELLO_SHA256}\n"
        ));
        assert!(!matching.apply::<GetUrl>(args).await.unwrap().changed);
        assert_eq!(listed("abc\n", "x").as_deref(), Some("abc"));
        assert_eq!(listed("abc  y\n", "x"), None);
    }

    #[test]
    fn arguments_are_checked_naming_the_argument() {
        let err = |v| {
            crate::modules::args::parse::<GetUrl>(v)
                .unwrap_err()
                .to_string()
        };
        assert!(err(json!({"url": "http://h/x", "dest": "x"})).starts_with("dest:"));
        let bad = err(json!({"url": "http://h/x", "dest": "/x", "checksum": "sha256"}));
        assert!(bad.starts_with("checksum:"), "{bad}");
        let bad = err(json!({"url": "http://h/x", "dest": "/x", "checksum": "crc:00"}));
        assert!(bad.contains("expected one of md5"), "{bad}");
        let bad = err(json!({"url": "http://h/x", "dest": "/x", "checksum": "sha1:xyz"}));
        assert!(bad.contains("not a hex digest"), "{bad}");
        let bad = err(json!({"url": "http://h/x", "dest": "/x", "headers": {"A": "b\nc"}}));
        assert!(
            bad.starts_with("headers:") && !bad.contains("b\nc"),
            "{bad}"
        );
        assert_eq!(
            typed::<GetUrl>(json!({"url": "u", "dest": "/d", "username": "me"}))
                .url_username
                .as_deref(),
            Some("me")
        );
    }
}
