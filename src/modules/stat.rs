//! `stat`: what is at a path — type, mode, owner, size, times, checksum — registered as
//! Ansible's `stat` (`st.stat.exists`, `st.stat.isdir`, `st.stat.mode`...). One `stat -c` and,
//! for a readable regular file, one checksum; it never changes anything.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::digest::Algorithm;
use super::{de_bool, fail, run, ArgsError, Ctx, Module, Outcome, Plan, Result};
use crate::ssh::shell_quote;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    #[serde(alias = "dest", alias = "name")]
    pub path: Option<String>,
    /// Report what a symbolic link points to rather than the link (default false).
    #[serde(default, deserialize_with = "de_bool")]
    pub follow: Option<bool>,
    /// Checksum a readable regular file (default true).
    #[serde(default, deserialize_with = "de_bool")]
    pub get_checksum: Option<bool>,
    /// Default sha1, as Ansible.
    #[serde(default, alias = "checksum", alias = "checksum_algo")]
    pub checksum_algorithm: Algorithm,
}

impl Args {
    fn path(&self) -> &str {
        self.path.as_deref().unwrap_or_default()
    }
}

pub struct Stat;

/// `stat -c`'s fields: raw mode (hex), ids and names, size, inode, device, links, blocks, block
/// size, and the times as seconds and as text (whose fraction the seconds lack).
const FORMAT: &str = "%f|%u|%g|%U|%G|%s|%i|%d|%h|%b|%o|%X|%Y|%Z|%x|%y|%z";

/// One command whose output is labelled lines: `stat:`, `access:` (r, w, x as 0/1),
/// `checksum:`, and for a link `target:` and `source:`; or `absent`.
fn script(args: &Args) -> String {
    let p = shell_quote(args.path());
    let follow = args.follow == Some(true);
    let (exists, stat, regular) = if follow {
        (format!("[ -e {p} ]"), "stat -L", format!("[ -f {p} ]"))
    } else {
        (
            format!("[ -e {p} ] || [ -L {p} ]"),
            "stat",
            format!("[ ! -L {p} ] && [ -f {p} ]"),
        )
    };
    let checksum = if args.get_checksum != Some(false) {
        format!(
            "if {regular} && [ -r {p} ]; then echo \"checksum:$({} < {p} | cut -d' ' -f1)\"; fi; ",
            args.checksum_algorithm.command()
        )
    } else {
        String::new()
    };
    let link = if follow {
        String::new()
    } else {
        format!(
            "if [ -L {p} ]; then echo \"target:$(readlink -- {p})\"; echo \"source:$(readlink -f -- {p})\"; fi; "
        )
    };
    format!(
        "if {exists}; then s=$({stat} -c '{FORMAT}' -- {p}) || exit 1; echo \"stat:$s\"; \
         a=; for t in r w x; do if [ -$t {p} ]; then a=${{a}}1; else a=${{a}}0; fi; done; echo \"access:$a\"; \
         {checksum}{link}else echo absent; fi"
    )
}

/// Seconds with the fraction `stat`'s text form shows (`2024-10-24 22:56:54.123456789 +0000`).
fn seconds(whole: &str, text: &str) -> Option<f64> {
    let whole: i64 = whole.parse().ok()?;
    let fraction = text
        .split_whitespace()
        .nth(1)
        .and_then(|clock| clock.split_once('.'))
        .map_or("0", |(_, f)| f);
    let fraction: f64 = format!("0.{fraction}").parse().ok()?;
    Some(whole as f64 + fraction)
}

/// Ansible's `stat` dictionary from the script's output.
fn describe(path: &str, output: &str) -> Option<Value> {
    if output.trim() == "absent" {
        return Some(json!({"exists": false}));
    }
    let field = |label: &str| {
        output
            .lines()
            .find_map(|l| l.strip_prefix(label)?.strip_prefix(':'))
    };
    let f: Vec<&str> = field("stat")?.splitn(17, '|').collect();
    let [raw, uid, gid, user, group, size, inode, dev, nlink, blocks, blksize, at, mt, ct, att, mtt, ctt] =
        f.as_slice()
    else {
        return None;
    };
    let raw = u32::from_str_radix(raw, 16).ok()?;
    let kind = raw & 0o170000;
    let bit = |b: u32| raw & b != 0;
    let number = |s: &str| s.parse::<u64>().ok();
    let access: Vec<bool> = field("access")?.chars().map(|c| c == '1').collect();
    let mut stat = Map::new();
    let mut put = |k: &str, v: Value| {
        stat.insert(k.to_string(), v);
    };
    put("exists", true.into());
    put("path", path.into());
    put("mode", format!("{:04o}", raw & 0o7777).into());
    put("isdir", (kind == 0o040000).into());
    put("ischr", (kind == 0o020000).into());
    put("isblk", (kind == 0o060000).into());
    put("isreg", (kind == 0o100000).into());
    put("isfifo", (kind == 0o010000).into());
    put("islnk", (kind == 0o120000).into());
    put("issock", (kind == 0o140000).into());
    put("uid", number(uid)?.into());
    put("gid", number(gid)?.into());
    put("size", number(size)?.into());
    put("inode", number(inode)?.into());
    put("dev", number(dev)?.into());
    put("nlink", number(nlink)?.into());
    put("blocks", number(blocks)?.into());
    put("block_size", number(blksize)?.into());
    put("atime", seconds(at, att)?.into());
    put("mtime", seconds(mt, mtt)?.into());
    put("ctime", seconds(ct, ctt)?.into());
    for (i, who) in ["usr", "grp", "oth"].iter().enumerate() {
        let shift = 6 - 3 * i as u32;
        put(&format!("r{who}"), bit(0o4 << shift).into());
        put(&format!("w{who}"), bit(0o2 << shift).into());
        put(&format!("x{who}"), bit(0o1 << shift).into());
    }
    put("isuid", bit(0o4000).into());
    put("isgid", bit(0o2000).into());
    put("readable", (access.first() == Some(&true)).into());
    put("writeable", (access.get(1) == Some(&true)).into());
    put("executable", (access.get(2) == Some(&true)).into());
    // `stat` prints UNKNOWN for an id with no name; Ansible leaves the name out.
    if *user != "UNKNOWN" {
        put("pw_name", (*user).into());
    }
    if *group != "UNKNOWN" {
        put("gr_name", (*group).into());
    }
    if let Some(sum) = field("checksum").filter(|s| !s.is_empty()) {
        put("checksum", sum.into());
    }
    if let (Some(target), Some(source)) = (field("target"), field("source")) {
        put("lnk_target", target.into());
        put("lnk_source", source.into());
    }
    Some(Value::Object(stat))
}

impl Module for Stat {
    const NAME: &'static str = "stat";
    type Args = Args;
    type Observed = String;
    type Todo = ();

    fn validate(args: &Args) -> std::result::Result<(), ArgsError> {
        match &args.path {
            Some(p) if !p.is_empty() => Ok(()),
            _ => Err(ArgsError::Invalid("give `path` (or `dest`, `name`)".into())),
        }
    }

    fn registers() -> Value {
        json!({"stat": {
            "exists": true, "path": "/", "mode": "0644", "isdir": false, "ischr": false,
            "isblk": false, "isreg": true, "isfifo": false, "islnk": false, "issock": false,
            "uid": 0, "gid": 0, "size": 0, "inode": 0, "dev": 0, "nlink": 1, "blocks": 0,
            "block_size": 4096, "atime": 0.0, "mtime": 0.0, "ctime": 0.0,
            "rusr": true, "wusr": true, "xusr": false, "rgrp": true, "wgrp": false,
            "xgrp": false, "roth": true, "woth": false, "xoth": false, "isuid": false,
            "isgid": false, "readable": true, "writeable": true, "executable": false,
            "pw_name": "root", "gr_name": "root", "checksum": "", "lnk_target": "",
            "lnk_source": "",
        }})
    }

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<String> {
        let out = run(ctx, &format!("stat {}", args.path()), &script(args)).await?;
        Ok(out.stdout_text())
    }

    /// Nothing to change: the outcome carries what was read.
    fn plan(args: &Args, output: String) -> Result<Plan<()>> {
        let Some(stat) = describe(args.path(), &output) else {
            return fail(format!(
                "stat {}: unexpected answer from the host: {}",
                args.path(),
                super::last_lines(&output, 3)
            ));
        };
        Ok(Plan {
            outcome: Outcome::ok().with_data(json!({ "stat": stat })),
            todo: None,
        })
    }

    async fn apply(_: &Args, _: (), planned: Outcome, _: &Ctx<'_>) -> Result<Outcome> {
        Ok(planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{typed, FakeRemote, TestHost};

    const FILE: &str = "stat:81a4|0|0|root|root|6|1234|64769|1|8|4096|1700000000|1700000001|1700000002|2023-11-14 22:13:20.250000000 +0000|2023-11-14 22:13:21.5 +0000|2023-11-14 22:13:22 +0000\naccess:110\nchecksum:f572d396fae9206628714fb2ce00f72e94f2258f\n";

    async fn stat(args: Value, answer: &str) -> (Value, Vec<String>) {
        let host = TestHost::new(FakeRemote::new().answer("%f|%u", answer));
        let outcome = host.check::<Stat>(args).await.unwrap();
        assert!(!outcome.changed);
        let data = outcome.data.unwrap_or_default();
        (data["stat"].clone(), host.remote.commands())
    }

    #[tokio::test]
    async fn a_regular_file_is_described_as_ansible_does() {
        let (st, commands) = stat(json!({"path": "/etc/x"}), FILE).await;
        assert_eq!(commands.len(), 1);
        assert!(commands[0].contains("sha1sum < /etc/x"), "{}", commands[0]);
        assert_eq!(st["exists"], true);
        assert_eq!(st["path"], "/etc/x");
        assert_eq!(st["mode"], "0644");
        assert_eq!(
            (st["isreg"].clone(), st["isdir"].clone()),
            (json!(true), json!(false))
        );
        assert_eq!(st["islnk"], false);
        assert_eq!((st["uid"].clone(), st["gid"].clone()), (json!(0), json!(0)));
        assert_eq!(
            (st["pw_name"].clone(), st["gr_name"].clone()),
            (json!("root"), json!("root"))
        );
        assert_eq!(st["size"], 6);
        assert_eq!(st["mtime"], 1700000001.5);
        assert_eq!(st["atime"], 1700000000.25);
        assert_eq!(st["ctime"], 1700000002.0);
        assert_eq!(st["checksum"], "f572d396fae9206628714fb2ce00f72e94f2258f");
        assert_eq!(
            (st["rusr"].clone(), st["woth"].clone()),
            (json!(true), json!(false))
        );
        assert_eq!(
            (st["readable"].clone(), st["executable"].clone()),
            (json!(true), json!(false))
        );
    }

    #[tokio::test]
    async fn an_absent_path_only_says_it_does_not_exist() {
        let (st, _) = stat(json!({"path": "/nope"}), "absent\n").await;
        assert_eq!(st, json!({"exists": false}));
    }

    #[tokio::test]
    async fn a_link_is_the_link_unless_followed() {
        let link = "stat:a1ff|0|0|root|root|4|1|1|1|0|4096|1|2|3|x|y|z\naccess:111\ntarget:../x\nsource:/etc/x\n";
        let (st, commands) = stat(json!({"path": "/etc/l"}), link).await;
        assert_eq!(
            (st["islnk"].clone(), st["isreg"].clone()),
            (json!(true), json!(false))
        );
        assert_eq!(st["mode"], "0777");
        assert_eq!(
            (st["lnk_target"].clone(), st["lnk_source"].clone()),
            (json!("../x"), json!("/etc/x"))
        );
        assert!(commands[0].contains("[ ! -L /etc/l ] && [ -f /etc/l ]"));
        let (_, commands) = stat(json!({"path": "/etc/l", "follow": true}), FILE).await;
        assert!(commands[0].contains("stat -L -c"), "{}", commands[0]);
        assert!(!commands[0].contains("readlink"));
    }

    #[tokio::test]
    async fn the_checksum_algorithm_is_chosen_or_the_checksum_skipped() {
        let (_, commands) = stat(json!({"path": "/x", "checksum_algorithm": "sha256"}), FILE).await;
        assert!(commands[0].contains("sha256sum < /x"));
        let (_, commands) = stat(json!({"path": "/x", "get_checksum": false}), FILE).await;
        assert!(!commands[0].contains("sum <"));
    }

    #[tokio::test]
    async fn what_coreutils_answers_is_read_back() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("f", &link).unwrap();
        let host = TestHost::new(crate::modules::fake::LocalRemote);
        let of = |path: &std::path::Path, follow: bool| {
            let args = json!({"path": path.display().to_string(), "follow": follow});
            let host = &host;
            async move { host.check::<Stat>(args).await.unwrap().data.unwrap()["stat"].clone() }
        };
        let st = of(&file, false).await;
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(st["mode"], "0640");
        assert_eq!(st["isreg"], true);
        assert_eq!(st["size"], 6);
        assert_eq!(st["uid"], meta.uid());
        assert_eq!(st["mtime"].as_f64().map(|t| t as i64), Some(meta.mtime()));
        assert_eq!(st["checksum"], "f572d396fae9206628714fb2ce00f72e94f2258f");
        let st = of(&link, false).await;
        assert_eq!(
            (st["islnk"].clone(), st["lnk_target"].clone()),
            (json!(true), json!("f"))
        );
        assert!(st.get("checksum").is_none());
        let st = of(&link, true).await;
        assert_eq!(
            (st["isreg"].clone(), st["mode"].clone()),
            (json!(true), json!("0640"))
        );
        assert_eq!(
            of(&dir.path().join("none"), false).await,
            json!({"exists": false})
        );
    }

    #[test]
    fn a_setuid_directory_owned_by_an_unknown_id_has_no_owner_name() {
        let dir = "stat:49ed|1001|1001|UNKNOWN|UNKNOWN|4096|1|1|2|8|4096|1|2|3|x|y|z\naccess:111\n";
        let st = describe("/d", dir).unwrap();
        assert_eq!(
            (st["isdir"].clone(), st["mode"].clone()),
            (json!(true), json!("4755"))
        );
        assert_eq!(st["isuid"], true);
        assert!(st.get("pw_name").is_none() && st.get("checksum").is_none());
        assert!(describe("/d", "stat:garbage\n").is_none());
    }

    #[test]
    fn path_may_be_called_dest_or_name_but_must_be_given() {
        assert_eq!(typed::<Stat>(json!({"name": "/a"})).path(), "/a");
        let err = crate::modules::args::parse::<Stat>(json!({"follow": true})).unwrap_err();
        assert_eq!(err.to_string(), "give `path` (or `dest`, `name`)");
        let spec = crate::modules::spec("stat").unwrap();
        assert!(spec.args.contains(&"dest") && spec.required.is_empty());
    }
}
