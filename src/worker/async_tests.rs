//! The async sends and the awaited reply against running workers (the
//! races themselves are loom models in `tests/loom.rs`).

use super::*;
use crate::Result;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(10);

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count::default());
    (c.clone(), Waker::from(c))
}

fn wakes(c: &Count) -> usize {
    c.0.load(Ordering::SeqCst)
}

fn poll_once<F: Future + Unpin>(f: &mut F, w: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(w))
}

/// Runs a future on this thread, parking between polls; panics after
/// `LONG` so no test can hang.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let t0 = Instant::now();
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(t0.elapsed() < LONG, "future not woken within {LONG:?}");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Polls `cond` until it holds or `LONG` passes.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < LONG {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

#[derive(Debug, PartialEq)]
enum Op {
    Add(u64),
    Panic,
    /// Leaks its reply slot.
    Forget,
}

/// Sums what it is sent; a request is answered with the running total.
struct Acc;

impl Worker for Acc {
    type State = u64;
    type Message = Op;
    type Reply = u64;
    fn init(&mut self) -> Result<u64> {
        Ok(0)
    }
    fn handle_message(&mut self, total: &mut u64, mut m: Envelope<Op, u64>) -> Result<()> {
        match m.payload {
            Op::Add(v) => {
                *total += v;
                if m.is_request() {
                    m.reply(*total)?;
                }
            }
            Op::Panic => panic!("scripted panic"),
            Op::Forget => std::mem::forget(m.take_reply()),
        }
        Ok(())
    }
}

fn spawn_acc(capacity: usize) -> WorkerHandle<Op, u64> {
    spawn(
        Acc,
        WorkerConfig::new()
            .with_queue_capacity(capacity)
            .with_restart_policy(RestartPolicy::Never),
    )
    .unwrap()
}

/// Pauses `h`'s worker and fills `tx`'s ring; returns how many it took.
fn fill(h: &WorkerHandle<Op, u64>, tx: &mut WorkerSender<Op, u64>, first: Option<Op>) -> u64 {
    h.pause().unwrap();
    assert!(eventually(|| h.state() == WorkerState::Paused));
    let mut n = 0;
    if let Some(op) = first {
        tx.try_send(op).unwrap();
    }
    while tx.try_send(Op::Add(1)).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn send_async_completes_on_the_first_poll_while_there_is_room() {
    let mut h = spawn_acc(8);
    let (c, w) = counting();
    let mut f = h.send_async(Op::Add(2));
    assert!(matches!(poll_once(&mut f, &w), Poll::Ready(Ok(()))));
    drop(f);
    let mut r = h.request_async(Op::Add(3));
    let Poll::Ready(Ok(pending)) = poll_once(&mut r, &w) else {
        panic!("room: the request goes out at once");
    };
    drop(r);
    assert_eq!(block_on(pending), Ok(5));
    assert_eq!(wakes(&c), 0, "nothing waited");
    h.stop().unwrap();
}

#[test]
fn send_async_waits_for_room_and_the_worker_wakes_it() {
    let mut h = spawn_acc(2);
    let mut tx = h.sender();
    let filled = fill(&h, &mut tx, None);
    assert_eq!(filled, 2);
    let (c, w) = counting();
    let mut f = tx.send_async(Op::Add(100));
    assert!(poll_once(&mut f, &w).is_pending(), "the ring is full");
    assert!(poll_once(&mut f, &w).is_pending(), "polling again is fine");
    assert_eq!(wakes(&c), 0);
    h.resume().unwrap();
    assert!(
        eventually(|| wakes(&c) >= 1),
        "the worker's pop wakes the task"
    );
    assert!(matches!(poll_once(&mut f, &w), Poll::Ready(Ok(()))));
    drop(f);
    let total = block_on(async { tx.request_async(Op::Add(0)).await.unwrap().await });
    assert_eq!(total, Ok(102));
    h.stop().unwrap();
}

#[test]
fn dropping_a_waiting_send_sends_nothing_and_withdraws_its_waker() {
    let mut h = spawn_acc(2);
    let mut tx = h.sender();
    let filled = fill(&h, &mut tx, None);
    let (c, w) = counting();
    let mut f = tx.send_async(Op::Add(100));
    assert!(poll_once(&mut f, &w).is_pending());
    drop(f);
    h.resume().unwrap();
    tx.flush_timeout(LONG).unwrap();
    assert_eq!(wakes(&c), 0, "the dropped future's waker was withdrawn");
    let total = block_on(async { tx.request_async(Op::Add(0)).await.unwrap().await });
    assert_eq!(total, Ok(filled), "the dropped message was never sent");
    h.stop().unwrap();
}

#[test]
fn a_waiting_send_learns_that_the_worker_gave_up() {
    let mut h = spawn_acc(2);
    let mut tx = h.sender();
    fill(&h, &mut tx, Some(Op::Panic));
    let (c, w) = counting();
    let mut f = tx.send_async(Op::Add(7));
    assert!(poll_once(&mut f, &w).is_pending());
    h.resume().unwrap();
    // The worker panics on `Panic` (unwinding publishes what its batch
    // took, which wakes us), gives up and closes its rings. Polled only
    // once it has, the send finds the ring closed.
    assert!(eventually(|| wakes(&c) >= 1));
    assert!(eventually(|| h.state() == WorkerState::Failed));
    match poll_once(&mut f, &w) {
        Poll::Ready(Err(SendError::Stopped(m))) => assert_eq!(m, Op::Add(7)),
        other => panic!("expected Stopped with the message, got {other:?}"),
    }
    assert!(h.join().is_err());
}

#[test]
fn async_sends_to_a_stopped_worker_hand_the_message_back() {
    let mut h = spawn_acc(2);
    let mut tx = h.sender();
    h.stop().unwrap();
    match block_on(tx.send_async(Op::Add(1))) {
        Err(SendError::Stopped(m)) => assert_eq!(m, Op::Add(1)),
        other => panic!("{other:?}"),
    }
    match block_on(tx.request_async(Op::Add(2))) {
        Err(SendError::Stopped(m)) => assert_eq!(m, Op::Add(2)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        block_on(tx.reserve_async()),
        Err(SendError::Stopped(()))
    ));
}

#[test]
fn a_permit_sends_into_the_reserved_slot_and_an_unused_one_sends_nothing() {
    let mut h = spawn_acc(1);
    let permit = block_on(h.reserve_async()).unwrap();
    assert_eq!(permit.worker(), 0);
    permit.send(Op::Add(4)).unwrap();
    drop(block_on(h.reserve_async()).unwrap());
    let permit = block_on(h.reserve_async()).unwrap();
    let pending = permit.request(Op::Add(1)).unwrap();
    assert_eq!(block_on(pending), Ok(5));
    h.stop().unwrap();
    assert_eq!(h.stats().handled, 2);
}

/// An awaited reply whose slot the handler leaked resolves as `Dropped`
/// once the worker's thread exits: its life wakes the task.
#[test]
fn an_awaited_leaked_reply_resolves_when_the_worker_exits() {
    let mut h = spawn_acc(4);
    let mut pending = h.request(Op::Forget).unwrap();
    let (c, w) = counting();
    assert!(poll_once(&mut pending, &w).is_pending());
    h.flush_timeout(LONG).unwrap();
    assert!(
        poll_once(&mut pending, &w).is_pending(),
        "leaked, not answered"
    );
    h.stop().unwrap();
    assert!(
        eventually(|| wakes(&c) >= 1),
        "the worker's exit wakes the task"
    );
    assert_eq!(
        poll_once(&mut pending, &w),
        Poll::Ready(Err(ReplyError::Dropped))
    );
}

/// Several threads, each driving its own sender's async sends into a tiny
/// queue: every send is woken in time and every message arrives once.
#[test]
fn concurrent_async_senders_into_a_small_queue_lose_nothing() {
    const SENDERS: u64 = 4;
    const EACH: u64 = 2_000;
    let mut h = spawn_acc(2);
    let threads: Vec<_> = (0..SENDERS)
        .map(|s| {
            let mut tx = h.sender();
            std::thread::spawn(move || {
                block_on(async {
                    for i in 0..EACH {
                        tx.send_async(Op::Add(s * EACH + i)).await.unwrap();
                    }
                    tx.request_async(Op::Add(0)).await.unwrap().await.unwrap()
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = SENDERS * EACH;
    let total = block_on(async { h.request_async(Op::Add(0)).await.unwrap().await });
    assert_eq!(total, Ok(n * (n - 1) / 2));
    h.stop().unwrap();
}
