//! The engine's open files, shared by every client that opened the same
//! file (by device and inode), with each file's writes on their way to it.
//!
//! **Invariant (F1):** two writes to one file whose byte ranges overlap
//! are never in flight together, and reach the file in LSN order
//! (`take_ready`), so the file ends as the WAL's order says, as replay
//! (W1) would leave it.
//!
//! **Invariant (F2):** a read, sync or close of a file runs only after
//! every write to that file accepted before it has reached the file
//! (`Deferred::after`), so it sees (or syncs) them.

use crate::resolve::FileKey;
use shared_nothing::io::FileId;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::fd::OwnedFd;

/// An operation waiting for the file's earlier writes (F2).
#[derive(Debug)]
pub struct Deferred {
    /// Runs once no write with an LSN up to this one is unapplied.
    pub after: u64,
    pub client: u64,
    pub user: u64,
    pub what: Later,
}

#[derive(Debug)]
pub enum Later {
    Read { offset: u64, at: usize, len: usize },
    Sync { data_only: bool },
    Close { handle: u64 },
}

#[derive(Debug)]
pub struct File {
    pub id: FileId,
    pub file_no: u32,
    pub path: Vec<u8>,
    /// Whether this log already holds the PATH record of `file_no`.
    pub journaled: bool,
    /// The highest LSN of a journaled write to it (what its claim waits
    /// for, C1).
    pub last_lsn: u64,
    /// The end of the file as accepted writes leave it (appends go here).
    pub end: u64,
    /// Client handles open on it.
    pub refs: usize,
    /// The descriptor `openat2` gave: the storage worker opens its own
    /// through `/proc/self/fd`, and the engine reads cached data through
    /// it inline (`Region::read_cached`).
    pub fd: OwnedFd,
    /// Accepted writes not yet written to the file.
    pub unapplied: BTreeSet<u64>,
    /// Journaled writes waiting to be submitted, in LSN order, with their
    /// ranges.
    pub queue: VecDeque<(u64, u64, u64)>,
    /// Writes in flight: (lsn, start, end).
    pub inflight: Vec<(u64, u64, u64)>,
    /// Written, waiting for the group `fdatasync`.
    pub unsynced: Vec<u64>,
    pub syncing: bool,
    pub deferred: VecDeque<Deferred>,
}

impl File {
    pub fn new(id: FileId, file_no: u32, path: Vec<u8>, end: u64, fd: OwnedFd) -> File {
        File {
            id,
            file_no,
            path,
            journaled: false,
            last_lsn: 0,
            end,
            refs: 0,
            fd,
            unapplied: BTreeSet::new(),
            queue: VecDeque::new(),
            inflight: Vec::new(),
            unsynced: Vec::new(),
            syncing: false,
            deferred: VecDeque::new(),
        }
    }

    /// The queued writes that may start now (F1): in order, each one that
    /// overlaps no write in flight and no earlier write still queued.
    pub fn take_ready(&mut self) -> Vec<u64> {
        let overlaps = |a: (u64, u64), b: (u64, u64)| a.0 < b.1 && b.0 < a.1;
        let mut ready = Vec::new();
        let mut held: Vec<(u64, u64)> = Vec::new();
        let mut keep = VecDeque::new();
        while let Some((lsn, s, e)) = self.queue.pop_front() {
            let blocked = self
                .inflight
                .iter()
                .any(|&(_, a, b)| overlaps((s, e), (a, b)))
                || held.iter().any(|&r| overlaps((s, e), r));
            if blocked {
                held.push((s, e));
                keep.push_back((lsn, s, e));
            } else {
                self.inflight.push((lsn, s, e));
                ready.push(lsn);
            }
        }
        self.queue = keep;
        ready
    }

    /// The deferred operations whose writes have all reached the file (F2).
    pub fn take_runnable(&mut self) -> Vec<Deferred> {
        let first = self.unapplied.first().copied();
        let mut out = Vec::new();
        while let Some(d) = self.deferred.front() {
            if first.is_some_and(|f| f <= d.after) {
                break;
            }
            out.extend(self.deferred.pop_front());
        }
        out
    }

    /// Whether nothing uses the file any more, so it may be closed.
    pub fn idle(&self) -> bool {
        self.refs == 0
            && self.unapplied.is_empty()
            && self.queue.is_empty()
            && self.inflight.is_empty()
            && self.unsynced.is_empty()
            && !self.syncing
            && self.deferred.is_empty()
    }
}

/// Every open file, by identity.
pub type Files = HashMap<FileKey, File>;

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> File {
        let (_, fd) = crate::shm::Region::create("files-test", 8).unwrap();
        File::new(shared_nothing_test_id(), 1, b"f".to_vec(), 0, fd)
    }

    fn shared_nothing_test_id() -> FileId {
        // A real id from a worker: FileId has no public constructor.
        let w = shared_nothing::io::StorageWorker::start(0, Default::default()).unwrap();
        let mut io = w.blocking_client().unwrap();
        let p = std::env::temp_dir().join(format!("sidecar-files-{}", std::process::id()));
        let id = io
            .open(&p, shared_nothing::io::OpenOptions::read_write_create())
            .unwrap();
        let _ = std::fs::remove_file(p);
        id
    }

    #[test]
    fn overlapping_writes_wait_and_keep_their_order() {
        let mut f = file();
        f.queue
            .extend([(1, 0, 10), (2, 5, 15), (3, 20, 30), (4, 12, 14)]);
        assert_eq!(
            f.take_ready(),
            vec![1, 3],
            "2 overlaps 1; 4 overlaps the held 2"
        );
        f.inflight.retain(|w| w.0 != 1);
        assert_eq!(f.take_ready(), vec![2]);
        f.inflight.retain(|w| w.0 != 2);
        assert_eq!(f.take_ready(), vec![4]);
    }

    #[test]
    fn deferred_operations_wait_for_earlier_writes_only() {
        let mut f = file();
        f.unapplied.extend([3, 7]);
        f.deferred.push_back(Deferred {
            after: 2,
            client: 1,
            user: 1,
            what: Later::Sync { data_only: true },
        });
        f.deferred.push_back(Deferred {
            after: 5,
            client: 1,
            user: 2,
            what: Later::Sync { data_only: true },
        });
        assert_eq!(f.take_runnable().len(), 1);
        f.unapplied.remove(&3);
        assert_eq!(f.take_runnable().len(), 1);
        assert!(f.deferred.is_empty());
    }
}
