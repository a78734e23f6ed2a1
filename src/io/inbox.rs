//! The request side of an I/O worker: one SPSC ring per client, attached at
//! run time, polled in turn; and the completion side: each client's
//! [`ResultSink`].
//!
//! A client that submits into a full ring gets the request back
//! ([`SubmitError::Full`]): the worker takes requests only as fast as it has
//! room for them in flight, so a full ring is backpressure, never a drop.

use super::error::SubmitError;
use crate::channel::ring::{self, Consumer, Producer, PushError};
use crate::sync::signal::{Signal, Waker};
use crate::worker::ResultSink;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What clients and the worker thread share.
pub(crate) struct Shared<R, C: Send + 'static> {
    pub(crate) signal: Arc<Signal>,
    /// `None` once the worker has stopped taking clients: a join then fails
    /// instead of attaching a ring nobody will ever read.
    joining: Mutex<Option<Vec<Joining<R, C>>>>,
    has_joining: AtomicBool,
    pub(crate) stop: AtomicBool,
    /// Requests per client ring.
    capacity: usize,
}

struct Joining<R, C: Send + 'static> {
    ring: Consumer<R>,
    sink: ResultSink<C>,
}

impl<R: Send, C: Send + 'static> Shared<R, C> {
    pub(crate) fn new(waker: Waker, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            signal: Arc::new(Signal::with_waker(waker)),
            joining: Mutex::new(Some(Vec::new())),
            has_joining: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            capacity: capacity.max(2),
        })
    }

    /// A new client: its request ring is attached to the worker, and its
    /// completions go to `sink`.
    pub(crate) fn join(&self, sink: ResultSink<C>) -> Result<Producer<R>, ResultSink<C>> {
        let mut joining = self.joining.lock();
        let Some(list) = joining.as_mut() else {
            return Err(sink);
        };
        let (p, c) = ring::ring(self.capacity, self.signal.clone());
        list.push(Joining { ring: c, sink });
        drop(joining);
        self.has_joining.store(true, Ordering::Release);
        self.signal.notify_now();
        Ok(p)
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.signal.notify_now();
    }
}

/// One attached client, as the worker sees it.
pub(crate) struct Client<R, C: Send + 'static> {
    pub(crate) ring: Consumer<R>,
    pub(crate) sink: ResultSink<C>,
}

/// The worker's view of all its clients.
pub(crate) struct Inbox<R, C: Send + 'static> {
    pub(crate) shared: Arc<Shared<R, C>>,
    pub(crate) clients: Vec<Option<Client<R, C>>>,
    cursor: usize,
}

impl<R: Send, C: Send + 'static> Inbox<R, C> {
    pub(crate) fn new(shared: Arc<Shared<R, C>>) -> Self {
        Self {
            shared,
            clients: Vec::new(),
            cursor: 0,
        }
    }

    /// Attaches clients that joined since the last call.
    pub(crate) fn accept_joining(&mut self) {
        if !self.shared.has_joining.swap(false, Ordering::Acquire) {
            return;
        }
        let joined = match self.shared.joining.lock().as_mut() {
            Some(list) => std::mem::take(list),
            None => return,
        };
        for j in joined {
            self.attach(j);
        }
    }

    fn attach(&mut self, j: Joining<R, C>) {
        let client = Client {
            ring: j.ring,
            sink: j.sink,
        };
        // Slots are never reused: a completion still in flight for a
        // departed client must not reach a newcomer.
        self.clients.push(Some(client));
    }

    /// Whether any client ring has a request (for the sleep re-check).
    pub(crate) fn has_requests(&mut self) -> bool {
        self.shared.has_joining.load(Ordering::Acquire)
            || self.shared.stop.load(Ordering::Acquire)
            || self
                .clients
                .iter_mut()
                .flatten()
                .any(|c| c.ring.available() > 0)
    }

    /// Pops up to `budget` requests, round-robin over clients so none
    /// starves, calling `f(client, request)` for each.
    pub(crate) fn drain(&mut self, mut budget: usize, mut f: impl FnMut(u32, R)) -> usize {
        let n = self.clients.len();
        let mut taken = 0;
        let mut idle_round = false;
        while budget > 0 && n > 0 && !idle_round {
            idle_round = true;
            for k in 0..n {
                let i = (self.cursor + k) % n;
                let Some(c) = self.clients[i].as_mut() else {
                    continue;
                };
                if let Some(r) = c.ring.try_pop() {
                    f(i as u32, r);
                    taken += 1;
                    budget -= 1;
                    idle_round = false;
                    if budget == 0 {
                        self.cursor = (i + 1) % n;
                        return taken;
                    }
                }
            }
        }
        taken
    }

    pub(crate) fn sink(&mut self, client: u32) -> Option<&mut ResultSink<C>> {
        self.clients
            .get_mut(client as usize)
            .and_then(Option::as_mut)
            .map(|c| &mut c.sink)
    }

    /// Delivers to a client (dropped only if the client's sink is gone).
    pub(crate) fn deliver(&mut self, client: u32, item: C) {
        if let Some(s) = self.sink(client) {
            s.deliver(item);
        }
    }

    /// Retries backlogged deliveries; forgets clients whose request ring is
    /// finished and whose sink's target is gone (nobody could take their
    /// completions). Returns the total backlog.
    pub(crate) fn flush(&mut self) -> usize {
        let mut backlog = 0;
        for slot in &mut self.clients {
            if let Some(c) = slot {
                backlog += c.sink.flush();
                if c.sink.is_closed() && c.ring.is_finished() {
                    *slot = None;
                }
            }
        }
        backlog
    }

    /// The last thing a stopping worker does, once every request it took
    /// has its completion: reports through `drained` how many completions
    /// still wait in the backlogs of targets that are full (so `stop` can
    /// return without waiting on a target that may be the very worker
    /// calling it), then keeps delivering them until each is taken or its
    /// target is gone. Nothing is dropped for being slow.
    pub(crate) fn finish_delivering(&mut self, drained: &crossbeam_channel::Sender<usize>) {
        let _ = drained.send(self.flush());
        let mut pause = std::time::Duration::from_micros(10);
        while self.flush() > 0 {
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(1));
        }
    }

    /// Closes every ring (clients then fail with `Stopped`) and returns the
    /// requests left in them, to be answered with `IoError::Stopped`.
    pub(crate) fn close_all(&mut self) -> Vec<(u32, R)> {
        // Take the last joiners and refuse later ones in one critical
        // section, so no ring can attach after this.
        let last = self.shared.joining.lock().take();
        for j in last.into_iter().flatten() {
            self.attach(j);
        }
        let mut left = Vec::new();
        for (i, slot) in self.clients.iter_mut().enumerate() {
            if let Some(c) = slot {
                c.ring.close();
                while let Some(r) = c.ring.try_pop() {
                    left.push((i as u32, r));
                }
            }
        }
        left
    }
}

/// The client side of a request ring.
pub(crate) fn submit<R>(ring: &mut Producer<R>, req: R) -> Result<(), SubmitError<R>> {
    ring.try_push(req).map_err(|e| match e {
        PushError::Full(r) => SubmitError::Full(r),
        PushError::Closed(r) => SubmitError::Stopped(r),
    })
}
