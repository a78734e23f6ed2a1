//! What the machine offers this process: CPUs, cores, NUMA nodes, caches and
//! cgroup limits, as one plain value.
//!
//! [`Topology::detect`] is the only code in the crate that reads sysfs and
//! procfs. Everything downstream (placement, partitioning) takes `&Topology`,
//! so it can be tested on [`Topology::synthetic`] machines.
//!
//! # Read it before pinning anything
//!
//! The allowed CPUs come from `sched_getaffinity` of the *calling thread*.
//! Threads inherit their parent's affinity mask, so a thread spawned by an
//! already pinned thread sees a single CPU. Detect the topology once, early,
//! on a thread that has not been pinned, and pass the value around.

mod capabilities;
mod cgroup;
mod cpulist;
mod error;
#[cfg(feature = "hwloc")]
mod hwloc;
mod synthetic;
mod sysfs;
#[cfg(test)]
mod testfs;

pub use capabilities::{
    Capabilities, GpuInfo, IoUringFeatures, IoUringSupport, REQUIRED_OPCODES, detect_gpus,
};
pub use cpulist::{MAX_CPU_ID, format_cpu_list, parse_cpu_list};
pub use error::TopologyError;
#[cfg(feature = "hwloc")]
pub use hwloc::bind_thread_memory_to_node;
pub use synthetic::SyntheticTopology;

use std::collections::BTreeMap;
use std::path::Path;

/// Cache line size assumed when the machine does not report one.
pub const DEFAULT_CACHE_LINE_SIZE: usize = 64;

/// Which source produced a [`Topology`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TopologySource {
    /// Linux sysfs and procfs ([`Topology::detect`], [`Topology::from_sysfs`]).
    Sysfs,
    /// The hwloc library (feature `hwloc`, [`Topology::detect_hwloc`]).
    Hwloc,
    /// Built by [`SyntheticTopology`] for tests.
    Synthetic,
}

/// One logical CPU (hardware thread) the process may run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuInfo {
    /// The kernel's CPU number.
    pub id: usize,
    /// Core number as the kernel reports it; unique only within a package.
    pub core_id: usize,
    /// Physical package (socket) number.
    pub package_id: usize,
    /// NUMA node this CPU belongs to.
    pub numa_node: usize,
    /// The other hardware threads of the same physical core, as the hardware
    /// reports them (they may lie outside the allowed set). Empty without SMT.
    pub smt_siblings: Vec<usize>,
}

/// A NUMA node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaNode {
    /// Node number.
    pub id: usize,
    /// All CPUs of the node, allowed or not, sorted.
    pub cpus: Vec<usize>,
    /// Memory attached to the node in bytes, if known.
    pub memory_bytes: Option<u64>,
}

/// What a cache holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CacheKind {
    /// Data only.
    Data,
    /// Instructions only.
    Instruction,
    /// Data and instructions.
    Unified,
}

/// One CPU cache instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheInfo {
    /// 1 for L1, 2 for L2, ...
    pub level: u8,
    /// Data, instruction or unified.
    pub kind: CacheKind,
    /// Capacity in bytes.
    pub size_bytes: u64,
    /// Coherency line size in bytes, if reported.
    pub line_size: Option<usize>,
    /// The CPUs sharing this instance (allowed or not), sorted.
    pub shared_cpus: Vec<usize>,
}

/// A physical core with at least one allowed hardware thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhysicalCore {
    /// Package (socket) number.
    pub package_id: usize,
    /// Core number within the package.
    pub core_id: usize,
    /// NUMA node of the core (that of its first allowed thread).
    pub numa_node: usize,
    /// Its allowed hardware threads, sorted; the first is the one to use when
    /// only one worker runs on the core.
    pub cpus: Vec<usize>,
}

/// The CPUs, cores, NUMA nodes, caches and cgroup limits available to this
/// process.
///
/// Plain data: build it once with [`Topology::detect`] (before pinning any
/// thread, see the module docs) and pass `&Topology` around.
///
/// # Examples
///
/// ```
/// use shared_nothing::topology::Topology;
///
/// let topo = Topology::detect()?;
/// assert!(!topo.available_cpus().is_empty());
/// println!(
///     "{} CPUs, {} cores, {} NUMA nodes, budget {:.1} CPUs",
///     topo.available_cpus().len(),
///     topo.physical_cores().len(),
///     topo.numa_nodes().len(),
///     topo.effective_cpu_budget(),
/// );
/// # Ok::<(), shared_nothing::topology::TopologyError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    // Invariants: (1) `cpus` is non-empty and sorted by id, ids unique;
    // (2) `available` lists exactly the ids of `cpus`;
    // (3) every CPU's `numa_node` is the id of an entry of `numa_nodes`, whose
    //     `cpus` contain it; `numa_nodes` is sorted by id;
    // (4) `cpu_quota`, if set, is finite and > 0.
    source: TopologySource,
    cpus: Vec<CpuInfo>,
    available: Vec<usize>,
    numa_nodes: Vec<NumaNode>,
    caches: Vec<CacheInfo>,
    cache_line_size: usize,
    cpu_quota: Option<f64>,
    cgroup_cpuset: Option<Vec<usize>>,
}

/// Everything needed to build a [`Topology`]; normalised by `from_parts`.
#[derive(Debug)]
pub(crate) struct Parts {
    pub source: TopologySource,
    pub cpus: Vec<CpuInfo>,
    pub numa_nodes: Vec<NumaNode>,
    pub caches: Vec<CacheInfo>,
    pub cache_line_size: Option<usize>,
    pub cpu_quota: Option<f64>,
    pub cgroup_cpuset: Option<Vec<usize>>,
}

impl Topology {
    /// Detects the topology from Linux sysfs and procfs for the calling
    /// thread's allowed CPUs (`sched_getaffinity`).
    ///
    /// Call it before any thread is pinned: a pinned thread's mask is
    /// inherited by the threads it spawns.
    ///
    /// # Errors
    ///
    /// [`TopologyError`] if the affinity mask cannot be read or a sysfs file
    /// exists but is malformed. Missing optional files fall back to defaults
    /// (one NUMA node, no caches, 64-byte lines, no quota).
    pub fn detect() -> Result<Topology, TopologyError> {
        let allowed = sysfs::current_thread_affinity()?;
        Self::from_sysfs(Path::new("/"), &allowed)
    }

    /// Builds the topology from a filesystem tree rooted at `root` (which
    /// holds `sys/devices/system/...`, `sys/fs/cgroup/...`, `proc/self/...`),
    /// for the given allowed CPUs. [`Topology::detect`] is this with `root =
    /// "/"` and the affinity mask; tests point it at a fake tree.
    ///
    /// # Errors
    ///
    /// [`TopologyError::NoCpus`] if `allowed_cpus` is empty; other variants
    /// for unreadable or malformed files.
    pub fn from_sysfs(root: &Path, allowed_cpus: &[usize]) -> Result<Topology, TopologyError> {
        sysfs::read(root, allowed_cpus)
    }

    /// Starts a builder for a made-up machine, for tests.
    ///
    /// ```
    /// use shared_nothing::topology::Topology;
    ///
    /// let topo = Topology::synthetic().numa_nodes(2).cores_per_node(12).build()?;
    /// assert_eq!(topo.physical_cores().len(), 24);
    /// # Ok::<(), shared_nothing::topology::TopologyError>(())
    /// ```
    pub fn synthetic() -> SyntheticTopology {
        SyntheticTopology::new()
    }

    /// Normalises parts into a topology, enforcing the field invariants.
    pub(crate) fn from_parts(parts: Parts) -> Result<Topology, TopologyError> {
        let Parts {
            source,
            mut cpus,
            mut numa_nodes,
            mut caches,
            cache_line_size,
            cpu_quota,
            cgroup_cpuset,
        } = parts;
        cpus.sort_by_key(|c| c.id);
        cpus.dedup_by_key(|c| c.id);
        if cpus.is_empty() {
            return Err(TopologyError::NoCpus);
        }
        for cpu in &mut cpus {
            cpu.smt_siblings.retain(|&s| s != cpu.id);
            cpu.smt_siblings.sort_unstable();
            cpu.smt_siblings.dedup();
        }
        // Every CPU must sit in a node that lists it (invariant 3); CPUs of
        // nodes the source did not report go to node 0 or the lowest node.
        numa_nodes.sort_by_key(|n| n.id);
        numa_nodes.dedup_by_key(|n| n.id);
        if numa_nodes.is_empty() {
            numa_nodes.push(NumaNode {
                id: 0,
                cpus: Vec::new(),
                memory_bytes: None,
            });
        }
        for cpu in &mut cpus {
            let node = match numa_nodes.iter().position(|n| n.id == cpu.numa_node) {
                Some(i) => i,
                None => {
                    cpu.numa_node = numa_nodes[0].id;
                    0
                }
            };
            if !numa_nodes[node].cpus.contains(&cpu.id) {
                numa_nodes[node].cpus.push(cpu.id);
            }
        }
        for node in &mut numa_nodes {
            node.cpus.sort_unstable();
            node.cpus.dedup();
        }
        for cache in &mut caches {
            cache.shared_cpus.sort_unstable();
            cache.shared_cpus.dedup();
        }
        caches.sort_by(|a, b| {
            (a.level, a.kind, &a.shared_cpus).cmp(&(b.level, b.kind, &b.shared_cpus))
        });
        caches.dedup_by(|a, b| {
            a.level == b.level && a.kind == b.kind && a.shared_cpus == b.shared_cpus
        });
        let cpu_quota = cpu_quota.filter(|q| q.is_finite() && *q > 0.0);
        let available = cpus.iter().map(|c| c.id).collect();
        Ok(Topology {
            source,
            cpus,
            available,
            numa_nodes,
            caches,
            cache_line_size: cache_line_size
                .filter(|&s| s > 0)
                .unwrap_or(DEFAULT_CACHE_LINE_SIZE),
            cpu_quota,
            cgroup_cpuset,
        })
    }

    /// Which source produced this value.
    pub fn source(&self) -> TopologySource {
        self.source
    }

    /// The CPUs this process may run on, sorted.
    pub fn available_cpus(&self) -> &[usize] {
        &self.available
    }

    /// Details of every allowed CPU, sorted by id.
    pub fn cpus(&self) -> &[CpuInfo] {
        &self.cpus
    }

    /// Details of one allowed CPU, or `None` if it is not allowed.
    pub fn cpu(&self, cpu: usize) -> Option<&CpuInfo> {
        self.cpus
            .binary_search_by_key(&cpu, |c| c.id)
            .ok()
            .map(|i| &self.cpus[i])
    }

    /// The physical cores with at least one allowed hardware thread, sorted by
    /// (NUMA node, package, core id).
    pub fn physical_cores(&self) -> Vec<PhysicalCore> {
        let mut cores: BTreeMap<(usize, usize), PhysicalCore> = BTreeMap::new();
        for cpu in &self.cpus {
            cores
                .entry((cpu.package_id, cpu.core_id))
                .or_insert_with(|| PhysicalCore {
                    package_id: cpu.package_id,
                    core_id: cpu.core_id,
                    numa_node: cpu.numa_node,
                    cpus: Vec::new(),
                })
                .cpus
                .push(cpu.id);
        }
        let mut cores: Vec<PhysicalCore> = cores.into_values().collect();
        cores.sort_by_key(|c| (c.numa_node, c.package_id, c.core_id));
        cores
    }

    /// The most allowed hardware threads found on one physical core (1 without
    /// SMT).
    pub fn threads_per_core(&self) -> usize {
        self.physical_cores()
            .iter()
            .map(|c| c.cpus.len())
            .max()
            .unwrap_or(1)
    }

    /// The NUMA nodes, sorted by id. Nodes without allowed CPUs (or without any
    /// CPU) are included.
    pub fn numa_nodes(&self) -> &[NumaNode] {
        &self.numa_nodes
    }

    /// The NUMA node of an allowed CPU.
    pub fn numa_node_of(&self, cpu: usize) -> Option<usize> {
        self.cpu(cpu).map(|c| c.numa_node)
    }

    /// The allowed CPUs of one NUMA node, sorted.
    pub fn allowed_cpus_in_node(&self, node: usize) -> Vec<usize> {
        self.cpus
            .iter()
            .filter(|c| c.numa_node == node)
            .map(|c| c.id)
            .collect()
    }

    /// The other hardware threads on `cpu`'s physical core (empty without SMT
    /// or if `cpu` is not allowed). They may include CPUs outside the allowed
    /// set.
    pub fn smt_siblings(&self, cpu: usize) -> &[usize] {
        self.cpu(cpu).map_or(&[], |c| c.smt_siblings.as_slice())
    }

    /// The cgroup CPU quota in CPUs (`cpu.max` quota / period, smallest along
    /// the cgroup's ancestors), or `None` without a limit.
    pub fn cpu_quota(&self) -> Option<f64> {
        self.cpu_quota
    }

    /// The cgroup's effective cpuset, if one was found. The allowed CPUs
    /// already reflect it (the kernel applies it to the affinity mask); this
    /// is for reports.
    pub fn cgroup_cpuset(&self) -> Option<&[usize]> {
        self.cgroup_cpuset.as_deref()
    }

    /// How many CPUs' worth of time the process can use: the number of allowed
    /// CPUs, or the cgroup quota if smaller.
    ///
    /// ```
    /// use shared_nothing::topology::Topology;
    ///
    /// let topo = Topology::synthetic().cores_per_node(4).quota(Some(1.5)).build()?;
    /// assert_eq!(topo.effective_cpu_budget(), 1.5);
    /// # Ok::<(), shared_nothing::topology::TopologyError>(())
    /// ```
    pub fn effective_cpu_budget(&self) -> f64 {
        let cpus = self.available.len() as f64;
        self.cpu_quota.map_or(cpus, |q| q.min(cpus))
    }

    /// The cache instances shared by allowed CPUs, sorted by level.
    pub fn caches(&self) -> &[CacheInfo] {
        &self.caches
    }

    /// Coherency line size in bytes ([`DEFAULT_CACHE_LINE_SIZE`] if unknown).
    pub fn cache_line_size(&self) -> usize {
        self.cache_line_size
    }

    /// Size in bytes of the largest data or unified cache instance at `level`.
    pub fn cache_size(&self, level: u8) -> Option<u64> {
        self.caches
            .iter()
            .filter(|c| c.level == level && c.kind != CacheKind::Instruction)
            .map(|c| c.size_bytes)
            .max()
    }

    /// L1 data cache size in bytes, if known.
    pub fn l1d_size(&self) -> Option<u64> {
        self.cache_size(1)
    }

    /// L2 cache size in bytes (one instance), if known.
    pub fn l2_size(&self) -> Option<u64> {
        self.cache_size(2)
    }

    /// L3 cache size in bytes (one instance), if known.
    pub fn l3_size(&self) -> Option<u64> {
        self.cache_size(3)
    }
}

/// Pins the calling thread to `cpu`; `false` if that CPU does not exist or
/// this process may not use it.
pub(crate) fn pin_current_thread(cpu: usize) -> bool {
    // core_affinity aborts the process (a panic in a no-unwind context) for
    // a CPU beyond the affinity mask's size; refuse those here instead.
    cpu < libc::CPU_SETSIZE as usize
        && core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}
