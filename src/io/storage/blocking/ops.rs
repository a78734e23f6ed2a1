//! The fallback's data operations as plain functions of an open file's
//! entry: reads, writes, vectored writes, syncs, `fallocate`, `ftruncate`. They need no
//! worker state, so a helper thread runs them as well as the worker.

use super::Waiting;
use crate::io::storage::files::{FileEntry, check_direct, os_or_misaligned, pwrite_all, set_len};
use crate::io::storage::op::{Durability, StorageCompletion, StorageOp, StorageOutput};
use crate::io::{IoBuf, IoError};

/// A data request with its file's entry, ready to run anywhere.
pub(super) struct Job {
    pub(super) client: u32,
    pub(super) token: u64,
    pub(super) op: StorageOp,
    pub(super) file: FileEntry,
}

/// What running a [`Job`] produced.
pub(super) enum Done {
    /// Answer the client.
    Answer(u32, StorageCompletion),
    /// A written group-commit write of file `.0`, waiting for the round's
    /// sync.
    Durable(u64, Waiting),
}

/// Runs a data request (never an open or close) with blocking calls.
pub(super) fn run(job: Job) -> Done {
    let Job {
        client,
        token,
        op,
        file: f,
    } = job;
    #[cfg(test)]
    let failed = match &op {
        StorageOp::ReadAt { offset, .. } => seam::hold(*offset),
        _ => false,
    };
    let done = |result, buf, bufs| {
        Done::Answer(
            client,
            StorageCompletion {
                token,
                result,
                buf,
                bufs,
            },
        )
    };
    match op {
        StorageOp::ReadAt {
            offset,
            len,
            mut buf,
            ..
        } => {
            let result = read(&f, offset, len, &mut buf);
            #[cfg(test)]
            let result = if failed {
                Err(IoError::Invalid(
                    "seam: no other request ran alongside".into(),
                ))
            } else {
                result
            };
            done(result, Some(buf), Vec::new())
        }
        StorageOp::WriteAt {
            file,
            offset,
            buf,
            durability,
        } => match write(&f, offset, buf.as_slice(), "write") {
            Ok(n) if durability == Durability::Buffered => {
                done(Ok(StorageOutput::Written(n)), Some(buf), Vec::new())
            }
            Ok(n) if durability == Durability::Linked => {
                let r = sync(&f, true).map(|_| StorageOutput::Written(n));
                done(r, Some(buf), Vec::new())
            }
            Ok(n) => Done::Durable(
                file.raw(),
                Waiting {
                    client,
                    token,
                    buf,
                    written: n,
                },
            ),
            Err(e) => done(Err(e), Some(buf), Vec::new()),
        },
        StorageOp::WritevAt { offset, bufs, .. } => {
            let r = writev(&f, offset, &bufs);
            done(r, None, bufs)
        }
        StorageOp::Sync { data_only, .. } => done(sync(&f, data_only), None, Vec::new()),
        StorageOp::Allocate { offset, len, .. } => {
            // SAFETY: plain system call on a descriptor the file table owns.
            let rc = unsafe { libc::fallocate(f.fd, 0, offset as i64, len as i64) };
            let r = if rc < 0 {
                Err(IoError::from_io(
                    "fallocate",
                    std::io::Error::last_os_error(),
                ))
            } else {
                Ok(StorageOutput::Allocated)
            };
            done(r, None, Vec::new())
        }
        StorageOp::SetLen { len, .. } => done(set_len(&f, len), None, Vec::new()),
        op @ (StorageOp::Open { .. } | StorageOp::Close { .. } | StorageOp::Remove { .. }) => {
            let e = IoError::Invalid(format!("{} is not a data request", op.name()));
            done(Err(e), None, Vec::new())
        }
    }
}

pub(super) fn read(
    f: &FileEntry,
    offset: u64,
    len: usize,
    buf: &mut IoBuf,
) -> Result<StorageOutput, IoError> {
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

fn write(f: &FileEntry, offset: u64, data: &[u8], op: &'static str) -> Result<usize, IoError> {
    check_direct(op, f, data.as_ptr(), data.len(), offset)?;
    pwrite_all(op, f, data, offset)
}

fn writev(f: &FileEntry, offset: u64, bufs: &[IoBuf]) -> Result<StorageOutput, IoError> {
    if bufs.is_empty() {
        return Err(IoError::Invalid("vectored write of no buffers".into()));
    }
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
        let rest = write(f, offset + n as u64, &flat[n as usize..], "writev")?;
        return Ok(StorageOutput::Written(n as usize + rest));
    }
    Ok(StorageOutput::Written(n as usize))
}

pub(super) fn sync(f: &FileEntry, data_only: bool) -> Result<StorageOutput, IoError> {
    // SAFETY: plain system call on a descriptor the file table owns.
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

/// Test seam: reads at magic offsets wait, so a test can tell requests that
/// run side by side from requests run one at a time.
#[cfg(test)]
pub(crate) mod seam {
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    /// A read at this offset waits until [`open_gate`] (at most 10 s).
    pub(crate) const GATE_OFFSET: u64 = 0x5eed_0000_0000;
    /// A read at this offset returns only once two such reads run at the
    /// same time; after 10 s alone it fails.
    pub(crate) const PAIR_OFFSET: u64 = 0x5eed_0001_0000;

    static GATE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
    static PAIR: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

    pub(crate) fn open_gate() {
        *GATE.0.lock().unwrap() = true;
        GATE.1.notify_all();
    }

    /// Waits as the offset says; `true` if a pair read found no partner.
    pub(super) fn hold(offset: u64) -> bool {
        let wait = Duration::from_secs(10);
        match offset {
            GATE_OFFSET => {
                let g = GATE.0.lock().unwrap();
                drop(GATE.1.wait_timeout_while(g, wait, |open| !*open).unwrap());
                false
            }
            PAIR_OFFSET => {
                let mut n = PAIR.0.lock().unwrap();
                *n += 1;
                PAIR.1.notify_all();
                let (n, timeout) = PAIR.1.wait_timeout_while(n, wait, |n| *n < 2).unwrap();
                drop(n);
                timeout.timed_out()
            }
            _ => false,
        }
    }
}
