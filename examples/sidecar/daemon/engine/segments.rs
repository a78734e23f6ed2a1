//! The WAL as numbered segments (`wal-NNNNNNNN.log` in the WAL
//! directory, `wal::segment_name`): the engine appends each batch to the
//! newest one; once it passes `--wal-segment-bytes` the next batch starts
//! a new one, and an older one is removed once everything it journaled is
//! completed. So the log's size follows what is outstanding, not the
//! daemon's age.
//!
//! **Invariant (W3):** a segment is removed only when (a) the watermark
//! has passed its highest LSN, so each of its writes is fdatasync'd in its
//! file and each of its sends acknowledged or failed, and (b) the newest
//! segment holds a durable (group-committed) DONE at or past that LSN, so
//! LSNs, which make the operation ids destinations see
//! (`delivery::op_id`), never go back after a restart. The first batch of each segment, and of each start of
//! the daemon, begins with a PATH record for every open file, so a newer
//! segment's writes never name a file only a removed segment named. A new
//! segment's name is made durable (its directory fsynced) before anything
//! is written to it.
//!
//! A durable DONE also lets go of what waits for one: the engine's claims
//! on files it closed (C1, `settle_claims`) and a stopping daemon
//! (`check_quiesced`).

use super::{Pend, State};
use crate::resolve::FileKey;
use crate::wal;
use shared_nothing::io::{Durability, FileId, IoBuf, OpenOptions, StorageOp, StorageOutput};
use std::collections::VecDeque;
use std::path::PathBuf;

/// One segment of the log.
#[derive(Debug)]
pub struct Segment {
    pub no: u64,
    pub id: FileId,
    /// The highest LSN journaled in it (0: none).
    pub max_lsn: u64,
    /// Its identity, refused to clients while it is the WAL's (`None`
    /// when it could not be read).
    pub key: Option<FileKey>,
}

#[derive(Debug)]
pub struct Segments {
    pub dir: PathBuf,
    /// The directory, opened for its fsyncs.
    pub dir_id: Option<FileId>,
    /// Oldest first; the last is the one being appended to.
    pub list: VecDeque<Segment>,
    /// Bytes past which the next batch starts a new segment.
    pub limit: u64,
    /// The newest segment's first batch is not durable yet.
    pub fresh: bool,
    /// A new segment is being created (its open or directory sync is out).
    pub rotating: bool,
    /// The next batch must start with the segment's prefix (W3).
    pub prefix_due: bool,
    /// The highest DONE group-committed in the newest segment.
    pub durable_done: u64,
    /// A segment waits only for a durable DONE: the next batch carries one.
    pub done_sync_due: bool,
}

impl Segments {
    fn path(&self, no: u64) -> PathBuf {
        self.dir.join(wal::segment_name(no))
    }
}

impl State {
    fn watermark(&self) -> u64 {
        self.outstanding
            .first()
            .map_or(self.next_lsn - 1, |l| l - 1)
    }

    /// Writes the batch journaled since the last one (one in flight).
    /// A DONE goes only as far as the last journaled LSN: volatile writes
    /// completing move the watermark but need no record.
    pub(super) fn flush_wal(&mut self) {
        let watermark = self.watermark().min(self.journaled_max);
        if self.wal_busy || self.segs.rotating {
            return;
        }
        if !self.segs.prefix_due
            && self.wal_len >= self.segs.limit
            && (!self.batch.is_empty() || watermark > self.done_journaled)
        {
            self.rotate();
            return;
        }
        let prefix_due = self.segs.prefix_due;
        let done_sync = self.segs.done_sync_due;
        if !prefix_due
            && !done_sync
            && self.batch.is_empty()
            && self.batch_lsns.is_empty()
            && watermark <= self.done_journaled
        {
            return;
        }
        let mut buf = Vec::new();
        if prefix_due {
            // W3: the new segment names every open file, whatever the
            // batch holds.
            for f in self.files.values_mut() {
                wal::encode_path(&mut buf, f.file_no, &f.path);
                f.journaled = true;
            }
        }
        buf.append(&mut self.batch);
        let done = prefix_due || done_sync || watermark > self.done_journaled;
        if done {
            wal::encode_done(&mut buf, watermark);
            self.done_journaled = self.done_journaled.max(watermark);
        }
        let lsns = std::mem::take(&mut self.batch_lsns);
        let files = std::mem::take(&mut self.batch_files);
        // Volatile writes hold a place in the order but no record.
        let journaled_lsns = lsns
            .iter()
            .filter(|l| !self.writes.get(l).is_some_and(|w| w.volatile));
        let journaled_max = journaled_lsns.max().copied();
        let journaled = journaled_max.is_some();
        if let Some(m) = journaled_max {
            self.journaled_max = self.journaled_max.max(m);
        }
        if buf.is_empty() {
            // Only volatile writes: nothing to write or sync, and no WAL
            // write is in flight before them, so they go on at once.
            let p = Pend::Wal {
                lsns,
                files,
                len: 0,
                segment: self.segs.list.back().map_or(0, |s| s.no),
                first: false,
                durable_done: None,
            };
            self.finish(p, Ok(StorageOutput::Written(0)), None);
            return;
        }
        // A batch of only a DONE record needs no sync of its own: losing
        // it only makes replay apply completed writes again (W1), unless
        // it is to let an older segment go (W3).
        let durability = if !journaled && !prefix_due && !done_sync {
            Durability::Buffered
        } else {
            Durability::GroupCommit
        };
        let seg = self.segs.list.back_mut().expect("a segment");
        if let Some(&max) = lsns.iter().max() {
            seg.max_lsn = seg.max_lsn.max(max);
        }
        let (file, no) = (seg.id, seg.no);
        let len = buf.len() as u64;
        let op = StorageOp::WriteAt {
            file,
            offset: self.wal_len,
            buf: IoBuf::Vec(buf),
            durability,
        };
        self.segs.prefix_due = false;
        self.segs.done_sync_due = false;
        let durable_done = (done && durability == Durability::GroupCommit).then_some(watermark);
        let p = Pend::Wal {
            lsns,
            files,
            len,
            segment: no,
            first: prefix_due,
            durable_done,
        };
        match self.submit(p, op) {
            Ok(()) => self.wal_busy = true,
            // Answered as a failed WAL write would be.
            Err((p, s)) => self.finish(p, Err(s), None),
        }
    }

    /// Starts the next segment: its open, then the directory's fsync.
    fn rotate(&mut self) {
        let no = self.segs.list.back().map_or(1, |s| s.no + 1);
        let path = self.segs.path(no);
        let t = self.token(Pend::SegmentOpen { no });
        match self.io.open(t, &path, OpenOptions::read_write_create()) {
            Ok(id) => {
                self.segs.rotating = true;
                self.segs.list.push_back(Segment {
                    no,
                    id,
                    max_lsn: 0,
                    key: None,
                });
                tracing::debug!(segment = no, "new WAL segment");
            }
            Err(e) => {
                self.pend.remove(&t);
                tracing::warn!(error = %e, "WAL segment not created; the current one grows");
                self.segs.limit = self.segs.limit.saturating_mul(2);
            }
        }
    }

    /// The new segment's open finished.
    pub(super) fn segment_opened(&mut self, no: u64, ok: bool) {
        if !ok {
            // Dropped again: the current segment goes on growing.
            if self.segs.list.back().is_some_and(|s| s.no == no) {
                self.segs.list.pop_back();
            }
            self.segs.rotating = false;
            self.segs.limit = self.segs.limit.saturating_mul(2);
            tracing::error!(
                segment = no,
                "WAL segment open failed; the current one grows"
            );
            return;
        }
        let path = self.segs.path(no);
        if let Ok(m) = std::fs::metadata(&path) {
            use std::os::unix::fs::MetadataExt;
            let key = FileKey {
                dev: m.dev(),
                ino: m.ino(),
            };
            self.root.forbid(key);
            if let Some(s) = self.segs.list.iter_mut().find(|s| s.no == no) {
                s.key = Some(key);
            }
        }
        let Some(dir) = self.segs.dir_id else {
            return self.segment_ready(no, false);
        };
        let r = self.submit(
            Pend::SegmentDirSync { no },
            StorageOp::Sync {
                file: dir,
                data_only: false,
            },
        );
        if r.is_err() {
            self.segment_ready(no, false);
        }
    }

    /// The new segment's name is durable (or its directory sync failed,
    /// which is reported: the segment is used anyway, as losing its name
    /// takes a power loss, not a crash).
    pub(super) fn segment_ready(&mut self, no: u64, synced: bool) {
        if !synced {
            tracing::error!(segment = no, "WAL directory fsync failed");
        }
        self.segs.rotating = false;
        self.segs.prefix_due = true;
        self.segs.fresh = true;
        self.segs.durable_done = 0;
        self.wal_len = 0;
    }

    /// Releases the claims C1 allows: files closed here whose last
    /// journaled write a durable DONE covers. One the watermark has passed
    /// but no durable DONE yet has its DONE group-committed by the next
    /// batch.
    pub(super) fn settle_claims(&mut self) {
        let Some(claims) = &self.claims else {
            return;
        };
        if self.releasing.is_empty() {
            return;
        }
        let (durable, watermark, engine) = (self.durable_done, self.watermark(), self.engine);
        let mut due = false;
        self.releasing.retain(|&(key, lsn)| {
            if lsn <= durable {
                claims.release(key, engine);
                false
            } else {
                due |= lsn <= watermark;
                true
            }
        });
        if due && !self.wal_busy {
            self.segs.done_sync_due = true;
        }
    }

    /// A stopping engine answers once nothing accepted is outstanding and
    /// a durable DONE covers everything it journaled, so its WAL holds no
    /// work for the next start.
    pub(super) fn check_quiesced(&mut self) {
        if self.quiesce.is_none() || !self.outstanding.is_empty() || self.wal_busy {
            return;
        }
        let watermark = self.watermark().min(self.journaled_max);
        if self.durable_done < watermark {
            self.segs.done_sync_due = true;
            return;
        }
        if let Some(tx) = self.quiesce.take() {
            let _ = tx.send(self.engine);
        }
    }

    /// Removes the segments W3 allows.
    pub(super) fn retire_segments(&mut self) {
        if self.segs.fresh || self.segs.rotating {
            return;
        }
        let watermark = self.watermark();
        while self.segs.list.len() > 1 && self.segs.list[0].max_lsn <= watermark {
            if self.segs.list[0].max_lsn > self.segs.durable_done {
                // (b): the next batch group-commits a DONE for it.
                self.segs.done_sync_due = true;
                return;
            }
            let s = self.segs.list.pop_front().expect("len > 1");
            let path = self.segs.path(s.no);
            let _ = self.submit(Pend::Close, StorageOp::Close { file: s.id });
            // Once it is gone its inode may come back as a client's file.
            let _ = self.submit(Pend::Retired { key: s.key }, StorageOp::Remove { path });
            tracing::debug!(segment = s.no, "WAL segment retired");
        }
    }
}
