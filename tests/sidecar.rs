//! End to end: the real `sidecar` example binary as the daemon (and as
//! client processes, `sidecar load`), spoken to by the Rust client of
//! `examples/sidecar/client.rs` over a real memfd region. Every wait is
//! bounded.

#[path = "../examples/sidecar/client.rs"]
#[allow(dead_code)]
mod client;
mod common;
#[path = "../examples/sidecar/layout.rs"]
#[allow(dead_code)]
mod layout;
#[path = "../examples/sidecar/proto.rs"]
#[allow(dead_code)]
mod proto;
#[path = "../examples/sidecar/records.rs"]
#[allow(dead_code)]
mod records;
#[path = "../examples/sidecar/ring.rs"]
#[allow(dead_code)]
mod ring;
#[path = "../examples/sidecar/shm.rs"]
#[allow(dead_code)]
mod shm;
mod sidecar_harness;
#[path = "../examples/sidecar/wal.rs"]
#[allow(dead_code)]
mod wal;

use layout::{op, status};
use sidecar_harness::{Daemon, root, status_of, unique_name};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn file_operations_round_trip() {
    let (_d, root) = root("ops");
    let daemon = Daemon::start(&unique_name("ops"), &root);
    let mut c = daemon.attach();
    let h = c.open_wait("f.bin", true).unwrap();
    let w = c.write_at(h, 4, b"abcd").unwrap();
    let a = c.append(h, b"XYZ").unwrap();
    assert_eq!(c.wait_accepted(w).unwrap(), 4);
    assert_eq!(
        c.wait_accepted(a).unwrap(),
        8,
        "appended at the accepted end"
    );
    c.wait_completed(w).unwrap();
    assert_eq!(c.wait_completed(a).unwrap(), 8);
    for id in [c.fsync(h).unwrap(), c.fdatasync(h).unwrap()] {
        c.wait_completed(id).unwrap();
    }
    assert_eq!(c.read_wait(h, 0, 100).unwrap(), b"\0\0\0\0abcdXYZ");
    assert_eq!(c.read_wait(h, 5, 2).unwrap(), b"bc");
    assert_eq!(c.read_wait(h, 50, 8).unwrap(), b"", "past the end");
    assert_eq!(
        std::fs::read(root.join("f.bin")).unwrap(),
        b"\0\0\0\0abcdXYZ"
    );
    // A read right behind a write, without waiting, sees it (F2).
    let w = c.write_at(h, 0, b"1234").unwrap();
    let r = c.read(h, 0, 4).unwrap();
    assert_eq!(c.read_result(r).unwrap(), b"1234");
    c.wait_completed(w).unwrap();
    // A second client shares the file, and appends after the first's data.
    let mut c2 = daemon.attach();
    let h2 = c2.open_wait("f.bin", false).unwrap();
    let a2 = c2.append(h2, b"!").unwrap();
    assert_eq!(c2.wait_completed(a2).unwrap(), 11);
    // Missing without create; closed handles are gone.
    assert_eq!(
        status_of(c.open_wait("missing", false)),
        Some(-libc::ENOENT)
    );
    let cl = c.close(h).unwrap();
    c.wait_completed(cl).unwrap();
    assert_eq!(status_of(c.read_wait(h, 0, 1)), Some(status::BAD_HANDLE));
    assert_eq!(c2.read_wait(h2, 8, 4).unwrap(), b"XYZ!");
    // Bigger than one word-multiple, across many slots in a batch.
    let h = c.open_wait("big", true).unwrap();
    let data: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
    let ids: Vec<u64> = data
        .chunks(10_000)
        .map(|ch| c.append(h, ch).unwrap())
        .collect();
    for id in ids {
        c.wait_completed(id).unwrap();
    }
    assert_eq!(c.read_wait(h, 0, 200_000).unwrap(), data);
}

#[test]
fn path_escapes_are_refused_with_an_error_completion() {
    let (d, root) = root("escape");
    std::fs::write(d.0.join("outside"), b"keep").unwrap();
    std::os::unix::fs::symlink("../outside", root.join("out-link")).unwrap();
    std::os::unix::fs::symlink(&d.0, root.join("abs-link")).unwrap();
    std::fs::create_dir(root.join("a")).unwrap();
    let daemon = Daemon::start(&unique_name("esc"), &root);
    let mut c = daemon.attach();
    for p in [
        "../outside",
        "/etc/passwd",
        "out-link",
        "abs-link/outside",
        "a/../../outside",
        ".sidecar-wal/wal-00000001.log",
        "./.sidecar-wal/new",
    ] {
        assert_eq!(status_of(c.open_wait(p, true)), Some(status::ESCAPE), "{p}");
    }
    assert_eq!(status_of(c.open_wait("", true)), Some(status::BAD_PATH));
    let bad = c
        .raw_request(proto::encode(op::OPEN, 0, 77, 0, 0, 0, 2))
        .unwrap();
    c.dismiss(bad); // two zero bytes: NUL in the path
    assert_eq!(std::fs::read(d.0.join("outside")).unwrap(), b"keep");
    // The client is still served.
    let h = c.open_wait("inside", true).unwrap();
    let w = c.append(h, b"ok").unwrap();
    c.wait_completed(w).unwrap();
}

#[test]
fn hostile_client_gets_error_completions_or_is_detached_while_another_works() {
    let (_d, root) = root("hostile");
    let daemon = Daemon::start(&unique_name("host"), &root);
    let mut good = daemon.attach();
    let gh = good.open_wait("good", true).unwrap();
    let mut bad = daemon.attach();
    let bh = bad.open_wait("bad", true).unwrap();
    let data_len = layout::DATA_LEN as u64;
    let cases = [
        (proto::encode(0, 0, 101, bh, 0, 0, 0), status::BAD_OPCODE),
        (proto::encode(999, 0, 102, bh, 0, 0, 0), status::BAD_OPCODE),
        (
            proto::encode(op::WRITE, 0, 103, bh, 0, data_len, 8),
            status::BAD_RANGE,
        ),
        (
            proto::encode(op::WRITE, 0, 104, bh, 0, 0, data_len + 1),
            status::BAD_RANGE,
        ),
        (
            proto::encode(op::WRITE, 0, 105, bh, 0, u64::MAX - 3, 16),
            status::BAD_RANGE,
        ),
        (
            proto::encode(op::READ, 0, 106, bh, 0, 4, 8),
            status::BAD_RANGE,
        ),
        (
            proto::encode(op::READ, 0, 107, bh, u64::MAX - 1, 0, 8),
            status::BAD_RANGE,
        ),
        (
            proto::encode(op::APPEND, 0, 108, 12345, 0, 0, 8),
            status::BAD_HANDLE,
        ),
        (
            proto::encode(op::FSYNC, 3, 109, bh, 0, 0, 0),
            status::BAD_FLAGS,
        ),
        (
            proto::encode(op::OPEN, 0, 110, 0, 0, 0, 1 << 20),
            status::BAD_PATH,
        ),
    ];
    for (words, want) in cases {
        let id = bad.raw_request(words).unwrap();
        assert_eq!(status_of(bad.wait_completed(id)), Some(want), "{words:?}");
    }
    // Pseudo-random garbage: every slot gets a completion, none crashes
    // the daemon.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..300u64 {
        let mut w = [0u64; 8];
        for v in &mut w {
            *v = next();
        }
        // Small opcodes sometimes, so the decoder's deeper paths run too.
        if i % 2 == 0 {
            w[1] &= 0x7;
            w[7] = 0;
        }
        w[2] = 10_000 + i;
        let id = bad.raw_request(w).unwrap();
        let _ = bad.wait_completed(id);
    }
    // Meanwhile the other client is served.
    let w = good.append(gh, b"still here").unwrap();
    good.wait_completed(w).unwrap();
    // A slot written but never published (a client killed mid-write) is
    // never taken: no completion, nothing written.
    bad.raw_unpublished(proto::encode(op::APPEND, 0, 500, bh, 0, 0, 8));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::metadata(root.join("bad")).unwrap().len(), 0);
    // A sequence running ahead: detached.
    bad.raw_publish(1_000_000);
    assert!(
        bad.wait_detached(Duration::from_secs(10)),
        "hostile client detached"
    );
    assert!(daemon.wait_log("broke the ring protocol", Duration::from_secs(5)));
    let w = good.append(gh, b"!").unwrap();
    good.wait_completed(w).unwrap();
    assert_eq!(good.read_wait(gh, 0, 64).unwrap(), b"still here!");
}

/// Spawns `sidecar load`; its stdout lines go to a shared list.
fn load(name: &str, file: &str, tag: u32) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(common::example_bin("sidecar"))
        .args([
            "load",
            "--name",
            name,
            "--file",
            file,
            "--tag",
            &tag.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sidecar load");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().expect("stdout");
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    (child, lines)
}

fn accepted(lines: &Mutex<Vec<String>>) -> Vec<u64> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("accepted ")?.split(' ').next()?.parse().ok())
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn killed_client_is_reclaimed_and_others_keep_working() {
    let (_d, root) = root("killc");
    let daemon = Daemon::start(&unique_name("killc"), &root);
    let mut other = daemon.attach();
    let h = other.open_wait("mine", true).unwrap();
    let (mut child, lines) = load(&daemon.name, "theirs", 1);
    wait_for("the load client's writes", Duration::from_secs(30), || {
        accepted(&lines).len() > 200
    });
    let id: u64 = lines.lock().unwrap()[0]
        .strip_prefix("attached ")
        .unwrap()
        .parse()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        daemon.wait_log(
            &format!("client detached; region freed client={id} why=\"hung up\""),
            Duration::from_secs(10)
        ),
        "the dead client's region is freed:\n{}",
        daemon.stderr.lock().unwrap()
    );
    let w = other.append(h, b"after").unwrap();
    other.wait_completed(w).unwrap();
    assert_eq!(other.read_wait(h, 0, 10).unwrap(), b"after");
    // What the dead client got accepted is in its file, whole.
    let c = other.open_wait("theirs", false).unwrap();
    let s = other.fdatasync(c).unwrap();
    other.wait_completed(s).unwrap();
    let recs = records::parse(&std::fs::read(root.join("theirs")).unwrap()).unwrap();
    let have: HashSet<u64> = recs.iter().map(|r| r.1).collect();
    assert_eq!(have.len(), recs.len(), "no record twice");
    for i in accepted(&lines) {
        assert!(have.contains(&i), "accepted record {i} missing");
    }
}

#[test]
fn daemon_killed_under_load_keeps_every_accepted_write_exactly_once() {
    let (_d, root) = root("killd");
    let name = unique_name("killd");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut x = seed;
    let mut promised: Vec<(u32, u64)> = Vec::new();
    let rounds: u32 = std::env::var("SIDECAR_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // Small WAL segments: the kills land in rotations and retirements too.
    let args = ["--wal-segment-bytes".to_string(), "16384".to_string()];
    for round in 0..rounds {
        let mut daemon = Daemon::start_with(&name, &root, &args);
        eprintln!("round {round}: {}", daemon.banner);
        let loads: Vec<_> = (1..=2)
            .map(|k| (round * 10 + k, load(&name, "log", round * 10 + k)))
            .collect();
        for (_, (_, lines)) in &loads {
            wait_for("load clients to start", Duration::from_secs(30), || {
                accepted(lines).len() > 10
            });
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = 20 + x % 300;
        std::thread::sleep(Duration::from_millis(delay));
        daemon.kill9();
        for (tag, (mut child, lines)) in loads {
            // The clients notice the daemon is gone and exit.
            let end = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            promised.extend(accepted(&lines).into_iter().map(|i| (tag, i)));
        }
        eprintln!(
            "round {round}: killed after {delay} ms (seed {seed}), {} accepted so far",
            promised.len()
        );
    }
    // A last start replays, then the file is checked.
    let daemon = Daemon::start(&name, &root);
    eprintln!("last start: {}", daemon.banner);
    let mut c = daemon.attach();
    let h = c.open_wait("log", false).unwrap();
    let s = c.fdatasync(h).unwrap();
    c.wait_completed(s).unwrap();
    let recs =
        records::parse(&std::fs::read(root.join("log")).unwrap()).expect("only whole records");
    let mut seen = HashSet::new();
    for r in &recs {
        assert!(seen.insert(*r), "record {r:?} twice (seed {seed})");
    }
    for p in &promised {
        assert!(seen.contains(p), "accepted record {p:?} lost (seed {seed})");
    }
    assert!(!promised.is_empty());
}

#[test]
fn a_torn_wal_tail_is_cut_at_start_and_the_log_stays_usable() {
    let (_d, root) = root("torn");
    let name = unique_name("torn");
    let mut daemon = Daemon::start(&name, &root);
    let mut c = daemon.attach();
    let h = c.open_wait("f", true).unwrap();
    let w = c.append(h, b"first").unwrap();
    c.wait_completed(w).unwrap();
    drop(c);
    daemon.kill9();
    // A record header promising more than follows: what a crash mid-write
    // of the log leaves.
    let wal = root.join(".sidecar-wal/wal-00000001.log");
    let mut bytes = std::fs::read(&wal).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 2, 9, 9]);
    std::fs::write(&wal, &bytes).unwrap();
    let mut daemon = Daemon::start(&name, &root);
    assert!(daemon.banner.contains("log cut"), "{}", daemon.banner);
    // Cut back to the last whole record. The restarted daemon may already
    // have appended a DONE record for the replayed write (the first run's
    // own DONE may not have reached the log before the kill), so the log
    // is checked as records, not by its length: the old prefix intact and
    // nothing torn after it.
    let now = std::fs::read(&wal).unwrap();
    assert_eq!(&now[..whole], &bytes[..whole], "the whole records kept");
    let scan = wal::scan(&now);
    assert_eq!(scan.cut, None, "no torn tail left: {:?}", scan.cut);
    assert!(
        scan.records[whole_records(&bytes[..whole])..]
            .iter()
            .all(|r| matches!(r, wal::Record::Done { .. })),
        "only DONE records after the cut"
    );
    let mut c = daemon.attach();
    let h = c.open_wait("f", false).unwrap();
    let w = c.append(h, b" second").unwrap();
    c.wait_accepted(w).unwrap();
    drop(c);
    daemon.kill9();
    let daemon = Daemon::start(&name, &root);
    assert!(!daemon.banner.contains("log cut"), "{}", daemon.banner);
    let mut c = daemon.attach();
    let h = c.open_wait("f", false).unwrap();
    assert_eq!(c.read_wait(h, 0, 64).unwrap(), b"first second");
}

/// A client that shrinks its region's file (the memfd it was handed)
/// would make every daemon access to the mapping fault (SIGBUS) and take
/// the daemon down with every other client. The daemon seals the memfd
/// against shrinking and growing before handing it out.
#[test]
fn a_client_cannot_shrink_its_region_under_the_daemon() {
    let (_d, root) = root("shrink");
    let daemon = Daemon::start(&unique_name("shrink"), &root);
    let mut good = daemon.attach();
    let h = good.open_wait("still", true).unwrap();
    let mut bad = daemon.attach();
    let err = bad
        .shrink_region()
        .expect_err("a sealed region cannot shrink");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    // The daemon polls the hostile client's ring and keeps serving.
    std::thread::sleep(Duration::from_millis(50));
    let w = good.append(h, b"alive").unwrap();
    good.wait_completed(w).unwrap();
    assert_eq!(good.read_wait(h, 0, 5).unwrap(), b"alive");
    let bh = bad.open_wait("bad-still", true).unwrap();
    let w = bad.append(bh, b"me too").unwrap();
    bad.wait_completed(w).unwrap();
}

/// How many whole records `log` holds.
fn whole_records(log: &[u8]) -> usize {
    let scan = wal::scan(log);
    assert_eq!(scan.cut, None);
    scan.records.len()
}

/// A dismissed write's completion is dropped when it arrives, even while
/// someone waits on it: the wait reports an unknown operation (it used to
/// panic in the client, found by the C library's test).
#[test]
fn waiting_on_a_dismissed_operation_reports_it_unknown() {
    let (_d, root) = root("dismiss");
    let daemon = Daemon::start(&unique_name("dismiss"), &root);
    let mut c = daemon.attach();
    let h = c.open_wait("f", true).unwrap();
    for _ in 0..4 {
        let w = c.append(h, b"abc").unwrap();
        c.dismiss(w);
        assert!(matches!(
            c.wait_completed(w),
            Err(client::ClientError::UnknownOp(id)) if id == w
        ));
        let w = c.append(h, b"abc").unwrap();
        c.dismiss(w);
        assert!(matches!(
            c.wait_accepted(w),
            Ok(_) | Err(client::ClientError::UnknownOp(_))
        ));
    }
}

/// Segments of the WAL in `root`'s default WAL directory: (count, bytes).
fn wal_segments(root: &std::path::Path) -> (usize, u64) {
    let mut n = 0;
    let mut bytes = 0;
    for e in std::fs::read_dir(root.join(".sidecar-wal")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert!(wal::segment_no(&name).is_some(), "stray file {name}");
        n += 1;
        bytes += e.metadata().unwrap().len();
    }
    (n, bytes)
}

/// The WAL starts new segments past `--wal-segment-bytes` and removes old
/// ones once what they hold is completed (W3): it stays small however much
/// is written, and a restart finds every completed write and replays none.
#[test]
fn the_wal_rotates_and_retires_segments_and_restarts_from_what_is_left() {
    let (_d, root) = root("rotate");
    let name = unique_name("rotate");
    let args = ["--wal-segment-bytes".to_string(), "8192".to_string()];
    let mut daemon = Daemon::start_with(&name, &root, &args);
    let mut c = daemon.attach();
    let h = c.open_wait("log", true).unwrap();
    let rec = [7u8; 1000];
    for _ in 0..10 {
        let ops: Vec<u64> = (0..40).map(|_| c.append(h, &rec).unwrap()).collect();
        for o in ops {
            c.wait_completed(o).unwrap();
        }
    }
    assert_eq!(std::fs::metadata(root.join("log")).unwrap().len(), 400_000);
    // Retirement follows the watermark within a round or two.
    let end = Instant::now() + Duration::from_secs(5);
    let mut last = wal_segments(&root);
    while last.0 > 3 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
        last = wal_segments(&root);
    }
    let (segments, bytes) = last;
    assert!(segments <= 3, "{segments} segments left, {bytes} bytes");
    assert!(bytes < 64 * 1024, "{bytes} bytes of WAL for 400 kB written");
    drop(c);
    daemon.kill9();
    let daemon = Daemon::start_with(&name, &root, &args);
    // What is left to replay is at most the last batches whose DONE the
    // kill beat, not the 400 writes of the retired segments.
    let replayed: usize = daemon
        .banner
        .split("replayed ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(replayed <= 80, "{}", daemon.banner);
    let mut c = daemon.attach();
    let h = c.open_wait("log", false).unwrap();
    assert_eq!(c.read_wait(h, 399_000, 1000).unwrap(), rec);
    // LSNs go on from where they were: a new append is accepted.
    let w = c.append(h, b"more").unwrap();
    assert_eq!(c.wait_completed(w).unwrap(), 400_000);
}

/// Volatile (unjournaled) writes complete once written, leave no WAL
/// record, and keep their place among the journaled writes to the file
/// (F1): overlapping writes end as the client issued them.
#[test]
fn volatile_writes_skip_the_wal_and_keep_their_order() {
    let (_d, root) = root("volatile");
    let daemon = Daemon::start(&unique_name("volatile"), &root);
    let mut c = daemon.attach();
    let h = c.open_wait("v", true).unwrap();
    for round in 0..20u8 {
        let a = [b'a' + round % 26; 4];
        let w1 = c.write_at(h, 0, &a).unwrap();
        let v = c.write_volatile(h, 0, b"BB").unwrap();
        let w2 = c.write_at(h, 1, b"CC").unwrap();
        for u in [w1, v, w2] {
            c.wait_completed(u).unwrap();
        }
        let want = [b'B', b'C', b'C', a[3]];
        assert_eq!(c.read_wait(h, 0, 4).unwrap(), want, "round {round}");
    }
    let (_, before) = wal_segments(&root);
    let ops: Vec<u64> = (0..500)
        .map(|_| c.append_volatile(h, &[1u8; 4096]).unwrap())
        .collect();
    let mut offsets: Vec<u64> = ops
        .into_iter()
        .map(|u| c.wait_completed(u).unwrap())
        .collect();
    offsets.dedup();
    assert_eq!(offsets.len(), 500, "each append at its own offset");
    let (_, after) = wal_segments(&root);
    assert!(
        after - before < 4096,
        "2 MB of volatile appends grew the WAL by {} bytes",
        after - before
    );
    assert_eq!(
        std::fs::metadata(root.join("v")).unwrap().len(),
        4 + 500 * 4096
    );
    // A refused flag is still refused.
    let bad = c
        .raw_request(proto::encode(op::WRITE, 4, 9, h, 0, 0, 8))
        .unwrap();
    assert_eq!(status_of(c.wait_completed(bad)), Some(status::BAD_FLAGS));
}
