//! Sends that await room in a full ring instead of blocking the thread.
//!
//! A blocking send ([`WorkerSender::send`](super::WorkerSender::send))
//! spins, yields and then parks its thread while the worker's queue from
//! that sender is full; on an async executor that thread runs other tasks,
//! so parking it stalls them all. The futures here wait for the same room
//! by registering the task's [`Waker`](std::task::Waker) with the ring's
//! producer signal instead, which the worker wakes when it frees a slot,
//! closes the ring or exits (see `Producer::poll_reserve`). While the ring
//! has room they complete on the first poll, at the cost of a `try_send`.
//!
//! [`Reserve`] waits for a slot and yields a [`Permit`] to fill it (so a
//! message, or a request's reply slot, is built only once there is room);
//! [`SendAsync`] and [`RequestAsync`] wait for a slot for a message they
//! hold.
//!
//! **Cancellation.** Dropping one of these futures before it completes
//! withdraws its waker and sends nothing. A [`SendAsync`] or
//! [`RequestAsync`] holds its message until it is sent, so dropping it drops
//! the message with it: nothing is queued, and nothing is lost silently
//! that the caller did not give up (use a [`Reserve`] to keep the message
//! until there is room). A [`Permit`] dropped unused frees its slot.
//!
//! These futures borrow their sender mutably, as the blocking sends do: one
//! send at a time per sender (clone a sender per task).

use super::envelope::Wire;
use super::error::SendError;
use super::outbox::Outbox;
use super::reply::Pending;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// Waits for a free slot in the ring to one worker; resolves to a
/// [`Permit`] that sends into it.
///
/// Created by `reserve_async` on [`WorkerSender`](super::WorkerSender) and
/// [`WorkerHandle`](super::WorkerHandle), and `reserve_to_worker_async` /
/// `reserve_partitioned_async` on [`PoolSender`](crate::pool::PoolSender).
/// Dropping it before it resolves reserves nothing.
///
/// # Errors
/// The future resolves to `Err(SendError::Stopped(()))` if the worker is
/// gone, or `SendError::NoSuchWorker` for an index outside the group.
#[must_use = "futures do nothing unless polled"]
pub struct Reserve<'a, M: Send + 'static, R: Send + 'static = ()> {
    /// `None` once resolved (moved into the permit).
    outbox: Option<&'a mut Outbox<M, R>>,
    index: usize,
    key: Option<u64>,
}

impl<'a, M: Send + 'static, R: Send + 'static> Reserve<'a, M, R> {
    pub(crate) fn new(outbox: &'a mut Outbox<M, R>, index: usize, key: Option<u64>) -> Self {
        Self {
            outbox: Some(outbox),
            index,
            key,
        }
    }
}

impl<M: Send + 'static, R: Send + 'static> fmt::Debug for Reserve<'_, M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reserve")
            .field("worker", &self.index)
            .field("done", &self.outbox.is_none())
            .finish()
    }
}

impl<'a, M: Send + 'static, R: Send + 'static> Future for Reserve<'a, M, R> {
    type Output = Result<Permit<'a, M, R>, SendError<()>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outbox = this
            .outbox
            .as_mut()
            .expect("`Reserve` polled after it resolved");
        let outcome = ready!(outbox.poll_reserve(this.index, cx));
        let outbox = this.outbox.take().expect("checked above");
        Poll::Ready(outcome.map(|()| Permit {
            outbox,
            index: this.index,
            key: this.key,
        }))
    }
}

impl<M: Send + 'static, R: Send + 'static> Drop for Reserve<'_, M, R> {
    fn drop(&mut self) {
        if let Some(outbox) = self.outbox.take() {
            outbox.cancel_reserve(self.index);
        }
    }
}

/// A free slot in the ring to one worker, found by a [`Reserve`]: the send
/// it makes cannot find the queue full.
#[must_use = "a permit sends nothing unless used"]
pub struct Permit<'a, M: Send + 'static, R: Send + 'static = ()> {
    outbox: &'a mut Outbox<M, R>,
    index: usize,
    key: Option<u64>,
}

impl<M: Send + 'static, R: Send + 'static> fmt::Debug for Permit<'_, M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("worker", &self.index)
            .finish()
    }
}

impl<M: Send + 'static, R: Send + 'static> Permit<'_, M, R> {
    /// The worker this permit sends to.
    pub fn worker(&self) -> usize {
        self.index
    }

    /// Sends `msg` into the reserved slot.
    ///
    /// # Errors
    /// `Stopped` with the message if the worker closed its queue after the
    /// slot was reserved.
    pub fn send(self, msg: M) -> Result<(), SendError<M>> {
        self.outbox.push_reserved_msg(self.index, msg, self.key)
    }

    /// Sends `msg` as a request into the reserved slot; the reply slot is
    /// made only now.
    ///
    /// # Errors
    /// As [`Permit::send`].
    pub fn request(self, msg: M) -> Result<Pending<R>, SendError<M>> {
        let (reply_to, pending) = self.outbox.reply_pair(self.index);
        let wire = self.outbox.wire(msg, self.key).with_reply(reply_to);
        self.outbox
            .push_reserved(self.index, wire)
            .map(|()| pending)
            .map_err(|e| e.map(Wire::into_payload))
    }
}

/// Sends one message, awaiting room in the worker's queue.
///
/// Created by `send_async` on [`WorkerSender`](super::WorkerSender) and
/// [`WorkerHandle`](super::WorkerHandle), and `send_to_worker_async` /
/// `send_partitioned_async` on [`PoolSender`](crate::pool::PoolSender).
/// It holds the message until it is sent: dropping the future drops the
/// message, unsent.
///
/// # Errors
/// The future resolves to `Stopped` (or `NoSuchWorker`) with the message.
#[must_use = "futures do nothing unless polled"]
pub struct SendAsync<'a, M: Send + 'static, R: Send + 'static = ()> {
    reserve: Reserve<'a, M, R>,
    msg: Option<M>,
}

impl<'a, M: Send + 'static, R: Send + 'static> SendAsync<'a, M, R> {
    pub(crate) fn new(reserve: Reserve<'a, M, R>, msg: M) -> Self {
        Self {
            reserve,
            msg: Some(msg),
        }
    }
}

// The message is never pinned (it is moved out by value), so the future is
// `Unpin` whatever `M` is.
impl<M: Send + 'static, R: Send + 'static> Unpin for SendAsync<'_, M, R> {}

impl<M: Send + 'static, R: Send + 'static> fmt::Debug for SendAsync<'_, M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendAsync")
            .field("worker", &self.reserve.index)
            .field("sent", &self.msg.is_none())
            .finish()
    }
}

impl<M: Send + 'static, R: Send + 'static> Future for SendAsync<'_, M, R> {
    type Output = Result<(), SendError<M>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = ready!(Pin::new(&mut self.reserve).poll(cx));
        let msg = self
            .msg
            .take()
            .expect("`SendAsync` polled after it resolved");
        Poll::Ready(match outcome {
            Ok(permit) => permit.send(msg),
            Err(e) => Err(e.map(|()| msg)),
        })
    }
}

/// Sends one request, awaiting room in the worker's queue; resolves to the
/// [`Pending`] reply (itself a future).
///
/// Created by `request_async` on [`WorkerSender`](super::WorkerSender) and
/// [`WorkerHandle`](super::WorkerHandle), and `request_async` /
/// `request_partitioned_async` on [`PoolSender`](crate::pool::PoolSender).
/// Dropping it before it resolves drops the message, unsent.
///
/// # Errors
/// The future resolves to `Stopped` (or `NoSuchWorker`) with the message.
#[must_use = "futures do nothing unless polled"]
pub struct RequestAsync<'a, M: Send + 'static, R: Send + 'static = ()> {
    send: SendAsync<'a, M, R>,
}

impl<'a, M: Send + 'static, R: Send + 'static> RequestAsync<'a, M, R> {
    pub(crate) fn new(reserve: Reserve<'a, M, R>, msg: M) -> Self {
        Self {
            send: SendAsync::new(reserve, msg),
        }
    }
}

impl<M: Send + 'static, R: Send + 'static> fmt::Debug for RequestAsync<'_, M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestAsync")
            .field("worker", &self.send.reserve.index)
            .field("sent", &self.send.msg.is_none())
            .finish()
    }
}

impl<M: Send + 'static, R: Send + 'static> Future for RequestAsync<'_, M, R> {
    type Output = Result<Pending<R>, SendError<M>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let send = &mut self.send;
        let outcome = ready!(Pin::new(&mut send.reserve).poll(cx));
        let msg = send
            .msg
            .take()
            .expect("`RequestAsync` polled after it resolved");
        Poll::Ready(match outcome {
            Ok(permit) => permit.request(msg),
            Err(e) => Err(e.map(|()| msg)),
        })
    }
}
