//! What the two io_uring workers share: the ring, set up the same way; the
//! eventfd read that wakes a worker sleeping in the kernel; pushing,
//! submitting and reaping; and the spin-then-sleep policy.

use super::wake::EventFd;
use crate::sync::signal::Signal;
use io_uring::{IoUring, Submitter, opcode, squeue, types};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `user_data` of the eventfd read; workers use other values.
pub(crate) const WAKE: u64 = u64::MAX;

/// Set in the flags of a completion [`KernelRing::reap`] makes up for an
/// SQE the kernel never took, because the ring broke (a submit failed for
/// good) before it was submitted; its result is the failed submit's
/// `-errno`. The kernel's own flags use the low bits.
pub(crate) const NOT_SUBMITTED: u32 = 1 << 31;

/// One completion, as [`KernelRing::reap`] hands it out: the kernel's, or
/// one made up for an SQE it never took ([`NOT_SUBMITTED`]). Only this
/// module makes them, so a [`Cqe`] in hand proves the operation it names
/// has completed (see `inflight.rs`, which frees an operation's memory only
/// on its last one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

impl Cqe {
    /// The `user_data` of the SQE it completes.
    pub(crate) fn user_data(&self) -> u64 {
        self.user_data
    }

    /// The result: a count or an fd, or `-errno`.
    pub(crate) fn res(&self) -> i32 {
        self.res
    }

    /// Whether more completions of the same (multishot) SQE follow.
    pub(crate) fn more(&self) -> bool {
        io_uring::cqueue::more(self.flags)
    }

    /// The kernel's flags (buffer ids, `MORE`), plus [`NOT_SUBMITTED`].
    pub(crate) fn flags_raw(&self) -> u32 {
        self.flags
    }

    /// Whether it is a zero-copy send's notification (the kernel has let go
    /// of the buffer), not its result.
    pub(crate) fn notif(&self) -> bool {
        io_uring::cqueue::notif(self.flags)
    }

    /// Whether it was made up for an SQE the kernel never took.
    pub(crate) fn refused(&self) -> bool {
        self.flags & NOT_SUBMITTED != 0
    }
}

/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;

/// A worker's io_uring plus its wake-up read.
///
/// It tracks every SQE pushed but not yet taken by the kernel, so a failed
/// submit is handled, not ignored: `EBUSY`/`EAGAIN` (a full completion
/// queue, short kernel memory) and `EINTR` leave them queued for the next
/// submit, after the worker has reaped; any other error breaks the ring:
/// it takes no more SQEs and never enters the kernel to submit again, and
/// every SQE still queued gets a made-up completion flagged
/// [`NOT_SUBMITTED`], so its operation fails (and its memory is released)
/// knowing the kernel never saw it. A linked pair is pushed whole or not
/// at all ([`push_linked`](Self::push_linked)); if a partial submit still
/// splits one, [`take_split`](Self::take_split) names its second half.
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
    /// SQEs pushed and not yet taken by the kernel, in queue order: their
    /// `user_data`, and whether each is linked to the next.
    pending: VecDeque<(u64, bool)>,
    /// Second halves of linked pairs whose first half a partial submit
    /// took alone.
    split: Vec<u64>,
    /// The errno of the submit that broke the ring.
    broken: Option<i32>,
    /// Made-up completions of the SQEs the kernel never took.
    refused: Vec<Cqe>,
    /// Test seam: the next submit fails with this errno without entering
    /// the kernel.
    #[cfg(test)]
    pub(crate) fail_next_submit: Option<i32>,
    /// Test seam: submits take at most this many SQEs (a partial submit).
    #[cfg(test)]
    pub(crate) submit_at_most: Option<u32>,
    /// Test log: `Some(user_data)` per push, `None` per submit that
    /// entered the kernel.
    #[cfg(test)]
    pub(crate) log: Vec<Option<u64>>,
}

impl KernelRing {
    /// A ring of `entries` (clamped to 8..=32768). Single issuer and
    /// cooperative task running (with the task-run flag, so the worker knows
    /// when completions wait for an enter) cut kernel overhead; older kernels
    /// reject them, so this retries without.
    pub(crate) fn new(entries: u32, waker: Arc<EventFd>, spin: Duration) -> std::io::Result<Self> {
        Self::with_coop(entries, waker, spin, true)
    }

    /// As [`new`](Self::new); without `coop`, completions interrupt the
    /// thread's sleep wherever it sleeps (task work with a signal), which a
    /// ring polled beside another one, whose wait the thread sleeps in,
    /// needs for its completions to be posted (and its registered eventfd
    /// signalled) meanwhile.
    pub(crate) fn with_coop(
        entries: u32,
        waker: Arc<EventFd>,
        spin: Duration,
        coop: bool,
    ) -> std::io::Result<Self> {
        let entries = entries.clamp(8, 32768);
        let mut builder = IoUring::builder();
        builder.setup_single_issuer();
        if coop {
            builder.setup_coop_taskrun().setup_taskrun_flag();
        }
        let ring = builder.build(entries).or_else(|_| IoUring::new(entries))?;
        Ok(Self {
            ring,
            waker,
            wake_buf: Box::new(0),
            wake_armed: false,
            spin,
            idle_since: None,
            pending: VecDeque::new(),
            split: Vec::new(),
            broken: None,
            refused: Vec::new(),
            #[cfg(test)]
            fail_next_submit: None,
            #[cfg(test)]
            submit_at_most: None,
            #[cfg(test)]
            log: Vec::new(),
        })
    }

    /// For registering buffers and files.
    pub(crate) fn submitter(&self) -> Submitter<'_> {
        self.ring.submitter()
    }

    /// Whether the kernel knows `opcode` (an `IORING_OP_*` code).
    pub(crate) fn supports(&self, opcode: u8) -> bool {
        let mut probe = io_uring::Probe::new();
        self.ring.submitter().register_probe(&mut probe).is_ok() && probe.is_supported(opcode)
    }

    /// Free submission queue entries (none once the ring is broken).
    pub(crate) fn sq_free(&mut self) -> usize {
        if self.broken.is_some() {
            return 0;
        }
        let sq = self.ring.submission();
        sq.capacity() - sq.len()
    }

    /// The errno of the submit that broke the ring, if one did.
    pub(crate) fn broken(&self) -> Option<i32> {
        self.broken
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
        // SAFETY: the read writes 8 bytes into `wake_buf`, a heap u64 that
        // lives as long as this ring and is leaked rather than freed if its
        // read never completes (`leak_wake_buf`).
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
    /// still does not fit or the ring is broken (then nothing was pushed).
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid, and what it points to
    /// unmoved, until its completion is reaped.
    pub(crate) unsafe fn push(&mut self, sqe: &squeue::Entry) -> bool {
        for _ in 0..2 {
            if self.broken.is_some() {
                return false;
            }
            // SAFETY: the caller keeps what `sqe` points to alive.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                self.pushed(sqe.get_user_data(), false);
                return true;
            }
            self.submit(false);
        }
        false
    }

    /// Pushes `first` linked (`IO_LINK`) to `second`, both or neither:
    /// submits first if fewer than two entries are free; `false` if they
    /// still do not fit or the ring is broken (then nothing was pushed).
    ///
    /// # Safety
    /// As [`push`](Self::push), for both SQEs.
    pub(crate) unsafe fn push_linked(
        &mut self,
        first: &squeue::Entry,
        second: &squeue::Entry,
    ) -> bool {
        if self.sq_free() < 2 {
            self.submit(false);
        }
        if self.sq_free() < 2 {
            return false;
        }
        let pair = [first.clone().flags(squeue::Flags::IO_LINK), second.clone()];
        // SAFETY: the caller keeps what both SQEs point to alive.
        if unsafe { self.ring.submission().push_multiple(&pair) }.is_err() {
            return false;
        }
        self.pushed(first.get_user_data(), true);
        self.pushed(second.get_user_data(), false);
        true
    }

    fn pushed(&mut self, user_data: u64, linked: bool) {
        self.pending.push_back((user_data, linked));
        #[cfg(test)]
        self.log.push(Some(user_data));
    }

    /// The second halves of linked pairs that a partial submit split since
    /// the last call (their first halves ran unlinked).
    pub(crate) fn take_split(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.split)
    }

    /// Submits what is queued; with `wait`, also waits for one completion.
    /// Enters the kernel with nothing to submit only when the ring flags
    /// completions that need task work (with cooperative task running they
    /// appear only after an enter). A broken ring only waits.
    pub(crate) fn submit(&mut self, wait: bool) {
        if self.broken.is_some() {
            if wait {
                self.wait_only();
            }
            return;
        }
        if !wait && self.ring.submission().is_empty() && !self.ring.submission().taskrun() {
            return;
        }
        let r = self.enter(wait);
        self.account(r);
    }

    fn enter(&mut self, wait: bool) -> std::io::Result<usize> {
        #[cfg(test)]
        {
            if let Some(errno) = self.fail_next_submit.take() {
                return Err(std::io::Error::from_raw_os_error(errno));
            }
            self.log.push(None);
            if let Some(most) = self.submit_at_most {
                let len = self.ring.submission().len() as u32;
                let want = u32::from(wait);
                // SAFETY: submits at most the SQEs already queued (each
                // pushed under `push`'s contract); no argument pointer.
                return unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        len.min(most),
                        want,
                        ENTER_GETEVENTS,
                        None,
                    )
                };
            }
        }
        if wait {
            self.ring.submit_and_wait(1)
        } else {
            self.ring.submit()
        }
    }

    /// Books the outcome of an enter: the SQEs it took leave `pending`.
    fn account(&mut self, r: std::io::Result<usize>) {
        match r {
            Ok(n) => {
                debug_assert!(n <= self.pending.len(), "the kernel took unknown SQEs");
                let mut last_linked = false;
                for _ in 0..n.min(self.pending.len()) {
                    last_linked = self.pending.pop_front().is_some_and(|(_, l)| l);
                }
                if last_linked && let Some(&(second, _)) = self.pending.front() {
                    self.split.push(second);
                }
            }
            // Nothing was taken; reaping makes room (a full completion
            // queue) and the next round retries.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                ) => {}
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                tracing::error!(
                    errno,
                    error = %e,
                    refused = self.pending.len(),
                    "io_uring submit failed: the ring is broken, its requests fail"
                );
                self.broken = Some(errno);
                for (user_data, _) in self.pending.drain(..) {
                    self.refused.push(Cqe {
                        user_data,
                        res: -errno,
                        flags: NOT_SUBMITTED,
                    });
                }
            }
        }
    }

    /// Waits for a completion without submitting anything (a broken ring
    /// must never hand the kernel the SQEs left in it).
    fn wait_only(&mut self) {
        if !self.refused.is_empty() {
            return;
        }
        // SAFETY: submits nothing (`to_submit` 0); no argument pointer.
        let r = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(0, 1, ENTER_GETEVENTS, None)
        };
        if r.is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Moves the ready completions into `out`, the made-up ones of SQEs
    /// never submitted first, except the wake read's, which only re-arms;
    /// returns how many there were, the wake read's included (a wake means
    /// work arrived).
    pub(crate) fn reap(&mut self, out: &mut Vec<Cqe>) -> usize {
        let mut n = 0;
        let refused = std::mem::take(&mut self.refused);
        let real = self.ring.completion().map(|c| Cqe {
            user_data: c.user_data(),
            res: c.result(),
            flags: c.flags(),
        });
        for cqe in refused.into_iter().chain(real) {
            n += 1;
            if cqe.user_data == WAKE {
                self.wake_armed = false;
            } else {
                out.push(cqe);
            }
        }
        n
    }

    /// After a loop round: with work done, nothing; otherwise spin until
    /// `spin` has passed since the last work (a request or completion that
    /// comes within it costs no wake-up), then sleep in the kernel until a
    /// completion, unless `ready()` reports requests after the sleeping
    /// flag is published (see [`Signal::sleep_unless`]). `most` bounds the
    /// sleep (results waiting for room in a full target, see `nap.rs`). A
    /// broken ring has no wake read in flight, so it naps instead.
    pub(crate) fn idle(
        &mut self,
        worked: bool,
        signal: &Signal,
        most: Option<Duration>,
        ready: impl FnOnce() -> bool,
    ) {
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
        self.sleep(signal, most, ready);
    }

    /// Sleeps in the kernel until a completion (or the wake read), at most
    /// `most`, unless `ready()` reports requests after the sleeping flag is
    /// published (see [`Signal::sleep_unless`]). A broken ring has no wake
    /// read in flight, so it naps instead.
    pub(crate) fn sleep(
        &mut self,
        signal: &Signal,
        most: Option<Duration>,
        ready: impl FnOnce() -> bool,
    ) {
        if self.broken.is_some() {
            std::thread::sleep(most.unwrap_or(Duration::from_millis(1)));
            return;
        }
        signal.sleep_unless(ready, || self.wait(most));
    }

    /// Submits what is queued and waits in the kernel for a completion (or
    /// the wake read), at most `most`; the caller has run the signal's flag
    /// protocol. Completions already waiting make it return at once.
    pub(crate) fn wait(&mut self, most: Option<Duration>) {
        if self.broken.is_some() {
            std::thread::sleep(most.unwrap_or(Duration::from_millis(1)));
            return;
        }
        let r = match most {
            None => self.enter(true),
            Some(t) => self.enter_at_most(t),
        };
        self.account(r);
    }

    /// Submits what is queued and waits for a completion, at most `t`
    /// (a timeout is no error). Kernels without `IORING_FEAT_EXT_ARG`
    /// (before 5.11) cannot bound the wait: they submit and nap instead.
    fn enter_at_most(&mut self, t: Duration) -> std::io::Result<usize> {
        if !self.ring.params().is_feature_ext_arg() {
            let r = self.ring.submit();
            std::thread::sleep(t);
            return r;
        }
        let ts = io_uring::types::Timespec::from(t);
        let args = io_uring::types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(0),
            r => r,
        }
    }
}
