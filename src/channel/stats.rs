//! Channel statistics.

/// A snapshot of a channel's counters.
///
/// Counters are derived from state the channel keeps anyway (ring indices,
/// queue length, one receiver-side counter), so keeping them costs the hot
/// path nothing or one uncontended store. Like every lock-free snapshot it may
/// be stale by the time it is read.
///
/// ```
/// use shared_nothing::channel::Channel;
/// let (mut tx, mut rx) = Channel::spsc::<u32>(8);
/// tx.send(1).unwrap();
/// assert_eq!(tx.stats().sent, 1);
/// rx.recv().unwrap();
/// assert_eq!(rx.stats().received, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Messages accepted by the channel.
    pub sent: u64,
    /// Messages taken out of the channel.
    pub received: u64,
    /// Messages queued now.
    pub len: usize,
    /// Bound, or `None` for unbounded channels.
    pub capacity: Option<usize>,
}
