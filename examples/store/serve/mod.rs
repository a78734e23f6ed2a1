//! `store serve`: the shards on the crate's workers, behind the Redis
//! protocol.
//!
//! Worker `i` of a group of `--shards` workers owns shard `i`
//! (`DIR/shard-i.data` and its WAL) and the connections the network
//! layer gives it: thread-per-core, each worker listens on the shared
//! port (`SO_REUSEPORT`); dedicated, a network worker hands connections
//! out round robin. A key lives on shard `HashPartitioner` of
//! `hash_key` of its table-prefixed key ([`shard_of`], the scheme every
//! manifest records). A connection's worker decodes and parses its
//! commands (`conn.rs`) and runs each on its key's shard: in place when
//! the shard is its own, otherwise as a [`Msg::Run`] to the shard's
//! worker, answered by a [`Msg::Done`]; both go through [`ResultSink`]s,
//! which never block, so no worker ever waits on another. Replies are
//! written in command order (pipelining). Group commit and checkpoints:
//! `host.rs`.
//!
//! The workers have no timer under the zero-config pool, so the thread
//! that called [`serve`] is the clock: [`Msg::Tick`] every [`TICK`].

mod conn;
mod host;
mod info;
mod wal_disk;

use crate::error::StoreError;
use crate::manifest::{ManifestError, Partitioning, ShardLayout, SlotError};
use crate::page::PageSize;
use crate::pagestore::FileStore;
use crate::resp::admin::ServerInfo;
use crate::resp::command::Request;
use crate::resp::reply::Reply;
use crate::shard::{Shard, ShardOptions};
use crate::table::TableId;
use crate::wal::WalConfig;
use host::Host;
use shared_nothing::io::{ConnId, NetClient, NetEvent, NetworkWorker, StorageCompletion};
use shared_nothing::partition::{HashPartitioner, Partitioner, hash_key};
use shared_nothing::pool::NetworkMode;
use shared_nothing::prelude::*;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

pub use host::{CheckpointPolicy, MAX_STRING};

/// Clock period: bounds how late a `--sync never` sync or a retried
/// delivery is.
const TICK: Duration = Duration::from_millis(10);

/// When writes are acknowledged (`--sync`, the broker's syntax):
/// `always` after the shard's group commit (one WAL sync per worker
/// round); `interval:MS` after apply, the WAL synced at most MS (plus a
/// tick) after the write; `never` after apply, synced every 200 ms.
pub use crate::sync_policy::SyncPolicy as SyncMode;

/// Where a shard's group commits run (`--wal-io`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WalIoMode {
    /// On the shard's own thread (`Shard::sync_wal`: write, fdatasync).
    Shard,
    /// On a storage I/O worker (`wal_disk.rs`): the shard goes on applying
    /// commands while a sync is in flight.
    Storage,
}

/// What `serve` needs from the command line.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub dir: PathBuf,
    /// `None`: one per planned application worker.
    pub shards: Option<usize>,
    pub addr: String,
    pub sync: SyncMode,
    pub wal_io: WalIoMode,
    /// Already capped at [`MAX_STRING`].
    pub max_bulk: usize,
    pub page_size: PageSize,
    pub checkpoint: CheckpointPolicy,
    /// The page cache of all shards together, split evenly.
    pub cache_bytes: usize,
}

/// Where a reply goes: the connection's worker, the connection, the
/// command's position on it and the part of a split command.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    pub worker: usize,
    pub conn: ConnId,
    pub seq: u64,
    pub part: usize,
}

/// A reply on its way back.
#[derive(Debug)]
pub struct Done {
    pub origin: Origin,
    pub reply: Reply,
}

/// Everything that travels between workers.
#[derive(Debug)]
pub enum Msg {
    /// A socket event from the network layer.
    Net(NetEvent),
    /// Sent once after spawn: one sink per worker, in index order.
    Wire(Vec<ResultSink<Msg>>),
    /// Thread-per-core, after wiring: listen on this (shared) address.
    Listen(SocketAddr),
    /// Clock tick from the serving thread.
    Tick,
    /// To a shard's worker: run `req` in database `db`.
    Run {
        origin: Origin,
        db: u32,
        req: Request,
    },
    /// To a connection's worker: a reply.
    Done(Done),
    /// `--wal-io storage`: a storage completion of this shard's WAL.
    Disk(StorageCompletion),
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
    #[error("cannot create --dir {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("--shards must be at least 1")]
    NoShards,
    #[error(
        "--shards {requested}, but {} holds a store of {recorded} shards \
         (pass --shards {recorded}, or no --shards, or another --dir)",
        dir.display()
    )]
    ShardCount {
        dir: PathBuf,
        recorded: usize,
        requested: usize,
    },
    #[error("{}: {source}", file.display())]
    Open {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error(transparent)]
    Mesh(#[from] crate::mesh::MeshError),
}

/// The shard of `key` in database `db` among `shards`.
pub fn shard_of(db: u32, key: &[u8], shards: usize) -> usize {
    HashPartitioner::new().partition(hash_key(&TableId(db).key(key)), shards)
}

/// The current time in Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One application worker: shard `index`.
pub struct Node {
    index: usize,
    shards: usize,
    cfg: ServeConfig,
    server: ServerInfo,
    io: IoWorkers,
    mode: NetworkMode,
}

/// A worker's state, built on its own thread.
pub struct NodeState {
    index: usize,
    shards: usize,
    /// One client per network worker (replies go through the one that owns
    /// the connection); thread-per-core, the one of this worker's own.
    clients: Vec<NetClient>,
    /// Thread-per-core: this worker's own network backend.
    net: Option<NetworkWorker>,
    /// Sinks into every worker, indexed like the group; empty until `Wire`.
    peers: Vec<ResultSink<Msg>>,
    conns: HashMap<ConnId, conn::Conn>,
    /// Connections to write at the end of the round (`conn::mark`).
    to_flush: Vec<ConnId>,
    host: Host<Origin>,
    /// Runs what needs no shard (PING, SELECT, CONFIG, COMMAND, QUIT).
    front: crate::resp::exec::Executor<crate::resp::engine::MemEngine>,
    max_bulk: usize,
}

impl NodeState {
    /// Delivers `msg` to worker `to` without blocking (a full queue keeps
    /// it in the sink's backlog, retried on later deliveries and ticks).
    fn deliver(&mut self, to: usize, msg: Msg) {
        match self.peers.get_mut(to) {
            Some(sink) => sink.deliver(msg),
            None => tracing::warn!(worker = self.index, "not wired yet, dropped a message"),
        }
    }

    /// Sends replies to their connections' workers (or completes them
    /// here).
    fn answer(&mut self, replies: Vec<(Origin, Reply)>) {
        for (origin, reply) in replies {
            let done = Done { origin, reply };
            if done.origin.worker == self.index {
                conn::on_done(self, done);
            } else {
                self.deliver(done.origin.worker, Msg::Done(done));
            }
        }
    }
}

impl Node {
    fn open_shard(&self) -> Result<Shard> {
        let file = self.cfg.dir.join(format!("shard-{}.data", self.index));
        let opts = ShardOptions {
            page_size: self.cfg.page_size,
            layout: ShardLayout {
                count: u32::try_from(self.shards).unwrap_or(u32::MAX),
                index: u32::try_from(self.index).unwrap_or(u32::MAX),
                partitioning: Partitioning::Hash,
            },
            wal: WalConfig {
                segment_bytes: 8 << 20,
            },
            cache_bytes: self.cfg.cache_bytes / self.shards.max(1),
        };
        let shard = Shard::open(&file, opts).map_err(|e| {
            let hint = match &e {
                StoreError::Manifest(
                    ManifestError::PageSize { .. } | ManifestError::Layout { .. },
                ) => " (pass the --shards and --page-size the directory was made with)",
                _ => "",
            };
            Error::InvalidConfig(format!("{e}{hint}"))
        })?;
        report_recovery(self.index, &file, shard.recovery());
        Ok(shard)
    }

    fn network(&self) -> Result<(Option<NetworkWorker>, Vec<NetClient>)> {
        crate::mesh::network::<Msg>(self.mode, &self.io, self.index, "store")
    }
}

impl Worker for Node {
    type State = NodeState;
    type Message = Msg;
    type Reply = ();

    fn init(&mut self) -> Result<NodeState> {
        let shard = self.open_shard()?;
        let (net, clients) = self.network()?;
        let mut host = Host::new(
            self.index,
            shard,
            self.server.clone(),
            self.cfg.sync,
            self.cfg.checkpoint,
        );
        if self.cfg.wal_io == WalIoMode::Storage {
            let storage = self.io.storage(self.index % self.io.storage_count().max(1));
            let client = storage.client(ResultSink::to_current_worker(Msg::Disk)?)?;
            let file = self.cfg.dir.join(format!("shard-{}.data", self.index));
            host = host.with_disk(wal_disk::WalDisk::new(
                client,
                &crate::shard::wal_dir(&file),
            ));
        }
        let front = crate::resp::exec::Executor::new(
            crate::resp::engine::MemEngine::default(),
            self.server.clone(),
        );
        Ok(NodeState {
            index: self.index,
            shards: self.shards,
            clients,
            net,
            peers: Vec::new(),
            conns: HashMap::new(),
            to_flush: Vec::new(),
            host,
            front,
            max_bulk: self.cfg.max_bulk,
        })
    }

    fn handle_message(&mut self, st: &mut NodeState, msg: Envelope<Msg>) -> Result<()> {
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

    /// Group commit: one WAL sync for every write of the round, then the
    /// replies it held go out (`host.rs`, D1).
    fn after_round(&mut self, st: &mut NodeState) -> Result<()> {
        let released = st.host.commit();
        st.answer(released);
        conn::flush_marked(st);
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
            st.host.tick();
        }
        Msg::Run { origin, db, req } => {
            if let Some(done) = st.host.run(origin, db, req, now_ms()) {
                st.answer(vec![done]);
            }
        }
        Msg::Done(done) => conn::on_done(st, done),
        Msg::Disk(c) => {
            let released = st.host.on_disk(c);
            st.answer(released);
        }
    }
}

/// Logs what opening shard `index`'s WAL repaired: a cut names the
/// segment file and the offset of the first invalid record (a torn tail
/// from a crash mid-write, or damage: the records from there on are gone).
fn report_recovery(index: usize, file: &Path, r: &crate::wal::Recovery) {
    if let Some((first, found, kept)) = r.truncated {
        let segment = crate::shard::wal_dir(file).join(crate::wal::segment_name(first));
        let cut = format!(
            "{}: invalid WAL record at offset {kept}; cut {} bytes there and removed {} \
             later segment(s)",
            segment.display(),
            found - kept,
            r.removed.len()
        );
        match r.damage {
            // V2: a whole record followed, so this was written whole once.
            Some(later) => tracing::error!(
                target: "store",
                shard = index,
                "{cut}: damage, not a torn tail (a valid record, LSN {}, follows it): \
                 the writes from there on, acknowledged ones among them, are lost",
                later.0
            ),
            None => tracing::warn!(
                target: "store",
                shard = index,
                "{cut}: a torn tail (a crash mid-write; nothing valid follows)"
            ),
        }
    }
    tracing::info!(
        target: "store",
        shard = index,
        "{}: opened ({} WAL records, {} replayed)",
        file.display(),
        r.records,
        r.replayed
    );
}

/// Reads both manifest slots of each existing shard file before any
/// worker starts: a damaged slot is logged (the file, the slot and its
/// bytes, why, and the checkpoint the other slot opens at), and a file
/// with neither slot valid is refused, naming both reasons.
///
/// # Errors
/// A file cannot be opened or has no valid manifest.
fn check_manifests(dir: &Path, shards: usize, page_size: PageSize) -> Result<(), ServeError> {
    for index in 0..shards {
        let file = dir.join(format!("shard-{index}.data"));
        match std::fs::metadata(&file) {
            Ok(m) if m.len() > 0 => {}
            _ => continue,
        }
        let (store, _) = FileStore::open(&file, page_size).map_err(|source| ServeError::Open {
            file: file.clone(),
            source,
        })?;
        let slots = crate::manifest::read_slots(&store, &file)?;
        let (newest, _) = crate::manifest::load(&store, &file)?;
        for (slot, read) in slots.iter().enumerate() {
            if let Err(why) = read
                && *why != SlotError::Missing
            {
                let at = slot * crate::pagestore::SLOT_LEN;
                tracing::error!(
                    target: "store",
                    shard = index,
                    "{}: manifest slot {slot} (bytes {at}..{}) is damaged: {why}; \
                     opening at checkpoint {} (LSN {}) from the other slot",
                    file.display(),
                    at + crate::pagestore::SLOT_LEN,
                    newest.tree.seq,
                    newest.lsn
                );
            }
        }
    }
    Ok(())
}

/// The shard count the store in `dir` records (shard 0's newest
/// manifest), `None` for a new directory.
///
/// # Errors
/// The file cannot be opened or has no valid manifest.
fn recorded_shards(dir: &Path, page_size: PageSize) -> Result<Option<usize>, ServeError> {
    let file = dir.join("shard-0.data");
    match std::fs::metadata(&file) {
        Ok(m) if m.len() > 0 => {}
        _ => return Ok(None),
    }
    let open_err = |source| ServeError::Open {
        file: file.clone(),
        source,
    };
    let (store, _) = FileStore::open(&file, page_size).map_err(open_err)?;
    let (manifest, _) = crate::manifest::load(&store, &file)?;
    Ok(Some(manifest.layout.count as usize))
}

fn resolve(addr: &str) -> Result<SocketAddr, ServeError> {
    let err = |reason: String| ServeError::Addr {
        addr: addr.to_owned(),
        reason,
    };
    addr.to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".to_owned()))
}

/// Starts the store and serves until the process ends.
///
/// # Errors
/// The directory cannot be created, a shard cannot open (another shard
/// count or page size, corruption), the pool or the network cannot start,
/// or the address cannot be bound.
pub fn serve(cfg: &ServeConfig) -> Result<(), ServeError> {
    let addr = resolve(&cfg.addr)?;
    std::fs::create_dir_all(&cfg.dir).map_err(|source| ServeError::Dir {
        dir: cfg.dir.clone(),
        source,
    })?;
    // Checked before any worker starts: a clear error, nothing opened.
    let recorded = recorded_shards(&cfg.dir, cfg.page_size)?;
    match (cfg.shards, recorded) {
        (Some(0), _) => return Err(ServeError::NoShards),
        (Some(requested), Some(recorded)) if requested != recorded => {
            return Err(ServeError::ShardCount {
                dir: cfg.dir.clone(),
                recorded,
                requested,
            });
        }
        _ => {}
    }
    let pool = WorkerPool::new()?;
    let shards = cfg
        .shards
        .or(recorded)
        .unwrap_or(pool.app_plan().app_workers.len().max(1));
    check_manifests(&cfg.dir, shards, cfg.page_size)?;
    let mode = pool.plan().network_mode;
    let io = pool.start_io()?;
    let server = ServerInfo {
        port: addr.port(),
        pid: std::process::id(),
        started_ms: now_ms(),
        appendonly: cfg.sync != SyncMode::Never,
        max_bulk: cfg.max_bulk,
    };
    let (io2, cfg2) = (io.clone(), cfg.clone());
    let mut group = pool.spawn_workers(shards, move |index| Node {
        index,
        shards,
        cfg: cfg2.clone(),
        server: server.clone(),
        io: io2.clone(),
        mode,
    })?;
    crate::mesh::wire(&mut group)?;
    let local = crate::mesh::listen(&mut group, mode, &io, addr)?;
    println!(
        "store: listening on {local} (shards: {shards}, network {mode}, data in {}, sync {}, \
         WAL I/O on the {})",
        cfg.dir.display(),
        cfg.sync,
        match cfg.wal_io {
            WalIoMode::Shard => "shard's thread",
            WalIoMode::Storage => "storage worker",
        }
    );
    crate::mesh::clock(&group, TICK)
}
