//! End to end: the `tokio_bridge` example's HTTP service over real TCP
//! sockets, driven by a real HTTP/1.1 client (the example's own, blocking,
//! one keep-alive connection per thread).
//!
//! The service runs in-process (its modules are included from
//! `examples/tokio_bridge/`), on a tokio runtime of its own, with its
//! counters on shared-nothing workers; the last test also runs the example
//! binary. Every wait is bounded: sockets have timeouts, loops have counts,
//! and a child process is killed after a deadline.
#![cfg(not(loom))]

#[allow(dead_code)]
#[path = "../examples/tokio_bridge/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../examples/tokio_bridge/counter.rs"]
mod counter;
#[allow(dead_code)]
#[path = "../examples/tokio_bridge/service.rs"]
mod service;

use client::{Answer, Client};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running service: dropping it ends the runtime, then the workers.
struct Service {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    group: shared_nothing::pool::WorkerGroup<counter::Counters>,
}

impl Service {
    fn start(workers: usize) -> Self {
        let group = counter::start(workers).expect("workers");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_io()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        runtime.spawn(service::serve(listener, service::Backend::workers(&group)));
        Self {
            addr,
            runtime: Some(runtime),
            group,
        }
    }

    fn client(&self) -> Client {
        Client::connect(self.addr).expect("connect")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        drop(self.runtime.take());
        let _ = self.group.stop_all();
    }
}

fn count(a: &Answer) -> u64 {
    assert_eq!(a.status, 200, "{a:?}");
    a.body.trim().parse().expect("a count")
}

/// Many keys over several concurrent connections: every increment lands
/// exactly once on its key's owner, each connection reads its own writes,
/// and the final counts are exact.
#[test]
fn many_keys_over_concurrent_connections_count_exactly() {
    const CONNECTIONS: u64 = 8;
    const REQUESTS: u64 = 300;
    const KEYS: u64 = 37;
    let service = Service::start(3);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let mut client = service.client();
            std::thread::spawn(move || {
                let mut added: HashMap<String, u64> = HashMap::new();
                let mut last_seen: HashMap<String, u64> = HashMap::new();
                for i in 0..REQUESTS {
                    let key = format!("key-{}", (c * 11 + i * 7) % KEYS);
                    let path = format!("/counter/{key}");
                    if i % 5 == 4 {
                        // A read sees at least this connection's own adds.
                        let n = count(&client.request("GET", &path, "").unwrap());
                        assert!(n >= last_seen.get(&key).copied().unwrap_or(0));
                        last_seen.insert(key, n);
                        continue;
                    }
                    let by = c + 1 + i % 3;
                    let body = if by == 1 {
                        String::new()
                    } else {
                        by.to_string()
                    };
                    let n = count(&client.request("POST", &path, &body).unwrap());
                    let before = last_seen.get(&key).copied().unwrap_or(0);
                    assert!(n >= before + by, "{key}: {n} after {before} + {by}");
                    last_seen.insert(key.clone(), n);
                    *added.entry(key).or_default() += by;
                }
                added
            })
        })
        .collect();
    let mut expected: HashMap<String, u64> = HashMap::new();
    for t in threads {
        for (k, v) in t.join().expect("client thread") {
            *expected.entry(k).or_default() += v;
        }
    }
    let mut reader = service.client();
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let got = count(
            &reader
                .request("GET", &format!("/counter/{key}"), "")
                .unwrap(),
        );
        assert_eq!(got, expected.get(&key).copied().unwrap_or(0), "{key}");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t0.elapsed()
    );
    // One message per request reached the workers (counted just after each
    // handler returns, so possibly just after its reply).
    let want = CONNECTIONS * REQUESTS + KEYS;
    let deadline = Instant::now() + Duration::from_secs(10);
    while service.group.stats().handled() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(service.group.stats().handled(), want);
}

/// Every wrong input gets a clear status (never a panic, never a hang),
/// leaves the counts alone, and the service keeps serving.
#[test]
fn every_wrong_input_gets_its_status() {
    let service = Service::start(2);
    let mut c = service.client();
    assert_eq!(count(&c.request("POST", "/counter/k", "7").unwrap()), 7);
    let longest = format!("/counter/{}", "k".repeat(service::MAX_KEY));
    assert_eq!(count(&c.request("GET", &longest, "").unwrap()), 0);
    let varied = "/counter/a.b_c~d-9";
    assert_eq!(count(&c.request("POST", varied, "").unwrap()), 1);
    let long_key = format!("/counter/{}", "k".repeat(service::MAX_KEY + 1));
    let cases: [(&str, &str, &str, u16); 16] = [
        ("GET", "/", "", 404),
        ("GET", "/counter", "", 404),
        ("GET", "/counter/k/extra", "", 404),
        ("POST", "/elsewhere/k", "", 404),
        ("PUT", "/counter/k", "1", 405),
        ("DELETE", "/counter/k", "", 405),
        ("PATCH", "/counter/k", "1", 405),
        ("GET", "/counter/", "", 400),
        ("GET", "/counter/sp%20ace", "", 400),
        ("GET", &long_key, "", 400),
        ("POST", "/counter/k", "seven", 400),
        ("POST", "/counter/k", "-1", 400),
        ("POST", "/counter/k", "1.5", 400),
        ("POST", "/counter/k", "18446744073709551616", 400),
        (
            "POST",
            "/counter/k",
            &"9".repeat(service::MAX_BODY + 1),
            413,
        ),
        ("POST", "/counter/k", "18446744073709551615", 409),
    ];
    for (method, path, body, status) in cases {
        let a = c.request(method, path, body).unwrap();
        assert_eq!(a.status, status, "{method} {path} {body:?}: {a:?}");
        assert!(!a.body.trim().is_empty(), "a reason is given");
        if status == 405 {
            assert_eq!(a.allow.as_deref(), Some("GET, POST"));
        }
    }
    // A body that is not UTF-8.
    let a = c
        .raw(b"POST /counter/k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n\xff\xfe")
        .unwrap();
    assert_eq!(a.status, 400);
    assert_eq!(count(&c.request("GET", "/counter/k", "").unwrap()), 7);
    // Bytes outside ASCII in the path: 400 (from hyper's parser or ours).
    let mut other = service.client();
    let a = other
        .raw("GET /counter/caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes())
        .unwrap();
    assert_eq!(a.status, 400);
    // A malformed request is answered 400 by hyper, on that connection only.
    let mut bad = service.client();
    assert_eq!(bad.raw(b"NOT HTTP AT ALL\r\n\r\n").unwrap().status, 400);
    assert_eq!(
        count(&service.client().request("GET", "/counter/k", "").unwrap()),
        7
    );
}

/// The example binary, built into the same target directory and profile.
fn example_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target dir");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "--example",
        "tokio_bridge",
        "--target-dir",
    ])
    .arg(target_dir)
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    assert!(cmd.status().expect("cargo build").success());
    let bin = profile_dir.join("examples").join("tokio_bridge");
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

/// Kills the child on drop, so a failing test leaves no server behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(t0.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The binary: its demo finishes and checks itself, `--addr` serves real
/// clients until killed, and the command line is clap's.
#[test]
fn the_example_binary_demo_and_server() {
    let bin = example_bin();
    let mut demo = Killed(
        Command::new(&bin)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the demo"),
    );
    let status = wait_exit(&mut demo.0, Duration::from_secs(60));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut demo.0.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "demo failed: {out}");
    assert!(out.starts_with("listening on http://127.0.0.1:"), "{out}");
    assert!(out.contains("all 6 counts right"), "{out}");

    let mut server = Killed(
        Command::new(&bin)
            .args(["--addr", "127.0.0.1:0", "--workers", "2"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the server"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let mut c = Client::connect(addr).unwrap();
    for _ in 0..3 {
        c.request("POST", "/counter/binary", "").unwrap();
    }
    assert_eq!(count(&c.request("GET", "/counter/binary", "").unwrap()), 3);
    drop(server);

    let help = Command::new(&bin).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success());
    for flag in ["--addr", "--workers", "--threads", "--inline"] {
        assert!(text.contains(flag), "--help lists {flag}: {text}");
    }
    let bad = Command::new(&bin).arg("--no-such-flag").output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap's usage error");
}
