//! What runs an accelerator's jobs: the GPU path (feature `gpu`) or the
//! CPU path, and how each job's result and timing are put together.

use super::accelerator::{AdapterInfo, Counters};
use super::config::{AcceleratorConfig, DeviceChoice};
use super::error::AccelError;
use super::job::{CopyBandwidth, ExecPath, ExecuteClock, Job, JobResult, Timing};
use std::sync::Arc;
use std::time::Instant;

/// A job's outcome on the GPU path (nothing without feature `gpu`).
#[cfg(feature = "gpu")]
type GpuOutcomeOf = super::gpu::GpuOutcome;
#[cfg(not(feature = "gpu"))]
type GpuOutcomeOf = std::convert::Infallible;

/// What runs the jobs.
pub(super) enum Engine {
    Cpu {
        reason: String,
        counters: Arc<Counters>,
    },
    #[cfg(feature = "gpu")]
    Gpu(Box<super::gpu::Gpu>),
}

impl Engine {
    pub(super) fn open(config: &AcceleratorConfig, counters: Arc<Counters>) -> Self {
        match &config.device {
            DeviceChoice::Cpu { reason } => Self::Cpu {
                reason: reason.clone(),
                counters,
            },
            #[cfg(not(feature = "gpu"))]
            DeviceChoice::Gpu { .. } => Self::Cpu {
                reason: "built without feature gpu".into(),
                counters,
            },
            #[cfg(feature = "gpu")]
            DeviceChoice::Gpu {
                index,
                expected_name,
            } => {
                let spec = super::gpu::AdapterSpec {
                    index: *index,
                    expected_name: expected_name.clone(),
                };
                let tuning = super::gpu::GpuTuning {
                    chunk_bytes: config.chunk_bytes,
                    pool_bytes: config.pool_bytes,
                    poll_timeout: config.poll_timeout,
                    max_in_flight: config.max_in_flight,
                    crc_segment: config.crc_segment,
                    workgroup_cap: config.workgroup_cap,
                    timestamps: config.timestamps,
                    subgroups: config.subgroups,
                };
                let c = counters.clone();
                // A driver that panics while opening leaves the CPU path.
                match std::panic::catch_unwind(move || super::gpu::Gpu::open(&spec, tuning, c)) {
                    Ok(Ok(gpu)) => Self::Gpu(Box::new(gpu)),
                    Ok(Err(e)) => Self::Cpu {
                        reason: e.to_string(),
                        counters,
                    },
                    Err(p) => Self::Cpu {
                        reason: format!(
                            "wgpu panicked while opening the adapter: {}",
                            crate::error::panic_message(&*p)
                        ),
                        counters,
                    },
                }
            }
        }
    }

    pub(super) fn path(&self) -> ExecPath {
        match self {
            Self::Cpu { reason, .. } => ExecPath::Cpu {
                reason: reason.clone(),
            },
            #[cfg(feature = "gpu")]
            Self::Gpu(g) => ExecPath::Gpu {
                adapter: g.info.name.clone(),
            },
        }
    }

    pub(super) fn adapter(&self) -> Option<AdapterInfo> {
        match self {
            Self::Cpu { .. } => None,
            #[cfg(feature = "gpu")]
            Self::Gpu(g) => Some(g.info.clone()),
        }
    }

    pub(super) fn counters(&self) -> &Counters {
        match self {
            Self::Cpu { counters, .. } => counters,
            #[cfg(feature = "gpu")]
            Self::Gpu(g) => g.counters(),
        }
    }

    pub(super) fn copy_bandwidth(
        &mut self,
        bytes: u64,
        copies: u32,
    ) -> std::result::Result<CopyBandwidth, AccelError> {
        #[cfg(not(feature = "gpu"))]
        let _ = (bytes, copies);
        match self {
            Self::Cpu { reason, .. } => Err(AccelError::NoAdapter {
                reason: format!("the CPU path has no device to copy on ({reason})"),
            }),
            #[cfg(feature = "gpu")]
            Self::Gpu(g) => {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    g.copy_bandwidth(bytes, copies)
                }));
                ran.unwrap_or_else(|p| {
                    g.lose_device();
                    Err(AccelError::Device {
                        message: format!("wgpu panicked: {}", crate::error::panic_message(&*p)),
                    })
                })
            }
        }
    }

    pub(super) fn lose_device(&mut self) {
        #[cfg(feature = "gpu")]
        if let Self::Gpu(g) = self {
            g.lose_device();
        }
    }

    /// Runs a batch of jobs; one result per job, in order.
    pub(super) fn run(&mut self, batch: Vec<(u64, u64, Job, Instant)>) -> Vec<(u64, JobResult)> {
        let picked = Instant::now();
        let path = self.path();
        // Invalid jobs fail the same way on every path.
        let checked: Vec<Result<(), AccelError>> = batch.iter().map(|b| b.2.validate()).collect();
        let mut gpu_outcomes = self.run_gpu(&batch, &checked);
        let mut out = Vec::with_capacity(batch.len());
        for (i, ((client, tag, job, at), check)) in batch.into_iter().zip(checked).enumerate() {
            let mut result = JobResult {
                tag,
                job: job.name().to_owned(),
                output: Err(AccelError::Stopped),
                path: path.clone(),
                gpu_error: None,
                timing: Timing::default(),
            };
            if let Err(e) = check {
                result.output = Err(e);
                result.timing.queued = picked.saturating_duration_since(at);
                result.timing.total = at.elapsed();
            } else {
                let outcome = gpu_outcomes.as_mut().and_then(|o| o[i].take());
                self.finish_job(&mut result, &job, at, outcome);
            }
            let c = self.counters();
            let t = &result.timing;
            c.queued_ns.record(t.queued.as_nanos() as u64);
            c.transfer_ns.record(t.transfer().as_nanos() as u64);
            c.execute_ns.record(t.execute.as_nanos() as u64);
            if result.output.is_err() {
                c.failed.add(1);
            } else if result.path.is_gpu() {
                c.jobs_gpu.add(1);
            } else {
                c.jobs_cpu.add(1);
            }
            out.push((client, result));
        }
        self.demote_if_lost();
        out
    }

    /// Fills in a valid job's output and timing from its GPU outcome, or
    /// runs it on the CPU path (no outcome, or a device failure).
    fn finish_job(
        &mut self,
        result: &mut JobResult,
        job: &Job,
        at: Instant,
        outcome: Option<GpuOutcomeOf>,
    ) {
        let rerun_after: Option<AccelError> = match outcome {
            #[cfg(feature = "gpu")]
            Some(super::gpu::GpuOutcome::Done(o, t)) => {
                result.output = Ok(o);
                let started = t.started.unwrap_or_else(Instant::now);
                result.timing = Timing {
                    queued: started.saturating_duration_since(at),
                    upload: t.upload,
                    execute: t.execute,
                    readback: t.readback,
                    total: t
                        .finished
                        .unwrap_or_else(Instant::now)
                        .saturating_duration_since(at),
                    clock: if t.device_clock {
                        ExecuteClock::DeviceTimestamps
                    } else {
                        ExecuteClock::HostMarks
                    },
                };
                return;
            }
            #[cfg(feature = "gpu")]
            Some(super::gpu::GpuOutcome::Failed(e)) => {
                result.output = Err(e);
                result.timing.total = at.elapsed();
                return;
            }
            #[cfg(feature = "gpu")]
            Some(super::gpu::GpuOutcome::Retry(e)) => Some(e),
            #[cfg(not(feature = "gpu"))]
            Some(never) => match never {},
            None => None,
        };
        let t = Instant::now();
        if let Some(e) = rerun_after {
            self.counters().retried.add(1);
            tracing::warn!(tag = result.tag, error = %e, "GPU job failed: rerun on the CPU path");
            result.path = ExecPath::Cpu {
                reason: format!("rerun after a GPU failure: {e}"),
            };
            result.output = job.run_on_cpu().map_err(|cpu_err| match cpu_err {
                AccelError::NoCpuPath { kernel, .. } => AccelError::NoCpuPath {
                    kernel,
                    cause: e.to_string(),
                },
                other => other,
            });
            result.gpu_error = Some(e);
        } else {
            result.output = job.run_on_cpu();
        }
        result.timing = Timing {
            queued: t.saturating_duration_since(at),
            execute: t.elapsed(),
            total: at.elapsed(),
            clock: ExecuteClock::Cpu,
            ..Timing::default()
        };
    }

    #[cfg(feature = "gpu")]
    fn run_gpu(
        &mut self,
        batch: &[(u64, u64, Job, Instant)],
        checked: &[Result<(), AccelError>],
    ) -> Option<Vec<Option<GpuOutcomeOf>>> {
        let Self::Gpu(g) = self else { return None };
        let idx: Vec<usize> = (0..batch.len()).filter(|&i| checked[i].is_ok()).collect();
        let jobs: Vec<&Job> = idx.iter().map(|&i| &batch[i].2).collect();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.run_batch(&jobs)));
        let mut all: Vec<Option<super::gpu::GpuOutcome>> = (0..batch.len()).map(|_| None).collect();
        match ran {
            Ok(outcomes) => {
                for (i, o) in idx.into_iter().zip(outcomes) {
                    all[i] = Some(o);
                }
            }
            Err(p) => {
                let e = AccelError::Device {
                    message: format!("wgpu panicked: {}", crate::error::panic_message(&*p)),
                };
                g.counters().device_errors.add(1);
                for i in idx {
                    all[i] = Some(super::gpu::GpuOutcome::Retry(e.clone()));
                }
                // A device that panicked is not trusted again.
                g.lose_device();
            }
        }
        Some(all)
    }

    #[cfg(not(feature = "gpu"))]
    fn run_gpu(
        &mut self,
        _: &[(u64, u64, Job, Instant)],
        _: &[Result<(), AccelError>],
    ) -> Option<Vec<Option<GpuOutcomeOf>>> {
        None
    }

    /// After an adapter loss, every later job runs on the CPU path.
    fn demote_if_lost(&mut self) {
        #[cfg(feature = "gpu")]
        if let Self::Gpu(g) = self
            && let Some(reason) = g.lost()
        {
            let counters = g.counters_arc();
            tracing::error!(reason = %reason, "GPU lost: every later job runs on the CPU path");
            *self = Self::Cpu {
                reason: format!("the GPU was lost ({reason})"),
                counters,
            };
        }
    }
}
