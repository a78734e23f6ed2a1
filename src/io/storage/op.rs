//! The storage worker's plain data types: requests, completions, file ids.

use crate::io::slots;
use crate::io::{IoBuf, IoError};
use std::fmt;
use std::path::PathBuf;

/// A file opened on one storage worker. Valid only on that worker; a stale
/// id (closed, reused slot) is caught by its generation and answered with
/// [`IoError::NotOpen`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId(pub(crate) u64);

impl FileId {
    pub(crate) fn slot(self) -> u32 {
        slots::slot_of(self.0)
    }

    pub(crate) fn generation(self) -> u32 {
        slots::generation_of(self.0)
    }

    /// The storage worker that opened the file.
    pub fn worker(self) -> usize {
        slots::worker_of(self.0)
    }

    /// The raw id (for logs).
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FileId(w{}:{}#{})",
            self.worker(),
            self.slot(),
            self.generation()
        )
    }
}

/// How to open a file, like [`std::fs::OpenOptions`] plus `O_DIRECT`.
///
/// ```
/// use shared_nothing::io::OpenOptions;
/// let o = OpenOptions::new().read(true).write(true).create(true).direct(true);
/// assert!(o.is_direct());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    pub(crate) read: bool,
    pub(crate) write: bool,
    pub(crate) create: bool,
    pub(crate) truncate: bool,
    pub(crate) direct: bool,
    pub(crate) mode: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenOptions {
    /// Read-only, no create, buffered.
    pub fn new() -> Self {
        Self {
            read: true,
            write: false,
            create: false,
            truncate: false,
            direct: false,
            mode: 0o644,
        }
    }

    /// Read and write, created if missing: the usual data-file mode.
    pub fn read_write_create() -> Self {
        Self::new().read(true).write(true).create(true)
    }

    /// Open for reading.
    pub fn read(mut self, on: bool) -> Self {
        self.read = on;
        self
    }

    /// Open for writing.
    pub fn write(mut self, on: bool) -> Self {
        self.write = on;
        self
    }

    /// Create the file if it does not exist.
    pub fn create(mut self, on: bool) -> Self {
        self.create = on;
        self
    }

    /// Truncate the file to zero length.
    pub fn truncate(mut self, on: bool) -> Self {
        self.truncate = on;
        self
    }

    /// Bypass the page cache (`O_DIRECT`): buffers, lengths and offsets
    /// must then be multiples of the device's block size (use
    /// [`AlignedBuf`](crate::io::AlignedBuf)).
    pub fn direct(mut self, on: bool) -> Self {
        self.direct = on;
        self
    }

    /// Permission bits for a created file.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Whether `O_DIRECT` is set.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    pub(crate) fn flags(&self) -> i32 {
        let access = match (self.read, self.write) {
            (true, true) => libc::O_RDWR,
            (false, true) => libc::O_WRONLY,
            _ => libc::O_RDONLY,
        };
        let mut f = access | libc::O_CLOEXEC;
        if self.create {
            f |= libc::O_CREAT;
        }
        if self.truncate {
            f |= libc::O_TRUNC;
        }
        if self.direct {
            f |= libc::O_DIRECT;
        }
        f
    }
}

/// When a write counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// When the data is in the page cache (or on the device, for `O_DIRECT`).
    Buffered,
    /// When an `fdatasync` linked right behind the write has finished: one
    /// request, durable on its own.
    Linked,
    /// When an `fdatasync` issued after the write completed has finished.
    /// Writes that complete while a sync runs share the next one, so many
    /// writers' records become durable with one sync (group commit).
    GroupCommit,
}

/// One storage request.
#[derive(Debug)]
#[non_exhaustive]
pub enum StorageOp {
    /// Open (or create) a file.
    Open {
        /// The path.
        path: PathBuf,
        /// How.
        options: OpenOptions,
    },
    /// Read `len` bytes at `offset` into `buf` (a shorter result means end
    /// of file).
    ReadAt {
        /// The file.
        file: FileId,
        /// Byte offset.
        offset: u64,
        /// Bytes to read.
        len: usize,
        /// Where to read to (its old contents are replaced).
        buf: IoBuf,
    },
    /// Write all of `buf` at `offset`.
    WriteAt {
        /// The file.
        file: FileId,
        /// Byte offset.
        offset: u64,
        /// The data.
        buf: IoBuf,
        /// When the write completes.
        durability: Durability,
    },
    /// Write `bufs` back to back from `offset` with one system call.
    WritevAt {
        /// The file.
        file: FileId,
        /// Byte offset.
        offset: u64,
        /// The data, in order.
        bufs: Vec<IoBuf>,
    },
    /// `fsync` (`data_only: false`) or `fdatasync` (`true`).
    Sync {
        /// The file.
        file: FileId,
        /// `fdatasync` rather than `fsync`.
        data_only: bool,
    },
    /// Reserve `len` bytes at `offset` (`fallocate`, mode 0: the file grows).
    Allocate {
        /// The file.
        file: FileId,
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// Set the file's length (`ftruncate`): cut it, or extend it with a
    /// hole that reads as zeros and takes no space until written.
    SetLen {
        /// The file.
        file: FileId,
        /// The new length in bytes.
        len: u64,
    },
    /// Remove a file's name (`unlink`): its data goes once no descriptor
    /// holds it (files still open here stay readable until closed).
    Remove {
        /// The path.
        path: PathBuf,
    },
    /// Close the file; the id is invalid afterwards.
    Close {
        /// The file.
        file: FileId,
    },
}

impl StorageOp {
    /// The file the operation works on (`None` for an open).
    pub(crate) fn file(&self) -> Option<FileId> {
        match self {
            StorageOp::Open { .. } | StorageOp::Remove { .. } => None,
            StorageOp::ReadAt { file, .. }
            | StorageOp::WriteAt { file, .. }
            | StorageOp::WritevAt { file, .. }
            | StorageOp::Sync { file, .. }
            | StorageOp::Allocate { file, .. }
            | StorageOp::SetLen { file, .. }
            | StorageOp::Close { file } => Some(*file),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            StorageOp::Open { .. } => "open",
            StorageOp::Remove { .. } => "unlink",
            StorageOp::ReadAt { .. } => "read",
            StorageOp::WriteAt { .. } => "write",
            StorageOp::WritevAt { .. } => "writev",
            StorageOp::Sync {
                data_only: true, ..
            } => "fdatasync",
            StorageOp::Sync { .. } => "fsync",
            StorageOp::Allocate { .. } => "fallocate",
            StorageOp::SetLen { .. } => "ftruncate",
            StorageOp::Close { .. } => "close",
        }
    }

    /// Takes the buffers out, for answering a request that did not run.
    pub(crate) fn into_bufs(self) -> (Option<IoBuf>, Vec<IoBuf>) {
        match self {
            StorageOp::ReadAt { buf, .. } | StorageOp::WriteAt { buf, .. } => {
                (Some(buf), Vec::new())
            }
            StorageOp::WritevAt { bufs, .. } => (None, bufs),
            _ => (None, Vec::new()),
        }
    }
}

/// A request as it travels: the caller's token and the operation.
#[derive(Debug)]
pub(crate) struct StorageRequest {
    pub(crate) token: u64,
    pub(crate) op: StorageOp,
    /// For an open through [`StorageClient::open`](super::StorageClient::open):
    /// the id its client reserved (and returned), so requests can follow
    /// the open at once.
    pub(crate) reserved: Option<FileId>,
}

/// What a storage request produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageOutput {
    /// The file was opened.
    Opened(FileId),
    /// Bytes read (fewer than asked at end of file).
    Read(usize),
    /// Bytes written (always all of them).
    Written(usize),
    /// The sync finished.
    Synced,
    /// The space was reserved.
    Allocated,
    /// The file's length was set.
    Resized,
    /// The file's name was removed.
    Removed,
    /// The file was closed.
    Closed,
}

/// The answer to one storage request, delivered through the client's
/// [`ResultSink`](crate::worker::ResultSink). The buffers come back whether
/// the request succeeded or not.
#[derive(Debug)]
pub struct StorageCompletion {
    /// The token the request was submitted with.
    pub token: u64,
    /// The outcome.
    pub result: Result<StorageOutput, IoError>,
    /// The request's buffer (reads: holding the bytes read).
    pub buf: Option<IoBuf>,
    /// A vectored write's buffers.
    pub bufs: Vec<IoBuf>,
}

impl StorageCompletion {
    pub(crate) fn failed(token: u64, op: StorageOp, error: IoError) -> Self {
        let (buf, bufs) = op.into_bufs();
        Self {
            token,
            result: Err(error),
            buf,
            bufs,
        }
    }
}

impl crate::io::error::Completion for StorageCompletion {
    fn report(&self, stats: &crate::io::stats::IoCounters) {
        stats.completions.add(1);
        match &self.result {
            Ok(StorageOutput::Read(n)) => stats.bytes_in.add(*n as u64),
            Ok(StorageOutput::Written(n)) => stats.bytes_out.add(*n as u64),
            Ok(_) => {}
            Err(e) => {
                stats.errors.add(1);
                tracing::warn!(token = self.token, errno = e.errno(), error = %e, "storage request failed");
            }
        }
    }
}
