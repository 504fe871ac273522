//! `weir_catalog`: system views over the engine's own state.
//!
//! - `weir_catalog.dataflows`: one row per materialized view or sink: status
//!   (RUNNING / RESTARTING / FAILED), restart count, last error, restart
//!   strategy, and the last completed checkpoint's epoch, duration and the
//!   size of the view's state files in it; for sinks and dataflows fed by
//!   a source also `kind`, `source_offset`, `source_finished`,
//!   `sink_inserts` and `sink_deletes`.
//! - `weir_catalog.checkpoints`: the last completed checkpoint and counters.
//! - `weir_catalog.recovery`: what the last start recovered and how long it
//!   took.
//! - `weir_catalog.memory`: where the server's memory is, by part: the
//!   process's resident set, the allocator's heap, RocksDB's block cache,
//!   memtables and index/filter blocks, and the state budget they share.

use std::sync::OnceLock;

use async_trait::async_trait;
use weir_common::arrow::array::{BooleanArray, Int64Array, StringArray};
use weir_common::datafusion::catalog::{SchemaProvider, TableProvider};
use weir_common::datafusion::datasource::MemTable;
use weir_common::datafusion::error::Result as DfResult;

use super::*;

/// Name of the system schema.
pub const SYSTEM_SCHEMA: &str = "weir_catalog";

const TABLES: &[&str] = &["dataflows", "checkpoints", "recovery", "memory"];

/// The `weir_catalog` schema.
pub struct SystemSchema {
    engine: OnceLock<Weak<Engine>>,
}

impl std::fmt::Debug for SystemSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemSchema")
    }
}

impl SystemSchema {
    pub(super) fn new() -> Self {
        SystemSchema {
            engine: OnceLock::new(),
        }
    }

    pub(super) fn attach(&self, engine: Weak<Engine>) {
        let _ = self.engine.set(engine);
    }
}

fn text(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn int(v: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(v))
}

fn table(
    fields: Vec<(&str, DataType)>,
    columns: Vec<ArrayRef>,
) -> DfResult<Arc<dyn TableProvider>> {
    let schema = Arc::new(Schema::new(
        fields
            .into_iter()
            .map(|(n, t)| Field::new(n, t, true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

impl Engine {
    fn dataflows_table(&self) -> DfResult<Arc<dyn TableProvider>> {
        let manifest = self.durable.last_manifest();
        let mut names = Vec::new();
        let mut statuses = Vec::new();
        let mut restarts = Vec::new();
        let mut errors = Vec::new();
        let mut strategies = Vec::new();
        let mut epochs = Vec::new();
        let mut durations = Vec::new();
        let mut sizes = Vec::new();
        let mut kinds = Vec::new();
        let mut offsets = Vec::new();
        let mut finished = Vec::new();
        let mut sink_inserts = Vec::new();
        let mut sink_deletes = Vec::new();
        let mut parallelism = Vec::new();
        for r in self.catalog.read().all() {
            let RelationKind::View {
                health,
                dataflow,
                sink,
                ..
            } = &r.kind
            else {
                continue;
            };
            kinds.push(Some(r.object_kind().as_str().to_string()));
            parallelism.push(dataflow.parallelism() as i64);
            let progress = self.readers.progress(&r.name);
            offsets.push(progress.map(|(offset, _)| offset as i64));
            finished.push(progress.map(|(_, done)| done));
            sink_inserts.push(
                sink.as_ref()
                    .map(|c| c.inserts.load(Ordering::Relaxed) as i64),
            );
            sink_deletes.push(
                sink.as_ref()
                    .map(|c| c.deletes.load(Ordering::Relaxed) as i64),
            );
            let h = health.lock();
            let status = match (h.state, dataflow.status()) {
                (crate::catalog::ViewState::Running, DataflowStatus::Failed(_)) => "RESTARTING",
                (s, _) => s.as_str(),
            };
            names.push(Some(r.name.clone()));
            statuses.push(Some(status.to_string()));
            restarts.push(h.tracker.restarts() as i64);
            errors.push(
                h.last_error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.code, e.message)),
            );
            strategies.push(Some(h.tracker.strategy().describe()));
            match &manifest {
                Some(m) => {
                    let size: u64 = r
                        .state_ids
                        .iter()
                        .filter_map(|id| m.tables.get(id))
                        .flatten()
                        .map(|f| f.size)
                        .sum();
                    let included = r.state_ids.iter().any(|id| m.tables.contains_key(id));
                    epochs.push(if included { m.epoch as i64 } else { 0 });
                    durations.push(m.duration_ms as i64);
                    sizes.push(size as i64);
                }
                None => {
                    epochs.push(0);
                    durations.push(0);
                    sizes.push(0);
                }
            }
        }
        table(
            vec![
                ("name", DataType::Utf8),
                ("status", DataType::Utf8),
                ("restart_count", DataType::Int64),
                ("last_error", DataType::Utf8),
                ("restart_strategy", DataType::Utf8),
                ("checkpoint_epoch", DataType::Int64),
                ("checkpoint_duration_ms", DataType::Int64),
                ("checkpoint_size_bytes", DataType::Int64),
                ("kind", DataType::Utf8),
                ("source_offset", DataType::Int64),
                ("source_finished", DataType::Boolean),
                ("sink_inserts", DataType::Int64),
                ("sink_deletes", DataType::Int64),
                ("parallelism", DataType::Int64),
            ],
            vec![
                text(names),
                text(statuses),
                int(restarts),
                text(errors),
                text(strategies),
                int(epochs),
                int(durations),
                int(sizes),
                text(kinds),
                Arc::new(Int64Array::from(offsets)),
                Arc::new(BooleanArray::from(finished)),
                Arc::new(Int64Array::from(sink_inserts)),
                Arc::new(Int64Array::from(sink_deletes)),
                int(parallelism),
            ],
        )
    }

    fn checkpoints_table(&self) -> DfResult<Arc<dyn TableProvider>> {
        let s = self.durable.stats.lock().clone();
        let lsn = self
            .durable
            .last_manifest()
            .map(|m| m.wal_lsn as i64)
            .unwrap_or(0);
        table(
            vec![
                ("epoch", DataType::Int64),
                ("duration_ms", DataType::Int64),
                ("size_bytes", DataType::Int64),
                ("files", DataType::Int64),
                ("wal_offset", DataType::Int64),
                ("completed", DataType::Int64),
                ("failed", DataType::Int64),
                ("interval_ms", DataType::Int64),
                ("last_error", DataType::Utf8),
            ],
            vec![
                int(vec![s.epoch as i64]),
                int(vec![s.duration_ms as i64]),
                int(vec![s.size_bytes as i64]),
                int(vec![s.files as i64]),
                int(vec![lsn]),
                int(vec![s.completed as i64]),
                int(vec![s.failed as i64]),
                int(vec![self.checkpoint_interval().as_millis() as i64]),
                text(vec![s.last_error]),
            ],
        )
    }

    fn memory_table(&self) -> DfResult<Arc<dyn TableProvider>> {
        let mut parts = vec![
            weir_state::MemoryUsage {
                name: "process_resident",
                bytes: resident_bytes().unwrap_or(0),
                description: "the server process's resident set (RSS)",
            },
            weir_state::MemoryUsage {
                name: "state_budget",
                bytes: (self.state_ctx.cache_bytes as u64) * 4,
                description:
                    "--state-cache-mb: 1/2 block cache, 1/4 memtables, 1/4 operator caches",
            },
        ];
        parts.extend(self.heap_stats.map(|f| f()).unwrap_or_default());
        parts.extend(self.store.memory_usage());
        table(
            vec![
                ("name", DataType::Utf8),
                ("bytes", DataType::Int64),
                ("description", DataType::Utf8),
            ],
            vec![
                text(parts.iter().map(|p| Some(p.name.to_string())).collect()),
                int(parts.iter().map(|p| p.bytes as i64).collect()),
                text(
                    parts
                        .iter()
                        .map(|p| Some(p.description.to_string()))
                        .collect(),
                ),
            ],
        )
    }

    fn recovery_table(&self) -> DfResult<Arc<dyn TableProvider>> {
        let r = self.durable.recovery.lock().clone();
        table(
            vec![
                ("checkpoint_epoch", DataType::Int64),
                ("damaged_checkpoints", DataType::Int64),
                ("wal_records_replayed", DataType::Int64),
                ("duration_ms", DataType::Int64),
            ],
            vec![
                int(vec![r.checkpoint_epoch as i64]),
                int(vec![r.damaged_checkpoints.len() as i64]),
                int(vec![r.wal_records_replayed as i64]),
                int(vec![r.duration.as_millis() as i64]),
            ],
        )
    }
}

/// The process's resident set size, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(engine) = self.engine.get().and_then(|w| w.upgrade()) else {
            return Ok(None);
        };
        Ok(Some(match name {
            "dataflows" => engine.dataflows_table()?,
            "checkpoints" => engine.checkpoints_table()?,
            "recovery" => engine.recovery_table()?,
            "memory" => engine.memory_table()?,
            _ => return Ok(None),
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
