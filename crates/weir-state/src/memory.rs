//! The in-memory state store: one ordered map behind a reader-writer lock.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use crate::{Entries, StateError, StateStore, WriteBatch};

/// State kept in process memory. Lost on restart; a durable backend comes
/// with checkpoints.
#[derive(Default)]
pub struct MemoryStateStore {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn prefix_range(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    // The smallest key greater than every key with this prefix.
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last == u8::MAX {
            end.pop();
        } else {
            *last += 1;
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(end));
        }
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

impl StateStore for MemoryStateStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.map.read().get(key).cloned())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StateError> {
        let mut map = self.map.write();
        for (k, v) in batch {
            match v {
                Some(v) => {
                    map.insert(k, v);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StateError> {
        let map = self.map.read();
        Ok(map
            .range(prefix_range(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<(), StateError> {
        let mut map = self.map.write();
        let keys: Vec<Vec<u8>> = map
            .range(prefix_range(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            map.remove(&k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_scan_is_ordered_and_bounded() {
        let s = MemoryStateStore::new();
        s.write(vec![
            (vec![1, 2], Some(vec![b'a'])),
            (vec![1, 1], Some(vec![b'b'])),
            (vec![1, 255], Some(vec![b'c'])),
            (vec![2, 0], Some(vec![b'd'])),
        ])
        .unwrap();
        let got: Vec<_> = s
            .scan_prefix(&[1])
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, vec![vec![1, 1], vec![1, 2], vec![1, 255]]);
        s.delete_prefix(&[1]).unwrap();
        assert_eq!(s.scan_prefix(&[]).unwrap().len(), 1);
    }
}
