//! The showcase: a zero-config pool counting click events per user.
//!
//! Events keyed by user go to the worker that owns the user, so per-user
//! state needs no lock and no sharing. The run prints the plan the pool chose
//! for this machine and why, the partitioned work, the measured throughput,
//! and request round-trip latency percentiles.
//!
//! `cargo run --release --example data_processing`

#[path = "../common/logging.rs"]
mod logging;
use hdrhistogram::Histogram;
use shared_nothing::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PRODUCERS: u64 = 4;
const EVENTS_PER_PRODUCER: u64 = 250_000;
const USERS: u64 = 1_000;
const ROUND_TRIPS: u64 = 20_000;

/// Keeps per-user event counts for the users it owns.
struct SessionCounter {
    id: usize,
}

#[derive(Clone)]
enum Event {
    Click {
        user: u64,
    },
    /// Answers how many clicks this user has.
    Lookup {
        user: u64,
    },
    /// Answers (worker id, users owned, clicks counted).
    Report,
}

/// A worker's reply: a user's count, or its totals.
#[derive(Debug)]
enum Answer {
    Count(u64),
    Totals {
        id: usize,
        users: usize,
        clicks: u64,
    },
}

impl Worker for SessionCounter {
    type State = HashMap<u64, u64>;
    type Message = Event;
    type Reply = Answer;

    fn init(&mut self) -> Result<Self::State> {
        Ok(HashMap::new())
    }

    fn handle_message(
        &mut self,
        counts: &mut Self::State,
        mut msg: Envelope<Event, Answer>,
    ) -> Result<()> {
        match msg.payload {
            Event::Click { user } => *counts.entry(user).or_default() += 1,
            Event::Lookup { user } => {
                let n = counts.get(&user).copied().unwrap_or(0);
                msg.reply(Answer::Count(n))?;
            }
            Event::Report => msg.reply(Answer::Totals {
                id: self.id,
                users: counts.len(),
                clicks: counts.values().sum(),
            })?,
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    logging::init("data_processing");
    // Zero-config: detect the machine, plan the pool.
    let pool = WorkerPool::new()?;
    print_plan(pool.plan());
    let mut group = pool.spawn(|i| SessionCounter { id: i })?;

    // Producer threads, each with its own sender (its own rings, no locks).
    let t0 = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let mut tx = group.sender();
            std::thread::spawn(move || {
                for i in 0..EVENTS_PER_PRODUCER {
                    let user = (i * 7 + p) % USERS;
                    tx.send_partitioned(&user, Event::Click { user })
                        .expect("pool is running");
                }
            })
        })
        .collect();
    for t in producers {
        t.join().expect("producer thread");
    }
    // Order holds per sender only: the flush waits until every worker has
    // handled everything any producer sent.
    group.flush()?;
    let elapsed = t0.elapsed();
    let events = PRODUCERS * EVENTS_PER_PRODUCER;

    // Request round trips to the owning worker, timed one by one.
    let mut rtt = Histogram::<u64>::new(3).map_err(Error::handler)?;
    let mut looked_up = 0;
    for k in 0..ROUND_TRIPS {
        let user = k % USERS;
        let t = Instant::now();
        let answer: Answer = group
            .request_partitioned(&user, Event::Lookup { user })?
            .wait_timeout(Duration::from_secs(10))?;
        rtt.record(t.elapsed().as_nanos() as u64)
            .map_err(Error::handler)?;
        if let Answer::Count(n) = answer {
            looked_up += n;
        }
    }

    // Scatter-gather: every worker's totals.
    let totals: Vec<Answer> = group.request_all_timeout(Event::Report, Duration::from_secs(10))?;
    group.stop_all()?;

    println!(
        "work: {PRODUCERS} producers sent {events} click events for {USERS} users, \
         hash-partitioned over {} workers",
        group.len()
    );
    let mut total = 0;
    for t in &totals {
        if let Answer::Totals { id, users, clicks } = t {
            println!("  worker {id}: owns {users} users, counted {clicks} clicks");
            total += clicks;
        }
    }
    println!(
        "throughput: {:.1} M events/s end to end ({events} events in {:.1} ms, flush included)",
        events as f64 / elapsed.as_secs_f64() / 1e6,
        elapsed.as_secs_f64() * 1e3
    );
    println!(
        "request round trip ({ROUND_TRIPS} requests): p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
        rtt.value_at_quantile(0.50) as f64 / 1e3,
        rtt.value_at_quantile(0.99) as f64 / 1e3,
        rtt.value_at_quantile(0.999) as f64 / 1e3,
    );
    assert_eq!(total, events, "every click counted exactly once");
    assert_eq!(
        looked_up,
        ROUND_TRIPS * (events / USERS),
        "lookups see every click"
    );
    Ok(())
}

/// The plan in a few lines: who runs where, and why.
fn print_plan(plan: &shared_nothing::pool::Plan) {
    let d = &plan.detected;
    println!(
        "plan: profile {}, {} CPUs detected, {} NUMA node(s), I/O backend {:?}",
        plan.profile,
        d.cpus.len(),
        d.numa_nodes,
        plan.io_backend
    );
    let cpus: Vec<String> = plan
        .app_workers
        .iter()
        .map(|p| p.cpu.map_or("unpinned".into(), |c| format!("CPU {c}")))
        .collect();
    println!(
        "  {} application worker(s) on {}",
        plan.app_workers.len(),
        cpus.join(", ")
    );
    for reason in &plan.reasons {
        println!("  why: {reason}");
    }
}
