use super::*;
use proptest::prelude::*;

fn counts(p: &dyn Partitioner, n: usize, keys: impl Iterator<Item = u64>) -> Vec<usize> {
    let mut c = vec![0; n];
    for k in keys {
        c[p.partition(k, n)] += 1;
    }
    c
}

proptest! {
    #[test]
    fn every_partitioner_stays_in_range(key: u64, n in 1usize..300) {
        let ps: Vec<Box<dyn Partitioner>> = vec![
            Box::new(HashPartitioner::new()),
            Box::new(ConsistentHashPartitioner::new(n, 16)),
            Box::new(RangePartitioner::uniform(n)),
            Box::new(RoundRobinPartitioner::new()),
            Box::new(CustomPartitioner::new(|h, n| (h % n as u64) as usize)),
        ];
        for p in &ps {
            prop_assert!(p.partition(key, n) < n, "{} out of range", p.name());
        }
    }

    #[test]
    fn hash_mapping_is_stable(key in ".*", n in 1usize..64) {
        let a = HashPartitioner::new().partition(hash_key(&key), n);
        let b = HashPartitioner::new().partition(hash_key(&key.clone()), n);
        prop_assert_eq!(a, b);
        let ring = ConsistentHashPartitioner::new(n, 32);
        let again = ConsistentHashPartitioner::new(n, 32);
        prop_assert_eq!(ring.partition(hash_key(&key), n), again.partition(hash_key(&key), n));
    }

    #[test]
    fn growing_a_ring_moves_few_keys_and_only_to_the_new_worker(n in 2usize..24, seed: u64) {
        let before = ConsistentHashPartitioner::new(n, 160);
        let after = before.with_workers(n + 1);
        let keys = 20_000u64;
        let mut moved = 0u64;
        for i in 0..keys {
            let k = hash_key(&(seed, i));
            let (a, b) = (before.partition(k, n), after.partition(k, n + 1));
            if a != b {
                prop_assert_eq!(b, n, "a moved key must go to the new worker");
                moved += 1;
            }
        }
        let fair = keys as f64 / (n as f64 + 1.0);
        // About 1/(n+1) of the keys move; never more than twice that.
        prop_assert!((moved as f64) <= 2.0 * fair, "moved {moved}, fair {fair}");
        prop_assert!((moved as f64) >= 0.25 * fair, "moved {moved}, fair {fair}");
    }
}

/// Hash partitioning of 200k sequential keys over 8 workers: every worker
/// within 3% of its fair share (the binomial spread is ~0.8%).
#[test]
fn hash_partitioner_balances_sequential_and_hashed_keys() {
    let n = 8;
    let fair = 200_000.0 / n as f64;
    for c in [
        counts(&HashPartitioner::new(), n, 0..200_000),
        counts(
            &HashPartitioner::new(),
            n,
            (0..200_000u64).map(|i| hash_key(&format!("user-{i}"))),
        ),
    ] {
        for w in c {
            assert!((w as f64 - fair).abs() / fair < 0.03, "{w} vs {fair}");
        }
    }
}

/// A ring of 8 workers with 256 virtual nodes: every worker within 35% of
/// its fair share (the spread of 256 points per worker is about 6%).
#[test]
fn consistent_hash_balance_within_bound() {
    let n = 8;
    let c = counts(
        &ConsistentHashPartitioner::new(n, 256),
        n,
        (0..200_000u64).map(|i| hash_key(&i)),
    );
    let fair = 200_000.0 / n as f64;
    for w in c {
        assert!((w as f64 - fair).abs() / fair < 0.35, "{w} vs {fair}");
    }
}

#[test]
fn range_partitioner_keeps_order_and_rejects_bad_bounds() {
    let p = RangePartitioner::with_bounds(vec![10, 20, 30]).unwrap();
    let picks: Vec<usize> = [0, 9, 10, 19, 20, 29, 30, u64::MAX]
        .iter()
        .map(|&k| p.partition(k, 4))
        .collect();
    assert_eq!(picks, vec![0, 0, 1, 1, 2, 2, 3, 3]);
    assert_eq!(p.expected_workers(), Some(4));
    assert!(RangePartitioner::with_bounds(vec![5, 5]).is_err());
    assert!(RangePartitioner::with_bounds(vec![9, 1]).is_err());
    let u = RangePartitioner::uniform(4);
    assert_eq!(u.partition(0, 4), 0);
    assert_eq!(u.partition(u64::MAX, 4), 3);
    assert_eq!(u.partition(u64::MAX / 2, 4), 1);
}

#[test]
fn round_robin_cycles() {
    let p = RoundRobinPartitioner::new();
    let c = counts(&p, 3, 0..300);
    assert_eq!(c, vec![100, 100, 100]);
}
