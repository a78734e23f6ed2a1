//! # shared-nothing
//!
//! Run an application as a set of isolated, pinned workers that share no
//! state and talk only by messages.
//!
//! - [`worker`]: the [`Worker`](worker::Worker) trait, typed envelopes,
//!   request/reply (blocking or awaited: replies and sends are futures any
//!   executor can drive), pause/resume/ping, panic isolation and restart.
//! - [`channel`]: SPSC (this crate's lock-free ring), MPSC and MPMC channels,
//!   bounded and unbounded, with timeouts and batching.
//! - [`partition`]: hash, consistent-hash, range, round-robin and custom
//!   partitioners.
//! - [`pool`]: worker pools with a mesh of SPSC rings from every sender to
//!   every worker.
//! - [`io`]: storage and network I/O workers on io_uring (with a portable
//!   fallback); completions come back into the requesting worker's loop.
//! - [`topology`]: which CPUs this process may use.
//! - [`accel`]: accelerator workers (wgpu compute with feature `gpu`, and
//!   a CPU path with identical results).
//!
//! ```
//! use shared_nothing::prelude::*;
//!
//! struct Counter;
//! impl Worker for Counter {
//!     type State = u64;
//!     type Message = u64;
//!     type Reply = ();
//!     fn init(&mut self) -> Result<u64> { Ok(0) }
//!     fn handle_message(&mut self, total: &mut u64, msg: Envelope<u64>) -> Result<()> {
//!         *total += msg.payload;
//!         Ok(())
//!     }
//! }
//!
//! let mut pool = WorkerPool::builder()
//!     .factory(|_| Counter)
//!     .workers(2)
//!     .build()
//!     .unwrap();
//! for i in 0..100u64 {
//!     pool.send_partitioned(&i, i).unwrap();
//! }
//! pool.stop_all().unwrap();
//! assert_eq!(pool.stats().handled(), 100);
//! ```

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod accel;
pub mod channel;
mod error;
#[cfg(not(loom))]
pub mod io;
pub mod metrics;
pub mod partition;
pub mod pool;
mod sync;
pub mod topology;
pub mod worker;

pub use error::{Error, Result, SubmitError};

/// The README's code samples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The lock-free internals, exposed only to the loom model tests
/// (`tests/loom.rs`, built with `RUSTFLAGS="--cfg loom"`).
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::channel::ring::{Consumer, Producer, PushError, ring};
    pub use crate::sync::block_on;
    pub use crate::sync::signal::Signal;
    pub use crate::worker::mailbox::{LoomMailSender, LoomMailbox};
    pub use crate::worker::reply::LoomLife;
    pub use crate::worker::{Pending, ReplyError, ReplyTo};
}

/// The names most programs need.
pub mod prelude {
    pub use crate::accel::{AccelClient, Accelerator, Job, JobResult};
    pub use crate::channel::Channel;
    pub use crate::partition::{
        ConsistentHashPartitioner, CustomPartitioner, HashPartitioner, Partitioner,
        RangePartitioner, RoundRobinPartitioner,
    };
    #[cfg(not(loom))]
    pub use crate::pool::IoWorkers;
    pub use crate::pool::{PoolConfig, PoolSender, Profile, WorkerGroup, WorkerPool};
    pub use crate::worker::{
        Batch, Envelope, IdleStrategy, RestartPolicy, ResultSink, Worker, WorkerConfig,
        WorkerSender,
    };
    pub use crate::{Error, Result};
}
