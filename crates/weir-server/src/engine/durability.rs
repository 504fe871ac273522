//! Durability: the table write-ahead log, checkpoints and recovery.
//!
//! - Every acknowledged DDL and DML statement is one WAL record, fsynced
//!   before the statement returns (concurrent writers share fsyncs).
//! - Every `checkpoint_interval` the coordinator closes a checkpoint epoch:
//!   under the write lock it notes the WAL end, has every table write its
//!   state file and sends a checkpoint barrier to every table; each view's
//!   operators write theirs when the barrier reaches them. Once every view
//!   has passed the barrier and the WAL is synced to the noted end, the
//!   manifest is written atomically; only then is the checkpoint complete.
//! - Recovery loads the newest complete checkpoint into a fresh RocksDB,
//!   recreates its catalog and replays the WAL from the noted offset.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_state::{
    push_to_chain, CheckpointDir, CheckpointSink, Lsn, Manifest, StateError, Wal, WriteBatch,
    CHECKPOINT_FORMAT_VERSION,
};

use super::*;
use crate::log_record::LogRecord;
use weir_dataflow::plan::DataflowPlan;

/// Rolls the WAL to a new segment past this size (at a checkpoint).
const WAL_SEGMENT_BYTES: u64 = 64 << 20;

/// WAL records replayed between two barriers during recovery.
const REPLAY_RECORDS_PER_EPOCH: usize = 64;

/// The catalog as a checkpoint stores it: enough to recreate every
/// relation with its state table ids.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CatalogSnapshot {
    pub next_state_id: u32,
    /// In creation order (a view after what it reads).
    pub relations: Vec<SnapshotEntry>,
    /// Statements recreating the users (passwords as verifiers).
    #[serde(default)]
    pub users: Vec<String>,
}

/// One relation of a [`CatalogSnapshot`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotEntry {
    pub name: String,
    pub sql: String,
    pub state_ids: Vec<u32>,
    /// The view did not reach the checkpoint (it had failed): its state is
    /// not in the checkpoint and recovery rebuilds it from its input.
    pub rebuild: bool,
    /// A view's dataflow plan (JSON): recovery instantiates it instead of
    /// planning `sql` again. Absent in checkpoints from before plans were
    /// stored, and for tables and sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// Facts about the last recovery, for `weir_catalog.recovery`.
#[derive(Debug, Clone, Default)]
pub struct RecoveryInfo {
    /// Epoch of the checkpoint recovered from (0: none).
    pub checkpoint_epoch: u64,
    /// Newer checkpoints skipped because they were damaged.
    pub damaged_checkpoints: Vec<String>,
    /// WAL records replayed after the checkpoint.
    pub wal_records_replayed: u64,
    /// Wall time from start to serving.
    pub duration: Duration,
}

/// The last completed checkpoint, for `weir_catalog`.
#[derive(Debug, Clone, Default)]
pub struct CheckpointStats {
    pub epoch: u64,
    pub duration_ms: u64,
    pub size_bytes: u64,
    pub files: u64,
    pub completed: u64,
    pub failed: u64,
    pub last_error: Option<String>,
}

/// The durability half of the engine.
pub(crate) struct Durable {
    pub wal: Arc<Wal>,
    pub dir: Arc<CheckpointDir>,
    pub sink: Arc<CheckpointSink>,
    /// One checkpoint at a time.
    checkpoint_lock: tokio::sync::Mutex<()>,
    pub interval: watch::Sender<Duration>,
    retained: usize,
    /// The manifest of the last completed checkpoint.
    last: Mutex<Option<Manifest>>,
    pub stats: Mutex<CheckpointStats>,
    pub recovery: Mutex<RecoveryInfo>,
    /// Set when state changed outside the WAL (a view was rebuilt).
    pub unlogged_change: std::sync::atomic::AtomicBool,
    coordinator: Mutex<Option<JoinHandle<()>>>,
    /// Held (locked) while the server runs: one server per data directory.
    _lock: std::fs::File,
}

/// What [`Durable::open`] found on disk.
pub(crate) struct Opened {
    pub durable: Durable,
    pub latest: Option<(Manifest, Vec<String>)>,
    pub max_epoch: u64,
}

fn startup(what: &str, e: impl std::fmt::Display) -> ServerError {
    ServerError::Startup(format!("{what}: {e}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Durable {
    /// Open the WAL and the checkpoint directory under `config.data_dir`
    /// and pick the checkpoint to recover from.
    pub fn open(config: &ServerConfig) -> Result<Opened> {
        let data = &config.data_dir;
        let lock_path = data.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| startup(&format!("cannot open {}", lock_path.display()), e))?;
        if let Err(e) = lock.try_lock() {
            return Err(ServerError::Startup(format!(
                "another Weir server is using the data directory {} ({e})",
                data.display()
            )));
        }
        let dir = CheckpointDir::open(&data.join("checkpoints"))
            .map_err(|e| startup("cannot open the checkpoint directory", e))?;
        let wal = Wal::open(&data.join("wal"))
            .map_err(|e| startup("cannot open the write-ahead log", e))?;
        let max_epoch = dir
            .list_manifests()
            .map_err(|e| startup("cannot list checkpoints", e))?
            .first()
            .map(|(e, _)| *e)
            .unwrap_or(0);
        let latest = dir
            .latest_valid()
            .map_err(|e| startup("refusing to start, no usable checkpoint", e))?;
        if latest.is_none() && wal.start() > 0 {
            return Err(ServerError::Startup(format!(
                "refusing to start: the write-ahead log begins at offset {} but no checkpoint \
                 exists to start it from (checkpoint manifests were removed?)",
                wal.start()
            )));
        }
        let sink = Arc::new(CheckpointSink::new(dir.path()));
        Ok(Opened {
            durable: Durable {
                wal: Arc::new(wal),
                dir: Arc::new(dir),
                sink,
                checkpoint_lock: tokio::sync::Mutex::new(()),
                interval: watch::channel(config.checkpoint_interval).0,
                retained: config.checkpoints_retained.max(1),
                last: Mutex::new(None),
                stats: Mutex::new(CheckpointStats::default()),
                recovery: Mutex::new(RecoveryInfo::default()),
                unlogged_change: std::sync::atomic::AtomicBool::new(false),
                coordinator: Mutex::new(None),
                _lock: lock,
            },
            latest,
            max_epoch,
        })
    }

    /// Make every record up to `lsn` durable (group commit).
    pub async fn sync(&self, lsn: Lsn) -> Result<()> {
        if self.wal.synced() >= lsn {
            return Ok(());
        }
        let wal = Arc::clone(&self.wal);
        tokio::task::spawn_blocking(move || wal.sync(lsn))
            .await
            .map_err(|e| ServerError::Statement(Error::internal(format!("fsync task: {e}"))))??;
        Ok(())
    }

    /// Stop taking checkpoints.
    pub fn stop(&self) {
        if let Some(task) = self.coordinator.lock().take() {
            task.abort();
        }
    }

    /// The last completed manifest.
    pub fn last_manifest(&self) -> Option<Manifest> {
        self.last.lock().clone()
    }
}

impl Engine {
    /// Append `record` to the WAL (not yet durable); returns its end.
    pub(super) fn log(&self, record: &LogRecord) -> Result<Lsn> {
        Ok(self.durable.wal.append(&record.encode()?)?)
    }

    /// Log a DDL statement made live and wait until it is durable.
    pub(super) async fn log_ddl(&self, sql: &str, mode: DdlMode) -> Result<()> {
        if mode != DdlMode::Live {
            return Ok(());
        }
        let lsn = self.log(&LogRecord::Ddl(sql.to_string()))?;
        self.durable.sync(lsn).await
    }

    /// Log a view's DDL made live, with the dataflow plan it runs, and wait
    /// until it is durable.
    pub(super) async fn log_view_ddl(&self, name: &str, sql: &str, mode: DdlMode) -> Result<()> {
        if mode != DdlMode::Live {
            return Ok(());
        }
        let stored = self.catalog.read().get(name).and_then(|r| r.plan_json());
        let plan = match stored {
            Some(plan) => plan?,
            None => return self.log_ddl(sql, mode).await,
        };
        let lsn = self.log(&LogRecord::View {
            sql: sql.to_string(),
            plan,
        })?;
        self.durable.sync(lsn).await
    }

    /// Hand `plan` (JSON) to the next CREATE of view `name` in recovery.
    fn stash_plan(&self, name: &str, plan: &str) -> Result<()> {
        let plan = DataflowPlan::from_json(plan).map_err(|e| ServerError::Statement(e.into()))?;
        self.stored_plans.lock().insert(name.to_string(), plan);
        Ok(())
    }

    /// The catalog as a checkpoint stores it.
    fn catalog_snapshot(&self) -> CatalogSnapshot {
        let catalog = self.catalog.read();
        let mut relations: Vec<SnapshotEntry> = catalog
            .all()
            .map(|r| SnapshotEntry {
                name: r.name.clone(),
                sql: r.ddl.clone(),
                plan: r.plan_json().and_then(|p| p.ok()),
                state_ids: r.state_ids.clone(),
                rebuild: matches!(r.view_status(), Some(DataflowStatus::Failed(_))),
            })
            .collect();
        relations.sort_by_key(|r| r.state_ids.first().copied().unwrap_or(0));
        CatalogSnapshot {
            next_state_id: catalog.peek_next_state_id(),
            relations,
            users: self.users.ddl(),
        }
    }

    pub(super) fn spawn_coordinator(&self) {
        let me = self.me.clone();
        let mut interval_rx = self.durable.interval.subscribe();
        let source_done = Arc::clone(&self.readers.finished);
        let task = tokio::spawn(async move {
            loop {
                let every = *interval_rx.borrow_and_update();
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = source_done.notified() => {}
                    changed = interval_rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        continue;
                    }
                }
                let Some(engine) = me.upgrade() else {
                    return;
                };
                if let Err(e) = engine.checkpoint().await {
                    tracing::error!(error = %e, "checkpoint failed");
                }
            }
        });
        *self.durable.coordinator.lock() = Some(task);
    }

    /// Take a checkpoint now. Returns its epoch, or `None` when nothing
    /// changed since the last one.
    pub async fn checkpoint(&self) -> Result<Option<u64>> {
        let _one = self.durable.checkpoint_lock.lock().await;
        let started = Instant::now();
        let last_lsn = self.durable.last.lock().as_ref().map(|m| m.wal_lsn);
        let unlogged = self.durable.unlogged_change.swap(false, Ordering::SeqCst);
        let result = self.checkpoint_inner(started, last_lsn, unlogged).await;
        let mut stats = self.durable.stats.lock();
        match &result {
            Ok(Some(m)) => {
                stats.epoch = m.epoch;
                stats.duration_ms = m.duration_ms;
                stats.size_bytes = m.total_size();
                stats.files = m.file_count() as u64;
                stats.completed += 1;
            }
            Ok(None) => {}
            Err(e) => {
                stats.failed += 1;
                stats.last_error = Some(e.to_string());
                if unlogged {
                    self.durable.unlogged_change.store(true, Ordering::SeqCst);
                }
            }
        }
        result.map(|m| m.map(|m| m.epoch))
    }

    async fn checkpoint_inner(
        &self,
        started: Instant,
        last_lsn: Option<Lsn>,
        unlogged: bool,
    ) -> Result<Option<Manifest>> {
        let (epoch, lsn, mut snapshot, views) = {
            let _guard = self.write_lock.lock().await;
            let lsn = self.durable.wal.end();
            let last_sources = self.durable.last.lock().as_ref().map(|m| m.sources.clone());
            if last_lsn == Some(lsn)
                && !unlogged
                && !self.readers.moved_since(last_sources.as_ref())
            {
                return Ok(None);
            }
            let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            let relations: Vec<Arc<Relation>> = self.catalog.read().all().cloned().collect();
            for r in &relations {
                if let RelationKind::Table { store, .. } = &r.kind {
                    if let Err(e) = store.lock().checkpoint(epoch) {
                        self.durable.sink.force_full_from(epoch + 1);
                        return Err(e.into());
                    }
                }
            }
            weir_common::failpoint::hit("checkpoint-after-tables");
            let snapshot = self.catalog_snapshot();
            let barrier = Barrier {
                epoch,
                checkpoint: true,
            };
            for r in relations.iter().filter(|r| !r.is_view()) {
                r.outlet.send(Message::Barrier(barrier)).await;
            }
            self.readers.barrier(barrier);
            let views: Vec<Arc<Relation>> = relations.into_iter().filter(|r| r.is_view()).collect();
            (epoch, lsn, snapshot, views)
        };
        let fail = |e: ServerError| {
            self.durable.sink.force_full_from(epoch + 1);
            e
        };
        // Views that fail before passing the barrier are rebuilt on recovery.
        let mut rebuild: HashSet<String> = HashSet::new();
        for v in &views {
            if let RelationKind::View { dataflow, .. } = &v.kind {
                dataflow.wait_committed(epoch).await;
                if dataflow.committed_epoch() < epoch
                    || matches!(dataflow.status(), DataflowStatus::Failed(_))
                {
                    rebuild.insert(v.name.clone());
                }
            }
        }
        self.durable.sync(lsn).await.map_err(fail)?;
        // A dataflow fed by a source is restorable only with its reader's
        // offset at this barrier.
        let mut sources = self.readers.offsets_at(epoch);
        for entry in &snapshot.relations {
            if self.readers.feeds(&entry.name)
                && !sources.keys().any(|k| source::consumer_of(k) == entry.name)
            {
                rebuild.insert(entry.name.clone());
            }
        }
        sources.retain(|key, _| !rebuild.contains(source::consumer_of(key)));
        let files = self.durable.sink.take(epoch);
        let mut skip: HashSet<u32> = HashSet::new();
        for entry in snapshot.relations.iter_mut() {
            if rebuild.contains(&entry.name) {
                entry.rebuild = true;
            }
            if entry.rebuild {
                skip.extend(entry.state_ids.iter().copied());
            }
        }
        let live: HashSet<u32> = snapshot
            .relations
            .iter()
            .flat_map(|r| r.state_ids.iter().copied())
            .filter(|id| !skip.contains(id))
            .collect();
        let mut tables = self
            .durable
            .last
            .lock()
            .as_ref()
            .map(|m| m.tables.clone())
            .unwrap_or_default();
        tables.retain(|id, _| live.contains(id));
        for f in files {
            if !live.contains(&f.table_id) {
                continue;
            }
            push_to_chain(tables.entry(f.table_id).or_default(), f);
        }
        let manifest = Manifest {
            format_version: CHECKPOINT_FORMAT_VERSION,
            epoch,
            wal_lsn: lsn,
            created_unix_ms: now_ms(),
            duration_ms: started.elapsed().as_millis() as u64,
            tables,
            sources,
            catalog: serde_json::to_value(&snapshot)
                .map_err(|e| ServerError::Statement(Error::internal(e.to_string())))?,
        };
        let dir = Arc::clone(&self.durable.dir);
        let wal = Arc::clone(&self.durable.wal);
        let keep = self.durable.retained;
        let m = manifest.clone();
        weir_common::failpoint::hit("checkpoint-before-manifest");
        tokio::task::spawn_blocking(move || -> std::result::Result<(), StateError> {
            dir.write_manifest(&m)?;
            weir_common::failpoint::hit("checkpoint-after-manifest");
            dir.retain(keep)?;
            // The WAL is kept from the oldest retained checkpoint on, so
            // recovery can fall back to any of them.
            let mut oldest = m.wal_lsn;
            for (_, path) in dir.list_manifests()? {
                if let Ok(old) = dir.load_manifest(&path) {
                    oldest = oldest.min(old.wal_lsn);
                }
            }
            wal.truncate_before(oldest)?;
            wal.maybe_roll(WAL_SEGMENT_BYTES)
        })
        .await
        .map_err(|e| ServerError::Statement(Error::internal(format!("checkpoint task: {e}"))))?
        .map_err(|e| fail(e.into()))?;
        tracing::debug!(
            epoch,
            files = manifest.file_count(),
            bytes = manifest.total_size(),
            ms = manifest.duration_ms,
            "checkpoint complete"
        );
        *self.durable.last.lock() = Some(manifest.clone());
        Ok(Some(manifest))
    }

    /// Load `latest` (if any), recreate its catalog and replay the WAL.
    pub(super) async fn recover(
        &self,
        latest: Option<(Manifest, Vec<String>)>,
        max_epoch: u64,
        started: Instant,
    ) -> Result<()> {
        let mut info = RecoveryInfo::default();
        let from = match latest {
            Some((manifest, damaged)) => {
                info.checkpoint_epoch = manifest.epoch;
                info.damaged_checkpoints = damaged;
                self.load_checkpoint(&manifest).await?;
                self.epoch
                    .store(max_epoch.max(manifest.epoch), Ordering::SeqCst);
                let snapshot: CatalogSnapshot = serde_json::from_value(manifest.catalog.clone())
                    .map_err(|e| startup("checkpoint catalog is unreadable", e))?;
                self.readers.set_restored(manifest.sources.clone());
                self.restore_catalog(&snapshot).await?;
                let lsn = manifest.wal_lsn;
                *self.durable.last.lock() = Some(manifest);
                lsn
            }
            None => {
                self.epoch.store(max_epoch, Ordering::SeqCst);
                self.durable.wal.start()
            }
        };
        let wal = Arc::clone(&self.durable.wal);
        let records = tokio::task::spawn_blocking(move || wal.read_from(from))
            .await
            .map_err(|e| startup("reading the write-ahead log", e))?
            .map_err(|e| startup("cannot read the write-ahead log", e))?;
        let _guard = self.write_lock.lock().await;
        for (i, (lsn, payload)) in records.iter().enumerate() {
            let record = LogRecord::decode(payload)
                .map_err(|e| startup(&format!("write-ahead log record at {lsn}"), e))?;
            self.replay(record)
                .await
                .map_err(|e| startup(&format!("replaying write-ahead log record at {lsn}"), e))?;
            if (i + 1) % REPLAY_RECORDS_PER_EPOCH == 0 {
                self.inject_barrier().await;
            }
        }
        self.close_epoch().await;
        info.wal_records_replayed = records.len() as u64;
        info.duration = started.elapsed();
        tracing::info!(
            checkpoint_epoch = info.checkpoint_epoch,
            wal_records = info.wal_records_replayed,
            ms = info.duration.as_millis() as u64,
            "recovered"
        );
        *self.durable.recovery.lock() = info;
        Ok(())
    }

    /// Write the checkpoint's state into the (fresh) state store.
    async fn load_checkpoint(&self, manifest: &Manifest) -> Result<()> {
        let dir = Arc::clone(&self.durable.dir);
        let store = Arc::clone(&self.store);
        let m = manifest.clone();
        tokio::task::spawn_blocking(move || -> std::result::Result<(), StateError> {
            let mut batch: WriteBatch = Vec::new();
            dir.load_state(&m, &mut |table, vnode, key, value| {
                let mut full = Vec::with_capacity(5 + key.len());
                full.extend_from_slice(&table.to_be_bytes());
                full.push(vnode);
                full.extend_from_slice(key);
                batch.push((full, value.map(|v| v.to_vec())));
                if batch.len() >= 64 * 1024 {
                    store.write(std::mem::take(&mut batch))?;
                }
                Ok(())
            })?;
            store.write(batch)
        })
        .await
        .map_err(|e| startup("loading the checkpoint", e))?
        .map_err(|e| startup("cannot load the checkpoint", e))?;
        self.durable.sink.restore_chains(manifest);
        Ok(())
    }

    /// Recreate the relations of a checkpoint, with their state table ids.
    async fn restore_catalog(&self, snapshot: &CatalogSnapshot) -> Result<()> {
        self.users.clear();
        for sql in &snapshot.users {
            self.execute_ddl(sql, DdlMode::Restore)
                .await
                .map_err(|e| startup("cannot recreate a user", e))?;
        }
        for entry in &snapshot.relations {
            if let Some(first) = entry.state_ids.first() {
                self.catalog.write().set_next_state_id(*first);
            }
            let mode = if entry.rebuild {
                self.durable.sink.forget_restored(&entry.state_ids);
                for id in &entry.state_ids {
                    StateTable::drop_table(&self.store, *id)?;
                }
                DdlMode::Replay
            } else {
                DdlMode::Restore
            };
            if let Some(plan) = &entry.plan {
                self.stash_plan(&entry.name, plan).map_err(|e| {
                    startup(&format!("cannot read the plan of \"{}\"", entry.name), e)
                })?;
            }
            let done = self.execute_ddl(&entry.sql, mode).await;
            self.stored_plans.lock().remove(&entry.name);
            done.map_err(|e| startup(&format!("cannot recreate \"{}\"", entry.name), e))?;
        }
        let mut catalog = self.catalog.write();
        let next = catalog.peek_next_state_id().max(snapshot.next_state_id);
        catalog.set_next_state_id(next);
        Ok(())
    }

    /// Run one logged DDL statement in `mode`.
    async fn execute_ddl(&self, sql: &str, mode: DdlMode) -> Result<()> {
        let statements = weir_sql::parser::parse(sql)?;
        for statement in &statements {
            if self.run_ddl(statement, mode, 0).await?.is_none() {
                return Err(ServerError::Statement(Error::internal(
                    "a logged statement is not CREATE or DROP",
                )));
            }
        }
        Ok(())
    }

    /// Re-apply one WAL record. The caller holds the write lock, so DDL
    /// replay must not take it: DDL runs in `Replay` mode, which does not.
    async fn replay(&self, record: LogRecord) -> Result<()> {
        match record {
            LogRecord::Ddl(sql) => Box::pin(self.execute_ddl(&sql, DdlMode::Replay)).await,
            LogRecord::View { sql, plan } => {
                let name = match weir_sql::parser::parse(&sql)?.first() {
                    Some(weir_sql::parser::Statement::CreateMaterializedView { name, .. }) => {
                        super::ddl::relation_name(name)?
                    }
                    Some(weir_sql::parser::Statement::CreateSink(s)) => s.name.clone(),
                    _ => return Err(ServerError::Statement(Error::internal(
                        "a logged view plan belongs to no CREATE MATERIALIZED VIEW or CREATE SINK",
                    ))),
                };
                self.stash_plan(&name, &plan)?;
                let done = Box::pin(self.execute_ddl(&sql, DdlMode::Replay)).await;
                self.stored_plans.lock().remove(&name);
                done
            }
            LogRecord::Dml(changes) => {
                let applied = self.apply_changes(&changes, |_| Ok(()))?;
                for (relation, chunks) in applied {
                    for chunk in chunks {
                        relation.outlet.send(Message::Chunk(chunk)).await;
                    }
                }
                Ok(())
            }
        }
    }

    /// The current checkpoint interval.
    pub fn checkpoint_interval(&self) -> Duration {
        *self.durable.interval.borrow()
    }
}
