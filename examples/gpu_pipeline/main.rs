//! A hybrid pipeline: application workers partition a dataset, the GPU
//! worker computes (CRC32C per 64 KiB block, an exact sum/min/max, a
//! saxpy), each application worker receives its results as ordinary
//! messages in its loop and checks them against the CPU reference, and the
//! main thread reduces the partial results and checks them against the CPU
//! reference of the whole dataset. It prints which device ran and how long
//! each stage took.
//!
//! `cargo run --release --example gpu_pipeline --features gpu [-- MIB]`
//! (`-- --help` for the command line)
//!
//! With Mesa's software Vulkan driver (lavapipe) the "GPU" is llvmpipe, a
//! rasteriser on the CPU: expect it to be slower than the CPU path. With
//! `SHARED_NOTHING_REQUIRE_GPU=1` the example fails unless the wgpu path ran.

#[path = "../common/logging.rs"]
mod logging;
mod stages;

use clap::Parser;
use shared_nothing::accel::{
    AccelClient, AccelConnector, Job, JobResult, Output, Reduction, reduce_u32,
};
use shared_nothing::prelude::*;
use shared_nothing::topology::Capabilities;
use shared_nothing::worker::ResultSink;
use stages::Stages;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCK: u32 = 64 << 10;
const PARTITIONS: usize = 8;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "gpu_pipeline",
    about = "Application workers partition a dataset, the GPU worker computes, \
             every result is checked against the CPU reference. \
             With SHARED_NOTHING_REQUIRE_GPU=1 it fails unless the wgpu path ran."
)]
struct Cli {
    /// Size of the dataset in MiB of u32 values.
    #[arg(
        value_name = "MIB",
        default_value_t = 32,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    mib: usize,
}

enum Msg {
    /// A partition of the dataset to process.
    Partition { id: usize, data: Arc<[u32]> },
    /// A result from the accelerator, delivered into this worker's loop.
    Result(Box<JobResult>),
    /// Reply with the partial results once `expected` jobs are back.
    Report,
}

/// What a worker sends back: its reductions, checksums and timings.
#[derive(Default)]
struct Partial {
    reduction: Option<Reduction>,
    checksums: Vec<(usize, Vec<u32>)>,
    stages: Stages,
    devices: Vec<String>,
    mismatches: Vec<String>,
    pending: usize,
}

struct App {
    connector: AccelConnector,
}

struct AppState {
    client: AccelClient,
    /// Inputs kept to check each result against the CPU reference.
    inputs: Vec<(u64, Job)>,
    partial: Partial,
}

impl Worker for App {
    type State = AppState;
    type Message = Msg;
    type Reply = Option<Partial>;

    fn init(&mut self) -> Result<AppState> {
        // Results come back as `Msg::Result` in this worker's own loop.
        let sink = ResultSink::to_current_worker(|r: JobResult| Msg::Result(Box::new(r)))?;
        Ok(AppState {
            client: self.connector.client(sink)?,
            inputs: Vec::new(),
            partial: Partial::default(),
        })
    }

    fn handle_message(
        &mut self,
        s: &mut AppState,
        mut m: Envelope<Msg, Option<Partial>>,
    ) -> Result<()> {
        match std::mem::replace(&mut m.payload, Msg::Report) {
            Msg::Partition { id, data } => {
                let bytes: Arc<[u8]> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
                let x: Arc<[f32]> = data.iter().map(|&v| (v % 1000) as f32).collect();
                let y: Arc<[f32]> = vec![0.25f32; data.len()].into();
                let jobs = [
                    Job::checksum(bytes, BLOCK),
                    Job::reduce(data),
                    Job::saxpy(1.5, x, y),
                ];
                for (k, job) in jobs.into_iter().enumerate() {
                    let tag = (id * 3 + k) as u64;
                    s.inputs.push((tag, job.clone()));
                    s.client.submit(tag, job)?;
                    s.partial.pending += 1;
                }
            }
            Msg::Result(r) => {
                let i = s
                    .inputs
                    .iter()
                    .position(|(t, _)| *t == r.tag)
                    .expect("known tag");
                let (_, job) = s.inputs.swap_remove(i);
                let t = Instant::now();
                let want = job.run_on_cpu().map_err(Error::from)?;
                let verify = t.elapsed();
                s.partial.pending -= 1;
                s.partial.stages.add(&r, verify);
                let device = r.path.to_string();
                if !s.partial.devices.contains(&device) {
                    s.partial.devices.push(device);
                }
                match r.output {
                    Ok(got) if got == want => match got {
                        Output::Reduction(x) => {
                            let acc = s.partial.reduction.unwrap_or(Reduction::EMPTY);
                            s.partial.reduction = Some(acc.merge(x));
                        }
                        Output::Checksums(c) => s.partial.checksums.push((r.tag as usize / 3, c)),
                        _ => {}
                    },
                    Ok(_) => s
                        .partial
                        .mismatches
                        .push(format!("{} (tag {})", r.job, r.tag)),
                    Err(e) => s.partial.mismatches.push(format!("{}: {e}", r.job)),
                }
            }
            Msg::Report => {
                if s.partial.pending == 0 {
                    m.reply(Some(std::mem::take(&mut s.partial)))?;
                } else {
                    m.reply(None)?;
                }
            }
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    logging::init("gpu_pipeline");
    // A bad command line exits with status 2 and clap's message.
    let mib = Cli::parse().mib;
    let require_gpu = std::env::var("SHARED_NOTHING_REQUIRE_GPU").as_deref() == Ok("1");

    // Ask for a GPU worker when there is an adapter: the plan leaves
    // software adapters such as llvmpipe alone unless asked.
    let caps = Capabilities::detect();
    let gpus = usize::from(!caps.gpus.is_empty());
    let pool = WorkerPool::from_config(PoolConfig::new().with_gpu_workers(gpus))?;
    let mut accels = pool.start_accelerators()?;
    let accel = accels.get(0).expect("one accelerator");
    println!("accelerator: {}", accel.path());
    if let Some(a) = accel.adapter() {
        println!(
            "adapter: {} ({}, {}, {})",
            a.name, a.backend, a.device_type, a.driver
        );
    }
    if let Some(why) = accels.fallback_reason() {
        println!("CPU fallback because: {why}");
    }
    if require_gpu && !accel.path().is_gpu() {
        return Err(Error::msg(
            "SHARED_NOTHING_REQUIRE_GPU=1 but the GPU path is not running",
        ));
    }

    let connector = accel.connector();
    let mut group = pool.spawn(move |_| App {
        connector: connector.clone(),
    })?;
    println!(
        "{} application worker(s), {PARTITIONS} partitions, {mib} MiB of u32",
        group.len()
    );

    // The dataset, then its partitions, round-robin over the workers.
    let n = mib * (1 << 20) / 4;
    let data: Vec<u32> = (0..n as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u32)
        .collect();
    let t0 = Instant::now();
    let per = n.div_ceil(PARTITIONS);
    for (id, part) in data.chunks(per).enumerate() {
        let part: Arc<[u32]> = part.into();
        group.send_to_worker(id % group.len(), Msg::Partition { id, data: part })?;
    }
    let partition = t0.elapsed();

    // Gather the partial results.
    let mut total = Reduction::EMPTY;
    let mut checksums: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut stages = Stages::default();
    let mut devices: Vec<String> = Vec::new();
    let mut mismatches = Vec::new();
    for w in 0..group.len() {
        let p = loop {
            if let Some(p) = group.request(w, Msg::Report)?.wait()? {
                break p;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if let Some(r) = p.reduction {
            total = total.merge(r);
        }
        checksums.extend(p.checksums);
        stages.merge(&p.stages);
        for d in p.devices {
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
        mismatches.extend(p.mismatches);
    }
    let wall = t0.elapsed();

    // Check the reduced whole against the CPU reference.
    let want = reduce_u32(&data);
    checksums.sort_by_key(|c| c.0);
    let blocks: usize = checksums.iter().map(|c| c.1.len()).sum();
    println!("ran on: {}", devices.join("; "));
    println!(
        "{} jobs ({} on the GPU path), {blocks} block checksums; sum {} min {} max {}",
        stages.jobs, stages.on_gpu, total.sum, total.min, total.max
    );
    stages.print(partition, wall);
    println!("{}", accel_stats_line(&accels));

    group.stop_all()?;
    accels.stop_all()?;
    if !mismatches.is_empty() {
        return Err(Error::msg(format!(
            "results differ from the CPU reference: {mismatches:?}"
        )));
    }
    if total != want {
        return Err(Error::msg(format!(
            "reduced total {total:?} != CPU reference {want:?}"
        )));
    }
    if require_gpu && stages.on_gpu != stages.jobs {
        return Err(Error::msg(
            "SHARED_NOTHING_REQUIRE_GPU=1 but some jobs ran on the CPU path",
        ));
    }
    println!("every result matches the CPU reference");
    Ok(())
}

fn accel_stats_line(accels: &shared_nothing::accel::Accelerators) -> String {
    let s = accels.get(0).map(|a| a.stats()).unwrap_or_default();
    format!(
        "accelerator: {} batches, {} submissions, {} pipelines compiled, buffer pool {} hits / {} misses",
        s.batches, s.submits, s.pipelines_compiled, s.buffer_pool_hits, s.buffer_pool_misses
    )
}
