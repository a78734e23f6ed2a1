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
//! An async waiter (a task that must not block its executor's thread) runs
//! the same protocol without sleeping: [`Signal::register_task`] stores the
//! task's [`std::task::Waker`], publishes the sleeping flag with the `TASK`
//! bit beside it, issues the heavy barrier and re-checks; `Pending` is then
//! safe to return, because a notifier that publishes after the flag takes
//! the waker and wakes it. The flags stay set until a notifier (or the task,
//! done or cancelled, with [`Signal::cancel_task`]) clears them, so the
//! notifier's hot path is the same single load whether the waiter is a
//! thread, a task or nobody.
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

use super::Mutex;

/// How a notifier wakes a waiter that does not sleep in `park`.
#[cfg(not(loom))]
pub type Waker = std::sync::Arc<dyn Fn() + Send + Sync>;

const SLEEPING: u8 = 1;
const CLOSED: u8 = 2;
/// Set with `SLEEPING` by an async waiter: a notifier takes the task waker
/// from `task` instead of unparking a thread.
const TASK: u8 = 4;
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
    /// `epoll_wait`); see [`Signal::with_waker`] and [`Signal::set_waker`].
    /// Locked only on the cold wake path and by the waiter changing it.
    #[cfg(not(loom))]
    waker: Mutex<Option<Waker>>,
    /// The async waiter's waker (see [`Signal::register_task`]); locked only
    /// by the waiter registering or cancelling and by a notifier that saw
    /// `TASK`, never on the hot path.
    task: Mutex<Option<std::task::Waker>>,
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
            waker: Mutex::new(None),
            task: Mutex::new(None),
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
            waker: Mutex::new(Some(waker)),
            ..Self::new()
        }
    }

    /// Replaces the waker (`None`: unpark the waiting thread again). Only
    /// the waiter calls it, between sleeps: a waiter that starts sleeping
    /// in a ring polled on its own thread (see `worker::local`) installs
    /// the ring's eventfd here first, and removes it before it parks with
    /// [`Signal::wait_unless`] again.
    #[cfg(not(loom))]
    pub fn set_waker(&self, waker: Option<Waker>) {
        let old = std::mem::replace(&mut *self.waker.lock(), waker);
        drop(old);
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

    /// [`Signal::sleep_unless`] for one waiter that several signals wake
    /// (a worker polling local I/O drivers, each with an inbox signal of
    /// its own): publishes the sleeping flag on every signal, issues one
    /// heavy barrier, and runs `sleep` only if `ready()` (which must check
    /// every source the signals guard) is still false. A notifier of any of
    /// them pairs with that barrier as with a single signal, so `sleep`
    /// must return when any of their wakers runs.
    ///
    /// Returns `true` if `ready()` was already true (no sleep happened).
    #[cfg(not(loom))]
    pub fn sleep_unless_all(
        signals: &[&Signal],
        ready: impl FnOnce() -> bool,
        sleep: impl FnOnce(),
    ) -> bool {
        for s in signals {
            s.state.fetch_or(SLEEPING, Ordering::Release);
        }
        barrier::heavy();
        let ready = ready();
        if !ready {
            sleep();
        }
        for s in signals {
            s.state.fetch_and(!SLEEPING, Ordering::Relaxed);
        }
        ready
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
            self.wake(state);
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
        let state = self.state.load(Ordering::Acquire);
        if state & SLEEPING != 0 {
            self.wake(state);
        }
    }

    /// The async form of [`Signal::wait_unless`], for the one waiter this
    /// signal has: stores `waker` (replacing the previous one unless it
    /// would wake the same task), publishes the sleeping and `TASK` flags,
    /// issues the heavy barrier and checks `ready()`. Returns `true` if
    /// `ready()` held (the registration is withdrawn again: retry the
    /// operation at once); otherwise the task may return `Pending`: a
    /// notifier that publishes after the flags wakes `waker`, or the one
    /// that replaced it.
    ///
    /// Call [`Signal::cancel_task`] once the task stops waiting (done or
    /// dropped), so notifiers stop taking the cold path for it.
    pub fn register_task(&self, ready: impl FnOnce() -> bool, waker: &std::task::Waker) -> bool {
        {
            let mut slot = self.task.lock();
            match &*slot {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        // After the waker is stored (and its lock released): a notifier that
        // reads TASK (Acquire) and then locks `task` finds it. Release pairs
        // with that load.
        self.state.fetch_or(SLEEPING | TASK, Ordering::Release);
        // Pairs with the notifier's light barrier, as in `wait_unless`:
        // either `ready()` below sees its data, or it sees the flags.
        barrier::heavy();
        if ready() {
            self.cancel_task();
            return true;
        }
        false
    }

    /// Withdraws the async waiter's registration: drops its waker and
    /// clears the flags. Only the waiter calls it (it is the only one), so
    /// no other registration is lost; a notifier racing it finds no waker,
    /// or wakes the task once more (a spurious wake-up, which a future
    /// tolerates).
    pub fn cancel_task(&self) {
        let old = {
            let mut slot = self.task.lock();
            self.state.fetch_and(!(SLEEPING | TASK), Ordering::Relaxed);
            slot.take()
        };
        drop(old);
    }

    #[cold]
    fn wake(&self, state: u8) {
        if state & TASK != 0 {
            // Take the waker and clear the flags in one critical section: a
            // waiter stores its waker before setting the flags (outside the
            // lock), so a registration is never left with its waker present
            // and its flags cleared. Flags left set with no waker (a waker
            // taken just before the waiter set them) cost later notifiers
            // this cold path until the task, which was woken, polls again.
            //
            // `state` may be stale: the task may have withdrawn since, and
            // the waiter now sleep as a thread. Clearing its SLEEPING flag
            // and waking no thread lost that wake-up (found by the loom
            // model `task_wait_then_a_parked_wait_are_both_woken`). So look
            // again under the lock (TASK is cleared only under it) and leave
            // a thread's flag alone, and with no task to wake, fall through
            // and wake the thread (spurious at worst). Either alone closes
            // the gap; both keep it closed if one is edited away.
            let task = {
                let mut slot = self.task.lock();
                if self.state.load(Ordering::Relaxed) & TASK != 0 {
                    self.state.fetch_and(!(SLEEPING | TASK), Ordering::Relaxed);
                    slot.take()
                } else {
                    None
                }
            };
            if let Some(w) = task {
                w.wake();
                return;
            }
        }
        #[cfg(not(loom))]
        {
            let waker = self.waker.lock().clone();
            if let Some(w) = waker {
                w();
                return;
            }
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
