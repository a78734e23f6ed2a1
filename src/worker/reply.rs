//! Request/reply: a one-shot slot carried by an [`Envelope`](super::Envelope).

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

type Boxed = Box<dyn Any + Send>;

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
    /// The worker answered with another type than the caller expects.
    #[error("the reply was not of the expected type {expected}")]
    WrongType {
        /// The type the caller asked for.
        expected: &'static str,
    },
    /// `reply` was called on a message that is not a request, or twice.
    #[error("this message has no reply slot (not a request, or already answered)")]
    NoReplySlot,
    /// The caller stopped waiting (dropped its [`Pending`]).
    #[error("the caller is no longer waiting for the reply")]
    CallerGone,
}

/// The worker's side of a request: answer it once with [`ReplyTo::send`].
pub struct ReplyTo {
    tx: Sender<Boxed>,
}

impl fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

impl ReplyTo {
    /// Answers the request.
    ///
    /// # Errors
    /// [`ReplyError::CallerGone`] if the caller dropped its [`Pending`].
    pub fn send<R: Send + 'static>(self, value: R) -> Result<(), ReplyError> {
        self.tx
            .send(Box::new(value))
            .map_err(|_| ReplyError::CallerGone)
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
///     fn init(&mut self) -> Result<()> { Ok(()) }
///     fn handle_message(&mut self, _: &mut (), mut msg: Envelope<u32>) -> Result<()> {
///         let v = msg.payload * 2;
///         msg.reply(v)?;
///         Ok(())
///     }
/// }
///
/// let mut w = shared_nothing::worker::spawn(Doubler, WorkerConfig::new()).unwrap();
/// let pending = w.request::<u32>(21).unwrap();
/// assert_eq!(pending.wait_timeout(std::time::Duration::from_secs(5)), Ok(42));
/// w.stop().unwrap();
/// ```
pub struct Pending<R> {
    rx: Receiver<Boxed>,
    _reply: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Pending<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pending")
    }
}

pub(crate) fn pair<R>() -> (ReplyTo, Pending<R>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    (
        ReplyTo { tx },
        Pending {
            rx,
            _reply: PhantomData,
        },
    )
}

impl<R: 'static> Pending<R> {
    fn unpack(v: Boxed) -> Result<R, ReplyError> {
        v.downcast::<R>()
            .map(|b| *b)
            .map_err(|_| ReplyError::WrongType {
                expected: std::any::type_name::<R>(),
            })
    }

    /// Blocks until the reply arrives.
    ///
    /// # Errors
    /// `Dropped` if the worker will never answer, `WrongType` on a type
    /// mismatch.
    pub fn wait(self) -> Result<R, ReplyError> {
        self.rx
            .recv()
            .map_err(|_| ReplyError::Dropped)
            .and_then(Self::unpack)
    }

    /// Blocks at most `timeout` for the reply.
    ///
    /// # Errors
    /// `Timeout`, `Dropped` or `WrongType`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<R, ReplyError> {
        match self.rx.recv_timeout(timeout) {
            Ok(v) => Self::unpack(v),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(ReplyError::Timeout),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(ReplyError::Dropped),
        }
    }

    /// The reply if it has arrived, `Ok(None)` if not yet.
    ///
    /// # Errors
    /// `Dropped` or `WrongType`.
    pub fn try_get(&self) -> Result<Option<R>, ReplyError> {
        match self.rx.try_recv() {
            Ok(v) => Self::unpack(v).map(Some),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(ReplyError::Dropped),
        }
    }
}
