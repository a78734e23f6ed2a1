//! Helper threads that give the fallback queue depth: a round's data
//! requests run side by side on them (the storage worker waits for the
//! round, then answers), while opens and closes stay on the worker, in
//! order, between such batches.

use super::ops::{self, Done, Job};
use std::thread::JoinHandle;

pub(super) struct Helpers {
    jobs: Option<crossbeam_channel::Sender<Job>>,
    done: crossbeam_channel::Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl Helpers {
    /// `n` threads named after the worker; `None` if none could start.
    pub(super) fn start(n: usize, name: &str) -> Option<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        let (finished, done) = crossbeam_channel::unbounded();
        let threads: Vec<_> = (0..n)
            .filter_map(|i| {
                let (queue, finished) = (queue.clone(), finished.clone());
                std::thread::Builder::new()
                    .name(format!("{name}-io{i}"))
                    .spawn(move || {
                        for job in queue {
                            if finished.send(ops::run(job)).is_err() {
                                return;
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        (!threads.is_empty()).then_some(Self {
            jobs: Some(jobs),
            done,
            threads,
        })
    }

    /// Runs `batch` on the helpers and returns every outcome (in the
    /// order they finished). A job whose helper died is answered by
    /// running it here.
    pub(super) fn run(&self, batch: Vec<Job>, out: &mut Vec<Done>) {
        let Some(jobs) = &self.jobs else {
            out.extend(batch.into_iter().map(ops::run));
            return;
        };
        let mut sent = 0;
        for job in batch {
            match jobs.send(job) {
                Ok(()) => sent += 1,
                Err(e) => out.push(ops::run(e.into_inner())),
            }
        }
        for _ in 0..sent {
            match self.done.recv() {
                Ok(d) => out.push(d),
                // Every helper is gone (each holds a sender): nothing more
                // comes; what they took is lost with them, which a panic
                // in a system call wrapper would be.
                Err(_) => break,
            }
        }
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        // Closing the queue ends every helper's loop.
        drop(self.jobs.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
