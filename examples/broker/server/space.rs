//! Waiting for disk space.
//!
//! A log write that fails for lack of space (`ENOSPC`, `EDQUOT`, or a write
//! that made no progress) does not poison the log: nothing it carried was
//! acked (its batch is still pending, and batches commit in order), and
//! its buffer came back with the completion, so it can be written again.
//! The owner *parks* such requests here and resubmits them with
//! exponential backoff ([`FIRST_BACKOFF`] doubling to [`MOST_BACKOFF`])
//! until one goes through with nothing parked behind it: then writes have
//! resumed. Rewriting the same bytes at the same position is idempotent,
//! and a group-commit write comes back here whole (write and sync), so a
//! retried sync always follows a rewrite from the owner's own copy, never
//! trusting pages a failed fdatasync may have dropped.
//!
//! Other errors (`EIO`, ...) still poison the log.

use shared_nothing::io::IoError;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The first retry waits this long after the failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between retries.
pub const MOST_BACKOFF: Duration = Duration::from_secs(1);

/// Whether `e` means the file system is out of space (or quota) for this
/// write, so the same write may succeed once space is freed.
pub fn out_of_space(e: &IoError) -> bool {
    use std::io::ErrorKind;
    matches!(e, IoError::ShortWrite { .. })
        || matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

/// Requests parked while the disk is full, and the retry clock.
///
/// `R` is what the owner needs to resubmit one (its write, with the
/// buffer, or which file to open or sync).
#[derive(Debug)]
pub struct SpaceWait<R> {
    since: Instant,
    backoff: Duration,
    due: Instant,
    parked: Vec<R>,
    /// Tokens of resubmitted requests not completed yet.
    retrying: HashSet<u64>,
    retries: u64,
}

impl<R> SpaceWait<R> {
    /// The first request that ran out of space, at `now`.
    pub fn new(first: R, now: Instant) -> Self {
        Self {
            since: now,
            backoff: FIRST_BACKOFF,
            due: now + FIRST_BACKOFF,
            parked: vec![first],
            retrying: HashSet::new(),
            retries: 0,
        }
    }

    /// Another request ran out of space (a retry again, or one that was
    /// in flight when the disk filled).
    pub fn park(&mut self, request: R) {
        self.parked.push(request);
    }

    /// How long writes have waited for space.
    pub fn waited(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }

    /// Resubmissions so far.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// If the backoff has passed: the parked requests, to resubmit now (in
    /// the order they were parked), and the next wait doubled.
    pub fn due(&mut self, now: Instant) -> Option<Vec<R>> {
        if self.parked.is_empty() || now < self.due {
            return None;
        }
        self.retries += self.parked.len() as u64;
        self.backoff = (self.backoff * 2).min(MOST_BACKOFF);
        self.due = now + self.backoff;
        Some(std::mem::take(&mut self.parked))
    }

    /// A resubmitted request went out with `token`.
    pub fn retrying(&mut self, token: u64) {
        self.retrying.insert(token);
    }

    /// Request `token` completed without running out of space. Returns
    /// whether the wait is over: it was a retry, and no other retry is
    /// parked or in flight.
    pub fn completed(&mut self, token: u64) -> bool {
        self.retrying.remove(&token) && self.retrying.is_empty() && self.parked.is_empty()
    }

    /// Request `token` ran out of space again: it is no longer in flight
    /// (the caller parks it again).
    pub fn failed_again(&mut self, token: u64) {
        self.retrying.remove(&token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_bound_and_the_wait_ends_with_the_last_retry() {
        let t0 = Instant::now();
        let mut w = SpaceWait::new("a", t0);
        w.park("b");
        assert!(w.due(t0).is_none(), "not before the first backoff");
        let first = w.due(t0 + FIRST_BACKOFF).expect("due");
        assert_eq!(first, ["a", "b"]);
        assert!(w.due(t0 + FIRST_BACKOFF).is_none(), "nothing parked");
        w.retrying(1);
        w.retrying(2);
        // "a" fails again: parked, next try after the doubled backoff.
        w.failed_again(1);
        w.park("a");
        assert!(!w.completed(2), "a is still parked");
        let t1 = t0 + FIRST_BACKOFF;
        assert!(w.due(t1 + FIRST_BACKOFF).is_none());
        assert_eq!(w.due(t1 + FIRST_BACKOFF * 2).expect("due"), ["a"]);
        w.retrying(3);
        assert!(!w.completed(99), "not a retry");
        assert!(w.completed(3));
        assert_eq!(w.retries(), 3);
        let mut t = t0;
        let mut w = SpaceWait::new((), t0);
        for _ in 0..20 {
            t += MOST_BACKOFF;
            if w.due(t).is_some() {
                w.park(());
            }
        }
        assert_eq!(w.backoff, MOST_BACKOFF);
    }

    #[test]
    fn only_space_errors_are_retried() {
        let full = IoError::Os {
            op: "write",
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let quota = IoError::Os {
            op: "write",
            source: std::io::Error::from_raw_os_error(libc::EDQUOT),
        };
        let eio = IoError::Os {
            op: "write",
            source: std::io::Error::from_raw_os_error(libc::EIO),
        };
        assert!(out_of_space(&full));
        assert!(out_of_space(&quota));
        assert!(!out_of_space(&eio));
    }
}
