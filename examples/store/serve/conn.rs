//! Connection side: decode a socket's bytes into commands, send each to
//! its shard(s), and write the replies back in command order.
//!
//! **Order (C1):** every command gets the next sequence number of its
//! connection and a [`Pending`] entry at the back of the connection's
//! queue, with one slot per part (a multi-key command splits into one
//! part per key, `resp::split`; DBSIZE and FLUSHDB into one per shard).
//! Replies fill slots in any order; only the completed prefix of the
//! queue is encoded and sent, so replies leave in command order. A
//! shard runs the parts it gets in arrival order, and every part from
//! one connection reaches a shard through the same FIFO sink, so a
//! pipelined `SET k`, `GET k` reads its own write.
//!
//! **SCAN** walks the shards in order: the client's cursor is
//! `local * shards + shard`, where `local` is the shard's own cursor (0:
//! its start), and a shard that finishes hands over to the next one's
//! start; cursor 0 after the last shard ends the iteration. **INFO**
//! runs on every shard and its replies are summed (`info.rs`).
//!
//! **Backpressure:** past [`MAX_PENDING`] queued commands the socket
//! stops being read until the queue is under half of that, so a flood
//! waits in the client's TCP buffers.
//!
//! Malformed input (a `ProtocolError`) gets its error reply, after the
//! replies before it, and closes only that connection.
//!
//! **One write per connection per round:** what a read or a shard's
//! reply completes is not written at once; the connection is marked and
//! written once at the end of the worker's round ([`flush_marked`], from
//! `after_round`), so the replies to one pipelined batch that other
//! shards answer in the same round leave in one send, not one each (on
//! loopback each send also wakes the client).

use super::{Done, Msg, NodeState, Origin, shard_of};
use crate::resp::codec::{Decoder, Limits};
use crate::resp::command::{self, Request, Scan};
use crate::resp::exec::Session;
use crate::resp::reply::Reply;
use crate::resp::split::{Merge, Route};
use shared_nothing::io::{ConnId, NetClient, NetEvent, NetEventKind, SubmitError};
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Commands a connection may have queued before its socket stops being
/// read.
pub const MAX_PENDING: usize = 16 << 10;

/// How a command's part replies become its reply.
#[derive(Debug)]
enum Join {
    Merge(Merge),
    /// A SCAN part from this shard: its cursor becomes the client's.
    Scan {
        shard: usize,
    },
    /// INFO from every shard (`info.rs`).
    Info,
}

/// One command awaiting its reply.
#[derive(Debug)]
struct Pending {
    seq: u64,
    parts: Vec<Option<Reply>>,
    missing: usize,
    join: Join,
}

/// One connection owned by this worker.
#[derive(Debug)]
pub struct Conn {
    peer: SocketAddr,
    decoder: Decoder,
    session: Session,
    /// C1: the commands not answered yet, in order.
    queue: VecDeque<Pending>,
    next_seq: u64,
    /// Reading is paused (backpressure).
    held: bool,
    /// QUIT or bad input: read nothing more, close once answered.
    closing: bool,
    /// The close was requested; ignore what still arrives.
    closed: bool,
    /// In `NodeState::to_flush`: written at the end of the round.
    marked: bool,
}

pub fn on_event(st: &mut NodeState, ev: NetEvent) {
    let conn = ev.conn;
    match ev.kind {
        NetEventKind::Accepted { peer, .. } => {
            let limits = Limits {
                max_bulk: st.max_bulk,
                ..Limits::default()
            };
            let session = st.host.connect();
            st.conns.insert(
                conn,
                Conn {
                    peer,
                    decoder: Decoder::new(limits),
                    session,
                    queue: VecDeque::new(),
                    next_seq: 0,
                    held: false,
                    closing: false,
                    closed: false,
                    marked: false,
                },
            );
        }
        NetEventKind::Data(buf) => on_data(st, conn, &buf),
        NetEventKind::Error(e) => {
            if let Some(c) = st.conns.get(&conn) {
                tracing::debug!(peer = %c.peer, "connection error: {e}");
            }
        }
        NetEventKind::PeerClosed => {
            // The client may still read: close once everything is answered.
            if let Some(c) = st.conns.get_mut(&conn) {
                c.closing = true;
            }
            mark(st, conn);
        }
        NetEventKind::Closed => {
            st.conns.remove(&conn);
        }
        NetEventKind::SendRefused { queued, .. } => {
            if let Some(c) = st.conns.get(&conn) {
                tracing::warn!(peer = %c.peer, queued, "send refused; closing the connection");
            }
            close(st, conn);
        }
        _ => {}
    }
}

/// Decodes what arrived and dispatches every complete command.
fn on_data(st: &mut NodeState, conn: ConnId, buf: &[u8]) {
    let Some(c) = st.conns.get_mut(&conn) else {
        return;
    };
    if c.closing || c.closed {
        return;
    }
    c.decoder.feed(buf);
    let mut requests = Vec::new();
    let mut failure = None;
    loop {
        match c.decoder.next() {
            Ok(Some(frame)) => requests.push(command::parse(&frame.args())),
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(peer = %c.peer, "closing: {e}");
                failure = Some(e.reply());
                break;
            }
        }
    }
    for req in requests {
        if !dispatch(st, conn, req) {
            break;
        }
    }
    if let Some(reply) = failure {
        // After a QUIT the connection is closing: nothing more is read.
        if let Some(c) = st.conns.get_mut(&conn).filter(|c| !c.closing) {
            push_ready(c, reply);
            c.closing = true;
        }
    }
    hold_if_full(st, conn);
    mark(st, conn);
}

/// Where a command goes, decided before it is moved.
enum Target {
    Local,
    One(usize),
    Split,
    All,
}

/// The shard of a single-key part (a part without a key: shard 0).
fn part_shard(db: u32, part: &Request, shards: usize) -> usize {
    part.keys()
        .first()
        .map_or(0, |key| shard_of(db, key, shards))
}

/// Queues one command and sends its parts; `false` once the connection
/// is closing (QUIT), so the commands after it are not run.
fn dispatch(st: &mut NodeState, conn: ConnId, req: Result<Request, Reply>) -> bool {
    let shards = st.shards;
    let Some(c) = st.conns.get_mut(&conn) else {
        return false;
    };
    if c.closing {
        return false;
    }
    let req = match req {
        Ok(req) => req,
        Err(reply) => {
            push_ready(c, reply);
            return true;
        }
    };
    let db = c.session.db();
    let target = match req.route() {
        Route::Local => Target::Local,
        Route::Key(key) => Target::One(shard_of(db, key, shards)),
        Route::Keys(_) => Target::Split,
        Route::All => Target::All,
    };
    let (jobs, join) = match (target, req) {
        (Target::Local, req) => {
            let reply = st.front.execute(&mut c.session, req, super::now_ms());
            push_ready(c, reply);
            c.closing = c.session.closing();
            return !c.closing;
        }
        (Target::One(shard), req) => (vec![(shard, req)], Join::Merge(Merge::One)),
        (Target::Split, req) => {
            let (parts, merge) = req.split();
            let jobs = parts
                .into_iter()
                .map(|p| (part_shard(db, &p, shards), p))
                .collect();
            (jobs, Join::Merge(merge))
        }
        (Target::All, Request::Scan(scan)) => {
            let (shard, part) = scan_part(scan, shards);
            (vec![(shard, part)], Join::Scan { shard })
        }
        (Target::All, Request::Info(sections)) => (
            (0..shards)
                .map(|s| (s, Request::Info(sections.clone())))
                .collect(),
            Join::Info,
        ),
        (Target::All, Request::FlushDb) => (
            (0..shards).map(|s| (s, Request::FlushDb)).collect(),
            Join::Merge(Merge::AllOk),
        ),
        // DBSIZE: the sum over the shards.
        (Target::All, other) => (
            (0..shards).map(|s| (s, other.clone())).collect(),
            Join::Merge(Merge::Sum),
        ),
    };
    send_parts(st, conn, db, jobs, join);
    true
}

/// The shard a SCAN cursor is on and the request with its local cursor.
fn scan_part(scan: Scan, shards: usize) -> (usize, Request) {
    let n = shards.max(1) as u64;
    let shard = usize::try_from(scan.cursor % n).unwrap_or(0);
    let cursor = scan.cursor / n;
    (shard, Request::Scan(Scan { cursor, ..scan }))
}

/// The client's cursor for shard `shard`'s reply (module docs).
fn scan_reply(reply: Reply, shard: usize, shards: usize) -> Reply {
    let Reply::Array(mut items) = reply else {
        return reply;
    };
    let local = match items.first() {
        Some(Reply::Bulk(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<u64>().ok()),
        _ => None,
    };
    let Some(local) = local else {
        return Reply::Array(items);
    };
    let (n, s) = (shards as u64, shard as u64);
    let next = if local != 0 {
        local.checked_mul(n).and_then(|c| c.checked_add(s))
    } else if s + 1 < n {
        Some(s + 1)
    } else {
        Some(0)
    };
    match (next, items.first_mut()) {
        (Some(next), Some(first)) => {
            *first = Reply::bulk_decimal(next);
            Reply::Array(items)
        }
        _ => Reply::error("ERR cursor space exhausted; restart the scan"),
    }
}

/// Queues the command with one slot per job and runs or sends each job.
fn send_parts(st: &mut NodeState, conn: ConnId, db: u32, jobs: Vec<(usize, Request)>, join: Join) {
    let Some(c) = st.conns.get_mut(&conn) else {
        return;
    };
    let seq = c.next_seq;
    c.next_seq += 1;
    c.queue.push_back(Pending {
        seq,
        parts: (0..jobs.len()).map(|_| None).collect(),
        missing: jobs.len(),
        join,
    });
    for (part, (shard, req)) in jobs.into_iter().enumerate() {
        let origin = Origin {
            worker: st.index,
            conn,
            seq,
            part,
        };
        if shard == st.index {
            if let Some((origin, reply)) = st.host.run(origin, db, req, super::now_ms()) {
                fill(st, Done { origin, reply });
            }
        } else {
            st.deliver(shard, Msg::Run { origin, db, req });
        }
    }
}

/// Queues a reply that is already known.
fn push_ready(c: &mut Conn, reply: Reply) {
    let seq = c.next_seq;
    c.next_seq += 1;
    c.queue.push_back(Pending {
        seq,
        parts: vec![Some(reply)],
        missing: 0,
        join: Join::Merge(Merge::One),
    });
}

/// Puts a part's reply into its slot (nothing if the connection is gone).
fn fill(st: &mut NodeState, done: Done) {
    let Some(c) = st.conns.get_mut(&done.origin.conn) else {
        return;
    };
    let Some(front) = c.queue.front().map(|p| p.seq) else {
        return;
    };
    let Some(index) = done
        .origin
        .seq
        .checked_sub(front)
        .and_then(|i| usize::try_from(i).ok())
    else {
        return;
    };
    let Some(p) = c.queue.get_mut(index) else {
        return;
    };
    if let Some(slot) = p.parts.get_mut(done.origin.part) {
        if slot.is_none() {
            p.missing = p.missing.saturating_sub(1);
        }
        *slot = Some(done.reply);
    }
}

/// A reply from a shard: fill its slot; what is complete is written at
/// the end of the round.
pub fn on_done(st: &mut NodeState, done: Done) {
    let conn = done.origin.conn;
    fill(st, done);
    mark(st, conn);
}

/// Writes `conn` at the end of this round (once, however often marked).
fn mark(st: &mut NodeState, conn: ConnId) {
    if let Some(c) = st.conns.get_mut(&conn)
        && !c.marked
    {
        c.marked = true;
        st.to_flush.push(conn);
    }
}

/// The end of a round: writes every marked connection's completed
/// replies.
pub fn flush_marked(st: &mut NodeState) {
    let mut marked = std::mem::take(&mut st.to_flush);
    for conn in marked.drain(..) {
        if let Some(c) = st.conns.get_mut(&conn) {
            c.marked = false;
        }
        flush(st, conn);
    }
    // Keep the allocation for the next round.
    if st.to_flush.is_empty() {
        st.to_flush = marked;
    }
}

/// Encodes and sends the completed prefix of the queue (C1); closes a
/// closing connection once everything is answered; resumes reading once
/// the queue is short again.
fn flush(st: &mut NodeState, conn: ConnId) {
    let shards = st.shards;
    let Some(c) = st.conns.get_mut(&conn) else {
        return;
    };
    if c.closed {
        return;
    }
    let mut out = Vec::new();
    while c.queue.front().is_some_and(|p| p.missing == 0) {
        let Some(p) = c.queue.pop_front() else {
            break;
        };
        let replies: Vec<Reply> = p.parts.into_iter().flatten().collect();
        let reply = match p.join {
            Join::Merge(m) => m.merge(replies),
            Join::Scan { shard } => {
                let first = replies.into_iter().next().unwrap_or(Reply::Null);
                scan_reply(first, shard, shards)
            }
            Join::Info => super::info::merge(replies),
        };
        reply.encode(&mut out);
    }
    let done = c.closing && c.queue.is_empty();
    let resume = c.held && c.queue.len() <= MAX_PENDING / 2;
    if resume {
        c.held = false;
    }
    if !out.is_empty() {
        send(st, conn, out);
    }
    if resume {
        net_request(st, conn, NetClient::resume_reading);
    }
    if done {
        close(st, conn);
    }
}

/// Stops reading a connection whose queue is full (module docs).
fn hold_if_full(st: &mut NodeState, conn: ConnId) {
    let hold = match st.conns.get_mut(&conn) {
        Some(c) if !c.held && !c.closed && c.queue.len() > MAX_PENDING => {
            c.held = true;
            true
        }
        _ => false,
    };
    if hold {
        net_request(st, conn, NetClient::pause_reading);
    }
}

/// Writes `bytes` to `conn`, retried while the network worker's queue is
/// full (it is draining); dropped once the connection is gone.
fn send(st: &mut NodeState, conn: ConnId, bytes: Vec<u8>) {
    let n = st.clients.len().max(1);
    let Some(client) = st.clients.get_mut(conn.worker() % n) else {
        return;
    };
    let mut buf = bytes;
    loop {
        match client.send(conn, buf) {
            Ok(()) => return,
            Err(e) if e.is_full() => {
                buf = e.into_inner();
                std::thread::yield_now();
            }
            Err(_) => return,
        }
    }
}

/// Asks the network worker to close `conn` after its queued sends.
fn close(st: &mut NodeState, conn: ConnId) {
    match st.conns.get_mut(&conn) {
        Some(c) if !c.closed => c.closed = true,
        _ => return,
    }
    net_request(st, conn, NetClient::close);
}

/// A request on `conn` to the network worker that owns it, retried while
/// its queue is full; dropped once it has stopped.
fn net_request(
    st: &mut NodeState,
    conn: ConnId,
    request: fn(&mut NetClient, ConnId) -> Result<(), SubmitError<ConnId>>,
) {
    let n = st.clients.len().max(1);
    let Some(client) = st.clients.get_mut(conn.worker() % n) else {
        return;
    };
    let mut id = conn;
    loop {
        match request(client, id) {
            Ok(()) => return,
            Err(e) if e.is_full() => {
                id = e.into_inner();
                std::thread::yield_now();
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor_of(reply: &Reply) -> u64 {
        match reply {
            Reply::Array(items) => match items.first() {
                Some(Reply::Bulk(b)) => std::str::from_utf8(b).unwrap().parse().unwrap(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    fn shard_reply(local: u64) -> Reply {
        Reply::Array(vec![Reply::bulk_decimal(local), Reply::Array(vec![])])
    }

    #[test]
    fn scan_cursors_walk_the_shards_in_order() {
        let shards = 3;
        let (s, part) = scan_part(
            Scan {
                cursor: 0,
                pattern: None,
                count: 10,
                kind: None,
            },
            shards,
        );
        assert_eq!(s, 0);
        assert!(matches!(part, Request::Scan(Scan { cursor: 0, .. })));
        // Shard 0 goes on at its cursor 7: the client's cursor maps back.
        let c = cursor_of(&scan_reply(shard_reply(7), 0, shards));
        assert_eq!((c % 3, c / 3), (0, 7));
        // Shard 0 done: shard 1 from its start.
        assert_eq!(cursor_of(&scan_reply(shard_reply(0), 0, shards)), 1);
        let (s, part) = scan_part(
            Scan {
                cursor: 1,
                pattern: None,
                count: 10,
                kind: None,
            },
            shards,
        );
        assert_eq!(s, 1);
        assert!(matches!(part, Request::Scan(Scan { cursor: 0, .. })));
        // The last shard done: the iteration ends.
        assert_eq!(cursor_of(&scan_reply(shard_reply(0), 2, shards)), 0);
        let overflow = scan_reply(shard_reply(u64::MAX), 1, shards);
        assert!(overflow.is_error());
    }
}
