//! The aggregation path alone, on one core: a `HashAggregate` computing
//! `SELECT k, count(*), sum(v) ... GROUP BY k` over N rows and G groups,
//! fed 8192-row change chunks on the current thread (no server, no table,
//! no channels), with one barrier at the end.
//!
//! Last line: `weir bench=agg-operator rows=N groups=G seconds=S rows_per_s=R`

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use weir_common::arrow::array::{Int64Array, RecordBatch};
use weir_common::arrow::datatypes::{DataType, Field, Schema};
use weir_common::datafusion::common::ScalarValue;
use weir_common::datafusion::functions_aggregate::{count::count_udaf, sum::sum_udaf};
use weir_common::datafusion::physical_expr::aggregate::AggregateExprBuilder;
use weir_common::datafusion::physical_expr::expressions::{Column, Literal};
use weir_common::datafusion::physical_expr::PhysicalExpr;
use weir_common::{Barrier, Op, StreamChunk};
use weir_dataflow::hash_aggregate::{AccumulatorFactory, AggregateCall, HashAggregate};
use weir_dataflow::Operator;
use weir_state::{MemoryStateStore, StateStoreRef, StateTable};

#[derive(Parser)]
struct Args {
    /// Input rows.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Distinct group keys.
    #[arg(long, default_value_t = 10_000)]
    groups: i64,
    /// Rows per chunk.
    #[arg(long, default_value_t = 8192)]
    chunk: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let input = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let one: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(ScalarValue::Int64(Some(1))));
    let v: Arc<dyn PhysicalExpr> = Arc::new(Column::new("v", 1));
    let mut calls = Vec::new();
    for (udaf, arg, name) in [(count_udaf(), one, "count"), (sum_udaf(), v, "sum")] {
        let agg = AggregateExprBuilder::new(udaf, vec![arg])
            .schema(Arc::clone(&input))
            .alias(name)
            .build()?;
        calls.push(AggregateCall {
            args: agg.expressions(),
            display: name.to_string(),
            factory: AccumulatorFactory::DataFusion(Arc::new(agg)),
            filter: None,
        });
    }
    let output = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("count", DataType::Int64, true),
        Field::new("sum", DataType::Int64, true),
    ]));
    let store: StateStoreRef = Arc::new(MemoryStateStore::new());
    let mut agg = HashAggregate::new(
        vec![Arc::new(Column::new("k", 0))],
        vec![DataType::Int64],
        calls,
        output,
        StateTable::new(store, 1),
    )?;

    // Input is generated before the clock starts.
    let mut chunks = Vec::new();
    let mut i = 0usize;
    while i < args.rows {
        let n = args.chunk.min(args.rows - i);
        let v: Vec<i64> = (i..i + n).map(|x| x as i64).collect();
        let k: Vec<i64> = v.iter().map(|x| x % args.groups).collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&input),
            vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(v))],
        )?;
        chunks.push(StreamChunk::uniform(batch, Op::Insert));
        i += n;
    }

    let start = Instant::now();
    let mut out = Vec::new();
    for c in chunks {
        agg.process(c, &mut out)?;
    }
    agg.on_barrier(Barrier::new(1), &mut out)?;
    let seconds = start.elapsed().as_secs_f64();

    let emitted: usize = out.iter().map(|c| c.len()).sum();
    if emitted as i64 != args.groups.min(args.rows as i64) {
        return Err(format!("expected {} groups, got {emitted}", args.groups).into());
    }
    println!(
        "weir bench=agg-operator rows={} groups={} seconds={:.3} rows_per_s={:.0}",
        args.rows,
        args.groups,
        seconds,
        args.rows as f64 / seconds
    );
    Ok(())
}
