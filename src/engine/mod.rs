//! `hactl apply`: plays in order with a barrier between them, hosts in parallel within a play,
//! tasks in order on each host, handlers at the end of each play (or batch, with `serial`).

pub mod facts;
mod output;
mod prepare;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::join_all;
use indexmap::IndexMap;
use minijinja::Value;
use tokio::sync::Semaphore;

use crate::inventory::{secret_values, Inventory, InventoryError};
use crate::modules::{self, release, Ctx, Diff, ModuleError, Outcome, Ran};
use crate::pki::Pki;
use crate::roles::{Play, Role, RoleError, Site, Task};
use crate::secrets::SecretStore;
use crate::ssh::{self, HostKeyPolicy, Session, SshError};
use crate::template::{self, World};

pub use output::{Format, Stats, Status};
use output::{Line, Reporter};
use prepare::{holds, prepare, Prepared, TaskError};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub check: bool,
    pub diff: bool,
    /// Hosts worked on at once; None = all.
    pub forks: Option<usize>,
    /// Hosts or groups to restrict the run to.
    pub limit: Vec<String>,
    /// Run only tasks with one of these tags (and those tagged `always`).
    pub tags: Vec<String>,
    pub extra_vars: IndexMap<String, serde_json::Value>,
    pub accept_new_host_keys: bool,
    pub become_password: Option<String>,
    pub format: Format,
    pub release_cache: Option<PathBuf>,
}

/// Input that cannot be run: nothing was done on any host.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl crate::exit::Code for ApplyError {
    fn exit_code(&self) -> u8 {
        crate::exit::BAD_INPUT
    }
}

/// The recap: per-host counts.
#[derive(Debug, Default)]
pub struct Summary {
    pub stats: IndexMap<String, Stats>,
}

impl Summary {
    /// 0 all fine, 2 a host failed, 3 a host was unreachable (and none failed).
    pub fn exit_code(&self) -> u8 {
        if self.stats.values().any(|s| s.failed > 0) {
            crate::exit::HOST_FAILED
        } else if self.stats.values().any(|s| s.unreachable > 0) {
            crate::exit::UNREACHABLE
        } else {
            crate::exit::OK
        }
    }
}

/// What a host is while the run goes on.
struct HostRun {
    name: String,
    session: Option<Arc<Session>>,
    facts: serde_json::Value,
    registered: IndexMap<String, serde_json::Value>,
    /// Failed or unreachable: no more tasks.
    done: bool,
    stats: Stats,
    notified: HashSet<String>,
    /// A systemd unit file was written since the last daemon-reload.
    units_changed: std::sync::atomic::AtomicBool,
}

/// A play ready to run: its hosts and its tasks and handlers with their roles.
struct PlayPlan<'a> {
    play: &'a Play,
    hosts: Vec<String>,
    tasks: Vec<(&'a Arc<Role>, &'a Task)>,
    handlers: Vec<(&'a Arc<Role>, &'a Task)>,
}

/// Checks everything, connects, gathers facts, runs the plays, prints the recap.
pub async fn apply(
    inventory: &Inventory,
    site: &Site,
    opts: &Options,
) -> Result<Summary, ApplyError> {
    let secrets = Arc::new(SecretStore::of(inventory));
    let env = template::environment(Some(secrets.clone()));
    let plans = plan(inventory, site, opts)?;
    validate(inventory, site, &plans, opts, &env)?;
    let pki = Pki::of(inventory);
    control_certificate(&pki, inventory, opts)?;

    let mut reporter = Reporter::new(opts.format, opts.diff, opts.check);
    let involved: Vec<String> = inventory
        .hosts
        .keys()
        .filter(|h| plans.iter().any(|p| p.hosts.contains(h)))
        .cloned()
        .collect();
    for host in &involved {
        reporter.add_secrets(host, secrets_of(inventory, host, opts));
    }
    if let Some(pw) = &opts.become_password {
        reporter.add_secrets("", vec![pw.clone()]);
    }
    // Validation rendered every task, so every secret the run uses is known by now.
    reporter.add_secrets("", secrets.values());
    let forks = Arc::new(Semaphore::new(opts.forks.unwrap_or(involved.len()).max(1)));
    let mut hosts = connect_all(inventory, &involved, opts, &reporter, &forks).await?;
    let releases = release::Cache::new(opts.release_cache.clone());

    for plan in &plans {
        let world = world_for(inventory, site, plan, &hosts, opts, &env, None);
        let play = PlayRun {
            world: &world,
            opts,
            reporter: &reporter,
            releases: &releases,
            pki: &pki,
            forks: &forks,
        };
        let play_hosts: Vec<String> = plan
            .hosts
            .iter()
            .filter(|h| hosts.get(*h).is_some_and(|r| !r.done))
            .cloned()
            .collect();
        reporter.play(&plan.play.name, &play_hosts);
        if play_hosts.is_empty() {
            reporter.warn(&format!("play {}: no host left to run on", plan.play.name));
            continue;
        }
        let batch_size = plan.play.serial.unwrap_or(play_hosts.len());
        for batch in play_hosts.chunks(batch_size) {
            let failed_before = failures(&hosts, batch);
            for (role, task) in &plan.tasks {
                if tag_selected(task, &opts.tags) {
                    run_task(&play, role, task, batch, &mut hosts).await;
                }
            }
            for (role, handler) in &plan.handlers {
                let notified: Vec<String> = batch
                    .iter()
                    .filter(|h| {
                        hosts
                            .get(*h)
                            .is_some_and(|r| !r.done && r.notified.contains(&handler.name))
                    })
                    .cloned()
                    .collect();
                if !notified.is_empty() {
                    run_task(&play, role, handler, &notified, &mut hosts).await;
                }
            }
            for h in batch {
                if let Some(run) = hosts.get_mut(h) {
                    run.notified.clear();
                }
            }
            // A rolling change stops at the first batch that breaks a host.
            if plan.play.serial.is_some() && failures(&hosts, batch) > failed_before {
                reporter.warn(&format!(
                    "play {}: a host of this batch failed — the remaining batches are not run",
                    plan.play.name
                ));
                break;
            }
        }
    }

    for run in hosts.values_mut() {
        if let Some(session) = run.session.take() {
            run.stats.round_trips = session.round_trips();
            if let Ok(session) = Arc::try_unwrap(session) {
                session.close().await;
            }
        }
    }
    let summary = Summary {
        stats: hosts.iter().map(|(h, r)| (h.clone(), r.stats)).collect(),
    };
    reporter.recap(&summary.stats);
    Ok(summary)
}

/// `-e KEY=VALUE` (the value a string, as in Ansible) or `-e '{"key": ...}'`.
pub fn parse_extra_vars(
    args: &[String],
) -> Result<IndexMap<String, serde_json::Value>, ApplyError> {
    let mut vars = IndexMap::new();
    for arg in args {
        if arg.trim_start().starts_with('{') {
            let map: IndexMap<String, serde_json::Value> =
                serde_json::from_str(arg).map_err(|e| {
                    ApplyError::Invalid(vec![format!("-e {arg}: not a JSON object: {e}")])
                })?;
            vars.extend(map);
            continue;
        }
        let (key, value) = arg.split_once('=').ok_or_else(|| {
            ApplyError::Invalid(vec![format!(
                "-e {arg}: expected KEY=VALUE or a JSON object"
            )])
        })?;
        vars.insert(
            key.trim().to_string(),
            serde_json::Value::String(value.to_string()),
        );
    }
    Ok(vars)
}

fn failures(hosts: &IndexMap<String, HostRun>, batch: &[String]) -> u32 {
    batch
        .iter()
        .filter_map(|h| hosts.get(h))
        .map(|r| r.stats.failed + r.stats.unreachable)
        .sum()
}

fn tag_selected(task: &Task, tags: &[String]) -> bool {
    tags.is_empty() || task.tags.iter().any(|t| t == "always" || tags.contains(t))
}

/// The hosts of each play (after `--limit`) and its tasks and handlers.
fn plan<'a>(
    inventory: &Inventory,
    site: &'a Site,
    opts: &Options,
) -> Result<Vec<PlayPlan<'a>>, ApplyError> {
    let membership: HashMap<&str, Vec<String>> = inventory
        .hosts
        .keys()
        .map(|h| (h.as_str(), inventory.groups_of(h)))
        .collect();
    let matching = |pattern: &str| -> Option<Vec<String>> {
        if inventory.hosts.contains_key(pattern) {
            return Some(vec![pattern.to_string()]);
        }
        if pattern != "all" && !inventory.groups.contains_key(pattern) {
            return None;
        }
        Some(
            inventory
                .hosts
                .keys()
                .filter(|h| membership[h.as_str()].iter().any(|g| g == pattern))
                .cloned()
                .collect(),
        )
    };
    let mut limited: Option<HashSet<String>> = None;
    for pattern in &opts.limit {
        let found = matching(pattern).ok_or_else(|| {
            ApplyError::Invalid(vec![format!(
                "--limit {pattern}: no such host or group in {}",
                inventory.path.display()
            )])
        })?;
        limited.get_or_insert_with(HashSet::new).extend(found);
    }
    let mut plans = Vec::new();
    for play in &site.plays {
        let mut hosts: Vec<String> = Vec::new();
        for pattern in &play.hosts {
            let found = matching(pattern).ok_or_else(|| {
                RoleError::at(
                    &play.file,
                    play.line,
                    format!(
                        "hosts: no group or host `{pattern}` in {}",
                        inventory.path.display()
                    ),
                )
            })?;
            for h in found {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
        }
        if let Some(allowed) = &limited {
            hosts.retain(|h| allowed.contains(h));
        }
        let order: Vec<&String> = inventory.hosts.keys().collect();
        hosts.sort_by_key(|h| order.iter().position(|o| *o == h));
        let tasks = play
            .roles
            .iter()
            .flat_map(|r| r.tasks.iter().map(move |t| (r, t)))
            .collect();
        let handlers = play
            .roles
            .iter()
            .flat_map(|r| r.handlers.iter().map(move |t| (r, t)))
            .collect();
        plans.push(PlayPlan {
            play,
            hosts,
            tasks,
            handlers,
        });
    }
    Ok(plans)
}

/// Every host's variables for one play: the stack's and the play's role defaults < inventory <
/// `-e`; facts, magic variables and the results registered in earlier plays fixed (as in
/// Ansible, `hostvars[h].name` reads what `h` registered). With `placeholders` (checking before
/// the run), facts are made up and `placeholders` holds the names registered so far.
fn world_for(
    inventory: &Inventory,
    site: &Site,
    plan: &PlayPlan,
    hosts: &IndexMap<String, HostRun>,
    opts: &Options,
    env: &Arc<minijinja::Environment<'static>>,
    placeholders: Option<&[String]>,
) -> Arc<World> {
    let mut defaults = vec![&site.stack];
    defaults.extend(plan.play.roles.iter().map(|r| &r.defaults));
    // The running hactl, for roles that install it (the prober).
    let exe = std::env::current_exe().ok();
    crate::stack::world(inventory, &defaults, &opts.extra_vars, env, |host| {
        let mut fixed = IndexMap::new();
        let facts = if let Some(names) = placeholders {
            for name in names {
                fixed.insert(name.clone(), placeholder_result());
            }
            Some(facts::placeholder(host))
        } else {
            hosts
                .get(host)
                .map(|r| r.facts.clone())
                .filter(|f| !f.is_null())
        };
        if let Some(f) = facts {
            fixed.insert("facts".into(), f);
        }
        if let Some(run) = hosts.get(host) {
            for (name, value) in &run.registered {
                fixed.insert(name.clone(), value.clone());
            }
        }
        fixed.insert("ansible_check_mode".into(), opts.check.into());
        if let Some(exe) = &exe {
            fixed.insert("hactl_executable".into(), exe.display().to_string().into());
        }
        fixed.insert("play_hosts".into(), plan.hosts.clone().into());
        fixed
    })
}

/// hactl's own client certificate (failover-test, status, the tests): made with the CA on the
/// first apply, renewed as the hosts' are.
fn control_certificate(pki: &Pki, inventory: &Inventory, opts: &Options) -> Result<(), ApplyError> {
    let number = |name: &str| {
        opts.extra_vars
            .get(name)
            .or_else(|| inventory.all_var(name))
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
    };
    pki.issue(&crate::pki::Wanted {
        holder: crate::pki::CONTROL,
        name: crate::pki::CONTROL_CERT,
        cn: crate::pki::CONTROL_CERT,
        sans: &[],
        renew_days: number("hactl_cert_renew_days").unwrap_or(30),
        days: number("hactl_cert_days").unwrap_or(365),
    })
    .map(drop)
    .map_err(|e| ApplyError::Invalid(vec![format!("{}: {e}", pki.ca_path().display())]))
}

/// Values under secret-named variables or keys (passwords, keys, tokens), at any depth, that
/// output must never show.
fn secrets_of(inventory: &Inventory, host: &str, opts: &Options) -> Vec<String> {
    inventory
        .host_vars(host)
        .into_iter()
        .map(|(k, v)| (k, v.value))
        .chain(opts.extra_vars.iter().map(|(k, v)| (k.clone(), v.clone())))
        .flat_map(|(name, value)| secret_values(&name, &value))
        .collect()
}

/// Everything that can be checked without a host: handlers named by `notify` exist, template
/// files parse, and every task's `when`, `loop` and arguments render and type-check for every
/// host (with placeholder facts and registered results).
fn validate(
    inventory: &Inventory,
    site: &Site,
    plans: &[PlayPlan],
    opts: &Options,
    env: &Arc<minijinja::Environment<'static>>,
) -> Result<(), ApplyError> {
    let mut errors: Vec<String> = Vec::new();
    let mut push = |e: String| {
        if !errors.contains(&e) {
            errors.push(e);
        }
    };
    let no_hosts = IndexMap::new();
    let mut registered: IndexMap<String, Value> = IndexMap::new();
    for plan in plans {
        for role in &plan.play.roles {
            for asset in role.templates.values() {
                let text = String::from_utf8_lossy(&asset.bytes);
                let source = template::Source {
                    file: &asset.display,
                    line: 1,
                };
                if let Err(e) = template::check_syntax(env, &text, &source) {
                    push(e.to_string());
                }
            }
        }
        for (_, task) in plan.tasks.iter().chain(plan.handlers.iter()) {
            for name in &task.notify {
                if !plan.handlers.iter().any(|(_, h)| &h.name == name) {
                    push(format!(
                        "{}:{}: notify: no handler `{name}` in the roles of play {} ({})",
                        task.file,
                        task.line,
                        plan.play.name,
                        plan.handlers
                            .iter()
                            .map(|(_, h)| h.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            for cond in task.changed_when.iter().chain(task.failed_when.iter()) {
                for expr in cond {
                    if let Err(e) = env.compile_expression(&expr.text) {
                        push(format!("{}:{}: {e}", task.file, expr.line));
                    }
                }
            }
        }
        let earlier: Vec<String> = registered.keys().cloned().collect();
        let world = world_for(inventory, site, plan, &no_hosts, opts, env, Some(&earlier));
        let selected = plan
            .tasks
            .iter()
            .filter(|(_, t)| tag_selected(t, &opts.tags));
        for (role, task) in selected.chain(plan.handlers.iter()) {
            for host in &plan.hosts {
                if let Err(e) = prepare(task, role, &world, host, &registered) {
                    push(e.to_string());
                }
            }
            if let Some(name) = &task.register {
                registered.insert(
                    name.clone(),
                    crate::template::value_of(placeholder_result()),
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::Invalid(errors))
    }
}

fn placeholder_result() -> serde_json::Value {
    serde_json::json!({
        "changed": false, "failed": false, "skipped": false, "msg": "", "rc": 0,
        "stdout": "", "stderr": "", "stdout_lines": [], "stderr_lines": [], "results": [],
    })
}

/// Connects to every host and gathers its facts, in parallel; a host that cannot be reached is
/// reported and left out of the run.
async fn connect_all(
    inventory: &Inventory,
    names: &[String],
    opts: &Options,
    reporter: &Reporter,
    forks: &Arc<Semaphore>,
) -> Result<IndexMap<String, HostRun>, ApplyError> {
    let policy = if opts.accept_new_host_keys {
        HostKeyPolicy::AcceptNew
    } else {
        HostKeyPolicy::Strict
    };
    let mut targets = Vec::new();
    for name in names {
        targets.push(ssh::target(inventory, name)?);
    }
    let results = join_all(targets.into_iter().map(|target| {
        let forks = forks.clone();
        async move {
            let _slot = forks.acquire().await;
            let session = Session::connect(&target, policy).await?;
            let session = session.with_become_password(opts.become_password.clone());
            let facts = facts::gather(&session)
                .await?
                .map(|f| facts::with_control_address(f, &target.address, target.port));
            Ok::<_, SshError>((session, facts))
        }
    }))
    .await;
    let mut hosts = IndexMap::new();
    for (name, result) in names.iter().zip(results) {
        let mut run = HostRun {
            name: name.clone(),
            session: None,
            facts: serde_json::Value::Null,
            registered: IndexMap::new(),
            done: false,
            stats: Stats::default(),
            notified: HashSet::new(),
            units_changed: Default::default(),
        };
        match result {
            Ok((session, Ok(facts))) => {
                run.session = Some(Arc::new(session));
                run.facts = facts;
            }
            Ok((session, Err(why))) => {
                run.stats.round_trips = session.round_trips();
                session.close().await;
                leave_out(
                    reporter,
                    &mut run,
                    "facts",
                    Status::Failed,
                    &why.to_string(),
                );
            }
            Err(e) => leave_out(
                reporter,
                &mut run,
                "connect",
                Status::Unreachable,
                &e.to_string(),
            ),
        }
        hosts.insert(name.clone(), run);
    }
    Ok(hosts)
}

/// Reports why a host takes no part in the run (`step` being `connect` or `facts`).
fn leave_out(reporter: &Reporter, run: &mut HostRun, step: &str, status: Status, why: &str) {
    run.done = true;
    run.stats.count(status);
    reporter.result(&Line {
        host: &run.name,
        role: "",
        task: step,
        status,
        msg: why,
        diffs: &[],
        quiet: false,
    });
}

/// What the tasks of a play share.
struct PlayRun<'a> {
    world: &'a Arc<World>,
    opts: &'a Options,
    reporter: &'a Reporter,
    releases: &'a release::Cache,
    pki: &'a Pki,
    forks: &'a Arc<Semaphore>,
}

/// One task's result on one host.
struct TaskResult {
    status: Status,
    msg: String,
    diffs: Vec<Diff>,
    /// What `register` stores.
    data: serde_json::Value,
}

impl TaskResult {
    fn failed(msg: String) -> TaskResult {
        TaskResult {
            status: Status::Failed,
            data: serde_json::json!({"changed": false, "failed": true, "skipped": false, "msg": msg}),
            msg,
            diffs: Vec::new(),
        }
    }

    fn skipped() -> TaskResult {
        TaskResult {
            status: Status::Skipped,
            msg: String::new(),
            diffs: Vec::new(),
            data: serde_json::json!({"changed": false, "failed": false, "skipped": true}),
        }
    }

    fn unreachable(e: &SshError) -> TaskResult {
        TaskResult {
            status: Status::Unreachable,
            data: serde_json::json!({"failed": true, "unreachable": true, "msg": e.to_string()}),
            msg: e.to_string(),
            diffs: Vec::new(),
        }
    }
}

/// Runs `task` on the hosts of `batch` still in the run, and records each host's result.
async fn run_task(
    play: &PlayRun<'_>,
    role: &Role,
    task: &Task,
    batch: &[String],
    hosts: &mut IndexMap<String, HostRun>,
) {
    play.reporter
        .progress(&format!("{} : {}", role.name, task.name));
    let mut targets: Vec<&mut HostRun> = hosts
        .values_mut()
        .filter(|r| !r.done && batch.contains(&r.name))
        .collect();
    if task.run_once {
        targets.truncate(1);
    }
    let throttle = Semaphore::new(task.throttle.unwrap_or(usize::MAX >> 4));
    let results = join_all(targets.iter().map(|run| {
        let throttle = &throttle;
        async move {
            let _turn = throttle.acquire().await;
            let _slot = play.forks.acquire().await;
            run_on_host(play, role, task, run).await
        }
    }))
    .await;
    let mut once_data = None;
    for (run, result) in targets.into_iter().zip(results) {
        record(play.reporter, role, task, run, &result);
        once_data = Some(result.data);
    }
    // A run_once result is every host's result.
    if let (true, Some(name), Some(data)) = (task.run_once, &task.register, once_data) {
        for run in hosts.values_mut().filter(|r| batch.contains(&r.name)) {
            run.registered.insert(name.clone(), data.clone());
        }
    }
}

/// Reports a host's result, and keeps what the rest of the run needs of it.
fn record(reporter: &Reporter, role: &Role, task: &Task, run: &mut HostRun, result: &TaskResult) {
    reporter.result(&Line {
        host: &run.name,
        role: &role.name,
        task: &task.name,
        status: result.status,
        msg: &result.msg,
        diffs: &result.diffs,
        quiet: task.no_log,
    });
    let status = match result.status {
        Status::Failed if task.ignore_errors => Status::Ok,
        s => s,
    };
    run.stats.count(status);
    match status {
        Status::Failed | Status::Unreachable => run.done = true,
        Status::Changed => run.notified.extend(task.notify.iter().cloned()),
        _ => {}
    }
    if let Some(name) = &task.register {
        run.registered.insert(name.clone(), result.data.clone());
    }
}

/// Prepares `task` for one host and runs its calls (one, or one per `loop` item).
async fn run_on_host(play: &PlayRun<'_>, role: &Role, task: &Task, run: &HostRun) -> TaskResult {
    let Some(session) = &run.session else {
        return TaskResult::failed("no connection".into());
    };
    let overlay: IndexMap<String, Value> = run
        .registered
        .iter()
        .map(|(k, v)| (k.clone(), template::value_of(v)))
        .collect();
    let calls = match prepare(task, role, play.world, &run.name, &overlay) {
        Ok(Prepared::Skip) => return TaskResult::skipped(),
        Ok(Prepared::Calls(calls)) => calls,
        Err(e) => return TaskResult::failed(e.to_string()),
    };
    let ctx = Ctx {
        remote: session.as_ref(),
        host: &run.name,
        diff: play.opts.diff,
        releases: play.releases,
        pki: play.pki,
        units_changed: &run.units_changed,
    };
    let check = play.opts.check && task.check_mode != Some(false);
    let judge = Judge {
        play,
        task,
        host: &run.name,
        overlay: &overlay,
        check,
    };
    let mut tally = Tally::new();
    for call in calls {
        let result = match call.action.run(&ctx, check).await {
            Err(ModuleError::Ssh(e @ (SshError::Lost { .. } | SshError::Connect { .. }))) => {
                return TaskResult::unreachable(&e)
            }
            outcome => CallResult::of(outcome, call.item),
        };
        let result = match judge.apply(result) {
            Ok(r) => r,
            Err(e) => return TaskResult::failed(e.to_string()),
        };
        let failed = result.status == Status::Failed;
        tally.add(result);
        if failed && task.loop_over.is_none() {
            break;
        }
    }
    tally.finish(task.loop_over.is_some())
}

/// One module call's result: what is reported, and what `register` stores.
struct CallResult {
    status: Status,
    msg: String,
    diffs: Vec<Diff>,
    /// The command it ran, if any: its exit code and output.
    ran: Option<Ran>,
    data: serde_json::Value,
    item: Option<Value>,
}

impl CallResult {
    fn of(outcome: modules::Result<Outcome>, item: Option<Value>) -> CallResult {
        let mut result = match outcome {
            Ok(o) => CallResult::digest(o),
            Err(e) => {
                let msg = e.to_string();
                CallResult {
                    status: Status::Failed,
                    data: serde_json::json!({"changed": false, "failed": true, "msg": msg}),
                    msg,
                    diffs: Vec::new(),
                    ran: None,
                    item: None,
                }
            }
        };
        if let Some(item) = &item {
            result.data["item"] = template::to_json(item);
        }
        result.item = item;
        result
    }

    /// A command that exits non-zero has failed, unless failed_when says otherwise.
    fn digest(o: Outcome) -> CallResult {
        let status = match &o.ran {
            Some(ran) if ran.failed() => Status::Failed,
            _ if o.skipped => Status::Skipped,
            _ if o.changed => Status::Changed,
            _ => Status::Ok,
        };
        let mut data = serde_json::json!({
            "changed": o.changed, "failed": false, "skipped": o.skipped, "msg": o.msg,
        });
        if let Some(ran) = &o.ran {
            data["rc"] = ran.rc.into();
            data["stdout"] = ran.stdout.trim_end_matches('\n').into();
            data["stderr"] = ran.stderr.trim_end_matches('\n').into();
            data["stdout_lines"] = ran.stdout.lines().collect::<Vec<_>>().into();
            data["stderr_lines"] = ran.stderr.lines().collect::<Vec<_>>().into();
        }
        CallResult {
            status,
            msg: o.msg,
            diffs: o.diffs,
            ran: o.ran,
            data,
            item: None,
        }
    }

    /// What the task reports when this call failed.
    fn failure(&self) -> String {
        let what = match &self.ran {
            Some(ran) => {
                let detail = if ran.stderr.trim().is_empty() {
                    &ran.stdout
                } else {
                    &ran.stderr
                };
                format!("exit {}: {}", ran.rc, modules::last_lines(detail, 6))
            }
            None => self.msg.clone(),
        };
        match &self.item {
            Some(item) => format!("item {item}: {what}"),
            None => what,
        }
    }
}

/// `failed_when` and `changed_when`, which see the call's result under its register name.
struct Judge<'a> {
    play: &'a PlayRun<'a>,
    task: &'a Task,
    host: &'a str,
    overlay: &'a IndexMap<String, Value>,
    check: bool,
}

impl Judge<'_> {
    fn apply(&self, mut r: CallResult) -> Result<CallResult, TaskError> {
        let task = self.task;
        if task.changed_when.is_none() && task.failed_when.is_none() {
            return Ok(r);
        }
        let mut overlay = self.overlay.clone();
        if let Some(name) = &task.register {
            overlay.insert(name.clone(), template::value_of(&r.data));
        }
        if let Some(item) = &r.item {
            overlay.insert("item".into(), item.clone());
        }
        let scope = self.play.world.scope(self.host, overlay);
        // Nothing ran to judge: skipped, or a module that only planned in check mode.
        let ran = !(r.status == Status::Skipped || self.check && r.ran.is_none());
        if let (Some(cond), true) = (&task.failed_when, ran) {
            match holds(cond, &scope, &task.file)? {
                true => r.status = Status::Failed,
                false if r.status == Status::Failed && r.ran.is_some() => {
                    r.status = Status::Changed
                }
                false => {}
            }
        }
        if let (Some(cond), true, false) = (&task.changed_when, ran, r.status == Status::Failed) {
            r.status = if holds(cond, &scope, &task.file)? {
                Status::Changed
            } else {
                Status::Ok
            };
        } else if task.changed_when.is_some() && self.check && r.status == Status::Changed {
            // A command not run in check mode whose change depends on its output: unknown.
            r.status = Status::Skipped;
        }
        r.data["changed"] = (r.status == Status::Changed).into();
        r.data["failed"] = (r.status == Status::Failed).into();
        Ok(r)
    }
}

/// The calls of a task on one host (several with `loop`), summed up.
struct Tally {
    msg: String,
    diffs: Vec<Diff>,
    results: Vec<serde_json::Value>,
    any_changed: bool,
    all_skipped: bool,
    /// The first failure.
    failure: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            msg: String::new(),
            diffs: Vec::new(),
            results: Vec::new(),
            any_changed: false,
            all_skipped: true,
            failure: None,
        }
    }

    fn add(&mut self, r: CallResult) {
        if r.status == Status::Failed {
            if self.failure.is_none() {
                self.failure = Some(r.failure());
            }
        } else if !r.msg.is_empty() && matches!(r.status, Status::Changed | Status::Ok) {
            if !self.msg.is_empty() {
                self.msg.push_str("; ");
            }
            self.msg.push_str(&r.msg);
        }
        self.diffs.extend(r.diffs);
        self.any_changed |= r.status == Status::Changed;
        self.all_skipped &= r.status == Status::Skipped;
        self.results.push(r.data);
    }

    fn finish(mut self, looped: bool) -> TaskResult {
        let status = if self.failure.is_some() {
            Status::Failed
        } else if self.any_changed {
            Status::Changed
        } else if self.all_skipped {
            Status::Skipped
        } else {
            Status::Ok
        };
        let msg = self.failure.unwrap_or(self.msg);
        let data = if looped {
            serde_json::json!({
                "changed": self.any_changed, "failed": status == Status::Failed,
                "skipped": self.all_skipped, "msg": msg, "results": self.results,
            })
        } else {
            self.results.pop().unwrap_or_default()
        };
        TaskResult {
            status,
            msg,
            diffs: self.diffs,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(rc: i64, stdout: &str, stderr: &str) -> Outcome {
        Outcome {
            ran: Some(Ran {
                rc,
                stdout: stdout.into(),
                stderr: stderr.into(),
            }),
            ..Outcome::changed("")
        }
    }

    #[test]
    fn a_command_exiting_non_zero_fails_with_its_last_words() {
        let r = CallResult::of(Ok(command(2, "out\n", "a\nb\n")), None);
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.failure(), "exit 2: a | b");
        assert_eq!(
            r.data,
            serde_json::json!({
                "changed": true, "failed": false, "skipped": false, "msg": "", "rc": 2,
                "stdout": "out", "stderr": "a\nb", "stdout_lines": ["out"], "stderr_lines": ["a", "b"],
            })
        );
        let quiet = CallResult::of(Ok(command(1, "only stdout\n", "")), None);
        assert_eq!(quiet.failure(), "exit 1: only stdout");
    }

    #[test]
    fn a_module_result_registers_no_exit_code() {
        let r = CallResult::of(Ok(Outcome::changed("started etcd")), None);
        assert_eq!(r.status, Status::Changed);
        assert_eq!(
            r.data,
            serde_json::json!({"changed": true, "failed": false, "skipped": false, "msg": "started etcd"})
        );
        let failed = CallResult::of(Err(ModuleError::Failed("unit x not found".into())), None);
        assert_eq!(failed.status, Status::Failed);
        assert_eq!(failed.failure(), "unit x not found");
    }

    #[test]
    fn a_loop_sums_its_items_and_names_the_first_that_failed() {
        let item = |n: i64| Some(Value::from(n));
        let mut tally = Tally::new();
        tally.add(CallResult::of(Ok(Outcome::changed("created /a")), item(1)));
        tally.add(CallResult::of(Ok(Outcome::ok()), item(2)));
        tally.add(CallResult::of(Ok(command(3, "", "no")), item(3)));
        tally.add(CallResult::of(Ok(command(4, "", "again")), item(4)));
        let result = tally.finish(true);
        assert_eq!(result.status, Status::Failed);
        assert_eq!(result.msg, "item 3: exit 3: no");
        assert_eq!(result.data["results"].as_array().map(Vec::len), Some(4));
        assert_eq!(result.data["results"][0]["item"], 1);

        let mut tally = Tally::new();
        tally.add(CallResult::of(Ok(Outcome::changed("created /a")), item(1)));
        tally.add(CallResult::of(Ok(Outcome::changed("created /b")), item(2)));
        let result = tally.finish(true);
        assert_eq!(result.status, Status::Changed);
        assert_eq!(result.msg, "created /a; created /b");
    }

    #[test]
    fn a_task_whose_calls_were_all_skipped_is_skipped() {
        let mut tally = Tally::new();
        tally.add(CallResult::of(Ok(Outcome::skipped()), None));
        let result = tally.finish(false);
        assert_eq!(result.status, Status::Skipped);
        assert_eq!(result.data["skipped"], true);
    }
}
