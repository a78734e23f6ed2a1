//! Scatter/gather: split a computation into chunks, farm them out to the
//! workers with request/reply, and combine the answers.
//!
//! `cargo run --example distributed_compute`

#[path = "../common/logging.rs"]
mod logging;
use shared_nothing::prelude::*;
use std::time::{Duration, Instant};

/// Counts primes in a range; keeps a per-worker tally as its state.
struct PrimeCounter;

struct Chunk {
    start: u64,
    end: u64,
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

fn count_primes(start: u64, end: u64) -> u64 {
    (start..end).filter(|&n| is_prime(n)).count() as u64
}

impl Worker for PrimeCounter {
    type State = u64; // chunks done by this worker
    type Message = Chunk;
    type Reply = u64;

    fn init(&mut self) -> Result<u64> {
        Ok(0)
    }

    fn handle_message(&mut self, done: &mut u64, mut msg: Envelope<Chunk, u64>) -> Result<()> {
        let found = count_primes(msg.payload.start, msg.payload.end);
        *done += 1;
        msg.reply(found)?;
        Ok(())
    }
}

fn main() -> Result<()> {
    logging::init("distributed_compute");
    const LIMIT: u64 = 2_000_000;
    const CHUNK: u64 = 50_000;

    // One worker per usable CPU (the default plan keeps cores for I/O).
    let cpus = WorkerPool::new()?.topology().available_cpus().len();
    let mut workers = WorkerPool::builder()
        .factory(|| PrimeCounter)
        .workers(cpus)
        .build()?;
    println!("distributed_compute: {} workers", workers.len());

    let t0 = Instant::now();
    let mut pending = Vec::new();
    for (i, start) in (0..LIMIT).step_by(CHUNK as usize).enumerate() {
        let chunk = Chunk {
            start,
            end: (start + CHUNK).min(LIMIT),
        };
        pending.push(workers.request(i % workers.len(), chunk)?);
    }
    let mut parallel = 0;
    for p in pending {
        parallel += p.wait_timeout(Duration::from_secs(60))?;
    }
    let t_parallel = t0.elapsed();

    let t1 = Instant::now();
    let sequential = count_primes(0, LIMIT);
    let t_sequential = t1.elapsed();

    workers.stop_all()?;
    println!("  primes below {LIMIT}: {parallel} (workers, {t_parallel:?})");
    println!("  primes below {LIMIT}: {sequential} (one thread, {t_sequential:?})");
    for (i, w) in workers.stats().workers.iter().enumerate() {
        println!("  worker {i}: {} chunks, busy {:?}", w.handled, w.busy);
    }
    assert_eq!(
        parallel, sequential,
        "scatter/gather must match the sequential answer"
    );
    Ok(())
}
