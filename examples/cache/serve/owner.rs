//! The owner side: a key's worker runs the operations on its engine.
//!
//! A PUT body arrives as a run of [`Op::Put`] messages from the
//! connection's worker, each one chunk (the last with the key and
//! options); they are staged here by request ([`Origin`]) and committed
//! together, so a value replaces the old one whole or not at all. A GET
//! is answered with its first piece (at most [`PIECE`] bytes); a longer
//! one is pulled piece by piece by the connection as the socket drains
//! ([`Op::Read`] naming the entry version), so a large value is never
//! copied whole.

use super::{Answer, NodeState, Op, Origin};
use crate::engine::{CommitError, Staged};
use crate::http::{Want, resolve};
use std::time::Instant;

/// Most bytes in one GET piece.
pub const PIECE: u64 = 1 << 20;

/// A PUT being received.
#[derive(Debug, Default)]
pub struct Staging {
    staged: Staged,
    /// A chunk did not stage (a bug in the sender): the PUT fails.
    failed: Option<String>,
}

/// Runs `op`; `None` when there is nothing to answer yet (a PUT chunk
/// that is not the last, an abort).
pub fn run(st: &mut NodeState, origin: Origin, op: Op) -> Option<Answer> {
    let now = Instant::now();
    match op {
        Op::Get { key, range } => Some(match st.engine.lookup(&key, now) {
            None => Answer::Missing,
            Some(entry) => {
                let want = resolve(range, entry.size);
                let (offset, len) = match want {
                    Want::Whole => (0, entry.size),
                    Want::Part { offset, len } => (offset, len),
                    Want::Unsatisfiable => (0, 0),
                };
                st.engine.touch_range(&entry, offset, len);
                match st.engine.read(&key, entry.id, offset, len.min(PIECE)) {
                    Some(first) => Answer::Got {
                        size: entry.size,
                        chunks: entry.chunk_count(),
                        flags: entry.flags,
                        id: entry.id,
                        want,
                        first,
                    },
                    None => Answer::Gone,
                }
            }
        }),
        Op::Head { key } => Some(match st.engine.head(&key, now) {
            Some(e) => Answer::Meta {
                size: e.size,
                chunks: e.chunk_count(),
                flags: e.flags,
            },
            None => Answer::Missing,
        }),
        Op::Read {
            key,
            id,
            offset,
            len,
        } => Some(match st.engine.read(&key, id, offset, len.min(PIECE)) {
            Some(piece) => Answer::Piece(piece),
            None => Answer::Gone,
        }),
        Op::Put { data, end } => {
            let staging = st.staging.entry(origin).or_default();
            if staging.failed.is_none()
                && let Err(e) = staging.staged.push(data)
            {
                staging.failed = Some(e.to_string());
            }
            let end = end?;
            let staging = st.staging.remove(&origin).unwrap_or_default();
            if let Some(reason) = staging.failed {
                return Some(Answer::Refused {
                    status: 500,
                    reason,
                });
            }
            Some(
                match st
                    .engine
                    .commit(&end.key, staging.staged, end.ttl, end.flags, now)
                {
                    Ok(()) => Answer::Stored,
                    Err(e @ CommitError::TooLarge { .. }) => Answer::Refused {
                        status: 507,
                        reason: e.to_string(),
                    },
                    Err(e) => Answer::Refused {
                        status: 500,
                        reason: e.to_string(),
                    },
                },
            )
        }
        Op::Abort => {
            st.staging.remove(&origin);
            None
        }
        Op::Delete { key } => {
            st.engine.delete(&key);
            Some(Answer::Deleted)
        }
        Op::Stats => Some(Answer::Stats(st.engine.stats())),
    }
}
