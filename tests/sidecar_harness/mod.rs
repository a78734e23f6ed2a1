//! The sidecar tests' harness: a real `sidecar serve` process, its
//! roots and names. Included by `tests/sidecar.rs`,
//! `tests/sidecar_send.rs` and `tests/sidecar_engines.rs`, which include
//! the client's modules at their roots (`crate::client`).

use crate::client::{self, Client};
use crate::common;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A daemon process; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub name: String,
    pub stderr: Arc<Mutex<String>>,
    pub banner: String,
}

impl Daemon {
    pub fn start(name: &str, root: &Path) -> Daemon {
        Daemon::start_with(name, root, &[])
    }

    /// As `start`, with more arguments for `serve` (destinations, say).
    pub fn start_with(name: &str, root: &Path, extra: &[String]) -> Daemon {
        Daemon::start_env(name, root, extra, &[])
    }

    /// As `start_with`, with environment variables for the daemon (the
    /// plan's `SHARED_NOTHING_*` overrides, say).
    pub fn start_env(name: &str, root: &Path, extra: &[String], env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(common::example_bin("sidecar"))
            .args(["serve", "--name", name, "--root"])
            .arg(root)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn,sidecar=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sidecar serve");
        let stderr = common::collect_stderr(&mut child);
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let banner = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.contains("listening on") => l,
            other => {
                let _ = child.kill();
                panic!(
                    "daemon did not start: {other:?}\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        Daemon {
            child,
            name: name.to_owned(),
            stderr,
            banner,
        }
    }

    pub fn attach(&self) -> Client {
        Client::attach(&self.name).expect("attach")
    }

    /// Waits for `needle` in the daemon's log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.stderr.lock().unwrap().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn root(tag: &str) -> (common::TempDir, PathBuf) {
    let d = common::TempDir::new(tag);
    let r = d.0.join("root");
    std::fs::create_dir_all(&r).unwrap();
    (d, r)
}

pub fn status_of<T: std::fmt::Debug>(r: client::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.status())
}
