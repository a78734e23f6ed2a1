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
    /// [`BackendError::BadEnv`], naming the variable and its value, when the
    /// value is not a backend.
    pub fn resolve(self) -> Result<Self, BackendError> {
        match std::env::var(BACKEND_ENV) {
            Ok(v) => Self::parse(&v).ok_or(BackendError::BadEnv {
                var: BACKEND_ENV,
                value: v,
            }),
            Err(_) => Ok(self),
        }
    }
}

/// An I/O worker's backend could not be chosen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The environment variable names no backend.
    #[error("{var}={value:?}: expected auto, uring or fallback")]
    BadEnv {
        /// The variable ([`BACKEND_ENV`]).
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// io_uring was required ([`BackendChoice::Uring`]) and could not be
    /// set up.
    #[error("io_uring required but unavailable: io_uring setup failed: {source}")]
    UringRequired {
        /// What the kernel said.
        source: std::io::Error,
    },
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
/// [`BackendError`] for a malformed [`BACKEND_ENV`] or a required io_uring
/// that cannot be set up.
pub(crate) fn choose<U>(
    choice: BackendChoice,
    setup: impl FnOnce() -> std::io::Result<U>,
) -> crate::Result<Chosen<U>> {
    let choice = choice.resolve()?;
    if choice == BackendChoice::Fallback {
        return Ok(Chosen::Fallback(FORCED.to_owned()));
    }
    match setup() {
        Ok(u) => Ok(Chosen::Uring(u)),
        Err(source) if choice == BackendChoice::Uring => {
            Err(BackendError::UringRequired { source }.into())
        }
        Err(e) => Ok(Chosen::Fallback(format!("io_uring setup failed: {e}"))),
    }
}

/// Reports an I/O worker's start and the backend it runs to `tracing`:
/// `INFO` for io_uring or a forced fallback, `WARN` for a fallback because
/// io_uring could not be set up.
pub(crate) fn trace_started(
    role: &'static str,
    index: usize,
    cpu: Option<usize>,
    backend: &IoBackendKind,
) {
    match backend {
        IoBackendKind::IoUring => {
            tracing::info!(
                role,
                worker = index,
                cpu,
                backend = "io_uring",
                "I/O worker started"
            );
        }
        IoBackendKind::Fallback { reason } if reason == FORCED => {
            tracing::info!(role, worker = index, cpu, backend = "fallback", reason = %reason, "I/O worker started");
        }
        IoBackendKind::Fallback { reason } => {
            tracing::warn!(role, worker = index, cpu, backend = "fallback", reason = %reason, "I/O worker started on the fallback");
        }
    }
}

/// The fallback's reason when it was asked for rather than chosen.
const FORCED: &str = "forced by configuration";

/// A worker thread's start-up result and the loop it then runs.
pub(crate) type Started<T> = crate::Result<(T, Box<dyn FnOnce()>)>;

/// Joins an I/O worker's thread; a panic on it (a bug: the worker's loop
/// catches nothing, so it is reported, never swallowed) becomes
/// [`crate::Error::WorkerFailed`] with the panic's message.
pub(crate) fn join_worker(join: std::thread::JoinHandle<()>) -> crate::Result<()> {
    let worker = join.thread().name().unwrap_or("io-worker").to_owned();
    join.join().map_err(|payload| {
        let message = crate::error::panic_message(&*payload);
        crate::Error::WorkerFailed {
            worker,
            message: format!("the I/O worker's thread panicked: {message}"),
        }
    })
}

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
    match rx.recv() {
        Ok(Ok(v)) => Ok((join, v)),
        Ok(Err(e)) => {
            let _ = join.join();
            Err(e)
        }
        // The thread ended without a word: its start-up panicked.
        Err(_) => Err(join_worker(join)
            .err()
            .unwrap_or(crate::Error::WorkerFailed {
                worker: name.to_owned(),
                message: "the I/O worker's thread exited during start-up".to_owned(),
            })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A required io_uring that cannot be set up is a typed error carrying
    /// the kernel's answer, not an `InvalidConfig` string.
    #[test]
    fn a_required_uring_that_fails_is_a_typed_error() {
        if std::env::var_os(BACKEND_ENV).is_some() {
            eprintln!("skipped: {BACKEND_ENV} is set and wins over the choice");
            return;
        }
        let refused = || Err::<(), _>(std::io::Error::from_raw_os_error(libc::ENOSYS));
        match choose(BackendChoice::Uring, refused) {
            Err(crate::Error::IoBackend(BackendError::UringRequired { source })) => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOSYS));
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a refused setup cannot choose io_uring"),
        }
        assert!(matches!(
            choose(BackendChoice::Auto, refused),
            Ok(Chosen::Fallback(reason)) if reason.contains("setup failed")
        ));
    }
}
