//! Ordered scans: a cursor that walks the leaves in key order from a start
//! key, holding the path from the root (there are no sibling links: under
//! copy-on-write a sibling pointer would force rewriting the neighbour on
//! every change).
//!
//! A scan returns at most `limit` entries and, when more remain, the key to
//! resume from. The resume key is a plain key, not a position, so it stays
//! valid whatever changes between calls: the next call sees the tree as it
//! is then, from that key on.

use super::MAX_DEPTH;
use super::error::TreeError;
use super::node::{Entry, Node};
use super::pager::Pager;
use crate::page::PageId;
use crate::pagestore::PageStore;

/// A position in the tree: the children of each inner node on the path
/// with the index taken, and the rest of the current leaf.
pub struct Cursor {
    path: Vec<(Vec<PageId>, usize)>,
    leaf: std::vec::IntoIter<Entry>,
}

impl Cursor {
    /// A cursor at the first key at or after `start`.
    ///
    /// # Errors
    /// A page on the path failed its checks.
    pub fn seek<S: PageStore>(
        pager: &Pager<S>,
        root: Option<PageId>,
        start: &[u8],
    ) -> Result<Self, TreeError> {
        let mut cursor = Cursor {
            path: Vec::new(),
            leaf: Vec::new().into_iter(),
        };
        if let Some(root) = root {
            cursor.descend(pager, root, Some(start))?;
        }
        Ok(cursor)
    }

    /// Walks down from `id` to a leaf: towards `key`, or leftmost.
    fn descend<S: PageStore>(
        &mut self,
        pager: &Pager<S>,
        mut id: PageId,
        key: Option<&[u8]>,
    ) -> Result<(), TreeError> {
        loop {
            if self.path.len() > MAX_DEPTH {
                return Err(TreeError::TooDeep {
                    page: id,
                    max: MAX_DEPTH,
                });
            }
            match pager.node(id)?.into_owned() {
                Node::Inner(inner) => {
                    let i = key.map_or(0, |k| inner.child_index(k));
                    id = *inner.children.get(i).ok_or(TreeError::Malformed {
                        page: id,
                        what: "fewer children than separators",
                    })?;
                    self.path.push((inner.children, i));
                }
                Node::Leaf(mut leaf) => {
                    if let Some(k) = key {
                        let skip = leaf.entries.partition_point(|e| e.key.as_slice() < k);
                        leaf.entries.drain(..skip);
                    }
                    self.leaf = leaf.entries.into_iter();
                    return Ok(());
                }
            }
        }
    }

    /// The next entry in key order.
    ///
    /// # Errors
    /// A page on the way failed its checks.
    pub fn next<S: PageStore>(&mut self, pager: &Pager<S>) -> Result<Option<Entry>, TreeError> {
        loop {
            if let Some(e) = self.leaf.next() {
                return Ok(Some(e));
            }
            // Up to the nearest ancestor with a child to the right.
            let next = loop {
                let Some((children, i)) = self.path.last_mut() else {
                    return Ok(None);
                };
                if *i + 1 < children.len() {
                    *i += 1;
                    break children[*i];
                }
                self.path.pop();
            };
            self.descend(pager, next, None)?;
        }
    }
}
