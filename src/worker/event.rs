//! Reports a worker makes about itself: failures, panics, restarts, stalls.
//!
//! Events go to a bounded channel of [`EVENT_CAPACITY`] events per handle or
//! pool, which its owner reads with `events()`. If nobody reads and the
//! channel fills up, further events are dropped and counted in
//! `WorkerStats::events_dropped` rather than blocking the worker (a report
//! must never stall the data path); once there is room again, an
//! [`EventKind::EventsDropped`] event reports the gap before the next event.
//!
//! Every event is also a `tracing` event (target `shared_nothing::worker`)
//! with the worker's index and name and the kind's fields, whether or not
//! anyone reads the channel: panics, give-ups and failed restarts at
//! `ERROR`, failures, restarts and stalls at `WARN`, a stop at `INFO`.

use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Events kept unread before new ones are dropped and counted.
pub const EVENT_CAPACITY: usize = 4096;

/// Something a worker reports.
#[derive(Debug, Clone)]
pub struct WorkerEvent {
    /// The worker's index in its pool (0 for a lone worker).
    pub worker: usize,
    /// The worker's name.
    pub name: Arc<str>,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A handler returned an error for message `seq` (counted as failed).
    HandlerFailed {
        /// The message's sequence number.
        seq: u64,
        /// The error, rendered.
        error: String,
    },
    /// A handler panicked on message `seq` (counted as failed).
    Panicked {
        /// The message's sequence number, if a message was being handled.
        seq: Option<u64>,
        /// The panic payload, rendered.
        message: String,
    },
    /// The worker was restarted from `init` after a panic.
    Restarted {
        /// Restarts so far.
        restarts: u64,
    },
    /// The restart policy gave up (or `init` failed on restart): the worker
    /// stopped; `abandoned` queued messages were not handled.
    GaveUp {
        /// Why.
        reason: String,
        /// Messages left unhandled.
        abandoned: u64,
    },
    /// `tick` returned an error.
    TickFailed {
        /// The error, rendered.
        error: String,
    },
    /// `after_round` returned an error.
    AfterRoundFailed {
        /// The error, rendered.
        error: String,
    },
    /// `shutdown` returned an error or panicked.
    ShutdownFailed {
        /// The error, rendered.
        error: String,
    },
    /// A handler has been running longer than the stall threshold.
    Stalled {
        /// How long it had been running when noticed.
        busy_for: Duration,
    },
    /// The thread's priority could not be raised.
    PriorityNotRaised {
        /// What the OS said.
        error: String,
    },
    /// The worker's memory could not be bound to its NUMA node (feature
    /// `hwloc`); it still allocates node-locally by first touch.
    MemoryNotBound {
        /// What hwloc said.
        error: String,
    },
    /// The worker stopped after draining its queues.
    Stopped,
    /// `count` events of this worker were dropped because the event queue
    /// was full ([`EVENT_CAPACITY`] unread); reported before the next event
    /// that fits.
    EventsDropped {
        /// Events dropped since the last such report.
        count: u64,
    },
}

/// Where workers send their events.
#[derive(Debug, Clone)]
pub(crate) struct EventSink {
    tx: Sender<WorkerEvent>,
    rx: Receiver<WorkerEvent>,
}

impl EventSink {
    pub(crate) fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(EVENT_CAPACITY);
        Self { tx, rx }
    }

    pub(crate) fn receiver(&self) -> Receiver<WorkerEvent> {
        self.rx.clone()
    }

    /// Queues `event`, first reporting any gap left by dropped events, so a
    /// reader can tell a quiet worker from a lost report.
    pub(crate) fn emit(&self, event: WorkerEvent, dropped: &AtomicU64, reported: &AtomicU64) {
        let lost = dropped.load(Ordering::Relaxed);
        let told = reported.load(Ordering::Relaxed);
        if lost > told {
            let gap = WorkerEvent {
                worker: event.worker,
                name: event.name.clone(),
                kind: EventKind::EventsDropped { count: lost - told },
            };
            if self.tx.try_send(gap).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            reported.fetch_max(lost, Ordering::Relaxed);
        }
        if self.tx.try_send(event).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reports `event` to `tracing` (see the module docs for the levels);
/// `restarts` is the worker's restart count so far.
pub(crate) fn trace(event: &WorkerEvent, restarts: u64) {
    let (worker, name) = (event.worker, &*event.name);
    match &event.kind {
        EventKind::HandlerFailed { seq, error } => {
            tracing::warn!(worker, name, seq, error = %error, "handler failed");
        }
        EventKind::Panicked { seq, message } => {
            tracing::error!(worker, name, seq, panic = %message, restarts, "worker panicked");
        }
        EventKind::Restarted { restarts } => {
            tracing::warn!(worker, name, restarts, "worker restarted");
        }
        EventKind::GaveUp { reason, abandoned } => {
            tracing::error!(worker, name, reason = %reason, abandoned, restarts, "worker gave up");
        }
        EventKind::TickFailed { error } => {
            tracing::warn!(worker, name, error = %error, "tick failed");
        }
        EventKind::AfterRoundFailed { error } => {
            tracing::warn!(worker, name, error = %error, "after_round failed");
        }
        EventKind::ShutdownFailed { error } => {
            tracing::warn!(worker, name, error = %error, "shutdown failed");
        }
        EventKind::Stalled { busy_for } => {
            let busy_ms = busy_for.as_secs_f64() * 1e3;
            tracing::warn!(worker, name, busy_ms, "handler stalled");
        }
        EventKind::PriorityNotRaised { error } => {
            tracing::warn!(worker, name, error = %error, "priority not raised");
        }
        EventKind::MemoryNotBound { error } => {
            tracing::warn!(worker, name, error = %error, "memory not bound to the node");
        }
        EventKind::Stopped => tracing::info!(worker, name, "worker stopped"),
        EventKind::EventsDropped { count } => {
            tracing::warn!(worker, name, count, "worker events dropped (channel full)");
        }
    }
}
