//! The RocksDB state store: state that outgrows memory spills to local disk.
//!
//! RocksDB is Weir's local working copy of operator state, not its durable
//! copy: writes skip RocksDB's own write-ahead log and are never synced.
//! Durability comes from Weir's WAL and Parquet checkpoints; after a crash,
//! recovery wipes this store ([`RocksStateStore::open_fresh`]) and rebuilds
//! it from the latest checkpoint.
//!
//! Memory is bounded by the block cache plus at most two write buffers,
//! sized from the same budget. Index and filter blocks stay outside the
//! cache (see `open`), so the cache gives up what they take: its capacity is
//! its share of the budget minus their size, down to a quarter of it.

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, Options, ReadOptions, WriteOptions, DB,
};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::{
    Entries, EntryVisitor, MemoryUsage, SnapshotRef, StateError, StateStore, StoreSnapshot,
    WriteBatch,
};

/// A RocksDB snapshot, which borrows its database.
type DbSnapshot<'a> = rocksdb::SnapshotWithThreadMode<'a, DB>;

self_cell::self_cell!(
    /// A snapshot that keeps its store alive (RocksDB's borrows it).
    struct RocksSnapshot {
        owner: Arc<RocksStateStore>,
        #[covariant]
        dependent: DbSnapshot,
    }
);

impl StoreSnapshot for RocksSnapshot {
    fn for_each_prefix(&self, prefix: &[u8], f: &mut EntryVisitor<'_>) -> Result<(), StateError> {
        let store = self.borrow_owner();
        let mut opts = RocksStateStore::scan_opts(prefix);
        opts.fill_cache(false);
        opts.set_snapshot(self.borrow_dependent());
        store.stream(prefix, opts, f)
    }
}

/// Largest size of one memtable.
const MAX_WRITE_BUFFER: usize = 64 << 20;
/// Smallest size of one memtable, whatever the cache budget.
const MIN_WRITE_BUFFER: usize = 1 << 20;
/// Memtables kept at most (one active, the rest waiting to be flushed).
const MAX_WRITE_BUFFERS: i32 = 2;
/// Background flush and compaction threads.
const PARALLELISM: i32 = 2;
/// Bloom filter bits per key (about 1% false positives).
const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// A [`StateStore`] on a local RocksDB instance.
pub struct RocksStateStore {
    db: DB,
    /// Writes skip RocksDB's WAL and are not synced (see the module docs).
    write_opts: WriteOptions,
    path: PathBuf,
    /// The block cache, and the bytes it and the index and filter blocks
    /// share (see [`RocksStateStore::fit_cache`]).
    cache: Cache,
    cache_budget: usize,
    writes: AtomicU32,
}

/// The block cache is resized every this many writes.
const FIT_CACHE_EVERY: u32 = 16;

/// Map a RocksDB error, saying what was being done.
fn backend(what: &str, path: &Path, e: rocksdb::Error) -> StateError {
    StateError::Backend(format!("rocksdb {what} at {}: {e}", path.display()))
}

/// The smallest key greater than every key starting with `prefix`: the
/// prefix with its last byte incremented, carrying over trailing `0xFF`
/// bytes. `None` when no such key exists (empty or all-`0xFF` prefix): then
/// every key `>= prefix` starts with `prefix`.
pub fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bound = prefix.to_vec();
    while let Some(last) = bound.pop() {
        if last != u8::MAX {
            bound.push(last + 1);
            return Some(bound);
        }
    }
    None
}

impl RocksStateStore {
    /// Open (creating if missing) the RocksDB instance at `path`, using
    /// about `cache_mb` MiB: a block cache of `cache_mb / 2` and memtables
    /// of `cache_mb / 8` each, at most two.
    pub fn open(path: &Path, cache_mb: usize) -> Result<Self, StateError> {
        let cache_bytes = cache_mb.saturating_mul(1 << 20) / 2;
        let cache = Cache::new_lru_cache(cache_bytes);

        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // Index and bloom filter blocks stay in memory outside the block
        // cache (about 10 bits per key): most reads of new keys are misses
        // that only a filter answers cheaply, and filters evicted from a
        // full cache made each such read re-read and re-check them.
        table.set_cache_index_and_filter_blocks(false);
        table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.increase_parallelism(PARALLELISM);
        opts.set_block_based_table_factory(&table);
        // Built without compression libraries.
        opts.set_compression_type(DBCompressionType::None);
        opts.set_write_buffer_size((cache_bytes / 4).clamp(MIN_WRITE_BUFFER, MAX_WRITE_BUFFER));
        opts.set_max_write_buffer_number(MAX_WRITE_BUFFERS);

        let db = DB::open(&opts, path).map_err(|e| backend("open", path, e))?;
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(true);
        write_opts.set_sync(false);
        Ok(RocksStateStore {
            db,
            write_opts,
            path: path.to_path_buf(),
            cache,
            cache_budget: cache_bytes,
            writes: AtomicU32::new(0),
        })
    }

    /// Give the block cache what the index and filter blocks of the open
    /// state files leave of its budget (they grow with the keys, about 10
    /// bits each), but never less than a quarter of it.
    fn fit_cache(&self) {
        let readers = self
            .db
            .property_int_value("rocksdb.estimate-table-readers-mem")
            .ok()
            .flatten()
            .unwrap_or(0);
        let readers = usize::try_from(readers).unwrap_or(usize::MAX);
        let capacity = self
            .cache_budget
            .saturating_sub(readers)
            .max(self.cache_budget / 4);
        // The handle is shared: resizing a clone resizes the cache.
        self.cache.clone().set_capacity(capacity);
    }

    /// Delete whatever is at `path`, then open an empty store there
    /// (recovery rebuilds state from a checkpoint).
    pub fn open_fresh(path: &Path, cache_mb: usize) -> Result<Self, StateError> {
        let removed = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.map_err(|e| {
            StateError::Backend(format!(
                "cannot remove old state at {}: {e}",
                path.display()
            ))
        })?;
        Self::open(path, cache_mb)
    }

    /// Read options for a scan of `prefix`: bounded above so the iterator
    /// stops at the end of the prefix instead of reading on.
    fn scan_opts(prefix: &[u8]) -> ReadOptions {
        let mut opts = ReadOptions::default();
        if let Some(bound) = prefix_upper_bound(prefix) {
            opts.set_iterate_upper_bound(bound);
        }
        opts
    }

    /// Call `f` on every entry of `prefix` in key order, from one consistent
    /// view of the store.
    fn stream(
        &self,
        prefix: &[u8],
        opts: ReadOptions,
        f: &mut EntryVisitor<'_>,
    ) -> Result<(), StateError> {
        let mut iter = self.db.raw_iterator_opt(opts);
        iter.seek(prefix);
        while let Some((k, v)) = iter.item() {
            f(k, v)?;
            iter.next();
        }
        iter.status().map_err(|e| backend("scan", &self.path, e))
    }
}

impl StateStore for RocksStateStore {
    fn memory_usage(&self) -> Vec<MemoryUsage> {
        const PARTS: &[(&str, &str, &str)] = &[
            (
                "rocksdb_block_cache",
                "rocksdb.block-cache-usage",
                "RocksDB block cache (data blocks read from state files)",
            ),
            (
                "rocksdb_memtables",
                "rocksdb.size-all-mem-tables",
                "RocksDB memtables, active and waiting to be flushed",
            ),
            (
                "rocksdb_table_readers",
                "rocksdb.estimate-table-readers-mem",
                "RocksDB index and bloom filter blocks of open state files",
            ),
        ];
        PARTS
            .iter()
            .filter_map(|&(name, property, description)| {
                let bytes = self.db.property_int_value(property).ok().flatten()?;
                Some(MemoryUsage {
                    name,
                    bytes,
                    description,
                })
            })
            .collect()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db.get(key).map_err(|e| backend("get", &self.path, e))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StateError> {
        self.write_entries(&mut batch.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))
    }

    fn write_entries(
        &self,
        entries: &mut dyn Iterator<Item = (&[u8], Option<&[u8]>)>,
    ) -> Result<(), StateError> {
        let mut wb = rocksdb::WriteBatch::default();
        for (k, v) in entries {
            match v {
                Some(v) => wb.put(k, v),
                None => wb.delete(k),
            }
        }
        self.db
            .write_opt(wb, &self.write_opts)
            .map_err(|e| backend("write", &self.path, e))?;
        if self
            .writes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(FIT_CACHE_EVERY)
        {
            self.fit_cache();
        }
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StateError> {
        let mut out: Entries = Vec::new();
        self.stream(prefix, Self::scan_opts(prefix), &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    fn scan_range(
        &self,
        prefix: &[u8],
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<Entries, StateError> {
        let mut opts = ReadOptions::default();
        let bound = match (end, prefix_upper_bound(prefix)) {
            (Some(e), Some(p)) => Some(if e < p.as_slice() { e.to_vec() } else { p }),
            (Some(e), None) => Some(e.to_vec()),
            (None, p) => p,
        };
        if let Some(bound) = bound {
            opts.set_iterate_upper_bound(bound);
        }
        let from = if start < prefix { prefix } else { start };
        let mut out: Entries = Vec::new();
        self.stream(from, opts, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<(), StateError> {
        let mut wb = rocksdb::WriteBatch::default();
        match prefix_upper_bound(prefix) {
            Some(bound) => wb.delete_range(prefix, &bound[..]),
            None => {
                // No key bounds the prefix from above, but every key from
                // `prefix` on matches it: delete up to the last key, then the
                // last key itself.
                let mut iter = self.db.raw_iterator();
                iter.seek_to_last();
                let last = iter.key().map(<[u8]>::to_vec);
                iter.status().map_err(|e| backend("seek", &self.path, e))?;
                let Some(last) = last.filter(|last| last.as_slice() >= prefix) else {
                    return Ok(());
                };
                wb.delete_range(prefix, &last[..]);
                wb.delete(&last);
            }
        }
        self.db
            .write_opt(wb, &self.write_opts)
            .map_err(|e| backend("delete range", &self.path, e))
    }

    fn snapshot(self: Arc<Self>) -> SnapshotRef {
        Arc::new(RocksSnapshot::new(self, |store| store.db.snapshot()))
    }

    /// Streams from a RocksDB iterator without collecting, so state bigger
    /// than memory can be read. Blocks read by the scan do not displace the
    /// block cache's working set.
    fn for_each_prefix(&self, prefix: &[u8], f: &mut EntryVisitor<'_>) -> Result<(), StateError> {
        let mut opts = Self::scan_opts(prefix);
        opts.fill_cache(false);
        self.stream(prefix, opts, f)
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::test_util::TempDir;

    fn key(id: u32, rest: &[u8]) -> Vec<u8> {
        let mut k = id.to_be_bytes().to_vec();
        k.extend_from_slice(rest);
        k
    }

    fn keys(entries: Entries) -> Vec<Vec<u8>> {
        entries.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn upper_bound_carries() {
        assert_eq!(prefix_upper_bound(&[]), None);
        assert_eq!(prefix_upper_bound(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_upper_bound(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_upper_bound(&[1, 0xFF, 0xFF]), Some(vec![2]));
    }

    #[test]
    fn range_scan_stays_in_its_prefix_and_range() {
        let dir = TempDir::new("rocks-range");
        let s = RocksStateStore::open(&dir.0, 8).unwrap();
        s.write(vec![
            (key(1, &[1]), Some(vec![1])),
            (key(1, &[2]), Some(vec![2])),
            (key(1, &[2, 7]), Some(vec![3])),
            (key(1, &[3]), Some(vec![4])),
            (key(1, &[0xFF]), Some(vec![5])),
            (key(2, &[0]), Some(vec![6])),
        ])
        .unwrap();
        let p = key(1, &[]);
        assert_eq!(
            keys(
                s.scan_range(&p, &key(1, &[2]), Some(&key(1, &[3])))
                    .unwrap()
            ),
            vec![key(1, &[2]), key(1, &[2, 7])]
        );
        // Open-ended: up to the end of the prefix, never into table 2.
        assert_eq!(
            keys(s.scan_range(&p, &key(1, &[3]), None).unwrap()),
            vec![key(1, &[3]), key(1, &[0xFF])]
        );
        // A start before the prefix starts at the prefix.
        assert_eq!(
            s.scan_range(&p, &[0], Some(&key(1, &[2]))).unwrap().len(),
            1
        );
        // The default (scan and filter) agrees with the seek.
        let memory = crate::MemoryStateStore::new();
        memory
            .write(vec![
                (key(1, &[1]), Some(vec![1])),
                (key(1, &[2]), Some(vec![2])),
                (key(1, &[2, 7]), Some(vec![3])),
                (key(2, &[0]), Some(vec![6])),
            ])
            .unwrap();
        assert_eq!(
            keys(memory.scan_range(&p, &key(1, &[2]), None).unwrap()),
            vec![key(1, &[2]), key(1, &[2, 7])]
        );
    }

    #[test]
    fn prefix_scan_is_ordered_and_bounded() {
        let dir = TempDir::new("rocks-test");
        let s = RocksStateStore::open(&dir.0, 8).unwrap();
        s.write(vec![
            (key(1, &[2]), Some(vec![b'a'])),
            (key(1, &[1]), Some(vec![b'b'])),
            (key(1, &[1, 255]), Some(vec![b'c'])),
            (key(2, &[0]), Some(vec![b'd'])),
        ])
        .unwrap();
        assert_eq!(
            keys(s.scan_prefix(&key(1, &[])).unwrap()),
            vec![key(1, &[1]), key(1, &[1, 255]), key(1, &[2])]
        );
        assert_eq!(
            keys(s.scan_prefix(&key(1, &[1])).unwrap()),
            vec![key(1, &[1]), key(1, &[1, 255])]
        );
        assert_eq!(s.scan_prefix(&[]).unwrap().len(), 4);
        assert_eq!(s.get(&key(2, &[0])).unwrap(), Some(vec![b'd']));
        s.write(vec![(key(2, &[0]), None)]).unwrap();
        assert_eq!(s.get(&key(2, &[0])).unwrap(), None);
        s.delete_prefix(&key(1, &[])).unwrap();
        assert_eq!(s.scan_prefix(&[]).unwrap().len(), 0);
    }

    #[test]
    fn delete_prefix_handles_unbounded_prefixes() {
        let dir = TempDir::new("rocks-test");
        let s = RocksStateStore::open(&dir.0, 8).unwrap();
        s.write(vec![
            (vec![0xFE], Some(vec![1])),
            (vec![0xFF], Some(vec![2])),
            (vec![0xFF, 0xFF], Some(vec![3])),
            (vec![0xFF, 0xFF, 0], Some(vec![4])),
            (vec![0xFF, 0xFF, 0xFF, 0xFF], Some(vec![5])),
        ])
        .unwrap();
        assert_eq!(
            keys(s.scan_prefix(&[0xFF, 0xFF]).unwrap()),
            vec![
                vec![0xFF, 0xFF],
                vec![0xFF, 0xFF, 0],
                vec![0xFF, 0xFF, 0xFF, 0xFF]
            ]
        );
        s.delete_prefix(&[0xFF, 0xFF]).unwrap();
        assert_eq!(
            keys(s.scan_prefix(&[]).unwrap()),
            vec![vec![0xFE], vec![0xFF]]
        );
        // Nothing at or after the prefix: a no-op.
        s.delete_prefix(&[0xFF, 0xFF]).unwrap();
        s.delete_prefix(&[]).unwrap();
        assert!(s.scan_prefix(&[]).unwrap().is_empty());
        // Deleting from an empty store is fine too.
        s.delete_prefix(&[]).unwrap();
    }

    #[test]
    fn for_each_prefix_streams_in_order() {
        let dir = TempDir::new("rocks-test");
        let s = RocksStateStore::open(&dir.0, 8).unwrap();
        let batch: WriteBatch = (0..1000u32)
            .rev()
            .map(|i| (key(7, &i.to_be_bytes()), Some(i.to_le_bytes().to_vec())))
            .chain([(key(8, &[]), Some(vec![]))])
            .collect();
        s.write(batch).unwrap();
        let mut seen = Vec::new();
        s.for_each_prefix(&key(7, &[]), &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 1000);
        assert_eq!(seen, s.scan_prefix(&key(7, &[])).unwrap());
        for (i, (k, v)) in seen.iter().enumerate() {
            let i = i as u32;
            assert_eq!(k, &key(7, &i.to_be_bytes()));
            assert_eq!(v, &i.to_le_bytes().to_vec());
        }
        // An error from the callback stops the scan and is returned.
        let mut calls = 0;
        let err = s
            .for_each_prefix(&[], &mut |_, _| {
                calls += 1;
                if calls == 3 {
                    Err(StateError::Backend("stop".into()))
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert!(matches!(err, StateError::Backend(m) if m == "stop"));
        assert_eq!(calls, 3);
    }

    #[test]
    fn snapshot_does_not_see_later_writes() {
        let dir = TempDir::new("rocks-test");
        let s = Arc::new(RocksStateStore::open(&dir.0, 8).unwrap());
        s.write(vec![(key(1, &[1]), Some(vec![1]))]).unwrap();
        let snap = Arc::clone(&s).snapshot();
        s.write(vec![(key(1, &[1]), None), (key(1, &[2]), Some(vec![2]))])
            .unwrap();
        let mut seen = Vec::new();
        snap.for_each_prefix(&key(1, &[]), &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(key(1, &[1]), vec![1])]);
        assert_eq!(
            keys(s.scan_prefix(&key(1, &[])).unwrap()),
            vec![key(1, &[2])]
        );
        // The snapshot keeps the store alive after its last other handle.
        drop(s);
        let mut n = 0;
        snap.for_each_prefix(&[], &mut |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn reopen_keeps_data_and_open_fresh_wipes() {
        let dir = TempDir::new("rocks-test");
        {
            let s = RocksStateStore::open(&dir.0, 8).unwrap();
            s.write(vec![(key(1, b"k"), Some(b"v".to_vec()))]).unwrap();
        }
        {
            let s = RocksStateStore::open(&dir.0, 8).unwrap();
            assert_eq!(s.get(&key(1, b"k")).unwrap(), Some(b"v".to_vec()));
        }
        let s = RocksStateStore::open_fresh(&dir.0, 8).unwrap();
        assert_eq!(s.get(&key(1, b"k")).unwrap(), None);
        assert!(s.scan_prefix(&[]).unwrap().is_empty());
        s.write(vec![(key(1, b"k2"), Some(b"v2".to_vec()))])
            .unwrap();
        assert_eq!(s.get(&key(1, b"k2")).unwrap(), Some(b"v2".to_vec()));
        drop(s);
        // open_fresh on a path that does not exist yet.
        let other = TempDir::new("rocks-test");
        let s = RocksStateStore::open_fresh(&other.0, 0).unwrap();
        assert!(s.scan_prefix(&[]).unwrap().is_empty());
    }
}
