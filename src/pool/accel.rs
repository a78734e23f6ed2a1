//! `WorkerPool::start_accelerators`: the accelerator workers the plan
//! places.

use super::runtime::WorkerPool;
use crate::Result;
use crate::accel::{AcceleratorConfig, Accelerators};

impl WorkerPool {
    /// Starts one accelerator per planned GPU worker ([`Plan::gpu_workers`](super::Plan)),
    /// each pinned where the plan says and driving the adapter it names. With
    /// none planned it starts one CPU-path accelerator (unpinned), and
    /// [`Accelerators::fallback_reason`] gives the plan's reason
    /// ([`Plan::gpu_fallback`](super::Plan)).
    ///
    /// Software adapters (llvmpipe) are planned only when GPU workers are
    /// asked for: [`PoolConfig::with_gpu_workers`](super::PoolConfig::with_gpu_workers)
    /// or `SHARED_NOTHING_GPU_WORKERS`.
    ///
    /// # Errors
    /// As [`Accelerators::start`].
    ///
    /// ```
    /// use shared_nothing::prelude::*;
    /// use shared_nothing::accel::Job;
    /// use shared_nothing::worker::ResultSink;
    /// let pool = WorkerPool::new().unwrap();
    /// let mut accels = pool.start_accelerators().unwrap();
    /// if let Some(why) = accels.fallback_reason() {
    ///     println!("CPU path: {why}");
    /// }
    /// let (sink, mut results) = ResultSink::queue();
    /// let mut client = accels.client(0, sink).unwrap();
    /// client.submit(0, Job::reduce(vec![4, 5, 6])).unwrap();
    /// assert!(results.recv().unwrap().output.is_ok());
    /// accels.stop_all().unwrap();
    /// ```
    pub fn start_accelerators(&self) -> Result<Accelerators> {
        self.mark_gpu_started();
        let plan = self.plan();
        if plan.gpu_workers.is_empty() {
            let reason = plan
                .gpu_fallback
                .clone()
                .unwrap_or_else(|| "no GPU worker planned".to_owned());
            let accels = Accelerators::start(
                vec![AcceleratorConfig::cpu(reason.clone()).with_name("accel-cpu")],
                Some(reason),
            )?;
            self.add_accel_metrics(&accels);
            return Ok(accels);
        }
        let configs = plan
            .gpu_workers
            .iter()
            .map(|g| {
                AcceleratorConfig::adapter(g.gpu)
                    .with_expected_adapter(g.gpu_name.clone())
                    .with_cpu(g.cpu)
                    .with_name(format!("gpu-{}", g.index))
            })
            .collect();
        let accels = Accelerators::start(configs, None)?;
        self.add_accel_metrics(&accels);
        Ok(accels)
    }
}
