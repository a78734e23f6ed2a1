//! Per-stage timing, summed over jobs and printed as a table.

use shared_nothing::accel::JobResult;
use std::time::Duration;

/// Time spent per stage, summed over a worker's jobs.
#[derive(Clone, Debug, Default)]
pub struct Stages {
    pub jobs: u64,
    pub on_gpu: u64,
    pub queued: Duration,
    pub upload: Duration,
    pub execute: Duration,
    pub readback: Duration,
    /// The application worker recomputing each result on the CPU.
    pub verify: Duration,
}

impl Stages {
    pub fn add(&mut self, r: &JobResult, verify: Duration) {
        self.jobs += 1;
        self.on_gpu += u64::from(r.path.is_gpu());
        // Each job's times are its own (one device submission per job or
        // chunk), so they add up without sharing.
        self.queued += r.timing.queued;
        self.upload += r.timing.upload;
        self.execute += r.timing.execute;
        self.readback += r.timing.readback;
        self.verify += verify;
    }

    pub fn merge(&mut self, o: &Stages) {
        self.jobs += o.jobs;
        self.on_gpu += o.on_gpu;
        self.queued += o.queued;
        self.upload += o.upload;
        self.execute += o.execute;
        self.readback += o.readback;
        self.verify += o.verify;
    }

    pub fn print(&self, partition: Duration, wall: Duration) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("| stage | ms (summed over jobs; each job timed alone) |");
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
            "| upload (host into staging, submit) | {:.1} |",
            ms(self.upload)
        );
        println!("| execute (device) | {:.1} |", ms(self.execute));
        println!("| read back | {:.1} |", ms(self.readback));
        println!(
            "| verify against the CPU reference | {:.1} |",
            ms(self.verify)
        );
        println!("| wall clock, end to end | {:.1} |", ms(wall));
    }
}
