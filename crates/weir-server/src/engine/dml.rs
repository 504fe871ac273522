//! INSERT, UPDATE and DELETE: DataFusion finds the rows, the table store
//! applies them all or nothing, the table's subscribers get the changes and
//! the statement returns once every view has committed its epoch.

use super::txn::{self, TxnRead};
use super::*;
use crate::log_record::{LogRecord, TableChange};
use weir_common::StreamChunk;
use weir_state::SnapshotRef;

impl Engine {
    /// An INSERT, UPDATE or DELETE on its own: evaluated and applied under
    /// the write lock, acknowledged once durable and in every view.
    pub(super) async fn dml(
        &self,
        s: &SqlStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryResult> {
        let guard = self.write_lock.lock().await;
        let (change, result) = self.dml_change(s, params, None).await?;
        let changes: Vec<TableChange> = change.into_iter().collect();
        self.commit_changes(guard, &changes).await?;
        Ok(result)
    }

    /// What an INSERT, UPDATE or DELETE would change, without changing it:
    /// the table's removed and added rows (`None` when it changes nothing)
    /// and the statement's result. Inside a transaction (`txn`), rows are
    /// found in its snapshot.
    pub(super) async fn dml_change(
        &self,
        s: &SqlStatement,
        params: Option<ParamValues>,
        txn: Option<&TxnRead>,
    ) -> Result<(Option<TableChange>, QueryResult)> {
        let mut s = s.clone();
        weir_sql::parser::alias_insert_source(&mut s);
        let plan = self.plan(&s, params).await?;
        let LogicalPlan::Dml(dml) = plan else {
            return Err(ServerError::Statement(Error::internal(
                "DML did not plan as DML",
            )));
        };
        let name = dml.table_name.table().to_string();
        let relation = self.relation(&name)?;
        if !matches!(relation.kind, RelationKind::Table { .. }) {
            return Err(user(
                SqlState::WRONG_OBJECT_TYPE,
                format!(
                    "cannot change {} \"{name}\"",
                    relation.object_kind().as_str()
                ),
            ));
        }
        let schema = Arc::clone(&relation.schema);
        check_assignment_types(&schema, &dml.input)?;
        if let Some(txn) = txn {
            txn::check_reads(&dml.input, txn)?;
        }
        let snapshot = txn.map(|t| &t.snapshot);
        let (deletes, inserts, tag) = match &dml.op {
            WriteOp::Insert(_) => {
                let rows = self.rows_for(&schema, &dml.input, snapshot).await?;
                (None, Some(rows), "INSERT")
            }
            WriteOp::Delete => {
                let rows = self.rows_for(&schema, &dml.input, snapshot).await?;
                (Some(rows), None, "DELETE")
            }
            WriteOp::Update => {
                let (old, new) = self.update_rows(&schema, &dml, snapshot).await?;
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
        let change = (count > 0).then_some(TableChange {
            table: name,
            deletes,
            inserts,
        });
        let result = QueryResult::Command {
            tag: tag.to_string(),
            rows: Some(count),
        };
        Ok((change, result))
    }

    /// Apply `changes` (one table each) all or nothing: check them, log
    /// them as one WAL record, make them visible, send them to the tables'
    /// subscribers and close an epoch; returns once the record is durable
    /// and every view has committed the epoch. `guard` is the write lock,
    /// held until the epoch is closed.
    pub(super) async fn commit_changes(
        &self,
        guard: tokio::sync::MutexGuard<'_, ()>,
        changes: &[TableChange],
    ) -> Result<()> {
        let mut lsn = None;
        let applied = self.apply_changes(changes, |changes| {
            if changes.is_empty() {
                return Ok(());
            }
            lsn = Some(self.log(&LogRecord::Dml(changes.to_vec()))?);
            Ok(())
        })?;
        if lsn.is_some() {
            weir_common::failpoint::hit("wal-after-append");
        }
        for (relation, chunks) in applied {
            for chunk in chunks {
                relation.outlet.send(Message::Chunk(chunk)).await;
            }
        }
        let epoch = self.inject_barrier().await;
        drop(guard);
        if let Some(lsn) = lsn {
            self.durable.sync(lsn).await?;
        }
        self.wait_epoch(epoch).await;
        Ok(())
    }

    /// Stage every change (each on a different table), call `log` once all
    /// are valid, then commit them all; on any error nothing is applied.
    /// Returns each table with the change chunks for its subscribers.
    /// Callers hold the write lock (or are replaying the WAL).
    pub(super) fn apply_changes(
        &self,
        changes: &[TableChange],
        log: impl FnOnce(&[TableChange]) -> Result<()>,
    ) -> Result<Vec<(Arc<Relation>, Vec<StreamChunk>)>> {
        let mut relations = Vec::with_capacity(changes.len());
        for c in changes {
            if relations.iter().any(|r: &Arc<Relation>| r.name == c.table) {
                return Err(ServerError::Statement(Error::internal(format!(
                    "table \"{}\" changed twice in one commit",
                    c.table
                ))));
            }
            let relation = self.relation(&c.table)?;
            if !matches!(relation.kind, RelationKind::Table { .. }) {
                return Err(ServerError::Statement(Error::internal(format!(
                    "change to \"{}\", which is not a table",
                    c.table
                ))));
            }
            relations.push(relation);
        }
        let mut stores: Vec<_> = relations
            .iter()
            .filter_map(|r| match &r.kind {
                RelationKind::Table { store, .. } => Some(store.lock()),
                _ => None,
            })
            .collect();
        let mut staged = 0;
        let mut result = Ok(());
        for (store, c) in stores.iter_mut().zip(changes) {
            if let Err(e) = store.stage_changes(c.deletes.as_ref(), c.inserts.as_ref()) {
                result = Err(ServerError::from(e));
                break;
            }
            staged += 1;
        }
        let result = result.and_then(|()| log(changes));
        if let Err(e) = result {
            for store in stores.iter_mut().take(staged) {
                store.discard_staged();
            }
            return Err(e);
        }
        let mut applied = Vec::with_capacity(changes.len());
        for ((store, c), relation) in stores.iter_mut().zip(changes).zip(&relations) {
            let chunks = store.commit_staged(c.deletes.as_ref(), c.inserts.as_ref())?;
            applied.push((Arc::clone(relation), chunks));
        }
        Ok(applied)
    }

    /// Run `plan` and return its rows cast to `schema`.
    async fn rows_for(
        &self,
        schema: &SchemaRef,
        plan: &LogicalPlan,
        snapshot: Option<&SnapshotRef>,
    ) -> Result<RecordBatch> {
        let batches = self.collect(plan.clone(), snapshot, None).await?;
        conform(schema, &batches, 0)
    }

    /// Old and new rows of an UPDATE. DataFusion plans UPDATE as a projection
    /// of the new values over the filtered table; we project the old columns
    /// beside them so both come from one scan.
    async fn update_rows(
        &self,
        schema: &SchemaRef,
        dml: &DmlStatement,
        snapshot: Option<&SnapshotRef>,
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
        let batches = self.collect(plan, snapshot, None).await?;
        let old = conform(schema, &batches, 0)?;
        let new = conform(schema, &batches, width)?;
        Ok((old, new))
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
                let field = schema.field(i);
                let t = field.data_type();
                let c = if c.data_type() == t {
                    Arc::clone(c)
                } else {
                    cast(c, t).map_err(|e| ServerError::Statement(e.into()))?
                };
                // uuid values are stored in canonical form.
                match weir_common::char_type::CharType::of(field) {
                    Some(declared) => declared.conform(&c).map_err(ServerError::Statement),
                    None => Ok(c),
                }
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
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
