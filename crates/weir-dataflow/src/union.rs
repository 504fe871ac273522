//! `Union`: the changes of several inputs as one stream (`UNION ALL`; a
//! `UNION` is a `Union` under a distinct aggregate). Stateless: a row's
//! multiplicity in the output is the sum of its multiplicities in the
//! inputs, so every change passes through, cast to the output's types.

use std::sync::Arc;

use weir_common::arrow::compute::cast;
use weir_common::arrow::datatypes::SchemaRef;
use weir_common::StreamChunk;

use crate::{DataflowError, Operator};

/// Merges its inputs' changes.
pub struct Union {
    inputs: usize,
    schema: SchemaRef,
}

impl Union {
    /// A union of `inputs` streams producing rows of `schema`.
    pub fn new(inputs: usize, schema: SchemaRef) -> Self {
        Union { inputs, schema }
    }
}

impl Operator for Union {
    fn explain(&self) -> String {
        format!("Union all ({} inputs)", self.inputs)
    }

    fn process(
        &mut self,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        let columns = chunk
            .data
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(Arc::clone(c))
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(chunk.with_columns(Arc::clone(&self.schema), columns)?);
        Ok(())
    }
}
