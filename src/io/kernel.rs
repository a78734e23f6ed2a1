//! What the two io_uring workers share: the ring, set up the same way; the
//! eventfd read that wakes a worker sleeping in the kernel; pushing,
//! submitting and reaping; and the spin-then-sleep policy.

use super::wake::EventFd;
use crate::sync::signal::Signal;
use io_uring::{IoUring, Submitter, opcode, squeue, types};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `user_data` of the eventfd read; workers use other values.
pub(crate) const WAKE: u64 = u64::MAX;

/// A worker's io_uring plus its wake-up read.
pub(crate) struct KernelRing {
    ring: IoUring,
    waker: Arc<EventFd>,
    /// Where the eventfd read lands; the kernel may write it while the read
    /// is in flight, so it lives on the heap and is leaked if the read never
    /// completes.
    wake_buf: Box<u64>,
    wake_armed: bool,
    spin: Duration,
    idle_since: Option<Instant>,
}

impl KernelRing {
    /// A ring of `entries` (clamped to 8..=32768). Single issuer and
    /// cooperative task running (with the task-run flag, so the worker knows
    /// when completions wait for an enter) cut kernel overhead; older kernels
    /// reject them, so this retries without.
    pub(crate) fn new(entries: u32, waker: Arc<EventFd>, spin: Duration) -> std::io::Result<Self> {
        let entries = entries.clamp(8, 32768);
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(entries)
            .or_else(|_| IoUring::new(entries))?;
        Ok(Self {
            ring,
            waker,
            wake_buf: Box::new(0),
            wake_armed: false,
            spin,
            idle_since: None,
        })
    }

    /// For registering buffers and files.
    pub(crate) fn submitter(&self) -> Submitter<'_> {
        self.ring.submitter()
    }

    /// Free submission queue entries.
    pub(crate) fn sq_free(&mut self) -> usize {
        let sq = self.ring.submission();
        sq.capacity() - sq.len()
    }

    /// Keeps a read on the eventfd in flight, so a client's push wakes the
    /// worker out of `io_uring_enter`.
    pub(crate) fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let sqe = opcode::Read::new(
            types::Fd(self.waker.as_raw_fd()),
            (&raw mut *self.wake_buf).cast(),
            8,
        )
        .build()
        .user_data(WAKE);
        // SAFETY: `wake_buf` lives as long as this ring, and is leaked
        // rather than freed if its read never completes (`leak_wake_buf`).
        if unsafe { self.push(&sqe) } {
            self.wake_armed = true;
        }
    }

    /// Whether the eventfd read is still in flight.
    pub(crate) fn wake_armed(&self) -> bool {
        self.wake_armed
    }

    /// Completes the worker's own eventfd read (for shutting down).
    pub(crate) fn wake_self(&self) {
        self.waker.notify();
    }

    /// Forgets the wake buffer instead of freeing it (the read is still in
    /// flight and the kernel could write it).
    pub(crate) fn leak_wake_buf(&mut self) {
        std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
    }

    /// Pushes one SQE, submitting first if the queue is full; `false` if it
    /// still does not fit.
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid until its completion is
    /// reaped.
    pub(crate) unsafe fn push(&mut self, sqe: &squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: the caller keeps what `sqe` points to alive.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return true;
            }
            self.submit(false);
        }
        false
    }

    /// Submits what is queued; with `wait`, also waits for one completion.
    /// Enters the kernel with nothing to submit only when the ring flags
    /// completions that need task work (with cooperative task running they
    /// appear only after an enter).
    pub(crate) fn submit(&mut self, wait: bool) {
        let r = if wait {
            self.ring.submit_and_wait(1)
        } else if self.ring.submission().is_empty() && !self.ring.submission().taskrun() {
            return;
        } else {
            self.ring.submit()
        };
        if let Err(e) = r {
            // EBUSY/EAGAIN: the completion queue is full; reaping makes room.
            // EINTR: retried on the next round.
            debug_assert!(
                matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                ),
                "io_uring_enter: {e}"
            );
        }
    }

    /// Moves the ready completions (`user_data`, result, flags) into `out`,
    /// except the wake read's, which only re-arms; returns how many there
    /// were, the wake read's included (a wake means work arrived).
    pub(crate) fn reap(&mut self, out: &mut Vec<(u64, i32, u32)>) -> usize {
        let mut n = 0;
        for c in self.ring.completion() {
            n += 1;
            if c.user_data() == WAKE {
                self.wake_armed = false;
            } else {
                out.push((c.user_data(), c.result(), c.flags()));
            }
        }
        n
    }

    /// After a loop round: with work done, nothing; otherwise spin until
    /// `spin` has passed since the last work (a request or completion that
    /// comes within it costs no wake-up), then sleep in the kernel until a
    /// completion, unless `ready()` reports requests after the sleeping
    /// flag is published (see [`Signal::sleep_unless`]).
    pub(crate) fn idle(&mut self, worked: bool, signal: &Signal, ready: impl FnOnce() -> bool) {
        if worked {
            self.idle_since = None;
            return;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.spin {
            std::hint::spin_loop();
            return;
        }
        self.idle_since = None;
        let ring = &self.ring;
        signal.sleep_unless(ready, || {
            // Completions already waiting make the enter return at once.
            let _ = ring.submit_and_wait(1);
        });
    }
}
