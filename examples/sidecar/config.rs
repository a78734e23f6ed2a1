//! The command line (clap's derive API, as the other examples).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "sidecar",
    about = "An I/O offload daemon over shared memory, with a WAL (issue 14)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// The daemon's name: its socket is $XDG_RUNTIME_DIR/sidecar/NAME.sock.
        #[arg(long)]
        name: String,
        /// Clients' paths resolve beneath this directory (created if missing).
        #[arg(long)]
        root: PathBuf,
        /// The WAL's directory [default: ROOT/.sidecar-wal].
        #[arg(long)]
        wal: Option<PathBuf>,
    },
    /// Daemon and clients in one process, checking the results (the default).
    Demo,
    /// A client that appends fixed-size records and prints each accepted
    /// one as "accepted ID OFFSET" (for the crash tests).
    Load {
        #[arg(long)]
        name: String,
        /// The file to append to, beneath the daemon's root.
        #[arg(long)]
        file: String,
        /// This client's tag in its records (0-9999).
        #[arg(long, default_value_t = 1)]
        tag: u32,
        /// Records to append (0: until killed).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Records per batch (each batch waits for ACCEPTED).
        #[arg(long, default_value_t = 16)]
        batch: u64,
    },
}
