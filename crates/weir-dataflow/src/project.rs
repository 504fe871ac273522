//! `Project`: computes scalar expressions over each chunk. Stateless; the
//! change column passes through.

use std::sync::Arc;

use weir_common::arrow::array::ArrayRef;
use weir_common::arrow::datatypes::SchemaRef;
use weir_common::datafusion::physical_expr::PhysicalExpr;
use weir_common::StreamChunk;

use crate::{DataflowError, Operator};

/// Evaluates one DataFusion physical expression per output column.
pub struct Project {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl Project {
    /// A projection producing `schema` from `exprs` over the input schema.
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Project { exprs, schema }
    }
}

impl Operator for Project {
    fn explain(&self) -> String {
        let exprs: Vec<String> = self.exprs.iter().map(|e| e.to_string()).collect();
        format!("Project [{}]", exprs.join(", "))
    }

    fn process(
        &mut self,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        let columns = evaluate_all(&self.exprs, &chunk)?;
        // Expressions may yield a type that differs only in nullability or
        // field metadata; the declared schema wins.
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    weir_common::arrow::compute::cast(&c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(chunk.with_columns(Arc::clone(&self.schema), columns)?);
        Ok(())
    }
}

/// Evaluate `exprs` over every row of `chunk`: one column each.
pub fn evaluate_all(
    exprs: &[Arc<dyn PhysicalExpr>],
    chunk: &StreamChunk,
) -> Result<Vec<ArrayRef>, DataflowError> {
    let rows = chunk.len();
    Ok(exprs
        .iter()
        .map(|e| e.evaluate(&chunk.data).and_then(|v| v.into_array(rows)))
        .collect::<Result<Vec<_>, _>>()?)
}
