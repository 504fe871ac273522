//! [`CheckpointSink`]: where state tables hand in the files they wrote for a
//! checkpoint, and [`StateContext`], what every state table of a server
//! shares (the store, the sink, the cache budget).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use weir_common::vnode::VnodeRange;
use weir_common::Epoch;

use crate::checkpoint::{FileKind, FileMeta, Manifest};
use crate::{StateStoreRef, StateTableId};

/// A state table writes a full snapshot instead of a delta once at least
/// this many deltas follow its last full file and together they are as
/// big as it (so a big table with few changes is not rewritten every few
/// seconds, and a growing table is rewritten each time it doubles: full
/// files cost about twice the final size in all, and recovery reads at
/// most twice a table's size)...
pub const COMPACT_AFTER_DELTAS: usize = 8;

/// ... and in any case once this many deltas follow it, so recovery reads a
/// bounded chain.
pub const MAX_CHAIN_DELTAS: usize = 256;

/// Whether a state table's next checkpoint file is a full snapshot, given
/// the deltas written since its last full file and their total size.
pub fn compaction_due(deltas: usize, delta_bytes: u64, full_bytes: u64) -> bool {
    deltas >= MAX_CHAIN_DELTAS || (deltas >= COMPACT_AFTER_DELTAS && delta_bytes >= full_bytes)
}

/// Where a restored table's chain stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainPosition {
    /// Deltas after the last full file.
    pub deltas: usize,
    /// Their total size.
    pub delta_bytes: u64,
    /// Size of the full file (0 if the chain has none).
    pub full_bytes: u64,
}

/// Changes a state table remembers between checkpoints, in bytes; past it
/// the table forgets them and writes a full snapshot at the next checkpoint.
pub const MAX_DELTA_BYTES: usize = 64 << 20;

/// Collects the files written for each checkpoint epoch until the
/// coordinator puts them in a manifest.
pub struct CheckpointSink {
    dir: PathBuf,
    files: Mutex<BTreeMap<Epoch, Vec<FileMeta>>>,
    /// Chains restored from the manifest recovery started from: state table
    /// id → deltas after its last full file. A table found here continues
    /// its chain; any other table starts a new one with a full snapshot.
    restored: Mutex<HashMap<(StateTableId, VnodeRange), ChainPosition>>,
    /// Tables write a full snapshot at any checkpoint epoch at or past this
    /// one if their last full file is older (set when a checkpoint failed
    /// after tables had already written deltas for it).
    force_full_from: AtomicU64,
}

impl CheckpointSink {
    /// Files go to `dir` (`<data-dir>/checkpoints`).
    pub fn new(dir: &Path) -> Self {
        CheckpointSink {
            dir: dir.to_path_buf(),
            files: Mutex::new(BTreeMap::new()),
            restored: Mutex::new(HashMap::new()),
            force_full_from: AtomicU64::new(0),
        }
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Record a file written for its epoch.
    pub fn register(&self, meta: FileMeta) {
        self.files.lock().entry(meta.epoch).or_default().push(meta);
    }

    /// Take the files of `epoch` (and forget those of older, abandoned
    /// epochs).
    pub fn take(&self, epoch: Epoch) -> Vec<FileMeta> {
        let mut files = self.files.lock();
        let newer = files.split_off(&(epoch + 1));
        let mut older = std::mem::replace(&mut *files, newer);
        older.remove(&epoch).unwrap_or_default()
    }

    /// Remember the chains of the manifest recovery starts from, per table
    /// and vnode range (one per instance of a parallel operator).
    pub fn restore_chains(&self, manifest: &Manifest) {
        let mut restored = self.restored.lock();
        restored.clear();
        for (id, chain) in &manifest.tables {
            for f in chain {
                let pos = restored.entry((*id, f.vnodes())).or_default();
                match f.kind {
                    FileKind::Full => {
                        *pos = ChainPosition {
                            full_bytes: f.size,
                            ..ChainPosition::default()
                        }
                    }
                    FileKind::Delta => {
                        pos.deltas += 1;
                        pos.delta_bytes += f.size;
                    }
                }
            }
        }
    }

    /// The restored chain of table `id` over `vnodes`, once, if an instance
    /// owning exactly these vnodes continues a chain of the restored
    /// manifest (after a rescale it starts a new one).
    pub fn take_restored(&self, id: StateTableId, vnodes: VnodeRange) -> Option<ChainPosition> {
        self.restored.lock().remove(&(id, vnodes))
    }

    /// Forget restored chains of `ids` (their state is rebuilt from scratch).
    pub fn forget_restored(&self, ids: &[StateTableId]) {
        self.restored.lock().retain(|(id, _), _| !ids.contains(id));
    }

    /// Make every table write a full snapshot at its next checkpoint at or
    /// after `epoch` (a checkpoint failed, so deltas written for it are lost).
    pub fn force_full_from(&self, epoch: Epoch) {
        self.force_full_from.fetch_max(epoch, Ordering::SeqCst);
    }

    pub(crate) fn full_required_after(&self) -> Epoch {
        self.force_full_from.load(Ordering::SeqCst)
    }
}

/// What every state table of a server shares.
#[derive(Clone)]
pub struct StateContext {
    /// The store holding committed state.
    pub store: StateStoreRef,
    /// Where checkpoint files go; `None` when the server keeps no
    /// checkpoints (unit tests, benchmarks of one operator).
    pub checkpoints: Option<Arc<CheckpointSink>>,
    /// Bytes of decoded state an operator may keep in memory (its cache of
    /// hot keys); past it, clean entries are evicted at barriers.
    pub cache_bytes: usize,
}

impl StateContext {
    /// A context without checkpoints and with a 256 MiB cache budget.
    pub fn in_memory(store: StateStoreRef) -> Self {
        StateContext {
            store,
            checkpoints: None,
            cache_bytes: 256 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_waits_for_enough_delta_bytes_but_bounds_the_chain() {
        // Few or small deltas over a big full file: keep appending.
        assert!(!compaction_due(3, 900, 1_000));
        assert!(!compaction_due(10, 100, 1_000_000));
        // Enough deltas, not yet as big as the full file: keep appending.
        assert!(!compaction_due(8, 999, 1_000));
        // Enough deltas as big as the full file: compact.
        assert!(compaction_due(8, 1_000, 1_000));
        // Never more than MAX_CHAIN_DELTAS deltas.
        assert!(compaction_due(MAX_CHAIN_DELTAS, 1, 1_000_000));
    }

    #[test]
    fn take_returns_one_epoch_and_drops_abandoned_ones() {
        let sink = CheckpointSink::new(Path::new("/nonexistent"));
        let meta = |epoch, table_id| FileMeta {
            name: format!("{epoch:020}-{table_id:010}-delta.parquet"),
            table_id,
            epoch,
            kind: FileKind::Delta,
            rows: 1,
            size: 10,
            crc32: 0,
            first_vnode: 0,
            last_vnode: 255,
        };
        sink.register(meta(3, 1));
        sink.register(meta(4, 1));
        sink.register(meta(4, 2));
        sink.register(meta(5, 1));
        let got = sink.take(4);
        assert_eq!(got.len(), 2);
        // Epoch 3 never completed: gone. Epoch 5 is still to come.
        assert!(sink.take(3).is_empty());
        assert_eq!(sink.take(5).len(), 1);
    }
}
