//! A GET's body streamed to the socket, pulled from the owner piece by
//! piece, at most [`WINDOW`] queued (C2); several ranges as one
//! `multipart/byteranges` body.

use super::answer::apply;
use super::reply::{Reply, tracked_send};
use super::{State, WINDOW, origin};
use crate::serve::{Dest, NodeState, Op, PIECE};
use shared_nothing::io::ConnId;

/// A `multipart/byteranges` body being sent (RFC 9110 section 14.6): the
/// parts after the current one, and what frames them.
#[derive(Debug)]
pub(super) struct Multi {
    pub(super) boundary: String,
    pub(super) size: u64,
    pub(super) rest: std::collections::VecDeque<(u64, u64)>,
}

impl Multi {
    /// The delimiter and headers that open part `(offset, len)`.
    pub(super) fn part_head(&self, offset: u64, len: u64) -> Vec<u8> {
        format!(
            "\r\n--{}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {offset}-{}/{}\r\n\r\n",
            self.boundary,
            offset + len - 1,
            self.size
        )
        .into_bytes()
    }

    /// The closing delimiter.
    pub(super) fn tail(&self) -> Vec<u8> {
        format!("\r\n--{}--\r\n", self.boundary).into_bytes()
    }
}

/// A boundary for entry `id`'s parts: 32 hex digits of a hash of the
/// entry, the time and a counter, so it cannot be predicted from the
/// value (RFC 2046 asks that it not occur in the parts).
fn boundary(id: u64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut seed = Vec::with_capacity(40);
    seed.extend_from_slice(&id.to_le_bytes());
    seed.extend_from_slice(&t.to_le_bytes());
    seed.extend_from_slice(&n.to_le_bytes());
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&seed))
}

/// Answers a GET for several ranges, `parts` (at least two, from
/// [`http::resolve_set`]), as `multipart/byteranges`: the head with the
/// whole body's length (every part's delimiter, headers and bytes), then
/// each part's bytes pulled from the owner as a single range's are, only
/// the chunks the parts cover being read.
#[allow(clippy::too_many_arguments)]
pub(super) fn start_multipart(
    st: &mut NodeState,
    id: ConnId,
    at: Dest,
    key: Vec<u8>,
    entry: u64,
    size: u64,
    chunks: u64,
    flags: u32,
    parts: Vec<(u64, u64)>,
) {
    let Some(c) = st.conns.get_mut(&id) else {
        return;
    };
    let mut rest: std::collections::VecDeque<(u64, u64)> = parts.into();
    let Some((offset, len)) = rest.pop_front() else {
        return;
    };
    let boundary = boundary(entry);
    let mut m = Multi {
        boundary,
        size,
        rest: std::collections::VecDeque::new(),
    };
    let first_head = m.part_head(offset, len);
    let length = first_head.len() as u64
        + len
        + rest
            .iter()
            .map(|&(o, l)| m.part_head(o, l).len() as u64 + l)
            .sum::<u64>()
        + m.tail().len() as u64;
    m.rest = rest;
    let mut reply = Reply::empty(206)
        .header(
            "Content-Type",
            format!("multipart/byteranges; boundary={}", m.boundary),
        )
        .header("X-ElCache-Hit", "hit")
        .header("X-ElCache-Size", size)
        .header("X-ElCache-Chunks", chunks)
        .header("X-ElCache-Flags", flags)
        .header("Accept-Ranges", "bytes");
    reply.length = Some(length);
    let mut bytes = reply.render(!c.keep_alive);
    bytes.extend_from_slice(&first_head);
    c.unsent += 1;
    let seq = c.seq;
    c.state = State::Stream {
        at,
        key,
        id: entry,
        next: offset,
        end: offset + len,
        reading: false,
        multi: Some(Box::new(m)),
    };
    tracked_send(st, id, bytes, seq);
}

/// Pulls the next pieces of a GET, at most [`WINDOW`] queued (C2).
pub(super) fn pump(st: &mut NodeState, id: ConnId) {
    for _ in 0..=WINDOW {
        let Some(c) = st.conns.get_mut(&id) else {
            return;
        };
        if c.closed || c.unsent >= WINDOW {
            return;
        }
        let seq = c.seq;
        let State::Stream {
            at,
            key,
            id: entry,
            next,
            end,
            reading,
            ..
        } = &mut c.state
        else {
            return;
        };
        if *reading || *next >= *end {
            return;
        }
        *reading = true;
        let op = Op::Read {
            key: key.clone(),
            id: *entry,
            offset: *next,
            len: (*end - *next).min(PIECE),
        };
        let (at, route) = (*at, key.clone());
        let o = origin(st, id, seq);
        match st.run_at(at, o, &route, op) {
            Some(a) => apply(st, id, a),
            None => return,
        }
    }
}
