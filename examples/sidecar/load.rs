//! `sidecar load`: a client process that appends records in batches,
//! waiting for each batch's ACCEPTED and printing every accepted record,
//! so a test that kills it or the daemon knows what was promised.

use crate::client::{Client, ClientError};
use crate::records::record;
use std::io::Write;

pub fn run(name: &str, file: &str, tag: u32, count: u64, batch: u64) -> Result<(), ClientError> {
    let mut c = Client::attach(name)?;
    let h = c.open_wait(file, true)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "attached {}", c.id);
    let _ = out.flush();
    let mut next = 0u64;
    while count == 0 || next < count {
        let n = if count == 0 {
            batch
        } else {
            batch.min(count - next)
        };
        let mut ids = Vec::new();
        for i in next..next + n {
            ids.push((i, c.append(h, &record(tag, i))?));
        }
        for (i, op) in ids {
            let offset = c.wait_accepted(op)?;
            c.dismiss(op);
            let _ = writeln!(out, "accepted {i} {offset}");
        }
        let _ = out.flush();
        next += n;
    }
    let _ = writeln!(out, "done {next}");
    Ok(())
}
