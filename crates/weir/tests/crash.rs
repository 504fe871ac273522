//! Crash-recovery and corruption tests against the real `weir` binary.
//!
//! Every test starts `weir serve` as a child process on a fresh data
//! directory, writes through the Postgres protocol while keeping an
//! in-memory model of the tables (updated only once a statement is
//! acknowledged), crashes the server (SIGKILL, or `abort()` at a crash point
//! armed with `WEIR_FAILPOINTS`), possibly damages the checkpoint directory,
//! restarts the binary on the same directory and checks:
//!
//! - each table holds exactly the acknowledged writes; the one statement in
//!   flight at the crash (sent, not acknowledged) is wholly present or wholly
//!   absent, never partial or applied twice;
//! - every materialized view equals its defining query run as a plain SELECT
//!   over the recovered tables.
//!
//! Knobs (environment): `WEIR_CRASH_SEEDS` (number of seeds of
//! `crash_recovery_random_kills`, default 4), `WEIR_CRASH_CYCLES` (kill and
//! restart cycles per seed, default 3), `WEIR_CRASH_SEED` (first seed,
//! default 1), `WEIR_CRASH_FAILPOINTS` (`name@n,...`: the crash points
//! `crash_at_failpoints` goes through instead of its list),
//! `WEIR_CRASH_LOG` (the servers' `WEIR_LOG` filter, default `info`). On
//! failure the temporary directory (data directory and one log file per
//! server run) is kept and its path printed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

#[path = "../../weir-server/tests/common/postgres.rs"]
mod postgres;

/// One result row, every value as text (`None` for NULL).
type Row = Vec<Option<String>>;

// ---------------------------------------------------------------------------
// Temporary directories and the server process
// ---------------------------------------------------------------------------

/// A unique directory under the system temp dir; removed on drop unless the
/// test is failing (then its path is printed so logs can be inspected).
struct TempDir {
    path: PathBuf,
    runs: usize,
}

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("weir-crash-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temporary directory");
        TempDir { path, runs: 0 }
    }

    /// A fresh log file path for the next server run.
    fn next_log(&mut self, what: &str) -> PathBuf {
        self.runs += 1;
        self.path.join(format!("run-{:02}-{what}.log", self.runs))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "weir crash test: data directories and server logs kept in {}",
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// How to start a server.
#[derive(Clone)]
struct Opts {
    checkpoint_interval: &'static str,
    failpoints: Option<String>,
    state_cache_mb: usize,
    /// `--parallelism` (the server's default, the core count, if `None`).
    parallelism: Option<usize>,
}

impl Opts {
    fn interval(checkpoint_interval: &'static str) -> Opts {
        Opts {
            checkpoint_interval,
            failpoints: None,
            state_cache_mb: 64,
            parallelism: None,
        }
    }
}

/// A running `weir serve` child. Killed (SIGKILL) on drop, so a failing
/// test never leaks a server; its stderr is saved to `log_path` then.
struct Weir {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    log_path: PathBuf,
    /// `--data-dir`, for messages.
    data: PathBuf,
    exited: Option<ExitStatus>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

impl Weir {
    fn spawn(data: &Path, opts: &Opts, log_path: PathBuf) -> Weir {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data)
            .arg("--checkpoint-interval")
            .arg(opts.checkpoint_interval)
            .arg("--state-cache-mb")
            .arg(opts.state_cache_mb.to_string())
            .env(
                "WEIR_LOG",
                std::env::var("WEIR_CRASH_LOG").unwrap_or_else(|_| "info".to_string()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(p) = opts.parallelism {
            cmd.arg("--parallelism").arg(p.to_string());
        }
        match &opts.failpoints {
            Some(f) => cmd.env("WEIR_FAILPOINTS", f),
            None => cmd.env_remove("WEIR_FAILPOINTS"),
        };
        let mut child = cmd.spawn().expect("spawn the weir binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("child stderr");
        let sink = Arc::clone(&stderr);
        // Drain stderr continuously so the pipe never fills and blocks the
        // server.
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]),
                }
            }
        });
        Weir {
            child,
            port,
            stderr,
            reader: Some(reader),
            log_path,
            data: data.to_path_buf(),
            exited: None,
        }
    }

    /// Everything the server wrote to stderr so far (all of it once it has
    /// exited and been waited for).
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The last lines of stderr, for failure messages.
    fn tail(&self) -> String {
        let all = self.stderr();
        let lines: Vec<&str> = all.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!(
            "--- last {} stderr lines of weir on {} (full log: {}) ---\n{}",
            lines.len() - from,
            self.data.display(),
            self.log_path.display(),
            lines[from..].join("\n")
        )
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// SIGKILL the server (`Child::kill` sends SIGKILL on Unix) and reap it.
    fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        self.join_reader();
    }

    /// Wait until the process exits on its own, at most `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return self.exited;
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                self.join_reader();
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Connect once the server serves (recovery may take a while: the
    /// listener is bound before recovery, the handshake completes after).
    /// `Err` with the exit status if the process exits first.
    async fn connect(&mut self) -> Result<Client, String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let conn = format!(
            "host=127.0.0.1 port={} user=weir dbname=weir connect_timeout=2",
            self.port
        );
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                self.join_reader();
                return Err(format!("weir exited ({status}) before serving"));
            }
            if let Ok(Ok((client, connection))) = tokio::time::timeout(
                Duration::from_secs(3),
                tokio_postgres::connect(&conn, NoTls),
            )
            .await
            {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                return Ok(client);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "weir did not serve on port {} within 90 s",
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Connect or fail the test with the server log.
    async fn client(&mut self) -> Client {
        match self.connect().await {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{}", self.tail()),
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::write(&self.log_path, self.stderr());
    }
}

// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------

/// Run `sql` with the simple query protocol; rows with every value as text.
async fn query(client: &Client, sql: &str) -> Result<Vec<Row>, tokio_postgres::Error> {
    let mut rows = Vec::new();
    for msg in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = msg {
            rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
        }
    }
    Ok(rows)
}

/// [`query`], failing the test on error.
async fn must(client: &Client, server: &Weir, sql: &str) -> Vec<Row> {
    match query(client, sql).await {
        Ok(rows) => rows,
        Err(e) => panic!("`{sql}` failed: {e:?}\n{}", server.tail()),
    }
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

fn show(row: &Row) -> String {
    let vals: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
    format!("({})", vals.join(", "))
}

/// Multiset difference of two sorted row lists, for failure messages.
fn diff(expected: &[Row], actual: &[Row]) -> String {
    let mut count: BTreeMap<&Row, i64> = BTreeMap::new();
    for r in expected {
        *count.entry(r).or_default() += 1;
    }
    for r in actual {
        *count.entry(r).or_default() -= 1;
    }
    let mut out = format!("expected {} rows, got {}", expected.len(), actual.len());
    let mut shown = 0;
    for (row, n) in count {
        if n == 0 {
            continue;
        }
        shown += 1;
        if shown > 25 {
            out.push_str("\n  ...");
            break;
        }
        if n > 0 {
            let _ = write!(out, "\n  missing {n}x {}", show(row));
        } else {
            let _ = write!(out, "\n  extra   {}x {}", -n, show(row));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Schema, model and statement generator
// ---------------------------------------------------------------------------

const TABLES: &[&str] = &[
    "CREATE TABLE t (id BIGINT PRIMARY KEY, g INT NOT NULL, v BIGINT)",
    "CREATE TABLE m (g INT, v INT)",
];

/// A materialized view and the plain SELECT over the tables it must equal.
struct View {
    name: &'static str,
    definition: &'static str,
    oracle: &'static str,
}

const VIEWS: &[View] = &[
    View {
        name: "t_by_g",
        definition: "SELECT g, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi \
                     FROM t GROUP BY g",
        oracle: "SELECT g, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi \
                 FROM t GROUP BY g",
    },
    View {
        name: "m_groups",
        definition: "SELECT DISTINCT g FROM m",
        oracle: "SELECT DISTINCT g FROM m",
    },
    View {
        name: "m_total",
        definition: "SELECT count(*) AS n, sum(v) AS s FROM m",
        oracle: "SELECT count(*) AS n, sum(v) AS s FROM m",
    },
    View {
        name: "t_big",
        definition: "SELECT id, v * 2 AS w FROM t WHERE v > 10",
        oracle: "SELECT id, v * 2 AS w FROM t WHERE v > 10",
    },
    // A join feeding an aggregate, maintained from the start.
    View {
        name: "tm_join",
        definition: "SELECT t.g, count(*) AS n, sum(m.v) AS s FROM t JOIN m ON t.g = m.g GROUP BY t.g",
        oracle: "SELECT t.g, count(*) AS n, sum(m.v) AS s FROM t JOIN m ON t.g = m.g GROUP BY t.g",
    },
    // A view on a view.
    View {
        name: "t_groups",
        definition: "SELECT count(*) AS groups FROM t_by_g",
        oracle: "SELECT count(*) AS groups FROM (SELECT g FROM t GROUP BY g) AS x",
    },
    // min/max over a multiset with duplicates and NULL groups.
    View {
        name: "m_by_g",
        definition: "SELECT g, count(*) AS n, min(v) AS lo, max(v) AS hi FROM m GROUP BY g",
        oracle: "SELECT g, count(*) AS n, min(v) AS lo, max(v) AS hi FROM m GROUP BY g",
    },
    // A filter over a view.
    View {
        name: "t_busy",
        definition: "SELECT g, n FROM t_by_g WHERE n > 2",
        oracle: "SELECT g, count(*) AS n FROM t GROUP BY g HAVING count(*) > 2",
    },
    // An outer join with a residual condition, backfilled on existing rows.
    View {
        name: "tm_left",
        definition: "SELECT t.id, count(m.v) AS n FROM t LEFT JOIN m ON t.g = m.g AND m.v > t.v GROUP BY t.id",
        oracle: "SELECT t.id, count(m.v) AS n FROM t LEFT JOIN m ON t.g = m.g AND m.v > t.v GROUP BY t.id",
    },
    // NOT IN over a column with NULLs (a null-aware anti join).
    View {
        name: "t_not_in_m",
        definition: "SELECT id FROM t WHERE g NOT IN (SELECT g FROM m)",
        oracle: "SELECT id FROM t WHERE g NOT IN (SELECT g FROM m)",
    },
];

/// Views created before any data; the rest are created later on existing
/// data (in `crash_recovery_random_kills`, after the first restart).
const EARLY_VIEWS: usize = 6;

async fn create_tables(client: &Client, server: &Weir) {
    for sql in TABLES {
        must(client, server, sql).await;
    }
}

async fn create_views(client: &Client, server: &Weir, views: &[View]) {
    for v in views {
        let sql = format!("CREATE MATERIALIZED VIEW {} AS {}", v.name, v.definition);
        must(client, server, &sql).await;
    }
}

/// What the tables must hold.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    /// `t`: id -> (g, v).
    t: BTreeMap<i64, (i32, Option<i64>)>,
    /// `m`: a multiset of (g, v).
    m: Vec<(Option<i32>, Option<i32>)>,
}

fn num<T: ToString>(v: Option<T>) -> Option<String> {
    v.map(|x| x.to_string())
}

fn lit<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "NULL".to_string(), |x| x.to_string())
}

impl Model {
    fn t_rows(&self) -> Vec<Row> {
        sorted(
            self.t
                .iter()
                .map(|(id, (g, v))| vec![num(Some(*id)), num(Some(*g)), num(*v)])
                .collect(),
        )
    }

    fn m_rows(&self) -> Vec<Row> {
        sorted(self.m.iter().map(|(g, v)| vec![num(*g), num(*v)]).collect())
    }
}

/// A statement and its effect on the model.
#[derive(Debug, Clone)]
enum Op {
    InsertT(Vec<(i64, i32, Option<i64>)>),
    SetV {
        id: i64,
        v: Option<i64>,
    },
    MoveGroup {
        from: i32,
        to: i32,
    },
    DeleteId(i64),
    DeleteGroupBelow {
        g: i32,
        below: i64,
    },
    InsertM(Vec<(Option<i32>, Option<i32>)>),
    DeleteM {
        g: i32,
        v: i32,
    },
    DeleteMAbove(i32),
    BumpM(i32),
    /// No effect on the tables (`CHECKPOINT`, `FLUSH`, a SELECT).
    Nothing(&'static str),
}

impl Op {
    fn sql(&self) -> String {
        match self {
            Op::InsertT(rows) => {
                let vals: Vec<String> = rows
                    .iter()
                    .map(|(id, g, v)| format!("({id}, {g}, {})", lit(*v)))
                    .collect();
                format!("INSERT INTO t VALUES {}", vals.join(", "))
            }
            Op::SetV { id, v } => format!("UPDATE t SET v = {} WHERE id = {id}", lit(*v)),
            Op::MoveGroup { from, to } => {
                format!("UPDATE t SET g = {to}, v = v + 1 WHERE g = {from}")
            }
            Op::DeleteId(id) => format!("DELETE FROM t WHERE id = {id}"),
            Op::DeleteGroupBelow { g, below } => {
                format!("DELETE FROM t WHERE g = {g} AND v < {below}")
            }
            Op::InsertM(rows) => {
                let vals: Vec<String> = rows
                    .iter()
                    .map(|(g, v)| format!("({}, {})", lit(*g), lit(*v)))
                    .collect();
                format!("INSERT INTO m VALUES {}", vals.join(", "))
            }
            Op::DeleteM { g, v } => format!("DELETE FROM m WHERE g = {g} AND v = {v}"),
            Op::DeleteMAbove(x) => format!("DELETE FROM m WHERE v > {x}"),
            Op::BumpM(g) => format!("UPDATE m SET v = v + 1 WHERE g = {g}"),
            Op::Nothing(sql) => sql.to_string(),
        }
    }

    fn apply(&self, model: &mut Model) {
        match self {
            Op::InsertT(rows) => {
                for (id, g, v) in rows {
                    let old = model.t.insert(*id, (*g, *v));
                    assert!(old.is_none(), "generator reused id {id}");
                }
            }
            Op::SetV { id, v } => {
                if let Some(row) = model.t.get_mut(id) {
                    row.1 = *v;
                }
            }
            Op::MoveGroup { from, to } => {
                for row in model.t.values_mut() {
                    if row.0 == *from {
                        row.0 = *to;
                        row.1 = row.1.map(|v| v + 1);
                    }
                }
            }
            Op::DeleteId(id) => {
                model.t.remove(id);
            }
            Op::DeleteGroupBelow { g, below } => model
                .t
                .retain(|_, (rg, rv)| !(*rg == *g && rv.is_some_and(|v| v < *below))),
            Op::InsertM(rows) => model.m.extend(rows.iter().copied()),
            Op::DeleteM { g, v } => model
                .m
                .retain(|(rg, rv)| !(*rg == Some(*g) && *rv == Some(*v))),
            Op::DeleteMAbove(x) => model.m.retain(|(_, rv)| !rv.is_some_and(|v| v > *x)),
            Op::BumpM(g) => {
                for row in model.m.iter_mut() {
                    if row.0 == Some(*g) {
                        row.1 = row.1.map(|v| v + 1);
                    }
                }
            }
            Op::Nothing(_) => {}
        }
    }
}

/// Random statements from a seeded generator. Ids are never reused, even
/// those of an insert that was lost in a crash.
struct Gen {
    rng: StdRng,
    next_id: i64,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            next_id: 1,
        }
    }

    fn t_value(&mut self) -> Option<i64> {
        if self.rng.random_bool(0.1) {
            None
        } else {
            Some(self.rng.random_range(-5..50))
        }
    }

    fn m_row(&mut self) -> (Option<i32>, Option<i32>) {
        let g = if self.rng.random_bool(0.1) {
            None
        } else {
            Some(self.rng.random_range(0..6))
        };
        let v = if self.rng.random_bool(0.1) {
            None
        } else {
            Some(self.rng.random_range(0..20))
        };
        (g, v)
    }

    fn existing_id(&mut self, model: &Model) -> i64 {
        if model.t.is_empty() || self.rng.random_bool(0.05) {
            // Usually a no-op: an id that does not exist (any more).
            return self.rng.random_range(1..self.next_id.max(2));
        }
        let i = self.rng.random_range(0..model.t.len());
        *model.t.keys().nth(i).expect("index in range")
    }

    fn next(&mut self, model: &Model) -> Op {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=29 => {
                let n = self.rng.random_range(1..=5);
                let rows = (0..n)
                    .map(|_| {
                        let id = self.next_id;
                        self.next_id += 1;
                        (id, self.rng.random_range(0..8), self.t_value())
                    })
                    .collect();
                Op::InsertT(rows)
            }
            30..=39 => Op::SetV {
                id: self.existing_id(model),
                v: self.t_value(),
            },
            40..=44 => Op::MoveGroup {
                from: self.rng.random_range(0..8),
                to: self.rng.random_range(0..8),
            },
            45..=52 => Op::DeleteId(self.existing_id(model)),
            53..=56 => Op::DeleteGroupBelow {
                g: self.rng.random_range(0..8),
                below: self.rng.random_range(-5..20),
            },
            57..=74 => {
                let mut rows = Vec::new();
                for _ in 0..self.rng.random_range(1..=3) {
                    let row = if !model.m.is_empty() && self.rng.random_bool(0.3) {
                        *model.m.choose(&mut self.rng).expect("not empty")
                    } else {
                        self.m_row()
                    };
                    // Duplicates within one statement.
                    for _ in 0..self.rng.random_range(1..=3) {
                        rows.push(row);
                    }
                }
                Op::InsertM(rows)
            }
            75..=82 => {
                let (g, v) = match model.m.choose(&mut self.rng) {
                    Some((Some(g), Some(v))) if self.rng.random_bool(0.8) => (*g, *v),
                    _ => (self.rng.random_range(0..6), self.rng.random_range(0..20)),
                };
                Op::DeleteM { g, v }
            }
            83..=85 => Op::DeleteMAbove(self.rng.random_range(12..40)),
            86..=91 => Op::BumpM(self.rng.random_range(0..6)),
            92..=95 => Op::Nothing("FLUSH"),
            96..=97 => Op::Nothing("CHECKPOINT"),
            _ => Op::Nothing("SELECT count(*) FROM t"),
        }
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// Check the recovered server against the candidate models (the acknowledged
/// state, and that plus the in-flight statement): tables must equal one of
/// them exactly, and every view must equal its query over the tables.
/// Returns the index of the matching candidate.
async fn verify(
    client: &Client,
    server: &Weir,
    candidates: &[Model],
    views: &[View],
    ctx: &str,
) -> usize {
    verify_with(client, server, candidates, views, ctx, None).await
}

/// [`verify`], with the views' expected contents computed by PostgreSQL
/// (`oracle`) over the matching candidate model when given, else by a
/// plain SELECT on the recovered server.
async fn verify_with(
    client: &Client,
    server: &Weir,
    candidates: &[Model],
    views: &[View],
    ctx: &str,
    oracle: Option<&Client>,
) -> usize {
    // Views are maintained asynchronously: wait until they have caught up.
    must(client, server, "FLUSH").await;
    let t = sorted(must(client, server, "SELECT id, g, v FROM t").await);
    let m = sorted(must(client, server, "SELECT g, v FROM m").await);
    let Some(found) = candidates
        .iter()
        .position(|c| c.t_rows() == t && c.m_rows() == m)
    else {
        let mut msg = format!(
            "{ctx}: recovered tables match none of the {} candidate model(s) \
             (acknowledged state{})",
            candidates.len(),
            if candidates.len() > 1 {
                ", acknowledged + in-flight statement"
            } else {
                ""
            }
        );
        for (i, c) in candidates.iter().enumerate() {
            let _ = write!(
                msg,
                "\n candidate {i}: table t: {}\n candidate {i}: table m: {}",
                diff(&c.t_rows(), &t),
                diff(&c.m_rows(), &m)
            );
        }
        panic!("{msg}\n{}", server.tail());
    };
    if let Some(pg) = oracle {
        load_model(pg, &candidates[found]).await;
    }
    for v in views {
        let got = sorted(must(client, server, &format!("SELECT * FROM {}", v.name)).await);
        let want = match oracle {
            Some(pg) => sorted(
                query(pg, v.oracle)
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: Postgres failed `{}`: {e:?}", v.oracle)),
            ),
            None => sorted(must(client, server, v.oracle).await),
        };
        assert!(
            got == want,
            "{ctx}: view {} differs from `{}` over the recovered tables: {}\n{}",
            v.name,
            v.oracle,
            diff(&want, &got),
            server.tail()
        );
    }
    found
}

/// Make Postgres's `t` and `m` hold exactly `model`.
async fn load_model(pg: &Client, model: &Model) {
    let mut sql = String::from("BEGIN; TRUNCATE t, m;");
    for chunk in model.t.iter().collect::<Vec<_>>().chunks(500) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|(id, (g, v))| format!("({id}, {g}, {})", lit(*v)))
            .collect();
        let _ = write!(sql, "INSERT INTO t VALUES {};", rows.join(", "));
    }
    for chunk in model.m.chunks(500) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|(g, v)| format!("({}, {})", lit(*g), lit(*v)))
            .collect();
        let _ = write!(sql, "INSERT INTO m VALUES {};", rows.join(", "));
    }
    sql.push_str("COMMIT;");
    pg.batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("loading the model into Postgres: {e:?}"));
}

/// A throwaway Postgres holding the tables, and a client of it.
async fn postgres_oracle(name: &str) -> (postgres::Postgres, Client) {
    let pg = postgres::Postgres::start(name);
    let (client, connection) = tokio_postgres::connect(&pg.conninfo, NoTls)
        .await
        .expect("connect to the oracle Postgres");
    tokio::spawn(connection);
    for sql in TABLES {
        client
            .batch_execute(sql)
            .await
            .expect("create a table in Postgres");
    }
    (pg, client)
}

/// `weir_catalog.recovery`: (checkpoint_epoch, damaged_checkpoints,
/// wal_records_replayed, duration_ms).
async fn recovery(client: &Client, server: &Weir) -> (i64, i64, i64, i64) {
    let rows = must(
        client,
        server,
        "SELECT checkpoint_epoch, damaged_checkpoints, wal_records_replayed, duration_ms \
         FROM weir_catalog.recovery",
    )
    .await;
    assert_eq!(rows.len(), 1, "weir_catalog.recovery: {rows:?}");
    let n = |i: usize| -> i64 {
        rows[0][i]
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("weir_catalog.recovery column {i}: {:?}", rows[0]))
    };
    (n(0), n(1), n(2), n(3))
}

/// Run `op` on a live server (no crash expected) and update the model.
async fn run_acked(client: &Client, server: &Weir, model: &mut Model, op: &Op, ctx: &str) {
    let sql = op.sql();
    if let Err(e) = query(client, &sql).await {
        panic!(
            "{ctx}: `{sql}` failed on a live server: {e:?}\n{}",
            server.tail()
        );
    }
    op.apply(model);
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not a number")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------
// Test 1: random SIGKILLs
// ---------------------------------------------------------------------------

/// Write random statements until `kill_at`, then SIGKILL the server. With
/// `idle`, the kill happens between statements; otherwise while one is in
/// flight. Returns the statement whose fate is unknown, if any.
async fn write_then_kill(
    server: &mut Weir,
    client: &Client,
    model: &mut Model,
    gen: &mut Gen,
    kill_at: Instant,
    idle: bool,
    ctx: &str,
) -> (Option<Op>, usize) {
    let mut acked = 0;
    loop {
        if idle && Instant::now() >= kill_at {
            server.kill();
            return (None, acked);
        }
        let op = gen.next(model);
        let sql = op.sql();
        let fut = client.simple_query(&sql);
        tokio::pin!(fut);
        let result = if idle {
            Some(fut.as_mut().await)
        } else {
            tokio::select! {
                biased;
                r = fut.as_mut() => Some(r),
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(kill_at)) => None,
            }
        };
        match result {
            Some(Ok(_)) => {
                op.apply(model);
                acked += 1;
            }
            Some(Err(e)) => panic!(
                "{ctx}: `{sql}` failed before the kill: {e:?}\n{}",
                server.tail()
            ),
            None => {
                server.kill();
                // A reply that was already on its way means acknowledged.
                return match tokio::time::timeout(Duration::from_secs(5), fut).await {
                    Ok(Ok(_)) => {
                        op.apply(model);
                        (None, acked + 1)
                    }
                    _ => (Some(op), acked),
                };
            }
        }
    }
}

/// Candidate models after a crash with `in_flight` unacknowledged.
fn candidates(model: &Model, in_flight: &Option<Op>) -> Vec<Model> {
    let mut out = vec![model.clone()];
    if let Some(op) = in_flight {
        let mut with = model.clone();
        op.apply(&mut with);
        if with != *model {
            out.push(with);
        }
    }
    out
}

async fn random_kills_one_seed(seed: u64, cycles: usize, pg: &Client) {
    let mut tmp = TempDir::new(&format!("random-seed{seed}"));
    let data = tmp.path.join("data");
    let mut gen = Gen::new(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_cafe);
    let mut model = Model::default();
    let opts = |rng: &mut StdRng| Opts {
        checkpoint_interval: "100ms",
        failpoints: None,
        state_cache_mb: *[8, 64].choose(rng).expect("non-empty"),
        // Every restart may change the parallelism: recovery rescales.
        parallelism: Some(rng.random_range(1..=4)),
    };

    let mut server = Weir::spawn(&data, &opts(&mut rng), tmp.next_log("start"));
    let mut client = server.client().await;
    create_tables(&client, &server).await;
    create_views(&client, &server, &VIEWS[..EARLY_VIEWS]).await;
    let mut views = EARLY_VIEWS;

    for cycle in 0..cycles {
        let ctx = format!("seed {seed} cycle {cycle}");
        if cycle == 1 {
            // Views created on existing data, then crashed and recovered.
            create_views(&client, &server, &VIEWS[EARLY_VIEWS..]).await;
            views = VIEWS.len();
        }
        let run_ms = rng.random_range(50..=1500);
        let idle = rng.random_bool(0.25);
        let started = Instant::now();
        let (in_flight, acked) = write_then_kill(
            &mut server,
            &client,
            &mut model,
            &mut gen,
            started + Duration::from_millis(run_ms),
            idle,
            &ctx,
        )
        .await;
        drop(client);
        drop(server);

        server = Weir::spawn(
            &data,
            &opts(&mut rng),
            tmp.next_log(&format!("cycle{cycle}")),
        );
        client = server.client().await;
        let cands = candidates(&model, &in_flight);
        let ctx = format!(
            "{ctx} (killed after {run_ms} ms, {acked} statements acknowledged, in flight: {})",
            in_flight
                .as_ref()
                .map_or_else(|| "none".to_string(), |op| format!("`{}`", op.sql()))
        );
        let found = verify_with(&client, &server, &cands, &VIEWS[..views], &ctx, Some(pg)).await;
        model = cands[found].clone();
        let (epoch, damaged, replayed, ms) = recovery(&client, &server).await;
        assert_eq!(
            damaged,
            0,
            "{ctx}: a SIGKILL damaged a checkpoint\n{}",
            server.tail()
        );
        eprintln!(
            "{ctx}: recovered from checkpoint {epoch}, replayed {replayed} WAL records in \
             {ms} ms; in-flight statement {}; t has {} rows, m {}",
            match (in_flight.is_some(), found) {
                (false, _) => "none",
                (true, 0) => "absent",
                (true, _) => "present",
            },
            model.t.len(),
            model.m.len()
        );
    }
    drop(client);
    drop(server);
}

#[tokio::test]
async fn crash_recovery_random_kills() {
    let seeds = env_usize("WEIR_CRASH_SEEDS", 4) as u64;
    let cycles = env_usize("WEIR_CRASH_CYCLES", 3);
    let first = env_usize("WEIR_CRASH_SEED", 1) as u64;
    // Views are checked against PostgreSQL over the acknowledged writes.
    let (_pg, oracle) = postgres_oracle("crash-random").await;
    for seed in first..first + seeds {
        let started = Instant::now();
        random_kills_one_seed(seed, cycles, &oracle).await;
        eprintln!(
            "seed {seed}: {cycles} kill/restart cycles passed in {:.1} s \
             (reproduce: WEIR_CRASH_SEED={seed} WEIR_CRASH_SEEDS=1)",
            started.elapsed().as_secs_f64()
        );
    }
}

// ---------------------------------------------------------------------------
// Test 1b: rescale from a checkpoint
// ---------------------------------------------------------------------------

/// State file names of the newest manifest.
fn newest_state_files(data: &Path) -> Vec<String> {
    let Some((_, path)) = manifests(data).into_iter().next() else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(&path).expect("read manifest");
    let envelope: serde_json::Value = serde_json::from_str(&text).expect("manifest JSON");
    let inner: serde_json::Value =
        serde_json::from_str(envelope["manifest"].as_str().expect("manifest text"))
            .expect("inner manifest JSON");
    let mut names = Vec::new();
    if let Some(tables) = inner["tables"].as_object() {
        for chain in tables.values() {
            for f in chain.as_array().into_iter().flatten() {
                if let Some(n) = f["name"].as_str() {
                    names.push(n.to_string());
                }
            }
        }
    }
    names
}

/// Wait until a checkpoint newer than every write so far completes: one
/// newer than `before` (the newest before the writes), after which no new
/// one comes for a second (the coordinator checkpoints every 100 ms while
/// anything changed, and stops once everything is checkpointed).
async fn await_checkpoint(client: &Client, server: &Weir, data: &Path, before: u64) {
    must(client, server, "FLUSH").await;
    let newest = || manifests(data).first().map_or(0, |m| m.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = newest();
    let mut stable_since = Instant::now();
    loop {
        assert!(
            Instant::now() < deadline,
            "no checkpoint within 30 s\n{}",
            server.tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = newest();
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if last > before && stable_since.elapsed() > Duration::from_secs(1) {
            return;
        }
    }
}

#[tokio::test]
async fn rescale_from_a_checkpoint() {
    let mut tmp = TempDir::new("rescale");
    let data = tmp.path.join("data");
    let mut gen = Gen::new(77);
    let mut model = Model::default();
    let opts = |p: usize| Opts {
        parallelism: Some(p),
        ..Opts::interval("100ms")
    };
    let mut server = Weir::spawn(&data, &opts(2), tmp.next_log("p2"));
    let mut client = server.client().await;
    create_tables(&client, &server).await;
    create_views(&client, &server, VIEWS).await;
    let explain = must(
        &client,
        &server,
        "EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT g, count(*) FROM t GROUP BY g",
    )
    .await;
    let plan: Vec<String> = explain.iter().map(show).collect();
    assert!(
        plan.iter()
            .any(|l| l.contains("Exchange hash(") && l.contains("1 -> 2")),
        "EXPLAIN at parallelism 2: {plan:#?}"
    );
    let newest = |data: &Path| manifests(data).first().map_or(0, |m| m.0);
    let before = newest(&data);
    for step in 0..3 {
        for _ in 0..60 {
            let op = gen.next(&model);
            run_acked(&client, &server, &mut model, &op, "p=2").await;
        }
        verify(
            &client,
            &server,
            &[model.clone()],
            VIEWS,
            &format!("p=2 step {step}"),
        )
        .await;
    }
    await_checkpoint(&client, &server, &data, before).await;
    let files = newest_state_files(&data);
    assert!(
        files.iter().any(|n| n.contains("-full-000-127"))
            && files.iter().any(|n| n.contains("-full-128-255")),
        "at parallelism 2 each aggregate instance writes its own vnodes: {files:#?}"
    );
    for (p, label) in [(1usize, "p=1"), (4, "p=4"), (3, "p=3")] {
        server.kill();
        drop(client);
        drop(server);
        server = Weir::spawn(&data, &opts(p), tmp.next_log(label));
        client = server.client().await;
        let (epoch, damaged, replayed, _) = recovery(&client, &server).await;
        assert!(
            epoch > 0 && damaged == 0,
            "{label}: recovered from {epoch}, {damaged} damaged"
        );
        // Everything was in the checkpoint: the views' state came from the
        // files written at the old parallelism, not from replaying writes.
        assert_eq!(replayed, 0, "{label}: WAL records replayed");
        verify(
            &client,
            &server,
            &[model.clone()],
            VIEWS,
            &format!("{label} after restart"),
        )
        .await;
        for step in 0..2 {
            for _ in 0..60 {
                let op = gen.next(&model);
                run_acked(&client, &server, &mut model, &op, label).await;
            }
            verify(
                &client,
                &server,
                &[model.clone()],
                VIEWS,
                &format!("{label} step {step}"),
            )
            .await;
        }
        await_checkpoint(&client, &server, &data, before).await;
        let files = newest_state_files(&data);
        let first = format!("-000-{:03}.parquet", 256usize.div_ceil(p) - 1);
        if p == 1 {
            assert!(
                !files.iter().any(|n| n.matches('-').count() > 2),
                "{label}: files of other parallelisms are still referenced: {files:#?}"
            );
        } else {
            assert!(
                files.iter().any(|n| n.contains(&first)),
                "{label}: no file for the first instance's vnodes ({first}): {files:#?}"
            );
        }
    }
    drop(client);
    drop(server);
}

// ---------------------------------------------------------------------------
// Test 2: crash points
// ---------------------------------------------------------------------------

/// Manifest files (not `.tmp`) in `<data>/checkpoints`, newest epoch first.
fn manifests(data: &Path) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(data.join("checkpoints")) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let epoch = name
            .strip_prefix("manifest-")
            .and_then(|s| s.strip_suffix(".json"))
            .filter(|d| d.len() == 20)
            .and_then(|d| d.parse::<u64>().ok());
        if let Some(epoch) = epoch {
            out.push((epoch, e.path()));
        }
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.0));
    out
}

async fn crash_at(point: &str, at: u32, seed: u64) {
    let mut tmp = TempDir::new(&format!("failpoint-{point}"));
    let data = tmp.path.join("data");
    let spec = format!("{point}@{at}");
    let mut gen = Gen::new(seed);
    let mut model = Model::default();
    let mut jitter = StdRng::seed_from_u64(seed);

    // The schema first, without crash points (a point that fires early must
    // not interrupt it); then a SIGKILL and a start with the point armed.
    let mut server = Weir::spawn(&data, &Opts::interval("50ms"), tmp.next_log("schema"));
    let client = server.client().await;
    create_tables(&client, &server).await;
    create_views(&client, &server, VIEWS).await;
    drop(client);
    drop(server);

    let mut server = Weir::spawn(
        &data,
        &Opts {
            checkpoint_interval: "50ms",
            failpoints: Some(spec.clone()),
            state_cache_mb: 64,
            parallelism: None,
        },
        tmp.next_log(point),
    );
    let mut acked = 0;
    // `None`: the point fired during recovery, before serving.
    let in_flight = match server.connect().await {
        Err(e) => {
            eprintln!("WEIR_FAILPOINTS={spec}: the server never served: {e}");
            None
        }
        Ok(client) => {
            let started = Instant::now();
            loop {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "WEIR_FAILPOINTS={spec}: the server did not crash within 30 s of writes \
                     ({acked} statements acknowledged)\n{}",
                    server.tail()
                );
                let op = gen.next(&model);
                match client.simple_query(&op.sql()).await {
                    Ok(_) => {
                        op.apply(&mut model);
                        acked += 1;
                    }
                    Err(e) => {
                        assert!(
                            e.as_db_error().is_none(),
                            "WEIR_FAILPOINTS={spec}: `{}` failed with a SQL error: {e:?}\n{}",
                            op.sql(),
                            server.tail()
                        );
                        break Some(op);
                    }
                }
                if jitter.random_bool(0.3) {
                    tokio::time::sleep(Duration::from_millis(jitter.random_range(1..10))).await;
                }
            }
        }
    };
    let in_flight_sql = in_flight
        .as_ref()
        .map_or_else(|| "none".to_string(), |op| format!("`{}`", op.sql()));
    let Some(status) = server.wait_exit(Duration::from_secs(20)).await else {
        panic!(
            "WEIR_FAILPOINTS={spec}: the connection failed (in flight: {in_flight_sql}) but \
             the server did not exit\n{}",
            server.tail()
        );
    };
    assert!(
        !status.success(),
        "WEIR_FAILPOINTS={spec}: the server exited successfully ({status})\n{}",
        server.tail()
    );
    let reached = format!("failpoint {point} reached");
    assert!(
        server.stderr().contains(&reached),
        "WEIR_FAILPOINTS={spec}: exited ({status}) without `{reached}` on stderr\n{}",
        server.tail()
    );
    drop(server);
    let newest = manifests(&data).first().map_or(0, |(e, _)| *e);
    let on_disk = manifests(&data).len();

    let ctx = format!(
        "WEIR_FAILPOINTS={spec} (after {acked} acknowledged statements, in flight: \
         {in_flight_sql})"
    );
    let mut server = Weir::spawn(&data, &Opts::interval("100ms"), tmp.next_log("recover"));
    let client = server.client().await;
    let cands = candidates(&model, &in_flight);
    let found = verify(&client, &server, &cands, VIEWS, &ctx).await;
    model = cands[found].clone();
    let (epoch, damaged, replayed, _) = recovery(&client, &server).await;
    assert_eq!(
        damaged,
        0,
        "{ctx}: a crash at a crash point left a damaged checkpoint\n{}",
        server.tail()
    );
    assert_eq!(
        epoch as u64,
        newest,
        "{ctx}: recovered from checkpoint {epoch}, but the newest manifest on disk is {newest}\n{}",
        server.tail()
    );
    eprintln!(
        "{ctx}: {on_disk} manifests on disk, recovered from checkpoint {epoch}, replayed \
         {replayed} WAL records; in-flight statement {}",
        if found == 0 && cands.len() > 1 {
            "absent"
        } else if cands.len() > 1 {
            "present"
        } else {
            "had no effect"
        }
    );

    // The recovered server keeps working and checkpointing: more writes,
    // a checkpoint, a SIGKILL and one more recovery.
    for _ in 0..30 {
        let op = gen.next(&model);
        run_acked(&client, &server, &mut model, &op, &ctx).await;
    }
    must(&client, &server, "CHECKPOINT").await;
    for _ in 0..10 {
        let op = gen.next(&model);
        run_acked(&client, &server, &mut model, &op, &ctx).await;
    }
    verify(&client, &server, &[model.clone()], VIEWS, &ctx).await;
    drop(client);
    drop(server);
    let mut server = Weir::spawn(&data, &Opts::interval("100ms"), tmp.next_log("again"));
    let client = server.client().await;
    let ctx = format!("{ctx}, then more writes and a second restart");
    verify(&client, &server, &[model], VIEWS, &ctx).await;
    drop(client);
    drop(server);
}

#[tokio::test]
async fn crash_at_failpoints() {
    let default: &[(&str, u32)] = &[
        // The 40th logged DML: several checkpoints have completed by then.
        ("wal-after-append", 40),
        ("checkpoint-after-tables", 3),
        // Every table and view state table writes a file per checkpoint:
        // this is in the second or third checkpoint.
        ("checkpoint-after-file", 20),
        ("checkpoint-before-manifest", 3),
        ("checkpoint-after-manifest", 3),
    ];
    let mut points: Vec<(String, u32)> = default.iter().map(|(p, n)| (p.to_string(), *n)).collect();
    // `WEIR_CRASH_FAILPOINTS=name@n,...` replaces the list.
    if let Ok(spec) = std::env::var("WEIR_CRASH_FAILPOINTS") {
        points = spec
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| match s.trim().split_once('@') {
                Some((p, n)) => (
                    p.to_string(),
                    n.parse()
                        .unwrap_or_else(|_| panic!("WEIR_CRASH_FAILPOINTS: bad count in {s:?}")),
                ),
                None => (s.trim().to_string(), 1),
            })
            .collect();
    }
    for (i, (point, at)) in points.iter().enumerate() {
        let started = Instant::now();
        crash_at(point, *at, 100 + i as u64).await;
        eprintln!(
            "crash point {point}@{at}: passed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

// ---------------------------------------------------------------------------
// Test 3: damaged checkpoints
// ---------------------------------------------------------------------------

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("list {}: {e}", from.display()))
    {
        let entry = entry.expect("directory entry");
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
        }
    }
}

/// The state file names a manifest references (parsed from its JSON:
/// `{"crc32": .., "manifest": "<json text>"}`, `tables` maps a table id to
/// its chain of files).
fn manifest_files(path: &Path) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let envelope: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let inner = envelope["manifest"]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no `manifest` string", path.display()));
    let manifest: serde_json::Value = serde_json::from_str(inner)
        .unwrap_or_else(|e| panic!("{}: manifest text is not JSON: {e}", path.display()));
    let mut out = BTreeSet::new();
    if let Some(tables) = manifest["tables"].as_object() {
        for chain in tables.values() {
            for f in chain.as_array().into_iter().flatten() {
                if let Some(name) = f["name"].as_str() {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn truncate(path: &Path) {
    let len = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_len(len / 2)
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

fn remove(path: &Path) {
    std::fs::remove_file(path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
}

fn garbage(path: &Path) {
    std::fs::write(path, b"this is not a checkpoint manifest\n")
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Checkpoint layout of the base data directory.
struct Layout {
    /// (epoch, manifest path, files it references), newest first.
    manifests: Vec<(u64, PathBuf, BTreeSet<String>)>,
}

impl Layout {
    fn read(data: &Path) -> Layout {
        Layout {
            manifests: manifests(data)
                .into_iter()
                .map(|(e, p)| {
                    let files = manifest_files(&p);
                    (e, p, files)
                })
                .collect(),
        }
    }

    /// Files of manifest `i` that no older manifest references (damaging
    /// one of them damages checkpoint `i` only... and newer ones sharing it).
    fn exclusive(&self, i: usize) -> Vec<String> {
        let older: BTreeSet<&String> = self.manifests[i + 1..]
            .iter()
            .flat_map(|(_, _, f)| f.iter())
            .collect();
        self.manifests[i]
            .2
            .iter()
            .filter(|f| !older.contains(f))
            .cloned()
            .collect()
    }

    /// Path of `name` inside a copy of the data directory at `data`.
    fn file_in(data: &Path, name: &str) -> PathBuf {
        data.join("checkpoints").join(name)
    }

    fn manifest_in(&self, data: &Path, i: usize) -> PathBuf {
        let name = self.manifests[i].1.file_name().expect("manifest file name");
        data.join("checkpoints").join(name)
    }
}

/// Start on a damaged copy: the server must fall back to checkpoint
/// `expect_epoch`, report at least `min_damaged` damaged checkpoints and
/// serve exactly the model. Then it must keep working: more writes, a new
/// checkpoint, a SIGKILL and a clean recovery.
#[allow(clippy::too_many_arguments)]
async fn fallback_case(
    tmp: &mut TempDir,
    base: &Path,
    case: &str,
    damage: &dyn Fn(&Path),
    expect_epoch: u64,
    min_damaged: i64,
    model: &Model,
    gen: &mut Gen,
) {
    let data = tmp.path.join(format!("case-{case}"));
    copy_dir(base, &data);
    damage(&data);
    let ctx = format!("damage case `{case}`");
    let mut server = Weir::spawn(&data, &Opts::interval("1h"), tmp.next_log(case));
    let client = match server.connect().await {
        Ok(c) => c,
        Err(e) => panic!(
            "{ctx}: the server must fall back, but: {e}\n{}",
            server.tail()
        ),
    };
    verify(&client, &server, std::slice::from_ref(model), VIEWS, &ctx).await;
    let (epoch, damaged, replayed, _) = recovery(&client, &server).await;
    assert!(
        server.stderr().contains("falling back"),
        "{ctx}: no `falling back` line on stderr\n{}",
        server.tail()
    );
    assert!(
        damaged >= min_damaged,
        "{ctx}: weir_catalog.recovery reports {damaged} damaged checkpoints, expected >= \
         {min_damaged}\n{}",
        server.tail()
    );
    assert_eq!(
        epoch as u64,
        expect_epoch,
        "{ctx}: recovered from checkpoint {epoch}, expected the newest intact one\n{}",
        server.tail()
    );
    eprintln!(
        "{ctx}: fell back to checkpoint {epoch} ({damaged} damaged), replayed {replayed} WAL \
         records"
    );

    let mut model = model.clone();
    for _ in 0..20 {
        let op = gen.next(&model);
        run_acked(&client, &server, &mut model, &op, &ctx).await;
    }
    must(&client, &server, "CHECKPOINT").await;
    for _ in 0..5 {
        let op = gen.next(&model);
        run_acked(&client, &server, &mut model, &op, &ctx).await;
    }
    drop(client);
    drop(server);
    let mut server = Weir::spawn(
        &data,
        &Opts::interval("1h"),
        tmp.next_log(&format!("{case}-again")),
    );
    let client = server.client().await;
    let ctx = format!("{ctx}, after more writes, a checkpoint and a SIGKILL");
    verify(&client, &server, &[model], VIEWS, &ctx).await;
    drop(client);
    drop(server);
}

/// Start on a copy where every checkpoint is damaged: the server must exit
/// non-zero saying it refuses to start, without ever serving.
async fn refuse_case(tmp: &mut TempDir, base: &Path, case: &str, damage: &dyn Fn(&Path)) {
    let data = tmp.path.join(format!("case-{case}"));
    copy_dir(base, &data);
    damage(&data);
    let ctx = format!("damage case `{case}`");
    let mut server = Weir::spawn(&data, &Opts::interval("1h"), tmp.next_log(case));
    match server.wait_exit(Duration::from_secs(60)).await {
        Some(status) => {
            assert!(
                !status.success(),
                "{ctx}: the server exited with success\n{}",
                server.tail()
            );
            assert!(
                server.stderr().contains("refusing to start"),
                "{ctx}: exited ({status}) without `refusing to start` on stderr\n{}",
                server.tail()
            );
            eprintln!("{ctx}: refused to start ({status})");
        }
        None => {
            let served = match server.connect().await {
                Ok(client) => format!(
                    "it serves t = {:?}",
                    query(&client, "SELECT id, g, v FROM t").await
                ),
                Err(e) => e,
            };
            panic!(
                "{ctx}: every checkpoint is damaged but the server is still running after \
                 60 s ({served})\n{}",
                server.tail()
            );
        }
    }
}

#[tokio::test]
async fn corrupt_checkpoints_fall_back_or_refuse() {
    let mut tmp = TempDir::new("corrupt");
    let base = tmp.path.join("base");
    let mut gen = Gen::new(7);
    let mut model = Model::default();

    // Three explicit checkpoints with writes before each, and a WAL tail.
    {
        let mut server = Weir::spawn(&base, &Opts::interval("1h"), tmp.next_log("base"));
        let client = server.client().await;
        create_tables(&client, &server).await;
        create_views(&client, &server, VIEWS).await;
        for round in 0..3 {
            for _ in 0..25 {
                let op = gen.next(&model);
                run_acked(&client, &server, &mut model, &op, "base").await;
            }
            // A checkpoint is skipped when nothing changed since the last;
            // make sure this one has something to write.
            let op = Op::InsertT(vec![(1_000_000 + round, 1, Some(1))]);
            run_acked(&client, &server, &mut model, &op, "base").await;
            must(&client, &server, "CHECKPOINT").await;
        }
        for _ in 0..15 {
            let op = gen.next(&model);
            run_acked(&client, &server, &mut model, &op, "base").await;
        }
        verify(
            &client,
            &server,
            &[model.clone()],
            VIEWS,
            "base (before the kill)",
        )
        .await;
        drop(client);
        // SIGKILL, as after a crash.
    }
    let layout = Layout::read(&base);
    let epochs: Vec<u64> = layout.manifests.iter().map(|m| m.0).collect();
    assert!(
        layout.manifests.len() >= 3,
        "expected 3 checkpoints after 3 CHECKPOINT statements, found manifests {epochs:?}"
    );
    let exclusive = layout.exclusive(0);
    assert!(
        !exclusive.is_empty(),
        "the newest checkpoint {} references no file of its own: {:?}",
        epochs[0],
        layout.manifests[0].2
    );
    eprintln!(
        "checkpoints {epochs:?}; the newest one's own files: {exclusive:?}; model: t {} rows, \
         m {} rows",
        model.t.len(),
        model.m.len()
    );
    let pick = |k: usize| exclusive[k % exclusive.len()].clone();

    let name = pick(0);
    fallback_case(
        &mut tmp,
        &base,
        "flip-byte",
        &|d| flip_byte(&Layout::file_in(d, &name)),
        epochs[1],
        1,
        &model,
        &mut gen,
    )
    .await;
    let name = pick(1);
    fallback_case(
        &mut tmp,
        &base,
        "truncate",
        &|d| truncate(&Layout::file_in(d, &name)),
        epochs[1],
        1,
        &model,
        &mut gen,
    )
    .await;
    let name = pick(2);
    fallback_case(
        &mut tmp,
        &base,
        "delete-file",
        &|d| remove(&Layout::file_in(d, &name)),
        epochs[1],
        1,
        &model,
        &mut gen,
    )
    .await;
    fallback_case(
        &mut tmp,
        &base,
        "garbage-manifest",
        &|d| garbage(&layout.manifest_in(d, 0)),
        epochs[1],
        1,
        &model,
        &mut gen,
    )
    .await;
    fallback_case(
        &mut tmp,
        &base,
        "flip-manifest-byte",
        &|d| flip_byte(&layout.manifest_in(d, 0)),
        epochs[1],
        1,
        &model,
        &mut gen,
    )
    .await;
    // The two newest damaged: back to the oldest (the WAL must reach back
    // that far).
    let second = layout.exclusive(1);
    if let Some(name) = second.first() {
        fallback_case(
            &mut tmp,
            &base,
            "two-newest",
            &|d| {
                garbage(&layout.manifest_in(d, 0));
                flip_byte(&Layout::file_in(d, name));
            },
            epochs[2],
            2,
            &model,
            &mut gen,
        )
        .await;
    }

    refuse_case(&mut tmp, &base, "every-manifest-garbage", &|d| {
        for i in 0..layout.manifests.len() {
            garbage(&layout.manifest_in(d, i));
        }
    })
    .await;
    refuse_case(&mut tmp, &base, "a-file-of-every-checkpoint", &|d| {
        // One damaged file per checkpoint (a file shared by several is
        // damaged once).
        let mut names = BTreeSet::new();
        for i in 0..layout.manifests.len() {
            let own = layout.exclusive(i);
            let pick = own
                .first()
                .or_else(|| layout.manifests[i].2.iter().next())
                .expect("a checkpoint with files")
                .clone();
            names.insert(pick);
        }
        for n in names {
            flip_byte(&Layout::file_in(d, &n));
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Test 4: sources resume from their checkpointed offsets
// ---------------------------------------------------------------------------

/// A paced, bounded datagen source feeds views and a sink, each read by two
/// readers (parallelism 2: split `s` reads the 8192-row blocks `b` with
/// `b % 2 == s`). The server is killed at random moments while the source
/// is being read, and restarted at parallelism 1, 2 or 3; after each restart
/// the rows a view has seen are checked to be, split by split, a prefix of
/// that split's rows (no row twice, none skipped), and once the source
/// finished they equal the whole source exactly.
#[tokio::test]
async fn crash_while_reading_sources() {
    const ROWS: i64 = 60_000;
    let seed = 4242;
    let mut tmp = TempDir::new("sources");
    let data = tmp.path.join("data");
    let mut rng = StdRng::seed_from_u64(seed);
    const BLOCK: i64 = 8192;
    const SPLITS: i64 = 2;
    let opts = |p: usize| Opts {
        parallelism: Some(p),
        ..Opts::interval("200ms")
    };
    let mut server = Weir::spawn(&data, &opts(2), tmp.next_log("start"));
    let mut client = server.client().await;
    must(
        &client,
        &server,
        &format!(
            "CREATE SOURCE seq (id BIGINT, g INT, ts AS TO_TIMESTAMP_LTZ(id, 3)) WITH (
               connector = 'datagen', 'rows-per-second' = '10000', 'number-of-rows' = '{ROWS}',
               'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{ROWS}',
               'fields.g.min' = '0', 'fields.g.max' = '9')"
        ),
    )
    .await;
    must(
        &client,
        &server,
        "CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(id) AS s, \
         count(DISTINCT id) AS d, max(id) AS hi FROM seq",
    )
    .await;
    must(
        &client,
        &server,
        "CREATE MATERIALIZED VIEW per_g AS SELECT g, count(*) AS n FROM seq GROUP BY g",
    )
    .await;
    must(
        &client,
        &server,
        "CREATE MATERIALIZED VIEW blocks AS SELECT (id - 1) / 8192 AS b, count(*) AS n, \
         count(DISTINCT id) AS d, min(id) AS lo, max(id) AS hi FROM seq GROUP BY (id - 1) / 8192",
    )
    .await;
    must(
        &client,
        &server,
        "CREATE SINK groups AS SELECT g, sum(id) AS s FROM seq GROUP BY g WITH (connector = 'blackhole')",
    )
    .await;
    let num = |v: &Option<String>| -> i64 { v.as_deref().unwrap_or("0").parse().expect("number") };
    let check_totals = |rows: &[Row], ctx: &str| -> i64 {
        let r = &rows[0];
        let (n, d) = (num(&r[0]), num(&r[2]));
        assert_eq!(d, n, "{ctx}: a row was counted twice");
        n
    };
    // Split by split, the blocks seen are the split's first blocks, all full
    // but the last, which holds a prefix of its rows.
    let check_blocks = |rows: &[Row], ctx: &str| -> i64 {
        let mut total = 0;
        for split in 0..SPLITS {
            let mut blocks: Vec<(i64, i64, i64, i64, i64)> = rows
                .iter()
                .map(|r| (num(&r[0]), num(&r[1]), num(&r[2]), num(&r[3]), num(&r[4])))
                .filter(|b| b.0 % SPLITS == split)
                .collect();
            blocks.sort();
            for (k, (b, n, d, lo, hi)) in blocks.iter().enumerate() {
                assert_eq!(
                    *b,
                    split + k as i64 * SPLITS,
                    "{ctx}: split {split} skipped a block: {blocks:?}"
                );
                assert_eq!(
                    (*d, *lo, *hi),
                    (*n, b * BLOCK + 1, b * BLOCK + n),
                    "{ctx}: block {b} is not a prefix"
                );
                let full = BLOCK.min(ROWS - b * BLOCK);
                assert!(
                    k + 1 == blocks.len() || *n == full,
                    "{ctx}: block {b} is partial but not the split's last"
                );
                total += n;
            }
        }
        total
    };
    let mut kills = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        let rows = must(&client, &server, "SELECT * FROM totals").await;
        check_totals(&rows, &format!("before kill {kills}"));
        let rows = must(&client, &server, "SELECT b, n, d, lo, hi FROM blocks").await;
        let n = check_blocks(&rows, &format!("before kill {kills}"));
        if n == ROWS {
            let rows = must(&client, &server, "SELECT * FROM totals").await;
            let r = &rows[0];
            if num(&r[0]) != ROWS {
                continue;
            }
            assert_eq!(
                (num(&r[1]), num(&r[3])),
                (ROWS * (ROWS + 1) / 2, ROWS),
                "totals at the end"
            );
            // Each view reads the source on its own; the other one
            // finishes too, with every row once.
            let per_g = must(&client, &server, "SELECT sum(n), count(*) FROM per_g").await;
            if per_g[0][0].as_deref() != Some(ROWS.to_string().as_str()) {
                continue;
            }
            assert_eq!(per_g[0][1].as_deref(), Some("10"));
            break;
        }
        if kills < 4 {
            drop(client);
            server.kill();
            kills += 1;
            // Readers are rescaled too: the splits stay those of the
            // checkpoint, shared among the new readers.
            let p = rng.random_range(1..=3);
            server = Weir::spawn(
                &data,
                &opts(p),
                tmp.next_log(&format!("restart {kills} p={p}")),
            );
            client = server.client().await;
            let rows = must(&client, &server, "SELECT * FROM totals").await;
            check_totals(&rows, &format!("after kill {kills}"));
            let rows = must(&client, &server, "SELECT b, n, d, lo, hi FROM blocks").await;
            check_blocks(&rows, &format!("after kill {kills} (parallelism {p})"));
        }
    }
    assert!(kills >= 1, "the source finished before any kill");
    // The readers' progress counters are published after the rows they
    // count: wait (boundedly) until they report the source finished.
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = must(
            &client,
            &server,
            "SELECT source_offset, source_finished FROM weir_catalog.dataflows WHERE name = 'groups'",
        )
        .await;
        if rows[0][1].as_deref() == Some("t") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows[0][0].as_deref(), Some(ROWS.to_string().as_str()));
}

/// Transactions across two tables survive `kill -9` whole or not at all.
/// A writer runs transfers, each one transaction through a real client
/// (`BEGIN`, an UPDATE of two accounts and an INSERT into a ledger, both
/// extended-protocol statements with parameters, `COMMIT`), and the server
/// is killed at random moments. After each restart: every acknowledged
/// transfer is in the ledger, at most the one in flight besides, and the
/// balances are exactly the initial ones moved by the ledger's transfers,
/// so no transaction is half applied; the views equal their queries.
#[tokio::test]
async fn transactions_survive_kills() {
    const ACCOUNTS: i64 = 8;
    const START: i64 = 1000;
    let seed = env_usize("WEIR_CRASH_SEED", 77) as u64;
    let mut tmp = TempDir::new("txn");
    let data = tmp.path.join("data");
    let mut rng = StdRng::seed_from_u64(seed);
    let opts = Opts::interval("150ms");
    let mut server = Weir::spawn(&data, &opts, tmp.next_log("start"));
    let mut client = server.client().await;
    for sql in [
        "CREATE TABLE acct (id BIGINT PRIMARY KEY, bal BIGINT NOT NULL)",
        "CREATE TABLE ledger (tx BIGINT PRIMARY KEY, src BIGINT, dst BIGINT, amount BIGINT)",
        "CREATE MATERIALIZED VIEW money AS SELECT count(*) AS n, sum(bal) AS s FROM acct",
        "CREATE MATERIALIZED VIEW moved AS SELECT dst, count(*) AS n, sum(amount) AS s FROM ledger GROUP BY dst",
    ] {
        must(&client, &server, sql).await;
    }
    let values: Vec<String> = (0..ACCOUNTS).map(|i| format!("({i}, {START})")).collect();
    must(
        &client,
        &server,
        &format!("INSERT INTO acct VALUES {}", values.join(", ")),
    )
    .await;
    // tx id -> (src, dst, amount), for acknowledged transfers.
    let mut acked: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
    let mut next_tx = 0i64;
    for cycle in 0..4 {
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(200..900));
        while Instant::now() < deadline {
            let src = rng.random_range(0..ACCOUNTS);
            let dst = (src + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
            let amount = rng.random_range(1..50i64);
            next_tx += 1;
            let tx = client.transaction().await.expect("BEGIN");
            let n = tx
                .execute(
                    "UPDATE acct SET bal = bal + CASE WHEN id = $1 THEN -$3::BIGINT ELSE $3::BIGINT END \
                     WHERE id = $1 OR id = $2",
                    &[&src, &dst, &amount],
                )
                .await
                .expect("transfer");
            assert_eq!(n, 2, "both accounts updated");
            tx.execute(
                "INSERT INTO ledger VALUES ($1, $2, $3, $4)",
                &[&next_tx, &src, &dst, &amount],
            )
            .await
            .expect("ledger");
            tx.commit().await.expect("COMMIT");
            acked.insert(next_tx, (src, dst, amount));
        }
        // Kill with a transfer in flight: start one, and kill before or
        // after its COMMIT is sent.
        next_tx += 1;
        let (src, dst, amount) = (0, 1, 7);
        let pending = (next_tx, (src, dst, amount));
        let tx = client.transaction().await.expect("BEGIN");
        tx.execute(
            "UPDATE acct SET bal = bal + CASE WHEN id = $1 THEN -$3::BIGINT ELSE $3::BIGINT END \
             WHERE id = $1 OR id = $2",
            &[&src, &dst, &amount],
        )
        .await
        .expect("transfer");
        tx.execute(
            "INSERT INTO ledger VALUES ($1, $2, $3, $4)",
            &[&next_tx, &src, &dst, &amount],
        )
        .await
        .expect("ledger");
        // Kill at a random moment while COMMIT is on its way.
        let wait = Duration::from_micros(rng.random_range(0..4000));
        let committed = {
            let commit = tx.commit();
            tokio::pin!(commit);
            let done = tokio::select! {
                r = &mut commit => Some(r.is_ok()),
                _ = tokio::time::sleep(wait) => None,
            };
            server.kill();
            match done {
                Some(ok) => ok,
                None => commit.await.is_ok(),
            }
        };
        let mut in_flight = None;
        if committed {
            acked.insert(pending.0, pending.1);
        } else {
            in_flight = Some(pending);
        }
        drop(client);
        server = Weir::spawn(&data, &opts, tmp.next_log(&format!("restart {cycle}")));
        client = server.client().await;
        let ctx = format!("after kill {cycle}");
        let ledger = must(&client, &server, "SELECT tx, src, dst, amount FROM ledger").await;
        let num =
            |v: &Option<String>| -> i64 { v.as_deref().unwrap_or("0").parse().expect("number") };
        let mut present: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
        for r in &ledger {
            present.insert(num(&r[0]), (num(&r[1]), num(&r[2]), num(&r[3])));
        }
        for (id, t) in &acked {
            assert_eq!(
                present.get(id),
                Some(t),
                "{ctx}: acknowledged transfer {id} lost"
            );
        }
        for id in present.keys() {
            assert!(
                acked.contains_key(id) || in_flight.map(|(f, _)| f) == Some(*id),
                "{ctx}: transfer {id} present but never sent"
            );
        }
        // Whatever the ledger holds, the balances reflect exactly it.
        let mut expect: BTreeMap<i64, i64> = (0..ACCOUNTS).map(|i| (i, START)).collect();
        for (src, dst, amount) in present.values() {
            *expect.entry(*src).or_default() -= amount;
            *expect.entry(*dst).or_default() += amount;
        }
        let accounts = must(&client, &server, "SELECT id, bal FROM acct").await;
        let got: BTreeMap<i64, i64> = accounts.iter().map(|r| (num(&r[0]), num(&r[1]))).collect();
        assert_eq!(
            got, expect,
            "{ctx}: balances do not match the ledger (half a transaction?)"
        );
        // The in-flight transfer, if it made it, is now acknowledged state.
        acked = present;
        for (view, query) in [
            ("SELECT * FROM money", "SELECT count(*), sum(bal) FROM acct"),
            (
                "SELECT * FROM moved",
                "SELECT dst, count(*), sum(amount) FROM ledger GROUP BY dst",
            ),
        ] {
            let v = sorted(must(&client, &server, view).await);
            let q = sorted(must(&client, &server, query).await);
            assert_eq!(v, q, "{ctx}: {view}: {}", diff(&q, &v));
        }
    }
    assert!(acked.len() > 4, "too few transfers: {}", acked.len());
}

// ---------------------------------------------------------------------------
// Test: kill -9 while join views backfill
// ---------------------------------------------------------------------------

/// Join views whose backfill is interrupted by SIGKILL: after the restart
/// each such view either exists and equals PostgreSQL's answer over the
/// acknowledged writes, or does not exist (its CREATE was never
/// acknowledged) and can be created again; then writes go on and every
/// view still equals PostgreSQL's answer.
#[tokio::test]
async fn kill_while_join_views_backfill() {
    let (_pg, oracle) = postgres_oracle("crash-backfill").await;
    let joins: Vec<&View> = VIEWS
        .iter()
        .filter(|v| ["tm_join", "tm_left", "t_not_in_m"].contains(&v.name))
        .collect();
    for seed in 0..env_usize("WEIR_CRASH_SEEDS", 2) as u64 {
        let mut tmp = TempDir::new(&format!("backfill-seed{seed}"));
        let data = tmp.path.join("data");
        let mut rng = StdRng::seed_from_u64(seed ^ 0xbac4_f111);
        let mut gen = Gen::new(seed + 100);
        let mut model = Model::default();
        let opts = |rng: &mut StdRng| Opts {
            checkpoint_interval: "100ms",
            failpoints: None,
            state_cache_mb: 64,
            parallelism: Some(rng.random_range(1..=4)),
        };
        let mut server = Weir::spawn(&data, &opts(&mut rng), tmp.next_log("start"));
        let mut client = server.client().await;
        create_tables(&client, &server).await;
        let ctx = format!("backfill seed {seed}");
        for _ in 0..400 {
            let op = gen.next(&model);
            run_acked(&client, &server, &mut model, &op, &ctx).await;
        }
        // One CREATE in flight when the kill comes.
        let view = joins[seed as usize % joins.len()];
        let create = format!(
            "CREATE MATERIALIZED VIEW {} AS {}",
            view.name, view.definition
        );
        let delay = Duration::from_millis(rng.random_range(0..200));
        let acked = {
            let fut = client.simple_query(&create);
            tokio::pin!(fut);
            tokio::select! {
                biased;
                r = fut.as_mut() => r.is_ok(),
                _ = tokio::time::sleep(delay) => false,
            }
        };
        server.kill();
        drop(client);
        drop(server);
        server = Weir::spawn(&data, &opts(&mut rng), tmp.next_log("restart"));
        client = server.client().await;
        let exists = !must(
            &client,
            &server,
            &format!(
                "SELECT relname FROM pg_class WHERE relname = '{}' AND relkind = 'm'",
                view.name
            ),
        )
        .await
        .is_empty();
        assert!(
            exists || !acked,
            "{ctx}: an acknowledged CREATE was lost\n{}",
            server.tail()
        );
        let ctx = format!(
            "{ctx} (view {} after the kill: {})",
            view.name,
            if exists { "present" } else { "absent" }
        );
        if exists {
            verify_with(&client, &server, &[model.clone()], &[], &ctx, None).await;
            verify_with(
                &client,
                &server,
                &[model.clone()],
                std::slice::from_ref(view),
                &ctx,
                Some(&oracle),
            )
            .await;
        }
        // The others (and this one, if it is gone) backfill now.
        for v in &joins {
            let present = !must(
                &client,
                &server,
                &format!("SELECT relname FROM pg_class WHERE relname = '{}'", v.name),
            )
            .await
            .is_empty();
            if !present {
                must(
                    &client,
                    &server,
                    &format!("CREATE MATERIALIZED VIEW {} AS {}", v.name, v.definition),
                )
                .await;
            }
        }
        let owned: Vec<View> = joins
            .iter()
            .map(|v| View {
                name: v.name,
                definition: v.definition,
                oracle: v.oracle,
            })
            .collect();
        verify_with(
            &client,
            &server,
            &[model.clone()],
            &owned,
            &ctx,
            Some(&oracle),
        )
        .await;
        for _ in 0..200 {
            let op = gen.next(&model);
            run_acked(&client, &server, &mut model, &op, &ctx).await;
        }
        verify_with(
            &client,
            &server,
            &[model.clone()],
            &owned,
            &ctx,
            Some(&oracle),
        )
        .await;
        drop(client);
        drop(server);
    }
}
