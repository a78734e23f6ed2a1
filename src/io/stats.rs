//! An I/O worker's counters: written by its thread only (relaxed stores,
//! see [`LocalCounter`]), read by anyone through [`IoStats`].

use crate::metrics::LocalCounter;
use std::sync::Arc;

/// Reads a worker's stats while it exists (`None` once it is gone).
pub(crate) type StatsSource = Arc<dyn Fn() -> Option<IoStats> + Send + Sync>;

/// A sampler of a worker's counters that does not keep its state alive.
pub(crate) fn source<R: Send + 'static, C: Send + 'static>(
    shared: &Arc<crate::io::inbox::Shared<R, C>>,
) -> StatsSource {
    let weak = Arc::downgrade(shared);
    Arc::new(move || weak.upgrade().map(|s| s.stats.snapshot()))
}

/// What an I/O driver started on a worker's thread (`start_local`) hands
/// to the worker's report hook (a pool registers it in its metrics).
pub(crate) struct LocalIoStats {
    /// `"network"` or `"storage"`.
    pub(crate) role: &'static str,
    /// The driver's index (its `start_local` argument).
    pub(crate) index: usize,
    pub(crate) source: StatsSource,
}

/// Reports a driver just started on this thread (see [`LocalIoStats`]).
pub(crate) fn report_local(role: &'static str, index: usize, source: StatsSource) {
    crate::worker::report_io(Box::new(LocalIoStats {
        role,
        index,
        source,
    }));
}

/// The counters, in one padded block of the worker's shared state.
#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    pub(crate) requests: LocalCounter,
    pub(crate) completions: LocalCounter,
    pub(crate) errors: LocalCounter,
    pub(crate) bytes_in: LocalCounter,
    pub(crate) bytes_out: LocalCounter,
    pub(crate) in_flight: LocalCounter,
    pub(crate) backlog: LocalCounter,
}

impl IoCounters {
    pub(crate) fn snapshot(&self) -> IoStats {
        IoStats {
            requests: self.requests.get(),
            completions: self.completions.get(),
            errors: self.errors.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            in_flight: self.in_flight.get(),
            backlog: self.backlog.get(),
        }
    }
}

/// What an I/O worker has done so far (each value may be stale when read).
///
/// ```
/// use shared_nothing::io::{StorageConfig, StorageWorker};
/// let w = StorageWorker::start(0, StorageConfig::new()).unwrap();
/// assert_eq!(w.stats().requests, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoStats {
    /// Requests taken from the clients' rings.
    pub requests: u64,
    /// Completions (storage) or events (network) delivered.
    pub completions: u64,
    /// Of those, the ones carrying an error.
    pub errors: u64,
    /// Bytes read from files, or received from sockets.
    pub bytes_in: u64,
    /// Bytes written to files, or sent on sockets.
    pub bytes_out: u64,
    /// Operations in the kernel, as of the worker's last round (0 on the
    /// blocking fallback, which runs one at a time).
    pub in_flight: u64,
    /// Completions or events waiting for room in full targets, as of the
    /// worker's last round.
    pub backlog: u64,
}
