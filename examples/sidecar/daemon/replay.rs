//! Start-up: open each engine's WAL, recover it (W1) and apply every
//! write accepted but not known to be on disk, through a blocking client
//! of a storage worker, before any client can attach.
//!
//! `replay_all` replays every engine directory found (`shards::found`)
//! and every one an engine of this start will use, each exactly as one
//! log is replayed (`replay`). A directory of an engine that will not run
//! is finished as far as replay can: its writes are applied; its sends
//! need their engine (their ids carry its index), so a directory that
//! still holds sends makes the start fail, naming it and the `--engines`
//! value that runs its engine. One with nothing left is kept as it is
//! (its LSNs must not be used again) and named in the start-up line.

use super::engine::Resend;
use super::shards;
use crate::delivery;
use crate::dest::Dest;
use crate::resolve::{FileKey, Root};
use crate::wal;
use shared_nothing::io::{BlockingStorageClient, FileId, IoError, OpenOptions, StorageWorker};
use shared_nothing::pool::IoWorkers;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// What replay leaves for the engine.
#[derive(Debug)]
pub struct Replayed {
    /// The segments, oldest first: `(number, file, highest LSN,
    /// identity)`.
    pub segments: Vec<(u64, FileId, u64, FileKey)>,
    pub wal_len: u64,
    pub next_lsn: u64,
    pub next_file: u32,
    /// The DONE the log ends with (the watermark's start), durable.
    pub done: u64,
    /// Sends accepted but not known acknowledged: `(lsn, destination
    /// name, data)`, in LSN order, to send again (W2).
    pub sends: Vec<(u64, Vec<u8>, Vec<u8>)>,
    /// Files with writes past `done`, each with the highest such LSN
    /// (applied again, but a later replay applies them again too: C1).
    pub unsettled: Vec<(FileKey, u64)>,
    /// Writes applied again.
    pub applied: usize,
    /// Where the log was cut (a torn tail), if it was.
    pub cut: Option<String>,
}

/// One engine's replayed log, for an engine of this start.
#[derive(Debug)]
pub struct EngineLog {
    pub engine: usize,
    pub dir: PathBuf,
    pub replayed: Replayed,
    /// Its sends, with their destinations' handles and operation ids.
    pub resend: Vec<Resend>,
}

/// Every log of a start: the running engines' and what was found of
/// the others.
#[derive(Debug)]
pub struct Logs {
    /// One per engine of this start, in engine order.
    pub engines: Vec<EngineLog>,
    /// Engines not running this time whose directories hold nothing left
    /// to do (kept, with their LSNs).
    pub idle: Vec<usize>,
    /// Writes applied again, over every log.
    pub applied: usize,
    /// Where logs were cut.
    pub cuts: Vec<String>,
}

fn err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// Replays every engine directory beneath `wal` (`shards::engine_dir`)
/// for a start with `engines` engines sending to `dests`; engine `i`'s
/// log is replayed through storage worker `i % count`.
///
/// # Errors
/// Replay's own, and a refusal (the start must fail) when a directory of
/// an engine that will not run holds sends, when a log holds sends to a
/// destination not configured, or LSNs past what an operation id holds.
pub fn replay_all(
    io: &IoWorkers,
    root: &Root,
    wal: &Path,
    engines: usize,
    dests: &[Dest],
) -> std::io::Result<Logs> {
    let mut all = shards::found(wal)?;
    all.extend(0..engines);
    all.sort_unstable();
    all.dedup();
    let mut logs = Logs {
        engines: Vec::new(),
        idle: Vec::new(),
        applied: 0,
        cuts: Vec::new(),
    };
    for engine in all {
        let dir = shards::engine_dir(wal, engine);
        if !dir.exists() {
            // A new engine's directory: its name must survive a crash, as
            // its segments' do.
            std::fs::create_dir_all(&dir)?;
            std::fs::File::open(wal)?.sync_all()?;
        }
        let storage = io.storage(engine % io.storage_count().max(1));
        let replayed = replay(storage, root, &dir)?;
        logs.applied += replayed.applied;
        logs.cuts.extend(replayed.cut.clone());
        if engine >= engines {
            if !replayed.sends.is_empty() {
                return Err(err(
                    "replay",
                    format!(
                        "the WAL directory {} (engine {engine}) holds {} send(s) accepted but not delivered, which only engine {engine} can deliver (their operation ids carry it); start with --engines {} or more to deliver them",
                        dir.display(),
                        replayed.sends.len(),
                        engine + 1
                    ),
                ));
            }
            logs.idle.push(engine);
            continue;
        }
        let resend = resends(engine, &dir, &replayed, dests)?;
        logs.engines.push(EngineLog {
            engine,
            dir,
            replayed,
            resend,
        });
    }
    Ok(logs)
}

/// A log's sends with their destinations' handles and operation ids.
/// Accepted sends are never dropped for want of a destination: a log that
/// holds sends to one no longer configured is refused.
fn resends(
    engine: usize,
    dir: &Path,
    r: &Replayed,
    dests: &[Dest],
) -> std::io::Result<Vec<Resend>> {
    if r.next_lsn - 1 > delivery::MAX_LSN {
        return Err(err(
            "replay",
            format!(
                "the WAL in {} holds LSNs past 2^48, more than an operation id (engine << 48 | LSN) can carry",
                dir.display()
            ),
        ));
    }
    let mut out = Vec::with_capacity(r.sends.len());
    for (lsn, name, data) in &r.sends {
        let Some(i) = dests.iter().position(|d| d.name.as_bytes() == name) else {
            return Err(err(
                "replay",
                format!(
                    "the WAL holds send {lsn} to destination {:?}, which is not configured (pass --dest {}=HOST:PORT)",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(name)
                ),
            ));
        };
        let id = delivery::op_id(engine, *lsn).ok_or_else(|| {
            err(
                "replay",
                format!("engine {engine}: no operation id for {lsn}"),
            )
        })?;
        out.push(Resend {
            lsn: *lsn,
            id,
            dest: i as u64 + 1,
            data: data.clone(),
        });
    }
    Ok(out)
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

/// What reading a log's segments found.
struct Read {
    segments: Vec<(u64, FileId, u64, FileKey)>,
    records: Vec<wal::Record>,
    cut: Option<String>,
    last_len: u64,
}

/// Opens and scans every segment (creating the first if there is none),
/// cutting a torn tail off the newest, and makes what it read durable:
/// the DONE replay starts from is then durable too (C1).
fn read_segments(
    io: &mut BlockingStorageClient,
    root: &Root,
    wal_dir: &Path,
) -> std::io::Result<Read> {
    let mut numbers = list_segments(wal_dir)?;
    if numbers.is_empty() {
        numbers.push(1);
    }
    let last_no = numbers.last().copied().unwrap_or(1);
    let mut out = Read {
        segments: Vec::new(),
        records: Vec::new(),
        cut: None,
        last_len: 0,
    };
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
            out.cut = Some(format!("{}: {name}: {why}", wal_dir.display()));
        }
        io.fdatasync(id).map_err(|e| err("WAL sync", e))?;
        let max_lsn = scan
            .records
            .iter()
            .filter_map(|r| match r {
                wal::Record::Write { lsn, .. } | wal::Record::Send { lsn, .. } => Some(*lsn),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        out.segments.push((no, id, max_lsn, key));
        out.records.extend(scan.records);
        out.last_len = scan.valid_len;
    }
    Ok(out)
}

/// Applies the pending writes in LSN order (W1), then syncs and closes
/// their files; returns each file number's identity.
fn apply_writes(
    io: &mut BlockingStorageClient,
    root: &Root,
    p: &wal::Pending,
) -> std::io::Result<HashMap<u32, FileKey>> {
    let mut opened: HashMap<u32, (FileId, FileKey)> = HashMap::new();
    for (lsn, file, offset, data) in &p.writes {
        let id = match opened.get(file) {
            Some((id, _)) => *id,
            None => {
                let path = p.paths.get(file).ok_or_else(|| {
                    err(
                        "WAL",
                        format!("write {lsn} names file {file}, which no PATH record names"),
                    )
                })?;
                let (fd, key, _) = root.open_beneath(path, true).map_err(|s| {
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
                opened.insert(*file, (id, key));
                id
            }
        };
        io.write_at(id, *offset, data.clone())
            .map_err(|e| err("replay write", e))?;
    }
    let mut keys = HashMap::new();
    for (file, (id, key)) in opened {
        io.fdatasync(id).map_err(|e| err("replay sync", e))?;
        io.close(id).map_err(|e| err("replay close", e))?;
        keys.insert(file, key);
    }
    Ok(keys)
}

/// Replays the one log in `wal_dir`.
pub fn replay(storage: &StorageWorker, root: &Root, wal_dir: &Path) -> std::io::Result<Replayed> {
    let mut io = storage
        .blocking_client()
        .map_err(|e| err("storage client", e))?;
    let read = read_segments(&mut io, root, wal_dir)?;
    let Some(&(_, wal, _, _)) = read.segments.last() else {
        return Err(err("WAL", format!("{}: no segment", wal_dir.display())));
    };
    let mut wal_len = read.last_len;
    let p = wal::pending(read.records);
    let keys = apply_writes(&mut io, root, &p)?;
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
    let mut unsettled: HashMap<FileKey, u64> = HashMap::new();
    for (lsn, file, _, _) in p.writes.iter().filter(|w| w.0 > done_through) {
        if let Some(key) = keys.get(file) {
            let l = unsettled.entry(*key).or_default();
            *l = (*l).max(*lsn);
        }
    }
    Ok(Replayed {
        segments: read.segments,
        wal_len,
        next_lsn: p.max_lsn.max(p.done) + 1,
        next_file: p.max_file,
        done: done_through,
        sends: p.sends,
        unsettled: unsettled.into_iter().collect(),
        applied,
        cut: read.cut,
    })
}
