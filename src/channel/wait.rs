//! How a blocking channel operation waits: poll at full speed for a while,
//! yield a few times, then park.
//!
//! Polling runs without exponential backoff: the other side of an SPSC ring
//! usually answers within a few hundred nanoseconds, and a backoff that
//! doubles its pause (crossbeam's `Backoff`) parks after a handful of
//! misses, so each message paid a futex wake (measured: default `send`/
//! `recv` at 0.13x rtrb with it).

use std::time::{Duration, Instant};

/// Polls before yielding (each one `spin_loop` hint: from about 10 ns on
/// AMD Zen to about 40 ns on recent Intel cores, so a few to a few tens of
/// microseconds in all).
const SPINS: u32 = 1 << 10;
/// Yields before parking.
const YIELDS: u32 = 16;

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
    polls: u32,
    deadline: Option<Instant>,
}

impl Waiter {
    #[inline]
    pub(crate) fn new(deadline: Option<Instant>) -> Self {
        Self { polls: 0, deadline }
    }

    pub(crate) fn step(&mut self) -> Step {
        // Under loom, spinning only multiplies the states to explore: park.
        let park = cfg!(loom) || self.polls >= SPINS + YIELDS;
        // The clock is read when parking and every 64 polls, not per poll.
        if let Some(d) = self.deadline {
            if park || self.polls % 64 == 0 {
                match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => {
                        if park {
                            return Step::Park(Some(r));
                        }
                    }
                    _ => return Step::TimedOut,
                }
            }
        } else if park {
            return Step::Park(None);
        }
        if self.polls < SPINS {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        self.polls += 1;
        Step::Retry
    }
}

/// `Instant::now() + timeout`, or no deadline if that overflows.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
