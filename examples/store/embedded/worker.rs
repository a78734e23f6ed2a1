//! The shard worker: one [`Shard`] on one pool worker, answering
//! [`Req`]s, with a group commit per worker round.
//!
//! **E1 (`SyncPolicy::Always`):** no reply leaves the worker while the
//! shard holds a write not yet synced. A reply made while the shard is
//! dirty (a write applied since the last `sync_wal`), reads included, is
//! held; [`Worker::after_round`] syncs the WAL once for every write of the
//! round and then releases them, or answers each with the sync's error.
//! So an acknowledged write is durable, and no reader sees a value a
//! crash could take back (the server's D1, `serve/host.rs`).
//! Under `Never` replies go out after apply and a round syncs the WAL
//! when [`NEVER_SYNC`] has passed since the last sync; under
//! `Interval(d)` when `d` has, and the worker's tick ([`tick_for`]) runs
//! the same check when no request comes, so a write is synced within
//! about `d` of its acknowledgement.
//!
//! Checkpoints bound the WAL and the dirty pages held in memory: after
//! `checkpoint_writes` writes, on request, and at shutdown.

use super::SyncPolicy;
use crate::error::StoreError;
use crate::shard::{Scan, Shard};
use crate::table::TableId;
use crate::wal::Op;
use shared_nothing::prelude::*;
use shared_nothing::worker::ReplyTo;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a `Never` store syncs its WAL while it takes writes.
pub const NEVER_SYNC: Duration = Duration::from_millis(200);

/// The tick interval that keeps an `Interval(every)` shard's syncs
/// within `every` of a write: a quarter of it, at least 1 ms.
pub fn tick_for(every: Duration) -> Duration {
    (every / 4).max(Duration::from_millis(1))
}

/// One operation of a batch, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedOp {
    Put {
        table: TableId,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: TableId,
        key: Vec<u8>,
    },
}

impl OwnedOp {
    pub fn key(&self) -> (TableId, &[u8]) {
        match self {
            OwnedOp::Put { table, key, .. } | OwnedOp::Delete { table, key } => (*table, key),
        }
    }

    fn as_op(&self) -> Op<'_> {
        match self {
            OwnedOp::Put { table, key, value } => Op::Put {
                table: *table,
                key,
                value,
            },
            OwnedOp::Delete { table, key } => Op::Delete { table: *table, key },
        }
    }
}

/// A request to a shard worker.
#[derive(Debug)]
pub enum Req {
    Get {
        table: TableId,
        key: Vec<u8>,
    },
    Exists {
        table: TableId,
        key: Vec<u8>,
    },
    /// One atomic batch (this shard's part).
    Write(Vec<OwnedOp>),
    /// A single delete, answered with whether the key was there.
    Delete {
        table: TableId,
        key: Vec<u8>,
    },
    /// Up to `limit` entries of `table` in `[start, end)`.
    Scan {
        table: TableId,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: usize,
    },
    /// Sync the WAL now (for `Never`), answered once durable.
    Sync,
    /// Sync, then checkpoint.
    Checkpoint,
}

/// A shard worker's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Resp {
    Value(Option<Vec<u8>>),
    Found(bool),
    Written,
    Entries(Scan),
    Done,
}

/// What a request gets back.
pub type Reply = Result<Resp, Arc<StoreError>>;

/// The worker: its shard until `init` moves it into the state (opened on
/// the caller's thread, so open errors come back typed).
#[derive(Debug)]
pub struct ShardWorker {
    pub shard: Mutex<Option<Shard>>,
    pub sync: SyncPolicy,
    pub checkpoint_writes: u64,
}

/// A shard worker's state.
#[derive(Debug)]
pub struct State {
    shard: Shard,
    sync: SyncPolicy,
    checkpoint_writes: u64,
    /// A write applied since the last successful WAL sync.
    dirty: bool,
    /// Writes since the last checkpoint.
    writes: u64,
    last_sync: Instant,
    /// E1: replies waiting for the round's group commit.
    held: Vec<(ReplyTo<Reply>, Reply)>,
}

impl State {
    fn run(&mut self, req: Req) -> Reply {
        let shard = &mut self.shard;
        match req {
            Req::Get { table, key } => shard.get(table, &key).map(Resp::Value),
            Req::Exists { table, key } => shard.exists(table, &key).map(Resp::Found),
            Req::Write(ops) => {
                let ops: Vec<Op<'_>> = ops.iter().map(OwnedOp::as_op).collect();
                let r = shard.write_batch(&ops).map(|_| Resp::Written);
                if r.is_ok() {
                    self.dirty = true;
                    self.writes += ops.len() as u64;
                }
                r
            }
            Req::Delete { table, key } => {
                let r = shard.delete(table, &key).map(Resp::Found);
                if r.is_ok() {
                    self.dirty = true;
                    self.writes += 1;
                }
                r
            }
            Req::Scan {
                table,
                start,
                end,
                limit,
            } => shard.scan(table, &start, limit).map(|mut scan| {
                if let Some(end) = end {
                    let past = scan.entries.partition_point(|(k, _)| *k < end);
                    if past < scan.entries.len() {
                        scan.entries.truncate(past);
                        scan.resume = None;
                    } else if scan.resume.as_ref().is_some_and(|r| *r >= end) {
                        scan.resume = None;
                    }
                }
                Resp::Entries(scan)
            }),
            Req::Sync => self.sync_now().map(|()| Resp::Done),
            Req::Checkpoint => self
                .sync_now()
                .and_then(|()| self.checkpoint())
                .map(|()| Resp::Done),
        }
        .map_err(Arc::new)
    }

    fn sync_now(&mut self) -> Result<(), StoreError> {
        self.shard.sync_wal()?;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.shard.checkpoint()?;
        self.writes = 0;
        Ok(())
    }

    /// The group commit (E1), then a checkpoint when one is due.
    fn commit(&mut self) {
        let due = match self.sync {
            SyncPolicy::Always => true,
            SyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            SyncPolicy::Never => self.last_sync.elapsed() >= NEVER_SYNC,
        };
        if self.dirty && due {
            match self.sync_now() {
                Ok(()) => {
                    for (to, reply) in self.held.drain(..) {
                        // A caller that stopped waiting needs no answer.
                        let _ = to.send(reply);
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for (to, _) in self.held.drain(..) {
                        let _ = to.send(Err(e.clone()));
                    }
                }
            }
        }
        if !self.dirty && self.writes >= self.checkpoint_writes {
            if let Err(e) = self.checkpoint() {
                tracing::error!(target: "store", "embedded checkpoint: {e}");
                // Try again after as many writes again, not every round.
                self.writes = 0;
            }
        }
    }
}

impl Worker for ShardWorker {
    type State = State;
    type Message = Req;
    type Reply = Reply;

    fn init(&mut self) -> Result<State> {
        let shard = self
            .shard
            .lock()
            .map_err(|_| Error::InvalidConfig("shard slot poisoned".into()))?
            .take()
            .ok_or_else(|| {
                Error::InvalidConfig("a shard worker cannot restart: its shard was moved".into())
            })?;
        Ok(State {
            shard,
            sync: self.sync,
            checkpoint_writes: self.checkpoint_writes,
            dirty: false,
            writes: 0,
            last_sync: Instant::now(),
            held: Vec::new(),
        })
    }

    fn handle_message(&mut self, st: &mut State, mut msg: Envelope<Req, Reply>) -> Result<()> {
        let to = msg.take_reply();
        let reply = st.run(msg.into_payload());
        if let Some(to) = to {
            if st.dirty && st.sync == SyncPolicy::Always {
                st.held.push((to, reply));
            } else {
                let _ = to.send(reply);
            }
        }
        Ok(())
    }

    fn after_round(&mut self, st: &mut State) -> Result<()> {
        st.commit();
        Ok(())
    }

    /// Runs only with a tick interval (`Interval`): syncs a shard that
    /// took writes and then no request.
    fn tick(&mut self, st: &mut State) -> Result<()> {
        st.commit();
        Ok(())
    }

    /// Makes everything durable and checkpoints, so the next open has no
    /// WAL to replay (a failure is logged: the WAL still holds the writes).
    fn shutdown(&mut self, mut st: State) -> Result<()> {
        if let Err(e) = st.sync_now() {
            tracing::error!(target: "store", "embedded close: WAL sync: {e}");
        } else if st.writes > 0
            && let Err(e) = st.checkpoint()
        {
            tracing::error!(target: "store", "embedded close: checkpoint: {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Partitioning, ShardLayout};
    use crate::page::PageSize;
    use crate::shard::ShardOptions;
    use crate::test_dir::TempDir;
    use crate::wal::WalConfig;

    fn state(dir: &TempDir, sync: SyncPolicy) -> (ShardWorker, State) {
        let opts = ShardOptions {
            page_size: PageSize::MIN,
            layout: ShardLayout {
                count: 1,
                index: 0,
                partitioning: Partitioning::Hash,
            },
            wal: WalConfig {
                segment_bytes: 1 << 20,
            },
            cache_bytes: 1 << 20,
        };
        let shard = Shard::open(&dir.0.join("shard-0.data"), opts).unwrap();
        let mut w = ShardWorker {
            shard: Mutex::new(Some(shard)),
            sync,
            checkpoint_writes: 1_000,
        };
        let st = w.init().unwrap();
        (w, st)
    }

    fn put(st: &mut State) {
        let op = OwnedOp::Put {
            table: TableId(0),
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        assert!(matches!(st.run(Req::Write(vec![op])), Ok(Resp::Written)));
    }

    #[test]
    fn an_interval_shard_is_synced_by_its_tick_once_the_interval_passed() {
        let dir = TempDir::new();
        let every = Duration::from_millis(40);
        let (mut w, mut st) = state(&dir, SyncPolicy::Interval(every));
        st.last_sync = Instant::now();
        put(&mut st);
        w.tick(&mut st).unwrap();
        assert!(st.dirty, "synced before the interval passed");
        std::thread::sleep(every + Duration::from_millis(5));
        w.tick(&mut st).unwrap();
        assert!(!st.dirty, "the tick did not sync a quiet shard");
        assert_eq!(tick_for(every), Duration::from_millis(10));
        assert_eq!(tick_for(Duration::from_millis(1)), Duration::from_millis(1));
    }

    #[test]
    fn always_syncs_every_round_and_never_waits_its_cadence() {
        let dir = TempDir::new();
        let (mut w, mut st) = state(&dir, SyncPolicy::Always);
        put(&mut st);
        w.after_round(&mut st).unwrap();
        assert!(!st.dirty);
        let dir = TempDir::new();
        let (mut w, mut st) = state(&dir, SyncPolicy::Never);
        st.last_sync = Instant::now();
        put(&mut st);
        w.after_round(&mut st).unwrap();
        assert!(st.dirty, "never synced at once");
    }
}
