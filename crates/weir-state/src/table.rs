//! [`StateTable`]: one operator's view of the state store.
//!
//! Key layout: `table id (u32, big endian) | vnode (u8) | key`. Keys are
//! memcomparable (operators encode them with Arrow's row format), so a prefix
//! scan within one vnode returns keys in SQL order; this is what MIN/MAX use to
//! find the current extreme.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_common::vnode::{Vnode, VnodeRange, VNODE_COUNT};
use weir_common::Epoch;

use crate::arena::{ChangeLog, Staged};
use crate::checkpoint::{FileKind, StateFileWriter};
use crate::sink::{compaction_due, ChainPosition, CheckpointSink, StateContext, MAX_DELTA_BYTES};
use crate::{Entries, StateError, StateStoreRef};

/// What a state table remembers for its next checkpoint file.
struct CheckpointTrack {
    sink: Arc<CheckpointSink>,
    /// Committed changes since the last checkpoint.
    changes: ChangeLog,
    /// The next file must be a full snapshot (new chain, or the changes
    /// outgrew [`MAX_DELTA_BYTES`]).
    needs_full: bool,
    chain: ChainPosition,
    last_full_epoch: Epoch,
}

/// `(vnode, key, value)` triples of a whole table.
pub type VnodeEntries = Vec<(Vnode, Vec<u8>, Vec<u8>)>;

/// Identifies one state table in the store: each operator instance, table and
/// view gets its own.
pub type StateTableId = u32;

/// Staged writes over a shared store; the unit of state an operator owns.
pub struct StateTable {
    store: StateStoreRef,
    id: StateTableId,
    /// Writes since the last commit (`None` = delete), keyed by full key.
    /// Point operations dominate, so this is hashed; scans merge it.
    pending: Staged,
    /// Set when the server takes checkpoints.
    track: Option<CheckpointTrack>,
    cache_bytes: usize,
    /// The vnodes this table's owner writes (one instance of a parallel
    /// operator owns a range; its checkpoint files cover only that range).
    vnodes: VnodeRange,
}

impl StateTable {
    /// The state table `id` in `store`.
    pub fn new(store: StateStoreRef, id: StateTableId) -> Self {
        Self::with_context(&StateContext::in_memory(store), id)
    }

    /// The state table `id` of a server described by `ctx`. If the server
    /// restored a checkpoint holding this table, its file chain continues;
    /// otherwise its first checkpoint writes a full snapshot.
    pub fn with_context(ctx: &StateContext, id: StateTableId) -> Self {
        Self::with_vnodes(ctx, id, VnodeRange::FULL)
    }

    /// The part of state table `id` that one instance of a parallel
    /// operator owns: it only writes keys of `vnodes`, and its checkpoint
    /// files cover those vnodes. Instances share the table's keys in the
    /// store, so a different split of the vnodes (a rescale) reads the same
    /// state.
    pub fn with_vnodes(ctx: &StateContext, id: StateTableId, vnodes: VnodeRange) -> Self {
        let track = ctx.checkpoints.as_ref().map(|sink| {
            let restored = sink.take_restored(id, vnodes);
            CheckpointTrack {
                sink: Arc::clone(sink),
                changes: ChangeLog::default(),
                needs_full: restored.is_none(),
                chain: restored.unwrap_or_default(),
                last_full_epoch: 0,
            }
        });
        StateTable {
            store: Arc::clone(&ctx.store),
            id,
            pending: Staged::default(),
            track,
            // Instances of one operator share its cache budget, in
            // proportion to the vnodes they own.
            cache_bytes: ctx.cache_bytes / VNODE_COUNT
                * (vnodes.last as usize - vnodes.first as usize + 1),
            vnodes,
        }
    }

    /// Bytes of decoded state the owning operator may cache in memory.
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// This table's id.
    pub fn id(&self) -> StateTableId {
        self.id
    }

    /// The vnodes this table's owner writes.
    pub fn vnodes(&self) -> VnodeRange {
        self.vnodes
    }

    fn full_key(&self, vnode: Vnode, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(5 + key.len());
        k.extend_from_slice(&self.id.to_be_bytes());
        k.push(vnode);
        k.extend_from_slice(key);
        k
    }

    /// The value of `key` in `vnode`, including uncommitted writes.
    pub fn get(&self, vnode: Vnode, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let full = self.full_key(vnode, key);
        if let Some(v) = self.pending.get(&full) {
            return Ok(v.map(<[u8]>::to_vec));
        }
        self.store.get(&full)
    }

    /// Stage `key = value`.
    pub fn put(&mut self, vnode: Vnode, key: &[u8], value: Vec<u8>) {
        let full = self.full_key(vnode, key);
        self.pending.insert(&full, Some(&value));
    }

    /// Stage the removal of `key`.
    pub fn delete(&mut self, vnode: Vnode, key: &[u8]) {
        let full = self.full_key(vnode, key);
        self.pending.insert(&full, None);
    }

    /// Entries of `vnode` whose key starts with `prefix`, in key order,
    /// including uncommitted writes. Returned keys exclude the table id and
    /// vnode.
    pub fn scan_prefix(&self, vnode: Vnode, prefix: &[u8]) -> Result<Entries, StateError> {
        let full = self.full_key(vnode, prefix);
        self.merged_scan(&full, 5)
    }

    /// Committed entries of `vnode` whose key starts with `prefix`, in key
    /// order, ignoring staged writes: for an owner that knows it staged
    /// nothing under `prefix` (it caches every key it writes until the
    /// commit), this skips merging the staged writes.
    pub fn scan_committed_prefix(
        &self,
        vnode: Vnode,
        prefix: &[u8],
    ) -> Result<Entries, StateError> {
        let full = self.full_key(vnode, prefix);
        Ok(self
            .store
            .scan_prefix(&full)?
            .into_iter()
            .map(|(k, v)| (k[5..].to_vec(), v))
            .collect())
    }

    /// Entries of `vnode` with keys in `[start, end)` (`end` `None`: to
    /// the end of the vnode), in key order, including uncommitted writes.
    /// Returned keys exclude the table id and vnode.
    pub fn scan_range(
        &self,
        vnode: Vnode,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<Entries, StateError> {
        let prefix = self.full_key(vnode, &[]);
        let from = self.full_key(vnode, start);
        let to = end.map(|e| self.full_key(vnode, e));
        let in_range = |k: &[u8]| {
            k.starts_with(&prefix) && k >= from.as_slice() && to.as_deref().is_none_or(|t| k < t)
        };
        let committed = self.store.scan_range(&prefix, &from, to.as_deref())?;
        Ok(self.merge_pending(committed, in_range, 5))
    }

    /// Every committed and staged entry of the table, over all vnodes, as
    /// `(vnode, key, value)`.
    pub fn scan_all(&self) -> Result<VnodeEntries, StateError> {
        let prefix = self.id.to_be_bytes();
        Ok(self
            .merged_scan(&prefix, 4)?
            .into_iter()
            .filter_map(|(k, v)| {
                let (vnode, key) = k.split_first()?;
                Some((*vnode, key.to_vec(), v))
            })
            .collect())
    }

    fn merged_scan(&self, prefix: &[u8], strip: usize) -> Result<Entries, StateError> {
        let committed = self.store.scan_prefix(prefix)?;
        Ok(self.merge_pending(committed, |k| k.starts_with(prefix), strip))
    }

    /// `committed` entries overlaid with the staged writes whose key
    /// `selects`, in key order, each key without its first `strip` bytes.
    fn merge_pending(
        &self,
        committed: Entries,
        selects: impl Fn(&[u8]) -> bool,
        strip: usize,
    ) -> Entries {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = committed.into_iter().collect();
        for (k, v) in self.pending.iter().filter(|(k, _)| selects(k)) {
            match v {
                Some(v) => {
                    merged.insert(k.to_vec(), v.to_vec());
                }
                None => {
                    merged.remove(k);
                }
            }
        }
        merged
            .into_iter()
            .map(|(k, v)| (k[strip..].to_vec(), v))
            .collect()
    }

    /// True when writes are staged.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forget every staged write (the statement that made them failed).
    pub fn rollback(&mut self) {
        self.pending.clear();
    }

    /// Make staged writes visible to every reader of the store, atomically.
    pub fn commit(&mut self) -> Result<(), StateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // In key order: RocksDB's memtable inserts a sorted batch far faster
        // (each insert starts where the previous one ended). Sorted once,
        // for the change log and the store.
        let sorted: Vec<(&[u8], Option<&[u8]>)> = self.pending.sorted().collect();
        if let Some(track) = self.track.as_mut().filter(|t| !t.needs_full) {
            for (k, v) in &sorted {
                track.changes.push(k, *v);
            }
            if track.changes.len_bytes() > MAX_DELTA_BYTES {
                track.needs_full = true;
                track.changes = ChangeLog::default();
            }
        }
        let written = self.store.write_entries(&mut sorted.into_iter());
        self.pending.clear();
        written
    }

    /// Commit, then write this table's part of checkpoint `epoch`: the
    /// changes since its previous checkpoint (a delta file) or, for a new
    /// chain and when [`compaction_due`], all of its entries (a full file). The file is handed to the server's
    /// [`CheckpointSink`]. Without checkpoints this only commits.
    pub fn checkpoint(&mut self, epoch: Epoch) -> Result<(), StateError> {
        self.commit()?;
        let Some(track) = self.track.as_mut() else {
            return Ok(());
        };
        let full = track.needs_full
            || compaction_due(
                track.chain.deltas,
                track.chain.delta_bytes,
                track.chain.full_bytes,
            )
            || track.last_full_epoch < track.sink.full_required_after();
        let meta = if full {
            let mut writer = StateFileWriter::create(
                track.sink.dir(),
                self.id,
                epoch,
                FileKind::Full,
                self.vnodes,
            )?;
            let mut push = |k: &[u8], v: &[u8]| match k.get(4..) {
                Some([vnode, key @ ..]) => writer.push(*vnode, key, Some(v)),
                _ => Ok(()),
            };
            if self.vnodes.is_full() {
                self.store
                    .for_each_prefix(&self.id.to_be_bytes(), &mut push)?;
            } else {
                for vnode in self.vnodes.iter() {
                    let mut prefix = self.id.to_be_bytes().to_vec();
                    prefix.push(vnode);
                    self.store.for_each_prefix(&prefix, &mut push)?;
                }
            }
            let meta = writer.finish()?;
            track.needs_full = false;
            track.chain = ChainPosition {
                full_bytes: meta.size,
                ..ChainPosition::default()
            };
            track.last_full_epoch = epoch;
            meta
        } else {
            if track.changes.is_empty() {
                return Ok(());
            }
            let changes = std::mem::take(&mut track.changes);
            let mut writer = StateFileWriter::create(
                track.sink.dir(),
                self.id,
                epoch,
                FileKind::Delta,
                self.vnodes,
            )?;
            for (k, v) in changes.net() {
                if let Some([vnode, key @ ..]) = k.get(4..) {
                    writer.push(*vnode, key, v)?;
                }
            }
            let meta = writer.finish()?;
            track.chain.deltas += 1;
            track.chain.delta_bytes += meta.size;
            meta
        };
        track.changes = ChangeLog::default();
        track.sink.register(meta);
        weir_common::failpoint::hit("checkpoint-after-file");
        Ok(())
    }

    /// Committed entries of table `id` in `store`, as a reader outside the
    /// owning operator sees them (`(vnode, key, value)`).
    pub fn read_committed(
        store: &StateStoreRef,
        id: StateTableId,
    ) -> Result<VnodeEntries, StateError> {
        Ok(store
            .scan_prefix(&id.to_be_bytes())?
            .into_iter()
            .filter_map(|(k, v)| {
                let (vnode, key) = k.get(4..)?.split_first()?;
                Some((*vnode, key.to_vec(), v))
            })
            .collect())
    }

    /// Remove every committed entry of table `id` (the object was dropped).
    pub fn drop_table(store: &StateStoreRef, id: StateTableId) -> Result<(), StateError> {
        store.delete_prefix(&id.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStateStore;
    use std::sync::Arc;

    #[test]
    fn staged_writes_are_private_until_commit() {
        let store: StateStoreRef = Arc::new(MemoryStateStore::new());
        let mut t = StateTable::new(store.clone(), 7);
        t.put(3, b"k1", b"v1".to_vec());
        t.put(3, b"k2", b"v2".to_vec());
        assert_eq!(t.get(3, b"k1").unwrap(), Some(b"v1".to_vec()));
        assert!(StateTable::read_committed(&store, 7).unwrap().is_empty());
        t.commit().unwrap();
        assert_eq!(StateTable::read_committed(&store, 7).unwrap().len(), 2);
        t.delete(3, b"k1");
        let scan = t.scan_prefix(3, b"k").unwrap();
        assert_eq!(scan, vec![(b"k2".to_vec(), b"v2".to_vec())]);
        assert_eq!(t.scan_all().unwrap().len(), 1);
        // Another table's keys never show up.
        let other = StateTable::new(store, 8);
        assert!(other.scan_all().unwrap().is_empty());
    }

    #[test]
    fn range_scan_merges_staged_writes() {
        let store: StateStoreRef = Arc::new(MemoryStateStore::new());
        let mut t = StateTable::new(store, 7);
        for k in [b"a", b"b", b"c", b"d"] {
            t.put(0, k, k.to_vec());
        }
        t.put(1, b"b", b"other vnode".to_vec());
        t.commit().unwrap();
        t.delete(0, b"b");
        t.put(0, b"bb", b"new".to_vec());
        let got: Vec<Vec<u8>> = t
            .scan_range(0, b"b", Some(b"d"))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, vec![b"bb".to_vec(), b"c".to_vec()]);
        assert_eq!(t.scan_range(0, b"c", None).unwrap().len(), 2);
    }
}
