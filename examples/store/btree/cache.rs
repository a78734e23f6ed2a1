//! The page cache: a bounded set of one shard's clean tree pages, held in
//! memory once verified.
//!
//! Frames are page-sized slots of one arena of up to `cache_bytes /
//! page_size` pages; the arena grows (doubling, never past that bound) as
//! frames are first used, and if the memory cannot be had the page is
//! read uncached instead of failing. A
//! miss reads the page straight into the frame it will live in and checks
//! it there (P1 and C2, `pager.rs`); a hit hands out the frame's bytes as
//! a [`Page`] without a read, a buffer or a checksum. Which frame a new
//! page takes is the eviction [`Policy`]'s choice; the cache runs
//! [`S3Fifo`], chosen by measurement (the `policy_hit_rates` test below,
//! figures in its comment): it keeps a B+tree's hot inner pages and leaves
//! through scans that touch each leaf once, where CLOCK and LRU let a scan
//! flush them.
//!
//! **Invariant K1:** a page is served from the cache only if it passed
//! every check when it entered, and its frame holds exactly the bytes the
//! file held for that id then. **K2:** the pager drops an id from the
//! cache whenever it allocates, frees or writes it (`pager.rs`), which
//! covers every way the file's page can change under this process; so a
//! freed id that is reused is never served with its older contents.
//! **K3:** memory is bounded: at most `frames` pages are resident, the
//! arena never exceeds `frames` pages, and the index, the policy and its
//! ghost list hold at most a few words per frame.

use super::error::TreeError;
use crate::page::{HEADER_LEN, Page, PageId, PageKind, PageSize};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for page ids (a multiply and a rotate): ids are small,
/// trusted integers, so `SipHash`'s flood resistance buys nothing here.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A `HashMap` keyed by page ids.
pub type IdMap<V> = HashMap<PageId, V, BuildHasherDefault<IdHasher>>;

fn id_map<V>(capacity: usize) -> IdMap<V> {
    HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default())
}

/// An eviction policy over a fixed number of frames. The [`Index`] tells
/// it which frames hold a page; it picks the victim when all do.
pub trait Policy: fmt::Debug {
    /// A policy for `frames` frames, all empty.
    fn new(frames: usize) -> Self
    where
        Self: Sized;
    /// The page in `frame` was read again.
    fn hit(&mut self, frame: u32);
    /// `frame`, empty, now holds page `id`.
    fn fill(&mut self, frame: u32, id: PageId);
    /// Every frame is full: the one whose page goes. `None` only if the
    /// policy tracks no page (no frames).
    fn evict(&mut self) -> Option<u32>;
    /// The page in `frame` was dropped (invalidated); the frame is empty.
    fn vacate(&mut self, frame: u32);
}

/// Which frame holds which page, and the policy that picks victims.
#[derive(Debug)]
pub struct Index<P> {
    map: IdMap<u32>,
    ids: Vec<Option<PageId>>,
    empty: Vec<u32>,
    policy: P,
}

impl<P: Policy> Index<P> {
    /// An empty index of `frames` frames.
    pub fn new(frames: usize) -> Self {
        let frames = frames.min(u32::MAX as usize);
        Index {
            map: id_map(frames),
            ids: vec![None; frames],
            empty: (0..frames as u32).rev().collect(),
            policy: P::new(frames),
        }
    }

    /// The frame holding `id`, counted as a hit.
    pub fn get(&mut self, id: PageId) -> Option<u32> {
        let frame = *self.map.get(&id)?;
        self.policy.hit(frame);
        Some(frame)
    }

    /// A frame for `id` (an empty one, or the policy's victim) and the page
    /// evicted from it. `None` when there are no frames.
    pub fn insert(&mut self, id: PageId) -> Option<(u32, Option<PageId>)> {
        self.remove(id);
        let (frame, evicted) = match self.empty.pop() {
            Some(f) => (f, None),
            None => {
                let f = self.policy.evict()?;
                let old = self.ids.get_mut(f as usize)?.take();
                if let Some(old) = old {
                    self.map.remove(&old);
                }
                (f, old)
            }
        };
        *self.ids.get_mut(frame as usize)? = Some(id);
        self.map.insert(id, frame);
        self.policy.fill(frame, id);
        Some((frame, evicted))
    }

    /// Drops `id`; returns whether it was cached.
    pub fn remove(&mut self, id: PageId) -> bool {
        let Some(frame) = self.map.remove(&id) else {
            return false;
        };
        if let Some(slot) = self.ids.get_mut(frame as usize) {
            *slot = None;
        }
        self.policy.vacate(frame);
        self.empty.push(frame);
        true
    }

    /// Pages held.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// CLOCK (second chance): a hand sweeps the frames and evicts the first
/// not read since it last passed. Measured against, not used.
#[cfg(test)]
#[derive(Debug)]
pub struct Clock {
    used: Vec<bool>,
    referenced: Vec<bool>,
    hand: usize,
}

#[cfg(test)]
impl Policy for Clock {
    fn new(frames: usize) -> Self {
        Clock {
            used: vec![false; frames],
            referenced: vec![false; frames],
            hand: 0,
        }
    }

    fn hit(&mut self, frame: u32) {
        if let Some(r) = self.referenced.get_mut(frame as usize) {
            *r = true;
        }
    }

    fn fill(&mut self, frame: u32, _: PageId) {
        if let Some(u) = self.used.get_mut(frame as usize) {
            *u = true;
        }
        if let Some(r) = self.referenced.get_mut(frame as usize) {
            *r = false;
        }
    }

    fn evict(&mut self) -> Option<u32> {
        let n = self.used.len();
        // Two sweeps clear every reference bit, so a victim is found.
        for _ in 0..2 * n + 1 {
            let f = self.hand;
            self.hand = (self.hand + 1) % n;
            if !self.used[f] {
                continue;
            }
            if std::mem::take(&mut self.referenced[f]) {
                continue;
            }
            self.used[f] = false;
            return Some(f as u32);
        }
        None
    }

    fn vacate(&mut self, frame: u32) {
        if let Some(u) = self.used.get_mut(frame as usize) {
            *u = false;
        }
    }
}

#[cfg(test)]
const NIL: u32 = u32::MAX;

/// Least recently used, as a doubly linked list over the frames: the
/// reference the measurement compares against.
#[cfg(test)]
#[derive(Debug)]
pub struct Lru {
    prev: Vec<u32>,
    next: Vec<u32>,
    linked: Vec<bool>,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next victim.
    tail: u32,
}

#[cfg(test)]
impl Lru {
    fn unlink(&mut self, f: u32) {
        let i = f as usize;
        if !self.linked.get(i).copied().unwrap_or(false) {
            return;
        }
        let (p, n) = (self.prev[i], self.next[i]);
        match p {
            NIL => self.head = n,
            p => self.next[p as usize] = n,
        }
        match n {
            NIL => self.tail = p,
            n => self.prev[n as usize] = p,
        }
        self.linked[i] = false;
    }

    fn push_front(&mut self, f: u32) {
        let i = f as usize;
        if i >= self.linked.len() {
            return;
        }
        self.prev[i] = NIL;
        self.next[i] = self.head;
        match self.head {
            NIL => self.tail = f,
            h => self.prev[h as usize] = f,
        }
        self.head = f;
        self.linked[i] = true;
    }
}

#[cfg(test)]
impl Policy for Lru {
    fn new(frames: usize) -> Self {
        Lru {
            prev: vec![NIL; frames],
            next: vec![NIL; frames],
            linked: vec![false; frames],
            head: NIL,
            tail: NIL,
        }
    }

    fn hit(&mut self, frame: u32) {
        self.unlink(frame);
        self.push_front(frame);
    }

    fn fill(&mut self, frame: u32, _: PageId) {
        self.unlink(frame);
        self.push_front(frame);
    }

    fn evict(&mut self) -> Option<u32> {
        let f = self.tail;
        if f == NIL {
            return None;
        }
        self.unlink(f);
        Some(f)
    }

    fn vacate(&mut self, frame: u32) {
        self.unlink(frame);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    None,
    Small,
    Main,
}

/// S3-FIFO (Yang et al., SOSP 2023): a small FIFO (a tenth of the frames)
/// takes new pages; a page read again while there moves to the main FIFO,
/// one that was not leaves and its id goes to a ghost list. A page whose
/// id is in the ghost list enters main directly. Main is a FIFO with up
/// to three second chances (a counter of reads, decremented as the page
/// passes the head). A scan's pages, each read once, pass through the
/// small queue and never displace main.
///
/// Queues hold `(frame, generation)`; a vacated or moved frame bumps its
/// generation, so stale entries are skipped when they reach the head
/// (and compacted if they pile up).
#[derive(Debug)]
pub struct S3Fifo {
    small: VecDeque<(u32, u32)>,
    main: VecDeque<(u32, u32)>,
    queue: Vec<Queue>,
    generation: Vec<u32>,
    freq: Vec<u8>,
    id: Vec<PageId>,
    small_len: usize,
    main_len: usize,
    small_target: usize,
    ghost: IdMap<u64>,
    ghost_order: VecDeque<(PageId, u64)>,
    ghost_cap: usize,
    ghost_seq: u64,
}

impl S3Fifo {
    fn live(&self, (f, g): (u32, u32), q: Queue) -> bool {
        let i = f as usize;
        self.queue.get(i) == Some(&q) && self.generation.get(i) == Some(&g)
    }

    fn push(&mut self, f: u32, q: Queue) {
        let i = f as usize;
        self.generation[i] = self.generation[i].wrapping_add(1);
        self.queue[i] = q;
        let entry = (f, self.generation[i]);
        let limit = 2 * self.queue.len() + 16;
        match q {
            Queue::Small => {
                self.small_len += 1;
                self.small.push_back(entry);
                if self.small.len() > limit {
                    let small = std::mem::take(&mut self.small);
                    self.small = small
                        .into_iter()
                        .filter(|&e| self.live(e, Queue::Small))
                        .collect();
                }
            }
            Queue::Main => {
                self.main_len += 1;
                self.main.push_back(entry);
                if self.main.len() > limit {
                    let main = std::mem::take(&mut self.main);
                    self.main = main
                        .into_iter()
                        .filter(|&e| self.live(e, Queue::Main))
                        .collect();
                }
            }
            Queue::None => {}
        }
    }

    /// Takes `f` out of its queue (its entry goes stale).
    fn unqueue(&mut self, f: u32) {
        let i = f as usize;
        match self.queue.get(i) {
            Some(Queue::Small) => self.small_len -= 1,
            Some(Queue::Main) => self.main_len -= 1,
            _ => return,
        }
        self.queue[i] = Queue::None;
        self.generation[i] = self.generation[i].wrapping_add(1);
    }

    fn remember(&mut self, id: PageId) {
        if self.ghost_cap == 0 {
            return;
        }
        self.ghost_seq += 1;
        self.ghost.insert(id, self.ghost_seq);
        self.ghost_order.push_back((id, self.ghost_seq));
        while self.ghost.len() > self.ghost_cap || self.ghost_order.len() > 2 * self.ghost_cap {
            let Some((old, seq)) = self.ghost_order.pop_front() else {
                break;
            };
            if self.ghost.get(&old) == Some(&seq) {
                self.ghost.remove(&old);
            }
        }
    }
}

impl Policy for S3Fifo {
    fn new(frames: usize) -> Self {
        let small_target = (frames / 10).max(1);
        let ghost_cap = frames.saturating_sub(small_target).max(1);
        S3Fifo {
            small: VecDeque::with_capacity(frames),
            main: VecDeque::with_capacity(frames),
            queue: vec![Queue::None; frames],
            generation: vec![0; frames],
            freq: vec![0; frames],
            id: vec![PageId(0); frames],
            small_len: 0,
            main_len: 0,
            small_target,
            ghost: id_map(ghost_cap + 1),
            ghost_order: VecDeque::with_capacity(2 * ghost_cap + 1),
            ghost_cap,
            ghost_seq: 0,
        }
    }

    fn hit(&mut self, frame: u32) {
        if let Some(f) = self.freq.get_mut(frame as usize) {
            *f = (*f + 1).min(3);
        }
    }

    fn fill(&mut self, frame: u32, id: PageId) {
        let i = frame as usize;
        if i >= self.queue.len() {
            return;
        }
        self.unqueue(frame);
        self.freq[i] = 0;
        self.id[i] = id;
        let q = if self.ghost.remove(&id).is_some() {
            Queue::Main
        } else {
            Queue::Small
        };
        self.push(frame, q);
    }

    fn evict(&mut self) -> Option<u32> {
        // Every pass moves a page to main, spends a second chance (at most
        // three per page) or drops a stale entry: bounded.
        let budget = 8 * self.queue.len() + self.small.len() + self.main.len() + 16;
        for _ in 0..budget {
            if self.small_len > self.small_target || self.main_len == 0 {
                let entry = self.small.pop_front()?;
                if !self.live(entry, Queue::Small) {
                    continue;
                }
                let f = entry.0;
                self.unqueue(f);
                if self.freq[f as usize] > 0 {
                    self.freq[f as usize] = 0;
                    self.push(f, Queue::Main);
                } else {
                    self.remember(self.id[f as usize]);
                    return Some(f);
                }
            } else {
                let entry = self.main.pop_front()?;
                if !self.live(entry, Queue::Main) {
                    continue;
                }
                let f = entry.0;
                self.unqueue(f);
                if self.freq[f as usize] > 0 {
                    self.freq[f as usize] -= 1;
                    self.push(f, Queue::Main);
                } else {
                    return Some(f);
                }
            }
        }
        None
    }

    fn vacate(&mut self, frame: u32) {
        self.unqueue(frame);
    }
}

/// The header fields a page had when it was checked.
#[derive(Clone, Copy, Debug)]
struct Meta {
    kind: PageKind,
    epoch: u64,
    body_len: u32,
}

/// Counts of the cache's work, for the demo and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Pages the cache can hold.
    pub frames: usize,
    /// Pages it holds now.
    pub resident: usize,
    pub hits: u64,
    /// Pages read from the store into a frame.
    pub misses: u64,
    pub evictions: u64,
    /// Pages dropped because their id was allocated, written or freed.
    pub invalidations: u64,
}

/// The bounded cache of verified pages (K1-K3).
pub struct PageCache {
    size: PageSize,
    index: Index<S3Fifo>,
    meta: Vec<Meta>,
    arena: Vec<u8>,
    stats: CacheStats,
}

impl fmt::Debug for PageCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageCache")
            .field("size", &self.size)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PageCache {
    /// A cache of at most `bytes` of pages of `size` (fewer than one page:
    /// no cache, every read goes to the store).
    pub fn new(size: PageSize, bytes: usize) -> Self {
        let frames = (bytes / size.bytes()).min(u32::MAX as usize - 1);
        PageCache {
            size,
            index: Index::new(frames),
            meta: vec![
                Meta {
                    kind: PageKind::Leaf,
                    epoch: 0,
                    body_len: 0,
                };
                frames
            ],
            arena: Vec::new(),
            stats: CacheStats {
                frames,
                ..CacheStats::default()
            },
        }
    }

    /// Pages it can hold.
    pub fn frames(&self) -> usize {
        self.stats.frames
    }

    /// Counts so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            resident: self.index.len(),
            ..self.stats
        }
    }

    /// Bytes of the page arena (at most `frames` pages, K3).
    #[cfg(test)]
    pub fn arena_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Grows the arena to hold `frame` (doubling, up to the bound);
    /// `false` if the memory cannot be had.
    fn ensure(&mut self, frame: u32) -> bool {
        let page = self.size.bytes();
        let need = (frame as usize + 1) * page;
        let len = self.arena.len();
        if len >= need {
            return true;
        }
        let bound = self.stats.frames * page;
        let target = need.max((2 * len).min(bound));
        if self.arena.try_reserve_exact(target - len).is_err() {
            return false;
        }
        self.arena.resize(target, 0);
        true
    }

    fn frame_range(&self, frame: u32) -> std::ops::Range<usize> {
        let start = frame as usize * self.size.bytes();
        start..start + self.size.bytes()
    }

    fn page(&self, frame: u32, id: PageId) -> Option<Page<'_>> {
        let m = self.meta.get(frame as usize)?;
        let start = self.frame_range(frame).start + HEADER_LEN;
        let body = self.arena.get(start..start + m.body_len as usize)?;
        Some(Page {
            id,
            kind: m.kind,
            epoch: m.epoch,
            body,
        })
    }

    /// The cached page `id`, if held (K1: checked when it entered).
    pub fn get(&mut self, id: PageId) -> Option<Page<'_>> {
        let frame = self.index.get(id)?;
        self.stats.hits += 1;
        self.page(frame, id)
    }

    /// Reads page `id` into a frame with `read`, checks it with `check`
    /// (P1 first, then the caller's C2) and keeps it; a page that fails
    /// either leaves nothing behind. `Ok(None)` when there are no frames.
    ///
    /// # Errors
    /// What `read` or a check returned.
    pub fn fill(
        &mut self,
        id: PageId,
        read: impl FnOnce(&mut [u8]) -> Result<(), TreeError>,
        check: impl FnOnce(&Page<'_>) -> Result<(), TreeError>,
    ) -> Result<Option<Page<'_>>, TreeError> {
        let Some((frame, evicted)) = self.index.insert(id) else {
            return Ok(None);
        };
        if !self.ensure(frame) {
            self.index.remove(id);
            return Ok(None);
        }
        self.stats.evictions += u64::from(evicted.is_some());
        self.stats.misses += 1;
        let range = self.frame_range(frame);
        let checked = match self.arena.get_mut(range) {
            Some(buf) => read(buf).and_then(|()| {
                let page = Page::open(buf, self.size, id)?;
                check(&page)?;
                Ok(Meta {
                    kind: page.kind,
                    epoch: page.epoch,
                    body_len: page.body.len() as u32,
                })
            }),
            None => Err(TreeError::Malformed {
                page: id,
                what: "cache frame out of range",
            }),
        };
        match checked {
            Ok(meta) => {
                if let Some(m) = self.meta.get_mut(frame as usize) {
                    *m = meta;
                }
                Ok(self.page(frame, id))
            }
            Err(e) => {
                self.index.remove(id);
                Err(e)
            }
        }
    }

    /// Drops `id` (K2).
    pub fn invalidate(&mut self, id: PageId) {
        if self.index.remove(id) {
            self.stats.invalidations += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Ranks 0..n drawn with probability proportional to 1 / (rank + 1)^s.
    struct Zipf(Vec<f64>);

    impl Zipf {
        fn new(n: usize, s: f64) -> Self {
            let mut acc = 0.0;
            let mut cdf: Vec<f64> = (0..n)
                .map(|r| {
                    acc += 1.0 / ((r + 1) as f64).powf(s);
                    acc
                })
                .collect();
            for c in &mut cdf {
                *c /= acc;
            }
            Zipf(cdf)
        }

        fn draw(&self, rng: &mut Rng) -> usize {
            let u = rng.unit();
            self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
        }
    }

    /// Page accesses of point lookups in a three-level tree: the root, one
    /// of `leaves / 100` inner pages and a leaf, the leaf Zipf(0.9)
    /// distributed (hot leaves scattered over the key space); and, when
    /// `scan_every` is set, a range scan over `scan_leaves` consecutive
    /// leaves from a random start every `scan_every` lookups. Each access
    /// is `(page, whether a point lookup made it)`.
    fn tree_trace(
        leaves: u64,
        lookups: usize,
        scan_every: usize,
        scan_leaves: u64,
    ) -> Vec<(u64, bool)> {
        let mut rng = Rng(0x5eed);
        let zipf = Zipf::new(leaves as usize, 0.9);
        let inners = leaves.div_ceil(100);
        let leaf_id = |l: u64| 1 + inners + l;
        let inner_id = |l: u64| 1 + l / 100;
        let mut trace = Vec::with_capacity(lookups * 4);
        for n in 0..lookups {
            let l = (zipf.draw(&mut rng) as u64).wrapping_mul(2_654_435_761) % leaves;
            trace.extend([(0, true), (inner_id(l), true), (leaf_id(l), true)]);
            if scan_every > 0 && n % scan_every == scan_every - 1 {
                let from = rng.next() % (leaves - scan_leaves);
                trace.extend([(0, false), (inner_id(from), false)]);
                for l in from..from + scan_leaves {
                    if l % 100 == 0 {
                        trace.push((inner_id(l), false));
                    }
                    trace.push((leaf_id(l), false));
                }
            }
        }
        trace
    }

    /// The hit rates of the point lookups' accesses and of all accesses.
    fn hit_rate<P: Policy>(frames: usize, trace: &[(u64, bool)]) -> (f64, f64) {
        let mut index = Index::<P>::new(frames);
        let (mut hits, mut lookups, mut lookup_hits) = (0, 0, 0);
        for &(id, lookup) in trace {
            let hit = index.get(PageId(id)).is_some();
            if !hit {
                index.insert(PageId(id));
            }
            hits += u64::from(hit);
            lookups += u64::from(lookup);
            lookup_hits += u64::from(hit && lookup);
            assert!(index.len() <= frames);
        }
        (
            lookup_hits as f64 / lookups as f64,
            hits as f64 / trace.len() as f64,
        )
    }

    /// The measurement behind the choice of S3-FIFO (`cargo test --example
    /// store policy_hit_rates -- --nocapture` prints it). A tree of 20,000
    /// leaves, a cache of 2,000 frames (10%), 200,000 lookups. Recorded:
    /// the hit rate of the point lookups' page accesses (all accesses in
    /// brackets; a scan's leaves, read once, can only miss):
    ///
    /// ```text
    /// workload                         LRU            CLOCK          S3-FIFO
    /// zipf lookups                     0.852 (0.852)  0.855 (0.855)  0.875 (0.875)
    /// zipf + a 2,000-leaf scan / 200   0.581 (0.172)  0.669 (0.191)  0.827 (0.259)
    /// zipf + a 5,000-leaf scan / 1000  0.734 (0.287)  0.735 (0.289)  0.856 (0.380)
    /// ```
    ///
    /// On the plain Zipf trace the three are close; with scans (each at
    /// least a cache's worth of leaves read once) LRU and CLOCK let every
    /// scan flush the hot leaves while S3-FIFO keeps them.
    #[test]
    fn policy_hit_rates() {
        let frames = 2000;
        let workloads = [
            ("zipf lookups", tree_trace(20_000, 200_000, 0, 0)),
            (
                "zipf + a 2,000-leaf scan / 200",
                tree_trace(20_000, 200_000, 200, 2000),
            ),
            (
                "zipf + a 5,000-leaf scan / 1000",
                tree_trace(20_000, 200_000, 1000, 5000),
            ),
        ];
        println!(
            "{:32} {:>13} {:>13} {:>13}",
            "workload", "LRU", "CLOCK", "S3-FIFO"
        );
        for (name, trace) in &workloads {
            let lru = hit_rate::<Lru>(frames, trace);
            let clock = hit_rate::<Clock>(frames, trace);
            let s3 = hit_rate::<S3Fifo>(frames, trace);
            let show = |(l, a): (f64, f64)| format!("{l:.3} ({a:.3})");
            println!(
                "{name:32} {:>13} {:>13} {:>13}",
                show(lru),
                show(clock),
                show(s3)
            );
            // The choice stands only while S3-FIFO is no worse than the
            // others on lookups, and clearly better under scans.
            let best = lru.0.max(clock.0);
            assert!(s3.0 >= best - 0.01, "{name}: {s3:?} vs {lru:?}/{clock:?}");
            if name.contains("scan") {
                assert!(s3.0 > best + 0.05, "{name}: {s3:?} vs {lru:?}/{clock:?}");
            }
        }
    }

    /// Every policy against a model of what is cached: random inserts,
    /// hits and invalidations never hold more than the frames, never lose
    /// track of a page and never hand out a frame twice.
    fn policy_is_consistent<P: Policy>() {
        let frames = 37;
        let mut index = Index::<P>::new(frames);
        let mut rng = Rng(7);
        let mut held = std::collections::HashMap::new();
        for _ in 0..50_000 {
            let id = PageId(rng.next() % 120);
            match rng.next() % 10 {
                0..=1 => {
                    assert_eq!(index.remove(id), held.remove(&id).is_some());
                }
                _ => match index.get(id) {
                    Some(f) => assert_eq!(held.get(&id), Some(&f)),
                    None => {
                        assert!(!held.contains_key(&id));
                        let (f, evicted) = index.insert(id).unwrap();
                        if let Some(e) = evicted {
                            assert!(held.remove(&e).is_some(), "evicted {e} was not held");
                        }
                        assert!(held.values().all(|&g| g != f), "frame {f} given twice");
                        held.insert(id, f);
                    }
                },
            }
            assert_eq!(index.len(), held.len());
            assert!(index.len() <= frames);
        }
    }

    #[test]
    fn policies_are_consistent() {
        policy_is_consistent::<Lru>();
        policy_is_consistent::<Clock>();
        policy_is_consistent::<S3Fifo>();
    }

    #[test]
    fn no_frames_caches_nothing() {
        let mut cache = PageCache::new(PageSize::MIN, 4095);
        assert_eq!(cache.frames(), 0);
        let got = cache.fill(PageId(2), |_| Ok(()), |_| Ok(())).unwrap();
        assert!(got.is_none());
        assert!(cache.get(PageId(2)).is_none());
    }

    #[test]
    fn a_page_failing_its_checks_is_not_kept() {
        let size = PageSize::MIN;
        let mut cache = PageCache::new(size, 4 * size.bytes());
        let mut good = crate::page::PageBuf::new(size);
        good.body_mut()[..3].copy_from_slice(b"abc");
        let bytes = good.seal(PageId(5), PageKind::Leaf, 1, 3).to_vec();
        // Torn: the checksum fails and nothing stays.
        let torn = |buf: &mut [u8]| {
            buf.copy_from_slice(&bytes);
            buf[100] ^= 1;
            Ok(())
        };
        assert!(cache.fill(PageId(5), torn, |_| Ok(())).is_err());
        assert!(cache.get(PageId(5)).is_none());
        // Refused by the caller's check (C2): not kept either.
        let copy = |buf: &mut [u8]| {
            buf.copy_from_slice(&bytes);
            Ok(())
        };
        let stale = |p: &Page<'_>| {
            Err(TreeError::Stale {
                page: p.id,
                epoch: p.epoch,
                durable: 0,
            })
        };
        assert!(cache.fill(PageId(5), copy, stale).is_err());
        assert!(cache.get(PageId(5)).is_none());
        // Good: served from the frame, then dropped on invalidation.
        let page = cache.fill(PageId(5), copy, |_| Ok(())).unwrap().unwrap();
        assert_eq!(page.body, b"abc");
        assert_eq!(cache.get(PageId(5)).unwrap().body, b"abc");
        cache.invalidate(PageId(5));
        assert!(cache.get(PageId(5)).is_none());
        let st = cache.stats();
        assert_eq!(
            (st.hits, st.misses, st.invalidations, st.resident),
            (1, 3, 1, 0)
        );
    }
}
