//! A TCP echo server on a network I/O worker.
//!
//! `cargo run --example echo_server` starts the server on a free loopback
//! port, drives it with a bounded built-in load (connections x round trips),
//! prints throughput and latency percentiles, and exits.
//! `cargo run --example echo_server -- --serve 127.0.0.1:7000` serves until
//! killed.
//!
//! Accepted connections are spread over the application workers by a
//! round-robin partitioner; each worker gets `Accepted`/`Data`/`Closed`
//! events in its own loop and echoes through its own `NetClient`.

mod load;
#[path = "../common/logging.rs"]
mod logging;

use clap::Parser;
use shared_nothing::io::{NetClient, NetEvent, NetEventKind};
use shared_nothing::partition::RoundRobinPartitioner;
use shared_nothing::prelude::*;
use std::net::SocketAddr;
use std::sync::Arc;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "echo_server",
    about = "A TCP echo server on a network I/O worker. Without --serve it runs a \
             bounded built-in load (8 connections x 2,000 round trips, at most 10 s) \
             on a free loopback port, prints throughput and latency, and exits."
)]
struct Cli {
    /// Serve on ADDR until killed instead of running the built-in load
    /// [default: none, run the load].
    #[arg(long, value_name = "ADDR")]
    serve: Option<SocketAddr>,
}

struct Echo {
    io: IoWorkers,
}

struct Clients(Vec<NetClient>);

impl Worker for Echo {
    type State = Clients;
    type Message = NetEvent;
    type Reply = ();

    fn init(&mut self) -> Result<Clients> {
        // One client per network worker; replies go to the worker that owns
        // the connection.
        (0..self.io.network_count())
            .map(|i| {
                self.io
                    .network(i)
                    .client(ResultSink::to_current_worker(|e| e)?)
            })
            .collect::<Result<Vec<_>>>()
            .map(Clients)
    }

    fn handle_message(&mut self, clients: &mut Clients, msg: Envelope<NetEvent>) -> Result<()> {
        let ev = msg.payload;
        match ev.kind {
            NetEventKind::Data(buf) => {
                let n = clients.0.len();
                let client = &mut clients.0[ev.conn.worker() % n];
                let mut buf = buf;
                // Full is backpressure: wait for room (the network worker
                // is draining), never drop the bytes.
                loop {
                    match client.send(ev.conn, buf) {
                        Ok(()) => break,
                        Err(e) if e.is_full() => {
                            buf = e.into_inner();
                            std::thread::yield_now();
                        }
                        Err(_) => return Err(Error::Disconnected),
                    }
                }
            }
            // The peer is done sending: everything it sent has been echoed
            // (sends go out in order), so close after them.
            NetEventKind::PeerClosed => {
                let n = clients.0.len();
                let _ = clients.0[ev.conn.worker() % n].close(ev.conn);
            }
            NetEventKind::Error(e) => tracing::warn!(conn = ?ev.conn, "connection error: {e}"),
            _ => {}
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    logging::init("echo_server");
    // A bad command line exits with status 2 and clap's message.
    let serve = Cli::parse().serve;
    let pool = WorkerPool::new()?;
    let io = pool.start_io()?;
    let io2 = io.clone();
    let mut group = pool.spawn(move || Echo { io: io2.clone() })?;
    let addr = serve.unwrap_or_else(|| "127.0.0.1:0".parse().expect("literal"));
    let local = io.network(0).listen(
        addr,
        group.result_sinks(|e| e),
        Arc::new(RoundRobinPartitioner::new()),
    )?;
    println!(
        "echo server on {local}: {} application worker(s), {} network worker(s) on {}",
        group.len(),
        io.network_count(),
        io.network(0).backend()
    );
    if serve.is_some() {
        loop {
            std::thread::park();
        }
    }
    let report = load::run(local, 8, 2_000, std::time::Duration::from_secs(10))?;
    println!("{report}");
    group.stop_all()?;
    Ok(())
}
