//! The pager: reads and checks pages through a [`PageStore`], keeps the
//! nodes changed since the last checkpoint in memory, and does
//! copy-on-write.
//!
//! **Invariant C1:** a dirty node's id is fresh (allocated since the last
//! checkpoint), so it can be rewritten in place until the checkpoint.
//! Changing a clean node copies it to a fresh id and frees the old one
//! (pending, `free.rs`), and the caller re-points the parent before its
//! next read (T1, `ops.rs`). So every ancestor of a dirty node is dirty
//! too.
//!
//! **Invariant C2:** a page read from disk passes the page checks (P1), its
//! id is a data page below the file's page count, and it was written no
//! later than the epoch being written now (`durable + 1`): a page from a
//! later epoch belongs to a checkpoint newer than the one opened and is
//! [`TreeError::Stale`], never served. (F1 already keeps the pages of both
//! kept checkpoints from being rewritten; this catches what it cannot,
//! such as a file restored from a mix of copies.)
//!
//! **Reads** of tree pages (leaves and inner nodes) go through the shard's
//! page cache (`cache.rs`, K1-K3): a miss reads the page into a cache
//! frame and checks it there (P1, C2); a hit serves the frame without a
//! read, a buffer or a checksum (C2's epoch test, a comparison, is
//! repeated). Overflow links and free-list pages, each read once per use,
//! bypass it (they would only push tree pages out) through one scratch
//! buffer. **Invariant C3** (K2 in `cache.rs`): every allocation, free and
//! page write here drops the id from the cache first, so the cache never
//! serves an id's older contents; nothing else writes pages.

use super::cache::{CacheStats, IdMap, PageCache};
use super::error::TreeError;
use super::free::{self, FreeRecord, FreeSpace, LoadedList};
use super::node::{self, Found, Node, Value, Want};
use crate::page::{Page, PageBuf, PageError, PageId, PageKind, PageSize};
use crate::pagestore::{PageStore, first_data_page};
use std::borrow::Cow;
use std::cell::RefCell;
use std::io;

/// Pages of one tree: store, free space and dirty nodes.
#[derive(Debug)]
pub struct Pager<S> {
    pub(super) store: S,
    pub(super) size: PageSize,
    pub(super) space: FreeSpace,
    /// Nodes changed since the last checkpoint, by their fresh ids (C1).
    dirty: IdMap<Node>,
    /// Clean tree pages, checked once (C3). Reads take `&self`; a read
    /// that finds it borrowed (none does today) bypasses it.
    cache: RefCell<PageCache>,
    /// The buffer of reads that bypass the cache.
    scratch: RefCell<Vec<u8>>,
    /// The sequence number of the durable checkpoint; pages written now are
    /// for `durable + 1`.
    durable: u64,
    /// Overflow chains no longer referenced whose freeing failed (a link
    /// could not be read): retried at each checkpoint. A crash forgets
    /// them, which leaks their pages in the file but never reuses one
    /// that is referenced.
    pub(super) orphans: Vec<(PageId, u64)>,
}

impl<S: PageStore> Pager<S> {
    /// Opens the pages of checkpoint `durable`, whose free list starts at
    /// `free_head`, in a file of `page_count` pages, with a page cache of
    /// at most `cache_bytes`.
    ///
    /// # Errors
    /// A free-list page that cannot be read or is malformed.
    pub fn open(
        store: S,
        size: PageSize,
        durable: u64,
        free_head: Option<PageId>,
        page_count: u64,
        cache_bytes: usize,
    ) -> Result<Self, TreeError> {
        let mut pager = Pager {
            store,
            size,
            space: FreeSpace::loaded(LoadedList::default(), page_count),
            dirty: IdMap::default(),
            cache: RefCell::new(PageCache::new(size, cache_bytes)),
            scratch: RefCell::new(vec![0; size.bytes()]),
            durable,
            orphans: Vec::new(),
        };
        let list = pager.load_free_list(free_head)?;
        pager.space = FreeSpace::loaded(list, page_count);
        Ok(pager)
    }

    fn epoch(&self) -> u64 {
        self.durable + 1
    }

    /// Refuses a page written for a later epoch (C2).
    fn check_epoch(&self, page: &Page<'_>) -> Result<(), TreeError> {
        if page.epoch > self.epoch() {
            return Err(TreeError::Stale {
                page: page.id,
                epoch: page.epoch,
                durable: self.durable,
            });
        }
        Ok(())
    }

    /// Fills `buf` from page `id`; a file that ends inside the page is a
    /// truncated page (P1).
    fn read_into(&self, id: PageId, buf: &mut [u8]) -> Result<(), TreeError> {
        match self.store.read_page(id, buf) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(PageError::Truncated {
                page: id,
                len: 0,
                expected: self.size.bytes(),
            }
            .into()),
            Err(source) => Err(TreeError::Read { page: id, source }),
        }
    }

    /// Reads page `id` into `buf`, checks it (P1, C2) and hands it to `f`.
    fn read_checked<T>(
        &self,
        id: PageId,
        buf: &mut [u8],
        f: impl FnOnce(Page<'_>) -> Result<T, TreeError>,
    ) -> Result<T, TreeError> {
        self.read_into(id, buf)?;
        let page = Page::open(buf, self.size, id)?;
        self.check_epoch(&page)?;
        f(page)
    }

    /// Page `id`, checked (C2), handed to `f`: from the cache, or read
    /// into it when `cache_it` (a tree page), or read into the scratch
    /// buffer.
    fn with_page<T>(
        &self,
        id: PageId,
        cache_it: bool,
        f: impl FnOnce(Page<'_>) -> Result<T, TreeError>,
    ) -> Result<T, TreeError> {
        let limit = self.space.next();
        if id < first_data_page(self.size) || id.0 >= limit {
            return Err(TreeError::OutOfRange { page: id, limit });
        }
        if let Ok(mut cache) = self.cache.try_borrow_mut() {
            if let Some(page) = cache.get(id) {
                self.check_epoch(&page)?;
                return f(page);
            }
            if cache_it && cache.frames() > 0 {
                let filled = cache.fill(
                    id,
                    |buf| self.read_into(id, buf),
                    |page| self.check_epoch(page),
                )?;
                if let Some(page) = filled {
                    return f(page);
                }
            }
        }
        match self.scratch.try_borrow_mut() {
            Ok(mut buf) => self.read_checked(id, &mut buf, f),
            Err(_) => self.read_checked(id, &mut vec![0; self.size.bytes()], f),
        }
    }

    /// Reads page `id`, which must be of `kind`, and hands its body to `f`.
    pub fn with_body<T>(
        &self,
        id: PageId,
        kind: PageKind,
        f: impl FnOnce(&[u8]) -> Result<T, TreeError>,
    ) -> Result<T, TreeError> {
        let cache_it = matches!(kind, PageKind::Leaf | PageKind::Inner);
        self.with_page(id, cache_it, |page| f(page.expect(kind)?.body))
    }

    /// The cache's counts.
    pub fn cache_stats(&self) -> CacheStats {
        match self.cache.try_borrow() {
            Ok(c) => c.stats(),
            Err(_) => CacheStats::default(),
        }
    }

    /// Bytes of the cache's page arena.
    #[cfg(test)]
    pub fn cache_arena_bytes(&self) -> usize {
        self.cache.borrow().arena_bytes()
    }

    /// An id that may be written now (F1), dropped from the cache (C3).
    pub fn allocate(&mut self) -> PageId {
        let id = self.space.allocate();
        self.cache.get_mut().invalidate(id);
        id
    }

    /// `id` is no longer in use (F2); dropped from the cache (C3).
    pub fn free_page(&mut self, id: PageId) {
        self.cache.get_mut().invalidate(id);
        self.space.free(id);
    }

    /// Writes page `id`, dropping it from the cache first (C3).
    pub fn write_page(&mut self, id: PageId, bytes: &[u8]) -> Result<(), TreeError> {
        self.cache.get_mut().invalidate(id);
        self.store
            .write_page(id, bytes)
            .map_err(|source| TreeError::Write { page: id, source })
    }

    /// A buffer for one page.
    pub fn page_buf(&self) -> PageBuf {
        PageBuf::new(self.size)
    }

    /// The epoch pages written now carry.
    pub fn write_epoch(&self) -> u64 {
        self.epoch()
    }

    /// The node at `id`: the dirty copy, or decoded from disk.
    pub fn node(&self, id: PageId) -> Result<Cow<'_, Node>, TreeError> {
        match self.dirty.get(&id) {
            Some(n) => Ok(Cow::Borrowed(n)),
            None => self
                .with_page(id, true, |p| Node::decode(&p))
                .map(Cow::Owned),
        }
    }

    /// Looks `key` up in the node at `id`: in the dirty copy, or in place
    /// in the page read from disk (no decoding of the whole node).
    pub fn lookup(&self, id: PageId, key: &[u8], want: Want) -> Result<Found, TreeError> {
        match self.dirty.get(&id) {
            Some(Node::Leaf(leaf)) => Ok(Found::Leaf(
                leaf.search(key)
                    .ok()
                    .and_then(|i| leaf.entries.get(i))
                    .map(|e| match (want, &e.value) {
                        (Want::Presence, Value::Inline(_)) => Value::Inline(Vec::new()),
                        (_, v) => v.clone(),
                    }),
            )),
            Some(Node::Inner(inner)) => {
                let child = inner.children.get(inner.child_index(key)).copied();
                child.map(Found::Child).ok_or(TreeError::Malformed {
                    page: id,
                    what: "fewer children than separators",
                })
            }
            None => self.with_page(id, true, |p| node::lookup(&p, key, want)),
        }
    }

    /// The node at `id` for changing: in place if dirty, else copied to a
    /// fresh id with the old one freed (C1). Returns the id it now has.
    pub fn node_mut(&mut self, id: PageId) -> Result<(PageId, &mut Node), TreeError> {
        let mut at = id;
        if !self.dirty.contains_key(&id) {
            let node = self.with_page(id, true, |p| Node::decode(&p))?;
            at = self.allocate();
            self.free_page(id);
            self.dirty.insert(at, node);
        }
        match self.dirty.get_mut(&at) {
            Some(n) => Ok((at, n)),
            None => Err(TreeError::Malformed {
                page: at,
                what: "dirty node missing",
            }),
        }
    }

    /// Stores a new node at a fresh id.
    pub fn insert(&mut self, node: Node) -> PageId {
        let id = self.allocate();
        self.dirty.insert(id, node);
        id
    }

    /// The node at `id` is no longer part of the tree.
    pub fn discard(&mut self, id: PageId) {
        self.dirty.remove(&id);
        self.free_page(id);
    }

    /// Number of dirty nodes.
    pub fn dirty_count(&self) -> usize {
        self.dirty.len()
    }

    /// Retries freeing orphaned chains, writes every dirty node, then the
    /// free list; returns the free list written. Nothing is durable until the store syncs.
    ///
    /// # Errors
    /// A write failed, or a node does not fit its page.
    pub fn write_all(&mut self) -> Result<FreeRecord, TreeError> {
        for (head, len) in std::mem::take(&mut self.orphans) {
            self.free_value(head, len);
        }
        let mut buf = self.page_buf();
        let epoch = self.epoch();
        let cap = self.size.body_capacity();
        // In page order, so the file sees ascending offsets.
        let mut ids: Vec<PageId> = self.dirty.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(node) = self.dirty.get(&id) else {
                continue;
            };
            if node.encoded_len() > cap {
                return Err(TreeError::Malformed {
                    page: id,
                    what: "node larger than a page",
                });
            }
            let bytes = node.encode(&mut buf, id, epoch);
            self.cache.get_mut().invalidate(id);
            self.store
                .write_page(id, bytes)
                .map_err(|source| TreeError::Write { page: id, source })?;
        }
        let record = self.space.record(self.size);
        if let Err(e) = self.write_free_list(&record) {
            self.space.aborted(record);
            return Err(e);
        }
        Ok(record)
    }

    fn write_free_list(&mut self, record: &FreeRecord) -> Result<(), TreeError> {
        let per = free::ids_per_page(self.size);
        let entries = record.entries();
        let mut buf = self.page_buf();
        let epoch = self.epoch();
        // Taking list pages out of the recorded ids can leave one more list
        // page than the ids need; it is written empty, so the chain is whole.
        for (i, &id) in record.list_pages.iter().enumerate() {
            let from = (i * per).min(entries.len());
            let to = (from + per).min(entries.len());
            let next = record.list_pages.get(i + 1).copied();
            let len = free::encode_list_page(buf.body_mut(), next, &entries[from..to]);
            let bytes = buf.seal(id, PageKind::FreeList, epoch, len);
            self.write_page(id, bytes)?;
        }
        Ok(())
    }

    /// Makes everything written durable.
    pub fn sync(&mut self) -> Result<(), TreeError> {
        self.store.sync().map_err(TreeError::Sync)
    }

    /// Checkpoint `seq` recording `record` is durable.
    pub fn committed(&mut self, seq: u64, record: FreeRecord) {
        self.dirty.clear();
        self.space.committed(record);
        self.durable = seq;
    }

    /// The checkpoint recording `record` failed; the dirty nodes stay.
    pub fn aborted(&mut self, record: FreeRecord) {
        self.space.aborted(record);
    }

    /// Reads the free list starting at `head`: the ids it records and the
    /// pages that hold it. Every id must be a distinct data page.
    pub(super) fn load_free_list(&self, head: Option<PageId>) -> Result<LoadedList, TreeError> {
        let mut list = LoadedList::default();
        let mut seen = std::collections::HashSet::new();
        let first = first_data_page(self.size);
        let limit = self.space.next();
        let mut at = head;
        while let Some(id) = at {
            if !seen.insert(id) {
                return Err(TreeError::Malformed {
                    page: id,
                    what: "free list revisits a page",
                });
            }
            list.pages.push(id);
            let (next, entries) = self.with_body(id, PageKind::FreeList, |body| {
                free::decode_list_page(body).ok_or(TreeError::Malformed {
                    page: id,
                    what: "bad free-list page",
                })
            })?;
            for raw in entries {
                let (p, cooling) = free::entry(raw);
                if p < first || p.0 >= limit || !seen.insert(p) {
                    return Err(TreeError::Malformed {
                        page: id,
                        what: "free list holds an invalid or repeated id",
                    });
                }
                if cooling {
                    list.cooling.push(p);
                } else {
                    list.free.push(p);
                }
            }
            at = next;
        }
        Ok(list)
    }
}
