//! Thread-per-core I/O: an I/O backend run on an application worker's own
//! thread (`NetworkWorker::start_local`, `StorageWorker::start_local`)
//! instead of a thread of its own.
//!
//! Each backend's loop is made of rounds ([`Rounds::round`]) that either
//! its own thread runs (`run`) or a worker's loop runs through
//! [`worker::local`](crate::worker::local): there, the worker polls one
//! round after its message batches and sleeps in the primary backend's
//! kernel wait when idle, and requests and completions travel through the
//! same rings and sinks as with an I/O worker of its own, only without
//! leaving the core. [`Local`] adapts any such backend to the worker's
//! `LocalDriver`.

use super::inbox::Shared;
use super::wake::EventFd;
use crate::sync::signal::{Signal, Waker};
use crate::worker::local::LocalDriver;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What one loop round did.
pub(crate) struct Round {
    /// Requests taken or completions reaped.
    pub(crate) worked: bool,
    /// The backend was asked to stop (the round took no requests).
    pub(crate) stopping: bool,
    /// How long a sleep may last while results wait for room.
    pub(crate) most: Option<Duration>,
}

/// A backend's loop, in pieces.
pub(crate) trait Rounds {
    /// Requests, one submit (or non-blocking poll), completions,
    /// deliveries.
    fn round(&mut self) -> Round;
    /// Whether requests (or listener changes) wait: the sleep's re-check.
    fn ready(&mut self) -> bool;
    /// Waits in the kernel until a completion, the wake-up, or `most`,
    /// without a flag protocol (the worker ran it on every signal).
    fn wait(&mut self, most: Option<Duration>);
    /// Signals `eventfd` on each completion, where the kernel can.
    fn attach(&mut self, eventfd: RawFd) -> bool;
    /// Whether the kernel may have work of this backend to report.
    fn busy(&self) -> bool;
    /// Delivers what waits for room; returns how much still waits.
    fn flush(&mut self) -> usize;
    /// Ends everything, waits for what the kernel holds, answers what is
    /// queued.
    fn shut_down(&mut self);
}

/// How long a stopped driver naps while its results wait for room.
const NAP: Duration = Duration::from_millis(1);

/// A backend polled in a worker's loop.
pub(crate) struct Local<B, R, C: Send + 'static> {
    kind: &'static str,
    backend: B,
    shared: Arc<Shared<R, C>>,
    waker: Arc<EventFd>,
    /// Shut down; delivering what is left.
    stopped: bool,
    /// Results still waiting for room after the last round.
    backlog: usize,
    /// How long a wait may last while results wait for room.
    most: Option<Duration>,
}

impl<B, R: Send, C: Send + 'static> Local<B, R, C> {
    pub(crate) fn new(
        kind: &'static str,
        backend: B,
        shared: Arc<Shared<R, C>>,
        waker: Arc<EventFd>,
    ) -> Self {
        Self {
            kind,
            backend,
            shared,
            waker,
            stopped: false,
            backlog: 0,
            most: None,
        }
    }
}

impl<B: Rounds, R: Send, C: Send + 'static> LocalDriver for Local<B, R, C> {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn poll(&mut self) -> bool {
        if self.stopped {
            let before = self.backlog;
            self.backlog = self.backend.flush();
            return self.backlog < before;
        }
        let r = self.backend.round();
        self.most = r.most;
        if r.stopping {
            self.backend.shut_down();
            self.stopped = true;
            self.backlog = self.backend.flush();
            return true;
        }
        r.worked
    }

    fn ready(&mut self) -> bool {
        !self.stopped && (self.backend.ready() || self.shared.stop.load(Ordering::Acquire))
    }

    fn signal(&self) -> Option<Arc<Signal>> {
        Some(self.shared.signal.clone())
    }

    fn wait(&mut self, timeout: Option<Duration>) {
        if self.stopped {
            // Nothing in flight: only results waiting for room, which the
            // worker's own loop (their target, often) makes.
            std::thread::sleep(timeout.unwrap_or(NAP).min(NAP));
            return;
        }
        let most = match (timeout, self.most) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.backend.wait(most);
    }

    fn waker(&self) -> Waker {
        let w = self.waker.clone();
        Arc::new(move || w.notify())
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.waker.as_raw_fd())
    }

    fn attach(&mut self, primary: RawFd) -> bool {
        self.backend.attach(primary)
    }

    fn busy(&self) -> bool {
        !self.stopped && self.backend.busy()
    }

    fn finished(&self) -> bool {
        self.stopped && self.backlog == 0
    }

    fn shut_down(&mut self) {
        if !self.stopped {
            self.shared.request_stop();
            self.backend.shut_down();
            self.stopped = true;
        }
        // The worker is exiting: what its own sinks cannot take now goes
        // with them.
        self.backlog = self.backend.flush();
    }
}
