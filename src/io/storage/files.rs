//! A storage worker's files: ids with generations, so a stale `FileId` is
//! an error, not an access to whatever reused the slot; ids reserved at
//! submit time, so requests can follow an open before it completes.

use super::op::{FileId, StorageOutput, StorageRequest};
use crate::io::IoError;
use crate::io::slots;
use parking_lot::Mutex;
use std::os::fd::RawFd;
use std::sync::Arc;

#[derive(Clone, Copy, Debug)]
pub(crate) struct FileEntry {
    pub(crate) fd: RawFd,
    pub(crate) direct: bool,
    /// Its index in the ring's registered-file table, if registered.
    pub(crate) fixed: Option<u32>,
}

/// File ids, shared by a storage worker and its clients: a client takes
/// one when it submits an open ([`StorageClient::open`](super::StorageClient::open)),
/// so requests on the file can follow the open at once. A slot's
/// generation moves on each time its id is released, so a stale id never
/// names whatever reused the slot.
#[derive(Debug)]
pub(crate) struct FileIds {
    worker: usize,
    inner: Mutex<Ids>,
}

#[derive(Debug, Default)]
struct Ids {
    generations: Vec<u32>,
    free: Vec<u32>,
}

impl FileIds {
    pub(crate) fn new(worker: usize) -> Arc<Self> {
        Arc::new(Self {
            worker,
            inner: Mutex::new(Ids::default()),
        })
    }

    /// A fresh id (its slot unused by any other live id).
    pub(crate) fn reserve(&self) -> FileId {
        let mut ids = self.inner.lock();
        let slot = ids.free.pop().unwrap_or_else(|| {
            ids.generations.push(0);
            (ids.generations.len() - 1) as u32
        });
        FileId(slots::pack(
            self.worker,
            slot,
            ids.generations[slot as usize],
        ))
    }

    /// Gives `id`'s slot back (once per reserved id).
    pub(crate) fn release(&self, id: FileId) {
        let mut ids = self.inner.lock();
        let slot = id.slot();
        if let Some(g) = ids.generations.get_mut(slot as usize) {
            *g = g.wrapping_add(1) & 0xff_ffff;
            ids.free.push(slot);
        }
    }
}

/// A request waiting for its file's open, with the client it came from.
pub(crate) type Parked = (u32, StorageRequest);

#[derive(Debug)]
enum State {
    /// The open is in flight; requests on the file wait here, in order.
    Opening(Vec<Parked>),
    /// Open: `ops` of the file's requests are in flight, and `close` is
    /// the `(client, token)` of a close that waits for them to finish (new
    /// requests are refused meanwhile).
    Open {
        file: FileEntry,
        ops: u32,
        close: Option<(u32, u64)>,
    },
}

/// The worker's files, by [`FileId`]: open, or opening with the requests
/// that wait for it.
#[derive(Debug)]
pub(crate) struct FileTable {
    ids: Arc<FileIds>,
    entries: Vec<Option<(FileId, State)>>,
}

impl FileTable {
    pub(crate) fn new(ids: Arc<FileIds>) -> Self {
        Self {
            ids,
            entries: Vec::new(),
        }
    }

    fn entry(&self, id: FileId) -> Option<&State> {
        match self.entries.get(id.slot() as usize) {
            Some(Some((current, state))) if *current == id => Some(state),
            _ => None,
        }
    }

    fn entry_mut(&mut self, id: FileId) -> Option<&mut State> {
        match self.entries.get_mut(id.slot() as usize) {
            Some(Some((current, state))) if *current == id => Some(state),
            _ => None,
        }
    }

    /// An open starts: under the id its client reserved, or a fresh one.
    pub(crate) fn begin_open(&mut self, reserved: Option<FileId>) -> FileId {
        let id = reserved.unwrap_or_else(|| self.ids.reserve());
        let slot = id.slot() as usize;
        if self.entries.len() <= slot {
            self.entries.resize_with(slot + 1, || None);
        }
        self.entries[slot] = Some((id, State::Opening(Vec::new())));
        id
    }

    /// The open succeeded: the file is open, and the requests that waited
    /// for it come back, in order, to be started.
    pub(crate) fn opened(&mut self, id: FileId, entry: FileEntry) -> Vec<Parked> {
        match self.entry_mut(id) {
            Some(state) => match std::mem::replace(
                state,
                State::Open {
                    file: entry,
                    ops: 0,
                    close: None,
                },
            ) {
                State::Opening(parked) => parked,
                State::Open { .. } => Vec::new(),
            },
            None => Vec::new(),
        }
    }

    /// The open failed: the id is released, and the requests that waited
    /// come back, to be failed.
    pub(crate) fn open_failed(&mut self, id: FileId) -> Vec<Parked> {
        if self.entry(id).is_none() {
            return Vec::new();
        }
        let (_, state) = self.entries[id.slot() as usize].take().expect("checked");
        self.ids.release(id);
        match state {
            State::Opening(parked) => parked,
            State::Open { .. } => Vec::new(),
        }
    }

    /// Gives back an id reserved for an open that failed before it began.
    pub(crate) fn release_reserved(&self, id: FileId) {
        self.ids.release(id);
    }

    /// An open file, as the tests make them.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, entry: FileEntry) -> FileId {
        let id = self.begin_open(None);
        self.opened(id, entry);
        id
    }

    /// Whether `id`'s open is in flight (a request on it must wait).
    pub(crate) fn is_opening(&self, id: FileId) -> bool {
        matches!(self.entry(id), Some(State::Opening(_)))
    }

    /// Keeps a request on a file still opening until the open completes.
    pub(crate) fn park(&mut self, id: FileId, client: u32, req: StorageRequest) {
        if let Some(State::Opening(parked)) = self.entry_mut(id) {
            parked.push((client, req));
        }
    }

    /// The open file `id`, for a new request (a file whose close is
    /// pending is closed to those).
    pub(crate) fn get(&self, id: FileId) -> Result<&FileEntry, IoError> {
        match self.entry(id) {
            Some(State::Open {
                file, close: None, ..
            }) => Ok(file),
            _ => Err(not_open(id)),
        }
    }

    /// The open file `id`, its close pending or not (for work accepted
    /// before the close: a group sync, the rest of a short write).
    pub(crate) fn get_even_closing(&self, id: FileId) -> Result<&FileEntry, IoError> {
        match self.entry(id) {
            Some(State::Open { file, .. }) => Ok(file),
            _ => Err(not_open(id)),
        }
    }

    /// One more of `id`'s requests is in flight.
    pub(crate) fn op_started(&mut self, id: FileId) {
        if let Some(State::Open { ops, .. }) = self.entry_mut(id) {
            *ops += 1;
        }
    }

    /// One of `id`'s requests in flight is done.
    pub(crate) fn op_done(&mut self, id: FileId) {
        if let Some(State::Open { ops, .. }) = self.entry_mut(id) {
            *ops = ops.saturating_sub(1);
        }
    }

    /// Whether any of `id`'s requests is in flight.
    pub(crate) fn ops_in_flight(&self, id: FileId) -> bool {
        matches!(self.entry(id), Some(State::Open { ops, .. }) if *ops > 0)
    }

    /// Records a close that must wait for the file's requests in flight;
    /// a second close never gets here: [`get`](Self::get) refuses a file
    /// whose close is pending, so the request fails `NotOpen` first.
    pub(crate) fn close_later(&mut self, id: FileId, client: u32, token: u64) {
        if let Some(State::Open {
            close: pending @ None,
            ..
        }) = self.entry_mut(id)
        {
            *pending = Some((client, token));
        }
    }

    /// The closes waiting, as `(file, client, token)`.
    pub(crate) fn pending_closes(&self) -> Vec<(FileId, u32, u64)> {
        self.entries
            .iter()
            .flatten()
            .filter_map(|(id, s)| match s {
                State::Open {
                    close: Some((c, t)),
                    ..
                } => Some((*id, *c, *t)),
                _ => None,
            })
            .collect()
    }

    /// Clears `id`'s pending close (it is being issued).
    pub(crate) fn take_pending_close(&mut self, id: FileId) {
        if let Some(State::Open { close, .. }) = self.entry_mut(id) {
            *close = None;
        }
    }

    /// Removes the open file `id`; its id is released.
    pub(crate) fn remove(&mut self, id: FileId) -> Result<FileEntry, IoError> {
        let Some(State::Open { .. }) = self.entry(id) else {
            return Err(not_open(id));
        };
        let Some((_, State::Open { file, .. })) = self.entries[id.slot() as usize].take() else {
            unreachable!("checked");
        };
        self.ids.release(id);
        Ok(file)
    }

    /// Every open descriptor (for closing on exit), and the requests still
    /// waiting for opens (to be answered).
    pub(crate) fn drain(&mut self) -> (Vec<FileEntry>, Vec<Parked>) {
        let (mut open, mut parked) = (Vec::new(), Vec::new());
        for (_, state) in self.entries.drain(..).flatten() {
            match state {
                State::Open { file, .. } => open.push(file),
                State::Opening(p) => parked.extend(p),
            }
        }
        (open, parked)
    }

    /// Records that the file is in the ring's registered-file table.
    pub(crate) fn set_fixed(&mut self, id: FileId, slot: u32) {
        if let Some(State::Open { file, .. }) = self.entry_mut(id) {
            file.fixed = Some(slot);
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

/// `ftruncate` to `len` bytes of `f` (also the io_uring backend's
/// way where its kernel has no `IORING_OP_FTRUNCATE`).
pub(crate) fn set_len(f: &FileEntry, len: u64) -> Result<StorageOutput, IoError> {
    let Ok(len) = i64::try_from(len) else {
        return Err(IoError::Invalid(format!("length {len} is too large")));
    };
    // SAFETY: plain system call on a descriptor the file table owns.
    let rc = unsafe { libc::ftruncate(f.fd, len) };
    if rc < 0 {
        Err(IoError::from_io(
            "ftruncate",
            std::io::Error::last_os_error(),
        ))
    } else {
        Ok(StorageOutput::Resized)
    }
}

/// `unlink` of `path` (also the io_uring backend's way where its kernel has
/// no `IORING_OP_UNLINKAT`).
pub(crate) fn remove(path: &std::path::Path) -> Result<StorageOutput, IoError> {
    std::fs::remove_file(path)
        .map(|()| StorageOutput::Removed)
        .map_err(|e| IoError::from_io("unlink", e))
}
