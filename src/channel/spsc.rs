//! Single-producer single-consumer channels.
//!
//! Both flavours are this crate's own lock-free ring (`ring.rs`): one Release
//! store per message or per batch, no read-modify-write on the hot path, and
//! a blocking path that parks instead of spinning forever. An unbounded
//! channel is a chain of rings: when the current one is full the sender
//! starts a ring twice as large, hands it to the receiver, and drops its end
//! of the old one; the receiver moves on once the old ring is drained.
//!
//! Both handles are `Send`; ownership enforces one producer and one consumer,
//! which is why the methods take `&mut self`.

use super::error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use super::ring::{self, PushError};
use super::stats::ChannelStats;
use super::wait::{Step, Waiter, deadline_after};
use crate::sync::{Arc, signal::Signal};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// First segment of an unbounded channel.
const FIRST_SEGMENT: usize = 64;
/// Segments stop doubling here.
const MAX_SEGMENT: usize = 1 << 16;

/// The sending half of an SPSC channel.
#[derive(Debug)]
pub struct Sender<T> {
    ring: ring::Producer<T>,
    /// Set for unbounded channels.
    grow: Option<Grow<T>>,
    /// Messages pushed into earlier segments.
    sent_before: u64,
}

/// The receiving half of an SPSC channel.
#[derive(Debug)]
pub struct Receiver<T> {
    ring: ring::Consumer<T>,
    /// Set for unbounded channels.
    segments: Option<std::sync::Arc<Segments<T>>>,
    /// Messages taken from earlier segments.
    received_before: u64,
}

/// The hand-over point between the two ends of an unbounded channel.
#[derive(Debug)]
struct Segments<T> {
    /// Segments started by the sender and not yet reached by the receiver;
    /// `None` once the receiver is gone.
    queue: Mutex<Option<VecDeque<ring::Consumer<T>>>>,
    /// `received_before` as last published by the receiver (for stats).
    received_before: AtomicU64,
}

#[derive(Debug)]
struct Grow<T> {
    segments: std::sync::Arc<Segments<T>>,
    signal: Arc<Signal>,
}

pub(crate) fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (p, c) = ring::ring(capacity, Arc::new(Signal::new()));
    (
        Sender {
            ring: p,
            grow: None,
            sent_before: 0,
        },
        Receiver {
            ring: c,
            segments: None,
            received_before: 0,
        },
    )
}

pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let signal = Arc::new(Signal::new());
    let (p, c) = ring::ring(FIRST_SEGMENT, signal.clone());
    let segments = std::sync::Arc::new(Segments {
        queue: Mutex::new(Some(VecDeque::new())),
        received_before: AtomicU64::new(0),
    });
    (
        Sender {
            ring: p,
            grow: Some(Grow {
                segments: segments.clone(),
                signal,
            }),
            sent_before: 0,
        },
        Receiver {
            ring: c,
            segments: Some(segments),
            received_before: 0,
        },
    )
}

impl<T> Sender<T> {
    /// Sends without blocking.
    ///
    /// # Errors
    /// `Full` if a bounded channel is full, `Disconnected` if the receiver is
    /// gone; both hand the message back.
    #[inline]
    pub fn try_send(&mut self, msg: T) -> Result<(), TrySendError<T>> {
        match self.ring.try_push(msg) {
            Ok(()) => Ok(()),
            Err(PushError::Closed(v)) => Err(TrySendError::Disconnected(v)),
            Err(PushError::Full(v)) => self.grow_and_push(v),
        }
    }

    /// Full: a bounded channel reports it; an unbounded one starts a ring
    /// twice as large and pushes there.
    #[cold]
    #[inline(never)]
    fn grow_and_push(&mut self, msg: T) -> Result<(), TrySendError<T>> {
        let Some(grow) = &self.grow else {
            return Err(TrySendError::Full(msg));
        };
        let capacity = (self.ring.capacity() * 2).min(MAX_SEGMENT);
        let (mut p, c) = ring::ring(capacity, grow.signal.clone());
        {
            let mut queue = grow.segments.queue.lock();
            match queue.as_mut() {
                Some(q) => q.push_back(c),
                None => return Err(TrySendError::Disconnected(msg)),
            }
        }
        let pushed = p.try_push(msg);
        // Dropping the old producer tells the receiver to move on once the
        // old ring is drained; the new ring is already queued, so it never
        // mistakes that for a disconnect.
        let old = std::mem::replace(&mut self.ring, p);
        self.sent_before += old.pushed() as u64;
        drop(old);
        pushed.map_err(|e| match e {
            PushError::Closed(v) | PushError::Full(v) => TrySendError::Disconnected(v),
        })
    }

    /// Sends, blocking while the channel is full (never, if unbounded).
    ///
    /// # Errors
    /// `SendError` with the message if the receiver is gone.
    ///
    /// ```
    /// use shared_nothing::channel::Channel;
    /// let (mut tx, mut rx) = Channel::spsc(2);
    /// let t = std::thread::spawn(move || (0..100).for_each(|i| tx.send(i).unwrap()));
    /// let got: Vec<i32> = (0..100).map(|_| rx.recv().unwrap()).collect();
    /// t.join().unwrap();
    /// assert_eq!(got, (0..100).collect::<Vec<_>>());
    /// ```
    // The first attempt is inlined into the caller, the wait is not: as a
    // call per message, the ring's local tail lives in memory and every
    // send costs one more store (see `Producer::try_push`).
    #[inline(always)]
    pub fn send(&mut self, msg: T) -> Result<(), SendError<T>> {
        match self.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(v)) => Err(SendError(v)),
            Err(TrySendError::Full(v)) => self.send_blocked(v),
        }
    }

    #[cold]
    #[inline(never)]
    fn send_blocked(&mut self, msg: T) -> Result<(), SendError<T>> {
        self.send_until(msg, None)
            .map_err(|e| SendError(e.into_inner()))
    }

    /// Sends, blocking at most `timeout` while the channel is full.
    ///
    /// # Errors
    /// `Timeout` or `Disconnected`, with the message.
    pub fn send_timeout(&mut self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_until(msg, deadline_after(timeout))
    }

    fn send_until(
        &mut self,
        mut msg: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        let mut waiter = Waiter::new(deadline);
        loop {
            match self.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(v)) => {
                    return Err(SendTimeoutError::Disconnected(v));
                }
                Err(TrySendError::Full(v)) => msg = v,
            }
            match waiter.step() {
                Step::Retry => {}
                Step::Park(t) => self.ring.wait_for_space(t),
                Step::TimedOut => return Err(SendTimeoutError::Timeout(msg)),
            }
        }
    }

    /// Sends as many items from `items` as fit now, publishing them at once
    /// (an unbounded channel takes them all). Items that did not fit stay in
    /// the iterator.
    ///
    /// # Errors
    /// If the receiver is gone, `SendError` holds the items taken from the
    /// iterator that were not delivered (everything taken before them was).
    #[inline]
    pub fn try_send_iter<I: Iterator<Item = T>>(
        &mut self,
        items: &mut I,
    ) -> Result<usize, SendError<Vec<T>>> {
        let mut sent = self.ring.push_iter(items).map_err(SendError)?;
        if self.grow.is_some() {
            while let Some(v) = items.next() {
                self.try_send(v)
                    .map_err(|e| SendError(vec![e.into_inner()]))?;
                sent += 1 + self.ring.push_iter(items).map_err(SendError)?;
            }
        }
        Ok(sent)
    }

    /// Sends every item, in order, blocking while the channel is full;
    /// items are published a ring-full at a time.
    ///
    /// # Errors
    /// If the receiver goes away, `SendError` holds the items not sent.
    ///
    /// ```
    /// use shared_nothing::channel::Channel;
    /// let (mut tx, mut rx) = Channel::spsc(64);
    /// tx.send_batch(0..10).unwrap();
    /// let mut buf = Vec::new();
    /// assert_eq!(rx.try_recv_batch(&mut buf, 64), 10);
    /// ```
    pub fn send_batch<I: IntoIterator<Item = T>>(
        &mut self,
        items: I,
    ) -> Result<(), SendError<Vec<T>>> {
        let mut items = items.into_iter().peekable();
        let mut waiter = Waiter::new(None);
        while items.peek().is_some() {
            match self.try_send_iter(&mut items) {
                Ok(0) => {
                    if let Step::Park(t) = waiter.step() {
                        self.ring.wait_for_space(t);
                    }
                }
                Ok(_) => waiter = Waiter::new(None),
                Err(SendError(mut back)) => {
                    back.extend(items);
                    return Err(SendError(back));
                }
            }
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub fn is_disconnected(&self) -> bool {
        self.ring.is_closed()
    }

    /// The bound, or `None` if unbounded.
    pub fn capacity(&self) -> Option<usize> {
        self.grow.is_none().then(|| self.ring.capacity())
    }

    /// Counters of this channel. For an unbounded channel, `received` and
    /// `len` count only what the receiver has published so far.
    pub fn stats(&self) -> ChannelStats {
        let sent = self.sent_before + self.ring.pushed() as u64;
        let received = match &self.grow {
            None => self.ring.popped() as u64,
            Some(g) => {
                let queued = g.segments.queue.lock().as_ref().map_or(0, VecDeque::len);
                let before = g.segments.received_before.load(Ordering::Relaxed);
                // Receiver still behind us on older segments: only what it
                // published; on our segment: exact.
                if queued == 0 {
                    before + self.ring.popped() as u64
                } else {
                    before
                }
            }
        };
        ChannelStats {
            sent,
            received,
            len: sent.saturating_sub(received) as usize,
            capacity: self.capacity(),
        }
    }
}

impl<T> Receiver<T> {
    /// Moves to the next segment of an unbounded channel once the current one
    /// is finished; `false` if there is none (the sender is gone).
    #[cold]
    #[inline(never)]
    fn next_segment(&mut self) -> bool {
        let Some(segments) = &self.segments else {
            return false;
        };
        let Some(next) = segments.queue.lock().as_mut().and_then(VecDeque::pop_front) else {
            return false;
        };
        let old = std::mem::replace(&mut self.ring, next);
        self.received_before += old.popped() as u64;
        segments
            .received_before
            .store(self.received_before, Ordering::Relaxed);
        true
    }

    /// Receives without blocking.
    ///
    /// # Errors
    /// `Empty` if nothing is queued, `Disconnected` if the sender is gone and
    /// everything it sent has been received.
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        loop {
            if let Some(v) = self.ring.try_pop() {
                return Ok(v);
            }
            if !self.ring.is_finished() {
                return Err(TryRecvError::Empty);
            }
            if !self.next_segment() {
                return Err(TryRecvError::Disconnected);
            }
        }
    }

    /// Receives, blocking until a message arrives.
    ///
    /// # Errors
    /// `RecvError` once the sender is gone and the channel is drained.
    // First attempt inlined, the wait out of line (as `Sender::send`).
    #[inline(always)]
    pub fn recv(&mut self) -> Result<T, RecvError> {
        if let Some(v) = self.ring.try_pop() {
            return Ok(v);
        }
        self.recv_blocked()
    }

    #[cold]
    #[inline(never)]
    fn recv_blocked(&mut self) -> Result<T, RecvError> {
        self.recv_until(None).map_err(|_| RecvError)
    }

    /// Receives, blocking at most `timeout`.
    ///
    /// # Errors
    /// `Timeout` or `Disconnected`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(deadline_after(timeout))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let mut waiter = Waiter::new(deadline);
        loop {
            match self.try_recv() {
                Ok(v) => return Ok(v),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            match waiter.step() {
                Step::Retry => {}
                Step::Park(t) => self.ring.wait_for_data(t),
                Step::TimedOut => return Err(RecvTimeoutError::Timeout),
            }
        }
    }

    /// Takes up to `max` queued messages in place, without blocking and
    /// without copying them into a buffer; the read index is published once,
    /// when the iterator is dropped (messages not taken stay queued).
    ///
    /// ```
    /// use shared_nothing::channel::Channel;
    /// let (mut tx, mut rx) = Channel::spsc(8);
    /// tx.send_batch([1, 2, 3]).unwrap();
    /// let sum: i32 = rx.drain(8).sum();
    /// assert_eq!(sum, 6);
    /// ```
    #[inline]
    pub fn drain(&mut self, max: usize) -> Drain<'_, T> {
        // Only an unbounded channel can have a next segment to move to; a
        // bounded one pays no extra load here.
        if self.segments.is_some() && self.ring.is_finished() {
            self.next_segment();
        }
        Drain {
            inner: self.ring.drain(max),
        }
    }

    /// Appends up to `max` queued messages to `buf` without blocking; returns
    /// how many. One index publication for the whole batch.
    pub fn try_recv_batch(&mut self, buf: &mut Vec<T>, max: usize) -> usize {
        let before = buf.len();
        buf.extend(self.drain(max));
        buf.len() - before
    }

    /// Blocks until at least one message is queued, then appends up to `max`
    /// of them to `buf`; returns how many.
    ///
    /// # Errors
    /// `RecvError` once the sender is gone and the channel is drained.
    pub fn recv_batch(&mut self, buf: &mut Vec<T>, max: usize) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        let first = self.recv()?;
        buf.push(first);
        Ok(1 + self.try_recv_batch(buf, max - 1))
    }

    /// Messages queued now in the segment being read (the whole channel,
    /// if bounded).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is queued now in the segment being read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters of this channel. For an unbounded channel, `sent` and `len`
    /// cover only the segment being read.
    pub fn stats(&self) -> ChannelStats {
        let len = self.ring.len();
        let received = self.received_before + self.ring.popped() as u64;
        ChannelStats {
            sent: received + len as u64,
            received,
            len,
            capacity: self.segments.is_none().then(|| self.ring.capacity()),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Close the segments the sender started but we never reached, so its
        // sends fail instead of filling rings nobody reads.
        if let Some(segments) = &self.segments {
            segments.queue.lock().take();
        }
    }
}

/// Messages taken in place from an SPSC [`Receiver`]; see [`Receiver::drain`].
#[derive(Debug)]
pub struct Drain<'a, T> {
    inner: ring::Drain<'a, T>,
}

impl<T> Iterator for Drain<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        self.inner.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<T> ExactSizeIterator for Drain<'_, T> {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn exact_capacity_not_rounded() {
        let (mut tx, _rx) = bounded::<u8>(3);
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        assert!(tx.try_send(9).unwrap_err().is_full());
        assert_eq!(tx.capacity(), Some(3));
    }

    #[test]
    fn fifo_across_threads_with_wraparound() {
        let (mut tx, mut rx) = bounded::<u64>(7);
        let n = 100_000u64;
        let t = thread::spawn(move || {
            for i in 0..n {
                tx.send(i).unwrap();
            }
        });
        for i in 0..n {
            assert_eq!(rx.recv().unwrap(), i);
        }
        t.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError));
    }

    #[test]
    fn batches_keep_order_and_count() {
        let (mut tx, mut rx) = bounded::<u32>(16);
        let t = thread::spawn(move || tx.send_batch(0..10_000).unwrap());
        let mut got = Vec::new();
        while let Ok(_n) = rx.recv_batch(&mut got, 5) {}
        t.join().unwrap();
        assert_eq!(got, (0..10_000).collect::<Vec<_>>());
        assert_eq!(rx.stats().received, 10_000);
    }

    #[test]
    fn receiver_drop_disconnects_sender_and_returns_message() {
        let (mut tx, rx) = bounded::<String>(4);
        drop(rx);
        assert!(tx.is_disconnected());
        let e = tx.send("x".into()).unwrap_err();
        assert_eq!(e.into_inner(), "x");
        assert!(
            tx.try_send_iter(&mut ["y".to_string()].into_iter())
                .is_err()
        );
    }

    #[test]
    fn sender_drop_lets_receiver_drain_then_disconnect() {
        let (mut tx, mut rx) = bounded::<u8>(4);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn timeouts_fire_on_both_sides() {
        let (mut tx, mut rx) = bounded::<u8>(1);
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(5)),
            Err(RecvTimeoutError::Timeout)
        );
        tx.send(1).unwrap();
        assert!(
            tx.send_timeout(2, Duration::from_millis(5))
                .unwrap_err()
                .is_timeout()
        );
    }

    #[test]
    fn blocked_receiver_is_woken() {
        let (mut tx, mut rx) = bounded::<u8>(1);
        let t = thread::spawn(move || rx.recv());
        thread::sleep(Duration::from_millis(20));
        tx.send(7).unwrap();
        assert_eq!(t.join().unwrap(), Ok(7));
    }

    #[test]
    fn blocked_sender_is_woken_by_a_receive_and_by_a_drop() {
        let (mut tx, mut rx) = bounded::<u8>(1);
        tx.send(1).unwrap();
        let t = thread::spawn(move || {
            let first = tx.send(2);
            let second = tx.send(3);
            let third = tx.send(4);
            (first, second, third)
        });
        thread::sleep(Duration::from_millis(20));
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(rx.recv(), Ok(2));
        thread::sleep(Duration::from_millis(20));
        drop(rx);
        let (a, b, c) = t.join().unwrap();
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(c.unwrap_err().into_inner(), 4);
    }

    #[test]
    fn queued_values_are_dropped_with_the_channel() {
        let marker = std::sync::Arc::new(());
        let (mut tx, rx) = bounded(4);
        tx.send(marker.clone()).unwrap();
        tx.send(marker.clone()).unwrap();
        assert_eq!(std::sync::Arc::strong_count(&marker), 3);
        drop(tx);
        drop(rx);
        assert_eq!(std::sync::Arc::strong_count(&marker), 1);
    }

    #[test]
    fn unbounded_flavour_counts_and_disconnects() {
        let (mut tx, mut rx) = unbounded::<u32>();
        tx.send_batch(0..1000).unwrap();
        let mut buf = Vec::new();
        assert_eq!(rx.try_recv_batch(&mut buf, 10), 10);
        assert_eq!(rx.stats().received, 10);
        assert_eq!(tx.stats().sent, 1000);
        drop(tx);
        let mut rest = Vec::new();
        while let Ok(v) = rx.recv() {
            rest.push(v);
        }
        assert_eq!(rest.len(), 990);
    }

    #[test]
    fn unbounded_grows_across_segments_in_order_with_a_blocking_receiver() {
        let (mut tx, mut rx) = unbounded::<u64>();
        let t = thread::spawn(move || {
            let mut next = 0;
            while let Ok(v) = rx.recv() {
                assert_eq!(v, next);
                next += 1;
            }
            next
        });
        for i in 0..300_000 {
            tx.send(i).unwrap();
        }
        assert_eq!(tx.capacity(), None);
        drop(tx);
        assert_eq!(t.join().unwrap(), 300_000);
    }

    #[test]
    fn unbounded_sender_ahead_of_a_dropped_receiver_is_disconnected() {
        let (mut tx, rx) = unbounded::<u64>();
        // Fill several segments the receiver never reaches.
        for i in 0..10_000 {
            tx.try_send(i).unwrap();
        }
        drop(rx);
        assert!(tx.send(1).is_err());
        assert!(tx.is_disconnected());
    }
}
