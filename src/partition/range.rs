use super::{Builtin, Partitioner};
use std::sync::Arc;

/// Ordered ranges of routing keys, one per worker: worker `i` owns keys below
/// `bounds[i]` and at or above `bounds[i-1]`; the last worker owns the rest.
///
/// Use it with raw `u64` keys (`send_by_value`) when neighbouring keys should
/// land together, or with [`RangePartitioner::uniform`] to split the hash
/// space into equal contiguous slices.
///
/// ```
/// use shared_nothing::partition::{RangePartitioner, Partitioner};
/// let p = RangePartitioner::with_bounds(vec![100, 200]).unwrap();
/// assert_eq!(p.partition(5, 3), 0);
/// assert_eq!(p.partition(150, 3), 1);
/// assert_eq!(p.partition(9_999, 3), 2);
/// ```
#[derive(Debug, Clone)]
pub struct RangePartitioner {
    /// Shared with the senders that route by it inline.
    bounds: Arc<[u64]>,
}

impl RangePartitioner {
    /// Ranges with the given upper bounds (exclusive), strictly increasing;
    /// `bounds.len() + 1` workers.
    ///
    /// # Errors
    /// `InvalidConfig` if the bounds are not strictly increasing.
    pub fn with_bounds(bounds: Vec<u64>) -> crate::Result<Self> {
        if bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(crate::Error::InvalidConfig(
                "range bounds must be strictly increasing".into(),
            ));
        }
        Ok(Self {
            bounds: bounds.into(),
        })
    }

    /// `workers` equal slices of the 64-bit key space.
    pub fn uniform(workers: usize) -> Self {
        let workers = workers.max(1) as u128;
        let span = (u64::MAX as u128 + 1) / workers;
        let bounds = (1..workers).map(|i| (span * i) as u64).collect();
        Self { bounds }
    }

    /// The upper bounds.
    pub fn bounds(&self) -> &[u64] {
        &self.bounds
    }
}

/// The worker owning `key` under `bounds`, among `num_workers`: the rule of
/// [`RangePartitioner`], also applied inline by senders.
#[inline]
pub(crate) fn route(bounds: &[u64], key: u64, num_workers: usize) -> usize {
    let i = bounds.partition_point(|&b| b <= key);
    i.min(num_workers.max(1) - 1)
}

impl Partitioner for RangePartitioner {
    fn partition(&self, key: u64, num_workers: usize) -> usize {
        route(&self.bounds, key, num_workers)
    }

    fn expected_workers(&self) -> Option<usize> {
        Some(self.bounds.len() + 1)
    }

    fn name(&self) -> &'static str {
        "range"
    }

    fn builtin(&self) -> Option<Builtin> {
        Some(Builtin::Range(self.bounds.clone()))
    }
}
