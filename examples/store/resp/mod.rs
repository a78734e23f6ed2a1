//! The Redis front's protocol and command layer, independent of threads
//! and sockets: bytes in, typed requests, replies out.
//!
//! - `codec.rs` (+ `inline.rs`): the incremental RESP2 request decoder
//!   and its limits; `reply.rs`: replies and their encoding.
//! - `command.rs` (+ `int.rs`, `glob.rs`): arguments to a typed
//!   `Request`, with Redis 7's error replies.
//! - `exec.rs`: runs requests against an `Engine` (`engine.rs`, with the
//!   `BTreeMap` model), values stored as `value.rs` encodes them (with an
//!   absolute deadline), SCAN cursors from `cursor.rs`, INFO, CONFIG GET
//!   and COMMAND from `admin.rs`.
//! - `split.rs`: where a request runs, and the split of multi-key
//!   requests into per-key parts whose replies merge back.
//!
//! The server step connects these: per connection a `codec::Decoder` and
//! an `exec::Session`; per frame `command::parse`, `Request::route`,
//! `exec::Executor::execute`, `Reply::encode`.

pub mod admin;
pub mod codec;
pub mod command;
mod cursor;
pub mod engine;
pub mod exec;
mod glob;
mod inline;
mod int;
pub mod reply;
pub mod split;
pub mod value;

#[cfg(test)]
mod codec_tests;
#[cfg(test)]
mod command_tests;
#[cfg(test)]
mod exec_tests;
#[cfg(test)]
mod multi_tests;
