//! The physical dataflow plan: what a view runs, as data.
//!
//! Between DataFusion's logical plan and the running tasks sits a
//! [`DataflowPlan`]: fragments of operator descriptions (kind, expressions,
//! keys, state table ids and row layouts) and how rows move between them
//! (merge or hash exchange). It fixes no parallelism: a fragment is single
//! or parallel, and [`DataflowPlan::instantiate`] makes one instance of a
//! single fragment and `parallelism` instances of a parallel one, each
//! opening the vnode range it owns of every state table.
//!
//! A plan serializes (serde; expressions as DataFusion's protobuf encoding
//! of physical expressions, schemas as Arrow IPC), prints ([`Display`]) and
//! compares (`PartialEq`). The catalog stores a view's plan in checkpoints
//! and in the log, and recovery instantiates the stored plan instead of
//! planning the view's SQL again.
//!
//! [`Display`]: std::fmt::Display

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;
use datafusion_proto::protobuf::PhysicalExprNode;
use prost::Message;
use serde::{Deserialize, Serialize};
use weir_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_common::arrow::ipc::reader::StreamReader;
use weir_common::arrow::ipc::writer::StreamWriter;
use weir_common::datafusion::common::tree_node::{Transformed, TreeNode};
use weir_common::datafusion::error::DataFusionError;
use weir_common::datafusion::execution::{FunctionRegistry, TaskContext};
use weir_common::datafusion::physical_expr::aggregate::{
    AggregateExprBuilder, AggregateFunctionExpr,
};
use weir_common::datafusion::physical_expr::expressions::BinaryExpr;
use weir_common::datafusion::physical_expr::PhysicalExpr;
use weir_common::vnode::{VnodeRange, MAX_PARALLELISM};
use weir_state::{StateContext, StateTable, StateTableId};

use crate::blackhole::{Blackhole, SinkCounters};
use crate::dynamic_filter::{Comparison, DynamicFilter};
use crate::exchange::HashKey;
use crate::filter::Filter;
use crate::hash_aggregate::{AccumulatorFactory, AggregateCall, HashAggregate};
use crate::hash_join::{HashJoin, JoinInput, JoinKind, JoinRows};
use crate::materialize::Materialize;
use crate::project::Project;
use crate::runtime::{Exchange, Fragment, FragmentInput};
use crate::union::Union;
use crate::{DataflowError, Operator};

/// A view's (or sink's, or subscription's) dataflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataflowPlan {
    /// The relations it reads, numbered as [`InputPlan::External`] numbers
    /// them. A relation read twice (a self-join) is two inputs.
    pub inputs: Vec<PlanInput>,
    /// Fragments in topological order; the last produces the output.
    pub fragments: Vec<FragmentPlan>,
    /// The output's columns.
    pub schema: SchemaPlan,
    /// Every state table it owns, in the order they were allocated: the
    /// output's own first (a view's rows; a sink's, kept empty).
    pub state_tables: Vec<StateTableId>,
}

/// One relation a dataflow reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    /// The table, view or source.
    pub relation: String,
    /// A connector source, read by one reader per instance of the fragment
    /// reading it.
    pub split: bool,
}

/// A chain of operators run as one task per instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FragmentPlan {
    /// Where its rows come from, in the order its first operator numbers
    /// its inputs.
    pub inputs: Vec<InputPlan>,
    /// One instance, or one per unit of parallelism.
    pub distribution: Distribution,
    /// The chain, first to last.
    pub operators: Vec<OperatorPlan>,
}

/// How many instances a fragment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distribution {
    /// One instance (a global aggregate, a keyless join, the view's output).
    Single,
    /// One instance per unit of the dataflow's parallelism, each owning a
    /// vnode range: behind a hash exchange, or one per source reader.
    Parallel,
}

/// One input of a fragment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InputPlan {
    /// The dataflow's input `n`.
    External(usize),
    /// The output of an earlier fragment.
    Fragment {
        /// Its index.
        from: usize,
        /// How its rows reach this fragment's instances.
        exchange: ExchangePlan,
    },
}

/// How rows move between fragments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExchangePlan {
    /// Every instance sends everything to the one instance downstream.
    Merge,
    /// Each row goes to the instance owning the vnode of its key.
    Hash {
        /// Key expressions over the producing fragment's rows.
        keys: Vec<ExprPlan>,
        /// The keys' types, as the vnode hash encodes them.
        types: TypesPlan,
        /// The producing fragment's rows.
        input: SchemaPlan,
    },
}

/// One operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OperatorPlan {
    /// Compute expressions.
    Project {
        input: SchemaPlan,
        exprs: Vec<ExprPlan>,
        schema: SchemaPlan,
    },
    /// Keep rows matching a predicate.
    Filter {
        input: SchemaPlan,
        predicate: ExprPlan,
    },
    /// Incremental GROUP BY, its groups in state table `state`.
    HashAggregate {
        input: SchemaPlan,
        group: Vec<ExprPlan>,
        group_types: TypesPlan,
        calls: Vec<AggregatePlan>,
        schema: SchemaPlan,
        state: StateTableId,
    },
    /// A two-input join, each side's rows in its state table.
    HashJoin(Box<JoinPlan>),
    /// Rows of input 0 compared with the one value of input 1.
    DynamicFilter(Box<DynamicFilterPlan>),
    /// `UNION ALL` of `inputs` inputs.
    Union { inputs: usize, schema: SchemaPlan },
    /// The view's rows, in state table `state`.
    Materialize {
        schema: SchemaPlan,
        state: StateTableId,
    },
    /// A sink: counts what leaves.
    Sink,
}

/// A join, as [`HashJoin::new`] takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinPlan {
    pub kind: JoinKind,
    pub left: JoinSidePlan,
    pub right: JoinSidePlan,
    /// Non-equi condition over left ++ right columns.
    pub residual: Option<ExprPlan>,
    /// Keys compared with `IS NOT DISTINCT FROM`.
    pub null_safe: bool,
    /// `NOT IN` semantics.
    pub null_aware: bool,
    pub schema: SchemaPlan,
    /// Left rows, right rows.
    pub state: [StateTableId; 2],
}

/// A dynamic filter, as [`DynamicFilter::new`] takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynamicFilterPlan {
    /// Rows of input 0 (and of the output).
    pub left: SchemaPlan,
    /// Rows of input 1.
    pub right: SchemaPlan,
    pub left_expr: ExprPlan,
    pub right_expr: ExprPlan,
    pub op: Comparison,
    /// The compared type.
    pub data_type: TypesPlan,
    /// Rows, value.
    pub state: [StateTableId; 2],
}

/// One side of a join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinSidePlan {
    /// Key expressions over the side's rows (same types on both sides).
    pub keys: Vec<ExprPlan>,
    pub schema: SchemaPlan,
    /// How the side stores its rows (plans from before stream keys:
    /// as a multiset).
    #[serde(default)]
    pub rows: JoinRows,
}

/// One aggregate call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatePlan {
    pub function: AggregateFunctionPlan,
    pub args: Vec<ExprPlan>,
    pub filter: Option<ExprPlan>,
    pub display: String,
}

/// Which accumulator an aggregate call uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AggregateFunctionPlan {
    /// A DataFusion aggregate that retracts.
    DataFusion(DataFusionAggregate),
    /// A DataFusion aggregate over an append-only input.
    AppendOnly(DataFusionAggregate),
    /// Weir's MIN / MAX over values of one type.
    MinMax { is_max: bool, data_type: TypesPlan },
    /// Weir's SUM / AVG over floats.
    FloatSum { is_avg: bool },
}

/// A DataFusion aggregate function call, rebuilt by name from the function
/// registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFusionAggregate {
    pub function: String,
    pub name: String,
    pub human_display: Option<String>,
    pub distinct: bool,
    pub ignore_nulls: bool,
    /// The rows its arguments are evaluated over.
    pub input: SchemaPlan,
}

/// A DataFusion physical expression: its protobuf encoding, and how it
/// prints.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ExprPlan {
    pub display: String,
    #[serde(with = "hex_bytes")]
    pub proto: Vec<u8>,
}

/// An Arrow schema (field names, types, nullability, metadata), stored as
/// an Arrow IPC stream header.
#[derive(Clone, PartialEq)]
pub struct SchemaPlan(pub SchemaRef);

/// A list of types, stored as the fields of a schema.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TypesPlan(SchemaPlan);

fn bad_plan(why: impl fmt::Display) -> DataflowError {
    DataflowError::Plan(why.to_string())
}

impl ExprPlan {
    /// Encode `expr`.
    pub fn new(expr: &Arc<dyn PhysicalExpr>) -> Result<Self, DataflowError> {
        let node = serialize_physical_expr(expr, &DefaultPhysicalExtensionCodec {})?;
        Ok(ExprPlan {
            display: expr.to_string(),
            proto: node.encode_to_vec(),
        })
    }

    /// Encode each of `exprs`.
    pub fn all(exprs: &[Arc<dyn PhysicalExpr>]) -> Result<Vec<Self>, DataflowError> {
        exprs.iter().map(ExprPlan::new).collect()
    }

    /// The expression, over rows of `input`, its functions looked up in
    /// `task`'s registry.
    pub fn decode(
        &self,
        input: &Schema,
        task: &TaskContext,
    ) -> Result<Arc<dyn PhysicalExpr>, DataflowError> {
        let node = PhysicalExprNode::decode(self.proto.as_slice()).map_err(bad_plan)?;
        let expr = parse_physical_expr(&node, task, input, &DefaultPhysicalExtensionCodec {})?;
        Ok(checked_arithmetic(expr)?)
    }

    fn decode_all(
        exprs: &[ExprPlan],
        input: &Schema,
        task: &TaskContext,
    ) -> Result<Vec<Arc<dyn PhysicalExpr>>, DataflowError> {
        exprs.iter().map(|e| e.decode(input, task)).collect()
    }
}

impl fmt::Debug for ExprPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// `expr` with integer arithmetic that fails on overflow (SQLSTATE 22003,
/// as in Postgres) instead of wrapping around. The protobuf encoding does
/// not keep the flag, so every decoded expression gets it again.
pub fn checked_arithmetic(
    expr: Arc<dyn PhysicalExpr>,
) -> Result<Arc<dyn PhysicalExpr>, DataFusionError> {
    expr.transform_up(|node| {
        if let Some(b) = node.downcast_ref::<BinaryExpr>() {
            let checked = BinaryExpr::new(Arc::clone(b.left()), *b.op(), Arc::clone(b.right()))
                .with_fail_on_overflow(true);
            return Ok(Transformed::yes(Arc::new(checked) as Arc<dyn PhysicalExpr>));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

impl SchemaPlan {
    fn to_bytes(&self) -> Result<Vec<u8>, DataflowError> {
        let mut buf = Vec::new();
        let mut w = StreamWriter::try_new(&mut buf, &self.0)?;
        w.finish()?;
        drop(w);
        Ok(buf)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, DataflowError> {
        let reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(bad_plan)?;
        Ok(SchemaPlan(reader.schema()))
    }
}

impl From<SchemaRef> for SchemaPlan {
    fn from(schema: SchemaRef) -> Self {
        SchemaPlan(schema)
    }
}

impl From<&SchemaRef> for SchemaPlan {
    fn from(schema: &SchemaRef) -> Self {
        SchemaPlan(Arc::clone(schema))
    }
}

impl fmt::Debug for SchemaPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<String> = self
            .0
            .fields()
            .iter()
            .map(|c| format!("{}: {}", c.name(), c.data_type()))
            .collect();
        write!(f, "({})", fields.join(", "))
    }
}

impl Serialize for SchemaPlan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = self.to_bytes().map_err(serde::ser::Error::custom)?;
        hex_bytes::serialize(&bytes, s)
    }
}

impl<'de> Deserialize<'de> for SchemaPlan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = hex_bytes::deserialize(d)?;
        SchemaPlan::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

impl TypesPlan {
    /// `types`, in order.
    pub fn new(types: &[DataType]) -> Self {
        let fields: Vec<Field> = types
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(i.to_string(), t.clone(), true))
            .collect();
        TypesPlan(SchemaPlan(Arc::new(Schema::new(fields))))
    }

    /// The types, in order.
    pub fn types(&self) -> Vec<DataType> {
        self.0
             .0
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect()
    }
}

impl fmt::Debug for TypesPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.types()).finish()
    }
}

impl DataFusionAggregate {
    /// Describe `agg`, whose arguments are evaluated over `input`.
    pub fn new(agg: &AggregateFunctionExpr, input: &SchemaRef) -> Result<Self, DataflowError> {
        if !agg.order_bys().is_empty() {
            return Err(bad_plan("ORDER BY inside an aggregate"));
        }
        Ok(DataFusionAggregate {
            function: agg.fun().name().to_string(),
            name: agg.name().to_string(),
            human_display: agg.human_display().map(str::to_string),
            distinct: agg.is_distinct(),
            ignore_nulls: agg.ignore_nulls(),
            input: SchemaPlan::from(input),
        })
    }

    fn build(
        &self,
        args: Vec<Arc<dyn PhysicalExpr>>,
        task: &TaskContext,
    ) -> Result<Arc<AggregateFunctionExpr>, DataflowError> {
        let udaf = task.udaf(&self.function)?;
        let mut builder = AggregateExprBuilder::new(udaf, args)
            .schema(Arc::clone(&self.input.0))
            .alias(self.name.clone())
            .with_distinct(self.distinct)
            .with_ignore_nulls(self.ignore_nulls);
        if let Some(d) = &self.human_display {
            builder = builder.human_display(d.clone());
        }
        Ok(Arc::new(builder.build()?))
    }
}

impl AggregatePlan {
    /// Describe `call`, whose arguments are evaluated over `input`.
    pub fn new(call: &AggregateCall, input: &SchemaRef) -> Result<Self, DataflowError> {
        let function = match &call.factory {
            AccumulatorFactory::DataFusion(a) => {
                AggregateFunctionPlan::DataFusion(DataFusionAggregate::new(a, input)?)
            }
            AccumulatorFactory::AppendOnly(a) => {
                AggregateFunctionPlan::AppendOnly(DataFusionAggregate::new(a, input)?)
            }
            AccumulatorFactory::MinMax { is_max, data_type } => AggregateFunctionPlan::MinMax {
                is_max: *is_max,
                data_type: TypesPlan::new(std::slice::from_ref(data_type)),
            },
            AccumulatorFactory::FloatSum { is_avg } => {
                AggregateFunctionPlan::FloatSum { is_avg: *is_avg }
            }
        };
        Ok(AggregatePlan {
            function,
            args: ExprPlan::all(&call.args)?,
            filter: call.filter.as_ref().map(ExprPlan::new).transpose()?,
            display: call.display.clone(),
        })
    }

    fn build(&self, input: &Schema, task: &TaskContext) -> Result<AggregateCall, DataflowError> {
        let args = ExprPlan::decode_all(&self.args, input, task)?;
        let factory = match &self.function {
            AggregateFunctionPlan::DataFusion(a) => {
                AccumulatorFactory::DataFusion(a.build(args.clone(), task)?)
            }
            AggregateFunctionPlan::AppendOnly(a) => {
                AccumulatorFactory::AppendOnly(a.build(args.clone(), task)?)
            }
            AggregateFunctionPlan::MinMax { is_max, data_type } => AccumulatorFactory::MinMax {
                is_max: *is_max,
                data_type: data_type
                    .types()
                    .into_iter()
                    .next()
                    .ok_or_else(|| bad_plan("MIN/MAX without a type"))?,
            },
            AggregateFunctionPlan::FloatSum { is_avg } => {
                AccumulatorFactory::FloatSum { is_avg: *is_avg }
            }
        };
        Ok(AggregateCall {
            factory,
            args,
            filter: self
                .filter
                .as_ref()
                .map(|f| f.decode(input, task))
                .transpose()?,
            display: self.display.clone(),
        })
    }
}

/// What a plan's operators need to become running operators.
pub struct Instantiate<'a> {
    /// Instances of each parallel fragment (clamped to 1..=256).
    pub parallelism: usize,
    /// The function registry expressions are decoded against.
    pub task: &'a TaskContext,
    /// Where state tables are opened.
    pub state: &'a StateContext,
    /// A sink's counters (for [`OperatorPlan::Sink`]).
    pub sink: Option<Arc<SinkCounters>>,
}

impl OperatorPlan {
    /// The state tables it owns.
    pub fn state_tables(&self) -> Vec<StateTableId> {
        match self {
            OperatorPlan::HashAggregate { state, .. } | OperatorPlan::Materialize { state, .. } => {
                vec![*state]
            }
            OperatorPlan::HashJoin(j) => j.state.to_vec(),
            OperatorPlan::DynamicFilter(d) => d.state.to_vec(),
            _ => Vec::new(),
        }
    }

    fn build(
        &self,
        vnodes: VnodeRange,
        cx: &Instantiate<'_>,
    ) -> Result<Box<dyn Operator>, DataflowError> {
        let open = |id: StateTableId| StateTable::with_vnodes(cx.state, id, vnodes);
        let task = cx.task;
        let op: Box<dyn Operator> = match self {
            OperatorPlan::Project {
                input,
                exprs,
                schema,
            } => Box::new(Project::new(
                ExprPlan::decode_all(exprs, &input.0, task)?,
                Arc::clone(&schema.0),
            )),
            OperatorPlan::Filter { input, predicate } => {
                Box::new(Filter::new(predicate.decode(&input.0, task)?))
            }
            OperatorPlan::HashAggregate {
                input,
                group,
                group_types,
                calls,
                schema,
                state,
            } => Box::new(HashAggregate::new(
                ExprPlan::decode_all(group, &input.0, task)?,
                group_types.types(),
                calls
                    .iter()
                    .map(|c| c.build(&input.0, task))
                    .collect::<Result<Vec<_>, _>>()?,
                Arc::clone(&schema.0),
                open(*state),
            )?),
            OperatorPlan::HashJoin(j) => {
                let side = |s: &JoinSidePlan| -> Result<JoinInput, DataflowError> {
                    Ok(JoinInput {
                        keys: ExprPlan::decode_all(&s.keys, &s.schema.0, task)?,
                        schema: Arc::clone(&s.schema.0),
                        rows: s.rows.clone(),
                    })
                };
                let residual = match &j.residual {
                    Some(r) => {
                        let pair = Schema::new(
                            j.left
                                .schema
                                .0
                                .fields()
                                .iter()
                                .chain(j.right.schema.0.fields().iter())
                                .cloned()
                                .collect::<Vec<_>>(),
                        );
                        Some(r.decode(&pair, task)?)
                    }
                    None => None,
                };
                Box::new(HashJoin::new(
                    j.kind,
                    side(&j.left)?,
                    side(&j.right)?,
                    residual,
                    j.null_safe,
                    j.null_aware,
                    Arc::clone(&j.schema.0),
                    [open(j.state[0]), open(j.state[1])],
                )?)
            }
            OperatorPlan::DynamicFilter(d) => Box::new(DynamicFilter::new(
                d.left_expr.decode(&d.left.0, task)?,
                d.right_expr.decode(&d.right.0, task)?,
                d.op,
                d.data_type
                    .types()
                    .into_iter()
                    .next()
                    .ok_or_else(|| bad_plan("a dynamic filter without a type"))?,
                Arc::clone(&d.left.0),
                Arc::clone(&d.right.0),
                [open(d.state[0]), open(d.state[1])],
            )?),
            OperatorPlan::Union { inputs, schema } => {
                Box::new(Union::new(*inputs, Arc::clone(&schema.0)))
            }
            OperatorPlan::Materialize { schema, state } => Box::new(Materialize::new(
                Arc::clone(&schema.0),
                StateTable::with_vnodes(cx.state, *state, VnodeRange::FULL),
            )?),
            OperatorPlan::Sink => {
                Box::new(Blackhole::new(cx.sink.clone().ok_or_else(|| {
                    bad_plan("a sink plan instantiated without its counters")
                })?))
            }
        };
        Ok(op)
    }
}

impl DataflowPlan {
    /// The distinct relations it reads, in input order.
    pub fn relations(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for i in &self.inputs {
            if !out.contains(&i.relation) {
                out.push(i.relation.clone());
            }
        }
        out
    }

    /// The plan as JSON.
    pub fn to_json(&self) -> Result<String, DataflowError> {
        serde_json::to_string(self).map_err(bad_plan)
    }

    /// A plan stored by [`DataflowPlan::to_json`].
    pub fn from_json(json: &str) -> Result<Self, DataflowError> {
        serde_json::from_str(json).map_err(bad_plan)
    }

    /// Make the running operators: one chain per instance of each fragment.
    /// A single fragment whose only input merges the output of a fragment
    /// that runs one instance, and feeds nothing else, is chained onto it
    /// (one task instead of two).
    pub fn instantiate(&self, cx: &Instantiate<'_>) -> Result<Vec<Fragment>, DataflowError> {
        let parallelism = cx.parallelism.clamp(1, MAX_PARALLELISM);
        let width = |d: Distribution| match d {
            Distribution::Single => 1,
            Distribution::Parallel => parallelism,
        };
        // How many fragments read each fragment's output.
        let mut readers = vec![0usize; self.fragments.len()];
        for f in &self.fragments {
            for i in &f.inputs {
                if let InputPlan::Fragment { from, .. } = i {
                    if let Some(r) = readers.get_mut(*from) {
                        *r += 1;
                    }
                }
            }
        }
        let mut out: Vec<Fragment> = Vec::with_capacity(self.fragments.len());
        // Plan fragment index -> index in `out`.
        let mut placed: Vec<usize> = Vec::with_capacity(self.fragments.len());
        for (index, plan) in self.fragments.iter().enumerate() {
            let n = width(plan.distribution);
            let mut instances = Vec::with_capacity(n);
            for i in 0..n {
                let vnodes = VnodeRange::of_instance(i, n);
                instances.push(
                    plan.operators
                        .iter()
                        .map(|op| op.build(vnodes, cx))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            if let [InputPlan::Fragment {
                from,
                exchange: ExchangePlan::Merge,
            }] = plan.inputs.as_slice()
            {
                let upstream = *placed
                    .get(*from)
                    .ok_or_else(|| bad_plan("a fragment reads a later one"))?;
                if n == 1 && readers[*from] == 1 && out[upstream].instances.len() == 1 {
                    let ops = instances.into_iter().flatten();
                    out[upstream].instances[0].extend(ops);
                    placed.push(upstream);
                    continue;
                }
            }
            let mut inputs = Vec::with_capacity(plan.inputs.len());
            for input in &plan.inputs {
                inputs.push(match input {
                    InputPlan::External(n) => {
                        if *n >= self.inputs.len() {
                            return Err(bad_plan("a fragment reads a missing input"));
                        }
                        FragmentInput::External(*n)
                    }
                    InputPlan::Fragment { from, exchange } => FragmentInput::Fragment {
                        from: *placed
                            .get(*from)
                            .ok_or_else(|| bad_plan("a fragment reads a later one"))?,
                        exchange: match exchange {
                            ExchangePlan::Merge => Exchange::Single,
                            ExchangePlan::Hash { keys, types, input } => {
                                Exchange::Hash(HashKey::new(
                                    ExprPlan::decode_all(keys, &input.0, cx.task)?,
                                    &types.types(),
                                )?)
                            }
                        },
                    },
                });
            }
            debug_assert_eq!(placed.len(), index);
            placed.push(out.len());
            out.push(Fragment { inputs, instances });
        }
        Ok(out)
    }
}

impl fmt::Display for DataflowPlan {
    /// One line per fragment and per operator, from the inputs up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, frag) in self.fragments.iter().enumerate() {
            let inputs: Vec<String> = frag
                .inputs
                .iter()
                .map(|i| match i {
                    InputPlan::External(x) => match self.inputs.get(*x) {
                        Some(p) if p.split => format!("source {} (split)", p.relation),
                        Some(p) => format!("relation {}", p.relation),
                        None => format!("input {x}"),
                    },
                    InputPlan::Fragment { from, exchange } => match exchange {
                        ExchangePlan::Merge => format!("fragment {from} (merge)"),
                        ExchangePlan::Hash { keys, .. } => {
                            let keys: Vec<&str> = keys.iter().map(|k| k.display.as_str()).collect();
                            format!("fragment {from} (hash {})", keys.join(", "))
                        }
                    },
                })
                .collect();
            writeln!(
                f,
                "fragment {n} ({:?}) <- {}",
                frag.distribution,
                inputs.join(", ")
            )?;
            for op in &frag.operators {
                writeln!(f, "  {}", op.describe())?;
            }
        }
        Ok(())
    }
}

impl OperatorPlan {
    /// One line: the operator, its expressions and state tables.
    pub fn describe(&self) -> String {
        let list = |e: &[ExprPlan]| {
            e.iter()
                .map(|x| x.display.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            OperatorPlan::Project { exprs, .. } => format!("Project [{}]", list(exprs)),
            OperatorPlan::Filter { predicate, .. } => format!("Filter {}", predicate.display),
            OperatorPlan::HashAggregate {
                group,
                calls,
                state,
                ..
            } => {
                let calls: Vec<&str> = calls.iter().map(|c| c.display.as_str()).collect();
                format!(
                    "HashAggregate group=[{}] aggregates=[{}] state={state}",
                    list(group),
                    calls.join(", ")
                )
            }
            OperatorPlan::HashJoin(j) => format!(
                "HashJoin {:?} left=[{}] ({}) right=[{}] ({}){}{} state={},{}",
                j.kind,
                list(&j.left.keys),
                j.left.rows.describe(),
                list(&j.right.keys),
                j.right.rows.describe(),
                j.residual
                    .as_ref()
                    .map(|r| format!(" residual={}", r.display))
                    .unwrap_or_default(),
                if j.null_aware { " null-aware" } else { "" },
                j.state[0],
                j.state[1]
            ),
            OperatorPlan::DynamicFilter(d) => format!(
                "DynamicFilter {} {:?} {} state={},{}",
                d.left_expr.display, d.op, d.right_expr.display, d.state[0], d.state[1]
            ),
            OperatorPlan::Union { inputs, .. } => format!("Union inputs={inputs}"),
            OperatorPlan::Materialize { state, .. } => format!("Materialize state={state}"),
            OperatorPlan::Sink => "Sink".to_string(),
        }
    }
}

/// Bytes as a lower-case hex string.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd-length hex string"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("bad hex digit"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
    use weir_common::datafusion::common::DFSchema;
    use weir_common::datafusion::functions::string::expr_fn::upper;
    use weir_common::datafusion::functions_aggregate::sum::sum_udaf;
    use weir_common::datafusion::logical_expr::{col, lit};
    use weir_common::datafusion::physical_expr::expressions::Column;
    use weir_common::datafusion::prelude::SessionContext;
    use weir_state::MemoryStateStore;

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]))
    }

    /// `SELECT upper(b), sum(a + 1) FROM t WHERE a > 0 GROUP BY upper(b)`,
    /// planned by hand.
    fn plan(ctx: &SessionContext) -> DataflowPlan {
        let schema = input();
        let df = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let physical = |e| checked_arithmetic(ctx.create_physical_expr(e, &df).unwrap()).unwrap();
        let plus_one = physical(col("a") + lit(1i64));
        let key = physical(upper(col("b")));
        let keep = physical(col("a").gt(lit(0i64)));
        let projected = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let out = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("s", DataType::Int64, true),
        ]));
        let v: Arc<dyn PhysicalExpr> = Arc::new(Column::new("v", 1));
        let k: Arc<dyn PhysicalExpr> = Arc::new(Column::new("k", 0));
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![Arc::clone(&v)])
            .schema(Arc::clone(&projected))
            .alias("sum(v)")
            .build()
            .unwrap();
        let call = AggregateCall {
            factory: AccumulatorFactory::DataFusion(Arc::new(sum)),
            args: vec![v],
            filter: None,
            display: "sum(v)".into(),
        };
        DataflowPlan {
            inputs: vec![PlanInput {
                relation: "t".into(),
                split: false,
            }],
            fragments: vec![
                FragmentPlan {
                    inputs: vec![InputPlan::External(0)],
                    distribution: Distribution::Single,
                    operators: vec![
                        OperatorPlan::Filter {
                            input: SchemaPlan::from(&schema),
                            predicate: ExprPlan::new(&keep).unwrap(),
                        },
                        OperatorPlan::Project {
                            input: SchemaPlan::from(&schema),
                            exprs: ExprPlan::all(&[key, plus_one]).unwrap(),
                            schema: SchemaPlan::from(&projected),
                        },
                    ],
                },
                FragmentPlan {
                    inputs: vec![InputPlan::Fragment {
                        from: 0,
                        exchange: ExchangePlan::Hash {
                            keys: ExprPlan::all(std::slice::from_ref(&k)).unwrap(),
                            types: TypesPlan::new(&[DataType::Utf8]),
                            input: SchemaPlan::from(&projected),
                        },
                    }],
                    distribution: Distribution::Parallel,
                    operators: vec![OperatorPlan::HashAggregate {
                        input: SchemaPlan::from(&projected),
                        group: ExprPlan::all(&[k]).unwrap(),
                        group_types: TypesPlan::new(&[DataType::Utf8]),
                        calls: vec![AggregatePlan::new(&call, &projected).unwrap()],
                        schema: SchemaPlan::from(&out),
                        state: 11,
                    }],
                },
                FragmentPlan {
                    inputs: vec![InputPlan::Fragment {
                        from: 1,
                        exchange: ExchangePlan::Merge,
                    }],
                    distribution: Distribution::Single,
                    operators: vec![OperatorPlan::Materialize {
                        schema: SchemaPlan::from(&out),
                        state: 10,
                    }],
                },
            ],
            schema: SchemaPlan::from(&out),
            state_tables: vec![10, 11],
        }
    }

    #[test]
    fn round_trips_through_json() {
        let ctx = SessionContext::new();
        let plan = plan(&ctx);
        let json = plan.to_json().unwrap();
        let back = DataflowPlan::from_json(&json).unwrap();
        assert_eq!(back, plan);
        assert_eq!(back.to_string(), plan.to_string());
        let text = plan.to_string();
        assert!(
            text.contains("fragment 1 (Parallel) <- fragment 0 (hash k@0)"),
            "{text}"
        );
        assert!(
            text.contains("HashAggregate group=[k@0] aggregates=[sum(v)] state=11"),
            "{text}"
        );
        assert_eq!(back.relations(), vec!["t".to_string()]);
    }

    #[test]
    fn damaged_plans_are_errors() {
        for bad in ["", "{", "{\"inputs\": 3}"] {
            assert!(matches!(
                DataflowPlan::from_json(bad),
                Err(DataflowError::Plan(_))
            ));
        }
        let ctx = SessionContext::new();
        let mut plan = plan(&ctx);
        if let OperatorPlan::Filter { predicate, .. } = &mut plan.fragments[0].operators[0] {
            predicate.proto = vec![0xff, 0xff, 0xff];
        }
        let store: weir_state::StateStoreRef = Arc::new(MemoryStateStore::new());
        let state = StateContext::in_memory(store);
        let task = ctx.task_ctx();
        let cx = Instantiate {
            parallelism: 1,
            task: &task,
            state: &state,
            sink: None,
        };
        assert!(matches!(plan.instantiate(&cx), Err(DataflowError::Plan(_))));
    }

    #[test]
    fn decoded_expressions_evaluate_as_planned() {
        let ctx = SessionContext::new();
        let task = ctx.task_ctx();
        let schema = input();
        let df = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(i64::MAX)])),
                Arc::new(StringArray::from(vec![Some("x"), Some("y"), None])),
            ],
        )
        .unwrap();
        let upper_b = ExprPlan::new(&ctx.create_physical_expr(upper(col("b")), &df).unwrap())
            .unwrap()
            .decode(&schema, &task)
            .unwrap();
        let got = upper_b.evaluate(&batch).unwrap().into_array(3).unwrap();
        let got = got.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(got.value(0), "X");
        assert!(got.is_null(2));
        // Overflow is an error after a round trip too.
        let plus_one = ExprPlan::new(&ctx.create_physical_expr(col("a") + lit(1i64), &df).unwrap())
            .unwrap()
            .decode(&schema, &task)
            .unwrap();
        assert!(plus_one.evaluate(&batch).is_err());
    }

    #[test]
    fn instantiates_at_any_parallelism() {
        let ctx = SessionContext::new();
        let plan = DataflowPlan::from_json(&plan(&ctx).to_json().unwrap()).unwrap();
        let store: weir_state::StateStoreRef = Arc::new(MemoryStateStore::new());
        let state = StateContext::in_memory(store);
        let task = ctx.task_ctx();
        let build = |parallelism| {
            plan.instantiate(&Instantiate {
                parallelism,
                task: &task,
                state: &state,
                sink: None,
            })
            .unwrap()
        };
        // Three fragments at parallelism 3: the aggregate runs 3 times.
        let three = build(3);
        let widths: Vec<usize> = three.iter().map(Fragment::parallelism).collect();
        assert_eq!(widths, vec![1, 3, 1]);
        // At parallelism 1 the view's output chains onto the aggregate.
        let one = build(1);
        let widths: Vec<usize> = one.iter().map(Fragment::parallelism).collect();
        assert_eq!(widths, vec![1, 1]);
        let ops: Vec<String> = one[1].instances[0].iter().map(|o| o.explain()).collect();
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert!(ops[1].starts_with("Materialize"), "{ops:?}");
    }
}
