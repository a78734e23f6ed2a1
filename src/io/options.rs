//! What [`WorkerPool::start_io_with`](crate::pool::WorkerPool::start_io_with)
//! sets on the I/O workers it starts.

use super::storage::StorageConfig;

/// Options for the I/O workers a pool starts; the plan decides where they
/// run and on which backend, these decide how their clients queue.
///
/// ```
/// use shared_nothing::io::IoOptions;
/// let o = IoOptions::new().storage_submit_queue(100_000).storage_ring(512);
/// assert_eq!(o.storage_submit_queue, 100_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoOptions {
    /// Requests each storage client keeps on its own side when its ring is
    /// full ([`StorageConfig::submit_queue`]); 0 turns that queue off.
    pub storage_submit_queue: usize,
    /// Requests each storage client's ring holds
    /// ([`StorageConfig::client_queue`]).
    pub storage_ring: usize,
    /// Unsent bytes each network connection may hold before a send is
    /// refused ([`NetConfig::send_queue_limit`](super::NetConfig::send_queue_limit)).
    pub network_send_queue_limit: usize,
}

impl Default for IoOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl IoOptions {
    /// The defaults of [`StorageConfig::new`].
    pub fn new() -> Self {
        let s = StorageConfig::new();
        Self {
            storage_submit_queue: s.submit_queue,
            storage_ring: s.client_queue,
            network_send_queue_limit: super::net::DEFAULT_SEND_QUEUE_LIMIT,
        }
    }

    /// Sets the bound of each storage client's own queue (0: none).
    pub fn storage_submit_queue(mut self, n: usize) -> Self {
        self.storage_submit_queue = n;
        self
    }

    /// Sets the bound on each network connection's unsent bytes.
    pub fn network_send_queue_limit(mut self, bytes: usize) -> Self {
        self.network_send_queue_limit = bytes;
        self
    }

    /// Sets the size of each storage client's ring (at least 2).
    pub fn storage_ring(mut self, n: usize) -> Self {
        self.storage_ring = n.max(2);
        self
    }
}
