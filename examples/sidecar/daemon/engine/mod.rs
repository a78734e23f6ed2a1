//! An engine: one application worker that owns the rings of the clients
//! attached to it, their open files and its own WAL, and drives its
//! storage I/O worker. The daemon runs one or more (`shards.rs`); a
//! client stays on its engine for its whole life, and an engine shares
//! nothing with the others but the file claims (`claims.rs`, C1).
//! Everything reaches it as a message: attachments and hang-ups from the
//! attach thread, doorbells, and the storage worker's completions.
//!
//! A write goes: ring -> checked and copied out of shared memory -> WAL
//! batch -> one group-committed WAL write per round (one in flight) ->
//! ACCEPTED -> written to its file (F1) -> group `fdatasync` of the file
//! -> COMPLETED, and the WAL's DONE watermark moves past it. A send goes:
//! ring -> copied out -> WAL batch -> ACCEPTED (its value the operation
//! id, `delivery::op_id` of the engine and the LSN) -> the destination's pool (`send/`) -> acknowledged: COMPLETED, or
//! failed after the policy's bound: COMPLETED with the cause (S1).
//!
//! **Invariant (E1):** nothing is written to a client's file before its
//! WAL record is durable, and no ACCEPTED leaves before that; no
//! COMPLETED leaves before the file's `fdatasync` that covers the write.
//! The one exception is what the client asks for with `op::VOLATILE`: no
//! record, no ACCEPTED, COMPLETED once written (unsynced), yet still in
//! LSN order among the file's writes (it waits for the WAL write in flight
//! before it, as journaled writes do).
//!
//! **Invariant (E2):** the engine reads a client's region only through
//! `Consumer::pop` copies and `Region::copy_out` of ranges the decoder
//! bounded, and writes it only at the completion ring and at read
//! buffers the decoder bounded; garbage gets an error completion, a
//! broken ring protocol a detach, never a panic.

mod complete;
mod file_io;
mod intake;
mod segments;

use super::claims::Claims;
use super::files::Files;
use super::send::{self, Sender};
use crate::layout::{self, Layout, kind, status};
use crate::proto;
use crate::resolve::{FileKey, Root};
use crate::ring::{Consumer, Pop, Producer, RingAt, ring_if_armed};
use crate::shm::{EventFd, Region};
use shared_nothing::io::{
    FileId, NetEvent, OpenOptions, StorageClient, StorageCompletion, StorageOp, SubmitError,
};
use shared_nothing::pool::IoWorkers;
use shared_nothing::prelude::*;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a client's ring is polled after its last request before the
/// engine arms its doorbell.
const SPIN: Duration = Duration::from_micros(50);
/// Requests taken from one client per pass.
const PASS: usize = 64;
/// Operations of one client in flight or waiting in its completion
/// backlog at most; past it the engine stops taking its requests.
const CLIENT_LIMIT: usize = 1024;

/// A new client, from the attach thread.
#[derive(Debug)]
pub struct Attached {
    pub id: u64,
    pub region: Arc<Region>,
    pub to_client: EventFd,
}

#[derive(Debug)]
pub enum Msg {
    Attach(Box<Attached>),
    Doorbell(u64),
    Hangup(u64),
    Disk(StorageCompletion),
    Net(NetEvent),
    Poll,
    /// The daemon stops: take no more requests, and answer on the channel
    /// (with the engine's index) once nothing accepted is outstanding and
    /// a durable DONE covers it all.
    Quiesce(crossbeam_channel::Sender<usize>),
}

/// A send replay found accepted but not acknowledged, to send again.
#[derive(Debug)]
pub struct Resend {
    pub lsn: u64,
    /// Its operation id (`delivery::op_id`).
    pub id: u64,
    /// Its destination's handle.
    pub dest: u64,
    pub data: Vec<u8>,
}

/// What the engine starts with (from replay).
#[derive(Debug)]
pub struct Start {
    /// This engine's index: its operation ids' high bits, its storage
    /// and network worker (`index % count`).
    pub engine: usize,
    /// The plan's I/O workers.
    pub io: IoWorkers,
    pub root: Root,
    /// The WAL's segments, oldest first: `(number, file, highest LSN,
    /// identity)`;
    /// the last is appended to, from `wal_len`.
    pub segments: Vec<(u64, FileId, u64, FileKey)>,
    pub wal_len: u64,
    pub wal_dir: std::path::PathBuf,
    /// Bytes past which a new segment starts.
    pub segment_limit: u64,
    pub next_lsn: u64,
    pub next_file: u32,
    /// The last DONE in the log (what the watermark starts from).
    pub done: u64,
    /// Whether to send (destinations are configured).
    pub net: bool,
    pub dests: Vec<crate::dest::Dest>,
    pub policy: send::Policy,
    /// Sends replay found accepted but not acknowledged, in LSN order.
    pub sends: Vec<Resend>,
    /// The file claims, when more than one engine runs (C1).
    pub claims: Option<Arc<Claims>>,
    /// Files with writes replay left past this WAL's DONE, claimed for
    /// this engine: `(file, highest such LSN)`, released once a durable
    /// DONE passes it.
    pub held: Vec<(FileKey, u64)>,
    /// Where to ask the attach thread to drop a client's socket.
    pub kick: crossbeam_channel::Sender<u64>,
    pub kick_waker: Arc<mio::Waker>,
}

#[derive(Debug)]
pub struct Engine {
    start: Option<Start>,
}

impl Engine {
    /// `None` for a restart after a panic, which `init` refuses (the
    /// state it would need went with the first run).
    pub fn new(start: Option<Start>) -> Engine {
        Engine { start }
    }
}

#[derive(Debug)]
struct Client {
    region: Arc<Region>,
    layout: Layout,
    req: Consumer<8>,
    comp: Producer<4>,
    bell: EventFd,
    backlog: VecDeque<[u64; 4]>,
    handles: HashMap<u64, FileKey>,
    next_handle: u64,
    inflight: usize,
    last_active: Instant,
    hot: bool,
}

#[derive(Debug)]
struct WriteOp {
    client: u64,
    user: u64,
    key: FileKey,
    offset: u64,
    data: Vec<u8>,
    /// Not journaled (`op::VOLATILE`): completed once written, unsynced.
    volatile: bool,
}

/// A send waiting for its WAL record.
#[derive(Debug)]
struct SendOp {
    client: u64,
    user: u64,
    /// Its operation id (`delivery::op_id`).
    id: u64,
    dest: u64,
    data: Vec<u8>,
}

#[derive(Debug)]
enum Pend {
    Wal {
        lsns: Vec<u64>,
        files: Vec<FileKey>,
        len: u64,
        segment: u64,
        /// The segment's first batch (W3).
        first: bool,
        /// The DONE this batch group-commits, if it does.
        durable_done: Option<u64>,
    },
    SegmentOpen {
        no: u64,
    },
    SegmentDirSync {
        no: u64,
    },
    Data {
        lsn: u64,
    },
    DataSync {
        key: FileKey,
        lsns: Vec<u64>,
    },
    Read {
        client: u64,
        user: u64,
        at: usize,
    },
    Sync {
        client: u64,
        user: u64,
    },
    Open {
        key: FileKey,
    },
    Close,
    /// A retired segment's removal: clients may have its identity again.
    Retired {
        key: Option<FileKey>,
    },
}

#[derive(Debug)]
pub struct State {
    engine: usize,
    io: StorageClient,
    me: ResultSink<Msg>,
    root: Root,
    kick: crossbeam_channel::Sender<u64>,
    kick_waker: Arc<mio::Waker>,
    clients: HashMap<u64, Client>,
    files: Files,
    pend: HashMap<u64, Pend>,
    next_token: u64,
    writes: HashMap<u64, WriteOp>,
    sends: HashMap<u64, SendOp>,
    /// Accepted sends on their way: who to tell (none for replayed ones).
    send_owner: HashMap<u64, (u64, u64)>,
    sender: Option<Sender>,
    /// Volatile sends were queued this round: the sender flushes once at
    /// its end.
    sends_due: bool,
    /// Accepted or journaling writes not yet completed.
    outstanding: BTreeSet<u64>,
    segs: segments::Segments,
    wal_len: u64,
    wal_busy: bool,
    batch: Vec<u8>,
    batch_lsns: Vec<u64>,
    batch_files: Vec<FileKey>,
    next_lsn: u64,
    next_file: u32,
    done_journaled: u64,
    /// The highest LSN with a WAL record (volatile writes have none).
    journaled_max: u64,
    /// Whether buffered `RWF_NOWAIT` writes may work here (until refused).
    nowait_writes: bool,
    dirty: Vec<FileKey>,
    poll_queued: bool,
    /// The file claims, with more than one engine (C1).
    claims: Option<Arc<Claims>>,
    /// Claimed files closed here, waiting for a durable DONE past their
    /// last journaled write: `(file, that LSN)`.
    releasing: Vec<(FileKey, u64)>,
    /// The highest DONE known durable in this WAL (replay's, then each
    /// group-committed one); it never goes back (W3).
    durable_done: u64,
    /// Stopping: no more requests are taken.
    stopping: bool,
    /// Whom to tell once everything is settled.
    quiesce: Option<crossbeam_channel::Sender<usize>>,
}

impl Worker for Engine {
    type State = State;
    type Message = Msg;
    type Reply = ();

    fn init(&mut self) -> Result<State> {
        let s = self
            .start
            .take()
            .ok_or_else(|| Error::InvalidConfig("sidecar engine restarted".into()))?;
        let storage = s.io.storage(s.engine % s.io.storage_count().max(1));
        let mut io = storage.client(ResultSink::to_current_worker(Msg::Disk)?)?;
        let mut sender = if s.net {
            Some(Sender::new(
                s.io.network(s.engine)
                    .client(ResultSink::to_current_worker(Msg::Net)?)?,
                s.dests,
                s.policy,
            ))
        } else {
            None
        };
        // The WAL directory, for the fsync after a segment is created (its
        // open's completion carries no pending entry and is dropped).
        let dir_id = io.open(u64::MAX, &s.wal_dir, OpenOptions::new()).ok();
        let mut outstanding = BTreeSet::new();
        if let Some(sender) = &mut sender {
            for r in s.sends {
                outstanding.insert(r.lsn);
                sender.enqueue(r.dest, r.lsn, r.id, r.data);
            }
            sender.flush();
        }
        Ok(State {
            engine: s.engine,
            io,
            me: ResultSink::to_current_worker(|m| m)?,
            root: s.root,
            kick: s.kick,
            kick_waker: s.kick_waker,
            clients: HashMap::new(),
            files: HashMap::new(),
            pend: HashMap::new(),
            next_token: 0,
            writes: HashMap::new(),
            sends: HashMap::new(),
            send_owner: HashMap::new(),
            sender,
            sends_due: false,
            outstanding,
            segs: segments::Segments {
                dir_id,
                dir: s.wal_dir,
                list: s
                    .segments
                    .into_iter()
                    .map(|(no, id, max_lsn, key)| segments::Segment {
                        no,
                        id,
                        max_lsn,
                        key: Some(key),
                    })
                    .collect(),
                limit: s.segment_limit,
                // Each start writes the prefix (PATHs, a DONE) again before
                // any older segment may go (W3).
                fresh: true,
                rotating: false,
                prefix_due: true,
                durable_done: 0,
                done_sync_due: false,
            },
            wal_len: s.wal_len,
            wal_busy: false,
            batch: Vec::new(),
            batch_lsns: Vec::new(),
            batch_files: Vec::new(),
            next_lsn: s.next_lsn,
            next_file: s.next_file,
            done_journaled: s.done,
            journaled_max: s.next_lsn - 1,
            nowait_writes: true,
            dirty: Vec::new(),
            poll_queued: false,
            claims: s.claims,
            releasing: s.held,
            durable_done: s.done,
            stopping: false,
            quiesce: None,
        })
    }

    fn handle_message(&mut self, st: &mut State, m: Envelope<Msg>) -> Result<()> {
        match m.payload {
            Msg::Attach(_) | Msg::Doorbell(_) if st.stopping => {}
            Msg::Attach(a) => st.attach(*a),
            Msg::Doorbell(id) => {
                if let Some(c) = st.clients.get_mut(&id) {
                    c.region
                        .word(layout::DAEMON_ARMED)
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    c.hot = true;
                    c.last_active = Instant::now();
                    st.drain(id);
                }
            }
            Msg::Hangup(id) => st.detach(id, "hung up"),
            Msg::Disk(c) => st.disk(c),
            Msg::Net(ev) => {
                if let Some(sender) = &mut st.sender {
                    sender.event(ev);
                }
                st.sent();
            }
            Msg::Poll => st.poll_queued = false,
            Msg::Quiesce(tx) => {
                st.stopping = true;
                st.quiesce = Some(tx);
                st.round();
            }
        }
        Ok(())
    }

    fn after_round(&mut self, st: &mut State) -> Result<()> {
        st.round();
        Ok(())
    }

    fn tick(&mut self, st: &mut State) -> Result<()> {
        if let Some(sender) = &mut st.sender {
            sender.tick();
        }
        st.sent();
        // Completion rings that were full: retry.
        st.round();
        Ok(())
    }
}

impl State {
    fn attach(&mut self, a: Attached) {
        let layout = Layout::standard();
        let req = Consumer::new(
            a.region.clone(),
            RingAt {
                off: layout.req_off,
                slots: layout.req_slots,
                head: layout::REQ_HEAD,
            },
        );
        let comp = Producer::new(
            a.region.clone(),
            RingAt {
                off: layout.comp_off,
                slots: layout.comp_slots,
                head: layout::COMP_HEAD,
            },
        );
        tracing::info!(
            client = a.id,
            engine = self.engine,
            bytes = a.region.len(),
            "client attached"
        );
        self.clients.insert(
            a.id,
            Client {
                region: a.region,
                layout,
                req,
                comp,
                bell: a.to_client,
                backlog: VecDeque::new(),
                handles: HashMap::new(),
                next_handle: 1,
                inflight: 0,
                last_active: Instant::now(),
                hot: true,
            },
        );
        self.drain(a.id);
    }

    /// Drops a client: its handles close, its region is unmapped. Its
    /// accepted writes still complete (their completions go nowhere).
    fn detach(&mut self, id: u64, why: &str) {
        let Some(c) = self.clients.remove(&id) else {
            return;
        };
        for key in c.handles.into_values() {
            self.release(key);
        }
        let _ = self.kick.send(id);
        let _ = self.kick_waker.wake();
        tracing::info!(client = id, why, "client detached; region freed");
    }

    fn token(&mut self, p: Pend) -> u64 {
        self.next_token += 1;
        self.pend.insert(self.next_token, p);
        self.next_token
    }

    /// Submits to the storage worker; on refusal the pending entry is
    /// taken back and the error returned.
    fn submit(&mut self, p: Pend, op: StorageOp) -> std::result::Result<(), (Pend, i32)> {
        let t = self.token(p);
        match self.io.submit(t, op) {
            Ok(()) => Ok(()),
            Err(e) => {
                let p = self.pend.remove(&t).expect("just inserted");
                let s = match e {
                    SubmitError::Full(_) => -libc::EAGAIN,
                    _ => status::SHUTDOWN,
                };
                Err((p, s))
            }
        }
    }

    fn post(&mut self, client: u64, user: u64, k: u32, s: i32, value: u64) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.backlog.push_back(proto::completion(user, k, s, value));
        }
    }

    /// An operation of `client` finished (for its flow control).
    fn finished(&mut self, client: u64) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.inflight = c.inflight.saturating_sub(1);
            c.hot = true;
        }
    }

    /// Takes requests from a client's ring, as many as its limit allows.
    fn drain(&mut self, id: u64) -> usize {
        let mut taken = 0;
        loop {
            let Some(c) = self.clients.get_mut(&id) else {
                return taken;
            };
            if taken >= PASS || c.inflight + c.backlog.len() >= CLIENT_LIMIT {
                c.req.release();
                return taken;
            }
            let words = match c.req.pop() {
                Pop::Empty => {
                    c.req.release();
                    return taken;
                }
                Pop::Item(w) => w,
                Pop::Broken { seen, expected } => {
                    tracing::warn!(client = id, seen, expected, "request ring sequence broken");
                    c.backlog.push_back(proto::completion(
                        0,
                        kind::COMPLETED,
                        status::BAD_SEQUENCE,
                        expected,
                    ));
                    self.flush_client(id);
                    self.detach(id, "broke the ring protocol");
                    return taken;
                }
            };
            taken += 1;
            c.last_active = Instant::now();
            let layout = c.layout;
            match proto::decode(&words, &layout) {
                Ok((user, r)) => self.request(id, user, r),
                Err((user, s)) => self.post(id, user, kind::COMPLETED, s, 0),
            }
        }
    }

    /// Answers the sends that finished (S1) and lets the watermark pass
    /// them.
    fn sent(&mut self) {
        let Some(sender) = &mut self.sender else {
            return;
        };
        for o in sender.take_outcomes() {
            self.outstanding.remove(&o.lsn);
            match self.send_owner.remove(&o.lsn) {
                Some((client, user)) => {
                    self.post(
                        client,
                        user,
                        kind::COMPLETED,
                        o.status,
                        u64::from(o.attempts),
                    );
                    self.finished(client);
                }
                None if o.status != status::OK => tracing::error!(
                    op = o.lsn,
                    cause = %status::describe(o.status),
                    attempts = o.attempts,
                    "a replayed send failed"
                ),
                None => {}
            }
        }
    }

    /// Once per round: the WAL batch, file writes and syncs, completions,
    /// and the spinning clients' rings.
    fn round(&mut self) {
        let now = Instant::now();
        // A stopping engine takes no more requests.
        let hot: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.hot && !self.stopping)
            .map(|(id, _)| *id)
            .collect();
        for id in hot {
            if self.drain(id) > 0 {
                continue;
            }
            let Some(c) = self.clients.get_mut(&id) else {
                continue;
            };
            if c.inflight + c.backlog.len() >= CLIENT_LIMIT {
                // Woken again when an operation finishes.
                c.hot = false;
            } else if now.duration_since(c.last_active) > SPIN {
                let armed = c.region.word(layout::DAEMON_ARMED);
                armed.store(1, std::sync::atomic::Ordering::SeqCst);
                if c.req.is_empty_after_arming() {
                    c.hot = false;
                } else {
                    armed.store(0, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        self.settle_claims();
        if std::mem::take(&mut self.sends_due)
            && let Some(s) = &mut self.sender
        {
            s.flush();
        }
        self.flush_wal();
        self.retire_segments();
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_by_key(|k| (k.dev, k.ino));
        dirty.dedup();
        for key in dirty {
            self.pump(key);
            self.run_deferred(key);
        }
        let ids: Vec<u64> = self.clients.keys().copied().collect();
        for id in ids {
            self.flush_client(id);
        }
        if !self.poll_queued && !self.stopping && self.clients.values().any(|c| c.hot) {
            self.poll_queued = true;
            self.me.deliver(Msg::Poll);
        }
        self.check_quiesced();
    }

    /// Moves a client's completion backlog into its ring, and rings its
    /// doorbell once if it sleeps.
    fn flush_client(&mut self, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let mut pushed = false;
        while let Some(w) = c.backlog.front() {
            if !c.comp.push(w) {
                break;
            }
            c.backlog.pop_front();
            pushed = true;
        }
        if pushed {
            ring_if_armed(&c.region, layout::CLIENT_ARMED, &c.bell);
        }
    }
}
