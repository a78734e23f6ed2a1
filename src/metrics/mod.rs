//! Counters and latency histograms shared by workers, channels and the pool.
//!
//! Counters written by one thread (a worker's own statistics) are updated
//! with a relaxed load and store, not a read-modify-write: there is no other
//! writer to race with, and a plain store costs the hot path nothing. Groups
//! of counters written by the same thread share one cache-padded block, kept
//! away from lines other threads write.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter with exactly one writing thread and any number of readers.
///
/// ```
/// use shared_nothing::metrics::LocalCounter;
/// let c = LocalCounter::new();
/// c.add(2);
/// c.add(3);
/// assert_eq!(c.get(), 5);
/// ```
#[derive(Debug, Default)]
pub struct LocalCounter(AtomicU64);

impl LocalCounter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds `n`. Only one thread may call this (concurrent calls would lose
    /// updates; they would not be unsafe).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Overwrites the value (for gauges such as queue depth).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value (may be stale by the time it is used).
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A cache-line-padded value, so counters of different writers never share a
/// line (false sharing).
pub use crossbeam_utils::CachePadded;
