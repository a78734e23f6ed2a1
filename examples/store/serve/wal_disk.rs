//! `--wal-io storage`: a shard's group commits performed by a storage I/O
//! worker instead of on the shard's thread.
//!
//! The WAL hands out one [`WalIo`] at a time (`Wal::take_io`, W3); here
//! each of its segment files is opened once on the storage worker (created
//! if the `WalIo` says so) and every write is submitted with
//! [`Durability::GroupCommit`], so it completes only once an fdatasync
//! issued after it has finished. When a `WalIo` created segments, the
//! directory is fsynced after its writes complete (so the new names are
//! durable before any record in them counts as such). The `WalIo` comes
//! back from [`WalDisk::on_completion`] with its outcome once its last
//! operation has completed, for `Wal::complete`; a failure is the first
//! error, naming the file and offset, and the WAL performs the whole
//! `WalIo` again later (W3).
//!
//! **A1:** `flight` holds the one `WalIo` out, and `ops` every operation
//! of it not yet completed; the `WalIo` is handed back exactly when `ops`
//! is empty (and its directory sync, if any, has run), never before.

use crate::wal::{Lsn, WalError, WalIo, segment_name};
use shared_nothing::io::{
    Durability, FileId, IoError, OpenOptions, StorageClient, StorageCompletion, StorageOp,
    SubmitError,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What one submitted operation was, for its completion.
#[derive(Clone, Copy, Debug)]
enum OpKind {
    /// A segment file's open (or creation).
    Open {
        segment: Lsn,
    },
    /// A record write at `offset` of `segment`.
    Write {
        segment: Lsn,
        offset: u64,
    },
    /// The directory's open and its fsync.
    DirOpen,
    DirSync,
    /// A removed segment's close (no flight waits for it).
    Close,
}

/// The `WalIo` out now.
#[derive(Debug)]
struct Flight {
    io: WalIo,
    /// The first failure.
    error: Option<WalError>,
    /// Whether the directory sync still has to be submitted.
    dir_sync_due: bool,
}

/// Performs a shard's `WalIo`s on a storage worker.
#[derive(Debug)]
pub struct WalDisk {
    client: StorageClient,
    /// The WAL directory.
    dir: PathBuf,
    dir_id: Option<FileId>,
    /// Open segment files.
    files: HashMap<Lsn, FileId>,
    /// A1.
    flight: Option<Flight>,
    ops: HashMap<u64, OpKind>,
    next_token: u64,
}

/// A storage worker's error as the `io::Error` the WAL's errors carry
/// (the errno where there is one, so ENOSPC reads as ENOSPC).
fn io_error(e: &IoError) -> std::io::Error {
    match e.errno() {
        Some(errno) => std::io::Error::from_raw_os_error(errno),
        None => std::io::Error::other(e.to_string()),
    }
}

impl WalDisk {
    /// Group commits for the WAL in `dir` through `client`.
    pub fn new(client: StorageClient, dir: &Path) -> Self {
        WalDisk {
            client,
            dir: dir.to_path_buf(),
            dir_id: None,
            files: HashMap::new(),
            flight: None,
            ops: HashMap::new(),
            next_token: 1,
        }
    }

    /// Whether a `WalIo` is out.
    pub fn in_flight(&self) -> bool {
        self.flight.is_some()
    }

    /// Pushes what waits in the client's queue into the ring.
    pub fn flush(&mut self) {
        self.client.flush_queued();
    }

    fn token(&mut self, kind: OpKind) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.ops.insert(token, kind);
        token
    }

    fn path(&self, segment: Lsn) -> PathBuf {
        self.dir.join(segment_name(segment))
    }

    /// Records a submit that did not go through (the op never runs).
    fn refused(&mut self, token: u64, e: SubmitError<StorageOp>, file: PathBuf) {
        self.ops.remove(&token);
        let why = match e {
            SubmitError::Full(_) => "the storage worker's queue is full",
            SubmitError::Stopped(_) => "the storage worker stopped",
        };
        self.fail(WalError::Io {
            op: "submit",
            file,
            offset: 0,
            source: std::io::Error::other(why),
        });
    }

    fn fail(&mut self, e: WalError) {
        if let Some(f) = &mut self.flight
            && f.error.is_none()
        {
            f.error = Some(e);
        }
    }

    /// The id of `segment`'s file, opening it on first use.
    fn file(&mut self, segment: Lsn) -> Option<FileId> {
        if let Some(&id) = self.files.get(&segment) {
            return Some(id);
        }
        let token = self.token(OpKind::Open { segment });
        let path = self.path(segment);
        match self
            .client
            .open(token, &path, OpenOptions::read_write_create())
        {
            Ok(id) => {
                self.files.insert(segment, id);
                Some(id)
            }
            Err(e) => {
                self.refused(token, e, path);
                None
            }
        }
    }

    /// Starts performing `io` (none may be out: A1). Returns it at once,
    /// with its outcome, if nothing could be submitted.
    pub fn start(&mut self, io: WalIo) -> Option<(WalIo, Result<(), WalError>)> {
        if self.flight.is_some() {
            let e = WalError::Batch("a WAL write is already in flight");
            return Some((io, Err(e)));
        }
        let dir_sync_due = !io.create.is_empty();
        let creates = io.create.clone();
        // Copies: the WAL keeps the `WalIo` whole to perform it again if
        // this fails (W3).
        let writes: Vec<(Lsn, u64, Vec<u8>)> = io
            .writes
            .iter()
            .map(|w| (w.segment, w.offset, w.bytes.clone()))
            .collect();
        self.flight = Some(Flight {
            io,
            error: None,
            dir_sync_due,
        });
        for segment in creates {
            self.file(segment);
        }
        for (segment, offset, bytes) in writes {
            let Some(id) = self.file(segment) else {
                break;
            };
            let token = self.token(OpKind::Write { segment, offset });
            if let Err(e) = self
                .client
                .write_at(token, id, offset, bytes, Durability::GroupCommit)
            {
                let path = self.path(segment);
                self.refused(token, e, path);
                break;
            }
        }
        self.finish_if_done()
    }

    /// A completion from the storage worker: the `WalIo` and its outcome
    /// once its last operation is done (A1), else `None`.
    pub fn on_completion(&mut self, c: StorageCompletion) -> Option<(WalIo, Result<(), WalError>)> {
        let kind = self.ops.remove(&c.token)?;
        if let Err(e) = &c.result {
            let source = io_error(e);
            match kind {
                OpKind::Open { segment } => {
                    self.files.remove(&segment);
                    let file = self.path(segment);
                    self.fail(WalError::Io {
                        op: "open",
                        file,
                        offset: 0,
                        source,
                    });
                }
                OpKind::Write { segment, offset } => {
                    let file = self.path(segment);
                    self.fail(WalError::Write {
                        file,
                        offset,
                        source,
                    });
                }
                OpKind::DirOpen => {
                    self.dir_id = None;
                    let file = self.dir.clone();
                    self.fail(WalError::Io {
                        op: "open",
                        file,
                        offset: 0,
                        source,
                    });
                }
                OpKind::DirSync => {
                    let file = self.dir.clone();
                    self.fail(WalError::Sync {
                        file,
                        offset: 0,
                        source,
                    });
                }
                OpKind::Close => {
                    tracing::warn!(target: "store", "{}: WAL close: {e}", self.dir.display());
                }
            }
        }
        self.finish_if_done()
    }

    /// Hands the flight back if nothing of it is outstanding; first
    /// submits the directory sync when its writes are done and it created
    /// segments.
    fn finish_if_done(&mut self) -> Option<(WalIo, Result<(), WalError>)> {
        let outstanding = self.ops.values().any(|k| !matches!(k, OpKind::Close));
        if outstanding {
            return None;
        }
        let flight = self.flight.as_mut()?;
        if flight.dir_sync_due && flight.error.is_none() {
            flight.dir_sync_due = false;
            if self.submit_dir_sync() {
                return None;
            }
        }
        let flight = self.flight.take()?;
        Some((flight.io, flight.error.map_or(Ok(()), Err)))
    }

    /// Submits the directory's fsync (opening it first if needed); false
    /// if nothing could be submitted (the failure is recorded).
    fn submit_dir_sync(&mut self) -> bool {
        let id = match self.dir_id {
            Some(id) => id,
            None => {
                let token = self.token(OpKind::DirOpen);
                let dir = self.dir.clone();
                match self.client.open(token, &dir, OpenOptions::new()) {
                    Ok(id) => {
                        self.dir_id = Some(id);
                        id
                    }
                    Err(e) => {
                        self.refused(token, e, dir);
                        return false;
                    }
                }
            }
        };
        let token = self.token(OpKind::DirSync);
        match self.client.sync(token, id, false) {
            Ok(()) => true,
            Err(e) => {
                let dir = self.dir.clone();
                self.refused(token, e, dir);
                // The open, if just submitted, still completes.
                self.ops.values().any(|k| matches!(k, OpKind::DirOpen))
            }
        }
    }

    /// Closes the files of segments no longer in `kept` (a checkpoint
    /// removed them).
    pub fn forget_removed(&mut self, kept: &[Lsn]) {
        let gone: Vec<Lsn> = self
            .files
            .keys()
            .copied()
            .filter(|s| !kept.contains(s))
            .collect();
        for segment in gone {
            if let Some(id) = self.files.remove(&segment) {
                let token = self.token(OpKind::Close);
                if self.client.close(token, id).is_err() {
                    self.ops.remove(&token);
                }
            }
        }
    }
}
