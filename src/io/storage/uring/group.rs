//! Group commit: written `GroupCommit` writes wait per file for one
//! `fdatasync` that makes all of them durable; at most one runs per file,
//! and writes that arrive meanwhile wait for the next.

use super::UringStorage;
use super::ops::{GroupSyncOp, Kind, Pending, Target};
use crate::io::IoBuf;
use crate::io::IoError;
use crate::io::kernel::Cqe;
use crate::io::storage::blocking::clone_error;
use crate::io::storage::op::{FileId, StorageCompletion, StorageOutput};

/// A durable write whose data is written, waiting for a sync.
pub(super) struct Waiting {
    pub(super) client: u32,
    pub(super) token: u64,
    pub(super) buf: IoBuf,
    pub(super) written: usize,
}

/// One file's group: the writes waiting, and whether a sync runs.
#[derive(Default)]
pub(super) struct Group {
    pub(super) ready: Vec<Waiting>,
    pub(super) syncing: bool,
}

impl Group {
    /// Whether a close of the file must still wait for it.
    pub(super) fn busy(&self) -> bool {
        self.syncing || !self.ready.is_empty()
    }
}

impl UringStorage {
    /// Queues a written durable write for its file's next group sync.
    pub(super) fn await_group_sync(&mut self, file: FileId, w: Waiting) {
        self.groups.entry(file.raw()).or_default().ready.push(w);
    }

    /// Starts a sync for every file with writes waiting and none running.
    pub(super) fn issue_group_syncs(&mut self) {
        let ready: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.syncing && !g.ready.is_empty())
            .map(|(f, _)| *f)
            .collect();
        for raw in ready {
            let file = FileId(raw);
            let Some(g) = self.groups.get_mut(&raw) else {
                continue;
            };
            let waiters = std::mem::take(&mut g.ready);
            let target = match self.files.get_even_closing(file) {
                Ok(e) => Target::from(e),
                Err(e) => {
                    self.answer_group(waiters, |_| Err(clone_error(&e)));
                    continue;
                }
            };
            g.syncing = true;
            let op = Pending {
                client: u32::MAX,
                token: 0,
                file: Some(file),
                kind: Kind::GroupSync(GroupSyncOp {
                    target,
                    file,
                    waiters,
                }),
            };
            // Not pushed: the waiters get the error through `complete_group_sync`.
            self.submit(op);
        }
    }

    /// Answers a group's writes: written and durable, or not.
    pub(super) fn complete_group_sync(&mut self, op: GroupSyncOp, res: Result<(), IoError>) {
        if let Some(g) = self.groups.get_mut(&op.file.raw()) {
            g.syncing = false;
        }
        match res {
            Ok(()) => self.answer_group(op.waiters, |w| Ok(StorageOutput::Written(w))),
            Err(e) => self.answer_group(op.waiters, |_| Err(clone_error(&e))),
        }
    }

    /// The sync's outcome from its completion.
    pub(super) fn group_sync_result(cqe: &Cqe) -> Result<(), IoError> {
        if cqe.refused() {
            Err(IoError::not_submitted(-cqe.res()))
        } else if cqe.res() < 0 {
            Err(IoError::os("fdatasync", -cqe.res()))
        } else {
            Ok(())
        }
    }

    fn answer_group(
        &mut self,
        waiters: Vec<Waiting>,
        result: impl Fn(usize) -> Result<StorageOutput, IoError>,
    ) {
        for w in waiters {
            let c = StorageCompletion {
                token: w.token,
                result: result(w.written),
                buf: Some(w.buf),
                bufs: Vec::new(),
            };
            self.inbox.deliver(w.client, c);
        }
    }
}
