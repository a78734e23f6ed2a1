//! Group commit per `--fsync`: when the log is synced and which offset acks
//! may be released below.
//!
//! The server appends every record it has received from all producers (one
//! batch: whatever arrived since the last commit), then calls
//! [`Committer::after_batch`] once. The returned offset is the ack line:
//! each producer's pending acks for records below it go out, in order, and
//! waiting consumers may read up to it. With `always` that is one fdatasync
//! per batch, however many connections contributed, which is what lets
//! durable throughput approach the disk's bandwidth (~105 us per fdatasync
//! here, so ~9k syncs/s, each covering a whole batch).

use crate::config::FsyncPolicy;
use crate::log::{Dir, Log, LogError};
use std::time::Instant;

/// Applies a [`FsyncPolicy`] to a [`Log`].
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

    /// Commits the batch just appended and returns the committed offset:
    /// records below it may be acked and read. `always` syncs first;
    /// `interval` syncs if the interval has passed and otherwise only
    /// writes; `never` only writes.
    ///
    /// # Errors
    /// A disk error; the log then refuses further writes, and no ack above
    /// the previous committed offset may be sent.
    pub fn after_batch<D: Dir>(&mut self, log: &mut Log<D>, now: Instant) -> Result<u64, LogError> {
        match self.policy {
            FsyncPolicy::Always => self.sync(log, now),
            FsyncPolicy::Interval(every) if now.duration_since(self.last_sync) >= every => {
                self.sync(log, now)
            }
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => log.publish(),
        }
    }

    /// When a time-driven sync is due (`interval` with unsynced records):
    /// arm a timer for it and call [`tick`](Self::tick) then, so the tail of
    /// a burst does not wait for the next batch to become durable.
    pub fn next_due<D: Dir>(&self, log: &Log<D>) -> Option<Instant> {
        match self.policy {
            FsyncPolicy::Interval(every) if log.durable_offset() < log.committed_offset() => {
                Some(self.last_sync + every)
            }
            _ => None,
        }
    }

    /// Syncs if a time-driven sync is due at `now`.
    ///
    /// # Errors
    /// A disk error, as in [`after_batch`](Self::after_batch).
    pub fn tick<D: Dir>(&mut self, log: &mut Log<D>, now: Instant) -> Result<(), LogError> {
        match self.next_due(log) {
            Some(due) if now >= due => self.sync(log, now).map(|_| ()),
            _ => Ok(()),
        }
    }

    fn sync<D: Dir>(&mut self, log: &mut Log<D>, now: Instant) -> Result<u64, LogError> {
        self.last_sync = now;
        log.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{FsDir, LogConfig};
    use crate::test_dir::TempDir;
    use std::time::Duration;

    fn log(tmp: &TempDir) -> Log<FsDir> {
        let cfg = LogConfig {
            segment_bytes: 1 << 20,
            index_interval: 4096,
            retention_bytes: None,
            max_record: 1024,
            write_buffer: 1 << 16,
        };
        Log::open(FsDir::create(&tmp.0).expect("dir"), cfg)
            .expect("open")
            .0
    }

    #[test]
    fn always_makes_every_batch_durable() {
        let tmp = TempDir::new();
        let mut log = log(&tmp);
        let t0 = Instant::now();
        let mut c = Committer::new(FsyncPolicy::Always, t0);
        for batch in 0..3 {
            for _ in 0..10 {
                log.append(b"rec").expect("append");
            }
            let line = c.after_batch(&mut log, t0).expect("commit");
            assert_eq!(line, log.end_offset(), "batch {batch}");
            assert_eq!(log.durable_offset(), line);
            assert_eq!(c.next_due(&log), None);
        }
    }

    #[test]
    fn never_acks_after_the_write_without_syncing() {
        let tmp = TempDir::new();
        let mut log = log(&tmp);
        let t0 = Instant::now();
        let mut c = Committer::new(FsyncPolicy::Never, t0);
        log.append(b"rec").expect("append");
        let line = c
            .after_batch(&mut log, t0 + Duration::from_secs(3600))
            .expect("commit");
        assert_eq!(line, log.end_offset());
        assert_eq!(log.durable_offset(), 0);
        assert_eq!(c.next_due(&log), None);
    }

    #[test]
    fn interval_syncs_when_due_and_on_tick() {
        let tmp = TempDir::new();
        let mut log = log(&tmp);
        let t0 = Instant::now();
        let every = Duration::from_millis(10);
        let mut c = Committer::new(FsyncPolicy::Interval(every), t0);
        log.append(b"a").expect("append");
        let line = c.after_batch(&mut log, t0 + every / 2).expect("commit");
        assert_eq!((line, log.durable_offset()), (log.end_offset(), 0));
        assert_eq!(c.next_due(&log), Some(t0 + every));
        c.tick(&mut log, t0 + every / 2).expect("not due");
        assert_eq!(log.durable_offset(), 0);
        c.tick(&mut log, t0 + every).expect("due");
        assert_eq!(log.durable_offset(), log.end_offset());
        assert_eq!(c.next_due(&log), None);
        // A batch after the interval syncs by itself.
        log.append(b"b").expect("append");
        c.after_batch(&mut log, t0 + every * 3).expect("commit");
        assert_eq!(log.durable_offset(), log.end_offset());
    }
}
