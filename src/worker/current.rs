//! Which worker the current thread runs, so code inside a worker can hand
//! out a way back to it (an I/O or accelerator worker delivering results).

use super::handle::WorkerSender;
use super::outbox::{Outbox, SendConfig};
use super::shared::WorkerShared;
use crate::Result;
use crate::sync::Arc as SyncArc;
use crate::sync::signal::Signal;
use std::any::Any;
use std::cell::RefCell;
use std::sync::Arc;

struct Current {
    /// An `Arc<WorkerShared<M, R>>` for the worker's message and reply types.
    shared: Arc<dyn Any + Send + Sync>,
    /// How senders into this worker are built.
    send: SendConfig,
    /// Builds a `Box<dyn MessagePort<M>>` (boxed as `Any`) into this
    /// worker: a sender for code that knows the message type only.
    port: fn(&Current) -> Option<Box<dyn Any>>,
    /// The worker's wake-up signal (a local driver installs its waker).
    signal: SyncArc<Signal>,
    /// Where drivers started on this thread report themselves (a pool's
    /// metrics), if the worker was given one.
    #[cfg_attr(loom, allow(dead_code))]
    io_report: Option<IoReport>,
}

/// Takes a report from the layer above (an I/O driver started on a worker
/// thread hands in its stats sampler, boxed), for whoever spawned the
/// worker (a pool registers it in its metrics). Type-erased so this layer
/// stays below the I/O layer.
pub(crate) type IoReport = Arc<dyn Fn(Box<dyn Any + Send>) + Send + Sync>;

/// Hands `report` to the hook of the worker running on the calling thread;
/// nothing happens off a worker thread or without a hook.
#[cfg(not(loom))]
pub(crate) fn report_io(report: Box<dyn Any + Send>) {
    let hook = CURRENT
        .try_with(|c| c.try_borrow().ok()?.as_ref()?.io_report.clone())
        .ok()
        .flatten();
    if let Some(hook) = hook {
        hook(report);
    }
}

/// The wake-up signal of the worker running on the calling thread.
pub(crate) fn signal() -> Option<SyncArc<Signal>> {
    CURRENT
        .try_with(|c| c.try_borrow().ok()?.as_ref().map(|c| c.signal.clone()))
        .ok()
        .flatten()
}

/// Sends messages of type `M` into one worker, whatever its reply type
/// (what a [`ResultSink`](super::ResultSink) needs).
pub(crate) trait MessagePort<M>: Send {
    /// As [`WorkerSender::try_send`].
    fn try_send(&mut self, msg: M) -> Result<(), super::SendError<M>>;
}

impl<M: Send + 'static, R: Send + 'static> MessagePort<M> for WorkerSender<M, R> {
    fn try_send(&mut self, msg: M) -> Result<(), super::SendError<M>> {
        WorkerSender::try_send(self, msg)
    }
}

fn port_for<M: Send + 'static, R: Send + 'static>(cur: &Current) -> Option<Box<dyn Any>> {
    let sender = WorkerSender::<M, R>::connect_current(cur).ok()?;
    let port: Box<dyn MessagePort<M>> = Box::new(sender);
    Some(Box::new(port))
}

/// A port into the worker running on the calling thread, for its message
/// type `M` whatever its reply type.
pub(crate) fn current_port<M: Send + 'static>()
-> Result<Box<dyn MessagePort<M>>, CurrentWorkerError> {
    CURRENT.with(|c| {
        let c = c.borrow();
        let cur = c.as_ref().ok_or(CurrentWorkerError::NotAWorker)?;
        (cur.port)(cur)
            .and_then(|p| p.downcast::<Box<dyn MessagePort<M>>>().ok())
            .map(|p| *p)
            .ok_or(CurrentWorkerError::WrongMessageType {
                asked: std::any::type_name::<M>(),
            })
    })
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Whether the calling thread runs a worker (safe to call from a panic
/// hook: it never panics, also while the thread's locals are torn down).
pub(crate) fn on_worker_thread() -> bool {
    CURRENT
        .try_with(|c| c.try_borrow().map(|c| c.is_some()).unwrap_or(true))
        .unwrap_or(false)
}

/// Records the worker this thread runs (set once, at thread start).
pub(crate) fn enter<M: Send + 'static, R: Send + 'static>(
    shared: Arc<WorkerShared<M, R>>,
    send: SendConfig,
    io_report: Option<IoReport>,
) {
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Current {
            signal: shared.signal.clone(),
            shared,
            send,
            port: port_for::<M, R>,
            io_report,
        })
    });
}

/// Why [`WorkerSender::current`] could not give a sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CurrentWorkerError {
    /// The calling thread is not a worker's.
    #[error("WorkerSender::current called outside a worker thread")]
    NotAWorker,
    /// The worker on this thread takes another message type.
    #[error("WorkerSender::current::<{asked}>: this worker's message type differs")]
    WrongMessageType {
        /// The message type asked for.
        asked: &'static str,
    },
    /// The worker on this thread polls a local I/O driver of that kind
    /// already (one network and one storage driver per worker thread).
    #[error("this worker runs a local I/O driver already (one of each kind per worker thread)")]
    DriverInstalled,
}

impl<M: Send + 'static, R: Send + 'static> WorkerSender<M, R> {
    /// A sender into the worker running on the calling thread, with its own
    /// ring. Call it from [`Worker::init`](super::Worker::init) (or any
    /// handler) to give an I/O or accelerator worker a way to deliver
    /// results back into this worker's loop as ordinary messages.
    ///
    /// # Errors
    /// [`CurrentWorkerError::NotAWorker`] when the calling thread is not a
    /// worker, [`CurrentWorkerError::WrongMessageType`] when `M` is not that
    /// worker's message type.
    ///
    /// ```
    /// use shared_nothing::prelude::*;
    /// use shared_nothing::worker::WorkerSender;
    /// struct SelfSend;
    /// impl Worker for SelfSend {
    ///     type State = WorkerSender<u32>;
    ///     type Message = u32;
    ///     type Reply = ();
    ///     fn init(&mut self) -> Result<WorkerSender<u32>> { Ok(WorkerSender::current()?) }
    ///     fn handle_message(&mut self, me: &mut WorkerSender<u32>, m: Envelope<u32>) -> Result<()> {
    ///         if m.payload > 0 { me.try_send(m.payload - 1).map_err(|_| Error::Full)?; }
    ///         Ok(())
    ///     }
    /// }
    /// let mut w = shared_nothing::worker::spawn(SelfSend, WorkerConfig::new()).unwrap();
    /// w.send(3).unwrap();
    /// # std::thread::sleep(std::time::Duration::from_millis(50));
    /// w.stop().unwrap();
    /// assert_eq!(w.stats().handled, 4);
    /// assert!(matches!( // not a worker thread
    ///     WorkerSender::<u32>::current(),
    ///     Err(shared_nothing::worker::CurrentWorkerError::NotAWorker)
    /// ));
    /// ```
    pub fn current() -> Result<Self, CurrentWorkerError> {
        CURRENT.with(|c| {
            let c = c.borrow();
            let cur = c.as_ref().ok_or(CurrentWorkerError::NotAWorker)?;
            Self::connect_current(cur)
        })
    }

    fn connect_current(cur: &Current) -> Result<Self, CurrentWorkerError> {
        let shared = cur
            .shared
            .clone()
            .downcast::<WorkerShared<M, R>>()
            .map_err(|_| CurrentWorkerError::WrongMessageType {
                asked: std::any::type_name::<(M, R)>(),
            })?;
        let workers: Arc<[_]> = vec![shared].into();
        Ok(WorkerSender::from_outbox(Outbox::connect(
            workers, cur.send,
        )))
    }
}
