//! Records of the table write-ahead log.
//!
//! Every acknowledged change to the catalog or to a table is one record:
//! - DDL: the statement's SQL text, re-executed on replay;
//! - DML: for each table a statement (or a committed transaction) changed,
//!   the table name and the effect as two Arrow IPC streams, the rows
//!   removed and the rows added. Replaying applies exactly these rows, so
//!   replay does not depend on re-evaluating SQL. One record holds all the
//!   changes of a transaction, so it is replayed wholly or not at all.
//!
//! - a view's DDL: its SQL and the dataflow plan it was created with
//!   (JSON), so replay instantiates that plan instead of planning again.
//!
//! Layout: tag byte (`1` DDL, `2` one table's change, `3` several, `4` a
//! view's DDL), then for DDL the UTF-8 text; for tag 4 a `u32 LE` SQL
//! length, the SQL, then the plan's JSON; for tag 2 one change; for tag 3 a `u32 LE`
//! count and that many changes. A change is `u32 LE` name length, name,
//! then two `u32 LE`-length-prefixed IPC streams (length 0 = none). The
//! WAL frames and checksums each record.

use std::io::Cursor;
use std::sync::Arc;

use weir_common::arrow::array::RecordBatch;
use weir_common::arrow::compute::concat_batches;
use weir_common::arrow::ipc::reader::StreamReader;
use weir_common::arrow::ipc::writer::StreamWriter;
use weir_common::{Error, SqlState};

use crate::ServerError;

const TAG_DDL: u8 = 1;
const TAG_DML: u8 = 2;
const TAG_DML_MANY: u8 = 3;
const TAG_VIEW: u8 = 4;

/// One logged change.
#[derive(Debug)]
pub enum LogRecord {
    /// CREATE / DROP, as SQL.
    Ddl(String),
    /// CREATE MATERIALIZED VIEW or CREATE SINK, with its dataflow plan as
    /// JSON.
    View { sql: String, plan: String },
    /// The effect of one INSERT / UPDATE / DELETE, or of a transaction's
    /// statements, table by table.
    Dml(Vec<TableChange>),
}

/// Rows one table lost and gained: apply `deletes`, then `inserts`.
#[derive(Debug, Clone)]
pub struct TableChange {
    pub table: String,
    pub deletes: Option<RecordBatch>,
    pub inserts: Option<RecordBatch>,
}

impl TableChange {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), ServerError> {
        out.extend_from_slice(&(self.table.len() as u32).to_le_bytes());
        out.extend_from_slice(self.table.as_bytes());
        put_batch(out, self.deletes.as_ref())?;
        put_batch(out, self.inserts.as_ref())
    }

    fn decode(rest: &mut &[u8]) -> Result<Self, ServerError> {
        let n = take_u32(rest)?;
        let table = String::from_utf8(take(rest, n)?.to_vec()).map_err(corrupt)?;
        let deletes = get_batch(rest)?;
        let inserts = get_batch(rest)?;
        Ok(TableChange {
            table,
            deletes,
            inserts,
        })
    }
}

fn corrupt(why: impl std::fmt::Display) -> ServerError {
    ServerError::Statement(Error::new(
        SqlState::DATA_CORRUPTED,
        format!("corrupt write-ahead log record: {why}"),
    ))
}

fn put_batch(out: &mut Vec<u8>, batch: Option<&RecordBatch>) -> Result<(), ServerError> {
    let Some(batch) = batch else {
        out.extend_from_slice(&0u32.to_le_bytes());
        return Ok(());
    };
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema())
            .map_err(|e| ServerError::Statement(e.into()))?;
        w.write(batch)
            .map_err(|e| ServerError::Statement(e.into()))?;
        w.finish().map_err(|e| ServerError::Statement(e.into()))?;
    }
    let len = u32::try_from(buf.len()).map_err(|_| {
        ServerError::Statement(Error::new(
            SqlState::PROGRAM_LIMIT_EXCEEDED,
            "statement changes more than 4 GiB of rows",
        ))
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&buf);
    Ok(())
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], ServerError> {
    if input.len() < n {
        return Err(corrupt("record is truncated"));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn take_u32(input: &mut &[u8]) -> Result<usize, ServerError> {
    let b = take(input, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn get_batch(input: &mut &[u8]) -> Result<Option<RecordBatch>, ServerError> {
    let len = take_u32(input)?;
    if len == 0 {
        return Ok(None);
    }
    let bytes = take(input, len)?;
    let reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(corrupt)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(corrupt)?;
    Ok(Some(
        concat_batches(&Arc::clone(&schema), &batches).map_err(corrupt)?,
    ))
}

impl LogRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, ServerError> {
        let mut out = Vec::new();
        match self {
            LogRecord::Ddl(sql) => {
                out.push(TAG_DDL);
                out.extend_from_slice(sql.as_bytes());
            }
            LogRecord::View { sql, plan } => {
                out.push(TAG_VIEW);
                out.extend_from_slice(&(sql.len() as u32).to_le_bytes());
                out.extend_from_slice(sql.as_bytes());
                out.extend_from_slice(plan.as_bytes());
            }
            LogRecord::Dml(changes) => match changes.as_slice() {
                [one] => {
                    out.push(TAG_DML);
                    one.encode(&mut out)?;
                }
                many => {
                    out.push(TAG_DML_MANY);
                    out.extend_from_slice(&(many.len() as u32).to_le_bytes());
                    for c in many {
                        c.encode(&mut out)?;
                    }
                }
            },
        }
        Ok(out)
    }

    /// Decode a record written by [`LogRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ServerError> {
        let (tag, mut rest) = bytes.split_first().ok_or_else(|| corrupt("empty record"))?;
        match *tag {
            TAG_DDL => Ok(LogRecord::Ddl(
                String::from_utf8(rest.to_vec()).map_err(corrupt)?,
            )),
            TAG_VIEW => {
                let n = take_u32(&mut rest)?;
                let sql = String::from_utf8(take(&mut rest, n)?.to_vec()).map_err(corrupt)?;
                let plan = String::from_utf8(rest.to_vec()).map_err(corrupt)?;
                Ok(LogRecord::View { sql, plan })
            }
            TAG_DML => Ok(LogRecord::Dml(vec![TableChange::decode(&mut rest)?])),
            TAG_DML_MANY => {
                let n = take_u32(&mut rest)?;
                let mut changes = Vec::new();
                for _ in 0..n {
                    changes.push(TableChange::decode(&mut rest)?);
                }
                Ok(LogRecord::Dml(changes))
            }
            other => Err(corrupt(format!("unknown tag {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::arrow::array::{Int32Array, StringArray};
    use weir_common::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn round_trip() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("x"), Some("y")])),
            ],
        )
        .unwrap();
        let change = TableChange {
            table: "t".into(),
            deletes: None,
            inserts: Some(batch.clone()),
        };
        let rec = LogRecord::Dml(vec![change.clone()]);
        let bytes = rec.encode().unwrap();
        assert_eq!(bytes[0], TAG_DML);
        match LogRecord::decode(&bytes).unwrap() {
            LogRecord::Dml(changes) => {
                let [c] = changes.as_slice() else {
                    panic!("{changes:?}")
                };
                assert_eq!(c.table, "t");
                assert!(c.deletes.is_none());
                assert_eq!(c.inserts.as_ref().unwrap(), &batch);
            }
            other => panic!("{other:?}"),
        }
        // A transaction's changes to several tables are one record.
        let other = TableChange {
            table: "u".into(),
            deletes: Some(batch.clone()),
            inserts: None,
        };
        let rec = LogRecord::Dml(vec![change, other]);
        let bytes = rec.encode().unwrap();
        assert_eq!(bytes[0], TAG_DML_MANY);
        match LogRecord::decode(&bytes).unwrap() {
            LogRecord::Dml(changes) => {
                assert_eq!(changes.len(), 2);
                assert_eq!(changes[1].table, "u");
                assert_eq!(changes[1].deletes.as_ref().unwrap(), &batch);
                assert!(changes[1].inserts.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert!(LogRecord::decode(&bytes[..bytes.len() - 3]).is_err());
        let ddl = LogRecord::Ddl("CREATE TABLE t (a INT)".into());
        assert!(matches!(
            LogRecord::decode(&ddl.encode().unwrap()).unwrap(),
            LogRecord::Ddl(s) if s == "CREATE TABLE t (a INT)"
        ));
        assert!(LogRecord::decode(&[2, 9, 0, 0, 0, b'x']).is_err());
    }
}
