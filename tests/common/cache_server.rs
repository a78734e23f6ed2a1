//! The `cache` example's server as a child process for the end-to-end
//! tests (`tests/cache.rs`, `tests/cache_sdk.rs`, which include this
//! with `#[path]`): real TCP on 127.0.0.1 (port 0), its SDK socket in a
//! temporary directory, three application workers
//! (`SHARED_NOTHING_APP_WORKERS=3`) so most keys are owned by a worker
//! other than the connection's. Killed on drop (SIGKILL: the disk tier's
//! restart tests rely on it being `kill -9`).

use super::client::Client;
use super::common::{TempDir, collect_stderr, example_bin};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

/// Socket timeouts of the tests' clients.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Its SDK socket (under `dir`).
    pub unix: PathBuf,
    /// Removed on drop, after the server is killed.
    _dir: TempDir,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Server::start_env(extra, &[])
    }

    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = TempDir::new("cache");
        let unix = dir.0.join("run").join("elcache.sock");
        let mut cmd = Command::new(example_bin("cache"));
        cmd.envs(env.iter().copied());
        // 64 MiB unless the test sets the memory tier itself.
        let memory: &[&str] = if extra.contains(&"-m") {
            &[]
        } else {
            &["-m", "64"]
        };
        let mut child = cmd
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(memory)
            .arg("-u")
            .arg(&unix)
            .args(extra)
            .env("SHARED_NOTHING_APP_WORKERS", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cache");
        let stderr = collect_stderr(&mut child);
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().expect("address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no address; stderr:\n{}", stderr.lock().expect("lock"));
            }
        };
        Server {
            child,
            addr,
            unix,
            _dir: dir,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr, TIMEOUT).expect("connect")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` pseudo-random bytes (xorshift32 from `seed`): test values.
pub fn value(n: usize, seed: u32) -> Vec<u8> {
    let mut x = 0x9E37_79B9u32 ^ seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
