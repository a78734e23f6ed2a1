//! The state behind the service: per-key counters, each key owned by one
//! worker (the key's partition), so a counter is never shared.

use shared_nothing::prelude::*;
use shared_nothing::worker::ReplyError;
use std::collections::HashMap;

/// What a request asks of the key's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// The key's count (0 if never incremented).
    Get(String),
    /// Adds to the key's count.
    Add(String, u64),
}

impl Cmd {
    /// The key the command is about (its routing key).
    pub fn key(&self) -> &str {
        match self {
            Self::Get(key) | Self::Add(key, _) => key,
        }
    }
}

/// The owner's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The count after the command.
    Count(u64),
    /// The addition would overflow; the count is unchanged.
    Overflow,
}

/// Applies `cmd` to `counts`: the handler's work, wherever it runs (on the
/// key's worker, or inline for the bench's baseline).
pub fn apply(counts: &mut HashMap<String, u64>, cmd: Cmd) -> Reply {
    match cmd {
        Cmd::Get(key) => Reply::Count(counts.get(&key).copied().unwrap_or(0)),
        Cmd::Add(key, n) => {
            let slot = counts.entry(key).or_default();
            match slot.checked_add(n) {
                Some(v) => {
                    *slot = v;
                    Reply::Count(v)
                }
                None => Reply::Overflow,
            }
        }
    }
}

/// A worker owning the counters of the keys routed to it.
pub struct Counters;

impl Worker for Counters {
    type State = HashMap<String, u64>;
    type Message = Cmd;
    type Reply = Reply;

    fn init(&mut self) -> Result<Self::State> {
        Ok(HashMap::new())
    }

    fn handle_message(
        &mut self,
        counts: &mut Self::State,
        mut msg: Envelope<Cmd, Reply>,
    ) -> Result<()> {
        let reply_to = msg.take_reply();
        let reply = apply(counts, msg.into_payload());
        match reply_to.map(|to| to.send(reply)) {
            // A caller that went away (a cancelled request) is no failure.
            None | Some(Ok(()) | Err(ReplyError::CallerGone)) => Ok(()),
            Some(Err(e)) => Err(e.into()),
        }
    }
}

/// The counter workers: `workers` of them, keys routed by hash.
pub fn start(workers: usize) -> Result<WorkerGroup<Counters>> {
    WorkerPool::builder()
        .factory(|| Counters)
        .workers(workers.max(1))
        .build()
}
