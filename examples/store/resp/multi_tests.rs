//! SCAN over the model (every live key exactly once, in order, from
//! resumable cursors) and the split of multi-key requests over shards
//! (the parts' merged replies and the shards' final state equal one
//! engine's).

use super::command::{Request, parse};
use super::exec_tests::Rig;
use super::reply::Reply;
use super::split::{Merge, Route};
use proptest::prelude::*;

/// Runs SCAN from cursor 0 to the end with `count` (and `extra`
/// options); every key returned, in order, and the batches taken.
fn scan_all(rig: &mut Rig, count: usize, extra: &[&[u8]]) -> (Vec<Vec<u8>>, usize) {
    let mut cursor = b"0".to_vec();
    let mut keys = Vec::new();
    let count = count.to_string();
    for batches in 1.. {
        let mut args: Vec<&[u8]> = vec![b"scan", &cursor, b"count", count.as_bytes()];
        args.extend_from_slice(extra);
        let Reply::Array(parts) = rig.reply(&args) else {
            panic!("not an array")
        };
        let [Reply::Bulk(next), Reply::Array(batch)] = parts.as_slice() else {
            panic!("{parts:?}")
        };
        keys.extend(batch.iter().map(|k| match k {
            Reply::Bulk(k) => k.clone(),
            other => panic!("{other:?}"),
        }));
        if next.as_slice() == b"0" {
            return (keys, batches);
        }
        cursor = next.clone();
    }
    unreachable!()
}

/// A few hundred keys in a scrambled order, some expiring, and keys in
/// another database; the live keys of database 0, sorted.
fn populate(rig: &mut Rig, n: u32) -> Vec<Vec<u8>> {
    rig.now = 0;
    let mut live = vec![Vec::new()];
    rig.args(&[b"set", b"", b"empty key"]);
    let mut x: u32 = 7;
    for _ in 0..n {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345) % 100_003;
        let key = format!("key:{x}").into_bytes();
        if x % 7 == 0 {
            rig.args(&[b"set", &key, b"v", b"px", b"10"]);
        } else {
            rig.args(&[b"set", &key, b"v"]);
            live.push(key);
        }
    }
    rig.args(&[b"select", b"1"]);
    rig.args(&[b"set", b"key:other", b"v"]);
    rig.args(&[b"select", b"0"]);
    rig.now = 100;
    live.sort();
    live.dedup();
    live
}

#[test]
fn scan_replies_as_redis_does() {
    let mut rig = Rig::new();
    rig.check(&[
        ("scan 0", "*2\r\n$1\r\n0\r\n*0\r\n"),
        ("mset c 1 a 1 b 1", "+OK\r\n"),
        (
            "scan 0 count 2",
            "*2\r\n$1\r\n1\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n",
        ),
        ("scan 1 count 2", "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nc\r\n"),
        // A cursor may be resumed again (a retrying client).
        (
            "scan 1 count 5 match c",
            "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nc\r\n",
        ),
        (
            "scan 0 match [ab]",
            "*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n",
        ),
        ("scan 999 count 2", "-ERR invalid cursor\r\n"),
    ]);
}

#[test]
fn scan_returns_every_live_key_once_in_order() {
    let mut rig = Rig::new();
    let live = populate(&mut rig, 600);
    for count in [1, 7, 10, 64, 1000] {
        let (keys, batches) = scan_all(&mut rig, count, &[]);
        assert_eq!(keys, live, "count {count}");
        assert!(
            batches >= live.len() / count,
            "count {count}: {batches} batches"
        );
    }
    let (keys, _) = scan_all(&mut rig, 9, &[b"match", b"key:1*"]);
    let want: Vec<_> = live
        .iter()
        .filter(|k| k.starts_with(b"key:1"))
        .cloned()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(keys, want);
    let (keys, _) = scan_all(&mut rig, 9, &[b"match", b"*", b"type", b"string"]);
    assert_eq!(keys, live);
    // The expired keys were removed as the scans came across them.
    assert_eq!(rig.run("dbsize"), format!(":{}\r\n", live.len()));
}

#[test]
fn old_cursors_are_forgotten_not_misplaced() {
    let mut rig = Rig::new();
    rig.check(&[
        ("mset a 1 b 1", "+OK\r\n"),
        ("scan 0 count 1", "*2\r\n$1\r\n1\r\n*1\r\n$1\r\na\r\n"),
    ]);
    for _ in 0..4096 {
        rig.run("scan 0 count 1");
    }
    rig.check(&[
        ("scan 1 count 1", "-ERR invalid cursor\r\n"),
        ("scan 4097 count 1", "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nb\r\n"),
    ]);
}

#[test]
fn requests_name_their_route_and_keys() {
    let req = |line: &str| {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        parse(&args).unwrap()
    };
    assert_eq!(req("get k").route(), Route::Key(b"k"));
    assert_eq!(req("set k v ex 5").route(), Route::Key(b"k"));
    assert_eq!(req("expire k 5").route(), Route::Key(b"k"));
    assert_eq!(req("mget a b").route(), Route::Keys(vec![b"a", b"b"]));
    assert_eq!(req("mset a 1 b 2").keys(), [b"a", b"b"]);
    assert_eq!(req("del a b a").keys(), [b"a", b"b", b"a"]);
    assert_eq!(req("incr n").keys(), [b"n"]);
    assert_eq!(req("ping").route(), Route::Local);
    assert_eq!(req("select 2").route(), Route::Local);
    assert!(req("ping").keys().is_empty());
    for line in ["scan 0", "dbsize", "flushdb", "info"] {
        assert_eq!(req(line).route(), Route::All, "{line}");
    }
    let (parts, merge) = req("del a b a").split();
    assert_eq!(merge, Merge::Sum);
    assert_eq!(parts, [req("del a"), req("del b"), req("del a")]);
    let (parts, merge) = req("mset a 1 b 2").split();
    assert_eq!(
        (parts, merge),
        (vec![req("mset a 1"), req("mset b 2")], Merge::AllOk)
    );
    assert_eq!(req("get k").split(), (vec![req("get k")], Merge::One));
}

#[test]
fn a_failed_part_is_the_merged_reply() {
    let err = Reply::error("ERR injected failure");
    assert_eq!(
        Merge::Sum.merge(vec![Reply::Integer(1), err.clone(), Reply::Integer(1)]),
        err
    );
    assert_eq!(
        Merge::Concat.merge(vec![Reply::Array(vec![Reply::Null]), err.clone()]),
        err
    );
    assert_eq!(Merge::AllOk.merge(vec![Reply::OK, err.clone()]), err);
    assert_eq!(Merge::AllOk.merge(vec![Reply::OK, Reply::OK]), Reply::OK);
}

/// The shard of a key among `n` (any fixed function will do).
fn shard(key: &[u8], n: usize) -> usize {
    key.iter().map(|&b| usize::from(b)).sum::<usize>() % n
}

/// Runs `req` split over `shards`, merging the parts' replies.
fn run_split(shards: &mut [Rig], req: Request) -> Reply {
    let n = shards.len();
    let (parts, merge) = req.split();
    let replies = parts
        .into_iter()
        .map(|part| {
            let rig = &mut shards[shard(part.keys()[0], n)];
            rig.x.execute(&mut rig.s, part, rig.now)
        })
        .collect();
    merge.merge(replies)
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"a".to_vec()),
        Just(b"b".to_vec()),
        Just(b"c".to_vec()),
        Just(b"d".to_vec()),
        Just(b"e".to_vec()),
        Just(b"f".to_vec())
    ]
}

fn multi() -> impl Strategy<Value = Request> {
    let keys = || proptest::collection::vec(key(), 1..8);
    prop_oneof![
        keys().prop_map(Request::Del),
        keys().prop_map(Request::Exists),
        keys().prop_map(Request::MGet),
        proptest::collection::vec((key(), key()), 1..6).prop_map(Request::MSet),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        // Seeded: the same inputs on every run and every machine.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_0002),
        ..ProptestConfig::default()
    })]

    /// Split over three shards, a sequence of multi-key requests gives the
    /// replies and the final values it gives on one engine.
    #[test]
    fn split_requests_merge_to_the_whole(
        setup in proptest::collection::vec((key(), 0u8..3), 0..8),
        requests in proptest::collection::vec(multi(), 1..6),
    ) {
        let mut whole = Rig::new();
        let mut shards = [Rig::new(), Rig::new(), Rig::new()];
        for (k, how) in &setup {
            // A plain value, one that expires before the requests run, or
            // one that lives on.
            let args: Vec<&[u8]> = match how {
                0 => vec![b"set", k, b"v"],
                1 => vec![b"set", k, b"old", b"pxat", b"5"],
                _ => vec![b"set", k, b"ttl", b"ex", b"100"],
            };
            whole.args(&args);
            shards[shard(k, 3)].args(&args);
        }
        for rig in std::iter::once(&mut whole).chain(shards.iter_mut()) {
            rig.now = 10;
        }
        for req in requests {
            let want = whole.x.execute(&mut whole.s, req.clone(), whole.now);
            prop_assert_eq!(run_split(&mut shards, req), want);
        }
        for k in [b"a", b"b", b"c", b"d", b"e", b"f"] {
            let rig = &mut shards[shard(k, 3)];
            for cmd in [&b"get"[..], b"pttl"] {
                prop_assert_eq!(rig.reply(&[cmd, k]), whole.reply(&[cmd, k]));
            }
        }
    }
}
