//! One shard's engine: a data file holding a B+tree of table-prefixed
//! keys, checkpointed through the manifest, and a write-ahead log.
//!
//! **Writes.** Every put, delete and batch is encoded as one WAL record
//! (one LSN), applied to the in-memory tree (plus overflow chains, written
//! at once to fresh pages), then queued in the WAL; [`Shard::sync_wal`]
//! is the group commit that makes every queued write durable, and a write
//! is acknowledged only after it. **Checkpoints** (`manifest.rs`): write
//! pages copy-on-write, fsync, write the manifest with the last applied
//! LSN into the older slot, fsync, then remove the WAL segments below it.
//! **Open:** load the newest valid manifest, then replay the WAL records
//! past its LSN into the tree (`wal::recover` cuts a torn tail first).
//!
//! **S1:** the tree holds exactly the checkpoint plus the WAL records
//! after its LSN, in order: a batch reaches the WAL queue only once it is
//! wholly applied, and a batch whose application failed part way leaves
//! the shard read-only until reopened (so does any tree error in a write:
//! its record is never queued, so a reopen has none of it; but not a
//! failed overflow-chain write of the batch's first op, which leaves the
//! tree unchanged, so a full disk does not fence the shard). Replay is
//! idempotent: records at or below the
//! manifest's LSN are skipped, and LSNs go on past both.

use crate::btree::{MAX_VALUE, ScanBatch, Tree, TreeError, TreeRoot, TreeStats};
use crate::error::StoreError;
use crate::manifest::{self, Manifest, ManifestError, ShardLayout};
use crate::page::PageSize;
use crate::pagestore::{FileStore, PageStore, SLOTS, first_data_page};
use crate::table::{MAX_KEY, TableId};
use crate::wal::{FsWalDir, Lsn, Op, Recovery, Wal, WalConfig, WalDir};
use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};

/// How a shard's data file is opened; a new file records these, an
/// existing one must match them.
#[derive(Clone, Copy, Debug)]
pub struct ShardOptions {
    pub page_size: PageSize,
    pub layout: ShardLayout,
    /// The WAL's settings (not recorded: they may change between opens).
    pub wal: WalConfig,
    /// The bound of the shard's page cache in bytes (not recorded; fewer
    /// than a page: no cache).
    pub cache_bytes: usize,
}

/// One batch of a table scan: user keys and values in order, and the key
/// to resume from when more remain.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    pub resume: Option<Vec<u8>>,
}

/// The WAL directory of the data file `file`: its name with the
/// extension `wal` (`shard-0.data` has `shard-0.wal/`).
pub fn wal_dir(file: &Path) -> PathBuf {
    file.with_extension("wal")
}

/// A shard's data file and WAL, open.
#[derive(Debug)]
pub struct Shard<S = FileStore, D: WalDir = FsWalDir> {
    file: PathBuf,
    tree: Tree<S>,
    wal: Wal<D>,
    /// What opening the WAL found.
    recovery: Recovery,
    /// The newest durable manifest and its slot.
    manifest: Manifest,
    slot: usize,
    /// Why the shard takes no more writes until reopened (reads go on):
    /// a manifest write failed (it may or may not be on disk, and a retry
    /// would rewrite the pages it refers to), or a batch failed part way
    /// into the tree (S1).
    read_only: Option<&'static str>,
    /// The table-prefixed key of a point read, reused so a read allocates
    /// nothing but the value it returns.
    key_buf: RefCell<Vec<u8>>,
}

impl Shard<FileStore> {
    /// Opens the data file at `file`, creating it (with an empty first
    /// checkpoint) if it is absent or empty, and its WAL in [`wal_dir`],
    /// replaying it.
    ///
    /// # Errors
    /// The file cannot be opened, has no valid manifest, was made with
    /// another page size or layout, or its free list is corrupt; the WAL
    /// cannot be read or repaired, or a replayed batch fails.
    pub fn open(file: &Path, opts: ShardOptions) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            file: file.to_path_buf(),
            source,
        };
        let (store, new) = FileStore::open(file, opts.page_size).map_err(open_err)?;
        let dir = wal_dir(file);
        let wal =
            FsWalDir::create(&dir).map_err(|source| StoreError::Open { file: dir, source })?;
        let shard = Self::open_with(store, new, file, wal, opts)?;
        if new {
            sync_parent(file).map_err(open_err)?;
        }
        Ok(shard)
    }
}

impl<S: PageStore, D: WalDir> Shard<S, D> {
    /// Opens the shard in `store` (the data file `file`; `new` if empty)
    /// with its WAL in `wal`.
    ///
    /// # Errors
    /// As [`Shard::open`].
    pub fn open_with(
        mut store: S,
        new: bool,
        file: &Path,
        wal: D,
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
            manifest::create(&mut store, file, &m)?;
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
        let tree_err = |source| StoreError::Tree {
            file: file.to_path_buf(),
            source,
        };
        let mut tree =
            Tree::open(store, opts.page_size, manifest.tree, opts.cache_bytes).map_err(tree_err)?;
        let (wal, recovery) = Wal::open(wal, opts.wal, Lsn(manifest.lsn), |_, ops| {
            apply(&mut tree, ops)
                .map(|_| ())
                .map_err(|(_, e)| tree_err(e))
        })?;
        Ok(Shard {
            file: file.to_path_buf(),
            tree,
            wal,
            recovery,
            manifest,
            slot,
            read_only: None,
            key_buf: RefCell::new(Vec::with_capacity(MAX_KEY + 4)),
        })
    }

    fn writable(&self) -> Result<(), StoreError> {
        if let Some(after) = self.read_only {
            return Err(StoreError::ReadOnly {
                file: self.file.clone(),
                after,
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

    /// Runs `f` on the tree key of `key` in `table`, built in the reused
    /// key buffer (or a fresh one if that is in use).
    fn with_tree_key<T>(
        &self,
        table: TableId,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T, TreeError>,
    ) -> Result<T, StoreError> {
        if key.len() > MAX_KEY {
            return Err(StoreError::KeyTooLong {
                len: key.len(),
                max: MAX_KEY,
            });
        }
        let result = match self.key_buf.try_borrow_mut() {
            Ok(mut buf) => {
                table.key_into(key, &mut buf);
                f(&buf)
            }
            Err(_) => f(&table.key(key)),
        };
        result.map_err(|e| self.tree_err(e))
    }

    /// The value of `key` in `table`. Allocates only the value returned.
    ///
    /// # Errors
    /// The key is too long, or a page failed its checks (named).
    pub fn get(&self, table: TableId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_tree_key(table, key, |k| self.tree.get(k))
    }

    /// Whether `key` is in `table` (without copying its value).
    ///
    /// # Errors
    /// As [`Shard::get`].
    pub fn exists(&self, table: TableId, key: &[u8]) -> Result<bool, StoreError> {
        self.with_tree_key(table, key, |k| self.tree.exists(k))
    }

    /// Stores `value` under `key` in `table` (a batch of one); durable
    /// after the next [`Shard::sync_wal`]. Returns its LSN.
    ///
    /// # Errors
    /// As [`Shard::write_batch`].
    pub fn put(&mut self, table: TableId, key: &[u8], value: &[u8]) -> Result<Lsn, StoreError> {
        self.write(&[Op::Put { table, key, value }])
            .map(|(lsn, _)| lsn)
    }

    /// Removes `key` from `table` (a batch of one); returns whether it was
    /// there. Durable after the next [`Shard::sync_wal`].
    ///
    /// # Errors
    /// As [`Shard::write_batch`].
    pub fn delete(&mut self, table: TableId, key: &[u8]) -> Result<bool, StoreError> {
        self.write(&[Op::Delete { table, key }])
            .map(|(_, found)| found == 1)
    }

    /// Applies `ops` as one atomic batch, one WAL record: after a crash
    /// either all of it is there or none. Durable after the next
    /// [`Shard::sync_wal`]. Returns its LSN.
    ///
    /// # Errors
    /// A key or value over its bound, or an empty batch (nothing changes);
    /// the WAL refuses appends after an unretried I/O failure; a page failed
    /// its checks or its write (then the shard turns read-only, S1).
    pub fn write_batch(&mut self, ops: &[Op<'_>]) -> Result<Lsn, StoreError> {
        self.write(ops).map(|(lsn, _)| lsn)
    }

    /// [`Shard::write_batch`], also returning how many deletes found their
    /// key.
    fn write(&mut self, ops: &[Op<'_>]) -> Result<(Lsn, usize), StoreError> {
        self.writable()?;
        for op in ops {
            let (Op::Put { key, .. } | Op::Delete { key, .. }) = op;
            if key.len() > MAX_KEY {
                return Err(StoreError::KeyTooLong {
                    len: key.len(),
                    max: MAX_KEY,
                });
            }
            if let Op::Put { value, .. } = op
                && value.len() > MAX_VALUE
            {
                return Err(self.tree_err(TreeError::ValueTooLarge {
                    len: value.len(),
                    max: MAX_VALUE,
                }));
            }
        }
        let record = self.wal.encode(ops)?;
        match apply(&mut self.tree, ops) {
            Ok(found) => Ok((self.wal.push(record)?, found)),
            Err((at, e)) => {
                // The tree may hold part of the batch: S1. Except when the
                // first op failed writing its overflow chain (a full disk):
                // the only page writes of an apply, made before the leaf
                // is touched and freed on failure, so nothing changed.
                if at > 0 || !matches!(e, TreeError::Write { .. }) {
                    self.read_only = Some("batch in the tree");
                }
                Err(self.tree_err(e))
            }
        }
    }

    /// Group commit: makes every write so far durable in the WAL (one
    /// write and one fdatasync for all of them) and returns the durable
    /// LSN; acknowledge the writes up to it.
    ///
    /// # Errors
    /// A WAL write or sync failed ([`crate::wal::WalError`], naming the
    /// file and offset): nothing since the last successful call is
    /// acknowledged, writes are refused, and the next call retries.
    pub fn sync_wal(&mut self) -> Result<Lsn, StoreError> {
        Ok(self.wal.sync()?)
    }

    /// Deferred group commit (`--wal-io storage`): everything queued in
    /// the WAL as one [`crate::wal::WalIo`] to perform elsewhere, then
    /// report with [`Shard::complete_wal_io`]; `None` if nothing is queued
    /// or one is out (W3).
    pub fn take_wal_io(&mut self) -> Option<crate::wal::WalIo> {
        self.wal.take_io()
    }

    /// The [`crate::wal::WalIo`] from [`Shard::take_wal_io`] was performed
    /// with `result`: on success returns the durable LSN; on failure the
    /// WAL keeps it to perform again first, as [`Shard::sync_wal`] does.
    ///
    /// # Errors
    /// `result`'s error.
    pub fn complete_wal_io(
        &mut self,
        io: crate::wal::WalIo,
        result: Result<(), crate::wal::WalError>,
    ) -> Result<Lsn, StoreError> {
        Ok(self.wal.complete(io, result)?)
    }

    /// The LSN of the last write applied.
    pub fn last_lsn(&self) -> Lsn {
        self.wal.last_lsn()
    }

    /// The first LSNs of the WAL's segment files, oldest first.
    pub fn wal_segments(&self) -> Vec<Lsn> {
        self.wal.segment_firsts()
    }

    /// What opening the WAL found: records, replayed batches, repairs.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The WAL's segment count and its durable LSN.
    pub fn wal_state(&self) -> (usize, Lsn) {
        (self.wal.segment_firsts().len(), self.wal.durable_lsn())
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

    /// Makes every change so far durable in the data file: pages, fsync,
    /// manifest (with the last applied LSN) into the older slot, fsync;
    /// then removes the WAL segments the checkpoint covers. Returns the
    /// new checkpoint's sequence number.
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
        let lsn = self.wal.last_lsn();
        let next = Manifest {
            tree: written.root,
            lsn: lsn.0,
            ..self.manifest
        };
        let slot = (self.slot + 1) % SLOTS;
        if let Err(e) = manifest::store(self.tree.store_mut(), &self.file, slot, &next) {
            self.tree.checkpoint_failed(written);
            self.read_only = Some("manifest write");
            return Err(e.into());
        }
        self.tree.checkpoint_done(written);
        self.manifest = next;
        self.slot = slot;
        // The checkpoint stands either way: segments left now (a crash
        // here leaves them too) only hold records replay skips.
        if let Err(e) = self.wal.truncate_before(lsn.next()) {
            tracing::warn!(target: "store", "checkpoint {seq}: WAL truncation deferred: {e}");
        }
        Ok(seq)
    }

    /// Page and memory counts.
    pub fn stats(&self) -> TreeStats {
        self.tree.stats()
    }
}

/// Applies one batch to the tree, in order. Returns how many deletes found
/// their key, or the index of the op that failed and why.
fn apply<S: PageStore>(tree: &mut Tree<S>, ops: &[Op<'_>]) -> Result<usize, (usize, TreeError)> {
    let mut found = 0;
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Put { table, key, value } => {
                tree.put(&table.key(key), value).map_err(|e| (i, e))?
            }
            Op::Delete { table, key } => {
                found += usize::from(tree.delete(&table.key(key)).map_err(|e| (i, e))?);
            }
        }
    }
    Ok(found)
}

/// Makes a new file's directory entry durable.
fn sync_parent(file: &Path) -> std::io::Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "alloc_count.rs"]
mod alloc_count;
#[cfg(test)]
#[path = "shard_tests.rs"]
mod tests;
#[cfg(test)]
#[path = "shard_wal_tests.rs"]
mod wal_tests;
