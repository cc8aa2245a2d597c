//! The command line: one subcommand per job.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "hactl",
    version,
    about = "A highly available PostgreSQL stack over SSH, and the proof that it stays available",
    long_about = "hactl installs etcd, PostgreSQL + Patroni, Prometheus and Alertmanager on the hosts of an \
Ansible-style inventory (apply), measures what users feel when the leader fails (failover-test), \
watches the cluster all the time (probe), and brings up local test hosts to try all of it on one \
Linux machine (lab).\n\nExit codes: 0 ok, 1 a check or target failed, 2 a host failed (or not \
implemented yet), 3 a host unreachable, 4 bad input (nothing was run)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Install and configure the stack on the hosts of an inventory (idempotent).
    Apply(ApplyArgs),
    /// Fail the Patroni leader under a write load and report downtime and lost writes.
    FailoverTest(FailoverArgs),
    /// Run the scheduled HA prober and expose its results as Prometheus metrics.
    Probe(ProbeArgs),
    /// Local test hosts: systemd-nspawn machines on a private bridge.
    Lab(LabArgs),
    /// Show what an inventory file means: hosts, groups, merged vars.
    Inventory(InventoryArgs),
    /// Take a backup now (pgBackRest, on the repository host), or list the backups.
    Backup(BackupArgs),
    /// Point-in-time recovery of the whole cluster from the backup repository.
    Restore(RestoreArgs),
    /// A restore drill that leaves the cluster alone: the newest backup and the WAL after it
    /// restored into a scratch instance on the repository host, checked, then removed.
    RestoreTest(RestoreTestArgs),
    /// The cluster on one screen: Patroni's members, etcd, the endpoint, the newest backups and
    /// the alerts firing; exits 1 when it is not healthy.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The inventory file of the cluster.
    #[arg(short, long, default_value = "inventory/lab.yml")]
    pub inventory: PathBuf,
    /// `text` (one screen) or `json`.
    #[arg(long, value_enum, default_value_t = crate::engine::Format::Text)]
    pub output: crate::engine::Format,
    /// Show it again every SECONDS (default 2) until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
}

#[derive(Args, Debug)]
pub struct RestoreTestArgs {
    /// The inventory file of the cluster.
    #[arg(short, long, default_value = "inventory/lab.yml")]
    pub inventory: PathBuf,
    /// TABLE:COLUMN: rows written up to the restore point (by COLUMN, when each row was written)
    /// are counted in the drill and on the primary, and must match (repeatable; default
    /// failover-test's table, hactl_failover:at).
    #[arg(long = "table", value_name = "TABLE:COLUMN")]
    pub tables: Vec<String>,
    /// `text` (steps on stderr, then the findings) or `json` (the report).
    #[arg(long, value_enum, default_value_t = crate::engine::Format::Text)]
    pub output: crate::engine::Format,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The inventory file of the cluster.
    #[arg(short, long, default_value = "inventory/lab.yml")]
    pub inventory: PathBuf,
    /// `latest` (the end of the archived WAL), a time with its zone (`2026-12-07 08:00:00+00`)
    /// or a backup's label (`hactl backup list`).
    #[arg(long)]
    pub target: String,
    /// The member restored from the repository (default: the leader, or the first member);
    /// the others are rebuilt from it.
    #[arg(long)]
    pub member: Option<String>,
    /// Do it. Without --yes, only show what it would do.
    #[arg(long)]
    pub yes: bool,
    /// `text` (steps on stderr, then a summary) or `json` (the report).
    #[arg(long, value_enum, default_value_t = crate::engine::Format::Text)]
    pub output: crate::engine::Format,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub action: Option<BackupAction>,
    /// The inventory file of the cluster.
    #[arg(short, long, default_value = "inventory/lab.yml")]
    pub inventory: PathBuf,
    /// full, diff (what changed since the last full) or incr (since the last backup); an incr
    /// or diff with no full backup to build on is taken as a full one, as pgBackRest does.
    #[arg(long = "type", value_enum, default_value_t = crate::backup::Kind::Incr)]
    pub kind: crate::backup::Kind,
    /// `text` (progress on stderr, then the new backup) or `json` (the new backup).
    #[arg(long, value_enum, default_value_t = crate::engine::Format::Text)]
    pub output: crate::engine::Format,
}

#[derive(Subcommand, Debug)]
pub enum BackupAction {
    /// Each backup: type, start and stop, size, WAL range; and the archive's WAL range.
    List {
        /// The inventory file of the cluster.
        #[arg(short, long, default_value = "inventory/lab.yml")]
        inventory: PathBuf,
        #[arg(long, value_enum, default_value_t = crate::engine::Format::Text)]
        output: crate::engine::Format,
    },
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The inventory file (Ansible YAML format).
    pub inventory: PathBuf,
    /// Show what would change without changing anything.
    #[arg(long)]
    pub check: bool,
    /// Show unified diffs of changed files (secrets masked).
    #[arg(long)]
    pub diff: bool,
    /// The site file: which roles run on which groups (default: the built-in roles/site.yml).
    #[arg(long, value_name = "FILE")]
    pub site: Option<PathBuf>,
    /// Only these hosts or groups (comma-separated).
    #[arg(short, long, value_name = "HOST|GROUP", value_delimiter = ',')]
    pub limit: Vec<String>,
    /// Only tasks with one of these tags (comma-separated), and those tagged `always`.
    #[arg(short, long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Extra variables, over every other source: KEY=VALUE, or a JSON object.
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE")]
    pub extra_vars: Vec<String>,
    /// Hosts worked on at once (default: all).
    #[arg(short, long)]
    pub forks: Option<usize>,
    /// Record host keys not yet in the known_hosts file (a changed key is still refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Ask for the sudo password once, instead of requiring password-less sudo.
    #[arg(short = 'K', long)]
    pub ask_become_pass: bool,
    /// `text` (a line per task and host, and a recap) or `json` (one event per line).
    #[arg(long, value_enum, default_value_t = crate::engine::Format::Text)]
    pub output: crate::engine::Format,
}

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// The inventory file of the cluster.
    #[arg(short, long, default_value = "inventory/lab.yml")]
    pub inventory: PathBuf,
    /// The fault (README: failover-test has each one's expected outcome and default goal).
    #[arg(long, value_enum, default_value_t = crate::failover::Mode::KillNode)]
    pub mode: crate::failover::Mode,
    /// Writers (connections) inserting at once.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Inserts per second, per writer.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of write downtime allowed (default: the mode's own goal, which the report names).
    #[arg(long)]
    pub max_downtime: Option<f64>,
    /// With `--mode command`: what runs (through `sh -c`) while the writers write, e.g.
    /// "hactl apply inventory/prod.yml"; its output goes to stderr.
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    /// How the writers reach the primary: `endpoint` (the VIP or a balancer, HAProxy's
    /// read-write port, PgBouncer: what applications feel) or `direct` (the members, multi-host).
    /// Default: the endpoint when the inventory sets cluster_vip or has a balancers group.
    #[arg(long, value_enum)]
    pub via: Option<crate::failover::Path>,
    /// Acknowledged writes that may be lost.
    #[arg(long, default_value_t = 0)]
    pub max_lost: u64,
    /// Seconds after which a partition heals by itself, and what a fault stopped (Patroni,
    /// etcd) is started again by itself, even if hactl is gone.
    #[arg(long, default_value_t = 90)]
    pub partition_heal_after: u64,
    /// Seconds the cluster may take to become healthy before the test refuses to start.
    #[arg(long, default_value_t = 30)]
    pub settle: u64,
    /// Runs the test N times (default 1), each once the cluster is healthy again, and sums up
    /// each figure's min / median / max.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: Option<u32>,
    /// Also write the run as one self-contained HTML page (the verdict, the figures, and a
    /// timeline of each writer's acknowledged writes per 100 ms with the fault, the leader key
    /// lost, the new leader, the first write after and the rejoin marked), even when the test
    /// fails. With --repeat, a page per run: FILE with the run number before its extension
    /// (report.html: report-1.html, report-2.html, …). Checked before the fault: exit 4 when it
    /// cannot be written.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// `text` (a table; with --repeat a line per run and a summary) or `json` (one object: the
    /// report; with --repeat {"runs", "summary", "passed", "error"}).
    #[arg(long, value_enum, default_value_t = crate::engine::Format::Text)]
    pub output: crate::engine::Format,
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The probe configuration.
    #[arg(long, default_value = "probes/ha.yml")]
    pub config: PathBuf,
    /// The inventory that group targets (`targets: {group: G, port: P}`) and
    /// `password_secret` are resolved through.
    #[arg(short, long)]
    pub inventory: Option<PathBuf>,
    /// Where /metrics and /healthz are served.
    #[arg(long, default_value = "0.0.0.0:9313")]
    pub listen: std::net::SocketAddr,
    /// TLS and basic auth for /metrics and /healthz, in the format of Prometheus's exporters'
    /// `--web.config.file` (`tls_server_config`, `basic_auth_users` with bcrypt hashes).
    #[arg(long)]
    pub web_config: Option<PathBuf>,
    /// Only check the configuration (and resolve its targets), then exit.
    #[arg(long)]
    pub check: bool,
}

#[derive(Args, Debug)]
pub struct LabArgs {
    /// The lab inventory: its hosts become machines; `hactl_lab_*` vars configure the lab.
    #[arg(short, long, global = true, default_value = "inventory/lab.yml")]
    pub inventory: PathBuf,
    #[command(subcommand)]
    pub action: LabAction,
}

#[derive(Subcommand, Debug)]
pub enum LabAction {
    /// Build (once) and boot every host; returns when all answer over SSH. Idempotent.
    Up,
    /// Stop every host and remove every bridge, process, mount, proxy and file of the lab.
    Down,
    /// Show each host: running, stopped or cut off, and whether SSH answers.
    Status,
    /// Open a shell on a host, or run a command there.
    Ssh {
        host: String,
        /// A command to run instead of a shell.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Power loss: the host stops at once (boot it again with `lab up`).
    Kill { host: String },
    /// Cut the host's network cable (its link goes down).
    Cut { host: String },
    /// Plug the host's network cable back in.
    Heal { host: String },
}

#[derive(Args, Debug)]
pub struct InventoryArgs {
    #[command(subcommand)]
    pub action: InventoryAction,
}

#[derive(Subcommand, Debug)]
pub enum InventoryAction {
    /// Hosts with their groups and merged vars (secrets masked).
    List {
        /// The inventory file.
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The group tree, as `ansible-inventory --graph` draws it.
    Graph {
        /// The inventory file.
        file: PathBuf,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}
