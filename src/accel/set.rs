//! A set of accelerators: what the pool starts from its plan.

use super::accelerator::{AccelClient, Accelerator};
use super::config::AcceleratorConfig;
use super::job::JobResult;
use crate::worker::ResultSink;
use crate::{Error, Result};

/// One accelerator per planned GPU worker, or a single CPU-path accelerator
/// when the plan has none (with the plan's reason).
///
/// ```
/// use shared_nothing::accel::{AcceleratorConfig, Accelerators};
/// let mut set = Accelerators::start(vec![AcceleratorConfig::cpu("no GPU planned")], Some("no GPU planned".into())).unwrap();
/// assert_eq!(set.len(), 1);
/// assert_eq!(set.fallback_reason(), Some("no GPU planned"));
/// set.stop_all().unwrap();
/// ```
#[derive(Debug)]
pub struct Accelerators {
    workers: Vec<Accelerator>,
    fallback: Option<String>,
}

impl Accelerators {
    /// One sampler per accelerator, for the pool's metrics.
    pub(crate) fn sample_sources(&self) -> Vec<super::AccelSource> {
        self.workers
            .iter()
            .map(super::Accelerator::sample_source)
            .collect()
    }

    /// Starts one accelerator per configuration; `fallback` is why the set
    /// runs on the CPU path, if it does.
    ///
    /// # Errors
    /// As [`Accelerator::start`]; those already started are stopped.
    pub fn start(configs: Vec<AcceleratorConfig>, fallback: Option<String>) -> Result<Self> {
        let mut workers = Vec::with_capacity(configs.len());
        for c in configs {
            workers.push(Accelerator::start(c)?);
        }
        Ok(Self { workers, fallback })
    }

    /// Why there is no GPU worker (the plan's `gpu_fallback`), if there is
    /// none.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// How many accelerators run.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The accelerator at `index`.
    pub fn get(&self, index: usize) -> Option<&Accelerator> {
        self.workers.get(index)
    }

    /// All accelerators.
    pub fn iter(&self) -> impl Iterator<Item = &Accelerator> {
        self.workers.iter()
    }

    /// A client of accelerator `index % len` (so callers can spread by
    /// their own index).
    ///
    /// # Errors
    /// `NoSuchWorker` for an empty set; as [`Accelerator::client`].
    pub fn client(&self, index: usize, sink: ResultSink<JobResult>) -> Result<AccelClient> {
        if self.workers.is_empty() {
            return Err(Error::NoSuchWorker { index, len: 0 });
        }
        self.workers[index % self.workers.len()].client(sink)
    }

    /// Stops every accelerator (each finishes and delivers what it
    /// accepted).
    ///
    /// # Errors
    /// The first failure; the others are still stopped.
    pub fn stop_all(&mut self) -> Result<()> {
        let mut first = Ok(());
        for w in &mut self.workers {
            if let Err(e) = w.stop()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}
