//! The network worker's operations in flight: one plain type per opcode,
//! each owning every byte its SQE points to (see `io/inflight.rs`). A
//! connection's buffers move into its receive or send op while the kernel
//! may use them, and back out only with the op's last completion, so
//! failing or shutting a connection down never holds them.

use crate::io::inflight::{Owned, Sqes};
use crate::io::kernel::Cqe;
use io_uring::{opcode, types};
use std::os::fd::RawFd;

/// Multishot accept on a listener; its socket stays open in the worker's
/// listener table until this op's last completion.
pub(super) struct AcceptOp {
    pub(super) listener: usize,
    pub(super) fd: RawFd,
}

// SAFETY: a multishot accept without an address points to no memory.
unsafe impl Owned for AcceptOp {
    fn sqes(&mut self) -> Sqes {
        Sqes::One(opcode::AcceptMulti::new(types::Fd(self.fd)).build())
    }
}

/// A receive into the spare capacity of the op's buffer.
pub(super) struct RecvOp {
    pub(super) slot: u32,
    pub(super) fd: RawFd,
    /// Empty while in flight; the kernel writes its spare capacity.
    pub(super) buf: Vec<u8>,
}

// SAFETY: the receive writes at most the spare capacity of a heap buffer
// this op owns, starting right after its initialised bytes.
unsafe impl Owned for RecvOp {
    fn sqes(&mut self) -> Sqes {
        let spare = self.buf.spare_capacity_mut();
        let len = spare.len().min(u32::MAX as usize) as u32;
        let ptr = spare.as_mut_ptr().cast::<u8>();
        Sqes::One(opcode::Recv::new(types::Fd(self.fd), ptr, len).build())
    }
}

impl RecvOp {
    /// The buffer with the `res` bytes the kernel received.
    pub(super) fn received(mut self, res: usize) -> Vec<u8> {
        let n = res.min(self.buf.capacity() - self.buf.len());
        // SAFETY: the receive is reaped, and the kernel initialised `res`
        // bytes of the spare capacity it was given (at most all of it).
        unsafe { self.buf.set_len(self.buf.len() + n) };
        self.buf
    }
}

/// A multishot receive from the provided-buffer ring `bgid`: each
/// completion names the buffer the kernel filled (see `bufring.rs`).
pub(super) struct RecvMultiOp {
    pub(super) slot: u32,
    pub(super) fd: RawFd,
    pub(super) bgid: u16,
}

// SAFETY: a buffer-select receive points to no memory of ours: the kernel
// picks buffers from the registered ring, which the worker keeps (or
// leaks) until no receive is in flight.
unsafe impl Owned for RecvMultiOp {
    fn sqes(&mut self) -> Sqes {
        Sqes::One(opcode::RecvMulti::new(types::Fd(self.fd), self.bgid).build())
    }
}

/// A send of the op's buffer past its first `off` bytes; `notify` is told
/// `Sent` once all of it has gone. With `zc` it is a zero-copy send
/// (`IORING_OP_SEND_ZC`): the kernel reads the buffer until its second
/// completion, the notification, so the op (and the buffer) stays in the
/// slab until then; the first completion's result is kept in `sent`.
pub(super) struct SendOp {
    pub(super) slot: u32,
    pub(super) fd: RawFd,
    pub(super) buf: Vec<u8>,
    pub(super) off: usize,
    pub(super) notify: Option<(u32, u64)>,
    pub(super) zc: bool,
    /// A zero-copy send's result, once its first completion is in.
    pub(super) sent: Option<i32>,
}

impl SendOp {
    /// Bytes still to send.
    pub(super) fn rest(&self) -> usize {
        self.buf.len().saturating_sub(self.off)
    }

    /// The send's result: the first completion's for a zero-copy send
    /// (its last is the notification), else the last's.
    pub(super) fn result(&self, last: &Cqe) -> i32 {
        match self.sent {
            Some(res) if last.notif() => res,
            _ => last.res(),
        }
    }
}

// SAFETY: the send reads at most the bytes of a heap buffer this op owns
// after its first `off` (clamped to the buffer); a zero-copy send reads it
// until its notification, which is its last completion (the slab keeps the
// op until then); `progress` only books the result.
unsafe impl Owned for SendOp {
    fn sqes(&mut self) -> Sqes {
        let rest = &self.buf[self.off.min(self.buf.len())..];
        let len = rest.len().min(u32::MAX as usize) as u32;
        let fd = types::Fd(self.fd);
        Sqes::One(if self.zc {
            opcode::SendZc::new(fd, rest.as_ptr(), len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            opcode::Send::new(fd, rest.as_ptr(), len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        })
    }

    fn progress(&mut self, cqe: &Cqe) {
        if !cqe.notif() {
            self.sent = Some(cqe.res());
        }
    }
}

/// A connect to a boxed address.
pub(super) struct ConnectOp {
    pub(super) slot: u32,
    pub(super) fd: RawFd,
    pub(super) addr: Box<libc::sockaddr_storage>,
    pub(super) len: libc::socklen_t,
    pub(super) token: u64,
}

// SAFETY: the connect reads at most `size_of::<sockaddr_storage>()` bytes
// of the boxed address this op owns (the length is clamped to it).
unsafe impl Owned for ConnectOp {
    fn sqes(&mut self) -> Sqes {
        let most = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let ptr = (&raw const *self.addr).cast::<libc::sockaddr>();
        Sqes::One(opcode::Connect::new(types::Fd(self.fd), ptr, self.len.min(most)).build())
    }
}

/// Cancels the op whose first SQE had `target` as its `user_data`.
pub(super) struct CancelOp {
    pub(super) target: u64,
}

// SAFETY: an AsyncCancel points to no memory.
unsafe impl Owned for CancelOp {
    fn sqes(&mut self) -> Sqes {
        Sqes::One(opcode::AsyncCancel::new(self.target).build())
    }
}

/// An op in flight on the network ring.
pub(super) enum NetOp {
    Accept(AcceptOp),
    Recv(RecvOp),
    RecvMulti(RecvMultiOp),
    Send(SendOp),
    Connect(ConnectOp),
    Cancel(CancelOp),
}

// SAFETY: forwards to the op's own impl, which owns what its SQE points to.
unsafe impl Owned for NetOp {
    fn sqes(&mut self) -> Sqes {
        match self {
            NetOp::Accept(o) => o.sqes(),
            NetOp::Recv(o) => o.sqes(),
            NetOp::RecvMulti(o) => o.sqes(),
            NetOp::Send(o) => o.sqes(),
            NetOp::Connect(o) => o.sqes(),
            NetOp::Cancel(o) => o.sqes(),
        }
    }

    fn progress(&mut self, cqe: &Cqe) {
        if let NetOp::Send(o) = self {
            o.progress(cqe);
        }
    }
}
