//! End to end: the `cache` example's SDK socket (ElCache's unix-socket
//! protocol, `elcache-protocol.md` section 1) spoken by a Rust client
//! written here from the spec (not the server's codec), and by a C
//! client (`tests/c/elcache_sdk_client.c`) compiled with `cc` in the test;
//! both against a real server process over its real socket, beside HTTP
//! on the same store.
//!
//! Every wait is bounded: sockets have timeouts, loops counts.

#[path = "common/cache_server.rs"]
#[allow(dead_code)]
mod cache_server;
#[path = "../examples/cache/client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use cache_server::{Server, TIMEOUT, value};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GET: u16 = 0x0100;
const PUT: u16 = 0x0102;
const DELETE: u16 = 0x0104;
const CHECK: u16 = 0x0106;
const CREATE_SPARSE: u16 = 0x0108;
const WRITE_RANGE: u16 = 0x010A;
const FINALIZE: u16 = 0x010C;

/// A header as section 1.1 lays it out.
fn header(ty: u16, length: u32, request_id: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&[0x41, 0x43, 0x4C, 0x45]);
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&ty.to_le_bytes());
    h.extend_from_slice(&length.to_le_bytes());
    h.extend_from_slice(&request_id.to_le_bytes());
    h.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    h
}

fn lp(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn ttl_flags(out: &mut Vec<u8>, ttl: u64, flags: u32) {
    if ttl > 0 {
        out.push(1);
        out.extend_from_slice(&ttl.to_le_bytes());
    } else {
        out.push(0);
    }
    out.extend_from_slice(&flags.to_le_bytes());
}

/// The payloads of section 1.3, as ElCache's SDK writes them.
fn get_payload(key: &[u8], range: Option<(u64, u64)>) -> Vec<u8> {
    let mut p = Vec::new();
    lp(&mut p, key);
    p.push(0);
    match range {
        Some((o, l)) => {
            p.push(1);
            p.extend_from_slice(&o.to_le_bytes());
            p.extend_from_slice(&l.to_le_bytes());
        }
        None => p.push(0),
    }
    p
}

fn put_payload(key: &[u8], value: &[u8], ttl: u64, flags: u32) -> Vec<u8> {
    let mut p = Vec::new();
    lp(&mut p, key);
    lp(&mut p, value);
    ttl_flags(&mut p, ttl, flags);
    p
}

fn key_payload(key: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    lp(&mut p, key);
    p
}

fn sparse_payload(key: &[u8], total: u64, ttl: u64, flags: u32) -> Vec<u8> {
    let mut p = Vec::new();
    lp(&mut p, key);
    p.extend_from_slice(&total.to_le_bytes());
    ttl_flags(&mut p, ttl, flags);
    p
}

fn write_payload(key: &[u8], offset: u64, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    lp(&mut p, key);
    p.extend_from_slice(&offset.to_le_bytes());
    lp(&mut p, data);
    p
}

/// One SDK connection.
struct Sdk {
    s: UnixStream,
    next_id: u32,
}

/// A response: its header fields and payload.
#[derive(Debug)]
struct Frame {
    ty: u16,
    request_id: u32,
    timestamp: u64,
    payload: Vec<u8>,
}

impl Sdk {
    fn connect(path: &Path) -> Sdk {
        let s = UnixStream::connect(path).expect("connect to the SDK socket");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        Sdk { s, next_id: 0 }
    }

    fn send(&mut self, ty: u16, payload: &[u8]) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        let mut f = header(ty, payload.len() as u32, self.next_id);
        f.extend_from_slice(payload);
        self.s.write_all(&f).expect("send a frame");
        self.next_id
    }

    fn recv(&mut self) -> Frame {
        let mut h = [0u8; 24];
        self.s.read_exact(&mut h).expect("a response header");
        assert_eq!(&h[..4], &[0x41, 0x43, 0x4C, 0x45], "magic");
        assert_eq!(u16::from_le_bytes([h[4], h[5]]), 1, "version");
        let len = u32::from_le_bytes(h[8..12].try_into().unwrap());
        let mut payload = vec![0; len as usize];
        self.s.read_exact(&mut payload).expect("a response payload");
        Frame {
            ty: u16::from_le_bytes([h[6], h[7]]),
            request_id: u32::from_le_bytes(h[12..16].try_into().unwrap()),
            timestamp: u64::from_le_bytes(h[16..24].try_into().unwrap()),
            payload,
        }
    }

    /// Sends a request and checks the response's type and id.
    fn call(&mut self, ty: u16, payload: &[u8]) -> Frame {
        let id = self.send(ty, payload);
        let f = self.recv();
        assert_eq!(f.ty, ty + 1, "response type = request type + 1");
        assert_eq!(f.request_id, id, "request id echoed");
        f
    }

    /// A non-GET request: its one `u32` code.
    fn code(&mut self, ty: u16, payload: &[u8]) -> u32 {
        let f = self.call(ty, payload);
        assert_eq!(f.payload.len(), 4, "a non-GET reply is one u32 code");
        u32::from_le_bytes(f.payload[..4].try_into().unwrap())
    }

    /// A GET: (result, data), the payload checked byte by byte.
    fn get(&mut self, key: &[u8], range: Option<(u64, u64)>) -> (u32, Vec<u8>) {
        let f = self.call(GET, &get_payload(key, range));
        let p = f.payload;
        assert!(p.len() >= 9, "GET payload: result, has_metadata, D");
        let result = u32::from_le_bytes(p[..4].try_into().unwrap());
        assert_eq!(p[4], 0, "no metadata block");
        let d = u32::from_le_bytes(p[5..9].try_into().unwrap()) as usize;
        assert_eq!(p.len(), 9 + d, "length = 9 + D exactly");
        assert!(result <= 2, "GET result only 0/1/2");
        (result, p[9..].to_vec())
    }

    fn put(&mut self, key: &[u8], value: &[u8], ttl: u64, flags: u32) -> u32 {
        self.code(PUT, &put_payload(key, value, ttl, flags))
    }

    fn delete(&mut self, key: &[u8]) -> u32 {
        self.code(DELETE, &key_payload(key))
    }

    fn create_sparse(&mut self, key: &[u8], total: u64) -> u32 {
        self.code(CREATE_SPARSE, &sparse_payload(key, total, 0, 0))
    }

    fn write_range(&mut self, key: &[u8], offset: u64, data: &[u8]) -> u32 {
        self.code(WRITE_RANGE, &write_payload(key, offset, data))
    }

    fn finalize(&mut self, key: &[u8]) -> u32 {
        self.code(FINALIZE, &key_payload(key))
    }

    /// Whether the server closed the connection (EOF, or a reset) with
    /// nothing sent first.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "the server neither answered nor closed: {e}"
                );
                true
            }
        }
    }
}

fn stats(s: &Server) -> serde_json::Value {
    let r = s.client().request("GET", "/stats", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("stats JSON")
}

#[test]
fn every_message_type_and_result_code() {
    let s = Server::start(&[]);
    let mut c = Sdk::connect(&s.unix);
    // PUT, GET hit, exact response header.
    assert_eq!(c.put(b"greeting", b"Hello, World!", 0, 7), 0);
    let id = c.send(GET, &get_payload(b"greeting", None));
    let f = c.recv();
    assert_eq!((f.ty, f.request_id), (0x0101, id));
    assert_eq!(f.timestamp % 1000, 0, "whole seconds x 1000");
    let mut want = vec![0, 0, 0, 0, 0, 13, 0, 0, 0];
    want.extend_from_slice(b"Hello, World!");
    assert_eq!(f.payload, want, "GET response byte for byte");
    // Miss: result 1, D = 0.
    assert_eq!(c.get(b"nope", None), (1, Vec::new()));
    // Ranges: clamped, length 0 = to the end, offset >= size = hit, empty.
    assert_eq!(c.get(b"greeting", Some((7, 5))), (0, b"World".to_vec()));
    assert_eq!(c.get(b"greeting", Some((7, 0))), (0, b"World!".to_vec()));
    assert_eq!(c.get(b"greeting", Some((7, 100))), (0, b"World!".to_vec()));
    assert_eq!(
        c.get(b"greeting", Some((0, 0))),
        (0, b"Hello, World!".to_vec())
    );
    assert_eq!(c.get(b"greeting", Some((13, 0))), (0, Vec::new()));
    assert_eq!(c.get(b"greeting", Some((u64::MAX, 1))), (0, Vec::new()));
    assert_eq!(c.get(b"nope", Some((1, 1))), (1, Vec::new()));
    // Overwrite, DELETE idempotent.
    assert_eq!(c.put(b"greeting", b"bye", 0, 0), 0);
    assert_eq!(c.get(b"greeting", None), (0, b"bye".to_vec()));
    assert_eq!(c.delete(b"greeting"), 0);
    assert_eq!(c.delete(b"greeting"), 0, "DELETE is idempotent");
    assert_eq!(c.get(b"greeting", None).0, 1);
    // Empty key and empty value are values like any other.
    assert_eq!(c.put(b"", b"", 0, 0), 0);
    assert_eq!(c.get(b"", None), (0, Vec::new()));
    // Keys over 8192 bytes are never stored.
    let long = vec![b'k'; 8193];
    assert_eq!(c.put(&long, b"v", 0, 0), 3);
    assert_eq!(c.create_sparse(&long, 1), 3);
    assert_eq!(c.write_range(&long, 0, b"v"), 1);
    assert_eq!(c.finalize(&long), 1);
    assert_eq!(c.delete(&long), 0);
    let max = vec![b'm'; 8192];
    assert_eq!(c.put(&max, b"at the limit", 0, 0), 0);
    assert_eq!(c.get(&max, None), (0, b"at the limit".to_vec()));

    // Sparse: CREATE 0 / 1 exists; WRITE 1 no entry / 2 out of range;
    // FINALIZE 2 incomplete / 1 no entry; overlapping writes, last wins.
    assert_eq!(c.write_range(b"sp", 0, b"x"), 1, "no staging entry");
    assert_eq!(c.finalize(b"sp"), 1, "no staging entry");
    assert_eq!(c.create_sparse(b"sp", 10), 0);
    assert_eq!(c.create_sparse(b"sp", 10), 1, "staging entry exists");
    assert_eq!(c.write_range(b"sp", 8, b"xyz"), 2, "offset + L > total");
    assert_eq!(c.write_range(b"sp", u64::MAX, b"x"), 2, "overflow");
    assert_eq!(c.write_range(b"sp", 4, b"456789"), 0);
    assert_eq!(c.write_range(b"sp", 10, b""), 0, "L = 0 accepted");
    assert_eq!(c.finalize(b"sp"), 2, "incomplete");
    assert_eq!(c.get(b"sp", None).0, 1, "unreadable before finalize");
    assert_eq!(c.write_range(b"sp", 0, b"0123XX"), 0);
    assert_eq!(c.write_range(b"sp", 4, b"45"), 0, "last write wins");
    assert_eq!(c.finalize(b"sp"), 0);
    assert_eq!(c.get(b"sp", None), (0, b"0123456789".to_vec()));
    assert_eq!(c.finalize(b"sp"), 1, "finalize removed the staging entry");
    assert_eq!(c.create_sparse(b"sp", 0), 0, "0 accepted");
    assert_eq!(c.finalize(b"sp"), 0);
    assert_eq!(c.get(b"sp", None), (0, Vec::new()));
    // Over the body limit: refused with 3.
    assert_eq!(c.create_sparse(b"huge", 1 << 40), 3);
}

#[test]
fn ttl_on_the_socket_and_zero_means_none() {
    let s = Server::start(&[]);
    let mut c = Sdk::connect(&s.unix);
    assert_eq!(c.put(b"short", b"v", 1, 0), 0);
    assert_eq!(c.put(b"forever", b"v", 0, 0), 0);
    assert_eq!(
        c.code(CREATE_SPARSE, &sparse_payload(b"sparse-ttl", 1, 1, 5)),
        0
    );
    assert_eq!(c.write_range(b"sparse-ttl", 0, b"s"), 0);
    assert_eq!(c.finalize(b"sparse-ttl"), 0);
    assert_eq!(c.get(b"short", None).0, 0);
    let start = Instant::now();
    let mut gone = false;
    while start.elapsed() < Duration::from_secs(10) {
        if c.get(b"short", None).0 == 1 && c.get(b"sparse-ttl", None).0 == 1 {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "a 1 s TTL expires (PUT and CREATE_SPARSE)");
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert_eq!(c.get(b"forever", None), (0, b"v".to_vec()), "TTL 0: none");
    // The flags given at PUT come back over HTTP.
    assert_eq!(c.put(b"flagged", b"v", 0, 0xDEAD_BEEF), 0);
    let r = s
        .client()
        .request("GET", "/cache/flagged", &[], b"")
        .unwrap();
    assert_eq!(r.header("X-ElCache-Flags"), Some("3735928559"));
}

#[test]
fn framing_errors_close_only_their_connection() {
    let s = Server::start(&["--max-body", "4096"]);
    let mut good = Sdk::connect(&s.unix);
    assert_eq!(good.put(b"k", b"v", 0, 0), 0);
    let raw = |bytes: &[u8]| {
        let mut c = Sdk::connect(&s.unix);
        c.s.write_all(bytes).unwrap();
        c
    };
    // Bad magic.
    let mut f = header(GET, 5, 1);
    f[0] = b'X';
    f.extend_from_slice(&get_payload(b"k", None)[..5]);
    assert!(raw(&f).closed(), "bad magic");
    // Unknown types: CHECK, a response type, garbage.
    for ty in [CHECK, GET + 1, 0x0001, 0xFFFF] {
        let mut f = header(ty, 5, 1);
        f.extend_from_slice(&key_payload(b"k"));
        assert!(raw(&f).closed(), "unknown type {ty:#06x}");
    }
    // A payload too short for its type, a bad flag byte.
    let mut f = header(DELETE, 7, 1);
    f.extend_from_slice(&[100, 0, 0, 0, b'a', b'b', b'c']);
    assert!(raw(&f).closed(), "K past the payload");
    let mut p = get_payload(b"k", None);
    p[6] = 2;
    let mut f = header(GET, p.len() as u32, 1);
    f.extend_from_slice(&p);
    assert!(raw(&f).closed(), "has_range = 2");
    // EOF inside the header, inside the payload.
    let mut c = raw(&header(GET, 10, 1)[..10]);
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.closed(), "EOF mid-header");
    let mut f = header(PUT, 100, 1);
    f.extend_from_slice(&[1, 0, 0]);
    let mut c = raw(&f);
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.closed(), "EOF mid-payload");
    // A GET over its length limit closes (its result has no error code).
    let mut c = raw(&header(GET, 1 << 20, 1));
    assert!(c.closed(), "GET over its limit");
    // Other types over their limit: read, discarded, answered 3, and the
    // connection goes on in step.
    let mut c = Sdk::connect(&s.unix);
    let limit = 8192 + 64 + 4096;
    let mut p = put_payload(b"big", &vec![7; limit], 0, 0);
    assert!(p.len() > limit);
    assert_eq!(c.code(PUT, &p), 3, "PUT over the limit");
    p.truncate(9000);
    assert_eq!(c.code(DELETE, &p), 3, "DELETE over its limit");
    // Within the frame limit but over the body limit.
    assert_eq!(c.put(b"big", &[7; 4097], 0, 0), 3);
    assert_eq!(c.code(WRITE_RANGE, &write_payload(b"x", 0, &[1; 4097])), 3);
    assert_eq!(c.put(b"fits", &[7; 4096], 0, 0), 0);
    assert_eq!(c.get(b"fits", None), (0, vec![7; 4096]));
    assert_eq!(c.get(b"big", None).0, 1);
    // A length of u32::MAX is not allocated: the server waits for bytes
    // that never come, and closes at EOF.
    let mut c = raw(&header(PUT, u32::MAX, 1));
    c.s.write_all(&[0; 1000]).unwrap();
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.closed(), "cut inside a huge PUT");
    // The first connection was never disturbed.
    assert_eq!(good.get(b"k", None), (0, b"v".to_vec()));
    let st = stats(&s);
    assert!(st["size_bytes"].as_u64().unwrap() < 1 << 20);
}

#[test]
fn pipelined_and_concurrent_connections_answer_in_order() {
    let s = Server::start(&[]);
    let threads: Vec<_> = (0..6u32)
        .map(|t| {
            let path = s.unix.clone();
            std::thread::spawn(move || {
                let mut c = Sdk::connect(&path);
                // 50 requests written back to back, then their answers.
                let mut ids = Vec::new();
                for i in 0..50u32 {
                    let key = format!("t{t}-{i}");
                    let v = value(100 + i as usize, t * 1000 + i);
                    ids.push((c.send(PUT, &put_payload(key.as_bytes(), &v, 0, 0)), PUT));
                    ids.push((c.send(GET, &get_payload(key.as_bytes(), None)), GET));
                }
                for (n, (id, ty)) in ids.into_iter().enumerate() {
                    let f = c.recv();
                    assert_eq!((f.request_id, f.ty), (id, ty + 1), "in order");
                    if ty == GET {
                        let i = (n / 2) as u32;
                        let v = value(100 + i as usize, t * 1000 + i);
                        assert_eq!(&f.payload[9..], v.as_slice());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread");
    }
    // A value over one 4 MiB chunk, streamed both ways, and read in
    // ranges across a chunk boundary.
    let mut c = Sdk::connect(&s.unix);
    let v = value(9 << 20, 99);
    assert_eq!(c.put(b"large", &v, 0, 0), 0);
    assert_eq!(c.get(b"large", None), (0, v.clone()));
    let off = (4 << 20) - 10;
    assert_eq!(
        c.get(b"large", Some((off as u64, 20))),
        (0, v[off..off + 20].to_vec())
    );
    assert_eq!(
        c.get(b"large", Some((off as u64, 0))),
        (0, v[off..].to_vec())
    );
    // A sparse value over several chunks, written unaligned.
    let total = v.len() as u64;
    assert_eq!(c.create_sparse(b"sp-large", total), 0);
    let cuts = [0, 3 << 20, (5 << 20) + 17, v.len()];
    for w in [(1, 2), (2, 3), (0, 1)] {
        let (a, b) = (cuts[w.0], cuts[w.1]);
        assert_eq!(c.write_range(b"sp-large", a as u64, &v[a..b]), 0);
    }
    assert_eq!(c.finalize(b"sp-large"), 0);
    let r = s
        .client()
        .request("GET", "/cache/sp-large", &[], b"")
        .unwrap();
    assert_eq!((r.status, r.body == v), (200, true));
}

#[test]
fn transports_share_one_store_and_its_counters() {
    let s = Server::start(&[]);
    let mut c = Sdk::connect(&s.unix);
    let mut h = s.client();
    let before = stats(&s);
    // Socket PUT, HTTP GET.
    assert_eq!(c.put(b"from-sdk", b"socket bytes", 0, 0), 0);
    let r = h.request("GET", "/cache/from-sdk", &[], b"").unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"socket bytes"[..]));
    assert_eq!(r.header("X-ElCache-Size"), Some("12"));
    // HTTP PUT, socket GET; HTTP DELETE, socket miss.
    let r = h
        .request("PUT", "/cache/from-http", &[], b"http bytes")
        .unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(c.get(b"from-http", None), (0, b"http bytes".to_vec()));
    let r = h.request("DELETE", "/cache/from-http", &[], b"").unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(c.get(b"from-http", None).0, 1);
    // Socket DELETE, HTTP miss.
    assert_eq!(c.delete(b"from-sdk"), 0);
    let r = h.request("GET", "/cache/from-sdk", &[], b"").unwrap();
    assert_eq!(r.status, 404);
    // One sparse value through both: created on the socket, written and
    // inspected over HTTP, finalized on the socket, read over HTTP.
    assert_eq!(c.create_sparse(b"both", 8), 0);
    let r = h
        .request("POST", "/sparse/both", &[("X-ElCache-Size", "8")], b"")
        .unwrap();
    assert_eq!(r.status, 409, "the socket's staging entry is HTTP's");
    let r = h
        .request(
            "PATCH",
            "/sparse/both",
            &[("Content-Range", "bytes 0-3/8")],
            b"abcd",
        )
        .unwrap();
    assert_eq!(r.status, 202);
    assert_eq!(r.header("X-ElCache-Completion"), Some("50.000000%"));
    assert_eq!(c.finalize(b"both"), 2);
    assert_eq!(c.write_range(b"both", 4, b"efgh"), 0);
    let r = h.request("GET", "/sparse/both", &[], b"").unwrap();
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(j["complete"], true);
    assert_eq!(c.finalize(b"both"), 0);
    let r = h.request("GET", "/cache/both", &[], b"").unwrap();
    assert_eq!(r.body, b"abcdefgh");
    // Socket traffic counts in /stats: on the socket a PUT, a finalize
    // (a store), 2 GETs (1 hit, 1 miss); over HTTP a PUT and 3 GETs (2
    // hits, 1 miss).
    let after = stats(&s);
    let d = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(d("hits"), 3);
    assert_eq!(d("misses"), 2);
    assert_eq!(d("bytes_written"), 12 + 10 + 8);
    assert_eq!(d("bytes_read"), 12 + 10 + 8);
}

#[test]
fn socket_file_handling() {
    let dir = common::TempDir::new("sdk-path");
    std::fs::create_dir_all(&dir.0).unwrap();
    // A stale socket file (its listener gone) is replaced.
    let stale = dir.0.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let bin = common::example_bin("cache");
    let mut child = Command::new(&bin)
        .args(["--bind", "127.0.0.1", "-p", "0", "-m", "16", "-u"])
        .arg(&stale)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut served = false;
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(s) = UnixStream::connect(&stale) {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut c = Sdk { s, next_id: 0 };
            assert_eq!(c.put(b"k", b"v", 0, 0), 0);
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A live socket is not taken over; a non-socket file is not removed.
    let plain = dir.0.join("plain");
    std::fs::write(&plain, b"keep me").unwrap();
    for (path, why) in [(&stale, "already"), (&plain, "not a socket")] {
        let out = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "-p", "0", "-m", "16", "-u"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{why}: {err}");
    }
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
    let _ = child.kill();
    let _ = child.wait();
    assert!(served, "the server took over the stale socket");
}

/// Compiles `tests/c/elcache_sdk_client.c` with `cc` (or
/// `$CACHE_TEST_CC`); `None` (after saying why) where no C compiler runs
/// and `CI` is unset.
fn build_c_client(out: &Path) -> Option<std::path::PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/elcache_sdk_client.c");
    let bin = out.join("elcache_sdk_client");
    let cc = std::env::var("CACHE_TEST_CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output();
    match built {
        Ok(o) if o.status.success() => Some(bin),
        Ok(o) => panic!(
            "{cc} failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and no C compiler runs ({cc}: {e})"
            );
            eprintln!("skipped: no C compiler ({cc}: {e}); CI unset");
            None
        }
    }
}

#[test]
fn c_client_speaks_every_message_type() {
    let dir = common::TempDir::new("sdk-c");
    std::fs::create_dir_all(&dir.0).unwrap();
    let Some(bin) = build_c_client(&dir.0) else {
        return;
    };
    let s = Server::start(&["--max-body", "65536"]);
    let out = Command::new(&bin)
        .arg(&s.unix)
        .stdin(Stdio::null())
        .output()
        .expect("run the C client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "C client failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all checks passed"), "{text}");
    // What it stored is there for HTTP too.
    let r = s.client().request("GET", "/cache/c-key", &[], b"").unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"from C"[..]));
    let r = s
        .client()
        .request("GET", "/cache/c-sparse", &[], b"")
        .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]));
}
