//! The shard side of a worker: the shard as a `resp::Engine`, the
//! executor over it, and group commit.
//!
//! **D1 (`--sync always`):** no reply that depends on a write not yet
//! durable leaves the shard. A reply is held if its command wrote, or if
//! it read a key (or a range, or a table's count) that a write since the
//! last successful `sync_wal` changed ([`Unsynced`]); once per worker
//! round [`Host::commit`] syncs the WAL once for every write of the round
//! and releases the held replies (as errors if the sync failed). So an
//! acknowledged write is durable, and no reader ever sees a value that a
//! crash could take back; a reply that depends on nothing unsynced goes
//! out at once. While a failed sync is being retried (a full disk: W3
//! performs it again whole on every commit), writes are refused at once
//! with the WAL's error, reads of what the failed writes touched wait and
//! fail with it, and every other read answers; a failed write's `-ERR`
//! means "not known to be durable": if a retry succeeds later (space
//! freed), it is. With `--sync interval:MS` and
//! `--sync never` replies go out after apply and the WAL is synced once
//! MS (`never`: [`NEVER_SYNC`]) have passed since the last sync, checked
//! after every round and on every tick, so a write is synced at most MS
//! plus one tick after it.
//!
//! Checkpoints bound the WAL: after `checkpoint_writes` writes, or
//! `checkpoint_every` after the first write since the last one, or once
//! writes have paused for `checkpoint_quiet` (a burst of writes followed
//! by reads: the written nodes then go to their pages, whose lookups stay
//! within a page instead of chasing the in-memory nodes' allocations).

use super::SyncMode;
use super::wal_disk::WalDisk;
use crate::btree::MAX_VALUE;
use crate::error::StoreError;
use crate::resp::admin::ServerInfo;
use crate::resp::command::Request;
use crate::resp::engine::{Engine, EngineError, ScanBatch};
use crate::resp::exec::{Executor, Session};
use crate::resp::reply::Reply;
use crate::resp::value::MAX_TRAILER;
use crate::shard::Shard;
use crate::table::TableId;
use crate::wal::Op;
use shared_nothing::io::StorageCompletion;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Longest string a client may store: the value and its trailer fit the
/// tree's largest value.
pub const MAX_STRING: usize = MAX_VALUE - MAX_TRAILER;

/// How often `--sync never` syncs the WAL.
const NEVER_SYNC: Duration = Duration::from_millis(200);

/// Keys per batch when FLUSHDB deletes and DBSIZE counts.
const SWEEP: usize = 1024;

/// One shard as the command layer's engine.
///
/// **K1:** `counts[db]`, once present, is the number of keys of `db` in
/// the tree: a table is counted with one scan the first time DBSIZE (or
/// INFO) asks, and from then on every put that adds a key, delete that
/// finds one and clear keeps it exact, so DBSIZE is O(1) after the first.
#[derive(Debug)]
pub struct ShardEngine {
    /// The shard's index (in log lines).
    index: usize,
    shard: Shard,
    counts: HashMap<TableId, u64>,
    /// The LSN of the last write applied that changed something, and the
    /// WAL's durable LSN as last reported: the shard is dirty while the
    /// first is past the second.
    last_write: u64,
    durable: u64,
    /// Writes since the last checkpoint.
    writes: u64,
    errors: ErrorLog,
    /// D1 (kept only under `--sync always`): what changed past `durable`.
    track: bool,
    unsynced: Unsynced,
    /// Since [`ShardEngine::begin`]: the LSN the command's reply depends
    /// on (its own writes', and those of unsynced changes it read).
    need: u64,
}

/// D1's record of the writes not yet durable: tree keys put or deleted,
/// and tables cleared, each with the LSN of its last such write. Bounded by
/// the writes of a round or two (entries at or below the durable LSN go
/// with each successful sync, and a failed one refuses writes until it is
/// retried).
#[derive(Debug, Default)]
pub struct Unsynced {
    keys: BTreeMap<Vec<u8>, u64>,
    cleared: HashMap<TableId, u64>,
}

impl Unsynced {
    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.cleared.is_empty()
    }

    /// The LSN a read of `key` in `db` depends on (0: nothing unsynced).
    fn key(&self, db: TableId, key: &[u8]) -> u64 {
        if self.is_empty() {
            return 0;
        }
        let cleared = self.cleared.get(&db).copied().unwrap_or(0);
        let put = self.keys.get(&db.key(key)).copied().unwrap_or(0);
        cleared.max(put)
    }

    /// The LSN a read of `db`'s keys from `from` on, up to `to`
    /// (exclusive; `None`: the table's end), depends on (0: nothing
    /// unsynced there).
    fn range(&self, db: TableId, from: &[u8], to: Option<&[u8]>) -> u64 {
        if self.is_empty() {
            return 0;
        }
        let cleared = self.cleared.get(&db).copied().unwrap_or(0);
        let lo = db.key(from);
        let max = |r: std::collections::btree_map::Range<'_, Vec<u8>, u64>| {
            r.map(|(_, &l)| l).max().unwrap_or(0)
        };
        let put = match to.map(|k| db.key(k)).or_else(|| db.end()) {
            Some(hi) if lo < hi => max(self.keys.range(lo..hi)),
            Some(_) => 0,
            None => max(self.keys.range(lo..)),
        };
        cleared.max(put)
    }

    /// Everything up to `durable` is durable.
    fn synced(&mut self, durable: u64) {
        self.keys.retain(|_, l| *l > durable);
        self.cleared.retain(|_, l| *l > durable);
    }
}

/// How often a repeated storage error is logged again.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Logs storage failures without flooding stderr when they repeat (every
/// write during a full disk, every read of one bad page): per kind of
/// failure (`what`), a message is logged when it differs from that kind's
/// last one, or [`LOG_EVERY`] after it, with how many were not logged in
/// between.
#[derive(Debug, Default)]
pub struct ErrorLog {
    kinds: HashMap<&'static str, Logged>,
}

/// One kind's last logged message, when, and the repeats since.
#[derive(Debug)]
struct Logged {
    text: String,
    at: Instant,
    quiet: u64,
}

impl ErrorLog {
    pub fn log(&mut self, shard: usize, what: &'static str, text: &str) {
        let now = Instant::now();
        let mut quiet = 0;
        if let Some(last) = self.kinds.get_mut(what) {
            if last.text == text && now.duration_since(last.at) < LOG_EVERY {
                last.quiet += 1;
                return;
            }
            quiet = last.quiet;
        }
        if quiet > 0 {
            tracing::error!(target: "store", shard, "{what}: {text} ({quiet} more since the last line)");
        } else {
            tracing::error!(target: "store", shard, "{what}: {text}");
        }
        self.kinds.insert(
            what,
            Logged {
                text: text.to_owned(),
                at: now,
                quiet: 0,
            },
        );
    }
}

impl ShardEngine {
    pub fn new(index: usize, shard: Shard) -> Self {
        let (_, durable) = shard.wal_state();
        ShardEngine {
            index,
            shard,
            counts: HashMap::new(),
            last_write: durable.0,
            durable: durable.0,
            writes: 0,
            errors: ErrorLog::default(),
            track: false,
            unsynced: Unsynced::default(),
            need: 0,
        }
    }

    /// A command starts (D1's per-command LSN).
    fn begin(&mut self) {
        self.need = 0;
    }

    /// Whether the command since [`ShardEngine::begin`] depends on a
    /// write not yet durable (D1).
    fn depends_on_unsynced(&self) -> bool {
        self.need > self.durable
    }

    /// A write applied that is not yet durable.
    fn dirty(&self) -> bool {
        self.last_write > self.durable
    }

    /// A read depending on the unsynced change at `lsn` (0: none).
    fn observed(&mut self, lsn: u64) {
        self.need = self.need.max(lsn);
    }

    /// A write of `key` in `db` (`None`: the whole table) was applied.
    fn wrote(&mut self, db: TableId, key: Option<&[u8]>) {
        let lsn = self.shard.last_lsn().0;
        self.last_write = lsn;
        self.need = self.need.max(lsn);
        self.writes += 1;
        if self.track {
            match key {
                Some(k) => {
                    self.unsynced.keys.insert(db.key(k), lsn);
                }
                None => {
                    self.unsynced.cleared.insert(db, lsn);
                }
            }
        }
    }

    /// Every write up to `durable` is durable.
    fn synced(&mut self, durable: u64) {
        self.durable = self.durable.max(durable);
        self.unsynced.synced(self.durable);
    }

    /// A storage failure as the command layer's error (its reply is `-ERR`
    /// and the message, which names the file and the page or offset),
    /// logged.
    fn fail(&mut self, e: StoreError) -> EngineError {
        match e {
            StoreError::KeyTooLong { len, max } => EngineError::KeyTooLong { len, max },
            other => {
                // One line on the wire whatever the OS's message holds.
                let text = other.to_string().replace(['\r', '\n'], " ");
                self.errors.log(self.index, "storage", &text);
                EngineError::Storage(text)
            }
        }
    }
}

impl Engine for ShardEngine {
    fn get(&mut self, db: TableId, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.observed(self.unsynced.key(db, key));
        self.shard.get(db, key).map_err(|e| self.fail(e))
    }

    fn exists(&mut self, db: TableId, key: &[u8]) -> Result<bool, EngineError> {
        self.observed(self.unsynced.key(db, key));
        self.shard.exists(db, key).map_err(|e| self.fail(e))
    }

    fn put(&mut self, db: TableId, key: &[u8], value: Vec<u8>) -> Result<(), EngineError> {
        if value.len() > MAX_VALUE {
            return Err(EngineError::ValueTooLarge);
        }
        // K1: only a counted table pays for the lookup.
        let new = self.counts.contains_key(&db)
            && !self.shard.exists(db, key).map_err(|e| self.fail(e))?;
        self.shard.put(db, key, &value).map_err(|e| self.fail(e))?;
        self.wrote(db, Some(key));
        if let (true, Some(n)) = (new, self.counts.get_mut(&db)) {
            *n += 1;
        }
        Ok(())
    }

    fn delete(&mut self, db: TableId, key: &[u8]) -> Result<bool, EngineError> {
        let found = self.shard.delete(db, key).map_err(|e| self.fail(e))?;
        if found {
            self.wrote(db, Some(key));
            if let Some(n) = self.counts.get_mut(&db) {
                *n = n.saturating_sub(1);
            }
        }
        Ok(found)
    }

    fn scan(&mut self, db: TableId, start: &[u8], limit: usize) -> Result<ScanBatch, EngineError> {
        let s = self
            .shard
            .scan(db, start, limit.max(1))
            .map_err(|e| self.fail(e))?;
        self.observed(self.unsynced.range(db, start, s.resume.as_deref()));
        Ok(ScanBatch {
            entries: s.entries,
            resume: s.resume,
        })
    }

    /// Deletes `db`'s keys a batch (one WAL record) at a time.
    fn clear(&mut self, db: TableId) -> Result<(), EngineError> {
        // K1: recounted if a batch fails part way.
        self.counts.remove(&db);
        loop {
            let batch = self.shard.scan(db, b"", SWEEP).map_err(|e| self.fail(e))?;
            if batch.entries.is_empty() {
                return Ok(());
            }
            let ops: Vec<Op<'_>> = batch
                .entries
                .iter()
                .map(|(key, _)| Op::Delete { table: db, key })
                .collect();
            self.shard.write_batch(&ops).map_err(|e| self.fail(e))?;
            self.wrote(db, None);
            if batch.resume.is_none() {
                self.counts.insert(db, 0);
                return Ok(());
            }
        }
    }

    /// `db`'s key count (K1: a scan the first time).
    fn len(&mut self, db: TableId) -> Result<u64, EngineError> {
        self.observed(self.unsynced.range(db, b"", None));
        if let Some(n) = self.counts.get(&db) {
            return Ok(*n);
        }
        let n = self.count(db)?;
        self.counts.insert(db, n);
        Ok(n)
    }
}

impl ShardEngine {
    /// Counts `db`'s keys with a scan.
    fn count(&mut self, db: TableId) -> Result<u64, EngineError> {
        let mut n = 0u64;
        let mut start = Vec::new();
        loop {
            let batch = self
                .shard
                .scan(db, &start, SWEEP)
                .map_err(|e| self.fail(e))?;
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
    /// Checkpoint once no write came for this long (`None`: never for
    /// that reason).
    pub quiet: Option<Duration>,
}

/// A worker's shard, its executor and the replies D1 holds, each with
/// where it goes (`O`) and the LSN it waits for.
#[derive(Debug)]
pub struct Host<O> {
    index: usize,
    exec: Executor<ShardEngine>,
    sync: SyncMode,
    policy: CheckpointPolicy,
    held: Vec<(O, Reply, u64)>,
    last_checkpoint: Instant,
    last_sync: Instant,
    /// The write count last seen by `maybe_checkpoint`, and when it was
    /// seen to change (for `CheckpointPolicy::quiet`).
    seen_writes: u64,
    writes_moved: Instant,
    /// `--wal-io storage`: group commits on a storage worker (`None`: on
    /// this thread, `Shard::sync_wal`).
    disk: Option<WalDisk>,
}

impl<O> Host<O> {
    pub fn new(
        index: usize,
        shard: Shard,
        server: ServerInfo,
        sync: SyncMode,
        policy: CheckpointPolicy,
    ) -> Self {
        Host {
            index,
            exec: Executor::new(
                ShardEngine {
                    track: sync == SyncMode::Always,
                    ..ShardEngine::new(index, shard)
                },
                server,
            ),
            sync,
            policy,
            held: Vec::new(),
            last_checkpoint: Instant::now(),
            last_sync: Instant::now(),
            seen_writes: 0,
            writes_moved: Instant::now(),
            disk: None,
        }
    }

    /// Group commits through `disk` from now on.
    pub fn with_disk(mut self, disk: WalDisk) -> Self {
        self.disk = Some(disk);
        self
    }

    /// Runs one request; its reply now, or `None` if D1 holds it until
    /// the WAL is durable up to what it depends on.
    pub fn run(&mut self, origin: O, db: u32, req: Request, now_ms: i64) -> Option<(O, Reply)> {
        let mut session = Session::in_db(db);
        self.exec.engine_mut().begin();
        let reply = self.exec.execute(&mut session, req, now_ms);
        let engine = self.exec.engine_mut();
        if self.sync == SyncMode::Always && engine.depends_on_unsynced() {
            self.held.push((origin, reply, engine.need));
            return None;
        }
        Some((origin, reply))
    }

    /// A new connection on this worker (counted in this shard's INFO).
    pub fn connect(&mut self) -> Session {
        self.exec.connect()
    }

    /// Group commit (`--sync always`, once per round): starts a WAL sync
    /// if anything was written and none is in flight, and returns the held
    /// replies the WAL is durable for (on this thread, all of them). Under
    /// the other policies, a time-driven sync if one is due.
    pub fn commit(&mut self) -> Vec<(O, Reply)> {
        if let Some(d) = &mut self.disk {
            d.flush();
        }
        if self.sync == SyncMode::Always {
            if self.exec.engine_mut().dirty() {
                self.start_sync();
            }
        } else {
            self.timed_sync();
        }
        self.maybe_checkpoint();
        self.release()
    }

    /// The clock: `--sync interval:MS` and `never` sync when due;
    /// checkpoints by time.
    pub fn tick(&mut self) {
        if let Some(d) = &mut self.disk {
            d.flush();
        }
        self.timed_sync();
        self.maybe_checkpoint();
    }

    /// `--wal-io storage`: a completion from the storage worker; the
    /// replies a finished sync releases (and, if it succeeded, the next
    /// sync starts at once when writes wait for it; a failed one is
    /// performed again from the next round or tick, not in a loop here).
    pub fn on_disk(&mut self, c: StorageCompletion) -> Vec<(O, Reply)> {
        let done = self.disk.as_mut().and_then(|d| d.on_completion(c));
        if let Some((io, result)) = done {
            let outcome = self.exec.engine_mut().shard.complete_wal_io(io, result);
            let ok = outcome.is_ok();
            self.synced(outcome);
            if ok && self.sync == SyncMode::Always && self.exec.engine_mut().dirty() {
                self.start_sync();
            }
        }
        self.release()
    }

    /// How long written records may stay unsynced: `None` under `always`
    /// (each round's commit syncs them).
    fn sync_period(&self) -> Option<Duration> {
        match self.sync {
            SyncMode::Always => None,
            SyncMode::Interval(every) => Some(every),
            SyncMode::Never => Some(NEVER_SYNC),
        }
    }

    /// Starts a WAL sync if something is unsynced and the period has
    /// passed since the last one (a failure is logged; the WAL refuses
    /// writes until the next due sync retries it, W3).
    fn timed_sync(&mut self) {
        let Some(period) = self.sync_period() else {
            return;
        };
        if self.exec.engine_mut().dirty() && self.last_sync.elapsed() >= period {
            self.start_sync();
        }
    }

    /// Whether a sync is in flight on the storage worker.
    fn in_flight(&self) -> bool {
        self.disk.as_ref().is_some_and(WalDisk::in_flight)
    }

    /// Syncs the WAL: here and now, or by starting the storage worker on
    /// it (nothing if a sync is in flight: its completion starts the next).
    fn start_sync(&mut self) {
        if self.in_flight() {
            return;
        }
        self.last_sync = Instant::now();
        let engine = self.exec.engine_mut();
        let Some(disk) = &mut self.disk else {
            let outcome = engine.shard.sync_wal();
            self.synced(outcome);
            return;
        };
        if let Some(io) = engine.shard.take_wal_io()
            && let Some((io, result)) = disk.start(io)
        {
            let outcome = engine.shard.complete_wal_io(io, result);
            self.synced(outcome);
        }
    }

    /// A sync's outcome: the durable LSN moves on, or every held reply
    /// becomes the error (its write is not known to be durable; the WAL
    /// performs the failed sync again, W3).
    fn synced(&mut self, outcome: Result<crate::wal::Lsn, StoreError>) {
        match outcome {
            Ok(lsn) => self.exec.engine_mut().synced(lsn.0),
            Err(e) => {
                let index = self.index;
                let why = e.to_string().replace(['\r', '\n'], " ");
                self.exec.engine_mut().errors.log(index, "WAL sync", &why);
                let text = format!("ERR write not durable: {why}");
                for (_, reply, need) in &mut self.held {
                    *reply = Reply::error(text.clone());
                    *need = 0;
                }
            }
        }
    }

    /// The held replies whose LSN is durable (or that failed).
    fn release(&mut self) -> Vec<(O, Reply)> {
        let durable = self.exec.engine_mut().durable;
        if self.held.is_empty() {
            return Vec::new();
        }
        let (out, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(_, _, need)| *need <= durable);
        self.held = keep;
        out.into_iter().map(|(o, r, _)| (o, r)).collect()
    }

    fn maybe_checkpoint(&mut self) {
        let writes = self.exec.engine_mut().writes;
        if writes == 0 {
            self.seen_writes = 0;
            return;
        }
        let now = Instant::now();
        if writes != self.seen_writes {
            self.seen_writes = writes;
            self.writes_moved = now;
        }
        let quiet = self
            .policy
            .quiet
            .is_some_and(|q| now.duration_since(self.writes_moved) >= q);
        let due = writes >= self.policy.writes
            || now.duration_since(self.last_checkpoint) >= self.policy.every
            || quiet;
        if !due
            || self.in_flight()
            || (self.sync == SyncMode::Always && self.exec.engine_mut().dirty())
        {
            return;
        }
        self.last_checkpoint = now;
        let engine = self.exec.engine_mut();
        match engine.shard.checkpoint() {
            Ok(seq) => {
                engine.writes = 0;
                self.seen_writes = 0;
                tracing::debug!(target: "store", shard = self.index, "checkpoint {seq}");
            }
            Err(e) => engine.errors.log(self.index, "checkpoint", &e.to_string()),
        }
        if let Some(d) = &mut self.disk {
            d.forget_removed(&engine.shard.wal_segments());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Partitioning, ShardLayout};
    use crate::page::PageSize;
    use crate::resp::command::parse;
    use crate::shard::ShardOptions;
    use crate::test_dir::TempDir;
    use crate::wal::WalConfig;

    fn host(dir: &TempDir, sync: SyncMode, writes: u64) -> Host<u32> {
        let opts = ShardOptions {
            page_size: PageSize::MIN,
            layout: ShardLayout {
                count: 1,
                index: 0,
                partitioning: Partitioning::Hash,
            },
            wal: WalConfig {
                segment_bytes: 64 << 10,
            },
            cache_bytes: 1 << 20,
        };
        let shard = Shard::open(&dir.file("shard-0.data"), opts).unwrap();
        let policy = CheckpointPolicy {
            writes,
            every: Duration::from_secs(3600),
            quiet: None,
        };
        let server = ServerInfo {
            port: 0,
            pid: 0,
            started_ms: 0,
            appendonly: true,
            max_bulk: MAX_STRING,
        };
        Host::new(0, shard, server, sync, policy)
    }

    fn req(words: &str) -> Request {
        let args: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        parse(&args).unwrap()
    }

    #[test]
    fn a_pause_in_writes_checkpoints_and_steady_writes_do_not() {
        let dir = TempDir::new();
        let mut h = host(&dir, SyncMode::Never, 1_000_000);
        let quiet = Duration::from_millis(30);
        h.policy.quiet = Some(quiet);
        // Writes that keep coming (faster than `quiet`) never look quiet.
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < quiet * 3 {
            assert!(h.run(1, 0, req(&format!("SET k{n} v")), 0).is_some());
            n += 1;
            h.commit();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            h.exec.engine_mut().writes,
            n,
            "checkpointed while writes came"
        );
        assert!(h.exec.engine_mut().shard.stats().dirty > 0);
        // Then they stop: a tick after `quiet` checkpoints.
        std::thread::sleep(quiet + Duration::from_millis(10));
        h.tick();
        assert_eq!(h.exec.engine_mut().writes, 0);
        assert_eq!(h.exec.engine_mut().shard.stats().dirty, 0);
        // Reads afterwards see every value, now from the pages.
        for i in [0, n / 2, n - 1] {
            let got = h.run(2, 0, req(&format!("GET k{i}")), 0);
            assert_eq!(got, Some((2, Reply::Bulk(b"v".to_vec()))), "k{i}");
        }
    }

    #[test]
    fn always_holds_every_reply_while_a_write_is_not_synced() {
        let dir = TempDir::new();
        let mut h = host(&dir, SyncMode::Always, 1_000_000);
        assert_eq!(h.run(1, 0, req("GET k"), 0), Some((1, Reply::Null)));
        assert_eq!(h.run(2, 0, req("SET k v"), 0), None);
        // A read after it waits too: it would show an unsynced value.
        assert_eq!(h.run(3, 0, req("GET k"), 0), None);
        let released = h.commit();
        assert_eq!(
            released,
            vec![(2, Reply::OK), (3, Reply::Bulk(b"v".to_vec()))]
        );
        assert!(h.commit().is_empty());
        assert_eq!(
            h.run(4, 0, req("GET k"), 0),
            Some((4, Reply::Bulk(b"v".to_vec())))
        );
    }

    #[test]
    fn always_holds_only_replies_that_depend_on_an_unsynced_write() {
        let dir = TempDir::new();
        let mut h = host(&dir, SyncMode::Always, 1_000_000);
        assert_eq!(h.run(1, 0, req("SET a 1"), 0), None);
        assert!(h.commit().len() == 1);
        assert_eq!(h.run(2, 0, req("SET k v"), 0), None);
        // Nothing unsynced in what these read: answered at once.
        assert_eq!(
            h.run(3, 0, req("GET a"), 0),
            Some((3, Reply::Bulk(b"1".to_vec())))
        );
        assert_eq!(
            h.run(4, 0, req("EXISTS b"), 0),
            Some((4, Reply::Integer(0)))
        );
        assert_eq!(h.run(5, 1, req("DBSIZE"), 0), Some((5, Reply::Integer(0))));
        assert!(h.run(6, 0, req("SCAN 0 MATCH zz COUNT 1"), 0).is_some());
        // These read k, its range or its table's count: held.
        assert_eq!(h.run(7, 0, req("EXISTS k"), 0), None);
        assert_eq!(h.run(8, 0, req("DBSIZE"), 0), None);
        assert_eq!(h.run(9, 0, req("SCAN 0"), 0), None);
        // SET NX reads k and writes nothing: held too.
        assert_eq!(h.run(10, 0, req("SET k w NX"), 0), None);
        let released: Vec<u32> = h.commit().into_iter().map(|(o, _)| o).collect();
        assert_eq!(released, vec![2, 7, 8, 9, 10]);
        // Synced: nothing is held.
        assert!(h.run(11, 0, req("DBSIZE"), 0).is_some());
        // A cleared table is unsynced as a whole.
        assert_eq!(h.run(12, 0, req("FLUSHDB"), 0), None);
        assert_eq!(h.run(13, 0, req("GET zzz"), 0), None);
        assert!(h.run(14, 1, req("GET zzz"), 0).is_some());
        assert_eq!(h.commit().len(), 2);
        assert!(h.exec.engine_mut().unsynced.is_empty());
    }

    #[test]
    fn unsynced_ranges_are_bounded_by_the_table_and_never_panic() {
        let mut u = Unsynced::default();
        assert_eq!(u.range(TableId(0), b"", None), 0);
        u.keys.insert(TableId(1).key(b"m"), 7);
        u.keys.insert(TableId(1).key(b"p"), 9);
        assert_eq!(u.range(TableId(1), b"", None), 9);
        assert_eq!(u.range(TableId(1), b"a", Some(b"n")), 7);
        assert_eq!(u.range(TableId(1), b"a", Some(b"m")), 0);
        assert_eq!(u.range(TableId(1), b"n", None), 9);
        assert_eq!(u.range(TableId(0), b"", None), 0);
        assert_eq!(u.range(TableId(2), b"", None), 0);
        // An inverted or empty range is empty, not a panic.
        assert_eq!(u.range(TableId(1), b"z", Some(b"a")), 0);
        assert_eq!(u.range(TableId(1), b"m", Some(b"m")), 0);
        assert_eq!(u.range(TableId(u32::MAX), b"", None), 0);
        u.cleared.insert(TableId(u32::MAX), 11);
        assert_eq!(u.range(TableId(u32::MAX), b"x", None), 11);
        assert_eq!(u.key(TableId(u32::MAX), b"x"), 11);
        assert_eq!(u.key(TableId(1), b"m"), 7);
        assert_eq!(u.key(TableId(0), b"m"), 0);
        // Durable through 8: only what came after stays.
        u.synced(8);
        assert_eq!(u.key(TableId(1), b"m"), 0);
        assert_eq!(u.key(TableId(1), b"p"), 9);
        assert_eq!(u.key(TableId(u32::MAX), b"x"), 11);
        u.synced(11);
        assert!(u.is_empty());
    }

    /// A host whose group commits run on a storage worker, with the
    /// queue its completions arrive in.
    fn disk_host(
        dir: &TempDir,
    ) -> (
        Host<u32>,
        shared_nothing::worker::ResultQueue<StorageCompletion>,
        shared_nothing::io::StorageWorker,
    ) {
        use shared_nothing::io::{StorageConfig, StorageWorker};
        let worker = StorageWorker::start(0, StorageConfig::new()).unwrap();
        let (sink, done) = shared_nothing::worker::ResultSink::queue();
        let client = worker.client(sink).unwrap();
        let wal = crate::shard::wal_dir(&dir.file("shard-0.data"));
        let h = host(dir, SyncMode::Always, 1_000_000).with_disk(WalDisk::new(client, &wal));
        (h, done, worker)
    }

    /// Feeds completions to `h` until `want` replies came out (bounded).
    fn pump(
        h: &mut Host<u32>,
        done: &mut shared_nothing::worker::ResultQueue<StorageCompletion>,
        want: usize,
    ) -> Vec<(u32, Reply)> {
        let mut out = Vec::new();
        for _ in 0..100 {
            if out.len() >= want {
                break;
            }
            match done.recv_timeout(Duration::from_secs(10)) {
                Ok(c) => out.extend(h.on_disk(c)),
                Err(_) => break,
            }
        }
        out
    }

    #[test]
    fn on_the_storage_worker_replies_wait_for_the_sync_of_what_they_depend_on() {
        let dir = TempDir::new();
        let (mut h, mut done, _worker) = disk_host(&dir);
        assert_eq!(h.run(1, 0, req("SET k v"), 0), None);
        // The sync is in flight: nothing is released yet.
        assert!(h.commit().is_empty());
        assert!(h.in_flight());
        // Meanwhile: a write that needs the next sync, a read of k (needs
        // the first), a read of nothing unsynced (at once).
        assert_eq!(h.run(2, 0, req("SET j w"), 0), None);
        assert_eq!(h.run(3, 0, req("GET k"), 0), None);
        assert_eq!(h.run(4, 0, req("GET zz"), 0), Some((4, Reply::Null)));
        assert!(
            h.commit().is_empty(),
            "a second sync started beside the first"
        );
        // The first sync releases 1 and 3 and starts the next, which
        // releases 2.
        let first = pump(&mut h, &mut done, 2);
        assert_eq!(first, vec![(1, Reply::OK), (3, Reply::Bulk(b"v".to_vec()))]);
        assert!(h.in_flight());
        assert_eq!(pump(&mut h, &mut done, 1), vec![(2, Reply::OK)]);
        assert!(!h.in_flight());
        assert!(!h.exec.engine_mut().dirty());
        assert!(h.exec.engine_mut().unsynced.is_empty());
        let (_, durable) = h.exec.engine_mut().shard.wal_state();
        assert_eq!(durable.0, 2);
        // On disk: a reopen replays both.
        drop(h);
        let mut h = host(&dir, SyncMode::Always, 1_000_000);
        assert_eq!(
            h.run(5, 0, req("GET j"), 0),
            Some((5, Reply::Bulk(b"w".to_vec())))
        );
        assert_eq!(
            h.run(6, 0, req("GET k"), 0),
            Some((6, Reply::Bulk(b"v".to_vec())))
        );
    }

    #[test]
    fn on_the_storage_worker_a_failed_sync_fails_its_replies_and_is_performed_again() {
        let dir = TempDir::new();
        let (mut h, mut done, _worker) = disk_host(&dir);
        // The WAL's directory gone: the segment cannot be opened.
        let wal = crate::shard::wal_dir(&dir.file("shard-0.data"));
        std::fs::remove_dir_all(&wal).unwrap();
        assert_eq!(h.run(1, 0, req("SET k v"), 0), None);
        assert!(h.commit().is_empty());
        let failed = pump(&mut h, &mut done, 1);
        assert_eq!(failed.len(), 1);
        let Reply::Error(text) = &failed[0].1 else {
            panic!("{failed:?}");
        };
        let text = String::from_utf8_lossy(text);
        assert!(
            text.starts_with("ERR write not durable") && text.contains(".wal"),
            "{text}"
        );
        // W3: writes are refused until the failed sync is performed again.
        let (_, refused) = h.run(2, 0, req("SET j w"), 0).unwrap();
        assert!(matches!(refused, Reply::Error(_)), "{refused:?}");
        // A read of k still waits for it (D1); other reads answer.
        assert_eq!(h.run(3, 0, req("GET k"), 0), None);
        assert_eq!(h.run(4, 0, req("GET zz"), 0), Some((4, Reply::Null)));
        // The directory back: the retry succeeds and releases the read.
        std::fs::create_dir_all(&wal).unwrap();
        assert!(h.commit().is_empty());
        assert_eq!(
            pump(&mut h, &mut done, 1),
            vec![(3, Reply::Bulk(b"v".to_vec()))]
        );
        assert_eq!(h.run(5, 0, req("SET j w"), 0), None);
        h.commit();
        assert_eq!(pump(&mut h, &mut done, 1), vec![(5, Reply::OK)]);
        drop(h);
        let mut h = host(&dir, SyncMode::Always, 1_000_000);
        assert_eq!(
            h.run(6, 0, req("MGET k j"), 0).map(|(_, r)| r),
            Some(Reply::Array(vec![
                Reply::Bulk(b"v".to_vec()),
                Reply::Bulk(b"w".to_vec()),
            ]))
        );
    }

    #[test]
    fn never_answers_after_apply_and_the_tick_syncs() {
        let dir = TempDir::new();
        let mut h = host(&dir, SyncMode::Never, 1_000_000);
        assert_eq!(h.run(1, 0, req("SET k v"), 0), Some((1, Reply::OK)));
        assert!(h.commit().is_empty());
        std::thread::sleep(NEVER_SYNC);
        h.tick();
        assert!(!h.exec.engine_mut().dirty());
    }

    #[test]
    fn interval_answers_after_apply_and_syncs_once_the_interval_passed() {
        let dir = TempDir::new();
        let every = Duration::from_millis(300);
        let mut h = host(&dir, SyncMode::Interval(every), 1_000_000);
        // Synced at open, so the first write waits for its interval.
        h.last_sync = Instant::now();
        assert_eq!(h.run(1, 0, req("SET k v"), 0), Some((1, Reply::OK)));
        assert_eq!(
            h.run(2, 0, req("GET k"), 0),
            Some((2, Reply::Bulk(b"v".to_vec())))
        );
        assert!(h.commit().is_empty());
        h.tick();
        assert!(h.exec.engine_mut().dirty(), "synced before its interval");
        let (_, durable) = h.exec.engine_mut().shard.wal_state();
        assert_eq!(durable.0, 0);
        std::thread::sleep(every);
        // Due: the round's commit syncs it (the tick would too).
        assert!(h.commit().is_empty());
        assert!(!h.exec.engine_mut().dirty());
        let (_, durable) = h.exec.engine_mut().shard.wal_state();
        assert_eq!(durable.0, 1);
        // The next write again waits for its interval.
        assert_eq!(h.run(3, 0, req("SET k w"), 0), Some((3, Reply::OK)));
        h.tick();
        assert!(h.exec.engine_mut().dirty());
    }

    #[test]
    fn clear_and_len_cross_batches_and_tables() {
        let dir = TempDir::new();
        let mut h = host(&dir, SyncMode::Never, 1_000);
        let e = h.exec.engine_mut();
        for i in 0..2500 {
            e.put(TableId(0), format!("k{i}").as_bytes(), b"v".to_vec())
                .unwrap();
        }
        e.put(TableId(1), b"other", b"v".to_vec()).unwrap();
        assert_eq!(e.len(TableId(0)).unwrap(), 2500);
        // K1: counted once, then kept exact by overwrites, adds, deletes.
        e.put(TableId(0), b"k7", b"w".to_vec()).unwrap();
        e.put(TableId(0), b"new", b"v".to_vec()).unwrap();
        assert!(e.delete(TableId(0), b"k8").unwrap());
        assert!(!e.delete(TableId(0), b"k8").unwrap());
        assert_eq!(e.len(TableId(0)).unwrap(), 2500);
        assert_eq!(e.count(TableId(0)).unwrap(), 2500);
        e.clear(TableId(0)).unwrap();
        assert_eq!(e.len(TableId(0)).unwrap(), 0);
        assert_eq!(e.len(TableId(1)).unwrap(), 1);
        // The write count triggers a checkpoint on the next commit.
        h.commit();
        assert_eq!(h.exec.engine_mut().writes, 0);
    }

    #[test]
    fn a_repeated_error_is_logged_once_then_counted() {
        let mut log = ErrorLog::default();
        let quiet = |log: &ErrorLog, what| log.kinds.get(what).map(|l| l.quiet);
        log.log(0, "storage", "disk full");
        log.log(0, "storage", "disk full");
        // Another kind interleaved does not end the storage run.
        log.log(0, "WAL sync", "disk full, sync");
        log.log(0, "storage", "disk full");
        log.log(0, "WAL sync", "disk full, sync");
        assert_eq!(quiet(&log, "storage"), Some(2));
        assert_eq!(quiet(&log, "WAL sync"), Some(1));
        log.log(0, "storage", "page 7: bad checksum");
        assert_eq!(quiet(&log, "storage"), Some(0));
        assert_eq!(
            log.kinds.get("storage").map(|l| l.text.as_str()),
            Some("page 7: bad checksum")
        );
    }

    #[test]
    fn limits_map_to_redis_style_errors() {
        let dir = TempDir::new();
        let mut h = host(&dir, SyncMode::Never, 1_000);
        let long = "k".repeat(crate::table::MAX_KEY + 1);
        let (_, reply) = h.run(1, 0, req(&format!("SET {long} v")), 0).unwrap();
        assert_eq!(
            reply,
            Reply::error(format!(
                "ERR key of {} bytes exceeds the 1024-byte bound",
                long.len()
            ))
        );
        // (A value over MAX_VALUE is refused the same way; 512 MiB is too
        // much to allocate here.)
        assert_eq!(
            Reply::from(EngineError::ValueTooLarge),
            Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        );
    }
}
