//! Runs typed requests against an [`Engine`] and returns their replies.
//!
//! Values are stored in the encoding of `value.rs`. Time is the caller's
//! `now_ms` (Unix milliseconds, Redis's command time snapshot), so tests
//! inject it. An expired key reads as absent everywhere and is deleted
//! when a command comes across it (lazy expiry); nothing sweeps.

use super::admin::{self, DbCount, Facts, ServerInfo, Stats};
use super::command::{Condition, DATABASES, Expire, Request, Scan, Set, SetExpiry};
use super::cursor::Cursors;
use super::engine::{Engine, EngineError};
use super::glob;
use super::int::parse_i64;
use super::reply::Reply;
use super::value::{Kind, Value};
use crate::table::TableId;

/// How many SCAN cursors stay resumable.
const CURSORS: usize = 4096;

/// One connection's state: its database, and whether it asked to close.
#[derive(Debug, Default)]
pub struct Session {
    db: u32,
    closing: bool,
}

impl Session {
    /// A session in database `db` (a shard runs a connection's request
    /// in the connection's database).
    pub fn in_db(db: u32) -> Self {
        Session { db, closing: false }
    }

    /// The selected database.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// Whether the connection is to be closed after this reply (QUIT).
    pub fn closing(&self) -> bool {
        self.closing
    }
}

/// A fallible step of a command: its error is the reply.
type Step<T> = Result<T, Reply>;

/// Runs requests against one engine.
#[derive(Debug)]
pub struct Executor<E> {
    engine: E,
    server: ServerInfo,
    stats: Stats,
    cursors: Cursors,
}

impl<E: Engine> Executor<E> {
    /// An executor over `engine`.
    pub fn new(engine: E, server: ServerInfo) -> Self {
        Executor {
            engine,
            server,
            stats: Stats::default(),
            cursors: Cursors::new(CURSORS),
        }
    }

    /// The engine, back (a restart hands it to a new executor; the tests
    /// do).
    #[cfg(test)]
    pub fn into_engine(self) -> E {
        self.engine
    }

    /// The engine.
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    /// A new connection's session.
    pub fn connect(&mut self) -> Session {
        self.stats.connections += 1;
        Session::default()
    }

    /// Runs `req` for `session` at time `now_ms`.
    pub fn execute(&mut self, session: &mut Session, req: Request, now_ms: i64) -> Reply {
        let reply = self.run(session, req, now_ms).unwrap_or_else(|e| e);
        // Counted once done, as Redis counts: INFO does not count itself.
        self.stats.commands += 1;
        reply
    }

    fn run(&mut self, session: &mut Session, req: Request, now: i64) -> Step<Reply> {
        let db = TableId(session.db);
        Ok(match req {
            Request::Ping(None) => Reply::Simple("PONG"),
            Request::Ping(Some(msg)) | Request::Echo(msg) => Reply::Bulk(msg),
            Request::Get(key) => self.get(db, &key, now)?,
            Request::Set(set) => self.set(db, set, now)?,
            Request::GetSet { key, value } => self.set(
                db,
                Set {
                    key,
                    value,
                    condition: None,
                    get: true,
                    expiry: SetExpiry::Clear,
                },
                now,
            )?,
            Request::Del(keys) => Reply::Integer(self.count(&keys, |x, k| x.del(db, k, now))?),
            Request::Exists(keys) => {
                Reply::Integer(self.count(&keys, |x, k| x.exists(db, k, now))?)
            }
            Request::MGet(keys) => self.mget(db, &keys, now)?,
            Request::MSet(pairs) => {
                for (key, value) in pairs {
                    self.engine
                        .put(db, &key, Value::string(value, None).encode())?;
                }
                Reply::OK
            }
            Request::IncrBy { key, by } => self.incr_by(db, &key, by, now)?,
            Request::Append { key, value } => self.append(db, &key, &value, now)?,
            Request::StrLen(key) => {
                let len = self
                    .read_string(db, &key, now)?
                    .map_or(0, |v| v.payload.len());
                Reply::Integer(i64::try_from(len).unwrap_or(i64::MAX))
            }
            Request::Expire(e) => self.expire(db, e, now)?,
            Request::Ttl { key, millis } => self.ttl(db, &key, millis, now)?,
            Request::Persist(key) => self.persist(db, &key, now)?,
            Request::Scan(scan) => self.scan(db, scan, now)?,
            Request::DbSize => {
                Reply::Integer(i64::try_from(self.engine.len(db)?).unwrap_or(i64::MAX))
            }
            Request::Select(n) => {
                session.db = n;
                Reply::OK
            }
            Request::FlushDb => {
                self.engine.clear(db)?;
                Reply::OK
            }
            Request::Info(sections) => self.info(&sections, now)?,
            Request::ConfigGet(patterns) => admin::config_get(&patterns, &self.server),
            Request::Command(form) => admin::command(form),
            Request::Quit => {
                session.closing = true;
                Reply::OK
            }
        })
    }

    /// The live value of `key` (an expired one is deleted and absent).
    fn read(&mut self, db: TableId, key: &[u8], now: i64) -> Step<Option<Value>> {
        let Some(raw) = self.engine.get(db, key)? else {
            return Ok(None);
        };
        let value = Value::decode(raw).map_err(EngineError::from)?;
        if value.expired(now) {
            self.engine.delete(db, key)?;
            self.stats.expired += 1;
            return Ok(None);
        }
        Ok(Some(value))
    }

    /// As [`Executor::read`], WRONGTYPE unless the value is a string.
    fn read_string(&mut self, db: TableId, key: &[u8], now: i64) -> Step<Option<Value>> {
        match self.read(db, key, now)? {
            Some(v) if v.kind != Kind::String => Err(Reply::wrong_type()),
            v => Ok(v),
        }
    }

    /// Stores a string value.
    fn store(
        &mut self,
        db: TableId,
        key: &[u8],
        payload: Vec<u8>,
        deadline: Option<i64>,
    ) -> Step<()> {
        Ok(self
            .engine
            .put(db, key, Value::string(payload, deadline).encode())?)
    }

    /// Sums `f` over `keys` (DEL, EXISTS: a repeated key counts again).
    fn count(
        &mut self,
        keys: &[Vec<u8>],
        mut f: impl FnMut(&mut Self, &[u8]) -> Step<bool>,
    ) -> Step<i64> {
        let mut n = 0;
        for key in keys {
            n += i64::from(f(self, key)?);
        }
        Ok(n)
    }

    fn get(&mut self, db: TableId, key: &[u8], now: i64) -> Step<Reply> {
        Ok(match self.read_string(db, key, now)? {
            Some(v) => {
                self.stats.hits += 1;
                Reply::Bulk(v.payload)
            }
            None => {
                self.stats.misses += 1;
                Reply::Null
            }
        })
    }

    /// SET (and GETSET, which is SET ... GET): checks in Redis's order,
    /// the deadline, then the old value's type (GET), then NX/XX.
    fn set(&mut self, db: TableId, set: Set, now: i64) -> Step<Reply> {
        let mut deadline = match set.expiry {
            SetExpiry::Clear | SetExpiry::Keep => None,
            SetExpiry::In(ms) => Some(
                now.checked_add(ms)
                    .ok_or_else(|| Reply::invalid_expire("set"))?,
            ),
            SetExpiry::At(ms) => Some(ms),
        };
        let old = if set.get {
            self.read_string(db, &set.key, now)?
        } else if set.condition.is_some() || set.expiry == SetExpiry::Keep {
            self.read(db, &set.key, now)?
        } else {
            None
        };
        let found = old.is_some();
        if set.expiry == SetExpiry::Keep {
            deadline = old.as_ref().and_then(|v| v.deadline);
        }
        let reply = if set.get {
            old.map_or(Reply::Null, |v| Reply::Bulk(v.payload))
        } else {
            Reply::OK
        };
        match (set.condition, found) {
            (Some(Condition::Nx), true) | (Some(Condition::Xx), false) => {
                return Ok(if set.get { reply } else { Reply::Null });
            }
            _ => {}
        }
        self.store(db, &set.key, set.value, deadline)?;
        Ok(reply)
    }

    /// MGET: a value per key, nil for a missing key or another type.
    fn mget(&mut self, db: TableId, keys: &[Vec<u8>], now: i64) -> Step<Reply> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(match self.read(db, key, now)? {
                Some(v) if v.kind == Kind::String => {
                    self.stats.hits += 1;
                    Reply::Bulk(v.payload)
                }
                _ => {
                    self.stats.misses += 1;
                    Reply::Null
                }
            });
        }
        Ok(Reply::Array(out))
    }

    fn del(&mut self, db: TableId, key: &[u8], now: i64) -> Step<bool> {
        if self.read(db, key, now)?.is_none() {
            return Ok(false);
        }
        Ok(self.engine.delete(db, key)?)
    }

    fn exists(&mut self, db: TableId, key: &[u8], now: i64) -> Step<bool> {
        Ok(self.engine.exists(db, key)? && self.read(db, key, now)?.is_some())
    }

    fn incr_by(&mut self, db: TableId, key: &[u8], by: i64, now: i64) -> Step<Reply> {
        let old = self.read_string(db, key, now)?;
        let current = match &old {
            None => 0,
            Some(v) => parse_i64(&v.payload).ok_or_else(Reply::not_integer)?,
        };
        let new = current
            .checked_add(by)
            .ok_or_else(|| Reply::error("ERR increment or decrement would overflow"))?;
        self.store(
            db,
            key,
            new.to_string().into_bytes(),
            old.and_then(|v| v.deadline),
        )?;
        Ok(Reply::Integer(new))
    }

    fn append(&mut self, db: TableId, key: &[u8], tail: &[u8], now: i64) -> Step<Reply> {
        let (mut payload, deadline) = match self.read_string(db, key, now)? {
            Some(v) => (v.payload, v.deadline),
            None => (Vec::new(), None),
        };
        if payload.len().saturating_add(tail.len()) > self.server.max_bulk {
            return Err(Reply::error(
                "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
            ));
        }
        payload.extend_from_slice(tail);
        let len = i64::try_from(payload.len()).unwrap_or(i64::MAX);
        self.store(db, key, payload, deadline)?;
        Ok(Reply::Integer(len))
    }

    /// EXPIRE/PEXPIRE, as Redis's `expireGenericCommand`.
    fn expire(&mut self, db: TableId, e: Expire, now: i64) -> Step<Reply> {
        let when = now
            .checked_add(e.millis)
            .ok_or_else(|| Reply::invalid_expire(e.name))?;
        let Some(value) = self.read(db, &e.key, now)? else {
            return Ok(Reply::Integer(0));
        };
        let current = value.deadline;
        let refused = (e.nx && current.is_some())
            || (e.xx && current.is_none())
            || (e.gt && current.is_none_or(|c| when <= c))
            || (e.lt && current.is_some_and(|c| when >= c));
        if refused {
            return Ok(Reply::Integer(0));
        }
        if when <= now {
            self.engine.delete(db, &e.key)?;
        } else {
            self.engine.put(
                db,
                &e.key,
                Value {
                    deadline: Some(when),
                    ..value
                }
                .encode(),
            )?;
        }
        Ok(Reply::Integer(1))
    }

    fn ttl(&mut self, db: TableId, key: &[u8], millis: bool, now: i64) -> Step<Reply> {
        Ok(Reply::Integer(match self.read(db, key, now)? {
            None => -2,
            Some(Value { deadline: None, .. }) => -1,
            Some(Value {
                deadline: Some(d), ..
            }) => {
                let left = d.saturating_sub(now).max(0);
                if millis {
                    left
                } else {
                    left.saturating_add(500) / 1000
                }
            }
        }))
    }

    fn persist(&mut self, db: TableId, key: &[u8], now: i64) -> Step<Reply> {
        match self.read(db, key, now)? {
            Some(value) if value.deadline.is_some() => {
                self.engine.put(
                    db,
                    key,
                    Value {
                        deadline: None,
                        ..value
                    }
                    .encode(),
                )?;
                Ok(Reply::Integer(1))
            }
            _ => Ok(Reply::Integer(0)),
        }
    }

    /// One SCAN batch: COUNT stored keys from the cursor's key on, the
    /// live ones that pass MATCH and TYPE, and the next cursor.
    fn scan(&mut self, db: TableId, scan: Scan, now: i64) -> Step<Reply> {
        let start = match scan.cursor {
            0 => Vec::new(),
            id => self
                .cursors
                .resume(id)
                .ok_or_else(|| Reply::error("ERR invalid cursor"))?
                .to_vec(),
        };
        // Like Redis, MATCH * filters nothing (the glob alone would not
        // match an empty key).
        let pattern = scan.pattern.filter(|p| p.as_slice() != b"*");
        let batch = self.engine.scan(db, &start, scan.count)?;
        let mut keys = Vec::new();
        for (key, raw) in batch.entries {
            let value = Value::decode(raw).map_err(EngineError::from)?;
            if value.expired(now) {
                self.engine.delete(db, &key)?;
                self.stats.expired += 1;
                continue;
            }
            let kind = match value.kind {
                Kind::String => &b"string"[..],
                Kind::Other(_) => b"",
            };
            if scan.kind.as_ref().is_some_and(|k| k.as_slice() != kind)
                || pattern.as_ref().is_some_and(|p| !glob::matches(p, &key))
            {
                continue;
            }
            keys.push(Reply::Bulk(key));
        }
        let next = batch.resume.map_or(0, |k| self.cursors.issue(k));
        Ok(Reply::Array(vec![
            Reply::bulk_decimal(next),
            Reply::Array(keys),
        ]))
    }

    /// INFO; the keyspace section counts each database's deadlines with a
    /// full scan (O(keys): the server step keeps counters instead).
    fn info(&mut self, sections: &[Vec<u8>], now: i64) -> Step<Reply> {
        let mut keyspace = Vec::new();
        if admin::wants_keyspace(sections) {
            for db in 0..DATABASES {
                if let Some(line) = self.db_count(db, now)? {
                    keyspace.push(line);
                }
            }
        }
        let facts = Facts {
            server: &self.server,
            stats: &self.stats,
            now_ms: now,
            keyspace,
        };
        Ok(admin::info(sections, &facts))
    }

    /// Keys and keys with a deadline in `db`, `None` if it is empty.
    fn db_count(&mut self, db: u32, now: i64) -> Step<Option<DbCount>> {
        let table = TableId(db);
        let keys = self.engine.len(table)?;
        if keys == 0 {
            return Ok(None);
        }
        let mut expires = 0;
        let mut start = Vec::new();
        loop {
            let batch = self.engine.scan(table, &start, 1024)?;
            for (_, raw) in batch.entries {
                let v = Value::decode(raw).map_err(EngineError::from)?;
                expires += u64::from(v.deadline.is_some() && !v.expired(now));
            }
            match batch.resume {
                Some(k) => start = k,
                None => return Ok(Some((db, keys, expires))),
            }
        }
    }
}
