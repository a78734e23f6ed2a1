//! `broker`: a thread-per-core commit-log broker, wire-compatible with
//! RingLog (issue 6), built only on the crate's public API.
//!
//! The command line, the wire protocol, the commit log with crash recovery,
//! the blocking clients and bench, and the server on the crate's workers
//! (`server/`: connection workers plus the log owners: the default log's on
//! worker 0, each named log's on the worker its name hashes to).
//!
//! ```text
//! cargo run --example broker -- server [--dir D] [--fsync always|interval:MS|never]
//! cargo run --example broker -- producer [--log NAME]   # stdin lines -> acks
//! cargo run --example broker -- consumer [OFFSET] [--log NAME]  # prints records, tails
//! cargo run --example broker -- bench --connections 4 --depth 64 --size 100 [--logs N]
//! cargo run --example broker                        # self-contained demo
//! ```
//!
//! Named logs are our extension (handshake bytes 0x03 / 0x04 and a name,
//! see `protocol`); 0x01 / 0x02 stay exactly RingLog's.

mod client;
mod commit;
mod config;
mod floor;
#[path = "../common/logging.rs"]
mod logging;
#[path = "../common/mesh.rs"]
mod mesh;
// Parts of the log API (segment listing, sizes) serve only its unit tests.
#[allow(dead_code, unused_imports)]
mod log;
mod protocol;
mod server;
mod stats;
#[path = "../common/sync_policy.rs"]
mod sync_policy;
#[cfg(test)]
#[path = "../common/test_dir.rs"]
mod test_dir;

use config::{Config, Mode};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why the program stopped.
#[derive(Debug, Error)]
enum MainError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: io::Error,
    },
    #[error("demo server did not start listening on {0} within 10 s")]
    DemoServerTimeout(String),
    #[error("demo server stopped: {0}")]
    DemoServerStopped(String),
}

fn main() -> ExitCode {
    logging::init("broker");
    // clap prints the help (exit 0) or the usage error (exit 2).
    let cfg = config::parse(std::env::args_os().skip(1)).unwrap_or_else(|e| e.exit());
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: Config) -> Result<(), MainError> {
    match cfg.mode {
        Mode::Server => serve(&cfg),
        Mode::Producer => {
            let log = cfg.log.as_ref();
            let acks = client::produce(&cfg.addr, log, io::stdin().lock(), io::stdout())?;
            eprintln!("broker: {acks} records acknowledged");
            Ok(())
        }
        Mode::Consumer { offset } => {
            client::consume(
                &cfg.addr,
                cfg.log.as_ref(),
                offset,
                None,
                io::stdout().lock(),
            )?;
            eprintln!("broker: server closed the connection");
            Ok(())
        }
        Mode::Bench => {
            let report = client::bench(&cfg.addr, cfg.log.as_ref(), &cfg.bench)?;
            println!("{report}");
            Ok(())
        }
        Mode::Floor => floor::serve(&cfg.addr, cfg.max_record).map_err(|source| MainError::Io {
            context: "floor server",
            source,
        }),
        Mode::Demo => demo(cfg),
    }
}

/// Runs the broker on `cfg.addr` with its data under `cfg.dir` until the
/// process ends; returns an error if it cannot start. The `server` mode
/// calls this directly; the demo calls it on a background thread and
/// connects once the address accepts connections.
fn serve(cfg: &Config) -> Result<(), MainError> {
    Ok(server::serve(cfg)?)
}

/// A broker on a free local port with a fresh data directory, a producer
/// sending a few records and a consumer reading them back, in one process.
fn demo(mut cfg: Config) -> Result<(), MainError> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|source| MainError::Io {
            context: "find a free port",
            source,
        })?
        .port();
    cfg.addr = format!("127.0.0.1:{port}");
    cfg.dir = std::env::temp_dir().join(format!("broker-demo-{}", std::process::id()));
    cfg.mode = Mode::Server;
    let dir: PathBuf = cfg.dir.clone();
    println!(
        "demo: broker on {} with data in {}",
        cfg.addr,
        dir.display()
    );

    let server_cfg = cfg.clone();
    let server = thread::spawn(move || serve(&server_cfg).map_err(|e| e.to_string()));
    let started = Instant::now();
    while TcpStream::connect(&cfg.addr).is_err() {
        if server.is_finished() {
            let reason = match server.join() {
                Ok(Err(reason)) => reason,
                Ok(Ok(())) => "returned before listening".to_owned(),
                Err(_) => "panicked".to_owned(),
            };
            let _ = std::fs::remove_dir_all(&dir);
            return Err(MainError::DemoServerStopped(reason));
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(MainError::DemoServerTimeout(cfg.addr));
        }
        thread::sleep(Duration::from_millis(20));
    }

    let lines: String = (1..=5).map(|i| format!("demo message {i}\n")).collect();
    println!("demo: producing 5 records");
    client::produce(&cfg.addr, None, lines.as_bytes(), io::stdout())?;
    println!("demo: consuming from offset 0");
    client::consume(&cfg.addr, None, 0, Some(5), io::stdout().lock())?;
    println!("demo: done (the server stops with the process)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
