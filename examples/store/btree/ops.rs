//! Search, insert and delete: recursive descents that copy the path they
//! change (C1) and split or drop nodes on the way back up.
//!
//! Deletion frees what becomes empty: an empty leaf is freed and its
//! parent forgets it (with one separator), an inner node left without
//! children goes too, and a root with one child is replaced by that child,
//! so the tree shrinks in height. A node left under a quarter full merges
//! with a neighbour when the two fit in three quarters of a page
//! (`merge.rs`); nodes are not otherwise rebalanced (no borrowing of
//! entries between neighbours), which N2 does not need.

use super::error::TreeError;
use super::node::{Entry, Found, Inner, Leaf, Node, Value};
use super::{MAX_DEPTH, Tree};
use crate::page::PageId;
use crate::pagestore::PageStore;

/// What an insert below a node did to it.
enum Grown {
    /// The node now lives at this id.
    Same(PageId),
    /// The node split into a left at the first id and a right at the
    /// second, with the separator between them.
    Split(PageId, Vec<u8>, PageId),
}

/// What a delete below a node did to it: the id it now has, or `None` if
/// it became empty and was freed.
type Shrunk = Option<PageId>;

fn too_deep(page: PageId) -> TreeError {
    TreeError::TooDeep {
        page,
        max: MAX_DEPTH,
    }
}

fn not_a(page: PageId, what: &'static str) -> TreeError {
    TreeError::Malformed { page, what }
}

/// The child of `inner` that holds `key`, and its index.
fn step(inner: &Inner, key: &[u8], page: PageId) -> Result<(usize, PageId), TreeError> {
    let i = inner.child_index(key);
    let child = inner.children.get(i).copied();
    child
        .map(|c| (i, c))
        .ok_or(not_a(page, "fewer children than separators"))
}

impl<S: PageStore> Tree<S> {
    /// The value reference stored under `key`.
    pub(super) fn find(&self, key: &[u8]) -> Result<Option<Value>, TreeError> {
        let Some(mut id) = self.root else {
            return Ok(None);
        };
        for _ in 0..=MAX_DEPTH {
            match self.pager.lookup(id, key)? {
                Found::Leaf(value) => return Ok(value),
                Found::Child(child) => id = child,
            }
        }
        Err(too_deep(id))
    }

    /// Stores `value` under `key` below the root; returns the value it
    /// replaced.
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
        let (grown, old) = self.insert_below(root, key, value, 0)?;
        self.root = Some(match grown {
            Grown::Same(id) => id,
            Grown::Split(left, sep, right) => self.pager.insert(Node::Inner(Inner {
                children: vec![left, right],
                seps: vec![sep],
            })),
        });
        Ok(old)
    }

    fn insert_below(
        &mut self,
        id: PageId,
        key: &[u8],
        value: Value,
        depth: usize,
    ) -> Result<(Grown, Option<Value>), TreeError> {
        if depth > MAX_DEPTH {
            return Err(too_deep(id));
        }
        let below = match &*self.pager.node(id)? {
            Node::Leaf(_) => None,
            Node::Inner(inner) => Some(step(inner, key, id)?),
        };
        let cap = self.pager.size.body_capacity();
        let Some((i, child)) = below else {
            let (at, node) = self.pager.node_mut(id)?;
            let Node::Leaf(leaf) = node else {
                return Err(not_a(at, "leaf changed kind"));
            };
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
            let split = if leaf.encoded_len() > cap {
                Some(leaf.split().ok_or(not_a(at, "leaf too large to split"))?)
            } else {
                None
            };
            let grown = match split {
                None => Grown::Same(at),
                Some((sep, right)) => Grown::Split(at, sep, self.pager.insert(Node::Leaf(right))),
            };
            return Ok((grown, old));
        };
        let (grown, old) = self.insert_below(child, key, value, depth + 1)?;
        let (at, node) = self.pager.node_mut(id)?;
        let Node::Inner(inner) = node else {
            return Err(not_a(at, "inner node changed kind"));
        };
        let slot = inner
            .children
            .get_mut(i)
            .ok_or(not_a(at, "child vanished"))?;
        match grown {
            Grown::Same(c) => *slot = c,
            Grown::Split(left, sep, right) => {
                *slot = left;
                inner.children.insert(i + 1, right);
                inner.seps.insert(i, sep);
            }
        }
        let split = if inner.encoded_len() > cap {
            Some(
                inner
                    .split()
                    .ok_or(not_a(at, "inner node too large to split"))?,
            )
        } else {
            None
        };
        let grown = match split {
            None => Grown::Same(at),
            Some((sep, right)) => Grown::Split(at, sep, self.pager.insert(Node::Inner(right))),
        };
        Ok((grown, old))
    }

    /// Removes `key`; returns its value reference if it was there.
    pub(super) fn remove(&mut self, key: &[u8]) -> Result<Option<Value>, TreeError> {
        let Some(root) = self.root else {
            return Ok(None);
        };
        let Some((shrunk, old)) = self.remove_below(root, key, 0)? else {
            return Ok(None);
        };
        self.root = shrunk;
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

    fn remove_below(
        &mut self,
        id: PageId,
        key: &[u8],
        depth: usize,
    ) -> Result<Option<(Shrunk, Value)>, TreeError> {
        if depth > MAX_DEPTH {
            return Err(too_deep(id));
        }
        let below = match &*self.pager.node(id)? {
            Node::Leaf(leaf) => match leaf.search(key) {
                Ok(_) => None,
                Err(_) => return Ok(None),
            },
            Node::Inner(inner) => Some(step(inner, key, id)?),
        };
        let Some((i, child)) = below else {
            let (at, node) = self.pager.node_mut(id)?;
            let Node::Leaf(leaf) = node else {
                return Err(not_a(at, "leaf changed kind"));
            };
            let j = leaf.search(key).map_err(|_| not_a(at, "key vanished"))?;
            let old = leaf.entries.remove(j).value;
            if leaf.entries.is_empty() {
                self.pager.discard(at);
                return Ok(Some((None, old)));
            }
            return Ok(Some((Some(at), old)));
        };
        let Some((shrunk, old)) = self.remove_below(child, key, depth + 1)? else {
            return Ok(None);
        };
        let (at, node) = self.pager.node_mut(id)?;
        let Node::Inner(inner) = node else {
            return Err(not_a(at, "inner node changed kind"));
        };
        match shrunk {
            Some(c) => {
                let slot = inner
                    .children
                    .get_mut(i)
                    .ok_or(not_a(at, "child vanished"))?;
                *slot = c;
                self.merge_if_small(at, i)?;
            }
            None => {
                // Child i's range joins its left neighbour's (or, for the
                // first child, its right neighbour's): drop the separator
                // at its lower edge (or upper edge).
                if i < inner.children.len() {
                    inner.children.remove(i);
                }
                let sep = i.saturating_sub(1);
                if sep < inner.seps.len() {
                    inner.seps.remove(sep);
                }
                if inner.children.is_empty() {
                    self.pager.discard(at);
                    return Ok(Some((None, old)));
                }
            }
        }
        Ok(Some((Some(at), old)))
    }
}
