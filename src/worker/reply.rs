//! Request/reply: a one-shot slot carried by an [`Envelope`](super::Envelope).
//!
//! The reply's type is the worker's [`Worker::Reply`](super::Worker::Reply):
//! a handler cannot answer with another type, and a caller cannot wait for
//! one, so a mismatch is a compile error and the value travels unboxed.

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

/// Why a reply could not be sent or received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The worker dropped the request without answering (its handler
    /// returned without replying, failed, or panicked).
    #[error("the worker dropped the request without replying")]
    Dropped,
    /// No reply arrived before the deadline.
    #[error("timed out waiting for the reply")]
    Timeout,
    /// `reply` was called on a message that is not a request, or twice.
    #[error("this message has no reply slot (not a request, or already answered)")]
    NoReplySlot,
    /// The caller stopped waiting (dropped its [`Pending`]).
    #[error("the caller is no longer waiting for the reply")]
    CallerGone,
}

/// The worker's side of a request: answer it once with [`ReplyTo::send`].
pub struct ReplyTo<R> {
    tx: Sender<R>,
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

impl<R> ReplyTo<R> {
    /// Answers the request.
    ///
    /// # Errors
    /// [`ReplyError::CallerGone`] if the caller dropped its [`Pending`].
    pub fn send(self, value: R) -> Result<(), ReplyError> {
        self.tx.send(value).map_err(|_| ReplyError::CallerGone)
    }
}

/// The caller's side of a request: wait for the answer, or poll it.
///
/// ```
/// use shared_nothing::prelude::*;
///
/// struct Doubler;
/// impl Worker for Doubler {
///     type State = ();
///     type Message = u32;
///     type Reply = u32;
///     fn init(&mut self) -> Result<()> { Ok(()) }
///     fn handle_message(&mut self, _: &mut (), mut msg: Envelope<u32, u32>) -> Result<()> {
///         let v = msg.payload * 2;
///         msg.reply(v)?;
///         Ok(())
///     }
/// }
///
/// let mut w = shared_nothing::worker::spawn(Doubler, WorkerConfig::new()).unwrap();
/// let pending = w.request(21).unwrap();
/// assert_eq!(pending.wait_timeout(std::time::Duration::from_secs(5)), Ok(42));
/// w.stop().unwrap();
/// ```
pub struct Pending<R> {
    rx: Receiver<R>,
    /// The answering worker's life; `None` only for a request that was
    /// never queued (it fails with the send).
    life: Option<Life>,
}

impl<R> fmt::Debug for Pending<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pending")
    }
}

/// Disconnects when a worker's thread has exited, after its state (and any
/// [`ReplyTo`] the handler kept there) was dropped: a [`Pending`] watches it
/// so that a reply slot that was leaked (`mem::forget`), or kept past the
/// worker's end, still resolves as [`ReplyError::Dropped`].
#[derive(Clone, Debug)]
pub(crate) struct Life(Receiver<Infallible>);

/// Held by the worker's thread for its whole life (restarts included).
#[derive(Debug)]
pub(crate) struct Alive(#[allow(dead_code)] Sender<Infallible>);

pub(crate) fn life() -> (Alive, Life) {
    let (tx, rx) = crossbeam_channel::bounded(0);
    (Alive(tx), Life(rx))
}

pub(crate) fn pair<R>(life: Option<Life>) -> (ReplyTo<R>, Pending<R>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    (ReplyTo { tx }, Pending { rx, life })
}

impl<R> Pending<R> {
    /// The reply, once the worker's life has ended: a reply sent before it
    /// ended is still in the slot; otherwise there will be none.
    fn after_exit(&self) -> Result<R, ReplyError> {
        self.rx.try_recv().map_err(|_| ReplyError::Dropped)
    }

    /// Blocks until the reply arrives.
    ///
    /// # Errors
    /// `Dropped` if the worker will never answer: its handler dropped the
    /// request (returned, failed or panicked without replying), the worker
    /// gave up or stopped with the request queued, or the worker's thread
    /// has exited while the reply slot was kept or leaked.
    pub fn wait(self) -> Result<R, ReplyError> {
        let never = crossbeam_channel::never();
        crossbeam_channel::select! {
            recv(self.rx) -> v => v.map_err(|_| ReplyError::Dropped),
            recv(self.life_or(&never)) -> _ => self.after_exit(),
        }
    }

    /// The life channel to watch, or one that never fires.
    fn life_or<'a>(&'a self, never: &'a Receiver<Infallible>) -> &'a Receiver<Infallible> {
        self.life.as_ref().map_or(never, |l| &l.0)
    }

    /// Blocks at most `timeout` for the reply.
    ///
    /// # Errors
    /// `Timeout`, or as [`Pending::wait`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<R, ReplyError> {
        let never = crossbeam_channel::never();
        crossbeam_channel::select! {
            recv(self.rx) -> v => v.map_err(|_| ReplyError::Dropped),
            recv(self.life_or(&never)) -> _ => self.after_exit(),
            default(timeout) => Err(ReplyError::Timeout),
        }
    }

    /// The reply if it has arrived, `Ok(None)` if not yet.
    ///
    /// # Errors
    /// As [`Pending::wait`].
    pub fn try_get(&self) -> Result<Option<R>, ReplyError> {
        match self.rx.try_recv() {
            Ok(v) => Ok(Some(v)),
            Err(TryRecvError::Disconnected) => Err(ReplyError::Dropped),
            Err(TryRecvError::Empty) => match &self.life {
                Some(l) if matches!(l.0.try_recv(), Err(TryRecvError::Disconnected)) => {
                    self.after_exit().map(Some)
                }
                _ => Ok(None),
            },
        }
    }
}
