//! What the tiers' evictions and a damaged chunk file take along: E2
//! for memory (demote, or drop the entries), D1 for disk.

use super::batch::Job;
use super::{ChunkHash, Engine, OnDisk};
use crate::disk::Record;

impl Engine {
    /// The memory ARC evicted these: a chunk on disk is demoted (its
    /// entries stay, read from disk from now on); one that is not takes
    /// every entry using it along (E2).
    pub(super) fn drop_evicted_mem(&mut self, evicted: Vec<ChunkHash>) {
        for h in evicted {
            let Some(c) = self.chunks.get_mut(&h) else {
                continue;
            };
            if c.mem.take().is_none() {
                continue;
            }
            self.m.mem_evictions.inc();
            let stored = matches!(c.disk, OnDisk::Stored(_));
            self.residency(h, false);
            if !stored {
                self.drop_users(h, None);
            }
        }
    }

    /// Drops every live entry using chunk `h`; those on disk get a
    /// delete record in `dels` (or queued, without `dels`).
    pub(super) fn drop_users(&mut self, h: ChunkHash, mut dels: Option<&mut Vec<Record>>) {
        let owners: Vec<u64> = self
            .chunks
            .get(&h)
            .map(|c| c.owners.iter().map(|o| o.0).collect())
            .unwrap_or_default();
        for owner in owners {
            let Some(key) = self.keys.get(&owner).cloned() else {
                continue;
            };
            if let Some(e) = self.remove_entry(&key)
                && e.on_disk
            {
                let rec = Record::Del { id: e.id, key };
                match (&mut dels, &mut self.disk) {
                    (Some(out), _) => out.push(rec),
                    (None, Some(d)) => {
                        if let Record::Del { id, key } = rec {
                            d.queue.push(Job::Del {
                                ticket: None,
                                id,
                                key,
                            });
                        }
                    }
                    (None, None) => {}
                }
            }
        }
    }

    /// The disk ARC evicted these: each file goes, with every entry
    /// using it (D1), their delete records into `dels`.
    pub(super) fn drop_evicted_disk(&mut self, evicted: Vec<ChunkHash>, dels: &mut Vec<Record>) {
        for h in evicted {
            let Some(c) = self.chunks.get_mut(&h) else {
                continue;
            };
            let (OnDisk::Stored(seq) | OnDisk::Writing(seq)) = c.disk else {
                continue;
            };
            c.disk = OnDisk::No;
            self.m.disk_evictions.inc();
            if let Some(d) = &mut self.disk {
                d.unlinks.push((h, seq));
            }
            self.drop_users(h, Some(dels));
        }
    }

    /// Chunk `h`'s file is damaged or unreadable: it leaves the disk
    /// tier and every entry using it is dropped (a miss from now on).
    pub(super) fn damaged(&mut self, h: ChunkHash) {
        let Some(c) = self.chunks.get_mut(&h) else {
            return;
        };
        let (OnDisk::Stored(seq) | OnDisk::Writing(seq)) = c.disk else {
            return;
        };
        c.disk = OnDisk::No;
        self.m.corrupt.inc();
        if let Some(d) = &mut self.disk {
            d.arc.remove(&h);
            d.unlinks.push((h, seq));
        }
        self.drop_users(h, None);
    }
}
