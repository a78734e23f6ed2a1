//! Partitioners: which worker gets a message.
//!
//! A partitioner maps a 64-bit *routing key* to a worker index. The pool
//! derives the routing key from a user key with [`hash_key`] (fixed-key
//! ahash, so a key maps to the same worker in every process and after every
//! restart of the same build), or takes a raw `u64` from the caller when the
//! order of keys matters (range partitioning).
//!
//! | partitioner | use when |
//! |---|---|
//! | [`HashPartitioner`] | the same key must always reach the same worker |
//! | [`ConsistentHashPartitioner`] | workers are added or removed and few keys may move |
//! | [`RangePartitioner`] | keys are ordered and ranges must stay together |
//! | [`RoundRobinPartitioner`] | any worker will do; spread evenly |
//! | [`CustomPartitioner`] | your own rule |
//!
//! Partitioners are pure functions of their input (round-robin aside) and
//! never read hardware state, so they are tested exhaustively on their own.

mod consistent;
mod custom;
mod hash;
mod range;
mod round_robin;

pub use consistent::ConsistentHashPartitioner;
pub use custom::CustomPartitioner;
pub use hash::{HashPartitioner, hash_key};
pub use range::RangePartitioner;
pub use round_robin::RoundRobinPartitioner;

/// Maps a routing key to a worker index.
///
/// Implementations must return a value in `0..num_workers` for every input
/// (`num_workers` is at least 1); the pool checks and rejects anything else
/// with a typed error rather than panicking.
///
/// ```
/// use shared_nothing::partition::{Partitioner, HashPartitioner, hash_key};
/// let p = HashPartitioner::new();
/// let w = p.partition(hash_key("user-42"), 8);
/// assert!(w < 8);
/// assert_eq!(w, p.partition(hash_key("user-42"), 8));
/// ```
pub trait Partitioner: Send + Sync + 'static {
    /// The worker for `key`, in `0..num_workers`.
    fn partition(&self, key: u64, num_workers: usize) -> usize;

    /// The worker count this partitioner was built for, if it was built for
    /// one (a consistent-hash ring is); the pool refuses a mismatch.
    fn expected_workers(&self) -> Option<usize> {
        None
    }

    /// A short name for diagnostics.
    fn name(&self) -> &'static str {
        "custom"
    }

    /// Which built-in rule this is, so a sender can route without a
    /// virtual call (and keep a round-robin cursor of its own). Only the
    /// crate's own partitioners return `Some`.
    #[doc(hidden)]
    fn builtin(&self) -> Option<Builtin> {
        None
    }
}

/// The built-in rules a sender applies inline (see [`Partitioner::builtin`]),
/// with the tables they route by.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Builtin {
    /// [`HashPartitioner`].
    Hash,
    /// [`RoundRobinPartitioner`].
    RoundRobin,
    /// [`RangePartitioner`], by its upper bounds.
    Range(std::sync::Arc<[u64]>),
    /// [`ConsistentHashPartitioner`], by its ring's points.
    Consistent(std::sync::Arc<[(u64, u32)]>),
}

/// A sender's routing rule: the built-in ones inline, anything else
/// through the trait object. Round robin keeps its cursor per sender, so
/// senders never share a counter.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    Hash,
    RoundRobin { next: usize },
    Range(std::sync::Arc<[u64]>),
    Consistent(std::sync::Arc<[(u64, u32)]>),
    Dyn,
}

impl Route {
    pub(crate) fn of(p: &dyn Partitioner) -> Self {
        match p.builtin() {
            Some(Builtin::Hash) => Route::Hash,
            Some(Builtin::RoundRobin) => Route::RoundRobin { next: 0 },
            Some(Builtin::Range(bounds)) => Route::Range(bounds),
            Some(Builtin::Consistent(points)) => Route::Consistent(points),
            None => Route::Dyn,
        }
    }

    /// The worker for `key` among `n` (at least 1): `p` is consulted only
    /// for `Dyn`.
    #[inline(always)]
    pub(crate) fn pick(&mut self, p: &dyn Partitioner, key: u64, n: usize) -> usize {
        match self {
            Route::Hash => hash::route(key, n),
            Route::RoundRobin { next } => {
                let i = *next % n.max(1);
                *next = i + 1;
                i
            }
            Route::Range(bounds) => range::route(bounds, key, n),
            Route::Consistent(points) => consistent::route(points, key, n),
            Route::Dyn => p.partition(key, n),
        }
    }
}

/// Maps a well-mixed 64-bit value onto `0..n` without division (Lemire's
/// multiply-shift range reduction): uniform when the input is uniform.
#[inline]
pub(crate) fn reduce(mixed: u64, n: usize) -> usize {
    ((u128::from(mixed) * n as u128) >> 64) as usize
}

/// A 64-bit finaliser (splitmix64's): turns structured inputs, such as
/// sequential integers, into uniformly spread values. Bijective.
#[inline]
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests;
