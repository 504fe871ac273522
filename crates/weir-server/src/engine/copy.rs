//! COPY: `COPY t [(columns)] FROM STDIN` loads rows into a table as one
//! statement (all rows or none, like an INSERT; inside a transaction it is
//! one of its writes), `COPY t | (query) TO STDOUT` exports. Text and CSV
//! formats ([`crate::copy_format`]); files and programs on the server are
//! not supported (use psql's `\copy`).

use weir_common::arrow::array::StringArray;
use weir_common::arrow::compute::{cast_with_options, CastOptions};
use weir_common::datafusion::sql::sqlparser::ast::{
    CopyLegacyOption, CopyOption, CopySource, CopyTarget,
};

use super::*;
use crate::copy_format::CopyFormat;
use crate::log_record::TableChange;
use crate::session::{PendingCopy, Session};

impl Engine {
    pub(super) async fn copy(
        &self,
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
        session: &Session,
    ) -> Result<QueryResult> {
        let format = CopyFormat::from_options(options, legacy)?;
        match (to, target) {
            (false, CopyTarget::Stdin) => {
                let CopySource::Table {
                    table_name,
                    columns,
                } = source
                else {
                    return Err(user(SqlState::SYNTAX_ERROR, "COPY FROM needs a table"));
                };
                let name = relation_name(table_name)?;
                let relation = self.relation(&name)?;
                if !matches!(relation.kind, RelationKind::Table { .. }) {
                    return Err(user(
                        SqlState::WRONG_OBJECT_TYPE,
                        format!(
                            "cannot copy to {} \"{name}\"",
                            relation.object_kind().as_str()
                        ),
                    ));
                }
                if session.with_txn(|t| t.read_only).unwrap_or(false) {
                    return Err(user(
                        SqlState::READ_ONLY_SQL_TRANSACTION,
                        "cannot execute COPY FROM in a read-only transaction",
                    ));
                }
                let columns = column_indices(&relation.schema, columns)?;
                Ok(QueryResult::CopyIn(PendingCopy {
                    table: name,
                    columns,
                    format,
                    data: Vec::new(),
                }))
            }
            (true, CopyTarget::Stdout) => {
                let query = match source {
                    CopySource::Query(q) => format!("{q}"),
                    CopySource::Table {
                        table_name,
                        columns,
                    } => {
                        let cols = if columns.is_empty() {
                            "*".to_string()
                        } else {
                            columns
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        format!("SELECT {cols} FROM {table_name}")
                    }
                };
                let statements = weir_sql::parser::parse(&query)?;
                let Some(Statement::Sql(s)) = statements.into_iter().next() else {
                    return Err(user(SqlState::SYNTAX_ERROR, "COPY needs a query"));
                };
                let mut s = *s;
                self.prepare_sql(&mut s, session, true)?;
                let txn = self.txn_read(session).await;
                match self.query(&s, None, txn.as_ref(), session).await? {
                    QueryResult::Rows { schema, batches } => Ok(QueryResult::CopyOut {
                        format,
                        schema,
                        batches,
                    }),
                    _ => Err(user(SqlState::SYNTAX_ERROR, "COPY needs a query")),
                }
            }
            _ => Err(user(
                SqlState::FEATURE_NOT_SUPPORTED,
                "COPY to or from a file or program is not supported; use STDIN / STDOUT (psql's \\copy)",
            )),
        }
    }

    /// Load the data a `COPY FROM STDIN` collected: parse it, convert each
    /// field to its column's type and write the rows as one statement.
    pub async fn copy_in(&self, copy: PendingCopy, session: &Session) -> Result<QueryResult> {
        let relation = self.relation(&copy.table)?;
        let schema = Arc::clone(&relation.schema);
        let rows = copy.format.parse(&copy.data)?;
        let width = copy.columns.len();
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
            let what = if r.len() < width {
                "missing data"
            } else {
                "extra data after last expected column"
            };
            return Err(user(
                SqlState("22P04"),
                format!("{what} for row {} of COPY {}", i + 1, copy.table),
            ));
        }
        let n = rows.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        let options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        for (c, field) in schema.fields().iter().enumerate() {
            let values: StringArray = match copy.columns.iter().position(|k| *k == c) {
                Some(k) => rows.iter().map(|r| r[k].as_deref()).collect(),
                None => (0..n).map(|_| None::<&str>).collect(),
            };
            let typed = cast_with_options(&values, field.data_type(), &options).map_err(|e| {
                user(
                    SqlState::INVALID_TEXT_REPRESENTATION,
                    format!(
                        "invalid input for column \"{}\" of type {}: {e}",
                        field.name(),
                        crate::pg_catalog::functions::format_type(
                            crate::pg_catalog::type_oid(field.data_type()),
                            None
                        )
                        .unwrap_or_default()
                    ),
                )
            })?;
            let typed = match weir_common::char_type::CharType::of(field) {
                Some(declared) => declared.conform(&typed).map_err(ServerError::Statement)?,
                None => typed,
            };
            columns.push(typed);
        }
        let nullable: SchemaRef = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(nullable, columns)
            .map_err(|e| ServerError::Statement(e.into()))?;
        let result = QueryResult::Command {
            tag: "COPY".into(),
            rows: Some(n),
        };
        if n == 0 {
            return Ok(result);
        }
        let change = TableChange {
            table: copy.table,
            deletes: None,
            inserts: Some(batch),
        };
        match self.txn_read(session).await {
            Some(_) => {
                self.queue_in_transaction(change, session)?;
            }
            None => {
                let guard = self.write_lock.lock().await;
                self.commit_changes(guard, &[change]).await?;
            }
        }
        Ok(result)
    }
}

/// The table columns a COPY names (all, in order, when it names none).
fn column_indices(
    schema: &SchemaRef,
    columns: &[weir_common::datafusion::sql::sqlparser::ast::Ident],
) -> Result<Vec<usize>> {
    if columns.is_empty() {
        return Ok((0..schema.fields().len()).collect());
    }
    columns
        .iter()
        .map(|c| {
            let name = if c.quote_style.is_some() {
                c.value.clone()
            } else {
                c.value.to_ascii_lowercase()
            };
            schema.index_of(&name).map_err(|_| {
                user(
                    SqlState::UNDEFINED_COLUMN,
                    format!("column \"{name}\" does not exist"),
                )
            })
        })
        .collect()
}
