//! A throw-away directory tree for tests (no external crate).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A temporary directory, removed on drop.
#[derive(Debug)]
pub(crate) struct FakeRoot {
    path: PathBuf,
}

impl FakeRoot {
    pub(crate) fn new(tag: &str) -> FakeRoot {
        let path = std::env::temp_dir().join(format!(
            "topo-test-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        FakeRoot { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `content` at `rel` (relative to the root), creating parents.
    pub(crate) fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.path.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
        self
    }

    /// Creates a directory at `rel`.
    pub(crate) fn mkdir(&self, rel: &str) -> &Self {
        std::fs::create_dir_all(self.path.join(rel.trim_start_matches('/'))).expect("mkdir");
        self
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
