//! Connection side: decode what a socket sends, forward it to the log
//! owner, and write back what the owner answers.
//!
//! **Backpressure:** a producer may have at most [`PRODUCER_WINDOW`] bytes
//! of records forwarded and not yet acked; past that its socket stops being
//! read (`NetClient::pause_reading`) until acks bring it under half the
//! window, so a flood while the disk is slow (or full) waits in the
//! producer's TCP buffers, not in the broker's memory: at most the window
//! per producer connection.

use super::logs::{LogKey, owner_of};
use super::{Msg, NodeState, OWNER};
use crate::protocol::{self, FrameDecoder, NameDecoder, Role, StartDecoder};
use shared_nothing::io::{ConnId, NetClient, NetEvent, NetEventKind, SubmitError};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

/// Payload bytes a producer may have forwarded to the owner and not yet
/// acked before its socket stops being read.
pub const PRODUCER_WINDOW: usize = 4 << 20;

/// One connection owned by this worker.
#[derive(Debug)]
pub struct Conn {
    peer: SocketAddr,
    role: RoleState,
    /// Its log (set by the handshake) and the worker that owns it.
    log: LogKey,
    owner: usize,
}

#[derive(Debug)]
enum RoleState {
    /// Waiting for the role byte.
    Handshake,
    /// A named role byte came: waiting for the log's name.
    Naming { role: Role, name: NameDecoder },
    Producer {
        decoder: FrameDecoder,
        /// Records forwarded to the owner / acks written back.
        sent: u64,
        acked: u64,
        /// Per forwarded `Append` not fully acked: (records, bytes).
        window: VecDeque<(u64, usize)>,
        /// Bytes in `window`.
        unacked: usize,
        /// Reading is paused: the window is full.
        held: bool,
        /// Bad input or end of stream: decode nothing more, close once the
        /// records before it are acked (so the client learns which were
        /// stored; a half-closed producer still reads all its acks).
        draining: bool,
    },
    Consumer {
        start: StartDecoder,
        subscribed: bool,
    },
    /// We asked the network worker to close it; ignore what still arrives.
    Closing,
}

pub fn on_event(st: &mut NodeState, ev: NetEvent) {
    let conn = ev.conn;
    match ev.kind {
        NetEventKind::Accepted { peer, .. } => {
            st.conns.insert(
                conn,
                Conn {
                    peer,
                    role: RoleState::Handshake,
                    log: None,
                    owner: OWNER,
                },
            );
        }
        NetEventKind::Data(buf) => on_data(st, conn, &buf),
        NetEventKind::Error(e) => {
            if let Some(c) = st.conns.get(&conn) {
                tracing::warn!(peer = %c.peer, "connection error: {e}");
            }
        }
        NetEventKind::PeerClosed => on_peer_closed(st, conn),
        NetEventKind::Closed => on_closed(st, conn),
        // A consumer chunk has left for the socket: its credit goes back,
        // so a consumer that stops reading holds one chunk, not a queue.
        NetEventKind::Sent {
            tag: CONSUMER_CHUNK,
            ..
        } => {
            if let Some(Conn {
                role: RoleState::Consumer { .. },
                log,
                owner,
                ..
            }) = st.conns.get(&conn)
            {
                let (log, owner) = (log.clone(), *owner);
                st.deliver(owner, Msg::Credit { log, conn });
            }
        }
        // Past the connection's send bound (it cannot be: one chunk in
        // flight per consumer, acks are small): nothing lost silently.
        NetEventKind::SendRefused { queued, .. } => {
            if let Some(c) = st.conns.get(&conn) {
                tracing::error!(peer = %c.peer, queued, "send refused; closing the connection");
            }
            close(st, conn);
        }
        _ => {}
    }
}

/// What to do once the connection's state is no longer borrowed.
enum Action {
    None,
    Append {
        frames: Vec<u8>,
        count: usize,
        failure: Option<String>,
    },
    Subscribe(u64),
    Refuse(String),
}

fn on_data(st: &mut NodeState, conn: ConnId, buf: &[u8]) {
    let (action, log, owner) = match st.conns.get_mut(&conn) {
        Some(c) => (
            decode(c, buf, st.max_record, st.workers),
            c.log.clone(),
            c.owner,
        ),
        None => return,
    };
    let from = st.index;
    match action {
        Action::None => {}
        Action::Append {
            frames,
            count,
            failure,
        } => {
            // Records before a bad frame are good: store and ack them.
            if count > 0 {
                hold_if_full(st, conn);
                st.deliver(
                    owner,
                    Msg::Append {
                        log,
                        from,
                        conn,
                        frames,
                        count,
                        arrived: Instant::now(),
                    },
                );
            }
            if let Some(reason) = failure {
                drain_then_close(st, conn, &reason);
            }
        }
        Action::Subscribe(offset) => st.deliver(
            owner,
            Msg::Subscribe {
                log,
                from,
                conn,
                offset,
            },
        ),
        Action::Refuse(reason) => refuse(st, conn, &reason),
    }
}

/// The state a connection of `role` starts its stream in.
fn stream_state(role: Role, max_record: u32) -> RoleState {
    match role {
        Role::Producer => RoleState::Producer {
            decoder: FrameDecoder::new(max_record),
            sent: 0,
            acked: 0,
            window: VecDeque::new(),
            unacked: 0,
            held: false,
            draining: false,
        },
        Role::Consumer => RoleState::Consumer {
            start: StartDecoder::new(),
            subscribed: false,
        },
    }
}

fn decode(c: &mut Conn, mut buf: &[u8], max_record: u32, workers: usize) -> Action {
    if let RoleState::Handshake = c.role {
        let Some((&first, rest)) = buf.split_first() else {
            return Action::None;
        };
        c.role = match Role::from_byte(first) {
            Ok((role, false)) => stream_state(role, max_record),
            Ok((role, true)) => RoleState::Naming {
                role,
                name: NameDecoder::new(),
            },
            Err(e) => return Action::Refuse(e.to_string()),
        };
        buf = rest;
    }
    if let RoleState::Naming { role, name } = &mut c.role {
        let (used, done) = name.feed(buf);
        buf = &buf[used..];
        match done {
            None => return Action::None,
            Some(Err(e)) => return Action::Refuse(e.to_string()),
            Some(Ok(name)) => {
                let role = *role;
                c.log = Some(name);
                c.owner = owner_of(&c.log, workers);
                c.role = stream_state(role, max_record);
            }
        }
    }
    match &mut c.role {
        RoleState::Handshake | RoleState::Naming { .. } | RoleState::Closing => Action::None,
        RoleState::Producer { draining: true, .. } => Action::None,
        RoleState::Producer {
            decoder,
            sent,
            window,
            unacked,
            ..
        } => {
            decoder.feed(buf);
            let mut frames = Vec::new();
            let mut count = 0;
            let failure = loop {
                match decoder.next_frame() {
                    Ok(Some(rec)) => {
                        // Bounded by max_record (<= 1 GiB), so it encodes.
                        let _ = protocol::encode_frame(rec, &mut frames);
                        count += 1;
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            };
            *sent += count as u64;
            if count > 0 {
                window.push_back((count as u64, frames.len()));
                *unacked += frames.len();
            }
            Action::Append {
                frames,
                count,
                failure,
            }
        }
        RoleState::Consumer { start, subscribed } => {
            // RingLog consumers send nothing after the offset; ignore it.
            if *subscribed {
                return Action::None;
            }
            match start.feed(buf) {
                (_, Some(offset)) => {
                    *subscribed = true;
                    Action::Subscribe(offset)
                }
                (_, None) => Action::None,
            }
        }
    }
}

/// The peer finished sending (EOF; it may still read). A producer gets its
/// remaining acks first (a half frame is reported like bad input); a
/// consumer or a connection still in its handshake is closed now.
fn on_peer_closed(st: &mut NodeState, conn: ConnId) {
    let Some(c) = st.conns.get_mut(&conn) else {
        return;
    };
    match &mut c.role {
        RoleState::Producer {
            decoder,
            draining: false,
            ..
        } => match decoder.finish() {
            Ok(()) => {
                if let RoleState::Producer { draining, .. } = &mut c.role {
                    *draining = true;
                }
                close_when_acked(st, conn);
            }
            Err(e) => {
                let reason = e.to_string();
                drain_then_close(st, conn, &reason);
            }
        },
        // Already closing once its acks are out.
        RoleState::Producer { .. } | RoleState::Closing => {}
        RoleState::Consumer { subscribed, .. } => {
            if *subscribed {
                let (log, owner) = (c.log.clone(), c.owner);
                st.deliver(owner, Msg::Unsubscribe { log, conn });
            }
            close(st, conn);
        }
        RoleState::Handshake | RoleState::Naming { .. } => close(st, conn),
    }
}

/// Closes a draining producer now if every record it sent is acked (the
/// acks are queued on the network worker before the close); otherwise
/// `send_to_client` closes it after the last ack.
fn close_when_acked(st: &mut NodeState, conn: ConnId) {
    if let Some(Conn {
        role: RoleState::Producer { sent, acked, .. },
        ..
    }) = st.conns.get(&conn)
    {
        if acked >= sent {
            close(st, conn);
        }
    }
}

fn on_closed(st: &mut NodeState, conn: ConnId) {
    let Some(c) = st.conns.remove(&conn) else {
        return;
    };
    match c.role {
        RoleState::Producer {
            decoder,
            sent,
            acked,
            ..
        } => {
            if let Err(e) = decoder.finish() {
                tracing::warn!(peer = %c.peer, "producer: {e}; {sent} complete records kept");
            } else if acked < sent {
                // Its records are stored; the acks have nowhere to go.
                tracing::info!(
                    peer = %c.peer,
                    "producer left mid-stream, {} acks undelivered",
                    sent - acked
                );
            }
        }
        RoleState::Consumer { subscribed, .. } => {
            if subscribed {
                st.deliver(c.owner, Msg::Unsubscribe { log: c.log, conn });
            } else {
                tracing::info!(peer = %c.peer, "consumer left before its start offset");
            }
        }
        RoleState::Handshake | RoleState::Naming { .. } | RoleState::Closing => {}
    }
}

/// Bad producer input: log it now, stop decoding, and close once the
/// records received before it are acked (at once if none is pending).
fn drain_then_close(st: &mut NodeState, conn: ConnId, reason: &str) {
    if let Some(Conn {
        peer,
        role:
            RoleState::Producer {
                sent,
                acked,
                draining,
                ..
            },
        ..
    }) = st.conns.get_mut(&conn)
    {
        if *acked < *sent {
            tracing::warn!(
                peer = %peer,
                "closing producer after {} pending acks: {reason}",
                *sent - *acked
            );
            *draining = true;
            return;
        }
    }
    refuse(st, conn, reason);
}

/// Logs why and closes `conn` (only that connection).
pub fn refuse(st: &mut NodeState, conn: ConnId, reason: &str) {
    let Some(c) = st.conns.get_mut(&conn) else {
        return;
    };
    let what = match c.role {
        RoleState::Handshake | RoleState::Naming { .. } => "connection",
        RoleState::Producer { .. } => "producer",
        RoleState::Consumer { subscribed, .. } => {
            if subscribed {
                // The owner may already stream to it; stop that first.
                if let Some(owner) = st.peers.get_mut(c.owner) {
                    let log = c.log.clone();
                    owner.deliver(Msg::Unsubscribe { log, conn });
                }
            }
            "consumer"
        }
        RoleState::Closing => return,
    };
    tracing::warn!(peer = %c.peer, "closing {what}: {reason}");
    close(st, conn);
}

/// Asks the network worker to close `conn` after its queued sends.
fn close(st: &mut NodeState, conn: ConnId) {
    if let Some(c) = st.conns.get_mut(&conn) {
        c.role = RoleState::Closing;
    }
    net_request(st, conn, NetClient::close);
}

/// The tag of a consumer chunk's send: its `Sent` returns the credit.
const CONSUMER_CHUNK: u64 = 1;

/// Writes owner output (acks or consumer frames) to the connection, if it
/// is still open; a consumer frame's credit goes back to the owner once
/// the socket has taken it (`Sent`).
pub fn send_to_client(st: &mut NodeState, conn: ConnId, bytes: Vec<u8>) {
    let (credit, drained, release) = match st.conns.get_mut(&conn).map(|c| &mut c.role) {
        Some(RoleState::Producer {
            sent,
            acked,
            draining,
            window,
            unacked,
            held,
            ..
        }) => {
            let n = (bytes.len() / protocol::OFFSET_LEN) as u64;
            *acked += n;
            *unacked = unacked.saturating_sub(take_acked(window, n));
            let release = *held && *unacked <= PRODUCER_WINDOW / 2;
            if release {
                *held = false;
            }
            (false, *draining && *acked >= *sent, release)
        }
        Some(RoleState::Consumer { .. }) => (true, false, false),
        // Closed or closing: the bytes have nowhere to go.
        _ => return,
    };
    if release {
        net_request(st, conn, NetClient::resume_reading);
    }
    let n = st.clients.len();
    let client = &mut st.clients[conn.worker() % n];
    let mut buf = bytes;
    loop {
        let sent = if credit {
            client.send_tracked(conn, buf, CONSUMER_CHUNK)
        } else {
            client.send(conn, buf)
        };
        match sent {
            Ok(()) => break,
            Err(e) if e.is_full() => {
                buf = e.into_inner();
                std::thread::yield_now();
            }
            Err(_) => return,
        }
    }
    if drained {
        // Already logged when the bad input arrived; `close` keeps the
        // queued acks (they go out first).
        close(st, conn);
    }
}

/// Takes `n` acked records off the front of a producer's window; returns
/// their bytes. Acks come per forwarded `Append`, whole and in order.
fn take_acked(window: &mut VecDeque<(u64, usize)>, mut n: u64) -> usize {
    let mut bytes = 0;
    while n > 0 {
        let Some((count, b)) = window.front_mut() else {
            break;
        };
        if n >= *count {
            n -= *count;
            bytes += *b;
            window.pop_front();
        } else {
            // Not how the owner acks; kept exact all the same.
            let part = *b * n as usize / *count as usize;
            *count -= n;
            *b -= part;
            bytes += part;
            n = 0;
        }
    }
    bytes
}

/// Stops reading a producer whose window is full (see the module docs).
fn hold_if_full(st: &mut NodeState, conn: ConnId) {
    let hold = match st.conns.get_mut(&conn).map(|c| &mut c.role) {
        Some(RoleState::Producer { unacked, held, .. }) if !*held && *unacked > PRODUCER_WINDOW => {
            *held = true;
            true
        }
        _ => false,
    };
    if hold {
        net_request(st, conn, NetClient::pause_reading);
    }
}

/// A request on `conn` to the network worker that owns it, retried while
/// its queue is full (it is draining); dropped once it has stopped.
fn net_request(
    st: &mut NodeState,
    conn: ConnId,
    request: fn(&mut NetClient, ConnId) -> Result<(), SubmitError<ConnId>>,
) {
    let n = st.clients.len();
    let client = &mut st.clients[conn.worker() % n];
    let mut id = conn;
    loop {
        match request(client, id) {
            Ok(()) => break,
            Err(e) if e.is_full() => {
                id = e.into_inner();
                std::thread::yield_now();
            }
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_release_the_window_append_by_append() {
        let mut w: VecDeque<(u64, usize)> = [(3, 300), (2, 50)].into_iter().collect();
        assert_eq!(take_acked(&mut w, 3), 300);
        assert_eq!(take_acked(&mut w, 1), 25);
        assert_eq!(take_acked(&mut w, 5), 25, "no more than was forwarded");
        assert!(w.is_empty());
    }
}
