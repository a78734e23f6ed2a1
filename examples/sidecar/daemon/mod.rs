//! The daemon (`sidecar serve`): the pool's plan and its I/O workers,
//! replay of every engine's WAL, then the engine workers (`shards.rs`
//! chooses how many) and the attach thread, which spreads the clients
//! over them. `Daemon::start` returns once the socket listens; `stop` (or
//! drop) ends it, after letting the engines settle what they accepted.

mod attach;
mod claims;
mod engine;
mod files;
mod replay;
mod send;
mod shards;

use crate::dest::{Dest, DestSpec};
use crate::layout;
use crate::resolve::Root;
use claims::Claims;
use replay::Logs;
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
    /// Engines to run (`--engines`); `None`: the plan's choice
    /// (`shards::choose`).
    pub engines: Option<usize>,
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
    engines: Option<WorkerGroup<engine::Engine>>,
    /// How long `stop` waits for the engines to settle.
    settle: Duration,
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
        let root = Root::open(&cfg.root, &wal_dir)?;
        let dests = resolve_dests(&cfg.dests)?;
        // The machine's plan places the engines and the I/O workers (pinned
        // where it pins); each engine ticks every millisecond (retries,
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
        // Placed by the plan without the I/O workers' cores, as
        // `spawn_workers` places them.
        let planned = pool.app_plan().app_workers.len();
        let choice = shards::choose(cfg.engines, planned).map_err(std::io::Error::other)?;
        let logs = replay::replay_all(&io, &root, &wal_dir, choice.count, &dests)?;
        let replay_line = replay_line(&logs, &dests);
        let socket = layout::socket_path(&cfg.name);
        let (listener, poll, waker) = listen(&socket)?;
        let (kick, kicks) = crossbeam_channel::unbounded();
        let common = Common {
            io: io.clone(),
            root,
            segment_limit: cfg.wal_segment_bytes.max(4096),
            dests,
            policy: cfg.policy,
            claims: (choice.count > 1).then(|| Arc::new(Claims::default())),
            kick,
            kick_waker: waker.clone(),
        };
        let starts = engine_starts(&common, logs)?;
        let mut starts: Vec<Option<engine::Start>> = starts.into_iter().map(Some).collect();
        let engines = pool
            .spawn_workers(choice.count, move |i| {
                engine::Engine::new(starts.get_mut(i).and_then(Option::take))
            })
            .map_err(|e| io_err("engine workers", e))?;
        let placement = placement_line(&pool, &io, &engines, choice);
        let stop = Arc::new(AtomicBool::new(false));
        let attacher = attach::Attacher::new(
            poll,
            listener,
            engines.sender(),
            choice.count,
            kicks,
            stop.clone(),
        );
        let attach = std::thread::Builder::new()
            .name("sidecar-attach".into())
            .spawn(move || attacher.run())?;
        let wal_line = if choice.count > 1 {
            format!("{} (engine I>0 in engine-I/)", wal_dir.display())
        } else {
            wal_dir.display().to_string()
        };
        let banner = format!(
            "sidecar {} listening on {} (root {}, WAL {}, {}; {})",
            cfg.name,
            socket.display(),
            cfg.root.display(),
            wal_line,
            replay_line,
            placement,
        );
        Ok(Daemon {
            socket,
            stop,
            waker,
            attach: Some(attach),
            engines: Some(engines),
            settle: cfg.policy.timeout + Duration::from_secs(5),
            io: Some(io),
            banner,
        })
    }

    /// Stops taking clients, lets each engine settle (nothing accepted
    /// outstanding, a durable DONE over it: its WAL then holds no work)
    /// for at most the send bound and 5 s, then stops the engines and the
    /// I/O workers (which finish what is in flight). What an engine did
    /// not settle is replayed by the next start. Whether every engine
    /// settled.
    pub fn stop(&mut self) -> bool {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(j) = self.attach.take() {
            let _ = j.join();
        }
        let mut settled = true;
        if let Some(mut e) = self.engines.take() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let mut asked = 0;
            for i in 0..e.len() {
                if e.send_to_worker(i, engine::Msg::Quiesce(tx.clone()))
                    .is_ok()
                {
                    asked += 1;
                }
            }
            let deadline = std::time::Instant::now() + self.settle;
            let answered = (0..asked)
                .take_while(|_| rx.recv_deadline(deadline).is_ok())
                .count();
            settled = asked == e.len() && answered == asked;
            if settled {
                tracing::info!(
                    engines = answered,
                    "stopped with every engine's WAL settled"
                );
            } else {
                tracing::warn!(
                    engines = e.len(),
                    settled = answered,
                    "stopping with work outstanding: the next start replays it"
                );
            }
            let _ = e.stop_all();
        }
        // The I/O workers finish what is in flight and stop with the last
        // handle (the engines' went with them).
        drop(self.io.take());
        let _ = std::fs::remove_file(&self.socket);
        settled
    }
}

/// The listening socket, registered on a new epoll with its waker.
fn listen(socket: &Path) -> std::io::Result<(mio::net::UnixListener, mio::Poll, Arc<mio::Waker>)> {
    let std_listener = bind(socket)?;
    std_listener.set_nonblocking(true)?;
    let mut listener = mio::net::UnixListener::from_std(std_listener);
    let poll = mio::Poll::new()?;
    poll.registry()
        .register(&mut listener, attach::LISTENER, mio::Interest::READABLE)?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), attach::WAKER)?);
    Ok((listener, poll, waker))
}

/// The start-up line's account of the plan and what the daemon chose.
fn placement_line(
    pool: &WorkerPool,
    io: &IoWorkers,
    engines: &WorkerGroup<engine::Engine>,
    choice: shards::Choice,
) -> String {
    let planned = pool.app_plan().app_workers.len();
    let cpus: Vec<String> = engines
        .placements()
        .iter()
        .map(|p| p.cpu.map_or("unpinned".to_string(), |c| format!("CPU {c}")))
        .collect();
    let backend = match io.storage(0).backend() {
        IoBackendKind::IoUring => "io_uring".to_string(),
        other => format!("{other:?}"),
    };
    format!(
        "plan {:?}: {planned} application worker(s), {} engine(s) ({}) on {}, {} storage and {} network worker(s), on {}",
        pool.plan().profile,
        choice.count,
        choice.reason(planned),
        cpus.join(", "),
        io.storage_count(),
        io.network_count(),
        backend,
    )
}

/// Checks and resolves `--dest`s.
fn resolve_dests(specs: &[DestSpec]) -> std::io::Result<Vec<Dest>> {
    let mut dests = Vec::new();
    for d in specs {
        if dests.iter().any(|x: &Dest| x.name == d.name) {
            return Err(io_err("--dest", format!("{} given twice", d.name)));
        }
        dests.push(d.resolve().map_err(|e| io_err("--dest", e))?);
    }
    Ok(dests)
}

/// What every engine starts with alike.
struct Common {
    io: IoWorkers,
    root: Root,
    segment_limit: u64,
    dests: Vec<Dest>,
    policy: SendPolicy,
    claims: Option<Arc<Claims>>,
    kick: crossbeam_channel::Sender<u64>,
    kick_waker: Arc<mio::Waker>,
}

/// Each engine's start from its replayed log; the files replay left past
/// a log's DONE are claimed for its engine (C1).
fn engine_starts(c: &Common, logs: Logs) -> std::io::Result<Vec<engine::Start>> {
    let mut starts = Vec::with_capacity(logs.engines.len());
    for log in logs.engines {
        let r = log.replayed;
        let mut held = Vec::new();
        if let Some(claims) = &c.claims {
            for (key, lsn) in r.unsettled {
                if let Err(other) = claims.claim(key, log.engine) {
                    return Err(io_err(
                        "replay",
                        format!(
                            "the WALs of engines {other} and {} both hold writes to file {}:{} (device:inode) past their DONE, in no order replay can tell",
                            log.engine, key.dev, key.ino
                        ),
                    ));
                }
                held.push((key, lsn));
            }
        }
        starts.push(engine::Start {
            engine: log.engine,
            io: c.io.clone(),
            root: c.root.try_clone()?,
            segments: r.segments,
            wal_len: r.wal_len,
            wal_dir: log.dir,
            segment_limit: c.segment_limit,
            next_lsn: r.next_lsn,
            next_file: r.next_file,
            done: r.done,
            net: !c.dests.is_empty(),
            dests: c.dests.clone(),
            policy: c.policy,
            sends: log.resend,
            claims: c.claims.clone(),
            held,
            kick: c.kick.clone(),
            kick_waker: c.kick_waker.clone(),
        });
    }
    Ok(starts)
}

/// The start-up line's account of replay and destinations.
fn replay_line(logs: &Logs, dests: &[Dest]) -> String {
    let mut line = format!("replayed {} write(s)", logs.applied);
    if !logs.cuts.is_empty() {
        line += &format!(", log cut: {}", logs.cuts.join("; "));
    }
    if !logs.idle.is_empty() {
        let idle: Vec<String> = logs.idle.iter().map(usize::to_string).collect();
        line += &format!(
            ", WAL of engine(s) {} not running: nothing left in it, kept",
            idle.join(", ")
        );
    }
    let resent: usize = logs.engines.iter().map(|l| l.resend.len()).sum();
    if dests.is_empty() {
        line += ", no destinations";
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
        line += &format!(
            ", destinations {}, {resent} send(s) to deliver again",
            names.join(", ")
        );
    }
    line
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
