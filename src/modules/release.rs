//! `release`: binaries from an upstream release tarball. The tarball is downloaded once to a
//! cache on the control machine and checked against a pinned sha256 or the release's checksums
//! file; only the chosen binaries are pushed to the hosts, which need no internet.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::Digest as _;
use tokio::sync::{Mutex, OnceCell};

use super::{
    apply_steps, run, ArgsError, Ctx, Mode, Module, Names, Outcome, Plan, Result, Step, Upload,
};
use crate::ssh::shell_quote;
use crate::template::hex;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The tarball (.tar.gz).
    pub url: String,
    /// The tarball's pinned sha256.
    pub sha256: Option<String>,
    /// A `sha256sum`-style file listing the tarball.
    pub checksums_url: Option<String>,
    /// Binaries to install, by file name anywhere in the tarball.
    pub binaries: Names,
    /// Where they go (default /usr/local/bin).
    pub dest: Option<String>,
    pub mode: Option<Mode>,
}

pub struct Release;

/// A verified tarball's chosen binaries, by name.
type Unpacked = HashMap<String, Arc<[u8]>>;

/// One download, shared by every host that waits for it.
type Fetch = Arc<OnceCell<std::result::Result<Arc<Unpacked>, String>>>;

/// Bytes made once and pushed to many hosts (a bundle of wheels).
type Bundle = Arc<OnceCell<std::result::Result<Arc<[u8]>, String>>>;

/// Downloads shared by all hosts of a run: each URL is fetched and unpacked once.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<String, Fetch>>,
    bundles: Mutex<HashMap<String, Bundle>>,
    dir: Option<PathBuf>,
}

impl Cache {
    /// A cache in `dir` (default `~/.cache/hactl/releases`).
    pub fn new(dir: Option<PathBuf>) -> Cache {
        let dir = dir.or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hactl/releases"))
        });
        Cache {
            entries: Mutex::default(),
            bundles: Mutex::default(),
            dir,
        }
    }

    /// What `make` builds from the cache directory, once per `key` and run.
    pub(crate) async fn bundle<F>(
        &self,
        key: String,
        make: impl FnOnce(Option<PathBuf>) -> F,
    ) -> std::result::Result<Arc<[u8]>, String>
    where
        F: std::future::Future<Output = std::result::Result<Arc<[u8]>, String>>,
    {
        let cell = self.bundles.lock().await.entry(key).or_default().clone();
        cell.get_or_init(|| make(self.dir.clone())).await.clone()
    }

    async fn get(&self, args: &Args) -> std::result::Result<Arc<Unpacked>, String> {
        let key = format!("{}|{}", args.url, args.binaries.0.join(","));
        let cell = self.entries.lock().await.entry(key).or_default().clone();
        cell.get_or_init(|| fetch(self.dir.clone(), args))
            .await
            .clone()
    }
}

/// The last part of a URL's path.
pub(crate) fn file_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

async fn download(url: &str) -> std::result::Result<Vec<u8>, String> {
    fetch_with(url, reqwest::Client::new().get(url)).await
}

/// The body of `request` (a GET of `url`, with its client's timeouts and its headers), which
/// must answer a success.
pub(crate) async fn fetch_with(
    url: &str,
    request: reqwest::RequestBuilder,
) -> std::result::Result<Vec<u8>, String> {
    let response = request
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("downloading {url}: {e}"))?;
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("downloading {url}: {e}"))?;
    Ok(bytes.to_vec())
}

async fn expected_sum(args: &Args) -> std::result::Result<String, String> {
    if let Some(sum) = &args.sha256 {
        return Ok(sum.trim().to_ascii_lowercase());
    }
    let Some(list_url) = &args.checksums_url else {
        return Err("release: give `sha256` or `checksums_url`".into());
    };
    let list = String::from_utf8_lossy(&download(list_url).await?).to_string();
    let name = file_name(&args.url);
    list.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(_, f)| f.trim().trim_start_matches('*') == name)
        .map(|(sum, _)| sum.to_ascii_lowercase())
        .ok_or_else(|| format!("{list_url} lists no checksum for {name}"))
}

async fn fetch(dir: Option<PathBuf>, args: &Args) -> std::result::Result<Arc<Unpacked>, String> {
    let sum = expected_sum(args).await?;
    let tarball = verified_download(dir.as_deref(), &args.url, &sum).await?;
    unpack(&tarball, &args.binaries.0).map(Arc::new)
}

/// The file at `url` whose sha256 is `sum`: from the cache in `dir` if it holds it, else
/// downloaded, checked and cached.
pub(crate) async fn verified_download(
    dir: Option<&Path>,
    url: &str,
    sum: &str,
) -> std::result::Result<Vec<u8>, String> {
    verified_fetch(dir, url, sum, reqwest::Client::new().get(url)).await
}

/// [`verified_download`] with `request` (a GET of `url`) when the cache does not hold it.
pub(crate) async fn verified_fetch(
    dir: Option<&Path>,
    url: &str,
    sum: &str,
    request: reqwest::RequestBuilder,
) -> std::result::Result<Vec<u8>, String> {
    let cached = dir.map(|d| d.join(format!("{sum}-{}", file_name(url))));
    let from_cache = cached
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .filter(|b| hex(&sha2::Sha256::digest(b)) == sum);
    if let Some(bytes) = from_cache {
        return Ok(bytes);
    }
    let bytes = fetch_with(url, request).await?;
    let got = hex(&sha2::Sha256::digest(&bytes));
    if got != sum {
        return Err(format!(
            "{url}: sha256 {got} does not match the expected {sum} — refusing to install it"
        ));
    }
    if let (Some(path), Some(d)) = (&cached, dir) {
        let tmp = path.with_extension("part");
        let saved = std::fs::create_dir_all(d)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = saved {
            warn(&format!("cannot cache {}: {e}", path.display()));
        }
    }
    Ok(bytes)
}

/// A cache that cannot be written only costs a download next time.
fn warn(msg: &str) {
    eprintln!("hactl: warning: {msg}");
}

fn unpack(tarball: &[u8], wanted: &[String]) -> std::result::Result<Unpacked, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let mut found = Unpacked::new();
    let entries = archive
        .entries()
        .map_err(|e| format!("reading the tarball: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading the tarball: {e}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_default();
        if wanted.contains(&name) && !found.contains_key(&name) {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format!("reading {name} from the tarball: {e}"))?;
            found.insert(name, Arc::from(bytes));
        }
    }
    let missing: Vec<&String> = wanted.iter().filter(|w| !found.contains_key(*w)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "the tarball has no file named {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(found)
}

/// The binaries' paths on the host.
fn paths(args: &Args) -> Vec<String> {
    let dest = args.dest.as_deref().unwrap_or("/usr/local/bin");
    args.binaries
        .0
        .iter()
        .map(|b| format!("{}/{b}", dest.trim_end_matches('/')))
        .collect()
}

fn mode(args: &Args) -> u32 {
    args.mode.map_or(0o755, |m| m.0)
}

/// The verified binaries, and what the host has at their paths.
#[derive(Debug)]
pub struct Observed {
    binaries: Arc<Unpacked>,
    /// Per binary, `SHA256 MODE` of the installed file, or `absent`.
    installed: Vec<String>,
}

impl Module for Release {
    const NAME: &'static str = "release";
    type Args = Args;
    type Observed = Observed;
    type Todo = Vec<Step>;

    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        match (&args.sha256, &args.checksums_url) {
            (None, None) => Err(ArgsError::Invalid(
                "give `sha256` or `checksums_url`".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Downloads (once per run, into the cache) and reads the installed binaries' checksums.
    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Observed> {
        let binaries = ctx
            .releases
            .get(args)
            .await
            .map_err(super::ModuleError::Failed)?;
        let script = paths(args)
            .iter()
            .map(|p| {
                let q = shell_quote(p);
                format!("if [ -f {q} ]; then echo \"$(sha256sum < {q} | cut -c1-64) $(stat -c %a {q})\"; else echo absent; fi")
            })
            .collect::<Vec<_>>()
            .join("; ");
        let dest = args.dest.as_deref().unwrap_or("/usr/local/bin");
        let out = run(ctx, &format!("reading {dest}"), &script).await?;
        Ok(Observed {
            binaries,
            installed: out
                .stdout_text()
                .lines()
                .map(|l| l.trim().to_string())
                .collect(),
        })
    }

    fn plan(args: &Args, observed: Observed) -> Result<Plan<Vec<Step>>> {
        let mode = mode(args);
        let mut changed = Vec::new();
        let mut uploads = Vec::new();
        for ((name, path), line) in args
            .binaries
            .0
            .iter()
            .zip(paths(args))
            .zip(&observed.installed)
        {
            let bytes = &observed.binaries[name];
            let want = format!("{} {mode:o}", hex(&sha2::Sha256::digest(bytes)));
            if *line != want {
                changed.push(name.clone());
                uploads.push(Step::Upload(Upload {
                    path,
                    contents: bytes.clone(),
                    mode,
                    owner: Some("root:root".into()),
                }));
            }
        }
        if changed.is_empty() {
            return Ok(Plan::nothing());
        }
        let note = format!(
            "installed {} from {}",
            changed.join(", "),
            file_name(&args.url)
        );
        Ok(Plan::change(note, uploads))
    }

    async fn apply(_: &Args, steps: Vec<Step>, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        apply_steps(ctx, &steps, planned).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn chosen_binaries_are_found_at_any_depth() {
        let t = tarball(&[
            ("etcd-v1/etcd", b"E"),
            ("etcd-v1/etcdctl", b"C"),
            ("etcd-v1/README", b"R"),
        ]);
        let got = unpack(&t, &["etcd".into(), "etcdctl".into()]).unwrap();
        assert_eq!(&*got["etcd"], b"E");
        assert_eq!(got.len(), 2);
        let err = unpack(&t, &["etcdutl".into()]).unwrap_err();
        assert!(err.contains("etcdutl"), "{err}");
    }

    fn observed(installed: &[&str]) -> Observed {
        let binaries: Unpacked = [("etcd", &b"E"[..]), ("etcdctl", &b"C"[..])]
            .into_iter()
            .map(|(n, b)| (n.to_string(), Arc::from(b)))
            .collect();
        Observed {
            binaries: Arc::new(binaries),
            installed: installed.iter().map(|l| l.to_string()).collect(),
        }
    }

    fn args() -> Args {
        crate::modules::fake::typed::<Release>(serde_json::json!({
            "url": "https://e/etcd-v1.tar.gz", "sha256": "00", "binaries": ["etcd", "etcdctl"]
        }))
    }

    fn sum(bytes: &[u8]) -> String {
        hex(&sha2::Sha256::digest(bytes))
    }

    #[test]
    fn absent_binaries_are_uploaded_as_root_755() {
        let plan = Release::plan(&args(), observed(&["absent", "absent"])).unwrap();
        assert_eq!(
            plan.outcome,
            Outcome::changed("installed etcd, etcdctl from etcd-v1.tar.gz")
        );
        assert_eq!(
            plan.todo.unwrap()[0],
            Step::Upload(Upload {
                path: "/usr/local/bin/etcd".into(),
                contents: Arc::from(&b"E"[..]),
                mode: 0o755,
                owner: Some("root:root".into()),
            })
        );
    }

    #[test]
    fn installed_binaries_are_left_and_a_changed_one_replaced() {
        let same = [format!("{} 755", sum(b"E")), format!("{} 755", sum(b"C"))];
        let same: Vec<&str> = same.iter().map(String::as_str).collect();
        assert!(Release::plan(&args(), observed(&same))
            .unwrap()
            .todo
            .is_none());
        let wrong_mode = format!("{} 700", sum(b"C"));
        let plan = Release::plan(&args(), observed(&[same[0], &wrong_mode])).unwrap();
        assert_eq!(plan.outcome.msg, "installed etcdctl from etcd-v1.tar.gz");
        assert_eq!(plan.todo.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn check_mode_reads_the_host_and_uploads_nothing() {
        let cache = tempfile::tempdir().unwrap();
        let tarball = tarball(&[("etcd-v1/etcd", b"E")]);
        let sum = sum(&tarball);
        std::fs::write(cache.path().join(format!("{sum}-etcd-v1.tar.gz")), &tarball).unwrap();
        let mut host = crate::modules::fake::TestHost::new(
            crate::modules::fake::FakeRemote::new().answer("sha256sum", "absent\n"),
        );
        host.releases = Cache::new(Some(cache.path().to_path_buf()));
        // Nothing listens there: the cached tarball is the one used.
        let args = serde_json::json!({
            "url": "http://127.0.0.1:9/etcd-v1.tar.gz", "sha256": sum, "binaries": "etcd"
        });
        let planned = host.check::<Release>(args).await.unwrap();
        assert_eq!(
            planned,
            Outcome::changed("installed etcd from etcd-v1.tar.gz")
        );
        assert_eq!(host.remote.commands().len(), 1);
        assert!(host.remote.uploads().is_empty());
    }

    #[test]
    fn a_checksum_is_required_one_way_or_the_other() {
        let err = crate::modules::args::parse::<Release>(serde_json::json!({
            "url": "https://e/x.tar.gz", "binaries": "x"
        }))
        .unwrap_err();
        assert_eq!(err.to_string(), "give `sha256` or `checksums_url`");
    }
}
