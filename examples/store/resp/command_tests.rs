//! Command parsing: the typed requests, and every error reply byte for
//! byte as Redis 7 words it.

use super::command::{Condition, Expire, Introspect, Request, Scan, Set, SetExpiry, parse};

/// Parses a command line split at spaces.
fn p(line: &str) -> Result<Request, Vec<u8>> {
    let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
    parse(&args).map_err(|r| r.to_bytes())
}

/// The error reply for `line`.
fn err(line: &str) -> String {
    match p(line) {
        Ok(r) => panic!("{line}: parsed as {r:?}"),
        Err(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[test]
fn unknown_commands_list_their_first_arguments() {
    assert_eq!(
        err("FOO a b"),
        "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
    );
    assert_eq!(
        err("foo"),
        "-ERR unknown command 'foo', with args beginning with: \r\n"
    );
    let long = "x".repeat(200);
    assert_eq!(
        err(&format!("foo {long} y")),
        format!(
            "-ERR unknown command 'foo', with args beginning with: '{}' \r\n",
            "x".repeat(128)
        )
    );
    assert_eq!(
        err(&format!("{long} y")),
        format!(
            "-ERR unknown command '{}', with args beginning with: 'y' \r\n",
            "x".repeat(128)
        )
    );
    // The list stops once it reaches 128 bytes; each argument is cut to
    // what is left.
    // (two arguments fill 126 bytes, leaving 2 for the third)
    let sixty = "a".repeat(60);
    assert_eq!(
        err(&format!("foo {sixty} {sixty} {sixty}")),
        format!(
            "-ERR unknown command 'foo', with args beginning with: '{sixty}' '{sixty}' '{}' \r\n",
            "a".repeat(2)
        )
    );
    let parsed = parse(&[b"foo\r\nbar", b"a\0b"]).unwrap_err().to_bytes();
    assert_eq!(
        parsed,
        b"-ERR unknown command 'foo  bar', with args beginning with: 'a' \r\n"
    );
}

#[test]
fn wrong_arities_name_the_command() {
    let cases = [
        ("get", "get"),
        ("GET a b", "get"),
        ("set k", "set"),
        ("getset k", "getset"),
        ("del", "del"),
        ("exists", "exists"),
        ("mget", "mget"),
        ("mset k", "mset"),
        ("mset k v k2", "mset"),
        ("incr", "incr"),
        ("decr a b", "decr"),
        ("incrby k", "incrby"),
        ("decrby k", "decrby"),
        ("append k", "append"),
        ("strlen", "strlen"),
        ("expire k", "expire"),
        ("pexpire k", "pexpire"),
        ("ttl", "ttl"),
        ("pttl", "pttl"),
        ("persist", "persist"),
        ("scan", "scan"),
        ("dbsize x", "dbsize"),
        ("select", "select"),
        ("echo", "echo"),
        ("echo a b", "echo"),
        ("ping a b", "ping"),
        ("config", "config"),
        ("config get", "config|get"),
        ("command count x", "command|count"),
    ];
    for (line, name) in cases {
        assert_eq!(
            err(line),
            format!("-ERR wrong number of arguments for '{name}' command\r\n"),
            "{line}"
        );
    }
}

#[test]
fn unknown_subcommands_suggest_help() {
    assert_eq!(
        err("config FOO x"),
        "-ERR unknown subcommand 'FOO'. Try CONFIG HELP.\r\n"
    );
    assert_eq!(
        err("command foo"),
        "-ERR unknown subcommand 'foo'. Try COMMAND HELP.\r\n"
    );
}

#[test]
fn simple_commands_parse() {
    assert_eq!(p("PING"), Ok(Request::Ping(None)));
    assert_eq!(p("ping hi"), Ok(Request::Ping(Some(b("hi")))));
    assert_eq!(p("echo hi"), Ok(Request::Echo(b("hi"))));
    assert_eq!(p("gEt k"), Ok(Request::Get(b("k"))));
    assert_eq!(
        p("getset k v"),
        Ok(Request::GetSet {
            key: b("k"),
            value: b("v")
        })
    );
    assert_eq!(
        p("del a b a"),
        Ok(Request::Del(vec![b("a"), b("b"), b("a")]))
    );
    assert_eq!(p("exists a"), Ok(Request::Exists(vec![b("a")])));
    assert_eq!(p("mget a b"), Ok(Request::MGet(vec![b("a"), b("b")])));
    assert_eq!(
        p("mset a 1 b 2"),
        Ok(Request::MSet(vec![(b("a"), b("1")), (b("b"), b("2"))]))
    );
    assert_eq!(p("incr k"), Ok(Request::IncrBy { key: b("k"), by: 1 }));
    assert_eq!(
        p("decr k"),
        Ok(Request::IncrBy {
            key: b("k"),
            by: -1
        })
    );
    assert_eq!(
        p("incrby k -5"),
        Ok(Request::IncrBy {
            key: b("k"),
            by: -5
        })
    );
    assert_eq!(
        p("decrby k 5"),
        Ok(Request::IncrBy {
            key: b("k"),
            by: -5
        })
    );
    assert_eq!(
        p("append k v"),
        Ok(Request::Append {
            key: b("k"),
            value: b("v")
        })
    );
    assert_eq!(p("strlen k"), Ok(Request::StrLen(b("k"))));
    assert_eq!(
        p("ttl k"),
        Ok(Request::Ttl {
            key: b("k"),
            millis: false
        })
    );
    assert_eq!(
        p("pttl k"),
        Ok(Request::Ttl {
            key: b("k"),
            millis: true
        })
    );
    assert_eq!(p("persist k"), Ok(Request::Persist(b("k"))));
    assert_eq!(p("dbsize"), Ok(Request::DbSize));
    assert_eq!(p("select 15"), Ok(Request::Select(15)));
    assert_eq!(p("flushdb"), Ok(Request::FlushDb));
    assert_eq!(p("flushdb ASYNC"), Ok(Request::FlushDb));
    assert_eq!(p("flushdb sync"), Ok(Request::FlushDb));
    assert_eq!(p("info"), Ok(Request::Info(vec![])));
    assert_eq!(
        p("info Server keyspace"),
        Ok(Request::Info(vec![b("server"), b("keyspace")]))
    );
    assert_eq!(
        p("config get save appendonly"),
        Ok(Request::ConfigGet(vec![b("save"), b("appendonly")]))
    );
    assert_eq!(p("command"), Ok(Request::Command(Introspect::All)));
    assert_eq!(p("command count"), Ok(Request::Command(Introspect::Count)));
    assert_eq!(
        p("command docs get"),
        Ok(Request::Command(Introspect::Docs))
    );
    assert_eq!(p("quit"), Ok(Request::Quit));
}

fn set(condition: Option<Condition>, get: bool, expiry: SetExpiry) -> Result<Request, Vec<u8>> {
    Ok(Request::Set(Set {
        key: b("k"),
        value: b("v"),
        condition,
        get,
        expiry,
    }))
}

#[test]
fn set_takes_the_option_combinations_redis_allows() {
    assert_eq!(p("set k v"), set(None, false, SetExpiry::Clear));
    assert_eq!(p("set k v ex 10"), set(None, false, SetExpiry::In(10_000)));
    assert_eq!(p("set k v PX 10"), set(None, false, SetExpiry::In(10)));
    assert_eq!(
        p("set k v exat 10"),
        set(None, false, SetExpiry::At(10_000))
    );
    assert_eq!(p("set k v pxat 10"), set(None, false, SetExpiry::At(10)));
    assert_eq!(
        p("set k v nx"),
        set(Some(Condition::Nx), false, SetExpiry::Clear)
    );
    assert_eq!(
        p("set k v xx px 5 get"),
        set(Some(Condition::Xx), true, SetExpiry::In(5))
    );
    assert_eq!(
        p("set k v nx nx ex 1 ex 2"),
        set(Some(Condition::Nx), false, SetExpiry::In(2000))
    );
    assert_eq!(p("set k v keepttl get"), set(None, true, SetExpiry::Keep));
    assert_eq!(
        p("set k v ex 9223372036854775"),
        set(None, false, SetExpiry::In(9_223_372_036_854_775_000))
    );
    assert_eq!(
        p("set k v px 9223372036854775807"),
        set(None, false, SetExpiry::In(i64::MAX))
    );
}

#[test]
fn set_refuses_what_redis_refuses() {
    for line in [
        "set k v nx xx",
        "set k v xx nx",
        "set k v ex",
        "set k v ex 1 px 1",
        "set k v keepttl ex 1",
        "set k v ex 1 keepttl",
        "set k v foo",
        "set k v exat 1 ex 1",
        "set k v nx foo ex 1",
    ] {
        assert_eq!(err(line), "-ERR syntax error\r\n", "{line}");
    }
    for line in [
        "set k v ex abc",
        "set k v px 1.5",
        "set k v ex 99999999999999999999",
    ] {
        assert_eq!(
            err(line),
            "-ERR value is not an integer or out of range\r\n",
            "{line}"
        );
    }
    for line in [
        "set k v ex 0",
        "set k v ex -1",
        "set k v px 0",
        "set k v ex 9223372036854776",
        "set k v exat 0",
    ] {
        assert_eq!(
            err(line),
            "-ERR invalid expire time in 'set' command\r\n",
            "{line}"
        );
    }
    // A syntax error is found before a bad number.
    assert_eq!(err("set k v ex abc foo"), "-ERR syntax error\r\n");
}

#[test]
fn integers_are_checked() {
    for line in [
        "incrby k abc",
        "incrby k 1.0",
        "decrby k +1",
        "incrby k 99999999999999999999",
        "select x",
    ] {
        assert_eq!(
            err(line),
            "-ERR value is not an integer or out of range\r\n",
            "{line}"
        );
    }
    assert_eq!(
        err("decrby k -9223372036854775808"),
        "-ERR decrement would overflow\r\n"
    );
    assert_eq!(
        p("incrby k -9223372036854775808"),
        Ok(Request::IncrBy {
            key: b("k"),
            by: i64::MIN
        })
    );
    assert_eq!(err("select 16"), "-ERR DB index is out of range\r\n");
    assert_eq!(err("select -1"), "-ERR DB index is out of range\r\n");
    assert_eq!(
        err("select 99999999999"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(err("flushdb foo"), "-ERR syntax error\r\n");
    assert_eq!(err("flushdb async x"), "-ERR syntax error\r\n");
}

fn expire(millis: i64, flags: [bool; 4], name: &'static str) -> Result<Request, Vec<u8>> {
    let [nx, xx, gt, lt] = flags;
    Ok(Request::Expire(Expire {
        key: b("k"),
        millis,
        nx,
        xx,
        gt,
        lt,
        name,
    }))
}

#[test]
fn expire_parses_and_checks_like_redis() {
    let none = [false; 4];
    assert_eq!(p("expire k 10"), expire(10_000, none, "expire"));
    assert_eq!(p("expire k -1"), expire(-1000, none, "expire"));
    assert_eq!(p("pexpire k 10"), expire(10, none, "pexpire"));
    assert_eq!(
        p("expire k 1 xx GT"),
        expire(1000, [false, true, true, false], "expire")
    );
    assert_eq!(
        p("expire k 1 nx"),
        expire(1000, [true, false, false, false], "expire")
    );
    assert_eq!(err("expire k 1 foo"), "-ERR Unsupported option foo\r\n");
    assert_eq!(
        err("expire k 1 nx xx"),
        "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
    );
    assert_eq!(
        err("expire k 1 nx lt"),
        "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
    );
    assert_eq!(
        err("expire k 1 gt lt"),
        "-ERR GT and LT options at the same time are not compatible\r\n"
    );
    assert_eq!(
        err("expire k abc"),
        "-ERR value is not an integer or out of range\r\n"
    );
    // Options are checked before the number.
    assert_eq!(err("expire k abc foo"), "-ERR Unsupported option foo\r\n");
    assert_eq!(
        err("expire k 9223372036854776"),
        "-ERR invalid expire time in 'expire' command\r\n"
    );
    assert_eq!(
        err("expire k -9223372036854776"),
        "-ERR invalid expire time in 'expire' command\r\n"
    );
}

#[test]
fn scan_parses_its_options() {
    let scan = |cursor, pattern: Option<&str>, count, kind: Option<&str>| {
        Ok(Request::Scan(Scan {
            cursor,
            pattern: pattern.map(b),
            count,
            kind: kind.map(b),
        }))
    };
    assert_eq!(p("scan 0"), scan(0, None, 10, None));
    assert_eq!(
        p("scan 17 MATCH k* count 5 TYPE String"),
        scan(17, Some("k*"), 5, Some("string"))
    );
    assert_eq!(p("scan 0 count 5 count 7"), scan(0, None, 7, None));
    assert_eq!(err("scan abc"), "-ERR invalid cursor\r\n");
    assert_eq!(err("scan -1"), "-ERR invalid cursor\r\n");
    assert_eq!(err("scan 0 count 0"), "-ERR syntax error\r\n");
    assert_eq!(err("scan 0 count -3"), "-ERR syntax error\r\n");
    assert_eq!(
        err("scan 0 count x"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(err("scan 0 match"), "-ERR syntax error\r\n");
    assert_eq!(err("scan 0 foo bar"), "-ERR syntax error\r\n");
    assert_eq!(err("scan abc foo"), "-ERR invalid cursor\r\n");
}
