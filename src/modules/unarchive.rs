//! `unarchive`: a .tar (.gz, .xz, .bz2, ...) or .zip archive unpacked into a directory of the
//! host — from the role's `files/` (or a path on the control machine), or one already on the host
//! with `remote_src`. As Ansible decides "changed": GNU tar's `--diff` against `dest` for a tar
//! archive, the archive unpacked aside and compared with `dest` for a zip (see [`Found`]); files
//! in `dest` that the archive lacks are ignored. A control-machine archive travels on the
//! command's stdin, to a temporary file the command removes: once to compare, once to unpack.
//!
//! Where hactl differs from Ansible: check mode compares (Ansible skips a tar archive in check
//! mode); a zip is compared by content (see [`Found::diff`]); `mode` is octal only; no
//! `keep_newer`, `io_buffer_size`, `validate_certs` or URL `src`; `.tar.zst` needs the host's
//! tar to detect it.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    de_bool, fail, fix_attrs, owner_spec, parse_stat, run, ArgsError, Ctx, Mode, Module, Names,
    Outcome, PathState, Plan, Result,
};
use crate::ssh::shell_quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// A file in the role's `files/` or an absolute path on this machine; with `remote_src`, a
    /// path on the host.
    pub src: String,
    /// An existing directory on the host.
    pub dest: String,
    #[serde(default, deserialize_with = "de_bool")]
    pub remote_src: Option<bool>,
    /// A path whose existence means the archive was unpacked: nothing is sent or compared.
    pub creates: Option<String>,
    /// More options for `tar` (or `unzip`), one word per item.
    #[serde(default)]
    pub extra_opts: Vec<String>,
    /// Set on every unpacked path (directories too, as Ansible does).
    pub mode: Option<Mode>,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Only these members (names as the archive has them) / all but these (patterns).
    #[serde(default)]
    pub include: Names,
    #[serde(default)]
    pub exclude: Names,
    /// Register the archive's members as `files`.
    #[serde(default, deserialize_with = "de_bool")]
    pub list_files: Option<bool>,
    /// The archive's bytes, read by the engine unless `remote_src`.
    #[serde(skip)]
    pub source: Option<Vec<u8>>,
}

impl Args {
    fn remote(&self) -> bool {
        self.remote_src == Some(true)
    }

    fn manages_attrs(&self) -> bool {
        self.mode.is_some() || self.owner.is_some() || self.group.is_some()
    }

    /// The archive's bytes for the command's stdin: none when it is on the host.
    fn stdin(&self) -> Result<&[u8]> {
        match (&self.source, self.remote()) {
            (_, true) => Ok(b""),
            (Some(bytes), false) => Ok(bytes),
            (None, false) => fail(format!("unarchive: nothing read for `src` {}", self.src)),
        }
    }

    /// `dest` as `diff` and `tar -C` print it back: without a trailing slash.
    fn dest(&self) -> &str {
        match self.dest.trim_end_matches('/') {
            "" => "/",
            d => d,
        }
    }
}

pub struct Unarchive;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Tar,
    Zip,
}

impl Handler {
    /// Ansible's name for it, registered as `handler`.
    fn name(self) -> &'static str {
        match self {
            Handler::Tar => "TgzArchive",
            Handler::Zip => "ZipArchive",
        }
    }
}

fn words(items: &[String]) -> String {
    items
        .iter()
        .map(|w| format!(" {}", shell_quote(w)))
        .collect()
}

/// The commands for the archive at `$a`, by handler.
struct Commands {
    /// Run first, in the script's own shell: the zip's aside directory `$x`.
    setup: String,
    list: String,
    /// Prints what differs between the archive and `dest` (zip: the archive unpacked in `$x`).
    compare: String,
    unpack: String,
}

fn commands(args: &Args, handler: Handler) -> Commands {
    let dest = shell_quote(args.dest());
    let include = words(&args.include.0);
    match handler {
        Handler::Tar => {
            let opts = if args.extra_opts.is_empty() {
                String::new()
            } else {
                format!(" --show-transformed-names{}", words(&args.extra_opts))
            };
            let exclude: Vec<String> = args
                .exclude
                .0
                .iter()
                .map(|e| format!("--exclude={}", e.trim_end_matches('/')))
                .collect();
            let rest = format!("{opts}{}{include}", words(&exclude));
            Commands {
                setup: String::new(),
                list: format!("tar --list -f \"$a\"{rest}"),
                compare: format!("tar --diff -C {dest} -f \"$a\"{rest}"),
                unpack: format!("tar --extract -C {dest} -f \"$a\"{rest}"),
            }
        }
        Handler::Zip => {
            let exclude = if args.exclude.0.is_empty() {
                String::new()
            } else {
                format!(" -x{}", words(&args.exclude.0))
            };
            let opts = words(&args.extra_opts);
            let unzip =
                |into: &str| format!("unzip -qq -o{opts} \"$a\"{include}{exclude} -d {into}");
            Commands {
                setup: "x=$(mktemp -d) || exit 1; echo \"==tmp $x\"; ".into(),
                list: format!("unzip -Z1 \"$a\"{include}{exclude}"),
                // A zip that cannot be unpacked aside differs: unpacking it will say why.
                compare: format!(
                    "{} >/dev/null 2>&1 || echo 'unpacking aside failed'; diff -rq -- \"$x\" {dest}",
                    unzip("\"$x\"")
                ),
                unpack: unzip(&dest),
            }
        }
    }
}

/// Puts the archive at `$a` (the host's, or stdin's in a temporary file), says what is wrong
/// with it or leaves its handler in `$h`. Temporary files are removed on exit.
fn prelude(args: &Args) -> String {
    let (archive, creates) = if args.remote() {
        let creates = match &args.creates {
            Some(c) => format!(
                "[ -e {} ] && {{ echo '==skip'; exit 0; }}; ",
                shell_quote(c)
            ),
            None => String::new(),
        };
        (format!("a={}", shell_quote(&args.src)), creates)
    } else {
        (
            "a=$(mktemp) || exit 1; t=$a; cat > \"$a\" || exit 1".to_string(),
            String::new(),
        )
    };
    format!(
        "export LC_ALL=C; t= x= l=; trap 'rm -f ${{t:+\"$t\"}} ${{l:+\"$l\"}}; rm -rf ${{x:+\"$x\"}}' EXIT; \
         {creates}{archive}; \
         [ -f \"$a\" ] || {{ echo '==nosrc'; exit 0; }}; [ -s \"$a\" ] || {{ echo '==empty'; exit 0; }}; \
         [ -d {} ] || {{ echo '==nodest'; exit 0; }}; \
         if [ \"$(head -c 2 \"$a\")\" = PK ]; then h=zip; \
           command -v unzip >/dev/null 2>&1 || {{ echo '==notool unzip'; exit 0; }}; \
         else h=tar; \
           tar --version 2>/dev/null | head -n1 | grep -q GNU || {{ echo '==notool tar'; exit 0; }}; fi; \
         l=$(mktemp) || exit 1; ",
        shell_quote(args.dest())
    )
}

/// Lines of `$l` (the members) and the top folders, each path under `dest` once.
fn each_path(args: &Args, body: &str) -> String {
    format!(
        "{{ cat \"$l\"; grep / \"$l\" | cut -d/ -f1 | sort -u; }} | sed 's,^/*,,; s,/*$,,' | sort -u | \
         while IFS= read -r f; do [ -n \"$f\" ] || continue; p={}/\"$f\"; {body}; done",
        shell_quote(args.dest())
    )
}

/// One command: what the archive holds and how `dest` differs from it, in sections (`==list`,
/// `==diff`, `==attrs`) whose lines start with `|`; or one line saying why not (`==nodest`).
fn observe_script(args: &Args) -> String {
    let branch = |handler: Handler| {
        let c = commands(args, handler);
        format!(
            "{}if ! e=$({} 2>&1 >\"$l\"); then echo '==error'; printf '%s\\n' \"$e\" | sed 's/^/|/'; exit 0; fi; \
             echo '==list'; sed 's/^/|/' \"$l\"; echo '==diff'; {{ {}; }} 2>&1 | sed 's/^/|/'",
            c.setup, c.list, c.compare
        )
    };
    let attrs = if args.manages_attrs() {
        format!(
            "; echo '==attrs'; {}",
            each_path(
                args,
                "printf '|%s\\t' \"$f\"; if [ -e \"$p\" ] || [ -L \"$p\" ]; then stat -c '%F|%a|%U|%G' -- \"$p\"; else echo absent; fi"
            )
        )
    } else {
        String::new()
    };
    format!(
        "{}echo \"==uid $(id -u)\"; echo \"==handler $h\"; \
         if [ $h = zip ]; then {}; else {}; fi{attrs}; echo '==end'",
        prelude(args),
        branch(Handler::Zip),
        branch(Handler::Tar)
    )
}

/// What the host has, read by one command.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// `==nodest`, `==notool unzip`...: why nothing could be compared.
    problem: Option<String>,
    /// The problem's detail (`tar`'s words).
    detail: Vec<String>,
    uid: Option<u32>,
    handler: Option<Handler>,
    files: Vec<String>,
    /// What differs, unfiltered: `tar --diff`'s lines, or `diff -rq`'s between the zip unpacked
    /// aside (`tmp`) and `dest`. Where hactl differs from Ansible: for a zip Ansible compares
    /// each member's size, time, CRC and mode (from `zipinfo`) with `dest`; hactl compares
    /// contents, so only content, a missing file or a file of another type is a change.
    diff: Vec<String>,
    tmp: Option<String>,
    attrs: Vec<(String, Option<PathState>)>,
}

fn parse(output: &str) -> Found {
    let mut found = Found::default();
    let mut section = "";
    for line in output.lines() {
        if let Some(text) = line.strip_prefix('|') {
            match section {
                "list" => found.files.push(text.to_string()),
                "diff" => found.diff.push(text.to_string()),
                "attrs" => {
                    if let Some((path, stat)) = text.split_once('\t') {
                        found.attrs.push((path.to_string(), parse_stat(stat)));
                    }
                }
                _ => found.detail.push(text.to_string()),
            }
            continue;
        }
        let Some(marker) = line.strip_prefix("==") else {
            continue;
        };
        let (name, value) = marker.split_once(' ').unwrap_or((marker, ""));
        match name {
            "uid" => found.uid = value.parse().ok(),
            "handler" => {
                found.handler = Some(if value == "zip" {
                    Handler::Zip
                } else {
                    Handler::Tar
                })
            }
            "tmp" => found.tmp = Some(value.to_string()),
            "list" | "diff" | "attrs" | "end" => section = name,
            _ => {
                found.problem = Some(marker.to_string());
                section = "";
            }
        }
    }
    found
}

/// Whether a `tar --diff` line means `dest` lacks what the archive has: Ansible's rules (an
/// owner, group or mode to be set anyway is no difference; ids only count when run as root).
fn tar_differs(line: &str, args: &Args, root: bool) -> bool {
    if line.ends_with(": : Warning: Cannot stat: No such file or directory") {
        return false;
    }
    let always = [
        ": Mod time differs",
        ": Warning: Cannot stat: No such file or directory",
        ": Symlink differs",
        ": Contents differ",
        ": Size differs",
    ];
    (root && args.owner.is_none() && line.ends_with(": Uid differs"))
        || (root && args.group.is_none() && line.ends_with(": Gid differs"))
        || (args.mode.is_none() && line.ends_with(": Mode differs"))
        || always.iter().any(|s| line.ends_with(s))
        || line.contains(": Invalid owner")
        || line.contains(": Invalid group")
}

/// Whether a `diff -rq` line means `dest` lacks what the zip has: anything but a file only in
/// `dest`.
fn zip_differs(line: &str, tmp: &str) -> bool {
    match line.strip_prefix("Only in ") {
        Some(rest) => rest
            .strip_prefix(tmp)
            .is_some_and(|r| r.starts_with([':', '/'])),
        None => true,
    }
}

/// What to do: unpack, and set attributes, in one command with the archive on stdin.
#[derive(Debug, PartialEq, Eq)]
pub struct Todo {
    script: String,
}

impl Module for Unarchive {
    const NAME: &'static str = "unarchive";
    type Args = Args;
    type Observed = Found;
    type Todo = Todo;

    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        if args.src.contains("://") {
            return Err(ArgsError::Invalid(
                "src: a URL is not supported — fetch it with get_url, then unarchive it with remote_src: true".into(),
            ));
        }
        if !args.dest.starts_with('/') {
            return Err(ArgsError::Invalid(format!(
                "dest: an absolute path on the host, got {:?}",
                args.dest
            )));
        }
        if !args.include.0.is_empty() && !args.exclude.0.is_empty() {
            return Err(ArgsError::Invalid(
                "include and exclude are mutually exclusive".into(),
            ));
        }
        Ok(())
    }

    fn registers() -> Value {
        json!({"dest": "", "src": "", "handler": "TgzArchive", "files": []})
    }

    /// With `creates`, a cheap look first: an archive from here is not sent when it exists.
    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Found> {
        if let (Some(creates), false) = (&args.creates, args.remote()) {
            let script = format!("if [ -e {} ]; then echo '==skip'; fi", shell_quote(creates));
            let out = run(ctx, &format!("reading {creates}"), &script).await?;
            if out.stdout_text().trim() == "==skip" {
                return Ok(parse("==skip"));
            }
        }
        let out = ctx
            .remote
            .exec(&observe_script(args), args.stdin()?)
            .await?;
        if !out.success() {
            return fail(format!(
                "unarchive: reading {} on the host failed: {}",
                args.src,
                super::last_lines(&out.stderr_text(), 3)
            ));
        }
        Ok(parse(&out.stdout_text()))
    }

    fn plan(args: &Args, found: Found) -> Result<Plan<Todo>> {
        let (src, dest) = (&args.src, &args.dest);
        let detail = found.detail.join(" | ");
        match found.problem.as_deref() {
            None => {}
            Some("skip") => {
                return Ok(Plan {
                    outcome: Outcome {
                        msg: format!(
                            "skipped, since {} exists",
                            args.creates.as_deref().unwrap_or_default()
                        ),
                        ..Outcome::skipped()
                    },
                    todo: None,
                })
            }
            Some("nodest") => return fail(format!("Destination '{dest}' is not a directory")),
            Some("nosrc") => return fail(format!("Source '{src}' does not exist on the host")),
            Some("empty") => return fail(format!("Invalid archive '{src}', the file is 0 bytes")),
            Some("notool unzip") => {
                return fail(format!(
                "{src} is a zip archive: the host needs `unzip` to unpack it (apt install unzip)"
            ))
            }
            Some("notool tar") => {
                return fail(format!(
                    "{src}: GNU tar is required on the host to unpack it"
                ))
            }
            Some("error") => {
                return fail(format!("{src}: the host cannot read the archive: {detail}"))
            }
            Some(other) => return fail(format!("{src}: unexpected answer from the host: {other}")),
        }
        let Some(handler) = found.handler else {
            return fail(format!("{src}: no answer from the host"));
        };
        if found.files.is_empty() {
            return fail(format!(
                "{src}: found no files in the archive (empty archives are not supported)"
            ));
        }
        let root = found.uid == Some(0);
        let tmp = found.tmp.as_deref().unwrap_or_default();
        let differs: Vec<&String> = found
            .diff
            .iter()
            .filter(|l| match handler {
                Handler::Tar => tar_differs(l, args, root),
                Handler::Zip => zip_differs(l, tmp),
            })
            .collect();
        let unpack = !differs.is_empty();
        let (owner, group) = (args.owner.as_deref(), args.group.as_deref());
        let attrs_differ = found.attrs.iter().any(|(path, state)| {
            let full = format!("{}/{path}", args.dest());
            !fix_attrs(&full, state.as_ref(), args.mode, owner, group)
                .0
                .is_empty()
        });
        let mut data = json!({"dest": dest, "src": src, "handler": handler.name()});
        if args.list_files == Some(true) {
            data["files"] = found.files.clone().into();
        }
        if !unpack && !attrs_differ {
            return Ok(Plan {
                outcome: Outcome::ok().with_data(data),
                todo: None,
            });
        }
        let c = commands(args, handler);
        let mut script = prelude(args);
        if unpack {
            script.push_str(&format!("{} && ", c.unpack));
        }
        let mut fixes = Vec::new();
        if let Some(m) = args.mode {
            fixes.push(format!("chmod {:o} -- \"$p\"", m.0));
        }
        if let Some(spec) = owner_spec(owner, group) {
            fixes.push(format!("chown -h {} -- \"$p\"", shell_quote(&spec)));
        }
        if fixes.is_empty() {
            script.push_str("true");
        } else {
            let body = format!("{{ {}; }} || exit 1", fixes.join(" && "));
            script.push_str(&format!("{} >\"$l\" && {}", c.list, each_path(args, &body)));
        }
        let note = if unpack {
            format!("unpacked {src} into {dest}")
        } else {
            format!("{dest}: set the attributes of the unpacked files")
        };
        let mut plan = Plan::change(note, Todo { script });
        plan.outcome.data = Some(data);
        Ok(plan)
    }

    async fn apply(args: &Args, todo: Todo, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        let out = ctx.remote.exec(&todo.script, args.stdin()?).await?;
        if !out.success() {
            return fail(format!(
                "failed to unpack {} to {}: {}",
                args.src,
                args.dest,
                super::last_lines(&out.stderr_text(), 6)
            ));
        }
        Ok(planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{typed, FakeRemote, LocalRemote, Sent, TestHost};

    fn args(v: Value) -> Args {
        typed::<Unarchive>(v)
    }

    #[test]
    fn tar_diff_lines_count_as_ansible_counts_them() {
        let plain = args(json!({"src": "a.tgz", "dest": "/opt"}));
        let owned = args(json!({"src": "a.tgz", "dest": "/opt", "owner": "app", "mode": "0755"}));
        assert!(tar_differs("./b: Mod time differs", &plain, false));
        assert!(tar_differs(
            "tar: ./b: Warning: Cannot stat: No such file or directory",
            &plain,
            false
        ));
        assert!(!tar_differs(
            "tar: : Warning: Cannot stat: No such file or directory",
            &plain,
            false
        ));
        assert!(tar_differs("./b: Uid differs", &plain, true));
        assert!(
            !tar_differs("./b: Uid differs", &plain, false),
            "only root can set ids"
        );
        assert!(
            !tar_differs("./b: Uid differs", &owned, true),
            "owner is set anyway"
        );
        assert!(!tar_differs("./b: Mode differs", &owned, true));
        assert!(zip_differs("Files /tmp/x/a and /opt/a differ", "/tmp/x"));
        assert!(zip_differs("Only in /tmp/x/sub: a", "/tmp/x"));
        assert!(!zip_differs("Only in /opt: mine", "/tmp/x"));
    }

    fn found(diff: &[&str]) -> String {
        let lines: String = diff.iter().map(|l| format!("|{l}\n")).collect();
        format!("==uid 0\n==handler tar\n==list\n|./\n|./b\n==diff\n{lines}==end\n")
    }

    #[tokio::test]
    async fn the_archive_travels_on_stdin_and_is_unpacked_only_where_dest_differs() {
        let host =
            TestHost::new(FakeRemote::new().answer("==uid", &found(&["./b: Contents differ"])));
        let mut a = args(json!({"src": "app.tgz", "dest": "/opt/app", "list_files": true}));
        a.source = Some(b"ARCHIVE".to_vec());
        let outcome = crate::modules::execute::<Unarchive>(&a, &host.ctx(), false)
            .await
            .unwrap();
        assert_eq!(outcome.msg, "unpacked app.tgz into /opt/app");
        assert_eq!(
            outcome.data,
            Some(
                json!({"dest": "/opt/app", "src": "app.tgz", "handler": "TgzArchive", "files": ["./", "./b"]})
            )
        );
        let sent = host.remote.sent();
        let [Sent::Exec { stdin: first, .. }, Sent::Exec { script, stdin }] = sent.as_slice()
        else {
            panic!("{sent:?}")
        };
        assert_eq!(
            (first.as_slice(), stdin.as_slice()),
            (&b"ARCHIVE"[..], &b"ARCHIVE"[..])
        );
        assert!(
            script.contains("tar --extract -C /opt/app -f \"$a\""),
            "{script}"
        );
        let same = TestHost::new(FakeRemote::new().answer("==uid", &found(&[])));
        let outcome = crate::modules::execute::<Unarchive>(&a, &same.ctx(), false)
            .await
            .unwrap();
        assert!(!outcome.changed);
        assert_eq!(same.remote.commands().len(), 1);
    }

    #[tokio::test]
    async fn creates_spares_sending_the_archive_and_the_host_says_what_is_missing() {
        let host = TestHost::new(FakeRemote::new().answer("[ -e /opt/app/bin ]", "==skip\n"));
        let mut a = args(json!({"src": "app.tgz", "dest": "/opt/app", "creates": "/opt/app/bin"}));
        a.source = Some(b"ARCHIVE".to_vec());
        let outcome = crate::modules::execute::<Unarchive>(&a, &host.ctx(), true)
            .await
            .unwrap();
        assert!(outcome.skipped);
        assert_eq!(outcome.msg, "skipped, since /opt/app/bin exists");
        assert_eq!(host.remote.commands().len(), 1);
        let plan = |answer: &str| Unarchive::plan(&a, parse(answer)).unwrap_err().to_string();
        assert_eq!(
            plan("==nodest\n"),
            "Destination '/opt/app' is not a directory"
        );
        assert!(plan("==notool unzip\n").contains("needs `unzip`"));
        assert!(
            plan("==error\n|tar: This does not look like a tar archive\n")
                .ends_with("This does not look like a tar archive")
        );
        assert!(plan("==uid 0\n==handler tar\n==list\n==diff\n==end\n").contains("found no files"));
    }

    #[test]
    fn arguments_are_checked_naming_the_argument() {
        let err = |v| {
            crate::modules::args::parse::<Unarchive>(v)
                .unwrap_err()
                .to_string()
        };
        assert!(err(json!({"src": "a.tgz", "dest": "opt"})).starts_with("dest:"));
        assert!(
            err(json!({"src": "https://h/a.tgz", "dest": "/opt", "remote_src": true}))
                .starts_with("src:")
        );
        assert!(
            err(json!({"src": "a.tgz", "dest": "/opt", "include": "a", "exclude": "b"}))
                .contains("mutually exclusive")
        );
    }

    /// Builds an archive of `files` with this machine's tar or zip, in `dir`.
    fn archive(dir: &std::path::Path, name: &str, files: &[(&str, &str)]) -> Vec<u8> {
        let tree = dir.join("tree");
        for (path, text) in files {
            let p = tree.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let out = dir.join(name);
        let status = if name.ends_with(".zip") {
            std::process::Command::new("zip")
                .arg("-qr")
                .arg(&out)
                .arg(".")
                .current_dir(&tree)
                .status()
        } else {
            std::process::Command::new("tar")
                .arg("-caf")
                .arg(&out)
                .arg("-C")
                .arg(&tree)
                .arg(".")
                .status()
        };
        assert!(status.unwrap().success());
        std::fs::remove_dir_all(&tree).unwrap();
        std::fs::read(out).unwrap()
    }

    async fn unpack(a: &Args, check: bool) -> Outcome {
        let host = TestHost::new(LocalRemote);
        crate::modules::execute::<Unarchive>(a, &host.ctx(), check)
            .await
            .unwrap()
    }

    /// The scripts against this machine's GNU tar (and unzip, when it has one).
    #[tokio::test]
    async fn a_real_archive_is_unpacked_once_and_again_when_dest_changes() {
        let has_zip = ["zip", "unzip"].iter().all(|t| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        for name in [
            "app.tar",
            "app.tar.gz",
            "app.tar.xz",
            "app.tar.bz2",
            "app.zip",
        ] {
            if name.ends_with(".zip") && !has_zip {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("dest");
            std::fs::create_dir(&dest).unwrap();
            std::fs::write(dest.join("mine"), "not in the archive").unwrap();
            let bytes = archive(dir.path(), name, &[("bin/app", "v1\n"), ("README", "hi\n")]);
            let mut a =
                args(json!({"src": name, "dest": dest.display().to_string(), "list_files": true}));
            a.source = Some(bytes);
            let planned = unpack(&a, true).await;
            assert!(planned.changed, "{name}: {planned:?}");
            assert!(!dest.join("README").exists(), "{name}: check mode unpacked");
            assert!(unpack(&a, false).await.changed, "{name}");
            assert_eq!(
                std::fs::read_to_string(dest.join("bin/app")).unwrap(),
                "v1\n"
            );
            let again = unpack(&a, false).await;
            assert!(!again.changed, "{name}: {again:?}");
            let files = again.data.unwrap()["files"].clone();
            assert!(
                files
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f.as_str().unwrap().ends_with("bin/app")),
                "{name}: {files}"
            );
            std::fs::write(dest.join("bin/app"), "v2\n").unwrap();
            assert!(
                unpack(&a, true).await.changed,
                "{name}: a changed file is a difference"
            );
            unpack(&a, false).await;
            assert_eq!(
                std::fs::read_to_string(dest.join("bin/app")).unwrap(),
                "v1\n"
            );
            assert_eq!(
                std::fs::read_dir(&dest).unwrap().count(),
                3,
                "{name}: nothing left behind"
            );
        }
    }

    #[tokio::test]
    async fn a_mode_is_set_on_every_unpacked_path_and_then_is_no_change() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let bytes = archive(dir.path(), "a.tar.gz", &[("d/x", "x\n")]);
        let src = dir.path().join("a.tar.gz");
        std::fs::write(&src, &bytes).unwrap();
        let a = args(json!({
            "src": src.display().to_string(), "dest": dest.display().to_string(),
            "remote_src": true, "mode": "0750",
        }));
        assert!(unpack(&a, false).await.changed);
        let mode = |p: &str| {
            std::fs::metadata(dest.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!((mode("d"), mode("d/x")), (0o750, 0o750));
        assert!(!unpack(&a, false).await.changed);
        std::fs::set_permissions(dest.join("d/x"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let fixed = unpack(&a, false).await;
        assert_eq!(
            fixed.msg,
            format!(
                "{}: set the attributes of the unpacked files",
                dest.display()
            )
        );
        assert_eq!(mode("d/x"), 0o750);
    }
}
