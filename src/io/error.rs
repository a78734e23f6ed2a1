//! The errors of I/O requests: typed, carrying the operation and the errno.

use std::io;

/// Why an I/O request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// The kernel refused the operation; `errno` is the raw error number
    /// (`ENOENT`, `ENOSPC`, `ECONNRESET`, ...).
    #[error("{op} failed: {source}")]
    Os {
        /// The operation (`"open"`, `"write"`, `"recv"`, ...).
        op: &'static str,
        /// The error, with its errno in [`io::Error::raw_os_error`].
        source: io::Error,
    },
    /// An `O_DIRECT` request whose buffer address, length or file offset is
    /// not a multiple of the required alignment.
    #[error("{op} on an O_DIRECT file is misaligned: {what} is not a multiple of {align}")]
    Misaligned {
        /// The operation.
        op: &'static str,
        /// Which value is misaligned (`"offset"`, `"length"`, `"buffer address"`).
        what: &'static str,
        /// The alignment required.
        align: usize,
    },
    /// The file or connection id is not open on this worker (closed, or
    /// opened on another worker).
    #[error("{what} {id:#x} is not open on this I/O worker")]
    NotOpen {
        /// `"file"` or `"connection"`.
        what: &'static str,
        /// The id.
        id: u64,
    },
    /// Fewer bytes were written than asked, and retrying made no progress.
    #[error("{op} wrote {written} of {len} bytes")]
    ShortWrite {
        /// The operation.
        op: &'static str,
        /// Bytes written.
        written: usize,
        /// Bytes asked.
        len: usize,
    },
    /// The request is malformed (an empty vectored write, a path with a NUL
    /// byte, a read longer than the buffer can hold).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The I/O worker stopped before the request ran.
    #[error("the I/O worker stopped before the request ran")]
    Stopped,
    /// The worker's io_uring refused to submit the request
    /// (`io_uring_enter` failed with an error other than the transient
    /// `EBUSY`/`EAGAIN`, which are retried): the request never ran. The
    /// worker's ring takes no more requests after this.
    #[error("the request was never submitted: io_uring_enter failed: {source}")]
    NotSubmitted {
        /// The submit's error, with its errno.
        source: io::Error,
    },
    /// A write asked to be durable with
    /// [`Durability::Linked`](crate::io::Durability::Linked) was written,
    /// but the ring could not keep its `fdatasync` linked after it, so it
    /// is not known to be durable (sync the file to make it so).
    #[error("{written} bytes written, but the linked fdatasync was not ordered after the write")]
    NotDurable {
        /// Bytes written.
        written: usize,
    },
}

impl IoError {
    pub(crate) fn os(op: &'static str, errno: i32) -> Self {
        IoError::Os {
            op,
            source: io::Error::from_raw_os_error(errno),
        }
    }

    pub(crate) fn not_submitted(errno: i32) -> Self {
        IoError::NotSubmitted {
            source: io::Error::from_raw_os_error(errno),
        }
    }

    pub(crate) fn from_io(op: &'static str, source: io::Error) -> Self {
        IoError::Os { op, source }
    }

    /// The errno, for [`IoError::Os`].
    ///
    /// ```
    /// # use shared_nothing::io::IoError;
    /// let e = IoError::Stopped;
    /// assert_eq!(e.errno(), None);
    /// ```
    pub fn errno(&self) -> Option<i32> {
        match self {
            IoError::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The [`io::ErrorKind`] (`Other` for errors that are not the kernel's).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            IoError::Os { source, .. } | IoError::NotSubmitted { source } => source.kind(),
            IoError::Misaligned { .. } | IoError::Invalid(_) => io::ErrorKind::InvalidInput,
            IoError::NotOpen { .. } => io::ErrorKind::NotFound,
            IoError::ShortWrite { .. } => io::ErrorKind::WriteZero,
            IoError::Stopped => io::ErrorKind::BrokenPipe,
            IoError::NotDurable { .. } => io::ErrorKind::Other,
        }
    }
}

/// A request was not accepted by an I/O worker; it is handed back (the
/// one shape every service worker uses, see [`crate::SubmitError`]).
pub use crate::error::SubmitError;

/// A completion or event as its I/O worker delivers it: counted in the
/// worker's [`IoCounters`](super::stats::IoCounters), and an error it
/// carries reported to `tracing`: storage errors at `WARN` (a full disk,
/// an I/O error, a file that is gone are worth seeing), network errors at
/// `DEBUG` (peers reset and refuse all the time; the owner gets each as an
/// event).
pub(crate) trait Completion {
    fn report(&self, stats: &super::stats::IoCounters);
}

#[cfg(test)]
impl Completion for u32 {
    fn report(&self, _: &super::stats::IoCounters) {}
}
