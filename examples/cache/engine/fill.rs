//! Streamed PUTs: a value received chunk by chunk into a [`Fill`], each
//! chunk held in its tier as it arrives (A5), an entry only at
//! [`Engine::fill_finish`] (E4).

use super::batch::PendingPut;
use super::{
    CHUNK, Chunk, ChunkHash, ChunkWrite, CommitError, Done, Engine, Entry, OnDisk, Placement,
    add_owner, chunk_hash, deadline,
};
use crate::arc::Outcome;
use crate::disk::ChunkFile;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A value being received chunk by chunk (a streamed PUT), each chunk
/// put in a tier as it arrives and held there (A5): with a disk tier its
/// file is written at once, otherwise its bytes are held in memory. It
/// owns its chunks (E3) under its own id but is no entry: nothing reads
/// it until [`Engine::fill_finish`] makes it one, whole.
#[derive(Debug)]
pub(super) struct Fill {
    pub(super) chunks: Vec<ChunkHash>,
    pub(super) size: u64,
    /// Held in the disk ARC (there is a disk tier), else in memory's.
    pub(super) disk: bool,
    pub(super) failed: Option<CommitError>,
    /// The body will not come: it goes once none of its files is being
    /// written.
    pub(super) aborted: bool,
}

impl Engine {
    /// Starts receiving a value chunk by chunk; its fill id.
    pub fn fill_start(&mut self) -> u64 {
        let id = self.take_id();
        let disk = self.disk.is_some();
        self.fills.insert(
            id,
            Fill {
                chunks: Vec::new(),
                size: 0,
                disk,
                failed: None,
                aborted: false,
            },
        );
        id
    }

    /// The next chunk of fill `fill` (full-sized, except the last): held
    /// in its tier at once, evicting others as needed (never a chunk
    /// held). With a disk tier a new chunk's file is returned to be
    /// written ([`Engine::fill_written`] when it is); a chunk stored
    /// already is shared. A chunk that cannot be placed fails the fill
    /// (answered at [`Engine::fill_finish`]); later ones are dropped.
    pub fn fill_push(&mut self, fill: u64, data: Vec<u8>) -> Option<ChunkWrite> {
        let f = self.fills.get_mut(&fill)?;
        if f.failed.is_some() || f.aborted || data.is_empty() {
            return None;
        }
        let short = |h: &ChunkHash, chunks: &HashMap<ChunkHash, Chunk>| {
            chunks.get(h).is_some_and(|c| c.len < CHUNK as u64)
        };
        if data.len() > CHUNK || f.chunks.last().is_some_and(|h| short(h, &self.chunks)) {
            f.failed = Some(CommitError::BadChunk);
            return None;
        }
        let h = chunk_hash(&data);
        let len = data.len() as u64;
        let size = f.size + len;
        let on_disk = f.disk;
        let mut evicted = Vec::new();
        let mut write = None;
        let placed: Result<(), CommitError> = if on_disk {
            let Engine { disk, chunks, .. } = self;
            let d = disk.as_mut()?;
            match chunks.get(&h).map(|c| (c.len, c.disk)) {
                Some((l, _)) if l != len => Err(CommitError::Collision),
                Some((_, OnDisk::Stored(_) | OnDisk::Writing(_))) => {
                    d.arc.hold(h, len, &mut evicted);
                    Ok(())
                }
                _ if d.arc.hold(h, len, &mut evicted) == Outcome::Refused => {
                    Err(CommitError::TooLarge {
                        size,
                        capacity: d.arc.capacity(),
                    })
                }
                _ => {
                    let seq = d.next_seq;
                    d.next_seq += 1;
                    let c = chunks.entry(h).or_insert_with(|| Chunk {
                        len,
                        mem: None,
                        disk: OnDisk::No,
                        owners: Vec::new(),
                    });
                    c.disk = OnDisk::Writing(seq);
                    write = Some(ChunkWrite {
                        slot: 0,
                        file: (h, seq),
                        data,
                    });
                    Ok(())
                }
            }
        } else {
            match self
                .chunks
                .get(&h)
                .map(|c| (c.len, c.mem.as_deref() == Some(&data[..])))
            {
                Some((l, same)) if l != len || !same => Err(CommitError::Collision),
                Some(_) => {
                    self.arc.hold(h, len, &mut evicted);
                    Ok(())
                }
                None if self.arc.hold(h, len, &mut evicted) == Outcome::Refused => {
                    Err(CommitError::TooLarge {
                        size,
                        capacity: self.arc.capacity(),
                    })
                }
                None => {
                    self.chunks.insert(
                        h,
                        Chunk {
                            len,
                            mem: Some(data),
                            disk: OnDisk::No,
                            owners: Vec::new(),
                        },
                    );
                    Ok(())
                }
            }
        };
        match placed {
            Ok(()) => {
                if let Some(c) = self.chunks.get_mut(&h) {
                    add_owner(&mut c.owners, fill);
                }
                if let Some(f) = self.fills.get_mut(&fill) {
                    f.chunks.push(h);
                    f.size = size;
                }
            }
            Err(e) => {
                if let Some(f) = self.fills.get_mut(&fill) {
                    f.failed = Some(e);
                }
            }
        }
        if on_disk {
            let mut dels = Vec::new();
            self.drop_evicted_disk(evicted, &mut dels);
            self.queue_dels(dels);
        } else {
            self.drop_evicted_mem(evicted);
        }
        write
    }

    /// A streamed chunk's file was written (`ok`) or not; `data` is its
    /// buffer back, offered to the memory tier (an ordinary request: it
    /// may be evicted again, being on disk). A failed write fails every
    /// fill using the chunk.
    pub fn fill_written(&mut self, file: ChunkFile, ok: bool, data: Vec<u8>) {
        let (h, seq) = file;
        if let Some(c) = self.chunks.get_mut(&h)
            && c.disk == OnDisk::Writing(seq)
        {
            if ok {
                c.disk = OnDisk::Stored(seq);
                self.m.chunks_written.inc();
                if c.mem.is_none() && self.arc.capacity() > 0 && data.len() as u64 == c.len {
                    let mut evicted = Vec::new();
                    if self.arc.request(h, c.len, &mut evicted) == Outcome::Inserted {
                        c.mem = Some(data);
                        self.residency(h, true);
                    }
                    self.drop_evicted_mem(evicted);
                }
            } else {
                c.disk = OnDisk::No;
                self.m.disk_errors.inc();
                if let Some(d) = &mut self.disk {
                    d.arc.remove(&h);
                    d.unlinks.push(file);
                }
                for f in self.fills.values_mut() {
                    if f.chunks.contains(&h) {
                        f.failed.get_or_insert(CommitError::Disk);
                    }
                }
                self.drop_users(h, None);
            }
        }
        self.reap_fills();
    }

    /// Whether none of fill `fill`'s chunk files is being written.
    pub fn fill_idle(&self, fill: u64) -> bool {
        self.fills.get(&fill).is_none_or(|f| {
            f.chunks
                .iter()
                .all(|h| !matches!(self.chunks.get(h).map(|c| c.disk), Some(OnDisk::Writing(_))))
        })
    }

    /// Drops fill `fill` (the body will not come), once its writes are
    /// done.
    pub fn fill_abort(&mut self, fill: u64) {
        if let Some(f) = self.fills.get_mut(&fill) {
            f.aborted = true;
        }
        self.reap_fills();
    }

    /// Gives back what the aborted fills with no write in flight hold.
    fn reap_fills(&mut self) {
        let done: Vec<u64> = self
            .fills
            .iter()
            .filter(|(id, f)| f.aborted && self.fill_idle(**id))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(f) = self.fills.remove(&id) {
                self.give_back(id, &f);
            }
        }
    }

    /// Unholds and releases a fill's chunks (E3: the ones no one else
    /// uses leave both tiers).
    fn give_back(&mut self, id: u64, f: &Fill) {
        for h in &f.chunks {
            match (&mut self.disk, f.disk) {
                (Some(d), true) => d.arc.unhold(h),
                _ => self.arc.unhold(h),
            }
        }
        self.release(id, &f.chunks);
    }

    /// E3: the uses `from` holds become `to`'s.
    fn rename_owner(&mut self, hashes: &[ChunkHash], from: u64, to: u64) {
        for h in hashes {
            if let Some(c) = self.chunks.get_mut(h) {
                for o in &mut c.owners {
                    if o.0 == from {
                        o.0 = to;
                    }
                }
            }
        }
    }

    /// The whole body of fill `fill` has arrived (and its writes are
    /// done, [`Engine::fill_idle`]): it becomes the entry under `key`,
    /// replacing what was there, as [`Engine::commit`] does: through the
    /// disk tier's next batch (its record) when `place` allows the disk
    /// ([`Done::Later`]), else in memory at once, if all its chunks are
    /// there. Until then no read sees it.
    ///
    /// # Errors
    /// The fill's own failure, [`CommitError::NoTier`], or
    /// [`CommitError::TooLarge`] (memory only, and some chunk was
    /// evicted from memory); the engine is as before but for evictions.
    #[allow(clippy::too_many_arguments)]
    pub fn fill_finish(
        &mut self,
        fill: u64,
        key: &[u8],
        ttl: Option<Duration>,
        flags: u32,
        now: Instant,
        place: Placement,
        ticket: u64,
    ) -> Result<Done, CommitError> {
        let Some(f) = self.fills.remove(&fill) else {
            return Err(CommitError::BadChunk);
        };
        let to_disk = place.disk && f.disk;
        let to_mem = place.memory && self.arc.capacity() > 0;
        let failure = if let Some(e) = &f.failed {
            Some(e.clone())
        } else if !to_disk && !to_mem {
            Some(CommitError::NoTier)
        } else if to_disk
            && !f
                .chunks
                .iter()
                .all(|h| matches!(self.chunks.get(h).map(|c| c.disk), Some(OnDisk::Stored(_))))
        {
            Some(CommitError::Disk)
        } else if !to_disk
            && !f
                .chunks
                .iter()
                .all(|h| self.chunks.get(h).is_some_and(|c| c.mem.is_some()))
        {
            Some(CommitError::TooLarge {
                size: f.size,
                capacity: self.arc.capacity(),
            })
        } else {
            None
        };
        if let Some(e) = failure {
            self.give_back(fill, &f);
            return Err(e);
        }
        let id = self.take_id();
        self.rename_owner(&f.chunks, fill, id);
        if !place.memory {
            // Offered to memory as they were written: taken back where
            // no one else uses them.
            for h in &f.chunks {
                let only = self
                    .chunks
                    .get(h)
                    .is_some_and(|c| c.mem.is_some() && c.owners.iter().all(|&(o, _)| o == id));
                if only {
                    self.arc.remove(h);
                    if let Some(c) = self.chunks.get_mut(h) {
                        c.mem = None;
                    }
                }
            }
        }
        let (expires, expires_ms) = deadline(ttl, now);
        if to_disk {
            let put = PendingPut {
                ticket,
                id,
                key: key.to_vec(),
                size: f.size,
                flags,
                expires,
                expires_ms,
                memory: to_mem,
                chunks: f.chunks.iter().map(|h| (*h, None)).collect(),
                owned: f.chunks.len(),
                failed: None,
                streamed: true,
            };
            self.queue_put(key, put);
            return Ok(Done::Later);
        }
        for h in &f.chunks {
            match (&mut self.disk, f.disk) {
                (Some(d), true) => d.arc.unhold(h),
                _ => self.arc.unhold(h),
            }
        }
        let needs_del = self.key_on_disk(key);
        self.remove_entry(key);
        self.insert_entry(
            key,
            Entry {
                id,
                size: f.size,
                flags,
                chunks: f.chunks,
                expires,
                on_disk: false,
                in_mem: 0,
            },
        );
        self.m.puts.inc();
        self.m.bytes_written.inc_by(f.size);
        self.note_applied(key, id);
        Ok(self.queue_del(needs_del, id, key, Some(ticket)))
    }
}
