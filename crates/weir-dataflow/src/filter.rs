//! `Filter`: keeps the changes whose row satisfies a predicate. Stateless: a
//! deleted row fails or passes the predicate exactly as it did when inserted.

use std::sync::Arc;

use weir_common::arrow::array::{Array, BooleanArray};
use weir_common::datafusion::physical_expr::PhysicalExpr;
use weir_common::StreamChunk;

use crate::{DataflowError, Operator};

/// Passes rows where the predicate is true (NULL counts as false).
pub struct Filter {
    predicate: Arc<dyn PhysicalExpr>,
}

impl Filter {
    /// A filter on `predicate`, which must evaluate to booleans.
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        Filter { predicate }
    }
}

impl Operator for Filter {
    fn explain(&self) -> String {
        format!("Filter {}", self.predicate)
    }

    fn process(
        &mut self,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        let mask = self
            .predicate
            .evaluate(&chunk.data)?
            .into_array(chunk.len())?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataflowError::Internal("filter predicate is not boolean".into()))?;
        if mask.true_count() == chunk.len() && mask.null_count() == 0 {
            out.push(chunk);
        } else if mask.true_count() > 0 {
            out.push(chunk.filter(mask)?);
        }
        Ok(())
    }
}
