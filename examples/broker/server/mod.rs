//! The broker server on the crate's workers.
//!
//! Every application worker owns its connections and decodes their bytes.
//! In the network mode the plan picks: thread-per-core (each worker runs
//! its own network backend in its loop and listens on the shared port,
//! `SO_REUSEPORT`, so the kernel spreads the connections) or dedicated (a
//! network worker accepts and hands connections out round robin). Worker [`OWNER`] additionally
//! owns the log: connection workers forward decoded records and consumer
//! subscriptions to it as messages, and it answers with acks and consumer
//! frames as messages. All cross-worker traffic goes through
//! [`ResultSink`]s, which never block the sender: the owner can never wait
//! on a connection worker that waits on it.
//!
//! The workers have no timer of their own under the zero-config pool, so the
//! thread that called [`serve`] becomes a clock: it sends [`Msg::Tick`]
//! every [`TICK`] (interval syncs, the stats line, retrying full queues).
//! Consumers never wait for it: commits push their frames.

mod conn;
mod metrics;
mod owner;
mod space;

use crate::config::{Config, FsyncPolicy};
use shared_nothing::io::{
    ConnId, NetClient, NetConfig, NetEvent, NetworkWorker, ReservedPort, StorageCompletion,
    StorageConfig, StorageWorker,
};
use shared_nothing::partition::RoundRobinPartitioner;
use shared_nothing::pool::NetworkMode;
use shared_nothing::prelude::*;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// The worker that owns the log.
pub const OWNER: usize = 0;
/// Clock period; bounds how late an `interval` sync or a retried delivery is.
const TICK: Duration = Duration::from_millis(10);

/// Everything that travels between workers.
#[derive(Debug)]
pub enum Msg {
    /// A socket event from the network worker.
    Net(NetEvent),
    /// Sent once after spawn: one sink per worker, in index order.
    Wire(Vec<ResultSink<Msg>>),
    /// Thread-per-core, after wiring: listen on this (shared) address.
    Listen(SocketAddr),
    /// Clock tick from the serving thread.
    Tick,
    /// To the owner: a storage request of the log finished.
    Disk(StorageCompletion),
    /// To the owner: producer records as consumer-style frames
    /// (`[u32 BE len][payload]`*), `count` of them, in arrival order.
    Append {
        from: usize,
        conn: ConnId,
        frames: Vec<u8>,
        count: usize,
        arrived: Instant,
    },
    /// To the owner: a consumer asks for records from `offset`.
    Subscribe {
        from: usize,
        conn: ConnId,
        offset: u64,
    },
    /// To the owner: the consumer's last frames were handed to the network
    /// worker, send more (flow control, one chunk in flight per consumer).
    Credit { conn: ConnId },
    /// To the owner: the consumer is gone.
    Unsubscribe { conn: ConnId },
    /// To a connection worker: encoded acks for a producer, in order.
    Acks { conn: ConnId, bytes: Vec<u8> },
    /// To a connection worker: frames for a consumer.
    Frames { conn: ConnId, bytes: Vec<u8> },
    /// To a connection worker: close this connection, with the reason.
    Refuse { conn: ConnId, reason: String },
}

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("{0}")]
    Pool(#[from] shared_nothing::Error),
    #[error("cannot resolve --addr {addr}: {reason}")]
    Addr { addr: String, reason: String },
    #[error("worker {0} did not take its wiring: {1}")]
    Wire(usize, String),
    #[error("worker {0} could not listen (see its log line): {1}")]
    Listen(usize, String),
}

/// One application worker.
pub struct Node {
    index: usize,
    cfg: Config,
    io: IoWorkers,
    metrics: metrics::BrokerMetrics,
    mode: NetworkMode,
}

/// A worker's state, built on its own thread.
pub struct NodeState {
    index: usize,
    /// One client per network worker (replies go through the one that owns
    /// the connection); thread-per-core, the one of this worker's own.
    clients: Vec<NetClient>,
    /// Thread-per-core: this worker's own network backend.
    net: Option<NetworkWorker>,
    /// Thread-per-core, on the log owner: its own storage ring.
    _disk: Option<StorageWorker>,
    /// Sinks into every worker, indexed like the group; empty until `Wire`.
    peers: Vec<ResultSink<Msg>>,
    conns: HashMap<ConnId, conn::Conn>,
    max_record: u32,
    /// Only on [`OWNER`].
    owner: Option<owner::Owner>,
}

impl NodeState {
    /// Delivers `msg` to worker `to` without blocking (a full queue keeps it
    /// in the sink's backlog, retried on later deliveries and ticks).
    fn deliver(&mut self, to: usize, msg: Msg) {
        match self.peers.get_mut(to) {
            Some(sink) => sink.deliver(msg),
            // Only possible before wiring, and `serve` listens after it.
            None => tracing::warn!(worker = self.index, "not wired yet, dropped a message"),
        }
    }
}

impl Worker for Node {
    type State = NodeState;
    type Message = Msg;
    type Reply = ();

    fn init(&mut self) -> Result<NodeState> {
        let (net, clients) = match self.mode {
            NetworkMode::ThreadPerCore => {
                let config = NetConfig::new()
                    .reuse_port(true)
                    .name(format!("broker-net-{}", self.index));
                let net = NetworkWorker::start_local(self.index, config)?;
                let client = net.client(ResultSink::to_current_worker(Msg::Net)?)?;
                (Some(net), vec![client])
            }
            _ => {
                let clients = (0..self.io.network_count())
                    .map(|i| {
                        self.io
                            .network(i)
                            .client(ResultSink::to_current_worker(Msg::Net)?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                (None, clients)
            }
        };
        let (disk_local, owner) = if self.index == OWNER {
            // Thread-per-core: the log's files on the owner's own ring too
            // (io_uring only; the fallback keeps the storage worker), unless
            // every batch is synced: then the storage worker's own core
            // measured faster (docs/benchmarks.md, 0.7x at 8 x 64 on the
            // owner's ring), while unsynced appends gain 1.7-3.8x.
            let local = match self.mode {
                NetworkMode::ThreadPerCore if self.cfg.fsync != FsyncPolicy::Always => {
                    let config = StorageConfig::new().name("broker-disk".to_owned());
                    match StorageWorker::start_local(1, config) {
                        Ok(w) => Some(w),
                        Err(e) => {
                            tracing::info!("log on the storage worker: {e}");
                            None
                        }
                    }
                }
                _ => None,
            };
            let sink = ResultSink::to_current_worker(Msg::Disk)?;
            let disk = match &local {
                Some(w) => w.client(sink)?,
                None => self.io.storage(0).client(sink)?,
            };
            let owner = owner::Owner::open(&self.cfg, disk).map_err(Error::InvalidConfig)?;
            (local, Some(owner.with_metrics(self.metrics.clone())))
        } else {
            (None, None)
        };
        Ok(NodeState {
            index: self.index,
            clients,
            net,
            _disk: disk_local,
            peers: Vec::new(),
            conns: HashMap::new(),
            max_record: self.cfg.max_record,
            owner,
        })
    }

    fn handle_message(&mut self, st: &mut NodeState, msg: Envelope<Msg>) -> Result<()> {
        // Rarely used: `handle_batch` below handles everything.
        let mut msg = msg;
        let payload = std::mem::replace(&mut msg.payload, Msg::Tick);
        handle(st, payload, &mut msg);
        Ok(())
    }

    fn handle_batch(&mut self, st: &mut NodeState, batch: &mut Batch<'_, Msg>) -> Result<()> {
        while let Some(mut msg) = batch.next() {
            let payload = std::mem::replace(&mut msg.payload, Msg::Tick);
            handle(st, payload, &mut msg);
        }
        Ok(())
    }

    /// Group commit: everything appended in this round, from every
    /// connection worker's queue, goes to the storage worker as one batch.
    fn after_round(&mut self, st: &mut NodeState) -> Result<()> {
        if let Some(owner) = st.owner.as_mut() {
            owner.commit(&mut st.peers);
        }
        Ok(())
    }

    fn shutdown(&mut self, st: NodeState) -> Result<()> {
        if let Some(owner) = st.owner {
            owner.close();
        }
        Ok(())
    }
}

fn handle(st: &mut NodeState, msg: Msg, env: &mut Envelope<Msg>) {
    match msg {
        Msg::Net(ev) => conn::on_event(st, ev),
        Msg::Wire(sinks) => {
            st.peers = sinks;
            if env.is_request() {
                let _ = env.reply(());
            }
        }
        Msg::Listen(addr) => {
            let listening = match st.net.as_ref() {
                Some(net) => ResultSink::to_current_worker(Msg::Net).and_then(|me| {
                    net.listen(addr, vec![me], Arc::new(RoundRobinPartitioner::new()))
                }),
                None => Err(Error::msg("no network backend of its own (dedicated mode)")),
            };
            match listening {
                Ok(_) if env.is_request() => {
                    let _ = env.reply(());
                }
                Ok(_) => {}
                // The request then resolves as dropped: `serve` fails.
                Err(e) => tracing::error!(worker = st.index, "cannot listen on {addr}: {e}"),
            }
        }
        Msg::Tick => {
            for p in &mut st.peers {
                p.flush();
            }
            if let Some(owner) = st.owner.as_mut() {
                owner.tick(&mut st.peers);
            }
        }
        Msg::Acks { conn, bytes } | Msg::Frames { conn, bytes } => {
            conn::send_to_client(st, conn, bytes)
        }
        Msg::Refuse { conn, reason } => conn::refuse(st, conn, &reason),
        Msg::Disk(c) => match st.owner.as_mut() {
            Some(owner) => owner.on_disk(c, &mut st.peers),
            None => tracing::warn!(
                worker = st.index,
                "not the log owner, got a storage completion"
            ),
        },
        owner_msg => match st.owner.as_mut() {
            Some(owner) => owner.on_message(owner_msg, &mut st.peers),
            None => tracing::warn!(worker = st.index, "not the log owner, got a log message"),
        },
    }
}

/// Starts the broker and serves until the process ends.
///
/// # Errors
/// The pool, the I/O workers or the log cannot start, or the address
/// cannot be bound.
pub fn serve(cfg: &Config) -> Result<(), ServeError> {
    let addr: SocketAddr = cfg
        .addr
        .to_socket_addrs()
        .map_err(|e| ServeError::Addr {
            addr: cfg.addr.clone(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ServeError::Addr {
            addr: cfg.addr.clone(),
            reason: "no address".to_owned(),
        })?;
    let pool = WorkerPool::new()?;
    let mode = pool.plan().network_mode;
    let io = pool.start_io()?;
    let broker_metrics = metrics::BrokerMetrics::default();
    broker_metrics.register(&mut pool.metrics_registry());
    let (io2, cfg2, m2) = (io.clone(), cfg.clone(), broker_metrics.clone());
    let mut group = pool.spawn(move |index| Node {
        index,
        cfg: cfg2.clone(),
        io: io2.clone(),
        metrics: m2.clone(),
        mode,
    })?;

    // Wire every worker to every worker, and wait until all have their
    // sinks before the first connection can arrive.
    for i in 0..group.len() {
        let sinks = group.result_sinks(|m: Msg| m);
        let pending = group
            .request(i, Msg::Wire(sinks))
            .map_err(|e| ServeError::Wire(i, e.to_string()))?;
        pending
            .wait_timeout(Duration::from_secs(10))
            .map_err(|e| ServeError::Wire(i, e.to_string()))?;
    }

    let local = match mode {
        NetworkMode::ThreadPerCore => {
            // Every worker listens on the one port: held until they do.
            let port = ReservedPort::new(addr)?;
            for i in 0..group.len() {
                let pending = group
                    .request(i, Msg::Listen(port.addr()))
                    .map_err(|e| ServeError::Listen(i, e.to_string()))?;
                pending
                    .wait_timeout(Duration::from_secs(10))
                    .map_err(|e| ServeError::Listen(i, e.to_string()))?;
            }
            port.addr()
        }
        _ => io.network(0).listen(
            addr,
            group.result_sinks(Msg::Net),
            Arc::new(RoundRobinPartitioner::new()),
        )?,
    };
    // Kept alive for the server's life: dropping it closes the endpoint.
    let _metrics_server = match cfg.metrics_addr {
        Some(addr) => {
            let server = pool.serve_metrics(&io, addr)?;
            println!("broker: metrics on http://{}/metrics", server.local_addr());
            Some(server)
        }
        None => None,
    };
    println!(
        "broker: listening on {local} ({} workers, network {mode}, log owner worker {OWNER}, data in {}, fsync {:?})",
        group.len(),
        cfg.dir.display(),
        cfg.fsync
    );

    let mut clock = group.sender();
    loop {
        std::thread::sleep(TICK);
        for i in 0..clock.len() {
            // A full queue already has work to wake it; skip this tick.
            let _ = clock.try_send_to_worker(i, Msg::Tick);
        }
    }
}
