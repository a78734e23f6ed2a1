//! A storage worker's open files: slots with generations, so a stale
//! `FileId` is an error, not an access to whatever reused the slot.

use super::op::FileId;
use crate::io::IoError;
use crate::io::slots::Slots;
use std::os::fd::RawFd;

#[derive(Debug)]
pub(crate) struct FileEntry {
    pub(crate) fd: RawFd,
    pub(crate) direct: bool,
    /// Its index in the ring's registered-file table, if registered.
    pub(crate) fixed: Option<u32>,
}

/// Open files, by [`FileId`].
#[derive(Debug)]
pub(crate) struct FileTable {
    slots: Slots<FileEntry>,
}

impl FileTable {
    pub(crate) fn new(worker: usize) -> Self {
        Self {
            slots: Slots::new(worker),
        }
    }

    pub(crate) fn insert(&mut self, entry: FileEntry) -> FileId {
        FileId(self.slots.insert(entry))
    }

    pub(crate) fn get(&self, id: FileId) -> Result<&FileEntry, IoError> {
        self.slots.get(id.0).ok_or_else(|| not_open(id))
    }

    /// Removes the entry; the slot's generation moves on.
    pub(crate) fn remove(&mut self, id: FileId) -> Result<FileEntry, IoError> {
        self.slots.remove(id.0).ok_or_else(|| not_open(id))
    }

    /// Every open descriptor (for closing on exit).
    pub(crate) fn drain(&mut self) -> Vec<FileEntry> {
        self.slots.drain()
    }

    /// Records that the file is in the ring's registered-file table.
    pub(crate) fn set_fixed(&mut self, id: FileId, slot: u32) {
        if let Some(e) = self.slots.get_mut(id.0) {
            e.fixed = Some(slot);
        }
    }
}

fn not_open(id: FileId) -> IoError {
    IoError::NotOpen {
        what: "file",
        id: id.raw(),
    }
}

/// `O_DIRECT` needs the address, length and offset aligned; checking here
/// gives a clear error instead of the kernel's bare `EINVAL`.
pub(crate) fn check_direct(
    op: &'static str,
    entry: &FileEntry,
    ptr: *const u8,
    len: usize,
    offset: u64,
) -> Result<(), IoError> {
    if !entry.direct {
        return Ok(());
    }
    // 512 is the smallest logical block size; a 4096-byte-sector device
    // rejects less with EINVAL, which `direct_einval` turns into the same
    // error.
    let align = 512;
    let bad = if offset % align as u64 != 0 {
        Some("offset")
    } else if len % align != 0 {
        Some("length")
    } else if ptr as usize % align != 0 {
        Some("buffer address")
    } else {
        None
    };
    match bad {
        Some(what) => Err(IoError::Misaligned { op, what, align }),
        None => Ok(()),
    }
}

/// The kernel's `EINVAL` for an `O_DIRECT` request means misalignment for
/// this device (the request itself was checked against 512 already).
pub(crate) fn direct_einval(op: &'static str) -> IoError {
    IoError::Misaligned {
        op,
        what: "offset, length or buffer address",
        align: crate::io::buf::DIRECT_ALIGN,
    }
}

/// An OS error on `f`, with `O_DIRECT`'s `EINVAL` read as misalignment.
pub(crate) fn os_or_misaligned(op: &'static str, f: &FileEntry, e: std::io::Error) -> IoError {
    if f.direct && e.raw_os_error() == Some(libc::EINVAL) {
        direct_einval(op)
    } else {
        IoError::from_io(op, e)
    }
}

/// Writes all of `data` at `offset` with blocking `pwrite`s (retrying
/// after signals and short writes); a write that makes no progress is
/// `ShortWrite`.
pub(crate) fn pwrite_all(
    op: &'static str,
    f: &FileEntry,
    data: &[u8],
    offset: u64,
) -> Result<usize, IoError> {
    let mut done = 0;
    while done < data.len() {
        let src = &data[done..];
        // SAFETY: `src` is a valid readable slice; `f.fd` is an open
        // descriptor from the file table.
        let n = unsafe {
            libc::pwrite(
                f.fd,
                src.as_ptr().cast(),
                src.len(),
                (offset + done as u64) as i64,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(os_or_misaligned(op, f, e));
        }
        if n == 0 {
            return Err(IoError::ShortWrite {
                op,
                written: done,
                len: data.len(),
            });
        }
        done += n as usize;
    }
    Ok(done)
}
