//! `cargo bench --features gpu --bench accel -- table` (or `SN_ACCEL_TABLE=1`):
//! one table of job size x kernel x path (GPU, CPU) with end-to-end
//! throughput, p50/p99 submit-to-result latency, the kernels' own execute
//! time and its share of the device's copy rate, then the offload
//! break-even size per kernel and the tiny-job overhead, under the
//! adapter's name.
//!
//! Knobs: `SN_ACCEL_SIZES` (comma list with K, M or G suffixes, default
//! `4K,16K,64K,256K,1M,4M,16M`), `SN_ACCEL_KINDS` (default
//! `checksum,reduce,saxpy`), `SN_ACCEL_CELL_MS` (time per cell and path,
//! default 300; at least 3 and at most 1000 round trips each),
//! `SN_ACCEL_COPY_BYTES` (copy-rate buffer, default the largest size up to
//! 256 MiB), `SN_ACCEL_IN_FLIGHT` (the GPU path's submissions in flight,
//! default the accelerator's 2; 1 turns the overlap off) and
//! `SN_ACCEL_CRC_SEGMENT` (bytes per checksum segment, default 1024) and
//! `SN_ACCEL_CHUNK` (largest chunk, default the accelerator's 64 MiB).

use super::support;
use shared_nothing::accel::{
    AccelClient, Accelerator, AcceleratorConfig, ExecuteClock, Job, JobResult,
};
use shared_nothing::worker::{ResultQueue, ResultSink};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether the table was asked for.
pub fn wanted() -> bool {
    std::env::args().skip(1).any(|a| a == "table")
        || std::env::var("SN_ACCEL_TABLE").is_ok_and(|v| v == "1")
}

struct Path {
    accel: Accelerator,
    client: AccelClient,
    results: ResultQueue<JobResult>,
}

impl Path {
    fn new(config: AcceleratorConfig) -> Self {
        let accel = Accelerator::start(config).expect("accelerator");
        let (sink, results) = ResultSink::queue();
        let client = accel.client(sink).expect("client");
        Self {
            accel,
            client,
            results,
        }
    }

    /// One job, submit to result: (round trip, the result's execute time
    /// and clock).
    fn round_trip(&mut self, job: Job) -> (Duration, Duration, ExecuteClock) {
        let t = Instant::now();
        self.client.submit(0, job).expect("submit");
        let r = self
            .results
            .recv_timeout(Duration::from_secs(600))
            .expect("result");
        let d = t.elapsed();
        if let Err(e) = &r.output {
            panic!("{} failed: {e}", r.job);
        }
        (d, r.timing.execute, r.timing.clock)
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mul)
}

fn show_size(b: u64) -> String {
    match b {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn show_time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} us", ns / 1e3)
    }
}

fn job_for(kind: &str, bytes: u64) -> Job {
    let bytes = bytes as usize;
    let words = bytes / 4;
    match kind {
        "checksum" => {
            let data: Arc<[u8]> = (0..bytes).map(|i| (i * 31 + 7) as u8).collect();
            Job::checksum(data, 64 << 10)
        }
        "reduce" => Job::reduce((0..words as u32).collect::<Vec<_>>()),
        _ => {
            // x and y together make `bytes`.
            let n = (words / 2).max(1);
            let x: Arc<[f32]> = (0..n).map(|i| i as f32 * 0.5).collect();
            let y: Arc<[f32]> = vec![1.0f32; n].into();
            Job::saxpy(1.5, x, y)
        }
    }
}

/// One path's figures for one cell.
struct Cell {
    reps: usize,
    p50: f64,
    p99: f64,
    /// Median of the results' execute times, ns.
    exec50: f64,
    clock: ExecuteClock,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the job on both paths, alternating while both are under the time
/// budget, then the one still under it alone, until each has had the
/// budget and at least 3 round trips (at most 1000).
fn measure(gpu: &mut Path, cpu: &mut Path, job: &Job, budget: Duration) -> (Cell, Cell) {
    // Warm up: compile, fill the buffer pool.
    gpu.round_trip(job.clone());
    cpu.round_trip(job.clone());
    let mut h = [support::histogram(), support::histogram()];
    let mut exec: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut clock = [ExecuteClock::Cpu; 2];
    let mut spent = [Duration::ZERO; 2];
    let more = |i: usize, exec: &[Vec<f64>; 2], spent: &[Duration; 2]| {
        exec[i].len() < 1000 && (exec[i].len() < 3 || spent[i] < budget)
    };
    while more(0, &exec, &spent) || more(1, &exec, &spent) {
        for (i, p) in [&mut *gpu, &mut *cpu].into_iter().enumerate() {
            if !more(i, &exec, &spent) {
                continue;
            }
            let (d, e, c) = p.round_trip(job.clone());
            h[i].record((d.as_nanos() as u64).max(1)).expect("in range");
            exec[i].push(e.as_nanos() as f64);
            clock[i] = c;
            spent[i] += d;
        }
    }
    let cell = |i: usize, e: &mut Vec<f64>| Cell {
        reps: e.len(),
        p50: h[i].value_at_quantile(0.5) as f64,
        p99: h[i].value_at_quantile(0.99) as f64,
        exec50: median(e),
        clock: clock[i],
    };
    let [mut e0, mut e1] = exec;
    (cell(0, &mut e0), cell(1, &mut e1))
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The table.
pub fn run() {
    let sizes: Vec<u64> = env_list("SN_ACCEL_SIZES", "4K,16K,64K,256K,1M,4M,16M")
        .iter()
        .map(|s| parse_size(s).unwrap_or_else(|| panic!("SN_ACCEL_SIZES: bad size {s:?}")))
        .collect();
    let kinds = env_list("SN_ACCEL_KINDS", "checksum,reduce,saxpy");
    let budget = Duration::from_millis(
        std::env::var("SN_ACCEL_CELL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    let (a, b) = support::cpu_pair();
    support::pin(a);
    let mut config = AcceleratorConfig::gpu().with_cpu(Some(b));
    let knob = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    if let Some(n) = knob("SN_ACCEL_IN_FLIGHT") {
        config = config.with_max_in_flight(n);
    }
    if let Some(n) = knob("SN_ACCEL_CRC_SEGMENT") {
        config = config.with_crc_segment_bytes(n);
    }
    let chunk = std::env::var("SN_ACCEL_CHUNK")
        .ok()
        .and_then(|s| parse_size(&s));
    if let Some(n) = chunk {
        config = config.with_chunk_bytes(n);
    }
    let mut gpu = Path::new(config);
    let mut cpu = Path::new(AcceleratorConfig::cpu("bench: CPU path").with_cpu(Some(b)));
    let adapter = match gpu.accel.adapter() {
        Some(a) => format!(
            "{} ({}, {}, driver {}; timestamp queries {}, subgroups {}, workgroup sizes {:?})",
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            a.timestamp_queries,
            a.subgroups,
            a.workgroup_sizes
        ),
        None => format!("none: both paths are the CPU path ({})", gpu.accel.path()),
    };
    if gpu.accel.adapter().is_none()
        && std::env::var("SHARED_NOTHING_REQUIRE_GPU").is_ok_and(|v| v == "1")
    {
        eprintln!("SHARED_NOTHING_REQUIRE_GPU=1 but no GPU path: {adapter}");
        std::process::exit(1);
    }
    println!("\n### Accelerator table\n\nAdapter: {adapter}\n");
    println!(
        "GPU path: {} submissions in flight, checksum segments of {} bytes, chunks of {} (SN_ACCEL_IN_FLIGHT, SN_ACCEL_CRC_SEGMENT, SN_ACCEL_CHUNK)\n",
        knob("SN_ACCEL_IN_FLIGHT").map_or("2 (default)".to_owned(), |n| n.to_string()),
        knob("SN_ACCEL_CRC_SEGMENT").map_or("1024 (default)".to_owned(), |n| n.to_string()),
        chunk.map_or("64 MiB (default)".to_owned(), show_size),
    );

    let max = sizes.iter().copied().max().unwrap_or(1 << 20);
    let copy_bytes = std::env::var("SN_ACCEL_COPY_BYTES")
        .ok()
        .and_then(|s| parse_size(&s))
        .unwrap_or(max.min(256 << 20));
    let copies = ((1u64 << 30) / copy_bytes).clamp(2, 64) as u32;
    let copy_rate = match gpu.accel.measure_copy_bandwidth(copy_bytes, copies) {
        Ok(bw) => {
            let r = bw.bytes_per_second();
            println!(
                "Device copy: {copies} x {} buffer to buffer in {:?}: {:.2} GB/s copied (memory traffic twice that), host-timed\n",
                show_size(bw.bytes_per_copy),
                bw.elapsed,
                r / 1e9
            );
            Some(r)
        }
        Err(e) => {
            println!("Device copy: not measured ({e})\n");
            None
        }
    };

    let (tiny_gpu, tiny_cpu) = measure(
        &mut gpu,
        &mut cpu,
        &Job::reduce(vec![1u32, 2, 3, 4]),
        budget,
    );
    println!(
        "Offload overhead, one 16-byte reduce, submit to result: GPU path p50 {} p99 {} ({} round trips); CPU path p50 {} p99 {}\n",
        show_time(tiny_gpu.p50),
        show_time(tiny_gpu.p99),
        tiny_gpu.reps,
        show_time(tiny_cpu.p50),
        show_time(tiny_cpu.p99)
    );

    println!(
        "| kernel | size | path | round trips | GB/s end to end (p50) | p50 | p99 | execute p50 (clock) | kernel GB/s | % of copy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut breakeven = Vec::new();
    for kind in &kinds {
        // Sizes where the GPU path's p50 beat the CPU path's.
        let mut faster = Vec::new();
        for &size in &sizes {
            let job = job_for(kind, size);
            let bytes = job.input_bytes();
            let (g, c) = measure(&mut gpu, &mut cpu, &job, budget);
            for (name, x) in [("GPU", &g), ("CPU", &c)] {
                let kernel = bytes as f64 / x.exec50;
                let share = match (copy_rate, name) {
                    (Some(r), "GPU") => format!("{:.0}%", 100.0 * kernel * 1e9 / r),
                    _ => "-".into(),
                };
                println!(
                    "| {kind} | {} | {name} | {} | {:.3} | {} | {} | {} ({:?}) | {:.3} | {share} |",
                    show_size(bytes),
                    x.reps,
                    bytes as f64 / x.p50,
                    show_time(x.p50),
                    show_time(x.p99),
                    show_time(x.exec50),
                    x.clock,
                    kernel,
                );
            }
            faster.push((bytes, g.p50 < c.p50));
        }
        // The smallest size from which the GPU path wins at every larger size.
        let from = faster
            .iter()
            .rposition(|&(_, f)| !f)
            .map_or(Some(0), |i| (i + 1 < faster.len()).then_some(i + 1));
        breakeven.push((kind.clone(), from.map(|i| faster[i].0)));
    }
    println!(
        "\nOffload break-even (the GPU path's p50 below the CPU path's at this size and every larger one measured):\n"
    );
    for (kind, at) in breakeven {
        match at {
            Some(b) => println!("- {kind}: {}", show_size(b)),
            None => println!(
                "- {kind}: not reached up to {}",
                show_size(sizes.iter().copied().max().unwrap_or(0))
            ),
        }
    }
    let s = gpu.accel.stats();
    println!(
        "\nGPU accelerator: {} jobs on the GPU path, {} on the CPU path, {} submissions, {} pipelines compiled",
        s.jobs_gpu, s.jobs_cpu, s.submits, s.pipelines_compiled
    );
}
