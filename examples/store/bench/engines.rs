//! The three engines behind one interface: ours (the embedded API), redb
//! and fjall, each at the same durability (every acknowledged batch on
//! disk) and with the same cache size.

use super::BenchError;
use crate::embedded::{Client, Store, StoreOptions, SyncPolicy, WriteBatch};
use crate::table::TableId;
use redb::{ReadableDatabase, ReadableTable};
use std::path::Path;
use std::sync::Arc;

const T: TableId = TableId(0);
const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

fn peer<E: std::fmt::Display>(engine: &'static str) -> impl Fn(E) -> BenchError {
    move |e| BenchError::Peer {
        engine,
        msg: e.to_string(),
    }
}

/// One engine, opened in its own directory.
pub enum Engine {
    Ours(Box<Store>),
    Redb(Arc<redb::Database>),
    Fjall(fjall::Database, fjall::Keyspace),
}

/// A writer's handle, one per thread.
pub enum Writer {
    Ours(Client),
    Redb(Arc<redb::Database>),
    Fjall(fjall::Database, fjall::Keyspace),
}

impl Engine {
    pub const NAMES: [&'static str; 3] = ["ours", "redb", "fjall"];

    /// Opens engine `which` (an index into [`Engine::NAMES`]) in `dir`.
    pub fn open(
        which: usize,
        dir: &Path,
        cache: usize,
        shards: usize,
    ) -> Result<Engine, BenchError> {
        std::fs::create_dir_all(dir).map_err(peer("bench dir"))?;
        Ok(match which {
            0 => Engine::Ours(Box::new(
                Store::open(StoreOptions {
                    shards: Some(shards),
                    cache_bytes: cache,
                    sync: SyncPolicy::Always,
                    ..StoreOptions::new(dir)
                })
                .map_err(|e| BenchError::Store(e.into()))?,
            )),
            1 => {
                let db = redb::Database::builder()
                    .set_cache_size(cache)
                    .create(dir.join("redb"))
                    .map_err(peer("redb"))?;
                Engine::Redb(Arc::new(db))
            }
            _ => {
                let db = fjall::Database::builder(dir.join("fjall"))
                    .cache_size(cache as u64)
                    .open()
                    .map_err(peer("fjall"))?;
                let ks = db
                    .keyspace("kv", fjall::KeyspaceCreateOptions::default)
                    .map_err(peer("fjall"))?;
                Engine::Fjall(db, ks)
            }
        })
    }

    pub fn writer(&self) -> Writer {
        match self {
            Engine::Ours(s) => Writer::Ours(s.client()),
            Engine::Redb(db) => Writer::Redb(db.clone()),
            Engine::Fjall(db, ks) => Writer::Fjall(db.clone(), ks.clone()),
        }
    }

    /// After a load: make the data what a reader meets on disk (ours
    /// checkpoints its dirty pages, fjall flushes its memtable), so no
    /// engine serves the read phases from a write buffer.
    pub fn settle(&mut self) -> Result<(), BenchError> {
        match self {
            Engine::Ours(s) => s.checkpoint().map_err(|e| BenchError::Store(e.into())),
            Engine::Redb(_) => Ok(()),
            Engine::Fjall(_, ks) => ks.rotate_memtable_and_wait().map_err(peer("fjall")),
        }
    }

    /// A reader for the calling thread.
    pub fn reader(&self) -> Result<Reader<'_>, BenchError> {
        Ok(match self {
            Engine::Ours(s) => Reader::Ours(s.client()),
            Engine::Redb(db) => {
                let tx = db.begin_read().map_err(peer("redb"))?;
                let table = tx.open_table(REDB_TABLE).map_err(peer("redb"))?;
                Reader::Redb(table)
            }
            Engine::Fjall(_, ks) => Reader::Fjall(ks),
        })
    }

    /// Closes the engine, making everything durable.
    pub fn close(self) -> Result<(), BenchError> {
        match self {
            Engine::Ours(s) => (*s).close().map_err(|e| BenchError::Store(e.into())),
            Engine::Redb(_) => Ok(()),
            Engine::Fjall(db, _) => db
                .persist(fjall::PersistMode::SyncAll)
                .map_err(peer("fjall")),
        }
    }
}

impl Writer {
    /// Writes `kvs` as one batch, returning once it is on disk.
    pub fn write(&mut self, kvs: &[([u8; 16], Vec<u8>)]) -> Result<(), BenchError> {
        match self {
            Writer::Ours(c) => {
                let mut b = WriteBatch::with_capacity(kvs.len());
                for (k, v) in kvs {
                    b.put(T, k, v.clone());
                }
                c.write(b).map_err(|e| BenchError::Store(e.into()))
            }
            Writer::Redb(db) => {
                let mut tx = db.begin_write().map_err(peer("redb"))?;
                tx.set_durability(redb::Durability::Immediate)
                    .map_err(peer("redb"))?;
                {
                    let mut t = tx.open_table(REDB_TABLE).map_err(peer("redb"))?;
                    for (k, v) in kvs {
                        t.insert(&k[..], &v[..]).map_err(peer("redb"))?;
                    }
                }
                tx.commit().map_err(peer("redb"))
            }
            Writer::Fjall(db, ks) => {
                let mut b = db.batch().durability(Some(fjall::PersistMode::SyncData));
                for (k, v) in kvs {
                    b.insert(ks, &k[..], &v[..]);
                }
                b.commit().map_err(peer("fjall"))
            }
        }
    }
}

/// A reading handle (redb's: one read transaction).
pub enum Reader<'a> {
    Ours(Client),
    Redb(redb::ReadOnlyTable<&'static [u8], &'static [u8]>),
    Fjall(&'a fjall::Keyspace),
}

impl Reader<'_> {
    /// The value of `key`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BenchError> {
        match self {
            Reader::Ours(c) => c.get(T, key).map_err(|e| BenchError::Store(e.into())),
            Reader::Redb(t) => Ok(t
                .get(key)
                .map_err(peer("redb"))?
                .map(|v| v.value().to_vec())),
            Reader::Fjall(ks) => Ok(ks.get(key).map_err(peer("fjall"))?.map(|v| v.to_vec())),
        }
    }

    /// Up to `n` entries from `start` on; calls `f` on each, returns how
    /// many.
    pub fn scan(
        &mut self,
        start: &[u8],
        n: usize,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<usize, BenchError> {
        let mut seen = 0;
        match self {
            Reader::Ours(c) => {
                let page = c
                    .scan(T, start, None, n)
                    .map_err(|e| BenchError::Store(e.into()))?;
                for (k, v) in &page.entries {
                    f(k, v);
                    seen += 1;
                }
            }
            Reader::Redb(t) => {
                for kv in t.range(start..).map_err(peer("redb"))?.take(n) {
                    let (k, v) = kv.map_err(peer("redb"))?;
                    f(k.value(), v.value());
                    seen += 1;
                }
            }
            Reader::Fjall(ks) => {
                for kv in ks.range(start..).take(n) {
                    let (k, v) = kv.into_inner().map_err(peer("fjall"))?;
                    f(&k, &v);
                    seen += 1;
                }
            }
        }
        Ok(seen)
    }
}
