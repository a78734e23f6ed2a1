//! What the example apps' end-to-end tests share: building the example
//! binary once into the test's own target directory and profile, and a
//! temporary directory removed on drop. Each test file includes this as
//! `mod common;`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The example binary `name`, built (once per test process and name) with
/// the test's target directory and profile.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, bin)) = built.iter().find(|(n, _)| n == name) {
        return bin.clone();
    }
    // This test is target/<profile>/deps/TEST-HASH.
    let exe = std::env::current_exe().expect("test exe path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target dir");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "--example", name, "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build --example {name} failed");
    let examples = profile_dir.join("examples");
    // A cdylib example is `libNAME.so`.
    let bin = [examples.join(name), examples.join(format!("lib{name}.so"))]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("example {name} not built in {}", examples.display()));
    built.push((name.to_owned(), bin.clone()));
    bin
}

/// A fresh directory path (not created), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "{}-e2e-{tag}-{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Collects `child`'s stderr (piped) line by line, from a thread, into the
/// returned text (for waiting on a log line, and for failure messages).
pub fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().expect("stderr piped");
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().expect("stderr lock");
            s.push_str(&line);
            s.push('\n');
        }
    });
    text
}
