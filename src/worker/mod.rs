//! Typed workers: isolated state, driven by messages, on their own thread.
//!
//! A worker is a [`Worker`] implementation plus a [`WorkerConfig`]. [`spawn`]
//! starts it on its own thread (pinned if configured), runs `init` there, and
//! returns a [`WorkerHandle`] to send to it and control it. Each sender owns a
//! private SPSC ring into the worker; the worker polls its rings in turn,
//! hands each drained batch to [`Worker::handle_batch`], calls
//! [`Worker::tick`] on schedule, and idles per its [`IdleStrategy`].
//!
//! Faults stay inside the worker: a panicking handler is caught, the message
//! is counted failed and reported as an event, the state is rebuilt by
//! `init` per the [`RestartPolicy`], and queued messages are handled after
//! the restart. Handler errors are counted and reported, never swallowed.
//!
//! **Async callers.** A request's [`Pending`] is a [`Future`]
//! of its reply, and `send_async` / `request_async` / `reserve_async` await
//! room in a full queue instead of parking the thread ([`SendAsync`],
//! [`RequestAsync`], [`Reserve`]), so tasks on any executor can talk to
//! workers; the crate itself has no executor and depends on none.

mod async_send;
mod config;
mod current;
pub(crate) mod envelope;
mod error;
mod event;
mod handle;
#[cfg(not(loom))]
pub(crate) mod local;
pub(crate) mod mailbox;
pub(crate) mod outbox;
mod quiet;
pub(crate) mod reply;
pub(crate) mod runtime;
pub(crate) mod shared;
mod sink;
mod spin;
mod stats;
mod traits;
mod watchdog;

pub use async_send::{Permit, RequestAsync, Reserve, SendAsync};
pub use config::{IdleStrategy, RestartPolicy, WorkerConfig};
pub use current::CurrentWorkerError;
pub use envelope::Envelope;
pub use error::{FlushError, GatherError, SendError};
pub use event::{EVENT_CAPACITY, EventKind, WorkerEvent};
pub use handle::{EventStream, WorkerHandle, WorkerSender};
pub use quiet::quiet_caught_panics;
pub use reply::{Pending, ReplyError, ReplyTo};
pub use sink::{ResultQueue, ResultSink};
pub use stats::{WorkerState, WorkerStats};
pub use traits::{Batch, Worker};

#[cfg(not(loom))]
pub(crate) use current::report_io;
pub(crate) use event::EventSink;
pub(crate) use stats::{SampleSource, WorkerSample};

use crate::Result;

/// Starts `worker` on its own thread and waits for its `init` to finish.
///
/// # Errors
/// `Spawn` if the OS refuses the thread; `Init` if pinning or `init` fails
/// (the thread has exited by then).
///
/// ```
/// use shared_nothing::prelude::*;
/// struct Echo;
/// impl Worker for Echo {
///     type State = ();
///     type Message = String;
///     type Reply = String;
///     fn init(&mut self) -> Result<()> { Ok(()) }
///     fn handle_message(&mut self, _: &mut (), mut m: Envelope<String, String>) -> Result<()> {
///         let p = m.payload.clone();
///         m.reply(p)?;
///         Ok(())
///     }
/// }
/// let mut w = shared_nothing::worker::spawn(Echo, WorkerConfig::new().with_name("echo")).unwrap();
/// let answer = w.request("hi".into()).unwrap().wait().unwrap();
/// assert_eq!(answer, "hi");
/// ```
pub fn spawn<W: Worker>(
    worker: W,
    config: WorkerConfig,
) -> Result<WorkerHandle<W::Message, W::Reply>> {
    let launch = runtime::launch(worker, &config, 0, 1, EventSink::new())?;
    if let Err(e) = launch.wait_ready() {
        let _ = launch.join.join();
        return Err(e);
    }
    let runtime::Launch {
        shared,
        producers,
        join,
        ..
    } = launch;
    let workers: std::sync::Arc<[_]> = vec![shared.clone()].into();
    let outbox = outbox::Outbox::from_rings(workers, producers, outbox::SendConfig::of(&config));
    Ok(WorkerHandle::new(outbox, shared, join))
}

#[cfg(test)]
mod tests;

#[cfg(all(test, not(loom)))]
mod async_tests;
