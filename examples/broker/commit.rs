//! When the log is synced under `--fsync`, beyond the group commit itself.
//!
//! The server cuts one batch per round of messages (whatever arrived from
//! all producers since the last one) and submits its writes to a storage
//! I/O worker. With `always` the writes are group-committed there (each
//! answered after a shared fdatasync issued after it), so acks wait for
//! durability; with `interval` and `never` they are buffered writes, acked
//! once written, and `interval` adds a time-driven fdatasync, decided here.

use crate::config::FsyncPolicy;
use std::time::Instant;

/// Decides time-driven syncs for a [`FsyncPolicy`].
#[derive(Debug)]
pub struct Committer {
    policy: FsyncPolicy,
    last_sync: Instant,
}

impl Committer {
    /// A committer that counts sync intervals from `now`.
    pub fn new(policy: FsyncPolicy, now: Instant) -> Self {
        Committer {
            policy,
            last_sync: now,
        }
    }

    /// Whether an `interval` sync is due at `now`, given whether committed
    /// records are not yet durable (`unsynced`). Never for `always` (every
    /// batch is synced) and `never`.
    pub fn sync_due(&self, now: Instant, unsynced: bool) -> bool {
        match self.policy {
            FsyncPolicy::Interval(every) => unsynced && now >= self.last_sync + every,
            FsyncPolicy::Always | FsyncPolicy::Never => false,
        }
    }

    /// A time-driven sync was started at `now`.
    pub fn synced(&mut self, now: Instant) {
        self.last_sync = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_interval_has_time_driven_syncs() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(3600);
        for policy in [FsyncPolicy::Always, FsyncPolicy::Never] {
            assert!(!Committer::new(policy, t0).sync_due(later, true));
        }
    }

    #[test]
    fn interval_syncs_when_due_and_unsynced() {
        let t0 = Instant::now();
        let every = Duration::from_millis(10);
        let mut c = Committer::new(FsyncPolicy::Interval(every), t0);
        assert!(!c.sync_due(t0 + every / 2, true), "not due yet");
        assert!(!c.sync_due(t0 + every, false), "nothing to sync");
        assert!(c.sync_due(t0 + every, true));
        c.synced(t0 + every);
        assert!(!c.sync_due(t0 + every * 3 / 2, true));
        assert!(c.sync_due(t0 + every * 2, true));
    }
}
