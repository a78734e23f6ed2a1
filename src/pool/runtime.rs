//! `WorkerPool`: the hardware-aware runtime.

use super::builder::{NoFactory, PoolBuilder};
use super::config::PoolConfig;
use super::factory::WorkerFactory;
use super::group::WorkerGroup;
use crate::partition::{HashPartitioner, Partitioner};
use crate::worker::Worker;
use crate::Result;
use std::sync::Arc;

/// The machine-wide runtime: what the hardware offers and which cores the
/// application workers get. Typed workers are started on it with
/// [`spawn`](Self::spawn); [`builder`](Self::builder) does both in one go.
///
/// ```
/// use shared_nothing::prelude::*;
/// struct W;
/// impl Worker for W {
///     type State = ();
///     type Message = u8;
///     fn init(&mut self) -> Result<()> { Ok(()) }
///     fn handle_message(&mut self, _: &mut (), _: Envelope<u8>) -> Result<()> { Ok(()) }
/// }
/// let pool = WorkerPool::new().unwrap();
/// let mut group = pool.spawn(|_| W).unwrap();
/// group.broadcast(1).unwrap();
/// group.stop_all().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct WorkerPool {
    cpus: Vec<usize>,
    config: PoolConfig,
}

impl WorkerPool {
    /// Detects the CPUs this process may use and plans one application
    /// worker per CPU.
    ///
    /// # Errors
    /// Never on Linux today; kept fallible for detection that can fail.
    pub fn new() -> Result<Self> {
        let cpus = crate::topology::available_cpus();
        Ok(Self {
            config: PoolConfig::new().with_num_workers(cpus.len()),
            cpus,
        })
    }

    /// The CPUs application workers run on.
    pub fn app_cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Starts one typed worker per application CPU.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn spawn<W, Args, F>(&self, factory: F) -> Result<WorkerGroup<W>>
    where
        W: Worker,
        F: WorkerFactory<W, Args>,
    {
        super::start_group(self.config.clone(), factory, Arc::new(HashPartitioner::new()))
    }

    /// A builder for a typed worker group.
    pub fn builder() -> PoolBuilder<NoFactory> {
        PoolBuilder::new()
    }

    /// A typed worker group from a configuration, hash-partitioned.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn with_config<W, Args, F>(config: PoolConfig, factory: F) -> Result<WorkerGroup<W>>
    where
        W: Worker,
        F: WorkerFactory<W, Args>,
    {
        super::start_group(config, factory, Arc::new(HashPartitioner::new()))
    }

    /// A typed worker group from a configuration and a partitioner.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn with_partitioner<W, Args, F>(
        config: PoolConfig,
        factory: F,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<WorkerGroup<W>>
    where
        W: Worker,
        F: WorkerFactory<W, Args>,
    {
        super::start_group(config, factory, partitioner)
    }
}
