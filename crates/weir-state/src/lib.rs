//! Operator state. Every stateful operator (and every table and view) keeps its
//! state in a [`StateTable`]: get / put / delete / ordered prefix scan over
//! memcomparable keys shaped `(state table id, vnode, key)`. Writes are staged
//! in the table and reach the shared [`StateStore`] atomically at
//! [`StateTable::commit`], which operators call at barriers.
//!
//! The store is in memory today ([`MemoryStateStore`]); a RocksDB backend
//! replaces it behind the same trait without touching operator code.

mod error;
mod memory;
mod table;

pub use error::StateError;
pub use memory::MemoryStateStore;
pub use table::{StateTable, StateTableId, VnodeEntries};

use std::sync::Arc;

/// Key-value pairs, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A batch of writes applied atomically: `None` deletes the key.
pub type WriteBatch = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A key-value store with ordered keys, shared by all state tables of a server.
pub trait StateStore: Send + Sync + 'static {
    /// The value of `key`, if present.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Apply all writes atomically with respect to readers.
    fn write(&self, batch: WriteBatch) -> Result<(), StateError>;
    /// All entries whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StateError>;
    /// Remove every key starting with `prefix` (used when an object is dropped).
    fn delete_prefix(&self, prefix: &[u8]) -> Result<(), StateError>;
}

/// The store handle operators share.
pub type StateStoreRef = Arc<dyn StateStore>;
