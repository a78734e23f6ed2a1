//! Test seam: a [`WalDir`] over the real file system whose Nth write or
//! Nth sync fails with a chosen errno (a failing write first writes half
//! its bytes, as a disk filling up mid-write does).

use super::file::{FsWalDir, WalDir, WalFile};
use std::cell::Cell;
use std::fs::File;
use std::io;
use std::path::Path;
use std::rc::Rc;

/// What fails next; shared by the directory and its files.
#[derive(Debug, Default)]
pub struct Faults {
    /// Writes (file writes) left before one fails with the errno.
    pub write_in: Cell<Option<u32>>,
    /// Syncs (file or directory) left before one fails with the errno.
    pub sync_in: Cell<Option<u32>>,
    pub errno: Cell<i32>,
}

impl Faults {
    /// Fails the `n`th write from now (1 is the next) with `errno`.
    pub fn fail_write(&self, n: u32, errno: i32) {
        self.write_in.set(Some(n));
        self.errno.set(errno);
    }

    /// Fails the `n`th sync from now (1 is the next) with `errno`.
    pub fn fail_sync(&self, n: u32, errno: i32) {
        self.sync_in.set(Some(n));
        self.errno.set(errno);
    }

    /// Counts one operation down; `true` if it is the one to fail.
    fn hit(counter: &Cell<Option<u32>>) -> bool {
        match counter.get() {
            Some(1) => {
                counter.set(None);
                true
            }
            Some(n) => {
                counter.set(Some(n - 1));
                false
            }
            None => false,
        }
    }

    fn error(&self) -> io::Error {
        io::Error::from_raw_os_error(self.errno.get())
    }
}

/// An [`FsWalDir`] with [`Faults`].
#[derive(Debug)]
pub struct FaultyDir {
    pub inner: FsWalDir,
    pub faults: Rc<Faults>,
}

impl FaultyDir {
    pub fn create(path: &Path) -> (Self, Rc<Faults>) {
        let faults = Rc::new(Faults::default());
        let dir = FaultyDir {
            inner: FsWalDir::create(path).unwrap(),
            faults: Rc::clone(&faults),
        };
        (dir, faults)
    }
}

/// A segment file of a [`FaultyDir`].
#[derive(Debug)]
pub struct FaultyFile {
    inner: File,
    faults: Rc<Faults>,
}

impl WalFile for FaultyFile {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if Faults::hit(&self.faults.write_in) {
            self.inner.write_all_at(offset, &buf[..buf.len() / 2])?;
            return Err(self.faults.error());
        }
        self.inner.write_all_at(offset, buf)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact_at(offset, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if Faults::hit(&self.faults.sync_in) {
            return Err(self.faults.error());
        }
        WalFile::sync_data(&mut self.inner)
    }

    fn len(&self) -> io::Result<u64> {
        WalFile::len(&self.inner)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        WalFile::truncate(&mut self.inner, len)
    }
}

impl WalDir for FaultyDir {
    type File = FaultyFile;

    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn open(&mut self, name: &str) -> io::Result<FaultyFile> {
        Ok(FaultyFile {
            inner: self.inner.open(name)?,
            faults: Rc::clone(&self.faults),
        })
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }

    fn sync(&mut self) -> io::Result<()> {
        if Faults::hit(&self.faults.sync_in) {
            return Err(self.faults.error());
        }
        self.inner.sync()
    }
}
