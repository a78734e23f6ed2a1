//! A worker for the I/O tests that holds its first message until a gate
//! opens: its queue of 4 fills, so the I/O worker's sink backlogs.

use crate::prelude::*;
use crate::worker::{WorkerHandle, spawn};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Gate<M> {
    open: crossbeam_channel::Receiver<()>,
    waited: bool,
    counted: Arc<AtomicUsize>,
    weigh: fn(&M) -> usize,
}

impl<M: Send + 'static> Worker for Gate<M> {
    type State = ();
    type Message = M;
    type Reply = ();
    fn init(&mut self) -> crate::Result<()> {
        Ok(())
    }
    fn handle_message(&mut self, _: &mut (), m: Envelope<M>) -> crate::Result<()> {
        if !self.waited {
            self.waited = true;
            let _ = self.open.recv();
        }
        self.counted
            .fetch_add((self.weigh)(&m.payload), Ordering::SeqCst);
        Ok(())
    }
}

/// A gated worker: send `()` on the sender to open it; the counter sums
/// `weigh` over every message it took.
pub(crate) fn spawn_gate<M: Send + 'static>(
    weigh: fn(&M) -> usize,
) -> (
    WorkerHandle<M>,
    crossbeam_channel::Sender<()>,
    Arc<AtomicUsize>,
) {
    let (open, gate) = crossbeam_channel::bounded(1);
    let counted = Arc::new(AtomicUsize::new(0));
    let worker = Gate {
        open: gate,
        waited: false,
        counted: counted.clone(),
        weigh,
    };
    let handle = spawn(worker, WorkerConfig::new().with_queue_capacity(4)).unwrap();
    (handle, open, counted)
}

/// Waits (at most 10 s) until `counted` reaches `want`; returns its value.
pub(crate) fn wait_for(counted: &AtomicUsize, want: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while counted.load(Ordering::SeqCst) < want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    counted.load(Ordering::SeqCst)
}
