//! `sidecar bench`: the daemon against its issue's targets and peers, in
//! one run, each phase's rounds interleaved with its peer's (ours, peer,
//! ours, ...) and reported as the median round. The daemon, its TLS
//! destination (`sink.rs`) and the client run in this process (the client
//! speaks to the daemon only through the shared region and eventfds, as a
//! separate process would).
//!
//! Phases:
//! - **durable appends**: 4 KiB appends, `--window` in flight, each waited
//!   for COMPLETED (journaled, written, fdatasync'd: group commit), against
//!   this process's own `pwrite` + `fdatasync` per write, and `fio`
//!   (sequential 4 KiB writes, fdatasync after every write and after every
//!   `--window`) when it is installed;
//! - **TLS sends**: 1 KiB sends through the daemon's pool, `--window` in
//!   flight, each waited for its acknowledgement (journaled, and volatile:
//!   `op::VOLATILE`, no WAL record), against a direct rustls
//!   client sending the same frames to the same destination with the same
//!   window;
//! - **round trip**: one request at a time (a destination lookup, no I/O;
//!   a 4 KiB read from the page cache), p50/p99/p999 from an HdrHistogram,
//!   against a bare 64-byte echo over a unix socket pair between two
//!   threads (a floor for any request over a socket, which costs at least
//!   that);
//! - **page-cache ops**: 4 KiB reads from the page cache, 256 in flight,
//!   for throughput; then paced at half that rate, submit-to-completion
//!   latency. (The protocol has no unjournaled write, so the issue's
//!   "non-durable 4 KiB writes" are measured as reads: see the gaps.)
//!
//! `--smoke` runs each phase on a few hundred operations, checks the
//! answers, and reports no verdicts (for CI).

mod peers;

use crate::client::Client;
use crate::daemon::{Daemon, DaemonConfig, SendPolicy};
use crate::sink;
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `sidecar bench`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Interleaved rounds per phase.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// Operations in flight in the durable and send phases.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    window: u64,
    /// Seconds per round and side of each throughput phase.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Requests per round in the round-trip phase.
    #[arg(long, default_value_t = 20_000)]
    rtt_ops: u64,
    /// Where the daemon's root goes (a fresh subdirectory, removed after);
    /// default: the system temp directory. Durable figures are the disk's.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A few hundred operations per phase, answers checked, no verdicts.
    #[arg(long)]
    smoke: bool,
}

type Error = Box<dyn std::error::Error>;

/// One side's rounds.
#[derive(Default)]
struct Rates(Vec<f64>);

impl Rates {
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn pcts(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.1} us, p99 {:.1} us, p999 {:.1} us",
        us(h, 0.5),
        us(h, 0.99),
        us(h, 0.999)
    )
}

/// The daemon, its TLS destination and an attached client.
struct Rig {
    base: PathBuf,
    root: PathBuf,
    sink: sink::Sink,
    identity_ca: PathBuf,
    daemon: Option<Daemon>,
    client: Client,
}

impl Rig {
    fn start(dir: Option<PathBuf>) -> Result<Rig, Error> {
        let base = dir
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("sidecar-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base)?;
        let id = sink::Identity::generate()?;
        let identity_ca = id.write_ca(&base)?;
        let sink = sink::Sink::start(
            "127.0.0.1:0".parse()?,
            Some(id.server_config()?),
            sink::Fault::None,
        )?;
        let root = base.join("root");
        let cfg = DaemonConfig {
            name: format!("bench-{}", std::process::id()),
            root: root.clone(),
            wal: None,
            wal_segment_bytes: 64 << 20,
            dests: vec![format!("tls={},tls,ca={}", sink.addr, identity_ca.display()).parse()?],
            policy: SendPolicy::standard(),
            engines: None,
        };
        let daemon = Daemon::start(&cfg)?;
        println!("{}", daemon.banner);
        let client = Client::attach(&cfg.name)?;
        Ok(Rig {
            base,
            root,
            sink,
            identity_ca,
            daemon: Some(daemon),
            client,
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Runs `submit` with at most `window` operations in flight for `secs`
/// (or `cap` operations), waiting each one's completion with `wait`;
/// returns operations per second.
fn windowed(
    c: &mut Client,
    window: u64,
    secs: f64,
    cap: u64,
    mut submit: impl FnMut(&mut Client, u64) -> crate::client::Result<u64>,
    mut wait: impl FnMut(&mut Client, u64) -> crate::client::Result<()>,
) -> Result<f64, Error> {
    let t = Instant::now();
    let until = t + Duration::from_secs_f64(secs);
    let mut q = VecDeque::new();
    let mut n = 0u64;
    loop {
        let go = n < cap && Instant::now() < until;
        if go && (q.len() as u64) < window {
            q.push_back(submit(c, n)?);
            n += 1;
            continue;
        }
        match q.pop_front() {
            Some(u) => wait(c, u)?,
            None => break,
        }
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

pub fn run(a: BenchArgs) -> Result<(), Error> {
    let (rounds, secs, rtt_ops) = if a.smoke {
        (1, 0.2, 300)
    } else {
        (a.rounds, a.secs, a.rtt_ops)
    };
    let cap = if a.smoke { 300 } else { u64::MAX };
    let mut rig = Rig::start(a.dir.clone())?;
    println!(
        "sidecar bench: {rounds} round(s), window {}, {secs} s per side and round{}",
        a.window,
        if a.smoke {
            " (smoke: answers checked, no verdicts)"
        } else {
            ""
        }
    );
    durable(&mut rig, &a, rounds, secs, cap)?;
    sends(&mut rig, &a, rounds, secs, cap)?;
    round_trip(&mut rig, rounds, rtt_ops)?;
    page_cache(&mut rig, rounds, secs, cap)?;
    Ok(())
}

const RECORD: usize = 4096;

fn durable(rig: &mut Rig, a: &BenchArgs, rounds: u32, secs: f64, cap: u64) -> Result<(), Error> {
    let c = &mut rig.client;
    let h = c.open_wait("durable.log", true)?;
    let rec = vec![0x5au8; RECORD];
    let (mut ours, mut pwrite) = (Rates::default(), Rates::default());
    let peer_path = rig.base.join("pwrite.dat");
    for _ in 0..rounds {
        ours.0.push(windowed(
            c,
            a.window,
            secs,
            cap,
            |c, _| c.append(h, &rec),
            |c, u| c.wait_completed(u).map(|_| ()),
        )?);
        pwrite
            .0
            .push(peers::pwrite_fdatasync(&peer_path, RECORD, secs, cap)?);
    }
    // The file holds whole records, each where its append said.
    let len = std::fs::metadata(rig.root.join("durable.log"))?.len();
    if len % RECORD as u64 != 0 || len == 0 {
        return Err(format!("durable.log is {len} bytes, not whole records").into());
    }
    let written = len;
    let fio1 = peers::fio(&rig.base, RECORD, 1, secs)?;
    let fio_w = peers::fio(&rig.base, RECORD, a.window, secs)?;
    let mb = |ops: f64| ops * RECORD as f64 / 1e6;
    println!(
        "durable 4 KiB appends (completed = fdatasync'd): ours {:.0}/s ({:.1} MB/s), pwrite+fdatasync {:.0}/s: {:.2}x (target 2x); {} MB written",
        ours.median(),
        mb(ours.median()),
        pwrite.median(),
        ours.median() / pwrite.median().max(1e-9),
        written / 1_000_000
    );
    match (fio1, fio_w) {
        (Some(f1), Some(fw)) => println!(
            "  fio sequential 4 KiB: fdatasync every write {:.1} MB/s, every {} writes {:.1} MB/s: ours {:.2}x the latter (target 0.5x)",
            f1 / 1e6,
            a.window,
            fw / 1e6,
            mb(ours.median()) * 1e6 / fw.max(1e-9)
        ),
        _ => println!("  fio: not installed, not compared"),
    }
    Ok(())
}

const SEND: usize = 1024;

fn sends(rig: &mut Rig, a: &BenchArgs, rounds: u32, secs: f64, cap: u64) -> Result<(), Error> {
    let c = &mut rig.client;
    let d = c.dest_wait("tls")?;
    let payload = vec![0x33u8; SEND];
    let (mut ours, mut direct) = (Rates::default(), Rates::default());
    let mut volatile = Rates::default();
    let before = rig.sink.with(|r| r.frames);
    let mut ids = Vec::new();
    for _ in 0..rounds {
        ours.0.push(windowed(
            c,
            a.window,
            secs,
            cap,
            |c, _| c.send(d, &payload),
            |c, u| {
                ids.push(c.wait_accepted(u)?);
                c.wait_completed(u).map(|_| ())
            },
        )?);
        volatile.0.push(windowed(
            c,
            a.window,
            secs,
            cap,
            |c, _| c.send_volatile(d, &payload),
            |c, u| c.wait_completed(u).map(|_| ()),
        )?);
        direct.0.push(peers::direct_tls(
            rig.sink.addr,
            &rig.identity_ca,
            SEND,
            a.window,
            secs,
            cap,
        )?);
    }
    // Completed sends were acknowledged: the destination has every id.
    let missing = rig
        .sink
        .with(|r| ids.iter().filter(|i| !r.ids.contains_key(i)).count());
    if missing > 0 {
        return Err(format!("{missing} completed sends not at the destination").into());
    }
    let frames = rig.sink.with(|r| r.frames) - before;
    println!(
        "TLS sends of 1 KiB, completed = acknowledged: ours {:.0}/s, direct rustls client {:.0}/s: {:.2}x (target 0.8x); {frames} frames received",
        ours.median(),
        direct.median(),
        ours.median() / direct.median().max(1e-9)
    );
    println!(
        "  volatile (unjournaled) TLS sends, completed = acknowledged: {:.0}/s: {:.2}x the direct client",
        volatile.median(),
        volatile.median() / direct.median().max(1e-9)
    );
    Ok(())
}

fn round_trip(rig: &mut Rig, rounds: u32, ops: u64) -> Result<(), Error> {
    let c = &mut rig.client;
    let h = c.open_wait("durable.log", false)?;
    let (mut lookup, mut read, mut echo) = (hist(), hist(), hist());
    for _ in 0..rounds {
        for _ in 0..ops {
            let t = Instant::now();
            let u = c.dest("tls")?;
            c.wait_completed(u)?;
            lookup.record(t.elapsed().as_nanos() as u64)?;
        }
        for i in 0..ops {
            let t = Instant::now();
            let u = c.read(h, (i % 64) * RECORD as u64, RECORD)?;
            let b = c.read_result(u)?;
            read.record(t.elapsed().as_nanos() as u64)?;
            if b.len() != RECORD {
                return Err(format!("read {} bytes, not {RECORD}", b.len()).into());
            }
        }
        peers::unix_echo(ops, &mut echo)?;
    }
    println!("round trip, one at a time (shared memory, eventfd after a 50 us spin):");
    println!("  destination lookup (no I/O): {}", pcts(&lookup));
    println!("  4 KiB read from the page cache: {}", pcts(&read));
    println!(
        "  unix socket echo of 64 bytes between two threads (floor of a socket request): {}",
        pcts(&echo)
    );
    println!(
        "  lookup p50 {:.2}x lower than the echo's (target 5x)",
        us(&echo, 0.5) / us(&lookup, 0.5).max(1e-9)
    );
    Ok(())
}

fn page_cache(rig: &mut Rig, rounds: u32, secs: f64, cap: u64) -> Result<(), Error> {
    let c = &mut rig.client;
    let h = c.open_wait("durable.log", false)?;
    let mut rates = Rates::default();
    for _ in 0..rounds {
        rates.0.push(windowed(
            c,
            256,
            secs,
            cap,
            |c, i| c.read(h, (i % 64) * RECORD as u64, RECORD),
            |c, u| {
                let b = c.read_result(u)?;
                if b.len() == RECORD {
                    Ok(())
                } else {
                    Err(crate::client::ClientError::NoRoom(b.len()))
                }
            },
        )?);
    }
    let full = rates.median();
    // Volatile (unjournaled) 4 KiB appends: into the page cache, 256 in
    // flight.
    let v = c.open_wait("volatile.log", true)?;
    let rec = vec![0x77u8; RECORD];
    let mut vol = Rates::default();
    for _ in 0..rounds {
        vol.0.push(windowed(
            c,
            256,
            secs,
            cap,
            |c, _| c.append_volatile(v, &rec),
            |c, u| c.wait_completed(u).map(|_| ()),
        )?);
    }
    println!(
        "4 KiB volatile appends (unjournaled, completed = in the page cache), 256 in flight: {:.0} ops/s (target 1M/s)",
        vol.median()
    );
    // Half that rate, paced in batches of 16, each op timed from its
    // submission to its completion.
    let half = full / 2.0;
    let mut lat = hist();
    let t = Instant::now();
    let total = ((half * secs) as u64).clamp(16, cap);
    let mut i = 0u64;
    while i < total {
        let due = t + Duration::from_secs_f64(i as f64 / half);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let sent = Instant::now();
        let batch: Vec<u64> = (0..16)
            .map(|k| c.read(h, ((i + k) % 64) * RECORD as u64, RECORD))
            .collect::<crate::client::Result<_>>()?;
        c.submit();
        for u in batch {
            c.read_result(u)?;
            lat.record(sent.elapsed().as_nanos() as u64)?;
        }
        i += 16;
    }
    println!(
        "4 KiB page-cache reads, 256 in flight: {full:.0} ops/s; at half that, batches of 16: {}",
        pcts(&lat)
    );
    Ok(())
}
