//! Sparse values being assembled: ElCache's staging area, where a value
//! of a known total size is written range by range (in any order,
//! overlapping writes allowed, the last one winning) and becomes an
//! ordinary entry only when finalized with every byte written.
//!
//! A staging entry is separate from the stored entries: its key is not
//! readable by GET until it is finalized, and a stored value under the
//! same key is untouched until then (finalize replaces it).
//!
//! Unlike ElCache, which allocates `total_size` bytes at create, the
//! bytes are allocated lazily, one [`CHUNK`] at a time as writes reach
//! it, and the area is bounded: a value may be at most the caller's
//! limit, and the sum of the total sizes of the open entries at most the
//! area's `capacity` (the reservation is taken at create, so writes
//! never fail for lack of room).
//!
//! **Invariants.** S1: `reserved` is the sum of the `total`s of the open
//! entries, at most `capacity`. S2: an entry's `written` ranges are
//! disjoint, sorted, non-adjacent and within `[0, total)`, and
//! `covered` is the sum of their lengths. S3: chunk `i` is allocated
//! (with exactly [`chunk_len`] bytes) once any write touched it, so
//! when `covered == total` every chunk is allocated.

use crate::engine::{CHUNK, Staged};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Why a sparse operation did nothing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SparseError {
    #[error("a sparse entry with this key is already being written")]
    Exists,
    #[error("no sparse entry with this key")]
    Missing,
    #[error("a sparse value of {size} bytes is over the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error(
        "the sparse staging area is full ({reserved} of {capacity} bytes reserved, {size} asked)"
    )]
    NoRoom {
        size: u64,
        reserved: u64,
        capacity: u64,
    },
    #[error("bytes {offset}..{offset}+{len} are outside the sparse value of {total} bytes")]
    OutOfRange { offset: u64, len: u64, total: u64 },
    #[error("the sparse value is incomplete: {written} of {total} bytes written")]
    Incomplete { written: u64, total: u64 },
}

/// How far a sparse entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub written: u64,
    pub total: u64,
}

impl Progress {
    /// Percent of the bytes written (100 for an empty value).
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.written as f64 * 100.0 / self.total as f64
        }
    }

    pub fn complete(&self) -> bool {
        self.written == self.total
    }
}

/// A finalized sparse value, ready to commit.
#[derive(Debug)]
pub struct Finished {
    pub staged: Staged,
    pub ttl: Option<Duration>,
    pub flags: u32,
}

#[derive(Debug)]
struct Entry {
    total: u64,
    /// S3: chunk `i` once written to.
    chunks: Vec<Option<Vec<u8>>>,
    /// S2: start -> end of each written range.
    written: BTreeMap<u64, u64>,
    covered: u64,
    ttl: Option<Duration>,
    flags: u32,
}

/// Bytes of chunk `i` of a value of `total` bytes.
fn chunk_len(total: u64, i: u64) -> usize {
    let start = i * CHUNK as u64;
    // At most CHUNK, so it fits.
    total.saturating_sub(start).min(CHUNK as u64) as usize
}

impl Entry {
    /// S2: marks `[start, end)` written.
    fn mark(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        // Merge with every range that overlaps or touches [start, end).
        let first = self
            .written
            .range(..=start)
            .next_back()
            .filter(|&(_, &e)| e >= start)
            .map(|(&s, _)| s);
        if let Some(s) = first {
            start = s;
        }
        let touching: Vec<(u64, u64)> = self
            .written
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.written.remove(&s);
            self.covered -= e - s;
            end = end.max(e);
        }
        self.written.insert(start, end);
        self.covered += end - start;
    }

    fn progress(&self) -> Progress {
        Progress {
            written: self.covered,
            total: self.total,
        }
    }
}

/// One worker's staging area.
#[derive(Debug)]
pub struct SparseArea {
    entries: HashMap<Vec<u8>, Entry>,
    /// S1.
    reserved: u64,
    capacity: u64,
}

impl SparseArea {
    /// An area whose open entries total at most `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        SparseArea {
            entries: HashMap::new(),
            reserved: 0,
            capacity,
        }
    }

    /// Opens a sparse entry of `total` bytes (0 allowed) under `key`.
    ///
    /// # Errors
    /// [`SparseError::Exists`], [`SparseError::TooLarge`] (over `limit`),
    /// [`SparseError::NoRoom`] (S1).
    pub fn create(
        &mut self,
        key: &[u8],
        total: u64,
        limit: u64,
        ttl: Option<Duration>,
        flags: u32,
    ) -> Result<(), SparseError> {
        if self.entries.contains_key(key) {
            return Err(SparseError::Exists);
        }
        if total > limit {
            return Err(SparseError::TooLarge { size: total, limit });
        }
        if self
            .reserved
            .checked_add(total)
            .is_none_or(|r| r > self.capacity)
        {
            return Err(SparseError::NoRoom {
                size: total,
                reserved: self.reserved,
                capacity: self.capacity,
            });
        }
        let chunks = total.div_ceil(CHUNK as u64);
        self.reserved += total;
        self.entries.insert(
            key.to_vec(),
            Entry {
                total,
                chunks: (0..chunks).map(|_| None).collect(),
                written: BTreeMap::new(),
                covered: 0,
                ttl,
                flags,
            },
        );
        Ok(())
    }

    /// Writes `data` (a run of pieces, in order) at `offset`.
    ///
    /// # Errors
    /// [`SparseError::Missing`]; [`SparseError::OutOfRange`] when
    /// `offset + len` passes the total size (nothing is written then).
    pub fn write<'a>(
        &mut self,
        key: &[u8],
        offset: u64,
        data: impl Iterator<Item = &'a [u8]> + Clone,
    ) -> Result<Progress, SparseError> {
        let entry = self.entries.get_mut(key).ok_or(SparseError::Missing)?;
        let len: u64 = data.clone().map(|d| d.len() as u64).sum();
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= entry.total)
            .ok_or(SparseError::OutOfRange {
                offset,
                len,
                total: entry.total,
            })?;
        let mut at = offset;
        for piece in data {
            let mut rest = piece;
            while !rest.is_empty() {
                let index = at / CHUNK as u64;
                let within = (at % CHUNK as u64) as usize;
                let clen = chunk_len(entry.total, index);
                let Some(slot) = usize::try_from(index)
                    .ok()
                    .and_then(|i| entry.chunks.get_mut(i))
                else {
                    // Unreachable: `end <= total` bounds the index.
                    break;
                };
                let chunk = slot.get_or_insert_with(|| vec![0; clen]);
                let n = rest.len().min(clen - within);
                chunk[within..within + n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                at += n as u64;
            }
        }
        entry.mark(offset, end);
        Ok(entry.progress())
    }

    /// How far `key` is, if it is open.
    pub fn progress(&self, key: &[u8]) -> Option<Progress> {
        self.entries.get(key).map(Entry::progress)
    }

    /// Closes `key` if every byte was written, returning its value (and
    /// its TTL and flags, each replaced by the override when given).
    ///
    /// # Errors
    /// [`SparseError::Missing`], or [`SparseError::Incomplete`] (the entry
    /// stays open).
    pub fn finalize(
        &mut self,
        key: &[u8],
        ttl: Option<Option<Duration>>,
        flags: Option<u32>,
    ) -> Result<Finished, SparseError> {
        let entry = self.entries.get(key).ok_or(SparseError::Missing)?;
        if entry.covered < entry.total {
            return Err(SparseError::Incomplete {
                written: entry.covered,
                total: entry.total,
            });
        }
        let Some(entry) = self.entries.remove(key) else {
            return Err(SparseError::Missing);
        };
        self.reserved -= entry.total;
        let mut staged = Staged::default();
        for (i, chunk) in entry.chunks.into_iter().enumerate() {
            // S3: all allocated when complete; zeros would be the bytes
            // of an unwritten chunk, which cannot remain here.
            let data = chunk.unwrap_or_else(|| vec![0; chunk_len(entry.total, i as u64)]);
            if staged.push(data).is_err() {
                // Unreachable: chunks are full-sized but the last.
                return Err(SparseError::Incomplete {
                    written: entry.covered,
                    total: entry.total,
                });
            }
        }
        Ok(Finished {
            staged,
            ttl: ttl.unwrap_or(entry.ttl),
            flags: flags.unwrap_or(entry.flags),
        })
    }

    /// Drops `key`'s staging entry; whether there was one.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.remove(key) {
            Some(e) => {
                self.reserved -= e.total;
                true
            }
            None => false,
        }
    }

    /// Open entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    fn check(&self) {
        let sum: u64 = self.entries.values().map(|e| e.total).sum();
        assert_eq!(sum, self.reserved, "S1");
        assert!(self.reserved <= self.capacity, "S1");
        for e in self.entries.values() {
            let mut last_end = None;
            let mut covered = 0;
            for (&s, &en) in &e.written {
                assert!(s < en && en <= e.total, "S2 bounds");
                assert!(last_end.is_none_or(|l| l < s), "S2 disjoint");
                last_end = Some(en);
                covered += en - s;
            }
            assert_eq!(covered, e.covered, "S2 covered");
            for (i, c) in e.chunks.iter().enumerate() {
                if let Some(c) = c {
                    assert_eq!(c.len(), chunk_len(e.total, i as u64), "S3");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(
        a: &mut SparseArea,
        key: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<Progress, SparseError> {
        let r = a.write(key, offset, std::iter::once(data));
        a.check();
        r
    }

    #[test]
    fn writes_in_any_order_complete_and_finalize() {
        let mut a = SparseArea::new(1 << 30);
        a.create(b"k", 10, 100, None, 7).unwrap();
        assert_eq!(a.create(b"k", 10, 100, None, 0), Err(SparseError::Exists));
        assert_eq!(w(&mut a, b"k", 5, b"56789").unwrap().written, 5);
        assert_eq!(
            a.finalize(b"k", None, None).unwrap_err(),
            SparseError::Incomplete {
                written: 5,
                total: 10
            }
        );
        // Overlapping, last write wins.
        assert_eq!(w(&mut a, b"k", 0, b"xxxxxx").unwrap().written, 10);
        assert_eq!(w(&mut a, b"k", 0, b"01234").unwrap().percent(), 100.0);
        let f = a.finalize(b"k", None, None).unwrap();
        assert_eq!(f.flags, 7);
        assert_eq!(f.staged.size(), 10);
        // Byte 5: "56789" then "xxxxxx" wrote it, the last one wins.
        assert_eq!(crate::engine::staged_bytes(&f.staged), b"01234x6789");
        assert_eq!(a.progress(b"k"), None);
        assert_eq!(
            a.finalize(b"k", None, None).unwrap_err(),
            SparseError::Missing
        );
        a.check();
    }

    #[test]
    fn ranges_and_limits_are_checked() {
        let mut a = SparseArea::new(100);
        assert_eq!(
            a.create(b"big", 101, 200, None, 0),
            Err(SparseError::NoRoom {
                size: 101,
                reserved: 0,
                capacity: 100
            })
        );
        assert_eq!(
            a.create(b"big", 60, 50, None, 0),
            Err(SparseError::TooLarge {
                size: 60,
                limit: 50
            })
        );
        a.create(b"a", 60, 100, None, 0).unwrap();
        assert!(matches!(
            a.create(b"b", 41, 100, None, 0),
            Err(SparseError::NoRoom { .. })
        ));
        assert_eq!(
            w(&mut a, b"a", 55, b"123456"),
            Err(SparseError::OutOfRange {
                offset: 55,
                len: 6,
                total: 60
            })
        );
        assert!(matches!(
            w(&mut a, b"a", u64::MAX, b"1"),
            Err(SparseError::OutOfRange { .. })
        ));
        assert_eq!(
            w(&mut a, b"a", 60, b"").unwrap().written,
            0,
            "empty write at the end"
        );
        assert_eq!(w(&mut a, b"nope", 0, b"1"), Err(SparseError::Missing));
        assert!(a.remove(b"a"));
        assert!(!a.remove(b"a"));
        a.create(b"b", 100, 100, None, 0).unwrap();
        a.create(b"empty", 0, 100, None, 0).unwrap();
        assert!(a.progress(b"empty").unwrap().complete());
        assert_eq!(a.finalize(b"empty", None, None).unwrap().staged.size(), 0);
        a.check();
    }

    #[test]
    fn unaligned_writes_across_chunks() {
        let total = 2 * CHUNK as u64 + 10;
        let mut a = SparseArea::new(total);
        a.create(b"v", total, total, Some(Duration::from_secs(9)), 0)
            .unwrap();
        let value: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
        // Three writes that straddle chunk boundaries, out of order.
        let cuts = [0usize, CHUNK - 3, CHUNK + CHUNK / 2, total as usize];
        for pair in [(1, 2), (2, 3), (0, 1)] {
            let (s, e) = (cuts[pair.0], cuts[pair.1]);
            let pieces: Vec<&[u8]> = value[s..e].chunks(1000).collect();
            a.write(b"v", s as u64, pieces.into_iter()).unwrap();
            a.check();
        }
        let f = a.finalize(b"v", Some(None), Some(3)).unwrap();
        assert_eq!((f.ttl, f.flags), (None, 3), "overrides");
        assert_eq!(crate::engine::staged_bytes(&f.staged), value);
    }

    #[test]
    fn merging_ranges_counts_each_byte_once() {
        let mut a = SparseArea::new(1000);
        a.create(b"m", 100, 1000, None, 0).unwrap();
        let mut x = 12345u64;
        let mut model = [false; 100];
        for _ in 0..500 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let s = (x >> 33) % 100;
            let len = ((x >> 20) % 12).min(100 - s);
            let p = w(&mut a, b"m", s, &vec![1; len as usize]).unwrap();
            for b in &mut model[s as usize..(s + len) as usize] {
                *b = true;
            }
            assert_eq!(p.written, model.iter().filter(|&&b| b).count() as u64);
        }
    }
}
