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
//! **Invariants.** E1: a chunk is in `chunks` exactly when ARC holds it
//! resident, so the stored bytes never exceed the tier's capacity (A1).
//! E2: every chunk of every live entry is in `chunks`: when ARC evicts a
//! chunk, every entry that uses it is dropped with it (this slice has no
//! lower tier to refill it from, and an entry is served whole or not at
//! all), so a live entry can always be read. E3: a chunk's `owners` are
//! the live entries using it, with how many times each does; a chunk
//! with none is dropped. E4: a commit pins its chunks in ARC (A4), so
//! storing a value never evicts a chunk of that same value, and a value
//! that does not fit is refused whole, leaving the engine as it was
//! except for evictions already made.

use crate::arc::{Arc, Outcome};
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
}

#[derive(Debug)]
struct Chunk {
    data: Vec<u8>,
    /// E3: (entry id, uses).
    owners: Vec<(u64, u32)>,
}

/// Why a value was not stored.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    #[error("the value ({size} bytes) does not fit the memory tier ({capacity} bytes)")]
    TooLarge { size: u64, capacity: u64 },
    #[error("two different chunks have the same 128-bit hash")]
    Collision,
}

/// What `/stats` reports for one worker (summed over workers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub partial_hits: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Chunks evicted from the memory tier.
    pub evictions: u64,
    pub entry_count: u64,
    pub size_bytes: u64,
    pub capacity_bytes: u64,
    pub chunk_count: u64,
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
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

/// One worker's store.
#[derive(Debug)]
pub struct Engine {
    entries: HashMap<Vec<u8>, Entry>,
    /// Entry id -> key, for E2's drops.
    keys: HashMap<u64, Vec<u8>>,
    chunks: HashMap<ChunkHash, Chunk>,
    arc: Arc<ChunkHash>,
    next_id: u64,
    /// Deadlines of entries with a TTL; stale ones (the entry replaced or
    /// gone) are skipped when they come up.
    expiry: BinaryHeap<Reverse<(Instant, u64)>>,
    stats: Stats,
    /// Sparse values being written (`sparse.rs`), separate from
    /// `entries` until finalized.
    sparse: SparseArea,
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

impl Engine {
    /// An engine whose memory tier holds `capacity` bytes of chunks.
    pub fn new(capacity: u64) -> Self {
        Engine {
            entries: HashMap::new(),
            keys: HashMap::new(),
            chunks: HashMap::new(),
            arc: Arc::new(capacity),
            next_id: 1,
            expiry: BinaryHeap::new(),
            stats: Stats::default(),
            sparse: SparseArea::new(capacity),
        }
    }

    /// Opens a sparse value of `total` bytes under `key` (at most
    /// `limit` bytes; the open ones together at most the memory tier's
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
        let limit = limit.min(self.arc.capacity());
        self.sparse.create(key, total, limit, ttl, flags)
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
    ) -> Result<(), FinalizeError> {
        let f = self.sparse.finalize(key, ttl, flags)?;
        self.commit(key, f.staged, f.ttl, f.flags, now)?;
        Ok(())
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

    /// The counters, with the gauges filled in.
    pub fn stats(&self) -> Stats {
        Stats {
            entry_count: self.entries.len() as u64,
            size_bytes: self.arc.resident_bytes(),
            capacity_bytes: self.arc.capacity(),
            chunk_count: self.chunks.len() as u64,
            ..self.stats
        }
    }

    /// Stores `staged` under `key`, replacing what was there.
    ///
    /// # Errors
    /// [`CommitError::TooLarge`]: ARC cannot hold the whole value;
    /// [`CommitError::Collision`]: a chunk's hash names different bytes.
    pub fn commit(
        &mut self,
        key: &[u8],
        staged: Staged,
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
    ) -> Result<(), CommitError> {
        let size = staged.size;
        if size > self.arc.capacity() {
            return Err(CommitError::TooLarge {
                size,
                capacity: self.arc.capacity(),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut evicted = Vec::new();
        let mut added: Vec<ChunkHash> = Vec::new();
        let mut hashes = Vec::with_capacity(staged.chunks.len());
        let mut failure = None;
        self.arc.pin();
        for (hash, data) in staged.chunks {
            if let Some(c) = self.chunks.get(&hash) {
                if c.data != data {
                    failure = Some(CommitError::Collision);
                    break;
                }
                self.arc.touch(&hash);
            } else {
                let len = data.len() as u64;
                if self.arc.request(hash, len, &mut evicted) == Outcome::Refused {
                    failure = Some(CommitError::TooLarge {
                        size,
                        capacity: self.arc.capacity(),
                    });
                    break;
                }
                self.chunks.insert(
                    hash,
                    Chunk {
                        data,
                        owners: Vec::new(),
                    },
                );
                added.push(hash);
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
            for h in &added {
                self.chunks.remove(h);
                self.arc.remove(h);
            }
        }
        self.drop_evicted(evicted);
        if let Some(e) = failure {
            return Err(e);
        }
        if let Some(old) = self.entries.remove(key) {
            self.keys.remove(&old.id);
            self.release(&old);
        }
        let expires = ttl.and_then(|t| now.checked_add(t));
        if let Some(at) = expires {
            self.expiry.push(Reverse((at, id)));
        }
        self.keys.insert(id, key.to_vec());
        self.entries.insert(
            key.to_vec(),
            Entry {
                id,
                size,
                flags,
                chunks: hashes,
                expires,
            },
        );
        self.stats.puts += 1;
        self.stats.bytes_written += size;
        Ok(())
    }

    /// E2: drops the chunks ARC evicted and every entry using them.
    fn drop_evicted(&mut self, evicted: Vec<ChunkHash>) {
        for h in evicted {
            let Some(chunk) = self.chunks.remove(&h) else {
                continue;
            };
            self.stats.evictions += 1;
            for (owner, _) in chunk.owners {
                if let Some(key) = self.keys.remove(&owner)
                    && let Some(entry) = self.entries.remove(&key)
                {
                    self.release(&entry);
                }
            }
        }
    }

    /// E3: gives back `entry`'s uses of its chunks.
    fn release(&mut self, entry: &Entry) {
        for h in &entry.chunks {
            let Some(c) = self.chunks.get_mut(h) else {
                continue;
            };
            if let Some(i) = c.owners.iter().position(|&(o, _)| o == entry.id) {
                c.owners[i].1 -= 1;
                if c.owners[i].1 == 0 {
                    c.owners.swap_remove(i);
                }
            }
            if c.owners.is_empty() {
                self.chunks.remove(h);
                self.arc.remove(h);
            }
        }
    }

    /// The live entry under `key` (an expired one is removed), for
    /// metadata; counts nothing.
    pub fn head(&mut self, key: &[u8], now: Instant) -> Option<&Entry> {
        if self.entries.get(key).is_some_and(|e| e.expired(now)) {
            self.remove(key);
        }
        self.entries.get(key)
    }

    /// A GET of `key`: its entry (a hit) or `None` (a miss), counted.
    pub fn lookup(&mut self, key: &[u8], now: Instant) -> Option<Entry> {
        self.stats.gets += 1;
        let found = self.head(key, now).cloned();
        match found {
            Some(_) => self.stats.hits += 1,
            None => self.stats.misses += 1,
        }
        found
    }

    /// Marks the chunks of `[offset, offset + len)` of `entry` as used
    /// (ARC hits): a range read touches only its chunks.
    pub fn touch_range(&mut self, entry: &Entry, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset / CHUNK as u64;
        let last = (offset + len - 1) / CHUNK as u64;
        for i in first..=last {
            if let Some(h) = usize::try_from(i).ok().and_then(|i| entry.chunks.get(i)) {
                self.arc.touch(h);
            }
        }
    }

    /// Copies `[offset, offset + len)` of the entry `id` under `key`;
    /// `None` if that entry is gone or replaced, or the range is past its
    /// end.
    pub fn read(&mut self, key: &[u8], id: u64, offset: u64, len: u64) -> Option<Vec<u8>> {
        let entry = self.entries.get(key).filter(|e| e.id == id)?;
        let end = offset.checked_add(len).filter(|&e| e <= entry.size)?;
        let mut out = Vec::with_capacity(usize::try_from(len).ok()?);
        let mut at = offset;
        while at < end {
            let index = usize::try_from(at / CHUNK as u64).ok()?;
            let chunk = self.chunks.get(entry.chunks.get(index)?)?;
            let start = usize::try_from(at % CHUNK as u64).ok()?;
            let take = usize::try_from((end - at).min((chunk.data.len() - start) as u64)).ok()?;
            out.extend_from_slice(chunk.data.get(start..start + take)?);
            at += take as u64;
        }
        self.stats.bytes_read += len;
        Some(out)
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(key) {
            Some(e) => {
                self.keys.remove(&e.id);
                self.release(&e);
                true
            }
            None => false,
        }
    }

    /// A DELETE: removes `key`, counted.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        self.stats.deletes += 1;
        self.remove(key)
    }

    /// Removes up to `budget` entries whose TTL ran out by `now`.
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
                self.remove(&key);
                removed += 1;
            }
        }
        removed
    }

    #[cfg(test)]
    fn check(&self) {
        assert!(self.arc.resident_bytes() <= self.arc.capacity(), "A1");
        let stored: u64 = self.chunks.values().map(|c| c.data.len() as u64).sum();
        assert_eq!(stored, self.arc.resident_bytes(), "E1 bytes");
        for h in self.chunks.keys() {
            assert!(self.arc.contains(h), "E1");
        }
        for (key, e) in &self.entries {
            assert_eq!(self.keys.get(&e.id), Some(key));
            for h in &e.chunks {
                let c = self.chunks.get(h).expect("E2");
                assert!(c.owners.iter().any(|&(o, _)| o == e.id), "E3");
            }
        }
        for c in self.chunks.values() {
            assert!(!c.owners.is_empty(), "E3: ownerless chunk");
        }
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

    fn get(e: &mut Engine, key: &[u8]) -> Option<Vec<u8>> {
        let entry = e.lookup(key, Instant::now())?;
        e.read(key, entry.id, 0, entry.size)
    }

    #[test]
    fn stores_reads_and_ranges_across_chunk_boundaries() {
        let mut e = Engine::new(64 << 20);
        let now = Instant::now();
        let v = bytes(2 * CHUNK + 1000, 7);
        e.commit(b"k", stage(&v), None, 5, now).unwrap();
        let entry = e.lookup(b"k", now).unwrap();
        assert_eq!(
            (entry.size, entry.chunk_count(), entry.flags),
            (v.len() as u64, 3, 5)
        );
        assert_eq!(get(&mut e, b"k").unwrap(), v);
        let off = CHUNK as u64 - 10;
        let part = e.read(b"k", entry.id, off, CHUNK as u64 + 20).unwrap();
        assert_eq!(part, v[off as usize..off as usize + CHUNK + 20]);
        assert_eq!(
            e.read(b"k", entry.id, v.len() as u64 - 1, 2),
            None,
            "past the end"
        );
        assert_eq!(e.read(b"k", entry.id + 1, 0, 1), None, "another version");
        e.commit(b"empty", stage(b""), None, 0, now).unwrap();
        let empty = e.lookup(b"empty", now).unwrap();
        assert_eq!((empty.size, empty.chunk_count()), (0, 0));
        assert_eq!(e.read(b"empty", empty.id, 0, 0).unwrap(), b"");
        assert!(e.lookup(b"nope", now).is_none());
        let s = e.stats();
        assert_eq!((s.hits, s.misses, s.entry_count, s.puts), (3, 1, 2, 2));
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
        e.commit(b"a", stage(&v), None, 0, now).unwrap();
        e.commit(b"b", stage(&v), None, 0, now).unwrap();
        let s = e.stats();
        assert_eq!(s.chunk_count, 2, "block (used 4 times) and tail");
        assert_eq!(s.size_bytes, CHUNK as u64 + 4);
        assert!(e.delete(b"a"));
        assert_eq!(get(&mut e, b"b").unwrap(), v);
        assert_eq!(e.stats().chunk_count, 2);
        // Overwrite with the same content keeps the shared chunks.
        e.commit(b"b", stage(&v), None, 0, now).unwrap();
        assert_eq!(get(&mut e, b"b").unwrap(), v);
        e.check();
        assert!(e.delete(b"b"));
        assert!(!e.delete(b"b"));
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
            e.commit(&[i], stage(&v), None, 0, now).unwrap();
            e.check();
            assert_eq!(get(&mut e, &[i]).unwrap(), v, "the newest value is whole");
        }
        let s = e.stats();
        assert!(s.size_bytes <= cap);
        assert!(s.evictions > 0);
        assert!(s.entry_count < 10);
        let too_big = bytes(3 * CHUNK + 1, 0);
        assert!(matches!(
            e.commit(b"big", stage(&too_big), None, 0, now),
            Err(CommitError::TooLarge { .. })
        ));
        e.check();
    }

    #[test]
    fn a_value_as_large_as_the_tier_fits_whole() {
        let cap = 3 * CHUNK as u64;
        let mut e = Engine::new(cap);
        let now = Instant::now();
        e.commit(b"x", stage(&bytes(CHUNK, 9)), None, 0, now)
            .unwrap();
        let v = bytes(3 * CHUNK, 3);
        e.commit(b"y", stage(&v), None, 0, now).unwrap();
        assert_eq!(get(&mut e, b"y").unwrap(), v);
        assert!(e.lookup(b"x", now).is_none());
        e.check();
    }

    #[test]
    fn ttl_expires_entries_and_zero_means_none() {
        let mut e = Engine::new(1 << 20);
        let t0 = Instant::now();
        e.commit(b"t", stage(b"v"), Some(Duration::from_secs(5)), 0, t0)
            .unwrap();
        e.commit(b"forever", stage(b"v"), None, 0, t0).unwrap();
        assert!(e.head(b"t", t0 + Duration::from_secs(4)).is_some());
        assert!(
            e.head(b"t", t0 + Duration::from_secs(5)).is_none(),
            "HEAD respects expiry"
        );
        e.commit(b"u", stage(b"v"), Some(Duration::from_secs(1)), 0, t0)
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
        e.commit(b"s", stage(b"old"), None, 0, now).unwrap();
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
            e.sparse_finalize(b"s", None, None, now),
            Err(FinalizeError::Sparse(SparseError::Incomplete {
                written: 3,
                total: 6
            }))
        );
        let p = e.sparse_write(b"s", 0, &stage(b"abc")).unwrap();
        assert!(p.complete());
        e.sparse_finalize(b"s", None, None, now).unwrap();
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
}
