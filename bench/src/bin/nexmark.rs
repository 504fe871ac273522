//! `nexmark`: run Nexmark queries on Weir over a bounded source into a
//! blackhole sink, and report throughput, CPU and memory.
//!
//! For each query a fresh `weir serve` is started (so CPU time and peak RSS
//! are the query's own), the source is created, then
//! `CREATE SINK q AS <query> WITH (connector = 'blackhole')` starts the
//! dataflow. The clock runs from the CREATE SINK until the source reports
//! its last row read and a FLUSH has returned (every change is through the
//! sink).
//!
//! Sources (`--source`):
//! - `datagen` (default): the Nexmark-shaped Bid table of
//!   `../shared/peers/flink/run_flink_peer.py`, with the same DDL, datagen
//!   options included, so Weir and Flink do identical work.
//! - `nexmark`: Weir's Nexmark generator (`connector = 'nexmark'`, Bid
//!   table); `--events` counts events of all types, of which 46/50 are bids.
//!
//! The multi-stream queries (q3, q4, q20, q23: joins) take their tables and
//! SQL from the Flink peer (`run_flink_peer.py Q EVENTS --print-sql`), so
//! both systems run identical DDL over identical events (`--events` counts
//! persons, auctions and bids); RisingWave's extended queries q101-q104
//! (outer join to an aggregate, HAVING with a scalar subquery, semi and
//! anti join) run over the same tables.
//!
//! The last line per query is:
//! `weir query=Q events=N parallelism=P rows_out=R data_mb=D seconds=S events_per_s=E cpu_s=C peak_rss_mb=M`
//! (`rows_out`: net rows in the sink; `data_mb`: the data directory at the
//! end: RocksDB state, checkpoint files, write-ahead log).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use weir_bench::pg::Connection;
use weir_bench::server::{cpu_seconds, peak_rss_mb, weir_binary, BoxError, SpawnedServer};

/// The queries Weir runs, in the Flink peer's SQL.
const QUERIES: &[(&str, &str)] = &[
    // Nexmark q0: pass-through.
    ("q0", "SELECT auction, bidder, price, date_time, extra FROM bid"),
    // Nexmark q1: currency conversion.
    (
        "q1",
        "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid",
    ),
    // Nexmark q2: selection.
    ("q2", "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0"),
    // An updating GROUP BY over 10,000 auctions (Nexmark q17-like).
    (
        "agg",
        "SELECT auction, count(*) AS c, max(price) AS mx, sum(price) AS s FROM bid GROUP BY auction",
    ),
];

/// Multi-stream queries whose tables and query text come from the Flink
/// peer (`run_flink_peer.py QUERY EVENTS --print-sql`), so both systems run
/// the same DDL and SQL over the same events; and RisingWave's extended
/// queries over the same tables (q101-q104, written here in its form).
const PEER_QUERIES: &[&str] = &["q3", "q4", "q20", "q23"];

/// RisingWave's extended Nexmark queries (joins and subqueries), over the
/// peer's `person`, `auction` and `bid` tables.
const EXTENDED: &[(&str, &str)] = &[
    // q101: the highest bid of each auction (outer join to an aggregate).
    (
        "q101",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name, b.max_price AS current_highest_bid          FROM auction a LEFT OUTER JOIN (SELECT b1.auction, MAX(b1.price) AS max_price FROM bid b1          GROUP BY b1.auction) b ON a.id = b.auction",
    ),
    // q102: auctions with at least the average number of bids (HAVING with
    // a scalar subquery).
    (
        "q102",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name, COUNT(b.auction) AS bid_count          FROM auction a JOIN bid b ON a.id = b.auction GROUP BY a.id, a.item_name          HAVING COUNT(b.auction) >= (SELECT COUNT(*) / COUNT(DISTINCT auction) FROM bid)",
    ),
    // q103: auctions with at least 20 bids (semi join).
    (
        "q103",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name FROM auction a          WHERE a.id IN (SELECT b.auction FROM bid b GROUP BY b.auction HAVING COUNT(*) >= 20)",
    ),
    // q104: auctions with fewer than 20 bids (anti join).
    (
        "q104",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name FROM auction a          WHERE a.id NOT IN (SELECT b.auction FROM bid b GROUP BY b.auction HAVING COUNT(*) < 20)",
    ),
];

/// Queries of the suite Weir does not run yet, and what they need.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("tumble", "tumbling windows (TUMBLE table function)"),
    ("q5", "windows (HOP)"),
    ("q6", "joins, window functions"),
    ("q7", "windows, joins"),
    ("q8", "windows, joins"),
    ("q9", "joins, window functions"),
    ("q10", "file sinks"),
    ("q11", "session windows"),
    ("q12", "processing-time windows"),
    ("q13", "lookup joins"),
    ("q14", "user-defined functions"),
    ("q15", "count(DISTINCT) with FILTER per day (date_format)"),
    (
        "q16",
        "count(DISTINCT) with FILTER per channel (date_format)",
    ),
    ("q17", "GROUP BY with date_format"),
    ("q18", "window functions (ROW_NUMBER)"),
    ("q19", "window functions (ROW_NUMBER)"),
    ("q21", "regexp_extract / CASE over channels"),
    ("q22", "split_index"),
];

/// Run Nexmark queries on Weir.
#[derive(Parser, Debug)]
#[command(name = "nexmark")]
struct Args {
    /// Queries to run (comma-separated), or `all`.
    #[arg(long, default_value = "q0,q1,q2,agg")]
    queries: String,
    /// Rows (datagen) or events (nexmark) the bounded source produces.
    #[arg(long, default_value_t = 5_000_000)]
    events: u64,
    /// `datagen` (the Flink peer's DDL) or `nexmark`.
    #[arg(long, default_value = "datagen")]
    source: String,
    /// The `weir` binary (default: `weir` next to this program).
    #[arg(long)]
    weir_bin: Option<PathBuf>,
    /// Keep the servers' data directories and logs.
    #[arg(long)]
    keep: bool,
    /// Extra argument for `weir serve` (repeatable), e.g.
    /// `--server-arg=--checkpoint-interval=1s`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Instances per stateful operator (`weir serve --parallelism`).
    #[arg(long, default_value_t = 1)]
    parallelism: usize,
    /// The Flink peer's `run_flink_peer.py` (default: `../shared/peers/flink/`
    /// beside the repository), for the multi-stream queries' DDL and SQL.
    #[arg(long)]
    peer_script: Option<PathBuf>,
}

/// The Flink peer's Bid table, verbatim but for the row count.
fn datagen_ddl(rows: u64) -> String {
    format!(
        "CREATE TABLE bid (
      id BIGINT,
      auction BIGINT,
      bidder BIGINT,
      price BIGINT,
      channel STRING,
      url STRING,
      extra STRING,
      date_time AS TO_TIMESTAMP_LTZ(1700000000000 + id / 10, 3),
      WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
    ) WITH (
      'connector' = 'datagen',
      'number-of-rows' = '{rows}',
      'rows-per-second' = '1000000000',
      'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{rows}',
      'fields.auction.min' = '1000', 'fields.auction.max' = '10999',
      'fields.bidder.min' = '1000', 'fields.bidder.max' = '100999',
      'fields.price.min' = '100', 'fields.price.max' = '10000000',
      'fields.channel.length' = '8',
      'fields.url.length' = '40',
      'fields.extra.length' = '40'
    )"
    )
}

/// The peer's statements for `query` over `events` events: its source
/// DDL (the tables the query reads) and the SELECT its INSERT runs.
fn peer_sql(args: &Args, query: &str) -> Result<(Vec<String>, String), BoxError> {
    let script = args.peer_script.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/flink/run_flink_peer.py")
    });
    // The extended queries read the tables of q23 (person, auction, bid).
    let peer_query = if PEER_QUERIES.contains(&query) {
        query
    } else {
        "q23"
    };
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(peer_query)
        .arg(args.events.to_string())
        .arg("--print-sql")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --print-sql failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut ddl = Vec::new();
    let mut select = None;
    let mut sink_columns = Vec::new();
    for statement in text.split(";\n") {
        let statement: String = statement
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let trimmed = statement.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with("CREATE TABLE sink") {
            sink_columns = column_names(trimmed);
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("INSERT INTO sink") {
            select = Some(rest.trim().to_string());
        } else {
            ddl.push(trimmed.to_string());
        }
    }
    let select = match EXTENDED.iter().find(|(n, _)| *n == query) {
        Some((_, sql)) => sql.to_string(),
        // INSERT INTO sink maps the SELECT's columns to the sink's by
        // position, under the sink's names (q20 selects two date_time
        // and two extra columns).
        None => {
            let select = select.ok_or("the peer printed no INSERT INTO sink")?;
            if sink_columns.is_empty() {
                select
            } else {
                format!(
                    "SELECT * FROM ({select}) AS sink_input({})",
                    sink_columns.join(", ")
                )
            }
        }
    };
    Ok((ddl, select))
}

/// The column names of `CREATE TABLE name (col TYPE, ...) ...`.
fn column_names(ddl: &str) -> Vec<String> {
    let Some(open) = ddl.find('(') else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut depth = 0;
    let mut part = String::new();
    for c in ddl[open + 1..].chars() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                names.extend(part.split_whitespace().next().map(str::to_string));
                break;
            }
            ')' => depth -= 1,
            ',' if depth == 0 => {
                names.extend(part.split_whitespace().next().map(str::to_string));
                part.clear();
                continue;
            }
            _ => {}
        }
        part.push(c);
    }
    names
}

fn nexmark_ddl(events: u64) -> String {
    format!(
        "CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'Bid', \
         max_events = '{events}')"
    )
}

fn exec(client: &mut Connection, sql: &str) -> Result<Vec<Vec<Option<String>>>, BoxError> {
    client
        .simple_query(sql)
        .map(|mut r| r.pop().map(|s| s.rows).unwrap_or_default())
        .map_err(|e| format!("{sql}\n  failed: {e}").into())
}

struct Measured {
    /// Net rows the sink received (inserts minus deletes).
    rows_out: i64,
    seconds: f64,
    cpu_s: f64,
    peak_rss_mb: f64,
    /// The data directory's size at the end (state, checkpoints, WAL).
    data_mb: f64,
}

fn run_query(args: &Args, name: &str, sql: &str, ddl: &[String]) -> Result<Measured, BoxError> {
    let bin = weir_binary(args.weir_bin.as_deref())?;
    let mut server_args = args.server_args.clone();
    server_args.push(format!("--parallelism={}", args.parallelism));
    let (server, addr): (SpawnedServer, SocketAddr) =
        SpawnedServer::start(&bin, "nexmark", args.keep, &server_args)?;
    let pid = server.child.id();
    let result = (|| -> Result<Measured, BoxError> {
        let mut client = Connection::connect(addr, "weir", "weir")?;
        if ddl.is_empty() {
            let ddl = match args.source.as_str() {
                "datagen" => datagen_ddl(args.events),
                "nexmark" => nexmark_ddl(args.events),
                other => return Err(format!("unknown --source {other}").into()),
            };
            exec(&mut client, &ddl)?;
        }
        for statement in ddl {
            exec(&mut client, statement)?;
        }
        let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
        let started = Instant::now();
        exec(
            &mut client,
            &format!("CREATE SINK {name} AS {sql} WITH (connector = 'blackhole')"),
        )?;
        let probe = format!(
            "SELECT source_finished, source_offset, status, last_error \
             FROM weir_catalog.dataflows WHERE name = '{name}'"
        );
        loop {
            let rows = exec(&mut client, &probe)?;
            let row = rows
                .first()
                .ok_or("the sink is not in weir_catalog.dataflows")?;
            if row.get(2).cloned().flatten().as_deref() != Some("RUNNING") {
                return Err(format!("the sink stopped: {:?}", row.get(3)).into());
            }
            if row.first().cloned().flatten().as_deref() == Some("t") {
                break;
            }
            // Every probe is a query the server plans and runs: poll
            // often on short runs, rarely on long ones (at most 0.5 % of
            // the elapsed time is lost to the interval).
            let wait = (started.elapsed() / 200)
                .clamp(Duration::from_millis(5), Duration::from_millis(250));
            std::thread::sleep(wait);
        }
        exec(&mut client, "FLUSH")?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu_s = cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
        let rows = exec(
            &mut client,
            &format!(
                "SELECT sink_inserts - sink_deletes FROM weir_catalog.dataflows WHERE name = '{name}'"
            ),
        )?;
        let rows_out: i64 = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .ok_or("cannot read the sink's row count")?;
        Ok(Measured {
            rows_out,
            seconds,
            cpu_s,
            peak_rss_mb: peak_rss_mb(pid).unwrap_or(0.0),
            data_mb: 0.0,
        })
    })();
    let result = result.map(|m| Measured {
        data_mb: server.data_bytes() as f64 / (1024.0 * 1024.0),
        ..m
    });
    match result {
        Ok(m) => Ok(m),
        Err(e) => Err(format!("{e}\nserver log tail:\n{}", server.log_tail(20)).into()),
    }
}

fn run(args: Args) -> Result<(), BoxError> {
    let wanted: Vec<String> = if args.queries == "all" {
        QUERIES
            .iter()
            .map(|(q, _)| q.to_string())
            .chain(PEER_QUERIES.iter().map(|q| q.to_string()))
            .chain(EXTENDED.iter().map(|(q, _)| q.to_string()))
            .chain(UNSUPPORTED.iter().map(|(q, _)| q.to_string()))
            .collect()
    } else {
        args.queries
            .split(',')
            .map(|q| q.trim().to_string())
            .collect()
    };
    for q in &wanted {
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| n == q) {
            println!("weir query={q} unsupported=\"needs {why}\"");
            continue;
        }
        let (ddl, sql) =
            if PEER_QUERIES.contains(&q.as_str()) || EXTENDED.iter().any(|(n, _)| n == q) {
                peer_sql(&args, q)?
            } else {
                let Some((_, sql)) = QUERIES.iter().find(|(n, _)| n == q) else {
                    return Err(format!("unknown query {q}").into());
                };
                (Vec::new(), sql.to_string())
            };
        let m = match run_query(&args, q, &sql, &ddl) {
            Ok(m) => m,
            // A query Weir refuses (0A000) is reported, not fatal.
            Err(e)
                if e.to_string().contains("0A000") || e.to_string().contains("not supported") =>
            {
                let first = e
                    .to_string()
                    .lines()
                    .nth(1)
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                println!("weir query={q} unsupported=\"{}\"", first.replace('"', "'"));
                continue;
            }
            Err(e) => return Err(e),
        };
        // Pass-through queries deliver every bid; check it.
        let bids = match args.source.as_str() {
            "nexmark" => args.events / 50 * 46 + (args.events % 50).saturating_sub(4),
            _ => args.events,
        };
        if (q == "q0" || q == "q1") && m.rows_out != bids as i64 {
            return Err(format!("{q}: the sink got {} rows, expected {bids}", m.rows_out).into());
        }
        eprintln!("{q}: the sink holds {} rows", m.rows_out);
        println!(
            "weir query={q} events={} parallelism={} rows_out={} data_mb={:.0} seconds={:.3} events_per_s={:.0} cpu_s={:.2} peak_rss_mb={:.0}",
            args.events,
            args.parallelism,
            m.rows_out,
            m.data_mb,
            m.seconds,
            args.events as f64 / m.seconds,
            m.cpu_s,
            m.peak_rss_mb
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nexmark: {e}");
            ExitCode::FAILURE
        }
    }
}
