//! A connection's outgoing buffers, as both network backends keep them:
//! in order, with their byte count (the bound of
//! [`NetConfig::send_queue_limit`](super::NetConfig::send_queue_limit)),
//! each remembering who asked to hear when it is sent.

use std::collections::VecDeque;

/// One buffer to send, and the `(client, tag)` to tell once the socket has
/// taken all of it ([`NetClient::send_tracked`](super::NetClient::send_tracked)).
pub(crate) struct Outgoing {
    pub(crate) buf: Vec<u8>,
    pub(crate) notify: Option<(u32, u64)>,
}

/// Buffers not yet handed to the kernel, front first.
#[derive(Default)]
pub(crate) struct SendQueue {
    bufs: VecDeque<Outgoing>,
    bytes: usize,
}

impl SendQueue {
    pub(crate) fn push_back(&mut self, o: Outgoing) {
        self.bytes += o.buf.len();
        self.bufs.push_back(o);
    }

    pub(crate) fn pop_front(&mut self) -> Option<Outgoing> {
        let o = self.bufs.pop_front()?;
        self.bytes -= o.buf.len();
        Some(o)
    }

    pub(crate) fn front(&self) -> Option<&Outgoing> {
        self.bufs.front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Bytes in the queued buffers (a partly sent front counts whole).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Empties the queue.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = Outgoing> + use<> {
        self.bytes = 0;
        std::mem::take(&mut self.bufs).into_iter()
    }
}

/// Whether `len` more bytes may join a connection with `queued` bytes not
/// yet sent: always into an empty queue (one buffer larger than the limit
/// still goes out), otherwise while the total stays within `limit`.
pub(crate) fn admits(queued: usize, len: usize, limit: usize) -> bool {
    queued == 0 || queued.saturating_add(len) <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_counts_its_bytes_and_the_bound_always_admits_into_an_empty_one() {
        let mut q = SendQueue::default();
        q.push_back(Outgoing {
            buf: vec![0; 10],
            notify: None,
        });
        q.push_back(Outgoing {
            buf: vec![0; 5],
            notify: Some((1, 7)),
        });
        assert_eq!(q.bytes(), 15);
        assert_eq!(q.pop_front().unwrap().buf.len(), 10);
        assert_eq!(q.bytes(), 5);
        assert_eq!(q.take_all().count(), 1);
        assert_eq!(q.bytes(), 0);
        assert!(admits(0, 1 << 30, 16));
        assert!(admits(10, 6, 16));
        assert!(!admits(10, 7, 16));
        assert!(!admits(usize::MAX, 1, usize::MAX - 1), "no overflow");
    }
}
