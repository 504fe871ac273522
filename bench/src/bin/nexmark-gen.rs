//! The Nexmark generator alone, on one core: N rows of one table built into
//! Arrow batches, with nothing consuming them.
//!
//! Last line: `nexmark-gen table=T events=N seconds=S events_per_s=E`, where
//! `events` counts rows of the chosen table (events of the other types are
//! skipped without being generated).

use std::time::Instant;

use clap::Parser;
use weir_connectors::nexmark::{NexmarkConfig, NexmarkGenerator, NexmarkTable};

#[derive(Parser)]
struct Args {
    /// Table to generate: person, auction, bid or combined.
    #[arg(long, default_value = "bid")]
    table: String,
    /// Rows of that table to generate.
    #[arg(long, default_value_t = 20_000_000)]
    events: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 8192)]
    batch: usize,
    /// Seed of the random draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let table = NexmarkTable::parse(&args.table)?;
    let config = NexmarkConfig {
        seed: args.seed,
        ..NexmarkConfig::default()
    };
    let mut generator = NexmarkGenerator::new(config, table, 0);

    let start = Instant::now();
    let (mut rows, mut bytes) = (0usize, 0usize);
    // The previous batch stays alive while the next one is built, as it
    // would in a pipeline. Dropping each batch at once lets glibc hand its
    // pages back to the kernel and fault them in again for the next batch,
    // which can cost more than generating it.
    let mut _previous = None;
    while rows < args.events {
        let want = args.batch.min(args.events - rows);
        let Some(batch) = generator.next_batch(want)? else {
            break;
        };
        rows += batch.num_rows();
        bytes += batch.get_array_memory_size();
        _previous = Some(batch);
    }
    let seconds = start.elapsed().as_secs_f64();

    println!(
        "batches of {} rows, {:.1} MB of Arrow arrays, offset {}",
        args.batch,
        bytes as f64 / 1e6,
        generator.offset()
    );
    println!(
        "nexmark-gen table={} events={} seconds={:.3} events_per_s={:.0}",
        args.table.to_ascii_lowercase(),
        rows,
        seconds,
        rows as f64 / seconds
    );
    Ok(())
}
