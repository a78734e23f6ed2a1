//! The network worker: a thread that owns one io_uring (or, as a fallback,
//! an epoll instance through `mio`) and all the sockets of its connections.
//!
//! Listening sockets are handed to it with [`NetworkWorker::listen`]; each
//! accepted connection belongs to the application worker a partitioner
//! picks, which then receives [`NetEvent`]s for it (accepted, data, closed,
//! error) through its [`ResultSink`]. Replies go back through a
//! [`NetClient`]: `send` takes the buffer by ownership, and the network
//! worker may recycle it as a receive buffer once it is sent (a bounded
//! pool: what exceeds it is freed).

mod conn;
mod local;
mod poll;
mod sendq;
mod uring;

use super::backend::{BackendChoice, Chosen, IoBackendKind, Started, choose, spawn_worker};
use super::error::{IoError, SubmitError};
use super::inbox::{self, Shared};
use super::slots;
use super::wake::EventFd;
use crate::partition::Partitioner;
use crate::worker::ResultSink;
use crate::{Error, Result};
use parking_lot::Mutex;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A connection on one network worker. Send replies for it through a
/// [`NetClient`] of that worker ([`ConnId::worker`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    pub(crate) fn slot(self) -> u32 {
        slots::slot_of(self.0)
    }

    pub(crate) fn generation(self) -> u32 {
        slots::generation_of(self.0)
    }

    /// The network worker that owns the socket.
    pub fn worker(self) -> usize {
        slots::worker_of(self.0)
    }

    /// The raw id (a good partitioning key).
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConnId(w{}:{}#{})",
            self.worker(),
            self.slot(),
            self.generation()
        )
    }
}

/// What happened on a connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetEventKind {
    /// A listener accepted the connection; it now belongs to the receiver.
    Accepted {
        /// The peer.
        peer: SocketAddr,
        /// The listening address it came in on.
        local: SocketAddr,
    },
    /// An outbound connection ([`NetClient::connect`]) is established.
    Connected {
        /// The token given to `connect`.
        token: u64,
    },
    /// An outbound connection failed; `conn` is not usable.
    ConnectFailed {
        /// The token given to `connect`.
        token: u64,
        /// Why.
        error: IoError,
    },
    /// Bytes arrived (the buffer is the receiver's to keep).
    Data(Vec<u8>),
    /// The peer finished sending (end of stream: it closed, or shut down
    /// its writing side). No more `Data` will come; the connection stays
    /// open for sending until you [`NetClient::close`] it, so replies to
    /// everything received (acks, say) still reach a half-closed peer.
    PeerClosed,
    /// The connection failed (`ECONNRESET`, `EPIPE`, ...); `Closed` follows.
    Error(IoError),
    /// The connection is closed (by [`NetClient::close`], after an error,
    /// or because the worker stopped); its id is invalid from now on.
    Closed,
    /// The socket has taken every byte of the buffer sent with
    /// [`NetClient::send_tracked`] and this `tag` (to the client that sent
    /// it). `queued` is what the connection still holds unsent, in bytes:
    /// a slow reader shows as a queue that does not drain.
    Sent {
        /// The tag given to `send_tracked`.
        tag: u64,
        /// Bytes still queued on the connection.
        queued: usize,
    },
    /// A send did not fit the connection's queue
    /// ([`NetConfig::send_queue_limit`]): the buffer comes back, unsent,
    /// to the client that sent it. Send it again once `Sent` events show
    /// the queue draining, or close a peer that does not read.
    SendRefused {
        /// The buffer, untouched.
        buf: Vec<u8>,
        /// Its tag, if it was sent with `send_tracked`.
        tag: Option<u64>,
        /// Bytes queued on the connection when it was refused.
        queued: usize,
    },
}

/// One event for one connection.
#[derive(Debug)]
pub struct NetEvent {
    /// The connection.
    pub conn: ConnId,
    /// What happened.
    pub kind: NetEventKind,
}

/// A request to a network worker.
#[derive(Debug)]
pub(crate) enum NetRequest {
    Send {
        conn: ConnId,
        buf: Vec<u8>,
        tag: Option<u64>,
    },
    Close {
        conn: ConnId,
    },
    /// Stop (`false`) or resume (`true`) receiving on `conn`.
    Reading {
        conn: ConnId,
        on: bool,
    },
    Connect {
        addr: SocketAddr,
        token: u64,
    },
}

/// A listening socket on its way to the worker.
pub(crate) struct NewListener {
    pub(crate) listener: TcpListener,
    pub(crate) targets: Vec<ResultSink<NetEvent>>,
    pub(crate) partitioner: Arc<dyn Partitioner>,
}

/// How a network worker is set up.
///
/// ```
/// use shared_nothing::io::{NetConfig, BackendChoice};
/// let c = NetConfig::new().backend(BackendChoice::Fallback);
/// assert_eq!(c.recv_buffer, 64 * 1024);
/// ```
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// io_uring or the fallback.
    pub backend: BackendChoice,
    /// Submission queue entries.
    pub ring_entries: u32,
    /// Requests each client may queue before `send` reports `Full`.
    pub client_queue: usize,
    /// Bytes per receive buffer (one per connection).
    pub recv_buffer: usize,
    /// Events a connection's owner may have waiting before the worker
    /// stops reading from that connection (receive backpressure).
    pub max_backlog: usize,
    /// Bytes a connection may hold unsent before a send is refused
    /// ([`NetEventKind::SendRefused`], send backpressure; a send into an
    /// empty queue is always taken, however large).
    pub send_queue_limit: usize,
    /// The CPU to pin to.
    pub cpu: Option<usize>,
    /// How long to keep polling with nothing to do before sleeping in the
    /// kernel (latency vs spare CPU).
    pub spin: std::time::Duration,
    /// Thread name.
    pub name: String,
    /// Provided receive buffers: how many (a power of two) and how large.
    /// Connections then receive with multishot receives that take a buffer
    /// from this shared ring per completion (the bytes are copied out into
    /// an event of their size and the buffer goes back at once), so an idle
    /// connection holds no receive buffer. `None`, or a kernel without
    /// provided-buffer rings (before 5.19) or multishot receive (before
    /// 6.0), gives each connection its own `recv_buffer`. io_uring backend
    /// only.
    pub provided_buffers: Option<(u16, usize)>,
    /// Sends of at least this many bytes go out zero-copy
    /// (`IORING_OP_SEND_ZC`: the kernel sends from the buffer itself and
    /// lets go of it with a second completion) where the kernel has it;
    /// `None` (the default) copies every send. io_uring backend only.
    pub zero_copy_min: Option<usize>,
    /// Bind listeners with `SO_REUSEPORT`, so that several workers (each
    /// with its own network backend, as in thread-per-core mode) listen on
    /// one port and the kernel spreads connections over them.
    pub reuse_port: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl NetConfig {
    /// 256 entries, 64 KiB receive buffers per connection or 256 provided
    /// buffers of 16 KiB shared by all (see `provided_buffers`).
    pub fn new() -> Self {
        Self {
            backend: BackendChoice::Auto,
            ring_entries: 256,
            client_queue: 1024,
            recv_buffer: 64 * 1024,
            max_backlog: 64,
            send_queue_limit: DEFAULT_SEND_QUEUE_LIMIT,
            cpu: None,
            spin: std::time::Duration::from_micros(50),
            name: "network-0".into(),
            zero_copy_min: None,
            provided_buffers: Some((256, 16 << 10)),
            reuse_port: false,
        }
    }

    /// Sets the provided receive buffers (see
    /// [`provided_buffers`](Self#structfield.provided_buffers); `None` for
    /// a buffer per connection).
    pub fn provided_buffers(mut self, buffers: Option<(u16, usize)>) -> Self {
        self.provided_buffers = buffers;
        self
    }

    /// Sends of at least `bytes` go out zero-copy (see
    /// [`zero_copy_min`](Self#structfield.zero_copy_min)).
    pub fn zero_copy_send(mut self, bytes: usize) -> Self {
        self.zero_copy_min = Some(bytes);
        self
    }

    /// Binds listeners with `SO_REUSEPORT` (see
    /// [`reuse_port`](Self#structfield.reuse_port)).
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// Chooses the backend.
    pub fn backend(mut self, b: BackendChoice) -> Self {
        self.backend = b;
        self
    }

    /// Pins the worker.
    pub fn cpu(mut self, cpu: Option<usize>) -> Self {
        self.cpu = cpu;
        self
    }

    /// Names the thread.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Bounds each connection's unsent bytes (see
    /// [`send_queue_limit`](Self#structfield.send_queue_limit)).
    pub fn send_queue_limit(mut self, bytes: usize) -> Self {
        self.send_queue_limit = bytes;
        self
    }
}

/// The default bound on a connection's unsent bytes: 16 MiB.
pub const DEFAULT_SEND_QUEUE_LIMIT: usize = 16 << 20;

pub(crate) type NetShared = Shared<NetRequest, NetEvent>;

/// What the handle and the thread share besides the inbox.
pub(crate) struct Control {
    pub(crate) listeners: Mutex<Vec<NewListener>>,
    /// Listeners to close (by the address `listen` returned), each with
    /// the channel to answer once its socket is closed.
    pub(crate) closing: Mutex<Vec<(SocketAddr, crossbeam_channel::Sender<()>)>>,
    /// Addresses listened on and not closed (for `close_listener`'s error).
    pub(crate) bound: Mutex<Vec<SocketAddr>>,
}

impl Control {
    pub(crate) fn new() -> Self {
        Self {
            listeners: Mutex::new(Vec::new()),
            closing: Mutex::new(Vec::new()),
            bound: Mutex::new(Vec::new()),
        }
    }

    /// Whether a listener waits to be added or closed (the sleep re-check).
    pub(crate) fn has_work(&self) -> bool {
        !self.listeners.lock().is_empty() || !self.closing.lock().is_empty()
    }
}

/// A running network worker.
///
/// ```
/// use shared_nothing::io::{NetworkWorker, NetConfig, NetEventKind};
/// use shared_nothing::partition::RoundRobinPartitioner;
/// use shared_nothing::worker::ResultSink;
/// use std::io::{Read, Write};
/// use std::sync::Arc;
///
/// let net = NetworkWorker::start(0, NetConfig::new()).unwrap();
/// let (sink, mut events) = ResultSink::queue();
/// let addr = net
///     .listen("127.0.0.1:0".parse().unwrap(), vec![sink], Arc::new(RoundRobinPartitioner::new()))
///     .unwrap();
/// let (client_sink, _unused) = ResultSink::queue();
/// let mut replies = net.client(client_sink).unwrap();
///
/// let mut peer = std::net::TcpStream::connect(addr).unwrap();
/// peer.write_all(b"ping").unwrap();
/// let mut got = Vec::new();
/// while got.len() < 4 {
///     let ev = events.recv().unwrap();
///     if let NetEventKind::Data(d) = ev.kind {
///         got.extend_from_slice(&d);
///         replies.send(ev.conn, d).unwrap(); // echo
///     }
/// }
/// let mut back = [0u8; 4];
/// peer.read_exact(&mut back).unwrap();
/// assert_eq!(&back, b"ping");
/// ```
pub struct NetworkWorker {
    index: usize,
    shared: Arc<NetShared>,
    control: Arc<Control>,
    waker: Arc<EventFd>,
    backend: IoBackendKind,
    reuse_port: bool,
    /// Runs on an application worker's thread (`start_local`).
    local: bool,
    join: Option<JoinHandle<()>>,
    /// Once stopping, how many events still wait for full targets.
    drained: crossbeam_channel::Receiver<usize>,
}

impl fmt::Debug for NetworkWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkWorker")
            .field("index", &self.index)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl NetworkWorker {
    /// Starts network worker `index` (part of every [`ConnId`] it hands
    /// out).
    ///
    /// # Errors
    /// `Io` if the eventfd or thread cannot be created; `InvalidConfig` if
    /// io_uring was required but cannot be set up, the backend variable is
    /// malformed, or `index` is over 255 (ids carry it in 8 bits).
    pub fn start(index: usize, config: NetConfig) -> Result<Self> {
        super::slots::check_index("network", index)?;
        let waker = Arc::new(EventFd::new()?);
        let w = waker.clone();
        let shared = Shared::new(Arc::new(move || w.notify()), config.client_queue);
        let control = Arc::new(Control::new());
        let (s, c, wk, cfg) = (
            shared.clone(),
            control.clone(),
            waker.clone(),
            config.clone(),
        );
        let (drained_tx, drained) = crossbeam_channel::bounded(1);
        let (join, backend) = spawn_worker(&config.name, config.cpu, move || {
            let setup = || uring::UringNet::new(index, &cfg, s.clone(), c.clone(), wk.clone());
            let started: Started<IoBackendKind> = match choose(cfg.backend, setup)? {
                Chosen::Uring(u) => {
                    Ok((IoBackendKind::IoUring, Box::new(move || u.run(drained_tx))))
                }
                Chosen::Fallback(reason) => {
                    let p = poll::PollNet::new(index, &cfg, s, c, wk)?;
                    Ok((
                        IoBackendKind::Fallback { reason },
                        Box::new(move || p.run(drained_tx)),
                    ))
                }
            };
            started
        })?;
        super::backend::trace_started("network", index, config.cpu, &backend);
        let parts = Parts {
            shared,
            control,
            waker,
            backend,
        };
        Ok(Self::handle(index, &config, parts, Some((join, drained))))
    }

    /// The handle over a started backend: with its thread (`start`), or
    /// polled by the calling worker (`start_local`, `None`).
    fn handle(
        index: usize,
        config: &NetConfig,
        parts: Parts,
        thread: Option<(JoinHandle<()>, crossbeam_channel::Receiver<usize>)>,
    ) -> Self {
        let local = thread.is_none();
        let (join, drained) = match thread {
            Some((join, drained)) => (Some(join), drained),
            None => (None, crossbeam_channel::bounded(1).1),
        };
        Self {
            index,
            shared: parts.shared,
            control: parts.control,
            waker: parts.waker,
            backend: parts.backend,
            reuse_port: config.reuse_port,
            local,
            join,
            drained,
        }
    }

    /// Starts network worker `index` on the calling application worker's
    /// own thread (thread-per-core mode): no thread of its own; the worker
    /// polls its ring once per loop round, after its message batches, and
    /// sleeps in it when idle (a message sent to the worker wakes it out of
    /// the kernel). Call it from [`Worker::init`](crate::worker::Worker::init)
    /// and keep the handle in the worker's state. Everything else is as
    /// with [`start`](Self::start): `listen` (with
    /// [`NetConfig::reuse_port`], every worker can listen on the same
    /// port), `client`, and events through sinks (usually into this same
    /// worker, [`ResultSink::to_current_worker`]), without leaving the core.
    /// `config.cpu` and `config.spin` are ignored (the worker is pinned and
    /// spins by its own configuration).
    ///
    /// The worker ends it when it exits or restarts; `stop` ends it sooner.
    ///
    /// # Errors
    /// `InvalidConfig` off a worker thread, or on a worker that runs one
    /// already; otherwise as [`start`](Self::start).
    pub fn start_local(index: usize, config: NetConfig) -> Result<Self> {
        super::slots::check_index("network", index)?;
        let waker = Arc::new(EventFd::new()?);
        // Clients wake the worker through the driver it sleeps in: this
        // one, or one installed before it.
        let wake = crate::worker::local::primary_waker().unwrap_or_else(|| {
            let w = waker.clone();
            Arc::new(move || w.notify())
        });
        let shared = Shared::new(wake, config.client_queue);
        let control = Arc::new(Control::new());
        let setup = || {
            uring::UringNet::new(
                index,
                &config,
                shared.clone(),
                control.clone(),
                waker.clone(),
            )
        };
        let (backend, driver): (IoBackendKind, Box<dyn local::Backend>) =
            match choose(config.backend, setup)? {
                Chosen::Uring(u) => (IoBackendKind::IoUring, Box::new(u)),
                Chosen::Fallback(reason) => {
                    let p = poll::PollNet::new(
                        index,
                        &config,
                        shared.clone(),
                        control.clone(),
                        waker.clone(),
                    )?;
                    (IoBackendKind::Fallback { reason }, Box::new(p))
                }
            };
        let driver = crate::io::local::Local::new("network", driver, shared.clone(), waker.clone());
        if let Err((e, _)) = crate::worker::local::install(Box::new(driver)) {
            return Err(Error::InvalidConfig(format!(
                "NetworkWorker::start_local({index}): {e}"
            )));
        }
        super::backend::trace_started("network (local)", index, None, &backend);
        crate::io::stats::report_local("network", index, crate::io::stats::source(&shared));
        let parts = Parts {
            shared,
            control,
            waker,
            backend,
        };
        Ok(Self::handle(index, &config, parts, None))
    }

    /// What the worker has done so far.
    pub fn stats(&self) -> crate::io::IoStats {
        self.shared.stats.snapshot()
    }

    /// Reads [`stats`](Self::stats) for as long as the worker's state
    /// lives, without keeping it alive (for the pool's metrics).
    pub(crate) fn stats_source(&self) -> crate::io::stats::StatsSource {
        crate::io::stats::source(&self.shared)
    }

    /// The worker's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Which backend runs the sockets.
    pub fn backend(&self) -> &IoBackendKind {
        &self.backend
    }

    /// Binds `addr` and accepts on it; each accepted connection goes to
    /// `targets[partitioner.partition(n, targets.len())]` for the n-th
    /// connection (a round-robin partitioner spreads them evenly). Returns
    /// the bound address (port 0 picks a free port).
    ///
    /// The socket is bound with `SO_REUSEADDR` (so connections of an
    /// earlier listener left in `TIME_WAIT` do not block it), and a port
    /// still in use is retried for up to [`BIND_RETRY`]: a listener that
    /// is going away (a killed process's, whose ring the kernel is still
    /// tearing down) holds its port for a few milliseconds.
    ///
    /// # Errors
    /// `Io` for a bind failure (`EADDRINUSE` after the retries, `EACCES`),
    /// its message naming the address and the cause; `InvalidConfig` for
    /// no targets; `WorkerStopped` if the worker has stopped.
    pub fn listen(
        &self,
        addr: SocketAddr,
        targets: Vec<ResultSink<NetEvent>>,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<SocketAddr> {
        if targets.is_empty() {
            return Err(Error::InvalidConfig(
                "listen needs at least one target".into(),
            ));
        }
        if self.shared.stop.load(std::sync::atomic::Ordering::Acquire) {
            return Err(self.stopped());
        }
        let listener = bind_listener(addr, self.reuse_port)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        self.control.bound.lock().push(local);
        self.control.listeners.lock().push(NewListener {
            listener,
            targets,
            partitioner,
        });
        self.wake();
        Ok(local)
    }

    /// Stops accepting on the listener `listen` bound at `local` (the
    /// address it returned) and closes its socket, so the port is free
    /// again when this returns. Connections it accepted stay open, owned
    /// as before.
    ///
    /// # Errors
    /// `InvalidConfig` if this worker has no listener at `local`;
    /// `WorkerStopped` if the worker has stopped (its listeners are closed
    /// already); `Timeout` if the worker did not close it within 10 s.
    pub fn close_listener(&self, local: SocketAddr) -> Result<()> {
        {
            let mut bound = self.control.bound.lock();
            let Some(i) = bound.iter().position(|a| *a == local) else {
                return Err(Error::InvalidConfig(format!(
                    "network-{}: no listener on {local}",
                    self.index
                )));
            };
            bound.swap_remove(i);
        }
        if self.shared.stop.load(std::sync::atomic::Ordering::Acquire) {
            return Err(self.stopped());
        }
        let (done, closed) = crossbeam_channel::bounded(1);
        self.control.closing.lock().push((local, done));
        self.wake();
        if self.local {
            // On the worker that polls it, nothing else would run the
            // backend while this waits: run it here.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.waker);
                let polled = crate::worker::local::with(fd, |d| d.poll());
                match closed.try_recv() {
                    Ok(()) => return Ok(()),
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        return Err(self.stopped());
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) if polled.is_none() => break,
                    Err(crossbeam_channel::TryRecvError::Empty) => std::thread::yield_now(),
                }
            }
        }
        match closed.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(()) => Ok(()),
            // The worker stopped meanwhile: it closed every listener.
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(self.stopped()),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(Error::Timeout),
        }
    }

    /// Wakes the backend to take a listener change: its own eventfd, or,
    /// polled by a worker, that worker (its wait may be another driver's).
    fn wake(&self) {
        if self.local {
            self.shared.signal.notify_now();
        } else {
            self.waker.notify();
        }
    }

    fn stopped(&self) -> Error {
        Error::WorkerStopped {
            worker: format!("network-{}", self.index),
        }
    }

    /// A client for sending, closing and connecting; events of connections
    /// it opens go to `sink`.
    ///
    /// # Errors
    /// `WorkerStopped` if the worker has stopped.
    pub fn client(&self, sink: ResultSink<NetEvent>) -> Result<NetClient> {
        let ring = self.shared.join(sink, 0).map_err(|_| self.stopped())?;
        Ok(NetClient {
            worker: self.index,
            ring,
            local: self.local.then(|| {
                use std::os::fd::AsRawFd;
                (std::thread::current().id(), self.waker.as_raw_fd())
            }),
        })
    }

    /// Closes every connection and listener, delivers every event (each
    /// connection's `Closed` included) and joins the thread. Idempotent.
    ///
    /// If a target is still full once everything else is done, `stop`
    /// returns without joining and the thread keeps delivering until each
    /// event is taken or its target is gone (the target may be the worker
    /// calling `stop`).
    ///
    /// # Errors
    /// [`Error::WorkerFailed`] if the worker's thread panicked.
    pub fn stop(&mut self) -> Result<()> {
        self.shared.request_stop();
        if self.local {
            // The worker's loop ends it on its next round; a worker asleep
            // is woken through the signal its clients use (whose waker
            // wakes the driver it sleeps in).
            self.shared.signal.notify_now();
            return Ok(());
        }
        let Some(j) = self.join.take() else {
            return Ok(());
        };
        tracing::info!(role = "network", worker = self.index, "I/O worker stopping");
        match self.drained.recv() {
            // Events still wait for room: the thread delivers them and
            // then exits on its own.
            Ok(waiting) if waiting > 0 => Ok(()),
            _ => crate::io::backend::join_worker(j),
        }
    }
}

/// A port held for listeners that will bind it with
/// [`NetConfig::reuse_port`]: thread-per-core workers start in parallel,
/// so they need their one port before any of them listens. It is a socket
/// bound (not listening, so it gets no connections) with `SO_REUSEADDR`
/// and `SO_REUSEPORT`; drop it once the listeners are up.
///
/// ```
/// use shared_nothing::io::ReservedPort;
/// let port = ReservedPort::new("127.0.0.1:0".parse().unwrap()).unwrap();
/// assert_ne!(port.addr().port(), 0);
/// ```
#[derive(Debug)]
pub struct ReservedPort {
    _socket: socket2::Socket,
    addr: SocketAddr,
}

impl ReservedPort {
    /// Binds `addr` (port 0 picks a free port).
    ///
    /// # Errors
    /// `Io` if the address cannot be bound.
    pub fn new(addr: SocketAddr) -> Result<Self> {
        use socket2::{Domain, Socket, Type};
        let bind = || -> std::io::Result<(Socket, SocketAddr)> {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.bind(&addr.into())?;
            let local = socket.local_addr()?.as_socket().unwrap_or(addr);
            Ok((socket, local))
        };
        let (socket, addr) = bind().map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("reserving {addr}: {e}"),
            ))
        })?;
        Ok(Self {
            _socket: socket,
            addr,
        })
    }

    /// The address held, with the port chosen.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// What a started backend shares with its handle.
struct Parts {
    shared: Arc<NetShared>,
    control: Arc<Control>,
    waker: Arc<EventFd>,
    backend: IoBackendKind,
}

/// How long [`NetworkWorker::listen`] retries a port that is in use.
pub const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Binds a listening socket with `SO_REUSEADDR` (and `SO_REUSEPORT` with
/// `reuse_port`), backlog 1024.
fn bind_once(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Binds a listening socket, retrying `EADDRINUSE` for [`BIND_RETRY`].
fn bind_listener(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener> {
    use std::io::ErrorKind::AddrInUse;
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match bind_once(addr, reuse_port) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == AddrInUse && start.elapsed() < BIND_RETRY => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Err(e) if e.kind() == AddrInUse => {
                return Err(Error::Io(std::io::Error::new(
                    AddrInUse,
                    format!(
                        "binding {addr}: {e}, still after retrying for {:?} (another socket \
                         listens on it, with SO_REUSEADDR set on ours)",
                        start.elapsed()
                    ),
                )));
            }
            Err(e) => {
                return Err(Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("binding {addr}: {e}"),
                )));
            }
        }
    }
}

impl Drop for NetworkWorker {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Sends on, closes and opens connections of one network worker.
#[derive(Debug)]
pub struct NetClient {
    worker: usize,
    ring: inbox::Queued<NetRequest>,
    /// The thread that polls the worker, in thread-per-core mode, and the
    /// worker's wake-up eventfd (which names its driver there).
    local: Option<(std::thread::ThreadId, std::os::fd::RawFd)>,
}

fn unwrap_send(e: SubmitError<NetRequest>) -> SubmitError<Vec<u8>> {
    match e {
        SubmitError::Full(NetRequest::Send { buf, .. }) => SubmitError::Full(buf),
        SubmitError::Stopped(NetRequest::Send { buf, .. }) => SubmitError::Stopped(buf),
        SubmitError::Full(_) => SubmitError::Full(Vec::new()),
        SubmitError::Stopped(_) => SubmitError::Stopped(Vec::new()),
    }
}

impl NetClient {
    /// Submits `req`. On the thread that polls a local (thread-per-core)
    /// worker, a full ring lets the worker take what it holds first, once:
    /// nothing else would run it while the caller's handler waits.
    fn submit(&mut self, req: NetRequest) -> std::result::Result<(), SubmitError<NetRequest>> {
        match self.ring.submit(req) {
            Err(SubmitError::Full(req)) => match self.local {
                Some((thread, fd)) if thread == std::thread::current().id() => {
                    let _ = crate::worker::local::with(fd, |d| d.poll());
                    self.ring.submit(req)
                }
                _ => Err(SubmitError::Full(req)),
            },
            r => r,
        }
    }

    /// The network worker this client talks to.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Queues `buf` to be sent on `conn`, in order after earlier sends.
    /// Failures arrive as [`NetEventKind::Error`] on the connection; a
    /// buffer past the connection's queue bound comes back as
    /// [`NetEventKind::SendRefused`] to this client's sink.
    ///
    /// # Errors
    /// `Full` (backpressure) or `Stopped`, with the buffer.
    pub fn send(
        &mut self,
        conn: ConnId,
        buf: Vec<u8>,
    ) -> std::result::Result<(), SubmitError<Vec<u8>>> {
        self.submit(NetRequest::Send {
            conn,
            buf,
            tag: None,
        })
        .map_err(unwrap_send)
    }

    /// As [`send`](Self::send), and once the socket has taken all of
    /// `buf`, [`NetEventKind::Sent`] with `tag` and the bytes still queued
    /// comes to this client's sink: the sender can tell queued from sent,
    /// and pace itself on a slow reader. A connection that fails first
    /// reports `Error` and `Closed` instead (the buffer was not all sent).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_tracked(
        &mut self,
        conn: ConnId,
        buf: Vec<u8>,
        tag: u64,
    ) -> std::result::Result<(), SubmitError<Vec<u8>>> {
        self.submit(NetRequest::Send {
            conn,
            buf,
            tag: Some(tag),
        })
        .map_err(unwrap_send)
    }

    /// Closes `conn` after its queued sends; [`NetEventKind::Closed`]
    /// follows.
    ///
    /// # Errors
    /// `Full` or `Stopped`.
    pub fn close(&mut self, conn: ConnId) -> std::result::Result<(), SubmitError<ConnId>> {
        self.submit(NetRequest::Close { conn })
            .map_err(|e| match e {
                SubmitError::Full(_) => SubmitError::Full(conn),
                SubmitError::Stopped(_) => SubmitError::Stopped(conn),
            })
    }

    /// Stops receiving on `conn` until [`resume_reading`](Self::resume_reading):
    /// the way an application applies backpressure to a peer that sends
    /// faster than it can take (the socket's receive buffer fills and TCP
    /// slows the sender down). What a receive already took may still
    /// arrive as `Data` after this; nothing is lost, and sends go on. An
    /// end of stream or reset is noticed when reading resumes (or by a
    /// send). Independent of the worker's own pause while the owner's
    /// queue is backlogged: a connection reads only when neither holds it.
    ///
    /// # Errors
    /// `Full` or `Stopped`, with the id. A connection that is not open
    /// gets an [`NetEventKind::Error`] on this client's sink.
    pub fn pause_reading(&mut self, conn: ConnId) -> std::result::Result<(), SubmitError<ConnId>> {
        self.reading(conn, false)
    }

    /// Receives on `conn` again after [`pause_reading`](Self::pause_reading)
    /// (what arrived meanwhile comes first, in order).
    ///
    /// # Errors
    /// As [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&mut self, conn: ConnId) -> std::result::Result<(), SubmitError<ConnId>> {
        self.reading(conn, true)
    }

    fn reading(&mut self, conn: ConnId, on: bool) -> std::result::Result<(), SubmitError<ConnId>> {
        self.submit(NetRequest::Reading { conn, on })
            .map_err(|e| match e {
                SubmitError::Full(_) => SubmitError::Full(conn),
                SubmitError::Stopped(_) => SubmitError::Stopped(conn),
            })
    }

    /// Connects to `addr`; the outcome arrives on this client's sink as
    /// [`NetEventKind::Connected`] or [`NetEventKind::ConnectFailed`] with
    /// `token`.
    ///
    /// # Errors
    /// `Full` or `Stopped`, with the address.
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        token: u64,
    ) -> std::result::Result<(), SubmitError<SocketAddr>> {
        self.submit(NetRequest::Connect { addr, token })
            .map_err(|e| match e {
                SubmitError::Full(_) => SubmitError::Full(addr),
                SubmitError::Stopped(_) => SubmitError::Stopped(addr),
            })
    }

    /// Whether the worker has stopped.
    pub fn is_stopped(&self) -> bool {
        self.ring.is_closed()
    }
}

#[cfg(test)]
mod tests;

impl crate::io::error::Completion for NetEvent {
    fn report(&self, stats: &crate::io::stats::IoCounters) {
        stats.completions.add(1);
        match &self.kind {
            NetEventKind::Data(d) => stats.bytes_in.add(d.len() as u64),
            NetEventKind::Error(e) => {
                stats.errors.add(1);
                tracing::debug!(conn = self.conn.0, errno = e.errno(), error = %e, "connection failed");
            }
            NetEventKind::ConnectFailed { token, error } => {
                stats.errors.add(1);
                tracing::debug!(token, errno = error.errno(), error = %error, "connect failed");
            }
            _ => {}
        }
    }
}
