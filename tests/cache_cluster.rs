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
    // The survivors' pushes are counted on their sync channel, each way.
    let sync = |name: &str| -> f64 {
        [&a, &b]
            .iter()
            .map(|n| sample_sum(&scrape(n), name, &["channel=\"sync\""]))
            .sum()
    };
    let pushed = sync("elcache_cluster_messages_sent_total");
    let acked = sync("elcache_cluster_messages_received_total");
    assert!(
        pushed > 0.0 && acked > 0.0,
        "sync frames {pushed}, answers {acked}"
    );
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

/// `GET /metrics` as JSON.
fn metrics_json(n: &Node) -> serde_json::Value {
    let r = n
        .client()
        .request("GET", "/metrics", &[("Accept", "application/json")], b"")
        .expect("/metrics");
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("JSON")
}

/// `GET /metrics` as Prometheus text.
fn scrape(n: &Node) -> String {
    let r = n
        .client()
        .request("GET", "/metrics", &[], b"")
        .expect("/metrics");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).expect("text")
}

/// The sum of the samples of series `name` whose labels contain every
/// one of `with` (`key="value"` pieces).
fn sample_sum(text: &str, name: &str, with: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (base, labels) = series.split_once('{').unwrap_or((series, ""));
            let ok = base == name && with.iter().all(|w| labels.contains(w));
            ok.then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A node's cluster counters, from its JSON `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counts {
    sent: u64,
    received: u64,
    forwarded: u64,
    fallovers: u64,
}

impl Counts {
    fn of(n: &Node) -> Counts {
        let m = metrics_json(n);
        let c = &m["cluster"];
        let f = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k}: {m}"));
        Counts {
            sent: f("messages_sent"),
            received: f("messages_received"),
            forwarded: f("forwarded_requests"),
            fallovers: f("fallover_reads"),
        }
    }

    fn minus(self, o: Counts) -> Counts {
        Counts {
            sent: self.sent - o.sent,
            received: self.received - o.received,
            forwarded: self.forwarded - o.forwarded,
            fallovers: self.fallovers - o.fallovers,
        }
    }
}

/// Lines in which the nodes reported a membership change (a node up or
/// down) so far.
fn membership_changes(nodes: &[&Node]) -> usize {
    nodes
        .iter()
        .map(|n| {
            let out = n.stdout.lock().expect("lock");
            out.lines().filter(|l| l.contains("cluster node ")).count()
        })
        .sum()
}

/// `(nodes_total, nodes_active)` of a node's JSON `/metrics`, and of its
/// Prometheus gauges.
fn node_counts(n: &Node) -> ((u64, u64), (f64, f64)) {
    let m = metrics_json(n);
    let json = (
        m["cluster"]["nodes_total"].as_u64().unwrap_or(0),
        m["cluster"]["nodes_active"].as_u64().unwrap_or(0),
    );
    let t = scrape(n);
    let prom = (
        sample_sum(&t, "elcache_cluster_nodes_total", &[]),
        sample_sum(&t, "elcache_cluster_nodes_active", &[]),
    );
    (json, prom)
}

#[test]
fn cluster_metrics_count_forwarded_traffic_and_the_membership() {
    let a = Node::start(&[], 0);
    let b = Node::start(&[a.cluster], 0);
    let c = Node::start(&[a.cluster], 0);
    let mut nodes = [a, b, c];
    let all: Vec<&Node> = nodes.iter().collect();
    wait_for("three nodes see each other", &all, || {
        all.iter().all(|n| active(n) == 3)
    });
    wait_for("every node counts three nodes, live", &all, || {
        all.iter().all(|n| node_counts(n) == ((3, 3), (3.0, 3.0)))
    });
    for n in &all {
        let t = scrape(n);
        for s in [
            "elcache_cluster_gossip_packets_sent_total",
            "elcache_cluster_gossip_packets_received_total",
        ] {
            assert!(sample_sum(&t, s, &[]) > 0.0, "{s} on {}:\n{t}", n.http);
        }
    }

    // A key, and the one node that does not hold it (replication 2).
    let k = "fwd";
    assert_eq!(
        put(&mut all[0].client(), k, &value(1000, 1), &[]).status,
        201
    );
    let local = [("X-ElCache-No-Cluster", "true")];
    let held: Vec<bool> = all
        .iter()
        .map(|n| get(&mut n.client(), k, &local).status == 200)
        .collect();
    assert_eq!(held.iter().filter(|h| **h).count(), 2, "{held:?}");
    let xi = held.iter().position(|h| !h).expect("a non-owner");
    let x = all[xi];
    let owners: Vec<&Node> = (0..3).filter(|i| *i != xi).map(|i| all[i]).collect();

    // PUTs and GETs through the node that owns nothing of the key: each
    // PUT is one frame to each owner and an answer back from each; each
    // GET (one frame) is answered by the first owner (one frame).
    const PUTS: u32 = 10;
    const GETS: u32 = 25;
    let changes = membership_changes(&all);
    let before_x = Counts::of(x);
    let before_o: Vec<Counts> = owners.iter().map(|n| Counts::of(n)).collect();
    let mut cl = x.client();
    for i in 0..PUTS {
        assert_eq!(put(&mut cl, k, &value(1000, 100 + i), &[]).status, 201);
    }
    for _ in 0..GETS {
        let r = get(&mut cl, k, &[]);
        assert_eq!(r.status, 200);
        assert!(
            r.body == value(1000, 100 + PUTS - 1),
            "the last PUT's bytes"
        );
    }
    let dx = Counts::of(x).minus(before_x);
    let od: Vec<Counts> = owners
        .iter()
        .zip(&before_o)
        .map(|(n, b)| Counts::of(n).minus(*b))
        .collect();
    let (puts, gets) = (u64::from(PUTS), u64::from(GETS));
    let frames = gets + 2 * puts;
    // Exact while the membership held still (no node flapped, so no sync
    // pushed anything and no request failed over).
    let stable = membership_changes(&all) == changes;
    let check = |what: &str, got: u64, want: u64| {
        if stable {
            assert_eq!(got, want, "{what}");
        } else {
            println!("the membership changed during the traffic: {what} checked as a lower bound");
            assert!(got >= want, "{what}: {got} < {want}");
        }
    };
    check("non-owner's messages sent", dx.sent, frames);
    check("non-owner's messages received", dx.received, frames);
    // A PUT is forwarded to each owner: two requests.
    check("non-owner's forwarded requests", dx.forwarded, frames);
    check(
        "owners' requests received",
        od[0].received + od[1].received,
        frames,
    );
    check("owners' answers sent", od[0].sent + od[1].sent, frames);
    for d in &od {
        assert!(d.received >= puts, "each owner gets every PUT: {od:?}");
        assert_eq!(d.forwarded, 0, "an owner serves its own: {od:?}");
    }
    if stable {
        assert_eq!(dx.fallovers, 0, "{dx:?}");
    }
    prometheus_agrees(x, &owners, puts, frames);

    // A key neither owner has any more: a GET through the non-owner asks
    // the first owner, falls over to the second on its miss, then 404.
    for o in &owners {
        let r = o
            .client()
            .request("DELETE", &format!("/cache/{k}"), &local, b"")
            .expect("DELETE");
        assert_eq!(r.status, 204);
    }
    let before_x = Counts::of(x);
    assert_eq!(get(&mut x.client(), k, &[]).status, 404);
    let dx = Counts::of(x).minus(before_x);
    assert!(
        dx.fallovers >= 1 && dx.forwarded >= 2 && dx.sent >= 2,
        "{dx:?}"
    );
    let tx = scrape(x);
    let miss = sample_sum(
        &tx,
        "elcache_cluster_fallover_reads_total",
        &["reason=\"miss\""],
    );
    assert!(miss >= 1.0, "{tx}");

    // kill -9 an owner: the others count three nodes, two of them live.
    let dead = (0..3).rfind(|i| *i != xi).expect("an owner");
    drop(all);
    nodes[dead].kill();
    let survivors: Vec<&Node> = (0..3).filter(|i| *i != dead).map(|i| &nodes[i]).collect();
    wait_for(
        "the survivors count two live nodes of three",
        &survivors,
        || {
            survivors
                .iter()
                .all(|n| node_counts(n) == ((3, 2), (3.0, 2.0)))
        },
    );
}

/// The Prometheus text of the non-owner `x` and of the `owners` after
/// the traffic: its sum is the JSON's, each owner's link carried at
/// least every PUT each way, and the owners served every frame.
fn prometheus_agrees(x: &Node, owners: &[&Node], puts: u64, frames: u64) {
    let tx = scrape(x);
    let jx = Counts::of(x);
    let sent = sample_sum(&tx, "elcache_cluster_messages_sent_total", &[]);
    assert_eq!(sent, jx.sent as f64, "{tx}");
    for o in owners {
        let node = format!("node=\"{}\"", o.cluster);
        let on = |name| sample_sum(&tx, name, &["channel=\"forward\"", &node]);
        let to = on("elcache_cluster_messages_sent_total");
        let back = on("elcache_cluster_messages_received_total");
        assert!(to >= puts as f64 && back >= puts as f64, "{node}:\n{tx}");
    }
    let op = |op: &str| {
        let l = format!("op=\"{op}\"");
        sample_sum(&tx, "elcache_cluster_forwarded_requests_total", &[&l])
    };
    assert!(op("get") >= (frames - 2 * puts) as f64, "{tx}");
    assert!(op("put") >= 2.0 * puts as f64, "{tx}");
    let served: f64 = owners
        .iter()
        .map(|o| {
            let t = scrape(o);
            sample_sum(
                &t,
                "elcache_cluster_messages_received_total",
                &["channel=\"serve\""],
            )
        })
        .sum();
    assert!(served >= frames as f64, "served {served}");
}
