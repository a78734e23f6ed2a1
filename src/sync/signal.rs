//! A wake-up signal for one parked thread, fed by any number of notifiers.
//!
//! The waiter publishes "I am going to sleep", issues the heavy barrier and
//! re-checks its sources before parking; a notifier publishes its data, issues
//! the light barrier and wakes the waiter only if the flag is set. With the
//! barrier pairing (see [`super::barrier`]) either the notifier sees the flag
//! or the waiter sees the data, so no wake-up is lost, and the notifier's hot
//! path is one relaxed load of a line that is written only when the waiter
//! sleeps.

use super::barrier;
use super::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[cfg(loom)]
use loom::sync::Mutex;
#[cfg(loom)]
use loom::thread::{self, Thread};
#[cfg(not(loom))]
use parking_lot::Mutex;
#[cfg(not(loom))]
use std::thread::{self, Thread};

/// Parks one waiter until a notifier wakes it (or a timeout passes).
#[derive(Debug)]
pub struct Signal {
    sleeping: AtomicBool,
    thread: Mutex<Option<Thread>>,
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

impl Signal {
    pub fn new() -> Self {
        barrier::init();
        Self {
            sleeping: AtomicBool::new(false),
            thread: Mutex::new(None),
        }
    }

    /// Parks the calling thread unless `ready()` reports work after the
    /// sleeping flag is published. `timeout` bounds the park (loom ignores it).
    ///
    /// Returns `true` if `ready()` was already true (no park happened).
    pub fn wait_unless(&self, ready: impl Fn() -> bool, timeout: Option<Duration>) -> bool {
        {
            #[cfg(loom)]
            let mut slot = self.thread.lock().unwrap();
            #[cfg(not(loom))]
            let mut slot = self.thread.lock();
            let me = thread::current();
            if slot.as_ref().map(Thread::id) != Some(me.id()) {
                *slot = Some(me);
            }
        }
        // Release: a notifier that reads `true` (Acquire) then locks `thread`
        // is ordered after our store of the thread handle above.
        self.sleeping.store(true, Ordering::Release);
        barrier::heavy();
        if ready() {
            self.sleeping.store(false, Ordering::Relaxed);
            return true;
        }
        park(timeout);
        self.sleeping.store(false, Ordering::Relaxed);
        false
    }

    /// Wakes the waiter if it is (about to be) parked. Call after publishing
    /// the data the waiter checks.
    #[inline]
    pub fn notify(&self) {
        barrier::light();
        if self.sleeping.load(Ordering::Acquire) {
            self.wake();
        }
    }

    /// Like [`Signal::notify`] but with a full fence, for cold paths (close,
    /// drop) that run outside the light/heavy pairing.
    pub fn notify_now(&self) {
        barrier::full();
        if self.sleeping.load(Ordering::Acquire) {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        #[cfg(loom)]
        let slot = self.thread.lock().unwrap();
        #[cfg(not(loom))]
        let slot = self.thread.lock();
        if let Some(t) = slot.as_ref() {
            t.unpark();
        }
    }
}

#[cfg(not(loom))]
fn park(timeout: Option<Duration>) {
    match timeout {
        Some(t) => thread::park_timeout(t),
        None => thread::park(),
    }
}

#[cfg(loom)]
fn park(_timeout: Option<Duration>) {
    thread::park();
}
