//! The `Worker` trait and the batch a worker handles at once.

use super::Envelope;
use super::mailbox::Taken;
use crate::{Error, Result};

/// An isolated unit of work with its own state, driven by messages.
///
/// The worker value is built where the worker is spawned and moved to its
/// thread; [`Worker::init`] then creates the [`Worker::State`] *on that
/// thread, after it is pinned*, so the state need not be `Send` and its
/// memory is first touched on the worker's own NUMA node.
///
/// ```
/// use shared_nothing::prelude::*;
///
/// struct Counter;
/// impl Worker for Counter {
///     type State = u64;
///     type Message = u64;
///     type Reply = ();
///     fn init(&mut self) -> Result<u64> { Ok(0) }
///     fn handle_message(&mut self, total: &mut u64, msg: Envelope<u64>) -> Result<()> {
///         *total += msg.payload;
///         Ok(())
///     }
/// }
///
/// let mut w = shared_nothing::worker::spawn(Counter, WorkerConfig::new()).unwrap();
/// w.send(5).unwrap();
/// w.send(10).unwrap();
/// w.stop().unwrap();
/// assert_eq!(w.stats().handled, 2);
/// ```
pub trait Worker: Send + 'static {
    /// The worker's private state, created by `init` on the worker thread.
    type State: 'static;
    /// The messages it handles.
    type Message: Send + 'static;
    /// What it answers requests with (`()` for a worker that takes no
    /// requests): [`Envelope::reply`] takes only this type and
    /// `request` returns a [`Pending`](super::Pending) of it, so a
    /// mismatch does not compile:
    ///
    /// ```compile_fail
    /// use shared_nothing::prelude::*;
    /// struct Len;
    /// impl Worker for Len {
    ///     type State = ();
    ///     type Message = String;
    ///     type Reply = usize;
    ///     fn init(&mut self) -> Result<()> { Ok(()) }
    ///     fn handle_message(&mut self, _: &mut (), mut m: Envelope<String, usize>) -> Result<()> {
    ///         let n = m.payload.len();
    ///         m.reply(n)?;
    ///         Ok(())
    ///     }
    /// }
    /// let mut w = shared_nothing::worker::spawn(Len, WorkerConfig::new()).unwrap();
    /// let answer: String = w.request("four".into()).unwrap().wait().unwrap(); // usize, not String
    /// ```
    type Reply: Send + 'static;

    /// Creates the state. Runs on the worker thread after pinning, and again
    /// after every restart.
    ///
    /// # Errors
    /// An error here stops the worker (at spawn, `spawn` returns it).
    fn init(&mut self) -> Result<Self::State>;

    /// Handles one message.
    ///
    /// # Errors
    /// An error is counted as a failed message and reported as an event; the
    /// worker goes on.
    fn handle_message(
        &mut self,
        state: &mut Self::State,
        message: Envelope<Self::Message, Self::Reply>,
    ) -> Result<()>;

    /// Handles a batch drained from one queue at once. The default hands each
    /// message to `handle_message`; override it to amortise work (one write
    /// for many records, one lock, one syscall).
    ///
    /// Take messages with [`Batch::next`]. Messages not taken stay queued and
    /// come back in a later batch. Report a failed message with
    /// [`Batch::fail`]; messages taken and not failed count as handled.
    ///
    /// # Errors
    /// An error counts the most recently taken message as failed.
    fn handle_batch(
        &mut self,
        state: &mut Self::State,
        batch: &mut Batch<'_, Self::Message, Self::Reply>,
    ) -> Result<()> {
        while let Some(msg) = batch.next() {
            if let Err(e) = self.handle_message(state, msg) {
                batch.fail(e);
            }
        }
        Ok(())
    }

    /// Called about every `tick_interval` (see `WorkerConfig`), between
    /// batches.
    ///
    /// # Errors
    /// Reported as a `TickFailed` event.
    fn tick(&mut self, _state: &mut Self::State) -> Result<()> {
        Ok(())
    }

    /// Called after a round over all of the worker's queues in which at
    /// least one message was handled, before the worker polls again or
    /// idles: the place to act once for everything the round brought (one
    /// group commit for the records of many senders, one flush of replies).
    /// The default does nothing.
    ///
    /// ```
    /// use shared_nothing::prelude::*;
    /// struct Batcher;
    /// impl Worker for Batcher {
    ///     type State = (Vec<u64>, u64);
    ///     type Message = u64;
    ///     type Reply = ();
    ///     fn init(&mut self) -> Result<(Vec<u64>, u64)> { Ok((Vec::new(), 0)) }
    ///     fn handle_message(&mut self, s: &mut (Vec<u64>, u64), m: Envelope<u64>) -> Result<()> {
    ///         s.0.push(m.payload); // collect...
    ///         Ok(())
    ///     }
    ///     fn after_round(&mut self, s: &mut (Vec<u64>, u64)) -> Result<()> {
    ///         s.1 += s.0.drain(..).sum::<u64>(); // ...and act once per round
    ///         Ok(())
    ///     }
    /// }
    /// let mut w = shared_nothing::worker::spawn(Batcher, WorkerConfig::new()).unwrap();
    /// for i in 0..10 { w.send(i).unwrap(); }
    /// w.stop().unwrap();
    /// ```
    fn after_round(&mut self, _state: &mut Self::State) -> Result<()> {
        Ok(())
    }

    /// Called once when the worker stops gracefully, after its queues are
    /// drained.
    ///
    /// # Errors
    /// Reported as a `ShutdownFailed` event and by `stop`.
    fn shutdown(&mut self, _state: Self::State) -> Result<()> {
        Ok(())
    }
}

/// Messages drained from one of the worker's queues, handled in one call.
///
/// Taking a message moves it out of the queue; when the batch ends (also by
/// a panic), the queue's read index is published once for all messages
/// taken, and messages not taken stay queued.
pub struct Batch<'a, M, R = ()> {
    messages: Taken<'a, M, R>,
    pub(crate) taken: u64,
    pub(crate) last_failed: bool,
    pub(crate) failures: Vec<(u64, Error)>,
}

impl<M, R> std::fmt::Debug for Batch<'_, M, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("remaining", &self.remaining())
            .field("taken", &self.taken)
            .finish()
    }
}

impl<'a, M, R> Batch<'a, M, R> {
    pub(crate) fn new(messages: Taken<'a, M, R>) -> Self {
        Self {
            messages,
            taken: 0,
            last_failed: false,
            failures: Vec::new(),
        }
    }

    /// Messages left in the batch.
    pub fn remaining(&self) -> usize {
        self.messages.remaining()
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Takes the next message.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Envelope<M, R>> {
        let env = self.messages.next()?;
        self.taken += 1;
        self.last_failed = false;
        Some(env)
    }

    /// Sequence number of the most recently taken message.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        (self.taken > 0).then(|| self.messages.next_seq() - 1)
    }

    /// Marks the most recently taken message as failed with `error`.
    pub fn fail(&mut self, error: Error) {
        if let Some(seq) = self.last_seq() {
            if !self.last_failed {
                self.last_failed = true;
                self.failures.push((seq, error));
            }
        }
    }
}
