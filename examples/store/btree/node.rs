//! B+tree nodes in memory and their page encoding (page format 2).
//!
//! Leaf body (little endian): `count: u16`, a slot directory of `count`
//! entry offsets (`u16`, from the start of the body), then the `count`
//! entries, each `key_len: u16, tag: u8, key`, followed by `value_len:
//! u32, value` for an inline value (tag 0) or `value_len: u64, head: u64`
//! for a value in an overflow chain (tag 1).
//!
//! Inner body: `children: u16, child0: u64`, a slot directory of
//! `children - 1` offsets (`u16`), then `children - 1` entries of
//! `key_len: u16, separator, child: u64`.
//!
//! The slot directory lets a point lookup binary-search a page in place
//! (`lookup`) instead of scanning its entries. Entries follow the
//! directory in key order, back to back, so the offsets are redundant
//! with the entries' lengths and decoding checks they agree.
//!
//! **Invariant N1:** a leaf's keys are strictly ascending, each at most
//! [`MAX_TREE_KEY`] bytes.
//! **Invariant N2:** an inner node has at least one child and exactly one
//! separator fewer than children, ascending; child `i` holds exactly the
//! keys `k` with `seps[i - 1] <= k < seps[i]` (no bound past either end).
//! **Invariant N3:** every entry (with its slot) fits a third of a page
//! body ([`MAX_ENTRY`] against the smallest page), so a node that
//! overflows by one entry always splits into two that fit.
//!
//! Decoding checks N1 and N2, that every slot points at its entry and
//! that the body is consumed exactly, so a page with a valid checksum but
//! a broken structure is an error, not a panic later.

use super::error::TreeError;
use crate::page::{Page, PageBuf, PageId, PageKind, PageSize};
use std::cmp::Ordering;

/// Longest key the tree stores (a table prefix plus a user key).
pub const MAX_TREE_KEY: usize = 1028;
/// The largest encoded entry of either node kind with its slot (an
/// overflow reference beside a longest key).
const MAX_ENTRY: usize = SLOT + 2 + 1 + MAX_TREE_KEY + 16;
/// Bytes of one slot directory offset.
const SLOT: usize = 2;
const _: () = assert!(MAX_ENTRY * 3 <= 4096 - crate::page::HEADER_LEN - INNER_HEAD);

const LEAF_HEAD: usize = 2;
const INNER_HEAD: usize = 2 + 8;
const TAG_INLINE: u8 = 0;
const TAG_OVERFLOW: u8 = 1;

/// Where an entry's value is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// In the leaf itself.
    Inline(Vec<u8>),
    /// In an overflow chain starting at `head`, `len` bytes long.
    Overflow { head: PageId, len: u64 },
}

/// One key and its value in a leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Value,
}

/// A leaf: sorted entries (N1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaf {
    pub entries: Vec<Entry>,
}

/// An inner node: children and separators (N2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inner {
    pub children: Vec<PageId>,
    pub seps: Vec<Vec<u8>>,
}

/// A decoded tree page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Leaf(Leaf),
    Inner(Inner),
}

/// Bytes an entry with a key of `key_len` takes in a leaf, its slot
/// included.
pub fn leaf_entry_len(key_len: usize, value: &Value) -> usize {
    SLOT + 2
        + 1
        + key_len
        + match value {
            Value::Inline(v) => 4 + v.len(),
            Value::Overflow { .. } => 16,
        }
}

/// Whether a value of `value_len` bytes beside a key of `key_len` stays in
/// the leaf: if the entry takes at most a quarter of the page body (so a
/// leaf holds at least four such entries), or no more than an overflow
/// reference would (values up to 12 bytes, the empty one included).
pub fn fits_inline(size: PageSize, key_len: usize, value_len: usize) -> bool {
    let inline = 2 + 1 + key_len + 4 + value_len;
    let reference = 2 + 1 + key_len + 16;
    inline <= (size.body_capacity() / 4).max(reference)
}

fn sep_len(sep: &[u8]) -> usize {
    SLOT + 2 + sep.len() + 8
}

impl Leaf {
    /// The index of `key`, or where it would go.
    pub fn search(&self, key: &[u8]) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| e.key.as_slice().cmp(key))
    }

    /// Encoded body length.
    pub fn encoded_len(&self) -> usize {
        LEAF_HEAD
            + self
                .entries
                .iter()
                .map(|e| leaf_entry_len(e.key.len(), &e.value))
                .sum::<usize>()
    }

    /// Moves the upper part of an overfull leaf into a new right sibling and
    /// returns the separator between them: the shortest prefix of the
    /// right's first key above the left's last (N2), and the right sibling.
    /// `None` for a leaf of fewer than two entries.
    pub fn split(&mut self) -> Option<(Vec<u8>, Leaf)> {
        if self.entries.len() < 2 {
            return None;
        }
        let sizes: Vec<usize> = self
            .entries
            .iter()
            .map(|e| leaf_entry_len(e.key.len(), &e.value))
            .collect();
        let at = split_point(&sizes);
        let right = Leaf {
            entries: self.entries.split_off(at),
        };
        let sep = match (self.entries.last(), right.entries.first()) {
            (Some(l), Some(r)) => shortest_separator(&l.key, &r.key),
            _ => return None,
        };
        Some((sep, right))
    }
}

impl Inner {
    /// The index of the child whose range holds `key` (N2).
    pub fn child_index(&self, key: &[u8]) -> usize {
        self.seps.partition_point(|s| s.as_slice() <= key)
    }

    /// Encoded body length.
    pub fn encoded_len(&self) -> usize {
        INNER_HEAD + self.seps.iter().map(|s| sep_len(s)).sum::<usize>()
    }

    /// Moves the upper part of an overfull inner node into a new right
    /// sibling; the separator between them moves up and is returned.
    /// `None` for a node without separators.
    pub fn split(&mut self) -> Option<(Vec<u8>, Inner)> {
        if self.seps.is_empty() || self.children.len() != self.seps.len() + 1 {
            return None;
        }
        let sizes: Vec<usize> = self.seps.iter().map(|s| sep_len(s)).collect();
        // Separator `m` goes up: the left keeps children 0..=m, the right
        // gets children m+1.. and the separators after m.
        let m = split_point(&sizes)
            .saturating_sub(1)
            .min(self.seps.len() - 1);
        let right_seps = self.seps.split_off(m + 1);
        let up = self.seps.pop()?;
        let right = Inner {
            children: self.children.split_off(m + 1),
            seps: right_seps,
        };
        Some((up, right))
    }
}

/// The first index of the right half: at least 1 and at most `len - 1`,
/// where the left half first reaches half the bytes.
fn split_point(sizes: &[usize]) -> usize {
    let total: usize = sizes.iter().sum();
    let mut left = 0;
    for (i, s) in sizes.iter().enumerate() {
        if i > 0 && left + s > total / 2 {
            return i.min(sizes.len().saturating_sub(1)).max(1);
        }
        left += s;
    }
    sizes.len().saturating_sub(1).max(1)
}

/// The shortest `s` with `left < s <= right`, given `left < right`.
fn shortest_separator(left: &[u8], right: &[u8]) -> Vec<u8> {
    let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    right[..(common + 1).min(right.len())].to_vec()
}

impl Node {
    /// Encoded body length.
    pub fn encoded_len(&self) -> usize {
        match self {
            Node::Leaf(l) => l.encoded_len(),
            Node::Inner(n) => n.encoded_len(),
        }
    }

    /// Writes the node into `buf` and seals it as page `id` for `epoch`.
    pub fn encode<'b>(&self, buf: &'b mut PageBuf, id: PageId, epoch: u64) -> &'b [u8] {
        let mut w = Writer {
            b: buf.body_mut(),
            at: 0,
        };
        let kind = match self {
            Node::Leaf(l) => {
                w.put(&(l.entries.len() as u16).to_le_bytes());
                let dir = w.reserve(l.entries.len());
                for (i, e) in l.entries.iter().enumerate() {
                    w.slot(dir, i);
                    w.put(&(e.key.len() as u16).to_le_bytes());
                    match &e.value {
                        Value::Inline(v) => {
                            w.put(&[TAG_INLINE]);
                            w.put(&e.key);
                            w.put(&(v.len() as u32).to_le_bytes());
                            w.put(v);
                        }
                        Value::Overflow { head, len } => {
                            w.put(&[TAG_OVERFLOW]);
                            w.put(&e.key);
                            w.put(&len.to_le_bytes());
                            w.put(&head.0.to_le_bytes());
                        }
                    }
                }
                PageKind::Leaf
            }
            Node::Inner(n) => {
                w.put(&(n.children.len() as u16).to_le_bytes());
                let first = n.children.first().map_or(0, |c| c.0);
                w.put(&first.to_le_bytes());
                let dir = w.reserve(n.seps.len());
                for (i, (sep, child)) in n.seps.iter().zip(n.children.iter().skip(1)).enumerate() {
                    w.slot(dir, i);
                    w.put(&(sep.len() as u16).to_le_bytes());
                    w.put(sep);
                    w.put(&child.0.to_le_bytes());
                }
                PageKind::Inner
            }
        };
        let len = w.at;
        buf.seal(id, kind, epoch, len)
    }

    /// Decodes a checked page, verifying N1 and N2.
    ///
    /// # Errors
    /// [`TreeError::Malformed`] naming the page, or
    /// [`crate::page::PageError::UnexpectedKind`] for a non-tree page.
    pub fn decode(page: &Page<'_>) -> Result<Node, TreeError> {
        let mut r = Reader::new(page.body, page.id);
        let node = match page.kind {
            PageKind::Leaf => Node::Leaf(decode_leaf(&mut r)?),
            PageKind::Inner => Node::Inner(decode_inner(&mut r)?),
            found => {
                return Err(crate::page::PageError::UnexpectedKind {
                    page: page.id,
                    expected: PageKind::Leaf,
                    found,
                }
                .into());
            }
        };
        r.finish()?;
        Ok(node)
    }
}

/// A value as it lies in the page.
enum RawValue<'a> {
    Inline(&'a [u8]),
    Overflow { head: PageId, len: u64 },
}

impl RawValue<'_> {
    fn to_value(&self) -> Value {
        match *self {
            RawValue::Inline(v) => Value::Inline(v.to_vec()),
            RawValue::Overflow { head, len } => Value::Overflow { head, len },
        }
    }

    /// The value, or for [`Want::Presence`] an empty stand-in (no copy).
    fn found(&self, want: Want) -> Value {
        match (want, self) {
            (Want::Presence, RawValue::Inline(_)) => Value::Inline(Vec::new()),
            _ => self.to_value(),
        }
    }
}

/// What a point lookup needs of the entry it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The value (an inline one is copied out of the page).
    Value,
    /// Only whether the key is there: an inline value comes back empty,
    /// without a copy (or an allocation).
    Presence,
}

/// One leaf entry, borrowed from the body.
fn leaf_entry<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], RawValue<'a>), TreeError> {
    let key_len = r.u16()? as usize;
    let tag = r.u8()?;
    let key = r.key(key_len)?;
    let value = match tag {
        TAG_INLINE => {
            let len = r.u32()? as usize;
            RawValue::Inline(r.bytes(len)?)
        }
        TAG_OVERFLOW => {
            let len = r.u64()?;
            let head = r.u64()?;
            if head == 0 || len == 0 {
                return Err(r.malformed("empty overflow reference"));
            }
            RawValue::Overflow {
                head: PageId(head),
                len,
            }
        }
        _ => return Err(r.malformed("unknown value tag")),
    };
    Ok((key, value))
}

/// One separator and the child after it, borrowed from the body.
fn inner_entry<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], PageId), TreeError> {
    let len = r.u16()? as usize;
    let sep = r.key(len)?;
    Ok((sep, r.child()?))
}

fn decode_leaf(r: &mut Reader<'_>) -> Result<Leaf, TreeError> {
    let count = r.u16()? as usize;
    let dir = r.directory(count)?;
    let mut entries: Vec<Entry> = Vec::with_capacity(count.min(4096));
    for i in 0..count {
        r.at_slot(dir, i)?;
        let (key, value) = leaf_entry(r)?;
        if entries.last().is_some_and(|p| p.key.as_slice() >= key) {
            return Err(r.malformed("leaf keys out of order"));
        }
        entries.push(Entry {
            key: key.to_vec(),
            value: value.to_value(),
        });
    }
    Ok(Leaf { entries })
}

fn decode_inner(r: &mut Reader<'_>) -> Result<Inner, TreeError> {
    let count = r.u16()? as usize;
    if count == 0 {
        return Err(r.malformed("inner node without children"));
    }
    let mut children = Vec::with_capacity(count.min(4096));
    let mut seps: Vec<Vec<u8>> = Vec::with_capacity(count.min(4096));
    children.push(r.child()?);
    let dir = r.directory(count - 1)?;
    for i in 0..count - 1 {
        r.at_slot(dir, i)?;
        let (sep, child) = inner_entry(r)?;
        if seps.last().is_some_and(|p| p.as_slice() >= sep) {
            return Err(r.malformed("separators out of order"));
        }
        seps.push(sep.to_vec());
        children.push(child);
    }
    Ok(Inner { children, seps })
}

/// What a point lookup found in one page.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A leaf: the key's value, if present.
    Leaf(Option<Value>),
    /// An inner node: the child to descend into.
    Child(PageId),
}

/// Looks `key` up in a page without decoding the whole node: a binary
/// search over its slot directory, parsing only the entries it probes. It
/// bounds every read and checks that the keys it probes are in order
/// (N1, N2: each lies strictly between the nearest probed keys below and
/// above it), but not the entries it does not reach (the checksum covers
/// those).
///
/// # Errors
/// [`TreeError::Malformed`] for a broken entry or slot on the way, or
/// [`crate::page::PageError::UnexpectedKind`] for a non-tree page.
pub fn lookup(page: &Page<'_>, key: &[u8], want: Want) -> Result<Found, TreeError> {
    let mut r = Reader::new(page.body, page.id);
    match page.kind {
        PageKind::Leaf => {
            let count = r.u16()? as usize;
            let dir = r.directory(count)?;
            let (mut lo, mut hi) = (0, count);
            let (mut below, mut above): (Option<&[u8]>, Option<&[u8]>) = (None, None);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                r.seek_slot(dir, mid)?;
                let (k, v) = leaf_entry(&mut r)?;
                if below.is_some_and(|b| b >= k) || above.is_some_and(|a| a <= k) {
                    return Err(r.malformed("leaf keys out of order"));
                }
                match k.cmp(key) {
                    Ordering::Less => {
                        below = Some(k);
                        lo = mid + 1;
                    }
                    Ordering::Equal => return Ok(Found::Leaf(Some(v.found(want)))),
                    Ordering::Greater => {
                        above = Some(k);
                        hi = mid;
                    }
                }
            }
            Ok(Found::Leaf(None))
        }
        PageKind::Inner => {
            let count = r.u16()? as usize;
            if count == 0 {
                return Err(r.malformed("inner node without children"));
            }
            let first = r.child()?;
            let dir = r.directory(count - 1)?;
            // The number of separators <= key: the index of the child.
            let (mut lo, mut hi) = (0, count - 1);
            let (mut below, mut above): (Option<&[u8]>, Option<&[u8]>) = (None, None);
            let mut child = first;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                r.seek_slot(dir, mid)?;
                let (sep, next) = inner_entry(&mut r)?;
                if below.is_some_and(|b| b >= sep) || above.is_some_and(|a| a <= sep) {
                    return Err(r.malformed("separators out of order"));
                }
                if sep <= key {
                    below = Some(sep);
                    child = next;
                    lo = mid + 1;
                } else {
                    above = Some(sep);
                    hi = mid;
                }
            }
            // `child` is the child after the last separator <= key seen,
            // which is separator lo - 1 (or child 0 when there is none).
            Ok(Found::Child(child))
        }
        found => Err(crate::page::PageError::UnexpectedKind {
            page: page.id,
            expected: PageKind::Leaf,
            found,
        }
        .into()),
    }
}

struct Writer<'a> {
    b: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    /// Appends `bytes`; callers keep nodes within the body (they split
    /// before encoding), and a write past it is dropped, not a panic.
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.b.get_mut(self.at..self.at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.at += bytes.len();
    }

    /// Skips a slot directory of `n` offsets; returns where it starts.
    fn reserve(&mut self, n: usize) -> usize {
        let at = self.at;
        self.at += n * SLOT;
        at
    }

    /// Records the current position as entry `i`'s offset in the
    /// directory at `dir`.
    fn slot(&mut self, dir: usize, i: usize) {
        let off = (self.at as u16).to_le_bytes();
        if let Some(dst) = self.b.get_mut(dir + i * SLOT..dir + (i + 1) * SLOT) {
            dst.copy_from_slice(&off);
        }
    }
}

/// A slot directory's place in a body: where it starts and its length.
#[derive(Clone, Copy)]
struct Dir {
    start: usize,
    n: usize,
}

/// Bounds-checked reads of a page body.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    page: PageId,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8], page: PageId) -> Self {
        Reader { b, at: 0, page }
    }

    fn malformed(&self, what: &'static str) -> TreeError {
        TreeError::Malformed {
            page: self.page,
            what,
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], TreeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or(self.malformed("entry runs past the body"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TreeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, TreeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, TreeError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, TreeError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, TreeError> {
        self.array().map(u64::from_le_bytes)
    }

    fn key(&mut self, len: usize) -> Result<&'a [u8], TreeError> {
        if len > MAX_TREE_KEY {
            return Err(self.malformed("key longer than the bound"));
        }
        self.bytes(len)
    }

    fn child(&mut self) -> Result<PageId, TreeError> {
        match self.u64()? {
            0 => Err(self.malformed("null child")),
            c => Ok(PageId(c)),
        }
    }

    /// The slot directory of `n` offsets at the current position, skipped
    /// over.
    fn directory(&mut self, n: usize) -> Result<Dir, TreeError> {
        let start = self.at;
        let len = n
            .checked_mul(SLOT)
            .ok_or(self.malformed("slot directory too large"))?;
        self.bytes(len)?;
        Ok(Dir { start, n })
    }

    fn offset(&self, dir: Dir, i: usize) -> Result<usize, TreeError> {
        let at = dir.start + i * SLOT;
        match (i < dir.n, self.b.get(at..at + SLOT)) {
            (true, Some(s)) => Ok(u16::from_le_bytes([s[0], s[1]]) as usize),
            _ => Err(self.malformed("slot past the directory")),
        }
    }

    /// Checks that entry `i`'s slot points at the current position
    /// (decoding reads the entries in order).
    fn at_slot(&self, dir: Dir, i: usize) -> Result<(), TreeError> {
        if self.offset(dir, i)? != self.at {
            return Err(self.malformed("slot does not point at its entry"));
        }
        Ok(())
    }

    /// Moves to entry `i`; an offset into the header or the directory
    /// itself, or past the body, is malformed.
    fn seek_slot(&mut self, dir: Dir, i: usize) -> Result<(), TreeError> {
        let off = self.offset(dir, i)?;
        if off < dir.start + dir.n * SLOT || off >= self.b.len() {
            return Err(self.malformed("slot outside the entries"));
        }
        self.at = off;
        Ok(())
    }

    fn finish(&self) -> Result<(), TreeError> {
        if self.at == self.b.len() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes after the node"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(keys: &[&[u8]]) -> Leaf {
        Leaf {
            entries: keys
                .iter()
                .map(|k| Entry {
                    key: k.to_vec(),
                    value: Value::Inline(vec![1; 100]),
                })
                .collect(),
        }
    }

    fn round_trip(node: &Node) -> Node {
        let size = PageSize::MIN;
        let mut buf = PageBuf::new(size);
        let bytes = node.encode(&mut buf, PageId(4), 1).to_vec();
        let page = Page::open(&bytes, size, PageId(4)).unwrap();
        Node::decode(&page).unwrap()
    }

    #[test]
    fn nodes_round_trip() {
        let mut l = leaf(&[b"a", b"b", b"c"]);
        l.entries[1].value = Value::Overflow {
            head: PageId(9),
            len: 1 << 20,
        };
        let n = Node::Leaf(l);
        assert_eq!(round_trip(&n), n);
        assert_eq!(n.encoded_len(), round_trip(&n).encoded_len());
        let n = Node::Inner(Inner {
            children: vec![PageId(3), PageId(5), PageId(7)],
            seps: vec![b"k".to_vec(), b"t".to_vec()],
        });
        assert_eq!(round_trip(&n), n);
        assert_eq!(n.encoded_len(), round_trip(&n).encoded_len());
    }

    #[test]
    fn leaf_split_keeps_order_and_separates() {
        let keys: Vec<Vec<u8>> = (0..40u32)
            .map(|i| format!("key{i:04}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let mut l = leaf(&refs);
        let (sep, r) = l.split().unwrap();
        assert!(!l.entries.is_empty() && !r.entries.is_empty());
        let last = &l.entries.last().unwrap().key;
        let first = &r.entries[0].key;
        assert!(last.as_slice() < sep.as_slice() && sep.as_slice() <= first.as_slice());
        assert!(l.encoded_len() <= PageSize::MIN.body_capacity());
    }

    #[test]
    fn inner_split_moves_one_separator_up() {
        let mut n = Inner {
            children: (1..=6).map(PageId).collect(),
            seps: (b'b'..=b'f').map(|c| vec![c]).collect(),
        };
        let (up, r) = n.split().unwrap();
        assert_eq!(n.children.len(), n.seps.len() + 1);
        assert_eq!(r.children.len(), r.seps.len() + 1);
        assert_eq!(n.children.len() + r.children.len(), 6);
        assert!(n.seps.iter().all(|s| *s < up) && r.seps.iter().all(|s| *s > up));
    }

    #[test]
    fn lookup_agrees_with_the_decoded_node() {
        let size = PageSize::MIN;
        for node in [sample_leaf(), sample_inner()] {
            let mut buf = PageBuf::new(size);
            let bytes = node.encode(&mut buf, PageId(4), 1).to_vec();
            let page = Page::open(&bytes, size, PageId(4)).unwrap();
            for key in [&b""[..], b"a", b"apple", b"cherry", b"d", b"e", b"k", b"z"] {
                let want = match &node {
                    Node::Leaf(l) => {
                        Found::Leaf(l.search(key).ok().map(|i| l.entries[i].value.clone()))
                    }
                    Node::Inner(n) => Found::Child(n.children[n.child_index(key)]),
                };
                assert_eq!(lookup(&page, key, Want::Value).unwrap(), want, "{key:?}");
            }
        }
    }

    #[test]
    fn binary_search_agrees_with_the_decoded_node_at_every_size() {
        let size = PageSize::MIN;
        for n in 1..=60u32 {
            let keys: Vec<Vec<u8>> = (0..n)
                .map(|i| format!("k{:04}", i * 2).into_bytes())
                .collect();
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
            let mut l = leaf(&refs);
            for e in &mut l.entries {
                e.value = Value::Inline(vec![7; 20]);
            }
            let inner = Inner {
                children: (0..=n as u64).map(|c| PageId(100 + c)).collect(),
                seps: keys.clone(),
            };
            for node in [Node::Leaf(l), Node::Inner(inner)] {
                let mut buf = PageBuf::new(size);
                let bytes = node.encode(&mut buf, PageId(4), 1).to_vec();
                let page = Page::open(&bytes, size, PageId(4)).unwrap();
                assert_eq!(Node::decode(&page).unwrap(), node);
                // Every key, every gap between keys, and both ends.
                for i in 0..=2 * n + 1 {
                    let probe = format!("k{:04}", i).into_bytes();
                    for key in [probe.as_slice(), b"", b"z"] {
                        let want = match &node {
                            Node::Leaf(l) => {
                                Found::Leaf(l.search(key).ok().map(|i| l.entries[i].value.clone()))
                            }
                            Node::Inner(x) => Found::Child(x.children[x.child_index(key)]),
                        };
                        assert_eq!(
                            lookup(&page, key, Want::Value).unwrap(),
                            want,
                            "{n} {key:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_slot_pointing_elsewhere_is_malformed() {
        let size = PageSize::MIN;
        for node in [sample_leaf(), sample_inner()] {
            let mut buf = PageBuf::new(size);
            let body_len = node.encoded_len();
            node.encode(&mut buf, PageId(4), 1);
            let kind = match node {
                Node::Leaf(_) => PageKind::Leaf,
                Node::Inner(_) => PageKind::Inner,
            };
            // The directory's first slot, after the count (and child 0).
            let dir = if kind == PageKind::Leaf { 2 } else { 10 };
            for off in [0u16, dir as u16, 3000, u16::MAX] {
                buf.body_mut()[dir..dir + 2].copy_from_slice(&off.to_le_bytes());
                let bytes = buf.seal(PageId(4), kind, 1, body_len).to_vec();
                let page = Page::open(&bytes, size, PageId(4)).unwrap();
                assert!(matches!(
                    Node::decode(&page),
                    Err(TreeError::Malformed { .. })
                ));
                // A lookup probing that slot refuses it too, never panics.
                for key in [&b""[..], b"apple", b"d", b"zzz"] {
                    let _ = lookup(&page, key, Want::Value);
                }
            }
        }
    }

    #[test]
    fn child_index_follows_separators() {
        let n = Inner {
            children: vec![PageId(3), PageId(5), PageId(7)],
            seps: vec![b"k".to_vec(), b"t".to_vec()],
        };
        assert_eq!(n.child_index(b"a"), 0);
        assert_eq!(n.child_index(b"k"), 1);
        assert_eq!(n.child_index(b"s"), 1);
        assert_eq!(n.child_index(b"t"), 2);
    }

    #[test]
    fn broken_structure_is_malformed() {
        let size = PageSize::MIN;
        let mut buf = PageBuf::new(size);
        // Keys out of order under a valid checksum.
        let n = Node::Leaf(leaf(&[b"b", b"a"]));
        let bytes = n.encode(&mut buf, PageId(4), 1).to_vec();
        let page = Page::open(&bytes, size, PageId(4)).unwrap();
        assert!(matches!(
            Node::decode(&page),
            Err(TreeError::Malformed {
                page: PageId(4),
                ..
            })
        ));
        // A count promising more entries than the body has.
        let body = buf.body_mut();
        body[..2].copy_from_slice(&500u16.to_le_bytes());
        let bytes = buf.seal(PageId(4), PageKind::Leaf, 1, 10).to_vec();
        let page = Page::open(&bytes, size, PageId(4)).unwrap();
        assert!(Node::decode(&page).is_err());
    }

    const KINDS: [PageKind; 4] = [
        PageKind::Leaf,
        PageKind::Inner,
        PageKind::Overflow,
        PageKind::FreeList,
    ];

    fn sample_leaf() -> Node {
        let mut l = leaf(&[b"apple", b"banana", b"cherry", b"damson"]);
        l.entries[2].value = Value::Overflow {
            head: PageId(9),
            len: 70_000,
        };
        Node::Leaf(l)
    }

    fn sample_inner() -> Node {
        Node::Inner(Inner {
            children: vec![PageId(3), PageId(5), PageId(7), PageId(8)],
            seps: vec![b"d".to_vec(), b"k".to_vec(), b"t".to_vec()],
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any body under a valid checksum: a node or an error, no panic.
        #[test]
        fn arbitrary_bodies_never_panic(
            kind in 0usize..4,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        ) {
            let size = PageSize::MIN;
            let mut buf = PageBuf::new(size);
            buf.body_mut()[..body.len()].copy_from_slice(&body);
            let bytes = buf.seal(PageId(4), KINDS[kind], 1, body.len()).to_vec();
            let page = Page::open(&bytes, size, PageId(4)).unwrap();
            let _ = Node::decode(&page);
            let _ = lookup(&page, &body[..body.len().min(8)], Want::Value);
        }

        /// Valid nodes with bytes changed under a valid checksum: decoding
        /// never panics, and what it accepts encodes again to a valid page.
        #[test]
        fn damaged_nodes_never_panic(
            inner in proptest::prelude::any::<bool>(),
            edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..6),
        ) {
            let size = PageSize::MIN;
            let node = if inner { sample_inner() } else { sample_leaf() };
            let mut buf = PageBuf::new(size);
            let len = node.encode(&mut buf, PageId(4), 1).len();
            assert_eq!(len, size.bytes());
            let body_len = node.encoded_len();
            for (at, b) in edits {
                buf.body_mut()[at % body_len] = b;
            }
            let kind = if inner { PageKind::Inner } else { PageKind::Leaf };
            let bytes = buf.seal(PageId(4), kind, 1, body_len).to_vec();
            let page = Page::open(&bytes, size, PageId(4)).unwrap();
            let _ = lookup(&page, b"cherry", Want::Value);
            if let Ok(n) = Node::decode(&page) {
                let mut again = PageBuf::new(size);
                let bytes = n.encode(&mut again, PageId(4), 1).to_vec();
                let page = Page::open(&bytes, size, PageId(4)).unwrap();
                proptest::prop_assert_eq!(Node::decode(&page).unwrap(), n);
            }
        }

        /// Free-list bodies: a list or `None`, no panic.
        #[test]
        fn arbitrary_free_list_bodies_never_panic(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let _ = super::super::free::decode_list_page(&body);
        }
    }

    #[test]
    fn inline_bound_is_a_quarter_page() {
        assert!(fits_inline(PageSize::MIN, 10, 900));
        assert!(!fits_inline(PageSize::MIN, 10, 1100));
        assert!(fits_inline(PageSize::new(65536).unwrap(), 10, 10_000));
        // Beside the longest key only values no larger than a reference.
        assert!(fits_inline(PageSize::MIN, MAX_TREE_KEY, 12));
        assert!(!fits_inline(PageSize::MIN, MAX_TREE_KEY, 13));
    }
}
