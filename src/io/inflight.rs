//! Operations in flight on an io_uring, each owning what the kernel may
//! touch.
//!
//! Every SQE an I/O worker submits comes from an operation: a plain type
//! (one per opcode family, as the io-uring crate has one per opcode) that
//! holds every byte its SQE points to: buffers, iovec arrays, paths,
//! addresses. The operation moves into an [`InFlight`] slab, its SQEs are
//! built from its own fields there and pushed, and it leaves the slab by
//! value only with its last completion ([`InFlight::reaped`] takes a
//! [`Cqe`], which only the ring makes), or at once if the ring took none
//! of its SQEs. No other path takes it out, and the slab hands out no
//! `&mut` to it, so no code outside the [`Owned`] impls can replace,
//! resize or free what the kernel reads or writes: a worker that fails a
//! connection, shuts down, or drops a request cannot reuse a buffer under
//! the kernel, because it never holds that buffer while the kernel might.
//!
//! The one `unsafe` obligation is the trait's: an [`Owned`] impl builds its
//! SQEs only from memory it owns and keeps that memory still. The one
//! `unsafe` push is [`InFlight::submit`]'s, which relies on it.
//!
//! A slab dropped with operations still in it (a worker that gave up
//! waiting for the kernel) leaks them rather than free memory the kernel
//! may still write.

use super::kernel::{Cqe, KernelRing};
use io_uring::squeue;
use std::mem::ManuallyDrop;

/// What an operation submits: one SQE, or two linked (`IO_LINK`) that go
/// into the ring together or not at all.
pub(crate) enum Sqes {
    One(squeue::Entry),
    Linked(squeue::Entry, squeue::Entry),
}

/// An operation that owns everything its SQEs point to.
///
/// # Safety
/// `sqes` builds its entries only from `self` and `'static` or ring-owned
/// memory: every pointer in them points into heap memory `self` owns (the
/// contents of a `Vec`, `Box`, `CString` or `IoBuf`, which do not move
/// when `self` does), or into memory that outlives the ring (a registered
/// buffer region the worker keeps until after the ring is gone), and that
/// memory is valid for what the opcode does to it (a receive's buffer has
/// the room its length says). Neither `sqes`, called once, nor `progress`
/// nor `unlinked`, called while the kernel may still use that memory, may
/// free, shrink, reallocate or hand out that memory. Every descriptor the
/// SQEs name must stay open until the operation's last completion, or be
/// one the kernel holds its own reference to once submitted.
pub(crate) unsafe trait Owned {
    /// The SQEs, without `user_data` (the slab sets it).
    fn sqes(&mut self) -> Sqes;

    /// A completion that is not the operation's last: the first of a
    /// linked pair, or a multishot's with `IORING_CQE_F_MORE`.
    fn progress(&mut self, _cqe: &Cqe) {}

    /// A partial submit took the first SQE of its linked pair without the
    /// second: they ran unlinked (see `KernelRing::take_split`).
    fn unlinked(&mut self) {}
}

struct Entry<T> {
    op: T,
    /// Completions still to come: 1, or 2 for a linked pair; a multishot
    /// completion with `MORE` set does not count.
    waiting: u8,
}

/// The operations in flight on one ring, by slot. An SQE's `user_data` is
/// `slot << 1 | half` (half 1 is a linked pair's second SQE), which never
/// collides with the ring's own wake read (`u64::MAX`).
pub(crate) struct InFlight<T> {
    /// `ManuallyDrop` so that `Drop` can leak what is still in flight.
    entries: ManuallyDrop<Vec<Option<Entry<T>>>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        Self {
            entries: ManuallyDrop::new(Vec::new()),
            free: Vec::new(),
            len: 0,
        }
    }
}

/// What a completion did to the operation it names.
pub(crate) enum Reaped<'a, T> {
    /// Its last: the operation leaves the slab.
    Last(T),
    /// Not its last; it stays in flight.
    More(&'a T),
    /// It names no operation in the slab.
    Unknown,
}

impl<T> Reaped<'_, T> {
    /// The operation, if this was its last completion.
    pub(crate) fn last(self) -> Option<T> {
        match self {
            Reaped::Last(op) => Some(op),
            _ => None,
        }
    }
}

fn user_data(slot: u32, half: u64) -> u64 {
    (u64::from(slot) << 1) | half
}

fn slot_of(user_data: u64) -> Option<usize> {
    usize::try_from(user_data >> 1).ok()
}

impl<T: Owned> InFlight<T> {
    /// Operations in the slab (submitted, last completion not reaped).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves `op` into the slab and pushes its SQEs (a linked pair whole
    /// or not at all). Returns the `user_data` of its first SQE (what an
    /// `AsyncCancel` names), or `op` back if the ring took nothing (full or
    /// broken): then the kernel never saw it.
    pub(crate) fn submit(&mut self, ring: &mut KernelRing, op: T) -> Result<u64, T> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let Ok(s) = u32::try_from(self.entries.len()) else {
                    return Err(op);
                };
                self.entries.push(None);
                s
            }
        };
        // The SQEs point only into the op's heap memory (the `Owned`
        // contract), which stays where it is when the op moves into the
        // slab below.
        let mut op = op;
        let (pushed, waiting) = match op.sqes() {
            Sqes::One(sqe) => {
                let sqe = sqe.user_data(user_data(slot, 0));
                // SAFETY: `Owned` guarantees `sqe` points only into memory
                // the op owns and keeps still, or that outlives the ring;
                // the op goes into this slab right after the push and stays
                // until its last completion is reaped (`reaped`), and a
                // dropped slab leaks it.
                (unsafe { ring.push(&sqe) }, 1)
            }
            Sqes::Linked(first, second) => {
                let first = first.user_data(user_data(slot, 0));
                let second = second.user_data(user_data(slot, 1));
                // SAFETY: as above, for both SQEs of the pair.
                (unsafe { ring.push_linked(&first, &second) }, 2)
            }
        };
        if !pushed {
            self.free.push(slot);
            return Err(op);
        }
        self.entries[slot as usize] = Some(Entry { op, waiting });
        self.len += 1;
        Ok(user_data(slot, 0))
    }

    /// Books a completion: with the operation's last one, hands the
    /// operation back by value (the kernel is done with its memory);
    /// before it (a multishot's, the first of a linked pair), lets the
    /// operation book it ([`Owned::progress`]) and shows it.
    pub(crate) fn reaped(&mut self, cqe: &Cqe) -> Reaped<'_, T> {
        let Some(i) = slot_of(cqe.user_data()) else {
            return Reaped::Unknown;
        };
        let waiting = match self.entries.get_mut(i) {
            Some(Some(entry)) => {
                if !cqe.more() {
                    entry.waiting = entry.waiting.saturating_sub(1);
                }
                entry.waiting
            }
            _ => return Reaped::Unknown,
        };
        if waiting > 0 {
            let Some(entry) = self.entries[i].as_mut() else {
                return Reaped::Unknown;
            };
            entry.op.progress(cqe);
            return Reaped::More(&entry.op);
        }
        let Some(entry) = self.entries[i].take() else {
            return Reaped::Unknown;
        };
        self.free.push(i as u32);
        self.len -= 1;
        Reaped::Last(entry.op)
    }

    /// Tells the operation whose second SQE has this `user_data` that its
    /// pair was split by a partial submit.
    pub(crate) fn split(&mut self, second: u64) {
        if let Some(Some(entry)) = slot_of(second).and_then(|i| self.entries.get_mut(i)) {
            entry.op.unlinked();
        }
    }

    /// The operations in flight, to read (never to change) their state.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().flatten().map(|e| &e.op)
    }
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        let live = self.entries.iter().filter(|e| e.is_some()).count();
        if live > 0 {
            tracing::warn!(
                operations = live,
                "I/O worker exits with operations in flight: their memory is leaked, not freed"
            );
            // The vector and every entry stay allocated (never dropped).
            return;
        }
        // SAFETY: dropped once, here; nothing in it is in flight.
        unsafe { ManuallyDrop::drop(&mut self.entries) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::wake::EventFd;
    use io_uring::opcode;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    static DROPS: AtomicUsize = AtomicUsize::new(0);

    /// A read into a heap buffer, counting its drops.
    struct ReadInto {
        fd: i32,
        buf: Vec<u8>,
        progress: usize,
    }

    // SAFETY: the read writes at most `buf.capacity()` bytes into the
    // heap buffer this op owns, which nothing resizes while it is in the
    // slab; `fd` is a pipe the test keeps open.
    unsafe impl Owned for ReadInto {
        fn sqes(&mut self) -> Sqes {
            let cap = self.buf.capacity() as u32;
            Sqes::One(
                opcode::Read::new(io_uring::types::Fd(self.fd), self.buf.as_mut_ptr(), cap).build(),
            )
        }
        fn progress(&mut self, _: &Cqe) {
            self.progress += 1;
        }
    }

    impl Drop for ReadInto {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn ring() -> Option<KernelRing> {
        let waker = Arc::new(EventFd::new().ok()?);
        KernelRing::new(8, waker, Duration::ZERO).ok()
    }

    fn pipe() -> (i32, i32) {
        let mut fds = [0; 2];
        // SAFETY: writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    }

    #[test]
    fn an_operation_leaves_the_slab_only_with_its_completion_and_a_dropped_slab_leaks_it() {
        let Some(mut ring) = ring() else {
            return; // no io_uring here
        };
        let (r, w) = pipe();
        let mut slab = InFlight::default();
        let before = DROPS.load(Ordering::SeqCst);
        let op = ReadInto {
            fd: r,
            buf: Vec::with_capacity(16),
            progress: 0,
        };
        assert!(slab.submit(&mut ring, op).is_ok());
        ring.submit(false);
        let mut cqes = Vec::new();
        ring.reap(&mut cqes);
        assert!(cqes.is_empty(), "the pipe is empty: the read waits");
        assert_eq!(slab.len(), 1);
        // The worker gives up with the read in flight: the slab leaks the
        // buffer the kernel may still write instead of freeing it.
        drop(slab);
        assert_eq!(
            DROPS.load(Ordering::SeqCst),
            before,
            "freed under the kernel"
        );
        // The kernel writes into the leaked buffer: no use after free.
        // SAFETY: writes 4 bytes from a local.
        assert_eq!(unsafe { libc::write(w, b"ping".as_ptr().cast(), 4) }, 4);
        ring.submit(true);
        // SAFETY: closes the test's own pipe.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
    }

    #[test]
    fn a_reaped_operation_comes_back_with_its_memory() {
        let Some(mut ring) = ring() else {
            return;
        };
        let (r, w) = pipe();
        let mut slab = InFlight::default();
        let op = ReadInto {
            fd: r,
            buf: Vec::with_capacity(16),
            progress: 0,
        };
        let ud = slab.submit(&mut ring, op).ok().unwrap();
        // SAFETY: writes 4 bytes from a local.
        assert_eq!(unsafe { libc::write(w, b"pong".as_ptr().cast(), 4) }, 4);
        let mut cqes = Vec::new();
        while cqes.is_empty() {
            ring.submit(true);
            ring.reap(&mut cqes);
        }
        assert_eq!(cqes[0].user_data(), ud);
        assert_eq!(cqes[0].res(), 4);
        let mut op = slab.reaped(&cqes[0]).last().expect("its last completion");
        assert!(slab.is_empty());
        // SAFETY: the kernel wrote 4 bytes and is done with the buffer.
        unsafe { op.buf.set_len(4) };
        assert_eq!(op.buf, b"pong");
        assert_eq!(op.progress, 0);
        // A completion naming nothing in the slab is ignored.
        assert!(matches!(slab.reaped(&cqes[0]), Reaped::Unknown));
        // SAFETY: closes the test's own pipe.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
    }
}
