//! Where pages live: the [`PageStore`] trait the B+tree and the manifest do
//! their I/O through, and [`FileStore`], a data file read and written with
//! positioned `pread`/`pwrite` (`FileExt::read_at`/`write_at`).
//!
//! File layout: two 4 KiB manifest slots at offsets 0 and 4096, then pages;
//! page `id` is at `id * page_size`, so the first data page is
//! [`first_data_page`] (2 for 4 KiB pages, 1 from 8 KiB up). Every write is
//! a whole page or a whole slot at an aligned offset, so a later `O_DIRECT`
//! io_uring implementation can issue them unchanged.
//!
//! The trait is only I/O. Which page ids may be written when (the
//! copy-on-write free-space rule) is one policy, `btree::free`, shared by
//! every implementation, because crash safety depends on it.

use crate::page::{PageId, PageSize};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of one manifest slot.
pub const SLOT_LEN: usize = 4096;
/// Number of manifest slots at the start of the file.
pub const SLOTS: usize = 2;

/// The first page id past the manifest slots for `size`.
pub fn first_data_page(size: PageSize) -> PageId {
    PageId(((SLOTS * SLOT_LEN).div_ceil(size.bytes())) as u64)
}

/// Page-granular storage for one shard.
///
/// Reads may run while nothing writes; writes are not durable until
/// [`PageStore::sync`] returns.
pub trait PageStore {
    /// Fills `buf` (one page) from page `id`. A page past the end of the
    /// store is `io::ErrorKind::UnexpectedEof`.
    fn read_page(&self, id: PageId, buf: &mut [u8]) -> io::Result<()>;
    /// Writes one page at `id`.
    fn write_page(&mut self, id: PageId, buf: &[u8]) -> io::Result<()>;
    /// Fills `buf` (one slot) from manifest slot `slot`.
    fn read_slot(&self, slot: usize, buf: &mut [u8]) -> io::Result<()>;
    /// Writes manifest slot `slot`.
    fn write_slot(&mut self, slot: usize, buf: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// A data file accessed with positioned reads and writes.
#[derive(Debug)]
pub struct FileStore {
    file: File,
    size: PageSize,
}

impl FileStore {
    /// Opens (creating if absent) the data file at `path` for pages of
    /// `size`. Returns the store and whether the file was empty (new).
    ///
    /// # Errors
    /// The file cannot be opened or its length read.
    pub fn open(path: &Path, size: PageSize) -> io::Result<(Self, bool)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let empty = file.metadata()?.len() == 0;
        Ok((FileStore { file, size }, empty))
    }
}

impl PageStore for FileStore {
    fn read_page(&self, id: PageId, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, self.size.offset(id))
    }

    fn write_page(&mut self, id: PageId, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, self.size.offset(id))
    }

    fn read_slot(&self, slot: usize, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, (slot * SLOT_LEN) as u64)
    }

    fn write_slot(&mut self, slot: usize, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, (slot * SLOT_LEN) as u64)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TempDir;

    #[test]
    fn first_pages() {
        assert_eq!(first_data_page(PageSize::MIN), PageId(2));
        assert_eq!(first_data_page(PageSize::new(8192).unwrap()), PageId(1));
        assert_eq!(first_data_page(PageSize::new(65536).unwrap()), PageId(1));
    }

    #[test]
    fn pages_and_slots_round_trip() {
        let dir = TempDir::new();
        let path = dir.file("data");
        let (mut s, new) = FileStore::open(&path, PageSize::MIN).unwrap();
        assert!(new);
        let page = vec![7u8; 4096];
        s.write_page(PageId(3), &page).unwrap();
        s.write_slot(1, &[9u8; SLOT_LEN]).unwrap();
        s.sync().unwrap();
        let mut buf = vec![0u8; 4096];
        s.read_page(PageId(3), &mut buf).unwrap();
        assert_eq!(buf, page);
        s.read_slot(1, &mut buf).unwrap();
        assert_eq!(buf, vec![9u8; 4096]);
        let err = s.read_page(PageId(10), &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        drop(s);
        let (_, new) = FileStore::open(&path, PageSize::MIN).unwrap();
        assert!(!new);
    }
}
