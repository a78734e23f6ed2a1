use super::*;
use crate::partition::Partitioner;
use crate::partition::{
    ConsistentHashPartitioner, CustomPartitioner, HashPartitioner, RangePartitioner,
    RoundRobinPartitioner, hash_key,
};
use crate::worker::{Envelope, EventKind, SendError, Worker, WorkerConfig};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (worker index, key hash, payload) for every message handled.
type Log = Arc<Mutex<Vec<(usize, Option<u64>, u64)>>>;

/// Records (worker index, key hash, payload) for every message it handles.
struct Recorder {
    index: usize,
    log: Log,
}

impl Worker for Recorder {
    type State = ();
    type Message = u64;
    type Reply = usize;
    fn init(&mut self) -> Result<()> {
        Ok(())
    }
    fn handle_message(&mut self, _: &mut (), mut m: Envelope<u64, usize>) -> Result<()> {
        if m.is_request() {
            // A request for u64::MAX is dropped unanswered.
            if m.payload != u64::MAX {
                m.reply(self.index)?;
            }
            return Ok(());
        }
        self.log
            .lock()
            .unwrap()
            .push((self.index, m.key_hash(), m.payload));
        Ok(())
    }
}

fn recorder_pool(n: usize, p: impl Partitioner) -> (WorkerGroup<Recorder>, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let pool = WorkerPool::builder()
        .factory(move |index| Recorder {
            index,
            log: l.clone(),
        })
        .workers(n)
        .partitioner(p)
        .routing_keys(true)
        .build()
        .unwrap();
    (pool, log)
}

#[test]
fn same_key_same_worker_and_the_envelope_carries_the_hash() {
    let (mut pool, log) = recorder_pool(3, HashPartitioner::new());
    for i in 0..3000u64 {
        pool.send_partitioned(&format!("user-{}", i % 17), i)
            .unwrap();
    }
    pool.stop_all().unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 3000);
    let mut owner: HashMap<u64, usize> = HashMap::new();
    for &(w, key, v) in log.iter() {
        let expect = hash_key(&format!("user-{}", v % 17));
        assert_eq!(key, Some(expect));
        assert_eq!(
            *owner.entry(expect).or_insert(w),
            w,
            "a key moved between workers"
        );
        assert_eq!(w, HashPartitioner::new().partition(expect, 3));
    }
}

#[test]
fn per_key_order_is_kept_from_each_sender() {
    let (mut pool, log) = recorder_pool(2, HashPartitioner::new());
    let mut senders: Vec<_> = (0..3).map(|_| pool.sender()).collect();
    let threads: Vec<_> = senders
        .drain(..)
        .enumerate()
        .map(|(t, mut tx)| {
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    tx.send_partitioned(&t, (t as u64) << 32 | i).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    pool.stop_all().unwrap();
    let log = log.lock().unwrap();
    for t in 0..3u64 {
        let seq: Vec<u64> = log
            .iter()
            .filter(|e| e.2 >> 32 == t)
            .map(|e| e.2 & 0xffff_ffff)
            .collect();
        assert_eq!(seq, (0..2000).collect::<Vec<_>>(), "sender {t} reordered");
    }
}

#[test]
fn broadcast_send_to_worker_and_requests() {
    let (mut pool, log) = recorder_pool(4, RoundRobinPartitioner::new());
    pool.broadcast(7).unwrap();
    for w in 0..4 {
        assert_eq!(
            pool.request(w, 0)
                .unwrap()
                .wait_timeout(Duration::from_secs(10)),
            Ok(w)
        );
    }
    let e = pool.send_to_worker(9, 1).unwrap_err();
    assert!(matches!(
        e,
        SendError::NoSuchWorker {
            index: 9,
            len: 4,
            message: 1
        }
    ));
    // Round-robin ignores the key: consecutive requests visit every worker.
    let mut owners: Vec<usize> = (0..4)
        .map(|_| pool.request_partitioned("k", 0).unwrap().wait().unwrap())
        .collect();
    owners.sort_unstable();
    assert_eq!(owners, vec![0, 1, 2, 3]);
    pool.stop_all().unwrap();
    let mut got: Vec<usize> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.2 == 7)
        .map(|e| e.0)
        .collect();
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2, 3]);
}

#[test]
fn routing_keys_are_delivered_only_when_asked_for() {
    let log: Log = Arc::default();
    let l = log.clone();
    let mut pool = WorkerPool::builder()
        .factory(move |index| Recorder {
            index,
            log: l.clone(),
        })
        .workers(2)
        .build()
        .unwrap();
    for i in 0..100u64 {
        pool.send_partitioned(&i, i).unwrap();
        pool.send_by_value(i, i).unwrap();
    }
    // Requests (metadata in the lane) interleaved with plain messages still
    // reach the key's owner and are answered.
    for i in 0..20u64 {
        let w = pool.request_partitioned(&i, i).unwrap().wait().unwrap();
        assert_eq!(w, HashPartitioner::new().partition(hash_key(&i), 2));
    }
    pool.stop_all().unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 200);
    assert!(
        log.iter().all(|&(_, key, _)| key.is_none()),
        "no routing key unless the workers asked for them"
    );
}

#[test]
fn seed_forms_build_and_route() {
    let log: Log = Arc::default();
    let l = log.clone();
    let config = PoolConfig::new()
        .with_num_workers(2)
        .with_cpu_affinity(true)
        .with_worker_config(
            WorkerConfig::new()
                .with_queue_capacity(128)
                .with_high_priority(false)
                .with_routing_keys(true),
        );
    let mut pool = WorkerPool::with_partitioner(
        config,
        move |i| Recorder {
            index: i,
            log: l.clone(),
        },
        Arc::new(RangePartitioner::with_bounds(vec![100]).unwrap()),
    )
    .unwrap();
    pool.send_by_value(5, 5).unwrap();
    pool.send_by_value(500, 500).unwrap();
    let cpus: Vec<Option<usize>> = pool.placements().iter().map(|p| p.cpu).collect();
    assert!(
        cpus.iter().all(Option::is_some),
        "affinity on: every worker pinned"
    );
    assert_eq!(
        pool.plan().queue_capacity,
        128,
        "an explicit worker setting wins over the profile"
    );
    pool.stop_all().unwrap();
    let log = log.lock().unwrap();
    assert!(log.contains(&(0, Some(5), 5)) && log.contains(&(1, Some(500), 500)));
}

#[test]
fn impossible_configurations_are_typed_errors() {
    let cfg = PoolConfig::new().with_num_workers(0);
    let e = WorkerPool::with_config(cfg, |i| Recorder {
        index: i,
        log: Arc::default(),
    })
    .unwrap_err();
    assert!(matches!(e, Error::Plan(_)), "{e}");
    let e = WorkerPool::builder()
        .factory(|i| Recorder {
            index: i,
            log: Arc::default(),
        })
        .workers(3)
        .partitioner(ConsistentHashPartitioner::new(4, 8))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("built for 4 workers"), "{e}");
    let e = WorkerPool::builder()
        .factory(|i| Recorder {
            index: i,
            log: Arc::default(),
        })
        .cpus(vec![100_000])
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::Plan(_)), "{e}");
    // Two workers on one CPU share it, so neither can busy-wait (on any
    // machine: more workers than CPUs would leave some alone on a core).
    let cpu = crate::topology::Topology::detect()
        .unwrap()
        .available_cpus()[0];
    let e = WorkerPool::builder()
        .factory(|i| Recorder {
            index: i,
            log: Arc::default(),
        })
        .workers(2)
        .cpus(vec![cpu])
        .idle_strategy(crate::worker::IdleStrategy::Spin)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::Plan(_)), "{e}");
}

#[test]
fn a_partitioner_out_of_range_is_an_error_not_a_panic() {
    let (mut pool, _log) = recorder_pool(2, CustomPartitioner::new(|_, n| n + 3));
    let e = pool.send_partitioned("x", 1).unwrap_err();
    assert!(matches!(
        e,
        SendError::NoSuchWorker {
            index: 5,
            len: 2,
            message: 1
        }
    ));
}

#[test]
fn a_failing_init_stops_the_whole_group_cleanly() {
    struct Picky(usize);
    impl Worker for Picky {
        type State = ();
        type Message = ();
        type Reply = ();
        fn init(&mut self) -> Result<()> {
            if self.0 == 1 {
                Err(Error::msg("worker 1 refuses"))
            } else {
                Ok(())
            }
        }
        fn handle_message(&mut self, _: &mut (), _: Envelope<()>) -> Result<()> {
            Ok(())
        }
    }
    let e = WorkerPool::builder()
        .factory(Picky)
        .workers(3)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::Init { .. }), "{e}");
}

#[test]
fn a_panicking_worker_does_not_disturb_the_others() {
    struct Fragile;
    impl Worker for Fragile {
        type State = u64;
        type Message = u64;
        type Reply = ();
        fn init(&mut self) -> Result<u64> {
            Ok(0)
        }
        fn handle_message(&mut self, s: &mut u64, m: Envelope<u64>) -> Result<()> {
            if m.payload == u64::MAX {
                panic!("poison");
            }
            *s += 1;
            Ok(())
        }
    }
    let mut pool = WorkerPool::builder()
        .factory(|| Fragile)
        .workers(2)
        .build()
        .unwrap();
    let events = pool.events();
    pool.send_to_worker(0, u64::MAX).unwrap();
    for i in 0..1000 {
        pool.send_to_worker(i % 2, i as u64).unwrap();
    }
    pool.stop_all().unwrap();
    let stats = pool.stats();
    assert_eq!(stats.handled(), 1000);
    assert_eq!((stats.workers[0].failed, stats.workers[1].failed), (1, 0));
    assert_eq!(stats.restarts(), 1);
    let panicked: Vec<usize> = events
        .drain()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Panicked { .. }))
        .map(|e| e.worker)
        .collect();
    assert_eq!(panicked, vec![0]);
}

#[test]
fn zero_config_runtime_spawns_one_worker_per_cpu() {
    let pool = WorkerPool::new().unwrap();
    let mut group = pool
        .spawn(|i| Recorder {
            index: i,
            log: Arc::default(),
        })
        .unwrap();
    assert_eq!(group.len(), pool.plan().app_workers.len());
    let planned: Vec<Option<usize>> = pool.plan().app_workers.iter().map(|p| p.cpu).collect();
    let placed: Vec<Option<usize>> = group.placements().iter().map(|p| p.cpu).collect();
    assert_eq!(planned, placed);
    group.pause_all().unwrap();
    group.resume_all().unwrap();
    group.ping(0, Duration::from_secs(10)).unwrap();
    group.stop_all().unwrap();
    assert!(group.send_to_worker(0, 1).unwrap_err().is_stopped());
}

/// Four producers finish, then one flush: every message any of them sent is
/// handled, on every worker, before it returns (without it the totals read
/// right after the producers joined were short in 9 of 9 runs).
#[test]
fn flush_is_a_barrier_across_senders() {
    use crate::worker::FlushError;
    let (pool, log) = recorder_pool(2, HashPartitioner::new());
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let mut tx = pool.sender();
            std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    tx.send_partitioned(&(p, i), i).unwrap();
                }
            })
        })
        .collect();
    producers.into_iter().for_each(|t| t.join().unwrap());
    pool.flush_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(log.lock().unwrap().len(), 20_000);
    // A paused worker holds the flush until it resumes.
    let mut tx = pool.sender();
    tx.send_to_worker(0, 1).unwrap();
    pool.pause_all().unwrap();
    tx.send_to_worker(0, 2).unwrap();
    assert_eq!(
        pool.flush_timeout(Duration::from_millis(50)),
        Err(FlushError::Timeout)
    );
    pool.resume_all().unwrap();
    pool.flush().unwrap();
    assert_eq!(log.lock().unwrap().len(), 20_002);
    // Nothing queued: a flush returns at once.
    tx.flush().unwrap();
}

/// A flush to a stopped group is a typed error naming the worker.
#[test]
fn flush_after_stop_reports_the_stopped_worker() {
    use crate::worker::FlushError;
    let (mut pool, _) = recorder_pool(1, HashPartitioner::new());
    let tx = pool.sender();
    pool.stop_all().unwrap();
    assert!(matches!(tx.flush(), Err(FlushError::Stopped { .. })));
    assert!(matches!(
        Error::from(tx.flush().unwrap_err()),
        Error::WorkerStopped { .. }
    ));
}

/// Scatter-gather: one request per worker, the replies in index order.
#[test]
fn request_all_gathers_every_workers_reply_in_order() {
    let (mut pool, _) = recorder_pool(3, HashPartitioner::new());
    let got: Vec<usize> = pool
        .request_all_timeout(0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(got, vec![0, 1, 2]);
    let pending = pool.request_all(0).unwrap();
    let got: Vec<usize> = pending
        .into_iter()
        .map(|p| p.wait_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert_eq!(got, vec![0, 1, 2]);
    // A request dropped unanswered is reported against the first worker.
    let e = pool
        .request_all_timeout(u64::MAX, Duration::from_secs(10))
        .unwrap_err();
    assert!(matches!(
        e,
        crate::worker::GatherError::Reply {
            index: 0,
            error: crate::worker::ReplyError::Dropped
        }
    ));
    pool.stop_all().unwrap();
    let e = pool
        .request_all_timeout(0, Duration::from_secs(10))
        .unwrap_err();
    assert!(matches!(
        e,
        crate::worker::GatherError::Send { index: 0, .. }
    ));
}

/// Round robin keeps one cursor per sender: senders never share (or
/// contend on) a counter, and each spreads its own messages evenly.
#[test]
fn round_robin_cursor_is_per_sender() {
    let (mut pool, log) = recorder_pool(2, RoundRobinPartitioner::new());
    let mut a = pool.sender();
    let mut b = pool.sender();
    a.send_partitioned("x", 100).unwrap();
    b.send_partitioned("x", 200).unwrap();
    b.send_partitioned("x", 201).unwrap();
    pool.flush().unwrap();
    let mut got: Vec<(u64, usize)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|&(w, _, p)| (p, w))
        .collect();
    got.sort_unstable();
    // A shared counter would have sent 200 to worker 1 and 201 to worker 0.
    assert_eq!(got, vec![(100, 0), (200, 0), (201, 1)]);
    pool.stop_all().unwrap();
}

/// The inline hash route is the partitioner's own rule.
#[test]
fn inline_hash_route_matches_the_partitioner() {
    let p = HashPartitioner::new();
    let mut rule = crate::partition::Route::of(&p);
    for key in (0..10_000u64).map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
        for n in [1, 2, 3, 7, 64] {
            assert_eq!(rule.pick(&p, key, n), p.partition(key, n));
        }
    }
}

/// The inline range and consistent-hash routes are their partitioners' own
/// rules, and neither consults the trait object.
#[test]
fn inline_range_and_ring_routes_match_their_partitioners() {
    struct Refuses;
    impl Partitioner for Refuses {
        fn partition(&self, _: u64, _: usize) -> usize {
            panic!("an inline route called the trait object")
        }
    }
    let range = RangePartitioner::with_bounds(vec![10, 1_000, 1 << 40]).unwrap();
    let ring = crate::partition::ConsistentHashPartitioner::new(5, 64);
    let mut by_range = crate::partition::Route::of(&range);
    let mut by_ring = crate::partition::Route::of(&ring);
    for key in (0..10_000u64).map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (k % 40)) {
        for n in [1, 3, 4, 5] {
            assert_eq!(by_range.pick(&Refuses, key, n), range.partition(key, n));
            assert_eq!(by_ring.pick(&Refuses, key, n), ring.partition(key, n));
        }
    }
}
