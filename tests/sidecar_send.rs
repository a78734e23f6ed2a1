//! End to end: the daemon's sends (`--dest`) to real TCP and TLS
//! destinations (`examples/sidecar/sink.rs`, certificates made by rcgen)
//! from the Rust client over a real memfd region: delivery on
//! acknowledgement, bounded retries against a refusing, resetting,
//! silent or badly certified destination, and `kill -9` of the daemon
//! under sends with every accepted send delivered at least once. Every
//! wait is bounded.

#[path = "../examples/sidecar/client.rs"]
#[allow(dead_code)]
mod client;
mod common;
#[path = "../examples/sidecar/delivery.rs"]
#[allow(dead_code)]
mod delivery;
#[path = "../examples/sidecar/layout.rs"]
#[allow(dead_code)]
mod layout;
#[path = "../examples/sidecar/proto.rs"]
#[allow(dead_code)]
mod proto;
#[path = "../examples/sidecar/ring.rs"]
#[allow(dead_code)]
mod ring;
#[path = "../examples/sidecar/shm.rs"]
#[allow(dead_code)]
mod shm;
#[allow(dead_code)]
mod sidecar_harness;
#[path = "../examples/sidecar/sink.rs"]
#[allow(dead_code)]
mod sink;

use layout::status;
use sidecar_harness::{Daemon, root, status_of, unique_name};
use sink::{Fault, Identity, Sink};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn plain_sink(fault: Fault) -> Sink {
    Sink::start("127.0.0.1:0".parse().unwrap(), None, fault).unwrap()
}

fn tls_sink(id: &Identity, fault: Fault) -> Sink {
    Sink::start(
        "127.0.0.1:0".parse().unwrap(),
        Some(id.server_config().unwrap()),
        fault,
    )
    .unwrap()
}

fn dest(arg: String) -> Vec<String> {
    vec!["--dest".into(), arg]
}

/// Sends `n` payloads to `d`, returns each one's operation id (from its
/// ACCEPTED) and the completion's result.
fn send_all(c: &mut client::Client, d: u64, n: usize) -> Vec<(u64, client::Result<u64>)> {
    let users: Vec<u64> = (0..n)
        .map(|i| c.send(d, format!("payload {i}").as_bytes()).unwrap())
        .collect();
    users
        .into_iter()
        .map(|u| {
            let id = c.wait_accepted(u).unwrap();
            (id, c.wait_completed(u))
        })
        .collect()
}

#[test]
fn sends_over_tcp_and_tls_complete_once_acknowledged() {
    let (_d, root) = root("send-ok");
    let plain = plain_sink(Fault::None);
    let id = Identity::generate().unwrap();
    let tls = tls_sink(&id, Fault::None);
    let ca = id.write_ca(root.parent().unwrap()).unwrap();
    let mut args = dest(format!("plain={}", plain.addr));
    args.extend(dest(format!(
        "secure=localhost:{},tls,ca={}",
        tls.addr.port(),
        ca.display()
    )));
    let daemon = Daemon::start_with(&unique_name("send-ok"), &root, &args);
    assert!(daemon.banner.contains("secure="), "{}", daemon.banner);
    let mut c = daemon.attach();
    for (name, sink) in [("plain", &plain), ("secure", &tls)] {
        let d = c.dest_wait(name).unwrap();
        let results = send_all(&mut c, d, 100);
        let ids: HashSet<u64> = results.iter().map(|r| r.0).collect();
        assert_eq!(ids.len(), 100, "{name}: operation ids are unique");
        for (op, r) in &results {
            assert!(*r.as_ref().unwrap() >= 1, "{name}: op {op}: {r:?}");
        }
        // Completed means acknowledged, so the sink already has them all.
        sink.with(|r| {
            for op in &ids {
                assert!(r.ids.contains_key(op), "{name}: op {op} not received");
            }
            assert_eq!(
                r.bytes,
                (0..100).map(|i| format!("payload {i}").len() as u64).sum()
            );
        });
    }
    // A name nobody configured, and a handle nobody was given.
    assert_eq!(status_of(c.dest_wait("nowhere")), Some(status::NO_DEST));
    let u = c.send(77, b"x").unwrap();
    assert_eq!(status_of(c.wait_completed(u)), Some(status::NO_DEST));
}

/// The WAL's bytes on disk (engine 0's directory).
fn wal_bytes(root: &std::path::Path) -> u64 {
    std::fs::read_dir(root.join(".sidecar-wal"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Volatile sends (`op::VOLATILE`) leave no WAL record and get no
/// ACCEPTED, yet complete only on the destination's acknowledgement, and
/// fail with the cause like journaled ones.
#[test]
fn volatile_sends_skip_the_wal_and_complete_once_acknowledged() {
    let (_d, root) = root("send-volatile");
    let id = Identity::generate().unwrap();
    let tls = tls_sink(&id, Fault::None);
    let ca = id.write_ca(root.parent().unwrap()).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut args = dest(format!(
        "secure=localhost:{},tls,ca={}",
        tls.addr.port(),
        ca.display()
    ));
    args.extend(dest(format!("down={closed}")));
    args.extend(["--send-attempts".into(), "3".into()]);
    let daemon = Daemon::start_with(&unique_name("send-volatile"), &root, &args);
    let mut c = daemon.attach();
    let d = c.dest_wait("secure").unwrap();
    let before = wal_bytes(&root);
    let payload = vec![7u8; 1024];
    let users: Vec<u64> = (0..2000)
        .map(|_| c.send_volatile(d, &payload).unwrap())
        .collect();
    for u in users {
        assert!(c.wait_completed(u).unwrap() >= 1);
    }
    // Completed means acknowledged: the sink has every byte already.
    tls.with(|r| {
        assert_eq!(r.bytes, 2000 * 1024);
        assert_eq!(r.ids.len(), 2000, "every volatile send its own id");
    });
    let grown = wal_bytes(&root) - before;
    assert!(
        grown < 4096,
        "2 MB of volatile sends grew the WAL by {grown} bytes"
    );
    // A journaled send after them still gets its ACCEPTED and its id.
    let u = c.send(d, b"journaled").unwrap();
    let op = c.wait_accepted(u).unwrap();
    c.wait_completed(u).unwrap();
    assert!(tls.with(|r| r.ids.contains_key(&op)));
    // Failures name their cause, as for journaled sends.
    let down = c.dest_wait("down").unwrap();
    let u = c.send_volatile(down, b"x").unwrap();
    assert_eq!(status_of(c.wait_completed(u)), Some(-libc::ECONNREFUSED));
    let u = c.send_volatile(77, b"x").unwrap();
    assert_eq!(status_of(c.wait_completed(u)), Some(status::NO_DEST));
    let bad = c
        .raw_request(proto::encode(layout::op::SEND, 1, 9, d, 0, 0, 8))
        .unwrap();
    assert_eq!(status_of(c.wait_completed(bad)), Some(status::BAD_FLAGS));
}

#[test]
fn a_refusing_destination_fails_sends_with_the_cause_after_a_bound() {
    let (_d, root) = root("send-refused");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut args = dest(format!("down={closed}"));
    args.extend(["--send-attempts".into(), "4".into()]);
    let daemon = Daemon::start_with(&unique_name("send-refused"), &root, &args);
    let mut c = daemon.attach();
    let d = c.dest_wait("down").unwrap();
    let t = Instant::now();
    let results = send_all(&mut c, d, 3);
    for (_, r) in results {
        let s = status_of(r);
        assert_eq!(s, Some(-libc::ECONNREFUSED), "{s:?}");
    }
    // Four attempts with backoff of 5, 10 and 20 ms (jittered): well
    // under a second, and not at once.
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(took >= Duration::from_millis(15), "backed off: {took:?}");
}

#[test]
fn a_reset_mid_send_is_retried_and_the_send_delivered() {
    let (_d, root) = root("send-reset");
    let sink = plain_sink(Fault::ResetFirst(2));
    let args = dest(format!("flaky={}", sink.addr));
    let daemon = Daemon::start_with(&unique_name("send-reset"), &root, &args);
    let mut c = daemon.attach();
    let d = c.dest_wait("flaky").unwrap();
    let results = send_all(&mut c, d, 20);
    for (op, r) in &results {
        assert!(r.is_ok(), "op {op}: {r:?}");
        assert!(sink.with(|s| s.ids.contains_key(op)));
    }
    assert!(
        results.iter().any(|(_, r)| *r.as_ref().unwrap() > 1),
        "some send needed a second attempt: {results:?}"
    );
    assert!(sink.with(|s| s.connections) >= 3);
}

#[test]
fn a_destination_that_always_resets_fails_with_the_reset() {
    let (_d, root) = root("send-resets");
    let sink = plain_sink(Fault::ResetFirst(usize::MAX));
    let mut args = dest(format!("broken={}", sink.addr));
    args.extend(["--send-attempts".into(), "3".into()]);
    let daemon = Daemon::start_with(&unique_name("send-resets"), &root, &args);
    let mut c = daemon.attach();
    let d = c.dest_wait("broken").unwrap();
    let (_, r) = send_all(&mut c, d, 1).pop().unwrap();
    let s = status_of(r).unwrap();
    assert!(
        s == -libc::ECONNRESET || s == status::DEST_CLOSED,
        "{}",
        status::describe(s)
    );
}

#[test]
fn a_bad_certificate_fails_the_send_as_a_tls_failure() {
    let (_d, root) = root("send-cert");
    let theirs = Identity::generate().unwrap();
    let sink = tls_sink(&theirs, Fault::None);
    // The daemon trusts another CA than the one that signed the sink's.
    let ours = Identity::generate().unwrap();
    let ca = ours.write_ca(root.parent().unwrap()).unwrap();
    let mut args = dest(format!("impostor={},tls,ca={}", sink.addr, ca.display()));
    args.extend(["--send-attempts".into(), "2".into()]);
    let daemon = Daemon::start_with(&unique_name("send-cert"), &root, &args);
    let mut c = daemon.attach();
    let d = c.dest_wait("impostor").unwrap();
    let (_, r) = send_all(&mut c, d, 1).pop().unwrap();
    assert_eq!(status_of(r), Some(status::TLS_FAILED));
    assert!(
        sink.with(|s| s.frames) == 0,
        "nothing crossed an untrusted session"
    );
    assert!(daemon.wait_log("TLS failed", Duration::from_secs(2)));
}

#[test]
fn a_destination_that_never_acknowledges_times_out() {
    let (_d, root) = root("send-silent");
    let sink = plain_sink(Fault::Silent);
    let mut args = dest(format!("mute={}", sink.addr));
    args.extend(["--send-timeout-ms".into(), "300".into()]);
    let daemon = Daemon::start_with(&unique_name("send-silent"), &root, &args);
    let mut c = daemon.attach();
    let d = c.dest_wait("mute").unwrap();
    let t = Instant::now();
    let (_, r) = send_all(&mut c, d, 1).pop().unwrap();
    assert_eq!(status_of(r), Some(status::SEND_TIMEOUT));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        sink.with(|s| s.frames) >= 1,
        "it was sent, never acknowledged"
    );
}

#[test]
fn a_log_with_sends_to_a_destination_no_longer_configured_refuses_to_start() {
    let (_d, root) = root("send-gone");
    let sink = plain_sink(Fault::Silent);
    let name = unique_name("send-gone");
    let mut daemon = Daemon::start_with(&name, &root, &dest(format!("gone={}", sink.addr)));
    let mut c = daemon.attach();
    let d = c.dest_wait("gone").unwrap();
    let u = c.send(d, b"keep me").unwrap();
    c.wait_accepted(u).unwrap();
    daemon.kill9();
    drop(c);
    let out = std::process::Command::new(common::example_bin("sidecar"))
        .args(["serve", "--name", &name, "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"gone\"") && err.contains("not configured"),
        "{err}"
    );
    // With the destination back, the send is delivered.
    let sink = plain_sink(Fault::None);
    let _daemon = Daemon::start_with(&name, &root, &dest(format!("gone={}", sink.addr)));
    assert!(sink.wait(Duration::from_secs(5), |r| r.frames >= 1));
}

/// `kill -9` of the daemon while two clients send, at random points,
/// 20 rounds: every send that was ACCEPTED reaches the destination (over
/// TLS) at least once, across restarts that replay the log.
#[test]
fn daemon_killed_under_sends_delivers_every_accepted_send_at_least_once() {
    let rounds: u64 = std::env::var("SIDECAR_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (_d, root) = root("send-kill");
    let id = Identity::generate().unwrap();
    let sink = tls_sink(&id, Fault::None);
    let ca = id.write_ca(root.parent().unwrap()).unwrap();
    let mut args = dest(format!("audit={},tls,ca={}", sink.addr, ca.display()));
    // Small WAL segments: kills land in rotations and retirements, and
    // operation ids must never repeat across them (W3).
    args.extend(["--wal-segment-bytes".into(), "8192".into()]);
    let name = unique_name("send-kill");
    let accepted = Arc::new(Mutex::new(Vec::<u64>::new()));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("seed {seed}");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..rounds {
        let mut daemon = Daemon::start_with(&name, &root, &args);
        let clients: Vec<_> = (0..2)
            .map(|t| {
                let mut c = daemon.attach();
                let accepted = accepted.clone();
                std::thread::spawn(move || {
                    let Ok(d) = c.dest_wait("audit") else { return };
                    let deadline = Instant::now() + Duration::from_secs(5);
                    let mut i = 0u64;
                    while Instant::now() < deadline {
                        let Ok(users) = (0..16)
                            .map(|k| c.send(d, format!("r{round} t{t} #{}", i + k).as_bytes()))
                            .collect::<client::Result<Vec<u64>>>()
                        else {
                            return;
                        };
                        i += 16;
                        for u in users {
                            match c.wait_accepted(u) {
                                Ok(op) => accepted.lock().unwrap().push(op),
                                Err(_) => return,
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 + next() % 150));
        daemon.kill9();
        for c in clients {
            c.join().unwrap();
        }
    }
    // A last start delivers what the last kill left.
    let _daemon = Daemon::start_with(&name, &root, &args);
    let all_ids = accepted.lock().unwrap().clone();
    let want: HashSet<u64> = all_ids.iter().copied().collect();
    assert!(!want.is_empty());
    assert_eq!(
        want.len(),
        all_ids.len(),
        "an operation id was given twice (seed {seed})"
    );
    let all = sink.wait(Duration::from_secs(20), |r| {
        want.iter().all(|op| r.ids.contains_key(op))
    });
    let missing: Vec<u64> = sink.with(|r| {
        want.iter()
            .filter(|op| !r.ids.contains_key(op))
            .copied()
            .collect()
    });
    assert!(
        all,
        "{} accepted sends never arrived (seed {seed}): {missing:?}",
        missing.len()
    );
    let dups = sink.with(|r| r.ids.values().filter(|&&n| n > 1).count());
    eprintln!(
        "{} accepted sends over {rounds} kills, all delivered; {dups} delivered more than once",
        want.len()
    );
}
