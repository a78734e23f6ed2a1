//! How long an idle worker spins before it yields: contention-aware
//! spinning.
//!
//! Spinning buys latency only with a CPU of one's own. A worker that
//! shares its CPU with another runnable thread (a load generator, a
//! client, a second process on an oversubscribed machine) takes that
//! thread's time for every poll it spins, and the message it waits for
//! is often the one that thread would have produced. So each worker
//! watches how often the kernel takes its CPU away (involuntary context
//! switches of its own thread, `getrusage(RUSAGE_THREAD)`), sampled at
//! most once per [`WINDOW_NS`] at the start of an idle period: while the
//! last window saw at least [`CONTENDED_PREEMPTIONS`], idle periods spin
//! only [`CONTENDED_SPINS`] polls before yielding; a quiet window gives
//! the configured spin back. A worker with its core to itself (the
//! planned case on a machine with CPUs to spare) is almost never
//! preempted, so it keeps the full spin and its wake-up latency.
//!
//! The sample is one system call per window per worker; the clock read
//! that gates it happens once per idle period.

/// Shortest time between two samples of the preemption count.
pub(crate) const WINDOW_NS: u64 = 10_000_000;
/// Preemptions in one window that mark the CPU as shared.
pub(crate) const CONTENDED_PREEMPTIONS: u64 = 2;
/// Polls an idle period spins while the CPU is shared.
pub(crate) const CONTENDED_SPINS: u32 = 32;

/// One worker's spin budget.
#[derive(Debug)]
pub(crate) struct SpinBudget {
    /// The configured spin, used while the CPU is not shared.
    full: u32,
    /// When the count was last sampled (`now_nanos`), 0 before the first.
    sampled_at: u64,
    /// The count at that sample.
    preemptions: u64,
    contended: bool,
}

impl SpinBudget {
    pub(crate) fn new(full: u32) -> Self {
        Self {
            full,
            sampled_at: 0,
            preemptions: 0,
            contended: false,
        }
    }

    /// The spin for an idle period starting at `now_ns`, sampling the
    /// thread's preemptions if the window has passed.
    pub(crate) fn spins(&mut self, now_ns: u64) -> u32 {
        if now_ns.saturating_sub(self.sampled_at) >= WINDOW_NS {
            self.observe(now_ns, preemptions());
        }
        self.limit()
    }

    /// Takes a sample: `count` preemptions of this thread so far, at
    /// `now_ns`. The first sample only sets the baseline.
    pub(crate) fn observe(&mut self, now_ns: u64, count: u64) {
        if self.sampled_at != 0 {
            self.contended = count.saturating_sub(self.preemptions) >= CONTENDED_PREEMPTIONS;
        }
        self.sampled_at = now_ns.max(1);
        self.preemptions = count;
    }

    /// The spin as the last sample left it.
    pub(crate) fn limit(&self) -> u32 {
        if self.contended {
            self.full.min(CONTENDED_SPINS)
        } else {
            self.full
        }
    }

    #[cfg(test)]
    pub(crate) fn contended(&self) -> bool {
        self.contended
    }
}

/// Involuntary context switches of the calling thread so far (0 where
/// the platform does not say).
#[cfg(all(target_os = "linux", not(loom)))]
pub(crate) fn preemptions() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; RUSAGE_THREAD asks for
    // the calling thread only, and the kernel writes nothing else.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and it was
    // zeroed before, so every field is initialised either way).
    let usage = unsafe { usage.assume_init() };
    u64::try_from(usage.ru_nivcsw).unwrap_or(0)
}

#[cfg(not(all(target_os = "linux", not(loom))))]
pub(crate) fn preemptions() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sample_only_sets_the_baseline() {
        let mut b = SpinBudget::new(2000);
        b.observe(5, 1_000);
        assert!(!b.contended());
        assert_eq!(b.limit(), 2000);
    }

    #[test]
    fn preemptions_in_a_window_shorten_the_spin_and_a_quiet_window_restores_it() {
        let mut b = SpinBudget::new(2000);
        b.observe(1, 10);
        b.observe(1 + WINDOW_NS, 10 + CONTENDED_PREEMPTIONS - 1);
        assert_eq!(b.limit(), 2000, "one preemption is noise");
        b.observe(1 + 2 * WINDOW_NS, 10 + 2 * CONTENDED_PREEMPTIONS);
        assert_eq!(b.limit(), CONTENDED_SPINS);
        b.observe(1 + 3 * WINDOW_NS, 10 + 2 * CONTENDED_PREEMPTIONS);
        assert_eq!(b.limit(), 2000);
    }

    #[test]
    fn a_spin_configured_below_the_contended_one_stays() {
        let mut b = SpinBudget::new(4);
        b.observe(1, 0);
        b.observe(1 + WINDOW_NS, 100);
        assert_eq!(b.limit(), 4);
    }

    #[test]
    fn samples_are_taken_at_most_once_per_window() {
        let mut b = SpinBudget::new(2000);
        let _ = b.spins(WINDOW_NS);
        let at = b.sampled_at;
        let _ = b.spins(WINDOW_NS + 1);
        assert_eq!(b.sampled_at, at);
        let _ = b.spins(WINDOW_NS * 2 + 1);
        assert_eq!(b.sampled_at, WINDOW_NS * 2 + 1);
    }

    /// The real signal: a thread sharing its one CPU with a busy thread
    /// is preempted, and its budget sees it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_sharing_its_cpu_with_a_busy_one_is_seen_contended() {
        // SAFETY: sched_getcpu has no preconditions.
        let Ok(cpu) = usize::try_from(unsafe { libc::sched_getcpu() }) else {
            eprintln!("skipped: sched_getcpu failed");
            return;
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let busy = std::thread::spawn(move || {
            crate::topology::pin_current_thread(cpu);
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let seen = std::thread::spawn(move || {
            if !crate::topology::pin_current_thread(cpu) {
                return None;
            }
            let mut b = SpinBudget::new(2000);
            let start = std::time::Instant::now();
            let origin = crate::worker::stats::now_nanos();
            while start.elapsed() < std::time::Duration::from_secs(2) {
                let _ = b.spins(crate::worker::stats::now_nanos().max(origin));
                if b.contended() {
                    return Some(true);
                }
                std::hint::spin_loop();
            }
            Some(false)
        })
        .join()
        .unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        busy.join().unwrap();
        match seen {
            None => eprintln!("skipped: cannot pin threads here"),
            Some(seen) => assert!(seen, "two busy threads on one CPU, no preemption seen"),
        }
    }
}
