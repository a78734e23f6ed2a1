//! Start-up: open the WAL, recover it (W1) and apply every write accepted
//! but not known to be on disk, through a blocking client of the storage
//! worker, before any client can attach.

use crate::resolve::Root;
use crate::wal;
use shared_nothing::io::{FileId, IoError, OpenOptions, StorageWorker};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::Path;

/// What replay leaves for the engine.
#[derive(Debug)]
pub struct Replayed {
    pub wal: FileId,
    pub wal_len: u64,
    pub next_lsn: u64,
    pub next_file: u32,
    /// The DONE the log ends with (the watermark's start).
    pub done: u64,
    /// Sends accepted but not known acknowledged: `(lsn, destination
    /// name, data)`, in LSN order, to send again (W2).
    pub sends: Vec<(u64, Vec<u8>, Vec<u8>)>,
    /// Writes applied again.
    pub applied: usize,
    /// Where the log was cut (a torn tail), if it was.
    pub cut: Option<String>,
}

fn err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

pub fn replay(
    storage: &StorageWorker,
    root: &mut Root,
    wal_dir: &Path,
) -> std::io::Result<Replayed> {
    let mut io = storage
        .blocking_client()
        .map_err(|e| err("storage client", e))?;
    let wal_path = wal_dir.join("wal.log");
    let existed = wal_path.exists();
    let wal = io
        .open(&wal_path, OpenOptions::read_write_create())
        .map_err(|e| err("open WAL", e))?;
    if !existed {
        // The new log's name must survive a crash too.
        std::fs::File::open(wal_dir)?.sync_all()?;
    }
    let len = std::fs::metadata(&wal_path)?.len();
    let bytes = io
        .read_at(wal, 0, len as usize)
        .map_err(|e| err("read WAL", e))?;
    let wal_file = std::fs::File::open(&wal_path)?;
    let (key, _) = crate::resolve::identify(&std::os::fd::OwnedFd::from(wal_file))?;
    root.forbid(key);
    let scan = wal::scan(&bytes);
    if let Some(why) = &scan.cut {
        tracing::warn!(at = scan.valid_len, why, "WAL cut at its first bad record");
        io.set_len(wal, scan.valid_len)
            .map_err(|e| err("cut WAL", e))?;
    }
    let mut wal_len = scan.valid_len;
    let p = wal::pending(scan.records);
    let mut opened: HashMap<u32, FileId> = HashMap::new();
    for (lsn, file, offset, data) in &p.writes {
        let id = match opened.get(file) {
            Some(id) => *id,
            None => {
                let path = p.paths.get(file).ok_or_else(|| {
                    err(
                        "WAL",
                        format!("write {lsn} names file {file}, which no PATH record names"),
                    )
                })?;
                let (fd, _, _) = root.open_beneath(path, true).map_err(|s| {
                    err(
                        "replay open",
                        format!(
                            "{}: {}",
                            String::from_utf8_lossy(path),
                            crate::layout::status::describe(s)
                        ),
                    )
                })?;
                let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
                let id = io
                    .open(&proc_path, OpenOptions::new().read(true).write(true))
                    .map_err(|e: IoError| err("replay open", e))?;
                opened.insert(*file, id);
                id
            }
        };
        io.write_at(id, *offset, data.clone())
            .map_err(|e| err("replay write", e))?;
    }
    for id in opened.values() {
        io.fdatasync(*id).map_err(|e| err("replay sync", e))?;
        io.close(*id).map_err(|e| err("replay close", e))?;
    }
    let applied = p.writes.len();
    let mut done_through = p.done;
    if applied > 0 && p.done_after_replay() > p.done {
        done_through = p.done_after_replay();
        let mut done = Vec::new();
        wal::encode_done(&mut done, done_through);
        let n = done.len() as u64;
        io.write_at(wal, wal_len, done)
            .map_err(|e| err("WAL DONE", e))?;
        io.fdatasync(wal).map_err(|e| err("WAL sync", e))?;
        wal_len += n;
    }
    Ok(Replayed {
        wal,
        wal_len,
        next_lsn: p.max_lsn.max(p.done) + 1,
        next_file: p.max_file,
        done: done_through,
        sends: p.sends,
        applied,
        cut: scan.cut,
    })
}
