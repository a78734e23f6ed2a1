//! How a request spreads over shards, for the router of the server step.
//!
//! [`Request::route`] says where a request runs: nowhere in storage (the
//! connection answers), on the shard of one key, on several keys' shards,
//! or on every shard. A multi-key request (DEL, EXISTS, MGET, MSET)
//! [`Request::split`]s into one single-key request of the same command
//! per key, in order; each runs on its key's shard, and
//! [`Merge::merge`] joins their replies, in the same order, into exactly
//! the reply the whole request gives on one engine (a repeated key is
//! two parts on the same shard, run in order). MSET across shards is not
//! atomic: each shard applies its part.

use super::command::Request;
use super::reply::Reply;

/// Where a request runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Answered by the connection (PING, SELECT, QUIT, CONFIG, ...).
    Local,
    /// On the shard owning this key.
    Key(&'a [u8]),
    /// On the shards of these keys: [`Request::split`] it.
    Keys(Vec<&'a [u8]>),
    /// On every shard (SCAN, DBSIZE, FLUSHDB, INFO's keyspace).
    All,
}

/// How the replies of a split request's parts are joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// One part: its reply as it is.
    One,
    /// DEL, EXISTS: the sum of the parts' integers.
    Sum,
    /// MGET: the parts' arrays, concatenated.
    Concat,
    /// MSET: OK once every part is.
    AllOk,
}

impl Request {
    /// Where this request runs (module docs).
    pub fn route(&self) -> Route<'_> {
        match self {
            Request::Get(key)
            | Request::StrLen(key)
            | Request::Persist(key)
            | Request::Set(super::command::Set { key, .. })
            | Request::GetSet { key, .. }
            | Request::IncrBy { key, .. }
            | Request::Append { key, .. }
            | Request::Expire(super::command::Expire { key, .. })
            | Request::Ttl { key, .. } => Route::Key(key),
            Request::Del(_) | Request::Exists(_) | Request::MGet(_) | Request::MSet(_) => {
                Route::Keys(self.keys())
            }
            Request::Scan(_) | Request::DbSize | Request::FlushDb | Request::Info(_) => Route::All,
            _ => Route::Local,
        }
    }

    /// The keys this request names, in order.
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            Request::Del(keys) | Request::Exists(keys) | Request::MGet(keys) => {
                keys.iter().map(Vec::as_slice).collect()
            }
            Request::MSet(pairs) => pairs.iter().map(|(k, _)| k.as_slice()).collect(),
            _ => match self.route() {
                Route::Key(key) => vec![key],
                _ => Vec::new(),
            },
        }
    }

    /// One request per key for a multi-key request, else itself alone;
    /// and how to merge the parts' replies.
    pub fn split(self) -> (Vec<Request>, Merge) {
        match self {
            Request::Del(keys) => (
                keys.into_iter().map(|k| Request::Del(vec![k])).collect(),
                Merge::Sum,
            ),
            Request::Exists(keys) => (
                keys.into_iter().map(|k| Request::Exists(vec![k])).collect(),
                Merge::Sum,
            ),
            Request::MGet(keys) => (
                keys.into_iter().map(|k| Request::MGet(vec![k])).collect(),
                Merge::Concat,
            ),
            Request::MSet(pairs) => (
                pairs.into_iter().map(|p| Request::MSet(vec![p])).collect(),
                Merge::AllOk,
            ),
            other => (vec![other], Merge::One),
        }
    }
}

impl Merge {
    /// Joins the parts' replies, in part order; the first error reply
    /// (a failed shard) is the reply.
    pub fn merge(self, replies: Vec<Reply>) -> Reply {
        if let Some(e) = replies.iter().find(|r| r.is_error()) {
            return e.clone();
        }
        match self {
            Merge::One => replies.into_iter().next().unwrap_or(Reply::Null),
            Merge::Sum => Reply::Integer(
                replies
                    .iter()
                    .map(|r| if let Reply::Integer(n) = r { *n } else { 0 })
                    .fold(0i64, i64::saturating_add),
            ),
            Merge::Concat => Reply::Array(
                replies
                    .into_iter()
                    .flat_map(|r| {
                        if let Reply::Array(items) = r {
                            items
                        } else {
                            vec![r]
                        }
                    })
                    .collect(),
            ),
            Merge::AllOk => Reply::OK,
        }
    }
}
