//! An owner's answer applied to the request in progress: the response
//! it makes, or the next state.

use super::reply::{Reply, close, send, tracked_send};
use super::stats::{cluster_block, metrics_json, stats_json};
use super::stream::start_multipart;
use super::{Pending, State, finish, gather};
use crate::http::{self, Want};
use crate::serve::{Answer, Dest, NodeState, owner_of};
use crate::sparse::{Progress, SparseError};
use shared_nothing::io::ConnId;

/// Applies an owner's answer to the request in progress.
pub(super) fn apply(st: &mut NodeState, id: ConnId, answer: Answer) {
    let Some(answer) = gather(st, id, answer) else {
        return;
    };
    let Some(c) = st.conns.get_mut(&id) else {
        return;
    };
    let state = std::mem::replace(&mut c.state, State::Idle);
    match (state, answer) {
        (
            State::Wait { key, pend, .. },
            Answer::Got {
                size,
                chunks,
                flags,
                id: entry,
                want,
                first,
            },
        ) => {
            let from = match pend {
                Pending::One { at, .. } => at,
                Pending::All { .. } => Dest::Local(owner_of(&key, st.workers)),
            };
            let hit = Hit {
                from,
                key,
                entry,
                size,
                chunks,
                flags,
                want,
            };
            on_hit(st, id, hit, first);
        }
        (
            State::Wait {
                head_only,
                key,
                pend,
            },
            answer,
        ) => match final_reply(head_only, &key, answer) {
            Ok(reply) => {
                send(st, id, reply);
                finish(st, id);
            }
            Err(answer) => {
                let state = State::Wait {
                    head_only,
                    key,
                    pend,
                };
                out_of_place(st, id, state, &answer);
            }
        },
        (
            State::Stats {
                left,
                mut sum,
                json_metrics,
            },
            Answer::Stats(s),
        ) => {
            sum.add(&s);
            if left <= 1 {
                let body = if json_metrics {
                    metrics_json(&sum, st.started.elapsed().as_secs(), &cluster_block(st))
                } else {
                    stats_json(&sum)
                };
                send(st, id, Reply::json(&body));
                finish(st, id);
            } else if let Some(c) = st.conns.get_mut(&id) {
                c.state = State::Stats {
                    left: left - 1,
                    sum,
                    json_metrics,
                };
            }
        }
        (state @ State::Stream { .. }, answer) => on_piece(st, id, state, answer),
        (state, answer) => out_of_place(st, id, state, &answer),
    }
}

/// An answer the request in progress does not expect: ignored, the
/// request keeps waiting.
fn out_of_place(st: &mut NodeState, id: ConnId, state: State, answer: &Answer) {
    tracing::debug!(?answer, "answer out of place; ignored");
    if let Some(c) = st.conns.get_mut(&id) {
        c.state = state;
    }
}

/// A GET hit: what the owner said of the value.
struct Hit {
    from: Dest,
    key: Vec<u8>,
    entry: u64,
    size: u64,
    chunks: u64,
    flags: u32,
    want: Want,
}

/// A GET hit's response head and first piece; the rest streams
/// (`State::Stream`), or several ranges go as a multipart body.
fn on_hit(st: &mut NodeState, id: ConnId, hit: Hit, first: Vec<u8>) {
    let Some(c) = st.conns.get_mut(&id) else {
        return;
    };
    let Hit {
        from,
        key,
        entry,
        size,
        chunks,
        flags,
        want,
    } = hit;
    let mut parts = Vec::new();
    if want == Want::Many {
        parts = http::resolve_set(&std::mem::take(&mut c.ranges), size);
    }
    let (status, offset, len) = match want {
        Want::Whole => (200, 0, size),
        Want::Part { offset, len } => (206, offset, len),
        Want::Many if parts.len() == 1 => (206, parts[0].0, parts[0].1),
        Want::Many if !parts.is_empty() => {
            return start_multipart(st, id, from, key, entry, size, chunks, flags, parts);
        }
        Want::Unsatisfiable | Want::Many => {
            let reply = Reply::text(416, "Range Not Satisfiable")
                .header("Content-Range", format!("bytes */{size}"));
            send(st, id, reply);
            return finish(st, id);
        }
    };
    let mut reply = Reply::empty(status)
        .header("Content-Type", "application/octet-stream")
        .header("X-ElCache-Hit", "hit")
        .header("X-ElCache-Size", size)
        .header("X-ElCache-Chunks", chunks)
        .header("X-ElCache-Flags", flags)
        .header("Accept-Ranges", "bytes");
    if status == 206 {
        reply = reply.header(
            "Content-Range",
            format!("bytes {offset}-{}/{size}", offset + len - 1),
        );
    }
    reply.length = Some(len);
    let next = offset + first.len() as u64;
    let end = offset + len;
    let mut bytes = reply.render(!c.keep_alive);
    bytes.extend_from_slice(&first);
    drop(first);
    c.unsent += 1;
    let seq = c.seq;
    // Several ranges coalesced into one come without bytes (the owner
    // answered the metadata only): all are pulled.
    let pull = want == Want::Many;
    if next < end && (next > offset || pull) {
        c.state = State::Stream {
            at: from,
            key,
            id: entry,
            next,
            end,
            reading: false,
            multi: None,
        };
    }
    tracked_send(st, id, bytes, seq);
    if next >= end {
        finish(st, id);
    } else if next == offset && !pull {
        // A non-empty range always comes with bytes; without them the
        // promised length cannot be kept.
        close(st, id);
    }
}

/// The response that ends a waiting request on `answer`, or the answer
/// back if it does not end one.
fn final_reply(head_only: bool, key: &[u8], answer: Answer) -> Result<Reply, Answer> {
    Ok(match answer {
        Answer::Missing | Answer::Gone => Reply::text(404, "Key not found").head_only(head_only),
        Answer::Meta {
            size,
            chunks,
            flags,
        } => {
            let mut reply = Reply::empty(200)
                .header("X-ElCache-Size", size)
                .header("X-ElCache-Chunks", chunks)
                .header("X-ElCache-Flags", flags)
                .header("Accept-Ranges", "bytes")
                .head_only(true);
            reply.length = Some(size);
            reply
        }
        Answer::Stored => Reply::empty(201),
        Answer::Refused { status, reason } => Reply::text(status, &reason),
        Answer::Deleted => Reply::empty(204),
        Answer::SparseCreated { total } => Reply::empty(201).header("X-ElCache-Size", total),
        Answer::Written(p) => Reply::empty(202).header("X-ElCache-Completion", completion(&p)),
        Answer::SparseStatus(p) => Reply::json(&serde_json::json!({
            "key": String::from_utf8_lossy(key),
            "total_size": p.total,
            "completion_percent": p.percent(),
            "complete": p.complete(),
        })),
        Answer::SparseFailed(e) => sparse_failure(&e),
        other => return Err(other),
    })
}

/// The next piece of a streamed GET: sent, and the stream moves on (to
/// the next part of a multipart body, or to its end). Anything else (the
/// owner found the value changed or gone) cuts the connection.
fn on_piece(st: &mut NodeState, id: ConnId, state: State, answer: Answer) {
    let State::Stream {
        at,
        key,
        id: entry,
        next,
        end,
        multi,
        ..
    } = state
    else {
        return;
    };
    let Some(c) = st.conns.get_mut(&id) else {
        return;
    };
    let mut piece = match answer {
        Answer::Piece(p) if !p.is_empty() && next + p.len() as u64 <= end => p,
        _ => {
            // The value changed under a long GET: its head is sent, so
            // the only honest end is to cut the connection.
            tracing::debug!(peer = %c.peer, "value changed during a GET; closing");
            return close(st, id);
        }
    };
    let mut next = next + piece.len() as u64;
    let mut end = end;
    let mut multi = multi;
    if next == end
        && let Some(m) = multi.as_mut()
    {
        // The part is done: the next one's head, or the closing
        // delimiter, goes out with its last piece.
        match m.rest.pop_front() {
            Some((offset, len)) => {
                piece.extend_from_slice(&m.part_head(offset, len));
                next = offset;
                end = offset + len;
            }
            None => piece.extend_from_slice(&m.tail()),
        }
    }
    c.unsent += 1;
    let seq = c.seq;
    if next < end {
        c.state = State::Stream {
            at,
            key,
            id: entry,
            next,
            end,
            reading: false,
            multi,
        };
        tracked_send(st, id, piece, seq);
    } else {
        tracked_send(st, id, piece, seq);
        finish(st, id);
    }
}

/// The status and text of a sparse operation that did nothing.
fn sparse_failure(e: &SparseError) -> Reply {
    let status = match e {
        SparseError::Missing => 404,
        SparseError::Exists | SparseError::Incomplete { .. } => 409,
        SparseError::TooLarge { .. } => 413,
        SparseError::NoRoom { .. } => 507,
        _ => 400,
    };
    let reply = Reply::text(status, &e.to_string());
    match e {
        SparseError::Incomplete { written, total } => reply.header(
            "X-ElCache-Completion",
            completion(&Progress {
                written: *written,
                total: *total,
            }),
        ),
        _ => reply,
    }
}

/// `X-ElCache-Completion`: percent written, six decimals.
fn completion(p: &Progress) -> String {
    format!("{:.6}%", p.percent())
}
