//! One sender's way into one worker: a ring whose slots hold payloads only,
//! and beside it a lane for the little that some messages carry besides
//! (the routing key a worker asked for, the send time, the reply slot).
//!
//! **Slot layout.** A ring slot is exactly `M`: a `u64` message moves 8
//! bytes between cores, eight to a cache line, as in a raw ring. The
//! metadata of a message that has any goes into the lane, an ordered list
//! of `(position, Meta)` under a lock, where `position` is the ring index
//! the payload takes (the producer's [`Producer::pushed`] before the push).
//! A message without metadata touches neither the lock nor the lane's
//! counter, on either side.
//!
//! Invariants (L1-L4, referred to by the code):
//! - L1: the producer adds a message's entry (and counts it in `pending`)
//!   before it writes the payload's slot, so before the Release store of the
//!   ring's tail that publishes it (R4). A consumer that read that tail
//!   (Acquire) sees the count and, under the lock, the entry.
//! - L2: entries are in position order (one producer, increasing positions),
//!   and the consumer takes an entry exactly when it takes the payload at
//!   its position, so the front entry, if any, is at or after the next
//!   position the consumer reads.
//! - L3: a payload the ring hands back (closed: `Producer::push_reserved`
//!   returns it, R5) takes its entry back with it, so no entry outlives its
//!   payload in the lane and L2 holds after a close.
//! - L4: `pending` is the number of entries; the consumer reads it once per
//!   batch, after the tail it drains to, and locks only when it is not
//!   zero. It is written only for messages with metadata.
//!
//! Per-sender FIFO, the flush snapshot and the lossless close are the
//! ring's (R1-R6, `channel/ring.rs`): the lane adds no ordering of its own.
//!
//! **Temporal slipping.** A worker that keeps up with its sender would
//! otherwise read each cache line of slots while the sender is still
//! writing it, and every later write to that line would first take it
//! back from the worker's cache: both sides stall on the same lines, a few
//! messages apart. So while the sender is moving (its tail changed since
//! the worker's last look), [`Mailbox::ready`] offers only the slots below
//! the line the tail is in; once the tail stands still for one look, or
//! the ring is closed, it offers everything. A message is therefore never
//! held back for more than one poll of an idle sender's ring. (The idea is
//! FastForward's, Giacomoni et al., PPoPP 2008: keep the consumer a line
//! or more behind the producer.)

use super::envelope::{Envelope, Meta, Wire};
use crate::channel::ring::{self, Consumer, Drain, Producer};
use crate::sync::{Arc, AtomicUsize, Mutex, signal::Signal};
use crossbeam_utils::CachePadded;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

/// The metadata of the messages in flight on one ring.
pub(crate) struct Lane<R> {
    /// Entries in `entries` (L4), on its own line: written only for messages
    /// with metadata, read once per batch.
    pending: CachePadded<AtomicUsize>,
    entries: Mutex<VecDeque<(usize, Meta<R>)>>,
}

impl<R> Lane<R> {
    fn new() -> Self {
        Self {
            pending: CachePadded::new(AtomicUsize::new(0)),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds the entry of the payload about to take ring index `pos` (L1).
    fn push(&self, pos: usize, meta: Meta<R>) {
        let mut entries = self.entries.lock();
        entries.push_back((pos, meta));
        // Relaxed: the ring's Release store of the tail, after this, is what
        // a consumer synchronises with (L1).
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back the entry of the payload at `pos`, which the ring handed
    /// back (L3): the last one, since `pos` was the newest position.
    #[cold]
    fn take_back(&self, pos: usize) -> Option<Meta<R>> {
        let mut entries = self.entries.lock();
        match entries.back() {
            Some(&(p, _)) if p == pos => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                entries.pop_back().map(|(_, m)| m)
            }
            _ => None,
        }
    }

    /// The position of the front entry, if there is one (L4: one load
    /// unless there is).
    #[inline]
    fn front(&self) -> Option<usize> {
        // Acquire is not needed for the count itself (the ring's tail load
        // ordered it, L1), but costs nothing on x86 and keeps the argument
        // local.
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.front_locked()
    }

    #[cold]
    #[inline(never)]
    fn front_locked(&self) -> Option<usize> {
        self.entries.lock().front().map(|&(p, _)| p)
    }

    /// Takes the entry at `pos` (the front, by L2) and returns it with the
    /// position of the entry after it.
    #[cold]
    #[inline(never)]
    fn take(&self, pos: usize) -> (Option<Meta<R>>, Option<usize>) {
        let mut entries = self.entries.lock();
        let meta = match entries.front() {
            Some(&(p, _)) if p == pos => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                entries.pop_front().map(|(_, m)| m)
            }
            _ => None,
        };
        debug_assert!(meta.is_some(), "L2: the front entry is the next payload's");
        (meta, entries.front().map(|&(p, _)| p))
    }

    /// Entries waiting (tests and loom models).
    #[cfg(any(test, loom))]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

/// A new ring of `capacity` payload slots into a worker woken through
/// `signal`, with its lane.
pub(crate) fn mailbox<M, R>(
    capacity: usize,
    signal: Arc<Signal>,
) -> (MailSender<M, R>, Mailbox<M, R>) {
    let (ring, consumer) = ring::ring(capacity, signal);
    let lane = Arc::new(Lane::new());
    (
        MailSender {
            ring,
            lane: lane.clone(),
        },
        Mailbox {
            ring: consumer,
            lane,
            seen_tail: 0,
            moving: false,
        },
    )
}

/// The sending end: one producer thread's ring into one worker.
pub(crate) struct MailSender<M, R = ()> {
    ring: Producer<M>,
    lane: Arc<Lane<R>>,
}

/// Why a push did not happen; the message is handed back whole.
pub(crate) enum MailError<M, R> {
    Full(Wire<M, R>),
    Closed(Wire<M, R>),
}

impl<M, R> MailSender<M, R> {
    /// Whether a push can go ahead now (see [`Producer::reserve`]).
    #[inline(always)]
    pub(crate) fn reserve(&mut self) -> Result<(), bool> {
        self.ring.reserve()
    }

    /// Pushes into the slot [`MailSender::reserve`] found; `Err` hands the
    /// message back if the ring was closed meanwhile.
    #[inline(always)]
    pub(crate) fn push_reserved(&mut self, wire: Wire<M, R>) -> Result<(), Wire<M, R>> {
        match wire.split() {
            (payload, None) => self
                .ring
                .push_reserved(payload)
                .map_err(|p| Wire::join(p, None)),
            (payload, Some(meta)) => self.push_with_meta(payload, meta),
        }
    }

    /// Pushes a payload without metadata into the slot
    /// [`MailSender::reserve`] found; `Err` hands it back if the ring was
    /// closed meanwhile.
    #[inline(always)]
    pub(crate) fn push_payload(&mut self, payload: M) -> Result<(), M> {
        self.ring.push_reserved(payload)
    }

    #[inline(never)]
    fn push_with_meta(&mut self, payload: M, meta: Meta<R>) -> Result<(), Wire<M, R>> {
        let pos = self.ring.pushed();
        self.lane.push(pos, meta); // L1: before the slot's publication.
        self.ring.push_reserved(payload).map_err(|p| {
            let meta = self.lane.take_back(pos); // L3
            Wire::join(p, meta)
        })
    }

    /// Pushes without blocking.
    #[inline(always)]
    pub(crate) fn try_push(&mut self, wire: Wire<M, R>) -> Result<(), MailError<M, R>> {
        match self.reserve() {
            Ok(()) => self.push_reserved(wire).map_err(MailError::Closed),
            Err(true) => Err(MailError::Closed(wire)),
            Err(false) => Err(MailError::Full(wire)),
        }
    }

    /// Pushes as many payloads (messages without metadata) as fit, with one
    /// publication (see [`Producer::push_iter`]).
    #[inline]
    pub(crate) fn push_payloads<I: Iterator<Item = M>>(
        &mut self,
        items: &mut I,
    ) -> Result<usize, Vec<M>> {
        self.ring.push_iter(items)
    }

    /// See [`Producer::poll_reserve`].
    pub(crate) fn poll_reserve(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ()>> {
        self.ring.poll_reserve(cx)
    }

    /// See [`Producer::cancel_reserve`].
    pub(crate) fn cancel_reserve(&mut self) {
        self.ring.cancel_reserve();
    }

    /// See [`Producer::wait_for_space`].
    pub(crate) fn wait_for_space(&self, timeout: Option<std::time::Duration>) {
        self.ring.wait_for_space(timeout);
    }

    /// The lane (tests and loom models).
    #[cfg(any(test, loom))]
    pub(crate) fn lane(&self) -> &Lane<R> {
        &self.lane
    }
}

/// The receiving end, held by the worker.
pub(crate) struct Mailbox<M, R = ()> {
    ring: Consumer<M>,
    lane: Arc<Lane<R>>,
    /// The producer's tail at the last look (temporal slipping).
    seen_tail: usize,
    /// Whether the tail had moved at the last look that offered messages:
    /// the sender is streaming.
    moving: bool,
}

impl<M, R> Mailbox<M, R> {
    /// How many messages to take now: everything below the line the
    /// producer is writing while it moves, everything once it stands still
    /// or the ring is closed (temporal slipping, above).
    #[inline]
    pub(crate) fn ready(&mut self) -> usize {
        let avail = self.ring.refresh();
        let head = self.ring.popped();
        let tail = head.wrapping_add(avail);
        if avail == 0 || tail == self.seen_tail || self.ring.is_closed() {
            self.moving = false;
            return avail;
        }
        self.seen_tail = tail;
        self.moving = true;
        let whole = self.ring.line_start(tail);
        // Below `head` when the tail is still in the line `head` is in.
        let settled = whole.wrapping_sub(head);
        if settled <= avail { settled } else { 0 }
    }

    /// Whether the last [`Mailbox::ready`] saw the sender still writing
    /// (its tail had moved since the look before): it is streaming, and a
    /// worker that took less than a full batch does better to let the ring
    /// fill a little than to poll it again at once (see `runtime.rs`).
    #[inline]
    pub(crate) fn sender_streaming(&self) -> bool {
        self.moving
    }

    /// Up to `max` messages in place, numbered from `next_seq`.
    #[inline]
    pub(crate) fn batch(&mut self, max: usize, next_seq: u64) -> Taken<'_, M, R> {
        let drain = self.ring.drain(max);
        // L4: after the tail this drain reaches was loaded (by `drain` or
        // an earlier `available`), so every entry of its payloads counts.
        let meta_at = self.lane.front();
        Taken {
            drain,
            lane: &self.lane,
            meta_at,
            next_seq,
        }
    }

    /// Takes one message, for a worker that abandons its queue.
    pub(crate) fn pop(&mut self) -> Option<Envelope<M, R>> {
        let mut one = self.batch(1, 0);
        one.next()
    }

    /// The ring's consumer, for the queries that do not take messages.
    #[inline(always)]
    pub(crate) fn ring(&self) -> &Consumer<M> {
        &self.ring
    }

    /// See [`Consumer::is_finished`].
    pub(crate) fn is_finished(&mut self) -> bool {
        self.ring.is_finished()
    }

    /// See [`Consumer::close`].
    pub(crate) fn close(&mut self) {
        self.ring.close();
    }

    /// The lane (tests and loom models).
    #[cfg(any(test, loom))]
    pub(crate) fn lane(&self) -> &Lane<R> {
        &self.lane
    }
}

/// Messages taken in place from a [`Mailbox`]: the ring's drain, joined
/// with the lane's entries as the payloads come out.
pub(crate) struct Taken<'a, M, R> {
    drain: Drain<'a, M>,
    lane: &'a Lane<R>,
    /// Position of the lane's front entry, if any (L2).
    meta_at: Option<usize>,
    next_seq: u64,
}

impl<M, R> Taken<'_, M, R> {
    /// Messages left.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.drain.remaining()
    }

    /// The sequence number the next message gets.
    #[inline]
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next message, its envelope put together.
    #[inline]
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn next(&mut self) -> Option<Envelope<M, R>> {
        let pos = self.drain.position();
        let payload = self.drain.next()?;
        let meta = if self.meta_at == Some(pos) {
            let (meta, after) = self.lane.take(pos);
            self.meta_at = after;
            meta
        } else {
            None
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(Envelope::assemble(payload, seq, meta))
    }
}

/// A mailbox of `u32` messages for the loom models (`tests/loom.rs`).
#[cfg(loom)]
pub struct LoomMailbox {
    tx: Option<MailSender<u32>>,
    rx: Mailbox<u32>,
}

/// The sending end of a [`LoomMailbox`], to move to another thread.
#[cfg(loom)]
pub struct LoomMailSender(MailSender<u32>);

#[cfg(loom)]
impl LoomMailbox {
    /// A mailbox of `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mailbox(capacity, Arc::new(Signal::new()));
        Self { tx: Some(tx), rx }
    }

    /// The sending end (once).
    pub fn sender(&mut self) -> LoomMailSender {
        LoomMailSender(self.tx.take().expect("taken once"))
    }

    /// Takes what [`Mailbox::ready`] offers, as `(payload, key)`.
    pub fn take(&mut self) -> Vec<(u32, Option<u64>)> {
        let n = self.rx.ready();
        let mut b = self.rx.batch(n, 0);
        std::iter::from_fn(|| b.next())
            .map(|e| (e.payload, e.key_hash()))
            .collect()
    }

    /// Closes the ring.
    pub fn close(&mut self) {
        self.rx.close();
    }

    /// Entries left in the lane.
    pub fn lane_len(&self) -> usize {
        self.rx.lane().len()
    }
}

#[cfg(loom)]
impl LoomMailSender {
    /// Pushes `v` (with `key` in the lane if there is one) without
    /// blocking; `Err(true)` if closed, `Err(false)` if full.
    pub fn send(&mut self, v: u32, key: Option<u64>) -> Result<(), bool> {
        match self.0.try_push(Wire::new(v, key)) {
            Ok(()) => Ok(()),
            Err(MailError::Closed(_)) => Err(true),
            Err(MailError::Full(_)) => Err(false),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn pair(cap: usize) -> (MailSender<u64, u32>, Mailbox<u64, u32>) {
        mailbox(cap, Arc::new(Signal::new()))
    }

    fn push(tx: &mut MailSender<u64, u32>, v: u64, key: Option<u64>) {
        assert!(tx.try_push(Wire::new(v, key)).is_ok());
    }

    #[test]
    fn plain_messages_leave_the_lane_untouched() {
        let (mut tx, mut rx) = pair(8);
        for v in 0..5 {
            push(&mut tx, v, None);
        }
        assert_eq!(rx.lane().pending.load(Ordering::Relaxed), 0);
        let mut b = rx.batch(8, 10);
        let got: Vec<_> = std::iter::from_fn(|| b.next())
            .map(|e| (e.seq(), e.payload, e.key_hash()))
            .collect();
        assert_eq!(got, (0..5).map(|v| (10 + v, v, None)).collect::<Vec<_>>());
    }

    #[test]
    fn metadata_meets_its_payload_across_batches_and_wraps() {
        let (mut tx, mut rx) = pair(4);
        let mut seen = Vec::new();
        // Every third message has a key; the ring wraps many times and
        // batches cut between a payload with metadata and the next.
        for round in 0..20u64 {
            for i in 0..3 {
                let v = round * 3 + i;
                push(&mut tx, v, (v % 3 == 0).then_some(v * 100));
            }
            let mut b = rx.batch(2, 0);
            seen.extend(std::iter::from_fn(|| b.next()).map(|e| (e.payload, e.key_hash())));
            drop(b);
            let mut b = rx.batch(8, 0);
            seen.extend(std::iter::from_fn(|| b.next()).map(|e| (e.payload, e.key_hash())));
        }
        let want: Vec<_> = (0..60u64)
            .map(|v| (v, (v % 3 == 0).then_some(v * 100)))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(rx.lane().len(), 0);
    }

    #[test]
    fn a_message_not_taken_keeps_its_metadata() {
        let (mut tx, mut rx) = pair(8);
        push(&mut tx, 1, Some(11));
        push(&mut tx, 2, Some(22));
        {
            let mut b = rx.batch(8, 0);
            assert_eq!(b.next().unwrap().key_hash(), Some(11));
            // The batch ends with message 2 untaken: it stays queued.
        }
        let mut b = rx.batch(8, 0);
        let e = b.next().unwrap();
        assert_eq!((e.payload, e.key_hash()), (2, Some(22)));
    }

    #[test]
    fn a_push_refused_by_a_closed_ring_takes_its_metadata_back() {
        let (mut tx, mut rx) = pair(8);
        push(&mut tx, 1, Some(11));
        rx.close();
        match tx.try_push(Wire::new(2, Some(22))) {
            Err(MailError::Closed(w)) => {
                let (p, meta) = w.split();
                assert_eq!((p, meta.and_then(|m| m.key())), (2, Some(22)));
            }
            _ => panic!("a closed ring took the message"),
        }
        // The message pushed before the close is still delivered, whole.
        let mut b = rx.batch(8, 0);
        assert_eq!(b.next().unwrap().key_hash(), Some(11));
        assert!(b.next().is_none());
        drop(b);
        assert_eq!(tx.lane().len(), 0);
    }

    #[test]
    fn a_moving_sender_keeps_its_line_and_a_still_one_gets_everything() {
        let (mut tx, mut rx) = pair(64);
        let line = |rx: &Mailbox<u64, u32>, i: usize| rx.ring().line_start(i);
        // u64 slots tile 64-byte lines, eight to a line, wherever the
        // allocation put the first one.
        for i in 0..64 {
            let l = line(&rx, i);
            assert!(i.wrapping_sub(l) < 8, "slot {i} in the line at {l}");
            assert_eq!(line(&rx, i + 8), l.wrapping_add(8));
            assert_eq!(line(&rx, l), l);
        }
        for v in 0..3 {
            push(&mut tx, v, None);
        }
        // The tail moved since the last look: only whole lines below it.
        let first = rx.ready();
        let below = |l: usize, head: usize, n: usize| {
            let d = l.wrapping_sub(head);
            if d <= n { d } else { 0 }
        };
        assert_eq!(first, below(line(&rx, 3), 0, 3));
        // Nothing moved since: everything.
        assert_eq!(rx.ready(), 3);
        let mut b = rx.batch(3, 0);
        assert_eq!(std::iter::from_fn(|| b.next()).count(), 3);
        drop(b);
        // Past a line: the whole lines now, the rest at the next look.
        for v in 3..21 {
            push(&mut tx, v, None);
        }
        let now = rx.ready();
        assert_eq!(now, below(line(&rx, 21), 3, 18));
        assert!(now >= 8, "at least one whole line of the 18 is offered");
        assert_eq!(rx.ready(), 18);
        // A closed ring offers everything at once.
        push(&mut tx, 21, None);
        rx.close();
        assert_eq!(rx.ready(), 19);
    }
}
