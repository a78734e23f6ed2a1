//! Re-replication when a node comes up (a restart after `kill -9`, or a
//! new node): this node pushes it every key it now owns for which this
//! node is the first other owner, so each key is pushed by one node.
//!
//! One plain thread ("cache-sync"), woken by the gossip thread with the
//! node and the view that made it live. It asks each local worker for
//! its keys to push ([`Op::SyncList`], answered from the worker's own
//! engine), reads each value from its owner worker piece by piece (as
//! an HTTP GET does), and sends it to the node over the internal
//! protocol as a put-if-absent (`only_new`), so a value written through
//! the cluster since the node came up is never replaced by an older
//! one. It talks to workers only by messages (its answers come on its
//! own channel, like a peer connection's), and holds at most one chunk
//! of a value at a time. A value that changes while it is read is
//! skipped (the write that changed it went to the node too). The
//! frames it writes to a node and the answers it reads are counted in
//! that node's `sync` counters.

use super::View;
use super::wire::{self, Frame};
use crate::engine::CHUNK;
use crate::http::RangeReq;
use crate::metrics::{ClusterMeters, LinkKind, LinkMeters};
use crate::serve::{Answer, BodyEnd, Msg, Op, PIECE, PutEnd, owner_of};
use shared_nothing::channel::{Channel, mpsc};
use shared_nothing::pool::PoolSender;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sync thread's connection number with the workers (the peer
/// connections count up from 1).
const SYNC_CONN: u64 = u64::MAX;
/// How long one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the sync thread; returns where the gossip thread sends the
/// nodes that came up.
///
/// # Errors
/// The thread cannot start.
pub fn start(
    sender: PoolSender<Msg>,
    workers: usize,
    me: SocketAddr,
    meters: ClusterMeters,
) -> Result<mpsc::Sender<(SocketAddr, Arc<View>)>, super::ClusterError> {
    let (tx, rx) = Channel::mpsc_unbounded::<(SocketAddr, Arc<View>)>();
    std::thread::Builder::new()
        .name("cache-sync".into())
        .spawn(move || {
            let (atx, arx) = Channel::mpsc_unbounded::<(u64, Answer)>();
            let mut s = Sync {
                sender,
                workers,
                answers: arx,
                seq: 0,
                meters,
            };
            for w in 0..workers {
                let _ = s.sender.send_to_worker(
                    w,
                    Msg::PeerOpen {
                        conn: SYNC_CONN,
                        tx: atx.clone(),
                    },
                );
            }
            drop(atx);
            while let Ok((node, view)) = rx.recv() {
                let t0 = Instant::now();
                match s.push_all(node, &view) {
                    Ok((n, bytes)) => println!(
                        "cache: cluster sync to {node}: {n} keys ({bytes} bytes) pushed from {me} in {} ms",
                        t0.elapsed().as_millis()
                    ),
                    Err(e) => println!("cache: cluster sync to {node} stopped: {e}"),
                }
            }
        })
        .map_err(super::ClusterError::Thread)?;
    Ok(tx)
}

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("the workers are gone")]
    Stopped,
    #[error("no answer from a worker in {ANSWER_TIMEOUT:?}")]
    NoAnswer,
    #[error("node: {0}")]
    Io(#[from] std::io::Error),
    #[error("node: {0}")]
    Read(#[from] wire::ReadError),
    #[error("node answered {0}")]
    Refused(String),
}

struct Sync {
    sender: PoolSender<Msg>,
    workers: usize,
    answers: mpsc::Receiver<(u64, Answer)>,
    seq: u64,
    meters: ClusterMeters,
}

impl Sync {
    fn ask(&mut self, worker: usize, op: Op) -> Result<Answer, SyncError> {
        self.seq += 1;
        let msg = Msg::Peer {
            conn: SYNC_CONN,
            seq: self.seq,
            op,
        };
        self.sender
            .send_to_worker(worker, msg)
            .map_err(|_| SyncError::Stopped)?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok((seq, a)) if seq == self.seq => return Ok(a),
                Ok(_) => {}
                Err(_) => return Err(SyncError::NoAnswer),
            }
        }
    }

    /// Pushes every key this node should give `node`; returns how many
    /// keys and bytes went.
    fn push_all(&mut self, node: SocketAddr, view: &Arc<View>) -> Result<(u64, u64), SyncError> {
        let mut keys = Vec::new();
        for w in 0..self.workers {
            let op = Op::SyncList {
                to: node,
                view: view.clone(),
            };
            if let Answer::Keys(k) = self.ask(w, op)? {
                keys.extend(k);
            }
        }
        if keys.is_empty() {
            return Ok((0, 0));
        }
        let m = self.meters.link(LinkKind::Sync, &node.to_string());
        let mut stream = TcpStream::connect_timeout(&node, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let (mut n, mut bytes) = (0, 0);
        for (key, ttl) in keys {
            if let Some(size) = self.push_one(&mut stream, &m, key, ttl)? {
                n += 1;
                bytes += size;
            }
        }
        Ok((n, bytes))
    }

    /// Sends one value; `None` if it is gone or changed meanwhile.
    fn push_one(
        &mut self,
        stream: &mut TcpStream,
        m: &LinkMeters,
        key: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, SyncError> {
        let owner = owner_of(&key, self.workers);
        let get = Op::Get {
            key: key.clone(),
            range: RangeReq::Whole,
        };
        let (size, flags, id, first) = match self.ask(owner, get)? {
            Answer::Got {
                size,
                flags,
                id,
                first,
                ..
            } => (size, flags, id, first),
            _ => return Ok(None),
        };
        self.seq += 1;
        let rid = self.seq;
        let mut chunk = first;
        let mut at = chunk.len() as u64;
        loop {
            while chunk.len() >= CHUNK {
                let rest = chunk.split_off(CHUNK);
                send(
                    stream,
                    m,
                    rid,
                    &key,
                    std::mem::replace(&mut chunk, rest),
                    None,
                )?;
            }
            if at >= size {
                break;
            }
            let read = Op::Read {
                key: key.clone(),
                id,
                offset: at,
                len: (size - at).min(PIECE),
            };
            match self.ask(owner, read)? {
                Answer::Piece(p) if !p.is_empty() => {
                    at += p.len() as u64;
                    chunk.extend_from_slice(&p);
                }
                _ => {
                    send_abort(stream, m, rid, &key)?;
                    return Ok(None);
                }
            }
        }
        let end = PutEnd {
            key: key.clone(),
            ttl,
            flags,
            place: crate::engine::Placement::BOTH,
            only_new: true,
        };
        send(stream, m, rid, &key, chunk, Some(BodyEnd::Store(end)))?;
        loop {
            let frame = wire::read_frame(stream)?;
            m.received.inc();
            match frame {
                Frame::Answer { rid: r, answer } if r == rid => {
                    return match answer {
                        Answer::Stored => Ok(Some(size)),
                        Answer::Refused { status, reason } => {
                            Err(SyncError::Refused(format!("{status} {reason}")))
                        }
                        other => Err(SyncError::Refused(format!("{other:?}"))),
                    };
                }
                _ => {}
            }
        }
    }
}

fn send(
    stream: &mut TcpStream,
    m: &LinkMeters,
    rid: u64,
    key: &[u8],
    data: Vec<u8>,
    end: Option<BodyEnd>,
) -> Result<(), SyncError> {
    let op = Op::Body {
        data,
        end,
        stream: false,
    };
    let frame = wire::encode_request(rid, key, &op)
        .ok_or_else(|| SyncError::Refused("a frame over the limit".into()))?;
    m.sent.inc();
    stream.write_all(&frame)?;
    Ok(())
}

fn send_abort(
    stream: &mut TcpStream,
    m: &LinkMeters,
    rid: u64,
    key: &[u8],
) -> Result<(), SyncError> {
    if let Some(f) = wire::encode_request(rid, key, &Op::Abort) {
        m.sent.inc();
        stream.write_all(&f)?;
    }
    Ok(())
}
