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

mod client;
mod config;
mod daemon;
mod demo;
mod layout;
mod load;
#[path = "../common/logging.rs"]
mod logging;
mod proto;
mod records;
mod resolve;
mod ring;
mod shm;
mod wal;

use clap::Parser;
use config::{Cli, Command};

fn main() {
    logging::init("sidecar");
    let cli = Cli::parse();
    let r: Result<(), Box<dyn std::error::Error>> = match cli.command.unwrap_or(Command::Demo) {
        Command::Serve { name, root, wal } => serve(daemon::DaemonConfig { name, root, wal }),
        Command::Demo => demo::run(),
        Command::Load {
            name,
            file,
            tag,
            count,
            batch,
        } => load::run(&name, &file, tag, count, batch).map_err(Into::into),
    };
    if let Err(e) = r {
        eprintln!("sidecar: {e}");
        std::process::exit(1);
    }
}

fn serve(cfg: daemon::DaemonConfig) -> Result<(), Box<dyn std::error::Error>> {
    let _daemon = daemon::Daemon::start(&cfg)?;
    println!("{}", _daemon.banner);
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
