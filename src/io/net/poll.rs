//! The fallback network backend: non-blocking sockets and epoll, through
//! `mio`. Same requests, same events, same ordering guarantees as the
//! io_uring backend; the system calls happen on the worker's thread.

use super::conn::{Conns, Owner, Owners, Pausable, resumable, stale};
use super::local::{Backend, Round, Rounds};
use super::sendq::{Outgoing, SendQueue, admits};
use super::uring::set_nodelay;
use super::{ConnId, Control, NetConfig, NetEvent, NetEventKind, NetRequest, NetShared};
use crate::io::IoError;
use crate::io::inbox::Inbox;
use crate::io::nap::BacklogNap;
use crate::io::wake::EventFd;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const WAKE: Token = Token(usize::MAX);
/// Receives per connection per round (see `PollNet::read`).
const READ_BUDGET: usize = 16;
/// Listener tokens count up from here; connection tokens are slots.
const LISTENER_BASE: usize = usize::MAX / 2;

struct PConn {
    stream: TcpStream,
    owner: Owner,
    sends: SendQueue,
    send_off: usize,
    closing: bool,
    /// The peer sent EOF: no more reads.
    read_done: bool,
    paused: bool,
    /// The application paused reading (`NetClient::pause_reading`).
    held: bool,
    connecting: Option<u64>,
}

pub(super) struct PollNet {
    poll: Poll,
    inbox: Inbox<NetRequest, NetEvent>,
    /// How long to sleep while results wait for room (see `nap.rs`).
    nap: BacklogNap,
    control: Arc<Control>,
    owners: Owners,
    /// `None` once closed (or if it could not be registered).
    listeners: Vec<Option<TcpListener>>,
    conns: Conns<PConn>,
    waker: Arc<EventFd>,
    recv_size: usize,
    max_backlog: usize,
    /// Unsent bytes a connection may hold (`NetConfig::send_queue_limit`).
    send_limit: usize,
    paused: Vec<u32>,
    /// Connections that used their read budget with data still waiting
    /// (edge-triggered: no new event will come), read again next round.
    readable: Vec<u32>,
    requests: Vec<(u32, NetRequest)>,
    /// Reused by every poll.
    events: Events,
}

impl PollNet {
    pub(super) fn new(
        index: usize,
        config: &NetConfig,
        shared: Arc<NetShared>,
        control: Arc<Control>,
        waker: Arc<EventFd>,
    ) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&waker.as_raw_fd()), WAKE, Interest::READABLE)?;
        Ok(Self {
            poll,
            inbox: Inbox::new(shared),
            nap: BacklogNap::default(),
            control,
            owners: Owners::new(),
            listeners: Vec::new(),
            conns: Conns::new(index),
            waker,
            recv_size: config.recv_buffer.max(512),
            max_backlog: config.max_backlog.max(1),
            send_limit: config.send_queue_limit,
            paused: Vec::new(),
            readable: Vec::new(),
            requests: Vec::new(),
            events: Events::with_capacity(256),
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
            if r.worked {
                continue;
            }
            self.sleep(r.most);
        }
        self.shut_down();
        let owners = &mut self.owners;
        self.inbox.finish_delivering(&drained, || owners.flush());
    }
}

impl Backend for PollNet {
    fn sleep(&mut self, most: Option<std::time::Duration>) {
        let shared = self.inbox.shared.clone();
        let control = self.control.clone();
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let poll = &mut self.poll;
        let inbox = &mut self.inbox;
        let readable = !self.readable.is_empty();
        shared.signal.sleep_unless(
            || readable || inbox.has_requests() || control.has_work(),
            || {
                let _ = poll.poll(&mut events, most);
            },
        );
        self.handle(&events);
        events.clear();
        self.events = events;
    }
}

impl Rounds for PollNet {
    /// One loop round: listeners, requests, a non-blocking poll, events,
    /// deliveries.
    fn round(&mut self) -> Round {
        self.inbox.accept_joining();
        self.take_listeners();
        let stopping = self.inbox.shared.stop.load(Ordering::Acquire);
        let took = if stopping { 0 } else { self.take_requests() };
        self.resume_paused();
        for slot in std::mem::take(&mut self.readable) {
            self.read(slot);
        }
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let _ = self.poll.poll(&mut events, Some(std::time::Duration::ZERO));
        let got = !events.is_empty();
        self.handle(&events);
        self.events = events;
        let backlog = self.flush();
        Round {
            worked: took > 0 || got || !self.readable.is_empty(),
            stopping,
            most: self.nap.limit(backlog),
        }
    }

    fn ready(&mut self) -> bool {
        !self.readable.is_empty() || self.inbox.has_requests() || self.control.has_work()
    }

    fn wait(&mut self, most: Option<std::time::Duration>) {
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let _ = self.poll.poll(&mut events, most);
        self.handle(&events);
        events.clear();
        self.events = events;
    }

    fn attach(&mut self, _eventfd: std::os::fd::RawFd) -> bool {
        // epoll has no completions to signal: the worker's nap bounds it.
        false
    }

    fn busy(&self) -> bool {
        // Readiness of any socket or listener is only seen by polling.
        !self.conns.slots().is_empty() || self.listeners.iter().any(Option::is_some)
    }

    fn flush(&mut self) -> usize {
        super::conn::flush_all(&mut self.owners, &mut self.inbox)
    }

    /// Closes every connection and listener and answers what waits.
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
        for slot in self.conns.slots() {
            self.finish(slot);
        }
        for i in 0..self.listeners.len() {
            self.close_listener(i);
        }
        for (_, done) in std::mem::take(&mut *self.control.closing.lock()) {
            let _ = done.send(());
        }
    }
}

impl PollNet {
    fn handle(&mut self, events: &Events) {
        for ev in events {
            match ev.token() {
                WAKE => self.waker.drain(),
                Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE),
                Token(slot) => {
                    let slot = slot as u32;
                    if ev.is_writable() {
                        self.writable(slot);
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        self.read(slot);
                    }
                }
            }
        }
    }

    fn take_listeners(&mut self) {
        let new: Vec<_> = std::mem::take(&mut *self.control.listeners.lock());
        for l in new {
            let (index, socket) = self.owners.add_listener(l);
            let mut socket = TcpListener::from_std(socket);
            let token = Token(LISTENER_BASE + index);
            // Indexed like `owners.listeners`: a socket that cannot be
            // registered keeps its place, closed.
            if self
                .poll
                .registry()
                .register(&mut socket, token, Interest::READABLE)
                .is_ok()
            {
                self.listeners.push(Some(socket));
                // Connections may already be waiting.
                self.accept(index);
            } else {
                self.listeners.push(None);
            }
        }
        let closing: Vec<_> = std::mem::take(&mut *self.control.closing.lock());
        for (local, done) in closing {
            if let Some(i) = self.owners.listener_at(local) {
                self.close_listener(i);
            }
            let _ = done.send(());
        }
    }

    /// Deregisters and closes listener `index`.
    fn close_listener(&mut self, index: usize) {
        if let Some(mut socket) = self.listeners.get_mut(index).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut socket);
        }
    }

    fn accept(&mut self, index: usize) {
        loop {
            let Some(Some(l)) = self.listeners.get(index) else {
                return;
            };
            match l.accept() {
                Ok((stream, peer)) => {
                    set_nodelay(stream.as_raw_fd());
                    let local = self.owners.listeners[index].local;
                    let owner = self.owners.pick(index);
                    let Some(conn) = self.register(stream, owner, None) else {
                        continue;
                    };
                    self.owners.deliver(
                        &mut self.inbox,
                        owner,
                        NetEvent {
                            conn,
                            kind: NetEventKind::Accepted { peer, local },
                        },
                    );
                    self.read(conn.slot());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // EMFILE, ECONNABORTED: this connection is lost, the listener is not.
                Err(_) => return,
            }
        }
    }

    fn register(
        &mut self,
        stream: TcpStream,
        owner: Owner,
        connecting: Option<u64>,
    ) -> Option<ConnId> {
        let conn = self.conns.insert(PConn {
            stream,
            owner,
            sends: SendQueue::default(),
            send_off: 0,
            closing: false,
            read_done: false,
            paused: false,
            held: false,
            connecting,
        });
        let c = self.conns.slot_mut(conn.slot())?;
        let token = Token(conn.slot() as usize);
        let r = self.poll.registry().register(
            &mut c.stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        );
        if r.is_err() {
            self.conns.remove(conn.slot());
            return None;
        }
        Some(conn)
    }

    fn take_requests(&mut self) -> usize {
        let mut batch = std::mem::take(&mut self.requests);
        let n = self.inbox.drain(256, |c, r| batch.push((c, r)));
        for (client, req) in batch.drain(..) {
            match req {
                NetRequest::Send { conn, buf, tag } => match self.conns.get_mut(conn) {
                    Some(c) if !c.closing => {
                        let queued = c.sends.bytes() - c.send_off;
                        if admits(queued, buf.len(), self.send_limit) {
                            c.sends.push_back(Outgoing {
                                buf,
                                notify: tag.map(|t| (client, t)),
                            });
                            self.writable(conn.slot());
                        } else {
                            let kind = NetEventKind::SendRefused { buf, tag, queued };
                            self.inbox.deliver(client, NetEvent { conn, kind });
                        }
                    }
                    _ => self.inbox.deliver(client, stale(conn)),
                },
                NetRequest::Close { conn } => match self.conns.get_mut(conn) {
                    Some(c) => {
                        c.closing = true;
                        if c.sends.is_empty() {
                            self.finish(conn.slot());
                        }
                    }
                    None => self.inbox.deliver(client, stale(conn)),
                },
                NetRequest::Reading { conn, on } => match self.conns.get_mut(conn) {
                    Some(c) => {
                        let resume = c.held && on;
                        c.held = !on;
                        // Edge-triggered: what arrived while held raised
                        // no new event, so read it now.
                        if resume {
                            self.read(conn.slot());
                        }
                    }
                    None => self.inbox.deliver(client, stale(conn)),
                },
                NetRequest::Connect { addr, token } => match TcpStream::connect(addr) {
                    Ok(stream) => {
                        set_nodelay(stream.as_raw_fd());
                        if self
                            .register(stream, Owner::Client(client), Some(token))
                            .is_none()
                        {
                            let error = IoError::os("connect", libc::ENOMEM);
                            let ev = NetEvent {
                                conn: ConnId(u64::MAX),
                                kind: NetEventKind::ConnectFailed { token, error },
                            };
                            self.inbox.deliver(client, ev);
                        }
                    }
                    Err(e) => {
                        let error = IoError::from_io("connect", e);
                        let ev = NetEvent {
                            conn: ConnId(u64::MAX),
                            kind: NetEventKind::ConnectFailed { token, error },
                        };
                        self.inbox.deliver(client, ev);
                    }
                },
            }
        }
        self.requests = batch;
        n
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
            self.read(slot);
        }
    }

    /// Reads `slot` until it would block, its owner is backlogged, or it
    /// used [`READ_BUDGET`] receives (then it goes on next round, after
    /// requests: a fast sender neither starves the other connections nor
    /// delays a `pause_reading`).
    fn read(&mut self, slot: u32) {
        for _ in 0..READ_BUDGET {
            let Some(c) = self.conns.slot_mut(slot) else {
                return;
            };
            if c.paused || c.held || c.read_done || c.connecting.is_some() {
                return;
            }
            let owner = c.owner;
            let mut buf = Vec::with_capacity(self.recv_size);
            // SAFETY: reads at most `capacity` bytes into the spare capacity.
            let n = unsafe {
                libc::recv(
                    c.stream.as_raw_fd(),
                    buf.spare_capacity_mut().as_mut_ptr().cast(),
                    buf.capacity(),
                    0,
                )
            };
            let conn = self.conns.id(slot);
            if n > 0 {
                // SAFETY: the kernel initialised `n` bytes.
                unsafe { buf.set_len(n as usize) };
                self.owners.deliver(
                    &mut self.inbox,
                    owner,
                    NetEvent {
                        conn,
                        kind: NetEventKind::Data(buf),
                    },
                );
                if self.owners.backlog(&mut self.inbox, owner) >= self.max_backlog {
                    if let Some(c) = self.conns.slot_mut(slot) {
                        c.paused = true;
                    }
                    self.paused.push(slot);
                    return;
                }
                continue;
            }
            if n == 0 {
                // The peer finished sending (EOF, possibly a half-close):
                // tell the owner and keep the connection open for replies
                // until the owner closes it.
                if let Some(c) = self.conns.slot_mut(slot) {
                    c.read_done = true;
                }
                let ev = NetEvent {
                    conn,
                    kind: NetEventKind::PeerClosed,
                };
                self.owners.deliver(&mut self.inbox, owner, ev);
                return;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                ErrorKind::WouldBlock => return,
                ErrorKind::Interrupted => continue,
                _ => return self.fail(slot, IoError::from_io("recv", e)),
            }
        }
        // Budget used, data may still wait: next round.
        if !self.readable.contains(&slot) {
            self.readable.push(slot);
        }
    }

    fn writable(&mut self, slot: u32) {
        let conn = self.conns.id(slot);
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        if let Some(token) = c.connecting {
            // A connect finished (or failed) when the socket turns writable.
            match c.stream.take_error() {
                Ok(None) if c.stream.peer_addr().is_ok() => {
                    c.connecting = None;
                    let owner = c.owner;
                    self.owners.deliver(
                        &mut self.inbox,
                        owner,
                        NetEvent {
                            conn,
                            kind: NetEventKind::Connected { token },
                        },
                    );
                    self.read(slot);
                }
                Ok(None) => return, // not connected yet
                Ok(Some(e)) | Err(e) => {
                    let c = self.conns.remove(slot).expect("present");
                    let _ = self.poll.registry().deregister(&mut { c.stream });
                    let error = IoError::from_io("connect", e);
                    self.owners.deliver(
                        &mut self.inbox,
                        c.owner,
                        NetEvent {
                            conn,
                            kind: NetEventKind::ConnectFailed { token, error },
                        },
                    );
                    return;
                }
            }
        }
        loop {
            let Some(c) = self.conns.slot_mut(slot) else {
                return;
            };
            let Some(front) = c.sends.front() else {
                if c.closing {
                    self.finish(slot);
                }
                return;
            };
            let rest = &front.buf[c.send_off..];
            // SAFETY: sends from a live slice; MSG_NOSIGNAL turns SIGPIPE into EPIPE.
            let n = unsafe {
                libc::send(
                    c.stream.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                self.inbox.shared.stats.bytes_out.add(n as u64);
                c.send_off += n as usize;
                if c.send_off >= front.buf.len() {
                    c.send_off = 0;
                    let done = c.sends.pop_front().expect("the front");
                    if let Some((client, tag)) = done.notify {
                        let queued = c.sends.bytes();
                        let kind = NetEventKind::Sent { tag, queued };
                        self.inbox.deliver(client, NetEvent { conn, kind });
                    }
                }
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                ErrorKind::WouldBlock => return,
                ErrorKind::Interrupted => continue,
                _ => return self.fail(slot, IoError::from_io("send", e)),
            }
        }
    }

    fn fail(&mut self, slot: u32, e: IoError) {
        let conn = self.conns.id(slot);
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        let owner = c.owner;
        self.owners.deliver(
            &mut self.inbox,
            owner,
            NetEvent {
                conn,
                kind: NetEventKind::Error(e),
            },
        );
        self.finish(slot);
    }

    fn finish(&mut self, slot: u32) {
        let conn = self.conns.id(slot);
        let Some(mut c) = self.conns.remove(slot) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        if c.connecting.is_none() {
            self.owners.deliver(
                &mut self.inbox,
                c.owner,
                NetEvent {
                    conn,
                    kind: NetEventKind::Closed,
                },
            );
        }
    }
}

impl Pausable for PConn {
    fn owner(&self) -> Owner {
        self.owner
    }
    fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }
}
