//! The envelope around every message a worker receives.

use super::reply::{ReplyError, ReplyTo};
use std::time::Instant;

/// A message plus what the worker may need to know about it.
///
/// The common case (no reply slot, no tracing) carries only the payload, the
/// sequence number and the routing key: the rarely used fields live behind
/// one optional box, so a ring slot stays small.
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
struct Extras<R> {
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
    /// (the key's hash) or `send_by_value` (the value).
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

/// What a ring slot carries: an envelope without its sequence number, which
/// the worker assigns on receipt. Every byte here crosses between cores.
#[derive(Debug)]
pub(crate) struct Wire<M, R = ()> {
    payload: M,
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

    #[inline]
    pub(crate) fn into_envelope(self, seq: u64) -> Envelope<M, R> {
        Envelope {
            payload: self.payload,
            seq,
            key: self.key,
            extras: self.extras,
        }
    }
}
