//! The engine's unit tests over a simulated disk, and `Engine::check`:
//! the invariants (A1, E1-E5, D1, D2) asserted after each step.

use super::stage::StageError;
use super::*;
use crate::sparse::SparseError;

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

impl Engine {
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
