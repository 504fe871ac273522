//! [`CheckpointSink`]: where state tables hand in the files they wrote for a
//! checkpoint, and [`StateContext`], what every state table of a server
//! shares (the store, the sink, the cache budget).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use weir_common::Epoch;

use crate::checkpoint::{FileKind, FileMeta, Manifest};
use crate::{StateStoreRef, StateTableId};

/// A state table writes a full snapshot instead of a delta once this many
/// deltas follow its last full file, so recovery reads a bounded chain.
pub const COMPACT_AFTER_DELTAS: usize = 8;

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
    restored: Mutex<HashMap<StateTableId, usize>>,
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

    /// Remember the chains of the manifest recovery starts from.
    pub fn restore_chains(&self, manifest: &Manifest) {
        let mut restored = self.restored.lock();
        restored.clear();
        for (id, chain) in &manifest.tables {
            let deltas = chain
                .iter()
                .rev()
                .take_while(|f| f.kind == FileKind::Delta)
                .count();
            restored.insert(*id, deltas);
        }
    }

    /// The restored chain of table `id`, once: `Some(deltas after its full
    /// file)` if the table continues a chain of the restored manifest.
    pub fn take_restored(&self, id: StateTableId) -> Option<usize> {
        self.restored.lock().remove(&id)
    }

    /// Forget restored chains of `ids` (their state is rebuilt from scratch).
    pub fn forget_restored(&self, ids: &[StateTableId]) {
        let mut restored = self.restored.lock();
        for id in ids {
            restored.remove(id);
        }
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
