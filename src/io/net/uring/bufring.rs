//! Provided receive buffers: a ring of buffer descriptors shared with the
//! kernel (`IORING_REGISTER_PBUF_RING`), from which multishot receives take
//! a buffer per completion, so a connection holds no receive buffer of its
//! own while it waits.
//!
//! Ownership: the descriptor ring and the buffers are one allocation each,
//! owned here. A buffer is the kernel's while its descriptor is in the ring
//! (published by the tail); a completion naming it hands it back to us,
//! [`BufRing::take`] copies the bytes out and only then publishes it again.
//! The memory is freed only by [`BufRing::free`], which the worker calls
//! once nothing is in flight (after unregistering); a ring dropped any
//! other way is leaked, since a receive in flight could still write into
//! it.

use crate::io::kernel::KernelRing;
use io_uring::types::BufRingEntry;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// A registered ring of `count` buffers of `size` bytes, group `bgid`.
pub(super) struct BufRing {
    /// `count` descriptors, page aligned; the tail lives in entry 0's
    /// `resv` field (the kernel's layout).
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    /// `count * size` bytes of buffers.
    mem: NonNull<u8>,
    mem_layout: Layout,
    count: u16,
    size: usize,
    bgid: u16,
    /// Our copy of the tail (the kernel only reads it).
    tail: u16,
}

impl BufRing {
    /// Allocates, registers and fills a ring of `count` (a power of two,
    /// at most 32,768) buffers of `size` bytes; `None` where the kernel
    /// has no provided-buffer rings (before 5.19) or memory is short.
    pub(super) fn new(kring: &KernelRing, bgid: u16, count: u16, size: usize) -> Option<Self> {
        if !count.is_power_of_two() || count > 32768 || size == 0 || size > u32::MAX as usize {
            return None;
        }
        let ring_layout = Layout::array::<BufRingEntry>(usize::from(count))
            .ok()?
            .align_to(4096)
            .ok()?;
        let mem_layout = Layout::from_size_align(usize::from(count).checked_mul(size)?, 64).ok()?;
        // SAFETY: both layouts have a non-zero size (count and size are at
        // least 1); a null result is handled.
        let ring = NonNull::new(unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>())?;
        // SAFETY: as above.
        let Some(mem) = NonNull::new(unsafe { alloc_zeroed(mem_layout) }) else {
            // SAFETY: allocated just above with this layout, never shared.
            unsafe { dealloc(ring.as_ptr().cast(), ring_layout) };
            return None;
        };
        let mut this = Self {
            ring,
            ring_layout,
            mem,
            mem_layout,
            count,
            size,
            bgid,
            tail: 0,
        };
        // SAFETY: the descriptor array is `count` entries of our own memory,
        // which stays allocated until `free` unregisters it first (or is
        // leaked).
        let registered = unsafe {
            kring
                .submitter()
                .register_buf_ring_with_flags(ring.as_ptr() as u64, count, bgid, 0)
        };
        if registered.is_err() {
            // SAFETY: never registered, so only we know these allocations.
            unsafe { this.dealloc() };
            std::mem::forget(this);
            return None;
        }
        for bid in 0..count {
            this.push(bid);
        }
        this.publish();
        Some(this)
    }

    /// The buffer group receives name.
    pub(super) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Writes buffer `bid`'s descriptor at the tail (not yet published).
    fn push(&mut self, bid: u16) {
        let mask = self.count - 1;
        let slot = usize::from(self.tail & mask);
        // SAFETY: `slot < count`, inside the descriptor array; the entry at
        // the tail is not visible to the kernel until `publish`.
        let entry = unsafe { &mut *self.ring.as_ptr().add(slot) };
        // In bounds: `bid < count`, so the buffer lies inside `mem`.
        let addr = self.mem.as_ptr() as usize + usize::from(bid) * self.size;
        entry.set_addr(addr as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the pushed descriptors visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field of entry 0, inside our array, is a u16
        // the kernel reads with acquire semantics; it is naturally aligned.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        // Release: the descriptors written in `push` are visible before the
        // kernel sees the new tail.
        tail.store(self.tail, Ordering::Release);
    }

    /// The `len` bytes the kernel received into buffer `bid`, copied out;
    /// the buffer goes back to the kernel. `None` for an id out of range.
    pub(super) fn take(&mut self, bid: u16, len: usize) -> Option<Vec<u8>> {
        if bid >= self.count {
            return None;
        }
        let len = len.min(self.size);
        // SAFETY: a completion handed buffer `bid` back to us: the kernel
        // wrote `len` bytes at its start and will not touch it until it is
        // published again below; it lies inside `mem`.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.mem.as_ptr().add(usize::from(bid) * self.size), len)
        };
        let data = bytes.to_vec();
        self.push(bid);
        self.publish();
        Some(data)
    }

    /// Unregisters the ring and frees its memory. Call only once no
    /// receive that could pick a buffer is in flight.
    pub(super) fn free(mut self, kring: &KernelRing) {
        if kring.submitter().unregister_buf_ring(self.bgid).is_err() {
            // Still the kernel's: leak it.
            std::mem::forget(self);
            return;
        }
        // SAFETY: unregistered, and nothing in flight: only we know the
        // memory now.
        unsafe { self.dealloc() };
        std::mem::forget(self);
    }

    /// # Safety
    /// The kernel must not know the memory (never registered, or
    /// unregistered with nothing in flight).
    unsafe fn dealloc(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the caller
        // guarantees nobody else uses them.
        unsafe {
            dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            dealloc(self.mem.as_ptr(), self.mem_layout);
        }
    }
}

impl Drop for BufRing {
    /// Dropped without [`free`](BufRing::free): the kernel may still write
    /// into the buffers, so they are leaked.
    fn drop(&mut self) {
        tracing::warn!(
            bytes = self.mem_layout.size(),
            "provided receive buffers leaked: dropped while they could be in use"
        );
    }
}
