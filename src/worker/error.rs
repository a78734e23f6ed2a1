//! Errors of sending to a worker.

use std::fmt;

/// Sending to a worker failed; the message is handed back.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError<M> {
    /// The worker's queue from this sender is full (non-blocking send).
    Full(M),
    /// The queue stayed full until the deadline.
    Timeout(M),
    /// The worker has stopped or failed; it will not take messages again.
    Stopped(M),
    /// No worker has this index (also returned when a partitioner maps a key
    /// outside the pool).
    NoSuchWorker {
        /// The index asked for.
        index: usize,
        /// Workers in the pool.
        len: usize,
        /// The message.
        message: M,
    },
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            Self::Full(m) | Self::Timeout(m) | Self::Stopped(m) => m,
            Self::NoSuchWorker { message, .. } => message,
        }
    }

    /// Whether the worker is gone for good.
    pub fn is_stopped(&self) -> bool {
        matches!(self, Self::Stopped(_))
    }

    /// Whether the queue was full (`Full` or `Timeout`).
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_) | Self::Timeout(_))
    }

    pub(crate) fn map<N>(self, f: impl FnOnce(M) -> N) -> SendError<N> {
        match self {
            Self::Full(m) => SendError::Full(f(m)),
            Self::Timeout(m) => SendError::Timeout(f(m)),
            Self::Stopped(m) => SendError::Stopped(f(m)),
            Self::NoSuchWorker {
                index,
                len,
                message,
            } => SendError::NoSuchWorker {
                index,
                len,
                message: f(message),
            },
        }
    }
}

/// Names the variant and its fields; the message is shown as `..` (it need
/// not be `Debug`).
impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Timeout(_) => f.write_str("Timeout(..)"),
            Self::Stopped(_) => f.write_str("Stopped(..)"),
            Self::NoSuchWorker { index, len, .. } => f
                .debug_struct("NoSuchWorker")
                .field("index", index)
                .field("len", len)
                .finish_non_exhaustive(),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("worker queue full"),
            Self::Timeout(_) => f.write_str("timed out: worker queue stayed full"),
            Self::Stopped(_) => f.write_str("worker stopped"),
            Self::NoSuchWorker { index, len, .. } => {
                write!(f, "no worker {index} (the pool has {len})")
            }
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

impl<M> From<SendError<M>> for crate::Error {
    fn from(e: SendError<M>) -> Self {
        match e {
            SendError::Full(_) => Self::Full,
            SendError::Timeout(_) => Self::Timeout,
            SendError::Stopped(_) => Self::Stopped,
            SendError::NoSuchWorker { index, len, .. } => Self::NoSuchWorker { index, len },
        }
    }
}

/// A [flush](crate::worker::WorkerHandle::flush) did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The worker exited (gave up, or was already stopped) before it had
    /// handled everything sent before the flush.
    #[error("worker {worker} stopped before the flush completed")]
    Stopped {
        /// The worker's name.
        worker: String,
    },
    /// Not everything was handled before the deadline.
    #[error("timed out waiting for the flush")]
    Timeout,
}

impl From<FlushError> for crate::Error {
    fn from(e: FlushError) -> Self {
        match e {
            FlushError::Stopped { worker } => Self::WorkerStopped { worker },
            FlushError::Timeout => Self::Timeout,
        }
    }
}

/// A [scatter-gather request](crate::pool::PoolSender::request_all_timeout)
/// did not collect every reply.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatherError {
    /// Worker `index` did not take its request (the requests before it
    /// were sent; their replies are dropped).
    #[error("worker {index} did not take the request: {error}")]
    Send {
        /// The worker.
        index: usize,
        /// Why (the message copy itself is dropped).
        error: SendError<()>,
    },
    /// Worker `index` did not answer.
    #[error("worker {index} did not answer: {error}")]
    Reply {
        /// The worker.
        index: usize,
        /// Why.
        error: super::ReplyError,
    },
}

impl From<GatherError> for crate::Error {
    fn from(e: GatherError) -> Self {
        match e {
            GatherError::Send { error, .. } => error.into(),
            GatherError::Reply { error, .. } => error.into(),
        }
    }
}
