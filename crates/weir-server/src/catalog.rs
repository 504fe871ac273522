//! The catalog: every table and materialized view, by name, with what is
//! needed to read it, write it and subscribe to its changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use weir_common::arrow::array::RecordBatch;
use weir_common::arrow::datatypes::SchemaRef;
use weir_common::Error;
use weir_dataflow::blackhole::SinkCounters;
use weir_dataflow::materialize::read_view;
use weir_dataflow::restart::RestartTracker;
use weir_dataflow::table_store::{read_batches, read_table, RowLayout, TableStore};
use weir_dataflow::{DataflowError, DataflowHandle, DataflowStatus, Outlet};
use weir_state::{StateStoreRef, StateTableId, StoreSnapshot};

/// A table or a materialized view.
pub struct Relation {
    /// Name, as stored (unquoted identifiers are lower-cased).
    pub name: String,
    /// Columns.
    pub schema: SchemaRef,
    /// The state table holding its rows.
    pub state_id: StateTableId,
    /// Its change stream; views on it subscribe here.
    pub outlet: Arc<Outlet>,
    /// The SQL that recreates it (kept in checkpoints and the log).
    pub ddl: String,
    /// Every state table it owns (a table's rows; a view's operators, the
    /// view's rows first).
    pub state_ids: Vec<StateTableId>,
    /// Table- or view-specific parts.
    pub kind: RelationKind,
}

/// What a relation is.
pub enum RelationKind {
    /// A base table.
    Table {
        /// The stored rows; DML goes through it.
        store: Arc<Mutex<TableStore>>,
        /// Primary-key column indices (empty: a multiset).
        pk: Vec<usize>,
    },
    /// A source: rows come from a connector, read by each dataflow on it.
    Source {
        /// Connector, columns, computed columns.
        spec: Arc<crate::engine::source::SourceSpec>,
    },
    /// A plain view: a named query, expanded wherever it is used
    /// (`engine/views.rs`). It stores no rows.
    PlainView {
        /// Its query, as written.
        query: Box<weir_common::datafusion::sql::sqlparser::ast::Query>,
        /// The relations its query names.
        upstreams: Vec<String>,
        /// Its defining query, as SQL.
        definition: String,
    },
    /// A materialized view, or a sink (a view whose output leaves Weir).
    View {
        /// The pipeline maintaining it.
        dataflow: DataflowHandle,
        /// What the pipeline runs, as stored in checkpoints and the log.
        plan: Arc<weir_dataflow::plan::DataflowPlan>,
        /// The relations it reads from (each once).
        upstreams: Vec<String>,
        /// Its defining query, as SQL.
        definition: String,
        /// Restart bookkeeping, shared by every incarnation of the view.
        health: Arc<Mutex<ViewHealth>>,
        /// For a sink, what it consumed; `None` for a materialized view.
        sink: Option<Arc<SinkCounters>>,
    },
}

/// The kinds of relation, as DDL names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Table,
    View,
    MaterializedView,
    Source,
    Sink,
}

impl ObjectKind {
    /// Lower-case name, as in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Table => "table",
            ObjectKind::View => "view",
            ObjectKind::MaterializedView => "materialized view",
            ObjectKind::Source => "source",
            ObjectKind::Sink => "sink",
        }
    }
}

/// Whether a view is being maintained, as the system view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewState {
    /// Its dataflow runs.
    Running,
    /// Its dataflow failed and waits to be restarted.
    Restarting,
    /// The restart strategy gave up.
    Failed,
}

impl ViewState {
    /// The name shown in `weir_catalog.dataflows`.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewState::Running => "RUNNING",
            ViewState::Restarting => "RESTARTING",
            ViewState::Failed => "FAILED",
        }
    }
}

/// Failures and restarts of one view.
#[derive(Debug)]
pub struct ViewHealth {
    /// Current state.
    pub state: ViewState,
    /// The last error that stopped its dataflow.
    pub last_error: Option<Error>,
    /// Applies the view's restart strategy.
    pub tracker: RestartTracker,
}

impl Relation {
    /// True for materialized views and sinks (relations with a dataflow).
    pub fn is_view(&self) -> bool {
        matches!(self.kind, RelationKind::View { .. })
    }

    /// A view's or sink's dataflow plan, as JSON.
    pub fn plan_json(&self) -> Option<Result<String, Error>> {
        match &self.kind {
            RelationKind::View { plan, .. } => Some(plan.to_json().map_err(Error::from)),
            _ => None,
        }
    }

    /// True when the relation only ever inserts rows (a source).
    pub fn is_append_only(&self) -> bool {
        matches!(self.kind, RelationKind::Source { .. })
    }

    /// What kind of relation this is.
    pub fn object_kind(&self) -> ObjectKind {
        match &self.kind {
            RelationKind::Table { .. } => ObjectKind::Table,
            RelationKind::Source { .. } => ObjectKind::Source,
            RelationKind::PlainView { .. } => ObjectKind::View,
            RelationKind::View { sink: None, .. } => ObjectKind::MaterializedView,
            RelationKind::View { sink: Some(_), .. } => ObjectKind::Sink,
        }
    }

    /// The committed rows, decoded as `schema` (the relation's columns,
    /// possibly with other nullability).
    pub fn read(
        &self,
        store: &StateStoreRef,
        schema: &SchemaRef,
    ) -> Result<RecordBatch, DataflowError> {
        match &self.kind {
            RelationKind::Table { pk, .. } => {
                read_table(store, self.state_id, schema, !pk.is_empty())
            }
            RelationKind::View { .. } => read_view(store, self.state_id, schema),
            RelationKind::Source { .. } | RelationKind::PlainView { .. } => {
                Err(DataflowError::Eval(Error::new(
                    weir_common::SqlState::FEATURE_NOT_SUPPORTED,
                    format!(
                        "{} \"{}\" stores no rows",
                        self.object_kind().as_str(),
                        self.name
                    ),
                )))
            }
        }
    }

    /// The committed rows as batches of about `batch_rows`, each handed to
    /// `emit` as it is decoded (see [`read_batches`]).
    pub fn read_batches(
        &self,
        snapshot: &dyn StoreSnapshot,
        schema: &SchemaRef,
        batch_rows: usize,
        emit: &mut dyn FnMut(RecordBatch) -> Result<(), DataflowError>,
    ) -> Result<(), DataflowError> {
        let layout = match &self.kind {
            RelationKind::Table { pk, .. } if !pk.is_empty() => RowLayout::Keyed,
            RelationKind::Table { .. } | RelationKind::View { .. } => RowLayout::Multiset,
            RelationKind::Source { .. } | RelationKind::PlainView { .. } => {
                return Err(DataflowError::Eval(Error::new(
                    weir_common::SqlState::FEATURE_NOT_SUPPORTED,
                    format!(
                        "{} \"{}\" stores no rows",
                        self.object_kind().as_str(),
                        self.name
                    ),
                )))
            }
        };
        read_batches(snapshot, self.state_id, schema, layout, batch_rows, emit)
    }

    /// For a view, whether its dataflow still runs.
    pub fn view_status(&self) -> Option<DataflowStatus> {
        match &self.kind {
            RelationKind::View { dataflow, .. } => Some(dataflow.status()),
            RelationKind::Table { .. }
            | RelationKind::Source { .. }
            | RelationKind::PlainView { .. } => None,
        }
    }
}

/// All relations of the server.
#[derive(Default)]
pub struct Catalog {
    relations: BTreeMap<String, Arc<Relation>>,
    next_state_id: StateTableId,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Catalog {
            relations: BTreeMap::new(),
            next_state_id: 1,
        }
    }

    /// A fresh state table id.
    pub fn allocate_state_id(&mut self) -> StateTableId {
        let id = self.next_state_id;
        self.next_state_id += 1;
        id
    }

    /// The id [`Catalog::allocate_state_id`] hands out next.
    pub fn peek_next_state_id(&self) -> StateTableId {
        self.next_state_id
    }

    /// Continue allocating at `id` (recovery recreates relations with the
    /// ids they had).
    pub fn set_next_state_id(&mut self, id: StateTableId) {
        self.next_state_id = id;
    }

    /// The relation called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Relation>> {
        self.relations.get(name).cloned()
    }

    /// Every relation, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Relation>> {
        self.relations.values()
    }

    /// Add a relation; its name must be free.
    pub fn insert(&mut self, relation: Relation) {
        self.relations
            .insert(relation.name.clone(), Arc::new(relation));
    }

    /// Remove a relation.
    pub fn remove(&mut self, name: &str) -> Option<Arc<Relation>> {
        self.relations.remove(name)
    }

    /// Views reading directly from `name`.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        self.relations
            .values()
            .filter(|r| {
                matches!(&r.kind, RelationKind::View { upstreams, .. } | RelationKind::PlainView { upstreams, .. } if upstreams.iter().any(|u| u == name))
            })
            .map(|r| r.name.clone())
            .collect()
    }
}
