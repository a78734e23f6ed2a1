//! How a worker runs: its name, queue, CPU, idle behaviour and restart policy.

use std::time::Duration;

/// What a worker does when it has nothing to handle.
///
/// | strategy | wake-up latency | CPU when idle | use |
/// |---|---|---|---|
/// | `Spin` | lowest (no syscall) | 100% of its core | a dedicated core per worker |
/// | `SpinThenYield` | low | high, but yields to other threads | shared cores, latency first |
/// | `SpinThenPark` | a few µs after a short spin | none | the default; required when workers share cores |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleStrategy {
    /// Busy-poll forever.
    Spin,
    /// Spin briefly, then `yield_now` between polls.
    SpinThenYield,
    /// Spin briefly, yield a little, then park until a sender wakes us.
    #[default]
    SpinThenPark,
}

impl IdleStrategy {
    /// True if a worker with this strategy keeps its CPU busy while idle
    /// (`Spin` and `SpinThenYield`), so it needs a CPU of its own.
    pub fn is_busy(self) -> bool {
        matches!(self, IdleStrategy::Spin | IdleStrategy::SpinThenYield)
    }

    /// Short name, as used by `SHARED_NOTHING_IDLE` (`spin`, `yield`, `park`).
    pub fn name(self) -> &'static str {
        match self {
            IdleStrategy::Spin => "spin",
            IdleStrategy::SpinThenYield => "yield",
            IdleStrategy::SpinThenPark => "park",
        }
    }
}

/// What happens after a handler panics.
///
/// The panicking message is counted as failed and reported; messages still
/// queued are kept and handled after the restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never restart: the worker stops and reports (queued messages are
    /// counted as abandoned; senders get `Stopped` errors).
    Never,
    /// Always restart from `init`.
    Always,
    /// Restart at most `max_restarts` times within any `within` window, then
    /// stop and report.
    Limited {
        /// Restarts allowed in the window.
        max_restarts: u32,
        /// The window.
        within: Duration,
    },
}

impl Default for RestartPolicy {
    /// Ten restarts a minute: a poison message costs one restart, a worker
    /// that fails on everything stops soon.
    fn default() -> Self {
        Self::Limited {
            max_restarts: 10,
            within: Duration::from_secs(60),
        }
    }
}

const DEFAULT_QUEUE_CAPACITY: usize = 1024;
const DEFAULT_BATCH_SIZE: usize = 64;

/// Configuration of one worker.
///
/// ```
/// use shared_nothing::worker::{WorkerConfig, IdleStrategy, RestartPolicy};
/// use std::time::Duration;
/// let cfg = WorkerConfig::new()
///     .with_name("ingest-0")
///     .with_queue_capacity(4096)
///     .with_cpu(0)
///     .with_tick_interval(Duration::from_millis(100))
///     .with_idle_strategy(IdleStrategy::SpinThenPark)
///     .with_restart_policy(RestartPolicy::Always)
///     .with_batch_size(64);
/// assert_eq!(cfg.queue_capacity(), 4096);
/// ```
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub(crate) name: Option<String>,
    // `None` = not set explicitly: the default applies, and a pool's plan may
    // choose instead.
    pub(crate) queue_capacity: Option<usize>,
    pub(crate) cpu: Option<usize>,
    pub(crate) numa_node: Option<usize>,
    pub(crate) bind_memory: bool,
    pub(crate) tick_interval: Option<Duration>,
    pub(crate) idle: Option<IdleStrategy>,
    pub(crate) restart: RestartPolicy,
    pub(crate) batch_size: Option<usize>,
    pub(crate) stall_threshold: Option<Duration>,
    pub(crate) tracing: bool,
    pub(crate) routing_keys: bool,
    pub(crate) high_priority: bool,
    pub(crate) spin_iterations: u32,
    /// Set by a pool: where I/O drivers started on the worker's thread
    /// report their stats (see `current::report_io`).
    pub(crate) io_report: Option<IoReportHook>,
}

/// A [`current::IoReport`](super::current::IoReport) with a `Debug` that
/// says only that it is there.
#[derive(Clone)]
pub(crate) struct IoReportHook(pub(crate) super::current::IoReport);

impl std::fmt::Debug for IoReportHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IoReportHook")
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerConfig {
    /// Defaults: queue of 1024 per sender, no pinning, no tick, spin-then-park,
    /// default restart policy, batches of up to 64, stall threshold 1 s.
    pub fn new() -> Self {
        Self {
            name: None,
            queue_capacity: None,
            cpu: None,
            numa_node: None,
            bind_memory: false,
            tick_interval: None,
            idle: None,
            restart: RestartPolicy::default(),
            batch_size: None,
            stall_threshold: Some(Duration::from_secs(1)),
            tracing: false,
            routing_keys: false,
            high_priority: false,
            spin_iterations: 2_000,
            io_report: None,
        }
    }

    /// The thread's name (default `worker-N`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Capacity of each sender's ring into this worker (at least 1).
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = Some(capacity.max(1));
        self
    }

    /// Pin the worker's thread to this CPU before `init` runs.
    pub fn with_cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// Call [`Worker::tick`](super::Worker::tick) about this often.
    pub fn with_tick_interval(mut self, interval: Duration) -> Self {
        self.tick_interval = Some(interval);
        self
    }

    /// What to do when idle.
    pub fn with_idle_strategy(mut self, idle: IdleStrategy) -> Self {
        self.idle = Some(idle);
        self
    }

    /// What to do after a panic.
    pub fn with_restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// Most messages handed to one `handle_batch` call (at least 1).
    pub fn with_batch_size(mut self, batch: usize) -> Self {
        self.batch_size = Some(batch.max(1));
        self
    }

    /// Report a handler that runs longer than this (`None`: never).
    pub fn with_stall_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.stall_threshold = threshold;
        self
    }

    /// Stamp each message with its send time ([`Envelope::sent_at`](super::Envelope::sent_at)).
    /// Costs one small allocation per message.
    pub fn with_tracing(mut self, on: bool) -> Self {
        self.tracing = on;
        self
    }

    /// Deliver each routed message's routing key with it
    /// ([`Envelope::key_hash`](super::Envelope::key_hash): the key's hash
    /// for `send_partitioned`, the value for `send_by_value`). Off by
    /// default: a message then crosses the ring as its payload alone (a
    /// `u64` moves 8 bytes); with keys on, each routed message also puts
    /// its key in the sender's metadata lane, which costs a lock per
    /// message.
    pub fn with_routing_keys(mut self, on: bool) -> Self {
        self.routing_keys = on;
        self
    }

    /// Raise the thread's scheduling priority (nice -10). If the OS refuses,
    /// the worker runs at normal priority and reports a `PriorityNotRaised` event.
    pub fn with_high_priority(mut self, on: bool) -> Self {
        self.high_priority = on;
        self
    }

    /// Polls before an idle worker yields or parks.
    pub fn with_spin_iterations(mut self, n: u32) -> Self {
        self.spin_iterations = n;
        self
    }

    /// I/O drivers started on the worker's thread report their stats to
    /// `hook` (a pool's metrics).
    #[cfg(not(loom))]
    pub(crate) fn with_io_report(mut self, hook: super::current::IoReport) -> Self {
        self.io_report = Some(IoReportHook(hook));
        self
    }

    /// The queue capacity (default 1024).
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY)
    }

    /// The configured CPU, if pinned.
    pub fn cpu(&self) -> Option<usize> {
        self.cpu
    }

    /// The idle strategy (default `SpinThenPark`).
    pub fn idle_strategy(&self) -> IdleStrategy {
        self.idle.unwrap_or_default()
    }

    /// The batch size (default 64).
    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE)
    }

    /// Pin to `cpu` and, with the `hwloc` feature and `bind_memory`, bind the
    /// thread's memory to `numa_node` (used by pools placing from a plan).
    pub(crate) fn placed(
        mut self,
        cpu: Option<usize>,
        numa_node: Option<usize>,
        bind_memory: bool,
    ) -> Self {
        self.cpu = cpu;
        self.numa_node = numa_node;
        self.bind_memory = bind_memory;
        self
    }
}
