use super::{Partitioner, mix, reduce};
use std::hash::Hash;
use std::sync::OnceLock;

/// Seeds for the routing hash. Fixed, so the mapping from key to worker does
/// not change between processes or restarts (the store and the broker persist
/// data per worker and depend on this). ahash's output may still differ
/// between ahash versions and target CPU features (AES-NI or not): a build
/// that changes either must treat partitioned data as re-partitioned.
const SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// The routing key of `key`: ahash with fixed seeds.
///
/// ```
/// use shared_nothing::partition::hash_key;
/// assert_eq!(hash_key("a"), hash_key("a"));
/// assert_ne!(hash_key("a"), hash_key("b"));
/// ```
#[inline]
pub fn hash_key<K: Hash + ?Sized>(key: &K) -> u64 {
    // Built once: deriving the hasher's keys from the seeds is not free, and
    // this runs on every partitioned send.
    static STATE: OnceLock<ahash::RandomState> = OnceLock::new();
    STATE
        .get_or_init(|| ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]))
        .hash_one(key)
}

/// Same key, same worker: mixes the routing key and reduces it onto the
/// worker range. Keys spread uniformly (see the balance test).
///
/// ```
/// use shared_nothing::partition::{HashPartitioner, Partitioner};
/// let p = HashPartitioner::new();
/// assert_eq!(p.partition(7, 4), p.partition(7, 4));
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct HashPartitioner;

impl HashPartitioner {
    /// A hash partitioner.
    pub fn new() -> Self {
        Self
    }
}

impl Partitioner for HashPartitioner {
    #[inline]
    fn partition(&self, key: u64, num_workers: usize) -> usize {
        route(key, num_workers)
    }

    fn name(&self) -> &'static str {
        "hash"
    }

    fn builtin(&self) -> Option<super::Builtin> {
        Some(super::Builtin::Hash)
    }
}

/// The hash rule itself (shared with the senders' inline route).
#[inline(always)]
pub(crate) fn route(key: u64, num_workers: usize) -> usize {
    reduce(mix(key), num_workers.max(1))
}
