//! `certificate`: a host's certificate, key and the CA's certificate in a directory of the
//! host, issued on the control machine by the inventory's CA (`crate::pki`) or given by the
//! user. The key reaches only its own host; it is never shown in a diff.

use std::sync::Arc;

use serde::Deserialize;
use sha2::Digest as _;

use super::{
    apply_steps, fail, fix_attrs, owner_spec, parse_stat, run, stat_script, Ctx, Mode, Module,
    Outcome, PathState, Plan, Result, Step, Upload,
};
use crate::pki::Wanted;
use crate::ssh::shell_quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The directory of the three files: `ca.crt`, `NAME.crt`, `NAME.key`.
    pub dir: String,
    /// The files' stem, and the certificate's name in the inventory's PKI: one certificate
    /// per name and host (etcd and Patroni on one host share `server`).
    pub name: String,
    /// The subject's common name (none when not given: etcd's JSON gateway refuses a client
    /// certificate that has one).
    #[serde(default)]
    pub cn: String,
    /// Names and addresses a server certificate is valid for; none for a client certificate.
    #[serde(default)]
    pub sans: Vec<String>,
    /// Who may read the key (0640 to the group); the certificates are 0644.
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Reissued when fewer days are left.
    #[serde(default, deserialize_with = "super::de_u64")]
    pub renew_days: Option<u64>,
    /// How long a new certificate is valid.
    #[serde(default, deserialize_with = "super::de_u64")]
    pub days: Option<u64>,
    /// The user's own certificate and key for this host (paths on the control machine), used
    /// as they are instead of one issued here.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

const DEFAULT_RENEW_DAYS: u64 = 30;
const DEFAULT_DAYS: u64 = 365;

pub struct Certificate;

/// What the three files are on the host, and what they should be.
#[derive(Debug)]
pub struct Observed {
    pub want: Files,
    /// Per file: its state and sha256, or None when absent.
    pub found: Vec<Option<(PathState, String)>>,
    /// Why the control machine issued a new one during this run, if it did.
    pub reissued: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Files {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl Args {
    fn paths(&self) -> [String; 3] {
        let d = self.dir.trim_end_matches('/');
        [
            format!("{d}/ca.crt"),
            format!("{d}/{}.crt", self.name),
            format!("{d}/{}.key", self.name),
        ]
    }
}

impl Module for Certificate {
    const NAME: &'static str = "certificate";
    type Args = Args;
    type Observed = Observed;
    type Todo = Vec<Step>;

    fn validate(args: &Args) -> std::result::Result<(), super::ArgsError> {
        if args.cert_file.is_some() != args.key_file.is_some() {
            return Err(super::ArgsError::Invalid(
                "give both `cert_file` and `key_file`, or neither".into(),
            ));
        }
        Ok(())
    }

    /// Issues (or reads) the certificate on the control machine; reads the host's files'
    /// attributes and checksums in one command.
    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Observed> {
        let (want, reissued) = match (&args.cert_file, &args.key_file) {
            (Some(c), Some(k)) => {
                let read = |p: &str| {
                    std::fs::read_to_string(p).map_err(|e| {
                        super::ModuleError::Failed(format!("{p} on this machine: {e}"))
                    })
                };
                let ca = std::fs::read_to_string(ctx.pki.ca_path()).map_err(|e| {
                    super::ModuleError::Failed(format!("{}: {e}", ctx.pki.ca_path().display()))
                })?;
                (
                    Files {
                        ca,
                        cert: read(c)?,
                        key: read(k)?,
                    },
                    None,
                )
            }
            _ => {
                let issued = ctx
                    .pki
                    .issue(&Wanted {
                        holder: ctx.host,
                        name: &args.name,
                        cn: &args.cn,
                        sans: &args.sans,
                        renew_days: args.renew_days.unwrap_or(DEFAULT_RENEW_DAYS) as i64,
                        days: args.days.unwrap_or(DEFAULT_DAYS) as i64,
                    })
                    .map_err(|e| super::ModuleError::Failed(e.to_string()))?;
                (
                    Files {
                        ca: issued.ca,
                        cert: issued.cert,
                        key: issued.key,
                    },
                    issued.reissued,
                )
            }
        };
        let script = args
            .paths()
            .iter()
            .map(|p| {
                let q = shell_quote(p);
                format!(
                    "{}; if [ -f {q} ]; then sha256sum < {q} | cut -c1-64; else echo; fi",
                    stat_script(p)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let out = run(ctx, &format!("reading {}", args.dir), &script).await?;
        let text = out.stdout_text();
        let lines: Vec<&str> = text.lines().collect();
        let found = (0..3)
            .map(|i| {
                let state = parse_stat(lines.get(2 * i).copied().unwrap_or("absent"))?;
                let sum = lines
                    .get(2 * i + 1)
                    .copied()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                Some((state, sum))
            })
            .collect();
        Ok(Observed {
            want,
            found,
            reissued,
        })
    }

    fn plan(args: &Args, observed: Observed) -> Result<Plan<Vec<Step>>> {
        let Observed {
            want,
            found,
            reissued,
        } = observed;
        let owner = args.owner.as_deref().unwrap_or("root");
        let group = args.group.as_deref().unwrap_or("root");
        let files = [
            (&want.ca, 0o644, "CA certificate"),
            (&want.cert, 0o644, "certificate"),
            (&want.key, 0o640, "key"),
        ];
        let mut steps = Vec::new();
        let mut notes = Vec::new();
        for ((path, (contents, mode, what)), found) in
            args.paths().into_iter().zip(files).zip(found)
        {
            if found.as_ref().is_some_and(|(s, _)| s.kind == "directory") {
                return fail(format!("{path} is a directory"));
            }
            let sum = crate::template::hex(&sha2::Sha256::digest(contents.as_bytes()));
            match &found {
                Some((state, have)) if *have == sum => {
                    let (cmds, fixes) = fix_attrs(
                        &path,
                        Some(state),
                        Some(Mode(mode)),
                        Some(owner),
                        Some(group),
                    );
                    if !cmds.is_empty() {
                        notes.push(format!("{path}: {}", fixes.join(", ")));
                        steps.push(Step::run(
                            format!("setting {}", fixes.join(", ")),
                            cmds.join(" && "),
                        ));
                    }
                }
                _ => {
                    notes.push(match &found {
                        None => format!("new {what} {path}"),
                        Some(_) => format!("replaced {what} {path}"),
                    });
                    steps.push(Step::Upload(Upload {
                        path,
                        contents: Arc::from(contents.as_bytes()),
                        mode,
                        owner: owner_spec(Some(owner), Some(group)),
                    }));
                }
            }
        }
        if steps.is_empty() {
            return Ok(Plan::nothing());
        }
        if let Some(why) = reissued {
            notes.insert(0, format!("issued ({why})"));
        }
        // The key goes first: a service that reloads sees a new certificate only with its key.
        steps.sort_by_key(|s| match s {
            Step::Upload(u) if u.path.ends_with(".key") => 0,
            _ => 1,
        });
        Ok(Plan::change(notes.join("; "), steps))
    }

    async fn apply(_: &Args, steps: Vec<Step>, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        apply_steps(ctx, &steps, planned).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::typed;
    use serde_json::json;

    fn args() -> Args {
        typed::<Certificate>(json!({"dir": "/etc/etcd/tls", "name": "server", "cn": "e1",
            "sans": ["e1", "10.0.0.1"], "group": "etcd"}))
    }

    fn want() -> Files {
        Files {
            ca: "CA\n".into(),
            cert: "CERT\n".into(),
            key: "KEY\n".into(),
        }
    }

    fn sum(s: &str) -> String {
        crate::template::hex(&sha2::Sha256::digest(s.as_bytes()))
    }

    fn found(stat: &str, content: &str) -> Option<(PathState, String)> {
        Some((parse_stat(stat).unwrap(), sum(content)))
    }

    #[test]
    fn absent_files_are_uploaded_key_first_and_readable_only_by_the_group() {
        let plan = Certificate::plan(
            &args(),
            Observed {
                want: want(),
                found: vec![None, None, None],
                reissued: Some("new".into()),
            },
        )
        .unwrap();
        let steps = plan.todo.unwrap();
        let uploads: Vec<(&str, u32)> = steps
            .iter()
            .map(|s| match s {
                Step::Upload(u) => (u.path.as_str(), u.mode),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            uploads,
            [
                ("/etc/etcd/tls/server.key", 0o640),
                ("/etc/etcd/tls/ca.crt", 0o644),
                ("/etc/etcd/tls/server.crt", 0o644)
            ]
        );
        assert!(plan.outcome.msg.starts_with("issued (new)"));
        assert!(plan.outcome.diffs.is_empty());
    }

    #[test]
    fn the_same_files_need_nothing_and_a_renewed_certificate_replaces_two() {
        let same = vec![
            found("regular file|644|root|etcd", "CA\n"),
            found("regular file|644|root|etcd", "CERT\n"),
            found("regular file|640|root|etcd", "KEY\n"),
        ];
        let observed = |found| Observed {
            want: want(),
            found,
            reissued: None,
        };
        assert!(Certificate::plan(&args(), observed(same.clone()))
            .unwrap()
            .todo
            .is_none());
        let mut old = same;
        old[1] = found("regular file|644|root|etcd", "OLD CERT\n");
        old[2] = found("regular file|640|root|etcd", "OLD KEY\n");
        let steps = Certificate::plan(&args(), observed(old))
            .unwrap()
            .todo
            .unwrap();
        assert_eq!(steps.len(), 2);
    }

    #[test]
    fn a_key_others_can_read_is_chmodded() {
        let found = vec![
            found("regular file|644|root|etcd", "CA\n"),
            found("regular file|644|root|etcd", "CERT\n"),
            found("regular file|644|root|etcd", "KEY\n"),
        ];
        let steps = Certificate::plan(
            &args(),
            Observed {
                want: want(),
                found,
                reissued: None,
            },
        )
        .unwrap()
        .todo
        .unwrap();
        assert_eq!(
            steps,
            [Step::run(
                "setting mode 0640",
                "chmod 640 -- /etc/etcd/tls/server.key"
            )]
        );
    }
}
