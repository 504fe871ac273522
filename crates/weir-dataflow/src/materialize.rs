//! `Materialize`: the last operator of a view. It keeps the view's contents, a
//! multiset of rows, in its state table and makes each epoch's changes visible
//! to readers in one atomic write at the barrier, so a SELECT never sees half
//! of an epoch.
//!
//! State layout: key = the row's memcomparable encoding (all columns), value =
//! its multiplicity as `i64` (big endian). The vnode is the hash of the row.
//!
//! At the barrier it also emits the epoch's net changes, which views defined
//! on this view consume.

use std::collections::HashMap;

use weir_common::arrow::array::RecordBatch;
use weir_common::arrow::datatypes::SchemaRef;
use weir_common::vnode::vnode_of;
use weir_common::{Barrier, Epoch, Op, StreamChunk};
use weir_state::{StateStoreRef, StateTable, StateTableId};

use crate::row_codec::RowCodec;
use crate::{DataflowError, Operator};

/// Maintains a view's rows.
pub struct Materialize {
    schema: SchemaRef,
    codec: RowCodec,
    state: StateTable,
    /// Net multiplicity change per row in the current epoch.
    pending: HashMap<Vec<u8>, i64>,
}

impl Materialize {
    /// Materialize rows of `schema` into `state`.
    pub fn new(schema: SchemaRef, state: StateTable) -> Result<Self, DataflowError> {
        Ok(Materialize {
            codec: RowCodec::for_schema(&schema)?,
            schema,
            state,
            pending: HashMap::new(),
        })
    }
}

/// A stored multiplicity (`i64`, big endian) of state table `table`.
pub(crate) fn decode_count(table: StateTableId, bytes: &[u8]) -> Result<i64, DataflowError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        DataflowError::State(weir_state::StateError::Corrupt {
            table,
            reason: "row count is not 8 bytes".into(),
        })
    })?;
    Ok(i64::from_be_bytes(arr))
}

impl Operator for Materialize {
    fn explain(&self) -> String {
        format!("Materialize state_table={}", self.state.id())
    }

    fn process(
        &mut self,
        chunk: StreamChunk,
        _out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        let rows = self.codec.encode(chunk.data.columns())?;
        for (i, row) in rows.iter().enumerate() {
            let weight = chunk.op(i).weight();
            let entry = self.pending.entry(row.data().to_vec()).or_insert(0);
            *entry += weight;
        }
        Ok(())
    }

    fn on_barrier(
        &mut self,
        _barrier: Barrier,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        let pending = std::mem::take(&mut self.pending);
        let mut changed: Vec<(Vec<u8>, i64)> =
            pending.into_iter().filter(|(_, d)| *d != 0).collect();
        if changed.is_empty() {
            return Ok(());
        }
        changed.sort_unstable();
        for (row, delta) in &changed {
            let vnode = vnode_of(row);
            let current = match self.state.get(vnode, row)? {
                Some(bytes) => decode_count(self.state.id(), &bytes)?,
                None => 0,
            };
            let next = current + delta;
            if next < 0 {
                return Err(DataflowError::Internal(format!(
                    "view row deleted more often than inserted ({current} + {delta})"
                )));
            } else if next == 0 {
                self.state.delete(vnode, row);
            } else {
                self.state.put(vnode, row, next.to_be_bytes().to_vec());
            }
        }
        self.state.commit()?;
        // The epoch's changes, one row per unit of multiplicity.
        let mut rows: Vec<&[u8]> = Vec::new();
        let mut ops: Vec<i8> = Vec::new();
        for (row, delta) in &changed {
            let op = if *delta > 0 { Op::Insert } else { Op::Delete };
            for _ in 0..delta.unsigned_abs() {
                rows.push(row);
                ops.push(op.code());
            }
        }
        let data = self.codec.decode_batch(&self.schema, rows)?;
        out.push(StreamChunk::new(data, ops.into()));
        Ok(())
    }

    fn checkpoint(&mut self, epoch: Epoch) -> Result<(), DataflowError> {
        Ok(self.state.checkpoint(epoch)?)
    }
}

/// Decode a multiset stored as `row → count` entries into one batch,
/// repeating each row by its count.
pub fn decode_multiset(
    schema: &SchemaRef,
    table: StateTableId,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<RecordBatch, DataflowError> {
    let codec = RowCodec::for_schema(schema)?;
    let mut rows: Vec<&[u8]> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let count = decode_count(table, value)?;
        for _ in 0..count.max(0) {
            rows.push(key);
        }
    }
    codec.decode_batch(schema, rows)
}

/// The committed contents of the view materialized into state table `table`.
pub fn read_view(
    store: &StateStoreRef,
    table: StateTableId,
    schema: &SchemaRef,
) -> Result<RecordBatch, DataflowError> {
    let entries: Vec<(Vec<u8>, Vec<u8>)> = StateTable::read_committed(store, table)?
        .into_iter()
        .map(|(_, k, v)| (k, v))
        .collect();
    decode_multiset(schema, table, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use weir_common::arrow::array::{Array, Int64Array};
    use weir_common::arrow::datatypes::{DataType, Field, Schema};
    use weir_state::MemoryStateStore;

    #[test]
    fn views_are_read_in_bounded_batches() {
        use crate::table_store::{read_batches, RowLayout};
        let store: StateStoreRef = Arc::new(MemoryStateStore::new());
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let mut m = Materialize::new(schema.clone(), StateTable::new(store.clone(), 3)).unwrap();
        let data: Vec<i64> = (0..20_000).map(|i| i % 15_000).collect();
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(data))]).unwrap();
        let mut out = Vec::new();
        m.process(StreamChunk::uniform(batch, Op::Insert), &mut out)
            .unwrap();
        m.on_barrier(Barrier::new(1), &mut out).unwrap();
        let mut sizes = Vec::new();
        let snapshot = Arc::clone(&store).snapshot();
        read_batches(
            &*snapshot,
            3,
            &schema,
            RowLayout::Multiset,
            4096,
            &mut |b| {
                sizes.push(b.num_rows());
                Ok(())
            },
        )
        .unwrap();
        // 15,000 distinct rows in entries of at most 4096 (duplicates expand
        // within their batch): 4 batches, every row once.
        assert_eq!(sizes.len(), 4);
        assert_eq!(sizes.iter().sum::<usize>(), 20_000);
        assert_eq!(read_view(&store, 3, &schema).unwrap().num_rows(), 20_000);
        // A reader that stops after the first batch stops the scan.
        let mut seen = 0;
        let stopped = read_batches(
            &*snapshot,
            3,
            &schema,
            RowLayout::Multiset,
            4096,
            &mut |_| {
                seen += 1;
                Err(DataflowError::Internal("enough".into()))
            },
        );
        assert!(stopped.is_err());
        assert_eq!(seen, 1);
    }

    #[test]
    fn epoch_changes_become_visible_at_barrier() {
        let store: StateStoreRef = Arc::new(MemoryStateStore::new());
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let mut m = Materialize::new(schema.clone(), StateTable::new(store.clone(), 1)).unwrap();
        let batch = |v: Vec<i64>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(v))]).unwrap()
        };
        let mut out = Vec::new();
        m.process(
            StreamChunk::uniform(batch(vec![1, 2, 2]), Op::Insert),
            &mut out,
        )
        .unwrap();
        assert_eq!(read_view(&store, 1, &schema).unwrap().num_rows(), 0);
        m.on_barrier(Barrier::new(1), &mut out).unwrap();
        assert_eq!(read_view(&store, 1, &schema).unwrap().num_rows(), 3);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 3);
        out.clear();
        // Delete and re-insert in one epoch nets out to nothing emitted.
        m.process(StreamChunk::uniform(batch(vec![2]), Op::Delete), &mut out)
            .unwrap();
        m.process(StreamChunk::uniform(batch(vec![2]), Op::Insert), &mut out)
            .unwrap();
        m.process(StreamChunk::uniform(batch(vec![1]), Op::Delete), &mut out)
            .unwrap();
        m.on_barrier(Barrier::new(2), &mut out).unwrap();
        let view = read_view(&store, 1, &schema).unwrap();
        assert_eq!(view.num_rows(), 2);
        assert_eq!(view.column(0).null_count(), 0);
        assert_eq!(out[0].len(), 1);
        assert_eq!(out[0].op(0), Op::Delete);
    }
}
