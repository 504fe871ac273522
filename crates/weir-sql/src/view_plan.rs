//! From a `CREATE MATERIALIZED VIEW` query to a pipeline of incremental
//! operators.
//!
//! DataFusion plans and optimizes the query; [`translate`] walks the optimized
//! `LogicalPlan` bottom-up and emits one operator spec per node:
//!
//! | LogicalPlan node      | operator                         |
//! |-----------------------|----------------------------------|
//! | TableScan             | source (subscription) + Project  |
//! | Projection            | Project                          |
//! | Filter                | Filter                           |
//! | Aggregate / Distinct  | HashAggregate                    |
//! | SubqueryAlias, Sort   | nothing (views are unordered)    |
//!
//! Anything else is refused with SQLSTATE 0A000 naming the construct.

use std::sync::Arc;

use weir_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_common::datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use weir_common::datafusion::common::DFSchema;
use weir_common::datafusion::common::TableReference;
use weir_common::datafusion::execution::context::SessionState;
use weir_common::datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use weir_common::datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, LogicalPlan, Volatility,
};
use weir_common::datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use weir_common::datafusion::physical_expr::execution_props::ExecutionProps;
use weir_common::datafusion::physical_expr::{create_physical_expr, PhysicalExpr};
use weir_common::datafusion::sql::parser::Statement as DfStatement;
use weir_common::datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement};
use weir_common::vnode::{VnodeRange, MAX_PARALLELISM};
use weir_dataflow::blackhole::{Blackhole, SinkCounters};
use weir_dataflow::exchange::HashKey;
use weir_dataflow::filter::Filter;
use weir_dataflow::hash_aggregate::{AccumulatorFactory, AggregateCall, HashAggregate};
use weir_dataflow::materialize::Materialize;
use weir_dataflow::project::Project;
use weir_dataflow::runtime::{Exchange, Fragment};
use weir_dataflow::Operator;
use weir_state::{StateTable, StateTableId};

use crate::naming::output_names;
use crate::SqlError;

/// One step of a view's pipeline, before state tables are assigned.
pub enum OperatorSpec {
    /// Compute expressions.
    Project {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    /// Keep rows matching a predicate.
    Filter { predicate: Arc<dyn PhysicalExpr> },
    /// Incremental GROUP BY.
    Aggregate {
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        group_types: Vec<DataType>,
        calls: Vec<AggregateCall>,
        /// For each call, the factory to use instead when the input is
        /// append-only (MIN/MAX without a multiset of values).
        append_only: Vec<Option<AccumulatorFactory>>,
        schema: SchemaRef,
    },
}

/// A view, planned: where its input comes from and what it computes.
pub struct ViewPlan {
    /// The relation (table or view) the pipeline subscribes to.
    pub source: TableReference,
    /// Operators in order, from the source to the view's output.
    pub operators: Vec<OperatorSpec>,
    /// The view's columns, named as Postgres would name them.
    pub schema: SchemaRef,
    /// The source only ever inserts (a connector source): the first
    /// aggregate may use accumulators that cannot retract.
    pub append_only_input: bool,
    /// The input is a connector source, read by one reader per instance.
    pub split_input: bool,
}

/// Where a view's state tables come from: `allocate` hands out a fresh
/// table id per stateful operator (the first for the view's own output),
/// `open` opens the part of a table one instance owns.
pub trait StateTables {
    /// A new state table id.
    fn allocate(&mut self) -> Result<StateTableId, SqlError>;
    /// Table `id`, written by an instance owning `vnodes`.
    fn open(&self, id: StateTableId, vnodes: VnodeRange) -> StateTable;
}

/// A pipeline under construction: finished fragments and the one being
/// chained onto.
struct Builder {
    done: Vec<Fragment>,
    current: Fragment,
}

impl Builder {
    /// Append an operator to every instance of the current fragment.
    fn chain(&mut self, mut make: impl FnMut() -> Box<dyn Operator>) {
        for ops in &mut self.current.instances {
            ops.push(make());
        }
    }

    /// Start a fragment of `instances`, fed by `exchange`.
    fn start(&mut self, exchange: Exchange, instances: Vec<Vec<Box<dyn Operator>>>) {
        let prev = std::mem::replace(
            &mut self.current,
            Fragment {
                exchange,
                instances,
            },
        );
        self.done.push(prev);
    }

    /// Chain `op` onto a single instance: onto the current fragment if it
    /// has one, else into a new fragment all instances merge into.
    fn chain_single(&mut self, op: Box<dyn Operator>) {
        match self.current.instances.as_mut_slice() {
            [ops] => ops.push(op),
            _ => self.start(Exchange::Single, vec![vec![op]]),
        }
    }

    fn finish(mut self) -> Vec<Fragment> {
        self.done.push(self.current);
        self.done
    }
}

impl ViewPlan {
    /// Instantiate the dataflow, ending with the view's `Materialize`:
    /// fragments of chained operators, each stateful keyed operator run as
    /// `parallelism` instances behind a hash exchange on its key.
    pub fn build(
        self,
        parallelism: usize,
        tables: &mut dyn StateTables,
    ) -> Result<Vec<Fragment>, SqlError> {
        let materialize_state = tables.allocate()?;
        let schema = Arc::clone(&self.schema);
        let mut builder = self.build_operators(parallelism, tables)?;
        let state = tables.open(materialize_state, VnodeRange::FULL);
        builder.chain_single(Box::new(
            Materialize::new(schema, state).map_err(|e| SqlError::Weir(e.into()))?,
        ));
        Ok(builder.finish())
    }

    /// Instantiate the dataflow of a sink, ending with a `Blackhole`
    /// counting into `counters`. The first state table allocated is the
    /// sink's own (kept empty), as for a view.
    pub fn build_sink(
        self,
        parallelism: usize,
        tables: &mut dyn StateTables,
        counters: Arc<SinkCounters>,
    ) -> Result<Vec<Fragment>, SqlError> {
        let _own = tables.allocate()?;
        let mut builder = self.build_operators(parallelism, tables)?;
        builder.chain_single(Box::new(Blackhole::new(counters)));
        Ok(builder.finish())
    }

    fn build_operators(
        self,
        parallelism: usize,
        tables: &mut dyn StateTables,
    ) -> Result<Builder, SqlError> {
        let parallelism = parallelism.clamp(1, MAX_PARALLELISM);
        // A source is read by one reader per instance: the operators up to
        // the first exchange run once per reader. A table's changes arrive
        // on one channel.
        let readers = if self.split_input { parallelism } else { 1 };
        let mut builder = Builder {
            done: Vec::new(),
            current: Fragment {
                exchange: Exchange::Single,
                instances: (0..readers).map(|_| Vec::new()).collect(),
            },
        };
        // Projections and filters keep a stream append-only; an
        // aggregate's output is not.
        let mut append_only = self.append_only_input;
        for spec in self.operators {
            match spec {
                OperatorSpec::Project { exprs, schema } => {
                    builder.chain(|| Box::new(Project::new(exprs.clone(), Arc::clone(&schema))))
                }
                OperatorSpec::Filter { predicate } => {
                    builder.chain(|| Box::new(Filter::new(Arc::clone(&predicate))))
                }
                OperatorSpec::Aggregate {
                    group_exprs,
                    group_types,
                    mut calls,
                    append_only: alternatives,
                    schema,
                } => {
                    if std::mem::take(&mut append_only) {
                        for (call, alt) in calls.iter_mut().zip(alternatives) {
                            if let Some(f) = alt {
                                call.factory = f;
                            }
                        }
                    }
                    let id = tables.allocate()?;
                    // A global aggregate has one group: one instance.
                    let n = if group_exprs.is_empty() {
                        1
                    } else {
                        parallelism
                    };
                    let mut instances = Vec::with_capacity(n);
                    for i in 0..n {
                        let state = tables.open(id, VnodeRange::of_instance(i, n));
                        let agg = HashAggregate::new(
                            group_exprs.clone(),
                            group_types.clone(),
                            calls.clone(),
                            Arc::clone(&schema),
                            state,
                        )
                        .map_err(|e| SqlError::Weir(e.into()))?;
                        instances.push(vec![Box::new(agg) as Box<dyn Operator>]);
                    }
                    if n == 1 {
                        // Nothing to distribute: chain it.
                        for op in instances.into_iter().flatten() {
                            builder.chain_single(op);
                        }
                    } else {
                        let key = HashKey::new(group_exprs, &group_types)
                            .map_err(|e| SqlError::Weir(e.into()))?;
                        builder.start(Exchange::Hash(key), instances);
                    }
                }
            }
        }
        Ok(builder)
    }
}

/// EXPLAIN lines for a built dataflow, from the output down to `source`:
/// each operator (with its instance count when above one) and each
/// exchange between fragments.
pub fn explain_fragments(fragments: &[Fragment], source: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut depth = 0;
    let push = |lines: &mut Vec<String>, depth: &mut usize, text: String| {
        lines.push(format!("{}{}", "  ".repeat(*depth), text));
        *depth += 1;
    };
    for (f, frag) in fragments.iter().enumerate().rev() {
        let n = frag.parallelism();
        if let Some(ops) = frag.instances.first() {
            for op in ops.iter().rev() {
                let text = if n > 1 {
                    format!("{} (parallelism {n})", op.explain())
                } else {
                    op.explain()
                };
                push(&mut lines, &mut depth, text);
            }
        }
        if f > 0 {
            let from = fragments[f - 1].parallelism();
            let text = match &frag.exchange {
                Exchange::Hash(key) => {
                    format!("Exchange hash({}): {from} -> {n} instances", key.display())
                }
                Exchange::Single => format!("Exchange merge: {from} -> {n} instances"),
            };
            push(&mut lines, &mut depth, text);
        }
    }
    push(&mut lines, &mut depth, format!("Source {source}"));
    lines
}

/// Plan `query` as a materialized view.
pub async fn plan_view(state: &SessionState, query: &Query) -> Result<ViewPlan, SqlError> {
    let statement = DfStatement::Statement(Box::new(SqlStatement::Query(Box::new(query.clone()))));
    let plan = state.statement_to_plan(statement).await?;
    check_supported(&plan)?;
    let names = output_names(&plan);
    let optimized = state.optimize(&plan)?;
    let mut operators = Vec::new();
    // The optimizer may prove the input empty (`WHERE false`) and drop the
    // scan; the view still follows its table, for the epochs.
    let source = match translate(&optimized, &mut operators)? {
        Some(s) => s,
        None => first_scan(&plan).ok_or_else(|| {
            SqlError::Unsupported(
                "materialized views do not support queries without a FROM table".into(),
            )
        })?,
    };
    let arrow_schema = optimized.schema().as_arrow();
    if names.len() != arrow_schema.fields().len() {
        return Err(SqlError::Weir(weir_common::Error::internal(
            "view column names do not match its plan",
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut fields = Vec::with_capacity(names.len());
    for (name, field) in names.iter().zip(arrow_schema.fields()) {
        if !seen.insert(name.clone()) {
            return Err(SqlError::Weir(weir_common::Error::new(
                weir_common::SqlState::DUPLICATE_COLUMN,
                format!("column \"{name}\" specified more than once"),
            )));
        }
        let column = Field::new(name, field.data_type().clone(), true);
        // A column passed through keeps its declared type (varchar(n)).
        fields.push(match weir_common::char_type::CharType::of(field) {
            Some(t) => t.attach(column),
            None => column,
        });
    }
    Ok(ViewPlan {
        source,
        operators,
        schema: Arc::new(Schema::new(fields)),
        append_only_input: false,
        split_input: false,
    })
}

/// Refuse what views cannot maintain, before the optimizer rewrites it away
/// (it would fold `now()` into a constant, for example).
fn check_supported(plan: &LogicalPlan) -> Result<(), SqlError> {
    let mut problem: Option<String> = None;
    plan.apply(|node| {
        let unsupported = match node {
            LogicalPlan::Limit(_) => Some("LIMIT (and ORDER BY ... LIMIT)"),
            LogicalPlan::Window(_) => Some("window functions"),
            LogicalPlan::Join(_) => Some("joins"),
            LogicalPlan::Union(_) => Some("UNION"),
            LogicalPlan::RecursiveQuery(_) => Some("recursive queries"),
            LogicalPlan::Unnest(_) => Some("UNNEST"),
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
                Some("queries without a FROM table")
            }
            _ => None,
        };
        if let Some(u) = unsupported {
            problem = Some(u.to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                match e {
                    Expr::ScalarFunction(f)
                        if f.func.signature().volatility != Volatility::Immutable =>
                    {
                        problem = Some(format!(
                            "non-deterministic functions such as {}()",
                            f.func.name()
                        ));
                        return Ok(TreeNodeRecursion::Stop);
                    }
                    Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::SetComparison(_) => {
                        problem = Some("subqueries".into());
                        return Ok(TreeNodeRecursion::Stop);
                    }
                    Expr::AggregateFunction(a) if !a.params.order_by.is_empty() => {
                        problem = Some("ORDER BY inside an aggregate".into());
                        return Ok(TreeNodeRecursion::Stop);
                    }
                    _ => {}
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        if problem.is_some() {
            Ok(TreeNodeRecursion::Stop)
        } else {
            Ok(TreeNodeRecursion::Continue)
        }
    })?;
    match problem {
        Some(p) => Err(SqlError::Unsupported(format!(
            "materialized views do not support {p}"
        ))),
        None => Ok(()),
    }
}

/// The physical form of `expr`, with integer arithmetic that fails on
/// overflow (SQLSTATE 22003, as in Postgres) instead of wrapping around.
fn physical(expr: &Expr, input: &DFSchema) -> Result<Arc<dyn PhysicalExpr>, SqlError> {
    let e = create_physical_expr(
        expr,
        input,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )?;
    Ok(checked_arithmetic(e)?)
}

fn checked_arithmetic(
    e: Arc<dyn PhysicalExpr>,
) -> Result<Arc<dyn PhysicalExpr>, weir_common::datafusion::error::DataFusionError> {
    use weir_common::datafusion::common::tree_node::Transformed;
    use weir_common::datafusion::physical_expr::expressions::BinaryExpr;
    e.transform_up(|node| {
        if let Some(b) = node.downcast_ref::<BinaryExpr>() {
            let checked = BinaryExpr::new(Arc::clone(b.left()), *b.op(), Arc::clone(b.right()))
                .with_fail_on_overflow(true);
            return Ok(Transformed::yes(Arc::new(checked) as Arc<dyn PhysicalExpr>));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

/// The first table the plan scans.
fn first_scan(plan: &LogicalPlan) -> Option<TableReference> {
    let mut found = None;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            found = Some(scan.table_name.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Append the operators computing `plan` to `ops`; returns the source, or
/// `None` when the plan reads no table (its input is provably empty).
fn translate(
    plan: &LogicalPlan,
    ops: &mut Vec<OperatorSpec>,
) -> Result<Option<TableReference>, SqlError> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            if scan.fetch.is_some() {
                return Err(SqlError::Unsupported(
                    "LIMIT in a materialized view is not supported".into(),
                ));
            }
            let full_schema = scan.source.schema();
            if let Some(projection) = &scan.projection {
                let is_identity = projection.len() == full_schema.fields().len()
                    && projection.iter().enumerate().all(|(i, p)| i == *p);
                if !is_identity {
                    let exprs = projection
                        .iter()
                        .map(|i| {
                            Ok(Arc::new(
                                weir_common::datafusion::physical_expr::expressions::Column::new(
                                    full_schema.field(*i).name(),
                                    *i,
                                ),
                            ) as Arc<dyn PhysicalExpr>)
                        })
                        .collect::<Result<Vec<_>, SqlError>>()?;
                    ops.push(OperatorSpec::Project {
                        exprs,
                        schema: Arc::new(scan.projected_schema.as_arrow().clone()),
                    });
                }
            }
            for f in &scan.filters {
                ops.push(OperatorSpec::Filter {
                    predicate: physical(f, &scan.projected_schema)?,
                });
            }
            Ok(Some(scan.table_name.clone()))
        }
        LogicalPlan::EmptyRelation(e) if !e.produce_one_row => {
            // Nothing ever passes: the operators above see only barriers.
            ops.push(OperatorSpec::Filter {
                predicate: Arc::new(
                    weir_common::datafusion::physical_expr::expressions::Literal::new(
                        weir_common::datafusion::common::ScalarValue::Boolean(Some(false)),
                    ),
                ),
            });
            Ok(None)
        }
        LogicalPlan::Projection(p) => {
            let source = translate(&p.input, ops)?;
            let exprs = p
                .expr
                .iter()
                .map(|e| physical(e, p.input.schema()))
                .collect::<Result<Vec<_>, _>>()?;
            ops.push(OperatorSpec::Project {
                exprs,
                schema: Arc::new(p.schema.as_arrow().clone()),
            });
            Ok(source)
        }
        LogicalPlan::Filter(f) => {
            let source = translate(&f.input, ops)?;
            ops.push(OperatorSpec::Filter {
                predicate: physical(&f.predicate, f.input.schema())?,
            });
            Ok(source)
        }
        LogicalPlan::Aggregate(a) => {
            let source = translate(&a.input, ops)?;
            ops.push(aggregate_spec(a)?);
            Ok(source)
        }
        LogicalPlan::SubqueryAlias(s) => translate(&s.input, ops),
        // A view is a multiset: ORDER BY without LIMIT has nothing to keep.
        LogicalPlan::Sort(s) if s.fetch.is_none() => translate(&s.input, ops),
        other => Err(SqlError::Unsupported(format!(
            "{} in a materialized view is not supported",
            node_name(other)
        ))),
    }
}

fn node_name(plan: &LogicalPlan) -> String {
    let display = plan.display().to_string();
    display
        .split(':')
        .next()
        .unwrap_or("this query")
        .trim()
        .to_string()
}

fn aggregate_spec(a: &Aggregate) -> Result<OperatorSpec, SqlError> {
    let input_schema = a.input.schema();
    let arrow_input = Arc::new(input_schema.as_arrow().clone());
    let mut group_exprs = Vec::with_capacity(a.group_expr.len());
    let mut group_types = Vec::with_capacity(a.group_expr.len());
    for g in &a.group_expr {
        if matches!(g, Expr::GroupingSet(_)) {
            return Err(SqlError::Unsupported(
                "GROUPING SETS, ROLLUP and CUBE in a materialized view are not supported".into(),
            ));
        }
        group_exprs.push(physical(g, input_schema)?);
        group_types.push(g.get_type(input_schema)?);
    }
    let props = ExecutionProps::new();
    let planning = PhysicalPlanningContext::default();
    let mut calls = Vec::with_capacity(a.aggr_expr.len());
    let mut append_only = Vec::with_capacity(a.aggr_expr.len());
    for e in &a.aggr_expr {
        let lowered =
            LoweredAggregateBuilder::new(e, input_schema, &arrow_input, &props, &planning)
                .build()?;
        let agg = lowered.aggregate;
        let fname = agg.fun().name().to_ascii_lowercase();
        let args = agg.expressions();
        let display = agg.name().to_string();
        let float_arg = args.len() == 1
            && matches!(
                args[0].data_type(&arrow_input)?,
                DataType::Float64 | DataType::Float32 | DataType::Float16
            );
        let call = if (fname == "sum" || fname == "avg") && float_arg && !agg.is_distinct() {
            AggregateCall {
                factory: AccumulatorFactory::FloatSum {
                    is_avg: fname == "avg",
                },
                args,
                filter: lowered.filter,
                display,
            }
        } else if (fname == "min" || fname == "max") && args.len() == 1 {
            append_only.push(Some(AccumulatorFactory::AppendOnly(Arc::clone(&agg))));
            let data_type = agg.field().data_type().clone();
            AggregateCall {
                factory: AccumulatorFactory::MinMax {
                    is_max: fname == "max",
                    data_type,
                },
                args,
                filter: lowered.filter,
                display,
            }
        } else {
            let probe = agg.create_sliding_accumulator()?;
            if !probe.supports_retract_batch() {
                return Err(SqlError::Unsupported(format!(
                    "aggregate {}{} in a materialized view is not supported (it cannot handle deletes)",
                    fname,
                    if agg.is_distinct() { " (DISTINCT)" } else { "" }
                )));
            }
            AggregateCall {
                factory: AccumulatorFactory::DataFusion(Arc::clone(&agg)),
                args,
                filter: lowered.filter,
                display,
            }
        };
        if append_only.len() < calls.len() + 1 {
            append_only.push(None);
        }
        calls.push(call);
    }
    Ok(OperatorSpec::Aggregate {
        append_only,
        group_exprs,
        group_types,
        calls,
        schema: Arc::new(a.schema.as_arrow().clone()),
    })
}
