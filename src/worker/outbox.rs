//! A sender's private rings into a set of workers.
//!
//! Every sending handle owns one SPSC ring per worker it can reach, so a
//! message from one producer thread to one worker crosses exactly one ring
//! and never contends with other producers (Seastar's mesh of smp queues).
//! Cloning a handle builds fresh rings and attaches their consumer ends to
//! the workers through the control queue.

use super::config::WorkerConfig;
use super::envelope::Wire;
use super::error::{FlushError, SendError};
use super::mailbox::{MailError, MailSender, mailbox};
use super::reply::{Pending, ReplyTo};
use super::shared::{Control, WorkerShared};
use crate::channel::wait::{Step, Waiter};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a sender's rings are built with, and what its messages carry
/// besides their payloads: the send time (`tracing`) and the routing key
/// (`keys`), both only if the workers asked for them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendConfig {
    pub(crate) capacity: usize,
    pub(crate) tracing: bool,
    pub(crate) keys: bool,
}

impl SendConfig {
    pub(crate) fn of(config: &WorkerConfig) -> Self {
        Self {
            capacity: config.queue_capacity(),
            tracing: config.tracing,
            keys: config.routing_keys,
        }
    }
}

/// One producer's rings into every worker of a group.
pub(crate) struct Outbox<M, R = ()> {
    workers: Arc<[Arc<WorkerShared<M, R>>]>,
    rings: Vec<MailSender<M, R>>,
    config: SendConfig,
}

impl<M, R> std::fmt::Debug for Outbox<M, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("workers", &self.workers.len())
            .field("config", &self.config)
            .finish()
    }
}

impl<M: Send + 'static, R: Send + 'static> Outbox<M, R> {
    /// An outbox over rings whose consumers were handed to the workers at
    /// spawn time.
    pub(crate) fn from_rings(
        workers: Arc<[Arc<WorkerShared<M, R>>]>,
        rings: Vec<MailSender<M, R>>,
        config: SendConfig,
    ) -> Self {
        debug_assert_eq!(workers.len(), rings.len());
        Self {
            workers,
            rings,
            config,
        }
    }

    /// A new outbox with fresh rings attached to every worker.
    pub(crate) fn connect(workers: Arc<[Arc<WorkerShared<M, R>>]>, config: SendConfig) -> Self {
        let rings = workers
            .iter()
            .map(|w| {
                let (p, c) = mailbox(config.capacity, w.signal.clone());
                // If the worker has exited the consumer comes back and is
                // dropped here, which closes the ring: sends then fail with
                // `Stopped`, nothing is accepted and lost.
                let _ = w.send_control(Control::Attach(c));
                p
            })
            .collect();
        Self {
            workers,
            rings,
            config,
        }
    }

    /// A new outbox to worker `index` alone, with this one's settings.
    pub(crate) fn connect_one(&self, index: usize) -> Option<Self> {
        let w = self.workers.get(index)?.clone();
        Some(Self::connect(vec![w].into(), self.config))
    }

    pub(crate) fn len(&self) -> usize {
        self.rings.len()
    }

    /// Waits until every worker this outbox reaches has handled everything
    /// sent to it, by any sender, before the call: a barrier across senders.
    /// All workers are asked first, then awaited against one deadline.
    pub(crate) fn flush(&self, timeout: Option<Duration>) -> Result<(), FlushError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let waits = self
            .workers
            .iter()
            .map(|w| w.start_flush().map(|rx| (w, rx)))
            .collect::<Result<Vec<_>, _>>()?;
        for (w, rx) in waits {
            let answer = match deadline {
                None => rx.recv().map_err(|_| w.flush_stopped()),
                Some(d) => rx.recv_deadline(d).map_err(|e| match e {
                    crossbeam_channel::RecvTimeoutError::Timeout => FlushError::Timeout,
                    crossbeam_channel::RecvTimeoutError::Disconnected => w.flush_stopped(),
                }),
            };
            answer?;
        }
        Ok(())
    }

    /// A reply slot for a request to worker `index`, tied to its life.
    pub(crate) fn reply_pair(&self, index: usize) -> (ReplyTo<R>, Pending<R>) {
        super::reply::pair(self.workers.get(index).map(|w| w.life.clone()))
    }

    /// `msg` with what its worker asked messages to carry: the routing
    /// key only if it asked for keys, the send time if tracing.
    #[inline(always)]
    pub(crate) fn wire(&self, msg: M, key: Option<u64>) -> Wire<M, R> {
        let key = if self.config.keys { key } else { None };
        Wire::build(msg, key, self.config.tracing)
    }

    /// `value` back as `NoSuchWorker` unless ring `index` exists.
    #[inline]
    fn in_range<V>(&self, index: usize, value: V) -> Result<V, SendError<V>> {
        if index < self.rings.len() {
            Ok(value)
        } else {
            Err(SendError::NoSuchWorker {
                index,
                len: self.rings.len(),
                message: value,
            })
        }
    }

    /// Whether a message sent with `key` carries metadata (and so goes
    /// through the lane).
    #[inline(always)]
    fn carries_meta(&self, key: Option<u64>) -> bool {
        self.config.tracing || (self.config.keys && key.is_some())
    }

    /// Pushes `msg` without blocking, into a slot reserved first (the value
    /// is written straight into it, see `Producer::push_reserved`). A
    /// message without metadata is its payload alone; one with metadata
    /// takes the lane's path, out of line.
    #[inline(always)]
    pub(crate) fn try_send_msg(
        &mut self,
        index: usize,
        msg: M,
        key: Option<u64>,
    ) -> Result<(), SendError<M>> {
        let msg = self.in_range(index, msg)?;
        let meta = self.carries_meta(key);
        let ring = &mut self.rings[index];
        match ring.reserve() {
            Ok(()) => {}
            Err(true) => return Err(SendError::Stopped(msg)),
            Err(false) => return Err(SendError::Full(msg)),
        }
        if !meta {
            return ring.push_payload(msg).map_err(SendError::Stopped);
        }
        self.push_reserved_msg(index, msg, key)
    }

    /// Like `try_send_msg`, waiting while the ring is full, until `deadline`.
    // The first attempt inline, the wait out of line: as one inlined loop
    // its size made the compiler call it out of line wherever a program
    // sent from more than one place, and a send cost a call and the
    // waiter's set-up (measured: 157 against 59 Mmsg/s for the same loop,
    // `benches/worker_pool.rs`).
    #[inline(always)]
    pub(crate) fn send_msg_until(
        &mut self,
        index: usize,
        msg: M,
        key: Option<u64>,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<M>> {
        match self.try_send_msg(index, msg, key) {
            Err(SendError::Full(msg)) => self.send_msg_blocked(index, msg, key, deadline),
            done => done,
        }
    }

    #[inline(never)]
    fn send_msg_blocked(
        &mut self,
        index: usize,
        msg: M,
        key: Option<u64>,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<M>> {
        self.retry_until(index, msg, deadline, |o, m| o.try_send_msg(index, m, key))
    }

    /// Repeats `attempt` while it reports `Full`, spinning, yielding, then
    /// parking until ring `index` has room, until `deadline`.
    #[inline]
    fn retry_until<V>(
        &mut self,
        index: usize,
        mut value: V,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut Self, V) -> Result<(), SendError<V>>,
    ) -> Result<(), SendError<V>> {
        let mut waiter = Waiter::new(deadline);
        loop {
            match attempt(self, value) {
                Err(SendError::Full(v)) => value = v,
                other => return other,
            }
            match waiter.step() {
                Step::Retry => {}
                // `Full` is only reported for an existing ring.
                Step::Park(t) => self.rings[index].wait_for_space(t),
                Step::TimedOut => return Err(SendError::Timeout(value)),
            }
        }
    }

    /// Ring `index`'s half of the async sends (see `super::async_send`):
    /// `Ready(Ok(()))` once it has a free slot, `Pending` with the task's
    /// waker registered with the ring while it is full.
    pub(crate) fn poll_reserve(
        &mut self,
        index: usize,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), SendError<()>>> {
        let ring = match self.in_range(index, ()) {
            Ok(()) => &mut self.rings[index],
            Err(e) => return std::task::Poll::Ready(Err(e)),
        };
        ring.poll_reserve(cx)
            .map(|r| r.map_err(|()| SendError::Stopped(())))
    }

    /// Withdraws the waker `poll_reserve` registered on ring `index`, if any.
    pub(crate) fn cancel_reserve(&mut self, index: usize) {
        if let Some(ring) = self.rings.get_mut(index) {
            ring.cancel_reserve();
        }
    }

    /// Builds and pushes `msg` into the slot `reserve` or `poll_reserve`
    /// found.
    #[inline(never)]
    pub(crate) fn push_reserved_msg(
        &mut self,
        index: usize,
        msg: M,
        key: Option<u64>,
    ) -> Result<(), SendError<M>> {
        let wire = self.wire(msg, key);
        self.push_reserved(index, wire)
            .map_err(|e| e.map(Wire::into_payload))
    }

    /// Pushes `wire` into the slot `poll_reserve` found.
    pub(crate) fn push_reserved(
        &mut self,
        index: usize,
        wire: Wire<M, R>,
    ) -> Result<(), SendError<Wire<M, R>>> {
        self.rings[index]
            .push_reserved(wire)
            .map_err(SendError::Stopped)
    }

    /// Pushes without blocking.
    #[inline]
    pub(crate) fn try_send(
        &mut self,
        index: usize,
        env: Wire<M, R>,
    ) -> Result<(), SendError<Wire<M, R>>> {
        let env = self.in_range(index, env)?;
        self.rings[index].try_push(env).map_err(|e| match e {
            MailError::Full(v) => SendError::Full(v),
            MailError::Closed(v) => SendError::Stopped(v),
        })
    }

    /// Pushes, waiting while the ring is full, until `deadline`.
    pub(crate) fn send_until(
        &mut self,
        index: usize,
        env: Wire<M, R>,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<Wire<M, R>>> {
        self.retry_until(index, env, deadline, |o, e| o.try_send(index, e))
    }

    /// Pushes every message to `index` with routing key `key`, publishing a
    /// ring-full at a time and waiting while it is full.
    pub(crate) fn send_batch<I>(
        &mut self,
        index: usize,
        key: Option<u64>,
        msgs: I,
    ) -> Result<(), SendError<Vec<M>>>
    where
        I: IntoIterator<Item = M>,
    {
        let msgs = self
            .in_range(index, msgs)
            .map_err(|e| e.map(|m| m.into_iter().collect()))?;
        let key = if self.config.keys { key } else { None };
        let tracing = self.config.tracing;
        let ring = &mut self.rings[index];
        // Decided once per batch, not per message: payloads alone go in
        // ring-fulls; messages with metadata one by one through the lane.
        if key.is_none() && !tracing {
            push_payloads(ring, msgs.into_iter())
        } else {
            let wires = msgs.into_iter().map(|m| Wire::build(m, key, tracing));
            push_wires(ring, wires)
        }
    }
}

/// Pushes every payload, a ring-full per publication, waiting while full.
fn push_payloads<M, R, I>(ring: &mut MailSender<M, R>, items: I) -> Result<(), SendError<Vec<M>>>
where
    I: Iterator<Item = M>,
{
    let mut items = items.peekable();
    let mut waiter = Waiter::new(None);
    while items.peek().is_some() {
        match ring.push_payloads(&mut items) {
            Ok(0) => {
                if let Step::Park(t) = waiter.step() {
                    ring.wait_for_space(t);
                }
            }
            Ok(_) => waiter = Waiter::new(None),
            Err(back) => return Err(SendError::Stopped(back.into_iter().chain(items).collect())),
        }
    }
    Ok(())
}

/// Pushes every message with its metadata, one at a time, waiting while
/// the ring is full.
fn push_wires<M, R, I>(ring: &mut MailSender<M, R>, items: I) -> Result<(), SendError<Vec<M>>>
where
    I: Iterator<Item = Wire<M, R>>,
{
    let mut items = items.peekable();
    let mut waiter = Waiter::new(None);
    while let Some(wire) = items.next() {
        let mut wire = wire;
        loop {
            match ring.try_push(wire) {
                Ok(()) => {
                    waiter = Waiter::new(None);
                    break;
                }
                Err(MailError::Full(w)) => {
                    wire = w;
                    if let Step::Park(t) = waiter.step() {
                        ring.wait_for_space(t);
                    }
                }
                Err(MailError::Closed(w)) => {
                    let all = std::iter::once(w)
                        .chain(items)
                        .map(Wire::into_payload)
                        .collect();
                    return Err(SendError::Stopped(all));
                }
            }
        }
    }
    Ok(())
}

impl<M: Send + 'static, R: Send + 'static> Clone for Outbox<M, R> {
    fn clone(&self) -> Self {
        Self::connect(self.workers.clone(), self.config)
    }
}
