//! Tables: the namespace of a key (EloqStore's `TableIdent`).
//!
//! A table is a 32-bit id (the Redis front will map `SELECT n` to table
//! `n`; named tables can map names to ids in a catalog table later). In
//! the tree a key is stored as the table id in big endian followed by the
//! user key, so byte order sorts by table first and each table's keys form
//! one contiguous range: a scan of one table is a range scan between two
//! prefixes, and a table's keys can never be confused with another's.

use crate::btree::MAX_TREE_KEY;
use std::fmt;

/// Bytes of the table prefix in a tree key.
const PREFIX: usize = 4;

/// Longest user key: 1 KiB (the tree bound less the prefix).
pub const MAX_KEY: usize = MAX_TREE_KEY - PREFIX;
const _: () = assert!(MAX_KEY == 1024);

/// A table's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(pub u32);

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table {}", self.0)
    }
}

impl TableId {
    /// The tree key of `key` in this table.
    pub fn key(self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(PREFIX + key.len());
        k.extend_from_slice(&self.0.to_be_bytes());
        k.extend_from_slice(key);
        k
    }

    /// The tree key of `key` in this table, written into `out` (replacing
    /// what it held; no allocation once `out` has the room).
    pub fn key_into(self, key: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(key);
    }

    /// The first tree key past this table, `None` for the last table.
    pub fn end(self) -> Option<Vec<u8>> {
        self.0.checked_add(1).map(|n| n.to_be_bytes().to_vec())
    }

    /// The user key of a tree key of this table.
    pub fn strip(self, tree_key: &[u8]) -> Option<&[u8]> {
        tree_key.strip_prefix(&self.0.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_contiguous_and_ordered() {
        let a = TableId(1);
        let b = TableId(2);
        assert!(a.key(&[0xff; 10]) < b.key(b""));
        assert!(a.key(b"zz") < a.end().unwrap());
        assert_eq!(a.end().unwrap(), b.key(b""));
        assert_eq!(a.strip(&a.key(b"k")), Some(&b"k"[..]));
        assert_eq!(a.strip(&b.key(b"k")), None);
        assert_eq!(TableId(u32::MAX).end(), None);
        let mut buf = b"left over".to_vec();
        a.key_into(b"k", &mut buf);
        assert_eq!(buf, a.key(b"k"));
    }
}
