//! The engine's intake: a decoded request becomes an answer, a journaled
//! write or send in the next WAL batch (E1), or an operation deferred
//! behind the file's earlier writes (F2).

use super::{Pend, SendOp, State, WriteOp};
use crate::daemon::files::{Deferred, File, Later};
use crate::delivery;
use crate::layout::{kind, status};
use crate::proto::Request;
use crate::resolve::FileKey;
use crate::wal;
use shared_nothing::io::OpenOptions;
use std::os::fd::AsRawFd;

impl State {
    pub(super) fn request(&mut self, id: u64, user: u64, r: Request) {
        let handle_key =
            |st: &State, h: u64| st.clients.get(&id).and_then(|c| c.handles.get(&h).copied());
        match r {
            Request::Open { at, len, create } => {
                let path = self.clients[&id].region.copy_out(at, len);
                match self.open(&path, create) {
                    Ok(key) => {
                        let c = self.clients.get_mut(&id).expect("client");
                        let h = c.next_handle;
                        c.next_handle += 1;
                        c.handles.insert(h, key);
                        self.post(id, user, kind::COMPLETED, status::OK, h);
                    }
                    Err(s) => self.post(id, user, kind::COMPLETED, s, 0),
                }
            }
            Request::Write {
                handle,
                offset,
                at,
                len,
                volatile,
            } => match handle_key(self, handle) {
                Some(key) => self.write(id, user, key, Some(offset), (at, len), volatile),
                None => self.post(id, user, kind::COMPLETED, status::BAD_HANDLE, 0),
            },
            Request::Append {
                handle,
                at,
                len,
                volatile,
            } => match handle_key(self, handle) {
                Some(key) => self.write(id, user, key, None, (at, len), volatile),
                None => self.post(id, user, kind::COMPLETED, status::BAD_HANDLE, 0),
            },
            Request::Read {
                handle,
                offset,
                at,
                len,
            } => self.defer(id, user, handle, Later::Read { offset, at, len }),
            Request::Sync { handle, data_only } => {
                self.defer(id, user, handle, Later::Sync { data_only })
            }
            Request::Close { handle } => self.defer(id, user, handle, Later::Close { handle }),
            Request::Dest { at, len } => {
                let name = self.clients[&id].region.copy_out(at, len);
                match self.sender.as_ref().and_then(|s| s.find(&name)) {
                    Some(h) => self.post(id, user, kind::COMPLETED, status::OK, h),
                    None => self.post(id, user, kind::COMPLETED, status::NO_DEST, 0),
                }
            }
            Request::Send {
                dest,
                at,
                len,
                volatile,
            } => self.journal_send(id, user, dest, (at, len), volatile),
        }
    }

    /// Journals a send; ACCEPTED and the hand-over to its destination's
    /// pool follow the WAL write (`complete.rs`). A volatile one has no
    /// record and goes to its pool at once (sent at the end of the
    /// round); it holds its LSN among the outstanding (so a stop waits
    /// for it) but no DONE ever names an LSN past the journaled ones.
    pub(super) fn journal_send(
        &mut self,
        id: u64,
        user: u64,
        dest: u64,
        (at, len): (usize, usize),
        volatile: bool,
    ) {
        if self.sender.as_ref().and_then(|s| s.name(dest)).is_none() {
            self.post(id, user, kind::COMPLETED, status::NO_DEST, 0);
            return;
        }
        if self.lsns_used_up(id, user) {
            return;
        }
        let lsn = self.next_lsn;
        let Some(op_id) = delivery::op_id(self.engine, lsn) else {
            self.post(id, user, kind::COMPLETED, -libc::EOVERFLOW, 0);
            return;
        };
        self.next_lsn += 1;
        let data = self.clients[&id].region.copy_out(at, len);
        if volatile {
            self.outstanding.insert(lsn);
            self.send_owner.insert(lsn, (id, user));
            if let Some(s) = &mut self.sender {
                s.enqueue(dest, lsn, op_id, data);
                self.sends_due = true;
            }
            if let Some(c) = self.clients.get_mut(&id) {
                c.inflight += 1;
            }
            return;
        }
        // Borrowed from the sender beside the batch (checked above).
        let name = self
            .sender
            .as_ref()
            .and_then(|s| s.name(dest))
            .unwrap_or("");
        wal::encode_send(&mut self.batch, lsn, name.as_bytes(), &data);
        self.batch_lsns.push(lsn);
        self.outstanding.insert(lsn);
        self.sends.insert(
            lsn,
            SendOp {
                client: id,
                user,
                id: op_id,
                dest,
                data,
            },
        );
        if let Some(c) = self.clients.get_mut(&id) {
            c.inflight += 1;
        }
    }

    /// Whether the LSNs an operation id can carry are used up
    /// (`delivery::MAX_LSN`: 2^48, decades at a million operations a
    /// second); if so the request is answered `EOVERFLOW`.
    fn lsns_used_up(&mut self, id: u64, user: u64) -> bool {
        if self.next_lsn <= delivery::MAX_LSN {
            return false;
        }
        tracing::error!(
            engine = self.engine,
            "this engine's LSNs are used up (2^48): operations are refused"
        );
        self.post(id, user, kind::COMPLETED, -libc::EOVERFLOW, 0);
        true
    }

    /// Opens (or shares) the file `path` names beneath the root; with more
    /// than one engine, only a file no other engine holds (C1).
    pub(super) fn open(&mut self, path: &[u8], create: bool) -> std::result::Result<FileKey, i32> {
        let (fd, key, len) = self.root.open_beneath(path, create)?;
        if let Some(f) = self.files.get_mut(&key) {
            f.refs += 1;
            return Ok(key);
        }
        // A claim this engine still holds for a closed file goes on with
        // its last LSN.
        let mut last_lsn = 0;
        if let Some(claims) = &self.claims {
            if let Err(owner) = claims.claim(key, self.engine) {
                tracing::info!(
                    engine = self.engine,
                    owner,
                    path = %String::from_utf8_lossy(path),
                    "open refused: the file is open on another engine"
                );
                return Err(status::FILE_BUSY);
            }
            if let Some(i) = self.releasing.iter().position(|r| r.0 == key) {
                last_lsn = self.releasing.swap_remove(i).1;
            }
        }
        // The storage worker opens the very file openat2 resolved, through
        // its descriptor's magic link: no second path walk.
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let t = self.token(Pend::Open { key });
        let opts = OpenOptions::new().read(true).write(true);
        let id = match self.io.open(t, &proc_path, opts) {
            Ok(id) => id,
            Err(_) => {
                self.pend.remove(&t);
                if self.claims.is_some() {
                    self.releasing.push((key, last_lsn));
                }
                return Err(-libc::EAGAIN);
            }
        };
        self.next_file += 1;
        let mut f = File::new(id, self.next_file, path.to_vec(), len, fd);
        f.refs = 1;
        f.last_lsn = last_lsn;
        self.files.insert(key, f);
        Ok(key)
    }

    pub(super) fn write(
        &mut self,
        id: u64,
        user: u64,
        key: FileKey,
        offset: Option<u64>,
        (at, len): (usize, usize),
        volatile: bool,
    ) {
        if self.lsns_used_up(id, user) {
            return;
        }
        let f = self.files.get_mut(&key).expect("handle names an open file");
        let offset = offset.unwrap_or(f.end);
        let Some(end) = offset
            .checked_add(len as u64)
            .filter(|&e| e <= i64::MAX as u64)
        else {
            self.post(id, user, kind::COMPLETED, status::BAD_RANGE, 0);
            return;
        };
        f.end = f.end.max(end);
        let data = self.clients[&id].region.copy_out(at, len);
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        // A volatile write takes its place in the batch's LSN order (so it
        // reaches the file after the journaled writes before it, F1) but
        // no record.
        if !volatile {
            if !f.journaled {
                wal::encode_path(&mut self.batch, f.file_no, &f.path);
                f.journaled = true;
                self.batch_files.push(key);
            }
            wal::encode_write(&mut self.batch, lsn, f.file_no, offset, &data);
            f.last_lsn = lsn;
        }
        f.unapplied.insert(lsn);
        self.batch_lsns.push(lsn);
        self.outstanding.insert(lsn);
        self.writes.insert(
            lsn,
            WriteOp {
                client: id,
                user,
                key,
                offset,
                data,
                volatile,
            },
        );
        if let Some(c) = self.clients.get_mut(&id) {
            c.inflight += 1;
        }
    }

    pub(super) fn defer(&mut self, id: u64, user: u64, handle: u64, what: Later) {
        let Some(key) = self
            .clients
            .get(&id)
            .and_then(|c| c.handles.get(&handle).copied())
        else {
            self.post(id, user, kind::COMPLETED, status::BAD_HANDLE, 0);
            return;
        };
        let after = self.next_lsn - 1;
        if let Some(c) = self.clients.get_mut(&id) {
            c.inflight += 1;
        }
        let f = self.files.get_mut(&key).expect("handle names an open file");
        f.deferred.push_back(Deferred {
            after,
            client: id,
            user,
            what,
        });
        self.dirty.push(key);
    }
}
