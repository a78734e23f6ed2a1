//! Worker-pool benchmarks: the end-to-end cost of `send_partitioned` (hash
//! the key, pick the worker, cross one SPSC ring, run the handler) against a
//! raw rtrb ring between the same two pinned threads, and against a plain
//! pool built on a crossbeam channel.
//!
//! `cargo bench --bench worker_pool` prints interleaved comparison tables,
//! then runs the criterion groups.

mod support;

use criterion::{Criterion, Throughput as CThroughput};
use shared_nothing::partition::{HashPartitioner, Partitioner, hash_key};
use shared_nothing::prelude::*;
use std::thread;
use std::time::{Duration, Instant};
use support::{Latency, Throughput, compare_latency, compare_throughput, cpu_pair, pin, rate};

const CAP: usize = 1024;
const CHUNK: u64 = 64;
/// The value that asks the worker for its sum (a flush through the same
/// sender proves everything sent before it was handled).
const FLUSH: u64 = u64::MAX;

/// Sums what it is sent; answers a flush with the sum.
struct Summer;

impl Worker for Summer {
    type State = u64;
    type Message = u64;
    type Reply = u64;
    fn init(&mut self) -> Result<u64> {
        Ok(0)
    }
    #[inline]
    fn handle_message(&mut self, sum: &mut u64, mut m: Envelope<u64, u64>) -> Result<()> {
        if m.payload == FLUSH {
            m.reply(*sum)?;
        } else {
            *sum += m.payload;
        }
        Ok(())
    }
}

/// One pinned, busy-polling worker on the second CPU; the producer runs on
/// the first.
fn summer_pool(consumer_cpu: usize) -> WorkerGroup<Summer> {
    WorkerPool::builder()
        .factory(|| Summer)
        .workers(1)
        .cpus(vec![consumer_cpu])
        .idle_strategy(IdleStrategy::Spin)
        .queue_capacity(CAP)
        .batch_size(256)
        .storage_workers_per_node(0)
        .network_workers_per_node(0)
        .gpu_workers(0)
        .build()
        .expect("pool")
}

fn pool_run(n: u64, batched: bool) -> f64 {
    let (a, b) = cpu_pair();
    drive(summer_pool(b), a, n, batched)
}

/// The default plan and profile, as `WorkerPool::new()` places its first
/// worker (it spins, then parks), with the producer pinned to a CPU the
/// plan did not give that worker. One worker, whatever the plan's count
/// (thread-per-core plans two on two cores), so the flush sums everything.
fn default_plan_run(n: u64) -> f64 {
    let pool = WorkerPool::new().expect("pool");
    let group = pool.spawn_workers(1, || Summer).expect("group");
    let taken = group.placements()[0].cpu;
    let (a, b) = cpu_pair();
    let producer_cpu = if taken == Some(a) { b } else { a };
    drive(group, producer_cpu, n, false)
}

/// Sends `0..n` into `group` from a thread pinned to `producer_cpu` (one
/// at a time, or in batches of `CHUNK`), then a flush request through the
/// same sender; the rate covers everything up to its answer.
fn drive(mut group: WorkerGroup<Summer>, producer_cpu: usize, n: u64, batched: bool) -> f64 {
    let mut tx = group.sender();
    let producer = thread::spawn(move || {
        pin(producer_cpu);
        let t0 = Instant::now();
        if batched {
            let mut next = 0;
            while next < n {
                let end = n.min(next + CHUNK);
                tx.send_batch_partitioned(&next, next..end).unwrap();
                next = end;
            }
        } else {
            for i in 0..n {
                tx.send_partitioned(&i, i).unwrap();
            }
        }
        let sum: u64 = tx.request(0, FLUSH).unwrap().wait().unwrap();
        assert_eq!(sum, n * (n - 1) / 2, "lost or corrupted messages");
        t0.elapsed()
    });
    let d = producer.join().unwrap();
    group.stop_all().unwrap();
    rate(n, d)
}

fn rtrb_run(n: u64, batched: bool) -> f64 {
    let (a, b) = cpu_pair();
    let (mut p, mut c) = rtrb::RingBuffer::<u64>::new(CAP);
    let consumer = thread::spawn(move || {
        pin(b);
        let (mut got, mut sum) = (0, 0u64);
        while got < n {
            if batched {
                let k = c.slots().min(256);
                if k == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                for v in c.read_chunk(k).unwrap().into_iter() {
                    sum += v;
                }
                got += k as u64;
            } else if let Ok(v) = c.pop() {
                sum += v;
                got += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        assert_eq!(sum, n * (n - 1) / 2);
        Instant::now()
    });
    let producer = thread::spawn(move || {
        pin(a);
        let t0 = Instant::now();
        let mut next = 0;
        while next < n {
            if batched {
                let k = p.slots().min(CHUNK as usize).min((n - next) as usize);
                if k == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                next += p.write_chunk_uninit(k).unwrap().fill_from_iter(next..) as u64;
            } else if p.push(next).is_ok() {
                next += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        t0
    });
    let t0 = producer.join().unwrap();
    let t1 = consumer.join().unwrap();
    rate(n, t1 - t0)
}

/// A plain pool: one worker thread per crossbeam channel, the producer
/// hashes the key with the same partitioner and picks the channel.
/// A 64-byte message: one cache line of payload.
type Line = [u64; 8];

/// Sums the first word of what it is sent; answers a flush with the sum.
struct LineSummer;

impl Worker for LineSummer {
    type State = u64;
    type Message = Line;
    type Reply = u64;
    fn init(&mut self) -> Result<u64> {
        Ok(0)
    }
    #[inline]
    fn handle_message(&mut self, sum: &mut u64, mut m: Envelope<Line, u64>) -> Result<()> {
        if m.payload[0] == FLUSH {
            m.reply(*sum)?;
        } else {
            *sum += m.payload[0] ^ m.payload[7];
        }
        Ok(())
    }
}

fn line(i: u64) -> Line {
    [i, 0, 0, 0, 0, 0, 0, 0]
}

/// [`default_plan_run`] with 64-byte messages.
fn default_plan_line_run(n: u64) -> f64 {
    let pool = WorkerPool::new().expect("pool");
    let mut group = pool.spawn_workers(1, || LineSummer).expect("group");
    let taken = group.placements()[0].cpu;
    let (a, b) = cpu_pair();
    let producer_cpu = if taken == Some(a) { b } else { a };
    let mut tx = group.sender();
    let producer = thread::spawn(move || {
        pin(producer_cpu);
        let t0 = Instant::now();
        for i in 0..n {
            tx.send_partitioned(&i, line(i)).unwrap();
        }
        let sum: u64 = tx.request(0, line(FLUSH)).unwrap().wait().unwrap();
        assert_eq!(sum, n * (n - 1) / 2, "lost or corrupted messages");
        t0.elapsed()
    });
    let d = producer.join().unwrap();
    group.stop_all().unwrap();
    rate(n, d)
}

/// [`rtrb_run`] (one at a time) with 64-byte messages.
fn rtrb_line_run(n: u64) -> f64 {
    let (a, b) = cpu_pair();
    let (mut p, mut c) = rtrb::RingBuffer::<Line>::new(CAP);
    let consumer = thread::spawn(move || {
        pin(b);
        let (mut got, mut sum) = (0, 0u64);
        while got < n {
            if let Ok(v) = c.pop() {
                sum += v[0] ^ v[7];
                got += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        assert_eq!(sum, n * (n - 1) / 2);
        Instant::now()
    });
    let producer = thread::spawn(move || {
        pin(a);
        let t0 = Instant::now();
        let mut next = 0;
        while next < n {
            if p.push(line(next)).is_ok() {
                next += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        t0
    });
    let t0 = producer.join().unwrap();
    let t1 = consumer.join().unwrap();
    rate(n, t1 - t0)
}

/// Request round trips to one worker on the default plan, from a thread
/// pinned to a CPU the plan left free; with `stream`, each request follows
/// that many plain messages (a request behind a burst).
fn default_plan_requests(rtts: u64, stream: u64, h: &mut hdrhistogram::Histogram<u64>) {
    let pool = WorkerPool::new().expect("pool");
    let mut group = pool.spawn_workers(1, || Summer).expect("group");
    let taken = group.placements()[0].cpu;
    let (a, b) = cpu_pair();
    let producer_cpu = if taken == Some(a) { b } else { a };
    let mut tx = group.sender();
    let hist = thread::spawn(move || {
        pin(producer_cpu);
        let mut h = support::histogram();
        for i in 0..1_000 + rtts {
            for _ in 0..stream {
                tx.send_to_worker(0, 0).unwrap();
            }
            let t0 = Instant::now();
            tx.request(0, FLUSH).unwrap().wait().unwrap();
            if i >= 1_000 {
                h.record(t0.elapsed().as_nanos() as u64).unwrap();
            }
        }
        h
    })
    .join()
    .unwrap();
    group.stop_all().unwrap();
    h.add(hist).unwrap();
}

/// The floor for a request: a value there and back over two raw rtrb rings
/// between the same two pinned threads, busy-polled.
fn rtrb_requests(rtts: u64, h: &mut hdrhistogram::Histogram<u64>) {
    let (a, b) = cpu_pair();
    let (mut tx_ab, mut rx_ab) = rtrb::RingBuffer::<u64>::new(CAP);
    let (mut tx_ba, mut rx_ba) = rtrb::RingBuffer::<u64>::new(CAP);
    let total = 1_000 + rtts;
    let ponger = thread::spawn(move || {
        pin(b);
        for _ in 0..total {
            let v = loop {
                if let Ok(v) = rx_ab.pop() {
                    break v;
                }
                std::hint::spin_loop();
            };
            while tx_ba.push(v).is_err() {
                std::hint::spin_loop();
            }
        }
    });
    let hist = thread::spawn(move || {
        pin(a);
        let mut h = support::histogram();
        for i in 0..total {
            let t0 = Instant::now();
            while tx_ab.push(i).is_err() {
                std::hint::spin_loop();
            }
            while rx_ba.pop().is_err() {
                std::hint::spin_loop();
            }
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

fn crossbeam_pool_run(n: u64) -> f64 {
    let (a, b) = cpu_pair();
    let (tx, rx) = crossbeam_channel::bounded::<(u64, u64)>(CAP);
    let worker = thread::spawn(move || {
        pin(b);
        let mut sum = 0u64;
        let mut got = 0;
        while got < n {
            match rx.try_recv() {
                Ok((_key, v)) => {
                    sum += v;
                    got += 1;
                }
                Err(_) => std::hint::spin_loop(),
            }
        }
        assert_eq!(sum, n * (n - 1) / 2);
        Instant::now()
    });
    let senders = [tx];
    let producer = thread::spawn(move || {
        pin(a);
        let p = HashPartitioner::new();
        let t0 = Instant::now();
        for i in 0..n {
            let key = hash_key(&i);
            let w = p.partition(key, senders.len());
            let mut msg = (key, i);
            loop {
                match senders[w].try_send(msg) {
                    Ok(()) => break,
                    Err(e) => {
                        msg = e.into_inner();
                        std::hint::spin_loop();
                    }
                }
            }
        }
        t0
    });
    let t0 = producer.join().unwrap();
    let t1 = worker.join().unwrap();
    rate(n, t1 - t0)
}

fn tables() {
    const N: u64 = 4_000_000;
    compare_throughput(
        "Pool send_partitioned, one message at a time (1 producer, 1 pinned busy-polling worker)",
        vec![
            Throughput {
                name: "shared-nothing pool send_partitioned (busy-polling worker)",
                run: Box::new(|| pool_run(N, false)),
            },
            Throughput {
                name: "shared-nothing pool send_partitioned (default plan, WorkerPool::new)",
                run: Box::new(|| default_plan_run(N)),
            },
            Throughput {
                name: "raw rtrb ring, same two pinned threads",
                run: Box::new(|| rtrb_run(N, false)),
            },
            Throughput {
                name: "plain crossbeam-channel pool",
                run: Box::new(|| crossbeam_pool_run(N)),
            },
        ],
    );
    compare_throughput(
        "Pool send_partitioned, 64-byte messages one at a time (default plan against a raw rtrb ring)",
        vec![
            Throughput {
                name: "shared-nothing pool send_partitioned, [u64; 8] (default plan)",
                run: Box::new(|| default_plan_line_run(N / 2)),
            },
            Throughput {
                name: "raw rtrb ring, [u64; 8], same two pinned threads",
                run: Box::new(|| rtrb_line_run(N / 2)),
            },
        ],
    );
    const RTTS: u64 = 20_000;
    compare_latency(
        "Pool request round trip, one worker on the default plan",
        vec![
            Latency {
                name: "raw rtrb rings there and back (busy-polled floor)",
                run: Box::new(|h| rtrb_requests(RTTS, h)),
            },
            Latency {
                name: "shared-nothing request + wait (default plan)",
                run: Box::new(|h| default_plan_requests(RTTS, 0, h)),
            },
            Latency {
                name: "shared-nothing request + wait, behind 64 plain messages",
                run: Box::new(|h| default_plan_requests(RTTS / 4, 64, h)),
            },
        ],
    );
    compare_throughput(
        "Pool send_batch_partitioned, batches of 64 (1 producer, 1 pinned busy-polling worker)",
        vec![
            Throughput {
                name: "shared-nothing pool, batches of 64",
                run: Box::new(|| pool_run(N * 4, true)),
            },
            Throughput {
                name: "raw rtrb ring, chunks of 64",
                run: Box::new(|| rtrb_run(N * 4, true)),
            },
        ],
    );
}

fn criterion_groups(c: &mut Criterion) {
    const PER_ITER: u64 = 1024;
    fn time(msgs_per_sec: f64, n: u64) -> Duration {
        Duration::from_secs_f64(n as f64 / msgs_per_sec)
    }
    let mut g = c.benchmark_group("pool_send_partitioned");
    g.throughput(CThroughput::Elements(PER_ITER));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("shared-nothing", |b| {
        b.iter_custom(|iters| time(pool_run(iters * PER_ITER, false), iters * PER_ITER))
    });
    g.bench_function("raw rtrb", |b| {
        b.iter_custom(|iters| time(rtrb_run(iters * PER_ITER, false), iters * PER_ITER))
    });
    g.bench_function("crossbeam pool", |b| {
        b.iter_custom(|iters| time(crossbeam_pool_run(iters * PER_ITER), iters * PER_ITER))
    });
    g.bench_function("shared-nothing batched", |b| {
        b.iter_custom(|iters| time(pool_run(iters * PER_ITER, true), iters * PER_ITER))
    });
    g.finish();
}

fn main() {
    support::run(tables, criterion_groups);
}
