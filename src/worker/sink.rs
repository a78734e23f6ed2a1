//! Where the results of work done elsewhere (I/O completions, accelerator
//! results) go: into a worker's loop as ordinary messages, or onto a queue a
//! plain thread waits on.
//!
//! A sink never blocks the thread that delivers into it. When the target
//! worker's queue is full the result waits in the sink's backlog and
//! [`ResultSink::flush`] retries it later: a full queue is backpressure,
//! never a drop. The delivering worker bounds the backlog by bounding the
//! requests it has in flight.

use super::current::MessagePort;
use super::error::SendError;
use super::handle::WorkerSender;
use crate::Result;
use crate::channel::spsc;
use crate::channel::{Channel, RecvError, RecvTimeoutError};
use std::collections::VecDeque;
use std::time::Duration;

/// The delivering side of a result path; see the module docs.
///
/// ```
/// use shared_nothing::worker::ResultSink;
/// let (mut sink, mut queue) = ResultSink::<u32>::queue();
/// sink.deliver(7);
/// assert_eq!(queue.recv().unwrap(), 7);
/// ```
pub struct ResultSink<T: Send + 'static> {
    inner: Box<dyn Deliver<T>>,
}

impl<T: Send + 'static> std::fmt::Debug for ResultSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultSink")
            .field("backlog", &self.inner.backlog())
            .finish()
    }
}

trait Deliver<T>: Send {
    fn deliver(&mut self, item: T);
    fn flush(&mut self) -> usize;
    fn backlog(&self) -> usize;
    fn is_closed(&self) -> bool;
}

struct ToWorker<M: Send + 'static, F> {
    /// The worker's sender, its reply type erased (one indirect call per
    /// delivered result, on the completion path only).
    sender: Box<dyn MessagePort<M>>,
    map: F,
    backlog: VecDeque<M>,
    closed: bool,
}

impl<T, M, F> Deliver<T> for ToWorker<M, F>
where
    T: Send + 'static,
    M: Send + 'static,
    F: FnMut(T) -> M + Send,
{
    fn deliver(&mut self, item: T) {
        let msg = (self.map)(item);
        if self.closed {
            return;
        }
        if !self.backlog.is_empty() {
            // Keep order: nothing overtakes what is already waiting.
            self.backlog.push_back(msg);
            self.flush();
            return;
        }
        match self.sender.try_send(msg) {
            Ok(()) => {}
            Err(SendError::Full(m) | SendError::Timeout(m)) => self.backlog.push_back(m),
            Err(_) => self.closed = true,
        }
    }

    fn flush(&mut self) -> usize {
        while let Some(m) = self.backlog.pop_front() {
            match self.sender.try_send(m) {
                Ok(()) => {}
                Err(SendError::Full(m) | SendError::Timeout(m)) => {
                    self.backlog.push_front(m);
                    break;
                }
                Err(_) => {
                    self.closed = true;
                    self.backlog.clear();
                }
            }
        }
        self.backlog.len()
    }

    fn backlog(&self) -> usize {
        self.backlog.len()
    }

    fn is_closed(&self) -> bool {
        self.closed
    }
}

struct ToQueue<T: Send + 'static> {
    tx: spsc::Sender<T>,
}

impl<T: Send + 'static> Deliver<T> for ToQueue<T> {
    fn deliver(&mut self, item: T) {
        // Unbounded: never full, fails only when the queue is dropped.
        let _ = self.tx.try_send(item);
    }
    fn flush(&mut self) -> usize {
        0
    }
    fn backlog(&self) -> usize {
        0
    }
    fn is_closed(&self) -> bool {
        self.tx.is_disconnected()
    }
}

impl<T: Send + 'static> ResultSink<T> {
    /// Results become messages `map(result)` sent into a worker.
    pub fn to_worker<M: Send + 'static, R: Send + 'static>(
        sender: WorkerSender<M, R>,
        map: impl FnMut(T) -> M + Send + 'static,
    ) -> Self {
        Self::to_port(Box::new(sender), map)
    }

    fn to_port<M: Send + 'static>(
        sender: Box<dyn MessagePort<M>>,
        map: impl FnMut(T) -> M + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::new(ToWorker {
                sender,
                map,
                backlog: VecDeque::new(),
                closed: false,
            }),
        }
    }

    /// Results become messages `map(result)` sent into the worker running
    /// on the calling thread (see [`WorkerSender::current`]).
    ///
    /// # Errors
    /// As [`WorkerSender::current`].
    pub fn to_current_worker<M: Send + 'static>(
        map: impl FnMut(T) -> M + Send + 'static,
    ) -> Result<Self> {
        Ok(Self::to_port(super::current::current_port()?, map))
    }

    /// Results go onto an unbounded queue that a plain thread reads.
    pub fn queue() -> (Self, ResultQueue<T>) {
        let (tx, rx) = Channel::spsc_unbounded();
        (
            Self {
                inner: Box::new(ToQueue { tx }),
            },
            ResultQueue { rx },
        )
    }

    /// Delivers one result without blocking; it waits in the backlog if the
    /// target is full, and is dropped only if the target is gone for good.
    pub fn deliver(&mut self, item: T) {
        self.inner.deliver(item);
    }

    /// Retries the backlog; returns how many results still wait.
    pub fn flush(&mut self) -> usize {
        self.inner.flush()
    }

    /// Results waiting for room in the target.
    pub fn backlog(&self) -> usize {
        self.inner.backlog()
    }

    /// Whether the target is gone (its worker stopped, its queue dropped).
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

/// The receiving side of [`ResultSink::queue`].
#[derive(Debug)]
pub struct ResultQueue<T: Send + 'static> {
    rx: spsc::Receiver<T>,
}

impl<T: Send + 'static> ResultQueue<T> {
    /// Waits for the next result.
    ///
    /// # Errors
    /// [`RecvError`] once the sink is gone and the queue is empty.
    pub fn recv(&mut self) -> Result<T, RecvError> {
        self.rx.recv()
    }

    /// Waits at most `timeout` for the next result.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`], or `Disconnected` once the sink is
    /// gone and the queue is empty.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// The next result if one is ready.
    pub fn try_recv(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Results waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no result waits.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{Envelope, Worker, WorkerConfig, spawn};

    struct Collect;
    impl Worker for Collect {
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
    }

    #[test]
    fn full_worker_queue_backlogs_in_order_and_loses_nothing() {
        let mut w = spawn(Collect, WorkerConfig::new().with_queue_capacity(4)).unwrap();
        w.pause().unwrap();
        let mut sink = ResultSink::to_worker(w.sender(), |x: u32| u64::from(x) * 10);
        for i in 0..20 {
            sink.deliver(i);
        }
        assert!(sink.backlog() >= 16, "queue of 4 cannot take 20");
        w.resume().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.flush() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "backlog never drained"
            );
            std::thread::yield_now();
        }
        w.stop().unwrap();
        assert_eq!(w.stats().handled, 20);
    }

    #[test]
    fn stopped_worker_closes_the_sink() {
        let mut w = spawn(Collect, WorkerConfig::new()).unwrap();
        let mut sink = ResultSink::to_worker(w.sender(), u64::from);
        w.stop().unwrap();
        sink.deliver(1u32);
        assert!(sink.is_closed());
        assert_eq!(sink.flush(), 0);
    }

    #[test]
    fn queue_reports_disconnect_after_sink_drops() {
        let (mut sink, mut q) = ResultSink::queue();
        sink.deliver(1u8);
        drop(sink);
        assert_eq!(q.recv().unwrap(), 1);
        assert_eq!(q.recv(), Err(RecvError));
    }
}
