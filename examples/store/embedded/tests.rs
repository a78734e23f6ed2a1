use super::*;
use crate::test_dir::TempDir;
use std::collections::BTreeMap;

const T: TableId = TableId(0);

fn opts(dir: &TempDir, shards: usize) -> StoreOptions {
    StoreOptions {
        shards: Some(shards),
        cache_bytes: 1 << 20,
        ..StoreOptions::new(&dir.0)
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

#[test]
fn point_operations_round_trip_and_survive_reopen() {
    let dir = TempDir::new();
    for shards in [1, 2] {
        let sub = TempDir::new();
        let mut s = Store::open(opts(&sub, shards)).unwrap();
        assert_eq!(s.get(T, b"absent").unwrap(), None);
        assert!(!s.exists(T, b"absent").unwrap());
        for i in 0..200 {
            s.put(T, &key(i), format!("v{i}")).unwrap();
        }
        s.put(TableId(7), &key(1), "other table").unwrap();
        assert_eq!(s.get(T, &key(5)).unwrap().as_deref(), Some(&b"v5"[..]));
        assert!(s.exists(T, &key(199)).unwrap());
        assert!(s.delete(T, &key(5)).unwrap());
        assert!(!s.delete(T, &key(5)).unwrap());
        assert_eq!(s.get(T, &key(5)).unwrap(), None);
        let mut batch = WriteBatch::new();
        batch
            .delete(T, &key(7))
            .put(T, &key(7), "again")
            .delete(T, &key(8));
        assert_eq!(batch.len(), 3);
        assert!(!batch.is_empty() && WriteBatch::new().is_empty());
        assert_eq!(s.dir(), sub.0.as_path());
        s.write(batch).unwrap();
        assert_eq!(s.get(T, &key(7)).unwrap().as_deref(), Some(&b"again"[..]));
        assert!(!s.exists(T, &key(8)).unwrap());
        let keys = [key(9), key(8), key(10)];
        let got = s.get_many(T, &keys).unwrap();
        assert_eq!(got, vec![Some(b"v9".to_vec()), None, Some(b"v10".to_vec())]);
        s.close().unwrap();

        let mut s = Store::open(opts(&sub, shards)).unwrap();
        assert_eq!(s.get(T, &key(5)).unwrap(), None);
        assert_eq!(s.get(T, &key(6)).unwrap().as_deref(), Some(&b"v6"[..]));
        assert_eq!(
            s.get(TableId(7), &key(1)).unwrap().as_deref(),
            Some(&b"other table"[..])
        );
        assert_eq!(s.get(TableId(8), &key(1)).unwrap(), None);
        drop(s);
    }
    drop(dir);
}

#[test]
fn keys_live_on_the_servers_shard() {
    let dir = TempDir::new();
    let mut s = Store::open(opts(&dir, 3)).unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..300 {
        batch.put(TableId(2), &key(i), key(i));
    }
    s.write(batch).unwrap();
    for i in 0..300 {
        assert_eq!(
            s.shard_of(TableId(2), &key(i)),
            crate::serve::shard_of(2, &key(i), 3)
        );
    }
    s.close().unwrap();
    // Each shard's file holds exactly the keys the server would route to it.
    for index in 0..3u32 {
        let file = dir.file(&format!("shard-{index}.data"));
        let shard = Shard::open(
            &file,
            ShardOptions {
                page_size: PageSize::MIN,
                layout: ShardLayout {
                    count: 3,
                    index,
                    partitioning: Partitioning::Hash,
                },
                wal: WalConfig {
                    segment_bytes: 8 << 20,
                },
                cache_bytes: 0,
            },
        )
        .unwrap();
        let mut held = 0;
        for i in 0..300 {
            let mine = crate::serve::shard_of(2, &key(i), 3) == index as usize;
            assert_eq!(shard.get(TableId(2), &key(i)).unwrap().is_some(), mine);
            held += usize::from(mine);
        }
        assert!(held > 50, "shard {index} holds {held} of 300");
    }
}

#[test]
fn another_shard_count_is_refused() {
    let dir = TempDir::new();
    Store::open(opts(&dir, 2)).unwrap().close().unwrap();
    match Store::open(opts(&dir, 3)) {
        Err(OpenError::ShardCount {
            recorded: 2,
            requested: 3,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Store::open(opts(&dir, 0)),
        Err(OpenError::NoShards)
    ));
    // No count: the directory's.
    let s = Store::open(StoreOptions {
        shards: None,
        ..opts(&dir, 1)
    })
    .unwrap();
    assert_eq!(s.shards(), 2);
    // The umbrella error names the cause.
    let e: Error = Store::open(opts(&dir, 5)).unwrap_err().into();
    assert!(e.to_string().contains("2 shards"), "{e}");
}

#[test]
fn bad_input_is_refused_typed_and_changes_nothing() {
    let dir = TempDir::new();
    let mut s = Store::open(opts(&dir, 2)).unwrap();
    let long = vec![b'k'; MAX_KEY + 1];
    assert!(matches!(
        s.get(T, &long),
        Err(ReadError::KeyTooLong { len, max: MAX_KEY }) if len == MAX_KEY + 1
    ));
    assert!(matches!(
        s.exists(T, &long),
        Err(ReadError::KeyTooLong { .. })
    ));
    assert!(matches!(
        s.put(T, &long, "v"),
        Err(WriteError::KeyTooLong { .. })
    ));
    assert!(matches!(
        s.delete(T, &long),
        Err(WriteError::KeyTooLong { .. })
    ));
    assert!(matches!(
        s.scan(T, &long, None, 10),
        Err(ScanError::KeyTooLong { .. })
    ));
    assert!(matches!(s.scan(T, b"", None, 0), Err(ScanError::ZeroLimit)));
    assert!(matches!(
        s.write(WriteBatch::new()),
        Err(WriteError::EmptyBatch)
    ));
    // Zeroed and never touched: the check comes before any copy.
    let huge = vec![0u8; MAX_VALUE + 1];
    let mut batch = WriteBatch::new();
    batch.put(T, b"a", "fine").put(T, b"b", huge);
    assert!(matches!(
        s.write(batch),
        Err(WriteError::ValueTooLarge { len, max: MAX_VALUE }) if len == MAX_VALUE + 1
    ));
    // The good half of the refused batch was not applied.
    assert_eq!(s.get(T, b"a").unwrap(), None);
    let e: Error = s.put(T, &long, "v").unwrap_err().into();
    assert!(matches!(e, Error::Write(_)));
}

#[test]
fn large_values_round_trip() {
    let dir = TempDir::new();
    let mut s = Store::open(opts(&dir, 2)).unwrap();
    let big: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i * 31 % 251) as u8).collect();
    s.put(T, b"big", big.clone()).unwrap();
    assert_eq!(s.get(T, b"big").unwrap().as_deref(), Some(&big[..]));
    s.close().unwrap();
    let mut s = Store::open(opts(&dir, 2)).unwrap();
    assert_eq!(s.get(T, b"big").unwrap().as_deref(), Some(&big[..]));
}

#[test]
fn scans_are_ordered_over_shards_with_a_cursor() {
    let dir = TempDir::new();
    let mut s = Store::open(opts(&dir, 3)).unwrap();
    let mut model = BTreeMap::new();
    let mut batch = WriteBatch::new();
    for i in (0..1000).rev() {
        let k = key(i * 7 % 1000);
        let v = format!("value {i}").into_bytes();
        batch.put(T, &k, v.clone());
        model.insert(k, v);
    }
    batch.put(TableId(1), b"elsewhere", "x");
    s.write(batch).unwrap();
    for limit in [1, 7, 100, 5000] {
        let mut got = Vec::new();
        let mut start = Vec::new();
        loop {
            let page = s.scan(T, &start, None, limit).unwrap();
            assert!(page.entries.len() <= limit);
            got.extend(page.entries);
            match page.cursor {
                Some(c) => start = c,
                None => break,
            }
        }
        let want: Vec<_> = model.clone().into_iter().collect();
        assert_eq!(got, want, "limit {limit}");
    }
    // A bounded range: [key(100), key(200)).
    let page = s.scan(T, &key(100), Some(&key(200)), 1000).unwrap();
    let want: Vec<_> = model
        .range(key(100)..key(200))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(page.entries, want);
    assert_eq!(page.cursor, None);
    let page = s.scan(T, &key(100), Some(&key(200)), 40).unwrap();
    assert_eq!(page.entries, want[..40]);
    let rest = s
        .scan(T, &page.cursor.unwrap(), Some(&key(200)), 1000)
        .unwrap();
    assert_eq!(rest.entries, want[40..]);
}

#[test]
fn merge_takes_the_smallest_keys_and_points_past_them() {
    let e = |k: &[u8]| (k.to_vec(), Vec::new());
    let a = Scan {
        entries: vec![e(b"a"), e(b"d")],
        resume: Some(b"f".to_vec()),
    };
    let b = Scan {
        entries: vec![e(b"b"), e(b"c")],
        resume: None,
    };
    let page = merge(vec![a, b], 3);
    assert_eq!(page.entries, vec![e(b"a"), e(b"b"), e(b"c")]);
    assert_eq!(page.cursor, Some(b"c\0".to_vec()));
    let done = merge(
        vec![
            Scan {
                entries: vec![e(b"x")],
                resume: None,
            },
            Scan::default(),
        ],
        3,
    );
    assert_eq!((done.entries.len(), done.cursor), (1, None));
}

#[test]
fn successor_stays_within_the_key_bound() {
    assert_eq!(successor(b"ab"), Some(b"ab\0".to_vec()));
    let mut k = vec![b'a'; MAX_KEY];
    assert_eq!(successor(&k).unwrap(), {
        let mut s = vec![b'a'; MAX_KEY - 1];
        s.push(b'b');
        s
    });
    k[MAX_KEY - 1] = 0xff;
    assert_eq!(successor(&k).unwrap(), {
        let mut s = vec![b'a'; MAX_KEY - 2];
        s.push(b'b');
        s
    });
    assert_eq!(successor(&vec![0xff; MAX_KEY]), None);
}

#[test]
fn threads_and_tickets_share_group_commits() {
    let dir = TempDir::new();
    let mut s = Store::open(opts(&dir, 2)).unwrap();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let mut c = s.client();
            std::thread::spawn(move || {
                for i in 0..100 {
                    c.put(T, &key(t * 1000 + i), key(i)).unwrap();
                }
            })
        })
        .collect();
    // One caller with many writes in flight.
    let tickets: Vec<_> = (0..100)
        .map(|i| {
            let mut b = WriteBatch::new();
            b.put(T, &key(9000 + i), "t");
            s.submit(b).unwrap()
        })
        .collect();
    for t in tickets {
        t.wait().unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    let mut n = 0;
    let mut start = Vec::new();
    loop {
        let page = s.scan(T, &start, None, 128).unwrap();
        n += page.entries.len();
        match page.cursor {
            Some(c) => start = c,
            None => break,
        }
    }
    assert_eq!(n, 500);
    assert_eq!(s.get(T, &key(3099)).unwrap(), Some(key(99)));
}

#[test]
fn never_syncs_on_request_and_drop_keeps_writes() {
    let dir = TempDir::new();
    let o = StoreOptions {
        sync: SyncPolicy::Never,
        checkpoint_writes: 50,
        ..opts(&dir, 2)
    };
    let mut s = Store::open(o.clone()).unwrap();
    for i in 0..120 {
        s.put(T, &key(i), "n").unwrap();
    }
    s.sync().unwrap();
    s.checkpoint().unwrap();
    s.put(T, b"late", "after the checkpoint").unwrap();
    // Dropped, not closed: the workers' shutdown syncs and checkpoints.
    drop(s);
    let mut s = Store::open(o).unwrap();
    assert_eq!(s.get(T, &key(119)).unwrap().as_deref(), Some(&b"n"[..]));
    assert_eq!(
        s.get(T, b"late").unwrap().as_deref(),
        Some(&b"after the checkpoint"[..])
    );
}

#[test]
fn an_interval_store_acknowledges_after_apply_and_keeps_writes_across_reopen() {
    let dir = TempDir::new();
    let o = StoreOptions {
        sync: SyncPolicy::Interval(std::time::Duration::from_millis(20)),
        ..opts(&dir, 2)
    };
    let mut s = Store::open(o.clone()).unwrap();
    for i in 0..50 {
        s.put(T, &key(i), "i").unwrap();
    }
    // Quiet for several intervals: the workers' ticks sync the WAL.
    std::thread::sleep(std::time::Duration::from_millis(100));
    s.close().unwrap();
    let mut s = Store::open(o).unwrap();
    assert_eq!(s.get(T, &key(49)).unwrap().as_deref(), Some(&b"i"[..]));
}
