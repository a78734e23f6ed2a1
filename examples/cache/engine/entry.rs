//! A live entry ([`Entry`]), the tiers a value may go to
//! ([`Placement`]), and the engine's bookkeeping as entries come and go
//! and chunks gain or lose owners and residency (E3, E5).

use super::{ChunkHash, Engine, OnDisk};
use std::cmp::Reverse;
use std::time::Instant;

/// Which tiers a value may go to (`X-ElCache-No-Memory`,
/// `X-ElCache-No-Disk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub memory: bool,
    pub disk: bool,
}

impl Placement {
    pub const BOTH: Placement = Placement {
        memory: true,
        disk: true,
    };
}

/// A live entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Unique per stored version: a reader that continues a long read
    /// names it, and learns if the value changed in between.
    pub id: u64,
    pub size: u64,
    pub flags: u32,
    pub(super) chunks: Vec<ChunkHash>,
    pub(super) expires: Option<Instant>,
    /// D1: a manifest record names it, and all its chunks are on disk.
    pub(super) on_disk: bool,
    /// E5: how many of its chunk uses are resident in memory.
    pub(super) in_mem: u32,
}

impl Entry {
    /// ElCache's `X-ElCache-Chunks`: the size over [`CHUNK`], rounded up
    /// (every chunk but the last is full).
    pub fn chunk_count(&self) -> u64 {
        self.chunks.len() as u64
    }

    pub(super) fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }

    /// Counted among the memory tier's entries (E5).
    pub(super) fn in_memory(&self) -> bool {
        self.in_mem > 0 || (self.chunks.is_empty() && !self.on_disk)
    }
}

impl Engine {
    /// E5: chunk `h` entered (`gained`) or left memory; its owners'
    /// resident counts follow.
    pub(super) fn residency(&mut self, h: ChunkHash, gained: bool) {
        let Engine {
            chunks,
            keys,
            entries,
            mem_entries,
            ..
        } = self;
        let Some(c) = chunks.get(&h) else {
            return;
        };
        for &(owner, uses) in &c.owners {
            let Some(e) = keys.get(&owner).and_then(|k| entries.get_mut(k)) else {
                continue;
            };
            if e.id != owner {
                continue;
            }
            let before = e.in_memory();
            if gained {
                e.in_mem += uses;
            } else {
                e.in_mem = e.in_mem.saturating_sub(uses);
            }
            match (before, e.in_memory()) {
                (false, true) => *mem_entries += 1,
                (true, false) => *mem_entries = mem_entries.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// Makes `e` live under `key` (its residency counted now).
    pub(super) fn insert_entry(&mut self, key: &[u8], mut e: Entry) {
        e.in_mem = e
            .chunks
            .iter()
            .filter(|h| self.chunks.get(h).is_some_and(|c| c.mem.is_some()))
            .count() as u32;
        if e.in_memory() {
            self.mem_entries += 1;
        }
        if e.on_disk
            && let Some(d) = &mut self.disk
        {
            d.entries += 1;
        }
        if let Some(at) = e.expires {
            self.expiry.push(Reverse((at, e.id)));
        }
        self.keys.insert(e.id, key.to_vec());
        self.entries.insert(key.to_vec(), e);
    }

    /// Removes `key`'s entry and gives back its chunk uses.
    pub(super) fn remove_entry(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.keys.remove(&e.id);
        if e.in_memory() {
            self.mem_entries = self.mem_entries.saturating_sub(1);
        }
        if e.on_disk
            && let Some(d) = &mut self.disk
        {
            d.entries = d.entries.saturating_sub(1);
        }
        self.release(e.id, &e.chunks);
        Some(e)
    }

    /// E3: gives back `id`'s uses of `hashes`; a chunk with no owner left
    /// leaves both tiers (its file is queued for removal).
    pub(super) fn release(&mut self, id: u64, hashes: &[ChunkHash]) {
        for h in hashes {
            let Some(c) = self.chunks.get_mut(h) else {
                continue;
            };
            if let Some(i) = c.owners.iter().position(|&(o, _)| o == id) {
                c.owners[i].1 -= 1;
                if c.owners[i].1 == 0 {
                    c.owners.swap_remove(i);
                }
            }
            if c.owners.is_empty() {
                let disk = c.disk;
                self.chunks.remove(h);
                self.arc.remove(h);
                if let Some(d) = &mut self.disk {
                    d.arc.remove(h);
                    if let OnDisk::Stored(seq) | OnDisk::Writing(seq) = disk {
                        d.unlinks.push((*h, seq));
                    }
                }
            }
        }
    }

    /// Removes `key` (no record: for tests and expiry).
    #[cfg(test)]
    pub fn remove(&mut self, key: &[u8]) -> bool {
        self.remove_entry(key).is_some()
    }

    /// Removes up to `budget` entries whose TTL ran out by `now` (their
    /// manifest records stay: recovery drops expired entries itself).
    pub fn expire(&mut self, now: Instant, budget: usize) -> usize {
        let mut removed = 0;
        while removed < budget {
            match self.expiry.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((_, id))) = self.expiry.pop() else {
                break;
            };
            let key = self.keys.get(&id).cloned();
            if let Some(key) = key
                && self.entries.get(&key).is_some_and(|e| e.expired(now))
            {
                self.remove_entry(&key);
                removed += 1;
            }
        }
        removed
    }
}
