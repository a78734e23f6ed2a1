//! The fallback storage backend: the same requests, run with blocking
//! system calls. Application workers still never block. Each round's data
//! requests (reads, writes, syncs, `fallocate`) run side by side on
//! helper threads (`helpers.rs`, `StorageConfig::fallback_threads`),
//! which gives the fallback queue depth; opens and closes run on the
//! worker's own thread, in order, after everything taken before them has
//! finished (so a request on a file runs after its open and before its
//! close, as with io_uring). Group commit still holds: every durable write
//! of one round shares one `fdatasync` per file.

mod helpers;
pub(super) mod ops;

use super::StorageShared;
use super::files::{FileEntry, FileIds, FileTable, remove};
use super::op::{FileId, StorageCompletion, StorageOp, StorageOutput, StorageRequest};
use crate::io::inbox::Inbox;
use crate::io::nap::BacklogNap;
use crate::io::wake::EventFd;
use crate::io::{IoBuf, IoError};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Requests taken per round (the group-commit window).
const ROUND: usize = 256;

pub(super) struct BlockingStorage {
    inbox: Inbox<StorageRequest, StorageCompletion>,
    /// Threads that run a round's data requests side by side (`None`: one
    /// at a time, here).
    helpers: Option<helpers::Helpers>,
    /// A round's data requests not yet run.
    jobs: Vec<ops::Job>,
    outcomes: Vec<ops::Done>,
    /// How long to sleep while results wait for room (see `nap.rs`).
    nap: BacklogNap,
    files: FileTable,
    waker: Arc<EventFd>,
    scratch: Vec<(u32, StorageRequest)>,
}

/// A durable write waiting for its round's sync.
pub(super) struct Waiting {
    client: u32,
    token: u64,
    buf: IoBuf,
    written: usize,
}

impl BlockingStorage {
    pub(super) fn new(
        shared: Arc<StorageShared>,
        waker: Arc<EventFd>,
        ids: Arc<FileIds>,
        threads: usize,
        name: &str,
    ) -> Self {
        Self {
            inbox: Inbox::new(shared),
            helpers: (threads > 1)
                .then(|| helpers::Helpers::start(threads, name))
                .flatten(),
            jobs: Vec::new(),
            outcomes: Vec::new(),
            nap: BacklogNap::default(),
            files: FileTable::new(ids),
            waker,
            scratch: Vec::new(),
        }
    }

    /// Runs until stopped; then answers what is queued, closes the files
    /// and delivers every completion (see `Inbox::finish_delivering`).
    pub(super) fn run(mut self, drained: crossbeam_channel::Sender<usize>) {
        loop {
            self.inbox.accept_joining();
            let mut batch = std::mem::take(&mut self.scratch);
            self.inbox.drain(ROUND, |c, r| batch.push((c, r)));
            let worked = !batch.is_empty();
            let mut durable: HashMap<u64, Vec<Waiting>> = HashMap::new();
            for (client, req) in batch.drain(..) {
                self.take(client, req, &mut durable);
            }
            self.run_jobs(&mut durable);
            self.scratch = batch;
            for (file, waiting) in durable {
                self.commit(FileId(file), waiting);
            }
            let backlog = self.inbox.flush();
            self.inbox.shared.stats.backlog.set(backlog as u64);
            let most = self.nap.limit(backlog);
            if self.inbox.shared.stop.load(Ordering::Acquire) {
                break;
            }
            if !worked {
                let shared = self.inbox.shared.clone();
                let waker = self.waker.clone();
                shared.signal.sleep_unless(
                    || self.inbox.has_requests(),
                    || wait_readable(waker.as_raw_fd(), most),
                );
                self.waker.drain();
            }
        }
        for (client, req) in self.inbox.close_all() {
            let c = StorageCompletion::failed(req.token, req.op, IoError::Stopped);
            self.inbox.deliver(client, c);
        }
        for f in self.files.drain().0 {
            // SAFETY: closes a descriptor the file table owned; the table
            // no longer has it and no request is running, so nothing uses it.
            unsafe { libc::close(f.fd) };
        }
        self.inbox.finish_delivering(&drained, || 0);
    }

    /// Queues a data request for this round's batch, or runs an open or a
    /// close now, after the batch taken before it.
    fn take(&mut self, client: u32, req: StorageRequest, durable: &mut HashMap<u64, Vec<Waiting>>) {
        let StorageRequest {
            token,
            op,
            reserved,
        } = req;
        match op {
            StorageOp::Open { path, options } => {
                self.run_jobs(durable);
                let result = self.open(&path, options, reserved);
                self.answer(client, token, result);
            }
            StorageOp::Remove { path } => {
                // After the batch taken before it, like an open.
                self.run_jobs(durable);
                self.answer(client, token, remove(&path));
            }
            StorageOp::Close { file } => {
                self.run_jobs(durable);
                let result = self.files.remove(file).and_then(|f| {
                    // SAFETY: the table owned this descriptor and forgot it;
                    // the batch that could use it has finished.
                    if unsafe { libc::close(f.fd) } < 0 {
                        Err(IoError::from_io("close", std::io::Error::last_os_error()))
                    } else {
                        Ok(StorageOutput::Closed)
                    }
                });
                self.answer(client, token, result);
            }
            op => {
                let Some(id) = op.file() else { return };
                match self.files.get(id) {
                    Ok(entry) => {
                        let file = *entry;
                        self.jobs.push(ops::Job {
                            client,
                            token,
                            op,
                            file,
                        });
                    }
                    Err(e) => {
                        let c = StorageCompletion::failed(token, op, e);
                        self.inbox.deliver(client, c);
                    }
                }
            }
        }
    }

    fn answer(&mut self, client: u32, token: u64, result: Result<StorageOutput, IoError>) {
        let c = StorageCompletion {
            token,
            result,
            buf: None,
            bufs: Vec::new(),
        };
        self.inbox.deliver(client, c);
    }

    fn open(
        &mut self,
        path: &std::path::Path,
        options: crate::io::OpenOptions,
        reserved: Option<FileId>,
    ) -> Result<StorageOutput, IoError> {
        let result = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| IoError::Invalid("path contains a NUL byte".into()))
            .and_then(|p| {
                // SAFETY: `p` is a valid C string; the result is checked.
                let fd = unsafe { libc::open(p.as_ptr(), options.flags(), options.mode) };
                if fd < 0 {
                    Err(IoError::from_io("open", std::io::Error::last_os_error()))
                } else {
                    // Requests after the open are taken after it returns,
                    // so nothing waits for it.
                    let id = self.files.begin_open(reserved);
                    let entry = FileEntry {
                        fd,
                        direct: options.direct,
                        fixed: None,
                    };
                    self.files.opened(id, entry);
                    Ok(StorageOutput::Opened(id))
                }
            });
        if result.is_err()
            && let Some(id) = reserved
        {
            // The id was reserved but never entered the table.
            self.files.release_reserved(id);
        }
        result
    }

    /// Runs the queued data requests (on the helpers when there are
    /// several) and answers them; group-commit writes join `durable`.
    fn run_jobs(&mut self, durable: &mut HashMap<u64, Vec<Waiting>>) {
        if self.jobs.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.jobs);
        let mut outcomes = std::mem::take(&mut self.outcomes);
        match &self.helpers {
            Some(h) if jobs.len() > 1 => h.run(jobs, &mut outcomes),
            _ => outcomes.extend(jobs.into_iter().map(ops::run)),
        }
        for done in outcomes.drain(..) {
            match done {
                ops::Done::Answer(client, c) => self.inbox.deliver(client, c),
                ops::Done::Durable(file, w) => durable.entry(file).or_default().push(w),
            }
        }
        self.outcomes = outcomes;
    }

    /// One `fdatasync` makes every durable write of this round durable.
    fn commit(&mut self, file: FileId, waiting: Vec<Waiting>) {
        let synced = self.files.get(file).and_then(|f| ops::sync(f, true));
        for w in waiting {
            let result = match &synced {
                Ok(_) => Ok(StorageOutput::Written(w.written)),
                Err(e) => Err(clone_error(e)),
            };
            let c = StorageCompletion {
                token: w.token,
                result,
                buf: Some(w.buf),
                bufs: Vec::new(),
            };
            self.inbox.deliver(w.client, c);
        }
    }
}

/// One sync error answers many writes.
pub(crate) fn clone_error(e: &IoError) -> IoError {
    match e {
        IoError::Os { op, source } => match source.raw_os_error() {
            Some(code) => IoError::os(op, code),
            None => IoError::Os {
                op,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        other => IoError::Invalid(other.to_string()),
    }
}

/// Sleeps until the eventfd is readable.
fn wait_readable(fd: i32, most: Option<Duration>) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = most.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
    // SAFETY: one valid pollfd; `ts_ptr` is null (wait until readable or a
    // signal) or points at `ts`, alive for the call; no signal mask.
    unsafe { libc::ppoll(&mut p, 1, ts_ptr, std::ptr::null()) };
}
