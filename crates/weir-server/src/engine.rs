//! The engine executes statements against the catalog.
//!
//! Consistency: every write (DML, CREATE/DROP) runs under one write lock. A
//! DML statement applies its rows to the table, sends the changes to the
//! table's subscribers, closes an epoch with a barrier sent to every table,
//! and returns only once every running view has committed that epoch. So
//! once a write is acknowledged, a SELECT from any session sees it in every
//! view (read-your-writes), and since a view commits an epoch in one atomic
//! write, no SELECT sees a view half-updated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use weir_common::arrow::array::{ArrayRef, RecordBatch, StringArray};
use weir_common::arrow::compute::{cast, concat_batches};
use weir_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_common::datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use weir_common::datafusion::common::{Constraint, ParamValues};
use weir_common::datafusion::execution::context::{SessionContext, SessionState};
use weir_common::datafusion::logical_expr::{
    DdlStatement, DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, WriteOp,
};
use weir_common::datafusion::prelude::SessionConfig;
use weir_common::datafusion::sql::parser::Statement as DfStatement;
use weir_common::datafusion::sql::sqlparser::ast::{
    ObjectName, ObjectType, Query, Statement as SqlStatement,
};
use weir_common::{Barrier, Error, Message, Op, SqlState};
use weir_dataflow::materialize::read_view;
use weir_dataflow::runtime::spawn_pipeline;
use weir_dataflow::table_store::{read_table, split_chunks, TableStore};
use weir_dataflow::{DataflowStatus, Outlet};
use weir_sql::naming::output_names;
use weir_sql::parser::Statement;
use weir_sql::view_plan::plan_view;
use weir_state::{MemoryStateStore, StateStoreRef, StateTable};

use crate::catalog::{Catalog, Relation, RelationKind};
use crate::provider::WeirSchema;
use crate::ServerError;

/// The catalog name DataFusion resolves relations in.
pub const CATALOG: &str = "weir";
/// The only schema.
pub const SCHEMA: &str = "public";

/// What a statement returns.
#[derive(Debug)]
pub enum QueryResult {
    /// Rows (SELECT, SHOW, EXPLAIN).
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A command tag such as `INSERT 0 3` or `CREATE TABLE`.
    Command { tag: String, rows: Option<usize> },
}

impl QueryResult {
    fn command(tag: &str) -> Self {
        QueryResult::Command {
            tag: tag.to_string(),
            rows: None,
        }
    }
}

/// Shared state of a server: catalog, state store, DataFusion context.
pub struct Engine {
    store: StateStoreRef,
    catalog: Arc<RwLock<Catalog>>,
    ctx: SessionContext,
    /// Serializes writers (DML, DDL, FLUSH).
    write_lock: tokio::sync::Mutex<()>,
    /// The last closed epoch.
    epoch: AtomicU64,
    /// State table ids handed out for EXPLAIN, never written.
    scratch_ids: Mutex<u32>,
}

type Result<T> = std::result::Result<T, ServerError>;

fn user(code: SqlState, message: impl Into<String>) -> ServerError {
    ServerError::Statement(Error::new(code, message))
}

/// Name of a relation as the catalog stores it (unquoted: lower-case).
fn relation_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| {
            if i.quote_style.is_some() {
                i.value.clone()
            } else {
                i.value.to_lowercase()
            }
        })
        .collect();
    match parts.as_slice() {
        [n] => Ok(n.clone()),
        [s, n] if s == SCHEMA => Ok(n.clone()),
        [c, s, n] if c == CATALOG && s == SCHEMA => Ok(n.clone()),
        _ => Err(user(
            SqlState::UNDEFINED_OBJECT,
            format!("schema of \"{name}\" does not exist"),
        )),
    }
}

impl Engine {
    /// A fresh engine with an empty catalog.
    pub fn new() -> Result<Self> {
        let store: StateStoreRef = Arc::new(MemoryStateStore::new());
        let catalog = Arc::new(RwLock::new(Catalog::new()));
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_target_partitions(1)
            .with_information_schema(false);
        // Sessions run in UTC: TIMESTAMPTZ values are stored as UTC instants.
        config.options_mut().execution.time_zone = Some("+00:00".to_string());
        // 1.005 is NUMERIC in Postgres, not a float.
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        let ctx = SessionContext::new_with_config(config);
        let weir_catalog = MemoryCatalogProvider::new();
        weir_catalog.register_schema(
            SCHEMA,
            Arc::new(WeirSchema::new(Arc::clone(&catalog), Arc::clone(&store))),
        )?;
        ctx.register_catalog(CATALOG, Arc::new(weir_catalog));
        Ok(Engine {
            store,
            catalog,
            ctx,
            write_lock: tokio::sync::Mutex::new(()),
            epoch: AtomicU64::new(0),
            scratch_ids: Mutex::new(u32::MAX),
        })
    }

    fn state(&self) -> SessionState {
        self.ctx.state()
    }

    /// Stop every dataflow.
    pub fn shutdown(&self) {
        let mut catalog = self.catalog.write();
        let names: Vec<String> = catalog.all().map(|r| r.name.clone()).collect();
        for n in names {
            catalog.remove(&n);
        }
    }

    /// Execute one parsed statement. `params` are the values of `$1`, `$2`,
    /// ... in extended-protocol execution.
    pub async fn execute(
        &self,
        statement: &Statement,
        params: Option<ParamValues>,
    ) -> Result<QueryResult> {
        match statement {
            Statement::Flush => {
                let _guard = self.write_lock.lock().await;
                self.close_epoch().await;
                Ok(QueryResult::command("FLUSH"))
            }
            Statement::ShowTables => Ok(self.show_relations(false)),
            Statement::ShowMaterializedViews => Ok(self.show_relations(true)),
            Statement::CreateMaterializedView {
                name,
                query,
                if_not_exists,
            } => self.create_view(name, query, *if_not_exists).await,
            Statement::ExplainMaterializedView { query, .. } => self.explain_view(query).await,
            Statement::Sql(s) => self.execute_sql(s, params).await,
        }
    }

    async fn execute_sql(
        &self,
        s: &SqlStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryResult> {
        match s {
            SqlStatement::Query(_) | SqlStatement::Explain { .. } => self.query(s, params).await,
            SqlStatement::Insert(_) | SqlStatement::Update(_) | SqlStatement::Delete(_) => {
                self.dml(s, params).await
            }
            SqlStatement::CreateTable(_) => self.create_table(s).await,
            SqlStatement::Drop {
                object_type,
                if_exists,
                names,
                cascade,
                ..
            } => self.drop(*object_type, *if_exists, names, *cascade).await,
            SqlStatement::StartTransaction { .. } => Ok(QueryResult::command("BEGIN")),
            SqlStatement::Commit { .. } => Ok(QueryResult::command("COMMIT")),
            SqlStatement::Rollback { .. } => Ok(QueryResult::command("ROLLBACK")),
            SqlStatement::Set(_) => Ok(QueryResult::command("SET")),
            SqlStatement::ShowVariable { variable } => Ok(show_variable(
                &variable
                    .iter()
                    .map(|i| i.value.clone())
                    .collect::<Vec<_>>()
                    .join("."),
            )),
            other => Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!(
                    "statement not supported: {}",
                    first_words(&other.to_string())
                ),
            )),
        }
    }

    /// Plan a standard SQL statement with DataFusion.
    async fn plan(&self, s: &SqlStatement, params: Option<ParamValues>) -> Result<LogicalPlan> {
        let plan = self
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(s.clone())))
            .await?;
        Ok(match params {
            Some(p) => plan.with_param_values(p)?,
            None => plan,
        })
    }

    /// Plan a statement without executing it: parameter types and, for
    /// statements returning rows, the result schema (extended protocol).
    pub async fn describe(
        &self,
        statement: &Statement,
    ) -> Result<(Vec<Option<DataType>>, Option<SchemaRef>)> {
        match statement {
            Statement::Sql(s) => match s.as_ref() {
                SqlStatement::Query(_)
                | SqlStatement::Explain { .. }
                | SqlStatement::Insert(_)
                | SqlStatement::Update(_)
                | SqlStatement::Delete(_) => {
                    let plan = self.plan(s, None).await?;
                    let types = plan.get_parameter_types()?;
                    let mut ordered: Vec<(usize, Option<DataType>)> = types
                        .into_iter()
                        .filter_map(|(k, v)| {
                            k.trim_start_matches('$')
                                .parse::<usize>()
                                .ok()
                                .map(|i| (i, v))
                        })
                        .collect();
                    ordered.sort_by_key(|(i, _)| *i);
                    let count = ordered.last().map(|(i, _)| *i).unwrap_or(0);
                    let mut params = vec![None; count];
                    for (i, t) in ordered {
                        params[i - 1] = t;
                    }
                    let schema = if matches!(
                        s.as_ref(),
                        SqlStatement::Query(_) | SqlStatement::Explain { .. }
                    ) {
                        Some(pg_schema(&plan))
                    } else {
                        None
                    };
                    Ok((params, schema))
                }
                SqlStatement::ShowVariable { .. } => Ok((vec![], Some(text_schema(&["setting"])))),
                _ => Ok((vec![], None)),
            },
            Statement::ShowTables | Statement::ShowMaterializedViews => {
                Ok((vec![], Some(text_schema(&["Name"]))))
            }
            Statement::ExplainMaterializedView { .. } => {
                Ok((vec![], Some(text_schema(&["QUERY PLAN"]))))
            }
            _ => Ok((vec![], None)),
        }
    }

    async fn query(&self, s: &SqlStatement, params: Option<ParamValues>) -> Result<QueryResult> {
        let plan = self.plan(s, params).await?;
        let schema = pg_schema(&plan);
        let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
        let batches = batches
            .into_iter()
            .map(|b| RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Statement(e.into()))?;
        Ok(QueryResult::Rows { schema, batches })
    }

    async fn collect(&self, plan: LogicalPlan) -> Result<Vec<RecordBatch>> {
        Ok(self.ctx.execute_logical_plan(plan).await?.collect().await?)
    }

    async fn dml(&self, s: &SqlStatement, params: Option<ParamValues>) -> Result<QueryResult> {
        let _guard = self.write_lock.lock().await;
        let mut s = s.clone();
        weir_sql::parser::alias_insert_source(&mut s);
        let plan = self.plan(&s, params).await?;
        let LogicalPlan::Dml(dml) = plan else {
            return Err(ServerError::Statement(Error::internal(
                "DML did not plan as DML",
            )));
        };
        let name = dml.table_name.table().to_string();
        let relation = self.catalog.read().get(&name).ok_or_else(|| {
            user(
                SqlState::UNDEFINED_TABLE,
                format!("relation \"{name}\" does not exist"),
            )
        })?;
        let RelationKind::Table { store, .. } = &relation.kind else {
            return Err(user(
                SqlState::WRONG_OBJECT_TYPE,
                format!("cannot change materialized view \"{name}\""),
            ));
        };
        let schema = Arc::clone(&relation.schema);
        check_assignment_types(&schema, &dml.input)?;
        let (deletes, inserts, tag) = match &dml.op {
            WriteOp::Insert(_) => {
                let rows = self.rows_for(&schema, &dml.input, 0).await?;
                (None, Some(rows), "INSERT")
            }
            WriteOp::Delete => {
                let rows = self.rows_for(&schema, &dml.input, 0).await?;
                (Some(rows), None, "DELETE")
            }
            WriteOp::Update => {
                let (old, new) = self.update_rows(&schema, &dml).await?;
                (Some(old), Some(new), "UPDATE")
            }
            other => {
                return Err(user(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    format!("{other} is not supported"),
                ))
            }
        };
        let count = match (&deletes, &inserts) {
            (_, Some(i)) => i.num_rows(),
            (Some(d), None) => d.num_rows(),
            (None, None) => 0,
        };
        let chunks = store.lock().apply(deletes.as_ref(), inserts.as_ref())?;
        for chunk in chunks {
            relation.outlet.send(Message::Chunk(chunk)).await;
        }
        self.close_epoch().await;
        Ok(QueryResult::Command {
            tag: tag.to_string(),
            rows: Some(count),
        })
    }

    /// Run `plan` and return its rows cast to `schema`, reading columns
    /// starting at `offset`.
    async fn rows_for(
        &self,
        schema: &SchemaRef,
        plan: &LogicalPlan,
        offset: usize,
    ) -> Result<RecordBatch> {
        let batches = self.collect(plan.clone()).await?;
        conform(schema, &batches, offset)
    }

    /// Old and new rows of an UPDATE. DataFusion plans UPDATE as a projection
    /// of the new values over the filtered table; we project the old columns
    /// beside them so both come from one scan.
    async fn update_rows(
        &self,
        schema: &SchemaRef,
        dml: &DmlStatement,
    ) -> Result<(RecordBatch, RecordBatch)> {
        let LogicalPlan::Projection(projection) = dml.input.as_ref() else {
            return Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "this form of UPDATE is not supported",
            ));
        };
        let input = projection.input.as_ref().clone();
        let width = schema.fields().len();
        let in_schema = input.schema().clone();
        if in_schema.fields().len() != width || projection.expr.len() != width {
            return Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "UPDATE ... FROM is not supported",
            ));
        }
        let mut exprs: Vec<Expr> = in_schema.columns().into_iter().map(Expr::Column).collect();
        for (i, e) in projection.expr.iter().enumerate() {
            exprs.push(e.clone().unalias().alias(format!("__weir_new_{i}")));
        }
        let plan = LogicalPlanBuilder::from(input).project(exprs)?.build()?;
        let batches = self.collect(plan).await?;
        let old = conform(schema, &batches, 0)?;
        let new = conform(schema, &batches, width)?;
        Ok((old, new))
    }

    /// Close an epoch: a barrier to every table, then wait until every
    /// running view has committed it. Callers hold the write lock.
    async fn close_epoch(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let relations: Vec<Arc<Relation>> = self.catalog.read().all().cloned().collect();
        for r in relations.iter().filter(|r| !r.is_view()) {
            r.outlet.send(Message::Barrier(Barrier { epoch })).await;
        }
        for r in &relations {
            if let RelationKind::View { dataflow, .. } = &r.kind {
                dataflow.wait_committed(epoch).await;
            }
        }
    }

    async fn create_table(&self, s: &SqlStatement) -> Result<QueryResult> {
        let _guard = self.write_lock.lock().await;
        let plan = self.plan(s, None).await?;
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) = plan else {
            return Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "this form of CREATE TABLE is not supported",
            ));
        };
        if !matches!(create.input.as_ref(), LogicalPlan::EmptyRelation(_)) {
            return Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "CREATE TABLE ... AS is not supported",
            ));
        }
        if !create.column_defaults.is_empty() {
            return Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "column DEFAULT values are not supported",
            ));
        }
        let name = create.name.table().to_string();
        let mut pk: Vec<usize> = Vec::new();
        for c in create.constraints.iter() {
            match c {
                Constraint::PrimaryKey(cols) => pk = cols.clone(),
                Constraint::Unique(_) => {
                    return Err(user(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        "UNIQUE constraints are not supported",
                    ))
                }
            }
        }
        let input_schema = create.input.schema().as_arrow();
        let fields: Vec<Field> = input_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let nullable = f.is_nullable() && !pk.contains(&i);
                Field::new(f.name(), f.data_type().clone(), nullable)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let mut catalog = self.catalog.write();
        if catalog.get(&name).is_some() {
            if create.if_not_exists {
                return Ok(QueryResult::command("CREATE TABLE"));
            }
            return Err(user(
                SqlState::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        let state_id = catalog.allocate_state_id();
        let table = TableStore::new(
            &name,
            Arc::clone(&schema),
            pk.clone(),
            StateTable::new(Arc::clone(&self.store), state_id),
        )?;
        catalog.insert(Relation {
            name,
            schema,
            state_id,
            outlet: Arc::new(Outlet::new()),
            kind: RelationKind::Table {
                store: Arc::new(Mutex::new(table)),
                pk,
            },
        });
        Ok(QueryResult::command("CREATE TABLE"))
    }

    async fn create_view(
        &self,
        name: &ObjectName,
        query: &Query,
        if_not_exists: bool,
    ) -> Result<QueryResult> {
        let _guard = self.write_lock.lock().await;
        let name = relation_name(name)?;
        if self.catalog.read().get(&name).is_some() {
            if if_not_exists {
                return Ok(QueryResult::command("CREATE MATERIALIZED VIEW"));
            }
            return Err(user(
                SqlState::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        let plan = plan_view(&self.state(), query).await?;
        let upstream_name = plan.source.table().to_string();
        let upstream = self.catalog.read().get(&upstream_name).ok_or_else(|| {
            user(
                SqlState::UNDEFINED_TABLE,
                format!("relation \"{upstream_name}\" does not exist"),
            )
        })?;
        let schema = Arc::clone(&plan.schema);
        let (state_id, operators) = {
            let mut catalog = self.catalog.write();
            let mut ids = Vec::new();
            let store = Arc::clone(&self.store);
            let ops = plan.build(|| {
                let id = catalog.allocate_state_id();
                ids.push(id);
                StateTable::new(Arc::clone(&store), id)
            })?;
            (ids[0], ops)
        };
        // Subscribe, then feed the upstream's current contents first
        // (backfill): no write can interleave, we hold the write lock.
        let (input_tx, input_rx) = upstream.outlet.subscribe_with_sender();
        let outlet = Arc::new(Outlet::new());
        let epoch = self.epoch.load(Ordering::SeqCst);
        let dataflow = spawn_pipeline(operators, input_rx, Arc::clone(&outlet), epoch);
        let snapshot = match &upstream.kind {
            RelationKind::Table { pk, .. } => read_table(
                &self.store,
                upstream.state_id,
                &upstream.schema,
                !pk.is_empty(),
            ),
            RelationKind::View { .. } => {
                read_view(&self.store, upstream.state_id, &upstream.schema)
            }
        }?;
        for chunk in split_chunks(&snapshot, Op::Insert) {
            if input_tx.send(Message::Chunk(chunk)).await.is_err() {
                break;
            }
        }
        drop(input_tx);
        self.catalog.write().insert(Relation {
            name: name.clone(),
            schema,
            state_id,
            outlet,
            kind: RelationKind::View {
                dataflow,
                upstream: upstream_name,
                definition: query.to_string(),
            },
        });
        self.close_epoch().await;
        // A view whose backfill failed (say, division by zero) is not created,
        // as in Postgres.
        let failed = match self.catalog.read().get(&name).and_then(|r| r.view_status()) {
            Some(DataflowStatus::Failed(e)) => Some(e),
            _ => None,
        };
        if let Some(e) = failed {
            self.remove_relation(&name);
            return Err(ServerError::Statement(e));
        }
        Ok(QueryResult::command("CREATE MATERIALIZED VIEW"))
    }

    async fn explain_view(&self, query: &Query) -> Result<QueryResult> {
        let plan = plan_view(&self.state(), query).await?;
        let source = plan.source.table().to_string();
        let store = Arc::clone(&self.store);
        let mut scratch = self.scratch_ids.lock();
        let ops = plan.build(|| {
            *scratch -= 1;
            StateTable::new(Arc::clone(&store), *scratch)
        })?;
        let mut lines: Vec<String> = Vec::new();
        for (depth, op) in ops.iter().rev().enumerate() {
            lines.push(format!("{}{}", "  ".repeat(depth), op.explain()));
        }
        lines.push(format!("{}Source {}", "  ".repeat(ops.len()), source));
        Ok(text_rows("QUERY PLAN", lines))
    }

    fn show_relations(&self, views: bool) -> QueryResult {
        let names: Vec<String> = self
            .catalog
            .read()
            .all()
            .filter(|r| r.is_view() == views)
            .map(|r| r.name.clone())
            .collect();
        text_rows("Name", names)
    }

    async fn drop(
        &self,
        object_type: ObjectType,
        if_exists: bool,
        names: &[ObjectName],
        cascade: bool,
    ) -> Result<QueryResult> {
        let (want_view, tag) = match object_type {
            ObjectType::Table => (false, "DROP TABLE"),
            ObjectType::MaterializedView => (true, "DROP MATERIALIZED VIEW"),
            other => {
                return Err(user(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    format!("DROP {other} is not supported"),
                ))
            }
        };
        let _guard = self.write_lock.lock().await;
        for n in names {
            let name = relation_name(n)?;
            let relation = self.catalog.read().get(&name);
            let Some(relation) = relation else {
                if if_exists {
                    continue;
                }
                let what = if want_view {
                    "materialized view"
                } else {
                    "table"
                };
                return Err(user(
                    SqlState::UNDEFINED_TABLE,
                    format!("{what} \"{name}\" does not exist"),
                ));
            };
            if relation.is_view() != want_view {
                let what = if want_view {
                    "a materialized view"
                } else {
                    "a table"
                };
                return Err(user(
                    SqlState::WRONG_OBJECT_TYPE,
                    format!("\"{name}\" is not {what}"),
                ));
            }
            let dependents = self.all_dependents(&name);
            if !dependents.is_empty() && !cascade {
                return Err(user(
                    SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
                    format!(
                        "cannot drop {name} because other objects depend on it: materialized view {}",
                        dependents.join(", ")
                    ),
                ));
            }
            for d in dependents.iter().rev() {
                self.remove_relation(d);
            }
            self.remove_relation(&name);
        }
        Ok(QueryResult::command(tag))
    }

    /// Views depending on `name`, transitively, parents before children.
    fn all_dependents(&self, name: &str) -> Vec<String> {
        let catalog = self.catalog.read();
        let mut out = Vec::new();
        let mut queue = vec![name.to_string()];
        while let Some(n) = queue.pop() {
            for d in catalog.dependents(&n) {
                if !out.contains(&d) {
                    out.push(d.clone());
                    queue.push(d);
                }
            }
        }
        out
    }

    fn remove_relation(&self, name: &str) {
        let removed = self.catalog.write().remove(name);
        if let Some(r) = removed {
            if let RelationKind::View { dataflow, .. } = &r.kind {
                dataflow.stop();
            }
            r.outlet.close();
            if let Err(e) = StateTable::drop_table(&self.store, r.state_id) {
                tracing::warn!(error = %e, relation = name, "could not delete state of dropped relation");
            }
        }
    }
}

/// Postgres refuses to assign a boolean to a number column and a number to
/// a boolean column (42804); DataFusion would cast. Checked on what
/// DataFusion's INSERT/UPDATE planning feeds each target column: the
/// projection's expressions and, for INSERT ... VALUES, the values
/// themselves, looking through the casts the planner added.
fn check_assignment_types(schema: &SchemaRef, input: &LogicalPlan) -> Result<()> {
    use weir_common::datafusion::logical_expr::ExprSchemable;
    fn uncast(e: &Expr) -> &Expr {
        match e {
            Expr::Cast(c) => uncast(&c.expr),
            Expr::Alias(a) => uncast(&a.expr),
            other => other,
        }
    }
    let check = |column: usize, source: &DataType| -> Result<()> {
        let Some(field) = schema.fields().get(column) else {
            return Ok(());
        };
        let target = field.data_type();
        let textual = matches!(
            source,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Null
        );
        if !textual && (*source == DataType::Boolean) != (*target == DataType::Boolean) {
            return Err(user(
                SqlState::DATATYPE_MISMATCH,
                format!(
                    "column \"{}\" is of type {target} but expression is of type {source}",
                    field.name()
                ),
            ));
        }
        Ok(())
    };
    let LogicalPlan::Projection(p) = input else {
        return Ok(());
    };
    let values = match p.input.as_ref() {
        LogicalPlan::Values(v) => Some(v),
        _ => None,
    };
    for (i, e) in p.expr.iter().enumerate() {
        let inner = uncast(e);
        match (inner, values) {
            (Expr::Column(c), Some(v)) => {
                if let Ok(idx) = v.schema.index_of_column(c) {
                    for row in &v.values {
                        if let Some(value) = row.get(idx) {
                            check(i, &uncast(value).get_type(&v.schema)?)?;
                        }
                    }
                }
            }
            _ => check(i, &inner.get_type(p.input.schema())?)?,
        }
    }
    Ok(())
}

/// Cast the columns `offset..offset + schema.len()` of `batches` to `schema`.
/// The result's columns are all nullable: NOT NULL is checked by the table
/// store, which reports it as Postgres does.
fn conform(schema: &SchemaRef, batches: &[RecordBatch], offset: usize) -> Result<RecordBatch> {
    let width = schema.fields().len();
    let schema: SchemaRef = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let schema = &schema;
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        if b.num_columns() < offset + width {
            return Err(ServerError::Statement(Error::internal(
                "DML input has too few columns",
            )));
        }
        let cols = (0..width)
            .map(|i| {
                let c = b.column(offset + i);
                let t = schema.field(i).data_type();
                if c.data_type() == t {
                    Ok(Arc::clone(c))
                } else {
                    cast(c, t)
                }
            })
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()
            .map_err(|e| ServerError::Statement(e.into()))?;
        out.push(
            RecordBatch::try_new_with_options(
                Arc::clone(schema),
                cols,
                &weir_common::arrow::record_batch::RecordBatchOptions::new()
                    .with_row_count(Some(b.num_rows())),
            )
            .map_err(|e| ServerError::Statement(e.into()))?,
        );
    }
    concat_batches(schema, &out).map_err(|e| ServerError::Statement(e.into()))
}

/// The plan's output schema with Postgres-style column names.
fn pg_schema(plan: &LogicalPlan) -> SchemaRef {
    let names = output_names(plan);
    let arrow = plan.schema().as_arrow();
    let fields: Vec<Field> = arrow
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = names.get(i).cloned().unwrap_or_else(|| f.name().clone());
            Field::new(name, f.data_type().clone(), f.is_nullable())
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn text_schema(names: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ))
}

fn text_rows(column: &str, values: Vec<String>) -> QueryResult {
    let schema = text_schema(&[column]);
    let array: ArrayRef = Arc::new(StringArray::from(values));
    match RecordBatch::try_new(Arc::clone(&schema), vec![array]) {
        Ok(b) => QueryResult::Rows {
            schema,
            batches: vec![b],
        },
        Err(_) => QueryResult::Rows {
            schema,
            batches: vec![],
        },
    }
}

fn show_variable(name: &str) -> QueryResult {
    let value = match name.to_ascii_lowercase().as_str() {
        "server_version" => "14.0",
        "server_encoding" | "client_encoding" => "UTF8",
        "datestyle" => "ISO, MDY",
        "timezone" => "UTC",
        "standard_conforming_strings" => "on",
        "transaction_isolation" | "transaction isolation level" => "serializable",
        _ => "",
    };
    text_rows(name, vec![value.to_string()])
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
