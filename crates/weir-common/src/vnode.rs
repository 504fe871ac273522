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

#[cfg(test)]
mod tests {
    use super::*;

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
