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
    }
}

/// Everything in the shard's first three tables.
fn dump(s: &Shard) -> Result<Model, StoreError> {
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
fn fill(s: &mut Shard, model: &mut Model, from: u32, to: u32) {
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
    // reusable pages are never read.
    let in_use = pages - first_data_page(PageSize::MIN).0 - stats.reusable as u64;
    assert_eq!(caught, in_use, "{caught} of {pages} pages");
}

#[test]
fn falling_back_past_a_lost_manifest_never_serves_rewritten_pages() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let mut s = Shard::open(&file, opts(4096)).unwrap();
    let mut model = Model::new();
    fill(&mut s, &mut model, 0, 2000);
    s.checkpoint().unwrap();
    let older = model.clone();
    let older_slot = s.slot;
    // Checkpoint 3 rewrites most of checkpoint 2's pages; in the epoch
    // after it those pages are reused (written by checkpoint 4's pages).
    for i in 0..2000 {
        s.put(T0, format!("key-{i:06}").as_bytes(), &[1; 40])
            .unwrap();
    }
    s.checkpoint().unwrap();
    let newer_slot = s.slot;
    for i in 0..2000 {
        s.put(T1, format!("key-{i:06}").as_bytes(), &[2; 40])
            .unwrap();
    }
    crash_in_checkpoint(s, false);
    // Now the newest manifest is lost as well (bit rot): open falls back to
    // checkpoint 2, whose free pages were rewritten. Every read is its
    // data or an error, never another checkpoint's data (before the next
    // checkpoint; see the limitation in manifest.rs).
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[newer_slot * SLOT_LEN + 100] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let s = Shard::open(&file, opts(4096)).unwrap();
    assert_eq!(s.slot, older_slot);
    let mut errors = 0;
    for ((t, k), v) in &older {
        match s.get(*t, k) {
            Ok(got) => assert_eq!(got.as_ref(), Some(v)),
            Err(e) => {
                assert!(e.to_string().contains("newer than checkpoint"), "{e}");
                errors += 1;
            }
        }
    }
    assert!(errors > 0, "the reused pages were detected");
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
