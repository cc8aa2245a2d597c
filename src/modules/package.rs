//! `package`: Debian/Ubuntu packages through apt — a list in one transaction, `apt-get update`
//! only when the package lists are older than `cache_valid_time`.

use serde::Deserialize;

use super::{de_bool, de_u64, run, Ctx, Names, Outcome, Result, Spec};
use crate::ssh::shell_quote;

pub const SPEC: Spec = Spec {
    name: "package",
    args: &[
        "name",
        "state",
        "update_cache",
        "cache_valid_time",
        "install_recommends",
        "policy_rc_d",
    ],
    required: &["name"],
    free_form: false,
};

/// Package lists younger than this are fresh enough (seconds).
const DEFAULT_CACHE_VALID: u64 = 24 * 3600;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
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

const APT: &str = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 \
                   -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";

/// Installed packages and versions, from one `dpkg-query` (plus `apt-cache policy` for latest).
struct Installed {
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

pub async fn run_package(args: &Args, ctx: &Ctx<'_>) -> Result<Outcome> {
    let names: Vec<String> = args
        .name
        .0
        .iter()
        .map(|s| split_pin(s).0.to_string())
        .collect();
    if names.is_empty() {
        return Ok(Outcome::ok());
    }
    let out = run(
        ctx,
        "reading installed packages",
        &query_script(&names, args.state == State::Latest),
    )
    .await?;
    let state = parse_query(&out.stdout_text());
    let mut todo: Vec<String> = Vec::new();
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
            todo.push(spec.clone());
        }
    }
    let valid = args.cache_valid_time.unwrap_or(DEFAULT_CACHE_VALID);
    let stale = args.update_cache == Some(true) && state.lists_age > valid
        || (!todo.is_empty() && args.state != State::Absent && state.lists_age > valid);
    if todo.is_empty() && !stale {
        return Ok(Outcome::ok());
    }
    let list = todo
        .iter()
        .map(|n| shell_quote(n))
        .collect::<Vec<_>>()
        .join(" ");
    let (verb, note) = match args.state {
        State::Absent => ("remove", format!("removed {}", todo.join(" "))),
        _ => ("install", format!("installed {}", todo.join(" "))),
    };
    let recommends = match args.install_recommends {
        Some(false) => " --no-install-recommends",
        _ => "",
    };
    if ctx.check {
        if todo.is_empty() {
            return Ok(Outcome::ok());
        }
        if !stale {
            // apt can tell, read-only, whether the transaction would go through.
            run(
                ctx,
                &format!("apt-get --simulate {verb}"),
                &format!("{APT} --simulate {verb}{recommends} -- {list} >/dev/null"),
            )
            .await?;
        }
        return Ok(Outcome::changed(note));
    }
    let mut script = String::new();
    if stale {
        script.push_str(&format!("{APT} update >/dev/null"));
    }
    if !todo.is_empty() {
        if !script.is_empty() {
            script.push_str(" && ");
        }
        let apt = format!("{APT} {verb}{recommends} -- {list} >/dev/null");
        match args.policy_rc_d {
            None => script.push_str(&apt),
            Some(code) => script.push_str(&format!(
                "{{ p=/usr/sbin/policy-rc.d; [ -e $p ] && mv -f $p $p.hactl-saved; \
                 printf '#!/bin/sh\\nexit {code}\\n' > $p && chmod 755 $p; {apt}; rc=$?; \
                 rm -f $p; [ -e $p.hactl-saved ] && mv -f $p.hactl-saved $p; exit $rc; }}"
            )),
        }
    }
    run(ctx, &format!("apt-get {verb}"), &script).await?;
    // Refreshing the package lists alone changes nothing a user would see.
    Ok(if todo.is_empty() {
        Outcome::ok()
    } else {
        Outcome::changed(note)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
