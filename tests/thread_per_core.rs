//! Thread-per-core I/O: network and storage backends run on an
//! application worker's own thread (`NetworkWorker::start_local`,
//! `StorageWorker::start_local`), over real sockets and files.

use shared_nothing::io::{
    BackendChoice, Durability, NetClient, NetConfig, NetEvent, NetEventKind, NetworkWorker,
    OpenOptions, StorageClient, StorageCompletion, StorageConfig, StorageWorker,
};
use shared_nothing::partition::RoundRobinPartitioner;
use shared_nothing::prelude::*;
use shared_nothing::worker::{ResultSink, WorkerHandle};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// An echo server whose sockets live on its own thread.
struct Echo {
    config: NetConfig,
    /// Where to listen; the first worker's bound address is published in
    /// `bound` for the others (one port, `SO_REUSEPORT`).
    bound: Arc<OnceLock<SocketAddr>>,
    accepted: Arc<AtomicUsize>,
}

struct Local {
    net: NetworkWorker,
    client: NetClient,
}

impl Worker for Echo {
    type State = Local;
    type Message = NetEvent;
    type Reply = ();

    fn init(&mut self) -> Result<Local> {
        let net = NetworkWorker::start_local(0, self.config.clone())?;
        let addr = *self.bound.get().unwrap_or(&"127.0.0.1:0".parse().unwrap());
        let me = ResultSink::to_current_worker(|e| e)?;
        let local = net.listen(addr, vec![me], Arc::new(RoundRobinPartitioner::new()))?;
        let _ = self.bound.set(local);
        let client = net.client(ResultSink::to_current_worker(|e| e)?)?;
        Ok(Local { net, client })
    }

    fn handle_message(&mut self, s: &mut Local, m: Envelope<NetEvent>) -> Result<()> {
        let ev = m.payload;
        match ev.kind {
            NetEventKind::Accepted { .. } => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
            }
            NetEventKind::Data(d) => {
                s.client
                    .send(ev.conn, d)
                    .map_err(|e| Error::msg(format!("echo send: {e}")))?;
            }
            NetEventKind::PeerClosed => {
                let _ = s.client.close(ev.conn);
            }
            _ => {}
        }
        Ok(())
    }

    fn shutdown(&mut self, mut s: Local) -> Result<()> {
        s.net.stop()
    }
}

fn echo(
    config: NetConfig,
    bound: Arc<OnceLock<SocketAddr>>,
) -> (WorkerHandle<NetEvent>, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let w = Echo {
        config,
        bound,
        accepted: accepted.clone(),
    };
    let h = shared_nothing::worker::spawn(w, WorkerConfig::new()).expect("echo worker starts");
    (h, accepted)
}

fn round_trip(addr: SocketAddr, msg: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..50 {
        s.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).expect("echoed");
        assert_eq!(back, msg);
    }
}

fn backends() -> [(BackendChoice, &'static str); 2] {
    [
        (BackendChoice::Auto, "auto"),
        (BackendChoice::Fallback, "fallback"),
    ]
}

#[test]
fn a_worker_serves_its_own_sockets_and_still_answers_messages() {
    for (backend, name) in backends() {
        let bound = Arc::new(OnceLock::new());
        let (mut h, accepted) = echo(NetConfig::new().backend(backend), bound.clone());
        let addr = *bound.get().expect("listening after init");
        let clients: Vec<_> = (0..4)
            .map(|i| std::thread::spawn(move || round_trip(addr, format!("hello {i}").as_bytes())))
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 4, "{name}");
        // The worker sleeps in its ring when idle; a message must still
        // wake it (the signal's waker is the ring's eventfd). A lost
        // wake-up would wait for the worker's 1 s backstop.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(20));
            let t = Instant::now();
            h.ping(Duration::from_secs(5))
                .expect("a sleeping worker answers a ping");
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{name}: a ping took {:?}",
                t.elapsed()
            );
        }
        h.stop().unwrap();
        // Stopping the worker closed its listener.
        assert!(
            TcpStream::connect(addr).is_err(),
            "{name}: still listening after stop"
        );
    }
}

#[test]
fn workers_share_one_port_and_the_kernel_spreads_connections() {
    let config = NetConfig::new().reuse_port(true);
    let bound = Arc::new(OnceLock::new());
    let (mut a, in_a) = echo(config.clone(), bound.clone());
    let (mut b, in_b) = echo(config, bound.clone());
    let addr = *bound.get().unwrap();
    for i in 0..64 {
        round_trip(addr, format!("conn {i}").as_bytes());
    }
    let (na, nb) = (in_a.load(Ordering::Relaxed), in_b.load(Ordering::Relaxed));
    assert_eq!(na + nb, 64);
    assert!(
        na > 0 && nb > 0,
        "SO_REUSEPORT spreads connections: {na} and {nb}"
    );
    a.stop().unwrap();
    b.stop().unwrap();
}

#[test]
fn a_local_network_worker_needs_a_worker_thread_and_one_per_worker() {
    let e = NetworkWorker::start_local(0, NetConfig::new()).unwrap_err();
    assert!(e.to_string().contains("outside a worker thread"), "{e}");

    struct Twice;
    impl Worker for Twice {
        type State = NetworkWorker;
        type Message = ();
        type Reply = ();
        fn init(&mut self) -> Result<NetworkWorker> {
            let first = NetworkWorker::start_local(0, NetConfig::new())?;
            match NetworkWorker::start_local(1, NetConfig::new()) {
                Err(e) if e.to_string().contains("runs a local I/O driver already") => Ok(first),
                Err(e) => Err(Error::msg(format!("unexpected error: {e}"))),
                Ok(_) => Err(Error::msg("a second local network worker started")),
            }
        }
        fn handle_message(&mut self, _: &mut NetworkWorker, _: Envelope<()>) -> Result<()> {
            Ok(())
        }
    }
    let mut h = shared_nothing::worker::spawn(Twice, WorkerConfig::new()).expect("init passes");
    h.stop().unwrap();
}

/// A journal server: each message a client sends is appended to a file
/// with group commit on the worker's own storage ring, and acknowledged
/// over the socket only once it is durable. Sockets and file both live on
/// the worker's thread (network backend primary, storage secondary).
struct Journal {
    backend: BackendChoice,
    path: std::path::PathBuf,
    bound: Arc<OnceLock<SocketAddr>>,
}

enum JMsg {
    Net(NetEvent),
    Disk(StorageCompletion),
}

struct JState {
    _net: NetworkWorker,
    _disk: StorageWorker,
    client: NetClient,
    files: StorageClient,
    file: shared_nothing::io::FileId,
    end: u64,
    /// The connection each pending write acknowledges, by token.
    waiting: std::collections::HashMap<u64, shared_nothing::io::ConnId>,
    next: u64,
}

impl Worker for Journal {
    type State = JState;
    type Message = JMsg;
    type Reply = ();

    fn init(&mut self) -> Result<JState> {
        let net = NetworkWorker::start_local(0, NetConfig::new().backend(self.backend))?;
        let disk = StorageWorker::start_local(0, StorageConfig::new())?;
        let me = ResultSink::to_current_worker(JMsg::Net)?;
        let local = net.listen(
            "127.0.0.1:0".parse().unwrap(),
            vec![me],
            Arc::new(RoundRobinPartitioner::new()),
        )?;
        let _ = self.bound.set(local);
        let client = net.client(ResultSink::to_current_worker(JMsg::Net)?)?;
        let mut files = disk.client(ResultSink::to_current_worker(JMsg::Disk)?)?;
        let file = files
            .open(0, &self.path, OpenOptions::read_write_create())
            .map_err(|e| Error::msg(format!("open: {e}")))?;
        Ok(JState {
            _net: net,
            _disk: disk,
            client,
            files,
            file,
            end: 0,
            waiting: Default::default(),
            next: 1,
        })
    }

    fn handle_message(&mut self, s: &mut JState, m: Envelope<JMsg>) -> Result<()> {
        match m.payload {
            JMsg::Net(NetEvent {
                conn,
                kind: NetEventKind::Data(d),
            }) => {
                let token = s.next;
                s.next += 1;
                let len = d.len() as u64;
                s.files
                    .write_at(token, s.file, s.end, d, Durability::GroupCommit)
                    .map_err(|e| Error::msg(format!("write: {e}")))?;
                s.end += len;
                s.waiting.insert(token, conn);
            }
            JMsg::Net(NetEvent {
                conn,
                kind: NetEventKind::PeerClosed,
            }) => {
                let _ = s.client.close(conn);
            }
            JMsg::Net(_) => {}
            JMsg::Disk(c) if c.token == 0 => {
                c.result.map_err(|e| Error::msg(format!("open: {e}")))?;
            }
            JMsg::Disk(c) => {
                c.result.map_err(|e| Error::msg(format!("write: {e}")))?;
                if let Some(conn) = s.waiting.remove(&c.token) {
                    s.client
                        .send(conn, b"ok".to_vec())
                        .map_err(|e| Error::msg(format!("ack: {e}")))?;
                }
            }
        }
        Ok(())
    }
}

#[test]
fn a_worker_journals_to_its_own_storage_ring_and_acks_over_its_own_sockets() {
    if !shared_nothing::topology::Capabilities::detect()
        .io_uring
        .is_available()
    {
        println!("skipped: thread-per-core storage needs io_uring");
        return;
    }
    for (backend, name) in backends() {
        let dir =
            std::env::temp_dir().join(format!("sn-tpc-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let bound = Arc::new(OnceLock::new());
        let w = Journal {
            backend,
            path: dir.clone(),
            bound: bound.clone(),
        };
        let mut h = shared_nothing::worker::spawn(w, WorkerConfig::new()).expect("journal starts");
        let addr = *bound.get().unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut want = Vec::new();
        for i in 0..200u32 {
            // Each record is acknowledged only once durable: the storage
            // completion must wake a worker asleep in its network ring.
            let rec = format!("record {i:05}\n");
            s.write_all(rec.as_bytes()).unwrap();
            let mut ok = [0u8; 2];
            s.read_exact(&mut ok).expect("an ack in time");
            assert_eq!(&ok, b"ok", "{name}");
            want.extend_from_slice(rec.as_bytes());
        }
        drop(s);
        h.stop().unwrap();
        assert!(
            std::fs::read(&dir).unwrap() == want,
            "{name}: the journal is not the records"
        );
        let _ = std::fs::remove_file(&dir);
    }
}

/// A worker whose only driver is its storage ring, serving a client on
/// another thread (whose requests must wake the worker asleep in it).
struct DiskOnly {
    out: crossbeam_channel::Sender<shared_nothing::io::BlockingStorageClient>,
}

impl Worker for DiskOnly {
    type State = StorageWorker;
    type Message = ();
    type Reply = ();
    fn init(&mut self) -> Result<StorageWorker> {
        let disk = StorageWorker::start_local(3, StorageConfig::new())?;
        let _ = self.out.send(disk.blocking_client()?);
        Ok(disk)
    }
    fn handle_message(&mut self, _: &mut StorageWorker, _: Envelope<()>) -> Result<()> {
        Ok(())
    }
}

#[test]
fn a_workers_own_storage_ring_serves_a_client_on_another_thread() {
    if !shared_nothing::topology::Capabilities::detect()
        .io_uring
        .is_available()
    {
        println!("skipped: thread-per-core storage needs io_uring");
        return;
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut h = shared_nothing::worker::spawn(DiskOnly { out: tx }, WorkerConfig::new()).unwrap();
    let mut io = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let path = std::env::temp_dir().join(format!("sn-tpc-disk-{}", std::process::id()));
    let f = io.open(&path, OpenOptions::read_write_create()).unwrap();
    for i in 0..50u64 {
        // Let the worker fall asleep in its ring between requests.
        std::thread::sleep(Duration::from_millis(2));
        let t = Instant::now();
        io.write_at(f, i * 8, i.to_le_bytes().to_vec()).unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a request to a sleeping worker took {:?} (a lost wake-up waits for the 1 s backstop)",
            t.elapsed()
        );
    }
    let want: Vec<u8> = (0..50u64).flat_map(|i| i.to_le_bytes()).collect();
    assert_eq!(
        io.read_at(f, 0, 400).unwrap(),
        want,
        "read back through the ring"
    );
    h.stop().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), want);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn thread_per_core_storage_without_io_uring_is_a_clear_error() {
    struct Fallback;
    impl Worker for Fallback {
        type State = ();
        type Message = ();
        type Reply = ();
        fn init(&mut self) -> Result<()> {
            let config = StorageConfig::new().backend(BackendChoice::Fallback);
            match StorageWorker::start_local(0, config) {
                Err(e) if e.to_string().contains("needs io_uring") => Ok(()),
                Err(e) => Err(Error::msg(format!("unexpected error: {e}"))),
                Ok(_) => Err(Error::msg(
                    "a fallback storage driver started on the worker",
                )),
            }
        }
        fn handle_message(&mut self, _: &mut (), _: Envelope<()>) -> Result<()> {
            Ok(())
        }
    }
    let mut h = shared_nothing::worker::spawn(Fallback, WorkerConfig::new()).expect("init passes");
    h.stop().unwrap();
}
