//! Log tests on real files in a private temporary directory.

use super::*;
use crate::test_dir::TempDir;
use std::fs::{self, OpenOptions};
use std::path::Path;

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        index_interval: 64,
        retention_bytes: None,
        max_record: 1 << 16,
        write_buffer: 4096,
    }
}

fn open(dir: &Path, cfg: LogConfig) -> (Log<FsDir>, Recovery) {
    Log::open(FsDir::create(dir).expect("dir"), cfg).expect("open")
}

fn payload(i: usize) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat(i % 37)).into_bytes()
}

fn read_all(log: &Log<FsDir>, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut cursor = log.locate(from).expect("locate");
    let mut out = Vec::new();
    while log
        .read(&mut cursor, 1000, |off, p| out.push((off, p.to_vec())))
        .expect("read")
        > 0
    {}
    out
}

/// Appends `n` records, syncs, returns their offsets.
fn fill(log: &mut Log<FsDir>, range: std::ops::Range<usize>) -> Vec<u64> {
    let offs = range
        .map(|i| log.append(&payload(i)).expect("append"))
        .collect();
    log.sync().expect("sync");
    offs
}

#[test]
fn offsets_are_byte_positions_and_read_back() {
    let tmp = TempDir::new();
    let (mut log, rec) = open(&tmp.0, cfg());
    assert_eq!(rec, Recovery::default());
    let offs = fill(&mut log, 0..100);
    let mut expect = 0;
    for (i, off) in offs.iter().enumerate() {
        assert_eq!(*off, expect);
        expect += RECORD_HEADER + payload(i).len() as u64;
    }
    assert_eq!(log.end_offset(), expect);
    let got = read_all(&log, 0);
    assert_eq!(got.len(), 100);
    for (i, (off, p)) in got.iter().enumerate() {
        assert_eq!((*off, p.clone()), (offs[i], payload(i)));
    }
    // From the middle.
    assert_eq!(read_all(&log, offs[57]), got[57..].to_vec());
}

#[test]
fn nothing_is_visible_before_commit() {
    let tmp = TempDir::new();
    let (mut log, _) = open(&tmp.0, cfg());
    let off = log.append(b"a").expect("append");
    assert_eq!((log.committed_offset(), log.durable_offset()), (0, 0));
    assert!(matches!(
        log.locate(log.end_offset()),
        Err(LocateError::PastEnd { .. })
    ));
    let mut cursor = log.locate(0).expect("end of empty log");
    assert_eq!(log.read(&mut cursor, 100, |_, _| {}).expect("read"), 0);
    // publish commits without syncing.
    assert_eq!(log.publish().expect("publish"), log.end_offset());
    assert_eq!(log.durable_offset(), 0);
    let mut got = Vec::new();
    log.read(&mut cursor, 100, |o, p| got.push((o, p.to_vec())))
        .expect("read");
    assert_eq!(got, vec![(off, b"a".to_vec())]);
    assert_eq!(log.sync().expect("sync"), log.durable_offset());
}

#[test]
fn tailing_cursor_picks_up_new_records() {
    let tmp = TempDir::new();
    let (mut log, _) = open(&tmp.0, cfg());
    let mut cursor = log.locate(0).expect("locate");
    let mut seen = Vec::new();
    for round in 0..5 {
        fill(&mut log, round * 10..round * 10 + 10);
        while log
            .read(&mut cursor, 64, |_, p| seen.push(p.to_vec()))
            .expect("read")
            > 0
        {}
        assert_eq!(cursor.offset(), log.committed_offset());
    }
    assert_eq!(seen, (0..50).map(payload).collect::<Vec<_>>());
}

#[test]
fn read_budget_returns_at_least_one_record() {
    let tmp = TempDir::new();
    let (mut log, _) = open(&tmp.0, cfg());
    log.append(&[7; 500]).expect("append");
    log.append(&[8; 500]).expect("append");
    log.sync().expect("sync");
    let mut cursor = log.locate(0).expect("locate");
    let mut out = Vec::new();
    assert_eq!(log.read_frames(&mut cursor, 10, &mut out).expect("read"), 1);
    assert_eq!(&out[..4], &500u32.to_be_bytes());
    assert_eq!(out.len(), 504);
    assert_eq!(
        log.read_frames(&mut cursor, 10_000, &mut out)
            .expect("read"),
        1
    );
}

#[test]
fn locate_accepts_boundaries_and_rejects_the_rest() {
    let tmp = TempDir::new();
    let (mut log, _) = open(&tmp.0, cfg());
    let offs = fill(&mut log, 0..200);
    let end = log.end_offset();
    let mut boundaries: Vec<u64> = offs.clone();
    boundaries.push(end);
    for off in 0..=end {
        let res = log.locate(off);
        if boundaries.binary_search(&off).is_ok() {
            assert_eq!(res.expect("boundary").offset(), off);
        } else {
            assert!(
                matches!(res, Err(LocateError::NotBoundary { offset }) if offset == off),
                "{off}"
            );
        }
    }
    assert!(matches!(
        log.locate(end + 1),
        Err(LocateError::PastEnd { .. })
    ));
    assert!(matches!(
        log.locate(u64::MAX),
        Err(LocateError::PastEnd { .. })
    ));
}

#[test]
fn too_large_is_refused_without_side_effects() {
    let tmp = TempDir::new();
    let (mut log, _) = open(&tmp.0, cfg());
    let big = vec![0; (1 << 16) + 1];
    assert!(matches!(
        log.append(&big),
        Err(AppendError::TooLarge { .. })
    ));
    assert_eq!(log.end_offset(), 0);
    assert_eq!(log.append(&big[..1 << 16]).expect("max is fine"), 0);
}

#[test]
fn reopen_keeps_everything_and_appends_continue() {
    let tmp = TempDir::new();
    let (mut log, _) = open(&tmp.0, cfg());
    let offs = fill(&mut log, 0..300);
    let end = log.end_offset();
    log.close().expect("close");
    let (mut log, rec) = open(&tmp.0, cfg());
    assert_eq!(rec, Recovery::default());
    assert_eq!((log.end_offset(), log.committed_offset()), (end, end));
    let more = fill(&mut log, 300..310);
    assert_eq!(more[0], end);
    let got = read_all(&log, 0);
    assert_eq!(got.len(), 310);
    assert_eq!(got[299].0, offs[299]);
}

/// Writes `n` records, closes, and returns (dir, start of last record, end).
fn log_with_tail(n: usize, cfg: LogConfig) -> (TempDir, u64, u64) {
    let tmp = TempDir::new();
    let (mut log, _) = open(&tmp.0, cfg);
    let offs = fill(&mut log, 0..n);
    let end = log.end_offset();
    log.close().expect("close");
    (tmp, offs[n - 1], end)
}

fn expect_recovered(tmp: &TempDir, cfg: LogConfig, n_kept: usize, end: u64, cut: bool) {
    let (mut log, rec) = open(&tmp.0, cfg);
    assert_eq!(log.end_offset(), end, "{rec:?}");
    assert_eq!(rec.truncated.is_empty(), !cut, "{rec:?}");
    let got = read_all(&log, 0);
    assert_eq!(got.len(), n_kept);
    for (i, (_, p)) in got.iter().enumerate() {
        assert_eq!(p, &payload(i));
    }
    // Appends resume exactly at the cut.
    assert_eq!(log.append(b"after").expect("append"), end);
    log.sync().expect("sync");
    assert_eq!(read_all(&log, end), vec![(end, b"after".to_vec())]);
}

#[test]
fn torn_tail_at_every_byte_is_cut_back_to_the_last_whole_record() {
    let (tmp, last, end) = log_with_tail(40, cfg());
    let seg = tmp.file(&log_name(0));
    let pristine = fs::read(&seg).expect("read");
    for cut in last..end {
        fs::write(&seg, &pristine[..cut as usize]).expect("write");
        // Bytes of the torn record that are all zero (its length's high
        // bytes) cannot be told from preallocated space: kept, not a cut.
        let torn = pristine[last as usize..cut as usize]
            .iter()
            .any(|&b| b != 0);
        expect_recovered(&tmp, cfg(), 39, last, torn);
        // Index entries written for the appended record must not leak into
        // the next round.
        fs::remove_file(tmp.file(&index_name(0))).expect("rm idx");
    }
}

#[test]
fn a_flipped_byte_in_the_last_record_is_cut() {
    let (tmp, last, end) = log_with_tail(40, cfg());
    let seg = tmp.file(&log_name(0));
    let pristine = fs::read(&seg).expect("read");
    for at in last..end {
        let mut bytes = pristine.clone();
        bytes[at as usize] ^= 0x40;
        fs::write(&seg, &bytes).expect("write");
        expect_recovered(&tmp, cfg(), 39, last, true);
        fs::remove_file(tmp.file(&index_name(0))).expect("rm idx");
    }
}

/// Preallocated space (what the server's `fallocate` leaves past the
/// records, and what a crash before the data landed leaves) is kept, not
/// reported as a cut, and appends go over it from the valid end; a sealed
/// segment with such a tail keeps the segments after it.
#[test]
fn a_zero_filled_tail_is_preallocated_space_kept_and_appended_over() {
    let (tmp, _, end) = log_with_tail(10, cfg());
    let seg = tmp.file(&log_name(0));
    let f = OpenOptions::new().write(true).open(&seg).expect("open");
    f.set_len(end + 300_000).expect("extend");
    drop(f);
    expect_recovered(&tmp, cfg(), 10, end, false);
    assert_eq!(fs::metadata(&seg).expect("meta").len(), end + 300_000);
    // The record appended over the zeros is found at the next open.
    let (log, rec) = open(&tmp.0, cfg());
    assert_eq!(rec, Recovery::default());
    let after = RECORD_HEADER + b"after".len() as u64;
    assert_eq!(log.end_offset(), end + after);

    let tmp = TempDir::new();
    let small = LogConfig {
        segment_bytes: 1024,
        ..cfg()
    };
    let (mut log, _) = open(&tmp.0, small);
    fill(&mut log, 0..100);
    let bases = log.segment_bases();
    log.close().expect("close");
    for b in &bases {
        let f = OpenOptions::new()
            .write(true)
            .open(tmp.file(&log_name(*b)))
            .expect("open");
        f.set_len(4096).expect("preallocate");
    }
    let (log, rec) = open(&tmp.0, small);
    assert_eq!(rec, Recovery::default());
    assert_eq!(log.segment_bases(), bases);
    assert_eq!(read_all(&log, 0).len(), 100);
}

/// A zero tail after a torn record (bytes of it were written) is still a
/// torn tail: cut.
#[test]
fn a_torn_record_before_zeros_is_cut() {
    let (tmp, last, end) = log_with_tail(10, cfg());
    let seg = tmp.file(&log_name(0));
    let pristine = fs::read(&seg).expect("read");
    let mut bytes = pristine[..(last + 10) as usize].to_vec();
    bytes.resize(end as usize + 8192, 0);
    fs::write(&seg, &bytes).expect("write");
    expect_recovered(&tmp, cfg(), 9, last, true);
}

#[test]
fn corruption_before_the_tail_is_caught_on_read_not_streamed() {
    let (tmp, _, _) = log_with_tail(100, cfg());
    let seg = tmp.file(&log_name(0));
    let mut bytes = fs::read(&seg).expect("read");
    let (log, _) = open(&tmp.0, cfg());
    let bad = read_all(&log, 0)[10].0;
    drop(log);
    bytes[bad as usize + RECORD_HEADER as usize] ^= 1;
    fs::write(&seg, &bytes).expect("write");
    let (log, _) = open(&tmp.0, cfg());
    let mut cursor = log.locate(0).expect("locate");
    let mut seen = 0;
    let err = loop {
        match log.read(&mut cursor, 100, |_, _| seen += 1) {
            Ok(0) => panic!("corrupt record was not noticed"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(matches!(err, ReadError::Corrupt { offset } if offset == bad));
    assert_eq!(seen, 10);
}

#[test]
fn missing_or_garbage_index_is_rebuilt() {
    let (tmp, _, end) = log_with_tail(200, cfg());
    let idx = tmp.file(&index_name(0));
    let good = fs::read(&idx).expect("idx");
    assert!(good.len() >= 16, "the test needs several index entries");
    let variants: Vec<Option<Vec<u8>>> = vec![
        None,
        Some(vec![0xAB; good.len()]),
        Some(good[..good.len() - 3].to_vec()),
        Some({
            let mut g = good.clone();
            g[good.len() / 2] ^= 1;
            g
        }),
    ];
    for v in variants {
        match v {
            None => fs::remove_file(&idx).expect("rm"),
            Some(bytes) => fs::write(&idx, bytes).expect("write"),
        }
        let (log, rec) = open(&tmp.0, cfg());
        assert_eq!(rec.index_rebuilt, vec![0]);
        assert!(rec.truncated.is_empty());
        assert_eq!(log.end_offset(), end);
        drop(log);
        assert_eq!(fs::read(&idx).expect("idx"), good, "index rewritten");
    }
}

#[test]
fn segments_roll_and_everything_reads_across_them() {
    let tmp = TempDir::new();
    let small = LogConfig {
        segment_bytes: 1024,
        ..cfg()
    };
    let (mut log, _) = open(&tmp.0, small);
    let offs = fill(&mut log, 0..300);
    let bases = log.segment_bases();
    assert!(bases.len() > 5, "{bases:?}");
    for b in &bases {
        assert!(tmp.file(&log_name(*b)).exists());
        assert!(offs.binary_search(b).is_ok(), "segments start at records");
    }
    // Every segment but the last is within the roll size.
    for w in bases.windows(2) {
        assert!(w[1] - w[0] <= 1024);
    }
    // Segment ends are boundaries too.
    for &b in &bases[1..] {
        assert_eq!(log.locate(b).expect("locate").offset(), b);
    }
    assert_eq!(read_all(&log, offs[150]).len(), 150);
    log.close().expect("close");
    let (log, rec) = open(&tmp.0, small);
    assert_eq!(rec, Recovery::default());
    assert_eq!(log.segment_bases(), bases);
    assert_eq!(read_all(&log, 0).len(), 300);
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own() {
    let tmp = TempDir::new();
    let small = LogConfig {
        segment_bytes: 100,
        ..cfg()
    };
    let (mut log, _) = open(&tmp.0, small);
    let a = log.append(&[1; 10]).expect("append");
    let b = log.append(&[2; 500]).expect("append");
    let c = log.append(&[3; 10]).expect("append");
    log.sync().expect("sync");
    assert_eq!(log.segment_bases(), vec![a, b, c]);
    assert_eq!(read_all(&log, 0).len(), 3);
}

#[test]
fn torn_sealed_segment_drops_the_segments_after_it() {
    let tmp = TempDir::new();
    let small = LogConfig {
        segment_bytes: 1024,
        ..cfg()
    };
    let (mut log, _) = open(&tmp.0, small);
    fill(&mut log, 0..100);
    let bases = log.segment_bases();
    log.close().expect("close");
    let victim = bases[2];
    let f = OpenOptions::new()
        .write(true)
        .open(tmp.file(&log_name(victim)))
        .expect("open");
    let len = f.metadata().expect("meta").len();
    f.set_len(len - 5).expect("cut");
    drop(f);
    let (log, rec) = open(&tmp.0, small);
    assert_eq!(rec.truncated.len(), 1);
    assert_eq!(rec.removed, bases[3..].to_vec());
    assert_eq!(log.segment_bases(), bases[..3].to_vec());
    for b in &bases[3..] {
        assert!(!tmp.file(&log_name(*b)).exists());
        assert!(!tmp.file(&index_name(*b)).exists());
    }
    let got = read_all(&log, 0);
    assert_eq!(
        got.last().map(|r| r.1.clone()),
        Some(payload(got.len() - 1))
    );
}

#[test]
fn retention_deletes_oldest_segments_but_keeps_enough() {
    let tmp = TempDir::new();
    let small = LogConfig {
        segment_bytes: 1024,
        retention_bytes: Some(3000),
        ..cfg()
    };
    let (mut log, _) = open(&tmp.0, small);
    let offs = fill(&mut log, 0..500);
    let start = log.start_offset();
    assert!(start > 0);
    assert!(log.size_bytes() >= 3000);
    assert!(log.size_bytes() < 3000 + 1024 + 1024);
    assert!(!tmp.file(&log_name(0)).exists());
    assert!(matches!(
        log.locate(0),
        Err(LocateError::Deleted { offset: 0, start: s }) if s == start
    ));
    // A cursor overtaken by retention gets a typed error.
    let mut cursor = log.locate(start).expect("locate");
    fill(&mut log, 500..1000);
    assert!(matches!(
        log.read(&mut cursor, 100, |_, _| {}),
        Err(ReadError::Deleted { .. })
    ));
    let last = *offs.last().expect("offsets");
    assert!(last < log.end_offset());
}

#[test]
fn stray_files_are_ignored_and_orphan_indexes_removed() {
    let tmp = TempDir::new();
    fs::write(tmp.file("notes.txt"), b"hi").expect("write");
    fs::write(tmp.file(&index_name(12345)), b"junk").expect("write");
    let (log, _) = open(&tmp.0, cfg());
    assert_eq!(log.end_offset(), 0);
    assert!(tmp.file("notes.txt").exists());
    assert!(!tmp.file(&index_name(12345)).exists());
}

#[test]
fn a_crash_without_close_keeps_every_synced_record() {
    // What `kill -9` leaves: synced records, then records written but not
    // synced (page cache survives a process crash) and records still in the
    // write buffer (lost). Only the synced ones were acked under `always`.
    let tmp = TempDir::new();
    let (mut log, _) = open(
        &tmp.0,
        LogConfig {
            segment_bytes: 2048,
            ..cfg()
        },
    );
    let acked = fill(&mut log, 0..100);
    let durable = log.durable_offset();
    for i in 100..110 {
        log.append(&payload(i)).expect("append");
    }
    log.publish().expect("written, not synced");
    for i in 110..115 {
        log.append(&payload(i)).expect("append");
    }
    drop(log);
    let (log, _) = open(
        &tmp.0,
        LogConfig {
            segment_bytes: 2048,
            ..cfg()
        },
    );
    assert!(log.end_offset() >= durable);
    let got = read_all(&log, 0);
    assert!(got.len() >= 100);
    for (i, (off, p)) in got.iter().enumerate().take(100) {
        assert_eq!((*off, p), (acked[i], &payload(i)));
    }
}

#[test]
fn an_interrupted_roll_recovers() {
    // Crash right after a roll: the new segment exists but is empty, and
    // its index file may be missing.
    let tmp = TempDir::new();
    let small = LogConfig {
        segment_bytes: 1024,
        ..cfg()
    };
    let (mut log, _) = open(&tmp.0, small);
    fill(&mut log, 0..40);
    let end = log.end_offset();
    drop(log);
    fs::write(tmp.file(&log_name(end)), b"").expect("empty segment");
    let (mut log, rec) = open(&tmp.0, small);
    assert!(
        rec.truncated.is_empty() && rec.removed.is_empty(),
        "{rec:?}"
    );
    assert_eq!(log.end_offset(), end);
    assert_eq!(log.append(b"next").expect("append"), end);
}

#[test]
fn a_data_directory_is_locked_by_one_broker_at_a_time() {
    let tmp = TempDir::new();
    let dir = FsDir::create(&tmp.0).expect("dir");
    let lock = dir.lock().expect("first lock");
    let err = FsDir::create(&tmp.0)
        .expect("dir")
        .lock()
        .expect_err("second lock must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    assert!(err.to_string().contains("in use"), "{err}");
    drop(lock);
    dir.lock().expect("free again after drop");
}

#[test]
fn sizes_beyond_the_index_format_are_refused() {
    let tmp = TempDir::new();
    let huge = LogConfig {
        segment_bytes: 4 << 30,
        ..cfg()
    };
    let dir = FsDir::create(&tmp.0).expect("dir");
    assert!(matches!(Log::open(dir, huge), Err(LogError::Config(_))));
}

/// Deferred reads: a plan per segment, frames checked and the cursor
/// moved; a record larger than the budget is read again whole; a
/// corrupt record and a deleted cursor are errors.
#[test]
fn planned_reads_give_frames_segment_by_segment() {
    let tmp = TempDir::new();
    let small = LogConfig {
        segment_bytes: 1024,
        ..cfg()
    };
    let (mut log, _) = open(&tmp.0, small);
    let mut payloads: Vec<Vec<u8>> = (0..60).map(payload).collect();
    payloads[30] = vec![7u8; 3000];
    for p in &payloads {
        log.append(p).expect("append");
    }
    log.sync().expect("sync");
    let read_plan = |plan: &ReadPlan| -> Vec<u8> {
        let mut buf = vec![0u8; plan.len];
        let f = fs::File::open(tmp.file(&log_name(plan.base))).expect("segment");
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, plan.pos).expect("read");
        buf
    };
    let mut cursor = log.locate(0).expect("locate");
    let mut frames = Vec::new();
    let mut reads = 0;
    while let Some(mut plan) = log.plan_read(&cursor, 200).expect("plan") {
        let at = cursor.offset();
        loop {
            reads += 1;
            match log.frames_from(&mut cursor, &plan, &read_plan(&plan), &mut frames) {
                Ok(Parsed::Frames(n)) => {
                    assert!(n > 0);
                    break;
                }
                Ok(Parsed::Larger(p)) => {
                    assert_eq!(cursor.offset(), at, "not moved");
                    assert_eq!(p.len, 8 + 3000);
                    plan = p;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    let mut expect = Vec::new();
    for p in &payloads {
        protocol_frame(p, &mut expect);
    }
    assert!(frames == expect, "every record, in order, as frames");
    assert!(
        reads > log.segment_bases().len(),
        "reads stay within segments"
    );

    // A flipped payload byte: corrupt, the cursor stays before it.
    let mut cursor = log.locate(0).expect("locate");
    let plan = log.plan_read(&cursor, 200).expect("plan").expect("some");
    let mut bytes = read_plan(&plan);
    bytes[RECORD_HEADER as usize] ^= 1;
    let got = log.frames_from(&mut cursor, &plan, &bytes, &mut Vec::new());
    assert!(
        matches!(got, Err(ReadError::Corrupt { offset: 0 })),
        "{got:?}"
    );
    assert_eq!(cursor.offset(), 0);
}

fn protocol_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// With deferred I/O, retention only drops the segments from the log: the
/// caller (the server's storage worker) removes the files, so the thread
/// that owns the log never waits for an unlink.
#[test]
fn deferred_retention_leaves_the_unlinks_to_the_caller() {
    let tmp = TempDir::new();
    let small = LogConfig {
        segment_bytes: 1024,
        retention_bytes: Some(3000),
        ..cfg()
    };
    let (mut log, _) = open(&tmp.0, small);
    fill(&mut log, 0..500);
    log.defer_io();
    for i in 500..1000 {
        log.append(&payload(i)).expect("append");
    }
    let (created, writes) = log.take_io().expect("io");
    let dir = FsDir::create(&tmp.0).expect("dir");
    for base in &created {
        let _ = dir.open(&log_name(*base)).expect("create segment");
    }
    for w in writes {
        let name = if w.index {
            index_name(w.base)
        } else {
            log_name(w.base)
        };
        let mut f = dir.open(&name).expect("open");
        f.write_all_at(w.pos, &w.bytes).expect("write");
    }
    let end = log.end_offset();
    log.set_durable(end);
    let before = log.start_offset();
    let deleted = log.enforce_retention().expect("retention");
    assert!(!deleted.is_empty(), "retention had work");
    assert!(log.start_offset() > before);
    for base in deleted {
        assert!(
            tmp.file(&log_name(base)).exists(),
            "the log unlinked {base} itself"
        );
    }
}
