//! Device buffers pooled by use and power-of-two size class.

use super::super::accelerator::Counters;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Use {
    Storage,
    Readback,
}

/// Free buffers by (use, size class); classes are powers of two from 256
/// bytes, so a buffer serves every request up to its class.
pub(super) struct BufferPool {
    free: HashMap<(Use, u64), Vec<wgpu::Buffer>>,
    pooled: u64,
    cap: u64,
    max_buffer: u64,
}

impl BufferPool {
    pub(super) fn new(cap: u64, max_buffer: u64) -> Self {
        Self {
            free: HashMap::new(),
            pooled: 0,
            cap,
            max_buffer,
        }
    }

    fn class(&self, size: u64) -> u64 {
        let c = size.max(256).next_power_of_two();
        if c > self.max_buffer {
            size.div_ceil(4) * 4
        } else {
            c
        }
    }

    pub(super) fn take(
        &mut self,
        device: &wgpu::Device,
        u: Use,
        size: u64,
        c: &Counters,
    ) -> wgpu::Buffer {
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

    pub(super) fn give(&mut self, u: Use, b: wgpu::Buffer) {
        let class = b.size();
        if self.pooled + class <= self.cap {
            self.pooled += class;
            self.free.entry((u, class)).or_default().push(b);
        }
    }
}
