//! The store's umbrella error: every operation family's error converts
//! into it, and every variant names the file it concerns.

use crate::btree::TreeError;
use crate::manifest::ManifestError;
use crate::wal::WalError;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A tree operation failed (a corrupt page names itself in `source`).
    #[error("{}: {source}", file.display())]
    Tree { file: PathBuf, source: TreeError },
    /// The manifest could not be loaded or stored.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The data file or its directory could not be opened or created.
    #[error("{}: {source}", file.display())]
    Open { file: PathBuf, source: io::Error },
    /// An earlier failure (`after`: a manifest write, a batch that failed
    /// part way) left the shard taking no writes until reopened.
    #[error("{}: read-only after a failed {after}; reopen to write again", file.display())]
    ReadOnly { file: PathBuf, after: &'static str },
    /// The WAL failed (a write, a sync, or its recovery).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A user key over [`crate::table::MAX_KEY`].
    #[error("key of {len} bytes exceeds the {max}-byte bound")]
    KeyTooLong { len: usize, max: usize },
}
