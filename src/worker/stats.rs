//! Per-worker statistics.

use crate::metrics::{CachePadded, LocalCounter};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lifecycle state of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// Thread started, `init` not finished.
    Starting,
    /// Handling messages.
    Running,
    /// Paused: messages queue up but are not handled.
    Paused,
    /// Draining its queues before stopping.
    Stopping,
    /// Stopped cleanly.
    Stopped,
    /// Stopped because `init` failed or the restart policy gave up.
    Failed,
}

impl WorkerState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Running,
            2 => Self::Paused,
            3 => Self::Stopping,
            4 => Self::Stopped,
            _ => Self::Failed,
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            Self::Starting => 0,
            Self::Running => 1,
            Self::Paused => 2,
            Self::Stopping => 3,
            Self::Stopped => 4,
            Self::Failed => 5,
        }
    }
}

/// A snapshot of one worker's counters (may be stale when read).
///
/// ```
/// use shared_nothing::worker::WorkerStats;
/// let s = WorkerStats::default();
/// assert_eq!(s.handled + s.failed, s.received);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Messages taken from the queues.
    pub received: u64,
    /// Messages handled successfully.
    pub handled: u64,
    /// Messages whose handler returned an error or panicked.
    pub failed: u64,
    /// Restarts after panics.
    pub restarts: u64,
    /// Messages queued, as last observed by the worker.
    pub queue_depth: u64,
    /// Time spent in handlers and ticks.
    pub busy: Duration,
    /// Handlers reported as stalled.
    pub stalls: u64,
    /// Events dropped because nobody read them.
    pub events_dropped: u64,
    /// `tick` calls.
    pub ticks: u64,
}

/// Counters written by the worker thread only (one padded block).
#[derive(Debug, Default)]
pub(crate) struct OwnCounters {
    pub(crate) received: LocalCounter,
    pub(crate) handled: LocalCounter,
    pub(crate) failed: LocalCounter,
    pub(crate) restarts: LocalCounter,
    pub(crate) queue_depth: LocalCounter,
    pub(crate) busy_ns: LocalCounter,
    pub(crate) ticks: LocalCounter,
    /// Nanoseconds since the process clock origin when the current handler
    /// started; 0 when idle. Read by the stall watchdog.
    pub(crate) busy_since: LocalCounter,
}

/// Counters written by other threads (watchdog, event emitters).
#[derive(Debug, Default)]
pub(crate) struct ForeignCounters {
    pub(crate) stalls: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
}

/// A worker's statistics, shared between its thread and its handles.
#[derive(Debug, Default)]
pub(crate) struct StatsBlock {
    pub(crate) own: CachePadded<OwnCounters>,
    pub(crate) foreign: CachePadded<ForeignCounters>,
    state: AtomicU8,
}

impl StatsBlock {
    pub(crate) fn snapshot(&self) -> WorkerStats {
        let o = &self.own;
        WorkerStats {
            received: o.received.get(),
            handled: o.handled.get(),
            failed: o.failed.get(),
            restarts: o.restarts.get(),
            queue_depth: o.queue_depth.get(),
            busy: Duration::from_nanos(o.busy_ns.get()),
            stalls: self.foreign.stalls.load(Ordering::Relaxed),
            events_dropped: self.foreign.events_dropped.load(Ordering::Relaxed),
            ticks: o.ticks.get(),
        }
    }

    pub(crate) fn state(&self) -> WorkerState {
        WorkerState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: WorkerState) {
        self.state.store(s.to_u8(), Ordering::Release);
    }
}

/// Nanoseconds since a process-wide origin, never 0.
pub(crate) fn now_nanos() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}
