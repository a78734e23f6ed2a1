//! The way from this node to one other: a TCP connection to its cluster
//! port, carrying pipelined requests ([`Fwd`]) from any worker, and
//! their answers back to the workers that asked.
//!
//! Two plain threads per link: the writer takes [`Fwd`]s from the
//! link's unbounded channel (workers `try_send` into it, never
//! blocking), numbers them, connects when needed and writes their
//! frames; a reader per connection decodes answers and delivers each as
//! a [`Msg::Answer`] to its origin's worker. Requests in flight are
//! kept by number in a table the two share (the only lock, on these
//! threads alone).
//!
//! **Failures.** A connection that cannot be made, breaks, or leaves a
//! request unanswered for [`REQUEST_TIMEOUT`] fails every request it
//! carried with [`Answer::Unreachable`], which the connection's worker
//! takes as "try the next owner". A body being sent when its connection
//! breaks fails as a whole (its staged chunks died with the
//! connection), even if later chunks find a new connection. After a
//! failed connect, requests fail at once for [`RETRY_AFTER`] instead of
//! each waiting for a connect of its own.
//!
//! **Counts.** The writer counts each frame it hands to the connection
//! (`sent`), the reader each answer it reads (`received`): the link's
//! own two counters ([`LinkMeters`]), one thread each.

use super::Fwd;
use super::wire::{self, Frame, ReadError};
use crate::metrics::LinkMeters;
use crate::serve::{Answer, Msg, Op, Origin};
use shared_nothing::channel::{Channel, mpsc};
use shared_nothing::metrics::prometheus::metrics::counter::Counter;
use shared_nothing::pool::PoolSender;
use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a request may wait for its answer before its connection is
/// declared broken.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after a failed connect requests fail at once.
pub const RETRY_AFTER: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Requests in flight on one connection.
#[derive(Debug, Default)]
struct Pending {
    /// Set by the reader when the connection is gone: nothing may be
    /// added after that.
    closed: bool,
    map: HashMap<u64, (Origin, Instant)>,
}

/// One connection: its stream and what is in flight on it.
struct Conn {
    stream: TcpStream,
    pending: Arc<Mutex<Pending>>,
    generation: u64,
}

/// Starts the link to `peer`, counting into `meters`; returns the
/// channel workers send into.
///
/// # Errors
/// The writer thread cannot start.
pub fn start(
    peer: SocketAddr,
    sender: PoolSender<Msg>,
    meters: LinkMeters,
) -> Result<mpsc::Sender<Fwd>, super::ClusterError> {
    let (tx, rx) = Channel::mpsc_unbounded();
    std::thread::Builder::new()
        .name(format!("cache-link-{}", peer.port()))
        .spawn(move || {
            let mut w = Writer {
                peer,
                sender,
                conn: None,
                generation: 0,
                next_rid: 1,
                bodies: HashMap::new(),
                refused_until: None,
                meters,
            };
            while let Ok(fwd) = rx.recv() {
                w.one(fwd);
            }
        })
        .map_err(super::ClusterError::Thread)?;
    Ok(tx)
}

struct Writer {
    peer: SocketAddr,
    sender: PoolSender<Msg>,
    conn: Option<Conn>,
    generation: u64,
    next_rid: u64,
    /// Bodies being sent: their number and the connection generation
    /// their first chunk went on (`None`: failed already).
    bodies: HashMap<Origin, Option<(u64, u64)>>,
    refused_until: Option<Instant>,
    meters: LinkMeters,
}

fn deliver(sender: &mut PoolSender<Msg>, origin: Origin, answer: Answer) {
    let _ = sender.send_to_worker(origin.worker, Msg::Answer { origin, answer });
}

impl Writer {
    fn rid(&mut self) -> u64 {
        self.next_rid += 1;
        self.next_rid
    }

    fn fail(&mut self, origin: Origin, op: &Op) {
        if wire::answered(op) {
            deliver(&mut self.sender, origin, Answer::Unreachable);
        }
    }

    fn one(&mut self, fwd: Fwd) {
        let Fwd { origin, route, op } = fwd;
        let body = matches!(op, Op::Body { .. } | Op::Abort);
        let last = !matches!(op, Op::Body { end: None, .. });
        // A body's chunks share one number and one connection.
        let rid = if body {
            let known = self.bodies.get(&origin).copied();
            let slot = match known {
                Some(s) => s,
                None => {
                    let rid = self.rid();
                    self.ensure();
                    self.conn.as_ref().map(|c| (rid, c.generation))
                }
            };
            if last {
                self.bodies.remove(&origin);
            } else {
                self.bodies.insert(origin, slot);
            }
            match slot {
                Some((rid, generation))
                    if self
                        .conn
                        .as_ref()
                        .is_some_and(|c| c.generation == generation) =>
                {
                    rid
                }
                _ => {
                    if !last {
                        // Remember the failure for the chunks to come.
                        self.bodies.insert(origin, None);
                    }
                    return self.fail(origin, &op);
                }
            }
        } else {
            self.rid()
        };
        let Some(frame) = wire::encode_request(rid, &route, &op) else {
            if wire::answered(&op) {
                deliver(
                    &mut self.sender,
                    origin,
                    Answer::Refused {
                        status: 500,
                        reason: "the request cannot be forwarded".into(),
                    },
                );
            }
            return;
        };
        self.ensure();
        let Some(conn) = self.conn.as_mut() else {
            return self.fail(origin, &op);
        };
        if wire::answered(&op) {
            let mut p = conn.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.closed {
                drop(p);
                self.conn = None;
                return self.fail(origin, &op);
            }
            p.map.insert(rid, (origin, Instant::now()));
        }
        // Counted as handed to the connection (before the write, so
        // the count is never behind an answer that comes back).
        self.meters.sent.inc();
        if let Err(e) = conn.stream.write_all(&frame) {
            tracing::debug!(peer = %self.peer, "cluster link write: {e}");
            let _ = conn.stream.shutdown(Shutdown::Both);
            let mine = conn
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map
                .remove(&rid);
            self.conn = None;
            if mine.is_some() {
                deliver(&mut self.sender, origin, Answer::Unreachable);
            }
        }
    }

    /// Connects if there is no live connection (and the last attempt
    /// did not just fail).
    fn ensure(&mut self) {
        if let Some(c) = &self.conn {
            let closed = c.pending.lock().unwrap_or_else(|e| e.into_inner()).closed;
            if !closed {
                return;
            }
            self.conn = None;
        }
        if self.refused_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match TcpStream::connect_timeout(&self.peer, CONNECT_TIMEOUT) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let pending = Arc::new(Mutex::new(Pending::default()));
                let reader = match stream.try_clone() {
                    Ok(r) => r,
                    Err(_) => return,
                };
                self.generation += 1;
                let p = pending.clone();
                let sender = self.sender.clone();
                let peer = self.peer;
                let received = self.meters.received.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("cache-link-r-{}", peer.port()))
                    .spawn(move || read_answers(reader, &p, sender, peer, &received));
                if spawned.is_err() {
                    return;
                }
                self.refused_until = None;
                self.conn = Some(Conn {
                    stream,
                    pending,
                    generation: self.generation,
                });
            }
            Err(e) => {
                tracing::debug!(peer = %self.peer, "cluster link connect: {e}");
                self.refused_until = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }
}

/// A connection's reader: answers to their workers until the connection
/// ends, then fails whatever it still carried.
fn read_answers(
    mut stream: TcpStream,
    pending: &Mutex<Pending>,
    mut sender: PoolSender<Msg>,
    peer: SocketAddr,
    received: &Counter,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(250)));
    loop {
        match wire::read_frame(&mut stream) {
            Ok(Frame::Answer { rid, answer }) => {
                received.inc();
                let o = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .map
                    .remove(&rid);
                if let Some((origin, _)) = o {
                    deliver(&mut sender, origin, answer);
                }
            }
            Ok(Frame::Request { .. }) => {
                tracing::warn!(%peer, "cluster link: a request where answers come; closing");
                break;
            }
            Err(ReadError::Io(e)) if wire::is_timeout(&e) => {
                let p = pending.lock().unwrap_or_else(|e| e.into_inner());
                if p.map.values().any(|(_, t)| t.elapsed() > REQUEST_TIMEOUT) {
                    tracing::warn!(%peer, "cluster link: no answer in {REQUEST_TIMEOUT:?}; closing");
                    break;
                }
            }
            Err(ReadError::Eof) => break,
            Err(e) => {
                tracing::debug!(%peer, "cluster link read: {e}");
                break;
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    let left: Vec<Origin> = {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        p.closed = true;
        p.map.drain().map(|(_, (o, _))| o).collect()
    };
    for origin in left {
        deliver(&mut sender, origin, Answer::Unreachable);
    }
}
