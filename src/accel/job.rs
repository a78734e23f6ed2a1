//! What an accelerator runs: jobs, kernels, outputs and results.

use super::cpu;
use super::error::AccelError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The most workgroups a dispatch may have in one dimension (WebGPU's
/// default limit).
pub const MAX_WORKGROUPS_PER_DIMENSION: u32 = 65_535;

/// A custom kernel's CPU implementation: takes the inputs, returns the output
/// (which must be exactly the job's output size).
pub type CpuKernelFn = dyn Fn(&[&[u8]]) -> Vec<u8> + Send + Sync;

/// A compute kernel: a name, WGSL source and an entry point, plus an
/// optional CPU implementation used when the GPU cannot run it.
///
/// The accelerator compiles each kernel once and caches the pipeline by
/// name, so one name must always mean one source. Binding layout: the job's
/// inputs are `@group(0) @binding(0..n)` as `var<storage, read>`, the output
/// is `@binding(n)` as `var<storage, read_write>`, and the shader must use
/// every one of them.
///
/// ```
/// use shared_nothing::accel::Kernel;
/// let double = Kernel::new(
///     "double",
///     "@group(0) @binding(0) var<storage, read> x: array<u32>;
///      @group(0) @binding(1) var<storage, read_write> y: array<u32>;
///      @compute @workgroup_size(64)
///      fn main(@builtin(global_invocation_id) id: vec3<u32>) {
///          if (id.x < arrayLength(&x)) { y[id.x] = x[id.x] * 2u; }
///      }",
/// )
/// .with_cpu(|inputs| {
///     inputs[0]
///         .chunks_exact(4)
///         .flat_map(|w| (u32::from_le_bytes(w.try_into().unwrap()) * 2).to_le_bytes())
///         .collect()
/// });
/// assert_eq!(double.name(), "double");
/// ```
#[derive(Clone)]
pub struct Kernel {
    pub(crate) name: Arc<str>,
    pub(crate) source: Arc<str>,
    pub(crate) entry_point: Arc<str>,
    pub(crate) cpu: Option<Arc<CpuKernelFn>>,
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("name", &self.name)
            .field("entry_point", &self.entry_point)
            .field("source_bytes", &self.source.len())
            .field("cpu", &self.cpu.is_some())
            .finish()
    }
}

impl Kernel {
    /// A kernel with entry point `main` and no CPU implementation.
    pub fn new(name: impl Into<Arc<str>>, wgsl: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            source: wgsl.into(),
            entry_point: "main".into(),
            cpu: None,
        }
    }

    /// Another entry point than `main`.
    pub fn with_entry_point(mut self, entry_point: impl Into<Arc<str>>) -> Self {
        self.entry_point = entry_point.into();
        self
    }

    /// The CPU implementation, used without a GPU and when the device
    /// fails.
    pub fn with_cpu(mut self, f: impl Fn(&[&[u8]]) -> Vec<u8> + Send + Sync + 'static) -> Self {
        self.cpu = Some(Arc::new(f));
        self
    }

    /// The kernel's name (its pipeline cache key).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The WGSL source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it has a CPU implementation.
    pub fn has_cpu(&self) -> bool {
        self.cpu.is_some()
    }
}

/// A custom kernel applied to inputs: see [`Job::kernel`].
#[derive(Clone, Debug)]
pub struct KernelJob {
    /// The kernel.
    pub kernel: Kernel,
    /// Input buffers, bound in order from binding 0; each a multiple of 4
    /// bytes.
    pub inputs: Vec<Arc<[u8]>>,
    /// Output size in bytes, a positive multiple of 4.
    pub output_size: u64,
    /// Workgroups to dispatch in x, y and z.
    pub workgroups: [u32; 3],
}

/// A unit of work for an accelerator.
///
/// ```
/// use shared_nothing::accel::Job;
/// let sums = Job::checksum(vec![0u8; 1 << 20], 4096); // 256 CRC32Cs
/// let total = Job::reduce((0..1000u32).collect::<Vec<_>>());
/// let y = Job::saxpy(2.0, vec![1.0; 8], vec![0.5; 8]);
/// assert_eq!(sums.name(), "checksum");
/// # let _ = (total, y);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Job {
    /// One CRC32C per `block_size` bytes of `data` (the last block may be
    /// shorter); `block_size` is a positive multiple of 4. Output:
    /// [`Output::Checksums`].
    Checksum {
        /// The bytes.
        data: Arc<[u8]>,
        /// Bytes per checksum.
        block_size: u32,
    },
    /// Exact sum, minimum and maximum. Output: [`Output::Reduction`].
    Reduce {
        /// The values.
        data: Arc<[u32]>,
    },
    /// `a * x + y`, element-wise. Output: [`Output::F32`].
    Saxpy {
        /// The scale.
        a: f32,
        /// The vector scaled.
        x: Arc<[f32]>,
        /// The vector added; as long as `x`.
        y: Arc<[f32]>,
    },
    /// A custom WGSL kernel. Output: [`Output::Bytes`].
    Kernel(KernelJob),
}

impl Job {
    /// A checksum job (see [`Job::Checksum`]).
    pub fn checksum(data: impl Into<Arc<[u8]>>, block_size: u32) -> Self {
        Self::Checksum {
            data: data.into(),
            block_size,
        }
    }

    /// A reduction job (see [`Job::Reduce`]).
    pub fn reduce(data: impl Into<Arc<[u32]>>) -> Self {
        Self::Reduce { data: data.into() }
    }

    /// A saxpy job (see [`Job::Saxpy`]).
    pub fn saxpy(a: f32, x: impl Into<Arc<[f32]>>, y: impl Into<Arc<[f32]>>) -> Self {
        Self::Saxpy {
            a,
            x: x.into(),
            y: y.into(),
        }
    }

    /// A custom kernel job (see [`KernelJob`]).
    pub fn kernel(
        kernel: Kernel,
        inputs: Vec<Arc<[u8]>>,
        output_size: u64,
        workgroups: [u32; 3],
    ) -> Self {
        Self::Kernel(KernelJob {
            kernel,
            inputs,
            output_size,
            workgroups,
        })
    }

    /// A short name for reports: `checksum`, `reduce`, `saxpy` or the
    /// custom kernel's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Checksum { .. } => "checksum",
            Self::Reduce { .. } => "reduce",
            Self::Saxpy { .. } => "saxpy",
            Self::Kernel(k) => &k.kernel.name,
        }
    }

    /// Input bytes (what crosses to the device).
    pub fn input_bytes(&self) -> u64 {
        match self {
            Self::Checksum { data, .. } => data.len() as u64,
            Self::Reduce { data } => 4 * data.len() as u64,
            Self::Saxpy { x, y, .. } => 4 * (x.len() + y.len()) as u64,
            Self::Kernel(k) => k.inputs.iter().map(|i| i.len() as u64).sum(),
        }
    }

    /// Checks the job's shape; the same checks on every path.
    ///
    /// # Errors
    /// [`AccelError::InvalidJob`] naming what is wrong.
    pub fn validate(&self) -> Result<(), AccelError> {
        let bad = |reason: String| Err(AccelError::InvalidJob { reason });
        match self {
            Self::Checksum { block_size, .. } if *block_size == 0 || block_size % 4 != 0 => bad(
                format!("checksum block_size {block_size} is not a positive multiple of 4"),
            ),
            Self::Saxpy { x, y, .. } if x.len() != y.len() => bad(format!(
                "saxpy x has {} elements but y has {}",
                x.len(),
                y.len()
            )),
            Self::Kernel(k) => {
                if k.output_size == 0 || k.output_size % 4 != 0 {
                    return bad(format!(
                        "kernel {}: output size {} is not a positive multiple of 4",
                        k.kernel.name, k.output_size
                    ));
                }
                if let Some(i) = k
                    .inputs
                    .iter()
                    .position(|i| i.is_empty() || i.len() % 4 != 0)
                {
                    return bad(format!(
                        "kernel {}: input {i} has {} bytes, not a positive multiple of 4",
                        k.kernel.name,
                        k.inputs[i].len()
                    ));
                }
                if k.workgroups.contains(&0)
                    || k.workgroups
                        .iter()
                        .any(|&w| w > MAX_WORKGROUPS_PER_DIMENSION)
                {
                    return bad(format!(
                        "kernel {}: workgroups {:?} must each be 1..={MAX_WORKGROUPS_PER_DIMENSION}",
                        k.kernel.name, k.workgroups
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Runs the job on the calling thread with the CPU reference
    /// implementation: what the CPU path does, and what the GPU path must
    /// match.
    ///
    /// # Errors
    /// [`AccelError::InvalidJob`] for a malformed job (or a custom kernel's
    /// CPU output of the wrong size), [`AccelError::NoCpuPath`] for a custom
    /// kernel without a CPU implementation.
    ///
    /// ```
    /// use shared_nothing::accel::{Job, Output};
    /// let out = Job::saxpy(3.0, vec![1.0, 2.0], vec![1.0, 1.0]).run_on_cpu().unwrap();
    /// assert_eq!(out, Output::F32(vec![4.0, 7.0]));
    /// ```
    pub fn run_on_cpu(&self) -> Result<Output, AccelError> {
        self.validate()?;
        Ok(match self {
            Self::Checksum { data, block_size } => {
                Output::Checksums(cpu::crc32c_blocks(data, *block_size as usize))
            }
            Self::Reduce { data } => Output::Reduction(cpu::reduce_u32(data)),
            Self::Saxpy { a, x, y } => Output::F32(cpu::saxpy(*a, x, y)),
            Self::Kernel(k) => {
                let f = k.kernel.cpu.as_ref().ok_or_else(|| AccelError::NoCpuPath {
                    kernel: k.kernel.name.to_string(),
                    cause: "no GPU on this path".into(),
                })?;
                let inputs: Vec<&[u8]> = k.inputs.iter().map(|i| &i[..]).collect();
                let out = f(&inputs);
                if out.len() as u64 != k.output_size {
                    return Err(AccelError::InvalidJob {
                        reason: format!(
                            "kernel {}: CPU implementation returned {} bytes, expected {}",
                            k.kernel.name,
                            out.len(),
                            k.output_size
                        ),
                    });
                }
                Output::Bytes(out)
            }
        })
    }
}

/// Sum, minimum and maximum of a [`Job::Reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reduction {
    /// Exact sum, wrapping at 2^64.
    pub sum: u64,
    /// Minimum (`u32::MAX` for no values).
    pub min: u32,
    /// Maximum (0 for no values).
    pub max: u32,
    /// Number of values.
    pub count: u64,
}

impl Reduction {
    /// The reduction of no values.
    pub const EMPTY: Self = Self {
        sum: 0,
        min: u32::MAX,
        max: 0,
        count: 0,
    };

    /// Combines two partial reductions.
    ///
    /// ```
    /// use shared_nothing::accel::{reduce_u32, Reduction};
    /// let whole = reduce_u32(&[1, 5, 2, 9]);
    /// let parts = reduce_u32(&[1, 5]).merge(reduce_u32(&[2, 9]));
    /// assert_eq!(whole, parts);
    /// assert_eq!(Reduction::EMPTY.merge(whole), whole);
    /// ```
    #[must_use]
    pub fn merge(self, other: Self) -> Self {
        Self {
            sum: self.sum.wrapping_add(other.sum),
            min: self.min.min(other.min),
            max: self.max.max(other.max),
            count: self.count + other.count,
        }
    }
}

/// What a job produced.
///
/// Equality is bitwise: `F32` values compare by their bits, so a NaN equals
/// the same NaN and `0.0` differs from `-0.0`. That is what "the GPU and the
/// CPU give identical results" means here.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Output {
    /// One CRC32C per block.
    Checksums(Vec<u32>),
    /// A reduction.
    Reduction(Reduction),
    /// Floats (saxpy).
    F32(Vec<f32>),
    /// A custom kernel's output bytes.
    Bytes(Vec<u8>),
}

impl PartialEq for Output {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Checksums(a), Self::Checksums(b)) => a == b,
            (Self::Reduction(a), Self::Reduction(b)) => a == b,
            (Self::F32(a), Self::F32(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (Self::Bytes(a), Self::Bytes(b)) => a == b,
            _ => false,
        }
    }
}

/// Which path ran a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecPath {
    /// The wgpu path on this adapter.
    Gpu {
        /// The adapter's name (for example `llvmpipe (LLVM 15.0.6, 256 bits)`).
        adapter: String,
    },
    /// The CPU path, and why.
    Cpu {
        /// Why the GPU path did not run it.
        reason: String,
    },
}

impl ExecPath {
    /// Whether the GPU path ran.
    pub fn is_gpu(&self) -> bool {
        matches!(self, Self::Gpu { .. })
    }
}

impl fmt::Display for ExecPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gpu { adapter } => write!(f, "GPU ({adapter})"),
            Self::Cpu { reason } => write!(f, "CPU ({reason})"),
        }
    }
}

/// Where one job's time went, measured for that job alone.
///
/// On the GPU path every unit of work (a job, or one chunk of a large
/// built-in job) is its own device submission, so no two jobs share a
/// phase. The host's phases (`queued`, `upload`, `readback`) never overlap
/// and add up to no more than `total`. With host marks (and on the CPU
/// path) `execute` begins when the submission returns, so for a job in one
/// chunk all four phases follow one another and add up to no more than
/// `total`; device timestamps may begin during the `submit` call, inside
/// the upload. A job in several chunks overlaps them (chunk n+1 uploads
/// while chunk n computes), so its `execute`, summed over its chunks, may
/// overlap its host phases; each phase alone stays within `total`.
///
/// ```
/// # use shared_nothing::accel::{Accelerator, AcceleratorConfig, Job};
/// # use shared_nothing::worker::ResultSink;
/// # let mut accel = Accelerator::start(AcceleratorConfig::cpu("doc")).unwrap();
/// # let (sink, mut results) = ResultSink::queue();
/// # let mut client = accel.client(sink).unwrap();
/// client.submit(1, Job::reduce(vec![1, 2, 3])).unwrap();
/// let t = results.recv().unwrap().timing;
/// assert!(t.queued + t.upload + t.execute + t.readback <= t.total);
/// println!("{:?} on the {:?} clock", t.execute, t.clock);
/// # accel.stop().unwrap();
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timing {
    /// From `submit` until the job's first work began: its wait in the
    /// accelerator's queue and behind the jobs before it in its batch.
    pub queued: Duration,
    /// Host time writing the job's inputs into the device's staging memory,
    /// encoding and submitting (zero on the CPU path).
    pub upload: Duration,
    /// The computation, on the clock [`clock`](Self::clock) names.
    pub execute: Duration,
    /// Host time from the device finishing until the outputs were copied
    /// out of the mapped read-back buffers (zero on the CPU path).
    pub readback: Duration,
    /// From `submit` until the job's output was ready on the accelerator
    /// (its last chunk read back, or the CPU computation done). The result
    /// is delivered after the rest of its batch.
    pub total: Duration,
    /// What measured `execute`.
    pub clock: ExecuteClock,
}

impl Timing {
    /// Upload and read-back together: the data's trips to and from the
    /// device.
    pub fn transfer(&self) -> Duration {
        self.upload + self.readback
    }
}

/// What measured a job's [`Timing::execute`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecuteClock {
    /// The device's timestamps at the start and end of each dispatch's
    /// compute pass (adapters with `TIMESTAMP_QUERY`): kernel time only,
    /// without the device-side copies from staging memory and into the
    /// read-back buffer.
    DeviceTimestamps,
    /// Host marks (adapters without timestamps, or with them turned off):
    /// from the later of the unit's submission and the previous unit's
    /// completion until the host saw it done. It includes the device-side
    /// copies and is an upper bound, since the unit may have finished
    /// before the host began to wait.
    HostMarks,
    /// The CPU path: the computation on the accelerator's thread.
    #[default]
    Cpu,
}

/// A device's measured buffer-to-buffer copy rate (see
/// [`Accelerator::measure_copy_bandwidth`](super::Accelerator::measure_copy_bandwidth)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyBandwidth {
    /// Bytes in each copy.
    pub bytes_per_copy: u64,
    /// Copies in the timed submission.
    pub copies: u32,
    /// Host time from the submission until the device was done.
    pub elapsed: Duration,
}

impl CopyBandwidth {
    /// Bytes copied per second (each byte copied is read once and written
    /// once, so the memory traffic is twice this).
    pub fn bytes_per_second(&self) -> f64 {
        (self.bytes_per_copy as f64 * f64::from(self.copies)) / self.elapsed.as_secs_f64()
    }
}

/// The result of one job, delivered through the client's
/// [`ResultSink`](crate::worker::ResultSink).
#[derive(Clone, Debug)]
pub struct JobResult {
    /// The tag given at submission.
    pub tag: u64,
    /// The job's name ([`Job::name`]).
    pub job: String,
    /// The output, or why there is none.
    pub output: Result<Output, AccelError>,
    /// Which path produced it.
    pub path: ExecPath,
    /// The device error that made the job rerun on the CPU path, if any.
    pub gpu_error: Option<AccelError>,
    /// Where the time went.
    pub timing: Timing,
}
