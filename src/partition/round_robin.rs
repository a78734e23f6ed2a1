use super::Partitioner;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Spreads messages evenly regardless of key.
///
/// One shared counter: threads that share the partitioner contend on it. A
/// pool's sending handles (`PoolSender`) each keep their own cursor instead,
/// so this counter only serves direct callers and `PoolSender::route`.
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

    fn builtin(&self) -> Option<super::Builtin> {
        Some(super::Builtin::RoundRobin)
    }
}
