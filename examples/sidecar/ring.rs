//! A single-producer single-consumer ring of fixed-size slots in a shared
//! region, between two processes (the layout and the sequence protocol are
//! in `layout.rs`). `N` is the slot's size in words, word 0 being the
//! sequence number.
//!
//! **Invariant (R1):** a slot becomes visible to the consumer only through
//! the Release store of its sequence number, made after every other word
//! of the slot; the consumer's Acquire load of exactly `position + 1`
//! therefore sees the whole slot. A producer that stops (or is killed)
//! before that store leaves the slot invisible: there is no separate
//! "claimed" index the consumer could read ahead of the contents.
//!
//! **Invariant (R2):** the consumer copies a slot out before publishing
//! its head past it, and works only on the copy; the producer writes a slot
//! again only once the head has passed it. A hostile producer may still
//! scribble on the slot meanwhile: the copy is whatever it read, and is
//! validated as such (no value is read twice from shared memory).

use crate::shm::Region;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

/// Where a ring lies in its region.
#[derive(Clone, Copy, Debug)]
pub struct RingAt {
    /// Offset of slot 0.
    pub off: usize,
    /// Number of slots.
    pub slots: usize,
    /// Offset of the consumer's head word.
    pub head: usize,
}

/// The writing side.
#[derive(Debug)]
pub struct Producer<const N: usize> {
    region: Arc<Region>,
    at: RingAt,
    pos: u64,
}

/// What a pop found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<const N: usize> {
    /// Nothing published at the consumer's position.
    Empty,
    /// The slot's words after the sequence number, copied out.
    Item([u64; N]),
    /// The slot's sequence runs ahead of the consumer: the producer broke
    /// the protocol.
    Broken { seen: u64, expected: u64 },
}

/// The reading side.
#[derive(Debug)]
pub struct Consumer<const N: usize> {
    region: Arc<Region>,
    at: RingAt,
    pos: u64,
}

fn slot_off<const N: usize>(at: &RingAt, pos: u64) -> usize {
    at.off + (pos % at.slots as u64) as usize * N * 8
}

impl<const N: usize> Producer<N> {
    pub fn new(region: Arc<Region>, at: RingAt) -> Self {
        Producer { region, at, pos: 0 }
    }

    /// Slots free to write. The head is the other side's word: a value
    /// past our position is taken as "all read", one too far behind as
    /// "none free", so a lying consumer only hurts itself.
    pub fn free(&self) -> usize {
        let head = self.region.word(self.at.head).load(Ordering::Acquire);
        let used = self.pos - head.min(self.pos);
        self.at
            .slots
            .saturating_sub(used.min(usize::MAX as u64) as usize)
    }

    /// Writes the slot's words (all but the sequence number), then
    /// publishes it (R1). `false` when the ring is full.
    pub fn push(&mut self, words: &[u64; N]) -> bool {
        if self.free() == 0 {
            return false;
        }
        self.write(words);
        let off = slot_off::<N>(&self.at, self.pos);
        // Release: the words above are visible before the sequence is (R1).
        self.region.word(off).store(self.pos + 1, Ordering::Release);
        self.pos += 1;
        true
    }

    /// Writes the words of the next slot without publishing it: what a
    /// producer killed mid-write leaves behind (for tests).
    pub fn write(&mut self, words: &[u64; N]) {
        let off = slot_off::<N>(&self.at, self.pos);
        for (i, w) in words.iter().enumerate().skip(1) {
            self.region.word(off + i * 8).store(*w, Ordering::Relaxed);
        }
    }

    /// Publishes the next slot with an arbitrary sequence number (for
    /// tests of a hostile producer).
    pub fn publish_raw(&mut self, seq: u64) {
        let off = slot_off::<N>(&self.at, self.pos);
        self.region.word(off).store(seq, Ordering::Release);
    }

    /// The position of the next slot to write.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl<const N: usize> Consumer<N> {
    pub fn new(region: Arc<Region>, at: RingAt) -> Self {
        Consumer { region, at, pos: 0 }
    }

    /// Takes the slot at the consumer's position if it is published,
    /// copying its words out (R2); the head moves only on `release`.
    pub fn pop(&mut self) -> Pop<N> {
        let off = slot_off::<N>(&self.at, self.pos);
        // Acquire pairs with the producer's Release (R1).
        let seq = self.region.word(off).load(Ordering::Acquire);
        let expected = self.pos + 1;
        if seq < expected {
            return Pop::Empty;
        }
        if seq > expected {
            return Pop::Broken {
                seen: seq,
                expected,
            };
        }
        let mut out = [0u64; N];
        out[0] = seq;
        for (i, w) in out.iter_mut().enumerate().skip(1) {
            *w = self.region.word(off + i * 8).load(Ordering::Relaxed);
        }
        self.pos += 1;
        Pop::Item(out)
    }

    /// Publishes the head: every slot popped so far may be rewritten.
    pub fn release(&self) {
        // Release: our reads of the slots happen before the producer's
        // rewrite of them (R2).
        self.region
            .word(self.at.head)
            .store(self.pos, Ordering::Release);
    }

    /// Whether nothing is published at the position, with a full fence
    /// first: the re-check after arming a doorbell (the other side stores
    /// its slot, fences, then reads the armed word; one of the two sees
    /// the other's store).
    pub fn is_empty_after_arming(&self) -> bool {
        fence(Ordering::SeqCst);
        let off = slot_off::<N>(&self.at, self.pos);
        self.region.word(off).load(Ordering::Acquire) <= self.pos
    }
}

/// The producer's side of a doorbell: after publishing, rings `bell` if
/// the consumer armed `armed` (and disarms it, so a batch rings once).
pub fn ring_if_armed(region: &Region, armed: usize, bell: &crate::shm::EventFd) -> bool {
    fence(Ordering::SeqCst);
    let w = region.word(armed);
    if w.load(Ordering::Relaxed) != 0 && w.swap(0, Ordering::AcqRel) != 0 {
        bell.notify();
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(slots: usize) -> (Producer<4>, Consumer<4>) {
        let len = 64 + slots * 32;
        let (region, _fd) = Region::create("ring-test", len).unwrap();
        let region = Arc::new(region);
        let at = RingAt {
            off: 64,
            slots,
            head: 0,
        };
        (Producer::new(region.clone(), at), Consumer::new(region, at))
    }

    /// Elgate's ring let `read()` take a slot that was claimed but not yet
    /// written. Here a slot whose words are written but whose sequence is
    /// not stays invisible, and appears whole once published.
    #[test]
    fn a_written_but_unpublished_slot_is_invisible() {
        let (mut p, mut c) = pair(4);
        p.write(&[0, 1, 2, 3]);
        assert_eq!(c.pop(), Pop::Empty);
        assert!(c.is_empty_after_arming());
        p.publish_raw(1);
        assert_eq!(c.pop(), Pop::Item([1, 1, 2, 3]));
        assert_eq!(c.pop(), Pop::Empty);
    }

    #[test]
    fn a_sequence_running_ahead_is_reported_not_taken() {
        let (mut p, mut c) = pair(4);
        p.write(&[0, 9, 9, 9]);
        p.publish_raw(7);
        assert_eq!(
            c.pop(),
            Pop::Broken {
                seen: 7,
                expected: 1
            }
        );
    }

    #[test]
    fn full_ring_waits_for_the_head_and_a_lying_head_frees_nothing_extra() {
        let (mut p, mut c) = pair(2);
        assert!(p.push(&[0, 1, 0, 0]));
        assert!(p.push(&[0, 2, 0, 0]));
        assert!(!p.push(&[0, 3, 0, 0]));
        assert!(matches!(c.pop(), Pop::Item([_, 1, _, _])));
        assert!(!p.push(&[0, 3, 0, 0]), "head not released yet");
        c.release();
        assert!(p.push(&[0, 3, 0, 0]));
        // A consumer claiming to have read far ahead: taken as "all read".
        c.region.word(0).store(u64::MAX, Ordering::Release);
        assert_eq!(p.free(), 2);
    }

    /// Two threads over one mapping: every slot the consumer takes is
    /// whole (its words agree with each other) and in order.
    #[test]
    fn concurrent_slots_arrive_whole_and_in_order() {
        let (mut p, mut c) = pair(8);
        const N: u64 = 200_000;
        let t = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                if p.push(&[0, i, i ^ 0x5555, i.wrapping_mul(31)]) {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut next = 0;
        while next < N {
            match c.pop() {
                Pop::Item([_, a, b, d]) => {
                    assert_eq!((a, b, d), (next, next ^ 0x5555, next.wrapping_mul(31)));
                    next += 1;
                    c.release();
                }
                Pop::Empty => std::hint::spin_loop(),
                Pop::Broken { seen, expected } => panic!("broken {seen} {expected}"),
            }
        }
        t.join().unwrap();
    }
}
