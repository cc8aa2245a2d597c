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
use crate::roles::{Control, Part, Play, Role, RoleError, Site, Task};
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
    /// `meta: end_host` or `end_play`: no more tasks in this play.
    ended: bool,
    stats: Stats,
    notified: HashSet<String>,
    /// A systemd unit file was written since the last daemon-reload.
    units_changed: std::sync::atomic::AtomicBool,
    /// The blocks a task failed in on this host, by block id.
    blocks: HashMap<u32, BlockState>,
}

/// Where a host's failure inside a block stands.
#[derive(Debug, Clone, Copy, Default)]
struct BlockState {
    /// A task of its `block` part failed: the rest of it is skipped, `rescue` runs.
    block_failed: bool,
    rescue_failed: bool,
    always_failed: bool,
}

impl BlockState {
    /// Whether the host runs a task in `part` of this block.
    fn runs(&self, part: Part) -> bool {
        match part {
            Part::Block => !(self.block_failed || self.rescue_failed || self.always_failed),
            Part::Rescue => self.block_failed && !self.rescue_failed && !self.always_failed,
            Part::Always => !self.always_failed,
        }
    }

    /// A failure no rescue of this block took over: it goes on to the enclosing block.
    fn unhandled(&self, has_rescue: bool) -> bool {
        (self.block_failed && !has_rescue) || self.rescue_failed || self.always_failed
    }

    fn fail(&mut self, part: Part) {
        match part {
            Part::Block => self.block_failed = true,
            Part::Rescue => self.rescue_failed = true,
            Part::Always => self.always_failed = true,
        }
    }
}

/// Whether the host runs `task`, given the blocks it failed in.
fn runs_here(task: &Task, run: &HostRun) -> bool {
    task.blocks
        .iter()
        .all(|b| run.blocks.get(&b.id).is_none_or(|s| s.runs(b.part)))
}

/// The `meta: flush_handlers` hactl puts between a play's pre_tasks, roles and tasks, and
/// post_tasks, as Ansible runs handlers there.
static FLUSH: std::sync::LazyLock<Task> = std::sync::LazyLock::new(|| {
    let mut t = crate::roles::control_task(
        &Arc::from("(play)"),
        0,
        "flush handlers",
        Control::FlushHandlers,
    );
    t.tags = vec!["always".into()];
    t
});

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
    // For delegate_to: every host's connection, and one to each host tasks delegate to that
    // takes no part in the plays (every inventory host when a delegate_to is an expression).
    let mut sessions: HashMap<String, Arc<Session>> = hosts
        .iter()
        .filter_map(|(h, r)| r.session.clone().map(|s| (h.clone(), s)))
        .collect();
    let delegates: Vec<String> = {
        let named: Vec<&String> = plans
            .iter()
            .flat_map(|p| p.tasks.iter().chain(p.handlers.iter()))
            .filter_map(|(_, t)| t.delegate_to.as_ref())
            .collect();
        let any_expression = named.iter().any(|d| template::is_template(d));
        inventory
            .hosts
            .keys()
            .filter(|h| !involved.contains(h) && (any_expression || named.contains(h)))
            .cloned()
            .collect()
    };
    if !delegates.is_empty() {
        for host in &delegates {
            reporter.add_secrets(host, secrets_of(inventory, host, opts));
        }
        let others = connect_all(inventory, &delegates, opts, &reporter, &forks).await?;
        for (h, r) in others {
            if let Some(s) = r.session {
                sessions.insert(h, s);
            }
        }
    }
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
            play: plan.play,
            sessions: &sessions,
        };
        for run in hosts.values_mut() {
            run.ended = false;
        }
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
        'batches: for batch in play_hosts.chunks(batch_size) {
            let failed_before = failures(&hosts, batch);
            let hosts_failed_before = failed_hosts(&hosts, batch);
            for (role, task) in &plan.tasks {
                if !tag_selected(task, &opts.tags) {
                    continue;
                }
                match &task.control {
                    Some(Control::FlushHandlers) => {
                        run_handlers(&play, plan, batch, &mut hosts).await;
                    }
                    Some(Control::EndBlock { id, has_rescue }) => {
                        end_block(task, *id, *has_rescue, batch, &mut hosts);
                    }
                    Some(Control::EndPlay) => {
                        run_task(&play, role, task, batch, &mut hosts).await;
                        if batch.iter().any(|h| hosts.get(h).is_some_and(|r| r.ended)) {
                            for h in &play_hosts {
                                if let Some(run) = hosts.get_mut(h) {
                                    run.ended = true;
                                }
                            }
                            break 'batches;
                        }
                    }
                    _ => run_task(&play, role, task, batch, &mut hosts).await,
                }
                // any_errors_fatal, max_fail_percentage: the play stops for every host.
                let failed_now = failed_hosts(&hosts, batch) - hosts_failed_before;
                let too_many = plan
                    .play
                    .max_fail_percentage
                    .is_some_and(|pct| failed_now as f64 * 100.0 / batch.len().max(1) as f64 > pct);
                if failed_now > 0 && (plan.play.any_errors_fatal || too_many) {
                    reporter.warn(&format!(
                        "play {}: {} — the play stops on every host",
                        plan.play.name,
                        if too_many {
                            format!(
                                "{failed_now} of {} hosts failed, over max_fail_percentage",
                                batch.len()
                            )
                        } else {
                            "a host failed and any_errors_fatal is set".to_string()
                        }
                    ));
                    for h in &play_hosts {
                        if let Some(run) = hosts.get_mut(h) {
                            run.done = true;
                        }
                    }
                    break 'batches;
                }
            }
            run_handlers(&play, plan, batch, &mut hosts).await;
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

    // The delegates' connections, closed; the others' are the hosts' own, closed below.
    for (name, session) in sessions {
        if hosts.get(&name).is_some_and(|r| r.session.is_some()) {
            continue;
        }
        if let Ok(session) = Arc::try_unwrap(session) {
            session.close().await;
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

/// Whether `notified` names the handler or one of the topics it listens to.
fn handler_notified(handler: &Task, notified: &HashSet<String>) -> bool {
    notified.contains(&handler.name) || handler.listen.iter().any(|t| notified.contains(t))
}

/// Runs the handlers notified on the hosts of `batch`, in the order they are defined, and
/// clears the notifications.
async fn run_handlers(
    play: &PlayRun<'_>,
    plan: &PlayPlan<'_>,
    batch: &[String],
    hosts: &mut IndexMap<String, HostRun>,
) {
    for (i, (role, handler)) in plan.handlers.iter().enumerate() {
        // Of handlers that share a name (a role listed twice), only the last runs, as in
        // Ansible.
        if plan.handlers[i + 1..]
            .iter()
            .any(|(_, later)| later.name == handler.name)
        {
            continue;
        }
        let notified: Vec<String> = batch
            .iter()
            .filter(|h| {
                hosts
                    .get(*h)
                    .is_some_and(|r| !r.done && !r.ended && handler_notified(handler, &r.notified))
            })
            .cloned()
            .collect();
        if !notified.is_empty() {
            run_task(play, role, handler, &notified, hosts).await;
        }
    }
    for h in batch {
        if let Some(run) = hosts.get_mut(h) {
            run.notified.clear();
        }
    }
}

/// The end of block `id` on each host: a failure its rescue did not take over goes on to the
/// enclosing block, or ends the host's run (it was counted failed when it happened).
fn end_block(
    task: &Task,
    id: u32,
    has_rescue: bool,
    batch: &[String],
    hosts: &mut IndexMap<String, HostRun>,
) {
    for run in hosts.values_mut().filter(|r| batch.contains(&r.name)) {
        let Some(state) = run.blocks.remove(&id) else {
            continue;
        };
        if run.done || !state.unhandled(has_rescue) {
            continue;
        }
        match task.blocks.last() {
            Some(parent) => run.blocks.entry(parent.id).or_default().fail(parent.part),
            None => run.done = true,
        }
    }
}

/// Hosts of `batch` that failed or could not be reached.
fn failed_hosts(hosts: &IndexMap<String, HostRun>, batch: &[String]) -> usize {
    batch
        .iter()
        .filter_map(|h| hosts.get(h))
        .filter(|r| r.stats.failed + r.stats.unreachable > 0)
        .count()
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
        // pre_tasks, handlers, roles, tasks, handlers, post_tasks (and the handlers at the end).
        let mut tasks: Vec<(&Arc<Role>, &Task)> = Vec::new();
        let own = play.own.as_ref();
        if let Some(own) = own {
            tasks.extend(own.tasks[..play.pre_tasks].iter().map(|t| (own, t)));
            if play.pre_tasks > 0 {
                tasks.push((own, &FLUSH));
            }
        }
        tasks.extend(
            play.roles
                .iter()
                .flat_map(|r| r.tasks.iter().map(move |t| (r, t))),
        );
        if let Some(own) = own {
            let end = own.tasks.len() - play.post_tasks;
            tasks.extend(own.tasks[play.pre_tasks..end].iter().map(|t| (own, t)));
            if play.post_tasks > 0 {
                tasks.push((own, &FLUSH));
                tasks.extend(own.tasks[end..].iter().map(|t| (own, t)));
            }
        }
        let handlers = play
            .roles
            .iter()
            .chain(own)
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
/// the run), facts are made up and `placeholders` holds stand-ins for the results registered so
/// far.
fn world_for(
    inventory: &Inventory,
    site: &Site,
    plan: &PlayPlan,
    hosts: &IndexMap<String, HostRun>,
    opts: &Options,
    env: &Arc<minijinja::Environment<'static>>,
    placeholders: Option<&IndexMap<String, serde_json::Value>>,
) -> Arc<World> {
    let mut defaults = vec![&site.stack];
    defaults.extend(plan.play.roles.iter().map(|r| &r.defaults));
    let mut above = vec![&plan.play.vars];
    above.extend(plan.play.roles.iter().map(|r| &r.vars));
    // The running hactl, for roles that install it (the prober).
    let exe = std::env::current_exe().ok();
    let gather = plan.play.gather_facts;
    crate::stack::world(
        inventory,
        &defaults,
        &above,
        &opts.extra_vars,
        env,
        |host| {
            let mut fixed = IndexMap::new();
            let facts = if let Some(stand_ins) = placeholders {
                for (name, stand_in) in stand_ins {
                    fixed.insert(name.clone(), stand_in.clone());
                }
                Some(facts::placeholder(host))
            } else {
                hosts
                    .get(host)
                    .map(|r| r.facts.clone())
                    .filter(|f| !f.is_null())
            };
            if let Some(f) = facts {
                if gather {
                    // Ansible's names: ansible_facts[...] and ansible_* (ansible_distribution, ...).
                    let ansible = facts::ansible(&f);
                    for (k, v) in &ansible {
                        fixed.insert(format!("ansible_{k}"), v.clone());
                    }
                    fixed.insert("ansible_facts".into(), serde_json::Value::Object(ansible));
                }
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
            fixed.insert("ansible_play_hosts".into(), plan.hosts.clone().into());
            fixed.insert("ansible_play_hosts_all".into(), plan.hosts.clone().into());
            fixed.insert("omit".into(), prepare::OMIT.into());
            fixed
        },
    )
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
    // What a rescue reads of the failure it takes over.
    registered.insert(
        "ansible_failed_result".into(),
        crate::template::value_of(placeholder_result(&modules::specs()[0])),
    );
    let mut stand_ins: IndexMap<String, serde_json::Value> = IndexMap::new();
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
                if !plan
                    .handlers
                    .iter()
                    .any(|(_, h)| &h.name == name || h.listen.contains(name))
                {
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
        let world = world_for(
            inventory,
            site,
            plan,
            &no_hosts,
            opts,
            env,
            Some(&stand_ins),
        );
        let selected = plan
            .tasks
            .iter()
            .filter(|(_, t)| tag_selected(t, &opts.tags));
        for (role, task) in selected.chain(plan.handlers.iter()) {
            match &task.control {
                Some(
                    Control::FlushHandlers
                    | Control::EndBlock { .. }
                    | Control::EndHost
                    | Control::EndPlay
                    | Control::Noop,
                ) => continue,
                Some(Control::SetFact) => {
                    // Its facts, as they render with placeholder facts, stand for the real ones.
                    for host in &plan.hosts {
                        let r = set_fact(&world, task, host, &registered);
                        if r.status == Status::Failed {
                            if !shape_unknown(task, &r.msg, &stand_ins) {
                                push(r.msg);
                            }
                        } else if let Some(facts) = r.data["ansible_facts"].as_object() {
                            for (k, v) in facts {
                                registered.insert(k.clone(), crate::template::value_of(v));
                            }
                        }
                    }
                }
                Some(Control::Assert) => {
                    if let serde_json::Value::Object(args) = &task.args {
                        let that = match args.get("that") {
                            Some(serde_json::Value::Array(a)) => a.clone(),
                            Some(other) => vec![other.clone()],
                            None => Vec::new(),
                        };
                        for expr in that {
                            let text = expr
                                .as_str()
                                .map(str::to_string)
                                .unwrap_or(expr.to_string());
                            let e = crate::roles::task_expr(&text, task.args_line);
                            if let Err(err) = env.compile_expression(&e.text) {
                                push(format!("{}:{}: assert: {err}", task.file, task.args_line));
                            }
                        }
                    }
                }
                None => {
                    for host in &plan.hosts {
                        let play_user = plan.play.become_user.as_ref();
                        if let Err(e) = prepare(task, role, &world, host, &registered, play_user) {
                            if !shape_unknown(task, &e.0, &stand_ins) {
                                push(e.to_string());
                            }
                        }
                    }
                }
            }
            if let Some(name) = &task.until {
                for expr in name {
                    if let Err(e) = env.compile_expression(&expr.text) {
                        push(format!("{}:{}: until: {e}", task.file, expr.line));
                    }
                }
            }
            if let Some(to) = &task.delegate_to {
                let known = to == "localhost"
                    || to == "127.0.0.1"
                    || template::is_template(to)
                    || inventory.hosts.contains_key(to);
                if !known {
                    push(format!(
                        "{}:{}: delegate_to: no host `{to}` in {}",
                        task.file,
                        task.line,
                        inventory.path.display()
                    ));
                }
            }
            if let Some(name) = &task.register {
                let mut stand_in = placeholder_result(task.module);
                if task.until.is_some() {
                    stand_in["attempts"] = 1.into();
                }
                registered.insert(name.clone(), crate::template::value_of(stand_in.clone()));
                stand_ins.insert(name.clone(), stand_in);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::Invalid(errors))
    }
}

/// Whether `error`, met rendering `task` before the run, may come only from the stand-ins for
/// registered results, whose shape the check cannot know (`r.json.items`, `r.results[0]`,
/// `r.stdout | from_json`): the task reads a registered result, and the error is neither a
/// syntax error nor an undefined variable other than one. Such a task is checked when it runs,
/// as Ansible does.
fn shape_unknown(
    task: &Task,
    error: &str,
    registered: &IndexMap<String, serde_json::Value>,
) -> bool {
    let mut text = task.args.to_string();
    for part in [&task.loop_over, &task.environment].into_iter().flatten() {
        text.push_str(&part.to_string());
    }
    for part in [&task.become_user, &task.delegate_to].into_iter().flatten() {
        text.push(' ');
        text.push_str(part);
    }
    for expr in task.when.iter() {
        text.push(' ');
        text.push_str(&expr.text);
    }
    for (_, value) in &task.vars {
        text.push_str(&value.to_string());
    }
    let word = |name: &str| {
        text.match_indices(name).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + name.len()..].chars().next();
            let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !ident(before) && !ident(after)
        })
    };
    if error.contains("syntax error") || !registered.keys().any(|name| word(name)) {
        return false;
    }
    // "undefined variable: `NAME...` is undefined": tolerated only under a registered name.
    match error.split_once("undefined variable: `") {
        Some((_, rest)) => {
            let root: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            registered.contains_key(&root)
        }
        None => true,
    }
}

/// What a task calling `module` registers, made up: with the fields the module adds.
fn placeholder_result(module: &modules::Spec) -> serde_json::Value {
    let mut result = serde_json::json!({
        "changed": false, "failed": false, "skipped": false, "msg": "", "rc": 0,
        "stdout": "", "stderr": "", "stdout_lines": [], "stderr_lines": [], "results": [],
    });
    if let serde_json::Value::Object(fields) = &module.registers {
        for (k, v) in fields {
            result[k] = v.clone();
        }
    }
    result
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
        let mut target = ssh::target(inventory, name)?;
        ssh::override_target(&mut target, &opts.extra_vars)
            .map_err(|e| ApplyError::Invalid(vec![e]))?;
        targets.push(target);
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
            ended: false,
            stats: Stats::default(),
            notified: HashSet::new(),
            units_changed: Default::default(),
            blocks: HashMap::new(),
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
    play: &'a Play,
    sessions: &'a HashMap<String, Arc<Session>>,
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
        .filter(|r| !r.done && !r.ended && batch.contains(&r.name) && runs_here(task, r))
        .collect();
    if targets.is_empty() {
        return;
    }
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
    if let Some(name) = &task.register {
        run.registered.insert(name.clone(), result.data.clone());
    }
    if matches!(
        task.control,
        Some(Control::EndHost | Control::EndPlay | Control::Noop)
    ) {
        // Ansible's recap does not count meta tasks.
        if result.status == Status::Ok && task.control != Some(Control::Noop) {
            run.ended = true;
        }
        if result.status != Status::Failed {
            return;
        }
    }
    if task.control == Some(Control::SetFact) && result.status != Status::Failed {
        if let Some(facts) = result.data["ansible_facts"].as_object() {
            for (k, v) in facts {
                run.registered.insert(k.clone(), v.clone());
            }
        }
    }
    match result.status {
        Status::Failed if task.ignore_errors => {
            // As Ansible counts it: ok, and ignored.
            run.stats.ok += 1;
            run.stats.ignored += 1;
        }
        Status::Failed => {
            run.registered
                .insert("ansible_failed_result".into(), result.data.clone());
            match task.blocks.last() {
                None => {
                    run.stats.failed += 1;
                    run.done = true;
                }
                Some(inner) => {
                    run.blocks.entry(inner.id).or_default().fail(inner.part);
                    // Taken over by the first enclosing block whose `block` part holds it and
                    // that has a rescue, as Ansible counts it.
                    let rescued = task
                        .blocks
                        .iter()
                        .rev()
                        .any(|b| b.part == Part::Block && b.has_rescue);
                    if rescued {
                        run.stats.rescued += 1;
                    } else {
                        run.stats.failed += 1;
                    }
                }
            }
        }
        Status::Unreachable => {
            run.stats.count(Status::Unreachable);
            run.done = true;
        }
        Status::Changed => {
            run.stats.count(Status::Changed);
            run.notified.extend(task.notify.iter().cloned());
        }
        s => run.stats.count(s),
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
    match &task.control {
        Some(Control::SetFact) => return set_fact(play.world, task, &run.name, &overlay),
        Some(Control::Assert) => return assert(play.world, task, &run.name, &overlay),
        Some(c @ (Control::EndHost | Control::EndPlay | Control::Noop)) => {
            return match control_scope(play.world, task, &run.name, &overlay) {
                Err(e) => TaskResult::failed(e),
                Ok(None) => TaskResult::skipped(),
                Ok(Some(_)) => TaskResult {
                    status: Status::Ok,
                    msg: match c {
                        Control::EndHost => "the play ends for this host".into(),
                        Control::EndPlay => "the play ends".into(),
                        _ => String::new(),
                    },
                    diffs: Vec::new(),
                    data: serde_json::json!({"changed": false, "failed": false, "skipped": false}),
                },
            };
        }
        _ => {}
    }
    let ready = match prepare(
        task,
        role,
        play.world,
        &run.name,
        &overlay,
        play.play.become_user.as_ref(),
    ) {
        Ok(Prepared::Skip) => return TaskResult::skipped(),
        Ok(Prepared::Calls(ready)) => ready,
        Err(e) => return TaskResult::failed(e.to_string()),
    };
    let overlay = ready.overlay;
    let scope = ready.scope;
    let env = ready.env;
    let how = crate::ssh::Become {
        root: task.become_root.or(play.play.become_root),
        user: ready.become_user,
    };
    let delegate = ready.delegate;
    let local;
    let delegated;
    let remote: &dyn modules::Remote = match delegate.as_deref() {
        Some("localhost" | "127.0.0.1") => {
            local = modules::Local { env };
            &local
        }
        Some(other) => match play.sessions.get(other) {
            Some(s) => {
                delegated = modules::As {
                    session: s.as_ref(),
                    how,
                    env,
                };
                &delegated
            }
            None => {
                return TaskResult::failed(format!(
                    "{}:{}: delegate_to: {other} is not a host of this run",
                    task.file, task.line
                ))
            }
        },
        None => {
            delegated = modules::As {
                session: session.as_ref(),
                how,
                env,
            };
            &delegated
        }
    };
    let ctx = Ctx {
        remote,
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
    let attempts = match until_attempts(task, &scope) {
        Ok(n) => n,
        Err(e) => return TaskResult::failed(e),
    };
    let mut tally = Tally::new();
    for call in ready.calls {
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let result = match call.action.run(&ctx, check).await {
                Err(ModuleError::Ssh(e @ (SshError::Lost { .. } | SshError::Connect { .. }))) => {
                    return TaskResult::unreachable(&e)
                }
                outcome => {
                    let mut r = CallResult::of(outcome, call.item.clone(), &task.loop_var);
                    r.label = call.label.clone();
                    r
                }
            };
            let mut result = match judge.apply(result) {
                Ok(r) => r,
                Err(e) => return TaskResult::failed(e.to_string()),
            };
            let Some((until, max, delay)) = &attempts else {
                break result;
            };
            result.data["attempts"] = attempt.into();
            let done = result.status != Status::Failed
                && match judge.holds(until, &result) {
                    Ok(b) => b,
                    Err(e) => return TaskResult::failed(e.to_string()),
                };
            if done || check && result.ran.is_none() {
                break result;
            }
            if attempt >= *max {
                result.status = Status::Failed;
                result.data["failed"] = true.into();
                result.msg = format!(
                    "`until` did not hold after {attempt} attempts{}",
                    if result.msg.is_empty() {
                        String::new()
                    } else {
                        format!(" (last: {})", result.msg)
                    }
                );
                result.ran = None;
                break result;
            }
            play.reporter.warn(&format!(
                "{}: {} ({}): retrying, {} attempts left",
                run.name,
                task.name,
                role.name,
                max - attempt
            ));
            tokio::time::sleep(*delay).await;
        };
        let failed = result.status == Status::Failed;
        tally.add(result);
        if failed && task.loop_over.is_none() {
            break;
        }
    }
    tally.finish(task.loop_over.is_some())
}

/// `until` with its attempts (1 + `retries`, default 3, as Ansible) and `delay` (default 5 s).
fn until_attempts<'t>(
    task: &'t Task,
    scope: &Arc<template::Scope>,
) -> Result<Option<(&'t crate::roles::Condition, u32, std::time::Duration)>, String> {
    let Some(until) = &task.until else {
        return Ok(None);
    };
    let number =
        |raw: &Option<serde_json::Value>, default: u64, what: &str| -> Result<u64, String> {
            let Some(raw) = raw else { return Ok(default) };
            let source = template::Source {
                file: &task.file,
                line: task.line,
            };
            let v = template::to_json(&scope.render_json(raw, &source).map_err(|e| e.to_string())?);
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or(format!(
                    "{}:{}: {what}: expected a number, got {v}",
                    task.file, task.line
                ))
        };
    let retries = number(&task.retries, 3, "retries")?;
    let delay = number(&task.delay, 5, "delay")?;
    Ok(Some((
        until,
        1 + retries.min(10_000) as u32,
        std::time::Duration::from_secs(delay),
    )))
}

/// What `set_fact` and `assert` see on `host`: its variables, `overlay` and the task's `vars`;
/// None when the task's `when` does not hold.
fn control_scope(
    world: &Arc<World>,
    task: &Task,
    host: &str,
    overlay: &IndexMap<String, Value>,
) -> Result<Option<Arc<crate::template::Scope>>, String> {
    let overlay = prepare::with_task_vars(task, world, host, overlay).map_err(|e| e.0)?;
    let scope = world.scope(host, overlay);
    Ok(prepare::holds(&task.when, &scope, &task.file)
        .map_err(|e| e.0)?
        .then_some(scope))
}

/// `set_fact`: the arguments, rendered, become the host's variables for the rest of the run.
fn set_fact(
    world: &Arc<World>,
    task: &Task,
    host: &str,
    overlay: &IndexMap<String, Value>,
) -> TaskResult {
    let facts = (|| -> Result<serde_json::Value, String> {
        let Some(scope) = control_scope(world, task, host, overlay)? else {
            return Ok(serde_json::Value::Null);
        };
        let source = template::Source {
            file: &task.file,
            line: task.args_line,
        };
        let mut facts = serde_json::Map::new();
        if let serde_json::Value::Object(args) = &task.args {
            for (k, raw) in args {
                if k == "cacheable" {
                    continue;
                }
                let v = scope.render_json(raw, &source).map_err(|e| e.to_string())?;
                facts.insert(k.clone(), template::to_json(&v));
            }
        }
        Ok(serde_json::Value::Object(facts))
    })();
    match facts {
        Ok(serde_json::Value::Null) => TaskResult::skipped(),
        Ok(facts) => TaskResult {
            status: Status::Ok,
            msg: String::new(),
            diffs: Vec::new(),
            data: serde_json::json!({"changed": false, "failed": false, "skipped": false, "ansible_facts": facts}),
        },
        Err(e) => TaskResult::failed(e),
    }
}

/// `assert`: every expression of `that` must hold; else `fail_msg` (or `msg`).
fn assert(
    world: &Arc<World>,
    task: &Task,
    host: &str,
    overlay: &IndexMap<String, Value>,
) -> TaskResult {
    let outcome = (|| -> Result<Option<Result<String, String>>, String> {
        let Some(scope) = control_scope(world, task, host, overlay)? else {
            return Ok(None);
        };
        let args = task.args.as_object().cloned().unwrap_or_default();
        let that: Vec<String> = match args.get("that") {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(other) => vec![other.to_string()],
            None => Vec::new(),
        };
        let source = template::Source {
            file: &task.file,
            line: task.args_line,
        };
        let text = |key: &str| -> Result<Option<String>, String> {
            match args.get(key) {
                None => Ok(None),
                Some(raw) => Ok(Some(
                    scope
                        .render_json(raw, &source)
                        .map_err(|e| e.to_string())?
                        .to_string(),
                )),
            }
        };
        for expr in &that {
            let cond = vec![crate::roles::task_expr(expr, task.args_line)];
            if !prepare::holds(&cond, &scope, &task.file).map_err(|e| e.0)? {
                let msg = match text("fail_msg")?.or(text("msg")?) {
                    Some(m) => m,
                    None => format!("Assertion failed: {expr}"),
                };
                return Ok(Some(Err(msg)));
            }
        }
        Ok(Some(Ok(
            text("success_msg")?.unwrap_or_else(|| "All assertions passed".into())
        )))
    })();
    match outcome {
        Ok(None) => TaskResult::skipped(),
        Ok(Some(Ok(msg))) => TaskResult {
            status: Status::Ok,
            data: serde_json::json!({"changed": false, "failed": false, "skipped": false, "msg": msg}),
            msg,
            diffs: Vec::new(),
        },
        Ok(Some(Err(msg))) | Err(msg) => TaskResult::failed(msg),
    }
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
    /// The item's `loop_control.label`: its message and failure are prefixed with it.
    label: Option<String>,
}

impl CallResult {
    /// The result of one call; in a loop, the item under the loop's variable (`item`, or
    /// `loop_control.loop_var`) and that name as `ansible_loop_var`, as Ansible registers them.
    fn of(outcome: modules::Result<Outcome>, item: Option<Value>, loop_var: &str) -> CallResult {
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
                    label: None,
                }
            }
        };
        if let Some(item) = &item {
            result.data[loop_var] = template::to_json(item);
            result.data["ansible_loop_var"] = loop_var.into();
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
        if let Some(serde_json::Value::Object(fields)) = &o.data {
            for (k, v) in fields {
                if data.get(k).is_none() {
                    data[k] = v.clone();
                }
            }
        }
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
            label: None,
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
    /// `cond` (until) over the call's result, under its register name and as `result`.
    fn holds(&self, cond: &crate::roles::Condition, r: &CallResult) -> Result<bool, TaskError> {
        let mut overlay = self.overlay.clone();
        let data = template::value_of(&r.data);
        if let Some(name) = &self.task.register {
            overlay.insert(name.clone(), data.clone());
        }
        if let Some(item) = &r.item {
            overlay.insert(self.task.loop_var.clone(), item.clone());
        }
        let scope = self.play.world.scope(self.host, overlay);
        holds(cond, &scope, &self.task.file)
    }

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
            overlay.insert(task.loop_var.clone(), item.clone());
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
        let labelled = |text: String| match &r.label {
            Some(label) => format!("({label}) {text}"),
            None => text,
        };
        if r.status == Status::Failed {
            if self.failure.is_none() {
                self.failure = Some(labelled(r.failure()));
            }
        } else if matches!(r.status, Status::Changed | Status::Ok)
            && !(r.msg.is_empty() && r.label.is_none())
        {
            if !self.msg.is_empty() {
                self.msg.push_str("; ");
            }
            self.msg.push_str(labelled(r.msg.clone()).trim_end());
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
        let r = CallResult::of(Ok(command(2, "out\n", "a\nb\n")), None, "item");
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.failure(), "exit 2: a | b");
        assert_eq!(
            r.data,
            serde_json::json!({
                "changed": true, "failed": false, "skipped": false, "msg": "", "rc": 2,
                "stdout": "out", "stderr": "a\nb", "stdout_lines": ["out"], "stderr_lines": ["a", "b"],
            })
        );
        let quiet = CallResult::of(Ok(command(1, "only stdout\n", "")), None, "item");
        assert_eq!(quiet.failure(), "exit 1: only stdout");
    }

    #[test]
    fn a_module_result_registers_no_exit_code() {
        let r = CallResult::of(Ok(Outcome::changed("started etcd")), None, "item");
        assert_eq!(r.status, Status::Changed);
        assert_eq!(
            r.data,
            serde_json::json!({"changed": true, "failed": false, "skipped": false, "msg": "started etcd"})
        );
        let failed = CallResult::of(
            Err(ModuleError::Failed("unit x not found".into())),
            None,
            "item",
        );
        assert_eq!(failed.status, Status::Failed);
        assert_eq!(failed.failure(), "unit x not found");
    }

    #[test]
    fn a_module_registers_its_own_fields_beside_the_engines() {
        let outcome = Outcome::ok().with_data(serde_json::json!({
            "stat": {"exists": true, "mode": "0644"}, "changed": true, "msg": "mine",
        }));
        let r = CallResult::of(Ok(outcome), Some(Value::from("a")), "item");
        assert_eq!(r.status, Status::Ok);
        assert_eq!(
            r.data,
            serde_json::json!({
                "changed": false, "failed": false, "skipped": false, "msg": "",
                "stat": {"exists": true, "mode": "0644"}, "item": "a",
                "ansible_loop_var": "item",
            })
        );
    }

    #[test]
    fn tasks_are_checked_against_the_fields_a_module_registers() {
        let stat = placeholder_result(modules::spec("stat").unwrap());
        assert_eq!(stat["stat"]["exists"], true);
        assert_eq!(stat["rc"], 0);
        let command = placeholder_result(modules::spec("command").unwrap());
        assert!(command.get("stat").is_none());
    }

    #[test]
    fn a_loop_sums_its_items_and_names_the_first_that_failed() {
        let item = |n: i64| Some(Value::from(n));
        let mut tally = Tally::new();
        tally.add(CallResult::of(
            Ok(Outcome::changed("created /a")),
            item(1),
            "item",
        ));
        tally.add(CallResult::of(Ok(Outcome::ok()), item(2), "item"));
        tally.add(CallResult::of(Ok(command(3, "", "no")), item(3), "item"));
        tally.add(CallResult::of(Ok(command(4, "", "again")), item(4), "item"));
        let result = tally.finish(true);
        assert_eq!(result.status, Status::Failed);
        assert_eq!(result.msg, "item 3: exit 3: no");
        assert_eq!(result.data["results"].as_array().map(Vec::len), Some(4));
        assert_eq!(result.data["results"][0]["item"], 1);

        let mut tally = Tally::new();
        tally.add(CallResult::of(
            Ok(Outcome::changed("created /a")),
            item(1),
            "item",
        ));
        tally.add(CallResult::of(
            Ok(Outcome::changed("created /b")),
            item(2),
            "item",
        ));
        let result = tally.finish(true);
        assert_eq!(result.status, Status::Changed);
        assert_eq!(result.msg, "created /a; created /b");
    }

    #[test]
    fn a_task_whose_calls_were_all_skipped_is_skipped() {
        let mut tally = Tally::new();
        tally.add(CallResult::of(Ok(Outcome::skipped()), None, "item"));
        let result = tally.finish(false);
        assert_eq!(result.status, Status::Skipped);
        assert_eq!(result.data["skipped"], true);
    }
}
