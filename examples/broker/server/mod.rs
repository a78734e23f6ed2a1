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
mod logs;
mod metrics;
mod owner;
mod space;

pub use logs::LogKey;

use crate::config::Config;
use shared_nothing::io::{ConnId, NetClient, NetEvent, NetworkWorker, StorageCompletion};
use shared_nothing::pool::NetworkMode;
use shared_nothing::prelude::*;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};
use thiserror::Error;

/// The worker that owns the default log (named logs: `logs::owner_of`).
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
    /// To an owner: a storage request of log `log` finished.
    Disk { log: LogKey, c: StorageCompletion },
    /// To an owner: producer records as consumer-style frames
    /// (`[u32 BE len][payload]`*), `count` of them, in arrival order.
    Append {
        log: LogKey,
        from: usize,
        conn: ConnId,
        frames: Vec<u8>,
        count: usize,
        arrived: Instant,
    },
    /// To an owner: a consumer asks for records from `offset`.
    Subscribe {
        log: LogKey,
        from: usize,
        conn: ConnId,
        offset: u64,
    },
    /// To an owner: the consumer's last frames were handed to the network
    /// worker, send more (flow control, one chunk in flight per consumer).
    Credit { log: LogKey, conn: ConnId },
    /// To an owner: the consumer is gone.
    Unsubscribe { log: LogKey, conn: ConnId },
    /// To a connection worker: encoded acks for a producer, in order.
    Acks { conn: ConnId, bytes: Vec<u8> },
    /// To a connection worker: frames for a consumer.
    Frames { conn: ConnId, bytes: Vec<u8> },
    /// To a connection worker: close this connection, with the reason.
    Refuse { conn: ConnId, reason: String },
}

/// Why the server could not start.
impl crate::mesh::MeshMsg for Msg {
    fn wire(sinks: Vec<ResultSink<Msg>>) -> Msg {
        Msg::Wire(sinks)
    }
    fn listen(addr: SocketAddr) -> Msg {
        Msg::Listen(addr)
    }
    fn net(ev: NetEvent) -> Msg {
        Msg::Net(ev)
    }
    fn tick() -> Msg {
        Msg::Tick
    }
    fn into_setup(self) -> std::result::Result<crate::mesh::Setup<Msg>, Msg> {
        match self {
            Msg::Wire(sinks) => Ok(crate::mesh::Setup::Wire(sinks)),
            Msg::Listen(addr) => Ok(crate::mesh::Setup::Listen(addr)),
            other => Err(other),
        }
    }
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("{0}")]
    Pool(#[from] shared_nothing::Error),
    #[error("cannot resolve --addr {addr}: {reason}")]
    Addr { addr: String, reason: String },
    #[error(transparent)]
    Mesh(#[from] crate::mesh::MeshError),
}

/// One application worker.
pub struct Node {
    index: usize,
    workers: usize,
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
    /// Sinks into every worker, indexed like the group; empty until `Wire`.
    peers: Vec<ResultSink<Msg>>,
    conns: HashMap<ConnId, conn::Conn>,
    max_record: u32,
    /// Workers in the group (where named logs live).
    workers: usize,
    /// The logs this worker owns.
    logs: logs::Logs,
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
        let (net, clients) =
            crate::mesh::network::<Msg>(self.mode, &self.io, self.index, "broker")?;
        let mut logs = logs::Logs::new(
            self.index,
            self.cfg.clone(),
            self.io.clone(),
            self.mode,
            self.metrics.clone(),
        );
        if self.index == OWNER {
            // The default log opens (and recovers) before serving.
            logs.open(&None).map_err(Error::InvalidConfig)?;
        }
        Ok(NodeState {
            index: self.index,
            clients,
            net,
            peers: Vec::new(),
            conns: HashMap::new(),
            max_record: self.cfg.max_record,
            workers: self.workers,
            logs,
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
        for owner in st.logs.owners() {
            owner.commit(&mut st.peers);
        }
        Ok(())
    }

    fn shutdown(&mut self, mut st: NodeState) -> Result<()> {
        st.logs.close_all();
        Ok(())
    }
}

fn handle(st: &mut NodeState, msg: Msg, env: &mut Envelope<Msg>) {
    let net = st.net.as_ref();
    let Some(msg) = crate::mesh::take_setup(msg, env, &mut st.peers, net, st.index) else {
        return;
    };
    match msg {
        Msg::Net(ev) => conn::on_event(st, ev),
        // Taken by `take_setup`.
        Msg::Wire(_) | Msg::Listen(_) => {}
        Msg::Tick => {
            for p in &mut st.peers {
                p.flush();
            }
            for owner in st.logs.owners() {
                owner.tick(&mut st.peers);
            }
        }
        Msg::Acks { conn, bytes } | Msg::Frames { conn, bytes } => {
            conn::send_to_client(st, conn, bytes)
        }
        Msg::Refuse { conn, reason } => conn::refuse(st, conn, &reason),
        Msg::Disk { log, c } => match st.logs.get(&log) {
            Some(owner) => owner.on_disk(c, &mut st.peers),
            None => tracing::warn!(worker = st.index, "no log {log:?} here, got its completion"),
        },
        owner_msg => to_owner(st, owner_msg),
    }
}

/// A message for one of this worker's logs: records and subscriptions
/// open the log if needed (a log that cannot open refuses the
/// connection); credit and unsubscribes for a log not open are stale.
fn to_owner(st: &mut NodeState, msg: Msg) {
    let (log, opens, reply_to) = match &msg {
        Msg::Append {
            log, from, conn, ..
        }
        | Msg::Subscribe {
            log, from, conn, ..
        } => (log.clone(), true, Some((*from, *conn))),
        Msg::Credit { log, .. } | Msg::Unsubscribe { log, .. } => (log.clone(), false, None),
        other => return tracing::warn!(worker = st.index, "unexpected {other:?}"),
    };
    let owner = if opens {
        st.logs.open(&log)
    } else {
        st.logs.get(&log).ok_or_else(String::new)
    };
    match (owner, reply_to) {
        (Ok(owner), _) => owner.on_message(msg, &mut st.peers),
        (Err(why), Some((from, conn))) => {
            let name = log
                .as_ref()
                .map_or("the default log".to_owned(), |n| format!("log {n}"));
            if let Some(sink) = st.peers.get_mut(from) {
                sink.deliver(Msg::Refuse {
                    conn,
                    reason: format!("{name}: {why}"),
                });
            }
        }
        (Err(_), None) => {}
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
    // The group `spawn` builds: one worker per planned application worker.
    let workers = pool.app_plan().app_workers.len();
    let mut group = pool.spawn(move |index| Node {
        index,
        workers,
        cfg: cfg2.clone(),
        io: io2.clone(),
        metrics: m2.clone(),
        mode,
    })?;

    // Wire every worker to every worker, and wait until all have their
    // sinks before the first connection can arrive.
    crate::mesh::wire(&mut group)?;
    let local = crate::mesh::listen(&mut group, mode, &io, addr)?;
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

    crate::mesh::clock(&group, TICK)
}
