//! Search, insert and delete.
//!
//! A change first copies the path from the root to the key's leaf, top
//! down (C1), re-pointing each parent at its child's copy at once; only
//! then does it change the leaf and, bottom up, split or drop nodes, which
//! is all in memory on dirty nodes. **Invariant T1:** every read that can
//! fail happens while the working tree is whole (a copy has the same
//! contents as its original), so a failed operation leaves the tree as it
//! was, with at most some nodes copied, and never leaves a page freed that
//! the tree still reaches.
//!
//! Deletion frees what becomes empty: an empty leaf is freed and its
//! parent forgets it (with one separator), an inner node left without
//! children goes too, and a root with one child is replaced by that child,
//! so the tree shrinks in height. A node left under a quarter full merges
//! with a neighbour when the two fit in three quarters of a page
//! (`merge.rs`); nodes are not otherwise rebalanced (no borrowing of
//! entries between neighbours), which N2 does not need.

use super::error::TreeError;
use super::node::{Entry, Found, Inner, Leaf, Node, Value, Want};
use super::{MAX_DEPTH, Tree};
use crate::page::PageId;
use crate::pagestore::PageStore;

/// The copied path to a leaf: each inner node with the index of the child
/// taken, root first, and the leaf.
struct Path {
    inner: Vec<(PageId, usize)>,
    leaf: PageId,
}

fn too_deep(page: PageId) -> TreeError {
    TreeError::TooDeep {
        page,
        max: MAX_DEPTH,
    }
}

fn malformed(page: PageId, what: &'static str) -> TreeError {
    TreeError::Malformed { page, what }
}

/// The child of `inner` that holds `key`, and its index.
fn step(inner: &Inner, key: &[u8], page: PageId) -> Result<(usize, PageId), TreeError> {
    let i = inner.child_index(key);
    let child = inner.children.get(i).copied();
    child
        .map(|c| (i, c))
        .ok_or(malformed(page, "fewer children than separators"))
}

impl<S: PageStore> Tree<S> {
    /// The value reference stored under `key` (for [`Want::Presence`], an
    /// inline value comes back empty).
    pub(super) fn find(&self, key: &[u8], want: Want) -> Result<Option<Value>, TreeError> {
        let Some(mut id) = self.root else {
            return Ok(None);
        };
        for _ in 0..=MAX_DEPTH {
            match self.pager.lookup(id, key, want)? {
                Found::Leaf(value) => return Ok(value),
                Found::Child(child) => id = child,
            }
        }
        Err(too_deep(id))
    }

    /// The dirty inner node at `id`.
    pub(super) fn inner_mut(&mut self, id: PageId) -> Result<&mut Inner, TreeError> {
        match self.pager.node_mut(id)? {
            (_, Node::Inner(n)) => Ok(n),
            (at, Node::Leaf(_)) => Err(malformed(at, "expected an inner node")),
        }
    }

    /// The dirty leaf at `id`.
    fn leaf_mut(&mut self, id: PageId) -> Result<&mut Leaf, TreeError> {
        match self.pager.node_mut(id)? {
            (_, Node::Leaf(l)) => Ok(l),
            (at, Node::Inner(_)) => Err(malformed(at, "expected a leaf")),
        }
    }

    /// Copies the path from `root` to the leaf for `key` (T1): each copy is
    /// made, then its parent re-pointed, before the next read.
    fn copy_path(&mut self, root: PageId, key: &[u8]) -> Result<Path, TreeError> {
        let (mut id, _) = self.pager.node_mut(root)?;
        self.root = Some(id);
        let mut inner = Vec::new();
        loop {
            let (i, child) = match &*self.pager.node(id)? {
                Node::Leaf(_) => return Ok(Path { inner, leaf: id }),
                Node::Inner(n) => step(n, key, id)?,
            };
            if inner.len() >= MAX_DEPTH {
                return Err(too_deep(id));
            }
            let (copy, _) = self.pager.node_mut(child)?;
            if let Some(slot) = self.inner_mut(id)?.children.get_mut(i) {
                *slot = copy;
            }
            inner.push((id, i));
            id = copy;
        }
    }

    /// Stores `value` under `key`; returns the value it replaced.
    pub(super) fn insert(&mut self, key: &[u8], value: Value) -> Result<Option<Value>, TreeError> {
        let Some(root) = self.root else {
            let leaf = Leaf {
                entries: vec![Entry {
                    key: key.to_vec(),
                    value,
                }],
            };
            self.root = Some(self.pager.insert(Node::Leaf(leaf)));
            return Ok(None);
        };
        let path = self.copy_path(root, key)?;
        let leaf = self.leaf_mut(path.leaf)?;
        let old = match leaf.search(key) {
            Ok(j) => leaf
                .entries
                .get_mut(j)
                .map(|e| std::mem::replace(&mut e.value, value)),
            Err(j) => {
                let key = key.to_vec();
                leaf.entries.insert(j, Entry { key, value });
                None
            }
        };
        self.split_up(path)?;
        Ok(old)
    }

    /// Splits every overfull node on the (dirty) path, bottom up, growing a
    /// new root if the old one splits.
    fn split_up(&mut self, path: Path) -> Result<(), TreeError> {
        let cap = self.pager.size.body_capacity();
        let mut at = path.leaf;
        let mut parents = path.inner;
        loop {
            let (_, node) = self.pager.node_mut(at)?;
            if node.encoded_len() <= cap {
                return Ok(());
            }
            let split = match node {
                Node::Leaf(l) => l.split().map(|(s, r)| (s, Node::Leaf(r))),
                Node::Inner(n) => n.split().map(|(s, r)| (s, Node::Inner(r))),
            };
            let (sep, right) = split.ok_or(malformed(at, "node too large to split"))?;
            let right = self.pager.insert(right);
            match parents.pop() {
                Some((parent, i)) => {
                    let p = self.inner_mut(parent)?;
                    if i >= p.children.len() {
                        return Err(malformed(parent, "child vanished"));
                    }
                    p.children.insert(i + 1, right);
                    p.seps.insert(i, sep);
                    at = parent;
                }
                None => {
                    let root = Inner {
                        children: vec![at, right],
                        seps: vec![sep],
                    };
                    self.root = Some(self.pager.insert(Node::Inner(root)));
                    return Ok(());
                }
            }
        }
    }

    /// Removes `key`; returns its value reference if it was there.
    pub(super) fn remove(&mut self, key: &[u8]) -> Result<Option<Value>, TreeError> {
        let Some(root) = self.root else {
            return Ok(None);
        };
        // Look first, so a missing key copies nothing.
        if self.find(key, Want::Presence)?.is_none() {
            return Ok(None);
        }
        let path = self.copy_path(root, key)?;
        let leaf = self.leaf_mut(path.leaf)?;
        let Ok(j) = leaf.search(key) else {
            return Ok(None);
        };
        let old = leaf.entries.remove(j).value;
        let mut gone = leaf.entries.is_empty();
        if gone {
            self.pager.discard(path.leaf);
        }
        for &(parent, i) in path.inner.iter().rev() {
            if !gone {
                // Merging only tidies: if it cannot read a neighbour the
                // delete stands and the tree stays whole.
                if let Err(e) = self.merge_if_small(parent, i) {
                    tracing::warn!(target: "store", "no merge below {parent}: {e}");
                }
                continue;
            }
            // Child i's range joins its left neighbour's (or, for the
            // first child, its right neighbour's): drop the separator at
            // its lower edge (or upper edge).
            let p = self.inner_mut(parent)?;
            if i < p.children.len() {
                p.children.remove(i);
            }
            let sep = i.saturating_sub(1);
            if sep < p.seps.len() {
                p.seps.remove(sep);
            }
            gone = p.children.is_empty();
            if gone {
                self.pager.discard(parent);
            }
        }
        if gone {
            self.root = None;
        }
        self.collapse_root()?;
        Ok(Some(old))
    }

    /// Replaces a root with one child by that child, repeatedly.
    fn collapse_root(&mut self) -> Result<(), TreeError> {
        while let Some(root) = self.root {
            let only = match &*self.pager.node(root)? {
                Node::Inner(inner) if inner.children.len() == 1 => inner.children.first().copied(),
                _ => None,
            };
            let Some(child) = only else {
                break;
            };
            self.pager.discard(root);
            self.root = Some(child);
        }
        Ok(())
    }
}
