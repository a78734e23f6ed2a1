//! I/O workers against the peers they must beat, in the same run:
//! - 4 KiB random O_DIRECT reads and writes at queue depth 1 and 32: one
//!   storage worker and a thread-per-core worker's own ring vs `std`
//!   pread/pwrite from 1 and 32 threads and fio's io_uring engine (when
//!   fio is installed);
//! - durable 4 KiB appends: group commit vs `std` write + fdatasync per
//!   record;
//! - TCP echo: two thread-per-core application workers (each with its own
//!   network backend, one port by `SO_REUSEPORT`) and a network worker plus
//!   one application worker vs a tokio server on two worker threads,
//!   driven by the same bounded loads (pipelined 16 x 4, and one in flight).
//!
//! `cargo bench --bench io`. Set `SN_BENCH_DIR` to put the test file on
//! another disk (default: `target/`). `SN_IO_EXPERIMENT=echo-tables` runs
//! only the echo tables; `SN_IO_EXPERIMENT=1` (storage) or
//! `=echo` runs only the interleaved worker-variant experiments quoted in
//! docs/benchmarks.md (spin time, registered buffers, pinning). fio's figures for the same block size
//! and depth go beside these in docs/benchmarks.md.

mod support;

use criterion::Criterion;
use shared_nothing::io::{
    AlignedBuf, BlockingStorageClient, Durability, FileId, IoBuf, NetConfig, NetEvent,
    NetEventKind, NetworkWorker, OpenOptions, StorageConfig, StorageOp, StorageWorker,
};
use shared_nothing::partition::RoundRobinPartitioner;
use shared_nothing::prelude::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Latency, Throughput, compare_latency, compare_rates, rate};

const FILE_SIZE: u64 = 256 << 20;
const BLOCK: usize = 4096;

fn bench_dir() -> PathBuf {
    let d = std::env::var_os("SN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-io"));
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

/// A fully written file, so random reads hit real blocks.
fn data_file() -> PathBuf {
    let p = bench_dir().join("random.dat");
    if std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) != FILE_SIZE {
        let f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        for i in 0..(FILE_SIZE >> 20) {
            f.write_all_at(&chunk, i << 20).unwrap();
        }
        f.sync_all().unwrap();
    }
    p
}

struct Rng(u64);
impl Rng {
    fn block(&mut self) -> u64 {
        // xorshift64*: cheap, and the same sequence for every contender.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (FILE_SIZE / BLOCK as u64)) * BLOCK as u64
    }
}

fn aligned_block() -> AlignedBuf {
    let mut b = AlignedBuf::new(BLOCK);
    b.extend_from_slice(&[0x5au8; BLOCK]);
    b
}

/// The next completion, polling first as a busy application worker's loop
/// would (parking on every completion would measure thread wake-ups, not
/// the storage worker).
fn recv_polling(io: &mut BlockingStorageClient) -> shared_nothing::io::StorageCompletion {
    for _ in 0..20_000 {
        if let Some(c) = io.completions().try_recv() {
            return c;
        }
        std::hint::spin_loop();
    }
    io.completions().recv().expect("completion")
}

/// One 4 KiB random read or buffered write of `buf` at `offset`.
fn random_op(file: FileId, offset: u64, buf: IoBuf, write: bool) -> StorageOp {
    if write {
        StorageOp::WriteAt {
            file,
            offset,
            buf,
            durability: Durability::Buffered,
        }
    } else {
        StorageOp::ReadAt {
            file,
            offset,
            len: BLOCK,
            buf,
        }
    }
}

/// Ops/s for `n` random 4 KiB ops at depth `qd` through one storage worker.
fn ours_random(io: &mut BlockingStorageClient, file: FileId, n: u64, qd: u64, write: bool) -> f64 {
    ours_random_with(io, file, n, qd, write, false)
}

/// As [`ours_random`], with registered buffers when `fixed` (falls back to
/// aligned ones if the worker has none free).
fn ours_random_with(
    io: &mut BlockingStorageClient,
    file: FileId,
    n: u64,
    qd: u64,
    write: bool,
    fixed: bool,
) -> f64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut free: Vec<IoBuf> = (0..qd)
        .map(|_| match io.client().fixed_buf().filter(|_| fixed) {
            Some(mut b) => {
                b.extend_from_slice(&[0x5au8; BLOCK]);
                IoBuf::Fixed(b)
            }
            None => IoBuf::Aligned(aligned_block()),
        })
        .collect();
    let start = Instant::now();
    let (mut sent, mut done) = (0u64, 0u64);
    while done < n {
        while sent < n && sent - done < qd {
            let buf = free.pop().expect("one buffer per slot");
            let offset = rng.block();
            let op = random_op(file, offset, buf, write);
            io.client()
                .submit(sent, op)
                .expect("depth is below the client queue");
            sent += 1;
        }
        let c = recv_polling(io);
        c.result.expect("4 KiB O_DIRECT I/O");
        match c.buf {
            Some(IoBuf::Aligned(mut b)) => {
                b.set_len(BLOCK);
                free.push(IoBuf::Aligned(b));
            }
            Some(IoBuf::Fixed(mut b)) => {
                b.set_len(BLOCK);
                free.push(IoBuf::Fixed(b));
            }
            _ => unreachable!("the buffers come back"),
        }
        done += 1;
    }
    rate(n, start.elapsed())
}

/// What the thread-per-core random-I/O worker is asked.
enum LocalIo {
    /// Run `n` random ops at depth `qd`; the reply is the elapsed time.
    Run {
        n: u64,
        qd: u64,
        write: bool,
    },
    Done(shared_nothing::io::StorageCompletion),
}

/// A worker that owns its storage ring (`StorageWorker::start_local`) and
/// keeps `qd` random 4 KiB O_DIRECT ops in flight from its own loop.
struct LocalRandom {
    path: PathBuf,
}

struct LocalRandomState {
    _disk: StorageWorker,
    io: shared_nothing::io::StorageClient,
    file: Option<FileId>,
    rng: Rng,
    run: Option<(
        u64,
        u64,
        u64,
        bool,
        Instant,
        shared_nothing::worker::ReplyTo<Duration>,
    )>,
    free: Vec<IoBuf>,
}

impl LocalRandomState {
    fn submit_one(&mut self, write: bool, token: u64) {
        let (file, buf, offset) = (
            self.file.expect("opened"),
            self.free.pop().expect("one buffer per slot"),
            self.rng.block(),
        );
        let op = random_op(file, offset, buf, write);
        self.io
            .submit(token, op)
            .expect("depth is below the client queue");
    }
}

impl Worker for LocalRandom {
    type State = LocalRandomState;
    type Message = LocalIo;
    type Reply = Duration;
    fn init(&mut self) -> Result<LocalRandomState> {
        let disk = StorageWorker::start_local(0, StorageConfig::new())?;
        let mut io = disk.client(ResultSink::to_current_worker(LocalIo::Done)?)?;
        let file = io
            .open(
                u64::MAX,
                &self.path,
                OpenOptions::new().read(true).write(true).direct(true),
            )
            .map_err(|e| Error::msg(format!("open: {e}")))?;
        Ok(LocalRandomState {
            _disk: disk,
            io,
            file: Some(file),
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            run: None,
            free: (0..64).map(|_| IoBuf::Aligned(aligned_block())).collect(),
        })
    }
    fn handle_message(
        &mut self,
        s: &mut LocalRandomState,
        mut m: Envelope<LocalIo, Duration>,
    ) -> Result<()> {
        match std::mem::replace(
            &mut m.payload,
            LocalIo::Run {
                n: 0,
                qd: 0,
                write: false,
            },
        ) {
            LocalIo::Run { n, qd, write } => {
                let reply = m.take_reply().expect("a request");
                let start = Instant::now();
                let first = n.min(qd);
                for t in 0..first {
                    s.submit_one(write, t);
                }
                s.run = Some((n, first, 0, write, start, reply));
            }
            LocalIo::Done(c) if c.token == u64::MAX => {
                c.result.map_err(|e| Error::msg(format!("open: {e}")))?;
            }
            LocalIo::Done(c) => {
                c.result
                    .map_err(|e| Error::msg(format!("4 KiB O_DIRECT I/O: {e}")))?;
                if let Some(IoBuf::Aligned(mut b)) = c.buf {
                    b.set_len(BLOCK);
                    s.free.push(IoBuf::Aligned(b));
                }
                let Some((n, sent, done, write, start, reply)) = s.run.take() else {
                    return Ok(());
                };
                let done = done + 1;
                let sent = if sent < n {
                    s.submit_one(write, sent);
                    sent + 1
                } else {
                    sent
                };
                if done == n {
                    let _ = reply.send(start.elapsed());
                } else {
                    s.run = Some((n, sent, done, write, start, reply));
                }
            }
        }
        Ok(())
    }
}

/// Ops/s of the thread-per-core worker for `n` random ops at depth `qd`.
fn local_random(
    w: &std::cell::RefCell<shared_nothing::worker::WorkerHandle<LocalIo, Duration>>,
    n: u64,
    qd: u64,
    write: bool,
) -> f64 {
    let d = w
        .borrow_mut()
        .request(LocalIo::Run { n, qd, write })
        .unwrap()
        .wait()
        .unwrap();
    rate(n, d)
}

/// fio's io_uring engine on the same file and job, for 2 s (IOPS), when
/// fio is installed; 0 otherwise (the table then shows it at 0).
fn fio_random(path: &std::path::Path, qd: u64, write: bool) -> f64 {
    let rw = if write { "randwrite" } else { "randread" };
    let out = std::process::Command::new("fio")
        .args([
            "--name=t",
            &format!("--filename={}", path.display()),
            "--size=256M",
            "--bs=4k",
            "--direct=1",
            "--ioengine=io_uring",
            &format!("--rw={rw}"),
            &format!("--iodepth={qd}"),
            "--runtime=2",
            "--time_based",
            "--output-format=json",
        ])
        .output();
    let Ok(out) = out else { return 0.0 };
    let text = String::from_utf8_lossy(&out.stdout);
    // The job's read or write section holds `"iops" : N`.
    let section = if write { "\"write\"" } else { "\"read\"" };
    text.find(section)
        .and_then(|at| {
            let rest = &text[at..];
            let i = rest.find("\"iops\"")?;
            let num: String = rest[i + 6..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            num.parse().ok()
        })
        .unwrap_or(0.0)
}

/// Ops/s for `n` random 4 KiB O_DIRECT ops from `threads` std threads.
fn std_random(path: &PathBuf, n: u64, threads: u64, write: bool) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(path)
                    .unwrap();
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                let mut b = aligned_block();
                for _ in 0..n / threads {
                    let off = rng.block();
                    if write {
                        f.write_all_at(b.as_slice(), off).unwrap();
                    } else {
                        f.read_exact_at(b.as_mut_slice(), off).unwrap();
                    }
                }
            });
        }
    });
    rate(n, start.elapsed())
}

/// Records/s for `n` durable 4 KiB appends with `qd` in flight, group-committed.
fn ours_appends(io: &mut BlockingStorageClient, file: FileId, n: u64, qd: u64) -> f64 {
    let start = Instant::now();
    let (mut sent, mut done) = (0u64, 0u64);
    while done < n {
        while sent < n && sent - done < qd {
            let op = StorageOp::WriteAt {
                file,
                offset: sent * BLOCK as u64,
                buf: vec![0x42u8; BLOCK].into(),
                durability: Durability::GroupCommit,
            };
            io.client()
                .submit(sent, op)
                .expect("depth is below the client queue");
            sent += 1;
        }
        io.completions()
            .recv()
            .unwrap()
            .result
            .expect("durable append");
        done += 1;
    }
    rate(n, start.elapsed())
}

/// Records/s for `n` appends, each `write` + `fdatasync` (what a naive log does).
fn std_appends(path: &PathBuf, n: u64) -> f64 {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    let rec = vec![0x42u8; BLOCK];
    let start = Instant::now();
    for i in 0..n {
        f.write_all_at(&rec, i * BLOCK as u64).unwrap();
        f.sync_data().unwrap();
    }
    rate(n, start.elapsed())
}

// ---- TCP echo ----

struct Echo {
    net: Arc<NetworkWorker>,
}

impl Worker for Echo {
    type State = shared_nothing::io::NetClient;
    type Message = NetEvent;
    type Reply = ();
    fn init(&mut self) -> Result<Self::State> {
        self.net.client(ResultSink::to_current_worker(|e| e)?)
    }
    fn handle_message(&mut self, c: &mut Self::State, m: Envelope<NetEvent>) -> Result<()> {
        let ev = m.payload;
        if let NetEventKind::PeerClosed = ev.kind {
            let _ = c.close(ev.conn);
            return Ok(());
        }
        if let NetEventKind::Data(mut buf) = ev.kind {
            loop {
                match c.send(ev.conn, buf) {
                    Ok(()) => break,
                    Err(e) if e.is_full() => {
                        buf = e.into_inner();
                        std::thread::yield_now();
                    }
                    Err(_) => return Err(Error::Disconnected),
                }
            }
        }
        Ok(())
    }
}

struct OurEcho {
    addr: SocketAddr,
    _app: shared_nothing::worker::WorkerHandle<NetEvent>,
    _net: Arc<NetworkWorker>,
}

fn our_echo(cpus: (usize, usize)) -> OurEcho {
    our_echo_with(cpus, NetConfig::new().spin, true)
}

fn our_echo_with(cpus: (usize, usize), spin: Duration, pin: bool) -> OurEcho {
    let cfg = NetConfig {
        spin,
        ..NetConfig::new().cpu(pin.then_some(cpus.0))
    };
    let net = Arc::new(NetworkWorker::start(0, cfg).unwrap());
    let app = shared_nothing::worker::spawn(
        Echo { net: net.clone() },
        if pin {
            WorkerConfig::new().with_name("echo-app").with_cpu(cpus.1)
        } else {
            WorkerConfig::new().with_name("echo-app")
        },
    )
    .unwrap();
    let sink = ResultSink::to_worker(app.sender(), |e| e);
    let addr = net
        .listen(
            "127.0.0.1:0".parse().unwrap(),
            vec![sink],
            Arc::new(RoundRobinPartitioner::new()),
        )
        .unwrap();
    OurEcho {
        addr,
        _app: app,
        _net: net,
    }
}

/// The thread-per-core echo server: each application worker runs its own
/// network backend (`NetworkWorker::start_local`) on one port shared with
/// `SO_REUSEPORT`, so a connection lives on one core.
struct LocalEcho {
    index: usize,
    bound: Arc<std::sync::OnceLock<SocketAddr>>,
}

impl Worker for LocalEcho {
    type State = (NetworkWorker, shared_nothing::io::NetClient);
    type Message = NetEvent;
    type Reply = ();
    fn init(&mut self) -> Result<Self::State> {
        let net = NetworkWorker::start_local(self.index, NetConfig::new().reuse_port(true))?;
        let addr = *self.bound.get().unwrap_or(&"127.0.0.1:0".parse().unwrap());
        let me = ResultSink::to_current_worker(|e| e)?;
        let local = net.listen(addr, vec![me], Arc::new(RoundRobinPartitioner::new()))?;
        let _ = self.bound.set(local);
        let client = net.client(ResultSink::to_current_worker(|e| e)?)?;
        Ok((net, client))
    }
    fn handle_message(&mut self, s: &mut Self::State, m: Envelope<NetEvent>) -> Result<()> {
        let ev = m.payload;
        match ev.kind {
            NetEventKind::Data(buf) => s.1.send(ev.conn, buf).map_err(|_| Error::Full),
            NetEventKind::PeerClosed => {
                let _ = s.1.close(ev.conn);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

struct OurLocalEcho {
    addr: SocketAddr,
    _apps: Vec<shared_nothing::worker::WorkerHandle<NetEvent>>,
}

fn our_local_echo(cpus: (usize, usize)) -> OurLocalEcho {
    our_local_echo_with(&[cpus.0, cpus.1], WorkerConfig::new())
}

fn our_local_echo_with(cpus: &[usize], config: WorkerConfig) -> OurLocalEcho {
    let bound = Arc::new(std::sync::OnceLock::new());
    let apps = cpus
        .iter()
        .copied()
        .enumerate()
        .map(|(index, cpu)| {
            let w = LocalEcho {
                index,
                bound: bound.clone(),
            };
            let name = format!("echo-local-{index}");
            shared_nothing::worker::spawn(w, config.clone().with_name(name).with_cpu(cpu)).unwrap()
        })
        .collect();
    OurLocalEcho {
        addr: *bound.get().unwrap(),
        _apps: apps,
    }
}

struct TokioEcho {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

fn tokio_echo() -> TokioEcho {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    TokioEcho { addr, _rt: rt }
}

/// monoio's echo server, thread-per-core: one io_uring runtime per CPU of
/// the pair, each pinned, each accepting on its own `SO_REUSEPORT` listener
/// of the same port (the kernel spreads connections between them), each
/// connection echoed with owned buffers by a task on the thread that
/// accepted it. The threads live as long as the process (a bench).
struct MonoioEcho {
    addr: SocketAddr,
}

fn monoio_echo(cpus: (usize, usize)) -> MonoioEcho {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    // Binds inside the runtime (its driver owns the listener), reports the
    // bound address, then accepts until the process ends.
    fn serve(cpu: usize, bind: SocketAddr, bound: std::sync::mpsc::Sender<SocketAddr>) {
        support::pin(cpu);
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .build()
            .expect("monoio io_uring runtime");
        rt.block_on(async move {
            let opts = monoio::net::ListenerOpts::new().reuse_port(true);
            let listener =
                monoio::net::TcpListener::bind_with_config(bind, &opts).expect("monoio listener");
            bound.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let _ = s.set_nodelay(true);
                monoio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let (res, b) = s.read(buf).await;
                        let n = match res {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let (res, b) = s.write_all(monoio::buf::IoBuf::slice(b, 0..n)).await;
                        if res.is_err() {
                            return;
                        }
                        buf = b.into_inner();
                    }
                });
            }
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (first, second) = cpus;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || serve(first, any, tx2));
    let addr = rx.recv().unwrap();
    std::thread::spawn(move || serve(second, addr, tx));
    rx.recv().unwrap();
    MonoioEcho { addr }
}

/// Round trips of a 64-byte message over `conns` connections, at most
/// `per_conn` each and `limit` in total time; fills `hist` (ns) if given.
fn echo_load(
    addr: SocketAddr,
    conns: usize,
    per_conn: u64,
    limit: Duration,
    hist: Option<&mut hdrhistogram::Histogram<u64>>,
) -> f64 {
    let start = Instant::now();
    let lats: Vec<Vec<u64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..conns)
            .map(|_| {
                s.spawn(move || {
                    let mut st = TcpStream::connect(addr).unwrap();
                    st.set_nodelay(true).unwrap();
                    let msg = [7u8; 64];
                    let mut back = [0u8; 64];
                    let mut lat = Vec::with_capacity(per_conn as usize);
                    let deadline = Instant::now() + limit;
                    for _ in 0..per_conn {
                        if Instant::now() > deadline {
                            break;
                        }
                        let t = Instant::now();
                        st.write_all(&msg).unwrap();
                        st.read_exact(&mut back).unwrap();
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    let total: usize = lats.iter().map(Vec::len).sum();
    if let Some(h) = hist {
        for l in lats.iter().flatten() {
            let _ = h.record(*l);
        }
    }
    rate(total as u64, elapsed)
}

/// Round trips of 64-byte messages over `conns` connections with `depth`
/// in flight on each (written back to back, then read back), at most
/// `rounds` rounds per connection and `limit` in total time.
fn echo_load_pipelined(
    addr: SocketAddr,
    conns: usize,
    depth: usize,
    rounds: u64,
    limit: Duration,
) -> f64 {
    let start = Instant::now();
    let done: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..conns)
            .map(|_| {
                s.spawn(move || {
                    let mut st = TcpStream::connect(addr).unwrap();
                    st.set_nodelay(true).unwrap();
                    let msg = vec![7u8; 64 * depth];
                    let mut back = vec![0u8; 64 * depth];
                    let deadline = Instant::now() + limit;
                    let mut n = 0;
                    for _ in 0..rounds {
                        if Instant::now() > deadline {
                            break;
                        }
                        for m in msg.chunks(64) {
                            st.write_all(m).unwrap();
                        }
                        st.read_exact(&mut back).unwrap();
                        n += depth as u64;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    rate(done.iter().sum(), start.elapsed())
}

/// `SN_IO_EXPERIMENT=1`: QD32 reads through worker variants, interleaved.
fn experiment(path: &PathBuf) {
    let mk = |spin_us: u64| {
        let cfg = StorageConfig {
            spin: Duration::from_micros(spin_us),
            ..StorageConfig::new()
        };
        let w = StorageWorker::start(0, cfg).unwrap();
        let mut io = w.blocking_client().unwrap();
        let f = io
            .open(path, OpenOptions::new().read(true).write(true).direct(true))
            .unwrap();
        (w, std::cell::RefCell::new(io), f)
    };
    let (_w1, io1, f1) = mk(50);
    let (_w2, io2, f2) = mk(0);
    let (_w3, io3, f3) = mk(1000);
    const N: u64 = 40_000;
    compare_rates(
        "experiment: 4 KiB random read QD32, worker variants",
        "kIOPS",
        1e3,
        vec![
            Throughput {
                name: "spin 50us",
                run: Box::new(|| ours_random(&mut io1.borrow_mut(), f1, N, 32, false)),
            },
            Throughput {
                name: "spin 50us, registered buffers",
                run: Box::new(|| ours_random_with(&mut io1.borrow_mut(), f1, N, 32, false, true)),
            },
            Throughput {
                name: "spin 0",
                run: Box::new(|| ours_random(&mut io2.borrow_mut(), f2, N, 32, false)),
            },
            Throughput {
                name: "spin 1ms",
                run: Box::new(|| ours_random(&mut io3.borrow_mut(), f3, N, 32, false)),
            },
            Throughput {
                name: "std 32 threads",
                run: Box::new(|| std_random(path, N, 32, false)),
            },
        ],
    );
}

/// `SN_IO_EXPERIMENT=append`: small buffered appends at one in flight (the
/// broker's `--fsync never` case): io_uring worker, fallback worker, std.
fn append_experiment() {
    let dir = bench_dir();
    let mk = |choice: shared_nothing::io::BackendChoice, name: &str| {
        let w = StorageWorker::start(0, StorageConfig::new().backend(choice)).unwrap();
        let mut io = w.blocking_client().unwrap();
        let f = io
            .open(
                dir.join(name),
                OpenOptions::read_write_create().truncate(true),
            )
            .unwrap();
        (w, std::cell::RefCell::new(io), f)
    };
    let (_u, iou, fu) = mk(shared_nothing::io::BackendChoice::Auto, "app-uring.log");
    let (_b, iob, fb) = mk(shared_nothing::io::BackendChoice::Fallback, "app-fb.log");
    const N: u64 = 20_000;
    let run = |io: &std::cell::RefCell<BlockingStorageClient>, f: FileId| {
        let mut io = io.borrow_mut();
        let start = Instant::now();
        for i in 0..N {
            let op = StorageOp::WriteAt {
                file: f,
                offset: i * 100,
                buf: vec![1u8; 100].into(),
                durability: Durability::Buffered,
            };
            io.client().submit(i, op).unwrap();
            recv_polling(&mut io).result.unwrap();
        }
        rate(N, start.elapsed())
    };
    let std_path = dir.join("app-std.log");
    compare_rates(
        "experiment: 100-byte buffered appends, one in flight",
        "k writes/s",
        1e3,
        vec![
            Throughput {
                name: "storage worker, io_uring",
                run: Box::new(|| run(&iou, fu)),
            },
            Throughput {
                name: "storage worker, fallback",
                run: Box::new(|| run(&iob, fb)),
            },
            Throughput {
                name: "std pwrite, same thread",
                run: Box::new(|| {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&std_path)
                        .unwrap();
                    let start = Instant::now();
                    for i in 0..N {
                        f.write_all_at(&[1u8; 100], i * 100).unwrap();
                    }
                    rate(N, start.elapsed())
                }),
            },
        ],
    );
}

/// `SN_IO_EXPERIMENT=wake`: latency of one small buffered write to a storage
/// worker that has gone to sleep (requests 300 us apart), per backend.
fn wake_experiment() {
    let dir = bench_dir();
    let mk = |choice: shared_nothing::io::BackendChoice, name: &str| {
        let w = StorageWorker::start(0, StorageConfig::new().backend(choice)).unwrap();
        let mut io = w.blocking_client().unwrap();
        let f = io
            .open(
                dir.join(name),
                OpenOptions::read_write_create().truncate(true),
            )
            .unwrap();
        (w, std::cell::RefCell::new(io), f)
    };
    let (_u, iou, fu) = mk(shared_nothing::io::BackendChoice::Auto, "wake-uring.log");
    let (_b, iob, fb) = mk(shared_nothing::io::BackendChoice::Fallback, "wake-fb.log");
    let run = |io: &std::cell::RefCell<BlockingStorageClient>,
               f: FileId,
               h: &mut hdrhistogram::Histogram<u64>| {
        let mut io = io.borrow_mut();
        for i in 0..300u64 {
            std::thread::sleep(Duration::from_micros(300));
            let t = Instant::now();
            let op = StorageOp::WriteAt {
                file: f,
                offset: i * 100,
                buf: vec![1u8; 100].into(),
                durability: Durability::Buffered,
            };
            io.client().submit(i, op).unwrap();
            recv_polling(&mut io).result.unwrap();
            let _ = h.record(t.elapsed().as_nanos() as u64);
        }
    };
    compare_latency(
        "experiment: one 100-byte write to a sleeping storage worker",
        vec![
            Latency {
                name: "io_uring worker",
                run: Box::new(|h| run(&iou, fu, h)),
            },
            Latency {
                name: "fallback worker",
                run: Box::new(|h| run(&iob, fb, h)),
            },
        ],
    );
}

/// `SN_IO_EXPERIMENT=tpc`: thread-per-core variants, one connection.
fn tpc_experiment() {
    let cpus = support::cpu_pair();
    let a = our_local_echo(cpus);
    let c = our_local_echo_with(
        &[cpus.0, cpus.1],
        WorkerConfig::new().with_spin_iterations(0),
    );
    let d = our_local_echo_with(
        &[cpus.0, cpus.1],
        WorkerConfig::new().with_idle_strategy(shared_nothing::worker::IdleStrategy::SpinThenYield),
    );
    let limit = Duration::from_secs(10);
    let mono = monoio_echo(cpus);
    let variants: [(&str, SocketAddr); 4] = [
        ("2 workers, default", a.addr),
        ("monoio", mono.addr),
        ("2 workers, no spin", c.addr),
        ("2 workers, spin then yield", d.addr),
    ];
    let e = our_local_echo_with(
        &[cpus.0, cpus.1],
        WorkerConfig::new().with_spin_iterations(200),
    );
    compare_rates(
        "experiment: thread-per-core echo, 16 connections x 4 in flight",
        "k round trips/s",
        1e3,
        [
            ("2 workers, default (2,000 spins)", a.addr),
            ("2 workers, no spin", c.addr),
            ("2 workers, 200 spins", e.addr),
            ("2 workers, spin then yield", d.addr),
            ("monoio", mono.addr),
        ]
        .into_iter()
        .map(|(name, addr)| Throughput {
            name,
            run: Box::new(move || echo_load_pipelined(addr, 16, 4, 500, limit)),
        })
        .collect(),
    );
    compare_latency(
        "experiment: thread-per-core echo round trip, 1 connection",
        variants
            .iter()
            .map(|&(name, addr)| Latency {
                name,
                run: Box::new(move |h| {
                    echo_load(addr, 1, 2000, limit, Some(h));
                }),
            })
            .collect(),
    );
}

/// `SN_IO_EXPERIMENT=echo`: echo server variants, interleaved.
fn echo_experiment() {
    let cpus = support::cpu_pair();
    let a = our_echo(cpus);
    let b = our_echo_with(cpus, Duration::ZERO, true);
    let c = our_echo_with(cpus, Duration::ZERO, false);
    let peer = tokio_echo();
    let limit = Duration::from_secs(10);
    compare_rates(
        "experiment: echo 8 connections, variants",
        "k round trips/s",
        1e3,
        vec![
            Throughput {
                name: "spin 50us, pinned",
                run: Box::new(|| echo_load(a.addr, 8, 2000, limit, None)),
            },
            Throughput {
                name: "spin 0, pinned",
                run: Box::new(|| echo_load(b.addr, 8, 2000, limit, None)),
            },
            Throughput {
                name: "spin 0, unpinned",
                run: Box::new(|| echo_load(c.addr, 8, 2000, limit, None)),
            },
            Throughput {
                name: "tokio",
                run: Box::new(|| echo_load(peer.addr, 8, 2000, limit, None)),
            },
        ],
    );
}

fn tables() {
    let path = data_file();
    match std::env::var("SN_IO_EXPERIMENT").as_deref() {
        Ok("echo") => return echo_experiment(),
        Ok("echo-tables") => return echo_tables(),
        Ok("tpc") => return tpc_experiment(),
        Ok("append") => return append_experiment(),
        Ok("wake") => return wake_experiment(),
        Ok(_) => return experiment(&path),
        Err(_) => {}
    }
    let worker = StorageWorker::start(0, StorageConfig::new()).unwrap();
    println!("\nstorage worker backend: {}", worker.backend());
    let mut io = worker.blocking_client().unwrap();
    let file = io
        .open(
            &path,
            OpenOptions::new().read(true).write(true).direct(true),
        )
        .unwrap();
    // The thread-per-core worker on the CPU the bench's client does not
    // poll from (the storage worker floats, as `start` places it).
    let (_, b) = support::cpu_pair();
    let tpc = std::cell::RefCell::new(
        shared_nothing::worker::spawn(
            LocalRandom { path: path.clone() },
            WorkerConfig::new().with_name("io-tpc").with_cpu(b),
        )
        .unwrap(),
    );
    const N1: u64 = 5_000;
    const N32: u64 = 40_000;
    for write in [false, true] {
        let what = if write { "write" } else { "read" };
        let io = std::cell::RefCell::new(&mut io);
        compare_rates(
            &format!("4 KiB random {what}, O_DIRECT, queue depth 1"),
            "kIOPS",
            1e3,
            vec![
                Throughput {
                    name: "storage worker, QD1",
                    run: Box::new(|| ours_random(&mut io.borrow_mut(), file, N1, 1, write)),
                },
                Throughput {
                    name: "thread-per-core: the worker's own ring, QD1",
                    run: Box::new(|| local_random(&tpc, N1, 1, write)),
                },
                Throughput {
                    name: "fio io_uring, QD1 (2 s)",
                    run: Box::new(|| fio_random(&path, 1, write)),
                },
                Throughput {
                    name: "std pread/pwrite, 1 thread",
                    run: Box::new(|| std_random(&path, N1, 1, write)),
                },
            ],
        );
        compare_rates(
            &format!("4 KiB random {what}, O_DIRECT, queue depth 32"),
            "kIOPS",
            1e3,
            vec![
                Throughput {
                    name: "storage worker (1 thread), QD32",
                    run: Box::new(|| ours_random(&mut io.borrow_mut(), file, N32, 32, write)),
                },
                Throughput {
                    name: "thread-per-core: the worker's own ring, QD32",
                    run: Box::new(|| local_random(&tpc, N32, 32, write)),
                },
                Throughput {
                    name: "fio io_uring, QD32 (2 s)",
                    run: Box::new(|| fio_random(&path, 32, write)),
                },
                Throughput {
                    name: "std pread/pwrite, 1 thread",
                    run: Box::new(|| std_random(&path, N32 / 8, 1, write)),
                },
                Throughput {
                    name: "std pread/pwrite, 32 threads",
                    run: Box::new(|| std_random(&path, N32, 32, write)),
                },
            ],
        );
    }
    let log = bench_dir().join("appends.log");
    let std_log = bench_dir().join("appends-std.log");
    let log_file = io.open(&log, OpenOptions::read_write_create()).unwrap();
    const APPENDS: u64 = 2_000;
    let io = std::cell::RefCell::new(&mut io);
    compare_rates(
        "Durable 4 KiB appends (acknowledged only once on disk)",
        "k records/s",
        1e3,
        vec![
            Throughput {
                name: "storage worker, group commit, 64 in flight",
                run: Box::new(|| ours_appends(&mut io.borrow_mut(), log_file, APPENDS, 64)),
            },
            Throughput {
                name: "storage worker, group commit, 8 in flight",
                run: Box::new(|| ours_appends(&mut io.borrow_mut(), log_file, APPENDS, 8)),
            },
            Throughput {
                name: "std write + fdatasync per record",
                run: Box::new(|| std_appends(&std_log, APPENDS / 4)),
            },
        ],
    );

    echo_tables();
}

/// The echo server three ways on the same two CPUs: a dedicated network
/// worker plus one application worker, two thread-per-core workers, and
/// tokio with two worker threads.
fn echo_tables() {
    let cpus = support::cpu_pair();
    let ours = our_echo(cpus);
    let tpc = our_local_echo(cpus);
    let peer = tokio_echo();
    let mono = monoio_echo(cpus);
    const PER_CONN: u64 = 2_000;
    let limit = Duration::from_secs(10);
    compare_rates(
        "TCP echo, 64-byte messages, 16 connections x 4 in flight (server on 2 threads)",
        "k round trips/s",
        1e3,
        vec![
            Throughput {
                name: "thread-per-core, 2 application workers",
                run: Box::new(|| echo_load_pipelined(tpc.addr, 16, 4, PER_CONN / 4, limit)),
            },
            Throughput {
                name: "network worker + 1 application worker",
                run: Box::new(|| echo_load_pipelined(ours.addr, 16, 4, PER_CONN / 4, limit)),
            },
            Throughput {
                name: "tokio, 2 worker threads",
                run: Box::new(|| echo_load_pipelined(peer.addr, 16, 4, PER_CONN / 4, limit)),
            },
            Throughput {
                name: "monoio, 2 threads (thread-per-core)",
                run: Box::new(|| echo_load_pipelined(mono.addr, 16, 4, PER_CONN / 4, limit)),
            },
        ],
    );
    compare_rates(
        "TCP echo, 64-byte round trips over 8 connections (server on 2 threads)",
        "k round trips/s",
        1e3,
        vec![
            Throughput {
                name: "thread-per-core, 2 application workers",
                run: Box::new(|| echo_load(tpc.addr, 8, PER_CONN, limit, None)),
            },
            Throughput {
                name: "network worker + 1 application worker",
                run: Box::new(|| echo_load(ours.addr, 8, PER_CONN, limit, None)),
            },
            Throughput {
                name: "tokio, 2 worker threads",
                run: Box::new(|| echo_load(peer.addr, 8, PER_CONN, limit, None)),
            },
            Throughput {
                name: "monoio, 2 threads (thread-per-core)",
                run: Box::new(|| echo_load(mono.addr, 8, PER_CONN, limit, None)),
            },
        ],
    );
    compare_latency(
        "TCP echo round trip, 64 bytes, 1 connection",
        vec![
            Latency {
                name: "thread-per-core, 2 application workers",
                run: Box::new(|h| {
                    echo_load(tpc.addr, 1, PER_CONN, limit, Some(h));
                }),
            },
            Latency {
                name: "network worker + 1 application worker",
                run: Box::new(|h| {
                    echo_load(ours.addr, 1, PER_CONN, limit, Some(h));
                }),
            },
            Latency {
                name: "tokio, 2 worker threads",
                run: Box::new(|h| {
                    echo_load(peer.addr, 1, PER_CONN, limit, Some(h));
                }),
            },
            Latency {
                name: "monoio, 2 threads (thread-per-core)",
                run: Box::new(|h| {
                    echo_load(mono.addr, 1, PER_CONN, limit, Some(h));
                }),
            },
        ],
    );
    compare_latency(
        "TCP echo round trip, 64 bytes, 8 connections",
        vec![
            Latency {
                name: "thread-per-core, 2 application workers",
                run: Box::new(|h| {
                    echo_load(tpc.addr, 8, PER_CONN / 4, limit, Some(h));
                }),
            },
            Latency {
                name: "network worker + 1 application worker",
                run: Box::new(|h| {
                    echo_load(ours.addr, 8, PER_CONN / 4, limit, Some(h));
                }),
            },
            Latency {
                name: "tokio, 2 worker threads",
                run: Box::new(|h| {
                    echo_load(peer.addr, 8, PER_CONN / 4, limit, Some(h));
                }),
            },
            Latency {
                name: "monoio, 2 threads (thread-per-core)",
                run: Box::new(|h| {
                    echo_load(mono.addr, 8, PER_CONN / 4, limit, Some(h));
                }),
            },
        ],
    );
}

fn criterion_groups(c: &mut Criterion) {
    let path = data_file();
    let worker = StorageWorker::start(0, StorageConfig::new()).unwrap();
    let mut io = worker.blocking_client().unwrap();
    let file = io
        .open(
            &path,
            OpenOptions::new().read(true).write(true).direct(true),
        )
        .unwrap();
    let mut g = c.benchmark_group("random_read_4k_qd32");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(criterion::Throughput::Elements(1024));
    g.bench_function("storage worker", |b| {
        b.iter_custom(|iters| {
            Duration::from_secs_f64(
                (iters * 1024) as f64 / ours_random(&mut io, file, iters * 1024, 32, false),
            )
        })
    });
    g.bench_function("std 32 threads", |b| {
        b.iter_custom(|iters| {
            Duration::from_secs_f64(
                (iters * 1024) as f64 / std_random(&path, iters * 1024, 32, false),
            )
        })
    });
    g.finish();
}

fn main() {
    support::run(tables, criterion_groups);
}
