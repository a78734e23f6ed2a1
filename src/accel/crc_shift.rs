//! CRC32C combination: the CRC of `A || B` from the CRCs of `A` and `B`
//! and the length of `B`, by multiplying in GF(2)[x] modulo the polynomial
//! (zlib's `crc32_combine`, for the Castagnoli polynomial).
//!
//! Polynomials are 32-bit words in the CRC's reflected order: bit 31 is the
//! coefficient of x^0, bit 0 that of x^31. Multiplying a finished CRC by
//! x^(8n) mod P gives the CRC of its message followed by `n` zero bytes,
//! less the conditioning; because the pre- and post-conditioning cancel,
//! `crc(A || B) = crc(A) * x^(8|B|) + crc(B)` for finished CRCs. The GPU's
//! parallel checksum kernel computes one CRC per segment of a block and
//! combines them this way.

/// The CRC32C (Castagnoli) polynomial, bit-reversed.
const POLY: u32 = 0x82F6_3B78;

/// `a * b mod P`.
pub(crate) const fn gf2_mul(a: u32, mut b: u32) -> u32 {
    let mut p = 0;
    let mut m = 1u32 << 31;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        m >>= 1;
    }
    p
}

/// `x^(8 n) mod P`: multiplying a CRC by it moves it past `n` bytes.
pub(crate) const fn x8n(mut n: u64) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut sq = 1u32 << 23; // x^8
    while n != 0 {
        if n & 1 != 0 {
            p = gf2_mul(sq, p);
        }
        sq = gf2_mul(sq, sq);
        n >>= 1;
    }
    p
}

/// The CRC32C of `A || B`, given `crc_a = crc32c(A)`, `crc_b = crc32c(B)` and
/// `len_b = B.len()`. Costs O(log len_b), independent of the data.
///
/// ```
/// use shared_nothing::accel::{crc32c, crc32c_combine};
/// let (a, b) = (&b"12345"[..], &b"6789"[..]);
/// assert_eq!(crc32c_combine(crc32c(a), crc32c(b), b.len() as u64), crc32c(b"123456789"));
/// ```
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    gf2_mul(x8n(len_b), crc_a) ^ crc_b
}

/// How the checksum kernel cuts one block into segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
pub(crate) struct BlockSegments {
    /// Segments in the block (at least 1).
    pub segments: u32,
    /// `x^(8 r) mod P`, where `r` is the length of the block's last segment.
    pub last_shift: u32,
}

#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
impl BlockSegments {
    /// The segments of a block of `len` bytes (at least 1) cut every
    /// `segment` bytes (at least 1).
    pub(crate) fn new(len: u64, segment: u64) -> Self {
        let segments = len.div_ceil(segment).max(1);
        let last = len - (segments - 1) * segment;
        Self {
            segments: segments as u32,
            last_shift: x8n(last),
        }
    }
}

/// `x^(8 k segment) mod P` for `k` in `0..count`: the shift of a segment's
/// CRC past `k` whole segments.
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
pub(crate) fn segment_shifts(segment: u64, count: u32) -> Vec<u32> {
    let step = x8n(segment);
    let mut v = Vec::with_capacity(count as usize);
    let mut p = 1u32 << 31;
    for _ in 0..count {
        v.push(p);
        p = gf2_mul(step, p);
    }
    v
}

/// The kernel's arithmetic on the CPU: one CRC per segment, each shifted
/// past the bytes after it (`shifts[segments - 2 - s]` times the last
/// segment's shift), XORed together. Tests hold it to the reference.
#[cfg(test)]
pub(crate) fn crc32c_by_segments(block: &[u8], segment: usize, shifts: &[u32]) -> u32 {
    let seg = BlockSegments::new(block.len() as u64, segment as u64);
    let mut acc = 0;
    for (s, part) in block.chunks(segment).enumerate() {
        let mut c = super::cpu::crc32c(part);
        let s = s as u32;
        if s + 1 < seg.segments {
            c = gf2_mul(
                shifts[(seg.segments - 2 - s) as usize],
                gf2_mul(seg.last_shift, c),
            );
        }
        acc ^= c;
    }
    if block.is_empty() {
        // No segment at all: the CRC of nothing.
        return super::cpu::crc32c(&[]);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::super::cpu::crc32c;
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i * 131 + (i >> 7) * 17 + 5) as u8)
            .collect()
    }

    #[test]
    fn x8n_is_repeated_shift_by_one_byte() {
        let x8 = 1u32 << 23;
        let mut p = 1u32 << 31;
        for n in 0..300u64 {
            assert_eq!(x8n(n), p, "n = {n}");
            p = gf2_mul(x8, p);
        }
    }

    #[test]
    fn combine_matches_the_crc_of_the_concatenation() {
        let d = bytes(5000);
        for split in [0, 1, 3, 4, 7, 64, 1000, 4095, 4999, 5000] {
            let (a, b) = d.split_at(split);
            assert_eq!(
                crc32c_combine(crc32c(a), crc32c(b), b.len() as u64),
                crc32c(&d),
                "split at {split}"
            );
        }
        // And against the crates.io implementation the tests trust.
        assert_eq!(crc32c(&d), ::crc32c::crc32c(&d));
    }

    #[test]
    fn segmented_model_is_bit_identical_for_awkward_sizes() {
        for len in [
            1usize, 3, 4, 5, 8, 12, 13, 100, 1023, 1024, 1025, 4096, 4099,
        ] {
            let d = bytes(len);
            for segment in [4usize, 8, 12, 20, 64, 1024, 8192] {
                let seg = BlockSegments::new(len as u64, segment as u64);
                let shifts = segment_shifts(segment as u64, seg.segments);
                assert_eq!(
                    crc32c_by_segments(&d, segment, &shifts),
                    ::crc32c::crc32c(&d),
                    "len {len} segment {segment}"
                );
            }
        }
        assert_eq!(crc32c_by_segments(&[], 4, &[]), 0);
    }
}
