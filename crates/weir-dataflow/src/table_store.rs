//! [`TableStore`]: the rows of a table, and the change chunks its DML makes.
//!
//! State layout:
//! - with a primary key: key = the PK columns' memcomparable encoding,
//!   value = the whole row's encoding;
//! - without one (a multiset): key = the whole row's encoding, value = its
//!   multiplicity (`i64`).
//!
//! A statement is applied all or nothing: its writes are staged, checked
//! (duplicate keys, NULLs in NOT NULL columns) and committed together.

use weir_common::arrow::array::{Array, RecordBatch};
use weir_common::arrow::datatypes::SchemaRef;
use weir_common::vnode::vnode_of;
use weir_common::{Error, Op, SqlState, StreamChunk};
use weir_state::{StateStoreRef, StateTable, StateTableId, StoreSnapshot};

use crate::materialize::{decode_count, decode_multiset};
use crate::row_codec::RowCodec;
use crate::{DataflowError, CHUNK_ROWS};

/// A table's stored rows.
pub struct TableStore {
    name: String,
    schema: SchemaRef,
    pk: Vec<usize>,
    row_codec: RowCodec,
    pk_codec: Option<RowCodec>,
    state: StateTable,
    /// How many changes have been committed since the store was opened;
    /// a transaction compares it to find concurrent writers.
    version: u64,
}

impl TableStore {
    /// Storage for table `name` with columns `schema` and primary key column
    /// indices `pk` (empty: no primary key).
    pub fn new(
        name: &str,
        schema: SchemaRef,
        pk: Vec<usize>,
        state: StateTable,
    ) -> Result<Self, DataflowError> {
        let pk_codec = if pk.is_empty() {
            None
        } else {
            let types: Vec<_> = pk
                .iter()
                .map(|i| schema.field(*i).data_type().clone())
                .collect();
            Some(RowCodec::new(&types)?)
        };
        Ok(TableStore {
            name: name.to_string(),
            row_codec: RowCodec::for_schema(&schema)?,
            schema,
            pk,
            pk_codec,
            state,
            version: 0,
        })
    }

    /// The table's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Apply one statement: remove `deletes` (rows as currently stored), then
    /// add `inserts`. Returns the change chunks for subscribers. On error
    /// nothing is applied.
    pub fn apply(
        &mut self,
        deletes: Option<&RecordBatch>,
        inserts: Option<&RecordBatch>,
    ) -> Result<Vec<StreamChunk>, DataflowError> {
        self.apply_logged(deletes, inserts, || Ok(()))
    }

    /// [`TableStore::apply`], calling `log` once the statement is known to
    /// be valid and before anything is committed (the server appends the
    /// statement to its write-ahead log there). If `log` fails, nothing is
    /// applied.
    pub fn apply_logged(
        &mut self,
        deletes: Option<&RecordBatch>,
        inserts: Option<&RecordBatch>,
        log: impl FnOnce() -> Result<(), DataflowError>,
    ) -> Result<Vec<StreamChunk>, DataflowError> {
        self.stage_changes(deletes, inserts)?;
        if let Err(e) = log() {
            self.discard_staged();
            return Err(e);
        }
        self.commit_staged(deletes, inserts)
    }

    /// Check and stage one statement's changes without committing them,
    /// so several tables can commit together: after success, call
    /// [`TableStore::commit_staged`] with the same rows, or
    /// [`TableStore::discard_staged`]. On error nothing stays staged.
    pub fn stage_changes(
        &mut self,
        deletes: Option<&RecordBatch>,
        inserts: Option<&RecordBatch>,
    ) -> Result<(), DataflowError> {
        let staged = self.stage(deletes, inserts);
        if staged.is_err() {
            self.discard_staged();
        }
        staged
    }

    /// Drop what [`TableStore::stage_changes`] staged.
    pub fn discard_staged(&mut self) {
        self.state.rollback();
    }

    /// Commit the staged `deletes` and `inserts`; returns the change chunks
    /// for subscribers.
    pub fn commit_staged(
        &mut self,
        deletes: Option<&RecordBatch>,
        inserts: Option<&RecordBatch>,
    ) -> Result<Vec<StreamChunk>, DataflowError> {
        self.state.commit()?;
        self.version += 1;
        let mut chunks = Vec::new();
        for (batch, op) in [(deletes, Op::Delete), (inserts, Op::Insert)] {
            if let Some(b) = batch {
                chunks.extend(split_chunks(b, op));
            }
        }
        Ok(chunks)
    }

    /// Commits since the store was opened.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn stage(
        &mut self,
        deletes: Option<&RecordBatch>,
        inserts: Option<&RecordBatch>,
    ) -> Result<(), DataflowError> {
        if let Some(d) = deletes {
            self.stage_rows(d, Op::Delete)?;
        }
        if let Some(i) = inserts {
            self.check_not_null(i)?;
            self.check_lengths(i)?;
            self.stage_rows(i, Op::Insert)?;
        }
        Ok(())
    }

    fn check_not_null(&self, batch: &RecordBatch) -> Result<(), DataflowError> {
        for (i, field) in self.schema.fields().iter().enumerate() {
            if !field.is_nullable() && batch.column(i).null_count() > 0 {
                return Err(DataflowError::Constraint(Error::new(
                    SqlState::NOT_NULL_VIOLATION,
                    format!(
                        "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                        field.name(),
                        self.name
                    ),
                )));
            }
        }
        Ok(())
    }

    /// Values of `varchar(n)` / `char(n)` columns fit their length.
    fn check_lengths(&self, batch: &RecordBatch) -> Result<(), DataflowError> {
        for (i, field) in self.schema.fields().iter().enumerate() {
            if let Some(t) = weir_common::char_type::CharType::of(field) {
                t.check(batch.column(i).as_ref())
                    .map_err(DataflowError::Constraint)?;
            }
        }
        Ok(())
    }

    fn stage_rows(&mut self, batch: &RecordBatch, op: Op) -> Result<(), DataflowError> {
        let rows = self.row_codec.encode(batch.columns())?;
        match &self.pk_codec {
            Some(pk_codec) => {
                let pk_cols: Vec<_> = self.pk.iter().map(|i| batch.column(*i).clone()).collect();
                let keys = pk_codec.encode(&pk_cols)?;
                for (key, row) in keys.iter().zip(rows.iter()) {
                    let key = key.data();
                    let vnode = vnode_of(key);
                    let exists = self.state.get(vnode, key)?.is_some();
                    match op {
                        Op::Insert if exists => {
                            return Err(DataflowError::Constraint(Error::new(
                                SqlState::UNIQUE_VIOLATION,
                                format!(
                                    "duplicate key value violates unique constraint \"{}_pkey\"",
                                    self.name
                                ),
                            )))
                        }
                        Op::Insert => self.state.put(vnode, key, row.data().to_vec()),
                        Op::Delete if exists => self.state.delete(vnode, key),
                        Op::Delete => {
                            return Err(DataflowError::Internal(format!(
                                "delete of a missing key in table {}",
                                self.name
                            )))
                        }
                    }
                }
            }
            None => {
                for row in rows.iter() {
                    let key = row.data();
                    let vnode = vnode_of(key);
                    let count = match self.state.get(vnode, key)? {
                        Some(v) => decode_count(self.state.id(), &v)?,
                        None => 0,
                    };
                    let next = count + op.weight();
                    if next < 0 {
                        return Err(DataflowError::Internal(format!(
                            "delete of a missing row in table {}",
                            self.name
                        )));
                    } else if next == 0 {
                        self.state.delete(vnode, key);
                    } else {
                        self.state.put(vnode, key, next.to_be_bytes().to_vec());
                    }
                }
            }
        }
        Ok(())
    }

    /// Write the table's part of checkpoint `epoch` (see
    /// [`StateTable::checkpoint`]).
    pub fn checkpoint(&mut self, epoch: weir_common::Epoch) -> Result<(), DataflowError> {
        Ok(self.state.checkpoint(epoch)?)
    }

    /// All rows of the table as committed, as one batch.
    pub fn read(&self, store: &StateStoreRef) -> Result<RecordBatch, DataflowError> {
        read_table(store, self.state.id(), &self.schema, !self.pk.is_empty())
    }
}

/// The committed rows of the table stored in state table `id`.
pub fn read_table(
    store: &StateStoreRef,
    id: StateTableId,
    schema: &SchemaRef,
    has_pk: bool,
) -> Result<RecordBatch, DataflowError> {
    let entries: Vec<(Vec<u8>, Vec<u8>)> = StateTable::read_committed(store, id)?
        .into_iter()
        .map(|(_, k, v)| (k, v))
        .collect();
    if has_pk {
        let codec = RowCodec::for_schema(schema)?;
        codec.decode_batch(schema, entries.iter().map(|(_, v)| v.as_slice()))
    } else {
        decode_multiset(schema, id, &entries)
    }
}

/// How a state table's entries hold rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowLayout {
    /// `primary key → row` (a table with a primary key).
    Keyed,
    /// `row → count` (a view, a table without a primary key).
    Multiset,
}

/// Read the committed rows of state table `id` in `snapshot` as batches
/// of about `batch_rows` rows, handing each to `emit` as soon as it is
/// decoded: the whole table is never in memory. (A view's epoch is
/// committed in one write, so a snapshot never holds half of one.) `emit`
/// returning an error stops the scan.
pub fn read_batches(
    snapshot: &dyn StoreSnapshot,
    id: StateTableId,
    schema: &SchemaRef,
    layout: RowLayout,
    batch_rows: usize,
    emit: &mut dyn FnMut(RecordBatch) -> Result<(), DataflowError>,
) -> Result<(), DataflowError> {
    let mut pending: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(batch_rows);
    let mut failed: Option<DataflowError> = None;
    let flush = |pending: &mut Vec<(Vec<u8>, Vec<u8>)>,
                 emit: &mut dyn FnMut(RecordBatch) -> Result<(), DataflowError>|
     -> Result<(), DataflowError> {
        if pending.is_empty() {
            return Ok(());
        }
        let batch = match layout {
            RowLayout::Keyed => RowCodec::for_schema(schema)?
                .decode_batch(schema, pending.iter().map(|(_, v)| v.as_slice()))?,
            RowLayout::Multiset => decode_multiset(schema, id, pending)?,
        };
        pending.clear();
        emit(batch)
    };
    let scanned = snapshot.for_each_prefix(&id.to_be_bytes(), &mut |k, v| {
        // Keys are `id (4 bytes) | vnode (1 byte) | key`.
        let Some(key) = k.get(5..) else {
            return Ok(());
        };
        pending.push((key.to_vec(), v.to_vec()));
        if pending.len() >= batch_rows {
            if let Err(e) = flush(&mut pending, emit) {
                failed = Some(e);
                return Err(weir_state::StateError::ScanStopped);
            }
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    scanned?;
    flush(&mut pending, emit)
}

/// Cut a batch into chunks of at most [`CHUNK_ROWS`] rows, all with `op`.
pub fn split_chunks(batch: &RecordBatch, op: Op) -> Vec<StreamChunk> {
    let mut chunks = Vec::new();
    let mut offset = 0;
    while offset < batch.num_rows() {
        let len = CHUNK_ROWS.min(batch.num_rows() - offset);
        chunks.push(StreamChunk::uniform(batch.slice(offset, len), op));
        offset += len;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use weir_common::arrow::array::{Int32Array, StringArray};
    use weir_common::arrow::datatypes::{DataType, Field, Schema};
    use weir_state::MemoryStateStore;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn batch(ids: Vec<i32>, vs: Vec<&str>) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int32Array::from(ids)),
                Arc::new(StringArray::from(vs)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn primary_key_conflicts_apply_nothing() {
        let store: StateStoreRef = Arc::new(MemoryStateStore::new());
        let mut t =
            TableStore::new("t", schema(), vec![0], StateTable::new(store.clone(), 1)).unwrap();
        t.apply(None, Some(&batch(vec![1, 2], vec!["a", "b"])))
            .unwrap();
        let err = t
            .apply(None, Some(&batch(vec![3, 1], vec!["c", "d"])))
            .unwrap_err();
        assert_eq!(Error::from(err).code, SqlState::UNIQUE_VIOLATION);
        assert_eq!(t.read(&store).unwrap().num_rows(), 2);
        // An update of the key deletes first, so it does not conflict.
        t.apply(
            Some(&batch(vec![1], vec!["a"])),
            Some(&batch(vec![1], vec!["z"])),
        )
        .unwrap();
        assert_eq!(t.read(&store).unwrap().num_rows(), 2);
    }

    #[test]
    fn multiset_counts_duplicates() {
        let store: StateStoreRef = Arc::new(MemoryStateStore::new());
        let mut t =
            TableStore::new("t", schema(), vec![], StateTable::new(store.clone(), 1)).unwrap();
        t.apply(None, Some(&batch(vec![1, 1, 2], vec!["a", "a", "b"])))
            .unwrap();
        assert_eq!(t.read(&store).unwrap().num_rows(), 3);
        t.apply(Some(&batch(vec![1], vec!["a"])), None).unwrap();
        assert_eq!(t.read(&store).unwrap().num_rows(), 2);
    }
}
