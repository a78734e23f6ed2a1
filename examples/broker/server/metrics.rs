//! The broker's own series, registered in the pool's registry beside the
//! library's, so one `GET /metrics` (`--metrics-addr`) shows both.

use shared_nothing::metrics::prometheus::metrics::counter::Counter;
use shared_nothing::metrics::prometheus::metrics::gauge::Gauge;
use shared_nothing::metrics::prometheus::metrics::histogram::{Histogram, exponential_buckets};
use shared_nothing::metrics::prometheus::registry::Registry;

/// What the log owner counts (atomic: it alone writes, scrapes read).
#[derive(Debug, Clone)]
pub struct BrokerMetrics {
    pub records_acked: Counter,
    pub bytes_acked: Counter,
    /// The committed log end (the next record's offset).
    pub log_end: Gauge,
    pub consumers: Gauge,
    /// 1 once the log refused writes after a disk error.
    pub log_failed: Gauge,
    /// 1 while log writes wait for disk space (retried with backoff).
    pub disk_full: Gauge,
    /// Log writes resubmitted after running out of space.
    pub disk_full_retries: Counter,
    /// From a record's arrival at the owner to its ack, per record.
    pub ack_latency: Histogram,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self {
            records_acked: Counter::default(),
            bytes_acked: Counter::default(),
            log_end: Gauge::default(),
            consumers: Gauge::default(),
            log_failed: Gauge::default(),
            disk_full: Gauge::default(),
            disk_full_retries: Counter::default(),
            // 10 us to about 5 s.
            ack_latency: Histogram::new(exponential_buckets(10e-6, 2.0, 20)),
        }
    }
}

impl BrokerMetrics {
    /// Registers every series in `registry`, prefixed `broker_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("broker");
        r.register(
            "records_acked",
            "Records acknowledged to producers",
            self.records_acked.clone(),
        );
        r.register(
            "bytes_acked",
            "Payload bytes acknowledged",
            self.bytes_acked.clone(),
        );
        r.register(
            "log_end_offset",
            "The committed log end",
            self.log_end.clone(),
        );
        r.register("consumers", "Consumers subscribed", self.consumers.clone());
        r.register(
            "log_failed",
            "1 once a disk error stopped appends",
            self.log_failed.clone(),
        );
        r.register(
            "disk_full",
            "1 while log writes wait for disk space",
            self.disk_full.clone(),
        );
        r.register(
            "disk_full_retries",
            "Log writes resubmitted after running out of space",
            self.disk_full_retries.clone(),
        );
        r.register(
            "ack_latency_seconds",
            "From a record's arrival at the log owner to its ack",
            self.ack_latency.clone(),
        );
    }
}
