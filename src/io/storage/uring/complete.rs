//! Finishing requests: an op comes back from the slab with its last
//! completion (the kernel is done with its memory) and is answered, or
//! goes on (a short write's rest, a group-commit write's sync).

use super::group::Waiting;
use super::ops::{Kind, LinkedWriteOp, OpenOp, Pending, ReadOp, WriteOp, WritevOp};
use super::start::{Asker, pending};
use super::{FIXED_FILES, UringStorage};
use crate::io::IoError;
use crate::io::kernel::Cqe;
use crate::io::storage::files::{FileEntry, direct_einval};
use crate::io::storage::op::{Durability, StorageCompletion, StorageOutput};

/// The error a failed completion stands for.
fn error(cqe: &Cqe, op: &'static str, direct: bool) -> IoError {
    let res = cqe.res();
    if cqe.refused() {
        IoError::not_submitted(-res)
    } else if direct && res == -libc::EINVAL {
        direct_einval(op)
    } else {
        IoError::os(op, -res)
    }
}

/// `Ok(())` or the error of an op that returns no count.
fn done(cqe: &Cqe, op: &'static str) -> Result<(), IoError> {
    if cqe.res() < 0 {
        Err(error(cqe, op, false))
    } else {
        Ok(())
    }
}

impl UringStorage {
    /// Answers (or continues) an op reaped with its last completion.
    pub(super) fn complete(&mut self, p: Pending, cqe: &Cqe) {
        let from = Asker {
            client: p.client,
            token: p.token,
        };
        let answer = |result, buf, bufs| (result, buf, bufs);
        let (result, buf, bufs) = match p.kind {
            Kind::Open(op) => answer(self.complete_open(op, cqe), None, Vec::new()),
            Kind::Read(op) => {
                let (result, buf) = complete_read(op, cqe);
                answer(result, Some(buf), Vec::new())
            }
            Kind::Write(op) => match self.complete_write(from, op, cqe) {
                Some((result, buf)) => answer(result, Some(buf), Vec::new()),
                None => return,
            },
            Kind::Linked(mut op) => {
                op.record(cqe);
                let (result, buf) = complete_linked(op);
                answer(result, Some(buf), Vec::new())
            }
            Kind::Writev(op) => {
                let (result, bufs) = complete_writev(op, cqe);
                answer(result, None, bufs)
            }
            Kind::Sync(op) => {
                let name = if op.data_only { "fdatasync" } else { "fsync" };
                let result = done(cqe, name).map(|()| StorageOutput::Synced);
                answer(result, None, Vec::new())
            }
            Kind::GroupSync(op) => {
                return self.complete_group_sync(op, Self::group_sync_result(cqe));
            }
            Kind::Allocate(_) => answer(
                done(cqe, "fallocate").map(|()| StorageOutput::Allocated),
                None,
                Vec::new(),
            ),
            Kind::Remove(_) => answer(
                done(cqe, "unlink").map(|()| StorageOutput::Removed),
                None,
                Vec::new(),
            ),
            Kind::SetLen(_) => answer(
                done(cqe, "ftruncate").map(|()| StorageOutput::Resized),
                None,
                Vec::new(),
            ),
            Kind::Close(_) => answer(
                done(cqe, "close").map(|()| StorageOutput::Closed),
                None,
                Vec::new(),
            ),
        };
        let c = StorageCompletion {
            token: from.token,
            result,
            buf,
            bufs,
        };
        self.inbox.deliver(from.client, c);
    }

    /// The file joins the table (registered where the ring has room), and
    /// what waited for it runs next.
    fn complete_open(&mut self, op: OpenOp, cqe: &Cqe) -> Result<StorageOutput, IoError> {
        let (id, res) = (op.id, cqe.res());
        if res < 0 {
            let parked = self.files.open_failed(id);
            self.fail_parked(id, parked);
            return Err(error(cqe, "open", false));
        }
        let entry = FileEntry {
            fd: res,
            direct: op.direct,
            fixed: None,
        };
        let parked = self.files.opened(id, entry);
        let fixed = self.fixed_files
            && id.slot() < FIXED_FILES
            && self
                .ring
                .submitter()
                .register_files_update(id.slot(), &[res])
                .is_ok();
        if fixed {
            self.files.set_fixed(id, id.slot());
        }
        // What waited for the open runs now, in order (after the open's
        // own completion, delivered by the caller).
        self.unparked.extend(parked);
        Ok(StorageOutput::Opened(id))
    }

    /// A write's result; `None` when it goes on (the rest of a short
    /// write resubmitted, or a group-commit write waiting for its sync).
    fn complete_write(
        &mut self,
        from: Asker,
        mut op: WriteOp,
        cqe: &Cqe,
    ) -> Option<(Result<StorageOutput, IoError>, crate::io::IoBuf)> {
        let res = cqe.res();
        if res < 0 {
            return Some((Err(error(cqe, "write", op.direct)), op.buf));
        }
        op.done += res as usize;
        let len = op.buf.len();
        if op.done < len && res > 0 {
            // Short write: the rest goes as a new op on the same file.
            let file = op.file;
            self.submit(pending(from, Some(file), Kind::Write(op)));
            return None;
        }
        if op.done < len {
            let e = IoError::ShortWrite {
                op: "write",
                written: op.done,
                len,
            };
            return Some((Err(e), op.buf));
        }
        if op.durability == Durability::GroupCommit {
            let w = Waiting {
                client: from.client,
                token: from.token,
                buf: op.buf,
                written: op.done,
            };
            self.await_group_sync(op.file, w);
            return None;
        }
        Some((Ok(StorageOutput::Written(op.done)), op.buf))
    }
}

fn complete_read(mut op: ReadOp, cqe: &Cqe) -> (Result<StorageOutput, IoError>, crate::io::IoBuf) {
    let res = cqe.res();
    if res < 0 {
        op.buf.truncate(0);
        (Err(error(cqe, "read", op.direct)), op.buf)
    } else {
        op.buf.truncate(res as usize);
        (Ok(StorageOutput::Read(res as usize)), op.buf)
    }
}

fn complete_writev(
    op: WritevOp,
    cqe: &Cqe,
) -> (Result<StorageOutput, IoError>, Vec<crate::io::IoBuf>) {
    let res = cqe.res();
    let result = if res < 0 {
        Err(error(cqe, "writev", op.direct))
    } else if (res as usize) < op.total {
        Err(IoError::ShortWrite {
            op: "writev",
            written: res as usize,
            len: op.total,
        })
    } else {
        Ok(StorageOutput::Written(op.total))
    };
    (result, op.bufs)
}

/// A linked write+sync with both halves in: durable only if the write was
/// whole and its sync ran linked after it.
fn complete_linked(op: LinkedWriteOp) -> (Result<StorageOutput, IoError>, crate::io::IoBuf) {
    let len = op.buf.len();
    let (w, w_refused) = op.write.unwrap_or((-libc::EIO, false));
    let (s, s_refused) = op.sync.unwrap_or((-libc::EIO, false));
    let result = if w < 0 {
        Err(if w_refused {
            IoError::not_submitted(-w)
        } else if op.direct && w == -libc::EINVAL {
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
    } else if s_refused || op.split {
        Err(IoError::NotDurable { written: len })
    } else if s < 0 {
        Err(IoError::os("fdatasync", -s))
    } else {
        Ok(StorageOutput::Written(len))
    };
    (result, op.buf)
}
