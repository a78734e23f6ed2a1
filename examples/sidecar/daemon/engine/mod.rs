//! The engine: one application worker that owns every attached client's
//! rings, the open files and the WAL, and drives the storage I/O worker.
//! Everything reaches it as a message: attachments and hang-ups from the
//! attach thread, doorbells, and the storage worker's completions.
//!
//! A write goes: ring -> checked and copied out of shared memory -> WAL
//! batch -> one group-committed WAL write per round (one in flight) ->
//! ACCEPTED -> written to its file (F1) -> group `fdatasync` of the file
//! -> COMPLETED, and the WAL's DONE watermark moves past it. A send goes:
//! ring -> copied out -> WAL batch -> ACCEPTED (its value the operation
//! id) -> the destination's pool (`send/`) -> acknowledged: COMPLETED, or
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
mod segments;

use super::files::{Deferred, File, Files, Later};
use super::send::{self, Sender};
use crate::layout::{self, Layout, kind, status};
use crate::proto::{self, Request};
use crate::resolve::{FileKey, Root};
use crate::ring::{Consumer, Pop, Producer, RingAt, ring_if_armed};
use crate::shm::{EventFd, Region};
use crate::wal;
use shared_nothing::io::{
    Durability, FileId, IoBuf, NetEvent, OpenOptions, StorageClient, StorageCompletion, StorageOp,
    StorageOutput, SubmitError,
};
use shared_nothing::pool::IoWorkers;
use shared_nothing::prelude::*;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::fd::AsRawFd;
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
}

/// What the engine starts with (from replay).
#[derive(Debug)]
pub struct Start {
    /// The plan's I/O workers: storage 0 for files and the WAL, network 0
    /// for sends.
    pub io: IoWorkers,
    pub root: Root,
    /// The WAL's segments, oldest first: `(number, file, highest LSN)`;
    /// the last is appended to, from `wal_len`.
    pub segments: Vec<(u64, FileId, u64)>,
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
    /// Sends replay found accepted but not acknowledged, in LSN order:
    /// `(lsn, destination handle, data)`.
    pub sends: Vec<(u64, u64, Vec<u8>)>,
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
}

#[derive(Debug)]
pub struct State {
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
        let mut io =
            s.io.storage(0)
                .client(ResultSink::to_current_worker(Msg::Disk)?)?;
        let mut sender = if s.net {
            Some(Sender::new(
                s.io.network(0)
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
            for (lsn, handle, data) in s.sends {
                outstanding.insert(lsn);
                sender.enqueue(handle, lsn, data);
            }
            sender.flush();
        }
        Ok(State {
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
            outstanding,
            segs: segments::Segments {
                dir_id,
                dir: s.wal_dir,
                list: s
                    .segments
                    .into_iter()
                    .map(|(no, id, max_lsn)| segments::Segment { no, id, max_lsn })
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
        })
    }

    fn handle_message(&mut self, st: &mut State, m: Envelope<Msg>) -> Result<()> {
        match m.payload {
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
        tracing::info!(client = a.id, bytes = a.region.len(), "client attached");
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

    fn request(&mut self, id: u64, user: u64, r: Request) {
        let handle_key =
            |st: &State, h: u64| st.clients.get(&id).and_then(|c| c.handles.get(&h).copied());
        match r {
            Request::Open { at, len, create } => {
                let path = self.clients[&id].region.copy_out(at, len);
                match self.open(&path, create) {
                    Ok(key) => {
                        let c = self.clients.get_mut(&id).expect("client");
                        let h = c.next_handle;
                        c.next_handle += 1;
                        c.handles.insert(h, key);
                        self.post(id, user, kind::COMPLETED, status::OK, h);
                    }
                    Err(s) => self.post(id, user, kind::COMPLETED, s, 0),
                }
            }
            Request::Write {
                handle,
                offset,
                at,
                len,
                volatile,
            } => match handle_key(self, handle) {
                Some(key) => self.write(id, user, key, Some(offset), (at, len), volatile),
                None => self.post(id, user, kind::COMPLETED, status::BAD_HANDLE, 0),
            },
            Request::Append {
                handle,
                at,
                len,
                volatile,
            } => match handle_key(self, handle) {
                Some(key) => self.write(id, user, key, None, (at, len), volatile),
                None => self.post(id, user, kind::COMPLETED, status::BAD_HANDLE, 0),
            },
            Request::Read {
                handle,
                offset,
                at,
                len,
            } => self.defer(id, user, handle, Later::Read { offset, at, len }),
            Request::Sync { handle, data_only } => {
                self.defer(id, user, handle, Later::Sync { data_only })
            }
            Request::Close { handle } => self.defer(id, user, handle, Later::Close { handle }),
            Request::Dest { at, len } => {
                let name = self.clients[&id].region.copy_out(at, len);
                match self.sender.as_ref().and_then(|s| s.find(&name)) {
                    Some(h) => self.post(id, user, kind::COMPLETED, status::OK, h),
                    None => self.post(id, user, kind::COMPLETED, status::NO_DEST, 0),
                }
            }
            Request::Send { dest, at, len } => self.journal_send(id, user, dest, at, len),
        }
    }

    /// Journals a send; ACCEPTED and the hand-over to its destination's
    /// pool follow the WAL write (`complete.rs`).
    fn journal_send(&mut self, id: u64, user: u64, dest: u64, at: usize, len: usize) {
        let Some(name) = self.sender.as_ref().and_then(|s| s.name(dest)) else {
            self.post(id, user, kind::COMPLETED, status::NO_DEST, 0);
            return;
        };
        let data = self.clients[&id].region.copy_out(at, len);
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        wal::encode_send(&mut self.batch, lsn, name.as_bytes(), &data);
        self.batch_lsns.push(lsn);
        self.outstanding.insert(lsn);
        self.sends.insert(
            lsn,
            SendOp {
                client: id,
                user,
                dest,
                data,
            },
        );
        if let Some(c) = self.clients.get_mut(&id) {
            c.inflight += 1;
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

    /// Opens (or shares) the file `path` names beneath the root.
    fn open(&mut self, path: &[u8], create: bool) -> std::result::Result<FileKey, i32> {
        let (fd, key, len) = self.root.open_beneath(path, create)?;
        if let Some(f) = self.files.get_mut(&key) {
            f.refs += 1;
            return Ok(key);
        }
        // The storage worker opens the very file openat2 resolved, through
        // its descriptor's magic link: no second path walk.
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let t = self.token(Pend::Open { key });
        let opts = OpenOptions::new().read(true).write(true);
        let id = match self.io.open(t, &proc_path, opts) {
            Ok(id) => id,
            Err(_) => {
                self.pend.remove(&t);
                return Err(-libc::EAGAIN);
            }
        };
        self.next_file += 1;
        let mut f = File::new(id, self.next_file, path.to_vec(), len, fd);
        f.refs = 1;
        self.files.insert(key, f);
        Ok(key)
    }

    fn write(
        &mut self,
        id: u64,
        user: u64,
        key: FileKey,
        offset: Option<u64>,
        (at, len): (usize, usize),
        volatile: bool,
    ) {
        let f = self.files.get_mut(&key).expect("handle names an open file");
        let offset = offset.unwrap_or(f.end);
        let Some(end) = offset
            .checked_add(len as u64)
            .filter(|&e| e <= i64::MAX as u64)
        else {
            self.post(id, user, kind::COMPLETED, status::BAD_RANGE, 0);
            return;
        };
        f.end = f.end.max(end);
        let data = self.clients[&id].region.copy_out(at, len);
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        // A volatile write takes its place in the batch's LSN order (so it
        // reaches the file after the journaled writes before it, F1) but
        // no record.
        if !volatile {
            if !f.journaled {
                wal::encode_path(&mut self.batch, f.file_no, &f.path);
                f.journaled = true;
                self.batch_files.push(key);
            }
            wal::encode_write(&mut self.batch, lsn, f.file_no, offset, &data);
        }
        f.unapplied.insert(lsn);
        self.batch_lsns.push(lsn);
        self.outstanding.insert(lsn);
        self.writes.insert(
            lsn,
            WriteOp {
                client: id,
                user,
                key,
                offset,
                data,
                volatile,
            },
        );
        if let Some(c) = self.clients.get_mut(&id) {
            c.inflight += 1;
        }
    }

    fn defer(&mut self, id: u64, user: u64, handle: u64, what: Later) {
        let Some(key) = self
            .clients
            .get(&id)
            .and_then(|c| c.handles.get(&handle).copied())
        else {
            self.post(id, user, kind::COMPLETED, status::BAD_HANDLE, 0);
            return;
        };
        let after = self.next_lsn - 1;
        if let Some(c) = self.clients.get_mut(&id) {
            c.inflight += 1;
        }
        let f = self.files.get_mut(&key).expect("handle names an open file");
        f.deferred.push_back(Deferred {
            after,
            client: id,
            user,
            what,
        });
        self.dirty.push(key);
    }

    /// A read the page cache holds whole, done here and now: straight
    /// into the client's buffer (M3), no storage round trip. `None` sends
    /// it to the storage worker: not cached, cached in part, or short for
    /// a reason other than the end of the file.
    fn read_cached(
        &self,
        key: FileKey,
        client: u64,
        at: usize,
        len: usize,
        offset: u64,
    ) -> Option<usize> {
        use std::os::fd::AsFd;
        let f = self.files.get(&key)?;
        let c = self.clients.get(&client)?;
        let n = c.region.read_cached(f.fd.as_fd(), at, len, offset).ok()?;
        (n == len || offset.saturating_add(n as u64) >= f.end).then_some(n)
    }

    fn run_deferred(&mut self, key: FileKey) {
        let Some(f) = self.files.get_mut(&key) else {
            return;
        };
        let id = f.id;
        for d in f.take_runnable() {
            if !self.clients.contains_key(&d.client) {
                continue;
            }
            let (client, user) = (d.client, d.user);
            let r = match d.what {
                Later::Read { offset, at, len } => {
                    match self.read_cached(key, client, at, len, offset) {
                        Some(n) => {
                            self.post(client, user, kind::COMPLETED, status::OK, n as u64);
                            self.finished(client);
                            Ok(())
                        }
                        None => self.submit(
                            Pend::Read { client, user, at },
                            StorageOp::ReadAt {
                                file: id,
                                offset,
                                len,
                                buf: IoBuf::Vec(Vec::with_capacity(len)),
                            },
                        ),
                    }
                }
                Later::Sync { data_only } => self.submit(
                    Pend::Sync { client, user },
                    StorageOp::Sync {
                        file: id,
                        data_only,
                    },
                ),
                Later::Close { handle } => {
                    if let Some(k) = self
                        .clients
                        .get_mut(&client)
                        .and_then(|c| c.handles.remove(&handle))
                    {
                        self.release(k);
                    }
                    self.post(client, user, kind::COMPLETED, status::OK, 0);
                    self.finished(client);
                    Ok(())
                }
            };
            if let Err((_, s)) = r {
                self.post(client, user, kind::COMPLETED, s, 0);
                self.finished(client);
            }
        }
        self.maybe_close(key);
    }

    /// One handle of the file is gone.
    fn release(&mut self, key: FileKey) {
        if let Some(f) = self.files.get_mut(&key) {
            f.refs = f.refs.saturating_sub(1);
        }
        self.maybe_close(key);
    }

    fn maybe_close(&mut self, key: FileKey) {
        if !self.files.get(&key).is_some_and(File::idle) {
            return;
        }
        let f = self.files.remove(&key).expect("checked");
        let _ = self.submit(Pend::Close, StorageOp::Close { file: f.id });
    }

    /// Once per round: the WAL batch, file writes and syncs, completions,
    /// and the spinning clients' rings.
    fn round(&mut self) {
        let now = Instant::now();
        let hot: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.hot)
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
        if !self.poll_queued && self.clients.values().any(|c| c.hot) {
            self.poll_queued = true;
            self.me.deliver(Msg::Poll);
        }
    }

    /// Writes a ready volatile write into the page cache on this thread
    /// if that needs no wait (`pwritev2(RWF_NOWAIT)`); `Some` only when
    /// all of it went.
    fn write_cached(&mut self, key: FileKey, lsn: u64) -> Option<usize> {
        use std::os::fd::AsRawFd;
        if !self.nowait_writes {
            return None;
        }
        let f = self.files.get(&key)?;
        let w = self.writes.get(&lsn)?;
        let iov = libc::iovec {
            iov_base: w.data.as_ptr() as *mut libc::c_void,
            iov_len: w.data.len(),
        };
        // SAFETY: the iovec names `w.data`'s initialised bytes, which live
        // (borrowed from `self`) for the call; the kernel only reads them.
        let n = unsafe {
            libc::pwritev2(
                f.fd.as_raw_fd(),
                &iov,
                1,
                i64::try_from(w.offset).ok()?,
                libc::RWF_NOWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            if e == Some(libc::EOPNOTSUPP) || e == Some(libc::EINVAL) {
                // This kernel or file system cannot; stop asking.
                tracing::info!(
                    "buffered RWF_NOWAIT writes unsupported here: volatile writes go to the storage worker"
                );
                self.nowait_writes = false;
            }
            return None;
        }
        (n as usize == w.data.len()).then_some(n as usize)
    }

    /// Starts a file's ready writes (F1) and its group sync.
    fn pump(&mut self, key: FileKey) {
        let Some(f) = self.files.get_mut(&key) else {
            return;
        };
        let id = f.id;
        let ready = f.take_ready();
        let sync = if !f.syncing && !f.unsynced.is_empty() && f.inflight.is_empty() {
            f.syncing = true;
            Some(std::mem::take(&mut f.unsynced))
        } else {
            None
        };
        for lsn in ready {
            let Some(w) = self.writes.get(&lsn) else {
                continue;
            };
            // A volatile write the page cache takes without waiting is
            // done here; anything else goes to the storage worker.
            if w.volatile
                && let Some(n) = self.write_cached(key, lsn)
            {
                self.finish(Pend::Data { lsn }, Ok(StorageOutput::Written(n)), None);
                continue;
            }
            let Some(w) = self.writes.get_mut(&lsn) else {
                continue;
            };
            // The bytes go with the request: nothing reads them after this.
            let op = StorageOp::WriteAt {
                file: id,
                offset: w.offset,
                buf: IoBuf::Vec(std::mem::take(&mut w.data)),
                durability: Durability::Buffered,
            };
            if let Err((p, s)) = self.submit(Pend::Data { lsn }, op) {
                self.finish(p, Err(s), None);
            }
        }
        if let Some(lsns) = sync {
            let op = StorageOp::Sync {
                file: id,
                data_only: true,
            };
            if let Err((p, s)) = self.submit(Pend::DataSync { key, lsns }, op) {
                self.finish(p, Err(s), None);
            }
        }
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
