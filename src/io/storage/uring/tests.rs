//! White-box tests that drive a `UringStorage` on the test thread and
//! inject failed submits through the ring's test seam.

use super::*;
use crate::io::inbox::Shared;
use crate::io::storage::files::FileEntry;
use crate::io::storage::op::{Durability, StorageOp};
use crate::worker::{ResultQueue, ResultSink};
use io_uring::opcode;
use std::os::fd::IntoRawFd;

struct Rig {
    st: UringStorage,
    client: crate::io::inbox::Queued<StorageRequest>,
    done: ResultQueue<StorageCompletion>,
    file: FileId,
    path: std::path::PathBuf,
}

/// A storage worker with an 8-entry ring, one client and one open
/// file; `None` where io_uring is unavailable.
fn rig(tag: &str) -> Option<Rig> {
    let waker = Arc::new(EventFd::new().ok()?);
    let w = waker.clone();
    let shared = Shared::new(Arc::new(move || w.notify()), 64);
    let config = StorageConfig::new().ring_entries(8).fixed_buffers(0, 0);
    let mut st = UringStorage::new(0, &config, shared.clone(), waker, FileIds::new(0)).ok()?;
    let (sink, done) = ResultSink::queue();
    let client = shared.join(sink, 0).ok()?;
    st.inbox.accept_joining();
    let path = std::env::temp_dir().join(format!(
        "sn-uring-{}-{tag}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let fd = std::fs::File::create(&path).ok()?.into_raw_fd();
    let file = st.files.insert(FileEntry {
        fd,
        fixed: None,
        direct: false,
    });
    Some(Rig {
        st,
        client,
        done,
        file,
        path,
    })
}

impl Rig {
    fn linked_write(&mut self, token: u64) {
        let op = StorageOp::WriteAt {
            file: self.file,
            offset: 0,
            buf: IoBuf::from(vec![5u8; 4096]),
            durability: Durability::Linked,
        };
        self.client
            .submit(StorageRequest {
                token,
                op,
                reserved: None,
            })
            .unwrap();
    }

    /// Fills the submission queue but for `free` entries with no-ops.
    fn fill_sq(&mut self, free: usize) {
        while self.st.ring.sq_free() > free {
            let nop = opcode::Nop::new().build().user_data(u64::from(u32::MAX));
            // SAFETY: a no-op points to no memory.
            assert!(unsafe { self.st.ring.push(&nop) });
        }
    }

    /// Submits `op` with `token` and runs rounds until its completion.
    fn call(&mut self, token: u64, op: StorageOp) -> StorageCompletion {
        let req = StorageRequest {
            token,
            op,
            reserved: None,
        };
        self.client.submit(req).unwrap();
        self.complete()
    }

    /// Runs worker rounds until a completion arrives.
    fn complete(&mut self) -> StorageCompletion {
        for _ in 0..1000 {
            self.st.take_requests();
            self.st.ring.submit(false);
            self.st.reap();
            self.st.inbox.flush();
            if let Some(c) = self.done.try_recv() {
                return c;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("no completion");
    }

    /// Whether the write and sync SQEs of a linked op (`user_data` `2n`
    /// and `2n + 1`, see `InFlight`) were pushed back to back, with no
    /// submit between them.
    fn linked_in_one_submit(&self) -> bool {
        let log = &self.st.ring.log;
        log.windows(2)
            .any(|p| matches!(p, [Some(w), Some(s)] if w & 1 == 0 && *s == w | 1))
    }

    fn finish(mut self) {
        self.st.end_all();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn a_linked_write_whose_pair_cannot_be_pushed_together_is_not_reported_durable_unlinked() {
    let Some(mut r) = rig("split") else {
        return; // no io_uring here
    };
    // One free entry, and the submit that would make room fails
    // transiently: the pair must not go in one half at a time.
    r.fill_sq(1);
    r.st.ring.fail_next_submit = Some(libc::EBUSY);
    r.linked_write(1);
    let req = r.st.inbox.clients[0]
        .as_mut()
        .unwrap()
        .ring
        .try_pop()
        .unwrap();
    r.st.start(0, req);
    let c = r.complete();
    match c.result {
        Ok(StorageOutput::Written(n)) => assert!(
            r.linked_in_one_submit(),
            "a write of {n} bytes was reported durable, but its sync was not linked after it \
             (log {:?})",
            r.st.ring.log
        ),
        Ok(other) => panic!("{other:?}"),
        Err(_) => {} // failing is allowed; a false durability promise is not
    }
    r.finish();
}
#[test]
fn a_submit_that_fails_for_good_fails_what_it_did_not_take_and_nothing_later_runs() {
    let Some(mut r) = rig("broken") else {
        return;
    };
    r.linked_write(1);
    r.st.take_requests();
    r.st.ring.fail_next_submit = Some(libc::EINVAL);
    let c = r.complete();
    match c.result {
        Err(IoError::NotSubmitted { source }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
        }
        other => panic!("expected NotSubmitted, got {other:?}"),
    }
    assert!(c.buf.is_some(), "the buffer comes back");
    assert!(r.st.ops.is_empty());
    // The ring is broken: a later request fails at once, unsubmitted.
    r.linked_write(2);
    let c = r.complete();
    assert!(
        matches!(c.result, Err(IoError::NotSubmitted { .. })),
        "{:?}",
        c.result
    );
    // Nothing was written: the pair never reached the kernel.
    assert_eq!(std::fs::metadata(&r.path).unwrap().len(), 0);
    r.finish();
}

#[test]
fn a_linked_pair_split_by_a_partial_submit_is_not_reported_durable() {
    let Some(mut r) = rig("partial") else {
        return;
    };
    let nop = opcode::Nop::new().build().user_data(u64::from(u32::MAX));
    // SAFETY: a no-op points to no memory.
    assert!(unsafe { r.st.ring.push(&nop) });
    r.linked_write(1);
    r.st.take_requests();
    // The next submit takes the no-op and the write, not its sync.
    r.st.ring.submit_at_most = Some(2);
    r.st.ring.submit(false);
    r.st.ring.submit_at_most = None;
    let c = r.complete();
    match c.result {
        Err(IoError::NotDurable { written }) => assert_eq!(written, 4096),
        other => panic!("expected NotDurable, got {other:?}"),
    }
    r.finish();
}

/// `SetLen` through `IORING_OP_FTRUNCATE` where the kernel has it, and as
/// a plain `ftruncate` where it does not (forced here): both extend with a
/// hole and cut.
#[test]
fn set_len_runs_on_the_ring_or_inline_without_the_opcode() {
    for through_ring in [true, false] {
        let Some(mut rig) = rig("setlen") else {
            return;
        };
        if through_ring && !rig.st.ftruncate {
            rig.finish();
            continue;
        }
        rig.st.ftruncate = through_ring;
        for (token, len) in [(1, 1 << 20), (2, 100)] {
            let file = rig.file;
            let c = rig.call(token, StorageOp::SetLen { file, len });
            assert_eq!(c.token, token);
            assert_eq!(c.result.unwrap(), StorageOutput::Resized);
            let meta = std::fs::metadata(&rig.path).unwrap();
            assert_eq!(meta.len(), len, "through the ring: {through_ring}");
        }
        rig.finish();
    }
}

/// `Remove` through `IORING_OP_UNLINKAT` where the kernel has it, and as a
/// plain `unlink` where it does not (forced here).
#[test]
fn remove_runs_on_the_ring_or_inline_without_the_opcode() {
    for through_ring in [true, false] {
        let Some(mut rig) = rig("remove") else {
            return;
        };
        if through_ring && !rig.st.unlinkat {
            rig.finish();
            continue;
        }
        rig.st.unlinkat = through_ring;
        for (token, expect) in [(1, Ok(StorageOutput::Removed)), (2, Err(libc::ENOENT))] {
            let path = rig.path.clone();
            let c = rig.call(token, StorageOp::Remove { path });
            assert_eq!(c.token, token);
            match (c.result, expect) {
                (Ok(out), Ok(want)) => assert_eq!(out, want),
                (Err(e), Err(errno)) => assert_eq!(e.errno(), Some(errno), "{e}"),
                (got, want) => panic!("through the ring {through_ring}: {got:?}, want {want:?}"),
            }
            assert!(!rig.path.exists());
        }
        rig.finish();
    }
}
