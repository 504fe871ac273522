//! Records of the table write-ahead log.
//!
//! Every acknowledged change to the catalog or to a table is one record:
//! - DDL: the statement's SQL text, re-executed on replay;
//! - DML: the table name and the statement's effect as two Arrow IPC
//!   streams, the rows it removed and the rows it added. Replaying applies
//!   exactly these rows, so replay does not depend on re-evaluating SQL.
//!
//! Layout: tag byte (`1` DDL, `2` DML), then for DDL the UTF-8 text; for
//! DML `u32 LE` name length, name, then two `u32 LE`-length-prefixed IPC
//! streams (length 0 = none). The WAL frames and checksums each record.

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

/// One logged change.
#[derive(Debug)]
pub enum LogRecord {
    /// CREATE / DROP, as SQL.
    Ddl(String),
    /// The effect of one INSERT / UPDATE / DELETE on `table`.
    Dml {
        table: String,
        deletes: Option<RecordBatch>,
        inserts: Option<RecordBatch>,
    },
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
            LogRecord::Dml {
                table,
                deletes,
                inserts,
            } => {
                out.push(TAG_DML);
                out.extend_from_slice(&(table.len() as u32).to_le_bytes());
                out.extend_from_slice(table.as_bytes());
                put_batch(&mut out, deletes.as_ref())?;
                put_batch(&mut out, inserts.as_ref())?;
            }
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
            TAG_DML => {
                let n = take_u32(&mut rest)?;
                let table = String::from_utf8(take(&mut rest, n)?.to_vec()).map_err(corrupt)?;
                let deletes = get_batch(&mut rest)?;
                let inserts = get_batch(&mut rest)?;
                Ok(LogRecord::Dml {
                    table,
                    deletes,
                    inserts,
                })
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
        let rec = LogRecord::Dml {
            table: "t".into(),
            deletes: None,
            inserts: Some(batch.clone()),
        };
        match LogRecord::decode(&rec.encode().unwrap()).unwrap() {
            LogRecord::Dml {
                table,
                deletes,
                inserts,
            } => {
                assert_eq!(table, "t");
                assert!(deletes.is_none());
                assert_eq!(inserts.unwrap(), batch);
            }
            other => panic!("{other:?}"),
        }
        let ddl = LogRecord::Ddl("CREATE TABLE t (a INT)".into());
        assert!(matches!(
            LogRecord::decode(&ddl.encode().unwrap()).unwrap(),
            LogRecord::Ddl(s) if s == "CREATE TABLE t (a INT)"
        ));
        assert!(LogRecord::decode(&[2, 9, 0, 0, 0, b'x']).is_err());
    }
}
