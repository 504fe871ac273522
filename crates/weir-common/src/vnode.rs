//! Virtual nodes: the unit of key distribution. A key's vnode is a stable hash
//! of its memcomparable bytes over [`VNODE_COUNT`] buckets, so state keys and
//! (later) parallel instances agree on where a key lives across restarts.

/// How many virtual nodes keys are spread over.
pub const VNODE_COUNT: usize = 256;

/// A virtual node number, `0..VNODE_COUNT`.
pub type Vnode = u8;

/// The vnode of a key, from its encoded bytes. Stable across processes and
/// versions: it is persisted as part of every state key.
pub fn vnode_of(key: &[u8]) -> Vnode {
    (xxhash_rust::xxh3::xxh3_64(key) % VNODE_COUNT as u64) as Vnode
}

/// Most instances one operator may run as: every instance owns at least
/// one vnode.
pub const MAX_PARALLELISM: usize = VNODE_COUNT;

/// A contiguous, non-empty range of vnodes `first..=last`: what one
/// instance of a parallel operator owns, and what one checkpoint file of
/// its state covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VnodeRange {
    /// First vnode of the range.
    pub first: Vnode,
    /// Last vnode of the range (inclusive).
    pub last: Vnode,
}

impl VnodeRange {
    /// Every vnode: what a single instance owns.
    pub const FULL: VnodeRange = VnodeRange {
        first: 0,
        last: (VNODE_COUNT - 1) as Vnode,
    };

    /// The vnodes instance `i` of `n` owns (consistent hashing over vnodes:
    /// contiguous ranges of near-equal size). `n` is clamped to
    /// `1..=MAX_PARALLELISM` and `i` to `0..n`.
    pub fn of_instance(i: usize, n: usize) -> VnodeRange {
        let n = n.clamp(1, MAX_PARALLELISM);
        let i = i.min(n - 1);
        let start = (i * VNODE_COUNT).div_ceil(n);
        let end = ((i + 1) * VNODE_COUNT).div_ceil(n);
        VnodeRange {
            first: start as Vnode,
            last: (end - 1) as Vnode,
        }
    }

    /// Whether `v` is in the range.
    pub fn contains(&self, v: Vnode) -> bool {
        self.first <= v && v <= self.last
    }

    /// Every vnode of the range, in order.
    pub fn iter(&self) -> impl Iterator<Item = Vnode> {
        self.first..=self.last
    }

    /// True for [`VnodeRange::FULL`].
    pub fn is_full(&self) -> bool {
        *self == Self::FULL
    }
}

/// The instance (of `n`) owning vnode `v`: the inverse of
/// [`VnodeRange::of_instance`].
pub fn instance_of(v: Vnode, n: usize) -> usize {
    let n = n.clamp(1, MAX_PARALLELISM);
    (v as usize * n) / VNODE_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_own_disjoint_ranges_covering_every_vnode() {
        for n in [1usize, 2, 3, 4, 7, 255, 256] {
            let mut owner = [usize::MAX; VNODE_COUNT];
            for i in 0..n {
                let r = VnodeRange::of_instance(i, n);
                for v in r.iter() {
                    assert_eq!(owner[v as usize], usize::MAX, "n={n} v={v} owned twice");
                    owner[v as usize] = i;
                }
            }
            for (v, o) in owner.iter().enumerate() {
                assert_eq!(*o, instance_of(v as Vnode, n), "n={n} v={v}");
            }
        }
        assert_eq!(VnodeRange::of_instance(0, 1), VnodeRange::FULL);
        assert_eq!(
            VnodeRange::of_instance(1, 2),
            VnodeRange {
                first: 128,
                last: 255
            }
        );
    }

    #[test]
    fn vnodes_are_stable_and_spread() {
        assert_eq!(vnode_of(b"abc"), vnode_of(b"abc"));
        let mut seen = [false; VNODE_COUNT];
        for i in 0..10_000u32 {
            seen[vnode_of(&i.to_be_bytes()) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
