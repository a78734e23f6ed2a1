//! The envelope around every message a worker receives.

use super::reply::{ReplyError, ReplyTo};
use std::time::Instant;

/// A message plus what the worker may need to know about it.
///
/// Only the payload crosses the ring into the worker; the routing key (when
/// the worker asked for it), the send time (tracing) and the reply slot
/// travel beside it in the sender's metadata lane (`mailbox.rs`), and the
/// worker puts the envelope together when it takes the message.
///
/// ```
/// use shared_nothing::worker::Envelope;
/// let e = Envelope::new("hello");
/// assert_eq!(e.payload, "hello");
/// assert!(!e.is_request());
/// assert_eq!(e.key_hash(), None);
/// ```
///
/// `R` is the worker's [`Reply`](super::Worker::Reply) type: the only type
/// [`reply`](Self::reply) accepts.
#[derive(Debug)]
pub struct Envelope<M, R = ()> {
    /// The message itself.
    pub payload: M,
    seq: u64,
    key: Option<u64>,
    extras: Option<Box<Extras<R>>>,
}

#[derive(Debug)]
pub(crate) struct Extras<R> {
    sent_at: Option<Instant>,
    reply: Option<ReplyTo<R>>,
}

impl<R> Default for Extras<R> {
    fn default() -> Self {
        Self {
            sent_at: None,
            reply: None,
        }
    }
}

impl<M> Envelope<M> {
    /// Wraps a payload with no metadata (and no reply slot).
    pub fn new(payload: M) -> Self {
        Self {
            payload,
            seq: 0,
            key: None,
            extras: None,
        }
    }
}

impl<M, R> Envelope<M, R> {
    /// This message's position in the worker's receive order (0, 1, 2, ...),
    /// restarting from 0 only when the worker thread starts, not on restart.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The routing key if the message was sent with `send_partitioned`
    /// (the key's hash) or `send_by_value` (the value) to a worker that
    /// asked for routing keys
    /// ([`WorkerConfig::with_routing_keys`](super::WorkerConfig::with_routing_keys));
    /// `None` otherwise, so a plain message's slot holds its payload alone.
    pub fn key_hash(&self) -> Option<u64> {
        self.key
    }

    /// When the message was sent, if the worker has tracing on.
    pub fn sent_at(&self) -> Option<Instant> {
        self.extras.as_ref().and_then(|e| e.sent_at)
    }

    /// Whether the sender is waiting for a reply.
    pub fn is_request(&self) -> bool {
        self.extras.as_ref().is_some_and(|e| e.reply.is_some())
    }

    /// Answers the request this envelope carries.
    ///
    /// # Errors
    /// `NoReplySlot` if this is not a request or it was already answered;
    /// `CallerGone` if the caller stopped waiting.
    pub fn reply(&mut self, value: R) -> Result<(), ReplyError> {
        self.take_reply()
            .ok_or(ReplyError::NoReplySlot)?
            .send(value)
    }

    /// Takes the reply slot, to answer later (for example after an I/O
    /// completion).
    pub fn take_reply(&mut self) -> Option<ReplyTo<R>> {
        self.extras.as_mut().and_then(|e| e.reply.take())
    }

    /// The payload, discarding the metadata.
    pub fn into_payload(self) -> M {
        self.payload
    }
}

/// A message on its way in, as the sender builds it: the payload, which the
/// ring's slot takes, and the metadata, which goes into the lane beside the
/// ring only when there is some (see `mailbox.rs`). The worker assigns the
/// sequence number on receipt.
#[derive(Debug)]
pub(crate) struct Wire<M, R = ()> {
    payload: M,
    key: Option<u64>,
    extras: Option<Box<Extras<R>>>,
}

/// What a message carries besides its payload, when it carries anything:
/// one entry of a metadata lane.
#[derive(Debug)]
pub(crate) struct Meta<R> {
    key: Option<u64>,
    extras: Option<Box<Extras<R>>>,
}

impl<M, R> Wire<M, R> {
    #[inline]
    pub(crate) fn new(payload: M, key: Option<u64>) -> Self {
        Self {
            payload,
            key,
            extras: None,
        }
    }

    /// Stamped with the send time if `tracing` is on.
    #[inline]
    pub(crate) fn build(payload: M, key: Option<u64>, tracing: bool) -> Self {
        if tracing {
            Self::traced(payload, key, Instant::now())
        } else {
            Self::new(payload, key)
        }
    }

    /// Stamped with the send time (tracing on).
    pub(crate) fn traced(payload: M, key: Option<u64>, sent_at: Instant) -> Self {
        Self {
            payload,
            key,
            extras: Some(Box::new(Extras {
                sent_at: Some(sent_at),
                reply: None,
            })),
        }
    }

    pub(crate) fn with_reply(mut self, reply: ReplyTo<R>) -> Self {
        self.extras.get_or_insert_with(Default::default).reply = Some(reply);
        self
    }

    pub(crate) fn into_payload(self) -> M {
        self.payload
    }

    /// The payload and, if the message has any, its metadata.
    #[inline(always)]
    pub(crate) fn split(self) -> (M, Option<Meta<R>>) {
        let meta = if self.key.is_none() && self.extras.is_none() {
            None
        } else {
            Some(Meta {
                key: self.key,
                extras: self.extras,
            })
        };
        (self.payload, meta)
    }

    /// The inverse of [`Wire::split`].
    pub(crate) fn join(payload: M, meta: Option<Meta<R>>) -> Self {
        match meta {
            Some(Meta { key, extras }) => Self {
                payload,
                key,
                extras,
            },
            None => Self::new(payload, None),
        }
    }
}

impl<M, R> Envelope<M, R> {
    /// The envelope a worker hands its handler: the payload from the ring,
    /// the metadata from the lane (if the message had any).
    #[inline(always)]
    pub(crate) fn assemble(payload: M, seq: u64, meta: Option<Meta<R>>) -> Self {
        match meta {
            None => Self {
                payload,
                seq,
                key: None,
                extras: None,
            },
            Some(Meta { key, extras }) => Self {
                payload,
                seq,
                key,
                extras,
            },
        }
    }
}

impl<R> Meta<R> {
    /// The routing key it carries (for the loom models and tests).
    #[cfg(any(test, loom))]
    pub(crate) fn key(&self) -> Option<u64> {
        self.key
    }
}
