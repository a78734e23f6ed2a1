//! Shard tests of the WAL: acknowledged writes survive a crash without a
//! checkpoint, replay past the manifest's LSN, a crash between the
//! manifest and the truncation, batch atomicity across a torn record, and
//! WAL write and sync failures through the fault seam.

use super::*;
use crate::manifest::Partitioning;
use crate::test_dir::TempDir;
use crate::wal::fault::FaultyDir;
use crate::wal::{WalError, segment_name};
use std::collections::BTreeMap;
use std::fs;

const T0: TableId = TableId(0);
const T1: TableId = TableId(1);

type Model = BTreeMap<(TableId, Vec<u8>), Vec<u8>>;

fn opts() -> ShardOptions {
    ShardOptions {
        page_size: PageSize::MIN,
        layout: ShardLayout {
            count: 1,
            index: 0,
            partitioning: Partitioning::Hash,
        },
        wal: WalConfig {
            segment_bytes: 32 << 10,
        },
        cache_bytes: 256 << 10,
    }
}

fn dump<S: PageStore, D: WalDir>(s: &Shard<S, D>) -> Model {
    let mut all = Model::new();
    for t in [T0, T1] {
        let mut from = Some(Vec::new());
        while let Some(k) = from.take() {
            let batch = s.scan(t, &k, 101).unwrap();
            for (k, v) in batch.entries {
                all.insert((t, k), v);
            }
            from = batch.resume;
        }
    }
    all
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

/// Puts keys `from..to` (every 97th value 3 KiB, an overflow chain),
/// deletes every 5th of them again, syncing every 16 writes; the model
/// follows.
fn write<S: PageStore, D: WalDir>(s: &mut Shard<S, D>, model: &mut Model, from: u32, to: u32) {
    for i in from..to {
        let t = if i % 2 == 0 { T0 } else { T1 };
        let len = if i % 97 == 0 {
            3000
        } else {
            20 + (i % 50) as usize
        };
        let v = vec![(i % 251) as u8; len];
        s.put(t, &key(i), &v).unwrap();
        model.insert((t, key(i)), v);
        if i % 5 == 0 {
            assert!(s.delete(t, &key(i)).unwrap());
            model.remove(&(t, key(i)));
        }
        if i % 16 == 0 {
            s.sync_wal().unwrap();
        }
    }
    let last = s.wal.last_lsn();
    assert_eq!(s.sync_wal().unwrap(), last);
}

#[test]
fn acknowledged_writes_survive_a_crash_without_a_checkpoint() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let mut s = Shard::open(&file, opts()).unwrap();
    let mut model = Model::new();
    write(&mut s, &mut model, 0, 2000);
    assert!(s.wal.segment_firsts().len() > 3, "the WAL rolled");
    // Unacknowledged writes after the last sync: lost in the crash.
    s.put(T0, b"unsynced", b"x").unwrap();
    drop(s);
    let mut s = Shard::open(&file, opts()).unwrap();
    assert_eq!(dump(&s), model);
    assert_eq!(s.recovery().replayed, 2000 + 400);
    // The WAL goes on from where it was; a second crash keeps both.
    write(&mut s, &mut model, 2000, 2500);
    drop(s);
    let s = Shard::open(&file, opts()).unwrap();
    assert_eq!(dump(&s), model);
}

#[test]
fn replay_starts_past_the_checkpoint_and_lsns_keep_rising() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let mut s = Shard::open(&file, opts()).unwrap();
    let mut model = Model::new();
    write(&mut s, &mut model, 0, 1500);
    s.checkpoint().unwrap();
    let covered = s.wal.last_lsn();
    assert_eq!(s.manifest.lsn, covered.0);
    assert_eq!(s.wal.segment_firsts().len(), 1, "covered segments removed");
    write(&mut s, &mut model, 1500, 1800);
    drop(s);
    let mut s = Shard::open(&file, opts()).unwrap();
    assert_eq!(dump(&s), model);
    assert_eq!(s.recovery().replayed, 300 + 60);
    // Checkpoint everything: the WAL keeps only its active segment, and
    // LSNs go on past the checkpoint after a reopen.
    s.checkpoint().unwrap();
    let last = s.wal.last_lsn();
    drop(s);
    let mut s = Shard::open(&file, opts()).unwrap();
    assert_eq!(s.recovery().replayed, 0);
    assert!(s.put(T0, b"after", b"reopen").unwrap() > last);
    assert_eq!(dump(&s).len(), model.len() + 1);
}

#[test]
fn a_crash_between_the_manifest_and_the_truncation_replays_nothing_twice() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let mut s = Shard::open(&file, opts()).unwrap();
    let mut model = Model::new();
    write(&mut s, &mut model, 0, 1200);
    // The checkpoint protocol up to the manifest, then the crash: every
    // WAL segment is still there, all of it covered.
    let segments = s.wal.segment_firsts();
    let lsn = s.wal.last_lsn();
    let written = s.tree.write_checkpoint(s.manifest.tree.seq + 1).unwrap();
    let next = Manifest {
        tree: written.root,
        lsn: lsn.0,
        ..s.manifest
    };
    let slot = (s.slot + 1) % SLOTS;
    manifest::store(s.tree.store_mut(), &file, slot, &next).unwrap();
    drop(s);
    for f in &segments {
        assert!(wal_dir(&file).join(segment_name(*f)).exists());
    }
    let mut s = Shard::open(&file, opts()).unwrap();
    assert_eq!(dump(&s), model);
    assert_eq!(s.recovery().replayed, 0);
    assert_eq!(s.recovery().records, lsn.0);
    // New writes get new LSNs and survive the next crash with the rest.
    assert_eq!(s.put(T1, b"new", b"one").unwrap(), lsn.next());
    model.insert((T1, b"new".to_vec()), b"one".to_vec());
    s.sync_wal().unwrap();
    s.checkpoint().unwrap();
    assert_eq!(s.wal.segment_firsts().len(), 1, "truncated at last");
    drop(s);
    let s = Shard::open(&file, opts()).unwrap();
    assert_eq!(dump(&s), model);
}

#[test]
fn a_batch_is_all_or_nothing_across_a_torn_record() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let mut s = Shard::open(&file, opts()).unwrap();
    let mut model = Model::new();
    write(&mut s, &mut model, 0, 100);
    let before = model.clone();
    let big = vec![7u8; 3 << 20];
    let keys: Vec<Vec<u8>> = (0..50).map(|i| format!("batch-{i}").into_bytes()).collect();
    let mut ops: Vec<Op<'_>> = keys
        .iter()
        .map(|k| Op::Put {
            table: T1,
            key: k,
            value: b"in the batch",
        })
        .collect();
    ops.push(Op::Put {
        table: T0,
        key: b"big",
        value: &big,
    });
    ops.push(Op::Delete {
        table: T0,
        key: b"key-000002",
    });
    // A bad op anywhere refuses the whole batch before anything changes.
    let long = vec![b'k'; MAX_KEY + 1];
    let mut bad = ops.clone();
    bad.insert(
        20,
        Op::Delete {
            table: T0,
            key: &long,
        },
    );
    assert!(matches!(
        s.write_batch(&bad),
        Err(StoreError::KeyTooLong { .. })
    ));
    assert_eq!(dump(&s), before);
    let lsn = s.write_batch(&ops).unwrap();
    s.sync_wal().unwrap();
    drop(s);
    for k in &keys {
        model.insert((T1, k.clone()), b"in the batch".to_vec());
    }
    model.insert((T0, b"big".to_vec()), big);
    model.remove(&(T0, b"key-000002".to_vec()));
    // The batch's record is the last one, in a segment of its own (it is
    // larger than a segment): cut it anywhere and none of it is there.
    let seg = wal_dir(&file).join(segment_name(lsn));
    let whole = fs::read(&seg).unwrap();
    let len = whole.len();
    for cut in [0, 1, 15, 16, 17, 600, len / 2, len - 17, len - 1] {
        fs::write(&seg, &whole[..cut]).unwrap();
        let s = Shard::open(&file, opts()).unwrap();
        assert_eq!(dump(&s), before, "cut at {cut} of {len}");
        drop(s);
        // Recovery cut the file; restore the whole record for the next.
        fs::write(&seg, &whole).unwrap();
    }
    let s = Shard::open(&file, opts()).unwrap();
    assert_eq!(dump(&s), model);
}

/// A shard whose WAL directory injects faults.
fn faulty(
    file: &Path,
) -> (
    Shard<FileStore, FaultyDir>,
    std::rc::Rc<crate::wal::fault::Faults>,
) {
    let (store, new) = FileStore::open(file, PageSize::MIN).unwrap();
    let (dir, faults) = FaultyDir::create(&wal_dir(file));
    (
        Shard::open_with(store, new, file, dir, opts()).unwrap(),
        faults,
    )
}

#[test]
fn a_full_or_failing_disk_fails_the_writes_and_loses_nothing_acknowledged() {
    for (write_fault, errno) in [(true, libc::ENOSPC), (false, libc::EIO), (true, libc::EIO)] {
        for retry in [true, false] {
            let dir = TempDir::new();
            let file = dir.file("shard");
            let (mut s, faults) = faulty(&file);
            let mut model = Model::new();
            write(&mut s, &mut model, 0, 300);
            let acked = model.clone();
            for i in 300..320 {
                s.put(T0, &key(i), b"pending").unwrap();
                model.insert((T0, key(i)), b"pending".to_vec());
            }
            if write_fault {
                faults.fail_write(1, errno);
            } else {
                faults.fail_sync(1, errno);
            }
            let err = s.sync_wal().unwrap_err();
            assert!(
                matches!(
                    &err,
                    StoreError::Wal(WalError::Write { source, .. } | WalError::Sync { source, .. })
                        if source.raw_os_error() == Some(errno)
                ),
                "{err}"
            );
            assert!(err.to_string().contains("shard.wal"), "{err}");
            // Writes fail until a retry succeeds; reads go on.
            assert!(matches!(
                s.put(T0, b"refused", b"x"),
                Err(StoreError::Wal(WalError::Failed { .. }))
            ));
            assert_eq!(dump(&s), model);
            if retry {
                s.sync_wal().unwrap();
                write(&mut s, &mut model, 320, 400);
            }
            drop(s);
            let s = Shard::open(&file, opts()).unwrap();
            let got = dump(&s);
            if retry {
                assert_eq!(got, model);
            } else {
                // Everything acknowledged; of the rest, a prefix.
                for (k, v) in &acked {
                    assert_eq!(got.get(k), Some(v), "{k:?} lost");
                }
                let extra = got.len() - acked.len();
                assert!(extra <= 20, "{extra}");
            }
        }
    }
}

#[test]
fn a_batch_failing_in_the_tree_is_never_logged_and_the_shard_turns_read_only() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let (inner, new) = FileStore::open(&file, PageSize::MIN).unwrap();
    let store = super::tests::FailingSlots {
        inner,
        fail: false,
        fail_pages: false,
    };
    let wal = FsWalDir::create(&wal_dir(&file)).unwrap();
    let mut s = Shard::open_with(store, new, &file, wal, opts()).unwrap();
    let mut model = Model::new();
    write(&mut s, &mut model, 0, 200);
    // The batch's second op writes an overflow chain, which fails: the
    // first op is in the tree already.
    s.tree.store_mut().fail_pages = true;
    let big = vec![1u8; 20_000];
    let ops = [
        Op::Put {
            table: T0,
            key: b"first",
            value: b"small",
        },
        Op::Put {
            table: T0,
            key: b"second",
            value: &big,
        },
    ];
    assert!(matches!(s.write_batch(&ops), Err(StoreError::Tree { .. })));
    assert!(matches!(
        s.put(T0, b"k", b"v"),
        Err(StoreError::ReadOnly {
            after: "batch in the tree",
            ..
        })
    ));
    // Nothing of it reached the WAL: a reopen has the acknowledged state.
    assert_eq!(s.sync_wal().unwrap(), s.wal.last_lsn());
    drop(s);
    let s = Shard::open(&file, opts()).unwrap();
    assert_eq!(dump(&s), model);
}

#[test]
fn a_checkpoint_covers_writes_the_wal_never_synced() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let mut s = Shard::open(&file, opts()).unwrap();
    let mut model = Model::new();
    write(&mut s, &mut model, 0, 100);
    // Not synced to the WAL, but in the checkpoint.
    for i in 100..400 {
        s.put(T1, &key(i), b"checkpointed").unwrap();
        model.insert((T1, key(i)), b"checkpointed".to_vec());
    }
    s.checkpoint().unwrap();
    let last = s.wal.last_lsn();
    drop(s);
    let mut s = Shard::open(&file, opts()).unwrap();
    assert_eq!(dump(&s), model);
    assert_eq!(s.recovery().replayed, 0);
    // The WAL restarts past the checkpoint, in a segment of its own.
    assert_eq!(s.wal.segment_firsts(), vec![last.next()]);
    assert_eq!(s.put(T0, b"next", b"1").unwrap(), last.next());
    s.sync_wal().unwrap();
    model.insert((T0, b"next".to_vec()), b"1".to_vec());
    drop(s);
    let s = Shard::open(&file, opts()).unwrap();
    assert_eq!(dump(&s), model);
}

#[test]
fn a_lone_put_whose_overflow_chain_fails_to_write_leaves_the_shard_writable() {
    let dir = TempDir::new();
    let file = dir.file("shard");
    let (inner, new) = FileStore::open(&file, PageSize::MIN).unwrap();
    let store = super::tests::FailingSlots {
        inner,
        fail: false,
        fail_pages: false,
    };
    let wal = FsWalDir::create(&wal_dir(&file)).unwrap();
    let mut s = Shard::open_with(store, new, &file, wal, opts()).unwrap();
    let mut model = Model::new();
    write(&mut s, &mut model, 0, 200);
    // A full disk: the chain's page write fails before the leaf is
    // touched (and the chain is freed), so the tree is as it was.
    s.tree.store_mut().fail_pages = true;
    let big = vec![7u8; 20_000];
    assert!(matches!(
        s.put(T0, b"big", &big),
        Err(StoreError::Tree {
            source: TreeError::Write { .. },
            ..
        })
    ));
    assert_eq!(s.get(T0, b"big").unwrap(), None);
    assert_eq!(dump(&s), model);
    // Space again: writes go on, the big value included.
    s.tree.store_mut().fail_pages = false;
    s.put(T0, b"big", &big).unwrap();
    s.put(T0, b"after", b"v").unwrap();
    model.insert((T0, b"big".to_vec()), big);
    model.insert((T0, b"after".to_vec()), b"v".to_vec());
    s.sync_wal().unwrap();
    s.checkpoint().unwrap();
    assert_eq!(dump(&s), model);
    drop(s);
    let s = Shard::open(&file, opts()).unwrap();
    assert_eq!(dump(&s), model);
}
