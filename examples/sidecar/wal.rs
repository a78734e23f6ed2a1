//! The daemon's write-ahead log: its record format and the scan that
//! recovers it. Writing happens in the engine (one group-committed write
//! per batch through the storage worker); this file is pure.
//!
//! A record is `[body length: u32 LE][CRC32C of body: u32 LE][body]`; a
//! body starts with its kind:
//! - `PATH  (1) file: u32, path bytes`: names a file number (relative to
//!   the root) before the first write to it in this log;
//! - `WRITE (2) lsn: u64, file: u32, offset: u64, data`: an accepted write
//!   at an absolute offset (an append's offset is fixed when it is
//!   accepted, so applying a record twice writes the same bytes to the
//!   same place);
//! - `DONE  (3) through: u64`: every write with an LSN up to `through` is
//!   on disk in its file, and every send up to it acknowledged by its
//!   destination (or failed, and said so to its client);
//! - `SEND  (4) lsn: u64, name length: u8, destination name, payload`: an
//!   accepted send (its LSN is the operation id the destination sees).
//!
//! **Invariant (W1):** replay applies, in LSN order, every WRITE past the
//! last DONE. Re-applying a suffix in order leaves each file as applying
//! it once does, so an accepted write lands exactly once however often
//! the daemon dies during replay. The scan stops at the first record that
//! is short or fails its CRC (a torn tail): nothing after it was ever
//! acknowledged, since an ack waits for the sync of the write that holds
//! it. Replay sends every SEND past the last DONE again (W2): at least
//! once, with the same operation id, so receivers drop duplicates.

/// Segment `no`'s file name in the WAL directory.
pub fn segment_name(no: u64) -> String {
    format!("wal-{no:08}.log")
}

/// The segment number a file name gives, if it is a segment's.
pub fn segment_no(name: &str) -> Option<u64> {
    let n = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    (n.len() >= 8 && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

const KIND_PATH: u8 = 1;
const KIND_WRITE: u8 = 2;
const KIND_DONE: u8 = 3;
const KIND_SEND: u8 = 4;
/// No record body is larger (the data area bounds a write far below).
pub const MAX_BODY: usize = 64 << 20;

/// One record, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Path {
        file: u32,
        path: Vec<u8>,
    },
    Write {
        lsn: u64,
        file: u32,
        offset: u64,
        data: Vec<u8>,
    },
    Done {
        through: u64,
    },
    Send {
        lsn: u64,
        dest: Vec<u8>,
        data: Vec<u8>,
    },
}

fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    body(out);
    let len = (out.len() - start - 8) as u32;
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

pub fn encode_path(out: &mut Vec<u8>, file: u32, path: &[u8]) {
    frame(out, |b| {
        b.push(KIND_PATH);
        b.extend_from_slice(&file.to_le_bytes());
        b.extend_from_slice(path);
    });
}

pub fn encode_write(out: &mut Vec<u8>, lsn: u64, file: u32, offset: u64, data: &[u8]) {
    frame(out, |b| {
        b.push(KIND_WRITE);
        b.extend_from_slice(&lsn.to_le_bytes());
        b.extend_from_slice(&file.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(data);
    });
}

pub fn encode_done(out: &mut Vec<u8>, through: u64) {
    frame(out, |b| {
        b.push(KIND_DONE);
        b.extend_from_slice(&through.to_le_bytes());
    });
}

/// `dest` is a destination name (at most 64 bytes, `layout::valid_name`).
pub fn encode_send(out: &mut Vec<u8>, lsn: u64, dest: &[u8], data: &[u8]) {
    frame(out, |b| {
        b.push(KIND_SEND);
        b.extend_from_slice(&lsn.to_le_bytes());
        b.push(dest.len() as u8);
        b.extend_from_slice(dest);
        b.extend_from_slice(data);
    });
}

fn decode_body(b: &[u8]) -> Option<Record> {
    let u32_at = |i: usize| {
        b.get(i..i + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap_or_default()))
    };
    let u64_at = |i: usize| {
        b.get(i..i + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
    };
    match *b.first()? {
        KIND_PATH => Some(Record::Path {
            file: u32_at(1)?,
            path: b.get(5..)?.to_vec(),
        }),
        KIND_WRITE => Some(Record::Write {
            lsn: u64_at(1)?,
            file: u32_at(9)?,
            offset: u64_at(13)?,
            data: b.get(21..)?.to_vec(),
        }),
        KIND_DONE if b.len() == 9 => Some(Record::Done {
            through: u64_at(1)?,
        }),
        KIND_SEND => {
            let n = usize::from(*b.get(9)?);
            Some(Record::Send {
                lsn: u64_at(1)?,
                dest: b.get(10..10 + n)?.to_vec(),
                data: b.get(10 + n..)?.to_vec(),
            })
        }
        _ => None,
    }
}

/// What a scan of a log found.
#[derive(Debug, Default)]
pub struct Scan {
    pub records: Vec<Record>,
    /// Bytes up to the end of the last whole record.
    pub valid_len: u64,
    /// Why the scan stopped before the end, if it did.
    pub cut: Option<String>,
}

/// Decodes records from the start of `bytes` up to the first bad one.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut s = Scan::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            s.cut = Some(format!("torn record header at {at}"));
            break;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let body = if len <= MAX_BODY {
            bytes.get(at + 8..at + 8 + len)
        } else {
            None
        };
        let Some(body) = body else {
            s.cut = Some(format!("torn or oversized record ({len} bytes) at {at}"));
            break;
        };
        if crc32c::crc32c(body) != crc {
            s.cut = Some(format!("CRC mismatch at {at}"));
            break;
        }
        let Some(r) = decode_body(body) else {
            s.cut = Some(format!("undecodable record at {at}"));
            break;
        };
        s.records.push(r);
        at += 8 + len;
        s.valid_len = at as u64;
    }
    s
}

/// What replay must do: the writes past the last DONE in LSN order, with
/// the path of each file number, and the numbers the log has used.
#[derive(Debug, Default)]
pub struct Pending {
    pub paths: std::collections::HashMap<u32, Vec<u8>>,
    pub writes: Vec<(u64, u32, u64, Vec<u8>)>,
    /// Sends past the last DONE, in LSN order: `(lsn, destination, data)`.
    pub sends: Vec<(u64, Vec<u8>, Vec<u8>)>,
    pub max_lsn: u64,
    pub max_file: u32,
    pub done: u64,
}

pub fn pending(records: Vec<Record>) -> Pending {
    let mut p = Pending::default();
    let mut writes = Vec::new();
    for r in records {
        match r {
            Record::Path { file, path } => {
                p.max_file = p.max_file.max(file);
                p.paths.insert(file, path);
            }
            Record::Write {
                lsn,
                file,
                offset,
                data,
            } => {
                p.max_lsn = p.max_lsn.max(lsn);
                writes.push((lsn, file, offset, data));
            }
            Record::Done { through } => p.done = p.done.max(through),
            Record::Send { lsn, dest, data } => {
                p.max_lsn = p.max_lsn.max(lsn);
                p.sends.push((lsn, dest, data));
            }
        }
    }
    let done = p.done;
    writes.retain(|w| w.0 > done);
    writes.sort_by_key(|w| w.0);
    p.writes = writes;
    p.sends.retain(|s| s.0 > done);
    p.sends.sort_by_key(|s| s.0);
    p
}

impl Pending {
    /// What a DONE written after replay may cover: everything up to the
    /// first send still to deliver (writes are applied by then).
    pub fn done_after_replay(&self) -> u64 {
        self.sends
            .first()
            .map_or(self.max_lsn.max(self.done), |s| s.0 - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let mut b = Vec::new();
        encode_path(&mut b, 1, b"a/b");
        encode_write(&mut b, 1, 1, 10, b"hello");
        encode_write(&mut b, 2, 1, 15, b"world");
        encode_done(&mut b, 1);
        let whole = b.len() as u64;
        encode_write(&mut b, 3, 1, 20, b"torn");
        b.truncate(b.len() - 2);
        let s = scan(&b);
        assert_eq!(s.valid_len, whole);
        assert!(s.cut.is_some());
        assert_eq!(s.records.len(), 4);
        let p = pending(s.records);
        assert_eq!(p.done, 1);
        assert_eq!(p.writes, vec![(2, 1, 15, b"world".to_vec())]);
        assert_eq!(p.paths[&1], b"a/b");
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(7), "wal-00000007.log");
        assert_eq!(segment_no("wal-00000007.log"), Some(7));
        assert_eq!(
            segment_no(&segment_name(123_456_789_012)),
            Some(123_456_789_012)
        );
        for bad in [
            "wal.log",
            "wal-7.log",
            "wal-0000000x.log",
            "wal-00000007.log.tmp",
        ] {
            assert_eq!(segment_no(bad), None, "{bad}");
        }
    }

    #[test]
    fn sends_past_done_are_pending_and_hold_the_watermark() {
        let mut b = Vec::new();
        encode_send(&mut b, 1, b"logs", b"early");
        encode_done(&mut b, 1);
        encode_send(&mut b, 3, b"logs", b"late");
        encode_write(&mut b, 2, 1, 0, b"w");
        encode_write(&mut b, 4, 1, 1, b"x");
        let s = scan(&b);
        assert_eq!(s.cut, None);
        let p = pending(s.records);
        assert_eq!(p.sends, vec![(3, b"logs".to_vec(), b"late".to_vec())]);
        assert_eq!(p.writes.len(), 2);
        assert_eq!(p.max_lsn, 4);
        assert_eq!(p.done_after_replay(), 2, "a DONE may not pass send 3");
        // A send whose name length runs past its body is refused.
        let mut bad = Vec::new();
        frame(&mut bad, |x| {
            x.push(KIND_SEND);
            x.extend_from_slice(&5u64.to_le_bytes());
            x.push(200);
            x.extend_from_slice(b"ab");
        });
        assert!(scan(&bad).cut.is_some());
    }

    #[test]
    fn a_flipped_bit_stops_the_scan_there() {
        let mut b = Vec::new();
        encode_write(&mut b, 1, 1, 0, b"x");
        let first = b.len();
        encode_write(&mut b, 2, 1, 1, b"y");
        b[first + 10] ^= 1;
        let s = scan(&b);
        assert_eq!((s.records.len(), s.valid_len), (1, first as u64));
        // Garbage lengths neither allocate nor panic.
        let s = scan(&[0xff; 64]);
        assert_eq!((s.records.len(), s.valid_len), (0, 0));
    }
}
