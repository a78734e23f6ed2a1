//! A driver polled in a worker's own loop: the thread-per-core mode of the
//! I/O layer runs a network ring on an application worker's thread instead
//! of a dedicated I/O worker's, and installs it here (from the worker's
//! `init`, through `io::NetworkWorker::start_local`).
//!
//! The worker's loop polls the driver once per round, after its message
//! batches (one submit per round: the driver takes what the handlers
//! queued, submits, reaps and delivers into its sinks, which push into
//! worker rings, this one's included; it never calls application code).
//! When there is nothing to do the worker sleeps in the driver (in
//! `io_uring_enter` or `epoll_wait`) instead of parking: the driver's
//! waker (an eventfd write) becomes the worker signal's waker, so a sender
//! that finds the worker asleep wakes it out of the kernel, and a
//! completion wakes it too. The flag protocol is the signal's own
//! (`Signal::sleep_unless`): the sleeping flag is published and the rings
//! re-checked before the driver sleeps.
//!
//! This module knows the driver only as a trait object, so the worker layer
//! stays below the I/O layer.

use super::current::{self, CurrentWorkerError};
use crate::sync::signal::{Signal, Waker};
use std::cell::RefCell;
use std::time::Duration;

/// An event source run on the worker's thread.
pub(crate) trait LocalDriver {
    /// One round: takes requests, submits once, reaps and delivers.
    /// Returns whether it did anything.
    fn poll(&mut self) -> bool;

    /// Whether work waits that a sleep must not miss (requests from other
    /// threads, listeners to add): checked after the sleeping flag is
    /// published.
    fn ready(&mut self) -> bool;

    /// Sleeps in the kernel until a completion, the waker, or `timeout`.
    /// The caller has published the worker's sleeping flag and re-checked
    /// its rings and `ready`; a driver whose own clients wake it through
    /// another signal runs that signal's protocol here too.
    fn sleep(&mut self, timeout: Option<Duration>);

    /// Wakes [`sleep`](Self::sleep) from any thread.
    fn waker(&self) -> Waker;

    /// Whether it has stopped and delivered all it could: the loop then
    /// drops it.
    fn finished(&self) -> bool;

    /// The worker exits: ends everything now (closes sockets, waits for
    /// what the kernel holds) and delivers what still has somewhere to go.
    fn shut_down(&mut self);
}

thread_local! {
    static DRIVER: RefCell<Option<Box<dyn LocalDriver>>> = const { RefCell::new(None) };
}

/// Installs `driver` on the calling worker's thread; the worker polls it
/// from its next round on and sleeps in it.
///
/// # Errors
/// [`CurrentWorkerError::NotAWorker`] off a worker thread;
/// [`CurrentWorkerError::DriverInstalled`] if one runs already (a worker
/// sleeps in one kernel wait, so it polls one driver). The driver is handed
/// back with either.
pub(crate) fn install(
    driver: Box<dyn LocalDriver>,
) -> Result<(), (CurrentWorkerError, Box<dyn LocalDriver>)> {
    let Some(signal) = current::signal() else {
        return Err((CurrentWorkerError::NotAWorker, driver));
    };
    DRIVER.with(|d| {
        let Ok(mut d) = d.try_borrow_mut() else {
            return Err((CurrentWorkerError::DriverInstalled, driver));
        };
        if d.is_some() {
            return Err((CurrentWorkerError::DriverInstalled, driver));
        }
        signal.set_waker(Some(driver.waker()));
        *d = Some(driver);
        Ok(())
    })
}

/// One round of the driver, if there is one; drops it once it has
/// finished (and gives the signal back its thread wake-up).
pub(crate) fn poll(signal: &Signal) -> bool {
    DRIVER.with(|d| {
        let Ok(mut slot) = d.try_borrow_mut() else {
            return false;
        };
        let Some(driver) = slot.as_mut() else {
            return false;
        };
        let worked = driver.poll();
        if driver.finished() {
            signal.set_waker(None);
            *slot = None;
        }
        worked
    })
}

/// Runs `f` on the driver (from code on the worker's thread that must let
/// it make progress while it waits, such as a listener close). `None` with
/// no driver, or while it is already running.
pub(crate) fn with<R>(f: impl FnOnce(&mut dyn LocalDriver) -> R) -> Option<R> {
    DRIVER.with(|d| {
        let mut slot = d.try_borrow_mut().ok()?;
        slot.as_mut().map(|driver| f(&mut **driver))
    })
}

/// Sleeps in the driver unless `ready()` (the worker's own sources) or the
/// driver reports work after the sleeping flag is published. `false` with
/// no driver: the caller parks as usual.
pub(crate) fn sleep(signal: &Signal, ready: impl Fn() -> bool, timeout: Option<Duration>) -> bool {
    DRIVER.with(|d| {
        let Ok(mut slot) = d.try_borrow_mut() else {
            return false;
        };
        let Some(driver) = slot.as_mut() else {
            return false;
        };
        // The re-check and the sleep each use the driver, one after the
        // other (the sleep runs only if the re-check found nothing).
        let cell = RefCell::new(&mut **driver);
        signal.sleep_unless(
            || ready() || cell.borrow_mut().ready(),
            || cell.borrow_mut().sleep(timeout),
        );
        true
    })
}

/// The worker exits: the driver ends everything and is dropped.
pub(crate) fn shut_down(signal: &Signal) {
    let driver = DRIVER.with(|d| d.try_borrow_mut().ok().and_then(|mut s| s.take()));
    if let Some(mut driver) = driver {
        signal.set_waker(None);
        driver.shut_down();
    }
}
