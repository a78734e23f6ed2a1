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
//! reaped, and the worker does not exit while any is in flight: the kernel
//! never sees freed memory.

use super::StorageConfig;
use super::StorageShared;
use super::blocking::clone_error;
use super::files::{FileEntry, FileTable, check_direct, direct_einval, pwrite_all};
use super::op::{Durability, FileId, StorageCompletion, StorageOp, StorageOutput, StorageRequest};
use crate::io::buf::FixedRegion;
use crate::io::inbox::Inbox;
use crate::io::kernel::KernelRing;
use crate::io::wake::EventFd;
use crate::io::{IoBuf, IoError};
use io_uring::{opcode, squeue, types};
use std::collections::HashMap;
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
        _path: CString,
        direct: bool,
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
    LinkedSync {
        buf: IoBuf,
        len: usize,
        write: Option<i32>,
        sync: Option<i32>,
        direct: bool,
    },
    Writev {
        bufs: Vec<IoBuf>,
        _iov: Vec<libc::iovec>,
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
    files: FileTable,
    ops: Vec<Option<Op>>,
    free: Vec<usize>,
    in_flight: usize,
    max_in_flight: usize,
    groups: HashMap<u64, Group>,
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
    ) -> std::io::Result<Self> {
        let ring = KernelRing::new(config.ring_entries, waker, config.spin)?;
        let entries = config.ring_entries.clamp(8, 32768);
        let fixed_files = ring.submitter().register_files_sparse(FIXED_FILES).is_ok();
        let (count, size) = config.fixed_buffers;
        let fixed = (count > 0 && size > 0)
            .then(|| FixedRegion::new(index, count, size))
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
            files: FileTable::new(index),
            ops: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            groups: HashMap::new(),
            fixed,
            fixed_files,
            requests: Vec::new(),
            cqes: Vec::new(),
        })
    }

    pub(super) fn fixed_region(&self) -> Option<Arc<FixedRegion>> {
        self.fixed.clone()
    }

    pub(super) fn run(mut self) {
        loop {
            self.ring.arm_wake();
            self.inbox.accept_joining();
            let stopping = self.inbox.shared.stop.load(Ordering::Acquire);
            let took = if stopping { 0 } else { self.take_requests() };
            self.issue_group_syncs();
            self.ring.submit(false);
            let reaped = self.reap();
            self.inbox.flush();
            if stopping {
                break;
            }
            let shared = self.inbox.shared.clone();
            let inbox = &mut self.inbox;
            self.ring
                .idle(took + reaped > 0, &shared.signal, || inbox.has_requests());
        }
        self.shut_down();
    }

    /// Answers queued requests with `Stopped`, lets everything in flight
    /// finish (the kernel may still write to those buffers), closes files.
    fn shut_down(&mut self) {
        for (client, req) in self.inbox.close_all() {
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
            self.inbox.flush();
        }
        // Completions for workers that are slow to take them: keep trying
        // briefly, they are acknowledged results.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.inbox.flush() > 0 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        for f in self.files.drain() {
            // SAFETY: the table owned this descriptor; nothing is in flight.
            unsafe { libc::close(f.fd) };
        }
    }

    /// Pushes one SQE.
    fn push(&mut self, sqe: &squeue::Entry) -> bool {
        // SAFETY: every pointer in `sqe` refers to memory owned by an
        // in-flight `Op`, which lives until its CQE is reaped (see the
        // module docs).
        unsafe { self.ring.push(sqe) }
    }

    fn take_requests(&mut self) -> usize {
        let sq_free = self.ring.sq_free();
        // Up to two SQEs per request (linked write + sync).
        let budget = (sq_free / 2).min(self.max_in_flight.saturating_sub(self.in_flight));
        let mut batch = std::mem::take(&mut self.requests);
        let n = self.inbox.drain(budget, |c, r| batch.push((c, r)));
        for (client, req) in batch.drain(..) {
            self.start(client, req);
        }
        self.requests = batch;
        n
    }

    fn slot(&mut self, op: Op) -> usize {
        self.in_flight += 1;
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
        let StorageRequest { token, op } = req;
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
                    let e = IoError::Invalid("path contains a NUL byte".into());
                    return self.fail(client, token, StorageOp::Open { path, options }, e);
                };
                let ptr = cpath.as_ptr();
                let slot = self.slot(Op {
                    client,
                    token,
                    kind: Kind::Open {
                        _path: cpath,
                        direct: options.direct,
                    },
                });
                let sqe = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), ptr)
                    .flags(options.flags())
                    .mode(options.mode)
                    .build()
                    .user_data(slot as u64);
                self.push_or_fail(slot, &sqe);
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
                let ptr = buf.mut_ptr();
                let fixed_index = self.fixed_index(&buf);
                let slot = self.slot(Op {
                    client,
                    token,
                    kind: Kind::Read {
                        buf,
                        direct: f.direct,
                    },
                });
                let sqe = match fixed_index {
                    Some(bi) => on_file!(f, |fd| opcode::ReadFixed::new(fd, ptr, len as u32, bi)
                        .offset(offset)
                        .build()),
                    None => on_file!(f, |fd| opcode::Read::new(fd, ptr, len as u32)
                        .offset(offset)
                        .build()),
                };
                self.push_or_fail(slot, &sqe.user_data(slot as u64));
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
                let (ptr, len) = (buf.ptr(), buf.len());
                let fixed_index = self.fixed_index(&buf);
                let write = |user_data: u64| {
                    let e = match fixed_index {
                        Some(bi) => {
                            on_file!(f, |fd| opcode::WriteFixed::new(fd, ptr, len as u32, bi)
                                .offset(offset)
                                .build())
                        }
                        None => on_file!(f, |fd| opcode::Write::new(fd, ptr, len as u32)
                            .offset(offset)
                            .build()),
                    };
                    e.user_data(user_data)
                };
                if durability == Durability::Linked {
                    let sync = self.slot(Op {
                        client,
                        token,
                        kind: Kind::LinkedSync {
                            buf,
                            len,
                            write: None,
                            sync: None,
                            direct: f.direct,
                        },
                    });
                    let w = self.slot(Op {
                        client,
                        token,
                        kind: Kind::LinkedWrite { sync },
                    });
                    let fsync = on_file!(f, |fd| opcode::Fsync::new(fd)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build()
                        .user_data(sync as u64));
                    // Both SQEs must go in together: the link covers
                    // consecutive entries of one submission.
                    if self.ring.sq_free() < 2 {
                        self.ring.submit(false);
                    }
                    let linked = write(w as u64).flags(squeue::Flags::IO_LINK);
                    if !self.push(&linked) {
                        self.abandon(w);
                        return self.abandon_with(sync, IoError::os("write", libc::EBUSY));
                    }
                    if !self.push(&fsync) {
                        // The write went in alone, unlinked in effect: no
                        // sync CQE will come, so report the sync as failed.
                        if let Some(Some(Op {
                            kind: Kind::LinkedSync { sync: s, .. },
                            ..
                        })) = self.ops.get_mut(sync)
                        {
                            *s = Some(-libc::EBUSY);
                        }
                        self.in_flight -= 1;
                    }
                } else {
                    let slot = self.slot(Op {
                        client,
                        token,
                        kind: Kind::Write {
                            file,
                            offset,
                            buf,
                            done: 0,
                            durability,
                            direct: f.direct,
                        },
                    });
                    self.push_or_fail(slot, &write(slot as u64));
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
                let iov: Vec<libc::iovec> = bufs
                    .iter()
                    .map(|b| libc::iovec {
                        iov_base: b.ptr() as *mut _,
                        iov_len: b.len(),
                    })
                    .collect();
                let total = bufs.iter().map(IoBuf::len).sum();
                let (ptr, n) = (iov.as_ptr(), iov.len() as u32);
                let slot = self.slot(Op {
                    client,
                    token,
                    kind: Kind::Writev {
                        bufs,
                        _iov: iov,
                        total,
                        direct: f.direct,
                    },
                });
                let sqe = on_file!(f, |fd| opcode::Writev::new(fd, ptr, n)
                    .offset(offset)
                    .build());
                self.push_or_fail(slot, &sqe.user_data(slot as u64));
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
                    kind: Kind::Sync { data_only },
                });
                let sqe = on_file!(f, |fd| opcode::Fsync::new(fd).flags(flags).build());
                self.push_or_fail(slot, &sqe.user_data(slot as u64));
            }
            StorageOp::Allocate { offset, len, .. } => {
                let f = file_entry.expect("validated");
                let slot = self.slot(Op {
                    client,
                    token,
                    kind: Kind::Allocate,
                });
                let sqe = on_file!(f, |fd| opcode::Fallocate::new(fd, len)
                    .offset(offset)
                    .build());
                self.push_or_fail(slot, &sqe.user_data(slot as u64));
            }
            StorageOp::Close { file } => {
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
                    kind: Kind::Close,
                });
                let sqe = opcode::Close::new(types::Fd(f.fd))
                    .build()
                    .user_data(slot as u64);
                self.push_or_fail(slot, &sqe);
            }
        }
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

    fn push_or_fail(&mut self, slot: usize, sqe: &squeue::Entry) {
        if !self.push(sqe) {
            self.abandon_with(slot, IoError::os("submit", libc::EBUSY));
        }
    }

    /// Removes an op from the slab (its CQEs are all accounted for).
    fn release(&mut self, slot: usize) -> Option<Op> {
        let op = self.ops.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(op)
    }

    /// Removes an op that never reached the ring.
    fn abandon(&mut self, slot: usize) -> Option<Op> {
        let op = self.release(slot)?;
        self.in_flight -= 1;
        Some(op)
    }

    fn abandon_with(&mut self, slot: usize, e: IoError) {
        if let Some(op) = self.abandon(slot) {
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
            let entry = self.files.get(FileId(file)).map(|e| FileEntry {
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
                        kind: Kind::GroupSync { file, waiters },
                    });
                    let sqe = on_file!(f, |fd| opcode::Fsync::new(fd)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build());
                    if !self.push(&sqe.user_data(slot as u64)) {
                        self.complete(slot, -libc::EBUSY);
                    }
                }
            }
        }
    }

    fn reap(&mut self) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        let n = self.ring.reap(&mut cqes);
        for (user_data, res, _) in cqes.drain(..) {
            self.complete(user_data as usize, res);
        }
        self.cqes = cqes;
        n
    }

    fn complete(&mut self, slot: usize, res: i32) {
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
                    *write = Some(res);
                }
                return self.finish_linked(sync);
            }
            Some(Some(Op {
                kind: Kind::LinkedSync { sync, .. },
                ..
            })) => {
                *sync = Some(res);
                self.in_flight -= 1;
                return self.finish_linked(slot);
            }
            _ => {}
        }
        let Some(op) = self.ops.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.in_flight -= 1;
        let Op {
            client,
            token,
            kind,
        } = op;
        let err = |op: &'static str, direct: bool| {
            if direct && res == -libc::EINVAL {
                direct_einval(op)
            } else {
                IoError::os(op, -res)
            }
        };
        let (result, buf, bufs) = match kind {
            Kind::Open { direct, .. } => {
                if res < 0 {
                    (Err(err("open", false)), None, Vec::new())
                } else {
                    let id = self.files.insert(FileEntry {
                        fd: res,
                        direct,
                        fixed: None,
                    });
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
                        Err(IoError::os("fdatasync", -res))
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
        let f = match self.files.get(file) {
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
        // SAFETY: `done < buf.len()`, so the pointer stays inside the buffer.
        let ptr = unsafe { buf.ptr().add(done) };
        let len = (buf.len() - done) as u32;
        let slot = self.slot(Op {
            client,
            token,
            kind: Kind::Write {
                file,
                offset,
                buf,
                done,
                durability,
                direct,
            },
        });
        let sqe = on_file!(f, |fd| opcode::Write::new(fd, ptr, len)
            .offset(offset + done as u64)
            .build());
        self.push_or_fail(slot, &sqe.user_data(slot as u64));
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
            kind:
                Kind::LinkedSync {
                    buf,
                    len,
                    write: Some(w),
                    sync: Some(s),
                    direct,
                },
        }) = self.release(slot)
        else {
            return;
        };
        let result = if w < 0 {
            Err(if direct && w == -libc::EINVAL {
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
