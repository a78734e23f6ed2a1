use super::*;
use crate::{Error, Result};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds or 10 s pass (bounded: no test can hang).
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

fn wait_event(events: &EventStream, pred: impl Fn(&EventKind) -> bool) -> Option<WorkerEvent> {
    let t0 = Instant::now();
    while t0.elapsed() < LONG {
        if let Some(e) = events.next_timeout(Duration::from_millis(50)) {
            if pred(&e.kind) {
                return Some(e);
            }
        }
    }
    None
}

/// A worker scripted by its messages.
#[derive(Clone, Debug)]
enum Cmd {
    Add(u64),
    Fail,
    Panic,
    Sleep(Duration),
    Echo(u64),
    NoReply,
}

struct Scripted {
    inits: Arc<AtomicUsize>,
    at_shutdown: Arc<AtomicU64>,
    ticks: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Scripted {
    fn new() -> Self {
        Self {
            inits: Arc::default(),
            at_shutdown: Arc::new(AtomicU64::new(u64::MAX)),
            ticks: Arc::default(),
            seen: Arc::default(),
        }
    }
}

impl Worker for Scripted {
    type State = u64;
    type Message = Cmd;
    type Reply = u64;
    fn init(&mut self) -> Result<u64> {
        self.inits.fetch_add(1, Ordering::SeqCst);
        Ok(0)
    }
    fn handle_message(&mut self, total: &mut u64, mut m: Envelope<Cmd, u64>) -> Result<()> {
        self.seen.lock().unwrap().push(m.seq());
        match m.payload {
            Cmd::Add(v) => *total += v,
            Cmd::Fail => return Err(Error::msg("scripted failure")),
            Cmd::Panic => panic!("scripted panic"),
            Cmd::Sleep(d) => std::thread::sleep(d),
            Cmd::Echo(v) => m.reply(v + *total)?,
            Cmd::NoReply => {}
        }
        Ok(())
    }
    fn tick(&mut self, _: &mut u64) -> Result<()> {
        self.ticks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn shutdown(&mut self, total: u64) -> Result<()> {
        self.at_shutdown.store(total, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn stop_drains_everything_queued_and_runs_shutdown() {
    let w = Scripted::new();
    let at_shutdown = w.at_shutdown.clone();
    let mut h = spawn(w, WorkerConfig::new().with_queue_capacity(64)).unwrap();
    for _ in 0..10_000 {
        h.send(Cmd::Add(1)).unwrap();
    }
    h.stop().unwrap();
    assert_eq!(at_shutdown.load(Ordering::SeqCst), 10_000);
    let s = h.stats();
    assert_eq!((s.received, s.handled, s.failed), (10_000, 10_000, 0));
    assert_eq!(h.state(), WorkerState::Stopped);
    assert!(h.send(Cmd::Add(1)).unwrap_err().is_stopped());
    assert!(h.stop().is_ok(), "stop is idempotent");
}

#[test]
fn request_reply_timeout_and_errors() {
    let mut h = spawn(Scripted::new(), WorkerConfig::new()).unwrap();
    h.send(Cmd::Add(5)).unwrap();
    assert_eq!(h.request(Cmd::Echo(1)).unwrap().wait_timeout(LONG), Ok(6));
    let p = h.request(Cmd::NoReply).unwrap();
    assert_eq!(p.wait_timeout(LONG), Err(ReplyError::Dropped));
    // Replying to a plain message is a typed error counted as a failure.
    h.send(Cmd::Echo(0)).unwrap();
    let p = h.request(Cmd::Sleep(Duration::from_millis(200))).unwrap();
    assert_eq!(p.try_get(), Ok(None));
    assert_eq!(
        p.wait_timeout(Duration::from_millis(1)),
        Err(ReplyError::Timeout)
    );
    h.stop().unwrap();
    let s = h.stats();
    assert_eq!(s.failed, 1, "reply to a non-request fails the message");
}

#[test]
fn panic_is_isolated_counted_and_the_queue_survives_the_restart() {
    let w = Scripted::new();
    let (inits, seen) = (w.inits.clone(), w.seen.clone());
    let mut h = spawn(
        w,
        WorkerConfig::new().with_restart_policy(RestartPolicy::Always),
    )
    .unwrap();
    let events = h.events();
    h.pause().unwrap();
    h.ping(LONG).unwrap();
    // Queue everything while paused so the panic happens with work queued.
    for i in 0..10 {
        h.send(if i == 3 { Cmd::Panic } else { Cmd::Add(1) })
            .unwrap();
    }
    h.resume().unwrap();
    h.stop().unwrap();
    let s = h.stats();
    assert_eq!((s.received, s.handled, s.failed, s.restarts), (10, 9, 1, 1));
    assert_eq!(inits.load(Ordering::SeqCst), 2);
    assert_eq!(*seen.lock().unwrap(), (0..10).collect::<Vec<u64>>());
    let kinds: Vec<EventKind> = events.drain().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::Panicked {
        seq: Some(3),
        message: "scripted panic".into()
    }));
    assert!(kinds.contains(&EventKind::Restarted { restarts: 1 }));
    assert!(kinds.contains(&EventKind::Stopped));
}

#[test]
fn restart_policy_limit_gives_up_and_reports() {
    let policy = RestartPolicy::Limited {
        max_restarts: 2,
        within: Duration::from_secs(60),
    };
    let mut h = spawn(
        Scripted::new(),
        WorkerConfig::new().with_restart_policy(policy),
    )
    .unwrap();
    let events = h.events();
    h.pause().unwrap();
    for _ in 0..3 {
        h.send(Cmd::Panic).unwrap();
    }
    for _ in 0..5 {
        h.send(Cmd::Add(1)).unwrap();
    }
    h.resume().unwrap();
    assert!(eventually(|| h.state() == WorkerState::Failed));
    let e = h.stop().unwrap_err();
    assert!(matches!(e, Error::WorkerFailed { .. }), "{e}");
    let s = h.stats();
    assert_eq!((s.failed, s.restarts, s.handled), (3, 2, 0));
    let gave_up = events
        .drain()
        .into_iter()
        .find_map(|e| match e.kind {
            EventKind::GaveUp { abandoned, .. } => Some(abandoned),
            _ => None,
        })
        .expect("GaveUp event");
    assert_eq!(gave_up, 5);
    assert!(h.send(Cmd::Add(1)).unwrap_err().is_stopped());
    assert!(h.pause().is_err());
}

#[test]
fn never_policy_stops_at_the_first_panic() {
    let mut h = spawn(
        Scripted::new(),
        WorkerConfig::new().with_restart_policy(RestartPolicy::Never),
    )
    .unwrap();
    h.send(Cmd::Panic).unwrap();
    assert!(eventually(|| h.state() == WorkerState::Failed));
    assert!(h.join().is_err());
    assert_eq!(h.stats().restarts, 0);
}

#[test]
fn handler_errors_are_counted_and_reported() {
    let mut h = spawn(Scripted::new(), WorkerConfig::new()).unwrap();
    let events = h.events();
    for i in 0..6 {
        h.send(if i % 2 == 0 { Cmd::Fail } else { Cmd::Add(1) })
            .unwrap();
    }
    h.stop().unwrap();
    assert_eq!((h.stats().failed, h.stats().handled), (3, 3));
    let failed: Vec<u64> = events
        .drain()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::HandlerFailed { seq, error } => {
                assert_eq!(error, "scripted failure");
                Some(seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![0, 2, 4]);
}

#[test]
fn pause_holds_messages_and_ping_still_answers() {
    let mut h = spawn(Scripted::new(), WorkerConfig::new()).unwrap();
    h.pause().unwrap();
    assert!(eventually(|| h.state() == WorkerState::Paused));
    for _ in 0..100 {
        h.send(Cmd::Add(1)).unwrap();
    }
    h.ping(LONG).unwrap();
    assert_eq!(h.stats().handled, 0);
    h.resume().unwrap();
    assert!(eventually(|| h.stats().handled == 100));
    h.stop().unwrap();
}

#[test]
fn full_queue_is_backpressure_not_loss() {
    let mut h = spawn(Scripted::new(), WorkerConfig::new().with_queue_capacity(2)).unwrap();
    h.pause().unwrap();
    h.ping(LONG).unwrap();
    h.send(Cmd::Add(1)).unwrap();
    h.send(Cmd::Add(1)).unwrap();
    let e = h.try_send(Cmd::Add(7)).unwrap_err();
    assert!(matches!(e, SendError::Full(Cmd::Add(7))));
    let e = h
        .send_timeout(Cmd::Add(8), Duration::from_millis(10))
        .unwrap_err();
    assert!(matches!(e, SendError::Timeout(Cmd::Add(8))));
    h.resume().unwrap();
    h.send_timeout(Cmd::Add(9), LONG).unwrap();
    h.stop().unwrap();
    assert_eq!(h.stats().handled, 3);
}

/// The lossless-close guarantee: senders on other threads race with `stop`;
/// every send that returned `Ok` must be handled, every other one must come
/// back as `Stopped` with its message.
#[test]
fn stop_racing_with_senders_loses_nothing() {
    for round in 0..20 {
        let w = Scripted::new();
        let mut h = spawn(w, WorkerConfig::new().with_queue_capacity(16)).unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let mut tx = h.sender();
                let accepted = accepted.clone();
                std::thread::spawn(move || {
                    for _ in 0..200_000 {
                        match tx.send(Cmd::Add(1)) {
                            Ok(()) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                assert!(e.is_stopped());
                                assert!(matches!(e.into_inner(), Cmd::Add(1)));
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_micros(200 * (round % 5)));
        h.stop().unwrap();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(
            h.stats().handled,
            accepted.load(Ordering::SeqCst),
            "round {round}"
        );
    }
}

#[test]
fn ticks_run_on_schedule() {
    let w = Scripted::new();
    let ticks = w.ticks.clone();
    let mut h = spawn(
        w,
        WorkerConfig::new().with_tick_interval(Duration::from_millis(2)),
    )
    .unwrap();
    assert!(eventually(|| ticks.load(Ordering::SeqCst) >= 5));
    h.stop().unwrap();
    assert!(h.stats().ticks >= 5);
}

#[test]
fn a_stalled_handler_is_reported_while_it_runs() {
    let cfg = WorkerConfig::new().with_stall_threshold(Some(Duration::from_millis(20)));
    let mut h = spawn(Scripted::new(), cfg).unwrap();
    let events = h.events();
    h.send(Cmd::Sleep(Duration::from_millis(400))).unwrap();
    let e =
        wait_event(&events, |k| matches!(k, EventKind::Stalled { .. })).expect("stall reported");
    assert_eq!(e.name.as_ref(), "worker-0");
    // Reported while the handler is still running, not after it returned.
    assert_eq!(h.stats().handled, 0);
    h.stop().unwrap();
    assert_eq!(h.stats().stalls, 1);
}

#[test]
fn init_failure_and_bad_cpu_are_typed_errors() {
    struct Broken;
    impl Worker for Broken {
        type State = ();
        type Message = ();
        type Reply = ();
        fn init(&mut self) -> Result<()> {
            Err(Error::msg("no disk"))
        }
        fn handle_message(&mut self, _: &mut (), _: Envelope<()>) -> Result<()> {
            Ok(())
        }
    }
    match spawn(Broken, WorkerConfig::new()) {
        Err(Error::Init { message, .. }) => assert_eq!(message, "no disk"),
        other => panic!("expected Init error, got {other:?}"),
    }
    match spawn(Scripted::new(), WorkerConfig::new().with_cpu(100_000)) {
        Err(Error::Init { message, .. }) => assert!(message.contains("100000"), "{message}"),
        other => panic!("expected Init error, got {other:?}"),
    }
}

#[test]
fn every_idle_strategy_delivers_and_pinning_works() {
    let cpu = crate::topology::Topology::detect()
        .unwrap()
        .available_cpus()[0];
    for idle in [
        IdleStrategy::Spin,
        IdleStrategy::SpinThenYield,
        IdleStrategy::SpinThenPark,
    ] {
        let cfg = WorkerConfig::new()
            .with_idle_strategy(idle)
            .with_cpu(cpu)
            .with_spin_iterations(10);
        let mut h = spawn(Scripted::new(), cfg).unwrap();
        for i in 0..2_000 {
            h.send(Cmd::Add(1)).unwrap();
            if i % 500 == 0 {
                // Let the worker go idle (and park) between bursts.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert_eq!(
            h.request(Cmd::Echo(0)).unwrap().wait_timeout(LONG),
            Ok(2_000)
        );
        h.stop().unwrap();
    }
}

#[test]
fn custom_batches_keep_untaken_messages_and_survive_a_panic() {
    struct TakeTwo {
        seen: Arc<Mutex<Vec<u64>>>,
    }
    impl Worker for TakeTwo {
        type State = ();
        type Message = u64;
        type Reply = ();
        fn init(&mut self) -> Result<()> {
            Ok(())
        }
        fn handle_message(&mut self, _: &mut (), _: Envelope<u64>) -> Result<()> {
            unreachable!("handle_batch is overridden")
        }
        fn handle_batch(&mut self, _: &mut (), batch: &mut Batch<'_, u64>) -> Result<()> {
            for _ in 0..2 {
                let Some(m) = batch.next() else { break };
                if m.payload == 13 {
                    panic!("thirteen");
                }
                self.seen.lock().unwrap().push(m.payload);
            }
            Ok(())
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let cfg = WorkerConfig::new().with_restart_policy(RestartPolicy::Always);
    let mut h = spawn(TakeTwo { seen: seen.clone() }, cfg).unwrap();
    h.pause().unwrap();
    h.send_batch(0..40).unwrap();
    h.resume().unwrap();
    h.stop().unwrap();
    let expected: Vec<u64> = (0..40).filter(|&v| v != 13).collect();
    assert_eq!(*seen.lock().unwrap(), expected);
    let s = h.stats();
    assert_eq!(
        (s.received, s.handled, s.failed, s.restarts),
        (40, 39, 1, 1)
    );
}

#[test]
fn tracing_stamps_send_time_and_keys_are_absent_for_direct_sends() {
    struct Check;
    impl Worker for Check {
        type State = ();
        type Message = ();
        type Reply = bool;
        fn init(&mut self) -> Result<()> {
            Ok(())
        }
        fn handle_message(&mut self, _: &mut (), mut m: Envelope<(), bool>) -> Result<()> {
            let ok = m.sent_at().is_some() && m.key_hash().is_none();
            m.reply(ok)?;
            Ok(())
        }
    }
    let mut h = spawn(Check, WorkerConfig::new().with_tracing(true)).unwrap();
    assert_eq!(h.request(()).unwrap().wait_timeout(LONG), Ok(true));
}

#[test]
fn dropping_the_handle_stops_the_worker_gracefully() {
    let w = Scripted::new();
    let at_shutdown = w.at_shutdown.clone();
    let mut h = spawn(w, WorkerConfig::new()).unwrap();
    h.send(Cmd::Add(3)).unwrap();
    drop(h);
    assert_eq!(at_shutdown.load(Ordering::SeqCst), 3);
}

#[test]
fn high_priority_is_raised_or_reported() {
    let mut h = spawn(
        Scripted::new(),
        WorkerConfig::new().with_high_priority(true),
    )
    .unwrap();
    let events = h.events();
    h.send(Cmd::Add(1)).unwrap();
    h.stop().unwrap();
    // Either the OS allowed it (root) or the refusal was reported; never silent.
    // SAFETY-free check: we cannot read another thread's nice value portably,
    // so assert on what the worker reported.
    let refused = events
        .drain()
        .iter()
        .any(|e| matches!(e.kind, EventKind::PriorityNotRaised { .. }));
    let is_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false);
    if is_root {
        assert!(!refused);
    }
}

#[test]
fn after_round_runs_once_per_round_that_handled_messages() {
    use std::sync::atomic::{AtomicU64, Ordering};
    struct Rounds {
        rounds: Arc<AtomicU64>,
        flushed: Arc<AtomicU64>,
    }
    impl Worker for Rounds {
        type State = Vec<u64>;
        type Message = u64;
        type Reply = ();
        fn init(&mut self) -> Result<Vec<u64>> {
            Ok(Vec::new())
        }
        fn handle_message(&mut self, s: &mut Vec<u64>, m: Envelope<u64>) -> Result<()> {
            s.push(m.payload);
            Ok(())
        }
        fn after_round(&mut self, s: &mut Vec<u64>) -> Result<()> {
            // Called only when the round handled something.
            assert!(!s.is_empty());
            self.rounds.fetch_add(1, Ordering::Relaxed);
            self.flushed
                .fetch_add(s.drain(..).sum::<u64>(), Ordering::Relaxed);
            Ok(())
        }
    }
    let rounds = Arc::new(AtomicU64::new(0));
    let flushed = Arc::new(AtomicU64::new(0));
    let w = Rounds {
        rounds: rounds.clone(),
        flushed: flushed.clone(),
    };
    let mut h = crate::worker::spawn(w, WorkerConfig::new()).unwrap();
    let mut senders: Vec<_> = (0..3).map(|_| h.sender()).collect();
    for i in 1..=300u64 {
        senders[(i % 3) as usize].send(i).unwrap();
    }
    h.stop().unwrap();
    assert_eq!(
        flushed.load(Ordering::Relaxed),
        300 * 301 / 2,
        "every message flushed by a round"
    );
    let r = rounds.load(Ordering::Relaxed);
    assert!((1..=300).contains(&r), "{r} rounds");
}

/// A request queued behind a message that makes the worker give up
/// resolves as `Dropped` while the handle still lives (it used to hang
/// until the group was dropped: the abandoned request stayed in a ring the
/// sender kept alive).
#[test]
fn request_queued_behind_a_give_up_resolves_as_dropped() {
    let mut h = spawn(
        Scripted::new(),
        WorkerConfig::new().with_restart_policy(RestartPolicy::Never),
    )
    .unwrap();
    h.send(Cmd::Sleep(Duration::from_millis(100))).unwrap();
    h.send(Cmd::Panic).unwrap();
    let queued = h.request(Cmd::Echo(1)).unwrap();
    assert_eq!(queued.wait_timeout(LONG), Err(ReplyError::Dropped));
    assert!(eventually(|| h.state() == WorkerState::Failed));
    // Later requests fail at once, handing the message back.
    assert!(h.request(Cmd::Echo(2)).unwrap_err().is_stopped());
    assert!(h.join().is_err());
}

/// What a `Keeper` does with a request's reply slot.
enum Slot {
    /// Leaks it (`mem::forget`): it can never be answered or dropped.
    Forget,
    /// Keeps it in the worker's state, unanswered.
    Keep,
    /// Answers with the value.
    Answer(u32),
}

struct Keeper;

impl Worker for Keeper {
    type State = Vec<ReplyTo<u32>>;
    type Message = Slot;
    type Reply = u32;
    fn init(&mut self) -> Result<Vec<ReplyTo<u32>>> {
        Ok(Vec::new())
    }
    fn handle_message(
        &mut self,
        kept: &mut Vec<ReplyTo<u32>>,
        mut m: Envelope<Slot, u32>,
    ) -> Result<()> {
        match m.payload {
            Slot::Forget => std::mem::forget(m.take_reply()),
            Slot::Keep => kept.extend(m.take_reply()),
            Slot::Answer(v) => m.reply(v)?,
        }
        Ok(())
    }
}

/// A reply slot that was leaked, or kept unanswered in the worker's state,
/// resolves as `Dropped` once the worker has exited, through `wait`,
/// `wait_timeout` and `try_get`; a reply sent before the exit still
/// arrives. (The leaked one used to hang `wait` forever.)
#[test]
fn leaked_or_kept_reply_slots_resolve_when_the_worker_exits() {
    let mut h = spawn(Keeper, WorkerConfig::new()).unwrap();
    let leaked = h.request(Slot::Forget).unwrap();
    let kept = h.request(Slot::Keep).unwrap();
    let answered = h.request(Slot::Answer(7)).unwrap();
    let blocking = h.request(Slot::Forget).unwrap();
    // While the worker lives, a kept slot may still be answered.
    assert_eq!(
        kept.wait_timeout(Duration::from_millis(20)),
        Err(ReplyError::Timeout)
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || tx.send(blocking.wait()).unwrap());
    h.stop().unwrap();
    assert_eq!(leaked.wait_timeout(LONG), Err(ReplyError::Dropped));
    assert_eq!(kept.try_get(), Err(ReplyError::Dropped));
    assert_eq!(answered.wait(), Ok(7));
    assert_eq!(rx.recv_timeout(LONG), Ok(Err(ReplyError::Dropped)));
    waiter.join().unwrap();
}

/// Errors a user can act on: `Debug` names the variant, `Stopped` stays
/// `Stopped` in the umbrella error, and an empty non-blocking receive is not
/// a timeout.
#[test]
fn errors_keep_their_meaning_through_conversions() {
    assert_eq!(format!("{:?}", SendError::Stopped(5u8)), "Stopped(..)");
    assert_eq!(format!("{:?}", SendError::Full(5u8)), "Full(..)");
    let e = SendError::NoSuchWorker {
        index: 3,
        len: 2,
        message: (),
    };
    assert_eq!(format!("{e:?}"), "NoSuchWorker { index: 3, len: 2, .. }");
    assert!(matches!(Error::from(SendError::Stopped(1)), Error::Stopped));
    assert!(matches!(
        Error::from(crate::channel::TryRecvError::Empty),
        Error::Empty
    ));
    let mut h = spawn(Scripted::new(), WorkerConfig::new()).unwrap();
    h.stop().unwrap();
    let e: Error = h.send(Cmd::Add(1)).unwrap_err().into();
    assert!(matches!(e, Error::Stopped), "{e}");
}

/// `busy` stops growing once the worker has stopped.
#[test]
fn busy_stops_counting_at_stop() {
    let mut h = spawn(Scripted::new(), WorkerConfig::new()).unwrap();
    h.send(Cmd::Sleep(Duration::from_millis(20))).unwrap();
    h.stop().unwrap();
    let first = h.stats().busy;
    assert!(first >= Duration::from_millis(20), "{first:?}");
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(h.stats().busy, first);
}

/// Events beyond the queue's capacity are dropped and counted, and the gap
/// is reported by an `EventsDropped` event once there is room again.
#[test]
fn dropped_events_are_counted_and_reported() {
    let mut h = spawn(Scripted::new(), WorkerConfig::new()).unwrap();
    let events = h.events();
    let extra = 10;
    for _ in 0..EVENT_CAPACITY + extra {
        h.send(Cmd::Fail).unwrap();
    }
    h.flush().unwrap();
    assert_eq!(h.stats().events_dropped, extra as u64);
    let first = events.drain();
    assert_eq!(first.len(), EVENT_CAPACITY);
    h.send(Cmd::Fail).unwrap();
    h.flush().unwrap();
    let kinds: Vec<EventKind> = events.drain().into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds.first(),
        Some(&EventKind::EventsDropped {
            count: extra as u64
        })
    );
    assert!(matches!(
        kinds.get(1),
        Some(EventKind::HandlerFailed { .. })
    ));
    h.stop().unwrap();
}
