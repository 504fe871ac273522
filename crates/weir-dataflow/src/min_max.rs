//! `RetractableMinMax`: MIN and MAX that stay exact under deletes.
//!
//! DataFusion's MIN/MAX accumulators forget every value but the extreme, so a
//! delete of the current extreme cannot be answered. This one keeps the
//! multiset of non-NULL values, ordered by their memcomparable encoding, so
//! the new extreme after a delete is the next key.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_common::arrow::array::{Array, ArrayRef, BinaryArray};
use weir_common::arrow::datatypes::DataType;
use weir_common::datafusion::common::{DataFusionError, ScalarValue};
use weir_common::datafusion::logical_expr::Accumulator;

use crate::row_codec::RowCodec;

/// MIN (or MAX) over a multiset of values, with retraction.
pub struct RetractableMinMax {
    is_max: bool,
    data_type: DataType,
    codec: Arc<RowCodec>,
    /// Encoded value → how many times it is present.
    values: BTreeMap<Vec<u8>, i64>,
}

impl std::fmt::Debug for RetractableMinMax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetractableMinMax")
            .field("is_max", &self.is_max)
            .field("distinct_values", &self.values.len())
            .finish()
    }
}

impl RetractableMinMax {
    /// MAX when `is_max`, else MIN, over values of `data_type`.
    pub fn new(is_max: bool, data_type: DataType, codec: Arc<RowCodec>) -> Self {
        RetractableMinMax {
            is_max,
            data_type,
            codec,
            values: BTreeMap::new(),
        }
    }

    fn apply(&mut self, values: &[ArrayRef], sign: i64) -> Result<(), DataFusionError> {
        let Some(column) = values.first() else {
            return Ok(());
        };
        let rows = self
            .codec
            .encode(std::slice::from_ref(column))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        for i in 0..column.len() {
            if column.is_null(i) {
                continue;
            }
            self.bump(rows.row(i).data(), sign);
        }
        Ok(())
    }

    fn bump(&mut self, key: &[u8], by: i64) {
        let count = self.values.entry(key.to_vec()).or_insert(0);
        *count += by;
        if *count == 0 {
            self.values.remove(key);
        }
    }
}

/// Serialized state: repeated `[u32 length][encoded value][i64 count]`.
fn encode_state(values: &BTreeMap<Vec<u8>, i64>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, c) in values {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&c.to_be_bytes());
    }
    out
}

fn decode_state(mut bytes: &[u8], mut f: impl FnMut(&[u8], i64)) -> Result<(), DataFusionError> {
    let bad = || DataFusionError::Internal("corrupt MIN/MAX state".into());
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(
            bytes
                .get(..4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        let key = bytes.get(4..4 + len).ok_or_else(bad)?;
        let count = i64::from_be_bytes(
            bytes
                .get(4 + len..12 + len)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        f(key, count);
        bytes = &bytes[12 + len..];
    }
    Ok(())
}

impl Accumulator for RetractableMinMax {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<(), DataFusionError> {
        self.apply(values, 1)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<(), DataFusionError> {
        self.apply(values, -1)
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue, DataFusionError> {
        let extreme = if self.is_max {
            self.values.iter().next_back()
        } else {
            self.values.iter().next()
        };
        match extreme {
            None => ScalarValue::try_from(&self.data_type),
            Some((key, _)) => {
                let cols = self
                    .codec
                    .decode([key.as_slice()])
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let col = cols
                    .first()
                    .ok_or_else(|| DataFusionError::Internal("empty MIN/MAX decode".into()))?;
                ScalarValue::try_from_array(col, 0)
            }
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.keys().map(|k| k.len() + 40).sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>, DataFusionError> {
        Ok(vec![ScalarValue::Binary(Some(encode_state(&self.values)))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<(), DataFusionError> {
        let Some(arr) = states.first() else {
            return Ok(());
        };
        let arr = arr
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| DataFusionError::Internal("MIN/MAX state is not binary".into()))?;
        let mut merged = Vec::new();
        for bytes in arr.iter().flatten() {
            decode_state(bytes, |k, c| merged.push((k.to_vec(), c)))?;
        }
        for (k, c) in merged {
            self.bump(&k, c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::arrow::array::Int32Array;

    fn acc(is_max: bool) -> RetractableMinMax {
        let codec = Arc::new(RowCodec::new(&[DataType::Int32]).unwrap());
        RetractableMinMax::new(is_max, DataType::Int32, codec)
    }

    fn arr(v: Vec<Option<i32>>) -> Vec<ArrayRef> {
        vec![Arc::new(Int32Array::from(v))]
    }

    #[test]
    fn delete_of_extreme_falls_back_to_next() {
        let mut max = acc(true);
        max.update_batch(&arr(vec![Some(3), Some(7), None, Some(7), Some(-2)]))
            .unwrap();
        assert_eq!(max.evaluate().unwrap(), ScalarValue::Int32(Some(7)));
        max.retract_batch(&arr(vec![Some(7)])).unwrap();
        assert_eq!(max.evaluate().unwrap(), ScalarValue::Int32(Some(7)));
        max.retract_batch(&arr(vec![Some(7)])).unwrap();
        assert_eq!(max.evaluate().unwrap(), ScalarValue::Int32(Some(3)));
        let mut min = acc(false);
        min.update_batch(&arr(vec![Some(3), Some(-2)])).unwrap();
        assert_eq!(min.evaluate().unwrap(), ScalarValue::Int32(Some(-2)));
        min.retract_batch(&arr(vec![Some(-2), Some(3)])).unwrap();
        assert_eq!(min.evaluate().unwrap(), ScalarValue::Int32(None));
    }

    #[test]
    fn state_round_trips() {
        let mut a = acc(false);
        a.update_batch(&arr(vec![Some(5), Some(1), Some(1)]))
            .unwrap();
        let state = a.state().unwrap();
        let mut b = acc(false);
        let arrays: Vec<ArrayRef> = state.iter().map(|s| s.to_array().unwrap()).collect();
        b.merge_batch(&arrays).unwrap();
        b.retract_batch(&arr(vec![Some(1)])).unwrap();
        assert_eq!(b.evaluate().unwrap(), ScalarValue::Int32(Some(1)));
        b.retract_batch(&arr(vec![Some(1)])).unwrap();
        assert_eq!(b.evaluate().unwrap(), ScalarValue::Int32(Some(5)));
    }
}
