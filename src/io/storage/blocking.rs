//! The fallback storage backend: the same requests, run with blocking
//! system calls on the storage worker's own thread. Application workers
//! still never block; only the depth of I/O is lower (one request at a
//! time per worker). Group commit still holds: every durable write drained
//! in one round shares one `fdatasync` per file.

use super::StorageShared;
use super::files::{FileEntry, FileIds, FileTable, check_direct, os_or_misaligned, pwrite_all};
use super::op::{Durability, FileId, StorageCompletion, StorageOp, StorageOutput, StorageRequest};
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
    /// How long to sleep while results wait for room (see `nap.rs`).
    nap: BacklogNap,
    files: FileTable,
    waker: Arc<EventFd>,
    scratch: Vec<(u32, StorageRequest)>,
}

/// A durable write waiting for its round's sync.
struct Waiting {
    client: u32,
    token: u64,
    buf: IoBuf,
    written: usize,
}

impl BlockingStorage {
    pub(super) fn new(shared: Arc<StorageShared>, waker: Arc<EventFd>, ids: Arc<FileIds>) -> Self {
        Self {
            inbox: Inbox::new(shared),
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
                self.execute(client, req, &mut durable);
            }
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

    fn execute(
        &mut self,
        client: u32,
        req: StorageRequest,
        durable: &mut HashMap<u64, Vec<Waiting>>,
    ) {
        let StorageRequest {
            token,
            op,
            reserved,
        } = req;
        let name = op.name();
        let done = |result, buf, bufs| StorageCompletion {
            token,
            result,
            buf,
            bufs,
        };
        let completion = match op {
            StorageOp::Open { path, options } => {
                let result = CString::new(path.as_os_str().as_bytes())
                    .map_err(|_| IoError::Invalid("path contains a NUL byte".into()))
                    .and_then(|p| {
                        // SAFETY: `p` is a valid C string; the result is checked.
                        let fd = unsafe { libc::open(p.as_ptr(), options.flags(), options.mode) };
                        if fd < 0 {
                            Err(IoError::from_io(name, std::io::Error::last_os_error()))
                        } else {
                            // Requests run one at a time here, so nothing
                            // waits for this open.
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
                done(result, None, Vec::new())
            }
            StorageOp::ReadAt {
                file,
                offset,
                len,
                mut buf,
            } => {
                let result = self.read(file, offset, len, &mut buf);
                done(result, Some(buf), Vec::new())
            }
            StorageOp::WriteAt {
                file,
                offset,
                buf,
                durability,
            } => match self.write(file, offset, buf.as_slice(), name) {
                Ok(n) if durability == Durability::Buffered => {
                    done(Ok(StorageOutput::Written(n)), Some(buf), Vec::new())
                }
                Ok(n) if durability == Durability::Linked => {
                    let r = self.sync(file, true).map(|_| StorageOutput::Written(n));
                    done(r, Some(buf), Vec::new())
                }
                Ok(n) => {
                    durable.entry(file.raw()).or_default().push(Waiting {
                        client,
                        token,
                        buf,
                        written: n,
                    });
                    return;
                }
                Err(e) => done(Err(e), Some(buf), Vec::new()),
            },
            StorageOp::WritevAt { file, offset, bufs } => {
                let r = self.writev(file, offset, &bufs);
                done(r, None, bufs)
            }
            StorageOp::Sync { file, data_only } => {
                done(self.sync(file, data_only), None, Vec::new())
            }
            StorageOp::Allocate { file, offset, len } => {
                let r = self.files.get(file).and_then(|f| {
                    // SAFETY: plain system call on a descriptor we own.
                    let rc = unsafe { libc::fallocate(f.fd, 0, offset as i64, len as i64) };
                    if rc < 0 {
                        Err(IoError::from_io(name, std::io::Error::last_os_error()))
                    } else {
                        Ok(StorageOutput::Allocated)
                    }
                });
                done(r, None, Vec::new())
            }
            StorageOp::Close { file } => {
                let r = self.files.remove(file).and_then(|f| {
                    // SAFETY: the table owned this descriptor and forgot it.
                    if unsafe { libc::close(f.fd) } < 0 {
                        Err(IoError::from_io(name, std::io::Error::last_os_error()))
                    } else {
                        Ok(StorageOutput::Closed)
                    }
                });
                done(r, None, Vec::new())
            }
        };
        self.inbox.deliver(client, completion);
    }

    fn read(
        &self,
        file: FileId,
        offset: u64,
        len: usize,
        buf: &mut IoBuf,
    ) -> Result<StorageOutput, IoError> {
        let f = self.files.get(file)?;
        buf.prepare_read(len)?;
        check_direct("read", f, buf.ptr(), len, offset)?;
        let mut done = 0;
        while done < len {
            let dst = &mut buf.as_mut_slice()[done..len];
            // SAFETY: `dst` is a valid writable slice of `dst.len()` bytes.
            let n = unsafe {
                libc::pread(
                    f.fd,
                    dst.as_mut_ptr().cast(),
                    dst.len(),
                    (offset + done as u64) as i64,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                buf.truncate(done);
                return Err(os_or_misaligned("read", f, e));
            }
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        buf.truncate(done);
        Ok(StorageOutput::Read(done))
    }

    fn write(
        &self,
        file: FileId,
        offset: u64,
        data: &[u8],
        op: &'static str,
    ) -> Result<usize, IoError> {
        let f = self.files.get(file)?;
        check_direct(op, f, data.as_ptr(), data.len(), offset)?;
        pwrite_all(op, f, data, offset)
    }

    fn writev(&self, file: FileId, offset: u64, bufs: &[IoBuf]) -> Result<StorageOutput, IoError> {
        if bufs.is_empty() {
            return Err(IoError::Invalid("vectored write of no buffers".into()));
        }
        let f = self.files.get(file)?;
        let total: usize = bufs.iter().map(IoBuf::len).sum();
        for b in bufs {
            check_direct("writev", f, b.ptr(), b.len(), offset)?;
        }
        let iov: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.ptr() as *mut _,
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: every iovec points into a live buffer of its length.
        let n = unsafe { libc::pwritev(f.fd, iov.as_ptr(), iov.len() as i32, offset as i64) };
        if n < 0 {
            return Err(os_or_misaligned(
                "writev",
                f,
                std::io::Error::last_os_error(),
            ));
        }
        if (n as usize) < total {
            // Finish the tail with plain writes (rare: signals, full disks).
            let mut flat = Vec::with_capacity(total);
            bufs.iter()
                .for_each(|b| flat.extend_from_slice(b.as_slice()));
            let rest = self.write(file, offset + n as u64, &flat[n as usize..], "writev")?;
            return Ok(StorageOutput::Written(n as usize + rest));
        }
        Ok(StorageOutput::Written(n as usize))
    }

    fn sync(&self, file: FileId, data_only: bool) -> Result<StorageOutput, IoError> {
        let f = self.files.get(file)?;
        // SAFETY: plain system call on a descriptor we own.
        let rc = unsafe {
            if data_only {
                libc::fdatasync(f.fd)
            } else {
                libc::fsync(f.fd)
            }
        };
        if rc < 0 {
            let op = if data_only { "fdatasync" } else { "fsync" };
            return Err(IoError::from_io(op, std::io::Error::last_os_error()));
        }
        Ok(StorageOutput::Synced)
    }

    /// One `fdatasync` makes every durable write of this round durable.
    fn commit(&mut self, file: FileId, waiting: Vec<Waiting>) {
        let synced = self.sync(file, true);
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
