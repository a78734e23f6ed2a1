//! Buffers that travel with I/O requests by ownership: the kernel (or the
//! fallback's system call) works on them in place, and they come back in the
//! completion. No copy on either side.

use super::IoError;
use parking_lot::Mutex;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

/// The alignment `O_DIRECT` needs on every block device seen so far (the
/// logical block size is 512 or 4096; 4096 satisfies both).
pub const DIRECT_ALIGN: usize = 4096;

/// A zero-initialised heap buffer whose address is a multiple of `align`,
/// for `O_DIRECT` I/O.
///
/// ```
/// use shared_nothing::io::AlignedBuf;
/// let mut b = AlignedBuf::new(8192);
/// assert_eq!(b.as_ptr() as usize % 4096, 0);
/// b.extend_from_slice(b"hello");
/// assert_eq!(b.as_slice(), b"hello");
/// ```
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads through `&self`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer of `capacity` bytes aligned to [`DIRECT_ALIGN`].
    ///
    /// # Panics
    /// If no such allocation can be described (see
    /// [`try_with_alignment`](Self::try_with_alignment)).
    pub fn new(capacity: usize) -> Self {
        Self::with_alignment(capacity, DIRECT_ALIGN)
    }

    /// An empty buffer of `capacity` bytes aligned to `align` (a power of
    /// two; anything else is rounded up to one).
    ///
    /// # Panics
    /// If no such allocation can be described (see
    /// [`try_with_alignment`](Self::try_with_alignment)): it never returns
    /// a buffer with a weaker alignment than asked.
    pub fn with_alignment(capacity: usize, align: usize) -> Self {
        Self::try_with_alignment(capacity, align).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An empty buffer of `capacity` bytes aligned to [`DIRECT_ALIGN`], or
    /// an error.
    ///
    /// # Errors
    /// As [`try_with_alignment`](Self::try_with_alignment).
    pub fn try_new(capacity: usize) -> Result<Self, IoError> {
        Self::try_with_alignment(capacity, DIRECT_ALIGN)
    }

    /// An empty buffer of `capacity` bytes aligned to `align` (rounded up
    /// to a power of two), or an error: never a buffer aligned less than
    /// asked.
    ///
    /// ```
    /// use shared_nothing::io::{AlignedBuf, IoError};
    /// assert!(matches!(AlignedBuf::try_with_alignment(usize::MAX, 4096), Err(IoError::Invalid(_))));
    /// assert_eq!(AlignedBuf::try_with_alignment(10, 512).unwrap().alignment(), 512);
    /// ```
    ///
    /// # Errors
    /// [`IoError::Invalid`] if the size rounded up to the alignment (or the
    /// alignment rounded up to a power of two) overflows, or exceeds
    /// `isize::MAX`; [`IoError::Os`] with `ENOMEM` if the allocator refuses.
    pub fn try_with_alignment(capacity: usize, align: usize) -> Result<Self, IoError> {
        let invalid = |why: &str| {
            IoError::Invalid(format!(
                "an AlignedBuf of {capacity} bytes aligned to {align}: {why}"
            ))
        };
        let align = align
            .max(1)
            .checked_next_power_of_two()
            .ok_or_else(|| invalid("no such power of two"))?;
        // Zero-sized allocations are not allowed; one aligned block is cheap.
        let size = capacity
            .max(1)
            .checked_next_multiple_of(align)
            .ok_or_else(|| invalid("the size overflows"))?;
        let layout = Layout::from_size_align(size, align).map_err(|e| invalid(&e.to_string()))?;
        // SAFETY: the layout has a non-zero size (at least one byte).
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| IoError::os("alloc", libc::ENOMEM))?;
        Ok(Self {
            ptr,
            len: 0,
            layout,
        })
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes allocated (a multiple of the alignment).
    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// The alignment of the address.
    pub fn alignment(&self) -> usize {
        self.layout.align()
    }

    /// The first byte's address.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len <= capacity` bytes are allocated and initialised
        // (the allocation is zeroed).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes in use, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Sets the length; bytes past the old length keep whatever they held
    /// (zero, or earlier data), never uninitialised memory.
    ///
    /// # Panics
    /// If `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "AlignedBuf::set_len past capacity");
        self.len = len;
    }

    /// Appends bytes, up to the capacity; returns how many fit.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.capacity() - self.len);
        // SAFETY: `len + n <= capacity`; `data` cannot overlap our
        // allocation because we hold `&mut self`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(self.len), n);
        }
        self.len += n;
        n
    }

    /// Empties the buffer (the capacity stays).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated in `try_with_alignment` with exactly
        // this layout, and is freed only here, once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("align", &self.alignment())
            .finish()
    }
}

/// Memory registered with one storage worker's ring (`io_uring_register`
/// buffers), carved into equal, page-aligned slots.
pub(crate) struct FixedRegion {
    base: AlignedBuf,
    slot_size: usize,
    slots: usize,
    free: Mutex<Vec<u16>>,
    /// Which storage worker registered it: only that ring may use the
    /// registered-buffer opcodes on it.
    pub(crate) owner: usize,
}

impl fmt::Debug for FixedRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedRegion")
            .field("slots", &self.slots)
            .field("slot_size", &self.slot_size)
            .field("owner", &self.owner)
            .finish()
    }
}

impl FixedRegion {
    /// `slots` aligned slots of `slot_size` bytes (rounded up to
    /// [`DIRECT_ALIGN`]); `None` if that much cannot be allocated aligned.
    pub(crate) fn new(owner: usize, slots: usize, slot_size: usize) -> Option<Arc<Self>> {
        let slots = slots.min(usize::from(u16::MAX));
        let slot_size = slot_size.checked_next_multiple_of(DIRECT_ALIGN)?;
        let mut base = AlignedBuf::try_new(slots.checked_mul(slot_size)?).ok()?;
        base.set_len(base.capacity());
        Some(Arc::new(Self {
            base,
            slot_size,
            slots,
            free: Mutex::new((0..slots as u16).rev().collect()),
            owner,
        }))
    }

    /// The iovecs to register, one per slot.
    pub(crate) fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.slots)
            .map(|i| libc::iovec {
                // SAFETY: `i * slot_size` is inside the allocation.
                iov_base: unsafe { self.base.as_ptr().add(i * self.slot_size) } as *mut _,
                iov_len: self.slot_size,
            })
            .collect()
    }

    pub(crate) fn take(self: &Arc<Self>) -> Option<FixedBuf> {
        let index = self.free.lock().pop()?;
        Some(FixedBuf {
            region: self.clone(),
            index,
            len: 0,
        })
    }

    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.free.lock().len()
    }
}

/// A slot of registered memory: I/O on it skips the kernel's per-request
/// page pinning (`ReadFixed`/`WriteFixed`). Taken from
/// [`StorageClient::fixed_buf`](super::StorageClient::fixed_buf); returns to
/// the pool when dropped.
pub struct FixedBuf {
    region: Arc<FixedRegion>,
    index: u16,
    len: usize,
}

impl FixedBuf {
    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot size.
    pub fn capacity(&self) -> usize {
        self.region.slot_size
    }

    /// The registered-buffer index (for `ReadFixed`/`WriteFixed`).
    pub(crate) fn index(&self) -> u16 {
        self.index
    }

    /// The storage worker whose ring registered this memory.
    pub(crate) fn owner(&self) -> usize {
        self.region.owner
    }

    fn ptr(&self) -> *mut u8 {
        // SAFETY: `index < slots`, so the offset is inside the allocation.
        unsafe {
            self.region
                .base
                .as_ptr()
                .add(usize::from(self.index) * self.region.slot_size) as *mut u8
        }
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: this slot belongs to this FixedBuf alone (taken from the
        // free list); the region is zero-initialised and lives as long as
        // the Arc.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }

    /// The bytes in use, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }

    /// Sets the length.
    ///
    /// # Panics
    /// If `len` exceeds the slot size.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "FixedBuf::set_len past capacity");
        self.len = len;
    }

    /// Appends bytes, up to the slot size; returns how many fit.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.capacity() - self.len);
        let start = self.len;
        self.len += n;
        self.as_mut_slice()[start..].copy_from_slice(&data[..n]);
        n
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        self.region.free.lock().push(self.index);
    }
}

impl fmt::Debug for FixedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBuf")
            .field("index", &self.index)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// A buffer owned by an I/O request while it runs.
///
/// ```
/// use shared_nothing::io::IoBuf;
/// let b = IoBuf::from(b"abc".to_vec());
/// assert_eq!(b.as_slice(), b"abc");
/// ```
#[derive(Debug)]
pub enum IoBuf {
    /// An ordinary vector.
    Vec(Vec<u8>),
    /// Aligned memory, for `O_DIRECT`.
    Aligned(AlignedBuf),
    /// Registered memory.
    Fixed(FixedBuf),
}

impl IoBuf {
    /// Bytes in use.
    pub fn len(&self) -> usize {
        match self {
            IoBuf::Vec(v) => v.len(),
            IoBuf::Aligned(a) => a.len(),
            IoBuf::Fixed(f) => f.len(),
        }
    }

    /// Whether no byte is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the buffer can hold without reallocating.
    pub fn capacity(&self) -> usize {
        match self {
            IoBuf::Vec(v) => v.capacity(),
            IoBuf::Aligned(a) => a.capacity(),
            IoBuf::Fixed(f) => f.capacity(),
        }
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            IoBuf::Vec(v) => v,
            IoBuf::Aligned(a) => a.as_slice(),
            IoBuf::Fixed(f) => f.as_slice(),
        }
    }

    /// The bytes in use, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            IoBuf::Vec(v) => v,
            IoBuf::Aligned(a) => a.as_mut_slice(),
            IoBuf::Fixed(f) => f.as_mut_slice(),
        }
    }

    /// The vector inside, copying only for aligned or registered memory.
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            IoBuf::Vec(v) => v,
            other => other.as_slice().to_vec(),
        }
    }

    /// Makes room for a read of `len` bytes: a vector grows (zero-filled),
    /// aligned and registered memory must already be large enough.
    pub(crate) fn prepare_read(&mut self, len: usize) -> Result<(), super::IoError> {
        match self {
            IoBuf::Vec(v) => {
                v.clear();
                v.resize(len, 0);
            }
            IoBuf::Aligned(a) if len <= a.capacity() => a.set_len(len),
            IoBuf::Fixed(f) if len <= f.capacity() => f.set_len(len),
            _ => {
                return Err(super::IoError::Invalid(format!(
                    "read of {len} bytes into a buffer of {} bytes",
                    self.capacity()
                )));
            }
        }
        Ok(())
    }

    /// Keeps the first `n` bytes after a read returned `n`.
    pub(crate) fn truncate(&mut self, n: usize) {
        match self {
            IoBuf::Vec(v) => v.truncate(n),
            IoBuf::Aligned(a) => a.set_len(n.min(a.len())),
            IoBuf::Fixed(f) => f.set_len(n.min(f.len())),
        }
    }

    pub(crate) fn ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }

    pub(crate) fn mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_slice().as_mut_ptr()
    }
}

impl From<Vec<u8>> for IoBuf {
    fn from(v: Vec<u8>) -> Self {
        IoBuf::Vec(v)
    }
}

impl From<AlignedBuf> for IoBuf {
    fn from(a: AlignedBuf) -> Self {
        IoBuf::Aligned(a)
    }
}

impl From<FixedBuf> for IoBuf {
    fn from(f: FixedBuf) -> Self {
        IoBuf::Fixed(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_is_aligned_and_bounded() {
        let mut b = AlignedBuf::with_alignment(100, 512);
        assert_eq!(b.as_ptr() as usize % 512, 0);
        assert_eq!(b.capacity(), 512);
        assert_eq!(b.extend_from_slice(&[7; 1000]), 512);
        assert!(b.as_slice().iter().all(|&x| x == 7));
    }

    #[test]
    fn an_impossible_layout_is_an_error_never_a_misaligned_buffer() {
        let huge = isize::MAX as usize;
        let made = std::panic::catch_unwind(|| AlignedBuf::with_alignment(huge, DIRECT_ALIGN));
        if let Ok(b) = made {
            assert!(
                b.alignment() >= DIRECT_ALIGN && b.capacity() >= huge,
                "asked for {huge} bytes aligned to {DIRECT_ALIGN}, got {} aligned to {}",
                b.capacity(),
                b.alignment()
            );
        }
        for (cap, align) in [(huge, DIRECT_ALIGN), (usize::MAX, 1), (16, usize::MAX)] {
            assert!(
                matches!(
                    AlignedBuf::try_with_alignment(cap, align),
                    Err(IoError::Invalid(_))
                ),
                "{cap} aligned to {align}"
            );
        }
        let b = AlignedBuf::try_new(100).unwrap();
        assert_eq!((b.capacity(), b.alignment()), (DIRECT_ALIGN, DIRECT_ALIGN));
    }

    #[test]
    fn fixed_bufs_return_to_the_pool() {
        let r = FixedRegion::new(0, 2, 100).unwrap();
        let a = r.take().unwrap();
        let mut b = r.take().unwrap();
        assert!(r.take().is_none());
        b.extend_from_slice(b"xyz");
        assert_eq!(b.as_slice(), b"xyz");
        assert_eq!(a.capacity(), 4096);
        assert_ne!(a.index(), b.index());
        drop(a);
        assert_eq!(r.available(), 1);
    }

    #[test]
    fn read_into_a_too_small_aligned_buffer_is_an_error() {
        let mut b = IoBuf::from(AlignedBuf::new(4096));
        assert!(b.prepare_read(8192).is_err());
        assert!(b.prepare_read(4096).is_ok());
        assert_eq!(b.len(), 4096);
    }
}
