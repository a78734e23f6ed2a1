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

use super::wire::{self, Frame, ReadError};
use crate::serve::{Answer, Msg, owner_of};
use shared_nothing::channel::{Channel, mpsc};
use shared_nothing::pool::PoolSender;
use std::io::{BufWriter, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Connection numbers (their own space: [`crate::serve::Caller::Peer`]).
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Serves `listener` on its own thread until the process ends.
///
/// # Errors
/// The thread cannot start.
pub fn start(
    listener: TcpListener,
    sender: PoolSender<Msg>,
    workers: usize,
) -> Result<(), super::ClusterError> {
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
                let spawned = std::thread::Builder::new()
                    .name("cache-peer".into())
                    .spawn(move || serve(stream, sender, workers));
                if let Err(e) = spawned {
                    tracing::warn!("cluster: cannot start a connection thread: {e}");
                }
            }
        })
        .map_err(super::ClusterError::Thread)?;
    Ok(())
}

fn serve(stream: TcpStream, mut sender: PoolSender<Msg>, workers: usize) {
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
    let writer = std::thread::Builder::new()
        .name("cache-peer-w".into())
        .spawn(move || write_answers(out, &rx));
    if writer.is_err() {
        return;
    }
    let mut input = std::io::BufReader::with_capacity(64 << 10, &stream);
    loop {
        match wire::read_frame(&mut input) {
            Ok(Frame::Request { rid, route, op }) => {
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

fn write_answers(stream: TcpStream, rx: &mpsc::Receiver<(u64, Answer)>) {
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
        let ok = frame.is_some_and(|f| out.write_all(&f).is_ok())
            && (!rx.is_empty() || out.flush().is_ok());
        if !ok {
            break;
        }
    }
    let _ = out.flush();
    let _ = stream.shutdown(Shutdown::Both);
}
