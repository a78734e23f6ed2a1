//! The request side of an I/O worker: one SPSC ring per client, attached at
//! run time, polled in turn; and the completion side: each client's
//! [`ResultSink`].
//!
//! A client that submits into a full ring gets the request back
//! ([`SubmitError::Full`]): the worker takes requests only as fast as it has
//! room for them in flight, so a full ring is backpressure, never a drop.
//!
//! A client may also keep requests on its own side ([`Queued`]): what does
//! not fit in the ring waits, in order, in the client's [`Overflow`], and is
//! pushed when room appears. The overflow is shared with the worker so that
//! nothing in it is lost: when the client is dropped the worker takes what
//! is left and runs it after the ring (as if it had been submitted), and
//! when the worker stops it answers what is left like what is left in the
//! rings. The worker touches an overflow only then (the client is gone, or
//! the worker is stopping), so the lock is uncontended in normal running.

use super::error::{Completion, SubmitError};
use super::stats::IoCounters;
use crate::channel::ring::{self, Consumer, Producer, PushError};
use crate::metrics::CachePadded;
use crate::sync::signal::{Signal, Waker};
use crate::worker::ResultSink;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Requests a client keeps on its own side because its ring was full; see
/// the module docs.
pub(crate) struct Overflow<R> {
    state: Mutex<OverflowState<R>>,
}

struct OverflowState<R> {
    items: VecDeque<R>,
    /// Set when the worker took the items for good (the client is gone, or
    /// the worker stopped): nothing may be added after that.
    closed: bool,
}

impl<R> Overflow<R> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(OverflowState {
                items: VecDeque::new(),
                closed: false,
            }),
        })
    }

    /// Takes everything and refuses more (the worker's side).
    fn take_all(&self) -> VecDeque<R> {
        let mut s = self.state.lock();
        s.closed = true;
        std::mem::take(&mut s.items)
    }

    fn is_empty(&self) -> bool {
        self.state.lock().items.is_empty()
    }
}

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
    /// The worker's counters (its thread writes them).
    pub(crate) stats: CachePadded<IoCounters>,
}

struct Joining<R, C: Send + 'static> {
    ring: Consumer<R>,
    overflow: Arc<Overflow<R>>,
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
            stats: CachePadded::default(),
        })
    }

    /// A new client: its request ring is attached to the worker, and its
    /// completions go to `sink`. `limit` bounds the requests the client
    /// keeps on its own side when the ring is full (0: none, a full ring is
    /// reported at once).
    pub(crate) fn join(
        &self,
        sink: ResultSink<C>,
        limit: usize,
    ) -> Result<Queued<R>, ResultSink<C>> {
        let mut joining = self.joining.lock();
        let Some(list) = joining.as_mut() else {
            return Err(sink);
        };
        let (p, c) = ring::ring(self.capacity, self.signal.clone());
        let overflow = Overflow::new();
        list.push(Joining {
            ring: c,
            overflow: overflow.clone(),
            sink,
        });
        drop(joining);
        self.has_joining.store(true, Ordering::Release);
        self.signal.notify_now();
        Ok(Queued {
            ring: p,
            overflow,
            queued: 0,
            limit,
        })
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
    overflow: Arc<Overflow<R>>,
    /// What the client had queued on its side when it was dropped, taken
    /// once its ring was drained: run after everything in the ring.
    orphans: VecDeque<R>,
    adopted: bool,
}

impl<R, C: Send + 'static> Client<R, C> {
    /// The next request: from the ring, or, once the client is gone and
    /// its ring drained, from what it left queued on its side.
    fn next(&mut self) -> Option<R> {
        if let Some(r) = self.ring.try_pop() {
            return Some(r);
        }
        if !self.adopted && self.ring.is_producer_gone() && self.ring.is_finished() {
            self.adopted = true;
            self.orphans = self.overflow.take_all();
        }
        self.orphans.pop_front()
    }

    /// Whether `next` would give something.
    fn has_next(&mut self) -> bool {
        self.ring.available() > 0
            || !self.orphans.is_empty()
            || (!self.adopted && self.ring.is_producer_gone() && !self.overflow.is_empty())
    }

    /// Whether the client is gone and everything it sent was taken.
    fn is_done(&mut self) -> bool {
        self.ring.is_finished()
            && self.orphans.is_empty()
            && (self.adopted || self.overflow.is_empty())
    }
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
            overflow: j.overflow,
            orphans: VecDeque::new(),
            adopted: false,
        };
        // Slots are never reused: a completion still in flight for a
        // departed client must not reach a newcomer.
        self.clients.push(Some(client));
    }

    /// Whether any client ring has a request (for the sleep re-check).
    pub(crate) fn has_requests(&mut self) -> bool {
        self.shared.has_joining.load(Ordering::Acquire)
            || self.shared.stop.load(Ordering::Acquire)
            || self.clients.iter_mut().flatten().any(Client::has_next)
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
                if let Some(r) = c.next() {
                    f(i as u32, r);
                    taken += 1;
                    budget -= 1;
                    idle_round = false;
                    if budget == 0 {
                        self.cursor = (i + 1) % n;
                        self.shared.stats.requests.add(taken as u64);
                        return taken;
                    }
                }
            }
        }
        self.shared.stats.requests.add(taken as u64);
        taken
    }

    pub(crate) fn sink(&mut self, client: u32) -> Option<&mut ResultSink<C>> {
        self.clients
            .get_mut(client as usize)
            .and_then(Option::as_mut)
            .map(|c| &mut c.sink)
    }

    /// Delivers to a client (dropped only if the client's sink is gone).
    pub(crate) fn deliver(&mut self, client: u32, item: C)
    where
        C: Completion,
    {
        item.report(&self.shared.stats);
        if let Some(s) = self.sink(client) {
            s.deliver(item);
        }
    }

    /// Retries backlogged deliveries; forgets clients that are gone with
    /// everything they sent taken and whose sink's target is gone (nobody
    /// could take their completions). Returns the total backlog.
    pub(crate) fn flush(&mut self) -> usize {
        let mut backlog = 0;
        for slot in &mut self.clients {
            if let Some(c) = slot {
                backlog += c.sink.flush();
                if c.sink.is_closed() && c.is_done() {
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
    /// target is gone. Nothing is dropped for being slow. `also` retries
    /// the worker's other sinks (a network worker's listener targets) and
    /// returns their backlog.
    pub(crate) fn finish_delivering(
        &mut self,
        drained: &crossbeam_channel::Sender<usize>,
        mut also: impl FnMut() -> usize,
    ) {
        let _ = drained.send(self.flush() + also());
        let mut pause = std::time::Duration::from_micros(10);
        while self.flush() + also() > 0 {
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(1));
        }
    }

    /// Closes every ring (clients then fail with `Stopped`) and returns the
    /// requests left in them and in the clients' overflows, in each
    /// client's order, to be answered with `IoError::Stopped`.
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
                // After the close: a client that finds its ring closed
                // keeps the request in its overflow, which is taken here
                // (under its lock, so nothing is added after).
                let rest = std::mem::take(&mut c.orphans)
                    .into_iter()
                    .chain(c.overflow.take_all());
                left.extend(rest.map(|r| (i as u32, r)));
            }
        }
        left
    }
}

/// The client side of a request ring, with the requests it keeps on its
/// own side (its [`Overflow`]) while the ring is full.
///
/// Order is kept: while anything waits in the overflow, new requests go
/// behind it, never straight into the ring.
pub(crate) struct Queued<R> {
    ring: Producer<R>,
    overflow: Arc<Overflow<R>>,
    /// How many wait in the overflow, as far as this side knows (the worker
    /// only ever takes them all, and then closes it): lets the common path
    /// skip the lock.
    queued: usize,
    limit: usize,
}

impl<R> Queued<R> {
    /// Submits `req`: into the ring if it has room and nothing waits,
    /// else behind what waits.
    ///
    /// # Errors
    /// `Full` with the request when the ring is full and the overflow holds
    /// `limit` requests already; `Stopped` once the worker has stopped.
    #[inline]
    pub(crate) fn submit(&mut self, req: R) -> Result<(), SubmitError<R>> {
        if self.queued > 0 && self.flush() > 0 {
            return self.enqueue(req);
        }
        match self.ring.try_push(req) {
            Ok(()) => Ok(()),
            Err(PushError::Full(r)) => self.enqueue(r),
            Err(PushError::Closed(r)) => Err(SubmitError::Stopped(r)),
        }
    }

    fn enqueue(&mut self, req: R) -> Result<(), SubmitError<R>> {
        let mut s = self.overflow.state.lock();
        if s.closed {
            self.queued = 0;
            return Err(SubmitError::Stopped(req));
        }
        if s.items.len() >= self.limit {
            return Err(SubmitError::Full(req));
        }
        s.items.push_back(req);
        self.queued = s.items.len();
        Ok(())
    }

    /// Pushes what waits into the ring, as far as it has room; returns how
    /// many still wait.
    pub(crate) fn flush(&mut self) -> usize {
        if self.queued == 0 {
            return 0;
        }
        let mut s = self.overflow.state.lock();
        while let Some(r) = s.items.pop_front() {
            match self.ring.try_push(r) {
                Ok(()) => {}
                // Closed: the stopping worker takes the overflow after
                // closing the rings (it waits for this lock), and answers.
                Err(PushError::Full(r) | PushError::Closed(r)) => {
                    s.items.push_front(r);
                    break;
                }
            }
        }
        self.queued = s.items.len();
        self.queued
    }

    /// How many wait on this side.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// The bound on what waits.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Sets the bound (what waits already stays).
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Takes back everything that waits, in order.
    pub(crate) fn take_queued(&mut self) -> Vec<R> {
        if self.queued == 0 {
            return Vec::new();
        }
        self.queued = 0;
        let mut s = self.overflow.state.lock();
        s.items.drain(..).collect()
    }

    /// Whether the worker has stopped.
    pub(crate) fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }
}

impl<R> std::fmt::Debug for Queued<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued")
            .field("queued", &self.queued)
            .field("limit", &self.limit)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(
        ring: usize,
        limit: usize,
    ) -> (
        Inbox<u32, u32>,
        Queued<u32>,
        crate::worker::ResultQueue<u32>,
    ) {
        let shared = Shared::new(Arc::new(|| {}), ring);
        let (sink, done) = ResultSink::queue();
        let client = shared.join(sink, limit).unwrap();
        let mut inbox = Inbox::new(shared);
        inbox.accept_joining();
        (inbox, client, done)
    }

    fn take(inbox: &mut Inbox<u32, u32>, budget: usize) -> Vec<u32> {
        let mut got = Vec::new();
        inbox.drain(budget, |_, r| got.push(r));
        got
    }

    #[test]
    fn what_does_not_fit_waits_and_keeps_its_order() {
        let (mut inbox, mut client, _done) = inbox(2, 1000);
        let mut got = Vec::new();
        for i in 0..100 {
            client.submit(i).unwrap();
            if i % 7 == 0 {
                got.extend(take(&mut inbox, 3));
            }
        }
        assert!(client.queued() > 0);
        while got.len() < 100 {
            client.flush();
            got.extend(take(&mut inbox, 5));
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(client.queued(), 0);
    }

    #[test]
    fn past_the_bound_the_request_comes_back() {
        let (mut inbox, mut client, _done) = inbox(2, 3);
        for i in 0..5 {
            client.submit(i).unwrap();
        }
        assert_eq!(client.queued(), 3);
        assert!(matches!(client.submit(5), Err(SubmitError::Full(5))));
        assert_eq!(take(&mut inbox, 10), vec![0, 1]);
        // Room again: the next submit pushes what waits first.
        client.submit(5).unwrap();
        client.flush();
        let mut got = take(&mut inbox, 10);
        client.flush();
        got.extend(take(&mut inbox, 10));
        assert_eq!(got, vec![2, 3, 4, 5]);
    }

    #[test]
    fn without_a_bound_a_full_ring_is_reported_at_once() {
        let (_inbox, mut client, _done) = inbox(2, 0);
        client.submit(0).unwrap();
        client.submit(1).unwrap();
        assert!(matches!(client.submit(2), Err(SubmitError::Full(2))));
        assert_eq!(client.queued(), 0);
    }

    #[test]
    fn a_dropped_client_leaves_what_it_queued_to_the_worker() {
        let (mut inbox, mut client, _done) = inbox(2, 1000);
        for i in 0..10 {
            client.submit(i).unwrap();
        }
        drop(client);
        assert!(inbox.has_requests());
        assert_eq!(take(&mut inbox, 100), (0..10).collect::<Vec<_>>());
        assert!(!inbox.has_requests());
    }

    #[test]
    fn a_stopping_worker_takes_what_waits_and_later_submits_are_refused() {
        let (mut inbox, mut client, _done) = inbox(2, 1000);
        for i in 0..10 {
            client.submit(i).unwrap();
        }
        assert_eq!(take(&mut inbox, 1), vec![0]);
        let left: Vec<u32> = inbox.close_all().into_iter().map(|(_, r)| r).collect();
        assert_eq!(left, (1..10).collect::<Vec<_>>());
        assert!(matches!(client.submit(10), Err(SubmitError::Stopped(10))));
        assert_eq!(client.flush(), 0);
        assert_eq!(client.queued(), 0);
    }

    #[test]
    fn taken_back_requests_are_the_tail_in_order() {
        let (mut inbox, mut client, _done) = inbox(2, 1000);
        for i in 0..10 {
            client.submit(i).unwrap();
        }
        assert_eq!(client.take_queued(), (2..10).collect::<Vec<_>>());
        drop(client);
        assert_eq!(take(&mut inbox, 100), vec![0, 1]);
    }
}
