//! Request bodies: cut into [`CHUNK`]-byte buffers as they arrive and
//! moved to the owners (a copy to each replica), a streamed PUT at most
//! [`BODY_WINDOW`] chunks ahead of a local owner (C3).

use super::answer::apply;
use super::reply::fail_plain;
use super::route::Action;
use super::{BODY_WINDOW, Conn, Pending, State, origin, start};
use crate::engine::CHUNK;
use crate::http::Chunked;
use crate::serve::{Answer, BodyEnd, Dest, NodeState, Op, Origin};
use shared_nothing::io::ConnId;

#[derive(Debug)]
pub(super) enum Framing {
    Length(u64),
    Chunked(Chunked),
}

/// Where body bytes go.
#[derive(Debug)]
pub(super) enum Sink {
    Put {
        dests: Vec<Dest>,
        end: BodyEnd,
        /// The chunk being filled (at most [`CHUNK`] bytes).
        buf: Vec<u8>,
    },
    /// A body the request does not use.
    Discard { then: Box<Action> },
}

/// Tells the owner of a PUT in progress to drop what it staged.
pub(super) fn abort_put(st: &mut NodeState, id: ConnId, seq: u64, state: &State) {
    if let State::Body {
        sink: Sink::Put { dests, end, .. },
        ..
    } = state
    {
        let o = origin(st, id, seq);
        let route = body_key(end).to_vec();
        for d in dests {
            let _ = st.run_at(*d, o, &route, Op::Abort);
        }
    }
}

/// Consumes buffered body bytes; `true` once the body is complete (the
/// state has moved on), `false` when more input is needed or the
/// connection failed.
pub(super) fn feed_body(st: &mut NodeState, id: ConnId) -> bool {
    let limit = st.limits.max_body;
    let Some(c) = st.conns.get_mut(&id) else {
        return false;
    };
    let seq = c.seq;
    let unacked = c.unacked;
    let Conn { inbuf, state, .. } = c;
    let State::Body {
        framing,
        sink,
        total,
    } = state
    else {
        return false;
    };
    let avail = inbuf.len().min(room(sink, unacked));
    let mut full: Vec<Vec<u8>> = Vec::new();
    let mut over = false;
    let mut take = |bytes: &[u8]| {
        *total += bytes.len() as u64;
        if *total > limit {
            over = true;
            return;
        }
        if let Sink::Put { buf, .. } = sink {
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = rest.len().min(CHUNK - buf.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if buf.len() == CHUNK {
                    full.push(std::mem::take(buf));
                }
            }
        }
    };
    let (used, done) = match framing {
        Framing::Length(left) => {
            let n = usize::try_from(*left).unwrap_or(usize::MAX).min(avail);
            take(&inbuf[..n]);
            *left -= n as u64;
            (n, *left == 0)
        }
        Framing::Chunked(d) => match d.feed(&inbuf[..avail], &mut take) {
            Ok(n) => (n, d.is_done()),
            Err(e) => {
                let to = targets(sink);
                if let Some((dests, route, _)) = to {
                    abort_at(st, origin(st, id, seq), &dests, &route);
                }
                fail_plain(st, id, 400, &e.to_string());
                return false;
            }
        },
    };
    inbuf.drain(..used);
    let to = targets(sink);
    let o = origin(st, id, seq);
    if let Some((dests, route, stream)) = to {
        send_chunks(st, id, o, (&dests, &route, stream), full);
        if over {
            abort_at(st, o, &dests, &route);
        }
    }
    if over {
        fail_plain(st, id, 413, &format!("body over the {limit}-byte limit"));
        return false;
    }
    done && body_done(st, id, o)
}

/// C3: how much more input a body may take now. A streamed PUT takes no
/// more than its owners' windows have room for; the rest waits in
/// `inbuf` (and the socket pauses past MAX_INBUF) until they
/// acknowledge chunks.
fn room(sink: &Sink, unacked: usize) -> usize {
    match sink {
        Sink::Put { dests, end, buf } if streams(end) => {
            let local = dests.iter().filter(|d| matches!(d, Dest::Local(_))).count();
            let free = (BODY_WINDOW * local).saturating_sub(unacked);
            if local == 0 {
                usize::MAX
            } else if free == 0 {
                // Only what completes no chunk, plus framing.
                CHUNK - 1 - buf.len().min(CHUNK - 1)
            } else {
                free * CHUNK - buf.len()
            }
        }
        _ => usize::MAX,
    }
}

/// Where a body's chunks go: its owners, the key it is routed by, and
/// whether it streams into their tiers; `None` for a discarded body.
fn targets(sink: &Sink) -> Option<(Vec<Dest>, Vec<u8>, bool)> {
    match sink {
        Sink::Put { dests, end, .. } => Some((dests.clone(), body_key(end).to_vec(), streams(end))),
        Sink::Discard { .. } => None,
    }
}

/// Tells every owner the body will not come.
fn abort_at(st: &mut NodeState, o: Origin, dests: &[Dest], route: &[u8]) {
    for d in dests {
        let _ = st.run_at(*d, o, route, Op::Abort);
    }
}

/// Sends the body's complete chunks to its owners, counting a streamed
/// one's unacknowledged chunks for the window (C3).
fn send_chunks(
    st: &mut NodeState,
    id: ConnId,
    o: Origin,
    (dests, route, stream): (&[Dest], &[u8], bool),
    full: Vec<Vec<u8>>,
) {
    for data in full {
        if stream && let Some(c) = st.conns.get_mut(&id) {
            c.unacked += dests.iter().filter(|d| matches!(d, Dest::Local(_))).count();
        }
        let took = fan_out(st, dests, o, route, data, None, stream)
            .iter()
            .filter(|a| matches!(a, Answer::Took))
            .count();
        if let Some(c) = st.conns.get_mut(&id) {
            c.unacked = c.unacked.saturating_sub(took);
        }
    }
}

/// The whole body is in: the PUT's last chunk goes out (or the request
/// after a discarded body starts). True if the request moved on.
fn body_done(st: &mut NodeState, id: ConnId, o: Origin) -> bool {
    let Some(c) = st.conns.get_mut(&id) else {
        return false;
    };
    let state = std::mem::replace(
        &mut c.state,
        State::Wait {
            head_only: false,
            key: Vec::new(),
            pend: Pending::one(Dest::Local(st.index)),
        },
    );
    match state {
        State::Body {
            sink: Sink::Put { dests, end, buf },
            ..
        } => put_end(st, id, o, &dests, buf, end),
        State::Body {
            sink: Sink::Discard { then },
            ..
        } => start(st, id, *then),
        other => c.state = other,
    }
    true
}

/// Whether a body is streamed into its owners' tiers (a PUT's).
fn streams(end: &BodyEnd) -> bool {
    matches!(end, BodyEnd::Store(_))
}

/// The key a body is routed by.
fn body_key(end: &BodyEnd) -> &[u8] {
    match end {
        BodyEnd::Store(e) => &e.key,
        BodyEnd::WriteRange(e) => &e.key,
    }
}

/// Sends one body chunk to every replica (a copy each but the last).
fn fan_out(
    st: &mut NodeState,
    dests: &[Dest],
    o: Origin,
    route: &[u8],
    data: Vec<u8>,
    end: Option<&BodyEnd>,
    stream: bool,
) -> Vec<Answer> {
    let mut now = Vec::new();
    let mut data = Some(data);
    for (i, d) in dests.iter().enumerate() {
        let bytes = if i + 1 == dests.len() {
            data.take().unwrap_or_default()
        } else {
            data.clone().unwrap_or_default()
        };
        let op = Op::Body {
            data: bytes,
            end: end.cloned(),
            // Only owners on this node stream (and acknowledge).
            stream: stream && matches!(d, Dest::Local(_)),
        };
        if let Some(a) = st.run_at(*d, o, route, op) {
            now.push(a);
        }
    }
    now
}

/// A body's last chunk, to every replica; the request then waits for
/// each one's answer.
pub(super) fn put_end(
    st: &mut NodeState,
    id: ConnId,
    o: Origin,
    dests: &[Dest],
    buf: Vec<u8>,
    end: BodyEnd,
) {
    let route = body_key(&end).to_vec();
    if let Some(c) = st.conns.get_mut(&id) {
        c.state = State::Wait {
            head_only: false,
            key: Vec::new(),
            pend: Pending::All {
                left: dests.len(),
                done: None,
                fail: None,
            },
        };
    }
    let stream = streams(&end);
    for a in fan_out(st, dests, o, &route, buf, Some(&end), stream) {
        if !matches!(a, Answer::Took) {
            apply(st, id, a);
        }
    }
}
