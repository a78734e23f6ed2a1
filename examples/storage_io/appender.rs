//! An application worker that appends records through its own storage
//! client, keeping `depth` writes in flight, with completions arriving as
//! messages in its loop.

use shared_nothing::io::{Durability, FileId, StorageClient, StorageCompletion, StorageOutput};
use shared_nothing::prelude::*;
use shared_nothing::worker::ReplyTo;

#[derive(Clone, Copy, Debug)]
pub struct Job {
    pub file: FileId,
    /// Index of this worker's first record in the file.
    pub first: u64,
    pub records: u64,
    pub record_size: usize,
    pub depth: u64,
}

pub enum Msg {
    Start(Job),
    Done(StorageCompletion),
}

pub struct Appender {
    io: IoWorkers,
}

impl Appender {
    pub fn new(io: IoWorkers) -> Self {
        Self { io }
    }
}

pub struct State {
    client: StorageClient,
    job: Option<(Job, ReplyTo<Result<()>>)>,
    next: u64,
    done: u64,
}

/// Record `i`: its index in the first 8 bytes, then a byte pattern.
pub fn record(i: u64, size: usize) -> Vec<u8> {
    let mut r = vec![(i % 251) as u8; size];
    r[..8].copy_from_slice(&i.to_le_bytes());
    r
}

pub fn check_record(i: u64, rec: &[u8]) -> Result<()> {
    if rec != record(i, rec.len()).as_slice() {
        return Err(Error::InvalidConfig(format!("record {i} is corrupt")));
    }
    Ok(())
}

impl State {
    fn submit_next(&mut self) -> Result<()> {
        let Some((job, _)) = self.job else {
            return Ok(());
        };
        while self.next < job.records && self.next - self.done < job.depth {
            let i = job.first + self.next;
            let offset = i * job.record_size as u64;
            self.client
                .write_at(
                    i,
                    job.file,
                    offset,
                    record(i, job.record_size),
                    Durability::GroupCommit,
                )
                // Full only if more than the client queue is in flight,
                // which `depth` rules out.
                .map_err(|_| Error::Full)?;
            self.next += 1;
        }
        Ok(())
    }
}

impl Worker for Appender {
    type State = State;
    type Message = Msg;
    type Reply = Result<()>;

    fn init(&mut self) -> Result<State> {
        // The file was opened on storage worker 0: its id is valid there.
        let client = self
            .io
            .storage(0)
            .client(ResultSink::to_current_worker(Msg::Done)?)?;
        Ok(State {
            client,
            job: None,
            next: 0,
            done: 0,
        })
    }

    fn handle_message(&mut self, st: &mut State, mut msg: Envelope<Msg, Result<()>>) -> Result<()> {
        let reply = msg.take_reply();
        match msg.payload {
            Msg::Start(job) => {
                let reply =
                    reply.ok_or_else(|| Error::InvalidConfig("Start needs a reply".into()))?;
                st.job = Some((job, reply));
                st.next = 0;
                st.done = 0;
                st.submit_next()?;
            }
            Msg::Done(c) => {
                match c.result {
                    Ok(StorageOutput::Written(_)) => st.done += 1,
                    Ok(other) => return Err(Error::InvalidConfig(format!("unexpected {other:?}"))),
                    Err(e) => {
                        // Report the failure to whoever started the job.
                        if let Some((_, r)) = st.job.take() {
                            r.send(Err(e.into()))?;
                        }
                        return Ok(());
                    }
                }
                st.submit_next()?;
                let finished = st.job.as_ref().is_some_and(|(j, _)| st.done == j.records);
                if finished {
                    if let Some((_, r)) = st.job.take() {
                        r.send(Ok(()))?;
                    }
                }
            }
        }
        Ok(())
    }
}
