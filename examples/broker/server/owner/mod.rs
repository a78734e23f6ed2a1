//! The log owner: the one worker that appends, commits and reads.
//!
//! It never touches the disk for writes: the log (with deferred I/O) turns
//! appends into [`DiskWrite`]s, and once per round of messages
//! ([`Worker::after_round`](shared_nothing::prelude::Worker::after_round))
//! the owner cuts a *batch* of everything appended since the last one and
//! submits its writes to a storage I/O worker: `Durability::GroupCommit`
//! under `--fsync always` (the storage worker answers once a shared
//! fdatasync issued after the write has finished), `Buffered` otherwise
//! (`interval` adds a periodic fdatasync per written segment). Completions
//! come back as messages; batches finish in order, and a finished batch
//! moves the committed offset (and the durable one under `always`). Acks
//! below the committed offset go back to the connection workers in offset
//! order, which is also each connection's order; consumers are pushed new
//! frames by the same step. At most [`MAX_BATCHES`] batches are in flight:
//! beyond that, appends wait in the log until a batch finishes.
//!
//! A request that runs out of disk space (a log write, a segment's open,
//! the directory sync after a roll) does not fail the log: it is parked
//! with its buffer and resubmitted with backoff until space is freed
//! (`space`), no new batch is cut meanwhile, and nothing past it is acked
//! (its batch stays pending); the stats line and the `broker_disk_full`
//! gauge show the wait. Any other write error poisons the log.
//!
//! Segment files are opened (and created, on a roll) by the storage worker;
//! a roll also makes the directory entry durable with an fsync of the
//! directory (opened read-only) before records in the new segment count as
//! committed. Consumers' chunks are read by the storage worker too
//! (`Log::plan_read`, then `Log::frames_from` on the completion: one read
//! in flight per consumer), so a replay of cold data never delays an ack.
//! Retention's deleted segments are closed and unlinked there as well.
//! Still on the owner's thread: recovery at start (before serving) and the
//! short header walk that checks a consumer's start offset (at most one
//! index interval, through `std::fs`).

use super::Msg;
use super::space::{SpaceWait, out_of_space};
use crate::commit::Committer;
use crate::config::{Config, FsyncPolicy};
use crate::log::{
    Cursor, DirLock, DiskWrite, FsDir, Log, LogConfig, Parsed, ReadPlan, index_name, log_name,
};
use crate::protocol::{self, FRAME_HEADER};
use crate::stats::Stats;
use shared_nothing::io::{
    ConnId, Durability, FileId, IoBuf, OpenOptions, StorageClient, StorageCompletion, StorageOp,
    StorageOutput, SubmitError,
};
use shared_nothing::worker::ResultSink;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Sparse index density: at most this many bytes walked by `locate`.
const INDEX_INTERVAL: u32 = 4096;
/// Appends are gathered up to this size before a write.
const WRITE_BUFFER: usize = 1 << 20;
/// Consumer frames per push; a consumer has one push in flight at a time,
/// so a slow one holds at most this much of the owner's output.
const PUSH_BYTES: usize = 256 << 10;
/// Consumer read buffers kept for reuse.
const READ_BUFS: usize = 8;
/// Batches submitted to the storage worker and not finished yet.
pub const MAX_BATCHES: usize = 8;

/// Records of one `Append` message waiting for their commit.
struct Unacked {
    from: usize,
    conn: ConnId,
    /// Encoded acks, in order.
    acks: Vec<u8>,
    /// The highest offset among them.
    last: u64,
    count: usize,
    bytes: usize,
    arrived: Instant,
}

struct Consumer {
    from: usize,
    cursor: Cursor,
    /// Frames were sent and no credit came back yet.
    in_flight: bool,
    /// Its next chunk is being read by the storage worker.
    reading: bool,
}

/// A file on the storage worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FileKey {
    Log(u64),
    Index(u64),
    Dir,
}

enum Slot {
    /// Being opened: requests waiting for the id.
    Opening(Vec<(u64, Queued)>),
    Open(FileId),
}

enum Queued {
    Read {
        pos: u64,
        len: usize,
        buf: IoBuf,
    },
    Write {
        pos: u64,
        bytes: Vec<u8>,
        durability: Durability,
    },
    Sync {
        data_only: bool,
    },
}

impl Queued {
    fn into_op(self, file: FileId) -> StorageOp {
        match self {
            Queued::Read { pos, len, buf } => StorageOp::ReadAt {
                file,
                offset: pos,
                len,
                buf,
            },
            Queued::Write {
                pos,
                bytes,
                durability,
            } => StorageOp::WriteAt {
                file,
                offset: pos,
                buf: bytes.into(),
                durability,
            },
            Queued::Sync { data_only } => StorageOp::Sync { file, data_only },
        }
    }
}

/// What a submitted request was for (by token).
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `create`: a new segment's file, created empty.
    Open {
        key: FileKey,
        create: bool,
    },
    /// A log write of batch `batch` into segment `base` at `pos`.
    Write {
        batch: u64,
        base: u64,
        pos: u64,
    },
    /// The directory sync after a roll, part of `batch`.
    DirSync {
        batch: u64,
    },
    /// The next chunk of consumer `conn`.
    ConsumerRead {
        conn: ConnId,
        plan: ReadPlan,
    },
    IndexWrite,
    /// Retention's unlink of a segment's file.
    Remove,
    IntervalSync,
    /// A segment's file extended to its full size (see `preallocate`).
    Preallocate,
    Close,
}

/// A group commit in flight: its writes (and directory syncs) not yet
/// completed, and the log end it commits.
struct Batch {
    id: u64,
    end: u64,
    pending: usize,
}

/// A request parked while the disk is full (see `space`).
#[derive(Debug)]
enum Parked {
    /// A log write, with its buffer (on the open segment file).
    Write {
        op: Op,
        write: StorageOp,
    },
    Open {
        key: FileKey,
        create: bool,
    },
    DirSync {
        batch: u64,
    },
}

pub struct Owner {
    /// `None` for the default log.
    name: Option<crate::protocol::LogName>,
    log: Log<FsDir>,
    _lock: DirLock,
    dir: PathBuf,
    /// Segment size: what `preallocate` reserves.
    segment_bytes: u64,
    committer: Committer,
    durability: Durability,
    disk: StorageClient,
    files: HashMap<FileKey, Slot>,
    ops: HashMap<u64, Op>,
    next_token: u64,
    /// Requests the storage worker's queue had no room for, in order.
    retry: VecDeque<(u64, StorageOp)>,
    batches: VecDeque<Batch>,
    next_batch: u64,
    /// Log end covered by the batches cut so far.
    cut_end: u64,
    /// Segment rolled in `batch`, whose directory sync waits for its open.
    roll_syncs: HashMap<u64, u64>,
    /// `interval`: segments with completed writes since the last sync.
    unsynced: HashSet<u64>,
    interval_syncs: usize,
    interval_target: u64,
    /// Committed offset consumers were last pushed at.
    pushed_at: u64,
    /// A disk error: no more appends or acks.
    failed: Option<String>,
    /// Out of space: requests waiting to be written again, no new batches.
    space: Option<SpaceWait<Parked>>,
    /// The broker's series in the pool's registry (standalone in tests).
    metrics: super::metrics::BrokerMetrics,
    unacked: Vec<Unacked>,
    consumers: HashMap<ConnId, Consumer>,
    /// Read buffers of finished consumer reads, for the next ones.
    read_bufs: Vec<IoBuf>,
    stats: Stats,
    stats_every: Option<Duration>,
    window_start: Instant,
}

impl Owner {
    /// A named log: its stats line says which.
    pub fn with_name(mut self, name: Option<crate::protocol::LogName>) -> Self {
        self.name = name;
        self
    }

    /// Counts into `metrics` (the pool's registry holds the same series).
    pub fn with_metrics(mut self, metrics: super::metrics::BrokerMetrics) -> Self {
        self.metrics = metrics;
        self.metrics.log_end.set(self.log.end_offset() as i64);
        self
    }

    /// Opens (and recovers, synchronously: this runs before serving) the
    /// log under `cfg.dir`; from then on its writes go through `disk`.
    ///
    /// # Errors
    /// A message for the user: the directory, its lock or the log failed.
    pub fn open(cfg: &Config, disk: StorageClient) -> Result<Owner, String> {
        let shown = cfg.dir.display();
        let dir = FsDir::create(&cfg.dir).map_err(|e| format!("data dir {shown}: {e}"))?;
        let lock = dir.lock().map_err(|e| format!("data dir {shown}: {e}"))?;
        let log_cfg = LogConfig {
            segment_bytes: cfg.segment_bytes,
            index_interval: INDEX_INTERVAL,
            retention_bytes: cfg.retention_bytes,
            max_record: cfg.max_record,
            write_buffer: WRITE_BUFFER,
        };
        let (mut log, recovery) =
            Log::open(dir, log_cfg).map_err(|e| format!("open log in {shown}: {e}"))?;
        if recovery != Default::default() {
            tracing::info!(dir = %shown, "recovered the log: {recovery:?}");
        }
        tracing::info!(
            dir = %shown,
            "log offsets {}..{}",
            log.start_offset(),
            log.end_offset()
        );
        log.defer_io();
        let now = Instant::now();
        let end = log.end_offset();
        let active = log.segment_bases().last().copied().unwrap_or(0);
        let mut owner = Owner {
            name: None,
            log,
            _lock: lock,
            dir: cfg.dir.clone(),
            segment_bytes: cfg.segment_bytes,
            committer: Committer::new(cfg.fsync, now),
            durability: match cfg.fsync {
                FsyncPolicy::Always => Durability::GroupCommit,
                FsyncPolicy::Interval(_) | FsyncPolicy::Never => Durability::Buffered,
            },
            disk,
            files: HashMap::new(),
            ops: HashMap::new(),
            next_token: 0,
            retry: VecDeque::new(),
            batches: VecDeque::new(),
            next_batch: 0,
            cut_end: end,
            roll_syncs: HashMap::new(),
            unsynced: HashSet::new(),
            interval_syncs: 0,
            interval_target: 0,
            pushed_at: end,
            failed: None,
            space: None,
            metrics: super::metrics::BrokerMetrics::default(),
            unacked: Vec::new(),
            consumers: HashMap::new(),
            read_bufs: Vec::new(),
            stats: Stats::new().map_err(|e| e.to_string())?,
            stats_every: cfg.stats_interval,
            window_start: now,
        };
        // The active segment (recovery made or kept it) and the directory.
        owner.open_file(FileKey::Log(active), false);
        owner.open_file(FileKey::Index(active), false);
        owner.open_file(FileKey::Dir, false);
        Ok(owner)
    }

    pub fn on_message(&mut self, msg: Msg, peers: &mut [ResultSink<Msg>]) {
        match msg {
            Msg::Append {
                from,
                conn,
                frames,
                count,
                arrived,
                ..
            } => self.append(from, conn, &frames, count, arrived, peers),
            Msg::Subscribe {
                from, conn, offset, ..
            } => match self.log.locate(offset) {
                Ok(cursor) => {
                    self.consumers.insert(
                        conn,
                        Consumer {
                            from,
                            cursor,
                            in_flight: false,
                            reading: false,
                        },
                    );
                    self.metrics.consumers.set(self.consumers.len() as i64);
                    self.push(conn, peers);
                }
                Err(e) => refuse(peers, from, conn, e.to_string()),
            },
            Msg::Credit { conn, .. } => {
                if let Some(c) = self.consumers.get_mut(&conn) {
                    c.in_flight = false;
                    self.push(conn, peers);
                }
            }
            Msg::Unsubscribe { conn, .. } => {
                self.consumers.remove(&conn);
                self.metrics.consumers.set(self.consumers.len() as i64);
            }
            other => tracing::warn!("log owner ignored {other:?}"),
        }
    }

    fn append(
        &mut self,
        from: usize,
        conn: ConnId,
        mut frames: &[u8],
        count: usize,
        arrived: Instant,
        peers: &mut [ResultSink<Msg>],
    ) {
        if let Some(why) = &self.failed {
            return refuse(peers, from, conn, format!("log failed: {why}"));
        }
        let mut acks = Vec::with_capacity(count * protocol::OFFSET_LEN);
        let (mut last, mut bytes) = (0, 0);
        // The frames were built by a connection worker from decoded
        // records, so they are well formed; stop quietly if not.
        while let Some((len, rest)) = frames.split_first_chunk::<FRAME_HEADER>() {
            let len = u32::from_be_bytes(*len) as usize;
            let Some((payload, rest)) = rest.split_at_checked(len) else {
                break;
            };
            frames = rest;
            match self.log.append(payload) {
                Ok(offset) => {
                    acks.extend_from_slice(&protocol::encode_ack(offset));
                    last = offset;
                    bytes += len;
                }
                Err(e) => {
                    // Records already appended from this message are not
                    // acked either: the log takes no more writes.
                    self.poison(format!("append: {e}"));
                    self.settle(peers);
                    return refuse(peers, from, conn, format!("log failed: {e}"));
                }
            }
        }
        if !acks.is_empty() {
            self.unacked.push(Unacked {
                from,
                conn,
                count: acks.len() / protocol::OFFSET_LEN,
                acks,
                last,
                bytes,
                arrived,
            });
        }
    }

    /// A storage completion: a file opened, a batch's write or sync done,
    /// or an error (which poisons the log).
    pub fn on_disk(&mut self, c: StorageCompletion, peers: &mut [ResultSink<Msg>]) {
        let Some(op) = self.ops.remove(&c.token) else {
            return;
        };
        if let Op::ConsumerRead { conn, plan } = op {
            self.read_done(conn, plan, c, peers);
            self.flush_retry();
            return;
        }
        match c.result {
            // The index is only a hint (recovery checks every entry and
            // rebuilds a bad one), and a closed file needs nothing more:
            // neither failure puts acked records at risk.
            Err(e)
                if matches!(
                    op,
                    Op::IndexWrite | Op::Preallocate | Op::Remove | Op::Close
                ) =>
            {
                tracing::warn!("{}: {e}", self.describe(op));
            }
            Err(e) if out_of_space(&e) => self.out_of_space(c.token, op, c.buf, &e),
            Err(e) => self.poison(format!("{}: {e}", self.describe(op))),
            Ok(out) => match op {
                Op::Open { key, .. } => {
                    if let StorageOutput::Opened(id) = out {
                        self.opened(key, id);
                    }
                }
                Op::Write { batch, base, .. } => {
                    self.unsynced.insert(base);
                    self.batch_done(batch);
                }
                Op::DirSync { batch } => self.batch_done(batch),
                Op::IntervalSync => {
                    self.interval_syncs = self.interval_syncs.saturating_sub(1);
                    if self.interval_syncs == 0 && self.failed.is_none() {
                        self.log.set_durable(self.interval_target);
                        self.write_index();
                    }
                }
                Op::IndexWrite
                | Op::Preallocate
                | Op::Remove
                | Op::Close
                | Op::ConsumerRead { .. } => {}
            },
        }
        if let Some(w) = &mut self.space {
            if w.completed(c.token) {
                let (waited, retries) = (w.waited(Instant::now()), w.retries());
                tracing::warn!(
                    "disk space is back: log writes resumed after {waited:.1?} ({retries} retries)"
                );
                self.space = None;
                self.metrics.disk_full.set(0);
            }
        }
        self.flush_retry();
        self.advance();
        self.settle(peers);
    }

    /// Called once per round of messages: cuts a batch of everything
    /// appended since the last one and submits it (group commit), unless
    /// [`MAX_BATCHES`] are in flight (then a later round, woken by their
    /// completions, does).
    pub fn commit(&mut self, peers: &mut [ResultSink<Msg>]) {
        self.flush_retry();
        if self.failed.is_none()
            && self.space.is_none()
            && self.batches.len() < MAX_BATCHES
            && self.log.end_offset() > self.cut_end
        {
            match self.log.take_io() {
                Ok((created, writes)) => self.submit_batch(created, writes),
                Err(e) => self.poison(e.to_string()),
            }
        }
        self.advance();
        self.settle(peers);
    }

    fn submit_batch(&mut self, created: Vec<u64>, writes: Vec<DiskWrite>) {
        let id = self.next_batch;
        self.next_batch += 1;
        let mut pending = 0;
        for base in created {
            self.open_file(FileKey::Log(base), true);
            self.open_file(FileKey::Index(base), true);
            // The new name must be durable before its records count: the
            // directory sync follows the open (see `opened`).
            self.roll_syncs.insert(base, id);
            pending += 1;
        }
        for w in writes {
            let key = if w.index {
                FileKey::Index(w.base)
            } else {
                FileKey::Log(w.base)
            };
            let q = Queued::Write {
                pos: w.pos,
                bytes: w.bytes,
                durability: self.durability,
            };
            let op = Op::Write {
                batch: id,
                base: w.base,
                pos: w.pos,
            };
            self.file_op(key, op, q);
            pending += 1;
        }
        self.cut_end = self.log.end_offset();
        self.batches.push_back(Batch {
            id,
            end: self.cut_end,
            pending,
        });
    }

    fn batch_done(&mut self, id: u64) {
        if let Some(b) = self.batches.iter_mut().find(|b| b.id == id) {
            b.pending = b.pending.saturating_sub(1);
        }
    }

    /// Finished batches, in order, move the committed (and under `always`
    /// the durable) offset.
    fn advance(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let mut durable = false;
        while let Some(b) = self.batches.front() {
            if b.pending > 0 {
                break;
            }
            let end = b.end;
            self.batches.pop_front();
            if self.durability == Durability::GroupCommit {
                self.log.set_durable(end);
                durable = true;
            } else {
                self.log.set_committed(end);
            }
        }
        if durable {
            self.write_index();
        }
    }

    /// Index entries pointing at durable records may go to the `.idx` files.
    fn write_index(&mut self) {
        for w in self.log.take_index_writes() {
            let q = Queued::Write {
                pos: w.pos,
                bytes: w.bytes,
                durability: Durability::Buffered,
            };
            self.file_op(FileKey::Index(w.base), Op::IndexWrite, q);
        }
    }

    /// Releases acks below the committed offset, wakes consumers, applies
    /// retention; after a failure, refuses the producers still waiting.
    fn settle(&mut self, peers: &mut [ResultSink<Msg>]) {
        if let Some(why) = &self.failed {
            for u in self.unacked.drain(..) {
                refuse(peers, u.from, u.conn, format!("log failed: {why}"));
            }
        }
        let line = self.log.committed_offset();
        if line == self.pushed_at {
            return;
        }
        self.pushed_at = line;
        self.metrics.log_end.set(line as i64);
        let now = Instant::now();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.unacked.drain(..).partition(|u| u.last < line);
        self.unacked = waiting;
        for u in ready {
            let latency = now.saturating_duration_since(u.arrived);
            self.stats.record_ack(u.bytes, latency);
            for _ in 1..u.count {
                self.stats.record_ack(0, latency);
            }
            let m = &self.metrics;
            m.records_acked.inc_by(u.count as u64);
            m.bytes_acked.inc_by(u.bytes as u64);
            for _ in 0..u.count {
                m.ack_latency.observe(latency.as_secs_f64());
            }
            if let Some(sink) = peers.get_mut(u.from) {
                sink.deliver(Msg::Acks {
                    conn: u.conn,
                    bytes: u.acks,
                });
            }
        }
        match self.log.enforce_retention() {
            Ok(deleted) => {
                for base in deleted {
                    self.unsynced.remove(&base);
                    for key in [FileKey::Log(base), FileKey::Index(base)] {
                        self.close_file(key);
                        let path = self.path(key);
                        let token = self.token(Op::Remove);
                        self.submit(token, StorageOp::Remove { path });
                    }
                }
            }
            Err(e) => tracing::warn!("retention failed: {e}"),
        }
        let idle: Vec<ConnId> = self
            .consumers
            .iter()
            .filter(|(_, c)| !c.in_flight)
            .map(|(id, _)| *id)
            .collect();
        for conn in idle {
            self.push(conn, peers);
        }
    }

    /// Starts reading the consumer's next chunk of committed records, if
    /// it has no chunk in flight (or being read) and there is anything new.
    /// The storage worker reads; [`read_done`](Self::read_done) sends it.
    fn push(&mut self, conn: ConnId, peers: &mut [ResultSink<Msg>]) {
        let Some(c) = self.consumers.get(&conn) else {
            return;
        };
        if c.in_flight || c.reading {
            return;
        }
        match self.log.plan_read(&c.cursor, PUSH_BYTES) {
            Ok(None) => {}
            Ok(Some(plan)) => self.start_read(conn, plan),
            Err(e) => self.drop_consumer(conn, e.to_string(), peers),
        }
    }

    fn start_read(&mut self, conn: ConnId, plan: ReadPlan) {
        let Some(c) = self.consumers.get_mut(&conn) else {
            return;
        };
        c.reading = true;
        let buf = self
            .read_bufs
            .pop()
            .unwrap_or_else(|| IoBuf::from(Vec::with_capacity(plan.len)));
        let q = Queued::Read {
            pos: plan.pos,
            len: plan.len,
            buf,
        };
        self.file_op(FileKey::Log(plan.base), Op::ConsumerRead { conn, plan }, q);
    }

    /// A consumer's chunk was read: check it, send it as frames (or read a
    /// record larger than the chunk whole); a consumer whose records were
    /// deleted, are corrupt or cannot be read is refused (closed).
    fn read_done(
        &mut self,
        conn: ConnId,
        plan: ReadPlan,
        c: StorageCompletion,
        peers: &mut [ResultSink<Msg>],
    ) {
        let mut buf = c.buf;
        let outcome = match self.consumers.get_mut(&conn) {
            // Gone meanwhile (unsubscribed or closed).
            None => None,
            Some(cons) => {
                cons.reading = false;
                Some(match (&c.result, &buf) {
                    (Ok(_), Some(bytes)) => {
                        let mut out = Vec::with_capacity(bytes.len() + 64);
                        self.log
                            .frames_from(&mut cons.cursor, &plan, bytes.as_slice(), &mut out)
                            .map(|parsed| (parsed, out))
                            .map_err(|e| e.to_string())
                    }
                    (Ok(_), None) => Err(format!("read {}: no buffer", log_name(plan.base))),
                    // Retention may have closed the file under the read.
                    (Err(e), _) => Err(match self.log.plan_read(&cons.cursor, 1) {
                        Err(deleted) => deleted.to_string(),
                        Ok(_) => format!("read {}: {e}", log_name(plan.base)),
                    }),
                })
            }
        };
        if let Some(b) = buf.take() {
            if self.read_bufs.len() < READ_BUFS && b.capacity() <= 2 * PUSH_BYTES {
                self.read_bufs.push(b);
            }
        }
        match outcome {
            None => {}
            Some(Ok((Parsed::Frames(_), out))) => {
                if let Some(cons) = self.consumers.get_mut(&conn) {
                    cons.in_flight = true;
                    if let Some(sink) = peers.get_mut(cons.from) {
                        sink.deliver(Msg::Frames { conn, bytes: out });
                    }
                }
            }
            Some(Ok((Parsed::Larger(plan), _))) => self.start_read(conn, plan),
            Some(Err(why)) => self.drop_consumer(conn, why, peers),
        }
    }

    fn drop_consumer(&mut self, conn: ConnId, why: String, peers: &mut [ResultSink<Msg>]) {
        if let Some(c) = self.consumers.remove(&conn) {
            self.metrics.consumers.set(self.consumers.len() as i64);
            refuse(peers, c.from, conn, why);
        }
    }

    /// Time-driven work: `interval` syncs, retried submissions and the
    /// stats line.
    pub fn tick(&mut self, peers: &mut [ResultSink<Msg>]) {
        let now = Instant::now();
        self.flush_retry();
        self.retry_parked(now);
        let unsynced = self.log.durable_offset() < self.log.committed_offset();
        if self.failed.is_none()
            && self.interval_syncs == 0
            && self.committer.sync_due(now, unsynced)
        {
            self.committer.synced(now);
            self.interval_target = self.log.committed_offset();
            let bases: Vec<u64> = self.unsynced.drain().collect();
            for base in bases {
                let q = Queued::Sync { data_only: true };
                self.file_op(FileKey::Log(base), Op::IntervalSync, q);
                self.interval_syncs += 1;
            }
            if self.interval_syncs == 0 {
                self.log.set_durable(self.interval_target);
                self.write_index();
            }
        }
        self.settle(peers);
        if let Some(every) = self.stats_every {
            let window = now.saturating_duration_since(self.window_start);
            if window >= every {
                let full = self.space.as_ref().map(|w| w.waited(now));
                let line = self.stats.take().line(window, self.consumers.len(), full);
                match &self.name {
                    Some(name) => println!("log {name}: {line}"),
                    None => println!("{line}"),
                }
                self.window_start = now;
            }
        }
    }

    /// Request `token` (`op`) ran out of space: park it for a retry (a
    /// write keeps its buffer), and cut no new batch until it went through.
    fn out_of_space(
        &mut self,
        token: u64,
        op: Op,
        buf: Option<shared_nothing::io::IoBuf>,
        e: &shared_nothing::io::IoError,
    ) {
        let parked = match op {
            Op::Write { base, pos, .. } => {
                let file = match self.files.get(&FileKey::Log(base)) {
                    Some(Slot::Open(id)) => *id,
                    _ => return self.poison(format!("write {}: {e}", log_name(base))),
                };
                let Some(buf) = buf else {
                    return self.poison(format!("write {}: {e}", log_name(base)));
                };
                let write = StorageOp::WriteAt {
                    file,
                    offset: pos,
                    buf,
                    durability: self.durability,
                };
                Parked::Write { op, write }
            }
            Op::Open { key, create } => Parked::Open { key, create },
            Op::DirSync { batch } => Parked::DirSync { batch },
            Op::IntervalSync
            | Op::IndexWrite
            | Op::Preallocate
            | Op::Remove
            | Op::Close
            | Op::ConsumerRead { .. } => {
                return self.poison(format!("{}: {e}", self.describe(op)));
            }
        };
        match &mut self.space {
            Some(w) => {
                w.failed_again(token);
                w.park(parked);
            }
            None => {
                tracing::error!(
                    "{}: {e}: out of space, retrying until space is freed (nothing is acked meanwhile)",
                    self.describe(op)
                );
                self.space = Some(SpaceWait::new(parked, Instant::now()));
                self.metrics.disk_full.set(1);
            }
        }
    }

    /// Out of space and the backoff passed: resubmits what was parked.
    fn retry_parked(&mut self, now: Instant) {
        let Some(due) = self.space.as_mut().and_then(|w| w.due(now)) else {
            return;
        };
        self.metrics.disk_full_retries.inc_by(due.len() as u64);
        for p in due {
            let token = match p {
                Parked::Write { op, write } => {
                    let token = self.token(op);
                    self.submit(token, write);
                    token
                }
                Parked::Open { key, create } => self.open_file(key, create),
                Parked::DirSync { batch } => {
                    let q = Queued::Sync { data_only: false };
                    self.file_op(FileKey::Dir, Op::DirSync { batch }, q)
                }
            };
            if let Some(w) = &mut self.space {
                w.retrying(token);
            }
        }
    }

    /// A disk error: the log takes no more writes, and producers still
    /// waiting for acks are refused (their records may not be durable) by
    /// the next [`settle`](Self::settle).
    fn poison(&mut self, why: String) {
        if self.failed.is_none() {
            tracing::error!("log write failed, refusing writes: {why}");
            self.log.poison(why.clone());
            self.metrics.log_failed.set(1);
            self.failed = Some(why);
        }
    }

    /// A graceful stop: what was submitted is made durable on a best-effort
    /// basis (an fdatasync per open segment, not awaited: the worker is
    /// stopping). Records still in the log's buffer are not written.
    pub fn close(mut self) {
        if !self.batches.is_empty() || self.log.end_offset() > self.cut_end {
            tracing::warn!("stopping with log writes in flight");
        }
        let open: Vec<FileKey> = self
            .files
            .keys()
            .copied()
            .filter(|k| matches!(k, FileKey::Log(_)))
            .collect();
        for key in open {
            self.file_op(key, Op::IntervalSync, Queued::Sync { data_only: true });
        }
        self.flush_retry();
    }

    fn token(&mut self, op: Op) -> u64 {
        self.next_token += 1;
        self.ops.insert(self.next_token, op);
        self.next_token
    }

    fn path(&self, key: FileKey) -> PathBuf {
        match key {
            FileKey::Log(base) => self.dir.join(log_name(base)),
            FileKey::Index(base) => self.dir.join(index_name(base)),
            FileKey::Dir => self.dir.clone(),
        }
    }

    fn describe(&self, op: Op) -> String {
        let what = match op {
            Op::Open { key, .. } => return format!("open {}", self.path(key).display()),
            Op::Write { base, .. } => return format!("write {}", log_name(base)),
            Op::DirSync { .. } => "sync data directory",
            Op::ConsumerRead { plan, .. } => return format!("read {}", log_name(plan.base)),
            Op::IndexWrite => "write index",
            Op::Remove => "remove a deleted segment's file",
            Op::Preallocate => "preallocate segment",
            Op::IntervalSync => "sync segment",
            Op::Close => "close",
        };
        what.to_owned()
    }

    /// Opens a file on the storage worker (`create`: a new segment's file,
    /// created empty); requests for it wait until it is open. Returns the
    /// open's token.
    fn open_file(&mut self, key: FileKey, create: bool) -> u64 {
        self.files
            .entry(key)
            .or_insert_with(|| Slot::Opening(Vec::new()));
        let options = match key {
            // O_RDONLY: enough for fsync on a directory.
            FileKey::Dir => OpenOptions::new(),
            _ if create => OpenOptions::read_write_create().truncate(true),
            _ => OpenOptions::new().read(true).write(true),
        };
        let path = self.path(key);
        let token = self.token(Op::Open { key, create });
        self.submit(token, StorageOp::Open { path, options });
        token
    }

    fn opened(&mut self, key: FileKey, id: FileId) {
        let waiting = match self.files.insert(key, Slot::Open(id)) {
            Some(Slot::Opening(waiting)) => waiting,
            _ => Vec::new(),
        };
        for (token, q) in waiting {
            self.submit(token, q.into_op(id));
        }
        if let FileKey::Log(base) = key {
            if self.log.segment_bases().last() == Some(&base) {
                self.preallocate(id, base);
            }
            if let Some(batch) = self.roll_syncs.remove(&base) {
                let q = Queued::Sync { data_only: false };
                self.file_op(FileKey::Dir, Op::DirSync { batch }, q);
            }
        }
    }

    /// Sets the active segment's file to its full size up front, as a hole
    /// (`ftruncate`; no space is taken until written), so an appending
    /// fdatasync has no size change to commit to the file system's journal,
    /// only data. fio on this ext4, one 108-byte write + fdatasync at a
    /// time: 5.4k/s appending, 7.6-8.1k/s into a file already that long;
    /// with 6.9 KB writes both 5.0-5.1k/s (while `fallocate`d space drops
    /// to 3.8k/s: its unwritten extents cost a conversion per sync, so it
    /// is not used). Recovery reads the zero tail as space, not a torn
    /// record. Best effort: a failure only costs that speed.
    ///
    /// Only ever extends: the length is at least the active segment's
    /// logical length now (a record larger than a segment makes its
    /// segment longer than `segment_bytes`), and a later write to it ends
    /// within `segment_bytes` (a segment past that size takes no more
    /// appends), so an `ftruncate` running after any write cuts nothing.
    fn preallocate(&mut self, file: FileId, base: u64) {
        let token = self.token(Op::Preallocate);
        let len = self
            .segment_bytes
            .max(self.log.end_offset().saturating_sub(base));
        self.submit(token, StorageOp::SetLen { file, len });
    }

    /// Submits `q` on the file `key`, opening it (it exists) if needed.
    /// Returns the request's token.
    fn file_op(&mut self, key: FileKey, op: Op, q: Queued) -> u64 {
        let token = self.token(op);
        match self.files.get_mut(&key) {
            Some(Slot::Open(id)) => {
                let id = *id;
                self.submit(token, q.into_op(id));
            }
            Some(Slot::Opening(waiting)) => waiting.push((token, q)),
            None => {
                self.files.insert(key, Slot::Opening(vec![(token, q)]));
                self.open_file(key, false);
            }
        }
        token
    }

    fn close_file(&mut self, key: FileKey) {
        if let Some(Slot::Open(file)) = self.files.remove(&key) {
            let token = self.token(Op::Close);
            self.submit(token, StorageOp::Close { file });
        }
    }

    /// Submits, or queues behind earlier requests the storage worker had no
    /// room for (retried on completions, rounds and ticks).
    fn submit(&mut self, token: u64, op: StorageOp) {
        if self.retry.is_empty() {
            match self.disk.submit(token, op) {
                Ok(()) => {}
                Err(SubmitError::Full(op)) => self.retry.push_back((token, op)),
                Err(SubmitError::Stopped(_)) => {
                    self.poison("the storage worker stopped".to_owned());
                }
            }
        } else {
            self.retry.push_back((token, op));
        }
    }

    fn flush_retry(&mut self) {
        // Requests the client queued when its ring was full go first (the
        // client keeps them in order); then this owner's own retries.
        self.disk.flush_queued();
        while let Some((token, op)) = self.retry.pop_front() {
            match self.disk.submit(token, op) {
                Ok(()) => {}
                Err(SubmitError::Full(op)) => {
                    self.retry.push_front((token, op));
                    return;
                }
                Err(SubmitError::Stopped(_)) => {
                    self.retry.clear();
                    self.poison("the storage worker stopped".to_owned());
                    return;
                }
            }
        }
    }
}

fn refuse(peers: &mut [ResultSink<Msg>], to: usize, conn: ConnId, reason: String) {
    if let Some(sink) = peers.get_mut(to) {
        sink.deliver(Msg::Refuse { conn, reason });
    }
}

#[cfg(test)]
mod tests;
