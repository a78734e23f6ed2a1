//! `cache`: an ElCache-compatible blob cache (issue 13), built only on the
//! crate's public API. ElCache's command line and `-c` JSON file
//! (`config.rs`); values in 4 MiB content-addressed chunks, stored once
//! per owner, over a byte-sized ARC memory tier (`engine/`, `arc.rs`);
//! keys hash-partitioned over the application workers, one engine each;
//! ElCache's HTTP API with RFC 9110 ranges (`http.rs`, `serve/`), sparse
//! values (`sparse.rs`, `/sparse/{key}`), and ElCache's unix-socket SDK
//! protocol on the same store (`sdk/`, `-u PATH`); a disk tier (`-d DIR`,
//! `-D GB`) through the storage I/O worker that survives restarts
//! (`disk.rs`, `serve/tier.rs`), and `/metrics` through the pool's
//! Prometheus registry (`metrics.rs`); and a cluster mode (`cluster/`,
//! `-s HOST:PORT` or `--cluster`): foca membership over UDP, keys on
//! `--replication` nodes by consistent hashing, forwarded between nodes
//! over TCP on `--cluster-port`.
//!
//! ```text
//! cargo run --release --example cache                      # ElCache's defaults: port 8080, 1 GiB
//! cargo run --example cache -- -p 0 --bind 127.0.0.1 -m 64 -u /tmp/elcache.sock
//! cargo run --example cache -- -c /etc/elcache/elcache.json
//! cargo run --example cache -- -p 8081 --cluster-port 7891 --cluster    # a cluster's first node
//! cargo run --example cache -- -p 8082 --cluster-port 7892 -s 127.0.0.1:7891
//! cargo run --example cache -- demo                        # serves itself a few requests, exits
//! ```

mod arc;
// The demo uses part of it, tests/cache.rs all of it.
#[allow(dead_code)]
mod client;
mod cluster;
mod config;
mod demo;
mod disk;
mod engine;
mod http;
#[path = "../common/logging.rs"]
mod logging;
mod metrics;
mod sdk;
mod serve;
mod sparse;
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
    let mut cfg = cfg;
    let demo = cli.command == Some(config::Mode::Demo);
    if demo {
        cfg.bind = "127.0.0.1".into();
        cfg.port = 0;
        cfg.memory_bytes = 64 << 20;
        cfg.disk_dir = None;
        cfg.unix = std::env::temp_dir().join(format!("cache-demo-{}.sock", std::process::id()));
    }
    match serve::start(&cfg) {
        Ok((addr, group)) => {
            if demo {
                std::thread::spawn(move || {
                    let unix = cfg.unix.clone();
                    let code = match demo::run(addr, &unix) {
                        Ok(()) => {
                            println!("cache demo: all checks passed");
                            0
                        }
                        Err(e) => {
                            eprintln!("cache demo: {e}");
                            1
                        }
                    };
                    let _ = std::fs::remove_file(&unix);
                    std::process::exit(code);
                });
            }
            serve::run_clock(&group)
        }
        Err(e) => {
            eprintln!("cache: {e}");
            ExitCode::FAILURE
        }
    }
}
