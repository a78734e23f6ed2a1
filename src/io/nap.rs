//! How long an idle I/O worker may sleep while results wait for room.
//!
//! A [`ResultSink`](crate::worker::ResultSink) whose target is full keeps
//! the results in its backlog, and only the delivering worker retries it.
//! Nothing wakes that worker when the target drains, so a worker with a
//! backlog and nothing else to do must not sleep until the next request:
//! it naps, for a pause that doubles from [`FIRST`] to [`MOST`] while the
//! backlog stays, and sleeps until woken again once the backlog is gone.

use std::time::Duration;

/// The first nap with a backlog.
pub(crate) const FIRST: Duration = Duration::from_micros(50);
/// The longest nap with a backlog: a drained target waits at most this long
/// for the results meant for it.
pub(crate) const MOST: Duration = Duration::from_millis(1);

/// The nap policy of one worker loop.
#[derive(Debug, Default)]
pub(crate) struct BacklogNap {
    next: Option<Duration>,
}

impl BacklogNap {
    /// The longest the worker may sleep now, given the results still
    /// waiting after its last retry: `None` (until woken) with none, else
    /// the next nap.
    pub(crate) fn limit(&mut self, backlog: usize) -> Option<Duration> {
        if backlog == 0 {
            self.next = None;
            return None;
        }
        let nap = self.next.unwrap_or(FIRST);
        self.next = Some((nap * 2).min(MOST));
        Some(nap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naps_double_while_the_backlog_stays_and_end_with_it() {
        let mut n = BacklogNap::default();
        assert_eq!(n.limit(0), None);
        assert_eq!(n.limit(3), Some(FIRST));
        assert_eq!(n.limit(3), Some(FIRST * 2));
        for _ in 0..20 {
            n.limit(1);
        }
        assert_eq!(n.limit(1), Some(MOST));
        assert_eq!(n.limit(0), None);
        assert_eq!(n.limit(1), Some(FIRST), "a new backlog starts short");
    }
}
