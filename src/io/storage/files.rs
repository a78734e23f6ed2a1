//! A storage worker's open files: slots with generations, so a stale
//! `FileId` is an error, not an access to whatever reused the slot.

use super::op::FileId;
use crate::io::IoError;
use std::os::fd::RawFd;

#[derive(Debug)]
pub(crate) struct FileEntry {
    pub(crate) fd: RawFd,
    pub(crate) direct: bool,
    /// Its index in the ring's registered-file table, if registered.
    pub(crate) fixed: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct FileTable {
    worker: usize,
    slots: Vec<(u32, Option<FileEntry>)>,
    free: Vec<u32>,
}

impl FileTable {
    pub(crate) fn new(worker: usize) -> Self {
        Self {
            worker,
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    pub(crate) fn insert(&mut self, entry: FileEntry) -> FileId {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let (generation, e) = &mut self.slots[slot as usize];
        *e = Some(entry);
        FileId::new(self.worker, slot, *generation)
    }

    pub(crate) fn get(&self, id: FileId) -> Result<&FileEntry, IoError> {
        if id.worker() != self.worker & 0xff {
            return Err(not_open(id));
        }
        match self.slots.get(id.slot() as usize) {
            Some((g, Some(e))) if *g & 0xff_ffff == id.generation() => Ok(e),
            _ => Err(not_open(id)),
        }
    }

    /// Removes the entry; the slot's generation moves on.
    pub(crate) fn remove(&mut self, id: FileId) -> Result<FileEntry, IoError> {
        self.get(id)?;
        let (g, e) = &mut self.slots[id.slot() as usize];
        *g = g.wrapping_add(1);
        self.free.push(id.slot());
        e.take().ok_or_else(|| not_open(id))
    }

    /// Every open descriptor (for closing on exit).
    pub(crate) fn drain(&mut self) -> Vec<FileEntry> {
        self.free.clear();
        self.slots.drain(..).filter_map(|(_, e)| e).collect()
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

impl FileTable {
    /// Records that the file is in the ring's registered-file table.
    pub(crate) fn set_fixed(&mut self, id: FileId, slot: u32) {
        if let Some((_, Some(e))) = self.slots.get_mut(id.slot() as usize) {
            e.fixed = Some(slot);
        }
    }
}
