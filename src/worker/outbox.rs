//! A sender's private rings into a set of workers.
//!
//! Every sending handle owns one SPSC ring per worker it can reach, so a
//! message from one producer thread to one worker crosses exactly one ring
//! and never contends with other producers (Seastar's mesh of smp queues).
//! Cloning a handle builds fresh rings and attaches their consumer ends to
//! the workers through the control queue.

use super::Envelope;
use super::error::SendError;
use super::shared::{Control, WorkerShared};
use crate::channel::ring::{self, Producer, PushError};
use crate::channel::wait::{Step, Waiter};
use std::sync::Arc;
use std::time::Instant;

/// One producer's rings into every worker of a group.
pub(crate) struct Outbox<M> {
    workers: Arc<[Arc<WorkerShared<M>>]>,
    rings: Vec<Producer<Envelope<M>>>,
    capacity: usize,
    pub(crate) tracing: bool,
}

impl<M> std::fmt::Debug for Outbox<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("workers", &self.workers.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<M: Send + 'static> Outbox<M> {
    /// An outbox over rings whose consumers were handed to the workers at
    /// spawn time.
    pub(crate) fn from_rings(
        workers: Arc<[Arc<WorkerShared<M>>]>,
        rings: Vec<Producer<Envelope<M>>>,
        capacity: usize,
        tracing: bool,
    ) -> Self {
        debug_assert_eq!(workers.len(), rings.len());
        Self {
            workers,
            rings,
            capacity,
            tracing,
        }
    }

    /// A new outbox with fresh rings attached to every worker.
    pub(crate) fn connect(
        workers: Arc<[Arc<WorkerShared<M>>]>,
        capacity: usize,
        tracing: bool,
    ) -> Self {
        let rings = workers
            .iter()
            .map(|w| {
                let (p, c) = ring::ring(capacity, w.signal.clone());
                // If the worker has exited the consumer comes back and is
                // dropped here, which closes the ring: sends then fail with
                // `Stopped`, nothing is accepted and lost.
                let _ = w.send_control(Control::Attach(c));
                p
            })
            .collect();
        Self {
            workers,
            rings,
            capacity,
            tracing,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rings.len()
    }

    pub(crate) fn envelope(&self, msg: M, key: Option<u64>) -> Envelope<M> {
        Envelope::routed(msg, key, self.tracing.then(Instant::now))
    }

    /// Pushes without blocking.
    #[inline]
    pub(crate) fn try_send(
        &mut self,
        index: usize,
        env: Envelope<M>,
    ) -> Result<(), SendError<Envelope<M>>> {
        let len = self.rings.len();
        let Some(ring) = self.rings.get_mut(index) else {
            return Err(SendError::NoSuchWorker {
                index,
                len,
                message: env,
            });
        };
        ring.try_push(env).map_err(|e| match e {
            PushError::Full(v) => SendError::Full(v),
            PushError::Closed(v) => SendError::Stopped(v),
        })
    }

    /// Pushes, waiting while the ring is full, until `deadline`.
    pub(crate) fn send_until(
        &mut self,
        index: usize,
        mut env: Envelope<M>,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<Envelope<M>>> {
        let mut waiter = Waiter::new(deadline);
        loop {
            match self.try_send(index, env) {
                Err(SendError::Full(v)) => env = v,
                other => return other,
            }
            match waiter.step() {
                Step::Retry => {}
                Step::Park(t) => self.rings[index].wait_for_space(t),
                Step::TimedOut => return Err(SendError::Timeout(env)),
            }
        }
    }

    /// Pushes every envelope to `index`, publishing a ring-full at a time and
    /// waiting while it is full.
    pub(crate) fn send_batch<I>(
        &mut self,
        index: usize,
        items: I,
    ) -> Result<(), SendError<Vec<Envelope<M>>>>
    where
        I: IntoIterator<Item = Envelope<M>>,
    {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            return Ok(());
        }
        let len = self.rings.len();
        let Some(ring) = self.rings.get_mut(index) else {
            return Err(SendError::NoSuchWorker {
                index,
                len,
                message: items.collect(),
            });
        };
        let mut waiter = Waiter::new(None);
        while items.peek().is_some() {
            match ring.push_iter(&mut items) {
                Ok(0) => {
                    if let Step::Park(t) = waiter.step() {
                        ring.wait_for_space(t);
                    }
                }
                Ok(_) => waiter = Waiter::new(None),
                Err(mut back) => {
                    back.extend(items);
                    return Err(SendError::Stopped(back));
                }
            }
        }
        Ok(())
    }
}

impl<M: Send + 'static> Clone for Outbox<M> {
    fn clone(&self) -> Self {
        Self::connect(self.workers.clone(), self.capacity, self.tracing)
    }
}
