//! A shard's write-ahead log: checksummed records, one per atomic batch,
//! in segment files named by their first LSN, with group commit and a
//! deferred-I/O interface.
//!
//! Modules: `record` (the record format, R1-R3), `file` (the disk as two
//! traits, the fault seam, and their `std::fs` implementation), `recover`
//! (the scan and the torn-tail cut, V1), `error`, and for tests `fault` (a
//! directory whose Nth write or sync fails).
//!
//! **Group commit.** [`Wal::encode`] then [`Wal::push`] (the shard applies
//! the batch in between) only queue a record in memory and return its LSN;
//! the caller's sync cadence bounds what waits there. The queued records leave as one [`WalIo`]: a list of
//! `(segment, offset, bytes)` writes, the segment files to create first,
//! and the last LSN they carry. Whoever performs it writes, fdatasyncs each
//! segment written (and the directory if a file was created), then reports
//! with [`Wal::complete`]; every record up to that LSN is then durable and
//! may be acknowledged. [`Wal::sync`] does all of that here with the
//! [`WalDir`]'s files; the io_uring storage path can take [`Wal::take_io`]
//! instead and perform the same writes itself.
//!
//! **Invariants.**
//! W1: `segments` is never empty, sorted by first LSN and contiguous: a
//! segment's records run from its `first` to the next segment's `first`
//! less one; the last segment is the active one.
//! W2: `durable < next`: every record up to `durable` is synced, none
//! after it is known to be.
//! W3: at most one [`WalIo`] is out at a time; a failed one comes back
//! whole ([`Wal::complete`] with an error) and is performed again, writes
//! and creations included, before anything newer: after a failed
//! fdatasync the kernel may have dropped the dirty pages, so a retried
//! sync alone would prove nothing. Until a retry succeeds, appends are
//! refused ([`WalError::Failed`]), which bounds what waits in memory.

mod error;
#[cfg(test)]
pub mod fault;
mod file;
mod record;
mod recover;
#[cfg(test)]
mod tests;

pub use error::WalError;
pub use file::{FsWalDir, WalDir, WalFile, segment_name};
pub use record::{Lsn, MAX_BODY, Op, Record};
pub use recover::Recovery;

use record::EncodeError;

/// Records of at least this many bytes are queued as writes of their own
/// (moved, not copied into the gather buffer).
const OWN_WRITE: usize = 64 << 10;

/// WAL settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// Roll to a new segment when a record would take the active one past
    /// this many bytes (a larger record gets a segment of its own).
    pub segment_bytes: u64,
}

/// One segment file, as the WAL tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// The LSN of its first record (its name).
    first: Lsn,
    /// Bytes of records appended to it, queued ones included.
    len: u64,
}

/// A write the WAL wants done.
#[derive(Debug, PartialEq, Eq)]
pub struct WalWrite {
    /// The segment file, by first LSN ([`segment_name`]).
    pub segment: Lsn,
    /// Byte offset in it.
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// One group commit's I/O: create the files in `create` (then sync the
/// directory), make every write, fdatasync every segment written, then
/// report to [`Wal::complete`].
#[derive(Debug, PartialEq, Eq)]
pub struct WalIo {
    /// Segment files to create before they are written, by first LSN.
    pub create: Vec<Lsn>,
    /// In order; several may go to one file.
    pub writes: Vec<WalWrite>,
    /// Every record up to this LSN is durable once this is done.
    pub through: Lsn,
}

/// A shard's write-ahead log over a directory.
#[derive(Debug)]
pub struct Wal<D: WalDir> {
    dir: D,
    cfg: WalConfig,
    /// W1.
    segments: Vec<Segment>,
    /// The LSN the next record gets.
    next: Lsn,
    /// W2.
    durable: Lsn,
    /// Bytes of the active segment from offset `buf_at`, not yet queued.
    buf: Vec<u8>,
    buf_at: u64,
    /// Writes waiting for the next [`WalIo`], oldest first.
    queued: Vec<WalWrite>,
    /// Segment files to create with the next [`WalIo`].
    create: Vec<Lsn>,
    /// W3: the `through` of the [`WalIo`] out now.
    in_flight: Option<Lsn>,
    /// W3: why the last [`WalIo`] failed, until one succeeds.
    failed: Option<String>,
    /// Segment files opened by [`Wal::sync`].
    files: Vec<(Lsn, D::File)>,
}

impl<D: WalDir> Wal<D> {
    /// Opens the WAL in `dir` for a checkpoint that covers every LSN up to
    /// `after`, recovering it (`recover`: verify, cut the torn tail) and
    /// handing each batch past `after` to `visit`, in LSN order. The next
    /// LSN is past both the last record kept and `after`.
    ///
    /// # Errors
    /// I/O errors naming the file and offset, [`WalError::Gap`], or the
    /// visitor's error.
    pub fn open<E: From<WalError>>(
        mut dir: D,
        cfg: WalConfig,
        after: Lsn,
        visit: impl FnMut(Lsn, &[Op<'_>]) -> Result<(), E>,
    ) -> Result<(Self, Recovery), E> {
        let r = recover::recover(&mut dir, after, visit)?;
        let wal = Wal {
            dir,
            cfg,
            segments: r.segments,
            next: r.next,
            durable: Lsn(r.next.0 - 1),
            buf: Vec::new(),
            buf_at: 0,
            queued: Vec::new(),
            create: Vec::new(),
            in_flight: None,
            failed: None,
            files: Vec::new(),
        };
        Ok((wal, r.recovery))
    }

    /// The last LSN appended (0 if none ever was).
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.next.0 - 1)
    }

    /// Every record up to this LSN is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable
    }

    /// The first LSNs of the segment files, oldest first.
    pub fn segment_firsts(&self) -> Vec<Lsn> {
        self.segments.iter().map(|s| s.first).collect()
    }

    /// Encodes `ops` as the next record, without queueing it: the caller
    /// applies the batch, then queues the record with [`Wal::push`].
    ///
    /// # Errors
    /// [`WalError::Failed`] after an unretried I/O failure; the batch is
    /// empty or too large.
    pub fn encode(&self, ops: &[Op<'_>]) -> Result<Record, WalError> {
        if let Some(reason) = &self.failed {
            return Err(WalError::Failed {
                reason: reason.clone(),
            });
        }
        record::encode(self.next, ops).map_err(|e| match e {
            EncodeError::Empty => WalError::Batch("no operations"),
            EncodeError::KeyTooLong { .. } => WalError::Batch("key over 64 KiB"),
            EncodeError::TooLarge { len } => WalError::TooLarge { len, max: MAX_BODY },
        })
    }

    /// Queues `rec` (from [`Wal::encode`], nothing queued in between) and
    /// returns its LSN; durable after the next group commit.
    ///
    /// # Errors
    /// [`WalError::Batch`] if `rec` is not the next record.
    pub fn push(&mut self, rec: Record) -> Result<Lsn, WalError> {
        if rec.lsn != self.next {
            return Err(WalError::Batch("record encoded for another LSN"));
        }
        let size = rec.bytes.len() as u64;
        let active = self.active();
        if active.len > 0 && active.len + size > self.cfg.segment_bytes {
            self.flush_buf();
            self.segments.push(Segment {
                first: rec.lsn,
                len: 0,
            });
            self.create.push(rec.lsn);
        }
        let active = self.active();
        let (segment, offset) = (active.first, active.len);
        if rec.bytes.len() >= OWN_WRITE {
            self.flush_buf();
            self.queued.push(WalWrite {
                segment,
                offset,
                bytes: rec.bytes,
            });
        } else {
            if self.buf.is_empty() {
                self.buf_at = offset;
            }
            self.buf.extend_from_slice(&rec.bytes);
        }
        let last = self.segments.len() - 1;
        self.segments[last].len += size;
        self.next = rec.lsn.next();
        Ok(rec.lsn)
    }

    /// [`Wal::encode`] and [`Wal::push`] in one (for tests: the shard
    /// applies a batch between the two).
    ///
    /// # Errors
    /// As [`Wal::encode`].
    #[cfg(test)]
    pub fn append(&mut self, ops: &[Op<'_>]) -> Result<Lsn, WalError> {
        let rec = self.encode(ops)?;
        self.push(rec)
    }

    /// Deferred I/O: everything queued since the last call, as one group
    /// commit to perform; `None` if nothing is queued or one is out (W3).
    pub fn take_io(&mut self) -> Option<WalIo> {
        if self.in_flight.is_some() {
            return None;
        }
        self.flush_buf();
        if self.queued.is_empty() && self.create.is_empty() {
            return None;
        }
        let through = self.last_lsn();
        self.in_flight = Some(through);
        Some(WalIo {
            create: std::mem::take(&mut self.create),
            writes: std::mem::take(&mut self.queued),
            through,
        })
    }

    /// Deferred I/O: `io` (the last [`Wal::take_io`]) was performed, with
    /// `result`. On success returns the durable LSN; on failure `io` is
    /// kept to be performed again first (W3) and the error returned.
    ///
    /// # Errors
    /// `result`'s error.
    pub fn complete(&mut self, io: WalIo, result: Result<(), WalError>) -> Result<Lsn, WalError> {
        self.in_flight = None;
        match result {
            Ok(()) => {
                self.durable = self.durable.max(io.through);
                self.failed = None;
                Ok(self.durable)
            }
            Err(e) => {
                self.failed = Some(e.to_string());
                let mut create = io.create;
                create.append(&mut self.create);
                self.create = create;
                let mut writes = io.writes;
                writes.append(&mut self.queued);
                self.queued = writes;
                Err(e)
            }
        }
    }

    /// Group commit through the [`WalDir`]: writes everything queued,
    /// fdatasyncs once per segment written, and returns the durable LSN
    /// (every record up to it may be acknowledged). Retries a failed one.
    ///
    /// # Errors
    /// A write or sync failed (named, with the offset); nothing queued is
    /// lost, and the next call tries again.
    pub fn sync(&mut self) -> Result<Lsn, WalError> {
        match self.take_io() {
            None => Ok(self.durable),
            Some(io) => {
                let result = self.perform(&io);
                self.complete(io, result)
            }
        }
    }

    /// Removes the segments whose records are all below `lsn` (a
    /// checkpoint covers them) and durable; never the active one. Returns
    /// the first LSNs of the removed segments.
    ///
    /// # Errors
    /// Removing a file or syncing the directory failed; the segments
    /// not yet removed stay (a later call removes them).
    pub fn truncate_before(&mut self, lsn: Lsn) -> Result<Vec<Lsn>, WalError> {
        let limit = lsn.min(self.durable.next());
        let mut removed = Vec::new();
        while self.segments.len() > 1 && self.segments[1].first <= limit {
            let first = self.segments[0].first;
            let name = segment_name(first);
            self.files.retain(|(f, _)| *f != first);
            self.dir.remove(&name).map_err(|source| WalError::Io {
                op: "remove",
                file: self.dir.path().join(&name),
                offset: 0,
                source,
            })?;
            self.segments.remove(0);
            removed.push(first);
        }
        if !removed.is_empty() {
            self.dir.sync().map_err(|source| WalError::Sync {
                file: self.dir.path().to_path_buf(),
                offset: 0,
                source,
            })?;
        }
        Ok(removed)
    }

    fn active(&self) -> Segment {
        // W1: never empty.
        self.segments[self.segments.len() - 1]
    }

    fn flush_buf(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let segment = self.active().first;
        self.queued.push(WalWrite {
            segment,
            offset: self.buf_at,
            bytes: std::mem::take(&mut self.buf),
        });
    }

    /// The open file of `segment`, opening it on first use.
    fn file(&mut self, segment: Lsn) -> Result<&mut D::File, WalError> {
        let at = match self.files.iter().position(|(f, _)| *f == segment) {
            Some(at) => at,
            None => {
                let name = segment_name(segment);
                let file = self.dir.open(&name).map_err(|source| WalError::Io {
                    op: "open",
                    file: self.dir.path().join(&name),
                    offset: 0,
                    source,
                })?;
                self.files.push((segment, file));
                self.files.len() - 1
            }
        };
        Ok(&mut self.files[at].1)
    }

    /// Performs `io` with the [`WalDir`]'s files.
    fn perform(&mut self, io: &WalIo) -> Result<(), WalError> {
        for &first in &io.create {
            self.file(first)?;
        }
        let mut ends: Vec<(Lsn, u64)> = Vec::new();
        for w in &io.writes {
            let path = self.dir.path().join(segment_name(w.segment));
            self.file(w.segment)?
                .write_all_at(w.offset, &w.bytes)
                .map_err(|source| WalError::Write {
                    file: path,
                    offset: w.offset,
                    source,
                })?;
            let end = w.offset + w.bytes.len() as u64;
            match ends.iter_mut().find(|(s, _)| *s == w.segment) {
                Some((_, e)) => *e = end.max(*e),
                None => ends.push((w.segment, end)),
            }
        }
        for (segment, end) in ends {
            let path = self.dir.path().join(segment_name(segment));
            self.file(segment)?
                .sync_data()
                .map_err(|source| WalError::Sync {
                    file: path,
                    offset: end,
                    source,
                })?;
        }
        if !io.create.is_empty() {
            self.dir.sync().map_err(|source| WalError::Sync {
                file: self.dir.path().to_path_buf(),
                offset: 0,
                source,
            })?;
        }
        Ok(())
    }
}
