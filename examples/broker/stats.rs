//! The periodic stats line: records/s, MB/s, ack latency p50/p99, consumers.
//!
//! The log owner releases every ack, so it alone keeps a [`Stats`] and
//! prints [`Stats::line`] each interval. [`Stats::merge`] is there for
//! servers that count on several workers (and for the tests).

use hdrhistogram::Histogram;
use std::time::Duration;

/// Counters for one window of one worker (or, merged, of all of them).
#[derive(Debug, Clone)]
pub struct Stats {
    records: u64,
    bytes: u64,
    /// Microseconds from a record's arrival to its ack being queued.
    ack_latency_us: Histogram<u64>,
}

impl Stats {
    /// Empty counters. Latencies above a minute land in the top bucket.
    ///
    /// # Errors
    /// Only if hdrhistogram refuses the constant bounds (it does not).
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Stats {
            records: 0,
            bytes: 0,
            ack_latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        })
    }

    /// Counts one acked record.
    pub fn record_ack(&mut self, payload_len: usize, latency: Duration) {
        self.records += 1;
        self.bytes += payload_len as u64;
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.ack_latency_us.saturating_record(us);
    }

    /// Returns this window's counters and starts a new window.
    pub fn take(&mut self) -> Stats {
        let window = self.clone();
        self.records = 0;
        self.bytes = 0;
        self.ack_latency_us.reset();
        window
    }

    /// Adds another worker's window.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn merge(&mut self, other: &Stats) {
        self.records += other.records;
        self.bytes += other.bytes;
        // Both histograms come from `new`, with the same bounds, and values
        // were recorded saturating, so adding cannot go out of range.
        let _ = self.ack_latency_us.add(&other.ack_latency_us);
    }

    /// Records counted.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn records(&self) -> u64 {
        self.records
    }

    /// One line for a window of length `window`; `disk_full`: how long log
    /// writes have waited for space, if they are waiting.
    pub fn line(&self, window: Duration, consumers: usize, disk_full: Option<Duration>) -> String {
        let secs = window.as_secs_f64().max(1e-9);
        let h = &self.ack_latency_us;
        let (p50, p99) = if h.is_empty() {
            (0, 0)
        } else {
            (h.value_at_quantile(0.50), h.value_at_quantile(0.99))
        };
        let mut line = format!(
            "stats: {:.0} records/s, {:.2} MB/s, ack p50 {} us p99 {} us, {} consumers",
            self.records as f64 / secs,
            self.bytes as f64 / secs / 1e6,
            p50,
            p99,
            consumers
        );
        if let Some(waited) = disk_full {
            line.push_str(&format!(
                ", disk full for {:.1} s (writes retried, nothing acked)",
                waited.as_secs_f64()
            ));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_merge_and_reset() {
        let mut a = Stats::new().expect("stats");
        let mut b = Stats::new().expect("stats");
        for i in 1..=100 {
            a.record_ack(1000, Duration::from_micros(i));
        }
        b.record_ack(1000, Duration::from_secs(3600)); // clamped, not lost
        let mut total = a.take();
        total.merge(&b.take());
        assert_eq!(total.records(), 101);
        assert_eq!(a.records(), 0);
        let line = total.line(Duration::from_secs(1), 3, None);
        assert!(
            line.starts_with("stats: 101 records/s, 0.10 MB/s, ack p50 51 us"),
            "{line}"
        );
        assert!(line.ends_with("3 consumers"), "{line}");
        let idle = Stats::new()
            .expect("stats")
            .line(Duration::from_secs(1), 0, None);
        assert!(idle.contains("ack p50 0 us p99 0 us"), "{idle}");
        let full = Stats::new().expect("stats").line(
            Duration::from_secs(1),
            0,
            Some(Duration::from_millis(2500)),
        );
        assert!(
            full.ends_with("disk full for 2.5 s (writes retried, nothing acked)"),
            "{full}"
        );
    }
}
