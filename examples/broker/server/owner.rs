//! The log owner: the one worker that appends, commits and reads.
//!
//! Records arriving in one batch of messages are appended, then committed
//! with a single [`Committer::after_batch`] (one fdatasync for all of them
//! under `--fsync always`). Acks below the committed offset go back to the
//! connection workers in offset order, which is also each connection's
//! order; consumers are pushed new frames by the same commit.

use super::Msg;
use crate::commit::Committer;
use crate::config::Config;
use crate::log::{Cursor, DirLock, FsDir, Log, LogConfig};
use crate::protocol::{self, FRAME_HEADER};
use crate::stats::Stats;
use shared_nothing::io::ConnId;
use shared_nothing::worker::ResultSink;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sparse index density: at most this many bytes walked by `locate`.
const INDEX_INTERVAL: u32 = 4096;
/// Appends are gathered up to this size before a write.
const WRITE_BUFFER: usize = 1 << 20;
/// Consumer frames per push; a consumer has one push in flight at a time,
/// so a slow one holds at most this much of the owner's output.
const PUSH_BYTES: usize = 256 << 10;

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
}

pub struct Owner {
    log: Log<FsDir>,
    _lock: DirLock,
    committer: Committer,
    /// Appended since the last commit.
    dirty: bool,
    /// A disk error: no more appends or acks.
    failed: Option<String>,
    unacked: Vec<Unacked>,
    consumers: HashMap<ConnId, Consumer>,
    stats: Stats,
    stats_every: Option<Duration>,
    window_start: Instant,
}

impl Owner {
    /// Opens (and recovers) the log under `cfg.dir`.
    ///
    /// # Errors
    /// A message for the user: the directory, its lock or the log failed.
    pub fn open(cfg: &Config) -> Result<Owner, String> {
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
        let (log, recovery) =
            Log::open(dir, log_cfg).map_err(|e| format!("open log in {shown}: {e}"))?;
        if recovery != Default::default() {
            eprintln!("broker: recovered the log: {recovery:?}");
        }
        eprintln!(
            "broker: log {shown}: offsets {}..{}",
            log.start_offset(),
            log.end_offset()
        );
        let now = Instant::now();
        Ok(Owner {
            log,
            _lock: lock,
            committer: Committer::new(cfg.fsync, now),
            dirty: false,
            failed: None,
            unacked: Vec::new(),
            consumers: HashMap::new(),
            stats: Stats::new().map_err(|e| e.to_string())?,
            stats_every: cfg.stats_interval,
            window_start: now,
        })
    }

    pub fn on_message(&mut self, msg: Msg, peers: &mut [ResultSink<Msg>]) {
        match msg {
            Msg::Append {
                from,
                conn,
                frames,
                count,
                arrived,
            } => self.append(from, conn, &frames, count, arrived, peers),
            Msg::Subscribe { from, conn, offset } => match self.log.locate(offset) {
                Ok(cursor) => {
                    self.consumers.insert(
                        conn,
                        Consumer {
                            from,
                            cursor,
                            in_flight: false,
                        },
                    );
                    self.push(conn, peers);
                }
                Err(e) => refuse(peers, from, conn, e.to_string()),
            },
            Msg::Credit { conn } => {
                if let Some(c) = self.consumers.get_mut(&conn) {
                    c.in_flight = false;
                    self.push(conn, peers);
                }
            }
            Msg::Unsubscribe { conn } => {
                self.consumers.remove(&conn);
            }
            other => eprintln!("broker: log owner ignored {other:?}"),
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
                    self.dirty = true;
                }
                Err(e) => {
                    // Records already appended from this message are not
                    // acked either: the commit below will fail too.
                    self.failed = Some(e.to_string());
                    eprintln!("broker: log append failed, refusing writes: {e}");
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

    /// Group commit of everything appended since the last one; releases
    /// acks and wakes consumers.
    pub fn commit(&mut self, peers: &mut [ResultSink<Msg>]) {
        if !self.dirty || self.failed.is_some() {
            return;
        }
        self.dirty = false;
        let now = Instant::now();
        let line = match self.committer.after_batch(&mut self.log, now) {
            Ok(line) => line,
            Err(e) => return self.fail(e.to_string(), peers),
        };
        // Everything appended is below the line after a successful commit;
        // keep the check so an ack is never sent early.
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.unacked.drain(..).partition(|u| u.last < line);
        self.unacked = waiting;
        for u in ready {
            let latency = now.saturating_duration_since(u.arrived);
            self.stats.record_ack(u.bytes, latency);
            for _ in 1..u.count {
                self.stats.record_ack(0, latency);
            }
            if let Some(sink) = peers.get_mut(u.from) {
                sink.deliver(Msg::Acks {
                    conn: u.conn,
                    bytes: u.acks,
                });
            }
        }
        if let Err(e) = self.log.enforce_retention() {
            eprintln!("broker: retention failed: {e}");
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

    /// Sends the consumer its next chunk of committed frames, if it has no
    /// chunk in flight and there is anything new.
    fn push(&mut self, conn: ConnId, peers: &mut [ResultSink<Msg>]) {
        let Some(c) = self.consumers.get_mut(&conn) else {
            return;
        };
        if c.in_flight {
            return;
        }
        let mut out = Vec::new();
        match self.log.read_frames(&mut c.cursor, PUSH_BYTES, &mut out) {
            Ok(0) => {}
            Ok(_) => {
                c.in_flight = true;
                if let Some(sink) = peers.get_mut(c.from) {
                    sink.deliver(Msg::Frames { conn, bytes: out });
                }
            }
            Err(e) => {
                let from = c.from;
                self.consumers.remove(&conn);
                refuse(peers, from, conn, e.to_string());
            }
        }
    }

    /// Time-driven work: `interval` syncs and the stats line.
    pub fn tick(&mut self, peers: &mut [ResultSink<Msg>]) {
        let now = Instant::now();
        if self.failed.is_none() {
            if let Err(e) = self.committer.tick(&mut self.log, now) {
                self.fail(e.to_string(), peers);
            }
        }
        if let Some(every) = self.stats_every {
            let window = now.saturating_duration_since(self.window_start);
            if window >= every {
                println!("{}", self.stats.take().line(window, self.consumers.len()));
                self.window_start = now;
            }
        }
    }

    /// A disk error: refuse the producers still waiting for acks (their
    /// records may not be durable) and take no more writes.
    fn fail(&mut self, why: String, peers: &mut [ResultSink<Msg>]) {
        eprintln!("broker: log commit failed, refusing writes: {why}");
        for u in self.unacked.drain(..) {
            refuse(peers, u.from, u.conn, format!("log failed: {why}"));
        }
        self.failed = Some(why);
    }

    /// Syncs the log on a graceful stop.
    pub fn close(self) {
        if let Err(e) = self.log.close() {
            eprintln!("broker: closing the log: {e}");
        }
    }
}

fn refuse(peers: &mut [ResultSink<Msg>], to: usize, conn: ConnId, reason: String) {
    if let Some(sink) = peers.get_mut(to) {
        sink.deliver(Msg::Refuse { conn, reason });
    }
}
