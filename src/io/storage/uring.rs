//! The io_uring storage backend.
//!
//! One ring per worker, created on the worker's thread (single issuer).
//! Each loop round takes as many requests as the ring has room for, pushes
//! their SQEs, submits them with one `io_uring_enter`, and reaps every
//! completion that is ready. With nothing to do the worker sleeps in
//! `io_uring_enter` waiting for one completion; a read on the eventfd that
//! clients' pushes write is always in flight, so a new request wakes it.
//!
//! Every buffer, iovec array and path a submitted SQE points to is owned by
//! that request's [`Op`] in the in-flight slab until its completion is
//! reaped: an op goes into the slab first, and its SQE is built from the
//! op's own memory there ([`UringStorage::push_op`]). The worker does not
//! exit while any is in flight: the kernel never sees freed memory.
//!
//! A linked write+`fdatasync` goes into the ring as one pair or not at all
//! (a request that does not fit waits for the next round); a write is
//! reported durable only if its sync ran linked after it. A submit that
//! fails for good fails the requests it did not take with
//! [`IoError::NotSubmitted`] (see [`KernelRing`]).

use super::StorageConfig;
use super::StorageShared;
use super::blocking::clone_error;
use super::files::{
    FileEntry, FileIds, FileTable, Parked, check_direct, direct_einval, pwrite_all,
};
use super::op::{Durability, FileId, StorageCompletion, StorageOp, StorageOutput, StorageRequest};
use crate::io::buf::FixedRegion;
use crate::io::inbox::Inbox;
use crate::io::kernel::{KernelRing, NOT_SUBMITTED};
use crate::io::nap::BacklogNap;
use crate::io::wake::EventFd;
use crate::io::{IoBuf, IoError};
use io_uring::{opcode, squeue, types};
use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Registered-file table size.
const FIXED_FILES: u32 = 1024;
/// Buffered writes up to this size are copied into the page cache by a
/// plain `pwrite` on the worker's thread instead of going through the
/// ring: ext4 cannot do an extending buffered write without blocking, so
/// io_uring hands such writes to a kernel worker thread, which measured
/// twice as slow for small appends (benches/io.rs, `SN_IO_EXPERIMENT=append`).
/// The sync that makes them durable still goes through the ring.
const INLINE_WRITE_MAX: usize = 64 * 1024;

/// A durable write whose data is written, waiting for a sync.
struct Waiting {
    client: u32,
    token: u64,
    buf: IoBuf,
    written: usize,
}

enum Kind {
    Open {
        path: CString,
        direct: bool,
        /// The id the file will have (requests on it wait meanwhile).
        id: FileId,
    },
    Read {
        buf: IoBuf,
        direct: bool,
    },
    Write {
        file: FileId,
        offset: u64,
        buf: IoBuf,
        done: usize,
        durability: Durability,
        direct: bool,
    },
    /// The write half of a linked write+fdatasync; its result goes to the
    /// sync half's slot.
    LinkedWrite {
        sync: usize,
    },
    /// Each half's result once its CQE is in, and whether that CQE was
    /// made up for an SQE never submitted.
    LinkedSync {
        buf: IoBuf,
        len: usize,
        write: Option<(i32, bool)>,
        sync: Option<(i32, bool)>,
        direct: bool,
        /// A partial submit took the write without its sync: they were
        /// not linked.
        split: bool,
    },
    Writev {
        bufs: Vec<IoBuf>,
        /// Points into `bufs`.
        iov: Vec<libc::iovec>,
        total: usize,
        direct: bool,
    },
    Sync {
        data_only: bool,
    },
    GroupSync {
        file: u64,
        waiters: Vec<Waiting>,
    },
    Allocate,
    Close,
}

struct Op {
    client: u32,
    token: u64,
    /// The file it works on, counted in the file table while the op is in
    /// the slab (a close waits for the count to reach 0).
    file: Option<FileId>,
    kind: Kind,
}

#[derive(Default)]
struct Group {
    ready: Vec<Waiting>,
    syncing: bool,
}

pub(super) struct UringStorage {
    index: usize,
    ring: KernelRing,
    inbox: Inbox<StorageRequest, StorageCompletion>,
    /// How long to sleep while results wait for room (see `nap.rs`).
    nap: BacklogNap,
    files: FileTable,
    ops: Vec<Option<Op>>,
    free: Vec<usize>,
    in_flight: usize,
    max_in_flight: usize,
    groups: HashMap<u64, Group>,
    /// Requests taken that found no room in the ring; started first next
    /// round.
    deferred: VecDeque<(u32, StorageRequest)>,
    /// Requests whose file has just opened, to start before new ones.
    unparked: Vec<Parked>,
    fixed: Option<Arc<FixedRegion>>,
    fixed_files: bool,
    requests: Vec<(u32, StorageRequest)>,
    cqes: Vec<(u64, i32, u32)>,
}

macro_rules! on_file {
    ($entry:expr, |$fd:ident| $build:expr) => {
        match $entry.fixed {
            Some(i) => {
                let $fd = types::Fixed(i);
                $build
            }
            None => {
                let $fd = types::Fd($entry.fd);
                $build
            }
        }
    };
}

impl UringStorage {
    pub(super) fn new(
        index: usize,
        config: &StorageConfig,
        shared: Arc<StorageShared>,
        waker: Arc<EventFd>,
        ids: Arc<FileIds>,
    ) -> std::io::Result<Self> {
        let ring = KernelRing::new(config.ring_entries, waker, config.spin)?;
        let entries = config.ring_entries.clamp(8, 32768);
        let fixed_files = ring.submitter().register_files_sparse(FIXED_FILES).is_ok();
        let (count, size) = config.fixed_buffers;
        let fixed = (count > 0 && size > 0)
            .then(|| FixedRegion::new(index, count, size))
            .flatten()
            .filter(|region| {
                let iov = region.iovecs();
                // SAFETY: the region's memory lives as long as the Arc, which
                // this worker holds until after the ring is dropped; every
                // FixedBuf keeps it alive too.
                unsafe { ring.submitter().register_buffers(&iov) }.is_ok()
            });
        Ok(Self {
            index,
            max_in_flight: 2 * entries as usize,
            ring,
            inbox: Inbox::new(shared),
            nap: BacklogNap::default(),
            files: FileTable::new(ids),
            ops: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            groups: HashMap::new(),
            deferred: VecDeque::new(),
            unparked: Vec::new(),
            fixed,
            fixed_files,
            requests: Vec::new(),
            cqes: Vec::new(),
        })
    }

    pub(super) fn fixed_region(&self) -> Option<Arc<FixedRegion>> {
        self.fixed.clone()
    }

    /// Runs until stopped; then finishes everything in flight, closes the
    /// files and delivers every completion (see
    /// [`Inbox::finish_delivering`]).
    pub(super) fn run(mut self, drained: crossbeam_channel::Sender<usize>) {
        loop {
            self.ring.arm_wake();
            self.inbox.accept_joining();
            let stopping = self.inbox.shared.stop.load(Ordering::Acquire);
            let took = if stopping { 0 } else { self.take_requests() };
            self.issue_group_syncs();
            self.ring.submit(false);
            let reaped = self.reap();
            self.run_pending_closes();
            let backlog = self.inbox.flush();
            let stats = &self.inbox.shared.stats;
            stats.backlog.set(backlog as u64);
            stats.in_flight.set(self.in_flight as u64);
            let most = self.nap.limit(backlog);
            if stopping {
                break;
            }
            let shared = self.inbox.shared.clone();
            let inbox = &mut self.inbox;
            self.ring.idle(took + reaped > 0, &shared.signal, most, || {
                inbox.has_requests()
            });
        }
        self.shut_down();
        self.inbox.finish_delivering(&drained, || 0);
    }

    /// Answers queued requests with `Stopped`, lets everything in flight
    /// finish (the kernel may still write to those buffers), closes files.
    fn shut_down(&mut self) {
        let deferred: Vec<_> = self.deferred.drain(..).collect();
        for (client, req) in deferred.into_iter().chain(self.inbox.close_all()) {
            let c = StorageCompletion::failed(req.token, req.op, IoError::Stopped);
            self.inbox.deliver(client, c);
        }
        // Complete the eventfd read so its buffer can be freed.
        self.ring.wake_self();
        loop {
            // Durable writes waiting for a sync get it before the exit.
            self.issue_group_syncs();
            if self.in_flight == 0 && !self.ring.wake_armed() {
                break;
            }
            self.ring.submit(true);
            self.reap();
            self.run_pending_closes();
            self.inbox.flush();
        }
        // A close still waiting is done by the drain below: answer it.
        for (_, client, token) in self.files.pending_closes() {
            let c = StorageCompletion {
                token,
                result: Ok(StorageOutput::Closed),
                buf: None,
                bufs: Vec::new(),
            };
            self.inbox.deliver(client, c);
        }
        let (open, parked) = self.files.drain();
        for f in open {
            // SAFETY: the table owned this descriptor; nothing is in flight.
            unsafe { libc::close(f.fd) };
        }
        // Nothing is opening once nothing is in flight; answer what could
        // still wait all the same.
        for (client, req) in parked {
            let c = StorageCompletion::failed(req.token, req.op, IoError::Stopped);
            self.inbox.deliver(client, c);
        }
    }

    /// Pushes the SQE `build` makes from the op now in `slot` (its
    /// `user_data` is set here); if the ring has no room or is broken,
    /// takes the op back out and fails it.
    ///
    /// # Safety
    /// Every pointer in the SQE `build` returns must point into memory
    /// owned by the `Kind` it is given (the op's buffer, iovec array or
    /// path), or into a registered region that outlives the ring. That
    /// memory is heap memory that neither moves nor is freed while the op
    /// is in the slab, and the op leaves the slab only once its CQE is
    /// reaped (`complete`), or here if nothing was pushed.
    unsafe fn push_op(&mut self, slot: usize, build: impl FnOnce(&mut Kind) -> squeue::Entry) {
        let Some(Some(op)) = self.ops.get_mut(slot) else {
            return;
        };
        let sqe = build(&mut op.kind).user_data(slot as u64);
        // SAFETY: the caller guarantees what `sqe` points to is the op's
        // own memory, which stays in the slab until the CQE is reaped.
        if !unsafe { self.ring.push(&sqe) } {
            let e = self.push_error();
            self.abandon_with(slot, e);
        }
    }

    /// Why a push found no room: a broken ring, or a full one.
    fn push_error(&self) -> IoError {
        match self.ring.broken() {
            Some(errno) => IoError::not_submitted(errno),
            None => IoError::os("submit", libc::EBUSY),
        }
    }

    fn take_requests(&mut self) -> usize {
        let mut n = 0;
        if !self.deferred.is_empty() {
            let deferred = std::mem::take(&mut self.deferred);
            for (client, req) in deferred {
                n += 1;
                self.start(client, req);
            }
            if !self.deferred.is_empty() {
                // Still no room: take nothing new.
                return n;
            }
        }
        // Up to two SQEs per request (linked write + sync). A broken ring
        // still takes requests, to fail them.
        let budget = match self.ring.broken() {
            Some(_) => 64,
            None => {
                (self.ring.sq_free() / 2).min(self.max_in_flight.saturating_sub(self.in_flight))
            }
        };
        let mut batch = std::mem::take(&mut self.requests);
        let taken = self.inbox.drain(budget, |c, r| batch.push((c, r)));
        for (client, req) in batch.drain(..) {
            self.start(client, req);
        }
        self.requests = batch;
        n + taken
    }

    fn slot(&mut self, op: Op) -> usize {
        self.in_flight += 1;
        if let Some(f) = op.file {
            self.files.op_started(f);
        }
        match self.free.pop() {
            Some(i) => {
                self.ops[i] = Some(op);
                i
            }
            None => {
                self.ops.push(Some(op));
                self.ops.len() - 1
            }
        }
    }

    fn fail(&mut self, client: u32, token: u64, op: StorageOp, e: IoError) {
        self.inbox
            .deliver(client, StorageCompletion::failed(token, op, e));
    }

    fn start(&mut self, client: u32, req: StorageRequest) {
        // Room for every SQE of the request first (two for a linked pair,
        // which must go in together), or it waits for the next round.
        let needs = match &req.op {
            StorageOp::WriteAt {
                durability: Durability::Linked,
                ..
            } => 2,
            _ => 1,
        };
        if self.ring.sq_free() < needs && self.ring.broken().is_none() {
            self.ring.submit(false);
            if self.ring.sq_free() < needs && self.ring.broken().is_none() {
                self.deferred.push_back((client, req));
                return;
            }
        }
        // A request on a file still opening waits for the open.
        if let Some(file) = req.op.file()
            && self.files.is_opening(file)
        {
            return self.files.park(file, client, req);
        }
        let StorageRequest {
            token,
            op,
            reserved,
        } = req;
        let on_file = op.file();
        let name = op.name();
        // Validate against the file table first: errors never reach the ring.
        let entry = match &op {
            StorageOp::Open { .. } => None,
            StorageOp::ReadAt { file, .. }
            | StorageOp::WriteAt { file, .. }
            | StorageOp::WritevAt { file, .. }
            | StorageOp::Sync { file, .. }
            | StorageOp::Allocate { file, .. }
            | StorageOp::Close { file } => match self.files.get(*file) {
                Ok(e) => Some((e.fd, e.fixed, e.direct)),
                Err(e) => return self.fail(client, token, op, e),
            },
        };
        let file_entry = entry.map(|(fd, fixed, direct)| FileEntry { fd, fixed, direct });
        match op {
            StorageOp::Open { path, options } => {
                let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
                    if let Some(id) = reserved {
                        self.files.release_reserved(id);
                    }
                    let e = IoError::Invalid("path contains a NUL byte".into());
                    return self.fail(client, token, StorageOp::Open { path, options }, e);
                };
                let id = self.files.begin_open(reserved);
                let slot = self.slot(Op {
                    client,
                    token,
                    file: on_file,
                    kind: Kind::Open {
                        path: cpath,
                        direct: options.direct,
                        id,
                    },
                });
                let (flags, mode) = (options.flags(), options.mode);
                let build = |kind: &mut Kind| {
                    let Kind::Open { path, .. } = kind else {
                        unreachable!("an open")
                    };
                    opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                        .flags(flags)
                        .mode(mode)
                        .build()
                };
                // SAFETY: the OpenAt reads the NUL-terminated path owned by
                // this op's `Kind::Open` (a CString's heap bytes).
                unsafe { self.push_op(slot, build) };
            }
            StorageOp::ReadAt {
                file,
                offset,
                len,
                mut buf,
            } => {
                let f = file_entry.expect("validated");
                if let Err(e) = buf
                    .prepare_read(len)
                    .and_then(|()| check_direct(name, &f, buf.ptr(), len, offset))
                {
                    return self.fail(
                        client,
                        token,
                        StorageOp::ReadAt {
                            file,
                            offset,
                            len,
                            buf,
                        },
                        e,
                    );
                }
                let fixed_index = self.fixed_index(&buf);
                let slot = self.slot(Op {
                    client,
                    token,
                    file: on_file,
                    kind: Kind::Read {
                        buf,
                        direct: f.direct,
                    },
                });
                let build = |kind: &mut Kind| {
                    let ptr = kind.buf_mut().expect("a read").mut_ptr();
                    match fixed_index {
                        Some(bi) => {
                            on_file!(f, |fd| opcode::ReadFixed::new(fd, ptr, len as u32, bi)
                                .offset(offset)
                                .build())
                        }
                        None => on_file!(f, |fd| opcode::Read::new(fd, ptr, len as u32)
                            .offset(offset)
                            .build()),
                    }
                };
                // SAFETY: the read writes at most `len` bytes, which
                // `prepare_read` checked the buffer holds, into the buffer
                // owned by this op's `Kind::Read` (heap memory, or a slot of
                // the registered region, which outlives the ring).
                unsafe { self.push_op(slot, build) };
            }
            StorageOp::WriteAt {
                file,
                offset,
                buf,
                durability,
            } => {
                let f = file_entry.expect("validated");
                if let Err(e) = check_direct(name, &f, buf.ptr(), buf.len(), offset) {
                    return self.fail(
                        client,
                        token,
                        StorageOp::WriteAt {
                            file,
                            offset,
                            buf,
                            durability,
                        },
                        e,
                    );
                }
                if !f.direct && durability != Durability::Linked && buf.len() <= INLINE_WRITE_MAX {
                    return self.write_inline(client, token, file, &f, offset, buf, durability);
                }
                let len = buf.len();
                let fixed_index = self.fixed_index(&buf);
                let write = move |ptr: *const u8| match fixed_index {
                    Some(bi) => on_file!(f, |fd| opcode::WriteFixed::new(fd, ptr, len as u32, bi)
                        .offset(offset)
                        .build()),
                    None => on_file!(f, |fd| opcode::Write::new(fd, ptr, len as u32)
                        .offset(offset)
                        .build()),
                };
                if durability == Durability::Linked {
                    let sync = self.slot(Op {
                        client,
                        token,
                        file: on_file,
                        kind: Kind::LinkedSync {
                            buf,
                            len,
                            write: None,
                            sync: None,
                            direct: f.direct,
                            split: false,
                        },
                    });
                    let w = self.slot(Op {
                        client,
                        token,
                        file: on_file,
                        kind: Kind::LinkedWrite { sync },
                    });
                    let ptr = self.ops[sync]
                        .as_mut()
                        .and_then(|op| op.kind.buf_mut())
                        .expect("the linked sync half holds the buffer")
                        .ptr();
                    let write = write(ptr).user_data(w as u64);
                    let fsync = on_file!(f, |fd| opcode::Fsync::new(fd)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build()
                        .user_data(sync as u64));
                    // Both SQEs go in together, or neither (`start` made
                    // room; only a broken ring refuses).
                    // SAFETY: the write reads `len` bytes of the buffer owned
                    // by the `Kind::LinkedSync` op in slot `sync`, which stays
                    // in the slab until both halves' CQEs are reaped
                    // (`finish_linked`); the fsync points to no memory.
                    if !unsafe { self.ring.push_linked(&write, &fsync) } {
                        let e = self.push_error();
                        self.abandon(w);
                        self.abandon_with(sync, e);
                    }
                } else {
                    let slot = self.slot(Op {
                        client,
                        token,
                        file: on_file,
                        kind: Kind::Write {
                            file,
                            offset,
                            buf,
                            done: 0,
                            durability,
                            direct: f.direct,
                        },
                    });
                    let build = |kind: &mut Kind| write(kind.buf_mut().expect("a write").ptr());
                    // SAFETY: the write reads `len` bytes of the buffer
                    // owned by this op's `Kind::Write` (heap memory, or a
                    // slot of the registered region, which outlives the
                    // ring).
                    unsafe { self.push_op(slot, build) };
                }
            }
            StorageOp::WritevAt { file, offset, bufs } => {
                let f = file_entry.expect("validated");
                let check = if bufs.is_empty() {
                    Err(IoError::Invalid("vectored write of no buffers".into()))
                } else {
                    bufs.iter()
                        .try_for_each(|b| check_direct(name, &f, b.ptr(), b.len(), offset))
                };
                if let Err(e) = check {
                    return self.fail(client, token, StorageOp::WritevAt { file, offset, bufs }, e);
                }
                let total = bufs.iter().map(IoBuf::len).sum();
                let slot = self.slot(Op {
                    client,
                    token,
                    file: on_file,
                    kind: Kind::Writev {
                        bufs,
                        iov: Vec::new(),
                        total,
                        direct: f.direct,
                    },
                });
                let build = |kind: &mut Kind| {
                    let Kind::Writev { bufs, iov, .. } = kind else {
                        unreachable!("a writev")
                    };
                    *iov = bufs
                        .iter()
                        .map(|b| libc::iovec {
                            iov_base: b.ptr() as *mut _,
                            iov_len: b.len(),
                        })
                        .collect();
                    on_file!(f, |fd| opcode::Writev::new(
                        fd,
                        iov.as_ptr(),
                        iov.len() as u32
                    )
                    .offset(offset)
                    .build())
                };
                // SAFETY: the writev reads the iovec array owned by this
                // op's `Kind::Writev`, and each iovec points at one of the
                // op's own `bufs` (heap memory, or registered-region slots,
                // which outlive the ring); neither is touched until the
                // CQE is reaped.
                unsafe { self.push_op(slot, build) };
            }
            StorageOp::Sync { data_only, .. } => {
                let f = file_entry.expect("validated");
                let flags = if data_only {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                let slot = self.slot(Op {
                    client,
                    token,
                    file: on_file,
                    kind: Kind::Sync { data_only },
                });
                let build =
                    |_: &mut Kind| on_file!(f, |fd| opcode::Fsync::new(fd).flags(flags).build());
                // SAFETY: an Fsync points to no memory.
                unsafe { self.push_op(slot, build) };
            }
            StorageOp::Allocate { offset, len, .. } => {
                let f = file_entry.expect("validated");
                let slot = self.slot(Op {
                    client,
                    token,
                    file: on_file,
                    kind: Kind::Allocate,
                });
                let build = |_: &mut Kind| {
                    on_file!(f, |fd| opcode::Fallocate::new(fd, len)
                        .offset(offset)
                        .build())
                };
                // SAFETY: a Fallocate points to no memory.
                unsafe { self.push_op(slot, build) };
            }
            StorageOp::Close { file } => {
                if self.file_busy(file) {
                    // Requests on it still run (an io-wq request looks its
                    // file up when it runs): close once they are done.
                    self.files.close_later(file, client, token);
                } else {
                    self.issue_close(client, token, file);
                }
            }
        }
    }

    /// Closes `file` now: it leaves the table (its id is released), then
    /// a Close SQE takes the descriptor.
    fn issue_close(&mut self, client: u32, token: u64, file: FileId) {
        let f = match self.files.remove(file) {
            Ok(f) => f,
            Err(e) => return self.fail(client, token, StorageOp::Close { file }, e),
        };
        if f.fixed.is_some() {
            // Requests already submitted hold their own reference.
            let _ = self
                .ring
                .submitter()
                .register_files_update(file.slot(), &[-1]);
        }
        let slot = self.slot(Op {
            client,
            token,
            file: None,
            kind: Kind::Close,
        });
        let build = |_: &mut Kind| opcode::Close::new(types::Fd(f.fd)).build();
        // SAFETY: a Close points to no memory; the descriptor left the file
        // table above and nothing of it is in flight, so nothing uses it.
        unsafe { self.push_op(slot, build) };
    }

    /// Queues a written durable write for its file's next group sync.
    fn await_group_sync(&mut self, file: FileId, w: Waiting) {
        self.groups.entry(file.raw()).or_default().ready.push(w);
    }

    /// A small buffered write, done now (see [`INLINE_WRITE_MAX`]).
    #[allow(clippy::too_many_arguments)]
    fn write_inline(
        &mut self,
        client: u32,
        token: u64,
        file: FileId,
        f: &FileEntry,
        offset: u64,
        buf: IoBuf,
        durability: Durability,
    ) {
        let result = pwrite_all("write", f, buf.as_slice(), offset);
        match result {
            Ok(n) if durability == Durability::GroupCommit => {
                self.await_group_sync(
                    file,
                    Waiting {
                        client,
                        token,
                        buf,
                        written: n,
                    },
                );
            }
            Ok(n) => self.inbox.deliver(
                client,
                StorageCompletion {
                    token,
                    result: Ok(StorageOutput::Written(n)),
                    buf: Some(buf),
                    bufs: Vec::new(),
                },
            ),
            Err(e) => self.inbox.deliver(
                client,
                StorageCompletion {
                    token,
                    result: Err(e),
                    buf: Some(buf),
                    bufs: Vec::new(),
                },
            ),
        }
    }

    /// The registered-buffer index to use for `buf`, if it is this ring's.
    fn fixed_index(&self, buf: &IoBuf) -> Option<u16> {
        match buf {
            IoBuf::Fixed(f) if self.fixed.is_some() && f.owner() == self.index => Some(f.index()),
            _ => None,
        }
    }

    /// Removes an op from the slab (its CQEs are all accounted for).
    fn release(&mut self, slot: usize) -> Option<Op> {
        let op = self.ops.get_mut(slot)?.take()?;
        self.free.push(slot);
        if let Some(f) = op.file {
            self.files.op_done(f);
        }
        Some(op)
    }

    /// Whether anything still runs on `file`: an op in the slab, or a group
    /// sync waiting or running (a close waits for both).
    fn file_busy(&self, file: FileId) -> bool {
        self.files.ops_in_flight(file)
            || self
                .groups
                .get(&file.raw())
                .is_some_and(|g| g.syncing || !g.ready.is_empty())
    }

    /// Starts the closes that waited for their files to go idle.
    fn run_pending_closes(&mut self) {
        for (file, client, token) in self.files.pending_closes() {
            if !self.file_busy(file) {
                self.files.take_pending_close(file);
                self.issue_close(client, token, file);
            }
        }
    }

    /// Removes an op that never reached the ring.
    fn abandon(&mut self, slot: usize) -> Option<Op> {
        let op = self.release(slot)?;
        self.in_flight -= 1;
        Some(op)
    }

    /// Fails the requests that waited for an open that failed.
    fn fail_parked(&mut self, id: FileId, parked: Vec<Parked>) {
        for (client, req) in parked {
            let e = IoError::NotOpen {
                what: "file",
                id: id.raw(),
            };
            self.fail(client, req.token, req.op, e);
        }
    }

    fn abandon_with(&mut self, slot: usize, e: IoError) {
        if let Some(op) = self.abandon(slot) {
            if let Kind::Open { id, .. } = &op.kind {
                let parked = self.files.open_failed(*id);
                self.fail_parked(*id, parked);
            }
            let (buf, bufs) = op.kind.into_bufs();
            self.inbox.deliver(
                op.client,
                StorageCompletion {
                    token: op.token,
                    result: Err(e),
                    buf,
                    bufs,
                },
            );
        }
    }

    fn issue_group_syncs(&mut self) {
        let ready: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.syncing && !g.ready.is_empty())
            .map(|(f, _)| *f)
            .collect();
        for file in ready {
            let Some(g) = self.groups.get_mut(&file) else {
                continue;
            };
            let waiters = std::mem::take(&mut g.ready);
            let entry = self
                .files
                .get_even_closing(FileId(file))
                .map(|e| FileEntry {
                    fd: e.fd,
                    fixed: e.fixed,
                    direct: e.direct,
                });
            match entry {
                Err(e) => {
                    for w in waiters {
                        let c = StorageCompletion {
                            token: w.token,
                            result: Err(clone_error(&e)),
                            buf: Some(w.buf),
                            bufs: Vec::new(),
                        };
                        self.inbox.deliver(w.client, c);
                    }
                }
                Ok(f) => {
                    g.syncing = true;
                    let slot = self.slot(Op {
                        client: u32::MAX,
                        token: 0,
                        file: Some(FileId(file)),
                        kind: Kind::GroupSync { file, waiters },
                    });
                    let sqe = on_file!(f, |fd| opcode::Fsync::new(fd)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build());
                    // SAFETY: an Fsync points to no memory.
                    if !unsafe { self.ring.push(&sqe.user_data(slot as u64)) } {
                        // Not pushed: the waiters get the error through
                        // the op's completion.
                        let (res, flags) = match self.ring.broken() {
                            Some(errno) => (-errno, NOT_SUBMITTED),
                            None => (-libc::EBUSY, 0),
                        };
                        self.complete(slot, res, flags);
                    }
                }
            }
        }
    }

    fn reap(&mut self) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        let n = self.ring.reap(&mut cqes);
        // Linked pairs a partial submit split: their writes ran unlinked.
        for second in self.ring.take_split() {
            if let Some(Some(Op {
                kind: Kind::LinkedSync { split, .. },
                ..
            })) = self.ops.get_mut(second as usize)
            {
                *split = true;
            }
        }
        for (user_data, res, flags) in cqes.drain(..) {
            self.complete(user_data as usize, res, flags);
        }
        self.cqes = cqes;
        let unparked = std::mem::take(&mut self.unparked);
        let started = unparked.len();
        for (client, req) in unparked {
            self.start(client, req);
        }
        n + started
    }

    fn complete(&mut self, slot: usize, res: i32, flags: u32) {
        let refused = flags & NOT_SUBMITTED != 0;
        // The halves of a linked write+sync: the op stays in the sync half's
        // slot until both CQEs are in.
        match self.ops.get_mut(slot) {
            Some(Some(Op {
                kind: Kind::LinkedWrite { sync },
                ..
            })) => {
                let sync = *sync;
                self.release(slot);
                self.in_flight -= 1;
                if let Some(Some(Op {
                    kind: Kind::LinkedSync { write, .. },
                    ..
                })) = self.ops.get_mut(sync)
                {
                    *write = Some((res, refused));
                }
                return self.finish_linked(sync);
            }
            Some(Some(Op {
                kind: Kind::LinkedSync { sync, .. },
                ..
            })) => {
                *sync = Some((res, refused));
                self.in_flight -= 1;
                return self.finish_linked(slot);
            }
            _ => {}
        }
        let Some(op) = self.release(slot) else {
            return;
        };
        self.in_flight -= 1;
        let Op {
            client,
            token,
            kind,
            ..
        } = op;
        let err = |op: &'static str, direct: bool| {
            if refused {
                IoError::not_submitted(-res)
            } else if direct && res == -libc::EINVAL {
                direct_einval(op)
            } else {
                IoError::os(op, -res)
            }
        };
        let (result, buf, bufs) = match kind {
            Kind::Open { direct, id, .. } => {
                if res < 0 {
                    let parked = self.files.open_failed(id);
                    self.fail_parked(id, parked);
                    (Err(err("open", false)), None, Vec::new())
                } else {
                    let parked = self.files.opened(
                        id,
                        FileEntry {
                            fd: res,
                            direct,
                            fixed: None,
                        },
                    );
                    let fixed = (self.fixed_files
                        && id.slot() < FIXED_FILES
                        && self
                            .ring
                            .submitter()
                            .register_files_update(id.slot(), &[res])
                            .is_ok())
                    .then_some(id.slot());
                    if let Some(slot) = fixed {
                        self.files.set_fixed(id, slot);
                    }
                    // What waited for the open runs now, in order (after
                    // the open's own completion, delivered below).
                    self.unparked.extend(parked);
                    (Ok(StorageOutput::Opened(id)), None, Vec::new())
                }
            }
            Kind::Read { mut buf, direct } => {
                if res < 0 {
                    buf.truncate(0);
                    (Err(err("read", direct)), Some(buf), Vec::new())
                } else {
                    buf.truncate(res as usize);
                    (Ok(StorageOutput::Read(res as usize)), Some(buf), Vec::new())
                }
            }
            Kind::Write {
                file,
                offset,
                buf,
                done,
                durability,
                direct,
            } => {
                if res < 0 {
                    (Err(err("write", direct)), Some(buf), Vec::new())
                } else {
                    let done = done + res as usize;
                    let len = buf.len();
                    if done < len && res > 0 {
                        // Short write: send the rest (same slot, new SQE).
                        return self.resubmit_write(
                            client, token, file, offset, buf, done, durability, direct,
                        );
                    }
                    if done < len {
                        (
                            Err(IoError::ShortWrite {
                                op: "write",
                                written: done,
                                len,
                            }),
                            Some(buf),
                            Vec::new(),
                        )
                    } else if durability == Durability::GroupCommit {
                        self.await_group_sync(
                            file,
                            Waiting {
                                client,
                                token,
                                buf,
                                written: done,
                            },
                        );
                        return;
                    } else {
                        (Ok(StorageOutput::Written(done)), Some(buf), Vec::new())
                    }
                }
            }
            Kind::LinkedWrite { .. } | Kind::LinkedSync { .. } => return, // handled above
            Kind::Writev {
                bufs,
                total,
                direct,
                ..
            } => {
                if res < 0 {
                    (Err(err("writev", direct)), None, bufs)
                } else if (res as usize) < total {
                    (
                        Err(IoError::ShortWrite {
                            op: "writev",
                            written: res as usize,
                            len: total,
                        }),
                        None,
                        bufs,
                    )
                } else {
                    (Ok(StorageOutput::Written(total)), None, bufs)
                }
            }
            Kind::Sync { data_only } => {
                let op = if data_only { "fdatasync" } else { "fsync" };
                (
                    if res < 0 {
                        Err(err(op, false))
                    } else {
                        Ok(StorageOutput::Synced)
                    },
                    None,
                    Vec::new(),
                )
            }
            Kind::GroupSync { file, waiters } => {
                if let Some(g) = self.groups.get_mut(&file) {
                    g.syncing = false;
                }
                for w in waiters {
                    let result = if res < 0 {
                        Err(err("fdatasync", false))
                    } else {
                        Ok(StorageOutput::Written(w.written))
                    };
                    self.inbox.deliver(
                        w.client,
                        StorageCompletion {
                            token: w.token,
                            result,
                            buf: Some(w.buf),
                            bufs: Vec::new(),
                        },
                    );
                }
                return;
            }
            Kind::Allocate => (
                (if res < 0 {
                    Err(err("fallocate", false))
                } else {
                    Ok(StorageOutput::Allocated)
                }),
                None,
                Vec::new(),
            ),
            Kind::Close => (
                (if res < 0 {
                    Err(err("close", false))
                } else {
                    Ok(StorageOutput::Closed)
                }),
                None,
                Vec::new(),
            ),
        };
        self.inbox.deliver(
            client,
            StorageCompletion {
                token,
                result,
                buf,
                bufs,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn resubmit_write(
        &mut self,
        client: u32,
        token: u64,
        file: FileId,
        offset: u64,
        buf: IoBuf,
        done: usize,
        durability: Durability,
        direct: bool,
    ) {
        let f = match self.files.get_even_closing(file) {
            Ok(e) => FileEntry {
                fd: e.fd,
                fixed: e.fixed,
                direct: e.direct,
            },
            Err(e) => {
                return self.inbox.deliver(
                    client,
                    StorageCompletion {
                        token,
                        result: Err(e),
                        buf: Some(buf),
                        bufs: Vec::new(),
                    },
                );
            }
        };
        let len = (buf.len() - done) as u32;
        let slot = self.slot(Op {
            client,
            token,
            file: Some(file),
            kind: Kind::Write {
                file,
                offset,
                buf,
                done,
                durability,
                direct,
            },
        });
        let build = |kind: &mut Kind| {
            let buf = kind.buf_mut().expect("a write");
            // In bounds: `done < buf.len()`.
            let ptr = buf.ptr().wrapping_add(done);
            on_file!(f, |fd| opcode::Write::new(fd, ptr, len)
                .offset(offset + done as u64)
                .build())
        };
        // SAFETY: the write reads the `len` bytes after the first `done`
        // of the buffer owned by this op's `Kind::Write` (heap memory, or a
        // slot of the registered region, which outlives the ring).
        unsafe { self.push_op(slot, build) };
    }

    /// Delivers a linked write+sync once both CQEs are in.
    fn finish_linked(&mut self, slot: usize) {
        let done = matches!(
            self.ops.get(slot),
            Some(Some(Op {
                kind: Kind::LinkedSync {
                    write: Some(_),
                    sync: Some(_),
                    ..
                },
                ..
            }))
        );
        if !done {
            return;
        }
        let Some(Op {
            client,
            token,
            file: _,
            kind:
                Kind::LinkedSync {
                    buf,
                    len,
                    write: Some((w, w_refused)),
                    sync: Some((s, s_refused)),
                    direct,
                    split,
                },
        }) = self.release(slot)
        else {
            return;
        };
        // Durable only if the write was whole and its sync ran linked
        // after it.
        let result = if w < 0 {
            Err(if w_refused {
                IoError::not_submitted(-w)
            } else if direct && w == -libc::EINVAL {
                direct_einval("write")
            } else {
                IoError::os("write", -w)
            })
        } else if (w as usize) < len {
            Err(IoError::ShortWrite {
                op: "write",
                written: w as usize,
                len,
            })
        } else if s_refused || split {
            Err(IoError::NotDurable { written: len })
        } else if s < 0 {
            Err(IoError::os("fdatasync", -s))
        } else {
            Ok(StorageOutput::Written(len))
        };
        self.inbox.deliver(
            client,
            StorageCompletion {
                token,
                result,
                buf: Some(buf),
                bufs: Vec::new(),
            },
        );
    }
}

impl Kind {
    /// The single buffer of a read or write.
    fn buf_mut(&mut self) -> Option<&mut IoBuf> {
        match self {
            Kind::Read { buf, .. } | Kind::Write { buf, .. } | Kind::LinkedSync { buf, .. } => {
                Some(buf)
            }
            _ => None,
        }
    }

    fn into_bufs(self) -> (Option<IoBuf>, Vec<IoBuf>) {
        match self {
            Kind::Read { buf, .. } | Kind::Write { buf, .. } | Kind::LinkedSync { buf, .. } => {
                (Some(buf), Vec::new())
            }
            Kind::Writev { bufs, .. } => (None, bufs),
            _ => (None, Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! White-box tests that drive a `UringStorage` on the test thread and
    //! inject failed submits through the ring's test seam.

    use super::*;
    use crate::io::inbox::Shared;
    use crate::worker::{ResultQueue, ResultSink};
    use std::os::fd::IntoRawFd;

    struct Rig {
        st: UringStorage,
        client: crate::io::inbox::Queued<StorageRequest>,
        done: ResultQueue<StorageCompletion>,
        file: FileId,
        path: std::path::PathBuf,
    }

    /// A storage worker with an 8-entry ring, one client and one open
    /// file; `None` where io_uring is unavailable.
    fn rig(tag: &str) -> Option<Rig> {
        let waker = Arc::new(EventFd::new().ok()?);
        let w = waker.clone();
        let shared = Shared::new(Arc::new(move || w.notify()), 64);
        let config = StorageConfig::new().ring_entries(8).fixed_buffers(0, 0);
        let mut st = UringStorage::new(0, &config, shared.clone(), waker, FileIds::new(0)).ok()?;
        let (sink, done) = ResultSink::queue();
        let client = shared.join(sink, 0).ok()?;
        st.inbox.accept_joining();
        let path = std::env::temp_dir().join(format!(
            "sn-uring-{}-{tag}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let fd = std::fs::File::create(&path).ok()?.into_raw_fd();
        let file = st.files.insert(FileEntry {
            fd,
            fixed: None,
            direct: false,
        });
        Some(Rig {
            st,
            client,
            done,
            file,
            path,
        })
    }

    impl Rig {
        fn linked_write(&mut self, token: u64) {
            let op = StorageOp::WriteAt {
                file: self.file,
                offset: 0,
                buf: IoBuf::from(vec![5u8; 4096]),
                durability: Durability::Linked,
            };
            self.client
                .submit(StorageRequest {
                    token,
                    op,
                    reserved: None,
                })
                .unwrap();
        }

        /// Fills the submission queue but for `free` entries with no-ops.
        fn fill_sq(&mut self, free: usize) {
            while self.st.ring.sq_free() > free {
                let nop = opcode::Nop::new().build().user_data(u64::from(u32::MAX));
                // SAFETY: a no-op points to no memory.
                assert!(unsafe { self.st.ring.push(&nop) });
            }
        }

        /// Runs worker rounds until a completion arrives.
        fn complete(&mut self) -> StorageCompletion {
            for _ in 0..1000 {
                self.st.take_requests();
                self.st.ring.submit(false);
                self.st.reap();
                self.st.inbox.flush();
                if let Some(c) = self.done.try_recv() {
                    return c;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            panic!("no completion");
        }

        /// Whether the write and sync SQEs of the op now in slots `w` and
        /// `s` were pushed back to back and submitted together.
        fn linked_in_one_submit(&self, w: u64, s: u64) -> bool {
            let log = &self.st.ring.log;
            log.windows(2).any(|p| p == [Some(w), Some(s)])
        }

        fn finish(mut self) {
            self.st.shut_down();
            let _ = std::fs::remove_file(&self.path);
        }
    }

    #[test]
    fn a_linked_write_whose_pair_cannot_be_pushed_together_is_not_reported_durable_unlinked() {
        let Some(mut r) = rig("split") else {
            return; // no io_uring here
        };
        // One free entry, and the submit that would make room fails
        // transiently: the pair must not go in one half at a time.
        r.fill_sq(1);
        r.st.ring.fail_next_submit = Some(libc::EBUSY);
        r.linked_write(1);
        let req = r.st.inbox.clients[0]
            .as_mut()
            .unwrap()
            .ring
            .try_pop()
            .unwrap();
        // The sync half takes the first free slot, the write the next.
        let (s, w) = (r.st.ops.len() as u64, r.st.ops.len() as u64 + 1);
        r.st.start(0, req);
        let c = r.complete();
        match c.result {
            Ok(StorageOutput::Written(n)) => assert!(
                r.linked_in_one_submit(w, s),
                "a write of {n} bytes was reported durable, but its sync was not linked after it \
                 (log {:?})",
                r.st.ring.log
            ),
            Ok(other) => panic!("{other:?}"),
            Err(_) => {} // failing is allowed; a false durability promise is not
        }
        r.finish();
    }
    #[test]
    fn a_submit_that_fails_for_good_fails_what_it_did_not_take_and_nothing_later_runs() {
        let Some(mut r) = rig("broken") else {
            return;
        };
        r.linked_write(1);
        r.st.take_requests();
        r.st.ring.fail_next_submit = Some(libc::EINVAL);
        let c = r.complete();
        match c.result {
            Err(IoError::NotSubmitted { source }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
            }
            other => panic!("expected NotSubmitted, got {other:?}"),
        }
        assert!(c.buf.is_some(), "the buffer comes back");
        assert_eq!(r.st.in_flight, 0);
        // The ring is broken: a later request fails at once, unsubmitted.
        r.linked_write(2);
        let c = r.complete();
        assert!(
            matches!(c.result, Err(IoError::NotSubmitted { .. })),
            "{:?}",
            c.result
        );
        // Nothing was written: the pair never reached the kernel.
        assert_eq!(std::fs::metadata(&r.path).unwrap().len(), 0);
        r.finish();
    }

    #[test]
    fn a_linked_pair_split_by_a_partial_submit_is_not_reported_durable() {
        let Some(mut r) = rig("partial") else {
            return;
        };
        let nop = opcode::Nop::new().build().user_data(u64::from(u32::MAX));
        // SAFETY: a no-op points to no memory.
        assert!(unsafe { r.st.ring.push(&nop) });
        r.linked_write(1);
        r.st.take_requests();
        // The next submit takes the no-op and the write, not its sync.
        r.st.ring.submit_at_most = Some(2);
        r.st.ring.submit(false);
        r.st.ring.submit_at_most = None;
        let c = r.complete();
        match c.result {
            Err(IoError::NotDurable { written }) => assert_eq!(written, 4096),
            other => panic!("expected NotDurable, got {other:?}"),
        }
        r.finish();
    }
}
