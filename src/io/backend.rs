//! Which backend runs an I/O worker's requests.

use std::fmt;

/// The environment variable that forces a backend (`uring`, `fallback` or
/// `auto`); it wins over the value set in code, so tests and operators can
/// force the fallback without a rebuild.
pub const BACKEND_ENV: &str = "SHARED_NOTHING_IO_BACKEND";

/// The backend an I/O worker should use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring if the kernel allows it, else the fallback.
    #[default]
    Auto,
    /// io_uring or fail to start.
    Uring,
    /// The portable fallback (blocking calls for files, epoll via `mio`
    /// for sockets).
    Fallback,
}

impl BackendChoice {
    /// Parses `auto`, `uring`/`io_uring` or `fallback`.
    ///
    /// ```
    /// use shared_nothing::io::BackendChoice;
    /// assert_eq!(BackendChoice::parse("fallback"), Some(BackendChoice::Fallback));
    /// assert_eq!(BackendChoice::parse("nope"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "uring" | "io_uring" | "iouring" => Some(Self::Uring),
            "fallback" | "blocking" | "epoll" => Some(Self::Fallback),
            _ => None,
        }
    }

    /// This choice, unless [`BACKEND_ENV`] names another.
    ///
    /// # Errors
    /// A message naming the variable when its value is not a backend.
    pub fn resolve(self) -> Result<Self, String> {
        match std::env::var(BACKEND_ENV) {
            Ok(v) => Self::parse(&v)
                .ok_or_else(|| format!("{BACKEND_ENV}={v:?}: expected auto, uring or fallback")),
            Err(_) => Ok(self),
        }
    }
}

/// The backend an I/O worker actually runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoBackendKind {
    /// io_uring.
    IoUring,
    /// The fallback, and why.
    Fallback {
        /// Why io_uring is not used.
        reason: String,
    },
}

impl IoBackendKind {
    /// Whether this is io_uring.
    pub fn is_uring(&self) -> bool {
        matches!(self, IoBackendKind::IoUring)
    }
}

impl fmt::Display for IoBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoBackendKind::IoUring => f.write_str("io_uring"),
            IoBackendKind::Fallback { reason } => write!(f, "fallback ({reason})"),
        }
    }
}
