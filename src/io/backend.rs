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

/// What a worker thread ended up running.
pub(crate) enum Chosen<U> {
    /// io_uring, set up.
    Uring(U),
    /// The fallback, and why.
    Fallback(String),
}

/// Resolves `choice` (the environment wins) and sets io_uring up with
/// `setup` unless the fallback is forced; a failed setup falls back, or is
/// an error when io_uring was required.
///
/// # Errors
/// `InvalidConfig` for a malformed [`BACKEND_ENV`] or a required io_uring
/// that cannot be set up.
pub(crate) fn choose<U>(
    choice: BackendChoice,
    setup: impl FnOnce() -> std::io::Result<U>,
) -> crate::Result<Chosen<U>> {
    let choice = choice.resolve().map_err(crate::Error::InvalidConfig)?;
    if choice == BackendChoice::Fallback {
        return Ok(Chosen::Fallback("forced by configuration".to_owned()));
    }
    match setup() {
        Ok(u) => Ok(Chosen::Uring(u)),
        Err(e) if choice == BackendChoice::Uring => Err(crate::Error::InvalidConfig(format!(
            "io_uring required but unavailable: io_uring setup failed: {e}"
        ))),
        Err(e) => Ok(Chosen::Fallback(format!("io_uring setup failed: {e}"))),
    }
}

/// A worker thread's start-up result and the loop it then runs.
pub(crate) type Started<T> = crate::Result<(T, Box<dyn FnOnce()>)>;

/// Spawns an I/O worker thread named `name`, pinned to `cpu` (pinning is
/// an optimisation: a CPU that cannot be pinned is not fatal), which runs
/// `start` (everything that must happen on the worker's own thread, such as
/// creating a single-issuer ring) and then the loop `start` returned. Waits
/// for `start`'s outcome.
///
/// # Errors
/// `Spawn` if the thread cannot be created; `start`'s error, once the
/// thread has exited.
pub(crate) fn spawn_worker<T, F>(
    name: &str,
    cpu: Option<usize>,
    start: F,
) -> crate::Result<(std::thread::JoinHandle<()>, T)>
where
    T: Send + 'static,
    F: FnOnce() -> Started<T> + Send + 'static,
{
    let (tx, rx) = crossbeam_channel::bounded(1);
    let join = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Some(cpu) = cpu {
                let _ = crate::topology::pin_current_thread(cpu);
            }
            match start() {
                Ok((value, run)) => {
                    let _ = tx.send(Ok(value));
                    run();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
        .map_err(|source| crate::Error::Spawn {
            worker: name.to_owned(),
            source,
        })?;
    let started = rx
        .recv()
        .unwrap_or_else(|_| Err(crate::Error::InvalidConfig(format!("{name} died at start"))));
    match started {
        Ok(v) => Ok((join, v)),
        Err(e) => {
            let _ = join.join();
            Err(e)
        }
    }
}
