//! A builder for made-up machines, so placement logic can be tested on
//! shapes this machine does not have.

use super::{
    CacheInfo, CacheKind, CpuInfo, NumaNode, Parts, Topology, TopologyError, TopologySource,
};

/// Builder for a synthetic [`Topology`] (see [`Topology::synthetic`]).
///
/// CPUs are numbered like Linux on x86: first thread of every core
/// (`0..cores`), then the second thread of every core, and so on, so CPU `c`
/// and `c + cores` are SMT siblings. Cores are split evenly over NUMA nodes
/// and nodes over packages. Each core has a 48 KiB L1d, 32 KiB L1i and 2 MiB
/// L2; each NUMA node shares a 32 MiB L3 and has 16 GiB of memory; lines are
/// 64 bytes.
///
/// ```
/// use shared_nothing::topology::{Topology, TopologySource};
///
/// let topo = Topology::synthetic()
///     .packages(2)
///     .numa_nodes(2)
///     .cores_per_node(4)
///     .threads_per_core(2)
///     .allowed(&[0, 1, 8])
///     .quota(Some(1.5))
///     .build()?;
/// assert_eq!(topo.source(), TopologySource::Synthetic);
/// assert_eq!(topo.available_cpus(), &[0, 1, 8]);
/// assert_eq!(topo.smt_siblings(0), &[8]);
/// assert_eq!(topo.effective_cpu_budget(), 1.5);
/// # Ok::<(), shared_nothing::topology::TopologyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SyntheticTopology {
    packages: usize,
    numa_nodes: usize,
    cores_per_node: usize,
    threads_per_core: usize,
    allowed: Option<Vec<usize>>,
    quota: Option<f64>,
}

impl Default for SyntheticTopology {
    fn default() -> Self {
        Self::new()
    }
}

impl SyntheticTopology {
    /// One package, one node, one core, one thread, everything allowed, no
    /// quota.
    pub fn new() -> Self {
        SyntheticTopology {
            packages: 1,
            numa_nodes: 1,
            cores_per_node: 1,
            threads_per_core: 1,
            allowed: None,
            quota: None,
        }
    }

    /// Number of packages (sockets).
    pub fn packages(mut self, n: usize) -> Self {
        self.packages = n;
        self
    }

    /// Number of NUMA nodes.
    pub fn numa_nodes(mut self, n: usize) -> Self {
        self.numa_nodes = n;
        self
    }

    /// Physical cores in each NUMA node.
    pub fn cores_per_node(mut self, n: usize) -> Self {
        self.cores_per_node = n;
        self
    }

    /// Hardware threads per core (2 for SMT).
    pub fn threads_per_core(mut self, n: usize) -> Self {
        self.threads_per_core = n;
        self
    }

    /// Restricts the allowed CPUs (as a cpuset or `taskset` would); default
    /// all.
    pub fn allowed(mut self, cpus: &[usize]) -> Self {
        self.allowed = Some(cpus.to_vec());
        self
    }

    /// Sets a cgroup CPU quota in CPUs (`Some(1.5)` for `cpu.max = 150000
    /// 100000`).
    pub fn quota(mut self, quota: Option<f64>) -> Self {
        self.quota = quota;
        self
    }

    /// Builds the topology.
    ///
    /// # Errors
    ///
    /// [`TopologyError::Synthetic`] if a count is zero, the nodes cannot be
    /// split evenly over packages (or vice versa), the machine exceeds
    /// [`MAX_CPU_ID`](super::MAX_CPU_ID) CPUs, an allowed CPU does not exist,
    /// or the quota is not a positive finite number;
    /// [`TopologyError::NoCpus`] if the allowed list is empty.
    pub fn build(self) -> Result<Topology, TopologyError> {
        let bad = |m: &str| Err(TopologyError::Synthetic(m.to_owned()));
        let (p, n, c, t) = (
            self.packages,
            self.numa_nodes,
            self.cores_per_node,
            self.threads_per_core,
        );
        if p == 0 || n == 0 || c == 0 || t == 0 {
            return bad("packages, nodes, cores and threads must all be at least 1");
        }
        if n % p != 0 && p % n != 0 {
            return bad("NUMA nodes must divide evenly over packages (or packages over nodes)");
        }
        let Some(cores) = n.checked_mul(c) else {
            return bad("too many cores");
        };
        if cores
            .checked_mul(t)
            .is_none_or(|total| total > super::MAX_CPU_ID)
        {
            return bad("too many CPUs");
        }
        if cores % p != 0 {
            return bad("cores must divide evenly over packages");
        }
        if let Some(q) = self.quota {
            if !(q.is_finite() && q > 0.0) {
                return bad("quota must be a positive finite number of CPUs");
            }
        }
        let total = cores * t;
        let allowed = match self.allowed {
            Some(a) => {
                if let Some(&x) = a.iter().find(|&&x| x >= total) {
                    return Err(TopologyError::Synthetic(format!(
                        "allowed CPU {x} does not exist (machine has {total})"
                    )));
                }
                a
            }
            None => (0..total).collect(),
        };
        if allowed.is_empty() {
            return Err(TopologyError::NoCpus);
        }
        let cores_per_package = cores / p;
        let core_of = |cpu: usize| cpu % cores;
        let siblings = |core: usize| (0..t).map(|k| core + k * cores).collect::<Vec<usize>>();

        let cpus = allowed
            .iter()
            .map(|&cpu| {
                let core = core_of(cpu);
                CpuInfo {
                    id: cpu,
                    core_id: core % cores_per_package,
                    package_id: core / cores_per_package,
                    numa_node: core / c,
                    smt_siblings: siblings(core),
                }
            })
            .collect();
        let numa_nodes = (0..n)
            .map(|node| NumaNode {
                id: node,
                cpus: (node * c..(node + 1) * c).flat_map(siblings).collect(),
                memory_bytes: Some(16 << 30),
            })
            .collect();
        let mut caches = Vec::new();
        let mut seen_nodes = Vec::new();
        for &cpu in &allowed {
            let core = core_of(cpu);
            for (level, kind, size) in [
                (1, CacheKind::Data, 48 << 10),
                (1, CacheKind::Instruction, 32 << 10),
                (2, CacheKind::Unified, 2 << 20),
            ] {
                caches.push(CacheInfo {
                    level,
                    kind,
                    size_bytes: size,
                    line_size: Some(64),
                    shared_cpus: siblings(core),
                });
            }
            let node = core / c;
            if !seen_nodes.contains(&node) {
                seen_nodes.push(node);
                caches.push(CacheInfo {
                    level: 3,
                    kind: CacheKind::Unified,
                    size_bytes: 32 << 20,
                    line_size: Some(64),
                    shared_cpus: (node * c..(node + 1) * c).flat_map(siblings).collect(),
                });
            }
        }
        Topology::from_parts(Parts {
            source: TopologySource::Synthetic,
            cpus,
            numa_nodes,
            caches,
            cache_line_size: Some(64),
            cpu_quota: self.quota,
            cgroup_cpuset: None,
        })
    }
}
