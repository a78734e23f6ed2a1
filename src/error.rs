//! The crate's error type.
//!
//! Each operation family has its own error type where the caller needs
//! something back (channel errors hand the message back, see
//! [`crate::channel`]); all of them convert into [`Error`] so `?` works in
//! code that returns [`Result`].

use crate::channel::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use std::fmt::{self, Display};

/// Shorthand for `std::result::Result<T, shared_nothing::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate, and in worker handlers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The other side of a channel is gone (a worker stopped, a receiver was
    /// dropped).
    #[error("disconnected: the other side of the channel is gone")]
    Disconnected,
    /// A non-blocking send found the queue full.
    #[error("queue full")]
    Full,
    /// A non-blocking receive found nothing queued.
    #[error("nothing to receive yet")]
    Empty,
    /// The worker stopped (or gave up) and takes no more messages.
    #[error("the worker stopped and takes no more messages")]
    Stopped,
    /// An operation did not complete before its deadline.
    #[error("timed out")]
    Timeout,
    /// A worker is not running (stopped, or gave up after too many restarts).
    #[error("worker {worker} is not running")]
    WorkerStopped {
        /// The worker's name.
        worker: String,
    },
    /// No worker with this index exists.
    #[error("no worker {index} (the pool has {len})")]
    NoSuchWorker {
        /// The index asked for.
        index: usize,
        /// How many workers there are.
        len: usize,
    },
    /// A configuration value was rejected.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The OS refused to start a worker thread.
    #[error("could not spawn worker thread {worker}: {source}")]
    Spawn {
        /// The worker's name.
        worker: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A worker's `init` failed or panicked, so it never ran.
    #[error("worker {worker} failed to start: {message}")]
    Init {
        /// The worker's name.
        worker: String,
        /// The error or panic message.
        message: String,
    },
    /// A worker panicked or failed and its restart policy gave up.
    #[error("worker {worker} failed: {message}")]
    WorkerFailed {
        /// The worker's name.
        worker: String,
        /// What happened.
        message: String,
    },
    /// `WorkerSender::current` was called off a worker thread, or with the
    /// wrong message type.
    #[error(transparent)]
    CurrentWorker(#[from] crate::worker::CurrentWorkerError),
    /// A request's reply could not be delivered.
    #[error(transparent)]
    Reply(#[from] crate::worker::ReplyError),
    /// An error returned by user code (a worker handler, a factory).
    #[error("{0}")]
    Handler(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The machine's topology could not be read.
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    /// No worker plan fits the machine and the overrides.
    #[error(transparent)]
    Plan(#[from] crate::pool::PlanError),
    /// A `SHARED_NOTHING_*` environment variable is malformed.
    #[error(transparent)]
    Env(#[from] crate::pool::EnvError),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// An I/O worker's request failed (the errno is inside).
    #[cfg(not(loom))]
    #[error(transparent)]
    IoRequest(#[from] crate::io::IoError),
    /// An I/O worker's backend could not be chosen.
    #[cfg(not(loom))]
    #[error(transparent)]
    IoBackend(#[from] crate::io::BackendError),
    /// An accelerator job failed or could not be submitted.
    #[error(transparent)]
    Accel(#[from] crate::accel::AccelError),
}

impl Error {
    /// Wraps an error from user code.
    ///
    /// ```
    /// use shared_nothing::Error;
    /// let e = Error::handler(std::fmt::Error);
    /// assert!(matches!(e, Error::Handler(_)));
    /// ```
    pub fn handler(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Self::Handler(e.into())
    }

    /// An error from user code with just a message.
    ///
    /// ```
    /// use shared_nothing::Error;
    /// assert_eq!(Error::msg("bad record").to_string(), "bad record");
    /// ```
    pub fn msg(message: impl Display) -> Self {
        Self::Handler(message.to_string().into())
    }
}

impl<T> From<SendError<T>> for Error {
    fn from(_: SendError<T>) -> Self {
        Self::Disconnected
    }
}

impl<T> From<TrySendError<T>> for Error {
    fn from(e: TrySendError<T>) -> Self {
        if e.is_full() {
            Self::Full
        } else {
            Self::Disconnected
        }
    }
}

impl<T> From<SendTimeoutError<T>> for Error {
    fn from(e: SendTimeoutError<T>) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else {
            Self::Disconnected
        }
    }
}

impl From<RecvError> for Error {
    fn from(_: RecvError) -> Self {
        Self::Disconnected
    }
}

impl From<TryRecvError> for Error {
    fn from(e: TryRecvError) -> Self {
        match e {
            TryRecvError::Empty => Self::Empty,
            _ => Self::Disconnected,
        }
    }
}

impl From<RecvTimeoutError> for Error {
    fn from(e: RecvTimeoutError) -> Self {
        match e {
            RecvTimeoutError::Timeout => Self::Timeout,
            _ => Self::Disconnected,
        }
    }
}

/// A request was not accepted by a service worker (an I/O worker, an
/// accelerator); it is handed back, so nothing is lost. `Full` is
/// backpressure: take some completions and try again.
///
/// ```
/// use shared_nothing::{Error, SubmitError};
/// let e = SubmitError::Full("request");
/// assert!(e.is_full());
/// assert_eq!(format!("{e:?}"), "Full(..)");
/// assert!(matches!(Error::from(SubmitError::Stopped(())), Error::Stopped));
/// assert_eq!(e.into_inner(), "request");
/// ```
#[derive(PartialEq, Eq)]
pub enum SubmitError<T> {
    /// The worker's queue from this client is full.
    Full(T),
    /// The worker has stopped.
    Stopped(T),
}

impl<T> SubmitError<T> {
    /// The request that was not accepted.
    pub fn into_inner(self) -> T {
        match self {
            SubmitError::Full(t) | SubmitError::Stopped(t) => t,
        }
    }

    /// Whether the queue was full (retry later).
    pub fn is_full(&self) -> bool {
        matches!(self, SubmitError::Full(_))
    }
}

/// Names the variant; the request is shown as `..` (it need not be `Debug`).
impl<T> fmt::Debug for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("Full(..)"),
            SubmitError::Stopped(_) => f.write_str("Stopped(..)"),
        }
    }
}

impl<T> fmt::Display for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("worker queue full (backpressure)"),
            SubmitError::Stopped(_) => f.write_str("worker stopped"),
        }
    }
}

impl<T> std::error::Error for SubmitError<T> {}

impl<T> From<SubmitError<T>> for Error {
    fn from(e: SubmitError<T>) -> Self {
        match e {
            SubmitError::Full(_) => Self::Full,
            SubmitError::Stopped(_) => Self::Stopped,
        }
    }
}

/// A panic's payload as text (`panic!` with a literal or a format string);
/// other payloads are named as such.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}
