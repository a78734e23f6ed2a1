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
//! - Closing is lossless, and costs a push nothing extra: after publishing,
//!   the producer checks the consumer's signal (behind the light barrier,
//!   one load with the sleeping flag). A push that sees it open has been
//!   seen by any later close, and is consumed. A push that sees it closed
//!   *settles*, without waiting for anyone: if its own ring's `closed` flag
//!   is still clear (a sibling ring sharing the signal was closed), the
//!   ring's own close will still see the push (the same barrier pairing),
//!   so it is delivered. Otherwise the ring's *cut* decides: the first index
//!   the consumer will never read. Whichever side sets it first (one
//!   compare-exchange, on the cold path only) decides it: a closing consumer
//!   proposes the tail it reloaded after the heavy barrier, a settling
//!   producer proposes `max(first, head)`, where `head` (published by the
//!   consumer before it set `closed`) covers everything it has read. The
//!   producer takes back `[max(cut, first), tail)` and reports
//!   `Closed(value)` for those; the consumer reads nothing at or past the
//!   cut. Either way the caller learns the truth at once, and nothing is
//!   lost or read twice. (See `sync::barrier` for why the producer side of
//!   the pairing costs only a compiler fence.)
//!
//! Invariants (referred to as R1..R6 below):
//! - R1: `head <= tail <= head + capacity` at all times.
//! - R2: slots in `[head, tail)` are initialised; all others are not.
//! - R3: only the producer writes `tail` and slots in `[tail, head+capacity)`;
//!   only the consumer writes `head` and reads slots in `[head, tail)`.
//! - R4: a slot is written before the Release store of `tail` that covers it,
//!   and read after the Acquire load of `tail` that covers it (and the mirror
//!   for `head` and slot reuse).
//! - R5: once the cut is decided, the consumer reads no slot at or past it,
//!   and the producer reads back (takes) only slots at or past it; after a
//!   settle, `tail <= cut`.
//! - R6: the consumer publishes its local `head` (everything it has read,
//!   including items taken by a leaked [`Drain`]) before it sets `closed`
//!   and before it is dropped, so `Ring::drop` and a settling producer never
//!   treat a slot that was read as still initialised.

use crate::sync::{Arc, AtomicBool, AtomicUsize, UnsafeCell, barrier, signal::Signal};
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

/// `Flags::cut` before either side has decided it.
const UNDECIDED: usize = usize::MAX;

#[derive(Debug)]
struct Flags {
    /// Set by the consumer (close or drop), after publishing its `head`
    /// (R6); producers then fail with `Closed`.
    closed: AtomicBool,
    /// Set by the producer on drop, after its last `tail` store.
    producer_gone: AtomicBool,
    /// The first index the consumer will never read, once closed; decided
    /// once by whichever side swaps it from `UNDECIDED` first (R5).
    cut: AtomicUsize,
}

/// The shared part of the ring. Users hold it through [`Producer`] and
/// [`Consumer`], which enforce the single-producer single-consumer rule by
/// ownership.
pub struct Ring<T> {
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    flags: CachePadded<Flags>,
    /// Woken when data arrives or the producer leaves. Shared between all the
    /// rings a worker consumes, so one sleeping worker can watch many rings.
    consumer_signal: Arc<Signal>,
    /// Woken when space frees up or the consumer leaves.
    producer_signal: Signal,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    capacity: usize,
    /// Slots per cache line and how many slots of the first line lie before
    /// slot 0, where the slots tile the lines exactly (`(1, 0)` otherwise):
    /// see [`Consumer::line_start`].
    line: (usize, usize),
}

/// The cache line size the slot geometry assumes.
const LINE: usize = 64;

/// `(slots per line, slots of the first line before slot 0)` for slots of
/// `T` starting at address `base`, in a buffer of `len` slots; `(1, 0)` when
/// slots do not tile lines exactly (a size that does not divide the line,
/// a buffer not aligned to a slot boundary) or the buffer is under a line.
fn line_geometry<T>(base: usize, len: usize) -> (usize, usize) {
    let size = std::mem::size_of::<T>();
    if size == 0 || size > LINE / 2 || LINE % size != 0 || (base % LINE) % size != 0 {
        return (1, 0);
    }
    let per_line = LINE / size;
    if len < per_line {
        return (1, 0);
    }
    (per_line, (base % LINE) / size)
}

impl<T> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity)
            .field("head", &self.head.load(Ordering::Relaxed))
            .field("tail", &self.tail.load(Ordering::Relaxed))
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
    let slots: Box<[UnsafeCell<MaybeUninit<T>>]> = (0..len)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let line = line_geometry::<T>(slots.as_ptr() as usize, len);
    let ring = Arc::new(Ring {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        flags: CachePadded::new(Flags {
            closed: AtomicBool::new(false),
            producer_gone: AtomicBool::new(false),
            cut: AtomicUsize::new(UNDECIDED),
        }),
        consumer_signal,
        producer_signal: Signal::new(),
        slots,
        mask: len - 1,
        capacity,
        line,
    });
    (
        Producer {
            ring: ring.clone(),
            tail: 0,
            cached_head: 0,
            task_waiting: false,
        },
        Consumer {
            ring,
            head: 0,
            cached_tail: 0,
            cut: None,
        },
    )
}

impl<T> Ring<T> {
    #[inline]
    fn slot(&self, index: usize) -> &UnsafeCell<MaybeUninit<T>> {
        // SAFETY: `mask` is `slots.len() - 1` and `slots.len()` is a power of
        // two, so `index & mask` is always in bounds.
        unsafe { self.slots.get_unchecked(index & self.mask) }
    }

    /// What a producer at `tail` waits for: a free slot, or the ring
    /// closed. Acquire on `head` pairs with the consumer's Release store
    /// (R4); on the flags, with the close.
    fn room_or_closed(&self, tail: usize) -> bool {
        (self.flags.closed.load(Ordering::Acquire) || self.consumer_signal.is_closed())
            || tail.wrapping_sub(self.head.load(Ordering::Acquire)) < self.capacity
    }

    fn len(&self) -> usize {
        let tail = self.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.capacity)
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Both handles are gone, so the indices are final (R3, R6) and the
        // items in [head, tail) are still initialised (R2): drop them. If one
        // destructor panics, the guard drops the rest while unwinding (a
        // second panic aborts, as for a `Vec`).
        struct Rest<'a, T> {
            ring: &'a Ring<T>,
            next: usize,
            end: usize,
        }
        impl<T> Rest<'_, T> {
            fn drop_all(&mut self) {
                while self.next != self.end {
                    let i = self.next;
                    self.next = i.wrapping_add(1);
                    self.ring.slot(i).with_mut(|p| {
                        // SAFETY: R2: slots in [head, tail) hold initialised
                        // values that no handle can reach any more, and
                        // `next` moved past `i` first, so none drops twice.
                        unsafe { (*p).assume_init_drop() }
                    });
                }
            }
        }
        impl<T> Drop for Rest<'_, T> {
            fn drop(&mut self) {
                self.drop_all();
            }
        }
        let mut rest = Rest {
            ring: self,
            next: self.head.load(Ordering::Relaxed),
            end: self.tail.load(Ordering::Relaxed),
        };
        rest.drop_all();
    }
}

/// The writing end of a ring. `Send`, and only one exists per ring.
#[derive(Debug)]
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    /// Local copy of `ring.tail` (we are its only writer).
    tail: usize,
    /// Last seen value of `ring.head`; may lag behind.
    cached_head: usize,
    /// Whether a task's waker is registered with the producer signal
    /// ([`Producer::poll_reserve`] returned `Pending`), so that finishing or
    /// cancelling the wait withdraws it.
    task_waiting: bool,
}

impl<T> Producer<T> {
    /// Slots in the ring.
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
        self.ring.flags.closed.load(Ordering::Acquire) || self.ring.consumer_signal.is_closed()
    }

    /// Total items ever pushed.
    pub fn pushed(&self) -> usize {
        self.tail
    }

    /// Total items ever popped, as seen now.
    pub fn popped(&self) -> usize {
        self.ring.head.load(Ordering::Acquire)
    }

    /// Publishes the local tail and wakes the consumer if it sleeps. Returns
    /// `true` if the ring was closed meanwhile: the caller must settle the
    /// items it just published.
    #[inline(always)]
    fn publish(&self) -> bool {
        let ring = &*self.ring;
        // Release: the slot writes before this store are visible to a
        // consumer that Acquire-loads this tail (R4).
        ring.tail.store(self.tail, Ordering::Release);
        // Pairs with the heavy barrier in `Consumer::close`: either the
        // closing consumer sees this tail, or we see `closed` below. The
        // same barrier orders the store before the sleeping-flag load; both
        // bits are in one word of the consumer's signal.
        barrier::light();
        ring.consumer_signal.notify_after_barrier()
    }

    /// Decides the fate of items `[first, self.tail)` published while the
    /// consumer's signal was closed, without waiting: returns (in order) the
    /// ones the consumer will never read, after rolling `tail` back over
    /// them (R5).
    #[cold]
    #[inline(never)]
    fn settle(&mut self, first: usize) -> Vec<T> {
        let ring = &*self.ring;
        // A sibling ring sharing the signal was closed, not ours: our own
        // close (flag store, heavy barrier, tail reload) is still to come
        // and will see this push, which pairs with the light barrier in
        // `publish` as for the signal. Delivered.
        if !ring.flags.closed.load(Ordering::Acquire) {
            return Vec::new();
        }
        // Acquire (via `closed`): the consumer published its head before it
        // set `closed` (R6), so `head` covers every slot it has read.
        let head = ring.head.load(Ordering::Acquire);
        let proposal = head.max(first);
        let cut = match ring.flags.cut.compare_exchange(
            UNDECIDED,
            proposal,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => proposal,
            Err(decided) => decided,
        };
        let keep = cut.max(first);
        let back: Vec<T> = (keep..self.tail)
            .map(|i| {
                ring.slot(i).with_mut(|p| {
                    // SAFETY: `i` is in [cut, tail): published by us (R2),
                    // and the consumer reads nothing at or past the cut (R5),
                    // so the value is ours to take, exactly once.
                    unsafe { (*p).assume_init_read() }
                })
            })
            .collect();
        // Roll back so the ring's drop does not drop the values again (R2).
        self.tail = keep;
        ring.tail.store(keep, Ordering::Release);
        back
    }

    /// Pushes one value without blocking.
    // Always inlined: as a call, the producer's local `tail` lives in memory
    // and every push costs one more store, which queues behind the slot
    // stores waiting for their cache lines (measured: about half the
    // throughput).
    #[inline(always)]
    pub fn try_push(&mut self, value: T) -> Result<(), PushError<T>> {
        match self.reserve() {
            Ok(()) => self.push_reserved(value).map_err(PushError::Closed),
            Err(true) => Err(PushError::Closed(value)),
            Err(false) => Err(PushError::Full(value)),
        }
    }

    /// Whether a push can go ahead now: a free slot and an open ring. After
    /// `Ok`, [`Producer::push_reserved`] cannot fail for lack of space;
    /// `Err(closed)` says whether the ring is closed (else it is full).
    #[inline(always)]
    pub fn reserve(&mut self) -> Result<(), bool> {
        if self.ring.consumer_signal.is_closed() {
            return Err(true);
        }
        if self.free_slots() == 0 {
            return Err(self.is_closed());
        }
        Ok(())
    }

    /// Pushes into the slot [`Producer::reserve`] found. Build the value
    /// only after reserving: with no "full" path that must hand the value
    /// back, it is written straight into the slot instead of through a
    /// temporary (measured: a worker handle's send loop went from 10-13 to
    /// 15-33 Mmsg/s).
    /// `Err` returns the value if the ring was closed meanwhile and the
    /// consumer never took it.
    #[inline(always)]
    pub fn push_reserved(&mut self, value: T) -> Result<(), T> {
        debug_assert!(self.tail.wrapping_sub(self.cached_head) < self.ring.capacity);
        let index = self.tail;
        self.ring.slot(index).with_mut(|p| {
            // SAFETY: `reserve` saw a free slot, so slot `tail` is outside
            // [head, tail) and no longer read by the consumer (R1, R4); we
            // are the only writer of slots at `tail` (R3).
            unsafe { (*p).write(value) };
        });
        self.tail = index.wrapping_add(1);
        if self.publish() {
            if let Some(back) = self.settle(index).pop() {
                return Err(back);
            }
        }
        Ok(())
    }

    /// Pushes as many items from `items` as fit, with one publication.
    /// Returns how many were pushed; items that did not fit stay in the
    /// iterator. If the ring is closed, `Err` holds the items taken from the
    /// iterator that were not delivered (possibly none); everything taken
    /// before them was delivered.
    #[inline]
    pub fn push_iter<I: Iterator<Item = T>>(&mut self, items: &mut I) -> Result<usize, Vec<T>> {
        let cap = self.ring.capacity;
        let want = items.size_hint().0.clamp(1, cap);
        let mut free = cap - self.tail.wrapping_sub(self.cached_head);
        if free < want {
            // One reload when the cache promises less room than the batch
            // wants (not only when it says full): a full batch costs one
            // line transfer, many partial ones cost many. Never reload twice
            // per call: a producer polling a full ring would otherwise keep
            // stealing the head line from the consumer that writes it.
            self.cached_head = self.ring.head.load(Ordering::Acquire);
            free = cap - self.tail.wrapping_sub(self.cached_head);
        }
        if self.ring.consumer_signal.is_closed() {
            return Err(Vec::new());
        }
        if free == 0 {
            return Ok(0);
        }
        let start = self.tail;
        // Hoisted out of the loop: the slot writes below go through raw
        // pointers, so the compiler would otherwise reload these each time.
        let (base, mask) = (self.ring.slots.as_ptr(), self.ring.mask);
        let mut tail = start;
        for _ in 0..free {
            let Some(value) = items.next() else { break };
            // SAFETY: `tail & mask` is in bounds (mask = len - 1, len a power
            // of two) and the ring, which owns the slots, outlives this call.
            let slot = unsafe { &*base.add(tail & mask) };
            slot.with_mut(|p| {
                // SAFETY: as in `try_push`: fewer than `free` slots written so
                // far, so slot `tail` is free and ours to write (R1, R3, R4).
                unsafe { (*p).write(value) };
            });
            tail = tail.wrapping_add(1);
        }
        self.tail = tail;
        let pushed = tail.wrapping_sub(start);
        if pushed > 0 && self.publish() {
            let back = self.settle(start);
            if !back.is_empty() {
                return Err(back);
            }
        }
        Ok(pushed)
    }

    /// [`Producer::reserve`] for a task: `Ready(Ok(()))` once a slot is free
    /// (then [`Producer::push_reserved`] cannot fail for lack of space),
    /// `Ready(Err(()))` once the ring is closed. `Pending` registers the
    /// task's waker with the producer signal, which the consumer wakes when
    /// it frees a slot, closes or leaves; the hot path pays nothing for it
    /// (the consumer's notify is the same one load of the signal word).
    /// A task that stops polling before `Ready` (a dropped future) calls
    /// [`Producer::cancel_reserve`].
    pub fn poll_reserve(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ()>> {
        use std::task::Poll;
        loop {
            match self.reserve() {
                Ok(()) => {
                    self.cancel_reserve();
                    return Poll::Ready(Ok(()));
                }
                Err(true) => {
                    self.cancel_reserve();
                    return Poll::Ready(Err(()));
                }
                Err(false) => {}
            }
            let ring = &*self.ring;
            let tail = self.tail;
            let ready = ring
                .producer_signal
                .register_task(|| ring.room_or_closed(tail), cx.waker());
            if !ready {
                self.task_waiting = true;
                return Poll::Pending;
            }
            // Room (or a close) appeared after `reserve` looked: look again.
            self.task_waiting = false;
        }
    }

    /// Withdraws the waker [`Producer::poll_reserve`] registered, if any.
    /// Cheap when none is: a future calls it on drop.
    #[inline]
    pub fn cancel_reserve(&mut self) {
        if self.task_waiting {
            self.task_waiting = false;
            self.ring.producer_signal.cancel_task();
        }
    }

    /// Parks until `ready()` holds, space frees up or the consumer leaves, or
    /// the timeout passes (spurious returns are possible: re-check).
    pub fn wait_for_space(&self, timeout: Option<std::time::Duration>) {
        let ring = &self.ring;
        let tail = self.tail;
        ring.producer_signal
            .wait_unless(|| ring.room_or_closed(tail), timeout);
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // A forgotten future's waker stays with the ring otherwise.
        self.cancel_reserve();
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
    /// Last seen value of the producer's tail; may lag behind. Once closed,
    /// the cut (R5).
    cached_tail: usize,
    /// The decided cut, once [`Consumer::close`] ran: never read past it.
    cut: Option<usize>,
}

impl<T> Consumer<T> {
    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.ring.capacity
    }

    /// Items ready to read, refreshing the cached tail only when the cache
    /// says the ring is empty.
    #[inline]
    pub fn available(&mut self) -> usize {
        let mut ready = self.cached_tail.wrapping_sub(self.head);
        if ready == 0 {
            self.reload_tail();
            ready = self.cached_tail.wrapping_sub(self.head);
        }
        ready
    }

    /// Items ready to read, after reloading the producer's tail (one load of
    /// its line, whatever the cache says).
    #[inline]
    pub fn refresh(&mut self) -> usize {
        self.reload_tail();
        self.cached_tail.wrapping_sub(self.head)
    }

    /// The index of the first slot in the cache line that holds slot
    /// `index` (`index` itself where slots do not tile lines). A consumer
    /// that reads only below `line_start(tail)` leaves the producer the
    /// line it is writing.
    #[inline]
    pub fn line_start(&self, index: usize) -> usize {
        let (per_line, phase) = self.ring.line;
        // `len` is a multiple of `per_line` (both powers of two, checked in
        // `line_geometry`), so index counters and slot addresses agree on
        // where lines begin, across wrap-arounds.
        (index.wrapping_add(phase) & !(per_line - 1)).wrapping_sub(phase)
    }

    /// Refreshes the cached tail: the producer's published tail while open,
    /// the cut once closed (R5).
    #[inline(always)]
    fn reload_tail(&mut self) {
        if self.cut.is_none() {
            // Acquire pairs with the producer's Release store of `tail` (R4).
            self.cached_tail = self.ring.tail.load(Ordering::Acquire);
        }
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

    /// The producer's published tail, as seen now (Acquire): every push
    /// that returned before this load is below it.
    pub fn tail_now(&self) -> usize {
        self.ring.tail.load(Ordering::Acquire)
    }

    /// Identifies the ring (stable while this consumer lives).
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.ring) as *const () as usize
    }

    /// Whether the producer has been dropped. Once true, an empty ring stays
    /// empty forever.
    pub fn is_producer_gone(&self) -> bool {
        self.ring.flags.producer_gone.load(Ordering::Acquire)
    }

    /// Whether the ring is drained for good: producer gone (or the ring
    /// closed) and nothing left.
    pub fn is_finished(&mut self) -> bool {
        // Check `gone` first: its Acquire makes the final tail visible to the
        // `available()` reload that follows.
        (self.cut.is_some() || self.is_producer_gone()) && self.available() == 0
    }

    /// Whether this consumer has closed its ring.
    pub fn is_closed(&self) -> bool {
        self.cut.is_some()
    }

    /// Pops one value without blocking (always inlined, as `try_push`).
    #[inline(always)]
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
        // Refresh the cached tail when it promises less than asked for: a
        // full batch costs one line transfer, many partial ones cost many.
        if self.cached_tail.wrapping_sub(start) < max {
            self.reload_tail();
        }
        let end = start.wrapping_add(self.cached_tail.wrapping_sub(start).min(max));
        let (base, mask) = (self.ring.slots.as_ptr(), self.ring.mask);
        // Claim the whole range up front; drop gives back what was not taken.
        // A leaked drain thus leaks its untaken items instead of letting them
        // be read twice (the `Vec::drain` trade-off), and the local head
        // covers the items it did take: close and drop publish it (R6), so
        // they are never dropped again.
        self.head = end;
        Drain {
            consumer: self,
            base,
            mask,
            start,
            pos: start,
            end,
        }
    }

    /// Closes the ring without losing anything: after `close` returns, every
    /// push that has returned `Ok` is visible to this consumer (drain it),
    /// and every other push, racing or later, hands its value back with
    /// `Closed` at once. A worker's rings share one signal, so closing one
    /// makes pushes to all of them fail fast (a stopping worker closes them
    /// all anyway); pushes already in flight to a sibling ring are still
    /// delivered there. Idempotent.
    pub fn close(&mut self) {
        if self.cut.is_some() {
            return;
        }
        let ring = &self.ring;
        // R6: everything read so far (a leaked drain included) is covered by
        // the published head before `closed` is seen.
        ring.head.store(self.head, Ordering::Release);
        ring.flags.closed.store(true, Ordering::Release);
        ring.consumer_signal.close();
        // Pairs with `barrier::light` in `Producer::publish`: a push whose
        // tail this reload misses sees `closed` and settles.
        barrier::heavy();
        let seen = ring.tail.load(Ordering::Acquire);
        let cut = match ring.flags.cut.compare_exchange(
            UNDECIDED,
            seen,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => seen,
            // A settling producer decided first; its Release (AcqRel swap)
            // made the slots below its proposal visible to this Acquire.
            Err(decided) => decided,
        };
        self.cut = Some(cut);
        self.cached_tail = cut;
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
                ring.tail.load(Ordering::Acquire) != head
                    || ring.flags.producer_gone.load(Ordering::Acquire)
            },
            timeout,
        );
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        let ring = &self.ring;
        // R6: the final head, covering a leaked drain's items, before
        // `closed`: `Ring::drop` and settling producers read it.
        ring.head.store(self.head, Ordering::Release);
        let flags = &ring.flags;
        flags.closed.store(true, Ordering::Release);
        // A live producer must learn of the drop through the signal. With no
        // producer left (a worker dropping a drained ring of a departed
        // sender) the shared signal must stay open for the other rings.
        if self.cut.is_none() && !flags.producer_gone.load(Ordering::Acquire) {
            ring.consumer_signal.close();
        }
        // No cut is proposed here: this consumer reads nothing more, so a
        // settling producer's `max(first, head)` is exact, and a push that
        // saw the ring open stays in it and drops with it.
        ring.producer_signal.notify_now();
    }
}

/// Items taken from a [`Consumer`] in place, one publication for the batch.
#[derive(Debug)]
pub struct Drain<'a, T> {
    consumer: &'a mut Consumer<T>,
    /// The ring's slots, cached so each item costs no pointer chasing; valid
    /// while `consumer` (which keeps the ring alive) is borrowed.
    base: *const UnsafeCell<MaybeUninit<T>>,
    mask: usize,
    start: usize,
    /// Next index to read; becomes `consumer.head` on drop.
    pos: usize,
    end: usize,
}

impl<T> Drain<'_, T> {
    /// Items left in this drain.
    pub fn remaining(&self) -> usize {
        self.end.wrapping_sub(self.pos)
    }

    /// The ring index of the next item `next` returns (the count of items
    /// pushed before it): what a producer's [`Producer::pushed`] was when it
    /// pushed that item.
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<T> Iterator for Drain<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        if self.pos == self.end {
            return None;
        }
        // SAFETY: `pos & mask` is in bounds, and `base` points into the ring
        // that the borrowed consumer keeps alive for the drain's lifetime.
        let slot = unsafe { &*self.base.add(self.pos & self.mask) };
        let value = slot.with_mut(|p| {
            // SAFETY: `end` was computed from available(), so [pos, end) is
            // initialised and published (R2, R4), and only we read it (R3).
            unsafe { (*p).assume_init_read() }
        });
        self.pos = self.pos.wrapping_add(1);
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
        self.consumer.head = self.pos;
        if self.pos != self.start {
            self.consumer.publish_head();
        }
    }
}

#[cfg(all(test, not(loom)))]
#[path = "ring_tests.rs"]
mod tests;
