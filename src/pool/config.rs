//! Pool configuration.

use super::profile::{PlanOverrides, Profile};
use crate::worker::WorkerConfig;

/// How a [`WorkerGroup`](super::WorkerGroup) is built. Everything left unset
/// is decided by the profile's [`Plan`](super::Plan) for this machine.
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
    pub(crate) profile: Profile,
    pub(crate) overrides: PlanOverrides,
    pub(crate) numa_aware: bool,
    pub(crate) worker: WorkerConfig,
    pub(crate) name: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolConfig {
    /// The production profile with no overrides.
    pub fn new() -> Self {
        Self {
            profile: Profile::Production,
            overrides: PlanOverrides::default(),
            numa_aware: true,
            worker: WorkerConfig::new(),
            name: "app".into(),
        }
    }

    /// The profile that decides whatever is not set explicitly.
    pub fn with_profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Number of application workers.
    pub fn with_num_workers(mut self, n: usize) -> Self {
        self.overrides.app_workers = Some(n);
        self
    }

    /// Pin each worker to a CPU of its own where the machine allows (on or
    /// off; unset: the profile decides, and every profile pins).
    pub fn with_cpu_affinity(mut self, on: bool) -> Self {
        self.overrides.pin = Some(on);
        self
    }

    /// Bind each worker's memory to its NUMA node explicitly (needs the
    /// `hwloc` feature; without it, node-local memory comes from first touch:
    /// worker state is always created on the worker's thread after pinning).
    /// On by default.
    pub fn with_numa_aware(mut self, on: bool) -> Self {
        self.numa_aware = on;
        self
    }

    /// Plan only on these CPUs (implies pinning).
    pub fn with_cpus(mut self, cpus: Vec<usize>) -> Self {
        self.overrides.cpus = Some(cpus);
        self.overrides.pin = Some(true);
        self
    }

    /// Storage I/O workers per NUMA node.
    pub fn with_storage_workers_per_node(mut self, n: usize) -> Self {
        self.overrides.storage_workers_per_node = Some(n);
        self
    }

    /// Network I/O workers per NUMA node.
    pub fn with_network_workers_per_node(mut self, n: usize) -> Self {
        self.overrides.network_workers_per_node = Some(n);
        self
    }

    /// Where connections are served (see
    /// [`NetworkMode`](super::NetworkMode)); the plan's choice otherwise.
    pub fn with_network_mode(mut self, mode: super::NetworkMode) -> Self {
        self.overrides.network_mode = Some(mode);
        self
    }

    /// GPU workers.
    pub fn with_gpu_workers(mut self, n: usize) -> Self {
        self.overrides.gpu_workers = Some(n);
        self
    }

    /// The configuration every worker starts from. Its queue capacity, idle
    /// strategy and batch size, where set, override the profile's; its CPU is
    /// replaced by the plan's.
    pub fn with_worker_config(mut self, config: WorkerConfig) -> Self {
        self.worker = config;
        self
    }

    /// Thread name prefix (`prefix-0`, `prefix-1`, ...; default `app`).
    pub fn with_name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// The configured worker count, if set.
    pub fn num_workers(&self) -> Option<usize> {
        self.overrides.app_workers
    }

    /// The per-worker configuration.
    pub fn worker_config(&self) -> &WorkerConfig {
        &self.worker
    }

    /// The overrides this configuration passes to the plan (before
    /// `SHARED_NOTHING_*` environment variables, which win).
    pub fn overrides(&self) -> PlanOverrides {
        let mut o = self.overrides.clone();
        o.queue_capacity = o.queue_capacity.or(self.worker.queue_capacity);
        o.idle = o.idle.or(self.worker.idle);
        o.batch_size = o.batch_size.or(self.worker.batch_size);
        o
    }
}
