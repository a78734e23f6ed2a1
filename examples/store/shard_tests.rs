//! Shard tests (filled below).
