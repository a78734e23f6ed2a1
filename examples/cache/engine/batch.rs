//! The disk batch (D3): the queued puts and deletes written together,
//! their chunk files first ([`Engine::start_batch`],
//! [`Engine::chunk_written`]), then their manifest records
//! ([`Engine::batch_records`]), then applied ([`Engine::batch_done`]).

use super::{Chunk, ChunkHash, CommitError, Engine, Entry, OnDisk, add_owner};
use crate::arc::Outcome;
use crate::disk::{ChunkFile, PutRecord, Record};
use std::time::Instant;

/// A value on its way to the disk tier.
#[derive(Debug)]
pub(super) struct PendingPut {
    pub(super) ticket: u64,
    pub(super) id: u64,
    pub(super) key: Vec<u8>,
    pub(super) size: u64,
    pub(super) flags: u32,
    pub(super) expires: Option<Instant>,
    pub(super) expires_ms: u64,
    pub(super) memory: bool,
    /// Its chunks; a chunk's bytes are out while its file is written.
    pub(super) chunks: Vec<(ChunkHash, Option<Vec<u8>>)>,
    /// How many of `chunks` hold an owner use (E3) for `id`.
    pub(super) owned: usize,
    pub(super) failed: Option<CommitError>,
    /// Received as a [`Fill`]: its chunk files are written already and
    /// held in the disk ARC (A5) until the batch is done.
    pub(super) streamed: bool,
}

#[derive(Debug)]
pub(super) enum Job {
    Put(PendingPut),
    /// A delete record; `ticket` answers a request.
    Del {
        ticket: Option<u64>,
        id: u64,
        key: Vec<u8>,
    },
}

/// A chunk file to write: `slot` names it in [`Engine::chunk_written`].
#[derive(Debug)]
pub struct ChunkWrite {
    pub slot: usize,
    pub file: ChunkFile,
    pub data: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct Batch {
    pub(super) jobs: Vec<Job>,
    /// Per write slot: (job, chunk index).
    pub(super) slots: Vec<(usize, usize)>,
    pub(super) writes_left: usize,
    /// Delete records of entries the batch's evictions dropped.
    pub(super) evicted: Vec<Record>,
    pub(super) record_len: u64,
}

impl Engine {
    /// Chunk files to remove, taken.
    pub fn take_unlinks(&mut self) -> Vec<ChunkFile> {
        self.disk
            .as_mut()
            .map(|d| std::mem::take(&mut d.unlinks))
            .unwrap_or_default()
    }

    /// Starts the next disk batch (D3: one at a time) if none runs and
    /// work waits: every queued put's new chunks get disk space (evicting
    /// others, whose entries' delete records join the batch) and a file
    /// each, returned to be written; chunks already on disk are shared.
    pub fn start_batch(&mut self) -> Option<Vec<ChunkWrite>> {
        let d = self.disk.as_mut()?;
        if d.batch.is_some() || d.queue.is_empty() {
            return None;
        }
        let mut jobs = std::mem::take(&mut d.queue);
        let mut writes = Vec::new();
        let mut slots = Vec::new();
        let mut evicted = Vec::new();
        let Engine { disk, chunks, .. } = self;
        let d = disk.as_mut()?;
        d.arc.pin();
        for (j, job) in jobs.iter_mut().enumerate() {
            let Job::Put(p) = job else {
                continue;
            };
            if p.streamed {
                // Written and owned already (`fill_push`).
                p.owned = p.chunks.len();
                continue;
            }
            for (ci, (h, data)) in p.chunks.iter_mut().enumerate() {
                let len = data.as_ref().map_or(0, |b| b.len() as u64);
                match chunks.get(h).map(|c| c.disk) {
                    Some(OnDisk::Stored(_)) => {
                        d.arc.touch(h);
                    }
                    Some(OnDisk::Writing(_)) => {}
                    _ => {
                        if d.arc.request(*h, len, &mut evicted) == Outcome::Refused {
                            p.failed = Some(CommitError::TooLarge {
                                size: p.size,
                                capacity: d.arc.capacity(),
                            });
                            break;
                        }
                        let seq = d.next_seq;
                        d.next_seq += 1;
                        let c = chunks.entry(*h).or_insert_with(|| Chunk {
                            len,
                            mem: None,
                            disk: OnDisk::No,
                            owners: Vec::new(),
                        });
                        c.disk = OnDisk::Writing(seq);
                        slots.push((j, ci));
                        writes.push(ChunkWrite {
                            slot: writes.len(),
                            file: (*h, seq),
                            data: data.take().unwrap_or_default(),
                        });
                    }
                }
                if let Some(c) = chunks.get_mut(h) {
                    add_owner(&mut c.owners, p.id);
                }
                p.owned += 1;
            }
        }
        d.arc.unpin();
        let mut dels = Vec::new();
        self.drop_evicted_disk(evicted, &mut dels);
        let d = self.disk.as_mut()?;
        d.batch = Some(Batch {
            jobs,
            slots,
            writes_left: writes.len(),
            evicted: dels,
            record_len: 0,
        });
        Some(writes)
    }

    /// A chunk file of the batch was written (`ok`) or not; `data` is its
    /// buffer back. `true` once every file of the batch is done.
    pub fn chunk_written(&mut self, slot: usize, ok: bool, data: Vec<u8>) -> bool {
        let Engine {
            disk, chunks, m, ..
        } = self;
        let Some(d) = disk.as_mut() else {
            return false;
        };
        let Some(b) = d.batch.as_mut() else {
            return false;
        };
        let Some(&(j, ci)) = b.slots.get(slot) else {
            return false;
        };
        let Some(Job::Put(p)) = b.jobs.get_mut(j) else {
            return false;
        };
        let Some(chunk) = p.chunks.get_mut(ci) else {
            return false;
        };
        chunk.1 = Some(data);
        let h = chunk.0;
        b.writes_left = b.writes_left.saturating_sub(1);
        if let Some(c) = chunks.get_mut(&h)
            && let OnDisk::Writing(seq) = c.disk
        {
            if ok {
                c.disk = OnDisk::Stored(seq);
                m.chunks_written.inc();
            } else {
                c.disk = OnDisk::No;
                d.arc.remove(&h);
                d.unlinks.push((h, seq));
                m.disk_errors.inc();
                for job in &mut b.jobs {
                    if let Job::Put(p) = job
                        && p.chunks[..p.owned].iter().any(|(x, _)| *x == h)
                    {
                        p.failed.get_or_insert(CommitError::Disk);
                    }
                }
            }
        }
        b.writes_left == 0
    }

    /// The batch's manifest records (its chunk files all written), to
    /// append at the returned offset; `None` if it has none.
    pub fn batch_records(&mut self) -> Option<(u64, Vec<u8>)> {
        let Engine { disk, chunks, .. } = self;
        let d = disk.as_mut()?;
        let b = d.batch.as_mut()?;
        let mut buf = Vec::new();
        for r in &b.evicted {
            r.encode(&mut buf);
        }
        for job in &mut b.jobs {
            match job {
                Job::Put(p) if p.failed.is_none() => {
                    let files = p
                        .chunks
                        .iter()
                        .map(|(h, _)| match chunks.get(h).map(|c| c.disk) {
                            Some(OnDisk::Stored(seq)) => Some((*h, seq)),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>();
                    if files.is_none() {
                        // A chunk it shares lost its file meanwhile.
                        p.failed = Some(CommitError::Disk);
                    }
                    if let Some(chunks) = files {
                        Record::Put(PutRecord {
                            id: p.id,
                            key: p.key.clone(),
                            size: p.size,
                            flags: p.flags,
                            expires_ms: p.expires_ms,
                            chunks,
                        })
                        .encode(&mut buf);
                    }
                }
                Job::Put(_) => {}
                Job::Del { id, key, .. } => Record::Del {
                    id: *id,
                    key: key.clone(),
                }
                .encode(&mut buf),
            }
        }
        b.record_len = buf.len() as u64;
        (!buf.is_empty()).then_some((d.log_end, buf))
    }

    /// The batch's records were appended (`ok`) or not (then none of its
    /// puts is stored): applies it, and returns each request's answer by
    /// ticket.
    pub fn batch_done(&mut self, ok: bool) -> Vec<(u64, Result<(), CommitError>)> {
        let Some(d) = self.disk.as_mut() else {
            return Vec::new();
        };
        let Some(b) = d.batch.take() else {
            return Vec::new();
        };
        if ok {
            d.log_end += b.record_len;
        } else {
            self.m.disk_errors.inc();
        }
        let mut answers = Vec::new();
        for job in b.jobs {
            match job {
                Job::Put(mut p) => {
                    if p.streamed
                        && let Some(d) = &mut self.disk
                    {
                        for (h, _) in &p.chunks {
                            d.arc.unhold(h);
                        }
                    }
                    let mut superseded = false;
                    if let Some(d) = &mut self.disk
                        && let Some((n, latest)) = d.pending.get_mut(&p.key)
                    {
                        superseded = *latest > p.id;
                        *n -= 1;
                        if *n == 0 {
                            d.pending.remove(&p.key);
                        }
                    }
                    let failed = if ok {
                        p.failed.take()
                    } else {
                        Some(CommitError::Disk)
                    };
                    if let Some(e) = failed {
                        let hashes: Vec<ChunkHash> =
                            p.chunks[..p.owned].iter().map(|c| c.0).collect();
                        self.release(p.id, &hashes);
                        answers.push((p.ticket, Err(e)));
                    } else if superseded {
                        let hashes: Vec<ChunkHash> = p.chunks.iter().map(|c| c.0).collect();
                        self.release(p.id, &hashes);
                        answers.push((p.ticket, Ok(())));
                    } else {
                        answers.push((p.ticket, Ok(())));
                        self.apply_put(p);
                    }
                }
                Job::Del { ticket, .. } => {
                    if let Some(t) = ticket {
                        answers.push((t, Ok(())));
                    }
                }
            }
        }
        answers
    }

    /// A put whose chunks and record are on disk becomes the entry (D1),
    /// its chunks also in memory unless it asked otherwise.
    fn apply_put(&mut self, p: PendingPut) {
        self.remove_entry(&p.key);
        let hashes: Vec<ChunkHash> = p.chunks.iter().map(|c| c.0).collect();
        if p.memory {
            let mut evicted = Vec::new();
            for (h, data) in p.chunks {
                let Some(data) = data else {
                    continue;
                };
                let Some(c) = self.chunks.get(&h).filter(|c| c.mem.is_none()) else {
                    continue;
                };
                let len = c.len;
                if self.arc.request(h, len, &mut evicted) == Outcome::Inserted {
                    if let Some(c) = self.chunks.get_mut(&h) {
                        c.mem = Some(data);
                    }
                    self.residency(h, true);
                }
            }
            self.drop_evicted_mem(evicted);
        }
        self.insert_entry(
            &p.key,
            Entry {
                id: p.id,
                size: p.size,
                flags: p.flags,
                chunks: hashes,
                expires: p.expires,
                on_disk: true,
                in_mem: 0,
            },
        );
        self.m.puts.inc();
        self.m.bytes_written.inc_by(p.size);
        self.note_applied(&p.key, p.id);
    }

    /// Queues a put for the disk tier, counting it pending for its key
    /// (what `key_on_disk` sees until its batch is done).
    pub(super) fn queue_put(&mut self, key: &[u8], put: PendingPut) {
        if let Some(d) = &mut self.disk {
            d.pending.entry(key.to_vec()).or_insert((0, 0)).0 += 1;
            d.queue.push(Job::Put(put));
        }
    }

    /// Delete records to queue (outside a batch).
    pub(super) fn queue_dels(&mut self, dels: Vec<Record>) {
        if let Some(d) = &mut self.disk {
            for r in dels {
                if let Record::Del { id, key } = r {
                    d.queue.push(Job::Del {
                        ticket: None,
                        id,
                        key,
                    });
                }
            }
        }
    }
}
