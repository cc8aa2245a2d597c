//! Facts: what a role needs to know about a host, gathered once per run in one round trip.

use serde_json::{json, Value};

use crate::ssh::{Session, SshError};

const SCRIPT: &str = r#"[ -r /etc/os-release ] && . /etc/os-release
echo "os_id=${ID:-}"
echo "os_family=${ID_LIKE:-${ID:-}}"
echo "os_version=${VERSION_ID:-}"
echo "os_codename=${VERSION_CODENAME:-}"
echo "os_name=${PRETTY_NAME:-}"
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "hostname=$(hostname -s 2>/dev/null || hostname)"
echo "fqdn=$(hostname -f 2>/dev/null || hostname)"
echo "default_ipv4=$(ip -4 -o route get 1.0.0.0 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')"
echo "all_ipv4=$(hostname -I 2>/dev/null)"
echo "ipv4_addresses=$(ip -4 -o addr show 2>/dev/null | awk '{print $4 "," $2}' | tr '\n' ' ')"
echo "cpus=$(nproc 2>/dev/null || echo 1)"
echo "memory_mb=$(( $(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) / 1024 ))"
echo "service_manager=$(cat /proc/1/comm 2>/dev/null)"
echo "user=$(id -un)"
echo "home=${HOME:-}"
echo "path=${PATH:-}"
echo "shell=${SHELL:-}"
echo "date_time=$(date '+%Y %m %d %H %M %S %Z %z %s %A %B %j %V' 2>/dev/null)"
"#;

/// The host answered, but would not tell its facts: its own complaint (sudo asking for a
/// password, say).
#[derive(Debug, thiserror::Error)]
#[error("gathering facts failed: {0}")]
pub struct Refused(String);

/// Reads the facts of the host behind `session`: an SSH error when the host cannot be asked,
/// `Refused` when it answers with a failure.
pub async fn gather(session: &Session) -> Result<Result<Value, Refused>, SshError> {
    let out = session.exec(SCRIPT, b"").await?;
    if !out.success() {
        let why = out.stderr_text();
        return Ok(Err(Refused(crate::modules::last_lines(&why, 3))));
    }
    Ok(Ok(parse(&out.stdout_text())))
}

/// `10.0.0.5/24,eth0 ...` as {"10.0.0.5": {"prefix": 24, "interface": "eth0"}}: where a
/// floating address goes beside a host's own.
fn ipv4_addresses(value: &str) -> Value {
    let mut map = serde_json::Map::new();
    for item in value.split_whitespace() {
        let Some((cidr, interface)) = item.split_once(',') else {
            continue;
        };
        let Some((address, prefix)) = cidr.split_once('/') else {
            continue;
        };
        let Ok(prefix) = prefix.parse::<u8>() else {
            continue;
        };
        map.insert(
            address.to_string(),
            json!({"prefix": prefix, "interface": interface}),
        );
    }
    Value::Object(map)
}

fn parse(text: &str) -> Value {
    let mut facts = serde_json::Map::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let v = match key {
            "cpus" | "memory_mb" => json!(value.parse::<u64>().unwrap_or(0)),
            "all_ipv4" => json!(value.split_whitespace().collect::<Vec<_>>()),
            "ipv4_addresses" => ipv4_addresses(value),
            "os_family" => json!(value.split_whitespace().last().unwrap_or_default()),
            _ => json!(value),
        };
        facts.insert(key.to_string(), v);
    }
    // Release tarballs name architectures as Go does.
    let goarch = match facts.get("arch").and_then(Value::as_str) {
        Some("x86_64") => "amd64",
        Some("aarch64") => "arm64",
        Some("armv7l") => "armv7",
        Some(other) => other,
        None => "",
    }
    .to_string();
    facts.insert("goarch".into(), json!(goarch));
    // Without a default route, the first address is the best guess.
    if facts.get("default_ipv4").and_then(Value::as_str) == Some("") {
        let first = facts
            .get("all_ipv4")
            .and_then(|a| a.get(0))
            .cloned()
            .unwrap_or(json!(""));
        facts.insert("default_ipv4".into(), first);
    }
    Value::Object(facts)
}

/// Adds `control_address`: this machine's address as the host sees it (the source address the
/// kernel picks to reach it), for allowlists and pg_hba lines that name the control machine.
pub fn with_control_address(mut facts: Value, address: &str, port: u16) -> Value {
    let local = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect((address, port)).map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    if let Value::Object(map) = &mut facts {
        map.insert("control_address".into(), json!(local));
    }
    facts
}

/// Facts of the right shape for checking roles before any host is reached.
pub fn placeholder(host: &str) -> Value {
    json!({
        "os_id": "debian", "os_family": "debian", "os_version": "12", "os_codename": "bookworm",
        "os_name": "Debian GNU/Linux 12 (bookworm)", "arch": "x86_64", "goarch": "amd64", "kernel": "6.1.0",
        "hostname": host, "fqdn": host, "default_ipv4": "192.0.2.1", "all_ipv4": ["192.0.2.1"],
        "ipv4_addresses": {"192.0.2.1": {"prefix": 24, "interface": "eth0"}},
        "cpus": 2, "memory_mb": 2048, "service_manager": "systemd", "user": "root",
        "home": "/root", "path": "/usr/sbin:/usr/bin:/sbin:/bin", "shell": "/bin/bash",
        "date_time": "2026 01 02 03 04 05 UTC +0000 1767323045 Friday January 002 01",
        "control_address": "192.0.2.2",
    })
}

/// The facts under Ansible's names, without the `ansible_` prefix (`ansible_facts[...]`):
/// distribution, distribution_release, distribution_version, distribution_major_version,
/// os_family, hostname, fqdn, nodename, default_ipv4 (address, interface), all_ipv4_addresses,
/// architecture, kernel, processor_vcpus, processor_nproc, memtotal_mb, service_mgr, user_id.
pub fn ansible(facts: &Value) -> serde_json::Map<String, Value> {
    let text = |k: &str| {
        facts
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let capital = |s: String| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    let version = text("os_version");
    let address = text("default_ipv4");
    let interface = facts
        .get("ipv4_addresses")
        .and_then(|m| m.get(&address))
        .and_then(|a| a.get("interface"))
        .cloned()
        .unwrap_or(json!(""));
    let mut m = serde_json::Map::new();
    m.insert("distribution".into(), json!(capital(text("os_id"))));
    m.insert("distribution_release".into(), json!(text("os_codename")));
    m.insert(
        "distribution_major_version".into(),
        json!(version.split('.').next().unwrap_or_default()),
    );
    m.insert("distribution_version".into(), json!(version));
    m.insert("os_family".into(), json!(capital(text("os_family"))));
    m.insert("hostname".into(), json!(text("hostname")));
    m.insert("nodename".into(), json!(text("hostname")));
    m.insert("fqdn".into(), json!(text("fqdn")));
    m.insert(
        "default_ipv4".into(),
        json!({"address": address, "interface": interface}),
    );
    m.insert(
        "all_ipv4_addresses".into(),
        facts.get("all_ipv4").cloned().unwrap_or(json!([])),
    );
    m.insert("architecture".into(), json!(text("arch")));
    m.insert("kernel".into(), json!(text("kernel")));
    let cpus = facts.get("cpus").cloned().unwrap_or(json!(1));
    m.insert("processor_vcpus".into(), cpus.clone());
    m.insert("processor_nproc".into(), cpus);
    m.insert(
        "memtotal_mb".into(),
        facts.get("memory_mb").cloned().unwrap_or(json!(0)),
    );
    m.insert("service_mgr".into(), json!(text("service_manager")));
    m.insert("user_id".into(), json!(text("user")));
    m.insert(
        "lsb".into(),
        json!({
            "id": capital(text("os_id")), "codename": text("os_codename"),
            "release": version, "major_release": version.split('.').next().unwrap_or_default(),
            "description": text("os_name"),
        }),
    );
    let mut interfaces: Vec<String> = vec!["lo".into()];
    if let Some(Value::Object(addresses)) = facts.get("ipv4_addresses") {
        for a in addresses.values() {
            if let Some(i) = a.get("interface").and_then(Value::as_str) {
                if !interfaces.iter().any(|x| x == i) {
                    interfaces.push(i.to_string());
                }
            }
        }
    }
    m.insert("interfaces".into(), json!(interfaces));
    m.insert(
        "env".into(),
        json!({"HOME": text("home"), "PATH": text("path"), "SHELL": text("shell"),
               "USER": text("user"), "LOGNAME": text("user")}),
    );
    m.insert("date_time".into(), date_time(&text("date_time")));
    m
}

/// Ansible's `date_time` from the host's `date '+%Y %m %d %H %M %S %Z %z %s %A %B %j %V'`.
fn date_time(text: &str) -> Value {
    let f: Vec<&str> = text.split_whitespace().collect();
    let [y, mo, d, h, mi, sec, tz, offset, epoch, weekday, month, julian, week] = f.as_slice()
    else {
        return json!({});
    };
    json!({
        "year": y, "month": mo, "day": d, "hour": h, "minute": mi, "second": sec,
        "date": format!("{y}-{mo}-{d}"), "time": format!("{h}:{mi}:{sec}"),
        "tz": tz, "tz_offset": offset, "epoch": epoch, "weekday": weekday,
        "monthname": month, "julian": julian, "weeknumber": week,
        // Ansible's is in UTC; this is the host's time, with its offset unless it is UTC.
        "iso8601": if *offset == "+0000" {
            format!("{y}-{mo}-{d}T{h}:{mi}:{sec}Z")
        } else {
            format!("{y}-{mo}-{d}T{h}:{mi}:{sec}{offset}")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansible_names_of_a_debian_host() {
        let a = ansible(&placeholder("db1"));
        assert_eq!(a["distribution"], "Debian");
        assert_eq!(a["distribution_release"], "bookworm");
        assert_eq!(a["distribution_major_version"], "12");
        assert_eq!(a["os_family"], "Debian");
        assert_eq!(a["default_ipv4"]["address"], "192.0.2.1");
        assert_eq!(a["default_ipv4"]["interface"], "eth0");
        assert_eq!(a["processor_vcpus"], 2);
        assert_eq!(a["memtotal_mb"], 2048);
        assert_eq!(a["hostname"], "db1");
        assert_eq!(a["lsb"]["codename"], "bookworm");
        assert_eq!(a["interfaces"], json!(["lo", "eth0"]));
        assert_eq!(a["env"]["HOME"], "/root");
        assert_eq!(a["date_time"]["date"], "2026-01-02");
        assert_eq!(a["date_time"]["epoch"], "1767323045");
    }

    #[test]
    fn facts_are_typed() {
        let f = parse("os_id=debian\nos_family=debian\ncpus=4\nmemory_mb=3900\ndefault_ipv4=\nall_ipv4=10.0.0.5 10.0.0.6\n");
        assert_eq!(f["cpus"], 4);
        assert_eq!(f["default_ipv4"], "10.0.0.5");
        let f = parse("ipv4_addresses=127.0.0.1/8,lo 10.213.0.11/24,host0 \n");
        assert_eq!(f["ipv4_addresses"]["10.213.0.11"]["interface"], "host0");
        assert_eq!(f["ipv4_addresses"]["10.213.0.11"]["prefix"], 24);
        let keys: Vec<&String> = f.as_object().unwrap().keys().collect();
        for k in keys {
            assert!(placeholder("h").get(k).is_some(), "placeholder lacks {k}");
        }
    }
}
