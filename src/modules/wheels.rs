//! `wheels`: Python packages installed offline into a venv. A lock file in the role pins every
//! file (wheels, and the sdists of source-only packages) by URL and sha256, per host Python and
//! machine; the control machine downloads them once into the release cache, checks them and
//! pushes the ones a host needs, which installs them with `pip --no-index`: hosts need no
//! internet, and what runs is exactly what the lock names.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;

use super::release::{file_name, verified_download};
use super::{apply_steps, fail, run, Ctx, Module, Outcome, Plan, Result, Step, Upload};
use crate::ssh::shell_quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The lock file in the role's `files/`.
    pub lock: String,
    /// The venv installed into: `/opt/patroni`.
    pub venv: String,
    /// The lock, read and parsed by the engine from the role.
    #[serde(skip)]
    pub locked: Option<Arc<Lock>>,
}

/// A lock file: what pip installs, and every file it may need.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// pip's requirements: `patroni[etcd3]==4.1.5`.
    pub requirements: Vec<String>,
    pub files: Vec<LockedFile>,
    #[serde(skip)]
    digest: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    pub url: String,
    pub sha256: String,
    /// `cp311-x86_64`, … : the hosts it is for (absent: every host).
    pub hosts: Option<Vec<String>>,
    /// Only there to build sdists (setuptools, wheel); not expected in the venv.
    #[serde(default)]
    pub build: bool,
}

impl Lock {
    /// Parses a lock file's text; an error names the line.
    pub fn parse(text: &[u8], display: &str) -> std::result::Result<Lock, String> {
        let root = crate::yaml::parse(&String::from_utf8_lossy(text))
            .map_err(|e| format!("{display}:{}: {}", e.mark, e.message))?;
        let mut lock: Lock =
            serde_json::from_value(root.to_json()).map_err(|e| format!("{display}: {e}"))?;
        for f in &lock.files {
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{display}: {}: `sha256` is not a sha256", f.url));
            }
            if package(file_name(&f.url)).is_none() {
                return Err(format!(
                    "{display}: {}: neither a wheel nor an sdist (.tar.gz)",
                    f.url
                ));
            }
        }
        lock.digest = crate::template::hex(&<sha2::Sha256 as sha2::Digest>::digest(text));
        Ok(lock)
    }

    fn for_host<'a>(&'a self, tag: &'a str) -> impl Iterator<Item = &'a LockedFile> + 'a {
        self.files
            .iter()
            .filter(move |f| f.hosts.as_ref().is_none_or(|h| h.iter().any(|t| t == tag)))
    }

    /// Every host kind the lock has files for.
    fn tags(&self) -> BTreeSet<&str> {
        self.files
            .iter()
            .flat_map(|f| f.hosts.iter().flatten())
            .map(String::as_str)
            .collect()
    }
}

/// A package name as pip writes it in `NAME-VERSION.dist-info`.
fn normalized(name: &str) -> String {
    name.to_ascii_lowercase().replace(['-', '.'], "_")
}

/// `(name, version)` of a wheel (`name-version-tags.whl`) or sdist (`name-version.tar.gz`).
fn package(file: &str) -> Option<(String, String)> {
    let (name, version) = if let Some(stem) = file.strip_suffix(".whl") {
        let mut parts = stem.split('-');
        (parts.next()?, parts.next()?)
    } else {
        file.strip_suffix(".tar.gz")?.rsplit_once('-')?
    };
    (!name.is_empty() && !version.is_empty()).then(|| (normalized(name), version.to_string()))
}

/// `(name, version)` of an installed package's metadata directory: `pyyaml-6.0.4.dist-info`,
/// or for an sdist pip installed the legacy way, `ydiff-1.4.2(-py3.11).egg-info`. (Neither
/// part holds a `-`: pip writes it as `_`.)
fn installed(dir: &str) -> Option<(String, String)> {
    let stem = dir
        .strip_suffix(".dist-info")
        .or_else(|| dir.strip_suffix(".egg-info"))?;
    let mut parts = stem.split('-');
    Some((normalized(parts.next()?), parts.next()?.to_string()))
}

pub struct Wheels;

/// What the host is, and what its venv holds.
#[derive(Debug)]
pub struct Observed {
    /// `cp311-x86_64`: the host's Python and machine.
    tag: String,
    installed: BTreeSet<(String, String)>,
    /// The files for this host, bundled: fetched only when something is missing.
    bundle: Option<Arc<[u8]>>,
}

fn lock(args: &Args) -> Result<&Lock> {
    match &args.locked {
        Some(l) => Ok(l),
        None => fail(format!("wheels: the lock {} was not read", args.lock)),
    }
}

/// The packages the venv must hold: the lock's files for `tag`, but the build tools.
fn wanted(lock: &Lock, tag: &str) -> BTreeSet<(String, String)> {
    lock.for_host(tag)
        .filter(|f| !f.build)
        .filter_map(|f| package(file_name(&f.url)))
        .collect()
}

/// An uncompressed tar of the files for `tag` (wheels are compressed already).
async fn bundle(lock: &Lock, tag: &str, ctx: &Ctx<'_>) -> Result<Arc<[u8]>> {
    let key = format!("wheels|{}|{tag}", lock.digest);
    let files: Vec<(String, String)> = lock
        .for_host(tag)
        .map(|f| (f.url.clone(), f.sha256.to_ascii_lowercase()))
        .collect();
    ctx.releases
        .bundle(key, |dir| async move {
            let mut tar = tar::Builder::new(Vec::new());
            for (url, sum) in &files {
                let bytes = verified_download(dir.as_deref(), url, sum).await?;
                let mut header = tar::Header::new_gnu();
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                tar.append_data(&mut header, file_name(url), bytes.as_slice())
                    .map_err(|e| format!("bundling {}: {e}", file_name(url)))?;
            }
            tar.into_inner()
                .map(Arc::from)
                .map_err(|e| format!("bundling the wheels: {e}"))
        })
        .await
        .map_err(super::ModuleError::Failed)
}

/// Where the bundle waits on the host while pip reads it.
const BUNDLE: &str = "/var/tmp/hactl-wheels.tar";

impl Module for Wheels {
    const NAME: &'static str = "wheels";
    type Args = Args;
    type Observed = Observed;
    type Todo = Vec<Step>;

    /// The host's Python and machine, and the venv's packages; the files only if some are
    /// missing.
    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Observed> {
        let lock = lock(args)?;
        let venv = shell_quote(args.venv.trim_end_matches('/'));
        let script = format!(
            "python3 -c 'import sys, platform; print(\"cp%d%d-%s\" % (sys.version_info[0], sys.version_info[1], platform.machine()))' && \
             for d in {venv}/lib/python3*/site-packages/*.dist-info {venv}/lib/python3*/site-packages/*.egg-info; do [ -d \"$d\" ] && basename \"$d\"; done; true"
        );
        let out = run(ctx, "reading the host's Python and venv", &script).await?;
        let text = out.stdout_text();
        let mut lines = text.lines().map(str::trim);
        let tag = lines.next().unwrap_or_default().to_string();
        let installed: BTreeSet<(String, String)> = lines.filter_map(installed).collect();
        if !lock.tags().contains(tag.as_str()) {
            return fail(format!(
                "{}: no files for this host's Python and machine ({tag}); it has {}: add it to scripts/patroni-lock and run it",
                args.lock,
                lock.tags().into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        let bundle = if wanted(lock, &tag).is_subset(&installed) {
            None
        } else {
            Some(bundle(lock, &tag, ctx).await?)
        };
        Ok(Observed {
            tag,
            installed,
            bundle,
        })
    }

    fn plan(args: &Args, observed: Observed) -> Result<Plan<Vec<Step>>> {
        let lock = lock(args)?;
        let missing: Vec<String> = wanted(lock, &observed.tag)
            .difference(&observed.installed)
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        let Some(bundle) = observed.bundle.filter(|_| !missing.is_empty()) else {
            return Ok(Plan::nothing());
        };
        let venv = args.venv.trim_end_matches('/');
        let q = shell_quote(venv);
        let requirements: Vec<String> = lock.requirements.iter().map(|r| shell_quote(r)).collect();
        let install = format!(
            "set -e; d=$(mktemp -d); trap 'rm -rf \"$d\" {BUNDLE}' EXIT; tar -xf {BUNDLE} -C \"$d\"; \
             [ -x {q}/bin/pip ] || python3 -m venv {q}; \
             {q}/bin/pip install --quiet --disable-pip-version-check --no-index --find-links \"$d\" {}",
            requirements.join(" ")
        );
        Ok(Plan::change(
            format!("installed {} into {venv}", missing.join(", ")),
            vec![
                Step::Upload(Upload {
                    path: BUNDLE.into(),
                    contents: bundle,
                    mode: 0o600,
                    owner: Some("root:root".into()),
                }),
                Step::run(format!("pip install into {venv}"), install),
            ],
        ))
    }

    async fn apply(_: &Args, steps: Vec<Step>, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        apply_steps(ctx, &steps, planned).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{FakeRemote, TestHost};

    const LOCK: &str = "requirements: [\"patroni[etcd3]==4.1.5\"]
files:
  - url: https://f/p/patroni-4.1.5-py3-none-any.whl
    sha256: PATRONI
  - url: https://f/p/PyYAML-6.0.4-cp311-cp311-manylinux2014_x86_64.whl
    sha256: 2222222222222222222222222222222222222222222222222222222222222222
    hosts: [cp311-x86_64]
  - url: https://f/p/python-etcd-0.4.5.tar.gz
    sha256: 3333333333333333333333333333333333333333333333333333333333333333
  - url: https://f/p/setuptools-84.2.1-py3-none-any.whl
    sha256: 4444444444444444444444444444444444444444444444444444444444444444
    build: true
";

    fn lock_with(patroni_sum: &str) -> Lock {
        Lock::parse(
            LOCK.replace("PATRONI", patroni_sum).as_bytes(),
            "patroni.lock.yml",
        )
        .unwrap()
    }

    fn args(lock: Lock) -> Args {
        Args {
            lock: "patroni.lock.yml".into(),
            venv: "/opt/patroni".into(),
            locked: Some(Arc::new(lock)),
        }
    }

    fn sum(bytes: &[u8]) -> String {
        crate::template::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes))
    }

    #[test]
    fn wheel_and_sdist_names_give_pips_package_names() {
        assert_eq!(
            package("PyYAML-6.0.4-cp311-cp311-manylinux2014_x86_64.whl"),
            Some(("pyyaml".into(), "6.0.4".into()))
        );
        assert_eq!(
            package("python-etcd-0.4.5.tar.gz"),
            Some(("python_etcd".into(), "0.4.5".into()))
        );
        assert_eq!(package("README.md"), None);
        assert_eq!(
            installed("ydiff-1.4.2-py3.11.egg-info"),
            Some(("ydiff".into(), "1.4.2".into()))
        );
        assert_eq!(
            installed("typing_extensions-4.16.0.dist-info"),
            Some(("typing_extensions".into(), "4.16.0".into()))
        );
    }

    #[test]
    fn a_bad_lock_names_the_file_and_line() {
        let err = Lock::parse(
            b"requirements: []\nfiles:\n  - url: x.whl\n    sha: [1\n",
            "l.yml",
        )
        .unwrap_err();
        assert!(err.starts_with("l.yml:5:"), "{err}");
        let err = Lock::parse(
            b"requirements: []\nfiles:\n  - url: x.whl\n    sha: 1\n",
            "l.yml",
        )
        .unwrap_err();
        assert!(err.starts_with("l.yml: unknown field `sha`"), "{err}");
        let err =
            Lock::parse(LOCK.replace("PATRONI", "not-a-sum").as_bytes(), "l.yml").unwrap_err();
        assert_eq!(
            err,
            "l.yml: https://f/p/patroni-4.1.5-py3-none-any.whl: `sha256` is not a sha256"
        );
    }

    #[test]
    fn a_venv_with_every_locked_package_is_left_alone() {
        let installed = [
            ("patroni", "4.1.5"),
            ("pyyaml", "6.0.4"),
            ("python_etcd", "0.4.5"),
            ("pip", "23.0.1"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .into_iter()
        .collect();
        let observed = Observed {
            tag: "cp311-x86_64".into(),
            installed,
            bundle: None,
        };
        let plan = Wheels::plan(&args(lock_with(&"1".repeat(64))), observed).unwrap();
        assert!(plan.todo.is_none());
    }

    #[tokio::test]
    async fn an_older_patroni_is_replaced_from_the_cache_without_the_other_machines_files() {
        let cache = tempfile::tempdir().unwrap();
        let files: [(&str, &[u8]); 4] = [
            ("patroni-4.1.5-py3-none-any.whl", b"P"),
            ("PyYAML-6.0.4-cp311-cp311-manylinux2014_x86_64.whl", b"Y"),
            ("python-etcd-0.4.5.tar.gz", b"E"),
            ("setuptools-84.2.1-py3-none-any.whl", b"S"),
        ];
        let mut text = LOCK.replace("PATRONI", &sum(b"P"));
        for (name, bytes) in &files[1..] {
            let placeholder =
                ["2", "3", "4"][files.iter().position(|f| f.0 == *name).unwrap() - 1].repeat(64);
            text = text.replace(&placeholder, &sum(bytes));
        }
        for (name, bytes) in files {
            std::fs::write(cache.path().join(format!("{}-{name}", sum(bytes))), bytes).unwrap();
        }
        let mut host = TestHost::new(FakeRemote::new().answer(
            "python3 -c",
            "cp311-x86_64\npatroni-3.0.2.dist-info\nPyYAML-6.0.4.dist-info\npython_etcd-0.4.5-py3.11.egg-info\n",
        ));
        host.releases = crate::modules::release::Cache::new(Some(cache.path().to_path_buf()));
        let args = args(Lock::parse(text.as_bytes(), "patroni.lock.yml").unwrap());
        let observed = Wheels::observe(&args, &host.ctx()).await.unwrap();
        let plan = Wheels::plan(&args, observed).unwrap();
        assert_eq!(
            plan.outcome,
            Outcome::changed("installed patroni 4.1.5 into /opt/patroni")
        );
        let steps = plan.todo.unwrap();
        let Step::Upload(upload) = &steps[0] else {
            panic!("{steps:?}")
        };
        let mut names: Vec<String> = tar::Archive::new(&upload.contents[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "PyYAML-6.0.4-cp311-cp311-manylinux2014_x86_64.whl",
                "patroni-4.1.5-py3-none-any.whl",
                "python-etcd-0.4.5.tar.gz",
                "setuptools-84.2.1-py3-none-any.whl"
            ]
        );
        assert_eq!(upload.mode, 0o600);
        let Step::Run { script, .. } = &steps[1] else {
            panic!("{steps:?}")
        };
        assert!(script.contains("--no-index"), "{script}");
        assert!(script.contains("'patroni[etcd3]==4.1.5'"), "{script}");
    }

    #[tokio::test]
    async fn a_host_the_lock_has_no_files_for_is_refused_by_name() {
        let host = TestHost::new(FakeRemote::new().answer("python3 -c", "cp313-riscv64\n"));
        let err = Wheels::observe(&args(lock_with(&"1".repeat(64))), &host.ctx())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("(cp313-riscv64); it has cp311-x86_64"),
            "{err}"
        );
    }
}
