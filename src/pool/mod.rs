//! Worker pools: the hardware-aware runtime ([`WorkerPool`]) and typed
//! groups of application workers on it ([`WorkerGroup`]).
//!
//! A message from one producer thread to one worker crosses exactly one SPSC
//! ring: every [`PoolSender`] owns a ring per worker (a mesh, as Seastar wires
//! its cores), so producers never contend on a shared queue.

mod accel;
mod builder;
mod config;
mod factory;
mod group;
#[cfg(not(loom))]
mod io;
mod metrics;
#[cfg(not(loom))]
mod metrics_http;
mod placement;
mod plan;
mod profile;
mod runtime;
mod sender;

pub use builder::{NoFactory, PoolBuilder};
pub use config::PoolConfig;
pub use factory::WorkerFactory;
pub use group::{PoolStats, WorkerGroup, WorkerPlacement};
#[cfg(not(loom))]
pub use io::IoWorkers;
#[cfg(not(loom))]
pub use metrics_http::{MAX_HEAD, MetricsServer};
pub use plan::{
    Detected, GpuPlacement, IoBackend, MAX_WORKERS_PER_CPU, MIN_CPUS_FOR_SPIN, NetworkMode,
    Placement, Plan, PlanError, THREAD_PER_CORE_MAX_CORES, WorkerRole, plan,
};
pub use profile::{ENV_VARS, EnvError, EnvOverrides, PlanOverrides, Profile};
pub use runtime::WorkerPool;
pub use sender::PoolSender;

#[cfg(test)]
mod tests;

#[cfg(all(test, not(loom)))]
mod async_tests;
