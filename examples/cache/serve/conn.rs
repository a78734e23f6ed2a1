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

use super::owner::PIECE;
use super::{Answer, BodyEnd, Dest, NodeState, Op, Origin, PutEnd, RangeEnd, owner_of};
use crate::engine::{CHUNK, Placement, Stats};
use crate::http::{self, BodyLen, ByteRange, Chunked, Head, Method, Want};
use crate::metrics::OpKind;
use crate::sparse::{Progress, SparseError};
use shared_nothing::io::{ConnId, NetClient, NetEvent, NetEventKind, SubmitError};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

const CACHE_ALLOW: &str = "GET, PUT, POST, DELETE, HEAD, OPTIONS";
const SPARSE_ALLOW: &str = "GET, POST, PUT, PATCH, DELETE";

/// A response not yet encoded.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// A HEAD: the head alone, `Content-Length` as for a GET.
    head_only: bool,
    /// `Content-Length` when it is not the body's (HEAD metadata).
    length: Option<u64>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body: body.into(),
            head_only: false,
            length: None,
        }
    }

    fn text(status: u16, msg: &str) -> Reply {
        Reply::new(status, "text/plain", format!("{msg}\n"))
    }

    fn json(value: &serde_json::Value) -> Reply {
        let body = serde_json::to_string_pretty(value).unwrap_or_default();
        Reply::new(200, "application/json", body)
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            head_only: false,
            length: None,
        }
    }

    fn header(mut self, name: &'static str, value: impl ToString) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    fn head_only(mut self, on: bool) -> Reply {
        self.head_only = on;
        self
    }

    fn render(self, close: bool) -> Vec<u8> {
        let length = match self.status {
            204 => None,
            _ => Some(self.length.unwrap_or(self.body.len() as u64)),
        };
        let mut out = http::response_head(self.status, &self.headers, length, close);
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// What a parsed request does.
#[derive(Debug)]
enum Action {
    Respond(Reply),
    /// `op` at the first of `dests`; a lookup (GET, HEAD) falls over
    /// to the next on a miss or an unreachable node, a DELETE goes to
    /// all of them.
    Op {
        dests: Vec<Dest>,
        op: Op,
        head_only: bool,
        key: Vec<u8>,
        /// A GET's ranges when it asked for several ([`RangeReq::Many`]).
        ranges: Vec<ByteRange>,
    },
    /// `/stats`, or with `json_metrics` the JSON `/metrics`.
    Stats {
        json_metrics: bool,
    },
    /// A body for every one of `dests` (a key's replicas).
    Put {
        dests: Vec<Dest>,
        end: BodyEnd,
    },
}

#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
}

/// Where body bytes go.
#[derive(Debug)]
enum Sink {
    Put {
        dests: Vec<Dest>,
        end: BodyEnd,
        /// The chunk being filled (at most [`CHUNK`] bytes).
        buf: Vec<u8>,
    },
    /// A body the request does not use.
    Discard { then: Box<Action> },
}

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

/// A `multipart/byteranges` body being sent (RFC 9110 section 14.6): the
/// parts after the current one, and what frames them.
#[derive(Debug)]
struct Multi {
    boundary: String,
    size: u64,
    rest: std::collections::VecDeque<(u64, u64)>,
}

impl Multi {
    /// The delimiter and headers that open part `(offset, len)`.
    fn part_head(&self, offset: u64, len: u64) -> Vec<u8> {
        format!(
            "\r\n--{}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {offset}-{}/{}\r\n\r\n",
            self.boundary,
            offset + len - 1,
            self.size
        )
        .into_bytes()
    }

    /// The closing delimiter.
    fn tail(&self) -> Vec<u8> {
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

/// Tells the owner of a PUT in progress to drop what it staged.
fn abort_put(st: &mut NodeState, id: ConnId, seq: u64, state: &State) {
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

/// Consumes buffered body bytes; `true` once the body is complete (the
/// state has moved on), `false` when more input is needed or the
/// connection failed.
fn feed_body(st: &mut NodeState, id: ConnId) -> bool {
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
    // C3: a streamed PUT takes no more input than its owners' windows
    // have room for; the rest waits in `inbuf` (and the socket pauses
    // past MAX_INBUF) until they acknowledge chunks.
    let room = match sink {
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
    };
    let avail = inbuf.len().min(room);
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
                let to = match sink {
                    Sink::Put { dests, end, .. } => Some((dests.clone(), body_key(end).to_vec())),
                    Sink::Discard { .. } => None,
                };
                let o = origin(st, id, seq);
                if let Some((dests, route)) = to {
                    for d in dests {
                        let _ = st.run_at(d, o, &route, Op::Abort);
                    }
                }
                fail_plain(st, id, 400, &e.to_string());
                return false;
            }
        },
    };
    inbuf.drain(..used);
    let to = match sink {
        Sink::Put { dests, end, .. } => Some((dests.clone(), body_key(end).to_vec(), streams(end))),
        Sink::Discard { .. } => None,
    };
    let o = origin(st, id, seq);
    if let Some((dests, route, stream)) = to {
        for data in full {
            if stream && let Some(c) = st.conns.get_mut(&id) {
                c.unacked += dests.iter().filter(|d| matches!(d, Dest::Local(_))).count();
            }
            let took = fan_out(st, &dests, o, &route, data, None, stream)
                .iter()
                .filter(|a| matches!(a, Answer::Took))
                .count();
            if let Some(c) = st.conns.get_mut(&id) {
                c.unacked = c.unacked.saturating_sub(took);
            }
        }
        if over {
            for d in dests {
                let _ = st.run_at(d, o, &route, Op::Abort);
            }
        }
    }
    if over {
        fail_plain(st, id, 413, &format!("body over the {limit}-byte limit"));
        return false;
    }
    if !done {
        return false;
    }
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
fn put_end(st: &mut NodeState, id: ConnId, o: Origin, dests: &[Dest], buf: Vec<u8>, end: BodyEnd) {
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

fn stats_json(s: &Stats) -> serde_json::Value {
    serde_json::json!({
        "hits": s.hits,
        "misses": s.misses,
        "partial_hits": s.partial_hits,
        "bytes_read": s.bytes_read,
        "bytes_written": s.bytes_written,
        "evictions": s.evictions,
        "entry_count": s.entry_count,
        "size_bytes": s.size_bytes,
        "capacity_bytes": s.capacity_bytes,
        "hit_rate_percent": s.hit_rate_percent(),
    })
}

fn avg_ms((us, n): (u64, u64)) -> f64 {
    if n == 0 {
        0.0
    } else {
        us as f64 / n as f64 / 1000.0
    }
}

/// The JSON `/metrics` (spec section 3.4's fields), from the same
/// counters as the Prometheus text.
fn metrics_json(s: &Stats, uptime: u64) -> serde_json::Value {
    serde_json::json!({
        "cache": {
            "hits": s.hits,
            "misses": s.misses,
            "partial_hits": s.partial_hits,
            "gets": s.gets,
            "puts": s.puts,
            "deletes": s.deletes,
            "bytes_read": s.bytes_read,
            "bytes_written": s.bytes_written,
        },
        "memory_cache": {
            "size_bytes": s.memory.size_bytes,
            "capacity_bytes": s.memory.capacity_bytes,
            "entries": s.memory.entries,
            "evictions": s.memory.evictions,
            "hits": s.memory.hits,
            "misses": s.memory.misses,
            "chunks": s.memory.chunks,
        },
        "disk_cache": {
            "size_bytes": s.disk.size_bytes,
            "capacity_bytes": s.disk.capacity_bytes,
            "entries": s.disk.entries,
            "evictions": s.disk.evictions,
            "hits": s.disk.hits,
            "misses": s.disk.misses,
            "chunks": s.disk.chunks,
            "chunks_read": s.chunks_read,
            "chunks_written": s.chunks_written,
            "corrupt_chunks": s.corrupt,
            "errors": s.disk_errors,
        },
        "cluster": {
            "nodes_total": 1,
            "nodes_active": 1,
            "messages_sent": 0,
            "messages_received": 0,
        },
        "http": {
            "requests": s.http_requests,
            "errors": s.http_errors,
            "connections_active": s.connections,
        },
        "latency_ms": {
            "get_avg": avg_ms(s.get_us),
            "put_avg": avg_ms(s.put_us),
        },
        "uptime_seconds": uptime,
    })
}

/// Applies an owner's answer to the request in progress.
fn apply(st: &mut NodeState, id: ConnId, answer: Answer) {
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
            let Some(c) = st.conns.get_mut(&id) else {
                return;
            };
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
            // Several ranges coalesced into one come without bytes (the
            // owner answered the metadata only): all are pulled.
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
                // A non-empty range always comes with bytes; without
                // them the promised length cannot be kept.
                close(st, id);
            }
        }
        (State::Wait { head_only, .. }, Answer::Missing | Answer::Gone) => {
            send(
                st,
                id,
                Reply::text(404, "Key not found").head_only(head_only),
            );
            finish(st, id);
        }
        (
            State::Wait { .. },
            Answer::Meta {
                size,
                chunks,
                flags,
            },
        ) => {
            let mut reply = Reply::empty(200)
                .header("X-ElCache-Size", size)
                .header("X-ElCache-Chunks", chunks)
                .header("X-ElCache-Flags", flags)
                .header("Accept-Ranges", "bytes")
                .head_only(true);
            reply.length = Some(size);
            send(st, id, reply);
            finish(st, id);
        }
        (State::Wait { .. }, Answer::Stored) => {
            send(st, id, Reply::empty(201));
            finish(st, id);
        }
        (State::Wait { .. }, Answer::Refused { status, reason }) => {
            send(st, id, Reply::text(status, &reason));
            finish(st, id);
        }
        (State::Wait { .. }, Answer::Deleted) => {
            send(st, id, Reply::empty(204));
            finish(st, id);
        }
        (State::Wait { .. }, Answer::SparseCreated { total }) => {
            send(st, id, Reply::empty(201).header("X-ElCache-Size", total));
            finish(st, id);
        }
        (State::Wait { .. }, Answer::Written(p)) => {
            send(
                st,
                id,
                Reply::empty(202).header("X-ElCache-Completion", completion(&p)),
            );
            finish(st, id);
        }
        (State::Wait { key, .. }, Answer::SparseStatus(p)) => {
            let body = serde_json::json!({
                "key": String::from_utf8_lossy(&key),
                "total_size": p.total,
                "completion_percent": p.percent(),
                "complete": p.complete(),
            });
            send(st, id, Reply::json(&body));
            finish(st, id);
        }
        (State::Wait { .. }, Answer::SparseFailed(e)) => {
            send(st, id, sparse_failure(&e));
            finish(st, id);
        }
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
                    metrics_json(&sum, st.started.elapsed().as_secs())
                } else {
                    stats_json(&sum)
                };
                send(st, id, Reply::json(&body));
                finish(st, id);
            } else {
                c.state = State::Stats {
                    left: left - 1,
                    sum,
                    json_metrics,
                };
            }
        }
        (
            State::Stream {
                at,
                key,
                id: entry,
                next,
                end,
                multi,
                ..
            },
            Answer::Piece(mut piece),
        ) if !piece.is_empty() && next + piece.len() as u64 <= end => {
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
        (State::Stream { .. }, _) => {
            // The value changed under a long GET: its head is sent, so
            // the only honest end is to cut the connection.
            tracing::debug!(peer = %c.peer, "value changed during a GET; closing");
            close(st, id);
        }
        (state, answer) => {
            tracing::debug!(?answer, "answer out of place; ignored");
            c.state = state;
        }
    }
}

/// Answers a GET for several ranges, `parts` (at least two, from
/// [`http::resolve_set`]), as `multipart/byteranges`: the head with the
/// whole body's length (every part's delimiter, headers and bytes), then
/// each part's bytes pulled from the owner as a single range's are, only
/// the chunks the parts cover being read.
#[allow(clippy::too_many_arguments)]
fn start_multipart(
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
fn pump(st: &mut NodeState, id: ConnId) {
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

/// Routes a request head to its action.
fn route(st: &NodeState, head: &Head) -> Action {
    let m = &head.method;
    let not_allowed = |allow: &str| {
        Action::Respond(Reply::text(405, "Method Not Allowed").header("Allow", allow))
    };
    match head.path.as_str() {
        "/health" => match m {
            Method::Get | Method::Head => Action::Respond(
                Reply::json(&serde_json::json!({"status": "healthy"}))
                    .head_only(*m == Method::Head),
            ),
            _ => not_allowed("GET, HEAD"),
        },
        "/stats" => match m {
            Method::Get => Action::Stats {
                json_metrics: false,
            },
            _ => not_allowed("GET"),
        },
        "/metrics" => match m {
            Method::Get
                if head
                    .accept
                    .as_deref()
                    .is_some_and(|a| a.contains("application/json")) =>
            {
                Action::Stats { json_metrics: true }
            }
            Method::Get => {
                let openmetrics = head
                    .accept
                    .as_deref()
                    .is_some_and(|a| a.contains("application/openmetrics-text"));
                let kind = if openmetrics {
                    "application/openmetrics-text; version=1.0.0; charset=utf-8"
                } else {
                    "text/plain; version=0.0.4; charset=utf-8"
                };
                Action::Respond(Reply::new(200, kind, (st.text)()))
            }
            _ => not_allowed("GET"),
        },
        "/cluster" | "/cluster/nodes" => match m {
            Method::Get => Action::Respond(Reply::json(&match &st.cluster {
                Some(view) => view.json(),
                None => serde_json::json!({"mode": "standalone"}),
            })),
            _ => not_allowed("GET"),
        },
        path => {
            if let Some(key) = path.strip_prefix("/cache/")
                && !key.is_empty()
                && !key.contains('/')
            {
                return cache_route(st, head, key);
            }
            match path.strip_prefix("/sparse/").map(|k| {
                k.strip_suffix("/finalize")
                    .map_or((k, false), |k| (k, true))
            }) {
                Some((key, finalize)) if !key.is_empty() && !key.contains('/') => {
                    sparse_route(st, head, key, finalize)
                }
                _ => Action::Respond(Reply::text(404, "Not Found")),
            }
        }
    }
}

fn bad(msg: &str) -> Action {
    Action::Respond(Reply::text(400, msg))
}

fn cache_route(st: &NodeState, head: &Head, key: &str) -> Action {
    if key.len() > MAX_KEY {
        return bad("Key too long");
    }
    let key = key.as_bytes().to_vec();
    // `X-ElCache-No-Cluster: true` keeps the request on this node.
    let dests = st.dests(&key, head.no_cluster);
    let op = |op: Op, head_only: bool, key: Vec<u8>| Action::Op {
        dests: dests.clone(),
        op,
        head_only,
        key,
        ranges: Vec::new(),
    };
    match &head.method {
        Method::Get => {
            let query = match head.query.as_deref().map(http::parse_query_range) {
                Some(Err(e)) => return bad(&e.to_string()),
                Some(Ok(q)) => q,
                None => None,
            };
            // `?range=` overrides the header (ElCache's rule).
            let (range, ranges) = match query {
                Some(q) => (q, Vec::new()),
                None => http::range_request(head.range.as_deref()),
            };
            Action::Op {
                dests: dests.clone(),
                op: Op::Get {
                    key: key.clone(),
                    range,
                },
                head_only: false,
                key,
                ranges,
            }
        }
        Method::Head => op(Op::Head { key: key.clone() }, true, key),
        Method::Delete => op(Op::Delete { key }, false, Vec::new()),
        Method::Put | Method::Post => {
            let (ttl, flags) = match ttl_and_flags(head) {
                Ok((ttl, flags)) => (ttl.flatten(), flags.unwrap_or(0)),
                Err(e) => return bad(e),
            };
            let place = Placement {
                memory: !head.no_memory,
                disk: !head.no_disk,
            };
            Action::Put {
                dests: dests.clone(),
                end: BodyEnd::Store(PutEnd {
                    key,
                    ttl,
                    flags,
                    place,
                    only_new: false,
                }),
            }
        }
        Method::Options => Action::Respond(
            Reply::empty(200)
                .header("Allow", CACHE_ALLOW)
                .header("Accept-Ranges", "bytes"),
        ),
        Method::Patch | Method::Other(_) => {
            Action::Respond(Reply::text(405, "Method Not Allowed").header("Allow", CACHE_ALLOW))
        }
    }
}

/// `X-ElCache-TTL` (`Some(None)`: 0, no expiry) and `X-ElCache-Flags`
/// (cut to 32 bits, as ElCache does), each `None` when absent.
type TtlFlags = (Option<Option<Duration>>, Option<u32>);

/// Reads [`TtlFlags`] from `head`.
///
/// # Errors
/// The 400 text for a malformed one.
fn ttl_and_flags(head: &Head) -> Result<TtlFlags, &'static str> {
    let ttl = match head.ttl.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(0)) => Some(None),
        Some(Ok(n)) if n > 0 => Some(Some(Duration::from_secs(n.unsigned_abs()))),
        Some(_) => return Err("X-ElCache-TTL must be a whole number of seconds, 0 or more"),
    };
    let flags = match head.flags.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n as u32),
        Some(Err(_)) => return Err("X-ElCache-Flags must be an unsigned number"),
    };
    Ok((ttl, flags))
}

/// The `/sparse/{key}` routes (spec sections 3.1 and 3.3), and
/// `/sparse/{key}/finalize` when `finalize`.
fn sparse_route(st: &NodeState, head: &Head, key: &str, finalize: bool) -> Action {
    let m = &head.method;
    let not_allowed = |allow: &str| {
        Action::Respond(Reply::text(405, "Method Not Allowed").header("Allow", allow))
    };
    if finalize && *m != Method::Post {
        return not_allowed("POST");
    }
    if !finalize
        && !matches!(
            m,
            Method::Get | Method::Post | Method::Put | Method::Patch | Method::Delete
        )
    {
        return not_allowed(SPARSE_ALLOW);
    }
    if key.len() > MAX_KEY {
        return bad("Key too long");
    }
    let key = key.as_bytes().to_vec();
    // Sparse values live on the node that is asked (not replicated).
    let owner = owner_of(&key, st.workers);
    let op = |op: Op, key: Vec<u8>| Action::Op {
        ranges: Vec::new(),
        dests: vec![Dest::Local(owner)],
        op,
        head_only: false,
        key,
    };
    let (ttl, flags) = match ttl_and_flags(head) {
        Ok(v) => v,
        Err(e) => return bad(e),
    };
    if finalize {
        return op(Op::SparseFinalize { key, ttl, flags }, Vec::new());
    }
    match m {
        Method::Post => {
            let total = match head.size.as_deref().map(str::parse::<u64>) {
                Some(Ok(n)) if n > 0 => n,
                _ => return bad("X-ElCache-Size must be a number of bytes above 0"),
            };
            if total > st.limits.max_body {
                return Action::Respond(Reply::text(
                    413,
                    &format!(
                        "X-ElCache-Size {total} is over the {}-byte limit",
                        st.limits.max_body
                    ),
                ));
            }
            op(
                Op::SparseCreate {
                    key,
                    total,
                    ttl: ttl.flatten(),
                    flags: flags.unwrap_or(0),
                },
                Vec::new(),
            )
        }
        Method::Put | Method::Patch => {
            if head.body == BodyLen::None {
                return bad("a sparse write needs a body");
            }
            let (offset, len, total) = match head.content_range.as_deref() {
                Some(v) => match http::parse_content_range(v) {
                    Ok(r) => (r.first, r.len(), r.total),
                    Err(e) => return bad(&e.to_string()),
                },
                None => match head.query.as_deref().map(http::parse_query_offset) {
                    Some(Err(e)) => return bad(&e.to_string()),
                    Some(Ok(o)) => (o.unwrap_or(0), None, None),
                    None => (0, None, None),
                },
            };
            Action::Put {
                dests: vec![Dest::Local(owner)],
                end: BodyEnd::WriteRange(RangeEnd {
                    key,
                    offset,
                    len,
                    total,
                    nonempty: true,
                }),
            }
        }
        Method::Get => op(Op::SparseStatus { key: key.clone() }, key),
        _ => op(Op::SparseDelete { key }, Vec::new()),
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

/// Answers `status` with `Connection: close`, drops a PUT in progress,
/// and closes.
fn fail(st: &mut NodeState, id: ConnId, status: u16, msg: &str) {
    if let Some(c) = st.conns.get_mut(&id) {
        let state = std::mem::replace(&mut c.state, State::Idle);
        let seq = c.seq;
        abort_put(st, id, seq, &state);
    }
    fail_plain(st, id, status, msg);
}

/// As [`fail`], the PUT (if any) already dropped.
fn fail_plain(st: &mut NodeState, id: ConnId, status: u16, msg: &str) {
    if let Some(c) = st.conns.get_mut(&id) {
        tracing::debug!(peer = %c.peer, status, "{msg}");
        c.keep_alive = false;
        c.state = State::Idle;
        c.inbuf.clear();
    }
    send(st, id, Reply::text(status, msg));
    close(st, id);
}

fn send(st: &mut NodeState, id: ConnId, reply: Reply) {
    if reply.status >= 400 {
        st.front.http_errors.inc();
    }
    let close = st.conns.get(&id).is_none_or(|c| !c.keep_alive);
    raw_send(st, id, reply.render(close));
}

fn raw_send(st: &mut NodeState, id: ConnId, bytes: Vec<u8>) {
    submit(st, id, bytes, None);
}

fn tracked_send(st: &mut NodeState, id: ConnId, bytes: Vec<u8>, tag: u64) {
    submit(st, id, bytes, Some(tag));
}

/// Writes `bytes` to `id`, retried while the network worker's queue is
/// full (it is draining); dropped once the connection is gone.
fn submit(st: &mut NodeState, id: ConnId, bytes: Vec<u8>, tag: Option<u64>) {
    if st.conns.get(&id).is_none_or(|c| c.closed) {
        return;
    }
    let n = st.clients.len().max(1);
    let Some(client) = st.clients.get_mut(id.worker() % n) else {
        return;
    };
    let mut buf = bytes;
    for _ in 0..1_000_000 {
        let sent = match tag {
            Some(t) => client.send_tracked(id, buf, t),
            None => client.send(id, buf),
        };
        match sent {
            Ok(()) => return,
            Err(e) if e.is_full() => {
                buf = e.into_inner();
                std::thread::yield_now();
            }
            Err(_) => return,
        }
    }
    tracing::warn!("network worker queue stayed full; response dropped");
}

/// Asks the network worker to close `id` after its queued sends.
fn close(st: &mut NodeState, id: ConnId) {
    match st.conns.get_mut(&id) {
        Some(c) if !c.closed => c.closed = true,
        _ => return,
    }
    net_request(st, id, NetClient::close);
}

fn net_request(
    st: &mut NodeState,
    id: ConnId,
    request: fn(&mut NetClient, ConnId) -> Result<(), SubmitError<ConnId>>,
) {
    let n = st.clients.len().max(1);
    let Some(client) = st.clients.get_mut(id.worker() % n) else {
        return;
    };
    let mut conn = id;
    for _ in 0..1_000_000 {
        match request(client, conn) {
            Ok(()) => return,
            Err(e) if e.is_full() => {
                conn = e.into_inner();
                std::thread::yield_now();
            }
            Err(_) => return,
        }
    }
}
