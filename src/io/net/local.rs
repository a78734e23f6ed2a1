//! Thread-per-core networking: a network backend run on an application
//! worker's own thread ([`NetworkWorker::start_local`](super::NetworkWorker::start_local)).
//!
//! Both backends run the same loop rounds ([`Backend::round`]) whether
//! they have a thread of their own (`run`) or are polled by a worker's loop
//! through [`worker::local`](crate::worker::local): there, the worker polls
//! one round after its message batches and sleeps in the backend's kernel
//! wait when idle, and the requests and events travel through the same
//! rings and sinks as in the dedicated mode, only without leaving the
//! core. The API (`NetClient`, `NetEvent`, `listen`) is the same.

use super::NetShared;
use crate::io::wake::EventFd;
use crate::sync::signal::{Signal, Waker};
use crate::worker::local::LocalDriver;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// What one loop round did.
pub(crate) struct Round {
    /// Requests taken or completions reaped.
    pub(crate) worked: bool,
    /// The worker was asked to stop (the round took no requests).
    pub(crate) stopping: bool,
    /// How long a sleep may last while events wait for room.
    pub(crate) most: Option<Duration>,
}

/// A network backend's loop, in pieces.
pub(crate) trait Backend {
    /// Listeners, requests, one submit (or non-blocking poll), completions,
    /// deliveries.
    fn round(&mut self) -> Round;
    /// Whether requests or listener changes wait (the sleep's re-check).
    fn ready(&mut self) -> bool;
    /// Sleeps in the kernel until an event, the wake-up, or `most`, with
    /// the flag protocol on the inbox's signal (its clients' pushes wake it
    /// through that signal; an inbox's rings close its signal when they
    /// close, so it cannot be the worker's own).
    fn sleep(&mut self, most: Option<Duration>);
    /// Waits as `sleep` does, without the flag protocol (a worker polling
    /// the backend ran it on every signal involved).
    fn wait(&mut self, most: Option<Duration>);
    /// Signals `eventfd` on each completion, where the kernel can.
    fn attach(&mut self, eventfd: RawFd) -> bool;
    /// Whether the kernel may have work of this backend to report.
    fn busy(&self) -> bool;
    /// Delivers what waits for room; returns how much still waits.
    fn flush(&mut self) -> usize;
    /// Closes every connection and listener, waits for what the kernel
    /// holds, answers what is queued.
    fn shut_down(&mut self);
}

/// A backend polled in a worker's loop.
pub(super) struct LocalNet {
    backend: Box<dyn Backend>,
    shared: Arc<NetShared>,
    waker: Arc<EventFd>,
    /// Shut down; delivering what is left.
    stopped: bool,
    /// Events still waiting for room after the last round.
    backlog: usize,
    /// How long the backend may sleep while events wait for room.
    most: Option<Duration>,
}

impl LocalNet {
    pub(super) fn new(
        backend: Box<dyn Backend>,
        shared: Arc<NetShared>,
        waker: Arc<EventFd>,
    ) -> Self {
        Self {
            backend,
            shared,
            waker,
            stopped: false,
            backlog: 0,
            most: None,
        }
    }
}

impl LocalDriver for LocalNet {
    fn kind(&self) -> &'static str {
        "network"
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
        !self.stopped
            && (self.backend.ready() || self.shared.stop.load(std::sync::atomic::Ordering::Acquire))
    }

    fn signal(&self) -> Option<Arc<Signal>> {
        Some(self.shared.signal.clone())
    }

    fn wait(&mut self, timeout: Option<Duration>) {
        if self.stopped {
            // Nothing in flight: only events waiting for room, which the
            // worker's own loop (their target, here) makes.
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

/// How long a stopped driver naps while its events wait for room.
const NAP: Duration = Duration::from_millis(1);
