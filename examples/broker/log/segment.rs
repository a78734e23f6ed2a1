//! One segment: a `.log` file of records and its sparse `.idx`.
//!
//! Files are named by the segment's base offset, zero-padded to 20 digits so
//! names sort like offsets. The index holds the position (relative to the
//! segment) of a record boundary at least every `interval` bytes; each entry
//! is `[u32 BE position][u32 BE CRC32C of those 4 bytes]`, so a torn or
//! garbled index is noticed entry by entry and rebuilt from the log.
//!
//! Index entries reach the `.idx` file only after the data they point to was
//! synced (see `Log::sync`): an entry then never points past a hole that a
//! power loss left in unsynced data, and recovery may trust it as a place to
//! start verifying.

use super::record::{self, WalkEnd};
use super::storage::{Dir, SegmentFile};
use std::io;
use std::ops::ControlFlow;

const INDEX_ENTRY: usize = 8;

/// `00000000000000004096.log` for base 4096.
pub fn log_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// `00000000000000004096.idx` for base 4096.
pub fn index_name(base: u64) -> String {
    format!("{base:020}.idx")
}

/// The base offset a segment or index file name encodes, if it is one of
/// ours; `is_log` tells which of the two.
pub fn parse_name(name: &str) -> Option<(u64, bool)> {
    let (stem, ext) = name.split_once('.')?;
    let is_log = match ext {
        "log" => true,
        "idx" => false,
        _ => return None,
    };
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, is_log))
}

/// What opening a segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRecovery {
    /// File length found on disk.
    pub found_len: u64,
    /// Length of the valid prefix kept.
    pub valid_len: u64,
    /// Everything past `valid_len` is zero bytes: space preallocated for
    /// appends (or never written), kept as it is, not a torn tail.
    pub zero_tail: bool,
    /// Whether the index file was missing entries or had bad ones.
    pub index_rebuilt: bool,
}

/// Outcome of checking whether a position is a record boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// It is.
    Yes,
    /// It falls inside a record.
    No,
    /// The records before it do not parse (corruption).
    Corrupt,
}

#[derive(Debug)]
pub struct Segment<F> {
    pub base: u64,
    pub log: F,
    idx: F,
    /// Logical length, including bytes still in the log's write buffer.
    pub len: u64,
    /// Relative positions of record boundaries, strictly increasing.
    index: Vec<u32>,
    /// `index[..idx_flushed]` are in the `.idx` file.
    idx_flushed: usize,
    interval: u32,
    /// Written since the last `sync_data`.
    pub dirty: bool,
}

impl<F: SegmentFile> Segment<F> {
    /// A new, empty segment (its files are created or emptied).
    pub fn create<D: Dir<File = F>>(dir: &D, base: u64, interval: u32) -> io::Result<Self> {
        let mut log = dir.open(&log_name(base))?;
        let mut idx = dir.open(&index_name(base))?;
        log.truncate(0)?;
        idx.truncate(0)?;
        Ok(Segment {
            base,
            log,
            idx,
            len: 0,
            index: Vec::new(),
            idx_flushed: 0,
            interval: interval.max(1),
            dirty: false,
        })
    }

    /// A new, empty segment whose files someone else creates (the storage
    /// worker, for a log with deferred I/O): no system call here.
    pub fn create_later<D: Dir<File = F>>(dir: &D, base: u64, interval: u32) -> Self {
        Segment {
            base,
            log: dir.open_later(&log_name(base)),
            idx: dir.open_later(&index_name(base)),
            len: 0,
            index: Vec::new(),
            idx_flushed: 0,
            interval: interval.max(1),
            dirty: false,
        }
    }

    /// Index entries not yet in the `.idx` file for records starting below
    /// `limit` (relative): `(file position, bytes)` to write, counted as
    /// written. Call only with `limit` at or below the durable end.
    pub fn take_index(&mut self, limit: u64) -> Option<(u64, Vec<u8>)> {
        let end = self.index[self.idx_flushed..]
            .iter()
            .take_while(|&&p| u64::from(p) < limit)
            .count()
            + self.idx_flushed;
        if end == self.idx_flushed {
            return None;
        }
        let mut bytes = Vec::with_capacity((end - self.idx_flushed) * INDEX_ENTRY);
        for &pos in &self.index[self.idx_flushed..end] {
            let b = pos.to_be_bytes();
            bytes.extend_from_slice(&b);
            bytes.extend_from_slice(&crc32c::crc32c(&b).to_be_bytes());
        }
        let at = (self.idx_flushed * INDEX_ENTRY) as u64;
        self.idx_flushed = end;
        Some((at, bytes))
    }

    /// Opens an existing segment: loads what is valid of its index, verifies
    /// every record from the last index entry to the end of the file, cuts a
    /// torn or corrupt tail, and completes the index. A tail of nothing but
    /// zero bytes is preallocated space (see the server's owner): it stays,
    /// and appends go over it from the valid end.
    pub fn open<D: Dir<File = F>>(
        dir: &D,
        base: u64,
        interval: u32,
    ) -> io::Result<(Self, SegmentRecovery)> {
        let mut log = dir.open(&log_name(base))?;
        let mut idx = dir.open(&index_name(base))?;
        let found_len = log.len()?;
        if found_len > u64::from(u32::MAX) {
            // Positions in the index are 32-bit; we never write such a file.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment {} is larger than 4 GiB", log_name(base)),
            ));
        }
        let idx_len = idx.len()?;

        // A valid index has fewer entries than the log has bytes; the cap
        // keeps a garbage length from driving a huge allocation.
        let usable = idx_len
            .min(found_len.saturating_mul(INDEX_ENTRY as u64))
            .min(64 << 20);
        let mut raw = vec![0u8; usable as usize / INDEX_ENTRY * INDEX_ENTRY];
        idx.read_exact_at(0, &mut raw)?;
        let mut index = load_index(&raw, found_len);
        // Bad entries, or no index at all for a non-empty log, mean rebuilding;
        // a good but short index (appends not yet synced) is just extended.
        let mut index_rebuilt =
            (index.len() * INDEX_ENTRY) as u64 != idx_len || (index.is_empty() && found_len > 0);

        // Verify from the last entry; an entry whose own record is invalid
        // is dropped and the walk restarts from the one before.
        let interval = interval.max(1);
        let valid_len = loop {
            let start = index.last().copied().unwrap_or(0);
            let mut added = Vec::new();
            let mut last = start;
            let (end, how) = record::walk(&log, u64::from(start), found_len, true, |pos, _| {
                let pos = pos as u32;
                if (index.is_empty() && added.is_empty() && pos == 0)
                    || pos >= last.saturating_add(interval)
                {
                    added.push(pos);
                    last = pos;
                }
                ControlFlow::Continue(())
            })?;
            if how == WalkEnd::Invalid && end == u64::from(start) && !index.is_empty() {
                index.pop();
                index_rebuilt = true;
                continue;
            }
            index.extend(added);
            break end;
        };

        let zero_tail = valid_len < found_len && all_zero(&log, valid_len, found_len)?;
        if valid_len < found_len && !zero_tail {
            log.truncate(valid_len)?;
        }
        let idx_flushed = if index_rebuilt {
            idx.truncate(0)?;
            0
        } else {
            raw.len() / INDEX_ENTRY
        };
        let mut seg = Segment {
            base,
            log,
            idx,
            len: valid_len,
            index,
            idx_flushed,
            interval,
            dirty: false,
        };
        // Everything indexed now was just read back from the file.
        seg.flush_index()?;
        let rec = SegmentRecovery {
            found_len,
            valid_len,
            zero_tail,
            index_rebuilt,
        };
        Ok((seg, rec))
    }

    /// Records that a record starts at `rel` (called for every append).
    pub fn note_record(&mut self, rel: u64) {
        let rel = rel as u32;
        match self.index.last() {
            None => self.index.push(rel),
            Some(&last) if rel >= last.saturating_add(self.interval) => self.index.push(rel),
            Some(_) => {}
        }
    }

    /// Writes index entries not yet in the `.idx` file. Call only once the
    /// data they point to is synced (or read back, at open).
    pub fn flush_index(&mut self) -> io::Result<()> {
        if self.idx_flushed == self.index.len() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity((self.index.len() - self.idx_flushed) * INDEX_ENTRY);
        for &pos in &self.index[self.idx_flushed..] {
            let b = pos.to_be_bytes();
            bytes.extend_from_slice(&b);
            bytes.extend_from_slice(&crc32c::crc32c(&b).to_be_bytes());
        }
        self.idx
            .write_all_at((self.idx_flushed * INDEX_ENTRY) as u64, &bytes)?;
        self.idx_flushed = self.index.len();
        Ok(())
    }

    /// Whether `rel` is a record boundary, looking only at `[0, limit)` of
    /// the file (`rel <= limit`): one binary search in the index, then a
    /// header-only walk of at most about one index interval.
    pub fn boundary(&self, rel: u64, limit: u64) -> io::Result<Boundary> {
        if rel == limit || rel == 0 {
            return Ok(Boundary::Yes);
        }
        let i = self.index.partition_point(|&p| u64::from(p) <= rel);
        let start = match i {
            0 => 0,
            i => u64::from(self.index[i - 1]),
        };
        let (pos, how) = record::walk(&self.log, start, limit, false, |pos, _| {
            if pos >= rel {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(match how {
            WalkEnd::Stopped if pos == rel => Boundary::Yes,
            WalkEnd::Stopped | WalkEnd::Clean => Boundary::No,
            WalkEnd::Invalid => Boundary::Corrupt,
        })
    }

    /// Number of index entries (for tests and stats).
    pub fn index_len(&self) -> usize {
        self.index.len()
    }
}

/// Whether the file's bytes `[from, to)` are all zero (read in chunks;
/// preallocated or sparse space reads as zeros without disk I/O).
fn all_zero<F: SegmentFile>(file: &F, from: u64, to: u64) -> io::Result<bool> {
    const CHUNK: u64 = 256 << 10;
    let mut buf = vec![0u8; CHUNK.min(to - from) as usize];
    let mut pos = from;
    while pos < to {
        let n = CHUNK.min(to - pos) as usize;
        file.read_exact_at(pos, &mut buf[..n])?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// The valid prefix of an index file: entries with a good checksum, strictly
/// increasing, starting at 0, inside the log file.
fn load_index(raw: &[u8], log_len: u64) -> Vec<u32> {
    let mut index: Vec<u32> = Vec::with_capacity(raw.len() / INDEX_ENTRY);
    for entry in raw.chunks_exact(INDEX_ENTRY) {
        let pos = [entry[0], entry[1], entry[2], entry[3]];
        let crc = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
        let p = u32::from_be_bytes(pos);
        let ordered = match index.last() {
            None => p == 0,
            Some(&last) => p > last,
        };
        if crc32c::crc32c(&pos) != crc || !ordered || u64::from(p) >= log_len {
            break;
        }
        index.push(p);
    }
    index
}
