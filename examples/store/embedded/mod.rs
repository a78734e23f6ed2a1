//! The embedded API (issue 12): [`Store::open`] a directory of shards and
//! call it from blocking code (or await its [`WriteTicket`]s).
//!
//! **Where the shards run.** On the crate's worker pool, one shard per
//! worker (`worker.rs`), as `store serve` runs them: a call routes its key
//! to the owning shard (hash partitioning, exactly the server's
//! [`crate::serve::shard_of`], so one directory can be served or embedded)
//! and sends the shard a request; the worker answers through the
//! request's reply slot. This was chosen over running one shard in the
//! caller's thread because it scales the way the server does: shards work
//! in parallel, and writes from many callers (threads each holding a
//! [`Client`], or one caller with many [`WriteTicket`]s in flight) share
//! one WAL sync per worker round, the group commit that makes durable
//! writes cheap. The price is a message round trip per call (about a
//! microsecond), which [`Client::get_many`] and batches amortise.
//!
//! **Durability.** With [`SyncPolicy::Always`] (the default) a write
//! returns only once its WAL record is synced, and no reply of any kind
//! leaves a shard while it holds an unsynced write (E1, `worker.rs`).
//! `Never` acknowledges after apply and syncs about every 200 ms of
//! writes, on [`Client::sync`], at checkpoints and at close.
//!
//! **Atomicity.** A [`WriteBatch`] is one WAL record per shard it touches:
//! atomic per shard, as the issue asks; parts on different shards commit
//! independently. Input that cannot be stored (a long key, a large value,
//! an empty batch, a part over the record bound) is refused before
//! anything is sent, so a refused batch changes nothing anywhere.
//!
//! **Scans** are ordered over the whole table: every shard scans from the
//! cursor and the caller merges; the cursor is the next key to start from,
//! so it stays valid across writes and reopenings.

mod error;
#[cfg(test)]
mod tests;
mod worker;

pub use error::{CloseError, Error, OpenError, ReadError, ScanError, WriteError};
pub use worker::OwnedOp;

use crate::btree::MAX_VALUE;
use crate::manifest::{Partitioning, ShardLayout};
use crate::page::PageSize;
use crate::pagestore::FileStore;
use crate::shard::{Scan, Shard, ShardOptions};
use crate::table::{MAX_KEY, TableId};
use crate::wal::{MAX_BODY, WalConfig};
use shared_nothing::prelude::*;
use shared_nothing::worker::{Pending, ReplyError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use worker::{Reply, Req, Resp, ShardWorker};

/// When a write is acknowledged: the server's `--sync` policy (one type,
/// `examples/common/sync_policy.rs`). `Always`: after the group commit
/// that syncs its WAL record. `Interval(d)`: after apply, the WAL synced at
/// most `d` after the write (a tick runs the sync when no request comes).
/// `Never`: after apply, the WAL synced about every 200 ms of writes.
pub use crate::sync_policy::SyncPolicy;

/// How [`Store::open`] opens a store. Build with [`StoreOptions::new`] and
/// struct update: `StoreOptions { shards: Some(2), ..StoreOptions::new(dir) }`.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Holds `shard-N.data` and `shard-N.wal/` per shard (created if absent).
    pub dir: PathBuf,
    /// Shards; must match the directory's (its manifests record it).
    /// `None`: the directory's, or for a new one, one per planned
    /// application worker of the pool.
    pub shards: Option<usize>,
    /// Page size; must match the directory's.
    pub page_size: PageSize,
    /// The page cache of the whole store, split evenly over the shards.
    pub cache_bytes: usize,
    pub sync: SyncPolicy,
    /// A shard checkpoints after this many written operations (and at
    /// close); bounds its WAL and the dirty pages it holds in memory.
    pub checkpoint_writes: u64,
    /// A WAL segment's size before it rolls.
    pub wal_segment_bytes: u64,
}

impl StoreOptions {
    /// Defaults: shards from the directory or the plan, 4 KiB pages, a
    /// 64 MiB cache, `Always`, a checkpoint per 100k writes, 8 MiB segments.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            dir: dir.into(),
            shards: None,
            page_size: PageSize::MIN,
            cache_bytes: 64 << 20,
            sync: SyncPolicy::Always,
            checkpoint_writes: 100_000,
            wal_segment_bytes: 8 << 20,
        }
    }
}

/// A set of writes applied together (atomic per shard).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<OwnedOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        WriteBatch {
            ops: Vec::with_capacity(n),
        }
    }

    /// Stores `value` under `key` in `table` (a later op on the same key
    /// wins).
    pub fn put(&mut self, table: TableId, key: &[u8], value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(OwnedOp::Put {
            table,
            key: key.to_vec(),
            value: value.into(),
        });
        self
    }

    /// Removes `key` from `table`.
    pub fn delete(&mut self, table: TableId, key: &[u8]) -> &mut Self {
        self.ops.push(OwnedOp::Delete {
            table,
            key: key.to_vec(),
        });
        self
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// One page of a scan: entries in key order, and where the next page
/// starts (`None`: the range is done).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Pass as the next call's `start`.
    pub cursor: Option<Vec<u8>>,
}

/// A write in flight: [`WriteTicket::wait`] returns once it is
/// acknowledged (durable under `Always`). Many tickets in flight from one
/// caller share group commits.
#[derive(Debug)]
#[must_use = "a write is acknowledged only through its ticket"]
pub struct WriteTicket {
    parts: Vec<(usize, Pending<Reply>)>,
}

impl WriteTicket {
    /// Blocks until every shard's part is acknowledged.
    ///
    /// # Errors
    /// The first failed part's error (other parts may stand).
    pub fn wait(self) -> Result<(), WriteError> {
        let mut first = None;
        for (shard, pending) in self.parts {
            if let Err(e) = written(shard, pending.wait()) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn written(shard: usize, r: Result<Reply, ReplyError>) -> Result<(), WriteError> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(WriteError::Storage { shard, source }),
        Err(e) => Err(WriteError::Closed {
            shard,
            reason: e.to_string(),
        }),
    }
}

fn read(shard: usize, r: Result<Reply, ReplyError>) -> Result<Resp, ReadError> {
    match r {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(source)) => Err(ReadError::Storage { shard, source }),
        Err(e) => Err(ReadError::Closed {
            shard,
            reason: e.to_string(),
        }),
    }
}

fn scanned(shard: usize, r: Result<Reply, ReplyError>) -> Result<Scan, ScanError> {
    match r {
        Ok(Ok(Resp::Entries(scan))) => Ok(scan),
        Ok(Ok(_)) => Ok(Scan::default()),
        Ok(Err(source)) => Err(ScanError::Storage { shard, source }),
        Err(e) => Err(ScanError::Closed {
            shard,
            reason: e.to_string(),
        }),
    }
}

fn check_key(key: &[u8]) -> Result<(), (usize, usize)> {
    if key.len() > MAX_KEY {
        Err((key.len(), MAX_KEY))
    } else {
        Ok(())
    }
}

/// A handle that sends to the store's shards from one thread: clone one
/// per thread ([`Store::client`] or `Clone`); each has its own rings.
#[derive(Debug, Clone)]
pub struct Client {
    tx: PoolSender<Req, Reply>,
    shards: usize,
}

impl Client {
    /// The shard that owns `key` in `table` (the server's routing).
    pub fn shard_of(&self, table: TableId, key: &[u8]) -> usize {
        crate::serve::shard_of(table.0, key, self.shards)
    }

    /// Shards in the store.
    pub fn shards(&self) -> usize {
        self.shards
    }

    fn ask(&mut self, shard: usize, req: Req) -> Result<Pending<Reply>, (usize, String)> {
        self.tx
            .request(shard, req)
            .map_err(|e| (shard, e.to_string()))
    }

    fn point(&mut self, table: TableId, key: &[u8], get: bool) -> Result<Resp, ReadError> {
        check_key(key).map_err(|(len, max)| ReadError::KeyTooLong { len, max })?;
        let shard = self.shard_of(table, key);
        let key = key.to_vec();
        let req = if get {
            Req::Get { table, key }
        } else {
            Req::Exists { table, key }
        };
        let pending = self
            .ask(shard, req)
            .map_err(|(shard, reason)| ReadError::Closed { shard, reason })?;
        read(shard, pending.wait())
    }

    /// The value of `key` in `table`.
    ///
    /// # Errors
    /// [`ReadError`].
    pub fn get(&mut self, table: TableId, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        match self.point(table, key, true)? {
            Resp::Value(v) => Ok(v),
            _ => Ok(None),
        }
    }

    /// The values of `keys` in `table`, in order: every request is sent
    /// before the first reply is awaited, so shards answer in parallel and
    /// the round trips overlap.
    ///
    /// # Errors
    /// The first failed read.
    pub fn get_many<K: AsRef<[u8]>>(
        &mut self,
        table: TableId,
        keys: &[K],
    ) -> Result<Vec<Option<Vec<u8>>>, ReadError> {
        let mut pending = Vec::with_capacity(keys.len());
        for key in keys {
            let key = key.as_ref();
            check_key(key).map_err(|(len, max)| ReadError::KeyTooLong { len, max })?;
            let shard = self.shard_of(table, key);
            let req = Req::Get {
                table,
                key: key.to_vec(),
            };
            let p = self
                .ask(shard, req)
                .map_err(|(shard, reason)| ReadError::Closed { shard, reason })?;
            pending.push((shard, p));
        }
        pending
            .into_iter()
            .map(|(shard, p)| match read(shard, p.wait())? {
                Resp::Value(v) => Ok(v),
                _ => Ok(None),
            })
            .collect()
    }

    /// Whether `key` is in `table` (its value is not copied).
    ///
    /// # Errors
    /// [`ReadError`].
    pub fn exists(&mut self, table: TableId, key: &[u8]) -> Result<bool, ReadError> {
        Ok(matches!(self.point(table, key, false)?, Resp::Found(true)))
    }

    /// Stores `value` under `key` in `table`; returns once acknowledged.
    ///
    /// # Errors
    /// [`WriteError`].
    pub fn put(
        &mut self,
        table: TableId,
        key: &[u8],
        value: impl Into<Vec<u8>>,
    ) -> Result<(), WriteError> {
        let mut batch = WriteBatch::with_capacity(1);
        batch.put(table, key, value);
        self.write(batch)
    }

    /// Removes `key` from `table`; returns whether it was there, once
    /// acknowledged.
    ///
    /// # Errors
    /// [`WriteError`].
    pub fn delete(&mut self, table: TableId, key: &[u8]) -> Result<bool, WriteError> {
        check_key(key).map_err(|(len, max)| WriteError::KeyTooLong { len, max })?;
        let shard = self.shard_of(table, key);
        let pending = self
            .ask(
                shard,
                Req::Delete {
                    table,
                    key: key.to_vec(),
                },
            )
            .map_err(|(shard, reason)| WriteError::Closed { shard, reason })?;
        match pending.wait() {
            Ok(Ok(Resp::Found(found))) => Ok(found),
            other => written(shard, other).map(|()| false),
        }
    }

    /// Applies `batch` (atomic per shard) and returns once acknowledged.
    ///
    /// # Errors
    /// [`WriteError`]; a refused input changes nothing.
    pub fn write(&mut self, batch: WriteBatch) -> Result<(), WriteError> {
        self.submit(batch)?.wait()
    }

    /// Sends `batch` and returns without waiting: the [`WriteTicket`]
    /// says when it is acknowledged. Writes in flight together share group
    /// commits; a later read through this client sees them.
    ///
    /// # Errors
    /// The input is refused (nothing is sent), or a worker is gone.
    pub fn submit(&mut self, batch: WriteBatch) -> Result<WriteTicket, WriteError> {
        if batch.ops.is_empty() {
            return Err(WriteError::EmptyBatch);
        }
        let mut bytes = vec![0usize; self.shards];
        let mut shard_of = Vec::with_capacity(batch.ops.len());
        for op in &batch.ops {
            let (table, key) = op.key();
            check_key(key).map_err(|(len, max)| WriteError::KeyTooLong { len, max })?;
            let mut len = 7 + key.len();
            if let OwnedOp::Put { value, .. } = op {
                if value.len() > MAX_VALUE {
                    return Err(WriteError::ValueTooLarge {
                        len: value.len(),
                        max: MAX_VALUE,
                    });
                }
                len += 4 + value.len();
            }
            let shard = self.shard_of(table, key);
            bytes[shard] += len;
            shard_of.push(shard);
        }
        // The WAL record's header and body bound (`wal/record.rs`).
        let max = MAX_BODY - 16;
        if let Some((shard, &b)) = bytes.iter().enumerate().find(|&(_, &b)| b > max) {
            return Err(WriteError::BatchTooLarge {
                shard,
                bytes: b,
                max,
            });
        }
        let parts: Vec<(usize, Vec<OwnedOp>)> = if self.shards == 1 {
            vec![(0, batch.ops)]
        } else {
            let mut per: Vec<Vec<OwnedOp>> = (0..self.shards).map(|_| Vec::new()).collect();
            for (op, shard) in batch.ops.into_iter().zip(shard_of) {
                per[shard].push(op);
            }
            per.into_iter()
                .enumerate()
                .filter(|(_, ops)| !ops.is_empty())
                .collect()
        };
        let mut ticket = WriteTicket {
            parts: Vec::with_capacity(parts.len()),
        };
        for (shard, ops) in parts {
            match self.ask(shard, Req::Write(ops)) {
                Ok(p) => ticket.parts.push((shard, p)),
                Err((shard, reason)) => {
                    // Parts already sent stand (atomic per shard); report
                    // the missing one after they are acknowledged.
                    let _ = ticket.wait();
                    return Err(WriteError::Closed { shard, reason });
                }
            }
        }
        Ok(ticket)
    }

    /// Up to `limit` entries of `table` from `start` (inclusive) to `end`
    /// (exclusive; `None`: the table's end), in key order over all shards.
    /// Continue with the returned cursor as `start`.
    ///
    /// # Errors
    /// [`ScanError`].
    pub fn scan(
        &mut self,
        table: TableId,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage, ScanError> {
        if limit == 0 {
            return Err(ScanError::ZeroLimit);
        }
        for k in std::iter::once(start).chain(end) {
            check_key(k).map_err(|(len, max)| ScanError::KeyTooLong { len, max })?;
        }
        let mut pending = Vec::with_capacity(self.shards);
        for shard in 0..self.shards {
            let req = Req::Scan {
                table,
                start: start.to_vec(),
                end: end.map(<[u8]>::to_vec),
                limit,
            };
            let p = self
                .ask(shard, req)
                .map_err(|(shard, reason)| ScanError::Closed { shard, reason })?;
            pending.push((shard, p));
        }
        let mut scans = Vec::with_capacity(self.shards);
        let mut first_err = None;
        for (shard, p) in pending {
            match scanned(shard, p.wait()) {
                Ok(s) => scans.push(s),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(merge(scans, limit))
    }

    /// Makes every write so far durable (for `Never`; a no-op wait under
    /// `Always`).
    ///
    /// # Errors
    /// A shard's sync failed.
    pub fn sync(&mut self) -> Result<(), WriteError> {
        self.all(|| Req::Sync)
    }

    /// Checkpoints every shard: pages and manifest synced, WAL truncated.
    ///
    /// # Errors
    /// A shard's checkpoint failed.
    pub fn checkpoint(&mut self) -> Result<(), WriteError> {
        self.all(|| Req::Checkpoint)
    }

    fn all(&mut self, req: impl Fn() -> Req) -> Result<(), WriteError> {
        let mut ticket = WriteTicket {
            parts: Vec::with_capacity(self.shards),
        };
        for shard in 0..self.shards {
            match self.ask(shard, req()) {
                Ok(p) => ticket.parts.push((shard, p)),
                Err((shard, reason)) => {
                    let _ = ticket.wait();
                    return Err(WriteError::Closed { shard, reason });
                }
            }
        }
        ticket.wait()
    }
}

/// The smallest key after `key` that a key may be (keys are at most
/// [`MAX_KEY`] bytes); `None` if there is none.
fn successor(key: &[u8]) -> Option<Vec<u8>> {
    if key.len() < MAX_KEY {
        let mut k = Vec::with_capacity(key.len() + 1);
        k.extend_from_slice(key);
        k.push(0);
        return Some(k);
    }
    let mut k = key.to_vec();
    while k.last() == Some(&0xff) {
        k.pop();
    }
    let last = k.last_mut()?;
    *last += 1;
    Some(k)
}

/// Merges the shards' scans from one start: the `limit` smallest keys,
/// and a cursor past the last one if any shard may hold more (every key
/// below it has been returned: the merge takes keys in order).
fn merge(mut scans: Vec<Scan>, limit: usize) -> ScanPage {
    if scans.len() == 1 {
        let Scan { entries, resume } = scans.pop().unwrap_or_default();
        return ScanPage {
            entries,
            cursor: resume,
        };
    }
    let more = scans.iter().any(|s| s.resume.is_some());
    let min_resume = scans.iter().filter_map(|s| s.resume.clone()).min();
    let mut lists: Vec<Vec<(Vec<u8>, Vec<u8>)>> = scans.into_iter().map(|s| s.entries).collect();
    let total: usize = lists.iter().map(Vec::len).sum();
    let mut pos = vec![0usize; lists.len()];
    let mut entries = Vec::with_capacity(total.min(limit));
    while entries.len() < limit {
        let mut best: Option<usize> = None;
        for i in 0..lists.len() {
            if pos[i] < lists[i].len() {
                match best {
                    Some(b) if lists[b][pos[b]].0 <= lists[i][pos[i]].0 => {}
                    _ => best = Some(i),
                }
            }
        }
        let Some(b) = best else { break };
        entries.push(std::mem::take(&mut lists[b][pos[b]]));
        pos[b] += 1;
    }
    let left = lists.iter().zip(&pos).any(|(l, &p)| p < l.len());
    let cursor = match entries.last() {
        Some((last, _)) if left || more => successor(last),
        Some(_) => None,
        None => min_resume,
    };
    ScanPage { entries, cursor }
}

/// An open store: its shards on pool workers, and a [`Client`] of its own
/// (`Deref`), so `store.get(..)` works from the opening thread.
#[derive(Debug)]
pub struct Store {
    client: Client,
    /// Stopped before the pool goes (field order).
    group: WorkerGroup<ShardWorker>,
    _pool: WorkerPool,
    dir: PathBuf,
}

impl std::ops::Deref for Store {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Store {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The shard count the store in `dir` records (shard 0's newest manifest),
/// `None` for a new directory.
fn recorded_shards(dir: &Path, page_size: PageSize) -> Result<Option<usize>, OpenError> {
    let file = dir.join("shard-0.data");
    match std::fs::metadata(&file) {
        Ok(m) if m.len() > 0 => {}
        _ => return Ok(None),
    }
    let shard_err = |source| OpenError::Shard { shard: 0, source };
    let (store, _) = FileStore::open(&file, page_size).map_err(|source| {
        shard_err(crate::error::StoreError::Open {
            file: file.clone(),
            source,
        })
    })?;
    let (manifest, _) = crate::manifest::load(&store, &file).map_err(|e| shard_err(e.into()))?;
    Ok(Some(manifest.layout.count as usize))
}

impl Store {
    /// Opens (or creates) the store in `opts.dir`: every shard's data file
    /// and WAL, replaying what the WAL holds past each checkpoint, then one
    /// pool worker per shard.
    ///
    /// # Errors
    /// [`OpenError`]: the directory, another shard count or page size
    /// than the directory's, corruption (named), or the pool.
    pub fn open(opts: StoreOptions) -> Result<Store, OpenError> {
        std::fs::create_dir_all(&opts.dir).map_err(|source| OpenError::Dir {
            dir: opts.dir.clone(),
            source,
        })?;
        let recorded = recorded_shards(&opts.dir, opts.page_size)?;
        let pool = match opts.sync {
            // The tick that syncs a quiet shard within the interval.
            SyncPolicy::Interval(every) => WorkerPool::builder()
                .worker_config(WorkerConfig::new().with_tick_interval(worker::tick_for(every)))
                .build_pool()?,
            SyncPolicy::Always | SyncPolicy::Never => WorkerPool::new()?,
        };
        let shards = match (opts.shards, recorded) {
            (Some(0), _) => return Err(OpenError::NoShards),
            (Some(requested), Some(recorded)) if requested != recorded => {
                return Err(OpenError::ShardCount {
                    dir: opts.dir.clone(),
                    recorded,
                    requested,
                });
            }
            (Some(n), _) => n,
            (None, Some(n)) => n,
            (None, None) => pool.app_plan().app_workers.len().max(1),
        };
        let count = u32::try_from(shards).map_err(|_| OpenError::ShardCount {
            dir: opts.dir.clone(),
            recorded: recorded.unwrap_or(0),
            requested: shards,
        })?;
        // Opened here, on the caller's thread, so that every open error
        // comes back typed; each shard then moves to its worker.
        let mut opened = Vec::with_capacity(shards);
        for index in 0..shards {
            let file = opts.dir.join(format!("shard-{index}.data"));
            let shard_opts = ShardOptions {
                page_size: opts.page_size,
                layout: ShardLayout {
                    count,
                    index: index as u32,
                    partitioning: Partitioning::Hash,
                },
                wal: WalConfig {
                    segment_bytes: opts.wal_segment_bytes,
                },
                cache_bytes: opts.cache_bytes / shards,
            };
            let shard = Shard::open(&file, shard_opts).map_err(|source| OpenError::Shard {
                shard: index,
                source,
            })?;
            opened.push(Mutex::new(Some(shard)));
        }
        let mut opened = opened.into_iter();
        let (sync, checkpoint_writes) = (opts.sync, opts.checkpoint_writes);
        let group = pool.spawn_workers(shards, move |_index| ShardWorker {
            shard: opened.next().unwrap_or_else(|| Mutex::new(None)),
            sync,
            checkpoint_writes,
        })?;
        let client = Client {
            tx: group.sender(),
            shards,
        };
        Ok(Store {
            client,
            group,
            _pool: pool,
            dir: opts.dir,
        })
    }

    /// A new handle for another thread.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checkpoints every shard, then stops the workers. (Dropping the
    /// store does the same, logging what fails.)
    ///
    /// # Errors
    /// [`CloseError`]: a shard's final checkpoint (its WAL keeps the
    /// writes for the next open), or a worker that did not stop cleanly.
    pub fn close(mut self) -> Result<(), CloseError> {
        let checkpoint = self.client.checkpoint();
        self.group.stop_all()?;
        Ok(checkpoint?)
    }
}
