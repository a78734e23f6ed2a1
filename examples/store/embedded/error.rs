//! The embedded API's errors, redb style: one `#[non_exhaustive]` error
//! per operation family, each converting into the umbrella [`Error`].
//!
//! A shard's engine error reaches every caller it concerns (a failed
//! group commit answers every write of the round), so it travels as an
//! `Arc<StoreError>` with the shard's index.

use crate::error::StoreError;
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;

/// Why [`super::Store::open`] failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory could not be created.
    #[error("cannot create {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// `shards: Some(0)`.
    #[error("a store needs at least one shard")]
    NoShards,
    /// The directory holds a store of another shard count (its manifests
    /// record it): opening it with this one would misroute keys.
    #[error(
        "{} holds a store of {recorded} shards, {requested} requested \
         (pass shards: Some({recorded}) or None, or another directory)",
        dir.display()
    )]
    ShardCount {
        dir: PathBuf,
        recorded: usize,
        requested: usize,
    },
    /// A shard's files could not be opened or recovered (the file and,
    /// for corruption, the page are named in `source`).
    #[error("shard {shard}: {source}")]
    Shard { shard: usize, source: StoreError },
    /// The worker pool could not start the shard workers.
    #[error("worker pool: {0}")]
    Pool(#[from] shared_nothing::Error),
}

/// Why a point read (get, exists) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A key over [`crate::table::MAX_KEY`] bytes: refused before it is sent.
    #[error("key of {len} bytes exceeds the {max}-byte bound")]
    KeyTooLong { len: usize, max: usize },
    /// The shard failed the read (a page failed its checks, named), or
    /// the group commit its reply waited for failed.
    #[error("shard {shard}: {source}")]
    Storage {
        shard: usize,
        source: Arc<StoreError>,
    },
    /// The shard's worker is gone (the store is closing or a worker died).
    #[error("shard {shard}: worker gone ({reason})")]
    Closed { shard: usize, reason: String },
}

/// Why a write (put, delete, batch, checkpoint, sync) failed. Nothing of
/// a refused input is applied; a batch over several shards is atomic per
/// shard only, so after a `Storage` error other shards' parts may stand.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A key over [`crate::table::MAX_KEY`] bytes.
    #[error("key of {len} bytes exceeds the {max}-byte bound")]
    KeyTooLong { len: usize, max: usize },
    /// A value over [`crate::btree::MAX_VALUE`] bytes (512 MiB).
    #[error("value of {len} bytes exceeds the {max}-byte bound")]
    ValueTooLarge { len: usize, max: usize },
    /// A batch with no operations.
    #[error("empty batch")]
    EmptyBatch,
    /// One shard's part of a batch would make a WAL record over its bound.
    #[error("shard {shard}'s part of the batch is {bytes} bytes, over the {max}-byte record bound")]
    BatchTooLarge {
        shard: usize,
        bytes: usize,
        max: usize,
    },
    /// The shard refused or failed the write, or its group commit failed
    /// (then the write is not acknowledged; it may or may not survive a
    /// crash, as with any failed fsync).
    #[error("shard {shard}: {source}")]
    Storage {
        shard: usize,
        source: Arc<StoreError>,
    },
    /// The shard's worker is gone.
    #[error("shard {shard}: worker gone ({reason})")]
    Closed { shard: usize, reason: String },
}

/// Why a range scan failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A start or end key over [`crate::table::MAX_KEY`] bytes.
    #[error("key of {len} bytes exceeds the {max}-byte bound")]
    KeyTooLong { len: usize, max: usize },
    /// `limit` 0: a scan returns at least one entry when any remains.
    #[error("scan limit must be at least 1")]
    ZeroLimit,
    /// A shard failed its part of the scan.
    #[error("shard {shard}: {source}")]
    Storage {
        shard: usize,
        source: Arc<StoreError>,
    },
    /// The shard's worker is gone.
    #[error("shard {shard}: worker gone ({reason})")]
    Closed { shard: usize, reason: String },
}

/// Why [`super::Store::close`] failed: the final checkpoint of a shard, or
/// stopping the workers.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CloseError {
    /// A shard's final sync or checkpoint failed (what its WAL holds is
    /// replayed on the next open).
    #[error(transparent)]
    Checkpoint(#[from] WriteError),
    /// A worker failed to stop cleanly.
    #[error("worker pool: {0}")]
    Pool(#[from] shared_nothing::Error),
}

/// Any embedded-API error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Close(#[from] CloseError),
}
