//! Handles to a running worker: the owning [`WorkerHandle`] and cloneable
//! [`WorkerSender`]s.

use super::async_send::{RequestAsync, Reserve, SendAsync};
use super::envelope::Wire;
use super::error::{FlushError, SendError};
use super::event::WorkerEvent;
use super::outbox::Outbox;
use super::reply::Pending;
use super::shared::{Control, WorkerShared};
use super::stats::{WorkerState, WorkerStats};
use crate::Result;
use crate::channel::wait::deadline_after;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Reports from one worker or a pool of them (see [`WorkerEvent`]).
#[derive(Debug, Clone)]
pub struct EventStream {
    rx: crossbeam_channel::Receiver<WorkerEvent>,
}

impl EventStream {
    pub(crate) fn new(rx: crossbeam_channel::Receiver<WorkerEvent>) -> Self {
        Self { rx }
    }

    /// The next event if one is waiting.
    pub fn try_next(&self) -> Option<WorkerEvent> {
        self.rx.try_recv().ok()
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_timeout(&self, timeout: Duration) -> Option<WorkerEvent> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Every event waiting now.
    pub fn drain(&self) -> Vec<WorkerEvent> {
        self.rx.try_iter().collect()
    }
}

/// A cloneable handle that sends to one worker. Each clone has its own ring
/// into the worker, so clones on different threads never contend.
///
/// ```
/// use shared_nothing::prelude::*;
/// struct Sum;
/// impl Worker for Sum {
///     type State = u64;
///     type Message = u64;
///     type Reply = ();
///     fn init(&mut self) -> Result<u64> { Ok(0) }
///     fn handle_message(&mut self, s: &mut u64, m: Envelope<u64>) -> Result<()> { *s += m.payload; Ok(()) }
/// }
/// let mut w = shared_nothing::worker::spawn(Sum, WorkerConfig::new()).unwrap();
/// let threads: Vec<_> = (0..4).map(|_| {
///     let mut tx = w.sender();
///     std::thread::spawn(move || for i in 0..100 { tx.send(i).unwrap() })
/// }).collect();
/// threads.into_iter().for_each(|t| t.join().unwrap());
/// w.stop().unwrap();
/// assert_eq!(w.stats().handled, 400);
/// ```
#[derive(Debug)]
pub struct WorkerSender<M: Send + 'static, R: Send + 'static = ()> {
    outbox: Outbox<M, R>,
}

impl<M: Send + 'static, R: Send + 'static> Clone for WorkerSender<M, R> {
    fn clone(&self) -> Self {
        Self {
            outbox: self.outbox.clone(),
        }
    }
}

impl<M: Send + 'static, R: Send + 'static> WorkerSender<M, R> {
    pub(crate) fn from_outbox(outbox: Outbox<M, R>) -> Self {
        Self { outbox }
    }

    /// Sends, waiting while this sender's queue is full.
    ///
    /// # Errors
    /// `Stopped` (with the message) if the worker is gone.
    #[inline]
    pub fn send(&mut self, msg: M) -> Result<(), SendError<M>> {
        self.outbox.send_msg_until(0, msg, None, None)
    }

    /// Sends without waiting.
    ///
    /// # Errors
    /// `Full` or `Stopped`, with the message.
    #[inline]
    pub fn try_send(&mut self, msg: M) -> Result<(), SendError<M>> {
        self.outbox.try_send_msg(0, msg, None)
    }

    /// Sends, waiting at most `timeout` while the queue is full.
    ///
    /// # Errors
    /// `Timeout` or `Stopped`, with the message.
    pub fn send_timeout(&mut self, msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        self.outbox
            .send_msg_until(0, msg, None, deadline_after(timeout))
    }

    /// Sends every message in order, publishing many at once.
    ///
    /// # Errors
    /// `Stopped` with the messages not sent.
    pub fn send_batch<I: IntoIterator<Item = M>>(
        &mut self,
        msgs: I,
    ) -> Result<(), SendError<Vec<M>>> {
        self.outbox.send_batch(0, None, msgs)
    }

    /// Sends a request; the worker answers with [`Envelope::reply`](crate::worker::Envelope::reply).
    ///
    /// # Errors
    /// `Stopped` with the message if the worker is gone.
    pub fn request(&mut self, msg: M) -> Result<Pending<R>, SendError<M>> {
        let (reply_to, pending) = self.outbox.reply_pair(0);
        let env = self.outbox.wire(msg, None).with_reply(reply_to);
        self.outbox
            .send_until(0, env, None)
            .map_err(|e| e.map(Wire::into_payload))?;
        Ok(pending)
    }

    /// Sends, awaiting room while this sender's queue is full, without
    /// blocking the thread: the task's waker is registered with the ring
    /// and woken when the worker frees a slot or exits.
    ///
    /// The future holds `msg` until it is sent; dropping it before then
    /// drops the message, unsent (see [`reserve_async`](Self::reserve_async)
    /// to build the message only once there is room).
    ///
    /// # Errors
    /// The future resolves to `Stopped` with the message if the worker is
    /// gone.
    ///
    /// ```
    /// # use shared_nothing::prelude::*;
    /// # struct Sum;
    /// # impl Worker for Sum {
    /// #     type State = u64;
    /// #     type Message = u64;
    /// #     type Reply = ();
    /// #     fn init(&mut self) -> Result<u64> { Ok(0) }
    /// #     fn handle_message(&mut self, s: &mut u64, m: Envelope<u64>) -> Result<()> { *s += m.payload; Ok(()) }
    /// # }
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
    /// let mut w = shared_nothing::worker::spawn(Sum, WorkerConfig::new().with_queue_capacity(4)).unwrap();
    /// let mut tx = w.sender();
    /// block_on(async {
    ///     for i in 0..100 {
    ///         tx.send_async(i).await.unwrap(); // waits for room, never parks a thread
    ///     }
    /// });
    /// w.stop().unwrap();
    /// assert_eq!(w.stats().handled, 100);
    /// ```
    pub fn send_async(&mut self, msg: M) -> SendAsync<'_, M, R> {
        SendAsync::new(self.reserve_async(), msg)
    }

    /// Sends a request, awaiting room as [`send_async`](Self::send_async);
    /// the future resolves to the [`Pending`] reply, itself a future.
    ///
    /// # Errors
    /// The future resolves to `Stopped` with the message if the worker is
    /// gone.
    pub fn request_async(&mut self, msg: M) -> RequestAsync<'_, M, R> {
        RequestAsync::new(self.reserve_async(), msg)
    }

    /// Awaits a free slot in this sender's queue; the [`Permit`](super::Permit)
    /// it resolves to sends (or requests) without finding the queue full.
    /// Dropping the future, or the permit unused, sends nothing.
    ///
    /// # Errors
    /// The future resolves to `Stopped(())` if the worker is gone.
    pub fn reserve_async(&mut self) -> Reserve<'_, M, R> {
        Reserve::new(&mut self.outbox, 0, None)
    }

    /// Waits until the worker has handled every message sent to it before
    /// this call, from this sender and from every other: a barrier across
    /// senders (order alone holds only per sender). Messages sent while it
    /// waits may or may not be included. A paused worker completes the flush
    /// once resumed.
    ///
    /// # Errors
    /// [`FlushError::Stopped`] if the worker exits first (a graceful stop
    /// handles everything, so it completes the flush instead).
    pub fn flush(&self) -> Result<(), FlushError> {
        self.outbox.flush(None)
    }

    /// [`flush`](Self::flush) with a deadline.
    ///
    /// # Errors
    /// As `flush`, and [`FlushError::Timeout`].
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), FlushError> {
        self.outbox.flush(Some(timeout))
    }
}

/// The owner's handle to a worker started with [`spawn`](super::spawn):
/// sends messages and controls the worker's life. Dropping it stops the
/// worker gracefully.
#[derive(Debug)]
pub struct WorkerHandle<M: Send + 'static, R: Send + 'static = ()> {
    sender: WorkerSender<M, R>,
    shared: Arc<WorkerShared<M, R>>,
    join: Option<JoinHandle<Result<()>>>,
}

impl<M: Send + 'static, R: Send + 'static> WorkerHandle<M, R> {
    pub(crate) fn new(
        outbox: Outbox<M, R>,
        shared: Arc<WorkerShared<M, R>>,
        join: JoinHandle<Result<()>>,
    ) -> Self {
        Self {
            sender: WorkerSender { outbox },
            shared,
            join: Some(join),
        }
    }

    /// Sends, waiting while the queue is full. See [`WorkerSender::send`].
    ///
    /// # Errors
    /// `Stopped` with the message if the worker is gone.
    #[inline]
    pub fn send(&mut self, msg: M) -> Result<(), SendError<M>> {
        self.sender.send(msg)
    }

    /// Sends without waiting. See [`WorkerSender::try_send`].
    ///
    /// # Errors
    /// `Full` or `Stopped`, with the message.
    #[inline]
    pub fn try_send(&mut self, msg: M) -> Result<(), SendError<M>> {
        self.sender.try_send(msg)
    }

    /// Sends, waiting at most `timeout`. See [`WorkerSender::send_timeout`].
    ///
    /// # Errors
    /// `Timeout` or `Stopped`, with the message.
    pub fn send_timeout(&mut self, msg: M, timeout: Duration) -> Result<(), SendError<M>> {
        self.sender.send_timeout(msg, timeout)
    }

    /// Sends many messages at once. See [`WorkerSender::send_batch`].
    ///
    /// # Errors
    /// `Stopped` with the messages not sent.
    pub fn send_batch<I: IntoIterator<Item = M>>(
        &mut self,
        msgs: I,
    ) -> Result<(), SendError<Vec<M>>> {
        self.sender.send_batch(msgs)
    }

    /// Sends a request. See [`WorkerSender::request`].
    ///
    /// # Errors
    /// `Stopped` with the message if the worker is gone.
    pub fn request(&mut self, msg: M) -> Result<Pending<R>, SendError<M>> {
        self.sender.request(msg)
    }

    /// Sends, awaiting room without blocking the thread. See
    /// [`WorkerSender::send_async`].
    ///
    /// # Errors
    /// The future resolves to `Stopped` with the message if the worker is
    /// gone.
    pub fn send_async(&mut self, msg: M) -> SendAsync<'_, M, R> {
        self.sender.send_async(msg)
    }

    /// Sends a request, awaiting room. See [`WorkerSender::request_async`].
    ///
    /// # Errors
    /// The future resolves to `Stopped` with the message if the worker is
    /// gone.
    pub fn request_async(&mut self, msg: M) -> RequestAsync<'_, M, R> {
        self.sender.request_async(msg)
    }

    /// Awaits a free slot. See [`WorkerSender::reserve_async`].
    ///
    /// # Errors
    /// The future resolves to `Stopped(())` if the worker is gone.
    pub fn reserve_async(&mut self) -> Reserve<'_, M, R> {
        self.sender.reserve_async()
    }

    /// Waits until the worker has handled everything sent to it before
    /// this call, by any sender. See [`WorkerSender::flush`].
    ///
    /// # Errors
    /// As [`WorkerSender::flush`].
    pub fn flush(&self) -> Result<(), FlushError> {
        self.sender.flush()
    }

    /// [`flush`](Self::flush) with a deadline.
    ///
    /// # Errors
    /// As [`WorkerSender::flush_timeout`].
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), FlushError> {
        self.sender.flush_timeout(timeout)
    }

    /// A new cloneable sender with its own ring into the worker.
    pub fn sender(&self) -> WorkerSender<M, R> {
        self.sender.clone()
    }

    /// Stops handling messages (they queue up) until [`resume`](Self::resume).
    ///
    /// # Errors
    /// `WorkerStopped` if the worker is gone.
    pub fn pause(&self) -> Result<()> {
        self.shared.control(Control::Pause)
    }

    /// Resumes after [`pause`](Self::pause).
    ///
    /// # Errors
    /// `WorkerStopped` if the worker is gone.
    pub fn resume(&self) -> Result<()> {
        self.shared.control(Control::Resume)
    }

    /// Round trip through the worker's control path: proves its loop is alive
    /// (also while paused) and measures how responsive it is.
    ///
    /// # Errors
    /// `Timeout` if no answer came in time; `WorkerStopped` if it is gone.
    pub fn ping(&self, timeout: Duration) -> Result<Duration> {
        self.shared.ping(timeout)
    }

    /// Stops gracefully: the worker handles every message queued before it
    /// sees the stop (from this handle and every sender), runs `shutdown`,
    /// and exits. Sends after that fail with `Stopped`. Idempotent.
    ///
    /// # Errors
    /// The worker's failure if it gave up after panics, or `shutdown`'s error.
    pub fn stop(&mut self) -> Result<()> {
        if self.join.is_none() {
            return Ok(());
        }
        // If the worker already exited, the stop is moot; join reports why.
        let _ = self.shared.send_control(Control::Stop);
        self.join()
    }

    /// Waits for the worker to exit (after `stop`, or after it gave up).
    ///
    /// # Errors
    /// As [`stop`](Self::stop).
    pub fn join(&mut self) -> Result<()> {
        match self.join.take() {
            None => Ok(()),
            Some(j) => self.shared.join(j),
        }
    }

    /// The worker's counters.
    pub fn stats(&self) -> WorkerStats {
        self.shared.stats.snapshot()
    }

    /// The worker's lifecycle state.
    pub fn state(&self) -> WorkerState {
        self.shared.stats.state()
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The worker's event reports.
    pub fn events(&self) -> EventStream {
        EventStream::new(self.shared.events().receiver())
    }
}

impl<M: Send + 'static, R: Send + 'static> Drop for WorkerHandle<M, R> {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
