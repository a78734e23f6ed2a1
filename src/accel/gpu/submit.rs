//! One unit's trip through the device, in two halves so that units
//! overlap: [`Gpu::launch`] uploads, encodes and submits a unit and asks for
//! its read-back mapping without waiting; [`Gpu::finish`] waits for it,
//! reads it back and returns its buffers to the pool. The batch loop in
//! `mod.rs` launches the next unit before finishing the one before it.

use super::pool::Use;
use super::units::{Kind, Src, Unit, UnitOut};
use super::{CRC_TABLE_BYTES, Gpu, describe};
use crate::accel::error::AccelError;
use parking_lot::Mutex;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a read-back's mapping stands: `None` until wgpu calls back.
type MapState = Arc<Mutex<Option<Result<(), String>>>>;

/// A unit on the device.
pub(super) struct Launched {
    /// Index of the unit in the batch.
    pub unit: usize,
    index: wgpu::SubmissionIndex,
    held: Vec<wgpu::Buffer>,
    readback: wgpu::Buffer,
    /// Bytes of the read-back that are mapped.
    rb_size: u64,
    out_size: u64,
    /// Offset of the two pass timestamps in the read-back, when timed.
    ts_offset: Option<u64>,
    mapped: MapState,
    kind: Kind,
    /// When `queue.submit` returned.
    submitted: Instant,
    /// When the upload began (the unit's first moment of work).
    pub started: Instant,
    /// Writing the inputs, encoding and submitting, until `queue.submit`
    /// returned.
    pub upload: Duration,
}

/// What [`Gpu::encode`] submitted.
struct Encoded {
    held: Vec<wgpu::Buffer>,
    readback: wgpu::Buffer,
    ts_offset: Option<u64>,
    mapped: MapState,
    index: wgpu::SubmissionIndex,
    submitted: Instant,
}

/// A unit done.
pub(super) struct Finished {
    pub out: UnitOut,
    pub execute: Duration,
    pub readback: Duration,
    /// Whether `execute` came from the device's timestamps.
    pub device_clock: bool,
    /// When the wait for it returned.
    pub done: Instant,
}

/// Why a unit could not be launched.
pub(super) enum LaunchError {
    /// The job's fault (a custom kernel's bindings): deliver the error.
    Job(AccelError),
    /// The device's: rerun the job on the CPU path.
    Device(AccelError),
}

impl Gpu {
    /// Uploads, encodes and submits one unit; `slot` picks its timestamp
    /// queries (one slot per unit in flight).
    pub(super) fn launch(
        &mut self,
        unit: usize,
        u: &Unit<'_>,
        slot: u32,
    ) -> Result<Launched, LaunchError> {
        if let Some(reason) = self.lost() {
            return Err(LaunchError::Device(AccelError::DeviceLost { reason }));
        }
        let started = Instant::now();
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let built = self.encode(u, slot);
        let internal = pollster::block_on(internal.pop());
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        let e = built?;
        if let Some(err) = oom.or(internal).or(validation) {
            // Buffers from a failed submission are not reused.
            return Err(LaunchError::Device(self.device_error(describe(&err))));
        }
        Ok(Launched {
            unit,
            index: e.index,
            held: e.held,
            rb_size: e.ts_offset.map_or(u.output, |o| o + 16),
            out_size: u.output,
            readback: e.readback,
            ts_offset: e.ts_offset,
            mapped: e.mapped,
            kind: u.kind,
            submitted: e.submitted,
            started,
            // Until the submission: what follows overlaps the device's work.
            upload: e.submitted.saturating_duration_since(started),
        })
    }

    /// Takes pooled buffers for a unit's inputs and output and queues the
    /// inputs' upload; returns the buffers to hold until it is done and
    /// the bindings in order (the CRC table is bound but not pooled).
    fn upload(&mut self, u: &Unit<'_>) -> (Vec<wgpu::Buffer>, Vec<(wgpu::Buffer, u64)>) {
        let mut bound: Vec<(wgpu::Buffer, u64)> = Vec::new();
        let mut held = Vec::new();
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
                    held.push(buf.clone());
                    bound.push((buf, size));
                }
            }
        }
        let out = self
            .pool
            .take(&self.device, Use::Storage, u.output, &self.counters);
        held.push(out.clone());
        bound.push((out, u.output));
        (held, bound)
    }

    /// The unit's bind group. Bindings that do not match a custom kernel
    /// are the caller's error, not the device's: its own scope tells them
    /// apart.
    fn bind(
        &self,
        u: &Unit<'_>,
        pipeline: &wgpu::ComputePipeline,
        bound: &[(wgpu::Buffer, u64)],
    ) -> Result<wgpu::BindGroup, LaunchError> {
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
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&u.kernel),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        match pollster::block_on(scope.pop()) {
            None => Ok(group),
            Some(e) => {
                let err = AccelError::Shader {
                    kernel: u.kernel.to_string(),
                    message: format!("bindings do not match the job's buffers: {}", describe(&e)),
                };
                Err(if u.kind == Kind::Custom {
                    LaunchError::Job(err)
                } else {
                    LaunchError::Device(AccelError::Device {
                        message: err.to_string(),
                    })
                })
            }
        }
    }

    /// The body of [`launch`](Self::launch), inside its error scopes:
    /// upload, dispatch (with timestamps where there are), copy into the
    /// read-back buffer, submit, and ask for the mapping.
    fn encode(&mut self, u: &Unit<'_>, slot: u32) -> Result<Encoded, LaunchError> {
        let pipeline = match self.pipelines.get(&u.kernel) {
            Some((_, p)) => p.clone(),
            None => {
                return Err(LaunchError::Device(AccelError::Device {
                    message: format!("kernel {} was not compiled", u.kernel),
                }));
            }
        };
        let (held, bound) = self.upload(u);
        let group = self.bind(u, &pipeline, &bound)?;
        let out = &bound[bound.len() - 1].0;
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some(&u.kernel),
            });
        if u.kind == Kind::Crc {
            // The checksum kernel XORs into its sums.
            encoder.clear_buffer(out, 0, Some(u.output));
        }
        let timestamps = self
            .timestamps
            .as_ref()
            .map(|t| wgpu::ComputePassTimestampWrites {
                query_set: &t.set,
                beginning_of_pass_write_index: Some(2 * slot),
                end_of_pass_write_index: Some(2 * slot + 1),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&u.kernel),
                timestamp_writes: timestamps,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            let [x, y, z] = u.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
        let ts_offset = self.timestamps.as_ref().map(|_| u.output.div_ceil(8) * 8);
        let rb_size = ts_offset.map_or(u.output, |o| o + 16);
        let readback = self
            .pool
            .take(&self.device, Use::Readback, rb_size, &self.counters);
        encoder.copy_buffer_to_buffer(out, 0, &readback, 0, u.output);
        if let (Some(t), Some(off)) = (&self.timestamps, ts_offset) {
            let at = 256 * u64::from(slot);
            encoder.resolve_query_set(&t.set, 2 * slot..2 * slot + 2, &t.resolve, at);
            encoder.copy_buffer_to_buffer(&t.resolve, at, &readback, off, 16);
        }
        let index = self.queue.submit([encoder.finish()]);
        let submitted = Instant::now();
        self.counters.submits.add(1);
        let mapped: MapState = Arc::new(Mutex::new(None));
        let m = mapped.clone();
        readback.map_async(wgpu::MapMode::Read, 0..rb_size, move |r| {
            *m.lock() = Some(r.map_err(|e| e.to_string()));
        });
        Ok(Encoded {
            held,
            readback,
            ts_offset,
            mapped,
            index,
            submitted,
        })
    }

    /// Waits for a launched unit, reads its output back and returns its
    /// buffers to the pool. `prev_done` is when the unit before it on the
    /// device was seen done: without timestamps, a unit's execute time is
    /// from the later of its submission and that moment until it is seen
    /// done (an upper bound: it may have finished before the wait began).
    pub(super) fn finish(
        &mut self,
        l: Launched,
        prev_done: Option<Instant>,
    ) -> Result<Finished, AccelError> {
        let waited = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(l.index.clone()),
            timeout: Some(self.poll_timeout),
        });
        let done = Instant::now();
        if let Err(e) = waited {
            return Err(self.device_error(format!("waiting for the submission failed: {e}")));
        }
        let t = Instant::now();
        if l.mapped.lock().is_none() {
            // The callback runs inside a poll; one more makes sure it has.
            let again = self.device.poll(wgpu::PollType::Wait {
                submission_index: Some(l.index),
                timeout: Some(self.poll_timeout),
            });
            if let Err(e) = again {
                return Err(self.device_error(format!("waiting for the read-back failed: {e}")));
            }
        }
        let state = l.mapped.lock().take();
        match state {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                return Err(self.device_error(format!("mapping the read-back failed: {e}")));
            }
            None => return Err(self.device_error("a read-back buffer never mapped".into())),
        }
        let (out, stamps) = {
            let view = match l.readback.get_mapped_range(0..l.rb_size) {
                Ok(v) => v,
                Err(e) => {
                    return Err(self.device_error(format!("reading the read-back failed: {e}")));
                }
            };
            let data = &view[..l.out_size as usize];
            let out = match l.kind {
                Kind::Saxpy => UnitOut::F32(bytemuck::pod_collect_to_vec(data)),
                Kind::Custom => UnitOut::Bytes(data.to_vec()),
                Kind::Crc | Kind::Reduce => UnitOut::U32(bytemuck::pod_collect_to_vec(data)),
            };
            let stamps: Option<[u64; 2]> = l.ts_offset.map(|o| {
                let w: Vec<u64> = bytemuck::pod_collect_to_vec(&view[o as usize..o as usize + 16]);
                [w[0], w[1]]
            });
            (out, stamps)
        };
        l.readback.unmap();
        let readback = t.elapsed();
        let uncaptured: Vec<String> = std::mem::take(&mut *self.uncaptured.lock());
        if !uncaptured.is_empty() {
            return Err(self.device_error(uncaptured.join("; ")));
        }
        for b in l.held {
            self.pool.give(Use::Storage, b);
        }
        self.pool.give(Use::Readback, l.readback);
        let host =
            done.saturating_duration_since(prev_done.map_or(l.submitted, |p| p.max(l.submitted)));
        let device = stamps.and_then(|[a, b]| {
            let period = self.timestamps.as_ref()?.period;
            (b >= a).then(|| Duration::from_nanos(((b - a) as f64 * f64::from(period)) as u64))
        });
        Ok(Finished {
            out,
            execute: device.unwrap_or(host),
            readback,
            device_clock: device.is_some(),
            done,
        })
    }
}
