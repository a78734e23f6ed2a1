//! Shard tests: the checkpoint protocol under crashes and torn manifests,
//! corruption of any data page, and the checks on reopen.

use super::*;
use crate::manifest::{Partitioning, SlotError};
use crate::pagestore::{PageStore, SLOT_LEN};
use crate::test_dir::TempDir;
use std::collections::BTreeMap;

const T0: TableId = TableId(0);
const T1: TableId = TableId(1);

type Model = BTreeMap<(TableId, Vec<u8>), Vec<u8>>;

fn opts(page: u64) -> ShardOptions {
    ShardOptions {
        page_size: PageSize::new(page).unwrap(),
        layout: ShardLayout {
            count: 2,
            index: 1,
            partitioning: Partitioning::Hash,
        },
        wal: crate::wal::WalConfig {
            segment_bytes: 64 << 10,
        },
        cache_bytes: 64 * page as usize,
    }
}

/// Everything in the shard's first three tables.
fn dump<S: PageStore>(s: &Shard<S>) -> Result<Model, StoreError> {
    let mut all = Model::new();
    for t in [T0, T1, TableId(2)] {
        let mut from = Some(Vec::new());
        while let Some(k) = from.take() {
            let batch = s.scan(t, &k, 97)?;
            for (k, v) in batch.entries {
                all.insert((t, k), v);
            }
            from = batch.resume;
        }
    }
    Ok(all)
}

fn value(i: u32) -> Vec<u8> {
    let len = if i % 50 == 0 {
        9000
    } else {
        10 + (i % 90) as usize
    };
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

/// Puts keys `from..to` into both tables (model too).
fn fill<S: PageStore>(s: &mut Shard<S>, model: &mut Model, from: u32, to: u32) {
    for i in from..to {
        let t = if i % 3 == 0 { T1 } else { T0 };
        let k = format!("key-{i:06}").into_bytes();
        s.put(t, &k, &value(i)).unwrap();
        model.insert((t, k), value(i));
    }
}

/// A crash during a checkpoint: its pages are written and synced, and the
/// manifest is either never written or written torn (its first half only,
/// garbage after) into the slot it would take.
fn crash_in_checkpoint(mut s: Shard, torn: bool) {
    let written = s.tree.write_checkpoint(s.manifest.tree.seq + 1).unwrap();
    if torn {
        let next = Manifest {
            tree: written.root,
            ..s.manifest
        };
        let mut bytes = next.encode();
        bytes[SLOT_LEN / 2..].fill(0xA5);
        let slot = (s.slot + 1) % SLOTS;
        s.tree.store_mut().write_slot(slot, &bytes).unwrap();
        s.tree.store_mut().sync().unwrap();
    }
}

#[test]
fn tables_round_trip_through_a_reopen() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let mut s = Shard::open(&file, opts(4096)).unwrap();
    let mut model = Model::new();
    fill(&mut s, &mut model, 0, 3000);
    s.put(T1, b"same", b"one").unwrap();
    s.put(T0, b"same", b"zero").unwrap();
    model.insert((T1, b"same".to_vec()), b"one".to_vec());
    model.insert((T0, b"same".to_vec()), b"zero".to_vec());
    assert!(s.delete(T0, b"key-000001").unwrap());
    assert!(!s.delete(T0, b"key-000001").unwrap());
    model.remove(&(T0, b"key-000001".to_vec()));
    assert_eq!(s.checkpoint().unwrap(), 2);
    drop(s);
    let s = Shard::open(&file, opts(4096)).unwrap();
    assert_eq!(dump(&s).unwrap(), model);
    assert_eq!(s.get(T0, b"same").unwrap().as_deref(), Some(&b"zero"[..]));
    assert!(s.exists(T1, b"same").unwrap());
    assert!(!s.exists(TableId(2), b"same").unwrap());
    // A table's scan stops at its end.
    let last = s.scan(T0, b"same", 10).unwrap();
    assert_eq!(last.entries.len(), 1);
    assert_eq!(last.resume, None);
}

#[test]
fn a_crash_before_the_manifest_reopens_the_last_checkpoint() {
    for torn in [false, true] {
        let dir = TempDir::new();
        let file = dir.file("shard");
        let mut s = Shard::open(&file, opts(4096)).unwrap();
        let mut model = Model::new();
        fill(&mut s, &mut model, 0, 2000);
        s.checkpoint().unwrap();
        fill(&mut s, &mut model, 2000, 2500);
        s.checkpoint().unwrap();
        let durable = model.clone();
        // Changes after the last checkpoint: new keys, overwrites with
        // overflow values, deletes; then the crash.
        fill(&mut s, &mut model, 2500, 4000);
        for i in (0..2000).step_by(3) {
            s.put(T1, format!("key-{i:06}").as_bytes(), &[7; 5000])
                .unwrap();
        }
        for i in (1..2000).step_by(5) {
            s.delete(T0, format!("key-{i:06}").as_bytes()).unwrap();
        }
        crash_in_checkpoint(s, torn);
        let mut s = Shard::open(&file, opts(4096)).unwrap();
        assert_eq!(dump(&s).unwrap(), durable, "torn manifest: {torn}");
        assert_eq!(s.manifest.tree.seq, 3);
        // The reopened shard goes on working and checkpoints again.
        let mut model = durable;
        fill(&mut s, &mut model, 4000, 5000);
        s.checkpoint().unwrap();
        drop(s);
        let s = Shard::open(&file, opts(4096)).unwrap();
        assert_eq!(dump(&s).unwrap(), model);
    }
}

#[test]
fn a_flipped_byte_in_any_data_page_is_an_error_naming_it() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let mut s = Shard::open(&file, opts(4096)).unwrap();
    let mut model = Model::new();
    fill(&mut s, &mut model, 0, 1500);
    s.checkpoint().unwrap();
    for i in (0..1500).step_by(4) {
        s.delete(T0, format!("key-{i:06}").as_bytes()).unwrap();
        model.remove(&(T0, format!("key-{i:06}").into_bytes()));
    }
    s.checkpoint().unwrap();
    let stats = s.stats();
    let pages = stats.page_count;
    drop(s);
    let good = std::fs::read(&file).unwrap();
    let mut caught = 0;
    for page in first_data_page(PageSize::MIN).0..pages {
        let mut bytes = good.clone();
        let at = page as usize * 4096 + (page as usize * 37) % 4096;
        bytes[at] ^= 0x10;
        std::fs::write(&file, &bytes).unwrap();
        let name = format!("page {page}:");
        let read = Shard::open(&file, opts(4096)).and_then(|s| {
            // Every key by get, then every table by scan.
            for ((t, k), v) in &model {
                if s.get(*t, k)?.as_ref() != Some(v) {
                    panic!("page {page} flipped: wrong data served for {k:?}");
                }
            }
            dump(&s)
        });
        match read {
            Ok(all) => assert_eq!(all, model, "page {page} flipped: wrong data served"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(&name), "page {page} flipped: {msg}");
                assert!(msg.contains(&*file.to_string_lossy()), "{msg}");
                caught += 1;
            }
        }
    }
    // Every page in use was caught (the free list's own pages included);
    // free pages (reusable or cooling) are never read.
    let unread = (stats.reusable + stats.cooling) as u64;
    let in_use = pages - first_data_page(PageSize::MIN).0 - unread;
    assert_eq!(caught, in_use, "{caught} of {pages} pages");
}

#[test]
fn losing_the_newest_manifest_falls_back_to_the_older_checkpoint_whole() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let mut s = Shard::open(&file, opts(4096)).unwrap();
    let mut model = Model::new();
    fill(&mut s, &mut model, 0, 2000);
    s.checkpoint().unwrap();
    let older = model.clone();
    let older_slot = s.slot;
    // Checkpoint 3 replaces nearly every page of checkpoint 2; the epoch
    // after it allocates many pages (checkpoint 4's, written before a
    // crash) and must take none of checkpoint 2's.
    for i in 0..2000 {
        s.put(T0, format!("key-{i:06}").as_bytes(), &[1; 40])
            .unwrap();
        s.put(T1, format!("key-{i:06}").as_bytes(), &[1; 40])
            .unwrap();
    }
    s.checkpoint().unwrap();
    let newer_slot = s.slot;
    for i in 0..2000 {
        s.put(T0, format!("key-{i:06}").as_bytes(), &[2; 3000])
            .unwrap();
        s.put(T1, format!("key-{i:06}").as_bytes(), &[2; 40])
            .unwrap();
    }
    crash_in_checkpoint(s, false);
    // Now the newest manifest is lost as well (bit rot in its slot): open
    // falls back to checkpoint 2, and finds it whole.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[newer_slot * SLOT_LEN + 100] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let s = Shard::open(&file, opts(4096)).unwrap();
    assert_eq!((s.slot, s.manifest.tree.seq), (older_slot, 2));
    assert_eq!(dump(&s).unwrap(), older);
}

#[test]
fn reopening_checks_page_size_layout_and_manifests() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let mut s = Shard::open(&file, opts(8192)).unwrap();
    s.put(T0, b"k", b"v").unwrap();
    s.checkpoint().unwrap();
    drop(s);
    let err = Shard::open(&file, opts(4096)).unwrap_err();
    assert!(matches!(
        err,
        StoreError::Manifest(ManifestError::PageSize {
            on_disk: 8192,
            requested: 4096,
            ..
        })
    ));
    let mut other = opts(8192);
    other.layout.count = 3;
    let err = Shard::open(&file, other).unwrap_err();
    assert!(
        matches!(err, StoreError::Manifest(ManifestError::Layout { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("shard 1 of 2"), "{err}");
    // One slot damaged: the other is used.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[SLOT_LEN + 10] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let s = Shard::open(&file, opts(8192)).unwrap();
    assert_eq!(s.get(T0, b"k").unwrap(), None, "the older checkpoint");
    drop(s);
    // Both damaged: an error naming the file and each slot's reason.
    bytes[10] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let err = Shard::open(&file, opts(8192)).unwrap_err();
    match &err {
        StoreError::Manifest(ManifestError::NoValidSlot {
            file: f,
            slot0,
            slot1,
        }) => {
            assert_eq!(f, &file);
            assert_eq!(
                (slot0, slot1),
                (&SlotError::BadChecksum, &SlotError::BadChecksum)
            );
        }
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains(&*file.to_string_lossy()));
}

#[test]
fn keys_over_the_bound_are_refused() {
    let dir = TempDir::new();
    let mut s = Shard::open(&dir.file("shard"), opts(4096)).unwrap();
    let longest = vec![b'x'; MAX_KEY];
    s.put(T0, &longest, b"v").unwrap();
    assert!(s.exists(T0, &longest).unwrap());
    let long = vec![b'x'; MAX_KEY + 1];
    assert!(matches!(
        s.put(T0, &long, b"v"),
        Err(StoreError::KeyTooLong { len, max: 1024 }) if len == MAX_KEY + 1
    ));
}

/// A data file whose manifest writes (`fail`) or page writes
/// (`fail_pages`) fail once asked to.
#[derive(Debug)]
pub(super) struct FailingSlots {
    pub(super) inner: FileStore,
    pub(super) fail: bool,
    pub(super) fail_pages: bool,
}

impl PageStore for FailingSlots {
    fn read_page(&self, id: crate::page::PageId, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_page(id, buf)
    }

    fn write_page(&mut self, id: crate::page::PageId, buf: &[u8]) -> std::io::Result<()> {
        if self.fail_pages {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.write_page(id, buf)
    }

    fn read_slot(&self, slot: usize, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_slot(slot, buf)
    }

    fn write_slot(&mut self, slot: usize, buf: &[u8]) -> std::io::Result<()> {
        if self.fail {
            // The manifest may still reach the disk: write it, then fail.
            self.inner.write_slot(slot, buf)?;
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.write_slot(slot, buf)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync()
    }
}

#[test]
fn a_failed_manifest_write_makes_the_shard_read_only_until_reopened() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let (inner, new) = FileStore::open(&file, PageSize::MIN).unwrap();
    let store = FailingSlots {
        inner,
        fail: false,
        fail_pages: false,
    };
    let wal = FsWalDir::create(&wal_dir(&file)).unwrap();
    let mut s = Shard::open_with(store, new, &file, wal, opts(4096)).unwrap();
    let mut model = Model::new();
    fill(&mut s, &mut model, 0, 500);
    s.checkpoint().unwrap();
    fill(&mut s, &mut model, 500, 1000);
    s.tree.store_mut().fail = true;
    assert!(matches!(s.checkpoint(), Err(StoreError::Manifest(_))));
    // Reads go on; writes and checkpoints are refused.
    assert_eq!(dump(&s).unwrap(), model);
    assert!(matches!(
        s.put(T0, b"k", b"v"),
        Err(StoreError::ReadOnly { .. })
    ));
    assert!(matches!(
        s.delete(T0, b"k"),
        Err(StoreError::ReadOnly { .. })
    ));
    assert!(matches!(s.checkpoint(), Err(StoreError::ReadOnly { .. })));
    drop(s);
    // The failed manifest did reach the disk here, so the reopened shard
    // has everything.
    let s = Shard::open(&file, opts(4096)).unwrap();
    assert_eq!(dump(&s).unwrap(), model);
}

#[test]
fn a_point_read_allocates_only_the_value_it_returns() {
    use crate::shard::alloc_count::allocations;
    let dir = TempDir::new();
    let mut s = Shard::open(&dir.file("shard"), opts(4096)).unwrap();
    let mut model = Model::new();
    fill(&mut s, &mut model, 0, 2000);
    s.checkpoint().unwrap();
    // Warm: the key buffer has its room (a page missing from the cache is
    // read into a frame, which allocates nothing either).
    let keys: Vec<_> = model.keys().cloned().collect();
    for (t, k) in &keys {
        assert!(s.get(*t, k).unwrap().is_some());
    }
    let before = allocations();
    for ((t, k), want) in &model {
        let v = s.get(*t, k).unwrap();
        assert_eq!(v.as_ref(), Some(want));
    }
    let gets = allocations() - before;
    assert_eq!(gets, keys.len() as u64, "one allocation per get: its value");
    let before = allocations();
    for (t, k) in &keys {
        assert!(s.exists(*t, k).unwrap());
        assert!(!s.exists(*t, b"absent").unwrap());
        assert_eq!(s.get(*t, b"absent").unwrap(), None);
    }
    assert_eq!(
        allocations() - before,
        0,
        "exists and misses allocate nothing"
    );
}

#[test]
fn a_file_of_the_previous_format_is_refused_by_name() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let mut s = Shard::open(&file, opts(4096)).unwrap();
    let mut model = Model::new();
    fill(&mut s, &mut model, 0, 100);
    s.checkpoint().unwrap();
    drop(s);
    // Both slots as a version 1 build wrote them (checksummed, valid).
    let mut bytes = std::fs::read(&file).unwrap();
    for slot in 0..SLOTS {
        let b = &mut bytes[slot * SLOT_LEN..(slot + 1) * SLOT_LEN];
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&b[4..]);
        b[..4].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&file, &bytes).unwrap();
    let err = Shard::open(&file, opts(4096)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("format version 1, this build reads version 2"),
        "{msg}"
    );
    assert!(msg.contains(&*file.to_string_lossy()), "{msg}");
    // Refused before anything was written.
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}
