//! One model of the stack: its members, their addresses and ports, the scope and the credentials,
//! computed once from the inventory and the `stack` role's defaults, the one place each is set.

pub mod etcd;
pub mod patroni;
pub mod tls;

use std::sync::Arc;

use indexmap::IndexMap;

use crate::inventory::Inventory;
use crate::roles::Defaults;
use crate::template::{self, HostData, World};

/// What a command cannot work with: the variable, where it was set, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StackError(String);

impl From<String> for StackError {
    fn from(s: String) -> StackError {
        StackError(s)
    }
}

impl crate::exit::Code for StackError {
    fn exit_code(&self) -> u8 {
        crate::exit::BAD_INPUT
    }
}

/// A PostgreSQL member with its Patroni.
#[derive(Debug, Clone)]
pub struct PgMember {
    pub name: String,
    pub address: String,
    pub pg_port: u16,
    pub api_port: u16,
}

impl PgMember {
    /// Patroni's REST API on this member, as the inventory (never the DCS) says.
    pub fn api_url(&self) -> String {
        format!("https://{}:{}", self.address, self.api_port)
    }
}

/// An etcd member.
#[derive(Debug, Clone)]
pub struct EtcdMember {
    /// Its host in the inventory.
    pub name: String,
    pub address: String,
    pub client_port: u16,
}

impl EtcdMember {
    pub fn client_url(&self) -> String {
        format!("https://{}:{}", self.address, self.client_port)
    }
}

/// One address for applications: HAProxy on the balancers (behind the VIP when there is one),
/// forwarding to the chosen member's PgBouncer.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `cluster_vip`, or the first balancer's address when the inventory sets no VIP.
    pub address: String,
    /// Whether the inventory asks for it (a VIP or a balancers group): then failover-test
    /// measures through it by default.
    pub declared: bool,
    /// The primary (read-write).
    pub rw_port: u16,
    /// Whether `address` is a floating IP that keepalived moves between the balancers.
    pub vip: bool,
    /// Whether the VIP follows the Patroni leader (`cluster_vip_follows_leader`).
    pub follows_leader: bool,
    /// The balancers' inventory names.
    pub balancers: Vec<String>,
}

/// pgBackRest's repository (roles pgbackrest and pgbackrest_repo).
#[derive(Debug, Clone)]
pub struct BackupRepo {
    /// The repository host's inventory name (`backup_repo_host`).
    pub host: String,
    pub stanza: String,
    /// The lock a backup takes on the repository host (timers and `hactl backup` alike).
    pub lock_file: String,
    /// Where `hactl restore-test` restores on the repository host, and its instance's port.
    pub drill_dir: String,
    pub drill_port: u16,
}

/// A monitoring host's Prometheus (role prometheus).
#[derive(Debug, Clone)]
pub struct MonitoringHost {
    pub name: String,
    pub address: String,
    pub prometheus_port: u16,
}

impl MonitoringHost {
    pub fn prometheus_url(&self) -> String {
        format!("https://{}:{}", self.address, self.prometheus_port)
    }
}

/// A user and its password; Debug never shows the password.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ********)", self.user)
    }
}

/// The stack as the inventory describes it.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The inventory group of the PostgreSQL members (`patroni_group`).
    pub postgres_group: String,
    pub scope: String,
    /// Patroni's key prefix in etcd (`/service/`).
    pub namespace: String,
    pub postgres: Vec<PgMember>,
    pub etcd: Vec<EtcdMember>,
    /// The balancers and the VIP, when the stack has balancers.
    pub endpoint: Option<Endpoint>,
    /// The backup repository, when the inventory has a backup (or monitoring) host.
    pub backup: Option<BackupRepo>,
    /// The monitoring hosts (`monitoring_group`), each with its Prometheus.
    pub monitoring: Vec<MonitoringHost>,
    /// hactl's own client certificate and the inventory's CA, on this machine.
    pub tls: tls::TlsFiles,
    /// Every host's variables, for the logins: a secret is read (or made) only when asked for.
    world: Arc<World>,
}

/// The logins the stack has.
#[derive(Debug, Clone, Copy)]
pub enum Login {
    /// Patroni's REST API, for unsafe methods.
    PatroniApi,
    Superuser,
    /// The role failover-test's writers log in as (not a superuser: PgBouncer refuses those).
    FailoverWriter,
    /// The monitoring endpoints' basic auth (Prometheus, Alertmanager, the exporters).
    Monitoring,
}

impl Stack {
    /// The model of `inventory` with the built-in `stack` role's defaults under it and
    /// `extra_vars` (`-e`) over it.
    pub fn load(
        inventory: &Inventory,
        extra_vars: &IndexMap<String, serde_json::Value>,
    ) -> Result<Stack, StackError> {
        let defaults = crate::roles::stack_defaults().map_err(|e| StackError(e.to_string()))?;
        let secrets = Arc::new(crate::secrets::SecretStore::of(inventory));
        let env = template::environment(Some(secrets));
        let world = world(inventory, &[&defaults], &[], extra_vars, &env, |_| {
            IndexMap::new()
        });
        let any = inventory.hosts.keys().next().cloned().unwrap_or_default();
        let read = Reader { world: &world };
        let group = |var: &str| -> Result<Vec<String>, StackError> {
            let name = read.string(&any, var)?;
            Ok(inventory.hosts_in(&name))
        };
        let postgres_group = read.string(&any, "patroni_group")?;
        let postgres = inventory
            .hosts_in(&postgres_group)
            .into_iter()
            .map(|h| {
                Ok(PgMember {
                    address: read.string(&h, "hactl_address")?,
                    pg_port: read.port(&h, "postgresql_port")?,
                    api_port: read.port(&h, "patroni_api_port")?,
                    name: h,
                })
            })
            .collect::<Result<_, StackError>>()?;
        let etcd = group("etcd_group")?
            .into_iter()
            .map(|h| {
                Ok(EtcdMember {
                    address: read.string(&h, "hactl_address")?,
                    client_port: read.port(&h, "etcd_client_port")?,
                    name: h,
                })
            })
            .collect::<Result<_, StackError>>()?;
        let endpoint = endpoint(inventory, &read, &any, &postgres_group)?;
        let repo_host = read.string(&any, "backup_repo_host")?;
        let backup = if repo_host.is_empty() {
            None
        } else {
            Some(BackupRepo {
                stanza: read.string(&any, "backup_stanza")?,
                lock_file: read.string(&any, "backup_lock_file")?,
                drill_dir: read.string(&any, "backup_drill_dir")?,
                drill_port: read.port(&any, "backup_drill_port")?,
                host: repo_host,
            })
        };
        let monitoring = group("monitoring_group")?
            .into_iter()
            .map(|h| {
                Ok(MonitoringHost {
                    address: read.string(&h, "hactl_address")?,
                    prometheus_port: read.port(&h, "prometheus_port")?,
                    name: h,
                })
            })
            .collect::<Result<_, StackError>>()?;
        let pki = crate::pki::Pki::of(inventory);
        let (cert, key) = pki.paths(crate::pki::CONTROL, crate::pki::CONTROL_CERT);
        Ok(Stack {
            tls: tls::TlsFiles {
                ca: pki.ca_path(),
                cert,
                key,
            },
            postgres_group,
            scope: read.string(&any, "patroni_scope")?,
            namespace: read.string(&any, "patroni_namespace")?,
            postgres,
            etcd,
            endpoint,
            backup,
            monitoring,
            world,
        })
    }

    /// A login's user and password (a password nobody gave is made once in the secret store).
    pub fn login(&self, login: Login) -> Result<Credentials, StackError> {
        let (user, password) = match login {
            Login::PatroniApi => ("patroni_api_username", "patroni_api_password"),
            Login::Superuser => (
                "postgresql_superuser_username",
                "postgresql_superuser_password",
            ),
            Login::FailoverWriter => ("failover_postgresql_user", "failover_postgresql_password"),
            Login::Monitoring => ("monitoring_username", "monitoring_password"),
        };
        let read = Reader { world: &self.world };
        let any = self.world.hosts.keys().next().cloned().unwrap_or_default();
        Ok(Credentials {
            user: read.string(&any, user)?,
            password: read.string(&any, password)?,
        })
    }

    /// hactl's client certificate and the CA, read: made by the first apply.
    pub fn client_tls(&self) -> Result<tls::ClientTls, StackError> {
        self.tls
            .load(" — `hactl apply` makes the inventory's CA and hactl's certificate")
            .map_err(|e| StackError(e.to_string()))
    }

    pub fn pg_member(&self, name: &str) -> Option<&PgMember> {
        self.postgres.iter().find(|m| m.name == name)
    }

    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.etcd.iter().map(EtcdMember::client_url).collect()
    }

    /// Patroni's leader key in etcd.
    pub fn leader_key(&self) -> String {
        format!(
            "{}/{}/leader",
            self.namespace.trim_end_matches('/'),
            self.scope
        )
    }
}

/// The balancers (group `balancer_group`, or the PostgreSQL hosts) and the VIP.
fn endpoint(
    inventory: &Inventory,
    read: &Reader,
    any: &str,
    postgres_group: &str,
) -> Result<Option<Endpoint>, StackError> {
    let group = read.string(any, "balancer_group")?;
    let mut hosts = inventory.hosts_in(&group);
    let grouped = !hosts.is_empty();
    if hosts.is_empty() {
        hosts = inventory.hosts_in(postgres_group);
    }
    let Some(first) = hosts.first() else {
        return Ok(None);
    };
    let vip = read.string(any, "cluster_vip")?;
    Ok(Some(Endpoint {
        address: if vip.is_empty() {
            read.string(first, "hactl_address")?
        } else {
            vip.clone()
        },
        declared: grouped || !vip.is_empty(),
        rw_port: read.port(any, "haproxy_rw_port")?,
        vip: !vip.is_empty(),
        follows_leader: read.string(any, "cluster_vip_follows_leader")? == "true",
        balancers: hosts.clone(),
    }))
}

/// Reads one variable of one host, rendered.
struct Reader<'a> {
    world: &'a Arc<World>,
}

impl Reader<'_> {
    fn value(&self, host: &str, var: &str) -> Result<serde_json::Value, StackError> {
        let scope = self.world.scope(host, IndexMap::new());
        let source = template::Source {
            file: "(stack model)",
            line: 1,
        };
        let raw = serde_json::Value::String(format!("{{{{ {var} }}}}"));
        let value = scope.render_json(&raw, &source).map_err(|e| {
            StackError(format!(
                "{}{host}: {var}: {}",
                self.origin(host, var),
                e.message
            ))
        })?;
        Ok(template::to_json(&value))
    }

    fn string(&self, host: &str, var: &str) -> Result<String, StackError> {
        Ok(match self.value(host, var)? {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
    }

    fn port(&self, host: &str, var: &str) -> Result<u16, StackError> {
        let text = self.string(host, var)?;
        text.trim().parse().map_err(|_| {
            StackError(format!(
                "{}{host}: {var}: expected a port number, got `{text}`",
                self.origin(host, var)
            ))
        })
    }

    /// `file:line: ` where `var` of `host` was set.
    fn origin(&self, host: &str, var: &str) -> String {
        self.world
            .hosts
            .get(host)
            .and_then(|d| d.vars.get(var))
            .map(|(_, file, line)| format!("{file}:{line}: "))
            .unwrap_or_default()
    }
}

/// Every host's variables: `defaults` (later ones win) < inventory < `above` (a play's and its
/// roles' vars) < `extra_vars`, with the magic variables and what `fixed` adds per host.
pub(crate) fn world(
    inventory: &Inventory,
    defaults: &[&Defaults],
    above: &[&Defaults],
    extra_vars: &IndexMap<String, serde_json::Value>,
    env: &Arc<minijinja::Environment<'static>>,
    fixed: impl Fn(&str) -> IndexMap<String, serde_json::Value>,
) -> Arc<World> {
    let mut groups: IndexMap<String, Vec<String>> = IndexMap::new();
    groups.insert("all".into(), inventory.hosts.keys().cloned().collect());
    for g in inventory.groups.keys() {
        groups.entry(g.clone()).or_default();
    }
    let cli: Arc<str> = Arc::from(EXTRA_VARS);
    let mut data = IndexMap::new();
    for host in inventory.hosts.keys() {
        let host_groups = inventory.groups_of(host);
        for g in &host_groups {
            if g != "all" {
                groups.entry(g.clone()).or_default().push(host.clone());
            }
        }
        let mut d = HostData::default();
        for layer in defaults {
            for (k, v) in layer.iter() {
                d.vars.insert(k.clone(), v.clone());
            }
        }
        for (k, var) in inventory.host_vars(host) {
            let file: Arc<str> = Arc::from(var.origin.path.display().to_string());
            d.vars.insert(k, (var.value, file, var.origin.mark.line));
        }
        for layer in above {
            for (k, v) in layer.iter() {
                d.vars.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in extra_vars {
            d.vars.insert(k.clone(), (v.clone(), cli.clone(), 1));
        }
        d.fixed
            .insert("inventory_hostname".into(), host.clone().into());
        d.fixed.insert(
            "inventory_hostname_short".into(),
            host.split('.').next().unwrap_or(host).into(),
        );
        d.fixed.insert(
            "group_names".into(),
            host_groups
                .iter()
                .filter(|g| *g != "all")
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        );
        d.fixed.extend(fixed(host));
        data.insert(host.clone(), Arc::new(d));
    }
    World::new(
        env.clone(),
        data,
        serde_json::to_value(&groups).unwrap_or_default(),
    )
}

/// Where a variable given with `-e` is said to come from.
pub(crate) const EXTRA_VARS: &str = "-e (command line)";

#[cfg(test)]
mod tests {
    use super::*;

    fn load(inventory: &str) -> (tempfile::TempDir, Result<Stack, StackError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.yml");
        std::fs::write(&path, inventory).unwrap();
        let inv = Inventory::load(&path).unwrap();
        let stack = Stack::load(&inv, &IndexMap::new());
        (dir, stack)
    }

    #[test]
    fn the_model_follows_the_inventory_with_the_stack_role_under_it() {
        let (dir, stack) = load(
            "all:
  vars: {patroni_scope: main, patroni_api_port: 8443}
  children:
    postgres_cluster:
      hosts:
        db-a: {ansible_host: 10.0.0.1}
        db-b: {ansible_host: 10.0.0.2, postgresql_port: 6432}
    etcd_cluster:
      hosts:
        dcs-1: {}
    monitoring:
      hosts:
        mon: {}
",
        );
        let stack = stack.unwrap();
        assert_eq!(stack.scope, "main");
        assert_eq!(stack.leader_key(), "/service/main/leader");
        let names: Vec<&str> = stack.postgres.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["db-a", "db-b"]);
        assert_eq!(stack.postgres[0].api_url(), "https://10.0.0.1:8443");
        assert_eq!(stack.postgres[0].pg_port, 5432);
        assert_eq!(stack.postgres[1].pg_port, 6432);
        // No ansible_host: the inventory name is the address.
        assert_eq!(stack.etcd_endpoints(), ["https://dcs-1:2379"]);
        // A secret is made only when a login is asked for, then kept in the secret store.
        let store = dir.path().join("inv.secrets.yml");
        assert!(!store.exists());
        assert_eq!(stack.login(Login::PatroniApi).unwrap().user, "patroni");
        let superuser = stack.login(Login::Superuser).unwrap();
        assert_eq!(superuser.password.len(), 32);
        let kept = std::fs::read_to_string(&store).unwrap();
        assert!(kept.contains(&superuser.password));
        assert!(!kept.contains("postgresql_prober"));
        assert!(!format!("{superuser:?}").contains(&superuser.password));
    }

    #[test]
    fn other_group_names_are_followed() {
        let (_dir, stack) = load(
            "all:
  vars: {patroni_group: pg, etcd_group: dcs, postgresql_superuser_password: given}
  children:
    pg: {hosts: {a: {}, b: {}}}
    dcs: {hosts: {c: {}}}
",
        );
        let stack = stack.unwrap();
        assert_eq!(stack.postgres.len(), 2);
        assert_eq!(stack.etcd_endpoints(), ["https://c:2379"]);
        assert_eq!(stack.login(Login::Superuser).unwrap().password, "given");
    }

    #[test]
    fn a_port_that_is_not_a_number_is_named() {
        let (_dir, stack) = load(
            "all:
  children:
    postgres_cluster: {hosts: {a: {patroni_api_port: http}}}
",
        );
        let err = stack.unwrap_err().to_string();
        assert!(
            err.ends_with("inv.yml:3: a: patroni_api_port: expected a port number, got `http`"),
            "{err}"
        );
    }
}
