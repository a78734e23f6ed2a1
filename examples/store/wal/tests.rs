//! WAL tests over real files: round trips through reopens and rolls, a
//! torn tail at every byte and a flipped byte anywhere, truncation, the
//! deferred-I/O interface, and write and sync failures through the fault
//! seam.

use super::fault::FaultyDir;
use super::*;
use crate::table::TableId;
use crate::test_dir::TempDir;
use std::fs;
use std::path::Path;

/// A batch with owned bytes: `(table, key, Some(value))` for a put.
type Batch = Vec<(TableId, Vec<u8>, Option<Vec<u8>>)>;

fn owned(ops: &[Op<'_>]) -> Batch {
    ops.iter()
        .map(|op| match *op {
            Op::Put { table, key, value } => (table, key.to_vec(), Some(value.to_vec())),
            Op::Delete { table, key } => (table, key.to_vec(), None),
        })
        .collect()
}

fn ops(b: &Batch) -> Vec<Op<'_>> {
    b.iter()
        .map(|(table, key, value)| match value {
            Some(value) => Op::Put {
                table: *table,
                key,
                value,
            },
            None => Op::Delete { table: *table, key },
        })
        .collect()
}

/// Batch `i`: one to three ops, some deletes, every 37th a 2 MiB value.
fn batch(i: u64) -> Batch {
    let n = 1 + (i % 3) as usize;
    (0..n)
        .map(|j| {
            let key = format!("k{i}-{j}").into_bytes();
            let value = match (i + j as u64) % 5 {
                0 => None,
                _ if i % 37 == 36 && j == 0 => Some(vec![i as u8; 2 << 20]),
                _ => Some(vec![(i * 7 + j as u64) as u8; (i % 90) as usize]),
            };
            (TableId((i % 4) as u32), key, value)
        })
        .collect()
}

fn cfg(segment_bytes: u64) -> WalConfig {
    WalConfig { segment_bytes }
}

type Replayed = Vec<(Lsn, Batch)>;

fn open(dir: &Path, seg: u64, after: u64) -> Result<(Wal<FsWalDir>, Recovery, Replayed), WalError> {
    let mut got = Replayed::new();
    let d = FsWalDir::create(dir).map_err(|source| WalError::Io {
        op: "create",
        file: dir.to_path_buf(),
        offset: 0,
        source,
    })?;
    let (wal, rec) = Wal::open(d, cfg(seg), Lsn(after), |lsn, ops| {
        got.push((lsn, owned(ops)));
        Ok::<(), WalError>(())
    })?;
    Ok((wal, rec, got))
}

/// Appends batches `from..=to`, syncing every `group`.
fn fill<D: WalDir>(wal: &mut Wal<D>, from: u64, to: u64, group: u64) {
    for i in from..=to {
        assert_eq!(wal.append(&ops(&batch(i))).unwrap(), Lsn(i));
        if i % group == 0 {
            assert_eq!(wal.sync().unwrap(), Lsn(i));
        }
    }
    assert_eq!(wal.sync().unwrap(), Lsn(to));
}

fn expect(from: u64, to: u64) -> Replayed {
    (from..=to).map(|i| (Lsn(i), batch(i))).collect()
}

#[test]
fn batches_round_trip_through_reopens_and_rolls() {
    let dir = TempDir::new();
    let (mut wal, rec, got) = open(&dir.0, 4096, 0).unwrap();
    assert_eq!(
        (rec, got.len(), wal.last_lsn().next()),
        (Recovery::default(), 0, Lsn(1))
    );
    fill(&mut wal, 1, 120, 10);
    let segments = wal.segment_firsts();
    assert!(segments.len() > 5, "{segments:?}");
    drop(wal);
    let (mut wal, rec, got) = open(&dir.0, 4096, 0).unwrap();
    assert_eq!(got, expect(1, 120));
    assert_eq!((rec.records, rec.replayed, rec.truncated), (120, 120, None));
    assert_eq!(wal.segment_firsts(), segments);
    // Appends go on after the last record; replay skips what a
    // checkpoint covers.
    fill(&mut wal, 121, 130, 3);
    drop(wal);
    let (wal, rec, got) = open(&dir.0, 4096, 100).unwrap();
    assert_eq!(got, expect(101, 130));
    assert_eq!((rec.records, rec.replayed), (130, 30));
    assert_eq!(wal.last_lsn().next(), Lsn(131));
}

/// Five records in one segment; returns the file and each record's start.
fn five_records(dir: &Path) -> (std::path::PathBuf, Vec<u64>) {
    let (mut wal, _, _) = open(dir, 1 << 20, 0).unwrap();
    let mut starts = Vec::new();
    for i in 1..=5 {
        starts.push(wal.active().len);
        wal.append(&ops(&batch(i))).unwrap();
    }
    starts.push(wal.active().len);
    wal.sync().unwrap();
    (dir.join(segment_name(Lsn(1))), starts)
}

#[test]
fn a_torn_tail_at_every_byte_is_cut_back_to_the_last_whole_record() {
    let dir = TempDir::new();
    let (file, starts) = five_records(&dir.0);
    let good = fs::read(&file).unwrap();
    let last = starts[4] as usize;
    for cut in last..good.len() {
        fs::write(&file, &good[..cut]).unwrap();
        let (mut wal, rec, got) = open(&dir.0, 1 << 20, 0).unwrap();
        assert_eq!(got, expect(1, 4), "cut at {cut}");
        let torn = (cut > last).then_some((Lsn(1), cut as u64, last as u64));
        assert_eq!(rec.truncated, torn, "cut at {cut}");
        assert_eq!(rec.damage, None, "a torn tail is no damage: cut at {cut}");
        assert_eq!(fs::metadata(&file).unwrap().len(), last as u64);
        // The next record takes the torn one's LSN and place.
        assert_eq!(wal.append(&ops(&batch(5))).unwrap(), Lsn(5));
        wal.sync().unwrap();
        assert_eq!(fs::read(&file).unwrap(), good, "cut at {cut}");
    }
}

#[test]
fn a_flipped_byte_anywhere_cuts_at_the_record_holding_it() {
    let dir = TempDir::new();
    let (file, starts) = five_records(&dir.0);
    let good = fs::read(&file).unwrap();
    for at in 0..good.len() {
        let hit = starts.iter().rposition(|&s| s as usize <= at).unwrap();
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        fs::write(&file, &bad).unwrap();
        let (_, rec, got) = open(&dir.0, 1 << 20, 0).unwrap();
        assert_eq!(got, expect(1, hit as u64), "byte {at}");
        let kept = starts[hit];
        assert_eq!(rec.truncated, Some((Lsn(1), good.len() as u64, kept)));
        // V2: damage when a whole record follows (not in the last one).
        let next = (hit < 4).then_some(Lsn(hit as u64 + 2));
        assert_eq!(rec.damage, next, "byte {at}");
        assert_eq!(fs::metadata(&file).unwrap().len(), kept, "byte {at}");
    }
}

#[test]
fn a_zero_tail_is_cut_and_never_replayed() {
    let dir = TempDir::new();
    let (file, starts) = five_records(&dir.0);
    let mut bytes = fs::read(&file).unwrap();
    bytes.resize(bytes.len() + 8192, 0);
    fs::write(&file, &bytes).unwrap();
    let (_, rec, got) = open(&dir.0, 1 << 20, 0).unwrap();
    assert_eq!(got, expect(1, 5));
    assert_eq!(rec.truncated.map(|t| t.2), Some(starts[5]));
    assert_eq!(rec.damage, None);
}

#[test]
fn damage_in_a_middle_segment_removes_the_later_ones() {
    let dir = TempDir::new();
    let (mut wal, _, _) = open(&dir.0, 2048, 0).unwrap();
    fill(&mut wal, 1, 60, 7);
    let firsts = wal.segment_firsts();
    drop(wal);
    let mid = firsts[firsts.len() / 2];
    let path = dir.0.join(segment_name(mid));
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let (mut wal, rec, got) = open(&dir.0, 2048, 0).unwrap();
    assert_eq!(got, expect(1, mid.0 - 1));
    assert_eq!(rec.truncated.map(|t| (t.0, t.2)), Some((mid, 0)));
    assert!(rec.damage.is_some_and(|l| l > mid), "{:?}", rec.damage);
    let later: Vec<Lsn> = firsts.iter().copied().filter(|&f| f > mid).collect();
    assert_eq!(rec.removed, later);
    for f in &later {
        assert!(!dir.0.join(segment_name(*f)).exists());
    }
    // The WAL goes on from the cut.
    assert_eq!(wal.append(&ops(&batch(mid.0))).unwrap(), mid);
}

#[test]
fn truncation_removes_whole_checkpointed_durable_segments_only() {
    let dir = TempDir::new();
    let (mut wal, _, _) = open(&dir.0, 2048, 0).unwrap();
    for i in 1..=80 {
        wal.append(&ops(&batch(i))).unwrap();
    }
    let firsts = wal.segment_firsts();
    assert!(firsts.len() > 5, "{firsts:?}");
    // Nothing is durable yet: nothing goes, whatever the checkpoint.
    assert_eq!(wal.truncate_before(Lsn(1000)).unwrap(), vec![]);
    wal.sync().unwrap();
    // A checkpoint covering everything below the fourth segment's first
    // record: the three segments before it go.
    let cut = firsts[3];
    assert_eq!(wal.truncate_before(cut).unwrap(), firsts[..3]);
    assert_eq!(wal.segment_firsts(), firsts[3..]);
    for f in &firsts[..3] {
        assert!(!dir.0.join(segment_name(*f)).exists());
    }
    // Everything checkpointed: all but the active segment go.
    let last = *firsts.last().unwrap();
    assert_eq!(
        wal.truncate_before(Lsn(81)).unwrap(),
        firsts[3..firsts.len() - 1]
    );
    assert_eq!(wal.segment_firsts(), vec![last]);
    drop(wal);
    // Reopening for the checkpoint replays the rest; a reopen for an
    // older checkpoint finds its records gone and says so.
    let (_, _, got) = open(&dir.0, 2048, 79).unwrap();
    assert_eq!(got, expect(80, 80));
    match open(&dir.0, 2048, 0) {
        Err(WalError::Gap {
            expected, found, ..
        }) => assert_eq!((expected, found), (Lsn(1), last)),
        other => panic!("{:?}", other.map(|r| r.1)),
    }
}

#[test]
fn lsns_keep_rising_past_the_checkpoint() {
    let dir = TempDir::new();
    // An empty WAL under a checkpoint at LSN 500.
    let (mut wal, _, _) = open(&dir.0, 4096, 500).unwrap();
    assert_eq!(wal.last_lsn().next(), Lsn(501));
    assert_eq!(wal.append(&ops(&batch(501))).unwrap(), Lsn(501));
    wal.sync().unwrap();
    drop(wal);
    // A checkpoint past every record kept (the WAL was not synced up to
    // it): the old segments go and the next record starts a new one.
    let (wal, rec, got) = open(&dir.0, 4096, 900).unwrap();
    assert!(got.is_empty());
    assert_eq!(rec.removed, vec![Lsn(501)]);
    assert_eq!(
        (wal.last_lsn().next(), wal.segment_firsts()),
        (Lsn(901), vec![Lsn(901)])
    );
}

#[test]
fn deferred_io_hands_out_the_writes_and_takes_back_a_failure() {
    let dir = TempDir::new();
    let (mut wal, _, _) = open(&dir.0, 500, 0).unwrap();
    for i in 1..=20 {
        wal.append(&ops(&batch(i))).unwrap();
    }
    let io = wal.take_io().unwrap();
    assert_eq!(io.through, Lsn(20));
    assert!(!io.create.is_empty(), "the batch rolled");
    // W3: one out at a time; appends go on meanwhile.
    wal.append(&ops(&batch(21))).unwrap();
    assert_eq!(wal.take_io(), None);
    // It failed: it comes back whole, first, and appends stop.
    let err = WalError::Batch("simulated");
    assert!(wal.complete(io, Err(err)).is_err());
    assert!(matches!(
        wal.append(&ops(&batch(22))),
        Err(WalError::Failed { .. })
    ));
    let io = wal.take_io().unwrap();
    assert_eq!(io.through, Lsn(21));
    // Performed by hand, as a storage worker would.
    for first in &io.create {
        fs::File::create(dir.0.join(segment_name(*first))).unwrap();
    }
    for w in &io.writes {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(dir.0.join(segment_name(w.segment)))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &w.bytes, w.offset).unwrap();
    }
    assert_eq!(wal.complete(io, Ok(())).unwrap(), Lsn(21));
    assert_eq!(wal.durable_lsn(), Lsn(21));
    assert_eq!(wal.append(&ops(&batch(22))).unwrap(), Lsn(22));
    drop(wal);
    let (_, _, got) = open(&dir.0, 500, 0).unwrap();
    assert_eq!(got, expect(1, 21));
}

/// Appends 1..=10 and syncs; then 11..=15 with the `n`th write or sync
/// failing; checks the failure; then a crash or a retry.
fn fail_then(write: bool, errno: i32, retry: bool) {
    let dir = TempDir::new();
    let (d, faults) = FaultyDir::create(&dir.0);
    let noop = |_: Lsn, _: &[Op<'_>]| Ok::<(), WalError>(());
    let (mut wal, _) = Wal::open(d, cfg(1 << 20), Lsn(0), noop).unwrap();
    fill(&mut wal, 1, 10, 4);
    for i in 11..=15 {
        wal.append(&ops(&batch(i))).unwrap();
    }
    if write {
        faults.fail_write(1, errno);
    } else {
        faults.fail_sync(1, errno);
    }
    let err = wal.sync().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&segment_name(Lsn(1))), "{msg}");
    match &err {
        WalError::Write { source, offset, .. } | WalError::Sync { source, offset, .. } => {
            assert_eq!(source.raw_os_error(), Some(errno));
            assert!(msg.contains(&format!("offset {offset}")), "{msg}");
        }
        e => panic!("{e}"),
    }
    assert_eq!(wal.durable_lsn(), Lsn(10), "nothing new acknowledged");
    assert!(matches!(
        wal.append(&ops(&batch(16))),
        Err(WalError::Failed { .. })
    ));
    if retry {
        assert_eq!(wal.sync().unwrap(), Lsn(15));
        wal.append(&ops(&batch(16))).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let (_, _, got) = open(&dir.0, 1 << 20, 0).unwrap();
    if retry {
        assert_eq!(got, expect(1, 16));
    } else {
        // A crash: everything acknowledged is there; of the rest, a prefix.
        assert!(got.len() >= 10 && got.len() <= 15, "{}", got.len());
        assert_eq!(got, expect(1, got.len() as u64));
    }
}

#[test]
fn a_failed_write_or_sync_loses_nothing_acknowledged_and_retries() {
    for write in [true, false] {
        for errno in [libc::ENOSPC, libc::EIO] {
            for retry in [true, false] {
                fail_then(write, errno, retry);
            }
        }
    }
}

#[test]
fn a_record_of_several_mib_is_one_write_and_round_trips() {
    let dir = TempDir::new();
    let (mut wal, _, _) = open(&dir.0, 1 << 20, 0).unwrap();
    let value: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 251) as u8).collect();
    let big = vec![(TableId(2), b"blob".to_vec(), Some(value))];
    wal.append(&ops(&batch(1))).unwrap();
    wal.append(&ops(&big)).unwrap();
    wal.append(&ops(&batch(3))).unwrap();
    let io = wal.take_io().unwrap();
    assert_eq!(io.writes.len(), 3, "small, big on its own, small");
    assert_eq!(io.create, vec![Lsn(2), Lsn(3)], "a segment for the big one");
    assert!(wal.complete(io, Err(WalError::Batch("skip"))).is_err());
    wal.sync().unwrap();
    drop(wal);
    let (_, _, got) = open(&dir.0, 1 << 20, 0).unwrap();
    assert_eq!(
        got,
        vec![(Lsn(1), batch(1)), (Lsn(2), big), (Lsn(3), batch(3))]
    );
}

#[test]
fn a_failed_directory_sync_after_a_roll_is_retried_with_the_new_segment() {
    let dir = TempDir::new();
    let (d, faults) = FaultyDir::create(&dir.0);
    let noop = |_: Lsn, _: &[Op<'_>]| Ok::<(), WalError>(());
    let (mut wal, _) = Wal::open(d, cfg(600), Lsn(0), noop).unwrap();
    fill(&mut wal, 1, 3, 10);
    for i in 4..=12 {
        wal.append(&ops(&batch(i))).unwrap();
    }
    let io = wal.take_io().unwrap();
    let syncs = io
        .writes
        .iter()
        .map(|w| w.segment)
        .collect::<std::collections::BTreeSet<_>>();
    assert!(!io.create.is_empty() && syncs.len() > 1, "{io:?}");
    assert!(
        wal.complete(io, Err(WalError::Batch("not performed")))
            .is_err()
    );
    // The directory is synced last, after every segment.
    faults.fail_sync(syncs.len() as u32 + 1, libc::EIO);
    let err = wal.sync().unwrap_err();
    assert!(
        matches!(&err, WalError::Sync { file, .. } if *file == dir.0),
        "{err}"
    );
    assert_eq!(wal.durable_lsn(), Lsn(3));
    assert_eq!(wal.sync().unwrap(), Lsn(12));
    drop(wal);
    let (_, _, got) = open(&dir.0, 600, 0).unwrap();
    assert_eq!(got, expect(1, 12));
}
