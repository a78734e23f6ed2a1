//! End to end: the real `broker` example binary over real TCP with a
//! temporary data directory.
//!
//! The binary is built once with `cargo build --example broker` (the test
//! profile's; `cargo test` itself only builds the example's test harness).
//! Servers run with three application workers
//! (`SHARED_NOTHING_APP_WORKERS=3`) so records really cross from
//! connection workers to the log-owner worker even on a small machine.
//! Every wait is bounded: sockets have read timeouts and loops have counts
//! and deadlines.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

mod common;
use common::TempDir;
#[path = "common/loop_fs.rs"]
mod loop_fs;
use loop_fs::LoopFs;

fn broker_bin() -> PathBuf {
    common::example_bin("broker")
}

/// A running broker; killed (SIGKILL) on drop.
struct Server {
    child: Child,
    addr: String,
    /// The `GET /metrics` URL, with `--metrics-addr`.
    metrics: Option<String>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(broker_bin())
            .args(["server", "--addr", "127.0.0.1:0", "--stats-interval", "0"])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .env("SHARED_NOTHING_APP_WORKERS", "3")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn broker");
        let stderr = common::collect_stderr(&mut child);
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut metrics = None;
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("metrics on ").nth(1) {
                    metrics = Some(rest.trim().to_owned());
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send((addr, metrics.take()));
                }
            }
        });
        let (addr, metrics) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not print its address; stderr:\n{}",
                    stderr.lock().expect("lock")
                );
            }
        };
        Server {
            child,
            addr,
            metrics,
            stderr,
        }
    }

    /// SIGKILL, like a crash.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) until stderr contains `needle`.
    fn expect_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.stderr.lock().expect("lock").contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stderr never said {needle:?}:\n{}",
                self.stderr.lock().expect("lock")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(addr: &str, role: u8) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    (&s).write_all(&[role]).expect("handshake");
    s
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// The log offset after a record at `offset`: 8-byte header + payload.
fn next_offset(offset: u64, payload: &[u8]) -> u64 {
    offset + 8 + payload.len() as u64
}

/// Sends `payloads` pipelined (all written before acks are read, from a
/// writer thread), returns the acks; asserts they strictly increase.
fn produce(addr: &str, payloads: &[Vec<u8>]) -> Vec<u64> {
    let s = connect(addr, 0x01);
    let mut w = s.try_clone().expect("clone");
    let bytes: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    let writer = thread::spawn(move || w.write_all(&bytes));
    let mut r = BufReader::new(&s);
    let mut acks = Vec::with_capacity(payloads.len());
    for _ in payloads {
        let mut a = [0u8; 8];
        r.read_exact(&mut a).expect("ack");
        let a = u64::from_be_bytes(a);
        if let Some(&prev) = acks.last() {
            assert!(a > prev, "acks must rise: {prev} then {a}");
        }
        acks.push(a);
    }
    writer.join().expect("writer").expect("send");
    acks
}

/// Reads exactly `n` records from a consumer starting at `offset`.
fn consume(addr: &str, offset: u64, n: usize) -> Vec<Vec<u8>> {
    let s = connect(addr, 0x02);
    (&s).write_all(&offset.to_be_bytes()).expect("start");
    read_records(&s, n)
}

fn read_records(s: &TcpStream, n: usize) -> Vec<Vec<u8>> {
    let mut r = BufReader::new(s);
    (0..n)
        .map(|i| {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)
                .unwrap_or_else(|e| panic!("record {i} of {n}: {e}"));
            let mut p = vec![0u8; u32::from_be_bytes(len) as usize];
            r.read_exact(&mut p).expect("payload");
            p
        })
        .collect()
}

/// True if the server closed `s` (EOF or reset) within the read timeout.
fn closed_by_server(mut s: &TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
    false
}

fn payloads(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{tag}-{i:05}-{}", "x".repeat(i % 37)).into_bytes())
        .collect()
}

#[test]
fn producers_and_consumers_at_once_from_zero_middle_and_live() {
    let dir = TempDir::new("many");
    let server = Server::start(&dir.0, &["--fsync", "always"]);
    let addr = server.addr.clone();
    const PRODUCERS: usize = 4;
    const EACH: usize = 300;
    const TOTAL: usize = PRODUCERS * EACH;

    // Two tailing consumers subscribed to the empty log before any record.
    let tails: Vec<_> = (0..2)
        .map(|_| {
            let s = connect(&addr, 0x02);
            (&s).write_all(&0u64.to_be_bytes()).expect("start");
            s
        })
        .collect();
    // Let the subscriptions land first, so the records arrive live.
    thread::sleep(Duration::from_millis(200));

    let handles: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let addr = addr.clone();
            thread::spawn(move || {
                let ps = payloads(&format!("p{p}"), EACH);
                let acks = produce(&addr, &ps);
                acks.into_iter().zip(ps).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_offset = BTreeMap::new();
    for h in handles {
        for (off, p) in h.join().expect("producer") {
            assert!(
                by_offset.insert(off, p).is_none(),
                "offset {off} acked twice"
            );
        }
    }
    assert_eq!(by_offset.len(), TOTAL);
    // Acks are the byte positions of a gapless log.
    let mut expect = 0;
    for (&off, p) in &by_offset {
        assert_eq!(off, expect, "acked offsets leave a gap");
        expect = next_offset(off, p);
    }
    let log: Vec<Vec<u8>> = by_offset.values().cloned().collect();

    for t in &tails {
        assert_eq!(read_records(t, TOTAL), log, "live tail differs");
    }
    assert_eq!(consume(&addr, 0, TOTAL), log, "consumer from 0 differs");
    let (&mid, _) = by_offset.iter().nth(TOTAL / 2).expect("middle");
    assert_eq!(
        consume(&addr, mid, TOTAL - TOTAL / 2),
        log[TOTAL / 2..].to_vec(),
        "consumer from the middle differs"
    );

    // A tail keeps following what is produced later.
    let more = payloads("late", 10);
    produce(&addr, &more);
    assert_eq!(read_records(&tails[0], 10), more);
}

#[test]
fn restart_keeps_the_data_and_continues_the_offsets() {
    let dir = TempDir::new("restart");
    let first = payloads("before", 200);
    let acks = {
        let server = Server::start(&dir.0, &["--fsync", "never"]);
        let acks = produce(&server.addr, &first);
        server.kill();
        acks
    };
    let server = Server::start(&dir.0, &["--fsync", "interval:5"]);
    let second = payloads("after", 50);
    let acks2 = produce(&server.addr, &second);
    let end = next_offset(*acks.last().expect("acks"), first.last().expect("first"));
    assert_eq!(acks2[0], end, "offsets continue after the restart");
    let all = consume(&server.addr, 0, 250);
    assert_eq!(all[..200], first[..]);
    assert_eq!(all[200..], second[..]);
}

#[test]
fn kill_9_during_a_produce_loop_loses_no_acked_record() {
    let dir = TempDir::new("kill9");
    let server = Server::start(&dir.0, &["--fsync", "always"]);
    let addr = server.addr.clone();
    // Two producers with 16 records in flight each, until the broker dies.
    let acked = Arc::new(Mutex::new(Vec::<(u64, Vec<u8>)>::new()));
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let (addr, acked) = (addr.clone(), acked.clone());
            thread::spawn(move || {
                let s = connect(&addr, 0x01);
                let mut w = s.try_clone().expect("clone");
                let mut r = BufReader::new(&s);
                let mut in_flight = std::collections::VecDeque::new();
                for i in 0..100_000u32 {
                    let payload = format!("k{p}-{i}-{}", "y".repeat((i % 300) as usize));
                    if w.write_all(&frame(payload.as_bytes())).is_err() {
                        return;
                    }
                    in_flight.push_back(payload.into_bytes());
                    while in_flight.len() >= 16 {
                        let mut a = [0u8; 8];
                        if r.read_exact(&mut a).is_err() {
                            return;
                        }
                        let p = in_flight.pop_front().expect("in flight");
                        acked.lock().expect("lock").push((u64::from_be_bytes(a), p));
                    }
                }
            })
        })
        .collect();
    // Kill once a fair number of records are acked (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < 2_000 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let addr = server.addr.clone();
    server.kill();
    for p in producers {
        p.join().expect("producer");
    }
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    assert!(
        acked.len() >= 2_000,
        "only {} acks before the deadline",
        acked.len()
    );

    // At once, on the same port: the dead listener's port is retried
    // (issue 16: "Address already in use" half the time).
    let server = Server::start(&dir.0, &["--fsync", "always", "--addr", &addr]);
    assert_eq!(server.addr, addr, "restarted on the same port");
    let by_offset: BTreeMap<u64, Vec<u8>> = acked.into_iter().collect();
    // Read the log from 0 up to the last acked record and check every
    // acked record sits at its offset, byte for byte.
    let (&last_off, _) = by_offset.iter().next_back().expect("acks");
    let s = connect(&server.addr, 0x02);
    (&s).write_all(&0u64.to_be_bytes()).expect("start");
    let mut r = BufReader::new(&s);
    let mut off = 0u64;
    let mut matched = 0;
    while off <= last_off {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)
            .unwrap_or_else(|e| panic!("log ends at {off} before acked {last_off}: {e}"));
        let mut p = vec![0u8; u32::from_be_bytes(len) as usize];
        r.read_exact(&mut p).expect("payload");
        if let Some(want) = by_offset.get(&off) {
            assert_eq!(&p, want, "record at {off} differs after the crash");
            matched += 1;
        }
        off = next_offset(off, &p);
    }
    assert_eq!(
        matched,
        by_offset.len(),
        "some acked offsets are not record boundaries"
    );
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let dir = TempDir::new("bad");
    let server = Server::start(&dir.0, &["--fsync", "never", "--max-record", "1024"]);
    let addr = server.addr.clone();
    // A well-behaved producer that stays connected through every case.
    let good = connect(&addr, 0x01);
    let mut good_r = BufReader::new(good.try_clone().expect("clone"));
    let mut good_seq = 0u32;
    let mut check_good = || {
        good_seq += 1;
        (&good)
            .write_all(&frame(format!("good {good_seq}").as_bytes()))
            .expect("good send");
        let mut a = [0u8; 8];
        good_r
            .read_exact(&mut a)
            .expect("good producer still acked");
    };
    check_good();

    // Unknown handshake byte.
    let s = connect(&addr, 0x07);
    assert!(closed_by_server(&s), "unknown handshake not closed");
    server.expect_log("unknown handshake byte 0x07");
    check_good();

    // A length above --max-record (the records before it are still acked).
    let s = connect(&addr, 0x01);
    let mut bytes = frame(b"fine");
    bytes.extend_from_slice(&2000u32.to_be_bytes());
    (&s).write_all(&bytes).expect("send");
    let mut a = [0u8; 8];
    (&s).read_exact(&mut a)
        .expect("ack for the record before the bad one");
    assert!(closed_by_server(&s), "too-large frame not closed");
    server.expect_log("record length 2000 exceeds the maximum of 1024");
    check_good();

    // Half a frame, then the client goes away.
    let s = connect(&addr, 0x01);
    (&s).write_all(&100u32.to_be_bytes()).expect("header");
    (&s).write_all(&[1u8; 10]).expect("part");
    s.shutdown(Shutdown::Write).expect("shutdown");
    assert!(closed_by_server(&s));
    server.expect_log("connection ended inside a frame");
    check_good();

    // A producer that disconnects mid-stream without reading its acks.
    let s = connect(&addr, 0x01);
    for i in 0..200 {
        (&s).write_all(&frame(format!("gone {i}").as_bytes()))
            .expect("send");
    }
    drop(s);
    check_good();

    // Consumer offsets: inside a record, and past the end.
    for (offset, why) in [(1u64, "not a record boundary"), (1 << 40, "past the end")] {
        let s = connect(&addr, 0x02);
        (&s).write_all(&offset.to_be_bytes()).expect("start");
        assert!(closed_by_server(&s), "consumer at {offset} not closed");
        server.expect_log(why);
        check_good();
    }

    // And a consumer at a real boundary still reads.
    let first = consume(&addr, 0, 1);
    assert_eq!(first, vec![b"good 1".to_vec()]);
}

/// A producer that shuts down its sending side right after its last record
/// (before reading any ack) still reads every ack, then the broker closes.
#[test]
fn half_closed_producer_reads_all_its_acks_then_is_closed() {
    let dir = TempDir::new("half");
    let server = Server::start(&dir.0, &["--fsync", "always"]);
    let records = payloads("half", 2000);
    let s = connect(&server.addr, 0x01);
    let bytes: Vec<u8> = records.iter().flat_map(|p| frame(p)).collect();
    let mut w = s.try_clone().expect("clone");
    // From a thread: the broker's acks could fill our receive buffer while
    // we are still sending.
    let writer = thread::spawn(move || {
        w.write_all(&bytes)?;
        w.shutdown(Shutdown::Write)
    });
    let mut r = BufReader::new(&s);
    let mut expected = 0u64;
    for (i, p) in records.iter().enumerate() {
        let mut a = [0u8; 8];
        r.read_exact(&mut a)
            .unwrap_or_else(|e| panic!("ack {i} of {}: {e}", records.len()));
        assert_eq!(u64::from_be_bytes(a), expected, "ack {i}");
        expected = next_offset(expected, p);
    }
    writer.join().expect("writer").expect("send and shut down");
    assert!(closed_by_server(&s), "not closed after the last ack");
    assert_eq!(consume(&server.addr, 0, records.len()), records);

    // A consumer or a connection still in its handshake that half-closes
    // is closed.
    let c = connect(&server.addr, 0x02);
    (&c).write_all(&0u64.to_be_bytes()).expect("start");
    c.shutdown(Shutdown::Write).expect("shutdown");
    assert!(closed_by_server(&c), "half-closed consumer not closed");
    let h = TcpStream::connect(&server.addr).expect("connect");
    h.shutdown(Shutdown::Write).expect("shutdown");
    assert!(closed_by_server(&h), "half-closed handshake not closed");
}

/// The `producer` mode (which half-closes after stdin ends) gets an ack
/// for every line.
#[test]
fn producer_mode_half_closes_and_gets_every_ack() {
    let dir = TempDir::new("producer");
    let server = Server::start(&dir.0, &["--fsync", "always"]);
    let mut child = Command::new(broker_bin())
        .args(["producer", "--addr", &server.addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn producer");
    let lines: String = (0..500).map(|i| format!("line {i}\n")).collect();
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = thread::spawn(move || stdin.write_all(lines.as_bytes()));
    let out = child.wait_with_output().expect("producer output");
    feeder.join().expect("feeder").expect("feed stdin");
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acks = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("ack "))
        .count();
    assert_eq!(acks, 500);
}

/// Runs the broker binary with `args` and no stdin; killed if it is still
/// running after 30 s (a command line that should be refused but starts a
/// server would otherwise hang the test).
fn run_broker(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(broker_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn broker");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("broker output")
}

/// `--help` exits 0 and names every flag with its default; a bad flag, a bad
/// value and a bad mode exit 2 with clap's message on stderr.
#[test]
fn command_line_help_and_usage_errors() {
    let help = run_broker(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "--help: {:?}", help.status);
    for (flag, default) in [
        ("--addr", "127.0.0.1:12000"),
        ("--dir", "broker-data"),
        ("--fsync", "always"),
        ("--max-record", "8MiB"),
        ("--segment-bytes", "64MiB"),
        ("--retention-bytes", "0"),
        ("--stats-interval", "5s"),
        ("--connections", "4"),
        ("--depth", "64"),
        ("--size", "100"),
        ("--count", "100000"),
        ("--duration", "10s"),
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{flag} ")))
            .unwrap_or_else(|| panic!("{flag} missing from --help:\n{text}"));
        assert!(
            line.contains(&format!("[default: {default}]")),
            "{flag} without its default: {line}"
        );
    }
    for mode in ["server", "producer", "consumer", "bench"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(mode)),
            "mode {mode} missing from --help:\n{text}"
        );
    }

    for (args, message) in [
        (&["--bogus", "1"][..], "unexpected argument '--bogus'"),
        (
            &["server", "--fsync", "sometimes"][..],
            "invalid value 'sometimes' for '--fsync <POLICY>'",
        ),
        (
            &["server", "--segment-bytes=100"][..],
            "invalid value '100' for '--segment-bytes <BYTES>': must be 4 KiB .. 1 GiB",
        ),
        (&["serve"][..], "unrecognized subcommand 'serve'"),
    ] {
        let out = run_broker(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: stderr:\n{stderr}");
        assert!(stderr.contains(message), "{args:?}: stderr:\n{stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
}

/// Resident memory of `pid`, in bytes (Linux).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Consumers that stop reading cost the broker at most their one chunk in
/// flight: credit comes back when the socket has taken a chunk, not when
/// it is queued (issue 16: five such consumers grew it to 3.27 GB). When
/// they read again, every record arrives, in order.
#[test]
fn stalled_consumers_take_bounded_memory_and_then_get_every_record() {
    const RECORDS: usize = 15_000;
    let dir = TempDir::new("stalled");
    let server = Server::start(&dir.0, &["--fsync", "never"]);
    let record = |i: usize| {
        let mut p = format!("{i:08}").into_bytes();
        p.resize(4096, b'.');
        p
    };
    let all: Vec<Vec<u8>> = (0..RECORDS).map(record).collect();
    for part in all.chunks(3_000) {
        produce(&server.addr, part);
    }
    let before = rss_bytes(server.child.id());
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let s = connect(&server.addr, 0x02);
            (&s).write_all(&0u64.to_be_bytes()).expect("start");
            s
        })
        .collect();
    thread::sleep(Duration::from_secs(3));
    let grown = rss_bytes(server.child.id()).saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "three stalled consumers grew the broker by {} MiB",
        grown >> 20
    );
    for s in &stalled {
        let got = read_records(s, RECORDS);
        for (i, p) in got.iter().enumerate() {
            assert!(p == &all[i], "record {i} differs or is missing");
        }
    }
}

/// Replaying the log again and again gives memory back: the server's
/// resident size after ten replays stays near what one replay needs
/// (issue 16: it grew by about the bytes replayed, up to ~286 MB).
#[test]
fn ten_replays_keep_the_servers_memory_bounded() {
    const RECORDS: usize = 10_000;
    let dir = TempDir::new("replays");
    let server = Server::start(&dir.0, &["--fsync", "never"]);
    let all: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| {
            let mut p = format!("{i:08}").into_bytes();
            p.resize(4096, b'r');
            p
        })
        .collect();
    for part in all.chunks(2_500) {
        produce(&server.addr, part);
    }
    let got = consume(&server.addr, 0, RECORDS);
    assert!(got == all, "the first replay reads every record");
    let after_one = rss_bytes(server.child.id());
    for _ in 0..9 {
        assert_eq!(consume(&server.addr, 0, RECORDS).len(), RECORDS);
    }
    thread::sleep(Duration::from_millis(200));
    let after_ten = rss_bytes(server.child.id());
    assert!(
        after_ten < after_one + (24 << 20),
        "ten replays of {} MiB grew the server from {} to {} MiB",
        (RECORDS * 4104) >> 20,
        after_one >> 20,
        after_ten >> 20
    );
}

/// `--metrics-addr` serves the pool's series and the broker's own in one
/// exposition, over HTTP, counting what the producers were acked.
#[test]
fn metrics_over_http_count_the_acked_records() {
    let dir = TempDir::new("metrics");
    let server = Server::start(
        &dir.0,
        &["--fsync", "never", "--metrics-addr", "127.0.0.1:0"],
    );
    let url = server.metrics.clone().expect("the metrics line");
    let records = payloads("m", 500);
    produce(&server.addr, &records);
    let text = scrape(&url);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert_eq!(value("broker_records_acked_total "), 500.0);
    let bytes: usize = records.iter().map(Vec::len).sum();
    assert_eq!(value("broker_bytes_acked_total "), bytes as f64);
    assert_eq!(value("broker_ack_latency_seconds_count "), 500.0);
    assert!(value("broker_log_end_offset ") > 0.0);
    assert!(
        text.contains("shared_nothing_worker_handled_total{"),
        "the pool's series too"
    );
    assert!(text.contains("shared_nothing_io_bytes_in_total{role=\"network\""));
}

/// `GET /metrics` from `url` (`http://HOST:PORT/metrics`).
fn scrape(url: &str) -> String {
    let hostport = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .expect("http://HOST:PORT/metrics");
    let mut s = TcpStream::connect(hostport).expect("metrics connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("answer");
    text
}

/// Disk full, then space freed: the producer keeps its connection, its
/// records are acked once space is back (issue 16: the log refused every
/// write until a restart), the wait shows in the metrics, and every acked
/// record reads back intact.
#[test]
fn a_full_disk_delays_acks_until_space_is_freed_and_loses_nothing() {
    let Some(fs) = LoopFs::mount_or_skip("enospc", 48) else {
        return;
    };
    let data = fs.dir.0.join("log");
    let server = Server::start(
        &data,
        &["--segment-bytes", "1MiB", "--metrics-addr", "127.0.0.1:0"],
    );
    let url = server.metrics.clone().expect("the metrics line");
    // Leave about 3 MiB free, then produce 12 MiB.
    let filler = fs.fill_leaving(3 << 20);
    let records: Vec<Vec<u8>> = (0..192u32)
        .map(|i| {
            let mut p = vec![(i % 251) as u8; 64 << 10];
            p[..4].copy_from_slice(&i.to_be_bytes());
            p
        })
        .collect();
    let addr = server.addr.clone();
    let sent = records.clone();
    let producer = thread::spawn(move || produce(&addr, &sent));
    server.expect_log("out of space, retrying");
    let text = scrape(&url);
    assert!(text.contains("broker_disk_full 1"), "{text}");
    // Space comes back: every record is acked on the same connection.
    thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&filler).expect("free the space");
    let acks = producer.join().expect("producer got every ack");
    assert_eq!(acks.len(), records.len());
    server.expect_log("disk space is back");
    let text = scrape(&url);
    assert!(text.contains("broker_disk_full 0"), "{text}");
    let retries = text
        .lines()
        .find_map(|l| l.strip_prefix("broker_disk_full_retries_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("retries counter");
    assert!(retries >= 1.0, "{text}");
    assert_eq!(consume(&server.addr, 0, records.len()), records);
    // And after a crash, from the disk.
    server.kill();
    let server = Server::start(&data, &[]);
    assert_eq!(consume(&server.addr, 0, records.len()), records);
    assert_eq!(produce(&server.addr, &records[..1]).len(), 1);
}

/// Segments are extended to their full size when they become active (a
/// hole, so appending fdatasyncs commit no size change): a record larger
/// than a segment is never cut by it, and after `kill -9` the zero tails
/// read as space, so every record and segment survives and appends resume
/// at the log's end.
#[test]
fn preallocated_segments_keep_every_record_across_a_crash() {
    let dir = TempDir::new("prealloc");
    const SEGMENT: u64 = 64 << 10;
    let flags = ["--segment-bytes", "64KiB", "--max-record", "1MiB"];
    let server = Server::start(&dir.0, &flags);
    let mut records = payloads("p", 300);
    records.insert(150, vec![9u8; 200 << 10]);
    records.push(vec![8u8; 100 << 10]);
    let acks = produce(&server.addr, &records);
    let active = acks.last().copied().expect("acks");
    let seg = |base: u64| dir.0.join(format!("{base:020}.log"));
    // The last record has a segment of its own, longer than a segment.
    let len = |base: u64| std::fs::metadata(seg(base)).expect("segment").len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while len(active) != 8 + (100 << 10) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(len(active), 8 + (100 << 10), "a big record is never cut");
    // A full segment before it was extended to the segment size.
    let mid = acks[100];
    let base = std::fs::read_dir(&dir.0)
        .expect("dir")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .filter(|b: &u64| *b <= mid)
        .max()
        .expect("a segment holding record 100");
    assert!(len(base) >= SEGMENT, "segment {base} was not extended");
    server.kill();
    let server = Server::start(&dir.0, &flags);
    assert_eq!(consume(&server.addr, 0, records.len()), records);
    let more = produce(&server.addr, &records[..2]);
    assert_eq!(more[0], next_offset(active, &records[records.len() - 1]));
}

/// A producer flood while the log cannot write (the disk is full) waits in
/// the producer's socket, not in the broker: its memory stays within a
/// bound far below the flood (issue 16: appends piled up in the owner
/// without limit), and once space is back every record is acked and
/// reads back.
#[test]
fn a_flood_while_the_disk_stalls_takes_bounded_memory() {
    let Some(fs) = LoopFs::mount_or_skip("flood", 256) else {
        return;
    };
    let data = fs.dir.0.join("log");
    let server = Server::start(&data, &["--segment-bytes", "8MiB"]);
    let pid = server.child.id();
    // Warm up (buffers, pools), then fill the disk but for 1 MiB.
    produce(&server.addr, &payloads("w", 2000));
    let filler = fs.fill_leaving(1 << 20);
    let before = rss_bytes(pid);
    const FLOOD: usize = 160 << 20;
    let records: Vec<Vec<u8>> = (0..FLOOD / (64 << 10))
        .map(|i| vec![(i % 253) as u8; 64 << 10])
        .collect();
    let addr = server.addr.clone();
    let sent = records.clone();
    let producer = thread::spawn(move || produce(&addr, &sent));
    server.expect_log("out of space, retrying");
    // The flood has had time to arrive; the broker holds a window of it.
    let mut peak = 0;
    for _ in 0..15 {
        thread::sleep(Duration::from_millis(200));
        peak = peak.max(rss_bytes(pid));
    }
    let grown = peak.saturating_sub(before);
    std::fs::remove_file(&filler).expect("free the space");
    let acks = producer.join().expect("producer got every ack");
    assert_eq!(acks.len(), records.len());
    assert!(
        grown < 48 << 20,
        "the broker grew by {} MiB during a {} MiB flood",
        grown >> 20,
        FLOOD >> 20
    );
    let got = consume(&server.addr, acks[0], records.len());
    assert!(got == records, "every flooded record reads back");
}

/// Our extension: a connection on a named log (handshake 0x03 / 0x04 and
/// `[u8 len][name]`).
fn connect_named(addr: &str, role: u8, name: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    let mut hello = vec![role, name.len() as u8];
    hello.extend_from_slice(name.as_bytes());
    (&s).write_all(&hello).expect("handshake");
    s
}

fn produce_named(addr: &str, name: &str, payloads: &[Vec<u8>]) -> Vec<u64> {
    let s = connect_named(addr, 0x03, name);
    let bytes: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    (&s).write_all(&bytes).expect("send");
    let mut r = BufReader::new(&s);
    (0..payloads.len())
        .map(|_| {
            let mut a = [0u8; 8];
            r.read_exact(&mut a).expect("ack");
            u64::from_be_bytes(a)
        })
        .collect()
}

fn consume_named(addr: &str, name: &str, offset: u64, n: usize) -> Vec<Vec<u8>> {
    let s = connect_named(addr, 0x04, name);
    (&s).write_all(&offset.to_be_bytes()).expect("start");
    read_records(&s, n)
}

/// Named logs: each has its own offsets (from 0), records, directory and
/// owner; they survive `kill -9`; a consumer of a new log waits for its
/// first records; a bad name closes only that connection; the default log
/// (0x01 / 0x02) is untouched.
#[test]
fn named_logs_are_separate_logs_end_to_end() {
    let dir = TempDir::new("named");
    let server = Server::start(&dir.0, &["--fsync", "always"]);
    let default = payloads("default", 10);
    let orders = payloads("orders", 40);
    let audit = payloads("audit", 7);
    produce(&server.addr, &default);
    let acks = produce_named(&server.addr, "orders", &orders);
    assert_eq!(acks[0], 0, "a named log's offsets start at 0");
    assert_eq!(produce_named(&server.addr, "audit.eu-1", &audit)[0], 0);
    assert_eq!(consume_named(&server.addr, "orders", 0, 40), orders);
    assert_eq!(consume_named(&server.addr, "audit.eu-1", 0, 7), audit);
    assert_eq!(consume(&server.addr, 0, 10), default);
    assert!(
        dir.0
            .join("logs/orders")
            .join(format!("{:020}.log", 0))
            .exists()
    );

    // A consumer of a log nobody wrote yet waits for its first records.
    let waiting = thread::spawn({
        let addr = server.addr.clone();
        move || consume_named(&addr, "fresh", 0, 3)
    });
    thread::sleep(Duration::from_millis(200));
    let fresh = payloads("fresh", 3);
    produce_named(&server.addr, "fresh", &fresh);
    assert_eq!(waiting.join().expect("consumer"), fresh);

    // Bad names: only that connection closes.
    for bad in ["../x", ".hidden", ""] {
        let s = connect_named(&server.addr, 0x03, bad);
        assert!(closed_by_server(&s), "name {bad:?} was accepted");
    }
    let too_long = "a".repeat(65);
    assert!(closed_by_server(&connect_named(
        &server.addr,
        0x04,
        &too_long
    )));

    server.kill();
    let server = Server::start(&dir.0, &["--fsync", "always"]);
    assert_eq!(consume_named(&server.addr, "orders", 0, 40), orders);
    let more = produce_named(&server.addr, "orders", &orders[..1]);
    assert_eq!(
        more[0],
        next_offset(acks[39], &orders[39]),
        "offsets continue"
    );
    assert_eq!(consume(&server.addr, 0, 10), default);
}

/// `broker floor`, the bench's reference server, acks like the broker
/// (the same offsets) without storing anything.
#[test]
fn the_floor_server_acks_like_the_broker() {
    let mut child = Command::new(broker_bin())
        .args(["floor", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn floor");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .split("listening on ")
        .nth(1)
        .expect("address line")
        .trim()
        .to_owned();
    let records = payloads("floor", 50);
    let acks = produce(&addr, &records);
    let mut expect = 0;
    for (ack, r) in acks.iter().zip(&records) {
        assert_eq!(*ack, expect);
        expect = next_offset(expect, r);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Consumer reads go through the storage I/O path (the log owner's own
/// ring here), not `pread`s on the owner's thread: the storage series
/// count at least the bytes a replay from 0 streamed.
#[test]
fn replays_are_read_through_the_storage_io_path() {
    let dir = TempDir::new("replay-io");
    let server = Server::start(
        &dir.0,
        &["--fsync", "never", "--metrics-addr", "127.0.0.1:0"],
    );
    let url = server.metrics.clone().expect("the metrics line");
    let storage_in = |text: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("shared_nothing_io_bytes_in_total{") && l.contains("role=\"storage\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let records: Vec<Vec<u8>> = (0..2000u32).map(|i| vec![(i % 250) as u8; 1000]).collect();
    produce(&server.addr, &records);
    let before = storage_in(&scrape(&url));
    assert_eq!(consume(&server.addr, 0, records.len()), records);
    let read = storage_in(&scrape(&url)) - before;
    let bytes: usize = records.iter().map(Vec::len).sum();
    assert!(
        read >= bytes as f64,
        "storage read {read} of {bytes} bytes replayed"
    );
}
