//! Pool configuration.

use crate::worker::WorkerConfig;

/// How a [`WorkerGroup`](super::WorkerGroup) is built: how many workers,
/// whether they are pinned, and the configuration each worker starts from.
///
/// ```
/// use shared_nothing::prelude::*;
/// let cfg = PoolConfig::new()
///     .with_num_workers(4)
///     .with_cpu_affinity(true)
///     .with_worker_config(WorkerConfig::new().with_queue_capacity(1024));
/// assert_eq!(cfg.num_workers(), Some(4));
/// ```
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub(crate) num_workers: Option<usize>,
    pub(crate) cpu_affinity: bool,
    pub(crate) numa_aware: bool,
    pub(crate) cpus: Option<Vec<usize>>,
    pub(crate) worker: WorkerConfig,
    pub(crate) name: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolConfig {
    /// One worker per usable CPU, not pinned, default worker configuration.
    pub fn new() -> Self {
        Self {
            num_workers: None,
            cpu_affinity: false,
            numa_aware: false,
            cpus: None,
            worker: WorkerConfig::new(),
            name: "worker".into(),
        }
    }

    /// Number of workers (default: one per usable CPU).
    pub fn with_num_workers(mut self, n: usize) -> Self {
        self.num_workers = Some(n);
        self
    }

    /// Pin worker `i` to the `i`-th usable CPU (wrapping around).
    pub fn with_cpu_affinity(mut self, on: bool) -> Self {
        self.cpu_affinity = on;
        self
    }

    /// Order CPUs by NUMA node so consecutive workers fill one node before the
    /// next (state is always created on the worker's thread after pinning, so
    /// its memory is node-local by first touch).
    pub fn with_numa_aware(mut self, on: bool) -> Self {
        self.numa_aware = on;
        self
    }

    /// Pin to exactly these CPUs (implies affinity).
    pub fn with_cpus(mut self, cpus: Vec<usize>) -> Self {
        self.cpus = Some(cpus);
        self.cpu_affinity = true;
        self
    }

    /// The configuration every worker starts from (its name and CPU are set
    /// per worker).
    pub fn with_worker_config(mut self, config: WorkerConfig) -> Self {
        self.worker = config;
        self
    }

    /// Thread name prefix (`prefix-0`, `prefix-1`, ...).
    pub fn with_name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// The configured worker count, if set.
    pub fn num_workers(&self) -> Option<usize> {
        self.num_workers
    }

    /// Whether workers are pinned.
    pub fn cpu_affinity(&self) -> bool {
        self.cpu_affinity
    }

    /// The per-worker configuration.
    pub fn worker_config(&self) -> &WorkerConfig {
        &self.worker
    }
}
