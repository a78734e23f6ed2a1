//! End to end: the `cache` example's disk tier (`-d DIR`) and `/metrics`,
//! on the real binary over real TCP on 127.0.0.1 and real files: values
//! surviving `kill -9` and a restart byte for byte, eviction under both
//! tiers' limits, a damaged chunk file a miss (never wrong bytes),
//! `X-ElCache-No-Memory`, and `/metrics` parsed as requests happen.
//!
//! Servers run with three application workers, so each worker's share
//! of the tiers is a third. Every wait is bounded.

#[path = "common/cache_server.rs"]
#[allow(dead_code)]
mod cache_server;
#[path = "../examples/cache/client.rs"]
#[allow(dead_code)]
mod client;
mod common;

use cache_server::{Server, value};
use client::{Client, Response};
use common::TempDir;
use std::path::{Path, PathBuf};

fn put(c: &mut Client, key: &str, body: &[u8], headers: &[(&str, &str)]) -> Response {
    c.request("PUT", &format!("/cache/{key}"), headers, body)
        .expect("PUT")
}

fn get(c: &mut Client, key: &str) -> Response {
    c.request("GET", &format!("/cache/{key}"), &[], b"")
        .expect("GET")
}

fn json(c: &mut Client, path: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let r = c.request("GET", path, headers, b"").expect(path);
    assert_eq!(r.status, 200, "{path}");
    serde_json::from_slice(&r.body).expect("JSON")
}

fn metrics_json(c: &mut Client) -> serde_json::Value {
    json(c, "/metrics", &[("Accept", "application/json")])
}

/// A server with its disk tier in `dir`.
fn with_disk(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["-d", dir.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Every chunk file under `dir`.
fn chunk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for w in std::fs::read_dir(dir)
        .expect("disk dir")
        .map_while(Result::ok)
    {
        if let Ok(files) = std::fs::read_dir(w.path().join("chunks")) {
            out.extend(files.map_while(Result::ok).map(|f| f.path()));
        }
    }
    out
}

/// The sum over its labels of the Prometheus sample `name` (exact name,
/// any labels) in `text`.
fn sample_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let base = series.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn scrape(c: &mut Client) -> String {
    let r = c.request("GET", "/metrics", &[], b"").expect("metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.header("Content-Type")
    );
    String::from_utf8(r.body).expect("text")
}

#[test]
fn values_survive_kill_9_and_a_restart_byte_for_byte() {
    let dir = TempDir::new("cache-disk");
    let big = value(9 << 20, 1); // three chunks
    let small: Vec<Vec<u8>> = (0..20).map(|i| value(1000 + i, i as u32)).collect();
    {
        let s = with_disk(&dir.0, &[]);
        let mut c = s.client();
        assert_eq!(put(&mut c, "big", &big, &[]).status, 201);
        for (i, v) in small.iter().enumerate() {
            let ttl = if i == 0 { "3600" } else { "0" };
            let r = put(&mut c, &format!("s{i}"), v, &[("X-ElCache-TTL", ttl)]);
            assert_eq!(r.status, 201);
        }
        assert_eq!(
            put(&mut c, "gone", b"deleted before the crash", &[]).status,
            201
        );
        let r = c.request("DELETE", "/cache/gone", &[], b"").unwrap();
        assert_eq!(r.status, 204);
        assert_eq!(
            put(
                &mut c,
                "mem",
                b"memory only",
                &[("X-ElCache-No-Disk", "true")]
            )
            .status,
            201
        );
        assert_eq!(get(&mut c, "big").body, big);
        let st = json(&mut c, "/stats", &[]);
        assert!(st["capacity_bytes"].as_u64().unwrap() > 64 << 20, "{st}");
        // Dropped: killed with SIGKILL right after the responses.
    }
    let s = with_disk(&dir.0, &[]);
    let mut c = s.client();
    let r = get(&mut c, "big");
    assert_eq!(r.status, 200);
    assert!(r.body == big, "the 9 MiB value is byte-identical");
    for (i, v) in small.iter().enumerate() {
        let r = get(&mut c, &format!("s{i}"));
        assert_eq!((r.status, &r.body), (200, v), "s{i}");
    }
    assert_eq!(get(&mut c, "gone").status, 404, "a delete survives too");
    assert_eq!(
        get(&mut c, "mem").status,
        404,
        "No-Disk values are memory only"
    );
    let r = c.request("HEAD", "/cache/big", &[], b"").unwrap();
    assert_eq!(r.header("X-ElCache-Size"), Some(&*(9u64 << 20).to_string()));
    let m = metrics_json(&mut c);
    assert_eq!(m["disk_cache"]["entries"], 21, "{m}");
    assert_eq!(m["disk_cache"]["corrupt_chunks"], 0, "{m}");
    assert!(
        m["disk_cache"]["chunks_read"].as_u64().unwrap() >= 21,
        "{m}"
    );
    // A second restart (the compacted manifest is read back).
    drop(c);
    drop(s);
    let s = with_disk(&dir.0, &[]);
    let mut c = s.client();
    assert_eq!(get(&mut c, "s19").body, small[19]);
    assert!(get(&mut c, "big").body == big);
}

#[test]
fn both_tiers_evict_their_oldest_within_their_limits() {
    let dir = TempDir::new("cache-disk");
    // Per worker: memory 8/3 MiB (two 1 MiB values), disk 3 MiB (three).
    let s = with_disk(
        &dir.0,
        &["-m", "8", "--disk-bytes", &(9u64 << 20).to_string()],
    );
    let mut c = s.client();
    let n = 30;
    for i in 0..n {
        let r = put(&mut c, &format!("v{i}"), &value(1 << 20, i), &[]);
        assert_eq!(r.status, 201, "v{i}");
    }
    let m = metrics_json(&mut c);
    let disk = &m["disk_cache"];
    assert!(disk["size_bytes"].as_u64().unwrap() <= 9 << 20, "{m}");
    assert!(disk["evictions"].as_u64().unwrap() >= (n as u64) - 9, "{m}");
    assert!(m["memory_cache"]["evictions"].as_u64().unwrap() > 0, "{m}");
    assert!(
        m["memory_cache"]["size_bytes"].as_u64().unwrap() <= 8 << 20,
        "{m}"
    );
    assert_eq!(
        chunk_files(&dir.0).len() as u64,
        disk["chunks"].as_u64().unwrap(),
        "evicted chunk files are removed"
    );
    let mut served = 0;
    for i in 0..n {
        let r = get(&mut c, &format!("v{i}"));
        if r.status == 200 {
            assert!(r.body == value(1 << 20, i), "v{i} is its own bytes");
            served += 1;
        }
    }
    assert!(served <= 9, "at most what the disk tier holds: {served}");
    assert_eq!(get(&mut c, "v0").status, 404, "the oldest went");
    assert_eq!(
        get(&mut c, &format!("v{}", n - 1)).status,
        200,
        "the newest stays"
    );
    let st = json(&mut c, "/stats", &[]);
    assert!(st["evictions"].as_u64().unwrap() >= (n as u64) - 9, "{st}");
    let text = scrape(&mut c);
    assert!(sample_sum(&text, "elcache_disk_evictions_total") >= f64::from(n - 9));
    assert!(sample_sum(&text, "elcache_memory_evictions_total") > 0.0);
}

#[test]
fn a_damaged_chunk_file_is_a_miss_after_restart_never_wrong_bytes() {
    let dir = TempDir::new("cache-disk");
    let v = value(100_000, 5);
    let w = value(3000, 6);
    {
        let s = with_disk(&dir.0, &[]);
        let mut c = s.client();
        assert_eq!(put(&mut c, "victim", &v, &[]).status, 201);
        assert_eq!(put(&mut c, "other", &w, &[]).status, 201);
    }
    let files = chunk_files(&dir.0);
    let target = files
        .iter()
        .find(|f| std::fs::metadata(f).unwrap().len() == v.len() as u64)
        .expect("the victim's chunk file");
    let mut bytes = std::fs::read(target).unwrap();
    bytes[777] ^= 0x01;
    std::fs::write(target, &bytes).unwrap();
    let s = with_disk(&dir.0, &[]);
    let mut c = s.client();
    let r = get(&mut c, "victim");
    assert_eq!(r.status, 404, "a flipped byte is a miss");
    assert_eq!(get(&mut c, "victim").status, 404, "and stays one");
    assert_eq!(get(&mut c, "other").body, w, "the other entry is intact");
    let m = metrics_json(&mut c);
    assert_eq!(m["disk_cache"]["corrupt_chunks"], 1, "{m}");
    let text = scrape(&mut c);
    assert_eq!(sample_sum(&text, "elcache_disk_corrupt_chunks_total"), 1.0);
    // A file cut short is dropped at start, before any read.
    drop(c);
    drop(s);
    let other = chunk_files(&dir.0);
    assert_eq!(other.len(), 1, "the damaged file was removed");
    let f = &other[0];
    std::fs::write(f, &std::fs::read(f).unwrap()[..100]).unwrap();
    let s = with_disk(&dir.0, &[]);
    let mut c = s.client();
    assert_eq!(get(&mut c, "other").status, 404);
    assert_eq!(metrics_json(&mut c)["disk_cache"]["corrupt_chunks"], 1);
}

#[test]
fn no_memory_puts_go_to_disk_only_and_reads_refill_memory() {
    let dir = TempDir::new("cache-disk");
    let s = with_disk(&dir.0, &[]);
    let mut c = s.client();
    let v = value(5000, 9);
    let r = put(&mut c, "cold", &v, &[("X-ElCache-No-Memory", "true")]);
    assert_eq!(r.status, 201);
    let m = metrics_json(&mut c);
    assert_eq!(m["memory_cache"]["size_bytes"], 0, "{m}");
    assert_eq!(m["disk_cache"]["size_bytes"], 5000, "{m}");
    assert_eq!(chunk_files(&dir.0).len(), 1);
    let r = get(&mut c, "cold");
    assert_eq!((r.status, &r.body), (200, &v));
    let m = metrics_json(&mut c);
    assert_eq!(m["disk_cache"]["hits"], 1, "{m}");
    assert_eq!(m["memory_cache"]["misses"], 1, "{m}");
    assert_eq!(m["memory_cache"]["size_bytes"], 5000, "refilled: {m}");
    assert_eq!(get(&mut c, "cold").body, v);
    assert_eq!(metrics_json(&mut c)["memory_cache"]["hits"], 1);
    let both = [
        ("X-ElCache-No-Memory", "true"),
        ("X-ElCache-No-Disk", "true"),
    ];
    assert_eq!(put(&mut c, "nowhere", b"x", &both).status, 507);
    // Without a disk tier No-Memory has nowhere to go.
    let plain = Server::start(&[]);
    let mut p = plain.client();
    let r = put(&mut p, "m", b"v", &[("X-ElCache-No-Memory", "true")]);
    assert_eq!(r.status, 507);
}

#[test]
fn metrics_move_as_requests_happen() {
    let dir = TempDir::new("cache-disk");
    let s = with_disk(&dir.0, &[]);
    let mut c = s.client();
    let before = scrape(&mut c);
    assert!(
        before.contains("# TYPE elcache_cache_gets counter"),
        "{before}"
    );
    assert!(before.contains("# TYPE elcache_get_latency_ms histogram"));
    assert!(
        before.contains("shared_nothing_"),
        "the pool's own series share the registry"
    );
    for i in 0..6 {
        assert_eq!(
            put(&mut c, &format!("m{i}"), &value(100, i), &[]).status,
            201
        );
    }
    for i in 0..6 {
        assert_eq!(get(&mut c, &format!("m{i}")).status, 200);
    }
    assert_eq!(get(&mut c, "absent").status, 404);
    assert_eq!(
        c.request("DELETE", "/cache/m0", &[], b"").unwrap().status,
        204
    );
    let after = scrape(&mut c);
    let delta = |name: &str| sample_sum(&after, name) - sample_sum(&before, name);
    assert_eq!(delta("elcache_cache_gets_total"), 7.0);
    assert_eq!(delta("elcache_cache_puts_total"), 6.0);
    assert_eq!(delta("elcache_cache_deletes_total"), 1.0);
    assert_eq!(delta("elcache_bytes_written_total"), 600.0);
    assert_eq!(delta("elcache_bytes_read_total"), 600.0);
    assert_eq!(delta("elcache_chunks_written_total"), 6.0);
    // 6 memory hits; the absent key misses both tiers.
    assert_eq!(delta("elcache_cache_hits_total"), 6.0);
    assert_eq!(delta("elcache_cache_misses_total"), 2.0);
    assert_eq!(delta("elcache_get_latency_ms_count"), 7.0);
    assert_eq!(delta("elcache_put_latency_ms_count"), 6.0);
    assert_eq!(delta("elcache_delete_latency_ms_count"), 1.0);
    assert!(delta("elcache_http_requests_total") >= 14.0);
    assert_eq!(sample_sum(&after, "elcache_disk_cache_entries"), 5.0);
    assert_eq!(sample_sum(&after, "elcache_disk_cache_size_bytes"), 500.0);
    assert!(sample_sum(&after, "elcache_http_connections_active") >= 1.0);
    let m = metrics_json(&mut c);
    assert_eq!(m["cache"]["gets"], 7, "{m}");
    assert_eq!(m["cache"]["puts"], 6, "{m}");
    assert!(m["latency_ms"]["get_avg"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["http"]["errors"].as_u64().unwrap() >= 1, "the 404: {m}");
    // Standalone: one node, and no cluster traffic at all.
    let cl = &m["cluster"];
    assert_eq!(
        [
            &cl["nodes_total"],
            &cl["nodes_active"],
            &cl["messages_sent"],
            &cl["messages_received"]
        ],
        [1, 1, 0, 0],
        "{m}"
    );
    assert_eq!(sample_sum(&after, "elcache_cluster_nodes_total"), 1.0);
    assert_eq!(sample_sum(&after, "elcache_cluster_nodes_active"), 1.0);
    assert_eq!(
        sample_sum(&after, "elcache_cluster_messages_sent_total"),
        0.0
    );
    let st = json(&mut c, "/stats", &[]);
    assert_eq!(st["hits"], 6, "{st}");
    assert_eq!(st["misses"], 2, "{st}");
    // 5 entries in memory and on disk: counted in both, as ElCache does.
    assert_eq!(st["entry_count"], 10, "{st}");
    let r = c
        .request(
            "GET",
            "/metrics",
            &[("Accept", "application/openmetrics-text")],
            b"",
        )
        .unwrap();
    assert!(
        r.header("Content-Type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(String::from_utf8_lossy(&r.body).ends_with("# EOF\n"));
    assert_eq!(c.request("POST", "/metrics", &[], b"").unwrap().status, 405);
}
