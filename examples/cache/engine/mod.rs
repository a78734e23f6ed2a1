//! One worker's part of the cache: values split into [`CHUNK`]-byte
//! chunks addressed by their xxh3-128 hash, each distinct chunk stored
//! once and counted by the entries that use it, and the ARC memory tier
//! (`arc.rs`) deciding which chunks stay.
//!
//! A value arrives as a [`Staged`] (its chunks, hashed as they come, so
//! a PUT body is never copied into one buffer) and becomes an entry in
//! one [`Engine::commit`]. A read names a byte range and touches (in ARC
//! and in memory) only the chunks that range covers.
//!
//! With a disk tier (`disk.rs` for its files) the engine is also the
//! disk tier's index, and stays pure: it never does I/O itself but hands
//! out what to write ([`Engine::start_batch`], [`Engine::batch_records`]),
//! what to read ([`Read::Need`]) and what to remove
//! ([`Engine::take_unlinks`]), and is told the results. A value for the
//! disk tier is written through (its chunk files, then its manifest
//! record) and becomes the entry only once both are written, so a
//! stored value survives a restart; the memory tier is a cache over it.
//!
//! **Invariants.** E1: a chunk's bytes are in memory exactly when the
//! memory ARC holds it resident, so they never exceed the tier's
//! capacity (A1). E2: every chunk of every live entry is readable: in
//! memory, or stored on disk. When the memory ARC evicts a chunk that is
//! stored on disk it is demoted (the entries stay, later reads come from
//! disk and refill memory); one that is not takes every entry using it
//! along, as an entry is served whole or not at all. E3: a chunk's
//! `owners` are the live entries (and the disk batch's puts) using it,
//! with how many times each does; a chunk with none leaves both tiers.
//! E4: a commit pins its chunks in ARC (A4), so storing a value never
//! evicts a chunk of that same value, and a value that does not fit is
//! refused whole, leaving the engine as it was except for evictions
//! already made; a streamed value ([`Engine::fill_push`]) holds each
//! chunk in its tier as it arrives (A5) instead, and is no entry (no
//! reader can name it) until [`Engine::fill_finish`]. E5: an entry's `in_mem` counts its chunk uses resident
//! in memory, and `mem_entries` the entries with any (or empty ones not
//! on disk).
//!
//! D1: an entry `on_disk` has a manifest record, and all its chunks are
//! stored (their files written), so it can be read back after a
//! restart; when the disk ARC evicts a chunk, every entry using it goes
//! (with a delete record), and the same when a chunk read back fails its
//! length or xxh3-128 check (counted as corrupt: a miss, never wrong
//! bytes). D2: a chunk has a file (written or being written) exactly
//! when the disk ARC holds it, so the files' bytes never exceed `-D`.
//! D3: one disk batch at a time: the queued puts and deletes go to disk
//! together, in order; their records follow their chunk files, so the
//! manifest's order is the order the requests were applied in. D4: a key
//! with a put on its way remembers the highest id applied to it since
//! (a delete, a memory-only put); a put older than that is stored on disk
//! but superseded, as its record is followed by the newer one's, so
//! memory and a restart agree.

// By concept: `stage.rs` a value arriving, `entry.rs` entries and their
// chunks' owners (E3, E5), `commit.rs` storing and deleting (E4),
// `read.rs` reads, `evict.rs` what evictions take along (E2, D1),
// `batch.rs` the disk batch (D3, D4), `fill.rs` streamed PUTs (A5),
// `sparse.rs` sparse values, `stats.rs` the figures; `tests.rs` with
// the invariants' check.
mod batch;
mod commit;
mod entry;
mod evict;
mod fill;
mod read;
mod sparse;
mod stage;
mod stats;
#[cfg(test)]
mod tests;

pub use batch::ChunkWrite;
pub use commit::CommitError;
pub use entry::{Entry, Placement};
pub use read::Read;
pub use sparse::FinalizeError;
pub use stage::Staged;
#[cfg(test)]
pub use stage::{stage, staged_bytes};
pub use stats::Stats;

use crate::arc::Arc;
use crate::disk::{ChunkFile, Recovered, unix_ms};
use crate::metrics::EngineMeters;
use crate::sparse::SparseArea;
use batch::{Batch, Job};
use fill::Fill;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Chunk size: ElCache's 4 MiB.
pub const CHUNK: usize = 4 << 20;

/// A chunk's content address.
pub type ChunkHash = u128;

/// The xxh3-128 hash of `data`.
pub fn chunk_hash(data: &[u8]) -> ChunkHash {
    xxhash_rust::xxh3::xxh3_128(data)
}

/// Where a chunk is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnDisk {
    No,
    /// Its file (this sequence number) is being written.
    Writing(u64),
    Stored(u64),
}

#[derive(Debug)]
struct Chunk {
    len: u64,
    /// E1: `Some` exactly when the memory ARC holds it resident.
    mem: Option<Vec<u8>>,
    /// D2: not `No` exactly when the disk ARC holds it resident.
    disk: OnDisk,
    /// E3: (entry or pending put id, uses).
    owners: Vec<(u64, u32)>,
}

/// Whether an operation is done or waits for the disk tier (its answer
/// then comes from [`Engine::batch_done`] under the ticket it was given).
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    Now,
    Later,
}

/// The disk tier's index (D1-D4).
#[derive(Debug)]
struct DiskTier {
    arc: Arc<ChunkHash>,
    next_seq: u64,
    queue: Vec<Job>,
    batch: Option<Batch>,
    /// Files to remove (their chunks left the tier).
    unlinks: Vec<ChunkFile>,
    /// Where the next manifest record goes.
    log_end: u64,
    /// D4: keys with puts queued or in flight: (how many, the highest id
    /// applied to the key since).
    pending: HashMap<Vec<u8>, (usize, u64)>,
    entries: u64,
}

/// One worker's store.
#[derive(Debug)]
pub struct Engine {
    entries: HashMap<Vec<u8>, Entry>,
    /// Entry id -> key, for E2's drops.
    keys: HashMap<u64, Vec<u8>>,
    chunks: HashMap<ChunkHash, Chunk>,
    arc: Arc<ChunkHash>,
    disk: Option<DiskTier>,
    next_id: u64,
    /// Deadlines of entries with a TTL; stale ones (the entry replaced or
    /// gone) are skipped when they come up.
    expiry: BinaryHeap<Reverse<(Instant, u64)>>,
    m: EngineMeters,
    mem_entries: u64,
    /// Sparse values being written (`sparse.rs`), separate from
    /// `entries` until finalized.
    sparse: SparseArea,
    /// Streamed PUTs being received, by id.
    fills: HashMap<u64, Fill>,
}

fn deadline(ttl: Option<Duration>, now: Instant) -> (Option<Instant>, u64) {
    match ttl.and_then(|t| now.checked_add(t).map(|at| (at, t))) {
        Some((at, t)) => {
            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            (Some(at), unix_ms().saturating_add(ms).max(1))
        }
        None => (None, 0),
    }
}

impl Engine {
    /// An engine whose memory tier holds `capacity` bytes of chunks, with
    /// no disk tier and counters of its own.
    #[cfg(test)]
    pub fn new(capacity: u64) -> Self {
        Engine::with_meters(capacity, EngineMeters::default())
    }

    /// As [`new`](Self::new), counting into `m`.
    pub fn with_meters(capacity: u64, m: EngineMeters) -> Self {
        Engine {
            entries: HashMap::new(),
            keys: HashMap::new(),
            chunks: HashMap::new(),
            arc: Arc::new(capacity),
            disk: None,
            next_id: 1,
            expiry: BinaryHeap::new(),
            m,
            mem_entries: 0,
            sparse: SparseArea::new(capacity),
            fills: HashMap::new(),
        }
    }

    /// Adds a disk tier of `capacity` bytes holding what `rec` recovered
    /// (oldest first, so the disk ARC's recency follows the log; entries
    /// past the capacity are evicted as usual, their deletes queued).
    pub fn attach_disk(&mut self, capacity: u64, rec: Recovered, now: Instant) {
        let now_ms = unix_ms();
        self.next_id = self.next_id.max(rec.next_id);
        self.sparse = SparseArea::new(self.arc.capacity().max(capacity));
        self.m.corrupt.inc_by(rec.damaged);
        let mut disk = DiskTier {
            arc: Arc::new(capacity),
            next_seq: rec.next_seq,
            queue: Vec::new(),
            batch: None,
            unlinks: Vec::new(),
            log_end: rec.log_end,
            pending: HashMap::new(),
            entries: 0,
        };
        let mut evicted = Vec::new();
        for p in rec.entries {
            let mut hashes = Vec::with_capacity(p.chunks.len());
            for (i, &(h, seq)) in p.chunks.iter().enumerate() {
                let len = crate::disk::chunk_len(p.size, i);
                let c = self.chunks.entry(h).or_insert_with(|| Chunk {
                    len,
                    mem: None,
                    disk: OnDisk::No,
                    owners: Vec::new(),
                });
                if c.disk == OnDisk::No {
                    c.disk = OnDisk::Stored(seq);
                    disk.arc.request(h, len, &mut evicted);
                } else if c.disk != OnDisk::Stored(seq) {
                    // The same content under two files: the later one
                    // is redundant.
                    disk.unlinks.push((h, seq));
                }
                add_owner(&mut c.owners, p.id);
                hashes.push(h);
            }
            let expires = (p.expires_ms != 0)
                .then(|| now + Duration::from_millis(p.expires_ms.saturating_sub(now_ms)));
            if let Some(at) = expires {
                self.expiry.push(Reverse((at, p.id)));
            }
            self.keys.insert(p.id, p.key.clone());
            disk.entries += 1;
            let e = Entry {
                id: p.id,
                size: p.size,
                flags: p.flags,
                chunks: hashes,
                expires,
                on_disk: true,
                in_mem: 0,
            };
            if e.in_memory() {
                self.mem_entries += 1;
            }
            self.entries.insert(p.key, e);
        }
        self.disk = Some(disk);
        let mut dels = Vec::new();
        self.drop_evicted_disk(evicted, &mut dels);
        self.queue_dels(dels);
        self.publish();
    }

    /// Counts a failed disk operation.
    pub fn disk_error(&self) {
        self.m.disk_errors.inc();
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

fn add_owner(owners: &mut Vec<(u64, u32)>, id: u64) {
    match owners.iter_mut().find(|(o, _)| *o == id) {
        Some((_, n)) => *n += 1,
        None => owners.push((id, 1)),
    }
}
