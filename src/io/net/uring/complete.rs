//! The network worker's completions: each op comes back from the slab
//! with its last completion (a multishot accept also shows each earlier
//! one), and the connection it belongs to moves on.

use super::ops::{CancelOp, ConnectOp, NetOp, RecvOp, SendOp};
use super::sys::{peer_addr, set_nodelay};
use super::{NetEvent, NetEventKind, Owner, UringNet};
use crate::io::IoError;
use crate::io::inflight::Reaped;
use crate::io::kernel::Cqe;
use io_uring::cqueue;
use std::net::SocketAddr;

/// The error a failed completion stands for: the kernel's, or the broken
/// ring's for an SQE it never took.
fn error(cqe: &Cqe, op: &'static str) -> IoError {
    if cqe.refused() {
        IoError::not_submitted(-cqe.res())
    } else {
        IoError::os(op, -cqe.res())
    }
}

/// What to do with one completion, once the slab has booked it.
enum Step {
    Accepted { listener: usize, last: bool },
    Received { slot: u32, last: bool },
    Op(NetOp),
    Nothing,
}

impl UringNet {
    /// Tells connection `slot`'s owner `kind`.
    fn tell_owner(&mut self, slot: u32, owner: Owner, kind: NetEventKind) {
        let conn = self.conns.id(slot);
        self.owners
            .deliver(&mut self.inbox, owner, NetEvent { conn, kind });
    }

    pub(super) fn reap(&mut self) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        let n = self.ring.reap(&mut cqes);
        for cqe in cqes.drain(..) {
            let step = match self.ops.reaped(&cqe) {
                Reaped::More(NetOp::Accept(a)) => Step::Accepted {
                    listener: a.listener,
                    last: false,
                },
                Reaped::Last(NetOp::Accept(a)) => Step::Accepted {
                    listener: a.listener,
                    last: true,
                },
                Reaped::More(NetOp::RecvMulti(r)) => Step::Received {
                    slot: r.slot,
                    last: false,
                },
                Reaped::Last(NetOp::RecvMulti(r)) => Step::Received {
                    slot: r.slot,
                    last: true,
                },
                Reaped::Last(op) => Step::Op(op),
                Reaped::More(_) | Reaped::Unknown => Step::Nothing,
            };
            match step {
                Step::Accepted { listener, last } => self.complete_accept(listener, &cqe, last),
                Step::Received { slot, last } => self.complete_recv_multi(slot, &cqe, last),
                Step::Op(NetOp::Recv(op)) => self.complete_recv(op, &cqe),
                Step::Op(NetOp::Send(op)) => self.complete_send(op, &cqe),
                Step::Op(NetOp::Connect(op)) => {
                    self.complete_connect(op, cqe.res().min(0), || error(&cqe, "connect"))
                }
                Step::Op(NetOp::Cancel(_) | NetOp::Accept(_) | NetOp::RecvMulti(_))
                | Step::Nothing => {}
            }
        }
        self.cqes = cqes;
        n
    }

    fn complete_accept(&mut self, index: usize, cqe: &Cqe, last: bool) {
        let res = cqe.res();
        if last && let Some(l) = self.listeners.get_mut(index) {
            l.accept = None;
            if l.closed {
                self.release_listener(index);
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
        if last && res != -libc::ECANCELED {
            self.arm_accept(index);
        }
    }

    fn complete_recv(&mut self, op: RecvOp, cqe: &Cqe) {
        let res = cqe.res();
        let (slot, max_backlog) = (op.slot, self.max_backlog);
        let Some(c) = self.conns.slot_mut(slot) else {
            return self.recycle(op.buf);
        };
        c.recv_inflight = false;
        let owner = c.owner;
        if res > 0 && !c.dead {
            let data = op.received(res as usize);
            let shut = c.shut;
            self.tell_owner(slot, owner, NetEventKind::Data(data));
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
        // The buffer is the connection's again, for its next receive.
        c.recv_buf = op.buf;
        if res < 0 && !c.shut && res != -libc::ECANCELED {
            return self.fail_conn(slot, error(cqe, "recv"));
        }
        if res == 0 && !c.shut && !c.dead {
            // The peer finished sending (EOF, possibly a half-close): tell
            // the owner, stop reading, and keep the connection open for
            // replies until the owner closes it.
            c.read_done = true;
            return self.tell_owner(slot, owner, NetEventKind::PeerClosed);
        }
        // Our own shutdown or a failure ended the receiving side: finish
        // after what is queued is sent (or at once, if dead).
        c.closing = true;
        self.settle(slot);
    }

    /// A multishot receive's completion: data in a provided buffer (copied
    /// out, the buffer returned at once), or its end.
    fn complete_recv_multi(&mut self, slot: u32, cqe: &Cqe, last: bool) {
        let res = cqe.res();
        let data = match (res > 0, cqueue::buffer_select(cqe.flags_raw())) {
            (true, Some(bid)) => self.bufs.as_mut().and_then(|b| b.take(bid, res as usize)),
            _ => None,
        };
        let max_backlog = self.max_backlog;
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        if last {
            c.recv_inflight = false;
            c.recv_multi = None;
        }
        let owner = c.owner;
        if res > 0 {
            let Some(data) = data else {
                return self.fail_conn(slot, IoError::os("recv", libc::EIO));
            };
            if c.dead {
                return self.settle(slot);
            }
            self.tell_owner(slot, owner, NetEventKind::Data(data));
            let Some(c) = self.conns.slot_mut(slot) else {
                return;
            };
            if c.shut {
                return self.settle(slot);
            }
            if !c.paused && self.owners.backlog(&mut self.inbox, owner) >= max_backlog {
                // Backpressure: stop the receive (what it already took
                // still arrives) until the owner drains.
                if let Some(c) = self.conns.slot_mut(slot) {
                    c.paused = true;
                    if let Some(target) = c.recv_multi {
                        let _ = self.submit(NetOp::Cancel(CancelOp { target }));
                    }
                }
                self.paused.push(slot);
            } else if last {
                self.arm_recv(slot);
            }
            return;
        }
        match res {
            // Out of buffers (they are back now) or cancelled by a pause:
            // receive again unless paused.
            _ if res == -libc::ENOBUFS || res == -libc::ECANCELED => {
                if c.shut || c.dead {
                    c.closing = true;
                    self.settle(slot);
                } else if last {
                    self.arm_recv(slot);
                }
            }
            // A kernel with provided-buffer rings but no multishot receive:
            // every connection uses a buffer of its own from now on.
            _ if res == -libc::EINVAL && last && !c.shut && !c.dead => {
                if let Some(bufs) = self.bufs.take() {
                    tracing::info!(
                        "io_uring has no multishot receive here: one buffer per connection"
                    );
                    // Receives of other connections may still hold it.
                    self.retired.push(bufs);
                }
                self.arm_recv(slot);
            }
            0 if !c.shut && !c.dead => {
                // EOF, as in `complete_recv`.
                c.read_done = true;
                self.tell_owner(slot, owner, NetEventKind::PeerClosed);
            }
            _ if res < 0 && !c.shut => self.fail_conn(slot, error(cqe, "recv")),
            _ => {
                c.closing = true;
                self.settle(slot);
            }
        }
    }

    fn complete_send(&mut self, mut op: SendOp, cqe: &Cqe) {
        let res = op.result(cqe);
        op.sent = None;
        let slot = op.slot;
        let Some(c) = self.conns.slot_mut(slot) else {
            return self.recycle(op.buf);
        };
        c.sending = None;
        if res < 0 {
            self.recycle(op.buf);
            let e = if cqe.refused() {
                IoError::not_submitted(-res)
            } else {
                IoError::os("send", -res)
            };
            return self.fail_conn(slot, e);
        }
        self.inbox.shared.stats.bytes_out.add(res as u64);
        op.off += res as usize;
        if op.rest() > 0 {
            if c.dead || c.shut {
                self.recycle(op.buf);
            } else {
                // A short send: the rest goes next, before anything queued.
                self.start_send(op);
            }
        } else {
            let queued = c.sends.bytes();
            let conn = self.conns.id(slot);
            let notify = op.notify;
            self.recycle(op.buf);
            if let Some((client, tag)) = notify {
                let kind = NetEventKind::Sent { tag, queued };
                self.inbox.deliver(client, NetEvent { conn, kind });
            }
        }
        self.pump_send(slot);
        self.settle(slot);
    }

    /// `res` is the connect's result, `-errno` or 0; `error` makes its
    /// error.
    pub(super) fn complete_connect(
        &mut self,
        op: ConnectOp,
        res: i32,
        error: impl FnOnce() -> IoError,
    ) {
        let (slot, token) = (op.slot, op.token);
        let conn = self.conns.id(slot);
        let Some(c) = self.conns.slot_mut(slot) else {
            return;
        };
        c.connecting = false;
        let owner = c.owner;
        if res < 0 {
            let Some(c) = self.conns.remove(slot) else {
                return;
            };
            // SAFETY: closes the socket the removed entry owned; a
            // connecting socket has nothing else in flight (receives and
            // sends start only once it is connected).
            unsafe { libc::close(c.fd) };
            let kind = NetEventKind::ConnectFailed {
                token,
                error: error(),
            };
            // The slot is gone: name the connection by the id it had.
            return self
                .owners
                .deliver(&mut self.inbox, owner, NetEvent { conn, kind });
        }
        self.tell_owner(slot, owner, NetEventKind::Connected { token });
        self.arm_recv(slot);
        self.pump_send(slot);
        // Closed while connecting: finish now that the connect is over.
        self.settle(slot);
    }
}
