//! Free space: which page ids may be written now, under copy-on-write.
//!
//! Pages are never overwritten while the durable checkpoint (the newest
//! manifest on disk) can reach them. Every page id is in exactly one state:
//!
//! - **in use** by the working tree (or the free list being loaded),
//! - **fresh**: allocated since the last checkpoint (also in use, or
//!   written eagerly such as an overflow chain); no durable checkpoint
//!   refers to it,
//! - **reusable**: no durable checkpoint reaches it, so it may be written,
//! - **pending**: the durable checkpoint reaches it but the working tree no
//!   longer does; it becomes reusable only once the next checkpoint (which
//!   does not reach it) is durable.
//!
//! **Invariant F1:** `allocate` hands out only reusable ids or ids past the
//! high-water mark, never a pending one. **Invariant F2:** freeing a fresh
//! id makes it reusable at once (nothing durable refers to it); freeing any
//! other id makes it pending. So a crash at any point reopens the last
//! durable checkpoint with all its pages intact.
//!
//! The checkpoint records `reusable + pending` as the free list of the new
//! manifest, in free-list pages that are themselves taken from the reusable
//! ids (or past the high-water mark). After that manifest is durable every
//! recorded id is reusable and the list pages are pending (the durable
//! manifest refers to them until the next one replaces it).
//!
//! Free-list page body: `next: u64` (0 ends the chain), `count: u32`, then
//! `count` page ids as `u64`.

use crate::page::{PageId, PageSize};
use std::collections::HashSet;

const LIST_HEAD: usize = 8 + 4;

/// The free-space state of one shard's data file (see the module docs).
#[derive(Debug)]
pub struct FreeSpace {
    reusable: Vec<PageId>,
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
    /// The ids the list records.
    pub ids: Vec<PageId>,
}

impl FreeSpace {
    /// The state after opening a checkpoint whose free list recorded `free`
    /// in `list_pages`, with `next` pages in the file.
    pub fn loaded(free: Vec<PageId>, list_pages: Vec<PageId>, next: u64) -> Self {
        FreeSpace {
            reusable: free,
            pending: list_pages,
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

    /// Ids reusable now and pending, for statistics.
    pub fn counts(&self) -> (usize, usize) {
        (self.reusable.len(), self.pending.len())
    }

    /// Every reusable and pending id.
    #[cfg(test)]
    pub fn all_free(&self) -> Vec<PageId> {
        self.reusable.iter().chain(&self.pending).copied().collect()
    }

    /// Picks the pages for the checkpoint's free list and what it records:
    /// every reusable and pending id except those holding the list.
    pub fn record(&mut self, size: PageSize) -> FreeRecord {
        let per_page = ids_per_page(size);
        let mut list_pages = Vec::new();
        loop {
            let recorded = self.reusable.len() + self.pending.len();
            if list_pages.len() >= recorded.div_ceil(per_page) {
                break;
            }
            list_pages.push(self.allocate());
        }
        let mut ids = self.reusable.clone();
        ids.extend_from_slice(&self.pending);
        FreeRecord { list_pages, ids }
    }

    /// The checkpoint that recorded `record` is durable.
    pub fn committed(&mut self, record: FreeRecord) {
        self.reusable = record.ids;
        self.pending = record.list_pages;
        self.fresh.clear();
    }

    /// The checkpoint that recorded `record` failed. Its list pages may
    /// have reached the disk under a manifest that did too, so they stay
    /// unused until the next checkpoint (pending).
    pub fn aborted(&mut self, record: FreeRecord) {
        for id in record.list_pages {
            self.fresh.remove(&id);
            self.pending.push(id);
        }
    }
}

/// Page ids one free-list page holds.
pub fn ids_per_page(size: PageSize) -> usize {
    (size.body_capacity() - LIST_HEAD) / 8
}

/// Encodes one free-list page body into `body`; returns its length.
pub fn encode_list_page(body: &mut [u8], next: Option<PageId>, ids: &[PageId]) -> usize {
    let len = LIST_HEAD + ids.len() * 8;
    let Some(out) = body.get_mut(..len) else {
        return 0;
    };
    out[..8].copy_from_slice(&next.map_or(0, |p| p.0).to_le_bytes());
    out[8..12].copy_from_slice(&(ids.len() as u32).to_le_bytes());
    for (dst, id) in out[LIST_HEAD..].chunks_exact_mut(8).zip(ids) {
        dst.copy_from_slice(&id.0.to_le_bytes());
    }
    len
}

/// Decodes one free-list page body: the next page and the ids, or `None`
/// if the body is not a well-formed list page.
pub fn decode_list_page(body: &[u8]) -> Option<(Option<PageId>, Vec<PageId>)> {
    let next = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let count = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?) as usize;
    let ids = body.get(LIST_HEAD..)?;
    if ids.len() != count.checked_mul(8)? {
        return None;
    }
    let ids = ids
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0; 8];
            a.copy_from_slice(c);
            PageId(u64::from_le_bytes(a))
        })
        .collect();
    Some(((next != 0).then_some(PageId(next)), ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_pages_are_reused_at_once_durable_ones_after_a_checkpoint() {
        let mut s = FreeSpace::loaded(vec![], vec![], 2);
        let a = s.allocate();
        let b = s.allocate();
        assert_eq!((a, b), (PageId(2), PageId(3)));
        s.free(a); // fresh: reusable now
        assert_eq!(s.allocate(), a);
        let rec = s.record(PageSize::MIN);
        assert!(rec.list_pages.is_empty() && rec.ids.is_empty());
        s.committed(rec);
        s.free(b); // durable now: pending
        let c = s.allocate();
        assert_ne!(c, b, "a page the durable checkpoint reaches is not reused");
        let rec = s.record(PageSize::MIN);
        assert_eq!(rec.ids, vec![b]);
        assert_eq!(rec.list_pages.len(), 1);
        let list = rec.list_pages[0];
        s.committed(rec);
        assert_eq!(s.allocate(), b);
        // The list page is pending: the durable manifest refers to it.
        assert_eq!(s.counts(), (0, 1));
        let rec = s.record(PageSize::MIN);
        assert!(rec.ids.contains(&list));
    }

    #[test]
    fn list_pages_come_from_the_reusable_ids() {
        let free: Vec<PageId> = (10..2000).map(PageId).collect();
        let mut s = FreeSpace::loaded(free, vec![], 2000);
        let rec = s.record(PageSize::MIN);
        let per = ids_per_page(PageSize::MIN);
        assert_eq!(rec.list_pages.len(), rec.ids.len().div_ceil(per));
        assert_eq!(rec.list_pages.len() + rec.ids.len(), 1990);
        assert!(rec.list_pages.iter().all(|p| p.0 < 2000));
        assert_eq!(s.next(), 2000);
        s.aborted(rec);
        assert_eq!(s.counts().1, 4);
    }

    #[test]
    fn list_pages_cover_the_ids_at_a_page_boundary() {
        // Taking list pages out of the ids can leave a list page more than
        // the remaining ids need; every one is still part of the chain.
        let per = ids_per_page(PageSize::MIN);
        let free: Vec<PageId> = (10..10 + per as u64 + 2).map(PageId).collect();
        let mut s = FreeSpace::loaded(free, vec![], 10_000);
        let rec = s.record(PageSize::MIN);
        assert_eq!(rec.ids.len(), per);
        assert_eq!(rec.list_pages.len(), 2);
    }

    #[test]
    fn list_pages_round_trip() {
        let mut body = vec![0; PageSize::MIN.body_capacity()];
        let ids = [PageId(4), PageId(9)];
        let n = encode_list_page(&mut body, Some(PageId(7)), &ids);
        assert_eq!(
            decode_list_page(&body[..n]),
            Some((Some(PageId(7)), ids.to_vec()))
        );
        assert_eq!(decode_list_page(&body[..n - 1]), None);
        assert_eq!(decode_list_page(&body[..5]), None);
    }
}
