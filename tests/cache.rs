//! End to end: the real `cache` example binary over real TCP on
//! 127.0.0.1, spoken to by the Rust client in `examples/cache/client.rs`
//! and by curl where it is installed.
//!
//! Servers run with three application workers
//! (`SHARED_NOTHING_APP_WORKERS=3`), so most keys are owned by a worker
//! other than the connection's and requests really cross workers as
//! messages. Every wait is bounded: sockets have timeouts, loops counts.

#[path = "common/cache_server.rs"]
#[allow(dead_code)]
mod cache_server;
#[path = "../examples/cache/client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use cache_server::{Server, value};
use client::{Client, Response};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

fn put(c: &mut Client, key: &str, body: &[u8]) -> Response {
    c.request("PUT", &format!("/cache/{key}"), &[], body)
        .expect("PUT")
}

fn get(c: &mut Client, key: &str, headers: &[(&str, &str)]) -> Response {
    c.request("GET", &format!("/cache/{key}"), headers, b"")
        .expect("GET")
}

#[test]
fn crud_headers_and_stats() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let r = put(&mut c, "greeting", b"Hello, World!");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("Content-Length"), Some("0"));
    let r = get(&mut c, "greeting", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Hello, World!");
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(r.header("X-ElCache-Hit"), Some("hit"));
    assert_eq!(r.header("X-ElCache-Size"), Some("13"));
    assert_eq!(r.header("X-ElCache-Chunks"), Some("1"));
    assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
    // Overwrite (POST too) answers 201, as ElCache does.
    let r = c.request("POST", "/cache/greeting", &[], b"bye").unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(get(&mut c, "greeting", &[]).body, b"bye");
    let r = c.request("HEAD", "/cache/greeting", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("3"));
    assert_eq!(r.header("X-ElCache-Size"), Some("3"));
    assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
    assert!(r.body.is_empty());
    let r = c.request("OPTIONS", "/cache/greeting", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Allow"),
        Some("GET, PUT, POST, DELETE, HEAD, OPTIONS")
    );
    let r = c.request("DELETE", "/cache/greeting", &[], b"").unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Content-Length"), None, "no Content-Length on 204");
    let r = c.request("DELETE", "/cache/greeting", &[], b"").unwrap();
    assert_eq!(r.status, 204, "DELETE is idempotent");
    let r = get(&mut c, "greeting", &[]);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (404, &b"Key not found\n"[..])
    );
    let r = c.request("HEAD", "/cache/greeting", &[], b"").unwrap();
    assert_eq!(r.status, 404);
    // The HEAD 404 has no body: the next response parses cleanly.
    let r = c.request("GET", "/health", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let health: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(health["status"], "healthy");
    let r = c.request("GET", "/cluster", &[], b"").unwrap();
    let cluster: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(cluster["mode"], "standalone");

    // Keys spread over the three workers; counts are summed over them.
    for i in 0..30 {
        assert_eq!(put(&mut c, &format!("k{i}"), b"0123456789").status, 201);
    }
    for i in 0..30 {
        assert_eq!(get(&mut c, &format!("k{i}"), &[]).status, 200);
    }
    for i in 0..5 {
        assert_eq!(get(&mut c, &format!("absent{i}"), &[]).status, 404);
    }
    let r = c.request("GET", "/stats", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let st: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    // Hits: 2 GETs of "greeting" and the 30; misses: 1 + 5.
    assert_eq!(st["hits"], 32, "{st}");
    assert_eq!(st["misses"], 6, "{st}");
    assert_eq!(st["entry_count"], 30, "{st}");
    assert_eq!(st["partial_hits"], 0);
    assert_eq!(st["bytes_written"], 13 + 3 + 300, "{st}");
    assert_eq!(st["bytes_read"], 13 + 3 + 300, "{st}");
    // 30 identical values: one 10-byte chunk per owner that holds any.
    let size = st["size_bytes"].as_u64().unwrap();
    assert!(size % 10 == 0 && (10..=30).contains(&size), "{st}");
    assert_eq!(st["capacity_bytes"], 3 * ((64 << 20) / 3), "{st}");
    let rate = st["hit_rate_percent"].as_f64().unwrap();
    assert!((rate - 32.0 * 100.0 / 38.0).abs() < 1e-9, "{rate}");
    assert_eq!(st["evictions"], 0, "64 MiB holds everything: {st}");
}

#[test]
fn ranges_follow_rfc_9110() {
    let s = Server::start(&[]);
    let mut c = s.client();
    put(&mut c, "r", b"Hello World");
    let ranged = |c: &mut Client, range: &str| get(c, "r", &[("Range", range)]);
    for (range, first, last) in [
        ("bytes=0-9", 0, 9),
        ("bytes=5-", 5, 10),
        ("bytes=-3", 8, 10),
        ("bytes=0-99", 0, 10),
        ("bytes=-20", 0, 10),
    ] {
        let r = ranged(&mut c, range);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.body, &b"Hello World"[first..=last], "{range}");
        let cr = format!("bytes {first}-{last}/11");
        assert_eq!(r.header("Content-Range"), Some(cr.as_str()), "{range}");
        assert_eq!(r.header("X-ElCache-Size"), Some("11"));
    }
    for range in ["bytes=20-30", "bytes=-0", "bytes=11-"] {
        let r = ranged(&mut c, range);
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("Content-Range"), Some("bytes */11"), "{range}");
    }
    for range in [
        "bytes=5-4",
        "bytes=7-2",
        "bytes=0-1,4-x",
        "items=0-1",
        "bytes",
        "bytes=-",
        "bytes=a-b",
    ] {
        let r = ranged(&mut c, range);
        assert_eq!(r.status, 200, "{range} is ignored");
        assert_eq!(r.body, b"Hello World");
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
    }
    // ?range=OFFSET-LENGTH wins over the header.
    let r = c
        .request("GET", "/cache/r?range=2-3", &[("Range", "bytes=0-0")], b"")
        .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (206, &b"llo"[..]));
    assert_eq!(r.header("Content-Range"), Some("bytes 2-4/11"));
    let r = c.request("GET", "/cache/r?range=2-0", &[], b"").unwrap();
    assert_eq!((r.status, r.body.as_slice()), (206, &b"llo World"[..]));
    let r = c.request("GET", "/cache/r?range=20-1", &[], b"").unwrap();
    assert_eq!(r.status, 416);
    let r = c.request("GET", "/cache/r?range=x-1", &[], b"").unwrap();
    assert_eq!(r.status, 400, "a bad number is 400, not 500");
    let r = c.request("GET", "/cache/r?range=5", &[], b"").unwrap();
    assert_eq!(r.status, 200, "no '-': ignored");
    // An empty value: 200 with no body, any range unsatisfiable.
    assert_eq!(put(&mut c, "empty", b"").status, 201);
    let r = get(&mut c, "empty", &[]);
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("X-ElCache-Chunks"), Some("0"));
    let r = get(&mut c, "empty", &[("Range", "bytes=0-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */0"));
}

/// A `multipart/byteranges` body (RFC 9110 section 14.6) cut into its
/// parts: each part's headers and bytes, the bytes taken by the length its
/// `Content-Range` names, and the framing checked exactly.
type Part = (Vec<(String, String)>, Vec<u8>);

fn multipart(body: &[u8], boundary: &str) -> Vec<Part> {
    let delim = format!("--{boundary}");
    let mut at = body.strip_prefix(b"\r\n").unwrap_or(body);
    let mut parts = Vec::new();
    loop {
        at = at
            .strip_prefix(delim.as_bytes())
            .unwrap_or_else(|| panic!("a delimiter at {:?}", &at[..at.len().min(40)]));
        if let Some(rest) = at.strip_prefix(b"--") {
            assert!(
                rest == b"\r\n" || rest.is_empty(),
                "nothing after the close"
            );
            return parts;
        }
        at = at.strip_prefix(b"\r\n").expect("CRLF after the delimiter");
        let end = at
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("part headers end");
        let headers: Vec<(String, String)> = std::str::from_utf8(&at[..end])
            .expect("ASCII headers")
            .split("\r\n")
            .map(|l| {
                let (n, v) = l.split_once(':').expect("a header");
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        at = &at[end + 4..];
        let cr = &headers
            .iter()
            .find(|(n, _)| n == "content-range")
            .expect("every part has a Content-Range")
            .1;
        let (first, last) = cr
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('/'))
            .and_then(|(r, _)| r.split_once('-'))
            .expect("bytes F-L/S");
        let len = last.parse::<usize>().unwrap() - first.parse::<usize>().unwrap() + 1;
        parts.push((headers, at[..len].to_vec()));
        at = at[len..]
            .strip_prefix(b"\r\n")
            .expect("CRLF before a delimiter");
    }
}

fn bytes_read(c: &mut Client) -> u64 {
    let r = c
        .request("GET", "/metrics", &[("Accept", "application/json")], b"")
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    m["cache"]["bytes_read"].as_u64().unwrap()
}

#[test]
fn several_ranges_are_multipart_byteranges() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let v = value(100, 7);
    assert_eq!(put(&mut c, "m", &v).status, 201);
    let check = |r: &Response, size: usize, want: &[(usize, usize)], v: &[u8]| {
        assert_eq!(r.status, 206);
        assert_eq!(r.header("Content-Range"), None, "only the parts carry one");
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
        let ct = r.header("Content-Type").expect("Content-Type");
        let boundary = ct
            .strip_prefix("multipart/byteranges; boundary=")
            .unwrap_or_else(|| panic!("{ct}"));
        assert!(
            !boundary.is_empty() && boundary.len() <= 70,
            "RFC 2046 length"
        );
        let parts = multipart(&r.body, boundary);
        assert_eq!(parts.len(), want.len());
        for ((headers, bytes), &(first, last)) in parts.iter().zip(want) {
            let h = |n: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(h("content-type"), Some("application/octet-stream"));
            assert_eq!(
                h("content-range"),
                Some(format!("bytes {first}-{last}/{size}").as_str())
            );
            assert!(bytes[..] == v[first..=last], "part {first}-{last}");
        }
    };
    let before = bytes_read(&mut c);
    let r = get(&mut c, "m", &[("Range", "bytes=0-9,20-29,-5")]);
    check(&r, 100, &[(0, 9), (20, 29), (95, 99)], &v);
    assert_eq!(
        bytes_read(&mut c) - before,
        25,
        "only the parts' bytes are read"
    );
    // Out of order: sent in ascending order; overlapping and touching
    // ranges coalesce; an unsatisfiable one is left out.
    let r = get(
        &mut c,
        "m",
        &[("Range", "bytes=50-59, 0-4,3-9,10-12, 300-")],
    );
    check(&r, 100, &[(0, 12), (50, 59)], &v);
    // Ranges that coalesce into one are an ordinary 206.
    for (range, cr, part) in [
        ("bytes=0-4,3-9", "bytes 0-9/100", &v[..10]),
        ("bytes=0-1,500-600", "bytes 0-1/100", &v[..2]),
        ("bytes=-200,5-6", "bytes 0-99/100", &v[..]),
    ] {
        let r = get(&mut c, "m", &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.header("Content-Range"), Some(cr), "{range}");
        assert!(r.body == part, "{range}");
    }
    // None satisfiable: 416 with the size.
    let r = get(&mut c, "m", &[("Range", "bytes=200-300,100-,-0")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */100"));
    // Invalid sets (any bad spec, another unit, over the bound of 32
    // ranges) are ignored: 200 and the whole value.
    let many = vec!["1-1"; 33].join(",");
    for range in [
        "bytes=0-1,x-2",
        "bytes=0-1,5-4",
        "lines=0-1,2-3",
        &format!("bytes={many}"),
    ] {
        let r = get(&mut c, "m", &[("Range", range)]);
        assert_eq!(r.status, 200, "{range}");
        assert!(r.body == v);
    }
    let r = get(
        &mut c,
        "m",
        &[("Range", &format!("bytes={}", vec!["1-1"; 32].join(",")))],
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (206, &v[1..2]),
        "32 coalesce to one"
    );
    // ?range= still wins over the header.
    let r = c
        .request(
            "GET",
            "/cache/m?range=2-3",
            &[("Range", "bytes=0-0,5-6")],
            b"",
        )
        .unwrap();
    assert_eq!(r.header("Content-Range"), Some("bytes 2-4/100"));
    // HEAD has no body (and ignores Range).
    let r = c
        .request("HEAD", "/cache/m", &[("Range", "bytes=0-1,5-6")], b"")
        .unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    // Parts in different chunks of a 9 MiB value, the connection still
    // usable after (the length was right).
    let big = value((9 << 20) + 3, 8);
    assert_eq!(put(&mut c, "mbig", &big).status, 201);
    let (a, b) = ((4 << 20) - 2, (8 << 20) + 10);
    let range = format!("bytes=10-20,{a}-{},{b}-", a + (1 << 20) + 5);
    let before = bytes_read(&mut c);
    let r = get(&mut c, "mbig", &[("Range", &range)]);
    let size = big.len();
    check(
        &r,
        size,
        &[(10, 20), (a, a + (1 << 20) + 5), (b, size - 1)],
        &big,
    );
    let want = 11 + (1 << 20) + 6 + (size - b) as u64;
    assert_eq!(bytes_read(&mut c) - before, want);
    assert!(
        get(&mut c, "m", &[]).body == v,
        "keep-alive after multipart"
    );
}

#[test]
fn large_values_chunked_bodies_and_continue() {
    let s = Server::start(&[]);
    let mut c = s.client();
    // 9 MiB + 5: three chunks, streamed in pieces through another worker.
    let v = value((9 << 20) + 5, 1);
    assert_eq!(put(&mut c, "big", &v).status, 201);
    let r = get(&mut c, "big", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-ElCache-Chunks"), Some("3"));
    assert!(r.body == v, "9 MiB value read back");
    let start = (4 << 20) - 7;
    let range = format!("bytes={start}-{}", start + (5 << 20));
    let r = get(&mut c, "big", &[("Range", &range)]);
    assert_eq!(r.status, 206);
    assert!(
        r.body == v[start..=start + (5 << 20)],
        "range across chunks"
    );
    // The same value under another key shares its chunks.
    assert_eq!(put(&mut c, "big2", &v).status, 201);
    let st: serde_json::Value =
        serde_json::from_slice(&c.request("GET", "/stats", &[], b"").unwrap().body).unwrap();
    let size = st["size_bytes"].as_u64().unwrap();
    let len = v.len() as u64;
    // Two owners may each hold a copy; one owner holds it once.
    assert!(size == len || size == 2 * len, "{size}");

    // Chunked upload with Expect: 100-continue, in pieces.
    let mut body = Vec::new();
    let payload = value(100_000, 2);
    for part in payload.chunks(7_000) {
        body.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    c.write_raw(
        b"PUT /cache/chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 100);
    c.write_raw(&body).unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 201);
    assert!(get(&mut c, "chunked", &[]).body == payload);
}

#[test]
fn ttl_flags_and_request_errors() {
    let s = Server::start(&["--max-body", "1000"]);
    let mut c = s.client();
    let r = c
        .request(
            "PUT",
            "/cache/t",
            &[("X-ElCache-TTL", "1"), ("X-ElCache-Flags", "7")],
            b"v",
        )
        .unwrap();
    assert_eq!(r.status, 201);
    let r = c.request("HEAD", "/cache/t", &[], b"").unwrap();
    assert_eq!((r.status, r.header("X-ElCache-Flags")), (200, Some("7")));
    let r = c
        .request("PUT", "/cache/zero", &[("X-ElCache-TTL", "0")], b"v")
        .unwrap();
    assert_eq!(r.status, 201);
    let mut expired = false;
    for _ in 0..100 {
        thread::sleep(Duration::from_millis(50));
        if c.request("HEAD", "/cache/t", &[], b"").unwrap().status == 404 {
            expired = true;
            break;
        }
    }
    assert!(expired, "HEAD respects the TTL");
    assert_eq!(get(&mut c, "t", &[]).status, 404);
    assert_eq!(get(&mut c, "zero", &[]).status, 200, "TTL 0: no expiry");
    for (name, value) in [
        ("X-ElCache-TTL", "soon"),
        ("X-ElCache-TTL", "-1"),
        ("X-ElCache-Flags", "x"),
    ] {
        let r = c
            .request("PUT", "/cache/bad", &[(name, value)], b"v")
            .unwrap();
        assert_eq!(r.status, 400, "{name}: {value}");
        c = s.client();
    }
    let long_key = "k".repeat(8193);
    let r = c
        .request("PUT", &format!("/cache/{long_key}"), &[], b"v")
        .unwrap();
    assert_eq!(r.status, 400);
    let mut c = s.client();
    let r = c.request("PATCH", "/cache/x", &[], b"").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(
        r.header("Allow"),
        Some("GET, PUT, POST, DELETE, HEAD, OPTIONS")
    );
    let r = c.request("DELETE", "/health", &[], b"").unwrap();
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, HEAD")));
    let r = c.request("GET", "/nowhere", &[], b"").unwrap();
    assert_eq!(r.status, 404);
    let r = c.request("GET", "/cache/", &[], b"").unwrap();
    assert_eq!(r.status, 404);
    let r = c.request("GET", "/cache/a/b", &[], b"").unwrap();
    assert_eq!(r.status, 404);
    // Over --max-body: 413 and the connection closes.
    let r = c.request("PUT", "/cache/huge", &[], &[b'x'; 1001]).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("Connection"), Some("close"));
    let mut c = s.client();
    let mut body = b"PUT /cache/huge HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    body.extend_from_slice(b"3e9\r\n");
    body.extend_from_slice(&[b'x'; 1001]);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    c.write_raw(&body).unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 413);
    let mut c = s.client();
    assert_eq!(get(&mut c, "huge", &[]).status, 404, "nothing stored");
    let r = c
        .request("PUT", "/cache/m", &[("X-ElCache-No-Memory", "true")], b"v")
        .unwrap();
    assert_eq!(r.status, 507);
}

#[test]
fn pipelining_and_malformed_requests_leave_others_alone() {
    let s = Server::start(&[]);
    let mut bystander = s.client();
    put(&mut bystander, "keep", b"kept");
    // Pipelined: ten requests in one write, answered in order.
    let mut c = s.client();
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend_from_slice(
            format!("PUT /cache/p{i} HTTP/1.1\r\nContent-Length: 2\r\n\r\nv{i}").as_bytes(),
        );
    }
    for i in 0..5 {
        batch.extend_from_slice(format!("GET /cache/p{i} HTTP/1.1\r\n\r\n").as_bytes());
    }
    c.write_raw(&batch).unwrap();
    for _ in 0..5 {
        assert_eq!(c.read_response(false).unwrap().status, 201);
    }
    for i in 0..5 {
        let r = c.read_response(false).unwrap();
        assert_eq!(r.body, format!("v{i}").as_bytes());
    }
    // Bad request line.
    let mut bad = s.client();
    bad.write_raw(b"THIS IS NOT HTTP\r\n\r\n").unwrap();
    let r = bad.read_response(false).unwrap();
    assert_eq!((r.status, r.header("Connection")), (400, Some("close")));
    assert!(bad.read_to_close().unwrap().is_empty(), "then closed");
    // Huge head.
    let mut huge = s.client();
    let mut head = b"GET /cache/keep HTTP/1.1\r\nX-Filler: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 64 << 10));
    let _ = huge.write_raw(&head);
    let r = huge.read_response(false).unwrap();
    assert_eq!(r.status, 431);
    // Truncated body: the peer stops sending half-way.
    let mut cut = s.client();
    cut.write_raw(b"PUT /cache/cut HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly some")
        .unwrap();
    cut.shutdown_write().unwrap();
    let r = cut.read_response(false).unwrap();
    assert_eq!(r.status, 400);
    // Bad chunked framing.
    let mut framing = s.client();
    framing
        .write_raw(b"PUT /cache/f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .unwrap();
    assert_eq!(framing.read_response(false).unwrap().status, 400);
    // HTTP/1.0 closes after the response.
    let mut old = s.client();
    old.write_raw(b"GET /cache/keep HTTP/1.0\r\n\r\n").unwrap();
    let r = old.read_response(false).unwrap();
    assert_eq!(r.body, b"kept");
    assert!(old.read_to_close().unwrap().is_empty());
    // The bystander's keep-alive connection is untouched.
    assert_eq!(get(&mut bystander, "keep", &[]).body, b"kept");
    assert_eq!(
        get(&mut bystander, "cut", &[]).status,
        404,
        "the cut PUT stored nothing"
    );
    assert_eq!(get(&mut bystander, "p4", &[]).body, b"v4");
}

/// The same requests through the dedicated network worker (the plan on
/// larger machines) instead of each worker's own backend.
#[test]
fn dedicated_network_worker() {
    let s = Server::start_env(&[], &[("SHARED_NOTHING_NETWORK_MODE", "dedicated")]);
    let mut clients: Vec<Client> = (0..4).map(|_| s.client()).collect();
    let v = value((4 << 20) + 3, 4);
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(put(c, &format!("d{i}"), &v).status, 201);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = get(c, &format!("d{i}"), &[]);
        assert!(r.status == 200 && r.body == v, "d{i}");
        let r = get(c, &format!("d{i}"), &[("Range", "bytes=-5")]);
        assert_eq!(r.body, &v[v.len() - 5..]);
    }
}

#[test]
fn curl_where_installed() {
    let have = Command::new("curl").arg("--version").output();
    if !have.is_ok_and(|o| o.status.success()) {
        eprintln!("curl is not installed: skipping the curl checks");
        return;
    }
    let s = Server::start(&[]);
    let base = format!("http://{}", s.addr);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(args)
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let key = format!("{base}/cache/mykey");
    curl(&["-X", "PUT", &key, "-d", "Hello, World!"]);
    assert_eq!(curl(&[&key]), b"Hello, World!");
    assert_eq!(curl(&["-H", "Range: bytes=0-4", &key]), b"Hello");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Range: bytes=50-60",
        &key,
    ]);
    assert_eq!(code, b"416");
    let head = curl(&["-I", &key]);
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.contains("x-elcache-size: 13"), "{head}");
    // A body large enough for curl to send Expect: 100-continue.
    let dir = common::TempDir::new("curl");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("body");
    let big = value(3 << 20, 9);
    std::fs::write(&file, &big).unwrap();
    let upload = format!("@{}", file.display());
    curl(&[
        "-X",
        "PUT",
        &format!("{base}/cache/file"),
        "--data-binary",
        &upload,
    ]);
    assert!(curl(&[&format!("{base}/cache/file")]) == big);
    curl(&[
        "-X",
        "PUT",
        &format!("{base}/cache/chunked"),
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &upload,
    ]);
    assert!(curl(&[&format!("{base}/cache/chunked")]) == big);
    curl(&["-X", "DELETE", &key]);
    let code = curl(&["-o", "/dev/null", "-w", "%{http_code}", &key]);
    assert_eq!(code, b"404");
    let stats: serde_json::Value =
        serde_json::from_slice(&curl(&[&format!("{base}/stats")])).unwrap();
    assert!(stats["hits"].as_u64().unwrap() >= 4);
}

#[test]
fn command_line_errors_exit_2() {
    for args in [&["--nope"][..], &["-p", "x"], &["-m", "0"]] {
        let out = Command::new(common::example_bin("cache"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cache");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = Command::new(common::example_bin("cache"))
        .arg("-v")
        .output()
        .expect("run cache");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ElCache version 0.1.0"));
}

#[test]
fn sparse_routes_and_statuses() {
    let s = Server::start(&["--max-body", "100000"]);
    // A fresh connection each: a refused request with a body is answered
    // and its connection closed (its body is not read).
    let req = |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        s.client()
            .request(method, path, headers, body)
            .expect(method)
    };
    // Create: X-ElCache-Size required, numeric, above 0, within the limit.
    for size in [None, Some("0"), Some("ten"), Some("-1")] {
        let h: Vec<(&str, &str)> = size.map(|v| ("X-ElCache-Size", v)).into_iter().collect();
        assert_eq!(req("POST", "/sparse/sp", &h, b"").status, 400, "{size:?}");
    }
    let r = req("POST", "/sparse/sp", &[("X-ElCache-Size", "100001")], b"");
    assert_eq!(r.status, 413);
    let r = req("POST", "/sparse/sp", &[("X-ElCache-Size", "10")], b"");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("X-ElCache-Size"), Some("10"));
    assert_eq!(r.header("Content-Length"), Some("0"));
    let r = req("POST", "/sparse/sp", &[("X-ElCache-Size", "10")], b"");
    assert_eq!(r.status, 409, "exists");
    // Status.
    let r = req("GET", "/sparse/sp", &[], b"");
    assert_eq!(r.status, 200);
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(j["key"], "sp");
    assert_eq!(j["total_size"], 10);
    assert_eq!(j["completion_percent"].as_f64(), Some(0.0));
    assert_eq!(j["complete"], false);
    // Writes: Content-Range checked whole, ?offset= without it.
    let cr = |v: &'static str| [("Content-Range", v)];
    let r = req("PATCH", "/sparse/sp", &cr("bytes 0-4/10"), b"01234");
    assert_eq!(r.status, 202);
    assert_eq!(r.header("X-ElCache-Completion"), Some("50.000000%"));
    for (h, body, why) in [
        ("bytes 0-4/10", &b""[..], "empty body"),
        ("bytes a-b/10", b"xx", "non-numeric"),
        ("0-1/10", b"xx", "no unit"),
        ("bytes 0-4/10", b"xx", "length differs"),
        ("bytes 0-1/11", b"xx", "total differs"),
        ("bytes 9-10/10", b"xx", "past the end"),
    ] {
        let r = req("PATCH", "/sparse/sp", &[("Content-Range", h)], body);
        assert_eq!(r.status, 400, "{why}");
    }
    assert_eq!(req("PUT", "/sparse/sp?offset=x", &[], b"1").status, 400);
    assert_eq!(req("PATCH", "/sparse/nope", &[], b"1").status, 404);
    // Unreadable, and not finalizable, until complete.
    assert_eq!(req("GET", "/cache/sp", &[], b"").status, 404);
    let r = req("POST", "/sparse/sp/finalize", &[], b"");
    assert_eq!(r.status, 409);
    assert_eq!(r.header("X-ElCache-Completion"), Some("50.000000%"));
    // A bad TTL on finalize is refused before anything is lost.
    let r = req(
        "POST",
        "/sparse/sp/finalize",
        &[("X-ElCache-TTL", "soon")],
        b"",
    );
    assert_eq!(r.status, 400);
    // Overlapping writes, the last wins; PUT with ?offset= (chunked too).
    let r = req("PUT", "/sparse/sp?offset=4", &[], b"xxxxxx");
    assert_eq!(r.header("X-ElCache-Completion"), Some("100.000000%"));
    let mut raw = s.client();
    raw.write_raw(
        b"PATCH /sparse/sp HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n56\r\n4\r\n7890\r\n0\r\n\r\n",
    )
    .unwrap();
    let r = raw.read_response(false).unwrap();
    assert_eq!(r.status, 202, "no Content-Range, no ?offset: 0");
    let r = req("PATCH", "/sparse/sp", &cr("bytes 4-9/*"), b"456789");
    assert_eq!(r.status, 202);
    let r = req("PATCH", "/sparse/sp", &cr("bytes 0-"), b"0123");
    assert_eq!(r.status, 202);
    let r = req("GET", "/sparse/sp", &[], b"");
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (j["complete"].as_bool(), j["completion_percent"].as_f64()),
        (Some(true), Some(100.0))
    );
    let r = req(
        "POST",
        "/sparse/sp/finalize",
        &[("X-ElCache-Flags", "5")],
        b"",
    );
    assert_eq!(r.status, 201);
    let r = req("GET", "/cache/sp", &[], b"");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]));
    assert_eq!(r.header("X-ElCache-Flags"), Some("5"));
    assert_eq!(req("GET", "/sparse/sp", &[], b"").status, 404);
    assert_eq!(req("POST", "/sparse/sp/finalize", &[], b"").status, 404);
    // Finalize's TTL applies to the stored value.
    req("POST", "/sparse/t", &[("X-ElCache-Size", "1")], b"");
    req("PATCH", "/sparse/t", &[], b"t");
    let r = req("POST", "/sparse/t/finalize", &[("X-ElCache-TTL", "1")], b"");
    assert_eq!(r.status, 201);
    assert_eq!(req("GET", "/cache/t", &[], b"").status, 200);
    // DELETE: 204 always; the value is gone.
    req("POST", "/sparse/d", &[("X-ElCache-Size", "3")], b"");
    let r = req("DELETE", "/sparse/d", &[], b"");
    assert_eq!((r.status, r.header("Content-Length")), (204, None));
    assert_eq!(req("DELETE", "/sparse/d", &[], b"").status, 204);
    assert_eq!(req("GET", "/sparse/d", &[], b"").status, 404);
    // Wrong methods.
    let r = req("HEAD", "/sparse/x", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, POST, PUT, PATCH, DELETE"));
    let r = req("GET", "/sparse/x/finalize", &[], b"");
    assert_eq!((r.status, r.header("Allow")), (405, Some("POST")));
    assert_eq!(req("GET", "/sparse/", &[], b"").status, 404);
    assert_eq!(req("GET", "/sparse/a/b", &[], b"").status, 404);
    // The TTL of 1 s ran out in the meantime, or will shortly.
    let start = std::time::Instant::now();
    while req("GET", "/cache/t", &[], b"").status != 404 {
        assert!(start.elapsed() < Duration::from_secs(10), "finalize TTL");
        thread::sleep(Duration::from_millis(100));
    }
}
