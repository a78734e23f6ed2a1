//! Storing a value: [`Engine::commit`] (to the disk tier's queue, or to
//! memory at once, E4) and [`Engine::delete`].

use super::batch::{Job, PendingPut};
use super::{
    Chunk, ChunkHash, Done, Engine, Entry, OnDisk, Placement, Staged, add_owner, deadline,
};
use crate::arc::Outcome;
use std::time::{Duration, Instant};

/// Why a value was not stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    #[error("the value ({size} bytes) does not fit the tier ({capacity} bytes)")]
    TooLarge { size: u64, capacity: u64 },
    #[error("two different chunks have the same 128-bit hash")]
    Collision,
    #[error("no tier may take the value (X-ElCache-No-Memory and no disk tier, or both refused)")]
    NoTier,
    #[error("the disk tier failed to store the value")]
    Disk,
    #[error("a body chunk out of order (only the last may be short)")]
    BadChunk,
}

impl Engine {
    /// D4: a change with `id` was applied to `key`.
    pub(super) fn note_applied(&mut self, key: &[u8], id: u64) {
        if let Some(d) = &mut self.disk
            && let Some((_, latest)) = d.pending.get_mut(key)
        {
            *latest = (*latest).max(id);
        }
    }

    /// Whether a change to `key` must also reach the manifest (the key
    /// has an entry there, or a put on its way).
    pub(super) fn key_on_disk(&self, key: &[u8]) -> bool {
        self.disk
            .as_ref()
            .is_some_and(|d| d.pending.contains_key(key))
            || self.entries.get(key).is_some_and(|e| e.on_disk)
    }

    /// Stores `staged` under `key`, replacing what was there, in the
    /// tiers `place` allows: with a disk tier (and `place.disk`) the value
    /// is queued for it and applied once its chunks and record are
    /// written ([`Done::Later`]); memory-only it is applied at once (a
    /// delete record follows when the key was on disk).
    ///
    /// # Errors
    /// [`CommitError::TooLarge`]: the tier cannot hold the whole value;
    /// [`CommitError::Collision`]: a chunk's hash names different bytes;
    /// [`CommitError::NoTier`]: no tier `place` allows exists.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &mut self,
        key: &[u8],
        staged: Staged,
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
        place: Placement,
        ticket: u64,
    ) -> Result<Done, CommitError> {
        let size = staged.size;
        let to_disk = place.disk && self.disk.is_some();
        let to_mem = place.memory && self.arc.capacity() > 0;
        if !to_disk && !to_mem {
            return Err(CommitError::NoTier);
        }
        if to_disk {
            let capacity = self.disk.as_ref().map_or(0, |d| d.arc.capacity());
            if size > capacity {
                return Err(CommitError::TooLarge { size, capacity });
            }
            let id = self.take_id();
            let (expires, expires_ms) = deadline(ttl, now);
            let put = PendingPut {
                ticket,
                id,
                key: key.to_vec(),
                size,
                flags,
                expires,
                expires_ms,
                memory: to_mem,
                chunks: staged
                    .chunks
                    .into_iter()
                    .map(|(h, d)| (h, Some(d)))
                    .collect(),
                owned: 0,
                failed: None,
                streamed: false,
            };
            self.queue_put(key, put);
            return Ok(Done::Later);
        }
        let needs_del = self.key_on_disk(key);
        let id = self.commit_memory(key, staged, ttl, flags, now)?;
        Ok(self.queue_del(needs_del, id, key, Some(ticket)))
    }

    /// Queues a delete record for `key` when `needed` ([`Done::Later`]).
    pub(super) fn queue_del(
        &mut self,
        needed: bool,
        id: u64,
        key: &[u8],
        ticket: Option<u64>,
    ) -> Done {
        match &mut self.disk {
            Some(d) if needed => {
                d.queue.push(Job::Del {
                    ticket,
                    id,
                    key: key.to_vec(),
                });
                Done::Later
            }
            _ => Done::Now,
        }
    }

    /// The memory-only commit (E4); the new entry's id.
    fn commit_memory(
        &mut self,
        key: &[u8],
        staged: Staged,
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
    ) -> Result<u64, CommitError> {
        let size = staged.size;
        if size > self.arc.capacity() {
            return Err(CommitError::TooLarge {
                size,
                capacity: self.arc.capacity(),
            });
        }
        let id = self.take_id();
        let mut evicted = Vec::new();
        // (hash, whether the chunk is new to `chunks`).
        let mut added: Vec<(ChunkHash, bool)> = Vec::new();
        let mut hashes = Vec::with_capacity(staged.chunks.len());
        let mut failure = None;
        self.arc.pin();
        for (hash, data) in staged.chunks {
            let len = data.len() as u64;
            let existing = self.chunks.get(&hash).map(|c| (c.len, c.mem.is_some()));
            match existing {
                Some((_, true)) => {
                    if self.chunks.get(&hash).and_then(|c| c.mem.as_deref()) != Some(&data[..]) {
                        failure = Some(CommitError::Collision);
                        break;
                    }
                    self.arc.touch(&hash);
                }
                Some((clen, false)) if clen != len => {
                    failure = Some(CommitError::Collision);
                    break;
                }
                _ => {
                    if self.arc.request(hash, len, &mut evicted) == Outcome::Refused {
                        failure = Some(CommitError::TooLarge {
                            size,
                            capacity: self.arc.capacity(),
                        });
                        break;
                    }
                    match self.chunks.get_mut(&hash) {
                        Some(c) => c.mem = Some(data),
                        None => {
                            self.chunks.insert(
                                hash,
                                Chunk {
                                    len,
                                    mem: Some(data),
                                    disk: OnDisk::No,
                                    owners: Vec::new(),
                                },
                            );
                        }
                    }
                    added.push((hash, existing.is_none()));
                    if existing.is_some() {
                        self.residency(hash, true);
                    }
                }
            }
            hashes.push(hash);
        }
        self.arc.unpin();
        if failure.is_none() {
            // E3 before the evictions: a chunk this value shares with an
            // entry about to be dropped keeps an owner.
            for &h in &hashes {
                if let Some(c) = self.chunks.get_mut(&h) {
                    add_owner(&mut c.owners, id);
                }
            }
        } else {
            for &(h, new) in &added {
                self.arc.remove(&h);
                if new {
                    self.chunks.remove(&h);
                } else {
                    self.residency(h, false);
                    if let Some(c) = self.chunks.get_mut(&h) {
                        c.mem = None;
                    }
                }
            }
        }
        self.drop_evicted_mem(evicted);
        if let Some(e) = failure {
            return Err(e);
        }
        self.remove_entry(key);
        let (expires, _) = deadline(ttl, now);
        self.insert_entry(
            key,
            Entry {
                id,
                size,
                flags,
                chunks: hashes,
                expires,
                on_disk: false,
                in_mem: 0,
            },
        );
        self.m.puts.inc();
        self.m.bytes_written.inc_by(size);
        self.note_applied(key, id);
        Ok(id)
    }

    /// A DELETE: removes `key`, counted; [`Done::Later`] when its delete
    /// record must reach the manifest first.
    pub fn delete(&mut self, key: &[u8], ticket: u64) -> Done {
        self.m.deletes.inc();
        let needed = self.key_on_disk(key);
        self.remove_entry(key);
        let id = self.take_id();
        self.note_applied(key, id);
        self.queue_del(needed, id, key, Some(ticket))
    }
}
