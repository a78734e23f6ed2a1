//! A TCP echo server, in the network mode the plan picks.
//!
//! `cargo run --example echo_server` starts the server on a free loopback
//! port, drives it with a bounded built-in load (connections x round trips),
//! prints throughput and latency percentiles, and exits.
//! `cargo run --example echo_server -- --serve 127.0.0.1:7000` serves until
//! killed. `--mode dedicated|thread-per-core` overrides the plan's choice.
//!
//! Thread-per-core: every application worker runs its own network backend
//! in its loop (`NetworkWorker::start_local`) and listens on the one port
//! (`SO_REUSEPORT`), so each connection lives on one core. Dedicated: a
//! network worker accepts, and a round-robin partitioner spreads the
//! connections over the application workers, which get
//! `Accepted`/`Data`/`Closed` events in their own loops and echo through
//! their own `NetClient`s. The handler is the same in both.

mod load;
#[path = "../common/logging.rs"]
mod logging;

use clap::{Parser, ValueEnum};
use shared_nothing::io::{
    NetClient, NetConfig, NetEvent, NetEventKind, NetworkWorker, ReservedPort,
};
use shared_nothing::partition::RoundRobinPartitioner;
use shared_nothing::pool::NetworkMode;
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
    /// Where connections are served [default: the plan's choice].
    #[arg(long, value_enum)]
    mode: Option<Mode>,
}

/// `--mode`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// A network worker of its own accepts and owns the sockets.
    Dedicated,
    /// Each application worker serves its own connections.
    ThreadPerCore,
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
        let n = clients.0.len();
        echo(&mut clients.0[ev.conn.worker() % n], ev)
    }
}

/// The thread-per-core server: one per application worker, each with its
/// own network backend listening on the shared port.
struct LocalEcho {
    index: usize,
    addr: SocketAddr,
}

impl Worker for LocalEcho {
    type State = (NetworkWorker, NetClient);
    type Message = NetEvent;
    type Reply = ();

    fn init(&mut self) -> Result<Self::State> {
        let config = NetConfig::new()
            .reuse_port(true)
            .name(format!("echo-net-{}", self.index));
        let net = NetworkWorker::start_local(self.index, config)?;
        let me = ResultSink::to_current_worker(|e| e)?;
        net.listen(self.addr, vec![me], Arc::new(RoundRobinPartitioner::new()))?;
        let client = net.client(ResultSink::to_current_worker(|e| e)?)?;
        Ok((net, client))
    }

    fn handle_message(&mut self, s: &mut Self::State, msg: Envelope<NetEvent>) -> Result<()> {
        echo(&mut s.1, msg.payload)
    }
}

/// Echoes what a connection sent; closes it after the peer is done.
fn echo(client: &mut NetClient, ev: NetEvent) -> Result<()> {
    match ev.kind {
        NetEventKind::Data(buf) => {
            let mut buf = buf;
            // Full is backpressure: wait for room (the network backend is
            // draining; on this worker's own thread, each retry lets it
            // run), never drop the bytes.
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
            let _ = client.close(ev.conn);
        }
        NetEventKind::Error(e) => tracing::warn!(conn = ?ev.conn, "connection error: {e}"),
        _ => {}
    }
    Ok(())
}

/// A running server, either way.
enum Server {
    Dedicated(WorkerGroup<Echo>),
    Local(WorkerGroup<LocalEcho>),
}

impl Server {
    fn stop(&mut self) -> Result<()> {
        match self {
            Server::Dedicated(g) => g.stop_all(),
            Server::Local(g) => g.stop_all(),
        }
    }
}

/// Starts the server on `addr`; returns it with the bound address.
fn start(pool: &WorkerPool, mode: NetworkMode, addr: SocketAddr) -> Result<(Server, SocketAddr)> {
    if mode == NetworkMode::ThreadPerCore {
        // One port for every worker, held until they all listen on it.
        let port = ReservedPort::new(addr)?;
        let local = port.addr();
        let group = pool.spawn(move |index| LocalEcho { index, addr: local })?;
        drop(port);
        println!(
            "echo server on {local}: thread-per-core, {} application worker(s), each with its own network backend ({})",
            group.len(),
            match &pool.plan().io_backend {
                shared_nothing::pool::IoBackend::IoUring => "io_uring".to_owned(),
                other => format!("{other:?}"),
            }
        );
        return Ok((Server::Local(group), local));
    }
    let io = pool.start_io()?;
    let io2 = io.clone();
    let group = pool.spawn(move || Echo { io: io2.clone() })?;
    let local = io.network(0).listen(
        addr,
        group.result_sinks(|e| e),
        Arc::new(RoundRobinPartitioner::new()),
    )?;
    println!(
        "echo server on {local}: dedicated, {} application worker(s), {} network worker(s) on {}",
        group.len(),
        io.network_count(),
        io.network(0).backend()
    );
    Ok((Server::Dedicated(group), local))
}

fn main() -> Result<()> {
    logging::init("echo_server");
    // A bad command line exits with status 2 and clap's message.
    let cli = Cli::parse();
    let pool = match cli.mode {
        Some(Mode::Dedicated) => WorkerPool::builder().network_mode(NetworkMode::Dedicated),
        Some(Mode::ThreadPerCore) => WorkerPool::builder().network_mode(NetworkMode::ThreadPerCore),
        None => WorkerPool::builder(),
    }
    .build_pool()?;
    let mode = pool.plan().network_mode;
    let addr = cli
        .serve
        .unwrap_or_else(|| "127.0.0.1:0".parse().expect("literal"));
    let (mut server, local) = start(&pool, mode, addr)?;
    if cli.serve.is_some() {
        loop {
            std::thread::park();
        }
    }
    let report = load::run(local, 8, 2_000, std::time::Duration::from_secs(10))?;
    println!("{report}");
    server.stop()?;
    Ok(())
}
