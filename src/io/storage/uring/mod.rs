//! The io_uring storage backend.
//!
//! One ring per worker, created on the worker's thread (single issuer).
//! Each loop round takes as many requests as the ring has room for, pushes
//! their SQEs, submits them with one `io_uring_enter`, and reaps every
//! completion that is ready. With nothing to do the worker sleeps in
//! `io_uring_enter` waiting for one completion; a read on the eventfd that
//! clients' pushes write is always in flight, so a new request wakes it.
//!
//! Each request in flight is an op (`ops.rs`: one plain type per opcode
//! family) in the worker's [`InFlight`] slab, which owns every buffer,
//! iovec array and path its SQEs point to and gives it back only with its
//! last completion (`io/inflight.rs`). `start.rs` validates a request and
//! builds its op, `complete.rs` answers it, `group.rs` runs group commit.
//! The worker does not exit while any op is in flight: the kernel never
//! sees freed memory.
//!
//! A linked write+`fdatasync` goes into the ring as one pair or not at all
//! (a request that does not fit waits for the next round); a write is
//! reported durable only if its sync ran linked after it. A submit that
//! fails for good fails the requests it did not take with
//! [`IoError::NotSubmitted`] (see [`KernelRing`]).

mod complete;
mod group;
mod ops;
mod start;
#[cfg(test)]
mod tests;

use super::StorageConfig;
use super::StorageShared;
use super::files::{FileIds, FileTable, Parked};
use super::op::{FileId, StorageCompletion, StorageOutput, StorageRequest};
use crate::io::buf::FixedRegion;
use crate::io::inbox::Inbox;
use crate::io::inflight::InFlight;
use crate::io::kernel::{Cqe, KernelRing};
use crate::io::local::{Round, Rounds};
use crate::io::nap::BacklogNap;
use crate::io::wake::EventFd;
use crate::io::{IoBuf, IoError};
use group::Group;
use ops::{Kind, Pending};
use std::collections::{HashMap, VecDeque};
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

pub(super) struct UringStorage {
    index: usize,
    ring: KernelRing,
    inbox: Inbox<StorageRequest, StorageCompletion>,
    /// How long to sleep while results wait for room (see `nap.rs`).
    nap: BacklogNap,
    files: FileTable,
    /// Every op the kernel may still be using.
    ops: InFlight<Pending>,
    max_in_flight: usize,
    groups: HashMap<u64, Group>,
    /// Requests taken that found no room in the ring; started first next
    /// round.
    deferred: VecDeque<(u32, StorageRequest)>,
    /// Requests whose file has just opened, to start before new ones.
    unparked: Vec<Parked>,
    fixed: Option<Arc<FixedRegion>>,
    fixed_files: bool,
    /// The kernel has `IORING_OP_FTRUNCATE` (6.9); without it a `SetLen`
    /// runs as a plain `ftruncate` on this thread.
    ftruncate: bool,
    /// The kernel has `IORING_OP_UNLINKAT` (5.11); without it a `Remove`
    /// runs as a plain `unlink` on this thread.
    unlinkat: bool,
    requests: Vec<(u32, StorageRequest)>,
    cqes: Vec<Cqe>,
}

impl UringStorage {
    pub(super) fn new(
        index: usize,
        config: &StorageConfig,
        shared: Arc<StorageShared>,
        waker: Arc<EventFd>,
        ids: Arc<FileIds>,
    ) -> std::io::Result<Self> {
        Self::with_coop(index, config, shared, waker, ids, true)
    }

    /// As [`new`](Self::new), with cooperative task running or not (see
    /// [`KernelRing::with_coop`]).
    pub(super) fn with_coop(
        index: usize,
        config: &StorageConfig,
        shared: Arc<StorageShared>,
        waker: Arc<EventFd>,
        ids: Arc<FileIds>,
        coop: bool,
    ) -> std::io::Result<Self> {
        let ring = KernelRing::with_coop(config.ring_entries, waker, config.spin, coop)?;
        let entries = config.ring_entries.clamp(8, 32768);
        let fixed_files = ring.submitter().register_files_sparse(FIXED_FILES).is_ok();
        let ftruncate = ring.supports(io_uring::opcode::Ftruncate::CODE);
        let unlinkat = ring.supports(io_uring::opcode::UnlinkAt::CODE);
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
            ops: InFlight::default(),
            groups: HashMap::new(),
            deferred: VecDeque::new(),
            unparked: Vec::new(),
            fixed,
            fixed_files,
            ftruncate,
            unlinkat,
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
            let r = self.round();
            if r.stopping {
                break;
            }
            let shared = self.inbox.shared.clone();
            let inbox = &mut self.inbox;
            self.ring
                .idle(r.worked, &shared.signal, r.most, || inbox.has_requests());
        }
        self.end_all();
        self.inbox.finish_delivering(&drained, || 0);
    }

    /// Answers queued requests with `Stopped`, lets everything in flight
    /// finish (the kernel may still write to those buffers), closes files.
    pub(super) fn end_all(&mut self) {
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
            if self.ops.is_empty() && !self.ring.wake_armed() {
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

    /// Moves an op into the slab and pushes its SQEs; if the ring took
    /// none of them (full or broken), fails it at once.
    fn submit(&mut self, p: Pending) {
        if let Some(f) = p.file {
            self.files.op_started(f);
        }
        if let Err(p) = self.ops.submit(&mut self.ring, p) {
            if let Some(f) = p.file {
                self.files.op_done(f);
            }
            let e = self.push_error();
            self.refuse(p, e);
        }
    }

    /// Answers an op the kernel never saw with `e`.
    fn refuse(&mut self, p: Pending, e: IoError) {
        let kind = match p.kind {
            Kind::GroupSync(op) => return self.complete_group_sync(op, Err(e)),
            Kind::Open(op) => {
                let parked = self.files.open_failed(op.id);
                self.fail_parked(op.id, parked);
                Kind::Open(op)
            }
            kind => kind,
        };
        let (buf, bufs) = kind.into_bufs();
        let c = StorageCompletion {
            token: p.token,
            result: Err(e),
            buf,
            bufs,
        };
        self.inbox.deliver(p.client, c);
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
                (self.ring.sq_free() / 2).min(self.max_in_flight.saturating_sub(self.ops.len()))
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

    fn fail(&mut self, client: u32, token: u64, op: super::StorageOp, e: IoError) {
        self.inbox
            .deliver(client, StorageCompletion::failed(token, op, e));
    }

    /// The registered-buffer index to use for `buf`, if it is this ring's.
    fn fixed_index(&self, buf: &IoBuf) -> Option<u16> {
        match buf {
            IoBuf::Fixed(f) if self.fixed.is_some() && f.owner() == self.index => Some(f.index()),
            _ => None,
        }
    }

    /// Whether anything still runs on `file`: an op in the slab, or a group
    /// sync waiting or running (a close waits for both).
    fn file_busy(&self, file: FileId) -> bool {
        self.files.ops_in_flight(file) || self.groups.get(&file.raw()).is_some_and(Group::busy)
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

    fn reap(&mut self) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        let n = self.ring.reap(&mut cqes);
        // Linked pairs a partial submit split: their writes ran unlinked.
        for second in self.ring.take_split() {
            self.ops.split(second);
        }
        for cqe in cqes.drain(..) {
            if let Some(p) = self.ops.reaped(&cqe).last() {
                if let Some(f) = p.file {
                    self.files.op_done(f);
                }
                self.complete(p, &cqe);
            }
        }
        self.cqes = cqes;
        let unparked = std::mem::take(&mut self.unparked);
        let started = unparked.len();
        for (client, req) in unparked {
            self.start(client, req);
        }
        n + started
    }
}

impl Rounds for UringStorage {
    /// One loop round: requests, group syncs, one submit, completions,
    /// pending closes, deliveries.
    fn round(&mut self) -> Round {
        self.ring.arm_wake();
        self.inbox.accept_joining();
        let stopping = self.inbox.shared.stop.load(Ordering::Acquire);
        let took = if stopping { 0 } else { self.take_requests() };
        self.issue_group_syncs();
        self.ring.submit(false);
        let reaped = self.reap();
        self.run_pending_closes();
        let backlog = self.flush();
        self.inbox.shared.stats.in_flight.set(self.ops.len() as u64);
        Round {
            worked: took + reaped > 0,
            stopping,
            most: self.nap.limit(backlog),
        }
    }

    /// Delivers what waits for room; returns how much still waits.
    fn flush(&mut self) -> usize {
        let backlog = self.inbox.flush();
        self.inbox.shared.stats.backlog.set(backlog as u64);
        backlog
    }

    fn ready(&mut self) -> bool {
        self.inbox.has_requests()
    }

    /// Waits in the kernel for a completion or the wake-up, at most `most`.
    fn wait(&mut self, most: Option<std::time::Duration>) {
        self.ring.wait(most);
    }

    /// Has the kernel signal `eventfd` on each completion.
    fn attach(&mut self, eventfd: std::os::fd::RawFd) -> bool {
        self.ring.submitter().register_eventfd(eventfd).is_ok()
    }

    /// Whether anything is in flight or waits for a group sync.
    fn busy(&self) -> bool {
        !self.ops.is_empty() || self.groups.values().any(Group::busy)
    }

    fn shut_down(&mut self) {
        self.end_all();
    }
}
