//! The owner side: a key's worker runs the operations on its engine.
//!
//! A PUT or sparse-write body arrives as a run of [`Op::Body`] messages
//! from the connection (an HTTP connection's worker or an SDK socket
//! thread), each one chunk (the last with the key and options); they are
//! staged here by request ([`Caller`]) and applied together, so a value
//! replaces the old one whole or not at all, and a sparse write is
//! checked whole before any byte of it is written. A GET
//! is answered with its first piece (at most [`PIECE`] bytes); a longer
//! one is pulled piece by piece by the connection as the socket drains
//! ([`Op::Read`] naming the entry version), so a large value is never
//! copied whole.

use super::tier::{self, First, Ticket};
use super::{Answer, BodyEnd, Caller, NodeState, Op, PutEnd, RangeEnd};
use crate::engine::{CommitError, Done, Engine, FinalizeError, Read, Staged};
use crate::http::{RangeReq, Want, resolve};
use std::time::Instant;

/// Most bytes in one GET piece.
pub const PIECE: u64 = 1 << 20;

/// A PUT being received.
#[derive(Debug)]
pub enum Staging {
    /// Staged whole, stored at the end (the SDK socket, another node, a
    /// sparse write).
    Whole {
        staged: Staged,
        /// A chunk did not stage (a bug in the sender): the PUT fails.
        failed: Option<String>,
    },
    /// Streamed into the tiers as it arrives (an HTTP PUT): the engine's
    /// fill, and once the last chunk came, what to store it as (stored
    /// once its last files are written).
    Stream { fill: u64, end: Option<PutEnd> },
}

pub fn refused(e: &CommitError) -> Answer {
    Answer::Refused {
        status: match e {
            CommitError::TooLarge { .. } | CommitError::NoTier => 507,
            _ => 500,
        },
        reason: e.to_string(),
    }
}

/// Applies a whole sparse write, after the checks its request asked for.
fn write_range(engine: &mut Engine, end: &RangeEnd, staged: &Staged) -> Answer {
    let bad = |reason: String| Answer::Refused {
        status: 400,
        reason,
    };
    let size = staged.size();
    if end.nonempty && size == 0 {
        return bad("a sparse write needs a body".into());
    }
    if let Some(len) = end.len
        && len != size
    {
        return bad(format!(
            "Content-Range names {len} bytes, the body has {size}"
        ));
    }
    if let (Some(total), Some(p)) = (end.total, engine.sparse_progress(&end.key))
        && total != p.total
    {
        return bad(format!(
            "Content-Range names a total of {total} bytes, the value has {}",
            p.total
        ));
    }
    match engine.sparse_write(&end.key, end.offset, staged) {
        Ok(p) => Answer::Written(p),
        Err(e) => Answer::SparseFailed(e),
    }
}

/// Runs `op`; `None` when there is nothing to answer yet (a body chunk
/// that is not the last, an abort).
pub fn run(st: &mut NodeState, origin: Caller, op: Op) -> Option<Answer> {
    let now = Instant::now();
    match op {
        Op::Get { key, range } => get(st, origin, key, range, now),
        Op::Head { key } => Some(match st.engine.head(&key, now) {
            Some(e) => Answer::Meta {
                size: e.size,
                chunks: e.chunk_count(),
                flags: e.flags,
            },
            None => Answer::Missing,
        }),
        Op::Read {
            key,
            id,
            offset,
            len,
        } => read(st, origin, key, id, offset, len.min(PIECE), None),
        Op::Body {
            data,
            end,
            stream: true,
        } => stream_body(st, origin, data, end),
        Op::Body { data, end, .. } => {
            stage(st, origin, data);
            staged_body(st, origin, end?, now)
        }
        Op::Abort => {
            if let Some(Staging::Stream { fill, .. }) = st.staging.remove(&origin) {
                st.engine.fill_abort(fill);
            }
            None
        }
        Op::Delete { key } => {
            let ticket = ticket(st, origin, Ticket::Delete);
            let done = st.engine.delete(&key, ticket);
            settle(st, ticket, Ok(done), Answer::Deleted)
        }
        Op::Stats => Some(Answer::Stats(Box::new(st.stats()))),
        Op::SparseCreate {
            key,
            total,
            ttl,
            flags,
        } => Some(
            match st
                .engine
                .sparse_create(&key, total, st.limits.max_body, ttl, flags)
            {
                Ok(()) => Answer::SparseCreated { total },
                Err(e) => Answer::SparseFailed(e),
            },
        ),
        Op::SparseStatus { key } => Some(match st.engine.sparse_progress(&key) {
            Some(p) => Answer::SparseStatus(p),
            None => Answer::SparseFailed(crate::sparse::SparseError::Missing),
        }),
        Op::SparseFinalize { key, ttl, flags } => {
            let ticket = ticket(st, origin, Ticket::Store);
            let done = match st.engine.sparse_finalize(&key, ttl, flags, now, ticket) {
                Ok(d) => Ok(d),
                Err(FinalizeError::Sparse(e)) => Err(Answer::SparseFailed(e)),
                Err(FinalizeError::Store(e)) => Err(refused(&e)),
            };
            settle(st, ticket, done, Answer::Stored)
        }
        Op::SyncList { to, view } => {
            let me = view.me;
            Some(Answer::Keys(st.engine.live_keys(now, |k| {
                let owners = view.ring.owners(k);
                owners.contains(&to) && owners.iter().find(|o| **o != to) == Some(&me)
            })))
        }
        Op::SparseDelete { key } => {
            st.engine.sparse_remove(&key);
            Some(Answer::Deleted)
        }
    }
}

/// A GET: the entry's metadata and the first piece of what `range`
/// selects.
fn get(
    st: &mut NodeState,
    origin: Caller,
    key: Vec<u8>,
    range: RangeReq,
    now: Instant,
) -> Option<Answer> {
    let Some(entry) = st.engine.lookup(&key, now) else {
        return Some(Answer::Missing);
    };
    let want = resolve(range, entry.size);
    let (offset, len) = match want {
        Want::Whole => (0, entry.size),
        Want::Part { offset, len } => (offset, len),
        Want::Unsatisfiable | Want::Many => (0, 0),
    };
    st.engine.begin_read(&entry, offset, len);
    let first = First {
        size: entry.size,
        chunks: entry.chunk_count(),
        flags: entry.flags,
        want,
    };
    read(
        st,
        origin,
        key,
        entry.id,
        offset,
        len.min(PIECE),
        Some(first),
    )
}

/// A staged body's next chunk, kept until its last (a failure is kept
/// too, and answered then).
fn stage(st: &mut NodeState, origin: Caller, data: Vec<u8>) {
    let staging = st.staging.entry(origin).or_insert(Staging::Whole {
        staged: Staged::default(),
        failed: None,
    });
    if let Staging::Whole { staged, failed } = staging
        && failed.is_none()
        && let Err(e) = staged.push(data)
    {
        *failed = Some(e.to_string());
    }
}

/// A staged body is complete: stored as a value, or written into a
/// sparse one.
fn staged_body(st: &mut NodeState, origin: Caller, end: BodyEnd, now: Instant) -> Option<Answer> {
    let staged = match st.staging.remove(&origin) {
        Some(Staging::Whole {
            failed: Some(reason),
            ..
        }) => {
            return Some(Answer::Refused {
                status: 500,
                reason,
            });
        }
        Some(Staging::Whole { staged, .. }) => staged,
        Some(Staging::Stream { fill, .. }) => {
            st.engine.fill_abort(fill);
            return Some(Answer::Refused {
                status: 500,
                reason: "a body both streamed and staged".into(),
            });
        }
        None => Staged::default(),
    };
    Some(match end {
        BodyEnd::Store(end) if end.only_new && st.engine.head(&end.key, now).is_some() => {
            // A sync's push: a value is there already (written since
            // this node came up), and it wins.
            Answer::Stored
        }
        BodyEnd::Store(end) => {
            let ticket = ticket(st, origin, Ticket::Store);
            let done = st
                .engine
                .commit(&end.key, staged, end.ttl, end.flags, now, end.place, ticket);
            return settle(st, ticket, done.map_err(|e| refused(&e)), Answer::Stored);
        }
        BodyEnd::WriteRange(end) => write_range(&mut st.engine, &end, &staged),
    })
}

/// A streamed body's chunk: into the tiers now (its file submitted, or
/// its bytes held in memory). A chunk but the last is answered
/// [`Answer::Took`] now, or when its file is written; the last stores the
/// value once every file of it is written.
fn stream_body(
    st: &mut NodeState,
    origin: Caller,
    data: Vec<u8>,
    end: Option<BodyEnd>,
) -> Option<Answer> {
    let fill = match st.staging.get(&origin) {
        Some(Staging::Stream { fill, .. }) => *fill,
        Some(Staging::Whole { .. }) => {
            st.staging.remove(&origin);
            return Some(Answer::Refused {
                status: 500,
                reason: "a body both staged and streamed".into(),
            });
        }
        None => {
            let fill = st.engine.fill_start();
            st.staging
                .insert(origin, Staging::Stream { fill, end: None });
            fill
        }
    };
    let writing = match st.engine.fill_push(fill, data) {
        Some(w) => tier::write_fill(st, origin, w),
        None => false,
    };
    match end {
        None if writing => None,
        None => Some(Answer::Took),
        Some(BodyEnd::Store(end)) => {
            if let Some(Staging::Stream { end: e, .. }) = st.staging.get_mut(&origin) {
                *e = Some(end);
            }
            finish_stream(st, origin)
        }
        Some(BodyEnd::WriteRange(_)) => {
            st.staging.remove(&origin);
            st.engine.fill_abort(fill);
            Some(Answer::Refused {
                status: 500,
                reason: "a sparse write cannot be streamed".into(),
            })
        }
    }
}

/// Stores `origin`'s streamed value if its body is all in and none of
/// its files is still being written; `None` while it waits.
pub fn finish_stream(st: &mut NodeState, origin: Caller) -> Option<Answer> {
    let fill = match st.staging.get(&origin) {
        Some(Staging::Stream { fill, end: Some(_) }) if st.engine.fill_idle(*fill) => *fill,
        _ => return None,
    };
    let Some(Staging::Stream { end: Some(end), .. }) = st.staging.remove(&origin) else {
        return None;
    };
    let now = Instant::now();
    if end.only_new && st.engine.head(&end.key, now).is_some() {
        st.engine.fill_abort(fill);
        return Some(Answer::Stored);
    }
    let ticket = ticket(st, origin, Ticket::Store);
    let done = st
        .engine
        .fill_finish(fill, &end.key, end.ttl, end.flags, now, end.place, ticket);
    settle(st, ticket, done.map_err(|e| refused(&e)), Answer::Stored)
}

/// After a chunk file is written: the streamed values whose bodies are
/// in and whose files are now all written are stored (a chunk shared
/// with another request's write waits for that write).
pub fn finish_streams(st: &mut NodeState) {
    let ready: Vec<Caller> = st
        .staging
        .iter()
        .filter(|(_, s)| matches!(s, Staging::Stream { end: Some(_), .. }))
        .map(|(c, _)| *c)
        .collect();
    for caller in ready {
        if let Some(a) = finish_stream(st, caller) {
            super::reply(st, caller, a);
        }
    }
}

/// A ticket under which the disk tier may answer `origin` later (0
/// without a disk tier: everything is answered at once).
fn ticket(st: &mut NodeState, origin: Caller, kind: Ticket) -> u64 {
    st.disk.as_mut().map_or(0, |io| io.ticket(origin, kind))
}

/// The answer now (`ok` when done, the error), or none while the disk
/// tier holds the request (its ticket answers it).
fn settle(
    st: &mut NodeState,
    ticket: u64,
    done: Result<Done, Answer>,
    ok: Answer,
) -> Option<Answer> {
    let now = match done {
        Ok(Done::Later) => return None,
        Ok(Done::Now) => ok,
        Err(a) => a,
    };
    if let Some(io) = st.disk.as_mut() {
        io.drop_ticket(ticket);
    }
    Some(now)
}

/// A piece of entry `id`: from memory now, or once its chunk files are
/// loaded.
fn read(
    st: &mut NodeState,
    origin: Caller,
    key: Vec<u8>,
    id: u64,
    offset: u64,
    len: u64,
    first: Option<First>,
) -> Option<Answer> {
    match st.engine.read(&key, id, offset, len, &[]) {
        Read::Bytes(bytes) => Some(match first {
            Some(f) => Answer::Got {
                size: f.size,
                chunks: f.chunks,
                flags: f.flags,
                id,
                want: f.want,
                first: bytes,
            },
            None => Answer::Piece(bytes),
        }),
        Read::Need(files) => tier::start_read(st, origin, key, id, offset, len, first, files),
        Read::Gone => Some(Answer::Gone),
    }
}
