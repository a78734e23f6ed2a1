//! The B+tree's error type: every failure names the page it concerns.

use crate::page::{PageError, PageId};
use std::io;
use thiserror::Error;

/// Why a tree operation failed. A corrupt page is always an error naming
/// it, never data.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The page failed its header or checksum checks.
    #[error(transparent)]
    Page(#[from] PageError),
    /// The page is intact but its contents break the tree's structure.
    #[error("{page}: malformed: {what}")]
    Malformed { page: PageId, what: &'static str },
    /// A reference to a page id outside the data pages of the file.
    #[error("reference to {page}, outside the data pages (file has {limit} pages)")]
    OutOfRange { page: PageId, limit: u64 },
    /// The page was written after the checkpoint being read: the file holds
    /// a newer generation of it (a manifest newer than this one was lost).
    #[error("{page}: written for checkpoint {epoch}, newer than checkpoint {durable}")]
    Stale {
        page: PageId,
        epoch: u64,
        durable: u64,
    },
    /// Descending from the root went deeper than any valid tree.
    #[error("{page}: tree deeper than {max} levels")]
    TooDeep { page: PageId, max: usize },
    /// Reading a page failed.
    #[error("{page}: read failed: {source}")]
    Read { page: PageId, source: io::Error },
    /// Writing a page failed.
    #[error("{page}: write failed: {source}")]
    Write { page: PageId, source: io::Error },
    /// Making the checkpoint's pages durable failed.
    #[error("sync failed: {0}")]
    Sync(io::Error),
    /// A key longer than the tree stores.
    #[error("key of {len} bytes exceeds the {max}-byte bound")]
    KeyTooLong { len: usize, max: usize },
    /// A value longer than the tree stores.
    #[error("value of {len} bytes exceeds the {max}-byte bound")]
    ValueTooLarge { len: usize, max: usize },
}
