//! The engine's side of each open file: ready writes (F1) and group syncs
//! to the storage worker, deferred reads, syncs and closes once their
//! writes are in (F2), and the cached fast paths done on this thread
//! (reads straight into the client's buffer, M3; volatile writes the page
//! cache takes at once).

use super::{Pend, State};
use crate::daemon::files::{File, Later};
use crate::layout::{kind, status};
use crate::resolve::FileKey;
use shared_nothing::io::{Durability, IoBuf, StorageOp, StorageOutput};

impl State {
    /// A read the page cache holds whole, done here and now: straight
    /// into the client's buffer (M3), no storage round trip. `None` sends
    /// it to the storage worker: not cached, cached in part, or short for
    /// a reason other than the end of the file.
    pub(super) fn read_cached(
        &self,
        key: FileKey,
        client: u64,
        at: usize,
        len: usize,
        offset: u64,
    ) -> Option<usize> {
        use std::os::fd::AsFd;
        let f = self.files.get(&key)?;
        let c = self.clients.get(&client)?;
        let n = c.region.read_cached(f.fd.as_fd(), at, len, offset).ok()?;
        (n == len || offset.saturating_add(n as u64) >= f.end).then_some(n)
    }

    pub(super) fn run_deferred(&mut self, key: FileKey) {
        let Some(f) = self.files.get_mut(&key) else {
            return;
        };
        let id = f.id;
        for d in f.take_runnable() {
            if !self.clients.contains_key(&d.client) {
                continue;
            }
            let (client, user) = (d.client, d.user);
            let r = match d.what {
                Later::Read { offset, at, len } => {
                    match self.read_cached(key, client, at, len, offset) {
                        Some(n) => {
                            self.post(client, user, kind::COMPLETED, status::OK, n as u64);
                            self.finished(client);
                            Ok(())
                        }
                        None => self.submit(
                            Pend::Read { client, user, at },
                            StorageOp::ReadAt {
                                file: id,
                                offset,
                                len,
                                buf: IoBuf::Vec(Vec::with_capacity(len)),
                            },
                        ),
                    }
                }
                Later::Sync { data_only } => self.submit(
                    Pend::Sync { client, user },
                    StorageOp::Sync {
                        file: id,
                        data_only,
                    },
                ),
                Later::Close { handle } => {
                    if let Some(k) = self
                        .clients
                        .get_mut(&client)
                        .and_then(|c| c.handles.remove(&handle))
                    {
                        self.release(k);
                    }
                    self.post(client, user, kind::COMPLETED, status::OK, 0);
                    self.finished(client);
                    Ok(())
                }
            };
            if let Err((_, s)) = r {
                self.post(client, user, kind::COMPLETED, s, 0);
                self.finished(client);
            }
        }
        self.maybe_close(key);
    }

    /// One handle of the file is gone.
    pub(super) fn release(&mut self, key: FileKey) {
        if let Some(f) = self.files.get_mut(&key) {
            f.refs = f.refs.saturating_sub(1);
        }
        self.maybe_close(key);
    }

    pub(super) fn maybe_close(&mut self, key: FileKey) {
        if !self.files.get(&key).is_some_and(File::idle) {
            return;
        }
        let f = self.files.remove(&key).expect("checked");
        let _ = self.submit(Pend::Close, StorageOp::Close { file: f.id });
        if self.claims.is_some() {
            // Its claim goes once a durable DONE covers it (C1).
            self.releasing.push((key, f.last_lsn));
        }
    }

    /// Writes a ready volatile write into the page cache on this thread
    /// if that needs no wait (`pwritev2(RWF_NOWAIT)`); `Some` only when
    /// all of it went.
    pub(super) fn write_cached(&mut self, key: FileKey, lsn: u64) -> Option<usize> {
        use std::os::fd::AsRawFd;
        if !self.nowait_writes {
            return None;
        }
        let f = self.files.get(&key)?;
        let w = self.writes.get(&lsn)?;
        let iov = libc::iovec {
            iov_base: w.data.as_ptr() as *mut libc::c_void,
            iov_len: w.data.len(),
        };
        // SAFETY: the iovec names `w.data`'s initialised bytes, which live
        // (borrowed from `self`) for the call; the kernel only reads them.
        let n = unsafe {
            libc::pwritev2(
                f.fd.as_raw_fd(),
                &iov,
                1,
                i64::try_from(w.offset).ok()?,
                libc::RWF_NOWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            if e == Some(libc::EOPNOTSUPP) || e == Some(libc::EINVAL) {
                // This kernel or file system cannot; stop asking.
                tracing::info!(
                    "buffered RWF_NOWAIT writes unsupported here: volatile writes go to the storage worker"
                );
                self.nowait_writes = false;
            }
            return None;
        }
        (n as usize == w.data.len()).then_some(n as usize)
    }

    /// Starts a file's ready writes (F1) and its group sync.
    pub(super) fn pump(&mut self, key: FileKey) {
        let Some(f) = self.files.get_mut(&key) else {
            return;
        };
        let id = f.id;
        let ready = f.take_ready();
        let sync = if !f.syncing && !f.unsynced.is_empty() && f.inflight.is_empty() {
            f.syncing = true;
            Some(std::mem::take(&mut f.unsynced))
        } else {
            None
        };
        for lsn in ready {
            let Some(w) = self.writes.get(&lsn) else {
                continue;
            };
            // A volatile write the page cache takes without waiting is
            // done here; anything else goes to the storage worker.
            if w.volatile
                && let Some(n) = self.write_cached(key, lsn)
            {
                self.finish(Pend::Data { lsn }, Ok(StorageOutput::Written(n)), None);
                continue;
            }
            let Some(w) = self.writes.get_mut(&lsn) else {
                continue;
            };
            // The bytes go with the request: nothing reads them after this.
            let op = StorageOp::WriteAt {
                file: id,
                offset: w.offset,
                buf: IoBuf::Vec(std::mem::take(&mut w.data)),
                durability: Durability::Buffered,
            };
            if let Err((p, s)) = self.submit(Pend::Data { lsn }, op) {
                self.finish(p, Err(s), None);
            }
        }
        if let Some(lsns) = sync {
            let op = StorageOp::Sync {
                file: id,
                data_only: true,
            };
            if let Err((p, s)) = self.submit(Pend::DataSync { key, lsns }, op) {
                self.finish(p, Err(s), None);
            }
        }
    }
}
