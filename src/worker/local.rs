//! Drivers polled in a worker's own loop: the thread-per-core mode of the
//! I/O layer runs network and storage rings on an application worker's
//! thread instead of dedicated I/O workers' threads, and installs them here
//! (from the worker's `init`, through `io::NetworkWorker::start_local` and
//! `io::StorageWorker::start_local`).
//!
//! The worker's loop polls every driver once per round, after its message
//! batches (each driver takes what the handlers queued, submits once, reaps
//! and delivers into its sinks, which push into worker rings, this one's
//! included; a driver never calls application code). When there is nothing
//! to do the worker sleeps in the first driver installed, the *primary*
//! (in `io_uring_enter` or `epoll_wait`), instead of parking:
//! - the primary's waker (an eventfd write) becomes the worker signal's
//!   waker, so a sender that finds the worker asleep wakes it out of the
//!   kernel, and the primary's completions wake it too;
//! - a later driver, a *secondary*, is built with the primary's waker for
//!   its clients (so their requests wake the worker), and is asked to
//!   signal the primary's eventfd on its own completions
//!   ([`LocalDriver::attach`]); while it has operations in flight the
//!   sleep is also bounded by a nap (50 us doubling to 1 ms), so a
//!   completion is never waited for longer than that even where the
//!   kernel cannot signal across rings;
//! - the sleeping flag is published on the worker's signal and on every
//!   driver's inbox signal, with one heavy barrier
//!   (`Signal::sleep_unless_all`), and every source re-checked, before
//!   the primary waits.
//!
//! This module knows the drivers only as trait objects, so the worker layer
//! stays below the I/O layer.

use super::current::{self, CurrentWorkerError};
use crate::sync::signal::{Signal, Waker};
use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

/// An event source run on the worker's thread.
pub(crate) trait LocalDriver {
    /// What it drives (`"network"`, `"storage"`): a worker runs one of each.
    fn kind(&self) -> &'static str;

    /// One round: takes requests, submits once, reaps and delivers.
    /// Returns whether it did anything.
    fn poll(&mut self) -> bool;

    /// Whether work waits that a sleep must not miss (requests from other
    /// threads, listeners to add, a stop): checked after the sleeping flags
    /// are published.
    fn ready(&mut self) -> bool;

    /// The signal its clients notify (their pushes wake the worker through
    /// its waker, which must wake the primary's wait).
    fn signal(&self) -> Option<Arc<Signal>>;

    /// Waits in the kernel until a completion, the waker, or `timeout`
    /// (the caller ran the flag protocol). Only the primary's is called.
    fn wait(&mut self, timeout: Option<Duration>);

    /// Wakes [`wait`](Self::wait) from any thread.
    fn waker(&self) -> Waker;

    /// The eventfd its waker writes, which a secondary may have the kernel
    /// signal on completions.
    fn wake_fd(&self) -> Option<RawFd>;

    /// As a secondary: signal `primary` (an eventfd) on each completion,
    /// where the kernel can. Returns whether it will.
    fn attach(&mut self, primary: RawFd) -> bool;

    /// Whether operations are in flight (a secondary's bound the sleep).
    fn busy(&self) -> bool;

    /// Whether it has stopped and delivered all it could: the loop then
    /// drops it.
    fn finished(&self) -> bool;

    /// The worker exits: ends everything now (closes sockets and files,
    /// waits for what the kernel holds) and delivers what still has
    /// somewhere to go.
    fn shut_down(&mut self);
}

/// The drivers on this thread; the first is the primary.
#[derive(Default)]
struct Drivers {
    list: Vec<Box<dyn LocalDriver>>,
    /// The current nap while a secondary has operations in flight.
    nap: Option<Duration>,
}

thread_local! {
    static DRIVERS: RefCell<Drivers> = RefCell::default();
}

const NAP_FIRST: Duration = Duration::from_micros(50);
const NAP_MOST: Duration = Duration::from_millis(1);

/// The primary's waker, for a driver about to be installed as a secondary
/// (its clients must wake the worker); `None` with no driver yet.
pub(crate) fn primary_waker() -> Option<Waker> {
    DRIVERS.with(|d| d.try_borrow().ok()?.list.first().map(|p| p.waker()))
}

/// Installs `driver` on the calling worker's thread; the worker polls it
/// from its next round on. The first driver becomes the primary (the worker
/// sleeps in it); a later one must have been built with
/// [`primary_waker`] for its clients.
///
/// # Errors
/// [`CurrentWorkerError::NotAWorker`] off a worker thread;
/// [`CurrentWorkerError::DriverInstalled`] if one of its kind runs already.
/// The driver is handed back with either.
pub(crate) fn install(
    mut driver: Box<dyn LocalDriver>,
) -> Result<(), (CurrentWorkerError, Box<dyn LocalDriver>)> {
    let Some(signal) = current::signal() else {
        return Err((CurrentWorkerError::NotAWorker, driver));
    };
    DRIVERS.with(|d| {
        let Ok(mut d) = d.try_borrow_mut() else {
            return Err((CurrentWorkerError::DriverInstalled, driver));
        };
        if d.list.iter().any(|x| x.kind() == driver.kind()) {
            return Err((CurrentWorkerError::DriverInstalled, driver));
        }
        match d.list.first().and_then(|p| p.wake_fd()) {
            Some(fd) => {
                // Without the kernel's signal the nap bounds its wait.
                let signalled = driver.attach(fd);
                tracing::debug!(
                    kind = driver.kind(),
                    signalled,
                    "local driver beside another: its completions wake the worker"
                );
            }
            None if d.list.is_empty() => signal.set_waker(Some(driver.waker())),
            None => {}
        }
        d.list.push(driver);
        Ok(())
    })
}

/// One round of every driver; drops those that finished (the primary
/// last, since the secondaries' clients wake the worker through it) and
/// gives the signal back its thread wake-up once none is left.
pub(crate) fn poll(signal: &Signal) -> bool {
    DRIVERS.with(|d| {
        let Ok(mut d) = d.try_borrow_mut() else {
            return false;
        };
        if d.list.is_empty() {
            return false;
        }
        let mut worked = false;
        for driver in d.list.iter_mut() {
            worked |= driver.poll();
        }
        let mut i = d.list.len();
        while i > 1 {
            i -= 1;
            if d.list[i].finished() {
                d.list.remove(i);
            }
        }
        if d.list.len() == 1 && d.list[0].finished() {
            d.list.clear();
            signal.set_waker(None);
        }
        if worked {
            d.nap = None;
        }
        worked
    })
}

/// Runs `f` on the driver whose wake-up eventfd is `fd` (from code on the
/// worker's thread that must let it make progress while it waits, such as
/// a listener close or a full client ring). `None` with no such driver, or
/// while the drivers are already running.
pub(crate) fn with<R>(fd: RawFd, f: impl FnOnce(&mut dyn LocalDriver) -> R) -> Option<R> {
    DRIVERS.with(|d| {
        let mut d = d.try_borrow_mut().ok()?;
        let driver = d.list.iter_mut().find(|x| x.wake_fd() == Some(fd))?;
        Some(f(&mut **driver))
    })
}

/// Sleeps in the primary unless `ready()` (the worker's own sources) or a
/// driver reports work after the sleeping flags are published. `false`
/// with no driver: the caller parks as usual.
pub(crate) fn sleep(signal: &Signal, ready: impl Fn() -> bool, timeout: Option<Duration>) -> bool {
    DRIVERS.with(|d| {
        let Ok(mut d) = d.try_borrow_mut() else {
            return false;
        };
        if d.list.is_empty() {
            return false;
        }
        let d = &mut *d;
        // A secondary with operations in flight may complete without a
        // wake-up the primary sees: bound the sleep by a growing nap.
        let timeout = if d.list[1..].iter().any(|x| x.busy()) {
            let nap = d.nap.map_or(NAP_FIRST, |n| (n * 2).min(NAP_MOST));
            d.nap = Some(nap);
            Some(timeout.map_or(nap, |t| t.min(nap)))
        } else {
            d.nap = None;
            timeout
        };
        let signals: Vec<Arc<Signal>> = d.list.iter().filter_map(|x| x.signal()).collect();
        let mut all: Vec<&Signal> = vec![signal];
        all.extend(signals.iter().map(|s| &**s));
        // The re-check and the wait each use the drivers, one after the
        // other (the wait runs only if the re-check found nothing).
        let cell = RefCell::new(&mut d.list);
        Signal::sleep_unless_all(
            &all,
            || ready() || cell.borrow_mut().iter_mut().any(|x| x.ready()),
            || cell.borrow_mut()[0].wait(timeout),
        );
        true
    })
}

/// The worker exits: every driver ends everything and is dropped (the
/// secondaries first).
pub(crate) fn shut_down(signal: &Signal) {
    let list = DRIVERS.with(|d| {
        d.try_borrow_mut()
            .map(|mut d| std::mem::take(&mut d.list))
            .unwrap_or_default()
    });
    if list.is_empty() {
        return;
    }
    signal.set_waker(None);
    for mut driver in list.into_iter().rev() {
        driver.shut_down();
    }
}
