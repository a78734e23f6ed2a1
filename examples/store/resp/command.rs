//! Commands: a request's arguments parsed into a typed [`Request`], or
//! the error reply Redis 7 gives for them, byte for byte. Parsing needs
//! no storage and no clock: what depends on them (a deadline's overflow,
//! a key's type) is checked when the request runs (`exec.rs`).

use super::int::{parse_i64, parse_u64};
use super::reply::Reply;

/// How many databases SELECT reaches (Redis's default `databases 16`).
pub const DATABASES: u32 = 16;

/// SCAN's default COUNT.
const SCAN_COUNT: usize = 10;

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    Ping(Option<Vec<u8>>),
    Echo(Vec<u8>),
    Get(Vec<u8>),
    Set(Set),
    GetSet {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Del(Vec<Vec<u8>>),
    Exists(Vec<Vec<u8>>),
    MGet(Vec<Vec<u8>>),
    MSet(Vec<(Vec<u8>, Vec<u8>)>),
    /// INCR, DECR, INCRBY and DECRBY.
    IncrBy {
        key: Vec<u8>,
        by: i64,
    },
    Append {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    StrLen(Vec<u8>),
    /// EXPIRE and PEXPIRE.
    Expire(Expire),
    /// TTL (seconds) and PTTL (`millis`).
    Ttl {
        key: Vec<u8>,
        millis: bool,
    },
    Persist(Vec<u8>),
    Scan(Scan),
    DbSize,
    Select(u32),
    FlushDb,
    /// INFO and its sections (lower case; none: the default set).
    Info(Vec<Vec<u8>>),
    /// CONFIG GET and its patterns.
    ConfigGet(Vec<Vec<u8>>),
    Command(Introspect),
    Quit,
}

/// SET's NX or XX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Only if the key is absent.
    Nx,
    /// Only if the key is present.
    Xx,
}

/// What SET does with the key's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetExpiry {
    /// No option: the key no longer expires.
    Clear,
    /// KEEPTTL: the deadline stays.
    Keep,
    /// EX or PX: this many milliseconds from now (positive).
    In(i64),
    /// EXAT or PXAT: this Unix time in milliseconds (positive).
    At(i64),
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub condition: Option<Condition>,
    /// GET: reply with the old value.
    pub get: bool,
    pub expiry: SetExpiry,
}

/// EXPIRE/PEXPIRE key time [NX|XX|GT|LT].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expire {
    pub key: Vec<u8>,
    /// Milliseconds from now (zero or negative: the key goes at once).
    pub millis: i64,
    pub nx: bool,
    pub xx: bool,
    pub gt: bool,
    pub lt: bool,
    /// `expire` or `pexpire`, for the error reply.
    pub name: &'static str,
}

/// SCAN cursor [MATCH pattern] [COUNT n] [TYPE type].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub cursor: u64,
    pub pattern: Option<Vec<u8>>,
    /// Keys to examine (Redis: a hint, at least 1).
    pub count: usize,
    /// Only keys of this type (lower case).
    pub kind: Option<Vec<u8>>,
}

/// COMMAND's forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Introspect {
    /// COMMAND: the command table (empty here).
    All,
    /// COMMAND COUNT.
    Count,
    /// COMMAND DOCS [name ...] (an empty map here).
    Docs,
}

/// The names this layer knows, for COMMAND COUNT.
pub const COMMANDS: &[&str] = &[
    "ping", "echo", "get", "set", "getset", "del", "exists", "mget", "mset", "incr", "decr",
    "incrby", "decrby", "append", "strlen", "expire", "pexpire", "ttl", "pttl", "persist", "scan",
    "dbsize", "select", "flushdb", "info", "config", "command", "quit",
];

/// Parses one command (its name first).
///
/// # Errors
/// The error reply Redis gives for these arguments.
pub fn parse(args: &[&[u8]]) -> Result<Request, Reply> {
    let name = args.first().copied().unwrap_or_default();
    let lower = if name.len() <= 16 {
        name.to_ascii_lowercase()
    } else {
        Vec::new()
    };
    let Ok(lower) = std::str::from_utf8(&lower) else {
        return Err(unknown_command(args));
    };
    let wrong = || Reply::wrong_args(lower);
    let own = |b: &[u8]| b.to_vec();
    Ok(match (lower, args) {
        ("ping", [_]) => Request::Ping(None),
        ("ping", [_, msg]) => Request::Ping(Some(own(msg))),
        ("echo", [_, msg]) => Request::Echo(own(msg)),
        ("get", [_, key]) => Request::Get(own(key)),
        ("set", [_, key, value, opts @ ..]) => Request::Set(parse_set(key, value, opts)?),
        ("getset", [_, key, value]) => Request::GetSet {
            key: own(key),
            value: own(value),
        },
        ("del", [_, keys @ ..]) if !keys.is_empty() => Request::Del(owned(keys)),
        ("exists", [_, keys @ ..]) if !keys.is_empty() => Request::Exists(owned(keys)),
        ("mget", [_, keys @ ..]) if !keys.is_empty() => Request::MGet(owned(keys)),
        ("mset", [_, pairs @ ..]) if !pairs.is_empty() && pairs.len() % 2 == 0 => Request::MSet(
            pairs
                .chunks_exact(2)
                .filter_map(|p| match p {
                    [k, v] => Some((own(k), own(v))),
                    _ => None,
                })
                .collect(),
        ),
        ("incr", [_, key]) => Request::IncrBy {
            key: own(key),
            by: 1,
        },
        ("decr", [_, key]) => Request::IncrBy {
            key: own(key),
            by: -1,
        },
        ("incrby", [_, key, by]) => Request::IncrBy {
            key: own(key),
            by: integer(by)?,
        },
        ("decrby", [_, key, by]) => Request::IncrBy {
            key: own(key),
            by: integer(by)?
                .checked_neg()
                .ok_or_else(|| Reply::error("ERR decrement would overflow"))?,
        },
        ("append", [_, key, value]) => Request::Append {
            key: own(key),
            value: own(value),
        },
        ("strlen", [_, key]) => Request::StrLen(own(key)),
        ("expire", [_, key, when, opts @ ..]) => {
            Request::Expire(parse_expire(key, when, opts, "expire")?)
        }
        ("pexpire", [_, key, when, opts @ ..]) => {
            Request::Expire(parse_expire(key, when, opts, "pexpire")?)
        }
        ("ttl", [_, key]) => Request::Ttl {
            key: own(key),
            millis: false,
        },
        ("pttl", [_, key]) => Request::Ttl {
            key: own(key),
            millis: true,
        },
        ("persist", [_, key]) => Request::Persist(own(key)),
        ("scan", [_, cursor, opts @ ..]) => Request::Scan(parse_scan(cursor, opts)?),
        ("dbsize", [_]) => Request::DbSize,
        ("select", [_, id]) => Request::Select(parse_select(id)?),
        ("flushdb", [_]) => Request::FlushDb,
        ("flushdb", [_, mode]) if is(mode, "async") || is(mode, "sync") => Request::FlushDb,
        ("flushdb", [_, ..]) => return Err(Reply::syntax()),
        ("info", [_, sections @ ..]) => {
            Request::Info(sections.iter().map(|s| s.to_ascii_lowercase()).collect())
        }
        ("config", [_, sub, rest @ ..]) => parse_config(args, sub, rest)?,
        ("command", [_]) => Request::Command(Introspect::All),
        ("command", [_, sub, rest @ ..]) => parse_command(args, sub, rest)?,
        ("quit", _) => Request::Quit,
        (known, _) if COMMANDS.contains(&known) => return Err(wrong()),
        _ => return Err(unknown_command(args)),
    })
}

/// Whether `arg` is `word`, ignoring ASCII case.
fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

fn owned(args: &[&[u8]]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.to_vec()).collect()
}

/// An integer argument, or `-ERR value is not an integer or out of range`.
fn integer(arg: &[u8]) -> Result<i64, Reply> {
    parse_i64(arg).ok_or_else(Reply::not_integer)
}

/// `arg` as C's `%.Ns` prints it: up to its first NUL, at most `max` bytes.
fn c_str(arg: &[u8], max: usize) -> &[u8] {
    let end = arg
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(arg.len())
        .min(max);
    arg.get(..end).unwrap_or_default()
}

/// `-ERR unknown command 'NAME', with args beginning with: 'a' 'b' `
/// (the name and the argument list each cut at 128 bytes, as Redis does).
pub fn unknown_command(args: &[&[u8]]) -> Reply {
    let name = args.first().copied().unwrap_or_default();
    let mut list = Vec::new();
    for arg in args.iter().skip(1) {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        list.push(b'\'');
        list.extend_from_slice(c_str(arg, room));
        list.extend_from_slice(b"' ");
    }
    Reply::Error(
        [
            &b"ERR unknown command '"[..],
            c_str(name, 128),
            b"', with args beginning with: ",
            &list,
        ]
        .concat(),
    )
}

/// `-ERR unknown subcommand 'sub'. Try NAME HELP.`
fn unknown_subcommand(args: &[&[u8]]) -> Reply {
    let name = args
        .first()
        .copied()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let sub = args.get(1).copied().unwrap_or_default();
    Reply::Error(
        [
            &b"ERR unknown subcommand '"[..],
            c_str(sub, 128),
            b"'. Try ",
            &name,
            b" HELP.",
        ]
        .concat(),
    )
}

/// SET's options, as Redis's `parseExtendedStringArgumentsOrReply` reads
/// them: NX and XX exclude each other, one expiry kind (repeatable, the
/// last wins) or KEEPTTL, GET anywhere; then the expiry's value.
fn parse_set(key: &[u8], value: &[u8], opts: &[&[u8]]) -> Result<Set, Reply> {
    let mut condition = None;
    let mut get = false;
    let mut keep = false;
    let mut expiry: Option<(&str, &[u8])> = None;
    let mut i = 0;
    while let Some(&opt) = opts.get(i) {
        let unit = ["ex", "px", "exat", "pxat"]
            .into_iter()
            .find(|u| is(opt, u));
        if is(opt, "nx") && condition != Some(Condition::Xx) {
            condition = Some(Condition::Nx);
        } else if is(opt, "xx") && condition != Some(Condition::Nx) {
            condition = Some(Condition::Xx);
        } else if is(opt, "get") {
            get = true;
        } else if is(opt, "keepttl") && expiry.is_none() {
            keep = true;
        } else if let (Some(unit), Some(&arg), false) = (unit, opts.get(i + 1), keep) {
            if expiry.is_some_and(|(u, _)| u != unit) {
                return Err(Reply::syntax());
            }
            expiry = Some((unit, arg));
            i += 1;
        } else {
            return Err(Reply::syntax());
        }
        i += 1;
    }
    let expiry = match expiry {
        None if keep => SetExpiry::Keep,
        None => SetExpiry::Clear,
        Some((unit, arg)) => {
            let n = integer(arg)?;
            let seconds = unit == "ex" || unit == "exat";
            if n <= 0 || (seconds && n > i64::MAX / 1000) {
                return Err(Reply::invalid_expire("set"));
            }
            let ms = if seconds { n * 1000 } else { n };
            if unit.ends_with("at") {
                SetExpiry::At(ms)
            } else {
                SetExpiry::In(ms)
            }
        }
    };
    Ok(Set {
        key: key.to_vec(),
        value: value.to_vec(),
        condition,
        get,
        expiry,
    })
}

/// EXPIRE's and PEXPIRE's options, then the time (seconds converted
/// without overflow).
fn parse_expire(
    key: &[u8],
    when: &[u8],
    opts: &[&[u8]],
    name: &'static str,
) -> Result<Expire, Reply> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for &opt in opts {
        match () {
            () if is(opt, "nx") => nx = true,
            () if is(opt, "xx") => xx = true,
            () if is(opt, "gt") => gt = true,
            () if is(opt, "lt") => lt = true,
            () => {
                return Err(Reply::Error(
                    [&b"ERR Unsupported option "[..], c_str(opt, usize::MAX)].concat(),
                ));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Reply::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(Reply::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let n = integer(when)?;
    let millis = if name == "expire" {
        n.checked_mul(1000)
            .ok_or_else(|| Reply::invalid_expire(name))?
    } else {
        n
    };
    Ok(Expire {
        key: key.to_vec(),
        millis,
        nx,
        xx,
        gt,
        lt,
        name,
    })
}

/// SCAN's cursor, then its options (each may repeat; the last wins).
fn parse_scan(cursor: &[u8], opts: &[&[u8]]) -> Result<Scan, Reply> {
    let cursor = parse_u64(cursor).ok_or_else(|| Reply::error("ERR invalid cursor"))?;
    let mut scan = Scan {
        cursor,
        pattern: None,
        count: SCAN_COUNT,
        kind: None,
    };
    let mut rest = opts;
    while let [opt, value, tail @ ..] = rest {
        if is(opt, "count") {
            let n = integer(value)?;
            scan.count = usize::try_from(n)
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(Reply::syntax)?;
        } else if is(opt, "match") {
            scan.pattern = Some(value.to_vec());
        } else if is(opt, "type") {
            scan.kind = Some(value.to_ascii_lowercase());
        } else {
            return Err(Reply::syntax());
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(Reply::syntax());
    }
    Ok(scan)
}

/// SELECT's index: an `int`, below [`DATABASES`].
fn parse_select(id: &[u8]) -> Result<u32, Reply> {
    let id = i32::try_from(integer(id)?).map_err(|_| Reply::not_integer())?;
    u32::try_from(id)
        .ok()
        .filter(|&id| id < DATABASES)
        .ok_or_else(|| Reply::error("ERR DB index is out of range"))
}

/// CONFIG's subcommands (GET only).
fn parse_config(args: &[&[u8]], sub: &[u8], rest: &[&[u8]]) -> Result<Request, Reply> {
    if !is(sub, "get") {
        return Err(unknown_subcommand(args));
    }
    if rest.is_empty() {
        return Err(Reply::wrong_args("config|get"));
    }
    Ok(Request::ConfigGet(owned(rest)))
}

/// COMMAND's subcommands (COUNT and DOCS).
fn parse_command(args: &[&[u8]], sub: &[u8], rest: &[&[u8]]) -> Result<Request, Reply> {
    if is(sub, "count") {
        if !rest.is_empty() {
            return Err(Reply::wrong_args("command|count"));
        }
        return Ok(Request::Command(Introspect::Count));
    }
    if is(sub, "docs") {
        return Ok(Request::Command(Introspect::Docs));
    }
    Err(unknown_subcommand(args))
}
