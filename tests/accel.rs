//! Accelerator workers end to end: every built-in kernel on the GPU path and
//! on the CPU path, with identical results; typed errors for a malformed
//! kernel and a malformed job; results arriving in a real worker's loop.
//!
//! With `SHARED_NOTHING_REQUIRE_GPU=1` (CI, where Mesa's lavapipe is
//! installed) the GPU path must really run through wgpu: finding no adapter,
//! or a result from the CPU path, fails the test. Without it (or without
//! feature `gpu`) the tests fall back to the CPU path and say so.

use shared_nothing::accel::{
    AccelError, Accelerator, AcceleratorConfig, ExecPath, ExecuteClock, Job, JobResult, Kernel,
    Output, crc32c_blocks, reduce_u32, saxpy,
};
use shared_nothing::prelude::*;
use shared_nothing::worker::{ResultQueue, ResultSink};
use std::sync::Arc;
use std::time::Duration;

/// Whether the wgpu path is required: only a build with feature `gpu` has
/// one (a default build runs everything on the CPU path and says so).
fn require_gpu() -> bool {
    cfg!(feature = "gpu") && std::env::var("SHARED_NOTHING_REQUIRE_GPU").as_deref() == Ok("1")
}

/// The GPU accelerator, checked against `SHARED_NOTHING_REQUIRE_GPU`.
fn gpu_accel(config: AcceleratorConfig) -> Accelerator {
    let accel = Accelerator::start(config).expect("start accelerator");
    match accel.path() {
        ExecPath::Gpu { adapter } => eprintln!("GPU path: {adapter} ({:?})", accel.adapter()),
        ExecPath::Cpu { reason } => {
            assert!(
                !require_gpu(),
                "SHARED_NOTHING_REQUIRE_GPU=1 but the accelerator fell back to the CPU: {reason}"
            );
            eprintln!("no GPU path, testing the CPU path twice: {reason}");
        }
    }
    accel
}

fn data_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn data_u32(n: usize, seed: u64) -> Vec<u32> {
    data_bytes(4 * n, seed)
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn data_f32(n: usize, seed: u64) -> Vec<f32> {
    // Finite values over many magnitudes, so rounding differences would show.
    data_u32(n, seed)
        .into_iter()
        .map(|v| (v as f32 / 7.0 - 1.0e8) * if v % 3 == 0 { 1.0e-6 } else { 1.3 })
        .collect()
}

fn run_one(results: &mut ResultQueue<JobResult>) -> JobResult {
    results
        .recv_timeout(Duration::from_secs(300))
        .expect("a result")
}

/// The jobs every path must agree on, with their expected outputs.
fn cases() -> Vec<(Job, Output)> {
    let bytes = data_bytes(3 * 4096 + 13, 1);
    let words = data_u32(300_001, 2);
    let (x, y) = (data_f32(100_003, 3), data_f32(100_003, 4));
    vec![
        (
            Job::checksum(b"123456789".to_vec(), 12),
            Output::Checksums(vec![0xE306_9283]),
        ),
        (
            Job::checksum(bytes.clone(), 4096),
            Output::Checksums(crc32c_blocks(&bytes, 4096)),
        ),
        (
            Job::checksum(bytes.clone(), 8),
            Output::Checksums(crc32c_blocks(&bytes, 8)),
        ),
        (Job::checksum(Vec::new(), 4), Output::Checksums(Vec::new())),
        (
            Job::reduce(words.clone()),
            Output::Reduction(reduce_u32(&words)),
        ),
        (
            Job::reduce(vec![u32::MAX; 70_000]),
            Output::Reduction(reduce_u32(&[u32::MAX; 70_000])),
        ),
        (Job::reduce(Vec::new()), Output::Reduction(reduce_u32(&[]))),
        (
            Job::saxpy(1.7, x.clone(), y.clone()),
            Output::F32(saxpy(1.7, &x, &y)),
        ),
        (
            Job::saxpy(-3.0e-3, y.clone(), x.clone()),
            Output::F32(saxpy(-3.0e-3, &y, &x)),
        ),
    ]
}

fn check_all(accel: &Accelerator, expect_gpu: bool) {
    let (sink, mut results) = ResultSink::queue();
    let mut client = accel.client(sink).unwrap();
    let cases = cases();
    for (i, (job, _)) in cases.iter().enumerate() {
        client.submit(i as u64, job.clone()).unwrap();
    }
    for _ in 0..cases.len() {
        let r = run_one(&mut results);
        let (job, want) = &cases[r.tag as usize];
        let cpu = job.run_on_cpu().unwrap();
        let got = r
            .output
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", r.job));
        assert_eq!(got, want, "{} (tag {}) on {}", r.job, r.tag, r.path);
        assert_eq!(got, &cpu, "{} differs from the CPU path", r.job);
        assert_eq!(r.path.is_gpu(), expect_gpu, "{} ran on {}", r.job, r.path);
        assert!(r.gpu_error.is_none(), "{:?}", r.gpu_error);
    }
}

#[test]
fn every_builtin_kernel_gives_identical_results_on_gpu_and_cpu() {
    let mut gpu = gpu_accel(AcceleratorConfig::gpu());
    let on_gpu = gpu.path().is_gpu();
    check_all(&gpu, on_gpu);
    let s = gpu.stats();
    gpu.stop().unwrap();
    if on_gpu {
        assert!(s.jobs_gpu >= 9 && s.jobs_cpu == 0, "{s:?}");
        assert!(
            s.pipelines_compiled == 3,
            "each built-in compiled once: {s:?}"
        );
    }

    let mut cpu = Accelerator::start(AcceleratorConfig::cpu("the CPU half of the test")).unwrap();
    check_all(&cpu, false);
    cpu.stop().unwrap();
}

#[test]
fn large_jobs_split_into_chunks_give_the_same_results() {
    // 64 KiB chunks: each job below spans several dispatches and submissions.
    let mut accel = gpu_accel(
        AcceleratorConfig::gpu()
            .with_chunk_bytes(64 << 10)
            .with_max_batch_bytes(256 << 10),
    );
    check_all(&accel, accel.path().is_gpu());
    accel.stop().unwrap();
}

/// Checksum jobs at the edges of the segment cutting: one byte, a block
/// of one segment, blocks not divisible by the segment, a last block of
/// one byte, blocks of exactly one word.
fn crc_edge_cases() -> Vec<(Job, Output)> {
    let mut v = Vec::new();
    for (len, block) in [
        (1usize, 4u32),
        (3, 4),
        (4, 4),
        (64, 4),
        (4097, 4096),
        (4099, 4096),
        (5000, 1000),
        (65_537, 65_536),
        (10_007, 12),
        (100_003, 1028),
    ] {
        let d = data_bytes(len, len as u64);
        let want = Output::Checksums(crc32c_blocks(&d, block as usize));
        v.push((Job::checksum(d, block), want));
    }
    v
}

fn check_cases(accel: &Accelerator, cases: &[(Job, Output)]) {
    let (sink, mut results) = ResultSink::queue();
    let mut client = accel.client(sink).unwrap();
    for (i, (job, _)) in cases.iter().enumerate() {
        client.submit(i as u64, job.clone()).unwrap();
    }
    for _ in 0..cases.len() {
        let r = run_one(&mut results);
        let (job, want) = &cases[r.tag as usize];
        let got = r
            .output
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", r.job));
        assert_eq!(got, want, "{} (tag {}) on {}", r.job, r.tag, r.path);
        assert_eq!(got, &job.run_on_cpu().unwrap());
        assert_eq!(r.path.is_gpu(), accel.path().is_gpu(), "{}", r.path);
    }
}

#[test]
fn parallel_crc_is_bit_identical_for_every_segment_size() {
    // Segments of one word, of three words (blocks not divisible by it), a
    // size larger than most blocks here, and the default.
    for segment in [4u32, 12, 20, 4096, 1024] {
        let mut accel = gpu_accel(AcceleratorConfig::gpu().with_crc_segment_bytes(segment));
        check_cases(&accel, &crc_edge_cases());
        accel.stop().unwrap();
    }
    // A 1 MiB block in 4-byte segments would be 262,144 of them: the
    // accelerator lengthens the segments to stay at 16,384 per block.
    let mut accel = gpu_accel(AcceleratorConfig::gpu().with_crc_segment_bytes(4));
    let d = data_bytes((1 << 20) + (1 << 19) + 3, 77);
    let want = Output::Checksums(crc32c_blocks(&d, 1 << 20));
    check_cases(&accel, &[(Job::checksum(d, 1 << 20), want)]);
    accel.stop().unwrap();
}

#[test]
fn overlapped_chunks_give_the_same_results_at_every_depth() {
    // 4 KiB chunks: every non-trivial case is many chunks, so several are
    // in flight at once with depth 2 and 4; depth 1 is the serial baseline.
    for depth in [1u32, 2, 4] {
        let mut accel = gpu_accel(
            AcceleratorConfig::gpu()
                .with_chunk_bytes(4 << 10)
                .with_max_in_flight(depth)
                .with_crc_segment_bytes(64),
        );
        check_all(&accel, accel.path().is_gpu());
        // (Not the 64 KiB block: it would not fit a 4 KiB chunk.)
        check_cases(&accel, &crc_edge_cases()[..7]);
        accel.stop().unwrap();
    }
}

#[test]
fn reductions_are_exact_with_and_without_subgroups_at_any_workgroup_size() {
    let words = data_u32(250_007, 11);
    let cases = vec![
        (
            Job::reduce(words.clone()),
            Output::Reduction(reduce_u32(&words)),
        ),
        (
            Job::reduce(vec![u32::MAX; 300_001]),
            Output::Reduction(reduce_u32(&[u32::MAX; 300_001])),
        ),
        (Job::reduce(vec![7]), Output::Reduction(reduce_u32(&[7]))),
        (Job::reduce(Vec::new()), Output::Reduction(reduce_u32(&[]))),
    ];
    for subgroups in [true, false] {
        for cap in [1024u32, 64, 8] {
            let mut accel = gpu_accel(
                AcceleratorConfig::gpu()
                    .with_subgroups(subgroups)
                    .with_max_workgroup_size(cap)
                    .with_chunk_bytes(256 << 10),
            );
            if let Some(a) = accel.adapter() {
                assert!(a.subgroups <= subgroups, "{a:?}");
                assert!(
                    a.workgroup_sizes
                        .iter()
                        .all(|&w| w <= cap && w.is_power_of_two())
                );
                eprintln!(
                    "subgroups {} workgroups {:?}",
                    a.subgroups, a.workgroup_sizes
                );
            }
            check_cases(&accel, &cases);
            accel.stop().unwrap();
        }
    }
}

/// Every phase of every job is its own, filled where the path has it, and
/// within the job's total (single-chunk jobs: their sum too).
#[test]
fn every_job_has_its_own_plausible_timing() {
    for timestamps in [true, false] {
        let mut accel = gpu_accel(
            AcceleratorConfig::gpu()
                .with_device_timestamps(timestamps)
                .with_chunk_bytes(64 << 10),
        );
        let gpu = accel.path().is_gpu();
        let want_clock = match accel.adapter() {
            Some(a) if a.timestamp_queries => ExecuteClock::DeviceTimestamps,
            Some(_) => ExecuteClock::HostMarks,
            None => ExecuteClock::Cpu,
        };
        if let Some(a) = accel.adapter() {
            assert!(a.timestamp_queries <= timestamps, "{a:?}");
        }
        let (sink, mut results) = ResultSink::queue();
        let mut client = accel.client(sink).unwrap();
        // Small jobs fit one chunk; the 1 MiB ones span 16 or more.
        let jobs = [
            Job::reduce(data_u32(1000, 1)),
            Job::checksum(data_bytes(5000, 2), 512),
            Job::saxpy(2.0, data_f32(1000, 3), data_f32(1000, 4)),
            Job::reduce(data_u32(256 << 10, 5)),
            Job::checksum(data_bytes(1 << 20, 6), 4096),
        ];
        let small = 3;
        for (i, j) in jobs.iter().enumerate() {
            client.submit(i as u64, j.clone()).unwrap();
        }
        for _ in 0..jobs.len() {
            let r = run_one(&mut results);
            r.output.as_ref().unwrap();
            let t = r.timing;
            let what = format!("{} (tag {}) {t:?}", r.job, r.tag);
            assert_eq!(t.clock, want_clock, "{what}");
            assert!(t.execute > Duration::ZERO, "{what}");
            assert!(t.total > Duration::ZERO, "{what}");
            for phase in [t.queued, t.upload, t.execute, t.readback] {
                assert!(phase <= t.total, "{what}");
            }
            if gpu {
                assert!(t.upload > Duration::ZERO, "{what}");
                assert!(t.readback > Duration::ZERO, "{what}");
                // One thread does the host phases, one after another.
                assert!(t.queued + t.upload + t.readback <= t.total, "{what}");
            } else {
                assert_eq!((t.upload, t.readback), (Duration::ZERO, Duration::ZERO));
            }
            // Host marks start execute when `submit` returns, so for one
            // chunk the phases follow one another. Device timestamps may
            // start during the `submit` call, inside the upload.
            if (r.tag as usize) < small && t.clock != ExecuteClock::DeviceTimestamps {
                assert!(
                    t.queued + t.upload + t.execute + t.readback <= t.total,
                    "{what}"
                );
            }
        }
        accel.stop().unwrap();
    }
}

#[test]
fn copy_bandwidth_is_measured_on_the_device_or_refused_on_the_cpu_path() {
    let mut accel = gpu_accel(AcceleratorConfig::gpu());
    match accel.measure_copy_bandwidth(1 << 20, 4) {
        Ok(bw) => {
            assert!(accel.path().is_gpu());
            assert_eq!((bw.bytes_per_copy, bw.copies), (1 << 20, 4));
            assert!(bw.elapsed > Duration::ZERO && bw.bytes_per_second() > 0.0);
            eprintln!("copy: {:.2} GB/s", bw.bytes_per_second() / 1e9);
        }
        Err(e) => {
            assert!(!accel.path().is_gpu(), "{e}");
            assert!(matches!(
                e,
                shared_nothing::Error::Accel(AccelError::NoAdapter { .. })
            ));
        }
    }
    // Jobs still run afterwards.
    let (sink, mut results) = ResultSink::queue();
    let mut client = accel.client(sink).unwrap();
    client.submit(1, Job::reduce(vec![1, 2])).unwrap();
    assert_eq!(
        run_one(&mut results).output.unwrap(),
        Output::Reduction(reduce_u32(&[1, 2]))
    );
    if accel.path().is_gpu() {
        // Larger than any buffer the device allows: a typed error.
        let e = accel.measure_copy_bandwidth(u64::MAX / 2, 1).unwrap_err();
        assert!(
            matches!(e, shared_nothing::Error::Accel(AccelError::TooLarge { .. })),
            "{e}"
        );
    }
    drop(client);
    accel.stop().unwrap();
    let cpu = Accelerator::start(AcceleratorConfig::cpu("test")).unwrap();
    assert!(cpu.measure_copy_bandwidth(1024, 1).is_err());
}

#[test]
fn malformed_wgsl_is_a_typed_error_and_the_accelerator_keeps_working() {
    let mut accel = gpu_accel(AcceleratorConfig::gpu());
    let (sink, mut results) = ResultSink::queue();
    let mut client = accel.client(sink).unwrap();
    let broken = Kernel::new(
        "broken",
        "@compute @workgroup_size(1) fn main() { let x: u32 = ; }",
    );
    let input: Arc<[u8]> = vec![0u8; 16].into();
    client
        .submit(1, Job::kernel(broken, vec![input.clone()], 16, [1, 1, 1]))
        .unwrap();
    let r = run_one(&mut results);
    if accel.path().is_gpu() {
        match &r.output {
            Err(AccelError::Shader { kernel, message }) => {
                assert_eq!(kernel, "broken");
                assert!(!message.is_empty());
                eprintln!("shader error, as expected: {message}");
            }
            other => panic!("expected a shader error, got {other:?}"),
        }
    } else {
        // No GPU to compile it and no CPU implementation: still typed.
        assert!(
            matches!(r.output, Err(AccelError::NoCpuPath { .. })),
            "{:?}",
            r.output
        );
    }
    // A good kernel still runs afterwards.
    client.submit(2, Job::reduce(vec![1, 2, 3])).unwrap();
    let r = run_one(&mut results);
    assert_eq!(r.output.unwrap(), Output::Reduction(reduce_u32(&[1, 2, 3])));
    accel.stop().unwrap();
}

#[test]
fn wrong_sizes_are_typed_errors_on_every_path() {
    for config in [AcceleratorConfig::gpu(), AcceleratorConfig::cpu("test")] {
        let mut accel = Accelerator::start(config).unwrap();
        let (sink, mut results) = ResultSink::queue();
        let mut client = accel.client(sink).unwrap();
        client
            .submit(1, Job::saxpy(1.0, vec![1.0; 10], vec![1.0; 9]))
            .unwrap();
        client.submit(2, Job::checksum(vec![1u8; 10], 6)).unwrap();
        let copy = Kernel::new(
            "copy",
            "@group(0) @binding(0) var<storage, read> a: array<u32>;
             @group(0) @binding(1) var<storage, read_write> b: array<u32>;
             @compute @workgroup_size(1) fn main() { b[0] = a[0]; }",
        );
        client
            .submit(
                3,
                Job::kernel(copy, vec![vec![1u8; 5].into()], 4, [1, 1, 1]),
            )
            .unwrap();
        for _ in 0..3 {
            let r = run_one(&mut results);
            assert!(
                matches!(r.output, Err(AccelError::InvalidJob { .. })),
                "tag {}: {:?}",
                r.tag,
                r.output
            );
        }
        accel.stop().unwrap();
    }
}

#[test]
fn custom_kernel_runs_on_gpu_and_matches_its_cpu_implementation() {
    let mut accel = gpu_accel(AcceleratorConfig::gpu());
    let square = Kernel::new(
        "square",
        "@group(0) @binding(0) var<storage, read> x: array<u32>;
         @group(0) @binding(1) var<storage, read_write> y: array<u32>;
         @compute @workgroup_size(64)
         fn main(@builtin(global_invocation_id) id: vec3<u32>) {
             if (id.x < arrayLength(&x)) { y[id.x] = x[id.x] * x[id.x]; }
         }",
    )
    .with_cpu(|inputs| {
        inputs[0]
            .chunks_exact(4)
            .flat_map(|w| {
                let v = u32::from_le_bytes(w.try_into().unwrap());
                v.wrapping_mul(v).to_le_bytes()
            })
            .collect()
    });
    let words = data_u32(1000, 9);
    let input: Arc<[u8]> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let job = Job::kernel(square, vec![input], 4000, [16, 1, 1]);
    let (sink, mut results) = ResultSink::queue();
    let mut client = accel.client(sink).unwrap();
    let cpu = job.run_on_cpu().unwrap();
    // One after the other, so the second reuses the first one's buffers.
    for i in 0..2 {
        client.submit(i, job.clone()).unwrap();
        let r = run_one(&mut results);
        assert_eq!(r.output.unwrap(), cpu);
        assert_eq!(r.path.is_gpu(), accel.path().is_gpu());
    }
    let s = accel.stats();
    if accel.path().is_gpu() {
        assert_eq!(s.pipelines_compiled, 1, "compiled once, then cached: {s:?}");
        assert!(s.pipeline_cache_hits >= 1, "{s:?}");
        assert!(
            s.buffer_pool_hits >= 3,
            "input, output and read-back reused: {s:?}"
        );
    }
    accel.stop().unwrap();
}

/// An application worker that sends jobs from `init` and receives their
/// results as ordinary messages in its loop.
enum Msg {
    Result(Box<JobResult>),
    Report,
}

struct Requester {
    connector: shared_nothing::accel::AccelConnector,
}

struct ReqState {
    client: shared_nothing::accel::AccelClient,
    got: Vec<JobResult>,
}

impl Worker for Requester {
    type State = ReqState;
    type Message = Msg;
    type Reply = Vec<(u64, u64, bool)>;
    fn init(&mut self) -> Result<ReqState> {
        let sink = ResultSink::to_current_worker(|r: JobResult| Msg::Result(Box::new(r)))?;
        let mut client = self.connector.client(sink)?;
        for i in 0..20u32 {
            client.submit(u64::from(i), Job::reduce((0..=i).collect::<Vec<_>>()))?;
        }
        Ok(ReqState {
            client,
            got: Vec::new(),
        })
    }
    fn handle_message(
        &mut self,
        s: &mut ReqState,
        mut m: Envelope<Msg, Vec<(u64, u64, bool)>>,
    ) -> Result<()> {
        match std::mem::replace(&mut m.payload, Msg::Report) {
            Msg::Result(r) => s.got.push(*r),
            Msg::Report => {
                let _ = &s.client;
                let sums: Vec<(u64, u64, bool)> = s
                    .got
                    .iter()
                    .map(|r| match &r.output {
                        Ok(Output::Reduction(x)) => (r.tag, x.sum, r.path.is_gpu()),
                        other => panic!("{other:?}"),
                    })
                    .collect();
                m.reply(sums)?;
            }
        }
        Ok(())
    }
}

#[test]
fn results_arrive_in_a_real_workers_loop() {
    let mut accel = gpu_accel(AcceleratorConfig::gpu());
    let mut w = shared_nothing::worker::spawn(
        Requester {
            connector: accel.connector(),
        },
        WorkerConfig::new()
            .with_name("requester")
            .with_queue_capacity(4),
    )
    .unwrap();
    // A queue of 4 for 20 results: the sink backlogs and flushes, never drops.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let sums = loop {
        let sums: Vec<(u64, u64, bool)> = w.request(Msg::Report).unwrap().wait().unwrap();
        if sums.len() == 20 || std::time::Instant::now() > deadline {
            break sums;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(sums.len(), 20, "every result arrives");
    for (tag, sum, gpu) in sums {
        assert_eq!(sum, tag * (tag + 1) / 2);
        assert_eq!(gpu, accel.path().is_gpu());
    }
    w.stop().unwrap();
    accel.stop().unwrap();
}

#[test]
fn the_pool_starts_planned_accelerators_or_says_why_not() {
    // Software adapters get a GPU worker only when asked for explicitly.
    let pool = WorkerPool::from_config(PoolConfig::new().with_gpu_workers(if require_gpu() {
        1
    } else {
        0
    }))
    .unwrap();
    let mut accels = pool.start_accelerators().unwrap();
    assert_eq!(accels.len(), 1);
    let a = accels.get(0).unwrap();
    match (pool.plan().gpu_workers.first(), accels.fallback_reason()) {
        (Some(g), None) => {
            assert_eq!(
                a.adapter().map(|i| i.name.as_str()),
                Some(g.gpu_name.as_str())
            );
            assert!(a.path().is_gpu());
        }
        (None, Some(why)) => {
            assert!(!a.path().is_gpu());
            assert_eq!(Some(why), pool.plan().gpu_fallback.as_deref());
            eprintln!("CPU fallback: {why}");
        }
        other => panic!("plan and accelerators disagree: {other:?}"),
    }
    let (sink, mut results) = ResultSink::queue();
    let mut client = accels.client(0, sink).unwrap();
    client
        .submit(5, Job::checksum(b"123456789".to_vec(), 4))
        .unwrap();
    let r = run_one(&mut results);
    assert_eq!(
        r.output.unwrap(),
        Output::Checksums(crc32c_blocks(b"123456789", 4))
    );
    drop(client);
    accels.stop_all().unwrap();
}
