//! Per-stage timing, summed over jobs and printed as a table.

use shared_nothing::accel::JobResult;
use std::time::Duration;

/// Time spent per stage, summed over a worker's jobs.
#[derive(Clone, Debug, Default)]
pub struct Stages {
    pub jobs: u64,
    pub on_gpu: u64,
    pub queued: Duration,
    pub transfer: Duration,
    pub execute: Duration,
    /// The application worker recomputing each result on the CPU.
    pub verify: Duration,
}

impl Stages {
    pub fn add(&mut self, r: &JobResult, verify: Duration) {
        self.jobs += 1;
        self.on_gpu += u64::from(r.path.is_gpu());
        // Jobs batched into one submission share its transfer and execute
        // times: split them evenly so the sums add up to device time.
        let shared = r.timing.batch.max(1) as u32;
        self.queued += r.timing.queued;
        self.transfer += r.timing.transfer / shared;
        self.execute += r.timing.execute / shared;
        self.verify += verify;
    }

    pub fn merge(&mut self, o: &Stages) {
        self.jobs += o.jobs;
        self.on_gpu += o.on_gpu;
        self.queued += o.queued;
        self.transfer += o.transfer;
        self.execute += o.execute;
        self.verify += o.verify;
    }

    pub fn print(&self, partition: Duration, wall: Duration) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("| stage | ms (summed over jobs; a batch's device time split among its jobs) |");
        println!("|---|---|");
        println!(
            "| partition + submit (main thread) | {:.1} |",
            ms(partition)
        );
        println!(
            "| waiting in the accelerator's queue | {:.1} |",
            ms(self.queued)
        );
        println!(
            "| transfer (upload + read back) | {:.1} |",
            ms(self.transfer)
        );
        println!("| execute (device) | {:.1} |", ms(self.execute));
        println!(
            "| verify against the CPU reference | {:.1} |",
            ms(self.verify)
        );
        println!("| wall clock, end to end | {:.1} |", ms(wall));
    }
}
