//! Synchronisation primitives, swapped for loom's models under `--cfg loom`.
//!
//! Every lock-free structure in the crate takes its atomics, cells and thread
//! parking from here, so the same code runs in production and under the loom
//! model checker (`tests/loom.rs`).

pub(crate) mod barrier;
pub(crate) mod signal;

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize};

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize};

/// An `UnsafeCell` with loom's closure-based access API, so slot accesses are
/// tracked by loom and compile to plain pointer accesses otherwise.
#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// A mutex for cold paths (wait-list registration), with one `lock` API:
/// `parking_lot`'s in production, loom's (its poisoning unwrapped) under
/// `--cfg loom` so the model checker sees every lock.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(
    #[cfg(not(loom))] parking_lot::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

#[cfg(not(loom))]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(parking_lot::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
        self.0.lock()
    }
}

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap()
    }
}

/// Runs a future to completion on this loom thread: the executor of the
/// loom models, and of `Pending::wait` under loom. Its waker sets a flag
/// under a loom mutex and signals a loom condition variable, so a wake-up
/// that is never sent leaves the thread waiting, which loom reports as a
/// deadlock.
#[cfg(loom)]
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};

    struct Parker {
        woken: loom::sync::Mutex<bool>,
        cond: loom::sync::Condvar,
    }

    impl Wake for Parker {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            *self.woken.lock().unwrap() = true;
            self.cond.notify_one();
        }
    }

    let parker = std::sync::Arc::new(Parker {
        woken: loom::sync::Mutex::new(false),
        cond: loom::sync::Condvar::new(),
    });
    let waker = Waker::from(parker.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let mut woken = parker.woken.lock().unwrap();
        while !*woken {
            woken = parker.cond.wait(woken).unwrap();
        }
        *woken = false;
    }
}
