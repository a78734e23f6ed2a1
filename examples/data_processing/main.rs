//! A partitioned pipeline: events keyed by user go to the worker that owns
//! the user, so per-user state needs no lock and no sharing.
//!
//! `cargo run --example data_processing`

use shared_nothing::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

/// Keeps per-user event counts for the users it owns.
struct SessionCounter {
    id: usize,
}

enum Event {
    Click {
        user: String,
    },
    /// Answered once everything this sender sent before it is handled.
    Flush,
    Report,
}

impl Worker for SessionCounter {
    type State = HashMap<String, u64>;
    type Message = Event;

    fn init(&mut self) -> Result<Self::State> {
        Ok(HashMap::new())
    }

    fn handle_message(&mut self, counts: &mut Self::State, mut msg: Envelope<Event>) -> Result<()> {
        match msg.payload {
            Event::Click { ref user } => *counts.entry(user.clone()).or_default() += 1,
            Event::Flush => msg.reply(())?,
            Event::Report => {
                let report: Vec<(String, u64)> =
                    counts.iter().map(|(u, c)| (u.clone(), *c)).collect();
                msg.reply((self.id, report))?;
            }
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let config = PoolConfig::new().with_num_workers(4);
    let mut pool = WorkerPool::with_partitioner(
        config,
        |i| SessionCounter { id: i },
        std::sync::Arc::new(HashPartitioner::new()),
    )?;

    // Four producer threads, each with its own sender (its own rings).
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let mut tx = pool.sender();
            std::thread::spawn(move || {
                for i in 0..25_000u64 {
                    let user = format!("user-{}", (i * 7 + p) % 100);
                    tx.send_partitioned(&user, Event::Click { user: user.clone() })
                        .expect("pool is running");
                }
                // Order is kept per sender, not across senders: a flush through
                // this sender proves each worker has handled our clicks.
                for w in 0..tx.len() {
                    tx.request::<()>(w, Event::Flush)
                        .expect("pool is running")
                        .wait_timeout(Duration::from_secs(10))
                        .expect("flush answered");
                }
            })
        })
        .collect();
    for t in producers {
        t.join().expect("producer thread");
    }

    let mut users_per_worker = Vec::new();
    let mut total = 0;
    for w in 0..pool.len() {
        let (id, report): (usize, Vec<(String, u64)>) = pool
            .request(w, Event::Report)?
            .wait_timeout(Duration::from_secs(10))?;
        total += report.iter().map(|(_, c)| c).sum::<u64>();
        users_per_worker.push((id, report.len()));
    }
    pool.stop_all()?;

    println!("data_processing: 4 producers sent 100000 click events for 100 users");
    for (id, users) in users_per_worker {
        println!("  worker {id}: owns {users} users");
    }
    println!("  total clicks counted: {total}");
    let s = pool.stats();
    println!("  handled {} messages, failed {}", s.handled(), s.failed());
    assert_eq!(s.handled(), 100_000 + 4 * 4 + 4);
    assert_eq!(total, 100_000, "every click counted exactly once");
    Ok(())
}
