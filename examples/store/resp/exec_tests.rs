//! The executor against the model engine: every command's replies byte
//! for byte as Redis 7 gives them, expiry on an injected clock, SELECT
//! isolation, INFO, CONFIG GET and COMMAND.

use super::admin::ServerInfo;
use super::codec::{Decoder, Limits};
use super::command::parse;
use super::engine::{Engine, MemEngine};
use super::exec::{Executor, Session};
use super::reply::Reply;
use super::value::{Kind, Value};
use crate::table::TableId;

/// An executor, one session and a clock.
pub struct Rig {
    pub x: Executor<MemEngine>,
    pub s: Session,
    pub now: i64,
}

pub fn server() -> ServerInfo {
    ServerInfo {
        port: 6379,
        pid: 42,
        started_ms: 1_000,
        appendonly: true,
        max_bulk: 512 << 20,
    }
}

impl Rig {
    pub fn new() -> Self {
        let mut x = Executor::new(MemEngine::default(), server());
        let s = x.connect();
        Rig {
            x,
            s,
            now: 1_000_000,
        }
    }

    /// Runs one command given as arguments.
    pub fn reply(&mut self, args: &[&[u8]]) -> Reply {
        match parse(args) {
            Ok(req) => self.x.execute(&mut self.s, req, self.now),
            Err(e) => e,
        }
    }

    /// Runs one command given as arguments; the reply's bytes.
    pub fn args(&mut self, args: &[&[u8]]) -> String {
        String::from_utf8_lossy(&self.reply(args).to_bytes()).into_owned()
    }

    /// Runs a command line split at spaces.
    pub fn run(&mut self, line: &str) -> String {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.args(&args)
    }

    /// Runs each line and checks its reply.
    pub fn check(&mut self, cases: &[(&str, &str)]) {
        for (line, want) in cases {
            assert_eq!(self.run(line), *want, "{line}");
        }
    }

    /// Stores a raw value, bypassing the commands.
    pub fn put_raw(&mut self, key: &str, value: Value) {
        let db = TableId(self.s.db());
        self.x
            .engine_mut()
            .put(db, key.as_bytes(), value.encode())
            .unwrap();
    }
}

#[test]
fn strings_reply_as_redis_does() {
    Rig::new().check(&[
        ("PING", "+PONG\r\n"),
        ("ping hello", "$5\r\nhello\r\n"),
        ("echo hi", "$2\r\nhi\r\n"),
        ("get k", "$-1\r\n"),
        ("set k v", "+OK\r\n"),
        ("get k", "$1\r\nv\r\n"),
        ("set k v2 nx", "$-1\r\n"),
        ("set k v2 nx get", "$1\r\nv\r\n"),
        ("get k", "$1\r\nv\r\n"),
        ("set other v xx", "$-1\r\n"),
        ("exists other", ":0\r\n"),
        ("set k v3 xx", "+OK\r\n"),
        ("set k v4 get", "$2\r\nv3\r\n"),
        ("set fresh v get", "$-1\r\n"),
        ("getset k v5", "$2\r\nv4\r\n"),
        ("getset none x", "$-1\r\n"),
        ("strlen k", ":2\r\n"),
        ("strlen nothing", ":0\r\n"),
        ("append k 678", ":5\r\n"),
        ("append new abc", ":3\r\n"),
        ("get k", "$5\r\nv5678\r\n"),
        ("mset a 1 b 2 a 3", "+OK\r\n"),
        (
            "mget a b c k",
            "*4\r\n$1\r\n3\r\n$1\r\n2\r\n$-1\r\n$5\r\nv5678\r\n",
        ),
        ("exists a a c b", ":3\r\n"),
        ("del a c a b", ":2\r\n"),
        ("exists a b", ":0\r\n"),
    ]);
}

#[test]
fn counters_reply_as_redis_does() {
    Rig::new().check(&[
        ("incr n", ":1\r\n"),
        ("incrby n 10", ":11\r\n"),
        ("decr n", ":10\r\n"),
        ("decrby n 20", ":-10\r\n"),
        ("get n", "$3\r\n-10\r\n"),
        ("set s abc", "+OK\r\n"),
        ("incr s", "-ERR value is not an integer or out of range\r\n"),
        ("set s 01", "+OK\r\n"),
        ("incr s", "-ERR value is not an integer or out of range\r\n"),
        ("set m 9223372036854775807", "+OK\r\n"),
        ("incr m", "-ERR increment or decrement would overflow\r\n"),
        ("incrby m -1", ":9223372036854775806\r\n"),
        ("set m -9223372036854775808", "+OK\r\n"),
        ("decr m", "-ERR increment or decrement would overflow\r\n"),
        ("get m", "$20\r\n-9223372036854775808\r\n"),
    ]);
}

#[test]
fn other_kinds_are_wrongtype_for_string_commands() {
    let mut rig = Rig::new();
    rig.put_raw(
        "h",
        Value {
            kind: Kind::Other(3),
            deadline: None,
            payload: b"x".to_vec(),
        },
    );
    let wrong = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    for line in [
        "get h",
        "incr h",
        "decrby h 2",
        "append h x",
        "strlen h",
        "set h v get",
        "getset h v",
    ] {
        assert_eq!(rig.run(line), wrong, "{line}");
    }
    rig.check(&[
        ("mget h", "*1\r\n$-1\r\n"),
        ("exists h", ":1\r\n"),
        ("ttl h", ":-1\r\n"),
        ("expire h 10", ":1\r\n"),
        ("ttl h", ":10\r\n"),
        ("scan 0 type string", "*2\r\n$1\r\n0\r\n*0\r\n"),
        ("set h v nx", "$-1\r\n"),
        ("set h v", "+OK\r\n"),
        ("get h", "$1\r\nv\r\n"),
        ("ttl h", ":-1\r\n"),
    ]);
    rig.put_raw(
        "h",
        Value {
            kind: Kind::Other(3),
            deadline: None,
            payload: vec![],
        },
    );
    rig.check(&[("del h", ":1\r\n"), ("exists h", ":0\r\n")]);
}

#[test]
fn storage_failures_and_damaged_values_are_err_replies() {
    let mut rig = Rig::new();
    rig.check(&[("set k v", "+OK\r\n")]);
    rig.x
        .engine_mut()
        .put(TableId(0), b"bad", vec![1, 2, 1])
        .unwrap();
    rig.check(&[
        (
            "get bad",
            "-ERR corrupt value: stored value of 3 bytes is too short for its deadline\r\n",
        ),
        (
            "scan 0",
            "-ERR corrupt value: stored value of 3 bytes is too short for its deadline\r\n",
        ),
    ]);
    rig.x.engine_mut().fail = true;
    for line in [
        "get k",
        "set k v",
        "del k",
        "mget k",
        "dbsize",
        "flushdb",
        "scan 0",
        "info keyspace",
    ] {
        assert_eq!(rig.run(line), "-ERR injected failure\r\n", "{line}");
    }
    // Commands that need no storage still answer.
    rig.check(&[
        ("ping", "+PONG\r\n"),
        ("select 1", "+OK\r\n"),
        ("command count", ":28\r\n"),
    ]);
}

#[test]
fn expiry_follows_the_injected_clock() {
    let mut rig = Rig::new();
    rig.now = 1_000;
    rig.check(&[
        ("set k v ex 10", "+OK\r\n"),
        ("ttl k", ":10\r\n"),
        ("pttl k", ":10000\r\n"),
        ("ttl nothing", ":-2\r\n"),
        ("set p v", "+OK\r\n"),
        ("ttl p", ":-1\r\n"),
    ]);
    rig.now = 5_501;
    // 5499 ms round to 5 s, as Redis rounds.
    rig.check(&[("ttl k", ":5\r\n"), ("pttl k", ":5499\r\n")]);
    rig.now = 11_000;
    rig.check(&[
        ("get k", "$1\r\nv\r\n"),
        ("ttl k", ":0\r\n"),
        ("dbsize", ":2\r\n"),
    ]);
    rig.now = 11_001;
    rig.check(&[
        ("dbsize", ":2\r\n"),
        ("get k", "$-1\r\n"),
        ("ttl k", ":-2\r\n"),
        ("exists k", ":0\r\n"),
        ("dbsize", ":1\r\n"),
    ]);
    assert!(rig.run("info stats").contains("expired_keys:1\r\n"));
}

#[test]
fn writes_keep_or_clear_the_deadline_as_redis_does() {
    let mut rig = Rig::new();
    rig.now = 0;
    rig.check(&[
        ("set k 1 px 5000", "+OK\r\n"),
        ("incr k", ":2\r\n"),
        ("append k 0", ":2\r\n"),
        ("pttl k", ":5000\r\n"),
        ("set k v keepttl", "+OK\r\n"),
        ("pttl k", ":5000\r\n"),
        ("set k v", "+OK\r\n"),
        ("pttl k", ":-1\r\n"),
        ("set k v exat 7", "+OK\r\n"),
        ("pttl k", ":7000\r\n"),
        ("getset k w", "$1\r\nv\r\n"),
        ("pttl k", ":-1\r\n"),
        ("set k v pxat 9", "+OK\r\n"),
        ("mset k x", "+OK\r\n"),
        ("pttl k", ":-1\r\n"),
        ("set k v ex 5", "+OK\r\n"),
        ("persist k", ":1\r\n"),
        ("persist k", ":0\r\n"),
        ("persist nothing", ":0\r\n"),
        ("pttl k", ":-1\r\n"),
        ("set gone v pxat 1", "+OK\r\n"),
    ]);
    rig.now = 2;
    rig.check(&[("get gone", "$-1\r\n")]);
    rig.check(&[
        (
            "set k v px 9223372036854775807",
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            "pexpire k 9223372036854775807",
            "-ERR invalid expire time in 'pexpire' command\r\n",
        ),
    ]);
}

#[test]
fn expire_options_behave_as_in_redis() {
    let mut rig = Rig::new();
    rig.now = 0;
    rig.check(&[
        ("expire nothing 10", ":0\r\n"),
        ("set k v", "+OK\r\n"),
        ("expire k 10 xx", ":0\r\n"),
        ("expire k 10 gt", ":0\r\n"),
        ("expire k 10 nx", ":1\r\n"),
        ("expire k 20 nx", ":0\r\n"),
        ("ttl k", ":10\r\n"),
        ("expire k 5 gt", ":0\r\n"),
        ("expire k 20 gt", ":1\r\n"),
        ("expire k 30 lt", ":0\r\n"),
        ("expire k 15 lt xx", ":1\r\n"),
        ("ttl k", ":15\r\n"),
        ("pexpire k 1500", ":1\r\n"),
        ("pttl k", ":1500\r\n"),
        ("set p v", "+OK\r\n"),
        ("expire p 100 lt", ":1\r\n"),
        ("expire p 0", ":1\r\n"),
        ("exists p", ":0\r\n"),
        ("set q v", "+OK\r\n"),
        ("expire q -5", ":1\r\n"),
        ("get q", "$-1\r\n"),
    ]);
}

#[test]
fn a_deadline_survives_a_restart() {
    let mut rig = Rig::new();
    rig.now = 1_000;
    rig.check(&[("set k v ex 100", "+OK\r\n")]);
    let engine = rig.x.into_engine();
    let mut x = Executor::new(engine, server());
    let mut s = x.connect();
    let req = parse(&[b"ttl", b"k"]).unwrap();
    assert_eq!(x.execute(&mut s, req, 51_000).to_bytes(), b":50\r\n");
}

#[test]
fn databases_are_isolated() {
    let mut rig = Rig::new();
    rig.check(&[
        ("set k zero", "+OK\r\n"),
        ("select 1", "+OK\r\n"),
        ("get k", "$-1\r\n"),
        ("set k one", "+OK\r\n"),
        ("set j one", "+OK\r\n"),
        ("dbsize", ":2\r\n"),
        ("select 0", "+OK\r\n"),
        ("get k", "$4\r\nzero\r\n"),
        ("dbsize", ":1\r\n"),
        ("select 1", "+OK\r\n"),
        ("flushdb", "+OK\r\n"),
        ("dbsize", ":0\r\n"),
        ("select 0", "+OK\r\n"),
        ("get k", "$4\r\nzero\r\n"),
    ]);
    // Another connection starts in database 0.
    let mut other = rig.x.connect();
    rig.check(&[("select 15", "+OK\r\n")]);
    let req = parse(&[b"get", b"k"]).unwrap();
    assert_eq!(
        rig.x.execute(&mut other, req, 0).to_bytes(),
        b"$4\r\nzero\r\n"
    );
}

#[test]
fn info_has_redis_sections() {
    let mut rig = Rig::new();
    rig.now = 3_601_000;
    rig.check(&[
        ("set a 1", "+OK\r\n"),
        ("set b 1 ex 100", "+OK\r\n"),
        ("select 3", "+OK\r\n"),
        ("set c 1", "+OK\r\n"),
        ("get nothing", "$-1\r\n"),
        ("info keyspace", "$76\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n\r\n"),
        ("info nothing", "$0\r\n\r\n"),
        ("info persistence", "$94\r\n# Persistence\r\nloading:0\r\naof_enabled:1\r\nrdb_bgsave_in_progress:0\r\naof_rewrite_in_progress:0\r\n\r\n"),
    ]);
    let all = rig.run("info");
    let body = all.split_once("\r\n").unwrap().1;
    assert!(
        body.starts_with("# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n"),
        "{body}"
    );
    assert!(body.contains(
        "process_id:42\r\ntcp_port:6379\r\nuptime_in_seconds:3600\r\nuptime_in_days:0\r\n"
    ));
    assert!(body.contains("\r\n\r\n# Persistence\r\nloading:0\r\n"));
    assert!(body.contains(
        "\r\n\r\n# Stats\r\ntotal_connections_received:1\r\ntotal_commands_processed:8\r\n"
    ));
    assert!(body.contains("keyspace_hits:0\r\nkeyspace_misses:1\r\nexpired_keys:0\r\n"));
    assert!(body.ends_with("\r\n\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n\r\n"));
    for form in ["info default", "info all", "info everything"] {
        let body = rig.run(form);
        let headers: Vec<&str> = body.split("\r\n").filter(|l| l.starts_with('#')).collect();
        assert_eq!(
            headers,
            ["# Server", "# Persistence", "# Stats", "# Keyspace"],
            "{form}"
        );
    }
    let two = rig.run("info stats server");
    assert!(
        two.contains("# Server\r\n")
            && two.contains("\r\n\r\n# Stats\r\n")
            && !two.contains("Keyspace")
    );
}

#[test]
fn config_get_and_command_satisfy_clients() {
    let mut rig = Rig::new();
    rig.check(&[
        ("config get save", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
        (
            "config get appendonly",
            "*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n",
        ),
        (
            "CONFIG GET SAVE appendonly",
            "*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n",
        ),
        ("config get nothing", "*0\r\n"),
        ("config get data*", "*2\r\n$9\r\ndatabases\r\n$2\r\n16\r\n"),
        ("command", "*0\r\n"),
        ("command docs", "*0\r\n"),
        ("command docs get", "*0\r\n"),
        ("command count", ":28\r\n"),
    ]);
    assert!(rig.run("config get *").starts_with("*10\r\n$4\r\nsave\r\n"));
    assert!(!rig.s.closing());
    rig.check(&[("quit", "+OK\r\n")]);
    assert!(rig.s.closing());
}

#[test]
fn a_pipelined_chunk_replies_in_order() {
    let mut rig = Rig::new();
    let mut d = Decoder::new(Limits::default());
    let mut out = Vec::new();
    let input = b"SET a 1\r\n*2\r\n$4\r\nINCR\r\n$1\r\na\r\nGET a\r\nNOPE x\r\nGET";
    for chunk in input.chunks(5) {
        d.feed(chunk);
        while let Some(frame) = d.next().unwrap() {
            out.extend_from_slice(rig.args(&frame.args()).as_bytes());
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&out),
        "+OK\r\n:2\r\n$1\r\n2\r\n-ERR unknown command 'NOPE', with args beginning with: 'x' \r\n"
    );
}
