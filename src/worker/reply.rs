//! Request/reply: a one-shot slot carried by an [`Envelope`](super::Envelope).
//!
//! The reply's type is the worker's [`Worker::Reply`](super::Worker::Reply):
//! a handler cannot answer with another type, and a caller cannot wait for
//! one, so a mismatch is a compile error and the value travels unboxed.
//!
//! The caller's side, [`Pending`], can be waited for by blocking a thread
//! ([`Pending::wait`], [`Pending::wait_timeout`]), polled
//! ([`Pending::try_get`]), or awaited: it is a [`Future`] that any executor
//! can drive (the crate itself has none and depends on none).
//!
//! # How it works
//!
//! A [`ReplyTo`] and its [`Pending`] share one allocation, a [`Slot`]: a
//! state word, the value's cell and the waiting side's [`Waker`]. The state
//! word's bits say what has happened (a value sent, the `ReplyTo` dropped
//! unanswered, the `Pending` dropped, the value taken) and whether the waker
//! cell holds a waker the answering side may use. Who may touch which cell
//! when:
//!
//! - S1: the value cell is written once, by the `ReplyTo`, before it sets
//!   `VALUE` (Release); it is read once, by the `Pending`, after it saw
//!   `VALUE` (Acquire), which then sets `TAKEN`. A value sent and never
//!   taken is dropped with the slot (`VALUE` set, `TAKEN` clear).
//! - S2: the waker cell is written only by the `Pending`, and only after it
//!   cleared `RX_WAKER` by a read-modify-write that saw no completion bit
//!   (`VALUE`, `TX_CLOSED`), until it sets `RX_WAKER` again. The answering
//!   side reads it only if the read-modify-write that completed the slot
//!   saw `RX_WAKER` set; from then on the `Pending` never writes it (every
//!   later clear sees the completion). So a read never meets a write.
//! - S3: the cell contents are dropped with the slot, when both sides are
//!   gone, never by one side while the other may still read them.
//!
//! A reply can also be lost without the `ReplyTo` being dropped: leaked
//! (`mem::forget`), or kept past the worker's end. So each `Pending` also
//! watches the answering worker's [`Life`]. A `Pending` that returns
//! `Pending` from `poll` (or parks in `wait`) registers its waker once in
//! the life's table; the entry is removed when it resolves or is dropped,
//! so the table never holds more entries than there are unresolved,
//! waiting `Pending`s. When the worker's thread exits, [`Alive`]'s drop
//! marks the life ended and wakes every registered waker; a `Pending` that
//! registers after that sees the end under the table's lock.

use crate::sync::{Arc, AtomicBool, AtomicUsize, Mutex, UnsafeCell};
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Why a reply could not be sent or received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The worker dropped the request without answering (its handler
    /// returned without replying, failed, or panicked).
    #[error("the worker dropped the request without replying")]
    Dropped,
    /// No reply arrived before the deadline.
    #[error("timed out waiting for the reply")]
    Timeout,
    /// `reply` was called on a message that is not a request, or twice.
    #[error("this message has no reply slot (not a request, or already answered)")]
    NoReplySlot,
    /// The caller stopped waiting (dropped its [`Pending`]).
    #[error("the caller is no longer waiting for the reply")]
    CallerGone,
}

/// The waker cell holds the `Pending`'s waker, for the answering side (S2).
const RX_WAKER: usize = 1;
/// The value was written (S1).
const VALUE: usize = 1 << 1;
/// The `ReplyTo` was dropped unanswered.
const TX_CLOSED: usize = 1 << 2;
/// The `Pending` was dropped: a send fails with `CallerGone`.
const RX_CLOSED: usize = 1 << 3;
/// The `Pending` took the value (S1).
const TAKEN: usize = 1 << 4;
/// Nothing more will happen on the answering side, or it was consumed.
const DONE: usize = VALUE | TX_CLOSED | TAKEN;

/// The one-shot slot a [`ReplyTo`] and its [`Pending`] share.
struct Slot<R> {
    /// The bits above.
    state: AtomicUsize,
    /// The reply (S1).
    value: UnsafeCell<MaybeUninit<R>>,
    /// The `Pending`'s waker (S2).
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: a slot moves one `R` from the `ReplyTo`'s thread to the
// `Pending`'s thread and never hands out a reference to it, so `R: Send` is
// required and sufficient; the cells are accessed only as S1 and S2 allow,
// and a `Waker` is `Send + Sync`.
unsafe impl<R: Send> Send for Slot<R> {}
// SAFETY: as for `Send`: shared access to the cells follows S1-S3.
unsafe impl<R: Send> Sync for Slot<R> {}

impl<R> Slot<R> {
    fn new() -> Self {
        Self {
            state: AtomicUsize::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            waker: UnsafeCell::new(None),
        }
    }

    /// Wakes the `Pending`'s waker after the read-modify-write that
    /// completed the slot returned `prev`.
    fn wake_after(&self, prev: usize) {
        if prev & RX_WAKER != 0 && prev & RX_CLOSED == 0 {
            self.waker.with(|w| {
                // SAFETY: S2: our completing read-modify-write saw RX_WAKER,
                // so the `Pending` wrote the cell before it set the bit
                // (Release, which our AcqRel read acquired) and will not
                // write it again.
                if let Some(w) = unsafe { &*w } {
                    w.wake_by_ref();
                }
            });
        }
    }
}

impl<R> Drop for Slot<R> {
    fn drop(&mut self) {
        // Both sides are gone: the last `Arc` drop ordered their accesses
        // before this one (S3).
        let state = self.state.load(Ordering::Relaxed);
        if state & (VALUE | TAKEN) == VALUE {
            self.value.with_mut(|p| {
                // SAFETY: S1: VALUE says the value was written, TAKEN clear
                // says nobody read it, and no side is left to do either.
                unsafe { (*p).assume_init_drop() }
            });
        }
    }
}

/// The worker's side of a request: answer it once with [`ReplyTo::send`].
pub struct ReplyTo<R> {
    /// `None` only inside `send`, after the answer went out.
    slot: Option<Arc<Slot<R>>>,
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

impl<R> ReplyTo<R> {
    /// Answers the request.
    ///
    /// # Errors
    /// [`ReplyError::CallerGone`] if the caller dropped its [`Pending`]
    /// (a cancelled future included); `value` is dropped.
    pub fn send(mut self, value: R) -> Result<(), ReplyError> {
        let Some(slot) = self.slot.take() else {
            return Err(ReplyError::NoReplySlot);
        };
        if slot.state.load(Ordering::Relaxed) & RX_CLOSED != 0 {
            return Err(ReplyError::CallerGone);
        }
        slot.value.with_mut(|p| {
            // SAFETY: S1: only this `ReplyTo` writes the value, once (`send`
            // consumes it), and VALUE is not set yet, so nobody reads it.
            unsafe { (*p).write(value) };
        });
        // Release publishes the value (S1); Acquire sees the waker (S2).
        let prev = slot.state.fetch_or(VALUE, Ordering::AcqRel);
        if prev & RX_CLOSED != 0 {
            // The `Pending` is gone and never reads the value: it drops
            // with the slot, here, as the last `Arc` goes.
            return Err(ReplyError::CallerGone);
        }
        slot.wake_after(prev);
        Ok(())
    }

    /// Whether the caller has stopped waiting (dropped its [`Pending`], or
    /// cancelled the future): a handler may skip work nobody will see.
    pub fn is_caller_gone(&self) -> bool {
        self.slot
            .as_ref()
            .is_some_and(|s| s.state.load(Ordering::Relaxed) & RX_CLOSED != 0)
    }
}

impl<R> Drop for ReplyTo<R> {
    #[inline]
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            close_unanswered(slot);
        }
    }
}

/// An unanswered `ReplyTo` goes: its `Pending` resolves as `Dropped`. Out
/// of line and cold, so the drop glue of every envelope (most carry no
/// reply slot) stays a null check the worker's loop inlines (measured:
/// with this inlined, the envelope's drop became a call per message and
/// batched pool sends fell from 0.38x to 0.25x a raw ring).
#[cold]
#[inline(never)]
fn close_unanswered<R>(slot: Arc<Slot<R>>) {
    let prev = slot.state.fetch_or(TX_CLOSED, Ordering::AcqRel);
    slot.wake_after(prev);
}

/// The caller's side of a request: wait for the answer, poll it, or
/// `.await` it.
///
/// `Pending` is a [`Future`] with `Output = Result<R, ReplyError>`, which
/// any executor can drive: `poll` registers the task's waker and never
/// blocks. Dropping it (cancelling the request's wait) is safe: the slot is
/// freed once the worker's side lets go of it too, and the worker's
/// [`ReplyTo::send`] returns [`ReplyError::CallerGone`].
///
/// A `Pending` is `Send` but not `Sync`: it has one waiter at a time.
///
/// ```
/// use shared_nothing::prelude::*;
///
/// struct Doubler;
/// impl Worker for Doubler {
///     type State = ();
///     type Message = u32;
///     type Reply = u32;
///     fn init(&mut self) -> Result<()> { Ok(()) }
///     fn handle_message(&mut self, _: &mut (), mut msg: Envelope<u32, u32>) -> Result<()> {
///         let v = msg.payload * 2;
///         msg.reply(v)?;
///         Ok(())
///     }
/// }
///
/// let mut w = shared_nothing::worker::spawn(Doubler, WorkerConfig::new()).unwrap();
/// let pending = w.request(21).unwrap();
/// assert_eq!(pending.wait_timeout(std::time::Duration::from_secs(5)), Ok(42));
/// w.stop().unwrap();
/// ```
///
/// Awaited, with a minimal executor written out (the crate brings none):
///
/// ```
/// use shared_nothing::prelude::*;
/// use std::future::Future;
/// use std::sync::Arc;
/// use std::task::{Context, Poll, Wake, Waker};
///
/// /// Runs a future on this thread, parking between polls.
/// fn block_on<F: Future>(fut: F) -> F::Output {
///     struct Unpark(std::thread::Thread);
///     impl Wake for Unpark {
///         fn wake(self: Arc<Self>) { self.0.unpark() }
///     }
///     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
///     let mut cx = Context::from_waker(&waker);
///     let mut fut = std::pin::pin!(fut);
///     loop {
///         match fut.as_mut().poll(&mut cx) {
///             Poll::Ready(v) => return v,
///             Poll::Pending => std::thread::park(),
///         }
///     }
/// }
///
/// struct Doubler;
/// impl Worker for Doubler {
///     type State = ();
///     type Message = u32;
///     type Reply = u32;
///     fn init(&mut self) -> Result<()> { Ok(()) }
///     fn handle_message(&mut self, _: &mut (), mut msg: Envelope<u32, u32>) -> Result<()> {
///         let v = msg.payload * 2;
///         msg.reply(v)?;
///         Ok(())
///     }
/// }
///
/// let mut w = shared_nothing::worker::spawn(Doubler, WorkerConfig::new()).unwrap();
/// let pending = w.request(21).unwrap();
/// assert_eq!(block_on(pending), Ok(42));
/// // Or await room in the queue too (see `WorkerSender::request_async`).
/// let doubled = block_on(async { w.request_async(4).await.unwrap().await });
/// assert_eq!(doubled, Ok(8));
/// w.stop().unwrap();
/// ```
pub struct Pending<R> {
    slot: Arc<Slot<R>>,
    /// The answering worker's life; `None` only for a request that was
    /// never queued (it fails with the send).
    life: Option<Life>,
    /// This `Pending`'s entry in the life's table of wakers, while it has
    /// one. (A `Cell` makes `Pending` `!Sync`: one waiter at a time, which
    /// is what S2 assumes.)
    entry: Cell<Option<usize>>,
}

impl<R> fmt::Debug for Pending<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pending")
    }
}

/// Ends when a worker's thread has exited, after its state (and any
/// [`ReplyTo`] the handler kept there) was dropped: a [`Pending`] watches it
/// so that a reply slot that was leaked (`mem::forget`), or kept past the
/// worker's end, still resolves as [`ReplyError::Dropped`].
#[derive(Clone, Debug)]
pub(crate) struct Life(Arc<LifeInner>);

#[derive(Debug)]
struct LifeInner {
    /// Set (Release) when the thread has exited, before the table closes.
    ended: AtomicBool,
    /// Wakers of the `Pending`s waiting on this worker; `None` once ended.
    waiters: Mutex<Option<Waiters>>,
}

/// Held by the worker's thread for its whole life (restarts included); its
/// drop ends the [`Life`] and wakes every registered waiter.
#[derive(Debug)]
pub(crate) struct Alive(Arc<LifeInner>);

/// A table of wakers with free-list reuse: its length is the most
/// `Pending`s ever waiting at once, never more.
#[derive(Debug, Default)]
struct Waiters {
    entries: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Waiters {
    fn insert(&mut self, waker: Waker) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.entries[i] = Some(waker);
                i
            }
            None => {
                self.entries.push(Some(waker));
                self.entries.len() - 1
            }
        }
    }

    /// Replaces entry `i`'s waker unless it already wakes the same task;
    /// returns the one replaced, to be dropped outside the lock.
    fn update(&mut self, i: usize, waker: &Waker) -> Option<Waker> {
        let e = &mut self.entries[i];
        match e {
            Some(w) if w.will_wake(waker) => None,
            _ => e.replace(waker.clone()),
        }
    }

    fn remove(&mut self, i: usize) -> Option<Waker> {
        let w = self.entries[i].take();
        self.free.push(i);
        if self.free.len() == self.entries.len() {
            // Nobody waits: start over, keeping the allocation.
            self.entries.clear();
            self.free.clear();
        }
        w
    }
}

pub(crate) fn life() -> (Alive, Life) {
    let inner = Arc::new(LifeInner {
        ended: AtomicBool::new(false),
        waiters: Mutex::new(Some(Waiters::default())),
    });
    (Alive(inner.clone()), Life(inner))
}

impl Drop for Alive {
    fn drop(&mut self) {
        // Release: a `Pending` that sees `ended` (Acquire) also sees every
        // reply the worker's thread sent before it exited.
        self.0.ended.store(true, Ordering::Release);
        let waiters = self.0.waiters.lock().take();
        // Wake outside the lock: a waker may run arbitrary code.
        for w in waiters.into_iter().flat_map(|w| w.entries).flatten() {
            w.wake();
        }
    }
}

impl Life {
    /// Whether the worker's thread has exited (one load).
    fn ended(&self) -> bool {
        self.0.ended.load(Ordering::Acquire)
    }

    /// Registers (or refreshes) `entry`'s waker; `true` if the life has
    /// already ended, so that nobody will wake it for that.
    fn watch(&self, entry: &Cell<Option<usize>>, waker: &Waker) -> bool {
        if self.ended() {
            return true;
        }
        let replaced;
        {
            let mut table = self.0.waiters.lock();
            let Some(table) = table.as_mut() else {
                // Ended after the load above; its wake-ups went out already.
                entry.set(None);
                return true;
            };
            replaced = match entry.get() {
                Some(i) => table.update(i, waker),
                None => {
                    entry.set(Some(table.insert(waker.clone())));
                    None
                }
            };
        }
        drop(replaced);
        false
    }

    /// Removes `entry`'s waker, if it has one.
    fn unwatch(&self, entry: &Cell<Option<usize>>) {
        if let Some(i) = entry.take() {
            let removed = self.0.waiters.lock().as_mut().and_then(|t| t.remove(i));
            drop(removed);
        }
    }
}

pub(crate) fn pair<R>(life: Option<Life>) -> (ReplyTo<R>, Pending<R>) {
    let slot = Arc::new(Slot::new());
    (
        ReplyTo {
            slot: Some(slot.clone()),
        },
        Pending {
            slot,
            life,
            entry: Cell::new(None),
        },
    )
}

impl<R> Pending<R> {
    /// Takes the outcome once the slot's state `state` (loaded or returned
    /// by a read-modify-write with Acquire) has a `DONE` bit.
    fn take(&self, state: usize) -> Result<R, ReplyError> {
        if state & (VALUE | TAKEN) != VALUE {
            // Unanswered, or the value was taken by an earlier call.
            return Err(ReplyError::Dropped);
        }
        let value = self.slot.value.with(|p| {
            // SAFETY: S1: VALUE was seen with Acquire, so the write is
            // visible; TAKEN was clear and only this `Pending` (one waiter:
            // it is not `Sync`) reads, so the value is read once.
            unsafe { (*p).assume_init_read() }
        });
        // Only this side reads TAKEN before the slot's drop, which the
        // `Arc` orders after this store.
        self.slot.state.fetch_or(TAKEN, Ordering::Relaxed);
        Ok(value)
    }

    /// The slot's half of `poll`: the outcome if the slot has one;
    /// otherwise `waker` is registered for the answering side (S2).
    fn poll_slot(&self, waker: &Waker) -> Poll<Result<R, ReplyError>> {
        let slot = &*self.slot;
        let state = slot.state.load(Ordering::Acquire);
        if state & DONE != 0 {
            return Poll::Ready(self.take(state));
        }
        if state & RX_WAKER != 0 {
            let same = slot.waker.with(|w| {
                // SAFETY: S2: only this side writes the cell, and it does not
                // now; the answering side may read it too (shared reads).
                unsafe { &*w }.as_ref().is_some_and(|w| w.will_wake(waker))
            });
            if same {
                // A completion after our load sees RX_WAKER and wakes it.
                return Poll::Pending;
            }
            let prev = slot.state.fetch_and(!RX_WAKER, Ordering::AcqRel);
            if prev & DONE != 0 {
                // The answering side may be reading the cell: leave it.
                return Poll::Ready(self.take(prev));
            }
        }
        slot.waker.with_mut(|w| {
            // SAFETY: S2: RX_WAKER is clear and was cleared (or never set)
            // with no completion bit seen, so the answering side does not
            // read the cell until we set the bit again below.
            unsafe { *w = Some(waker.clone()) };
        });
        // Release publishes the waker to the answering side's AcqRel.
        let prev = slot.state.fetch_or(RX_WAKER, Ordering::AcqRel);
        if prev & DONE != 0 {
            // Completed before the bit was set: nobody will wake us.
            return Poll::Ready(self.take(prev));
        }
        Poll::Pending
    }

    /// One poll of both sources: the slot, then the worker's life.
    fn poll_with(&self, waker: &Waker) -> Poll<Result<R, ReplyError>> {
        if let Poll::Ready(r) = self.poll_slot(waker) {
            self.unwatch();
            return Poll::Ready(r);
        }
        match &self.life {
            Some(life) if life.watch(&self.entry, waker) => Poll::Ready(self.after_exit()),
            _ => Poll::Pending,
        }
    }

    fn unwatch(&self) {
        if let Some(life) = &self.life {
            life.unwatch(&self.entry);
        }
    }

    /// The reply, once the worker's life has ended: a reply sent before it
    /// ended is in the slot (the thread's Release of `ended` ordered it
    /// before our Acquire); otherwise there will be none.
    fn after_exit(&self) -> Result<R, ReplyError> {
        self.unwatch();
        let state = self.slot.state.load(Ordering::Acquire);
        if state & DONE != 0 {
            self.take(state)
        } else {
            Err(ReplyError::Dropped)
        }
    }

    /// Blocks until the reply arrives.
    ///
    /// # Errors
    /// `Dropped` if the worker will never answer: its handler dropped the
    /// request (returned, failed or panicked without replying), the worker
    /// gave up or stopped with the request queued, or the worker's thread
    /// has exited while the reply slot was kept or leaked.
    pub fn wait(self) -> Result<R, ReplyError> {
        self.block(None)
    }

    /// Blocks at most `timeout` for the reply.
    ///
    /// # Errors
    /// `Timeout`, or as [`Pending::wait`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<R, ReplyError> {
        match crate::channel::wait::deadline_after(timeout) {
            Some(deadline) => self.block(Some(deadline)),
            None => self.block(None),
        }
    }

    /// The reply if it has arrived, `Ok(None)` if not yet.
    ///
    /// # Errors
    /// As [`Pending::wait`].
    pub fn try_get(&self) -> Result<Option<R>, ReplyError> {
        let state = self.slot.state.load(Ordering::Acquire);
        if state & DONE != 0 {
            self.unwatch();
            return self.take(state).map(Some);
        }
        match &self.life {
            Some(life) if life.ended() => self.after_exit().map(Some),
            _ => Ok(None),
        }
    }

    /// Waits on this thread until the outcome or `deadline`, as the
    /// crate's blocking sends wait (`channel::wait`): checks at full speed
    /// for a while (a load each, registering nothing), yields a few times,
    /// then registers this thread's waker and parks between polls.
    #[cfg(not(loom))]
    fn block(&self, deadline: Option<std::time::Instant>) -> Result<R, ReplyError> {
        use crate::channel::wait::{Step, Waiter};
        let mut waiter = Waiter::new(deadline);
        loop {
            if let Some(outcome) = self.try_get().transpose() {
                return outcome;
            }
            let park = match waiter.step() {
                Step::Retry => continue,
                // The waker stays registered after a timeout: a late answer
                // unparks this thread once, which parking tolerates.
                Step::TimedOut => return Err(ReplyError::Timeout),
                Step::Park(t) => t,
            };
            let polled = thread_waker::with(|waker| self.poll_with(waker));
            if let Poll::Ready(outcome) = polled {
                return outcome;
            }
            match park {
                None => std::thread::park(),
                Some(t) => std::thread::park_timeout(t),
            }
        }
    }

    /// Loom model of `block`: the same polls, parked on loom's primitives
    /// (loom has no clock, so the deadline is ignored).
    #[cfg(loom)]
    fn block(&self, _deadline: Option<std::time::Instant>) -> Result<R, ReplyError> {
        crate::sync::block_on(std::future::poll_fn(|cx| self.poll_with(cx.waker())))
    }
}

impl<R> Future for Pending<R> {
    type Output = Result<R, ReplyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_with(cx.waker())
    }
}

impl<R> Drop for Pending<R> {
    fn drop(&mut self) {
        // The answering side's send now fails with `CallerGone`; a value
        // already sent drops with the slot (S1, S3).
        self.slot.state.fetch_or(RX_CLOSED, Ordering::AcqRel);
        self.unwatch();
    }
}

/// A waker that unparks the current thread, one per thread, so a blocking
/// wait allocates nothing.
#[cfg(not(loom))]
mod thread_waker {
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    struct Unpark(std::thread::Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    fn new() -> Waker {
        Waker::from(Arc::new(Unpark(std::thread::current())))
    }

    thread_local! {
        static WAKER: Waker = new();
    }

    /// Runs `f` with this thread's waker (a fresh one while the thread's
    /// locals are being torn down).
    pub(super) fn with<T>(f: impl FnOnce(&Waker) -> T) -> T {
        match WAKER.try_with(Waker::clone) {
            Ok(w) => f(&w),
            Err(_) => f(&new()),
        }
    }
}

/// A worker's life and its requests, for the loom models (`tests/loom.rs`).
#[cfg(loom)]
#[derive(Debug)]
pub struct LoomLife {
    alive: Option<Alive>,
    life: Life,
}

#[cfg(loom)]
impl LoomLife {
    /// A live worker's life.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let (alive, life) = life();
        Self {
            alive: Some(alive),
            life,
        }
    }

    /// A reply slot tied to this life.
    pub fn request<R>(&self) -> (ReplyTo<R>, Pending<R>) {
        pair(Some(self.life.clone()))
    }

    /// Splits off the worker thread's side, to end the life by dropping it.
    pub fn alive(&mut self) -> impl Send + 'static {
        self.alive.take().expect("taken once")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc as StdArc;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;
    use std::task::Wake;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(StdAtomicUsize);

    impl Wake for Count {
        fn wake(self: StdArc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (StdArc<Count>, Waker) {
        let c = StdArc::new(Count::default());
        (c.clone(), Waker::from(c))
    }

    fn wakes(c: &Count) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    fn poll<R>(p: &mut Pending<R>, w: &Waker) -> Poll<Result<R, ReplyError>> {
        Pin::new(p).poll(&mut Context::from_waker(w))
    }

    /// Counts destructors.
    struct Counted(StdArc<StdAtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn table_len(life: &Life) -> usize {
        life.0
            .waiters
            .lock()
            .as_ref()
            .map_or(0, |t| t.entries.len() - t.free.len())
    }

    #[test]
    fn a_reply_wakes_the_registered_waker_once() {
        let (_alive, life) = life();
        let (tx, mut rx) = pair::<u32>(Some(life.clone()));
        let (c, w) = counting();
        assert!(poll(&mut rx, &w).is_pending());
        assert!(poll(&mut rx, &w).is_pending(), "a second poll is fine");
        assert_eq!(table_len(&life), 1, "registered with the life once");
        assert_eq!(wakes(&c), 0);
        assert_eq!(tx.send(7), Ok(()));
        assert_eq!(wakes(&c), 1);
        assert_eq!(poll(&mut rx, &w), Poll::Ready(Ok(7)));
        assert_eq!(table_len(&life), 0, "resolved: unregistered");
        // Polled after completion: the value is gone, as for `try_get`.
        assert_eq!(poll(&mut rx, &w), Poll::Ready(Err(ReplyError::Dropped)));
        assert_eq!(rx.try_get(), Err(ReplyError::Dropped));
    }

    #[test]
    fn a_new_waker_replaces_the_old_one() {
        let (tx, mut rx) = pair::<u32>(None);
        let (c1, w1) = counting();
        let (c2, w2) = counting();
        assert!(poll(&mut rx, &w1).is_pending());
        assert!(poll(&mut rx, &w2).is_pending());
        tx.send(1).unwrap();
        assert_eq!((wakes(&c1), wakes(&c2)), (0, 1));
        assert_eq!(poll(&mut rx, &w2), Poll::Ready(Ok(1)));
    }

    #[test]
    fn a_reply_to_dropped_unanswered_wakes_and_resolves_dropped() {
        let (tx, mut rx) = pair::<u32>(None);
        let (c, w) = counting();
        assert!(poll(&mut rx, &w).is_pending());
        drop(tx);
        assert_eq!(wakes(&c), 1);
        assert_eq!(poll(&mut rx, &w), Poll::Ready(Err(ReplyError::Dropped)));
    }

    #[test]
    fn cancelling_the_future_frees_the_slot_and_the_reply_is_refused() {
        let drops = StdArc::new(StdAtomicUsize::new(0));
        let (_alive, life) = life();
        let (tx, mut rx) = pair::<Counted>(Some(life.clone()));
        let (_c, w) = counting();
        assert!(poll(&mut rx, &w).is_pending());
        assert!(!tx.is_caller_gone());
        let slot = StdArc::downgrade(tx.slot.as_ref().unwrap());
        drop(rx);
        assert!(tx.is_caller_gone());
        assert_eq!(table_len(&life), 0, "the dropped future left the table");
        assert_eq!(tx.send(Counted(drops.clone())), Err(ReplyError::CallerGone));
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the refused value dropped");
        assert!(slot.upgrade().is_none(), "the slot is freed");
    }

    #[test]
    fn a_value_never_taken_drops_with_the_slot_once() {
        let drops = StdArc::new(StdAtomicUsize::new(0));
        let (tx, rx) = pair::<Counted>(None);
        tx.send(Counted(drops.clone())).unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(rx);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // Taken, then the slot goes: dropped by the taker only.
        let (tx, rx) = pair::<Counted>(None);
        tx.send(Counted(drops.clone())).unwrap();
        let v = rx.try_get().unwrap().unwrap();
        drop(rx);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(v);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_end_of_the_life_wakes_every_waiter_and_keeps_replies_sent_before() {
        let (alive, life) = life();
        let (answered_tx, mut answered) = pair::<u32>(Some(life.clone()));
        let (leaked_tx, mut leaked) = pair::<u32>(Some(life.clone()));
        let (c1, w1) = counting();
        let (c2, w2) = counting();
        assert!(poll(&mut answered, &w1).is_pending());
        assert!(poll(&mut leaked, &w2).is_pending());
        assert_eq!(table_len(&life), 2);
        answered_tx.send(3).unwrap();
        std::mem::forget(leaked_tx);
        drop(alive);
        assert!(wakes(&c1) >= 1 && wakes(&c2) == 1);
        assert_eq!(poll(&mut answered, &w1), Poll::Ready(Ok(3)));
        assert_eq!(
            poll(&mut leaked, &w2),
            Poll::Ready(Err(ReplyError::Dropped))
        );
        // A request made after the end resolves at its first poll.
        let (late_tx, mut late) = pair::<u32>(Some(life));
        assert_eq!(poll(&mut late, &w1), Poll::Ready(Err(ReplyError::Dropped)));
        drop(late_tx);
    }

    /// The life's table holds only unresolved, waiting `Pending`s: it never
    /// grows past the most waiting at once, and empties when they are gone.
    #[test]
    fn the_life_table_stays_bounded() {
        let (_alive, life) = life();
        let (_c, w) = counting();
        for round in 0..100 {
            let mut live: Vec<_> = (0..10).map(|_| pair::<u32>(Some(life.clone()))).collect();
            for (_, rx) in &mut live {
                assert!(poll(rx, &w).is_pending());
            }
            assert_eq!(table_len(&life), 10);
            for (i, (tx, mut rx)) in live.into_iter().enumerate() {
                if (i + round) % 2 == 0 {
                    tx.send(1).unwrap();
                    assert_eq!(poll(&mut rx, &w), Poll::Ready(Ok(1)));
                } else {
                    drop(rx);
                }
            }
            assert_eq!(table_len(&life), 0);
            let cap = life.0.waiters.lock().as_ref().unwrap().entries.capacity();
            assert!(cap <= 16, "the table reuses its entries ({cap})");
        }
    }

    #[test]
    fn wait_timeout_then_wait_and_blocking_wait_is_woken() {
        let (alive, life) = life();
        let (tx, rx) = pair::<u32>(Some(life));
        assert_eq!(
            rx.wait_timeout(Duration::from_millis(5)),
            Err(ReplyError::Timeout)
        );
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(9).unwrap();
        });
        assert_eq!(rx.wait(), Ok(9));
        t.join().unwrap();
        // A blocked `wait` on a leaked slot returns when the life ends.
        let (alive2, life2) = super::life();
        let (tx, rx) = pair::<u32>(Some(life2));
        std::mem::forget(tx);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(alive2);
        });
        assert_eq!(rx.wait(), Err(ReplyError::Dropped));
        t.join().unwrap();
        drop(alive);
    }

    #[test]
    fn pending_and_reply_to_are_send() {
        fn send<T: Send>(_: &T) {}
        let (tx, rx) = pair::<String>(None);
        send(&rx);
        send(&tx);
    }
}
