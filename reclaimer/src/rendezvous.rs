//! One claimer per orphan: rendezvous (highest-random-weight) hashing of the connection
//! id over the live set.
//!
//! Every survivor computes, for an orphaned connection `c` and each live instance `p`,
//! a weight `w(c, p)`; the instance with the highest weight is the designated claimer
//! (ties, which need a 64-bit collision, go to the smallest id). Survivors that see the
//! same live set agree without talking to each other; orphans spread evenly over the
//! live set; and when an instance joins or leaves, only the orphans it wins or loses
//! change hands. Survivors whose views differ may disagree, which costs a wasted claim
//! attempt, never a double claim: the claim itself is a compare-and-swap.
//!
//! # The hash (fixed forever)
//! The weight must be identical in every process, on every platform and in every
//! version of this crate, so it is defined here rather than taken from `std` (whose
//! `DefaultHasher` is randomly keyed and may change):
//!
//! ```text
//! fnv1a64(bytes)  = FNV-1a 64: h = 0xcbf29ce484222325; for each byte b:
//!                   h = (h XOR b) * 0x100000001b3   (wrapping)
//! fmix64(k)       = MurmurHash3's finalizer: k ^= k >> 33; k *= 0xff51afd7ed558ccd;
//!                   k ^= k >> 33; k *= 0xc4ceb9fe1a85ec53; k ^= k >> 33
//! key_hash(s)     = fmix64(fnv1a64(UTF-8 bytes of s))
//! weight(c, p)    = fmix64((key_hash(c) * 0x9e3779b97f4a7c15) XOR key_hash(p))
//! ```
//!
//! Changing any constant is a breaking change of the protocol: mixed versions would
//! designate different claimers (still safe, but wasteful). `golden_values_never_change`
//! in this module's tests pins it.
//!
//! ```
//! use heartbeat_core::InstanceId;
//! use reclaimer::rendezvous::Rendezvous;
//! let live: Vec<InstanceId> = ["pod-a", "pod-b", "pod-c"].iter().map(|s| s.parse().unwrap()).collect();
//! let rv = Rendezvous::new(live.iter());
//! let who = rv.designate("3f2b8c1e-5a7d-4e9a-9b1c-2d4e6f8a0b1c").unwrap();
//! // Every process computes the same answer.
//! assert_eq!(Rendezvous::new(live.iter().rev()).designate("3f2b8c1e-5a7d-4e9a-9b1c-2d4e6f8a0b1c"), Some(who));
//! ```

use heartbeat_core::InstanceId;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finalizer: a bijective avalanche mix.
#[inline]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The stable hash of a key (a connection id or an instance id).
#[inline]
pub fn key_hash(s: &str) -> u64 {
    fmix64(fnv1a64(s.as_bytes()))
}

/// The rendezvous weight of instance (hash `peer`) for connection (hash `connection`).
#[inline]
pub fn weight(connection: u64, peer: u64) -> u64 {
    fmix64(connection.wrapping_mul(GOLDEN) ^ peer)
}

/// A live set prepared for designation: each instance id hashed once.
#[derive(Debug, Clone)]
pub struct Rendezvous<'a> {
    /// (hash, id), sorted by id so that ties go to the smallest id.
    peers: Vec<(u64, &'a InstanceId)>,
}

impl<'a> Rendezvous<'a> {
    /// Prepares the live set (any order; duplicates are ignored).
    pub fn new(live: impl IntoIterator<Item = &'a InstanceId>) -> Self {
        let mut peers: Vec<(u64, &'a InstanceId)> = live
            .into_iter()
            .map(|id| (key_hash(id.as_str()), id))
            .collect();
        peers.sort_by(|a, b| a.1.cmp(b.1));
        peers.dedup_by(|a, b| a.1 == b.1);
        Self { peers }
    }

    /// Number of instances in the live set.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the live set is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Position of `id` in the live set, if present (for [`Rendezvous::designate_index`]).
    pub fn index_of(&self, id: &InstanceId) -> Option<usize> {
        self.peers.binary_search_by(|p| p.1.cmp(id)).ok()
    }

    /// The designated claimer of `connection_id`; `None` if the live set is empty.
    pub fn designate(&self, connection_id: &str) -> Option<&'a InstanceId> {
        self.designate_index(key_hash(connection_id))
            .map(|i| self.peers[i].1)
    }

    /// Whether the instance at position `me` (see [`Rendezvous::index_of`]) is the
    /// designated claimer of the connection whose [`key_hash`] is `connection`. Same
    /// answer as comparing [`Rendezvous::designate_index`] with `me`, but stops at the
    /// first instance that outweighs `me`: for the orphans designated to others (all
    /// but about 1 in n) that is after a handful of instances, not n.
    #[inline]
    pub fn is_designated(&self, connection: u64, me: usize) -> bool {
        let Some(&(mine, _)) = self.peers.get(me) else {
            return false;
        };
        let mine = weight(connection, mine);
        for (i, &(h, _)) in self.peers.iter().enumerate() {
            let w = weight(connection, h);
            // Outweighed, or tied by a smaller id (ties go to the smallest id).
            if w > mine || (w == mine && i < me) {
                return false;
            }
        }
        true
    }

    /// Position (see [`Rendezvous::index_of`]) of the designated claimer of the
    /// connection whose [`key_hash`] is `connection`.
    #[inline]
    pub fn designate_index(&self, connection: u64) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, &(h, _)) in self.peers.iter().enumerate() {
            let w = weight(connection, h);
            // Strictly greater: on a tie the earlier (smaller) id keeps it.
            if best.is_none_or(|(bw, _)| w > bw) {
                best = Some((w, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ids(n: usize) -> Vec<InstanceId> {
        (0..n)
            .map(|i| InstanceId::new(format!("wsm-pod-{i}")).unwrap())
            .collect()
    }

    #[test]
    fn golden_values_never_change() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash(""), GOLDEN_EMPTY);
        assert_eq!(key_hash("wsm-7d9f8c6b5-x2x9q"), GOLDEN_POD);
        assert_eq!(
            weight(
                key_hash("3f2b8c1e-5a7d-4e9a-9b1c-2d4e6f8a0b1c"),
                key_hash("wsm-7d9f8c6b5-x2x9q")
            ),
            GOLDEN_WEIGHT
        );
    }

    // Computed independently from the definition in the module docs (Python).
    const GOLDEN_EMPTY: u64 = 0xefd0_1f60_ba99_2926;
    const GOLDEN_POD: u64 = 0x2637_2db7_8d02_314b;
    const GOLDEN_WEIGHT: u64 = 0x647d_07e5_a5da_fa14;

    #[test]
    fn orphans_spread_evenly_over_the_live_set() {
        let live = ids(7);
        let rv = Rendezvous::new(live.iter());
        let mut counts: BTreeMap<&InstanceId, usize> = BTreeMap::new();
        let n = 70_000;
        for c in 0..n {
            let id = format!("{c:08x}-5a7d-4e9a-9b1c-2d4e6f8a0b1c");
            *counts.entry(rv.designate(&id).unwrap()).or_default() += 1;
        }
        assert_eq!(counts.len(), 7);
        for (who, &k) in &counts {
            // Expected 10,000 each; a binomial standard deviation is ~93.
            assert!((9_500..=10_500).contains(&k), "{who}: {k}");
        }
    }

    #[test]
    fn a_departure_moves_only_the_orphans_of_the_departed() {
        let live = ids(6);
        let all = Rendezvous::new(live.iter());
        let fewer = Rendezvous::new(live.iter().filter(|id| id.as_str() != "wsm-pod-3"));
        for c in 0..10_000 {
            let id = format!("conn-{c}");
            let before = all.designate(&id).unwrap();
            let after = fewer.designate(&id).unwrap();
            if before.as_str() != "wsm-pod-3" {
                assert_eq!(before, after, "{id}");
            }
        }
    }

    #[test]
    fn is_designated_agrees_with_designate() {
        let live = ids(13);
        let rv = Rendezvous::new(live.iter());
        for c in 0..5_000 {
            let h = key_hash(&format!("conn-{c}"));
            let who = rv.designate_index(h).unwrap();
            for me in 0..rv.len() {
                assert_eq!(rv.is_designated(h, me), me == who);
            }
            assert!(!rv.is_designated(h, rv.len()));
        }
    }

    #[test]
    fn empty_live_set_designates_nobody() {
        let rv = Rendezvous::new(std::iter::empty());
        assert!(rv.is_empty());
        assert_eq!(rv.designate("c"), None);
    }
}
