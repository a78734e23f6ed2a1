//! Merging an underfull node into a neighbour after a delete.
//!
//! **Rule:** after a delete below child `i` of an inner node, if that child
//! encodes to under a quarter of a page body and it and a neighbour (the
//! right one, or the left for the last child) would together take at most
//! three quarters, the two become one node (the left one's, copied on
//! write), the right one is freed and the separator between them goes
//! (for inner nodes it moves down into the merged node, between the two
//! halves' children). The three-quarter bound leaves room, so the next
//! inserts do not split the merged node straight away.

use super::Tree;
use super::error::TreeError;
use super::node::{Inner, Leaf, Node};
use crate::page::PageId;
use crate::pagestore::PageStore;

/// The larger node header (inner: child count and first child).
const HEADS: usize = 10;

fn malformed(page: PageId, what: &'static str) -> TreeError {
    TreeError::Malformed { page, what }
}

impl<S: PageStore> Tree<S> {
    /// Applies the rule to child `i` of the dirty inner node `parent`.
    pub(super) fn merge_if_small(&mut self, parent: PageId, i: usize) -> Result<(), TreeError> {
        let cap = self.pager.size.body_capacity();
        let (l, left, right, sep) = match &*self.pager.node(parent)? {
            Node::Inner(p) => {
                let l = if i + 1 < p.children.len() {
                    i
                } else if i > 0 {
                    i - 1
                } else {
                    return Ok(());
                };
                match (p.children.get(l), p.children.get(l + 1), p.seps.get(l)) {
                    (Some(&a), Some(&b), Some(s)) => (l, a, b, s.clone()),
                    _ => return Err(malformed(parent, "fewer children than separators")),
                }
            }
            Node::Leaf(_) => return Err(malformed(parent, "a leaf has no children")),
        };
        let child = if i == l { left } else { right };
        if self.pager.node(child)?.encoded_len() >= cap / 4 {
            return Ok(());
        }
        let (a, b) = (self.pager.node(left)?, self.pager.node(right)?);
        // A merged node is never smaller than both less one header: skip
        // building it when even that is too big.
        if (a.encoded_len() + b.encoded_len()).saturating_sub(HEADS) > cap / 4 * 3 {
            return Ok(());
        }
        let merged = match (&*a, &*b) {
            (Node::Leaf(a), Node::Leaf(b)) => Node::Leaf(Leaf {
                entries: a.entries.iter().chain(&b.entries).cloned().collect(),
            }),
            (Node::Inner(a), Node::Inner(b)) => Node::Inner(Inner {
                children: a.children.iter().chain(&b.children).copied().collect(),
                seps: a
                    .seps
                    .iter()
                    .chain(std::iter::once(&sep))
                    .chain(&b.seps)
                    .cloned()
                    .collect(),
            }),
            _ => return Err(malformed(parent, "siblings of different kinds")),
        };
        drop((a, b));
        if merged.encoded_len() > cap / 4 * 3 {
            return Ok(());
        }
        // The last read that can fail (T1); what follows only changes
        // dirty nodes in memory, at indices checked above.
        let (left_at, node) = self.pager.node_mut(left)?;
        *node = merged;
        self.pager.discard(right);
        let p = self.inner_mut(parent)?;
        if l + 1 < p.children.len() && l < p.seps.len() {
            p.children[l] = left_at;
            p.children.remove(l + 1);
            p.seps.remove(l);
        }
        Ok(())
    }
}
