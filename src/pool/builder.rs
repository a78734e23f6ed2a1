//! `WorkerPool::builder()`: a typed worker group in one expression.

use super::config::PoolConfig;
use super::factory::WorkerFactory;
use super::group::WorkerGroup;
use super::profile::Profile;
use crate::Result;
use crate::partition::{HashPartitioner, Partitioner};
use crate::worker::{IdleStrategy, Worker, WorkerConfig};
use std::marker::PhantomData;
use std::sync::Arc;

/// Marker for a builder that has no factory yet.
#[derive(Debug, Clone, Copy)]
pub struct NoFactory;

/// Builds a [`WorkerGroup`]: set a factory, then any overrides, then
/// [`build`](PoolBuilder::build).
///
/// ```
/// use shared_nothing::prelude::*;
/// struct W;
/// impl Worker for W {
///     type State = ();
///     type Message = u32;
///     type Reply = ();
///     fn init(&mut self) -> Result<()> { Ok(()) }
///     fn handle_message(&mut self, _: &mut (), _: Envelope<u32>) -> Result<()> { Ok(()) }
/// }
/// let mut pool = WorkerPool::builder()
///     .factory(|_i| W)
///     .workers(2)
///     .cpu_affinity(false)
///     .partitioner(ConsistentHashPartitioner::new(2, 64))
///     .build()
///     .unwrap();
/// pool.send_partitioned("key", 1).unwrap();
/// pool.stop_all().unwrap();
/// ```
pub struct PoolBuilder<F, Args = ()> {
    factory: F,
    config: PoolConfig,
    partitioner: Option<Arc<dyn Partitioner>>,
    args: PhantomData<fn(Args)>,
}

impl<F, Args> std::fmt::Debug for PoolBuilder<F, Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PoolBuilder<NoFactory> {
    pub(crate) fn new() -> Self {
        Self {
            factory: NoFactory,
            config: PoolConfig::new(),
            partitioner: None,
            args: PhantomData,
        }
    }

    /// How to build each worker: `|i| MyWorker::new(i)` or `|| MyWorker`.
    pub fn factory<W, Args, F: WorkerFactory<W, Args>>(self, factory: F) -> PoolBuilder<F, Args> {
        PoolBuilder {
            factory,
            config: self.config,
            partitioner: self.partitioner,
            args: PhantomData,
        }
    }
}

impl<F, Args> PoolBuilder<F, Args> {
    /// The profile that decides whatever is not set (default production).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.config = self.config.with_profile(profile);
        self
    }

    /// Number of application workers.
    pub fn workers(mut self, n: usize) -> Self {
        self.config = self.config.with_num_workers(n);
        self
    }

    /// Pin each worker to its own CPU where the machine allows.
    pub fn cpu_affinity(mut self, on: bool) -> Self {
        self.config = self.config.with_cpu_affinity(on);
        self
    }

    /// Bind worker memory to its NUMA node (see [`PoolConfig::with_numa_aware`]).
    pub fn numa_aware(mut self, on: bool) -> Self {
        self.config = self.config.with_numa_aware(on);
        self
    }

    /// Plan only on these CPUs.
    pub fn cpus(mut self, cpus: Vec<usize>) -> Self {
        self.config = self.config.with_cpus(cpus);
        self
    }

    /// Storage I/O workers per NUMA node.
    pub fn storage_workers_per_node(mut self, n: usize) -> Self {
        self.config = self.config.with_storage_workers_per_node(n);
        self
    }

    /// Network I/O workers per NUMA node.
    pub fn network_workers_per_node(mut self, n: usize) -> Self {
        self.config = self.config.with_network_workers_per_node(n);
        self
    }

    /// Where connections are served (see
    /// [`NetworkMode`](super::NetworkMode)); the plan's choice otherwise.
    pub fn network_mode(mut self, mode: super::NetworkMode) -> Self {
        self.config = self.config.with_network_mode(mode);
        self
    }

    /// GPU workers.
    pub fn gpu_workers(mut self, n: usize) -> Self {
        self.config = self.config.with_gpu_workers(n);
        self
    }

    /// How keys map to workers (default [`HashPartitioner`]).
    pub fn partitioner(mut self, p: impl Partitioner) -> Self {
        self.partitioner = Some(Arc::new(p));
        self
    }

    /// The configuration every worker starts from.
    pub fn worker_config(mut self, c: WorkerConfig) -> Self {
        self.config = self.config.with_worker_config(c);
        self
    }

    /// Deliver each routed message's routing key to its worker
    /// ([`Envelope::key_hash`](crate::worker::Envelope::key_hash)); see
    /// [`WorkerConfig::with_routing_keys`]. Off by default.
    pub fn routing_keys(mut self, on: bool) -> Self {
        self.config.worker = self.config.worker.with_routing_keys(on);
        self
    }

    /// Capacity of each sender's ring into each worker.
    pub fn queue_capacity(mut self, cap: usize) -> Self {
        self.config.overrides.queue_capacity = Some(cap);
        self
    }

    /// What idle workers do (the plan parks workers that cannot have a core
    /// of their own, or refuses if that is impossible).
    pub fn idle_strategy(mut self, idle: IdleStrategy) -> Self {
        self.config.overrides.idle = Some(idle);
        self
    }

    /// Most messages per `handle_batch` call.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.overrides.batch_size = Some(n);
        self
    }

    /// Thread name prefix.
    pub fn name(mut self, prefix: impl Into<String>) -> Self {
        self.config = self.config.with_name(prefix);
        self
    }

    /// Replaces the whole pool configuration.
    pub fn config(mut self, config: PoolConfig) -> Self {
        self.config = config;
        self
    }
}

impl PoolBuilder<NoFactory> {
    /// Detects the machine and plans the runtime with these overrides,
    /// without starting application workers (start them with
    /// [`WorkerPool::spawn`](super::WorkerPool::spawn)).
    ///
    /// # Errors
    /// Detection or planning errors (an impossible override).
    pub fn build_pool(self) -> Result<super::WorkerPool> {
        super::WorkerPool::from_config(self.config)
    }
}

impl<F, Args> PoolBuilder<F, Args> {
    /// Starts the workers. The runtime behind them is private to the group,
    /// so no I/O or GPU worker can start on it: the plan keeps no core for
    /// one (use [`build_pool`](PoolBuilder::build_pool) and
    /// [`WorkerPool::spawn`](super::WorkerPool::spawn) to run them beside
    /// the group).
    ///
    /// # Errors
    /// `Plan` for an impossible placement (zero workers, a CPU this process
    /// may not use, more busy-spinning workers than CPUs), `InvalidConfig`
    /// for a partitioner built for another worker count; `Spawn`/`Init` if a
    /// worker fails to start (none is left running then).
    pub fn build<W>(self) -> Result<WorkerGroup<W>>
    where
        W: Worker,
        F: WorkerFactory<W, Args>,
    {
        let partitioner = self
            .partitioner
            .unwrap_or_else(|| Arc::new(HashPartitioner::new()));
        // The pool is private to this group: no I/O or GPU worker can ever
        // start on it, so the application workers may use every core.
        let pool = super::WorkerPool::for_application_only(self.config)?;
        pool.spawn_with(self.factory, partitioner)
    }
}
