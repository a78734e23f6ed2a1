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

use crate::arc::{Arc, Outcome};
use crate::disk::{ChunkFile, PutRecord, Record, Recovered, unix_ms};
use crate::metrics::EngineMeters;
use crate::sparse::{Progress, SparseArea, SparseError};
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

/// A value being received: its chunks so far, each hashed.
#[derive(Debug, Default)]
pub struct Staged {
    chunks: Vec<(ChunkHash, Vec<u8>)>,
    size: u64,
}

/// Why a chunk cannot be staged.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    #[error("a chunk of {0} bytes is larger than the chunk size")]
    TooLong(usize),
    #[error("a chunk follows a short one (only the last chunk may be short)")]
    AfterShort,
}

impl Staged {
    /// Appends the next chunk (full-sized, except the last).
    ///
    /// # Errors
    /// A chunk longer than [`CHUNK`], or any chunk after a short one.
    pub fn push(&mut self, data: Vec<u8>) -> Result<(), StageError> {
        if data.len() > CHUNK {
            return Err(StageError::TooLong(data.len()));
        }
        if self.chunks.last().is_some_and(|(_, d)| d.len() < CHUNK) {
            return Err(StageError::AfterShort);
        }
        if data.is_empty() {
            return Ok(());
        }
        self.size += data.len() as u64;
        self.chunks.push((chunk_hash(&data), data));
        Ok(())
    }

    /// Bytes staged so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The staged bytes, piece by piece, in order.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.chunks.iter().map(|(_, d)| d.as_slice())
    }
}

/// All of `staged`'s bytes in one buffer.
#[cfg(test)]
pub fn staged_bytes(staged: &Staged) -> Vec<u8> {
    staged.pieces().flatten().copied().collect()
}

/// Which tiers a value may go to (`X-ElCache-No-Memory`,
/// `X-ElCache-No-Disk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub memory: bool,
    pub disk: bool,
}

impl Placement {
    pub const BOTH: Placement = Placement {
        memory: true,
        disk: true,
    };
}

/// A live entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Unique per stored version: a reader that continues a long read
    /// names it, and learns if the value changed in between.
    pub id: u64,
    pub size: u64,
    pub flags: u32,
    chunks: Vec<ChunkHash>,
    expires: Option<Instant>,
    /// D1: a manifest record names it, and all its chunks are on disk.
    on_disk: bool,
    /// E5: how many of its chunk uses are resident in memory.
    in_mem: u32,
}

impl Entry {
    /// ElCache's `X-ElCache-Chunks`: the size over [`CHUNK`], rounded up
    /// (every chunk but the last is full).
    pub fn chunk_count(&self) -> u64 {
        self.chunks.len() as u64
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }

    /// Counted among the memory tier's entries (E5).
    fn in_memory(&self) -> bool {
        self.in_mem > 0 || (self.chunks.is_empty() && !self.on_disk)
    }
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

/// Why a value was not stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    #[error("the value ({size} bytes) does not fit the tier ({capacity} bytes)")]
    TooLarge { size: u64, capacity: u64 },
    #[error("two different chunks have the same 128-bit hash")]
    Collision,
    #[error("no tier may take the value (X-ElCache-No-Memory and no disk tier, or both refused)")]
    NoTier,
    #[error("the disk tier failed to store the value")]
    Disk,
    #[error("a body chunk out of order (only the last may be short)")]
    BadChunk,
}

/// One tier's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: u64,
    pub size_bytes: u64,
    pub capacity_bytes: u64,
    pub chunks: u64,
}

impl TierStats {
    fn add(&mut self, o: &TierStats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.evictions += o.evictions;
        self.entries += o.entries;
        self.size_bytes += o.size_bytes;
        self.capacity_bytes += o.capacity_bytes;
        self.chunks += o.chunks;
    }
}

/// What `/stats` and `/metrics` report for one worker (summed over
/// workers). The ElCache fields are the two tiers summed, as ElCache
/// sums them: a key held in both counts twice, and a memory miss
/// followed by a disk hit counts one of each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub partial_hits: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Chunks evicted from either tier.
    pub evictions: u64,
    pub entry_count: u64,
    pub size_bytes: u64,
    pub capacity_bytes: u64,
    pub chunk_count: u64,
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub memory: TierStats,
    pub disk: TierStats,
    pub chunks_read: u64,
    pub chunks_written: u64,
    pub corrupt: u64,
    pub disk_errors: u64,
    /// The HTTP fronts' figures (filled by the server, not the engine).
    pub http_requests: u64,
    pub http_errors: u64,
    pub connections: u64,
    /// HTTP GET and PUT latency: (sum in us, count).
    pub get_us: (u64, u64),
    pub put_us: (u64, u64),
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.partial_hits += o.partial_hits;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.evictions += o.evictions;
        self.entry_count += o.entry_count;
        self.size_bytes += o.size_bytes;
        self.capacity_bytes += o.capacity_bytes;
        self.chunk_count += o.chunk_count;
        self.gets += o.gets;
        self.puts += o.puts;
        self.deletes += o.deletes;
        self.memory.add(&o.memory);
        self.disk.add(&o.disk);
        self.chunks_read += o.chunks_read;
        self.chunks_written += o.chunks_written;
        self.corrupt += o.corrupt;
        self.disk_errors += o.disk_errors;
        self.http_requests += o.http_requests;
        self.http_errors += o.http_errors;
        self.connections += o.connections;
        self.get_us.0 += o.get_us.0;
        self.get_us.1 += o.get_us.1;
        self.put_us.0 += o.put_us.0;
        self.put_us.1 += o.put_us.1;
    }

    /// hits / (hits + misses) x 100, 0 with no reads.
    pub fn hit_rate_percent(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 * 100.0 / reads as f64
        }
    }
}

/// Whether an operation is done or waits for the disk tier (its answer
/// then comes from [`Engine::batch_done`] under the ticket it was given).
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    Now,
    Later,
}

/// A value on its way to the disk tier.
#[derive(Debug)]
struct PendingPut {
    ticket: u64,
    id: u64,
    key: Vec<u8>,
    size: u64,
    flags: u32,
    expires: Option<Instant>,
    expires_ms: u64,
    memory: bool,
    /// Its chunks; a chunk's bytes are out while its file is written.
    chunks: Vec<(ChunkHash, Option<Vec<u8>>)>,
    /// How many of `chunks` hold an owner use (E3) for `id`.
    owned: usize,
    failed: Option<CommitError>,
    /// Received as a [`Fill`]: its chunk files are written already and
    /// held in the disk ARC (A5) until the batch is done.
    streamed: bool,
}

/// A value being received chunk by chunk (a streamed PUT), each chunk
/// put in a tier as it arrives and held there (A5): with a disk tier its
/// file is written at once, otherwise its bytes are held in memory. It
/// owns its chunks (E3) under its own id but is no entry: nothing reads
/// it until [`Engine::fill_finish`] makes it one, whole.
#[derive(Debug)]
struct Fill {
    chunks: Vec<ChunkHash>,
    size: u64,
    /// Held in the disk ARC (there is a disk tier), else in memory's.
    disk: bool,
    failed: Option<CommitError>,
    /// The body will not come: it goes once none of its files is being
    /// written.
    aborted: bool,
}

#[derive(Debug)]
enum Job {
    Put(PendingPut),
    /// A delete record; `ticket` answers a request.
    Del {
        ticket: Option<u64>,
        id: u64,
        key: Vec<u8>,
    },
}

/// A chunk file to write: `slot` names it in [`Engine::chunk_written`].
#[derive(Debug)]
pub struct ChunkWrite {
    pub slot: usize,
    pub file: ChunkFile,
    pub data: Vec<u8>,
}

#[derive(Debug)]
struct Batch {
    jobs: Vec<Job>,
    /// Per write slot: (job, chunk index).
    slots: Vec<(usize, usize)>,
    writes_left: usize,
    /// Delete records of entries the batch's evictions dropped.
    evicted: Vec<Record>,
    record_len: u64,
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

/// What a read needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Bytes(Vec<u8>),
    /// These chunk files first ([`Engine::chunk_loaded`]).
    Need(Vec<ChunkFile>),
    /// The entry changed or went away, or the range is past its end.
    Gone,
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

/// Why a sparse value was not finalized.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FinalizeError {
    #[error(transparent)]
    Sparse(#[from] SparseError),
    /// Complete, but the store refused it; the staging entry is gone
    /// (its bytes moved into the refused commit).
    #[error(transparent)]
    Store(#[from] CommitError),
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
        if let Some(d) = &mut self.disk {
            for r in dels {
                if let Record::Del { id, key } = r {
                    d.queue.push(Job::Del {
                        ticket: None,
                        id,
                        key,
                    });
                }
            }
        }
        self.publish();
    }

    /// Counts a failed disk operation.
    pub fn disk_error(&self) {
        self.m.disk_errors.inc();
    }

    /// Opens a sparse value of `total` bytes under `key` (at most
    /// `limit` bytes; the open ones together at most the larger tier's
    /// capacity, as they must fit it once finalized).
    ///
    /// # Errors
    /// As [`SparseArea::create`].
    pub fn sparse_create(
        &mut self,
        key: &[u8],
        total: u64,
        limit: u64,
        ttl: Option<Duration>,
        flags: u32,
    ) -> Result<(), SparseError> {
        let limit = limit.min(self.largest_tier());
        self.sparse.create(key, total, limit, ttl, flags)
    }

    fn largest_tier(&self) -> u64 {
        let disk = self.disk.as_ref().map_or(0, |d| d.arc.capacity());
        self.arc.capacity().max(disk)
    }

    /// Writes `data` at `offset` of the sparse value `key`.
    ///
    /// # Errors
    /// As [`SparseArea::write`].
    pub fn sparse_write(
        &mut self,
        key: &[u8],
        offset: u64,
        data: &Staged,
    ) -> Result<Progress, SparseError> {
        self.sparse.write(key, offset, data.pieces())
    }

    /// How far the sparse value `key` is.
    pub fn sparse_progress(&self, key: &[u8]) -> Option<Progress> {
        self.sparse.progress(key)
    }

    /// Publishes the sparse value `key`, complete, as an ordinary entry
    /// (replacing what `key` held), with its TTL and flags or the
    /// overrides.
    ///
    /// # Errors
    /// [`FinalizeError::Sparse`] (missing or incomplete: nothing
    /// changed), [`FinalizeError::Store`] (as [`Engine::commit`]).
    pub fn sparse_finalize(
        &mut self,
        key: &[u8],
        ttl: Option<Option<Duration>>,
        flags: Option<u32>,
        now: Instant,
        ticket: u64,
    ) -> Result<Done, FinalizeError> {
        let f = self.sparse.finalize(key, ttl, flags)?;
        Ok(self.commit(key, f.staged, f.ttl, f.flags, now, Placement::BOTH, ticket)?)
    }

    /// Drops the sparse value `key`; whether it was open.
    pub fn sparse_remove(&mut self, key: &[u8]) -> bool {
        self.sparse.remove(key)
    }

    /// Sparse values open.
    #[cfg(test)]
    pub fn sparse_open(&self) -> usize {
        self.sparse.len()
    }

    /// Sets the gauges from the current state (after each message).
    pub fn publish(&self) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.m.mem_size.set(g(self.arc.resident_bytes()));
        self.m.mem_capacity.set(g(self.arc.capacity()));
        self.m.mem_entries.set(g(self.mem_entries));
        self.m.mem_chunks.set(g(
            self.chunks.values().filter(|c| c.mem.is_some()).count() as u64
        ));
        if let Some(d) = &self.disk {
            self.m.disk_size.set(g(d.arc.resident_bytes()));
            self.m.disk_capacity.set(g(d.arc.capacity()));
            self.m.disk_entries.set(g(d.entries));
            self.m.disk_chunks.set(g(d.arc.resident_len() as u64));
        }
    }

    /// The counters, with the gauges filled in.
    pub fn stats(&self) -> Stats {
        let m = &self.m;
        let memory = TierStats {
            hits: m.mem_hits.get(),
            misses: m.mem_misses.get(),
            evictions: m.mem_evictions.get(),
            entries: self.mem_entries,
            size_bytes: self.arc.resident_bytes(),
            capacity_bytes: self.arc.capacity(),
            chunks: self.chunks.values().filter(|c| c.mem.is_some()).count() as u64,
        };
        let disk = self
            .disk
            .as_ref()
            .map_or_else(TierStats::default, |d| TierStats {
                hits: m.disk_hits.get(),
                misses: m.disk_misses.get(),
                evictions: m.disk_evictions.get(),
                entries: d.entries,
                size_bytes: d.arc.resident_bytes(),
                capacity_bytes: d.arc.capacity(),
                chunks: d.arc.resident_len() as u64,
            });
        Stats {
            hits: memory.hits + disk.hits,
            misses: memory.misses + disk.misses,
            partial_hits: m.partial_hits.get(),
            bytes_read: m.bytes_read.get(),
            bytes_written: m.bytes_written.get(),
            evictions: memory.evictions + disk.evictions,
            entry_count: memory.entries + disk.entries,
            size_bytes: memory.size_bytes + disk.size_bytes,
            capacity_bytes: memory.capacity_bytes + disk.capacity_bytes,
            chunk_count: self.chunks.len() as u64,
            gets: m.gets.get(),
            puts: m.puts.get(),
            deletes: m.deletes.get(),
            memory,
            disk,
            chunks_read: m.chunks_read.get(),
            chunks_written: m.chunks_written.get(),
            corrupt: m.corrupt.get(),
            disk_errors: m.disk_errors.get(),
            ..Stats::default()
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// D4: a change with `id` was applied to `key`.
    fn note_applied(&mut self, key: &[u8], id: u64) {
        if let Some(d) = &mut self.disk
            && let Some((_, latest)) = d.pending.get_mut(key)
        {
            *latest = (*latest).max(id);
        }
    }

    /// Whether a change to `key` must also reach the manifest (the key
    /// has an entry there, or a put on its way).
    fn key_on_disk(&self, key: &[u8]) -> bool {
        self.disk
            .as_ref()
            .is_some_and(|d| d.pending.contains_key(key))
            || self.entries.get(key).is_some_and(|e| e.on_disk)
    }

    /// Stores `staged` under `key`, replacing what was there, in the
    /// tiers `place` allows: with a disk tier (and `place.disk`) the value
    /// is queued for it and applied once its chunks and record are
    /// written ([`Done::Later`]); memory-only it is applied at once (a
    /// delete record follows when the key was on disk).
    ///
    /// # Errors
    /// [`CommitError::TooLarge`]: the tier cannot hold the whole value;
    /// [`CommitError::Collision`]: a chunk's hash names different bytes;
    /// [`CommitError::NoTier`]: no tier `place` allows exists.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &mut self,
        key: &[u8],
        staged: Staged,
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
        place: Placement,
        ticket: u64,
    ) -> Result<Done, CommitError> {
        let size = staged.size;
        let to_disk = place.disk && self.disk.is_some();
        let to_mem = place.memory && self.arc.capacity() > 0;
        if !to_disk && !to_mem {
            return Err(CommitError::NoTier);
        }
        if to_disk {
            let capacity = self.disk.as_ref().map_or(0, |d| d.arc.capacity());
            if size > capacity {
                return Err(CommitError::TooLarge { size, capacity });
            }
            let id = self.take_id();
            let (expires, expires_ms) = deadline(ttl, now);
            let put = PendingPut {
                ticket,
                id,
                key: key.to_vec(),
                size,
                flags,
                expires,
                expires_ms,
                memory: to_mem,
                chunks: staged
                    .chunks
                    .into_iter()
                    .map(|(h, d)| (h, Some(d)))
                    .collect(),
                owned: 0,
                failed: None,
                streamed: false,
            };
            if let Some(d) = &mut self.disk {
                d.pending.entry(key.to_vec()).or_insert((0, 0)).0 += 1;
                d.queue.push(Job::Put(put));
            }
            return Ok(Done::Later);
        }
        let needs_del = self.key_on_disk(key);
        let id = self.commit_memory(key, staged, ttl, flags, now)?;
        Ok(self.queue_del(needs_del, id, key, Some(ticket)))
    }

    /// Queues a delete record for `key` when `needed` ([`Done::Later`]).
    fn queue_del(&mut self, needed: bool, id: u64, key: &[u8], ticket: Option<u64>) -> Done {
        match &mut self.disk {
            Some(d) if needed => {
                d.queue.push(Job::Del {
                    ticket,
                    id,
                    key: key.to_vec(),
                });
                Done::Later
            }
            _ => Done::Now,
        }
    }

    /// E5: chunk `h` entered (`gained`) or left memory; its owners'
    /// resident counts follow.
    fn residency(&mut self, h: ChunkHash, gained: bool) {
        let Engine {
            chunks,
            keys,
            entries,
            mem_entries,
            ..
        } = self;
        let Some(c) = chunks.get(&h) else {
            return;
        };
        for &(owner, uses) in &c.owners {
            let Some(e) = keys.get(&owner).and_then(|k| entries.get_mut(k)) else {
                continue;
            };
            if e.id != owner {
                continue;
            }
            let before = e.in_memory();
            if gained {
                e.in_mem += uses;
            } else {
                e.in_mem = e.in_mem.saturating_sub(uses);
            }
            match (before, e.in_memory()) {
                (false, true) => *mem_entries += 1,
                (true, false) => *mem_entries = mem_entries.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// Makes `e` live under `key` (its residency counted now).
    fn insert_entry(&mut self, key: &[u8], mut e: Entry) {
        e.in_mem = e
            .chunks
            .iter()
            .filter(|h| self.chunks.get(h).is_some_and(|c| c.mem.is_some()))
            .count() as u32;
        if e.in_memory() {
            self.mem_entries += 1;
        }
        if e.on_disk
            && let Some(d) = &mut self.disk
        {
            d.entries += 1;
        }
        if let Some(at) = e.expires {
            self.expiry.push(Reverse((at, e.id)));
        }
        self.keys.insert(e.id, key.to_vec());
        self.entries.insert(key.to_vec(), e);
    }

    /// Removes `key`'s entry and gives back its chunk uses.
    fn remove_entry(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.keys.remove(&e.id);
        if e.in_memory() {
            self.mem_entries = self.mem_entries.saturating_sub(1);
        }
        if e.on_disk
            && let Some(d) = &mut self.disk
        {
            d.entries = d.entries.saturating_sub(1);
        }
        self.release(e.id, &e.chunks);
        Some(e)
    }

    /// E3: gives back `id`'s uses of `hashes`; a chunk with no owner left
    /// leaves both tiers (its file is queued for removal).
    fn release(&mut self, id: u64, hashes: &[ChunkHash]) {
        for h in hashes {
            let Some(c) = self.chunks.get_mut(h) else {
                continue;
            };
            if let Some(i) = c.owners.iter().position(|&(o, _)| o == id) {
                c.owners[i].1 -= 1;
                if c.owners[i].1 == 0 {
                    c.owners.swap_remove(i);
                }
            }
            if c.owners.is_empty() {
                let disk = c.disk;
                self.chunks.remove(h);
                self.arc.remove(h);
                if let Some(d) = &mut self.disk {
                    d.arc.remove(h);
                    if let OnDisk::Stored(seq) | OnDisk::Writing(seq) = disk {
                        d.unlinks.push((*h, seq));
                    }
                }
            }
        }
    }

    /// The memory-only commit (E4); the new entry's id.
    fn commit_memory(
        &mut self,
        key: &[u8],
        staged: Staged,
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
    ) -> Result<u64, CommitError> {
        let size = staged.size;
        if size > self.arc.capacity() {
            return Err(CommitError::TooLarge {
                size,
                capacity: self.arc.capacity(),
            });
        }
        let id = self.take_id();
        let mut evicted = Vec::new();
        // (hash, whether the chunk is new to `chunks`).
        let mut added: Vec<(ChunkHash, bool)> = Vec::new();
        let mut hashes = Vec::with_capacity(staged.chunks.len());
        let mut failure = None;
        self.arc.pin();
        for (hash, data) in staged.chunks {
            let len = data.len() as u64;
            let existing = self.chunks.get(&hash).map(|c| (c.len, c.mem.is_some()));
            match existing {
                Some((_, true)) => {
                    if self.chunks.get(&hash).and_then(|c| c.mem.as_deref()) != Some(&data[..]) {
                        failure = Some(CommitError::Collision);
                        break;
                    }
                    self.arc.touch(&hash);
                }
                Some((clen, false)) if clen != len => {
                    failure = Some(CommitError::Collision);
                    break;
                }
                _ => {
                    if self.arc.request(hash, len, &mut evicted) == Outcome::Refused {
                        failure = Some(CommitError::TooLarge {
                            size,
                            capacity: self.arc.capacity(),
                        });
                        break;
                    }
                    match self.chunks.get_mut(&hash) {
                        Some(c) => c.mem = Some(data),
                        None => {
                            self.chunks.insert(
                                hash,
                                Chunk {
                                    len,
                                    mem: Some(data),
                                    disk: OnDisk::No,
                                    owners: Vec::new(),
                                },
                            );
                        }
                    }
                    added.push((hash, existing.is_none()));
                    if existing.is_some() {
                        self.residency(hash, true);
                    }
                }
            }
            hashes.push(hash);
        }
        self.arc.unpin();
        if failure.is_none() {
            // E3 before the evictions: a chunk this value shares with an
            // entry about to be dropped keeps an owner.
            for &h in &hashes {
                if let Some(c) = self.chunks.get_mut(&h) {
                    add_owner(&mut c.owners, id);
                }
            }
        } else {
            for &(h, new) in &added {
                self.arc.remove(&h);
                if new {
                    self.chunks.remove(&h);
                } else {
                    self.residency(h, false);
                    if let Some(c) = self.chunks.get_mut(&h) {
                        c.mem = None;
                    }
                }
            }
        }
        self.drop_evicted_mem(evicted);
        if let Some(e) = failure {
            return Err(e);
        }
        self.remove_entry(key);
        let (expires, _) = deadline(ttl, now);
        self.insert_entry(
            key,
            Entry {
                id,
                size,
                flags,
                chunks: hashes,
                expires,
                on_disk: false,
                in_mem: 0,
            },
        );
        self.m.puts.inc();
        self.m.bytes_written.inc_by(size);
        self.note_applied(key, id);
        Ok(id)
    }

    /// The memory ARC evicted these: a chunk on disk is demoted (its
    /// entries stay, read from disk from now on); one that is not takes
    /// every entry using it along (E2).
    fn drop_evicted_mem(&mut self, evicted: Vec<ChunkHash>) {
        for h in evicted {
            let Some(c) = self.chunks.get_mut(&h) else {
                continue;
            };
            if c.mem.take().is_none() {
                continue;
            }
            self.m.mem_evictions.inc();
            let stored = matches!(c.disk, OnDisk::Stored(_));
            self.residency(h, false);
            if !stored {
                self.drop_users(h, None);
            }
        }
    }

    /// Drops every live entry using chunk `h`; those on disk get a
    /// delete record in `dels` (or queued, without `dels`).
    fn drop_users(&mut self, h: ChunkHash, mut dels: Option<&mut Vec<Record>>) {
        let owners: Vec<u64> = self
            .chunks
            .get(&h)
            .map(|c| c.owners.iter().map(|o| o.0).collect())
            .unwrap_or_default();
        for owner in owners {
            let Some(key) = self.keys.get(&owner).cloned() else {
                continue;
            };
            if let Some(e) = self.remove_entry(&key)
                && e.on_disk
            {
                let rec = Record::Del { id: e.id, key };
                match (&mut dels, &mut self.disk) {
                    (Some(out), _) => out.push(rec),
                    (None, Some(d)) => {
                        if let Record::Del { id, key } = rec {
                            d.queue.push(Job::Del {
                                ticket: None,
                                id,
                                key,
                            });
                        }
                    }
                    (None, None) => {}
                }
            }
        }
    }

    /// The disk ARC evicted these: each file goes, with every entry
    /// using it (D1), their delete records into `dels`.
    fn drop_evicted_disk(&mut self, evicted: Vec<ChunkHash>, dels: &mut Vec<Record>) {
        for h in evicted {
            let Some(c) = self.chunks.get_mut(&h) else {
                continue;
            };
            let (OnDisk::Stored(seq) | OnDisk::Writing(seq)) = c.disk else {
                continue;
            };
            c.disk = OnDisk::No;
            self.m.disk_evictions.inc();
            if let Some(d) = &mut self.disk {
                d.unlinks.push((h, seq));
            }
            self.drop_users(h, Some(dels));
        }
    }

    /// Chunk `h`'s file is damaged or unreadable: it leaves the disk
    /// tier and every entry using it is dropped (a miss from now on).
    fn damaged(&mut self, h: ChunkHash) {
        let Some(c) = self.chunks.get_mut(&h) else {
            return;
        };
        let (OnDisk::Stored(seq) | OnDisk::Writing(seq)) = c.disk else {
            return;
        };
        c.disk = OnDisk::No;
        self.m.corrupt.inc();
        if let Some(d) = &mut self.disk {
            d.arc.remove(&h);
            d.unlinks.push((h, seq));
        }
        self.drop_users(h, None);
    }

    /// The live entry under `key` (an expired one is removed), for
    /// metadata; counts nothing.
    pub fn head(&mut self, key: &[u8], now: Instant) -> Option<&Entry> {
        if self.entries.get(key).is_some_and(|e| e.expired(now)) {
            self.remove_entry(key);
        }
        self.entries.get(key)
    }

    /// Every live key `keep` selects, with its time left to live (the
    /// cluster sync's list; a scan of the whole index).
    pub fn live_keys(
        &self,
        now: Instant,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Vec<(Vec<u8>, Option<Duration>)> {
        self.entries
            .iter()
            .filter(|(k, e)| !e.expired(now) && keep(k))
            .map(|(k, e)| {
                (
                    k.clone(),
                    e.expires.map(|t| t.saturating_duration_since(now)),
                )
            })
            .collect()
    }

    /// A GET of `key`: its entry or `None` (a miss of every tier),
    /// counted; [`begin_read`](Self::begin_read) counts the hit.
    pub fn lookup(&mut self, key: &[u8], now: Instant) -> Option<Entry> {
        self.m.gets.inc();
        let found = self.head(key, now).cloned();
        if found.is_none() {
            self.m.mem_misses.inc();
            if self.disk.is_some() {
                self.m.disk_misses.inc();
            }
        }
        found
    }

    /// The chunk indexes `[offset, offset + len)` of a value covers.
    fn span(offset: u64, len: u64) -> std::ops::RangeInclusive<u64> {
        if len == 0 {
            #[allow(clippy::reversed_empty_ranges)]
            return 1..=0;
        }
        offset / CHUNK as u64..=(offset + len - 1) / CHUNK as u64
    }

    /// A GET hit of `[offset, offset + len)` of `entry`: counted by the
    /// tier that holds its chunks (all in memory: a memory hit; some: a
    /// partial hit, the rest a disk hit; none: a memory miss and a disk
    /// hit), and its chunks marked used in both tiers. A range read
    /// touches only its chunks.
    pub fn begin_read(&mut self, entry: &Entry, offset: u64, len: u64) {
        let (mut total, mut resident) = (0u64, 0u64);
        for i in Self::span(offset, len) {
            let Some(h) = usize::try_from(i).ok().and_then(|i| entry.chunks.get(i)) else {
                continue;
            };
            total += 1;
            if self.arc.touch(h) {
                resident += 1;
            }
            if let Some(d) = &mut self.disk {
                d.arc.touch(h);
            }
        }
        if resident == total {
            self.m.mem_hits.inc();
        } else {
            if resident > 0 {
                self.m.partial_hits.inc();
            } else {
                self.m.mem_misses.inc();
            }
            self.m.disk_hits.inc();
        }
    }

    /// `[offset, offset + len)` of the entry `id` under `key`, from memory
    /// and the chunks in `loaded`; the chunk files it still needs; or
    /// [`Read::Gone`] if that entry is gone or replaced, or the range is
    /// past its end.
    pub fn read(
        &mut self,
        key: &[u8],
        id: u64,
        offset: u64,
        len: u64,
        loaded: &[(ChunkHash, Vec<u8>)],
    ) -> Read {
        let Some(entry) = self.entries.get(key).filter(|e| e.id == id) else {
            return Read::Gone;
        };
        let Some(end) = offset.checked_add(len).filter(|&e| e <= entry.size) else {
            return Read::Gone;
        };
        let bytes_of = |h: &ChunkHash| -> Option<&[u8]> {
            let c = self.chunks.get(h)?;
            c.mem.as_deref().or_else(|| {
                loaded
                    .iter()
                    .find(|(l, _)| l == h)
                    .map(|(_, d)| d.as_slice())
            })
        };
        let mut need = Vec::new();
        for i in Self::span(offset, len) {
            let Some(h) = usize::try_from(i).ok().and_then(|i| entry.chunks.get(i)) else {
                return Read::Gone;
            };
            if bytes_of(h).is_none() {
                match self.chunks.get(h).map(|c| c.disk) {
                    Some(OnDisk::Stored(seq)) => {
                        if !need.contains(&(*h, seq)) {
                            need.push((*h, seq));
                        }
                    }
                    _ => return Read::Gone,
                }
            }
        }
        if !need.is_empty() {
            return Read::Need(need);
        }
        let Ok(cap) = usize::try_from(len) else {
            return Read::Gone;
        };
        let mut out = Vec::with_capacity(cap);
        let mut at = offset;
        while at < end {
            let Some(data) = usize::try_from(at / CHUNK as u64)
                .ok()
                .and_then(|i| entry.chunks.get(i))
                .and_then(bytes_of)
            else {
                return Read::Gone;
            };
            let start = (at % CHUNK as u64) as usize;
            let take = ((end - at) as usize).min(data.len().saturating_sub(start));
            let Some(piece) = data.get(start..start + take).filter(|p| !p.is_empty()) else {
                return Read::Gone;
            };
            out.extend_from_slice(piece);
            at += take as u64;
        }
        self.m.bytes_read.inc_by(len);
        Read::Bytes(out)
    }

    /// A chunk file read back (`Err`: the read failed): its bytes if they
    /// are the chunk's (length and xxh3-128 checked), refilling the memory
    /// tier; `None` if not, and a damaged file leaves the tier with every
    /// entry using it (never served).
    pub fn chunk_loaded(&mut self, file: ChunkFile, got: Result<Vec<u8>, ()>) -> Option<Vec<u8>> {
        let (h, seq) = file;
        let (len, state, in_mem) = match self.chunks.get(&h) {
            Some(c) => (c.len, c.disk, c.mem.is_some()),
            None => return None,
        };
        let good = got
            .ok()
            .filter(|b| b.len() as u64 == len && chunk_hash(b) == h);
        let Some(bytes) = good else {
            if state == OnDisk::Stored(seq) {
                self.damaged(h);
            }
            return None;
        };
        self.m.chunks_read.inc();
        if !in_mem && self.arc.capacity() > 0 {
            let mut evicted = Vec::new();
            if self.arc.request(h, len, &mut evicted) == Outcome::Inserted {
                if let Some(c) = self.chunks.get_mut(&h) {
                    c.mem = Some(bytes.clone());
                }
                self.residency(h, true);
            }
            self.drop_evicted_mem(evicted);
        }
        Some(bytes)
    }

    /// A DELETE: removes `key`, counted; [`Done::Later`] when its delete
    /// record must reach the manifest first.
    pub fn delete(&mut self, key: &[u8], ticket: u64) -> Done {
        self.m.deletes.inc();
        let needed = self.key_on_disk(key);
        self.remove_entry(key);
        let id = self.take_id();
        self.note_applied(key, id);
        self.queue_del(needed, id, key, Some(ticket))
    }

    /// Removes `key` (no record: for tests and expiry).
    #[cfg(test)]
    pub fn remove(&mut self, key: &[u8]) -> bool {
        self.remove_entry(key).is_some()
    }

    /// Removes up to `budget` entries whose TTL ran out by `now` (their
    /// manifest records stay: recovery drops expired entries itself).
    pub fn expire(&mut self, now: Instant, budget: usize) -> usize {
        let mut removed = 0;
        while removed < budget {
            match self.expiry.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((_, id))) = self.expiry.pop() else {
                break;
            };
            let key = self.keys.get(&id).cloned();
            if let Some(key) = key
                && self.entries.get(&key).is_some_and(|e| e.expired(now))
            {
                self.remove_entry(&key);
                removed += 1;
            }
        }
        removed
    }

    /// Chunk files to remove, taken.
    pub fn take_unlinks(&mut self) -> Vec<ChunkFile> {
        self.disk
            .as_mut()
            .map(|d| std::mem::take(&mut d.unlinks))
            .unwrap_or_default()
    }

    /// Starts the next disk batch (D3: one at a time) if none runs and
    /// work waits: every queued put's new chunks get disk space (evicting
    /// others, whose entries' delete records join the batch) and a file
    /// each, returned to be written; chunks already on disk are shared.
    pub fn start_batch(&mut self) -> Option<Vec<ChunkWrite>> {
        let d = self.disk.as_mut()?;
        if d.batch.is_some() || d.queue.is_empty() {
            return None;
        }
        let mut jobs = std::mem::take(&mut d.queue);
        let mut writes = Vec::new();
        let mut slots = Vec::new();
        let mut evicted = Vec::new();
        let Engine { disk, chunks, .. } = self;
        let d = disk.as_mut()?;
        d.arc.pin();
        for (j, job) in jobs.iter_mut().enumerate() {
            let Job::Put(p) = job else {
                continue;
            };
            if p.streamed {
                // Written and owned already (`fill_push`).
                p.owned = p.chunks.len();
                continue;
            }
            for (ci, (h, data)) in p.chunks.iter_mut().enumerate() {
                let len = data.as_ref().map_or(0, |b| b.len() as u64);
                match chunks.get(h).map(|c| c.disk) {
                    Some(OnDisk::Stored(_)) => {
                        d.arc.touch(h);
                    }
                    Some(OnDisk::Writing(_)) => {}
                    _ => {
                        if d.arc.request(*h, len, &mut evicted) == Outcome::Refused {
                            p.failed = Some(CommitError::TooLarge {
                                size: p.size,
                                capacity: d.arc.capacity(),
                            });
                            break;
                        }
                        let seq = d.next_seq;
                        d.next_seq += 1;
                        let c = chunks.entry(*h).or_insert_with(|| Chunk {
                            len,
                            mem: None,
                            disk: OnDisk::No,
                            owners: Vec::new(),
                        });
                        c.disk = OnDisk::Writing(seq);
                        slots.push((j, ci));
                        writes.push(ChunkWrite {
                            slot: writes.len(),
                            file: (*h, seq),
                            data: data.take().unwrap_or_default(),
                        });
                    }
                }
                if let Some(c) = chunks.get_mut(h) {
                    add_owner(&mut c.owners, p.id);
                }
                p.owned += 1;
            }
        }
        d.arc.unpin();
        let mut dels = Vec::new();
        self.drop_evicted_disk(evicted, &mut dels);
        let d = self.disk.as_mut()?;
        d.batch = Some(Batch {
            jobs,
            slots,
            writes_left: writes.len(),
            evicted: dels,
            record_len: 0,
        });
        Some(writes)
    }

    /// A chunk file of the batch was written (`ok`) or not; `data` is its
    /// buffer back. `true` once every file of the batch is done.
    pub fn chunk_written(&mut self, slot: usize, ok: bool, data: Vec<u8>) -> bool {
        let Engine {
            disk, chunks, m, ..
        } = self;
        let Some(d) = disk.as_mut() else {
            return false;
        };
        let Some(b) = d.batch.as_mut() else {
            return false;
        };
        let Some(&(j, ci)) = b.slots.get(slot) else {
            return false;
        };
        let Some(Job::Put(p)) = b.jobs.get_mut(j) else {
            return false;
        };
        let Some(chunk) = p.chunks.get_mut(ci) else {
            return false;
        };
        chunk.1 = Some(data);
        let h = chunk.0;
        b.writes_left = b.writes_left.saturating_sub(1);
        if let Some(c) = chunks.get_mut(&h)
            && let OnDisk::Writing(seq) = c.disk
        {
            if ok {
                c.disk = OnDisk::Stored(seq);
                m.chunks_written.inc();
            } else {
                c.disk = OnDisk::No;
                d.arc.remove(&h);
                d.unlinks.push((h, seq));
                m.disk_errors.inc();
                for job in &mut b.jobs {
                    if let Job::Put(p) = job
                        && p.chunks[..p.owned].iter().any(|(x, _)| *x == h)
                    {
                        p.failed.get_or_insert(CommitError::Disk);
                    }
                }
            }
        }
        b.writes_left == 0
    }

    /// The batch's manifest records (its chunk files all written), to
    /// append at the returned offset; `None` if it has none.
    pub fn batch_records(&mut self) -> Option<(u64, Vec<u8>)> {
        let Engine { disk, chunks, .. } = self;
        let d = disk.as_mut()?;
        let b = d.batch.as_mut()?;
        let mut buf = Vec::new();
        for r in &b.evicted {
            r.encode(&mut buf);
        }
        for job in &mut b.jobs {
            match job {
                Job::Put(p) if p.failed.is_none() => {
                    let files = p
                        .chunks
                        .iter()
                        .map(|(h, _)| match chunks.get(h).map(|c| c.disk) {
                            Some(OnDisk::Stored(seq)) => Some((*h, seq)),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>();
                    if files.is_none() {
                        // A chunk it shares lost its file meanwhile.
                        p.failed = Some(CommitError::Disk);
                    }
                    if let Some(chunks) = files {
                        Record::Put(PutRecord {
                            id: p.id,
                            key: p.key.clone(),
                            size: p.size,
                            flags: p.flags,
                            expires_ms: p.expires_ms,
                            chunks,
                        })
                        .encode(&mut buf);
                    }
                }
                Job::Put(_) => {}
                Job::Del { id, key, .. } => Record::Del {
                    id: *id,
                    key: key.clone(),
                }
                .encode(&mut buf),
            }
        }
        b.record_len = buf.len() as u64;
        (!buf.is_empty()).then_some((d.log_end, buf))
    }

    /// The batch's records were appended (`ok`) or not (then none of its
    /// puts is stored): applies it, and returns each request's answer by
    /// ticket.
    pub fn batch_done(&mut self, ok: bool) -> Vec<(u64, Result<(), CommitError>)> {
        let Some(d) = self.disk.as_mut() else {
            return Vec::new();
        };
        let Some(b) = d.batch.take() else {
            return Vec::new();
        };
        if ok {
            d.log_end += b.record_len;
        } else {
            self.m.disk_errors.inc();
        }
        let mut answers = Vec::new();
        for job in b.jobs {
            match job {
                Job::Put(mut p) => {
                    if p.streamed
                        && let Some(d) = &mut self.disk
                    {
                        for (h, _) in &p.chunks {
                            d.arc.unhold(h);
                        }
                    }
                    let mut superseded = false;
                    if let Some(d) = &mut self.disk
                        && let Some((n, latest)) = d.pending.get_mut(&p.key)
                    {
                        superseded = *latest > p.id;
                        *n -= 1;
                        if *n == 0 {
                            d.pending.remove(&p.key);
                        }
                    }
                    let failed = if ok {
                        p.failed.take()
                    } else {
                        Some(CommitError::Disk)
                    };
                    if let Some(e) = failed {
                        let hashes: Vec<ChunkHash> =
                            p.chunks[..p.owned].iter().map(|c| c.0).collect();
                        self.release(p.id, &hashes);
                        answers.push((p.ticket, Err(e)));
                    } else if superseded {
                        let hashes: Vec<ChunkHash> = p.chunks.iter().map(|c| c.0).collect();
                        self.release(p.id, &hashes);
                        answers.push((p.ticket, Ok(())));
                    } else {
                        answers.push((p.ticket, Ok(())));
                        self.apply_put(p);
                    }
                }
                Job::Del { ticket, .. } => {
                    if let Some(t) = ticket {
                        answers.push((t, Ok(())));
                    }
                }
            }
        }
        answers
    }

    /// A put whose chunks and record are on disk becomes the entry (D1),
    /// its chunks also in memory unless it asked otherwise.
    fn apply_put(&mut self, p: PendingPut) {
        self.remove_entry(&p.key);
        let hashes: Vec<ChunkHash> = p.chunks.iter().map(|c| c.0).collect();
        if p.memory {
            let mut evicted = Vec::new();
            for (h, data) in p.chunks {
                let Some(data) = data else {
                    continue;
                };
                let Some(c) = self.chunks.get(&h).filter(|c| c.mem.is_none()) else {
                    continue;
                };
                let len = c.len;
                if self.arc.request(h, len, &mut evicted) == Outcome::Inserted {
                    if let Some(c) = self.chunks.get_mut(&h) {
                        c.mem = Some(data);
                    }
                    self.residency(h, true);
                }
            }
            self.drop_evicted_mem(evicted);
        }
        self.insert_entry(
            &p.key,
            Entry {
                id: p.id,
                size: p.size,
                flags: p.flags,
                chunks: hashes,
                expires: p.expires,
                on_disk: true,
                in_mem: 0,
            },
        );
        self.m.puts.inc();
        self.m.bytes_written.inc_by(p.size);
        self.note_applied(&p.key, p.id);
    }

    /// Starts receiving a value chunk by chunk; its fill id.
    pub fn fill_start(&mut self) -> u64 {
        let id = self.take_id();
        let disk = self.disk.is_some();
        self.fills.insert(
            id,
            Fill {
                chunks: Vec::new(),
                size: 0,
                disk,
                failed: None,
                aborted: false,
            },
        );
        id
    }

    /// The next chunk of fill `fill` (full-sized, except the last): held
    /// in its tier at once, evicting others as needed (never a chunk
    /// held). With a disk tier a new chunk's file is returned to be
    /// written ([`Engine::fill_written`] when it is); a chunk stored
    /// already is shared. A chunk that cannot be placed fails the fill
    /// (answered at [`Engine::fill_finish`]); later ones are dropped.
    pub fn fill_push(&mut self, fill: u64, data: Vec<u8>) -> Option<ChunkWrite> {
        let f = self.fills.get_mut(&fill)?;
        if f.failed.is_some() || f.aborted || data.is_empty() {
            return None;
        }
        let short = |h: &ChunkHash, chunks: &HashMap<ChunkHash, Chunk>| {
            chunks.get(h).is_some_and(|c| c.len < CHUNK as u64)
        };
        if data.len() > CHUNK || f.chunks.last().is_some_and(|h| short(h, &self.chunks)) {
            f.failed = Some(CommitError::BadChunk);
            return None;
        }
        let h = chunk_hash(&data);
        let len = data.len() as u64;
        let size = f.size + len;
        let on_disk = f.disk;
        let mut evicted = Vec::new();
        let mut write = None;
        let placed: Result<(), CommitError> = if on_disk {
            let Engine { disk, chunks, .. } = self;
            let d = disk.as_mut()?;
            match chunks.get(&h).map(|c| (c.len, c.disk)) {
                Some((l, _)) if l != len => Err(CommitError::Collision),
                Some((_, OnDisk::Stored(_) | OnDisk::Writing(_))) => {
                    d.arc.hold(h, len, &mut evicted);
                    Ok(())
                }
                _ if d.arc.hold(h, len, &mut evicted) == Outcome::Refused => {
                    Err(CommitError::TooLarge {
                        size,
                        capacity: d.arc.capacity(),
                    })
                }
                _ => {
                    let seq = d.next_seq;
                    d.next_seq += 1;
                    let c = chunks.entry(h).or_insert_with(|| Chunk {
                        len,
                        mem: None,
                        disk: OnDisk::No,
                        owners: Vec::new(),
                    });
                    c.disk = OnDisk::Writing(seq);
                    write = Some(ChunkWrite {
                        slot: 0,
                        file: (h, seq),
                        data,
                    });
                    Ok(())
                }
            }
        } else {
            match self
                .chunks
                .get(&h)
                .map(|c| (c.len, c.mem.as_deref() == Some(&data[..])))
            {
                Some((l, same)) if l != len || !same => Err(CommitError::Collision),
                Some(_) => {
                    self.arc.hold(h, len, &mut evicted);
                    Ok(())
                }
                None if self.arc.hold(h, len, &mut evicted) == Outcome::Refused => {
                    Err(CommitError::TooLarge {
                        size,
                        capacity: self.arc.capacity(),
                    })
                }
                None => {
                    self.chunks.insert(
                        h,
                        Chunk {
                            len,
                            mem: Some(data),
                            disk: OnDisk::No,
                            owners: Vec::new(),
                        },
                    );
                    Ok(())
                }
            }
        };
        match placed {
            Ok(()) => {
                if let Some(c) = self.chunks.get_mut(&h) {
                    add_owner(&mut c.owners, fill);
                }
                if let Some(f) = self.fills.get_mut(&fill) {
                    f.chunks.push(h);
                    f.size = size;
                }
            }
            Err(e) => {
                if let Some(f) = self.fills.get_mut(&fill) {
                    f.failed = Some(e);
                }
            }
        }
        if on_disk {
            let mut dels = Vec::new();
            self.drop_evicted_disk(evicted, &mut dels);
            self.queue_dels(dels);
        } else {
            self.drop_evicted_mem(evicted);
        }
        write
    }

    /// Delete records to queue (outside a batch).
    fn queue_dels(&mut self, dels: Vec<Record>) {
        if let Some(d) = &mut self.disk {
            for r in dels {
                if let Record::Del { id, key } = r {
                    d.queue.push(Job::Del {
                        ticket: None,
                        id,
                        key,
                    });
                }
            }
        }
    }

    /// A streamed chunk's file was written (`ok`) or not; `data` is its
    /// buffer back, offered to the memory tier (an ordinary request: it
    /// may be evicted again, being on disk). A failed write fails every
    /// fill using the chunk.
    pub fn fill_written(&mut self, file: ChunkFile, ok: bool, data: Vec<u8>) {
        let (h, seq) = file;
        if let Some(c) = self.chunks.get_mut(&h)
            && c.disk == OnDisk::Writing(seq)
        {
            if ok {
                c.disk = OnDisk::Stored(seq);
                self.m.chunks_written.inc();
                if c.mem.is_none() && self.arc.capacity() > 0 && data.len() as u64 == c.len {
                    let mut evicted = Vec::new();
                    if self.arc.request(h, c.len, &mut evicted) == Outcome::Inserted {
                        c.mem = Some(data);
                        self.residency(h, true);
                    }
                    self.drop_evicted_mem(evicted);
                }
            } else {
                c.disk = OnDisk::No;
                self.m.disk_errors.inc();
                if let Some(d) = &mut self.disk {
                    d.arc.remove(&h);
                    d.unlinks.push(file);
                }
                for f in self.fills.values_mut() {
                    if f.chunks.contains(&h) {
                        f.failed.get_or_insert(CommitError::Disk);
                    }
                }
                self.drop_users(h, None);
            }
        }
        self.reap_fills();
    }

    /// Whether none of fill `fill`'s chunk files is being written.
    pub fn fill_idle(&self, fill: u64) -> bool {
        self.fills.get(&fill).is_none_or(|f| {
            f.chunks
                .iter()
                .all(|h| !matches!(self.chunks.get(h).map(|c| c.disk), Some(OnDisk::Writing(_))))
        })
    }

    /// Drops fill `fill` (the body will not come), once its writes are
    /// done.
    pub fn fill_abort(&mut self, fill: u64) {
        if let Some(f) = self.fills.get_mut(&fill) {
            f.aborted = true;
        }
        self.reap_fills();
    }

    /// Gives back what the aborted fills with no write in flight hold.
    fn reap_fills(&mut self) {
        let done: Vec<u64> = self
            .fills
            .iter()
            .filter(|(id, f)| f.aborted && self.fill_idle(**id))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(f) = self.fills.remove(&id) {
                self.give_back(id, &f);
            }
        }
    }

    /// Unholds and releases a fill's chunks (E3: the ones no one else
    /// uses leave both tiers).
    fn give_back(&mut self, id: u64, f: &Fill) {
        for h in &f.chunks {
            match (&mut self.disk, f.disk) {
                (Some(d), true) => d.arc.unhold(h),
                _ => self.arc.unhold(h),
            }
        }
        self.release(id, &f.chunks);
    }

    /// E3: the uses `from` holds become `to`'s.
    fn rename_owner(&mut self, hashes: &[ChunkHash], from: u64, to: u64) {
        for h in hashes {
            if let Some(c) = self.chunks.get_mut(h) {
                for o in &mut c.owners {
                    if o.0 == from {
                        o.0 = to;
                    }
                }
            }
        }
    }

    /// The whole body of fill `fill` has arrived (and its writes are
    /// done, [`Engine::fill_idle`]): it becomes the entry under `key`,
    /// replacing what was there, as [`Engine::commit`] does: through the
    /// disk tier's next batch (its record) when `place` allows the disk
    /// ([`Done::Later`]), else in memory at once, if all its chunks are
    /// there. Until then no read sees it.
    ///
    /// # Errors
    /// The fill's own failure, [`CommitError::NoTier`], or
    /// [`CommitError::TooLarge`] (memory only, and some chunk was
    /// evicted from memory); the engine is as before but for evictions.
    #[allow(clippy::too_many_arguments)]
    pub fn fill_finish(
        &mut self,
        fill: u64,
        key: &[u8],
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
        place: Placement,
        ticket: u64,
    ) -> Result<Done, CommitError> {
        let Some(f) = self.fills.remove(&fill) else {
            return Err(CommitError::BadChunk);
        };
        let to_disk = place.disk && f.disk;
        let to_mem = place.memory && self.arc.capacity() > 0;
        let failure = if let Some(e) = &f.failed {
            Some(e.clone())
        } else if !to_disk && !to_mem {
            Some(CommitError::NoTier)
        } else if to_disk
            && !f
                .chunks
                .iter()
                .all(|h| matches!(self.chunks.get(h).map(|c| c.disk), Some(OnDisk::Stored(_))))
        {
            Some(CommitError::Disk)
        } else if !to_disk
            && !f
                .chunks
                .iter()
                .all(|h| self.chunks.get(h).is_some_and(|c| c.mem.is_some()))
        {
            Some(CommitError::TooLarge {
                size: f.size,
                capacity: self.arc.capacity(),
            })
        } else {
            None
        };
        if let Some(e) = failure {
            self.give_back(fill, &f);
            return Err(e);
        }
        let id = self.take_id();
        self.rename_owner(&f.chunks, fill, id);
        if !place.memory {
            // Offered to memory as they were written: taken back where
            // no one else uses them.
            for h in &f.chunks {
                let only = self
                    .chunks
                    .get(h)
                    .is_some_and(|c| c.mem.is_some() && c.owners.iter().all(|&(o, _)| o == id));
                if only {
                    self.arc.remove(h);
                    if let Some(c) = self.chunks.get_mut(h) {
                        c.mem = None;
                    }
                }
            }
        }
        let (expires, expires_ms) = deadline(ttl, now);
        if to_disk {
            let put = PendingPut {
                ticket,
                id,
                key: key.to_vec(),
                size: f.size,
                flags,
                expires,
                expires_ms,
                memory: to_mem,
                chunks: f.chunks.iter().map(|h| (*h, None)).collect(),
                owned: f.chunks.len(),
                failed: None,
                streamed: true,
            };
            if let Some(d) = &mut self.disk {
                d.pending.entry(key.to_vec()).or_insert((0, 0)).0 += 1;
                d.queue.push(Job::Put(put));
            }
            return Ok(Done::Later);
        }
        for h in &f.chunks {
            match (&mut self.disk, f.disk) {
                (Some(d), true) => d.arc.unhold(h),
                _ => self.arc.unhold(h),
            }
        }
        let needs_del = self.key_on_disk(key);
        self.remove_entry(key);
        self.insert_entry(
            key,
            Entry {
                id,
                size: f.size,
                flags,
                chunks: f.chunks,
                expires,
                on_disk: false,
                in_mem: 0,
            },
        );
        self.m.puts.inc();
        self.m.bytes_written.inc_by(f.size);
        self.note_applied(key, id);
        Ok(self.queue_del(needs_del, id, key, Some(ticket)))
    }

    #[cfg(test)]
    fn check(&self) {
        assert!(self.arc.resident_bytes() <= self.arc.capacity(), "A1");
        let stored: u64 = self
            .chunks
            .values()
            .filter_map(|c| c.mem.as_ref().map(|m| m.len() as u64))
            .sum();
        assert_eq!(stored, self.arc.resident_bytes(), "E1 bytes");
        for (h, c) in &self.chunks {
            assert_eq!(c.mem.is_some(), self.arc.contains(h), "E1");
            if let Some(m) = &c.mem {
                assert_eq!(m.len() as u64, c.len);
            }
            match &self.disk {
                Some(d) => assert_eq!(c.disk != OnDisk::No, d.arc.contains(h), "D2"),
                None => assert_eq!(c.disk, OnDisk::No),
            }
            assert!(!c.owners.is_empty(), "E3: ownerless chunk");
        }
        if let Some(d) = &self.disk {
            assert!(d.arc.resident_bytes() <= d.arc.capacity(), "A1 disk");
            let on: u64 = self
                .chunks
                .values()
                .filter(|c| c.disk != OnDisk::No)
                .map(|c| c.len)
                .sum();
            assert_eq!(on, d.arc.resident_bytes(), "D2 bytes");
            assert_eq!(
                d.entries,
                self.entries.values().filter(|e| e.on_disk).count() as u64
            );
        }
        let mut mem_entries = 0;
        for (key, e) in &self.entries {
            assert_eq!(self.keys.get(&e.id), Some(key));
            let mut in_mem = 0;
            for h in &e.chunks {
                let c = self.chunks.get(h).expect("E2");
                assert!(
                    c.mem.is_some() || matches!(c.disk, OnDisk::Stored(_)),
                    "E2: a live entry's chunk is readable"
                );
                if e.on_disk {
                    assert!(matches!(c.disk, OnDisk::Stored(_)), "D1");
                }
                assert!(c.owners.iter().any(|&(o, _)| o == e.id), "E3");
                in_mem += u32::from(c.mem.is_some());
            }
            assert_eq!(e.in_mem, in_mem, "E5");
            mem_entries += u64::from(e.in_memory());
        }
        assert_eq!(self.mem_entries, mem_entries, "E5 count");
    }
}

fn add_owner(owners: &mut Vec<(u64, u32)>, id: u64) {
    match owners.iter_mut().find(|(o, _)| *o == id) {
        Some((_, n)) => *n += 1,
        None => owners.push((id, 1)),
    }
}

/// `value` cut into chunks, as a connection cuts a body.
#[cfg(test)]
pub fn stage(value: &[u8]) -> Staged {
    let mut s = Staged::default();
    for c in value.chunks(CHUNK) {
        s.push(c.to_vec()).expect("aligned chunks");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` pseudo-random bytes (no two chunks alike).
    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn bytes_of(r: Read) -> Vec<u8> {
        match r {
            Read::Bytes(b) => b,
            other => panic!("{other:?}"),
        }
    }

    fn get(e: &mut Engine, key: &[u8]) -> Option<Vec<u8>> {
        let entry = e.lookup(key, Instant::now())?;
        e.begin_read(&entry, 0, entry.size);
        match e.read(key, entry.id, 0, entry.size, &[]) {
            Read::Bytes(b) => Some(b),
            _ => None,
        }
    }

    #[test]
    fn stores_reads_and_ranges_across_chunk_boundaries() {
        let mut e = Engine::new(64 << 20);
        let now = Instant::now();
        let v = bytes(2 * CHUNK + 1000, 7);
        e.commit(b"k", stage(&v), None, 5, now, Placement::BOTH, 0)
            .unwrap();
        let entry = e.lookup(b"k", now).unwrap();
        assert_eq!(
            (entry.size, entry.chunk_count(), entry.flags),
            (v.len() as u64, 3, 5)
        );
        assert_eq!(get(&mut e, b"k").unwrap(), v);
        let off = CHUNK as u64 - 10;
        let part = bytes_of(e.read(b"k", entry.id, off, CHUNK as u64 + 20, &[]));
        assert_eq!(part, v[off as usize..off as usize + CHUNK + 20]);
        assert_eq!(
            e.read(b"k", entry.id, v.len() as u64 - 1, 2, &[]),
            Read::Gone,
            "past the end"
        );
        assert_eq!(
            e.read(b"k", entry.id + 1, 0, 1, &[]),
            Read::Gone,
            "another version"
        );
        e.commit(b"empty", stage(b""), None, 0, now, Placement::BOTH, 0)
            .unwrap();
        let empty = e.lookup(b"empty", now).unwrap();
        assert_eq!((empty.size, empty.chunk_count()), (0, 0));
        assert_eq!(bytes_of(e.read(b"empty", empty.id, 0, 0, &[])), b"");
        assert!(e.lookup(b"nope", now).is_none());
        let s = e.stats();
        // A lookup alone counts no hit: `begin_read` does (one GET).
        assert_eq!((s.hits, s.misses, s.entry_count, s.puts), (1, 1, 2, 2));
        e.check();
    }

    #[test]
    fn identical_chunks_are_stored_once() {
        let mut e = Engine::new(64 << 20);
        let now = Instant::now();
        let block = bytes(CHUNK, 1);
        let mut v = block.clone();
        v.extend_from_slice(&block);
        v.extend_from_slice(b"tail");
        e.commit(b"a", stage(&v), None, 0, now, Placement::BOTH, 0)
            .unwrap();
        e.commit(b"b", stage(&v), None, 0, now, Placement::BOTH, 0)
            .unwrap();
        let s = e.stats();
        assert_eq!(s.chunk_count, 2, "block (used 4 times) and tail");
        assert_eq!(s.size_bytes, CHUNK as u64 + 4);
        assert_eq!(e.delete(b"a", 0), Done::Now);
        assert_eq!(get(&mut e, b"b").unwrap(), v);
        assert_eq!(e.stats().chunk_count, 2);
        // Overwrite with the same content keeps the shared chunks.
        e.commit(b"b", stage(&v), None, 0, now, Placement::BOTH, 0)
            .unwrap();
        assert_eq!(get(&mut e, b"b").unwrap(), v);
        e.check();
        assert!(e.remove(b"b"));
        assert!(!e.remove(b"b"));
        assert_eq!((e.stats().chunk_count, e.stats().size_bytes), (0, 0));
        e.check();
    }

    #[test]
    fn eviction_drops_whole_entries_and_stays_in_capacity() {
        let cap = 3 * CHUNK as u64;
        let mut e = Engine::new(cap);
        let now = Instant::now();
        for i in 0..10u8 {
            let v = bytes(CHUNK + 100, i);
            e.commit(&[i], stage(&v), None, 0, now, Placement::BOTH, 0)
                .unwrap();
            e.check();
            assert_eq!(get(&mut e, &[i]).unwrap(), v, "the newest value is whole");
        }
        let s = e.stats();
        assert!(s.size_bytes <= cap);
        assert!(s.evictions > 0);
        assert!(s.entry_count < 10);
        let too_big = bytes(3 * CHUNK + 1, 0);
        assert!(matches!(
            e.commit(b"big", stage(&too_big), None, 0, now, Placement::BOTH, 0),
            Err(CommitError::TooLarge { .. })
        ));
        e.check();
    }

    #[test]
    fn a_value_as_large_as_the_tier_fits_whole() {
        let cap = 3 * CHUNK as u64;
        let mut e = Engine::new(cap);
        let now = Instant::now();
        e.commit(
            b"x",
            stage(&bytes(CHUNK, 9)),
            None,
            0,
            now,
            Placement::BOTH,
            0,
        )
        .unwrap();
        let v = bytes(3 * CHUNK, 3);
        e.commit(b"y", stage(&v), None, 0, now, Placement::BOTH, 0)
            .unwrap();
        assert_eq!(get(&mut e, b"y").unwrap(), v);
        assert!(e.lookup(b"x", now).is_none());
        e.check();
    }

    #[test]
    fn ttl_expires_entries_and_zero_means_none() {
        let mut e = Engine::new(1 << 20);
        let t0 = Instant::now();
        e.commit(
            b"t",
            stage(b"v"),
            Some(Duration::from_secs(5)),
            0,
            t0,
            Placement::BOTH,
            0,
        )
        .unwrap();
        e.commit(b"forever", stage(b"v"), None, 0, t0, Placement::BOTH, 0)
            .unwrap();
        assert!(e.head(b"t", t0 + Duration::from_secs(4)).is_some());
        assert!(
            e.head(b"t", t0 + Duration::from_secs(5)).is_none(),
            "HEAD respects expiry"
        );
        e.commit(
            b"u",
            stage(b"v"),
            Some(Duration::from_secs(1)),
            0,
            t0,
            Placement::BOTH,
            0,
        )
        .unwrap();
        assert_eq!(e.expire(t0 + Duration::from_secs(2), 10), 1);
        assert_eq!(e.stats().entry_count, 1);
        assert!(
            e.head(b"forever", t0 + Duration::from_secs(1 << 30))
                .is_some()
        );
        e.check();
    }

    #[test]
    fn a_finalized_sparse_value_replaces_the_entry() {
        let mut e = Engine::new(16 << 20);
        let now = Instant::now();
        e.commit(b"s", stage(b"old"), None, 0, now, Placement::BOTH, 0)
            .unwrap();
        e.sparse_create(b"s", 6, u64::MAX, Some(Duration::from_secs(5)), 9)
            .unwrap();
        assert!(
            matches!(
                e.sparse_create(b"x", 17 << 20, u64::MAX, None, 0),
                Err(SparseError::TooLarge { .. })
            ),
            "limited to the tier"
        );
        e.sparse_write(b"s", 3, &stage(b"def")).unwrap();
        assert_eq!(
            get(&mut e, b"s").unwrap(),
            b"old",
            "not readable before finalize"
        );
        assert_eq!(
            e.sparse_finalize(b"s", None, None, now, 0),
            Err(FinalizeError::Sparse(SparseError::Incomplete {
                written: 3,
                total: 6
            }))
        );
        let p = e.sparse_write(b"s", 0, &stage(b"abc")).unwrap();
        assert!(p.complete());
        e.sparse_finalize(b"s", None, None, now, 0).unwrap();
        assert_eq!(e.sparse_open(), 0);
        assert_eq!(get(&mut e, b"s").unwrap(), b"abcdef");
        assert_eq!(e.lookup(b"s", now).unwrap().flags, 9);
        assert!(
            e.head(b"s", now + Duration::from_secs(5)).is_none(),
            "its TTL"
        );
        e.check();
    }

    #[test]
    fn staging_rejects_misaligned_chunks() {
        let mut s = Staged::default();
        assert_eq!(
            s.push(vec![0; CHUNK + 1]),
            Err(StageError::TooLong(CHUNK + 1))
        );
        s.push(vec![1; 10]).unwrap();
        assert_eq!(s.push(vec![2; 10]), Err(StageError::AfterShort));
        assert_eq!(s.size(), 10);
    }

    /// A disk in memory: the engine's I/O run at once, files by name.
    #[derive(Default)]
    struct FakeDisk {
        files: HashMap<ChunkFile, Vec<u8>>,
        log: Vec<u8>,
    }

    impl FakeDisk {
        /// Runs every batch the engine has, as the owner's I/O would;
        /// the answers by ticket.
        fn run(&mut self, e: &mut Engine) -> Vec<(u64, Result<(), CommitError>)> {
            let mut out = Vec::new();
            while let Some(writes) = e.start_batch() {
                for w in writes {
                    self.files.insert(w.file, w.data.clone());
                    e.chunk_written(w.slot, true, w.data);
                }
                if let Some((off, buf)) = e.batch_records() {
                    assert_eq!(off as usize, self.log.len(), "appends in order");
                    self.log.extend_from_slice(&buf);
                }
                out.extend(e.batch_done(true));
                for f in e.take_unlinks() {
                    self.files.remove(&f);
                }
            }
            out
        }

        /// A whole GET through the disk: loads what the engine needs.
        fn get(&mut self, e: &mut Engine, key: &[u8]) -> Option<Vec<u8>> {
            let entry = e.lookup(key, Instant::now())?;
            e.begin_read(&entry, 0, entry.size);
            let mut loaded = Vec::new();
            for _ in 0..4 {
                match e.read(key, entry.id, 0, entry.size, &loaded) {
                    Read::Bytes(b) => return Some(b),
                    Read::Gone => return None,
                    Read::Need(files) => {
                        for f in files {
                            let got = self.files.get(&f).cloned().ok_or(());
                            if let Some(b) = e.chunk_loaded(f, got) {
                                loaded.push((f.0, b));
                            }
                        }
                        for f in e.take_unlinks() {
                            self.files.remove(&f);
                        }
                    }
                }
            }
            None
        }
    }

    fn disk_engine(mem: u64, disk: u64) -> Engine {
        let mut e = Engine::new(mem);
        e.attach_disk(disk, Recovered::default(), Instant::now());
        e
    }

    fn put(e: &mut Engine, d: &mut FakeDisk, key: &[u8], v: &[u8], place: Placement) {
        let done = e
            .commit(key, stage(v), None, 0, Instant::now(), place, 7)
            .unwrap();
        assert_eq!(done, Done::Later);
        assert_eq!(d.run(e), vec![(7, Ok(()))]);
        e.check();
    }

    #[test]
    fn disk_tier_writes_through_demotes_and_refills() {
        let c = CHUNK as u64;
        let mut e = disk_engine(2 * c, 8 * c);
        let mut d = FakeDisk::default();
        let vals: Vec<Vec<u8>> = (0..4).map(|i| bytes(CHUNK, i)).collect();
        for (i, v) in vals.iter().enumerate() {
            put(&mut e, &mut d, &[i as u8], v, Placement::BOTH);
        }
        let s = e.stats();
        assert_eq!((s.disk.entries, s.disk.chunks), (4, 4), "all on disk");
        assert_eq!(s.memory.size_bytes, 2 * c, "memory holds the newest two");
        assert_eq!(s.memory.evictions, 2, "the oldest two demoted");
        assert_eq!(d.files.len(), 4);
        // The oldest is read back from disk: a memory miss, a disk hit,
        // and memory refilled.
        assert_eq!(d.get(&mut e, &[0]).unwrap(), vals[0]);
        let s = e.stats();
        assert_eq!((s.memory.misses, s.disk.hits, s.chunks_read), (1, 1, 1));
        assert_eq!(d.get(&mut e, &[0]).unwrap(), vals[0]);
        assert_eq!(e.stats().memory.hits, 1, "now from memory");
        e.check();
        // A two-chunk value over a one-chunk memory tier: half of it in
        // memory, a partial hit.
        let mut e = disk_engine(c, 8 * c);
        let mut d = FakeDisk::default();
        let two = bytes(2 * CHUNK, 9);
        put(&mut e, &mut d, b"two", &two, Placement::BOTH);
        assert_eq!(e.stats().memory.chunks, 1);
        assert_eq!(d.get(&mut e, b"two").unwrap(), two);
        let s = e.stats();
        assert_eq!((s.partial_hits, s.disk.hits, s.hits), (1, 1, 1));
        e.check();
    }

    /// Streams `v` into a fill: each chunk's file written as it comes
    /// (before the next arrives); the fill id.
    fn stream(e: &mut Engine, d: &mut FakeDisk, v: &[u8]) -> u64 {
        let fill = e.fill_start();
        for piece in v.chunks(CHUNK) {
            if let Some(w) = e.fill_push(fill, piece.to_vec()) {
                d.files.insert(w.file, w.data.clone());
                e.fill_written(w.file, true, w.data);
            }
            e.check();
        }
        assert!(e.fill_idle(fill));
        fill
    }

    #[test]
    fn a_streamed_value_is_placed_chunk_by_chunk_and_seen_only_whole() {
        let c = CHUNK as u64;
        // Disk tier: a value four times memory, its chunks on disk as
        // they arrive, memory keeping the latest; the old value is
        // served until the record is written.
        let mut e = disk_engine(c, 8 * c);
        let mut d = FakeDisk::default();
        let old = bytes(CHUNK + 5, 1);
        put(&mut e, &mut d, b"k", &old, Placement::BOTH);
        let big = bytes(4 * CHUNK + 3, 2);
        let fill = stream(&mut e, &mut d, &big);
        assert_eq!(d.files.len(), 2 + 5, "the chunk files, before the record");
        assert_eq!(d.get(&mut e, b"k").unwrap(), old, "not visible yet");
        let done = e.fill_finish(fill, b"k", None, 0, Instant::now(), Placement::BOTH, 9);
        assert_eq!(done, Ok(Done::Later));
        assert_eq!(d.run(&mut e), vec![(9, Ok(()))]);
        e.check();
        assert_eq!(d.get(&mut e, b"k").unwrap(), big);
        assert_eq!(d.files.len(), 5, "the old value's files removed");
        assert!(e.stats().memory.size_bytes <= c);
        // An abort gives everything back.
        let fill = stream(&mut e, &mut d, &bytes(2 * CHUNK, 3));
        e.fill_abort(fill);
        for f in e.take_unlinks() {
            d.files.remove(&f);
        }
        e.check();
        assert_eq!(d.files.len(), 5);
        assert_eq!(d.get(&mut e, b"k").unwrap(), big);
        // Over the disk tier: refused whole; what it evicted on its way
        // is gone (as a commit's evictions are, E4), never wrong bytes.
        let fill = stream(&mut e, &mut d, &bytes(9 * CHUNK, 4));
        let r = e.fill_finish(fill, b"k", None, 0, Instant::now(), Placement::BOTH, 10);
        assert!(matches!(r, Err(CommitError::TooLarge { .. })), "{r:?}");
        d.run(&mut e);
        for f in e.take_unlinks() {
            d.files.remove(&f);
        }
        e.check();
        let back = d.get(&mut e, b"k");
        assert!(back.is_none() || back.as_ref() == Some(&big));
        assert!(d.files.len() <= 5, "the refused value's files removed");

        // Memory only: held in memory as it comes, stored at once; a
        // value over memory fails; repeated chunks are shared.
        let mut e = Engine::new(3 * c);
        let mut d = FakeDisk::default();
        let v = [bytes(CHUNK, 5), bytes(CHUNK, 5), bytes(7, 6)].concat();
        let fill = stream(&mut e, &mut d, &v);
        assert!(d.files.is_empty());
        assert_eq!(get(&mut e, b"m"), None);
        let r = e.fill_finish(fill, b"m", None, 0, Instant::now(), Placement::BOTH, 0);
        assert_eq!(r, Ok(Done::Now));
        e.check();
        assert_eq!(get(&mut e, b"m").unwrap(), v);
        assert_eq!(
            e.stats().memory.size_bytes,
            c + 7,
            "one copy of the repeated chunk"
        );
        let fill = stream(&mut e, &mut d, &bytes(4 * CHUNK, 7));
        let r = e.fill_finish(fill, b"n", None, 0, Instant::now(), Placement::BOTH, 0);
        assert!(matches!(r, Err(CommitError::TooLarge { .. })), "{r:?}");
        e.check();
        // Its evictions stand (it could not know its size up front, E4);
        // nothing of it stays.
        let back = get(&mut e, b"m");
        assert!(back.is_none() || back.as_ref() == Some(&v));
        assert!(e.stats().memory.size_bytes <= c + 7);
        assert_eq!(get(&mut e, b"n"), None);
    }

    #[test]
    fn disk_eviction_drops_the_oldest_and_removes_their_files() {
        let c = CHUNK as u64;
        let mut e = disk_engine(c, 3 * c);
        let mut d = FakeDisk::default();
        for i in 0..6u8 {
            put(&mut e, &mut d, &[i], &bytes(CHUNK, i), Placement::BOTH);
        }
        let s = e.stats();
        assert!(s.disk.size_bytes <= 3 * c);
        assert_eq!(s.disk.evictions, 3);
        assert_eq!(d.files.len(), 3, "evicted files removed");
        assert!(d.get(&mut e, &[0]).is_none(), "the oldest went");
        assert_eq!(d.get(&mut e, &[5]).unwrap(), bytes(CHUNK, 5));
        // The log holds their deletes: replayed, only the newest three.
        let mut log = crate::disk::header(1);
        log.extend_from_slice(&d.log);
        let live = crate::disk::live_entries(crate::disk::replay(&log), 0);
        let keys: Vec<u8> = live.iter().map(|p| p.key[0]).collect();
        assert_eq!(keys, vec![3, 4, 5]);
        assert!(matches!(
            e.commit(
                b"big",
                stage(&bytes(3 * CHUNK + 1, 1)),
                None,
                0,
                Instant::now(),
                Placement::BOTH,
                1
            ),
            Err(CommitError::TooLarge { .. })
        ));
        e.check();
    }

    #[test]
    fn a_corrupt_chunk_is_a_miss_never_served() {
        let mut e = disk_engine(0, 4 << 20);
        let mut d = FakeDisk::default();
        let v = bytes(1000, 3);
        put(
            &mut e,
            &mut d,
            b"k",
            &v,
            Placement {
                memory: false,
                disk: true,
            },
        );
        assert_eq!(e.stats().memory.size_bytes, 0, "No-Memory: disk only");
        assert_eq!(d.get(&mut e, b"k").unwrap(), v);
        let f = *d.files.keys().next().unwrap();
        d.files.get_mut(&f).unwrap()[10] ^= 1;
        assert_eq!(d.get(&mut e, b"k"), None);
        assert_eq!(e.stats().corrupt, 1);
        assert!(d.files.is_empty(), "the damaged file is removed");
        assert!(
            e.lookup(b"k", Instant::now()).is_none(),
            "a miss from now on"
        );
        d.run(&mut e);
        e.check();
    }

    #[test]
    fn deletes_and_memory_only_puts_reach_the_log_in_order() {
        let mut e = disk_engine(16 << 20, 16 << 20);
        let mut d = FakeDisk::default();
        put(&mut e, &mut d, b"a", b"one", Placement::BOTH);
        // Queued disk put, then a memory-only put of the same key before
        // the batch runs: the later one wins in memory and in the log.
        let now = Instant::now();
        assert_eq!(
            e.commit(b"a", stage(b"two"), None, 0, now, Placement::BOTH, 1),
            Ok(Done::Later)
        );
        let no_disk = Placement {
            memory: true,
            disk: false,
        };
        assert_eq!(
            e.commit(b"a", stage(b"three"), None, 0, now, no_disk, 2),
            Ok(Done::Later),
            "a delete record must follow"
        );
        let answers = d.run(&mut e);
        assert_eq!(answers, vec![(1, Ok(())), (2, Ok(()))]);
        assert_eq!(d.get(&mut e, b"a").unwrap(), b"three");
        e.check();
        let mut log = crate::disk::header(1);
        log.extend_from_slice(&d.log);
        assert!(crate::disk::live_entries(crate::disk::replay(&log), 0).is_empty());
        put(&mut e, &mut d, b"b", b"bee", Placement::BOTH);
        assert_eq!(e.delete(b"b", 3), Done::Later);
        assert_eq!(e.delete(b"zz", 4), Done::Now, "never on disk");
        assert_eq!(d.run(&mut e), vec![(3, Ok(()))]);
        assert!(d.files.is_empty(), "every chunk file released");
        e.check();
    }

    #[test]
    fn a_recovered_index_serves_after_a_restart() {
        let c = CHUNK as u64;
        let mut e = disk_engine(c, 8 * c);
        let mut d = FakeDisk::default();
        let v = bytes(2 * CHUNK + 5, 4);
        put(&mut e, &mut d, b"k", &v, Placement::BOTH);
        let mut log = crate::disk::header(1);
        log.extend_from_slice(&d.log);
        let entries = crate::disk::live_entries(crate::disk::replay(&log), 0);
        let rec = Recovered {
            entries,
            next_id: 100,
            next_seq: 100,
            ..Recovered::default()
        };
        let mut e2 = Engine::new(c);
        e2.attach_disk(8 * c, rec, Instant::now());
        e2.check();
        assert_eq!(e2.stats().disk.entries, 1);
        assert_eq!(d.get(&mut e2, b"k").unwrap(), v);
        e2.check();
    }
}
