//! Operator state. Every stateful operator (and every table and view) keeps its
//! state in a [`StateTable`]: get / put / delete / ordered prefix scan over
//! memcomparable keys shaped `(state table id, vnode, key)`. Writes are staged
//! in the table and reach the shared [`StateStore`] atomically at
//! [`StateTable::commit`], which operators call at barriers.
//!
//! The store is in memory today ([`MemoryStateStore`]); a RocksDB backend
//! replaces it behind the same trait without touching operator code.

mod arena;
mod checkpoint;
mod error;
mod memory;
mod rocks;
mod sink;
mod table;
#[cfg(test)]
mod test_util;
mod wal;

pub use checkpoint::{
    push_to_chain, read_state_file, CheckpointDir, FileKind, FileMeta, Manifest, StateFileWriter,
    CHECKPOINT_FORMAT_VERSION, DEFAULT_KEEP,
};
pub use error::StateError;
pub use memory::MemoryStateStore;
pub use rocks::{prefix_upper_bound, RocksStateStore};
pub use sink::{
    compaction_due, ChainPosition, CheckpointSink, StateContext, COMPACT_AFTER_DELTAS,
    MAX_CHAIN_DELTAS,
};
pub use table::{StateTable, StateTableId, VnodeEntries};
pub use wal::{Lsn, Wal};

use std::sync::Arc;

/// Key-value pairs, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A batch of writes applied atomically: `None` deletes the key.
pub type WriteBatch = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A callback given each `(key, value)` of a streaming scan
/// ([`StateStore::for_each_prefix`]); an error stops the scan.
pub type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StateError> + 'a;

/// A key-value store with ordered keys, shared by all state tables of a server.
pub trait StateStore: Send + Sync + 'static {
    /// The value of `key`, if present.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Apply all writes atomically with respect to readers.
    fn write(&self, batch: WriteBatch) -> Result<(), StateError>;
    /// [`StateStore::write`] from borrowed `(key, value)` pairs (`None`
    /// deletes), so a caller need not copy its writes into a batch first.
    /// Backends that can take them directly override this.
    fn write_entries(
        &self,
        entries: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>,
    ) -> Result<(), StateError> {
        self.write(
            entries
                .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                .collect(),
        )
    }
    /// All entries whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StateError>;
    /// Entries whose key starts with `prefix` and lies in `[start, end)`
    /// (`end` `None`: to the end of the prefix), in key order. Backends
    /// that can seek override this.
    fn scan_range(
        &self,
        prefix: &[u8],
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<Entries, StateError> {
        Ok(self
            .scan_prefix(prefix)?
            .into_iter()
            .filter(|(k, _)| k.as_slice() >= start && end.is_none_or(|e| k.as_slice() < e))
            .collect())
    }
    /// Remove every key starting with `prefix` (used when an object is dropped).
    fn delete_prefix(&self, prefix: &[u8]) -> Result<(), StateError>;
    /// Call `f` on every entry whose key starts with `prefix`, in key order,
    /// stopping at the first error `f` returns. Backends that can stream
    /// override this so state bigger than memory can be read (e.g. to write a
    /// full snapshot); the default collects [`StateStore::scan_prefix`].
    fn for_each_prefix(&self, prefix: &[u8], f: &mut EntryVisitor<'_>) -> Result<(), StateError> {
        for (k, v) in self.scan_prefix(prefix)? {
            f(&k, &v)?;
        }
        Ok(())
    }
    /// The store as it is now, frozen: later writes are not seen through it.
    /// Several scans of one snapshot agree with each other (one SELECT
    /// reading two views, or every statement of a transaction).
    fn snapshot(self: Arc<Self>) -> SnapshotRef;
    /// What the store holds in memory now, by part: `(name, bytes,
    /// description)`. Empty for stores that do not measure it.
    fn memory_usage(&self) -> Vec<MemoryUsage> {
        Vec::new()
    }
}

/// One part of a component's memory (see [`StateStore::memory_usage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Short stable name, e.g. `rocksdb_block_cache`.
    pub name: &'static str,
    /// Bytes it holds now.
    pub bytes: u64,
    /// What it is, for people reading the system view.
    pub description: &'static str,
}

/// A read-only, consistent view of a [`StateStore`] at one moment.
pub trait StoreSnapshot: Send + Sync {
    /// Call `f` on every entry whose key starts with `prefix`, in key order,
    /// as of the snapshot; stops at the first error `f` returns.
    fn for_each_prefix(&self, prefix: &[u8], f: &mut EntryVisitor<'_>) -> Result<(), StateError>;
}

/// A shared snapshot handle.
pub type SnapshotRef = Arc<dyn StoreSnapshot>;

/// The store handle operators share.
pub type StateStoreRef = Arc<dyn StateStore>;
