//! Counters and latency histograms shared by workers, channels and the pool.
//!
//! Counters written by one thread (a worker's own statistics) are updated
//! with a relaxed load and store, not a read-modify-write: there is no other
//! writer to race with, and a plain store costs the hot path nothing. Groups
//! of counters written by the same thread share one cache-padded block, kept
//! away from lines other threads write.
//!
//! # Prometheus
//!
//! [`WorkerPool::metrics`](crate::pool::WorkerPool::metrics) renders these
//! counters as OpenMetrics text at scrape time (nothing extra is counted on
//! the message path), and
//! [`WorkerPool::serve_metrics`](crate::pool::WorkerPool::serve_metrics)
//! serves it as `GET /metrics`.
//!
//! Series (all prefixed `shared_nothing_`):
//! - per application worker (labels `group`, `worker`, `name`): counters
//!   `worker_received`, `worker_handled`, `worker_failed`,
//!   `worker_restarts`, `worker_stalls`, `worker_events_dropped`,
//!   `worker_busy_seconds`; gauges `worker_queue_depth`,
//!   `worker_busy_ratio` (busy time over the worker's uptime),
//!   `worker_running`; histogram `worker_handler_seconds` (time per
//!   message, sampled: one handler call in 32 is timed and its duration
//!   divided by the messages it took);
//! - per I/O worker or driver (labels `role` = `storage` | `network`,
//!   `worker` (its index), `mode` = `dedicated` (an I/O worker the pool
//!   started) | `thread-per-core` (a driver an application worker started
//!   on its own thread, `start_local`, which adds `app_worker`)):
//!   counters `io_requests`, `io_completions`, `io_errors`, `io_bytes_in`,
//!   `io_bytes_out`; gauges `io_in_flight`, `io_backlog`;
//! - per accelerator (label `name`): counters `accel_jobs` (label `path` =
//!   `gpu` | `cpu`), `accel_failed`, `accel_retried_on_cpu`,
//!   `accel_device_errors`; gauge `accel_gpu` (1 if it started on the
//!   GPU path); histograms `accel_queued_seconds`,
//!   `accel_transfer_seconds`, `accel_execute_seconds` (every job).

use std::sync::atomic::{AtomicU64, Ordering};

mod histogram;
pub use histogram::{HistogramSnapshot, LocalHistogram};
/// The `prometheus-client` version behind
/// [`WorkerPool::metrics`](crate::pool::WorkerPool::metrics), for
/// registering the application's own series in
/// [`WorkerPool::metrics_registry`](crate::pool::WorkerPool::metrics_registry).
pub use prometheus_client as prometheus;

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
