//! The io_uring network backend.
//!
//! Per connection: one receive always in flight (unless its owner is
//! backlogged), and at most one send, so bytes go out in the order they
//! were queued. Listeners use multishot accept.
//!
//! Ownership of what the kernel touches: each connection's slab entry
//! ([`UConn`]) holds the memory of its operations in flight: the receive
//! buffer while `recv_inflight`, the [`Sending`] buffer while
//! `send_inflight`, the address while `connecting`. Those are replaced,
//! recycled or freed only after the operation's completion is reaped
//! (failing or shutting a connection down never takes them), and the slot
//! (with its socket) is freed only when nothing of it is in flight. Every
//! path that ends an operation re-checks whether the connection can now be
//! finished ([`UringNet::settle`]), so a connection that fails while
//! operations are in flight is still closed and reported `Closed` once
//! the last of them completes.

use super::conn::{Conns, Owner, Owners, Pausable, resumable, stale};
use super::sendq::{Outgoing, SendQueue, admits};
use super::{ConnId, Control, NetConfig, NetEvent, NetEventKind, NetRequest, NetShared};
use crate::io::IoError;
use crate::io::inbox::Inbox;
use crate::io::kernel::KernelRing;
use crate::io::nap::BacklogNap;
use crate::io::wake::EventFd;
use io_uring::{cqueue, opcode, squeue, types};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const TAG_ACCEPT: u64 = 2;
const TAG_RECV: u64 = 3;
const TAG_SEND: u64 = 4;
const TAG_CONNECT: u64 = 5;
const TAG_CANCEL: u64 = 6;

fn ud(tag: u64, slot: u32) -> u64 {
    (tag << 56) | u64::from(slot)
}

/// The buffer being sent, and how much of it has gone out.
struct Sending {
    buf: Vec<u8>,
    off: usize,
    notify: Option<(u32, u64)>,
}

struct UConn {
    fd: RawFd,
    owner: Owner,
    /// Where the receive lands; the kernel may write its spare capacity
    /// while `recv_inflight`.
    recv_buf: Vec<u8>,
    recv_inflight: bool,
    paused: bool,
    /// Queued buffers, none of them handed to the kernel yet.
    sends: SendQueue,
    /// The buffer being sent; the kernel may read it while
    /// `send_inflight`.
    sending: Option<Sending>,
    send_inflight: bool,
    /// Close requested: finish sends, then close.
    closing: bool,
    /// The peer sent EOF: no more receives.
    read_done: bool,
    /// An error ended the connection: drop sends, close.
    dead: bool,
    shut: bool,
    /// Outbound: the address being connected to and the token.
    connecting: Option<(Box<libc::sockaddr_storage>, libc::socklen_t, u64)>,
}

struct UListener {
    /// `None` once closed (after its accept is reaped).
    socket: Option<TcpListener>,
    armed: bool,
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
    in_flight: usize,
    recv_size: usize,
    max_backlog: usize,
    /// Unsent bytes a connection may hold (`NetConfig::send_queue_limit`).
    send_limit: usize,
    spare: SparePool,
    paused: Vec<u32>,
    requests: Vec<(u32, NetRequest)>,
    cqes: Vec<(u64, i32, u32)>,
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
        Ok(Self {
            ring,
            inbox: Inbox::new(shared),
            nap: BacklogNap::default(),
            control,
            owners: Owners::new(),
            listeners: Vec::new(),
            conns: Conns::new(_index),
            in_flight: 0,
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
            self.ring.arm_wake();
            self.inbox.accept_joining();
            self.take_listeners();
            let stopping = self.inbox.shared.stop.load(Ordering::Acquire);
            let took = if stopping { 0 } else { self.take_requests() };
            self.resume_paused();
            self.ring.submit(false);
            let reaped = self.reap();
            let backlog = self.owners.flush() + self.inbox.flush();
            let stats = &self.inbox.shared.stats;
            stats.backlog.set(backlog as u64);
            stats.in_flight.set(self.in_flight as u64);
            let most = self.nap.limit(backlog);
            if stopping {
                break;
            }
            let shared = self.inbox.shared.clone();
            let control = self.control.clone();
            let inbox = &mut self.inbox;
            self.ring.idle(took + reaped > 0, &shared.signal, most, || {
                inbox.has_requests() || control.has_work()
            });
        }
        self.shut_down();
        let owners = &mut self.owners;
        self.inbox.finish_delivering(&drained, || owners.flush());
    }

    fn shut_down(&mut self) {
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
                // Only the queued buffers: a send in flight keeps its own.
                drop(c.sends.take_all());
            }
            self.shutdown_conn(slot);
        }
        self.ring.wake_self();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while (self.in_flight > 0 || self.ring.wake_armed()) && std::time::Instant::now() < deadline
        {
            self.ring.submit(true);
            self.reap();
        }
        for slot in self.conns.slots() {
            self.finish_if_done(slot);
        }
        if self.in_flight > 0 || self.ring.wake_armed() {
            // Something never completed: leak what the kernel may still
            // write to rather than free it under it.
            std::mem::forget(std::mem::replace(&mut self.conns, Conns::new(0)));
            self.ring.leak_wake_buf();
        }
    }

    /// Pushes one SQE and counts it in flight; `false` if the ring has no
    /// room (nothing was pushed).
    ///
    /// # Safety
    /// As [`KernelRing::push`]: everything `sqe` points to must stay valid,
    /// and unmoved, until its completion is reaped.
    unsafe fn push_counted(&mut self, sqe: &squeue::Entry) -> bool {
        // SAFETY: forwarded to the caller.
        let ok = unsafe { self.ring.push(sqe) };
        if ok {
            self.in_flight += 1;
        }
        ok
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
                armed: false,
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
        if l.armed {
            let sqe = opcode::AsyncCancel::new(ud(TAG_ACCEPT, index as u32))
                .build()
                .user_data(ud(TAG_CANCEL, 0));
            // SAFETY: an AsyncCancel SQE points to no memory.
            unsafe { self.push_counted(&sqe) };
        } else {
            self.release_listener(index);
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
        if l.armed || l.closed {
            return;
        }
        let Some(socket) = &l.socket else { return };
        let sqe = opcode::AcceptMulti::new(types::Fd(socket.as_raw_fd()))
            .build()
            .user_data(ud(TAG_ACCEPT, index as u32));
        // SAFETY: a multishot accept without an address points to no
        // memory; its socket stays open in `listeners` until the accept's
        // last completion is reaped (`release_listener` runs only then).
        if unsafe { self.push_counted(&sqe) } {
            self.listeners[index].armed = true;
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
                let queued =
                    c.sends.bytes() + c.sending.as_ref().map_or(0, |s| s.buf.len() - s.off);
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
    /// buffer moves into the connection's `sending`, where it stays until
    /// its completions are reaped.
    fn pump_send(&mut self, slot: u32) {
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        if c.send_inflight || c.dead || c.shut || c.connecting.is_some() {
            return;
        }
        if c.sending.is_none() {
            c.sending = c.sends.pop_front().map(|o| Sending {
                buf: o.buf,
                off: 0,
                notify: o.notify,
            });
        }
        let Some(s) = &c.sending else { return };
        let rest = &s.buf[s.off..];
        let (ptr, len) = (rest.as_ptr(), rest.len().min(u32::MAX as usize) as u32);
        let sqe = opcode::Send::new(types::Fd(c.fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(TAG_SEND, slot));
        c.send_inflight = true;
        // SAFETY: the Send reads `len` bytes of `sending.buf`, owned by
        // this connection's slab entry. While `send_inflight` is set,
        // nothing takes, resizes or frees `sending` (only `complete_send`,
        // after the CQE is reaped, clears the flag), and the slot is not
        // freed (`finish_if_done` checks the flag); the heap buffer does
        // not move when the entry does.
        if !unsafe { self.push_counted(&sqe) } {
            if let Some(c) = self.conns.slot_mut(slot) {
                c.send_inflight = false;
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
        if c.recv_inflight || c.read_done || c.dead || c.shut || c.connecting.is_some() {
            return;
        }
        if c.recv_buf.capacity() < size {
            c.recv_buf = self
                .spare
                .take()
                .unwrap_or_else(|| Vec::with_capacity(size));
        }
        c.recv_buf.clear();
        let ptr = c.recv_buf.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        let cap = c.recv_buf.capacity().min(u32::MAX as usize) as u32;
        let sqe = opcode::Recv::new(types::Fd(c.fd), ptr, cap)
            .build()
            .user_data(ud(TAG_RECV, slot));
        c.recv_inflight = true;
        // SAFETY: the Recv writes at most `cap` bytes into the spare
        // capacity of `recv_buf`, owned by this connection's slab entry.
        // While `recv_inflight` is set nothing replaces, resizes or frees
        // `recv_buf` (only `complete_recv`, after the CQE is reaped, clears
        // the flag), and the slot is not freed (`finish_if_done` checks the
        // flag); the heap buffer does not move when the entry does.
        if !unsafe { self.push_counted(&sqe) } {
            if let Some(c) = self.conns.slot_mut(slot) {
                c.recv_inflight = false;
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
    /// queued sends are dropped; operations in flight keep their buffers
    /// until they complete. Called again (another operation failing
    /// later), it still finishes the connection once nothing is in flight.
    fn fail_conn(&mut self, slot: u32, e: IoError) {
        let conn = self.conns.id(slot);
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        let first = !c.dead;
        c.dead = true;
        let owner = c.owner;
        let mut drop_bufs: Vec<Vec<u8>> = c.sends.take_all().map(|o| o.buf).collect();
        if !c.send_inflight {
            drop_bufs.extend(c.sending.take().map(|s| s.buf));
        }
        for b in drop_bufs {
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
        if !c.shut || c.recv_inflight || c.send_inflight || c.connecting.is_some() {
            return;
        }
        let conn = self.conns.id(slot);
        let Some(mut c) = self.conns.remove(slot) else {
            return;
        };
        // SAFETY: closes the socket this entry owned; nothing of it is in
        // flight any more, and the entry is gone, so nothing uses the fd.
        unsafe { libc::close(c.fd) };
        self.recycle(c.recv_buf);
        if let Some(s) = c.sending {
            self.recycle(s.buf);
        }
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
            paused: false,
            sends: SendQueue::default(),
            sending: None,
            send_inflight: false,
            closing: false,
            read_done: false,
            dead: false,
            shut: false,
            connecting: None,
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
        let c = self.conns.slot_mut(slot).expect("just inserted");
        c.connecting = Some((Box::new(storage), len, token));
        let ptr = (&raw const *c.connecting.as_ref().expect("set").0).cast::<libc::sockaddr>();
        let sqe = opcode::Connect::new(types::Fd(fd), ptr, len)
            .build()
            .user_data(ud(TAG_CONNECT, slot));
        // SAFETY: the Connect reads `len` bytes of the boxed address in
        // this connection's `connecting`, which only `complete_connect`
        // takes, after the CQE is reaped; the slot is not freed before
        // (`finish_if_done` checks `connecting`), and the box's heap memory
        // does not move when the entry does.
        if !unsafe { self.push_counted(&sqe) } {
            self.complete_connect(slot, -libc::EBUSY);
        }
    }

    fn complete_connect(&mut self, slot: u32, res: i32) {
        let conn = self.conns.id(slot);
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        let Some((_, _, token)) = c.connecting.take() else {
            return;
        };
        let owner = c.owner;
        if res < 0 {
            let c = self.conns.remove(slot).expect("present");
            // SAFETY: closes the socket the removed entry owned; a
            // connecting socket has nothing else in flight (receives and
            // sends start only once it is connected).
            unsafe { libc::close(c.fd) };
            let error = IoError::os("connect", -res);
            return self.owners.deliver(
                &mut self.inbox,
                owner,
                NetEvent {
                    conn,
                    kind: NetEventKind::ConnectFailed { token, error },
                },
            );
        }
        self.owners.deliver(
            &mut self.inbox,
            owner,
            NetEvent {
                conn,
                kind: NetEventKind::Connected { token },
            },
        );
        self.arm_recv(slot);
        self.pump_send(slot);
        // Closed while connecting: finish now that the connect is over.
        self.settle(slot);
    }

    fn reap(&mut self) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        let n = self.ring.reap(&mut cqes);
        for (user_data, res, flags) in cqes.drain(..) {
            let tag = user_data >> 56;
            let slot = user_data as u32;
            match tag {
                TAG_CANCEL => self.in_flight -= 1,
                TAG_ACCEPT => self.complete_accept(slot as usize, res, flags),
                TAG_RECV => {
                    self.in_flight -= 1;
                    self.complete_recv(slot, res);
                }
                TAG_SEND => {
                    self.in_flight -= 1;
                    self.complete_send(slot, res);
                }
                TAG_CONNECT => {
                    self.in_flight -= 1;
                    self.complete_connect(slot, res);
                }
                _ => debug_assert!(false, "unknown completion tag {tag}"),
            }
        }
        self.cqes = cqes;
        n
    }

    fn complete_accept(&mut self, index: usize, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        if !more {
            self.in_flight -= 1;
            if let Some(l) = self.listeners.get_mut(index) {
                l.armed = false;
                if l.closed {
                    self.release_listener(index);
                }
            }
        }
        if res >= 0 {
            let fd = res;
            if self.listeners.get(index).is_none_or(|l| l.closed) {
                // SAFETY: closes a fresh socket the accept just returned,
                // which nothing else owns.
                unsafe { libc::close(fd) };
            } else {
                set_nodelay(fd);
                let peer = peer_addr(fd).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                let local = self.owners.listeners[index].local;
                let owner = self.owners.pick(index);
                let conn = self.new_conn(fd, owner);
                self.owners.deliver(
                    &mut self.inbox,
                    owner,
                    NetEvent {
                        conn,
                        kind: NetEventKind::Accepted { peer, local },
                    },
                );
                self.arm_recv(conn.slot());
            }
        }
        // Errors such as EMFILE or ECONNABORTED end one accept, not the
        // listener: re-arm (a cancelled or closed listener stays down).
        if !more && res != -libc::ECANCELED {
            self.arm_accept(index);
        }
    }

    fn complete_recv(&mut self, slot: u32, res: i32) {
        let max_backlog = self.max_backlog;
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        c.recv_inflight = false;
        let owner = c.owner;
        if res > 0 && !c.dead {
            // SAFETY: the receive is reaped, and the kernel initialised
            // `res` bytes (at most the capacity it was given) of the spare
            // capacity.
            unsafe { c.recv_buf.set_len(res as usize) };
            let data = std::mem::take(&mut c.recv_buf);
            let shut = c.shut;
            let conn = self.conns.id(slot);
            self.owners.deliver(
                &mut self.inbox,
                owner,
                NetEvent {
                    conn,
                    kind: NetEventKind::Data(data),
                },
            );
            if shut {
                // Data that raced our own shutdown: no more receives.
                return self.settle(slot);
            }
            if self.owners.backlog(&mut self.inbox, owner) >= max_backlog {
                if let Some(c) = self.conns.slot_mut(slot) {
                    c.paused = true;
                }
                self.paused.push(slot);
            } else {
                self.arm_recv(slot);
            }
            return;
        }
        if res < 0 && !c.shut && res != -libc::ECANCELED {
            return self.fail_conn(slot, IoError::os("recv", -res));
        }
        if res == 0 && !c.shut && !c.dead {
            // The peer finished sending (EOF, possibly a half-close): tell
            // the owner, stop reading, and keep the connection open for
            // replies until the owner closes it.
            c.read_done = true;
            let conn = self.conns.id(slot);
            self.owners.deliver(
                &mut self.inbox,
                owner,
                NetEvent {
                    conn,
                    kind: NetEventKind::PeerClosed,
                },
            );
            return;
        }
        // Our own shutdown or a failure ended the receiving side: finish
        // after what is queued is sent (or at once, if dead).
        c.closing = true;
        self.settle(slot);
    }

    fn complete_send(&mut self, slot: u32, res: i32) {
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        c.send_inflight = false;
        if res < 0 {
            return self.fail_conn(slot, IoError::os("send", -res));
        }
        self.inbox.shared.stats.bytes_out.add(res as u64);
        let sent = c.sending.as_mut().map(|s| {
            s.off += res as usize;
            s.off >= s.buf.len()
        });
        if sent == Some(true) {
            let s = c.sending.take().expect("checked");
            let queued = c.sends.bytes();
            self.recycle(s.buf);
            if let Some((client, tag)) = s.notify {
                let conn = self.conns.id(slot);
                let kind = NetEventKind::Sent { tag, queued };
                self.inbox.deliver(client, NetEvent { conn, kind });
            }
        }
        self.pump_send(slot);
        self.settle(slot);
    }
}

pub(super) fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: sets an int option from a local; failures are harmless.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    // Borrow the descriptor as a std stream just to read the address.
    // SAFETY: `fd` is an open socket; `ManuallyDrop` keeps ownership here.
    let s = std::mem::ManuallyDrop::new(unsafe {
        <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd)
    });
    s.peer_addr().ok()
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Buffers that finished sending, kept to become receive buffers.
///
/// Only buffers at least as large as a receive buffer and at most twice as
/// large are kept, and at most [`SPARE_BYTES`] of them in all (counting
/// capacity); the rest are freed, so a burst of large sends does not pin
/// their memory for good. Every buffer here is owned by the pool alone:
/// nothing in flight points to it.
struct SparePool {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

/// How many bytes of capacity the spare pool keeps at most.
const SPARE_BYTES: usize = 4 << 20;

impl SparePool {
    fn new() -> Self {
        Self {
            bufs: Vec::new(),
            bytes: 0,
        }
    }

    /// Keeps `buf` for a later receive of `recv_size` bytes, or frees it.
    fn put(&mut self, mut buf: Vec<u8>, recv_size: usize) {
        let cap = buf.capacity();
        if cap < recv_size || cap > 2 * recv_size || self.bytes + cap > SPARE_BYTES {
            return;
        }
        buf.clear();
        self.bytes += cap;
        self.bufs.push(buf);
    }

    fn take(&mut self) -> Option<Vec<u8>> {
        let b = self.bufs.pop()?;
        self.bytes -= b.capacity();
        Some(b)
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

#[cfg(test)]
mod tests {
    //! White-box tests of buffer ownership: they drive a `UringNet` on the
    //! test thread and look at which buffers the ring may touch.

    use super::*;
    use crate::io::inbox::Shared;

    /// A worker driven by hand; `None` where io_uring is unavailable.
    fn uring_net(config: &NetConfig) -> Option<UringNet> {
        let waker = Arc::new(EventFd::new().ok()?);
        let w = waker.clone();
        let shared = Shared::new(Arc::new(move || w.notify()), 64);
        let control = Arc::new(Control::new());
        UringNet::new(0, config, shared, control, waker).ok()
    }

    fn socketpair() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: writes two descriptors into a local array; checked.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        (fds[0], fds[1])
    }

    /// Submits and reaps for a while.
    fn settle(net: &mut UringNet) {
        for _ in 0..20 {
            net.ring.submit(false);
            net.reap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn the_spare_pool_is_bounded_in_bytes_and_frees_oversized_buffers() {
        let recv = 64 * 1024;
        let mut pool = SparePool::new();
        for _ in 0..2000 {
            pool.put(Vec::with_capacity(recv), recv);
        }
        for _ in 0..100 {
            pool.put(Vec::with_capacity(1 << 20), recv);
        }
        let held: usize = pool.bufs.iter().map(Vec::capacity).sum();
        assert_eq!(held, pool.bytes, "the byte count is exact");
        assert!(held <= SPARE_BYTES, "the pool holds {held} bytes");
        assert!(
            pool.bufs.iter().all(|b| b.capacity() <= 2 * recv),
            "a large sent buffer is freed, not kept as a receive buffer"
        );
        assert!(pool.take().is_some(), "buffers that fit are kept");
        assert_eq!(
            pool.bytes,
            pool.bufs.iter().map(Vec::capacity).sum::<usize>()
        );
    }

    #[test]
    fn a_failed_connection_keeps_its_in_flight_send_buffer_from_other_receives() {
        let Some(mut net) = uring_net(&NetConfig::new()) else {
            return; // no io_uring here: nothing to test
        };
        let (a, a_peer) = socketpair();
        let (b, b_peer) = socketpair();
        let ca = net.new_conn(a, Owner::Client(0));
        let cb = net.new_conn(b, Owner::Client(0));
        // Far more than the socket buffers hold, and the peer never reads:
        // the send stays in flight.
        let big = vec![7u8; 8 << 20];
        let sending = big.as_ptr();
        net.queue_send(0, ca, big, None);
        settle(&mut net);
        // The connection fails (as on a receive error) while its send is
        // in flight, then another connection arms a receive.
        net.fail_conn(ca.slot(), IoError::os("recv", libc::ECONNRESET));
        net.arm_recv(cb.slot());
        let receiving = net
            .conns
            .slot_mut(cb.slot())
            .expect("open")
            .recv_buf
            .as_ptr();
        assert_ne!(
            receiving, sending,
            "a receive was handed the buffer an in-flight send still reads"
        );
        // SAFETY: closes the test's own peer descriptors.
        unsafe {
            libc::close(a_peer);
            libc::close(b_peer);
        }
        net.shut_down();
    }
}
