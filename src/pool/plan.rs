//! The worker plan: how many workers of each role, on which CPUs, and how
//! they wait when idle. [`plan`] is a pure function of the topology, the
//! capabilities, the profile and the overrides, so every rule is tested on
//! synthetic machines.
//!
//! Rules (checked by the tests' `check_invariants`):
//! 1. A busy-idling worker ([`IdleStrategy::is_busy`]) is pinned and alone on
//!    its physical core: no other worker on that CPU or its SMT siblings.
//! 2. There are at most `floor(budget)` busy-idling workers, where the budget
//!    is the allowed CPU count or the cgroup quota if smaller; and, unless an
//!    override asks for busy-waiting explicitly, none at all below
//!    [`MIN_CPUS_FOR_SPIN`] CPUs of budget.
//! 3. Workers are pinned only to allowed CPUs (and to the `cpus` override).
//! 4. Storage and network workers exist per NUMA node and run on that node.
//! 5. Every worker gets its own physical core when the counts fit on the
//!    usable cores; otherwise I/O workers share one core per node, GPU workers
//!    share the least loaded core, and application workers share round-robin.
//!    SMT siblings are used only for the second and later workers on a core.

use std::collections::BTreeMap;
use std::fmt;

use super::profile::{AppShare, PlanOverrides, Profile};
use crate::topology::{Capabilities, IoUringSupport, Topology, TopologySource, format_cpu_list};
use crate::worker::IdleStrategy;

/// Below this many CPUs of budget no worker busy-spins: on one or two CPUs a
/// spinning worker would take half or all of the machine from the rest of the
/// process (the main thread, parked workers, the kernel's own work).
pub const MIN_CPUS_FOR_SPIN: usize = 3;

/// Upper bound on planned workers per allowed CPU, so a typo such as
/// `SHARED_NOTHING_APP_WORKERS=1000000` is an error, not a million threads.
pub const MAX_WORKERS_PER_CPU: usize = 64;

/// What a worker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum WorkerRole {
    /// Runs application shards.
    Application,
    /// Runs storage I/O (files) for its NUMA node.
    Storage,
    /// Runs network I/O for its NUMA node.
    Network,
    /// Feeds a GPU.
    Gpu,
}

impl WorkerRole {
    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            WorkerRole::Application => "application",
            WorkerRole::Storage => "storage",
            WorkerRole::Network => "network",
            WorkerRole::Gpu => "gpu",
        }
    }
}

/// Where one CPU worker runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Its role.
    pub role: WorkerRole,
    /// Index among the workers of this role, from 0.
    pub index: usize,
    /// The CPU to pin to; `None` when pinning is off.
    pub cpu: Option<usize>,
    /// The NUMA node it runs on (or should allocate from when unpinned).
    pub numa_node: Option<usize>,
    /// How it waits when idle.
    pub idle: IdleStrategy,
}

/// Where one GPU worker runs and which GPU it drives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuPlacement {
    /// Index among GPU workers, from 0.
    pub index: usize,
    /// Index of its GPU in [`Capabilities::gpus`].
    pub gpu: usize,
    /// That GPU's name.
    pub gpu_name: String,
    /// The CPU to pin to; `None` when pinning is off.
    pub cpu: Option<usize>,
    /// The NUMA node of that CPU.
    pub numa_node: Option<usize>,
    /// How it waits when idle.
    pub idle: IdleStrategy,
}

/// How the I/O workers do I/O.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoBackend {
    /// io_uring, probed and complete.
    IoUring,
    /// Blocking system calls on the I/O workers.
    Fallback {
        /// Why io_uring is not used.
        reason: String,
    },
}

/// Where an application serves its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkMode {
    /// Network workers of their own own the sockets; application workers
    /// get connection events from them (`WorkerPool::start_io`).
    Dedicated,
    /// Each application worker runs its own network backend in its loop
    /// (`NetworkWorker::start_local`, listeners shared with
    /// `SO_REUSEPORT`): a connection's whole life stays on one core.
    /// Network workers the application still starts (say, for a metrics
    /// endpoint) share cores with the application workers instead of
    /// taking cores of their own.
    ThreadPerCore,
}

impl NetworkMode {
    /// `dedicated` or `thread-per-core`.
    pub fn name(self) -> &'static str {
        match self {
            NetworkMode::Dedicated => "dedicated",
            NetworkMode::ThreadPerCore => "thread-per-core",
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Planned cores up to which thread-per-core is the default network mode
/// (outside the low-latency profile): there a dedicated network worker
/// takes a large share of the machine from the handlers. Measured on 2
/// cores only (docs/benchmarks.md); larger machines keep the dedicated
/// mode until measured.
pub const THREAD_PER_CORE_MAX_CORES: usize = 4;

/// A summary of what the plan was based on, for reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Detected {
    /// Which source produced the topology.
    pub source: TopologySource,
    /// The CPUs planned on (allowed, and within the `cpus` override).
    pub cpus: Vec<usize>,
    /// All CPUs the NUMA nodes list (the hardware, allowed or not).
    pub hardware_cpus: usize,
    /// Physical cores among the planned CPUs.
    pub physical_cores: usize,
    /// Most hardware threads per core among the planned CPUs.
    pub threads_per_core: usize,
    /// NUMA nodes with a planned CPU.
    pub numa_nodes: usize,
    /// L1 data cache size in bytes.
    pub l1d_bytes: Option<u64>,
    /// L2 cache size in bytes.
    pub l2_bytes: Option<u64>,
    /// L3 cache size in bytes.
    pub l3_bytes: Option<u64>,
    /// Cache line size in bytes.
    pub cache_line_size: usize,
    /// cgroup CPU quota in CPUs.
    pub cpu_quota: Option<f64>,
    /// CPUs' worth of time available: planned CPUs, or the quota if smaller.
    pub cpu_budget: f64,
    /// io_uring status.
    pub io_uring: String,
    /// GPUs, as "name (backend, type)".
    pub gpus: Vec<String>,
}

/// The chosen worker layout. Build it with [`plan`]; print it to explain the
/// choice.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The profile used (after overrides).
    pub profile: Profile,
    /// Whether workers are pinned to CPUs.
    pub pin: bool,
    /// Application workers.
    pub app_workers: Vec<Placement>,
    /// Storage workers, per NUMA node.
    pub storage_workers: Vec<Placement>,
    /// Network workers, per NUMA node.
    pub network_workers: Vec<Placement>,
    /// GPU workers.
    pub gpu_workers: Vec<GpuPlacement>,
    /// How I/O is done.
    pub io_backend: IoBackend,
    /// Where connections are served, and so whether network workers get
    /// cores of their own.
    pub network_mode: NetworkMode,
    /// Why there is no GPU worker, if there is none.
    pub gpu_fallback: Option<String>,
    /// The requested idle strategy (profile or override). Each placement's
    /// `idle` is authoritative: workers that cannot spin park instead.
    pub idle: IdleStrategy,
    /// Whether `idle` came from an override rather than the profile.
    pub idle_overridden: bool,
    /// Capacity of each worker's queue.
    pub queue_capacity: usize,
    /// Messages handled per batch.
    pub batch_size: usize,
    /// Why each choice was made, one sentence each.
    pub reasons: Vec<String>,
    /// What looked wrong but did not stop the plan, one sentence each (a
    /// misspelt `SHARED_NOTHING_*` variable, which is ignored). [`plan`]
    /// itself leaves it empty; the pool adds what it found in the
    /// environment.
    pub warnings: Vec<String>,
    /// What was detected.
    pub detected: Detected,
}

impl Plan {
    /// All CPU-side placements (application, storage, network), in that
    /// order.
    pub fn cpu_placements(&self) -> impl Iterator<Item = &Placement> {
        self.app_workers
            .iter()
            .chain(&self.storage_workers)
            .chain(&self.network_workers)
    }

    /// Total number of workers of every role.
    pub fn total_workers(&self) -> usize {
        self.app_workers.len()
            + self.storage_workers.len()
            + self.network_workers.len()
            + self.gpu_workers.len()
    }
}

/// Why no plan could be made.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// An override value is impossible (for example 0 application workers).
    #[error("invalid override {name}: {reason}")]
    InvalidOverride {
        /// The override field.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The `cpus` override names a CPU the process may not use.
    #[error("CPU {cpu} is not allowed (allowed: {allowed})")]
    CpuNotAllowed {
        /// The offending CPU.
        cpu: usize,
        /// The allowed CPUs, in list format.
        allowed: String,
    },
    /// GPU workers were requested but no GPU was detected.
    #[error("{requested} GPU workers requested but no GPU was detected")]
    NoGpu {
        /// How many were requested.
        requested: usize,
    },
    /// A busy idle strategy was requested but no worker can busy-wait.
    #[error("idle strategy {requested:?} requested, but no worker can busy-wait: {reason}")]
    CannotSpin {
        /// The requested strategy.
        requested: IdleStrategy,
        /// Why not.
        reason: String,
    },
    /// More workers than [`MAX_WORKERS_PER_CPU`] per allowed CPU.
    #[error("{requested} workers requested, more than the limit of {limit} for this machine")]
    TooManyWorkers {
        /// Workers requested in total.
        requested: usize,
        /// The limit.
        limit: usize,
    },
}

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

/// Plans the workers for a machine. Pure: reads nothing, so the same inputs
/// give the same plan.
///
/// # Errors
///
/// [`PlanError`] if an override is impossible: 0 application workers, a zero
/// queue capacity or batch size, a batch larger than the queue (both set
/// explicitly), a `cpus` override naming a CPU that is not allowed, GPU
/// workers without a GPU, a busy idle strategy that no worker can honour, or
/// more than [`MAX_WORKERS_PER_CPU`] workers per allowed CPU.
///
/// # Examples
///
/// ```
/// use shared_nothing::pool::{plan, PlanOverrides, Profile};
/// use shared_nothing::topology::{Capabilities, GpuInfo, Topology};
///
/// let topo = Topology::synthetic().numa_nodes(2).cores_per_node(12).build()?;
/// let gpu = GpuInfo { name: "gpu".into(), backend: "Vulkan".into(), device_type: "DiscreteGpu".into() };
/// let caps = Capabilities::all(vec![gpu.clone(), gpu]);
/// let plan = plan(&topo, &caps, Profile::Production, &PlanOverrides::default())?;
/// assert_eq!(plan.app_workers.len(), 16);
/// assert_eq!(plan.storage_workers.len() + plan.network_workers.len(), 4);
/// assert_eq!(plan.gpu_workers.len(), 2);
/// println!("{plan}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn plan(
    topology: &Topology,
    caps: &Capabilities,
    profile: Profile,
    overrides: &PlanOverrides,
) -> Result<Plan, PlanError> {
    plan_roles(topology, caps, profile, overrides, Roles::ALL)
}

/// Which roles besides the application workers will run. Application
/// workers are placed knowing it, so no core is kept for a worker that is
/// never started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Roles {
    /// Storage and network workers start.
    pub io: bool,
    /// GPU workers start.
    pub gpu: bool,
}

impl Roles {
    /// Every role the plan has (what [`plan`] places).
    pub const ALL: Roles = Roles {
        io: true,
        gpu: true,
    };
    /// Application workers only (a pool private to one group, which nobody
    /// can start I/O or GPU workers on).
    pub const APPLICATION_ONLY: Roles = Roles {
        io: false,
        gpu: false,
    };
}

/// [`plan`] for the roles that will run: the others get no worker, and
/// application workers may use the cores they would have taken.
///
/// # Errors
/// As [`plan`].
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

    // Queue capacity and batch size. An explicit value wins; the other one
    // adapts, and only two explicit values that contradict are an error.
    let (queue_capacity, batch_size) = match (overrides.queue_capacity, overrides.batch_size) {
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
    };

    // CPUs to plan on.
    let allowed = topology.available_cpus();
    let cpus: Vec<usize> = match &overrides.cpus {
        Some(list) => {
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
            l
        }
        None => allowed.to_vec(),
    };
    let cores: Vec<(usize, Vec<usize>)> = topology
        .physical_cores()
        .into_iter()
        .filter_map(|c| {
            let mine: Vec<usize> = c.cpus.into_iter().filter(|x| cpus.contains(x)).collect();
            (!mine.is_empty()).then_some((c.numa_node, mine))
        })
        .collect();

    // Budget: how much CPU time there is, and how many workers may spin.
    let budget = topology
        .cpu_quota()
        .map_or(cpus.len() as f64, |q| q.min(cpus.len() as f64));
    let spin_limit = (budget.floor() as usize).min(cores.len());
    let usable = (budget.ceil() as usize).clamp(1, cores.len());
    let slot_ids = spread(&cores, usable);
    let mut slots: Vec<Slot> = slot_ids
        .iter()
        .map(|&i| Slot {
            node: cores[i].0,
            cpus: cores[i].1.clone(),
            workers: Vec::new(),
        })
        .collect();
    let core_n = slots.len();
    let mut nodes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, s) in slots.iter().enumerate() {
        nodes.entry(s.node).or_default().push(i);
    }
    if let Some(q) = topology.cpu_quota().filter(|&q| q < cpus.len() as f64) {
        reasons.push(format!(
            "CPU budget {q:.2} CPUs from the cgroup quota: planning on {} and at most {} busy CPU{}",
            plural(core_n, "core", "cores"),
            spin_limit,
            if spin_limit == 1 { "" } else { "s" }
        ));
    }

    // Worker counts.
    let storage_per_node = overrides
        .storage_workers_per_node
        .unwrap_or(d.storage_per_node);
    let network_per_node = overrides
        .network_workers_per_node
        .unwrap_or(d.network_per_node);
    // What network workers would take, whether or not they start (the
    // thread-per-core share of the application workers depends on it).
    let planned_network = network_per_node.saturating_mul(nodes.len());
    // Storage and network workers that will not start get no core.
    let (storage_per_node, network_per_node) = if roles.io {
        (storage_per_node, network_per_node)
    } else {
        (0, 0)
    };
    let network_mode = match overrides.network_mode {
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
    };
    // Thread-per-core: network workers, if started at all, take no core.
    let network_reserved = match network_mode {
        NetworkMode::ThreadPerCore => 0,
        NetworkMode::Dedicated => network_per_node,
    };
    let io_per_node = storage_per_node.saturating_add(network_reserved);
    let io_total = io_per_node.saturating_mul(nodes.len());
    let shared_network = (network_per_node - network_reserved).saturating_mul(nodes.len());
    // Hardware adapters first; software ones (llvmpipe: `device_type` "Cpu")
    // only when GPU workers are asked for explicitly, since by default a
    // rasteriser on the CPU would only slow the CPU workers down.
    let hardware: Vec<usize> = (0..caps.gpus.len())
        .filter(|&i| caps.gpus[i].device_type != "Cpu")
        .collect();
    let gpu_order: Vec<usize> = hardware
        .iter()
        .copied()
        .chain((0..caps.gpus.len()).filter(|i| !hardware.contains(i)))
        .collect();
    let gpu_n = match overrides.gpu_workers {
        Some(n) if n > 0 && caps.gpus.is_empty() => return Err(PlanError::NoGpu { requested: n }),
        Some(n) => n,
        None => hardware.len(),
    };
    // GPU workers that will not start get no core either.
    let gpu_not_started = !roles.gpu && gpu_n > 0;
    let gpu_n = if roles.gpu { gpu_n } else { 0 };
    let app_n = match overrides.app_workers {
        Some(0) => {
            return Err(PlanError::InvalidOverride {
                name: "app_workers",
                reason: "at least one application worker is needed".into(),
            });
        }
        Some(n) => {
            reasons.push(format!(
                "{} (override)",
                plural(n, "application worker", "application workers")
            ));
            n
        }
        None => match d.app_share {
            AppShare::Percent(p) => {
                let share = (core_n * p / 100).max(1);
                // Thread-per-core: the handlers also do the network work,
                // so they get the cores network workers would have taken.
                let bonus = match network_mode {
                    NetworkMode::ThreadPerCore => planned_network,
                    NetworkMode::Dedicated => 0,
                };
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
                let n = core_n.saturating_sub(io_total + gpu_n).max(1);
                reasons.push(format!(
                    "{} (all of your {} not taken by I/O and GPU workers{})",
                    plural(n, "application worker", "application workers"),
                    plural(core_n, "core", "cores"),
                    if core_n <= io_total + gpu_n {
                        ", at least 1"
                    } else {
                        ""
                    }
                ));
                n
            }
        },
    };
    let total = app_n
        .saturating_add(io_total)
        .saturating_add(shared_network)
        .saturating_add(gpu_n);
    let limit = MAX_WORKERS_PER_CPU * cpus.len();
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
            if nodes.len() == 1 {
                "1 node".to_owned()
            } else {
                format!("each of {} nodes", nodes.len())
            }
        ));
    } else {
        reasons.push(
            "0 I/O workers (storage and network workers are not started with these application workers, so their cores are free)"
                .to_owned(),
        );
    }
    let gpu_fallback = if gpu_n == 0 {
        let why = if gpu_not_started {
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
    } else {
        reasons.push(format!(
            "{} (detected {})",
            plural(gpu_n, "GPU worker", "GPU workers"),
            plural(caps.gpus.len(), "GPU", "GPUs")
        ));
        None
    };

    // Reserve cores: dedicated cores for everyone when the counts fit,
    // otherwise one shared I/O core per node (if the node has a core to
    // spare) and GPU workers on the least loaded cores.
    let dedicated = total <= core_n;
    let mut free = nodes.clone();
    let mut io_cores: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (&node, list) in free.iter_mut() {
        // Thread-per-core keeps every core for the application workers,
        // which serve the network, unless everything fits.
        let want = if io_per_node == 0 {
            0
        } else if dedicated {
            io_per_node.min(list.len())
        } else if list.len() >= 2 && network_mode == NetworkMode::Dedicated {
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
        for _ in 0..gpu_n {
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
        app_pool = interleave(&nodes);
    }
    // Place workers on slots.
    let mut workers: Vec<Worker> = Vec::with_capacity(total);
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
    for i in 0..app_n {
        let s = app_pool[i % app_pool.len()];
        add(&mut slots, WorkerRole::Application, i, s, 0);
    }
    let (mut si, mut ni) = (0, 0);
    for (node, node_slots) in &nodes {
        let reserved = &io_cores[node];
        for k in 0..io_per_node {
            let s = if reserved.is_empty() {
                least_loaded(&slots, node_slots).unwrap_or(node_slots[0])
            } else {
                reserved[k % reserved.len()]
            };
            if k < storage_per_node {
                add(&mut slots, WorkerRole::Storage, si, s, 0);
                si += 1;
            } else {
                add(&mut slots, WorkerRole::Network, ni, s, 0);
                ni += 1;
            }
        }
        // Thread-per-core: network workers share the least loaded cores.
        for _ in network_reserved..network_per_node {
            let s = least_loaded(&slots, node_slots).unwrap_or(node_slots[0]);
            add(&mut slots, WorkerRole::Network, ni, s, 0);
            ni += 1;
        }
    }
    let all_slots: Vec<usize> = (0..slots.len()).collect();
    for g in 0..gpu_n {
        let s = match gpu_cores.get(g) {
            Some(&s) => s,
            None => least_loaded(&slots, &all_slots).unwrap_or(0),
        };
        add(
            &mut slots,
            WorkerRole::Gpu,
            g,
            s,
            gpu_order
                .get(g % gpu_order.len().max(1))
                .copied()
                .unwrap_or(0),
        );
    }

    let busiest = slots.iter().map(|s| s.workers.len()).max().unwrap_or(0);
    if busiest <= 1 {
        reasons.push(format!(
            "every worker has a physical core of its own ({} on {})",
            plural(total, "worker", "workers"),
            plural(core_n, "core", "cores")
        ));
    } else {
        reasons.push(format!(
            "workers share cores ({} on {}; up to {busiest} on one core): I/O workers stay on their NUMA node",
            plural(total, "worker", "workers"),
            plural(core_n, "core", "cores")
        ));
    }

    // Pinning and idle strategies.
    let pin = overrides.pin.unwrap_or(d.pin);
    if !pin {
        reasons.push("pinning off (override): workers float and none busy-waits".into());
    }
    let requested_idle = overrides.idle;
    let idle = requested_idle.unwrap_or(d.app_idle);
    let mut spinners = 0;
    let mut denied: Vec<String> = Vec::new();
    let mut idles = Vec::with_capacity(workers.len());
    for w in &workers {
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
        } else if slots[w.slot].workers.len() > 1 {
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
    let tpc = cores.iter().map(|c| c.1.len()).max().unwrap_or(1);
    if tpc > 1 {
        reasons.push(format!(
            "SMT: {tpc} threads per core; workers take one thread per core, siblings only host a second worker"
        ));
    }

    // I/O backend.
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

    // Materialise placements.
    let mut plan = Plan {
        profile,
        pin,
        app_workers: Vec::new(),
        storage_workers: Vec::new(),
        network_workers: Vec::new(),
        gpu_workers: Vec::new(),
        io_backend,
        network_mode,
        gpu_fallback,
        idle,
        idle_overridden: requested_idle.is_some(),
        queue_capacity,
        batch_size,
        reasons,
        warnings: Vec::new(),
        detected: Detected {
            source: topology.source(),
            cpus: cpus.clone(),
            hardware_cpus: topology
                .numa_nodes()
                .iter()
                .map(|n| n.cpus.len())
                .sum::<usize>()
                .max(allowed.len()),
            physical_cores: cores.len(),
            threads_per_core: tpc,
            numa_nodes: nodes.len(),
            l1d_bytes: topology.l1d_size(),
            l2_bytes: topology.l2_size(),
            l3_bytes: topology.l3_size(),
            cache_line_size: topology.cache_line_size(),
            cpu_quota: topology.cpu_quota(),
            cpu_budget: budget,
            io_uring: caps.io_uring.to_string(),
            gpus: caps
                .gpus
                .iter()
                .map(|g| format!("{} ({}, {})", g.name, g.backend, g.device_type))
                .collect(),
        },
    };
    for (wi, w) in workers.iter().enumerate() {
        let slot = &slots[w.slot];
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
    Ok(plan)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n;
    let mut u = 0;
    while u + 1 < UNITS.len() && v >= 1024 && v % 1024 == 0 {
        v /= 1024;
        u += 1;
    }
    format!("{v} {}", UNITS[u])
}

/// "spin" if every worker spins, else "spin x3, park x1".
fn idle_summary(idles: &[IdleStrategy]) -> String {
    let mut counts: Vec<(IdleStrategy, usize)> = Vec::new();
    for &i in idles {
        match counts.iter_mut().find(|(s, _)| *s == i) {
            Some((_, c)) => *c += 1,
            None => counts.push((i, 1)),
        }
    }
    match counts.as_slice() {
        [] => "-".into(),
        [(s, _)] => s.name().into(),
        many => many
            .iter()
            .map(|(s, c)| format!("{} x{c}", s.name()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn role_line(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    cpus: &[Option<usize>],
    nodes: &[Option<usize>],
    idles: &[IdleStrategy],
) -> fmt::Result {
    let pinned: Vec<usize> = cpus.iter().flatten().copied().collect();
    let mut node_list: Vec<usize> = nodes.iter().flatten().copied().collect();
    node_list.sort_unstable();
    node_list.dedup();
    let where_ = if cpus.is_empty() {
        "-".to_owned()
    } else if pinned.is_empty() {
        "unpinned".to_owned()
    } else {
        format!("CPUs {}", format_cpu_list(&pinned))
    };
    writeln!(
        f,
        "  {name:<12} {:>4}  {where_:<20} {:<14} {}",
        cpus.len(),
        if node_list.is_empty() {
            "-".to_owned()
        } else {
            format_cpu_list(&node_list)
        },
        idle_summary(idles)
    )
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.detected;
        writeln!(f, "shared-nothing worker plan (profile: {})", self.profile)?;
        writeln!(f, "detected ({:?}):", d.source)?;
        writeln!(
            f,
            "  CPUs         {} usable ({}) of {} on the machine",
            d.cpus.len(),
            format_cpu_list(&d.cpus),
            d.hardware_cpus
        )?;
        writeln!(
            f,
            "  cores        {} physical, {}",
            d.physical_cores,
            if d.threads_per_core > 1 {
                format!("SMT {} threads per core", d.threads_per_core)
            } else {
                "no SMT".to_owned()
            }
        )?;
        writeln!(f, "  NUMA nodes   {}", d.numa_nodes)?;
        let cache = |n: Option<u64>| n.map_or("?".to_owned(), bytes);
        writeln!(
            f,
            "  caches       L1d {}, L2 {}, L3 {}, line {} B",
            cache(d.l1d_bytes),
            cache(d.l2_bytes),
            cache(d.l3_bytes),
            d.cache_line_size
        )?;
        writeln!(
            f,
            "  CPU budget   {:.2} CPUs ({})",
            d.cpu_budget,
            d.cpu_quota
                .map_or("no cgroup quota".to_owned(), |q| format!(
                    "cgroup quota {q:.2}"
                ))
        )?;
        writeln!(f, "  io_uring     {}", d.io_uring)?;
        writeln!(
            f,
            "  GPUs         {}",
            if d.gpus.is_empty() {
                "none".to_owned()
            } else {
                d.gpus.join("; ")
            }
        )?;
        writeln!(f, "chosen:")?;
        writeln!(
            f,
            "  {:<12} {:>4}  {:<20} {:<14} idle",
            "role", "n", "where", "nodes"
        )?;
        for (name, list) in [
            ("application", &self.app_workers),
            ("storage", &self.storage_workers),
            ("network", &self.network_workers),
        ] {
            let cpus: Vec<_> = list.iter().map(|p| p.cpu).collect();
            let nodes: Vec<_> = list.iter().map(|p| p.numa_node).collect();
            let idles: Vec<_> = list.iter().map(|p| p.idle).collect();
            role_line(f, name, &cpus, &nodes, &idles)?;
        }
        let cpus: Vec<_> = self.gpu_workers.iter().map(|p| p.cpu).collect();
        let nodes: Vec<_> = self.gpu_workers.iter().map(|p| p.numa_node).collect();
        let idles: Vec<_> = self.gpu_workers.iter().map(|p| p.idle).collect();
        role_line(f, "gpu", &cpus, &nodes, &idles)?;
        writeln!(
            f,
            "  I/O backend  {}",
            match &self.io_backend {
                IoBackend::IoUring => "io_uring".to_owned(),
                IoBackend::Fallback { reason } => format!("blocking fallback ({reason})"),
            }
        )?;
        writeln!(f, "  network      {}", self.network_mode)?;
        writeln!(
            f,
            "  queues       capacity {}, batch {}, {}",
            self.queue_capacity,
            self.batch_size,
            if self.pin { "pinned" } else { "not pinned" }
        )?;
        writeln!(f, "why:")?;
        for r in &self.reasons {
            writeln!(f, "  - {r}")?;
        }
        if !self.warnings.is_empty() {
            writeln!(f, "warnings:")?;
            for w in &self.warnings {
                writeln!(f, "  - {w}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
