//! Membership and failure detection: `foca` (SWIM with suspicion and
//! infection-style dissemination), driven by one plain thread.
//!
//! foca is sans-I/O: it is handed packets and due timers, and answers
//! with packets to send, timers to schedule and notifications. The
//! "cache-gossip" thread owns the UDP socket on the cluster port, the
//! `Foca` value and a heap of timers; it waits on the socket at most
//! until the next timer (and [`TICK`]), and does nothing else that
//! blocks. After anything changes it rebuilds the [`View`] and sends it
//! to every worker (a plain thread may wait on a full worker queue;
//! workers never wait on it).
//!
//! A node's identity is its cluster address plus the time it started
//! (`bump`), so a node restarted on the same address (after `kill -9`)
//! is a new identity that wins the address over the old, down one:
//! the others see it come up without forgetting anything first.
//!
//! Failure detection is bounded by foca's configuration ([`config`]):
//! a probe every 300 ms, an answer expected within 150 ms, then
//! indirect probes, then suspicion for `suspect_to_down_after` before
//! the node is declared down. The time from the last packet heard from
//! a node to its declaration is measured and kept in the view
//! (`/cluster`'s `failure_detection_ms`) and printed.

use super::link;
use super::ring::Ring;
use super::{ClusterConfig, ClusterError, NodeReport, Usage, View};
use crate::metrics::{ClusterMeters, GossipMeters, LinkKind};
use crate::serve::Msg;
use foca::{BroadcastHandler, Config, Foca, Invalidates, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use shared_nothing::channel::{Channel, mpsc};
use shared_nothing::pool::PoolSender;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest wait on the socket: how often views and usage are refreshed
/// at the least.
const TICK: Duration = Duration::from_millis(50);
/// How often this node gossips its usage.
const USAGE_EVERY: Duration = Duration::from_secs(1);

/// A member: its cluster address and when it started.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeId {
    pub addr: SocketAddr,
    pub bump: u64,
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.addr, self.bump)
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            addr: self.addr,
            bump: self.bump.wrapping_add(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// foca's settings: its LAN profile, made faster (a loopback cluster
/// answers in microseconds), announcing to down members often so a
/// restarted node is found again quickly.
pub fn config(expected: u32) -> Config {
    let mut c = Config::new_lan(NonZeroU32::new(expected.max(2)).unwrap_or(NonZeroU32::MIN));
    c.probe_period = Duration::from_millis(300);
    c.probe_rtt = Duration::from_millis(150);
    c.suspect_to_down_after = Duration::from_millis(900);
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(2),
        num_members: std::num::NonZeroUsize::MIN,
    });
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(1),
        num_members: std::num::NonZeroUsize::MIN.saturating_add(1),
    });
    c
}

/// A usage broadcast's key: newer versions of one node's replace older.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoKey {
    addr: SocketAddr,
    version: u64,
}

impl Invalidates for InfoKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.addr == other.addr && self.version >= other.version
    }
}

/// What a node gossips about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    pub addr: SocketAddr,
    pub version: u64,
    pub http: SocketAddr,
    pub usage: Usage,
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_le_bytes());
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], BadInfo> {
    if b.len() < n {
        return Err(BadInfo);
    }
    let (a, rest) = b.split_at(n);
    *b = rest;
    Ok(a)
}

fn get_u64(b: &mut &[u8]) -> Result<u64, BadInfo> {
    let mut a = [0; 8];
    a.copy_from_slice(take(b, 8)?);
    Ok(u64::from_le_bytes(a))
}

fn get_addr(b: &mut &[u8]) -> Result<SocketAddr, BadInfo> {
    let ip = match take(b, 1)?[0] {
        4 => {
            let mut o = [0; 4];
            o.copy_from_slice(take(b, 4)?);
            IpAddr::from(o)
        }
        6 => {
            let mut o = [0; 16];
            o.copy_from_slice(take(b, 16)?);
            IpAddr::from(o)
        }
        _ => return Err(BadInfo),
    };
    let mut p = [0; 2];
    p.copy_from_slice(take(b, 2)?);
    Ok(SocketAddr::new(ip, u16::from_le_bytes(p)))
}

impl Info {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        put_addr(&mut out, self.addr);
        out.extend_from_slice(&self.version.to_le_bytes());
        put_addr(&mut out, self.http);
        let u = &self.usage;
        for v in [
            u.memory_capacity,
            u.memory_used,
            u.disk_capacity,
            u.disk_used,
            u.entries,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// # Errors
    /// [`BadInfo`] for bytes that are not exactly one [`Info`].
    pub fn decode(mut b: &[u8]) -> Result<Info, BadInfo> {
        let addr = get_addr(&mut b)?;
        let version = get_u64(&mut b)?;
        let http = get_addr(&mut b)?;
        let usage = Usage {
            memory_capacity: get_u64(&mut b)?,
            memory_used: get_u64(&mut b)?,
            disk_capacity: get_u64(&mut b)?,
            disk_used: get_u64(&mut b)?,
            entries: get_u64(&mut b)?,
        };
        if !b.is_empty() {
            return Err(BadInfo);
        }
        Ok(Info {
            addr,
            version,
            http,
            usage,
        })
    }
}

/// A usage broadcast that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed node usage broadcast")]
pub struct BadInfo;

/// Keeps the newest [`Info`] of each node, in a map the gossip thread
/// shares with it (foca owns its handler and offers no way back to it;
/// both live on that one thread).
#[derive(Debug, Default)]
pub struct Infos(Rc<RefCell<HashMap<SocketAddr, Info>>>);

impl BroadcastHandler<NodeId> for Infos {
    type Key = InfoKey;
    type Error = BadInfo;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeId>,
    ) -> Result<Option<InfoKey>, BadInfo> {
        let info = Info::decode(data)?;
        let mut map = self.0.borrow_mut();
        let newer = map
            .get(&info.addr)
            .is_none_or(|old| info.version > old.version);
        if !newer {
            return Ok(None);
        }
        map.insert(info.addr, info);
        Ok(Some(InfoKey {
            addr: info.addr,
            version: info.version,
        }))
    }
}

fn bind_err(addr: &str, source: std::io::Error) -> ClusterError {
    ClusterError::Bind {
        addr: addr.to_owned(),
        source,
    }
}

/// Binds the cluster port: TCP (forwarding) and UDP (gossip) on one
/// port number. With port 0, TCP takes any free port and UDP the same
/// number, retried on a clash.
///
/// # Errors
/// [`ClusterError::Bind`].
pub fn bind(host: &str, port: u16) -> Result<(TcpListener, UdpSocket), ClusterError> {
    let text = format!("{host}:{port}");
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| bind_err(&text, e))?
        .next()
        .ok_or_else(|| bind_err(&text, std::io::ErrorKind::AddrNotAvailable.into()))?;
    let mut last = None;
    for _ in 0..if port == 0 { 32 } else { 1 } {
        let tcp = TcpListener::bind(addr).map_err(|e| bind_err(&text, e))?;
        let bound = tcp.local_addr().map_err(|e| bind_err(&text, e))?;
        match UdpSocket::bind(bound) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) => last = Some(e),
        }
    }
    Err(bind_err(
        &text,
        last.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()),
    ))
}

/// The gossip thread's state.
struct Gossip {
    me: NodeId,
    http: SocketAddr,
    foca: Foca<NodeId, PostcardCodec, SmallRng, Infos>,
    infos: Rc<RefCell<HashMap<SocketAddr, Info>>>,
    runtime: foca::AccumulatingRuntime<NodeId>,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerSlot)>>,
    timer_seq: u64,
    socket: UdpSocket,
    seeds: Vec<SocketAddr>,
    /// Every node known since start (this one too): live or not.
    known: HashMap<SocketAddr, Known>,
    links: HashMap<SocketAddr, mpsc::Sender<super::Fwd>>,
    sender: PoolSender<Msg>,
    workers: usize,
    replication: usize,
    usage_tx: mpsc::Sender<(usize, Usage)>,
    usage_rx: mpsc::Receiver<(usize, Usage)>,
    usage: Vec<Usage>,
    detections_ms: Vec<u64>,
    /// Nodes that came up and need this node's sync (`sync.rs`).
    sync: mpsc::Sender<(SocketAddr, Arc<View>)>,
    /// Where the links count their frames; this thread's own series.
    meters: ClusterMeters,
    gossip: GossipMeters,
}

/// A known node.
#[derive(Clone, Copy, Debug)]
struct Known {
    live: bool,
    /// The last packet from it.
    heard: Instant,
    down_at: Option<Instant>,
}

/// A timer in the heap (foca's `Timer` is `Ord` only by its own rules;
/// the heap orders by due time and insertion).
#[derive(Debug)]
struct TimerSlot(Timer<NodeId>);

impl PartialEq for TimerSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts the gossip thread for node `me` on `socket`, counting into
/// `meters`.
///
/// # Errors
/// The thread cannot start.
pub fn start(
    me: SocketAddr,
    socket: UdpSocket,
    cfg: &ClusterConfig,
    sender: PoolSender<Msg>,
    workers: usize,
    http: SocketAddr,
    meters: &ClusterMeters,
) -> Result<(), ClusterError> {
    let seeds: Vec<SocketAddr> = cfg
        .seeds
        .iter()
        .filter_map(|s| match s.to_socket_addrs() {
            Ok(mut a) => a.next(),
            Err(e) => {
                tracing::warn!("seed {s}: {e}; ignored");
                None
            }
        })
        .filter(|a| *a != me)
        .collect();
    let id = NodeId {
        addr: me,
        bump: unix_ms(),
    };
    let (usage_tx, usage_rx) = Channel::mpsc_unbounded();
    let sync = super::sync::start(sender.clone(), workers, me, meters.clone())?;
    let replication = cfg.replication;
    let meters = meters.clone();
    std::thread::Builder::new()
        .name("cache-gossip".into())
        .spawn(move || {
            let rng = SmallRng::seed_from_u64(id.bump ^ u64::from(me.port()));
            let infos = Rc::new(RefCell::new(HashMap::new()));
            let foca = Foca::with_custom_broadcast(
                id.clone(),
                config(3),
                rng,
                PostcardCodec,
                Infos(infos.clone()),
            );
            let mut known = HashMap::new();
            known.insert(
                me,
                Known {
                    live: true,
                    heard: Instant::now(),
                    down_at: None,
                },
            );
            let mut g = Gossip {
                me: id,
                http,
                foca,
                infos,
                runtime: foca::AccumulatingRuntime::new(),
                timers: BinaryHeap::new(),
                timer_seq: 0,
                socket,
                seeds,
                known,
                links: HashMap::new(),
                sender,
                workers,
                replication,
                usage_tx,
                usage_rx,
                usage: vec![Usage::default(); workers],
                detections_ms: Vec::new(),
                sync,
                gossip: meters.gossip(),
                meters,
            };
            g.run();
        })
        .map_err(ClusterError::Thread)?;
    Ok(())
}

impl Gossip {
    fn run(&mut self) {
        if let Err(e) = self.socket.set_read_timeout(Some(TICK)) {
            tracing::warn!("gossip socket: {e}");
        }
        let mut buf = vec![0u8; 65536];
        let mut last_announce: Option<Instant> = None;
        let mut last_usage = Instant::now() - USAGE_EVERY;
        self.publish();
        loop {
            let now = Instant::now();
            // Announce to the seeds until some member is known.
            if self.foca.num_members() == 0
                && !self.seeds.is_empty()
                && last_announce.is_none_or(|t| now - t >= super::ANNOUNCE_EVERY)
            {
                last_announce = Some(now);
                for s in self.seeds.clone() {
                    let dst = NodeId { addr: s, bump: 0 };
                    if let Err(e) = self.foca.announce(dst, &mut self.runtime) {
                        tracing::debug!("announce to {s}: {e}");
                    }
                }
                self.drain();
            }
            // Due timers.
            while let Some(Reverse((due, _, _))) = self.timers.peek() {
                if *due > now {
                    break;
                }
                let Some(Reverse((_, _, TimerSlot(t)))) = self.timers.pop() else {
                    break;
                };
                if let Err(e) = self.foca.handle_timer(t, &mut self.runtime) {
                    tracing::debug!("gossip timer: {e}");
                }
                self.drain();
            }
            // Usage reports from the workers, and ours to the others.
            while let Ok((w, u)) = self.usage_rx.try_recv() {
                if let Some(slot) = self.usage.get_mut(w) {
                    *slot = u;
                }
            }
            if now - last_usage >= USAGE_EVERY {
                last_usage = now;
                let info = Info {
                    addr: self.me.addr,
                    version: unix_ms(),
                    http: self.http,
                    usage: self.own_usage(),
                };
                if let Err(e) = self.foca.add_broadcast(&info.encode()) {
                    tracing::debug!("usage broadcast: {e}");
                }
                self.publish();
            }
            // Packets, until the next timer or the tick.
            let wait = self
                .timers
                .peek()
                .map_or(TICK, |Reverse((due, _, _))| {
                    due.saturating_duration_since(Instant::now())
                })
                .clamp(Duration::from_millis(1), TICK);
            let _ = self.socket.set_read_timeout(Some(wait));
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    self.gossip.received.inc();
                    if let Some(k) = self.known.get_mut(&from) {
                        k.heard = Instant::now();
                    }
                    if let Err(e) = self.foca.handle_data(&buf[..n], &mut self.runtime) {
                        tracing::debug!("gossip packet from {from}: {e}");
                    }
                    self.drain();
                }
                Err(e) if super::wire::is_timeout(&e) => {}
                Err(e) => {
                    tracing::debug!("gossip socket: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn own_usage(&self) -> Usage {
        let mut total = Usage::default();
        for u in &self.usage {
            total.add(u);
        }
        total
    }

    /// Carries out what foca asked for: packets, timers, and membership
    /// changes (then a new view).
    fn drain(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            match self.socket.send_to(&data, to.addr) {
                Ok(_) => {
                    self.gossip.sent.inc();
                }
                Err(e) => tracing::debug!("gossip send to {}: {e}", to.addr),
            }
        }
        let now = Instant::now();
        while let Some((after, t)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers
                .push(Reverse((now + after, self.timer_seq, TimerSlot(t))));
        }
        let mut changed = false;
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => {
                    changed = true;
                    self.up(id.addr);
                }
                OwnedNotification::Rename(_, id) => {
                    changed = true;
                    self.up(id.addr);
                }
                OwnedNotification::MemberDown(id) => {
                    // A renamed member's old identity going down does
                    // not take its address down.
                    if self.foca.iter_members().any(|m| m.id().addr == id.addr) {
                        continue;
                    }
                    changed = true;
                    self.down(id.addr);
                }
                OwnedNotification::Idle => {
                    tracing::info!("cluster: no other member reachable");
                }
                _ => {}
            }
        }
        if changed {
            self.publish();
        }
    }

    fn up(&mut self, addr: SocketAddr) {
        let was = self.known.get(&addr).map(|k| k.live);
        self.known.insert(
            addr,
            Known {
                live: true,
                heard: Instant::now(),
                down_at: None,
            },
        );
        if was != Some(true) {
            println!("cache: cluster node {addr} up");
            if !self.links.contains_key(&addr) {
                let m = self.meters.link(LinkKind::Forward, &addr.to_string());
                match link::start(addr, self.sender.clone(), m) {
                    Ok(tx) => {
                        self.links.insert(addr, tx);
                    }
                    Err(e) => tracing::error!("cluster link to {addr}: {e}"),
                }
            }
            let view = self.view();
            let _ = self.sync.try_send((addr, view));
        }
    }

    fn down(&mut self, addr: SocketAddr) {
        let now = Instant::now();
        if let Some(k) = self.known.get_mut(&addr)
            && k.live
        {
            k.live = false;
            k.down_at = Some(now);
            let ms = u64::try_from((now - k.heard).as_millis()).unwrap_or(u64::MAX);
            self.detections_ms.push(ms);
            if self.detections_ms.len() > 16 {
                self.detections_ms.remove(0);
            }
            println!("cache: cluster node {addr} down (detected {ms} ms after its last packet)");
        }
    }

    fn view(&self) -> Arc<View> {
        let nodes: Vec<(SocketAddr, bool)> = self.known.iter().map(|(a, k)| (*a, k.live)).collect();
        let infos = self.infos.borrow();
        let mut reports: Vec<NodeReport> = self
            .known
            .iter()
            .map(|(a, k)| {
                let info = infos.get(a);
                NodeReport {
                    addr: *a,
                    http: if *a == self.me.addr {
                        Some(self.http)
                    } else {
                        info.map(|i| i.http)
                    },
                    live: k.live,
                    usage: if *a == self.me.addr {
                        self.own_usage()
                    } else {
                        info.map(|i| i.usage).unwrap_or_default()
                    },
                    down_for: k.down_at.map(|t| t.elapsed()),
                }
            })
            .collect();
        reports.sort_by_key(|r| r.addr);
        Arc::new(View {
            me: self.me.addr,
            ring: Ring::new(&nodes, self.replication),
            links: self.links.clone(),
            nodes: reports,
            usage: self.usage_tx.clone(),
            detections_ms: self.detections_ms.clone(),
        })
    }

    /// Sends the current view to every worker, and sets the node gauges
    /// from it.
    fn publish(&mut self) {
        let view = self.view();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let live = view.nodes.iter().filter(|n| n.live).count();
        self.gossip.nodes_total.set(count(view.nodes.len()));
        self.gossip.nodes_active.set(count(live));
        for w in 0..self.workers {
            let _ = self.sender.send_to_worker(w, Msg::View(view.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_broadcasts_round_trip_and_garbage_is_refused() {
        let info = Info {
            addr: "127.0.0.1:7890".parse().unwrap(),
            version: 42,
            http: "[::1]:8080".parse().unwrap(),
            usage: Usage {
                memory_capacity: 1 << 30,
                memory_used: 5,
                disk_capacity: 7,
                disk_used: 3,
                entries: 2,
            },
        };
        let bytes = info.encode();
        assert_eq!(Info::decode(&bytes).unwrap(), info);
        for n in 0..bytes.len() {
            assert!(Info::decode(&bytes[..n]).is_err(), "cut at {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Info::decode(&long).is_err());
        let mut bad = bytes.clone();
        bad[0] = 5;
        assert!(Info::decode(&bad).is_err());
        // The handler keeps only newer versions of a node.
        let mut h = Infos::default();
        assert!(h.receive_item(&bytes, None).unwrap().is_some());
        assert!(
            h.receive_item(&bytes, None).unwrap().is_none(),
            "same version"
        );
        let newer = Info {
            version: 43,
            ..info
        };
        assert!(h.receive_item(&newer.encode(), None).unwrap().is_some());
        assert_eq!(h.0.borrow()[&info.addr].version, 43);
    }

    #[test]
    fn a_restarted_node_wins_its_address() {
        use foca::Identity;
        let old = NodeId {
            addr: "127.0.0.1:1".parse().unwrap(),
            bump: 10,
        };
        let new = NodeId {
            bump: 11,
            ..old.clone()
        };
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        assert_eq!(old.renew().map(|r| r.bump), Some(11));
    }
}
