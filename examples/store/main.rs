//! `store`: a sharded page-based key-value store (issue 12), built only on
//! the crate's public API, served over the Redis protocol. One shard's
//! engine: checksummed fixed-size pages (`page.rs`), a copy-on-write
//! B+tree with overflow chains and a free-page list (`btree/`), over a
//! page I/O trait with a positioned-I/O file implementation
//! (`pagestore.rs`), two alternating manifest slots (`manifest.rs`),
//! table-prefixed keys (`table.rs`), the write-ahead log with group commit
//! (`wal/`), and the shard that ties them together (`shard.rs`: writes
//! through the WAL, checkpoints, replay on open). The Redis protocol and
//! command layer (`resp/`), and the server (`serve/`: one shard per
//! worker, keys hash-routed, commands for other shards sent as messages,
//! replies in command order, a group commit per worker round). io_uring
//! reads and the WAL on the storage I/O worker come next.
//!
//! ```text
//! cargo run --example store                     # the demo, in a temp dir
//! cargo run --example store -- --dir D --keys N --page-size 8192
//! cargo run --release --example store -- serve --dir D --addr 127.0.0.1:6379 [--shards N] [--sync always|interval:MS|never]
//! cargo run --release --example store -- bench [--smoke] [--keys N --rounds R --writers W --shards S]
//! ```

mod bench;
mod btree;
mod demo;
// The embedded API is wider than the bench and demo use (its unit tests
// cover the rest).
#[cfg_attr(not(test), allow(dead_code))]
mod embedded;
mod error;
#[path = "../common/logging.rs"]
mod logging;
mod manifest;
#[path = "../common/mesh.rs"]
mod mesh;
mod page;
mod pagestore;
mod resp;
mod serve;
mod shard;
#[path = "../common/sync_policy.rs"]
mod sync_policy;
mod table;
#[cfg(test)]
#[path = "../common/test_dir.rs"]
mod test_dir;
mod wal;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "store",
    about = "A page-based key-value store engine. With no arguments it runs a \
             self-contained demo in a temporary directory: puts across two tables \
             (with MiB-sized values) acknowledged through WAL group commits, a \
             checkpoint, deletes, a range scan, a crash (no checkpoint) and a reopen \
             that replays the WAL, and a byte-for-byte check of everything."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory for the data file (kept afterwards); default: a temporary
    /// directory, removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Small keys to put, split across the two tables.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    keys: u32,
    /// Page size in bytes: a power of two from 4096 to 65536.
    #[arg(long, default_value_t = 4096, value_parser = parse_page_size)]
    page_size: u64,
    /// The shard's page cache in MiB (0: none, every read goes to the file).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=1 << 20))]
    cache_mb: u64,
}

/// The subcommands; none runs the demo.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serves the store over the Redis protocol (RESP2).
    Serve(ServeArgs),
    /// Benchmarks the embedded API against redb and fjall.
    Bench(bench::BenchArgs),
}

/// `store serve`'s options.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The data directory (`shard-N.data` and `shard-N.wal/` per shard),
    /// created if absent.
    #[arg(long)]
    dir: PathBuf,
    /// Shards, one per worker; must match the directory's (its manifests
    /// record it). Default: the directory's, or for a new one, one per
    /// planned application worker.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: Option<u32>,
    /// The address to listen on (port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:6379")]
    addr: String,
    /// `always`: acknowledge writes after the shard's group commit;
    /// `interval:MS`: after apply, the WAL synced at most MS later;
    /// `never`: after apply (the WAL is synced every 200 ms).
    #[arg(long, default_value = "always", value_parser = sync_policy::parse)]
    sync: serve::SyncMode,
    /// Where each shard's WAL group commits run: `shard` (its own thread:
    /// write, fdatasync) or `storage` (a storage I/O worker, while the
    /// shard goes on applying commands).
    #[arg(long, value_enum, default_value_t = serve::WalIoMode::Shard)]
    wal_io: serve::WalIoMode,
    /// Longest bulk string a client may send, in bytes (capped so a
    /// stored value fits the tree's largest value).
    #[arg(long, default_value_t = 512 << 20)]
    max_bulk: usize,
    /// Page size in bytes: a power of two from 4096 to 65536; must match
    /// the directory's.
    #[arg(long, default_value_t = 4096, value_parser = parse_page_size)]
    page_size: u64,
    /// Checkpoint a shard after this many writes...
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_writes: u64,
    /// ...or this many seconds after its first write since the last one...
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_secs: u64,
    /// ...or once no write came for this many milliseconds (0: never for
    /// that reason). Reads of nodes written since the last checkpoint
    /// are slower than reads of their pages.
    #[arg(long, default_value_t = 100)]
    checkpoint_quiet_ms: u64,
    /// Page cache of the whole process in MiB, split evenly over the shards
    /// (0: none, every read goes to the files).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=1 << 20))]
    cache_mb: u64,
}

impl ServeArgs {
    fn config(&self) -> Result<serve::ServeConfig, page::PageSizeError> {
        Ok(serve::ServeConfig {
            dir: self.dir.clone(),
            shards: self.shards.map(|n| n as usize),
            addr: self.addr.clone(),
            sync: self.sync,
            wal_io: self.wal_io,
            max_bulk: self.max_bulk.min(serve::MAX_STRING),
            page_size: page::PageSize::new(self.page_size)?,
            checkpoint: serve::CheckpointPolicy {
                writes: self.checkpoint_writes,
                every: std::time::Duration::from_secs(self.checkpoint_secs),
                quiet: (self.checkpoint_quiet_ms > 0)
                    .then(|| std::time::Duration::from_millis(self.checkpoint_quiet_ms)),
            },
            cache_bytes: usize::try_from(self.cache_mb << 20).unwrap_or(usize::MAX),
        })
    }
}

/// Why `store` stopped.
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Demo(#[from] demo::DemoError),
    #[error("--page-size: {0}")]
    PageSize(#[from] page::PageSizeError),
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    #[error("bench: {0}")]
    Bench(#[from] bench::BenchError),
}

fn parse_page_size(s: &str) -> Result<u64, String> {
    let n: u64 = s.parse().map_err(|e| format!("{e}"))?;
    page::PageSize::new(n).map(|_| n).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    logging::init("store");
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Serve(args)) => args
            .config()
            .map_err(MainError::from)
            .and_then(|cfg| Ok(serve::serve(&cfg)?)),
        Some(Command::Bench(args)) => bench::run(args).map_err(MainError::from),
        None => demo::run(&cli).map_err(MainError::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store: {e}");
            ExitCode::FAILURE
        }
    }
}
