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
    /// The segments, oldest first: `(number, file, highest LSN)`.
    pub segments: Vec<(u64, FileId, u64)>,
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

/// The WAL directory's segments, in order.
fn list_segments(wal_dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut v: Vec<u64> = std::fs::read_dir(wal_dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| wal::segment_no(e.file_name().to_str()?))
        .collect();
    v.sort_unstable();
    Ok(v)
}

pub fn replay(
    storage: &StorageWorker,
    root: &mut Root,
    wal_dir: &Path,
) -> std::io::Result<Replayed> {
    let mut io = storage
        .blocking_client()
        .map_err(|e| err("storage client", e))?;
    let mut numbers = list_segments(wal_dir)?;
    if numbers.is_empty() {
        numbers.push(1);
    }
    let last_no = *numbers.last().expect("one at least");
    let mut segments = Vec::new();
    let mut records = Vec::new();
    let mut cut = None;
    let mut last_len = 0;
    for &no in &numbers {
        let path = wal_dir.join(wal::segment_name(no));
        let existed = path.exists();
        let id = io
            .open(&path, OpenOptions::read_write_create())
            .map_err(|e| err("open WAL", e))?;
        if !existed {
            // The new log's name must survive a crash too.
            std::fs::File::open(wal_dir)?.sync_all()?;
        }
        let len = std::fs::metadata(&path)?.len();
        let bytes = io
            .read_at(id, 0, len as usize)
            .map_err(|e| err("read WAL", e))?;
        let (key, _) =
            crate::resolve::identify(&std::os::fd::OwnedFd::from(std::fs::File::open(&path)?))?;
        root.forbid(key);
        let scan = wal::scan(&bytes);
        if let Some(why) = &scan.cut {
            let name = wal::segment_name(no);
            if no == last_no {
                tracing::warn!(segment = %name, at = scan.valid_len, why, "WAL cut at its first bad record");
                io.set_len(id, scan.valid_len)
                    .map_err(|e| err("cut WAL", e))?;
            } else {
                // Only the newest segment can have a torn tail: a damaged
                // older one lost what followed the damage.
                tracing::error!(segment = %name, at = scan.valid_len, why, "WAL segment damaged before its end: what follows is lost");
            }
            cut = Some(format!("{name}: {why}"));
        }
        let max_lsn = scan
            .records
            .iter()
            .filter_map(|r| match r {
                wal::Record::Write { lsn, .. } | wal::Record::Send { lsn, .. } => Some(*lsn),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        segments.push((no, id, max_lsn));
        records.extend(scan.records);
        last_len = scan.valid_len;
    }
    let wal = segments.last().expect("one at least").1;
    let mut wal_len = last_len;
    let p = wal::pending(records);
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
        segments,
        wal_len,
        next_lsn: p.max_lsn.max(p.done) + 1,
        next_file: p.max_file,
        done: done_through,
        sends: p.sends,
        applied,
        cut,
    })
}
