//! Files through the pool's storage I/O worker.
//!
//! `cargo run --example storage_io` has every application worker append
//! fixed-size records to one file with group commit (each record is
//! durable when its completion arrives, and concurrent records share
//! `fdatasync`s), then reads the whole file back through the storage worker,
//! checks every record, and prints the throughput of each phase.

mod appender;
#[path = "../common/logging.rs"]
mod logging;

use appender::{Appender, Job, Msg};
use shared_nothing::io::{OpenOptions, StorageOutput};
use shared_nothing::prelude::*;
use std::time::{Duration, Instant};

const RECORD: usize = 4096;
const RECORDS_PER_WORKER: u64 = 2_000;
const DEPTH: u64 = 32;

fn main() -> Result<()> {
    logging::init("storage_io");
    let dir =
        std::env::temp_dir().join(format!("shared-nothing-storage-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(dir: &std::path::Path) -> Result<()> {
    let pool = WorkerPool::new()?;
    let io = pool.start_io()?;
    let storage = io.storage(0);
    println!("storage worker 0 runs on {}", storage.backend());
    let mut files = storage.blocking_client()?;
    let path = dir.join("records.log");
    let file = files.open(&path, OpenOptions::read_write_create().truncate(true))?;

    let io2 = io.clone();
    let mut group = pool.spawn(move || Appender::new(io2.clone()))?;
    let workers = group.len() as u64;
    let start = Instant::now();
    let pending: Vec<_> = (0..group.len())
        .map(|w| {
            let job = Job {
                file,
                first: w as u64 * RECORDS_PER_WORKER,
                records: RECORDS_PER_WORKER,
                record_size: RECORD,
                depth: DEPTH,
            };
            group.request(w, Msg::Start(job)).map_err(Error::from)
        })
        .collect::<Result<_>>()?;
    for p in pending {
        p.wait_timeout(Duration::from_secs(300))??;
    }
    let elapsed = start.elapsed();
    let total = workers * RECORDS_PER_WORKER;
    let mb = (total as usize * RECORD) as f64 / 1e6;
    println!(
        "durable appends (group commit): {total} x {RECORD} B from {workers} worker(s) in {elapsed:.2?}: {:.0} records/s, {:.1} MB/s",
        total as f64 / elapsed.as_secs_f64(),
        mb / elapsed.as_secs_f64()
    );

    // Read everything back through the storage worker and check it.
    let start = Instant::now();
    let chunk = 64 * RECORD;
    let len = total as usize * RECORD;
    let mut checked = 0u64;
    let mut offset = 0;
    while offset < len {
        let data = files.read_at(file, offset as u64, chunk.min(len - offset))?;
        if data.is_empty() {
            return Err(Error::InvalidConfig(format!("file ends early at {offset}")));
        }
        for rec in data.chunks(RECORD) {
            appender::check_record(offset as u64 / RECORD as u64 + checked % 64, rec)?;
            checked += 1;
        }
        offset += data.len();
        checked = 0;
    }
    let elapsed = start.elapsed();
    println!(
        "read back and checked {total} records in {elapsed:.2?}: {:.1} MB/s",
        mb / elapsed.as_secs_f64()
    );
    match files
        .call(shared_nothing::io::StorageOp::Sync {
            file,
            data_only: false,
        })?
        .result?
    {
        StorageOutput::Synced => {}
        other => return Err(Error::InvalidConfig(format!("fsync answered {other:?}"))),
    }
    files.close(file)?;
    group.stop_all()?;
    Ok(())
}
