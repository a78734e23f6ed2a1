//! The wiring the example servers share, on the crate's public API: every
//! worker gets a sink into every worker of its group (so any worker can
//! hand work to any other without blocking), the group listens on one
//! address in the plan's network mode (thread-per-core: each worker on its
//! own network backend, all on one reserved port with `SO_REUSEPORT`;
//! dedicated: one network worker handing connections out round robin), and
//! the calling thread becomes the group's clock.
//!
//! An app's message type says how it carries these steps ([`MeshMsg`]);
//! its handler passes every message through [`take_setup`] first, which
//! answers the wiring and listening requests.

use shared_nothing::io::{NetClient, NetConfig, NetEvent, NetworkWorker, ReservedPort};
use shared_nothing::partition::RoundRobinPartitioner;
use shared_nothing::pool::{IoWorkers, NetworkMode, WorkerGroup};
use shared_nothing::prelude::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long one worker may take to take its wiring or start listening.
const STEP: Duration = Duration::from_secs(10);

/// The messages of a group wired by this module.
pub trait MeshMsg: Sized + Send + 'static {
    /// One sink per worker of the group, in index order.
    fn wire(sinks: Vec<ResultSink<Self>>) -> Self;
    /// Thread-per-core: listen on this (shared) address.
    fn listen(addr: SocketAddr) -> Self;
    /// A socket event.
    fn net(ev: NetEvent) -> Self;
    /// The clock's tick.
    fn tick() -> Self;
    /// The message as a setup step, or itself if it is another message.
    fn into_setup(self) -> Result<Setup<Self>, Self>;
}

/// The messages [`take_setup`] handles.
pub enum Setup<M: Send + 'static> {
    /// See [`MeshMsg::wire`].
    Wire(Vec<ResultSink<M>>),
    /// See [`MeshMsg::listen`].
    Listen(SocketAddr),
}

/// A worker's part of [`wire`] and [`listen`]: takes its sinks into
/// `peers`, or listens on its own backend (`net`), and answers the request.
/// Returns any other message for the app to handle.
pub fn take_setup<M: MeshMsg>(
    msg: M,
    env: &mut Envelope<M>,
    peers: &mut Vec<ResultSink<M>>,
    net: Option<&NetworkWorker>,
    worker: usize,
) -> Option<M> {
    let done = match msg.into_setup() {
        Err(other) => return Some(other),
        Ok(Setup::Wire(sinks)) => {
            *peers = sinks;
            true
        }
        Ok(Setup::Listen(addr)) => match listen_here::<M>(net, addr) {
            Ok(()) => true,
            // The request then resolves as dropped: `listen` fails.
            Err(e) => {
                tracing::error!(worker, "cannot listen on {addr}: {e}");
                false
            }
        },
    };
    if done && env.is_request() {
        let _ = env.reply(());
    }
    None
}

/// Why the group could not be wired or could not listen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    #[error("worker {0} did not take its wiring: {1}")]
    Wire(usize, String),
    #[error("worker {0} could not listen (see its log line): {1}")]
    Listen(usize, String),
    #[error("{0}")]
    Pool(#[from] shared_nothing::Error),
}

/// Gives every worker a sink into every worker, and waits until all have
/// them (before the first connection can arrive).
///
/// # Errors
/// [`MeshError::Wire`] naming a worker that did not answer in time.
pub fn wire<W>(group: &mut WorkerGroup<W>) -> Result<(), MeshError>
where
    W: Worker<Reply = ()>,
    W::Message: MeshMsg,
{
    for i in 0..group.len() {
        let sinks = group.result_sinks(|m: W::Message| m);
        group
            .request(i, W::Message::wire(sinks))
            .map_err(|e| MeshError::Wire(i, e.to_string()))?
            .wait_timeout(STEP)
            .map_err(|e| MeshError::Wire(i, e.to_string()))?;
    }
    Ok(())
}

/// Listens on `addr` in `mode`; returns the bound address.
///
/// # Errors
/// The address cannot be bound, or a worker could not listen.
pub fn listen<W>(
    group: &mut WorkerGroup<W>,
    mode: NetworkMode,
    io: &IoWorkers,
    addr: SocketAddr,
) -> Result<SocketAddr, MeshError>
where
    W: Worker<Reply = ()>,
    W::Message: MeshMsg,
{
    match mode {
        NetworkMode::ThreadPerCore => {
            // Every worker listens on the one port: held until they do.
            let port = ReservedPort::new(addr)?;
            for i in 0..group.len() {
                group
                    .request(i, W::Message::listen(port.addr()))
                    .map_err(|e| MeshError::Listen(i, e.to_string()))?
                    .wait_timeout(STEP)
                    .map_err(|e| MeshError::Listen(i, e.to_string()))?;
            }
            Ok(port.addr())
        }
        _ => Ok(io.network(0).listen(
            addr,
            group.result_sinks(W::Message::net),
            Arc::new(RoundRobinPartitioner::new()),
        )?),
    }
}

/// Its own backend (`net`) listens on `addr`, events into this worker.
///
/// # Errors
/// No backend of its own (dedicated mode), or the listen failed.
fn listen_here<M: MeshMsg>(
    net: Option<&NetworkWorker>,
    addr: SocketAddr,
) -> shared_nothing::Result<()> {
    let Some(net) = net else {
        return Err(Error::msg("no network backend of its own (dedicated mode)"));
    };
    let me = ResultSink::to_current_worker(M::net)?;
    net.listen(addr, vec![me], Arc::new(RoundRobinPartitioner::new()))?;
    Ok(())
}

/// A worker's network in `mode`, called from its `init`: thread-per-core,
/// its own backend (named `{name}-net-{index}`, `SO_REUSEPORT`, so
/// [`listen`] can put every worker on one port) and one client of it;
/// dedicated, no backend and a client of each of the pool's network
/// workers. Socket events come to this worker as [`MeshMsg::net`].
///
/// # Errors
/// The backend cannot start, or this is not a worker thread.
pub fn network<M: MeshMsg>(
    mode: NetworkMode,
    io: &IoWorkers,
    index: usize,
    name: &str,
) -> shared_nothing::Result<(Option<NetworkWorker>, Vec<NetClient>)> {
    Ok(match mode {
        NetworkMode::ThreadPerCore => {
            let config = NetConfig::new()
                .reuse_port(true)
                .name(format!("{name}-net-{index}"));
            let net = NetworkWorker::start_local(index, config)?;
            let client = net.client(ResultSink::to_current_worker(M::net)?)?;
            (Some(net), vec![client])
        }
        _ => {
            let clients = (0..io.network_count())
                .map(|i| io.network(i).client(ResultSink::to_current_worker(M::net)?))
                .collect::<shared_nothing::Result<Vec<_>>>()?;
            (None, clients)
        }
    })
}

/// The calling thread becomes the group's clock: a tick to every worker
/// every `every`, until the process ends. A worker whose queue is full
/// already has work that wakes it, so its tick is skipped.
pub fn clock<W>(group: &WorkerGroup<W>, every: Duration) -> !
where
    W: Worker,
    W::Message: MeshMsg,
{
    let mut clock = group.sender();
    loop {
        std::thread::sleep(every);
        for i in 0..clock.len() {
            let _ = clock.try_send_to_worker(i, W::Message::tick());
        }
    }
}
