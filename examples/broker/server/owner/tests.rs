//! The owner against a real storage worker whose completions land in a
//! queue the test drains by hand: while they wait there, a batch is in
//! flight and the owner must still answer.

use super::*;
use crate::config;
use crate::test_dir::TempDir;
use shared_nothing::io::{NetConfig, NetEventKind, NetworkWorker, StorageConfig, StorageWorker};
use shared_nothing::partition::RoundRobinPartitioner;
use shared_nothing::worker::ResultQueue;
use std::net::TcpStream;
use std::sync::Arc;

/// Bounds every wait (no timing is asserted).
const WAIT: Duration = Duration::from_secs(10);

/// Real connection ids (`ConnId` has no public constructor): sockets
/// accepted by a network worker, kept open by the returned streams.
fn conn_ids(n: usize) -> (NetworkWorker, Vec<TcpStream>, Vec<ConnId>) {
    let net = NetworkWorker::start(0, NetConfig::new()).expect("network worker");
    let (sink, mut events) = ResultSink::queue();
    let addr = net
        .listen(
            "127.0.0.1:0".parse().expect("addr"),
            vec![sink],
            Arc::new(RoundRobinPartitioner::new()),
        )
        .expect("listen");
    let streams = (0..n)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let mut ids = Vec::new();
    while ids.len() < n {
        let ev = events.recv_timeout(WAIT).expect("accepted");
        if let NetEventKind::Accepted { .. } = ev.kind {
            ids.push(ev.conn);
        }
    }
    (net, streams, ids)
}

struct Rig {
    owner: Owner,
    disk: ResultQueue<StorageCompletion>,
    peers: Vec<ResultSink<Msg>>,
    out: ResultQueue<Msg>,
    _storage: StorageWorker,
}

fn rig(tmp: &TempDir, extra: &[&str]) -> Rig {
    let dir = tmp.0.to_str().expect("utf-8 temp dir").to_owned();
    let mut args = vec!["server".to_owned(), "--dir".to_owned(), dir];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cfg = config::parse(args).expect("config");
    let storage = StorageWorker::start(0, StorageConfig::new()).expect("storage worker");
    let (sink, disk) = ResultSink::queue();
    let client = storage.client(sink).expect("client");
    let (peer, out) = ResultSink::queue();
    Rig {
        owner: Owner::open(&cfg, client).expect("owner"),
        disk,
        peers: vec![peer],
        out,
        _storage: storage,
    }
}

fn frames(records: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for r in records {
        protocol::encode_frame(r, &mut v).expect("frame");
    }
    v
}

impl Rig {
    /// The token of the consumer read in flight.
    fn consumer_read(&self) -> u64 {
        self.owner
            .ops
            .iter()
            .find_map(|(t, op)| matches!(op, Op::ConsumerRead { .. }).then_some(*t))
            .expect("a consumer read in flight")
    }

    /// One round: records from `conn` arrive, then the round ends.
    fn append(&mut self, conn: ConnId, records: &[&[u8]]) {
        let msg = Msg::Append {
            log: None,
            from: 0,
            conn,
            frames: frames(records),
            count: records.len(),
            arrived: Instant::now(),
        };
        self.owner.on_message(msg, &mut self.peers);
        self.owner.commit(&mut self.peers);
    }

    /// Hands storage completions to the owner until it sends acks.
    fn acks(&mut self) -> Vec<u64> {
        for _ in 0..10_000 {
            if let Some(msg) = self.out.try_recv() {
                let Msg::Acks { bytes, .. } = msg else {
                    panic!("expected acks, got {msg:?}");
                };
                return bytes
                    .chunks_exact(8)
                    .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                    .collect();
            }
            let c = self.disk.recv_timeout(WAIT).expect("a storage completion");
            self.owner.on_disk(c, &mut self.peers);
        }
        panic!("no acks after 10000 completions");
    }
}

#[test]
fn the_owner_answers_while_a_group_commit_is_in_flight() {
    let tmp = TempDir::new();
    let mut rig = rig(&tmp, &["--fsync", "always"]);
    let (_net, _streams, ids) = conn_ids(2);
    let (producer, consumer) = (ids[0], ids[1]);

    rig.append(producer, &[b"one", b"two"]);
    assert!(
        rig.out.try_recv().is_none(),
        "acked before the storage worker answered"
    );
    assert_eq!(rig.acks(), [0, 11]);
    assert_eq!(rig.owner.log.durable_offset(), 22);

    // A second batch is submitted; its completions wait in `disk`,
    // unhandled, so its write and fdatasync are in flight as far as the
    // owner knows. The owner returned, and still serves a consumer: it
    // gets the durable records and not the one in flight.
    rig.append(producer, &[b"three"]);
    let sub = Msg::Subscribe {
        log: None,
        from: 0,
        conn: consumer,
        offset: 0,
    };
    rig.owner.on_message(sub, &mut rig.peers);
    // The storage worker reads the consumer's chunk (the owner never
    // waits for a read); only that completion is handed over.
    assert!(rig.out.try_recv().is_none(), "frames before the read");
    let read = rig.consumer_read();
    let mut held = Vec::new();
    loop {
        let c = rig.disk.recv_timeout(WAIT).expect("a storage completion");
        if c.token == read {
            rig.owner.on_disk(c, &mut rig.peers);
            break;
        }
        held.push(c);
    }
    match rig.out.try_recv() {
        Some(Msg::Frames { conn, bytes }) => {
            assert_eq!(conn, consumer);
            assert_eq!(bytes, frames(&[b"one", b"two"]));
        }
        other => panic!("expected the consumer's frames, got {other:?}"),
    }
    assert!(rig.out.try_recv().is_none(), "acked before durable");
    assert_eq!(rig.owner.log.durable_offset(), 22);

    // Its completion, once handled, releases the ack.
    for c in held {
        rig.owner.on_disk(c, &mut rig.peers);
    }
    assert_eq!(rig.acks(), [22]);
    assert_eq!(rig.owner.log.durable_offset(), 35);
}

/// A consumer read is the storage worker's: while its completion waits
/// (a cold page), the owner appends and acks as usual (issue 16: reads
/// were `pread`s on the owner's thread, so a replay delayed every ack).
#[test]
fn acks_flow_while_a_consumer_read_is_in_flight() {
    let tmp = TempDir::new();
    let mut rig = rig(&tmp, &["--fsync", "never"]);
    let (_net, _streams, ids) = conn_ids(2);
    let (producer, consumer) = (ids[0], ids[1]);
    rig.append(producer, &[b"one", b"two"]);
    assert_eq!(rig.acks(), [0, 11]);
    let sub = Msg::Subscribe {
        log: None,
        from: 0,
        conn: consumer,
        offset: 0,
    };
    rig.owner.on_message(sub, &mut rig.peers);
    let read = rig.consumer_read();
    let mut held = None;
    for round in 0..3u8 {
        rig.append(producer, &[&[round; 100]]);
        loop {
            if let Some(Msg::Acks { .. }) = rig.out.try_recv() {
                break;
            }
            let c = rig.disk.recv_timeout(WAIT).expect("a storage completion");
            if c.token == read {
                held = Some(c);
            } else {
                rig.owner.on_disk(c, &mut rig.peers);
            }
        }
    }
    let c = match held {
        Some(c) => c,
        None => loop {
            let c = rig.disk.recv_timeout(WAIT).expect("the read's completion");
            if c.token == read {
                break c;
            }
            rig.owner.on_disk(c, &mut rig.peers);
        },
    };
    rig.owner.on_disk(c, &mut rig.peers);
    match rig.out.try_recv() {
        Some(Msg::Frames { conn, bytes }) => {
            assert_eq!(conn, consumer);
            assert_eq!(bytes, frames(&[b"one", b"two"]));
        }
        other => panic!("expected the consumer's frames, got {other:?}"),
    }
}

#[test]
fn interval_acks_after_the_write_and_syncs_on_a_later_tick() {
    let tmp = TempDir::new();
    let mut rig = rig(&tmp, &["--fsync", "interval:1"]);
    let (_net, _streams, ids) = conn_ids(1);
    rig.append(ids[0], &[b"one", b"two"]);
    assert_eq!(rig.acks(), [0, 11]);
    assert_eq!(rig.owner.log.committed_offset(), 22);
    assert_eq!(rig.owner.log.durable_offset(), 0, "buffered: not synced");
    // Ticks (each one a no-op until the interval has passed) start the
    // fdatasync; its completion makes everything committed durable.
    let deadline = Instant::now() + WAIT;
    while rig.owner.log.durable_offset() < 22 {
        assert!(Instant::now() < deadline, "no interval sync");
        rig.owner.tick(&mut rig.peers);
        while let Some(c) = rig.disk.try_recv() {
            rig.owner.on_disk(c, &mut rig.peers);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(rig.owner.failed.is_none());
}

#[test]
fn retention_deletes_committed_segments_and_closes_their_files() {
    let tmp = TempDir::new();
    let mut rig = rig(
        &tmp,
        &[
            "--fsync",
            "always",
            "--segment-bytes",
            "4096",
            "--retention-bytes",
            "8192",
        ],
    );
    let (_net, _streams, ids) = conn_ids(1);
    let record = vec![b'r'; 1000];
    for _ in 0..40 {
        rig.append(ids[0], &[&record]);
        assert_eq!(rig.acks().len(), 1);
    }
    while !rig.owner.ops.is_empty() {
        let c = rig.disk.recv_timeout(WAIT).expect("a storage completion");
        rig.owner.on_disk(c, &mut rig.peers);
    }
    assert!(rig.owner.failed.is_none(), "{:?}", rig.owner.failed);
    let start = rig.owner.log.start_offset();
    assert!(start > 0, "nothing deleted");
    let open_logs = rig
        .owner
        .files
        .keys()
        .filter(|k| matches!(k, FileKey::Log(b) if *b < start))
        .count();
    assert_eq!(open_logs, 0, "deleted segments still open");
    // The storage worker removed their files (not the owner's thread).
    for entry in std::fs::read_dir(&tmp.0).expect("dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        if let Some(base) = name.split('.').next().and_then(|b| b.parse::<u64>().ok()) {
            assert!(base >= start, "{name} outlived retention");
        }
    }
    let mut cursor = rig.owner.log.locate(start).expect("locate");
    let n = rig
        .owner
        .log
        .read(&mut cursor, usize::MAX, |_, p| assert_eq!(p, record))
        .expect("read what is kept");
    assert!(n >= 8, "kept {n} records");
}

#[test]
fn rolled_segments_are_created_by_the_storage_worker_and_read_back() {
    let tmp = TempDir::new();
    // About four 1000-byte records per 4 KiB segment.
    let records: Vec<Vec<u8>> = (0..20u8).map(|i| vec![b'a' + i; 1000]).collect();
    {
        let mut rig = rig(&tmp, &["--fsync", "always", "--segment-bytes", "4096"]);
        let (_net, _streams, ids) = conn_ids(1);
        let mut acked = Vec::new();
        for pair in records.chunks(2) {
            let pair: Vec<&[u8]> = pair.iter().map(Vec::as_slice).collect();
            rig.append(ids[0], &pair);
            acked.extend(rig.acks());
        }
        assert_eq!(acked.len(), records.len());
        // Index writes are not awaited by acks; let them finish.
        while !rig.owner.ops.is_empty() {
            let c = rig.disk.recv_timeout(WAIT).expect("a storage completion");
            rig.owner.on_disk(c, &mut rig.peers);
        }
        assert!(rig.owner.log.segment_bases().len() >= 5, "segments rolled");
    }
    // Reopened from disk (synchronously), everything acked is there.
    let cfg = LogConfig {
        segment_bytes: 4096,
        index_interval: INDEX_INTERVAL,
        retention_bytes: None,
        max_record: 1 << 20,
        write_buffer: WRITE_BUFFER,
    };
    let (log, recovery) = Log::open(FsDir::create(&tmp.0).expect("dir"), cfg).expect("reopen");
    assert_eq!(recovery, Default::default());
    let mut cursor = log.locate(0).expect("locate");
    let mut read = Vec::new();
    log.read(&mut cursor, usize::MAX, |_, p| read.push(p.to_vec()))
        .expect("read");
    assert_eq!(read, records);
}
