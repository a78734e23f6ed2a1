//! `store bench`: the embedded API against redb and fjall (issue 12), 16 B
//! keys and 100 B values, every acknowledged batch on disk (ours `Always`,
//! redb `Durability::Immediate`, fjall `PersistMode::SyncData`), one cache
//! size for all three: a tenth of the dataset's raw bytes.
//!
//! Phases, each run `--rounds` times interleaved (ours, redb, fjall, ours,
//! ...) and reported as the median round: random point reads from a hot
//! set that fits the cache (a contiguous twentieth of the key space),
//! random point reads over the whole dataset (10x the cache), range scans
//! of `--scan-len` keys from random starts, then durable writes of new
//! keys in batches of 100 and of 1 from `--writers` threads for
//! `--write-secs` each. Point reads record their latency in an
//! HdrHistogram (p50, p99). Every read is checked against the value its
//! key was written with and every scan for order, so the figures are of
//! correct answers; `--smoke` runs the same on a few thousand keys, for
//! CI, and reports no timing verdicts.

mod engines;

use crate::embedded;
use engines::{Engine, Reader};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use thiserror::Error;

/// `store bench`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Keys in the dataset (the cache is a tenth of their raw bytes).
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1000..=100_000_000))]
    keys: u64,
    /// Interleaved rounds per phase.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Point reads per round and engine, for each read phase.
    #[arg(long, default_value_t = 200_000)]
    reads: u64,
    /// Keys per range scan.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    scan_len: u64,
    /// Keys scanned per round and engine.
    #[arg(long, default_value_t = 1_000_000)]
    scan_keys: u64,
    /// Writer threads in the write phases (each waits for its own batch).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    writers: u32,
    /// Seconds per round of each write phase.
    #[arg(long, default_value_t = 1.0)]
    write_secs: f64,
    /// Shards of our store.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    shards: u32,
    /// Where the three stores go (a fresh subdirectory, removed after);
    /// default: the system temp directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A few thousand operations per phase, answers checked, no timing
    /// verdicts (for CI).
    #[arg(long)]
    smoke: bool,
}

/// Why the bench stopped.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("ours: {0}")]
    Store(#[from] embedded::Error),
    #[error("{engine}: {msg}")]
    Peer { engine: &'static str, msg: String },
    #[error("{engine}: wrong answer: {what}")]
    Wrong { engine: &'static str, what: String },
    #[error("--write-secs must be positive and finite")]
    WriteSecs,
}

const VALUE_LEN: usize = 100;

/// Key `i`: 8 bytes of a mix of `i` (so keys are spread over the key
/// space in insertion order), then `i`, big endian.
fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&mix(i).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The value of key `i`.
fn value(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_LEN];
    v[..8].copy_from_slice(&i.to_le_bytes());
    for (j, b) in v[8..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(j as u8);
    }
    v
}

/// A small xorshift generator: the same sequence for every engine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One phase's measurements, per engine.
struct Phase {
    name: &'static str,
    unit: &'static str,
    rates: [Vec<f64>; 3],
    hist: Option<[Histogram<u64>; 3]>,
}

impl Phase {
    fn new(name: &'static str, unit: &'static str, latency: bool) -> Self {
        let h = || Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
        Phase {
            name,
            unit,
            rates: Default::default(),
            hist: latency.then(|| [h(), h(), h()]),
        }
    }

    fn median(&self, e: usize) -> f64 {
        let mut v = self.rates[e].clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
}

fn wrong(engine: usize, what: String) -> BenchError {
    BenchError::Wrong {
        engine: Engine::NAMES[engine],
        what,
    }
}

/// Point reads of `idx` keys; checks each value; returns ops/s.
fn reads(
    e: usize,
    r: &mut Reader<'_>,
    idx: &[u64],
    hist: &mut Histogram<u64>,
) -> Result<f64, BenchError> {
    let start = Instant::now();
    for &i in idx {
        let t = Instant::now();
        let got = r.get(&key(i))?;
        let ns = t.elapsed().as_nanos() as u64;
        let _ = hist.record(ns.max(1));
        if got.as_deref() != Some(&value(i)[..]) {
            return Err(wrong(
                e,
                format!("get of key {i}: {:?}", got.map(|v| v.len())),
            ));
        }
    }
    Ok(idx.len() as f64 / start.elapsed().as_secs_f64())
}

/// Scans from the keys of `starts`; checks order; returns keys/s.
fn scans(e: usize, r: &mut Reader<'_>, starts: &[u64], len: usize) -> Result<f64, BenchError> {
    let begin = Instant::now();
    let mut total = 0usize;
    for &s in starts {
        let from = key(s);
        let mut prev: Option<[u8; 16]> = None;
        let mut bad = None;
        let n = r.scan(&from, len, |k, v| {
            let ok = k.len() == 16
                && v.len() == VALUE_LEN
                && prev.is_none_or(|p| p[..] < *k)
                && *k >= from[..];
            if !ok && bad.is_none() {
                bad = Some(k.to_vec());
            }
            if let Ok(k) = <[u8; 16]>::try_from(k) {
                prev = Some(k);
            }
        })?;
        if let Some(k) = bad {
            return Err(wrong(
                e,
                format!("scan from {from:x?}: out of order at {k:x?}"),
            ));
        }
        total += n;
    }
    Ok(total as f64 / begin.elapsed().as_secs_f64())
}

/// Durable writes of new keys from `writers` threads, batches of `batch`,
/// for `secs`; returns ops/s and the next unused key index.
fn writes(
    engine: &Engine,
    next: u64,
    writers: u32,
    batch: usize,
    dur: Duration,
    cap: u64,
) -> Result<(f64, u64), BenchError> {
    let per = cap / u64::from(writers);
    let begin = Instant::now();
    let deadline = begin + dur;
    let results: Vec<Result<u64, BenchError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..u64::from(writers))
            .map(|t| {
                let mut w = engine.writer();
                let base = next + t * per;
                s.spawn(move || {
                    let mut done = 0u64;
                    while done + batch as u64 <= per && Instant::now() < deadline {
                        let kvs: Vec<_> = (0..batch as u64)
                            .map(|j| (key(base + done + j), value(base + done + j)))
                            .collect();
                        w.write(&kvs)?;
                        done += batch as u64;
                    }
                    Ok(done)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BenchError::Peer {
                        engine: "bench",
                        msg: "writer thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let secs = begin.elapsed().as_secs_f64();
    let mut ops = 0;
    for r in results {
        ops += r?;
    }
    Ok((ops as f64 / secs, next + per * u64::from(writers)))
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Runs the bench.
///
/// # Errors
/// An engine failed or answered wrongly.
pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let mut a = args.clone();
    if a.smoke {
        a.keys = 4000;
        a.rounds = 1;
        a.reads = 4000;
        a.scan_keys = 4000;
        a.scan_len = a.scan_len.min(100);
        a.writers = a.writers.min(4);
        a.write_secs = a.write_secs.min(0.2);
    }
    if !(a.write_secs > 0.0 && a.write_secs.is_finite()) {
        return Err(BenchError::WriteSecs);
    }
    let base = a
        .dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("store-bench-{}", std::process::id()));
    let result = run_in(&a, &base);
    let _ = std::fs::remove_dir_all(&base);
    result
}

fn run_in(a: &BenchArgs, base: &std::path::Path) -> Result<(), BenchError> {
    let raw = a.keys as usize * (16 + VALUE_LEN);
    let cache = (raw / 10).max(1 << 20);
    println!(
        "store bench: {} keys (16 B keys, {VALUE_LEN} B values, {:.1} MiB raw), cache {:.1} MiB each, \
         {} rounds, {} writer threads, our shards: {}{}",
        a.keys,
        raw as f64 / (1 << 20) as f64,
        cache as f64 / (1 << 20) as f64,
        a.rounds,
        a.writers,
        a.shards,
        if a.smoke { " (smoke)" } else { "" }
    );
    let mut engines = Vec::with_capacity(3);
    for (e, name) in Engine::NAMES.iter().enumerate() {
        let t = Instant::now();
        let mut engine = Engine::open(e, &base.join(name), cache, a.shards as usize)?;
        let mut w = engine.writer();
        let mut i = 0;
        while i < a.keys {
            let end = (i + 1000).min(a.keys);
            let kvs: Vec<_> = (i..end).map(|j| (key(j), value(j))).collect();
            w.write(&kvs)?;
            i = end;
        }
        engine.settle()?;
        println!("  loaded {name} in {:.2} s", t.elapsed().as_secs_f64());
        engines.push(engine);
    }

    // The hot set: keys in the first twentieth of the key space.
    let hot: Vec<u64> = (0..a.keys).filter(|&i| mix(i) < u64::MAX / 20).collect();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut cached = Phase::new("point reads, cached", "ops/s", true);
    let mut cold = Phase::new("point reads, 10x cache", "ops/s", true);
    let mut scan = Phase::new("range scans", "keys/s", false);
    let mut w100 = Phase::new("durable writes, batch 100", "ops/s", false);
    let mut w1 = Phase::new("durable writes, batch 1", "ops/s", false);
    let reads_n = a.reads as usize;
    for _ in 0..a.rounds {
        let hot_idx: Vec<u64> = (0..reads_n)
            .map(|_| hot[rng.below(hot.len() as u64) as usize])
            .collect();
        let all_idx: Vec<u64> = (0..reads_n).map(|_| rng.below(a.keys)).collect();
        let starts: Vec<u64> = (0..(a.scan_keys / a.scan_len).max(1))
            .map(|_| rng.below(a.keys))
            .collect();
        for (e, engine) in engines.iter().enumerate() {
            let mut r = engine.reader()?;
            // A pass over the hot set first, so the cached phase is cached.
            let warm: Vec<u64> = hot.iter().copied().take(reads_n).collect();
            let mut scratch = Histogram::new(2).expect("valid");
            reads(e, &mut r, &warm, &mut scratch)?;
            let h = cached.hist.as_mut().map(|h| &mut h[e]);
            if let Some(h) = h {
                cached.rates[e].push(reads(e, &mut r, &hot_idx, h)?);
            }
            if let Some(h) = cold.hist.as_mut().map(|h| &mut h[e]) {
                cold.rates[e].push(reads(e, &mut r, &all_idx, h)?);
            }
            scan.rates[e].push(scans(e, &mut r, &starts, a.scan_len as usize)?);
        }
    }
    let dur = Duration::from_secs_f64(a.write_secs);
    let mut next = [a.keys; 3];
    for (phase, batch, cap) in [
        (&mut w100, 100usize, 50_000_000u64),
        (&mut w1, 1, 5_000_000),
    ] {
        for _ in 0..a.rounds {
            for (e, engine) in engines.iter().enumerate() {
                let (rate, n) = writes(engine, next[e], a.writers, batch, dur, cap)?;
                phase.rates[e].push(rate);
                next[e] = n;
            }
        }
    }
    // The last writes read back (the first key of each writer's range).
    for (e, engine) in engines.iter().enumerate() {
        let mut r = engine.reader()?;
        let i = next[e] - 5_000_000;
        if r.get(&key(i))? != Some(value(i)) {
            return Err(wrong(e, format!("written key {i} not read back")));
        }
    }
    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>10}  {:>6}  {:>17} {:>17} {:>17}",
        "phase (median round)", "ours", "redb", "fjall", "ratio", "p50/p99 ours", "redb", "fjall"
    );
    for p in [&cached, &cold, &scan, &w100, &w1] {
        let m: Vec<f64> = (0..3).map(|e| p.median(e)).collect();
        let ratio = m[0] / m[1].max(m[2]);
        let lat = |e: usize| {
            p.hist.as_ref().map_or(String::new(), |h| {
                format!(
                    "{:.2}/{:.2} us",
                    h[e].value_at_quantile(0.5) as f64 / 1e3,
                    h[e].value_at_quantile(0.99) as f64 / 1e3
                )
            })
        };
        println!(
            "{:<28} {:>10} {:>10} {:>10}  {:>5.2}x  {:>17} {:>17} {:>17}  {}",
            p.name,
            fmt_rate(m[0]),
            fmt_rate(m[1]),
            fmt_rate(m[2]),
            ratio,
            lat(0),
            lat(1),
            lat(2),
            p.unit
        );
    }
    if a.smoke {
        println!("store bench --smoke: every answer checked, ok");
    }
    for engine in engines {
        engine.close()?;
    }
    Ok(())
}
