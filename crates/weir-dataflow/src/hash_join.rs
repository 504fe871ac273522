//! `HashJoin`: an incremental equi-join of two streams, with a residual
//! condition, in every SQL flavour: inner, left, right and full outer,
//! semi and anti (EXISTS / IN, NOT EXISTS), and the null-aware anti join of
//! `NOT IN`.
//!
//! Each side keeps its rows in a state table keyed by
//! `(vnode of the join key, join key, id)`: `len(key) u32 | key | id`,
//! where key and id are memcomparable encodings ([`RowCodec`]). The id is
//! what [`JoinRows`] says identifies a row: its stream key (value
//! `degree i64 | row`), a row number per vnode for an append-only input
//! (same value), or the row itself for a multiset (value
//! `count i64 | degree i64`, big endian). The *degree* is the number of
//! rows of the other side it currently matches (equal key and residual
//! condition true). Degrees are what make outer,
//! semi and anti joins exact: a left row of a LEFT JOIN is NULL-padded
//! while its degree is 0; its first match retracts the padded row, and the
//! padded row comes back when the last match goes.
//!
//! A change on one side probes the other side's rows of its key (a cache of
//! whole keys, least recently read evicted first, refilled from the state
//! table by an ordered prefix scan on a miss), evaluates the residual condition over every candidate pair at
//! once, then applies the rows in order: joined pairs carry the change of
//! the incoming row, the other side's degrees move (emitting or retracting
//! NULL-padded / semi / anti rows when they cross zero), and the incoming
//! row is stored with its own degree.
//!
//! NULL keys never match unless the join compares keys with `IS NOT
//! DISTINCT FROM` (`null_safe`). A join without equality keys (a cross
//! join, a join with a one-row scalar subquery) keys every row by the empty
//! key and runs as one instance.
//!
//! The null-aware anti join (`x NOT IN (SELECT y ...)`, one key, no
//! residual) runs as one instance and also counts the right side's rows and
//! its NULL keys: a left row is in the result iff the right side is empty,
//! or its key is not NULL, no right key is NULL and nothing matches it.
//! When the right side becomes (non-)empty or gains (loses) its first
//! (last) NULL, every left row is re-evaluated.

use std::collections::HashMap;
use std::sync::Arc;

use weir_common::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, UInt32Array};
use weir_common::arrow::compute::take;
use weir_common::arrow::datatypes::SchemaRef;
use weir_common::datafusion::physical_expr::PhysicalExpr;
use weir_common::vnode::{vnode_of, Vnode};
use weir_common::{Barrier, Epoch, Op, StreamChunk};
use weir_state::{StateError, StateTable};

use crate::project::evaluate_all;
use crate::row_codec::{batch_with_columns, RowCodec};
use crate::{DataflowError, Operator};

/// Which rows a join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JoinKind {
    /// Matching pairs.
    Inner,
    /// Pairs, and left rows without a match padded with NULLs.
    Left,
    /// Pairs, and right rows without a match padded with NULLs.
    Right,
    /// Pairs, and rows of either side without a match, padded.
    Full,
    /// Left rows with at least one match.
    LeftSemi,
    /// Left rows without a match.
    LeftAnti,
    /// Right rows with at least one match.
    RightSemi,
    /// Right rows without a match.
    RightAnti,
}

impl JoinKind {
    /// SQL-ish name for EXPLAIN.
    pub fn name(self) -> &'static str {
        match self {
            JoinKind::Inner => "inner",
            JoinKind::Left => "left outer",
            JoinKind::Right => "right outer",
            JoinKind::Full => "full outer",
            JoinKind::LeftSemi => "left semi",
            JoinKind::LeftAnti => "left anti",
            JoinKind::RightSemi => "right semi",
            JoinKind::RightAnti => "right anti",
        }
    }

    /// Emits joined pairs (output = left columns then right columns).
    fn emits_pairs(self) -> bool {
        matches!(
            self,
            JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full
        )
    }

    /// Rows of `side` without a match are emitted NULL-padded.
    fn pads(self, side: usize) -> bool {
        match self {
            JoinKind::Left => side == 0,
            JoinKind::Right => side == 1,
            JoinKind::Full => true,
            _ => false,
        }
    }

    /// `Some(anti)` when the output is the rows of `side` (semi: with a
    /// match, anti: without one).
    fn filters(self, side: usize) -> Option<bool> {
        match (self, side) {
            (JoinKind::LeftSemi, 0) | (JoinKind::RightSemi, 1) => Some(false),
            (JoinKind::LeftAnti, 0) | (JoinKind::RightAnti, 1) => Some(true),
            _ => None,
        }
    }

    /// Whether rows of `side` need their degree: their output depends on
    /// whether they match.
    fn tracks_degree(self, side: usize) -> bool {
        self.pads(side) || self.filters(side).is_some()
    }

    /// Does a row of `side` with `degree` matches appear on its own
    /// (padded, or as a semi/anti result)?
    fn alone(self, side: usize, degree: i64) -> bool {
        if self.pads(side) {
            return degree == 0;
        }
        match self.filters(side) {
            Some(false) => degree > 0,
            Some(true) => degree == 0,
            None => false,
        }
    }
}

/// One input of a join, as planned.
pub struct JoinInput {
    /// Join key expressions over this input's rows (equal types on both
    /// sides, in the same order).
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The input's rows.
    pub schema: SchemaRef,
    /// How its rows are stored.
    pub rows: JoinRows,
}

/// How one side of a join stores its rows, by what identifies a row of
/// its input stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JoinRows {
    /// No key: rows are a multiset, stored by the whole row with a count
    /// (`len(key) u32 | key | row` → `count i64 | degree i64`). A change
    /// reads the row's count first.
    #[default]
    Multiset,
    /// The stream key: these columns identify a row (a primary key, a
    /// group key, both sides' keys after a join). Stored by the key
    /// (`len(key) u32 | key | stream key` → `degree i64 | row`); changes
    /// are blind writes.
    Keyed(Vec<usize>),
    /// The input only inserts (a connector source): each row gets the next
    /// number of its vnode as its stream key, and is written blind.
    AppendOnly,
}

impl JoinRows {
    /// For EXPLAIN.
    pub fn describe(&self) -> String {
        match self {
            JoinRows::Multiset => "multiset".into(),
            JoinRows::Keyed(cols) => format!(
                "keyed by [{}]",
                cols.iter()
                    .map(|c| format!("#{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            JoinRows::AppendOnly => "append-only".into(),
        }
    }
}

/// A stored row of one side.
#[derive(Debug, Clone)]
struct Stored {
    /// What identifies it under its join key: the row itself (multiset)
    /// or its stream key.
    id: Vec<u8>,
    /// The encoded row; empty when `id` is the row.
    row: Vec<u8>,
    count: i64,
    degree: i64,
}

impl Stored {
    fn row(&self) -> &[u8] {
        if self.row.is_empty() {
            &self.id
        } else {
            &self.row
        }
    }
}

/// Bytes a cached row costs, roughly.
fn stored_bytes(s: &Stored) -> usize {
    s.id.len() + s.row.len() + 56
}

/// Bytes a cached key costs besides its rows, roughly.
const KEY_OVERHEAD: usize = 64;

/// Every stored row of one join key, ordered by id.
struct CachedKey {
    rows: Vec<Stored>,
    /// What the key costs in the cache.
    bytes: usize,
    /// The side's access clock when the key was last read.
    used: u64,
    /// Written since the last commit: it stays cached until the commit
    /// (the cache is then the only place that merges its staged writes).
    dirty: bool,
}

struct Side {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    rows: RowCodec,
    layout: JoinRows,
    /// Encodes the stream key columns of a keyed side.
    stream_key: Option<RowCodec>,
    state: StateTable,
    /// Whole keys, each exactly its committed rows plus staged writes.
    cache: HashMap<Vec<u8>, CachedKey>,
    cached_bytes: usize,
    /// Incremented on every access; orders keys for eviction.
    clock: u64,
    /// What the cache held after the last eviction that could not reach
    /// its target (dirty keys stay): the next one waits until the cache
    /// grew by an eighth of the budget, rather than sorting it per chunk.
    trimmed_to: usize,
    /// Keys not in the cache with writes staged since the last commit,
    /// and the ids written: a miss on such a key overlays them on the
    /// committed rows.
    staged: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// Append-only: the next row number of each vnode used so far, and
    /// whether it moved since the last commit.
    seqs: HashMap<Vnode, (u64, bool)>,
}

/// `len(key) u32 | key`: the prefix of every state key of a join key.
fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + key.len());
    p.extend_from_slice(&(key.len() as u32).to_be_bytes());
    p.extend_from_slice(key);
    p
}

/// `len(key) u32 | key | id`: the state key of one stored row.
fn row_key(key: &[u8], id: &[u8]) -> Vec<u8> {
    let mut k = key_prefix(key);
    k.extend_from_slice(id);
    k
}

/// The state key of the null-aware join's right-side counters.
const COUNTERS_KEY: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF];

/// The state key, in each vnode, of an append-only side's next row
/// number. No join key prefix starts with it (no key is 4 GiB long).
const SEQ_KEY: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFE];

fn encode_value(count: i64, degree: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&count.to_be_bytes());
    v.extend_from_slice(&degree.to_be_bytes());
    v
}

fn corrupt(table: u32, reason: &str) -> DataflowError {
    DataflowError::State(StateError::Corrupt {
        table,
        reason: reason.into(),
    })
}

fn read_i64(table: u32, bytes: &[u8], at: usize) -> Result<i64, DataflowError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| corrupt(table, "join state value is too short"))
}

fn decode_value(table: u32, bytes: &[u8]) -> Result<(i64, i64), DataflowError> {
    if bytes.len() != 16 {
        return Err(corrupt(table, "join state value is not 16 bytes"));
    }
    Ok((read_i64(table, bytes, 0)?, read_i64(table, bytes, 8)?))
}

impl Side {
    /// A stored row from its id (the state key after the join key) and
    /// its value.
    fn decode_stored(&self, id: Vec<u8>, value: &[u8]) -> Result<Stored, DataflowError> {
        let table = self.state.id();
        Ok(match self.layout {
            JoinRows::Multiset => {
                let (count, degree) = decode_value(table, value)?;
                Stored {
                    id,
                    row: Vec::new(),
                    count,
                    degree,
                }
            }
            JoinRows::Keyed(_) | JoinRows::AppendOnly => Stored {
                id,
                degree: read_i64(table, value, 0)?,
                row: value[8..].to_vec(),
                count: 1,
            },
        })
    }

    /// The state value of `stored`.
    fn encode_stored(&self, stored: &Stored) -> Vec<u8> {
        match self.layout {
            JoinRows::Multiset => encode_value(stored.count, stored.degree),
            JoinRows::Keyed(_) | JoinRows::AppendOnly => {
                let row = stored.row();
                let mut v = Vec::with_capacity(8 + row.len());
                v.extend_from_slice(&stored.degree.to_be_bytes());
                v.extend_from_slice(row);
                v
            }
        }
    }

    /// The ids of `chunk`'s rows (`rows`: their encodings) whose join keys
    /// are `keys`: the row itself, its stream key, or the next number of
    /// its key's vnode.
    fn ids(
        &mut self,
        chunk: &StreamChunk,
        rows: &weir_common::arrow::row::Rows,
        keys: &[Option<Vec<u8>>],
    ) -> Result<Vec<Vec<u8>>, DataflowError> {
        match &self.layout {
            JoinRows::Multiset => Ok((0..chunk.len())
                .map(|i| rows.row(i).data().to_vec())
                .collect()),
            JoinRows::Keyed(cols) => {
                let codec = self
                    .stream_key
                    .as_ref()
                    .ok_or_else(|| DataflowError::Internal("a keyed side without codec".into()))?;
                let columns = cols
                    .iter()
                    .map(|&c| {
                        chunk.data.columns().get(c).cloned().ok_or_else(|| {
                            DataflowError::Internal("stream key column out of range".into())
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let encoded = codec.encode(&columns)?;
                Ok((0..chunk.len())
                    .map(|i| encoded.row(i).data().to_vec())
                    .collect())
            }
            JoinRows::AppendOnly => {
                let mut ids = Vec::with_capacity(chunk.len());
                for (i, key) in keys.iter().enumerate() {
                    if chunk.op(i) != Op::Insert {
                        return Err(DataflowError::Internal(
                            "an append-only join input deleted a row".into(),
                        ));
                    }
                    // A row that matches nothing is never stored.
                    let Some(key) = key else {
                        ids.push(Vec::new());
                        continue;
                    };
                    let vnode = vnode_of(key);
                    let seq = match self.seqs.get_mut(&vnode) {
                        Some(s) => s,
                        None => {
                            let next = match self.state.get(vnode, SEQ_KEY)? {
                                Some(v) => read_i64(self.state.id(), &v, 0)? as u64,
                                None => 0,
                            };
                            self.seqs.entry(vnode).or_insert((next, false))
                        }
                    };
                    ids.push(seq.0.to_be_bytes().to_vec());
                    *seq = (seq.0 + 1, true);
                }
                Ok(ids)
            }
        }
    }

    /// The stored rows of `key`, loaded into the cache on a miss by an
    /// ordered prefix scan of the committed rows, with the rows staged
    /// for it laid over them.
    fn load(&mut self, key: &[u8]) -> Result<&mut Vec<Stored>, DataflowError> {
        self.clock += 1;
        if !self.cache.contains_key(key) {
            let prefix = key_prefix(key);
            let vnode = vnode_of(key);
            let entries = self.state.scan_committed_prefix(vnode, &prefix)?;
            let mut rows = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                rows.push(self.decode_stored(k[prefix.len()..].to_vec(), &v)?);
            }
            let staged = self.staged.remove(key);
            let dirty = staged.is_some();
            for id in staged.into_iter().flatten() {
                let value = self.state.get(vnode, &row_key(key, &id))?;
                let at = rows.binary_search_by(|r| r.id.as_slice().cmp(&id));
                match (value, at) {
                    (Some(v), at) => {
                        let s = self.decode_stored(id, &v)?;
                        match at {
                            Ok(i) => rows[i] = s,
                            Err(i) => rows.insert(i, s),
                        }
                    }
                    (None, Ok(i)) => {
                        rows.remove(i);
                    }
                    (None, Err(_)) => {}
                }
            }
            let bytes = KEY_OVERHEAD + key.len() + rows.iter().map(stored_bytes).sum::<usize>();
            self.cached_bytes += bytes;
            let entry = CachedKey {
                rows,
                bytes,
                used: self.clock,
                dirty,
            };
            self.cache.insert(key.to_vec(), entry);
        }
        let clock = self.clock;
        let entry = self
            .cache
            .get_mut(key)
            .ok_or_else(|| DataflowError::Internal("join cache lost a key".into()))?;
        entry.used = clock;
        Ok(&mut entry.rows)
    }

    /// Stage `stored` under `key` (count 0 deletes it); the caller has
    /// already changed the cached key.
    fn write(&mut self, key: &[u8], stored: &Stored) {
        let k = row_key(key, &stored.id);
        let vnode = vnode_of(key);
        if stored.count == 0 {
            self.state.delete(vnode, &k);
        } else {
            let value = self.encode_stored(stored);
            self.state.put(vnode, &k, value);
        }
        if let Some(entry) = self.cache.get_mut(key) {
            entry.dirty = true;
        }
    }

    /// Add `w` copies of the row `row` identified by `id` under `key` (a
    /// negative `w` removes them), with `degree` matches, in the cache and
    /// the state table. A key that is not cached is not loaded: a keyed
    /// or append-only row is written blind, a multiset row reads its
    /// count first.
    fn add(
        &mut self,
        key: &[u8],
        id: &[u8],
        row: &[u8],
        w: i64,
        degree: i64,
    ) -> Result<(), DataflowError> {
        let multiset = self.layout == JoinRows::Multiset;
        let stored = if let Some(entry) = self.cache.get_mut(key) {
            let before = entry.rows.len();
            let stored = upsert(&mut entry.rows, id, row, multiset, w, degree)?;
            let delta = stored_bytes(&stored);
            if entry.rows.len() > before {
                entry.bytes += delta;
                self.cached_bytes += delta;
            } else if entry.rows.len() < before {
                entry.bytes -= delta;
                self.cached_bytes -= delta;
            }
            stored
        } else {
            let count = if multiset {
                let vnode = vnode_of(key);
                match self.state.get(vnode, &row_key(key, id))? {
                    Some(v) => decode_value(self.state.id(), &v)?.0,
                    None => 0,
                }
            } else if w < 0 {
                // A consistent stream deletes only rows it inserted.
                1
            } else {
                0
            };
            let ids = self.staged.entry(key.to_vec()).or_default();
            if !ids.iter().any(|r| r == id) {
                ids.push(id.to_vec());
            }
            stored_row(id, row, multiset, count + w, degree)
        };
        if stored.count < 0 || (!multiset && stored.count > 1) {
            return Err(DataflowError::Internal(format!(
                "join input {} a row {} times",
                if w < 0 { "deleted" } else { "inserted" },
                if w < 0 {
                    "it never inserted"
                } else {
                    "more than one"
                },
            )));
        }
        self.write(key, &stored);
        Ok(())
    }

    /// Keep the cache within the state table's budget: evict the least
    /// recently read clean keys until it holds three quarters of it.
    fn trim(&mut self) {
        let budget = self.state.cache_bytes();
        if self.cached_bytes <= budget.max(self.trimmed_to + budget / 8) {
            return;
        }
        let mut clean: Vec<(u64, usize)> = self
            .cache
            .values()
            .filter(|e| !e.dirty)
            .map(|e| (e.used, e.bytes))
            .collect();
        clean.sort_unstable_by_key(|&(used, _)| used);
        let target = budget / 4 * 3;
        let mut bytes = self.cached_bytes;
        let mut cutoff = None;
        for (used, b) in clean {
            if bytes <= target {
                break;
            }
            bytes -= b;
            cutoff = Some(used);
        }
        self.trimmed_to = if bytes > target { bytes } else { 0 };
        let Some(cutoff) = cutoff else {
            return;
        };
        self.cache.retain(|_, e| e.dirty || e.used > cutoff);
        self.cached_bytes = self.cache.values().map(|e| e.bytes).sum();
    }

    fn commit(&mut self) -> Result<(), DataflowError> {
        for (vnode, (next, moved)) in &mut self.seqs {
            if std::mem::take(moved) {
                self.state
                    .put(*vnode, SEQ_KEY, (*next as i64).to_be_bytes().to_vec());
            }
        }
        self.state.commit()?;
        self.staged.clear();
        for e in self.cache.values_mut() {
            e.dirty = false;
        }
        // Every key is clean again: the cache can shrink to its target.
        self.trimmed_to = 0;
        self.trim();
        Ok(())
    }
}

/// A stored row with `count` copies.
fn stored_row(id: &[u8], row: &[u8], multiset: bool, count: i64, degree: i64) -> Stored {
    Stored {
        id: id.to_vec(),
        row: if multiset { Vec::new() } else { row.to_vec() },
        count,
        degree,
    }
}

/// The null-aware anti join's view of the right side.
#[derive(Debug, Clone, Copy, Default)]
struct RightCounts {
    total: i64,
    nulls: i64,
}

/// An incremental two-input join. Input 0 is the left side, input 1 the
/// right side.
pub struct HashJoin {
    kind: JoinKind,
    sides: [Side; 2],
    residual: Option<Arc<dyn PhysicalExpr>>,
    null_safe: bool,
    /// `NOT IN` semantics (left anti, one key, no residual).
    null_aware: bool,
    counts: Option<RightCounts>,
    /// Output rows: left ++ right columns, or one side's for semi/anti.
    schema: SchemaRef,
    /// Schema of a candidate pair (left ++ right), for the residual.
    pair_schema: SchemaRef,
    /// Encodes join keys (the same types on both sides); `None` without
    /// keys.
    key_codec: Option<RowCodec>,
}

/// Output being assembled for one input chunk.
#[derive(Default)]
struct Emitted {
    /// Candidate pair indices and their changes.
    pairs: Vec<u32>,
    pair_ops: Vec<i8>,
    /// Rows of the incoming chunk emitted alone (padded or semi/anti).
    own: Vec<u32>,
    own_ops: Vec<i8>,
    /// Stored rows of the other side emitted alone.
    other: Vec<Vec<u8>>,
    other_ops: Vec<i8>,
}

impl Emitted {
    /// Every copy of the other side's stored row `r`, inserted (`insert`)
    /// or deleted.
    fn push_other(&mut self, r: &Stored, insert: bool) {
        let op = if insert { Op::Insert } else { Op::Delete };
        for _ in 0..r.count {
            self.other.push(r.row().to_vec());
            self.other_ops.push(op.code());
        }
    }
}

impl HashJoin {
    /// A join of `left` and `right` on equal keys (`null_safe`: NULL keys
    /// equal each other), keeping pairs where `residual` (over left ++
    /// right columns) is true. `schema` is the output's; the state tables
    /// hold each side's rows.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: JoinKind,
        left: JoinInput,
        right: JoinInput,
        residual: Option<Arc<dyn PhysicalExpr>>,
        null_safe: bool,
        null_aware: bool,
        schema: SchemaRef,
        states: [StateTable; 2],
    ) -> Result<Self, DataflowError> {
        if null_aware && (kind != JoinKind::LeftAnti || residual.is_some() || left.keys.len() != 1)
        {
            return Err(DataflowError::Internal(
                "a null-aware join must be a left anti join on one key without residual".into(),
            ));
        }
        let pair_fields: Vec<_> = left
            .schema
            .fields()
            .iter()
            .chain(right.schema.fields().iter())
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
            .collect();
        let pair_schema = Arc::new(weir_common::arrow::datatypes::Schema::new(pair_fields));
        let key_types = left
            .keys
            .iter()
            .map(|k| k.data_type(&left.schema))
            .collect::<Result<Vec<_>, _>>()?;
        let key_codec = if key_types.is_empty() {
            None
        } else {
            Some(RowCodec::new(&key_types)?)
        };
        let [ls, rs] = states;
        let side = |input: JoinInput, state: StateTable| -> Result<Side, DataflowError> {
            // The null-aware join reads its left rows back by scanning:
            // it keeps them as a multiset.
            let layout = if null_aware {
                JoinRows::Multiset
            } else {
                input.rows
            };
            let stream_key = match &layout {
                JoinRows::Keyed(cols) => {
                    let types = cols
                        .iter()
                        .map(|&c| {
                            input
                                .schema
                                .fields()
                                .get(c)
                                .map(|f| f.data_type().clone())
                                .ok_or_else(|| {
                                    DataflowError::Internal("stream key column out of range".into())
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Some(RowCodec::new(&types)?)
                }
                _ => None,
            };
            Ok(Side {
                rows: RowCodec::for_schema(&input.schema)?,
                keys: input.keys,
                schema: input.schema,
                layout,
                stream_key,
                state,
                cache: HashMap::new(),
                cached_bytes: 0,
                clock: 0,
                trimmed_to: 0,
                staged: HashMap::new(),
                seqs: HashMap::new(),
            })
        };
        Ok(HashJoin {
            kind,
            sides: [side(left, ls)?, side(right, rs)?],
            residual,
            null_safe,
            null_aware,
            counts: None,
            schema,
            pair_schema,
            key_codec,
        })
    }

    /// Join keys of `chunk` (input `s`): `None` for a key that matches
    /// nothing (a NULL in a key column, unless null-safe).
    fn keys(&self, s: usize, chunk: &StreamChunk) -> Result<Vec<Option<Vec<u8>>>, DataflowError> {
        let n = chunk.len();
        let side = &self.sides[s];
        let Some(codec) = self.key_codec.as_ref().filter(|_| !side.keys.is_empty()) else {
            return Ok(vec![Some(Vec::new()); n]);
        };
        let cols = evaluate_all(&side.keys, chunk)?;
        let encoded = codec.encode(&cols)?;
        Ok((0..n)
            .map(|i| {
                let null = cols.iter().any(|c| c.is_null(i));
                (!null || self.null_safe).then(|| encoded.row(i).data().to_vec())
            })
            .collect())
    }

    /// The encoded key of `chunk`'s row `i` even when it holds NULLs
    /// (the null-aware join stores its NULL-keyed left rows).
    fn raw_keys(&self, s: usize, chunk: &StreamChunk) -> Result<Vec<Vec<u8>>, DataflowError> {
        let side = &self.sides[s];
        let codec = self
            .key_codec
            .as_ref()
            .ok_or_else(|| DataflowError::Internal("a null-aware join without key".into()))?;
        let cols = evaluate_all(&side.keys, chunk)?;
        let encoded = codec.encode(&cols)?;
        Ok((0..chunk.len())
            .map(|i| encoded.row(i).data().to_vec())
            .collect())
    }

    /// A batch of pairs: rows `own` of `chunk` (input `s`) beside the
    /// encoded rows `other` of the other side, as left ++ right columns.
    fn pair_batch(
        &self,
        s: usize,
        chunk: &StreamChunk,
        own: &[u32],
        other: &[&[u8]],
    ) -> Result<weir_common::arrow::array::RecordBatch, DataflowError> {
        let idx = UInt32Array::from(own.to_vec());
        let own_cols: Vec<ArrayRef> = chunk
            .data
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &idx, None))
            .collect::<Result<_, _>>()?;
        let other_cols = self.sides[1 - s].rows.decode(other.iter().copied())?;
        let cols = if s == 0 {
            own_cols.into_iter().chain(other_cols).collect()
        } else {
            other_cols.into_iter().chain(own_cols).collect()
        };
        Ok(batch_with_columns(&self.pair_schema, cols)?)
    }

    /// Rows of one side alone: the side's columns, NULL-padded when the
    /// join emits pairs.
    fn alone_chunk(
        &self,
        side: usize,
        cols: Vec<ArrayRef>,
        ops: Vec<i8>,
    ) -> Result<StreamChunk, DataflowError> {
        let rows = ops.len();
        let cols = if self.kind.emits_pairs() {
            let nulls = |s: &Side| -> Vec<ArrayRef> {
                s.schema
                    .fields()
                    .iter()
                    .map(|f| new_null_array(f.data_type(), rows))
                    .collect()
            };
            if side == 0 {
                cols.into_iter().chain(nulls(&self.sides[1])).collect()
            } else {
                nulls(&self.sides[0]).into_iter().chain(cols).collect()
            }
        } else {
            cols
        };
        let data = batch_with_columns(&self.schema, cols)?;
        Ok(StreamChunk::new(data, ops.into()))
    }

    fn emit(
        &self,
        s: usize,
        chunk: &StreamChunk,
        pairs: Option<&weir_common::arrow::array::RecordBatch>,
        e: Emitted,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        if !e.pairs.is_empty() {
            if let Some(batch) = pairs {
                let idx = UInt32Array::from(e.pairs);
                let cols: Vec<ArrayRef> = batch
                    .columns()
                    .iter()
                    .map(|c| take(c.as_ref(), &idx, None))
                    .collect::<Result<_, _>>()?;
                let data = batch_with_columns(&self.schema, cols)?;
                out.push(StreamChunk::new(data, e.pair_ops.into()));
            }
        }
        if !e.own.is_empty() {
            let idx = UInt32Array::from(e.own);
            let cols: Vec<ArrayRef> = chunk
                .data
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &idx, None))
                .collect::<Result<_, _>>()?;
            out.push(self.alone_chunk(s, cols, e.own_ops)?);
        }
        if !e.other.is_empty() {
            let o = 1 - s;
            let cols = self.sides[o]
                .rows
                .decode(e.other.iter().map(|r| r.as_slice()))?;
            out.push(self.alone_chunk(o, cols, e.other_ops)?);
        }
        Ok(())
    }

    fn process_side(
        &mut self,
        s: usize,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        if self.null_aware {
            return self.process_null_aware(s, chunk, out);
        }
        let o = 1 - s;
        let n = chunk.len();
        let keys = self.keys(s, &chunk)?;
        let own_rows = self.sides[s].rows.encode(chunk.data.columns())?;
        let own_ids = self.sides[s].ids(&chunk, &own_rows, &keys)?;
        // Candidate pairs: every stored row of the other side with the key.
        let mut pair_own: Vec<u32> = Vec::new();
        let mut pair_other: Vec<Vec<u8>> = Vec::new();
        let mut pair_pos: Vec<u32> = Vec::new();
        let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(n);
        for (i, key) in keys.iter().enumerate() {
            let start = pair_own.len();
            if let Some(k) = key {
                let rows = self.sides[o].load(k)?;
                for (j, r) in rows.iter().enumerate() {
                    pair_own.push(i as u32);
                    pair_other.push(r.row().to_vec());
                    pair_pos.push(j as u32);
                }
            }
            ranges.push((start, pair_own.len()));
        }
        let need_pairs =
            !pair_own.is_empty() && (self.kind.emits_pairs() || self.residual.is_some());
        let pairs = if need_pairs {
            let other: Vec<&[u8]> = pair_other.iter().map(Vec::as_slice).collect();
            Some(self.pair_batch(s, &chunk, &pair_own, &other)?)
        } else {
            None
        };
        let mask: Option<BooleanArray> = match (&self.residual, &pairs) {
            (Some(r), Some(batch)) => {
                let v = r.evaluate(batch)?.into_array(batch.num_rows())?;
                let b = v
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .cloned()
                    .ok_or_else(|| {
                        DataflowError::Internal("join condition is not boolean".into())
                    })?;
                Some(b)
            }
            _ => None,
        };
        let passes = |p: usize| match &mask {
            Some(m) => m.is_valid(p) && m.value(p),
            None => true,
        };
        let mut e = Emitted::default();
        let kind = self.kind;
        for (i, key) in keys.iter().enumerate() {
            let w = chunk.op(i).weight();
            let code = chunk.op(i).code();
            let Some(key) = key else {
                // Matches nothing, now or later: only its own output.
                if kind.alone(s, 0) {
                    e.own.push(i as u32);
                    e.own_ops.push(code);
                }
                continue;
            };
            let (start, end) = ranges[i];
            let mut degree = 0i64;
            {
                let (own_side, other_side) = split(&mut self.sides, s);
                let rows = other_side.load(key)?;
                let mut touched = Vec::new();
                for (p, &pos) in pair_pos.iter().enumerate().take(end).skip(start) {
                    if !passes(p) {
                        continue;
                    }
                    let Some(r) = rows.get_mut(pos as usize) else {
                        return Err(DataflowError::Internal("join cache changed".into()));
                    };
                    degree += r.count;
                    if kind.emits_pairs() {
                        for _ in 0..r.count {
                            e.pairs.push(p as u32);
                            e.pair_ops.push(code);
                        }
                    }
                    if kind.tracks_degree(o) {
                        let before = kind.alone(o, r.degree);
                        r.degree += w;
                        let after = kind.alone(o, r.degree);
                        if before != after {
                            e.push_other(r, after);
                        }
                        touched.push(r.clone());
                    }
                }
                for r in &touched {
                    other_side.write(key, r);
                }
                // The incoming row itself.
                let own_row = own_rows.row(i).data();
                own_side.add(key, &own_ids[i], own_row, w, degree)?;
            }
            if kind.alone(s, degree) {
                e.own.push(i as u32);
                e.own_ops.push(code);
            }
        }
        self.emit(s, &chunk, pairs.as_ref(), e, out)?;
        for side in &mut self.sides {
            side.trim();
        }
        Ok(())
    }

    /// The right side's row and NULL-key counts (null-aware join).
    fn right_counts(&mut self) -> Result<RightCounts, DataflowError> {
        if let Some(c) = self.counts {
            return Ok(c);
        }
        let state = &self.sides[1].state;
        let c = match state.get(0, COUNTERS_KEY)? {
            Some(v) => {
                let (total, nulls) = decode_value(state.id(), &v)?;
                RightCounts { total, nulls }
            }
            None => RightCounts::default(),
        };
        self.counts = Some(c);
        Ok(c)
    }

    /// Is a left row in the result of `NOT IN`?
    fn not_in(c: RightCounts, key_null: bool, degree: i64) -> bool {
        c.total == 0 || (!key_null && c.nulls == 0 && degree == 0)
    }

    /// Every left row currently in the result (null-aware join), with op.
    fn all_left(
        &self,
        c: RightCounts,
        op: Op,
        e: &mut Vec<Vec<u8>>,
        ops: &mut Vec<i8>,
    ) -> Result<(), DataflowError> {
        let left = &self.sides[0];
        let key_codec_null = |key: &[u8]| -> Result<bool, DataflowError> {
            // One key column: decode it to see whether it is NULL.
            let codec = self
                .key_codec
                .as_ref()
                .ok_or_else(|| DataflowError::Internal("a null-aware join without key".into()))?;
            let cols = codec.decode([key])?;
            Ok(cols.first().is_some_and(|c| c.is_null(0)))
        };
        for (_, k, v) in left.state.scan_all()? {
            let Some(len) = k.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
                continue;
            };
            let len = u32::from_be_bytes(len) as usize;
            let Some(key) = k.get(4..4 + len) else {
                continue;
            };
            let row = &k[4 + len..];
            let (count, degree) = decode_value(left.state.id(), &v)?;
            if Self::not_in(c, key_codec_null(key)?, degree) {
                for _ in 0..count {
                    e.push(row.to_vec());
                    ops.push(op.code());
                }
            }
        }
        Ok(())
    }

    fn process_null_aware(
        &mut self,
        s: usize,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        let n = chunk.len();
        let keys = self.raw_keys(s, &chunk)?;
        let key_cols = evaluate_all(&self.sides[s].keys, &chunk)?;
        let null_at = |i: usize| key_cols.iter().any(|c| c.is_null(i));
        let own_rows = self.sides[s].rows.encode(chunk.data.columns())?;
        let mut counts = self.right_counts()?;
        let mut e = Emitted::default();
        for (i, key) in keys.iter().enumerate().take(n) {
            let w = chunk.op(i).weight();
            let key_null = null_at(i);
            let own_row = own_rows.row(i).data();
            if s == 0 {
                // A left row: degree = matching right rows.
                let degree = if key_null {
                    0
                } else {
                    self.sides[1].load(key)?.iter().map(|r| r.count).sum()
                };
                let side = &mut self.sides[0];
                side.add(key, own_row, own_row, w, degree)?;
                if Self::not_in(counts, key_null, degree) {
                    e.own.push(i as u32);
                    e.own_ops.push(chunk.op(i).code());
                }
                continue;
            }
            // A right row.
            let next = RightCounts {
                total: counts.total + w,
                nulls: counts.nulls + if key_null { w } else { 0 },
            };
            let flips = (counts.total == 0) != (next.total == 0)
                || (counts.nulls == 0) != (next.nulls == 0);
            if flips {
                self.all_left(counts, Op::Delete, &mut e.other, &mut e.other_ops)?;
            }
            if !key_null {
                let (left, right) = split(&mut self.sides, 0);
                let matches = left.load(key)?;
                let mut touched = Vec::new();
                for r in matches.iter_mut() {
                    let before = Self::not_in(counts, false, r.degree);
                    r.degree += w;
                    let after = Self::not_in(next, false, r.degree);
                    if !flips && before != after {
                        e.push_other(r, after);
                    }
                    touched.push(r.clone());
                }
                for r in &touched {
                    left.write(key, r);
                }
                right.add(key, own_row, own_row, w, 0)?;
            }
            counts = next;
            self.counts = Some(counts);
            self.sides[1]
                .state
                .put(0, COUNTERS_KEY, encode_value(counts.total, counts.nulls));
            if flips {
                self.all_left(counts, Op::Insert, &mut e.other, &mut e.other_ops)?;
            }
        }
        self.emit(s, &chunk, None, e, out)
    }
}

/// Add `w` to the stored row `id` (inserting it as `row`), set its
/// degree, and return it (count 0: removed). A keyed row is there once
/// or not at all.
fn upsert(
    rows: &mut Vec<Stored>,
    id: &[u8],
    row: &[u8],
    multiset: bool,
    w: i64,
    degree: i64,
) -> Result<Stored, DataflowError> {
    match rows.binary_search_by(|r| r.id.as_slice().cmp(id)) {
        Ok(at) => {
            if !multiset && w > 0 {
                return Err(DataflowError::Internal(
                    "join input inserted a stream key twice".into(),
                ));
            }
            rows[at].count += w;
            rows[at].degree = degree;
            let s = rows[at].clone();
            if s.count == 0 {
                rows.remove(at);
            }
            Ok(s)
        }
        Err(at) => {
            let s = stored_row(id, row, multiset, w, degree);
            if s.count > 0 {
                rows.insert(at, s.clone());
            }
            Ok(s)
        }
    }
}

/// Mutable access to side `s` and the other side.
fn split(sides: &mut [Side; 2], s: usize) -> (&mut Side, &mut Side) {
    let (a, b) = sides.split_at_mut(1);
    if s == 0 {
        (&mut a[0], &mut b[0])
    } else {
        (&mut b[0], &mut a[0])
    }
}

impl Operator for HashJoin {
    fn explain(&self) -> String {
        let keys = |s: &Side| {
            s.keys
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = format!(
            "HashJoin {}{} on [{}] = [{}]",
            self.kind.name(),
            if self.null_aware { " (null-aware)" } else { "" },
            keys(&self.sides[0]),
            keys(&self.sides[1]),
        );
        if self.null_safe {
            text.push_str(" (IS NOT DISTINCT FROM)");
        }
        if let Some(r) = &self.residual {
            text.push_str(&format!(" residual {r}"));
        }
        text.push_str(&format!(
            " state_tables=[{}, {}]",
            self.sides[0].state.id(),
            self.sides[1].state.id()
        ));
        text
    }

    fn process(
        &mut self,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        self.process_side(0, chunk, out)
    }

    fn process_input(
        &mut self,
        input: usize,
        chunk: StreamChunk,
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        self.process_side(input.min(1), chunk, out)
    }

    fn on_barrier(
        &mut self,
        _barrier: Barrier,
        _out: &mut Vec<StreamChunk>,
    ) -> Result<(), DataflowError> {
        for side in &mut self.sides {
            side.commit()?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, epoch: Epoch) -> Result<(), DataflowError> {
        for side in &mut self.sides {
            side.state.checkpoint(epoch)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weir_common::arrow::array::{Int64Array, RecordBatch};
    use weir_common::arrow::datatypes::{DataType, Field, Schema};
    use weir_common::datafusion::physical_expr::expressions::Column;
    use weir_state::{MemoryStateStore, StateContext, StateStoreRef};

    fn side_schema(a: &str, b: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(a, DataType::Int64, true),
            Field::new(b, DataType::Int64, true),
        ]))
    }

    fn join(kind: JoinKind, store: &StateStoreRef) -> HashJoin {
        join_cached(kind, store, 256 << 20, JoinRows::Multiset)
    }

    /// A join whose sides may cache `cache_bytes` of rows each, stored as
    /// `rows` says.
    fn join_cached(
        kind: JoinKind,
        store: &StateStoreRef,
        cache_bytes: usize,
        rows: JoinRows,
    ) -> HashJoin {
        let mut ctx = StateContext::in_memory(Arc::clone(store));
        ctx.cache_bytes = cache_bytes;
        let left = side_schema("k", "a");
        let right = side_schema("k2", "b");
        let out = match kind {
            JoinKind::LeftSemi | JoinKind::LeftAnti => Arc::clone(&left),
            _ => Arc::new(Schema::new(
                left.fields()
                    .iter()
                    .chain(right.fields().iter())
                    .map(|f| f.as_ref().clone())
                    .collect::<Vec<_>>(),
            )),
        };
        HashJoin::new(
            kind,
            JoinInput {
                keys: vec![Arc::new(Column::new("k", 0))],
                schema: left,
                rows: rows.clone(),
            },
            JoinInput {
                keys: vec![Arc::new(Column::new("k2", 0))],
                schema: right,
                rows,
            },
            None,
            false,
            false,
            out,
            [
                StateTable::with_context(&ctx, 1),
                StateTable::with_context(&ctx, 2),
            ],
        )
        .unwrap()
    }

    fn chunk(rows: &[(Option<i64>, i64, i8)]) -> StreamChunk {
        let schema = side_schema("x", "y");
        let data = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| Some(r.1)).collect::<Int64Array>()),
            ],
        )
        .unwrap();
        StreamChunk::new(data, rows.iter().map(|r| r.2).collect::<Vec<i8>>().into())
    }

    /// Fold output changes into a multiset of printed rows.
    fn fold(out: &[StreamChunk], into: &mut BTreeMap<String, i64>) {
        for c in out {
            for i in 0..c.len() {
                let cells: Vec<String> = c
                    .data
                    .columns()
                    .iter()
                    .map(|col| {
                        let a = col.as_any().downcast_ref::<Int64Array>().unwrap();
                        if a.is_null(i) {
                            "N".into()
                        } else {
                            a.value(i).to_string()
                        }
                    })
                    .collect();
                *into.entry(cells.join(",")).or_default() += c.op(i).weight();
            }
        }
        into.retain(|_, n| *n != 0);
    }

    fn rows(m: &BTreeMap<String, i64>) -> Vec<(String, i64)> {
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    #[test]
    fn outer_rows_are_padded_while_unmatched() {
        let store: StateStoreRef = Arc::new(MemoryStateStore::new());
        let mut j = join(JoinKind::Full, &store);
        let mut view = BTreeMap::new();
        let mut out = Vec::new();
        // Left: (1, 10), (1, 10) twice, (NULL, 11); right empty.
        j.process_input(
            0,
            chunk(&[(Some(1), 10, 1), (Some(1), 10, 1), (None, 11, 1)]),
            &mut out,
        )
        .unwrap();
        fold(&out, &mut view);
        assert_eq!(
            rows(&view),
            vec![("1,10,N,N".into(), 2), ("N,11,N,N".into(), 1)]
        );
        // The first match retracts both padded copies.
        out.clear();
        j.process_input(1, chunk(&[(Some(1), 20, 1), (None, 21, 1)]), &mut out)
            .unwrap();
        fold(&out, &mut view);
        assert_eq!(
            rows(&view),
            vec![
                ("1,10,1,20".into(), 2),
                ("N,11,N,N".into(), 1),
                ("N,N,N,21".into(), 1)
            ]
        );
        j.on_barrier(Barrier::new(1), &mut out).unwrap();
        // A second match, then both go: the padded rows come back.
        out.clear();
        j.process_input(1, chunk(&[(Some(1), 22, 1)]), &mut out)
            .unwrap();
        j.process_input(1, chunk(&[(Some(1), 20, -1), (Some(1), 22, -1)]), &mut out)
            .unwrap();
        fold(&out, &mut view);
        assert_eq!(
            rows(&view),
            vec![
                ("1,10,N,N".into(), 2),
                ("N,11,N,N".into(), 1),
                ("N,N,N,21".into(), 1)
            ]
        );
        // One left copy goes.
        out.clear();
        j.process_input(0, chunk(&[(Some(1), 10, -1)]), &mut out)
            .unwrap();
        fold(&out, &mut view);
        assert_eq!(view.get("1,10,N,N"), Some(&1));
    }

    #[test]
    fn semi_and_anti_follow_the_first_and_last_match() {
        for kind in [JoinKind::LeftSemi, JoinKind::LeftAnti] {
            let store: StateStoreRef = Arc::new(MemoryStateStore::new());
            let mut j = join(kind, &store);
            let mut view = BTreeMap::new();
            let mut out = Vec::new();
            j.process_input(0, chunk(&[(Some(1), 10, 1), (Some(2), 20, 1)]), &mut out)
                .unwrap();
            j.process_input(1, chunk(&[(Some(1), 0, 1), (Some(1), 1, 1)]), &mut out)
                .unwrap();
            fold(&out, &mut view);
            let expect: Vec<(String, i64)> = match kind {
                JoinKind::LeftSemi => vec![("1,10".into(), 1)],
                _ => vec![("2,20".into(), 1)],
            };
            assert_eq!(rows(&view), expect, "{kind:?}");
            out.clear();
            j.process_input(1, chunk(&[(Some(1), 0, -1), (Some(1), 1, -1)]), &mut out)
                .unwrap();
            fold(&out, &mut view);
            let expect: Vec<(String, i64)> = match kind {
                JoinKind::LeftSemi => vec![],
                _ => vec![("1,10".into(), 1), ("2,20".into(), 1)],
            };
            assert_eq!(rows(&view), expect, "{kind:?}");
        }
    }

    #[test]
    fn state_survives_a_cold_cache() {
        // Rows are read back from the state table after the cache is gone;
        // an append-only side goes on numbering its rows where it stopped.
        for layout in [
            JoinRows::Multiset,
            JoinRows::Keyed(vec![1]),
            JoinRows::AppendOnly,
        ] {
            let store: StateStoreRef = Arc::new(MemoryStateStore::new());
            let mut out = Vec::new();
            {
                let mut j = join_cached(JoinKind::Inner, &store, 1 << 20, layout.clone());
                j.process_input(0, chunk(&[(Some(7), 1, 1), (Some(7), 2, 1)]), &mut out)
                    .unwrap();
                j.on_barrier(Barrier::new(1), &mut out).unwrap();
            }
            let mut j = join_cached(JoinKind::Inner, &store, 1 << 20, layout.clone());
            out.clear();
            j.process_input(0, chunk(&[(Some(7), 3, 1)]), &mut out)
                .unwrap();
            j.process_input(1, chunk(&[(Some(7), 9, 1)]), &mut out)
                .unwrap();
            let mut view = BTreeMap::new();
            fold(&out, &mut view);
            assert_eq!(
                rows(&view),
                vec![
                    ("7,1,7,9".into(), 1),
                    ("7,2,7,9".into(), 1),
                    ("7,3,7,9".into(), 1)
                ],
                "{layout:?}"
            );
        }
    }

    /// The join as a batch query over the rows each side holds.
    fn reference(
        kind: JoinKind,
        left: &[(Option<i64>, i64)],
        right: &[(Option<i64>, i64)],
    ) -> Vec<(String, i64)> {
        let show = |k: Option<i64>| k.map_or("N".to_string(), |k| k.to_string());
        let matches = |k: Option<i64>, side: &[(Option<i64>, i64)]| -> Vec<i64> {
            side.iter()
                .filter(|r| k.is_some() && r.0 == k)
                .map(|r| r.1)
                .collect()
        };
        let mut m = BTreeMap::new();
        for &(k, a) in left {
            let ms = matches(k, right);
            if kind.emits_pairs() {
                for b in &ms {
                    *m.entry(format!("{},{a},{},{b}", show(k), show(k)))
                        .or_default() += 1;
                }
            }
            if kind.alone(0, ms.len() as i64) {
                let row = if kind.emits_pairs() {
                    format!("{},{a},N,N", show(k))
                } else {
                    format!("{},{a}", show(k))
                };
                *m.entry(row).or_default() += 1;
            }
        }
        for &(k, b) in right {
            if kind.pads(1) && matches(k, left).is_empty() {
                *m.entry(format!("N,N,{},{b}", show(k))).or_default() += 1;
            }
        }
        rows(&m)
    }

    #[test]
    fn random_changes_with_a_tiny_cache_match_the_batch_join() {
        // Keys are evicted and reloaded all the time (the cache holds a
        // few keys), rows are written to keys that are not cached, and
        // barriers fall at random: the output must stay the batch join.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let kinds = [
            JoinKind::Inner,
            JoinKind::Left,
            JoinKind::Right,
            JoinKind::Full,
            JoinKind::LeftSemi,
            JoinKind::LeftAnti,
        ];
        // Multiset rows repeat; keyed rows are unique in (k, v) (the
        // stream key is both columns); append-only rows are never deleted.
        let layouts = [
            JoinRows::Multiset,
            JoinRows::Keyed(vec![0, 1]),
            JoinRows::AppendOnly,
        ];
        for (kind, layout) in kinds
            .into_iter()
            .flat_map(|k| layouts.iter().map(move |l| (k, l.clone())))
        {
            let store: StateStoreRef = Arc::new(MemoryStateStore::new());
            let mut j = join_cached(kind, &store, 256 * 40, layout.clone());
            let mut sides: [Vec<(Option<i64>, i64)>; 2] = [Vec::new(), Vec::new()];
            let mut view = BTreeMap::new();
            let mut epoch = 1;
            for step in 0..2000 {
                let s = next(2) as usize;
                let mut out = Vec::new();
                if !sides[s].is_empty() && layout != JoinRows::AppendOnly && next(3) == 0 {
                    let at = next(sides[s].len() as u64) as usize;
                    let (k, v) = sides[s].swap_remove(at);
                    j.process_input(s, chunk(&[(k, v, Op::Delete.code())]), &mut out)
                        .unwrap();
                } else {
                    let k = (next(10) != 0).then(|| next(40) as i64);
                    let v = next(5) as i64;
                    if matches!(layout, JoinRows::Keyed(_)) && sides[s].contains(&(k, v)) {
                        continue;
                    }
                    sides[s].push((k, v));
                    j.process_input(s, chunk(&[(k, v, Op::Insert.code())]), &mut out)
                        .unwrap();
                }
                if next(20) == 0 {
                    j.on_barrier(Barrier::new(epoch), &mut out).unwrap();
                    epoch += 1;
                }
                fold(&out, &mut view);
                if step % 25 != 0 {
                    continue;
                }
                assert_eq!(
                    rows(&view),
                    reference(kind, &sides[0], &sides[1]),
                    "{kind:?} {layout:?} step {step}"
                );
            }
            assert!(
                j.sides
                    .iter()
                    .all(|s| s.cached_bytes <= 256 * 40 || s.cache.values().any(|e| e.dirty)),
                "{kind:?} {layout:?}: the cache outgrew its budget"
            );
        }
    }
}
