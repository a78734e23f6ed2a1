//! `quiet_caught_panics` silences the panic hook for worker threads only.
//! Its own test binary: the panic hook is process-wide.

use shared_nothing::prelude::*;
use shared_nothing::worker::EventKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Panicky;

impl Worker for Panicky {
    type State = ();
    type Message = ();
    type Reply = ();
    fn init(&mut self) -> Result<()> {
        Ok(())
    }
    fn handle_message(&mut self, _: &mut (), _: Envelope<()>) -> Result<()> {
        panic!("caught by the worker");
    }
}

#[test]
fn worker_panics_skip_the_hook_and_other_panics_reach_it() {
    let printed = Arc::new(AtomicUsize::new(0));
    let p = printed.clone();
    std::panic::set_hook(Box::new(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    }));
    shared_nothing::worker::quiet_caught_panics();

    let cfg = WorkerConfig::new().with_restart_policy(RestartPolicy::Always);
    let mut w = shared_nothing::worker::spawn(Panicky, cfg).unwrap();
    let events = w.events();
    w.send(()).unwrap();
    w.flush_timeout(Duration::from_secs(10)).unwrap();
    // The panic was caught and reported as an event, not printed.
    let panicked = std::iter::from_fn(|| events.next_timeout(Duration::from_secs(5)))
        .any(|e| matches!(e.kind, EventKind::Panicked { .. }));
    assert!(panicked);
    assert_eq!(printed.load(Ordering::SeqCst), 0);
    w.stop().unwrap();

    // A panic on any other thread still reaches the previous hook.
    let r = std::thread::spawn(|| panic!("not a worker")).join();
    assert!(r.is_err());
    assert_eq!(printed.load(Ordering::SeqCst), 1);
}
