//! What a worker shares with its handles: statistics, the control queue and
//! the wake-up signal. Nothing here is touched on the message hot path except
//! the signal's sleeping flag.

use super::event::{EventKind, EventSink, WorkerEvent};
use super::mailbox::Mailbox;
use super::reply::Life;
use super::stats::StatsBlock;
use crate::sync::Arc as SyncArc;
use crate::sync::signal::Signal;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Commands to a worker, outside the message path.
pub(crate) enum Control<M, R = ()> {
    /// A new sender's ring.
    Attach(Mailbox<M, R>),
    Pause,
    Resume,
    Ping(crossbeam_channel::Sender<()>),
    /// Answer once everything queued before this command, in every ring,
    /// has been handled (see `Runner::check_flushes`).
    Flush(crossbeam_channel::Sender<()>),
    Stop,
}

/// State shared by a worker thread and everything that talks to it.
pub(crate) struct WorkerShared<M, R = ()> {
    pub(crate) index: usize,
    pub(crate) name: Arc<str>,
    pub(crate) stats: StatsBlock,
    pub(crate) signal: SyncArc<Signal>,
    pub(crate) stall_threshold: Option<Duration>,
    /// Ends when the worker's thread exits; every [`Pending`] to this
    /// worker watches it (see `reply::Life`).
    ///
    /// [`Pending`]: super::Pending
    pub(crate) life: Life,
    events: EventSink,
    /// `None` once the worker has exited: nothing sent here can be lost,
    /// because the worker takes this lock to close it (see `runtime.rs`).
    control: Mutex<Option<VecDeque<Control<M, R>>>>,
    control_pending: AtomicBool,
}

impl<M, R> std::fmt::Debug for WorkerShared<M, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerShared")
            .field("index", &self.index)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<M, R> WorkerShared<M, R> {
    pub(crate) fn new(
        index: usize,
        name: Arc<str>,
        stall_threshold: Option<Duration>,
        events: EventSink,
        life: Life,
    ) -> Self {
        Self {
            life,
            index,
            name,
            stats: StatsBlock::default(),
            signal: SyncArc::new(Signal::new()),
            stall_threshold,
            events,
            control: Mutex::new(Some(VecDeque::new())),
            control_pending: AtomicBool::new(false),
        }
    }

    /// Queues a command and wakes the worker. Hands it back if the worker has
    /// exited.
    pub(crate) fn send_control(&self, c: Control<M, R>) -> Result<(), Control<M, R>> {
        {
            let mut q = self.control.lock();
            match q.as_mut() {
                Some(q) => q.push_back(c),
                None => return Err(c),
            }
            self.control_pending.store(true, Ordering::Release);
        }
        self.signal.notify();
        Ok(())
    }

    /// Whether commands are waiting (cheap; polled by the worker loop).
    #[inline]
    pub(crate) fn has_control(&self) -> bool {
        self.control_pending.load(Ordering::Acquire)
    }

    /// Takes every queued command.
    pub(crate) fn take_control(&self, into: &mut VecDeque<Control<M, R>>) {
        let mut q = self.control.lock();
        if let Some(q) = q.as_mut() {
            into.append(q);
        }
        self.control_pending.store(false, Ordering::Relaxed);
    }

    /// Closes the control queue if it is empty; otherwise moves what is
    /// queued into `into` and returns `false` (the caller handles it and
    /// tries again). After `true`, `send_control` fails.
    pub(crate) fn close_control_if_empty(&self, into: &mut VecDeque<Control<M, R>>) -> bool {
        let mut q = self.control.lock();
        match q.as_mut() {
            Some(pending) if !pending.is_empty() => {
                into.append(pending);
                false
            }
            _ => {
                *q = None;
                self.control_pending.store(false, Ordering::Relaxed);
                true
            }
        }
    }

    /// [`WorkerShared::send_control`] for callers that report a stopped
    /// worker as an error.
    pub(crate) fn control(&self, c: Control<M, R>) -> crate::Result<()> {
        self.send_control(c).map_err(|_| self.stopped())
    }

    pub(crate) fn stopped(&self) -> crate::Error {
        crate::Error::WorkerStopped {
            worker: self.name.to_string(),
        }
    }

    /// Round trip through the control path; see `WorkerHandle::ping`.
    pub(crate) fn ping(&self, timeout: Duration) -> crate::Result<Duration> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let t0 = std::time::Instant::now();
        self.control(Control::Ping(tx))?;
        match rx.recv_timeout(timeout) {
            Ok(()) => Ok(t0.elapsed()),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(crate::Error::Timeout),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(self.stopped()),
        }
    }

    /// Asks for a flush; the answer arrives on the returned channel (or it
    /// disconnects if the worker exits first).
    pub(crate) fn start_flush(&self) -> Result<crossbeam_channel::Receiver<()>, super::FlushError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send_control(Control::Flush(tx))
            .map_err(|_| self.flush_stopped())?;
        Ok(rx)
    }

    pub(crate) fn flush_stopped(&self) -> super::FlushError {
        super::FlushError::Stopped {
            worker: self.name.to_string(),
        }
    }

    /// Waits for this worker's thread and returns how it ended.
    pub(crate) fn join(
        &self,
        join: std::thread::JoinHandle<crate::Result<()>>,
    ) -> crate::Result<()> {
        join.join().unwrap_or_else(|p| {
            Err(crate::Error::WorkerFailed {
                worker: self.name.to_string(),
                message: format!("worker thread panicked outside a handler: {p:?}"),
            })
        })
    }

    pub(crate) fn emit(&self, kind: EventKind) {
        let event = WorkerEvent {
            worker: self.index,
            name: self.name.clone(),
            kind,
        };
        super::event::trace(&event, self.stats.own.restarts.get());
        self.events.emit(
            event,
            &self.stats.foreign.events_dropped,
            &self.stats.foreign.events_reported,
        );
    }

    /// The worker's counters, state and handler histogram now.
    pub(crate) fn sample(&self) -> super::stats::WorkerSample {
        super::stats::WorkerSample {
            index: self.index,
            name: self.name.clone(),
            stats: self.stats.snapshot(),
            state: self.stats.state(),
            uptime: self.stats.uptime(),
            handler: self.stats.own.handler_ns.snapshot(),
        }
    }

    pub(crate) fn events(&self) -> &EventSink {
        &self.events
    }
}
