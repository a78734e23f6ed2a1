//! Shared bench plumbing: pinning, interleaved comparisons with medians, and
//! latency percentiles from an HDR histogram.
//!
//! Single runs on a shared 2-core VM swing by 2-5x, so every comparison runs
//! the contenders interleaved (ours, peer, ours, peer, ...) for several
//! rounds and reports the median of each, and the ratio of medians to the
//! first contender (ours).

#![allow(dead_code)]

use hdrhistogram::Histogram;
use std::time::Duration;

/// The two CPUs the benches pin to: the first two this process may use (or
/// the same one twice on a single-CPU machine).
pub fn cpu_pair() -> (usize, usize) {
    let ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    match ids.as_slice() {
        [] => (0, 0),
        [a] => (*a, *a),
        [a, b, ..] => (*a, *b),
    }
}

pub fn pin(cpu: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
}

/// Rounds for interleaved comparisons (`SN_BENCH_ROUNDS`, default 7).
pub fn rounds() -> usize {
    std::env::var("SN_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
}

/// Whether to skip the interleaved tables (`SN_BENCH_SKIP_TABLES=1`), e.g.
/// when only criterion's own output is wanted.
pub fn skip_tables() -> bool {
    std::env::var_os("SN_BENCH_SKIP_TABLES").is_some()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One contender in a throughput comparison: returns messages per second
/// for one run.
pub struct Throughput<'a> {
    pub name: &'static str,
    pub run: Box<dyn FnMut() -> f64 + 'a>,
}

/// Runs the contenders interleaved and prints a markdown table of median
/// Mmsg/s, min-max, and the ratio of our median to each peer's
/// (ours / peer: above 1 means we are faster).
pub fn compare_throughput(title: &str, contenders: Vec<Throughput<'_>>) {
    compare_rates(title, "Mmsg/s", 1e6, contenders);
}

/// [`compare_throughput`] with another unit: each run's rate is divided by
/// `scale` and shown as `unit` (e.g. "kIOPS", 1e3).
pub fn compare_rates(title: &str, unit: &str, scale: f64, mut contenders: Vec<Throughput<'_>>) {
    let rounds = rounds();
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for _ in 0..rounds {
        for (i, c) in contenders.iter_mut().enumerate() {
            results[i].push((c.run)() / scale);
        }
    }
    println!("\n### {title} ({rounds} interleaved rounds)\n");
    println!("| contender | median {unit} | min-max | ours / this |");
    println!("|---|---|---|---|");
    let ours = median(&mut results[0].clone());
    for (c, r) in contenders.iter().zip(results.iter_mut()) {
        let min = r.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = r.iter().cloned().fold(0.0, f64::max);
        let m = median(r);
        println!(
            "| {} | {m:.1} | {min:.1}-{max:.1} | {:.2}x |",
            c.name,
            ours / m
        );
    }
}

/// One contender in a latency comparison: fills the histogram with round
/// trip times in nanoseconds for one run.
pub struct Latency<'a> {
    pub name: &'static str,
    pub run: Box<RecordFn<'a>>,
}

/// Fills a histogram with one run's round trips.
pub type RecordFn<'a> = dyn FnMut(&mut Histogram<u64>) + 'a;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// Runs the contenders interleaved; prints median (over rounds) of p50, p99
/// and p99.9 round-trip times, and the ratio of each p50 to the first
/// contender's (the baseline: this / first).
pub fn compare_latency(title: &str, mut contenders: Vec<Latency<'_>>) {
    let rounds = rounds();
    let mut p: Vec<[Vec<f64>; 3]> = (0..contenders.len()).map(|_| Default::default()).collect();
    for _ in 0..rounds {
        for (i, c) in contenders.iter_mut().enumerate() {
            let mut h = histogram();
            (c.run)(&mut h);
            p[i][0].push(h.value_at_quantile(0.5) as f64);
            p[i][1].push(h.value_at_quantile(0.99) as f64);
            p[i][2].push(h.value_at_quantile(0.999) as f64);
        }
    }
    println!("\n### {title} ({rounds} interleaved rounds, medians of per-round percentiles)\n");
    println!(
        "| contender | p50 ns | p99 ns | p99.9 ns | p50 / {} |",
        contenders[0].name
    );
    println!("|---|---|---|---|---|");
    let base = median(&mut p[0][0].clone());
    for (c, q) in contenders.iter().zip(p.iter_mut()) {
        let (p50, p99, p999) = (median(&mut q[0]), median(&mut q[1]), median(&mut q[2]));
        println!(
            "| {} | {p50:.0} | {p99:.0} | {p999:.0} | {:.2}x |",
            c.name,
            p50 / base
        );
    }
}

/// Messages per second for `n` messages in `d`.
pub fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// The benches' `main`: the interleaved tables (unless skipped), then
/// criterion's groups.
pub fn run(tables: fn(), groups: fn(&mut criterion::Criterion)) {
    if !skip_tables() {
        tables();
    }
    let mut c = criterion::Criterion::default().configure_from_args();
    groups(&mut c);
    c.final_summary();
}
