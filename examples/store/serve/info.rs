//! INFO over the shards: every shard answers for itself, and the
//! connection joins the answers into one, shard 0's text with the
//! counters summed: the keyspace lines (keys and deadlines per database)
//! and the stats every shard counts ([`SUMMED`]; commands count where
//! they ran, so a split command counts once per part, and PING, SELECT
//! and the like, which no shard runs, are not counted).

use crate::resp::reply::Reply;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// The `name:integer` lines summed over the shards.
const SUMMED: &[&str] = &[
    "total_connections_received",
    "total_commands_processed",
    "keyspace_hits",
    "keyspace_misses",
    "expired_keys",
];

/// The database of a keyspace line's name (`db3`).
fn db_of(name: &str) -> Option<u32> {
    name.strip_prefix("db").and_then(|d| d.parse().ok())
}

/// `keys=K,expires=E,avg_ttl=0` as (K, E).
fn keyspace_counts(value: &str) -> (u64, u64) {
    let mut counts = (0, 0);
    for field in value.split(',') {
        match field.split_once('=') {
            Some(("keys", n)) => counts.0 = n.parse().unwrap_or(0),
            Some(("expires", n)) => counts.1 = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    counts
}

/// The one INFO reply for the shards' replies, in shard order; the first
/// error reply is the reply.
pub fn merge(replies: Vec<Reply>) -> Reply {
    if let Some(e) = replies.iter().find(|r| r.is_error()) {
        return e.clone();
    }
    let texts: Vec<String> = replies
        .into_iter()
        .filter_map(|r| match r {
            Reply::Bulk(b) => String::from_utf8(b).ok(),
            _ => None,
        })
        .collect();
    let Some(first) = texts.first() else {
        return Reply::error("ERR no shard answered INFO");
    };
    let mut sums: HashMap<&str, u64> = HashMap::new();
    let mut dbs: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for line in texts.iter().flat_map(|t| t.split("\r\n")) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let Some(&key) = SUMMED.iter().find(|&&s| s == name) {
            *sums.entry(key).or_default() += value.parse::<u64>().unwrap_or(0);
        } else if let Some(db) = db_of(name) {
            let (k, e) = keyspace_counts(value);
            let entry = dbs.entry(db).or_default();
            entry.0 += k;
            entry.1 += e;
        }
    }
    let mut out = String::new();
    for line in first.split_inclusive("\r\n") {
        let body = line.trim_end_matches("\r\n");
        match body.split_once(':') {
            Some((name, _)) if SUMMED.contains(&name) => {
                let sum = sums.get(name).copied().unwrap_or(0);
                let _ = write!(out, "{name}:{sum}\r\n");
            }
            Some((name, _)) if db_of(name).is_some() => {}
            _ => {
                out.push_str(line);
                if body == "# Keyspace" {
                    for (db, (keys, expires)) in &dbs {
                        let _ = write!(out, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n");
                    }
                }
            }
        }
    }
    Reply::Bulk(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn counters_and_keyspace_are_summed_over_the_shards() {
        let a = "# Server\r\ntcp_port:1\r\n\r\n# Stats\r\nkeyspace_hits:2\r\nexpired_keys:1\r\n\r\n\
                 # Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\n";
        let b = "# Server\r\ntcp_port:1\r\n\r\n# Stats\r\nkeyspace_hits:5\r\nexpired_keys:0\r\n\r\n\
                 # Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0\r\ndb2:keys=1,expires=1,avg_ttl=0\r\n";
        let merged = merge(vec![bulk(a), bulk(b)]);
        assert_eq!(
            merged,
            bulk(
                "# Server\r\ntcp_port:1\r\n\r\n# Stats\r\nkeyspace_hits:7\r\nexpired_keys:1\r\n\r\n\
                 # Keyspace\r\ndb0:keys=7,expires=1,avg_ttl=0\r\ndb2:keys=1,expires=1,avg_ttl=0\r\n"
            )
        );
        // A section not asked for stays out; an error wins.
        assert_eq!(
            merge(vec![bulk("# Server\r\n"), bulk("# Server\r\n")]),
            bulk("# Server\r\n")
        );
        let err = Reply::error("ERR shard down");
        assert_eq!(merge(vec![bulk(a), err.clone()]), err);
    }
}
