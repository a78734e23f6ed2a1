//! The connection side: HTTP/1.1 requests parsed from a socket's bytes,
//! routed to their key's owner, and answered in order.
//!
//! A connection runs one request at a time (C1): the next request is
//! parsed from the buffered input only once the previous response is
//! wholly queued on the socket, so pipelined requests are answered in
//! order. While a request waits for its owner the socket keeps being
//! read into the buffer, up to [`MAX_INBUF`] bytes; past that it is
//! paused until the buffer drains.
//!
//! A PUT body (`Content-Length` or chunked) is cut into [`CHUNK`]-byte
//! buffers as it arrives, each sent to the owner at once (moved, not
//! copied), so a body is never held whole on this side; an owner on this
//! node puts each in its tiers and acknowledges it, and at most
//! [`BODY_WINDOW`] chunks per such owner are unacknowledged (C3: the rest
//! waits in the input buffer, the socket paused behind it). One over
//! `--max-body` (or one worker's share of the larger tier) is answered
//! 413 and the connection closed. A GET's first piece comes with its metadata; the
//! rest is pulled from the owner one piece at a time, at most
//! [`WINDOW`] pieces queued on the socket (C2), so a slow reader holds
//! back the owner instead of filling memory.
//!
//! A malformed request (bad request line or framing, a head over
//! `MAX_HEAD`, a body cut short) is answered with its status and
//! `Connection: close`, and only that connection is closed.

mod answer;
mod body;
mod reply;
mod route;
mod stats;
mod stream;

use crate::engine::Stats;
use crate::http::{self, BodyLen, ByteRange, Chunked, Head, Method};
use crate::metrics::OpKind;
use crate::serve::{Answer, Dest, NodeState, Op, Origin};
use answer::apply;
use body::{Framing, Sink, abort_put, feed_body, put_end};
use reply::{close, fail, net_request, raw_send, send};
use route::{Action, route};
use shared_nothing::io::{ConnId, NetClient, NetEvent, NetEventKind};
use std::net::SocketAddr;
use std::time::Instant;
use stream::{Multi, pump};

/// Longest key (ElCache's limit; 400 beyond it).
pub const MAX_KEY: usize = 8192;

/// GET pieces queued on a socket at once (C2).
pub const WINDOW: usize = 2;

/// PUT body chunks sent to an owner on this node and not yet in its
/// tiers ([`Answer::Took`]), per owner (C3).
pub const BODY_WINDOW: usize = 2;

/// Input buffered while a request is in progress before the socket is
/// paused.
pub const MAX_INBUF: usize = 1 << 20;

#[derive(Debug)]
enum State {
    /// Parsing the next request head.
    Idle,
    Body {
        framing: Framing,
        sink: Sink,
        total: u64,
    },
    /// Waiting for the owner's answer (or the owners').
    Wait {
        head_only: bool,
        key: Vec<u8>,
        pend: Pending,
    },
    /// `/stats` (or the JSON `/metrics`): waiting for every worker's
    /// counters.
    Stats {
        left: usize,
        sum: Stats,
        json_metrics: bool,
    },
    /// Sending a GET's body, `[next, end)` still to come (of the current
    /// part, for a multipart one).
    Stream {
        at: Dest,
        key: Vec<u8>,
        id: u64,
        next: u64,
        end: u64,
        reading: bool,
        multi: Option<Box<Multi>>,
    },
}

/// What a waiting request still expects.
#[derive(Debug)]
enum Pending {
    /// One answer, from `at`; a lookup (`retry`) that misses or finds
    /// the node unreachable is asked again at the next of `rest`.
    One {
        at: Dest,
        rest: Vec<Dest>,
        retry: Option<Op>,
        /// Some owner answered (so a final miss is a miss, not a 503).
        reached: bool,
    },
    /// An answer from each of `left` owners (PUT, DELETE).
    All {
        left: usize,
        done: Option<Answer>,
        fail: Option<Answer>,
    },
}

impl Pending {
    fn one(at: Dest) -> Pending {
        Pending::One {
            at,
            rest: Vec::new(),
            retry: None,
            reached: false,
        }
    }
}

/// The same lookup again (for the next owner).
fn again(op: &Op) -> Option<Op> {
    match op {
        Op::Get { key, range } => Some(Op::Get {
            key: key.clone(),
            range: *range,
        }),
        Op::Head { key } => Some(Op::Head { key: key.clone() }),
        _ => None,
    }
}

/// One connection owned by this worker.
#[derive(Debug)]
pub struct Conn {
    peer: SocketAddr,
    inbuf: Vec<u8>,
    state: State,
    /// The current request's number (answers for others are stale).
    seq: u64,
    keep_alive: bool,
    /// Tracked sends (GET pieces) not yet taken by the socket.
    unsent: usize,
    held: bool,
    peer_closed: bool,
    closed: bool,
    /// When the current request's head was parsed, and what it is, for
    /// the latency histograms.
    started: Instant,
    op: Option<OpKind>,
    /// The current GET's ranges when it asked for several.
    ranges: Vec<ByteRange>,
    /// Body chunks of the current PUT not yet acknowledged by their
    /// owners on this node (C3).
    unacked: usize,
}

impl Conn {
    fn new(peer: SocketAddr) -> Conn {
        Conn {
            started: Instant::now(),
            op: None,
            ranges: Vec::new(),
            unacked: 0,
            peer,
            inbuf: Vec::new(),
            state: State::Idle,
            seq: 0,
            keep_alive: true,
            unsent: 0,
            held: false,
            peer_closed: false,
            closed: false,
        }
    }
}

pub fn on_event(st: &mut NodeState, ev: NetEvent) {
    let id = ev.conn;
    match ev.kind {
        NetEventKind::Accepted { peer, .. } => {
            st.front.connections.inc();
            st.conns.insert(id, Conn::new(peer));
        }
        NetEventKind::Data(buf) => {
            let Some(c) = st.conns.get_mut(&id) else {
                return;
            };
            if c.closed {
                return;
            }
            if c.inbuf.is_empty() {
                c.inbuf = buf;
            } else {
                c.inbuf.extend_from_slice(&buf);
            }
            process(st, id);
        }
        NetEventKind::PeerClosed => {
            let Some(c) = st.conns.get_mut(&id) else {
                return;
            };
            c.peer_closed = true;
            c.keep_alive = false;
            if matches!(c.state, State::Body { .. }) {
                fail(st, id, 400, "request body cut short");
            } else {
                process(st, id);
            }
        }
        NetEventKind::Error(e) => {
            if let Some(c) = st.conns.get(&id) {
                tracing::debug!(peer = %c.peer, "connection error: {e}");
            }
        }
        NetEventKind::Closed => {
            if let Some(c) = st.conns.remove(&id) {
                st.front.connections.dec();
                abort_put(st, id, c.seq, &c.state);
            }
        }
        NetEventKind::Sent { .. } => {
            if let Some(c) = st.conns.get_mut(&id) {
                c.unsent = c.unsent.saturating_sub(1);
                process(st, id);
            }
        }
        NetEventKind::SendRefused { queued, .. } => {
            if let Some(c) = st.conns.get(&id) {
                tracing::warn!(peer = %c.peer, queued, "send refused (the peer does not read); closing");
            }
            close(st, id);
        }
        _ => {}
    }
}

/// An owner's answer for request `origin`.
pub fn on_answer(st: &mut NodeState, origin: Origin, answer: Answer) {
    let id = origin.conn;
    match st.conns.get_mut(&id) {
        Some(c) if !c.closed && c.seq == origin.seq => {
            if matches!(answer, Answer::Took) {
                c.unacked = c.unacked.saturating_sub(1);
                process(st, id);
                return;
            }
        }
        _ => return,
    }
    apply(st, id, answer);
    process(st, id);
}

fn origin(st: &NodeState, id: ConnId, seq: u64) -> Origin {
    Origin {
        worker: st.index,
        conn: id,
        seq,
    }
}

/// Runs requests while they can make progress (module docs, C1).
fn process(st: &mut NodeState, id: ConnId) {
    // Each turn consumes input, finishes a response or changes state;
    // the bound only guards against a logic error spinning forever.
    for _ in 0..1_000_000 {
        let Some(c) = st.conns.get_mut(&id) else {
            return;
        };
        if c.closed {
            return;
        }
        match &c.state {
            State::Idle => {
                if c.inbuf.is_empty() {
                    if c.peer_closed {
                        close(st, id);
                    }
                    break;
                }
                match http::parse_head(&c.inbuf) {
                    Ok(None) => {
                        if c.peer_closed {
                            fail(st, id, 400, "request head cut short");
                        }
                        break;
                    }
                    Err(e) => {
                        fail(st, id, e.status(), &e.to_string());
                        return;
                    }
                    Ok(Some((head, n))) => {
                        c.inbuf.drain(..n);
                        c.seq += 1;
                        c.started = Instant::now();
                        c.op = match (&head.method, head.path.starts_with("/cache/")) {
                            (Method::Get, true) => Some(OpKind::Get),
                            (Method::Put | Method::Post, true) => Some(OpKind::Put),
                            (Method::Delete, true) => Some(OpKind::Delete),
                            _ => None,
                        };
                        st.front.http_requests.inc();
                        c.keep_alive = head.keep_alive && !c.peer_closed;
                        begin(st, id, &head);
                    }
                }
            }
            State::Body { .. } => {
                if !feed_body(st, id) {
                    break;
                }
            }
            State::Stream { .. } => {
                pump(st, id);
                if matches!(
                    st.conns.get(&id).map(|c| &c.state),
                    Some(State::Stream { .. })
                ) {
                    break;
                }
            }
            State::Wait { .. } | State::Stats { .. } => break,
        }
    }
    flow(st, id);
}

/// Pauses reading past [`MAX_INBUF`] buffered bytes, resumes below half.
fn flow(st: &mut NodeState, id: ConnId) {
    let Some(c) = st.conns.get_mut(&id) else {
        return;
    };
    if c.closed {
        return;
    }
    if !c.held && c.inbuf.len() > MAX_INBUF {
        c.held = true;
        net_request(st, id, NetClient::pause_reading);
    } else if c.held && c.inbuf.len() <= MAX_INBUF / 2 {
        c.held = false;
        net_request(st, id, NetClient::resume_reading);
    }
}

/// Starts the request `head`: its action now, or its body first.
fn begin(st: &mut NodeState, id: ConnId, head: &Head) {
    let action = route(st, head);
    let limit = st.limits.max_body;
    let framing = match head.body {
        BodyLen::None => return start(st, id, action),
        BodyLen::Length(n) if n > limit => {
            return fail(st, id, 413, &format!("body over the {limit}-byte limit"));
        }
        BodyLen::Length(n) => Framing::Length(n),
        BodyLen::Chunked => Framing::Chunked(Chunked::default()),
    };
    let sink = match action {
        // A refused request's body is not read: answer and close.
        Action::Respond(reply) if reply.status >= 400 => {
            if let Some(c) = st.conns.get_mut(&id) {
                c.keep_alive = false;
            }
            send(st, id, reply);
            return close(st, id);
        }
        Action::Put { dests, end } => Sink::Put {
            dests,
            end,
            buf: Vec::new(),
        },
        other => Sink::Discard {
            then: Box::new(other),
        },
    };
    if head.expect_continue {
        raw_send(st, id, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec());
    }
    if let Some(c) = st.conns.get_mut(&id) {
        c.unacked = 0;
        c.state = State::Body {
            framing,
            sink,
            total: 0,
        };
    }
}

/// Runs a request's action once its body (if any) is in.
fn start(st: &mut NodeState, id: ConnId, action: Action) {
    let Some(c) = st.conns.get_mut(&id) else {
        return;
    };
    let o = Origin {
        worker: st.index,
        conn: id,
        seq: c.seq,
    };
    match action {
        Action::Respond(reply) => {
            send(st, id, reply);
            finish(st, id);
        }
        Action::Op {
            dests,
            op,
            head_only,
            key,
            ranges,
        } => {
            c.ranges = ranges;
            // The key the operation is routed by at another node.
            let route = match &op {
                Op::Delete { key: k } => k.clone(),
                _ => key.clone(),
            };
            let Some((&first, rest)) = dests.split_first() else {
                return;
            };
            if let Op::Delete { key: k } = &op
                && dests.len() > 1
            {
                c.state = State::Wait {
                    head_only,
                    key,
                    pend: Pending::All {
                        left: dests.len(),
                        done: None,
                        fail: None,
                    },
                };
                let k = k.clone();
                for d in dests {
                    if let Some(a) = st.run_at(d, o, &k, Op::Delete { key: k.clone() }) {
                        apply(st, id, a);
                    }
                }
                return;
            }
            c.state = State::Wait {
                head_only,
                key,
                pend: Pending::One {
                    at: first,
                    rest: rest.to_vec(),
                    retry: again(&op),
                    reached: false,
                },
            };
            if let Some(a) = st.run_at(first, o, &route, op) {
                apply(st, id, a);
            }
        }
        Action::Stats { json_metrics } => {
            c.state = State::Stats {
                left: st.workers,
                sum: Stats::default(),
                json_metrics,
            };
            for w in 0..st.workers {
                if let Some(a) = st.run(w, o, Op::Stats) {
                    apply(st, id, a);
                }
            }
        }
        Action::Put { dests, end } => put_end(st, id, o, &dests, Vec::new(), end),
    }
}

/// Folds an answer into a waiting request that expects more than one
/// (a lookup falling over to the next owner, a write to every replica):
/// `None` while the request goes on waiting, else the answer to apply.
fn gather(st: &mut NodeState, id: ConnId, answer: Answer) -> Option<Answer> {
    let c = st.conns.get_mut(&id)?;
    let seq = c.seq;
    let State::Wait { pend, .. } = &mut c.state else {
        return Some(answer);
    };
    match pend {
        Pending::One {
            at,
            rest,
            retry,
            reached,
        } => {
            let miss = matches!(answer, Answer::Missing | Answer::Gone);
            let down = matches!(answer, Answer::Unreachable);
            if !(miss || down) {
                return Some(answer);
            }
            *reached |= miss;
            if rest.is_empty() || retry.is_none() {
                return Some(if *reached || miss {
                    Answer::Missing
                } else {
                    unreachable_answer()
                });
            }
            let next = rest.remove(0);
            *at = next;
            let op = retry.as_ref().and_then(again)?;
            if down {
                st.route.fallover_down.inc();
            } else {
                st.route.fallover_miss.inc();
            }
            let route = match &op {
                Op::Get { key, .. } | Op::Head { key } => key.clone(),
                _ => Vec::new(),
            };
            let o = origin(st, id, seq);
            let now = st.run_at(next, o, &route, op);
            now.and_then(|a| gather(st, id, a))
        }
        Pending::All { left, done, fail } => {
            match answer {
                Answer::Stored | Answer::Deleted => *done = Some(answer),
                other => {
                    if fail.is_none() || matches!(fail, Some(Answer::Unreachable)) {
                        *fail = Some(other);
                    }
                }
            }
            *left = left.saturating_sub(1);
            if *left > 0 {
                return None;
            }
            Some(match (done.take(), fail.take()) {
                (Some(ok), _) => ok,
                (None, Some(Answer::Unreachable) | None) => unreachable_answer(),
                (None, Some(f)) => f,
            })
        }
    }
}

fn unreachable_answer() -> Answer {
    Answer::Refused {
        status: 503,
        reason: "no owner of the key can be reached".into(),
    }
}

/// The response is wholly queued: next request (or close).
fn finish(st: &mut NodeState, id: ConnId) {
    let Some(c) = st.conns.get_mut(&id) else {
        return;
    };
    let took = c.started.elapsed();
    st.front.http_latency.observe(took.as_secs_f64() * 1000.0);
    if let Some(op) = c.op.take() {
        st.front.observe(op, took);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let slot = match op {
            OpKind::Get => Some(0),
            OpKind::Put => Some(1),
            OpKind::Delete => None,
        };
        if let Some(i) = slot {
            st.lat[i].0 += us;
            st.lat[i].1 += 1;
        }
    }
    c.state = State::Idle;
    if !c.keep_alive {
        close(st, id);
    }
}
