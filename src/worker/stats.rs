//! Per-worker statistics.

use crate::metrics::{CachePadded, HistogramSnapshot, LocalCounter, LocalHistogram};
use std::sync::Arc;
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
    /// Time the worker was not idle (handling, ticking, or polling its
    /// queues between messages), from its start until it stopped (or now).
    /// Idle periods count from when the worker stops spinning and starts
    /// yielding or parking, so the hot path reads no clock.
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
    pub(crate) failed: LocalCounter,
    pub(crate) restarts: LocalCounter,
    pub(crate) queue_depth: LocalCounter,
    pub(crate) ticks: LocalCounter,
    /// Handler calls started (batches and ticks); with `in_handler`, lets
    /// the stall watchdog see a handler that makes no progress without the
    /// worker reading a clock.
    pub(crate) handler_calls: LocalCounter,
    /// 1 while a handler runs.
    pub(crate) in_handler: LocalCounter,
    /// Nanoseconds (`now_nanos`) the worker thread started.
    pub(crate) started_ns: LocalCounter,
    /// Total idle nanoseconds in finished idle periods.
    pub(crate) idle_ns: LocalCounter,
    /// `now_nanos` when the current idle period began; 0 when not idle.
    pub(crate) idle_since: LocalCounter,
    /// `now_nanos` when the worker stopped or failed; 0 while it runs.
    pub(crate) ended_ns: LocalCounter,
    /// Handler time per message, sampled: one handler call in
    /// [`HANDLER_SAMPLE`] is timed, and its duration divided by the
    /// messages it took is one value.
    pub(crate) handler_ns: LocalHistogram,
}

/// One handler call in this many is timed for
/// [`OwnCounters::handler_ns`]: two clock reads per 32 calls, so the message
/// path pays well under a nanosecond per message for the histogram.
pub(crate) const HANDLER_SAMPLE: u64 = 32;

/// Counters written by other threads (watchdog, event emitters).
#[derive(Debug, Default)]
pub(crate) struct ForeignCounters {
    pub(crate) stalls: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    /// `events_dropped` as last reported by an `EventsDropped` event.
    pub(crate) events_reported: AtomicU64,
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
            handled: o.received.get().saturating_sub(o.failed.get()),
            failed: o.failed.get(),
            restarts: o.restarts.get(),
            queue_depth: o.queue_depth.get(),
            busy: Duration::from_nanos(busy_ns(o)),
            stalls: self.foreign.stalls.load(Ordering::Relaxed),
            events_dropped: self.foreign.events_dropped.load(Ordering::Relaxed),
            ticks: o.ticks.get(),
        }
    }

    /// Time since the worker's thread started, until it ended (or now).
    pub(crate) fn uptime(&self) -> Duration {
        let o = &self.own;
        let started = o.started_ns.get();
        if started == 0 {
            return Duration::ZERO;
        }
        let end = match o.ended_ns.get() {
            0 => now_nanos(),
            ended => ended,
        };
        Duration::from_nanos(end.saturating_sub(started))
    }

    pub(crate) fn state(&self) -> WorkerState {
        WorkerState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: WorkerState) {
        if matches!(s, WorkerState::Stopped | WorkerState::Failed) {
            // `busy` stops counting here.
            self.own.ended_ns.set(now_nanos());
        }
        self.state.store(s.to_u8(), Ordering::Release);
    }
}

/// Time not idle since the worker started (0 before it started).
fn busy_ns(o: &OwnCounters) -> u64 {
    let started = o.started_ns.get();
    if started == 0 {
        return 0;
    }
    let now = match o.ended_ns.get() {
        0 => now_nanos(),
        ended => ended,
    };
    let idle_since = o.idle_since.get();
    let current_idle = if idle_since == 0 {
        0
    } else {
        now.saturating_sub(idle_since)
    };
    now.saturating_sub(started)
        .saturating_sub(o.idle_ns.get())
        .saturating_sub(current_idle)
}

/// Nanoseconds since a process-wide origin, never 0.
pub(crate) fn now_nanos() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// What the pool's metrics read from one worker at a scrape.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSample {
    pub(crate) index: usize,
    pub(crate) name: Arc<str>,
    pub(crate) stats: WorkerStats,
    pub(crate) state: WorkerState,
    pub(crate) uptime: Duration,
    pub(crate) handler: HistogramSnapshot,
}

/// Samples a worker while it exists (`None` once every handle is gone).
pub(crate) type SampleSource = Box<dyn Fn() -> Option<WorkerSample> + Send + Sync>;
