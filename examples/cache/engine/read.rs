//! Reads: [`Engine::lookup`], [`Engine::begin_read`] (the hit, counted
//! by tier), [`Engine::read`] of a byte range, and chunk files read back
//! ([`Engine::chunk_loaded`], checked: D1).

use super::{CHUNK, ChunkHash, Engine, Entry, OnDisk, chunk_hash};
use crate::arc::Outcome;
use crate::disk::ChunkFile;
use std::time::{Duration, Instant};

/// What a read needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Bytes(Vec<u8>),
    /// These chunk files first ([`Engine::chunk_loaded`]).
    Need(Vec<ChunkFile>),
    /// The entry changed or went away, or the range is past its end.
    Gone,
}

impl Engine {
    /// The live entry under `key` (an expired one is removed), for
    /// metadata; counts nothing.
    pub fn head(&mut self, key: &[u8], now: Instant) -> Option<&Entry> {
        if self.entries.get(key).is_some_and(|e| e.expired(now)) {
            self.remove_entry(key);
        }
        self.entries.get(key)
    }

    /// Every live key `keep` selects, with its time left to live (the
    /// cluster sync's list; a scan of the whole index).
    pub fn live_keys(
        &self,
        now: Instant,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Vec<(Vec<u8>, Option<Duration>)> {
        self.entries
            .iter()
            .filter(|(k, e)| !e.expired(now) && keep(k))
            .map(|(k, e)| {
                (
                    k.clone(),
                    e.expires.map(|t| t.saturating_duration_since(now)),
                )
            })
            .collect()
    }

    /// A GET of `key`: its entry or `None` (a miss of every tier),
    /// counted; [`begin_read`](Self::begin_read) counts the hit.
    pub fn lookup(&mut self, key: &[u8], now: Instant) -> Option<Entry> {
        self.m.gets.inc();
        let found = self.head(key, now).cloned();
        if found.is_none() {
            self.m.mem_misses.inc();
            if self.disk.is_some() {
                self.m.disk_misses.inc();
            }
        }
        found
    }

    /// The chunk indexes `[offset, offset + len)` of a value covers.
    fn span(offset: u64, len: u64) -> std::ops::RangeInclusive<u64> {
        if len == 0 {
            #[allow(clippy::reversed_empty_ranges)]
            return 1..=0;
        }
        offset / CHUNK as u64..=(offset + len - 1) / CHUNK as u64
    }

    /// A GET hit of `[offset, offset + len)` of `entry`: counted by the
    /// tier that holds its chunks (all in memory: a memory hit; some: a
    /// partial hit, the rest a disk hit; none: a memory miss and a disk
    /// hit), and its chunks marked used in both tiers. A range read
    /// touches only its chunks.
    pub fn begin_read(&mut self, entry: &Entry, offset: u64, len: u64) {
        let (mut total, mut resident) = (0u64, 0u64);
        for i in Self::span(offset, len) {
            let Some(h) = usize::try_from(i).ok().and_then(|i| entry.chunks.get(i)) else {
                continue;
            };
            total += 1;
            if self.arc.touch(h) {
                resident += 1;
            }
            if let Some(d) = &mut self.disk {
                d.arc.touch(h);
            }
        }
        if resident == total {
            self.m.mem_hits.inc();
        } else {
            if resident > 0 {
                self.m.partial_hits.inc();
            } else {
                self.m.mem_misses.inc();
            }
            self.m.disk_hits.inc();
        }
    }

    /// `[offset, offset + len)` of the entry `id` under `key`, from memory
    /// and the chunks in `loaded`; the chunk files it still needs; or
    /// [`Read::Gone`] if that entry is gone or replaced, or the range is
    /// past its end.
    pub fn read(
        &mut self,
        key: &[u8],
        id: u64,
        offset: u64,
        len: u64,
        loaded: &[(ChunkHash, Vec<u8>)],
    ) -> Read {
        let Some(entry) = self.entries.get(key).filter(|e| e.id == id) else {
            return Read::Gone;
        };
        let Some(end) = offset.checked_add(len).filter(|&e| e <= entry.size) else {
            return Read::Gone;
        };
        let bytes_of = |h: &ChunkHash| -> Option<&[u8]> {
            let c = self.chunks.get(h)?;
            c.mem.as_deref().or_else(|| {
                loaded
                    .iter()
                    .find(|(l, _)| l == h)
                    .map(|(_, d)| d.as_slice())
            })
        };
        let mut need = Vec::new();
        for i in Self::span(offset, len) {
            let Some(h) = usize::try_from(i).ok().and_then(|i| entry.chunks.get(i)) else {
                return Read::Gone;
            };
            if bytes_of(h).is_none() {
                match self.chunks.get(h).map(|c| c.disk) {
                    Some(OnDisk::Stored(seq)) => {
                        if !need.contains(&(*h, seq)) {
                            need.push((*h, seq));
                        }
                    }
                    _ => return Read::Gone,
                }
            }
        }
        if !need.is_empty() {
            return Read::Need(need);
        }
        let Ok(cap) = usize::try_from(len) else {
            return Read::Gone;
        };
        let mut out = Vec::with_capacity(cap);
        let mut at = offset;
        while at < end {
            let Some(data) = usize::try_from(at / CHUNK as u64)
                .ok()
                .and_then(|i| entry.chunks.get(i))
                .and_then(bytes_of)
            else {
                return Read::Gone;
            };
            let start = (at % CHUNK as u64) as usize;
            let take = ((end - at) as usize).min(data.len().saturating_sub(start));
            let Some(piece) = data.get(start..start + take).filter(|p| !p.is_empty()) else {
                return Read::Gone;
            };
            out.extend_from_slice(piece);
            at += take as u64;
        }
        self.m.bytes_read.inc_by(len);
        Read::Bytes(out)
    }

    /// A chunk file read back (`Err`: the read failed): its bytes if they
    /// are the chunk's (length and xxh3-128 checked), refilling the memory
    /// tier; `None` if not, and a damaged file leaves the tier with every
    /// entry using it (never served).
    pub fn chunk_loaded(&mut self, file: ChunkFile, got: Result<Vec<u8>, ()>) -> Option<Vec<u8>> {
        let (h, seq) = file;
        let (len, state, in_mem) = match self.chunks.get(&h) {
            Some(c) => (c.len, c.disk, c.mem.is_some()),
            None => return None,
        };
        let good = got
            .ok()
            .filter(|b| b.len() as u64 == len && chunk_hash(b) == h);
        let Some(bytes) = good else {
            if state == OnDisk::Stored(seq) {
                self.damaged(h);
            }
            return None;
        };
        self.m.chunks_read.inc();
        if !in_mem && self.arc.capacity() > 0 {
            let mut evicted = Vec::new();
            if self.arc.request(h, len, &mut evicted) == Outcome::Inserted {
                if let Some(c) = self.chunks.get_mut(&h) {
                    c.mem = Some(bytes.clone());
                }
                self.residency(h, true);
            }
            self.drop_evicted_mem(evicted);
        }
        Some(bytes)
    }
}
