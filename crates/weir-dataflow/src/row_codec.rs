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
        let types: Vec<DataType> = schema.fields().iter().map(|f| f.data_type().clone()).collect();
        Self::new(&types)
    }

    /// Encode the rows of these columns.
    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Rows, DataflowError> {
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
    pub fn decode_batch<'a, I>(&self, schema: &SchemaRef, rows: I) -> Result<RecordBatch, DataflowError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let columns = self.decode(rows)?;
        Ok(batch_with_columns(schema, columns)?)
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
}
