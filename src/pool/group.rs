//! A group of typed application workers fed through a mesh of SPSC rings.

use super::plan::Plan;
use super::sender::PoolSender;
use crate::partition::Partitioner;
use crate::worker::outbox::{Outbox, SendConfig};
use crate::worker::runtime::{self, Launch};
use crate::worker::shared::{Control, WorkerShared};
use crate::worker::{
    EventSink, EventStream, FlushError, GatherError, Pending, SendError, Worker, WorkerConfig,
    WorkerSender, WorkerState, WorkerStats,
};
use crate::{Error, Result};

/// What a worker of type `W` shares with its handles.
type SharedOf<W> = Arc<WorkerShared<<W as Worker>::Message, <W as Worker>::Reply>>;
use std::hash::Hash;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Counters of every worker in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// One entry per worker, by index.
    pub workers: Vec<WorkerStats>,
}

impl PoolStats {
    /// Messages handled successfully, all workers.
    pub fn handled(&self) -> u64 {
        self.workers.iter().map(|w| w.handled).sum()
    }
    /// Messages received, all workers.
    pub fn received(&self) -> u64 {
        self.workers.iter().map(|w| w.received).sum()
    }
    /// Messages failed, all workers.
    pub fn failed(&self) -> u64 {
        self.workers.iter().map(|w| w.failed).sum()
    }
    /// Restarts, all workers.
    pub fn restarts(&self) -> u64 {
        self.workers.iter().map(|w| w.restarts).sum()
    }
}

/// Where one worker of a group runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPlacement {
    /// The worker's index.
    pub index: usize,
    /// Its thread name.
    pub name: String,
    /// The CPU it is pinned to, if any.
    pub cpu: Option<usize>,
}

/// Typed application workers, built by [`WorkerPool::builder`](super::WorkerPool::builder),
/// [`WorkerPool::with_partitioner`](super::WorkerPool::with_partitioner) or
/// [`WorkerPool::spawn`](super::WorkerPool::spawn).
///
/// The group itself sends through its own [`PoolSender`]; call
/// [`sender`](Self::sender) for more, one per producer thread. Dropping the
/// group stops every worker gracefully.
pub struct WorkerGroup<W: Worker> {
    sender: PoolSender<W::Message, W::Reply>,
    workers: Arc<[SharedOf<W>]>,
    joins: Vec<Option<JoinHandle<Result<()>>>>,
    placements: Vec<WorkerPlacement>,
    events: EventSink,
    plan: Arc<Plan>,
}

impl<W: Worker> std::fmt::Debug for WorkerGroup<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerGroup")
            .field("workers", &self.placements)
            .finish_non_exhaustive()
    }
}

impl<W: Worker> WorkerGroup<W> {
    /// Starts one worker per entry of `configs` (each already named and
    /// placed), waits for every `init`, and wires the group's rings.
    pub(crate) fn start(
        mut make: impl FnMut(usize) -> W,
        configs: Vec<WorkerConfig>,
        partitioner: Arc<dyn Partitioner>,
        plan: Arc<Plan>,
    ) -> Result<Self> {
        if configs.is_empty() {
            return Err(Error::InvalidConfig(
                "a pool needs at least one worker".into(),
            ));
        }
        if let Some(expected) = partitioner.expected_workers() {
            if expected != configs.len() {
                return Err(Error::InvalidConfig(format!(
                    "the {} partitioner was built for {expected} workers, the pool has {}",
                    partitioner.name(),
                    configs.len()
                )));
            }
        }
        let events = EventSink::new();
        let mut launches: Vec<Launch<W::Message, W::Reply>> = Vec::with_capacity(configs.len());
        let mut failure = None;
        // Start every thread first so their `init`s run in parallel.
        for (i, cfg) in configs.iter().enumerate() {
            match runtime::launch(make(i), cfg, i, 1, events.clone()) {
                Ok(l) => launches.push(l),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        for l in &launches {
            if let Err(e) = l.wait_ready() {
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            // Stop whoever did start, so no thread outlives the error.
            for l in launches {
                let _ = l.shared.send_control(Control::Stop);
                drop(l.producers);
                let _ = l.join.join();
            }
            return Err(e);
        }
        let placements = configs
            .iter()
            .zip(&launches)
            .map(|(cfg, l)| WorkerPlacement {
                index: l.shared.index,
                name: l.shared.name.to_string(),
                cpu: cfg.cpu(),
            })
            .collect();
        let mut rings = Vec::with_capacity(launches.len());
        let mut shared = Vec::with_capacity(launches.len());
        let mut joins = Vec::with_capacity(launches.len());
        for l in launches {
            rings.extend(l.producers);
            shared.push(l.shared);
            joins.push(Some(l.join));
        }
        let workers: Arc<[_]> = shared.into();
        let first = &configs[0];
        let outbox = Outbox::from_rings(workers.clone(), rings, SendConfig::of(first));
        Ok(Self {
            sender: PoolSender::new(outbox, partitioner),
            workers,
            joins,
            placements,
            events,
            plan,
        })
    }

    /// One [`ResultSink`](crate::worker::ResultSink) per worker, in index
    /// order, each turning results into messages with `map`: the targets
    /// to give an I/O listener, so accepted connections land in the
    /// workers' own loops.
    pub fn result_sinks<T: Send + 'static>(
        &self,
        map: impl Fn(T) -> W::Message + Clone + Send + 'static,
    ) -> Vec<crate::worker::ResultSink<T>> {
        (0..self.workers.len())
            .filter_map(|i| self.sender.outbox().connect_one(i))
            .map(|outbox| {
                crate::worker::ResultSink::to_worker(WorkerSender::from_outbox(outbox), map.clone())
            })
            .collect()
    }

    /// Workers in the group.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always false: a group has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// A new sending handle with its own rings (one per producer thread).
    pub fn sender(&self) -> PoolSender<W::Message, W::Reply> {
        self.sender.clone()
    }

    /// Sends to worker `index`, waiting while its queue is full.
    ///
    /// # Errors
    /// `NoSuchWorker` or `Stopped`, with the message.
    #[inline]
    pub fn send_to_worker(
        &mut self,
        index: usize,
        msg: W::Message,
    ) -> Result<(), SendError<W::Message>> {
        self.sender.send_to_worker(index, msg)
    }

    /// Sends to worker `index` without waiting.
    ///
    /// # Errors
    /// `Full`, `NoSuchWorker` or `Stopped`, with the message.
    #[inline]
    pub fn try_send_to_worker(
        &mut self,
        index: usize,
        msg: W::Message,
    ) -> Result<(), SendError<W::Message>> {
        self.sender.try_send_to_worker(index, msg)
    }

    /// Sends to worker `index`, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, `NoSuchWorker` or `Stopped`, with the message.
    pub fn send_to_worker_timeout(
        &mut self,
        index: usize,
        msg: W::Message,
        timeout: Duration,
    ) -> Result<(), SendError<W::Message>> {
        self.sender.send_to_worker_timeout(index, msg, timeout)
    }

    /// Sends to the worker that owns `key`. See [`PoolSender::send_partitioned`].
    ///
    /// # Errors
    /// `Stopped` or `NoSuchWorker`, with the message.
    #[inline]
    pub fn send_partitioned<K: Hash + ?Sized>(
        &mut self,
        key: &K,
        msg: W::Message,
    ) -> Result<(), SendError<W::Message>> {
        self.sender.send_partitioned(key, msg)
    }

    /// Sends to the worker that owns `key` without waiting.
    ///
    /// # Errors
    /// `Full`, `Stopped` or `NoSuchWorker`, with the message.
    #[inline]
    pub fn try_send_partitioned<K: Hash + ?Sized>(
        &mut self,
        key: &K,
        msg: W::Message,
    ) -> Result<(), SendError<W::Message>> {
        self.sender.try_send_partitioned(key, msg)
    }

    /// Sends by raw routing value. See [`PoolSender::send_by_value`].
    ///
    /// # Errors
    /// `Stopped` or `NoSuchWorker`, with the message.
    #[inline]
    pub fn send_by_value(
        &mut self,
        value: u64,
        msg: W::Message,
    ) -> Result<(), SendError<W::Message>> {
        self.sender.send_by_value(value, msg)
    }

    /// Sends many messages for one key's worker at once.
    ///
    /// # Errors
    /// `Stopped` or `NoSuchWorker` with the messages not sent.
    pub fn send_batch_partitioned<K, I>(
        &mut self,
        key: &K,
        msgs: I,
    ) -> Result<(), SendError<Vec<W::Message>>>
    where
        K: Hash + ?Sized,
        I: IntoIterator<Item = W::Message>,
    {
        self.sender.send_batch_partitioned(key, msgs)
    }

    /// Sends many messages to worker `index` at once.
    ///
    /// # Errors
    /// `Stopped` or `NoSuchWorker` with the messages not sent.
    pub fn send_batch_to_worker<I>(
        &mut self,
        index: usize,
        msgs: I,
    ) -> Result<(), SendError<Vec<W::Message>>>
    where
        I: IntoIterator<Item = W::Message>,
    {
        self.sender.send_batch_to_worker(index, msgs)
    }

    /// Sends a request to worker `index`.
    ///
    /// # Errors
    /// `NoSuchWorker` or `Stopped`, with the message.
    pub fn request(
        &mut self,
        index: usize,
        msg: W::Message,
    ) -> Result<Pending<W::Reply>, SendError<W::Message>> {
        self.sender.request(index, msg)
    }

    /// Sends a request to the worker that owns `key`.
    ///
    /// # Errors
    /// `NoSuchWorker` or `Stopped`, with the message.
    pub fn request_partitioned<K: Hash + ?Sized>(
        &mut self,
        key: &K,
        msg: W::Message,
    ) -> Result<Pending<W::Reply>, SendError<W::Message>> {
        self.sender.request_partitioned(key, msg)
    }

    /// Waits until every worker has handled every message sent to it before
    /// this call, by any sender. See [`PoolSender::flush`].
    ///
    /// # Errors
    /// [`FlushError::Stopped`] if a worker exits first.
    pub fn flush(&self) -> Result<(), FlushError> {
        self.sender.flush()
    }

    /// [`flush`](Self::flush) with one deadline for all workers.
    ///
    /// # Errors
    /// As `flush`, and [`FlushError::Timeout`].
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), FlushError> {
        self.sender.flush_timeout(timeout)
    }

    fn control_all(&self, make: impl Fn() -> Control<W::Message, W::Reply>) -> Result<()> {
        self.workers.iter().try_for_each(|w| w.control(make()))
    }

    /// Pauses every worker (messages queue up).
    ///
    /// # Errors
    /// `WorkerStopped` if a worker is gone.
    pub fn pause_all(&self) -> Result<()> {
        self.control_all(|| Control::Pause)
    }

    /// Resumes every worker.
    ///
    /// # Errors
    /// `WorkerStopped` if a worker is gone.
    pub fn resume_all(&self) -> Result<()> {
        self.control_all(|| Control::Resume)
    }

    /// Pings worker `index` through its control path; returns the round trip.
    ///
    /// # Errors
    /// `NoSuchWorker`, `WorkerStopped` or `Timeout`.
    pub fn ping(&self, index: usize, timeout: Duration) -> Result<Duration> {
        let w = self.workers.get(index).ok_or(Error::NoSuchWorker {
            index,
            len: self.workers.len(),
        })?;
        w.ping(timeout)
    }

    /// Stops every worker gracefully: each handles everything queued to it
    /// (from every sender) before it saw the stop, runs `shutdown` and exits.
    /// Sends after that fail with `Stopped`. Idempotent.
    ///
    /// # Errors
    /// The first worker failure (a worker that gave up, a failed `shutdown`);
    /// every worker is stopped and joined regardless.
    pub fn stop_all(&mut self) -> Result<()> {
        for (w, j) in self.workers.iter().zip(&self.joins) {
            if j.is_some() {
                let _ = w.send_control(Control::Stop);
            }
        }
        let mut first = Ok(());
        for (w, j) in self.workers.iter().zip(&mut self.joins) {
            let Some(j) = j.take() else { continue };
            let r = w.join(j);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Counters of every worker.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            workers: self.workers.iter().map(|w| w.stats.snapshot()).collect(),
        }
    }

    /// One sampler per worker for the pool's metrics; each holds its worker
    /// weakly, so a dropped group leaves the metrics.
    pub(crate) fn sample_sources(&self) -> Vec<crate::worker::SampleSource> {
        self.workers
            .iter()
            .map(|w| {
                let weak = Arc::downgrade(w);
                Box::new(move || weak.upgrade().map(|w| w.sample())) as crate::worker::SampleSource
            })
            .collect()
    }

    /// Lifecycle state of worker `index`.
    pub fn state(&self, index: usize) -> Option<WorkerState> {
        self.workers.get(index).map(|w| w.stats.state())
    }

    /// Where each worker runs.
    pub fn placements(&self) -> &[WorkerPlacement] {
        &self.placements
    }

    /// The plan the group was placed by.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Events from every worker of the group.
    pub fn events(&self) -> EventStream {
        EventStream::new(self.events.receiver())
    }
}

impl<W: Worker> WorkerGroup<W>
where
    W::Message: Clone,
{
    /// Sends a copy of `msg` to every worker.
    ///
    /// # Errors
    /// `Stopped` with the message if a worker is gone.
    pub fn broadcast(&mut self, msg: W::Message) -> Result<(), SendError<W::Message>> {
        self.sender.broadcast(msg)
    }

    /// Sends a copy of the request `msg` to every worker. See
    /// [`PoolSender::request_all`].
    ///
    /// # Errors
    /// As [`PoolSender::request_all`].
    pub fn request_all(
        &mut self,
        msg: W::Message,
    ) -> Result<Vec<Pending<W::Reply>>, SendError<W::Message>> {
        self.sender.request_all(msg)
    }

    /// Scatter-gather: every worker's reply, in index order. See
    /// [`PoolSender::request_all_timeout`].
    ///
    /// # Errors
    /// As [`PoolSender::request_all_timeout`].
    pub fn request_all_timeout(
        &mut self,
        msg: W::Message,
        timeout: Duration,
    ) -> Result<Vec<W::Reply>, GatherError> {
        self.sender.request_all_timeout(msg, timeout)
    }
}

impl<W: Worker> Drop for WorkerGroup<W> {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}
