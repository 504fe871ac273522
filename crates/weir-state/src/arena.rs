//! Compact key-value buffers for what a state table holds between commits
//! and checkpoints. A map of owned keys and values costs two allocations and
//! a map slot per entry, about three times the bytes of the small keys and
//! values operators write; here every key and value lives in one buffer and
//! an entry costs its bytes plus 16 (plus 8 for the hash index of
//! [`Staged`]). This is what bounds the memory of a large statement.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// One entry: where its key and value are in [`Arena::bytes`].
#[derive(Clone, Copy)]
struct Entry {
    start: u64,
    key_len: u32,
    /// [`DELETED`] for a removal.
    value_len: u32,
}

const DELETED: u32 = u32::MAX;

/// Entries appended in order, never changed.
#[derive(Default)]
struct Arena {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

impl Arena {
    /// Append `key = value` (`None`: a removal); returns its id.
    fn push(&mut self, key: &[u8], value: Option<&[u8]>) -> u32 {
        let start = self.bytes.len() as u64;
        self.bytes.extend_from_slice(key);
        if let Some(v) = value {
            self.bytes.extend_from_slice(v);
        }
        self.entries.push(Entry {
            start,
            key_len: key.len() as u32,
            value_len: value.map_or(DELETED, |v| v.len() as u32),
        });
        (self.entries.len() - 1) as u32
    }

    fn key(&self, id: u32) -> &[u8] {
        let e = self.entries[id as usize];
        let start = e.start as usize;
        &self.bytes[start..start + e.key_len as usize]
    }

    fn value(&self, id: u32) -> Option<&[u8]> {
        let e = self.entries[id as usize];
        (e.value_len != DELETED).then(|| {
            let start = e.start as usize + e.key_len as usize;
            &self.bytes[start..start + e.value_len as usize]
        })
    }

    /// `ids` sorted by key; equal keys keep their order (stable).
    fn sort_by_key(&self, ids: &mut [u32]) {
        ids.sort_by(|a, b| self.key(*a).cmp(self.key(*b)));
    }

    /// Forget every entry; a large buffer is given back to the allocator
    /// rather than kept for the next statement.
    fn clear(&mut self) {
        const KEEP: usize = 4 << 20;
        if self.bytes.capacity() > KEEP || self.entries.capacity() * 16 > KEEP {
            *self = Arena::default();
        } else {
            self.bytes.clear();
            self.entries.clear();
        }
    }
}

/// Changes in commit order, several per key; the last one of a key wins.
#[derive(Default)]
pub(crate) struct ChangeLog {
    arena: Arena,
}

impl ChangeLog {
    /// Log `key = value` (`None`: deleted).
    pub(crate) fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.arena.push(key, value);
    }

    /// Bytes of keys and values logged.
    pub(crate) fn len_bytes(&self) -> usize {
        self.arena.bytes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.arena.entries.is_empty()
    }

    /// The last change of each key, in key order.
    pub(crate) fn net(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let mut ids: Vec<u32> = (0..self.arena.entries.len() as u32).collect();
        self.arena.sort_by_key(&mut ids);
        let arena = &self.arena;
        let last: Vec<u32> = ids
            .iter()
            .enumerate()
            .filter(|(i, id)| {
                ids.get(i + 1)
                    .is_none_or(|next| arena.key(*next) != arena.key(**id))
            })
            .map(|(_, id)| *id)
            .collect();
        last.into_iter().map(|id| (arena.key(id), arena.value(id)))
    }
}

/// Writes staged since the last commit: the newest value of each key,
/// found by a hash index over the arena.
#[derive(Default)]
pub(crate) struct Staged {
    arena: Arena,
    /// Ids of the live entries (the newest of each key).
    index: HashTable<u32>,
    hasher: foldhash::fast::FixedState,
}

impl Staged {
    /// The staged value of `key`: `Some(None)` if it is staged for
    /// removal, `None` if nothing is staged for it.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |id| self.arena.key(*id) == key)
            .map(|id| self.arena.value(*id))
    }

    /// Stage `key = value` (`None`: remove), replacing what was staged.
    pub(crate) fn insert(&mut self, key: &[u8], value: Option<&[u8]>) {
        let id = self.arena.push(key, value);
        let hash = self.hasher.hash_one(key);
        let Staged {
            arena,
            index,
            hasher,
        } = self;
        match index.find_mut(hash, |old| arena.key(*old) == key) {
            Some(old) => *old = id,
            None => {
                index.insert_unique(hash, id, |id| hasher.hash_one(arena.key(*id)));
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every staged key with its value (`None`: removal), in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.index
            .iter()
            .map(|id| (self.arena.key(*id), self.arena.value(*id)))
    }

    /// Every staged key with its value, in key order.
    pub(crate) fn sorted(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let mut ids: Vec<u32> = self.index.iter().copied().collect();
        self.arena.sort_by_key(&mut ids);
        ids.into_iter()
            .map(|id| (self.arena.key(id), self.arena.value(id)))
    }

    pub(crate) fn clear(&mut self) {
        self.arena.clear();
        if self.index.capacity() > 1 << 16 {
            self.index = HashTable::new();
        } else {
            self.index.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned<'a>(
        it: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        it.map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect()
    }

    #[test]
    fn change_log_keeps_the_last_change_per_key_in_key_order() {
        let mut log = ChangeLog::default();
        log.push(b"b", Some(b"1"));
        log.push(b"a", Some(b"2"));
        log.push(b"b", None);
        log.push(b"c", Some(b""));
        log.push(b"a", Some(b"3"));
        assert_eq!(log.len_bytes(), 8);
        assert_eq!(
            owned(log.net()),
            vec![
                (b"a".to_vec(), Some(b"3".to_vec())),
                (b"b".to_vec(), None),
                (b"c".to_vec(), Some(Vec::new())),
            ]
        );
    }

    #[test]
    fn staged_writes_replace_per_key() {
        let mut s = Staged::default();
        assert!(s.is_empty());
        for i in 0..10_000u32 {
            s.insert(&(i % 1000).to_be_bytes(), Some(&i.to_be_bytes()));
        }
        s.insert(&7u32.to_be_bytes(), None);
        assert_eq!(s.get(&7u32.to_be_bytes()), Some(None));
        assert_eq!(
            s.get(&8u32.to_be_bytes()),
            Some(Some(&9008u32.to_be_bytes()[..]))
        );
        assert_eq!(s.get(&1000u32.to_be_bytes()), None);
        assert_eq!(s.iter().count(), 1000);
        let sorted = owned(s.sorted());
        assert_eq!(sorted.len(), 1000);
        assert!(sorted.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(sorted[7], (7u32.to_be_bytes().to_vec(), None));
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.get(&8u32.to_be_bytes()), None);
    }
}
