//! `sidecar` (issue 14, first slice): an Elgate-style I/O offload daemon.
//! Applications attach over a unix socket, get a shared-memory region
//! (memfd) with a request ring, a completion ring and a data area, and
//! hand their file I/O to the daemon, which journals every write in its
//! WAL (accepted), then writes and syncs it through the crate's storage
//! I/O worker (completed), and replays what was accepted but not completed
//! when it restarts.
//!
//! `sidecar serve --name NAME --root DIR [--wal DIR]` runs the daemon;
//! `sidecar` or `sidecar demo` runs daemon and clients in one process.
//! Layout and protocol: `layout.rs`; code map and invariants:
//! ARCHITECTURE.md.

mod bench;
mod client;
mod config;
mod daemon;
mod delivery;
mod demo;
mod dest;
mod layout;
mod load;
#[path = "../common/logging.rs"]
mod logging;
mod proto;
mod records;
mod resolve;
mod ring;
mod shm;
mod sink;
mod wal;

use clap::Parser;
use config::{Cli, Command};

fn main() {
    logging::init("sidecar");
    let cli = Cli::parse();
    let r: Result<(), Box<dyn std::error::Error>> = match cli.command.unwrap_or(Command::Demo) {
        Command::Serve {
            name,
            root,
            wal,
            wal_segment_bytes,
            dests,
            send_attempts,
            send_timeout_ms,
            pool,
            engines,
        } => serve(daemon::DaemonConfig {
            name,
            root,
            wal,
            wal_segment_bytes,
            dests,
            policy: daemon::SendPolicy {
                attempts: send_attempts.max(1),
                timeout: std::time::Duration::from_millis(send_timeout_ms),
                pool: pool.max(1),
            },
            engines,
        }),
        Command::Sink {
            listen,
            tls_dir,
            fault,
        } => run_sink(listen, tls_dir, fault),
        Command::Demo => demo::run(),
        Command::Bench(a) => bench::run(a),
        Command::Load {
            name,
            file,
            tag,
            count,
            batch,
            send,
        } => load::run(&load::Load {
            name: &name,
            file: &file,
            tag,
            count,
            batch,
            send: send.as_deref(),
        })
        .map_err(Into::into),
    };
    if let Err(e) = r {
        eprintln!("sidecar: {e}");
        std::process::exit(1);
    }
}

fn run_sink(
    listen: std::net::SocketAddr,
    tls_dir: Option<std::path::PathBuf>,
    fault: sink::Fault,
) -> Result<(), Box<dyn std::error::Error>> {
    let tls = match &tls_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let id = sink::Identity::generate()?;
            let ca = id.write_ca(dir)?;
            eprintln!("sink: CA certificate in {}", ca.display());
            Some(id.server_config()?)
        }
        None => None,
    };
    let s = sink::Sink::start(listen, tls, fault)?;
    println!("sink listening on {}", s.addr);
    use std::io::Write;
    let mut out = std::io::stdout();
    out.flush()?;
    let mut printed = 0usize;
    loop {
        let new: Vec<u64> = s.with(|r| r.order.get(printed..).unwrap_or_default().to_vec());
        printed += new.len();
        for id in new {
            writeln!(out, "received {id}")?;
        }
        out.flush()?;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Runs the daemon until SIGTERM or SIGINT, then stops it cleanly. The
/// signals are blocked before any thread starts (every thread inherits
/// the mask) and taken here with `sigwait`.
fn serve(cfg: daemon::DaemonConfig) -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: a zeroed sigset_t is valid storage for sigemptyset, which
    // initialises it; the set lives on this stack for every call below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t (above); the signal numbers are
    // valid; pthread_sigmask only reads `set`.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    let mut daemon = daemon::Daemon::start(&cfg)?;
    println!("{}", daemon.banner);
    use std::io::Write;
    std::io::stdout().flush()?;
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is writable; sigwait blocks
    // until one of the blocked signals is pending.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    let settled = daemon.stop();
    eprintln!(
        "sidecar {}: stopped on signal {sig}{}",
        cfg.name,
        if settled {
            ", every engine's WAL settled"
        } else {
            ", with work outstanding for the next start"
        }
    );
    Ok(())
}
