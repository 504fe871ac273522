//! `RetractableFloatSum`: SUM and AVG over REAL / DOUBLE PRECISION that stay
//! right under deletes.
//!
//! Subtracting a value back out of a running float sum is not exact:
//! `Infinity - Infinity` is NaN, `NaN` never leaves, and `1e20 + 1.5 - 1e20`
//! loses the 1.5. This accumulator counts NaN and the infinities apart from
//! the finite values, and keeps the finite sum with Neumaier's compensation,
//! so retracting a value restores what a batch SUM over the remaining rows
//! gives.

use weir_common::arrow::array::{Array, ArrayRef, AsArray};
use weir_common::arrow::compute::cast;
use weir_common::arrow::datatypes::{DataType, Float64Type, Int64Type};
use weir_common::datafusion::common::{DataFusionError, ScalarValue};
use weir_common::datafusion::logical_expr::Accumulator;

/// SUM (or AVG when `is_avg`) of floats, with retraction.
#[derive(Debug, Default)]
pub struct RetractableFloatSum {
    is_avg: bool,
    /// Sum of the finite values, and its running compensation.
    sum: f64,
    compensation: f64,
    /// Non-NULL values, of which NaN, +Infinity and -Infinity.
    count: i64,
    nan: i64,
    pos_inf: i64,
    neg_inf: i64,
}

impl RetractableFloatSum {
    /// AVG when `is_avg`, else SUM.
    pub fn new(is_avg: bool) -> Self {
        RetractableFloatSum {
            is_avg,
            ..Default::default()
        }
    }

    /// Neumaier's compensated addition.
    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.compensation += (self.sum - t) + v;
        } else {
            self.compensation += (v - t) + self.sum;
        }
        self.sum = t;
    }

    fn apply(&mut self, values: &[ArrayRef], sign: i64) -> Result<(), DataFusionError> {
        let Some(column) = values.first() else {
            return Ok(());
        };
        let column = cast(column, &DataType::Float64)?;
        let floats = column.as_primitive::<Float64Type>();
        for v in floats.iter().flatten() {
            self.count += sign;
            if v.is_nan() {
                self.nan += sign;
            } else if v == f64::INFINITY {
                self.pos_inf += sign;
            } else if v == f64::NEG_INFINITY {
                self.neg_inf += sign;
            } else {
                self.add(v * sign as f64);
            }
        }
        Ok(())
    }
}

impl Accumulator for RetractableFloatSum {
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
        if self.count <= 0 {
            return Ok(ScalarValue::Float64(None));
        }
        let total = if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            f64::NAN
        } else if self.pos_inf > 0 {
            f64::INFINITY
        } else if self.neg_inf > 0 {
            f64::NEG_INFINITY
        } else {
            self.sum + self.compensation
        };
        Ok(ScalarValue::Float64(Some(if self.is_avg {
            total / self.count as f64
        } else {
            total
        })))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>, DataFusionError> {
        Ok(vec![
            ScalarValue::Float64(Some(self.sum)),
            ScalarValue::Float64(Some(self.compensation)),
            ScalarValue::Int64(Some(self.count)),
            ScalarValue::Int64(Some(self.nan)),
            ScalarValue::Int64(Some(self.pos_inf)),
            ScalarValue::Int64(Some(self.neg_inf)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<(), DataFusionError> {
        if states.len() != 6 {
            return Err(DataFusionError::Internal(
                "float sum state has 6 columns".into(),
            ));
        }
        let f = |i: usize| states[i].as_primitive::<Float64Type>().clone();
        let n = |i: usize| states[i].as_primitive::<Int64Type>().clone();
        let (sums, comps) = (f(0), f(1));
        let (counts, nans, pos, neg) = (n(2), n(3), n(4), n(5));
        for r in 0..sums.len() {
            if sums.is_null(r) {
                continue;
            }
            self.add(sums.value(r));
            self.add(comps.value(r));
            self.count += counts.value(r);
            self.nan += nans.value(r);
            self.pos_inf += pos.value(r);
            self.neg_inf += neg.value(r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use weir_common::arrow::array::Float64Array;

    fn arr(v: Vec<Option<f64>>) -> Vec<ArrayRef> {
        vec![Arc::new(Float64Array::from(v))]
    }

    #[test]
    fn retraction_restores_special_values_and_precision() {
        let mut s = RetractableFloatSum::new(false);
        s.update_batch(&arr(vec![Some(1e20), Some(1.5), Some(3.25), None]))
            .unwrap();
        s.retract_batch(&arr(vec![Some(1e20)])).unwrap();
        assert_eq!(s.evaluate().unwrap(), ScalarValue::Float64(Some(4.75)));
        s.update_batch(&arr(vec![Some(f64::NEG_INFINITY)])).unwrap();
        assert_eq!(
            s.evaluate().unwrap(),
            ScalarValue::Float64(Some(f64::NEG_INFINITY))
        );
        s.update_batch(&arr(vec![Some(f64::INFINITY)])).unwrap();
        assert!(matches!(s.evaluate().unwrap(), ScalarValue::Float64(Some(v)) if v.is_nan()));
        s.retract_batch(&arr(vec![Some(f64::INFINITY), Some(f64::NEG_INFINITY)]))
            .unwrap();
        assert_eq!(s.evaluate().unwrap(), ScalarValue::Float64(Some(4.75)));
        let mut avg = RetractableFloatSum::new(true);
        avg.update_batch(&arr(vec![Some(f64::NAN), Some(1.0)]))
            .unwrap();
        avg.retract_batch(&arr(vec![Some(f64::NAN)])).unwrap();
        assert_eq!(avg.evaluate().unwrap(), ScalarValue::Float64(Some(1.0)));
        avg.retract_batch(&arr(vec![Some(1.0)])).unwrap();
        assert_eq!(avg.evaluate().unwrap(), ScalarValue::Float64(None));
    }
}
