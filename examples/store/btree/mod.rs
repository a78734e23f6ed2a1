//! A copy-on-write B+tree over a [`PageStore`].
//!
//! Leaves hold sorted keys with their values (inline, or in overflow chains
//! for values over a quarter page); inner nodes hold separators and child
//! ids. Changes go to in-memory copies of the nodes on the changed paths
//! (`pager.rs`); [`Tree::write_checkpoint`] writes them to fresh pages
//! with the free list, syncs, and the caller then records the new root in a
//! manifest and calls [`Tree::checkpoint_done`]. The pages of the two
//! newest checkpoints are never overwritten (`free.rs`), so a crash at any
//! point leaves the last one whole, and the one before it too.
//!
//! Modules: `node` (node encoding, N1-N3), `pager` (page checks, dirty
//! nodes, copy-on-write; C1-C3), `cache` (the bounded page cache and its
//! eviction policy; K1-K3), `free` (free space policy, F1-F2), `ops`
//! (search, insert, delete; T1), `merge` (underfull nodes into a
//! neighbour), `cursor` (ordered scans), `overflow` (value chains, O1),
//! `error`.

mod cache;
mod cursor;
mod error;
mod free;
mod merge;
mod node;
mod ops;
mod overflow;
mod pager;
#[cfg(test)]
mod tests;

pub use cache::CacheStats;
pub use error::TreeError;
pub use node::MAX_TREE_KEY;
pub use overflow::MAX_VALUE;

use crate::page::{PageId, PageSize};
use crate::pagestore::PageStore;
use cursor::Cursor;
use free::FreeRecord;
use node::{Value, Want};
use pager::Pager;

/// Deepest tree a descent accepts. With at least three children per inner
/// node (N3) a valid tree of any size the file can hold is far shallower;
/// a deeper path means a corrupt (cyclic) structure.
const MAX_DEPTH: usize = 40;

/// Where a tree's durable state starts, as its manifest records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeRoot {
    /// The sequence number of the checkpoint.
    pub seq: u64,
    /// The root page, `None` for an empty tree.
    pub root: Option<PageId>,
    /// The first free-list page, `None` for no free pages.
    pub free_head: Option<PageId>,
    /// Pages in the file (the first never-allocated id).
    pub page_count: u64,
}

/// A checkpoint whose pages are written and synced, waiting for its
/// manifest.
#[derive(Debug)]
pub struct Written {
    /// What the manifest must record (its `seq` is the caller's).
    pub root: TreeRoot,
    free: FreeRecord,
}

/// One batch of a scan: entries in key order, and the key to resume from
/// when more remain.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanBatch {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    pub resume: Option<Vec<u8>>,
}

/// Page and memory counts, for the demo's report.
#[derive(Clone, Copy, Debug)]
pub struct TreeStats {
    pub page_count: u64,
    pub reusable: usize,
    pub cooling: usize,
    pub pending: usize,
    pub dirty: usize,
    pub cache: CacheStats,
}

/// A copy-on-write B+tree.
#[derive(Debug)]
pub struct Tree<S> {
    pager: Pager<S>,
    root: Option<PageId>,
}

impl<S: PageStore> Tree<S> {
    /// Opens the tree of a checkpoint, with a page cache of at most
    /// `cache_bytes` (less than a page: none).
    ///
    /// # Errors
    /// The free list cannot be read.
    pub fn open(
        store: S,
        size: PageSize,
        at: TreeRoot,
        cache_bytes: usize,
    ) -> Result<Self, TreeError> {
        Ok(Tree {
            pager: Pager::open(
                store,
                size,
                at.seq,
                at.free_head,
                at.page_count,
                cache_bytes,
            )?,
            root: at.root,
        })
    }

    /// The store, for the manifest's I/O.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.pager.store
    }

    fn check_key(key: &[u8]) -> Result<(), TreeError> {
        if key.len() > MAX_TREE_KEY {
            return Err(TreeError::KeyTooLong {
                len: key.len(),
                max: MAX_TREE_KEY,
            });
        }
        Ok(())
    }

    fn resolve(&self, value: Value) -> Result<Vec<u8>, TreeError> {
        match value {
            Value::Inline(v) => Ok(v),
            Value::Overflow { head, len } => self.pager.read_value(head, len),
        }
    }

    /// The value under `key`.
    ///
    /// # Errors
    /// A page on the way failed its checks, or the key is too long.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TreeError> {
        Self::check_key(key)?;
        self.find(key, Want::Value)?
            .map(|v| self.resolve(v))
            .transpose()
    }

    /// Whether `key` is present (without reading its value).
    ///
    /// # Errors
    /// As [`Tree::get`].
    pub fn exists(&self, key: &[u8]) -> Result<bool, TreeError> {
        Self::check_key(key)?;
        Ok(self.find(key, Want::Presence)?.is_some())
    }

    /// Stores `value` under `key`, replacing any value there; values over a
    /// quarter page go to an overflow chain.
    ///
    /// # Errors
    /// A bound is exceeded, or a page failed its checks or its write.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), TreeError> {
        Self::check_key(key)?;
        if value.len() > MAX_VALUE {
            return Err(TreeError::ValueTooLarge {
                len: value.len(),
                max: MAX_VALUE,
            });
        }
        let (stored, chain) = if node::fits_inline(self.pager.size, key.len(), value.len()) {
            (Value::Inline(value.to_vec()), Vec::new())
        } else {
            let chain = self.pager.write_value(value)?;
            let head = chain.first().copied().ok_or(TreeError::Malformed {
                page: PageId(0),
                what: "empty overflow chain",
            })?;
            let len = value.len() as u64;
            (Value::Overflow { head, len }, chain)
        };
        match self.insert(key, stored) {
            Ok(old) => {
                self.release(old);
                Ok(())
            }
            Err(e) => {
                // The new chain is fresh and unreferenced: free it.
                self.pager.free_chain(chain);
                Err(e)
            }
        }
    }

    /// Removes `key`; returns whether it was present.
    ///
    /// # Errors
    /// A page on the way failed its checks.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, TreeError> {
        Self::check_key(key)?;
        let old = self.remove(key)?;
        let was = old.is_some();
        self.release(old);
        Ok(was)
    }

    /// Frees the overflow chain of a value that is gone.
    fn release(&mut self, old: Option<Value>) {
        if let Some(Value::Overflow { head, len }) = old {
            self.pager.free_value(head, len);
        }
    }

    /// Up to `limit` entries from `start` (inclusive) to `end` (exclusive;
    /// `None` for no bound), in key order.
    ///
    /// # Errors
    /// A page on the way failed its checks.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanBatch, TreeError> {
        let mut cursor = Cursor::seek(&self.pager, self.root, start)?;
        let mut batch = ScanBatch::default();
        while let Some(e) = cursor.next(&self.pager)? {
            if end.is_some_and(|end| e.key.as_slice() >= end) {
                break;
            }
            if batch.entries.len() == limit {
                batch.resume = Some(e.key);
                break;
            }
            let value = self.resolve(e.value)?;
            batch.entries.push((e.key, value));
        }
        Ok(batch)
    }

    /// Writes the checkpoint after `seq`: every changed node to its fresh
    /// page, then the free list, then syncs. Returns what its manifest must
    /// record; until [`Tree::checkpoint_done`] the tree stays as it was.
    ///
    /// # Errors
    /// A write or the sync failed; the caller then calls
    /// [`Tree::checkpoint_failed`].
    pub fn write_checkpoint(&mut self, seq: u64) -> Result<Written, TreeError> {
        let free = self.pager.write_all()?;
        let written = Written {
            root: TreeRoot {
                seq,
                root: self.root,
                free_head: free.list_pages.first().copied(),
                page_count: self.pager.space.next(),
            },
            free,
        };
        match self.pager.sync() {
            Ok(()) => Ok(written),
            Err(e) => {
                self.pager.aborted(written.free);
                Err(e)
            }
        }
    }

    /// The manifest for `written` is durable.
    pub fn checkpoint_done(&mut self, written: Written) {
        self.pager.committed(written.root.seq, written.free);
    }

    /// The manifest for `written` could not be made durable.
    pub fn checkpoint_failed(&mut self, written: Written) {
        self.pager.aborted(written.free);
    }

    /// Page and memory counts.
    pub fn stats(&self) -> TreeStats {
        let (reusable, cooling, pending) = self.pager.space.counts();
        TreeStats {
            page_count: self.pager.space.next(),
            reusable,
            cooling,
            pending,
            dirty: self.pager.dirty_count(),
            cache: self.pager.cache_stats(),
        }
    }
}
