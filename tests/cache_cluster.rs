//! End to end: the `cache` example's cluster mode, three real server
//! processes on 127.0.0.1, each with its own HTTP and cluster ports
//! (both port 0, read from the start-up line). A PUT through one node
//! is read through each; one node is killed with `kill -9` and every
//! key (replication 2) is read from the other two once the failure is
//! detected; the node is restarted, rejoins, and serves its keys again
//! (pushed back by the survivors), with `/cluster` showing three live
//! nodes; `X-ElCache-No-Cluster: true` keeps a PUT on its node.
//!
//! Every wait is bounded (deadlines below) and printed when it ends, so
//! the detection and recovery times show in the test's output.

#[path = "../examples/cache/client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use client::{Client, Response};
use common::{TempDir, collect_stderr, example_bin};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);
/// The most a cluster may take to form, detect a failure, or take a
/// node back.
const CONVERGE: Duration = Duration::from_secs(30);

/// A node: killed on drop.
struct Node {
    child: Child,
    http: SocketAddr,
    cluster: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl Node {
    /// Starts a node on any free ports, seeded by `seeds` (none: the
    /// first node, `--cluster`), with `cluster_port` 0 unless given.
    fn start(seeds: &[SocketAddr], cluster_port: u16) -> Node {
        let dir = TempDir::new("cluster");
        let mut cmd = Command::new(example_bin("cache"));
        cmd.args(["--bind", "127.0.0.1", "--port", "0", "-m", "32"])
            .arg("--cluster-port")
            .arg(cluster_port.to_string())
            .arg("-u")
            .arg(dir.0.join("elcache.sock"))
            .env("SHARED_NOTHING_APP_WORKERS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if seeds.is_empty() {
            cmd.arg("--cluster");
        }
        for s in seeds {
            cmd.arg("-s").arg(s.to_string());
        }
        let mut child = cmd.spawn().expect("spawn cache");
        let stderr = collect_stderr(&mut child);
        let out = child.stdout.take().expect("stdout");
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let text = stdout.clone();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let http = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let cluster = rest
                        .split("cluster port ")
                        .nth(1)
                        .and_then(|r| r.split([',', ' ']).next())
                        .unwrap_or("")
                        .to_owned();
                    let _ = tx.send((http, cluster));
                }
                let mut t = text.lock().expect("stdout lock");
                t.push_str(&line);
                t.push('\n');
            }
        });
        let (http, cluster) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no start-up line; stderr:\n{}",
                    stderr.lock().expect("lock")
                );
            }
        };
        Node {
            child,
            http: http.parse().expect("HTTP address"),
            cluster: cluster.parse().expect("cluster address"),
            stdout,
            stderr,
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        Client::connect(self.http, TIMEOUT).expect("connect")
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn cluster(&self) -> serde_json::Value {
        let r = self
            .client()
            .request("GET", "/cluster", &[], b"")
            .expect("/cluster");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).expect("JSON")
    }

    fn logs(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().expect("lock"),
            self.stderr.lock().expect("lock")
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn put(c: &mut Client, key: &str, body: &[u8], headers: &[(&str, &str)]) -> Response {
    c.request("PUT", &format!("/cache/{key}"), headers, body)
        .expect("PUT")
}

fn get(c: &mut Client, key: &str, headers: &[(&str, &str)]) -> Response {
    c.request("GET", &format!("/cache/{key}"), headers, b"")
        .expect("GET")
}

/// `n` pseudo-random bytes from `seed`.
fn value(n: usize, seed: u32) -> Vec<u8> {
    let mut x = 0x9E37_79B9u32 ^ seed.wrapping_mul(2_654_435_761);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Waits (bounded) until `ok` holds; returns how long it took.
fn wait_for(what: &str, nodes: &[&Node], mut ok: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < CONVERGE {
        if ok() {
            let took = t0.elapsed();
            println!("{what}: {} ms", took.as_millis());
            return took;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let logs: Vec<String> = nodes.iter().map(|n| n.logs()).collect();
    panic!("{what}: not within {CONVERGE:?}\n{}", logs.join("\n----\n"));
}

fn active(n: &Node) -> u64 {
    n.cluster()["active_nodes"].as_u64().unwrap_or(0)
}

/// How many of the three nodes hold `key` themselves (a GET with
/// `X-ElCache-No-Cluster: true` reads only the node asked).
fn holders(nodes: &[&Node], key: &str) -> usize {
    nodes
        .iter()
        .filter(|n| get(&mut n.client(), key, &[("X-ElCache-No-Cluster", "true")]).status == 200)
        .count()
}

const KEYS: u32 = 40;

fn key(i: u32) -> String {
    format!("k{i}")
}

/// A value for key `i`: a few small ones and some over a chunk, so a
/// forwarded PUT and GET span several frames.
fn val(i: u32) -> Vec<u8> {
    let n = match i % 10 {
        0 => 5 << 20,
        1 => 0,
        _ => 100 + (i as usize * 37) % 3000,
    };
    value(n, i)
}

#[test]
fn three_nodes_replicate_survive_a_kill_and_take_a_node_back() {
    let a = Node::start(&[], 0);
    let b = Node::start(&[a.cluster], 0);
    let mut c = Node::start(&[a.cluster], 0);
    wait_for("three nodes see each other", &[&a, &b, &c], || {
        [&a, &b, &c].iter().all(|n| active(n) == 3)
    });
    let report = a.cluster();
    assert_eq!(report["mode"], "cluster");
    assert_eq!(report["total_nodes"], 3);
    assert_eq!(report["nodes"].as_array().map(Vec::len), Some(3));
    for f in [
        "total_memory_capacity",
        "total_disk_capacity",
        "total_memory_used",
        "total_disk_used",
    ] {
        assert!(report[f].is_u64(), "{f}: {report}");
    }
    // /cluster/nodes answers the same body.
    let nodes = a
        .client()
        .request("GET", "/cluster/nodes", &[], b"")
        .expect("nodes");
    let nodes: serde_json::Value = serde_json::from_slice(&nodes.body).expect("JSON");
    assert_eq!(nodes["active_nodes"], 3);

    // Every key PUT through one node (round robin), then read through
    // each node.
    let all = [&a, &b, &c];
    for i in 0..KEYS {
        let r = put(&mut all[i as usize % 3].client(), &key(i), &val(i), &[]);
        assert_eq!(r.status, 201, "PUT {}", key(i));
    }
    for n in all {
        let mut cl = n.client();
        for i in 0..KEYS {
            let r = get(&mut cl, &key(i), &[]);
            assert_eq!(r.status, 200, "GET {} via {}", key(i), n.http);
            assert!(
                r.body == val(i),
                "GET {} via {}: wrong bytes",
                key(i),
                n.http
            );
        }
        // A range through a node that may not own the key.
        let r = cl
            .request("GET", "/cache/k2", &[("Range", "bytes=3-9")], b"")
            .expect("range");
        assert_eq!((r.status, r.body.as_slice()), (206, &val(2)[3..10]));
        let h = cl.request("HEAD", "/cache/k0", &[], b"").expect("HEAD");
        assert_eq!(h.status, 200);
    }
    // Replication 2: each key is held by exactly two nodes.
    for i in 0..KEYS {
        assert_eq!(holders(&all, &key(i)), 2, "{}", key(i));
    }
    // The capacities and usage add up over the nodes (usage is gossiped
    // once a second).
    wait_for("usage gossiped", &all, || {
        a.cluster()["total_memory_used"].as_u64().unwrap_or(0) > 0
    });
    let total = a.cluster()["total_memory_capacity"].as_u64().unwrap_or(0);
    assert_eq!(total, 3 * (32 << 20), "{}", a.cluster());

    // kill -9 one node: once the others have declared it down, every
    // key is still read from each of them.
    let killed_at = Instant::now();
    c.kill();
    wait_for("failure detected by both survivors", &[&a, &b], || {
        active(&a) == 2 && active(&b) == 2
    });
    let detected = killed_at.elapsed();
    let ms = a.cluster()["failure_detection_ms"].clone();
    println!(
        "kill -9 to detection: {} ms (nodes' own measure: {ms})",
        detected.as_millis()
    );
    for n in [&a, &b] {
        let mut cl = n.client();
        for i in 0..KEYS {
            let r = get(&mut cl, &key(i), &[]);
            assert_eq!(
                r.status,
                200,
                "GET {} via {} after the kill",
                key(i),
                n.http
            );
            assert!(
                r.body == val(i),
                "GET {} via {}: wrong bytes",
                key(i),
                n.http
            );
        }
    }
    println!(
        "kill -9 to every key served again: {} ms",
        killed_at.elapsed().as_millis()
    );
    // Writes go on with two nodes.
    let r = put(&mut a.client(), "after-kill", b"still here", &[]);
    assert_eq!(r.status, 201);

    // Restart it on the same cluster port: it rejoins, the survivors
    // push it what it owns, and it serves every key again.
    let port = c.cluster.port();
    drop(c);
    let c = Node::start(&[a.cluster, b.cluster], port);
    assert_eq!(c.cluster.port(), port);
    let all = [&a, &b, &c];
    wait_for("rejoined: three live nodes everywhere", &all, || {
        all.iter().all(|n| active(n) == 3)
    });
    let back = Instant::now();
    wait_for("rejoined node holds its keys again", &all, || {
        (0..KEYS).all(|i| holders(&all, &key(i)) >= 2)
    });
    println!("rejoin to re-replicated: {} ms", back.elapsed().as_millis());
    let mut cl = c.client();
    for i in 0..KEYS {
        let r = get(&mut cl, &key(i), &[]);
        assert_eq!(r.status, 200, "GET {} via the rejoined node", key(i));
        assert!(r.body == val(i), "GET {}: wrong bytes", key(i));
    }
    assert_eq!(get(&mut cl, "after-kill", &[]).body, b"still here");
    let report = c.cluster();
    assert_eq!(
        (
            report["active_nodes"].as_u64(),
            report["total_nodes"].as_u64()
        ),
        (Some(3), Some(3)),
        "{report}"
    );
    assert!(c.logs().contains("up"), "{}", c.logs());
}

#[test]
fn no_cluster_keeps_a_put_local() {
    let a = Node::start(&[], 0);
    let b = Node::start(&[a.cluster], 0);
    let c = Node::start(&[a.cluster], 0);
    let all = [&a, &b, &c];
    wait_for("three nodes see each other", &all, || {
        all.iter().all(|n| active(n) == 3)
    });
    let local = [("X-ElCache-No-Cluster", "true")];
    for i in 0..20 {
        let k = format!("local-{i}");
        let r = put(&mut b.client(), &k, b"only on b", &local);
        assert_eq!(r.status, 201);
        // Only b holds it.
        assert_eq!(get(&mut b.client(), &k, &local).status, 200);
        assert_eq!(get(&mut a.client(), &k, &local).status, 404, "{k} on a");
        assert_eq!(get(&mut c.client(), &k, &local).status, 404, "{k} on c");
        // A clustered PUT of the same kind of key lands on two nodes.
        let k2 = format!("shared-{i}");
        assert_eq!(put(&mut b.client(), &k2, b"on two", &[]).status, 201);
        assert_eq!(holders(&all, &k2), 2, "{k2}");
    }
    // A DELETE through the cluster removes both copies.
    assert_eq!(
        a.client()
            .request("DELETE", "/cache/shared-3", &[], b"")
            .expect("DELETE")
            .status,
        204
    );
    assert_eq!(holders(&all, "shared-3"), 0);
    assert_eq!(get(&mut c.client(), "shared-3", &[]).status, 404);
}
