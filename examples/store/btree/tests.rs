//! Tree tests against a `BTreeMap` model, with a structural checker that
//! also proves every page of the file is accounted for exactly once.

use super::node::{Node, Value};
use super::*;
use crate::page::PageSize;
use crate::pagestore::{FileStore, PageStore, first_data_page};
use crate::test_dir::TempDir;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn empty_root(size: PageSize) -> TreeRoot {
    TreeRoot {
        seq: 1,
        root: None,
        free_head: None,
        page_count: first_data_page(size).0,
    }
}

/// Pages in the tests' cache: few, so evictions and invalidations happen
/// all the time.
const CACHE_PAGES: usize = 24;

fn open(path: &Path, size: PageSize, at: TreeRoot) -> Tree<FileStore> {
    let (store, _) = FileStore::open(path, size).unwrap();
    Tree::open(store, size, at, CACHE_PAGES * size.bytes()).unwrap()
}

/// Checkpoints `tree` as sequence `at.seq + 1` (the test keeps the
/// "manifest" in memory) and returns the new root.
fn checkpoint(tree: &mut Tree<FileStore>, at: TreeRoot) -> TreeRoot {
    let written = tree.write_checkpoint(at.seq + 1).unwrap();
    let root = written.root;
    tree.checkpoint_done(written);
    root
}

/// Checks N1 and N2 with the key bounds of every subtree, equal leaf
/// depth, no empty leaf, and collects every page the tree reaches (nodes
/// and overflow links).
fn walk(
    tree: &Tree<FileStore>,
    id: PageId,
    bounds: (Option<&[u8]>, Option<&[u8]>),
    depth: usize,
    leaf_depth: &mut Option<usize>,
    pages: &mut Vec<PageId>,
) {
    pages.push(id);
    let (lo, hi) = bounds;
    let inside = |k: &[u8]| lo.is_none_or(|lo| k >= lo) && hi.is_none_or(|hi| k < hi);
    match tree.pager.node(id).unwrap().into_owned() {
        Node::Leaf(leaf) => {
            assert!(!leaf.entries.is_empty(), "{id}: empty leaf");
            assert_eq!(
                *leaf_depth.get_or_insert(depth),
                depth,
                "{id}: uneven depth"
            );
            for w in leaf.entries.windows(2) {
                assert!(w[0].key < w[1].key, "{id}: keys out of order");
            }
            for e in &leaf.entries {
                assert!(inside(&e.key), "{id}: key outside its parent's range");
                if let Value::Overflow { head, len } = e.value {
                    tree.pager
                        .walk_value(head, len, |p, _| pages.push(p))
                        .unwrap();
                }
            }
        }
        Node::Inner(inner) => {
            assert_eq!(inner.children.len(), inner.seps.len() + 1, "{id}");
            for s in &inner.seps {
                assert!(inside(s), "{id}: separator outside its range");
            }
            for (i, &c) in inner.children.iter().enumerate() {
                let lo = if i == 0 {
                    lo
                } else {
                    Some(inner.seps[i - 1].as_slice())
                };
                let hi = inner.seps.get(i).map(|s| s.as_slice()).or(hi);
                walk(tree, c, (lo, hi), depth + 1, leaf_depth, pages);
            }
        }
    }
}

/// Right after checkpoint `at`: the structure is valid, the free list on
/// disk is the one in memory, and every page id of the file is reached by
/// the tree or free, exactly once (no leaks, no page both used and free).
fn check(tree: &Tree<FileStore>, size: PageSize, at: TreeRoot) {
    assert_eq!(tree.pager.dirty_count(), 0);
    check_free_list(tree, at);
    let mut pages = Vec::new();
    if let Some(root) = tree.root {
        walk(tree, root, (None, None), 0, &mut None, &mut pages);
    }
    pages.extend(tree.pager.space.all_free());
    let n = pages.len();
    let set: HashSet<PageId> = pages.into_iter().collect();
    assert_eq!(set.len(), n, "a page is used twice or both used and free");
    let all: HashSet<PageId> = (first_data_page(size).0..tree.pager.space.next())
        .map(PageId)
        .collect();
    assert_eq!(set, all, "pages leaked or out of range");
}

fn same_as_model<S: PageStore>(tree: &Tree<S>, model: &Model) {
    let all = tree.scan(b"", None, usize::MAX).unwrap();
    assert!(all.resume.is_none());
    let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(all.entries.len(), want.len());
    assert!(all.entries == want, "full scan differs from the model");
}

/// Keys with a fixed spelling per number; every 13th is long, so inner
/// nodes carry long separators too.
fn key(n: u64) -> Vec<u8> {
    let mut k = format!("{n:05}").into_bytes();
    if n % 13 == 0 {
        k.resize(MAX_TREE_KEY - (n % 3) as usize, b'x');
    }
    k
}

fn value(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(100) {
        0..=1 => 100_000 + rng.below(200_000) as usize,
        2..=9 => 1000 + rng.below(20_000) as usize,
        _ => rng.below(300) as usize,
    };
    rng.bytes(len)
}

/// Random puts, deletes, gets, scans, checkpoints, reopens and crashes
/// (a checkpoint written but never recorded, then a reopen of the last
/// recorded one) against the model.
fn run_model(seed: u64, size: PageSize, ops: usize) {
    let dir = TempDir::new();
    let path = dir.file("data");
    let mut rng = Rng(seed);
    let mut at = empty_root(size);
    let mut tree = open(&path, size, at);
    let mut model = Model::new();
    let mut durable = Model::new();
    // The checkpoint before `at`, as the other manifest slot would hold it
    // (`None` right after a fallback, which leaves only one).
    let mut older: Option<(TreeRoot, Model)> = None;
    for _ in 0..ops {
        let k = key(rng.below(700));
        match rng.below(100) {
            0..=44 => {
                let v = value(&mut rng);
                tree.put(&k, &v).unwrap();
                model.insert(k, v);
            }
            45..=69 => assert_eq!(tree.delete(&k).unwrap(), model.remove(&k).is_some()),
            70..=84 => assert_eq!(tree.get(&k).unwrap().as_ref(), model.get(&k)),
            85..=89 => assert_eq!(tree.exists(&k).unwrap(), model.contains_key(&k)),
            90..=94 => {
                let limit = 1 + rng.below(40) as usize;
                let end = key(rng.below(800));
                let end = (end > k).then_some(end);
                let batch = tree.scan(&k, end.as_deref(), limit).unwrap();
                let mut want = model
                    .range(k.clone()..)
                    .take_while(|(key, _)| end.as_ref().is_none_or(|e| *key < e));
                for (got, (wk, wv)) in batch.entries.iter().zip(want.by_ref()) {
                    assert_eq!((&got.0, &got.1), (wk, wv));
                }
                assert_eq!(batch.resume.as_ref(), want.next().map(|(k, _)| k));
            }
            95..=97 => {
                older = Some((at, durable));
                at = checkpoint(&mut tree, at);
                durable = model.clone();
                check(&tree, size, at);
            }
            _ => {
                match (rng.below(3), older.take()) {
                    (0, Some((root, contents))) => {
                        // The newest manifest is lost after a crash in the
                        // next checkpoint: the older one must be whole.
                        let _ = tree.write_checkpoint(at.seq + 1).unwrap();
                        (at, durable) = (root, contents);
                        model = durable.clone();
                    }
                    (1, kept) => {
                        // Crash after the pages, before the manifest.
                        let _ = tree.write_checkpoint(at.seq + 1).unwrap();
                        model = durable.clone();
                        older = kept;
                    }
                    _ => {
                        older = Some((at, durable));
                        at = checkpoint(&mut tree, at);
                        durable = model.clone();
                    }
                }
                drop(tree);
                tree = open(&path, size, at);
                same_as_model(&tree, &model);
            }
        }
    }
    same_as_model(&tree, &model);
    // Delete everything: the tree must shrink back to nothing.
    for k in model.keys() {
        assert!(tree.delete(k).unwrap());
    }
    assert_eq!(tree.root, None);
    at = checkpoint(&mut tree, at);
    check(&tree, size, at);
    drop(tree);
    let tree = open(&path, size, at);
    check(&tree, size, at);
    assert_eq!(tree.scan(b"", None, 10).unwrap(), ScanBatch::default());
}

#[test]
fn random_operations_match_a_btreemap_4k() {
    run_model(0x1234_5678, PageSize::MIN, 3000);
}

#[test]
fn random_operations_match_a_btreemap_16k() {
    run_model(0x9abc_def1, PageSize::new(16384).unwrap(), 2000);
}

#[test]
fn sequential_inserts_build_a_deep_tree_and_scan_in_order() {
    let dir = TempDir::new();
    let size = PageSize::MIN;
    let mut at = empty_root(size);
    let mut tree = open(&dir.file("data"), size, at);
    for i in 0..20_000u32 {
        tree.put(format!("{i:08}").as_bytes(), &i.to_le_bytes())
            .unwrap();
    }
    at = checkpoint(&mut tree, at);
    check(&tree, size, at);
    let mut from = Vec::new();
    let mut n = 0u32;
    loop {
        let batch = tree.scan(&from, None, 777).unwrap();
        for (k, v) in &batch.entries {
            assert_eq!(k, format!("{n:08}").as_bytes());
            assert_eq!(v, &n.to_le_bytes());
            n += 1;
        }
        match batch.resume {
            Some(k) => from = k,
            None => break,
        }
    }
    assert_eq!(n, 20_000);
    assert!(at.page_count > 100);
}

#[test]
fn large_values_use_overflow_chains_that_are_freed() {
    let dir = TempDir::new();
    let size = PageSize::MIN;
    let path = dir.file("data");
    let mut at = empty_root(size);
    let mut tree = open(&path, size, at);
    let mut rng = Rng(7);
    let big = rng.bytes(3 << 20);
    tree.put(b"big", &big).unwrap();
    tree.put(b"small", b"x").unwrap();
    at = checkpoint(&mut tree, at);
    check(&tree, size, at);
    let pages = at.page_count;
    drop(tree);
    let mut tree = open(&path, size, at);
    assert_eq!(tree.get(b"big").unwrap().as_deref(), Some(&big[..]));
    // Overwrite with another large value: the old chain is pending until
    // the checkpoint, cooling until the next (the older kept checkpoint
    // reaches it), then reused.
    let big2 = rng.bytes(3 << 20);
    tree.put(b"big", &big2).unwrap();
    at = checkpoint(&mut tree, at);
    check(&tree, size, at);
    tree.put(b"small", b"x").unwrap();
    at = checkpoint(&mut tree, at);
    check(&tree, size, at);
    tree.put(b"big", &big).unwrap();
    at = checkpoint(&mut tree, at);
    check(&tree, size, at);
    assert!(at.page_count < pages * 5 / 2, "the freed chain was reused");
    assert!(tree.delete(b"big").unwrap());
    at = checkpoint(&mut tree, at);
    check(&tree, size, at);
    assert_eq!(tree.get(b"small").unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(tree.get(b"big").unwrap(), None);
}

#[test]
fn bounds_are_enforced() {
    let dir = TempDir::new();
    let size = PageSize::MIN;
    let mut tree = open(&dir.file("data"), size, empty_root(size));
    let long = vec![b'k'; MAX_TREE_KEY + 1];
    assert!(matches!(
        tree.put(&long, b"v"),
        Err(TreeError::KeyTooLong { .. })
    ));
    assert!(matches!(tree.get(&long), Err(TreeError::KeyTooLong { .. })));
    // Zeroed memory is mapped lazily: this costs no 512 MiB of writes.
    let huge = vec![0u8; MAX_VALUE + 1];
    assert!(matches!(
        tree.put(b"k", &huge),
        Err(TreeError::ValueTooLarge { .. })
    ));
    let longest = vec![b'k'; MAX_TREE_KEY];
    tree.put(&longest, &[1; 5000]).unwrap();
    assert_eq!(tree.get(&longest).unwrap(), Some(vec![1; 5000]));
}

#[test]
fn a_failed_checkpoint_keeps_the_changes_and_leaks_nothing() {
    let dir = TempDir::new();
    let size = PageSize::MIN;
    let path = dir.file("data");
    let mut at = empty_root(size);
    let mut tree = open(&path, size, at);
    for i in 0..2000u32 {
        tree.put(&i.to_be_bytes(), &[3; 50]).unwrap();
    }
    at = checkpoint(&mut tree, at);
    for i in 0..1000u32 {
        tree.delete(&i.to_be_bytes()).unwrap();
    }
    // Pages written and synced, then the manifest fails: abort.
    let written = tree.write_checkpoint(at.seq + 1).unwrap();
    tree.checkpoint_failed(written);
    at = checkpoint(&mut tree, at);
    check(&tree, size, at);
    drop(tree);
    let tree = open(&path, size, at);
    check(&tree, size, at);
    assert_eq!(
        tree.scan(b"", None, usize::MAX).unwrap().entries.len(),
        1000
    );
}

#[test]
fn the_free_list_round_trips_at_every_page_boundary() {
    let size = PageSize::MIN;
    let per = free::ids_per_page(size) as u64;
    for n in [0, 1, per - 1, per, per + 1, per + 2, per + 3, 2 * per + 2] {
        let dir = TempDir::new();
        let mut tree = open(&dir.file("data"), size, empty_root(size));
        let list = free::LoadedList {
            free: (10..10 + n).map(PageId).collect(),
            cooling: (20_000..20_000 + n / 2).map(PageId).collect(),
            pages: Vec::new(),
        };
        tree.pager.space = free::FreeSpace::loaded(list, 30_000);
        let at = checkpoint(&mut tree, empty_root(size));
        check_free_list(&tree, at);
    }
}

fn check_free_list(tree: &Tree<FileStore>, at: TreeRoot) {
    let loaded = tree.pager.load_free_list(at.free_head).unwrap();
    let reopened = free::FreeSpace::loaded(loaded, tree.pager.space.next());
    assert_eq!(
        reopened.counts(),
        tree.pager.space.counts(),
        "the free list on disk differs"
    );
    let on_disk: HashSet<PageId> = reopened.all_free().into_iter().collect();
    let in_memory: HashSet<PageId> = tree.pager.space.all_free().into_iter().collect();
    assert_eq!(on_disk, in_memory, "the free list on disk differs");
}

#[test]
fn underfull_nodes_merge_after_deletes() {
    let dir = TempDir::new();
    let size = PageSize::MIN;
    let mut at = empty_root(size);
    let mut tree = open(&dir.file("data"), size, at);
    for i in 0..20_000u32 {
        tree.put(format!("{i:08}").as_bytes(), &i.to_le_bytes())
            .unwrap();
    }
    at = checkpoint(&mut tree, at);
    let before = tree_pages(&tree);
    for i in (0..20_000u32).filter(|i| i % 20 != 0) {
        assert!(tree.delete(format!("{i:08}").as_bytes()).unwrap());
    }
    at = checkpoint(&mut tree, at);
    check(&tree, size, at);
    let after = tree_pages(&tree);
    // 1000 entries of 21 bytes (their slots included) fill about 6 pages,
    // merged nodes stay at most three quarters full (and leaves under a
    // quarter merge only with a neighbour); unmerged, every one of the
    // leaves would stay.
    assert!(
        before > 80 && after < 25,
        "{before} pages before, {after} after"
    );
    let all = tree.scan(b"", None, usize::MAX).unwrap();
    assert_eq!(all.entries.len(), 1000);
}

fn tree_pages(tree: &Tree<FileStore>) -> usize {
    let mut pages = Vec::new();
    if let Some(root) = tree.root {
        walk(tree, root, (None, None), 0, &mut None, &mut pages);
    }
    pages.len()
}

#[test]
fn long_separators_make_a_deep_tree_that_shrinks_back() {
    let dir = TempDir::new();
    let size = PageSize::MIN;
    let path = dir.file("data");
    let mut at = empty_root(size);
    let mut tree = open(&path, size, at);
    let mut model = Model::new();
    let mut rng = Rng(99);
    // Keys share a 900-byte prefix, so separators are long and inner
    // nodes hold only a few children: five or more levels.
    let key = |i: u64| {
        let mut k = vec![b'p'; 900];
        k.extend_from_slice(format!("{i:08}").as_bytes());
        k
    };
    for _ in 0..2500 {
        let k = key(rng.below(1_000_000));
        let len = rng.below(90) as usize;
        let v = rng.bytes(len);
        tree.put(&k, &v).unwrap();
        model.insert(k, v);
    }
    at = checkpoint(&mut tree, at);
    check(&tree, size, at);
    let before = tree_pages(&tree);
    let mut depth = 0;
    let mut id = tree.root.unwrap();
    while let Node::Inner(n) = tree.pager.node(id).unwrap().into_owned() {
        id = n.children[0];
        depth += 1;
    }
    assert!(depth >= 4, "depth {depth}");
    let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
    for (n, k) in keys.iter().enumerate() {
        if rng.below(10) != 0 {
            assert!(tree.delete(k).unwrap());
            model.remove(k);
        }
        if n % 500 == 0 {
            at = checkpoint(&mut tree, at);
            check(&tree, size, at);
        }
    }
    at = checkpoint(&mut tree, at);
    check(&tree, size, at);
    same_as_model(&tree, &model);
    let after = tree_pages(&tree);
    assert!(after * 4 < before, "{before} pages before, {after} after");
    drop(tree);
    let tree = open(&path, size, at);
    same_as_model(&tree, &model);
}

/// A store whose writes or syncs fail on demand (a full or failing disk).
struct Faulty {
    inner: FileStore,
    fail_write_at: Option<usize>,
    fail_sync: bool,
    writes: usize,
    /// Reads left before one fails (`None`: never).
    fail_read_in: std::cell::Cell<Option<usize>>,
}

impl Faulty {
    fn new(inner: FileStore) -> Self {
        Faulty {
            inner,
            fail_write_at: None,
            fail_sync: false,
            writes: 0,
            fail_read_in: std::cell::Cell::new(None),
        }
    }
}

impl PageStore for Faulty {
    fn read_page(&self, id: PageId, buf: &mut [u8]) -> std::io::Result<()> {
        match self.fail_read_in.get() {
            Some(0) => {
                self.fail_read_in.set(None);
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            Some(n) => self.fail_read_in.set(Some(n - 1)),
            None => {}
        }
        self.inner.read_page(id, buf)
    }

    fn write_page(&mut self, id: PageId, buf: &[u8]) -> std::io::Result<()> {
        self.writes += 1;
        if self.fail_write_at == Some(self.writes) {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.write_page(id, buf)
    }

    fn read_slot(&self, slot: usize, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_slot(slot, buf)
    }

    fn write_slot(&mut self, slot: usize, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_slot(slot, buf)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if self.fail_sync {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync()
    }
}

#[test]
fn failed_writes_and_syncs_keep_the_changes_for_the_next_checkpoint() {
    let dir = TempDir::new();
    let size = PageSize::MIN;
    let path = dir.file("data");
    let mut at = empty_root(size);
    let (inner, _) = FileStore::open(&path, size).unwrap();
    let mut tree = Tree::open(Faulty::new(inner), size, at, CACHE_PAGES * size.bytes()).unwrap();
    let mut model = Model::new();
    let mut rng = Rng(5);
    for round in 0..6u64 {
        for _ in 0..300 {
            let k = key(rng.below(2000));
            let v = value(&mut rng);
            // A put whose overflow chain cannot be written fails whole.
            tree.store_mut().fail_write_at =
                (rng.below(10) == 0).then_some(tree.store_mut().writes + 1);
            match tree.put(&k, &v) {
                Ok(()) => {
                    model.insert(k, v);
                }
                Err(TreeError::Write { .. }) => {}
                Err(e) => panic!("{e}"),
            }
            tree.store_mut().fail_write_at = None;
        }
        // A failing checkpoint: a page write (round 0, 2, 4) or the sync.
        if round % 2 == 0 {
            tree.store_mut().fail_write_at = Some(tree.store_mut().writes + 1 + round as usize * 7);
        } else {
            tree.store_mut().fail_sync = true;
        }
        assert!(tree.write_checkpoint(at.seq + 1).is_err());
        tree.store_mut().fail_write_at = None;
        tree.store_mut().fail_sync = false;
        same_as_model(&tree, &model);
        let written = tree.write_checkpoint(at.seq + 1).unwrap();
        at = written.root;
        tree.checkpoint_done(written);
    }
    drop(tree);
    let tree = open(&path, size, at);
    check(&tree, size, at);
    same_as_model(&tree, &model);
}

#[test]
fn a_read_failing_inside_a_change_leaves_the_tree_whole() {
    let dir = TempDir::new();
    let size = PageSize::MIN;
    let path = dir.file("data");
    let mut at = empty_root(size);
    let mut rng = Rng(11);
    let mut model = Model::new();
    let mut tree = open(&path, size, at);
    for _ in 0..3000 {
        let k = key(rng.below(3000));
        let len = if rng.below(8) == 0 { 6000 } else { 40 };
        let v = rng.bytes(len);
        tree.put(&k, &v).unwrap();
        model.insert(k, v);
    }
    at = checkpoint(&mut tree, at);
    drop(tree);
    let mut failed = 0;
    for round in 0..20 {
        // Reopened, every node is clean, so a change reads its whole path
        // (no cache: every read reaches the store).
        let (inner, _) = FileStore::open(&path, size).unwrap();
        let mut tree = Tree::open(Faulty::new(inner), size, at, 0).unwrap();
        for _ in 0..50 {
            let k = key(rng.below(3000));
            tree.store_mut()
                .fail_read_in
                .set(Some(rng.below(6) as usize));
            let put = rng.below(2) == 0;
            let result = if put {
                let len = if rng.below(8) == 0 { 6000 } else { 40 };
                let v = rng.bytes(len);
                tree.put(&k, &v).map(|()| {
                    model.insert(k, v);
                })
            } else {
                tree.delete(&k).map(|was| {
                    assert_eq!(was, model.remove(&k).is_some());
                })
            };
            tree.store_mut().fail_read_in.set(None);
            match result {
                Ok(()) => {}
                Err(TreeError::Read { .. }) => {
                    failed += 1;
                    same_as_model(&tree, &model);
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        let written = tree.write_checkpoint(at.seq + 1).unwrap();
        at = written.root;
        tree.checkpoint_done(written);
        drop(tree);
        let tree = open(&path, size, at);
        check(&tree, size, at);
        same_as_model(&tree, &model);
    }
    assert!(failed > 100, "{failed} changes failed on a read");
}

#[test]
fn a_page_from_a_newer_epoch_is_refused_as_stale() {
    let dir = TempDir::new();
    let size = PageSize::MIN;
    let path = dir.file("data");
    let mut at = empty_root(size);
    let mut tree = open(&path, size, at);
    tree.put(b"k", b"v").unwrap();
    at = checkpoint(&mut tree, at);
    drop(tree);
    // Rewrite the root leaf, intact and checksummed, as if a checkpoint
    // three generations on had written it.
    let root = at.root.unwrap();
    let (mut store, _) = FileStore::open(&path, size).unwrap();
    let mut buf = vec![0; size.bytes()];
    store.read_page(root, &mut buf).unwrap();
    let node = Node::decode(&crate::page::Page::open(&buf, size, root).unwrap()).unwrap();
    let mut page = crate::page::PageBuf::new(size);
    store
        .write_page(root, node.encode(&mut page, root, at.seq + 3))
        .unwrap();
    drop(store);
    let tree = open(&path, size, at);
    assert!(matches!(tree.get(b"k"), Err(TreeError::Stale { page, .. }) if page == root));
}

/// A store that counts the pages read from it.
struct Counting {
    inner: FileStore,
    reads: std::cell::Cell<u64>,
}

impl PageStore for Counting {
    fn read_page(&self, id: PageId, buf: &mut [u8]) -> std::io::Result<()> {
        self.reads.set(self.reads.get() + 1);
        self.inner.read_page(id, buf)
    }

    fn write_page(&mut self, id: PageId, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_page(id, buf)
    }

    fn read_slot(&self, slot: usize, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_slot(slot, buf)
    }

    fn write_slot(&mut self, slot: usize, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_slot(slot, buf)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync()
    }
}

#[test]
fn a_reused_page_id_is_never_served_stale_from_the_cache() {
    let dir = TempDir::new();
    let size = PageSize::MIN;
    let path = dir.file("data");
    let mut at = empty_root(size);
    // A cache that holds the whole tree, so nothing leaves it by eviction:
    // only invalidation (C3) keeps a reused id's old page from being served.
    let (store, _) = FileStore::open(&path, size).unwrap();
    let mut tree = Tree::open(store, size, at, 4096 * size.bytes()).unwrap();
    let mut model = Model::new();
    let mut high_water = Vec::new();
    for round in 0..8u8 {
        // Every key rewritten: every page of the tree is copied and freed,
        // and two checkpoints on its id is handed out again.
        for n in 0..600u64 {
            let v = vec![round; 100 + (n % 50) as usize];
            tree.put(&key(n), &v).unwrap();
            model.insert(key(n), v);
        }
        at = checkpoint(&mut tree, at);
        // Reads through the cache: every page of this checkpoint enters it.
        for (k, v) in &model {
            assert_eq!(tree.get(k).unwrap().as_ref(), Some(v), "round {round}");
        }
        same_as_model(&tree, &model);
        high_water.push(tree.stats().page_count);
    }
    let st = tree.stats();
    // Ids were reused: the file stopped growing while the tree was
    // rewritten, and cached pages were dropped for it.
    assert_eq!(high_water[7], high_water[4], "{high_water:?}");
    assert!(st.cache.invalidations > 100, "{:?}", st.cache);
    assert_eq!(st.cache.evictions, 0, "{:?}", st.cache);
    check(&tree, size, at);
}

#[test]
fn a_dataset_ten_times_the_cache_reads_correctly_within_the_bound() {
    let dir = TempDir::new();
    let size = PageSize::MIN;
    let path = dir.file("data");
    let mut at = empty_root(size);
    let mut tree = open(&path, size, at);
    let mut model = Model::new();
    let mut rng = Rng(99);
    for n in 0..6000u64 {
        let len = 100 + rng.below(100) as usize;
        let v = rng.bytes(len);
        tree.put(&key(n), &v).unwrap();
        model.insert(key(n), v);
    }
    at = checkpoint(&mut tree, at);
    drop(tree);
    let frames = 16;
    let bound = frames * size.bytes();
    let (inner, _) = FileStore::open(&path, size).unwrap();
    let store = Counting {
        inner,
        reads: std::cell::Cell::new(0),
    };
    let tree = Tree::open(store, size, at, bound).unwrap();
    let data_pages = at.page_count - first_data_page(size).0;
    assert!(data_pages >= 10 * frames as u64, "{data_pages} pages");
    // The arena grows with use, never past the bound.
    assert_eq!(tree.pager.cache_arena_bytes(), 0);
    let keys: Vec<&Vec<u8>> = model.keys().collect();
    for i in 0..20_000 {
        // Mostly random keys, with runs in order (a scan-like pattern).
        let k = if i % 4 == 0 {
            keys[(i / 4) % keys.len()]
        } else {
            keys[rng.below(keys.len() as u64) as usize]
        };
        assert_eq!(tree.get(k).unwrap().as_ref(), model.get(k));
        let st = tree.stats().cache;
        assert!(st.resident <= frames, "{st:?}");
        assert!(tree.pager.cache_arena_bytes() <= bound);
    }
    same_as_model(&tree, &model);
    let st = tree.stats().cache;
    assert_eq!(st.frames, frames);
    assert_eq!(tree.pager.cache_arena_bytes(), bound);
    // Reads went to the file, through the cache's frames.
    assert!(st.misses > 10_000 && st.evictions > 10_000, "{st:?}");
    assert!(tree.pager.store.reads.get() >= st.misses, "{st:?}");
    assert!(st.hits > 20_000, "{st:?}");
}
