//! How a blocking channel operation waits: spin briefly, yield, then park.

use crossbeam_utils::Backoff;
use std::time::{Duration, Instant};

/// What a blocked operation should do next.
pub(crate) enum Step {
    /// Spun or yielded; try again.
    Retry,
    /// Park for at most this long (`None`: until woken), then try again.
    Park(Option<Duration>),
    /// The deadline passed.
    TimedOut,
}

/// Escalating wait for one blocking operation.
pub(crate) struct Waiter {
    backoff: Backoff,
    deadline: Option<Instant>,
}

impl Waiter {
    pub(crate) fn new(deadline: Option<Instant>) -> Self {
        Self {
            backoff: Backoff::new(),
            deadline,
        }
    }

    pub(crate) fn step(&mut self) -> Step {
        let remaining = match self.deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) if !r.is_zero() => Some(r),
                _ => return Step::TimedOut,
            },
            None => None,
        };
        // Under loom, spinning only multiplies the states to explore: park.
        if cfg!(loom) || self.backoff.is_completed() {
            Step::Park(remaining)
        } else {
            self.backoff.snooze();
            Step::Retry
        }
    }
}

/// `Instant::now() + timeout`, or no deadline if that overflows.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
