//! INSERT, UPDATE and DELETE: DataFusion finds the rows, the table store
//! applies them all or nothing, the table's subscribers get the changes and
//! the statement returns once every view has committed its epoch.

use super::*;
use crate::log_record::LogRecord;

impl Engine {
    pub(super) async fn dml(
        &self,
        s: &SqlStatement,
        params: Option<ParamValues>,
    ) -> Result<QueryResult> {
        let guard = self.write_lock.lock().await;
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
        let RelationKind::Table { store, .. } = &relation.kind else {
            return Err(user(
                SqlState::WRONG_OBJECT_TYPE,
                format!(
                    "cannot change {} \"{name}\"",
                    relation.object_kind().as_str()
                ),
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
        // Valid statements are logged before they are applied; the
        // statement is acknowledged once its record is durable.
        let mut lsn = None;
        let chunks = store
            .lock()
            .apply_logged(deletes.as_ref(), inserts.as_ref(), || {
                if count == 0 {
                    return Ok(());
                }
                let record = LogRecord::Dml {
                    table: name.clone(),
                    deletes: deletes.clone(),
                    inserts: inserts.clone(),
                };
                lsn = Some(self.log(&record).map_err(Error::from)?);
                Ok(())
            })?;
        if lsn.is_some() {
            weir_common::failpoint::hit("wal-after-append");
        }
        for chunk in chunks {
            relation.outlet.send(Message::Chunk(chunk)).await;
        }
        let epoch = self.inject_barrier().await;
        drop(guard);
        if let Some(lsn) = lsn {
            self.durable.sync(lsn).await?;
        }
        self.wait_epoch(epoch).await;
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
