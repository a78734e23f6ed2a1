//! The engine's side of the storage worker's completions: each moves
//! one operation on (a WAL batch to ACCEPTED and its file writes, a file
//! write to the group sync, a sync to COMPLETED, a read into the client's
//! buffer), per E1.

use super::{Pend, State};
use crate::layout::{kind, status};
use crate::resolve::FileKey;
use shared_nothing::io::{IoBuf, IoError, StorageCompletion, StorageOutput};

impl State {
    pub(super) fn disk(&mut self, c: StorageCompletion) {
        let Some(p) = self.pend.remove(&c.token) else {
            return;
        };
        if let Err(e) = &c.result {
            tracing::debug!(error = %e, "storage request failed");
        }
        let result = c
            .result
            .map_err(|e: IoError| -e.errno().unwrap_or(libc::EIO));
        self.finish(p, result, c.buf);
        self.sent();
    }

    /// A storage request's outcome (`Err`: a negative errno or a status).
    pub(super) fn finish(
        &mut self,
        p: Pend,
        result: std::result::Result<StorageOutput, i32>,
        buf: Option<IoBuf>,
    ) {
        match p {
            Pend::Wal {
                lsns,
                files,
                len,
                segment,
                first,
                durable_done,
            } => {
                self.wal_busy = false;
                match &result {
                    Ok(_) => self.wal_written(lsns, len, segment, first, durable_done),
                    Err(e) => self.wal_failed(lsns, files, first, *e),
                }
            }
            Pend::Data { lsn } => self.data_written(lsn, &result),
            Pend::DataSync { key, lsns } => self.data_synced(key, lsns, &result),
            Pend::Read { client, user, at } => {
                match (&result, buf) {
                    (Ok(StorageOutput::Read(n)), Some(buf)) => {
                        let bytes = buf.into_vec();
                        let n = (*n).min(bytes.len());
                        if let Some(cl) = self.clients.get(&client) {
                            cl.region.copy_in(at, &bytes[..n]);
                        }
                        self.post(client, user, kind::COMPLETED, status::OK, n as u64);
                    }
                    (Err(e), _) => self.post(client, user, kind::COMPLETED, *e, 0),
                    _ => self.post(client, user, kind::COMPLETED, -libc::EIO, 0),
                }
                self.finished(client);
            }
            Pend::Sync { client, user } => {
                let s = result.as_ref().map_or_else(|e| *e, |_| status::OK);
                self.post(client, user, kind::COMPLETED, s, 0);
                self.finished(client);
            }
            Pend::Open { key } => {
                let _ = key;
                if let Err(e) = &result {
                    tracing::warn!(status = *e, "storage worker could not open a resolved file");
                }
            }
            Pend::Close => {}
            Pend::Retired { key } => {
                if let (Ok(_), Some(key)) = (&result, key) {
                    self.root.allow(key);
                }
            }
            Pend::SegmentOpen { no } => self.segment_opened(no, result.is_ok()),
            Pend::SegmentDirSync { no } => self.segment_ready(no, result.is_ok()),
        }
    }

    /// A WAL batch is durable: its sends are ACCEPTED and go to their
    /// pools, its writes are ACCEPTED (volatile ones excepted) and queued
    /// for their files (E1).
    fn wal_written(
        &mut self,
        lsns: Vec<u64>,
        len: u64,
        segment: u64,
        first: bool,
        durable_done: Option<u64>,
    ) {
        if let Some(d) = durable_done {
            // Durable wherever it is: a segment goes only once a newer
            // one covers its DONEs (W3).
            self.durable_done = self.durable_done.max(d);
        }
        if self.segs.list.back().is_some_and(|s| s.no == segment) {
            self.wal_len += len;
            if first {
                self.segs.fresh = false;
            }
            if let Some(d) = durable_done {
                self.segs.durable_done = self.segs.durable_done.max(d);
            }
        }
        for lsn in lsns {
            if let Some(op) = self.sends.remove(&lsn) {
                self.post(op.client, op.user, kind::ACCEPTED, status::OK, op.id);
                self.send_owner.insert(lsn, (op.client, op.user));
                if let Some(s) = &mut self.sender {
                    s.enqueue(op.dest, lsn, op.id, op.data);
                }
                continue;
            }
            let Some(w) = self.writes.get(&lsn) else {
                continue;
            };
            let (client, user, key, offset, end) = (
                w.client,
                w.user,
                w.key,
                w.offset,
                w.offset + w.data.len() as u64,
            );
            if !w.volatile {
                self.post(client, user, kind::ACCEPTED, status::OK, offset);
            }
            if let Some(f) = self.files.get_mut(&key) {
                f.queue.push_back((lsn, offset, end));
                self.dirty.push(key);
            }
        }
        if let Some(s) = &mut self.sender {
            s.flush();
        }
    }

    /// A WAL batch failed: everything in it is refused (`WAL_FAILED`).
    fn wal_failed(&mut self, lsns: Vec<u64>, files: Vec<FileKey>, first: bool, e: i32) {
        tracing::error!(status = e, "WAL write failed; its writes are refused");
        // The segment's prefix goes again with the next batch.
        self.segs.prefix_due |= first;
        for key in files {
            if let Some(f) = self.files.get_mut(&key) {
                f.journaled = false;
            }
        }
        for lsn in lsns {
            self.outstanding.remove(&lsn);
            if let Some(op) = self.sends.remove(&lsn) {
                self.post(op.client, op.user, kind::COMPLETED, status::WAL_FAILED, 0);
                self.finished(op.client);
                continue;
            }
            let Some(w) = self.writes.remove(&lsn) else {
                continue;
            };
            self.post(w.client, w.user, kind::COMPLETED, status::WAL_FAILED, 0);
            self.finished(w.client);
            if let Some(f) = self.files.get_mut(&w.key) {
                f.unapplied.remove(&lsn);
            }
            self.dirty.push(w.key);
        }
    }

    /// A file write finished: a volatile one completes; a journaled one
    /// waits for its file's group sync; a failed one completes with its
    /// errno (a journaled one stays outstanding: the next start replays
    /// it; a volatile one has no record).
    fn data_written(&mut self, lsn: u64, result: &std::result::Result<StorageOutput, i32>) {
        let Some(w) = self.writes.get(&lsn) else {
            return;
        };
        let (key, client, user, volatile, offset) = (w.key, w.client, w.user, w.volatile, w.offset);
        if let Some(f) = self.files.get_mut(&key) {
            f.inflight.retain(|x| x.0 != lsn);
            f.unapplied.remove(&lsn);
            match result {
                // In the page cache is all a volatile write waits for.
                Ok(_) if volatile => {
                    self.writes.remove(&lsn);
                    self.outstanding.remove(&lsn);
                    self.post(client, user, kind::COMPLETED, status::OK, offset);
                    self.finished(client);
                }
                Ok(_) => f.unsynced.push(lsn),
                Err(e) => {
                    self.writes.remove(&lsn);
                    if volatile {
                        self.outstanding.remove(&lsn);
                    }
                    self.post(client, user, kind::COMPLETED, *e, 0);
                    self.finished(client);
                }
            }
        }
        self.dirty.push(key);
    }

    /// A file's group sync finished: its writes are COMPLETED (or failed
    /// with its errno, staying outstanding for the next start's replay).
    fn data_synced(
        &mut self,
        key: FileKey,
        lsns: Vec<u64>,
        result: &std::result::Result<StorageOutput, i32>,
    ) {
        if let Some(f) = self.files.get_mut(&key) {
            f.syncing = false;
        }
        for lsn in lsns {
            let Some(w) = self.writes.remove(&lsn) else {
                continue;
            };
            match result {
                Ok(_) => {
                    self.outstanding.remove(&lsn);
                    self.post(w.client, w.user, kind::COMPLETED, status::OK, w.offset);
                }
                Err(e) => self.post(w.client, w.user, kind::COMPLETED, *e, 0),
            }
            self.finished(w.client);
        }
        self.dirty.push(key);
    }
}
