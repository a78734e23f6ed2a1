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

use std::fmt;

pub(crate) use super::placement::plan_roles;
use super::profile::{PlanOverrides, Profile};
use crate::topology::{Capabilities, Topology, TopologySource, format_cpu_list};
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
