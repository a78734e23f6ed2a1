//! The wgpu path (feature `gpu`): one device and queue, a pipeline cache by
//! kernel name, a buffer pool by size class, and batched submissions.
//!
//! Everything here runs on the accelerator's own thread. wgpu's error scopes
//! are thread-local, and every device call made here sits inside one, so a
//! bad kernel or a device failure becomes an [`AccelError`], never a panic
//! (and a panic inside the driver is caught by the caller).

use super::accelerator::{AdapterInfo, Counters};
use super::cpu::TABLES;
use super::error::AccelError;
use super::job::{Job, Output, Reduction};
use super::kernels;
use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    pub max_batch_bytes: u64,
    pub pool_bytes: u64,
    pub poll_timeout: Duration,
}

/// The CRC32C slicing tables the checksum kernel reads (four of 256 words).
const CRC_TABLE_BYTES: u64 = 4 * 256 * 4;

/// Largest buffer a built-in kernel binds at once, before device limits.
const DEFAULT_CHUNK: u64 = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Use {
    Storage,
    Readback,
}

/// Free buffers by (use, size class); classes are powers of two from 256
/// bytes, so a buffer serves every request up to its class.
struct BufferPool {
    free: HashMap<(Use, u64), Vec<wgpu::Buffer>>,
    pooled: u64,
    cap: u64,
    max_buffer: u64,
}

impl BufferPool {
    fn class(&self, size: u64) -> u64 {
        let c = size.max(256).next_power_of_two();
        if c > self.max_buffer {
            size.div_ceil(4) * 4
        } else {
            c
        }
    }

    fn take(&mut self, device: &wgpu::Device, u: Use, size: u64, c: &Counters) -> wgpu::Buffer {
        let class = self.class(size);
        if let Some(b) = self.free.get_mut(&(u, class)).and_then(Vec::pop) {
            self.pooled -= class;
            c.pool_hits.add(1);
            return b;
        }
        c.pool_misses.add(1);
        let usage = match u {
            Use::Storage => {
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC
            }
            Use::Readback => wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        };
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("shared-nothing accel pool"),
            size: class,
            usage,
            mapped_at_creation: false,
        })
    }

    fn give(&mut self, u: Use, b: wgpu::Buffer) {
        let class = b.size();
        if self.pooled + class <= self.cap {
            self.pooled += class;
            self.free.entry((u, class)).or_default().push(b);
        }
    }
}

/// One dispatch: a built-in kernel over one chunk of a job, or a whole
/// custom kernel job.
struct Unit<'a> {
    job: usize,
    kernel: Arc<str>,
    inputs: Vec<Src<'a>>,
    output: u64,
    workgroups: [u32; 3],
    kind: Kind,
}

enum Src<'a> {
    Bytes(Cow<'a, [u8]>),
    CrcTable,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Crc,
    Reduce,
    Saxpy,
    Custom,
}

enum UnitOut {
    U32(Vec<u32>),
    F32(Vec<f32>),
    Bytes(Vec<u8>),
}

/// How a job fared on the GPU path.
pub(crate) enum GpuOutcome {
    /// Done, with its transfer and execute times.
    Done(Output, Duration, Duration),
    /// The job itself is at fault (bad kernel, too large): deliver the error.
    Failed(AccelError),
    /// The device failed: rerun the job on the CPU path.
    Retry(AccelError),
}

/// What one submission did, or the device error that stopped it.
struct Submitted {
    outs: Vec<Option<UnitOut>>,
    transfer: Duration,
    execute: Duration,
}

pub(crate) struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pub(crate) info: AdapterInfo,
    pipelines: HashMap<Arc<str>, (Arc<str>, wgpu::ComputePipeline)>,
    pool: BufferPool,
    table: wgpu::Buffer,
    lost: Arc<Mutex<Option<String>>>,
    uncaptured: Arc<Mutex<Vec<String>>>,
    chunk: u64,
    binding_limit: u64,
    max_batch_bytes: u64,
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
                adapters.into_iter().nth(hw).expect("index in range")
            }
        };
        let ai = adapter.get_info();
        if let Some(want) = &spec.expected_name
            && *want != ai.name
        {
            return Err(no_adapter(format!(
                "the plan expected adapter {want:?} but found {:?}",
                ai.name
            )));
        }
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("shared-nothing accelerator"),
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

        let binding_limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let want = tuning.chunk_bytes.unwrap_or(DEFAULT_CHUNK).max(256);
        // A power of two, so chunks fill their pool class exactly.
        // At most 2 GiB, so chunk offsets and lengths fit the kernels' u32s.
        let mut chunk = 1u64 << (63 - want.min(binding_limit).min(1 << 31).leading_zeros());
        chunk = chunk.max(256);

        let table = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("crc32c table"),
            size: CRC_TABLE_BYTES,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(&table, 0, bytemuck::cast_slice(&TABLES[..4]));

        let info = AdapterInfo {
            name: ai.name.clone(),
            backend: format!("{:?}", ai.backend),
            device_type: format!("{:?}", ai.device_type),
            driver: format!("{} {}", ai.driver, ai.driver_info)
                .trim()
                .to_owned(),
        };
        Ok(Self {
            device,
            queue,
            info,
            pipelines: HashMap::new(),
            pool: BufferPool {
                free: HashMap::new(),
                pooled: 0,
                cap: tuning.pool_bytes,
                max_buffer: limits.max_buffer_size,
            },
            table,
            lost,
            uncaptured,
            chunk,
            binding_limit,
            max_batch_bytes: tuning.max_batch_bytes,
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

    /// Splits a job into dispatches.
    fn units<'a>(&self, j: usize, job: &'a Job) -> Result<Vec<Unit<'a>>, AccelError> {
        let chunk = self.chunk;
        let mut units = Vec::new();
        let params = |words: &[u32]| Src::Bytes(Cow::Owned(bytemuck::cast_slice(words).to_vec()));
        match job {
            Job::Checksum { data, block_size } => {
                let block = u64::from(*block_size);
                if block > chunk {
                    return Err(AccelError::TooLarge {
                        what: "a checksum block".into(),
                        bytes: block,
                        limit: chunk,
                    });
                }
                let per = (chunk / block) * block;
                for part in data.chunks(per as usize) {
                    let blocks = (part.len() as u64).div_ceil(block) as u32;
                    units.push(Unit {
                        job: j,
                        kernel: "shared_nothing.crc32c".into(),
                        inputs: vec![
                            params(&[part.len() as u32, *block_size, blocks, 0]),
                            Src::CrcTable,
                            Src::Bytes(Cow::Borrowed(part)),
                        ],
                        output: 4 * u64::from(blocks),
                        workgroups: [blocks.div_ceil(kernels::CRC_WG).clamp(1, 65_535), 1, 1],
                        kind: Kind::Crc,
                    });
                }
            }
            Job::Reduce { data } => {
                for part in data.chunks((chunk / 4) as usize) {
                    let n = part.len() as u32;
                    let wgs = n
                        .div_ceil(kernels::REDUCE_WG * kernels::REDUCE_PER_THREAD)
                        .clamp(1, kernels::REDUCE_MAX_WGS);
                    units.push(Unit {
                        job: j,
                        kernel: "shared_nothing.reduce_u32".into(),
                        inputs: vec![
                            params(&[n, 0, 0, 0]),
                            Src::Bytes(Cow::Borrowed(bytemuck::cast_slice(part))),
                        ],
                        output: 16 * u64::from(wgs),
                        workgroups: [wgs, 1, 1],
                        kind: Kind::Reduce,
                    });
                }
            }
            Job::Saxpy { a, x, y } => {
                let per = (chunk / 4) as usize;
                for (xs, ys) in x.chunks(per).zip(y.chunks(per)) {
                    let n = xs.len() as u32;
                    units.push(Unit {
                        job: j,
                        kernel: "shared_nothing.saxpy".into(),
                        inputs: vec![
                            params(&[n, a.to_bits(), 0, 0]),
                            Src::Bytes(Cow::Borrowed(bytemuck::cast_slice(xs))),
                            Src::Bytes(Cow::Borrowed(bytemuck::cast_slice(ys))),
                        ],
                        output: 4 * u64::from(n),
                        workgroups: [n.div_ceil(kernels::SAXPY_WG).clamp(1, 65_535), 1, 1],
                        kind: Kind::Saxpy,
                    });
                }
            }
            Job::Kernel(k) => {
                let limit = self.binding_limit;
                for (i, input) in k.inputs.iter().enumerate() {
                    if input.len() as u64 > limit {
                        return Err(AccelError::TooLarge {
                            what: format!("kernel {} input {i}", k.kernel.name),
                            bytes: input.len() as u64,
                            limit,
                        });
                    }
                }
                if k.output_size > limit {
                    return Err(AccelError::TooLarge {
                        what: format!("kernel {} output", k.kernel.name),
                        bytes: k.output_size,
                        limit,
                    });
                }
                units.push(Unit {
                    job: j,
                    kernel: k.kernel.name.clone(),
                    inputs: k
                        .inputs
                        .iter()
                        .map(|i| Src::Bytes(Cow::Borrowed(&i[..])))
                        .collect(),
                    output: k.output_size,
                    workgroups: k.workgroups,
                    kind: Kind::Custom,
                });
            }
        }
        Ok(units)
    }

    /// Runs a batch of valid jobs; one outcome per job, in order.
    pub(crate) fn run_batch(&mut self, jobs: &[&Job]) -> Vec<GpuOutcome> {
        let mut outcome: Vec<Option<GpuOutcome>> = (0..jobs.len()).map(|_| None).collect();
        let mut units = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            let compiled = match job {
                Job::Checksum { .. } => self.builtin("shared_nothing.crc32c", kernels::CRC32C),
                Job::Reduce { .. } => self.builtin("shared_nothing.reduce_u32", kernels::REDUCE),
                Job::Saxpy { .. } => self.builtin("shared_nothing.saxpy", kernels::SAXPY),
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
                continue;
            }
            match self.units(j, job) {
                Ok(u) => units.extend(u),
                Err(e) => outcome[j] = Some(GpuOutcome::Failed(e)),
            }
        }

        let mut outs: Vec<Vec<UnitOut>> = (0..jobs.len()).map(|_| Vec::new()).collect();
        let mut times = vec![(Duration::ZERO, Duration::ZERO); jobs.len()];
        let mut start = 0;
        while start < units.len() {
            // One submission: at least one unit, more while under the byte budget.
            let mut end = start + 1;
            let mut bytes = unit_bytes(&units[start]);
            while end < units.len() && bytes + unit_bytes(&units[end]) <= self.max_batch_bytes {
                bytes += unit_bytes(&units[end]);
                end += 1;
            }
            let batch: Vec<&Unit<'_>> = units[start..end]
                .iter()
                .filter(|u| outcome[u.job].is_none())
                .collect();
            start = end;
            if batch.is_empty() {
                continue;
            }
            match self.submit(&batch, &mut outcome) {
                Ok(s) => {
                    let mut seen = Vec::new();
                    for (u, o) in batch.iter().zip(s.outs) {
                        if let Some(o) = o {
                            outs[u.job].push(o);
                        }
                        if !seen.contains(&u.job) {
                            seen.push(u.job);
                            times[u.job].0 += s.transfer;
                            times[u.job].1 += s.execute;
                        }
                    }
                }
                Err(e) => {
                    for u in &batch {
                        if outcome[u.job].is_none() {
                            outcome[u.job] = Some(GpuOutcome::Retry(e.clone()));
                        }
                    }
                    if self.lost().is_some() {
                        // Nothing more will run here.
                        for o in outcome.iter_mut().filter(|o| o.is_none()) {
                            *o = Some(GpuOutcome::Retry(e.clone()));
                        }
                    }
                }
            }
        }

        outcome
            .into_iter()
            .zip(outs)
            .zip(jobs)
            .zip(times)
            .map(|(((o, parts), job), (t, x))| match o {
                Some(o) => o,
                None => GpuOutcome::Done(assemble(job, parts), t, x),
            })
            .collect()
    }

    fn builtin(&mut self, name: &str, src: &'static str) -> Result<(), AccelError> {
        let (name, src): (Arc<str>, Arc<str>) = (name.into(), src.into());
        self.pipeline(&name, &src, "main")
            .map_err(|e| AccelError::Device {
                message: format!("built-in kernel rejected: {e}"),
            })
    }

    /// Uploads, dispatches and reads back one submission's units.
    fn submit(
        &mut self,
        units: &[&Unit<'_>],
        outcome: &mut [Option<GpuOutcome>],
    ) -> Result<Submitted, AccelError> {
        if let Some(reason) = self.lost() {
            return Err(AccelError::DeviceLost { reason });
        }
        let t0 = Instant::now();
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);

        let mut held: Vec<(Use, wgpu::Buffer)> = Vec::new();
        let mut readbacks: Vec<Option<(wgpu::Buffer, u64)>> = Vec::new();
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("shared-nothing accel batch"),
            });
        for u in units {
            let mut bound: Vec<(wgpu::Buffer, u64)> = Vec::new();
            for src in &u.inputs {
                match src {
                    Src::CrcTable => bound.push((self.table.clone(), CRC_TABLE_BYTES)),
                    Src::Bytes(b) => {
                        let size = (b.len() as u64).div_ceil(4).max(1) * 4;
                        let buf = self
                            .pool
                            .take(&self.device, Use::Storage, size, &self.counters);
                        let whole = b.len() / 4 * 4;
                        if whole > 0 {
                            self.queue.write_buffer(&buf, 0, &b[..whole]);
                        }
                        if whole < b.len() || b.is_empty() {
                            let mut tail = [0u8; 4];
                            tail[..b.len() - whole].copy_from_slice(&b[whole..]);
                            self.queue.write_buffer(&buf, whole as u64, &tail);
                        }
                        bound.push((buf, size));
                    }
                }
            }
            let out = self
                .pool
                .take(&self.device, Use::Storage, u.output, &self.counters);
            bound.push((out.clone(), u.output));
            let pipeline = &self.pipelines[&u.kernel].1;
            let entries: Vec<wgpu::BindGroupEntry<'_>> = bound
                .iter()
                .enumerate()
                .map(|(i, (b, size))| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: b,
                        offset: 0,
                        size: NonZeroU64::new(*size),
                    }),
                })
                .collect();
            // A custom kernel whose bindings do not match its inputs is the
            // caller's error, not the device's: its own scope tells them apart.
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&u.kernel),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                let err = AccelError::Shader {
                    kernel: u.kernel.to_string(),
                    message: format!("bindings do not match the job's buffers: {}", describe(&e)),
                };
                if u.kind == Kind::Custom {
                    outcome[u.job] = Some(GpuOutcome::Failed(err));
                } else {
                    outcome[u.job] = Some(GpuOutcome::Retry(AccelError::Device {
                        message: err.to_string(),
                    }));
                }
                readbacks.push(None);
                hold(&mut held, u.kind, bound);
                continue;
            }
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&u.kernel),
                    timestamp_writes: None,
                });
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, &group, &[]);
                let [x, y, z] = u.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
            let rb = self
                .pool
                .take(&self.device, Use::Readback, u.output, &self.counters);
            encoder.copy_buffer_to_buffer(&out, 0, &rb, 0, u.output);
            readbacks.push(Some((rb, u.output)));
            hold(&mut held, u.kind, bound);
        }
        let upload = t0.elapsed();

        let t1 = Instant::now();
        let index = self.queue.submit([encoder.finish()]);
        self.counters.submits.add(1);
        let waited = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(self.poll_timeout),
        });
        let execute = t1.elapsed();

        let t2 = Instant::now();
        let mapped = Arc::new(AtomicUsize::new(0));
        let map_error = Arc::new(Mutex::new(None::<String>));
        let want = readbacks.iter().flatten().count();
        if waited.is_ok() {
            for (rb, size) in readbacks.iter().flatten() {
                let (m, e) = (mapped.clone(), map_error.clone());
                rb.map_async(wgpu::MapMode::Read, 0..*size, move |r| {
                    if let Err(err) = r {
                        *e.lock() = Some(err.to_string());
                    }
                    m.fetch_add(1, Ordering::AcqRel);
                });
            }
        }
        let map_wait = if waited.is_ok() {
            self.device
                .poll(wgpu::PollType::Wait {
                    submission_index: None,
                    timeout: Some(self.poll_timeout),
                })
                .map(|_| ())
        } else {
            Ok(())
        };

        let mut outs = Vec::with_capacity(units.len());
        let all_mapped = mapped.load(Ordering::Acquire) == want && map_error.lock().is_none();
        for (u, rb) in units.iter().zip(&readbacks) {
            let Some((rb, size)) = rb else {
                outs.push(None);
                continue;
            };
            if waited.is_ok() && map_wait.is_ok() && all_mapped {
                let out = match rb.get_mapped_range(0..*size) {
                    Ok(view) => Some(match u.kind {
                        Kind::Saxpy => UnitOut::F32(bytemuck::pod_collect_to_vec(&view[..])),
                        Kind::Custom => UnitOut::Bytes(view.to_vec()),
                        Kind::Crc | Kind::Reduce => {
                            UnitOut::U32(bytemuck::pod_collect_to_vec(&view[..]))
                        }
                    }),
                    Err(e) => {
                        *map_error.lock() = Some(e.to_string());
                        None
                    }
                };
                outs.push(out);
                rb.unmap();
            } else {
                outs.push(None);
            }
        }
        let readback = t2.elapsed();

        let internal = pollster::block_on(internal.pop());
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        let uncaptured: Vec<String> = std::mem::take(&mut *self.uncaptured.lock());

        let failure = if let Err(e) = waited {
            Some(format!("waiting for the submission failed: {e}"))
        } else if let Err(e) = map_wait {
            Some(format!("waiting for the read-back failed: {e}"))
        } else if let Some(e) = oom.or(internal).or(validation) {
            Some(describe(&e))
        } else if let Some(e) = map_error.lock().take() {
            Some(format!("mapping the read-back failed: {e}"))
        } else if !all_mapped {
            Some("a read-back buffer never mapped".into())
        } else if !uncaptured.is_empty() {
            Some(uncaptured.join("; "))
        } else {
            None
        };
        if let Some(msg) = failure {
            // Buffers from a failed submission are not reused.
            return Err(self.device_error(msg));
        }
        for (u, b) in held {
            self.pool.give(u, b);
        }
        for (rb, _) in readbacks.into_iter().flatten() {
            self.pool.give(Use::Readback, rb);
        }
        Ok(Submitted {
            outs,
            transfer: upload + readback,
            execute,
        })
    }
}

/// Keeps a unit's pooled buffers until the submission is done (the CRC
/// table, binding 1 of the checksum kernel, is not pooled).
fn hold(held: &mut Vec<(Use, wgpu::Buffer)>, kind: Kind, bound: Vec<(wgpu::Buffer, u64)>) {
    for (i, (b, _)) in bound.into_iter().enumerate() {
        if !(kind == Kind::Crc && i == 1) {
            held.push((Use::Storage, b));
        }
    }
}

fn unit_bytes(u: &Unit<'_>) -> u64 {
    let inputs: u64 = u
        .inputs
        .iter()
        .map(|s| match s {
            Src::Bytes(b) => b.len() as u64,
            Src::CrcTable => 0,
        })
        .sum();
    inputs + 2 * u.output
}

/// Puts a job's output together from its dispatches' outputs.
fn assemble(job: &Job, parts: Vec<UnitOut>) -> Output {
    match job {
        Job::Checksum { .. } => Output::Checksums(
            parts
                .into_iter()
                .flat_map(|p| match p {
                    UnitOut::U32(v) => v,
                    _ => Vec::new(),
                })
                .collect(),
        ),
        Job::Reduce { data } => {
            let mut r = Reduction::EMPTY;
            for p in parts {
                if let UnitOut::U32(v) = p {
                    for w in v.chunks_exact(4) {
                        r = r.merge(Reduction {
                            sum: u64::from(w[0]) | (u64::from(w[1]) << 32),
                            min: w[2],
                            max: w[3],
                            count: 0,
                        });
                    }
                }
            }
            r.count = data.len() as u64;
            Output::Reduction(r)
        }
        Job::Saxpy { .. } => Output::F32(
            parts
                .into_iter()
                .flat_map(|p| match p {
                    UnitOut::F32(v) => v,
                    _ => Vec::new(),
                })
                .collect(),
        ),
        Job::Kernel(_) => Output::Bytes(
            parts
                .into_iter()
                .flat_map(|p| match p {
                    UnitOut::Bytes(v) => v,
                    _ => Vec::new(),
                })
                .collect(),
        ),
    }
}
