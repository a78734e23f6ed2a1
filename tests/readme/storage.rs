use shared_nothing::io::{
    Durability, FileId, OpenOptions, StorageClient, StorageCompletion, StorageOutput,
};
use shared_nothing::prelude::*;
use std::sync::mpsc;
use std::time::Duration;

enum Msg {
    Append(Vec<u8>),
    /// Answered with the bytes durable, once everything appended before is.
    Durable(mpsc::Sender<u64>),
    Io(StorageCompletion),
}

struct Log {
    io: IoWorkers,
    path: std::path::PathBuf,
}

struct State {
    client: StorageClient,
    file: FileId,
    end: u64,
    durable: u64,
    waiting: Vec<(u64, mpsc::Sender<u64>)>,
}

impl Worker for Log {
    type State = State;
    type Message = Msg;
    type Reply = ();

    fn init(&mut self) -> Result<State> {
        let storage = self.io.storage(0);
        // Open before the first message arrives, so every append finds the
        // file open (init may wait; message handlers never do).
        let options = OpenOptions::read_write_create().truncate(true);
        let file = storage.blocking_client()?.open(&self.path, options)?;
        let client = storage.client(ResultSink::to_current_worker(Msg::Io)?)?;
        Ok(State {
            client,
            file,
            end: 0,
            durable: 0,
            waiting: Vec::new(),
        })
    }

    fn handle_message(&mut self, st: &mut State, m: Envelope<Msg>) -> Result<()> {
        match m.payload {
            Msg::Append(rec) => {
                let len = rec.len() as u64;
                // Group commit: records written while a sync runs share the
                // next one. A full ring queues the write in the client, in
                // order (`Err` only past the client's queue bound).
                st.client
                    .write_at(0, st.file, st.end, rec, Durability::GroupCommit)?;
                st.end += len;
            }
            Msg::Durable(reply) => st.waiting.push((st.end, reply)),
            Msg::Io(c) => {
                if let StorageOutput::Written(n) = c.result? {
                    st.durable += n as u64; // durable: acknowledge the record here
                }
            }
        }
        let durable = st.durable;
        st.waiting.retain(|(end, reply)| {
            let done = *end <= durable;
            if done {
                let _ = reply.send(durable);
            }
            !done
        });
        Ok(())
    }

    fn after_round(&mut self, st: &mut State) -> Result<()> {
        // Completions arrived, so the ring has room: push what waits.
        st.client.flush_queued();
        Ok(())
    }
}

fn main() -> Result<()> {
    let pool = WorkerPool::new()?;
    let io = pool.start_io()?;
    let path = std::env::temp_dir().join(format!("readme-log-{}", std::process::id()));
    let (io2, p2) = (io.clone(), path.clone());
    let mut log = pool.spawn_workers(1, move || Log {
        io: io2.clone(),
        path: p2.clone(),
    })?;
    for i in 0..10_000 {
        log.send_to_worker(0, Msg::Append(format!("record {i:05}\n").into_bytes()))?;
    }
    let (reply, durable) = mpsc::channel();
    log.send_to_worker(0, Msg::Durable(reply))?;
    let bytes = durable
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| Error::Timeout)?;
    log.stop_all()?;
    let data = std::fs::read(&path)?;
    std::fs::remove_file(&path)?;
    let want: String = (0..10_000).map(|i| format!("record {i:05}\n")).collect();
    assert_eq!(bytes, want.len() as u64);
    assert!(data == want.as_bytes(), "every record, in order");
    Ok(())
}
