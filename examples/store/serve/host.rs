//! The shard side of a worker: the shard as a `resp::Engine`, the
//! executor over it, and group commit.
//!
//! **D1 (`--sync always`):** no reply leaves a shard while it holds a
//! write that is not durable. A reply produced while the shard is dirty
//! (it has applied a write since its last `sync_wal`) is held; once per
//! worker round [`Host::commit`] syncs the WAL once for every write of
//! the round and releases the held replies (as errors if the sync
//! failed). So an acknowledged write is durable, and no reader ever sees
//! a value that a crash could take back. With `--sync never` replies go
//! out after apply and the WAL is synced on the clock (`NEVER_SYNC`).
//!
//! Checkpoints bound the WAL: after `checkpoint_writes` writes, or
//! `checkpoint_every` after the first write since the last one.

use super::{Done, Origin, SyncMode};
use crate::btree::MAX_VALUE;
use crate::error::StoreError;
use crate::resp::admin::ServerInfo;
use crate::resp::command::Request;
use crate::resp::engine::{Engine, EngineError, ScanBatch};
use crate::resp::exec::{Executor, Session};
use crate::resp::value::MAX_TRAILER;
use crate::shard::Shard;
use crate::table::TableId;
use crate::wal::Op;
use std::time::{Duration, Instant};

/// Longest string a client may store: the value and its trailer fit the
/// tree's largest value.
pub const MAX_STRING: usize = MAX_VALUE - MAX_TRAILER;

/// How often `--sync never` syncs the WAL.
const NEVER_SYNC: Duration = Duration::from_millis(200);

/// Keys per batch when FLUSHDB deletes and DBSIZE counts.
const SWEEP: usize = 1024;

/// One shard as the command layer's engine.
#[derive(Debug)]
pub struct ShardEngine {
    shard: Shard,
    /// A write applied since the last WAL sync.
    dirty: bool,
    /// Writes since the last checkpoint.
    writes: u64,
}

fn storage(e: StoreError) -> EngineError {
    match e {
        StoreError::KeyTooLong { len, max } => EngineError::KeyTooLong { len, max },
        other => EngineError::Storage(other.to_string()),
    }
}

impl ShardEngine {
    pub fn new(shard: Shard) -> Self {
        ShardEngine {
            shard,
            dirty: false,
            writes: 0,
        }
    }

    fn wrote(&mut self) {
        self.dirty = true;
        self.writes += 1;
    }
}

impl Engine for ShardEngine {
    fn get(&mut self, db: TableId, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.shard.get(db, key).map_err(storage)
    }

    fn exists(&mut self, db: TableId, key: &[u8]) -> Result<bool, EngineError> {
        self.shard.exists(db, key).map_err(storage)
    }

    fn put(&mut self, db: TableId, key: &[u8], value: Vec<u8>) -> Result<(), EngineError> {
        if value.len() > MAX_VALUE {
            return Err(EngineError::ValueTooLarge);
        }
        self.shard.put(db, key, &value).map_err(storage)?;
        self.wrote();
        Ok(())
    }

    fn delete(&mut self, db: TableId, key: &[u8]) -> Result<bool, EngineError> {
        let found = self.shard.delete(db, key).map_err(storage)?;
        if found {
            self.wrote();
        }
        Ok(found)
    }

    fn scan(&mut self, db: TableId, start: &[u8], limit: usize) -> Result<ScanBatch, EngineError> {
        let s = self.shard.scan(db, start, limit.max(1)).map_err(storage)?;
        Ok(ScanBatch {
            entries: s.entries,
            resume: s.resume,
        })
    }

    /// Deletes `db`'s keys a batch (one WAL record) at a time.
    fn clear(&mut self, db: TableId) -> Result<(), EngineError> {
        loop {
            let batch = self.shard.scan(db, b"", SWEEP).map_err(storage)?;
            if batch.entries.is_empty() {
                return Ok(());
            }
            let ops: Vec<Op<'_>> = batch
                .entries
                .iter()
                .map(|(key, _)| Op::Delete { table: db, key })
                .collect();
            self.shard.write_batch(&ops).map_err(storage)?;
            self.wrote();
            if batch.resume.is_none() {
                return Ok(());
            }
        }
    }

    /// Counts `db`'s keys with a scan (O(keys): no counters are kept).
    fn len(&mut self, db: TableId) -> Result<u64, EngineError> {
        let mut n = 0u64;
        let mut start = Vec::new();
        loop {
            let batch = self.shard.scan(db, &start, SWEEP).map_err(storage)?;
            n += batch.entries.len() as u64;
            match batch.resume {
                Some(k) => start = k,
                None => return Ok(n),
            }
        }
    }
}

/// When a shard checkpoints.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    pub writes: u64,
    pub every: Duration,
}

/// A worker's shard, its executor and the replies D1 holds.
#[derive(Debug)]
pub struct Host {
    index: usize,
    exec: Executor<ShardEngine>,
    sync: SyncMode,
    policy: CheckpointPolicy,
    held: Vec<Done>,
    last_checkpoint: Instant,
    last_sync: Instant,
}

impl Host {
    pub fn new(
        index: usize,
        shard: Shard,
        server: ServerInfo,
        sync: SyncMode,
        policy: CheckpointPolicy,
    ) -> Self {
        Host {
            index,
            exec: Executor::new(ShardEngine::new(shard), server),
            sync,
            policy,
            held: Vec::new(),
            last_checkpoint: Instant::now(),
            last_sync: Instant::now(),
        }
    }

    /// Runs one request; its reply now, or `None` if D1 holds it until
    /// [`Host::commit`].
    pub fn run(&mut self, origin: Origin, db: u32, req: Request, now_ms: i64) -> Option<Done> {
        let mut session = Session::in_db(db);
        let reply = self.exec.execute(&mut session, req, now_ms);
        let done = Done { origin, reply };
        if self.sync == SyncMode::Always && self.exec.engine_mut().dirty {
            self.held.push(done);
            return None;
        }
        Some(done)
    }

    /// Group commit (`--sync always`, once per round): syncs the WAL if
    /// anything was written and returns the replies it held.
    pub fn commit(&mut self) -> Vec<Done> {
        if self.sync == SyncMode::Always && self.exec.engine_mut().dirty {
            if let Err(e) = self.sync_wal() {
                let text = format!("ERR write not durable: {e}");
                for done in &mut self.held {
                    done.reply = crate::resp::reply::Reply::error(text.clone());
                }
            }
        }
        self.maybe_checkpoint();
        std::mem::take(&mut self.held)
    }

    /// The clock: `--sync never` syncs now and then; checkpoints by time.
    pub fn tick(&mut self) {
        if self.sync == SyncMode::Never
            && self.exec.engine_mut().dirty
            && self.last_sync.elapsed() >= NEVER_SYNC
        {
            if let Err(e) = self.sync_wal() {
                tracing::error!(target: "store", shard = self.index, "WAL sync: {e}");
            }
        }
        self.maybe_checkpoint();
    }

    fn sync_wal(&mut self) -> Result<(), StoreError> {
        self.last_sync = Instant::now();
        let engine = self.exec.engine_mut();
        engine.shard.sync_wal()?;
        engine.dirty = false;
        Ok(())
    }

    fn maybe_checkpoint(&mut self) {
        let writes = self.exec.engine_mut().writes;
        let due = writes >= self.policy.writes
            || (writes > 0 && self.last_checkpoint.elapsed() >= self.policy.every);
        if !due || (self.sync == SyncMode::Always && self.exec.engine_mut().dirty) {
            return;
        }
        self.last_checkpoint = Instant::now();
        let engine = self.exec.engine_mut();
        match engine.shard.checkpoint() {
            Ok(seq) => {
                engine.writes = 0;
                tracing::debug!(target: "store", shard = self.index, "checkpoint {seq}");
            }
            Err(e) => tracing::error!(target: "store", shard = self.index, "checkpoint: {e}"),
        }
    }
}
