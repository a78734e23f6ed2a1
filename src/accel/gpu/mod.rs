//! The wgpu path (feature `gpu`): one device and queue, a pipeline cache by
//! kernel name, a buffer pool by size class (`pool.rs`), jobs cut into
//! units (`units.rs`), and units pipelined through the device
//! (`submit.rs`): the next unit is uploaded and submitted before the
//! accelerator waits for the one before it, so on a real GPU the host's
//! copies into and out of staging memory overlap the device's work.
//!
//! Everything here runs on the accelerator's own thread. wgpu's error scopes
//! are thread-local, and every device call made here sits inside one, so a
//! bad kernel or a device failure becomes an [`AccelError`], never a panic
//! (and a panic inside the driver is caught by the caller).

mod pool;
mod submit;
mod units;

use super::accelerator::{AdapterInfo, Counters};
use super::cpu::TABLES;
use super::error::AccelError;
use super::job::{CopyBandwidth, Job, Output};
use super::kernels;
use parking_lot::Mutex;
use pool::BufferPool;
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use submit::{LaunchError, Launched};
use units::{CRC_NAME, Cutting, REDUCE_NAME, SAXPY_NAME, UnitOut, assemble};

/// Which adapter to open.
#[derive(Clone, Debug)]
pub(crate) struct AdapterSpec {
    /// Index in wgpu's Vulkan adapter list (the order of
    /// `topology::detect_gpus`); `None` picks the first hardware adapter,
    /// else the first of any kind.
    pub index: Option<usize>,
    /// The name the adapter must have (the plan's `gpu_name`), if known.
    pub expected_name: Option<String>,
}

/// Tuning knobs passed down from the accelerator's configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GpuTuning {
    pub chunk_bytes: Option<u64>,
    pub pool_bytes: u64,
    pub poll_timeout: Duration,
    /// Units on the device at once (1: no overlap).
    pub max_in_flight: u32,
    /// Bytes per checksum segment (a positive multiple of 4).
    pub crc_segment: u32,
    /// Cap on every built-in kernel's workgroup size.
    pub workgroup_cap: u32,
    /// Use timestamp queries where the adapter has them.
    pub timestamps: bool,
    /// Use subgroup operations where the adapter has them.
    pub subgroups: bool,
}

/// The CRC32C slicing tables the checksum kernel reads (four of 256 words).
const CRC_TABLE_BYTES: u64 = 4 * 256 * 4;

/// Largest buffer a built-in kernel binds at once, before device limits.
const DEFAULT_CHUNK: u64 = 64 << 20;

/// What a job's units measured, summed over them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JobTimes {
    /// When its first unit's upload began.
    pub started: Option<Instant>,
    pub upload: Duration,
    pub execute: Duration,
    pub readback: Duration,
    /// Whether every unit's execute time came from device timestamps.
    pub device_clock: bool,
    /// When its last unit was read back.
    pub finished: Option<Instant>,
}

/// How a job fared on the GPU path.
pub(crate) enum GpuOutcome {
    /// Done, with its times.
    Done(Output, JobTimes),
    /// The job itself is at fault (bad kernel, too large): deliver the error.
    Failed(AccelError),
    /// The device failed: rerun the job on the CPU path.
    Retry(AccelError),
}

/// Timestamp queries: two per unit in flight, resolved into `resolve` at
/// 256 bytes per slot (the resolve alignment).
struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    /// Nanoseconds per tick.
    period: f32,
}

impl Timestamps {
    fn new(device: &wgpu::Device, queue: &wgpu::Queue, slots: u32) -> Self {
        Self {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("shared-nothing accel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * slots,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("shared-nothing accel timestamp resolve"),
                size: 256 * u64::from(slots),
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            period: queue.get_timestamp_period(),
        }
    }
}

impl Cutting {
    /// Chunk size and workgroup sizes for a device's limits.
    fn for_limits(limits: &wgpu::Limits, tuning: &GpuTuning) -> Self {
        let binding_limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let want = tuning.chunk_bytes.unwrap_or(DEFAULT_CHUNK).max(256);
        // A power of two, so chunks fill their pool class exactly.
        // At most 2 GiB, so chunk offsets and lengths fit the kernels' u32s.
        let chunk = (1u64 << (63 - want.min(binding_limit).min(1 << 31).leading_zeros())).max(256);
        let wg = |preferred| {
            kernels::workgroup_size(
                preferred,
                tuning.workgroup_cap,
                limits.max_compute_workgroup_size_x,
                limits.max_compute_invocations_per_workgroup,
            )
        };
        Self {
            chunk,
            binding_limit,
            crc_segment: tuning.crc_segment.max(4).div_ceil(4) * 4,
            crc_wg: wg(kernels::CRC_WG),
            reduce_wg: wg(kernels::REDUCE_WG),
            saxpy_wg: wg(kernels::SAXPY_WG),
        }
    }
}

pub(crate) struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pub(crate) info: AdapterInfo,
    pipelines: HashMap<Arc<str>, (Arc<str>, wgpu::ComputePipeline)>,
    /// The built-ins' WGSL for this device (workgroup sizes filled in).
    builtins: [(Arc<str>, Arc<str>); 3],
    pool: BufferPool,
    table: wgpu::Buffer,
    timestamps: Option<Timestamps>,
    lost: Arc<Mutex<Option<String>>>,
    uncaptured: Arc<Mutex<Vec<String>>>,
    cutting: Cutting,
    max_in_flight: u32,
    max_buffer: u64,
    poll_timeout: Duration,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("info", &self.info).finish()
    }
}

/// The useful part of a wgpu error (its `Display` is only the kind).
fn describe(e: &wgpu::Error) -> String {
    match e {
        wgpu::Error::OutOfMemory { .. } => "out of memory".to_owned(),
        wgpu::Error::Validation { description, .. } => description.trim().to_owned(),
        wgpu::Error::Internal { description, .. } => description.trim().to_owned(),
    }
}

fn no_adapter(reason: impl Into<String>) -> AccelError {
    AccelError::NoAdapter {
        reason: reason.into(),
    }
}

impl Gpu {
    /// Opens the adapter and its device.
    pub(crate) fn open(
        spec: &AdapterSpec,
        tuning: GpuTuning,
        counters: Arc<Counters>,
    ) -> Result<Self, AccelError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        let instance = wgpu::Instance::new(desc);
        // Native enumeration completes at once; the future exists for the web.
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
        if adapters.is_empty() {
            return Err(no_adapter("wgpu found no Vulkan adapter"));
        }
        let n = adapters.len();
        let adapter = match spec.index {
            Some(i) => adapters.into_iter().nth(i).ok_or_else(|| {
                no_adapter(format!("adapter {i} asked for, but wgpu lists only {n}"))
            })?,
            None => {
                let hw = adapters
                    .iter()
                    .position(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
                    .unwrap_or(0);
                adapters
                    .into_iter()
                    .nth(hw)
                    .ok_or_else(|| no_adapter("the adapter list changed while read"))?
            }
        };
        let name = adapter.get_info().name;
        if let Some(want) = &spec.expected_name
            && *want != name
        {
            return Err(no_adapter(format!(
                "the plan expected adapter {want:?} but found {name:?}"
            )));
        }
        Self::on_adapter(&adapter, tuning, counters)
    }

    /// Opens the device on the chosen adapter, with the optional features
    /// the tuning allows, and fits the built-in kernels to its limits.
    fn on_adapter(
        adapter: &wgpu::Adapter,
        tuning: GpuTuning,
        counters: Arc<Counters>,
    ) -> Result<Self, AccelError> {
        let ai = adapter.get_info();
        let limits = adapter.limits();
        let mut wanted = wgpu::Features::empty();
        if tuning.timestamps {
            wanted |= wgpu::Features::TIMESTAMP_QUERY;
        }
        if tuning.subgroups {
            wanted |= wgpu::Features::SUBGROUP;
        }
        let features = adapter.features() & wanted;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("shared-nothing accelerator"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| no_adapter(format!("{}: request_device failed: {e}", ai.name)))?;

        let lost = Arc::new(Mutex::new(None));
        let l = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            *l.lock() = Some(format!("{reason:?}: {msg}"));
        });
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let u = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| u.lock().push(describe(&e))));

        let cutting = Cutting::for_limits(&limits, &tuning);
        let subgroups = features.contains(wgpu::Features::SUBGROUP);
        let builtins = [
            (CRC_NAME.into(), kernels::crc32c(cutting.crc_wg).into()),
            (
                REDUCE_NAME.into(),
                kernels::reduce(cutting.reduce_wg, subgroups).into(),
            ),
            (SAXPY_NAME.into(), kernels::saxpy(cutting.saxpy_wg).into()),
        ];
        let table = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("crc32c table"),
            size: CRC_TABLE_BYTES,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(&table, 0, bytemuck::cast_slice(&TABLES[..4]));
        let max_in_flight = tuning.max_in_flight.clamp(1, 64);
        let timestamps = features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| Timestamps::new(&device, &queue, max_in_flight));

        let info = AdapterInfo {
            name: ai.name.clone(),
            backend: format!("{:?}", ai.backend),
            device_type: format!("{:?}", ai.device_type),
            driver: format!("{} {}", ai.driver, ai.driver_info)
                .trim()
                .to_owned(),
            timestamp_queries: timestamps.is_some(),
            subgroups,
            workgroup_sizes: [cutting.crc_wg, cutting.reduce_wg, cutting.saxpy_wg],
        };
        Ok(Self {
            device,
            queue,
            info,
            pipelines: HashMap::new(),
            builtins,
            pool: BufferPool::new(tuning.pool_bytes, limits.max_buffer_size),
            table,
            timestamps,
            lost,
            uncaptured,
            cutting,
            max_in_flight,
            max_buffer: limits.max_buffer_size,
            poll_timeout: tuning.poll_timeout,
            counters,
        })
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn counters_arc(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Why the device is gone, if it is.
    pub(crate) fn lost(&self) -> Option<String> {
        self.lost.lock().clone()
    }

    /// Destroys the device, as an adapter loss would (for tests).
    pub(crate) fn lose_device(&self) {
        self.device.destroy();
        let mut l = self.lost.lock();
        if l.is_none() {
            *l = Some("device destroyed (fault injected)".into());
        }
    }

    fn device_error(&self, message: String) -> AccelError {
        self.counters.device_errors.add(1);
        match self.lost() {
            Some(reason) => AccelError::DeviceLost { reason },
            None => AccelError::Device { message },
        }
    }

    /// Compiles (once) and returns the pipeline's cache key.
    fn pipeline(
        &mut self,
        name: &Arc<str>,
        source: &Arc<str>,
        entry: &str,
    ) -> Result<(), AccelError> {
        if let Some((src, _)) = self.pipelines.get(name) {
            if src == source {
                self.counters.cache_hits.add(1);
                return Ok(());
            }
            return Err(AccelError::Shader {
                kernel: name.to_string(),
                message: "another kernel with this name was compiled with different source; names key the pipeline cache".into(),
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(source)),
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(AccelError::Shader {
                kernel: name.to_string(),
                message: describe(&e),
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(AccelError::Shader {
                kernel: name.to_string(),
                message: describe(&e),
            });
        }
        self.counters.compiles.add(1);
        self.pipelines
            .insert(name.clone(), (source.clone(), pipeline));
        Ok(())
    }

    /// Compiles what each job needs; the jobs whose kernel failed get
    /// their outcome at once.
    fn compile(&mut self, jobs: &[&Job], outcome: &mut [Option<GpuOutcome>]) {
        for (j, job) in jobs.iter().enumerate() {
            let compiled = match job {
                Job::Checksum { .. } => self.builtin(0),
                Job::Reduce { .. } => self.builtin(1),
                Job::Saxpy { .. } => self.builtin(2),
                Job::Kernel(k) => {
                    let (name, src, entry) = (
                        k.kernel.name.clone(),
                        k.kernel.source.clone(),
                        k.kernel.entry_point.clone(),
                    );
                    self.pipeline(&name, &src, &entry)
                }
            };
            if let Err(e) = compiled {
                outcome[j] = Some(GpuOutcome::Failed(e));
            }
        }
    }

    fn builtin(&mut self, i: usize) -> Result<(), AccelError> {
        let (name, src) = self.builtins[i].clone();
        self.pipeline(&name, &src, "main")
            .map_err(|e| AccelError::Device {
                message: format!("built-in kernel rejected: {e}"),
            })
    }

    /// Runs a batch of valid jobs; one outcome per job, in order.
    ///
    /// Every unit is its own submission, so each job's times are its own.
    /// Up to `max_in_flight` units are on the device at once: unit n+1 is
    /// uploaded and submitted before the accelerator waits for unit n and
    /// reads it back.
    pub(crate) fn run_batch(&mut self, jobs: &[&Job]) -> Vec<GpuOutcome> {
        let mut outcome: Vec<Option<GpuOutcome>> = (0..jobs.len()).map(|_| None).collect();
        self.compile(jobs, &mut outcome);
        let cutting = self.cutting;
        let mut units = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            if outcome[j].is_none() {
                match cutting.units(j, job) {
                    Ok(u) => units.extend(u),
                    Err(e) => outcome[j] = Some(GpuOutcome::Failed(e)),
                }
            }
        }

        let mut outs: Vec<Vec<UnitOut>> = (0..jobs.len()).map(|_| Vec::new()).collect();
        let mut times = vec![
            JobTimes {
                device_clock: self.timestamps.is_some(),
                ..JobTimes::default()
            };
            jobs.len()
        ];
        let mut flight: VecDeque<Launched> = VecDeque::new();
        let mut prev_done = None;
        let mut slot = 0;
        for (i, u) in units.iter().enumerate() {
            if outcome[u.job].is_some() {
                continue;
            }
            match self.launch(i, u, slot) {
                Ok(l) => {
                    let t = &mut times[u.job];
                    t.started.get_or_insert(l.started);
                    t.upload += l.upload;
                    flight.push_back(l);
                    slot = (slot + 1) % self.max_in_flight;
                }
                Err(LaunchError::Job(e)) => outcome[u.job] = Some(GpuOutcome::Failed(e)),
                Err(LaunchError::Device(e)) => self.retry(u.job, e, &mut outcome),
            }
            while flight.len() >= self.max_in_flight as usize {
                self.finish_next(
                    &mut flight,
                    &units,
                    &mut prev_done,
                    &mut outs,
                    &mut times,
                    &mut outcome,
                );
            }
        }
        while !flight.is_empty() {
            self.finish_next(
                &mut flight,
                &units,
                &mut prev_done,
                &mut outs,
                &mut times,
                &mut outcome,
            );
        }

        outcome
            .into_iter()
            .zip(outs)
            .zip(jobs)
            .zip(times)
            .map(|(((o, parts), job), t)| match o {
                Some(o) => o,
                None => GpuOutcome::Done(assemble(job, parts), t),
            })
            .collect()
    }

    /// Finishes the oldest unit in flight and files what it gave.
    #[allow(clippy::too_many_arguments)]
    fn finish_next(
        &mut self,
        flight: &mut VecDeque<Launched>,
        units: &[units::Unit<'_>],
        prev_done: &mut Option<Instant>,
        outs: &mut [Vec<UnitOut>],
        times: &mut [JobTimes],
        outcome: &mut [Option<GpuOutcome>],
    ) {
        let Some(l) = flight.pop_front() else { return };
        let job = units[l.unit].job;
        match self.finish(l, *prev_done) {
            Ok(f) => {
                *prev_done = Some(f.done);
                let t = &mut times[job];
                t.execute += f.execute;
                t.readback += f.readback;
                t.device_clock &= f.device_clock;
                t.finished = Some(Instant::now());
                outs[job].push(f.out);
            }
            Err(e) => self.retry(job, e, outcome),
        }
    }

    /// Sends a job back to the CPU path; after a loss, every job not yet
    /// done goes with it.
    fn retry(&self, job: usize, e: AccelError, outcome: &mut [Option<GpuOutcome>]) {
        if outcome[job].is_none() {
            outcome[job] = Some(GpuOutcome::Retry(e.clone()));
        }
        if self.lost().is_some() {
            for o in outcome.iter_mut().filter(|o| o.is_none()) {
                *o = Some(GpuOutcome::Retry(e.clone()));
            }
        }
    }

    /// Copies `bytes` between two device buffers, `copies` times in one
    /// submission, after one copy to warm up, and times the submission from
    /// the host (submit to done).
    pub(crate) fn copy_bandwidth(
        &mut self,
        bytes: u64,
        copies: u32,
    ) -> Result<CopyBandwidth, AccelError> {
        let bytes = bytes.div_ceil(4).max(1) * 4;
        if bytes > self.max_buffer {
            return Err(AccelError::TooLarge {
                what: "a copy-bandwidth buffer".into(),
                bytes,
                limit: self.max_buffer,
            });
        }
        if let Some(reason) = self.lost() {
            return Err(AccelError::DeviceLost { reason });
        }
        let copies = copies.max(1);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let make = |usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("shared-nothing accel copy bandwidth"),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        let src = make(wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST);
        let dst = make(wgpu::BufferUsages::COPY_DST);
        let run = |n: u32| {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("shared-nothing accel copy bandwidth"),
                });
            for _ in 0..n {
                encoder.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
            }
            let t = Instant::now();
            let index = self.queue.submit([encoder.finish()]);
            let waited = self.device.poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: Some(self.poll_timeout),
            });
            (waited.map(|_| ()), t.elapsed())
        };
        // Write the source once (clear), then warm up.
        let mut clear = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        clear.clear_buffer(&src, 0, None);
        self.queue.submit([clear.finish()]);
        let warm = run(1).0;
        let (timed, elapsed) = run(copies);
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        src.destroy();
        dst.destroy();
        if let Some(e) = oom.or(validation) {
            return Err(self.device_error(describe(&e)));
        }
        if let Err(e) = warm.and(timed) {
            return Err(self.device_error(format!("waiting for the copies failed: {e}")));
        }
        Ok(CopyBandwidth {
            bytes_per_copy: bytes,
            copies,
            elapsed,
        })
    }
}
