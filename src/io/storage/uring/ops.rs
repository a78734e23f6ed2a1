//! The storage worker's operations in flight: one plain type per opcode
//! family, each owning every byte its SQEs point to (see
//! `io/inflight.rs`). `start.rs` builds them, `complete.rs` finishes them.
//!
//! Every length an SQE carries is read from the op's own buffer when the
//! SQE is built, so no field value can make the kernel touch memory past
//! it: the `Owned` impls below are sound for any contents of their fields.

use super::group::Waiting;
use crate::io::IoBuf;
use crate::io::inflight::{Owned, Sqes};
use crate::io::kernel::Cqe;
use crate::io::storage::files::FileEntry;
use crate::io::storage::op::{Durability, FileId};
use io_uring::{opcode, squeue, types};
use std::ffi::CString;
use std::os::fd::RawFd;

/// The descriptor an op names: its registered-file index, or the fd.
#[derive(Clone, Copy, Debug)]
pub(super) struct Target {
    fd: RawFd,
    fixed: Option<u32>,
}

impl From<&FileEntry> for Target {
    fn from(f: &FileEntry) -> Self {
        Self {
            fd: f.fd,
            fixed: f.fixed,
        }
    }
}

/// Builds an SQE on `$target`'s descriptor, registered or not.
macro_rules! on {
    ($target:expr, |$fd:ident| $build:expr) => {
        match $target.fixed {
            Some(i) => {
                let $fd = types::Fixed(i);
                $build
            }
            None => {
                let $fd = types::Fd($target.fd);
                $build
            }
        }
    };
}

fn u32_len(len: usize) -> u32 {
    len.min(u32::MAX as usize) as u32
}

/// `openat` of an owned path; the file gets the id `id` (requests on it
/// wait meanwhile).
pub(super) struct OpenOp {
    pub(super) path: CString,
    pub(super) flags: i32,
    pub(super) mode: u32,
    pub(super) direct: bool,
    pub(super) id: FileId,
}

// SAFETY: the OpenAt reads the NUL-terminated path in the CString's heap
// bytes, which this op owns and never changes.
unsafe impl Owned for OpenOp {
    fn sqes(&mut self) -> Sqes {
        Sqes::One(
            opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
                .flags(self.flags)
                .mode(self.mode)
                .build(),
        )
    }
}

/// An `unlinkat` of a path.
pub(super) struct RemoveOp {
    pub(super) path: CString,
}

// SAFETY: the UnlinkAt reads the NUL-terminated path in the CString's heap
// bytes, which this op owns and never changes.
unsafe impl Owned for RemoveOp {
    fn sqes(&mut self) -> Sqes {
        Sqes::One(opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr()).build())
    }
}

/// A read of `buf.len()` bytes (the request's length, set by
/// `IoBuf::prepare_read`) into the op's buffer.
pub(super) struct ReadOp {
    pub(super) target: Target,
    pub(super) offset: u64,
    pub(super) buf: IoBuf,
    /// Its registered-buffer index, if it is one of this ring's.
    pub(super) fixed_buf: Option<u16>,
    pub(super) direct: bool,
}

// SAFETY: the read writes at most `buf.len()` bytes at `buf`'s start, the
// initialised bytes of a buffer this op owns: a vector's or an aligned
// allocation's heap memory, or a slot of the registered region, which
// outlives the ring (each `FixedBuf` keeps it alive too).
unsafe impl Owned for ReadOp {
    fn sqes(&mut self) -> Sqes {
        let len = u32_len(self.buf.len());
        let ptr = self.buf.mut_ptr();
        let offset = self.offset;
        Sqes::One(match self.fixed_buf {
            Some(bi) => on!(self.target, |fd| opcode::ReadFixed::new(fd, ptr, len, bi)
                .offset(offset)
                .build()),
            None => on!(self.target, |fd| opcode::Read::new(fd, ptr, len)
                .offset(offset)
                .build()),
        })
    }
}

/// A write of the op's buffer past its first `done` bytes (a short write
/// resubmits the rest as a new op).
pub(super) struct WriteOp {
    pub(super) file: FileId,
    pub(super) target: Target,
    pub(super) offset: u64,
    pub(super) buf: IoBuf,
    pub(super) done: usize,
    pub(super) durability: Durability,
    pub(super) fixed_buf: Option<u16>,
    pub(super) direct: bool,
}

/// The write SQE for `buf[done..]` at `offset + done`; `done` is clamped
/// to the buffer, so the SQE never reaches past it.
fn write_sqe(
    target: Target,
    offset: u64,
    buf: &IoBuf,
    done: usize,
    fixed_buf: Option<u16>,
) -> squeue::Entry {
    let done = done.min(buf.len());
    // In bounds: `done <= buf.len()`.
    let ptr = buf.ptr().wrapping_add(done);
    let len = u32_len(buf.len() - done);
    let offset = offset + done as u64;
    match fixed_buf {
        // A pointer inside a registered buffer is valid for WriteFixed.
        Some(bi) => on!(target, |fd| opcode::WriteFixed::new(fd, ptr, len, bi)
            .offset(offset)
            .build()),
        None => on!(target, |fd| opcode::Write::new(fd, ptr, len)
            .offset(offset)
            .build()),
    }
}

// SAFETY: the write reads at most the bytes of `buf` after its first
// `done`, inside a buffer this op owns (heap memory, or a slot of the
// registered region, which outlives the ring).
unsafe impl Owned for WriteOp {
    fn sqes(&mut self) -> Sqes {
        Sqes::One(write_sqe(
            self.target,
            self.offset,
            &self.buf,
            self.done,
            self.fixed_buf,
        ))
    }
}

/// A write linked (`IO_LINK`) to an `fdatasync`: durable only if both ran,
/// whole and linked. Each half's result is kept here until both are in
/// (the slab hands the op back with the last).
pub(super) struct LinkedWriteOp {
    pub(super) target: Target,
    pub(super) offset: u64,
    pub(super) buf: IoBuf,
    pub(super) fixed_buf: Option<u16>,
    pub(super) direct: bool,
    /// Each half's result once its CQE is in, and whether that CQE was
    /// made up for an SQE never submitted.
    pub(super) write: Option<(i32, bool)>,
    pub(super) sync: Option<(i32, bool)>,
    /// A partial submit took the write without its sync: they were not
    /// linked.
    pub(super) split: bool,
}

impl LinkedWriteOp {
    /// Books the result of one half (the second half's `user_data` is odd,
    /// see `InFlight`).
    pub(super) fn record(&mut self, cqe: &Cqe) {
        let result = Some((cqe.res(), cqe.refused()));
        if cqe.user_data() & 1 == 0 {
            self.write = result;
        } else {
            self.sync = result;
        }
    }
}

// SAFETY: the write reads at most `buf.len()` bytes of a buffer this op
// owns, which stays in the slab until both halves' CQEs are in (the
// kernel's last use of it, the write, completes before the sync's CQE);
// the fdatasync points to no memory; `progress` and `unlinked` only book
// results.
unsafe impl Owned for LinkedWriteOp {
    fn sqes(&mut self) -> Sqes {
        let write = write_sqe(self.target, self.offset, &self.buf, 0, self.fixed_buf);
        let sync = on!(self.target, |fd| opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build());
        Sqes::Linked(write, sync)
    }

    fn progress(&mut self, cqe: &Cqe) {
        self.record(cqe);
    }

    fn unlinked(&mut self) {
        self.split = true;
    }
}

/// A vectored write of the op's buffers; the iovec array is built, and
/// owned, by the op.
pub(super) struct WritevOp {
    pub(super) target: Target,
    pub(super) offset: u64,
    pub(super) bufs: Vec<IoBuf>,
    pub(super) iov: Vec<libc::iovec>,
    pub(super) total: usize,
    pub(super) direct: bool,
}

// SAFETY: the writev reads the iovec array this op owns (built here, on the
// heap, and never touched again), and each iovec describes exactly the
// bytes in use of one of the op's own `bufs` (heap memory, or
// registered-region slots, which outlive the ring).
unsafe impl Owned for WritevOp {
    fn sqes(&mut self) -> Sqes {
        self.iov = self
            .bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.ptr() as *mut _,
                iov_len: b.len(),
            })
            .collect();
        let (ptr, n) = (self.iov.as_ptr(), u32_len(self.iov.len()));
        Sqes::One(on!(self.target, |fd| opcode::Writev::new(fd, ptr, n)
            .offset(self.offset)
            .build()))
    }
}

/// `fsync`, or `fdatasync` with `data_only`.
pub(super) struct SyncOp {
    pub(super) target: Target,
    pub(super) data_only: bool,
}

// SAFETY: an Fsync points to no memory.
unsafe impl Owned for SyncOp {
    fn sqes(&mut self) -> Sqes {
        let flags = if self.data_only {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        Sqes::One(on!(self.target, |fd| opcode::Fsync::new(fd)
            .flags(flags)
            .build()))
    }
}

/// One `fdatasync` that makes a group of written writes durable.
pub(super) struct GroupSyncOp {
    pub(super) target: Target,
    pub(super) file: FileId,
    pub(super) waiters: Vec<Waiting>,
}

// SAFETY: an Fsync points to no memory (the waiters' buffers are already
// written; the kernel no longer uses them).
unsafe impl Owned for GroupSyncOp {
    fn sqes(&mut self) -> Sqes {
        Sqes::One(on!(self.target, |fd| opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()))
    }
}

/// `fallocate` of `len` bytes at `offset`.
pub(super) struct AllocateOp {
    pub(super) target: Target,
    pub(super) offset: u64,
    pub(super) len: u64,
}

// SAFETY: a Fallocate points to no memory.
unsafe impl Owned for AllocateOp {
    fn sqes(&mut self) -> Sqes {
        Sqes::One(on!(self.target, |fd| opcode::Fallocate::new(fd, self.len)
            .offset(self.offset)
            .build()))
    }
}

/// `ftruncate` to `len` bytes.
pub(super) struct SetLenOp {
    pub(super) target: Target,
    pub(super) len: u64,
}

// SAFETY: an Ftruncate points to no memory.
unsafe impl Owned for SetLenOp {
    fn sqes(&mut self) -> Sqes {
        Sqes::One(on!(self.target, |fd| opcode::Ftruncate::new(fd, self.len)
            .build()))
    }
}

/// `close` of a descriptor that has left the file table.
pub(super) struct CloseOp {
    pub(super) fd: RawFd,
}

// SAFETY: a Close points to no memory; the descriptor left the file table
// and nothing of it is in flight, so nothing else uses it.
unsafe impl Owned for CloseOp {
    fn sqes(&mut self) -> Sqes {
        Sqes::One(opcode::Close::new(types::Fd(self.fd)).build())
    }
}

/// What is in flight for one request.
pub(super) enum Kind {
    Open(OpenOp),
    Read(ReadOp),
    Write(WriteOp),
    Linked(LinkedWriteOp),
    Writev(WritevOp),
    Sync(SyncOp),
    GroupSync(GroupSyncOp),
    Allocate(AllocateOp),
    SetLen(SetLenOp),
    Remove(RemoveOp),
    Close(CloseOp),
}

/// A slab entry: the op and whom to answer.
pub(super) struct Pending {
    pub(super) client: u32,
    pub(super) token: u64,
    /// The file it works on, counted in the file table while the op is in
    /// the slab (a close waits for the count to reach 0).
    pub(super) file: Option<FileId>,
    pub(super) kind: Kind,
}

// SAFETY: forwards to the op's own impl, which owns what its SQEs point to.
unsafe impl Owned for Pending {
    fn sqes(&mut self) -> Sqes {
        match &mut self.kind {
            Kind::Open(o) => o.sqes(),
            Kind::Read(o) => o.sqes(),
            Kind::Write(o) => o.sqes(),
            Kind::Linked(o) => o.sqes(),
            Kind::Writev(o) => o.sqes(),
            Kind::Sync(o) => o.sqes(),
            Kind::GroupSync(o) => o.sqes(),
            Kind::Allocate(o) => o.sqes(),
            Kind::SetLen(o) => o.sqes(),
            Kind::Remove(o) => o.sqes(),
            Kind::Close(o) => o.sqes(),
        }
    }

    fn progress(&mut self, cqe: &Cqe) {
        if let Kind::Linked(o) = &mut self.kind {
            o.progress(cqe);
        }
    }

    fn unlinked(&mut self) {
        if let Kind::Linked(o) = &mut self.kind {
            o.unlinked();
        }
    }
}

impl Kind {
    /// The buffers it carries, to hand back.
    pub(super) fn into_bufs(self) -> (Option<IoBuf>, Vec<IoBuf>) {
        match self {
            Kind::Read(o) => (Some(o.buf), Vec::new()),
            Kind::Write(o) => (Some(o.buf), Vec::new()),
            Kind::Linked(o) => (Some(o.buf), Vec::new()),
            Kind::Writev(o) => (None, o.bufs),
            _ => (None, Vec::new()),
        }
    }
}
