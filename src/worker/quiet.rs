//! Silencing the panic hook for panics a worker catches.
//!
//! Every handler, `init`, `tick`, `after_round` and `shutdown` call runs
//! under `catch_unwind`: a panic there is counted, reported as an
//! [`EventKind::Panicked`](super::EventKind::Panicked) event with its
//! message, and handled by the restart policy. Rust still runs the process's
//! panic hook first, which by default prints the message and location to
//! stderr, so each caught panic also appears there. That is the default here
//! too (a panic is worth seeing); services that read the events instead can
//! turn the printing off for worker threads.

use std::sync::Once;

/// Makes the panic hook skip panics raised on worker threads (which the
/// worker catches and reports as events); panics on every other thread are
/// passed to the hook that was installed before. Call it once, early (it
/// wraps the hook installed at that moment); later calls do nothing.
///
/// ```
/// shared_nothing::worker::quiet_caught_panics();
/// ```
pub fn quiet_caught_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !super::current::on_worker_thread() {
                previous(info);
            }
        }));
    });
}
