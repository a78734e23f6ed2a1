//! The manifest: two alternating checksummed slots at the start of the
//! data file, each naming a checkpoint.
//!
//! Slot layout (4 KiB, little endian; the checksum covers the whole slot,
//! zero padding included):
//!
//! ```text
//! off len field
//!   0   4 CRC32C of bytes 4..4096
//!   4   4 magic "SNMF"
//!   8   4 format version (2: the data file's pages are of page format
//!         2, `page.rs`; a file of version 1 is refused, never read)
//!  12   4 page size
//!  16   8 sequence number (higher is newer)
//!  24   8 LSN: the WAL position the checkpoint covers (0 until the WAL)
//!  32   8 root page id (0: empty tree)
//!  40   8 first free-list page id (0: none)
//!  48   8 page count of the file
//!  56   4 shard count
//!  60   4 this shard's index
//!  64   4 partitioning scheme (Partitioning)
//! ```
//!
//! **Checkpoint protocol:** write every changed page copy-on-write, fsync,
//! then write the new manifest (sequence + 1) into the slot holding the
//! older one, fsync. **Open:** the valid slot with the highest sequence
//! wins; a torn or never-written slot fails its checksum and the other
//! slot is used. **Invariant M1:** the slot being written never holds the
//! newest valid manifest, so a crash at any point leaves the last complete
//! checkpoint readable.
//!
//! Both kept checkpoints stay whole: a page freed by copy-on-write is
//! reused only once neither slot's checkpoint reaches it (`btree::free`,
//! F1), so falling back to the older slot (the newer one torn, or lost to
//! a flipped byte later) finds every page it refers to. Each page also
//! carries the epoch it was written for and a newer one is refused
//! (`btree::pager`, C2), as a second line of defence.

use crate::btree::TreeRoot;
use crate::page::{PageId, PageSize};
use crate::pagestore::{PageStore, SLOT_LEN, SLOTS};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

const MAGIC: [u8; 4] = *b"SNMF";
/// The data file format this build reads and writes.
pub const VERSION: u32 = 2;

/// How keys are assigned to shards; recorded so that reopening with
/// another scheme or shard count is refused instead of misrouting keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Partitioning {
    /// `shared_nothing::partition::hash_key` (ahash with the crate's fixed
    /// seeds) of the table-prefixed key, reduced by `HashPartitioner`.
    Hash = 1,
}

/// The shard layout a data file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLayout {
    /// Number of shards in the store.
    pub count: u32,
    /// This file's shard.
    pub index: u32,
    /// How keys are routed to shards.
    pub partitioning: Partitioning,
}

impl fmt::Display for ShardLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shard {} of {} ({:?})",
            self.index, self.count, self.partitioning
        )
    }
}

/// One manifest slot's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub page_size: PageSize,
    /// Where the tree of this checkpoint starts (with the sequence).
    pub tree: TreeRoot,
    /// The WAL position this checkpoint covers.
    pub lsn: u64,
    pub layout: ShardLayout,
}

/// Why one slot was not usable.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotError {
    /// The file ends before the slot: never written.
    #[error("not written")]
    Missing,
    /// Torn or corrupted.
    #[error("bad checksum")]
    BadChecksum,
    /// Checksummed, but not a manifest.
    #[error("bad magic")]
    BadHeader,
    /// A manifest of another format version.
    #[error("format version {0}")]
    Version(u32),
    /// A field out of range under a valid checksum.
    #[error("invalid {0}")]
    BadField(&'static str),
}

/// Why a manifest could not be loaded or stored.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Neither slot holds a valid manifest.
    #[error("{}: no valid manifest (slot 0: {slot0}; slot 1: {slot1})", file.display())]
    NoValidSlot {
        file: PathBuf,
        slot0: SlotError,
        slot1: SlotError,
    },
    /// The file is of another format version (written by another build):
    /// refused whole, never read as this format.
    #[error(
        "{}: data file format version {found}, this build reads version {supported} only \
         (version 2 added a slot directory to tree pages); open it with the build that \
         wrote it, or start from another directory",
        file.display()
    )]
    Version {
        file: PathBuf,
        found: u32,
        supported: u32,
    },
    /// The file was created with another page size.
    #[error("{}: page size {on_disk} on disk, {requested} requested", file.display())]
    PageSize {
        file: PathBuf,
        on_disk: usize,
        requested: usize,
    },
    /// The file belongs to another shard layout.
    #[error("{}: {on_disk} on disk, {requested} requested", file.display())]
    Layout {
        file: PathBuf,
        on_disk: ShardLayout,
        requested: ShardLayout,
    },
    /// Reading or writing a slot failed.
    #[error("{}: manifest I/O failed: {source}", file.display())]
    Io { file: PathBuf, source: io::Error },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn page_ref(id: u64) -> Option<PageId> {
    (id != 0).then_some(PageId(id))
}

impl Manifest {
    /// The slot's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0; SLOT_LEN];
        b[4..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.page_size.bytes() as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.tree.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.lsn.to_le_bytes());
        b[32..40].copy_from_slice(&self.tree.root.map_or(0, |p| p.0).to_le_bytes());
        b[40..48].copy_from_slice(&self.tree.free_head.map_or(0, |p| p.0).to_le_bytes());
        b[48..56].copy_from_slice(&self.tree.page_count.to_le_bytes());
        b[56..60].copy_from_slice(&self.layout.count.to_le_bytes());
        b[60..64].copy_from_slice(&self.layout.index.to_le_bytes());
        b[64..68].copy_from_slice(&(self.layout.partitioning as u32).to_le_bytes());
        let crc = crc32c::crc32c(&b[4..]);
        b[0..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks one slot.
    ///
    /// # Errors
    /// The slot is torn, foreign or has a field out of range.
    pub fn decode(b: &[u8]) -> Result<Self, SlotError> {
        if b.len() != SLOT_LEN {
            return Err(SlotError::Missing);
        }
        if u32_at(b, 0) != crc32c::crc32c(&b[4..]) {
            return Err(SlotError::BadChecksum);
        }
        if b[4..8] != MAGIC {
            return Err(SlotError::BadHeader);
        }
        if u32_at(b, 8) != VERSION {
            return Err(SlotError::Version(u32_at(b, 8)));
        }
        let page_size =
            PageSize::new(u32_at(b, 12) as u64).map_err(|_| SlotError::BadField("page size"))?;
        let partitioning = match u32_at(b, 64) {
            1 => Partitioning::Hash,
            _ => return Err(SlotError::BadField("partitioning")),
        };
        let layout = ShardLayout {
            count: u32_at(b, 56),
            index: u32_at(b, 60),
            partitioning,
        };
        if layout.count == 0 || layout.index >= layout.count {
            return Err(SlotError::BadField("shard layout"));
        }
        let tree = TreeRoot {
            seq: u64_at(b, 16),
            root: page_ref(u64_at(b, 32)),
            free_head: page_ref(u64_at(b, 40)),
            page_count: u64_at(b, 48),
        };
        let first = crate::pagestore::first_data_page(page_size).0;
        let in_file = |p: Option<PageId>| p.is_none_or(|p| p.0 >= first && p.0 < tree.page_count);
        if tree.page_count < first || !in_file(tree.root) || !in_file(tree.free_head) {
            return Err(SlotError::BadField("page reference"));
        }
        Ok(Manifest {
            page_size,
            tree,
            lsn: u64_at(b, 24),
            layout,
        })
    }
}

/// Each slot of `file` as read: its manifest, or why it is not usable. A
/// slot past the end of the file or all zeros was never written
/// ([`SlotError::Missing`]); any other failure is damage (a torn write or a
/// flipped byte), which the server reports at start.
///
/// # Errors
/// [`ManifestError::Io`] if a slot cannot be read.
pub fn read_slots<S: PageStore>(
    store: &S,
    file: &Path,
) -> Result<Vec<Result<Manifest, SlotError>>, ManifestError> {
    let mut slots = Vec::with_capacity(SLOTS);
    for slot in 0..SLOTS {
        let mut buf = vec![0; SLOT_LEN];
        let read = match store.read_slot(slot, &mut buf) {
            Ok(()) if buf.iter().all(|&b| b == 0) => Err(SlotError::Missing),
            Ok(()) => Manifest::decode(&buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(SlotError::Missing),
            Err(source) => {
                return Err(ManifestError::Io {
                    file: file.to_path_buf(),
                    source,
                });
            }
        };
        slots.push(read);
    }
    Ok(slots)
}

/// The newest valid manifest of `file` and the slot it is in.
///
/// # Errors
/// [`ManifestError::Version`] if a slot is of another format version,
/// [`ManifestError::NoValidSlot`] if neither slot is valid (each slot's
/// reason given), [`ManifestError::Io`] if a slot cannot be read.
pub fn load<S: PageStore>(store: &S, file: &Path) -> Result<(Manifest, usize), ManifestError> {
    let slots = read_slots(store, file)?;
    // A slot of another version means the file is of another format: the
    // other slot is not a fallback (its pages are of that format too).
    for m in &slots {
        if let Err(SlotError::Version(found)) = m {
            return Err(ManifestError::Version {
                file: file.to_path_buf(),
                found: *found,
                supported: VERSION,
            });
        }
    }
    let mut best: Option<(Manifest, usize)> = None;
    for (slot, m) in slots.iter().enumerate() {
        if let Ok(m) = m
            && best.is_none_or(|(b, _)| m.tree.seq > b.tree.seq)
        {
            best = Some((*m, slot));
        }
    }
    if let Some(best) = best {
        return Ok(best);
    }
    let mut reasons = slots
        .into_iter()
        .map(|r| r.err().unwrap_or(SlotError::Missing));
    Err(ManifestError::NoValidSlot {
        file: file.to_path_buf(),
        slot0: reasons.next().unwrap_or(SlotError::Missing),
        slot1: reasons.next().unwrap_or(SlotError::Missing),
    })
}

/// A new file's first manifest: `m` into slot 0 and zeros into slot 1
/// (never written, [`read_slots`] says), then a sync. Writing slot 1 now
/// allocates its blocks, so no later checkpoint's manifest write has to:
/// on a full disk that write would fail with ENOSPC and leave the shard
/// read-only (a manifest write that failed may or may not be on disk).
///
/// # Errors
/// [`ManifestError::Io`].
pub fn create<S: PageStore>(store: &mut S, file: &Path, m: &Manifest) -> Result<(), ManifestError> {
    let io = |source| ManifestError::Io {
        file: file.to_path_buf(),
        source,
    };
    store.write_slot(1, &[0; SLOT_LEN]).map_err(io)?;
    self::store(store, file, 0, m)
}

/// Writes `m` into `slot` and syncs.
///
/// # Errors
/// [`ManifestError::Io`].
pub fn store<S: PageStore>(
    store: &mut S,
    file: &Path,
    slot: usize,
    m: &Manifest,
) -> Result<(), ManifestError> {
    let io = |source| ManifestError::Io {
        file: file.to_path_buf(),
        source,
    };
    store.write_slot(slot, &m.encode()).map_err(io)?;
    store.sync().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            page_size: PageSize::MIN,
            tree: TreeRoot {
                seq: 7,
                root: Some(PageId(5)),
                free_head: None,
                page_count: 9,
            },
            lsn: 1234,
            layout: ShardLayout {
                count: 4,
                index: 2,
                partitioning: Partitioning::Hash,
            },
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn another_version_is_named() {
        let mut b = sample().encode();
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&b[4..]);
        b[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Manifest::decode(&b), Err(SlotError::Version(1)));
    }

    #[test]
    fn damage_is_detected() {
        let b = sample().encode();
        for at in [0, 5, 17, 40, 100, 4095] {
            let mut bad = b.clone();
            bad[at] ^= 0x40;
            assert_eq!(Manifest::decode(&bad), Err(SlotError::BadChecksum), "{at}");
        }
        assert_eq!(Manifest::decode(&b[..100]), Err(SlotError::Missing));
        let mut m = sample();
        m.tree.root = Some(PageId(9));
        assert_eq!(
            Manifest::decode(&m.encode()),
            Err(SlotError::BadField("page reference"))
        );
    }

    #[test]
    fn read_slots_tells_never_written_from_damaged() {
        use crate::pagestore::FileStore;
        let dir = crate::test_dir::TempDir::new();
        let file = dir.file("m.data");
        let (mut fs, _) = FileStore::open(&file, PageSize::MIN).unwrap();
        // An empty file: neither slot written.
        let slots = read_slots(&fs, &file).unwrap();
        assert_eq!(
            slots,
            vec![Err(SlotError::Missing), Err(SlotError::Missing)]
        );
        // Slot 1 written, slot 0 zeros.
        store(&mut fs, &file, 1, &sample()).unwrap();
        let slots = read_slots(&fs, &file).unwrap();
        assert_eq!(slots, vec![Err(SlotError::Missing), Ok(sample())]);
        assert_eq!(load(&fs, &file).unwrap(), (sample(), 1));
        // A flipped byte in slot 1: damaged, not missing.
        let mut bad = sample().encode();
        bad[300] ^= 1;
        fs.write_slot(1, &bad).unwrap();
        let slots = read_slots(&fs, &file).unwrap();
        assert_eq!(slots[1], Err(SlotError::BadChecksum));
        assert!(matches!(
            load(&fs, &file),
            Err(ManifestError::NoValidSlot {
                slot0: SlotError::Missing,
                slot1: SlotError::BadChecksum,
                ..
            })
        ));
    }

    #[test]
    fn a_new_shard_file_holds_both_slots_allocated() {
        use crate::shard::{Shard, ShardOptions};
        use std::os::unix::fs::MetadataExt;
        let dir = crate::test_dir::TempDir::new();
        let file = dir.file("shard-0.data");
        let opts = ShardOptions {
            page_size: PageSize::MIN,
            layout: ShardLayout {
                count: 1,
                index: 0,
                partitioning: Partitioning::Hash,
            },
            wal: crate::wal::WalConfig {
                segment_bytes: 64 << 10,
            },
            cache_bytes: 1 << 20,
        };
        drop(Shard::open(&file, opts).unwrap());
        let meta = std::fs::metadata(&file).unwrap();
        assert!(
            meta.len() >= (SLOTS * SLOT_LEN) as u64,
            "{} bytes",
            meta.len()
        );
        // Blocks, not a hole: a later manifest write allocates nothing.
        assert!(
            meta.blocks() * 512 >= (SLOTS * SLOT_LEN) as u64,
            "{} blocks",
            meta.blocks()
        );
        let (fs, _) = crate::pagestore::FileStore::open(&file, PageSize::MIN).unwrap();
        let slots = read_slots(&fs, &file).unwrap();
        assert!(slots[0].is_ok());
        assert_eq!(slots[1], Err(SlotError::Missing));
        // And it opens again.
        drop(fs);
        assert!(Shard::open(&file, opts).is_ok());
    }
}
