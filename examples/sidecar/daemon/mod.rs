//! The daemon (`sidecar serve`): replay, then the storage I/O worker, the
//! engine worker and the attach thread. `Daemon::start` returns once the
//! socket listens; `stop` (or drop) ends it.

mod attach;
mod engine;
mod files;
mod replay;
mod send;

use crate::dest::DestSpec;
use crate::layout;
use crate::resolve::Root;
use shared_nothing::io::IoBackendKind;
use shared_nothing::pool::IoWorkers;
use shared_nothing::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What `serve` needs.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub name: String,
    pub root: PathBuf,
    /// The WAL's directory (default: `ROOT/.sidecar-wal`).
    pub wal: Option<PathBuf>,
    /// Bytes past which the WAL starts a new segment (W3).
    pub wal_segment_bytes: u64,
    /// Where clients may send.
    pub dests: Vec<DestSpec>,
    pub policy: SendPolicy,
}

/// How hard sends are tried (`send::Policy`, from the command line).
pub type SendPolicy = send::Policy;

impl SendPolicy {
    /// 8 attempts, 10 s, 2 connections per destination.
    pub fn standard() -> SendPolicy {
        SendPolicy {
            attempts: 8,
            timeout: Duration::from_secs(10),
            pool: 2,
        }
    }
}

#[derive(Debug)]
pub struct Daemon {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    attach: Option<JoinHandle<()>>,
    engine: Option<WorkerGroup<engine::Engine>>,
    /// The plan's I/O workers (stopped when the last clone goes).
    io: Option<IoWorkers>,
    /// The line `serve` prints once it listens.
    pub banner: String,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// Binds `path`, replacing a stale socket but never a live daemon's.
fn bind(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io_err(
                    &path.display().to_string(),
                    "a daemon already listens there",
                ));
            }
            std::fs::remove_file(path)?;
            std::os::unix::net::UnixListener::bind(path)
        }
        Err(e) => Err(e),
    }
}

impl Daemon {
    pub fn start(cfg: &DaemonConfig) -> std::io::Result<Daemon> {
        if !layout::valid_name(&cfg.name) {
            return Err(io_err(
                "--name",
                format!(
                    "{:?}: use 1-64 of [A-Za-z0-9._-], not starting with '.'",
                    cfg.name
                ),
            ));
        }
        std::fs::create_dir_all(&cfg.root)?;
        let wal_dir = cfg
            .wal
            .clone()
            .unwrap_or_else(|| cfg.root.join(".sidecar-wal"));
        std::fs::create_dir_all(&wal_dir)?;
        let mut root = Root::open(&cfg.root, &wal_dir)?;
        let mut dests = Vec::new();
        for d in &cfg.dests {
            if dests.iter().any(|x: &crate::dest::Dest| x.name == d.name) {
                return Err(io_err("--dest", format!("{} given twice", d.name)));
            }
            dests.push(d.resolve().map_err(|e| io_err("--dest", e))?);
        }
        // The machine's plan places the engine and the I/O workers (pinned
        // where it pins); the engine ticks every millisecond (retries,
        // full completion rings).
        let pool = WorkerPool::builder()
            .worker_config(
                WorkerConfig::new()
                    .with_name("sidecar-engine")
                    .with_tick_interval(Duration::from_millis(1)),
            )
            .build_pool()
            .map_err(|e| io_err("plan", e))?;
        let io = pool.start_io().map_err(|e| io_err("I/O workers", e))?;
        let backend = match io.storage(0).backend() {
            IoBackendKind::IoUring => "io_uring".to_string(),
            other => format!("{other:?}"),
        };
        let r = replay::replay(io.storage(0), &mut root, &wal_dir)?;
        // Accepted sends are never dropped for want of a destination: a
        // log that holds sends to one no longer configured is refused.
        let mut sends = Vec::with_capacity(r.sends.len());
        for (lsn, name, data) in r.sends {
            let Some(i) = dests.iter().position(|d| d.name.as_bytes() == name) else {
                return Err(io_err(
                    "replay",
                    format!(
                        "the WAL holds send {lsn} to destination {:?}, which is not configured (pass --dest {}=HOST:PORT)",
                        String::from_utf8_lossy(&name),
                        String::from_utf8_lossy(&name)
                    ),
                ));
            };
            sends.push((lsn, i as u64 + 1, data));
        }
        let resent = sends.len();
        let dest_line = if dests.is_empty() {
            "no destinations".to_string()
        } else {
            let names: Vec<String> = dests
                .iter()
                .map(|d| {
                    format!(
                        "{}={}{}",
                        d.name,
                        d.addr,
                        if d.tls.is_some() { " (TLS)" } else { "" }
                    )
                })
                .collect();
            format!(
                "destinations {}, {resent} send(s) to deliver again",
                names.join(", ")
            )
        };
        let socket = layout::socket_path(&cfg.name);
        let std_listener = bind(&socket)?;
        std_listener.set_nonblocking(true)?;
        let mut listener = mio::net::UnixListener::from_std(std_listener);
        let poll = mio::Poll::new()?;
        poll.registry()
            .register(&mut listener, attach::LISTENER, mio::Interest::READABLE)?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), attach::WAKER)?);
        let (kick, kicks) = crossbeam_channel::unbounded();
        let start = engine::Start {
            io: io.clone(),
            root,
            segments: r.segments,
            wal_len: r.wal_len,
            wal_dir: wal_dir.clone(),
            segment_limit: cfg.wal_segment_bytes.max(4096),
            next_lsn: r.next_lsn,
            next_file: r.next_file,
            done: r.done,
            net: !dests.is_empty(),
            dests,
            policy: cfg.policy,
            sends,
            kick,
            kick_waker: waker.clone(),
        };
        // One engine, whatever the plan offers: sharding clients and files
        // over several engines is not built (the banner says so).
        let start = std::sync::Mutex::new(Some(start));
        let engine = pool
            .spawn_workers(1, move |_| {
                engine::Engine::new(start.lock().ok().and_then(|mut s| s.take()))
            })
            .map_err(|e| io_err("engine worker", e))?;
        let planned = pool.app_plan().app_workers.len();
        let cpu = |c: Option<usize>| c.map_or("unpinned".to_string(), |c| format!("CPU {c}"));
        let placement = format!(
            "plan {:?}: {planned} application worker(s), 1 engine on {} (no sharding over engines yet), {} storage and {} network worker(s), on {}",
            pool.plan().profile,
            cpu(engine.placements()[0].cpu),
            io.storage_count(),
            io.network_count(),
            backend,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let attacher = attach::Attacher {
            poll,
            listener,
            engine: engine.sender(),
            kicks,
            stop: stop.clone(),
        };
        let attach = std::thread::Builder::new()
            .name("sidecar-attach".into())
            .spawn(move || attacher.run())?;
        let banner = format!(
            "sidecar {} listening on {} (root {}, WAL {}, replayed {} write(s){}, {}; {})",
            cfg.name,
            socket.display(),
            cfg.root.display(),
            wal_dir.display(),
            r.applied,
            r.cut.map(|c| format!(", log cut: {c}")).unwrap_or_default(),
            dest_line,
            placement,
        );
        Ok(Daemon {
            socket,
            stop,
            waker,
            attach: Some(attach),
            engine: Some(engine),
            io: Some(io),
            banner,
        })
    }

    /// Stops taking clients, then stops the engine and the storage worker
    /// (which finishes what is in flight). Accepted writes not yet
    /// completed are replayed by the next start.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(j) = self.attach.take() {
            let _ = j.join();
        }
        if let Some(mut e) = self.engine.take() {
            let _ = e.stop_all();
        }
        // The I/O workers finish what is in flight and stop with the last
        // handle (the engine's went with it).
        drop(self.io.take());
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
