//! The disk behind the log, as two small traits.
//!
//! The log's format and state machine only call these. [`FsDir`] is the
//! plain `std::fs` implementation (positional reads and writes, no shared
//! file cursor). In the server the log's writes and syncs go through a
//! storage I/O worker instead (see `Log::defer_io`); its segment files are
//! then only read through these, opened on the first read
//! ([`Dir::open_later`]).

use std::cell::OnceCell;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One file of the log (a segment or its index).
pub trait SegmentFile {
    /// Writes all of `buf` at byte position `pos`.
    fn write_all_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<()>;
    /// Fills all of `buf` from byte position `pos`; short files are an
    /// `UnexpectedEof` error.
    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Makes written data durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Current file length.
    fn len(&self) -> io::Result<u64>;
    /// Cuts (or extends with zeros) the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// The directory holding the log's files.
pub trait Dir {
    /// File type this directory opens.
    type File: SegmentFile;
    /// Names of the regular files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens `name` for reading and writing, creating it if absent.
    fn open(&self, name: &str) -> io::Result<Self::File>;
    /// A handle on `name` that makes no system call now: the file is opened
    /// (it must exist by then) on its first use. For segments created by
    /// someone else (the storage worker) and only read here.
    fn open_later(&self, name: &str) -> Self::File;
    /// Deletes `name`; a missing file is not an error.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations and removals durable (fsync of the directory), so a
    /// new segment's name survives a crash along with its data.
    fn sync(&self) -> io::Result<()>;
}

/// A data directory on the local file system.
#[derive(Debug, Clone)]
pub struct FsDir {
    path: PathBuf,
}

impl FsDir {
    /// Uses `path`, creating it (and its parents) if needed.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        fs::create_dir_all(&path)?;
        Ok(FsDir { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes an exclusive lock on the directory (file `LOCK`, `flock`), held
    /// until the returned guard is dropped: two brokers appending to one log
    /// would interleave their records and destroy it.
    ///
    /// # Errors
    /// `WouldBlock` with a message if another process (or another open of
    /// the same directory) holds it; other I/O errors as they come.
    pub fn lock(&self) -> io::Result<DirLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path.join("LOCK"))?;
        // SAFETY: flock takes a descriptor by value and touches no memory of
        // ours; `file` keeps the descriptor open for the whole call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is in use by another broker", self.path.display()),
                ));
            }
            return Err(err);
        }
        Ok(DirLock { _file: file })
    }
}

/// An exclusive lock on a data directory; released on drop (closing the
/// file releases the `flock`).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// A file of an [`FsDir`]: open now, or on first use.
#[derive(Debug)]
pub struct FsFile {
    path: PathBuf,
    file: OnceCell<File>,
}

impl FsFile {
    fn get(&self) -> io::Result<&File> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let f = OpenOptions::new().read(true).write(true).open(&self.path)?;
        Ok(self.file.get_or_init(|| f))
    }
}

impl SegmentFile for FsFile {
    fn write_all_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self.get()?, buf, pos)
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(self.get()?, buf, pos)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.get()?.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.get()?.metadata()?.len())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.get()?.set_len(len)
    }
}

impl Dir for FsDir {
    type File = FsFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                // Names that are not UTF-8 cannot be ours; skip them.
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<FsFile> {
        let path = self.path.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        Ok(FsFile {
            path,
            file: OnceCell::from(file),
        })
    }

    fn open_later(&self, name: &str) -> FsFile {
        FsFile {
            path: self.path.join(name),
            file: OnceCell::new(),
        }
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}
