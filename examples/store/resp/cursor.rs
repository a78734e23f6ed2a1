//! SCAN cursors. Keys come back in order, so the exact place to resume is
//! a key; clients, though, read a cursor as a number (`redis-cli --scan`
//! and redis-py parse it as an integer), so the number names a resume key
//! held here. Ids count up from 1 and are never reused (0 means "start"
//! and "done"); the newest `capacity` (of [`Cursors::new`]) stay, older ones are
//! forgotten and resuming one is `-ERR invalid cursor`, never a wrong
//! place. A cursor may be resumed more than once (a client retrying).

use std::collections::{HashMap, VecDeque};

/// Resume keys of the cursors handed out, newest kept.
#[derive(Debug)]
pub struct Cursors {
    capacity: usize,
    next: u64,
    keys: HashMap<u64, Vec<u8>>,
    order: VecDeque<u64>,
}

impl Cursors {
    /// A table keeping the newest `capacity` cursors (at least one).
    pub fn new(capacity: usize) -> Self {
        Cursors {
            capacity: capacity.max(1),
            next: 1,
            keys: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// A new cursor resuming at `key`.
    pub fn issue(&mut self, key: Vec<u8>) -> u64 {
        let id = self.next;
        self.next = self.next.checked_add(1).unwrap_or(1);
        self.keys.insert(id, key);
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        id
    }

    /// The key cursor `id` resumes at, if it is still held.
    pub fn resume(&self, id: u64) -> Option<&[u8]> {
        self.keys.get(&id).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest() {
        let mut c = Cursors::new(2);
        let a = c.issue(b"a".to_vec());
        let b = c.issue(b"b".to_vec());
        assert_ne!(a, 0);
        assert_eq!(c.resume(a), Some(&b"a"[..]));
        assert_eq!(c.resume(a), Some(&b"a"[..]));
        let d = c.issue(b"d".to_vec());
        assert_eq!(c.resume(a), None);
        assert_eq!(c.resume(b), Some(&b"b"[..]));
        assert_eq!(c.resume(d), Some(&b"d"[..]));
        assert_eq!(c.resume(0), None);
    }
}
