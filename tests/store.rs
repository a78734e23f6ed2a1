//! End to end: the real `store serve` example binary over real TCP with
//! a temporary data directory, spoken to in RESP by a small client here
//! (and by `redis-cli` where it is installed).
//!
//! The binary is built once with `cargo build --example store` (the test
//! profile's). Servers run with three application workers
//! (`SHARED_NOTHING_APP_WORKERS=3`), so three shards, and commands really
//! cross from a connection's worker to other shards' workers even on a
//! small machine. Every wait is bounded: sockets have read timeouts and
//! loops have counts and deadlines.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

mod common;
use common::TempDir;
#[path = "common/loop_fs.rs"]
mod loop_fs;

fn store_bin() -> PathBuf {
    common::example_bin("store")
}

fn serve_command(dir: &Path, extra: &[&str]) -> Command {
    serve_command_env(dir, extra, &[])
}

fn serve_command_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(store_bin());
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .args(extra)
        .env("SHARED_NOTHING_APP_WORKERS", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A running `store serve`; killed (SIGKILL) on drop.
struct Server {
    child: Child,
    addr: String,
    /// Its stderr so far.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        Server::start_env(dir, extra, &[])
    }

    fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = serve_command_env(dir, extra, env)
            .spawn()
            .expect("spawn store");
        let stderr = common::collect_stderr(&mut child);
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "store did not print its address; stderr:\n{}",
                stderr.lock().expect("lock")
            );
        };
        Server {
            child,
            addr,
            stderr,
        }
    }

    fn port(&self) -> String {
        self.addr.rsplit(':').next().unwrap_or("").to_owned()
    }

    fn client(&self) -> Client {
        Client::connect(&self.addr)
    }

    /// SIGKILL, like a crash.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
enum R {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Arr(Option<Vec<R>>),
}

fn ok() -> R {
    R::Simple("OK".into())
}

fn bulk(s: &str) -> R {
    R::Bulk(Some(s.as_bytes().to_vec()))
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn cmd(words: &str) -> Vec<u8> {
    let args: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
    encode(&args)
}

/// A blocking RESP client.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        Client {
            w: s.try_clone().expect("clone"),
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("write");
    }

    /// Runs one command (words split on spaces).
    fn run(&mut self, words: &str) -> R {
        self.send(&cmd(words));
        self.read()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).expect("read reply");
        assert!(n > 0, "connection closed while a reply was due");
        line.trim_end_matches("\r\n").to_owned()
    }

    fn read(&mut self) -> R {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => R::Simple(rest.to_owned()),
            "-" => R::Err(rest.to_owned()),
            ":" => R::Int(rest.parse().expect("integer reply")),
            "$" => {
                let len: i64 = rest.parse().expect("bulk length");
                if len < 0 {
                    return R::Bulk(None);
                }
                let mut buf = vec![0; len as usize + 2];
                self.r.read_exact(&mut buf).expect("bulk body");
                buf.truncate(len as usize);
                R::Bulk(Some(buf))
            }
            "*" => {
                let len: i64 = rest.parse().expect("array length");
                if len < 0 {
                    return R::Arr(None);
                }
                R::Arr(Some((0..len).map(|_| self.read()).collect()))
            }
            other => panic!("unexpected reply type {other:?} in {line:?}"),
        }
    }

    /// Whether the server closed the connection (EOF before any byte).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0))
    }
}

#[test]
fn string_commands_across_shards() {
    let dir = TempDir::new("strings");
    let server = Server::start(&dir.0, &[]);
    let mut c = server.client();
    assert_eq!(c.run("PING"), R::Simple("PONG".into()));
    for i in 0..30 {
        assert_eq!(c.run(&format!("SET key{i} value{i}")), ok());
    }
    for i in 0..30 {
        assert_eq!(c.run(&format!("GET key{i}")), bulk(&format!("value{i}")));
    }
    assert_eq!(c.run("GET missing"), R::Bulk(None));
    assert_eq!(c.run("EXISTS key1 key2 missing key1"), R::Int(3));
    assert_eq!(c.run("DEL key1 key2 missing"), R::Int(2));
    assert_eq!(c.run("EXISTS key1 key2"), R::Int(0));
    assert_eq!(c.run("MSET a 1 b 2 c 3 d 4 e 5 f 6"), ok());
    assert_eq!(
        c.run("MGET a b missing c d e f"),
        R::Arr(Some(vec![
            bulk("1"),
            bulk("2"),
            R::Bulk(None),
            bulk("3"),
            bulk("4"),
            bulk("5"),
            bulk("6"),
        ]))
    );
    assert_eq!(c.run("DBSIZE"), R::Int(28 + 6));
    // INFO sums the shards' keyspaces.
    let R::Bulk(Some(info)) = c.run("INFO keyspace") else {
        panic!("INFO reply");
    };
    let info = String::from_utf8(info).expect("utf-8");
    assert!(info.contains("db0:keys=34,expires=0"), "{info}");
    assert_eq!(c.run("INCR counter"), R::Int(1));
    assert_eq!(c.run("INCRBY counter 41"), R::Int(42));
    assert_eq!(c.run("DECR counter"), R::Int(41));
    assert_eq!(
        c.run("INCR a0b"),
        R::Int(1),
        "a fresh key on some shard starts at 0"
    );
    assert_eq!(
        c.run("INCR key0"),
        R::Err("ERR value is not an integer or out of range".into())
    );
    assert_eq!(
        c.run("NOSUCH x y"),
        R::Err("ERR unknown command 'NOSUCH', with args beginning with: 'x' 'y' ".into())
    );
    assert_eq!(c.run("FLUSHDB"), ok());
    assert_eq!(c.run("DBSIZE"), R::Int(0));
    assert_eq!(c.run("GET key3"), R::Bulk(None));
}

#[test]
fn expire_ttl_and_select() {
    let dir = TempDir::new("expire");
    let server = Server::start(&dir.0, &[]);
    let mut c = server.client();
    assert_eq!(c.run("SET k v"), ok());
    assert_eq!(c.run("TTL k"), R::Int(-1));
    assert_eq!(c.run("EXPIRE k 100"), R::Int(1));
    assert_eq!(c.run("TTL k"), R::Int(100));
    assert_eq!(c.run("PERSIST k"), R::Int(1));
    assert_eq!(c.run("TTL k"), R::Int(-1));
    assert_eq!(c.run("SET short v PX 100"), ok());
    assert_eq!(c.run("GET short"), bulk("v"));
    thread::sleep(Duration::from_millis(300));
    assert_eq!(c.run("GET short"), R::Bulk(None));
    assert_eq!(c.run("TTL short"), R::Int(-2));
    assert_eq!(c.run("TTL never"), R::Int(-2));

    // Databases are isolated, and SELECT is per connection.
    assert_eq!(c.run("SELECT 3"), ok());
    assert_eq!(c.run("GET k"), R::Bulk(None));
    assert_eq!(c.run("SET k three"), ok());
    assert_eq!(c.run("MSET m1 x m2 y"), ok());
    assert_eq!(c.run("DBSIZE"), R::Int(3));
    let mut other = server.client();
    assert_eq!(other.run("GET k"), bulk("v"));
    assert_eq!(other.run("EXISTS m1 m2"), R::Int(0));
    assert_eq!(c.run("GET k"), bulk("three"));
    assert_eq!(c.run("SELECT 0"), ok());
    assert_eq!(c.run("GET k"), bulk("v"));
    assert_eq!(
        c.run("SELECT 16"),
        R::Err("ERR DB index is out of range".into())
    );
    // QUIT answers, then closes; what was pipelined after it is not run.
    let mut bytes = cmd("QUIT");
    bytes.extend(cmd("SET after-quit x"));
    c.send(&bytes);
    assert_eq!(c.read(), ok());
    assert!(c.closed());
    assert_eq!(other.run("EXISTS after-quit"), R::Int(0));
}

fn pipeline_1000(server: &Server) {
    let mut c = server.client();
    let mut bytes = Vec::new();
    for i in 0..500 {
        bytes.extend(cmd(&format!("SET p{i} v{i}")));
        bytes.extend(cmd(&format!("GET p{i}")));
    }
    c.send(&bytes);
    for i in 0..500 {
        assert_eq!(c.read(), ok(), "SET p{i}");
        assert_eq!(c.read(), bulk(&format!("v{i}")), "GET p{i}");
    }
    assert_eq!(c.run("DBSIZE"), R::Int(500));
}

#[test]
fn a_thousand_pipelined_commands_answer_in_order() {
    let dir = TempDir::new("pipeline");
    pipeline_1000(&Server::start(&dir.0, &[]));
}

/// The same through the dedicated network worker (the plan on this
/// machine may pick thread-per-core).
#[test]
fn pipelining_through_a_dedicated_network_worker() {
    let dir = TempDir::new("dedicated");
    let env = [("SHARED_NOTHING_NETWORK_MODE", "dedicated")];
    let server = Server::start_env(&dir.0, &["--sync", "never"], &env);
    pipeline_1000(&server);
    let mut c = server.client();
    assert_eq!(c.run("MSET x 1 y 2 z 3"), ok());
    assert_eq!(
        c.run("MGET z y x"),
        R::Arr(Some(vec![bulk("3"), bulk("2"), bulk("1")]))
    );
}

#[test]
fn limits_of_keys_and_values() {
    let dir = TempDir::new("limits");
    let server = Server::start(&dir.0, &["--max-bulk", "2048"]);
    let mut c = server.client();
    let big = "x".repeat(2000);
    assert_eq!(c.run(&format!("SET big {big}")), ok());
    assert_eq!(c.run("GET big"), bulk(&big));
    assert_eq!(
        c.run(&format!("APPEND big {}", "y".repeat(100))),
        R::Err("ERR string exceeds maximum allowed size (proto-max-bulk-len)".into())
    );
    let long_key = "k".repeat(1500);
    assert_eq!(
        c.run(&format!("SET {long_key} v")),
        R::Err("ERR key of 1500 bytes exceeds the 1024-byte bound".into())
    );
    // A bulk over --max-bulk is a protocol error: that connection closes.
    c.send(&cmd(&format!("SET k {}", "z".repeat(3000))));
    assert_eq!(
        c.read(),
        R::Err("ERR Protocol error: invalid bulk length".into())
    );
    assert!(c.closed());
    assert_eq!(server.client().run("STRLEN big"), R::Int(2000));
}

#[test]
fn malformed_resp_closes_only_that_connection() {
    let dir = TempDir::new("malformed");
    let server = Server::start(&dir.0, &[]);
    let mut good = server.client();
    assert_eq!(good.run("SET k v"), ok());
    let mut bad = server.client();
    // A command that is fine, then a bulk length that is not a number.
    let mut bytes = cmd("GET k");
    bytes.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$x\r\n");
    bad.send(&bytes);
    assert_eq!(bad.read(), bulk("v"));
    assert_eq!(
        bad.read(),
        R::Err("ERR Protocol error: invalid bulk length".into())
    );
    assert!(bad.closed(), "the bad connection is closed");
    assert_eq!(good.run("GET k"), bulk("v"));
    assert_eq!(server.client().run("GET k"), bulk("v"));
}

#[test]
fn scan_walks_every_shard() {
    let dir = TempDir::new("scan");
    let server = Server::start(&dir.0, &[]);
    let mut c = server.client();
    let mut want = BTreeSet::new();
    for i in 0..60 {
        assert_eq!(c.run(&format!("SET s{i} x")), ok());
        want.insert(format!("s{i}"));
    }
    let mut got = BTreeSet::new();
    let mut cursor = "0".to_owned();
    for _ in 0..1000 {
        let R::Arr(Some(items)) = c.run(&format!("SCAN {cursor} COUNT 7")) else {
            panic!("SCAN reply");
        };
        let [R::Bulk(Some(next)), R::Arr(Some(keys))] = items.as_slice() else {
            panic!("SCAN reply {items:?}");
        };
        for k in keys {
            let R::Bulk(Some(k)) = k else {
                panic!("key {k:?}")
            };
            got.insert(String::from_utf8(k.clone()).expect("utf-8"));
        }
        cursor = String::from_utf8(next.clone()).expect("utf-8");
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0", "the scan ends");
    assert_eq!(got, want);
}

/// SplitMix64: the crash test's kill points, reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The crash test's key `i` of round `round`.
fn crash_key(round: usize, i: usize) -> String {
    format!("c{round}-{i}")
}

/// Its value: 1 to 80 bytes of every byte value (CR, LF and NUL too), and
/// every 50th one 6000 bytes, past a leaf (an overflow chain).
fn crash_value(round: usize, i: usize) -> Vec<u8> {
    let mut rng = Rng(((round as u64) << 32) ^ i as u64);
    let len = if i % 50 == 49 {
        6000
    } else {
        1 + rng.below(80) as usize
    };
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Most SETs one crash round sends.
const CRASH_SETS: usize = 20_000;

/// Where a crash round kills the server: once `after` SETs are
/// acknowledged, `then` later.
#[derive(Clone, Copy, Debug)]
struct KillPoint {
    after: usize,
    then: Duration,
}

/// One crash round: a writer thread pipelines SETs (50 per write) and a
/// reader thread counts the `+OK`s, until `kill -9` at `at` (or after 20
/// s). Returns how many SETs were acknowledged (replies arrive in command
/// order, so they are the first ones).
fn set_until_killed(server: Server, round: usize, at: KillPoint) -> usize {
    let c = server.client();
    let mut w = c.w.try_clone().expect("clone");
    let writer = thread::spawn(move || {
        for chunk in 0..CRASH_SETS / 50 {
            let mut bytes = Vec::new();
            for i in chunk * 50..(chunk + 1) * 50 {
                let (key, value) = (crash_key(round, i), crash_value(round, i));
                bytes.extend(encode(&[b"SET", key.as_bytes(), &value]));
            }
            if w.write_all(&bytes).is_err() {
                return;
            }
        }
    });
    let mut r = c.r;
    let so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = so_far.clone();
    let reader = thread::spawn(move || {
        // Every reply is +OK; anything else fails the test.
        let mut got = Vec::new();
        let mut buf = [0u8; 64 << 10];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            count.store(got.len() / 5, std::sync::atomic::Ordering::Relaxed);
        }
        let whole = got.len() / 5;
        for (n, reply) in got.chunks(5).enumerate() {
            assert_eq!(
                reply,
                &b"+OK\r\n"[..reply.len()],
                "reply {n} of {whole} in round {round}"
            );
        }
        whole
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while so_far.load(std::sync::atomic::Ordering::Relaxed) < at.after
        && Instant::now() < deadline
        && !reader.is_finished()
    {
        thread::sleep(Duration::from_micros(200));
    }
    thread::sleep(at.then);
    server.kill();
    let acked = reader.join().expect("reader");
    let _ = writer.join();
    acked
}

/// Checks round `round`'s first `acked` keys read back byte for byte, and
/// that the next ones (sent, perhaps applied, never acknowledged) are
/// absent or whole; `sample` of the acked ones (all if `None`).
fn check_round(c: &mut Client, round: usize, acked: usize, sample: Option<(&mut Rng, usize)>) {
    let indices: Vec<usize> = match sample {
        Some((rng, n)) if acked > n => (0..n).map(|_| rng.below(acked as u64) as usize).collect(),
        _ => (0..acked).collect(),
    };
    let beyond: Vec<usize> = (acked..(acked + 200).min(CRASH_SETS)).collect();
    for group in indices.chunks(500).chain(beyond.chunks(500)) {
        let mut bytes = Vec::new();
        for &i in group {
            bytes.extend(encode(&[b"GET", crash_key(round, i).as_bytes()]));
        }
        c.send(&bytes);
        for &i in group {
            let got = c.read();
            let want = R::Bulk(Some(crash_value(round, i)));
            if i < acked {
                assert_eq!(got, want, "acknowledged key {}", crash_key(round, i));
            } else {
                assert!(
                    got == want || got == R::Bulk(None),
                    "unacknowledged key {} holds {got:?}",
                    crash_key(round, i)
                );
            }
        }
    }
}

/// `kill -9` at random points under pipelined SETs, 20 rounds (and a
/// final check of every key); each restart reads back every write the
/// previous round acknowledged, byte for byte, and a sample of the older
/// rounds'. Each round picks its kill point (after a random number of
/// acknowledged SETs, 0 to 18000 of 20000, then a random 0-3 ms, so the
/// kill lands mid-pipeline: in a round's apply, its sync, between the
/// two), its checkpoint cadence (so kills land in checkpoints too) and
/// where its group commits run (`--wal-io shard` or `storage`).
///
/// Soak mode: `STORE_SOAK=100 cargo test --test store kill_9` runs 100
/// rounds (any count from 20); `STORE_SEED=N` replays a failing run's
/// kill points (the seed is printed first).
#[test]
fn kill_9_at_random_points_loses_no_acknowledged_write() {
    let rounds = std::env::var("STORE_SOAK")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(20)
        .max(20);
    let seed = std::env::var("STORE_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("kill -9 test: {rounds} rounds, STORE_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = TempDir::new("kill9");
    let mut acked: Vec<usize> = Vec::new();
    for round in 0..rounds {
        let checkpoint = ["50", "700", "5000", "100000"][rng.below(4) as usize];
        let wal_io = ["shard", "storage"][rng.below(2) as usize];
        let server = Server::start(
            &dir.0,
            &["--checkpoint-writes", checkpoint, "--wal-io", wal_io],
        );
        let mut c = server.client();
        if let Some(&last) = acked.last() {
            check_round(&mut c, round - 1, last, None);
        }
        if round >= 2 {
            let older = rng.below(round as u64 - 1) as usize;
            check_round(&mut c, older, acked[older], Some((&mut rng, 100)));
        }
        drop(c);
        let at = KillPoint {
            after: rng.below(CRASH_SETS as u64 * 9 / 10) as usize,
            then: Duration::from_micros(rng.below(3000)),
        };
        let n = set_until_killed(server, round, at);
        eprintln!(
            "round {round}: checkpoint every {checkpoint}, WAL I/O on the {wal_io}, {at:?}: \
             {n} acknowledged"
        );
        acked.push(n);
    }
    let server = Server::start(&dir.0, &[]);
    let mut c = server.client();
    for (round, &n) in acked.iter().enumerate() {
        check_round(&mut c, round, n, None);
    }
    let total: usize = acked.iter().sum();
    assert!(
        total >= 1000,
        "only {total} SETs acknowledged in {rounds} rounds"
    );
}

#[test]
fn another_shard_count_is_refused_at_start() {
    let dir = TempDir::new("layout");
    let server = Server::start(&dir.0, &["--shards", "2"]);
    assert_eq!(server.client().run("SET k v"), ok());
    server.kill();
    let mut child = serve_command(&dir.0, &["--shards", "3"])
        .spawn()
        .expect("spawn store");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("store started with another shard count");
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(err.contains("--shards"), "stderr: {err}");
    // The recorded count still opens, with the data; so does no
    // --shards (the directory's count, not the worker count).
    let server = Server::start(&dir.0, &["--shards", "2"]);
    assert_eq!(server.client().run("GET k"), bulk("v"));
    server.kill();
    let server = Server::start(&dir.0, &[]);
    let mut c = server.client();
    assert_eq!(c.run("GET k"), bulk("v"));
    assert_eq!(c.run("DBSIZE"), R::Int(1));
}

fn redis_cli(port: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", port])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_cli_drives_the_server() {
    let found = Command::new("redis-cli")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        // CI installs it (`.ci/run`); elsewhere it is optional.
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-cli is missing in CI (.ci/run installs redis-tools)"
        );
        eprintln!("skipped: redis-cli is not installed");
        return;
    }
    let dir = TempDir::new("cli");
    let server = Server::start(&dir.0, &[]);
    let port = server.port();
    assert_eq!(redis_cli(&port, &["SET", "k", "v"]), "OK\n");
    assert_eq!(redis_cli(&port, &["GET", "k"]), "v\n");
    assert_eq!(
        redis_cli(&port, &["MSET", "a", "1", "b", "2", "c", "3"]),
        "OK\n"
    );
    let mut scanned: Vec<String> = redis_cli(&port, &["--scan"])
        .lines()
        .map(str::to_owned)
        .collect();
    scanned.sort();
    assert_eq!(scanned, ["a", "b", "c", "k"]);
    let matched = redis_cli(&port, &["--scan", "--pattern", "[ab]*"]);
    let mut matched: Vec<&str> = matched.lines().collect();
    matched.sort_unstable();
    assert_eq!(matched, ["a", "b"]);
    assert_eq!(redis_cli(&port, &["DBSIZE"]), "4\n");
}

#[test]
fn a_client_gone_mid_pipeline_leaves_the_server_serving() {
    let dir = TempDir::new("gone");
    let server = Server::start(&dir.0, &[]);
    for round in 0..3 {
        let mut c = server.client();
        let mut bytes = Vec::new();
        for i in 0..2000 {
            bytes.extend(cmd(&format!("SET g{round}-{i} x")));
            bytes.extend(cmd(&format!("MGET g{round}-{i} a b c")));
        }
        c.send(&bytes);
        // Gone before reading a reply: the replies have nowhere to go.
    }
    let mut c = server.client();
    assert_eq!(c.run("PING"), R::Simple("PONG".into()));
    assert_eq!(c.run("SET after x"), ok());
    assert_eq!(c.run("GET after"), bulk("x"));
}

#[test]
fn sync_never_still_reaches_the_disk_on_the_clock() {
    let dir = TempDir::new("never");
    let server = Server::start(&dir.0, &["--sync", "never"]);
    let mut c = server.client();
    assert_eq!(c.run("MSET n1 a n2 b n3 c"), ok());
    // Synced within 200 ms of the write (a tick after it).
    thread::sleep(Duration::from_millis(800));
    server.kill();
    let server = Server::start(&dir.0, &["--sync", "never"]);
    assert_eq!(
        server.client().run("MGET n1 n2 n3"),
        R::Arr(Some(vec![bulk("a"), bulk("b"), bulk("c")]))
    );
}

/// Runs `store serve` with `extra`, expecting it to exit by itself within
/// 30 s (refused at start); its status and stderr.
fn serve_until_exit(dir: &Path, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = serve_command(dir, extra).spawn().expect("spawn store");
    let stderr = common::collect_stderr(&mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "store serve {extra:?} kept running; stderr:\n{}",
                stderr.lock().expect("lock")
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The stderr thread ends at EOF, shortly after the exit, dropping its
    // handle on the text.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::sync::Arc::strong_count(&stderr) > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let text = stderr.lock().expect("lock").clone();
    (status, text)
}

#[test]
fn sync_interval_acknowledges_at_once_and_reaches_the_disk_within_it() {
    let dir = TempDir::new("interval");
    for bad in ["interval:0", "interval:", "interval:x", "sometimes"] {
        let (status, err) = serve_until_exit(&dir.0, &["--sync", bad]);
        assert_eq!(status.code(), Some(2), "--sync {bad}: {err}");
        assert!(err.contains("--sync"), "--sync {bad}: {err}");
    }
    let server = Server::start(&dir.0, &["--sync", "interval:50"]);
    let mut c = server.client();
    assert_eq!(c.run("MSET i1 a i2 b i3 c"), ok());
    assert_eq!(c.run("SET i4 d"), ok());
    assert_eq!(c.run("INCR n"), R::Int(1));
    assert_eq!(
        c.run("MGET i1 i2 i3 i4 n"),
        R::Arr(Some(vec![
            bulk("a"),
            bulk("b"),
            bulk("c"),
            bulk("d"),
            bulk("1")
        ]))
    );
    // Synced within 50 ms (and a tick) of the writes.
    thread::sleep(Duration::from_millis(500));
    server.kill();
    let server = Server::start(&dir.0, &["--sync", "interval:50"]);
    let mut c = server.client();
    assert_eq!(
        c.run("MGET i1 i2 i3 i4 n"),
        R::Arr(Some(vec![
            bulk("a"),
            bulk("b"),
            bulk("c"),
            bulk("d"),
            bulk("1")
        ]))
    );
    assert_eq!(c.run("DBSIZE"), R::Int(5));
}

/// The corruption test's value of `key`: unique in the files, so a test
/// can find the page (or WAL record) holding it.
fn marked_value(key: &str) -> String {
    format!("v{key}-{}", "x".repeat(60))
}

/// Pipelines `SET {prefix}{i}` for `i` in `0..n`, each acknowledged.
fn set_marked(c: &mut Client, prefix: &str, n: usize) {
    let mut bytes = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}{i}");
        bytes.extend(cmd(&format!("SET {key} {}", marked_value(&key))));
    }
    c.send(&bytes);
    for i in 0..n {
        assert_eq!(c.read(), ok(), "SET {prefix}{i}");
    }
}

/// Copies the store directory `from` into `to` (files and the WAL
/// directories, one level deep).
fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            for inner in std::fs::read_dir(entry.path()).expect("read dir") {
                let inner = inner.expect("entry");
                std::fs::copy(inner.path(), dest.join(inner.file_name())).expect("copy");
            }
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

/// The offset of the only occurrence of `needle` in `file`.
fn offset_of(file: &Path, needle: &[u8]) -> u64 {
    let bytes = std::fs::read(file).expect("read");
    let hits: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(at, _)| at)
        .collect();
    assert_eq!(hits.len(), 1, "{} holds {needle:?} once", file.display());
    hits[0] as u64
}

/// Flips one bit of the byte at `at` in `file`.
fn flip(file: &Path, at: u64) {
    let mut bytes = std::fs::read(file).expect("read");
    bytes[at as usize] ^= 0x10;
    std::fs::write(file, bytes).expect("write");
}

/// Waits (bounded) until the server's stderr holds `want`.
fn stderr_shows(server: &Server, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = server.stderr.lock().expect("lock").clone();
        if text.contains(want) || Instant::now() > deadline {
            return text;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A flipped byte in a data page, in either manifest slot, in both, and
/// in the WAL, each with the server stopped, then restarted: the damage is
/// named (file and page, slot or offset) on stderr and, for a read that
/// touches a bad page, in its `-ERR`; it is never served as data and never
/// a panic; what survives is exactly what the other slot and the WAL hold.
///
/// The store (one shard): keys `a*` (2000, then a checkpoint: slot 1),
/// `b*` (2000, a checkpoint: slot 0, the newest), `c*` (500, in the WAL
/// only; the WAL still holds every record, in one segment).
#[test]
fn corruption_is_named_never_served_and_recovered_around() {
    let base = TempDir::new("corrupt-base");
    let opts = ["--shards", "1", "--checkpoint-writes", "2000"];
    let server = Server::start(&base.0, &opts);
    let mut c = server.client();
    set_marked(&mut c, "a", 2000);
    set_marked(&mut c, "b", 2000);
    set_marked(&mut c, "c", 500);
    server.kill();
    let data = |dir: &Path| dir.join("shard-0.data");
    let wal = |dir: &Path| {
        let wal_dir = dir.join("shard-0.wal");
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal_dir)
            .expect("wal dir")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(segments.len(), 1, "one WAL segment: {segments:?}");
        segments.remove(0)
    };
    let all: Vec<String> = [("a", 2000), ("b", 2000), ("c", 500)]
        .iter()
        .flat_map(|&(p, n)| (0..n).map(move |i| format!("{p}{i}")))
        .collect();
    // GETs of `keys`, pipelined.
    let get_all = |c: &mut Client, keys: &[String]| -> Vec<R> {
        let mut out = Vec::new();
        for group in keys.chunks(500) {
            let mut bytes = Vec::new();
            for k in group {
                bytes.extend(cmd(&format!("GET {k}")));
            }
            c.send(&bytes);
            out.extend(group.iter().map(|_| c.read()));
        }
        out
    };

    // A data page: the leaf holding a500 (written once, at the first
    // checkpoint, and still in the newest tree).
    let dir = TempDir::new("corrupt-page");
    copy_store(&base.0, &dir.0);
    let at = offset_of(&data(&dir.0), marked_value("a500").as_bytes());
    flip(&data(&dir.0), at + 10);
    let page = format!("page {}", at / 4096);
    let server = Server::start(&dir.0, &opts);
    let mut c = server.client();
    let mut bad = 0;
    for (key, got) in all.iter().zip(get_all(&mut c, &all)) {
        match got {
            R::Bulk(Some(v)) => assert_eq!(v, marked_value(key).into_bytes(), "{key}"),
            R::Err(e) => {
                assert!(
                    e.contains("shard-0.data") && e.contains(&page),
                    "{key}: {e}"
                );
                assert!(key.starts_with('a'), "{key}: {e}");
                bad += 1;
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    // The leaf's keys, and only those (a leaf holds tens of these).
    assert!((1..200).contains(&bad), "{bad} keys unreadable");
    let R::Err(e) = c.run("SET a500 new") else {
        panic!("a write into the bad page succeeded");
    };
    assert!(e.contains(&page), "{e}");
    assert_eq!(c.run("GET b7"), bulk(&marked_value("b7")));
    let log = stderr_shows(&server, &page);
    assert!(
        log.contains("shard-0.data") && log.contains(&page),
        "stderr:\n{log}"
    );
    assert!(!log.contains("panicked"), "stderr:\n{log}");
    server.kill();

    // One manifest slot, then the other: the store opens from the other
    // slot, replays the WAL past it, and every key survives.
    for (slot, checkpoint) in [(0u64, 2), (1, 3)] {
        let dir = TempDir::new("corrupt-slot");
        copy_store(&base.0, &dir.0);
        flip(&data(&dir.0), slot * 4096 + 200);
        let server = Server::start(&dir.0, &opts);
        let want = format!(
            "manifest slot {slot} (bytes {}..{})",
            slot * 4096,
            (slot + 1) * 4096
        );
        let log = stderr_shows(&server, &want);
        assert!(
            log.contains(&want) && log.contains(&format!("opening at checkpoint {checkpoint}")),
            "slot {slot}; stderr:\n{log}"
        );
        let mut c = server.client();
        for (key, got) in all.iter().zip(get_all(&mut c, &all)) {
            assert_eq!(got, bulk(&marked_value(key)), "slot {slot} damaged: {key}");
        }
        server.kill();
    }

    // Both slots: refused at start, both named, no panic.
    let dir = TempDir::new("corrupt-slots");
    copy_store(&base.0, &dir.0);
    flip(&data(&dir.0), 200);
    flip(&data(&dir.0), 4096 + 200);
    let (status, err) = serve_until_exit(&dir.0, &opts);
    assert_eq!(status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains(
            "shard-0.data: no valid manifest (slot 0: bad checksum; slot 1: bad checksum)"
        ),
        "stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "stderr:\n{err}");

    // A page the WAL's replay needs (the last leaf, where c* go): the
    // store refuses to start, naming the file and the page (and not
    // blaming the command line).
    let dir = TempDir::new("corrupt-replay");
    copy_store(&base.0, &dir.0);
    let at = offset_of(&data(&dir.0), marked_value("b999").as_bytes());
    flip(&data(&dir.0), at + 10);
    let (status, err) = serve_until_exit(&dir.0, &opts);
    assert_eq!(status.code(), Some(1), "stderr:\n{err}");
    let page = format!("shard-0.data: page {}: bad checksum", at / 4096);
    assert!(err.contains(&page), "stderr:\n{err}");
    assert!(
        !err.contains("--shards") && !err.contains("panicked"),
        "stderr:\n{err}"
    );

    // The WAL: the record of c250. Recovery keeps the records before it
    // (a*, b* are in the checkpoint anyway, c0..c249 replayed) and cuts
    // there: c250 on are gone, named on stderr as damage (whole records
    // follow the cut, so acknowledged writes were lost); never a wrong
    // value.
    let dir = TempDir::new("corrupt-wal");
    copy_store(&base.0, &dir.0);
    let segment = wal(&dir.0);
    let at = offset_of(&segment, marked_value("c250").as_bytes());
    flip(&segment, at + 3);
    let server = Server::start(&dir.0, &opts);
    let log = stderr_shows(&server, "invalid WAL record");
    let name = segment.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        log.contains(name)
            && log.contains("invalid WAL record at offset")
            && log.contains("damage, not a torn tail"),
        "stderr:\n{log}"
    );
    let mut c = server.client();
    for (key, got) in all.iter().zip(get_all(&mut c, &all)) {
        let lost = key
            .strip_prefix('c')
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i >= 250);
        let want = if lost {
            R::Bulk(None)
        } else {
            bulk(&marked_value(key))
        };
        assert_eq!(got, want, "{key}");
    }
    // The cut is repaired: writes go on, and survive another restart.
    assert_eq!(c.run("SET after-cut yes"), ok());
    server.kill();
    let server = Server::start(&dir.0, &opts);
    let mut c = server.client();
    assert_eq!(c.run("GET after-cut"), bulk("yes"));
    assert_eq!(c.run("GET c249"), bulk(&marked_value("c249")));
    assert_eq!(c.run("GET c250"), R::Bulk(None));
}

/// A full disk under pipelined SETs (a small ext4 on a loop device; the
/// test skips, saying why, where it cannot mount one): writes fail with an
/// `-ERR` naming the WAL file and the cause, on a connection that stays
/// open; reads go on answering, acknowledged keys included; once space is
/// freed writes succeed again (also after a value's overflow chain met the
/// full disk in the data file); and after `kill -9` every key that got
/// `+OK` reads back.
#[test]
fn a_full_disk_fails_writes_with_errors_keeps_reads_and_loses_nothing() {
    full_disk("shard");
}

#[test]
fn a_full_disk_with_the_wal_on_the_storage_worker_loses_nothing() {
    full_disk("storage");
}

/// The disk-full test with `--wal-io wal_io`.
fn full_disk(wal_io: &str) {
    let Some(fs) = loop_fs::LoopFs::mount_or_skip("store-enospc", 32) else {
        return;
    };
    let dir = fs.dir.0.join("store");
    // Checkpoints every 200 writes: some meet the full disk too.
    let opts = ["--checkpoint-writes", "200", "--wal-io", wal_io];
    let server = Server::start(&dir, &opts);
    let mut c = server.client();
    set_marked(&mut c, "pre", 300);
    // Leave about 1 MiB, then SET 900-byte values (inline in a leaf, so
    // the WAL is what meets the full disk; checkpoints fail too, and are
    // retried) until writes fail for a while (bounded: 18 MiB at most,
    // more than the disk).
    let filler = fs.fill_leaving(1 << 20);
    let value = |i: usize| format!("{i}-{}", "y".repeat(900));
    let mut acked = Vec::new();
    let (mut failed, mut first_error) = (0usize, None);
    for chunk in 0..200 {
        let keys: Vec<String> = (chunk * 100..(chunk + 1) * 100)
            .map(|i| format!("full{i}"))
            .collect();
        let mut bytes = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            bytes.extend(cmd(&format!("SET {k} {}", value(chunk * 100 + i))));
        }
        c.send(&bytes);
        for (i, k) in keys.iter().enumerate() {
            match c.read() {
                R::Simple(s) if s == "OK" => acked.push((k.clone(), value(chunk * 100 + i))),
                R::Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
                other => panic!("SET {k}: {other:?}"),
            }
        }
        if failed >= 300 {
            break;
        }
    }
    let first_error = first_error.expect("the disk never filled");
    assert!(
        first_error.starts_with("ERR ") && first_error.contains("No space left on device"),
        "{first_error}"
    );
    assert!(
        first_error.contains(".wal"),
        "names the WAL file: {first_error}"
    );
    // The connection is open and reads answer, from every shard.
    assert_eq!(c.run("PING"), R::Simple("PONG".into()));
    for i in 0..300 {
        let key = format!("pre{i}");
        assert_eq!(
            c.run(&format!("GET {key}")),
            bulk(&marked_value(&key)),
            "{key}"
        );
    }
    for (k, v) in &acked {
        assert_eq!(c.run(&format!("GET {k}")), bulk(v), "{k}");
    }
    // A shard's count includes the writes whose sync failed, so it is held
    // and fails with them (D1); the reply comes either way.
    match c.run("DBSIZE") {
        R::Int(n) => assert!(n >= 300, "DBSIZE {n}"),
        R::Err(e) => assert!(e.contains("not durable"), "{e}"),
        other => panic!("DBSIZE: {other:?}"),
    }
    // Space back: writes succeed again (the failed WAL write is retried
    // whole first, W3, on the next round or tick: until then a write is
    // refused at once, as before).
    std::fs::remove_file(&filler).expect("remove the filler");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c.run("SET after-full yes") {
            R::Simple(s) if s == "OK" => break,
            R::Err(e) if Instant::now() < deadline && e.contains("WAL") => {
                thread::sleep(Duration::from_millis(20));
            }
            other => panic!("SET once space was freed: {other:?}"),
        }
    }
    acked.push(("after-full".into(), "yes".into()));
    thread::sleep(Duration::from_millis(100));
    for i in 0..30 {
        let key = format!("after-full{i}");
        assert_eq!(c.run(&format!("SET {key} yes")), ok(), "{key}");
        acked.push((key, "yes".into()));
    }
    // A value big enough for an overflow chain meets the full disk in the
    // data file (its pages are written at apply): -ERR, and the shard
    // still takes writes once space is back (it was fenced read-only).
    let filler = fs.fill_leaving(16 << 10);
    let big = "z".repeat(20_000);
    let mut big_errors = 0;
    for i in 0..9 {
        match c.run(&format!("SET big{i} {big}")) {
            R::Simple(s) if s == "OK" => acked.push((format!("big{i}"), big.clone())),
            R::Err(e) => {
                assert!(e.contains("No space left on device"), "{e}");
                big_errors += 1;
            }
            other => panic!("SET big{i}: {other:?}"),
        }
    }
    assert!(big_errors > 0, "the big values all fitted");
    std::fs::remove_file(&filler).expect("remove the filler");
    for i in 0..30 {
        let key = format!("after-big{i}");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match c.run(&format!("SET {key} yes")) {
                R::Simple(s) if s == "OK" => break,
                // The WAL's retry comes on the next round or tick.
                R::Err(e) if Instant::now() < deadline && e.contains("WAL") => {
                    thread::sleep(Duration::from_millis(20));
                }
                other => panic!("SET {key} once space was freed: {other:?}"),
            }
        }
        acked.push((key, "yes".into()));
    }
    let log = server.stderr.lock().expect("lock").clone();
    assert!(!log.contains("panicked"), "stderr:\n{log}");
    server.kill();
    let server = Server::start(&dir, &opts);
    let mut c = server.client();
    for i in 0..300 {
        let key = format!("pre{i}");
        assert_eq!(
            c.run(&format!("GET {key}")),
            bulk(&marked_value(&key)),
            "{key}"
        );
    }
    for (k, v) in &acked {
        assert_eq!(c.run(&format!("GET {k}")), bulk(v), "after restart: {k}");
    }
}
