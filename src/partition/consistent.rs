use super::{Builtin, Partitioner, hash_key, mix};
use std::sync::Arc;

/// A consistent-hash ring with virtual nodes: when a worker is added to a
/// ring of `n`, only about `1/(n+1)` of the keys move, all of them to the new
/// worker.
///
/// Each worker owns `virtual_nodes` points on a 64-bit ring; a key belongs to
/// the owner of the first point at or after its mixed routing key. More
/// virtual nodes give better balance (about `1/sqrt(virtual_nodes)` relative
/// spread) at the cost of a larger table and a deeper binary search.
///
/// ```
/// use shared_nothing::partition::{ConsistentHashPartitioner, Partitioner, hash_key};
/// let ring = ConsistentHashPartitioner::new(4, 128);
/// let grown = ring.with_workers(5);
/// let k = hash_key("session-9");
/// let (before, after) = (ring.partition(k, 4), grown.partition(k, 5));
/// assert!(before == after || after == 4);
/// ```
#[derive(Debug, Clone)]
pub struct ConsistentHashPartitioner {
    /// Sorted by point; shared with the senders that route by it inline.
    points: Arc<[(u64, u32)]>,
    workers: usize,
    virtual_nodes: usize,
}

impl ConsistentHashPartitioner {
    /// A ring for `workers` workers (at least 1) with `virtual_nodes` points
    /// each (at least 1).
    pub fn new(workers: usize, virtual_nodes: usize) -> Self {
        let workers = workers.clamp(1, u32::MAX as usize);
        let virtual_nodes = virtual_nodes.max(1);
        let mut points: Vec<(u64, u32)> = (0..workers as u32)
            .flat_map(|w| (0..virtual_nodes as u64).map(move |v| (hash_key(&(w, v)), w)))
            .collect();
        points.sort_unstable();
        Self {
            points: points.into(),
            workers,
            virtual_nodes,
        }
    }

    /// The same ring with a different worker count; points of the workers
    /// both rings share are identical, which is what keeps movement minimal.
    pub fn with_workers(&self, workers: usize) -> Self {
        Self::new(workers, self.virtual_nodes)
    }

    /// Workers on the ring.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Virtual nodes per worker.
    pub fn virtual_nodes(&self) -> usize {
        self.virtual_nodes
    }
}

/// The worker owning `key` on the ring `points` (sorted, never empty),
/// among `num_workers`: the rule of [`ConsistentHashPartitioner`], also
/// applied inline by senders.
#[inline]
pub(crate) fn route(points: &[(u64, u32)], key: u64, num_workers: usize) -> usize {
    let k = mix(key);
    let i = points.partition_point(|&(p, _)| p < k);
    let w = points
        .get(if i == points.len() { 0 } else { i })
        .map_or(0, |&(_, w)| w as usize);
    // The pool refuses a ring built for another worker count (see
    // `expected_workers`); this keeps direct callers in range regardless.
    if w < num_workers {
        w
    } else {
        w % num_workers.max(1)
    }
}

impl Partitioner for ConsistentHashPartitioner {
    fn partition(&self, key: u64, num_workers: usize) -> usize {
        route(&self.points, key, num_workers)
    }

    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::Consistent(self.points.clone()))
    }

    fn expected_workers(&self) -> Option<usize> {
        Some(self.workers)
    }

    fn name(&self) -> &'static str {
        "consistent-hash"
    }
}
