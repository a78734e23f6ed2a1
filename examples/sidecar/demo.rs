//! `sidecar demo` (the default): a daemon and clients in one process,
//! every result checked; it exits non-zero on the first wrong one.

use crate::client::Client;
use crate::daemon::{Daemon, DaemonConfig, SendPolicy};
use crate::layout::{op, status};
use crate::proto;
use crate::records;
use crate::sink;
use std::time::Instant;

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("demo check failed: {what}"))
    }
}

pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let base = std::env::temp_dir().join(format!("sidecar-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    // A TLS destination with a certificate from a fresh rcgen CA.
    std::fs::create_dir_all(&base)?;
    let identity = sink::Identity::generate()?;
    let ca = identity.write_ca(&base)?;
    let audit = sink::Sink::start(
        "127.0.0.1:0".parse()?,
        Some(identity.server_config()?),
        sink::Fault::None,
    )?;
    let cfg = DaemonConfig {
        name: format!("demo-{}", std::process::id()),
        root: base.join("root"),
        wal: None,
        wal_segment_bytes: 64 << 20,
        dests: vec![format!("audit={},tls,ca={}", audit.addr, ca.display()).parse()?],
        policy: SendPolicy::standard(),
        engines: None,
    };
    let result = demo(&cfg, &audit, started);
    let _ = std::fs::remove_dir_all(&base);
    result
}

fn demo(
    cfg: &DaemonConfig,
    audit: &sink::Sink,
    started: Instant,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut daemon = Daemon::start(cfg)?;
    println!("{}", daemon.banner);

    // File operations, both acknowledgements.
    let mut c = Client::attach(&cfg.name)?;
    // The protocol has no mkdir: the directory is made here.
    std::fs::create_dir_all(cfg.root.join("notes"))?;
    let h = c.open_wait("notes/a.txt", true)?;
    let w = c.write_at(h, 0, b"hello ")?;
    let a = c.append(h, b"world")?;
    c.wait_accepted(w)?;
    let at = c.wait_accepted(a)?;
    c.wait_completed(w)?;
    c.wait_completed(a)?;
    check(at == 6, "the append landed after the write")?;
    let s = c.fdatasync(h)?;
    let f = c.fsync(h)?;
    c.wait_completed(s)?;
    c.wait_completed(f)?;
    let back = c.read_wait(h, 0, 64)?;
    check(back == b"hello world", "read back what was written")?;
    check(
        std::fs::read(cfg.root.join("notes/a.txt"))? == b"hello world",
        "the file on disk",
    )?;
    println!(
        "file ops: write, append (at {at}), fdatasync, read back {:?}",
        String::from_utf8_lossy(&back)
    );

    // Refusals, each with its own status.
    let esc = c.open("../outside", true)?;
    let abs = c.open("/etc/passwd", false)?;
    let bad_op = c.raw_request(proto::encode(77, 0, 1_000_001, 0, 0, 0, 0))?;
    let bad_range = c.raw_request(proto::encode(op::WRITE, 0, 1_000_002, h, 0, 1 << 40, 8))?;
    let bad_handle = c.write_at(999, 0, b"x")?;
    for (id, want) in [
        (esc, status::ESCAPE),
        (abs, status::ESCAPE),
        (bad_op, status::BAD_OPCODE),
        (bad_range, status::BAD_RANGE),
        (bad_handle, status::BAD_HANDLE),
    ] {
        let got = c.wait_completed(id).err().and_then(|e| e.status());
        check(
            got == Some(want),
            &format!("status {} for op {id}, got {got:?}", status::describe(want)),
        )?;
    }
    println!(
        "refused: ../ and absolute paths (escape), unknown opcode, out-of-range buffer, unknown handle"
    );
    let cl = c.close(h)?;
    c.wait_completed(cl)?;

    // Two clients appending durably at once: every record exactly once.
    const EACH: u64 = 2000;
    let t = Instant::now();
    let workers: Vec<_> = (1..=2u32)
        .map(|tag| {
            let name = cfg.name.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut c = Client::attach(&name).map_err(|e| e.to_string())?;
                let h = c.open_wait("log", true).map_err(|e| e.to_string())?;
                let mut ids = Vec::new();
                for i in 0..EACH {
                    ids.push(
                        c.append(h, &records::record(tag, i))
                            .map_err(|e| e.to_string())?,
                    );
                    if ids.len() == 64 || i + 1 == EACH {
                        for id in ids.drain(..) {
                            c.wait_completed(id).map_err(|e| e.to_string())?;
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "client thread panicked")??;
    }
    let took = t.elapsed();
    let recs = records::parse(&std::fs::read(cfg.root.join("log"))?)?;
    let mut seen = std::collections::HashSet::new();
    check(recs.iter().all(|r| seen.insert(*r)), "no record twice")?;
    check(recs.len() as u64 == 2 * EACH, "every record once")?;
    println!(
        "2 clients x {EACH} durable appends (completed = fdatasync'd, group commit): {:.0} ms, {:.0} appends/s",
        took.as_secs_f64() * 1e3,
        (2 * EACH) as f64 / took.as_secs_f64()
    );

    // A client cannot shrink its region under the daemon (M2): the memfd
    // is sealed at its size.
    let mut sly = Client::attach(&cfg.name)?;
    check(
        sly.shrink_region().is_err(),
        "a client's region is sealed against shrinking",
    )?;
    let h = sly.open_wait("log", false)?;
    check(
        sly.read_wait(h, 0, 64)?.len() == 64,
        "the daemon still serves a client that tried to shrink its region",
    )?;
    drop(sly);
    println!("a client's attempt to shrink its region was refused (sealed memfd)");

    // Volatile writes: no WAL record, completed once in the page cache,
    // still ordered with the journaled writes to the file.
    let mut v = Client::attach(&cfg.name)?;
    let h = v.open_wait("scratch", true)?;
    let j = v.write_at(h, 0, b"journaled")?;
    let w = v.write_volatile(h, 0, b"volatile!")?;
    v.wait_completed(j)?;
    v.wait_completed(w)?;
    check(
        v.read_wait(h, 0, 9)? == b"volatile!",
        "a volatile write after a journaled one overwrites it",
    )?;
    let t = Instant::now();
    let ops: Vec<u64> = (0..1000)
        .map(|_| v.append_volatile(h, &[0u8; 4096]))
        .collect::<Result<_, _>>()?;
    for u in ops {
        v.wait_completed(u)?;
    }
    println!(
        "1000 volatile 4 KiB appends (unjournaled, in the page cache) in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    drop(v);

    // Sends over TLS: accepted (journaled; the value is the operation id
    // the destination sees), then completed once acknowledged.
    const SENDS: u64 = 200;
    let mut s = Client::attach(&cfg.name)?;
    let d = s.dest_wait("audit")?;
    check(
        matches!(s.dest_wait("nowhere"), Err(e) if e.status() == Some(status::NO_DEST)),
        "an unknown destination is refused by name",
    )?;
    let t = Instant::now();
    let mut ids = Vec::new();
    let mut users = Vec::new();
    for i in 0..SENDS {
        users.push(s.send(d, format!("event {i}").as_bytes())?);
    }
    for u in users {
        ids.push(s.wait_accepted(u)?);
        s.wait_completed(u)?;
    }
    let took = t.elapsed();
    check(
        audit.wait(std::time::Duration::from_secs(1), |r| {
            ids.iter().all(|id| r.ids.contains_key(id))
        }),
        "every acknowledged send reached the destination",
    )?;
    println!(
        "{SENDS} TLS sends to {} acknowledged in {:.1} ms ({:.0} sends/s)",
        audit.addr,
        took.as_secs_f64() * 1e3,
        SENDS as f64 / took.as_secs_f64()
    );
    drop(s);

    // A client whose ring sequence runs ahead is detached; others carry on.
    let mut bad = Client::attach(&cfg.name)?;
    bad.raw_unpublished(proto::encode(op::WRITE, 0, 5, 1, 0, 0, 8));
    bad.raw_publish(40);
    check(
        bad.wait_detached(std::time::Duration::from_secs(5)),
        "a broken sequence detaches its client",
    )?;
    let mut good = Client::attach(&cfg.name)?;
    let h = good.open_wait("log", false)?;
    check(
        good.read_wait(h, 0, 64)? == records::record(1, 0)
            || good.read_wait(h, 0, 64)? == records::record(2, 0),
        "another client keeps working",
    )?;
    println!("a client breaking the ring protocol was detached; another kept working");
    drop(good);

    // Restart on the same root: nothing to replay, the data is there.
    drop(c);
    daemon.stop();
    drop(daemon);
    let daemon = Daemon::start(cfg)?;
    check(
        daemon.banner.contains("replayed 0 write"),
        "a clean stop leaves nothing to replay",
    )?;
    let mut c = Client::attach(&cfg.name)?;
    let h = c.open_wait("notes/a.txt", false)?;
    check(c.read_wait(h, 6, 5)? == b"world", "data survives a restart")?;
    println!("restarted: replayed nothing, data intact");
    println!("demo ok in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}
