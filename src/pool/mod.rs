//! Worker pools: the hardware-aware runtime ([`WorkerPool`]) and typed
//! groups of application workers on it ([`WorkerGroup`]).
//!
//! A message from one producer thread to one worker crosses exactly one SPSC
//! ring: every [`PoolSender`] owns a ring per worker (a mesh, as Seastar wires
//! its cores), so producers never contend on a shared queue.

mod builder;
mod config;
mod factory;
mod group;
mod runtime;
mod sender;

pub use builder::{NoFactory, PoolBuilder};
pub use config::PoolConfig;
pub use factory::WorkerFactory;
pub use group::{PoolStats, WorkerGroup, WorkerPlacement};
pub use runtime::WorkerPool;
pub use sender::PoolSender;

use crate::partition::Partitioner;
use crate::worker::{IdleStrategy, Worker, WorkerConfig};
use crate::{Error, Result};
use std::sync::Arc;

/// Resolves a pool configuration into one worker configuration per worker:
/// names, CPUs, and the checks that make a placement impossible.
pub(crate) fn worker_configs(config: &PoolConfig, available: &[usize]) -> Result<Vec<WorkerConfig>> {
    let n = config.num_workers.unwrap_or(available.len().max(1));
    if n == 0 {
        return Err(Error::InvalidConfig("a pool needs at least one worker".into()));
    }
    let cpus: Option<Vec<usize>> = match &config.cpus {
        Some(list) => {
            if list.is_empty() {
                return Err(Error::InvalidConfig("an empty CPU list was given".into()));
            }
            if let Some(bad) = list.iter().find(|c| !available.contains(c)) {
                return Err(Error::InvalidConfig(format!(
                    "CPU {bad} is not available to this process (allowed: {available:?})"
                )));
            }
            Some(list.clone())
        }
        None if config.cpu_affinity => Some(available.to_vec()),
        None => None,
    };
    if let Some(cpus) = &cpus {
        if config.worker.idle == IdleStrategy::Spin && n > cpus.len() {
            return Err(Error::InvalidConfig(format!(
                "{n} busy-spinning workers on {} CPUs would starve each other; \
                 use fewer workers or IdleStrategy::SpinThenPark",
                cpus.len()
            )));
        }
    }
    Ok((0..n)
        .map(|i| {
            let mut w = config.worker.clone().with_name(format!("{}-{i}", config.name));
            w.cpu = cpus.as_ref().map(|c| c[i % c.len()]);
            w
        })
        .collect())
}

pub(crate) fn start_group<W, Args, F>(
    config: PoolConfig,
    mut factory: F,
    partitioner: Arc<dyn Partitioner>,
) -> Result<WorkerGroup<W>>
where
    W: Worker,
    F: WorkerFactory<W, Args>,
{
    let available = crate::topology::available_cpus();
    let configs = worker_configs(&config, &available)?;
    WorkerGroup::start(|i| factory.make(i), configs, partitioner)
}

#[cfg(test)]
mod tests;
