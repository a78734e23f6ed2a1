//! The WAL's record format: one record is one atomic batch of a shard's
//! operations.
//!
//! Layout (little endian):
//!
//! ```text
//! off len  field
//!   0   4  CRC32C of bytes 4..16+len (the rest of the header and the body)
//!   4   4  body length `len`, 4..=MAX_BODY
//!   8   8  LSN, >= 1
//!  16 len  body: u32 op count (>= 1), then each op:
//!          u8 kind (1 put, 2 delete), u32 table, u16 key length,
//!          u32 value length (put only), key, value (put only)
//! ```
//!
//! **R1:** the checksum covers the length and the LSN as well as the body,
//! so a torn or flipped header is caught as surely as a torn body.
//! **R2:** an all-zero header never checks out (a zero length and a zero
//! LSN are both refused, whatever the checksum says), so the zero tail a
//! crash can leave is never a record.
//! **R3:** a record decodes only if the body is consumed exactly by its op
//! count; trailing or missing bytes under a good checksum are corruption.

use crate::table::TableId;

/// Bytes in front of every body.
pub const HEADER: usize = 16;
/// Largest body: a 512 MiB value, its key and headers fit with room to
/// spare; a larger length in a header is corruption and must not drive an
/// allocation.
pub const MAX_BODY: usize = 1 << 30;

const PUT: u8 = 1;
const DELETE: u8 = 2;

/// A log sequence number: the position of a record in a shard's WAL.
/// Strictly increasing, from 1; 0 means "before every record".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LSN {}", self.0)
    }
}

impl Lsn {
    /// The next LSN.
    pub fn next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }
}

/// One operation of a batch, borrowing its bytes (from the caller on the
/// way in, from the record on the way out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// Store `value` under `key` in `table`.
    Put {
        table: TableId,
        key: &'a [u8],
        value: &'a [u8],
    },
    /// Remove `key` from `table`.
    Delete { table: TableId, key: &'a [u8] },
}

impl Op<'_> {
    fn encoded_len(&self) -> usize {
        match self {
            Op::Put { key, value, .. } => 11 + key.len() + value.len(),
            Op::Delete { key, .. } => 7 + key.len(),
        }
    }
}

/// Why a batch cannot be made a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// No operations.
    Empty,
    /// The body would exceed [`MAX_BODY`] (`len` bytes).
    TooLarge { len: usize },
    /// A key over 64 KiB (the tree's bound is far lower).
    KeyTooLong { len: usize },
}

/// An encoded record, ready to be queued: its LSN and its bytes on disk.
#[derive(Debug)]
pub struct Record {
    pub lsn: Lsn,
    pub bytes: Vec<u8>,
}

/// Encodes `ops` as the record of `lsn`.
///
/// # Errors
/// The batch is empty, too large, or has a key over 64 KiB.
pub fn encode(lsn: Lsn, ops: &[Op<'_>]) -> Result<Record, EncodeError> {
    if ops.is_empty() {
        return Err(EncodeError::Empty);
    }
    let mut len = 4usize;
    for op in ops {
        let key = match op {
            Op::Put { key, .. } | Op::Delete { key, .. } => key.len(),
        };
        if key > u16::MAX as usize {
            return Err(EncodeError::KeyTooLong { len: key });
        }
        len = len.saturating_add(op.encoded_len());
    }
    if len > MAX_BODY || ops.len() > u32::MAX as usize {
        return Err(EncodeError::TooLarge { len });
    }
    let mut b = Vec::with_capacity(HEADER + len);
    b.extend_from_slice(&[0; 4]);
    // Both fit: len <= MAX_BODY and the op count was checked.
    b.extend_from_slice(&(len as u32).to_le_bytes());
    b.extend_from_slice(&lsn.0.to_le_bytes());
    b.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        match op {
            Op::Put { table, key, value } => {
                b.push(PUT);
                b.extend_from_slice(&table.0.to_le_bytes());
                b.extend_from_slice(&(key.len() as u16).to_le_bytes());
                b.extend_from_slice(&(value.len() as u32).to_le_bytes());
                b.extend_from_slice(key);
                b.extend_from_slice(value);
            }
            Op::Delete { table, key } => {
                b.push(DELETE);
                b.extend_from_slice(&table.0.to_le_bytes());
                b.extend_from_slice(&(key.len() as u16).to_le_bytes());
                b.extend_from_slice(key);
            }
        }
    }
    let crc = crc32c::crc32c(&b[4..]);
    b[0..4].copy_from_slice(&crc.to_le_bytes());
    Ok(Record { lsn, bytes: b })
}

/// What a record header says, before its body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    crc: u32,
    /// Body length.
    pub len: usize,
    pub lsn: Lsn,
}

impl Header {
    /// Parses a header; `None` if its fields are impossible (R2).
    pub fn parse(b: &[u8; HEADER]) -> Option<Header> {
        let [c0, c1, c2, c3, l0, l1, l2, l3, rest @ ..] = *b;
        let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        let lsn = Lsn(u64::from_le_bytes(rest));
        if !(4..=MAX_BODY).contains(&len) || lsn.0 == 0 {
            return None;
        }
        Some(Header {
            crc: u32::from_le_bytes([c0, c1, c2, c3]),
            len,
            lsn,
        })
    }

    /// Bytes of the whole record on disk.
    pub fn total(&self) -> u64 {
        (HEADER + self.len) as u64
    }
}

/// Checks `record` (header and body, exactly `header.total()` bytes) and
/// decodes its operations; `None` if it is not a valid record (R1, R3).
pub fn decode<'a>(header: &Header, record: &'a [u8]) -> Option<Vec<Op<'a>>> {
    if record.len() as u64 != header.total() || crc32c::crc32c(&record[4..]) != header.crc {
        return None;
    }
    let mut body = Body(&record[HEADER..]);
    let count = body.u32()? as usize;
    // Every op takes at least 7 bytes: the count cannot be larger.
    if count == 0 || count > body.0.len() / 7 {
        return None;
    }
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = body.take(1)?[0];
        let table = TableId(body.u32()?);
        let key_len = u16::from_le_bytes(body.take(2)?.try_into().ok()?) as usize;
        ops.push(match kind {
            PUT => {
                let value_len = body.u32()? as usize;
                let key = body.take(key_len)?;
                let value = body.take(value_len)?;
                Op::Put { table, key, value }
            }
            DELETE => Op::Delete {
                table,
                key: body.take(key_len)?,
            },
            _ => return None,
        });
    }
    body.0.is_empty().then_some(ops)
}

/// A cursor over a record body.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(b: &[u8]) -> Option<Header> {
        Header::parse(b.get(..HEADER)?.try_into().ok()?)
    }

    fn round_trip(lsn: u64, ops: &[Op<'_>]) {
        let rec = encode(Lsn(lsn), ops).unwrap();
        let h = header(&rec.bytes).unwrap();
        assert_eq!((h.lsn, h.total()), (Lsn(lsn), rec.bytes.len() as u64));
        assert_eq!(decode(&h, &rec.bytes).unwrap(), ops);
    }

    #[test]
    fn batches_round_trip() {
        let big = vec![0xAB; 3 << 20];
        round_trip(
            1,
            &[Op::Put {
                table: TableId(0),
                key: b"k",
                value: b"v",
            }],
        );
        round_trip(
            u64::MAX - 1,
            &[
                Op::Put {
                    table: TableId(7),
                    key: b"",
                    value: b"",
                },
                Op::Delete {
                    table: TableId(u32::MAX),
                    key: &[0xff; 1024],
                },
                Op::Put {
                    table: TableId(1),
                    key: b"blob",
                    value: &big,
                },
            ],
        );
    }

    #[test]
    fn bad_batches_are_refused() {
        assert_eq!(encode(Lsn(1), &[]).unwrap_err(), EncodeError::Empty);
        let key = vec![0; 70_000];
        let op = Op::Delete {
            table: TableId(0),
            key: &key,
        };
        assert!(matches!(
            encode(Lsn(1), &[op]),
            Err(EncodeError::KeyTooLong { len: 70_000 })
        ));
    }

    #[test]
    fn a_zero_header_is_never_a_record() {
        assert_eq!(header(&[0; HEADER]), None);
        // Even with a checksum that would match a zero body.
        let mut b = [0u8; HEADER];
        b[..4].copy_from_slice(&crc32c::crc32c(&[0; 12]).to_le_bytes());
        assert_ne!(crc32c::crc32c(&[0; 12]), 0);
        assert_eq!(header(&b), None);
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let rec = encode(
            Lsn(42),
            &[
                Op::Put {
                    table: TableId(3),
                    key: b"key",
                    value: b"value",
                },
                Op::Delete {
                    table: TableId(3),
                    key: b"gone",
                },
            ],
        )
        .unwrap();
        for at in 0..rec.bytes.len() {
            for bit in 0..8 {
                let mut b = rec.bytes.clone();
                b[at] ^= 1 << bit;
                let ok = header(&b)
                    .filter(|h| h.total() == b.len() as u64)
                    .and_then(|h| decode(&h, &b).map(|_| ()));
                assert_eq!(ok, None, "byte {at} bit {bit}");
            }
        }
    }

    #[test]
    fn a_good_checksum_over_a_bad_body_is_refused() {
        // A count larger than the ops present, re-checksummed.
        let mut rec = encode(
            Lsn(5),
            &[Op::Delete {
                table: TableId(0),
                key: b"k",
            }],
        )
        .unwrap()
        .bytes;
        rec[HEADER] = 2;
        let crc = crc32c::crc32c(&rec[4..]);
        rec[..4].copy_from_slice(&crc.to_le_bytes());
        let h = header(&rec).unwrap();
        assert_eq!(decode(&h, &rec), None);
        // An unknown op kind.
        rec[HEADER] = 1;
        rec[HEADER + 4] = 9;
        let crc = crc32c::crc32c(&rec[4..]);
        rec[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&h, &rec), None);
    }
}
