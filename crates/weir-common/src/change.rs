//! [`StreamChunk`]: an Arrow batch of rows plus a change column saying, row by
//! row, whether the row is inserted into or deleted from the stream. An UPDATE
//! travels as a delete of the old row and an insert of the new one.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int8Array};
use datafusion::arrow::compute;
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::Result;

/// The change a row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The row enters the stream.
    Insert,
    /// The row leaves the stream.
    Delete,
}

impl Op {
    /// Encoding in the change column.
    pub const fn code(self) -> i8 {
        match self {
            Op::Insert => 1,
            Op::Delete => -1,
        }
    }

    /// The weight of the row in a multiset: +1 or -1.
    pub const fn weight(self) -> i64 {
        self.code() as i64
    }
}

/// Rows and their changes. `ops[i]` is `1` (insert) or `-1` (delete) for
/// `data` row `i`.
#[derive(Debug, Clone)]
pub struct StreamChunk {
    /// The rows, in the schema of the stream.
    pub data: RecordBatch,
    /// The change column: 1 = insert, -1 = delete.
    pub ops: Int8Array,
}

impl StreamChunk {
    /// A chunk; `ops` must have the batch's length.
    pub fn new(data: RecordBatch, ops: Int8Array) -> Self {
        debug_assert_eq!(data.num_rows(), ops.len());
        StreamChunk { data, ops }
    }

    /// Every row of `data` with the same change.
    pub fn uniform(data: RecordBatch, op: Op) -> Self {
        let ops = Int8Array::from_value(op.code(), data.num_rows());
        StreamChunk { data, ops }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.num_rows()
    }

    /// True when the chunk has no rows.
    pub fn is_empty(&self) -> bool {
        self.data.num_rows() == 0
    }

    /// The schema of the rows.
    pub fn schema(&self) -> SchemaRef {
        self.data.schema()
    }

    /// The change of row `i`.
    pub fn op(&self, i: usize) -> Op {
        if self.ops.value(i) >= 0 {
            Op::Insert
        } else {
            Op::Delete
        }
    }

    /// Keep the rows where `mask` is true (nulls drop the row).
    pub fn filter(&self, mask: &BooleanArray) -> Result<StreamChunk> {
        let mask = if mask.nulls().is_some() {
            compute::prep_null_mask_filter(mask)
        } else {
            mask.clone()
        };
        let data = filter_record_batch(&self.data, &mask)?;
        let ops = compute::filter(&self.ops, &mask)?;
        let ops = ops
            .as_any()
            .downcast_ref::<Int8Array>()
            .cloned()
            .unwrap_or_else(|| Int8Array::from(Vec::<i8>::new()));
        Ok(StreamChunk { data, ops })
    }

    /// The rows at `indices`, in that order.
    pub fn take(&self, indices: &dyn Array) -> Result<StreamChunk> {
        let data = take_record_batch(&self.data, indices)?;
        let ops = compute::take(&self.ops, indices, None)?;
        let ops = ops
            .as_any()
            .downcast_ref::<Int8Array>()
            .cloned()
            .unwrap_or_else(|| Int8Array::from(Vec::<i8>::new()));
        Ok(StreamChunk { data, ops })
    }

    /// Same changes, other columns (for projections). `columns` must have the
    /// chunk's length.
    pub fn with_columns(&self, schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<StreamChunk> {
        let data = RecordBatch::try_new_with_options(
            schema,
            columns,
            &datafusion::arrow::record_batch::RecordBatchOptions::new()
                .with_row_count(Some(self.len())),
        )?;
        Ok(StreamChunk {
            data,
            ops: self.ops.clone(),
        })
    }

    /// One chunk from many of the same schema.
    pub fn concat(schema: &SchemaRef, chunks: &[StreamChunk]) -> Result<StreamChunk> {
        let data = concat_batches(schema, chunks.iter().map(|c| &c.data))?;
        let ops: Vec<&dyn Array> = chunks.iter().map(|c| &c.ops as &dyn Array).collect();
        let ops = if ops.is_empty() {
            Arc::new(Int8Array::from(Vec::<i8>::new())) as ArrayRef
        } else {
            compute::concat(&ops)?
        };
        let ops = ops
            .as_any()
            .downcast_ref::<Int8Array>()
            .cloned()
            .unwrap_or_else(|| Int8Array::from(Vec::<i8>::new()));
        Ok(StreamChunk { data, ops })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn chunk() -> StreamChunk {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
        StreamChunk::new(data, Int8Array::from(vec![1, -1, 1]))
    }

    #[test]
    fn filter_keeps_ops_aligned() {
        let c = chunk();
        let f = c
            .filter(&BooleanArray::from(vec![Some(false), Some(true), None]))
            .unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f.op(0), Op::Delete);
    }

    #[test]
    fn concat_joins_chunks() {
        let c = chunk();
        let both = StreamChunk::concat(&c.schema(), &[c.clone(), c]).unwrap();
        assert_eq!(both.len(), 6);
        assert_eq!(both.op(4), Op::Delete);
    }
}
