//! The server-describing commands: INFO, CONFIG GET and COMMAND, with
//! just what `redis-cli` and `redis-benchmark` read.

use super::command::{COMMANDS, Introspect};
use super::glob;
use super::reply::Reply;
use std::fmt::Write;

/// Facts about the server that INFO and CONFIG GET report.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub port: u16,
    pub pid: u32,
    /// When the server started, in Unix milliseconds.
    pub started_ms: i64,
    /// Whether writes go to a WAL (CONFIG GET appendonly, INFO
    /// aof_enabled).
    pub appendonly: bool,
    /// The longest bulk string and stored string (`--max-bulk`).
    pub max_bulk: usize,
}

/// Counters INFO's stats section reports.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub connections: u64,
    pub commands: u64,
    pub hits: u64,
    pub misses: u64,
    pub expired: u64,
}

/// One keyspace line: database, keys, keys with a deadline.
pub type DbCount = (u32, u64, u64);

/// Everything INFO reports, gathered by the executor.
#[derive(Debug)]
pub struct Facts<'a> {
    pub server: &'a ServerInfo,
    pub stats: &'a Stats,
    pub now_ms: i64,
    /// Non-empty databases, in order.
    pub keyspace: Vec<DbCount>,
}

/// INFO's sections, in the order they are written.
const SECTIONS: [&str; 4] = ["server", "persistence", "stats", "keyspace"];

/// Whether INFO `requested` needs the keyspace section.
pub fn wants_keyspace(requested: &[Vec<u8>]) -> bool {
    wanted(requested).contains(&"keyspace")
}

/// The sections `requested` names (none, `default`, `all` or
/// `everything`: all of them); unknown names are ignored, as in Redis.
fn wanted(requested: &[Vec<u8>]) -> Vec<&'static str> {
    let all = requested.is_empty()
        || requested
            .iter()
            .any(|s| matches!(s.as_slice(), b"default" | b"all" | b"everything"));
    SECTIONS
        .into_iter()
        .filter(|name| all || requested.iter().any(|s| s.as_slice() == name.as_bytes()))
        .collect()
}

/// INFO's reply: `# Section\r\nkey:value\r\n...`, sections separated by
/// an empty line.
pub fn info(requested: &[Vec<u8>], facts: &Facts<'_>) -> Reply {
    let mut out = String::new();
    for (i, name) in wanted(requested).into_iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        section(&mut out, name, facts);
    }
    Reply::Bulk(out.into_bytes())
}

fn section(out: &mut String, name: &str, f: &Facts<'_>) {
    // Writing to a String cannot fail.
    let _ = match name {
        "server" => {
            let up = (f.now_ms - f.server.started_ms).max(0) / 1000;
            write!(
                out,
                "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nos:{}\r\n\
                 arch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{up}\r\n\
                 uptime_in_days:{}\r\n",
                std::env::consts::OS,
                f.server.pid,
                f.server.port,
                up / 86400
            )
        }
        "persistence" => write!(
            out,
            "# Persistence\r\nloading:0\r\naof_enabled:{}\r\nrdb_bgsave_in_progress:0\r\n\
             aof_rewrite_in_progress:0\r\n",
            u8::from(f.server.appendonly)
        ),
        "stats" => write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             keyspace_hits:{}\r\nkeyspace_misses:{}\r\nexpired_keys:{}\r\n",
            f.stats.connections, f.stats.commands, f.stats.hits, f.stats.misses, f.stats.expired
        ),
        _ => {
            out.push_str("# Keyspace\r\n");
            f.keyspace.iter().try_for_each(|(db, keys, expires)| {
                write!(out, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n")
            })
        }
    };
}

/// CONFIG GET's reply: a flat array of each parameter matching any of
/// `patterns` (case-insensitive glob) and its value; unknown: empty.
pub fn config_get(patterns: &[Vec<u8>], server: &ServerInfo) -> Reply {
    let params: [(&str, String); 5] = [
        ("save", String::new()),
        (
            "appendonly",
            if server.appendonly { "yes" } else { "no" }.to_owned(),
        ),
        ("databases", super::command::DATABASES.to_string()),
        ("port", server.port.to_string()),
        ("proto-max-bulk-len", server.max_bulk.to_string()),
    ];
    let mut out = Vec::new();
    for (name, value) in params {
        if patterns
            .iter()
            .any(|p| glob::matches_nocase(p, name.as_bytes()))
        {
            out.push(Reply::Bulk(name.as_bytes().to_vec()));
            out.push(Reply::Bulk(value.into_bytes()));
        }
    }
    Reply::Array(out)
}

/// COMMAND's replies: an empty table, the count, an empty docs map.
pub fn command(form: Introspect) -> Reply {
    match form {
        Introspect::All | Introspect::Docs => Reply::Array(Vec::new()),
        Introspect::Count => Reply::Integer(i64::try_from(COMMANDS.len()).unwrap_or(i64::MAX)),
    }
}
