//! The tokio bridge's overhead: the `tokio_bridge` example's own handler
//! (`examples/tokio_bridge/service.rs`) with its work on the key's worker,
//! through the bridge (lease a sender, reserve room in the worker's queue,
//! send, await the reply), against the same handler doing the same work
//! inline in the tokio task (one locked map), interleaved in one run.
//!
//! Two levels: the handler called directly from tokio tasks (the bridge's
//! own cost, no sockets), and whole HTTP/1.1 requests over loopback (what a
//! client sees). Each prints a throughput table (bridge first: the ratio
//! is bridge / inline) and a latency table (inline first: the ratios are
//! each p50 over inline's), p50/p99/p99.9 from an HDR histogram with every
//! request timed.
//!
//! `cargo bench --bench bridge`; `SN_BENCH_ROUNDS` sets the rounds (7).

mod support;

#[allow(dead_code)]
#[path = "../examples/tokio_bridge/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../examples/tokio_bridge/counter.rs"]
mod counter;
#[allow(dead_code)]
#[path = "../examples/tokio_bridge/service.rs"]
mod service;

use criterion::{Criterion, Throughput as CThroughput};
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request};
use service::Backend;
use shared_nothing::pool::WorkerGroup;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{Latency, Throughput, compare_latency, compare_throughput, rate};

/// Keys the requests spread over.
const KEYS: u64 = 1024;
/// Concurrent tokio tasks calling the handler.
const TASKS: usize = 16;
/// Handler calls per task and run.
const PER_TASK: u64 = 5_000;
/// Concurrent HTTP connections (one client thread each).
const CONNECTIONS: usize = 4;
/// Requests per connection and run.
const PER_CONNECTION: u64 = 2_000;

/// The service twice over: one runtime, the counter workers, and a server
/// for each backend.
struct Rig {
    runtime: tokio::runtime::Runtime,
    _group: WorkerGroup<counter::Counters>,
    bridge: Backend,
    inline: Backend,
    bridge_addr: SocketAddr,
    inline_addr: SocketAddr,
}

impl Rig {
    fn new() -> Self {
        let group = counter::start(2).expect("workers");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_io()
            .build()
            .expect("runtime");
        let bridge = Backend::workers(&group);
        let inline = Backend::inline();
        let listen = |backend: &Backend| {
            let l = runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind");
            let addr = l.local_addr().unwrap();
            runtime.spawn(service::serve(l, backend.clone()));
            addr
        };
        let (bridge_addr, inline_addr) = (listen(&bridge), listen(&inline));
        Self {
            runtime,
            _group: group,
            bridge,
            inline,
            bridge_addr,
            inline_addr,
        }
    }
}

/// Request `i` of a stream: three increments for every read.
fn request(i: u64, key: u64) -> Request<Full<Bytes>> {
    let method = if i % 4 == 3 {
        Method::GET
    } else {
        Method::POST
    };
    Request::builder()
        .method(method)
        .uri(format!("/counter/key-{key}"))
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

fn key(stream: u64, i: u64) -> u64 {
    (stream * 7919 + i * 31) % KEYS
}

fn ns(d: Duration) -> u64 {
    d.as_nanos().try_into().unwrap_or(u64::MAX)
}

/// `TASKS` tasks call the handler `PER_TASK` times each; returns requests
/// per second and fills `hist` with each call's time.
fn handler_run(rig: &Rig, backend: &Backend, hist: &mut Histogram<u64>) -> f64 {
    let t0 = Instant::now();
    let hists = rig.runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS as u64)
            .map(|t| {
                let backend = backend.clone();
                tokio::spawn(async move {
                    let mut h = support::histogram();
                    for i in 0..PER_TASK {
                        let req = request(i, key(t, i));
                        let start = Instant::now();
                        let answer = service::handle(backend.clone(), req).await.unwrap();
                        h.saturating_record(ns(start.elapsed()));
                        assert_eq!(answer.status(), 200);
                    }
                    h
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    });
    let elapsed = t0.elapsed();
    for h in hists {
        hist.add(h).expect("same bounds");
    }
    rate(TASKS as u64 * PER_TASK, elapsed)
}

/// `CONNECTIONS` client threads send `PER_CONNECTION` requests each over
/// keep-alive connections to `addr`; returns requests per second and fills
/// `hist` with each round trip.
fn http_run(addr: SocketAddr, hist: &mut Histogram<u64>) -> f64 {
    let t0 = Instant::now();
    let threads: Vec<_> = (0..CONNECTIONS as u64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = client::Client::connect(addr).expect("connect");
                let mut h = support::histogram();
                for i in 0..PER_CONNECTION {
                    let method = if i % 4 == 3 { "GET" } else { "POST" };
                    let path = format!("/counter/key-{}", key(c, i));
                    let start = Instant::now();
                    let answer = client.request(method, &path, "").expect("request");
                    h.saturating_record(ns(start.elapsed()));
                    assert_eq!(answer.status, 200);
                }
                h
            })
        })
        .collect();
    let hists: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect();
    let elapsed = t0.elapsed();
    for h in hists {
        hist.add(h).expect("same bounds");
    }
    rate(CONNECTIONS as u64 * PER_CONNECTION, elapsed)
}

fn tables() {
    let rig = Rig::new();
    let title =
        format!("Handler, {TASKS} tokio tasks on 2 runtime threads, 2 workers, {KEYS} keys");
    compare_throughput(
        &format!("{title}: requests/s"),
        vec![
            Throughput {
                name: "bridge: work on the key's worker",
                run: Box::new(|| handler_run(&rig, &rig.bridge, &mut support::histogram())),
            },
            Throughput {
                name: "inline: work in the tokio task (locked map)",
                run: Box::new(|| handler_run(&rig, &rig.inline, &mut support::histogram())),
            },
        ],
    );
    compare_latency(
        &format!("{title}: time per call"),
        vec![
            Latency {
                name: "inline",
                run: Box::new(|h| {
                    handler_run(&rig, &rig.inline, h);
                }),
            },
            Latency {
                name: "bridge",
                run: Box::new(|h| {
                    handler_run(&rig, &rig.bridge, h);
                }),
            },
        ],
    );
    let title = format!("HTTP/1.1 over loopback, {CONNECTIONS} keep-alive connections");
    compare_throughput(
        &format!("{title}: requests/s"),
        vec![
            Throughput {
                name: "bridge: work on the key's worker",
                run: Box::new(|| http_run(rig.bridge_addr, &mut support::histogram())),
            },
            Throughput {
                name: "inline: work in the tokio task (locked map)",
                run: Box::new(|| http_run(rig.inline_addr, &mut support::histogram())),
            },
        ],
    );
    compare_latency(
        &format!("{title}: round trip"),
        vec![
            Latency {
                name: "inline",
                run: Box::new(|h| {
                    http_run(rig.inline_addr, h);
                }),
            },
            Latency {
                name: "bridge",
                run: Box::new(|h| {
                    http_run(rig.bridge_addr, h);
                }),
            },
        ],
    );
}

fn criterion_groups(c: &mut Criterion) {
    let rig = Rig::new();
    let per_run = TASKS as u64 * PER_TASK;
    let mut g = c.benchmark_group("tokio_bridge_handler");
    g.throughput(CThroughput::Elements(per_run));
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, backend) in [("bridge", &rig.bridge), ("inline", &rig.inline)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut h = support::histogram();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let r = handler_run(&rig, backend, &mut h);
                    total += Duration::from_secs_f64(per_run as f64 / r);
                }
                total
            })
        });
    }
    g.finish();
}

fn main() {
    support::run(tables, criterion_groups);
}
