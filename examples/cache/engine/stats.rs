//! The engine's figures: [`Stats`] per worker, [`TierStats`] per tier,
//! and the gauges [`Engine::publish`] sets.

use super::Engine;

/// One tier's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: u64,
    pub size_bytes: u64,
    pub capacity_bytes: u64,
    pub chunks: u64,
}

impl TierStats {
    fn add(&mut self, o: &TierStats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.evictions += o.evictions;
        self.entries += o.entries;
        self.size_bytes += o.size_bytes;
        self.capacity_bytes += o.capacity_bytes;
        self.chunks += o.chunks;
    }
}

/// What `/stats` and `/metrics` report for one worker (summed over
/// workers). The ElCache fields are the two tiers summed, as ElCache
/// sums them: a key held in both counts twice, and a memory miss
/// followed by a disk hit counts one of each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub partial_hits: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Chunks evicted from either tier.
    pub evictions: u64,
    pub entry_count: u64,
    pub size_bytes: u64,
    pub capacity_bytes: u64,
    pub chunk_count: u64,
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub memory: TierStats,
    pub disk: TierStats,
    pub chunks_read: u64,
    pub chunks_written: u64,
    pub corrupt: u64,
    pub disk_errors: u64,
    /// The HTTP fronts' figures (filled by the server, not the engine).
    pub http_requests: u64,
    pub http_errors: u64,
    pub connections: u64,
    /// HTTP GET and PUT latency: (sum in us, count).
    pub get_us: (u64, u64),
    pub put_us: (u64, u64),
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.partial_hits += o.partial_hits;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.evictions += o.evictions;
        self.entry_count += o.entry_count;
        self.size_bytes += o.size_bytes;
        self.capacity_bytes += o.capacity_bytes;
        self.chunk_count += o.chunk_count;
        self.gets += o.gets;
        self.puts += o.puts;
        self.deletes += o.deletes;
        self.memory.add(&o.memory);
        self.disk.add(&o.disk);
        self.chunks_read += o.chunks_read;
        self.chunks_written += o.chunks_written;
        self.corrupt += o.corrupt;
        self.disk_errors += o.disk_errors;
        self.http_requests += o.http_requests;
        self.http_errors += o.http_errors;
        self.connections += o.connections;
        self.get_us.0 += o.get_us.0;
        self.get_us.1 += o.get_us.1;
        self.put_us.0 += o.put_us.0;
        self.put_us.1 += o.put_us.1;
    }

    /// hits / (hits + misses) x 100, 0 with no reads.
    pub fn hit_rate_percent(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 * 100.0 / reads as f64
        }
    }
}

impl Engine {
    /// Sets the gauges from the current state (after each message).
    pub fn publish(&self) {
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.m.mem_size.set(g(self.arc.resident_bytes()));
        self.m.mem_capacity.set(g(self.arc.capacity()));
        self.m.mem_entries.set(g(self.mem_entries));
        self.m.mem_chunks.set(g(
            self.chunks.values().filter(|c| c.mem.is_some()).count() as u64
        ));
        if let Some(d) = &self.disk {
            self.m.disk_size.set(g(d.arc.resident_bytes()));
            self.m.disk_capacity.set(g(d.arc.capacity()));
            self.m.disk_entries.set(g(d.entries));
            self.m.disk_chunks.set(g(d.arc.resident_len() as u64));
        }
    }

    /// The counters, with the gauges filled in.
    pub fn stats(&self) -> Stats {
        let m = &self.m;
        let memory = TierStats {
            hits: m.mem_hits.get(),
            misses: m.mem_misses.get(),
            evictions: m.mem_evictions.get(),
            entries: self.mem_entries,
            size_bytes: self.arc.resident_bytes(),
            capacity_bytes: self.arc.capacity(),
            chunks: self.chunks.values().filter(|c| c.mem.is_some()).count() as u64,
        };
        let disk = self
            .disk
            .as_ref()
            .map_or_else(TierStats::default, |d| TierStats {
                hits: m.disk_hits.get(),
                misses: m.disk_misses.get(),
                evictions: m.disk_evictions.get(),
                entries: d.entries,
                size_bytes: d.arc.resident_bytes(),
                capacity_bytes: d.arc.capacity(),
                chunks: d.arc.resident_len() as u64,
            });
        Stats {
            hits: memory.hits + disk.hits,
            misses: memory.misses + disk.misses,
            partial_hits: m.partial_hits.get(),
            bytes_read: m.bytes_read.get(),
            bytes_written: m.bytes_written.get(),
            evictions: memory.evictions + disk.evictions,
            entry_count: memory.entries + disk.entries,
            size_bytes: memory.size_bytes + disk.size_bytes,
            capacity_bytes: memory.capacity_bytes + disk.capacity_bytes,
            chunk_count: self.chunks.len() as u64,
            gets: m.gets.get(),
            puts: m.puts.get(),
            deletes: m.deletes.get(),
            memory,
            disk,
            chunks_read: m.chunks_read.get(),
            chunks_written: m.chunks_written.get(),
            corrupt: m.corrupt.get(),
            disk_errors: m.disk_errors.get(),
            ..Stats::default()
        }
    }
}
