//! The command line (clap's derive API, as the other examples).

use crate::dest::DestSpec;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
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
    /// Run the daemon (SIGTERM or SIGINT stops it, once its engines have
    /// settled what they accepted).
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
        /// Bytes past which the WAL starts a new segment (older ones go
        /// once everything they hold is completed).
        #[arg(long, default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
        wal_segment_bytes: u64,
        /// A destination clients may send to:
        /// NAME=HOST:PORT[,tls][,ca=FILE][,sni=HOST] (repeatable; `tls`
        /// without `ca=` trusts the system's CA bundle).
        #[arg(long = "dest")]
        dests: Vec<DestSpec>,
        /// Attempts per send before it fails with its last cause.
        #[arg(long, default_value_t = 8)]
        send_attempts: u32,
        /// Milliseconds from acceptance before a send fails.
        #[arg(long, default_value_t = 10_000)]
        send_timeout_ms: u64,
        /// Connections per destination (per engine).
        #[arg(long, default_value_t = 2)]
        pool: usize,
        /// Engines (each owns its clients, their files and its own WAL)
        /// [default: from the pool's plan: 1 when it has fewer than 4
        /// application workers, else one per application worker].
        #[arg(long)]
        engines: Option<usize>,
    },
    /// A destination for sends: acknowledges every frame, prints each new
    /// operation id as "received ID" (tests, trying the daemon out).
    Sink {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Serve TLS with a fresh rcgen CA and certificate; the CA goes
        /// to DIR/ca.pem (for --dest ...,tls,ca=DIR/ca.pem).
        #[arg(long)]
        tls_dir: Option<PathBuf>,
        /// Misbehave: none, silent (never acknowledge), reset-first:N
        /// (reset the first N connections part way through a frame).
        #[arg(long, default_value = "none")]
        fault: crate::sink::Fault,
    },
    /// Daemon and clients in one process, checking the results (the default).
    Demo,
    /// The load generator: the daemon against its targets and peers.
    Bench(crate::bench::BenchArgs),
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
        /// Send each record to this destination too, printing each
        /// accepted one as "sent ID OPERATION-ID".
        #[arg(long)]
        send: Option<String>,
    },
}
