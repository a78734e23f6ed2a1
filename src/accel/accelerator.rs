//! The accelerator worker: a dedicated thread that owns one device (or the
//! CPU path), takes jobs from its clients over an MPSC channel, batches
//! them, and delivers each result through the submitting client's
//! [`ResultSink`].

use super::config::{AcceleratorConfig, DeviceChoice};
use super::engine::Engine;
use super::error::{AccelError, SubmitError};
use super::job::{CopyBandwidth, ExecPath, Job, JobResult};
use crate::channel::{Channel, mpsc};
use crate::metrics::{HistogramSnapshot, LocalCounter, LocalHistogram};
use crate::worker::ResultSink;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The adapter an accelerator drives, and what the accelerator uses of it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdapterInfo {
    /// Adapter name (for example `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// Backend (`Vulkan`).
    pub backend: String,
    /// Device type (`DiscreteGpu`, `IntegratedGpu`, `Cpu` for a software
    /// rasteriser).
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Whether jobs are timed with the device's timestamp queries
    /// ([`ExecuteClock::DeviceTimestamps`](super::ExecuteClock::DeviceTimestamps))
    /// rather than host marks.
    pub timestamp_queries: bool,
    /// Whether the reduction kernel uses subgroup operations.
    pub subgroups: bool,
    /// Workgroup sizes of the checksum, reduction and saxpy kernels, from
    /// the adapter's limits.
    pub workgroup_sizes: [u32; 3],
}

/// Counters written by the accelerator thread only.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub jobs_gpu: LocalCounter,
    pub jobs_cpu: LocalCounter,
    pub retried: LocalCounter,
    pub failed: LocalCounter,
    pub batches: LocalCounter,
    pub submits: LocalCounter,
    pub compiles: LocalCounter,
    pub cache_hits: LocalCounter,
    pub pool_hits: LocalCounter,
    pub pool_misses: LocalCounter,
    pub device_errors: LocalCounter,
    /// Per job: time queued, moving data, executing (every job; the
    /// accelerator's thread is the only writer).
    pub queued_ns: LocalHistogram,
    pub transfer_ns: LocalHistogram,
    pub execute_ns: LocalHistogram,
}

impl Counters {
    fn snapshot(&self) -> AccelStats {
        AccelStats {
            jobs_gpu: self.jobs_gpu.get(),
            jobs_cpu: self.jobs_cpu.get(),
            retried_on_cpu: self.retried.get(),
            failed: self.failed.get(),
            batches: self.batches.get(),
            submits: self.submits.get(),
            pipelines_compiled: self.compiles.get(),
            pipeline_cache_hits: self.cache_hits.get(),
            buffer_pool_hits: self.pool_hits.get(),
            buffer_pool_misses: self.pool_misses.get(),
            device_errors: self.device_errors.get(),
        }
    }
}

/// A snapshot of an accelerator's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccelStats {
    /// Jobs completed on the GPU path.
    pub jobs_gpu: u64,
    /// Jobs completed on the CPU path (including retries).
    pub jobs_cpu: u64,
    /// Jobs rerun on the CPU path after a device error.
    pub retried_on_cpu: u64,
    /// Jobs whose result is an error.
    pub failed: u64,
    /// Batches taken off the queue.
    pub batches: u64,
    /// Device submissions.
    pub submits: u64,
    /// Pipelines compiled.
    pub pipelines_compiled: u64,
    /// Pipeline cache hits.
    pub pipeline_cache_hits: u64,
    /// Buffers reused from the pool.
    pub buffer_pool_hits: u64,
    /// Buffers created.
    pub buffer_pool_misses: u64,
    /// Device errors seen.
    pub device_errors: u64,
}

/// What the pool's metrics read from one accelerator at a scrape.
#[derive(Debug, Clone)]
pub(crate) struct AccelSample {
    pub(crate) name: String,
    /// Whether it started on the GPU path.
    pub(crate) gpu: bool,
    pub(crate) stats: AccelStats,
    pub(crate) queued: HistogramSnapshot,
    pub(crate) transfer: HistogramSnapshot,
    pub(crate) execute: HistogramSnapshot,
}

/// Samples an accelerator while it exists.
pub(crate) type AccelSource = Box<dyn Fn() -> Option<AccelSample> + Send + Sync>;

/// What the accelerator's clients and handle share with its thread.
#[derive(Debug)]
struct Shared {
    closing: AtomicBool,
    /// Submissions between their `closing` check and their send.
    in_flight: AtomicUsize,
    next_client: AtomicU64,
    counters: Arc<Counters>,
}

enum Request {
    Register(u64, ResultSink<JobResult>),
    Unregister(u64),
    Job {
        client: u64,
        tag: u64,
        job: Job,
        at: Instant,
    },
    CopyBandwidth {
        bytes: u64,
        copies: u32,
        reply: crate::channel::spsc::Sender<std::result::Result<CopyBandwidth, AccelError>>,
    },
    LoseDevice,
    Stop,
}

/// Creates clients of one accelerator; cheap to clone and `Send`, so each
/// application worker can take one and call [`client`](Self::client) in
/// its `init`.
///
/// ```
/// use shared_nothing::accel::{Accelerator, AcceleratorConfig};
/// use shared_nothing::worker::ResultSink;
/// let mut accel = Accelerator::start(AcceleratorConfig::cpu("doc example")).unwrap();
/// let connector = accel.connector();
/// let t = std::thread::spawn(move || {
///     let (sink, mut results) = ResultSink::queue();
///     let mut client = connector.client(sink).unwrap();
///     client.submit(1, shared_nothing::accel::Job::reduce(vec![1, 2, 3])).unwrap();
///     results.recv().unwrap().tag
/// });
/// assert_eq!(t.join().unwrap(), 1);
/// accel.stop().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct AccelConnector {
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Register(c, _) => write!(f, "Register({c})"),
            Self::Unregister(c) => write!(f, "Unregister({c})"),
            Self::Job {
                client, tag, job, ..
            } => {
                write!(f, "Job({client}, {tag}, {})", job.name())
            }
            Self::CopyBandwidth { bytes, copies, .. } => {
                write!(f, "CopyBandwidth({bytes}, {copies})")
            }
            Self::LoseDevice => f.write_str("LoseDevice"),
            Self::Stop => f.write_str("Stop"),
        }
    }
}

impl AccelConnector {
    /// A client whose results go to `sink`: build it with
    /// [`ResultSink::to_current_worker`] inside a worker's `init` (results
    /// arrive as messages in its loop), or [`ResultSink::queue`] for a plain
    /// thread.
    ///
    /// # Errors
    /// [`AccelError::Stopped`] (as [`Error::Accel`]) if the accelerator has
    /// stopped.
    pub fn client(&self, sink: ResultSink<JobResult>) -> Result<AccelClient> {
        let id = self.shared.next_client.fetch_add(1, Ordering::Relaxed);
        self.send(Request::Register(id, sink))
            .map_err(|_| Error::Accel(AccelError::Stopped))?;
        Ok(AccelClient {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            id,
        })
    }

    /// Sends unless the accelerator is closing. `in_flight` brackets the
    /// check and the send, and the accelerator waits for it to reach zero
    /// after setting `closing` (both SeqCst, Dekker-style), so a request is
    /// either refused here or received there, never dropped in between.
    // The request comes back unboxed: the failure path is rare and the
    // caller unpacks the job from it at once.
    #[allow(clippy::result_large_err)]
    fn send(&self, r: Request) -> std::result::Result<(), Request> {
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let out = if self.shared.closing.load(Ordering::SeqCst) {
            Err(r)
        } else {
            self.tx.send(r).map_err(|e| e.into_inner())
        };
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        out
    }

    #[allow(clippy::result_large_err)]
    fn try_send(&self, r: Request) -> std::result::Result<(), (bool, Request)> {
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let out = if self.shared.closing.load(Ordering::SeqCst) {
            Err((false, r))
        } else {
            self.tx.try_send(r).map_err(|e| {
                let full = e.is_full();
                (full, e.into_inner())
            })
        };
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

/// One requester's connection to an accelerator: submits jobs, whose
/// results come back through the client's [`ResultSink`] in submission
/// order per batch, each tagged with the caller's `tag`.
///
/// ```
/// use shared_nothing::accel::{Accelerator, AcceleratorConfig, Job, Output};
/// use shared_nothing::worker::ResultSink;
/// let mut accel = Accelerator::start(AcceleratorConfig::gpu()).unwrap();
/// let (sink, mut results) = ResultSink::queue();
/// let mut client = accel.client(sink).unwrap();
/// client.submit(7, Job::checksum(b"123456789".to_vec(), 12)).unwrap();
/// let r = results.recv().unwrap();
/// assert_eq!(r.tag, 7);
/// assert_eq!(r.output.unwrap(), Output::Checksums(vec![0xE306_9283]));
/// println!("ran on {}", r.path);
/// accel.stop().unwrap();
/// ```
#[derive(Debug)]
pub struct AccelClient {
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    id: u64,
}

impl AccelClient {
    fn connector(&self) -> AccelConnector {
        AccelConnector {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Submits a job, waiting while the accelerator's queue is full.
    ///
    /// # Errors
    /// [`SubmitError::Stopped`] with the job if the accelerator has stopped.
    pub fn submit(&mut self, tag: u64, job: Job) -> std::result::Result<(), SubmitError> {
        let r = Request::Job {
            client: self.id,
            tag,
            job,
            at: Instant::now(),
        };
        self.connector().send(r).map_err(|r| match r {
            Request::Job { job, .. } => SubmitError::Stopped(job),
            _ => unreachable!("a job request comes back as itself"),
        })
    }

    /// Submits a job without waiting.
    ///
    /// # Errors
    /// [`SubmitError::Full`] with the job if the queue is full (try again
    /// after handling some results), [`SubmitError::Stopped`] if the
    /// accelerator has stopped.
    pub fn try_submit(&mut self, tag: u64, job: Job) -> std::result::Result<(), SubmitError> {
        let r = Request::Job {
            client: self.id,
            tag,
            job,
            at: Instant::now(),
        };
        self.connector().try_send(r).map_err(|(full, r)| match r {
            Request::Job { job, .. } if full => SubmitError::Full(job),
            Request::Job { job, .. } => SubmitError::Stopped(job),
            _ => unreachable!("a job request comes back as itself"),
        })
    }
}

impl Drop for AccelClient {
    fn drop(&mut self) {
        // Results already owed still reach the sink; then it is dropped.
        let _ = self.connector().send(Request::Unregister(self.id));
    }
}

/// An accelerator worker: a dedicated thread driving one GPU through wgpu,
/// or running the same jobs on the CPU path when there is no usable GPU.
///
/// Jobs come from [`AccelClient`]s; results go back through each client's
/// [`ResultSink`], so an application worker receives them in its own loop
/// like I/O completions. Consecutive jobs are batched into one device
/// submission; kernels are compiled once; device buffers are pooled. A
/// device error or the loss of the adapter never loses a job: it reruns on
/// the CPU path, and the result says so ([`JobResult::path`],
/// [`JobResult::gpu_error`]). After an adapter loss every later job runs on
/// the CPU path.
///
/// ```
/// use shared_nothing::accel::{Accelerator, AcceleratorConfig, Job, Output};
/// use shared_nothing::worker::ResultSink;
/// let mut accel = Accelerator::start(AcceleratorConfig::gpu()).unwrap();
/// println!("accelerator path: {}", accel.path());
/// let (sink, mut results) = ResultSink::queue();
/// let mut client = accel.client(sink).unwrap();
/// client.submit(0, Job::saxpy(2.0, vec![1.0, 2.0], vec![1.0, 1.0])).unwrap();
/// assert_eq!(results.recv().unwrap().output.unwrap(), Output::F32(vec![3.0, 5.0]));
/// accel.stop().unwrap();
/// ```
#[derive(Debug)]
pub struct Accelerator {
    connector: AccelConnector,
    path: ExecPath,
    adapter: Option<AdapterInfo>,
    name: String,
    join: Option<JoinHandle<()>>,
}

impl Accelerator {
    /// Starts the accelerator thread, opens its device there, and waits
    /// until it is ready. A GPU that cannot be opened (or a build without
    /// feature `gpu`) gives the CPU path, with the reason in
    /// [`path`](Self::path).
    ///
    /// # Errors
    /// [`Error::Spawn`] if the OS refuses the thread.
    pub fn start(config: AcceleratorConfig) -> Result<Self> {
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            closing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            next_client: AtomicU64::new(0),
            counters: counters.clone(),
        });
        let (tx, rx) = Channel::mpsc(config.queue_capacity);
        let (mut ready_tx, mut ready_rx) = Channel::spsc(1);
        let name = config.name.clone();
        let gpu_wanted = matches!(config.device, DeviceChoice::Gpu { .. });
        let thread_shared = shared.clone();
        let join = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Some(cpu) = config.cpu {
                    // Best effort: an unusable CPU leaves the thread unpinned.
                    let _ = crate::topology::pin_current_thread(cpu);
                }
                let engine = Engine::open(&config, counters);
                let _ = ready_tx.send((engine.path(), engine.adapter()));
                run(engine, rx, thread_shared, &config);
            })
            .map_err(|source| Error::Spawn {
                worker: name.clone(),
                source,
            })?;
        let (path, adapter) = ready_rx.recv().map_err(|_| Error::Init {
            worker: name.clone(),
            message: "the accelerator thread died while opening its device".into(),
        })?;
        trace_started(&name, &path, adapter.as_ref(), gpu_wanted);
        Ok(Self {
            connector: AccelConnector { tx, shared },
            path,
            adapter,
            name,
            join: Some(join),
        })
    }

    /// Which path this accelerator runs jobs on (at start; after an adapter
    /// loss, results report the CPU path).
    pub fn path(&self) -> &ExecPath {
        &self.path
    }

    /// The adapter, when the GPU path was opened.
    pub fn adapter(&self) -> Option<&AdapterInfo> {
        self.adapter.as_ref()
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A cloneable, `Send` maker of clients (see [`AccelConnector`]).
    pub fn connector(&self) -> AccelConnector {
        self.connector.clone()
    }

    /// A client whose results go to `sink` (see [`AccelConnector::client`]).
    ///
    /// # Errors
    /// As [`AccelConnector::client`].
    pub fn client(&self, sink: ResultSink<JobResult>) -> Result<AccelClient> {
        self.connector.client(sink)
    }

    /// The counters (updated by the accelerator thread as it goes).
    pub fn stats(&self) -> AccelStats {
        self.connector.shared.counters.snapshot()
    }

    /// Samples this accelerator for the pool's metrics while its counters
    /// exist (`None` once the accelerator is gone).
    pub(crate) fn sample_source(&self) -> AccelSource {
        let weak = Arc::downgrade(&self.connector.shared.counters);
        let name = self.name.clone();
        let gpu = self.path.is_gpu();
        Box::new(move || {
            let c = weak.upgrade()?;
            Some(AccelSample {
                name: name.clone(),
                gpu,
                stats: c.snapshot(),
                queued: c.queued_ns.snapshot(),
                transfer: c.transfer_ns.snapshot(),
                execute: c.execute_ns.snapshot(),
            })
        })
    }

    /// Measures the device's buffer-to-buffer copy rate: `copies` copies of
    /// `bytes` (rounded up to a multiple of 4) in one submission, after one
    /// to warm up, timed from the host, on the accelerator's thread between
    /// jobs. Useful to put kernel throughput in proportion.
    ///
    /// # Errors
    /// [`AccelError::NoAdapter`] on the CPU path, [`AccelError::TooLarge`]
    /// beyond the device's largest buffer, [`AccelError::Device`] or
    /// [`AccelError::DeviceLost`] if the device fails, and
    /// [`AccelError::Stopped`] (each as [`Error::Accel`]).
    ///
    /// ```
    /// use shared_nothing::accel::{Accelerator, AcceleratorConfig};
    /// let accel = Accelerator::start(AcceleratorConfig::gpu()).unwrap();
    /// match accel.measure_copy_bandwidth(1 << 20, 4) {
    ///     Ok(bw) => println!("{:.1} GB/s", bw.bytes_per_second() / 1e9),
    ///     Err(e) => println!("no device copy: {e}"),
    /// }
    /// ```
    pub fn measure_copy_bandwidth(&self, bytes: u64, copies: u32) -> Result<CopyBandwidth> {
        let (reply, mut rx) = Channel::spsc(1);
        self.connector
            .send(Request::CopyBandwidth {
                bytes,
                copies,
                reply,
            })
            .map_err(|_| Error::Accel(AccelError::Stopped))?;
        match rx.recv() {
            Ok(r) => r.map_err(Error::Accel),
            Err(_) => Err(Error::Accel(AccelError::Stopped)),
        }
    }

    /// Destroys the device as an adapter loss would, to exercise the
    /// fallback (jobs queued before it still complete, on the CPU path).
    #[doc(hidden)]
    pub fn inject_device_loss(&self) -> Result<()> {
        self.connector
            .send(Request::LoseDevice)
            .map_err(|_| Error::Accel(AccelError::Stopped))
    }

    /// Stops accepting jobs, finishes every job already accepted, delivers
    /// every result (waiting for room in full worker queues), and joins the
    /// thread.
    ///
    /// # Errors
    /// [`Error::WorkerFailed`] if the accelerator thread panicked.
    pub fn stop(&mut self) -> Result<()> {
        let Some(join) = self.join.take() else {
            return Ok(());
        };
        let shared = &self.connector.shared;
        shared.closing.store(true, Ordering::SeqCst);
        // Wake the thread; it drains everything (see `AccelConnector::send`).
        let _ = self.connector.tx.send(Request::Stop);
        join.join().map_err(|_| Error::WorkerFailed {
            worker: self.name.clone(),
            message: "the accelerator thread panicked".into(),
        })
    }
}

impl Drop for Accelerator {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Reports an accelerator's start and its path to `tracing`: `INFO` with
/// the adapter, or the CPU path chosen in the configuration; `WARN` when a
/// GPU was asked for and the CPU path runs instead, with why.
fn trace_started(name: &str, path: &ExecPath, adapter: Option<&AdapterInfo>, gpu_wanted: bool) {
    match (path, adapter) {
        (ExecPath::Gpu { .. }, Some(a)) => tracing::info!(
            name,
            adapter = %a.name,
            backend = %a.backend,
            device_type = %a.device_type,
            driver = %a.driver,
            "accelerator started on the GPU"
        ),
        (ExecPath::Cpu { reason }, _) if gpu_wanted => {
            tracing::warn!(name, reason = %reason, "accelerator fell back to the CPU path");
        }
        (path, _) => tracing::info!(name, path = %path, "accelerator started"),
    }
}

/// The accelerator thread's loop.
fn run(
    mut engine: Engine,
    rx: mpsc::Receiver<Request>,
    shared: Arc<Shared>,
    config: &AcceleratorConfig,
) {
    let mut sinks: HashMap<u64, ResultSink<JobResult>> = HashMap::new();
    let mut draining: Vec<ResultSink<JobResult>> = Vec::new();
    let mut stopping = false;
    loop {
        let backlog = !draining.is_empty() || sinks.values().any(|s| s.backlog() > 0);
        let first = if stopping || backlog {
            rx.recv_timeout(Duration::from_micros(200)).ok()
        } else {
            rx.recv().ok()
        };
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        let mut next = first;
        while let Some(r) = next {
            match r {
                Request::Register(id, sink) => {
                    sinks.insert(id, sink);
                }
                Request::Unregister(id) => {
                    // Its jobs came first: run them while its sink is registered.
                    if !batch.is_empty() {
                        deliver(engine.run(std::mem::take(&mut batch)), &mut sinks);
                    }
                    if let Some(s) = sinks.remove(&id) {
                        draining.push(s);
                    }
                }
                Request::Job {
                    client,
                    tag,
                    job,
                    at,
                } => {
                    bytes += job.input_bytes();
                    batch.push((client, tag, job, at));
                }
                Request::CopyBandwidth {
                    bytes,
                    copies,
                    mut reply,
                } => {
                    if !batch.is_empty() {
                        deliver(engine.run(std::mem::take(&mut batch)), &mut sinks);
                    }
                    let _ = reply.send(engine.copy_bandwidth(bytes, copies));
                }
                Request::LoseDevice => {
                    // Run what came before on the device first.
                    if !batch.is_empty() {
                        deliver(engine.run(std::mem::take(&mut batch)), &mut sinks);
                    }
                    engine.lose_device();
                }
                Request::Stop => stopping = true,
            }
            if batch.len() >= config.max_batch_jobs || bytes >= config.max_batch_bytes {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            engine.counters().batches.add(1);
            deliver(engine.run(batch), &mut sinks);
        }
        for s in sinks.values_mut() {
            s.flush();
        }
        draining.retain_mut(|s| s.flush() > 0 && !s.is_closed());
        if stopping && shared.in_flight.load(Ordering::SeqCst) == 0 && rx.is_empty() {
            break;
        }
    }
    // Deliver what is owed: a full worker queue is backpressure, not a drop.
    let mut all: Vec<ResultSink<JobResult>> = sinks.into_values().chain(draining).collect();
    while !all.is_empty() {
        all.retain_mut(|s| s.flush() > 0 && !s.is_closed());
        if !all.is_empty() {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

fn deliver(results: Vec<(u64, JobResult)>, sinks: &mut HashMap<u64, ResultSink<JobResult>>) {
    for (client, r) in results {
        // A client's jobs reach the thread after its `Register` and are run
        // before its `Unregister` is handled, so its sink is always here.
        if let Some(s) = sinks.get_mut(&client) {
            s.deliver(r);
        } else {
            debug_assert!(false, "result for unknown client {client}");
        }
    }
}
