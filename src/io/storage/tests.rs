//! Storage worker tests, each run on both backends over real files.

use super::*;
use crate::io::{AlignedBuf, BackendChoice, IoError};
use std::path::PathBuf;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("sn-storage-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn workers() -> Vec<(StorageWorker, &'static str)> {
    let mut v = vec![(
        StorageWorker::start(0, StorageConfig::new().backend(BackendChoice::Fallback)).unwrap(),
        "fallback",
    )];
    // The environment may force the fallback for the whole run; then the
    // "uring" worker is a second fallback worker and says so.
    let u = StorageWorker::start(1, StorageConfig::new().backend(BackendChoice::Auto)).unwrap();
    v.push((u, "auto"));
    v
}

#[test]
fn forced_fallback_reports_why() {
    let w = StorageWorker::start(0, StorageConfig::new().backend(BackendChoice::Fallback)).unwrap();
    match w.backend() {
        IoBackendKind::Fallback { reason } => assert!(reason.contains("forced")),
        other => panic!("expected fallback, got {other}"),
    }
}

#[test]
fn auto_uses_io_uring_where_the_kernel_allows_it() {
    let caps = crate::topology::Capabilities::detect();
    let forced = std::env::var(crate::io::BACKEND_ENV).is_ok();
    let w = StorageWorker::start(0, StorageConfig::new()).unwrap();
    if caps.io_uring.is_available() && !forced {
        assert_eq!(w.backend(), &IoBackendKind::IoUring);
    }
}

#[test]
fn write_read_sync_allocate_set_len_close_round_trip() {
    for (w, name) in workers() {
        let dir = TempDir::new(name);
        let mut io = w.blocking_client().unwrap();
        let f = io
            .open(dir.0.join("data"), OpenOptions::read_write_create())
            .unwrap();
        // A hole past the end reads as zeros; a cut shortens the file.
        io.set_len(f, 3 << 20).unwrap();
        assert_eq!(io.read_at(f, (3 << 20) - 4, 4).unwrap(), [0; 4], "{name}");
        io.set_len(f, 0).unwrap();
        assert_eq!(std::fs::metadata(dir.0.join("data")).unwrap().len(), 0);
        io.allocate(f, 0, 1 << 20).unwrap();
        assert_eq!(
            std::fs::metadata(dir.0.join("data")).unwrap().len(),
            1 << 20,
            "{name}"
        );
        assert_eq!(io.write_at(f, 10, b"hello".to_vec()).unwrap(), 5);
        io.fdatasync(f).unwrap();
        io.fsync(f).unwrap();
        assert_eq!(io.read_at(f, 10, 5).unwrap(), b"hello", "{name}");
        // Past the end: a short read, not an error.
        assert_eq!(
            io.read_at(f, (1 << 20) - 2, 100).unwrap().len(),
            2,
            "{name}"
        );
        let c = io
            .call(StorageOp::WritevAt {
                file: f,
                offset: 100,
                bufs: vec![b"ab".to_vec().into(), b"cd".to_vec().into()],
            })
            .unwrap();
        assert_eq!(c.result.unwrap(), StorageOutput::Written(4));
        assert_eq!(c.bufs.len(), 2, "buffers come back");
        assert_eq!(io.read_at(f, 100, 4).unwrap(), b"abcd", "{name}");
        io.close(f).unwrap();
        assert!(
            matches!(io.read_at(f, 0, 1), Err(IoError::NotOpen { .. })),
            "{name}: stale id"
        );
        assert!(
            matches!(io.set_len(f, 1), Err(IoError::NotOpen { .. })),
            "{name}: stale id"
        );
    }
}

#[test]
fn remove_unlinks_and_a_missing_file_is_enoent() {
    for (w, name) in workers() {
        let dir = TempDir::new(name);
        let mut io = w.blocking_client().unwrap();
        let path = dir.0.join("gone");
        let f = io.open(&path, OpenOptions::read_write_create()).unwrap();
        io.write_at(f, 0, b"kept".to_vec()).unwrap();
        io.remove(&path).unwrap();
        assert!(!path.exists(), "{name}");
        // An open descriptor still reads the data.
        assert_eq!(io.read_at(f, 0, 4).unwrap(), b"kept", "{name}");
        io.close(f).unwrap();
        let e = io.remove(&path).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT), "{name}: {e}");
        let e = io.remove(dir.0.join("nul\0byte")).unwrap_err();
        assert!(
            matches!(e, IoError::Invalid(_) | IoError::Os { .. }),
            "{name}: {e}"
        );
    }
}

#[test]
fn missing_file_is_enoent() {
    for (w, name) in workers() {
        let dir = TempDir::new(name);
        let mut io = w.blocking_client().unwrap();
        let e = io.open(dir.0.join("nope"), OpenOptions::new()).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT), "{name}: {e}");
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}

#[test]
fn full_device_is_enospc() {
    for (w, name) in workers() {
        let mut io = w.blocking_client().unwrap();
        let f = io
            .open("/dev/full", OpenOptions::new().write(true))
            .unwrap();
        let e = io.write_at(f, 0, vec![1u8; 4096]).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOSPC), "{name}: {e}");
        let e = io
            .write_with(f, 0, vec![1u8; 10], Durability::GroupCommit)
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOSPC), "{name}: {e}");
    }
}

#[test]
fn direct_io_checks_alignment_and_works_aligned() {
    for (w, name) in workers() {
        let dir = TempDir::new(name);
        let mut io = w.blocking_client().unwrap();
        let opts = OpenOptions::read_write_create().direct(true);
        let f = match io.open(dir.0.join("direct"), opts) {
            Ok(f) => f,
            // Some filesystems (tmpfs) refuse O_DIRECT outright.
            Err(e) if e.errno() == Some(libc::EINVAL) => continue,
            Err(e) => panic!("{name}: {e}"),
        };
        // A Vec's address is not page aligned and 100 bytes is no block.
        let e = io.write_at(f, 0, vec![0u8; 100]).unwrap_err();
        assert!(matches!(e, IoError::Misaligned { .. }), "{name}: {e}");
        let mut b = AlignedBuf::new(4096);
        b.extend_from_slice(&[9u8; 4096]);
        let e = io.write_at(f, 100, b).unwrap_err();
        assert!(
            matches!(e, IoError::Misaligned { what: "offset", .. }),
            "{name}: {e}"
        );
        let mut b = AlignedBuf::new(4096);
        b.extend_from_slice(&[7u8; 4096]);
        assert_eq!(io.write_with(f, 4096, b, Durability::Linked).unwrap(), 4096);
        let back = io.read_into(f, 4096, 4096, AlignedBuf::new(4096)).unwrap();
        assert!(back.as_slice().iter().all(|&x| x == 7), "{name}");
        let e = io.read_into(f, 0, 8192, AlignedBuf::new(4096)).unwrap_err();
        assert!(
            matches!(e, IoError::Invalid(_)),
            "{name}: buffer too small: {e}"
        );
    }
}

#[test]
fn durability_modes_all_persist_the_data() {
    for (w, name) in workers() {
        let dir = TempDir::new(name);
        let mut io = w.blocking_client().unwrap();
        let f = io
            .open(dir.0.join("log"), OpenOptions::read_write_create())
            .unwrap();
        for (i, d) in [
            Durability::Buffered,
            Durability::Linked,
            Durability::GroupCommit,
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(
                io.write_with(f, i as u64 * 3, b"xyz".to_vec(), d).unwrap(),
                3
            );
        }
        assert_eq!(
            std::fs::read(dir.0.join("log")).unwrap(),
            b"xyzxyzxyz",
            "{name}"
        );
    }
}

#[test]
fn group_commit_from_many_clients_completes_every_write() {
    for (w, name) in workers() {
        let dir = TempDir::new(name);
        let path = dir.0.join("group");
        let mut opener = w.blocking_client().unwrap();
        let f = opener
            .open(&path, OpenOptions::read_write_create())
            .unwrap();
        let per_client = 200u64;
        std::thread::scope(|s| {
            for c in 0..4u64 {
                let mut io = w.blocking_client().unwrap();
                s.spawn(move || {
                    // Pipeline: submit everything, then collect.
                    for i in 0..per_client {
                        let off = (c * per_client + i) * 8;
                        let mut op = StorageOp::WriteAt {
                            file: f,
                            offset: off,
                            buf: off.to_le_bytes().to_vec().into(),
                            durability: Durability::GroupCommit,
                        };
                        loop {
                            match io.client().submit(i, op) {
                                Ok(()) => break,
                                Err(e) => {
                                    assert!(e.is_full());
                                    op = e.into_inner();
                                    std::thread::yield_now();
                                }
                            }
                        }
                    }
                    let mut seen = 0;
                    while seen < per_client {
                        let c = io.completions().recv().unwrap();
                        assert_eq!(c.result.unwrap(), StorageOutput::Written(8));
                        seen += 1;
                    }
                });
            }
        });
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len() as u64, 4 * per_client * 8, "{name}");
        for (i, chunk) in data.chunks(8).enumerate() {
            assert_eq!(
                u64::from_le_bytes(chunk.try_into().unwrap()),
                i as u64 * 8,
                "{name}"
            );
        }
    }
}

#[test]
fn registered_buffers_round_trip() {
    let w = StorageWorker::start(0, StorageConfig::new().fixed_buffers(4, 4096)).unwrap();
    let dir = TempDir::new("fixed");
    let mut io = w.blocking_client().unwrap();
    let Some(mut b) = io.client().fixed_buf() else {
        // The fallback (or a tiny memlock limit) has no registered memory.
        assert!(!w.backend().is_uring() || std::env::var("SHARED_NOTHING_REQUIRE_FIXED").is_err());
        return;
    };
    b.extend_from_slice(b"registered");
    let f = io
        .open(dir.0.join("fixed"), OpenOptions::read_write_create())
        .unwrap();
    assert_eq!(io.write_at(f, 0, b).unwrap(), 10);
    let b2 = io.client().fixed_buf().unwrap();
    let r = io.read_into(f, 0, 10, b2).unwrap();
    assert_eq!(r.as_slice(), b"registered");
}

#[test]
fn full_queue_is_backpressure_with_the_request_handed_back() {
    let w = StorageWorker::start(
        0,
        StorageConfig {
            client_queue: 2,
            ..StorageConfig::new()
        },
    )
    .unwrap();
    let (sink, mut q) = crate::worker::ResultSink::queue();
    // No client-side queue: the ring's own backpressure.
    let mut c = w.client_with_queue(sink, 0).unwrap();
    let dir = TempDir::new("bp");
    let path = dir.0.join("x");
    let mut full = 0;
    let mut sent = 0;
    for i in 0..10_000u64 {
        match c.open(i, &path, OpenOptions::read_write_create()) {
            Ok(_) => sent += 1,
            Err(SubmitError::Full(StorageOp::Open { path: p, .. })) => {
                assert_eq!(p, path, "the request comes back whole");
                full += 1;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full > 0 || sent == 10_000);
    for _ in 0..sent {
        q.recv().unwrap().result.unwrap();
    }
}

#[test]
fn stopping_answers_everything() {
    let mut w = StorageWorker::start(0, StorageConfig::new()).unwrap();
    let (sink, mut q) = crate::worker::ResultSink::queue();
    let mut c = w.client(sink).unwrap();
    let dir = TempDir::new("stop");
    let mut sent = 0u64;
    for i in 0..100 {
        if c.open(i, dir.0.join("s"), OpenOptions::read_write_create())
            .is_ok()
        {
            sent += 1;
        }
    }
    w.stop().unwrap();
    // Every accepted request is answered: done, or `Stopped`.
    for _ in 0..sent {
        match q.recv().unwrap().result {
            Ok(StorageOutput::Opened(_)) | Err(IoError::Stopped) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(c.is_stopped());
    assert!(matches!(
        c.sync(0, FileId(0), true),
        Err(SubmitError::Stopped(_))
    ));
}

#[test]
fn completions_arrive_in_a_workers_own_loop() {
    use crate::prelude::*;
    use crate::worker::{ResultSink, spawn};
    enum Msg {
        Start(PathBuf),
        Io(StorageCompletion),
    }
    struct App {
        storage: Arc<StorageWorker>,
        done: Option<crate::worker::ReplyTo<usize>>,
    }
    impl Worker for App {
        type State = StorageClient;
        type Message = Msg;
        type Reply = usize;
        fn init(&mut self) -> crate::Result<StorageClient> {
            self.storage.client(ResultSink::to_current_worker(Msg::Io)?)
        }
        fn handle_message(
            &mut self,
            io: &mut StorageClient,
            mut m: Envelope<Msg, usize>,
        ) -> crate::Result<()> {
            match std::mem::replace(&mut m.payload, Msg::Start(PathBuf::new())) {
                Msg::Start(p) => {
                    self.done = m.take_reply();
                    io.open(1, p, OpenOptions::read_write_create())
                        .map_err(|_| Error::Full)?;
                }
                Msg::Io(c) => match (c.token, c.result?) {
                    (1, StorageOutput::Opened(f)) => {
                        io.write_at(2, f, 0, b"from a worker".to_vec(), Durability::Linked)
                            .map_err(|_| Error::Full)?;
                    }
                    (2, StorageOutput::Written(n)) => {
                        if let Some(r) = self.done.take() {
                            r.send(n)?;
                        }
                    }
                    other => return Err(Error::InvalidConfig(format!("unexpected {other:?}"))),
                },
            }
            Ok(())
        }
    }
    for (w, name) in workers() {
        let dir = TempDir::new(name);
        let storage = Arc::new(w);
        let mut app = spawn(
            App {
                storage: storage.clone(),
                done: None,
            },
            WorkerConfig::new(),
        )
        .unwrap();
        let n: usize = app
            .request(Msg::Start(dir.0.join("w")))
            .unwrap()
            .wait_timeout(std::time::Duration::from_secs(30))
            .unwrap();
        assert_eq!(n, 13, "{name}");
        assert_eq!(std::fs::read(dir.0.join("w")).unwrap(), b"from a worker");
        app.stop().unwrap();
    }
}

#[test]
fn a_bad_backend_variable_is_an_error() {
    assert!(BackendChoice::parse("sometimes").is_none());
}

#[test]
fn stopping_with_durable_writes_in_flight_answers_each_one() {
    for (mut w, name) in workers() {
        let dir = TempDir::new(name);
        let f = w
            .blocking_client()
            .unwrap()
            .open(dir.0.join("d"), OpenOptions::read_write_create())
            .unwrap();
        let (sink, mut q) = crate::worker::ResultSink::queue();
        let mut c = w.client(sink).unwrap();
        let mut sent = 0u64;
        for i in 0..50u64 {
            if c.write_at(i, f, i * 4, b"abcd".to_vec(), Durability::GroupCommit)
                .is_ok()
            {
                sent += 1;
            }
        }
        w.stop().unwrap();
        let mut written = 0;
        for _ in 0..sent {
            match q
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap()
                .result
            {
                Ok(StorageOutput::Written(4)) => written += 1,
                Err(IoError::Stopped) => {}
                other => panic!("{name}: {other:?}"),
            }
        }
        // What was acknowledged is in the file.
        let len = std::fs::metadata(dir.0.join("d")).unwrap().len();
        assert!(len >= 4 * written as u64 || written == 0, "{name}");
    }
}

#[test]
fn stop_delivers_every_completion_even_to_a_backlogged_target() {
    use crate::io::test_gate::{spawn_gate, wait_for};
    use crate::worker::ResultSink;
    const N: usize = 200;
    for (mut w, name) in workers() {
        let (mut target, open, got) = spawn_gate(|_: &StorageCompletion| 1);
        let mut c = w
            .client(ResultSink::to_worker(target.sender(), |c| c))
            .unwrap();
        for i in 0..N as u64 {
            // Each fails at once (no such file): one completion apiece.
            c.sync(i, FileId(u64::MAX), true).unwrap();
        }
        // Let the worker take them all, then stop it with the target
        // still full, for longer than any grace period would wait.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let stopper = std::thread::spawn(move || w.stop());
        std::thread::sleep(std::time::Duration::from_secs(6));
        open.send(()).unwrap();
        stopper.join().unwrap().unwrap();
        assert_eq!(wait_for(&got, N), N, "{name}: completions lost");
        target.stop().unwrap();
    }
}

#[test]
fn a_backlogged_target_gets_every_completion_while_the_worker_idles() {
    use crate::io::test_gate::{spawn_gate, wait_for};
    use crate::worker::ResultSink;
    const N: usize = 64;
    for (mut w, name) in workers() {
        let (mut target, open, got) = spawn_gate(|_: &StorageCompletion| 1);
        let mut c = w
            .client(ResultSink::to_worker(target.sender(), |c| c))
            .unwrap();
        for i in 0..N as u64 {
            c.sync(i, FileId(u64::MAX), true).unwrap();
        }
        // Long past the worker's spin: it has nothing to do but the
        // backlog, and must not sleep on it for good.
        std::thread::sleep(Duration::from_millis(300));
        open.send(()).unwrap();
        assert_eq!(
            wait_for(&got, N),
            N,
            "{name}: backlogged completions never delivered"
        );
        w.stop().unwrap();
        target.stop().unwrap();
    }
}

/// Workers on both backends whose client rings hold 2 requests, so that a
/// client's own queue fills at once.
fn small_ring_workers() -> Vec<(StorageWorker, &'static str)> {
    [
        (BackendChoice::Fallback, "fallback"),
        (BackendChoice::Auto, "auto"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (b, name))| {
        let cfg = StorageConfig {
            client_queue: 2,
            ..StorageConfig::new().backend(b)
        };
        (StorageWorker::start(i, cfg).unwrap(), name)
    })
    .collect()
}

fn record(i: u64) -> Vec<u8> {
    format!("{i:08}\n").into_bytes()
}

/// Takes completions until `n` arrived, pushing what waits meanwhile.
fn collect(
    c: &mut StorageClient,
    q: &mut crate::worker::ResultQueue<StorageCompletion>,
    n: usize,
) -> Vec<StorageCompletion> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        c.flush_queued();
        if let Ok(x) = q.recv_timeout(Duration::from_millis(1)) {
            got.push(x);
        }
    }
    got
}

#[test]
fn a_full_ring_queues_on_the_client_side_and_every_write_lands_in_order() {
    for (w, name) in small_ring_workers() {
        let dir = TempDir::new(name);
        let path = dir.0.join("log");
        let f = w
            .blocking_client()
            .unwrap()
            .open(&path, OpenOptions::read_write_create())
            .unwrap();
        let (sink, mut q) = crate::worker::ResultSink::queue();
        let mut c = w.client(sink).unwrap();
        assert_eq!(c.queue_limit(), DEFAULT_SUBMIT_QUEUE);
        let mut most_queued = 0;
        for i in 0..10_000u64 {
            c.write_at(i, f, i * 9, record(i), Durability::Buffered)
                .unwrap_or_else(|e| panic!("{name}: write {i}: {e}"));
            most_queued = most_queued.max(c.queued());
        }
        assert!(most_queued > 0, "{name}: a 2-entry ring never filled");
        let done = collect(&mut c, &mut q, 10_000);
        let mut tokens: Vec<u64> = done
            .iter()
            .map(|x| {
                assert_eq!(x.result.as_ref().unwrap(), &StorageOutput::Written(9));
                x.token
            })
            .collect();
        // Completions may come out of order (the fallback's helper threads
        // run a round's writes side by side); every one comes once.
        tokens.sort_unstable();
        assert_eq!(tokens, (0..10_000).collect::<Vec<_>>(), "{name}");
        let data = std::fs::read(&path).unwrap();
        let want: Vec<u8> = (0..10_000).flat_map(record).collect();
        assert!(data == want, "{name}: the file is not the records in order");
    }
}

#[test]
fn past_the_client_queue_bound_the_request_comes_back_whole() {
    for (w, name) in small_ring_workers() {
        let dir = TempDir::new(name);
        let path = dir.0.join("x");
        let f = w
            .blocking_client()
            .unwrap()
            .open(&path, OpenOptions::read_write_create())
            .unwrap();
        let (sink, mut q) = crate::worker::ResultSink::queue();
        let mut c = w.client_with_queue(sink, 3).unwrap();
        let mut accepted = 0;
        let mut full = false;
        for i in 0..1_000_000u64 {
            match c.write_at(i, f, 0, vec![7u8; 64], Durability::Buffered) {
                Ok(()) => accepted += 1,
                Err(SubmitError::Full(StorageOp::WriteAt { buf, offset, .. })) => {
                    assert_eq!((buf.len(), offset), (64, 0), "{name}: handed back whole");
                    assert_eq!(c.queued(), 3, "{name}: full only at the bound");
                    full = true;
                    break;
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
        assert!(full, "{name}: never full");
        let done = collect(&mut c, &mut q, accepted);
        assert!(done.iter().all(|x| x.result.is_ok()), "{name}");
        assert_eq!(c.queued(), 0);
        // Raising the bound takes effect at once.
        c.set_queue_limit(10);
        assert_eq!(c.queue_limit(), 10);
    }
}

#[test]
fn stopping_answers_what_waits_in_the_client_queue_and_refuses_later_submits() {
    for (mut w, name) in small_ring_workers() {
        let dir = TempDir::new(name);
        let f = w
            .blocking_client()
            .unwrap()
            .open(dir.0.join("x"), OpenOptions::read_write_create())
            .unwrap();
        let (sink, mut q) = crate::worker::ResultSink::queue();
        let mut c = w.client(sink).unwrap();
        for i in 0..2_000u64 {
            c.write_at(i, f, i * 9, record(i), Durability::GroupCommit)
                .unwrap();
        }
        assert!(c.queued() > 0, "{name}");
        w.stop().unwrap();
        // Exactly one completion each: written, or stopped before it ran.
        let mut seen = vec![0u8; 2_000];
        let mut stopped = 0;
        for _ in 0..2_000 {
            let x = q.recv_timeout(Duration::from_secs(30)).unwrap();
            seen[x.token as usize] += 1;
            match x.result {
                Ok(StorageOutput::Written(9)) => {}
                Err(IoError::Stopped) => {
                    assert_eq!(x.buf.map(|b| b.len()), Some(9), "{name}: buffer back");
                    stopped += 1;
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{name}");
        assert!(
            stopped > 0,
            "{name}: queued requests were answered as stopped"
        );
        assert_eq!(c.flush_queued(), 0, "{name}");
        assert!(c.is_stopped());
        assert!(matches!(
            c.write_at(9_999, f, 0, record(0), Durability::Buffered),
            Err(SubmitError::Stopped(StorageOp::WriteAt { .. }))
        ));
        assert!(q.try_recv().is_none(), "{name}: nothing more");
    }
}

#[test]
fn a_dropped_client_still_runs_what_it_queued() {
    for (w, name) in small_ring_workers() {
        let dir = TempDir::new(name);
        let path = dir.0.join("log");
        let f = w
            .blocking_client()
            .unwrap()
            .open(&path, OpenOptions::read_write_create())
            .unwrap();
        let (sink, mut q) = crate::worker::ResultSink::queue();
        let mut c = w.client(sink).unwrap();
        for i in 0..3_000u64 {
            c.write_at(i, f, i * 9, record(i), Durability::Buffered)
                .unwrap();
        }
        assert!(c.queued() > 0, "{name}");
        drop(c);
        let mut tokens: Vec<u64> = (0..3_000)
            .map(|_| {
                let x = q.recv_timeout(Duration::from_secs(30)).unwrap();
                assert_eq!(x.result.unwrap(), StorageOutput::Written(9), "{name}");
                x.token
            })
            .collect();
        tokens.sort_unstable();
        assert_eq!(tokens, (0..3_000).collect::<Vec<_>>(), "{name}");
        let want: Vec<u8> = (0..3_000).flat_map(record).collect();
        assert!(std::fs::read(&path).unwrap() == want, "{name}");
    }
}

#[test]
fn take_queued_hands_back_the_tail_in_order_and_it_never_runs() {
    for (w, name) in small_ring_workers() {
        let dir = TempDir::new(name);
        let f = w
            .blocking_client()
            .unwrap()
            .open(dir.0.join("x"), OpenOptions::read_write_create())
            .unwrap();
        let (sink, mut q) = crate::worker::ResultSink::queue();
        let mut c = w.client(sink).unwrap();
        for i in 0..1_000u64 {
            c.write_at(i, f, 0, record(i), Durability::Buffered)
                .unwrap();
        }
        let back = c.take_queued();
        assert!(!back.is_empty(), "{name}");
        let tokens: Vec<u64> = back.iter().map(|(t, _)| *t).collect();
        let first = 1_000 - back.len() as u64;
        assert_eq!(tokens, (first..1_000).collect::<Vec<_>>(), "{name}");
        assert_eq!(c.queued(), 0);
        let done = collect(&mut c, &mut q, first as usize);
        assert!(done.iter().all(|x| x.token < first), "{name}");
        drop(c);
        std::thread::sleep(Duration::from_millis(20));
        assert!(q.try_recv().is_none(), "{name}: taken back, never run");
    }
}

#[test]
fn a_blocking_call_pushes_what_waits_in_its_clients_queue() {
    for (w, name) in small_ring_workers() {
        let dir = TempDir::new(name);
        let mut io = w.blocking_client().unwrap();
        let f = io
            .open(dir.0.join("x"), OpenOptions::read_write_create())
            .unwrap();
        for i in 0..500u64 {
            io.client()
                .write_at(1_000 + i, f, i * 9, record(i), Durability::Buffered)
                .unwrap();
        }
        // The sync is queued behind the writes; the call must push them.
        io.fdatasync(f).unwrap();
        assert_eq!(io.client().queued(), 0, "{name}");
        assert_eq!(io.read_at(f, 499 * 9, 9).unwrap(), record(499), "{name}");
    }
}

/// Requests may follow an open at once, on the id `open` returns: they
/// wait for the open and run in order; after a failed open they fail.
#[test]
fn requests_follow_an_open_at_once_and_fail_with_it() {
    for (w, name) in workers() {
        let dir = TempDir::new(name);
        let (sink, mut q) = crate::worker::ResultSink::queue();
        let mut c = w.client(sink).unwrap();
        let f = c
            .open(0, dir.0.join("log"), OpenOptions::read_write_create())
            .unwrap();
        for i in 0..100u64 {
            c.write_at(1 + i, f, i * 9, record(i), Durability::Buffered)
                .unwrap();
        }
        c.sync(101, f, true).unwrap();
        c.close(102, f).unwrap();
        let got = collect(&mut c, &mut q, 103);
        assert_eq!(got[0].token, 0, "{name}: the open's completion comes first");
        assert_eq!(
            got[0].result.as_ref().unwrap(),
            &StorageOutput::Opened(f),
            "{name}"
        );
        for g in &got {
            assert!(g.result.is_ok(), "{name}: {} {:?}", g.token, g.result);
        }
        let want: Vec<u8> = (0..100).flat_map(record).collect();
        assert_eq!(std::fs::read(dir.0.join("log")).unwrap(), want, "{name}");

        // An open that fails takes what waited for it down with it.
        let bad = c
            .open(200, dir.0.join("no/such/dir/x"), OpenOptions::new())
            .unwrap();
        c.write_at(201, bad, 0, record(0), Durability::Buffered)
            .unwrap();
        let got = collect(&mut c, &mut q, 2);
        let open = got.iter().find(|g| g.token == 200).unwrap();
        assert_eq!(
            open.result.as_ref().unwrap_err().errno(),
            Some(libc::ENOENT),
            "{name}"
        );
        let write = got.iter().find(|g| g.token == 201).unwrap();
        assert!(
            matches!(write.result, Err(IoError::NotOpen { .. })),
            "{name}: {:?}",
            write.result
        );
        // Its buffer comes back.
        assert_eq!(write.buf.as_ref().map(|b| b.len()), Some(9), "{name}");
        // Ids are not reused while stale: the closed file's id stays dead.
        let again = c
            .open(300, dir.0.join("log"), OpenOptions::read_write_create())
            .unwrap();
        assert_ne!(again, f, "{name}");
        c.read_at(301, f, 0, 9, vec![0u8; 9]).unwrap();
        let got = collect(&mut c, &mut q, 2);
        let stale = got.iter().find(|g| g.token == 301).unwrap();
        assert!(
            matches!(stale.result, Err(IoError::NotOpen { .. })),
            "{name}"
        );
    }
}

#[test]
fn the_fallback_runs_a_rounds_reads_side_by_side() {
    use super::blocking::ops::seam;
    let dir = TempDir::new("depth");
    let path = dir.0.join("f");
    std::fs::write(&path, b"x").unwrap();
    let w = StorageWorker::start(0, StorageConfig::new().backend(BackendChoice::Fallback)).unwrap();
    let f = w
        .blocking_client()
        .unwrap()
        .open(&path, OpenOptions::new())
        .unwrap();
    let (sink, mut done) = ResultSink::queue();
    let mut client = w.client(sink).unwrap();
    let read = |offset| StorageOp::ReadAt {
        file: f,
        offset,
        len: 1,
        buf: IoBuf::from(Vec::new()),
    };
    // The worker takes a read that holds it at the gate; meanwhile two
    // reads queue, so it takes them in one round. Each returns only once
    // the other runs too: one at a time, the first would wait alone and
    // fail.
    client.submit(0, read(seam::GATE_OFFSET)).unwrap();
    // (If the worker has not taken the gate read yet, all three share a
    // round, which passes as well.)
    std::thread::sleep(Duration::from_millis(50));
    client.submit(1, read(seam::PAIR_OFFSET)).unwrap();
    client.submit(2, read(seam::PAIR_OFFSET)).unwrap();
    seam::open_gate();
    for _ in 0..3 {
        let c = done
            .recv_timeout(Duration::from_secs(30))
            .expect("a completion");
        assert!(c.result.is_ok(), "read {}: {:?}", c.token, c.result);
    }
}

#[test]
fn a_worker_index_past_what_ids_carry_is_an_error() {
    let e = StorageWorker::start(256, StorageConfig::new()).unwrap_err();
    assert!(e.to_string().contains("at most 255"), "{e}");
    let e = crate::io::NetworkWorker::start(300, crate::io::NetConfig::new()).unwrap_err();
    assert!(e.to_string().contains("at most 255"), "{e}");
    assert!(StorageWorker::start(255, StorageConfig::new()).is_ok());
}
