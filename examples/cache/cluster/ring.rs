//! Placement: which nodes own a key, by consistent hashing with virtual
//! nodes (the crate's `ConsistentHashPartitioner`) over the members.
//!
//! The ring is built over every node this node has known since it
//! started (live or not), sorted by cluster address, so a node's index
//! does not change when another fails: a key's preference list is then
//! fixed, and its owners are the first `replication` *live* nodes of
//! it. When an owner fails the next node of the list takes its place
//! and the surviving owner keeps its copy (classic consistent hashing);
//! when it comes back it is an owner again.
//!
//! **What the partitioner's API makes awkward.** A
//! `ConsistentHashPartitioner` maps a key to one index in `0..n`; it
//! has no "next distinct node clockwise" (a preference list). So the
//! list is built by removal: the first node is the ring's owner among
//! all `n`; the second is the owner on the ring of the `n - 1` others,
//! re-indexed in address order; and so on. Each step is a
//! consistent-hash lookup, deterministic on every node that knows the
//! same set, but a later entry of the list moves more keys than a
//! successor walk would when the set grows.

use shared_nothing::partition::{ConsistentHashPartitioner, Partitioner, hash_key};
use std::net::SocketAddr;

/// ElCache's `cluster.virtual_nodes`.
pub const VIRTUAL_NODES: usize = 150;

/// A ring over a fixed, sorted set of nodes, with which of them live.
#[derive(Clone, Debug)]
pub struct Ring {
    /// Sorted, distinct.
    nodes: Vec<SocketAddr>,
    live: Vec<bool>,
    /// `rings[i]`: the partitioner over `nodes.len() - i` nodes.
    rings: Vec<ConsistentHashPartitioner>,
    replication: usize,
}

impl Ring {
    /// A ring over `nodes` (any order; duplicates merged), each with
    /// whether it is live, keeping `replication` copies of a key.
    pub fn new(nodes: &[(SocketAddr, bool)], replication: usize) -> Ring {
        let mut all: Vec<(SocketAddr, bool)> = nodes.to_vec();
        all.sort_by_key(|&(a, live)| (a, !live));
        all.dedup_by_key(|&mut (a, _)| a);
        let n = all.len();
        Ring {
            nodes: all.iter().map(|&(a, _)| a).collect(),
            live: all.iter().map(|&(_, l)| l).collect(),
            rings: (0..n)
                .map(|i| ConsistentHashPartitioner::new(n - i, VIRTUAL_NODES))
                .collect(),
            replication: replication.max(1),
        }
    }

    /// The routing key of `key` for nodes (not the one the workers of a
    /// node partition by, so a node's keys spread over all its workers).
    fn routing(key: &[u8]) -> u64 {
        hash_key(&(0xC1u8, key))
    }

    /// Every node in `key`'s preference order.
    pub fn preference(&self, key: &[u8]) -> Vec<SocketAddr> {
        let k = Self::routing(key);
        let mut rest = self.nodes.clone();
        let mut out = Vec::with_capacity(rest.len());
        for ring in &self.rings {
            let i = ring.partition(k, rest.len()).min(rest.len() - 1);
            out.push(rest.remove(i));
        }
        out
    }

    /// `key`'s owners: the first `replication` live nodes of its
    /// preference order (fewer when fewer are live).
    pub fn owners(&self, key: &[u8]) -> Vec<SocketAddr> {
        self.preference(key)
            .into_iter()
            .filter(|a| self.is_live(*a))
            .take(self.replication)
            .collect()
    }

    pub fn is_live(&self, node: SocketAddr) -> bool {
        self.nodes.binary_search(&node).is_ok_and(|i| self.live[i])
    }

    pub fn replication(&self) -> usize {
        self.replication
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("key-{i}").into_bytes()).collect()
    }

    #[test]
    fn owners_are_distinct_live_and_as_many_as_asked() {
        let nodes: Vec<_> = (0..5).map(|i| (addr(7000 + i), i != 3)).collect();
        for r in 1..=6 {
            let ring = Ring::new(&nodes, r);
            for k in keys(300) {
                let o = ring.owners(&k);
                assert_eq!(o.len(), r.min(4), "r = {r}");
                let mut d = o.clone();
                d.sort();
                d.dedup();
                assert_eq!(d.len(), o.len());
                assert!(!o.contains(&addr(7003)), "a dead node owns nothing");
                assert_eq!(ring.preference(&k).len(), 5);
            }
        }
    }

    #[test]
    fn every_node_computes_the_same_owners() {
        let a: Vec<_> = [7002, 7000, 7001]
            .iter()
            .map(|&p| (addr(p), true))
            .collect();
        let b: Vec<_> = [7001, 7002, 7000, 7001]
            .iter()
            .map(|&p| (addr(p), true))
            .collect();
        let (ra, rb) = (Ring::new(&a, 2), Ring::new(&b, 2));
        for k in keys(500) {
            assert_eq!(ra.owners(&k), rb.owners(&k));
        }
    }

    #[test]
    fn keys_spread_over_the_nodes() {
        let nodes: Vec<_> = (0..3).map(|i| (addr(7000 + i), true)).collect();
        let ring = Ring::new(&nodes, 1);
        let mut count = [0usize; 3];
        for k in keys(6000) {
            count[usize::from(ring.owners(&k)[0].port() - 7000)] += 1;
        }
        for c in count {
            assert!((1200..=2800).contains(&c), "{count:?}");
        }
    }

    #[test]
    fn a_failure_keeps_the_surviving_owner_and_a_rejoin_restores_the_owners() {
        let all: Vec<_> = (0..5).map(|i| (addr(7000 + i), true)).collect();
        let before = Ring::new(&all, 2);
        let mut down = all.clone();
        down[1].1 = false;
        let after = Ring::new(&down, 2);
        let mut moved = 0;
        for k in keys(2000) {
            let (b, a) = (before.owners(&k), after.owners(&k));
            // Every surviving owner is still an owner: its copy is found.
            for o in b.iter().filter(|o| **o != addr(7001)) {
                assert!(a.contains(o), "{k:?}: {b:?} -> {a:?}");
            }
            if b.contains(&addr(7001)) {
                moved += 1;
            } else {
                assert_eq!(a, b, "keys the failed node did not own stay put");
            }
            assert_eq!(Ring::new(&all, 2).owners(&k), b, "rejoin");
        }
        assert!(moved > 0);
    }
}
