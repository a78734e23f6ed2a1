//! Which CPUs this process may use.

/// The CPUs the calling thread may run on, in ascending order.
///
/// Reads the calling thread's affinity mask, so it honours `taskset` and
/// cgroup cpusets. Call it before pinning anything: a pinned thread's mask
/// is inherited by the threads it spawns.
pub fn available_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    if cpus.is_empty() {
        // The mask could not be read (not Linux, or a sandbox hid it): plan
        // for the parallelism the standard library reports, unpinned.
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus = (0..n).collect();
    }
    cpus
}

/// Highest CPU number the affinity calls can express (glibc's `CPU_SETSIZE`).
const MAX_CPUS: usize = 1024;

/// Pins the calling thread to `cpu`; `false` if that CPU does not exist or
/// this process may not use it.
pub(crate) fn pin_current_thread(cpu: usize) -> bool {
    // core_affinity aborts the process (a panic in a no-unwind context) for
    // a CPU beyond the CPU set size; refuse those here instead.
    cpu < MAX_CPUS && core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}
