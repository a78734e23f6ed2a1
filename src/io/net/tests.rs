//! Network worker tests over real loopback sockets, on both backends.

use super::*;
use crate::io::BackendChoice;
use crate::partition::RoundRobinPartitioner;
use crate::worker::ResultQueue;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn workers() -> Vec<(NetworkWorker, &'static str)> {
    vec![
        (
            NetworkWorker::start(0, NetConfig::new().backend(BackendChoice::Fallback)).unwrap(),
            "fallback",
        ),
        (NetworkWorker::start(1, NetConfig::new()).unwrap(), "auto"),
    ]
}

fn rr() -> Arc<dyn Partitioner> {
    Arc::new(RoundRobinPartitioner::new())
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The next event of `conn` that is not data (data is collected into `data`).
fn next_event(q: &mut ResultQueue<NetEvent>, data: &mut Vec<u8>) -> NetEvent {
    loop {
        let ev = q.recv_timeout(WAIT).expect("an event in time");
        match ev.kind {
            NetEventKind::Data(d) => data.extend_from_slice(&d),
            _ => return ev,
        }
    }
}

#[test]
fn echo_over_many_connections_spread_across_targets() {
    for (net, name) in workers() {
        let (s0, mut q0) = ResultSink::queue();
        let (s1, mut q1) = ResultSink::queue();
        let addr = net.listen(loopback(), vec![s0, s1], rr()).unwrap();
        let (cs, _cq) = ResultSink::queue();
        let mut client = net.client(cs).unwrap();
        let mut peers: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        for (i, p) in peers.iter_mut().enumerate() {
            p.write_all(format!("hello {i}").as_bytes()).unwrap();
        }
        // Two connections each, round-robin; echo everything back.
        let mut accepted = [0, 0];
        let mut echoed = 0;
        let deadline = Instant::now() + WAIT;
        while echoed < 4 * 7 && Instant::now() < deadline {
            for (k, q) in [&mut q0, &mut q1].into_iter().enumerate() {
                while let Some(ev) = q.try_recv() {
                    match ev.kind {
                        NetEventKind::Accepted { local, .. } => {
                            assert_eq!(local, addr);
                            accepted[k] += 1;
                        }
                        NetEventKind::Data(d) => {
                            echoed += d.len();
                            client.send(ev.conn, d).unwrap();
                        }
                        other => panic!("{name}: {other:?}"),
                    }
                }
            }
            std::thread::yield_now();
        }
        assert_eq!(accepted, [2, 2], "{name}");
        for (i, p) in peers.iter_mut().enumerate() {
            let mut back = vec![0u8; 7];
            p.read_exact(&mut back).unwrap();
            assert_eq!(back, format!("hello {i}").as_bytes(), "{name}");
        }
    }
}

#[test]
fn large_transfers_arrive_whole_and_in_order() {
    for (net, name) in workers() {
        let (s, mut q) = ResultSink::queue();
        let addr = net.listen(loopback(), vec![s], rr()).unwrap();
        let (cs, _cq) = ResultSink::queue();
        let mut client = net.client(cs).unwrap();
        let payload: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut peer = TcpStream::connect(addr).unwrap();
        let p2 = payload.clone();
        let mut reader = peer.try_clone().unwrap();
        let writer = std::thread::spawn(move || peer.write_all(&p2).unwrap());
        let echo_back = std::thread::spawn(move || {
            let mut got = vec![0u8; 4 << 20];
            reader.read_exact(&mut got).unwrap();
            got
        });
        let mut seen = 0;
        while seen < payload.len() {
            let ev = q.recv_timeout(WAIT).unwrap();
            if let NetEventKind::Data(d) = ev.kind {
                seen += d.len();
                // Send in pieces to exercise queued sends.
                let mut d = d;
                while !d.is_empty() {
                    let rest = d.split_off(d.len().min(1000));
                    let mut piece = d;
                    loop {
                        match client.send(ev.conn, piece) {
                            Ok(()) => break,
                            Err(SubmitError::Full(b)) => {
                                piece = b;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    d = rest;
                }
            }
        }
        writer.join().unwrap();
        assert!(echo_back.join().unwrap() == payload, "{name}: bytes differ");
    }
}

#[test]
fn peer_reset_is_econnreset_then_closed() {
    for (net, name) in workers() {
        let (s, mut q) = ResultSink::queue();
        let addr = net.listen(loopback(), vec![s], rr()).unwrap();
        let peer = TcpStream::connect(addr).unwrap();
        let mut data = Vec::new();
        assert!(matches!(
            next_event(&mut q, &mut data).kind,
            NetEventKind::Accepted { .. }
        ));
        // Linger 0: close sends RST instead of FIN.
        socket_linger_zero(&peer);
        drop(peer);
        let ev = next_event(&mut q, &mut data);
        match ev.kind {
            NetEventKind::Error(e) => assert_eq!(e.errno(), Some(libc::ECONNRESET), "{name}: {e}"),
            other => panic!("{name}: expected ECONNRESET, got {other:?}"),
        }
        assert!(
            matches!(next_event(&mut q, &mut data).kind, NetEventKind::Closed),
            "{name}"
        );
    }
}

fn socket_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: sets a plain struct option on an open socket.
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

#[test]
fn close_sends_queued_data_then_eof_and_stale_ids_are_errors() {
    for (net, name) in workers() {
        let (s, mut q) = ResultSink::queue();
        let addr = net.listen(loopback(), vec![s], rr()).unwrap();
        let (cs, mut cq) = ResultSink::queue();
        let mut client = net.client(cs).unwrap();
        let mut peer = TcpStream::connect(addr).unwrap();
        let mut data = Vec::new();
        let conn = next_event(&mut q, &mut data).conn;
        client.send(conn, b"bye".to_vec()).unwrap();
        client.close(conn).unwrap();
        let mut all = Vec::new();
        peer.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"bye", "{name}");
        assert!(
            matches!(next_event(&mut q, &mut data).kind, NetEventKind::Closed),
            "{name}"
        );
        client.send(conn, b"late".to_vec()).unwrap();
        match cq.recv_timeout(WAIT).unwrap().kind {
            NetEventKind::Error(IoError::NotOpen {
                what: "connection", ..
            }) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn outbound_connect_and_refused() {
    for (net, name) in workers() {
        let server = std::net::TcpListener::bind(loopback()).unwrap();
        let (cs, mut cq) = ResultSink::queue();
        let mut client = net.client(cs).unwrap();
        client.connect(server.local_addr().unwrap(), 7).unwrap();
        let (mut accepted, _) = server.accept().unwrap();
        let ev = cq.recv_timeout(WAIT).unwrap();
        assert!(
            matches!(ev.kind, NetEventKind::Connected { token: 7 }),
            "{name}: {:?}",
            ev.kind
        );
        client.send(ev.conn, b"out".to_vec()).unwrap();
        let mut b = [0u8; 3];
        accepted.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"out");
        accepted.write_all(b"in").unwrap();
        let mut data = Vec::new();
        while data.len() < 2 {
            match cq.recv_timeout(WAIT).unwrap().kind {
                NetEventKind::Data(d) => data.extend_from_slice(&d),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(data, b"in");
        // A port nobody listens on: refused.
        let closed = {
            let l = std::net::TcpListener::bind(loopback()).unwrap();
            l.local_addr().unwrap()
        };
        client.connect(closed, 8).unwrap();
        loop {
            let ev = cq.recv_timeout(WAIT).unwrap();
            match ev.kind {
                NetEventKind::ConnectFailed { token: 8, error } => {
                    assert_eq!(error.errno(), Some(libc::ECONNREFUSED), "{name}: {error}");
                    break;
                }
                NetEventKind::Data(_) => {}
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}

#[test]
fn listening_on_a_taken_port_is_an_error() {
    let net = NetworkWorker::start(0, NetConfig::new()).unwrap();
    let taken = std::net::TcpListener::bind(loopback()).unwrap();
    let (s, _q) = ResultSink::queue();
    let e = net
        .listen(taken.local_addr().unwrap(), vec![s], rr())
        .unwrap_err();
    match e {
        Error::Io(io) => {
            assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse);
            assert!(io.to_string().contains("after retrying"), "{io}");
        }
        other => panic!("{other}"),
    }
    assert!(matches!(
        net.listen(loopback(), vec![], rr()),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn stopping_closes_every_connection() {
    for (mut net, name) in workers() {
        let (s, mut q) = ResultSink::queue();
        let addr = net.listen(loopback(), vec![s], rr()).unwrap();
        let mut peer = TcpStream::connect(addr).unwrap();
        let mut data = Vec::new();
        assert!(matches!(
            next_event(&mut q, &mut data).kind,
            NetEventKind::Accepted { .. }
        ));
        net.stop().unwrap();
        assert!(
            matches!(next_event(&mut q, &mut data).kind, NetEventKind::Closed),
            "{name}"
        );
        let mut buf = [0u8; 1];
        peer.set_read_timeout(Some(WAIT)).unwrap();
        assert!(
            matches!(peer.read(&mut buf), Ok(0) | Err(_)),
            "{name}: peer sees the close"
        );
    }
}

#[test]
fn a_half_closed_peer_still_gets_the_replies() {
    for (net, name) in workers() {
        let (s, mut q) = ResultSink::queue();
        let addr = net.listen(loopback(), vec![s], rr()).unwrap();
        let (cs, _cq) = ResultSink::queue();
        let mut client = net.client(cs).unwrap();
        let mut peer = TcpStream::connect(addr).unwrap();
        peer.write_all(b"request").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut data = Vec::new();
        let conn = next_event(&mut q, &mut data).conn; // Accepted
        let ev = next_event(&mut q, &mut data);
        assert!(
            matches!(ev.kind, NetEventKind::PeerClosed),
            "{name}: {:?}",
            ev.kind
        );
        assert_eq!(data, b"request", "{name}: all data comes before PeerClosed");
        // The reply goes out after the peer's EOF, then we close.
        client.send(conn, b"reply".to_vec()).unwrap();
        client.close(conn).unwrap();
        let mut back = Vec::new();
        peer.set_read_timeout(Some(WAIT)).unwrap();
        peer.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"reply", "{name}");
        assert!(
            matches!(next_event(&mut q, &mut data).kind, NetEventKind::Closed),
            "{name}"
        );
    }
}

#[test]
fn a_port_is_bound_again_right_after_its_listener_goes() {
    for (backend, name) in [
        (BackendChoice::Fallback, "fallback"),
        (BackendChoice::Auto, "auto"),
    ] {
        // A worker listening with a live connection stops; another binds
        // the same port at once (the old connection is in TIME_WAIT).
        let mut first = NetworkWorker::start(0, NetConfig::new().backend(backend)).unwrap();
        let (s, mut q) = ResultSink::queue();
        let addr = first.listen(loopback(), vec![s], rr()).unwrap();
        let _peer = TcpStream::connect(addr).unwrap();
        let mut data = Vec::new();
        assert!(matches!(
            next_event(&mut q, &mut data).kind,
            NetEventKind::Accepted { .. }
        ));
        first.stop().unwrap();
        drop(first);
        let second = NetworkWorker::start(1, NetConfig::new().backend(backend)).unwrap();
        let (s, _q) = ResultSink::queue();
        let again = second
            .listen(addr, vec![s], rr())
            .unwrap_or_else(|e| panic!("{name}: rebinding {addr}: {e}"));
        assert_eq!(again, addr, "{name}");
        drop(second);
        // A port still in LISTEN for a moment (a killed process's listener
        // being torn down) is bound once it is free.
        let held = std::net::TcpListener::bind(loopback()).unwrap();
        let addr = held.local_addr().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        });
        let net = NetworkWorker::start(2, NetConfig::new().backend(backend)).unwrap();
        let (s, _q) = ResultSink::queue();
        let got = net
            .listen(addr, vec![s], rr())
            .unwrap_or_else(|e| panic!("{name}: binding {addr} as it frees: {e}"));
        assert_eq!(got, addr, "{name}");
        release.join().unwrap();
    }
}

#[test]
fn a_backlogged_owner_gets_every_event_while_the_worker_idles() {
    use crate::io::test_gate::{spawn_gate, wait_for};
    const CHUNKS: usize = 64;
    const CHUNK: usize = 512;
    for (mut net, name) in workers() {
        let (mut target, open, bytes) = spawn_gate(|e: &NetEvent| match &e.kind {
            NetEventKind::Data(d) => d.len(),
            _ => 0,
        });
        let sink = ResultSink::to_worker(target.sender(), |e| e);
        let addr = net.listen(loopback(), vec![sink], rr()).unwrap();
        let mut peer = TcpStream::connect(addr).unwrap();
        peer.set_nodelay(true).unwrap();
        for _ in 0..CHUNKS {
            // Apart in time, so they arrive as separate reads.
            peer.write_all(&[7u8; CHUNK]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        // Long past the worker's spin: it has nothing to do but the
        // backlog, and must not sleep on it for good.
        std::thread::sleep(Duration::from_millis(300));
        open.send(()).unwrap();
        assert_eq!(
            wait_for(&bytes, CHUNKS * CHUNK),
            CHUNKS * CHUNK,
            "{name}: backlogged data never delivered"
        );
        drop(peer);
        net.stop().unwrap();
        target.stop().unwrap();
    }
}

#[test]
fn stop_delivers_every_closed_even_to_a_backlogged_owner() {
    use crate::io::test_gate::{spawn_gate, wait_for};
    const CONNS: usize = 16;
    for (net, name) in workers() {
        let (mut target, open, closed) =
            spawn_gate(|e: &NetEvent| usize::from(matches!(e.kind, NetEventKind::Closed)));
        let sink = ResultSink::to_worker(target.sender(), |e| e);
        let addr = net.listen(loopback(), vec![sink], rr()).unwrap();
        let peers: Vec<TcpStream> = (0..CONNS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // Every connection accepted (and backlogged) before the stop.
        std::thread::sleep(Duration::from_millis(300));
        let mut net = net;
        let stopper = std::thread::spawn(move || net.stop());
        std::thread::sleep(Duration::from_millis(300));
        open.send(()).unwrap();
        stopper.join().unwrap().unwrap();
        assert_eq!(
            wait_for(&closed, CONNS),
            CONNS,
            "{name}: Closed events lost at stop"
        );
        drop(peers);
        target.stop().unwrap();
    }
}

/// Sends to a peer that does not read: the connection's queue stops at its
/// bound (the rest come back unsent, intact), `Sent` events report what
/// the socket took and what is still queued; once the peer reads, every
/// accepted buffer arrives, in order, each with its `Sent`.
#[test]
fn a_peer_that_does_not_read_meets_the_send_bound_and_sent_events_track_the_rest() {
    const CHUNK: usize = 64 << 10;
    const CHUNKS: u64 = 256;
    const LIMIT: usize = 256 << 10;
    for backend in [BackendChoice::Fallback, BackendChoice::Auto] {
        let name = format!("{backend:?}");
        let net =
            NetworkWorker::start(0, NetConfig::new().backend(backend).send_queue_limit(LIMIT))
                .unwrap();
        let (s, mut q) = ResultSink::queue();
        let addr = net.listen(loopback(), vec![s], rr()).unwrap();
        let (cs, mut cq) = ResultSink::queue();
        let mut client = net.client(cs).unwrap();
        let mut peer = TcpStream::connect(addr).unwrap();
        let conn = match q.recv_timeout(WAIT).unwrap() {
            NetEvent {
                conn,
                kind: NetEventKind::Accepted { .. },
            } => conn,
            other => panic!("{name}: {other:?}"),
        };
        for i in 0..CHUNKS {
            let mut buf = vec![i as u8; CHUNK];
            loop {
                match client.send_tracked(conn, buf, i) {
                    Ok(()) => break,
                    Err(SubmitError::Full(b)) => {
                        buf = b;
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // Until the worker has answered every send it could: quiet for
        // 300 ms (bounded by WAIT).
        let (mut sent, mut refused) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match cq.recv_timeout(Duration::from_millis(300)) {
                Ok(NetEvent {
                    kind: NetEventKind::Sent { tag, queued },
                    ..
                }) => {
                    assert!(queued <= LIMIT, "{name}: {queued} queued");
                    sent.push(tag);
                }
                Ok(NetEvent {
                    kind: NetEventKind::SendRefused { buf, tag, queued },
                    ..
                }) => {
                    let tag = tag.expect("tracked");
                    assert!(
                        buf.len() == CHUNK && buf.iter().all(|&b| b == tag as u8),
                        "{name}"
                    );
                    assert!(
                        queued + CHUNK > LIMIT && queued <= LIMIT + CHUNK,
                        "{name}: {queued}"
                    );
                    refused.push(tag);
                }
                Ok(other) => panic!("{name}: {other:?}"),
                Err(_) => break,
            }
        }
        assert!(
            !refused.is_empty(),
            "{name}: a peer that never reads fills the bound"
        );
        let pending = CHUNKS as usize - sent.len() - refused.len();
        assert!(
            pending * CHUNK <= LIMIT + CHUNK,
            "{name}: {pending} chunks held past the bound"
        );
        // The peer reads: every accepted chunk, in order.
        let accepted: Vec<u64> = (0..CHUNKS).filter(|i| !refused.contains(i)).collect();
        let mut got = vec![0u8; accepted.len() * CHUNK];
        peer.set_read_timeout(Some(WAIT)).unwrap();
        peer.read_exact(&mut got).unwrap();
        for (k, i) in accepted.iter().enumerate() {
            let chunk = &got[k * CHUNK..(k + 1) * CHUNK];
            assert!(
                chunk.iter().all(|&b| b == *i as u8),
                "{name}: chunk {i} out of order"
            );
        }
        while sent.len() < accepted.len() {
            match cq
                .recv_timeout(WAIT)
                .expect("the rest of the Sent events")
                .kind
            {
                NetEventKind::Sent { tag, .. } => sent.push(tag),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(
            sent, accepted,
            "{name}: one Sent per accepted buffer, in order"
        );
    }
}

#[test]
fn a_closed_listener_frees_its_port_and_keeps_its_connections() {
    for (mut net, name) in workers() {
        let (s, mut q) = ResultSink::queue();
        let addr = net.listen(loopback(), vec![s], rr()).unwrap();
        let (cs, _cq) = ResultSink::queue();
        let mut client = net.client(cs).unwrap();
        let mut kept = TcpStream::connect(addr).unwrap();
        let conn = match q.recv_timeout(WAIT).unwrap() {
            NetEvent {
                conn,
                kind: NetEventKind::Accepted { .. },
            } => conn,
            other => panic!("{name}: {other:?}"),
        };
        net.close_listener(addr).unwrap();
        // The port is free: a plain listener binds it at once.
        let again = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("{name}: port still bound after close: {e}"));
        drop(again);
        // The accepted connection still works both ways.
        client.send(conn, b"still here".to_vec()).unwrap();
        let mut got = [0u8; 10];
        kept.set_read_timeout(Some(WAIT)).unwrap();
        kept.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still here", "{name}");
        kept.write_all(b"ok").unwrap();
        let mut data = Vec::new();
        while data.len() < 2 {
            match q.recv_timeout(WAIT).unwrap().kind {
                NetEventKind::Data(d) => data.extend(d),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(data, b"ok");
        // Twice, or an address never listened on: a clear error.
        assert!(
            matches!(
                net.close_listener(addr),
                Err(crate::Error::InvalidConfig(_))
            ),
            "{name}"
        );
        net.stop().unwrap();
    }
}

#[test]
fn zero_copy_sends_arrive_whole_and_report_sent_after_the_kernel_lets_go() {
    // Every send zero-copy (where the kernel has SEND_ZC; elsewhere, and on
    // the fallback, the same bytes by copy).
    let config = NetConfig::new().zero_copy_send(1);
    for (backend, name) in [
        (BackendChoice::Auto, "auto"),
        (BackendChoice::Fallback, "fallback"),
    ] {
        let net = NetworkWorker::start(0, config.clone().backend(backend)).unwrap();
        let (s, mut q) = ResultSink::queue();
        let addr = net.listen(loopback(), vec![s], rr()).unwrap();
        let (cs, mut cq) = ResultSink::queue();
        let mut client = net.client(cs).unwrap();
        let mut peer = TcpStream::connect(addr).unwrap();
        let conn = match q.recv_timeout(WAIT).unwrap() {
            NetEvent {
                conn,
                kind: NetEventKind::Accepted { .. },
            } => conn,
            other => panic!("{name}: {other:?}"),
        };
        let chunks: Vec<Vec<u8>> = (0..4u8)
            .map(|c| (0..2 << 20).map(|i: u32| (i % 253) as u8 ^ c).collect())
            .collect();
        let expected: Vec<u8> = chunks.concat();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 8 << 20];
            peer.read_exact(&mut got).unwrap();
            got
        });
        for (tag, chunk) in chunks.into_iter().enumerate() {
            client.send_tracked(conn, chunk, tag as u64).unwrap();
        }
        let mut sent = Vec::new();
        while sent.len() < 4 {
            match cq.recv_timeout(WAIT).expect("a Sent event in time").kind {
                NetEventKind::Sent { tag, .. } => sent.push(tag),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(sent, vec![0, 1, 2, 3], "{name}: in order, each once");
        assert!(reader.join().unwrap() == expected, "{name}: bytes differ");
        let mut net = net;
        net.stop().unwrap();
    }
}

#[test]
fn a_tiny_provided_buffer_ring_runs_dry_and_every_byte_still_arrives_in_order() {
    // Two 512-byte buffers for five connections each sending 256 KiB: the
    // kernel runs out of buffers again and again (the multishot receive
    // ends with ENOBUFS and is armed again), and a slow owner pauses them.
    let config = NetConfig::new().provided_buffers(Some((2, 512)));
    let net = NetworkWorker::start(0, config).unwrap();
    let (s, mut q) = ResultSink::queue();
    let addr = net.listen(loopback(), vec![s], rr()).unwrap();
    let payload = |c: u8| -> Vec<u8> { (0..256 << 10).map(|i: u32| (i % 241) as u8 ^ c).collect() };
    let writers: Vec<_> = (0..5u8)
        .map(|c| {
            let data = payload(c);
            std::thread::spawn(move || {
                let mut peer = TcpStream::connect(addr).unwrap();
                peer.write_all(&[c]).unwrap();
                peer.write_all(&data).unwrap();
                peer.shutdown(std::net::Shutdown::Write).unwrap();
                // Hold the socket until the server is done reading.
                let mut rest = Vec::new();
                let _ = peer.read_to_end(&mut rest);
            })
        })
        .collect();
    let mut got: std::collections::HashMap<ConnId, Vec<u8>> = Default::default();
    let mut done = 0;
    let (cs, _cq) = ResultSink::queue();
    let mut client = net.client(cs).unwrap();
    let deadline = Instant::now() + WAIT;
    while done < 5 && Instant::now() < deadline {
        let Ok(ev) = q.recv_timeout(WAIT) else { break };
        match ev.kind {
            NetEventKind::Data(d) => {
                got.entry(ev.conn).or_default().extend_from_slice(&d);
                // A slow owner: the backlog builds up and reads pause.
                if got.len() % 2 == 0 {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            NetEventKind::PeerClosed => {
                done += 1;
                client.close(ev.conn).unwrap();
            }
            NetEventKind::Accepted { .. } | NetEventKind::Closed => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(done, 5, "every peer's EOF arrived");
    for bytes in got.values() {
        let c = bytes[0];
        assert!(
            bytes[1..] == payload(c)[..],
            "connection {c}: bytes lost or reordered"
        );
    }
    for w in writers {
        w.join().unwrap();
    }
    let mut net = net;
    net.stop().unwrap();
}

/// `pause_reading` stops receives (the peer's writes block once the
/// socket buffers fill), `resume_reading` brings every byte, in order; on
/// both backends and with provided buffers (a multishot receive, which a
/// pause cancels). A stale id is an error event.
#[test]
fn pause_reading_stops_a_sender_and_resume_delivers_every_byte() {
    let mut nets = workers();
    let multishot = NetConfig::new().provided_buffers(Some((8, 4096)));
    nets.push((
        NetworkWorker::start(2, multishot).unwrap(),
        "provided buffers",
    ));
    for (mut net, name) in nets {
        let (s, mut q) = ResultSink::queue();
        let addr = net.listen(loopback(), vec![s], rr()).unwrap();
        let (cs, mut cq) = ResultSink::queue();
        let mut client = net.client(cs).unwrap();
        const TOTAL: usize = 32 << 20;
        let payload: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let progress = sent.clone();
        let data = payload.clone();
        // The first MiB goes before the pause, the rest after it (so a
        // loaded machine cannot let the whole stream in before the pause).
        let (paused_tx, paused_rx) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let mut peer = TcpStream::connect(addr).unwrap();
            for (i, chunk) in data.chunks(64 << 10).enumerate() {
                if i == 16 {
                    paused_rx.recv().unwrap();
                }
                peer.write_all(chunk).unwrap();
                progress.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            }
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            let _ = peer.read_to_end(&mut rest);
        });
        let ev = q.recv_timeout(WAIT).expect("accepted");
        let NetEventKind::Accepted { .. } = ev.kind else {
            panic!("{name}: {ev:?}");
        };
        let conn = ev.conn;
        client.pause_reading(conn).unwrap();
        // The worker takes the request when it next wakes (the first MiB
        // leaves it idle); then the sender goes on.
        std::thread::sleep(Duration::from_millis(50));
        paused_tx.send(()).unwrap();
        // Drain what was taken before the pause, then nothing more comes
        // while the sender stalls on full socket buffers.
        let mut got = Vec::new();
        let quiet = Duration::from_millis(300);
        while let Ok(ev) = q.recv_timeout(quiet) {
            match ev.kind {
                NetEventKind::Data(d) => got.extend_from_slice(&d),
                other => panic!("{name}: {other:?}"),
            }
        }
        let stalled = sent.load(std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            sent.load(std::sync::atomic::Ordering::Relaxed),
            stalled,
            "{name}: the sender is held back"
        );
        assert!(stalled < TOTAL, "{name}: paused before the end");
        assert!(got.len() <= stalled, "{name}");
        client.resume_reading(conn).unwrap();
        let mut data = std::mem::take(&mut got);
        let ev = next_event(&mut q, &mut data);
        assert!(
            matches!(ev.kind, NetEventKind::PeerClosed),
            "{name}: {ev:?}"
        );
        assert!(data == payload, "{name}: every byte, in order");
        client.close(conn).unwrap();
        let ev = next_event(&mut q, &mut data);
        assert!(matches!(ev.kind, NetEventKind::Closed), "{name}: {ev:?}");
        writer.join().unwrap();
        // A connection that is gone: an error, not a hang or a panic.
        client.pause_reading(conn).unwrap();
        let ev = cq.recv_timeout(WAIT).expect("stale id answered");
        assert!(
            matches!(ev.kind, NetEventKind::Error(IoError::NotOpen { .. })),
            "{name}: {ev:?}"
        );
        net.stop().unwrap();
    }
}
