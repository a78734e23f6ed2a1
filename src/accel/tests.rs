//! Unit tests: the accelerator's own behaviour (queueing, stop, fallback,
//! retry). Cross-path equality of every kernel is in `tests/accel.rs`.

use super::*;
use crate::worker::ResultSink;
use std::time::Duration;

fn recv(q: &mut crate::worker::ResultQueue<JobResult>) -> JobResult {
    q.recv_timeout(Duration::from_secs(120)).expect("a result")
}

#[test]
fn cpu_path_runs_every_builtin_and_says_why() {
    let mut a = Accelerator::start(AcceleratorConfig::cpu("unit test")).unwrap();
    assert_eq!(
        a.path(),
        &ExecPath::Cpu {
            reason: "unit test".into()
        }
    );
    assert!(a.adapter().is_none());
    let (sink, mut q) = ResultSink::queue();
    let mut c = a.client(sink).unwrap();
    c.submit(0, Job::checksum(b"123456789".to_vec(), 4))
        .unwrap();
    c.submit(1, Job::reduce(vec![5, 1, 9])).unwrap();
    c.submit(2, Job::saxpy(0.5, vec![2.0, 4.0], vec![1.0, 1.0]))
        .unwrap();
    let mut got: Vec<JobResult> = (0..3).map(|_| recv(&mut q)).collect();
    got.sort_by_key(|r| r.tag);
    assert_eq!(
        got[0].output,
        Ok(Output::Checksums(crc32c_blocks(b"123456789", 4)))
    );
    assert_eq!(
        got[1].output,
        Ok(Output::Reduction(Reduction {
            sum: 15,
            min: 1,
            max: 9,
            count: 3
        }))
    );
    assert_eq!(got[2].output, Ok(Output::F32(vec![2.0, 3.0])));
    assert!(
        got.iter()
            .all(|r| !r.path.is_gpu() && r.gpu_error.is_none())
    );
    a.stop().unwrap();
    let s = a.stats();
    assert_eq!((s.jobs_cpu, s.jobs_gpu, s.failed), (3, 0, 0));
}

#[test]
fn stop_finishes_everything_accepted_and_refuses_the_rest() {
    let mut a =
        Accelerator::start(AcceleratorConfig::cpu("unit test").with_queue_capacity(4)).unwrap();
    let (sink, mut q) = ResultSink::queue();
    let mut c = a.client(sink).unwrap();
    let producer = std::thread::spawn(move || {
        let mut accepted = 0u64;
        for i in 0..10_000u64 {
            match c.submit(i, Job::reduce(vec![i as u32])) {
                Ok(()) => accepted += 1,
                Err(e) => {
                    assert!(!e.is_full(), "submit waits instead of reporting Full");
                    break;
                }
            }
        }
        accepted
    });
    std::thread::sleep(Duration::from_millis(5));
    a.stop().unwrap();
    let accepted = producer.join().unwrap();
    let mut delivered = 0;
    while q.try_recv().is_some() {
        delivered += 1;
    }
    assert_eq!(delivered, accepted, "every accepted job has a result");
}

#[test]
fn try_submit_hands_the_job_back_when_full_or_stopped() {
    let mut a =
        Accelerator::start(AcceleratorConfig::cpu("unit test").with_queue_capacity(1)).unwrap();
    let (sink, _q) = ResultSink::queue();
    let mut c = a.client(sink).unwrap();
    // Flood: some try_submit must find the queue full, and hand the job back.
    let mut full = 0;
    for i in 0..1000 {
        if let Err(e) = c.try_submit(i, Job::reduce(vec![0; 1000])) {
            assert!(e.is_full());
            assert!(matches!(e.into_inner(), Job::Reduce { .. }));
            full += 1;
        }
    }
    assert!(full > 0, "a queue of 1 was never full");
    a.stop().unwrap();
    let e = c.try_submit(0, Job::reduce(vec![1])).unwrap_err();
    assert!(matches!(e, SubmitError::Stopped(_)));
    // One shape for every service worker: a stopped one is `Error::Stopped`.
    assert!(matches!(crate::Error::from(e), crate::Error::Stopped));
    assert!(a.client(ResultSink::queue().0).is_err());
}

#[test]
fn custom_kernel_without_cpu_path_is_a_typed_error_on_the_cpu_path() {
    let job = Job::kernel(
        Kernel::new("k", "x"),
        vec![vec![0u8; 4].into()],
        4,
        [1, 1, 1],
    );
    assert!(matches!(
        job.run_on_cpu(),
        Err(AccelError::NoCpuPath { .. })
    ));
    let wrong = Job::kernel(
        Kernel::new("k", "x").with_cpu(|_| vec![0u8; 3]),
        vec![vec![0u8; 4].into()],
        4,
        [1, 1, 1],
    );
    assert!(matches!(
        wrong.run_on_cpu(),
        Err(AccelError::InvalidJob { .. })
    ));
    let zero_wg = Job::kernel(Kernel::new("k", "x"), vec![], 4, [0, 1, 1]);
    assert!(matches!(
        zero_wg.validate(),
        Err(AccelError::InvalidJob { .. })
    ));
}

#[cfg(not(feature = "gpu"))]
#[test]
fn without_feature_gpu_the_gpu_config_runs_on_the_cpu_path() {
    let a = Accelerator::start(AcceleratorConfig::gpu()).unwrap();
    assert_eq!(
        a.path(),
        &ExecPath::Cpu {
            reason: "built without feature gpu".into()
        }
    );
}

/// An adapter loss between jobs: nothing is lost, every job reruns on the
/// CPU path with the typed error, and later jobs stay there.
#[cfg(feature = "gpu")]
#[test]
fn device_loss_reruns_jobs_on_the_cpu_path() {
    let require = std::env::var("SHARED_NOTHING_REQUIRE_GPU").as_deref() == Ok("1");
    let mut a = Accelerator::start(AcceleratorConfig::gpu()).unwrap();
    if !a.path().is_gpu() {
        assert!(!require, "no GPU path: {}", a.path());
        eprintln!("no GPU path, skipping the loss test: {}", a.path());
        return;
    }
    let (sink, mut q) = ResultSink::queue();
    let mut c = a.client(sink).unwrap();
    let data: Vec<u32> = (0..100_000).collect();
    let want = Output::Reduction(reduce_u32(&data));
    c.submit(0, Job::reduce(data.clone())).unwrap();
    let first = recv(&mut q);
    assert!(first.path.is_gpu(), "{}", first.path);
    assert_eq!(first.output.as_ref().unwrap(), &want);

    a.inject_device_loss().unwrap();
    for i in 1..=3 {
        c.submit(i, Job::reduce(data.clone())).unwrap();
    }
    for _ in 1..=3 {
        let r = recv(&mut q);
        assert_eq!(r.output.as_ref().unwrap(), &want, "the job is not lost");
        assert!(!r.path.is_gpu(), "{}", r.path);
    }
    a.stop().unwrap();
    let s = a.stats();
    assert_eq!(s.jobs_gpu, 1);
    assert_eq!(s.jobs_cpu, 3);
}

/// The first job after a loss meets the lost device: it is retried on the
/// CPU path and its result carries the typed error.
#[cfg(feature = "gpu")]
#[test]
fn a_failed_submission_carries_the_typed_device_error() {
    let mut a = Accelerator::start(AcceleratorConfig::gpu()).unwrap();
    if !a.path().is_gpu() {
        return;
    }
    let (sink, mut q) = ResultSink::queue();
    let mut c = a.client(sink).unwrap();
    a.inject_device_loss().unwrap();
    c.submit(1, Job::saxpy(2.0, vec![1.0; 64], vec![0.0; 64]))
        .unwrap();
    let r = recv(&mut q);
    assert_eq!(r.output.unwrap(), Output::F32(vec![2.0; 64]));
    assert!(!r.path.is_gpu());
    assert!(
        matches!(r.gpu_error, Some(AccelError::DeviceLost { .. })),
        "{:?}",
        r.gpu_error
    );
    a.stop().unwrap();
    assert_eq!(a.stats().retried_on_cpu, 1);
}
