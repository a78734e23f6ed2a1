//! The receiving side of the internal protocol: the cluster port's TCP
//! listener, and two plain threads per connection from another node.
//!
//! The reader decodes each request frame and sends it as a
//! [`Msg::Peer`] to the worker that owns its key here ([`owner_of`]);
//! the owner runs it on its engine (`serve/owner.rs`, as for an HTTP or
//! SDK request) and answers onto the connection's channel (registered
//! with every worker by [`Msg::PeerOpen`]; an unbounded channel, so a
//! worker never waits); the writer encodes the answers. Requests are
//! pipelined: answers leave in the order the owners give them, each
//! naming its request. A frame that does not decode closes the
//! connection (the sender fails what it had in flight).
//!
//! Each connection counts the requests its reader reads and the answers
//! its writer writes in its own counters, labelled by the connection's
//! [`Slot`] (the lowest number free when it was accepted).

use super::wire::{self, Frame, ReadError};
use crate::metrics::{ClusterMeters, LinkMeters};
use crate::serve::{Answer, Msg, owner_of};
use shared_nothing::channel::{Channel, mpsc};
use shared_nothing::pool::PoolSender;
use std::io::{BufWriter, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Connection numbers (their own space: [`crate::serve::Caller::Peer`]).
static NEXT: AtomicU64 = AtomicU64::new(1);

/// The slot numbers of the connections being served: a number is reused
/// once its connection's threads are gone, so the counters' `conn` label
/// takes as many values as connections were ever open at once.
#[derive(Clone, Debug, Default)]
struct Slots(Arc<Mutex<Vec<bool>>>);

/// A slot in use, freed when dropped (by the last of its connection's
/// two threads).
#[derive(Debug)]
struct Slot {
    n: usize,
    slots: Slots,
}

impl Slots {
    fn take(&self) -> Slot {
        let mut used = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = used.iter().position(|u| !u).unwrap_or(used.len());
        match used.get_mut(n) {
            Some(u) => *u = true,
            None => used.push(true),
        }
        Slot {
            n,
            slots: self.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = self.slots.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(u) = used.get_mut(self.n) {
            *u = false;
        }
    }
}

/// Serves `listener` on its own thread until the process ends, each
/// connection counting into `meters`.
///
/// # Errors
/// The thread cannot start.
pub fn start(
    listener: TcpListener,
    sender: PoolSender<Msg>,
    workers: usize,
    meters: ClusterMeters,
) -> Result<(), super::ClusterError> {
    let slots = Slots::default();
    std::thread::Builder::new()
        .name("cache-cluster".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("cluster accept: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                let sender = sender.clone();
                let slot = Arc::new(slots.take());
                let m = meters.link(crate::metrics::LinkKind::Serve, &slot.n.to_string());
                let spawned = std::thread::Builder::new()
                    .name("cache-peer".into())
                    .spawn(move || serve(stream, sender, workers, &m, &slot));
                if let Err(e) = spawned {
                    tracing::warn!("cluster: cannot start a connection thread: {e}");
                }
            }
        })
        .map_err(super::ClusterError::Thread)?;
    Ok(())
}

fn serve(
    stream: TcpStream,
    mut sender: PoolSender<Msg>,
    workers: usize,
    meters: &LinkMeters,
    slot: &Arc<Slot>,
) {
    let _ = stream.set_nodelay(true);
    let conn = NEXT.fetch_add(1, Ordering::Relaxed);
    let Ok(out) = stream.try_clone() else {
        return;
    };
    let (tx, rx) = Channel::mpsc_unbounded::<(u64, Answer)>();
    for w in 0..workers {
        let msg = Msg::PeerOpen {
            conn,
            tx: tx.clone(),
        };
        if sender.send_to_worker(w, msg).is_err() {
            return;
        }
    }
    drop(tx);
    let (sent, held) = (meters.sent.clone(), slot.clone());
    let writer = std::thread::Builder::new()
        .name("cache-peer-w".into())
        .spawn(move || {
            write_answers(out, &rx, &sent);
            drop(held);
        });
    if writer.is_err() {
        return;
    }
    let mut input = std::io::BufReader::with_capacity(64 << 10, &stream);
    loop {
        match wire::read_frame(&mut input) {
            Ok(Frame::Request { rid, route, op }) => {
                meters.received.inc();
                let owner = owner_of(&route, workers);
                let msg = Msg::Peer { conn, seq: rid, op };
                if sender.send_to_worker(owner, msg).is_err() {
                    break;
                }
            }
            Ok(Frame::Answer { .. }) => {
                tracing::warn!(
                    conn,
                    "cluster peer sent an answer where requests come; closing"
                );
                break;
            }
            Err(ReadError::Eof) => break,
            Err(e) => {
                tracing::debug!(conn, "cluster peer connection: {e}");
                break;
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Read);
    // Each worker drops its end of the channel (and anything this
    // connection staged); the writer ends when all have.
    for w in 0..workers {
        let _ = sender.send_to_worker(w, Msg::PeerClose { conn });
    }
}

/// Writes the answers as the owners give them, counting each frame
/// written (into the buffer: the count is never behind what leaves).
fn write_answers(
    stream: TcpStream,
    rx: &mpsc::Receiver<(u64, Answer)>,
    sent: &shared_nothing::metrics::prometheus::metrics::counter::Counter,
) {
    let mut out = BufWriter::with_capacity(64 << 10, &stream);
    while let Ok((rid, answer)) = rx.recv() {
        let frame = wire::encode_answer(rid, &answer).or_else(|| {
            wire::encode_answer(
                rid,
                &Answer::Refused {
                    status: 500,
                    reason: "an answer that does not cross nodes".into(),
                },
            )
        });
        let written = frame.is_some_and(|f| out.write_all(&f).is_ok());
        if written {
            sent.inc();
        }
        let ok = written && (!rx.is_empty() || out.flush().is_ok());
        if !ok {
            break;
        }
    }
    let _ = out.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_once_free() {
        let slots = Slots::default();
        let a = slots.take();
        let b = slots.take();
        assert_eq!((a.n, b.n), (0, 1));
        drop(a);
        let c = slots.take();
        assert_eq!(c.n, 0, "the lowest free number");
        assert_eq!(slots.take().n, 2);
        drop(b);
        assert_eq!(slots.take().n, 1);
    }
}
