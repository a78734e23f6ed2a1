//! Sends to destinations: a pool of connections per destination (plain
//! TCP or TLS, `wire.rs`) on the crate's network I/O worker, frames of
//! the delivery protocol (`delivery.rs`) pipelined on each, and retries
//! with exponential backoff and jitter within a bound of attempts and
//! time. Owned by the engine, which feeds it the network worker's events
//! and its tick, and takes back each send's outcome.
//!
//! Each engine has its own `Sender` (its own connections to each
//! destination), on the network worker `engine % count`.
//!
//! **Invariant (S1):** a send completes OK only when its destination's
//! acknowledgement for its operation id arrives on the connection that
//! carried it, in order. A connection that fails, closes, breaks the
//! protocol or stalls past the time bound gives every send it carried
//! back to the front of its destination's queue, in order, one attempt
//! more; a send fails (with the last cause) only once it has used the
//! attempts or the time the policy allows. So nothing accepted is dropped
//! silently, and a destination that stays down fails its sends after a
//! bound instead of piling them up.

mod wire;

use crate::delivery;
use crate::dest::Dest;
use crate::layout::status;
use shared_nothing::io::{ConnId, NetClient, NetEvent, NetEventKind};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use wire::Wire;

/// Frames one connection carries unacknowledged at most.
const WINDOW: usize = 64;
/// Payload bytes one connection carries unacknowledged at most (a frame
/// larger than this still goes alone).
const WINDOW_BYTES: usize = 4 << 20;
/// The first retry's delay, doubled per consecutive failure up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// How hard the daemon tries.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Attempts per send (connections that could have carried it).
    pub attempts: u32,
    /// From acceptance to giving up.
    pub timeout: Duration,
    /// Connections per destination.
    pub pool: usize,
}

/// Why an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A system error (connect refused, reset), as a negative errno.
    Errno(i32),
    Tls,
    Closed,
    Protocol,
    Timeout,
}

impl Cause {
    fn status(self) -> i32 {
        match self {
            Cause::Errno(e) => e,
            Cause::Tls => status::TLS_FAILED,
            Cause::Closed => status::DEST_CLOSED,
            Cause::Protocol => status::DEST_PROTOCOL,
            Cause::Timeout => status::SEND_TIMEOUT,
        }
    }
}

/// A send that finished: `status` OK or the cause, after `attempts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub lsn: u64,
    pub status: i32,
    pub attempts: u32,
}

#[derive(Debug)]
struct Op {
    lsn: u64,
    /// The operation id its frame carries (`delivery::op_id`).
    id: u64,
    data: Vec<u8>,
    attempts: u32,
    since: Instant,
    cause: Option<Cause>,
}

#[derive(Debug)]
struct Pool {
    dest: Dest,
    queue: VecDeque<Op>,
    links: usize,
    connecting: usize,
    /// Consecutive failures (reset by an acknowledgement).
    failures: u32,
    retry_at: Instant,
}

#[derive(Debug)]
struct Link {
    pool: usize,
    wire: Wire,
    inflight: VecDeque<Op>,
    bytes: usize,
    acks: delivery::Acks,
    last_ack: Instant,
}

impl Link {
    fn has_room(&self) -> bool {
        self.wire.ready()
            && (self.inflight.is_empty()
                || (self.inflight.len() < WINDOW && self.bytes < WINDOW_BYTES))
    }
}

#[derive(Debug)]
pub struct Sender {
    net: NetClient,
    policy: Policy,
    pools: Vec<Pool>,
    links: HashMap<ConnId, Link>,
    connecting: HashMap<u64, usize>,
    next_token: u64,
    outcomes: Vec<Outcome>,
    rng: u64,
}

impl Sender {
    pub fn new(net: NetClient, dests: Vec<Dest>, policy: Policy) -> Sender {
        let now = Instant::now();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Sender {
            net,
            policy,
            pools: dests
                .into_iter()
                .map(|dest| Pool {
                    dest,
                    queue: VecDeque::new(),
                    links: 0,
                    connecting: 0,
                    failures: 0,
                    retry_at: now,
                })
                .collect(),
            links: HashMap::new(),
            connecting: HashMap::new(),
            next_token: 0,
            outcomes: Vec::new(),
            rng: seed | 1,
        }
    }

    /// The handle of the destination called `name` (index + 1).
    pub fn find(&self, name: &[u8]) -> Option<u64> {
        self.pools
            .iter()
            .position(|p| p.dest.name.as_bytes() == name)
            .map(|i| i as u64 + 1)
    }

    /// The name of the destination `handle` names.
    pub fn name(&self, handle: u64) -> Option<&str> {
        let i = usize::try_from(handle.checked_sub(1)?).ok()?;
        self.pools.get(i).map(|p| p.dest.name.as_str())
    }

    /// Puts every destination's queued sends on connections with room (a
    /// batch of `enqueue`s goes out in one buffer per connection).
    pub fn flush(&mut self) {
        for i in 0..self.pools.len() {
            if !self.pools[i].queue.is_empty() {
                self.pump(i);
            }
        }
    }

    /// Queues accepted send `lsn` (its time bound starts now) for the
    /// next `flush`; its frames carry operation id `id`.
    pub fn enqueue(&mut self, handle: u64, lsn: u64, id: u64, data: Vec<u8>) {
        let Some(i) = handle
            .checked_sub(1)
            .and_then(|h| usize::try_from(h).ok())
            .filter(|&i| i < self.pools.len())
        else {
            self.outcomes.push(Outcome {
                lsn,
                status: status::NO_DEST,
                attempts: 0,
            });
            return;
        };
        self.pools[i].queue.push_back(Op {
            lsn,
            id,
            data,
            attempts: 0,
            since: Instant::now(),
            cause: None,
        });
    }

    /// Sends that finished since the last call.
    pub fn take_outcomes(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes)
    }

    fn backoff(&mut self, failures: u32) -> Duration {
        let d = BASE_BACKOFF
            .saturating_mul(1 << failures.saturating_sub(1).min(10))
            .min(MAX_BACKOFF);
        // splitmix64: jitter only, nothing secret.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Equal jitter: half the delay fixed, half random.
        let half = d / 2;
        half + Duration::from_nanos(z % (half.as_nanos() as u64).max(1))
    }

    /// Puts queued sends on connections with room, and opens a connection
    /// when none has room and the pool and the backoff allow.
    fn pump(&mut self, i: usize) {
        while !self.pools[i].queue.is_empty() {
            let best = self
                .links
                .iter()
                .filter(|(_, l)| l.pool == i && l.has_room())
                .min_by_key(|(_, l)| l.inflight.len())
                .map(|(c, _)| *c);
            let Some(conn) = best else { break };
            // Fill this connection's window in one buffer: one seal and
            // one send for the batch.
            let link = self.links.get_mut(&conn).expect("just found");
            let mut frames = Vec::new();
            while link.has_room() {
                let Some(op) = self.pools[i].queue.pop_front() else {
                    break;
                };
                delivery::encode(&mut frames, op.id, &op.data);
                link.bytes += op.data.len();
                if link.inflight.is_empty() {
                    link.last_ack = Instant::now();
                }
                link.inflight.push_back(op);
            }
            let bytes = link.wire.seal(frames);
            if self.net.send(conn, bytes).is_err() {
                self.fail_link(conn, Cause::Errno(-libc::ENOBUFS));
                return;
            }
        }
        let p = &self.pools[i];
        if !p.queue.is_empty()
            && p.links + p.connecting < self.policy.pool.max(1)
            && Instant::now() >= p.retry_at
            && !self.links.values().any(|l| l.pool == i && !l.wire.ready())
        {
            self.next_token += 1;
            let token = self.next_token;
            if self.net.connect(p.dest.addr, token).is_ok() {
                self.connecting.insert(token, i);
                self.pools[i].connecting += 1;
            }
        }
    }

    /// A network event for one of this sender's connections.
    pub fn event(&mut self, ev: NetEvent) {
        let conn = ev.conn;
        match ev.kind {
            NetEventKind::Connected { token } => self.connected(conn, token),
            NetEventKind::ConnectFailed { token, error } => {
                let Some(i) = self.connecting.remove(&token) else {
                    return;
                };
                self.pools[i].connecting -= 1;
                tracing::debug!(dest = %self.pools[i].dest.name, %error, "connect failed");
                let errno = -error.errno().unwrap_or(libc::EIO);
                self.pool_failed(i, Cause::Errno(errno));
            }
            NetEventKind::Data(bytes) => self.data(conn, &bytes),
            NetEventKind::PeerClosed => self.fail_link(conn, Cause::Closed),
            NetEventKind::Error(e) => {
                self.fail_link(conn, Cause::Errno(-e.errno().unwrap_or(libc::EIO)))
            }
            NetEventKind::Closed => self.fail_link(conn, Cause::Closed),
            NetEventKind::SendRefused { .. } => self.fail_link(conn, Cause::Errno(-libc::ENOBUFS)),
            _ => {}
        }
    }

    fn connected(&mut self, conn: ConnId, token: u64) {
        let Some(i) = self.connecting.remove(&token) else {
            let _ = self.net.close(conn);
            return;
        };
        let p = &mut self.pools[i];
        p.connecting -= 1;
        let wire = match &p.dest.tls {
            None => Wire::Plain,
            Some((cfg, name)) => match rustls::ClientConnection::new(cfg.clone(), name.clone()) {
                Ok(mut c) => {
                    c.set_buffer_limit(None);
                    Wire::Tls(Box::new(c))
                }
                Err(e) => {
                    tracing::warn!(dest = %p.dest.name, error = %e, "TLS session not created");
                    let _ = self.net.close(conn);
                    self.pool_failed(i, Cause::Tls);
                    return;
                }
            },
        };
        p.links += 1;
        let mut link = Link {
            pool: i,
            wire,
            inflight: VecDeque::new(),
            bytes: 0,
            acks: delivery::Acks::default(),
            last_ack: Instant::now(),
        };
        let hello = link.wire.outgoing();
        self.links.insert(conn, link);
        if !hello.is_empty() && self.net.send(conn, hello).is_err() {
            self.fail_link(conn, Cause::Errno(-libc::ENOBUFS));
            return;
        }
        self.pump(i);
    }

    fn data(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        let i = link.pool;
        let was_ready = link.wire.ready();
        let mut plain = Vec::new();
        if let Err(e) = link.wire.incoming(bytes, &mut plain) {
            tracing::warn!(dest = %self.pools[i].dest.name, error = %e, "TLS failed");
            // The alert rustls queued, then the close.
            let alert = link.wire.outgoing();
            if !alert.is_empty() {
                let _ = self.net.send(conn, alert);
            }
            self.fail_link(conn, Cause::Tls);
            return;
        }
        let out = link.wire.outgoing();
        if !out.is_empty() && self.net.send(conn, out).is_err() {
            self.fail_link(conn, Cause::Errno(-libc::ENOBUFS));
            return;
        }
        let link = self.links.get_mut(&conn).expect("still there");
        let mut acked = Vec::new();
        link.acks.feed(&plain, &mut acked);
        for id in acked {
            match link.inflight.front() {
                Some(op) if op.id == id => {
                    let op = link.inflight.pop_front().expect("front");
                    link.bytes -= op.data.len();
                    link.last_ack = Instant::now();
                    self.outcomes.push(Outcome {
                        lsn: op.lsn,
                        status: status::OK,
                        attempts: op.attempts + 1,
                    });
                }
                _ => {
                    tracing::warn!(dest = %self.pools[i].dest.name, ack = id, "unexpected acknowledgement");
                    self.fail_link(conn, Cause::Protocol);
                    return;
                }
            }
        }
        if self.outcomes.last().is_some_and(|o| o.status == status::OK) {
            self.pools[i].failures = 0;
        }
        if !was_ready || self.links.get(&conn).is_some_and(Link::has_room) {
            self.pump(i);
        }
    }

    /// Drops a connection; what it carried goes back to the front of its
    /// destination's queue, one attempt more (S1).
    fn fail_link(&mut self, conn: ConnId, cause: Cause) {
        let Some(link) = self.links.remove(&conn) else {
            return;
        };
        let _ = self.net.close(conn);
        let i = link.pool;
        let p = &mut self.pools[i];
        p.links -= 1;
        let handshake_failed = !link.wire.ready();
        let failed = !link.inflight.is_empty() || handshake_failed;
        for mut op in link.inflight.into_iter().rev() {
            op.attempts += 1;
            op.cause = Some(cause);
            p.queue.push_front(op);
        }
        if failed {
            tracing::debug!(dest = %p.dest.name, ?cause, "connection failed");
            self.back_off(i);
            if handshake_failed {
                // The waiting sends were to go on it: as a failed connect.
                self.charge_queue(i, cause);
            }
        }
        self.expire(i);
        self.pump(i);
    }

    /// A connection to pool `i` could not be made: every waiting send
    /// used an attempt.
    fn pool_failed(&mut self, i: usize, cause: Cause) {
        self.back_off(i);
        self.charge_queue(i, cause);
        self.expire(i);
    }

    /// One more consecutive failure of pool `i`: no new connection before
    /// its backoff has passed.
    fn back_off(&mut self, i: usize) {
        self.pools[i].failures += 1;
        let delay = self.backoff(self.pools[i].failures);
        self.pools[i].retry_at = Instant::now() + delay;
    }

    fn charge_queue(&mut self, i: usize, cause: Cause) {
        for op in &mut self.pools[i].queue {
            op.attempts += 1;
            op.cause = Some(cause);
        }
    }

    /// Fails the waiting sends that are past their bound.
    fn expire(&mut self, i: usize) {
        let now = Instant::now();
        let policy = self.policy;
        let outcomes = &mut self.outcomes;
        self.pools[i].queue.retain(|op| {
            let over =
                op.attempts >= policy.attempts || now.duration_since(op.since) >= policy.timeout;
            if over {
                outcomes.push(Outcome {
                    lsn: op.lsn,
                    status: op.cause.unwrap_or(Cause::Timeout).status(),
                    attempts: op.attempts,
                });
            }
            !over
        });
    }

    /// The engine's clock: stalled connections, bounds, reconnects.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let stalled: Vec<ConnId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.inflight.front().is_some_and(|op| {
                    now.duration_since(l.last_ack.max(op.since)) >= self.policy.timeout
                })
            })
            .map(|(c, _)| *c)
            .collect();
        for c in stalled {
            self.fail_link(c, Cause::Timeout);
        }
        for i in 0..self.pools.len() {
            self.expire(i);
            if !self.pools[i].queue.is_empty() {
                self.pump(i);
            }
        }
    }
}
