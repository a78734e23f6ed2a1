//! Starting the I/O workers the plan placed.

use super::plan::IoBackend;
use super::runtime::WorkerPool;
use crate::Result;
use crate::io::{BackendChoice, IoOptions, NetConfig, NetworkWorker, StorageConfig, StorageWorker};
use std::sync::Arc;
use std::time::Duration;

/// How long an I/O worker with a CPU of its own polls before sleeping.
const BUSY_SPIN: Duration = Duration::from_micros(50);

/// The running storage and network workers of a pool. Cheap to clone (give
/// a clone to each application worker, which makes its clients in `init`);
/// the workers stop when the last clone is dropped.
///
/// ```
/// use shared_nothing::prelude::*;
/// use shared_nothing::io::OpenOptions;
/// let pool = WorkerPool::new().unwrap();
/// let io = pool.start_io().unwrap();
/// println!("{} storage, {} network workers on {}", io.storage_count(), io.network_count(), io.storage(0).backend());
/// let mut files = io.storage(0).blocking_client().unwrap();
/// let path = std::env::temp_dir().join(format!("sn-io-doc-{}", std::process::id()));
/// let f = files.open(&path, OpenOptions::read_write_create()).unwrap();
/// files.write_at(f, 0, b"x".to_vec()).unwrap();
/// # std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct IoWorkers {
    storage: Arc<[StorageWorker]>,
    network: Arc<[NetworkWorker]>,
}

impl IoWorkers {
    /// `(role, index, sampler)` per I/O worker, for the pool's metrics.
    pub(crate) fn stats_sources(&self) -> Vec<(&'static str, usize, crate::io::StatsSource)> {
        let storage = self
            .storage
            .iter()
            .map(|w| ("storage", w.index(), w.stats_source()));
        let network = self
            .network
            .iter()
            .map(|w| ("network", w.index(), w.stats_source()));
        storage.chain(network).collect()
    }

    /// Storage worker `i` (modulo the count, so any key can pick one).
    pub fn storage(&self, i: usize) -> &StorageWorker {
        &self.storage[i % self.storage.len()]
    }

    /// Network worker `i` (modulo the count).
    pub fn network(&self, i: usize) -> &NetworkWorker {
        &self.network[i % self.network.len()]
    }

    /// Storage workers running.
    pub fn storage_count(&self) -> usize {
        self.storage.len()
    }

    /// Network workers running.
    pub fn network_count(&self) -> usize {
        self.network.len()
    }
}

impl WorkerPool {
    /// Starts the planned storage and network workers (at least one of
    /// each), pinned where the plan pins, on io_uring unless the plan chose
    /// the fallback (or `SHARED_NOTHING_IO_BACKEND` forces one).
    ///
    /// # Errors
    /// `Spawn`/`Io` if a worker cannot start; `InvalidConfig` for a
    /// malformed backend variable. Workers already started are stopped.
    pub fn start_io(&self) -> Result<IoWorkers> {
        self.start_io_with(IoOptions::new())
    }

    /// Like [`start_io`](Self::start_io), with `options` for the workers'
    /// clients (how many requests a storage client keeps on its own side
    /// when its ring is full, how large the ring is).
    ///
    /// ```
    /// use shared_nothing::prelude::*;
    /// use shared_nothing::io::IoOptions;
    /// let pool = WorkerPool::new().unwrap();
    /// let io = pool.start_io_with(IoOptions::new().storage_submit_queue(4)).unwrap();
    /// let (sink, _completions) = ResultSink::queue();
    /// assert_eq!(io.storage(0).client(sink).unwrap().queue_limit(), 4);
    /// ```
    ///
    /// # Errors
    /// As [`start_io`](Self::start_io).
    pub fn start_io_with(&self, options: IoOptions) -> Result<IoWorkers> {
        self.mark_io_started();
        let plan = self.plan();
        let backend = match &plan.io_backend {
            IoBackend::IoUring => BackendChoice::Auto,
            IoBackend::Fallback { .. } => BackendChoice::Fallback,
        };
        // Where each worker runs and how long it may spin before sleeping
        // in the kernel: only a worker the plan lets busy-poll (a CPU of
        // its own) spins; on a shared CPU a spinning I/O worker would
        // starve the others placed there (measured: a storage and a
        // network worker spinning on one CPU made the broker's one-record
        // round trip 4x slower).
        let placed = |placements: &[super::plan::Placement]| -> Vec<(Option<usize>, Duration)> {
            if placements.is_empty() {
                return vec![(None, Duration::ZERO)];
            }
            placements
                .iter()
                .map(|p| {
                    let spin = if p.idle.is_busy() {
                        BUSY_SPIN
                    } else {
                        Duration::ZERO
                    };
                    (p.cpu, spin)
                })
                .collect()
        };
        let storage = placed(&plan.storage_workers)
            .into_iter()
            .enumerate()
            .map(|(i, (cpu, spin))| {
                let cfg = StorageConfig {
                    spin,
                    client_queue: options.storage_ring,
                    submit_queue: options.storage_submit_queue,
                    ..StorageConfig::new()
                        .backend(backend)
                        .cpu(cpu)
                        .name(format!("storage-{i}"))
                };
                StorageWorker::start(i, cfg)
            })
            .collect::<Result<Vec<_>>>()?;
        let network = placed(&plan.network_workers)
            .into_iter()
            .enumerate()
            .map(|(i, (cpu, spin))| {
                let cfg = NetConfig {
                    spin,
                    ..NetConfig::new()
                        .backend(backend)
                        .cpu(cpu)
                        .name(format!("network-{i}"))
                        .send_queue_limit(options.network_send_queue_limit)
                };
                NetworkWorker::start(i, cfg)
            })
            .collect::<Result<Vec<_>>>()?;
        let io = IoWorkers {
            storage: storage.into(),
            network: network.into(),
        };
        self.add_io_metrics(&io);
        Ok(io)
    }
}
