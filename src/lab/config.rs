use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::LabError;
use crate::inventory::{Inventory, Var, Vars, ALL};

/// The lab as the lab inventory describes it: `hactl_lab_*` vars of `all`, and its hosts.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub bridge: String,
    pub network: Ipv4Addr,
    pub prefix: u8,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub proxy_port: u16,
    /// Debian mirror for the base root file system and the hosts' apt; default: the host's.
    pub mirror: Option<String>,
    pub suite: String,
    pub private_key: PathBuf,
    pub known_hosts: PathBuf,
    pub hosts: Vec<LabHost>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabHost {
    pub name: String,
    pub address: Ipv4Addr,
}

impl LabConfig {
    pub fn from_inventory(inventory: &Inventory) -> Result<LabConfig, LabError> {
        let mut vars = Vars::new();
        if let Some(all) = inventory.groups.get(ALL) {
            vars.extend(all.inline_vars.clone());
            vars.extend(all.file_vars.clone());
        }
        let text = |key: &str, default: &str| -> Result<String, LabError> {
            match vars.get(key) {
                None => Ok(default.to_string()),
                Some(Var { value, origin }) => match value {
                    serde_json::Value::String(s) => Ok(s.clone()),
                    serde_json::Value::Number(n) => Ok(n.to_string()),
                    _ => Err(origin
                        .error(format!("{key} must be text, not {value}"))
                        .into()),
                },
            }
        };
        let network_text = text("hactl_lab_network", "10.213.0.0/24")?;
        let (network, prefix) = parse_cidr(&network_text).ok_or_else(|| {
            bad_var(
                &vars,
                "hactl_lab_network",
                format!("hactl_lab_network \"{network_text}\" is not an IPv4 network like 10.213.0.0/24 (prefix 8-29)"),
            )
        })?;
        let port_text = text("hactl_lab_proxy_port", "3142")?;
        let proxy_port = port_text.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
            bad_var(
                &vars,
                "hactl_lab_proxy_port",
                format!("hactl_lab_proxy_port \"{port_text}\" is not a port number"),
            )
        })?;
        let bridge = text("hactl_lab_bridge", "hactl0")?;
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ']) {
            return Err(bad_var(
                &vars,
                "hactl_lab_bridge",
                format!(
                    "hactl_lab_bridge \"{bridge}\" is not a valid interface name (1-15 characters)"
                ),
            ));
        }
        let state_dir = PathBuf::from(text("hactl_lab_state_dir", "/var/lib/hactl/lab")?);
        let mirror = match text("hactl_lab_mirror", "")? {
            m if m.is_empty() => None,
            m => Some(m.trim_end_matches('/').to_string()),
        };
        let mut config = LabConfig {
            bridge,
            network,
            prefix,
            cache_dir: PathBuf::from(text("hactl_lab_cache_dir", "/var/cache/hactl/lab")?),
            proxy_port,
            mirror,
            suite: text("hactl_lab_suite", "bookworm")?,
            private_key: state_dir.join("id_ed25519"),
            known_hosts: state_dir.join("known_hosts"),
            state_dir,
            hosts: vec![],
        };
        for name in inventory.hosts.keys() {
            config.hosts.push(config.host_from(inventory, name)?);
        }
        if config.hosts.is_empty() {
            return Err(LabError::Config(format!(
                "{}: the lab inventory lists no hosts",
                inventory.path.display()
            )));
        }
        if let Some(first) = config.hosts.first() {
            let connection = inventory.connection(&first.name)?;
            if let Some(key) = connection.private_key_file {
                config.private_key = key;
            }
            let known = text("hactl_known_hosts", "")?;
            if !known.is_empty() {
                config.known_hosts = PathBuf::from(known);
            }
        }
        Ok(config)
    }

    fn host_from(&self, inventory: &Inventory, name: &str) -> Result<LabHost, LabError> {
        if !valid_machine_name(name) {
            return Err(LabError::Config(format!(
                "{}: lab host \"{name}\" needs a name of at most 12 letters, digits and dashes (it names the machine and its vb-{name} link)",
                inventory.path.display()
            )));
        }
        let connection = inventory.connection(name)?;
        let vars = inventory.host_vars(name);
        let address: Ipv4Addr = connection.address.parse().map_err(|_| {
            bad_var(
                &vars,
                "ansible_host",
                format!(
                    "lab host \"{name}\" needs an IPv4 ansible_host, not \"{}\"",
                    connection.address
                ),
            )
        })?;
        if !self.contains(address) || address == self.gateway() || address == self.broadcast() {
            return Err(bad_var(
                &vars,
                "ansible_host",
                format!(
                    "lab host \"{name}\" has address {address}, outside the lab network {}/{} or taken by its bridge — pick a free address in it",
                    self.network, self.prefix
                ),
            ));
        }
        if let Some(other) = self.hosts.iter().find(|h| h.address == address) {
            return Err(bad_var(
                &vars,
                "ansible_host",
                format!(
                    "lab hosts \"{}\" and \"{name}\" share the address {address}",
                    other.name
                ),
            ));
        }
        Ok(LabHost {
            name: name.to_string(),
            address,
        })
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network)
    }

    /// The bridge's own address: the first of the network.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    pub fn host(&self, name: &str) -> Result<&LabHost, LabError> {
        self.hosts.iter().find(|h| h.name == name).ok_or_else(|| {
            LabError::Config(format!(
                "\"{name}\" is not a lab host — the lab has {}",
                self.hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    pub fn machines_dir(&self) -> PathBuf {
        self.state_dir.join("machines")
    }

    pub fn machine_dir(&self, host: &str) -> PathBuf {
        self.machines_dir().join(host)
    }

    pub fn proxy_dir(&self) -> PathBuf {
        self.state_dir.join("proxy")
    }

    pub fn base_dir(&self) -> PathBuf {
        self.cache_dir.join(format!("base-{}", self.suite))
    }

    pub fn apt_cache_dir(&self) -> PathBuf {
        self.cache_dir.join("apt")
    }

    /// The Debian mirror: `hactl_lab_mirror`, else the one this machine's apt uses.
    pub fn resolved_mirror(&self) -> Result<String, LabError> {
        match &self.mirror {
            Some(m) => Ok(m.clone()),
            None => host_mirror(&self.suite).ok_or_else(|| {
                LabError::Config(format!(
                    "this machine's apt sources name no http mirror for \"{}\" — set hactl_lab_mirror in the lab inventory",
                    self.suite
                ))
            }),
        }
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}:{}", self.gateway(), self.proxy_port)
    }
}

fn bad_var(vars: &Vars, key: &str, message: String) -> LabError {
    match vars.get(key) {
        Some(var) => var.origin.error(message).into(),
        None => LabError::Config(message),
    }
}

fn valid_machine_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 12
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
}

/// `10.213.0.0/24` → (network, prefix); host bits must be zero.
pub fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    if !(8..=29).contains(&prefix) {
        return None;
    }
    let mask = u32::MAX << (32 - u32::from(prefix));
    (u32::from(addr) & !mask == 0).then_some((addr, prefix))
}

/// A destination as `ip route` prints it: `10.0.0.0/8` or a single address (`/32`).
pub fn parse_route_dest(text: &str) -> Option<(Ipv4Addr, u8)> {
    match text.split_once('/') {
        Some((addr, prefix)) => {
            let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
            Some((addr.parse().ok()?, prefix))
        }
        None => Some((text.parse().ok()?, 32)),
    }
}

/// Whether two networks share any address.
pub fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let prefix = a.1.min(b.1);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(a.0) & mask == u32::from(b.0) & mask
}

/// The Debian mirror the host's own apt uses for `suite`, read from its sources.
pub fn host_mirror(suite: &str) -> Option<String> {
    let mut texts = vec![];
    for path in [Path::new("/etc/apt/sources.list")] {
        if let Ok(t) = std::fs::read_to_string(path) {
            texts.push(t);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let ext = path.extension().and_then(|e| e.to_str());
            if matches!(ext, Some("list") | Some("sources")) {
                if let Ok(t) = std::fs::read_to_string(&path) {
                    texts.push(t);
                }
            }
        }
    }
    texts.iter().find_map(|t| mirror_in(t, suite))
}

/// Finds the first http URI serving `suite` in one-line or deb822 apt sources.
fn mirror_in(text: &str, suite: &str) -> Option<String> {
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"deb") {
            let rest: Vec<&str> = words[1..]
                .iter()
                .filter(|w| !w.starts_with('['))
                .copied()
                .collect();
            if rest.len() >= 2 && rest[1] == suite && rest[0].starts_with("http://") {
                return Some(rest[0].trim_end_matches('/').to_string());
            }
        }
    }
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            })
        };
        let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
            continue;
        };
        if suites.iter().any(|s| s == suite) {
            if let Some(uri) = uris.iter().find(|u| u.starts_with("http://")) {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_rejects_host_bits_and_silly_prefixes() {
        assert_eq!(
            parse_cidr("10.213.0.0/24"),
            Some((Ipv4Addr::new(10, 213, 0, 0), 24))
        );
        assert_eq!(parse_cidr("10.213.0.1/24"), None);
        assert_eq!(parse_cidr("10.0.0.0/31"), None);
        assert_eq!(parse_cidr("nonsense"), None);
    }

    #[test]
    fn overlapping_networks_are_detected() {
        let lab = (Ipv4Addr::new(10, 213, 0, 0), 24);
        assert!(overlaps(lab, (Ipv4Addr::new(10, 0, 0, 0), 8)));
        assert!(overlaps(lab, (Ipv4Addr::new(10, 213, 0, 128), 25)));
        assert!(!overlaps(lab, (Ipv4Addr::new(10, 214, 0, 0), 24)));
        assert!(!overlaps(lab, (Ipv4Addr::new(192, 0, 2, 0), 24)));
    }

    #[test]
    fn route_destinations_parse_with_or_without_a_prefix() {
        assert_eq!(
            parse_route_dest("10.0.0.0/8"),
            Some((Ipv4Addr::new(10, 0, 0, 0), 8))
        );
        assert_eq!(
            parse_route_dest("192.0.2.1"),
            Some((Ipv4Addr::new(192, 0, 2, 1), 32))
        );
        assert_eq!(parse_route_dest("10.0.0.0/33"), None);
        assert_eq!(parse_route_dest("dev"), None);
        assert_eq!(parse_route_dest("default"), None);
    }

    #[test]
    fn mirror_is_found_in_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_in(deb822, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        let one_line = "deb [arch=amd64] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_in(one_line, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_in(one_line, "trixie"), None);
    }
}
