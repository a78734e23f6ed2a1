//! End to end: streamed PUT bodies on the `cache` example's real binary.
//! A 2 GiB value through a 256 MiB memory tier and a disk tier in a
//! temporary directory, put and read back while the server's resident
//! memory is watched (it must stay far below the value: the body is
//! committed chunk by chunk as it arrives, and the GET streams from
//! disk); and a connection that dies in the middle of a PUT, which must
//! leave the old value, visible throughout.
//!
//! The test's side never holds the value either: the body comes from a
//! generator 1 MiB at a time and the answer is checked by a running
//! CRC32C against the same generator.

#[path = "common/cache_server.rs"]
#[allow(dead_code)]
mod cache_server;
#[path = "../examples/cache/client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use cache_server::{Server, value};
use common::TempDir;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const BLOCK: usize = 1 << 20;

/// Block `i` of the generated value (1 MiB, no two blocks alike, so the
/// chunks do not dedup).
fn block(i: u64, out: &mut [u8]) {
    for (j, w) in out.chunks_exact_mut(8).enumerate() {
        let n = (i << 17) | j as u64;
        let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) ^ n;
        w.copy_from_slice(&x.to_le_bytes());
    }
}

/// Free bytes of the file system holding `dir` (`df -Pk`), if known.
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

/// VmRSS of `pid` in bytes.
fn rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples the server's RSS every 50 ms until stopped; the highest seen.
struct Watch {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Watch {
    fn start(pid: u32) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(r) = rss(pid) {
                    m.fetch_max(r, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        Watch {
            stop,
            max,
            handle: Some(handle),
        }
    }

    fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Reads a response head (up to the blank line) from `s`.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).expect("response head"), 1, "closed");
        head.push(b[0]);
        assert!(head.len() < 64 << 10, "head too long");
    }
    String::from_utf8(head).expect("ASCII head")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn two_gib_through_a_256_mib_memory_tier() {
    let dir = TempDir::new("stream-2g");
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let free = free_bytes(&dir.0);
    if free.is_none_or(|f| f < 5 * GIB) {
        eprintln!("skipped: the temporary file system has {free:?} bytes free, under 5 GiB");
        let _ = std::fs::remove_dir_all(&dir.0);
        return;
    }
    let disk = dir.0.join("disk");
    let size = 2 * GIB;
    // Three workers: each owns 1/3 of 9 GB of disk (over 2 GiB) and
    // 1/3 of the 256 MiB memory tier.
    let s = Server::start(&[
        "-m",
        "256",
        "-d",
        disk.to_str().expect("utf-8 path"),
        "-D",
        "9",
        "--max-body",
        &(3 * GIB).to_string(),
    ]);
    let watch = Watch::start(s.pid());
    let limit = 768 << 20;
    let timeout = Some(Duration::from_secs(300));

    // PUT, Content-Length, 1 MiB at a time from the generator.
    let started = Instant::now();
    let mut conn = TcpStream::connect(s.addr).expect("connect");
    conn.set_read_timeout(timeout).unwrap();
    conn.set_write_timeout(timeout).unwrap();
    write!(
        conn,
        "PUT /cache/huge HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; BLOCK];
    let mut crc = 0u32;
    for i in 0..size / BLOCK as u64 {
        block(i, &mut buf);
        crc = crc32c::crc32c_append(crc, &buf);
        conn.write_all(&buf).expect("body");
    }
    let head = read_head(&mut conn);
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    let put_took = started.elapsed();
    assert!(
        watch.max() < limit,
        "RSS {} MiB during the PUT",
        watch.max() >> 20
    );

    // HEAD, then GET streamed and checked as it comes.
    write!(conn, "HEAD /cache/huge HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let head = read_head(&mut conn);
    assert_eq!(
        header(&head, "X-ElCache-Size"),
        Some(size.to_string().as_str())
    );
    assert_eq!(header(&head, "X-ElCache-Chunks"), Some("512"));
    let started = Instant::now();
    write!(conn, "GET /cache/huge HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let head = read_head(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "Content-Length"),
        Some(size.to_string().as_str())
    );
    let mut got = 0u64;
    let mut back = 0u32;
    while got < size {
        let want = (size - got).min(BLOCK as u64) as usize;
        conn.read_exact(&mut buf[..want]).expect("GET body");
        back = crc32c::crc32c_append(back, &buf[..want]);
        got += want as u64;
    }
    assert_eq!(back, crc, "the 2 GiB read back");
    let get_took = started.elapsed();
    // A range near the end, the connection still in step.
    let off = size - (5 << 20) + 1000;
    write!(
        conn,
        "GET /cache/huge HTTP/1.1\r\nHost: t\r\nRange: bytes={off}-{}\r\n\r\n",
        off + 99
    )
    .unwrap();
    let head = read_head(&mut conn);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    let mut part = [0u8; 100];
    conn.read_exact(&mut part).unwrap();
    let i = off / BLOCK as u64;
    block(i, &mut buf);
    let at = (off % BLOCK as u64) as usize;
    assert!(part[..] == buf[at..at + 100], "range bytes");
    let peak = watch.max();
    drop(watch);
    println!(
        "2 GiB: PUT {put_took:?}, GET {get_took:?}, peak server RSS {} MiB",
        peak >> 20
    );
    assert!(peak < limit, "RSS peaked at {} MiB", peak >> 20);
    drop(conn);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir.0);
}

#[test]
fn a_put_cut_short_leaves_the_old_value() {
    for disk in [false, true] {
        let dir = TempDir::new("stream-cut");
        let d = dir.0.join("disk");
        let mut args = vec!["-m", "64"];
        if disk {
            args.extend(["-d", d.to_str().expect("utf-8 path"), "-D", "1"]);
        }
        let s = Server::start(&args);
        let mut c = s.client();
        let old = value((5 << 20) + 11, 3);
        let r = c.request("PUT", "/cache/k", &[], &old).unwrap();
        assert_eq!(r.status, 201);
        // A new value of 16 MiB, cut after 9 MiB (two chunks in the
        // tiers already): the old one is served meanwhile and after.
        let mut w = TcpStream::connect(s.addr).unwrap();
        write!(
            w,
            "PUT /cache/k HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            16 << 20
        )
        .unwrap();
        let new = value(9 << 20, 4);
        w.write_all(&new).unwrap();
        thread::sleep(Duration::from_millis(300));
        let r = c.request("GET", "/cache/k", &[], b"").unwrap();
        assert!(r.status == 200 && r.body == old, "mid-PUT (disk {disk})");
        drop(w);
        thread::sleep(Duration::from_millis(300));
        let r = c.request("GET", "/cache/k", &[], b"").unwrap();
        assert!(
            r.status == 200 && r.body == old,
            "after the cut (disk {disk})"
        );
        // The tiers hold the old value only (the cut one's chunks gone).
        let st: serde_json::Value =
            serde_json::from_slice(&c.request("GET", "/stats", &[], b"").unwrap().body).unwrap();
        let held = st["size_bytes"].as_u64().unwrap();
        let len = old.len() as u64;
        assert!(held == len || held == 2 * len, "{held} (disk {disk})");
        // A whole streamed PUT then replaces it.
        let newer = value((13 << 20) + 1, 5);
        let r = c.request("PUT", "/cache/k", &[], &newer).unwrap();
        assert_eq!(r.status, 201);
        let r = c.request("GET", "/cache/k", &[], b"").unwrap();
        assert!(r.body == newer, "replaced (disk {disk})");
    }
}
