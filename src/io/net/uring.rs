//! The io_uring network backend.
//!
//! Per connection: one receive always in flight (unless its owner is
//! backlogged), and at most one send, so bytes go out in the order they
//! were queued. Listeners use multishot accept. Every buffer and address a
//! submitted SQE points to is owned by the connection (or listener) it
//! belongs to, and a connection's slot is freed only when nothing of it is
//! in flight.

use super::conn::{Conns, Owner, Owners, Pausable, resumable, stale};
use super::{ConnId, Control, NetConfig, NetEvent, NetEventKind, NetRequest, NetShared};
use crate::io::IoError;
use crate::io::inbox::Inbox;
use crate::io::kernel::KernelRing;
use crate::io::wake::EventFd;
use io_uring::{cqueue, opcode, squeue, types};
use std::collections::VecDeque;
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

struct UConn {
    fd: RawFd,
    owner: Owner,
    recv_buf: Vec<u8>,
    recv_inflight: bool,
    paused: bool,
    sends: VecDeque<Vec<u8>>,
    send_off: usize,
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
    socket: TcpListener,
    armed: bool,
    closed: bool,
}

pub(super) struct UringNet {
    ring: KernelRing,
    inbox: Inbox<NetRequest, NetEvent>,
    control: Arc<Control>,
    owners: Owners,
    listeners: Vec<UListener>,
    conns: Conns<UConn>,
    in_flight: usize,
    recv_size: usize,
    max_backlog: usize,
    spare: Vec<Vec<u8>>,
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
            control,
            owners: Owners::new(),
            listeners: Vec::new(),
            conns: Conns::new(_index),
            in_flight: 0,
            recv_size: config.recv_buffer.max(512),
            max_backlog: config.max_backlog.max(1),
            spare: Vec::new(),
            paused: Vec::new(),
            requests: Vec::new(),
            cqes: Vec::new(),
        })
    }

    pub(super) fn run(mut self) {
        loop {
            self.ring.arm_wake();
            self.inbox.accept_joining();
            self.take_listeners();
            let stopping = self.inbox.shared.stop.load(Ordering::Acquire);
            let took = if stopping { 0 } else { self.take_requests() };
            self.resume_paused();
            self.ring.submit(false);
            let reaped = self.reap();
            self.owners.flush();
            self.inbox.flush();
            if stopping {
                break;
            }
            let shared = self.inbox.shared.clone();
            let control = self.control.clone();
            let inbox = &mut self.inbox;
            self.ring.idle(took + reaped > 0, &shared.signal, || {
                inbox.has_requests() || !control.listeners.lock().is_empty()
            });
        }
        self.shut_down();
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
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if l.armed {
                let sqe = opcode::AsyncCancel::new(ud(TAG_ACCEPT, i as u32))
                    .build()
                    .user_data(ud(TAG_CANCEL, 0));
                // SAFETY: the cancel SQE points to no memory.
                if unsafe { self.ring.push(&sqe) } {
                    self.in_flight += 1;
                }
            }
            l.closed = true;
        }
        for slot in self.conns.slots() {
            if let Some(c) = self.conns.slot_mut(slot) {
                c.dead = true;
                c.sends.clear();
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
        self.owners.flush();
        self.inbox.flush();
    }

    fn push(&mut self, sqe: &squeue::Entry) -> bool {
        // SAFETY: every pointer in `sqe` refers to memory owned by a
        // connection or listener, which lives until the CQE is reaped (see
        // the module docs).
        unsafe { self.ring.push(sqe) }
    }

    fn push_counted(&mut self, sqe: &squeue::Entry) -> bool {
        let ok = self.push(sqe);
        if ok {
            self.in_flight += 1;
        }
        ok
    }

    fn take_listeners(&mut self) {
        let new: Vec<_> = std::mem::take(&mut *self.control.listeners.lock());
        for l in new {
            let (index, socket) = self.owners.add_listener(l);
            debug_assert_eq!(index, self.listeners.len());
            self.listeners.push(UListener {
                socket,
                armed: false,
                closed: false,
            });
            self.arm_accept(index);
        }
    }

    fn arm_accept(&mut self, index: usize) {
        let l = &self.listeners[index];
        if l.armed || l.closed {
            return;
        }
        let sqe = opcode::AcceptMulti::new(types::Fd(l.socket.as_raw_fd()))
            .build()
            .user_data(ud(TAG_ACCEPT, index as u32));
        if self.push_counted(&sqe) {
            self.listeners[index].armed = true;
        }
    }

    fn take_requests(&mut self) -> usize {
        let budget = self.ring.sq_free() / 2;
        let mut batch = std::mem::take(&mut self.requests);
        let n = self.inbox.drain(budget, |c, r| batch.push((c, r)));
        for (client, req) in batch.drain(..) {
            match req {
                NetRequest::Send { conn, buf } => self.queue_send(client, conn, buf),
                NetRequest::Close { conn } => self.close(client, conn),
                NetRequest::Connect { addr, token } => self.connect(client, addr, token),
            }
        }
        self.requests = batch;
        n
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < 1024 && buf.capacity() >= self.recv_size {
            buf.clear();
            self.spare.push(buf);
        }
    }

    fn queue_send(&mut self, client: u32, conn: ConnId, buf: Vec<u8>) {
        match self.conns.get_mut(conn) {
            Some(c) if !c.dead && !c.shut => {
                if buf.is_empty() {
                    return self.recycle(buf);
                }
                c.sends.push_back(buf);
                self.pump_send(conn.slot());
            }
            _ => {
                self.recycle(buf);
                self.inbox.deliver(client, stale(conn));
            }
        }
    }

    fn pump_send(&mut self, slot: u32) {
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        if c.send_inflight || c.dead || c.connecting.is_some() {
            return;
        }
        let Some(front) = c.sends.front() else { return };
        let (ptr, len) = (
            front[c.send_off..].as_ptr(),
            (front.len() - c.send_off) as u32,
        );
        let sqe = opcode::Send::new(types::Fd(c.fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(TAG_SEND, slot));
        c.send_inflight = true;
        if !self.push_counted(&sqe) {
            if let Some(c) = self.conns.slot_mut(slot) {
                c.send_inflight = false;
            }
            self.fail_conn(slot, IoError::os("send", libc::EBUSY));
        }
    }

    fn arm_recv(&mut self, slot: u32) {
        let size = self.recv_size;
        let spare = self.spare.pop();
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        if c.recv_inflight || c.read_done || c.dead || c.shut || c.connecting.is_some() {
            return;
        }
        if c.recv_buf.capacity() < size {
            c.recv_buf = spare.unwrap_or_else(|| Vec::with_capacity(size));
        } else if let Some(s) = spare {
            self.spare.push(s);
        }
        let c = self.conns.slot_mut(slot).expect("checked above");
        c.recv_buf.clear();
        let ptr = c.recv_buf.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        let cap = c.recv_buf.capacity().min(u32::MAX as usize) as u32;
        let sqe = opcode::Recv::new(types::Fd(c.fd), ptr, cap)
            .build()
            .user_data(ud(TAG_RECV, slot));
        c.recv_inflight = true;
        if !self.push_counted(&sqe) {
            if let Some(c) = self.conns.slot_mut(slot) {
                c.recv_inflight = false;
            }
            self.fail_conn(slot, IoError::os("recv", libc::EBUSY));
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
        if c.sends.is_empty() && !c.send_inflight {
            self.shutdown_conn(conn.slot());
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

    fn fail_conn(&mut self, slot: u32, e: IoError) {
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        if c.dead {
            return;
        }
        c.dead = true;
        let owner = c.owner;
        let sends: Vec<_> = c.sends.drain(..).collect();
        for b in sends {
            self.recycle(b);
        }
        let conn = self.conns.id(slot);
        self.owners.deliver(
            &mut self.inbox,
            owner,
            NetEvent {
                conn,
                kind: NetEventKind::Error(e),
            },
        );
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
        let Some(c) = self.conns.remove(slot) else {
            return;
        };
        // SAFETY: nothing of this socket is in flight any more.
        unsafe { libc::close(c.fd) };
        self.recycle(c.recv_buf);
        for b in c.sends {
            self.recycle(b);
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
            sends: VecDeque::new(),
            send_off: 0,
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
        if !self.push_counted(&sqe) {
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
            // SAFETY: the connect is over; nothing else uses the socket.
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
            }
        }
        if res >= 0 {
            let fd = res;
            if self.listeners.get(index).is_none_or(|l| l.closed) {
                // SAFETY: a fresh socket nobody else owns.
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
            // SAFETY: the kernel initialised `res` bytes of spare capacity.
            unsafe { c.recv_buf.set_len(res as usize) };
            let data = std::mem::take(&mut c.recv_buf);
            let conn = self.conns.id(slot);
            self.owners.deliver(
                &mut self.inbox,
                owner,
                NetEvent {
                    conn,
                    kind: NetEventKind::Data(data),
                },
            );
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
        // Our own shutdown or a failure: finish.
        if c.sends.is_empty() && !c.send_inflight || c.dead {
            self.shutdown_conn(slot);
        } else {
            self.finish_if_done(slot);
        }
    }

    fn complete_send(&mut self, slot: u32, res: i32) {
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        c.send_inflight = false;
        if res < 0 {
            return self.fail_conn(slot, IoError::os("send", -res));
        }
        c.send_off += res as usize;
        let done = c.sends.front().is_some_and(|b| c.send_off >= b.len());
        if done {
            c.send_off = 0;
            let b = c.sends.pop_front().expect("front exists");
            self.recycle(b);
        }
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        if c.dead || c.sends.is_empty() && c.closing {
            return self.shutdown_conn(slot);
        }
        self.pump_send(slot);
        self.finish_if_done(slot);
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

impl Pausable for UConn {
    fn owner(&self) -> Owner {
        self.owner
    }
    fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }
}
