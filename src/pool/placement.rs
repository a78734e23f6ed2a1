//! How [`plan_roles`] decides, step by step: the queue and batch sizes,
//! the CPUs and cores to plan on, the network mode, how many workers of
//! each role, which core each goes on, and how each idles. Each step is
//! a function of what the steps before it decided, and says why in the
//! plan's reasons as it goes (the rules are in `plan.rs`'s header).

use std::collections::BTreeMap;

use super::plan::{
    Detected, GpuPlacement, IoBackend, MAX_WORKERS_PER_CPU, MIN_CPUS_FOR_SPIN, NetworkMode,
    Placement, Plan, PlanError, Roles, THREAD_PER_CORE_MAX_CORES, WorkerRole,
};
use super::profile::{AppShare, PlanOverrides, Profile, ProfileDefaults};
use crate::topology::{Capabilities, IoUringSupport, Topology, format_cpu_list};
use crate::worker::IdleStrategy;

/// One usable physical core during planning.
#[derive(Debug)]
struct Slot {
    node: usize,
    cpus: Vec<usize>,
    /// Indices into the worker list.
    workers: Vec<usize>,
}

#[derive(Debug)]
struct Worker {
    role: WorkerRole,
    index: usize,
    slot: usize,
    gpu: usize,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Picks `n` cores spread over the NUMA nodes (round-robin, each node's
/// cores in order), returned in the original order.
fn spread(cores: &[(usize, Vec<usize>)], n: usize) -> Vec<usize> {
    if n >= cores.len() {
        return (0..cores.len()).collect();
    }
    let mut by_node: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, (node, _)) in cores.iter().enumerate() {
        by_node.entry(*node).or_default().push(i);
    }
    let mut picked = Vec::with_capacity(n);
    let mut round = 0;
    while picked.len() < n {
        for list in by_node.values() {
            if let Some(&i) = list.get(round) {
                if picked.len() < n {
                    picked.push(i);
                }
            }
        }
        round += 1;
    }
    picked.sort_unstable();
    picked
}

/// Interleaves per-node lists: first of each node, then second of each, ...
fn interleave(lists: &BTreeMap<usize, Vec<usize>>) -> Vec<usize> {
    let longest = lists.values().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|round| lists.values().filter_map(move |l| l.get(round).copied()))
        .collect()
}

/// The least loaded slot among `candidates`, the last one on ties.
fn least_loaded(slots: &[Slot], candidates: &[usize]) -> Option<usize> {
    candidates
        .iter()
        .copied()
        .rev()
        .min_by_key(|&s| slots[s].workers.len())
}

/// [`plan`](super::plan::plan) for the roles that will run: the others
/// get no worker, and application workers may use the cores they would
/// have taken.
///
/// # Errors
/// As [`plan`](super::plan::plan).
pub(crate) fn plan_roles(
    topology: &Topology,
    caps: &Capabilities,
    profile: Profile,
    overrides: &PlanOverrides,
    roles: Roles,
) -> Result<Plan, PlanError> {
    let mut reasons = Vec::new();
    let requested_profile = profile;
    let profile = overrides.profile.unwrap_or(profile);
    if profile != requested_profile {
        reasons.push(format!(
            "profile {profile} (override; the caller asked for {requested_profile})"
        ));
    }
    let d = profile.defaults();
    let (queue_capacity, batch_size) = sizes(overrides, &d)?;
    let cpus = planning_cpus(topology, overrides, &mut reasons)?;
    let mut machine = Machine::new(topology, &cpus, &mut reasons);
    let counts = Counts::decide(caps, profile, &d, overrides, roles, &machine, &mut reasons)?;
    let workers = place(&mut machine, &counts);
    let busiest = machine
        .slots
        .iter()
        .map(|s| s.workers.len())
        .max()
        .unwrap_or(0);
    let core_n = machine.slots.len();
    if busiest <= 1 {
        reasons.push(format!(
            "every worker has a physical core of its own ({} on {})",
            plural(counts.total, "worker", "workers"),
            plural(core_n, "core", "cores")
        ));
    } else {
        reasons.push(format!(
            "workers share cores ({} on {}; up to {busiest} on one core): I/O workers stay on their NUMA node",
            plural(counts.total, "worker", "workers"),
            plural(core_n, "core", "cores")
        ));
    }
    let pin = overrides.pin.unwrap_or(d.pin);
    let idles = idle_strategies(&workers, &machine, pin, overrides, &d, &mut reasons)?;
    let tpc = machine.cores.iter().map(|c| c.1.len()).max().unwrap_or(1);
    if tpc > 1 {
        reasons.push(format!(
            "SMT: {tpc} threads per core; workers take one thread per core, siblings only host a second worker"
        ));
    }
    let io_backend = match &caps.io_uring {
        IoUringSupport::Available { .. } => IoBackend::IoUring,
        IoUringSupport::Unavailable { reason } => {
            reasons.push(format!(
                "io_uring unavailable ({reason}): I/O workers use the blocking fallback"
            ));
            IoBackend::Fallback {
                reason: reason.clone(),
            }
        }
    };
    reasons.push(format!(
        "{profile} profile: queue capacity {queue_capacity}, batch size {batch_size}"
    ));
    let requested_idle = overrides.idle;
    let mut plan = Plan {
        profile,
        pin,
        app_workers: Vec::new(),
        storage_workers: Vec::new(),
        network_workers: Vec::new(),
        gpu_workers: Vec::new(),
        io_backend,
        network_mode: counts.network_mode,
        gpu_fallback: counts.gpu_fallback.clone(),
        idle: requested_idle.unwrap_or(d.app_idle),
        idle_overridden: requested_idle.is_some(),
        queue_capacity,
        batch_size,
        reasons,
        warnings: Vec::new(),
        detected: detected(topology, caps, &machine, cpus, tpc),
    };
    materialise(&mut plan, caps, &machine, &workers, &idles, pin);
    Ok(plan)
}

/// Queue capacity and batch size. An explicit value wins; the other one
/// adapts, and only two explicit values that contradict are an error.
fn sizes(overrides: &PlanOverrides, d: &ProfileDefaults) -> Result<(usize, usize), PlanError> {
    Ok(match (overrides.queue_capacity, overrides.batch_size) {
        (Some(0), _) => {
            return Err(PlanError::InvalidOverride {
                name: "queue_capacity",
                reason: "must be at least 1".into(),
            });
        }
        (_, Some(0)) => {
            return Err(PlanError::InvalidOverride {
                name: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        (Some(q), Some(b)) if b > q => {
            return Err(PlanError::InvalidOverride {
                name: "batch_size",
                reason: format!("{b} is larger than queue_capacity {q}"),
            });
        }
        (Some(q), Some(b)) => (q, b),
        (Some(q), None) => (q, d.batch_size.min(q)),
        (None, Some(b)) => (
            d.queue_capacity
                .max(b.checked_next_power_of_two().unwrap_or(b)),
            b,
        ),
        (None, None) => (d.queue_capacity, d.batch_size),
    })
}

/// The CPUs to plan on: the allowed ones, or the `cpus` override (which
/// must name allowed CPUs only).
fn planning_cpus(
    topology: &Topology,
    overrides: &PlanOverrides,
    reasons: &mut Vec<String>,
) -> Result<Vec<usize>, PlanError> {
    let allowed = topology.available_cpus();
    let Some(list) = &overrides.cpus else {
        return Ok(allowed.to_vec());
    };
    if list.is_empty() {
        return Err(PlanError::InvalidOverride {
            name: "cpus",
            reason: "empty CPU list".into(),
        });
    }
    if let Some(&cpu) = list.iter().find(|c| !allowed.contains(c)) {
        return Err(PlanError::CpuNotAllowed {
            cpu,
            allowed: format_cpu_list(allowed),
        });
    }
    let mut l = list.clone();
    l.sort_unstable();
    l.dedup();
    reasons.push(format!(
        "planning on CPUs {} only (override)",
        format_cpu_list(&l)
    ));
    Ok(l)
}

/// The cores planned on and the CPU budget.
struct Machine {
    /// Physical cores with a CPU planned on: (NUMA node, those CPUs).
    cores: Vec<(usize, Vec<usize>)>,
    /// How much CPU time there is (the CPU count, or the cgroup quota if
    /// smaller).
    budget: f64,
    /// How many workers may busy-wait.
    spin_limit: usize,
    /// The usable cores, spread over the nodes, with their workers.
    slots: Vec<Slot>,
    /// Each node's slots.
    nodes: BTreeMap<usize, Vec<usize>>,
    /// How many CPUs are planned on.
    cpu_count: usize,
}

impl Machine {
    fn new(topology: &Topology, cpus: &[usize], reasons: &mut Vec<String>) -> Machine {
        let cores: Vec<(usize, Vec<usize>)> = topology
            .physical_cores()
            .into_iter()
            .filter_map(|c| {
                let mine: Vec<usize> = c.cpus.into_iter().filter(|x| cpus.contains(x)).collect();
                (!mine.is_empty()).then_some((c.numa_node, mine))
            })
            .collect();
        let budget = topology
            .cpu_quota()
            .map_or(cpus.len() as f64, |q| q.min(cpus.len() as f64));
        let spin_limit = (budget.floor() as usize).min(cores.len());
        let usable = (budget.ceil() as usize).clamp(1, cores.len());
        let slots: Vec<Slot> = spread(&cores, usable)
            .iter()
            .map(|&i| Slot {
                node: cores[i].0,
                cpus: cores[i].1.clone(),
                workers: Vec::new(),
            })
            .collect();
        let mut nodes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, s) in slots.iter().enumerate() {
            nodes.entry(s.node).or_default().push(i);
        }
        if let Some(q) = topology.cpu_quota().filter(|&q| q < cpus.len() as f64) {
            reasons.push(format!(
                "CPU budget {q:.2} CPUs from the cgroup quota: planning on {} and at most {} busy CPU{}",
                plural(slots.len(), "core", "cores"),
                spin_limit,
                if spin_limit == 1 { "" } else { "s" }
            ));
        }
        Machine {
            cores,
            budget,
            spin_limit,
            slots,
            nodes,
            cpu_count: cpus.len(),
        }
    }
}

/// How many workers of each role, and how the network is served.
struct Counts {
    app_n: usize,
    storage_per_node: usize,
    network_per_node: usize,
    /// Network workers per node that get cores of their own (0 with
    /// thread-per-core).
    network_reserved: usize,
    /// Storage plus reserved network workers per node.
    io_per_node: usize,
    gpu_n: usize,
    /// The adapters in the order GPU workers take them.
    gpu_order: Vec<usize>,
    gpu_fallback: Option<String>,
    network_mode: NetworkMode,
    total: usize,
}

impl Counts {
    fn decide(
        caps: &Capabilities,
        profile: Profile,
        d: &ProfileDefaults,
        overrides: &PlanOverrides,
        roles: Roles,
        machine: &Machine,
        reasons: &mut Vec<String>,
    ) -> Result<Counts, PlanError> {
        let core_n = machine.slots.len();
        let nodes = machine.nodes.len();
        let storage_per_node = overrides
            .storage_workers_per_node
            .unwrap_or(d.storage_per_node);
        let network_per_node = overrides
            .network_workers_per_node
            .unwrap_or(d.network_per_node);
        // What network workers would take, whether or not they start (the
        // thread-per-core share of the application workers depends on it).
        let planned_network = network_per_node.saturating_mul(nodes);
        // Storage and network workers that will not start get no core.
        let (storage_per_node, network_per_node) = if roles.io {
            (storage_per_node, network_per_node)
        } else {
            (0, 0)
        };
        let network_mode = network_mode(overrides, profile, core_n, network_per_node, reasons);
        // Thread-per-core: network workers, if started at all, take no core.
        let network_reserved = match network_mode {
            NetworkMode::ThreadPerCore => 0,
            NetworkMode::Dedicated => network_per_node,
        };
        let io_per_node = storage_per_node.saturating_add(network_reserved);
        let io_total = io_per_node.saturating_mul(nodes);
        let shared_network = (network_per_node - network_reserved).saturating_mul(nodes);
        let (gpu_n, gpu_order, gpu_not_started) = gpus(caps, overrides, roles)?;
        let bonus = match network_mode {
            NetworkMode::ThreadPerCore => planned_network,
            NetworkMode::Dedicated => 0,
        };
        let app_n = app_workers(
            overrides,
            d,
            core_n,
            bonus,
            io_total.saturating_add(gpu_n),
            reasons,
        )?;
        let total = app_n
            .saturating_add(io_total)
            .saturating_add(shared_network)
            .saturating_add(gpu_n);
        let limit = MAX_WORKERS_PER_CPU * machine.cpu_count;
        if total > limit {
            return Err(PlanError::TooManyWorkers {
                requested: total,
                limit,
            });
        }
        if roles.io {
            reasons.push(format!(
                "{} ({} per NUMA node: {storage_per_node} storage + {network_per_node} network{} on {})",
                plural(io_total + shared_network, "I/O worker", "I/O workers"),
                storage_per_node + network_per_node,
                if shared_network > 0 {
                    ", the network workers sharing cores"
                } else {
                    ""
                },
                if nodes == 1 {
                    "1 node".to_owned()
                } else {
                    format!("each of {nodes} nodes")
                }
            ));
        } else {
            reasons.push(
                "0 I/O workers (storage and network workers are not started with these application workers, so their cores are free)"
                    .to_owned(),
            );
        }
        let gpu_fallback = gpu_reason(caps, overrides, gpu_n, gpu_not_started, reasons);
        Ok(Counts {
            app_n,
            storage_per_node,
            network_per_node,
            network_reserved,
            io_per_node,
            gpu_n,
            gpu_order,
            gpu_fallback,
            network_mode,
            total,
        })
    }
}

/// Dedicated network workers or thread-per-core.
fn network_mode(
    overrides: &PlanOverrides,
    profile: Profile,
    core_n: usize,
    network_per_node: usize,
    reasons: &mut Vec<String>,
) -> NetworkMode {
    match overrides.network_mode {
        Some(m) => {
            reasons.push(format!("network mode {m} (override)"));
            m
        }
        None if profile == Profile::LowLatency => {
            reasons.push(
                "network mode dedicated (low-latency profile: a network worker of its own answers one connection fastest)"
                    .to_owned(),
            );
            NetworkMode::Dedicated
        }
        None if core_n <= THREAD_PER_CORE_MAX_CORES => {
            reasons.push(format!(
                "network mode thread-per-core (on {} a network worker of its own would take a core from the handlers; each application worker serves its own connections)",
                plural(core_n, "core", "cores")
            ));
            NetworkMode::ThreadPerCore
        }
        None => {
            reasons.push(format!(
                "network mode dedicated ({} network worker(s) per node on cores of their own; thread-per-core is the default up to {THREAD_PER_CORE_MAX_CORES} cores)",
                network_per_node
            ));
            NetworkMode::Dedicated
        }
    }
}

/// GPU workers: how many, the adapters in the order they take them, and
/// whether some were wanted but will not start.
fn gpus(
    caps: &Capabilities,
    overrides: &PlanOverrides,
    roles: Roles,
) -> Result<(usize, Vec<usize>, bool), PlanError> {
    // Hardware adapters first; software ones (llvmpipe: `device_type` "Cpu")
    // only when GPU workers are asked for explicitly, since by default a
    // rasteriser on the CPU would only slow the CPU workers down.
    let hardware: Vec<usize> = (0..caps.gpus.len())
        .filter(|&i| caps.gpus[i].device_type != "Cpu")
        .collect();
    let order: Vec<usize> = hardware
        .iter()
        .copied()
        .chain((0..caps.gpus.len()).filter(|i| !hardware.contains(i)))
        .collect();
    let n = match overrides.gpu_workers {
        Some(n) if n > 0 && caps.gpus.is_empty() => return Err(PlanError::NoGpu { requested: n }),
        Some(n) => n,
        None => hardware.len(),
    };
    // GPU workers that will not start get no core either.
    let not_started = !roles.gpu && n > 0;
    Ok((if roles.gpu { n } else { 0 }, order, not_started))
}

/// Why there are no GPU workers (the plan's `gpu_fallback`), or the
/// count's reason.
fn gpu_reason(
    caps: &Capabilities,
    overrides: &PlanOverrides,
    gpu_n: usize,
    not_started: bool,
    reasons: &mut Vec<String>,
) -> Option<String> {
    if gpu_n > 0 {
        reasons.push(format!(
            "{} (detected {})",
            plural(gpu_n, "GPU worker", "GPU workers"),
            plural(caps.gpus.len(), "GPU", "GPUs")
        ));
        return None;
    }
    let why = if not_started {
        "GPU workers are not started with these application workers: GPU work runs on the CPU workers".to_owned()
    } else if caps.gpus.is_empty() {
        "no GPU detected: GPU work runs on the CPU workers".to_owned()
    } else if overrides.gpu_workers.is_none() {
        format!(
            "only software adapters ({}): GPU work runs on the CPU workers; set gpu_workers to use them",
            caps.gpus
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        "GPU workers disabled by override: GPU work runs on the CPU workers".to_owned()
    };
    reasons.push(format!("0 GPU workers ({why})"));
    Some(why)
}

/// The application workers' count: the override, or the profile's
/// share of the cores (plus the network's cores with thread-per-core,
/// `bonus`), or all the cores the `others` leave.
fn app_workers(
    overrides: &PlanOverrides,
    d: &ProfileDefaults,
    core_n: usize,
    bonus: usize,
    others: usize,
    reasons: &mut Vec<String>,
) -> Result<usize, PlanError> {
    match overrides.app_workers {
        Some(0) => Err(PlanError::InvalidOverride {
            name: "app_workers",
            reason: "at least one application worker is needed".into(),
        }),
        Some(n) => {
            reasons.push(format!(
                "{} (override)",
                plural(n, "application worker", "application workers")
            ));
            Ok(n)
        }
        None => Ok(match d.app_share {
            AppShare::Percent(p) => {
                let share = (core_n * p / 100).max(1);
                // Thread-per-core: the handlers also do the network work,
                // so they get the cores network workers would have taken.
                let n = share.saturating_add(bonus).min(core_n.max(share));
                reasons.push(format!(
                    "{} ({p}% of your {}{}{})",
                    plural(n, "application worker", "application workers"),
                    plural(core_n, "core", "cores"),
                    if core_n * p / 100 == 0 {
                        ", at least 1"
                    } else {
                        ""
                    },
                    if n > share {
                        format!(
                            ", plus {} for the network: thread-per-core",
                            plural(n - share, "core", "cores")
                        )
                    } else {
                        String::new()
                    }
                ));
                n
            }
            AppShare::Rest => {
                let n = core_n.saturating_sub(others).max(1);
                reasons.push(format!(
                    "{} (all of your {} not taken by I/O and GPU workers{})",
                    plural(n, "application worker", "application workers"),
                    plural(core_n, "core", "cores"),
                    if core_n <= others { ", at least 1" } else { "" }
                ));
                n
            }
        }),
    }
}

/// Reserves cores and places every worker on a slot: dedicated cores for
/// everyone when the counts fit, otherwise one shared I/O core per node
/// (if the node has a core to spare) and GPU workers on the least loaded
/// cores.
fn place(machine: &mut Machine, counts: &Counts) -> Vec<Worker> {
    let Machine { slots, nodes, .. } = machine;
    let dedicated = counts.total <= slots.len();
    let mut free = nodes.clone();
    let mut io_cores: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (&node, list) in free.iter_mut() {
        // Thread-per-core keeps every core for the application workers,
        // which serve the network, unless everything fits.
        let want = if counts.io_per_node == 0 {
            0
        } else if dedicated {
            counts.io_per_node.min(list.len())
        } else if list.len() >= 2 && counts.network_mode == NetworkMode::Dedicated {
            1
        } else {
            0
        };
        let mut taken = list.split_off(list.len() - want);
        taken.sort_unstable();
        io_cores.insert(node, taken);
    }
    let mut gpu_cores = Vec::new();
    if dedicated {
        for _ in 0..counts.gpu_n {
            let node = free
                .iter()
                .max_by_key(|(node, l)| (l.len(), std::cmp::Reverse(**node)))
                .map(|(n, _)| *n);
            if let Some(s) = node.and_then(|n| free.get_mut(&n)).and_then(Vec::pop) {
                gpu_cores.push(s);
            }
        }
    }
    let mut app_pool = interleave(&free);
    if app_pool.is_empty() {
        app_pool = interleave(nodes);
    }
    let mut workers: Vec<Worker> = Vec::with_capacity(counts.total);
    let mut add =
        |slots: &mut Vec<Slot>, role: WorkerRole, index: usize, slot: usize, gpu: usize| {
            slots[slot].workers.push(workers.len());
            workers.push(Worker {
                role,
                index,
                slot,
                gpu,
            });
        };
    for i in 0..counts.app_n {
        let s = app_pool[i % app_pool.len()];
        add(slots, WorkerRole::Application, i, s, 0);
    }
    let (mut si, mut ni) = (0, 0);
    for (node, node_slots) in nodes.iter() {
        let reserved = &io_cores[node];
        for k in 0..counts.io_per_node {
            let s = if reserved.is_empty() {
                least_loaded(slots, node_slots).unwrap_or(node_slots[0])
            } else {
                reserved[k % reserved.len()]
            };
            if k < counts.storage_per_node {
                add(slots, WorkerRole::Storage, si, s, 0);
                si += 1;
            } else {
                add(slots, WorkerRole::Network, ni, s, 0);
                ni += 1;
            }
        }
        // Thread-per-core: network workers share the least loaded cores.
        for _ in counts.network_reserved..counts.network_per_node {
            let s = least_loaded(slots, node_slots).unwrap_or(node_slots[0]);
            add(slots, WorkerRole::Network, ni, s, 0);
            ni += 1;
        }
    }
    let all_slots: Vec<usize> = (0..slots.len()).collect();
    for g in 0..counts.gpu_n {
        let s = match gpu_cores.get(g) {
            Some(&s) => s,
            None => least_loaded(slots, &all_slots).unwrap_or(0),
        };
        let gpu = counts
            .gpu_order
            .get(g % counts.gpu_order.len().max(1))
            .copied()
            .unwrap_or(0);
        add(slots, WorkerRole::Gpu, g, s, gpu);
    }
    workers
}

/// Each worker's idle strategy (rules 1 and 2): busy-waiting only where
/// it is pinned, alone on its core and within the CPU budget.
fn idle_strategies(
    workers: &[Worker],
    machine: &Machine,
    pin: bool,
    overrides: &PlanOverrides,
    d: &ProfileDefaults,
    reasons: &mut Vec<String>,
) -> Result<Vec<IdleStrategy>, PlanError> {
    if !pin {
        reasons.push("pinning off (override): workers float and none busy-waits".into());
    }
    let (spin_limit, budget) = (machine.spin_limit, machine.budget);
    let requested_idle = overrides.idle;
    let mut spinners = 0;
    let mut denied: Vec<String> = Vec::new();
    let mut idles = Vec::with_capacity(workers.len());
    for w in workers {
        let want = requested_idle.unwrap_or(match w.role {
            WorkerRole::Application => d.app_idle,
            WorkerRole::Storage | WorkerRole::Network => d.io_idle,
            WorkerRole::Gpu => d.gpu_idle,
        });
        let why_not = if !want.is_busy() {
            None
        } else if !pin {
            Some("workers are not pinned, so none busy-waits".to_owned())
        } else if spin_limit < MIN_CPUS_FOR_SPIN && requested_idle.is_none() {
            Some(format!(
                "busy-waiting needs a budget of at least {MIN_CPUS_FOR_SPIN} CPUs unless asked for explicitly (have {budget:.2}): workers spin then park"
            ))
        } else if machine.slots[w.slot].workers.len() > 1 {
            Some("workers that share a core spin then park instead of busy-waiting".to_owned())
        } else if spinners >= spin_limit {
            Some(format!(
                "at most {spin_limit} workers may busy-wait (the CPU budget): the rest spin then park"
            ))
        } else {
            None
        };
        match why_not {
            Some(r) => {
                if !denied.contains(&r) {
                    denied.push(r);
                }
                idles.push(IdleStrategy::SpinThenPark);
            }
            None => {
                if want.is_busy() {
                    spinners += 1;
                }
                idles.push(want);
            }
        }
    }
    if let Some(req) = requested_idle.filter(|i| i.is_busy()) {
        if spinners == 0 {
            return Err(PlanError::CannotSpin {
                requested: req,
                reason: denied.join("; "),
            });
        }
    }
    for r in denied {
        // Unpinned plans already say so once.
        if pin {
            reasons.push(r);
        }
    }
    if spinners > 0 {
        reasons.push(format!(
            "{} alone on its physical core",
            plural(spinners, "worker busy-waits,", "workers busy-wait, each")
        ));
    }
    Ok(idles)
}

/// What the plan saw of the machine.
fn detected(
    topology: &Topology,
    caps: &Capabilities,
    machine: &Machine,
    cpus: Vec<usize>,
    threads_per_core: usize,
) -> Detected {
    Detected {
        source: topology.source(),
        hardware_cpus: topology
            .numa_nodes()
            .iter()
            .map(|n| n.cpus.len())
            .sum::<usize>()
            .max(topology.available_cpus().len()),
        cpus,
        physical_cores: machine.cores.len(),
        threads_per_core,
        numa_nodes: machine.nodes.len(),
        l1d_bytes: topology.l1d_size(),
        l2_bytes: topology.l2_size(),
        l3_bytes: topology.l3_size(),
        cache_line_size: topology.cache_line_size(),
        cpu_quota: topology.cpu_quota(),
        cpu_budget: machine.budget,
        io_uring: caps.io_uring.to_string(),
        gpus: caps
            .gpus
            .iter()
            .map(|g| format!("{} ({}, {})", g.name, g.backend, g.device_type))
            .collect(),
    }
}

/// Turns the placed workers into the plan's placements: a CPU of their
/// slot (pinned plans; the slot's second worker on its SMT sibling),
/// their node and idle strategy.
fn materialise(
    plan: &mut Plan,
    caps: &Capabilities,
    machine: &Machine,
    workers: &[Worker],
    idles: &[IdleStrategy],
    pin: bool,
) {
    for (wi, w) in workers.iter().enumerate() {
        let slot = &machine.slots[w.slot];
        let rank = slot.workers.iter().position(|&x| x == wi).unwrap_or(0);
        let cpu = pin.then(|| slot.cpus[rank % slot.cpus.len()]);
        let numa_node = Some(slot.node);
        let idle = idles[wi];
        match w.role {
            WorkerRole::Gpu => plan.gpu_workers.push(GpuPlacement {
                index: w.index,
                gpu: w.gpu,
                gpu_name: caps
                    .gpus
                    .get(w.gpu)
                    .map(|g| g.name.clone())
                    .unwrap_or_default(),
                cpu,
                numa_node,
                idle,
            }),
            role => {
                let p = Placement {
                    role,
                    index: w.index,
                    cpu,
                    numa_node,
                    idle,
                };
                match role {
                    WorkerRole::Application => plan.app_workers.push(p),
                    WorkerRole::Storage => plan.storage_workers.push(p),
                    _ => plan.network_workers.push(p),
                }
            }
        }
    }
}
