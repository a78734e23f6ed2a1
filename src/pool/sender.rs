//! Cloneable routing handles into a worker group.

use crate::partition::{Partitioner, Route, hash_key};
use crate::worker::envelope::Wire;
use crate::worker::outbox::Outbox;
use crate::worker::{
    FlushError, GatherError, Pending, RequestAsync, Reserve, SendAsync, SendError,
};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

/// Sends into a [`WorkerGroup`](super::WorkerGroup) from any thread.
///
/// Each clone owns one SPSC ring per worker (a mesh, as Seastar wires its
/// cores), so producers on different threads never contend: a message
/// crosses exactly one ring. Clone one per producer thread; do not share one
/// behind a lock.
///
/// **Ordering.** Messages from one sender to one worker are handled in the
/// order they were sent. Messages from different senders (including the
/// group's own) are interleaved in no particular order. To know that a
/// worker has handled everything a sender sent, send a request through the
/// same sender and wait for its reply; to know that every worker has handled
/// everything sent to it by every sender, [`flush`](PoolSender::flush).
///
/// ```
/// use shared_nothing::prelude::*;
/// struct Sink;
/// impl Worker for Sink {
///     type State = u64;
///     type Message = u64;
///     type Reply = ();
///     fn init(&mut self) -> Result<u64> { Ok(0) }
///     fn handle_message(&mut self, s: &mut u64, _: Envelope<u64>) -> Result<()> { *s += 1; Ok(()) }
/// }
/// let mut pool = WorkerPool::builder().factory(|| Sink).workers(2).build().unwrap();
/// let producers: Vec<_> = (0..3).map(|p| {
///     let mut tx = pool.sender();
///     std::thread::spawn(move || for i in 0..1000u64 { tx.send_partitioned(&(p, i), i).unwrap() })
/// }).collect();
/// producers.into_iter().for_each(|t| t.join().unwrap());
/// pool.stop_all().unwrap();
/// assert_eq!(pool.stats().handled(), 3000);
/// ```
pub struct PoolSender<M: Send + 'static, R: Send + 'static = ()> {
    outbox: Outbox<M, R>,
    partitioner: Arc<dyn Partitioner>,
    /// The partitioner's rule, inline for the built-in ones.
    rule: Route,
}

impl<M: Send + 'static, R: Send + 'static> std::fmt::Debug for PoolSender<M, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolSender")
            .field("workers", &self.outbox.len())
            .field("partitioner", &self.partitioner.name())
            .finish()
    }
}

impl<M: Send + 'static, R: Send + 'static> Clone for PoolSender<M, R> {
    fn clone(&self) -> Self {
        Self {
            outbox: self.outbox.clone(),
            partitioner: self.partitioner.clone(),
            // A clone starts its own round-robin cursor.
            rule: Route::of(&*self.partitioner),
        }
    }
}

fn unwrap<M, R>(e: SendError<Wire<M, R>>) -> SendError<M> {
    e.map(Wire::into_payload)
}

impl<M: Send + 'static, R: Send + 'static> PoolSender<M, R> {
    pub(crate) fn new(outbox: Outbox<M, R>, partitioner: Arc<dyn Partitioner>) -> Self {
        Self {
            outbox,
            rule: Route::of(&*partitioner),
            partitioner,
        }
    }

    pub(crate) fn outbox(&self) -> &Outbox<M, R> {
        &self.outbox
    }

    /// Workers reachable.
    pub fn len(&self) -> usize {
        self.outbox.len()
    }

    /// Whether there are no workers (never true for a built group).
    pub fn is_empty(&self) -> bool {
        self.outbox.len() == 0
    }

    /// The worker the partitioner picks for routing key `key` (for a
    /// round-robin partitioner, its shared counter's next pick; the sends
    /// use this sender's own cursor).
    #[inline]
    pub fn route(&self, key: u64) -> usize {
        self.partitioner.partition(key, self.outbox.len())
    }

    /// The worker this sender's sends to `key` go to, advancing its own
    /// round-robin cursor.
    #[inline(always)]
    fn pick(&mut self, key: u64) -> usize {
        self.rule.pick(&*self.partitioner, key, self.outbox.len())
    }

    /// Sends to worker `index`, waiting while its queue is full.
    ///
    /// # Errors
    /// `NoSuchWorker` or `Stopped`, with the message.
    #[inline]
    pub fn send_to_worker(&mut self, index: usize, msg: M) -> Result<(), SendError<M>> {
        self.outbox.send_msg_until(index, msg, None, None)
    }

    /// Sends to worker `index` without waiting.
    ///
    /// # Errors
    /// `Full`, `NoSuchWorker` or `Stopped`, with the message.
    #[inline]
    pub fn try_send_to_worker(&mut self, index: usize, msg: M) -> Result<(), SendError<M>> {
        self.outbox.try_send_msg(index, msg, None)
    }

    /// Sends to worker `index`, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, `NoSuchWorker` or `Stopped`, with the message.
    pub fn send_to_worker_timeout(
        &mut self,
        index: usize,
        msg: M,
        timeout: Duration,
    ) -> Result<(), SendError<M>> {
        let deadline = crate::channel::wait::deadline_after(timeout);
        self.outbox.send_msg_until(index, msg, None, deadline)
    }

    /// Sends to the worker that owns `key` (same key, same worker), waiting
    /// while its queue is full. The envelope carries the key's hash.
    ///
    /// # Errors
    /// `Stopped`, or `NoSuchWorker` if the partitioner maps out of range.
    #[inline]
    pub fn send_partitioned<K: Hash + ?Sized>(
        &mut self,
        key: &K,
        msg: M,
    ) -> Result<(), SendError<M>> {
        self.send_by_value(hash_key(key), msg)
    }

    /// Like [`send_partitioned`](Self::send_partitioned) without waiting.
    ///
    /// # Errors
    /// `Full`, `Stopped` or `NoSuchWorker`, with the message.
    #[inline]
    pub fn try_send_partitioned<K: Hash + ?Sized>(
        &mut self,
        key: &K,
        msg: M,
    ) -> Result<(), SendError<M>> {
        let key = hash_key(key);
        let index = self.pick(key);
        self.outbox.try_send_msg(index, msg, Some(key))
    }

    /// Sends to the worker the partitioner picks for the raw routing value
    /// `value` (use with a [`RangePartitioner`](crate::partition::RangePartitioner)
    /// over ordered keys).
    ///
    /// # Errors
    /// `Stopped`, or `NoSuchWorker` if the partitioner maps out of range.
    #[inline]
    pub fn send_by_value(&mut self, value: u64, msg: M) -> Result<(), SendError<M>> {
        let index = self.pick(value);
        self.outbox.send_msg_until(index, msg, Some(value), None)
    }

    /// Sends a batch of messages for one key's worker, publishing many at once.
    ///
    /// # Errors
    /// `Stopped` or `NoSuchWorker` with the messages not sent.
    pub fn send_batch_partitioned<K, I>(
        &mut self,
        key: &K,
        msgs: I,
    ) -> Result<(), SendError<Vec<M>>>
    where
        K: Hash + ?Sized,
        I: IntoIterator<Item = M>,
    {
        let key = hash_key(key);
        let index = self.pick(key);
        self.outbox.send_batch(index, Some(key), msgs)
    }

    /// Sends a batch of messages to worker `index`, publishing many at once.
    ///
    /// # Errors
    /// `Stopped` or `NoSuchWorker` with the messages not sent.
    pub fn send_batch_to_worker<I>(
        &mut self,
        index: usize,
        msgs: I,
    ) -> Result<(), SendError<Vec<M>>>
    where
        I: IntoIterator<Item = M>,
    {
        self.outbox.send_batch(index, None, msgs)
    }

    /// Sends a request to worker `index`; the worker answers with
    /// [`Envelope::reply`](crate::worker::Envelope::reply).
    ///
    /// # Errors
    /// `NoSuchWorker` or `Stopped`, with the message.
    pub fn request(&mut self, index: usize, msg: M) -> Result<Pending<R>, SendError<M>> {
        let (reply_to, pending) = self.outbox.reply_pair(index);
        let env = self.outbox.wire(msg, None).with_reply(reply_to);
        self.outbox.send_until(index, env, None).map_err(unwrap)?;
        Ok(pending)
    }

    /// Sends a request to the worker that owns `key`.
    ///
    /// # Errors
    /// `NoSuchWorker` or `Stopped`, with the message.
    pub fn request_partitioned<K: Hash + ?Sized>(
        &mut self,
        key: &K,
        msg: M,
    ) -> Result<Pending<R>, SendError<M>> {
        let key = hash_key(key);
        let index = self.pick(key);
        let (reply_to, pending) = self.outbox.reply_pair(index);
        let env = self.outbox.wire(msg, Some(key)).with_reply(reply_to);
        self.outbox.send_until(index, env, None).map_err(unwrap)?;
        Ok(pending)
    }
}

/// Async sends: each awaits room in the target worker's queue without
/// blocking the thread (see [`crate::worker::SendAsync`]); the worker is
/// picked when the method is called.
impl<M: Send + 'static, R: Send + 'static> PoolSender<M, R> {
    /// Sends to worker `index`, awaiting room while its queue is full. The
    /// future holds the message until it is sent: dropping it drops the
    /// message, unsent.
    ///
    /// # Errors
    /// The future resolves to `NoSuchWorker` or `Stopped`, with the message.
    pub fn send_to_worker_async(&mut self, index: usize, msg: M) -> SendAsync<'_, M, R> {
        SendAsync::new(Reserve::new(&mut self.outbox, index, None), msg)
    }

    /// Sends to the worker that owns `key`, awaiting room while its queue
    /// is full (as [`send_partitioned`](Self::send_partitioned) without
    /// parking the thread).
    ///
    /// # Errors
    /// The future resolves to `Stopped`, or `NoSuchWorker` if the
    /// partitioner maps out of range, with the message.
    pub fn send_partitioned_async<K: Hash + ?Sized>(
        &mut self,
        key: &K,
        msg: M,
    ) -> SendAsync<'_, M, R> {
        SendAsync::new(self.reserve_partitioned_async(key), msg)
    }

    /// Sends a request to worker `index`, awaiting room; resolves to the
    /// [`Pending`] reply, itself a future.
    ///
    /// # Errors
    /// The future resolves to `NoSuchWorker` or `Stopped`, with the message.
    pub fn request_async(&mut self, index: usize, msg: M) -> RequestAsync<'_, M, R> {
        RequestAsync::new(Reserve::new(&mut self.outbox, index, None), msg)
    }

    /// Sends a request to the worker that owns `key`, awaiting room;
    /// resolves to the [`Pending`] reply, itself a future.
    ///
    /// ```
    /// use shared_nothing::prelude::*;
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct U(std::thread::Thread);
    /// #     impl std::task::Wake for U { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let w = std::task::Waker::from(std::sync::Arc::new(U(std::thread::current())));
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut std::task::Context::from_waker(&w)) { return v }
    /// #         std::thread::park();
    /// #     }
    /// # }
    ///
    /// /// Counts per key; each worker owns the keys routed to it.
    /// struct Counter;
    /// impl Worker for Counter {
    ///     type State = std::collections::HashMap<String, u64>;
    ///     type Message = String;
    ///     type Reply = u64;
    ///     fn init(&mut self) -> Result<Self::State> { Ok(Default::default()) }
    ///     fn handle_message(&mut self, counts: &mut Self::State, mut m: Envelope<String, u64>) -> Result<()> {
    ///         let n = counts.entry(m.payload.clone()).or_default();
    ///         *n += 1;
    ///         let n = *n;
    ///         m.reply(n)?;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let pool = WorkerPool::builder().factory(|| Counter).workers(2).build().unwrap();
    /// let mut tx = pool.sender();
    /// let counts = block_on(async {
    ///     let mut seen = Vec::new();
    ///     for key in ["a", "b", "a"] {
    ///         let reply = tx.request_partitioned_async(key, key.to_string()).await.unwrap();
    ///         seen.push(reply.await.unwrap());
    ///     }
    ///     seen
    /// });
    /// assert_eq!(counts, [1, 1, 2]);
    /// ```
    ///
    /// # Errors
    /// The future resolves to `Stopped`, or `NoSuchWorker` if the
    /// partitioner maps out of range, with the message.
    pub fn request_partitioned_async<K: Hash + ?Sized>(
        &mut self,
        key: &K,
        msg: M,
    ) -> RequestAsync<'_, M, R> {
        RequestAsync::new(self.reserve_partitioned_async(key), msg)
    }

    /// Awaits a free slot in the queue to worker `index`; the
    /// [`Permit`](crate::worker::Permit) sends or requests without finding
    /// it full.
    ///
    /// # Errors
    /// The future resolves to `NoSuchWorker` or `Stopped(())`.
    pub fn reserve_to_worker_async(&mut self, index: usize) -> Reserve<'_, M, R> {
        Reserve::new(&mut self.outbox, index, None)
    }

    /// Awaits a free slot in the queue to the worker that owns `key`; the
    /// [`Permit`](crate::worker::Permit)'s envelope carries the key's hash.
    ///
    /// # Errors
    /// The future resolves to `Stopped(())`, or `NoSuchWorker` if the
    /// partitioner maps out of range.
    pub fn reserve_partitioned_async<K: Hash + ?Sized>(&mut self, key: &K) -> Reserve<'_, M, R> {
        let key = hash_key(key);
        let index = self.pick(key);
        Reserve::new(&mut self.outbox, index, Some(key))
    }
}

impl<M: Send + 'static, R: Send + 'static> PoolSender<M, R> {
    /// Waits until every worker of the group has handled every message sent
    /// to it before this call, from this sender and from every other: a
    /// barrier across senders (order alone holds only per sender). All
    /// workers are asked at once.
    ///
    /// ```
    /// use shared_nothing::prelude::*;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// struct Count(Arc<AtomicU64>);
    /// impl Worker for Count {
    ///     type State = ();
    ///     type Message = u64;
    ///     type Reply = ();
    ///     fn init(&mut self) -> Result<()> { Ok(()) }
    ///     fn handle_message(&mut self, _: &mut (), m: Envelope<u64>) -> Result<()> {
    ///         self.0.fetch_add(m.payload, Ordering::Relaxed);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let total = Arc::new(AtomicU64::new(0));
    /// let t = total.clone();
    /// let pool = WorkerPool::builder()
    ///     .factory(move || Count(t.clone()))
    ///     .workers(2)
    ///     .build()
    ///     .unwrap();
    /// let producers: Vec<_> = (0..4u64)
    ///     .map(|p| {
    ///         let mut tx = pool.sender();
    ///         std::thread::spawn(move || {
    ///             (0..1000u64).for_each(|k| tx.send_partitioned(&(p, k), 1).unwrap())
    ///         })
    ///     })
    ///     .collect();
    /// producers.into_iter().for_each(|p| p.join().unwrap());
    /// pool.sender().flush().unwrap();
    /// assert_eq!(total.load(Ordering::Relaxed), 4000);
    /// ```
    ///
    /// # Errors
    /// [`FlushError::Stopped`] if a worker exits first.
    pub fn flush(&self) -> Result<(), FlushError> {
        self.outbox.flush(None)
    }

    /// [`flush`](Self::flush) with one deadline for all workers.
    ///
    /// # Errors
    /// As `flush`, and [`FlushError::Timeout`].
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), FlushError> {
        self.outbox.flush(Some(timeout))
    }
}

impl<M: Send + Clone + 'static, R: Send + 'static> PoolSender<M, R> {
    /// Scatter: sends a copy of the request `msg` to every worker, in index
    /// order; gather the replies from the returned handles (index order).
    ///
    /// # Errors
    /// The first worker that does not take its copy, with that copy; the
    /// requests sent before it stay queued (their handles are dropped).
    pub fn request_all(&mut self, msg: M) -> Result<Vec<Pending<R>>, SendError<M>> {
        self.scatter(msg).map_err(|(_, e)| e)
    }

    /// One request per worker, in index order; `Err` names the worker that
    /// did not take its copy.
    fn scatter(&mut self, msg: M) -> Result<Vec<Pending<R>>, (usize, SendError<M>)> {
        (0..self.outbox.len())
            .map(|i| self.request(i, msg.clone()).map_err(|e| (i, e)))
            .collect()
    }

    /// Scatter-gather: requests every worker (as [`request_all`](Self::request_all))
    /// and collects the replies in index order, waiting at most `timeout` in
    /// all.
    ///
    /// # Errors
    /// [`GatherError::Send`] for a worker that did not take the request,
    /// [`GatherError::Reply`] for the first one that did not answer in time
    /// (or will never answer).
    pub fn request_all_timeout(
        &mut self,
        msg: M,
        timeout: Duration,
    ) -> Result<Vec<R>, GatherError> {
        let deadline = std::time::Instant::now() + timeout;
        let pending = self.scatter(msg).map_err(|(index, e)| GatherError::Send {
            index,
            error: e.map(|_| ()),
        })?;
        pending
            .into_iter()
            .enumerate()
            .map(|(index, p)| {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                p.wait_timeout(left)
                    .map_err(|error| GatherError::Reply { index, error })
            })
            .collect()
    }

    /// Sends a copy of `msg` to every worker.
    ///
    /// # Errors
    /// `Stopped` (with the message) if any worker is gone; workers before it
    /// in index order have received their copy.
    pub fn broadcast(&mut self, msg: M) -> Result<(), SendError<M>> {
        for i in 0..self.outbox.len() {
            self.send_to_worker(i, msg.clone())?;
        }
        Ok(())
    }
}
