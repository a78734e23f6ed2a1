//! I/O workers: application workers never block on disk or network; they
//! hand I/O to dedicated I/O workers, each owning one io_uring, and get the
//! completions back in their own loop.
//!
//! - [`StorageWorker`]: files. Reads, writes (buffered, linked
//!   write+`fdatasync`, or group-committed), vectored writes, syncs,
//!   `fallocate`, `O_DIRECT` with [`AlignedBuf`], registered buffers
//!   ([`FixedBuf`]) and registered files.
//! - [`NetworkWorker`]: TCP. Listening (multishot accept), receiving,
//!   sending, connecting, closing; accepted connections are handed to the
//!   application worker a partitioner picks, as [`NetEvent`]s.
//!
//! A request carries its buffer by ownership and gets it back in the
//! completion, which goes to the client's
//! [`ResultSink`](crate::worker::ResultSink): into a worker's loop as a
//! message, or onto a queue a plain thread waits on. A full ring or inbox is
//! backpressure, never a drop: a [`StorageClient`] keeps what does not fit
//! in its own bounded queue, in order ([`IoOptions`] sets the bound), and
//! hands a request back ([`SubmitError::Full`]) only past it.
//!
//! Where io_uring is unavailable (disabled by sysctl, refused by seccomp or
//! the memlock limit, an old kernel) the same API runs on a portable
//! backend: blocking calls on the storage worker's thread, epoll (via
//! `mio`) on the network worker's. [`BackendChoice`] or the
//! `SHARED_NOTHING_IO_BACKEND` environment variable forces either.
//!
//! The submission side (clients, rings into the worker) and the completion
//! side (sinks out of it) are kept apart: see `inbox.rs`.

mod backend;
pub(crate) mod buf;
mod error;
mod inbox;
mod inflight;
mod kernel;
mod local;
mod nap;
pub mod net;
mod options;
mod slots;
mod stats;
pub mod storage;
#[cfg(test)]
mod test_gate;
mod wake;

pub use backend::{BACKEND_ENV, BackendChoice, BackendError, IoBackendKind};
pub use buf::{AlignedBuf, DIRECT_ALIGN, FixedBuf, IoBuf};
pub use error::{IoError, SubmitError};
pub use net::{
    ConnId, DEFAULT_SEND_QUEUE_LIMIT, NetClient, NetConfig, NetEvent, NetEventKind, NetworkWorker,
    ReservedPort,
};
pub use options::IoOptions;
pub use stats::IoStats;
pub(crate) use stats::{LocalIoStats, StatsSource};
pub use storage::{
    BlockingStorageClient, Durability, FileId, OpenOptions, StorageClient, StorageCompletion,
    StorageConfig, StorageOp, StorageOutput, StorageWorker,
};
