//! The stall detector: one background thread per process that notices a
//! handler running longer than its worker's threshold, while it is still
//! running (a post-hoc check could not catch a handler that never returns).

use parking_lot::Mutex;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// What the watchdog needs from a worker.
pub(crate) trait Watched: Send + Sync {
    /// When the current handler started (`stats::now_nanos`), 0 if idle.
    fn busy_since(&self) -> u64;
    fn threshold(&self) -> Option<Duration>;
    fn report_stall(&self, busy_for: Duration);
}

struct Entry {
    worker: Weak<dyn Watched>,
    /// `busy_since` of the episode already reported, so one stall is
    /// reported once.
    reported: u64,
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
            reported: 0,
        });
    }
}

fn watch() {
    loop {
        let mut period = Duration::from_millis(250);
        {
            let mut entries = registry().lock();
            entries.retain(|e| e.worker.strong_count() > 0);
            let now = super::stats::now_nanos();
            for e in entries.iter_mut() {
                let Some(w) = e.worker.upgrade() else {
                    continue;
                };
                let Some(threshold) = w.threshold() else {
                    continue;
                };
                period = period.min(threshold / 4).max(Duration::from_millis(1));
                let since = w.busy_since();
                if since == 0 || since == e.reported {
                    continue;
                }
                let busy_for = Duration::from_nanos(now.saturating_sub(since));
                if busy_for >= threshold {
                    e.reported = since;
                    w.report_stall(busy_for);
                }
            }
        }
        std::thread::sleep(period);
    }
}
