use super::Partitioner;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Spreads messages evenly regardless of key.
///
/// One shared counter: threads that share the partitioner contend on it. The
/// pool gives each sending handle its own cursor instead when it sees a
/// round-robin partitioner, so this counter only serves direct callers.
///
/// ```
/// use shared_nothing::partition::{RoundRobinPartitioner, Partitioner};
/// let p = RoundRobinPartitioner::new();
/// let picks: Vec<usize> = (0..4).map(|_| p.partition(0, 2)).collect();
/// assert_eq!(picks, vec![0, 1, 0, 1]);
/// ```
#[derive(Debug, Default)]
pub struct RoundRobinPartitioner {
    next: AtomicUsize,
}

impl RoundRobinPartitioner {
    /// A round-robin partitioner starting at worker 0.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(&self, _key: u64, num_workers: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % num_workers.max(1)
    }

    fn name(&self) -> &'static str {
        "round-robin"
    }
}
