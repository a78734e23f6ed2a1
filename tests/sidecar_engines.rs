//! End to end: the daemon with more than one engine (`--engines`), the
//! real `sidecar` binary and client processes: clients spread over the
//! engines (seen in their operation ids, the daemon's log and each
//! engine's own WAL directory), a file held by one engine at a time,
//! `kill -9` under writes and sends from two client processes on two
//! engines, and restarts with another engine count: refused while the
//! engine that would not run holds sends, allowed after a clean stop.
//! The plan is fixed at two application workers
//! (`SHARED_NOTHING_APP_WORKERS`), so the tests do not depend on the
//! machine. Every wait is bounded.

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
#[path = "../examples/sidecar/records.rs"]
#[allow(dead_code)]
mod records;
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
#[path = "../examples/sidecar/wal.rs"]
#[allow(dead_code)]
mod wal;

use layout::status;
use sidecar_harness::{Daemon, root, status_of, unique_name};
use sink::{Fault, Sink};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The plan every test's daemon gets: two application workers.
const PLAN: &[(&str, &str)] = &[("SHARED_NOTHING_APP_WORKERS", "2")];

fn start(name: &str, root: &Path, engines: usize, extra: &[String]) -> Daemon {
    let mut args = vec!["--engines".to_string(), engines.to_string()];
    args.extend_from_slice(extra);
    Daemon::start_env(name, root, &args, PLAN)
}

fn dest(name: &str, sink: &Sink) -> Vec<String> {
    vec!["--dest".into(), format!("{name}={}", sink.addr)]
}

/// The engine an operation id names (`delivery::op_id`).
fn engine_of(id: u64) -> u64 {
    id >> delivery::LSN_BITS
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every record of every segment in one engine's WAL directory.
fn wal_records(dir: &Path) -> Vec<wal::Record> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(wal::segment_no))
        .collect();
    names.sort_unstable();
    names
        .into_iter()
        .flat_map(|no| wal::scan(&std::fs::read(dir.join(wal::segment_name(no))).unwrap()).records)
        .collect()
}

/// The files a WAL directory journaled writes to, by path.
fn journaled_files(dir: &Path) -> HashSet<String> {
    let recs = wal_records(dir);
    let paths: HashMap<u32, String> = recs
        .iter()
        .filter_map(|r| match r {
            wal::Record::Path { file, path } => {
                Some((*file, String::from_utf8_lossy(path).into_owned()))
            }
            _ => None,
        })
        .collect();
    recs.iter()
        .filter_map(|r| match r {
            wal::Record::Write { file, .. } => paths.get(file).cloned(),
            _ => None,
        })
        .collect()
}

/// SIGTERM, then the exit within `timeout`: a clean stop.
fn terminate(daemon: &mut Daemon, timeout: Duration) -> std::process::ExitStatus {
    let pid = i32::try_from(daemon.child.id()).unwrap();
    // SAFETY: kill(2) with a child's pid and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let end = Instant::now() + timeout;
    loop {
        if let Some(s) = daemon.child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < end, "the daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_engines_serve_two_clients_each_on_its_own_engine() {
    let (_d, root) = root("eng-two");
    let sink = Sink::start("127.0.0.1:0".parse().unwrap(), None, Fault::None).unwrap();
    let daemon = start(&unique_name("eng-two"), &root, 2, &dest("s", &sink));
    assert!(
        daemon.banner.contains("2 engine(s) (--engines 2)"),
        "{}",
        daemon.banner
    );
    let mut clients = [daemon.attach(), daemon.attach()];
    let mut ids = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let h = c.open_wait(&format!("own-{i}"), true).unwrap();
        let w = c.append(h, format!("client {i}").as_bytes()).unwrap();
        c.wait_completed(w).unwrap();
        let d = c.dest_wait("s").unwrap();
        let u = c.send(d, format!("from {i}").as_bytes()).unwrap();
        let id = c.wait_accepted(u).unwrap();
        assert!(c.wait_completed(u).unwrap() >= 1);
        ids.push(id);
    }
    // The first client went to engine 0, the second to engine 1: their
    // sends carry it, the daemon says it, and each engine's WAL holds its
    // client's writes only.
    assert_eq!(
        ids.iter().map(|&i| engine_of(i)).collect::<Vec<_>>(),
        vec![0, 1],
        "{ids:?}"
    );
    for id in &ids {
        assert!(sink.with(|r| r.ids.contains_key(id)), "{id} delivered");
    }
    for (i, c) in clients.iter().enumerate() {
        let line = format!("client attached client={} engine={i}", c.id);
        assert!(
            daemon.wait_log(&line, Duration::from_secs(5)),
            "{line}:\n{}",
            daemon.stderr.lock().unwrap()
        );
    }
    let wal = root.join(".sidecar-wal");
    assert_eq!(journaled_files(&wal), HashSet::from(["own-0".to_string()]));
    assert_eq!(
        journaled_files(&wal.join("engine-1")),
        HashSet::from(["own-1".to_string()])
    );
    // A file open on engine 0 is refused to engine 1's client, and
    // becomes its once engine 0 has closed it and journaled that (C1).
    let [a, b] = &mut clients;
    let ha = a.open_wait("shared", true).unwrap();
    let w = a.write_at(ha, 0, b"first ").unwrap();
    a.wait_completed(w).unwrap();
    assert_eq!(
        status_of(b.open_wait("shared", false)),
        Some(status::FILE_BUSY)
    );
    let cl = a.close(ha).unwrap();
    a.wait_completed(cl).unwrap();
    let mut hb = None;
    wait_for("engine 1 to get the file", Duration::from_secs(5), || {
        hb = b.open_wait("shared", false).ok();
        hb.is_some()
    });
    let hb = hb.unwrap();
    let w = b.write_at(hb, 6, b"second").unwrap();
    b.wait_completed(w).unwrap();
    assert_eq!(b.read_wait(hb, 0, 64).unwrap(), b"first second");
    assert_eq!(
        status_of(a.open_wait("shared", false)),
        Some(status::FILE_BUSY)
    );
}

/// Spawns `sidecar load --send audit`; its stdout lines go to a list.
fn load(name: &str, file: &str, tag: u32) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(common::example_bin("sidecar"))
        .args(["load", "--name", name, "--file", file, "--send", "audit"])
        .args(["--tag", &tag.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sidecar load");
    let err = child.stderr.take().expect("stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().expect("stdout");
    for (pipe, l) in [
        (
            Box::new(out) as Box<dyn std::io::Read + Send>,
            lines.clone(),
        ),
        (Box::new(err), lines.clone()),
    ] {
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
    }
    (child, lines)
}

/// The `(record, number)` pairs of lines starting `what `.
fn printed(lines: &Mutex<Vec<String>>, what: &str) -> Vec<(u64, u64)> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| {
            let mut f = l.strip_prefix(what)?.strip_prefix(' ')?.split(' ');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// `kill -9` of a two-engine daemon under two client processes (one per
/// engine) appending and sending, at random points, 5 rounds
/// (`SIDECAR_SOAK` for more): every accepted write is on disk exactly
/// once, every accepted send reached the destination (over TLS), no
/// operation id was given twice, and both engines' ids are among them.
#[test]
fn daemon_with_two_engines_killed_under_load_keeps_every_accepted_operation() {
    let rounds: u32 = std::env::var("SIDECAR_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (_d, root) = root("eng-kill");
    let name = unique_name("eng-kill");
    let id = sink::Identity::generate().unwrap();
    let sink = Sink::start(
        "127.0.0.1:0".parse().unwrap(),
        Some(id.server_config().unwrap()),
        Fault::None,
    )
    .unwrap();
    let ca = id.write_ca(root.parent().unwrap()).unwrap();
    let args = vec![
        "--dest".to_string(),
        format!("audit={},tls,ca={}", sink.addr, ca.display()),
        "--wal-segment-bytes".to_string(),
        "16384".to_string(),
    ];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut x = seed;
    let mut writes: Vec<(u32, u64)> = Vec::new();
    let mut sends: Vec<u64> = Vec::new();
    for round in 0..rounds {
        let mut daemon = start(&name, &root, 2, &args);
        let loads: Vec<_> = (1..=2)
            .map(|k| {
                let tag = round * 10 + k;
                (tag, load(&name, &format!("log-{tag}"), tag))
            })
            .collect();
        for (_, (_, lines)) in &loads {
            let end = Instant::now() + Duration::from_secs(30);
            while printed(lines, "sent").len() <= 10 {
                assert!(
                    Instant::now() < end,
                    "round {round}: a load client did not start: {:?}\n{}",
                    lines.lock().unwrap().iter().take(5).collect::<Vec<_>>(),
                    daemon.stderr.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = 20 + x % 300;
        std::thread::sleep(Duration::from_millis(delay));
        daemon.kill9();
        for (tag, (mut child, lines)) in loads {
            let end = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            writes.extend(
                printed(&lines, "accepted")
                    .into_iter()
                    .map(|(i, _)| (tag, i)),
            );
            sends.extend(printed(&lines, "sent").into_iter().map(|(_, id)| id));
        }
        eprintln!(
            "round {round}: killed after {delay} ms (seed {seed}), {} writes and {} sends accepted so far",
            writes.len(),
            sends.len()
        );
    }
    // A last start replays both engines' logs and delivers what is left.
    let _daemon = start(&name, &root, 2, &args);
    let tags = (0..rounds).flat_map(|r| [r * 10 + 1, r * 10 + 2]);
    check_writes(&root, tags, &writes, seed);
    let want: HashSet<u64> = sends.iter().copied().collect();
    assert_eq!(
        want.len(),
        sends.len(),
        "an operation id given twice (seed {seed})"
    );
    let engines: HashSet<u64> = want.iter().map(|&i| engine_of(i)).collect();
    assert_eq!(engines, HashSet::from([0, 1]), "both engines sent");
    let all = sink.wait(Duration::from_secs(20), |r| {
        want.iter().all(|op| r.ids.contains_key(op))
    });
    let missing = sink.with(|r| want.iter().filter(|op| !r.ids.contains_key(op)).count());
    assert!(all, "{missing} accepted sends never arrived (seed {seed})");
    assert!(!writes.is_empty());
}

/// Every record in the files `log-TAG` appears once, and every one of
/// `writes` is among them.
fn check_writes(root: &Path, tags: impl Iterator<Item = u32>, writes: &[(u32, u64)], seed: u64) {
    let mut seen = HashSet::new();
    for tag in tags {
        let bytes = std::fs::read(root.join(format!("log-{tag}"))).unwrap_or_default();
        for r in records::parse(&bytes).expect("only whole records") {
            assert!(seen.insert(r), "record {r:?} twice (seed {seed})");
        }
    }
    for w in writes {
        assert!(seen.contains(w), "accepted record {w:?} lost (seed {seed})");
    }
}

#[test]
fn fewer_engines_are_refused_while_a_dropped_engine_holds_sends() {
    let (_d, root) = root("eng-refuse");
    let name = unique_name("eng-refuse");
    // A destination that takes frames but never acknowledges: the send
    // stays accepted, not completed.
    let mute = Sink::start("127.0.0.1:0".parse().unwrap(), None, Fault::Silent).unwrap();
    let mut daemon = start(&name, &root, 2, &dest("d", &mute));
    let (_first, mut second) = (daemon.attach(), daemon.attach());
    let d = second.dest_wait("d").unwrap();
    let u = second.send(d, b"pending").unwrap();
    let id = second.wait_accepted(u).unwrap();
    assert_eq!(engine_of(id), 1, "the second client is engine 1's");
    daemon.kill9();
    let out = Command::new(common::example_bin("sidecar"))
        .args(["serve", "--name", &name, "--root"])
        .arg(&root)
        .args(["--engines", "1"])
        .args(dest("d", &mute))
        .envs(PLAN.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("engine-1") && err.contains("--engines 2"),
        "the refusal names the directory and the count that finishes it: {err}"
    );
    // With engine 1 back, the send is delivered, under its id.
    let sink = Sink::start("127.0.0.1:0".parse().unwrap(), None, Fault::None).unwrap();
    let mut daemon = start(&name, &root, 2, &dest("d", &sink));
    assert!(sink.wait(Duration::from_secs(10), |r| r.ids.contains_key(&id)));
    // Then nothing is left for engine 1: a clean stop, and one engine
    // starts.
    assert!(terminate(&mut daemon, Duration::from_secs(20)).success());
    let one = start(&name, &root, 1, &dest("d", &sink));
    assert!(one.banner.contains("1 engine(s)"), "{}", one.banner);
}

#[test]
fn after_a_clean_stop_fewer_engines_start_with_the_data_intact() {
    let (_d, root) = root("eng-clean");
    let name = unique_name("eng-clean");
    let sink = Sink::start("127.0.0.1:0".parse().unwrap(), None, Fault::None).unwrap();
    let mut daemon = start(&name, &root, 2, &dest("s", &sink));
    let mut ids = Vec::new();
    for (i, mut c) in [daemon.attach(), daemon.attach()].into_iter().enumerate() {
        let h = c.open_wait(&format!("f{i}"), true).unwrap();
        for k in 0..50 {
            let w = c.append(h, format!("{i}:{k};").as_bytes()).unwrap();
            c.dismiss(w);
        }
        let s = c.fdatasync(h).unwrap();
        c.wait_completed(s).unwrap();
        let d = c.dest_wait("s").unwrap();
        let u = c.send(d, b"x").unwrap();
        ids.push(c.wait_accepted(u).unwrap());
        c.wait_completed(u).unwrap();
    }
    assert!(terminate(&mut daemon, Duration::from_secs(20)).success());
    assert!(
        daemon.wait_log("every engine's WAL settled", Duration::from_secs(5)),
        "{}",
        daemon.stderr.lock().unwrap()
    );
    let want = |i: usize| -> Vec<u8> {
        (0..50)
            .flat_map(|k| format!("{i}:{k};").into_bytes())
            .collect()
    };
    // One engine: engine 1's directory holds nothing left and is kept.
    let mut one = start(&name, &root, 1, &dest("s", &sink));
    assert!(
        one.banner
            .contains("WAL of engine(s) 1 not running: nothing left in it, kept"),
        "{}",
        one.banner
    );
    let mut c = one.attach();
    for i in 0..2 {
        let h = c.open_wait(&format!("f{i}"), false).unwrap();
        assert_eq!(c.read_wait(h, 0, 4096).unwrap(), want(i), "f{i}");
    }
    // Engine 0 now writes the file engine 1 wrote.
    let h = c.open_wait("f1", false).unwrap();
    let w = c.append(h, b"more").unwrap();
    c.wait_completed(w).unwrap();
    drop(c);
    assert!(terminate(&mut one, Duration::from_secs(20)).success());
    // Two engines again: engine 1 goes on from its own LSNs, so its ids
    // are new, and the files are as left.
    let two = start(&name, &root, 2, &dest("s", &sink));
    let (_a, mut b) = (two.attach(), two.attach());
    let d = b.dest_wait("s").unwrap();
    let u = b.send(d, b"y").unwrap();
    let again = b.wait_accepted(u).unwrap();
    assert_eq!(engine_of(again), 1);
    assert!(
        again > ids[1],
        "engine 1's ids never repeat: {again} after {}",
        ids[1]
    );
    let h = b.open_wait("f1", false).unwrap();
    let mut f1 = want(1);
    f1.extend_from_slice(b"more");
    assert_eq!(b.read_wait(h, 0, 4096).unwrap(), f1);
}

#[test]
fn engine_counts_outside_the_plan_are_refused_with_the_reason() {
    let (_d, root) = root("eng-count");
    for (n, why) in [("0", "at least one engine"), ("3", "at most 2 engine(s)")] {
        let out = Command::new(common::example_bin("sidecar"))
            .args(["serve", "--name", &unique_name("eng-count"), "--root"])
            .arg(&root)
            .args(["--engines", n])
            .envs(PLAN.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "--engines {n}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("--engines {n}")) && err.contains(why),
            "{err}"
        );
    }
}
