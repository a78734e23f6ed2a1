//! `cache`: an ElCache-compatible blob cache (issue 13), built only on the
//! crate's public API. ElCache's command line and `-c` JSON file
//! (`config.rs`).
//!
//! ```text
//! cargo run --release --example cache                      # ElCache's defaults: port 8080, 1 GiB
//! cargo run --example cache -- -p 0 --bind 127.0.0.1 -m 64
//! cargo run --example cache -- -c /etc/elcache/elcache.json
//! ```

mod config;
#[path = "../common/logging.rs"]
mod logging;
#[cfg(test)]
#[path = "../common/test_dir.rs"]
mod test_dir;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    logging::init("cache");
    let cli = config::Cli::parse();
    let cfg = match cli.resolve() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("cache: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("cache: configuration {cfg:?}; the server is not built yet");
    ExitCode::FAILURE
}
