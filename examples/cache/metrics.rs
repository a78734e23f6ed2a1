//! The cache's series, registered in the pool's Prometheus registry
//! (`WorkerPool::metrics_registry`) beside the library's, so `GET
//! /metrics` shows both.
//!
//! ElCache's names (spec section 3.4), with labels: every series carries
//! `worker` (the application worker that counts it, or `sdk` for the
//! socket threads), so each worker increments only its own atomics and no
//! cache line is shared between workers; a client that wants ElCache's
//! single number sums over the label. Hits and misses also carry `tier`
//! (`memory`, `disk`), latency histograms `transport` (`http`, `socket`).
//! Counts are kept where they happen (the engine, the connection), read
//! by the scrape; gauges are set by their worker after each message.
//!
//! The cluster's series ([`ClusterMeters`]) are counted where the
//! traffic is: each connection of the internal protocol counts the
//! frames it writes and reads (its own pair of counters, labelled by
//! `channel` and the node or connection slot), the gossip thread its UDP
//! packets and the membership's node counts, each worker the requests it
//! forwards and the lookups it asks again at the next owner.

use shared_nothing::metrics::prometheus::metrics::counter::Counter;
use shared_nothing::metrics::prometheus::metrics::family::Family;
use shared_nothing::metrics::prometheus::metrics::gauge::Gauge;
use shared_nothing::metrics::prometheus::metrics::histogram::Histogram;
use shared_nothing::metrics::prometheus::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// ElCache's latency buckets, in ms.
pub const BUCKETS_MS: [f64; 15] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS_MS)
}

/// One engine's counters and gauges.
#[derive(Clone, Debug, Default)]
pub struct EngineMeters {
    pub gets: Counter,
    pub puts: Counter,
    pub deletes: Counter,
    pub mem_hits: Counter,
    pub disk_hits: Counter,
    pub mem_misses: Counter,
    pub disk_misses: Counter,
    pub partial_hits: Counter,
    pub bytes_read: Counter,
    pub bytes_written: Counter,
    pub mem_evictions: Counter,
    pub disk_evictions: Counter,
    /// Chunks read from and written to the disk tier.
    pub chunks_read: Counter,
    pub chunks_written: Counter,
    /// Chunks found damaged (hash or length wrong, file missing), each
    /// dropping the entries that used it.
    pub corrupt: Counter,
    /// Disk operations that failed.
    pub disk_errors: Counter,
    pub mem_size: Gauge,
    pub mem_capacity: Gauge,
    pub mem_entries: Gauge,
    pub mem_chunks: Gauge,
    pub disk_size: Gauge,
    pub disk_capacity: Gauge,
    pub disk_entries: Gauge,
    pub disk_chunks: Gauge,
}

/// What a connection's worker (or the socket threads) measures.
#[derive(Clone, Debug)]
pub struct FrontMeters {
    pub http_requests: Counter,
    pub http_errors: Counter,
    pub connections: Gauge,
    pub http_latency: Histogram,
    pub get: Histogram,
    pub put: Histogram,
    pub delete: Histogram,
}

impl Default for FrontMeters {
    fn default() -> Self {
        FrontMeters {
            http_requests: Counter::default(),
            http_errors: Counter::default(),
            connections: Gauge::default(),
            http_latency: histogram(),
            get: histogram(),
            put: histogram(),
            delete: histogram(),
        }
    }
}

/// Which operation a latency belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Get,
    Put,
    Delete,
}

impl FrontMeters {
    /// Records one operation's latency (ms, as ElCache's buckets).
    pub fn observe(&self, op: OpKind, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        match op {
            OpKind::Get => self.get.observe(ms),
            OpKind::Put => self.put.observe(ms),
            OpKind::Delete => self.delete.observe(ms),
        }
    }
}

/// The families, registered once; each worker takes its own handles.
#[derive(Clone, Debug)]
pub struct CacheMetrics {
    counters: Vec<(&'static str, Counters)>,
    gauges: Vec<(&'static str, Gauges)>,
    histograms: Vec<(&'static str, Histograms)>,
    pub uptime: Gauge,
    pub cluster: ClusterMeters,
}

const COUNTERS: [(&str, &str); 16] = [
    ("cache_gets", "GET requests (HTTP and socket)"),
    ("cache_puts", "Values stored"),
    ("cache_deletes", "DELETE requests"),
    ("cache_hits", "GETs served, by the tier that served them"),
    ("cache_misses", "GETs a tier could not serve"),
    (
        "cache_partial_hits",
        "GETs served partly from memory, the rest from disk",
    ),
    ("bytes_read", "Value bytes served"),
    ("bytes_written", "Value bytes stored"),
    ("memory_evictions", "Chunks evicted from the memory tier"),
    ("disk_evictions", "Chunks evicted from the disk tier"),
    ("chunks_read", "Chunks read from the disk tier"),
    ("chunks_written", "Chunks written to the disk tier"),
    (
        "disk_corrupt_chunks",
        "Chunks found damaged on disk (never served)",
    ),
    ("disk_errors", "Disk tier operations that failed"),
    ("http_requests", "HTTP requests"),
    ("http_errors", "HTTP responses with a 4xx or 5xx status"),
];

const GAUGES: [(&str, &str); 9] = [
    ("memory_cache_size_bytes", "Bytes in the memory tier"),
    ("memory_cache_capacity_bytes", "Capacity of the memory tier"),
    (
        "memory_cache_entries",
        "Entries with at least one chunk in memory",
    ),
    ("chunks_in_memory", "Distinct chunks in memory"),
    ("disk_cache_size_bytes", "Bytes in the disk tier"),
    ("disk_cache_capacity_bytes", "Capacity of the disk tier"),
    ("disk_cache_entries", "Entries stored on disk"),
    ("chunks_on_disk", "Distinct chunks on disk"),
    ("http_connections_active", "Open HTTP connections"),
];

const HISTOGRAMS: [(&str, &str); 4] = [
    ("get_latency_ms", "GET latency in ms, by transport"),
    ("put_latency_ms", "PUT latency in ms, by transport"),
    ("delete_latency_ms", "DELETE latency in ms, by transport"),
    (
        "http_request_latency_ms",
        "HTTP request latency in ms, any route",
    ),
];

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl CacheMetrics {
    /// Registers every series in `registry`, prefixed `elcache_`.
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("elcache");
        let mut counters = Vec::new();
        for (name, help) in COUNTERS {
            let f = Counters::default();
            r.register(name, help, f.clone());
            counters.push((name, f));
        }
        let mut gauges = Vec::new();
        for (name, help) in GAUGES {
            let f = Gauges::default();
            r.register(name, help, f.clone());
            gauges.push((name, f));
        }
        let mut histograms = Vec::new();
        for (name, help) in HISTOGRAMS {
            let f = Histograms::new_with_constructor(histogram as fn() -> Histogram);
            r.register(name, help, f.clone());
            histograms.push((name, f));
        }
        let uptime = Gauge::default();
        r.register(
            "uptime_seconds",
            "Seconds since the server started",
            uptime.clone(),
        );
        let cluster = ClusterMeters::register(r);
        CacheMetrics {
            counters,
            gauges,
            histograms,
            uptime,
            cluster,
        }
    }

    fn counter(&self, name: &str, l: &[(&str, &str)]) -> Counter {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f.get_or_create_owned(&labels(l)))
            .unwrap_or_default()
    }

    fn gauge(&self, name: &str, l: &[(&str, &str)]) -> Gauge {
        self.gauges
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f.get_or_create_owned(&labels(l)))
            .unwrap_or_default()
    }

    fn histogram(&self, name: &str, l: &[(&str, &str)]) -> Histogram {
        self.histograms
            .iter()
            .find(|(n, _)| *n == name)
            .map_or_else(histogram, |(_, f)| f.get_or_create_owned(&labels(l)))
    }

    /// Worker `worker`'s engine handles.
    pub fn engine(&self, worker: &str) -> EngineMeters {
        let w = [("worker", worker)];
        let tier = |t| [("worker", worker), ("tier", t)];
        EngineMeters {
            gets: self.counter("cache_gets", &w),
            puts: self.counter("cache_puts", &w),
            deletes: self.counter("cache_deletes", &w),
            mem_hits: self.counter("cache_hits", &tier("memory")),
            disk_hits: self.counter("cache_hits", &tier("disk")),
            mem_misses: self.counter("cache_misses", &tier("memory")),
            disk_misses: self.counter("cache_misses", &tier("disk")),
            partial_hits: self.counter("cache_partial_hits", &w),
            bytes_read: self.counter("bytes_read", &w),
            bytes_written: self.counter("bytes_written", &w),
            mem_evictions: self.counter("memory_evictions", &w),
            disk_evictions: self.counter("disk_evictions", &w),
            chunks_read: self.counter("chunks_read", &w),
            chunks_written: self.counter("chunks_written", &w),
            corrupt: self.counter("disk_corrupt_chunks", &w),
            disk_errors: self.counter("disk_errors", &w),
            mem_size: self.gauge("memory_cache_size_bytes", &w),
            mem_capacity: self.gauge("memory_cache_capacity_bytes", &w),
            mem_entries: self.gauge("memory_cache_entries", &w),
            mem_chunks: self.gauge("chunks_in_memory", &w),
            disk_size: self.gauge("disk_cache_size_bytes", &w),
            disk_capacity: self.gauge("disk_cache_capacity_bytes", &w),
            disk_entries: self.gauge("disk_cache_entries", &w),
            disk_chunks: self.gauge("chunks_on_disk", &w),
        }
    }

    /// The handles of a front: worker `worker`'s HTTP connections, or the
    /// socket threads (`transport` "socket", `worker` "sdk").
    pub fn front(&self, worker: &str, transport: &str) -> FrontMeters {
        let w = [("worker", worker)];
        let t = [("worker", worker), ("transport", transport)];
        FrontMeters {
            http_requests: self.counter("http_requests", &w),
            http_errors: self.counter("http_errors", &w),
            connections: self.gauge("http_connections_active", &w),
            http_latency: self.histogram("http_request_latency_ms", &w),
            get: self.histogram("get_latency_ms", &t),
            put: self.histogram("put_latency_ms", &t),
            delete: self.histogram("delete_latency_ms", &t),
        }
    }
}

/// One connection's counts of the internal protocol's frames: those it
/// wrote (requests, or answers on the serving side) and those it read.
#[derive(Clone, Debug, Default)]
pub struct LinkMeters {
    pub sent: Counter,
    pub received: Counter,
}

/// Which side of the internal protocol a connection is (its `channel`
/// label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// This node's requests to another (`cluster/link.rs`) and their
    /// answers; labelled by the other node's cluster address.
    Forward,
    /// Another node's requests to this one (`cluster/peer.rs`) and this
    /// node's answers; labelled by the connection's slot (slots are
    /// reused as connections close, so the labels stay few).
    Serve,
    /// This node's re-replication pushes (`cluster/sync.rs`) and their
    /// answers; labelled by the node pushed to.
    Sync,
}

impl LinkKind {
    fn labels(self, who: &str) -> Labels {
        let (name, key) = match self {
            LinkKind::Forward => ("forward", "node"),
            LinkKind::Serve => ("serve", "conn"),
            LinkKind::Sync => ("sync", "node"),
        };
        labels(&[("channel", name), (key, who)])
    }
}

/// What a worker counts of its routing: requests handed to another
/// node, and lookups asked again at the key's next owner.
#[derive(Clone, Debug, Default)]
pub struct RouteMeters {
    /// By [`RouteMeters::OPS`].
    pub forwarded: [Counter; 4],
    /// After the owner asked did not have the key.
    pub fallover_miss: Counter,
    /// After the owner asked could not be reached.
    pub fallover_down: Counter,
}

impl RouteMeters {
    /// The `op` labels of [`RouteMeters::forwarded`].
    pub const OPS: [&'static str; 4] = ["get", "head", "delete", "put"];
}

/// The gossip thread's series: foca's UDP packets and the membership.
#[derive(Clone, Debug, Default)]
pub struct GossipMeters {
    pub sent: Counter,
    pub received: Counter,
    /// Nodes known (this one included, live or not) and live.
    pub nodes_total: Gauge,
    pub nodes_active: Gauge,
}

/// The counted series of the cluster, for [`ClusterMeters::totals`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Series {
    Sent,
    Received,
    Forwarded,
    Fallovers,
}

/// The cluster's figures, summed over their labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterTotals {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub gossip_sent: u64,
    pub gossip_received: u64,
    pub forwarded: u64,
    pub fallovers: u64,
}

/// The cluster's families (ElCache's `elcache_cluster_*` names, plus the
/// gossip, forwarding and fall-over series). Standalone, nothing takes a
/// handle: the nodes gauges stay at one and no message is counted.
#[derive(Clone, Debug)]
pub struct ClusterMeters {
    sent: Counters,
    received: Counters,
    forwarded: Counters,
    fallovers: Counters,
    gossip: GossipMeters,
    /// Every counter handed out, so the JSON `/metrics` can sum them (a
    /// `Family` cannot be walked). Locked when a handle is made and at
    /// a JSON scrape, never on the counting paths.
    handed: Arc<Mutex<HashMap<(Series, Labels), Counter>>>,
}

impl ClusterMeters {
    /// Registers the cluster's series in `r` (the `elcache` prefix).
    fn register(r: &mut Registry) -> Self {
        let m = ClusterMeters {
            sent: Counters::default(),
            received: Counters::default(),
            forwarded: Counters::default(),
            fallovers: Counters::default(),
            gossip: GossipMeters::default(),
            handed: Arc::default(),
        };
        let g = &m.gossip;
        r.register(
            "cluster_messages_sent",
            "Internal protocol frames written (requests forwarded, answers served, sync pushes), by channel",
            m.sent.clone(),
        );
        r.register(
            "cluster_messages_received",
            "Internal protocol frames read (answers, requests served, sync answers), by channel",
            m.received.clone(),
        );
        r.register(
            "cluster_gossip_packets_sent",
            "Membership (foca) UDP packets sent",
            g.sent.clone(),
        );
        r.register(
            "cluster_gossip_packets_received",
            "Membership (foca) UDP packets received",
            g.received.clone(),
        );
        r.register(
            "cluster_forwarded_requests",
            "Requests a worker handed to another node, by operation (a PUT to two other owners counts two)",
            m.forwarded.clone(),
        );
        r.register(
            "cluster_fallover_reads",
            "Lookups asked again at the key's next owner, by why",
            m.fallovers.clone(),
        );
        r.register(
            "cluster_nodes_total",
            "Nodes known, this one included",
            g.nodes_total.clone(),
        );
        r.register("cluster_nodes_active", "Nodes live", g.nodes_active.clone());
        g.nodes_total.set(1);
        g.nodes_active.set(1);
        m
    }

    fn take(&self, series: Series, l: Labels) -> Counter {
        let family = match series {
            Series::Sent => &self.sent,
            Series::Received => &self.received,
            Series::Forwarded => &self.forwarded,
            Series::Fallovers => &self.fallovers,
        };
        let c = family.get_or_create_owned(&l);
        self.handed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((series, l))
            .or_insert_with(|| c.clone());
        c
    }

    /// The counters of one connection on `channel`, with `who` its node
    /// address or slot ([`LinkKind`]).
    pub fn link(&self, channel: LinkKind, who: &str) -> LinkMeters {
        LinkMeters {
            sent: self.take(Series::Sent, channel.labels(who)),
            received: self.take(Series::Received, channel.labels(who)),
        }
    }

    /// Worker `worker`'s routing counters.
    pub fn route(&self, worker: &str) -> RouteMeters {
        let op = |o| labels(&[("worker", worker), ("op", o)]);
        let why = |r| labels(&[("worker", worker), ("reason", r)]);
        RouteMeters {
            forwarded: RouteMeters::OPS.map(|o| self.take(Series::Forwarded, op(o))),
            fallover_miss: self.take(Series::Fallovers, why("miss")),
            fallover_down: self.take(Series::Fallovers, why("unreachable")),
        }
    }

    /// The gossip thread's handles.
    pub fn gossip(&self) -> GossipMeters {
        self.gossip.clone()
    }

    /// Every cluster counter, summed over its labels.
    pub fn totals(&self) -> ClusterTotals {
        let mut t = ClusterTotals {
            gossip_sent: self.gossip.sent.get(),
            gossip_received: self.gossip.received.get(),
            ..ClusterTotals::default()
        };
        let handed = self
            .handed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((series, _), c) in handed.iter() {
            let slot = match series {
                Series::Sent => &mut t.messages_sent,
                Series::Received => &mut t.messages_received,
                Series::Forwarded => &mut t.forwarded,
                Series::Fallovers => &mut t.fallovers,
            };
            *slot += c.get();
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_nothing::metrics::prometheus::encoding::text::encode;

    fn text(r: &Registry) -> String {
        let mut s = String::new();
        encode(&mut s, r).unwrap();
        s
    }

    #[test]
    fn cluster_counts_sum_over_handles_and_show_in_the_text() {
        let mut r = Registry::default();
        let m = CacheMetrics::register(&mut r).cluster;
        assert_eq!(m.totals(), ClusterTotals::default());
        let t = text(&r);
        assert!(t.contains("elcache_cluster_nodes_total 1"), "{t}");
        assert!(t.contains("elcache_cluster_nodes_active 1"), "{t}");
        let a = m.link(LinkKind::Forward, "127.0.0.1:1");
        let b = m.link(LinkKind::Serve, "0");
        // The same labels again: the same counters, summed once.
        let a2 = m.link(LinkKind::Forward, "127.0.0.1:1");
        a.sent.inc_by(3);
        a2.received.inc();
        b.received.inc_by(5);
        b.sent.inc_by(4);
        let w = m.route("0");
        w.forwarded[0].inc();
        w.fallover_down.inc();
        w.fallover_miss.inc();
        let g = m.gossip();
        g.sent.inc();
        g.received.inc_by(2);
        g.nodes_total.set(3);
        let want = ClusterTotals {
            messages_sent: 7,
            messages_received: 6,
            gossip_sent: 1,
            gossip_received: 2,
            forwarded: 1,
            fallovers: 2,
        };
        assert_eq!(m.totals(), want);
        let t = text(&r);
        for line in [
            "elcache_cluster_messages_sent_total{channel=\"forward\",node=\"127.0.0.1:1\"} 3",
            "elcache_cluster_messages_received_total{channel=\"serve\",conn=\"0\"} 5",
            "elcache_cluster_forwarded_requests_total{worker=\"0\",op=\"get\"} 1",
            "elcache_cluster_fallover_reads_total{worker=\"0\",reason=\"unreachable\"} 1",
            "elcache_cluster_gossip_packets_received_total 2",
            "elcache_cluster_nodes_total 3",
        ] {
            assert!(t.contains(line), "{line} in\n{t}");
        }
    }
}
