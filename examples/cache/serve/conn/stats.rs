//! The `/stats` and JSON `/metrics` bodies.

use crate::engine::Stats;
use crate::metrics::ClusterTotals;
use crate::serve::NodeState;

/// The JSON `cluster` block's figures: the nodes as this worker's view
/// of the membership has them (standalone, or before the first view:
/// this node alone), and the cluster's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ClusterBlock {
    pub nodes_total: u64,
    pub nodes_active: u64,
    pub totals: ClusterTotals,
}

pub(super) fn cluster_block(st: &NodeState) -> ClusterBlock {
    let (nodes_total, nodes_active) = st.cluster.as_ref().map_or((1, 1), |v| {
        let live = v.nodes.iter().filter(|n| n.live).count();
        (v.nodes.len() as u64, live as u64)
    });
    ClusterBlock {
        nodes_total,
        nodes_active,
        totals: st.cluster_meters.totals(),
    }
}

pub(super) fn stats_json(s: &Stats) -> serde_json::Value {
    serde_json::json!({
        "hits": s.hits,
        "misses": s.misses,
        "partial_hits": s.partial_hits,
        "bytes_read": s.bytes_read,
        "bytes_written": s.bytes_written,
        "evictions": s.evictions,
        "entry_count": s.entry_count,
        "size_bytes": s.size_bytes,
        "capacity_bytes": s.capacity_bytes,
        "hit_rate_percent": s.hit_rate_percent(),
    })
}

fn avg_ms((us, n): (u64, u64)) -> f64 {
    if n == 0 {
        0.0
    } else {
        us as f64 / n as f64 / 1000.0
    }
}

/// The JSON `/metrics` (spec section 3.4's fields), from the same
/// counters as the Prometheus text. The `cluster` block adds to
/// ElCache's four fields the gossip packets, forwarded requests and
/// fall-over reads.
pub(super) fn metrics_json(s: &Stats, uptime: u64, c: &ClusterBlock) -> serde_json::Value {
    let t = &c.totals;
    serde_json::json!({
        "cache": {
            "hits": s.hits,
            "misses": s.misses,
            "partial_hits": s.partial_hits,
            "gets": s.gets,
            "puts": s.puts,
            "deletes": s.deletes,
            "bytes_read": s.bytes_read,
            "bytes_written": s.bytes_written,
        },
        "memory_cache": {
            "size_bytes": s.memory.size_bytes,
            "capacity_bytes": s.memory.capacity_bytes,
            "entries": s.memory.entries,
            "evictions": s.memory.evictions,
            "hits": s.memory.hits,
            "misses": s.memory.misses,
            "chunks": s.memory.chunks,
        },
        "disk_cache": {
            "size_bytes": s.disk.size_bytes,
            "capacity_bytes": s.disk.capacity_bytes,
            "entries": s.disk.entries,
            "evictions": s.disk.evictions,
            "hits": s.disk.hits,
            "misses": s.disk.misses,
            "chunks": s.disk.chunks,
            "chunks_read": s.chunks_read,
            "chunks_written": s.chunks_written,
            "corrupt_chunks": s.corrupt,
            "errors": s.disk_errors,
        },
        "cluster": {
            "nodes_total": c.nodes_total,
            "nodes_active": c.nodes_active,
            "messages_sent": t.messages_sent,
            "messages_received": t.messages_received,
            "gossip_packets_sent": t.gossip_sent,
            "gossip_packets_received": t.gossip_received,
            "forwarded_requests": t.forwarded,
            "fallover_reads": t.fallovers,
        },
        "http": {
            "requests": s.http_requests,
            "errors": s.http_errors,
            "connections_active": s.connections,
        },
        "latency_ms": {
            "get_avg": avg_ms(s.get_us),
            "put_avg": avg_ms(s.put_us),
        },
        "uptime_seconds": uptime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_block_carries_its_figures() {
        let c = ClusterBlock {
            nodes_total: 3,
            nodes_active: 2,
            totals: ClusterTotals {
                messages_sent: 7,
                messages_received: 6,
                gossip_sent: 5,
                gossip_received: 4,
                forwarded: 3,
                fallovers: 1,
            },
        };
        let j = metrics_json(&Stats::default(), 9, &c);
        let cl = &j["cluster"];
        for (k, v) in [
            ("nodes_total", 3),
            ("nodes_active", 2),
            ("messages_sent", 7),
            ("messages_received", 6),
            ("gossip_packets_sent", 5),
            ("gossip_packets_received", 4),
            ("forwarded_requests", 3),
            ("fallover_reads", 1),
        ] {
            assert_eq!(cl[k], v, "{k}: {j}");
        }
        assert_eq!(j["uptime_seconds"], 9);
    }
}
