//! Topology from the hwloc library (feature `hwloc`), and NUMA memory
//! binding.
//!
//! Why `hwlocality` and not `hwloc2`: measured on these machines (see
//! facts.md), hwloc2 2.2.0 has memory-safety bugs in safe code: its `Display`
//! writes past a 1-byte buffer (256 valgrind errors), `name()` frees a string
//! hwloc owns, and `objects_with_type(NUMANode)` panics because hwloc 2.x puts
//! NUMA nodes at a virtual depth (-3). hwlocality is a maintained rewrite for
//! hwloc 2.x that sees the NUMA node, binds memory correctly and is valgrind
//! clean. We do not enable its `vendored` feature (it downloads hwloc at build
//! time); it links the system library (apt `libhwloc-dev libudev-dev
//! pkg-config`).

use std::collections::BTreeSet;
use std::path::Path;

use hwlocality::Topology as Hw;
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::memory::binding::{MemoryBindingFlags, MemoryBindingPolicy};
use hwlocality::object::TopologyObject;
use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::{CacheType, ObjectType};

use super::{
    CacheInfo, CacheKind, CpuInfo, NumaNode, Parts, Topology, TopologyError, TopologySource,
    cgroup, sysfs,
};

fn hw_err(what: &str, e: impl std::fmt::Display) -> TopologyError {
    TopologyError::Hwloc(format!("{what}: {e}"))
}

fn set_to_vec(set: &CpuSet) -> Vec<usize> {
    set.iter_set().map(usize::from).collect()
}

fn cpus_of(obj: &TopologyObject) -> Vec<usize> {
    obj.complete_cpuset()
        .or_else(|| obj.cpuset())
        .map(|s| set_to_vec(&s))
        .unwrap_or_default()
}

impl Topology {
    /// Detects the topology with hwloc (feature `hwloc`) for the calling
    /// thread's allowed CPUs. The cgroup quota and cpuset still come from
    /// procfs, which hwloc does not report.
    ///
    /// Like [`Topology::detect`], call it before any thread is pinned.
    ///
    /// # Errors
    ///
    /// [`TopologyError::Hwloc`] if hwloc cannot build its topology, plus the
    /// errors of reading the affinity mask and cgroup files.
    pub fn detect_hwloc() -> Result<Topology, TopologyError> {
        let allowed = sysfs::current_thread_affinity()?;
        let hw = Hw::new().map_err(|e| hw_err("building the topology", e))?;
        let allowed_set: BTreeSet<usize> = allowed.iter().copied().collect();

        let numa_nodes: Vec<NumaNode> = hw
            .objects_with_type(ObjectType::NUMANode)
            .filter_map(|n| {
                let id = n.os_index()?;
                let memory_bytes = match n.attributes() {
                    Some(ObjectAttributes::NUMANode(a)) => a.local_memory().map(|m| m.get()),
                    _ => None,
                };
                Some(NumaNode {
                    id,
                    cpus: cpus_of(n),
                    memory_bytes,
                })
            })
            .collect();

        let mut cpus = Vec::new();
        for pu in hw.objects_with_type(ObjectType::PU) {
            let Some(id) = pu.os_index() else { continue };
            if !allowed_set.contains(&id) {
                continue;
            }
            let core = pu.first_ancestor_with_type(ObjectType::Core);
            let core_id = core.and_then(TopologyObject::os_index).unwrap_or(id);
            let package_id = pu
                .first_ancestor_with_type(ObjectType::Package)
                .and_then(TopologyObject::os_index)
                .unwrap_or(0);
            let numa_node = numa_nodes
                .iter()
                .find(|n| n.cpus.contains(&id))
                .map_or(0, |n| n.id);
            cpus.push(CpuInfo {
                id,
                core_id,
                package_id,
                numa_node,
                smt_siblings: core.map(cpus_of).unwrap_or_default(),
            });
        }

        let mut caches = Vec::new();
        for ty in [
            ObjectType::L1Cache,
            ObjectType::L2Cache,
            ObjectType::L3Cache,
            ObjectType::L4Cache,
            ObjectType::L5Cache,
            ObjectType::L1ICache,
            ObjectType::L2ICache,
            ObjectType::L3ICache,
        ] {
            for obj in hw.objects_with_type(ty) {
                let Some(ObjectAttributes::Cache(a)) = obj.attributes() else {
                    continue;
                };
                let shared_cpus = cpus_of(obj);
                if !shared_cpus.iter().any(|c| allowed_set.contains(c)) {
                    continue;
                }
                let kind = match a.cache_type() {
                    CacheType::Data => CacheKind::Data,
                    CacheType::Instruction => CacheKind::Instruction,
                    CacheType::Unified => CacheKind::Unified,
                    _ => continue,
                };
                let (Some(size), Ok(level)) = (a.size(), u8::try_from(a.depth())) else {
                    continue;
                };
                caches.push(CacheInfo {
                    level,
                    kind,
                    size_bytes: size.get(),
                    line_size: a.line_size().map(|l| l.get()),
                    shared_cpus,
                });
            }
        }
        let cache_line_size = caches
            .iter()
            .filter(|c| c.level == 1 && c.kind != CacheKind::Instruction)
            .find_map(|c| c.line_size)
            .or_else(|| caches.iter().find_map(|c| c.line_size));

        let cg = cgroup::read(Path::new("/"))?;
        Topology::from_parts(Parts {
            source: TopologySource::Hwloc,
            cpus,
            numa_nodes,
            caches,
            cache_line_size,
            cpu_quota: cg.cpu_quota,
            cgroup_cpuset: cg.cpuset,
        })
    }
}

/// Binds the calling thread's future memory allocations to NUMA node `node`
/// (hwloc `Bind` policy for the current thread; pages already touched stay
/// where they are). Builds an hwloc topology, which takes about a
/// millisecond: call it once when a worker starts.
///
/// # Errors
///
/// [`TopologyError::Hwloc`] if hwloc cannot build its topology, the node does
/// not exist, or the system refuses the binding.
pub fn bind_thread_memory_to_node(node: usize) -> Result<(), TopologyError> {
    let hw = Hw::new().map_err(|e| hw_err("building the topology", e))?;
    let obj = hw
        .objects_with_type(ObjectType::NUMANode)
        .find(|n| n.os_index() == Some(node))
        .ok_or_else(|| TopologyError::Hwloc(format!("NUMA node {node} does not exist")))?;
    let nodeset = obj
        .nodeset()
        .ok_or_else(|| TopologyError::Hwloc(format!("NUMA node {node} has no nodeset")))?;
    hw.bind_memory(
        &*nodeset,
        MemoryBindingPolicy::Bind,
        MemoryBindingFlags::THREAD,
    )
    .map_err(|e| hw_err(&format!("binding memory to node {node}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_and_hwloc_agree_on_this_machine() {
        let s = Topology::detect().unwrap();
        let h = Topology::detect_hwloc().unwrap();
        assert_eq!(h.source(), TopologySource::Hwloc);
        assert_eq!(s.available_cpus(), h.available_cpus(), "CPUs");
        let shape = |t: &Topology| {
            t.physical_cores()
                .into_iter()
                .map(|c| (c.package_id, c.numa_node, c.cpus))
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&s), shape(&h), "cores, packages and their CPUs");
        let nodes = |t: &Topology| {
            t.numa_nodes()
                .iter()
                .map(|n| (n.id, n.cpus.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(nodes(&s), nodes(&h), "NUMA nodes");
        for cpu in s.available_cpus() {
            assert_eq!(
                s.smt_siblings(*cpu),
                h.smt_siblings(*cpu),
                "siblings of {cpu}"
            );
        }
        assert_eq!(s.l2_size(), h.l2_size(), "L2");
        assert_eq!(s.l3_size(), h.l3_size(), "L3");
        assert_eq!(s.cache_line_size(), h.cache_line_size());
        // Memory per node: both come from the kernel, but hwloc may subtract
        // reserved pages; allow 5%.
        for (a, b) in s.numa_nodes().iter().zip(h.numa_nodes()) {
            if let (Some(x), Some(y)) = (a.memory_bytes, b.memory_bytes) {
                let diff = x.abs_diff(y) as f64 / x.max(1) as f64;
                assert!(diff < 0.05, "node {} memory {x} vs {y}", a.id);
            }
        }
    }

    #[test]
    fn binds_memory_to_an_existing_node_only() {
        let t = Topology::detect_hwloc().unwrap();
        let node = t.numa_node_of(t.available_cpus()[0]).unwrap();
        // Bind on a scratch thread so the test harness thread keeps its
        // default policy.
        std::thread::spawn(move || bind_thread_memory_to_node(node))
            .join()
            .unwrap()
            .unwrap();
        let missing = t.numa_nodes().iter().map(|n| n.id).max().unwrap() + 1000;
        assert!(matches!(
            bind_thread_memory_to_node(missing),
            Err(TopologyError::Hwloc(_))
        ));
    }
}
