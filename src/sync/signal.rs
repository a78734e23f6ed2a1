//! A wake-up signal for one parked thread, fed by any number of notifiers.
//!
//! The waiter publishes "I am going to sleep", issues the heavy barrier and
//! re-checks its sources before parking; a notifier publishes its data, issues
//! the light barrier and wakes the waiter only if the flag is set. With the
//! barrier pairing (see [`super::barrier`]) either the notifier sees the flag
//! or the waiter sees the data, so no wake-up is lost, and the notifier's hot
//! path is one relaxed load of a line that is written only when the waiter
//! sleeps.
//!
//! Production code parks with `std::thread::park` (unpark tokens are sticky,
//! which covers the window between the re-check and the park). Under loom the
//! same flag protocol sleeps on a loom `Condvar` instead: loom models an
//! `unpark` as waking a thread blocked on *anything* (a join, a mutex), which
//! std does not do, so park/unpark would report false errors there.

use super::barrier;
#[cfg(loom)]
use loom::sync::atomic::AtomicU8;
#[cfg(not(loom))]
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[cfg(not(loom))]
use parking_lot::Mutex;

/// How a notifier wakes a waiter that does not sleep in `park`.
#[cfg(not(loom))]
pub type Waker = std::sync::Arc<dyn Fn() + Send + Sync>;

const SLEEPING: u8 = 1;
const CLOSED: u8 = 2;
#[cfg(not(loom))]
use std::thread::{self, Thread};

/// Parks one waiter until a notifier wakes it (or a timeout passes).
///
/// Aligned to 128 bytes (two lines, for the adjacent-line prefetcher) so the
/// sleeping flag, read on every push, never shares a line with data that
/// other threads write, such as the first slots of a ring allocated next to
/// it.
#[repr(align(128))]
pub struct Signal {
    /// `SLEEPING | CLOSED` bits.
    state: AtomicU8,
    #[cfg(not(loom))]
    thread: Mutex<Option<Thread>>,
    /// Wakes a waiter that sleeps outside `park` (in `io_uring_enter`, in
    /// `epoll_wait`); see [`Signal::with_waker`].
    #[cfg(not(loom))]
    waker: Option<Waker>,
    #[cfg(loom)]
    lock: loom::sync::Mutex<()>,
    #[cfg(loom)]
    cond: loom::sync::Condvar,
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

impl Signal {
    /// A signal nobody waits on yet.
    pub fn new() -> Self {
        barrier::init();
        Self {
            state: AtomicU8::new(0),
            #[cfg(not(loom))]
            thread: Mutex::new(None),
            #[cfg(not(loom))]
            waker: None,
            #[cfg(loom)]
            lock: loom::sync::Mutex::new(()),
            #[cfg(loom)]
            cond: loom::sync::Condvar::new(),
        }
    }

    /// A signal whose waiter sleeps in the kernel somewhere other than
    /// `park` (an I/O worker in `io_uring_enter` or `epoll_wait`): waking it
    /// calls `waker` (which writes an eventfd, say) instead of unparking.
    /// The waiter sleeps with [`Signal::sleep_unless`].
    #[cfg(not(loom))]
    pub fn with_waker(waker: Waker) -> Self {
        Self {
            waker: Some(waker),
            ..Self::new()
        }
    }

    /// The flag protocol of [`Signal::wait_unless`] around a caller-supplied
    /// sleep: publishes the sleeping flag, issues the heavy barrier, and runs
    /// `sleep` only if `ready()` is still false. A notifier that publishes
    /// after the flag calls the waker given to [`Signal::with_waker`], so
    /// `sleep` must return when that waker runs (or was run before it
    /// started: an eventfd keeps its count, so it does).
    ///
    /// Returns `true` if `ready()` was already true (no sleep happened).
    #[cfg(not(loom))]
    pub fn sleep_unless(&self, ready: impl FnOnce() -> bool, sleep: impl FnOnce()) -> bool {
        self.state.fetch_or(SLEEPING, Ordering::Release);
        barrier::heavy();
        if ready() {
            self.state.fetch_and(!SLEEPING, Ordering::Relaxed);
            return true;
        }
        sleep();
        self.state.fetch_and(!SLEEPING, Ordering::Relaxed);
        false
    }

    /// Parks the calling thread unless `ready()` reports work after the
    /// sleeping flag is published. `timeout` bounds the park (loom ignores it).
    ///
    /// Returns `true` if `ready()` was already true (no park happened).
    #[cfg(not(loom))]
    pub fn wait_unless(&self, ready: impl Fn() -> bool, timeout: Option<Duration>) -> bool {
        {
            let mut slot = self.thread.lock();
            let me = thread::current();
            if slot.as_ref().map(Thread::id) != Some(me.id()) {
                *slot = Some(me);
            }
        }
        // Release: a notifier that reads SLEEPING (Acquire) then locks
        // `thread` is ordered after our store of the thread handle above.
        self.state.fetch_or(SLEEPING, Ordering::Release);
        barrier::heavy();
        if ready() {
            self.state.fetch_and(!SLEEPING, Ordering::Relaxed);
            return true;
        }
        match timeout {
            Some(t) => thread::park_timeout(t),
            None => thread::park(),
        }
        self.state.fetch_and(!SLEEPING, Ordering::Relaxed);
        false
    }

    /// Loom model of [`Signal::wait_unless`]: the same flag protocol, with
    /// the sleep on a condition variable.
    #[cfg(loom)]
    pub fn wait_unless(&self, ready: impl Fn() -> bool, _timeout: Option<Duration>) -> bool {
        let guard = self.lock.lock().unwrap();
        self.state.fetch_or(SLEEPING, Ordering::Release);
        barrier::heavy();
        if ready() {
            self.state.fetch_and(!SLEEPING, Ordering::Relaxed);
            return true;
        }
        // A notifier that saw the flag takes the lock before notifying, which
        // it can only do once we are waiting: the notification is not lost.
        drop(self.cond.wait(guard).unwrap());
        self.state.fetch_and(!SLEEPING, Ordering::Relaxed);
        false
    }

    /// Wakes the waiter if it is (about to be) parked. Call after publishing
    /// the data the waiter checks.
    #[inline]
    pub fn notify(&self) {
        barrier::light();
        let _closed = self.notify_after_barrier();
    }

    /// [`Signal::notify`] for a caller that has just run `barrier::light`.
    /// Returns whether the signal is closed (one load serves both checks).
    #[inline]
    pub fn notify_after_barrier(&self) -> bool {
        let state = self.state.load(Ordering::Acquire);
        if state & SLEEPING != 0 {
            self.wake();
        }
        state & CLOSED != 0
    }

    /// Marks the rings feeding this waiter closed (see `channel::ring`).
    pub fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::Release);
    }

    /// Whether [`Signal::close`] was called.
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Like [`Signal::notify`] but with a full fence, for cold paths (close,
    /// drop) that run outside the light/heavy pairing.
    pub fn notify_now(&self) {
        barrier::full();
        if self.state.load(Ordering::Acquire) & SLEEPING != 0 {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        #[cfg(not(loom))]
        if let Some(w) = &self.waker {
            w();
            return;
        }
        #[cfg(not(loom))]
        if let Some(t) = self.thread.lock().as_ref() {
            t.unpark();
        }
        #[cfg(loom)]
        {
            let _guard = self.lock.lock().unwrap();
            self.cond.notify_one();
        }
    }
}
