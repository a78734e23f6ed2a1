//! Prints what the zero-config pool detects on this machine and what each
//! profile would run.
//!
//! `cargo run --example topology`
//! `SHARED_NOTHING_APP_WORKERS=1 taskset -c 0 cargo run --example topology`

use shared_nothing::prelude::*;
use tracing_subscriber::EnvFilter;

fn main() -> Result<()> {
    init_logging();
    let pool = WorkerPool::new()?;
    println!("{}", pool.plan());
    for (name, pool) in [
        ("low_latency", WorkerPool::low_latency()),
        ("performance", WorkerPool::performance()),
    ] {
        match pool {
            Ok(p) => {
                let plan = p.plan();
                let busy = plan
                    .cpu_placements()
                    .filter(|w| w.idle != IdleStrategy::SpinThenPark)
                    .count();
                println!(
                    "{name}: {} application, {} storage, {} network, {} GPU workers; \
                     {busy} busy-polling (profile asks for {:?}); queue {}; batch {}",
                    plan.app_workers.len(),
                    plan.storage_workers.len(),
                    plan.network_workers.len(),
                    plan.gpu_workers.len(),
                    plan.idle,
                    plan.queue_capacity,
                    plan.batch_size
                );
            }
            Err(e) => println!("{name}: no plan: {e}"),
        }
    }
    Ok(())
}

/// Sends logs (the library's `tracing` events and this example's own) to
/// stderr, so stdout carries only the example's output. `RUST_LOG` filters
/// them, replacing the default: the library's warnings and errors (`warn`)
/// and this example's notes (`topology=info`). `RUST_LOG=shared_nothing=debug`
/// shows every lifecycle event of the library.
fn init_logging() {
    let filter = match std::env::var_os("RUST_LOG") {
        Some(_) => EnvFilter::from_default_env(),
        None => EnvFilter::new("warn,topology=info"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
