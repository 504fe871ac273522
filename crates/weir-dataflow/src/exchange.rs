//! Hash exchange: splitting a chunk among the instances of a parallel
//! operator by the vnode of each row's distribution key.
//!
//! The key is encoded exactly as the receiving operator encodes its state
//! key (the memcomparable row format of [`RowCodec`]), so the vnode a row is
//! routed by is the vnode its state lives in: an instance only ever touches
//! the vnodes it owns. The split is vectorized: the key columns of the
//! whole chunk are evaluated and encoded at once, then one index list per
//! instance is built and each part is cut out with one `take`.

use std::sync::Arc;

use weir_common::arrow::array::UInt32Array;
use weir_common::arrow::datatypes::DataType;
use weir_common::datafusion::physical_expr::PhysicalExpr;
use weir_common::vnode::{instance_of, vnode_of};
use weir_common::StreamChunk;

use crate::project::evaluate_all;
use crate::row_codec::RowCodec;
use crate::DataflowError;

/// The distribution key of a hash exchange.
pub struct HashKey {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    codec: RowCodec,
    display: String,
}

impl HashKey {
    /// Rows are distributed by `exprs` (of types `types`), evaluated over
    /// the chunks sent through the exchange.
    pub fn new(
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        types: &[DataType],
    ) -> Result<Self, DataflowError> {
        let display = exprs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(HashKey {
            codec: RowCodec::new(types)?,
            exprs,
            display,
        })
    }

    /// The key expressions, for EXPLAIN.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Split `chunk` among `n` instances: part `i` holds the rows whose key's
    /// vnode instance `i` owns, in their original order (`None` when it has
    /// none).
    pub fn split(
        &self,
        chunk: &StreamChunk,
        n: usize,
    ) -> Result<Vec<Option<StreamChunk>>, DataflowError> {
        let rows = chunk.len();
        if n <= 1 {
            return Ok(vec![Some(chunk.clone())]);
        }
        let keys = evaluate_all(&self.exprs, chunk)?;
        let encoded = self.codec.encode(&keys)?;
        let mut indices: Vec<Vec<u32>> = (0..n).map(|_| Vec::with_capacity(rows / n + 1)).collect();
        for (i, row) in encoded.iter().enumerate() {
            indices[instance_of(vnode_of(row.data()), n)].push(i as u32);
        }
        indices
            .into_iter()
            .map(|idx| {
                if idx.is_empty() {
                    Ok(None)
                } else if idx.len() == rows {
                    Ok(Some(chunk.clone()))
                } else {
                    Ok(Some(chunk.take(&UInt32Array::from(idx))?))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::arrow::array::{Array, Int64Array, RecordBatch};
    use weir_common::arrow::datatypes::{Field, Schema};
    use weir_common::datafusion::physical_expr::expressions::Column;
    use weir_common::vnode::VnodeRange;
    use weir_common::Op;

    #[test]
    fn every_row_goes_to_the_instance_owning_its_key() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let values: Vec<Option<i64>> = (0..1000)
            .map(|i| if i % 17 == 0 { None } else { Some(i % 97) })
            .collect();
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.clone()))]).unwrap();
        let chunk = StreamChunk::uniform(data, Op::Insert);
        let key = HashKey::new(vec![Arc::new(Column::new("k", 0))], &[DataType::Int64]).unwrap();
        let codec = RowCodec::new(&[DataType::Int64]).unwrap();
        for n in [1usize, 2, 3, 4] {
            let parts = key.split(&chunk, n).unwrap();
            assert_eq!(parts.len(), n);
            let mut total = 0;
            for (i, part) in parts.iter().enumerate() {
                let Some(part) = part else { continue };
                total += part.len();
                let rows = codec.encode(&[part.data.column(0).clone()]).unwrap();
                for row in rows.iter() {
                    assert!(VnodeRange::of_instance(i, n).contains(vnode_of(row.data())));
                }
            }
            assert_eq!(total, 1000, "n={n}");
        }
        // The same key always lands on the same instance.
        let parts = key.split(&chunk, 4).unwrap();
        let mut owner = std::collections::HashMap::new();
        for (i, part) in parts.iter().enumerate() {
            let Some(part) = part else { continue };
            let col = part
                .data
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            for j in 0..col.len() {
                let k = col.is_valid(j).then(|| col.value(j));
                assert_eq!(*owner.entry(k).or_insert(i), i);
            }
        }
    }
}
