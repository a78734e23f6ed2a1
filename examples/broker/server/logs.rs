//! The logs a worker owns.
//!
//! The default log (RingLog's `0x01` / `0x02` connections) lives on worker
//! [`OWNER`], in the data directory itself, opened when the worker starts.
//! A named log (`0x03` / `0x04`, see `protocol`) lives on the worker its
//! name hashes to ([`owner_of`]), in `DIR/logs/NAME/`, and is opened (or
//! created) there by the first message for it, so appends to different
//! logs use every worker the plan gives. Each log has its own owner (one
//! writer, its own batches, acks and consumers) and directory lock.
//!
//! A worker's logs share its storage: its own io_uring ring in the
//! thread-per-core mode (as the default log's owner does; none under
//! `--fsync always`, see `init`), the storage worker otherwise. At most
//! [`MAX_LOGS_PER_WORKER`] logs are open on a worker; a connection to one
//! more is refused (closed with a log line).
//!
//! Metrics: the `broker_*` series count the default log only; named logs
//! print their own stats lines.

use super::owner::Owner;
use super::{Msg, OWNER};
use crate::config::{Config, FsyncPolicy};
use crate::protocol::LogName;
use shared_nothing::io::{StorageConfig, StorageWorker};
use shared_nothing::pool::{IoWorkers, NetworkMode};
use shared_nothing::worker::ResultSink;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Which log: `None` is the default one.
pub type LogKey = Option<LogName>;

/// Most logs open on one worker.
pub const MAX_LOGS_PER_WORKER: usize = 64;

/// The worker that owns `log` in a group of `workers`.
pub fn owner_of(log: &LogKey, workers: usize) -> usize {
    match log {
        None => OWNER,
        Some(name) => {
            // SipHash with fixed keys: the same worker for a name in every
            // worker of the process (and across restarts of one build).
            let mut h = std::collections::hash_map::DefaultHasher::new();
            name.hash(&mut h);
            (h.finish() % workers.max(1) as u64) as usize
        }
    }
}

/// This worker's logs, and what it takes to open more.
pub struct Logs {
    index: usize,
    cfg: Config,
    io: IoWorkers,
    mode: NetworkMode,
    /// The default log's series (registered in the pool's registry).
    metrics: super::metrics::BrokerMetrics,
    owners: HashMap<LogKey, Owner>,
    /// Thread-per-core: this worker's own storage ring, once a log needs it.
    disk: Option<StorageWorker>,
    /// Starting it failed (the fallback backend): use the storage worker.
    no_local_disk: bool,
}

impl Logs {
    pub fn new(
        index: usize,
        cfg: Config,
        io: IoWorkers,
        mode: NetworkMode,
        metrics: super::metrics::BrokerMetrics,
    ) -> Self {
        Self {
            index,
            cfg,
            io,
            mode,
            metrics,
            owners: HashMap::new(),
            disk: None,
            no_local_disk: false,
        }
    }

    /// The log's owner, opening (and recovering, or creating) the log if
    /// this worker has not yet. Runs on the worker's thread.
    ///
    /// # Errors
    /// A message for the user: too many logs, or the log cannot open.
    pub fn open(&mut self, key: &LogKey) -> Result<&mut Owner, String> {
        if !self.owners.contains_key(key) {
            if self.owners.len() >= MAX_LOGS_PER_WORKER {
                return Err(format!(
                    "worker {} already has {MAX_LOGS_PER_WORKER} logs open",
                    self.index
                ));
            }
            let owner = self.open_owner(key)?;
            self.owners.insert(key.clone(), owner);
        }
        self.owners
            .get_mut(key)
            .ok_or_else(|| "log vanished".to_owned())
    }

    /// The log's owner if it is open here.
    pub fn get(&mut self, key: &LogKey) -> Option<&mut Owner> {
        self.owners.get_mut(key)
    }

    pub fn owners(&mut self) -> impl Iterator<Item = &mut Owner> {
        self.owners.values_mut()
    }

    /// Closes every log (a graceful stop).
    pub fn close_all(&mut self) {
        for (_, owner) in self.owners.drain() {
            owner.close();
        }
    }

    fn open_owner(&mut self, key: &LogKey) -> Result<Owner, String> {
        let mut cfg = self.cfg.clone();
        if let Some(name) = key {
            cfg.dir = cfg.dir.join("logs").join(name.as_str());
        }
        let log = key.clone();
        let sink = ResultSink::to_current_worker(move |c| Msg::Disk {
            log: log.clone(),
            c,
        })
        .map_err(|e| e.to_string())?;
        let disk = match self.local_disk() {
            Some(w) => w.client(sink),
            None => self.io.storage(0).client(sink),
        }
        .map_err(|e| e.to_string())?;
        let owner = Owner::open(&cfg, disk)?;
        Ok(match key {
            None => owner.with_metrics(self.metrics.clone()),
            Some(name) => {
                tracing::info!(worker = self.index, "opened log {name}");
                owner.with_name(Some(name.clone()))
            }
        })
    }

    /// Thread-per-core: the logs' files on this worker's own ring too
    /// (io_uring only; the fallback keeps the storage worker), unless every
    /// batch is synced: then the storage worker's own core measured faster
    /// (docs/benchmarks.md, 0.7x at 8 x 64 on the owner's ring), while
    /// unsynced appends gain 1.7-3.8x.
    fn local_disk(&mut self) -> Option<&StorageWorker> {
        let wanted = matches!(self.mode, NetworkMode::ThreadPerCore)
            && self.cfg.fsync != FsyncPolicy::Always;
        if wanted && self.disk.is_none() && !self.no_local_disk {
            let config = StorageConfig::new().name(format!("broker-disk-{}", self.index));
            match StorageWorker::start_local(self.index + 1, config) {
                Ok(w) => self.disk = Some(w),
                Err(e) => {
                    tracing::info!(worker = self.index, "logs on the storage worker: {e}");
                    self.no_local_disk = true;
                }
            }
        }
        self.disk.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_log_is_on_the_owner_and_names_spread() {
        assert_eq!(owner_of(&None, 4), OWNER);
        let mut seen = [0usize; 4];
        for i in 0..400 {
            let name = LogName::new(format!("log-{i}").as_bytes()).expect("name");
            let w = owner_of(&Some(name.clone()), 4);
            assert_eq!(w, owner_of(&Some(name), 4), "stable");
            seen[w] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        let one = LogName::new(b"x").expect("name");
        assert_eq!(owner_of(&Some(one), 1), 0);
    }
}
