//! The disk tier's files: where they live, the manifest's records, and
//! the start-up recovery that rebuilds one worker's index from them.
//!
//! Worker `N` keeps its part under `DIR/wN/`: `chunks/` holds one file
//! per stored chunk, named `HASH-SEQ` (the chunk's xxh3-128 in hex, and a
//! number the worker never reuses), holding exactly the chunk's bytes;
//! `manifest.0` and `manifest.1` hold the entries. One file per chunk
//! lets the filesystem do the space management (an eviction is an
//! unlink, nothing to compact), and the `SEQ` makes every file written
//! once and never again: a chunk evicted and later stored again gets a
//! new name, so no read can meet a file being rewritten and no unlink can
//! race a create of the same name.
//!
//! A manifest is a 32-byte header, then records, each `u32 len, u64
//! xxh3-64(body), body` (little-endian). A body is a put (`1, id, size,
//! flags, expires (unix ms, 0 = none), key, chunks as (hash, seq)`) or a
//! delete (`2, id, key`). Records are appended only after the chunk files
//! they name were written; a record torn by a crash fails its checksum,
//! and replay stops there, so each entry is the old one or the new one,
//! never a mix. The header (magic, generation, its own checksum) is
//! written last when a manifest is rewritten at start (compaction: the
//! live entries into the other file, whose header is destroyed first),
//! so a valid header means a complete snapshot; the valid file with the
//! higher generation wins.
//!
//! Chunk bytes are checked against their hash on every read (`engine/`),
//! not here: recovery checks only that each named file exists with the
//! length its entry implies, so start-up reads the manifests, not the
//! data.

use crate::engine::{CHUNK, ChunkHash};
use shared_nothing::io::{BlockingStorageClient, FileId, IoError, OpenOptions};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: u64 = u64::from_le_bytes(*b"ELCMAN01");
/// Bytes of a manifest's header.
pub const HEADER: u64 = 32;
const PUT: u8 = 1;
const DEL: u8 = 2;
/// Largest record body accepted on replay (a 100 GiB value's chunk list
/// is about 600 KiB).
const MAX_RECORD: u32 = 64 << 20;

/// A chunk file's identity: its content hash and its sequence number.
pub type ChunkFile = (ChunkHash, u64);

/// A put record: an entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutRecord {
    pub id: u64,
    pub key: Vec<u8>,
    pub size: u64,
    pub flags: u32,
    /// Unix time in ms; 0 = never.
    pub expires_ms: u64,
    pub chunks: Vec<ChunkFile>,
}

/// One manifest record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Put(PutRecord),
    Del { id: u64, key: Vec<u8> },
}

/// Unix time now, in ms.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The length a chunk `index` of a `size`-byte value has (all are
/// [`CHUNK`] but the last).
pub fn chunk_len(size: u64, index: usize) -> u64 {
    let start = (index as u64).saturating_mul(CHUNK as u64);
    size.saturating_sub(start).min(CHUNK as u64)
}

/// A chunk file's name.
pub fn chunk_name((hash, seq): ChunkFile) -> String {
    format!("{hash:032x}-{seq:016x}")
}

/// The chunk file a name names, if it is one.
pub fn parse_chunk_name(name: &str) -> Option<ChunkFile> {
    let (h, s) = name.split_once('-')?;
    if h.len() != 32 || s.len() != 16 {
        return None;
    }
    Some((
        u128::from_str_radix(h, 16).ok()?,
        u64::from_str_radix(s, 16).ok()?,
    ))
}

/// Worker `index`'s directory under `dir`.
pub fn worker_dir(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("w{index}"))
}

/// The manifest file `slot` (0 or 1) of a worker directory.
pub fn manifest_path(wdir: &Path, slot: usize) -> PathBuf {
    wdir.join(format!("manifest.{slot}"))
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

impl Record {
    /// Appends the record, framed, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        match self {
            Record::Put(p) => {
                body.push(PUT);
                put_u64(&mut body, p.id);
                put_u64(&mut body, p.size);
                put_u32(&mut body, p.flags);
                put_u64(&mut body, p.expires_ms);
                put_u32(&mut body, p.key.len() as u32);
                body.extend_from_slice(&p.key);
                put_u32(&mut body, p.chunks.len() as u32);
                for &(h, s) in &p.chunks {
                    body.extend_from_slice(&h.to_le_bytes());
                    put_u64(&mut body, s);
                }
            }
            Record::Del { id, key } => {
                body.push(DEL);
                put_u64(&mut body, *id);
                put_u32(&mut body, key.len() as u32);
                body.extend_from_slice(key);
            }
        }
        put_u32(out, body.len() as u32);
        put_u64(out, xxhash_rust::xxh3::xxh3_64(&body));
        out.extend_from_slice(&body);
    }

    /// The record at the start of `buf` and its framed length; `None`
    /// when `buf` holds no whole, valid record there (a torn tail, zeros,
    /// garbage).
    pub fn decode(buf: &[u8]) -> Option<(Record, usize)> {
        let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?);
        if len == 0 || len > MAX_RECORD {
            return None;
        }
        let sum = u64::from_le_bytes(buf.get(4..12)?.try_into().ok()?);
        let body = buf.get(12..12 + len as usize)?;
        if xxhash_rust::xxh3::xxh3_64(body) != sum {
            return None;
        }
        let mut r = Reader(body);
        let rec = match r.u8()? {
            PUT => {
                let id = r.u64()?;
                let size = r.u64()?;
                let flags = r.u32()?;
                let expires_ms = r.u64()?;
                let key = r.bytes()?;
                let n = r.u32()? as usize;
                if n.checked_mul(24)? > r.0.len() {
                    return None;
                }
                let mut chunks = Vec::with_capacity(n);
                for _ in 0..n {
                    chunks.push((r.u128()?, r.u64()?));
                }
                Record::Put(PutRecord {
                    id,
                    key,
                    size,
                    flags,
                    expires_ms,
                    chunks,
                })
            }
            DEL => Record::Del {
                id: r.u64()?,
                key: r.bytes()?,
            },
            _ => return None,
        };
        if !r.0.is_empty() {
            return None;
        }
        Some((rec, 12 + len as usize))
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        Some(self.take(n)?.to_vec())
    }
}

/// A manifest header for `generation`.
pub fn header(generation: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER as usize);
    put_u64(&mut h, MAGIC);
    put_u64(&mut h, generation);
    put_u64(&mut h, 0);
    let sum = xxhash_rust::xxh3::xxh3_64(&h);
    put_u64(&mut h, sum);
    h
}

/// The generation of a valid header at the start of `buf`.
pub fn parse_header(buf: &[u8]) -> Option<u64> {
    let h = buf.get(..HEADER as usize)?;
    let word = |i: usize| u64::from_le_bytes(h[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    (word(0) == MAGIC && xxhash_rust::xxh3::xxh3_64(&h[..24]) == word(3)).then(|| word(1))
}

/// A manifest's valid records, in order, up to the first that is not.
pub fn replay(buf: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut at = HEADER as usize;
    while let Some((rec, n)) = buf.get(at..).and_then(Record::decode) {
        out.push(rec);
        at += n;
    }
    out
}

/// The live entries `records` leave, in the order they were last
/// written (a later put of a key replaces an earlier one, a delete
/// removes it), dropping those expired at `now_ms`.
pub fn live_entries(records: Vec<Record>, now_ms: u64) -> Vec<PutRecord> {
    let mut live: HashMap<Vec<u8>, (u64, PutRecord)> = HashMap::new();
    for (order, rec) in (0u64..).zip(records) {
        match rec {
            Record::Put(p) => {
                live.insert(p.key.clone(), (order, p));
            }
            Record::Del { key, .. } => {
                live.remove(&key);
            }
        }
    }
    let mut out: Vec<(u64, PutRecord)> = live
        .into_values()
        .filter(|(_, p)| p.expires_ms == 0 || p.expires_ms > now_ms)
        .collect();
    out.sort_by_key(|(o, _)| *o);
    out.into_iter().map(|(_, p)| p).collect()
}

/// What recovery found for one worker.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Live entries, oldest first, each with every chunk file present at
    /// its expected length.
    pub entries: Vec<PutRecord>,
    /// Entries dropped because a chunk file was missing or had the wrong
    /// length.
    pub damaged: u64,
    /// Chunk files no entry named, removed.
    pub orphans: u64,
    /// The manifest now appended to, and where the next record goes.
    pub manifest: PathBuf,
    pub log_end: u64,
    /// One past the highest entry id and chunk sequence seen.
    pub next_id: u64,
    pub next_seq: u64,
}

/// Why a worker's disk tier could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    #[error("{}: {source}", path.display())]
    Fs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: IoError },
}

fn fs_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecoverError + '_ {
    move |source| RecoverError::Fs {
        path: path.to_path_buf(),
        source,
    }
}

fn io_err(path: &Path) -> impl FnOnce(IoError) -> RecoverError + '_ {
    move |source| RecoverError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a whole file through the storage worker (`None` if missing).
fn read_file(io: &mut BlockingStorageClient, path: &Path) -> Result<Option<Vec<u8>>, RecoverError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fs_err(path)(e)),
    };
    let file = io
        .open(path, OpenOptions::new().read(true))
        .map_err(io_err(path))?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let out = io.read_at(file, 0, len).map_err(io_err(path));
    io.close(file).map_err(io_err(path))?;
    out.map(Some)
}

/// Writes `snapshot` as a complete manifest of `generation` at `path`:
/// the old header is destroyed first, the header written last, each step
/// synced, so a crash leaves the file invalid or complete.
fn write_manifest(
    io: &mut BlockingStorageClient,
    path: &Path,
    generation: u64,
    snapshot: Vec<u8>,
) -> Result<u64, RecoverError> {
    let file: FileId = io
        .open(path, OpenOptions::read_write_create())
        .map_err(io_err(path))?;
    let end = HEADER + snapshot.len() as u64;
    let run = |io: &mut BlockingStorageClient| -> Result<(), IoError> {
        io.set_len(file, 0)?;
        io.fdatasync(file)?;
        if !snapshot.is_empty() {
            io.write_at(file, HEADER, snapshot)?;
        }
        io.fdatasync(file)?;
        io.write_at(file, 0, header(generation))?;
        io.fdatasync(file)
    };
    let done = run(io).map_err(io_err(path));
    io.close(file).map_err(io_err(path))?;
    done.map(|()| end)
}

/// Rebuilds worker directory `wdir`'s index: the newer valid manifest
/// replayed, entries whose chunk files are missing or short dropped,
/// files no entry names removed, and the live entries written as a new
/// manifest (compaction) that later records are appended to. Runs at
/// start, before the worker serves, through the storage I/O worker
/// (`io`) for every file read and write; directories are created and
/// listed with `std::fs`, which the storage API does not cover.
///
/// # Errors
/// The directory cannot be created or listed, or a manifest cannot be
/// read or written.
pub fn recover(io: &mut BlockingStorageClient, wdir: &Path) -> Result<Recovered, RecoverError> {
    let chunks_dir = wdir.join("chunks");
    std::fs::create_dir_all(&chunks_dir).map_err(fs_err(&chunks_dir))?;
    let mut best: Option<(usize, u64, Vec<u8>)> = None;
    for slot in 0..2 {
        let path = manifest_path(wdir, slot);
        if let Some(buf) = read_file(io, &path)?
            && let Some(generation) = parse_header(&buf)
            && best.as_ref().is_none_or(|(_, g, _)| generation > *g)
        {
            best = Some((slot, generation, buf));
        }
    }
    let (slot, generation, records) = match best {
        Some((slot, g, buf)) => (slot, g, replay(&buf)),
        None => (1, 0, Vec::new()),
    };
    let mut next_id = 1;
    for r in &records {
        let id = match r {
            Record::Put(p) => p.id,
            Record::Del { id, .. } => *id,
        };
        next_id = next_id.max(id.saturating_add(1));
    }
    let live = live_entries(records, unix_ms());
    let mut files: HashMap<ChunkFile, u64> = HashMap::new();
    let mut next_seq = 1;
    let listing = std::fs::read_dir(&chunks_dir).map_err(fs_err(&chunks_dir))?;
    let mut strays = Vec::new();
    for item in listing {
        let item = item.map_err(fs_err(&chunks_dir))?;
        let name = item.file_name();
        match name.to_str().and_then(parse_chunk_name) {
            Some(cf) => {
                let len = item.metadata().map_err(fs_err(&item.path()))?.len();
                next_seq = next_seq.max(cf.1.saturating_add(1));
                files.insert(cf, len);
            }
            None => strays.push(item.path()),
        }
    }
    let mut out = Recovered {
        next_id,
        next_seq,
        ..Recovered::default()
    };
    let mut used: HashSet<ChunkFile> = HashSet::new();
    for p in live {
        let whole = p.chunks.len() as u64 == p.size.div_ceil(CHUNK as u64)
            && p.chunks
                .iter()
                .enumerate()
                .all(|(i, cf)| files.get(cf) == Some(&chunk_len(p.size, i)));
        if whole {
            used.extend(p.chunks.iter().copied());
            out.entries.push(p);
        } else {
            out.damaged += 1;
        }
    }
    for cf in files.keys().filter(|cf| !used.contains(cf)) {
        let path = chunks_dir.join(chunk_name(*cf));
        io.remove(&path).map_err(io_err(&path))?;
        out.orphans += 1;
    }
    for path in strays {
        tracing::warn!(path = %path.display(), "not a chunk file; left alone");
    }
    let mut snapshot = Vec::new();
    for p in &out.entries {
        Record::Put(p.clone()).encode(&mut snapshot);
    }
    let target = manifest_path(wdir, 1 - slot);
    out.log_end = write_manifest(io, &target, generation + 1, snapshot)?;
    out.manifest = target;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: u64, key: &[u8], size: u64, chunks: Vec<ChunkFile>) -> Record {
        Record::Put(PutRecord {
            id,
            key: key.to_vec(),
            size,
            flags: 7,
            expires_ms: 0,
            chunks,
        })
    }

    fn log(records: &[Record]) -> Vec<u8> {
        let mut buf = header(3);
        for r in records {
            r.encode(&mut buf);
        }
        buf
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_stops_replay() {
        let recs = vec![
            put(1, b"a", 10, vec![(0xabc, 1)]),
            Record::Del {
                id: 2,
                key: b"a".to_vec(),
            },
            put(3, b"b", 5 << 20, vec![(1, 2), (2, 3)]),
        ];
        let buf = log(&recs);
        assert_eq!(parse_header(&buf), Some(3));
        assert_eq!(replay(&buf), recs);
        // Every cut inside the last record leaves the first two.
        let mut last = Vec::new();
        recs[2].encode(&mut last);
        for cut in 1..last.len() {
            let torn = &buf[..buf.len() - cut];
            assert_eq!(replay(torn), recs[..2], "cut {cut}");
        }
        // A flipped byte anywhere in a record invalidates it and what
        // follows.
        for i in HEADER as usize..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(replay(&bad).len() < 3, "flip at {i}");
        }
        // Zeros after the records read as the end.
        let mut zeros = buf.clone();
        zeros.extend_from_slice(&[0; 64]);
        assert_eq!(replay(&zeros), recs);
        let mut h = header(9);
        h[9] ^= 1;
        assert_eq!(parse_header(&h), None, "a damaged header is no header");
    }

    #[test]
    fn live_entries_keep_the_last_write_and_drop_expired() {
        let mut expired = PutRecord {
            id: 5,
            key: b"t".to_vec(),
            size: 1,
            flags: 0,
            expires_ms: 1000,
            chunks: vec![(9, 9)],
        };
        let recs = vec![
            put(1, b"a", 1, vec![(1, 1)]),
            put(2, b"b", 1, vec![(2, 2)]),
            put(3, b"a", 2, vec![(3, 3)]),
            Record::Del {
                id: 4,
                key: b"b".to_vec(),
            },
            Record::Put(expired.clone()),
        ];
        let live = live_entries(recs.clone(), 2000);
        assert_eq!(live.len(), 1);
        assert_eq!((live[0].id, live[0].size), (3, 2));
        expired.expires_ms = 3000;
        let mut recs = recs;
        recs[4] = Record::Put(expired);
        assert_eq!(live_entries(recs, 2000).len(), 2);
    }

    #[test]
    fn names_and_lengths() {
        let cf = (0x0123_4567_89ab_cdef_0011_2233_4455_6677u128, 42);
        assert_eq!(parse_chunk_name(&chunk_name(cf)), Some(cf));
        assert_eq!(parse_chunk_name("zz-1"), None);
        assert_eq!(parse_chunk_name("manifest.0"), None);
        let c = CHUNK as u64;
        assert_eq!(chunk_len(2 * c + 5, 0), c);
        assert_eq!(chunk_len(2 * c + 5, 2), 5);
        assert_eq!(chunk_len(2 * c, 2), 0);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 1u32;
        for n in 0..2000 {
            let buf: Vec<u8> = (0..n % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = Record::decode(&buf);
            let _ = parse_header(&buf);
        }
        // A valid frame around a malformed body is refused.
        let body = [PUT, 1, 2];
        let mut f = Vec::new();
        put_u32(&mut f, body.len() as u32);
        put_u64(&mut f, xxhash_rust::xxh3::xxh3_64(&body));
        f.extend_from_slice(&body);
        assert_eq!(Record::decode(&f), None);
    }
}
