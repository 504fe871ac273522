//! DataFusion's view of the catalog: a `SchemaProvider` resolving names to
//! tables and views, each scanned as its committed contents. SELECT, and the
//! row-finding half of INSERT ... SELECT, UPDATE and DELETE, run on these.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use weir_common::arrow::array::RecordBatch;
use weir_common::arrow::datatypes::{Field, Schema, SchemaRef};
use weir_common::datafusion::catalog::{SchemaProvider, Session, TableProvider};
use weir_common::datafusion::common::{Constraint, Constraints};
use weir_common::datafusion::error::{DataFusionError, Result};
use weir_common::datafusion::execution::{SendableRecordBatchStream, TaskContext};
use weir_common::datafusion::logical_expr::{Expr, TableType};
use weir_common::datafusion::physical_expr::LexOrdering;
use weir_common::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use weir_common::datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use weir_common::datafusion::physical_plan::ExecutionPlan;
use weir_dataflow::DataflowStatus;
use weir_state::{SnapshotRef, StateError, StateStoreRef};

use crate::catalog::{Catalog, Relation, RelationKind, ViewState};

/// The store snapshot a statement reads, when it must be a given one (a
/// transaction's, or one shared by all scans of a statement). Put in the
/// session config's extensions; scans without it take their own.
pub struct ReadSnapshot(pub SnapshotRef);

/// The `public` schema, backed by Weir's catalog.
pub struct WeirSchema {
    catalog: Arc<RwLock<Catalog>>,
    store: StateStoreRef,
}

impl std::fmt::Debug for WeirSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeirSchema")
    }
}

impl WeirSchema {
    /// A schema over `catalog`, reading rows from `store`.
    pub fn new(catalog: Arc<RwLock<Catalog>>, store: StateStoreRef) -> Self {
        WeirSchema { catalog, store }
    }
}

#[async_trait]
impl SchemaProvider for WeirSchema {
    fn table_names(&self) -> Vec<String> {
        self.catalog.read().all().map(|r| r.name.clone()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(relation) = self.catalog.read().get(name) else {
            return Ok(None);
        };
        Ok(Some(Arc::new(RelationTable::new(
            relation,
            self.store.clone(),
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.read().get(name).is_some()
    }
}

/// A table or view as DataFusion scans it.
pub struct RelationTable {
    relation: Arc<Relation>,
    store: StateStoreRef,
    constraints: Option<Constraints>,
    /// The relation's columns, all nullable: NOT NULL is enforced by the
    /// table store, with Postgres' error and the real column name, rather
    /// than by DataFusion's insert planning.
    schema: SchemaRef,
}

impl std::fmt::Debug for RelationTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelationTable({})", self.relation.name)
    }
}

impl RelationTable {
    fn new(relation: Arc<Relation>, store: StateStoreRef) -> Self {
        let constraints = match &relation.kind {
            RelationKind::Table { pk, .. } if !pk.is_empty() => Some(Constraints::new_unverified(
                vec![Constraint::PrimaryKey(pk.clone())],
            )),
            _ => None,
        };
        // Columns carry their table OID and number for RowDescription.
        let oid = crate::pg_catalog::rel_oids(&relation).rel;
        let fields: Vec<Field> = relation
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                weir_common::pg::origin::attach(f.as_ref().clone().with_nullable(true), oid, i + 1)
            })
            .collect();
        RelationTable {
            schema: Arc::new(Schema::new(fields)),
            relation,
            store,
            constraints,
        }
    }
}

#[async_trait]
impl TableProvider for RelationTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.constraints.as_ref()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let r = &self.relation;
        if let Some(e) = unreadable(r) {
            return Err(DataFusionError::External(Box::new(e)));
        }
        let snapshot = match state.config().get_extension::<ReadSnapshot>() {
            Some(s) => Arc::clone(&s.0),
            None => Arc::clone(&self.store).snapshot(),
        };
        let scan = RelationScan {
            relation: Arc::clone(&self.relation),
            snapshot,
            schema: Arc::clone(&self.schema),
        };
        Ok(Arc::new(StreamingTableExec::try_new(
            self.schema(),
            vec![Arc::new(scan)],
            projection,
            Vec::<LexOrdering>::new(),
            false,
            None,
        )?))
    }
}

/// Rows per batch of a scan.
const SCAN_BATCH_ROWS: usize = 8192;

/// Batches a scan keeps ready ahead of the query.
const SCAN_AHEAD: usize = 2;

/// A scan of one relation as a stream of batches: a blocking task iterates
/// a store snapshot and hands over batches of
/// [`SCAN_BATCH_ROWS`] through a channel of [`SCAN_AHEAD`], so a query over
/// a large view holds a few batches at a time, not the view.
struct RelationScan {
    relation: Arc<Relation>,
    snapshot: SnapshotRef,
    schema: SchemaRef,
}

impl std::fmt::Debug for RelationScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelationScan({})", self.relation.name)
    }
}

impl PartitionStream for RelationScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(SCAN_AHEAD);
        let relation = Arc::clone(&self.relation);
        let snapshot = Arc::clone(&self.snapshot);
        let schema = Arc::clone(&self.schema);
        tokio::task::spawn_blocking(move || {
            let sent = relation.read_batches(&*snapshot, &schema, SCAN_BATCH_ROWS, &mut |batch| {
                tx.blocking_send(Ok(batch))
                    .map_err(|_| weir_dataflow::DataflowError::State(StateError::ScanStopped))
            });
            match sent {
                Ok(()) | Err(weir_dataflow::DataflowError::State(StateError::ScanStopped)) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(
                        weir_common::Error::from(e),
                    ))));
                }
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            receiver_stream(rx),
        ))
    }
}

/// The receiver as a stream.
fn receiver_stream(
    rx: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
) -> impl futures::Stream<Item = Result<RecordBatch>> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// Why a view cannot be read now, if it cannot: its dataflow failed, is
/// being rebuilt, or its restart strategy gave up. A view is never read
/// while it is not up to date.
fn unreadable(r: &Relation) -> Option<weir_common::Error> {
    let (dataflow, health) = match &r.kind {
        RelationKind::Table { .. } => return None,
        RelationKind::PlainView { .. } => {
            return Some(weir_common::Error::internal(format!(
                "view \"{}\" was not expanded before planning",
                r.name
            )))
        }
        RelationKind::Source { .. } => {
            return Some(weir_common::Error::new(
                weir_common::SqlState::FEATURE_NOT_SUPPORTED,
                format!(
                    "source \"{}\" cannot be queried directly; create a materialized view over it",
                    r.name
                ),
            ))
        }
        RelationKind::View { sink: Some(_), .. } => {
            return Some(weir_common::Error::new(
                weir_common::SqlState::WRONG_OBJECT_TYPE,
                format!("\"{}\" is a sink and cannot be queried", r.name),
            ))
        }
        RelationKind::View {
            dataflow, health, ..
        } => (dataflow, health),
    };
    let h = health.lock();
    let failed = match dataflow.status() {
        DataflowStatus::Failed(e) => Some(e),
        DataflowStatus::Running => None,
    };
    let error = match (h.state, failed) {
        (ViewState::Running, None) => return None,
        (_, Some(e)) => e,
        (_, None) => h.last_error.clone().unwrap_or_else(|| {
            weir_common::Error::new(
                weir_common::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "restart in progress",
            )
        }),
    };
    let what = match h.state {
        ViewState::Failed => "has failed",
        _ => "is restarting after an error",
    };
    Some(error.context(format!("materialized view \"{}\" {what}", r.name)))
}
