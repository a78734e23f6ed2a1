//! White-box tests of buffer ownership: they drive a `UringNet` on the
//! test thread and look at which buffers the ring may touch.

use super::spare::{SPARE_BYTES, SparePool};
use super::*;
use crate::io::inbox::Shared;
use crate::worker::{ResultQueue, ResultSink};

/// A worker driven by hand; `None` where io_uring is unavailable.
fn uring_net(config: &NetConfig) -> Option<UringNet> {
    let waker = Arc::new(EventFd::new().ok()?);
    let w = waker.clone();
    let shared = Shared::new(Arc::new(move || w.notify()), 64);
    let control = Arc::new(Control::new());
    UringNet::new(0, config, shared, control, waker).ok()
}

/// A client of `net` whose events land on the returned queue.
fn join(net: &mut UringNet) -> ResultQueue<NetEvent> {
    let (sink, events) = ResultSink::queue();
    let client = net.inbox.shared.join(sink, 0).expect("room for a client");
    std::mem::forget(client); // stays joined for the test
    net.inbox.accept_joining();
    events
}

fn socketpair() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: writes two descriptors into a local array; checked.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0);
    (fds[0], fds[1])
}

/// Submits and reaps for a while.
fn settle(net: &mut UringNet) {
    for _ in 0..20 {
        net.ring.submit(false);
        net.reap();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn the_spare_pool_is_bounded_in_bytes_and_frees_oversized_buffers() {
    let recv = 64 * 1024;
    let mut pool = SparePool::new();
    for _ in 0..2000 {
        pool.put(Vec::with_capacity(recv), recv);
    }
    for _ in 0..100 {
        pool.put(Vec::with_capacity(1 << 20), recv);
    }
    let held: usize = pool.bufs.iter().map(Vec::capacity).sum();
    assert_eq!(held, pool.bytes, "the byte count is exact");
    assert!(held <= SPARE_BYTES, "the pool holds {held} bytes");
    assert!(
        pool.bufs.iter().all(|b| b.capacity() <= 2 * recv),
        "a large sent buffer is freed, not kept as a receive buffer"
    );
    assert!(pool.take().is_some(), "buffers that fit are kept");
    assert_eq!(
        pool.bytes,
        pool.bufs.iter().map(Vec::capacity).sum::<usize>()
    );
}

#[test]
fn a_failed_connection_keeps_its_in_flight_send_buffer_from_other_receives() {
    // Receive buffers of their own (provided buffers are the kernel's ring).
    let Some(mut net) = uring_net(&NetConfig::new().provided_buffers(None)) else {
        return; // no io_uring here: nothing to test
    };
    let (a, a_peer) = socketpair();
    let (b, b_peer) = socketpair();
    let ca = net.new_conn(a, Owner::Client(0));
    let cb = net.new_conn(b, Owner::Client(0));
    // Far more than the socket buffers hold, and the peer never reads:
    // the send stays in flight.
    let big = vec![7u8; 8 << 20];
    let sending = big.as_ptr();
    net.queue_send(0, ca, big, None);
    settle(&mut net);
    // The connection fails (as on a receive error) while its send is
    // in flight, then another connection arms a receive.
    net.fail_conn(ca.slot(), IoError::os("recv", libc::ECONNRESET));
    net.arm_recv(cb.slot());
    let in_flight: Vec<(u32, *const u8)> = net
        .ops
        .iter()
        .filter_map(|op| match op {
            NetOp::Recv(r) => Some((r.slot, r.buf.as_ptr())),
            NetOp::Send(s) => Some((s.slot, s.buf.as_ptr())),
            _ => None,
        })
        .collect();
    assert!(
        in_flight.contains(&(ca.slot(), sending)),
        "the failed connection's send op still owns its buffer"
    );
    let receiving = in_flight
        .iter()
        .filter(|(slot, _)| *slot == cb.slot())
        .map(|(_, p)| *p)
        .collect::<Vec<_>>();
    assert!(
        !receiving.is_empty(),
        "the other connection's receive is armed"
    );
    assert!(
        !receiving.contains(&sending),
        "a receive was handed the buffer an in-flight send still reads"
    );
    // SAFETY: closes the test's own peer descriptors.
    unsafe {
        libc::close(a_peer);
        libc::close(b_peer);
    }
    net.end_all();
}

#[test]
fn a_ring_that_breaks_under_a_send_fails_and_finishes_the_connection() {
    let Some(mut net) = uring_net(&NetConfig::new()) else {
        return;
    };
    let mut events = join(&mut net);
    let (a, a_peer) = socketpair();
    let conn = net.new_conn(a, Owner::Client(0));
    net.arm_recv(conn.slot());
    net.queue_send(0, conn, vec![1u8; 4096], Some(7));
    // The submit that would take the receive and the send fails for good.
    net.ring.fail_next_submit = Some(libc::EINVAL);
    settle(&mut net);
    net.inbox.flush();
    let mut seen = Vec::new();
    while let Some(ev) = events.try_recv() {
        seen.push(ev.kind);
    }
    assert!(
        matches!(
            seen.first(),
            Some(NetEventKind::Error(IoError::NotSubmitted { .. }))
        ),
        "the owner hears the ring refused its operations: {seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(NetEventKind::Closed)),
        "and the connection is finished, not leaked: {seen:?}"
    );
    assert!(net.ops.is_empty(), "nothing stays in flight");
    assert!(
        net.conns.slots().is_empty(),
        "the slot and its socket are freed"
    );
    // SAFETY: closes the test's own peer descriptor.
    unsafe { libc::close(a_peer) };
    net.end_all();
}
