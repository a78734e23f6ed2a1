//! The disk under the WAL, as two small traits (the fault-injection seam
//! of the tests), and their `std::fs` implementation.
//!
//! Segment files live in one directory per shard and are named by the LSN
//! of their first record, zero-padded so that name order is LSN order.

use super::record::Lsn;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".wal";

/// The file name of the segment starting at `first`.
pub fn segment_name(first: Lsn) -> String {
    format!("{:020}{SUFFIX}", first.0)
}

/// The first LSN of a segment file name; `None` for other files.
pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// One segment file.
pub trait WalFile {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset`; a short file is `UnexpectedEof`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Makes the written data (and the length) durable: fdatasync.
    fn sync_data(&mut self) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// The directory of a shard's segment files.
pub trait WalDir: std::fmt::Debug {
    type File: WalFile + std::fmt::Debug;
    /// Where it is, for error messages.
    fn path(&self) -> &Path;
    /// Names of the files in it.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens `name` for reading and writing, creating it if absent.
    fn open(&mut self, name: &str) -> io::Result<Self::File>;
    /// Deletes `name`; a missing file is not an error.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Makes creations and removals durable (fsync of the directory).
    fn sync(&mut self) -> io::Result<()>;
}

/// A WAL directory on the local file system.
#[derive(Debug)]
pub struct FsWalDir {
    path: PathBuf,
}

impl FsWalDir {
    /// Uses `path`, creating it if needed (and then syncing its parent, so
    /// that the new directory's name is durable before any segment in it).
    ///
    /// # Errors
    /// The directory cannot be created or its parent synced.
    pub fn create(path: &Path) -> io::Result<Self> {
        if !path.is_dir() {
            fs::create_dir_all(path)?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(FsWalDir {
            path: path.to_path_buf(),
        })
    }
}

impl WalFile for File {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

impl WalDir for FsWalDir {
    type File = File;

    fn path(&self) -> &Path {
        &self.path
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            // Names that are not UTF-8 are not segments.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&mut self, name: &str) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path.join(name))
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_lsn_and_parse_back() {
        let a = segment_name(Lsn(9));
        let b = segment_name(Lsn(10));
        assert!(a < b);
        assert_eq!(parse_segment_name(&b), Some(Lsn(10)));
        assert_eq!(
            parse_segment_name(&segment_name(Lsn(u64::MAX))),
            Some(Lsn(u64::MAX))
        );
        assert_eq!(parse_segment_name("10.wal"), None);
        assert_eq!(parse_segment_name("0000000000000000001x.wal"), None);
        assert_eq!(parse_segment_name("LOCK"), None);
    }
}
