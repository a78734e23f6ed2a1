//! Accelerator benchmarks: offload overhead (submit to result for a tiny
//! job) and throughput for 1 MiB to 256 MiB jobs, the GPU path against the
//! CPU path in the same run, interleaved. Every table names the adapter:
//! on a machine with only Mesa's lavapipe the "GPU" is llvmpipe, a
//! rasteriser running on the same CPU cores.
//!
//! `cargo bench --features gpu --bench accel` (`SN_BENCH_ROUNDS` rounds,
//! default 7 for small jobs; the 256 MiB rows use 3). With `-- table` (or
//! `SN_ACCEL_TABLE=1`) it prints only the one table of `accel_table/`.

mod accel_table;
mod support;

use criterion::Criterion;
use shared_nothing::accel::{AccelClient, Accelerator, AcceleratorConfig, Job, JobResult};
use shared_nothing::worker::{ResultQueue, ResultSink};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Latency, compare_latency, cpu_pair};

struct Side {
    accel: Accelerator,
    client: AccelClient,
    results: ResultQueue<JobResult>,
    label: String,
}

impl Side {
    fn new(config: AcceleratorConfig) -> Self {
        let accel = Accelerator::start(config).expect("accelerator");
        let (sink, results) = ResultSink::queue();
        let client = accel.client(sink).expect("client");
        let label = match accel.adapter() {
            Some(a) => format!("GPU path ({}, {})", a.name, a.device_type),
            None => format!("CPU path ({})", accel.path()),
        };
        Self {
            accel,
            client,
            results,
            label,
        }
    }

    /// Submits and waits for the result; the time from submit to result.
    fn round_trip(&mut self, job: Job) -> Duration {
        let t = Instant::now();
        self.client.submit(0, job).expect("submit");
        let r = self
            .results
            .recv_timeout(Duration::from_secs(600))
            .expect("result");
        let d = t.elapsed();
        r.output.expect("job ok");
        d
    }
}

fn sides() -> (Side, Side) {
    // The accelerator threads run on the second CPU; the caller on the first.
    let (a, b) = cpu_pair();
    support::pin(a);
    let gpu = Side::new(AcceleratorConfig::gpu().with_cpu(Some(b)));
    let cpu = Side::new(AcceleratorConfig::cpu("bench: CPU path").with_cpu(Some(b)));
    if !gpu.accel.path().is_gpu() {
        eprintln!("no GPU adapter: both rows below run on the CPU path");
    }
    (gpu, cpu)
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

fn job_for(kind: &str, bytes: usize) -> Job {
    let words = bytes / 4;
    match kind {
        "checksum" => {
            let data: Arc<[u8]> = (0..bytes).map(|i| (i * 31 + 7) as u8).collect();
            Job::checksum(data, 64 << 10)
        }
        "reduce" => Job::reduce((0..words as u32).collect::<Vec<_>>()),
        _ => {
            // x and y together make `bytes`.
            let x: Arc<[f32]> = (0..words / 2).map(|i| i as f32 * 0.5).collect();
            let y: Arc<[f32]> = vec![1.0f32; words / 2].into();
            Job::saxpy(1.5, x, y)
        }
    }
}

fn offload_overhead(gpu: &mut Side, cpu: &mut Side) {
    const N: usize = 300;
    let tiny = || Job::reduce(vec![1u32, 2, 3, 4]);
    let (gl, cl) = (gpu.label.clone(), cpu.label.clone());
    let title = format!(
        "Offload overhead: submit to result, one 16-byte reduce job at a time, {N} per round ({gl} vs {cl})"
    );
    let (g, c) = (std::cell::RefCell::new(gpu), std::cell::RefCell::new(cpu));
    compare_latency(
        &title,
        vec![
            Latency {
                name: "GPU path",
                run: Box::new(|h| {
                    let mut s = g.borrow_mut();
                    for _ in 0..N {
                        h.record(s.round_trip(tiny()).as_nanos() as u64).unwrap();
                    }
                }),
            },
            Latency {
                name: "CPU path",
                run: Box::new(|h| {
                    let mut s = c.borrow_mut();
                    for _ in 0..N {
                        h.record(s.round_trip(tiny()).as_nanos() as u64).unwrap();
                    }
                }),
            },
        ],
    );
}

fn throughput(gpu: &mut Side, cpu: &mut Side) {
    println!(
        "\n### Throughput, submit to result, MiB/s of input (GPU: {}; CPU: {})\n",
        gpu.label, cpu.label
    );
    println!(
        "| job | size | rounds | GPU path median MiB/s (min-max) | CPU path median MiB/s (min-max) | GPU / CPU |"
    );
    println!("|---|---|---|---|---|---|");
    // `SN_ACCEL_KINDS=reduce,saxpy` limits the rows.
    let only = std::env::var("SN_ACCEL_KINDS").unwrap_or_default();
    for kind in ["checksum", "reduce", "saxpy"] {
        if !only.is_empty() && !only.split(',').any(|k| k == kind) {
            continue;
        }
        for mib in [1usize, 16, 256] {
            let bytes = mib << 20;
            let job = job_for(kind, bytes);
            let rounds = if mib >= 256 { 3 } else { support::rounds() };
            // Warm up: compile the pipeline, fill the buffer pool.
            gpu.round_trip(job.clone());
            cpu.round_trip(job.clone());
            let (mut gs, mut cs) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let rate = |d: Duration| mib as f64 / d.as_secs_f64();
                gs.push(rate(gpu.round_trip(job.clone())));
                cs.push(rate(cpu.round_trip(job.clone())));
            }
            let range = |v: &[f64]| {
                let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = v.iter().cloned().fold(0.0, f64::max);
                format!("{lo:.0}-{hi:.0}")
            };
            let (gr, cr) = (range(&gs), range(&cs));
            let (gm, cm) = (median(&mut gs), median(&mut cs));
            println!(
                "| {kind} | {mib} MiB | {rounds} | {gm:.0} ({gr}) | {cm:.0} ({cr}) | {:.2}x |",
                gm / cm
            );
        }
    }
}

fn tables() {
    let (mut gpu, mut cpu) = sides();
    offload_overhead(&mut gpu, &mut cpu);
    throughput(&mut gpu, &mut cpu);
    let s = gpu.accel.stats();
    println!(
        "\nGPU accelerator: {} jobs on the GPU path, {} on the CPU path, {} submissions, {} pipelines compiled, buffer pool {} hits / {} misses",
        s.jobs_gpu,
        s.jobs_cpu,
        s.submits,
        s.pipelines_compiled,
        s.buffer_pool_hits,
        s.buffer_pool_misses
    );
}

fn groups(c: &mut Criterion) {
    let (mut gpu, mut cpu) = sides();
    let mut g = c.benchmark_group("accel_offload_tiny_reduce");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("gpu_path", |b| {
        b.iter(|| gpu.round_trip(Job::reduce(vec![1u32, 2, 3, 4])))
    });
    g.bench_function("cpu_path", |b| {
        b.iter(|| cpu.round_trip(Job::reduce(vec![1u32, 2, 3, 4])))
    });
    g.finish();
}

fn main() {
    if accel_table::wanted() {
        accel_table::run();
        return;
    }
    support::run(tables, groups);
}
