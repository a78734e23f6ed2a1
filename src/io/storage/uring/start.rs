//! Starting requests: each is validated against the file table (errors
//! never reach the ring), then becomes its op (`ops.rs`) and is submitted.

use super::group::Waiting;
use super::ops::{
    AllocateOp, CloseOp, Kind, LinkedWriteOp, OpenOp, Pending, ReadOp, RemoveOp, SetLenOp, SyncOp,
    Target, WriteOp, WritevOp,
};
use super::{INLINE_WRITE_MAX, UringStorage};
use crate::io::storage::files::{FileEntry, check_direct, pwrite_all, remove, set_len};
use crate::io::storage::op::{
    Durability, FileId, OpenOptions, StorageCompletion, StorageOp, StorageOutput, StorageRequest,
};
use crate::io::{IoBuf, IoError};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Who asked: the answer goes to `client` with `token`.
#[derive(Clone, Copy)]
pub(super) struct Asker {
    pub(super) client: u32,
    pub(super) token: u64,
}

impl UringStorage {
    pub(super) fn start(&mut self, client: u32, req: StorageRequest) {
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
        let from = Asker { client, token };
        if let StorageOp::Open { path, options } = op {
            return self.start_open(from, path, options, reserved);
        }
        if let StorageOp::Remove { path } = op {
            return self.start_remove(from, path);
        }
        let Some(file) = op.file() else {
            return;
        };
        let entry = match self.files.get(file) {
            Ok(e) => *e,
            Err(e) => return self.fail(client, token, op, e),
        };
        match op {
            StorageOp::ReadAt {
                offset, len, buf, ..
            } => self.start_read(from, file, &entry, offset, len, buf),
            StorageOp::WriteAt {
                offset,
                buf,
                durability,
                ..
            } => self.start_write(from, file, &entry, offset, buf, durability),
            StorageOp::WritevAt { offset, bufs, .. } => {
                self.start_writev(from, file, &entry, offset, bufs)
            }
            StorageOp::Sync { data_only, .. } => {
                let op = SyncOp {
                    target: Target::from(&entry),
                    data_only,
                };
                self.submit(pending(from, Some(file), Kind::Sync(op)));
            }
            StorageOp::Allocate { offset, len, .. } => {
                let op = AllocateOp {
                    target: Target::from(&entry),
                    offset,
                    len,
                };
                self.submit(pending(from, Some(file), Kind::Allocate(op)));
            }
            StorageOp::SetLen { len, .. } if !self.ftruncate => {
                let c = StorageCompletion {
                    token,
                    result: set_len(&entry, len),
                    buf: None,
                    bufs: Vec::new(),
                };
                self.inbox.deliver(client, c);
            }
            StorageOp::SetLen { len, .. } => {
                let op = SetLenOp {
                    target: Target::from(&entry),
                    len,
                };
                self.submit(pending(from, Some(file), Kind::SetLen(op)));
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
            StorageOp::Open { path, options } => self.start_open(from, path, options, reserved),
            StorageOp::Remove { path } => self.start_remove(from, path),
        }
    }

    fn start_remove(&mut self, from: Asker, path: PathBuf) {
        if !self.unlinkat {
            let c = StorageCompletion {
                token: from.token,
                result: remove(&path),
                buf: None,
                bufs: Vec::new(),
            };
            return self.inbox.deliver(from.client, c);
        }
        let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
            let e = IoError::Invalid("path contains a NUL byte".into());
            return self.fail(from.client, from.token, StorageOp::Remove { path }, e);
        };
        self.submit(pending(from, None, Kind::Remove(RemoveOp { path: cpath })));
    }

    fn start_open(
        &mut self,
        from: Asker,
        path: PathBuf,
        options: OpenOptions,
        reserved: Option<FileId>,
    ) {
        let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
            if let Some(id) = reserved {
                self.files.release_reserved(id);
            }
            let e = IoError::Invalid("path contains a NUL byte".into());
            let op = StorageOp::Open { path, options };
            return self.fail(from.client, from.token, op, e);
        };
        let id = self.files.begin_open(reserved);
        let op = OpenOp {
            path: cpath,
            flags: options.flags(),
            mode: options.mode,
            direct: options.direct,
            id,
        };
        self.submit(pending(from, None, Kind::Open(op)));
    }

    fn start_read(
        &mut self,
        from: Asker,
        file: FileId,
        f: &FileEntry,
        offset: u64,
        len: usize,
        mut buf: IoBuf,
    ) {
        if let Err(e) = buf
            .prepare_read(len)
            .and_then(|()| check_direct("read", f, buf.ptr(), len, offset))
        {
            let op = StorageOp::ReadAt {
                file,
                offset,
                len,
                buf,
            };
            return self.fail(from.client, from.token, op, e);
        }
        let op = ReadOp {
            target: Target::from(f),
            offset,
            fixed_buf: self.fixed_index(&buf),
            buf,
            direct: f.direct,
        };
        self.submit(pending(from, Some(file), Kind::Read(op)));
    }

    fn start_write(
        &mut self,
        from: Asker,
        file: FileId,
        f: &FileEntry,
        offset: u64,
        buf: IoBuf,
        durability: Durability,
    ) {
        if let Err(e) = check_direct("write", f, buf.ptr(), buf.len(), offset) {
            let op = StorageOp::WriteAt {
                file,
                offset,
                buf,
                durability,
            };
            return self.fail(from.client, from.token, op, e);
        }
        if !f.direct && durability != Durability::Linked && buf.len() <= INLINE_WRITE_MAX {
            return self.write_inline(from, file, f, offset, buf, durability);
        }
        let (target, fixed_buf, direct) = (Target::from(f), self.fixed_index(&buf), f.direct);
        let kind = if durability == Durability::Linked {
            Kind::Linked(LinkedWriteOp {
                target,
                offset,
                buf,
                fixed_buf,
                direct,
                write: None,
                sync: None,
                split: false,
            })
        } else {
            Kind::Write(WriteOp {
                file,
                target,
                offset,
                buf,
                done: 0,
                durability,
                fixed_buf,
                direct,
            })
        };
        self.submit(pending(from, Some(file), kind));
    }

    fn start_writev(
        &mut self,
        from: Asker,
        file: FileId,
        f: &FileEntry,
        offset: u64,
        bufs: Vec<IoBuf>,
    ) {
        let check = if bufs.is_empty() {
            Err(IoError::Invalid("vectored write of no buffers".into()))
        } else {
            bufs.iter()
                .try_for_each(|b| check_direct("writev", f, b.ptr(), b.len(), offset))
        };
        if let Err(e) = check {
            let op = StorageOp::WritevAt { file, offset, bufs };
            return self.fail(from.client, from.token, op, e);
        }
        let op = WritevOp {
            target: Target::from(f),
            offset,
            total: bufs.iter().map(IoBuf::len).sum(),
            bufs,
            iov: Vec::new(),
            direct: f.direct,
        };
        self.submit(pending(from, Some(file), Kind::Writev(op)));
    }

    /// Closes `file` now: it leaves the table (its id is released), then
    /// a Close takes the descriptor.
    pub(super) fn issue_close(&mut self, client: u32, token: u64, file: FileId) {
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
        let op = CloseOp { fd: f.fd };
        self.submit(pending(Asker { client, token }, None, Kind::Close(op)));
    }

    /// A small buffered write, done now (see [`INLINE_WRITE_MAX`]).
    fn write_inline(
        &mut self,
        from: Asker,
        file: FileId,
        f: &FileEntry,
        offset: u64,
        buf: IoBuf,
        durability: Durability,
    ) {
        let result = pwrite_all("write", f, buf.as_slice(), offset);
        let result = match result {
            Ok(n) if durability == Durability::GroupCommit => {
                let w = Waiting {
                    client: from.client,
                    token: from.token,
                    buf,
                    written: n,
                };
                return self.await_group_sync(file, w);
            }
            Ok(n) => Ok(StorageOutput::Written(n)),
            Err(e) => Err(e),
        };
        let c = StorageCompletion {
            token: from.token,
            result,
            buf: Some(buf),
            bufs: Vec::new(),
        };
        self.inbox.deliver(from.client, c);
    }
}

pub(super) fn pending(from: Asker, file: Option<FileId>, kind: Kind) -> Pending {
    Pending {
        client: from.client,
        token: from.token,
        file,
        kind,
    }
}
