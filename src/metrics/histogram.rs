//! A latency histogram with one writing thread: power-of-two buckets of
//! nanoseconds, each a [`LocalCounter`], so recording a value is three
//! relaxed load/store pairs and no read-modify-write.

use super::LocalCounter;

/// Buckets, the last one unbounded.
pub const BUCKETS: usize = 24;
/// The first bucket's upper bound is `2^FIRST_SHIFT` ns (256 ns); each next
/// one doubles it, up to about 1.07 s, then `+Inf`.
const FIRST_SHIFT: u32 = 8;

/// A histogram of durations in nanoseconds, written by one thread.
///
/// ```
/// use shared_nothing::metrics::LocalHistogram;
/// let h = LocalHistogram::new();
/// h.record(100);
/// h.record(1_000);
/// h.record(10_000_000_000);
/// let s = h.snapshot();
/// assert_eq!(s.count, 3);
/// assert_eq!(s.buckets[0], (256e-9, 1)); // at most 256 ns
/// assert_eq!(s.buckets.last().unwrap().1, 1); // past every bound
/// ```
#[derive(Debug)]
pub struct LocalHistogram {
    buckets: [LocalCounter; BUCKETS],
    sum_ns: LocalCounter,
}

impl Default for LocalHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// What a [`LocalHistogram`] held when read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, values in this bucket)`, not cumulative;
    /// the last bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// Values recorded (the sum of the buckets, so the two always agree).
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

impl LocalHistogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            buckets: [const { LocalCounter::new() }; BUCKETS],
            sum_ns: LocalCounter::new(),
        }
    }

    /// The bucket of `ns`: the first whose upper bound is at least `ns`.
    #[inline]
    fn bucket(ns: u64) -> usize {
        let ceil_log2 = 64 - ns.saturating_sub(1).leading_zeros();
        (ceil_log2.saturating_sub(FIRST_SHIFT) as usize).min(BUCKETS - 1)
    }

    /// Records one value. Only one thread may call this (as
    /// [`LocalCounter::add`]).
    #[inline]
    pub fn record(&self, ns: u64) {
        self.buckets[Self::bucket(ns)].add(1);
        self.sum_ns.add(ns);
    }

    /// The counts so far (a reader racing the writer may see a value in
    /// its bucket before its sum, never a torn count).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let bound = if i == BUCKETS - 1 {
                    f64::INFINITY
                } else {
                    (1u64 << (FIRST_SHIFT as usize + i)) as f64 * 1e-9
                };
                (bound, c.get())
            })
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|b| b.1).sum(),
            sum_seconds: self.sum_ns.get() as f64 * 1e-9,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_lands_in_the_first_bucket_whose_bound_holds_it() {
        assert_eq!(LocalHistogram::bucket(0), 0);
        assert_eq!(LocalHistogram::bucket(256), 0);
        assert_eq!(LocalHistogram::bucket(257), 1);
        assert_eq!(LocalHistogram::bucket(512), 1);
        assert_eq!(LocalHistogram::bucket(513), 2);
        assert_eq!(LocalHistogram::bucket(u64::MAX), BUCKETS - 1);
        let h = LocalHistogram::new();
        for ns in [1, 300, 300, 1 << 29, 1 << 31] {
            h.record(ns);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets[1].1, 2, "300 ns is at most 512 ns");
        // 2^29 ns is the bound of bucket 21; 2^31 is past the last bound.
        assert_eq!(s.buckets[21], ((1u64 << 29) as f64 * 1e-9, 1));
        assert_eq!(s.buckets[BUCKETS - 1], (f64::INFINITY, 1));
        let want = (1 + 600 + (1u64 << 29) + (1u64 << 31)) as f64 * 1e-9;
        assert!((s.sum_seconds - want).abs() < 1e-12);
    }
}
