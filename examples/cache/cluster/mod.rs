//! Cluster mode (`-s HOST:PORT`, repeatable): nodes on their own ports
//! that find each other, detect failures, and place every key on
//! `--replication` of them.
//!
//! - **Membership** (`member.rs`): SWIM through `foca`, a sans-I/O
//!   crate driven by one thread ("cache-gossip") over a UDP socket on
//!   the cluster port: packets in, timers due, packets out. Seeds are
//!   announced to at start and again until one answers. Each node's
//!   capacity and usage travel as foca's custom broadcasts.
//! - **Placement** (`ring.rs`): consistent hashing with virtual nodes
//!   over the known nodes; a key's owners are its first `replication`
//!   live nodes.
//! - **Forwarding** (`link.rs`, `peer.rs`): the internal protocol
//!   (`wire.rs`) over TCP on the same port number. A worker never
//!   touches a socket of it: it hands a [`Fwd`] to the peer's link
//!   through an unbounded channel (a send never blocks), and the answer
//!   comes back into its loop as an ordinary [`Msg::Answer`]. On the
//!   receiving node a connection's threads turn each request into a
//!   [`Msg::Peer`] to the key's owner worker, whose answer comes back
//!   on the connection's channel.
//! - **Views**: the gossip thread sends every worker an immutable
//!   [`View`] (the ring, the links, the nodes' reports) whenever
//!   membership changes and once a second; workers route by the latest
//!   one they got and never wait for one.
//! - **Rejoin** (`sync.rs`): when a node comes up, each live node pushes
//!   it the keys it now owns, for which the pusher is the first other
//!   owner (re-replication from the survivors, put-if-absent so a newer
//!   write is never overwritten).
//! - **Metrics**: each of these threads counts its own traffic in its
//!   own counters ([`crate::metrics::ClusterMeters`]): a link, a
//!   connection served and the sync their frames each way, the gossip
//!   thread its packets and the node counts.

pub mod link;
pub mod member;
pub mod peer;
pub mod ring;
pub mod sync;
pub mod wire;

use crate::metrics::ClusterMeters;
use crate::serve::{Msg, Op, Origin};
use ring::Ring;
use shared_nothing::channel::mpsc;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// How long after a node is started its gossip waits for a seed before
/// announcing again.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(500);

/// Work for another node: `op` on the owner of `route` there, answered
/// to `origin`.
#[derive(Debug)]
pub struct Fwd {
    pub origin: Origin,
    pub route: Vec<u8>,
    pub op: Op,
}

/// A forwarded message's index in [`crate::metrics::RouteMeters::OPS`]
/// when it starts a request there: GET, HEAD, DELETE, and a body's last
/// chunk (a PUT); `None` within a request (a GET's next piece, a body's
/// earlier chunks, an abort).
pub fn request_kind(op: &Op) -> Option<usize> {
    match op {
        Op::Get { .. } => Some(0),
        Op::Head { .. } => Some(1),
        Op::Delete { .. } => Some(2),
        Op::Body { end: Some(_), .. } => Some(3),
        _ => None,
    }
}

/// A node's figures, as it gossips them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_capacity: u64,
    pub memory_used: u64,
    pub disk_capacity: u64,
    pub disk_used: u64,
    pub entries: u64,
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.memory_capacity += o.memory_capacity;
        self.memory_used += o.memory_used;
        self.disk_capacity += o.disk_capacity;
        self.disk_used += o.disk_used;
        self.entries += o.entries;
    }
}

/// One node as this node sees it.
#[derive(Clone, Debug)]
pub struct NodeReport {
    /// Its cluster address (UDP gossip and TCP forwarding).
    pub addr: SocketAddr,
    /// Its HTTP address, once it has gossiped it.
    pub http: Option<SocketAddr>,
    pub live: bool,
    /// The last figures it gossiped (or, for this node, its own).
    pub usage: Usage,
    /// For a node that is down: how long ago it was declared down.
    pub down_for: Option<Duration>,
}

/// What every worker knows of the cluster; replaced whole, never
/// changed.
#[derive(Debug)]
pub struct View {
    /// This node's cluster address.
    pub me: SocketAddr,
    pub ring: Ring,
    /// The way to each other node.
    pub links: HashMap<SocketAddr, mpsc::Sender<Fwd>>,
    /// Every known node, this one included, by address.
    pub nodes: Vec<NodeReport>,
    /// Where workers report their usage (worker index, figures).
    pub usage: mpsc::Sender<(usize, Usage)>,
    /// Times a failure took to detect, from the last packet heard from
    /// the node to its declaration as down (milliseconds), newest last.
    pub detections_ms: Vec<u64>,
}

impl View {
    /// The `/cluster` body: ElCache's fields, plus each node.
    pub fn json(&self) -> serde_json::Value {
        let mut total = Usage::default();
        for n in self.nodes.iter().filter(|n| n.live) {
            total.add(&n.usage);
        }
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "address": n.addr.to_string(),
                    "http_address": n.http.map(|a| a.to_string()),
                    "state": if n.live { "alive" } else { "down" },
                    "is_self": n.addr == self.me,
                    "memory_capacity": n.usage.memory_capacity,
                    "memory_used": n.usage.memory_used,
                    "disk_capacity": n.usage.disk_capacity,
                    "disk_used": n.usage.disk_used,
                    "entries": n.usage.entries,
                    "down_for_ms": n.down_for.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                })
            })
            .collect();
        serde_json::json!({
            "mode": "cluster",
            "node": self.me.to_string(),
            "total_nodes": self.nodes.len(),
            "active_nodes": self.nodes.iter().filter(|n| n.live).count(),
            "total_memory_capacity": total.memory_capacity,
            "total_disk_capacity": total.disk_capacity,
            "total_memory_used": total.memory_used,
            "total_disk_used": total.disk_used,
            "replication_factor": self.ring.replication(),
            "failure_detection_ms": self.detections_ms,
            "nodes": nodes,
        })
    }
}

/// What cluster mode needs from the command line.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Address to bind the cluster port to (the HTTP `--bind`).
    pub bind: String,
    /// 0: any free port (printed on the start-up line).
    pub port: u16,
    pub seeds: Vec<String>,
    pub replication: usize,
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("cluster port {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cluster: cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("cluster: {0}")]
    Pool(#[from] shared_nothing::Error),
}

/// Starts cluster mode for a node whose workers `sender` reaches
/// (`workers` of them) and whose HTTP front is on `http`: binds the
/// cluster port (UDP and TCP on one port number), serves the internal
/// protocol, and starts the gossip, counting into `meters`. Returns the
/// bound cluster address.
///
/// # Errors
/// See [`ClusterError`].
pub fn start(
    cfg: &ClusterConfig,
    sender: shared_nothing::pool::PoolSender<Msg>,
    workers: usize,
    http: SocketAddr,
    meters: &ClusterMeters,
) -> Result<SocketAddr, ClusterError> {
    let (tcp, udp) = member::bind(&cfg.bind, cfg.port)?;
    let me = tcp.local_addr().map_err(|source| ClusterError::Bind {
        addr: format!("{}:{}", cfg.bind, cfg.port),
        source,
    })?;
    peer::start(tcp, sender.clone(), workers, meters.clone())?;
    member::start(me, udp, cfg, sender, workers, http, meters)?;
    Ok(me)
}
