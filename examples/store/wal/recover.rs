//! Recovery: read the segments in LSN order, verify every record, cut the
//! WAL at the first invalid one, and hand the batches past the
//! checkpoint's LSN to a visitor.
//!
//! A record is valid if it checks out (`record`, R1-R3) and carries the
//! LSN that follows its predecessor's (the segment's name for the first).
//! At the first invalid record the segment is truncated there (and
//! synced), and every later segment removed: what follows a hole cannot be
//! replayed. **V1:** the kept records are exactly the longest valid prefix
//! of the WAL, so a torn tail, a flipped byte or a stale record (a good
//! checksum but the wrong LSN) all end it at the last whole record before.
//! **V2:** a cut is reported as damage ([`Recovery::damage`]) when a valid
//! record with a later LSN follows it, which a crash mid-write never
//! leaves, so the log can say that acknowledged writes were lost.

use super::Segment;
use super::error::WalError;
use super::file::{WalDir, WalFile, parse_segment_name, segment_name};
use super::record::{self, HEADER, Header, Lsn, Op};
use std::io;
use std::path::Path;

/// Read granularity of the scan.
const CHUNK: usize = 1 << 20;

/// What recovery found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Valid records found (replayed or not).
    pub records: u64,
    /// Batches handed to the visitor (LSN past the checkpoint's).
    pub replayed: u64,
    /// The segment whose tail was cut: first LSN, length found, kept.
    pub truncated: Option<(Lsn, u64, u64)>,
    /// Segments removed: after a cut, or wholly covered by the checkpoint
    /// when the WAL ends before it.
    pub removed: Vec<Lsn>,
    /// Damage, not a torn tail: the LSN of a valid record found past the
    /// cut (in the cut segment, within [`PROBE`] bytes, or a later
    /// segment's first). Records from the cut up to it were once written
    /// whole, so acknowledged writes are among the lost; a crash mid-write
    /// leaves nothing valid after its torn record. (A stored value that
    /// holds the bytes of a valid record could pass for one after a torn
    /// tail: only the report overstates, nothing is replayed from it.)
    pub damage: Option<Lsn>,
}

/// How far past a cut recovery looks for a valid record (V2).
pub const PROBE: u64 = 16 << 20;

/// The WAL as recovery leaves it.
pub(super) struct Recovered {
    /// Kept segments, contiguous, never empty (the last is active).
    pub segments: Vec<Segment>,
    /// The LSN of the next record.
    pub next: Lsn,
    pub recovery: Recovery,
}

/// File bytes `[at, at + buf.len())`, read a chunk at a time.
struct Window {
    buf: Vec<u8>,
    at: u64,
}

impl Window {
    /// The `n` bytes at `pos` (the caller checked `pos + n <= end`).
    fn get<F: WalFile>(&mut self, file: &F, pos: u64, n: usize, end: u64) -> io::Result<&[u8]> {
        let covered = pos >= self.at && pos + n as u64 <= self.at + self.buf.len() as u64;
        if !covered {
            let want = (n.max(CHUNK) as u64).min(end - pos) as usize;
            self.buf.resize(want, 0);
            file.read_exact_at(pos, &mut self.buf)?;
            self.at = pos;
        }
        let from = (pos - self.at) as usize;
        Ok(&self.buf[from..from + n])
    }
}

/// How one segment's scan ended.
struct Scanned {
    /// Bytes of whole valid records from the start.
    valid: u64,
    /// The file's length.
    found: u64,
    /// The LSN after the last valid record.
    next: Lsn,
}

fn io_err(op: &'static str, file: &Path, offset: u64) -> impl FnOnce(io::Error) -> WalError {
    let file = file.to_path_buf();
    move |source| WalError::Io {
        op,
        file,
        offset,
        source,
    }
}

/// Scans one segment from its start, visiting each valid record past
/// `after`. Bounded: each round moves `pos` forward by a whole record, and
/// the loop ends before `pos` passes the file's length.
fn scan<F: WalFile, E: From<WalError>>(
    file: &F,
    path: &Path,
    first: Lsn,
    after: Lsn,
    recovery: &mut Recovery,
    visit: &mut impl FnMut(Lsn, &[Op<'_>]) -> Result<(), E>,
) -> Result<Scanned, E> {
    let end = file.len().map_err(io_err("stat", path, 0))?;
    let mut window = Window {
        buf: Vec::new(),
        at: 0,
    };
    let (mut pos, mut lsn) = (0u64, first);
    while end - pos >= HEADER as u64 {
        let read = window
            .get(file, pos, HEADER, end)
            .map_err(io_err("read", path, pos))?;
        let Some(header) = read.try_into().ok().and_then(Header::parse) else {
            break;
        };
        if header.lsn != lsn || header.total() > end - pos {
            break;
        }
        let bytes = window
            .get(file, pos, header.total() as usize, end)
            .map_err(io_err("read", path, pos))?;
        let Some(ops) = record::decode(&header, bytes) else {
            break;
        };
        if lsn > after {
            visit(lsn, &ops)?;
            recovery.replayed += 1;
        }
        recovery.records += 1;
        pos += header.total();
        lsn = lsn.next();
    }
    Ok(Scanned {
        valid: pos,
        found: end,
        next: lsn,
    })
}

/// **V2:** the first valid record in `(cut, end)` (within [`PROBE`]
/// bytes of the cut) whose LSN is past `next` (the cut record's), if any:
/// evidence that the cut is damage rather than a torn tail. Bounded: one
/// read of at most `PROBE` bytes, one header check per byte, and a
/// checksum only for a header whose LSN and length fit.
fn probe<F: WalFile>(file: &F, cut: u64, end: u64, next: Lsn) -> io::Result<Option<Lsn>> {
    let from = cut + 1;
    let to = end.min(cut.saturating_add(PROBE));
    if to <= from || to - from < HEADER as u64 {
        return Ok(None);
    }
    let mut buf = vec![0; (to - from) as usize];
    file.read_exact_at(from, &mut buf)?;
    // No more records can follow than there are headers' worth of bytes.
    let most = next.0.saturating_add(buf.len() as u64 / HEADER as u64);
    for at in 0..=buf.len() - HEADER {
        let Some(head) = buf[at..at + HEADER].try_into().ok().and_then(Header::parse) else {
            continue;
        };
        if head.lsn <= next || head.lsn.0 > most || head.total() > (buf.len() - at) as u64 {
            continue;
        }
        if record::decode(&head, &buf[at..at + head.total() as usize]).is_some() {
            return Ok(Some(head.lsn));
        }
    }
    Ok(None)
}

/// Recovers the WAL in `dir` for a checkpoint covering every LSN up to
/// `after`; see the module docs. Leaves at least one segment (creating
/// one at the next LSN if none is usable), with every repair synced.
///
/// # Errors
/// An I/O error (naming the file and offset), [`WalError::Gap`] if the
/// first segment starts past `after + 1`, or the visitor's error.
pub(super) fn recover<D: WalDir, E: From<WalError>>(
    dir: &mut D,
    after: Lsn,
    mut visit: impl FnMut(Lsn, &[Op<'_>]) -> Result<(), E>,
) -> Result<Recovered, E> {
    let base = dir.path().to_path_buf();
    let names = dir.list().map_err(io_err("list", &base, 0))?;
    let mut firsts: Vec<Lsn> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    firsts.sort_unstable();
    let mut recovery = Recovery::default();
    let mut segments = Vec::new();
    let mut end: Option<Lsn> = None;
    let mut doomed = Vec::new();
    for (i, &first) in firsts.iter().enumerate() {
        let path = base.join(segment_name(first));
        match end {
            None if first > after.next() => {
                return Err(WalError::Gap {
                    file: path,
                    expected: after.next(),
                    found: first,
                }
                .into());
            }
            // The previous segment lost its tail: this one no longer
            // follows on.
            Some(e) if e != first => {
                doomed.extend_from_slice(&firsts[i..]);
                break;
            }
            _ => {}
        }
        let mut file = dir
            .open(&segment_name(first))
            .map_err(io_err("open", &path, 0))?;
        let s = scan(&file, &path, first, after, &mut recovery, &mut visit)?;
        segments.push(Segment {
            first,
            len: s.valid,
        });
        end = Some(s.next);
        if s.valid < s.found {
            recovery.damage = probe(&file, s.valid, s.found, s.next)
                .map_err(io_err("read", &path, s.valid))?
                .or_else(|| firsts.get(i + 1).copied());
            file.truncate(s.valid)
                .map_err(io_err("truncate", &path, s.valid))?;
            file.sync_data().map_err(io_err("sync", &path, s.valid))?;
            recovery.truncated = Some((first, s.found, s.valid));
            doomed.extend_from_slice(&firsts[i + 1..]);
            break;
        }
    }
    let next = end.unwrap_or(Lsn(1)).max(after.next());
    if end.is_some_and(|e| e < after.next()) {
        // The checkpoint covers every record kept: the next record starts
        // a segment of its own, so that LSNs stay contiguous in each file.
        doomed.extend(segments.drain(..).map(|s| s.first));
    }
    let mut dir_changed = !doomed.is_empty();
    for first in doomed {
        let path = base.join(segment_name(first));
        dir.remove(&segment_name(first))
            .map_err(io_err("remove", &path, 0))?;
        recovery.removed.push(first);
    }
    if segments.is_empty() {
        let path = base.join(segment_name(next));
        dir.open(&segment_name(next))
            .map_err(io_err("create", &path, 0))?;
        segments.push(Segment {
            first: next,
            len: 0,
        });
        dir_changed = true;
    }
    if dir_changed {
        dir.sync().map_err(io_err("sync", &base, 0))?;
    }
    Ok(Recovered {
        segments,
        next,
        recovery,
    })
}
