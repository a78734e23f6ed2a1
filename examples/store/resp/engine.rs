//! What the command layer needs from storage, and the `BTreeMap` model of
//! it that the tests run against (the shard implements the same trait in
//! the server step).
//!
//! Values are opaque bytes here: the command layer stores them in the
//! encoding of `value.rs`. A database index is a [`TableId`].

use super::reply::Reply;
use super::value::ValueError;
use crate::table::TableId;
use std::collections::BTreeMap;
use thiserror::Error;

/// One batch of an ordered scan: keys and stored values from the start
/// key on, and the key to resume from when more remain.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanBatch {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    pub resume: Option<Vec<u8>>,
}

/// Why a storage operation failed; the reply is `-ERR ` and the message.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The storage failed (I/O, corruption, a read-only shard); the
    /// message names what and where.
    #[error("{0}")]
    Storage(String),
    /// A key over the engine's bound.
    #[error("key of {len} bytes exceeds the {max}-byte bound")]
    KeyTooLong { len: usize, max: usize },
    /// A stored value over the engine's bound (the string plus its
    /// trailer); `--max-bulk` keeps strings under it.
    #[error("string exceeds maximum allowed size (proto-max-bulk-len)")]
    ValueTooLarge,
    /// A stored value that does not decode.
    #[error("corrupt value: {0}")]
    Value(#[from] ValueError),
}

impl From<EngineError> for Reply {
    fn from(e: EngineError) -> Reply {
        Reply::error(format!("ERR {e}"))
    }
}

/// Ordered key-value storage in numbered tables.
pub trait Engine {
    /// The stored value of `key`.
    ///
    /// # Errors
    /// [`EngineError`] if the storage fails.
    fn get(&mut self, db: TableId, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Whether `key` is stored (expired or not: the value is not read).
    ///
    /// # Errors
    /// As [`Engine::get`].
    fn exists(&mut self, db: TableId, key: &[u8]) -> Result<bool, EngineError>;

    /// Stores `value` under `key`.
    ///
    /// # Errors
    /// As [`Engine::get`], or [`EngineError::KeyTooLong`].
    fn put(&mut self, db: TableId, key: &[u8], value: Vec<u8>) -> Result<(), EngineError>;

    /// Removes `key`; whether it was stored.
    ///
    /// # Errors
    /// As [`Engine::get`].
    fn delete(&mut self, db: TableId, key: &[u8]) -> Result<bool, EngineError>;

    /// Up to `limit` entries (at least one) from `start` on, in key order.
    ///
    /// # Errors
    /// As [`Engine::get`].
    fn scan(&mut self, db: TableId, start: &[u8], limit: usize) -> Result<ScanBatch, EngineError>;

    /// Removes every key of `db`.
    ///
    /// # Errors
    /// As [`Engine::get`].
    fn clear(&mut self, db: TableId) -> Result<(), EngineError>;

    /// How many keys `db` stores (expired ones not yet removed included,
    /// as Redis's DBSIZE counts them).
    ///
    /// # Errors
    /// As [`Engine::get`].
    fn len(&mut self, db: TableId) -> Result<u64, EngineError>;
}

/// The model engine: one `BTreeMap` per table. `fail` makes every
/// operation fail, to test the error path.
#[derive(Debug, Default)]
pub struct MemEngine {
    tables: BTreeMap<TableId, BTreeMap<Vec<u8>, Vec<u8>>>,
    pub fail: bool,
}

impl MemEngine {
    fn check(&self) -> Result<(), EngineError> {
        if self.fail {
            return Err(EngineError::Storage("injected failure".into()));
        }
        Ok(())
    }

    fn table(&mut self, db: TableId) -> Result<&mut BTreeMap<Vec<u8>, Vec<u8>>, EngineError> {
        self.check()?;
        Ok(self.tables.entry(db).or_default())
    }
}

impl Engine for MemEngine {
    fn get(&mut self, db: TableId, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.table(db)?.get(key).cloned())
    }

    fn exists(&mut self, db: TableId, key: &[u8]) -> Result<bool, EngineError> {
        Ok(self.table(db)?.contains_key(key))
    }

    fn put(&mut self, db: TableId, key: &[u8], value: Vec<u8>) -> Result<(), EngineError> {
        self.table(db)?.insert(key.to_vec(), value);
        Ok(())
    }

    fn delete(&mut self, db: TableId, key: &[u8]) -> Result<bool, EngineError> {
        Ok(self.table(db)?.remove(key).is_some())
    }

    fn scan(&mut self, db: TableId, start: &[u8], limit: usize) -> Result<ScanBatch, EngineError> {
        let limit = limit.max(1);
        let mut range = self.table(db)?.range(start.to_vec()..);
        let entries: Vec<_> = range
            .by_ref()
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let resume = range.next().map(|(k, _)| k.clone());
        Ok(ScanBatch { entries, resume })
    }

    fn clear(&mut self, db: TableId) -> Result<(), EngineError> {
        self.table(db)?.clear();
        Ok(())
    }

    fn len(&mut self, db: TableId) -> Result<u64, EngineError> {
        Ok(u64::try_from(self.table(db)?.len()).unwrap_or(u64::MAX))
    }
}
