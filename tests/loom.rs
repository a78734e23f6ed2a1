//! Loom models of the SPSC ring and its wake-up and close protocols.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --test loom`
#![cfg(loom)]

use loom::sync::Arc;

/// Runs a model with at most 3 preemptions per execution (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise): bounded exhaustive search, the
/// usual setting for CI (tokio uses 2), keeps every model under a minute.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}
use loom::thread;
use shared_nothing::__loom::{PushError, Signal, ring};

fn push_spin(p: &mut shared_nothing::__loom::Producer<u32>, v: u32) {
    loop {
        match p.try_push(v) {
            Ok(()) => return,
            Err(PushError::Full(_)) => thread::yield_now(),
            Err(PushError::Closed(_)) => panic!("closed"),
        }
    }
}

/// Values cross the ring in order, none lost or duplicated, across a
/// wrap-around of a ring smaller than the stream.
#[test]
fn fifo_across_wraparound() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(2, Arc::new(Signal::new()));
        let t = thread::spawn(move || {
            for i in 0..3 {
                push_spin(&mut p, i);
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            match c.try_pop() {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        t.join().unwrap();
        assert_eq!(got, vec![0, 1, 2]);
    });
}

/// Batch push and drain publish once and still hand over every value.
#[test]
fn batch_push_and_drain() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(4, Arc::new(Signal::new()));
        let t = thread::spawn(move || {
            let mut items = 0..3u32;
            let mut sent = 0;
            while sent < 3 {
                sent += p.push_iter(&mut items).unwrap();
                thread::yield_now();
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(c.drain(8));
            thread::yield_now();
        }
        t.join().unwrap();
        assert_eq!(got, vec![0, 1, 2]);
    });
}

/// Lossless close, as a worker stops: close, drain, drop. Every push that
/// returned Ok was consumed, and every other one got its value back (pushes
/// racing with the close settle at once, through the ring's cut).
#[test]
fn close_loses_nothing() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(4, Arc::new(Signal::new()));
        let t = thread::spawn(move || {
            let mut accepted = Vec::new();
            for i in 0..2 {
                match p.try_push(i) {
                    Ok(()) => accepted.push(i),
                    Err(PushError::Closed(v)) => assert_eq!(v, i),
                    Err(PushError::Full(_)) => unreachable!("capacity 4"),
                }
            }
            accepted
        });
        c.close();
        let mut drained = Vec::new();
        while let Some(v) = c.try_pop() {
            drained.push(v);
        }
        drop(c);
        assert_eq!(t.join().unwrap(), drained);
    });
}

/// A batch racing with a close that is never drained: whatever the consumer
/// did not take comes back to the producer, in order.
#[test]
fn batch_settles_against_a_dropped_consumer() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(4, Arc::new(Signal::new()));
        let t = thread::spawn(move || {
            let mut items = 0..3u32;
            match p.push_iter(&mut items) {
                Ok(n) => (n, Vec::new()),
                Err(back) => (0, back),
            }
        });
        c.close();
        let first = c.try_pop();
        drop(c);
        let (pushed, back) = t.join().unwrap();
        match first {
            // Consumed one before dropping: the rest came back, or the batch
            // was published before the close and counted as pushed.
            Some(0) => assert!(back == vec![1, 2] || pushed == 3),
            None => assert!(back == vec![0, 1, 2] || back.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
    });
}

// In these models the thread that may be woken is a spawned one and the
// thread that wakes it joins it: loom treats a stray `unpark` of a thread
// blocked in `join` as an error, while std ignores it (a spare token).

/// A consumer that parks is always woken by the next push (loom reports a
/// deadlock if a wake-up can be lost).
#[test]
fn parked_consumer_is_woken() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(1, Arc::new(Signal::new()));
        let t = thread::spawn(move || {
            loop {
                if let Some(v) = c.try_pop() {
                    break v;
                }
                c.wait_for_data(None);
            }
        });
        p.try_push(7).unwrap();
        assert_eq!(t.join().unwrap(), 7);
    });
}

/// A producer that parks on a full ring is woken by the consumer's pop.
#[test]
fn parked_producer_is_woken() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(1, Arc::new(Signal::new()));
        p.try_push(1).unwrap();
        let t = thread::spawn(move || {
            loop {
                match p.try_push(2) {
                    Ok(()) => break,
                    Err(PushError::Full(_)) => p.wait_for_space(None),
                    Err(PushError::Closed(_)) => panic!("closed"),
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 2 {
            match c.try_pop() {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        t.join().unwrap();
        assert_eq!(got, vec![1, 2]);
    });
}

/// After the producer is dropped, the consumer drains what was pushed and
/// then sees the ring finished; a parked consumer is woken by the drop.
#[test]
fn producer_drop_is_seen_after_the_data() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(2, Arc::new(Signal::new()));
        let t = thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                if let Some(v) = c.try_pop() {
                    got.push(v);
                    continue;
                }
                if c.is_finished() {
                    break got;
                }
                c.wait_for_data(None);
            }
        });
        p.try_push(5).unwrap();
        drop(p);
        assert_eq!(t.join().unwrap(), vec![5]);
    });
}

/// A push racing a close returns before the consumer is dropped: the
/// consumer here joins the producer first, which deadlocked when a racing
/// push waited for the consumer to go away. Nothing is lost or duplicated.
#[test]
fn push_racing_close_returns_at_once() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(4, Arc::new(Signal::new()));
        let t = thread::spawn(move || {
            let mut accepted = Vec::new();
            for i in 0..2 {
                match p.try_push(i) {
                    Ok(()) => accepted.push(i),
                    Err(PushError::Closed(v)) => assert_eq!(v, i),
                    Err(PushError::Full(_)) => unreachable!("capacity 4"),
                }
            }
            accepted
        });
        let early = c.try_pop();
        c.close();
        let accepted = t.join().unwrap();
        let mut drained: Vec<u32> = early.into_iter().collect();
        while let Some(v) = c.try_pop() {
            drained.push(v);
        }
        assert_eq!(accepted, drained);
        drop(c);
    });
}

/// Counts destructors of the values a model moves (std atomics: the count
/// is checked after every thread has joined).
struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A drain that takes one value and is forgotten, then a close racing a
/// push, then the consumer's drop: no value is dropped twice (the leaked
/// drain's untaken values leak; everything else drops exactly once).
#[test]
fn leaked_drain_then_close_racing_a_push() {
    model(|| {
        let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (mut p, mut c) = ring::<Counted>(4, Arc::new(Signal::new()));
        p.try_push(Counted(drops.clone())).ok().unwrap();
        p.try_push(Counted(drops.clone())).ok().unwrap();
        let d2 = drops.clone();
        let t = thread::spawn(move || {
            // Accepted or handed back (and then dropped here): once either way.
            let _ = p.try_push(Counted(d2));
        });
        let mut d = c.drain(1);
        drop(d.next());
        std::mem::forget(d);
        c.close();
        while let Some(v) = c.try_pop() {
            drop(v);
        }
        t.join().unwrap();
        drop(c);
        // Three values: the one the drain took and the racing push drop once
        // each, and the second queued value is read by the loop above.
        assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 3);
    });
}

/// Rings of one worker share its signal. A push in flight to ring B while
/// ring A closes is delivered through B's own close, never lost or
/// duplicated, and the push returns without waiting for anyone.
#[test]
fn sibling_close_races_a_push() {
    model(|| {
        let signal = Arc::new(Signal::new());
        let (_pa, mut ca) = ring::<u32>(2, signal.clone());
        let (mut pb, mut cb) = ring::<u32>(2, signal);
        let t = thread::spawn(move || pb.try_push(9).is_ok());
        ca.close();
        cb.close();
        let accepted = t.join().unwrap();
        let got = cb.try_pop();
        assert_eq!(accepted, got == Some(9));
        assert_eq!(cb.try_pop(), None);
    });
}

/// A consumer dropped (not closed) while pushes race it: every value drops
/// exactly once, on whichever side ended up owning it.
#[test]
fn consumer_drop_racing_pushes_drops_each_value_once() {
    model(|| {
        let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (mut p, c) = ring::<Counted>(2, Arc::new(Signal::new()));
        let d2 = drops.clone();
        let t = thread::spawn(move || {
            for _ in 0..2 {
                let _ = p.try_push(Counted(d2.clone()));
            }
        });
        drop(c);
        t.join().unwrap();
        assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 2);
    });
}

// Async waiting: a task's waker registered with the producer signal (the
// ring's `poll_reserve`) and with a reply slot (`Pending` as a future).
// Each model drives the future with the crate's loom `block_on` (a flag
// under a loom mutex and a loom condition variable), so a lost wake-up is
// a deadlock loom reports.

use shared_nothing::__loom::{LoomLife, Pending, ReplyError, block_on};
use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

/// One poll with a waker that does nothing (registers, never wakes).
fn poll_once<R>(p: &mut Pending<R>) -> Poll<Result<R, ReplyError>> {
    std::pin::Pin::new(p).poll(&mut Context::from_waker(Waker::noop()))
}

use std::future::Future;

/// A task waiting for room in a full ring is woken by the consumer's pop.
#[test]
fn task_waiting_for_room_is_woken_by_a_pop() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(1, Arc::new(Signal::new()));
        p.try_push(1).unwrap();
        let t = thread::spawn(move || {
            block_on(poll_fn(|cx| p.poll_reserve(cx))).unwrap();
            p.push_reserved(2).unwrap();
        });
        let mut got = Vec::new();
        while got.len() < 2 {
            match c.try_pop() {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        t.join().unwrap();
        assert_eq!(got, vec![1, 2]);
    });
}

/// A task waiting for room learns of a close without any pop.
#[test]
fn task_waiting_for_room_is_woken_by_a_close() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(1, Arc::new(Signal::new()));
        p.try_push(1).unwrap();
        let t = thread::spawn(move || block_on(poll_fn(|cx| p.poll_reserve(cx))));
        c.close();
        assert_eq!(t.join().unwrap(), Err(()));
        assert_eq!(c.try_pop(), Some(1));
    });
}

/// A task that registered and gave up (a dropped future), then waits by
/// parking: the withdrawn registration neither eats the wake-up nor leaves
/// the signal believing a task waits.
#[test]
fn cancelled_task_wait_then_a_parked_wait_is_woken() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(1, Arc::new(Signal::new()));
        p.try_push(1).unwrap();
        let t = thread::spawn(move || {
            let mut cx = Context::from_waker(Waker::noop());
            if p.poll_reserve(&mut cx).is_pending() {
                p.cancel_reserve();
            }
            loop {
                match p.try_push(2) {
                    Ok(()) => break,
                    Err(PushError::Full(_)) => p.wait_for_space(None),
                    Err(PushError::Closed(_)) => panic!("closed"),
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 2 {
            match c.try_pop() {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        t.join().unwrap();
        assert_eq!(got, vec![1, 2]);
    });
}

/// One producer waits as a task, then by parking: whichever way the task's
/// wait ended (woken, or room seen at registration), the parked wait that
/// follows is woken by the consumer (no registration is left behind to
/// take its wake-up).
#[test]
fn task_wait_then_a_parked_wait_are_both_woken() {
    model(|| {
        let (mut p, mut c) = ring::<u32>(1, Arc::new(Signal::new()));
        p.try_push(1).unwrap();
        let t = thread::spawn(move || {
            block_on(poll_fn(|cx| p.poll_reserve(cx))).unwrap();
            p.push_reserved(2).unwrap();
            loop {
                match p.try_push(3) {
                    Ok(()) => break,
                    Err(PushError::Full(_)) => p.wait_for_space(None),
                    Err(PushError::Closed(_)) => panic!("closed"),
                }
            }
        });
        let mut got = Vec::new();
        // The consumer sleeps too (a spin would exceed loom's branch bound).
        while got.len() < 3 {
            match c.try_pop() {
                Some(v) => got.push(v),
                None => c.wait_for_data(None),
            }
        }
        t.join().unwrap();
        assert_eq!(got, vec![1, 2, 3]);
    });
}

/// A reply racing the awaiting task's poll is delivered and wakes it.
#[test]
fn reply_racing_poll_wakes_the_task() {
    model(|| {
        let life = LoomLife::new();
        let (tx, rx) = life.request::<u32>();
        let t = thread::spawn(move || tx.send(7));
        assert_eq!(block_on(rx), Ok(7));
        assert_eq!(t.join().unwrap(), Ok(()));
    });
}

/// A reply racing a poll that replaces the registered waker (the task
/// moved): the new waker is woken, the old one never read while written.
#[test]
fn reply_racing_a_waker_change() {
    model(|| {
        let life = LoomLife::new();
        let (tx, mut rx) = life.request::<u32>();
        let t = thread::spawn(move || tx.send(3));
        let first = poll_once(&mut rx);
        let got = match first {
            Poll::Ready(v) => v,
            Poll::Pending => block_on(rx),
        };
        assert_eq!(got, Ok(3));
        t.join().unwrap().unwrap();
    });
}

/// Counts destructors (std atomics: checked after every thread joined).
struct Drops(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Drops {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A reply racing the drop of the awaiting future (cancellation): the send
/// succeeds or reports `CallerGone`, and the value drops exactly once,
/// whichever side drops the slot last.
#[test]
fn reply_racing_the_drop_of_the_future() {
    model(|| {
        let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let life = LoomLife::new();
        let (tx, mut rx) = life.request::<Drops>();
        let d = drops.clone();
        let t = thread::spawn(move || tx.send(Drops(d)));
        let polled = poll_once(&mut rx);
        drop(rx);
        let sent = t.join().unwrap();
        match polled {
            // Taken by the poll: the send went through.
            Poll::Ready(v) => {
                assert!(v.is_ok() && sent.is_ok());
                drop(v);
            }
            Poll::Pending => assert!(matches!(sent, Ok(()) | Err(ReplyError::CallerGone))),
        }
        assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 1);
    });
}

/// The worker's exit racing the poll of a request whose slot the worker
/// kept (never answered, never dropped): the task is woken and resolves as
/// `Dropped`.
#[test]
fn worker_exit_racing_poll_resolves_a_kept_slot() {
    model(|| {
        let mut life = LoomLife::new();
        let (kept, rx) = life.request::<u32>();
        let alive = life.alive();
        let t = thread::spawn(move || drop(alive));
        assert_eq!(block_on(rx), Err(ReplyError::Dropped));
        t.join().unwrap();
        drop(kept);
    });
}

/// A reply sent before the worker exits is delivered, whichever of the two
/// wake-ups (the reply's, the exit's) the task sees first.
#[test]
fn reply_then_worker_exit_racing_poll_delivers_the_reply() {
    model(|| {
        let mut life = LoomLife::new();
        let (tx, rx) = life.request::<u32>();
        let alive = life.alive();
        let t = thread::spawn(move || {
            tx.send(5).unwrap();
            drop(alive);
        });
        assert_eq!(block_on(rx), Ok(5));
        t.join().unwrap();
    });
}

/// A `ReplyTo` dropped unanswered racing the poll: woken, `Dropped`.
#[test]
fn unanswered_reply_to_dropped_racing_poll() {
    model(|| {
        let life = LoomLife::new();
        let (tx, rx) = life.request::<u32>();
        let t = thread::spawn(move || drop(tx));
        assert_eq!(block_on(rx), Err(ReplyError::Dropped));
        t.join().unwrap();
    });
}

/// Two requests to one worker, awaited in turn while the worker answers
/// one and exits holding the other: the life's table wakes the waiter it
/// holds, and each resolves as it must.
#[test]
fn worker_exit_racing_two_waiters() {
    model(|| {
        let mut life = LoomLife::new();
        let (answered, a) = life.request::<u32>();
        let (kept, b) = life.request::<u32>();
        let alive = life.alive();
        let t = thread::spawn(move || {
            answered.send(1).unwrap();
            drop(alive);
            kept
        });
        assert_eq!(block_on(b), Err(ReplyError::Dropped));
        assert_eq!(block_on(a), Ok(1));
        drop(t.join().unwrap());
    });
}

/// A message's metadata (in the lane beside the ring) reaches the worker
/// with its payload, whatever the interleaving, for messages with and
/// without metadata across a wrap-around (mailbox L1, L2).
#[test]
fn metadata_travels_with_its_payload() {
    model(|| {
        let mut mb = shared_nothing::__loom::LoomMailbox::new(2);
        let mut tx = mb.sender();
        let sent = [(0, Some(10)), (1, None), (2, Some(12))];
        let t = thread::spawn(move || {
            for (v, key) in sent {
                loop {
                    match tx.send(v, key) {
                        Ok(()) => break,
                        Err(false) => thread::yield_now(),
                        Err(true) => panic!("closed"),
                    }
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            let batch = mb.take();
            if batch.is_empty() {
                thread::yield_now();
            }
            got.extend(batch);
        }
        t.join().unwrap();
        assert_eq!(got, sent.to_vec());
        assert_eq!(mb.lane_len(), 0);
    });
}

/// A push with metadata racing the close: delivered whole, or refused with
/// its lane entry taken back (mailbox L3); never a payload without its
/// metadata, never an entry left behind.
#[test]
fn metadata_push_racing_close_is_delivered_whole_or_taken_back() {
    model(|| {
        let mut mb = shared_nothing::__loom::LoomMailbox::new(2);
        let mut tx = mb.sender();
        let t = thread::spawn(move || tx.send(7, Some(70)));
        mb.close();
        let got = mb.take();
        let sent = t.join().unwrap();
        match sent {
            Ok(()) => assert_eq!(got, vec![(7, Some(70))]),
            Err(closed) => {
                assert!(closed);
                assert!(got.is_empty());
            }
        }
        assert_eq!(mb.lane_len(), 0);
    });
}
