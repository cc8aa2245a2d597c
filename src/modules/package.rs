//! `package` (and Ansible's `apt`, with its argument names): Debian/Ubuntu packages through apt —
//! a list in one transaction, `apt-get update` only when the package lists are older than
//! `cache_valid_time` (default a day, where Ansible's `apt` refreshes them every time).

use serde::Deserialize;

use super::{de_bool, de_u64, run, Ctx, Module, Names, Outcome, Plan, Result};
use crate::ssh::shell_quote;

/// Package lists younger than this are fresh enough (seconds).
const DEFAULT_CACHE_VALID: u64 = 24 * 3600;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Installed, in any version (or the one pinned: `name=version`).
    #[default]
    Present,
    Absent,
    /// Installed, in the version apt's policy names the candidate.
    Latest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// None with `update_cache` or `autoremove` alone, as Ansible's `apt` allows.
    #[serde(default, alias = "pkg", alias = "package")]
    pub name: Names,
    #[serde(default)]
    pub state: State,
    #[serde(default, alias = "update-cache", deserialize_with = "de_bool")]
    pub update_cache: Option<bool>,
    #[serde(default, deserialize_with = "de_u64")]
    pub cache_valid_time: Option<u64>,
    #[serde(default, alias = "install-recommends", deserialize_with = "de_bool")]
    pub install_recommends: Option<bool>,
    /// Removal takes the configuration files too, and a package removed earlier whose
    /// configuration files remain counts as still there.
    #[serde(default, deserialize_with = "de_bool")]
    pub purge: Option<bool>,
    /// Packages installed as dependencies and needed no more go too (`--auto-remove`); alone,
    /// `apt-get autoremove`.
    #[serde(default, deserialize_with = "de_bool")]
    pub autoremove: Option<bool>,
    /// The release installs come from (`apt-get -t`).
    #[serde(default, alias = "default-release")]
    pub default_release: Option<String>,
    #[serde(
        default,
        alias = "allow-downgrade",
        alias = "allow_downgrades",
        alias = "allow-downgrades",
        deserialize_with = "de_bool"
    )]
    pub allow_downgrade: Option<bool>,
    /// Seconds to wait for another apt or dpkg to let go of its lock (default 300).
    #[serde(default, deserialize_with = "de_u64")]
    pub lock_timeout: Option<u64>,
    /// dpkg's options, comma-separated (default `force-confdef,force-confold`, as Ansible).
    #[serde(default)]
    pub dpkg_options: Option<String>,
    /// Accepted for Ansible's sake: hactl always uses apt-get.
    #[allow(dead_code)]
    #[serde(default, deserialize_with = "de_bool")]
    pub force_apt_get: Option<bool>,
    /// Exit code of a policy-rc.d in place during the transaction: 101 = start no service.
    #[serde(default, deserialize_with = "de_u64")]
    pub policy_rc_d: Option<u64>,
}

pub struct Package;

/// `apt-get` with the lock timeout and dpkg options `args` give.
fn apt_get(args: &Args) -> String {
    let options = args
        .dpkg_options
        .as_deref()
        .unwrap_or("force-confdef,force-confold");
    let mut s = format!(
        "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout={}",
        args.lock_timeout.unwrap_or(300)
    );
    for o in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        s.push_str(&format!(
            " -o Dpkg::Options::={}",
            shell_quote(&format!("--{o}"))
        ));
    }
    s
}

/// Installed packages and versions, from one `dpkg-query` (plus `apt-cache policy` for latest).
#[derive(Debug, Default)]
pub struct Installed {
    versions: std::collections::HashMap<String, String>,
    /// Removed, but their configuration files remain (dpkg's `rc`).
    configs: std::collections::HashSet<String>,
    candidates: std::collections::HashMap<String, String>,
    lists_age: u64,
    /// What `apt-get autoremove` would remove (asked only for `autoremove` without names).
    autoremovable: Vec<String>,
}

fn query_script(names: &[String], latest: bool, autoremove: bool) -> String {
    let list = names
        .iter()
        .map(|n| shell_quote(n))
        .collect::<Vec<_>>()
        .join(" ");
    let mut s = if names.is_empty() {
        String::new()
    } else {
        format!("dpkg-query -W -f='${{Package}}\\t${{db:Status-Abbrev}}\\t${{Version}}\\n' -- {list} 2>/dev/null; ")
    };
    s.push_str(
        "if ls /var/lib/apt/lists/*Packages* >/dev/null 2>&1; \
         then echo \"age $(( $(date +%s) - $(stat -c %Y /var/lib/apt/lists/partial) ))\"; \
         else echo 'age 999999999'; fi; ",
    );
    if latest {
        s.push_str(&format!(
            "LC_ALL=C apt-cache policy -- {list} 2>/dev/null; "
        ));
    }
    if autoremove {
        s.push_str("LC_ALL=C apt-get -q --simulate autoremove 2>/dev/null | sed -n 's/^Remv \\([^ ]*\\).*/autoremove \\1/p'; ");
    }
    s.push_str("true");
    s
}

fn parse_query(text: &str) -> Installed {
    let mut installed = Installed {
        lists_age: u64::MAX,
        ..Default::default()
    };
    let mut policy_of: Option<String> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() == 3 {
            if fields[1].starts_with("ii") {
                installed
                    .versions
                    .insert(fields[0].to_string(), fields[2].to_string());
            } else if fields[1].starts_with("rc") {
                installed.configs.insert(fields[0].to_string());
            }
            continue;
        }
        if let Some(package) = line.strip_prefix("autoremove ") {
            installed.autoremovable.push(package.trim().to_string());
        } else if let Some(age) = line.strip_prefix("age ") {
            installed.lists_age = age.trim().parse().unwrap_or(u64::MAX);
        } else if !line.starts_with(' ') && line.ends_with(':') {
            policy_of = Some(line.trim_end_matches(':').to_string());
        } else if let (Some(pkg), Some(c)) = (&policy_of, line.trim().strip_prefix("Candidate: ")) {
            installed
                .candidates
                .insert(pkg.clone(), c.trim().to_string());
        }
    }
    installed
}

/// `name=version` pins, as apt takes them.
fn split_pin(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    }
}

/// One apt transaction.
#[derive(Debug, PartialEq, Eq)]
pub struct Apt {
    /// The package lists are older than `cache_valid_time`: `apt-get update` first.
    pub update: bool,
    /// What to install or remove (as given, pins included).
    pub packages: Vec<String>,
    /// `apt-get autoremove` (`autoremove` without names, something to remove).
    pub autoremove: bool,
}

impl Apt {
    fn verb(&self, args: &Args) -> &'static str {
        match (
            self.packages.is_empty(),
            args.state,
            args.purge == Some(true),
        ) {
            (true, _, _) => "autoremove",
            (false, State::Absent, false) => "remove",
            (false, State::Absent, true) => "purge",
            (false, _, _) => "install",
        }
    }

    /// `apt-get install|remove|purge|autoremove -- PACKAGES`, with `--simulate` to only ask
    /// whether it would go.
    fn command(&self, args: &Args, simulate: bool) -> String {
        let mut words = vec![apt_get(args)];
        if simulate {
            words.push("--simulate".into());
        }
        let verb = self.verb(args);
        words.push(verb.into());
        if verb == "install" {
            if args.install_recommends == Some(false) {
                words.push("--no-install-recommends".into());
            }
            if let Some(release) = &args.default_release {
                words.push(format!("-t {}", shell_quote(release)));
            }
            if args.allow_downgrade == Some(true) {
                words.push("--allow-downgrades".into());
            }
        }
        if verb == "autoremove" && args.purge == Some(true) {
            words.push("--purge".into());
        }
        if verb != "autoremove" && args.autoremove == Some(true) {
            words.push("--auto-remove".into());
        }
        words.push("--".into());
        words.extend(self.packages.iter().map(|n| shell_quote(n)));
        words.push(">/dev/null".into());
        words.join(" ")
    }

    fn script(&self, args: &Args) -> String {
        let mut steps = Vec::new();
        if self.update {
            steps.push(format!("{} update >/dev/null", apt_get(args)));
        }
        if !self.packages.is_empty() || self.autoremove {
            let apt = self.command(args, false);
            steps.push(match args.policy_rc_d {
                None => apt,
                Some(code) => format!(
                    "{{ p=/usr/sbin/policy-rc.d; [ -e $p ] && mv -f $p $p.hactl-saved; \
                     printf '#!/bin/sh\\nexit {code}\\n' > $p && chmod 755 $p; {apt}; rc=$?; \
                     rm -f $p; [ -e $p.hactl-saved ] && mv -f $p.hactl-saved $p; exit $rc; }}"
                ),
            });
        }
        steps.join(" && ")
    }
}

fn names(args: &Args) -> Vec<String> {
    args.name
        .0
        .iter()
        .map(|s| split_pin(s).0.to_string())
        .collect()
}

impl Module for Package {
    const NAME: &'static str = "package";
    type Args = Args;
    type Observed = Installed;
    type Todo = Apt;

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Installed> {
        let names = names(args);
        let autoremove = names.is_empty() && args.autoremove == Some(true);
        if names.is_empty() && !autoremove && args.update_cache != Some(true) {
            return Ok(Installed::default());
        }
        let out = run(
            ctx,
            "reading installed packages",
            &query_script(&names, args.state == State::Latest, autoremove),
        )
        .await?;
        Ok(parse_query(&out.stdout_text()))
    }

    fn plan(args: &Args, state: Installed) -> Result<Plan<Apt>> {
        let mut packages: Vec<String> = Vec::new();
        for spec in &args.name.0 {
            let (name, pin) = split_pin(spec);
            let current = state.versions.get(name);
            let wanted = match args.state {
                State::Absent => {
                    current.is_some() || (args.purge == Some(true) && state.configs.contains(name))
                }
                State::Present => match (current, pin) {
                    (None, _) => true,
                    (Some(v), Some(p)) => v != p,
                    (Some(_), None) => false,
                },
                State::Latest => match (current, state.candidates.get(name)) {
                    (None, _) => true,
                    (Some(v), Some(c)) => c != "(none)" && v != c,
                    (Some(_), None) => false,
                },
            };
            if wanted {
                packages.push(spec.clone());
            }
        }
        let valid = args.cache_valid_time.unwrap_or(DEFAULT_CACHE_VALID);
        let update = args.update_cache == Some(true) && state.lists_age > valid
            || (!packages.is_empty() && args.state != State::Absent && state.lists_age > valid);
        let autoremove = args.name.0.is_empty() && !state.autoremovable.is_empty();
        if autoremove {
            let note = format!("autoremoved {}", state.autoremovable.join(" "));
            return Ok(Plan::change(
                note,
                Apt {
                    update,
                    packages,
                    autoremove,
                },
            ));
        }
        if packages.is_empty() {
            // Refreshing the package lists alone changes nothing a user would see.
            return Ok(Plan {
                outcome: Outcome::ok(),
                todo: update.then_some(Apt {
                    update,
                    packages,
                    autoremove,
                }),
            });
        }
        let done = match (args.state, args.purge == Some(true)) {
            (State::Absent, false) => "removed",
            (State::Absent, true) => "purged",
            _ => "installed",
        };
        let note = format!("{done} {}", packages.join(" "));
        Ok(Plan::change(
            note,
            Apt {
                update,
                packages,
                autoremove,
            },
        ))
    }

    /// apt can tell, read-only, whether the transaction would go through — unless the package
    /// lists are to be refreshed first.
    async fn rehearse(args: &Args, apt: Apt, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        if (!apt.packages.is_empty() || apt.autoremove) && !apt.update {
            run(
                ctx,
                &format!("apt-get --simulate {}", apt.verb(args)),
                &apt.command(args, true),
            )
            .await?;
        }
        Ok(planned)
    }

    async fn apply(args: &Args, apt: Apt, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        run(
            ctx,
            &format!("apt-get {}", apt.verb(args)),
            &apt.script(args),
        )
        .await?;
        Ok(planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{output, typed, FakeRemote, TestHost};
    use serde_json::json;

    #[test]
    fn installed_versions_and_candidates_are_read() {
        let text = "curl\tii \t7.88.1-10\nvim\tun \t\nage 120\ncurl:\n  Installed: 7.88.1-10\n  Candidate: 7.88.1-11\n";
        let s = parse_query(text);
        assert_eq!(
            s.versions.get("curl").map(String::as_str),
            Some("7.88.1-10")
        );
        assert!(!s.versions.contains_key("vim"));
        assert_eq!(
            s.candidates.get("curl").map(String::as_str),
            Some("7.88.1-11")
        );
        assert_eq!(s.lists_age, 120);
    }

    fn plan(args: serde_json::Value, query: &str) -> Plan<Apt> {
        Package::plan(&typed::<Package>(args), parse_query(query)).unwrap()
    }

    const FRESH: &str = "age 60\n";

    #[test]
    fn absent_packages_are_installed_in_one_transaction() {
        let p = plan(json!({"name": ["curl", "vim=2:9.0"]}), FRESH);
        assert_eq!(p.outcome, Outcome::changed("installed curl vim=2:9.0"));
        let apt = p.todo.unwrap();
        assert_eq!(
            apt,
            Apt {
                update: false,
                packages: vec!["curl".into(), "vim=2:9.0".into()],
                autoremove: false,
            }
        );
        let args = typed::<Package>(json!({"name": "curl", "install_recommends": false}));
        assert!(apt
            .script(&args)
            .ends_with("install --no-install-recommends -- curl vim=2:9.0 >/dev/null"));
    }

    #[test]
    fn installed_packages_need_nothing_unless_the_pin_differs() {
        let installed = "curl\tii \t7.88\nvim\tii \t2:9.1\nage 60\n";
        assert!(plan(json!({"name": "curl,vim"}), installed).todo.is_none());
        let p = plan(json!({"name": ["curl", "vim=2:9.0"]}), installed);
        assert_eq!(p.outcome.msg, "installed vim=2:9.0");
    }

    #[test]
    fn old_package_lists_are_refreshed_first_and_alone_change_nothing() {
        let p = plan(json!({"name": "curl"}), "age 999999999\n");
        assert!(p.todo.unwrap().update);
        let p = plan(
            json!({"name": "curl", "update_cache": true}),
            "curl\tii \t7.88\nage 999999\n",
        );
        assert_eq!(p.outcome, Outcome::ok());
        assert_eq!(
            p.todo,
            Some(Apt {
                update: true,
                packages: vec![],
                autoremove: false,
            })
        );
        // Ansible's `apt: update_cache=yes` alone: the lists are read, not the packages.
        let alone = typed::<Package>(json!({"update_cache": "yes", "cache_valid_time": 3600}));
        let commands = query_script(&names(&alone), false, false);
        assert!(!commands.contains("dpkg-query"), "{commands}");
        let p = plan(
            json!({"update_cache": true, "cache_valid_time": 3600}),
            "age 7200\n",
        );
        assert_eq!(p.outcome, Outcome::ok());
        assert!(p.todo.unwrap().update);
        assert!(plan(
            json!({"update_cache": true, "cache_valid_time": 3600}),
            "age 60\n"
        )
        .todo
        .is_none());
    }

    #[test]
    fn apts_own_argument_names_shape_the_transaction() {
        let p = plan(
            json!({"pkg": ["curl=7.0"], "default_release": "bookworm-backports",
                   "allow_downgrade": true, "install_recommends": "no", "lock_timeout": 60,
                   "dpkg_options": "force-confnew", "force_apt_get": true}),
            "curl\tii \t7.88\nage 60\n",
        );
        assert_eq!(p.outcome.msg, "installed curl=7.0");
        let args = typed::<Package>(
            json!({"package": "curl", "default_release": "bookworm-backports",
                   "allow_downgrade": true, "install_recommends": "no", "lock_timeout": 60,
                   "dpkg_options": "force-confnew"}),
        );
        let script = p.todo.unwrap().script(&args);
        assert_eq!(
            script,
            "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=60 \
             -o Dpkg::Options::=--force-confnew install --no-install-recommends \
             -t bookworm-backports --allow-downgrades -- curl=7.0 >/dev/null"
        );
    }

    #[test]
    fn purge_takes_configuration_files_left_by_an_earlier_removal() {
        let left = "tree\trc \t\nage 60\n";
        assert!(plan(json!({"name": "tree", "state": "absent"}), left)
            .todo
            .is_none());
        let p = plan(
            json!({"name": "tree", "state": "absent", "purge": true, "autoremove": true}),
            left,
        );
        assert_eq!(p.outcome, Outcome::changed("purged tree"));
        let args = typed::<Package>(json!({"name": "tree", "state": "absent", "purge": true,
                                           "autoremove": true}));
        assert!(p
            .todo
            .unwrap()
            .script(&args)
            .ends_with(" purge --auto-remove -- tree >/dev/null"));
    }

    #[test]
    fn autoremove_alone_removes_what_apt_would() {
        let simulated = "age 60\nautoremove libfoo1\nautoremove libbar2\n";
        assert_eq!(parse_query(simulated).autoremovable, ["libfoo1", "libbar2"]);
        let p = plan(json!({"autoremove": true, "purge": true}), simulated);
        assert_eq!(p.outcome, Outcome::changed("autoremoved libfoo1 libbar2"));
        let args = typed::<Package>(json!({"autoremove": true, "purge": true}));
        assert!(p
            .todo
            .unwrap()
            .script(&args)
            .ends_with(" autoremove --purge -- >/dev/null"));
        assert!(plan(json!({"autoremove": true}), "age 60\n").todo.is_none());
    }

    #[test]
    fn latest_follows_the_candidate_and_absent_removes() {
        let text = "curl\tii \t7.88.1-10\nage 120\ncurl:\n  Installed: 7.88.1-10\n  Candidate: 7.88.1-11\n";
        assert_eq!(
            plan(json!({"name": "curl", "state": "latest"}), text)
                .outcome
                .msg,
            "installed curl"
        );
        assert_eq!(
            plan(json!({"name": "curl", "state": "absent"}), text)
                .outcome
                .msg,
            "removed curl"
        );
        assert!(plan(json!({"name": "vim", "state": "absent"}), text)
            .todo
            .is_none());
    }

    #[tokio::test]
    async fn check_mode_asks_apt_to_simulate_and_installs_nothing() {
        let host = TestHost::new(FakeRemote::new().answer("dpkg-query", FRESH));
        let planned = host
            .check::<Package>(json!({"name": "curl"}))
            .await
            .unwrap();
        assert_eq!(planned, Outcome::changed("installed curl"));
        let commands = host.remote.commands();
        assert_eq!(commands.len(), 2, "{commands:?}");
        assert!(
            commands[1].contains(" --simulate install -- curl"),
            "{commands:?}"
        );

        let refused = TestHost::new(
            FakeRemote::new()
                .answer("dpkg-query", FRESH)
                .answer_with("--simulate", |_, _| {
                    output(100, "", "E: Unable to locate package curl")
                }),
        );
        let err = refused
            .check::<Package>(json!({"name": "curl"}))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("Unable to locate package"),
            "{err}"
        );
    }
}
