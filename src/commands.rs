//! The `hactl` command: parses the command line and dispatches to one function per subcommand.
//! (`src/main.rs` only calls [`main`], so that everything else in the library is crate-private
//! and the compiler reports what nothing uses.)

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{
    ApplyArgs, BackupAction, BackupArgs, Cli, Command, FailoverArgs, InventoryAction, Output,
    ProbeArgs, RestoreArgs, RestoreTestArgs, StatusArgs,
};
use crate::engine::{self, ApplyError};
use crate::exit::{self, Code};
use crate::inventory::{self, Inventory, InventoryError};
use crate::{lab, roles};

/// What a command can fail with. Each error knows its exit code (README: Exit codes).
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Role(#[from] roles::RoleError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Failover(#[from] crate::failover::FailoverError),
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
    #[error(transparent)]
    Lab(#[from] lab::LabError),
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    #[error(transparent)]
    Stack(#[from] crate::stack::StackError),
    /// The machine itself: no terminal for a password, no runtime, a closed stdout.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Code for Error {
    fn exit_code(&self) -> u8 {
        match self {
            Error::Inventory(e) => e.exit_code(),
            Error::Role(e) => e.exit_code(),
            Error::Apply(e) => e.exit_code(),
            Error::Failover(e) => e.exit_code(),
            Error::Probe(e) => e.exit_code(),
            Error::Lab(e) => e.exit_code(),
            Error::Backup(e) => e.exit_code(),
            Error::Stack(e) => e.exit_code(),
            Error::Io(_) | Error::Json(_) => exit::FAILURE,
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Apply(args) => apply(args),
        Command::FailoverTest(args) => failover_test(args),
        Command::Probe(args) => probe(args),
        Command::Lab(args) => lab::run(&args).map_err(Error::from),
        Command::Inventory(args) => inventory_command(args.action),
        Command::Backup(args) => backup(args),
        Command::Restore(args) => restore(args),
        Command::RestoreTest(args) => restore_test(args),
        Command::Status(args) => status(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("hactl: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Brings the hosts of an inventory to the state the site file's roles describe.
fn apply(args: ApplyArgs) -> Result<u8> {
    let inventory = Inventory::load(&args.inventory)?;
    let site = roles::load_site(args.site.as_deref())?;
    let extra_vars = engine::parse_extra_vars(&args.extra_vars)?;
    let become_password = if args.ask_become_pass {
        Some(read_become_password()?)
    } else {
        None
    };
    let opts = engine::Options {
        check: args.check,
        diff: args.diff,
        forks: args.forks,
        limit: args.limit,
        tags: args.tags,
        extra_vars,
        accept_new_host_keys: args.accept_new_host_keys,
        become_password,
        format: args.output,
        release_cache: std::env::var_os("HACTL_CACHE_DIR")
            .map(|d| std::path::PathBuf::from(d).join("releases")),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(engine::apply(&inventory, &site, &opts))?;
    Ok(summary.exit_code())
}

/// Fails part of the cluster under a write load (once, or `--repeat` times) and reports what
/// users felt; exit 1 when a run misses its goal, or the code of the error that stopped it.
fn failover_test(args: FailoverArgs) -> Result<u8> {
    let inventory = Inventory::load(&args.inventory)?;
    let opts = crate::failover::Options {
        mode: args.mode,
        writers: args.writers,
        rate: args.rate,
        max_downtime: args.max_downtime,
        max_lost: args.max_lost,
        max_lag: 16 * 1024 * 1024,
        partition_heal_after: std::time::Duration::from_secs(args.partition_heal_after),
        settle: std::time::Duration::from_secs(args.settle),
        command: args.command,
        via: args.via,
        report: args.report,
    };
    // The lab powers its machine off; real hosts get SIGKILL through systemd.
    let lab = lab::of_inventory(&inventory);
    let systemd = crate::failover::SystemdKill {
        inventory: &inventory,
    };
    let power: &dyn crate::failover::PowerLoss = match &lab {
        Some(lab) => lab,
        None => &systemd,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let passed = |yes: bool| if yes { exit::OK } else { exit::FAILURE };
    let Some(runs) = args.repeat else {
        let report = runtime.block_on(crate::failover::run(&inventory, &opts, power))?;
        match args.output {
            engine::Format::Text => print!("{}", crate::failover::table(&report)),
            engine::Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        }
        return Ok(passed(report.passed));
    };
    let runs = runs as usize;
    let format = args.output;
    // A line per run as it ends: on stdout for text, on stderr beside the JSON.
    let each = |i: usize, report: &crate::failover::Report| {
        let line = crate::failover::run_line(i, runs, report);
        match format {
            engine::Format::Text => println!("{line}"),
            engine::Format::Json => eprintln!("{line}"),
        }
    };
    let (repeated, error) = runtime.block_on(crate::failover::repeat(
        &inventory, &opts, power, runs, each,
    ));
    match format {
        engine::Format::Text => print!("{}", crate::failover::summary_table(&repeated)),
        engine::Format::Json => println!("{}", serde_json::to_string_pretty(&repeated)?),
    }
    match error {
        Some(e) => {
            eprintln!("hactl: {}", repeated.error.as_deref().unwrap_or_default());
            Ok(e.exit_code())
        }
        None => Ok(passed(repeated.passed)),
    }
}

/// `hactl backup`: one backup now, with progress; `hactl backup list`: the repository's backups.
fn backup(args: BackupArgs) -> Result<u8> {
    let (inventory_path, output) = match &args.action {
        Some(BackupAction::List { inventory, output }) => (inventory, *output),
        None => (&args.inventory, args.output),
    };
    let inventory = Inventory::load(inventory_path)?;
    let stack = crate::stack::Stack::load(&inventory, &Default::default())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let repo = crate::backup::Repository::connect(&inventory, &stack).await?;
        if args.action.is_some() {
            let listing = repo.list().await?;
            match output {
                engine::Format::Text => print!("{}", crate::backup::table(&listing)),
                engine::Format::Json => println!("{}", serde_json::to_string_pretty(&listing)?),
            }
            return Ok(exit::OK);
        }
        let backup = repo.take(args.kind, |line| eprintln!("{line}")).await?;
        match output {
            engine::Format::Text => println!(
                "{} backup {} taken in {} s: {} .. {}, WAL {} .. {}",
                backup.kind,
                backup.label,
                backup.duration_s,
                backup.start,
                backup.stop,
                backup.wal_start,
                backup.wal_stop
            ),
            engine::Format::Json => println!("{}", serde_json::to_string_pretty(&backup)?),
        }
        Ok(exit::OK)
    })
}

/// `hactl restore`: the plan without --yes; with it, the whole cluster recovered to the target.
fn restore(args: RestoreArgs) -> Result<u8> {
    let target = crate::restore::Target::parse(&args.target)
        .map_err(|e| Error::Stack(crate::stack::StackError::from(e)))?;
    let inventory = Inventory::load(&args.inventory)?;
    let stack = crate::stack::Stack::load(&inventory, &Default::default())?;
    if stack.backup.is_none() {
        return Err(
            crate::backup::BackupError::NoRepository(args.inventory.display().to_string()).into(),
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let member = match &args.member {
            Some(m) if stack.pg_member(m).is_none() => {
                return Err(Error::Stack(crate::stack::StackError::from(format!(
                    "--member {m}: not a host of group {}",
                    stack.postgres_group
                ))))
            }
            Some(m) => m.clone(),
            None => crate::restore::pick_member(&stack).await,
        };
        if !args.yes {
            print!("{}", crate::restore::plan(&stack, &target, &member));
            return Ok(exit::OK);
        }
        let report = crate::restore::restore(&inventory, &stack, &target, &member, |step| {
            eprintln!("restore: {step}")
        })
        .await?;
        match args.output {
            engine::Format::Text => println!(
                "restored {} to {} (replayed to {}); leader {}, timeline {}, streaming replicas {}; \
                 {:.1} s (stop {:.1}, restore {:.1}, recovery {:.1}, leader {:.1}, replicas {:.1})",
                report.restored_member,
                report.target,
                report.replayed_to.as_deref().unwrap_or("-"),
                report.leader_after.as_deref().unwrap_or("-"),
                report.timeline_after.map(|t| t.to_string()).unwrap_or("-".into()),
                report.streaming_replicas.join(", "),
                report.total_s,
                report.stop_s,
                report.restore_s,
                report.recovery_s,
                report.leader_s,
                report.replicas_s
            ),
            engine::Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        }
        Ok(exit::OK)
    })
}

/// `hactl status`: the cluster on one screen (or JSON), once or every `--watch` seconds; exits 1
/// when it is not healthy.
fn status(args: StatusArgs) -> Result<u8> {
    let inventory = Inventory::load(&args.inventory)?;
    let stack = crate::stack::Stack::load(&inventory, &Default::default())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        loop {
            let s = crate::status::read(&inventory, &stack).await;
            match args.output {
                engine::Format::Text => {
                    if args.watch.is_some() {
                        // Clear the screen, as watch(1) does.
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{}", crate::status::text(&s));
                }
                engine::Format::Json => println!("{}", serde_json::to_string_pretty(&s)?),
            }
            match args.watch {
                Some(every) => {
                    tokio::time::sleep(std::time::Duration::from_secs(every.max(1))).await
                }
                None => return Ok(if s.healthy() { exit::OK } else { exit::FAILURE }),
            }
        }
    })
}

/// `hactl restore-test`: a restore drill on the repository host; exits 1 when a check fails.
fn restore_test(args: RestoreTestArgs) -> Result<u8> {
    let tables = if args.tables.is_empty() {
        vec!["hactl_failover:at".to_string()]
    } else {
        args.tables.clone()
    };
    let optional = args.tables.is_empty();
    let tables = tables
        .iter()
        .map(|t| {
            crate::restore::CheckTable::parse(t).map(|mut c| {
                c.optional = optional;
                c
            })
        })
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(|e| Error::Stack(crate::stack::StackError::from(e)))?;
    let inventory = Inventory::load(&args.inventory)?;
    let stack = crate::stack::Stack::load(&inventory, &Default::default())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(crate::restore::drill(&inventory, &stack, &tables, |step| {
        eprintln!("restore-test: {step}")
    }))?;
    match args.output {
        engine::Format::Text => {
            println!(
                "backup {} ({} s old) restored in {:.1} s, recovered to {} in {:.1} s; pg_amcheck: {}; {:.1} s in all",
                report.backup,
                report.backup_age_s,
                report.restore_s,
                report.replayed_to.as_deref().unwrap_or("-"),
                report.recovery_s,
                report.amcheck,
                report.total_s
            );
            let count = |n: Option<u64>| n.map_or("no table".to_string(), |n| format!("{n} rows"));
            for t in &report.tables {
                println!(
                    "{}: {} up to the restore point, {} on the primary",
                    t.table,
                    count(t.restored),
                    count(t.primary)
                );
            }
            for p in &report.problems {
                println!("FAILED: {p}");
            }
        }
        engine::Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if report.passed {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// The prober daemon: runs until SIGTERM; SIGHUP reloads its configuration.
fn probe(args: ProbeArgs) -> Result<u8> {
    let opts = crate::probe::Options {
        config: args.config,
        inventory: args.inventory,
        listen: args.listen,
        web_config: args.web_config,
    };
    if args.check {
        let (probes, targets) = crate::probe::check(&opts)?;
        println!(
            "{}: {probes} probes, {targets} targets",
            opts.config.display()
        );
        return Ok(exit::OK);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HACTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(crate::probe::run(opts))?;
    Ok(exit::OK)
}

/// The sudo password: asked on the terminal, or read as one line from a pipe.
fn read_become_password() -> Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password("BECOME password: ")?);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Prints what an inventory means: a host listing or the group tree.
fn inventory_command(action: InventoryAction) -> Result<u8> {
    match action {
        InventoryAction::List { file, output } => {
            let inventory = Inventory::load(&file)?;
            match output {
                Output::Text => print!("{}", inventory::list_text(&inventory)),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&inventory::list_json(&inventory))?
                ),
            }
        }
        InventoryAction::Graph { file } => {
            print!("{}", inventory::graph(&Inventory::load(&file)?));
        }
    }
    Ok(exit::OK)
}
