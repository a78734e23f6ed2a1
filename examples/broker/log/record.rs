//! On-disk record format and the one loop that walks records in a file.
//!
//! A record is `[u32 BE payload length][u32 BE CRC32C][payload]`. The CRC
//! covers the four length bytes and the payload, so a torn or flipped length
//! is caught as surely as a torn payload, and an all-zero tail (what a crash
//! can leave in an extended file) never checks out: CRC32C of a zero length
//! is not zero.

use super::storage::SegmentFile;
use std::io;
use std::ops::ControlFlow;

/// Bytes in front of every payload on disk.
pub const RECORD_HEADER: u64 = 8;
/// No valid record is longer than this, whatever `--max-record` is now; a
/// larger length in a header is corruption, and must not drive an allocation.
pub const HARD_MAX_PAYLOAD: u32 = 1 << 30;
/// Read granularity of the walk.
const CHUNK: usize = 64 << 10;

/// The checksum stored for a payload.
pub fn checksum(payload: &[u8]) -> u32 {
    // Payloads are at most 1 GiB (checked on append), so the cast is exact.
    let len = payload.len() as u32;
    crc32c::crc32c_append(crc32c::crc32c(&len.to_be_bytes()), payload)
}

/// Appends the on-disk form of `payload` to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&checksum(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Bytes a payload of `len` bytes takes on disk.
pub fn disk_len(len: usize) -> u64 {
    RECORD_HEADER + len as u64
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole record with a good checksum, `total` bytes on disk.
    Record { payload: &'a [u8], total: u64 },
    /// The buffer ends inside the record: it takes `total` bytes (the
    /// header's own 8 if even that is cut).
    Incomplete { total: u64 },
    /// Not a valid record (a bad checksum or an impossible length).
    Corrupt,
}

/// Decodes the record at the start of `buf` (bytes read from a segment at
/// a record boundary).
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some((header, rest)) = buf.split_first_chunk::<8>() else {
        return Decoded::Incomplete {
            total: RECORD_HEADER,
        };
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len > HARD_MAX_PAYLOAD {
        return Decoded::Corrupt;
    }
    let total = disk_len(len as usize);
    let Some(payload) = rest.get(..len as usize) else {
        return Decoded::Incomplete { total };
    };
    if checksum(payload) != crc {
        return Decoded::Corrupt;
    }
    Decoded::Record { payload, total }
}

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEnd {
    /// Reached `to` exactly, on a record boundary.
    Clean,
    /// The visitor asked to stop before the record at `pos`.
    Stopped,
    /// The bytes at `pos` are not a valid record (torn, corrupt or, when not
    /// verifying, a length running past `to`).
    Invalid,
}

/// Walks records in `file` from `from` (a record boundary) up to `to`.
///
/// With `verify`, every payload is read and its CRC checked, and `visit`
/// gets `(position, Some(payload))`; without, only headers are read and
/// `visit` gets `(position, None)`. `visit` sees each record before the walk
/// moves past it and may stop the walk there. Returns where the walk ended:
/// the position of the first record not consumed, and why.
pub fn walk<F: SegmentFile>(
    file: &F,
    from: u64,
    to: u64,
    verify: bool,
    mut visit: impl FnMut(u64, Option<&[u8]>) -> ControlFlow<()>,
) -> io::Result<(u64, WalkEnd)> {
    let mut buf: Vec<u8> = Vec::new();
    // `buf` holds the file bytes [buf_pos, buf_pos + buf.len()).
    let mut buf_pos = from;
    let mut pos = from;
    loop {
        if pos >= to {
            return Ok((pos, WalkEnd::Clean));
        }
        if to - pos < RECORD_HEADER {
            return Ok((pos, WalkEnd::Invalid));
        }
        if !covers(buf_pos, buf.len(), pos, RECORD_HEADER) {
            refill(file, &mut buf, &mut buf_pos, pos, to, RECORD_HEADER)?;
        }
        let at = (pos - buf_pos) as usize;
        let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let crc = u32::from_be_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
        let total = disk_len(len as usize);
        if len > HARD_MAX_PAYLOAD || total > to - pos {
            return Ok((pos, WalkEnd::Invalid));
        }
        let payload = if verify {
            if !covers(buf_pos, buf.len(), pos, total) {
                refill(file, &mut buf, &mut buf_pos, pos, to, total)?;
            }
            let at = (pos - buf_pos) as usize + RECORD_HEADER as usize;
            let payload = &buf[at..at + len as usize];
            if checksum(payload) != crc {
                return Ok((pos, WalkEnd::Invalid));
            }
            Some(payload)
        } else {
            None
        };
        if visit(pos, payload).is_break() {
            return Ok((pos, WalkEnd::Stopped));
        }
        pos += total;
    }
}

fn covers(buf_pos: u64, buf_len: usize, pos: u64, need: u64) -> bool {
    pos >= buf_pos && pos + need <= buf_pos + buf_len as u64
}

/// Reloads `buf` to start at `pos` with at least `need` bytes (and up to a
/// chunk, never past `to`).
fn refill<F: SegmentFile>(
    file: &F,
    buf: &mut Vec<u8>,
    buf_pos: &mut u64,
    pos: u64,
    to: u64,
    need: u64,
) -> io::Result<()> {
    let want = need.max(CHUNK as u64).min(to - pos) as usize;
    buf.resize(want, 0);
    file.read_exact_at(pos, buf)?;
    *buf_pos = pos;
    Ok(())
}
