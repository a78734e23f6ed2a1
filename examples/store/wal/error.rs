//! The WAL's error type: every I/O failure names the file, and the offset
//! where one applies.

use super::record::Lsn;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Why a WAL operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WalError {
    /// Writing a record failed (ENOSPC, EIO, ...); nothing at or after
    /// `offset` in `file` is durable.
    #[error("{}: WAL write at offset {offset} failed: {source}", file.display())]
    Write {
        file: PathBuf,
        offset: u64,
        source: io::Error,
    },
    /// fdatasync of a segment (or fsync of the directory) failed; nothing
    /// written to `file` since the last sync is durable, up to `offset`.
    #[error("{}: WAL sync up to offset {offset} failed: {source}", file.display())]
    Sync {
        file: PathBuf,
        offset: u64,
        source: io::Error,
    },
    /// Reading, cutting, creating, listing or removing a WAL file failed.
    #[error("{}: WAL {op} at offset {offset} failed: {source}", file.display())]
    Io {
        op: &'static str,
        file: PathBuf,
        offset: u64,
        source: io::Error,
    },
    /// The first segment starts after the record the checkpoint needs:
    /// records in between are lost.
    #[error("{}: WAL starts at {found}, but the checkpoint needs {expected} on", file.display())]
    Gap {
        file: PathBuf,
        expected: Lsn,
        found: Lsn,
    },
    /// A write or sync failed and has not been retried successfully yet;
    /// [`super::Wal::sync`] retries it.
    #[error("WAL takes no appends until a failed write is retried: {reason}")]
    Failed { reason: String },
    /// The batch cannot be a record.
    #[error("batch refused: {0}")]
    Batch(&'static str),
    /// A batch body over [`super::record::MAX_BODY`].
    #[error("batch of {len} bytes exceeds the {max}-byte record bound")]
    TooLarge { len: usize, max: usize },
}
