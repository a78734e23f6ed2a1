//! Accelerator workers: compute jobs on a GPU through wgpu (feature `gpu`),
//! with a CPU path that gives identical results.
//!
//! An [`Accelerator`] is a dedicated thread (pinned where the plan says)
//! that owns one device and queue. Requesters get an [`AccelClient`] (from
//! the accelerator or a cloneable [`AccelConnector`]) with a
//! [`ResultSink`](crate::worker::ResultSink) for the results: inside a
//! worker's `init`, `ResultSink::to_current_worker(map)` makes each
//! [`JobResult`] an ordinary message in that worker's loop, like an I/O
//! completion; a plain thread uses `ResultSink::queue()`.
//!
//! Jobs ([`Job`]) are built-in kernels, each with a CPU reference
//! implementation the GPU path matches bit for bit ([`crc32c_blocks`],
//! [`reduce_u32`], [`saxpy`]), or custom WGSL ([`Kernel`], [`KernelJob`]).
//! The accelerator compiles each kernel once (pipelines cached by name),
//! pools device buffers by power-of-two size class, takes queued jobs off its
//! queue in batches, and splits large built-in jobs into chunks the device
//! can bind; each job or chunk is one device submission, pipelined so that
//! the next uploads while the one before it computes. The checksum kernel cuts each block
//! into segments and combines their CRCs ([`crc32c_combine`]); the
//! reduction uses workgroup memory and, where the adapter has them,
//! subgroup operations; workgroup sizes follow the adapter's limits. Every
//! result carries its own [`Timing`].
//!
//! Failure never loses a job: a malformed job or kernel comes back as an
//! [`AccelError`] result; a device error or adapter loss reruns the job on
//! the CPU path ([`JobResult::path`] says which path ran,
//! [`JobResult::gpu_error`] why it moved). Without feature `gpu`, or without
//! an adapter, every job runs on the CPU path and
//! [`Accelerator::path`] says why.
//!
//! ```
//! use shared_nothing::accel::{Accelerator, AcceleratorConfig, Job, Output, reduce_u32};
//! use shared_nothing::worker::ResultSink;
//!
//! let mut accel = Accelerator::start(AcceleratorConfig::gpu()).unwrap();
//! let (sink, mut results) = ResultSink::queue();
//! let mut client = accel.client(sink).unwrap();
//! let data: Vec<u32> = (0..10_000).collect();
//! client.submit(1, Job::reduce(data.clone())).unwrap();
//! let r = results.recv().unwrap();
//! assert_eq!(r.output.unwrap(), Output::Reduction(reduce_u32(&data)));
//! println!("{} in {:?} on {}", r.job, r.timing.execute, r.path);
//! accel.stop().unwrap();
//! ```
//!
//! **Layering:** this module uses `worker`, `channel`, `topology` and
//! `metrics`; never `pool` (the pool's `start_accelerators` builds on it).

mod accelerator;
mod config;
mod cpu;
mod crc_shift;
mod engine;
mod error;
#[cfg(feature = "gpu")]
mod gpu;
mod job;
#[cfg(feature = "gpu")]
mod kernels;
mod set;

pub use accelerator::{AccelClient, AccelConnector, AccelStats, Accelerator, AdapterInfo};
pub(crate) use accelerator::{AccelSample, AccelSource};
pub use config::AcceleratorConfig;
pub use cpu::{crc32c, crc32c_blocks, reduce_u32, saxpy};
pub use crc_shift::crc32c_combine;
pub use error::{AccelError, SubmitError};
pub use job::{
    CopyBandwidth, CpuKernelFn, ExecPath, ExecuteClock, Job, JobResult, Kernel, KernelJob,
    MAX_WORKGROUPS_PER_DIMENSION, Output, Reduction, Timing,
};
pub use set::Accelerators;

#[cfg(test)]
mod tests;
