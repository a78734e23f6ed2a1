//! The worker thread: pin, init, then loop over control, queues, ticks and
//! idling until stopped.

use super::config::{IdleStrategy, RestartPolicy, WorkerConfig};
use super::event::{EventKind, EventSink};
use super::mailbox::{MailSender, Mailbox, mailbox};
use super::shared::{Control, WorkerShared};
use super::spin::SpinBudget;
use super::stats::{HANDLER_SAMPLE, WorkerState, now_nanos};
use super::traits::{Batch, Worker};
use super::watchdog::{self, Watched};
use crate::error::panic_message;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Park at most this long when idle with no tick due, as a backstop.
const MAX_PARK: Duration = Duration::from_secs(1);
/// Empty polls after which the worker counts itself idle (for busy time).
const IDLE_AFTER_POLLS: u32 = 64;
/// Yields between spinning and parking.
const YIELDS_BEFORE_PARK: u32 = 64;
/// Spin hints a worker waits after a short batch from a sender that is
/// still streaming, before it polls again (see `poll_rings`).
const STREAM_PAUSE_SPINS: u32 = 32;

/// A worker thread that has been started but may still be in `init`.
pub(crate) struct Launch<M, R = ()> {
    pub(crate) shared: Arc<WorkerShared<M, R>>,
    /// Producer ends of the rings the worker was started with.
    pub(crate) producers: Vec<MailSender<M, R>>,
    pub(crate) join: JoinHandle<Result<()>>,
    ready: crossbeam_channel::Receiver<Result<()>>,
}

impl<M, R> Launch<M, R> {
    /// Waits for `init` to finish.
    pub(crate) fn wait_ready(&self) -> Result<()> {
        match self.ready.recv() {
            Ok(r) => r,
            // The thread died before reporting (cannot happen short of an
            // abort); say so rather than hang.
            Err(_) => Err(Error::Init {
                worker: self.shared.name.to_string(),
                message: "worker thread exited during start-up".into(),
            }),
        }
    }
}

impl<M: Send + 'static, R: Send + 'static> Watched for WorkerShared<M, R> {
    fn handler_progress(&self) -> (bool, u64) {
        let o = &self.stats.own;
        (o.in_handler.get() != 0, o.handler_calls.get())
    }
    fn threshold(&self) -> Option<Duration> {
        self.stall_threshold
    }
    fn report_stall(&self, busy_for: Duration) {
        self.stats
            .foreign
            .stalls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.emit(EventKind::Stalled { busy_for });
    }
}

/// Starts a worker thread with `rings` initial rings (one per sender that
/// exists at spawn time).
pub(crate) fn launch<W: Worker>(
    worker: W,
    config: &WorkerConfig,
    index: usize,
    rings: usize,
    events: EventSink,
) -> Result<Launch<W::Message, W::Reply>> {
    let name: Arc<str> = config
        .name
        .clone()
        .unwrap_or_else(|| format!("worker-{index}"))
        .into();
    let (alive, life) = super::reply::life();
    let shared = Arc::new(WorkerShared::new(
        index,
        name.clone(),
        config.stall_threshold,
        events,
        life,
    ));
    let (producers, consumers): (Vec<_>, Vec<_>) = (0..rings)
        .map(|_| mailbox(config.queue_capacity(), shared.signal.clone()))
        .unzip();
    let (ready_tx, ready) = crossbeam_channel::bounded(1);
    let thread_shared = shared.clone();
    let thread_config = config.clone();
    let join = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            // Dropped when the thread ends, after the worker's state: every
            // reply still pending then resolves as `Dropped`.
            let _alive = alive;
            thread_main(worker, thread_config, thread_shared, consumers, ready_tx)
        })
        .map_err(|source| Error::Spawn {
            worker: name.to_string(),
            source,
        })?;
    Ok(Launch {
        shared,
        producers,
        join,
        ready,
    })
}

fn thread_main<W: Worker>(
    worker: W,
    config: WorkerConfig,
    shared: Arc<WorkerShared<W::Message, W::Reply>>,
    rings: Vec<Mailbox<W::Message, W::Reply>>,
    ready: crossbeam_channel::Sender<Result<()>>,
) -> Result<()> {
    shared.stats.set_state(WorkerState::Starting);
    super::current::enter(
        shared.clone(),
        super::outbox::SendConfig::of(&config),
        config.io_report.as_ref().map(|h| h.0.clone()),
    );
    shared.stats.own.started_ns.set(now_nanos());
    let full_spin = config.spin_iterations;
    let mut runner = Runner {
        worker,
        state: None,
        rings,
        shared,
        config,
        next_seq: 0,
        paused: false,
        stopping: false,
        gave_up: None,
        restart_times: VecDeque::new(),
        idle_polls: 0,
        spin: SpinBudget::new(full_spin),
        spins: 0,
        next_tick: None,
        cursor: 0,
        control: VecDeque::new(),
        flushes: Vec::new(),
    };
    if let Err(e) = runner.start() {
        tracing::error!(
            worker = runner.shared.index,
            name = &*runner.shared.name,
            error = %e,
            "worker failed to start"
        );
        let _ = ready.send(Err(e));
        runner.exit_failed("init failed");
        return Ok(());
    }
    let _ = ready.send(Ok(()));
    watchdog::register(runner.shared.clone());
    runner.run()
}

struct Runner<W: Worker> {
    worker: W,
    state: Option<W::State>,
    rings: Vec<Mailbox<W::Message, W::Reply>>,
    shared: Arc<WorkerShared<W::Message, W::Reply>>,
    config: WorkerConfig,
    next_seq: u64,
    paused: bool,
    stopping: bool,
    gave_up: Option<String>,
    restart_times: VecDeque<Instant>,
    idle_polls: u32,
    /// How long idle periods spin (`spin.rs`), and this period's spin.
    spin: SpinBudget,
    spins: u32,
    next_tick: Option<Instant>,
    cursor: usize,
    control: VecDeque<Control<W::Message, W::Reply>>,
    /// Flushes waiting for the rings to reach their snapshots.
    flushes: Vec<PendingFlush>,
}

/// A flush in progress: answered once each ring's read index has reached
/// the tail it had when the flush arrived (a ring that finished and was
/// dropped has reached it).
struct PendingFlush {
    targets: Vec<(usize, usize)>,
    done: crossbeam_channel::Sender<()>,
}

impl<W: Worker> Runner<W> {
    fn name(&self) -> String {
        self.shared.name.to_string()
    }

    /// Pins, raises priority, runs `init`.
    fn start(&mut self) -> Result<()> {
        if let Some(cpu) = self.config.cpu {
            if !crate::topology::pin_current_thread(cpu) {
                return Err(Error::Init {
                    worker: self.name(),
                    message: format!("could not pin the thread to CPU {cpu}"),
                });
            }
        }
        #[cfg(feature = "hwloc")]
        if let (true, Some(node)) = (self.config.bind_memory, self.config.numa_node) {
            // Pinning already makes first-touch allocations node-local; this
            // also binds memory the state allocates later, from any path.
            if let Err(e) = crate::topology::bind_thread_memory_to_node(node) {
                self.shared.emit(EventKind::MemoryNotBound {
                    error: e.to_string(),
                });
            }
        }
        if self.config.high_priority {
            if let Err(e) = raise_priority() {
                self.shared.emit(EventKind::PriorityNotRaised {
                    error: e.to_string(),
                });
            }
        }
        match panic::catch_unwind(AssertUnwindSafe(|| self.worker.init())) {
            Ok(Ok(state)) => {
                self.state = Some(state);
                self.shared.stats.set_state(WorkerState::Running);
                self.next_tick = self.config.tick_interval.map(|t| Instant::now() + t);
                tracing::info!(
                    worker = self.shared.index,
                    name = &*self.shared.name,
                    cpu = self.config.cpu,
                    node = self.config.numa_node,
                    high_priority = self.config.high_priority,
                    "worker started"
                );
                Ok(())
            }
            Ok(Err(e)) => Err(Error::Init {
                worker: self.name(),
                message: e.to_string(),
            }),
            Err(p) => Err(Error::Init {
                worker: self.name(),
                message: format!("init panicked: {}", panic_message(&*p)),
            }),
        }
    }

    fn run(mut self) -> Result<()> {
        loop {
            if self.shared.has_control() {
                self.process_control();
            }
            if self.stopping || self.gave_up.is_some() {
                break;
            }
            let worked = !self.paused && self.poll_rings();
            if self.gave_up.is_some() {
                break;
            }
            // A local I/O driver runs after the batches, so what their
            // handlers queued goes out in this round's one submit.
            let worked = self.poll_local() || worked;
            if worked {
                self.check_flushes();
            }
            if worked {
                self.after_round();
                if self.gave_up.is_some() {
                    break;
                }
            }
            self.tick_if_due();
            if worked {
                self.end_idle();
            } else {
                self.idle();
            }
        }
        if self.gave_up.is_none() {
            self.graceful_stop();
        }
        match self.gave_up.take() {
            Some(reason) => {
                self.exit_failed(&reason);
                Err(Error::WorkerFailed {
                    worker: self.name(),
                    message: reason,
                })
            }
            None => self.finish(),
        }
    }

    fn process_control(&mut self) {
        self.shared.take_control(&mut self.control);
        while let Some(c) = self.control.pop_front() {
            match c {
                Control::Attach(r) => self.rings.push(r),
                Control::Pause => {
                    self.paused = true;
                    self.shared.stats.set_state(WorkerState::Paused);
                }
                Control::Resume => {
                    self.paused = false;
                    self.shared.stats.set_state(WorkerState::Running);
                }
                Control::Ping(tx) => {
                    let _ = tx.send(());
                }
                Control::Flush(done) => self.start_flush(done),
                Control::Stop => self.stopping = true,
            }
        }
        self.check_flushes();
    }

    /// Snapshots every ring's published tail. A send that returned before
    /// the flush was asked for published its tail before the control queue's
    /// lock was taken, and this runs after the worker took that lock, so
    /// the snapshot covers it; rings attached before the flush arrived are
    /// already in `rings` (the control queue is FIFO).
    fn start_flush(&mut self, done: crossbeam_channel::Sender<()>) {
        let targets = self
            .rings
            .iter()
            .map(|r| (r.ring().id(), r.ring().tail_now()))
            .collect();
        self.flushes.push(PendingFlush { targets, done });
    }

    /// Answers the flushes whose snapshots every ring has reached.
    fn check_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let rings = &self.rings;
        self.flushes.retain(|f| {
            let reached = f.targets.iter().all(|&(id, target)| {
                rings
                    .iter()
                    .find(|r| r.ring().id() == id)
                    .is_none_or(|r| r.ring().popped() >= target)
            });
            if reached {
                let _ = f.done.send(());
            }
            !reached
        });
    }

    /// One pass over every ring, a batch from each. Returns whether any
    /// message was taken.
    fn poll_rings(&mut self) -> bool {
        let n = self.rings.len();
        if n == 0 {
            return false;
        }
        let mut worked = false;
        let start = self.cursor % n;
        self.cursor = self.cursor.wrapping_add(1);
        let mut finished = false;
        for k in 0..n {
            let i = (start + k) % n;
            let took = self.run_batch(i);
            if took > 0 {
                worked = true;
                // A short batch from a sender that is still writing: the
                // worker is right behind it, and polling again at once would
                // take each line of slots (and the tail's line) from the
                // sender's cache a few messages at a time, stalling both
                // sides. Waiting a moment lets a few lines fill (measured on
                // `benches/worker_pool.rs`: one message at a time went from
                // about 65 to about 100 Mmsg/s). A sender that stopped (a
                // request waiting for its reply) is polled again at once.
                if took < self.config.batch_size() as u64 && self.rings[i].sender_streaming() {
                    for _ in 0..STREAM_PAUSE_SPINS {
                        std::hint::spin_loop();
                    }
                }
            } else if self.rings[i].is_finished() {
                finished = true;
            }
            if self.gave_up.is_some() {
                return worked;
            }
        }
        if finished {
            self.rings.retain_mut(|r| !r.is_finished());
        }
        if !worked {
            // The gauge is refreshed when the worker runs dry, not on every
            // pass: off the busy path, and "as last observed" either way.
            let depth: usize = self.rings.iter().map(|r| r.ring().cached_len()).sum();
            self.shared.stats.own.queue_depth.set(depth as u64);
        }
        worked
    }

    /// Handles one batch from ring `i`; returns how many messages it took.
    fn run_batch(&mut self, i: usize) -> u64 {
        let Runner {
            worker,
            state,
            rings,
            shared,
            config,
            next_seq,
            ..
        } = self;
        let Some(st) = state.as_mut() else { return 0 };
        let ring = &mut rings[i];
        let ready = ring.ready();
        if ready == 0 {
            return 0;
        }
        let own = &shared.stats.own;
        // Work found: an idle period ends before the handler runs, so the
        // handler's time counts as busy (one local load per batch).
        let idle_since = own.idle_since.get();
        if idle_since != 0 {
            own.idle_ns.add(now_nanos().saturating_sub(idle_since));
            own.idle_since.set(0);
        }
        let mut batch = Batch::new(ring.batch(ready.min(config.batch_size()), *next_seq));
        let calls = own.handler_calls.get();
        own.handler_calls.set(calls.wrapping_add(1));
        let timed = (calls % HANDLER_SAMPLE == 0).then(Instant::now);
        own.in_handler.set(1);
        let result = panic::catch_unwind(AssertUnwindSafe(|| worker.handle_batch(st, &mut batch)));
        own.in_handler.set(0);
        let taken = batch.taken;
        if let Some(t) = timed
            && taken > 0
        {
            own.handler_ns.record(t.elapsed().as_nanos() as u64 / taken);
        }
        let last_seq = batch.last_seq();
        let last_failed = batch.last_failed;
        let mut failures = std::mem::take(&mut batch.failures);
        // Publishes the read index; untaken messages stay queued.
        drop(batch);
        *next_seq += taken;
        own.received.add(taken);

        let mut panicked = None;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => match last_seq {
                Some(seq) if !last_failed => failures.push((seq, e)),
                // An error after the last message already failed, or before
                // any was taken: report it without a message to blame.
                _ => shared.emit(EventKind::HandlerFailed {
                    seq: last_seq.unwrap_or(*next_seq),
                    error: e.to_string(),
                }),
            },
            Err(p) => panicked = Some(panic_message(&*p)),
        }
        let mut failed = failures.len() as u64;
        for (seq, e) in failures {
            shared.emit(EventKind::HandlerFailed {
                seq,
                error: e.to_string(),
            });
        }
        if let Some(message) = panicked {
            let seq = match last_seq {
                Some(seq) if !last_failed => {
                    failed += 1;
                    Some(seq)
                }
                _ => None,
            };
            shared.emit(EventKind::Panicked { seq, message });
            own.failed.add(failed);
            self.restart();
        } else if failed > 0 {
            // `handled` is derived (received - failed) when read: the common
            // case stores nothing here.
            own.failed.add(failed);
        }
        taken
    }

    /// Runs `after_round` (panics and errors handled as for `tick`).
    fn after_round(&mut self) {
        let Some(st) = self.state.as_mut() else {
            return;
        };
        // No stall-watchdog bookkeeping here: it would add stores to every
        // round of every worker, and the default hook is empty (inlined
        // away). A stuck `after_round` shows as a worker that stops taking
        // messages, not as a `Stalled` event.
        let worker = &mut self.worker;
        let result = panic::catch_unwind(AssertUnwindSafe(|| worker.after_round(st)));
        self.hook_outcome(result, |error| EventKind::AfterRoundFailed { error });
    }

    /// Reports a hook's error as `failed(error)`, or its panic as a panic
    /// (and restarts per the policy).
    fn hook_outcome(
        &mut self,
        result: std::thread::Result<Result<()>>,
        failed: impl FnOnce(String) -> EventKind,
    ) {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.shared.emit(failed(e.to_string())),
            Err(p) => {
                self.shared.emit(EventKind::Panicked {
                    seq: None,
                    message: panic_message(&*p),
                });
                self.restart();
            }
        }
    }

    fn tick_if_due(&mut self) {
        let (Some(due), Some(interval)) = (self.next_tick, self.config.tick_interval) else {
            return;
        };
        let now = Instant::now();
        if now < due || self.paused {
            return;
        }
        self.next_tick = Some(now + interval);
        let Some(st) = self.state.as_mut() else {
            return;
        };
        let own = &self.shared.stats.own;
        own.handler_calls.add(1);
        own.in_handler.set(1);
        let worker = &mut self.worker;
        let result = panic::catch_unwind(AssertUnwindSafe(|| worker.tick(st)));
        own.in_handler.set(0);
        own.ticks.add(1);
        self.hook_outcome(result, |error| EventKind::TickFailed { error });
    }

    /// Discards the state after a panic and runs `init` again, if the policy
    /// allows; otherwise records that the worker gave up.
    fn restart(&mut self) {
        if let Some(old) = self.state.take() {
            // The state may be inconsistent after a panic; dropping it may
            // panic too, which must not take the thread down.
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(old)));
        }
        // The state's local I/O (its sockets) goes with it; a restarted
        // `init` starts its own.
        self.shut_down_local();
        let now = Instant::now();
        let allowed = match self.config.restart {
            RestartPolicy::Never => false,
            RestartPolicy::Always => true,
            RestartPolicy::Limited {
                max_restarts,
                within,
            } => {
                while self
                    .restart_times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= within)
                {
                    self.restart_times.pop_front();
                }
                self.restart_times.len() < max_restarts as usize
            }
        };
        if !allowed {
            self.gave_up = Some(format!(
                "panicked; restart policy {:?} exhausted",
                self.config.restart
            ));
            return;
        }
        self.restart_times.push_back(now);
        match panic::catch_unwind(AssertUnwindSafe(|| self.worker.init())) {
            Ok(Ok(s)) => {
                self.state = Some(s);
                self.shared.stats.own.restarts.add(1);
                self.shared.emit(EventKind::Restarted {
                    restarts: self.shared.stats.own.restarts.get(),
                });
            }
            Ok(Err(e)) => self.gave_up = Some(format!("init failed on restart: {e}")),
            Err(p) => {
                self.gave_up = Some(format!("init panicked on restart: {}", panic_message(&*p)))
            }
        }
    }

    /// Leaves an idle period: adds its length to the idle total (the only
    /// clock reads of the message path happen here and in `idle`, at the
    /// edges of real idle periods).
    #[inline]
    fn end_idle(&mut self) {
        self.idle_polls = 0;
        let own = &self.shared.stats.own;
        let since = own.idle_since.get();
        if since != 0 {
            own.idle_ns.add(now_nanos().saturating_sub(since));
            own.idle_since.set(0);
        }
    }

    fn idle(&mut self) {
        self.idle_polls = self.idle_polls.saturating_add(1);
        if self.idle_polls == 1 {
            self.spins = self.spin.spins(now_nanos());
        }
        if self.idle_polls == IDLE_AFTER_POLLS {
            self.shared.stats.own.idle_since.set(now_nanos());
        }
        let spins = self.spins;
        match self.config.idle_strategy() {
            IdleStrategy::Spin => std::hint::spin_loop(),
            IdleStrategy::SpinThenYield if self.idle_polls < spins => std::hint::spin_loop(),
            IdleStrategy::SpinThenYield => std::thread::yield_now(),
            IdleStrategy::SpinThenPark if self.idle_polls < spins => std::hint::spin_loop(),
            IdleStrategy::SpinThenPark
                if self.idle_polls < spins.saturating_add(YIELDS_BEFORE_PARK) =>
            {
                std::thread::yield_now()
            }
            IdleStrategy::SpinThenPark => self.park(),
        }
    }

    fn park(&mut self) {
        let timeout = match self.next_tick {
            Some(due) if !self.paused => {
                due.saturating_duration_since(Instant::now()).min(MAX_PARK)
            }
            _ => MAX_PARK,
        };
        let shared = &self.shared;
        let rings = &self.rings;
        let paused = self.paused;
        let ready = || {
            shared.has_control()
                || (!paused
                    && rings
                        .iter()
                        .any(|r| r.ring().len() > 0 || r.ring().is_producer_gone()))
        };
        #[cfg(not(loom))]
        if super::local::sleep(&shared.signal, ready, Some(timeout)) {
            return;
        }
        shared.signal.wait_unless(ready, Some(timeout));
    }

    /// One round of the local I/O driver, if `init` installed one.
    fn poll_local(&mut self) -> bool {
        #[cfg(not(loom))]
        return super::local::poll(&self.shared.signal);
        #[cfg(loom)]
        false
    }

    /// Ends the local I/O driver (the worker is exiting).
    fn shut_down_local(&self) {
        #[cfg(not(loom))]
        super::local::shut_down(&self.shared.signal);
    }

    /// Closes every ring losslessly, handles everything queued, then closes
    /// the control queue. Loops because senders may attach new rings until
    /// the control queue is closed.
    fn graceful_stop(&mut self) {
        self.shared.stats.set_state(WorkerState::Stopping);
        let mut pending = VecDeque::new();
        loop {
            for c in pending.drain(..) {
                match c {
                    Control::Attach(r) => self.rings.push(r),
                    Control::Ping(tx) => {
                        let _ = tx.send(());
                    }
                    Control::Flush(done) => self.start_flush(done),
                    Control::Pause | Control::Resume | Control::Stop => {}
                }
            }
            for r in &mut self.rings {
                if !r.ring().is_closed() {
                    r.close();
                }
            }
            loop {
                let mut any = false;
                for i in 0..self.rings.len() {
                    while self.run_batch(i) > 0 {
                        any = true;
                        if self.gave_up.is_some() {
                            return;
                        }
                    }
                }
                // What the handlers queued on a local I/O driver goes out
                // before the next drain (and before it is shut down).
                self.poll_local();
                if !any {
                    break;
                }
                self.after_round();
                if self.gave_up.is_some() {
                    return;
                }
            }
            if self.shared.close_control_if_empty(&mut pending) {
                break;
            }
        }
        // Everything queued has been handled: every flush is complete.
        for f in self.flushes.drain(..) {
            let _ = f.done.send(());
        }
        self.rings.clear();
    }

    /// Runs `shutdown` and reports the worker stopped.
    fn finish(mut self) -> Result<()> {
        let mut result = Ok(());
        if let Some(st) = self.state.take() {
            let worker = &mut self.worker;
            let outcome = match panic::catch_unwind(AssertUnwindSafe(|| worker.shutdown(st))) {
                Ok(r) => r,
                Err(p) => Err(Error::msg(format!(
                    "shutdown panicked: {}",
                    panic_message(&*p)
                ))),
            };
            if let Err(e) = outcome {
                self.shared.emit(EventKind::ShutdownFailed {
                    error: e.to_string(),
                });
                result = Err(Error::WorkerFailed {
                    worker: self.name(),
                    message: format!("shutdown failed: {e}"),
                });
            }
        }
        self.shut_down_local();
        self.shared.stats.set_state(WorkerState::Stopped);
        self.shared.emit(EventKind::Stopped);
        result
    }

    /// Stops without handling what is queued: closes the control queue and
    /// every ring (senders get `Stopped` from now on) and reports how many
    /// messages were abandoned.
    fn exit_failed(&mut self, reason: &str) {
        let mut pending = VecDeque::new();
        while !self.shared.close_control_if_empty(&mut pending) {
            for c in pending.drain(..) {
                if let Control::Attach(r) = c {
                    self.rings.push(r);
                }
            }
        }
        // Close every ring, then drop what was queued: the senders keep the
        // rings alive, so messages left in them (reply slots included) would
        // otherwise live, unanswered, as long as the senders do. A message
        // whose destructor panics is counted and the rest still drop.
        let mut abandoned = 0u64;
        for r in &mut self.rings {
            r.close();
        }
        for r in &mut self.rings {
            while let Some(env) = r.pop() {
                abandoned += 1;
                let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(env)));
            }
        }
        self.rings.clear();
        // Dropping the answer channels reports `FlushError::Stopped`.
        self.flushes.clear();
        self.state = None;
        self.shut_down_local();
        self.shared.stats.set_state(WorkerState::Failed);
        self.shared.emit(EventKind::GaveUp {
            reason: reason.to_string(),
            abandoned,
        });
    }
}

#[cfg(target_os = "linux")]
fn raise_priority() -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority takes plain integers; on failure it returns -1
    // and sets errno, which we read immediately.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -10) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_priority() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "thread priority is only raised on Linux",
    ))
}
