//! Fixed-size pages: the unit in which a shard's data file is read and
//! written.
//!
//! Every page starts with a 32-byte header (little endian):
//!
//! ```text
//! off len field
//!   0   4 CRC32C of bytes 4..page_size (header rest, body and zero padding)
//!   4   4 magic "SNPG"
//!   8   1 kind (PageKind)
//!   9   1 format version (2: tree pages carry a slot directory,
//!         `btree/node.rs`; version 1 files are refused)
//!  10   2 zero
//!  12   4 body length (bytes of the body in use)
//!  16   8 page id (the page's own index in the file)
//!  24   8 epoch: the sequence number of the checkpoint the page was written for
//!  32   .. body, then zeros to the end of the page
//! ```
//!
//! **Invariant P1:** a page is served only if its length is the page size,
//! its checksum, magic, version and kind are valid, it names the id it was
//! read from, and its body length fits. [`Page::open`] checks all of these
//! and returns a [`PageError`] naming the page; it never panics, whatever
//! the bytes.
//!
//! The epoch lets a reader refuse a page that was rewritten after the
//! checkpoint it is reading (see `btree::pager`): a page id alone cannot
//! tell a reused page from the one a checkpoint referenced.

use std::fmt;
use thiserror::Error;

/// Bytes of the header before every page's body.
pub const HEADER_LEN: usize = 32;
const MAGIC: [u8; 4] = *b"SNPG";
/// The page format this build reads and writes. Version 1 (tree pages
/// without a slot directory) is refused with [`PageError::BadVersion`].
pub const VERSION: u8 = 2;

/// A page's index in its data file; its byte offset is `id * page_size`.
/// Id 0 is never a data page (the manifest slots live there), so 0 encodes
/// "no page" on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageId(pub u64);

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {}", self.0)
    }
}

/// The page size of a data file: a power of two from 4 KiB to 64 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize(u32);

/// A page size outside 4 KiB..=64 KiB or not a power of two.
#[derive(Debug, Error)]
#[error("page size {0} is not a power of two from 4096 to 65536")]
pub struct PageSizeError(pub u64);

impl PageSize {
    /// The smallest and default page size.
    pub const MIN: PageSize = PageSize(4096);
    const MAX: u32 = 65536;

    /// `bytes` as a page size, if it is a power of two in range.
    pub fn new(bytes: u64) -> Result<Self, PageSizeError> {
        if bytes.is_power_of_two() && (Self::MIN.0 as u64..=Self::MAX as u64).contains(&bytes) {
            Ok(PageSize(bytes as u32))
        } else {
            Err(PageSizeError(bytes))
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> usize {
        self.0 as usize
    }

    /// Bytes available to a page's body.
    pub fn body_capacity(self) -> usize {
        self.bytes() - HEADER_LEN
    }

    /// The byte offset of page `id` in the data file.
    pub fn offset(self, id: PageId) -> u64 {
        id.0.saturating_mul(self.0 as u64)
    }
}

/// What a page holds. Manifest slots have a format of their own
/// (`manifest.rs`) and are not pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageKind {
    /// A B+tree leaf: sorted keys with inline values or overflow references.
    Leaf = 1,
    /// A B+tree inner node: separators and child page ids.
    Inner = 2,
    /// One link of a value's overflow chain.
    Overflow = 3,
    /// One link of the checkpoint's free-page list.
    FreeList = 4,
}

impl PageKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => PageKind::Leaf,
            2 => PageKind::Inner,
            3 => PageKind::Overflow,
            4 => PageKind::FreeList,
            _ => return None,
        })
    }
}

/// Why a page read from disk was refused (invariant P1).
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageError {
    /// Fewer (or more) bytes than a page: the file ends inside it.
    #[error("{page}: truncated ({len} of {expected} bytes)")]
    Truncated {
        page: PageId,
        len: usize,
        expected: usize,
    },
    /// The checksum does not match the contents.
    #[error("{page}: bad checksum (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        page: PageId,
        stored: u32,
        computed: u32,
    },
    /// The checksum matches but the magic does not: not a page of ours.
    #[error("{page}: bad magic")]
    BadMagic { page: PageId },
    /// A format version this code does not read.
    #[error("{page}: unknown format version {version}")]
    BadVersion { page: PageId, version: u8 },
    /// An unknown kind byte.
    #[error("{page}: unknown page kind {kind}")]
    BadKind { page: PageId, kind: u8 },
    /// The page names another id: written to the wrong place, or misread.
    #[error("{page}: holds page {found}")]
    WrongId { page: PageId, found: u64 },
    /// The body length runs past the page.
    #[error("{page}: body length {body_len} exceeds the page")]
    BadLength { page: PageId, body_len: usize },
    /// A valid page, but not the kind its reference expects.
    #[error("{page}: expected a {expected:?} page, found {found:?}")]
    UnexpectedKind {
        page: PageId,
        expected: PageKind,
        found: PageKind,
    },
}

/// A page-sized buffer being filled for writing.
#[derive(Debug)]
pub struct PageBuf(Vec<u8>);

impl PageBuf {
    /// A zeroed page.
    pub fn new(size: PageSize) -> Self {
        PageBuf(vec![0; size.bytes()])
    }

    /// The body, to be filled before [`PageBuf::seal`].
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.0[HEADER_LEN..]
    }

    /// Writes the header for page `id` of `kind` whose body's first
    /// `body_len` bytes are in use, zeroes the rest of the body and sets the
    /// checksum. Returns the page's bytes.
    pub fn seal(&mut self, id: PageId, kind: PageKind, epoch: u64, body_len: usize) -> &[u8] {
        let body_len = body_len.min(self.0.len() - HEADER_LEN);
        self.0[HEADER_LEN + body_len..].fill(0);
        self.0[4..8].copy_from_slice(&MAGIC);
        self.0[8] = kind as u8;
        self.0[9] = VERSION;
        self.0[10..12].fill(0);
        self.0[12..16].copy_from_slice(&(body_len as u32).to_le_bytes());
        self.0[16..24].copy_from_slice(&id.0.to_le_bytes());
        self.0[24..32].copy_from_slice(&epoch.to_le_bytes());
        let crc = crc32c::crc32c(&self.0[4..]);
        self.0[0..4].copy_from_slice(&crc.to_le_bytes());
        &self.0
    }
}

/// A page that passed every check of invariant P1.
#[derive(Debug)]
pub struct Page<'a> {
    /// The id it was read from (and names).
    pub id: PageId,
    /// What it holds.
    pub kind: PageKind,
    /// The checkpoint sequence it was written for.
    pub epoch: u64,
    /// The body bytes in use.
    pub body: &'a [u8],
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

impl<'a> Page<'a> {
    /// Checks `bytes`, read from page `id`, against invariant P1.
    ///
    /// # Errors
    /// The first check that fails, naming `id`.
    pub fn open(bytes: &'a [u8], size: PageSize, id: PageId) -> Result<Self, PageError> {
        let page = id;
        if bytes.len() != size.bytes() {
            return Err(PageError::Truncated {
                page,
                len: bytes.len(),
                expected: size.bytes(),
            });
        }
        let stored = le_u32(bytes, 0);
        let computed = crc32c::crc32c(&bytes[4..]);
        if stored != computed {
            return Err(PageError::BadChecksum {
                page,
                stored,
                computed,
            });
        }
        if bytes[4..8] != MAGIC {
            return Err(PageError::BadMagic { page });
        }
        if bytes[9] != VERSION {
            return Err(PageError::BadVersion {
                page,
                version: bytes[9],
            });
        }
        let kind = PageKind::from_byte(bytes[8]).ok_or(PageError::BadKind {
            page,
            kind: bytes[8],
        })?;
        let found = le_u64(bytes, 16);
        if found != id.0 {
            return Err(PageError::WrongId { page, found });
        }
        let body_len = le_u32(bytes, 12) as usize;
        let body = bytes
            .get(HEADER_LEN..HEADER_LEN.saturating_add(body_len))
            .ok_or(PageError::BadLength { page, body_len })?;
        Ok(Page {
            id,
            kind,
            epoch: le_u64(bytes, 24),
            body,
        })
    }

    /// The page itself if it is of kind `expected`.
    ///
    /// # Errors
    /// [`PageError::UnexpectedKind`].
    pub fn expect(self, expected: PageKind) -> Result<Self, PageError> {
        if self.kind == expected {
            Ok(self)
        } else {
            Err(PageError::UnexpectedKind {
                page: self.id,
                expected,
                found: self.kind,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealed(size: PageSize, id: u64, body: &[u8]) -> Vec<u8> {
        let mut buf = PageBuf::new(size);
        buf.body_mut()[..body.len()].copy_from_slice(body);
        buf.seal(PageId(id), PageKind::Leaf, 7, body.len()).to_vec()
    }

    #[test]
    fn page_sizes() {
        assert!(PageSize::new(4096).is_ok());
        assert!(PageSize::new(65536).is_ok());
        for bad in [0, 2048, 4095, 6000, 131072] {
            assert!(PageSize::new(bad).is_err(), "{bad}");
        }
        let s = PageSize::new(8192).unwrap();
        assert_eq!(s.offset(PageId(3)), 3 * 8192);
        assert_eq!(s.body_capacity(), 8192 - HEADER_LEN);
    }

    #[test]
    fn round_trip() {
        let size = PageSize::MIN;
        let bytes = sealed(size, 5, b"hello");
        let page = Page::open(&bytes, size, PageId(5)).unwrap();
        assert_eq!(page.kind, PageKind::Leaf);
        assert_eq!(page.epoch, 7);
        assert_eq!(page.body, b"hello");
        assert!(page.expect(PageKind::Leaf).is_ok());
    }

    #[test]
    fn each_check_names_the_page() {
        let size = PageSize::MIN;
        let good = sealed(size, 5, b"x");
        assert!(matches!(
            Page::open(&good, size, PageId(6)),
            Err(PageError::WrongId {
                page: PageId(6),
                found: 5
            })
        ));
        assert!(matches!(
            Page::open(&good[..100], size, PageId(5)),
            Err(PageError::Truncated {
                page: PageId(5),
                len: 100,
                ..
            })
        ));
        let p = Page::open(&good, size, PageId(5)).unwrap();
        assert!(matches!(
            p.expect(PageKind::Inner),
            Err(PageError::UnexpectedKind {
                page: PageId(5),
                ..
            })
        ));
        // A kind byte or body length that is wrong under a valid checksum.
        let mut bad = good.clone();
        bad[8] = 99;
        let crc = crc32c::crc32c(&bad[4..]);
        bad[..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            Page::open(&bad, size, PageId(5)),
            Err(PageError::BadKind { kind: 99, .. })
        ));
        let mut bad = good;
        bad[12..16].copy_from_slice(&5000u32.to_le_bytes());
        let crc = crc32c::crc32c(&bad[4..]);
        bad[..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            Page::open(&bad, size, PageId(5)),
            Err(PageError::BadLength { body_len: 5000, .. })
        ));
    }

    #[test]
    fn a_page_of_format_1_is_refused() {
        let size = PageSize::MIN;
        let mut bytes = sealed(size, 5, b"x");
        bytes[9] = 1;
        let crc = crc32c::crc32c(&bytes[4..]);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
        let err = Page::open(&bytes, size, PageId(5)).unwrap_err();
        assert_eq!(
            err,
            PageError::BadVersion {
                page: PageId(5),
                version: 1
            }
        );
        assert_eq!(err.to_string(), "page 5: unknown format version 1");
    }

    #[test]
    fn a_zeroed_page_is_refused() {
        let zeros = vec![0; 4096];
        assert!(matches!(
            Page::open(&zeros, PageSize::MIN, PageId(2)),
            Err(PageError::BadChecksum {
                page: PageId(2),
                ..
            })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes at all: an error or a page, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = Page::open(&bytes, PageSize::MIN, PageId(3));
        }

        /// Every single flipped byte of a sealed page is caught.
        #[test]
        fn a_flipped_byte_is_caught(at in 0usize..4096, flip in 1u8..=255, len in 0usize..4064) {
            let body = vec![0xAB; len];
            let mut bytes = sealed(PageSize::MIN, 9, &body);
            bytes[at] ^= flip;
            prop_assert!(Page::open(&bytes, PageSize::MIN, PageId(9)).is_err());
        }
    }
}
