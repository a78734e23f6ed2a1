//! Sparse values (`../sparse.rs`) as the engine holds them until
//! [`Engine::sparse_finalize`] makes one an ordinary entry.

use super::{CommitError, Done, Engine, Placement, Staged};
use crate::sparse::{Progress, SparseError};
use std::time::{Duration, Instant};

/// Why a sparse value was not finalized.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FinalizeError {
    #[error(transparent)]
    Sparse(#[from] SparseError),
    /// Complete, but the store refused it; the staging entry is gone
    /// (its bytes moved into the refused commit).
    #[error(transparent)]
    Store(#[from] CommitError),
}

impl Engine {
    /// Opens a sparse value of `total` bytes under `key` (at most
    /// `limit` bytes; the open ones together at most the larger tier's
    /// capacity, as they must fit it once finalized).
    ///
    /// # Errors
    /// As [`SparseArea::create`](crate::sparse::SparseArea::create).
    pub fn sparse_create(
        &mut self,
        key: &[u8],
        total: u64,
        limit: u64,
        ttl: Option<Duration>,
        flags: u32,
    ) -> Result<(), SparseError> {
        let limit = limit.min(self.largest_tier());
        self.sparse.create(key, total, limit, ttl, flags)
    }

    fn largest_tier(&self) -> u64 {
        let disk = self.disk.as_ref().map_or(0, |d| d.arc.capacity());
        self.arc.capacity().max(disk)
    }

    /// Writes `data` at `offset` of the sparse value `key`.
    ///
    /// # Errors
    /// As [`SparseArea::write`](crate::sparse::SparseArea::write).
    pub fn sparse_write(
        &mut self,
        key: &[u8],
        offset: u64,
        data: &Staged,
    ) -> Result<Progress, SparseError> {
        self.sparse.write(key, offset, data.pieces())
    }

    /// How far the sparse value `key` is.
    pub fn sparse_progress(&self, key: &[u8]) -> Option<Progress> {
        self.sparse.progress(key)
    }

    /// Publishes the sparse value `key`, complete, as an ordinary entry
    /// (replacing what `key` held), with its TTL and flags or the
    /// overrides.
    ///
    /// # Errors
    /// [`FinalizeError::Sparse`] (missing or incomplete: nothing
    /// changed), [`FinalizeError::Store`] (as [`Engine::commit`]).
    pub fn sparse_finalize(
        &mut self,
        key: &[u8],
        ttl: Option<Option<Duration>>,
        flags: Option<u32>,
        now: Instant,
        ticket: u64,
    ) -> Result<Done, FinalizeError> {
        let f = self.sparse.finalize(key, ttl, flags)?;
        Ok(self.commit(key, f.staged, f.ttl, f.flags, now, Placement::BOTH, ticket)?)
    }

    /// Drops the sparse value `key`; whether it was open.
    pub fn sparse_remove(&mut self, key: &[u8]) -> bool {
        self.sparse.remove(key)
    }

    /// Sparse values open.
    #[cfg(test)]
    pub fn sparse_open(&self) -> usize {
        self.sparse.len()
    }
}
