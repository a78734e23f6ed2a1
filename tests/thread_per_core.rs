//! Thread-per-core networking: a network backend run on an application
//! worker's own thread (`NetworkWorker::start_local`), over real sockets,
//! on both backends.

use shared_nothing::io::{
    BackendChoice, NetClient, NetConfig, NetEvent, NetEventKind, NetworkWorker,
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
