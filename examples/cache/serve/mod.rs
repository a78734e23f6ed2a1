//! The server: one [`Engine`] per application worker, behind the HTTP
//! front on the pool's network workers and the SDK socket (`sdk/`, its
//! own threads, each request a [`Msg::Sdk`] to its key's owner).
//!
//! Worker `i` of a group of `n` owns the keys that `HashPartitioner`
//! sends to `i` ([`owner_of`]) and its own memory tier (`--memory / n`
//! bytes), and it serves the connections the network layer gives it
//! (thread-per-core: each worker listens on the shared port through its
//! own backend; dedicated: a network worker hands connections out round
//! robin). A connection's worker parses requests (`conn/`) and runs
//! each on its key's owner (`owner.rs`): in place when the owner is
//! itself, otherwise as an [`Msg::Op`] to the owner, answered by an
//! [`Msg::Answer`]; both go through [`ResultSink`]s, which never block,
//! so no worker ever waits on another. The workers share nothing: a
//! value's bytes travel between them only inside messages (a PUT's
//! chunks to the owner, a GET's pieces back).
//!
//! The thread that called [`serve`] is the clock ([`Msg::Tick`] every
//! [`TICK`]): sink backlogs are retried and expired entries swept.

mod conn;
mod owner;
mod tier;

pub use conn::MAX_KEY;
pub use owner::PIECE;

use crate::cluster::{ClusterConfig, Fwd, Usage, View};
use crate::config::Config;
use crate::engine::{Engine, Placement, Stats};
use crate::http::{RangeReq, Want};
use crate::metrics::{CacheMetrics, ClusterMeters, FrontMeters, RouteMeters};
use crate::sparse::{Progress, SparseError};
use shared_nothing::channel::mpsc;
use shared_nothing::io::{ConnId, NetClient, NetEvent, NetworkWorker, StorageCompletion};
use shared_nothing::metrics::prometheus::metrics::gauge::Gauge;
use shared_nothing::partition::{HashPartitioner, Partitioner, hash_key};
use shared_nothing::pool::NetworkMode;
use shared_nothing::prelude::*;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Clock period.
const TICK: Duration = Duration::from_millis(20);

/// Where an answer goes: the connection's worker, the connection and
/// the request's number on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub worker: usize,
    pub conn: ConnId,
    pub seq: u64,
}

/// A PUT's last message: what to store it as.
#[derive(Clone, Debug)]
pub struct PutEnd {
    pub key: Vec<u8>,
    pub ttl: Option<Duration>,
    pub flags: u32,
    /// The tiers it may go to.
    pub place: Placement,
    /// Store only if the key is absent (a cluster sync's push, which
    /// must not replace a newer write).
    pub only_new: bool,
}

/// A sparse write's last message: where its bytes go, and what the
/// request said about them (HTTP's `Content-Range`), checked by the owner
/// once the whole body is there.
#[derive(Clone, Debug)]
pub struct RangeEnd {
    pub key: Vec<u8>,
    pub offset: u64,
    /// The body's length, as `Content-Range` stated it.
    pub len: Option<u64>,
    /// The value's total size, as `Content-Range` stated it.
    pub total: Option<u64>,
    /// An empty body is refused (HTTP's 400; the socket allows L = 0).
    pub nonempty: bool,
}

/// What a body's bytes become once all have arrived.
#[derive(Clone, Debug)]
pub enum BodyEnd {
    /// A PUT: a stored value.
    Store(PutEnd),
    /// A sparse write (HTTP PATCH/PUT `/sparse/{key}`, WRITE_RANGE).
    WriteRange(RangeEnd),
}

/// Who asked an owner for work: an HTTP connection (answers go back to
/// its worker) or an SDK socket connection (answers go onto the queue it
/// registered with [`Msg::SdkOpen`]). PUT bodies are staged by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    Http(Origin),
    Sdk {
        conn: u64,
        seq: u64,
    },
    /// Another node's request (`cluster/peer.rs`), or the cluster sync.
    Peer {
        conn: u64,
        seq: u64,
    },
}

/// Where an operation runs: a worker of this node, or another node
/// (its cluster address), through its link (`cluster/link.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    Local(usize),
    Node(SocketAddr),
}

/// Work for a key's owner.
#[derive(Debug)]
pub enum Op {
    /// A GET: metadata and the first piece of what `range` selects.
    Get {
        key: Vec<u8>,
        range: RangeReq,
    },
    /// A HEAD: metadata only.
    Head {
        key: Vec<u8>,
    },
    /// The next piece of a GET already answered (entry `id`).
    Read {
        key: Vec<u8>,
        id: u64,
        offset: u64,
        len: u64,
    },
    /// The next chunk of a PUT or sparse-write body; with `end`, the
    /// last, and the value is stored or written.
    Body {
        data: Vec<u8>,
        end: Option<BodyEnd>,
        /// An HTTP PUT's body from this node: each chunk goes into the
        /// tiers as it arrives (`Engine::fill_push`), and every one but
        /// the last is acknowledged ([`Answer::Took`]) once it is in
        /// them, for the connection's window. Otherwise (the SDK socket,
        /// another node, a sparse write) the body is staged whole.
        stream: bool,
    },
    /// The body will not come (the connection failed): drop what was
    /// staged.
    Abort,
    Delete {
        key: Vec<u8>,
    },
    /// This worker's counters, for `/stats`.
    Stats,
    /// Opens a sparse value of `total` bytes.
    SparseCreate {
        key: Vec<u8>,
        total: u64,
        ttl: Option<Duration>,
        flags: u32,
    },
    SparseStatus {
        key: Vec<u8>,
    },
    /// Publishes a complete sparse value; `ttl` and `flags` replace the
    /// ones given at create when set.
    SparseFinalize {
        key: Vec<u8>,
        ttl: Option<Option<Duration>>,
        flags: Option<u32>,
    },
    SparseDelete {
        key: Vec<u8>,
    },
    /// The cluster sync's question: which of this worker's keys should
    /// go to node `to`, which just came up (owners by `view`).
    SyncList {
        to: SocketAddr,
        view: Arc<View>,
    },
}

/// An owner's answer.
#[derive(Debug)]
pub enum Answer {
    /// A GET hit: what the range selected and its first piece.
    Got {
        size: u64,
        chunks: u64,
        flags: u32,
        id: u64,
        want: Want,
        first: Vec<u8>,
    },
    /// No such key (or expired).
    Missing,
    /// A HEAD hit.
    Meta {
        size: u64,
        chunks: u64,
        flags: u32,
    },
    Piece(Vec<u8>),
    /// A streamed body's chunk is in the tiers (its file written): the
    /// connection may send another.
    Took,
    /// The entry changed or went away during a long GET.
    Gone,
    Stored,
    /// Not stored: the status and why.
    Refused {
        status: u16,
        reason: String,
    },
    Deleted,
    Stats(Box<Stats>),
    SparseCreated {
        total: u64,
    },
    /// A sparse write was applied: how far the value is now.
    Written(Progress),
    SparseStatus(Progress),
    /// A sparse operation did nothing (finalize's store failure is a
    /// [`Answer::Refused`]).
    SparseFailed(SparseError),
    /// The node that should have answered cannot be reached (made by
    /// the link, never sent): try the next owner.
    Unreachable,
    /// [`Op::SyncList`]'s answer: keys and their time left to live.
    Keys(Vec<(Vec<u8>, Option<Duration>)>),
}

/// Everything that travels between workers.
#[derive(Debug)]
pub enum Msg {
    Net(NetEvent),
    /// A storage completion for this worker's disk tier (`tier.rs`).
    Disk(StorageCompletion),
    Wire(Vec<ResultSink<Msg>>),
    Listen(SocketAddr),
    Tick,
    Op {
        origin: Origin,
        op: Op,
    },
    Answer {
        origin: Origin,
        answer: Answer,
    },
    /// An SDK connection's answer queue (`sdk/`), one per worker per
    /// connection; answers carry the request's number.
    SdkOpen {
        conn: u64,
        sink: ResultSink<(u64, Answer)>,
    },
    /// The SDK connection is gone: its queue and anything it staged.
    SdkClose {
        conn: u64,
    },
    /// Work from an SDK connection for this worker, the key's owner.
    Sdk {
        conn: u64,
        seq: u64,
        op: Op,
    },
    /// The cluster as it is now (`cluster/member.rs`).
    View(Arc<View>),
    /// A connection from another node (or the cluster sync): where its
    /// answers go.
    PeerOpen {
        conn: u64,
        tx: mpsc::Sender<(u64, Answer)>,
    },
    PeerClose {
        conn: u64,
    },
    /// Work from another node for this worker, the key's owner here.
    Peer {
        conn: u64,
        seq: u64,
        op: Op,
    },
}

#[path = "../../common/mesh.rs"]
pub mod mesh;

impl mesh::MeshMsg for Msg {
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
    fn into_setup(self) -> std::result::Result<mesh::Setup<Msg>, Msg> {
        match self {
            Msg::Wire(sinks) => Ok(mesh::Setup::Wire(sinks)),
            Msg::Listen(addr) => Ok(mesh::Setup::Listen(addr)),
            other => Err(other),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("{0}")]
    Pool(#[from] shared_nothing::Error),
    #[error("cannot resolve {addr}: {reason}")]
    Addr { addr: String, reason: String },
    #[error(transparent)]
    Mesh(#[from] mesh::MeshError),
    #[error(transparent)]
    Sdk(#[from] crate::sdk::SdkError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("disk tier {}: {source}", dir.display())]
    Disk {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The worker that owns `key` among `workers`.
pub fn owner_of(key: &[u8], workers: usize) -> usize {
    HashPartitioner::new().partition(hash_key(key), workers)
}

/// What every worker knows of the configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// One worker's memory tier.
    pub capacity: u64,
    /// Largest body (at most the larger tier).
    pub max_body: u64,
    /// The disk tier's directory (each worker under `wN/`) and one
    /// worker's share of it; `None`: no disk tier.
    pub disk: Option<(PathBuf, u64)>,
}

/// Renders the pool's registry (Prometheus text).
pub type MetricsText = Arc<dyn Fn() -> String + Send + Sync>;

/// One application worker.
struct Node {
    index: usize,
    workers: usize,
    limits: Limits,
    io: IoWorkers,
    mode: NetworkMode,
    metrics: CacheMetrics,
    text: MetricsText,
    started: Instant,
}

/// A worker's state, built on its own thread.
pub struct NodeState {
    index: usize,
    workers: usize,
    limits: Limits,
    clients: Vec<NetClient>,
    net: Option<NetworkWorker>,
    peers: Vec<ResultSink<Msg>>,
    conns: HashMap<ConnId, conn::Conn>,
    engine: Engine,
    /// PUT bodies being received, by request (`owner.rs`).
    staging: HashMap<Caller, owner::Staging>,
    /// Answer queues of the SDK connections, by connection.
    sdk: HashMap<u64, ResultSink<(u64, Answer)>>,
    /// The disk tier's I/O (`tier.rs`), with `-d`.
    disk: Option<tier::DiskIo>,
    /// This worker's HTTP series.
    front: FrontMeters,
    /// Latency sums of this worker's HTTP GETs and PUTs (us, count), for
    /// the JSON `/metrics`.
    lat: [(u64, u64); 2],
    text: MetricsText,
    /// Worker 0 keeps the uptime.
    uptime: Option<Gauge>,
    started: Instant,
    /// Cluster mode: the latest view, and this worker's own ends of
    /// the links to the other nodes.
    cluster: Option<Arc<View>>,
    links: HashMap<SocketAddr, mpsc::Sender<Fwd>>,
    /// Answer channels of the connections from other nodes.
    peers_in: HashMap<u64, mpsc::Sender<(u64, Answer)>>,
    /// This worker's forwarding and fall-over counters, and the
    /// cluster's series (summed for the JSON `/metrics`).
    route: RouteMeters,
    cluster_meters: ClusterMeters,
    /// Ticks since this worker last reported its usage.
    ticks: u32,
}

impl NodeState {
    /// This worker's figures: its engine's and its HTTP front's.
    fn stats(&self) -> Stats {
        let mut s = self.engine.stats();
        s.http_requests = self.front.http_requests.get();
        s.http_errors = self.front.http_errors.get();
        s.connections = u64::try_from(self.front.connections.get()).unwrap_or(0);
        s.get_us = self.lat[0];
        s.put_us = self.lat[1];
        s
    }

    /// Runs `op` on worker `owner`: here, returning the answer, or sent
    /// there (the answer comes back as a message).
    fn run(&mut self, owner: usize, origin: Origin, op: Op) -> Option<Answer> {
        if owner == self.index {
            owner::run(self, Caller::Http(origin), op)
        } else {
            self.deliver(owner, Msg::Op { origin, op });
            None
        }
    }

    /// Runs `op` at `dest`: on a worker here (as [`run`](Self::run)),
    /// or handed to the link of another node (`route` is the key there;
    /// the answer comes back as a message). An unknown node answers
    /// [`Answer::Unreachable`] at once.
    fn run_at(&mut self, dest: Dest, origin: Origin, route: &[u8], op: Op) -> Option<Answer> {
        match dest {
            Dest::Local(w) => self.run(w, origin, op),
            Dest::Node(addr) => {
                let answered = crate::cluster::wire::answered(&op);
                let counted = crate::cluster::request_kind(&op);
                let fwd = Fwd {
                    origin,
                    route: route.to_vec(),
                    op,
                };
                let sent = self
                    .links
                    .get(&addr)
                    .is_some_and(|l| l.try_send(fwd).is_ok());
                if sent {
                    if let Some(i) = counted {
                        self.route.forwarded[i].inc();
                    }
                    None
                } else {
                    answered.then_some(Answer::Unreachable)
                }
            }
        }
    }

    /// Where the operations on `key` run: its owners in the order to
    /// try them (this node first when it is one), or its owner worker
    /// here outside cluster mode or with `local`.
    fn dests(&self, key: &[u8], local: bool) -> Vec<Dest> {
        let here = Dest::Local(owner_of(key, self.workers));
        let Some(view) = self.cluster.as_ref().filter(|_| !local) else {
            return vec![here];
        };
        let owners = view.ring.owners(key);
        let mut out: Vec<Dest> = Vec::with_capacity(owners.len());
        if owners.contains(&view.me) {
            out.push(here);
        }
        out.extend(owners.into_iter().filter(|a| *a != view.me).map(Dest::Node));
        if out.is_empty() {
            out.push(here);
        }
        out
    }

    /// Delivers without blocking (a full queue backlogs in the sink).
    fn deliver(&mut self, to: usize, msg: Msg) {
        match self.peers.get_mut(to) {
            Some(sink) => sink.deliver(msg),
            None => tracing::warn!(worker = self.index, "not wired yet, dropped a message"),
        }
    }
}

impl Node {
    fn network(&self) -> Result<(Option<NetworkWorker>, Vec<NetClient>)> {
        mesh::network::<Msg>(self.mode, &self.io, self.index, "cache")
    }
}

impl Worker for Node {
    type State = NodeState;
    type Message = Msg;
    type Reply = ();

    fn init(&mut self) -> Result<NodeState> {
        let (net, clients) = self.network()?;
        let name = self.index.to_string();
        let mut engine = Engine::with_meters(self.limits.capacity, self.metrics.engine(&name));
        let disk = match &self.limits.disk {
            Some((dir, capacity)) => {
                let storage = self.io.storage(self.index);
                let wdir = crate::disk::worker_dir(dir, self.index);
                let mut blocking = storage.blocking_client()?;
                let rec = crate::disk::recover(&mut blocking, &wdir)
                    .map_err(|e| Error::InvalidConfig(format!("disk tier: {e}")))?;
                drop(blocking);
                println!(
                    "cache: worker {} disk tier {}: {} entries recovered, {} damaged dropped, {} stray chunk files removed",
                    self.index,
                    wdir.display(),
                    rec.entries.len(),
                    rec.damaged,
                    rec.orphans
                );
                let io = tier::DiskIo::open(storage, &wdir, &rec.manifest)?;
                engine.attach_disk(*capacity, rec, Instant::now());
                Some(io)
            }
            None => None,
        };
        Ok(NodeState {
            index: self.index,
            workers: self.workers,
            limits: self.limits.clone(),
            clients,
            net,
            peers: Vec::new(),
            conns: HashMap::new(),
            engine,
            staging: HashMap::new(),
            sdk: HashMap::new(),
            disk,
            front: self.metrics.front(&name, "http"),
            lat: [(0, 0); 2],
            text: self.text.clone(),
            uptime: (self.index == 0).then(|| self.metrics.uptime.clone()),
            started: self.started,
            cluster: None,
            links: HashMap::new(),
            peers_in: HashMap::new(),
            route: self.metrics.cluster.route(&name),
            cluster_meters: self.metrics.cluster.clone(),
            ticks: 0,
        })
    }

    fn handle_message(&mut self, st: &mut NodeState, msg: Envelope<Msg>) -> Result<()> {
        let mut msg = msg;
        let payload = std::mem::replace(&mut msg.payload, Msg::Tick);
        handle(st, payload, &mut msg);
        after(st);
        Ok(())
    }

    fn after_round(&mut self, st: &mut NodeState) -> Result<()> {
        if let Some(io) = &mut st.disk {
            io.flush();
        }
        Ok(())
    }

    fn handle_batch(&mut self, st: &mut NodeState, batch: &mut Batch<'_, Msg>) -> Result<()> {
        while let Some(mut msg) = batch.next() {
            let payload = std::mem::replace(&mut msg.payload, Msg::Tick);
            handle(st, payload, &mut msg);
            after(st);
        }
        Ok(())
    }
}

/// After each message: the disk tier's next I/O, the gauges.
fn after(st: &mut NodeState) {
    tier::pump(st);
    st.engine.publish();
}

/// Delivers an owner's answer to whoever asked (an HTTP connection here
/// or on its worker, or an SDK connection's queue).
fn reply(st: &mut NodeState, caller: Caller, answer: Answer) {
    match caller {
        Caller::Http(origin) => {
            if origin.worker == st.index {
                conn::on_answer(st, origin, answer);
            } else {
                st.deliver(origin.worker, Msg::Answer { origin, answer });
            }
        }
        Caller::Sdk { conn, seq } => {
            if let Some(q) = st.sdk.get_mut(&conn) {
                q.deliver((seq, answer));
            }
        }
        Caller::Peer { conn, seq } => {
            if let Some(tx) = st.peers_in.get(&conn) {
                let _ = tx.try_send((seq, answer));
            }
        }
    }
}

/// This worker's figures for the cluster's `/cluster` report.
fn report_usage(st: &mut NodeState) {
    let Some(view) = &st.cluster else {
        return;
    };
    let s = st.engine.stats();
    let usage = Usage {
        memory_capacity: s.memory.capacity_bytes,
        memory_used: s.memory.size_bytes,
        disk_capacity: s.disk.capacity_bytes,
        disk_used: s.disk.size_bytes,
        entries: s.entry_count,
    };
    let _ = view.usage.try_send((st.index, usage));
}

fn handle(st: &mut NodeState, msg: Msg, env: &mut Envelope<Msg>) {
    let net = st.net.as_ref();
    let Some(msg) = mesh::take_setup(msg, env, &mut st.peers, net, st.index) else {
        return;
    };
    match msg {
        Msg::Net(ev) => conn::on_event(st, ev),
        Msg::Disk(c) => tier::on_completion(st, c),
        Msg::Wire(_) | Msg::Listen(_) => {}
        Msg::Tick => {
            for p in &mut st.peers {
                p.flush();
            }
            for q in st.sdk.values_mut() {
                q.flush();
            }
            st.engine.expire(std::time::Instant::now(), 4096);
            st.ticks += 1;
            if st.ticks >= 25 {
                st.ticks = 0;
                report_usage(st);
            }
            if let Some(g) = &st.uptime {
                g.set(i64::try_from(st.started.elapsed().as_secs()).unwrap_or(i64::MAX));
            }
        }
        Msg::Op { origin, op } => {
            if let Some(answer) = owner::run(st, Caller::Http(origin), op) {
                reply(st, Caller::Http(origin), answer);
            }
        }
        Msg::Answer { origin, answer } => conn::on_answer(st, origin, answer),
        Msg::SdkOpen { conn, sink } => {
            st.sdk.insert(conn, sink);
        }
        Msg::SdkClose { conn } => {
            st.sdk.remove(&conn);
            st.staging
                .retain(|c, _| !matches!(c, Caller::Sdk { conn: k, .. } if *k == conn));
        }
        Msg::Sdk { conn, seq, op } => {
            if let Some(answer) = owner::run(st, Caller::Sdk { conn, seq }, op) {
                reply(st, Caller::Sdk { conn, seq }, answer);
            }
        }
        Msg::View(view) => {
            for (addr, tx) in &view.links {
                st.links.entry(*addr).or_insert_with(|| tx.clone());
            }
            let first = st.cluster.is_none();
            st.cluster = Some(view);
            if first {
                report_usage(st);
            }
        }
        Msg::PeerOpen { conn, tx } => {
            st.peers_in.insert(conn, tx);
        }
        Msg::PeerClose { conn } => {
            st.peers_in.remove(&conn);
            st.staging
                .retain(|c, _| !matches!(c, Caller::Peer { conn: k, .. } if *k == conn));
        }
        Msg::Peer { conn, seq, op } => {
            if let Some(answer) = owner::run(st, Caller::Peer { conn, seq }, op) {
                reply(st, Caller::Peer { conn, seq }, answer);
            }
        }
    }
}

fn resolve_addr(bind: &str, port: u16) -> Result<SocketAddr, ServeError> {
    let text = format!("{bind}:{port}");
    let err = |reason: String| ServeError::Addr {
        addr: text.clone(),
        reason,
    };
    (bind, port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".to_owned()))
}

/// Starts the workers and listens; returns the bound address and the
/// group (whose clock the caller runs, [`run_clock`]).
///
/// # Errors
/// The pool or the network cannot start, or the address cannot be bound.
pub fn start(
    cfg: &Config,
) -> Result<(SocketAddr, WorkerGroup<impl Worker<Message = Msg>>), ServeError> {
    let addr = resolve_addr(&cfg.bind, cfg.port)?;
    let pool = WorkerPool::new()?;
    let mode = pool.plan().network_mode;
    let io = pool.start_io()?;
    let workers = pool.app_plan().app_workers.len().max(1);
    let capacity = cfg.memory_bytes / workers as u64;
    let disk = match &cfg.disk_dir {
        Some(dir) if cfg.disk_bytes > 0 => {
            std::fs::create_dir_all(dir).map_err(|source| ServeError::Disk {
                dir: dir.clone(),
                source,
            })?;
            Some((dir.clone(), cfg.disk_bytes / workers as u64))
        }
        _ => None,
    };
    let largest = capacity.max(disk.as_ref().map_or(0, |d| d.1));
    let max_body = cfg.max_body.min(largest);
    let disk_note = disk.as_ref().map_or_else(
        || "no disk tier".to_owned(),
        |(d, c)| format!("disk tier {} MiB per worker in {}", c >> 20, d.display()),
    );
    let limits = Limits {
        capacity,
        max_body,
        disk,
    };
    let metrics = CacheMetrics::register(&mut pool.metrics_registry());
    let cluster_meters = metrics.cluster.clone();
    let sdk_meters = metrics.front("sdk", "socket");
    let scrape = pool.clone();
    let text: MetricsText = Arc::new(move || scrape.metrics());
    let started = Instant::now();
    let io2 = io.clone();
    let mut group = pool.spawn_workers(workers, move |index| Node {
        index,
        workers,
        limits: limits.clone(),
        io: io2.clone(),
        mode,
        metrics: metrics.clone(),
        text: text.clone(),
        started,
    })?;
    mesh::wire(&mut group)?;
    let local = mesh::listen(&mut group, mode, &io, addr)?;
    crate::sdk::start(&cfg.unix, group.sender(), workers, max_body, sdk_meters)?;
    let cluster = if cfg.cluster || !cfg.seeds.is_empty() {
        let cc = ClusterConfig {
            bind: cfg.bind.clone(),
            port: cfg.cluster_port,
            seeds: cfg.seeds.clone(),
            replication: usize::try_from(cfg.replication).unwrap_or(usize::MAX),
        };
        let at = crate::cluster::start(&cc, group.sender(), workers, local, &cluster_meters)?;
        format!(
            "cluster port {at}, replication {}, seeds [{}]",
            cfg.replication,
            cfg.seeds.join(", ")
        )
    } else {
        "standalone".to_owned()
    };
    println!(
        "cache: listening on {local} (workers: {workers}, network {mode}, memory tier {} MiB per worker, {disk_note}, {cluster})",
        capacity >> 20
    );
    println!("cache: SDK socket on {}", cfg.unix.display());
    Ok((local, group))
}

/// The calling thread becomes the clock, until the process ends.
pub fn run_clock<W: Worker<Message = Msg>>(group: &WorkerGroup<W>) -> ! {
    mesh::clock(group, TICK)
}
