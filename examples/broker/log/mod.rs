//! The commit log: segments of checksummed records, addressed by byte
//! offset, as a state machine the server drives.
//!
//! The offset of a record is its byte position in the whole log (segment
//! base + position in the segment), as in RingLog; with an 8-byte header per
//! record, consecutive offsets differ by `8 + payload length`.
//!
//! Three positions move forward, in this order:
//! `durable_offset() <= committed_offset() <= end_offset()`.
//! [`Log::append`] moves `end` (records may sit in a write buffer);
//! [`Log::sync`] writes, fdatasyncs and moves `committed` and `durable` to
//! `end`: one call is one group commit; [`Log::publish`] writes and moves
//! only `committed` (for `--fsync interval|never`). Consumers read, and
//! producers are acked, only below `committed`.
//!
//! With deferred I/O ([`Log::defer_io`], the server's mode) the log does no
//! writes or syncs itself: appends and rolls queue [`DiskWrite`]s and new
//! segments that [`Log::take_io`] hands to the caller, which performs them
//! (through a storage I/O worker) and moves the positions with
//! [`Log::set_committed`] and [`Log::set_durable`] as they complete.
//!
//! **Invariant:** after any I/O error while writing, the log refuses further
//! writes ([`LogError::Failed`]): after a failed fdatasync the kernel may
//! have dropped the dirty pages, so nothing written since can be acked.

mod read;
mod record;
mod segment;
mod storage;
#[cfg(test)]
mod tests;

pub use read::{Parsed, ReadPlan};
pub use record::RECORD_HEADER;
pub use segment::{index_name, log_name};
pub use storage::{Dir, DirLock, FsDir, FsFile, SegmentFile};

use segment::{Boundary, Segment};
use std::io;
use std::ops::ControlFlow;
use thiserror::Error;

/// Largest `segment_bytes` and `max_record`: see [`Log::open`].
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

/// Log settings (no `Default`: the server passes what the command line says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment when a record would take the active one past
    /// this size (a record larger than this gets a segment of its own).
    pub segment_bytes: u64,
    /// Bytes between sparse index entries: the longest header walk `locate`
    /// does.
    pub index_interval: u32,
    /// Delete the oldest segments while the rest still hold at least this
    /// many bytes; `None` keeps everything. The active segment is never
    /// deleted.
    pub retention_bytes: Option<u64>,
    /// Largest payload `append` accepts.
    pub max_record: u32,
    /// Appends are gathered up to this many bytes before a write.
    pub write_buffer: usize,
}

/// An I/O problem, or a log that failed earlier.
#[derive(Debug, Error)]
pub enum LogError {
    /// An operation on a file failed.
    #[error("{op} {file}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Which file.
        file: String,
        /// The cause.
        source: io::Error,
    },
    /// Settings the format cannot honour.
    #[error("invalid log settings: {0}")]
    Config(&'static str),
    /// A write or sync failed before; the log takes no more writes.
    #[error("log refuses writes after an earlier I/O error: {0}")]
    Failed(String),
}

fn io_err(op: &'static str, file: impl Into<String>) -> impl FnOnce(io::Error) -> LogError {
    let file = file.into();
    move |source| LogError::Io { op, file, source }
}

/// Why a record was not appended.
#[derive(Debug, Error)]
pub enum AppendError {
    /// The payload exceeds `max_record`.
    #[error("record of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Configured maximum.
        max: u32,
    },
    /// The disk failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why a consumer's start offset was refused.
#[derive(Debug, Error)]
pub enum LocateError {
    /// Retention already deleted it.
    #[error("offset {offset} was deleted by retention (log starts at {start})")]
    Deleted {
        /// Asked for.
        offset: u64,
        /// First offset still kept.
        start: u64,
    },
    /// Beyond the last committed record.
    #[error("offset {offset} is past the end of the log ({end})")]
    PastEnd {
        /// Asked for.
        offset: u64,
        /// The committed end.
        end: u64,
    },
    /// Inside a record.
    #[error("offset {offset} is not a record boundary")]
    NotBoundary {
        /// Asked for.
        offset: u64,
    },
    /// Records before it do not parse.
    #[error("segment at {segment} is corrupt before offset {offset}")]
    Corrupt {
        /// Asked for.
        offset: u64,
        /// Base of the damaged segment.
        segment: u64,
    },
    /// The disk failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why a read stopped with an error.
#[derive(Debug, Error)]
pub enum ReadError {
    /// Retention deleted the records under the cursor.
    #[error("offset {offset} was deleted by retention (log starts at {start})")]
    Deleted {
        /// Cursor position.
        offset: u64,
        /// First offset still kept.
        start: u64,
    },
    /// A record failed its checksum: never stream it.
    #[error("record at offset {offset} is corrupt")]
    Corrupt {
        /// Its offset.
        offset: u64,
    },
    /// The disk failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What [`Log::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments whose tail was cut: `(base, length found, length kept)`.
    pub truncated: Vec<(u64, u64, u64)>,
    /// Segments deleted because an earlier segment lost its tail, so they
    /// no longer follow on.
    pub removed: Vec<u64>,
    /// Segments whose index was rebuilt from the log.
    pub index_rebuilt: Vec<u64>,
}

/// A write the log wants done, for a log with deferred I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskWrite {
    /// Base offset of the segment.
    pub base: u64,
    /// The segment's `.idx` file rather than its `.log` file.
    pub index: bool,
    /// Byte position in the file.
    pub pos: u64,
    /// What to write there.
    pub bytes: Vec<u8>,
}

/// A consumer's position: always a record boundary of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    next: u64,
}

impl Cursor {
    /// Offset of the next record this cursor reads.
    pub fn offset(&self) -> u64 {
        self.next
    }
}

/// The commit log over a directory.
#[derive(Debug)]
pub struct Log<D: Dir> {
    dir: D,
    cfg: LogConfig,
    /// Sorted by base and contiguous; never empty; the last is active.
    segments: Vec<Segment<D::File>>,
    /// The active segment's bytes `[len - wbuf.len(), len)`, not yet written.
    wbuf: Vec<u8>,
    committed: u64,
    durable: u64,
    /// A segment file was created or removed since the last directory sync.
    dir_dirty: bool,
    failed: Option<String>,
    /// Writes are queued in `out` and segments created by the caller.
    deferred: bool,
    out: Vec<DiskWrite>,
    /// Bases of segments to create (deferred I/O), oldest first.
    created: Vec<u64>,
}

impl<D: Dir> Log<D> {
    /// Opens (or creates) the log in `dir`, recovering from a crash: each
    /// segment is verified from its last index entry to its end and a torn
    /// or corrupt tail is cut; segments after a cut are removed. Everything
    /// kept is synced, so it is all committed and durable.
    ///
    /// # Errors
    /// [`LogError::Config`] for sizes above 1 GiB, [`LogError::Io`] if the
    /// directory cannot be read or repaired.
    pub fn open(dir: D, cfg: LogConfig) -> Result<(Self, Recovery), LogError> {
        // Index entries are 32-bit segment positions: a segment (at most
        // segment_bytes plus one record) must stay far below 4 GiB.
        if cfg.segment_bytes > MAX_SEGMENT_BYTES || u64::from(cfg.max_record) > MAX_SEGMENT_BYTES {
            return Err(LogError::Config(
                "segment_bytes and max_record must be at most 1 GiB",
            ));
        }
        let names = dir.list().map_err(io_err("list", "data directory"))?;
        let mut logs = Vec::new();
        let mut idxs = Vec::new();
        for name in &names {
            match segment::parse_name(name) {
                Some((base, true)) => logs.push(base),
                Some((base, false)) => idxs.push(base),
                None => {}
            }
        }
        logs.sort_unstable();
        for base in idxs.iter().filter(|b| logs.binary_search(b).is_err()) {
            dir.remove(&index_name(*base))
                .map_err(io_err("remove", index_name(*base)))?;
        }

        let mut recovery = Recovery::default();
        let mut segments: Vec<Segment<D::File>> = Vec::new();
        let mut bases = logs.into_iter();
        for base in bases.by_ref() {
            if let Some(prev) = segments.last() {
                if prev.base + prev.len != base {
                    // The previous segment lost its tail (or a file went
                    // missing): later records no longer follow on.
                    recovery.removed.push(base);
                    break;
                }
            }
            let (mut seg, rec) = Segment::open(&dir, base, cfg.index_interval)
                .map_err(io_err("recover", log_name(base)))?;
            seg.log
                .sync_data()
                .map_err(io_err("sync", log_name(base)))?;
            if rec.index_rebuilt {
                recovery.index_rebuilt.push(base);
            }
            // A zero tail is preallocated space, not a loss: the next
            // segment's base still has to follow on from the valid end.
            let cut = rec.valid_len < rec.found_len && !rec.zero_tail;
            if cut {
                recovery
                    .truncated
                    .push((base, rec.found_len, rec.valid_len));
            }
            segments.push(seg);
            if cut {
                break;
            }
        }
        recovery.removed.extend(bases);
        for &base in &recovery.removed {
            dir.remove(&log_name(base))
                .map_err(io_err("remove", log_name(base)))?;
            dir.remove(&index_name(base))
                .map_err(io_err("remove", index_name(base)))?;
        }
        if segments.is_empty() {
            let seg = Segment::create(&dir, 0, cfg.index_interval)
                .map_err(io_err("create", log_name(0)))?;
            segments.push(seg);
        }
        dir.sync().map_err(io_err("sync", "data directory"))?;

        let mut log = Log {
            dir,
            cfg,
            segments,
            wbuf: Vec::with_capacity(cfg.write_buffer),
            committed: 0,
            durable: 0,
            dir_dirty: false,
            failed: None,
            deferred: false,
            out: Vec::new(),
            created: Vec::new(),
        };
        log.committed = log.end_offset();
        log.durable = log.committed;
        Ok((log, recovery))
    }

    /// Appends one record and returns its offset. It is neither readable nor
    /// to be acked until the next [`sync`](Self::sync) or
    /// [`publish`](Self::publish).
    ///
    /// # Errors
    /// [`AppendError::TooLarge`] (nothing changes), or a disk error (the log
    /// then refuses further writes).
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, AppendError> {
        self.check_ok()?;
        if payload.len() > self.cfg.max_record as usize
            || payload.len() > record::HARD_MAX_PAYLOAD as usize
        {
            return Err(AppendError::TooLarge {
                len: payload.len(),
                max: self.cfg.max_record,
            });
        }
        let size = record::disk_len(payload.len());
        let active = self.active();
        if active.len > 0 && active.len + size > self.cfg.segment_bytes {
            self.roll()?;
        }
        let active = self.active_mut();
        let offset = active.base + active.len;
        active.note_record(active.len);
        active.len += size;
        active.dirty = true;
        record::encode(payload, &mut self.wbuf);
        if self.wbuf.len() >= self.cfg.write_buffer {
            self.flush_writes()?;
        }
        Ok(offset)
    }

    /// Group commit: writes buffered appends, fdatasyncs every segment
    /// written since the last sync (and the directory if a segment was
    /// created or removed), then commits everything appended so far.
    /// Returns the new committed (= durable) offset: every record below it
    /// may be acked.
    ///
    /// # Errors
    /// A disk error; the log then refuses further writes.
    pub fn sync(&mut self) -> Result<u64, LogError> {
        self.check_ok()?;
        self.flush_writes()?;
        let result = self.sync_files();
        self.poison_on_err(result)?;
        self.committed = self.end_offset();
        self.durable = self.committed;
        Ok(self.committed)
    }

    /// Writes buffered appends and commits them without syncing (for
    /// `--fsync interval|never`). Returns the committed offset.
    ///
    /// # Errors
    /// A disk error; the log then refuses further writes.
    pub fn publish(&mut self) -> Result<u64, LogError> {
        self.check_ok()?;
        self.flush_writes()?;
        self.committed = self.end_offset();
        Ok(self.committed)
    }

    /// From now on the log does no writes or syncs itself (it still reads):
    /// see [`take_io`](Self::take_io). Segments are created by whoever does
    /// the writes, and files are opened for reading on their first read.
    pub fn defer_io(&mut self) {
        self.deferred = true;
    }

    /// Deferred I/O: everything appended since the last call, as segments
    /// to create (bases; create each before writing to it) and writes, in
    /// order. Every record below [`end_offset`](Self::end_offset) is in
    /// these or an earlier call's.
    ///
    /// # Errors
    /// The log failed earlier.
    pub fn take_io(&mut self) -> Result<(Vec<u64>, Vec<DiskWrite>), LogError> {
        self.check_ok()?;
        self.flush_writes()?;
        Ok((
            std::mem::take(&mut self.created),
            std::mem::take(&mut self.out),
        ))
    }

    /// Deferred I/O: index entries that may now be written, pointing at
    /// records below the durable offset (see `segment`).
    pub fn take_index_writes(&mut self) -> Vec<DiskWrite> {
        let durable = self.durable;
        let mut writes = Vec::new();
        for seg in &mut self.segments {
            let limit = durable.saturating_sub(seg.base);
            if let Some((pos, bytes)) = seg.take_index(limit) {
                writes.push(DiskWrite {
                    base: seg.base,
                    index: true,
                    pos,
                    bytes,
                });
            }
        }
        writes
    }

    /// Deferred I/O: the writes below `offset` (a record boundary at or
    /// below [`end_offset`](Self::end_offset)) completed: readers and acks
    /// may go up to it.
    pub fn set_committed(&mut self, offset: u64) {
        self.committed = self.committed.max(offset.min(self.end_offset()));
    }

    /// Deferred I/O: everything below `offset` is durable (also committed).
    pub fn set_durable(&mut self, offset: u64) {
        self.set_committed(offset);
        self.durable = self.durable.max(offset.min(self.committed));
    }

    /// Deferred I/O: a write or sync failed; refuse further writes.
    pub fn poison(&mut self, why: String) {
        self.failed.get_or_insert(why);
    }

    /// Offset the next append gets.
    pub fn end_offset(&self) -> u64 {
        let active = self.active();
        active.base + active.len
    }

    /// Records below this may be read and acked.
    pub fn committed_offset(&self) -> u64 {
        self.committed
    }

    /// Records below this were fdatasynced.
    pub fn durable_offset(&self) -> u64 {
        self.durable
    }

    /// First offset still kept (retention moves it).
    pub fn start_offset(&self) -> u64 {
        self.segments[0].base
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.base).collect()
    }

    /// Total bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// A cursor at `offset` for a consumer: a binary search for the segment,
    /// one in its sparse index, then a header walk of at most about one
    /// index interval. `offset` may be the committed end (the consumer then
    /// waits for new records).
    ///
    /// # Errors
    /// [`LocateError`] if `offset` was deleted, is past the committed end,
    /// is not a record boundary, or the segment is corrupt before it.
    pub fn locate(&self, offset: u64) -> Result<Cursor, LocateError> {
        let start = self.start_offset();
        if offset < start {
            return Err(LocateError::Deleted { offset, start });
        }
        if offset > self.committed {
            return Err(LocateError::PastEnd {
                offset,
                end: self.committed,
            });
        }
        let seg = &self.segments[self.segment_of(offset)];
        let rel = offset - seg.base;
        let limit = seg.len.min(self.committed - seg.base);
        let found = seg
            .boundary(rel, limit)
            .map_err(io_err("read", log_name(seg.base)))?;
        match found {
            Boundary::Yes => Ok(Cursor { next: offset }),
            Boundary::No => Err(LocateError::NotBoundary { offset }),
            Boundary::Corrupt => Err(LocateError::Corrupt {
                offset,
                segment: seg.base,
            }),
        }
    }

    /// Reads committed records from `cursor` on, each checked against its
    /// CRC, handing `(offset, payload)` to `visit`, and advances the cursor.
    /// Stops at the committed end or once about `max_bytes` of payload were
    /// visited (always at least one record if any is committed). Returns the
    /// number of records visited; 0 means the consumer is caught up.
    ///
    /// # Errors
    /// [`ReadError::Deleted`] if retention removed the cursor's records,
    /// [`ReadError::Corrupt`] at a record failing its checksum (the cursor
    /// stays before it), or a disk error.
    pub fn read(
        &self,
        cursor: &mut Cursor,
        max_bytes: usize,
        mut visit: impl FnMut(u64, &[u8]),
    ) -> Result<usize, ReadError> {
        let start = self.start_offset();
        if cursor.next < start {
            return Err(ReadError::Deleted {
                offset: cursor.next,
                start,
            });
        }
        let mut count = 0;
        let mut bytes = 0usize;
        while cursor.next < self.committed {
            let seg = &self.segments[self.segment_of(cursor.next)];
            let rel = cursor.next - seg.base;
            let limit = seg.len.min(self.committed - seg.base);
            let (pos, how) = record::walk(&seg.log, rel, limit, true, |pos, payload| {
                let payload = payload.unwrap_or_default();
                if count > 0 && bytes + payload.len() > max_bytes {
                    return ControlFlow::Break(());
                }
                visit(seg.base + pos, payload);
                count += 1;
                bytes += payload.len();
                ControlFlow::Continue(())
            })
            .map_err(io_err("read", log_name(seg.base)))?;
            cursor.next = seg.base + pos;
            match how {
                record::WalkEnd::Clean => {}
                record::WalkEnd::Stopped => break,
                record::WalkEnd::Invalid => {
                    return Err(ReadError::Corrupt {
                        offset: cursor.next,
                    });
                }
            }
        }
        Ok(count)
    }

    /// [`read`](Self::read) straight into consumer wire frames
    /// (`[u32 BE length][payload]`) appended to `out`.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn read_frames(
        &self,
        cursor: &mut Cursor,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, ReadError> {
        self.read(cursor, max_bytes, |_, payload| {
            // Payloads are at most 1 GiB, so the length fits a u32.
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
        })
    }

    /// Deletes the oldest segments while the remaining ones still hold at
    /// least `retention_bytes`; never the active segment. Called after each
    /// roll; returns the deleted bases. Cursors into them then get
    /// [`ReadError::Deleted`]. With deferred I/O the segments leave the log
    /// and the caller removes their files ([`log_name`], [`index_name`]).
    ///
    /// # Errors
    /// A disk error removing a file.
    pub fn enforce_retention(&mut self) -> Result<Vec<u64>, LogError> {
        let Some(keep) = self.cfg.retention_bytes else {
            return Ok(Vec::new());
        };
        let mut total = self.size_bytes();
        let mut deleted = Vec::new();
        // With deferred I/O a segment may still have writes in flight:
        // delete only what is committed.
        while self.segments.len() > 1
            && total - self.segments[0].len >= keep
            && (!self.deferred || self.segments[0].base + self.segments[0].len <= self.committed)
        {
            let seg = self.segments.remove(0);
            total -= seg.len;
            deleted.push(seg.base);
            if self.deferred {
                continue;
            }
            self.dir_dirty = true;
            self.dir
                .remove(&log_name(seg.base))
                .map_err(io_err("remove", log_name(seg.base)))?;
            self.dir
                .remove(&index_name(seg.base))
                .map_err(io_err("remove", index_name(seg.base)))?;
        }
        Ok(deleted)
    }

    /// Syncs everything and writes the indexes: a clean shutdown.
    ///
    /// # Errors
    /// A disk error.
    pub fn close(mut self) -> Result<(), LogError> {
        self.sync().map(|_| ())
    }

    fn active(&self) -> &Segment<D::File> {
        // `segments` is never empty (invariant of `open`, kept by retention).
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment<D::File> {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Index of the segment holding `offset` (`start <= offset <= end`).
    fn segment_of(&self, offset: u64) -> usize {
        let after = self.segments.partition_point(|s| s.base <= offset);
        let i = after.saturating_sub(1);
        // The end of a full segment is the start of the next one.
        if offset == self.segments[i].base + self.segments[i].len && i + 1 < self.segments.len() {
            i + 1
        } else {
            i
        }
    }

    fn check_ok(&self) -> Result<(), LogError> {
        match &self.failed {
            Some(reason) => Err(LogError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    fn poison_on_err<T>(&mut self, result: Result<T, LogError>) -> Result<T, LogError> {
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    fn flush_writes(&mut self) -> Result<(), LogError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let last = self.segments.len() - 1;
        let seg = &mut self.segments[last];
        let pos = seg.len - self.wbuf.len() as u64;
        if self.deferred {
            let bytes =
                std::mem::replace(&mut self.wbuf, Vec::with_capacity(self.cfg.write_buffer));
            self.out.push(DiskWrite {
                base: seg.base,
                index: false,
                pos,
                bytes,
            });
            return Ok(());
        }
        let result = seg
            .log
            .write_all_at(pos, &self.wbuf)
            .map_err(io_err("write", log_name(seg.base)));
        self.wbuf.clear();
        self.poison_on_err(result)
    }

    fn sync_files(&mut self) -> Result<(), LogError> {
        for seg in self.segments.iter_mut().filter(|s| s.dirty) {
            seg.log
                .sync_data()
                .map_err(io_err("sync", log_name(seg.base)))?;
            seg.dirty = false;
        }
        if self.dir_dirty {
            self.dir.sync().map_err(io_err("sync", "data directory"))?;
            self.dir_dirty = false;
        }
        // The data is durable now, so index entries pointing into it may be
        // written (see `segment`).
        for seg in &mut self.segments {
            seg.flush_index()
                .map_err(io_err("write", index_name(seg.base)))?;
        }
        Ok(())
    }

    fn roll(&mut self) -> Result<(), LogError> {
        self.flush_writes()?;
        let base = self.end_offset();
        if self.deferred {
            // The caller creates the files; retention runs after commits.
            let seg = Segment::create_later(&self.dir, base, self.cfg.index_interval);
            self.segments.push(seg);
            self.created.push(base);
            return Ok(());
        }
        let created = Segment::create(&self.dir, base, self.cfg.index_interval)
            .map_err(io_err("create", log_name(base)));
        let seg = self.poison_on_err(created)?;
        self.segments.push(seg);
        self.dir_dirty = true;
        self.enforce_retention()?;
        Ok(())
    }
}
