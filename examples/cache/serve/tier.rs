//! The owner's disk I/O: what the engine asks of its disk tier, done on
//! the pool's storage I/O worker through the owner's own
//! `StorageClient`, whose completions come back into the owner's loop as
//! [`Msg::Disk`] (a `ResultSink::to_current_worker`), so the owner never
//! waits on the disk.
//!
//! Writes: the engine's batch (D3) is written as one file per new chunk
//! (open, write, close, submitted together), then, once every chunk file
//! is written, its manifest records as one append; the batch's requests
//! are answered when that append completes. Reads: a GET piece whose
//! chunks are not in memory loads each chunk file whole (a chunk is
//! checked against its hash, so it is read whole even for a short
//! range), and the piece is cut once all have arrived. Removals are
//! submitted as the engine releases files; their completions are only
//! counted when they fail.

use super::{Answer, Caller, Msg, NodeState, reply};
use crate::disk::{ChunkFile, chunk_name};
use crate::engine::{CHUNK, ChunkHash, ChunkWrite, Read};
use crate::http::Want;
use shared_nothing::io::{
    Durability, FileId, OpenOptions, StorageClient, StorageCompletion, StorageOp, StorageOutput,
    StorageWorker,
};
use shared_nothing::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const TAG_SHIFT: u32 = 60;
const T_OTHER: u64 = 0;
const T_WRITE: u64 = 1 << TAG_SHIFT;
const T_RECORD: u64 = 2 << TAG_SHIFT;
const T_LOAD: u64 = 3 << TAG_SHIFT;
const T_FILL: u64 = 4 << TAG_SHIFT;
const INDEX: u64 = (1 << TAG_SHIFT) - 1;
/// Loads one read may go through before it gives up (a chunk it needs
/// was loaded and then evicted again, more than this many times).
const READ_ROUNDS: u8 = 4;

/// A GET's first piece carries the metadata.
#[derive(Clone, Copy, Debug)]
pub struct First {
    pub size: u64,
    pub chunks: u64,
    pub flags: u32,
    pub want: Want,
}

/// A read waiting for chunk files.
#[derive(Debug)]
struct PendingRead {
    caller: Caller,
    key: Vec<u8>,
    id: u64,
    offset: u64,
    len: u64,
    first: Option<First>,
    waiting: usize,
    loaded: Vec<(ChunkHash, Vec<u8>)>,
    rounds: u8,
}

/// What an answered request was (its answer on success).
#[derive(Clone, Copy, Debug)]
pub enum Ticket {
    Store,
    Delete,
}

/// One owner's disk tier I/O.
#[derive(Debug)]
pub struct DiskIo {
    client: StorageClient,
    chunks_dir: PathBuf,
    manifest: FileId,
    reads: HashMap<u64, PendingRead>,
    loads: HashMap<u64, (u64, ChunkFile)>,
    next: u64,
    /// A batch's writes or record are in flight.
    busy: bool,
    /// Requests waiting for the batch that carries them.
    tickets: HashMap<u64, (Caller, Ticket)>,
    /// A streamed body's chunk files being written: who sent each.
    fills: HashMap<u64, (Caller, ChunkFile)>,
}

impl DiskIo {
    /// The owner's client of `storage` (completions as [`Msg::Disk`]),
    /// appending to `manifest` (written at recovery) in `wdir`.
    ///
    /// # Errors
    /// The client cannot be made, or the manifest's open refused.
    pub fn open(storage: &StorageWorker, wdir: &Path, manifest: &Path) -> Result<DiskIo> {
        let mut client = storage.client(ResultSink::to_current_worker(Msg::Disk)?)?;
        let manifest = client
            .open(T_OTHER, manifest, OpenOptions::new().write(true))
            .map_err(|_| Error::InvalidConfig("the storage worker refused the manifest".into()))?;
        Ok(DiskIo {
            client,
            chunks_dir: wdir.join("chunks"),
            manifest,
            reads: HashMap::new(),
            loads: HashMap::new(),
            next: 1,
            busy: false,
            tickets: HashMap::new(),
            fills: HashMap::new(),
        })
    }

    fn token(&mut self) -> u64 {
        let t = self.next & INDEX;
        self.next += 1;
        t
    }

    /// Registers a request the engine answers later under `ticket`.
    pub fn ticket(&mut self, caller: Caller, kind: Ticket) -> u64 {
        let t = self.token();
        self.tickets.insert(t, (caller, kind));
        t
    }

    /// Forgets a ticket the engine answered at once.
    pub fn drop_ticket(&mut self, t: u64) {
        self.tickets.remove(&t);
    }

    fn path(&self, f: ChunkFile) -> PathBuf {
        self.chunks_dir.join(chunk_name(f))
    }

    /// Submits chunk file `f`'s open, its one write of `data` under
    /// `token`, and its close; the bytes come back when nothing could be
    /// submitted.
    fn write_chunk_file(&mut self, token: u64, f: ChunkFile, data: Vec<u8>) -> Option<Vec<u8>> {
        let path = self.path(f);
        let opened = self.client.open(
            T_OTHER,
            &path,
            OpenOptions::new().write(true).create(true).truncate(true),
        );
        match opened {
            Ok(fid) => {
                let r = self
                    .client
                    .write_at(token, fid, 0, data, Durability::Buffered);
                let _ = self.client.close(T_OTHER, fid);
                r.err().map(|e| op_data(e.into_inner()))
            }
            Err(_) => Some(data),
        }
    }

    /// Pushes requests waiting in the client's own queue (after a round).
    pub fn flush(&mut self) {
        self.client.flush_queued();
    }
}

/// After each message: removals submitted, and the next batch started
/// when none is in flight (a batch with nothing to write completes here).
pub fn pump(st: &mut NodeState) {
    for _ in 0..64 {
        let Some(io) = st.disk.as_mut() else {
            return;
        };
        for f in st.engine.take_unlinks() {
            let path = io.path(f);
            if io.client.remove(T_OTHER, path).is_err() {
                st.engine.disk_error();
            }
        }
        let Some(io) = st.disk.as_mut() else {
            return;
        };
        if io.busy {
            return;
        }
        let Some(writes) = st.engine.start_batch() else {
            return;
        };
        io.busy = true;
        if writes.is_empty() {
            if !write_records(st) {
                continue;
            }
            return;
        }
        let mut failed = Vec::new();
        for w in writes {
            let token = T_WRITE | w.slot as u64;
            if let Some(data) = io.write_chunk_file(token, w.file, w.data) {
                tracing::warn!(path = %io.path(w.file).display(), "chunk write not submitted");
                failed.push((w.slot, data));
            }
        }
        for (slot, data) in failed {
            if st.engine.chunk_written(slot, false, data) {
                write_records(st);
            }
        }
        return;
    }
}

/// Submits a streamed body's chunk file (outside the batches: a chunk
/// file needs no order; the value's record goes through a batch once the
/// body is in). `false` when it could not be submitted (the engine was
/// told, the chunk failed).
pub fn write_fill(st: &mut NodeState, caller: Caller, w: ChunkWrite) -> bool {
    let Some(io) = st.disk.as_mut() else {
        st.engine.fill_written(w.file, false, w.data);
        return false;
    };
    let lid = io.token();
    match io.write_chunk_file(T_FILL | lid, w.file, w.data) {
        None => {
            io.fills.insert(lid, (caller, w.file));
            true
        }
        Some(data) => {
            tracing::warn!(path = %io.path(w.file).display(), "chunk write not submitted");
            st.engine.fill_written(w.file, false, data);
            false
        }
    }
}

fn op_data(op: StorageOp) -> Vec<u8> {
    match op {
        StorageOp::WriteAt { buf, .. } => buf.into_vec(),
        _ => Vec::new(),
    }
}

/// Appends the batch's records; `false` when the batch completed at once
/// (nothing to append, or the append could not be submitted).
fn write_records(st: &mut NodeState) -> bool {
    match st.engine.batch_records() {
        Some((offset, buf)) => {
            let Some(io) = st.disk.as_mut() else {
                return false;
            };
            let manifest = io.manifest;
            match io
                .client
                .write_at(T_RECORD, manifest, offset, buf, Durability::Buffered)
            {
                Ok(()) => true,
                Err(_) => {
                    finish_batch(st, false);
                    false
                }
            }
        }
        None => {
            finish_batch(st, true);
            false
        }
    }
}

fn finish_batch(st: &mut NodeState, ok: bool) {
    let answers = st.engine.batch_done(ok);
    let Some(io) = st.disk.as_mut() else {
        return;
    };
    io.busy = false;
    let mut out = Vec::new();
    for (ticket, result) in answers {
        if let Some((caller, kind)) = io.tickets.remove(&ticket) {
            let answer = match (result, kind) {
                (Ok(()), Ticket::Store) => Answer::Stored,
                (Ok(()), Ticket::Delete) => Answer::Deleted,
                (Err(e), _) => super::owner::refused(&e),
            };
            out.push((caller, answer));
        }
    }
    for (caller, answer) in out {
        reply(st, caller, answer);
    }
}

/// Starts loading `files` for a read of `[offset, offset + len)` of entry
/// `id` under `key` (answered when they are in).
#[allow(clippy::too_many_arguments)]
pub fn start_read(
    st: &mut NodeState,
    caller: Caller,
    key: Vec<u8>,
    id: u64,
    offset: u64,
    len: u64,
    first: Option<First>,
    files: Vec<ChunkFile>,
) -> Option<Answer> {
    let pr = PendingRead {
        caller,
        key,
        id,
        offset,
        len,
        first,
        waiting: 0,
        loaded: Vec::new(),
        rounds: 0,
    };
    load(st, pr, files)
}

fn gone(first: Option<First>) -> Answer {
    match first {
        Some(_) => Answer::Missing,
        None => Answer::Gone,
    }
}

/// Submits the loads of `files` for `pr`; an answer at once if none can
/// be submitted.
fn load(st: &mut NodeState, mut pr: PendingRead, files: Vec<ChunkFile>) -> Option<Answer> {
    let Some(io) = st.disk.as_mut() else {
        return Some(gone(pr.first));
    };
    pr.rounds += 1;
    if pr.rounds > READ_ROUNDS {
        return Some(gone(pr.first));
    }
    let rid = io.token();
    for f in files {
        let lid = io.token();
        let path = io.path(f);
        let Ok(fid) = io
            .client
            .open(T_OTHER, &path, OpenOptions::new().read(true))
        else {
            continue;
        };
        let buf = Vec::with_capacity(CHUNK + 1);
        if io
            .client
            .read_at(T_LOAD | lid, fid, 0, CHUNK + 1, buf)
            .is_ok()
        {
            io.loads.insert(lid, (rid, f));
            pr.waiting += 1;
        }
        let _ = io.client.close(T_OTHER, fid);
    }
    if pr.waiting == 0 {
        return Some(gone(pr.first));
    }
    io.reads.insert(rid, pr);
    None
}

/// Cuts the piece once every chunk it needs is in, or loads more.
fn continue_read(st: &mut NodeState, mut pr: PendingRead) {
    let loaded = std::mem::take(&mut pr.loaded);
    let answer = match st.engine.read(&pr.key, pr.id, pr.offset, pr.len, &loaded) {
        Read::Bytes(bytes) => Some(match pr.first {
            Some(f) => Answer::Got {
                size: f.size,
                chunks: f.chunks,
                flags: f.flags,
                id: pr.id,
                want: f.want,
                first: bytes,
            },
            None => Answer::Piece(bytes),
        }),
        Read::Need(files) => {
            pr.loaded = loaded;
            let caller = pr.caller;
            if let Some(a) = load(st, pr, files) {
                reply(st, caller, a);
            }
            return;
        }
        Read::Gone => Some(gone(pr.first)),
    };
    if let Some(a) = answer {
        reply(st, pr.caller, a);
    }
}

/// A storage completion for this owner.
pub fn on_completion(st: &mut NodeState, c: StorageCompletion) {
    let tag = c.token & !INDEX;
    let index = c.token & INDEX;
    match tag {
        T_WRITE => {
            let ok = matches!(c.result, Ok(StorageOutput::Written(_)));
            if let Err(e) = &c.result {
                tracing::warn!("chunk write failed: {e}");
            }
            let data = c.buf.map(|b| b.into_vec()).unwrap_or_default();
            let slot = usize::try_from(index).unwrap_or(usize::MAX);
            if st.engine.chunk_written(slot, ok, data) {
                write_records(st);
            }
            super::owner::finish_streams(st);
        }
        T_FILL => {
            let ok = matches!(c.result, Ok(StorageOutput::Written(_)));
            if let Err(e) = &c.result {
                tracing::warn!("chunk write failed: {e}");
            }
            let Some((caller, file)) = st.disk.as_mut().and_then(|io| io.fills.remove(&index))
            else {
                return;
            };
            let data = c.buf.map(|b| b.into_vec()).unwrap_or_default();
            st.engine.fill_written(file, ok, data);
            if matches!(
                st.staging.get(&caller),
                Some(super::owner::Staging::Stream { end: None, .. })
            ) {
                reply(st, caller, Answer::Took);
            }
            super::owner::finish_streams(st);
        }
        T_RECORD => {
            if let Err(e) = &c.result {
                tracing::warn!("manifest append failed: {e}");
            }
            finish_batch(st, c.result.is_ok());
        }
        T_LOAD => {
            let Some(io) = st.disk.as_mut() else {
                return;
            };
            let Some((rid, file)) = io.loads.remove(&index) else {
                return;
            };
            let got = match (c.result, c.buf) {
                (Ok(StorageOutput::Read(n)), Some(buf)) => {
                    let mut v = buf.into_vec();
                    v.truncate(n);
                    Ok(v)
                }
                _ => Err(()),
            };
            let bytes = st.engine.chunk_loaded(file, got);
            let Some(io) = st.disk.as_mut() else {
                return;
            };
            let Some(pr) = io.reads.get_mut(&rid) else {
                return;
            };
            if let Some(b) = bytes {
                pr.loaded.push((file.0, b));
            }
            pr.waiting -= 1;
            if pr.waiting == 0
                && let Some(pr) = io.reads.remove(&rid)
            {
                continue_read(st, pr);
            }
        }
        _ => {
            if let Err(e) = &c.result {
                tracing::debug!("disk tier operation failed: {e}");
                st.engine.disk_error();
            }
        }
    }
}
