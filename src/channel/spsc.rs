//! Single-producer single-consumer channels.
//!
//! Bounded SPSC channels are this crate's own lock-free ring (`ring.rs`):
//! one Release store per message or per batch, no read-modify-write on the
//! hot path, and a blocking path that parks instead of spinning forever.
//! Unbounded SPSC channels use crossbeam's segmented list: a bounded ring is
//! the point of this flavour, and an unbounded one has nothing to gain from
//! hand-written code.
//!
//! Both handles are `Send`; ownership enforces one producer and one consumer,
//! which is why the methods take `&mut self`.

use super::error::{RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError};
use super::ring::{self, PushError};
use super::stats::ChannelStats;
use super::wait::{deadline_after, Step, Waiter};
use crate::sync::{signal::Signal, Arc};
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The sending half of an SPSC channel.
#[derive(Debug)]
pub struct Sender<T> {
    flavor: SenderFlavor<T>,
}

/// The receiving half of an SPSC channel.
#[derive(Debug)]
pub struct Receiver<T> {
    flavor: ReceiverFlavor<T>,
}

#[derive(Debug)]
enum SenderFlavor<T> {
    Ring(ring::Producer<T>),
    List(crossbeam_channel::Sender<T>, std::sync::Arc<CachePadded<AtomicU64>>),
}

#[derive(Debug)]
enum ReceiverFlavor<T> {
    Ring(ring::Consumer<T>),
    List(crossbeam_channel::Receiver<T>, std::sync::Arc<CachePadded<AtomicU64>>),
}

pub(crate) fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (p, c) = ring::ring(capacity, Arc::new(Signal::new()));
    (
        Sender {
            flavor: SenderFlavor::Ring(p),
        },
        Receiver {
            flavor: ReceiverFlavor::Ring(c),
        },
    )
}

pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let received = std::sync::Arc::new(CachePadded::new(AtomicU64::new(0)));
    (
        Sender {
            flavor: SenderFlavor::List(tx, received.clone()),
        },
        Receiver {
            flavor: ReceiverFlavor::List(rx, received),
        },
    )
}

impl<T> Sender<T> {
    /// Sends without blocking.
    ///
    /// # Errors
    /// `Full` if the ring is full, `Disconnected` if the receiver is gone;
    /// both hand the message back.
    #[inline]
    pub fn try_send(&mut self, msg: T) -> Result<(), TrySendError<T>> {
        match &mut self.flavor {
            SenderFlavor::Ring(p) => p.try_push(msg).map_err(|e| match e {
                PushError::Full(v) => TrySendError::Full(v),
                PushError::Closed(v) => TrySendError::Disconnected(v),
            }),
            SenderFlavor::List(tx, _) => tx.try_send(msg).map_err(|e| match e {
                crossbeam_channel::TrySendError::Full(v) => TrySendError::Full(v),
                crossbeam_channel::TrySendError::Disconnected(v) => TrySendError::Disconnected(v),
            }),
        }
    }

    /// Sends, blocking while the channel is full.
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
    pub fn send(&mut self, msg: T) -> Result<(), SendError<T>> {
        self.send_until(msg, None).map_err(|e| SendError(e.into_inner()))
    }

    /// Sends, blocking at most `timeout` while the channel is full.
    ///
    /// # Errors
    /// `Timeout` or `Disconnected`, with the message.
    pub fn send_timeout(&mut self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_until(msg, deadline_after(timeout))
    }

    fn send_until(&mut self, mut msg: T, deadline: Option<Instant>) -> Result<(), SendTimeoutError<T>> {
        let mut waiter = Waiter::new(deadline);
        loop {
            match self.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(v)) => return Err(SendTimeoutError::Disconnected(v)),
                Err(TrySendError::Full(v)) => msg = v,
            }
            match waiter.step() {
                Step::Retry => {}
                Step::Park(t) => match &self.flavor {
                    SenderFlavor::Ring(p) => p.wait_for_space(t),
                    // Only reachable for bounded lists, which we never create.
                    SenderFlavor::List(..) => std::thread::yield_now(),
                },
                Step::TimedOut => return Err(SendTimeoutError::Timeout(msg)),
            }
        }
    }

    /// Sends as many items from `items` as fit now, publishing them at once.
    /// Items that did not fit stay in the iterator.
    ///
    /// # Errors
    /// `SendError(())` if the receiver is gone (nothing was taken).
    pub fn try_send_iter<I: Iterator<Item = T>>(&mut self, items: &mut I) -> Result<usize, SendError<()>> {
        match &mut self.flavor {
            SenderFlavor::Ring(p) => p.push_iter(items).map_err(|()| SendError(())),
            SenderFlavor::List(tx, _) => {
                let mut n = 0;
                for v in items.by_ref() {
                    if tx.send(v).is_err() {
                        return Err(SendError(()));
                    }
                    n += 1;
                }
                Ok(n)
            }
        }
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
    pub fn send_batch<I: IntoIterator<Item = T>>(&mut self, items: I) -> Result<(), SendError<Vec<T>>> {
        let mut items = items.into_iter().peekable();
        let mut waiter = Waiter::new(None);
        while items.peek().is_some() {
            match self.try_send_iter(&mut items) {
                Ok(0) => {
                    if let Step::Park(t) = waiter.step() {
                        if let SenderFlavor::Ring(p) = &self.flavor {
                            p.wait_for_space(t);
                        }
                    }
                }
                Ok(_) => waiter = Waiter::new(None),
                Err(_) => return Err(SendError(items.collect())),
            }
        }
        Ok(())
    }

    /// Whether the receiver is gone.
    pub fn is_disconnected(&self) -> bool {
        match &self.flavor {
            SenderFlavor::Ring(p) => p.is_closed(),
            // crossbeam reports disconnection only through a failed send;
            // an unbounded SPSC sender learns it on its next send.
            SenderFlavor::List(..) => false,
        }
    }

    /// The bound, or `None` if unbounded.
    pub fn capacity(&self) -> Option<usize> {
        match &self.flavor {
            SenderFlavor::Ring(p) => Some(p.capacity()),
            SenderFlavor::List(..) => None,
        }
    }

    /// Counters of this channel.
    pub fn stats(&self) -> ChannelStats {
        match &self.flavor {
            SenderFlavor::Ring(p) => ChannelStats {
                sent: p.pushed() as u64,
                received: p.popped() as u64,
                len: p.len(),
                capacity: Some(p.capacity()),
            },
            SenderFlavor::List(tx, rcv) => list_stats(tx.len(), rcv),
        }
    }
}

fn list_stats(len: usize, received: &AtomicU64) -> ChannelStats {
    let received = received.load(Ordering::Relaxed);
    ChannelStats {
        sent: received + len as u64,
        received,
        len,
        capacity: None,
    }
}

/// Counts one receive with a plain store: the single consumer is the only
/// writer, so no read-modify-write is needed.
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

impl<T> Receiver<T> {
    /// Receives without blocking.
    ///
    /// # Errors
    /// `Empty` if nothing is queued, `Disconnected` if the sender is gone and
    /// everything it sent has been received.
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        match &mut self.flavor {
            ReceiverFlavor::Ring(c) => match c.try_pop() {
                Some(v) => Ok(v),
                None if c.is_finished() => Err(TryRecvError::Disconnected),
                // The producer may have pushed between `try_pop` and its drop.
                None => c.try_pop().ok_or(TryRecvError::Empty),
            },
            ReceiverFlavor::List(rx, n) => match rx.try_recv() {
                Ok(v) => {
                    bump(n, 1);
                    Ok(v)
                }
                Err(crossbeam_channel::TryRecvError::Empty) => Err(TryRecvError::Empty),
                Err(crossbeam_channel::TryRecvError::Disconnected) => Err(TryRecvError::Disconnected),
            },
        }
    }

    /// Receives, blocking until a message arrives.
    ///
    /// # Errors
    /// `RecvError` once the sender is gone and the channel is drained.
    pub fn recv(&mut self) -> Result<T, RecvError> {
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
        if let ReceiverFlavor::List(rx, n) = &self.flavor {
            let r = match deadline {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => rx.recv_deadline(d).map_err(|e| match e {
                    crossbeam_channel::RecvTimeoutError::Timeout => RecvTimeoutError::Timeout,
                    crossbeam_channel::RecvTimeoutError::Disconnected => RecvTimeoutError::Disconnected,
                }),
            };
            if r.is_ok() {
                bump(n, 1);
            }
            return r;
        }
        let mut waiter = Waiter::new(deadline);
        loop {
            match self.try_recv() {
                Ok(v) => return Ok(v),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            match waiter.step() {
                Step::Retry => {}
                Step::Park(t) => {
                    if let ReceiverFlavor::Ring(c) = &self.flavor {
                        c.wait_for_data(t);
                    }
                }
                Step::TimedOut => return Err(RecvTimeoutError::Timeout),
            }
        }
    }

    /// Appends up to `max` queued messages to `buf` without blocking; returns
    /// how many. One index publication for the whole batch.
    pub fn try_recv_batch(&mut self, buf: &mut Vec<T>, max: usize) -> usize {
        match &mut self.flavor {
            ReceiverFlavor::Ring(c) => {
                let before = buf.len();
                buf.extend(c.drain(max));
                buf.len() - before
            }
            ReceiverFlavor::List(rx, n) => {
                let before = buf.len();
                buf.extend(rx.try_iter().take(max));
                let got = buf.len() - before;
                bump(n, got as u64);
                got
            }
        }
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

    /// Messages queued now.
    pub fn len(&self) -> usize {
        match &self.flavor {
            ReceiverFlavor::Ring(c) => c.len(),
            ReceiverFlavor::List(rx, _) => rx.len(),
        }
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters of this channel.
    pub fn stats(&self) -> ChannelStats {
        match &self.flavor {
            ReceiverFlavor::Ring(c) => {
                let len = c.len();
                ChannelStats {
                    sent: (c.popped() + len) as u64,
                    received: c.popped() as u64,
                    len,
                    capacity: Some(c.capacity()),
                }
            }
            ReceiverFlavor::List(rx, n) => list_stats(rx.len(), n),
        }
    }
}

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
        assert!(tx.try_send_iter(&mut ["y".to_string()].into_iter()).is_err());
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
        assert_eq!(rx.recv_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Timeout));
        tx.send(1).unwrap();
        assert!(tx.send_timeout(2, Duration::from_millis(5)).unwrap_err().is_timeout());
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
}
