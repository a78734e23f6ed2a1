//! The storage worker: a thread that owns one io_uring (or, where io_uring
//! is unavailable, runs the same requests with blocking system calls) and
//! serves files to any number of clients.
//!
//! Clients submit [`StorageOp`]s tagged with a token; completions come back
//! through each client's [`ResultSink`], so an application worker gets them
//! as ordinary messages in its own loop and never blocks on disk.

mod blocking;
mod files;
mod op;
mod uring;

pub use op::{Durability, FileId, OpenOptions, StorageCompletion, StorageOp, StorageOutput};

use super::backend::{BackendChoice, Chosen, IoBackendKind, Started, choose, spawn_worker};
use super::buf::{FixedBuf, FixedRegion};
use super::error::{IoError, SubmitError};
use super::inbox::{self, Shared};
use super::wake::EventFd;
use super::{IoBuf, OpenOptions as Open};
use crate::channel::RecvTimeoutError;
use crate::worker::{ResultQueue, ResultSink};
use crate::{Error, Result};
use files::FileIds;
use op::StorageRequest;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How a storage worker is set up.
///
/// ```
/// use shared_nothing::io::{StorageConfig, BackendChoice};
/// let c = StorageConfig::new().backend(BackendChoice::Fallback).fixed_buffers(8, 65536);
/// assert_eq!(c.ring_entries, 256);
/// ```
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// io_uring or the fallback.
    pub backend: BackendChoice,
    /// Submission queue entries (requests in flight at most).
    pub ring_entries: u32,
    /// Requests each client's ring into the worker holds.
    pub client_queue: usize,
    /// Requests each client keeps on its own side, in order, when its ring
    /// is full (see [`StorageClient`]); past that `submit` reports `Full`.
    /// 0 turns the client-side queue off: a full ring is reported at once.
    pub submit_queue: usize,
    /// Registered buffers: how many, and how large each is (0 for none).
    /// Registration counts against `RLIMIT_MEMLOCK` (8 MiB for a normal
    /// user here); if it fails the worker runs without them.
    pub fixed_buffers: (usize, usize),
    /// The CPU to pin to.
    pub cpu: Option<usize>,
    /// How long to keep polling with nothing to do before sleeping in the
    /// kernel (latency vs spare CPU).
    pub spin: std::time::Duration,
    /// Thread name.
    pub name: String,
    /// Fallback backend only: helper threads that run a round's reads and
    /// writes side by side (its queue depth); 0 or 1 runs them one at a
    /// time on the worker's thread.
    pub fallback_threads: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl StorageConfig {
    /// 256 entries, 64 registered buffers of 64 KiB, no pinning.
    pub fn new() -> Self {
        Self {
            backend: BackendChoice::Auto,
            ring_entries: 256,
            client_queue: 1024,
            submit_queue: DEFAULT_SUBMIT_QUEUE,
            fixed_buffers: (64, 64 * 1024),
            cpu: None,
            spin: std::time::Duration::from_micros(50),
            name: "storage-0".into(),
            fallback_threads: 4,
        }
    }

    /// Chooses the backend.
    pub fn backend(mut self, b: BackendChoice) -> Self {
        self.backend = b;
        self
    }

    /// Sets the registered buffers.
    pub fn fixed_buffers(mut self, count: usize, size: usize) -> Self {
        self.fixed_buffers = (count, size);
        self
    }

    /// Sets how many requests each client keeps on its own side when its
    /// ring is full (0: none).
    pub fn submit_queue(mut self, n: usize) -> Self {
        self.submit_queue = n;
        self
    }

    /// Sets the submission queue size.
    pub fn ring_entries(mut self, n: u32) -> Self {
        self.ring_entries = n.clamp(8, 32768);
        self
    }

    /// Pins the worker.
    pub fn cpu(mut self, cpu: Option<usize>) -> Self {
        self.cpu = cpu;
        self
    }

    /// Names the thread.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the fallback's helper threads (see
    /// [`fallback_threads`](Self#structfield.fallback_threads)).
    pub fn fallback_threads(mut self, n: usize) -> Self {
        self.fallback_threads = n;
        self
    }
}

type StorageShared = Shared<StorageRequest, StorageCompletion>;

/// The default bound of a client's own queue ([`StorageConfig::submit_queue`]).
pub const DEFAULT_SUBMIT_QUEUE: usize = 64 * 1024;

/// A running storage worker. Clients come from [`client`](Self::client);
/// dropping the worker (or [`stop`](Self::stop)) finishes every request in
/// flight and answers queued ones with [`IoError::Stopped`].
///
/// ```
/// use shared_nothing::io::{StorageWorker, StorageConfig, OpenOptions};
/// let dir = std::env::temp_dir().join(format!("sn-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let worker = StorageWorker::start(0, StorageConfig::new()).unwrap();
/// let mut io = worker.blocking_client().unwrap();
/// let f = io.open(dir.join("a"), OpenOptions::read_write_create()).unwrap();
/// io.write_at(f, 0, b"hello".to_vec()).unwrap();
/// io.fdatasync(f).unwrap();
/// assert_eq!(io.read_at(f, 0, 5).unwrap(), b"hello");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct StorageWorker {
    index: usize,
    shared: Arc<StorageShared>,
    waker: Arc<EventFd>,
    backend: IoBackendKind,
    fixed: Option<Arc<FixedRegion>>,
    /// File ids, reserved by clients' opens and used by the worker.
    ids: Arc<FileIds>,
    join: Option<JoinHandle<()>>,
    submit_queue: usize,
    /// Once stopping, how many completions still wait for full targets.
    drained: crossbeam_channel::Receiver<usize>,
    /// Runs on an application worker's thread (`start_local`).
    local: bool,
}

impl std::fmt::Debug for StorageShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageShared")
    }
}

impl StorageWorker {
    /// Starts storage worker `index` (the index is part of every
    /// [`FileId`] it hands out).
    ///
    /// # Errors
    /// `Io` if the eventfd or thread cannot be created; `InvalidConfig` if
    /// io_uring was required ([`BackendChoice::Uring`]) but cannot be set
    /// up, or `index` is over 255 (ids carry it in 8 bits).
    pub fn start(index: usize, config: StorageConfig) -> Result<Self> {
        super::slots::check_index("storage", index)?;
        let waker = Arc::new(EventFd::new()?);
        let w = waker.clone();
        let shared = Shared::new(Arc::new(move || w.notify()), config.client_queue);
        let (s, w, cfg) = (shared.clone(), waker.clone(), config.clone());
        let (drained_tx, drained) = crossbeam_channel::bounded(1);
        let ids = FileIds::new(index);
        let worker_ids = ids.clone();
        let (join, (backend, fixed)) = spawn_worker(&config.name, config.cpu, move || {
            let setup =
                || uring::UringStorage::new(index, &cfg, s.clone(), w.clone(), worker_ids.clone());
            let started: Started<(IoBackendKind, Option<Arc<FixedRegion>>)> =
                match choose(cfg.backend, setup)? {
                    Chosen::Uring(u) => Ok((
                        (IoBackendKind::IoUring, u.fixed_region()),
                        Box::new(move || u.run(drained_tx)),
                    )),
                    Chosen::Fallback(reason) => {
                        let b = blocking::BlockingStorage::new(
                            s,
                            w,
                            worker_ids,
                            cfg.fallback_threads,
                            &cfg.name,
                        );
                        Ok((
                            (IoBackendKind::Fallback { reason }, None),
                            Box::new(move || b.run(drained_tx)),
                        ))
                    }
                };
            started
        })?;
        super::backend::trace_started("storage", index, config.cpu, &backend);
        Ok(Self {
            index,
            shared,
            waker,
            backend,
            fixed,
            ids,
            join: Some(join),
            submit_queue: config.submit_queue,
            drained,
            local: false,
        })
    }

    /// Starts storage worker `index` on the calling application worker's
    /// own thread (thread-per-core mode), as
    /// [`NetworkWorker::start_local`](crate::io::NetworkWorker::start_local)
    /// does for sockets: its io_uring is polled once per loop round after
    /// the message batches, and the worker sleeps in it, or in the local
    /// network backend started before it (whose wait its completions then
    /// wake). Call it from [`Worker::init`](crate::worker::Worker::init)
    /// and keep the handle in the worker's state; clients, requests and
    /// completions are as with [`start`](Self::start). `config.cpu`,
    /// `config.spin` and `config.fallback_threads` are ignored.
    ///
    /// # Errors
    /// `InvalidConfig` off a worker thread, on a worker that runs one
    /// already, or where io_uring is unavailable or not chosen (the
    /// fallback blocks, so it needs a thread of its own: use
    /// [`start`](Self::start)); `Io` if the eventfd cannot be created.
    pub fn start_local(index: usize, config: StorageConfig) -> Result<Self> {
        super::slots::check_index("storage", index)?;
        let waker = Arc::new(EventFd::new()?);
        let primary = crate::worker::local::primary_waker();
        let secondary = primary.is_some();
        // Clients wake the worker through the driver it sleeps in.
        let wake = primary.unwrap_or_else(|| {
            let w = waker.clone();
            Arc::new(move || w.notify())
        });
        let shared = Shared::new(wake, config.client_queue);
        let ids = FileIds::new(index);
        let setup = || {
            uring::UringStorage::with_coop(
                index,
                &config,
                shared.clone(),
                waker.clone(),
                ids.clone(),
                !secondary,
            )
        };
        let refused = |why: String| {
            Error::InvalidConfig(format!("StorageWorker::start_local({index}): {why}"))
        };
        let st = match choose(config.backend, setup)? {
            Chosen::Uring(st) => st,
            Chosen::Fallback(reason) => {
                return Err(refused(format!(
                    "thread-per-core storage needs io_uring ({reason}); the fallback blocks, so \
                     use StorageWorker::start"
                )));
            }
        };
        let fixed = st.fixed_region();
        let driver = crate::io::local::Local::new("storage", st, shared.clone(), waker.clone());
        if let Err((e, _)) = crate::worker::local::install(Box::new(driver)) {
            return Err(refused(e.to_string()));
        }
        let backend = IoBackendKind::IoUring;
        super::backend::trace_started("storage (local)", index, None, &backend);
        crate::io::stats::report_local("storage", index, crate::io::stats::source(&shared));
        Ok(Self {
            index,
            shared,
            waker,
            backend,
            fixed,
            ids,
            join: None,
            submit_queue: config.submit_queue,
            drained: crossbeam_channel::bounded(1).1,
            local: true,
        })
    }

    /// What the worker has done so far.
    pub fn stats(&self) -> crate::io::IoStats {
        self.shared.stats.snapshot()
    }

    /// Reads [`stats`](Self::stats) for as long as the worker's state
    /// lives, without keeping it alive (for the pool's metrics).
    pub(crate) fn stats_source(&self) -> crate::io::stats::StatsSource {
        crate::io::stats::source(&self.shared)
    }

    /// The worker's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Which backend runs the requests (and why, for the fallback).
    pub fn backend(&self) -> &IoBackendKind {
        &self.backend
    }

    /// A client whose completions go to `sink`, keeping up to
    /// [`StorageConfig::submit_queue`] requests on its own side when its
    /// ring is full.
    ///
    /// # Errors
    /// `WorkerStopped` if the worker has stopped.
    pub fn client(&self, sink: ResultSink<StorageCompletion>) -> Result<StorageClient> {
        self.client_with_queue(sink, self.submit_queue)
    }

    /// A client whose own queue holds at most `limit` requests (0: a full
    /// ring is reported at once, as [`SubmitError::Full`]).
    ///
    /// # Errors
    /// `WorkerStopped` if the worker has stopped.
    pub fn client_with_queue(
        &self,
        sink: ResultSink<StorageCompletion>,
        limit: usize,
    ) -> Result<StorageClient> {
        let ring = self
            .shared
            .join(sink, limit)
            .map_err(|_| Error::WorkerStopped {
                worker: format!("storage-{}", self.index),
            })?;
        Ok(StorageClient {
            ring,
            fixed: self.fixed.clone(),
            ids: self.ids.clone(),
            _waker: self.waker.clone(),
        })
    }

    /// A client for a plain thread: each call waits for its answer.
    ///
    /// # Errors
    /// As [`client`](Self::client).
    pub fn blocking_client(&self) -> Result<BlockingStorageClient> {
        let (sink, queue) = ResultSink::queue();
        Ok(BlockingStorageClient {
            client: self.client(sink)?,
            queue,
            next_token: 0,
        })
    }

    /// Stops the worker. What it guarantees: every request the worker
    /// accepted gets exactly one completion, delivered to its client's
    /// sink; none is dropped, however long its target takes to make room
    /// (only a target that is gone for good, its worker stopped or its
    /// queue dropped, loses what was still on its way to it).
    ///
    /// Requests in flight finish (their results are real: a write that ran
    /// is reported as written), requests still queued are answered with
    /// [`IoError::Stopped`], and every file is closed before this returns.
    /// If some completions still wait for room in a full target, this
    /// returns anyway (the target may be the very worker calling `stop`)
    /// and the worker's thread stays on, delivering them, until each is
    /// taken or its target is gone; otherwise the thread is joined.
    /// Idempotent.
    ///
    /// # Errors
    /// [`crate::Error::WorkerFailed`] if the worker's thread panicked.
    pub fn stop(&mut self) -> Result<()> {
        self.shared.request_stop();
        if self.local {
            // The worker's loop ends it on its next round; a worker asleep
            // is woken through the signal its clients use (whose waker
            // wakes the driver it sleeps in).
            self.shared.signal.notify_now();
            return Ok(());
        }
        let Some(j) = self.join.take() else {
            return Ok(());
        };
        tracing::info!(role = "storage", worker = self.index, "I/O worker stopping");
        match self.drained.recv() {
            // Completions still wait for room: the thread delivers them
            // and then exits on its own.
            Ok(waiting) if waiting > 0 => Ok(()),
            _ => crate::io::backend::join_worker(j),
        }
    }
}

impl Drop for StorageWorker {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Submits storage requests to one worker. Each method takes a `token`
/// that comes back in the [`StorageCompletion`].
///
/// # The client's own queue
///
/// Requests that do not fit in the ring into the worker wait on the
/// client's side, in order, up to a bound ([`StorageConfig::submit_queue`],
/// [`StorageWorker::client_with_queue`], [`set_queue_limit`](Self::set_queue_limit));
/// only past it does a submit hand the request back
/// ([`SubmitError::Full`]). What waits is pushed into the ring on the next
/// submit and by [`flush_queued`](Self::flush_queued), which the owning
/// worker calls when room may have appeared: from
/// [`Worker::after_round`](crate::worker::Worker::after_round) (a
/// completion arriving ends a round) or `tick`. Requests from one client
/// reach the worker in the order they were submitted.
///
/// Nothing queued is lost:
/// - **the client is dropped**: the worker runs what was queued after
///   everything in the ring, as if it had been submitted, and delivers the
///   completions to the sink as usual;
/// - **the worker stops**: what was queued is answered with
///   [`IoError::Stopped`] completions, like the requests left in the ring;
///   a submit after that hands the request back ([`SubmitError::Stopped`]);
/// - [`take_queued`](Self::take_queued) hands everything that waits back.
#[derive(Debug)]
pub struct StorageClient {
    ring: inbox::Queued<StorageRequest>,
    fixed: Option<Arc<FixedRegion>>,
    ids: Arc<FileIds>,
    _waker: Arc<EventFd>,
}

impl StorageClient {
    /// Submits any operation: into the ring, or, when the ring is full or
    /// requests already wait, behind them in the client's own queue (see
    /// the [type docs](Self)). Queued requests are pushed first.
    ///
    /// # Errors
    /// `Full` when the ring is full and the client's queue holds its bound
    /// (backpressure: take some completions, [`flush_queued`](Self::flush_queued),
    /// retry), or `Stopped`; either hands the operation back.
    #[inline]
    pub fn submit(&mut self, token: u64, op: StorageOp) -> Result<(), SubmitError<StorageOp>> {
        self.ring
            .submit(StorageRequest {
                token,
                op,
                reserved: None,
            })
            .map_err(|e| match e {
                SubmitError::Full(r) => SubmitError::Full(r.op),
                SubmitError::Stopped(r) => SubmitError::Stopped(r.op),
            })
    }

    /// Pushes requests waiting in the client's queue into the ring, as far
    /// as it has room; returns how many still wait. Call it when room may
    /// have appeared (from `after_round`, or when a completion arrives).
    /// Once the worker has stopped, nothing waits: what did is answered
    /// with [`IoError::Stopped`] completions.
    pub fn flush_queued(&mut self) -> usize {
        self.ring.flush()
    }

    /// Requests waiting in the client's queue (not yet in the ring).
    pub fn queued(&self) -> usize {
        self.ring.queued()
    }

    /// The bound of the client's queue.
    pub fn queue_limit(&self) -> usize {
        self.ring.limit()
    }

    /// Sets the bound of the client's queue (0: none; requests already
    /// waiting stay queued).
    pub fn set_queue_limit(&mut self, limit: usize) {
        self.ring.set_limit(limit);
    }

    /// Hands back every request still waiting in the client's queue, in
    /// order, as `(token, op)`; they will not run (and get no completion).
    pub fn take_queued(&mut self) -> Vec<(u64, StorageOp)> {
        self.ring
            .take_queued()
            .into_iter()
            .map(|r| {
                // An open that will not run gives its reserved id back.
                if let Some(id) = r.reserved {
                    self.ids.release(id);
                }
                (r.token, r.op)
            })
            .collect()
    }

    /// Opens a file, and returns its id at once: requests on it may follow
    /// right away (reads, writes, syncs, a close), from this client; the
    /// worker holds them until the open completes and runs them in order
    /// then, or fails them with [`IoError::NotOpen`] if the open fails.
    /// The open's own completion (`Opened(id)`, or the error) comes as
    /// usual.
    ///
    /// ```
    /// use shared_nothing::io::{Durability, OpenOptions, StorageConfig, StorageOutput, StorageWorker};
    /// use shared_nothing::worker::ResultSink;
    /// let w = StorageWorker::start(0, StorageConfig::new()).unwrap();
    /// let (sink, mut done) = ResultSink::queue();
    /// let mut io = w.client(sink).unwrap();
    /// let path = std::env::temp_dir().join(format!("sn-open-doc-{}", std::process::id()));
    /// let f = io.open(1, &path, OpenOptions::read_write_create()).unwrap();
    /// io.write_at(2, f, 0, b"at once".to_vec(), Durability::Linked).unwrap();
    /// assert_eq!(done.recv().unwrap().result.unwrap(), StorageOutput::Opened(f));
    /// assert_eq!(done.recv().unwrap().result.unwrap(), StorageOutput::Written(7));
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`submit`](Self::submit) (the operation comes back; the id is
    /// not used).
    pub fn open(
        &mut self,
        token: u64,
        path: impl AsRef<Path>,
        options: Open,
    ) -> Result<FileId, SubmitError<StorageOp>> {
        let path = path.as_ref().to_path_buf();
        let id = self.ids.reserve();
        let req = StorageRequest {
            token,
            op: StorageOp::Open { path, options },
            reserved: Some(id),
        };
        match self.ring.submit(req) {
            Ok(()) => Ok(id),
            Err(e) => {
                self.ids.release(id);
                Err(match e {
                    SubmitError::Full(r) => SubmitError::Full(r.op),
                    SubmitError::Stopped(r) => SubmitError::Stopped(r.op),
                })
            }
        }
    }

    /// Reads `len` bytes at `offset` into `buf`.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    pub fn read_at(
        &mut self,
        token: u64,
        file: FileId,
        offset: u64,
        len: usize,
        buf: impl Into<IoBuf>,
    ) -> Result<(), SubmitError<StorageOp>> {
        let buf = buf.into();
        self.submit(
            token,
            StorageOp::ReadAt {
                file,
                offset,
                len,
                buf,
            },
        )
    }

    /// Writes `buf` at `offset` with the given durability.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    pub fn write_at(
        &mut self,
        token: u64,
        file: FileId,
        offset: u64,
        buf: impl Into<IoBuf>,
        durability: Durability,
    ) -> Result<(), SubmitError<StorageOp>> {
        let buf = buf.into();
        self.submit(
            token,
            StorageOp::WriteAt {
                file,
                offset,
                buf,
                durability,
            },
        )
    }

    /// Writes `bufs` back to back from `offset`.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    pub fn writev_at(
        &mut self,
        token: u64,
        file: FileId,
        offset: u64,
        bufs: Vec<IoBuf>,
    ) -> Result<(), SubmitError<StorageOp>> {
        self.submit(token, StorageOp::WritevAt { file, offset, bufs })
    }

    /// `fsync` (`data_only = false`) or `fdatasync`.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    pub fn sync(
        &mut self,
        token: u64,
        file: FileId,
        data_only: bool,
    ) -> Result<(), SubmitError<StorageOp>> {
        self.submit(token, StorageOp::Sync { file, data_only })
    }

    /// Reserves space (`fallocate`).
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    pub fn allocate(
        &mut self,
        token: u64,
        file: FileId,
        offset: u64,
        len: u64,
    ) -> Result<(), SubmitError<StorageOp>> {
        self.submit(token, StorageOp::Allocate { file, offset, len })
    }

    /// Removes the file at `path` (`unlink`); `StorageOutput::Removed`
    /// follows.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    pub fn remove(
        &mut self,
        token: u64,
        path: impl AsRef<Path>,
    ) -> Result<(), SubmitError<StorageOp>> {
        let path = path.as_ref().to_path_buf();
        self.submit(token, StorageOp::Remove { path })
    }

    /// Sets the file's length (`ftruncate`): cuts it, or extends it with a
    /// hole that reads as zeros.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    pub fn set_len(
        &mut self,
        token: u64,
        file: FileId,
        len: u64,
    ) -> Result<(), SubmitError<StorageOp>> {
        self.submit(token, StorageOp::SetLen { file, len })
    }

    /// Closes a file.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    pub fn close(&mut self, token: u64, file: FileId) -> Result<(), SubmitError<StorageOp>> {
        self.submit(token, StorageOp::Close { file })
    }

    /// A registered buffer of this worker, if one is free (I/O on it skips
    /// per-request page pinning). `None` when all are in use or the worker
    /// has none (fallback backend, memlock limit).
    pub fn fixed_buf(&self) -> Option<FixedBuf> {
        self.fixed.as_ref().and_then(|r| r.take())
    }

    /// Whether the worker has stopped.
    pub fn is_stopped(&self) -> bool {
        self.ring.is_closed()
    }
}

/// A storage client for plain threads (tools, tests, start-up code): each
/// call submits and waits for its answer. Application workers use
/// [`StorageClient`] with a sink into their loop instead.
#[derive(Debug)]
pub struct BlockingStorageClient {
    client: StorageClient,
    queue: ResultQueue<StorageCompletion>,
    next_token: u64,
}

/// How long a blocking call waits before reporting the worker as stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a blocking call pushes requests waiting in its client's queue.
const QUEUED_POLL: Duration = Duration::from_micros(200);

impl BlockingStorageClient {
    /// Submits `op` and waits for its completion (pushing what waits in
    /// the client's queue meanwhile).
    ///
    /// # Errors
    /// The request's [`IoError`]; `Stopped` if the worker is gone.
    pub fn call(&mut self, op: StorageOp) -> std::result::Result<StorageCompletion, IoError> {
        let token = self.next_token;
        self.next_token += 1;
        let mut op = op;
        loop {
            match self.client.submit(token, op) {
                Ok(()) => break,
                Err(SubmitError::Full(o)) => {
                    op = o;
                    std::thread::yield_now();
                }
                Err(SubmitError::Stopped(_)) => return Err(IoError::Stopped),
            }
        }
        let deadline = std::time::Instant::now() + CALL_TIMEOUT;
        loop {
            // While requests wait on this side, wake now and then to push
            // them (nothing else would).
            let wait = match self.client.flush_queued() {
                0 => deadline.saturating_duration_since(std::time::Instant::now()),
                _ => QUEUED_POLL,
            };
            match self.queue.recv_timeout(wait) {
                Ok(c) if c.token == token => return Ok(c),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) if std::time::Instant::now() < deadline => {}
                Err(_) => return Err(IoError::Stopped),
            }
        }
    }

    fn output(&mut self, op: StorageOp) -> std::result::Result<StorageOutput, IoError> {
        self.call(op)?.result
    }

    /// Opens a file.
    ///
    /// # Errors
    /// The kernel's error (`ENOENT` for a missing file without `create`).
    pub fn open(
        &mut self,
        path: impl AsRef<Path>,
        options: Open,
    ) -> std::result::Result<FileId, IoError> {
        let path = path.as_ref().to_path_buf();
        match self.output(StorageOp::Open { path, options })? {
            StorageOutput::Opened(f) => Ok(f),
            other => Err(IoError::Invalid(format!("open answered {other:?}"))),
        }
    }

    /// Reads up to `len` bytes at `offset`.
    ///
    /// # Errors
    /// The request's error.
    pub fn read_at(
        &mut self,
        file: FileId,
        offset: u64,
        len: usize,
    ) -> std::result::Result<Vec<u8>, IoError> {
        let c = self.call(StorageOp::ReadAt {
            file,
            offset,
            len,
            buf: IoBuf::Vec(Vec::new()),
        })?;
        c.result?;
        Ok(c.buf.map(IoBuf::into_vec).unwrap_or_default())
    }

    /// Reads into `buf` (aligned or registered memory), returning it.
    ///
    /// # Errors
    /// The request's error.
    pub fn read_into(
        &mut self,
        file: FileId,
        offset: u64,
        len: usize,
        buf: impl Into<IoBuf>,
    ) -> std::result::Result<IoBuf, IoError> {
        let c = self.call(StorageOp::ReadAt {
            file,
            offset,
            len,
            buf: buf.into(),
        })?;
        c.result?;
        c.buf
            .ok_or_else(|| IoError::Invalid("read returned no buffer".into()))
    }

    /// Writes all of `buf` at `offset` (buffered).
    ///
    /// # Errors
    /// The request's error.
    pub fn write_at(
        &mut self,
        file: FileId,
        offset: u64,
        buf: impl Into<IoBuf>,
    ) -> std::result::Result<usize, IoError> {
        self.write_with(file, offset, buf, Durability::Buffered)
    }

    /// Writes all of `buf` at `offset` with the given durability.
    ///
    /// # Errors
    /// The request's error.
    pub fn write_with(
        &mut self,
        file: FileId,
        offset: u64,
        buf: impl Into<IoBuf>,
        durability: Durability,
    ) -> std::result::Result<usize, IoError> {
        let buf = buf.into();
        match self.output(StorageOp::WriteAt {
            file,
            offset,
            buf,
            durability,
        })? {
            StorageOutput::Written(n) => Ok(n),
            other => Err(IoError::Invalid(format!("write answered {other:?}"))),
        }
    }

    /// `fdatasync`.
    ///
    /// # Errors
    /// The kernel's error.
    pub fn fdatasync(&mut self, file: FileId) -> std::result::Result<(), IoError> {
        self.output(StorageOp::Sync {
            file,
            data_only: true,
        })
        .map(drop)
    }

    /// `fsync`.
    ///
    /// # Errors
    /// The kernel's error.
    pub fn fsync(&mut self, file: FileId) -> std::result::Result<(), IoError> {
        self.output(StorageOp::Sync {
            file,
            data_only: false,
        })
        .map(drop)
    }

    /// `fallocate`.
    ///
    /// # Errors
    /// The kernel's error.
    pub fn allocate(
        &mut self,
        file: FileId,
        offset: u64,
        len: u64,
    ) -> std::result::Result<(), IoError> {
        self.output(StorageOp::Allocate { file, offset, len })
            .map(drop)
    }

    /// `unlink`s the file at `path`.
    ///
    /// # Errors
    /// The kernel's error (`ENOENT` for a missing file).
    pub fn remove(&mut self, path: impl AsRef<Path>) -> std::result::Result<(), IoError> {
        let path = path.as_ref().to_path_buf();
        self.output(StorageOp::Remove { path }).map(drop)
    }

    /// `ftruncate`: cuts the file to `len` bytes or extends it with a hole.
    ///
    /// # Errors
    /// The kernel's error.
    pub fn set_len(&mut self, file: FileId, len: u64) -> std::result::Result<(), IoError> {
        self.output(StorageOp::SetLen { file, len }).map(drop)
    }

    /// Closes a file.
    ///
    /// # Errors
    /// `NotOpen` for an unknown id.
    pub fn close(&mut self, file: FileId) -> std::result::Result<(), IoError> {
        self.output(StorageOp::Close { file }).map(drop)
    }

    /// The asynchronous client inside (to submit many requests, then
    /// collect with [`completions`](Self::completions)).
    pub fn client(&mut self) -> &mut StorageClient {
        &mut self.client
    }

    /// The completion queue of [`client`](Self::client)'s requests.
    pub fn completions(&mut self) -> &mut ResultQueue<StorageCompletion> {
        &mut self.queue
    }
}

#[cfg(test)]
mod tests;
