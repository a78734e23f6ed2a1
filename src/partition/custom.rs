use super::Partitioner;
use std::fmt;

/// A partitioner from a closure `(routing_key, num_workers) -> worker`.
///
/// The pool checks the result and returns a typed error (with the message
/// handed back) if it is out of range.
///
/// ```
/// use shared_nothing::partition::{CustomPartitioner, Partitioner};
/// let p = CustomPartitioner::new(|hash, n| (hash % n as u64) as usize);
/// assert_eq!(p.partition(10, 4), 2);
/// ```
pub struct CustomPartitioner<F> {
    f: F,
}

impl<F> CustomPartitioner<F>
where
    F: Fn(u64, usize) -> usize + Send + Sync + 'static,
{
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> fmt::Debug for CustomPartitioner<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomPartitioner")
    }
}

impl<F> Partitioner for CustomPartitioner<F>
where
    F: Fn(u64, usize) -> usize + Send + Sync + 'static,
{
    fn partition(&self, key: u64, num_workers: usize) -> usize {
        (self.f)(key, num_workers)
    }
}
