//! How to start an accelerator: [`AcceleratorConfig`].

use std::time::Duration;

#[derive(Clone, Debug)]
pub(super) enum DeviceChoice {
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    Gpu {
        index: Option<usize>,
        expected_name: Option<String>,
    },
    Cpu {
        reason: String,
    },
}

/// How to start an [`Accelerator`](super::Accelerator).
///
/// ```
/// use shared_nothing::accel::AcceleratorConfig;
/// let gpu = AcceleratorConfig::gpu().with_name("gpu-0").with_cpu(Some(1));
/// let cpu = AcceleratorConfig::cpu("no GPU on this machine");
/// # let _ = (gpu, cpu);
/// ```
#[derive(Clone, Debug)]
pub struct AcceleratorConfig {
    pub(super) device: DeviceChoice,
    pub(super) name: String,
    pub(super) cpu: Option<usize>,
    pub(super) queue_capacity: usize,
    pub(super) max_batch_jobs: usize,
    pub(super) max_batch_bytes: u64,
    pub(super) chunk_bytes: Option<u64>,
    pub(super) pool_bytes: u64,
    pub(super) poll_timeout: Duration,
    pub(super) max_in_flight: u32,
    pub(super) crc_segment: u32,
    pub(super) workgroup_cap: u32,
    pub(super) timestamps: bool,
    pub(super) subgroups: bool,
}

impl AcceleratorConfig {
    fn with_device(device: DeviceChoice) -> Self {
        Self {
            device,
            name: "accel".into(),
            cpu: None,
            queue_capacity: 256,
            max_batch_jobs: 64,
            max_batch_bytes: 64 << 20,
            chunk_bytes: None,
            pool_bytes: 512 << 20,
            poll_timeout: Duration::from_secs(120),
            max_in_flight: 2,
            crc_segment: 1024,
            workgroup_cap: 1024,
            timestamps: true,
            subgroups: true,
        }
    }

    /// The first hardware GPU wgpu finds, else the first adapter of any
    /// kind (a software one such as llvmpipe); the CPU path if there is none
    /// or the crate was built without feature `gpu`.
    pub fn gpu() -> Self {
        Self::with_device(DeviceChoice::Gpu {
            index: None,
            expected_name: None,
        })
    }

    /// The adapter at `index` in [`Capabilities::gpus`](crate::topology::Capabilities)
    /// (the order the plan's [`GpuPlacement::gpu`](crate::pool::GpuPlacement) uses).
    pub fn adapter(index: usize) -> Self {
        Self::with_device(DeviceChoice::Gpu {
            index: Some(index),
            expected_name: None,
        })
    }

    /// The CPU path, with the reason reports give for it.
    pub fn cpu(reason: impl Into<String>) -> Self {
        Self::with_device(DeviceChoice::Cpu {
            reason: reason.into(),
        })
    }

    /// Fall back to the CPU path unless the adapter has this name.
    pub fn with_expected_adapter(mut self, name: impl Into<String>) -> Self {
        if let DeviceChoice::Gpu { expected_name, .. } = &mut self.device {
            *expected_name = Some(name.into());
        }
        self
    }

    /// The thread's name (default `accel`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The CPU to pin the thread to (`None`: not pinned).
    pub fn with_cpu(mut self, cpu: Option<usize>) -> Self {
        self.cpu = cpu;
        self
    }

    /// Jobs that may wait in the queue (default 256); `try_submit` reports
    /// `Full` beyond it.
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Most jobs taken off the queue into one batch (default 64).
    pub fn with_max_batch_jobs(mut self, n: usize) -> Self {
        self.max_batch_jobs = n.max(1);
        self
    }

    /// Most bytes (inputs plus twice the outputs) in one device submission
    /// (default 64 MiB); a larger dispatch goes alone.
    pub fn with_max_batch_bytes(mut self, bytes: u64) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Largest buffer a built-in kernel binds at once (default 64 MiB, and
    /// never more than the device allows); larger inputs are split.
    pub fn with_chunk_bytes(mut self, bytes: u64) -> Self {
        self.chunk_bytes = Some(bytes);
        self
    }

    /// Bytes of idle device buffers kept for reuse (default 512 MiB).
    pub fn with_buffer_pool_bytes(mut self, bytes: u64) -> Self {
        self.pool_bytes = bytes;
        self
    }

    /// How long to wait for the device before calling it failed (default
    /// 120 s; the job then reruns on the CPU path).
    pub fn with_poll_timeout(mut self, timeout: Duration) -> Self {
        self.poll_timeout = timeout;
        self
    }

    /// Device submissions in flight at once (default 2, at most 64): the
    /// next chunk or job uploads and is submitted before the accelerator
    /// waits for the one before it. 1 runs them one after another.
    pub fn with_max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = n.clamp(1, 64);
        self
    }

    /// Bytes per segment of a checksum block (default 1024, rounded up to
    /// a multiple of 4): each segment is one GPU invocation, and the
    /// segments' CRCs are combined into the block's. Blocks are cut into at
    /// most 16384 segments, so a larger block gets longer segments.
    pub fn with_crc_segment_bytes(mut self, bytes: u32) -> Self {
        self.crc_segment = bytes.max(4);
        self
    }

    /// Largest workgroup any built-in kernel uses (default 1024; each
    /// kernel prefers its own size and never exceeds the adapter's limits).
    pub fn with_max_workgroup_size(mut self, n: u32) -> Self {
        self.workgroup_cap = n.max(1);
        self
    }

    /// Whether to time jobs with the device's timestamp queries where the
    /// adapter has them (default true; false uses host marks).
    pub fn with_device_timestamps(mut self, on: bool) -> Self {
        self.timestamps = on;
        self
    }

    /// Whether the reduction may use subgroup operations where the adapter
    /// has them (default true; false uses the workgroup-memory tree).
    pub fn with_subgroups(mut self, on: bool) -> Self {
        self.subgroups = on;
        self
    }
}
