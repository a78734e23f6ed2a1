//! The io_uring network backend.
//!
//! Per connection: one receive always in flight (unless its owner is
//! backlogged), and at most one send, so bytes go out in the order they
//! were queued. Listeners use multishot accept.
//!
//! Ownership of what the kernel touches: every operation in flight is an op
//! (`ops.rs`) in the worker's [`InFlight`] slab, which owns its buffer or
//! address until its last completion is reaped (`io/inflight.rs`). A
//! connection ([`UConn`]) holds only buffers the kernel cannot see: its
//! queued sends and an idle receive buffer; its receive buffer moves into
//! the receive op and its front send into the send op, and back out with
//! their completions. So failing, shutting down or finishing a connection
//! cannot recycle memory an operation still uses. The slot (with its
//! socket) is freed only when none of its ops is in flight, and every path
//! that ends an op re-checks whether the connection can now be finished
//! ([`UringNet::settle`]), so a connection that fails while operations are
//! in flight is still closed and reported `Closed` once the last of them
//! completes. `complete.rs` handles completions.

mod bufring;
mod complete;
mod ops;
mod spare;
mod sys;
#[cfg(test)]
mod tests;

use super::conn::{Conns, Owner, Owners, Pausable, resumable, stale};
use super::local::{Backend, Round, Rounds};
use super::sendq::{Outgoing, SendQueue, admits};
use super::{ConnId, Control, NetConfig, NetEvent, NetEventKind, NetRequest, NetShared};
use crate::io::IoError;
use crate::io::inbox::Inbox;
use crate::io::inflight::InFlight;
use crate::io::kernel::{Cqe, KernelRing};
use crate::io::nap::BacklogNap;
use crate::io::wake::EventFd;
use bufring::BufRing;
use io_uring::opcode;
use ops::{AcceptOp, CancelOp, ConnectOp, NetOp, RecvMultiOp, RecvOp, SendOp};
use spare::SparePool;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
pub(super) use sys::set_nodelay;
use sys::sockaddr;

struct UConn {
    fd: RawFd,
    owner: Owner,
    /// A receive buffer kept between receives; the receive op holds it
    /// while `recv_inflight`.
    recv_buf: Vec<u8>,
    recv_inflight: bool,
    /// The `user_data` of its multishot receive while one is in flight
    /// (what a pause cancels).
    recv_multi: Option<u64>,
    paused: bool,
    /// The application paused reading (`NetClient::pause_reading`).
    held: bool,
    /// Queued buffers, none of them handed to the kernel yet.
    sends: SendQueue,
    /// Bytes of the send in flight still unsent (its op holds the
    /// buffer); `None` when no send is in flight.
    sending: Option<usize>,
    /// Close requested: finish sends, then close.
    closing: bool,
    /// The peer sent EOF: no more receives.
    read_done: bool,
    /// An error ended the connection: drop sends, close.
    dead: bool,
    shut: bool,
    /// Outbound: a connect is in flight.
    connecting: bool,
}

struct UListener {
    /// `None` once closed (after its accept is reaped).
    socket: Option<TcpListener>,
    /// The `user_data` of its multishot accept while one is in flight.
    accept: Option<u64>,
    closed: bool,
    /// Told once the socket is closed.
    on_close: Option<crossbeam_channel::Sender<()>>,
}

pub(super) struct UringNet {
    ring: KernelRing,
    inbox: Inbox<NetRequest, NetEvent>,
    /// How long to sleep while results wait for room (see `nap.rs`).
    nap: BacklogNap,
    control: Arc<Control>,
    owners: Owners,
    listeners: Vec<UListener>,
    conns: Conns<UConn>,
    /// Every op the kernel may still be using.
    ops: InFlight<NetOp>,
    recv_size: usize,
    max_backlog: usize,
    /// Unsent bytes a connection may hold (`NetConfig::send_queue_limit`).
    send_limit: usize,
    /// Sends of at least this many bytes are zero-copy
    /// (`NetConfig::zero_copy_min`, where the kernel has `SEND_ZC`).
    zero_copy_min: Option<usize>,
    /// Provided receive buffers, while multishot receives work here.
    bufs: Option<BufRing>,
    /// Buffer rings no longer used (multishot receive turned out to be
    /// missing), kept until nothing is in flight.
    retired: Vec<BufRing>,
    spare: SparePool,
    paused: Vec<u32>,
    requests: Vec<(u32, NetRequest)>,
    cqes: Vec<Cqe>,
}

impl UringNet {
    pub(super) fn new(
        _index: usize,
        config: &NetConfig,
        shared: Arc<NetShared>,
        control: Arc<Control>,
        waker: Arc<EventFd>,
    ) -> std::io::Result<Self> {
        let ring = KernelRing::new(config.ring_entries, waker, config.spin)?;
        let zero_copy_min = config.zero_copy_min.filter(|_| {
            let ok = ring.supports(opcode::SendZc::CODE);
            if !ok {
                tracing::info!("io_uring has no zero-copy send here: large sends copy");
            }
            ok
        });
        let bufs = config
            .provided_buffers
            .and_then(|(count, size)| BufRing::new(&ring, 0, count, size));
        Ok(Self {
            zero_copy_min,
            bufs,
            retired: Vec::new(),
            ring,
            inbox: Inbox::new(shared),
            nap: BacklogNap::default(),
            control,
            owners: Owners::new(),
            listeners: Vec::new(),
            conns: Conns::new(_index),
            ops: InFlight::default(),
            recv_size: config.recv_buffer.max(512),
            max_backlog: config.max_backlog.max(1),
            send_limit: config.send_queue_limit,
            spare: SparePool::new(),
            paused: Vec::new(),
            requests: Vec::new(),
            cqes: Vec::new(),
        })
    }

    /// Runs until stopped; then closes every connection and delivers every
    /// event (see `Inbox::finish_delivering`).
    pub(super) fn run(mut self, drained: crossbeam_channel::Sender<usize>) {
        loop {
            let r = self.round();
            if r.stopping {
                break;
            }
            let shared = self.inbox.shared.clone();
            let control = self.control.clone();
            let inbox = &mut self.inbox;
            self.ring.idle(r.worked, &shared.signal, r.most, || {
                inbox.has_requests() || control.has_work()
            });
        }
        self.end_all();
        let owners = &mut self.owners;
        self.inbox.finish_delivering(&drained, || owners.flush());
    }
}

impl Backend for UringNet {
    fn sleep(&mut self, most: Option<std::time::Duration>) {
        let shared = self.inbox.shared.clone();
        let control = self.control.clone();
        let inbox = &mut self.inbox;
        self.ring.sleep(&shared.signal, most, || {
            inbox.has_requests() || control.has_work()
        });
    }
}

impl Rounds for UringNet {
    /// One loop round: listeners, requests, one submit, completions,
    /// deliveries.
    fn round(&mut self) -> Round {
        self.ring.arm_wake();
        self.inbox.accept_joining();
        self.take_listeners();
        let stopping = self.inbox.shared.stop.load(Ordering::Acquire);
        let took = if stopping { 0 } else { self.take_requests() };
        self.resume_paused();
        self.ring.submit(false);
        let reaped = self.reap();
        let backlog = self.flush();
        self.inbox.shared.stats.in_flight.set(self.ops.len() as u64);
        Round {
            worked: took + reaped > 0,
            stopping,
            most: self.nap.limit(backlog),
        }
    }

    fn ready(&mut self) -> bool {
        self.inbox.has_requests() || self.control.has_work()
    }

    fn wait(&mut self, most: Option<std::time::Duration>) {
        self.ring.wait(most);
    }

    fn attach(&mut self, eventfd: RawFd) -> bool {
        self.ring.submitter().register_eventfd(eventfd).is_ok()
    }

    fn busy(&self) -> bool {
        !self.ops.is_empty()
    }

    fn flush(&mut self) -> usize {
        super::conn::flush_all(&mut self.owners, &mut self.inbox)
    }

    fn shut_down(&mut self) {
        self.end_all();
    }
}

impl UringNet {
    fn end_all(&mut self) {
        for (client, req) in self.inbox.close_all() {
            if let NetRequest::Connect { token, .. } = req {
                let ev = NetEvent {
                    conn: ConnId(u64::MAX),
                    kind: NetEventKind::ConnectFailed {
                        token,
                        error: IoError::Stopped,
                    },
                };
                self.inbox.deliver(client, ev);
            }
        }
        for i in 0..self.listeners.len() {
            if !self.listeners[i].closed {
                self.close_listener(i);
            }
        }
        // Closes asked for meanwhile: every listener is closing now.
        for (_, done) in std::mem::take(&mut *self.control.closing.lock()) {
            let _ = done.send(());
        }
        for slot in self.conns.slots() {
            if let Some(c) = self.conns.slot_mut(slot) {
                c.dead = true;
                drop(c.sends.take_all());
            }
            self.shutdown_conn(slot);
        }
        self.ring.wake_self();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while (!self.ops.is_empty() || self.ring.wake_armed())
            && std::time::Instant::now() < deadline
        {
            self.ring.submit(true);
            self.reap();
        }
        for slot in self.conns.slots() {
            self.finish_if_done(slot);
        }
        if self.ops.is_empty() {
            // No receive can pick a buffer any more.
            for bufs in self.bufs.take().into_iter().chain(self.retired.drain(..)) {
                bufs.free(&self.ring);
            }
        }
        if self.ring.wake_armed() {
            // Never completed: leak what the kernel may still write rather
            // than free it under it (ops still in flight are leaked by the
            // slab itself when it is dropped).
            self.ring.leak_wake_buf();
        }
    }

    /// Moves an op into the slab and pushes its SQE; the op comes back if
    /// the ring took nothing.
    fn submit(&mut self, op: NetOp) -> Result<u64, NetOp> {
        self.ops.submit(&mut self.ring, op)
    }

    /// Why a push found no room: a broken ring, or a full one.
    fn push_error(&self, op: &'static str) -> IoError {
        match self.ring.broken() {
            Some(errno) => IoError::not_submitted(errno),
            None => IoError::os(op, libc::EBUSY),
        }
    }

    fn take_listeners(&mut self) {
        let new: Vec<_> = std::mem::take(&mut *self.control.listeners.lock());
        for l in new {
            let (index, socket) = self.owners.add_listener(l);
            debug_assert_eq!(index, self.listeners.len());
            self.listeners.push(UListener {
                socket: Some(socket),
                accept: None,
                closed: false,
                on_close: None,
            });
            self.arm_accept(index);
        }
        let closing: Vec<_> = std::mem::take(&mut *self.control.closing.lock());
        for (local, done) in closing {
            // The address was checked against `bound`; a listener not
            // found was never added (its bind raced the stop): nothing to do.
            match self.owners.listener_at(local) {
                Some(i) => {
                    self.listeners[i].on_close = Some(done);
                    self.close_listener(i);
                }
                None => {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Stops accepting on listener `index`: cancels its accept, and closes
    /// the socket once no accept is in flight.
    fn close_listener(&mut self, index: usize) {
        let l = &mut self.listeners[index];
        l.closed = true;
        match l.accept {
            Some(target) => {
                // If the cancel finds no room, the accept ends with the
                // ring's teardown instead; the socket stays open until then.
                let _ = self.submit(NetOp::Cancel(CancelOp { target }));
            }
            None => self.release_listener(index),
        }
    }

    /// Closes a closed listener's socket (its accept is reaped) and tells
    /// whoever asked.
    fn release_listener(&mut self, index: usize) {
        let l = &mut self.listeners[index];
        drop(l.socket.take());
        if let Some(done) = l.on_close.take() {
            let _ = done.send(());
        }
    }

    fn arm_accept(&mut self, index: usize) {
        let l = &self.listeners[index];
        if l.accept.is_some() || l.closed {
            return;
        }
        let Some(socket) = &l.socket else { return };
        // The socket stays open in `listeners` until the accept's last
        // completion is reaped (`release_listener` runs only then).
        let op = AcceptOp {
            listener: index,
            fd: socket.as_raw_fd(),
        };
        if let Ok(user_data) = self.submit(NetOp::Accept(op)) {
            self.listeners[index].accept = Some(user_data);
        }
    }

    fn take_requests(&mut self) -> usize {
        // A broken ring still takes requests, to fail them.
        let budget = match self.ring.broken() {
            Some(_) => 64,
            None => self.ring.sq_free() / 2,
        };
        let mut batch = std::mem::take(&mut self.requests);
        let n = self.inbox.drain(budget, |c, r| batch.push((c, r)));
        for (client, req) in batch.drain(..) {
            match req {
                NetRequest::Send { conn, buf, tag } => self.queue_send(client, conn, buf, tag),
                NetRequest::Close { conn } => self.close(client, conn),
                NetRequest::Reading { conn, on } => self.reading(client, conn, on),
                NetRequest::Connect { addr, token } => self.connect(client, addr, token),
            }
        }
        self.requests = batch;
        n
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        self.spare.put(buf, self.recv_size);
    }

    fn queue_send(&mut self, client: u32, conn: ConnId, buf: Vec<u8>, tag: Option<u64>) {
        match self.conns.get_mut(conn) {
            Some(c) if !c.dead && !c.shut => {
                let queued = c.sends.bytes() + c.sending.unwrap_or(0);
                if !admits(queued, buf.len(), self.send_limit) {
                    let kind = NetEventKind::SendRefused { buf, tag, queued };
                    return self.inbox.deliver(client, NetEvent { conn, kind });
                }
                if buf.is_empty() && tag.is_none() {
                    return self.recycle(buf);
                }
                c.sends.push_back(Outgoing {
                    buf,
                    notify: tag.map(|t| (client, t)),
                });
                self.pump_send(conn.slot());
            }
            _ => {
                self.recycle(buf);
                self.inbox.deliver(client, stale(conn));
            }
        }
    }

    /// Starts the next send unless one is in flight: the front queued
    /// buffer moves into a send op.
    fn pump_send(&mut self, slot: u32) {
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        if c.sending.is_some() || c.dead || c.shut || c.connecting {
            return;
        }
        let Some(o) = c.sends.pop_front() else {
            return;
        };
        let zc = self.zero_copy_min.is_some_and(|min| o.buf.len() >= min);
        let op = SendOp {
            slot,
            fd: c.fd,
            buf: o.buf,
            off: 0,
            notify: o.notify,
            zc,
            sent: None,
        };
        self.start_send(op);
    }

    /// Submits a send op (a new buffer, or the rest of a short send).
    fn start_send(&mut self, op: SendOp) {
        let slot = op.slot;
        let Some(c) = self.conns.slot_mut(slot) else {
            return self.recycle(op.buf);
        };
        c.sending = Some(op.rest());
        if let Err(op) = self.submit(NetOp::Send(op)) {
            if let Some(c) = self.conns.slot_mut(slot) {
                c.sending = None;
            }
            if let NetOp::Send(op) = op {
                self.recycle(op.buf);
            }
            let e = self.push_error("send");
            self.fail_conn(slot, e);
        }
    }

    fn arm_recv(&mut self, slot: u32) {
        let size = self.recv_size;
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        if c.recv_inflight || c.read_done || c.dead || c.shut || c.connecting || c.paused || c.held
        {
            return;
        }
        if let Some(bgid) = self.bufs.as_ref().map(BufRing::bgid) {
            c.recv_inflight = true;
            let op = RecvMultiOp {
                slot,
                fd: c.fd,
                bgid,
            };
            match self.submit(NetOp::RecvMulti(op)) {
                Ok(user_data) => {
                    if let Some(c) = self.conns.slot_mut(slot) {
                        c.recv_multi = Some(user_data);
                    }
                }
                Err(_) => {
                    if let Some(c) = self.conns.slot_mut(slot) {
                        c.recv_inflight = false;
                    }
                    let e = self.push_error("recv");
                    self.fail_conn(slot, e);
                }
            }
            return;
        }
        let mut buf = std::mem::take(&mut c.recv_buf);
        if buf.capacity() < size {
            buf = self
                .spare
                .take()
                .unwrap_or_else(|| Vec::with_capacity(size));
        }
        buf.clear();
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        c.recv_inflight = true;
        let op = RecvOp {
            slot,
            fd: c.fd,
            buf,
        };
        if let Err(op) = self.submit(NetOp::Recv(op)) {
            if let (Some(c), NetOp::Recv(op)) = (self.conns.slot_mut(slot), op) {
                c.recv_inflight = false;
                c.recv_buf = op.buf;
            }
            let e = self.push_error("recv");
            self.fail_conn(slot, e);
        }
    }

    fn resume_paused(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let resume = resumable(
            &mut self.paused,
            &mut self.conns,
            &mut self.owners,
            &mut self.inbox,
            self.max_backlog,
        );
        for slot in resume {
            self.arm_recv(slot);
        }
    }

    /// The application pauses or resumes receiving: a pause cancels a
    /// multishot receive (a single receive in flight just is not armed
    /// again); a resume arms one unless the backlog pause still holds.
    fn reading(&mut self, client: u32, conn: ConnId, on: bool) {
        let Some(c) = self.conns.get_mut(conn) else {
            return self.inbox.deliver(client, stale(conn));
        };
        if c.held != on {
            return;
        }
        c.held = !on;
        if on {
            self.arm_recv(conn.slot());
        } else if let Some(target) = c.recv_multi {
            let _ = self.submit(NetOp::Cancel(CancelOp { target }));
        }
    }

    fn close(&mut self, client: u32, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn) else {
            return self.inbox.deliver(client, stale(conn));
        };
        c.closing = true;
        self.settle(conn.slot());
    }

    /// After anything that may end a connection's last operation: a dead
    /// connection, or a closing one with nothing left to send, is shut
    /// down, and a shut one is finished once nothing of it is in flight.
    fn settle(&mut self, slot: u32) {
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        if c.dead || c.closing && c.sends.is_empty() && c.sending.is_none() {
            self.shutdown_conn(slot);
        } else if c.shut {
            self.finish_if_done(slot);
        }
    }

    /// Shuts the socket down so the receive in flight completes, then
    /// the connection is finished when nothing is in flight.
    fn shutdown_conn(&mut self, slot: u32) {
        if let Some(c) = self.conns.slot_mut(slot) {
            if !c.shut {
                c.shut = true;
                // SAFETY: plain system call on a socket this worker owns.
                unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
            }
        }
        self.finish_if_done(slot);
    }

    /// Ends a connection on an error: the owner hears of the first one;
    /// queued sends are dropped (ops in flight hold their own buffers).
    /// Called again (another operation failing later), it still finishes
    /// the connection once nothing is in flight.
    fn fail_conn(&mut self, slot: u32, e: IoError) {
        let conn = self.conns.id(slot);
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        let first = !c.dead;
        c.dead = true;
        let owner = c.owner;
        let queued: Vec<Vec<u8>> = c.sends.take_all().map(|o| o.buf).collect();
        for b in queued {
            self.recycle(b);
        }
        if first {
            self.owners.deliver(
                &mut self.inbox,
                owner,
                NetEvent {
                    conn,
                    kind: NetEventKind::Error(e),
                },
            );
        }
        self.shutdown_conn(slot);
    }

    fn finish_if_done(&mut self, slot: u32) {
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        if !c.shut || c.recv_inflight || c.sending.is_some() || c.connecting {
            return;
        }
        let conn = self.conns.id(slot);
        let Some(mut c) = self.conns.remove(slot) else {
            return;
        };
        // SAFETY: closes the socket this entry owned; none of its ops is in
        // flight any more, and the entry is gone, so nothing uses the fd.
        unsafe { libc::close(c.fd) };
        self.recycle(c.recv_buf);
        for o in c.sends.take_all() {
            self.recycle(o.buf);
        }
        self.owners.deliver(
            &mut self.inbox,
            c.owner,
            NetEvent {
                conn,
                kind: NetEventKind::Closed,
            },
        );
    }

    fn new_conn(&mut self, fd: RawFd, owner: Owner) -> ConnId {
        self.conns.insert(UConn {
            fd,
            owner,
            recv_buf: Vec::new(),
            recv_inflight: false,
            recv_multi: None,
            paused: false,
            held: false,
            sends: SendQueue::default(),
            sending: None,
            closing: false,
            read_done: false,
            dead: false,
            shut: false,
            connecting: false,
        })
    }

    fn connect(&mut self, client: u32, addr: SocketAddr, token: u64) {
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let error = IoError::from_io("socket", std::io::Error::last_os_error());
            let ev = NetEvent {
                conn: ConnId(u64::MAX),
                kind: NetEventKind::ConnectFailed { token, error },
            };
            return self.inbox.deliver(client, ev);
        }
        set_nodelay(fd);
        let (storage, len) = sockaddr(addr);
        let conn = self.new_conn(fd, Owner::Client(client));
        let slot = conn.slot();
        if let Some(c) = self.conns.slot_mut(slot) {
            c.connecting = true;
        }
        let op = ConnectOp {
            slot,
            fd,
            addr: Box::new(storage),
            len,
            token,
        };
        if let Err(NetOp::Connect(op)) = self.submit(NetOp::Connect(op)) {
            let e = self.push_error("connect");
            self.complete_connect(op, -libc::EBUSY, || e);
        }
    }
}

impl Pausable for UConn {
    fn owner(&self) -> Owner {
        self.owner
    }
    fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }
}
