//! [`DynamicFilter`]: `WHERE x <op> (SELECT <one value> ...)`, kept without
//! a cross product.
//!
//! Input 0 carries the rows to filter, input 1 the one-row result of the
//! subquery (a global aggregate: exactly one row, or none while it has not
//! produced one, which compares as NULL). Each row of input 0 is stored
//! once, keyed by the memcomparable encoding of its compared value and
//! then the row, with its multiplicity; rows whose value is NULL never pass
//! and are not stored. A change of input 0 passes when it compares true
//! against the current value. When the value moves from `old` to `new`,
//! only the rows whose value lies between the two can change their answer:
//! one ordered range scan of the state finds them, and the operator emits
//! inserts for rows that start passing and deletes for rows that stop.
//! The cost of a change of the value is the number of rows in that range,
//! not the size of the input.
//!
//! Both state tables live in vnode 0 of a single instance (the comparison
//! is global), so the range scan is one ordered scan.

use std::sync::Arc;

use weir_common::arrow::array::{Array, Int8Array, RecordBatch, UInt32Array};
use weir_common::arrow::datatypes::{DataType, SchemaRef};
use weir_common::datafusion::physical_expr::PhysicalExpr;
use weir_common::{Barrier, Epoch, Op, StreamChunk};
use weir_state::{prefix_upper_bound, StateTable};

use crate::row_codec::RowCodec;
use crate::{DataflowError, Operator};

/// The vnode every entry lives in.
const VNODE: u8 = 0;

/// How the row's value compares with the subquery's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Comparison {
    Lt,
    LtEq,
    Gt,
    GtEq,
    Eq,
}

impl Comparison {
    /// The comparison with its operands swapped (`v < x` is `x > v`).
    pub fn flip(self) -> Self {
        match self {
            Comparison::Lt => Comparison::Gt,
            Comparison::LtEq => Comparison::GtEq,
            Comparison::Gt => Comparison::Lt,
            Comparison::GtEq => Comparison::LtEq,
            Comparison::Eq => Comparison::Eq,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::LtEq => "<=",
            Comparison::Gt => ">",
            Comparison::GtEq => ">=",
            Comparison::Eq => "=",
        }
    }

    /// Whether a row whose value encodes as `row` passes against `value`
    /// (`None`: NULL, which nothing passes). Encodings are memcomparable.
    fn passes(self, row: &[u8], value: Option<&[u8]>) -> bool {
        let Some(value) = value else {
            return false;
        };
        let ord = row.cmp(value);
        match self {
            Comparison::Lt => ord.is_lt(),
            Comparison::LtEq => ord.is_le(),
            Comparison::Gt => ord.is_gt(),
            Comparison::GtEq => ord.is_ge(),
            Comparison::Eq => ord.is_eq(),
        }
    }
}

/// Filters its first input by comparing an expression with the one value
/// of its second input.
pub struct DynamicFilter {
    /// The compared value of a row of input 0.
    left: Arc<dyn PhysicalExpr>,
    /// The value of the row of input 1.
    right: Arc<dyn PhysicalExpr>,
    op: Comparison,
    /// Rows of input 0 (and of the output).
    schema: SchemaRef,
    /// Rows of input 1.
    right_schema: SchemaRef,
    value_codec: RowCodec,
    row_codec: RowCodec,
    right_codec: RowCodec,
    /// Key `value | row`, value `count (i64 LE) | value length (u32 LE)`.
    rows: StateTable,
    /// Key: a row of input 1; value: its count (i64 LE).
    values: StateTable,
    /// The current value, once read: `Some(None)` is NULL.
    current: Option<Option<Vec<u8>>>,
}

impl DynamicFilter {
    /// Filter rows of `schema` by `left op right`, `left` over those rows,
    /// `right` over rows of `right_schema`, both of type `data_type`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        left: Arc<dyn PhysicalExpr>,
        right: Arc<dyn PhysicalExpr>,
        op: Comparison,
        data_type: DataType,
        schema: SchemaRef,
        right_schema: SchemaRef,
        states: [StateTable; 2],
    ) -> Result<Self, DataflowError> {
        let [rows, values] = states;
        Ok(DynamicFilter {
            value_codec: RowCodec::new(&[data_type])?,
            row_codec: RowCodec::for_schema(&schema)?,
            right_codec: RowCodec::for_schema(&right_schema)?,
            left,
            right,
            op,
            schema,
            right_schema,
            rows,
            values,
            current: None,
        })
    }

    /// The current value, read from state on first use.
    fn current(&mut self) -> Result<Option<Vec<u8>>, DataflowError> {
        if let Some(v) = &self.current {
            return Ok(v.clone());
        }
        let v = self.read_value()?;
        self.current = Some(v.clone());
        Ok(v)
    }

    /// The value of input 1's rows: the one row's, NULL when there is not
    /// exactly one.
    fn read_value(&self) -> Result<Option<Vec<u8>>, DataflowError> {
        let entries = self.values.scan_prefix(VNODE, &[])?;
        let mut total = 0i64;
        for (_, v) in &entries {
            total += count_of(v)?;
        }
        let [(row, _)] = entries.as_slice() else {
            return Ok(None);
        };
        if total != 1 {
            return Ok(None);
        }
        let batch = self
            .right_codec
            .decode_batch(&self.right_schema, [row.as_slice()])?;
        let value = self.right.evaluate(&batch)?.into_array(1)?;
        if value.is_null(0) {
            return Ok(None);
        }
        let encoded = self.value_codec.encode(&[value])?;
        Ok(Some(encoded.row(0).data().to_vec()))
    }

    fn process_rows(
        &mut self,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        let n = chunk.len();
        if n == 0 {
            return Ok(());
        }
        let values = self.left.evaluate(&chunk.data)?.into_array(n)?;
        let encoded = self.value_codec.encode(&[Arc::clone(&values)])?;
        let rows = self.row_codec.encode(chunk.data.columns())?;
        let current = self.current()?;
        let mut keep = Vec::new();
        let mut key = Vec::new();
        for i in 0..n {
            if values.is_null(i) {
                continue;
            }
            let value = encoded.row(i).data();
            key.clear();
            key.extend_from_slice(value);
            key.extend_from_slice(rows.row(i).data());
            let count = match self.rows.get(VNODE, &key)? {
                Some(v) => count_of(&v)?,
                None => 0,
            } + chunk.op(i).weight();
            if count > 0 {
                let mut v = Vec::with_capacity(12);
                v.extend_from_slice(&count.to_le_bytes());
                v.extend_from_slice(&(value.len() as u32).to_le_bytes());
                self.rows.put(VNODE, &key, v);
            } else {
                self.rows.delete(VNODE, &key);
            }
            if self.op.passes(value, current.as_deref()) {
                keep.push(i as u32);
            }
        }
        if keep.len() == n {
            out.push(chunk);
        } else if !keep.is_empty() {
            out.push(chunk.take(&UInt32Array::from(keep))?);
        }
        Ok(())
    }

    fn process_value(
        &mut self,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let old = self.current()?;
        let rows = self.right_codec.encode(chunk.data.columns())?;
        for i in 0..chunk.len() {
            let row = rows.row(i).data();
            let count = match self.values.get(VNODE, row)? {
                Some(v) => count_of(&v)?,
                None => 0,
            } + chunk.op(i).weight();
            if count > 0 {
                self.values.put(VNODE, row, count.to_le_bytes().to_vec());
            } else {
                self.values.delete(VNODE, row);
            }
        }
        let new = self.read_value()?;
        self.current = Some(new.clone());
        if old != new {
            self.flip(old.as_deref(), new.as_deref(), out)?;
        }
        Ok(())
    }

    /// Emit the rows whose answer changes when the value moves from `old`
    /// to `new`: only rows with a value between the two can.
    fn flip(
        &mut self,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        let (start, end): (Vec<u8>, Option<Vec<u8>>) = match (old, new) {
            (None, None) => return Ok(()),
            (Some(a), Some(b)) => {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                (lo.to_vec(), prefix_upper_bound(hi))
            }
            (Some(v), None) | (None, Some(v)) => match self.op {
                Comparison::Gt | Comparison::GtEq => (v.to_vec(), None),
                Comparison::Lt | Comparison::LtEq => (Vec::new(), prefix_upper_bound(v)),
                Comparison::Eq => (v.to_vec(), prefix_upper_bound(v)),
            },
        };
        let entries = self.rows.scan_range(VNODE, &start, end.as_deref())?;
        let mut rows: Vec<&[u8]> = Vec::new();
        let mut ops: Vec<i8> = Vec::new();
        for (key, value) in &entries {
            let count = count_of(value)?;
            let len = value
                .get(8..12)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .filter(|l| *l <= key.len())
                .ok_or_else(|| DataflowError::Internal("damaged dynamic filter entry".into()))?;
            let (compared, row) = key.split_at(len);
            let before = self.op.passes(compared, old);
            let after = self.op.passes(compared, new);
            if before == after {
                continue;
            }
            let op = if after { Op::Insert } else { Op::Delete };
            for _ in 0..count {
                rows.push(row);
                ops.push(op.code());
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let batch: RecordBatch = self.row_codec.decode_batch(&self.schema, rows)?;
        out.push(StreamChunk::new(batch, Int8Array::from(ops)));
        Ok(())
    }
}

fn count_of(value: &[u8]) -> Result<i64, DataflowError> {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
        .ok_or_else(|| DataflowError::Internal("damaged dynamic filter count".into()))
}

impl Operator for DynamicFilter {
    fn explain(&self) -> String {
        format!(
            "DynamicFilter {} {} {} state_tables=[{}, {}]",
            self.left,
            self.op.symbol(),
            self.right,
            self.rows.id(),
            self.values.id()
        )
    }

    fn process(
        &mut self,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        self.process_rows(chunk, out)
    }

    fn process_input(
        &mut self,
        input: usize,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        match input {
            0 => self.process_rows(chunk, out),
            _ => self.process_value(chunk, out),
        }
    }

    fn on_barrier(
        &mut self,
        _barrier: Barrier,
        _out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        self.rows.commit()?;
        self.values.commit()?;
        Ok(())
    }

    fn checkpoint(&mut self, epoch: Epoch) -> Result<(), DataflowError> {
        self.rows.checkpoint(epoch)?;
        self.values.checkpoint(epoch)?;
        Ok(())
    }
}

/// Columns of a chunk, for tests.
#[cfg(test)]
fn column_i64(chunk: &StreamChunk, i: usize) -> Vec<Option<i64>> {
    use weir_common::arrow::array::Int64Array;
    let a = chunk.data.column(i);
    let a = a.as_any().downcast_ref::<Int64Array>().unwrap();
    (0..a.len())
        .map(|r| a.is_valid(r).then(|| a.value(r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weir_common::arrow::array::Int64Array;
    use weir_common::arrow::datatypes::{Field, Schema};
    use weir_common::datafusion::physical_expr::expressions::Column;
    use weir_state::{MemoryStateStore, StateStoreRef};

    fn schema(name: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new(name, DataType::Int64, true)]))
    }

    fn chunk(name: &str, rows: &[(Option<i64>, Op)]) -> StreamChunk {
        let data = RecordBatch::try_new(
            schema(name),
            vec![Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            ))],
        )
        .unwrap();
        StreamChunk::new(
            data,
            Int8Array::from(rows.iter().map(|r| r.1.code()).collect::<Vec<_>>()),
        )
    }

    fn filter(op: Comparison, store: &StateStoreRef) -> DynamicFilter {
        DynamicFilter::new(
            Arc::new(Column::new("x", 0)),
            Arc::new(Column::new("v", 0)),
            op,
            DataType::Int64,
            schema("x"),
            schema("v"),
            [
                StateTable::new(Arc::clone(store), 1),
                StateTable::new(Arc::clone(store), 2),
            ],
        )
        .unwrap()
    }

    /// Net multiset of the output so far.
    fn apply(view: &mut BTreeMap<i64, i64>, out: &mut Vec<StreamChunk>) {
        for c in out.drain(..) {
            for (i, x) in column_i64(&c, 0).into_iter().enumerate() {
                *view.entry(x.unwrap()).or_default() += c.op(i).weight();
            }
        }
        view.retain(|_, c| *c != 0);
    }

    /// Every comparison, over random rows and values, against a model:
    /// the rows of the multiset that pass against the current value.
    #[test]
    fn matches_a_model_under_random_changes() {
        for op in [
            Comparison::Lt,
            Comparison::LtEq,
            Comparison::Gt,
            Comparison::GtEq,
            Comparison::Eq,
        ] {
            let store: StateStoreRef = Arc::new(MemoryStateStore::new());
            let mut f = filter(op, &store);
            let mut rows: Vec<Option<i64>> = Vec::new();
            let mut value: Option<i64> = None;
            let mut has_row = false;
            let mut view = BTreeMap::new();
            let mut out = Vec::new();
            let mut seed = 7u64;
            let mut next = |m: u64| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) % m
            };
            for step in 0..400 {
                match next(4) {
                    0 | 1 => {
                        let x = match next(8) {
                            0 => None,
                            v => Some(v as i64),
                        };
                        rows.push(x);
                        f.process_input(0, chunk("x", &[(x, Op::Insert)]), &mut out)
                            .unwrap();
                    }
                    2 if !rows.is_empty() => {
                        let x = rows.swap_remove(next(rows.len() as u64) as usize);
                        f.process_input(0, chunk("x", &[(x, Op::Delete)]), &mut out)
                            .unwrap();
                    }
                    _ => {
                        // The subquery's row changes: the old row leaves, the new comes.
                        let new = match next(9) {
                            0 => None,
                            v => Some(v as i64),
                        };
                        let mut changes = Vec::new();
                        if has_row {
                            changes.push((value, Op::Delete));
                        }
                        changes.push((new, Op::Insert));
                        f.process_input(1, chunk("v", &changes), &mut out).unwrap();
                        has_row = true;
                        value = new;
                    }
                }
                if step % 17 == 0 {
                    f.on_barrier(Barrier::new(step as u64 + 1), &mut out)
                        .unwrap();
                }
                apply(&mut view, &mut out);
                let mut want = BTreeMap::new();
                for x in rows.iter().flatten() {
                    let pass = value.is_some_and(|v| match op {
                        Comparison::Lt => *x < v,
                        Comparison::LtEq => *x <= v,
                        Comparison::Gt => *x > v,
                        Comparison::GtEq => *x >= v,
                        Comparison::Eq => *x == v,
                    });
                    if pass {
                        *want.entry(*x).or_insert(0i64) += 1;
                    }
                }
                assert_eq!(view, want, "{op:?} after step {step}");
            }
        }
    }

    /// A new instance over committed state (recovery) continues from the
    /// stored rows and value.
    #[test]
    fn continues_from_committed_state() {
        let store: StateStoreRef = Arc::new(MemoryStateStore::new());
        let mut out = Vec::new();
        let mut f = filter(Comparison::Gt, &store);
        f.process_input(1, chunk("v", &[(Some(5), Op::Insert)]), &mut out)
            .unwrap();
        let rows: Vec<(Option<i64>, Op)> = (1..=10).map(|x| (Some(x), Op::Insert)).collect();
        f.process_input(0, chunk("x", &rows), &mut out).unwrap();
        f.on_barrier(Barrier::new(1), &mut out).unwrap();
        let mut view = BTreeMap::new();
        apply(&mut view, &mut out);
        assert_eq!(
            view.keys().copied().collect::<Vec<_>>(),
            vec![6, 7, 8, 9, 10]
        );
        drop(f);
        let mut f = filter(Comparison::Gt, &store);
        // The value drops to 2: rows 3..=5 start passing, found by a range scan.
        f.process_input(
            1,
            chunk("v", &[(Some(5), Op::Delete), (Some(2), Op::Insert)]),
            &mut out,
        )
        .unwrap();
        apply(&mut view, &mut out);
        assert_eq!(
            view.keys().copied().collect::<Vec<_>>(),
            (3..=10).collect::<Vec<_>>()
        );
        // No row: NULL, nothing passes.
        f.process_input(1, chunk("v", &[(Some(2), Op::Delete)]), &mut out)
            .unwrap();
        apply(&mut view, &mut out);
        assert!(view.is_empty());
    }
}
