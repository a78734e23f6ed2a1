//! Unit tests of the ring's leak, panic and close paths, counting
//! destructors (the loom models in `tests/loom.rs` cover the races).

use super::*;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// How many times each value was dropped, by value id.
#[derive(Clone)]
struct Drops(std::sync::Arc<Vec<AtomicU32>>);

impl Drops {
    fn new(n: usize) -> Self {
        Self(std::sync::Arc::new(
            (0..n).map(|_| AtomicU32::new(0)).collect(),
        ))
    }
    fn item(&self, id: usize) -> Item {
        Item {
            id,
            drops: self.clone(),
            panic_on_drop: false,
        }
    }
    fn counts(&self) -> Vec<u32> {
        self.0.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }
}

struct Item {
    id: usize,
    drops: Drops,
    panic_on_drop: bool,
}

impl Drop for Item {
    fn drop(&mut self) {
        self.drops.0[self.id].fetch_add(1, Ordering::SeqCst);
        if self.panic_on_drop {
            panic!("item {} panics on drop", self.id);
        }
    }
}

fn new_ring<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    ring(capacity, Arc::new(Signal::new()))
}

fn push_all(p: &mut Producer<Item>, drops: &Drops, ids: std::ops::Range<usize>) {
    for id in ids {
        assert!(p.try_push(drops.item(id)).is_ok());
    }
}

/// The reproduction: a drain that is forgotten after taking one
/// value used to make `Ring::drop` drop that value again (5 destructors for
/// 4 values). Now the taken value drops once and the untaken ones leak.
#[test]
fn leaked_drain_drops_each_value_once() {
    let drops = Drops::new(4);
    let (mut tx, mut rx) = new_ring(8);
    push_all(&mut tx, &drops, 0..4);
    let mut d = rx.drain(8);
    drop(d.next());
    std::mem::forget(d);
    drop(rx);
    drop(tx);
    assert_eq!(drops.counts(), vec![1, 0, 0, 0]);
}

/// The same leak with the producer dropped first, then the consumer closed
/// (the order a stopping worker uses).
#[test]
fn leaked_drain_then_close_drops_each_value_once() {
    let drops = Drops::new(4);
    let (mut tx, mut rx) = new_ring(8);
    push_all(&mut tx, &drops, 0..4);
    drop(tx);
    let mut d = rx.drain(2);
    drop(d.next());
    std::mem::forget(d);
    rx.close();
    let rest: Vec<usize> = std::iter::from_fn(|| rx.try_pop()).map(|i| i.id).collect();
    assert_eq!(rest, vec![2, 3]);
    drop(rx);
    assert_eq!(drops.counts(), vec![1, 0, 1, 1]);
}

/// After a leaked drain the channel keeps working: later values arrive in
/// order and each drops once.
#[test]
fn ring_keeps_working_after_a_leaked_drain() {
    let drops = Drops::new(6);
    let (mut tx, mut rx) = new_ring(4);
    push_all(&mut tx, &drops, 0..4);
    let mut d = rx.drain(8);
    drop(d.next());
    std::mem::forget(d);
    // The leaked drain never published its head: the producer still sees a
    // full ring until the consumer's next pop publishes it.
    assert!(matches!(
        tx.try_push(drops.item(4)),
        Err(PushError::Full(_))
    ));
    assert!(rx.try_pop().is_none());
    drop(rx);
    drop(tx);
    assert_eq!(drops.counts(), vec![1, 0, 0, 0, 1, 0]);
}

/// A drain dropped while a handler unwinds gives back what it did not take.
#[test]
fn drain_dropped_by_a_panic_keeps_untaken_values() {
    let drops = Drops::new(4);
    let (mut tx, mut rx) = new_ring(8);
    push_all(&mut tx, &drops, 0..4);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut d = rx.drain(8);
        let first = d.next();
        assert_eq!(first.as_ref().map(|i| i.id), Some(0));
        panic!("handler panics mid-batch");
    }));
    assert!(r.is_err());
    let rest: Vec<usize> = std::iter::from_fn(|| rx.try_pop()).map(|i| i.id).collect();
    assert_eq!(rest, vec![1, 2, 3]);
    assert_eq!(drops.counts(), vec![1, 1, 1, 1]);
}

/// A message whose destructor panics while the ring drops the rest of its
/// contents: every other value is still dropped, exactly once.
#[test]
fn panicking_destructor_in_ring_drop_drops_the_rest_once() {
    let drops = Drops::new(3);
    let (mut tx, rx) = new_ring(4);
    push_all(&mut tx, &drops, 0..1);
    let mut bad = drops.item(1);
    bad.panic_on_drop = true;
    assert!(tx.try_push(bad).is_ok());
    push_all(&mut tx, &drops, 2..3);
    drop(rx);
    let r = catch_unwind(AssertUnwindSafe(move || drop(tx)));
    assert!(r.is_err(), "the destructor's panic propagates");
    assert_eq!(drops.counts(), vec![1, 1, 1]);
}

/// Values still queued when both ends drop are dropped once each.
#[test]
fn queued_values_drop_once_with_the_ring() {
    let drops = Drops::new(5);
    let (mut tx, mut rx) = new_ring(8);
    push_all(&mut tx, &drops, 0..5);
    drop(rx.try_pop());
    drop(rx);
    drop(tx);
    assert_eq!(drops.counts(), vec![1; 5]);
}

/// A push that reserved its slot before the close and publishes after it
/// returns at once with its value. Before the fix it waited in `settle`
/// until the consumer was dropped: here the consumer is kept until the push
/// returns, so the old code hung (the channel below times out instead).
#[test]
fn push_racing_close_returns_at_once() {
    let (mut tx, mut rx) = new_ring::<u32>(4);
    tx.try_push(1).unwrap();
    tx.reserve().unwrap();
    rx.close();
    let (done_tx, done) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let r = tx.push_reserved(2);
        done_tx.send(r).unwrap();
        tx
    });
    let r = done.recv_timeout(Duration::from_secs(10));
    assert_eq!(r, Ok(Err(2)), "the push must hand its value back at once");
    // Everything pushed before the close is still delivered, nothing after.
    assert_eq!(rx.try_pop(), Some(1));
    assert_eq!(rx.try_pop(), None);
    assert!(rx.is_finished());
    let mut tx = t.join().unwrap();
    assert_eq!(tx.try_push(3), Err(PushError::Closed(3)));
}

/// A worker's rings share one signal. Closing one ring makes new pushes to
/// every ring fail fast, but a push to a sibling ring that was already in
/// flight is delivered there, not handed back.
#[test]
fn push_in_flight_to_a_sibling_ring_is_delivered() {
    let signal = Arc::new(Signal::new());
    let (_ta, mut ra) = ring::<u32>(4, signal.clone());
    let (mut tb, mut rb) = ring::<u32>(4, signal);
    tb.reserve().unwrap();
    ra.close();
    assert_eq!(tb.push_reserved(7), Ok(()));
    assert_eq!(tb.try_push(8), Err(PushError::Closed(8)));
    rb.close();
    assert_eq!(rb.try_pop(), Some(7));
    assert_eq!(rb.try_pop(), None);
}

/// A batch into a closed ring takes nothing from the iterator, and each
/// value drops exactly once.
#[test]
fn batch_into_a_closed_ring_takes_nothing() {
    let drops = Drops::new(3);
    let (mut tx, mut rx) = new_ring(8);
    rx.close();
    let mut items = (0..3).map(|i| drops.item(i));
    match tx.push_iter(&mut items) {
        Err(back) => assert!(back.is_empty(), "nothing was taken from the iterator"),
        Ok(n) => panic!("pushed {n} into a closed ring"),
    }
    let rest: Vec<Item> = items.collect();
    assert_eq!(rest.len(), 3);
    drop(rest);
    drop(rx);
    drop(tx);
    assert_eq!(drops.counts(), vec![1, 1, 1]);
}
