//! `PoolSender`'s async sends route exactly as the blocking ones.

use super::*;
use crate::Result;
use crate::partition::{HashPartitioner, Partitioner, hash_key};
use crate::worker::{Envelope, SendError, Worker};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Runs a future on this thread, parking between polls; panics after 10 s.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let t0 = Instant::now();
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "future never woken");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

type Log = Arc<Mutex<Vec<(usize, Option<u64>, u64)>>>;

/// Logs (worker, key hash, payload); answers a request with its index.
struct Owner {
    index: usize,
    log: Log,
}

impl Worker for Owner {
    type State = ();
    type Message = u64;
    type Reply = usize;
    fn init(&mut self) -> Result<()> {
        Ok(())
    }
    fn handle_message(&mut self, _: &mut (), mut m: Envelope<u64, usize>) -> Result<()> {
        self.log
            .lock()
            .unwrap()
            .push((self.index, m.key_hash(), m.payload));
        if m.is_request() {
            m.reply(self.index)?;
        }
        Ok(())
    }
}

fn pool(n: usize) -> (WorkerGroup<Owner>, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let pool = WorkerPool::builder()
        .factory(move |index| Owner {
            index,
            log: l.clone(),
        })
        .workers(n)
        .queue_capacity(2)
        .partitioner(HashPartitioner::new())
        .routing_keys(true)
        .build()
        .unwrap();
    (pool, log)
}

#[test]
fn async_partitioned_sends_and_requests_reach_the_key_owner() {
    let (mut group, log) = pool(3);
    let mut tx = group.sender();
    let owners = block_on(async {
        let mut owners = Vec::new();
        for i in 0..300u64 {
            let key = format!("k{}", i % 7);
            tx.send_partitioned_async(&key, i).await.unwrap();
            if i % 50 == 0 {
                let who = tx.request_partitioned_async(&key, i).await.unwrap();
                owners.push((key, who.await.unwrap()));
            }
        }
        owners
    });
    for (key, who) in owners {
        assert_eq!(who, HashPartitioner::new().partition(hash_key(&key), 3));
    }
    group.stop_all().unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 306);
    for &(w, key, v) in log.iter() {
        let expect = hash_key(&format!("k{}", v % 7));
        assert_eq!(key, Some(expect), "the envelope carries the key's hash");
        assert_eq!(w, HashPartitioner::new().partition(expect, 3));
    }
}

#[test]
fn async_sends_by_index_and_their_errors() {
    let (mut group, log) = pool(2);
    let mut tx = group.sender();
    block_on(async {
        tx.send_to_worker_async(1, 10).await.unwrap();
        assert_eq!(tx.request_async(0, 11).await.unwrap().await, Ok(0));
        let permit = tx.reserve_to_worker_async(1).await.unwrap();
        assert_eq!(permit.worker(), 1);
        assert_eq!(permit.request(12).unwrap().await, Ok(1));
        let permit = tx.reserve_partitioned_async("key").await.unwrap();
        let owner = permit.worker();
        permit.send(13).unwrap();
        assert_eq!(owner, tx.route(hash_key("key")));
        match tx.send_to_worker_async(5, 14).await {
            Err(SendError::NoSuchWorker {
                index: 5,
                len: 2,
                message: 14,
            }) => {}
            other => panic!("{other:?}"),
        }
        match tx.request_async(9, 15).await {
            Err(SendError::NoSuchWorker { message: 15, .. }) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
    });
    group.stop_all().unwrap();
    assert_eq!(log.lock().unwrap().len(), 4);
    block_on(async {
        match tx.send_partitioned_async("key", 16).await {
            Err(SendError::Stopped(16)) => {}
            other => panic!("{other:?}"),
        }
    });
}
