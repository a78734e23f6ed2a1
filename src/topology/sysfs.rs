//! Reads the topology from Linux sysfs and procfs, under a configurable root
//! so tests can use a fake tree.

use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{
    CacheInfo, CacheKind, CpuInfo, NumaNode, Parts, Topology, TopologyError, TopologySource,
    cgroup, parse_cpu_list,
};

/// Upper bound on the affinity mask size tried, in bytes (256k CPUs).
const MAX_MASK_BYTES: usize = 1 << 15;

/// The CPUs in the calling thread's affinity mask, sorted.
///
/// # Errors
///
/// [`TopologyError::Affinity`] if `sched_getaffinity` fails for a reason other
/// than a too small buffer, or the mask is larger than 256k CPUs.
pub(crate) fn current_thread_affinity() -> Result<Vec<usize>, TopologyError> {
    // Start at the glibc `cpu_set_t` size (1024 CPUs) and grow while the
    // kernel says the buffer is too small (EINVAL).
    let mut bytes = std::mem::size_of::<libc::cpu_set_t>();
    loop {
        let mut mask = vec![0u64; bytes.div_ceil(8)];
        let len = mask.len() * 8;
        // SAFETY: `mask` is a live, writable buffer of exactly `len` bytes and
        // the kernel writes at most `len` bytes into it; `cpu_set_t` is a plain
        // bit array, so any u64-aligned buffer of that size is a valid target.
        let rc =
            unsafe { libc::sched_getaffinity(0, len, mask.as_mut_ptr().cast::<libc::cpu_set_t>()) };
        if rc == 0 {
            let cpus: Vec<usize> = mask
                .iter()
                .enumerate()
                .flat_map(|(w, &word)| {
                    (0..64)
                        .filter(move |b| word >> b & 1 == 1)
                        .map(move |b| w * 64 + b)
                })
                .collect();
            return if cpus.is_empty() {
                Err(TopologyError::NoCpus)
            } else {
                Ok(cpus)
            };
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) && bytes < MAX_MASK_BYTES {
            bytes *= 2;
            continue;
        }
        return Err(TopologyError::Affinity(err));
    }
}

/// Reads a file, mapping "not found" to `None`.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, TopologyError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TopologyError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A parse error for `path`.
pub(crate) fn parse_error(path: &Path, content: &str, reason: impl Into<String>) -> TopologyError {
    TopologyError::Parse {
        path: path.to_owned(),
        content: content.trim().chars().take(200).collect(),
        reason: reason.into(),
    }
}

/// Reads and parses an optional one-value file.
fn read_value<T: FromStr>(path: &Path) -> Result<Option<T>, TopologyError> {
    match read_optional(path)? {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| parse_error(path, &s, "expected a number")),
    }
}

/// Reads an optional CPU list file; a malformed list names the file.
pub(crate) fn read_cpu_list(path: &Path) -> Result<Option<Vec<usize>>, TopologyError> {
    match read_optional(path)? {
        None => Ok(None),
        Some(s) => parse_cpu_list(&s).map(Some).map_err(|e| match e {
            TopologyError::CpuList { reason, .. } => parse_error(path, &s, reason),
            other => other,
        }),
    }
}

/// Parses a sysfs cache size such as `48K`, `2048K`, `1M` or `512`.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Parses the `MemTotal` line of a (node) meminfo file into bytes.
/// `Ok(None)` if there is no such line.
pub(crate) fn parse_mem_total(path: &Path, content: &str) -> Result<Option<u64>, TopologyError> {
    let Some(line) = content.lines().find(|l| l.contains("MemTotal:")) else {
        return Ok(None);
    };
    let rest = line.split("MemTotal:").nth(1).unwrap_or("").trim();
    let mut parts = rest.split_whitespace();
    let value: u64 = parts
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| parse_error(path, line, "MemTotal is not a number"))?;
    let mult = match parts.next() {
        Some("kB") | Some("KB") => 1024,
        None => 1,
        Some(unit) => return Err(parse_error(path, line, format!("unknown unit {unit:?}"))),
    };
    value
        .checked_mul(mult)
        .map(Some)
        .ok_or_else(|| parse_error(path, line, "MemTotal overflows"))
}

/// Lists `prefix<N>` entries of a directory as sorted numbers; a missing
/// directory gives an empty list.
fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<usize>, TopologyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TopologyError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| TopologyError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.parse::<usize>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Joins an absolute path under `root`.
pub(crate) fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Builds a [`Topology`] from the tree at `root` for the allowed CPUs.
pub(crate) fn read(root: &Path, allowed: &[usize]) -> Result<Topology, TopologyError> {
    if allowed.is_empty() {
        return Err(TopologyError::NoCpus);
    }
    let mut allowed = allowed.to_vec();
    allowed.sort_unstable();
    allowed.dedup();
    let cpu_dir = under(root, "/sys/devices/system/cpu");
    let node_dir = under(root, "/sys/devices/system/node");

    // NUMA nodes. Without a node directory (a kernel without NUMA support),
    // the whole machine is node 0 with the memory from /proc/meminfo.
    let mut numa_nodes = Vec::new();
    for id in numbered_entries(&node_dir, "node")? {
        let dir = node_dir.join(format!("node{id}"));
        let cpus = read_cpu_list(&dir.join("cpulist"))?.unwrap_or_default();
        let meminfo = dir.join("meminfo");
        let memory_bytes = match read_optional(&meminfo)? {
            Some(s) => parse_mem_total(&meminfo, &s)?,
            None => None,
        };
        numa_nodes.push(NumaNode {
            id,
            cpus,
            memory_bytes,
        });
    }
    if numa_nodes.is_empty() {
        let meminfo = under(root, "/proc/meminfo");
        let memory_bytes = match read_optional(&meminfo)? {
            Some(s) => parse_mem_total(&meminfo, &s)?,
            None => None,
        };
        numa_nodes.push(NumaNode {
            id: 0,
            cpus: Vec::new(),
            memory_bytes,
        });
    }

    let mut cpus = Vec::with_capacity(allowed.len());
    let mut caches = Vec::new();
    let mut line_size = None;
    for &id in &allowed {
        let dir = cpu_dir.join(format!("cpu{id}"));
        let topo = dir.join("topology");
        let core_id = read_value::<i64>(&topo.join("core_id"))?;
        let package_id = read_value::<i64>(&topo.join("physical_package_id"))?;
        let siblings = match read_cpu_list(&topo.join("core_cpus_list"))? {
            Some(s) => Some(s),
            None => read_cpu_list(&topo.join("thread_siblings_list"))?,
        };
        // Some platforms report -1 for an unknown id: treat as the default.
        let core_id = core_id.and_then(|v| usize::try_from(v).ok()).unwrap_or(id);
        let package_id = package_id
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(0);
        let numa_node = numa_nodes
            .iter()
            .find(|n| n.cpus.contains(&id))
            .map_or(numa_nodes[0].id, |n| n.id);
        cpus.push(CpuInfo {
            id,
            core_id,
            package_id,
            numa_node,
            smt_siblings: siblings.unwrap_or_default(),
        });

        let cache_dir = dir.join("cache");
        for index in numbered_entries(&cache_dir, "index")? {
            let idx = cache_dir.join(format!("index{index}"));
            if let Some(cache) = read_cache(&idx, id)? {
                if line_size.is_none() && cache.level == 1 && cache.kind != CacheKind::Instruction {
                    line_size = cache.line_size;
                }
                caches.push(cache);
            }
        }
    }
    if line_size.is_none() {
        line_size = caches.iter().find_map(|c| c.line_size);
    }

    let cg = cgroup::read(root)?;
    Topology::from_parts(Parts {
        source: TopologySource::Sysfs,
        cpus,
        numa_nodes,
        caches,
        cache_line_size: line_size,
        cpu_quota: cg.cpu_quota,
        cgroup_cpuset: cg.cpuset,
    })
}

/// Reads one `cache/indexN` directory. Returns `None` if its level, type or
/// size is missing (some virtual machines omit them).
fn read_cache(dir: &Path, cpu: usize) -> Result<Option<CacheInfo>, TopologyError> {
    let Some(level) = read_value::<u8>(&dir.join("level"))? else {
        return Ok(None);
    };
    let type_path = dir.join("type");
    let Some(kind) = read_optional(&type_path)? else {
        return Ok(None);
    };
    let kind = match kind.trim() {
        "Data" => CacheKind::Data,
        "Instruction" => CacheKind::Instruction,
        "Unified" => CacheKind::Unified,
        _ => return Err(parse_error(&type_path, &kind, "unknown cache type")),
    };
    let size_path = dir.join("size");
    let Some(size) = read_optional(&size_path)? else {
        return Ok(None);
    };
    let size_bytes = parse_size(&size)
        .ok_or_else(|| parse_error(&size_path, &size, "expected a size like 48K"))?;
    let line_size = read_value::<usize>(&dir.join("coherency_line_size"))?;
    let shared_cpus = read_cpu_list(&dir.join("shared_cpu_list"))?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec![cpu]);
    Ok(Some(CacheInfo {
        level,
        kind,
        size_bytes,
        line_size,
        shared_cpus,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testfs::FakeRoot;
    use super::super::{CacheKind, Topology, TopologyError, TopologySource};
    use super::*;

    /// 2 packages x 2 cores x 2 threads; CPU i is core i % 4, siblings i and
    /// i + 4; package p is NUMA node p. cgroup v2 with a 2.5-CPU quota on the
    /// parent and a cpuset on the leaf.
    fn full_tree() -> FakeRoot {
        let r = FakeRoot::new("full");
        for cpu in 0..8 {
            let core = cpu % 4;
            let d = format!("sys/devices/system/cpu/cpu{cpu}");
            r.write(&format!("{d}/topology/core_id"), &format!("{}\n", core % 2));
            r.write(
                &format!("{d}/topology/physical_package_id"),
                &format!("{}\n", core / 2),
            );
            r.write(
                &format!("{d}/topology/core_cpus_list"),
                &format!("{},{}\n", core, core + 4),
            );
            r.write(
                &format!("{d}/topology/thread_siblings_list"),
                "garbage-not-read\n",
            );
            for (i, (level, kind, size, shared)) in [
                (1, "Data", "32K", format!("{core},{}", core + 4)),
                (1, "Instruction", "32K", format!("{core},{}", core + 4)),
                (2, "Unified", "1024K", format!("{core},{}", core + 4)),
                (
                    3,
                    "Unified",
                    "16M",
                    if core < 2 {
                        "0-1,4-5".into()
                    } else {
                        "2-3,6-7".into()
                    },
                ),
            ]
            .into_iter()
            .enumerate()
            {
                let c = format!("{d}/cache/index{i}");
                r.write(&format!("{c}/level"), &format!("{level}\n"));
                r.write(&format!("{c}/type"), &format!("{kind}\n"));
                r.write(&format!("{c}/size"), &format!("{size}\n"));
                r.write(&format!("{c}/coherency_line_size"), "128\n");
                r.write(&format!("{c}/shared_cpu_list"), &format!("{shared}\n"));
            }
        }
        r.write("sys/devices/system/node/node0/cpulist", "0-1,4-5\n");
        r.write("sys/devices/system/node/node1/cpulist", "2-3,6-7\n");
        r.write(
            "sys/devices/system/node/node0/meminfo",
            "Node 0 MemTotal:        5071428 kB\nNode 0 MemFree:         3176992 kB\n",
        );
        r.write(
            "sys/devices/system/node/node1/meminfo",
            "Node 1 MemTotal:  1024 kB\n",
        );
        r.write("sys/devices/system/node/possible", "0-1\n");
        r.write("proc/self/cgroup", "0::/app/worker\n");
        r.write(
            "proc/self/mountinfo",
            "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
             30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        r.write("sys/fs/cgroup/cpu.stat", "usage_usec 1\n");
        r.write("sys/fs/cgroup/app/cpu.max", "250000 100000\n");
        r.write("sys/fs/cgroup/app/worker/cpu.max", "max 100000\n");
        r.write("sys/fs/cgroup/app/worker/cpuset.cpus.effective", "0-3\n");
        r
    }

    #[test]
    fn parses_a_full_tree() {
        let r = full_tree();
        let t = Topology::from_sysfs(r.path(), &[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        assert_eq!(t.source(), TopologySource::Sysfs);
        assert_eq!(t.available_cpus(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        let c5 = t.cpu(5).unwrap();
        assert_eq!((c5.core_id, c5.package_id, c5.numa_node), (1, 0, 0));
        assert_eq!(t.smt_siblings(5), &[1]);
        assert_eq!(t.smt_siblings(2), &[6]);
        assert_eq!(t.numa_node_of(6), Some(1));
        assert_eq!(t.physical_cores().len(), 4);
        assert_eq!(t.threads_per_core(), 2);
        assert!(t.physical_cores().iter().all(|c| c.cpus.len() == 2));
        let nodes = t.numa_nodes();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].cpus, vec![0, 1, 4, 5]);
        assert_eq!(nodes[0].memory_bytes, Some(5_071_428 * 1024));
        assert_eq!(nodes[1].memory_bytes, Some(1024 * 1024));
        // 4 cores x (L1d + L1i + L2) + 2 L3, deduplicated across siblings.
        assert_eq!(t.caches().len(), 14);
        assert_eq!(t.l1d_size(), Some(32 << 10));
        assert_eq!(t.l2_size(), Some(1 << 20));
        assert_eq!(t.l3_size(), Some(16 << 20));
        let l3: Vec<_> = t.caches().iter().filter(|c| c.level == 3).collect();
        assert_eq!(l3[0].shared_cpus, vec![0, 1, 4, 5]);
        assert_eq!(l3[0].kind, CacheKind::Unified);
        assert_eq!(t.cache_line_size(), 128);
        // Parent's 2.5 wins over the leaf's "max".
        assert_eq!(t.cpu_quota(), Some(2.5));
        assert_eq!(t.effective_cpu_budget(), 2.5);
        assert_eq!(t.cgroup_cpuset(), Some(&[0usize, 1, 2, 3][..]));
    }

    #[test]
    fn restricts_to_allowed_cpus() {
        let r = full_tree();
        let t = Topology::from_sysfs(r.path(), &[6, 2, 2]).unwrap();
        assert_eq!(t.available_cpus(), &[2, 6]);
        let cores = t.physical_cores();
        assert_eq!(cores.len(), 1, "2 and 6 are siblings");
        assert_eq!(cores[0].cpus, vec![2, 6]);
        assert_eq!(cores[0].numa_node, 1);
        assert_eq!(t.allowed_cpus_in_node(0), Vec::<usize>::new());
        assert_eq!(t.allowed_cpus_in_node(1), vec![2, 6]);
        // The node list still shows the hardware.
        assert_eq!(t.numa_nodes()[0].cpus, vec![0, 1, 4, 5]);
        assert_eq!(
            t.effective_cpu_budget(),
            2.0,
            "2 CPUs is below the 2.5 quota"
        );
    }

    #[test]
    fn empty_tree_degrades_to_defaults() {
        let r = FakeRoot::new("empty");
        let t = Topology::from_sysfs(r.path(), &[0, 3]).unwrap();
        assert_eq!(t.available_cpus(), &[0, 3]);
        assert_eq!(t.physical_cores().len(), 2, "each CPU is its own core");
        assert_eq!(t.cpu(3).unwrap().core_id, 3);
        assert_eq!(t.cpu(3).unwrap().package_id, 0);
        assert!(t.smt_siblings(0).is_empty());
        assert_eq!(t.numa_nodes().len(), 1);
        assert_eq!(t.numa_nodes()[0].cpus, vec![0, 3]);
        assert_eq!(t.numa_nodes()[0].memory_bytes, None);
        assert!(t.caches().is_empty());
        assert_eq!(t.l3_size(), None);
        assert_eq!(t.cache_line_size(), 64);
        assert_eq!(t.cpu_quota(), None);
        assert_eq!(t.cgroup_cpuset(), None);
        assert_eq!(t.effective_cpu_budget(), 2.0);
    }

    #[test]
    fn partial_files_degrade() {
        let r = FakeRoot::new("partial");
        // Only thread_siblings_list (older kernels); a cache without size; a
        // node without meminfo; /proc/meminfo unused because nodes exist;
        // package id -1 (unknown on some platforms).
        r.write(
            "sys/devices/system/cpu/cpu0/topology/thread_siblings_list",
            "0-1\n",
        )
        .write(
            "sys/devices/system/cpu/cpu0/topology/physical_package_id",
            "-1\n",
        )
        .write("sys/devices/system/cpu/cpu0/cache/index0/level", "1\n")
        .write("sys/devices/system/cpu/cpu0/cache/index0/type", "Data\n")
        .write("sys/devices/system/cpu/cpu0/cache/index2/level", "2\n")
        .write("sys/devices/system/cpu/cpu0/cache/index2/type", "Unified\n")
        .write("sys/devices/system/cpu/cpu0/cache/index2/size", "512K\n")
        .write("sys/devices/system/node/node0/cpulist", "0-1\n")
        .write("proc/self/cgroup", "0::/\n");
        let t = Topology::from_sysfs(r.path(), &[0, 1]).unwrap();
        assert_eq!(t.smt_siblings(0), &[1]);
        assert_eq!(t.cpu(0).unwrap().package_id, 0);
        assert_eq!(t.caches().len(), 1, "the L1 without a size is skipped");
        assert_eq!(t.l2_size(), Some(512 << 10));
        assert_eq!(
            t.caches()[0].shared_cpus,
            vec![0],
            "default: the CPU itself"
        );
        assert_eq!(t.cache_line_size(), 64);
        assert_eq!(t.numa_nodes()[0].memory_bytes, None);
        assert_eq!(
            t.cpu_quota(),
            None,
            "no mountinfo, no cgroup files: no limit"
        );
    }

    #[test]
    fn no_numa_dir_uses_proc_meminfo() {
        let r = FakeRoot::new("nonuma");
        r.write(
            "proc/meminfo",
            "MemTotal:       24576000 kB\nMemFree: 1 kB\n",
        );
        let t = Topology::from_sysfs(r.path(), &[0]).unwrap();
        assert_eq!(t.numa_nodes()[0].memory_bytes, Some(24_576_000 * 1024));
    }

    #[test]
    fn cpus_outside_every_node_join_the_first() {
        let r = FakeRoot::new("orphan");
        r.write("sys/devices/system/node/node1/cpulist", "0\n");
        r.write("sys/devices/system/node/node3/cpulist", "\n");
        let t = Topology::from_sysfs(r.path(), &[0, 7]).unwrap();
        assert_eq!(t.numa_node_of(0), Some(1));
        assert_eq!(t.numa_node_of(7), Some(1));
        assert_eq!(t.numa_nodes()[0].cpus, vec![0, 7]);
        assert_eq!(t.numa_nodes()[1].id, 3);
        assert!(t.numa_nodes()[1].cpus.is_empty(), "memory-only node kept");
    }

    fn expect_parse_error(r: &FakeRoot, allowed: &[usize], file: &str) {
        match Topology::from_sysfs(r.path(), allowed) {
            Err(TopologyError::Parse { path, .. }) => {
                assert!(
                    path.ends_with(file),
                    "{} should end with {file}",
                    path.display()
                )
            }
            other => panic!("expected a parse error for {file}, got {other:?}"),
        }
    }

    #[test]
    fn malformed_files_are_typed_errors() {
        let cases: &[(&str, &str)] = &[
            ("sys/devices/system/cpu/cpu0/topology/core_id", "abc\n"),
            (
                "sys/devices/system/cpu/cpu0/topology/physical_package_id",
                "\n",
            ),
            (
                "sys/devices/system/cpu/cpu0/topology/core_cpus_list",
                "0-\n",
            ),
            ("sys/devices/system/cpu/cpu0/cache/index0/size", "lots\n"),
            ("sys/devices/system/cpu/cpu0/cache/index0/type", "Weird\n"),
            ("sys/devices/system/cpu/cpu0/cache/index0/level", "one\n"),
            (
                "sys/devices/system/cpu/cpu0/cache/index0/coherency_line_size",
                "-64\n",
            ),
            (
                "sys/devices/system/cpu/cpu0/cache/index0/shared_cpu_list",
                "3-1\n",
            ),
            ("sys/devices/system/node/node0/cpulist", "x\n"),
            (
                "sys/devices/system/node/node0/meminfo",
                "Node 0 MemTotal: many kB\n",
            ),
            (
                "sys/devices/system/node/node0/meminfo",
                "Node 0 MemTotal: 5 parsecs\n",
            ),
            ("sys/fs/cgroup/cpu.max", "abc 100000\n"),
            ("sys/fs/cgroup/cpu.max", "100000 0\n"),
            ("sys/fs/cgroup/cpu.max", "\n"),
            ("sys/fs/cgroup/cpu.max", "1 2 3\n"),
            ("sys/fs/cgroup/cpuset.cpus.effective", "0-a\n"),
            ("proc/self/cgroup", "garbage\n"),
        ];
        for (file, content) in cases {
            let r = FakeRoot::new("bad");
            // A valid cache entry so a single malformed field is the only fault.
            r.write("sys/devices/system/cpu/cpu0/cache/index0/level", "1\n")
                .write("sys/devices/system/cpu/cpu0/cache/index0/type", "Data\n")
                .write("sys/devices/system/cpu/cpu0/cache/index0/size", "32K\n")
                .write("sys/devices/system/node/node0/cpulist", "0\n")
                .write("proc/self/cgroup", "0::/\n")
                .write(
                    "proc/self/mountinfo",
                    "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
                );
            r.write(file, content);
            expect_parse_error(&r, &[0], file);
        }
    }

    #[test]
    fn unreadable_file_is_an_io_error() {
        let r = FakeRoot::new("eisdir");
        r.mkdir("sys/devices/system/cpu/cpu0/topology/core_id");
        match Topology::from_sysfs(r.path(), &[0]) {
            Err(TopologyError::Io { path, .. }) => assert!(path.ends_with("core_id")),
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }

    #[test]
    fn no_allowed_cpu_is_an_error() {
        let r = FakeRoot::new("nocpu");
        assert!(matches!(
            Topology::from_sysfs(r.path(), &[]),
            Err(TopologyError::NoCpus)
        ));
    }

    #[test]
    fn sizes_and_meminfo() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("107520K\n"), Some(107_520 << 10));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
        let p = Path::new("meminfo");
        assert_eq!(parse_mem_total(p, "MemFree: 1 kB\n").unwrap(), None);
        assert_eq!(parse_mem_total(p, "MemTotal: 2 kB\n").unwrap(), Some(2048));
    }

    #[test]
    fn detect_on_this_machine() {
        let t = Topology::detect().unwrap();
        assert_eq!(t.source(), TopologySource::Sysfs);
        assert!(!t.available_cpus().is_empty());
        let nodes = t.numa_nodes();
        assert!(!nodes.is_empty());
        for &cpu in t.available_cpus() {
            assert!(
                nodes.iter().any(|n| n.cpus.contains(&cpu)),
                "CPU {cpu} is in no NUMA node: {nodes:?}"
            );
        }
        assert!(t.physical_cores().len() <= t.available_cpus().len());
        assert!(t.effective_cpu_budget() > 0.0);
        assert!(t.effective_cpu_budget() <= t.available_cpus().len() as f64);
        assert!(t.cache_line_size().is_power_of_two());
        // Matches `nproc`, which also reports the calling thread's mask.
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        if t.cpu_quota().is_none() {
            assert_eq!(t.available_cpus().len(), nproc);
        }
        eprintln!(
            "detected CPUs {:?}, {} cores, {} nodes, L2 {:?}, L3 {:?}, quota {:?}",
            t.available_cpus(),
            t.physical_cores().len(),
            nodes.len(),
            t.l2_size(),
            t.l3_size(),
            t.cpu_quota()
        );
    }

    /// Pins the calling thread to one CPU.
    fn pin_current_thread(cpu: usize) {
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid cpu_set_t and `cpu` is below CPU_SETSIZE
        // (it came from the affinity mask, checked by the caller).
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: pid 0 is the calling thread; `set` is valid for its size.
        let rc =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    }

    #[test]
    fn pinned_threads_pass_their_mask_to_children() {
        // The documented trap: detect after pinning and a child thread sees
        // one CPU. Runs on scratch threads so the test thread stays unpinned.
        let all = current_thread_affinity().unwrap();
        let last = *all.last().unwrap();
        assert!(last < 1024);
        let seen = std::thread::spawn(move || {
            pin_current_thread(last);
            std::thread::spawn(|| Topology::detect().unwrap().available_cpus().to_vec())
                .join()
                .unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![last]);
        assert_eq!(Topology::detect().unwrap().available_cpus(), all.as_slice());
    }

    #[test]
    fn affinity_matches_sched_getcpu_range() {
        let cpus = current_thread_affinity().unwrap();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
        // SAFETY: sched_getcpu has no preconditions.
        let now = unsafe { libc::sched_getcpu() };
        if let Ok(now) = usize::try_from(now) {
            assert!(cpus.contains(&now), "running on {now}, mask {cpus:?}");
        }
    }
}
