//! From a `CREATE MATERIALIZED VIEW` query to a dataflow graph of
//! incremental operators.
//!
//! DataFusion plans and optimizes the query (decorrelation turns EXISTS,
//! IN and scalar subqueries into joins; INTERSECT and EXCEPT become semi
//! and anti joins); the translator walks the optimized `LogicalPlan` and
//! builds a [`PlanNode`] tree:
//!
//! | LogicalPlan node      | operator                         |
//! |-----------------------|----------------------------------|
//! | TableScan             | an input (subscription) + Project|
//! | Projection            | Project                          |
//! | Filter                | Filter                           |
//! | Aggregate / Distinct  | HashAggregate                    |
//! | Join                  | HashJoin (every join type)       |
//! | x > (SELECT max ...)  | DynamicFilter                    |
//! | Union                 | Union                            |
//! | SubqueryAlias, Sort   | nothing (views are unordered)    |
//!
//! [`ViewPlan::dataflow`] turns the tree into a [`DataflowPlan`], the
//! physical plan as data: fragments of operator descriptions, a hash
//! exchange on the key in front of every parallel aggregate and join,
//! fan-in at joins and unions, state table ids assigned. The catalog stores
//! it; `weir-dataflow` instantiates it. Anything else is refused with
//! SQLSTATE 0A000 naming the construct.

use std::sync::Arc;

use weir_common::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_common::datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use weir_common::datafusion::common::DFSchema;
use weir_common::datafusion::common::TableReference;
use weir_common::datafusion::common::{JoinType, NullEquality};
use weir_common::datafusion::execution::context::SessionState;
use weir_common::datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use weir_common::datafusion::logical_expr::{
    Aggregate, Cast, Expr, ExprSchemable, Join, LogicalPlan, Operator, Subquery, Volatility,
};
use weir_common::datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use weir_common::datafusion::physical_expr::execution_props::ExecutionProps;
use weir_common::datafusion::physical_expr::{create_physical_expr, PhysicalExpr};
use weir_common::datafusion::sql::parser::Statement as DfStatement;
use weir_common::datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement};
use weir_dataflow::dynamic_filter::Comparison;
use weir_dataflow::hash_aggregate::{AccumulatorFactory, AggregateCall};
use weir_dataflow::hash_join::{JoinKind, JoinRows};
use weir_dataflow::plan::{
    checked_arithmetic, AggregatePlan, DataflowPlan, Distribution, DynamicFilterPlan, ExchangePlan,
    ExprPlan, FragmentPlan, InputPlan, JoinPlan, JoinSidePlan, OperatorPlan, PlanInput, SchemaPlan,
    TypesPlan,
};
use weir_dataflow::runtime::{Exchange, Fragment, FragmentInput};
use weir_state::StateTableId;

use crate::naming::output_names;
use crate::SqlError;

/// A view's query as a tree of incremental operators, before state tables
/// are assigned.
pub enum PlanNode {
    /// The changes of the view's input `n` ([`ViewPlan::inputs`]), rows
    /// of `schema`.
    Input { n: usize, schema: SchemaRef },
    /// Compute expressions.
    Project {
        input: Box<PlanNode>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    /// Keep rows matching a predicate.
    Filter {
        input: Box<PlanNode>,
        predicate: Arc<dyn PhysicalExpr>,
    },
    /// Incremental GROUP BY.
    Aggregate {
        input: Box<PlanNode>,
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        group_types: Vec<DataType>,
        calls: Vec<AggregateCall>,
        /// For each call, the factory to use instead when the input is
        /// append-only (MIN/MAX without a multiset of values).
        append_only: Vec<Option<AccumulatorFactory>>,
        schema: SchemaRef,
    },
    /// A two-input join.
    Join(Box<JoinNode>),
    /// Rows of `left` compared with the one value of `right`.
    DynamicFilter(Box<DynamicFilterNode>),
    /// `UNION ALL` of several inputs.
    Union {
        inputs: Vec<PlanNode>,
        schema: SchemaRef,
    },
}

/// A join, planned.
pub struct JoinNode {
    pub left: PlanNode,
    pub right: PlanNode,
    pub kind: JoinKind,
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub key_types: Vec<DataType>,
    /// Non-equi condition over left ++ right columns.
    pub residual: Option<Arc<dyn PhysicalExpr>>,
    /// Keys compared with `IS NOT DISTINCT FROM`.
    pub null_safe: bool,
    /// `NOT IN` semantics.
    pub null_aware: bool,
    pub left_schema: SchemaRef,
    pub right_schema: SchemaRef,
    pub schema: SchemaRef,
}

/// `WHERE x <op> (SELECT <one value> ...)`, planned.
pub struct DynamicFilterNode {
    pub left: PlanNode,
    pub right: PlanNode,
    /// `x`, over the left rows.
    pub left_expr: Arc<dyn PhysicalExpr>,
    /// The value, over the right row, of `x`'s type.
    pub right_expr: Arc<dyn PhysicalExpr>,
    pub op: Comparison,
    pub data_type: DataType,
    pub left_schema: SchemaRef,
    pub right_schema: SchemaRef,
}

/// One relation a view reads. A relation read twice (a self-join) is two
/// inputs, each with its own subscription.
#[derive(Debug, Clone)]
pub struct ViewInput {
    /// The table, view or source.
    pub relation: TableReference,
    /// It only ever inserts (a connector source): aggregates over it may
    /// use accumulators that cannot retract.
    pub append_only: bool,
    /// It is a connector source, read by one reader per instance.
    pub split: bool,
    /// Its stream key: the columns of its primary key, if it has one.
    pub key: Option<Vec<usize>>,
}

/// A view, planned: the relations it reads and what it computes.
pub struct ViewPlan {
    /// The relations it reads, numbered as [`PlanNode::Input`] numbers them.
    pub inputs: Vec<ViewInput>,
    /// The computation, from the inputs to the view's output.
    pub root: PlanNode,
    /// The view's columns, named as Postgres would name them.
    pub schema: SchemaRef,
}

/// Where a view's state tables come from: a fresh table id per stateful
/// operator (the first for the view's own output).
pub trait StateTables {
    /// A new state table id.
    fn allocate(&mut self) -> Result<StateTableId, SqlError>;
}

/// A dataflow plan under construction: fragments in topological order.
struct Builder<'a> {
    fragments: Vec<FragmentPlan>,
    tables: &'a mut dyn StateTables,
    state_tables: Vec<StateTableId>,
}

fn weir(e: impl Into<weir_common::Error>) -> SqlError {
    SqlError::Weir(e.into())
}

/// What [`Builder::node`] built: the fragment producing the node's rows,
/// whether they only ever insert, and their columns.
struct Built {
    fragment: usize,
    append_only: bool,
    schema: SchemaRef,
    /// The stream key: columns that identify a row among the rows
    /// present (`None`: rows are a multiset).
    key: Option<Vec<usize>>,
}

/// The stream key after a projection: where each key column lands, if
/// every one is projected as a plain column.
fn project_key(key: Option<&[usize]>, exprs: &[Arc<dyn PhysicalExpr>]) -> Option<Vec<usize>> {
    key?.iter()
        .map(|&k| {
            exprs.iter().position(|e| {
                e.downcast_ref::<weir_common::datafusion::physical_expr::expressions::Column>()
                    .is_some_and(|c| c.index() == k)
            })
        })
        .collect()
}

/// How a join side with stream key `key` stores its rows.
fn join_rows(built: &Built, null_aware: bool) -> JoinRows {
    match &built.key {
        _ if null_aware => JoinRows::Multiset,
        _ if built.append_only => JoinRows::AppendOnly,
        Some(k) if !k.is_empty() => JoinRows::Keyed(k.clone()),
        _ => JoinRows::Multiset,
    }
}

impl Builder<'_> {
    fn allocate(&mut self) -> Result<StateTableId, SqlError> {
        let id = self.tables.allocate()?;
        self.state_tables.push(id);
        Ok(id)
    }

    /// Append an operator to fragment `f`.
    fn chain(&mut self, f: usize, op: OperatorPlan) {
        self.fragments[f].operators.push(op);
    }

    /// A new fragment reading `inputs`; returns its index.
    fn start(&mut self, inputs: Vec<InputPlan>, distribution: Distribution) -> usize {
        self.fragments.push(FragmentPlan {
            inputs,
            distribution,
            operators: Vec::new(),
        });
        self.fragments.len() - 1
    }

    /// Chain `op` onto one instance: onto fragment `f` if it is single,
    /// else into a new single fragment all of `f`'s instances merge into.
    fn chain_single(&mut self, f: usize, op: OperatorPlan) -> usize {
        let f = match self.fragments[f].distribution {
            Distribution::Single => f,
            Distribution::Parallel => self.start(
                vec![InputPlan::Fragment {
                    from: f,
                    exchange: ExchangePlan::Merge,
                }],
                Distribution::Single,
            ),
        };
        self.chain(f, op);
        f
    }

    /// Build `node`.
    fn node(&mut self, node: PlanNode, inputs: &[ViewInput]) -> Result<Built, SqlError> {
        match node {
            PlanNode::Input { n, schema } => {
                let input = inputs.get(n).ok_or_else(|| {
                    weir(weir_common::Error::internal("plan reads a missing input"))
                })?;
                // A source is read by one reader per instance: the operators
                // up to the first exchange run once per reader.
                let distribution = if input.split {
                    Distribution::Parallel
                } else {
                    Distribution::Single
                };
                let fragment = self.start(vec![InputPlan::External(n)], distribution);
                Ok(Built {
                    fragment,
                    append_only: input.append_only,
                    schema,
                    key: input.key.clone(),
                })
            }
            PlanNode::Project {
                input,
                exprs,
                schema,
            } => {
                let built = self.node(*input, inputs)?;
                self.chain(
                    built.fragment,
                    OperatorPlan::Project {
                        input: SchemaPlan::from(&built.schema),
                        exprs: ExprPlan::all(&exprs).map_err(weir)?,
                        schema: SchemaPlan::from(&schema),
                    },
                );
                let key = project_key(built.key.as_deref(), &exprs);
                Ok(Built {
                    schema,
                    key,
                    ..built
                })
            }
            PlanNode::Filter { input, predicate } => {
                let built = self.node(*input, inputs)?;
                self.chain(
                    built.fragment,
                    OperatorPlan::Filter {
                        input: SchemaPlan::from(&built.schema),
                        predicate: ExprPlan::new(&predicate).map_err(weir)?,
                    },
                );
                Ok(built)
            }
            PlanNode::Aggregate {
                input,
                group_exprs,
                group_types,
                mut calls,
                append_only: alternatives,
                schema,
            } => {
                let built = self.node(*input, inputs)?;
                if built.append_only {
                    for (call, alt) in calls.iter_mut().zip(alternatives) {
                        if let Some(a) = alt {
                            call.factory = a;
                        }
                    }
                }
                let state = self.allocate()?;
                let input_schema = SchemaPlan::from(&built.schema);
                let op = OperatorPlan::HashAggregate {
                    input: input_schema.clone(),
                    group: ExprPlan::all(&group_exprs).map_err(weir)?,
                    group_types: TypesPlan::new(&group_types),
                    calls: calls
                        .iter()
                        .map(|c| AggregatePlan::new(c, &built.schema))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(weir)?,
                    schema: SchemaPlan::from(&schema),
                    state,
                };
                // A global aggregate has one group: one instance.
                let fragment = if group_exprs.is_empty() {
                    self.chain_single(built.fragment, op)
                } else {
                    let f = self.start(
                        vec![InputPlan::Fragment {
                            from: built.fragment,
                            exchange: ExchangePlan::Hash {
                                keys: ExprPlan::all(&group_exprs).map_err(weir)?,
                                types: TypesPlan::new(&group_types),
                                input: input_schema,
                            },
                        }],
                        Distribution::Parallel,
                    );
                    self.chain(f, op);
                    f
                };
                let key = Some((0..group_exprs.len()).collect());
                Ok(Built {
                    fragment,
                    append_only: false,
                    schema,
                    key,
                })
            }
            PlanNode::Join(join) => {
                let JoinNode {
                    left,
                    right,
                    kind,
                    left_keys,
                    right_keys,
                    key_types,
                    residual,
                    null_safe,
                    null_aware,
                    left_schema,
                    right_schema,
                    schema,
                } = *join;
                let l = self.node(left, inputs)?;
                let r = self.node(right, inputs)?;
                let state = [self.allocate()?, self.allocate()?];
                // Without equality keys every row has the same key: one
                // instance; so for NOT IN, whose NULL rule is global.
                let single = left_keys.is_empty() || null_aware;
                let exchange = |keys: &[Arc<dyn PhysicalExpr>],
                                input: &SchemaRef|
                 -> Result<ExchangePlan, SqlError> {
                    Ok(if single {
                        ExchangePlan::Merge
                    } else {
                        ExchangePlan::Hash {
                            keys: ExprPlan::all(keys).map_err(weir)?,
                            types: TypesPlan::new(&key_types),
                            input: SchemaPlan::from(input),
                        }
                    })
                };
                let wiring = vec![
                    InputPlan::Fragment {
                        from: l.fragment,
                        exchange: exchange(&left_keys, &l.schema)?,
                    },
                    InputPlan::Fragment {
                        from: r.fragment,
                        exchange: exchange(&right_keys, &r.schema)?,
                    },
                ];
                let f = self.start(
                    wiring,
                    if single {
                        Distribution::Single
                    } else {
                        Distribution::Parallel
                    },
                );
                let plan = JoinPlan {
                    kind,
                    left: JoinSidePlan {
                        keys: ExprPlan::all(&left_keys).map_err(weir)?,
                        schema: SchemaPlan::from(&left_schema),
                        rows: join_rows(&l, null_aware),
                    },
                    right: JoinSidePlan {
                        keys: ExprPlan::all(&right_keys).map_err(weir)?,
                        schema: SchemaPlan::from(&right_schema),
                        rows: join_rows(&r, null_aware),
                    },
                    residual: residual
                        .as_ref()
                        .map(ExprPlan::new)
                        .transpose()
                        .map_err(weir)?,
                    null_safe,
                    null_aware,
                    schema: SchemaPlan::from(&schema),
                    state,
                };
                self.chain(f, OperatorPlan::HashJoin(Box::new(plan)));
                // Matches only ever arrive: pairs and semi-join rows are
                // never retracted when both inputs only insert.
                let append_only = matches!(
                    kind,
                    JoinKind::Inner | JoinKind::LeftSemi | JoinKind::RightSemi
                ) && l.append_only
                    && r.append_only;
                // A pair is identified by both rows; a semi or anti
                // result by its own row. NULL-padded rows could share a
                // pair's key (a NULL group key): outer joins have none.
                let width = l.schema.fields().len();
                let key = match kind {
                    JoinKind::Inner => l.key.as_ref().zip(r.key.as_ref()).map(|(lk, rk)| {
                        lk.iter()
                            .copied()
                            .chain(rk.iter().map(|k| k + width))
                            .collect()
                    }),
                    JoinKind::LeftSemi | JoinKind::LeftAnti => l.key.clone(),
                    JoinKind::RightSemi | JoinKind::RightAnti => r.key.clone(),
                    JoinKind::Left | JoinKind::Right | JoinKind::Full => None,
                };
                Ok(Built {
                    fragment: f,
                    append_only,
                    schema,
                    key,
                })
            }
            PlanNode::DynamicFilter(d) => {
                let DynamicFilterNode {
                    left,
                    right,
                    left_expr,
                    right_expr,
                    op,
                    data_type,
                    left_schema,
                    right_schema,
                } = *d;
                let l = self.node(left, inputs)?;
                let r = self.node(right, inputs)?;
                let state = [self.allocate()?, self.allocate()?];
                // The comparison is global: one instance.
                let f = self.start(
                    vec![
                        InputPlan::Fragment {
                            from: l.fragment,
                            exchange: ExchangePlan::Merge,
                        },
                        InputPlan::Fragment {
                            from: r.fragment,
                            exchange: ExchangePlan::Merge,
                        },
                    ],
                    Distribution::Single,
                );
                let plan = DynamicFilterPlan {
                    left: SchemaPlan::from(&left_schema),
                    right: SchemaPlan::from(&right_schema),
                    left_expr: ExprPlan::new(&left_expr).map_err(weir)?,
                    right_expr: ExprPlan::new(&right_expr).map_err(weir)?,
                    op,
                    data_type: TypesPlan::new(std::slice::from_ref(&data_type)),
                    state,
                };
                self.chain(f, OperatorPlan::DynamicFilter(Box::new(plan)));
                Ok(Built {
                    fragment: f,
                    append_only: false,
                    schema: left_schema,
                    key: l.key,
                })
            }
            PlanNode::Union {
                inputs: branches,
                schema,
            } => {
                let count = branches.len();
                let mut wiring = Vec::with_capacity(count);
                let mut append_only = true;
                for b in branches {
                    let built = self.node(b, inputs)?;
                    append_only &= built.append_only;
                    wiring.push(InputPlan::Fragment {
                        from: built.fragment,
                        exchange: ExchangePlan::Merge,
                    });
                }
                let f = self.start(wiring, Distribution::Single);
                self.chain(
                    f,
                    OperatorPlan::Union {
                        inputs: count,
                        schema: SchemaPlan::from(&schema),
                    },
                );
                Ok(Built {
                    fragment: f,
                    append_only,
                    schema,
                    key: None,
                })
            }
        }
    }
}

impl ViewPlan {
    /// The dataflow plan of a view: its operators, ending with the view's
    /// `Materialize` (a sink's with a `Sink`), each stateful keyed operator
    /// in a parallel fragment behind a hash exchange on its key. State
    /// table ids come from `tables`, the output's first.
    pub fn dataflow(
        self,
        sink: bool,
        tables: &mut dyn StateTables,
    ) -> Result<DataflowPlan, SqlError> {
        let mut builder = Builder {
            fragments: Vec::new(),
            tables,
            state_tables: Vec::new(),
        };
        let own = builder.allocate()?;
        let root = builder.node(self.root, &self.inputs)?;
        let output = if sink {
            OperatorPlan::Sink
        } else {
            OperatorPlan::Materialize {
                schema: SchemaPlan::from(&self.schema),
                state: own,
            }
        };
        builder.chain_single(root.fragment, output);
        Ok(DataflowPlan {
            inputs: self
                .inputs
                .iter()
                .map(|i| PlanInput {
                    relation: i.relation.table().to_string(),
                    split: i.split,
                })
                .collect(),
            fragments: builder.fragments,
            schema: SchemaPlan::from(&self.schema),
            state_tables: builder.state_tables,
        })
    }

    /// The distinct relations the view reads, in input order.
    pub fn relations(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for i in &self.inputs {
            let name = i.relation.table().to_string();
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    /// Give each input the stream key `key_of` names (a table's primary
    /// key columns).
    pub fn mark_keys(&mut self, mut key_of: impl FnMut(&str) -> Option<Vec<usize>>) {
        for i in &mut self.inputs {
            i.key = key_of(i.relation.table());
        }
    }

    /// Mark each input append-only and split (a connector source) where
    /// `is_source` says so.
    pub fn mark_sources(&mut self, mut is_source: impl FnMut(&str) -> bool) {
        for i in &mut self.inputs {
            let source = is_source(i.relation.table());
            i.append_only = source;
            i.split = source;
        }
    }
}

/// EXPLAIN lines for a built dataflow graph, from the output down to its
/// inputs (`inputs[n]` names external input `n`): each operator (with its
/// instance count when above one) and each exchange between fragments.
pub fn explain_fragments(fragments: &[Fragment], inputs: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    if !fragments.is_empty() {
        explain_fragment(fragments, fragments.len() - 1, inputs, 0, &mut lines);
    }
    lines
}

fn explain_fragment(
    fragments: &[Fragment],
    f: usize,
    inputs: &[String],
    mut depth: usize,
    lines: &mut Vec<String>,
) {
    let push = |lines: &mut Vec<String>, depth: usize, text: String| {
        lines.push(format!("{}{}", "  ".repeat(depth), text));
    };
    let frag = &fragments[f];
    let n = frag.parallelism();
    if let Some(ops) = frag.instances.first() {
        for op in ops.iter().rev() {
            let text = if n > 1 {
                format!("{} (parallelism {n})", op.explain())
            } else {
                op.explain()
            };
            push(lines, depth, text);
            depth += 1;
        }
    }
    for input in &frag.inputs {
        match input {
            FragmentInput::External(i) => {
                let name = inputs.get(*i).map(String::as_str).unwrap_or("?");
                push(lines, depth, format!("Source {name}"));
            }
            FragmentInput::Fragment { from, exchange } => {
                let width = fragments.get(*from).map_or(1, Fragment::parallelism);
                let text = match exchange {
                    Exchange::Hash(key) => {
                        format!("Exchange hash({}): {width} -> {n} instances", key.display())
                    }
                    Exchange::Single => format!("Exchange merge: {width} -> {n} instances"),
                };
                push(lines, depth, text);
                explain_fragment(fragments, *from, inputs, depth + 1, lines);
            }
        }
    }
}

/// Plan `query` as a materialized view.
pub async fn plan_view(state: &SessionState, query: &Query) -> Result<ViewPlan, SqlError> {
    refuse_set_all(query)?;
    let statement = DfStatement::Statement(Box::new(SqlStatement::Query(Box::new(query.clone()))));
    let plan = state.statement_to_plan(statement).await?;
    check_supported(&plan)?;
    let names = output_names(&plan);
    let optimized = lift_scalar_subqueries(state.optimize(&plan)?)?;
    let mut translator = Translator {
        inputs: Vec::new(),
        fallback: first_scan(&plan),
    };
    let root = translator.translate(&optimized)?;
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
        inputs: translator
            .inputs
            .into_iter()
            .map(|relation| ViewInput {
                relation,
                append_only: false,
                split: false,
                key: None,
            })
            .collect(),
        root,
        schema: Arc::new(Schema::new(fields)),
    })
}

/// `INTERSECT ALL` and `EXCEPT ALL` keep multiplicities (min(m, n) and
/// max(m - n, 0) copies); DataFusion plans them as plain semi and anti
/// joins, which do not, so a view refuses them.
fn refuse_set_all(query: &Query) -> Result<(), SqlError> {
    use std::ops::ControlFlow;
    use weir_common::datafusion::sql::sqlparser::ast::{
        SetExpr, SetOperator, SetQuantifier, Visit, Visitor,
    };
    fn check(body: &SetExpr) -> Option<String> {
        match body {
            SetExpr::SetOperation {
                op,
                set_quantifier,
                left,
                right,
            } => {
                if matches!(op, SetOperator::Intersect | SetOperator::Except)
                    && matches!(set_quantifier, SetQuantifier::All)
                {
                    return Some(format!("materialized views do not support {op} ALL"));
                }
                check(left).or_else(|| check(right))
            }
            SetExpr::Query(q) => check(&q.body),
            _ => None,
        }
    }
    /// Every query of the statement: the top one, derived tables, subqueries.
    struct Queries;
    impl Visitor for Queries {
        type Break = String;
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<String> {
            match check(&q.body) {
                Some(m) => ControlFlow::Break(m),
                None => ControlFlow::Continue(()),
            }
        }
    }
    match query.visit(&mut Queries) {
        ControlFlow::Break(m) => Err(SqlError::Unsupported(m)),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// DataFusion leaves uncorrelated scalar subqueries (`WHERE price > (SELECT
/// max(price) FROM ...)`, `HAVING count(*) >= (SELECT ...)`) in place, to
/// be run once by the executor. A view must follow the subquery's result
/// as it changes, so each becomes an input of its own: the node using it
/// reads its input LEFT JOINed (without keys) to the subquery's one row,
/// and the subquery expression becomes a column of that row (NULL when the
/// subquery has no row; a subquery with several rows repeats the outer
/// rows, where Postgres reports an error).
fn lift_scalar_subqueries(plan: LogicalPlan) -> Result<LogicalPlan, SqlError> {
    use weir_common::datafusion::common::tree_node::Transformed;
    use weir_common::datafusion::common::Column;
    use weir_common::datafusion::logical_expr::LogicalPlanBuilder;
    let mut counter = 0usize;
    let lifted = plan.transform_up(|node| {
        let uses_one = |e: &Expr| {
            e.exists(|x| {
                Ok(matches!(x, Expr::ScalarSubquery(sq) if sq.outer_ref_columns.is_empty()))
            })
        };
        // `x <op> (one-row subquery)` among a filter's conjuncts, the other
        // conjuncts free of subqueries: a dynamic filter, the other
        // conjuncts applied below it.
        if let LogicalPlan::Filter(f) = &node {
            if let Some(plan) = dynamic_filter_candidate(f, &mut counter)? {
                return Ok(Transformed::yes(plan));
            }
        }
        let (input, exprs) = match &node {
            LogicalPlan::Filter(f) if uses_one(&f.predicate)? => {
                (Arc::clone(&f.input), vec![f.predicate.clone()])
            }
            LogicalPlan::Projection(p)
                if p.expr
                    .iter()
                    .map(uses_one)
                    .collect::<Result<Vec<_>, _>>()?
                    .contains(&true) =>
            {
                (Arc::clone(&p.input), p.expr.clone())
            }
            _ => return Ok(Transformed::no(node)),
        };
        let mut subqueries = Vec::new();
        let exprs = exprs
            .into_iter()
            .map(|e| {
                e.transform_up(|x| match x {
                    Expr::ScalarSubquery(sq) if sq.outer_ref_columns.is_empty() => {
                        counter += 1;
                        let alias = format!("__weir_scalar_{counter}");
                        let field = sq.subquery.schema().field(0).name().clone();
                        subqueries.push((alias.clone(), sq.subquery));
                        Ok(Transformed::yes(Expr::Column(Column::new(
                            Some(TableReference::bare(alias)),
                            field,
                        ))))
                    }
                    other => Ok(Transformed::no(other)),
                })
                .map(|t| t.data)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = LogicalPlanBuilder::from(input.as_ref().clone());
        for (alias, sub) in subqueries {
            let right = LogicalPlanBuilder::from(sub.as_ref().clone())
                .alias(alias)?
                .build()?;
            // DataFusion wants a condition: TRUE (the translator drops it).
            let always = Expr::Literal(
                weir_common::datafusion::common::ScalarValue::Boolean(Some(true)),
                None,
            );
            builder = builder.join_on(right, JoinType::Left, [always])?;
        }
        let rebuilt = match node {
            LogicalPlan::Filter(_) => {
                let keep: Vec<Expr> = input
                    .schema()
                    .columns()
                    .into_iter()
                    .map(Expr::Column)
                    .collect();
                let predicate = exprs.into_iter().next().unwrap_or(Expr::Literal(
                    weir_common::datafusion::common::ScalarValue::Boolean(Some(true)),
                    None,
                ));
                builder.filter(predicate)?.project(keep)?.build()?
            }
            _ => builder.project(exprs)?.build()?,
        };
        Ok(Transformed::yes(rebuilt))
    })?;
    Ok(lifted.data)
}

/// The prefix of the alias marking a scalar subquery lifted for a
/// [`PlanNode::DynamicFilter`].
const DYNAMIC_ALIAS: &str = "__weir_dynamic_";

/// The comparison a dynamic filter can keep.
fn comparison(op: &Operator) -> Option<Comparison> {
    Some(match op {
        Operator::Lt => Comparison::Lt,
        Operator::LtEq => Comparison::LtEq,
        Operator::Gt => Comparison::Gt,
        Operator::GtEq => Comparison::GtEq,
        Operator::Eq => Comparison::Eq,
        _ => return None,
    })
}

/// The one scalar subquery of `e` when `e` is a value computed from it
/// alone (no columns of the outer query, no other subquery) and it is
/// uncorrelated and yields at most one row: an aggregate without GROUP
/// BY, under projections, filters and aliases.
fn value_subquery(e: &Expr) -> Option<&Subquery> {
    let mut found = Vec::new();
    let mut other = false;
    e.apply(|x| {
        match x {
            Expr::ScalarSubquery(sq) => found.push(sq),
            Expr::Exists(_) | Expr::InSubquery(_) | Expr::SetComparison(_) => other = true,
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    let [sq] = found.as_slice() else {
        return None;
    };
    if other || !sq.outer_ref_columns.is_empty() || !e.column_refs().is_empty() {
        return None;
    }
    let mut plan = sq.subquery.as_ref();
    loop {
        plan = match plan {
            LogicalPlan::Projection(p) => &p.input,
            LogicalPlan::SubqueryAlias(a) => &a.input,
            LogicalPlan::Filter(f) => &f.input,
            LogicalPlan::Aggregate(a) if a.group_expr.is_empty() => return Some(sq),
            _ => return None,
        };
    }
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|x| {
        Ok(matches!(
            x,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// `f` rewritten for a dynamic filter when one of its conjuncts compares a
/// subquery-free expression with a one-row subquery and no other conjunct
/// has a subquery: the input, filtered by the other conjuncts, LEFT JOINed
/// (no keys) to the subquery aliased `__weir_dynamic_N`, filtered by the
/// comparison, projected back to the input's columns. The translator
/// recognises the shape by the alias.
fn dynamic_filter_candidate(
    f: &weir_common::datafusion::logical_expr::Filter,
    counter: &mut usize,
) -> Result<Option<LogicalPlan>, weir_common::datafusion::error::DataFusionError> {
    use weir_common::datafusion::common::Column;
    use weir_common::datafusion::logical_expr::utils::{conjunction, split_conjunction};
    use weir_common::datafusion::logical_expr::{BinaryExpr, LogicalPlanBuilder};
    let conjuncts = split_conjunction(&f.predicate);
    let mut chosen = None;
    for (i, c) in conjuncts.iter().enumerate() {
        if !has_subquery(c) {
            continue;
        }
        if chosen.is_some() {
            return Ok(None);
        }
        let Expr::BinaryExpr(b) = c else {
            return Ok(None);
        };
        if comparison(&b.op).is_none() {
            return Ok(None);
        }
        let found = match (value_subquery(&b.left), value_subquery(&b.right)) {
            (None, Some(sq)) if !has_subquery(&b.left) => (sq, false),
            (Some(sq), None) if !has_subquery(&b.right) => (sq, true),
            _ => return Ok(None),
        };
        chosen = Some((i, b, found));
    }
    let Some((i, b, (sq, subquery_left))) = chosen else {
        return Ok(None);
    };
    *counter += 1;
    let alias = format!("{DYNAMIC_ALIAS}{counter}");
    let field = sq.subquery.schema().field(0).name().clone();
    let column = Expr::Column(Column::new(
        Some(TableReference::bare(alias.clone())),
        field,
    ));
    // The subquery side, its casts kept, now reading the lifted column.
    let replace = |e: &Expr| -> Result<Expr, weir_common::datafusion::error::DataFusionError> {
        Ok(e.clone()
            .transform_up(|x| match x {
                Expr::ScalarSubquery(_) => Ok(
                    weir_common::datafusion::common::tree_node::Transformed::yes(column.clone()),
                ),
                other => Ok(weir_common::datafusion::common::tree_node::Transformed::no(
                    other,
                )),
            })?
            .data)
    };
    let (left, right) = if subquery_left {
        (replace(&b.left)?, (*b.right).clone())
    } else {
        ((*b.left).clone(), replace(&b.right)?)
    };
    let compare = Expr::BinaryExpr(BinaryExpr::new(Box::new(left), b.op, Box::new(right)));
    let others: Vec<Expr> = conjuncts
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, c)| (*c).clone())
        .collect();
    let keep: Vec<Expr> = f
        .input
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let mut builder = LogicalPlanBuilder::from(f.input.as_ref().clone());
    if let Some(rest) = conjunction(others) {
        builder = builder.filter(rest)?;
    }
    let right = LogicalPlanBuilder::from(sq.subquery.as_ref().clone())
        .alias(alias)?
        .build()?;
    let always = Expr::Literal(
        weir_common::datafusion::common::ScalarValue::Boolean(Some(true)),
        None,
    );
    let plan = builder
        .join_on(right, JoinType::Left, [always])?
        .filter(compare)?
        .project(keep)?
        .build()?;
    Ok(Some(plan))
}

/// Refuse what views cannot maintain, before the optimizer rewrites it away
/// (it would fold `now()` into a constant, for example).
fn check_supported(plan: &LogicalPlan) -> Result<(), SqlError> {
    let mut problem: Option<String> = None;
    plan.apply(|node| {
        let unsupported = match node {
            LogicalPlan::Limit(_) => Some("LIMIT (and ORDER BY ... LIMIT)"),
            LogicalPlan::Window(_) => Some("window functions"),
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
                    Expr::SetComparison(_) => {
                        problem = Some("ANY / ALL over a subquery".into());
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
    // A subquery the optimizer could not turn into a join.
    let mut subquery = false;
    expr.apply(|e| {
        subquery = matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::SetComparison(_)
                | Expr::OuterReferenceColumn(..)
        );
        Ok(if subquery {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    if subquery {
        return Err(SqlError::Unsupported(
            "this form of subquery in a materialized view is not supported (it could not be turned into a join)".into(),
        ));
    }
    let e = create_physical_expr(
        expr,
        input,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )?;
    Ok(checked_arithmetic(e)?)
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

/// Translates an optimized `LogicalPlan` into a [`PlanNode`] tree,
/// numbering the relations it scans.
struct Translator {
    inputs: Vec<TableReference>,
    /// The relation an empty plan (`WHERE false`) still follows, for the
    /// epochs.
    fallback: Option<TableReference>,
}

impl Translator {
    fn input(&mut self, relation: TableReference, schema: SchemaRef) -> PlanNode {
        self.inputs.push(relation);
        PlanNode::Input {
            n: self.inputs.len() - 1,
            schema,
        }
    }

    fn translate(&mut self, plan: &LogicalPlan) -> Result<PlanNode, SqlError> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                if scan.fetch.is_some() {
                    return Err(SqlError::Unsupported(
                        "LIMIT in a materialized view is not supported".into(),
                    ));
                }
                let full_schema = scan.source.schema();
                let mut node = self.input(scan.table_name.clone(), Arc::clone(&full_schema));
                if let Some(projection) = &scan.projection {
                    let is_identity = projection.len() == full_schema.fields().len()
                        && projection.iter().enumerate().all(|(i, p)| i == *p);
                    if !is_identity {
                        let exprs = projection
                            .iter()
                            .map(|i| {
                                Arc::new(
                                    weir_common::datafusion::physical_expr::expressions::Column::new(
                                        full_schema.field(*i).name(),
                                        *i,
                                    ),
                                ) as Arc<dyn PhysicalExpr>
                            })
                            .collect();
                        node = PlanNode::Project {
                            input: Box::new(node),
                            exprs,
                            schema: Arc::new(scan.projected_schema.as_arrow().clone()),
                        };
                    }
                }
                for f in &scan.filters {
                    node = PlanNode::Filter {
                        input: Box::new(node),
                        predicate: physical(f, &scan.projected_schema)?,
                    };
                }
                Ok(node)
            }
            LogicalPlan::EmptyRelation(e) if !e.produce_one_row => {
                // Nothing ever passes: the operators above see only
                // barriers, from the relation the query named.
                let relation = self.fallback.clone().ok_or_else(|| {
                    SqlError::Unsupported(
                        "materialized views do not support queries without a FROM table".into(),
                    )
                })?;
                let input = self.input(relation, Arc::new(e.schema.as_arrow().clone()));
                Ok(PlanNode::Filter {
                    input: Box::new(input),
                    predicate: Arc::new(
                        weir_common::datafusion::physical_expr::expressions::Literal::new(
                            weir_common::datafusion::common::ScalarValue::Boolean(Some(false)),
                        ),
                    ),
                })
            }
            LogicalPlan::Projection(p) => {
                let input = self.translate(&p.input)?;
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| physical(e, p.input.schema()))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(PlanNode::Project {
                    input: Box::new(input),
                    exprs,
                    schema: Arc::new(p.schema.as_arrow().clone()),
                })
            }
            LogicalPlan::Filter(f) => {
                if let Some(node) = self.dynamic_filter(f)? {
                    return Ok(node);
                }
                let input = self.translate(&f.input)?;
                Ok(PlanNode::Filter {
                    input: Box::new(input),
                    predicate: physical(&f.predicate, f.input.schema())?,
                })
            }
            LogicalPlan::Aggregate(a) => {
                let input = self.translate(&a.input)?;
                aggregate_node(a, input)
            }
            LogicalPlan::Join(j) => self.join(j),
            LogicalPlan::Union(u) => {
                let inputs = u
                    .inputs
                    .iter()
                    .map(|i| self.translate(i))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(PlanNode::Union {
                    inputs,
                    schema: nullable(u.schema.as_arrow()),
                })
            }
            LogicalPlan::SubqueryAlias(s) => self.translate(&s.input),
            // A view is a multiset: ORDER BY without LIMIT has nothing to keep.
            LogicalPlan::Sort(s) if s.fetch.is_none() => self.translate(&s.input),
            LogicalPlan::Subquery(_) => Err(SqlError::Unsupported(
                "this form of subquery in a materialized view is not supported".into(),
            )),
            other => Err(SqlError::Unsupported(format!(
                "{} in a materialized view is not supported",
                node_name(other)
            ))),
        }
    }

    /// A filter marked by [`dynamic_filter_candidate`]: `x <op> v` over
    /// the input LEFT JOINed to a one-row subquery aliased
    /// `__weir_dynamic_N`.
    fn dynamic_filter(
        &mut self,
        f: &weir_common::datafusion::logical_expr::Filter,
    ) -> Result<Option<PlanNode>, SqlError> {
        let LogicalPlan::Join(j) = f.input.as_ref() else {
            return Ok(None);
        };
        let LogicalPlan::SubqueryAlias(alias) = j.right.as_ref() else {
            return Ok(None);
        };
        if !alias.alias.table().starts_with(DYNAMIC_ALIAS) || j.join_type != JoinType::Left {
            return Ok(None);
        }
        let Expr::BinaryExpr(b) = &f.predicate else {
            return Ok(None);
        };
        let Some(op) = comparison(&b.op) else {
            return Ok(None);
        };
        let left_schema = j.left.schema();
        let right_schema = j.right.schema();
        let over =
            |e: &Expr, schema: &DFSchema| e.column_refs().iter().all(|c| schema.has_column(c));
        let (row_side, value_side, op) =
            if over(&b.left, left_schema) && over(&b.right, right_schema) {
                (&b.left, &b.right, op)
            } else if over(&b.right, left_schema) && over(&b.left, right_schema) {
                (&b.right, &b.left, op.flip())
            } else {
                return Ok(None);
            };
        let data_type = row_side.get_type(left_schema)?;
        let value_side = if value_side.get_type(right_schema)? == data_type {
            value_side.as_ref().clone()
        } else {
            Expr::Cast(Cast::new(value_side.clone(), data_type.clone()))
        };
        let left_expr = physical(row_side, left_schema)?;
        let right_expr = physical(&value_side, right_schema)?;
        let left = self.translate(&j.left)?;
        let right = self.translate(&j.right)?;
        Ok(Some(PlanNode::DynamicFilter(Box::new(DynamicFilterNode {
            left,
            right,
            left_expr,
            right_expr,
            op,
            data_type,
            left_schema: nullable(left_schema.as_arrow()),
            right_schema: nullable(right_schema.as_arrow()),
        }))))
    }

    fn join(&mut self, j: &Join) -> Result<PlanNode, SqlError> {
        let kind =
            match j.join_type {
                JoinType::Inner => JoinKind::Inner,
                JoinType::Left => JoinKind::Left,
                JoinType::Right => JoinKind::Right,
                JoinType::Full => JoinKind::Full,
                JoinType::LeftSemi => JoinKind::LeftSemi,
                JoinType::LeftAnti => JoinKind::LeftAnti,
                JoinType::RightSemi => JoinKind::RightSemi,
                JoinType::RightAnti => JoinKind::RightAnti,
                JoinType::LeftMark | JoinType::RightMark => return Err(SqlError::Unsupported(
                    "a subquery inside OR (a mark join) in a materialized view is not supported"
                        .into(),
                )),
            };
        if j.null_aware && (j.filter.is_some() || j.on.len() != 1) {
            return Err(SqlError::Unsupported(
                "NOT IN over a correlated subquery or several columns in a materialized view is not supported; use NOT EXISTS".into(),
            ));
        }
        let left_schema = j.left.schema();
        let right_schema = j.right.schema();
        let mut left_keys = Vec::with_capacity(j.on.len());
        let mut right_keys = Vec::with_capacity(j.on.len());
        let mut key_types = Vec::with_capacity(j.on.len());
        for (l, r) in &j.on {
            let lt = l.get_type(left_schema)?;
            let rt = r.get_type(right_schema)?;
            // Both sides' keys must encode alike: compare in the left type.
            let r = if lt == rt {
                r.clone()
            } else {
                Expr::Cast(Cast::new(Box::new(r.clone()), lt.clone()))
            };
            left_keys.push(physical(l, left_schema)?);
            right_keys.push(physical(&r, right_schema)?);
            key_types.push(lt);
        }
        let pair_schema = left_schema.join(right_schema)?;
        let residual = j
            .filter
            .as_ref()
            .filter(|f| {
                !matches!(
                    f,
                    Expr::Literal(
                        weir_common::datafusion::common::ScalarValue::Boolean(Some(true)),
                        _
                    )
                )
            })
            .map(|f| physical(f, &pair_schema))
            .transpose()?;
        let left = self.translate(&j.left)?;
        let right = self.translate(&j.right)?;
        Ok(PlanNode::Join(Box::new(JoinNode {
            left,
            right,
            kind,
            left_keys,
            right_keys,
            key_types,
            residual,
            null_safe: j.null_equality == NullEquality::NullEqualsNull,
            null_aware: j.null_aware,
            left_schema: nullable(left_schema.as_arrow()),
            right_schema: nullable(right_schema.as_arrow()),
            schema: nullable(j.schema.as_arrow()),
        })))
    }
}

/// `schema` with every field nullable (outer joins pad with NULLs).
fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
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

fn aggregate_node(a: &Aggregate, input: PlanNode) -> Result<PlanNode, SqlError> {
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
    Ok(PlanNode::Aggregate {
        input: Box::new(input),
        append_only,
        group_exprs,
        group_types,
        calls,
        schema: Arc::new(a.schema.as_arrow().clone()),
    })
}
