//! `package`: Debian/Ubuntu packages through apt — a list in one transaction, `apt-get update`
//! only when the package lists are older than `cache_valid_time`.

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
    pub name: Names,
    #[serde(default)]
    pub state: State,
    #[serde(default, deserialize_with = "de_bool")]
    pub update_cache: Option<bool>,
    #[serde(default, deserialize_with = "de_u64")]
    pub cache_valid_time: Option<u64>,
    #[serde(default, deserialize_with = "de_bool")]
    pub install_recommends: Option<bool>,
    /// Exit code of a policy-rc.d in place during the transaction: 101 = start no service.
    #[serde(default, deserialize_with = "de_u64")]
    pub policy_rc_d: Option<u64>,
}

pub struct Package;

const APT: &str = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 \
                   -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";

/// Installed packages and versions, from one `dpkg-query` (plus `apt-cache policy` for latest).
#[derive(Debug, Default)]
pub struct Installed {
    versions: std::collections::HashMap<String, String>,
    candidates: std::collections::HashMap<String, String>,
    lists_age: u64,
}

fn query_script(names: &[String], latest: bool) -> String {
    let list = names
        .iter()
        .map(|n| shell_quote(n))
        .collect::<Vec<_>>()
        .join(" ");
    let mut s = format!(
        "dpkg-query -W -f='${{Package}}\\t${{db:Status-Abbrev}}\\t${{Version}}\\n' -- {list} 2>/dev/null; \
         if ls /var/lib/apt/lists/*Packages* >/dev/null 2>&1; \
         then echo \"age $(( $(date +%s) - $(stat -c %Y /var/lib/apt/lists/partial) ))\"; \
         else echo 'age 999999999'; fi; "
    );
    if latest {
        s.push_str(&format!(
            "LC_ALL=C apt-cache policy -- {list} 2>/dev/null; "
        ));
    }
    s.push_str("true");
    s
}

fn parse_query(text: &str) -> Installed {
    let mut installed = Installed {
        versions: Default::default(),
        candidates: Default::default(),
        lists_age: u64::MAX,
    };
    let mut policy_of: Option<String> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() == 3 {
            if fields[1].starts_with("ii") {
                installed
                    .versions
                    .insert(fields[0].to_string(), fields[2].to_string());
            }
            continue;
        }
        if let Some(age) = line.strip_prefix("age ") {
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
}

impl Apt {
    fn verb(args: &Args) -> &'static str {
        match args.state {
            State::Absent => "remove",
            _ => "install",
        }
    }

    /// `apt-get install|remove -- PACKAGES`, with `--simulate` to only ask whether it would go.
    fn command(&self, args: &Args, simulate: bool) -> String {
        let list = self
            .packages
            .iter()
            .map(|n| shell_quote(n))
            .collect::<Vec<_>>()
            .join(" ");
        let recommends = match args.install_recommends {
            Some(false) => " --no-install-recommends",
            _ => "",
        };
        let simulate = if simulate { " --simulate" } else { "" };
        format!(
            "{APT}{simulate} {}{recommends} -- {list} >/dev/null",
            Apt::verb(args)
        )
    }

    fn script(&self, args: &Args) -> String {
        let mut steps = Vec::new();
        if self.update {
            steps.push(format!("{APT} update >/dev/null"));
        }
        if !self.packages.is_empty() {
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
        if names.is_empty() {
            return Ok(Installed::default());
        }
        let out = run(
            ctx,
            "reading installed packages",
            &query_script(&names, args.state == State::Latest),
        )
        .await?;
        Ok(parse_query(&out.stdout_text()))
    }

    fn plan(args: &Args, state: Installed) -> Result<Plan<Apt>> {
        if args.name.0.is_empty() {
            return Ok(Plan::nothing());
        }
        let mut packages: Vec<String> = Vec::new();
        for spec in &args.name.0 {
            let (name, pin) = split_pin(spec);
            let current = state.versions.get(name);
            let wanted = match args.state {
                State::Absent => current.is_some(),
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
        if packages.is_empty() {
            // Refreshing the package lists alone changes nothing a user would see.
            return Ok(Plan {
                outcome: Outcome::ok(),
                todo: update.then_some(Apt { update, packages }),
            });
        }
        let done = match args.state {
            State::Absent => "removed",
            _ => "installed",
        };
        let note = format!("{done} {}", packages.join(" "));
        Ok(Plan::change(note, Apt { update, packages }))
    }

    /// apt can tell, read-only, whether the transaction would go through — unless the package
    /// lists are to be refreshed first.
    async fn rehearse(args: &Args, apt: Apt, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        if !apt.packages.is_empty() && !apt.update {
            run(
                ctx,
                &format!("apt-get --simulate {}", Apt::verb(args)),
                &apt.command(args, true),
            )
            .await?;
        }
        Ok(planned)
    }

    async fn apply(args: &Args, apt: Apt, planned: Outcome, ctx: &Ctx<'_>) -> Result<Outcome> {
        run(
            ctx,
            &format!("apt-get {}", Apt::verb(args)),
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
                packages: vec!["curl".into(), "vim=2:9.0".into()]
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
                packages: vec![]
            })
        );
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
