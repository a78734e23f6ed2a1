//! The pool of sent buffers kept to become receive buffers.

/// Buffers that finished sending, kept to become receive buffers.
///
/// Only buffers at least as large as a receive buffer and at most twice as
/// large are kept, and at most [`SPARE_BYTES`] of them in all (counting
/// capacity); the rest are freed, so a burst of large sends does not pin
/// their memory for good. Every buffer here is owned by the pool alone:
/// nothing in flight points to it.
pub(super) struct SparePool {
    pub(super) bufs: Vec<Vec<u8>>,
    pub(super) bytes: usize,
}

/// How many bytes of capacity the spare pool keeps at most.
pub(super) const SPARE_BYTES: usize = 4 << 20;

impl SparePool {
    pub(super) fn new() -> Self {
        Self {
            bufs: Vec::new(),
            bytes: 0,
        }
    }

    /// Keeps `buf` for a later receive of `recv_size` bytes, or frees it.
    pub(super) fn put(&mut self, mut buf: Vec<u8>, recv_size: usize) {
        let cap = buf.capacity();
        if cap < recv_size || cap > 2 * recv_size || self.bytes + cap > SPARE_BYTES {
            return;
        }
        buf.clear();
        self.bytes += cap;
        self.bufs.push(buf);
    }

    pub(super) fn take(&mut self) -> Option<Vec<u8>> {
        let b = self.bufs.pop()?;
        self.bytes -= b.capacity();
        Some(b)
    }
}
