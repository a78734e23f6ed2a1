//! The CPU reference implementations of the built-in kernels. The GPU path
//! must give the same bits; the CPU path is these functions.

use super::job::Reduction;

/// The CRC32C (Castagnoli) polynomial, bit-reversed.
const POLY: u32 = 0x82F6_3B78;

/// Slicing-by-8 tables; `TABLES[0]` is the classic byte table, which the
/// GPU kernel also uses.
pub(crate) static TABLES: [[u32; 256]; 8] = make_tables();

const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC32C (Castagnoli, as iSCSI, ext4 and RocksDB use it) of `data`.
///
/// ```
/// assert_eq!(shared_nothing::accel::crc32c(b"123456789"), 0xE306_9283);
/// ```
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_update(0xFFFF_FFFF, data) ^ 0xFFFF_FFFF
}

/// One CRC32C per `block_size` bytes of `data` (the last block may be
/// shorter): the [`Job::checksum`](super::Job::checksum) kernel.
///
/// # Panics
/// If `block_size` is 0.
///
/// ```
/// use shared_nothing::accel::{crc32c, crc32c_blocks};
/// let sums = crc32c_blocks(b"123456789", 4);
/// assert_eq!(sums, vec![crc32c(b"1234"), crc32c(b"5678"), crc32c(b"9")]);
/// ```
pub fn crc32c_blocks(data: &[u8], block_size: usize) -> Vec<u32> {
    assert!(block_size > 0, "block_size must be positive");
    data.chunks(block_size).map(crc32c).collect()
}

/// Exact sum (wrapping at 2^64), minimum and maximum of `data`: the
/// [`Job::reduce`](super::Job::reduce) kernel. Integer arithmetic makes the
/// result independent of the order of additions, so every path agrees bit
/// for bit.
///
/// ```
/// let r = shared_nothing::accel::reduce_u32(&[3, 1, u32::MAX]);
/// assert_eq!((r.sum, r.min, r.max, r.count), (u64::from(u32::MAX) + 4, 1, u32::MAX, 3));
/// ```
pub fn reduce_u32(data: &[u32]) -> Reduction {
    let mut r = Reduction::EMPTY;
    for &v in data {
        r.sum = r.sum.wrapping_add(u64::from(v));
        r.min = r.min.min(v);
        r.max = r.max.max(v);
    }
    r.count = data.len() as u64;
    r
}

/// `a * x[i] + y[i]` for every `i`, rounded after the multiply and again
/// after the add (no fused multiply-add): the [`Job::saxpy`](super::Job::saxpy)
/// kernel.
///
/// # Panics
/// If `x` and `y` differ in length.
///
/// ```
/// assert_eq!(shared_nothing::accel::saxpy(2.0, &[1.0, 2.0], &[0.5, 0.5]), vec![2.5, 4.5]);
/// ```
pub fn saxpy(a: f32, x: &[f32], y: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), y.len(), "x and y must have the same length");
    x.iter().zip(y).map(|(&x, &y)| a * x + y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vectors() {
        // RFC 3720 (iSCSI) appendix B.4 and the common check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        let dec: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&dec), 0x113F_DB5C);
    }

    #[test]
    fn slicing_by_8_matches_bytewise() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 999, 1000] {
            let mut crc = 0xFFFF_FFFFu32;
            for &b in &data[..len] {
                crc = TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
            }
            assert_eq!(crc32c(&data[..len]), crc ^ 0xFFFF_FFFF, "len {len}");
        }
    }

    #[test]
    fn blocks_and_reduction_and_saxpy() {
        assert!(crc32c_blocks(b"", 4).is_empty());
        assert_eq!(crc32c_blocks(b"123456789", 9), vec![0xE306_9283]);
        let r = reduce_u32(&[]);
        assert_eq!((r.sum, r.min, r.max, r.count), (0, u32::MAX, 0, 0));
        let big = vec![u32::MAX; 10];
        assert_eq!(reduce_u32(&big).sum, 10 * u64::from(u32::MAX));
        assert_eq!(saxpy(-1.0, &[1.0], &[1.0]), vec![0.0]);
    }
}
