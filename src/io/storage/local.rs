//! Thread-per-core storage: the io_uring storage backend run on an
//! application worker's own thread
//! ([`StorageWorker::start_local`](super::StorageWorker::start_local)),
//! polled by its loop through `worker::local` beside (or instead of) a
//! local network backend. Requests and completions travel through the same
//! rings and sinks as with a storage worker of its own, without leaving
//! the core.
//!
//! As the worker's only (primary) driver it sleeps in this ring; beside a
//! network driver it is a secondary: its ring runs without cooperative task
//! running, so its completions are posted while the worker sleeps in the
//! network ring, and the kernel signals the network ring's wake-up eventfd
//! on each of them (`register_eventfd`); the worker's nap bounds the wait
//! where that fails.

use super::StorageShared;
use super::uring::UringStorage;
use crate::io::wake::EventFd;
use crate::sync::signal::{Signal, Waker};
use crate::worker::local::LocalDriver;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

pub(super) struct LocalStorage {
    st: UringStorage,
    shared: Arc<StorageShared>,
    waker: Arc<EventFd>,
    /// Shut down; delivering what is left.
    stopped: bool,
    backlog: usize,
    /// How long a wait may last while completions wait for room.
    most: Option<Duration>,
}

impl LocalStorage {
    pub(super) fn new(st: UringStorage, shared: Arc<StorageShared>, waker: Arc<EventFd>) -> Self {
        Self {
            st,
            shared,
            waker,
            stopped: false,
            backlog: 0,
            most: None,
        }
    }
}

impl LocalDriver for LocalStorage {
    fn kind(&self) -> &'static str {
        "storage"
    }

    fn poll(&mut self) -> bool {
        if self.stopped {
            let before = self.backlog;
            self.backlog = self.st.flush();
            return self.backlog < before;
        }
        let r = self.st.round();
        self.most = r.most;
        if r.stopping {
            self.st.shut_down();
            self.stopped = true;
            self.backlog = self.st.flush();
            return true;
        }
        r.worked
    }

    fn ready(&mut self) -> bool {
        !self.stopped
            && (self.st.has_requests()
                || self.shared.stop.load(std::sync::atomic::Ordering::Acquire))
    }

    fn signal(&self) -> Option<Arc<Signal>> {
        Some(self.shared.signal.clone())
    }

    fn wait(&mut self, timeout: Option<Duration>) {
        if self.stopped {
            std::thread::sleep(timeout.unwrap_or(NAP).min(NAP));
            return;
        }
        let most = match (timeout, self.most) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.st.wait(most);
    }

    fn waker(&self) -> Waker {
        let w = self.waker.clone();
        Arc::new(move || w.notify())
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.waker.as_raw_fd())
    }

    fn attach(&mut self, primary: RawFd) -> bool {
        self.st.attach(primary)
    }

    fn busy(&self) -> bool {
        !self.stopped && self.st.busy()
    }

    fn finished(&self) -> bool {
        self.stopped && self.backlog == 0
    }

    fn shut_down(&mut self) {
        if !self.stopped {
            self.shared.request_stop();
            self.st.shut_down();
            self.stopped = true;
        }
        self.backlog = self.st.flush();
    }
}

/// How long a stopped driver naps while its completions wait for room.
const NAP: Duration = Duration::from_millis(1);
