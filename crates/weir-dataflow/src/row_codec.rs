//! [`RowCodec`]: turns columns into memcomparable byte keys and back, with
//! Arrow's row format. Every state key and stored row in Weir is encoded with
//! it, so byte order equals SQL order (NULLs last, as in Postgres).

use std::sync::Arc;

use weir_common::arrow::array::{ArrayRef, RecordBatch};
use weir_common::arrow::compute::SortOptions;
use weir_common::arrow::datatypes::{DataType, SchemaRef};
use weir_common::arrow::row::{RowConverter, Rows, SortField};

use crate::DataflowError;

/// Encoder/decoder for rows of fixed column types.
pub struct RowCodec {
    converter: RowConverter,
}

impl RowCodec {
    /// A codec for columns of these types.
    pub fn new(types: &[DataType]) -> Result<Self, DataflowError> {
        // NULLs sort last, as in Postgres' ascending order.
        let options = SortOptions {
            descending: false,
            nulls_first: false,
        };
        let fields = types
            .iter()
            .cloned()
            .map(|t| SortField::new_with_options(t, options))
            .collect();
        let converter = RowConverter::new(fields)?;
        Ok(RowCodec { converter })
    }

    /// A codec for every column of `schema`.
    pub fn for_schema(schema: &SchemaRef) -> Result<Self, DataflowError> {
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Self::new(&types)
    }

    /// Encode the rows of these columns. `-0.0` encodes as `0.0`: SQL
    /// treats them as equal, so they must be the same key.
    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Rows, DataflowError> {
        if columns
            .iter()
            .any(|c| matches!(c.data_type(), DataType::Float32 | DataType::Float64))
        {
            let normalized: Vec<ArrayRef> = columns.iter().map(normalize_zero).collect();
            return Ok(self.converter.convert_columns(&normalized)?);
        }
        Ok(self.converter.convert_columns(columns)?)
    }

    /// Decode encoded rows (bytes produced by this codec) into columns.
    pub fn decode<'a, I>(&self, rows: I) -> Result<Vec<ArrayRef>, DataflowError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let parser = self.converter.parser();
        let parsed = rows.into_iter().map(|b| parser.parse(b));
        Ok(self.converter.convert_rows(parsed)?)
    }

    /// Decode encoded rows into a batch of `schema`.
    pub fn decode_batch<'a, I>(
        &self,
        schema: &SchemaRef,
        rows: I,
    ) -> Result<RecordBatch, DataflowError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let columns = self.decode(rows)?;
        Ok(batch_with_columns(schema, columns)?)
    }
}

/// The column with negative zeros replaced by positive ones.
fn normalize_zero(column: &ArrayRef) -> ArrayRef {
    use weir_common::arrow::array::{AsArray, PrimitiveArray};
    use weir_common::arrow::datatypes::{Float32Type, Float64Type};
    match column.data_type() {
        DataType::Float64 => {
            let a: PrimitiveArray<Float64Type> =
                column.as_primitive::<Float64Type>().unary(|v| v + 0.0);
            Arc::new(a)
        }
        DataType::Float32 => {
            let a: PrimitiveArray<Float32Type> =
                column.as_primitive::<Float32Type>().unary(|v| v + 0.0);
            Arc::new(a)
        }
        _ => Arc::clone(column),
    }
}

/// A batch of `schema` from columns, allowing zero columns.
pub fn batch_with_columns(
    schema: &SchemaRef,
    columns: Vec<ArrayRef>,
) -> Result<RecordBatch, weir_common::arrow::error::ArrowError> {
    let rows = columns.first().map(|c| c.len()).unwrap_or(0);
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &weir_common::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::arrow::array::{Int32Array, StringArray};

    #[test]
    fn round_trip_and_order() {
        let codec = RowCodec::new(&[DataType::Int32, DataType::Utf8]).unwrap();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![Some(2), None, Some(-1)])),
            Arc::new(StringArray::from(vec!["b", "a", "c"])),
        ];
        let rows = codec.encode(&cols).unwrap();
        // NULL sorts last, -1 first.
        assert!(rows.row(2) < rows.row(0));
        assert!(rows.row(0) < rows.row(1));
        let bytes: Vec<&[u8]> = rows.iter().map(|r| r.data()).collect();
        let back = codec.decode(bytes).unwrap();
        assert_eq!(&back[0], &cols[0]);
        assert_eq!(&back[1], &cols[1]);
    }

    #[test]
    fn negative_zero_is_zero() {
        use weir_common::arrow::array::Float64Array;
        let codec = RowCodec::new(&[DataType::Float64]).unwrap();
        let rows = codec
            .encode(&[Arc::new(Float64Array::from(vec![0.0, -0.0])) as ArrayRef])
            .unwrap();
        assert_eq!(rows.row(0), rows.row(1));
    }
}
