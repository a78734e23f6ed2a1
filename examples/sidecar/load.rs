//! `sidecar load`: a client process that appends records in batches,
//! waiting for each batch's ACCEPTED and printing every accepted record,
//! so a test that kills it or the daemon knows what was promised. With
//! `--send DEST` each record is also sent to that destination, and each
//! accepted send printed with its operation id.

use crate::client::{Client, ClientError};
use crate::records::record;
use std::io::Write;

/// What one load client does.
#[derive(Debug)]
pub struct Load<'a> {
    pub name: &'a str,
    pub file: &'a str,
    pub tag: u32,
    /// Records to append (0: until killed).
    pub count: u64,
    pub batch: u64,
    /// A destination to send each record to as well.
    pub send: Option<&'a str>,
}

pub fn run(l: &Load<'_>) -> Result<(), ClientError> {
    let mut c = Client::attach(l.name)?;
    let h = c.open_wait(l.file, true)?;
    let dest = match l.send {
        Some(d) => Some(c.dest_wait(d)?),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "attached {}", c.id);
    let _ = out.flush();
    let mut next = 0u64;
    while l.count == 0 || next < l.count {
        let n = if l.count == 0 {
            l.batch
        } else {
            l.batch.min(l.count - next)
        };
        let mut ids = Vec::new();
        let mut sends = Vec::new();
        for i in next..next + n {
            ids.push((i, c.append(h, &record(l.tag, i))?));
            if let Some(d) = dest {
                sends.push((i, c.send(d, &record(l.tag, i))?));
            }
        }
        for (i, op) in ids {
            let offset = c.wait_accepted(op)?;
            c.dismiss(op);
            let _ = writeln!(out, "accepted {i} {offset}");
        }
        for (i, op) in sends {
            let id = c.wait_accepted(op)?;
            c.dismiss(op);
            let _ = writeln!(out, "sent {i} {id}");
        }
        let _ = out.flush();
        next += n;
    }
    let _ = writeln!(out, "done {next}");
    Ok(())
}
