//! The in-memory state store: one hash map per state table, behind a
//! reader-writer lock.
//!
//! Point reads and writes (every stored row, every aggregate group) are hash
//! lookups; ordered prefix scans sort the matching entries when asked. That
//! suits this store's use, where scans read whole tables or views, while an
//! ordered map made every row write pay a tree walk of byte comparisons.

use std::collections::HashMap;

use parking_lot::RwLock;

use std::sync::Arc;

use crate::{
    Entries, EntryVisitor, SnapshotRef, StateError, StateStore, StoreSnapshot, WriteBatch,
};

/// A fast hasher: keys are memcomparable rows, hashed once per access.
type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Length of the state-table id that leads every key.
const TABLE_ID_LEN: usize = 4;

/// One state table's entries: key (after the table id) → value.
type TableEntries = Map<Vec<u8>, Vec<u8>>;

/// State kept in process memory. Lost on restart; a durable backend comes
/// with checkpoints.
#[derive(Default)]
pub struct MemoryStateStore {
    /// State-table id bytes → (rest of the key → value).
    tables: RwLock<Map<[u8; TABLE_ID_LEN], TableEntries>>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A frozen copy of a [`MemoryStateStore`].
struct MemorySnapshot(Map<[u8; TABLE_ID_LEN], TableEntries>);

impl StoreSnapshot for MemorySnapshot {
    fn for_each_prefix(&self, prefix: &[u8], f: &mut EntryVisitor<'_>) -> Result<(), StateError> {
        for (k, v) in scan_tables(&self.0, prefix) {
            f(&k, &v)?;
        }
        Ok(())
    }
}

/// Every entry of `tables` whose full key starts with `prefix`, in key order.
fn scan_tables(tables: &Map<[u8; TABLE_ID_LEN], TableEntries>, prefix: &[u8]) -> Entries {
    let mut out: Entries = Vec::new();
    for (id, table) in tables.iter() {
        let (id_part, rest_prefix) = match prefix.len() {
            n if n >= TABLE_ID_LEN => (&prefix[..TABLE_ID_LEN], &prefix[TABLE_ID_LEN..]),
            _ => (prefix, &[][..]),
        };
        if !id.starts_with(id_part) {
            continue;
        }
        for (k, v) in table.iter().filter(|(k, _)| k.starts_with(rest_prefix)) {
            let mut full = Vec::with_capacity(TABLE_ID_LEN + k.len());
            full.extend_from_slice(id);
            full.extend_from_slice(k);
            out.push((full, v.clone()));
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Split a key into its table id and the rest.
fn split(key: &[u8]) -> Option<([u8; TABLE_ID_LEN], &[u8])> {
    let (id, rest) = key.split_at_checked(TABLE_ID_LEN)?;
    Some((id.try_into().ok()?, rest))
}

impl StateStore for MemoryStateStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let Some((id, rest)) = split(key) else {
            return Ok(None);
        };
        Ok(self
            .tables
            .read()
            .get(&id)
            .and_then(|t| t.get(rest))
            .cloned())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StateError> {
        let mut tables = self.tables.write();
        for (k, v) in batch {
            let Some((id, _)) = split(&k) else {
                return Err(StateError::Backend(format!(
                    "key of {} bytes has no table id",
                    k.len()
                )));
            };
            let mut rest = k;
            rest.drain(..TABLE_ID_LEN);
            match v {
                Some(v) => {
                    tables.entry(id).or_default().insert(rest, v);
                }
                None => {
                    if let Some(t) = tables.get_mut(&id) {
                        t.remove(&rest);
                    }
                }
            }
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StateError> {
        Ok(scan_tables(&self.tables.read(), prefix))
    }

    /// A copy of every entry: this store holds test-sized state.
    fn snapshot(self: Arc<Self>) -> SnapshotRef {
        Arc::new(MemorySnapshot(self.tables.read().clone()))
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<(), StateError> {
        let mut tables = self.tables.write();
        if prefix.len() <= TABLE_ID_LEN {
            tables.retain(|id, _| !id.starts_with(prefix));
            return Ok(());
        }
        let Some((id, rest)) = split(prefix) else {
            return Ok(());
        };
        if let Some(t) = tables.get_mut(&id) {
            t.retain(|k, _| !k.starts_with(rest));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32, rest: &[u8]) -> Vec<u8> {
        let mut k = id.to_be_bytes().to_vec();
        k.extend_from_slice(rest);
        k
    }

    #[test]
    fn prefix_scan_is_ordered_and_bounded() {
        let s = MemoryStateStore::new();
        s.write(vec![
            (key(1, &[2]), Some(vec![b'a'])),
            (key(1, &[1]), Some(vec![b'b'])),
            (key(1, &[1, 255]), Some(vec![b'c'])),
            (key(2, &[0]), Some(vec![b'd'])),
        ])
        .unwrap();
        let got: Vec<_> = s
            .scan_prefix(&key(1, &[]))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, vec![key(1, &[1]), key(1, &[1, 255]), key(1, &[2])]);
        let got: Vec<_> = s
            .scan_prefix(&key(1, &[1]))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, vec![key(1, &[1]), key(1, &[1, 255])]);
        assert_eq!(s.get(&key(2, &[0])).unwrap(), Some(vec![b'd']));
        s.write(vec![(key(2, &[0]), None)]).unwrap();
        assert_eq!(s.get(&key(2, &[0])).unwrap(), None);
        s.delete_prefix(&key(1, &[])).unwrap();
        assert_eq!(s.scan_prefix(&[]).unwrap().len(), 0);
    }
}
