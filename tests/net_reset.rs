//! Peers that reset while a send to them is in flight: every connection is
//! closed and reported `Closed`, and no descriptor is left behind, on both
//! network backends.
//!
//! One test in its own binary, so counting this process's descriptors is
//! not disturbed by other tests running in parallel.

use shared_nothing::io::{BackendChoice, NetConfig, NetEvent, NetEventKind, NetworkWorker};
use shared_nothing::partition::RoundRobinPartitioner;
use shared_nothing::worker::ResultSink;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PEERS: usize = 64;
const ROUNDS: usize = 4;
/// Far more than loopback socket buffers hold before the peer reads.
const SEND: usize = 4 << 20;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fn linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: sets a plain struct option on an open socket, from a local.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

fn round(net: &NetworkWorker, name: &str) {
    let (sink, mut events) = ResultSink::<NetEvent>::queue();
    let addr = net
        .listen(
            "127.0.0.1:0".parse().unwrap(),
            vec![sink],
            Arc::new(RoundRobinPartitioner::new()),
        )
        .unwrap();
    let (cs, _cq) = ResultSink::queue();
    let mut client = net.client(cs).unwrap();
    let mut peers: Vec<TcpStream> = (0..PEERS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let mut open = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while open.len() < PEERS {
        let ev = events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("{name}: accepts"));
        if let NetEventKind::Accepted { .. } = ev.kind {
            open.insert(ev.conn);
            client.send(ev.conn, vec![1u8; SEND]).unwrap();
        }
    }
    // Each peer reads a little, so a send is surely under way, and writes a
    // byte, so the worker's receive is re-armed after the send started
    // waiting (the order in which a reset then completes the two is the
    // one that used to leak: receive error first, then the send's).
    for p in &mut peers {
        let mut b = [0u8; 4096];
        p.read_exact(&mut b).unwrap();
        p.write_all(b"x").unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    // Then resets while the rest of the send is still in flight.
    for p in &peers {
        linger_zero(p);
    }
    drop(peers);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !open.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(ev) = events.recv_timeout(left) else {
            panic!(
                "{name}: {} of {PEERS} reset connections never reported Closed",
                open.len()
            );
        };
        match ev.kind {
            NetEventKind::Closed => assert!(open.remove(&ev.conn), "{name}: one Closed each"),
            NetEventKind::Error(_) | NetEventKind::Data(_) | NetEventKind::PeerClosed => {}
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn peers_resetting_during_a_send_are_all_closed_without_leaking_descriptors() {
    for (backend, name) in [
        (BackendChoice::Fallback, "fallback"),
        (BackendChoice::Auto, "auto"),
    ] {
        let mut net = NetworkWorker::start(0, NetConfig::new().backend(backend)).unwrap();
        let before = open_fds();
        for _ in 0..ROUNDS {
            round(&net, name);
        }
        // The listeners stay open until the worker stops (one fd per round).
        let after = open_fds();
        assert!(
            after <= before + ROUNDS,
            "{name}: {before} descriptors before, {after} after"
        );
        net.stop().unwrap();
    }
}
