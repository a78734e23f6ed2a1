//! Channels: SPSC, MPSC and MPMC, bounded and unbounded.
//!
//! | constructor | flavour | backing |
//! |---|---|---|
//! | [`Channel::spsc`] | one producer, one consumer, bounded | this crate's lock-free ring |
//! | [`Channel::spsc_unbounded`] | one producer, one consumer | crossbeam list |
//! | [`Channel::mpsc`] / [`Channel::mpsc_unbounded`] | many producers, one consumer | crossbeam |
//! | [`Channel::mpmc`] / [`Channel::mpmc_unbounded`] | many producers, many consumers | crossbeam |
//!
//! Choose SPSC whenever ownership allows: it is the fastest by a wide margin
//! because its hot path has no read-modify-write instruction. Worker inboxes
//! and the pool's routing mesh are built from SPSC rings.
//!
//! Every flavour offers blocking, non-blocking and timeout sends and
//! receives, batch operations, typed errors that hand the message back, and
//! [`ChannelStats`].
//!
//! ```
//! use shared_nothing::channel::Channel;
//! let (mut tx, mut rx) = Channel::spsc::<u64>(1024);
//! tx.send(42).unwrap();
//! assert_eq!(rx.recv().unwrap(), 42);
//! ```

mod error;
mod multi;
pub(crate) mod ring;
pub mod spsc;
mod stats;
pub(crate) mod wait;

pub use error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
pub use stats::ChannelStats;

/// Multi-producer single-consumer channels.
pub mod mpsc {
    pub use super::multi::Sender;
    /// The receiving half of an MPSC channel (not `Clone`).
    pub type Receiver<T> = super::multi::Receiver<T, super::multi::Single>;
}

/// Multi-producer multi-consumer channels.
pub mod mpmc {
    pub use super::multi::Sender;
    /// The receiving half of an MPMC channel (`Clone`).
    pub type Receiver<T> = super::multi::Receiver<T, super::multi::Shared>;
}

pub use multi::{Shared, Single};

/// Constructors for every channel flavour.
#[derive(Debug)]
pub struct Channel;

impl Channel {
    /// A bounded SPSC channel holding exactly `capacity` messages (at least 1).
    ///
    /// ```
    /// use shared_nothing::channel::Channel;
    /// let (mut tx, mut rx) = Channel::spsc::<&str>(2);
    /// tx.send("a").unwrap();
    /// assert_eq!(rx.try_recv(), Ok("a"));
    /// ```
    pub fn spsc<T>(capacity: usize) -> (spsc::Sender<T>, spsc::Receiver<T>) {
        spsc::bounded(capacity)
    }

    /// An unbounded SPSC channel.
    pub fn spsc_unbounded<T>() -> (spsc::Sender<T>, spsc::Receiver<T>) {
        spsc::unbounded()
    }

    /// A bounded MPSC channel (capacity at least 1).
    ///
    /// ```
    /// use shared_nothing::channel::Channel;
    /// let (tx, rx) = Channel::mpsc::<u8>(4);
    /// tx.clone().send(1).unwrap();
    /// assert_eq!(rx.recv(), Ok(1));
    /// ```
    pub fn mpsc<T>(capacity: usize) -> (mpsc::Sender<T>, mpsc::Receiver<T>) {
        multi::channel(Some(capacity))
    }

    /// An unbounded MPSC channel.
    pub fn mpsc_unbounded<T>() -> (mpsc::Sender<T>, mpsc::Receiver<T>) {
        multi::channel(None)
    }

    /// A bounded MPMC channel (capacity at least 1).
    ///
    /// ```
    /// use shared_nothing::channel::Channel;
    /// let (tx, rx) = Channel::mpmc::<u8>(4);
    /// let rx2 = rx.clone();
    /// tx.send(1).unwrap();
    /// assert_eq!(rx2.recv(), Ok(1));
    /// ```
    pub fn mpmc<T>(capacity: usize) -> (mpmc::Sender<T>, mpmc::Receiver<T>) {
        multi::channel(Some(capacity))
    }

    /// An unbounded MPMC channel.
    pub fn mpmc_unbounded<T>() -> (mpmc::Sender<T>, mpmc::Receiver<T>) {
        multi::channel(None)
    }
}
