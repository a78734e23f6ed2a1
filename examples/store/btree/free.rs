//! Free space: which page ids may be written now, under copy-on-write.
//!
//! The manifest keeps two checkpoints, the durable one (the newest) and the
//! one before it (in the other slot), and open falls back to the older one
//! if the newer slot is damaged. So pages are never overwritten while
//! either of them can reach them. Every page id is in exactly one state:
//!
//! - **in use** by the working tree (or the free list being loaded),
//! - **fresh**: allocated since the last checkpoint (also in use, or
//!   written eagerly such as an overflow chain); no checkpoint refers to it,
//! - **reusable**: neither kept checkpoint reaches it, so it may be written,
//! - **cooling**: only the older kept checkpoint reaches it; reusable once
//!   the next checkpoint is durable (its manifest replaces the older one),
//! - **pending**: the durable checkpoint reaches it but the working tree no
//!   longer does; cooling once the next checkpoint is durable.
//!
//! **Invariant F1:** `allocate` hands out only reusable ids or ids past the
//! high-water mark, never a cooling or pending one. **Invariant F2:**
//! freeing a fresh id makes it reusable at once (no checkpoint refers to
//! it); freeing any other id makes it pending. So a crash at any point
//! reopens the last durable checkpoint with all its pages intact, and
//! falling back to the one before it finds its pages intact too.
//!
//! The checkpoint records the state that holds once it is durable: as free,
//! the reusable and cooling ids; as cooling, the pending ones. The list
//! lives in free-list pages taken from the reusable ids (or past the
//! high-water mark); once the manifest is durable those pages are pending
//! (that manifest refers to them until two more checkpoints replace it).
//!
//! Free-list page body: `next: u64` (0 ends the chain), `count: u32`, then
//! `count` entries as `u64`: a page id, with bit 63 set for a cooling one.

use crate::page::{PageId, PageSize};
use std::collections::HashSet;

const LIST_HEAD: usize = 8 + 4;
/// The flag of a cooling id in a free-list entry.
const COOLING: u64 = 1 << 63;

/// The free-space state of one shard's data file (see the module docs).
#[derive(Debug)]
pub struct FreeSpace {
    reusable: Vec<PageId>,
    cooling: Vec<PageId>,
    pending: Vec<PageId>,
    fresh: HashSet<PageId>,
    /// The first page id never allocated: the file's page count.
    next: u64,
}

/// The free list a checkpoint is about to record.
#[derive(Debug)]
pub struct FreeRecord {
    /// The pages that hold the list, in chain order.
    pub list_pages: Vec<PageId>,
    /// Reusable once the checkpoint is durable.
    free: Vec<PageId>,
    /// Cooling once the checkpoint is durable.
    cooling: Vec<PageId>,
}

impl FreeRecord {
    /// The list's entries as stored: free ids, then flagged cooling ids.
    pub fn entries(&self) -> Vec<u64> {
        let free = self.free.iter().map(|p| p.0);
        free.chain(self.cooling.iter().map(|p| p.0 | COOLING))
            .collect()
    }
}

/// A free list as read from disk.
#[derive(Debug, Default)]
pub struct LoadedList {
    pub free: Vec<PageId>,
    pub cooling: Vec<PageId>,
    /// The pages that hold it.
    pub pages: Vec<PageId>,
}

/// Splits a stored entry into its id and whether it is cooling.
pub fn entry(raw: u64) -> (PageId, bool) {
    (PageId(raw & !COOLING), raw & COOLING != 0)
}

impl FreeSpace {
    /// The state after opening a checkpoint whose free list is `list`, with
    /// `next` pages in the file.
    pub fn loaded(list: LoadedList, next: u64) -> Self {
        FreeSpace {
            reusable: list.free,
            cooling: list.cooling,
            pending: list.pages,
            fresh: HashSet::new(),
            next,
        }
    }

    /// An id that may be written now (F1).
    pub fn allocate(&mut self) -> PageId {
        let id = self.reusable.pop().unwrap_or_else(|| {
            self.next += 1;
            PageId(self.next - 1)
        });
        self.fresh.insert(id);
        id
    }

    /// `id` is no longer in use (F2).
    pub fn free(&mut self, id: PageId) {
        if self.fresh.remove(&id) {
            self.reusable.push(id);
        } else {
            self.pending.push(id);
        }
    }

    /// The page count of the file (the high-water mark).
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Ids reusable now, cooling and pending, for statistics.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.reusable.len(), self.cooling.len(), self.pending.len())
    }

    /// Every reusable, cooling and pending id.
    #[cfg(test)]
    pub fn all_free(&self) -> Vec<PageId> {
        let all = self.reusable.iter().chain(&self.cooling);
        all.chain(&self.pending).copied().collect()
    }

    /// Picks the pages for the checkpoint's free list and what it records
    /// (every reusable, cooling and pending id except those holding it).
    pub fn record(&mut self, size: PageSize) -> FreeRecord {
        let per_page = ids_per_page(size);
        let mut list_pages = Vec::new();
        loop {
            let recorded = self.reusable.len() + self.cooling.len() + self.pending.len();
            if list_pages.len() >= recorded.div_ceil(per_page) {
                break;
            }
            list_pages.push(self.allocate());
        }
        let mut free = self.reusable.clone();
        free.extend_from_slice(&self.cooling);
        FreeRecord {
            list_pages,
            free,
            cooling: self.pending.clone(),
        }
    }

    /// The checkpoint that recorded `record` is durable.
    pub fn committed(&mut self, record: FreeRecord) {
        self.reusable = record.free;
        self.cooling = record.cooling;
        self.pending = record.list_pages;
        self.fresh.clear();
    }

    /// The checkpoint that recorded `record` failed. Its list pages may
    /// have reached the disk under a manifest that did too, so they are
    /// treated as that manifest's (pending).
    pub fn aborted(&mut self, record: FreeRecord) {
        for id in record.list_pages {
            self.fresh.remove(&id);
            self.pending.push(id);
        }
    }
}

/// Entries one free-list page holds.
pub fn ids_per_page(size: PageSize) -> usize {
    (size.body_capacity() - LIST_HEAD) / 8
}

/// Encodes one free-list page body into `body`; returns its length.
pub fn encode_list_page(body: &mut [u8], next: Option<PageId>, entries: &[u64]) -> usize {
    let len = LIST_HEAD + entries.len() * 8;
    let Some(out) = body.get_mut(..len) else {
        return 0;
    };
    out[..8].copy_from_slice(&next.map_or(0, |p| p.0).to_le_bytes());
    out[8..12].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    for (dst, e) in out[LIST_HEAD..].chunks_exact_mut(8).zip(entries) {
        dst.copy_from_slice(&e.to_le_bytes());
    }
    len
}

/// Decodes one free-list page body: the next page and the raw entries, or
/// `None` if the body is not a well-formed list page.
pub fn decode_list_page(body: &[u8]) -> Option<(Option<PageId>, Vec<u64>)> {
    let next = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let count = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?) as usize;
    let raw = body.get(LIST_HEAD..)?;
    if raw.len() != count.checked_mul(8)? {
        return None;
    }
    let entries = raw
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect();
    Some(((next != 0).then_some(PageId(next)), entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty(next: u64) -> FreeSpace {
        FreeSpace::loaded(LoadedList::default(), next)
    }

    #[test]
    fn freed_pages_wait_until_both_kept_checkpoints_lose_them() {
        let mut s = empty(2);
        let a = s.allocate();
        let b = s.allocate();
        assert_eq!((a, b), (PageId(2), PageId(3)));
        s.free(a); // fresh: reusable now
        assert_eq!(s.allocate(), a);
        let rec = s.record(PageSize::MIN);
        assert!(rec.list_pages.is_empty() && rec.entries().is_empty());
        s.committed(rec);
        s.free(b); // the durable checkpoint reaches it: pending
        assert_ne!(s.allocate(), b);
        let rec = s.record(PageSize::MIN);
        assert_eq!(rec.entries(), vec![b.0 | COOLING]);
        let list = rec.list_pages[0];
        s.committed(rec);
        // Cooling: the older kept checkpoint still reaches it.
        assert_eq!(s.counts(), (0, 1, 1));
        let c = s.allocate();
        assert_ne!(c, b);
        let rec = s.record(PageSize::MIN);
        s.committed(rec);
        // Two checkpoints on: reusable.
        assert_eq!(s.allocate(), b);
        // The first list page went the same way: cooling now.
        assert!(s.cooling.contains(&list));
    }

    #[test]
    fn list_pages_come_from_the_reusable_ids() {
        let free: Vec<PageId> = (10..2000).map(PageId).collect();
        let mut s = FreeSpace::loaded(
            LoadedList {
                free,
                ..LoadedList::default()
            },
            2000,
        );
        let rec = s.record(PageSize::MIN);
        let per = ids_per_page(PageSize::MIN);
        assert_eq!(rec.list_pages.len(), rec.entries().len().div_ceil(per));
        assert_eq!(rec.list_pages.len() + rec.entries().len(), 1990);
        assert!(rec.list_pages.iter().all(|p| p.0 < 2000));
        assert_eq!(s.next(), 2000);
        s.aborted(rec);
        assert_eq!(s.counts().2, 4);
    }

    #[test]
    fn list_pages_cover_the_ids_at_a_page_boundary() {
        // Taking list pages out of the ids can leave a list page more than
        // the remaining ids need; every one is still part of the chain.
        let per = ids_per_page(PageSize::MIN);
        let free: Vec<PageId> = (10..10 + per as u64 + 2).map(PageId).collect();
        let list = LoadedList {
            free,
            ..LoadedList::default()
        };
        let mut s = FreeSpace::loaded(list, 10_000);
        let rec = s.record(PageSize::MIN);
        assert_eq!(rec.entries().len(), per);
        assert_eq!(rec.list_pages.len(), 2);
    }

    #[test]
    fn list_pages_round_trip() {
        let mut body = vec![0; PageSize::MIN.body_capacity()];
        let entries = [4, 9 | COOLING];
        let n = encode_list_page(&mut body, Some(PageId(7)), &entries);
        assert_eq!(
            decode_list_page(&body[..n]),
            Some((Some(PageId(7)), entries.to_vec()))
        );
        assert_eq!(entry(9 | COOLING), (PageId(9), true));
        assert_eq!(entry(4), (PageId(4), false));
        assert_eq!(decode_list_page(&body[..n - 1]), None);
        assert_eq!(decode_list_page(&body[..5]), None);
    }
}
