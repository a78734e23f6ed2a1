//! `store`: a sharded page-based key-value store (issue 12), built only on
//! the crate's public API. This step is the on-disk engine of one shard:
//! checksummed fixed-size pages (`page.rs`), a copy-on-write B+tree with
//! overflow chains and a free-page list (`btree/`), over a page I/O trait
//! with a positioned-I/O file implementation (`pagestore.rs`), two
//! alternating manifest slots (`manifest.rs`), table-prefixed keys
//! (`table.rs`), the write-ahead log with group commit (`wal/`), and the
//! shard that ties them together (`shard.rs`: writes through the WAL,
//! checkpoints, replay on open). The Redis protocol and command layer is
//! built (`resp/`) but not served yet; shards on workers, the server and
//! io_uring reads come next.
//!
//! ```text
//! cargo run --example store                     # the demo, in a temp dir
//! cargo run --example store -- --dir D --keys N --page-size 8192
//! ```

mod btree;
mod demo;
mod error;
#[path = "../common/logging.rs"]
mod logging;
mod manifest;
mod page;
mod pagestore;
// The server (the next step) uses it; until then only its tests do.
#[allow(dead_code)]
mod resp;
mod shard;
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
}

fn parse_page_size(s: &str) -> Result<u64, String> {
    let n: u64 = s.parse().map_err(|e| format!("{e}"))?;
    page::PageSize::new(n).map(|_| n).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    logging::init("store");
    let cli = Cli::parse();
    match demo::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store: {e}");
            ExitCode::FAILURE
        }
    }
}
