//! Prints what the zero-config pool detects on this machine and what each
//! profile would run.
//!
//! `cargo run --example topology`
//! `SHARED_NOTHING_APP_WORKERS=1 taskset -c 0 cargo run --example topology`

#[path = "../common/logging.rs"]
mod logging;
use shared_nothing::prelude::*;

fn main() -> Result<()> {
    logging::init("topology");
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
