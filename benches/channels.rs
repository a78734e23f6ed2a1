//! Channel benchmarks: this crate's SPSC ring against rtrb, crossbeam-channel,
//! flume, kanal and std's sync_channel; MPSC/MPMC against crossbeam and flume.
//!
//! `cargo bench --bench channels` prints interleaved comparison tables
//! (medians and ratios, the figures quoted in docs/benchmarks.md), then runs
//! the criterion groups. Producer and consumer are pinned to two CPUs.

mod support;

use criterion::{Criterion, Throughput as CThroughput};
use shared_nothing::channel::{Channel, spsc};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use support::{Latency, Throughput, compare_latency, compare_throughput, cpu_pair, pin, rate};

const CAP: usize = 1024;
const CHUNK: u64 = 64;

/// A non-blocking SPSC queue of u64, as every contender exposes one.
trait Queue: Send + 'static {
    type Tx: Send + 'static;
    type Rx: Send + 'static;
    fn make(cap: usize) -> (Self::Tx, Self::Rx);
    fn try_send(tx: &mut Self::Tx, v: u64) -> bool;
    fn try_recv(rx: &mut Self::Rx) -> Option<u64>;
}

struct Ours;
impl Queue for Ours {
    type Tx = spsc::Sender<u64>;
    type Rx = spsc::Receiver<u64>;
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        Channel::spsc(cap)
    }
    #[inline]
    fn try_send(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_send(v).is_ok()
    }
    #[inline]
    fn try_recv(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_recv().ok()
    }
}

struct Rtrb;
impl Queue for Rtrb {
    type Tx = rtrb::Producer<u64>;
    type Rx = rtrb::Consumer<u64>;
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(cap)
    }
    #[inline]
    fn try_send(tx: &mut Self::Tx, v: u64) -> bool {
        tx.push(v).is_ok()
    }
    #[inline]
    fn try_recv(rx: &mut Self::Rx) -> Option<u64> {
        rx.pop().ok()
    }
}

struct Crossbeam;
impl Queue for Crossbeam {
    type Tx = crossbeam_channel::Sender<u64>;
    type Rx = crossbeam_channel::Receiver<u64>;
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        crossbeam_channel::bounded(cap)
    }
    #[inline]
    fn try_send(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_send(v).is_ok()
    }
    #[inline]
    fn try_recv(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_recv().ok()
    }
}

struct Flume;
impl Queue for Flume {
    type Tx = flume::Sender<u64>;
    type Rx = flume::Receiver<u64>;
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        flume::bounded(cap)
    }
    #[inline]
    fn try_send(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_send(v).is_ok()
    }
    #[inline]
    fn try_recv(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_recv().ok()
    }
}

struct Kanal;
impl Queue for Kanal {
    type Tx = kanal::Sender<u64>;
    type Rx = kanal::Receiver<u64>;
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        kanal::bounded(cap)
    }
    #[inline]
    fn try_send(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_send(v).unwrap_or(false)
    }
    #[inline]
    fn try_recv(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_recv().ok().flatten()
    }
}

struct Std;
impl Queue for Std {
    type Tx = std::sync::mpsc::SyncSender<u64>;
    type Rx = std::sync::mpsc::Receiver<u64>;
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        std::sync::mpsc::sync_channel(cap)
    }
    #[inline]
    fn try_send(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_send(v).is_ok()
    }
    #[inline]
    fn try_recv(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_recv().ok()
    }
}

/// Moves `n` values from a pinned producer thread to a pinned consumer
/// thread; `send(tx, next, n)` sends some values starting at `next` and
/// returns how many, `recv(rx, sum)` takes some and returns how many.
/// Returns messages per second, from the start signal to the last receive.
fn pipe<Tx, Rx>(
    n: u64,
    tx: Tx,
    rx: Rx,
    mut send: impl FnMut(&mut Tx, u64, u64) -> u64 + Send + 'static,
    mut recv: impl FnMut(&mut Rx, &mut u64) -> u64 + Send + 'static,
) -> f64
where
    Tx: Send + 'static,
    Rx: Send + 'static,
{
    let (a, b) = cpu_pair();
    let start = Arc::new(Barrier::new(2));
    let s2 = start.clone();
    let consumer = thread::spawn(move || {
        pin(b);
        let mut rx = rx;
        s2.wait();
        let (mut got, mut sum) = (0, 0u64);
        while got < n {
            let k = recv(&mut rx, &mut sum);
            if k == 0 {
                std::hint::spin_loop();
            }
            got += k;
        }
        assert_eq!(sum, n * (n - 1) / 2, "lost or corrupted messages");
        Instant::now()
    });
    let producer = thread::spawn(move || {
        pin(a);
        let mut tx = tx;
        start.wait();
        let t0 = Instant::now();
        let mut next = 0;
        while next < n {
            let k = send(&mut tx, next, n);
            if k == 0 {
                std::hint::spin_loop();
            }
            next += k;
        }
        (t0, tx)
    });
    let (t0, _tx) = producer.join().unwrap();
    let t1 = consumer.join().unwrap();
    rate(n, t1 - t0)
}

fn single<Q: Queue>(n: u64) -> f64 {
    let (tx, rx) = Q::make(CAP);
    pipe(
        n,
        tx,
        rx,
        |tx, v, _| Q::try_send(tx, v) as u64,
        |rx, sum| match Q::try_recv(rx) {
            Some(v) => {
                *sum += v;
                1
            }
            None => 0,
        },
    )
}

/// The API users call: `send` and `recv` with default settings (spin,
/// then yield, then park), one message at a time.
fn ours_default(n: u64) -> f64 {
    let (tx, rx) = Channel::spsc::<u64>(CAP);
    pipe(
        n,
        tx,
        rx,
        |tx, v, _| {
            tx.send(v).unwrap();
            1
        },
        |rx, sum| {
            *sum += rx.recv().unwrap();
            1
        },
    )
}

fn ours_batched(n: u64) -> f64 {
    let (tx, rx) = Channel::spsc::<u64>(CAP);
    pipe(
        n,
        tx,
        rx,
        |tx, next, n| tx.try_send_iter(&mut (next..n.min(next + CHUNK))).unwrap() as u64,
        |rx, sum| {
            let mut k = 0;
            for v in rx.drain(CHUNK as usize) {
                *sum += v;
                k += 1;
            }
            k
        },
    )
}

fn rtrb_batched(n: u64) -> f64 {
    let (tx, rx) = rtrb::RingBuffer::<u64>::new(CAP);
    pipe(
        n,
        tx,
        rx,
        |tx, next, n| {
            let k = tx.slots().min(CHUNK as usize).min((n - next) as usize);
            if k == 0 {
                return 0;
            }
            tx.write_chunk_uninit(k).unwrap().fill_from_iter(next..) as u64
        },
        |rx, sum| {
            let k = rx.slots().min(CHUNK as usize);
            if k == 0 {
                return 0;
            }
            let chunk = rx.read_chunk(k).unwrap();
            for v in chunk.into_iter() {
                *sum += v;
            }
            k as u64
        },
    )
}

/// Ping-pong: a pinned pinger sends a value and spins until the pinned
/// ponger echoes it back; records each round trip.
fn pingpong<Q: Queue>(rtts: u64, h: &mut hdrhistogram::Histogram<u64>) {
    let (a, b) = cpu_pair();
    let (mut tx_ab, mut rx_ab) = Q::make(CAP);
    let (mut tx_ba, mut rx_ba) = Q::make(CAP);
    let warm = 1_000;
    let ponger = thread::spawn(move || {
        pin(b);
        for _ in 0..warm + rtts {
            let v = loop {
                if let Some(v) = Q::try_recv(&mut rx_ab) {
                    break v;
                }
                std::hint::spin_loop();
            };
            while !Q::try_send(&mut tx_ba, v) {
                std::hint::spin_loop();
            }
        }
    });
    let hist = thread::spawn(move || {
        pin(a);
        let mut h = support::histogram();
        for i in 0..warm + rtts {
            let t0 = Instant::now();
            while !Q::try_send(&mut tx_ab, i) {
                std::hint::spin_loop();
            }
            loop {
                if Q::try_recv(&mut rx_ba).is_some() {
                    break;
                }
                std::hint::spin_loop();
            }
            if i >= warm {
                h.record(t0.elapsed().as_nanos() as u64).unwrap();
            }
        }
        h
    })
    .join()
    .unwrap();
    ponger.join().unwrap();
    h.add(hist).unwrap();
}

/// Ping-pong through our SPSC channel with blocking `recv` (spin, then
/// park): what a worker pays when it is allowed to sleep.
fn pingpong_ours_blocking(rtts: u64, h: &mut hdrhistogram::Histogram<u64>) {
    let (a, b) = cpu_pair();
    let (mut tx_ab, mut rx_ab) = Channel::spsc::<u64>(CAP);
    let (mut tx_ba, mut rx_ba) = Channel::spsc::<u64>(CAP);
    let ponger = thread::spawn(move || {
        pin(b);
        while let Ok(v) = rx_ab.recv() {
            if tx_ba.send(v).is_err() {
                break;
            }
        }
    });
    let hist = thread::spawn(move || {
        pin(a);
        let mut h = support::histogram();
        for i in 0..1_000 + rtts {
            let t0 = Instant::now();
            tx_ab.send(i).unwrap();
            rx_ba.recv().unwrap();
            if i >= 1_000 {
                h.record(t0.elapsed().as_nanos() as u64).unwrap();
            }
        }
        h
    })
    .join()
    .unwrap();
    ponger.join().unwrap();
    h.add(hist).unwrap();
}

/// The hardware floor: one cache-line flag per direction, busy-polled.
fn pingpong_mailbox(rtts: u64, h: &mut hdrhistogram::Histogram<u64>) {
    use crossbeam_utils::CachePadded;
    use std::sync::atomic::{AtomicU64, Ordering};
    let (a, b) = cpu_pair();
    let flags = Arc::new((
        CachePadded::new(AtomicU64::new(0)),
        CachePadded::new(AtomicU64::new(0)),
    ));
    let f2 = flags.clone();
    let total = 1_000 + rtts;
    let ponger = thread::spawn(move || {
        pin(b);
        for i in 1..=total {
            while f2.0.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            f2.1.store(i, Ordering::Release);
        }
    });
    let hist = thread::spawn(move || {
        pin(a);
        let mut h = support::histogram();
        for i in 1..=total {
            let t0 = Instant::now();
            flags.0.store(i, Ordering::Release);
            while flags.1.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            if i > 1_000 {
                h.record(t0.elapsed().as_nanos() as u64).unwrap();
            }
        }
        h
    })
    .join()
    .unwrap();
    ponger.join().unwrap();
    h.add(hist).unwrap();
}

/// `producers` threads send `n` values in total through a multi-producer
/// channel to `consumers` threads, all with blocking calls (the threads
/// outnumber the cores, so nobody may spin).
fn multi<Tx, Rx>(
    n: u64,
    producers: u64,
    consumers: u64,
    (tx, rx): (Tx, Rx),
    send: fn(&Tx, u64),
    recv: fn(&Rx) -> Option<u64>,
) -> f64
where
    Tx: Clone + Send + 'static,
    Rx: Clone + Send + 'static,
{
    let per = n / producers;
    let t0 = Instant::now();
    let ps: Vec<_> = (0..producers)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..per {
                    send(&tx, p * per + i);
                }
            })
        })
        .collect();
    drop(tx);
    let cs: Vec<_> = (0..consumers)
        .map(|_| {
            let rx = rx.clone();
            thread::spawn(move || {
                let mut sum = 0u64;
                while let Some(v) = recv(&rx) {
                    sum += v;
                }
                sum
            })
        })
        .collect();
    drop(rx);
    ps.into_iter().for_each(|t| t.join().unwrap());
    let sum: u64 = cs.into_iter().map(|t| t.join().unwrap()).sum();
    let total = per * producers;
    assert_eq!(sum, total * (total - 1) / 2);
    rate(total, t0.elapsed())
}

fn ours_mpsc(n: u64) -> f64 {
    let (tx, rx) = Channel::mpsc::<u64>(CAP);
    // The MPSC receiver is not Clone (by design); wrap it for the harness.
    let rx = Arc::new(rx);
    multi(
        n,
        2,
        1,
        (tx, rx),
        |tx, v| tx.send(v).unwrap(),
        |rx| rx.recv().ok(),
    )
}

fn ours_mpmc(n: u64) -> f64 {
    multi(
        n,
        2,
        2,
        Channel::mpmc::<u64>(CAP),
        |tx, v| tx.send(v).unwrap(),
        |rx| rx.recv().ok(),
    )
}

fn crossbeam_multi(n: u64, consumers: u64) -> f64 {
    let ch = crossbeam_channel::bounded::<u64>(CAP);
    multi(
        n,
        2,
        consumers,
        ch,
        |tx, v| tx.send(v).unwrap(),
        |rx| rx.recv().ok(),
    )
}

fn flume_multi(n: u64, consumers: u64) -> f64 {
    let ch = flume::bounded::<u64>(CAP);
    multi(
        n,
        2,
        consumers,
        ch,
        |tx, v| tx.send(v).unwrap(),
        |rx| rx.recv().ok(),
    )
}

fn kanal_multi(n: u64, consumers: u64) -> f64 {
    let ch = kanal::bounded::<u64>(CAP);
    multi(
        n,
        2,
        consumers,
        ch,
        |tx, v| tx.send(v).unwrap(),
        |rx| rx.recv().ok(),
    )
}

fn tables() {
    const N: u64 = 4_000_000;
    const RTTS: u64 = 100_000;
    compare_throughput(
        "SPSC throughput, one message at a time (u64, cap 1024, busy-spin, pinned)",
        vec![
            Throughput {
                name: "shared-nothing spsc (try_send/try_recv, busy-spin)",
                run: Box::new(|| single::<Ours>(N)),
            },
            Throughput {
                name: "shared-nothing spsc (default send/recv)",
                run: Box::new(|| ours_default(N)),
            },
            Throughput {
                name: "rtrb",
                run: Box::new(|| single::<Rtrb>(N)),
            },
            Throughput {
                name: "crossbeam-channel",
                run: Box::new(|| single::<Crossbeam>(N)),
            },
            Throughput {
                name: "flume",
                run: Box::new(|| single::<Flume>(N)),
            },
            Throughput {
                name: "kanal",
                run: Box::new(|| single::<Kanal>(N)),
            },
            Throughput {
                name: "std sync_channel",
                run: Box::new(|| single::<Std>(N)),
            },
        ],
    );
    compare_throughput(
        "SPSC throughput, batches of 64 (try_send_iter + drain vs rtrb write_chunk_uninit + read_chunk)",
        vec![
            Throughput {
                name: "shared-nothing spsc",
                run: Box::new(|| ours_batched(N * 4)),
            },
            Throughput {
                name: "rtrb chunks",
                run: Box::new(|| rtrb_batched(N * 4)),
            },
        ],
    );
    compare_latency(
        "SPSC ping-pong round trip (pinned, busy-spin)",
        vec![
            Latency {
                name: "raw atomic mailbox",
                run: Box::new(|h| pingpong_mailbox(RTTS, h)),
            },
            Latency {
                name: "shared-nothing spsc",
                run: Box::new(|h| pingpong::<Ours>(RTTS, h)),
            },
            Latency {
                name: "rtrb",
                run: Box::new(|h| pingpong::<Rtrb>(RTTS, h)),
            },
            Latency {
                name: "crossbeam-channel",
                run: Box::new(|h| pingpong::<Crossbeam>(RTTS, h)),
            },
            Latency {
                name: "kanal",
                run: Box::new(|h| pingpong::<Kanal>(RTTS, h)),
            },
            Latency {
                name: "flume",
                run: Box::new(|h| pingpong::<Flume>(RTTS, h)),
            },
            Latency {
                name: "std sync_channel",
                run: Box::new(|h| pingpong::<Std>(RTTS, h)),
            },
            Latency {
                name: "shared-nothing spsc, blocking recv",
                run: Box::new(|h| pingpong_ours_blocking(RTTS, h)),
            },
        ],
    );
    compare_throughput(
        "MPSC throughput, 2 producers, 1 consumer (blocking send/recv, unpinned)",
        vec![
            Throughput {
                name: "shared-nothing mpsc",
                run: Box::new(|| ours_mpsc(N / 2)),
            },
            Throughput {
                name: "crossbeam-channel",
                run: Box::new(|| crossbeam_multi(N / 2, 1)),
            },
            Throughput {
                name: "flume",
                run: Box::new(|| flume_multi(N / 2, 1)),
            },
            Throughput {
                name: "kanal",
                run: Box::new(|| kanal_multi(N / 2, 1)),
            },
        ],
    );
    compare_throughput(
        "MPMC throughput, 2 producers, 2 consumers (blocking send/recv, unpinned)",
        vec![
            Throughput {
                name: "shared-nothing mpmc",
                run: Box::new(|| ours_mpmc(N / 2)),
            },
            Throughput {
                name: "crossbeam-channel",
                run: Box::new(|| crossbeam_multi(N / 2, 2)),
            },
            Throughput {
                name: "flume",
                run: Box::new(|| flume_multi(N / 2, 2)),
            },
            Throughput {
                name: "kanal",
                run: Box::new(|| kanal_multi(N / 2, 2)),
            },
        ],
    );
}

/// Criterion's view of the same runs: each iteration moves `iters * 1024`
/// messages through a fresh channel.
fn criterion_groups(c: &mut Criterion) {
    const PER_ITER: u64 = 1024;
    let mut g = c.benchmark_group("spsc_throughput");
    g.throughput(CThroughput::Elements(PER_ITER));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    fn time(msgs_per_sec: f64, n: u64) -> Duration {
        Duration::from_secs_f64(n as f64 / msgs_per_sec)
    }
    g.bench_function("shared-nothing", |b| {
        b.iter_custom(|iters| time(single::<Ours>(iters * PER_ITER), iters * PER_ITER))
    });
    g.bench_function("rtrb", |b| {
        b.iter_custom(|iters| time(single::<Rtrb>(iters * PER_ITER), iters * PER_ITER))
    });
    g.bench_function("crossbeam", |b| {
        b.iter_custom(|iters| time(single::<Crossbeam>(iters * PER_ITER), iters * PER_ITER))
    });
    g.bench_function("shared-nothing batched", |b| {
        b.iter_custom(|iters| time(ours_batched(iters * PER_ITER), iters * PER_ITER))
    });
    g.bench_function("rtrb chunks", |b| {
        b.iter_custom(|iters| time(rtrb_batched(iters * PER_ITER), iters * PER_ITER))
    });
    g.finish();
    let mut g = c.benchmark_group("mpsc_throughput");
    g.throughput(CThroughput::Elements(PER_ITER));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("shared-nothing", |b| {
        b.iter_custom(|iters| time(ours_mpsc(iters * PER_ITER), iters * PER_ITER))
    });
    g.bench_function("flume", |b| {
        b.iter_custom(|iters| time(flume_multi(iters * PER_ITER, 1), iters * PER_ITER))
    });
    g.finish();
}

fn main() {
    support::run(tables, criterion_groups);
}
