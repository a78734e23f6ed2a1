//! The smallest program: one worker with private state, fed by messages.
//!
//! `cargo run --example basic_worker`

#[path = "../common/logging.rs"]
mod logging;
use shared_nothing::prelude::*;
use std::time::Duration;

/// Adds up what it is sent; answers "what is the total?" requests.
struct CounterWorker;

enum Msg {
    Add(u64),
    Total,
}

impl Worker for CounterWorker {
    type State = u64;
    type Message = Msg;
    type Reply = u64;

    fn init(&mut self) -> Result<Self::State> {
        Ok(0)
    }

    fn handle_message(&mut self, total: &mut u64, mut msg: Envelope<Msg, u64>) -> Result<()> {
        match msg.payload {
            Msg::Add(v) => *total += v,
            Msg::Total => msg.reply(*total)?,
        }
        Ok(())
    }

    fn shutdown(&mut self, total: u64) -> Result<()> {
        println!("counter: shutting down with total {total}");
        Ok(())
    }
}

fn main() -> Result<()> {
    logging::init("basic_worker");
    let config = WorkerConfig::new().with_name("counter");
    let mut worker = shared_nothing::worker::spawn(CounterWorker, config)?;

    worker.send(Msg::Add(5))?;
    worker.send(Msg::Add(10))?;
    let total: u64 = worker
        .request(Msg::Total)?
        .wait_timeout(Duration::from_secs(5))?;
    println!("counter: total after two messages = {total}");

    let rtt = worker.ping(Duration::from_secs(5))?;
    println!("counter: ping round trip {rtt:?}");

    worker.send_batch((1..=1000).map(Msg::Add))?;
    worker.stop()?;
    let s = worker.stats();
    println!(
        "counter: received {}, handled {}, failed {}, busy {:?}",
        s.received, s.handled, s.failed, s.busy
    );
    Ok(())
}
