//! Multi-producer channels (MPSC and MPMC), backed by crossbeam-channel.
//!
//! crossbeam-channel was chosen over flume by measurement on this project's
//! machine (see `docs/benchmarks.md`): flume parks and wakes on every message,
//! crossbeam spins briefly first. `mpsc` and `mpmc` share this one
//! implementation; the receiver's type parameter says whether it may be
//! cloned (`Shared`) or not (`Single`).

use super::error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use super::stats::ChannelStats;
use crossbeam_utils::CachePadded;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Marker: one receiver only (MPSC); the receiver is not `Clone`.
#[derive(Debug, Clone, Copy)]
pub struct Single;

/// Marker: receivers may be cloned (MPMC).
#[derive(Debug, Clone, Copy)]
pub struct Shared;

type Counter = Arc<CachePadded<AtomicU64>>;

/// Receive counts: one counter per receiver, each written by its receiver
/// alone (a plain store, no locked instruction, no line shared between MPMC
/// receivers), summed when statistics are read. A shared counter with a
/// locked add per receive measured at under half of crossbeam's MPMC rate.
#[derive(Debug, Default)]
struct Tally {
    live: parking_lot::Mutex<Vec<Counter>>,
    /// Counts of receivers that were dropped.
    retired: AtomicU64,
}

impl Tally {
    fn register(&self) -> Counter {
        let c = Counter::default();
        self.live.lock().push(c.clone());
        c
    }

    fn retire(&self, mine: &Counter) {
        let mut live = self.live.lock();
        live.retain(|c| !Arc::ptr_eq(c, mine));
        self.retired
            .fetch_add(mine.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        let live = self.live.lock();
        self.retired.load(Ordering::Relaxed)
            + live.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>()
    }
}

/// The sending half of an MPSC or MPMC channel; clone it for more producers.
#[derive(Debug)]
pub struct Sender<T> {
    tx: crossbeam_channel::Sender<T>,
    tally: Arc<Tally>,
}

/// The receiving half of an MPSC (`Receiver<T, Single>`) or MPMC
/// (`Receiver<T, Shared>`) channel.
#[derive(Debug)]
pub struct Receiver<T, K = Single> {
    rx: crossbeam_channel::Receiver<T>,
    tally: Arc<Tally>,
    /// This receiver's own count.
    received: Counter,
    kind: PhantomData<K>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            tally: self.tally.clone(),
        }
    }
}

impl<T> Clone for Receiver<T, Shared> {
    fn clone(&self) -> Self {
        Self {
            rx: self.rx.clone(),
            received: self.tally.register(),
            tally: self.tally.clone(),
            kind: PhantomData,
        }
    }
}

pub(crate) fn channel<T, K>(capacity: Option<usize>) -> (Sender<T>, Receiver<T, K>) {
    let (tx, rx) = match capacity {
        // A zero-capacity crossbeam channel is a rendezvous channel; this
        // crate's channels always buffer, so the smallest bound is 1.
        Some(cap) => crossbeam_channel::bounded(cap.max(1)),
        None => crossbeam_channel::unbounded(),
    };
    let tally = Arc::new(Tally::default());
    (
        Sender {
            tx,
            tally: tally.clone(),
        },
        Receiver {
            rx,
            received: tally.register(),
            tally,
            kind: PhantomData,
        },
    )
}

fn stats(len: usize, capacity: Option<usize>, tally: &Tally) -> ChannelStats {
    let received = tally.total();
    ChannelStats {
        sent: received + len as u64,
        received,
        len,
        capacity,
    }
}

impl<T> Sender<T> {
    /// Sends, blocking while the channel is full.
    ///
    /// # Errors
    /// `SendError` with the message if every receiver is gone.
    ///
    /// ```
    /// use shared_nothing::channel::Channel;
    /// let (tx, rx) = Channel::mpsc(16);
    /// let producers: Vec<_> = (0..4)
    ///     .map(|p| {
    ///         let tx = tx.clone();
    ///         std::thread::spawn(move || tx.send(p).unwrap())
    ///     })
    ///     .collect();
    /// drop(tx);
    /// producers.into_iter().for_each(|t| t.join().unwrap());
    /// let mut got: Vec<i32> = rx.iter().collect();
    /// got.sort();
    /// assert_eq!(got, vec![0, 1, 2, 3]);
    /// ```
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.tx.send(msg).map_err(|e| SendError(e.into_inner()))
    }

    /// Sends without blocking.
    ///
    /// # Errors
    /// `Full` or `Disconnected`, with the message.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.tx.try_send(msg).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(v) => TrySendError::Full(v),
            crossbeam_channel::TrySendError::Disconnected(v) => TrySendError::Disconnected(v),
        })
    }

    /// Sends, blocking at most `timeout` while the channel is full.
    ///
    /// # Errors
    /// `Timeout` or `Disconnected`, with the message.
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.tx.send_timeout(msg, timeout).map_err(|e| match e {
            crossbeam_channel::SendTimeoutError::Timeout(v) => SendTimeoutError::Timeout(v),
            crossbeam_channel::SendTimeoutError::Disconnected(v) => {
                SendTimeoutError::Disconnected(v)
            }
        })
    }

    /// Sends every item in order, blocking while the channel is full.
    ///
    /// # Errors
    /// If every receiver goes away, `SendError` holds the items not sent.
    pub fn send_batch<I: IntoIterator<Item = T>>(&self, items: I) -> Result<(), SendError<Vec<T>>> {
        let mut items = items.into_iter();
        while let Some(v) = items.next() {
            if let Err(e) = self.tx.send(v) {
                let mut rest = vec![e.into_inner()];
                rest.extend(items);
                return Err(SendError(rest));
            }
        }
        Ok(())
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// The bound, or `None` if unbounded.
    pub fn capacity(&self) -> Option<usize> {
        self.tx.capacity()
    }

    /// Counters of this channel.
    pub fn stats(&self) -> ChannelStats {
        stats(self.tx.len(), self.tx.capacity(), &self.tally)
    }
}

impl<T, K> Drop for Receiver<T, K> {
    fn drop(&mut self) {
        self.tally.retire(&self.received);
    }
}

impl<T, K> Receiver<T, K> {
    #[inline]
    fn count(&self, n: u64) {
        // This receiver is the counter's only writer.
        let c = &self.received;
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// Receives, blocking until a message arrives.
    ///
    /// # Errors
    /// `RecvError` once every sender is gone and the channel is drained.
    pub fn recv(&self) -> Result<T, RecvError> {
        let v = self.rx.recv().map_err(|_| RecvError)?;
        self.count(1);
        Ok(v)
    }

    /// Receives without blocking.
    ///
    /// # Errors
    /// `Empty` or `Disconnected`.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let v = self.rx.try_recv().map_err(|e| match e {
            crossbeam_channel::TryRecvError::Empty => TryRecvError::Empty,
            crossbeam_channel::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })?;
        self.count(1);
        Ok(v)
    }

    /// Receives, blocking at most `timeout`.
    ///
    /// # Errors
    /// `Timeout` or `Disconnected`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let v = self.rx.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => RecvTimeoutError::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => RecvTimeoutError::Disconnected,
        })?;
        self.count(1);
        Ok(v)
    }

    /// Appends up to `max` queued messages to `buf` without blocking.
    pub fn try_recv_batch(&self, buf: &mut Vec<T>, max: usize) -> usize {
        let before = buf.len();
        buf.extend(self.rx.try_iter().take(max));
        let got = buf.len() - before;
        if got > 0 {
            self.count(got as u64);
        }
        got
    }

    /// Blocks until a message is queued, then appends up to `max` to `buf`.
    ///
    /// # Errors
    /// `RecvError` once every sender is gone and the channel is drained.
    pub fn recv_batch(&self, buf: &mut Vec<T>, max: usize) -> Result<usize, RecvError> {
        if max == 0 {
            return Ok(0);
        }
        buf.push(self.recv()?);
        Ok(1 + self.try_recv_batch(buf, max - 1))
    }

    /// A blocking iterator that ends when every sender is gone.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Counters of this channel.
    pub fn stats(&self) -> ChannelStats {
        stats(self.rx.len(), self.rx.capacity(), &self.tally)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn mpmc_delivers_each_message_once() {
        let (tx, rx) = channel::<u32, Shared>(Some(8));
        let consumers: Vec<_> = (0..3)
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || rx.iter().collect::<Vec<_>>())
            })
            .collect();
        drop(rx);
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let tx = tx.clone();
                thread::spawn(move || tx.send_batch((0..5000).map(|i| p * 5000 + i)).unwrap())
            })
            .collect();
        drop(tx);
        producers.into_iter().for_each(|t| t.join().unwrap());
        let mut all: Vec<u32> = consumers
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn errors_hand_back_messages() {
        let (tx, rx) = channel::<String, Single>(Some(1));
        tx.send("a".into()).unwrap();
        assert!(tx.try_send("b".into()).unwrap_err().is_full());
        assert!(
            tx.send_timeout("c".into(), Duration::from_millis(2))
                .unwrap_err()
                .is_timeout()
        );
        assert_eq!(rx.stats().sent, 1);
        drop(rx);
        assert_eq!(tx.send("d".into()).unwrap_err().into_inner(), "d");
        let e = tx
            .send_batch(vec!["e".to_string(), "f".to_string()])
            .unwrap_err();
        assert_eq!(e.0, vec!["e", "f"]);
    }

    #[test]
    fn receiver_errors() {
        let (tx, rx) = channel::<u8, Single>(None);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(2)),
            Err(RecvTimeoutError::Timeout)
        );
        tx.send(1).unwrap();
        drop(tx);
        let mut buf = vec![];
        assert_eq!(rx.recv_batch(&mut buf, 4), Ok(1));
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(rx.stats().received, 1);
    }
}
