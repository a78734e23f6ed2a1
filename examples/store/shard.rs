//! One shard's engine: a data file holding a B+tree of table-prefixed
//! keys, checkpointed through the manifest.
//!
//! Writes change the in-memory tree (plus overflow chains, written at once
//! to fresh pages) and become durable at [`Shard::checkpoint`]; the WAL of
//! the next step will make each write durable before that. The protocol
//! (`manifest.rs`): write pages copy-on-write, fsync, write the manifest
//! into the older slot, fsync. A crash before the manifest is complete
//! reopens the previous checkpoint, byte for byte.

use crate::btree::{ScanBatch, Tree, TreeError, TreeRoot, TreeStats};
use crate::error::StoreError;
use crate::manifest::{self, Manifest, ManifestError, ShardLayout};
use crate::page::PageSize;
use crate::pagestore::{FileStore, PageStore, SLOTS, first_data_page};
use crate::table::{MAX_KEY, TableId};
use std::fs::File;
use std::path::{Path, PathBuf};

/// How a shard's data file is opened; a new file records these, an
/// existing one must match them.
#[derive(Clone, Copy, Debug)]
pub struct ShardOptions {
    pub page_size: PageSize,
    pub layout: ShardLayout,
}

/// One batch of a table scan: user keys and values in order, and the key
/// to resume from when more remain.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    pub resume: Option<Vec<u8>>,
}

/// A shard's data file, open.
#[derive(Debug)]
pub struct Shard<S = FileStore> {
    file: PathBuf,
    tree: Tree<S>,
    /// The newest durable manifest and its slot.
    manifest: Manifest,
    slot: usize,
    /// A manifest write failed: it may or may not be on disk, and a retry
    /// would rewrite the pages it refers to, so the shard takes no more
    /// writes until reopened (reads go on).
    read_only: bool,
}

impl Shard<FileStore> {
    /// Opens the data file at `file`, creating it (with an empty first
    /// checkpoint) if it is absent or empty.
    ///
    /// # Errors
    /// The file cannot be opened, has no valid manifest, was made with
    /// another page size or layout, or its free list is corrupt.
    pub fn open(file: &Path, opts: ShardOptions) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            file: file.to_path_buf(),
            source,
        };
        let (store, new) = FileStore::open(file, opts.page_size).map_err(open_err)?;
        let shard = Self::open_store(store, new, file, opts)?;
        if new {
            sync_parent(file).map_err(open_err)?;
        }
        Ok(shard)
    }
}

impl<S: PageStore> Shard<S> {
    /// Opens the shard in `store` (the data file `file`; `new` if empty).
    ///
    /// # Errors
    /// As [`Shard::open`].
    pub fn open_store(
        mut store: S,
        new: bool,
        file: &Path,
        opts: ShardOptions,
    ) -> Result<Self, StoreError> {
        let (manifest, slot) = if new {
            let m = Manifest {
                page_size: opts.page_size,
                tree: TreeRoot {
                    seq: 1,
                    root: None,
                    free_head: None,
                    page_count: first_data_page(opts.page_size).0,
                },
                lsn: 0,
                layout: opts.layout,
            };
            manifest::store(&mut store, file, 0, &m)?;
            (m, 0)
        } else {
            manifest::load(&store, file)?
        };
        if manifest.page_size != opts.page_size {
            return Err(ManifestError::PageSize {
                file: file.to_path_buf(),
                on_disk: manifest.page_size.bytes(),
                requested: opts.page_size.bytes(),
            }
            .into());
        }
        if manifest.layout != opts.layout {
            return Err(ManifestError::Layout {
                file: file.to_path_buf(),
                on_disk: manifest.layout,
                requested: opts.layout,
            }
            .into());
        }
        let tree = Tree::open(store, opts.page_size, manifest.tree).map_err(|source| {
            StoreError::Tree {
                file: file.to_path_buf(),
                source,
            }
        })?;
        Ok(Shard {
            file: file.to_path_buf(),
            tree,
            manifest,
            slot,
            read_only: false,
        })
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly {
                file: self.file.clone(),
            });
        }
        Ok(())
    }

    fn tree_err(&self, source: TreeError) -> StoreError {
        StoreError::Tree {
            file: self.file.clone(),
            source,
        }
    }

    fn tree_key(table: TableId, key: &[u8]) -> Result<Vec<u8>, StoreError> {
        if key.len() > MAX_KEY {
            return Err(StoreError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY,
            });
        }
        Ok(table.key(key))
    }

    /// The value of `key` in `table`.
    ///
    /// # Errors
    /// The key is too long, or a page failed its checks (named).
    pub fn get(&self, table: TableId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let k = Self::tree_key(table, key)?;
        self.tree.get(&k).map_err(|e| self.tree_err(e))
    }

    /// Whether `key` is in `table`.
    ///
    /// # Errors
    /// As [`Shard::get`].
    pub fn exists(&self, table: TableId, key: &[u8]) -> Result<bool, StoreError> {
        let k = Self::tree_key(table, key)?;
        self.tree.exists(&k).map_err(|e| self.tree_err(e))
    }

    /// Stores `value` under `key` in `table`.
    ///
    /// # Errors
    /// A bound is exceeded, or a page failed its checks or its write.
    pub fn put(&mut self, table: TableId, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.writable()?;
        let k = Self::tree_key(table, key)?;
        self.tree.put(&k, value).map_err(|e| self.tree_err(e))
    }

    /// Removes `key` from `table`; returns whether it was there.
    ///
    /// # Errors
    /// As [`Shard::get`].
    pub fn delete(&mut self, table: TableId, key: &[u8]) -> Result<bool, StoreError> {
        self.writable()?;
        let k = Self::tree_key(table, key)?;
        self.tree.delete(&k).map_err(|e| self.tree_err(e))
    }

    /// Up to `limit` entries of `table` from `start` on, in key order; pass
    /// the returned `resume` as the next `start` to continue.
    ///
    /// # Errors
    /// As [`Shard::get`].
    pub fn scan(&self, table: TableId, start: &[u8], limit: usize) -> Result<Scan, StoreError> {
        let from = Self::tree_key(table, start)?;
        let end = table.end();
        let ScanBatch { entries, resume } = self
            .tree
            .scan(&from, end.as_deref(), limit)
            .map_err(|e| self.tree_err(e))?;
        let strip = |k: Vec<u8>| table.strip(&k).map(<[u8]>::to_vec).unwrap_or(k);
        Ok(Scan {
            entries: entries.into_iter().map(|(k, v)| (strip(k), v)).collect(),
            resume: resume.map(strip),
        })
    }

    /// Makes every change so far durable: pages, fsync, manifest into the
    /// older slot, fsync. Returns the new checkpoint's sequence number.
    ///
    /// # Errors
    /// A page write or sync failed: the previous checkpoint stays the
    /// durable one and the changes stay in memory for a retry. Or the
    /// manifest's write or sync failed: then the shard becomes read-only
    /// until reopened ([`StoreError::ReadOnly`]), since the new manifest
    /// may have reached the disk and a retry would rewrite its pages.
    pub fn checkpoint(&mut self) -> Result<u64, StoreError> {
        self.writable()?;
        let seq = self.manifest.tree.seq + 1;
        let written = self
            .tree
            .write_checkpoint(seq)
            .map_err(|e| self.tree_err(e))?;
        let next = Manifest {
            tree: written.root,
            ..self.manifest
        };
        let slot = (self.slot + 1) % SLOTS;
        if let Err(e) = manifest::store(self.tree.store_mut(), &self.file, slot, &next) {
            self.tree.checkpoint_failed(written);
            self.read_only = true;
            return Err(e.into());
        }
        self.tree.checkpoint_done(written);
        self.manifest = next;
        self.slot = slot;
        Ok(seq)
    }

    /// Page and memory counts.
    pub fn stats(&self) -> TreeStats {
        self.tree.stats()
    }
}

/// Makes a new file's directory entry durable.
fn sync_parent(file: &Path) -> std::io::Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "shard_tests.rs"]
mod tests;
