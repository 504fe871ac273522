//! `agg-bench`: load rows into a table that feeds an incrementally maintained
//! GROUP BY view, and report end-to-end throughput and the server's peak
//! memory.
//!
//! ```text
//! CREATE TABLE src (k BIGINT, v BIGINT);
//! CREATE MATERIALIZED VIEW agg AS SELECT k, count(*), sum(v) FROM src GROUP BY k;
//! INSERT INTO src SELECT value % 10000, value FROM generate_series(lo, hi);  -- repeated
//! ```
//!
//! Every INSERT returns only once the view has processed it, so the load
//! time is end to end. Afterwards the whole view is read back and checked
//! against the closed-form expected counts and sums of every group.
//!
//! By default the benchmark starts `weir serve` itself (the `weir` binary
//! next to this one, or `--weir-bin`) on a free port with a temporary data
//! directory, and reads the server's peak RSS (`VmHWM`) from /proc. With
//! `--addr` it uses a running server instead (dropping `agg` and `src` there
//! first); pass `--server-pid` to report that server's peak RSS.
//!
//! The last line of output is machine-readable:
//! `weir bench=agg rows=N seconds=S rows_per_s=R peak_rss_mb=M`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use weir_bench::pg::Connection;
use weir_bench::server::{peak_rss_mb, weir_binary, BoxError, SpawnedServer};

/// Load rows into a table feeding a GROUP BY materialized view.
#[derive(Parser, Debug)]
#[command(name = "agg-bench")]
struct Args {
    /// Rows to load.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Rows per INSERT statement.
    #[arg(long, default_value_t = 1_000_000)]
    batch: u64,
    /// Number of groups (k = value % groups).
    #[arg(long, default_value_t = 10_000)]
    groups: u64,
    /// Use the Weir server at this address instead of starting one. Drops
    /// `agg` and `src` there if they exist.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// With --addr: the server's process id, to report its peak RSS.
    #[arg(long, requires = "addr")]
    server_pid: Option<u32>,
    /// The `weir` binary to start (default: `weir` in this program's directory).
    #[arg(long, conflicts_with = "addr")]
    weir_bin: Option<PathBuf>,
    /// Keep the started server's data directory and log.
    #[arg(long)]
    keep: bool,
    /// Extra argument for `weir serve` (repeatable), e.g.
    /// `--server-arg=--state-cache-mb=256`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

fn exec(client: &mut Connection, sql: &str) -> Result<(), BoxError> {
    client
        .simple_query(sql)
        .map(|_| ())
        .map_err(|e| format!("{sql}\n  failed: {e}").into())
}

/// Expected (count, sum) of group `k` for values 1..=n with key value % g.
fn expected_group(k: u64, n: u64, g: u64) -> (i128, i128) {
    // Values v = k + j*g (v >= 1, v <= n).
    let first = if k == 0 { g } else { k };
    if first > n {
        return (0, 0);
    }
    let count = ((n - first) / g + 1) as i128;
    let last = first as i128 + (count - 1) * g as i128;
    (count, (first as i128 + last) * count / 2)
}

/// Read the whole view and compare every group with the expected values.
fn verify(client: &mut Connection, rows: u64, groups: u64) -> Result<(), BoxError> {
    let result = client
        .query_one("SELECT * FROM agg")
        .map_err(|e| format!("SELECT * FROM agg failed: {e}"))?;
    let mut seen = std::collections::HashSet::new();
    let (mut total_count, mut total_sum) = (0i128, 0i128);
    for row in &result.rows {
        let field = |i: usize| -> Result<i128, BoxError> {
            let text = row
                .get(i)
                .and_then(|v| v.as_deref())
                .ok_or_else(|| format!("column {i} of agg is NULL or missing"))?;
            Ok(text
                .parse::<i128>()
                .map_err(|e| format!("agg column {i} = {text:?}: {e}"))?)
        };
        let (k, count, sum) = (field(0)?, field(1)?, field(2)?);
        if k < 0 || k >= groups as i128 || !seen.insert(k) {
            return Err(format!("unexpected or repeated group k = {k}").into());
        }
        let (want_count, want_sum) = expected_group(k as u64, rows, groups);
        if (count, sum) != (want_count, want_sum) {
            return Err(format!(
                "group {k}: count {count}, sum {sum}; expected count {want_count}, sum {want_sum}"
            )
            .into());
        }
        total_count += count;
        total_sum += sum;
    }
    let want_groups = groups.min(rows) as usize;
    let want_sum = rows as i128 * (rows as i128 + 1) / 2;
    if seen.len() != want_groups || total_count != rows as i128 || total_sum != want_sum {
        return Err(format!(
            "view has {} groups, total count {total_count}, total sum {total_sum}; \
             expected {want_groups}, {rows}, {want_sum}",
            seen.len()
        )
        .into());
    }
    println!(
        "verified: {} groups, total count {total_count}, total sum {total_sum}",
        seen.len()
    );
    Ok(())
}

/// For views too big to read back whole: the totals, and a sample of groups.
fn verify_totals(client: &mut Connection, rows: u64, groups: u64) -> Result<(), BoxError> {
    let text = |client: &mut Connection, sql: &str| -> Result<Vec<Vec<Option<String>>>, BoxError> {
        Ok(client
            .query_one(sql)
            .map_err(|e| format!("{sql} failed: {e}"))?
            .rows)
    };
    let totals = text(client, "SELECT count(*), sum(count), sum(sum) FROM agg")?;
    let got: Vec<String> = totals
        .first()
        .map(|r| r.iter().map(|v| v.clone().unwrap_or_default()).collect())
        .unwrap_or_default();
    let want = vec![
        groups.min(rows).to_string(),
        rows.to_string(),
        (rows as i128 * (rows as i128 + 1) / 2).to_string(),
    ];
    if got != want {
        return Err(format!("view totals {got:?}, expected {want:?}").into());
    }
    let sample: Vec<u64> = (0..100)
        .map(|i| i * (groups / 100).max(1) % groups)
        .collect();
    let list: Vec<String> = sample.iter().map(|k| k.to_string()).collect();
    let sql = format!(
        "SELECT k, count, sum FROM agg WHERE k IN ({})",
        list.join(", ")
    );
    for row in text(client, &sql)? {
        let field = |i: usize| -> i128 {
            row.get(i)
                .and_then(|v| v.as_deref())
                .and_then(|t| t.parse().ok())
                .unwrap_or(-1)
        };
        let k = field(0);
        let want = expected_group(k as u64, rows, groups);
        if (field(1), field(2)) != want {
            return Err(format!("group {k}: expected {want:?}").into());
        }
    }
    println!("verified totals and {} sampled groups", sample.len());
    Ok(())
}

fn run(args: Args) -> Result<(), BoxError> {
    if args.rows == 0 || args.batch == 0 || args.groups == 0 {
        return Err("--rows, --batch and --groups must be positive".into());
    }
    let mut spawned = None;
    let (addr, pid) = match args.addr {
        Some(addr) => (addr, args.server_pid),
        None => {
            let bin = weir_binary(args.weir_bin.as_deref())?;
            let (server, addr) =
                SpawnedServer::start(&bin, "agg-bench", args.keep, &args.server_args)?;
            let pid = server.child.id();
            println!("started {} (pid {pid}) on {addr}", bin.display());
            spawned = Some(server);
            (addr, Some(pid))
        }
    };

    let result = load_and_verify(&args, addr, pid);
    if let (Err(e), Some(server)) = (&result, &spawned) {
        let log = server.log();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("{e}\nlast lines of the server log:\n{}", tail.join("\n")).into());
    }
    let (seconds, peak) = result?;
    drop(spawned);

    let rows_per_s = args.rows as f64 / seconds;
    let peak = match peak {
        Some(mb) => format!("{mb:.0}"),
        None => "NA".to_string(),
    };
    println!(
        "weir bench=agg rows={} seconds={seconds:.3} rows_per_s={rows_per_s:.0} peak_rss_mb={peak}",
        args.rows
    );
    Ok(())
}

/// Create, load and verify; returns the load time in seconds and the
/// server's peak RSS in MiB (read before the server is stopped).
fn load_and_verify(
    args: &Args,
    addr: SocketAddr,
    pid: Option<u32>,
) -> Result<(f64, Option<f64>), BoxError> {
    let mut client = Connection::connect(addr, "weir", "weir")
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;

    if args.addr.is_some() {
        exec(&mut client, "DROP MATERIALIZED VIEW IF EXISTS agg")?;
        exec(&mut client, "DROP TABLE IF EXISTS src")?;
    }
    exec(&mut client, "CREATE TABLE src (k BIGINT, v BIGINT)")?;
    exec(
        &mut client,
        "CREATE MATERIALIZED VIEW agg AS SELECT k, count(*), sum(v) FROM src GROUP BY k",
    )?;

    println!(
        "loading {} rows into src in INSERTs of up to {} rows ({} groups)",
        args.rows, args.batch, args.groups
    );
    let start = Instant::now();
    let mut lo = 1u64;
    while lo <= args.rows {
        let hi = args.rows.min(lo.saturating_add(args.batch - 1));
        let sql = format!(
            "INSERT INTO src SELECT value % {}, value FROM generate_series({lo}, {hi})",
            args.groups
        );
        let t = Instant::now();
        let n = client
            .query_one(&sql)
            .map_err(|e| format!("{sql}\n  failed: {e}"))?
            .affected();
        if n != hi - lo + 1 {
            return Err(format!("{sql} reported {n} rows, expected {}", hi - lo + 1).into());
        }
        println!("  rows {lo}..={hi}: {:.3}s", t.elapsed().as_secs_f64());
        lo = hi + 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    // Peak memory of the load itself: reading a view of millions of groups
    // back for verification costs memory of its own.
    let peak = pid.and_then(peak_rss_mb);

    if args.groups <= 1_000_000 {
        verify(&mut client, args.rows, args.groups)?;
    } else {
        verify_totals(&mut client, args.rows, args.groups)?;
    }
    drop(client);
    Ok((seconds, peak))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agg-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expected_group;

    #[test]
    fn expected_groups_add_up() {
        for (n, g) in [(10u64, 3u64), (7, 10), (100, 10), (1, 1), (12345, 100)] {
            let (mut c, mut s) = (0i128, 0i128);
            for k in 0..g {
                let (ck, sk) = expected_group(k, n, g);
                let brute: Vec<u64> = (1..=n).filter(|v| v % g == k).collect();
                assert_eq!(ck, brute.len() as i128, "n={n} g={g} k={k}");
                assert_eq!(sk, brute.iter().map(|v| *v as i128).sum::<i128>());
                c += ck;
                s += sk;
            }
            assert_eq!(c, n as i128);
            assert_eq!(s, n as i128 * (n as i128 + 1) / 2);
        }
    }
}
