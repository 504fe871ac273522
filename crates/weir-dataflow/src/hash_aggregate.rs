//! `HashAggregate`: GROUP BY with retractable aggregates.
//!
//! State layout, per group (one state-table entry, keyed by the group key's
//! memcomparable bytes in the group key's vnode):
//!   value = `rows: i64` | for each aggregate: `u32 length` + its accumulator
//!   state (`Accumulator::state()`, row-encoded).
//! Hot groups live in memory as DataFusion [`Accumulator`]s; every group
//! touched in an epoch is written back at the barrier, and a group missing
//! from memory is loaded from the state table.
//!
//! Inserts call `update_batch`, deletes call `retract_batch`. At the barrier
//! each touched group emits one net change: a delete of the row it emitted
//! before and an insert of its new row; a group whose last input row left
//! emits only the delete and is forgotten. A global aggregate (no GROUP BY)
//! always has exactly one row, as in Postgres.
//!
//! Memory: cached groups are bounded by the state table's cache budget. When
//! one epoch touches more groups than fit (a large statement with many new
//! keys), the touched groups emit and write their state before the barrier,
//! which makes them clean and evictable; so memory follows the budget, not
//! the size of a statement.

use std::collections::HashMap;
use std::sync::Arc;

use weir_common::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use weir_common::arrow::compute;
use weir_common::arrow::datatypes::{DataType, SchemaRef};
use weir_common::datafusion::common::ScalarValue;
use weir_common::datafusion::logical_expr::Accumulator;
use weir_common::datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use weir_common::datafusion::physical_expr::PhysicalExpr;
use weir_common::vnode::vnode_of;
use weir_common::{Barrier, Epoch, Op, StreamChunk};
use weir_state::StateTable;

use crate::float_sum::RetractableFloatSum;
use crate::min_max::RetractableMinMax;
use crate::row_codec::{batch_with_columns, RowCodec};
use crate::{DataflowError, Operator, CHUNK_ROWS};

/// How to make a fresh accumulator for one aggregate call.
#[derive(Clone)]
pub enum AccumulatorFactory {
    /// A DataFusion aggregate that supports `retract_batch`.
    DataFusion(Arc<AggregateFunctionExpr>),
    /// Weir's own MIN (`is_max = false`) or MAX over values of a type.
    MinMax { is_max: bool, data_type: DataType },
    /// Weir's own SUM (or AVG) over floats, exact under retraction of NaN,
    /// infinities and large values.
    FloatSum { is_avg: bool },
    /// A DataFusion aggregate that never sees a delete, for an append-only
    /// input (a source): MIN/MAX keep just the extreme value instead of
    /// every value. A delete fails the dataflow.
    AppendOnly(Arc<AggregateFunctionExpr>),
}

/// One aggregate in the SELECT list.
#[derive(Clone)]
pub struct AggregateCall {
    /// Makes accumulators.
    pub factory: AccumulatorFactory,
    /// Argument expressions over the input schema.
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    /// `FILTER (WHERE ...)`, if any.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// For EXPLAIN.
    pub display: String,
}

struct PreparedCall {
    call: AggregateCall,
    /// Types of `Accumulator::state()`, which is what the state table keeps.
    state_types: Vec<DataType>,
    state_codec: RowCodec,
    value_codec: Option<Arc<RowCodec>>,
}

impl PreparedCall {
    fn new(call: AggregateCall) -> Result<Self, DataflowError> {
        let value_codec = match &call.factory {
            AccumulatorFactory::MinMax { data_type, .. } => {
                Some(Arc::new(RowCodec::new(std::slice::from_ref(data_type))?))
            }
            AccumulatorFactory::DataFusion(_)
            | AccumulatorFactory::FloatSum { .. }
            | AccumulatorFactory::AppendOnly(_) => None,
        };
        // The retractable ("sliding") accumulators keep more state than
        // their declared state fields (SUM also counts its inputs), so the
        // layout is read off an empty accumulator.
        let mut probe = make_accumulator(&call.factory, &value_codec)?;
        let state_types: Vec<DataType> = probe.state()?.iter().map(|s| s.data_type()).collect();
        Ok(PreparedCall {
            state_codec: RowCodec::new(&state_types)?,
            state_types,
            value_codec,
            call,
        })
    }

    fn new_accumulator(&self) -> Result<Box<dyn Accumulator>, DataflowError> {
        make_accumulator(&self.call.factory, &self.value_codec)
    }
}

fn make_accumulator(
    factory: &AccumulatorFactory,
    value_codec: &Option<Arc<RowCodec>>,
) -> Result<Box<dyn Accumulator>, DataflowError> {
    Ok(match factory {
        AccumulatorFactory::DataFusion(expr) => expr.create_sliding_accumulator()?,
        AccumulatorFactory::MinMax { is_max, data_type } => {
            let codec = value_codec
                .clone()
                .ok_or_else(|| DataflowError::Internal("MIN/MAX without codec".into()))?;
            Box::new(RetractableMinMax::new(*is_max, data_type.clone(), codec))
        }
        AccumulatorFactory::FloatSum { is_avg } => Box::new(RetractableFloatSum::new(*is_avg)),
        AccumulatorFactory::AppendOnly(expr) => expr.create_accumulator()?,
    })
}

struct Group {
    key: Vec<u8>,
    /// Input rows currently in the group (inserts minus deletes).
    rows: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// Aggregate values of the row this group last emitted, kept only while
    /// the group is dirty (taken when it is first touched in an epoch, since
    /// a clean group's accumulators still evaluate to it) and for the global
    /// aggregate's one row.
    emitted: Option<Vec<ScalarValue>>,
    dirty: bool,
}

/// Incremental GROUP BY.
pub struct HashAggregate {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    group_codec: RowCodec,
    calls: Vec<PreparedCall>,
    schema: SchemaRef,
    /// Group key → slot in `groups`.
    index: HashMap<Vec<u8>, u32, foldhash::fast::FixedState>,
    groups: Vec<Option<Group>>,
    free_slots: Vec<u32>,
    dirty: Vec<u32>,
    state: StateTable,
    /// Input not yet folded into the accumulators (see [`MINI_BATCH_ROWS`]).
    buffered: Vec<StreamChunk>,
    buffered_rows: usize,
}

/// Input rows gathered before they are folded into the accumulators. With
/// many groups a single chunk touches each group about once; gathering
/// several chunks lets each accumulator call cover several rows. Output only
/// happens at barriers, so this delays nothing.
pub const MINI_BATCH_ROWS: usize = 64 * 1024;

impl HashAggregate {
    /// A GROUP BY `group_exprs` computing `calls`, emitting `schema` (group
    /// columns, then one column per call). With no group expressions it is a
    /// global aggregate.
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        group_types: Vec<DataType>,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
        state: StateTable,
    ) -> Result<Self, DataflowError> {
        let calls = calls
            .into_iter()
            .map(PreparedCall::new)
            .collect::<Result<Vec<_>, DataflowError>>()?;
        let mut agg = HashAggregate {
            group_codec: RowCodec::new(&group_types)?,
            group_exprs,
            calls,
            schema,
            index: HashMap::default(),
            groups: Vec::new(),
            free_slots: Vec::new(),
            dirty: Vec::new(),
            state,
            buffered: Vec::new(),
            buffered_rows: 0,
        };
        if agg.is_global() {
            // The one row of a global aggregate exists before any input.
            let slot = agg.open_group(&[])?;
            agg.mark_dirty(slot)?;
        }
        Ok(agg)
    }

    fn is_global(&self) -> bool {
        self.group_exprs.is_empty()
    }

    /// The slot of group `key`, loading it from state or creating it.
    fn open_group(&mut self, key: &[u8]) -> Result<u32, DataflowError> {
        if let Some(slot) = self.index.get(key) {
            return Ok(*slot);
        }
        let mut accumulators = self
            .calls
            .iter()
            .map(|c| c.new_accumulator())
            .collect::<Result<Vec<_>, _>>()?;
        let mut rows = 0;
        let mut emitted = None;
        if let Some(bytes) = self.state.get(vnode_of(key), key)? {
            rows = self.restore(&bytes, &mut accumulators)?;
            if self.is_global() {
                emitted = Some(evaluate(&mut accumulators)?);
            }
        }
        let group = Group {
            key: key.to_vec(),
            rows,
            accumulators,
            emitted,
            dirty: false,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.groups[s as usize] = Some(group);
                s
            }
            None => {
                self.groups.push(Some(group));
                (self.groups.len() - 1) as u32
            }
        };
        self.index.insert(key.to_vec(), slot);
        Ok(slot)
    }

    fn restore(
        &self,
        bytes: &[u8],
        accumulators: &mut [Box<dyn Accumulator>],
    ) -> Result<i64, DataflowError> {
        let corrupt = |why: &str| {
            DataflowError::State(weir_state::StateError::Corrupt {
                table: self.state.id(),
                reason: why.to_string(),
            })
        };
        let rows = i64::from_be_bytes(
            bytes
                .get(..8)
                .ok_or_else(|| corrupt("short group"))?
                .try_into()
                .map_err(|_| corrupt("short group"))?,
        );
        let mut rest = &bytes[8..];
        for (call, acc) in self.calls.iter().zip(accumulators.iter_mut()) {
            let len = u32::from_be_bytes(
                rest.get(..4)
                    .ok_or_else(|| corrupt("short state"))?
                    .try_into()
                    .map_err(|_| corrupt("short state"))?,
            ) as usize;
            let encoded = rest.get(4..4 + len).ok_or_else(|| corrupt("short state"))?;
            let arrays = call.state_codec.decode([encoded])?;
            acc.merge_batch(&arrays)?;
            rest = &rest[4 + len..];
        }
        Ok(rows)
    }

    fn persist(&mut self, slot: u32) -> Result<(), DataflowError> {
        let Some(group) = self.groups[slot as usize].as_mut() else {
            return Ok(());
        };
        let mut value = group.rows.to_be_bytes().to_vec();
        for (call, acc) in self.calls.iter().zip(group.accumulators.iter_mut()) {
            let state = acc.state()?;
            let arrays = state
                .iter()
                .map(|s| s.to_array())
                .collect::<Result<Vec<_>, _>>()?;
            let arrays = arrays
                .into_iter()
                .zip(&call.state_types)
                .map(|(a, t)| {
                    if a.data_type() == t {
                        Ok(a)
                    } else {
                        compute::cast(&a, t)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let rows = call.state_codec.encode(&arrays)?;
            let encoded = rows.row(0).data();
            value.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
            value.extend_from_slice(encoded);
        }
        let key = group.key.clone();
        self.state.put(vnode_of(&key), &key, value);
        Ok(())
    }

    /// Note that `slot` changes in this epoch, before its first change:
    /// a group that had emitted a row remembers it, to retract it.
    fn mark_dirty(&mut self, slot: u32) -> Result<(), DataflowError> {
        let global = self.is_global();
        if let Some(g) = self.groups[slot as usize].as_mut() {
            if !g.dirty {
                g.dirty = true;
                if !global && g.rows > 0 {
                    g.emitted = Some(evaluate(&mut g.accumulators)?);
                }
                self.dirty.push(slot);
            }
        }
        Ok(())
    }

    /// Group slot of every row of the chunk.
    fn group_slots(&mut self, chunk: &StreamChunk) -> Result<Vec<u32>, DataflowError> {
        let n = chunk.len();
        if self.is_global() {
            let slot = self.open_group(&[])?;
            return Ok(vec![slot; n]);
        }
        let keys = crate::project::evaluate_all(&self.group_exprs, chunk)?;
        let rows = self.group_codec.encode(&keys)?;
        let mut slots = Vec::with_capacity(n);
        for row in rows.iter() {
            let key = row.data();
            let slot = match self.index.get(key) {
                Some(s) => *s,
                None => self.open_group(key)?,
            };
            slots.push(slot);
        }
        Ok(slots)
    }
}

/// Rows sorted by (group, insert before delete): the permutation and, per
/// bucket, `(slot, op, start, end)` into it.
fn bucket_rows(
    slots: &[u32],
    chunk: &StreamChunk,
    slot_count: usize,
) -> (UInt32Array, Vec<(u32, Op, usize, usize)>) {
    // Dense local ids in order of first appearance keep the buckets small.
    // Slots are dense too, so a vector maps slot → local id.
    let mut local = vec![u32::MAX; slot_count];
    let mut order = Vec::new();
    let keys: Vec<u32> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let entry = &mut local[*s as usize];
            if *entry == u32::MAX {
                *entry = order.len() as u32;
                order.push(*s);
            }
            *entry * 2 + u32::from(chunk.op(i) == Op::Delete)
        })
        .collect();
    let buckets = order.len() * 2;
    let mut starts = vec![0usize; buckets + 1];
    for k in &keys {
        starts[*k as usize + 1] += 1;
    }
    for b in 0..buckets {
        starts[b + 1] += starts[b];
    }
    let mut cursor = starts.clone();
    let mut perm = vec![0u32; keys.len()];
    for (i, k) in keys.iter().enumerate() {
        perm[cursor[*k as usize]] = i as u32;
        cursor[*k as usize] += 1;
    }
    let mut ranges = Vec::new();
    for b in 0..buckets {
        let (start, end) = (starts[b], starts[b + 1]);
        if start < end {
            let op = if b % 2 == 0 { Op::Insert } else { Op::Delete };
            ranges.push((order[b / 2], op, start, end));
        }
    }
    (UInt32Array::from(perm), ranges)
}

impl Operator for HashAggregate {
    fn explain(&self) -> String {
        let groups: Vec<String> = self.group_exprs.iter().map(|e| e.to_string()).collect();
        let aggs: Vec<String> = self.calls.iter().map(|c| c.call.display.clone()).collect();
        format!(
            "HashAggregate group=[{}] aggs=[{}] state_table={}",
            groups.join(", "),
            aggs.join(", "),
            self.state.id()
        )
    }

    fn process(
        &mut self,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.buffered_rows += chunk.len();
        self.buffered.push(chunk);
        if self.buffered_rows >= self.fold_rows() {
            self.fold_buffered()?;
            if self.index.len() > self.cache_limit() {
                // More groups than the cache holds: emit the touched ones
                // now so they can be evicted, instead of growing until the
                // barrier.
                self.emit_dirty(out)?;
                self.bound_cache();
            }
        }
        Ok(())
    }

    fn on_barrier(
        &mut self,
        _barrier: Barrier,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        self.fold_buffered()?;
        self.emit_dirty(out)?;
        self.bound_cache();
        Ok(())
    }

    fn checkpoint(&mut self, epoch: Epoch) -> Result<(), DataflowError> {
        Ok(self.state.checkpoint(epoch)?)
    }
}

impl HashAggregate {
    fn fold_buffered(&mut self) -> Result<(), DataflowError> {
        let chunks = std::mem::take(&mut self.buffered);
        self.buffered_rows = 0;
        match chunks.len() {
            0 => Ok(()),
            1 => chunks.into_iter().try_for_each(|c| self.fold(c)),
            _ => {
                let schema = chunks[0].schema();
                let all = StreamChunk::concat(&schema, &chunks)?;
                self.fold(all)
            }
        }
    }

    /// Fold input changes into the groups' accumulators.
    fn fold(&mut self, chunk: StreamChunk) -> Result<(), DataflowError> {
        let n = chunk.len();
        let slots = self.group_slots(&chunk)?;
        let (perm, ranges) = bucket_rows(&slots, &chunk, self.groups.len());
        // Arguments of every call, permuted into bucket order.
        let mut call_args: Vec<Vec<ArrayRef>> = Vec::with_capacity(self.calls.len());
        for call in &self.calls {
            let mut args = Vec::with_capacity(call.call.args.len());
            let mask = match &call.call.filter {
                Some(f) => {
                    let m = f.evaluate(&chunk.data)?.into_array(n)?;
                    let m = m
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .cloned()
                        .ok_or_else(|| DataflowError::Internal("FILTER is not boolean".into()))?;
                    // Rows the filter rejects count as NULL arguments, which
                    // every supported aggregate ignores.
                    let m = if m.nulls().is_some() {
                        compute::prep_null_mask_filter(&m)
                    } else {
                        m
                    };
                    Some(compute::not(&m)?)
                }
                None => None,
            };
            for a in &call.call.args {
                let mut v = a.evaluate(&chunk.data)?.into_array(n)?;
                if let Some(m) = &mask {
                    v = compute::nullif(&v, m)?;
                }
                args.push(compute::take(&v, &perm, None)?);
            }
            call_args.push(args);
        }
        for (slot, op, start, end) in ranges {
            self.mark_dirty(slot)?;
            let len = end - start;
            let group = self.groups[slot as usize]
                .as_mut()
                .ok_or_else(|| DataflowError::Internal("aggregate slot vanished".into()))?;
            group.rows += op.weight() * len as i64;
            for (acc, args) in group.accumulators.iter_mut().zip(&call_args) {
                let slice: Vec<ArrayRef> = args.iter().map(|a| a.slice(start, len)).collect();
                match op {
                    Op::Insert => acc.update_batch(&slice)?,
                    Op::Delete => acc.retract_batch(&slice)?,
                }
            }
        }
        Ok(())
    }

    /// Emit one net change per touched group and persist their state.
    fn emit_dirty(&mut self, out: &mut Vec<StreamChunk>) -> Result<(), DataflowError> {
        let dirty = std::mem::take(&mut self.dirty);
        if dirty.is_empty() {
            return Ok(());
        }
        let global = self.is_global();
        let mut rows = OutputRows::default();
        for slot in dirty {
            let Some(group) = self.groups[slot as usize].as_mut() else {
                continue;
            };
            group.dirty = false;
            if !global && group.rows <= 0 {
                if group.rows < 0 {
                    return Err(DataflowError::Internal(format!(
                        "group has {} rows: a delete without its insert",
                        group.rows
                    )));
                }
                let key = std::mem::take(&mut group.key);
                if let Some(old) = group.emitted.take() {
                    rows.push(key.clone(), old, Op::Delete);
                }
                self.groups[slot as usize] = None;
                self.index.remove(&key);
                self.free_slots.push(slot);
                self.state.delete(vnode_of(&key), &key);
            } else {
                let new = evaluate(&mut group.accumulators)?;
                let old = group.emitted.take();
                if old.as_ref() != Some(&new) {
                    if let Some(old) = old {
                        rows.push(group.key.clone(), old, Op::Delete);
                    }
                    if global {
                        group.emitted = Some(new.clone());
                    }
                    rows.push(group.key.clone(), new, Op::Insert);
                } else if global {
                    group.emitted = old;
                }
                self.persist(slot)?;
            }
            if rows.len() >= CHUNK_ROWS {
                out.push(self.output_chunk(std::mem::take(&mut rows))?);
            }
        }
        self.state.commit()?;
        if rows.len() > 0 {
            out.push(self.output_chunk(rows)?);
        }
        Ok(())
    }

    /// One output chunk of `rows`.
    fn output_chunk(&self, rows: OutputRows) -> Result<StreamChunk, DataflowError> {
        let mut columns: Vec<ArrayRef> = if self.is_global() {
            Vec::new()
        } else {
            self.group_codec
                .decode(rows.keys.iter().map(|k| k.as_slice()))?
        };
        let group_cols = columns.len();
        for (i, field) in self.schema.fields().iter().enumerate().skip(group_cols) {
            let call_idx = i - group_cols;
            let col = ScalarValue::iter_to_array(rows.values.iter().map(|v| v[call_idx].clone()))?;
            let col = if col.data_type() == field.data_type() {
                col
            } else {
                compute::cast(&col, field.data_type())?
            };
            columns.push(col);
        }
        let data = batch_with_columns(&self.schema, columns)?;
        Ok(StreamChunk::new(data, rows.ops.into()))
    }
}

/// Output rows being gathered into a chunk: (group key, aggregate values, op).
#[derive(Default)]
struct OutputRows {
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<ScalarValue>>,
    ops: Vec<i8>,
}

impl OutputRows {
    fn push(&mut self, key: Vec<u8>, values: Vec<ScalarValue>, op: Op) {
        self.keys.push(key);
        self.values.push(values);
        self.ops.push(op.code());
    }

    fn len(&self) -> usize {
        self.ops.len()
    }
}

/// The current values of a group's aggregates.
fn evaluate(accumulators: &mut [Box<dyn Accumulator>]) -> Result<Vec<ScalarValue>, DataflowError> {
    Ok(accumulators
        .iter_mut()
        .map(|a| a.evaluate())
        .collect::<Result<Vec<_>, _>>()?)
}

impl HashAggregate {
    /// Rough bytes one cached group takes (key, accumulators, index entry).
    fn group_bytes(&self) -> usize {
        160 + 96 * self.calls.len()
    }

    /// Keep the cached groups within the state table's cache budget: past
    /// it, clean groups are evicted (down to half the budget) and reload from
    /// state on their next change.
    /// How many groups the cache budget holds.
    fn cache_limit(&self) -> usize {
        (self.state.cache_bytes() / self.group_bytes()).max(1024)
    }

    /// Input rows gathered before a fold: [`MINI_BATCH_ROWS`], or fewer
    /// when the cache is small, since one fold can open a group per row.
    fn fold_rows(&self) -> usize {
        MINI_BATCH_ROWS.min(self.cache_limit() / 4).max(256)
    }

    fn bound_cache(&mut self) {
        let limit = self.cache_limit();
        if self.index.len() <= limit {
            return;
        }
        let target = limit / 2;
        for slot in 0..self.groups.len() {
            if self.index.len() <= target {
                break;
            }
            let clean = matches!(&self.groups[slot], Some(g) if !g.dirty);
            if clean {
                if let Some(g) = self.groups[slot].take() {
                    self.index.remove(&g.key);
                    self.free_slots.push(slot as u32);
                }
            }
        }
        if self.index.is_empty() {
            self.groups.clear();
            self.free_slots.clear();
        }
    }

    /// Drop every clean group from memory; they reload from the state table
    /// on their next change. (The hot-key cache of a later version evicts
    /// this way under memory pressure.)
    pub fn evict_clean_groups(&mut self) {
        for slot in 0..self.groups.len() {
            let clean = matches!(&self.groups[slot], Some(g) if !g.dirty);
            if clean {
                if let Some(g) = self.groups[slot].take() {
                    self.index.remove(&g.key);
                    self.free_slots.push(slot as u32);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weir_common::arrow::array::{Int64Array, RecordBatch};
    use weir_common::arrow::datatypes::{Field, Schema};
    use weir_common::datafusion::functions_aggregate::{count::count_udaf, sum::sum_udaf};
    use weir_common::datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use weir_common::datafusion::physical_expr::expressions::Column;
    use weir_state::{MemoryStateStore, StateStoreRef};

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn aggregate(store: &StateStoreRef) -> HashAggregate {
        let schema = input_schema();
        let v: Arc<dyn PhysicalExpr> = Arc::new(Column::new("v", 1));
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![Arc::clone(&v)])
            .schema(Arc::clone(&schema))
            .alias("sum")
            .build()
            .unwrap();
        let count = AggregateExprBuilder::new(count_udaf(), vec![v])
            .schema(Arc::clone(&schema))
            .alias("count")
            .build()
            .unwrap();
        let calls = [sum, count]
            .into_iter()
            .map(|agg| AggregateCall {
                args: agg.expressions(),
                display: agg.name().to_string(),
                factory: AccumulatorFactory::DataFusion(Arc::new(agg)),
                filter: None,
            })
            .chain(std::iter::once(AggregateCall {
                factory: AccumulatorFactory::MinMax {
                    is_max: true,
                    data_type: DataType::Int64,
                },
                args: vec![Arc::new(Column::new("v", 1))],
                filter: None,
                display: "max(v)".into(),
            }))
            .collect();
        let out = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("sum", DataType::Int64, true),
            Field::new("count", DataType::Int64, true),
            Field::new("max", DataType::Int64, true),
        ]));
        HashAggregate::new(
            vec![Arc::new(Column::new("k", 0))],
            vec![DataType::Int64],
            calls,
            out,
            StateTable::new(Arc::clone(store), 9),
        )
        .unwrap()
    }

    /// [`aggregate`] with a cache budget of `cache_bytes`.
    fn aggregate_with_cache(store: &StateStoreRef, cache_bytes: usize) -> HashAggregate {
        let mut agg = aggregate(store);
        let ctx = weir_state::StateContext {
            cache_bytes,
            ..weir_state::StateContext::in_memory(Arc::clone(store))
        };
        agg.state = StateTable::with_context(&ctx, 9);
        agg
    }

    fn chunk(rows: &[(i64, Option<i64>, Op)]) -> StreamChunk {
        let k = Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let v = Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
        let ops: Vec<i8> = rows.iter().map(|r| r.2.code()).collect();
        let data = RecordBatch::try_new(input_schema(), vec![Arc::new(k), Arc::new(v)]).unwrap();
        StreamChunk::new(data, ops.into())
    }

    /// Apply emitted changes to a model of the view: row text → count.
    fn apply(view: &mut BTreeMap<String, i64>, out: &[StreamChunk]) {
        for c in out {
            for i in 0..c.len() {
                let row: Vec<String> = c
                    .data
                    .columns()
                    .iter()
                    .map(|col| ScalarValue::try_from_array(col, i).unwrap().to_string())
                    .collect();
                let e = view.entry(row.join(",")).or_insert(0);
                *e += c.op(i).weight();
                if *e == 0 {
                    view.remove(&row.join(","));
                }
            }
        }
    }

    #[test]
    fn retractions_and_reload_from_state() {
        let store: StateStoreRef = Arc::new(MemoryStateStore::new());
        let mut agg = aggregate(&store);
        let mut view = BTreeMap::new();
        let mut out = Vec::new();
        agg.process(
            chunk(&[
                (1, Some(10), Op::Insert),
                (1, Some(5), Op::Insert),
                (2, None, Op::Insert),
            ]),
            &mut out,
        )
        .unwrap();
        agg.on_barrier(Barrier::new(1), &mut out).unwrap();
        apply(&mut view, &out);
        out.clear();
        assert_eq!(
            view.keys().cloned().collect::<Vec<_>>(),
            vec!["1,15,2,10".to_string(), "2,NULL,0,NULL".to_string()]
        );
        // Everything reloads from the state table from here on.
        agg.evict_clean_groups();
        agg.process(
            chunk(&[
                (1, Some(10), Op::Delete),
                (2, None, Op::Delete),
                (3, Some(7), Op::Insert),
            ]),
            &mut out,
        )
        .unwrap();
        agg.on_barrier(Barrier::new(2), &mut out).unwrap();
        apply(&mut view, &out);
        assert_eq!(
            view.keys().cloned().collect::<Vec<_>>(),
            vec!["1,5,1,5".to_string(), "3,7,1,7".to_string()]
        );
        // A fresh operator over the same state continues where it left off.
        let mut again = aggregate(&store);
        out.clear();
        again
            .process(chunk(&[(1, Some(5), Op::Delete)]), &mut out)
            .unwrap();
        again.on_barrier(Barrier::new(3), &mut out).unwrap();
        apply(&mut view, &out);
        assert_eq!(
            view.keys().cloned().collect::<Vec<_>>(),
            vec!["3,7,1,7".to_string()]
        );
    }

    /// An epoch touching far more groups than the cache holds emits before
    /// the barrier, keeps memory bounded, and still ends exact.
    #[test]
    fn large_epochs_stay_within_the_cache() {
        let store: StateStoreRef = Arc::new(MemoryStateStore::new());
        let mut agg = aggregate_with_cache(&store, 0);
        let limit = agg.cache_limit();
        let keys = 5 * limit as i64;
        // model: key -> values inserted and not deleted
        let mut model: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let mut view = BTreeMap::new();
        let mut out = Vec::new();
        let mut emitted_before_barrier = false;
        for epoch in 1..=3u64 {
            for c in 0..12i64 {
                let mut rows = Vec::new();
                for i in 0..CHUNK_ROWS as i64 {
                    let n = (epoch as i64 * 1_000_000) + c * CHUNK_ROWS as i64 + i;
                    let k = (n * 7919) % keys;
                    // Every third row deletes one of the key's earlier values.
                    let earlier = model.get(&k).and_then(|v| v.first().copied());
                    match earlier {
                        Some(v) if n % 3 == 0 => {
                            rows.push((k, Some(v), Op::Delete));
                            model.get_mut(&k).unwrap().remove(0);
                        }
                        _ => {
                            rows.push((k, Some(n % 1000), Op::Insert));
                            model.entry(k).or_default().push(n % 1000);
                        }
                    }
                }
                agg.process(chunk(&rows), &mut out).unwrap();
                emitted_before_barrier |= !out.is_empty();
                assert!(
                    agg.index.len() <= limit + agg.fold_rows(),
                    "{} groups cached, limit {limit}",
                    agg.index.len()
                );
                apply(&mut view, &out);
                out.clear();
            }
            agg.on_barrier(Barrier::new(epoch), &mut out).unwrap();
            apply(&mut view, &out);
            out.clear();
            let expected: BTreeMap<String, i64> = model
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| {
                    let sum: i64 = v.iter().sum();
                    let max = v.iter().max().unwrap();
                    (format!("{k},{sum},{},{max}", v.len()), 1)
                })
                .collect();
            assert_eq!(view, expected, "epoch {epoch}");
        }
        assert!(emitted_before_barrier);
    }
}
