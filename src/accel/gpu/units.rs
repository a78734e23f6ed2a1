//! Cutting jobs into dispatches (units) and putting their outputs back
//! together.

use super::super::crc_shift::{BlockSegments, segment_shifts};
use super::super::error::AccelError;
use super::super::job::{Job, Output, Reduction};
use super::super::kernels;
use std::borrow::Cow;
use std::sync::Arc;

/// The built-in kernels' names: the pipeline cache's keys.
pub(super) const CRC_NAME: &str = "shared_nothing.crc32c";
pub(super) const REDUCE_NAME: &str = "shared_nothing.reduce_u32";
pub(super) const SAXPY_NAME: &str = "shared_nothing.saxpy";

/// One dispatch: a built-in kernel over one chunk of a job, or a whole
/// custom kernel job. Each unit is one device submission.
pub(super) struct Unit<'a> {
    pub job: usize,
    pub kernel: Arc<str>,
    pub inputs: Vec<Src<'a>>,
    pub output: u64,
    pub workgroups: [u32; 3],
    pub kind: Kind,
}

pub(super) enum Src<'a> {
    Bytes(Cow<'a, [u8]>),
    CrcTable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Crc,
    Reduce,
    Saxpy,
    Custom,
}

pub(super) enum UnitOut {
    U32(Vec<u32>),
    F32(Vec<f32>),
    Bytes(Vec<u8>),
}

/// How jobs are cut: the device's sizes and the kernels' workgroup sizes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cutting {
    /// Largest chunk a built-in kernel binds (a power of two).
    pub chunk: u64,
    /// Largest binding the device allows (custom kernels are not split).
    pub binding_limit: u64,
    /// Bytes per checksum segment (a positive multiple of 4).
    pub crc_segment: u32,
    pub crc_wg: u32,
    pub reduce_wg: u32,
    pub saxpy_wg: u32,
}

/// Most segments per checksum block (the shift table is 4 bytes each).
const MAX_SEGMENTS: u64 = 16 << 10;

fn params(words: &[u32]) -> Src<'static> {
    Src::Bytes(Cow::Owned(bytemuck::cast_slice(words).to_vec()))
}

fn dispatch(invocations: u64, wg: u32) -> [u32; 3] {
    let groups = invocations.div_ceil(u64::from(wg)).clamp(1, 65_535);
    [groups as u32, 1, 1]
}

impl Cutting {
    /// Splits a job into dispatches.
    pub(super) fn units<'a>(&self, j: usize, job: &'a Job) -> Result<Vec<Unit<'a>>, AccelError> {
        match job {
            Job::Checksum { data, block_size } => self.checksum(j, data, *block_size),
            Job::Reduce { data } => Ok(self.reduce(j, data)),
            Job::Saxpy { a, x, y } => Ok(self.saxpy(j, *a, x, y)),
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
                Ok(vec![Unit {
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
                }])
            }
        }
    }

    fn checksum<'a>(
        &self,
        j: usize,
        data: &'a [u8],
        block_size: u32,
    ) -> Result<Vec<Unit<'a>>, AccelError> {
        let block = u64::from(block_size);
        if block > self.chunk {
            return Err(AccelError::TooLarge {
                what: "a checksum block".into(),
                bytes: block,
                limit: self.chunk,
            });
        }
        // At most MAX_SEGMENTS per block, so the shift table stays small.
        let seg = u64::from(self.crc_segment).max(block.div_ceil(MAX_SEGMENTS).div_ceil(4) * 4);
        let full = BlockSegments::new(block, seg);
        let shifts = segment_shifts(seg, full.segments);
        let per = (self.chunk / block) * block;
        let mut units = Vec::new();
        for part in data.chunks(per as usize) {
            let len = part.len() as u64;
            let blocks = len.div_ceil(block);
            let last = BlockSegments::new(len - (blocks - 1) * block, seg);
            let mut words = vec![
                len as u32,
                block_size,
                blocks as u32,
                seg as u32,
                full.segments,
                last.segments,
                full.last_shift,
                last.last_shift,
            ];
            debug_assert_eq!(words.len(), kernels::CRC_PARAM_WORDS);
            words.extend_from_slice(&shifts);
            let invocations = (blocks - 1) * u64::from(full.segments) + u64::from(last.segments);
            units.push(Unit {
                job: j,
                kernel: CRC_NAME.into(),
                inputs: vec![
                    params(&words),
                    Src::CrcTable,
                    Src::Bytes(Cow::Borrowed(part)),
                ],
                output: 4 * blocks,
                workgroups: dispatch(invocations, self.crc_wg),
                kind: Kind::Crc,
            });
        }
        Ok(units)
    }

    fn reduce<'a>(&self, j: usize, data: &'a [u32]) -> Vec<Unit<'a>> {
        data.chunks((self.chunk / 4) as usize)
            .map(|part| {
                let n = part.len() as u32;
                let wgs = n
                    .div_ceil(self.reduce_wg * kernels::REDUCE_PER_THREAD)
                    .clamp(1, kernels::REDUCE_MAX_WGS);
                Unit {
                    job: j,
                    kernel: REDUCE_NAME.into(),
                    inputs: vec![
                        params(&[n, 0, 0, 0]),
                        Src::Bytes(Cow::Borrowed(bytemuck::cast_slice(part))),
                    ],
                    output: 16 * u64::from(wgs),
                    workgroups: [wgs, 1, 1],
                    kind: Kind::Reduce,
                }
            })
            .collect()
    }

    fn saxpy<'a>(&self, j: usize, a: f32, x: &'a [f32], y: &'a [f32]) -> Vec<Unit<'a>> {
        let per = (self.chunk / 4) as usize;
        x.chunks(per)
            .zip(y.chunks(per))
            .map(|(xs, ys)| {
                let n = xs.len() as u32;
                Unit {
                    job: j,
                    kernel: SAXPY_NAME.into(),
                    inputs: vec![
                        // The third word is the zero the kernel XORs into each product.
                        params(&[n, a.to_bits(), 0, 0]),
                        Src::Bytes(Cow::Borrowed(bytemuck::cast_slice(xs))),
                        Src::Bytes(Cow::Borrowed(bytemuck::cast_slice(ys))),
                    ],
                    output: 4 * u64::from(n),
                    workgroups: dispatch(u64::from(n), self.saxpy_wg),
                    kind: Kind::Saxpy,
                }
            })
            .collect()
    }
}

/// Puts a job's output together from its dispatches' outputs, in order.
pub(super) fn assemble(job: &Job, parts: Vec<UnitOut>) -> Output {
    fn flat<T>(parts: Vec<UnitOut>, f: impl Fn(UnitOut) -> Option<Vec<T>>) -> Vec<T> {
        parts.into_iter().filter_map(f).flatten().collect()
    }
    match job {
        Job::Checksum { .. } => Output::Checksums(flat(parts, |p| match p {
            UnitOut::U32(v) => Some(v),
            _ => None,
        })),
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
        Job::Saxpy { .. } => Output::F32(flat(parts, |p| match p {
            UnitOut::F32(v) => Some(v),
            _ => None,
        })),
        Job::Kernel(_) => Output::Bytes(flat(parts, |p| match p {
            UnitOut::Bytes(v) => Some(v),
            _ => None,
        })),
    }
}
