//! The stall detector: one background thread per process that notices a
//! handler running longer than its worker's threshold, while it is still
//! running (a post-hoc check could not catch a handler that never returns).
//!
//! Workers read no clock for this: each publishes an "in a handler" flag and
//! a count of handler calls. The watchdog times how long it has seen the
//! same call in progress, so detection is late by at most one scan period.

use parking_lot::Mutex;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// What the watchdog needs from a worker.
pub(crate) trait Watched: Send + Sync {
    /// Whether a handler is running, and how many handler calls have
    /// started so far.
    fn handler_progress(&self) -> (bool, u64);
    fn threshold(&self) -> Option<Duration>;
    fn report_stall(&self, busy_for: Duration);
}

struct Entry {
    worker: Weak<dyn Watched>,
    /// The handler call being timed and when it was first seen running.
    watching: Option<(u64, Instant)>,
    /// The call already reported, so one stall is reported once.
    reported: Option<u64>,
}

fn registry() -> &'static Mutex<Vec<Entry>> {
    static REGISTRY: OnceLock<Mutex<Vec<Entry>>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // If the OS refuses the thread, stalls go unreported; nothing else
        // depends on the watchdog.
        let _ = std::thread::Builder::new()
            .name("shared-nothing-watchdog".into())
            .spawn(watch);
        Mutex::new(Vec::new())
    })
}

/// Starts watching `worker` (no-op if it has no threshold).
pub(crate) fn register(worker: Arc<dyn Watched>) {
    if worker.threshold().is_some() {
        registry().lock().push(Entry {
            worker: Arc::downgrade(&worker),
            watching: None,
            reported: None,
        });
    }
}

fn watch() {
    loop {
        let mut period = Duration::from_millis(250);
        {
            let mut entries = registry().lock();
            entries.retain(|e| e.worker.strong_count() > 0);
            let now = Instant::now();
            for e in entries.iter_mut() {
                let Some(w) = e.worker.upgrade() else {
                    continue;
                };
                let Some(threshold) = w.threshold() else {
                    continue;
                };
                period = period.min(threshold / 4).max(Duration::from_millis(1));
                let (running, call) = w.handler_progress();
                if !running {
                    e.watching = None;
                    continue;
                }
                let since = match e.watching {
                    Some((c, since)) if c == call => since,
                    _ => {
                        e.watching = Some((call, now));
                        now
                    }
                };
                let busy_for = now.duration_since(since);
                if busy_for >= threshold && e.reported != Some(call) {
                    e.reported = Some(call);
                    w.report_stall(busy_for);
                }
            }
        }
        std::thread::sleep(period);
    }
}
