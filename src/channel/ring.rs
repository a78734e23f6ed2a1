//! The lock-free single-producer single-consumer ring behind `Channel::spsc`
//! and every worker inbox.
//!
//! Design (after rtrb and Seastar's smp queues):
//! - `head` (next slot to read) is written only by the consumer and `tail`
//!   (next slot to write) only by the producer, each on its own cache line.
//!   Both are monotonically increasing counters; the slot is `index & mask`.
//!   The buffer length is a power of two, but the *capacity* is exactly what
//!   was asked for: the ring is full when `tail - head == capacity`.
//! - Each side caches the other side's index and reloads it (Acquire) only
//!   when the cache says full (producer) or empty (consumer), so in steady
//!   state a push touches only the producer's line and the slot.
//! - Publishing is one Release store per push or per batch.
//! - Closing is lossless: [`Consumer::close`] guarantees that every push that
//!   returned `Ok` is visible to the consumer afterwards and every later push
//!   fails with `Closed`. The producer marks each push with an `in_push` flag
//!   on its own line; the consumer sets `closed`, runs the heavy barrier and
//!   waits for `in_push` to clear (see `sync::barrier` for why the producer
//!   side costs only a compiler fence).
//!
//! Invariants (referred to as R1..R4 below):
//! - R1: `head <= tail <= head + capacity` at all times.
//! - R2: slots in `[head, tail)` are initialised; all others are not.
//! - R3: only the producer writes `tail` and slots in `[tail, head+capacity)`;
//!   only the consumer writes `head` and reads slots in `[head, tail)`.
//! - R4: a slot is written before the Release store of `tail` that covers it,
//!   and read after the Acquire load of `tail` that covers it (and the mirror
//!   for `head` and slot reuse).

use crate::sync::{barrier, signal::Signal, spin_hint, Arc, AtomicBool, AtomicUsize, UnsafeCell};
use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;

/// Why a push did not happen; the value is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// No free slot.
    Full(T),
    /// The consumer closed the ring or was dropped.
    Closed(T),
}

#[derive(Debug)]
struct ProducerLine {
    tail: AtomicUsize,
    /// Set while a push is between its `closed` check and its `tail` store.
    in_push: AtomicBool,
}

#[derive(Debug)]
struct Flags {
    /// Set by the consumer (close or drop); producers then fail with `Closed`.
    closed: AtomicBool,
    /// Set by the producer on drop, after its last `tail` store.
    producer_gone: AtomicBool,
}

/// The shared part of the ring. Users hold it through [`Producer`] and
/// [`Consumer`], which enforce the single-producer single-consumer rule by
/// ownership.
pub struct Ring<T> {
    head: CachePadded<AtomicUsize>,
    producer: CachePadded<ProducerLine>,
    flags: CachePadded<Flags>,
    /// Woken when data arrives or the producer leaves. Shared between all the
    /// rings a worker consumes, so one sleeping worker can watch many rings.
    consumer_signal: Arc<Signal>,
    /// Woken when space frees up or the consumer leaves.
    producer_signal: CachePadded<Signal>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    capacity: usize,
}

impl<T> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity)
            .field("head", &self.head.load(Ordering::Relaxed))
            .field("tail", &self.producer.tail.load(Ordering::Relaxed))
            .finish()
    }
}

// SAFETY: the ring moves `T`s from the producer's thread to the consumer's, so
// `T: Send` is required and sufficient; slot accesses are partitioned between
// the two handles by invariants R1-R4, so sharing `&Ring` is sound.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: see the `Send` impl; no `&T` is ever handed out across threads.
unsafe impl<T: Send> Sync for Ring<T> {}

/// Creates a ring of exactly `capacity` slots (at least 1) whose consumer is
/// woken through `consumer_signal`.
pub fn ring<T>(capacity: usize, consumer_signal: Arc<Signal>) -> (Producer<T>, Consumer<T>) {
    barrier::init();
    let capacity = capacity.max(1);
    let len = capacity.next_power_of_two();
    let slots = (0..len).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let ring = Arc::new(Ring {
        head: CachePadded::new(AtomicUsize::new(0)),
        producer: CachePadded::new(ProducerLine {
            tail: AtomicUsize::new(0),
            in_push: AtomicBool::new(false),
        }),
        flags: CachePadded::new(Flags {
            closed: AtomicBool::new(false),
            producer_gone: AtomicBool::new(false),
        }),
        consumer_signal,
        producer_signal: CachePadded::new(Signal::new()),
        slots,
        mask: len - 1,
        capacity,
    });
    (
        Producer {
            ring: ring.clone(),
            tail: 0,
            cached_head: 0,
        },
        Consumer {
            ring,
            head: 0,
            cached_tail: 0,
        },
    )
}

impl<T> Ring<T> {
    #[inline]
    fn slot(&self, index: usize) -> &UnsafeCell<MaybeUninit<T>> {
        // `mask` is `slots.len() - 1` and `slots.len()` is a power of two, so
        // this never indexes out of bounds.
        &self.slots[index & self.mask]
    }

    fn len(&self) -> usize {
        let tail = self.producer.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.capacity)
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Both handles are gone, so the indices are final (R3) and the items
        // in [head, tail) are still initialised (R2): drop them.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.producer.tail.load(Ordering::Relaxed);
        for i in head..tail {
            self.slot(i).with_mut(|p| {
                // SAFETY: R2: slots in [head, tail) hold initialised values
                // that no handle can reach any more.
                unsafe { (*p).assume_init_drop() }
            });
        }
    }
}

/// The writing end of a ring. `Send`, and only one exists per ring.
#[derive(Debug)]
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    /// Local copy of `ring.producer.tail` (we are its only writer).
    tail: usize,
    /// Last seen value of `ring.head`; may lag behind.
    cached_head: usize,
}

impl<T> Producer<T> {
    pub fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// Free slots, refreshing the cached head only when the cache says the
    /// ring is full.
    #[inline]
    fn free_slots(&mut self) -> usize {
        let cap = self.ring.capacity;
        let mut used = self.tail.wrapping_sub(self.cached_head);
        if used == cap {
            // Acquire pairs with the consumer's Release store of `head`: the
            // slots it freed are no longer read (R4).
            self.cached_head = self.ring.head.load(Ordering::Acquire);
            used = self.tail.wrapping_sub(self.cached_head);
        }
        cap - used
    }

    /// Whether the consumer has closed the ring (or was dropped).
    pub fn is_closed(&self) -> bool {
        self.ring.flags.closed.load(Ordering::Acquire)
    }

    /// Items in the ring, as seen now.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Total items ever pushed.
    pub fn pushed(&self) -> usize {
        self.tail
    }

    /// Total items ever popped, as seen now.
    pub fn popped(&self) -> usize {
        self.ring.head.load(Ordering::Acquire)
    }

    /// Enters the push critical section; `false` if the ring is closed.
    #[inline]
    fn begin_push(&self) -> bool {
        let p = &self.ring.producer;
        p.in_push.store(true, Ordering::Relaxed);
        // Pairs with the heavy barrier in `Consumer::close`: either the
        // consumer sees `in_push` and waits for us, or we see `closed`.
        barrier::light();
        if self.ring.flags.closed.load(Ordering::Relaxed) {
            p.in_push.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Publishes the local tail, leaves the critical section and wakes the
    /// consumer if it sleeps.
    #[inline]
    fn end_push(&self) {
        let p = &self.ring.producer;
        // Release: the slot writes before this store are visible to a
        // consumer that Acquire-loads this tail (R4).
        p.tail.store(self.tail, Ordering::Release);
        // Release: a closing consumer that Acquire-loads `false` here also
        // sees the tail above.
        p.in_push.store(false, Ordering::Release);
        self.ring.consumer_signal.notify();
    }

    /// Pushes one value without blocking.
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), PushError<T>> {
        if self.free_slots() == 0 {
            return Err(if self.is_closed() {
                PushError::Closed(value)
            } else {
                PushError::Full(value)
            });
        }
        if !self.begin_push() {
            return Err(PushError::Closed(value));
        }
        self.ring.slot(self.tail).with_mut(|p| {
            // SAFETY: free_slots() > 0 so slot `tail` is outside [head, tail)
            // and no longer read by the consumer (R1, R4); we are the only
            // writer of slots at `tail` (R3).
            unsafe { (*p).write(value) };
        });
        self.tail = self.tail.wrapping_add(1);
        self.end_push();
        Ok(())
    }

    /// Pushes as many items from `items` as fit, with one publication.
    /// Returns how many were pushed; items that did not fit stay in the
    /// iterator. `Err(())` if the ring is closed (nothing was taken).
    pub fn push_iter<I: Iterator<Item = T>>(&mut self, items: &mut I) -> Result<usize, ()> {
        let free = self.free_slots();
        if free == 0 {
            return if self.is_closed() { Err(()) } else { Ok(0) };
        }
        if !self.begin_push() {
            return Err(());
        }
        let start = self.tail;
        for value in items.by_ref().take(free) {
            self.ring.slot(self.tail).with_mut(|p| {
                // SAFETY: as in `try_push`: fewer than `free` slots written so
                // far, so slot `tail` is free and ours to write (R1, R3, R4).
                unsafe { (*p).write(value) };
            });
            self.tail = self.tail.wrapping_add(1);
        }
        let pushed = self.tail.wrapping_sub(start);
        self.end_push();
        Ok(pushed)
    }

    /// Parks until `ready()` holds, space frees up or the consumer leaves, or
    /// the timeout passes (spurious returns are possible: re-check).
    pub fn wait_for_space(&self, timeout: Option<std::time::Duration>) {
        let ring = &self.ring;
        let tail = self.tail;
        ring.producer_signal.wait_unless(
            || {
                ring.flags.closed.load(Ordering::Acquire)
                    || tail.wrapping_sub(ring.head.load(Ordering::Acquire)) < ring.capacity
            },
            timeout,
        );
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Release: a consumer that sees `producer_gone` also sees every tail
        // store we made before, so "gone and empty" really means drained.
        self.ring.flags.producer_gone.store(true, Ordering::Release);
        self.ring.consumer_signal.notify();
    }
}

/// The reading end of a ring. `Send`, and only one exists per ring.
#[derive(Debug)]
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    /// Local copy of `ring.head` (we are its only writer).
    head: usize,
    /// Last seen value of the producer's tail; may lag behind.
    cached_tail: usize,
}

impl<T> Consumer<T> {
    pub fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// Items ready to read, refreshing the cached tail only when the cache
    /// says the ring is empty.
    #[inline]
    pub fn available(&mut self) -> usize {
        let mut ready = self.cached_tail.wrapping_sub(self.head);
        if ready == 0 {
            // Acquire pairs with the producer's Release store of `tail` (R4).
            self.cached_tail = self.ring.producer.tail.load(Ordering::Acquire);
            ready = self.cached_tail.wrapping_sub(self.head);
        }
        ready
    }

    /// Items in the ring, as seen now.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Items this consumer knows about without touching the producer's line.
    pub fn cached_len(&self) -> usize {
        self.cached_tail.wrapping_sub(self.head)
    }

    /// Total items ever popped.
    pub fn popped(&self) -> usize {
        self.head
    }

    /// Whether the producer has been dropped. Once true, an empty ring stays
    /// empty forever.
    pub fn is_producer_gone(&self) -> bool {
        self.ring.flags.producer_gone.load(Ordering::Acquire)
    }

    /// Whether the ring is drained for good: producer gone and nothing left.
    pub fn is_finished(&mut self) -> bool {
        // Check `gone` first: its Acquire makes the final tail visible to the
        // `available()` reload that follows.
        self.is_producer_gone() && self.available() == 0
    }

    /// Whether this consumer has closed the ring.
    pub fn is_closed(&self) -> bool {
        self.ring.flags.closed.load(Ordering::Relaxed)
    }

    /// Pops one value without blocking.
    #[inline]
    pub fn try_pop(&mut self) -> Option<T> {
        if self.available() == 0 {
            return None;
        }
        let value = self.ring.slot(self.head).with_mut(|p| {
            // SAFETY: available() > 0, so `head` is in [head, tail) and the
            // slot is initialised and published (R2, R4); only we read it (R3).
            unsafe { (*p).assume_init_read() }
        });
        self.head = self.head.wrapping_add(1);
        self.publish_head();
        Some(value)
    }

    #[inline]
    fn publish_head(&self) {
        // Release: our reads of the freed slots happen before the producer
        // (Acquire on `head`) overwrites them (R4).
        self.ring.head.store(self.head, Ordering::Release);
        self.ring.producer_signal.notify();
    }

    /// Takes up to `max` items in place; the head is published once, when
    /// the returned [`Drain`] is dropped (also during unwinding, so items
    /// not yet taken stay in the ring and nothing is lost or read twice).
    #[inline]
    pub fn drain(&mut self, max: usize) -> Drain<'_, T> {
        let start = self.head;
        let end = start.wrapping_add(self.available().min(max));
        Drain {
            consumer: self,
            start,
            end,
        }
    }

    /// Closes the ring without losing anything: after `close` returns, every
    /// push that returned `Ok` is visible to this consumer (drain it), and
    /// every later push fails with `Closed`.
    pub fn close(&mut self) {
        let ring = &self.ring;
        ring.flags.closed.store(true, Ordering::Relaxed);
        // Pairs with `barrier::light` in `Producer::begin_push`.
        barrier::heavy();
        // A producer inside its critical section finishes within a few
        // instructions unless it is preempted; wait for it.
        let mut spins = 0u32;
        while ring.producer.in_push.load(Ordering::Acquire) {
            spins += 1;
            if spins < 64 {
                spin_hint();
            } else {
                #[cfg(not(loom))]
                std::thread::yield_now();
                #[cfg(loom)]
                loom::thread::yield_now();
            }
        }
        // The Acquire above (or the barrier) made the final tail visible.
        self.cached_tail = ring.producer.tail.load(Ordering::Acquire);
        // A producer blocked on a full ring must learn it is closed.
        ring.producer_signal.notify_now();
    }

    /// Parks until data arrives or the producer leaves, or the timeout
    /// passes (spurious returns are possible: re-check).
    pub fn wait_for_data(&self, timeout: Option<std::time::Duration>) {
        let ring = &self.ring;
        let head = self.head;
        ring.consumer_signal.wait_unless(
            || {
                ring.producer.tail.load(Ordering::Acquire) != head
                    || ring.flags.producer_gone.load(Ordering::Acquire)
            },
            timeout,
        );
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.ring.flags.closed.store(true, Ordering::Release);
        self.ring.producer_signal.notify_now();
    }
}

/// Items taken from a [`Consumer`] in place, one publication for the batch.
#[derive(Debug)]
pub struct Drain<'a, T> {
    consumer: &'a mut Consumer<T>,
    start: usize,
    end: usize,
}

impl<T> Drain<'_, T> {
    /// Items left in this drain.
    pub fn remaining(&self) -> usize {
        self.end.wrapping_sub(self.consumer.head)
    }
}

impl<T> Iterator for Drain<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        let c = &mut *self.consumer;
        if c.head == self.end {
            return None;
        }
        let value = c.ring.slot(c.head).with_mut(|p| {
            // SAFETY: `end` was computed from available(), so [head, end) is
            // initialised and published (R2, R4), and only we read it (R3).
            unsafe { (*p).assume_init_read() }
        });
        c.head = c.head.wrapping_add(1);
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining();
        (n, Some(n))
    }
}

impl<T> ExactSizeIterator for Drain<'_, T> {}

impl<T> Drop for Drain<'_, T> {
    fn drop(&mut self) {
        if self.consumer.head != self.start {
            self.consumer.publish_head();
        }
    }
}
