//! The `/stats` and JSON `/metrics` bodies.

use crate::engine::Stats;

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
/// counters as the Prometheus text.
pub(super) fn metrics_json(s: &Stats, uptime: u64) -> serde_json::Value {
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
            "nodes_total": 1,
            "nodes_active": 1,
            "messages_sent": 0,
            "messages_received": 0,
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
