//! Which engine a file belongs to, when the daemon runs more than one.
//!
//! Each engine keeps its own LSN order, its own WAL and its own view of a
//! file's end (where appends go). Two engines writing one file would put
//! appends at the same offset, and replay could apply one engine's older
//! write over the other's newer one, since their LSNs are not comparable.
//! So a file (by device and inode) is claimed by the first engine that
//! opens it, and another engine's open of it is refused (`FILE_BUSY`)
//! until the claim is released.
//!
//! **Invariant (C1):** an engine releases its claim on a file only once
//! the file is closed there (no handle, nothing in flight) and a durable
//! DONE in its WAL covers the file's last journaled write, so no later
//! replay of that WAL writes the file again; a start claims, for the
//! engine whose WAL holds them, the files of writes that replay left past
//! that WAL's DONE. With one engine nothing is claimed (its one LSN order
//! covers every file).

use crate::resolve::FileKey;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// The claims of every engine, shared by them (touched at open and at
/// release, never on the write path).
#[derive(Debug, Default)]
pub struct Claims {
    owners: Mutex<HashMap<FileKey, usize>>,
}

impl Claims {
    /// Claims `key` for `engine`; `Err` gives the engine that holds it.
    pub fn claim(&self, key: FileKey, engine: usize) -> Result<(), usize> {
        let mut g = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        match *g.entry(key).or_insert(engine) {
            owner if owner == engine => Ok(()),
            owner => Err(owner),
        }
    }

    /// Releases `engine`'s claim on `key` (another engine's stays).
    pub fn release(&self, key: FileKey, engine: usize) {
        let mut g = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        if g.get(&key) == Some(&engine) {
            g.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_belongs_to_one_engine_until_it_releases_it() {
        let c = Claims::default();
        let a = FileKey { dev: 1, ino: 10 };
        let b = FileKey { dev: 1, ino: 11 };
        assert_eq!(c.claim(a, 0), Ok(()));
        assert_eq!(c.claim(a, 0), Ok(()), "its own engine again");
        assert_eq!(c.claim(a, 1), Err(0));
        assert_eq!(c.claim(b, 1), Ok(()));
        c.release(a, 1);
        assert_eq!(c.claim(a, 1), Err(0), "only the owner releases");
        c.release(a, 0);
        assert_eq!(c.claim(a, 1), Ok(()));
        assert_eq!(c.claim(a, 0), Err(1));
    }
}
