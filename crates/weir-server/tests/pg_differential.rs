//! Randomized differential test with PostgreSQL as the oracle.
//!
//! The promise: every materialized view always equals the same query run
//! by PostgreSQL over the same inputs, under any INSERT, UPDATE or DELETE.
//! Weir's own batch path is no oracle (the same storage and formatting code
//! would sit on both sides), so this test starts a throwaway PostgreSQL
//! server (`common/postgres.rs`), creates the same tables in both systems,
//! creates every view shape in Weir as a materialized view and in
//! Postgres as a plain view with the same name and definition (so views on
//! views need no inlining), applies the same random statements to both,
//! and after every statement compares every view with Postgres's answer,
//! as a multiset of text rows.
//!
//! Shapes: every join type (inner, left, right, full, comma/WHERE form),
//! multi-column and expression keys, residual conditions, `IS NOT
//! DISTINCT FROM`, multi-way joins, self-joins (also of a multiset), joins
//! feeding aggregates and joins of aggregates, a cross join with a one-row
//! aggregate, EXISTS / NOT EXISTS (correlated, with a residual), IN / NOT
//! IN (with NULLs on both sides), scalar subqueries (uncorrelated in WHERE,
//! correlated in SELECT and WHERE, in HAVING), UNION ALL / UNION /
//! INTERSECT / EXCEPT, and views on join views. Keys come from a small
//! domain with NULLs, so rows match, stop matching and match again.
//!
//! About half of the views are created before any data (the incremental
//! path), the others at random later steps (backfill over existing rows),
//! each at a random parallelism from 1 to 4.
//!
//! Knobs: `WEIR_PGDIFF_SEEDS` (`N`, `A..B` or `A,B`; default 0..4),
//! `WEIR_PGDIFF_STEPS` (default 150), `WEIR_PGDIFF_VERBOSE=1`.
//!
//! Plain views (`CREATE VIEW`) are shapes too: read directly, and read by
//! a materialized view (through a plain view on a plain view).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage};

use common::postgres::Postgres;

const TABLES: &[&str] = &[
    "CREATE TABLE a (id INT PRIMARY KEY, k INT, v INT, s TEXT)",
    "CREATE TABLE b (id INT PRIMARY KEY, k INT, w INT)",
    "CREATE TABLE c (k INT, x INT)",
];

/// A view shape: its name and defining query, the same text in both
/// systems.
struct Shape {
    name: &'static str,
    sql: &'static str,
    /// Views it reads (created first).
    reads: &'static [&'static str],
    /// A plain view in Weir too (`CREATE VIEW`), not a materialized one.
    plain: bool,
}

const fn shape(name: &'static str, sql: &'static str) -> Shape {
    Shape {
        name,
        sql,
        reads: &[],
        plain: false,
    }
}

const SHAPES: &[Shape] = &[
    // --- joins ---
    shape(
        "j_inner",
        "SELECT a.id, a.k, a.v, b.id AS bid, b.w FROM a JOIN b ON a.k = b.k",
    ),
    shape(
        "j_left",
        "SELECT a.id, a.s, b.id AS bid, b.w FROM a LEFT JOIN b ON a.k = b.k",
    ),
    shape(
        "j_right",
        "SELECT a.id AS aid, a.s, b.id, b.w FROM a RIGHT JOIN b ON a.k = b.k",
    ),
    shape(
        "j_full_residual",
        "SELECT a.id AS aid, b.id AS bid, a.v, b.w FROM a FULL JOIN b ON a.k = b.k AND a.v < b.w",
    ),
    shape(
        "j_left_residual",
        "SELECT a.id, b.id AS bid FROM a LEFT JOIN b ON a.k = b.k AND b.w > 3",
    ),
    shape(
        "j_comma",
        "SELECT a.id, b.id AS bid FROM a, b WHERE a.k = b.k AND a.v = b.w",
    ),
    shape(
        "j_expr_keys",
        "SELECT a.id, b.id AS bid FROM a JOIN b ON a.k + 1 = b.w AND a.v % 3 = b.k % 3",
    ),
    shape(
        "j_not_distinct",
        "SELECT a.id, b.id AS bid FROM a JOIN b ON a.k IS NOT DISTINCT FROM b.k",
    ),
    shape(
        "j_three_way",
        "SELECT a.id, b.id AS bid, c.x FROM a JOIN b ON a.k = b.k LEFT JOIN c ON c.k = b.w",
    ),
    shape(
        "j_self",
        "SELECT p.id, q.id AS qid FROM a p JOIN a q ON p.k = q.v",
    ),
    shape(
        "j_self_multiset",
        "SELECT c1.k, c1.x, c2.x AS x2 FROM c c1 JOIN c c2 ON c1.k = c2.k AND c1.x <= c2.x",
    ),
    shape(
        "j_feeds_agg",
        "SELECT a.k, count(*) AS n, sum(b.w) AS sw, max(a.v) AS mv FROM a JOIN b ON a.k = b.k GROUP BY a.k",
    ),
    shape(
        "j_of_aggs",
        "SELECT s.k, s.n, t.m FROM (SELECT k, count(*) AS n FROM a GROUP BY k) s \
         LEFT JOIN (SELECT k, sum(x) AS m FROM c GROUP BY k) t ON s.k = t.k",
    ),
    shape(
        "j_cross_one_row",
        "SELECT a.id, g.n FROM a CROSS JOIN (SELECT count(*) AS n FROM b) g",
    ),
    // --- subqueries ---
    shape(
        "q_exists",
        "SELECT id FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w > a.v)",
    ),
    shape(
        "q_not_exists",
        "SELECT id, k FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k)",
    ),
    shape("q_in", "SELECT id FROM a WHERE k IN (SELECT k FROM c)"),
    shape("q_not_in", "SELECT id, k FROM a WHERE k NOT IN (SELECT k FROM c)"),
    shape(
        "q_not_in_no_nulls",
        "SELECT id FROM a WHERE v NOT IN (SELECT w FROM b WHERE w IS NOT NULL)",
    ),
    shape(
        "q_scalar",
        "SELECT id, v FROM a WHERE v * 2 > (SELECT max(w) FROM b)",
    ),
    // Dynamic filters: a column against a one-row subquery, either side,
    // each comparison, beside other conjuncts.
    shape(
        "q_dyn_min",
        "SELECT id, k, v FROM a WHERE k IS NOT NULL AND v <= (SELECT min(w) FROM b) + 3",
    ),
    shape(
        "q_dyn_flipped",
        "SELECT id FROM a WHERE (SELECT avg(x) FROM c) < v",
    ),
    shape(
        "q_dyn_eq",
        "SELECT id, v FROM a WHERE v = (SELECT max(w) FROM b WHERE k = 1)",
    ),
    shape(
        "q_dyn_text",
        "SELECT id, s FROM a WHERE s >= (SELECT min(s) FROM a WHERE k = 2)",
    ),
    shape(
        "q_scalar_select",
        "SELECT id, (SELECT count(*) FROM b WHERE b.k = a.k) AS n FROM a",
    ),
    shape(
        "q_scalar_where",
        "SELECT id FROM a WHERE v >= (SELECT sum(x) FROM c WHERE c.k = a.k)",
    ),
    shape(
        "q_having",
        "SELECT k, count(*) AS n FROM a GROUP BY k HAVING count(*) >= (SELECT count(*) FROM c) / 3",
    ),
    // --- set operations ---
    shape(
        "s_union_all",
        "SELECT k, v FROM a UNION ALL SELECT k, w FROM b",
    ),
    shape("s_union", "SELECT k FROM a UNION SELECT k FROM c"),
    shape("s_intersect", "SELECT k FROM a INTERSECT SELECT k FROM c"),
    shape("s_except", "SELECT k FROM a EXCEPT SELECT k FROM b"),
    // --- views on join views ---
    Shape {
        name: "v_on_join",
        sql: "SELECT k, count(*) AS n, sum(w) AS sw FROM j_inner GROUP BY k",
        reads: &["j_inner"],
        plain: false,
    },
    Shape {
        name: "v_join_of_views",
        sql: "SELECT l.id, l.bid, r.n FROM j_left l JOIN q_scalar_select r ON l.id = r.id",
        reads: &["j_left", "q_scalar_select"],
        plain: false,
    },
    // --- plain views, and materialized views over them ---
    Shape {
        name: "p_left",
        sql: "SELECT a.id, a.k, b.w FROM a LEFT JOIN b ON a.k = b.k",
        reads: &[],
        plain: true,
    },
    Shape {
        name: "p_on_plain",
        sql: "SELECT k, count(*) AS n FROM p_left WHERE w IS NOT NULL GROUP BY k",
        reads: &["p_left"],
        plain: true,
    },
    Shape {
        name: "v_on_plain",
        sql: "SELECT p.k, p.n, c.x FROM p_on_plain p JOIN c ON p.k = c.k",
        reads: &["p_on_plain"],
        plain: false,
    },
];

type Row = Vec<Option<String>>;

async fn connect(conninfo: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conninfo}: {e}"));
    tokio::spawn(connection);
    client
}

async fn rows(client: &Client, sql: &str) -> Result<Vec<Row>, String> {
    let messages = tokio::time::timeout(Duration::from_secs(60), client.simple_query(sql))
        .await
        .map_err(|_| format!("timeout: {sql}"))?
        .map_err(|e| format!("{e:?}"))?;
    let mut out = Vec::new();
    for m in messages {
        if let SimpleQueryMessage::Row(r) = m {
            out.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
        }
    }
    out.sort();
    Ok(out)
}

async fn exec(client: &Client, sql: &str) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(60), client.batch_execute(sql))
        .await
        .map_err(|_| format!("timeout: {sql}"))?
        .map_err(|e| match e.as_db_error() {
            Some(d) => format!("{}: {}", d.code().code(), d.message()),
            None => e.to_string(),
        })
}

fn seeds() -> Vec<u64> {
    let spec = std::env::var("WEIR_PGDIFF_SEEDS").unwrap_or_else(|_| "4".into());
    if let Some((a, b)) = spec.split_once("..") {
        return (a.parse().unwrap()..b.parse().unwrap()).collect();
    }
    if spec.contains(',') {
        return spec
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect();
    }
    (0..spec.parse().unwrap()).collect()
}

fn steps() -> usize {
    std::env::var("WEIR_PGDIFF_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150)
}

/// A key: small domain, NULL one time in five.
fn key(rng: &mut StdRng) -> String {
    if rng.random_bool(0.2) {
        "NULL".into()
    } else {
        rng.random_range(0..5).to_string()
    }
}

/// A value: 0..10, NULL one time in ten.
fn value(rng: &mut StdRng) -> String {
    if rng.random_bool(0.1) {
        "NULL".into()
    } else {
        rng.random_range(0..10).to_string()
    }
}

struct Ids {
    a: Vec<i32>,
    b: Vec<i32>,
    next: i32,
}

/// A random statement over a, b and c. Ids stay unique (no statement is
/// meant to fail), but updates move rows between keys and values.
fn statement(rng: &mut StdRng, ids: &mut Ids) -> String {
    let pick = |rng: &mut StdRng, v: &Vec<i32>| -> i32 { v.choose(rng).copied().unwrap_or(0) };
    match rng.random_range(0..14) {
        0..=2 => {
            let n = rng.random_range(1..=4);
            let rows: Vec<String> = (0..n)
                .map(|_| {
                    ids.next += 1;
                    ids.a.push(ids.next);
                    let s = ["'p'", "'q'", "'r'", "NULL"]
                        .choose(rng)
                        .copied()
                        .unwrap_or("NULL");
                    format!("({}, {}, {}, {s})", ids.next, key(rng), value(rng))
                })
                .collect();
            format!("INSERT INTO a VALUES {}", rows.join(", "))
        }
        3..=4 => {
            let n = rng.random_range(1..=3);
            let rows: Vec<String> = (0..n)
                .map(|_| {
                    ids.next += 1;
                    ids.b.push(ids.next);
                    format!("({}, {}, {})", ids.next, key(rng), value(rng))
                })
                .collect();
            format!("INSERT INTO b VALUES {}", rows.join(", "))
        }
        5..=6 => {
            let n = rng.random_range(1..=3);
            // Duplicates on purpose: c is a multiset.
            let row = format!("({}, {})", key(rng), value(rng));
            let rows: Vec<String> = (0..n)
                .map(|i| {
                    if i > 0 && rng.random_bool(0.3) {
                        row.clone()
                    } else {
                        format!("({}, {})", key(rng), value(rng))
                    }
                })
                .collect();
            format!("INSERT INTO c VALUES {}", rows.join(", "))
        }
        7 => format!(
            "UPDATE a SET k = {}, v = {} WHERE id = {}",
            key(rng),
            value(rng),
            pick(rng, &ids.a)
        ),
        8 => format!("UPDATE b SET w = {} WHERE k = {}", value(rng), key(rng)),
        9 => format!(
            "UPDATE c SET k = {} WHERE x = {}",
            key(rng),
            rng.random_range(0..10)
        ),
        10 => {
            let id = pick(rng, &ids.a);
            ids.a.retain(|x| *x != id);
            format!("DELETE FROM a WHERE id = {id}")
        }
        11 => {
            // By predicate: the set of ids may shrink by several.
            let k = rng.random_range(0..5);
            format!(
                "DELETE FROM b WHERE k = {k} AND w > {}",
                rng.random_range(0..10)
            )
        }
        // NULL keys go too, so NOT IN over c is sometimes true.
        12 if rng.random_bool(0.4) => "DELETE FROM c WHERE k IS NULL".to_string(),
        12 => format!(
            "DELETE FROM c WHERE k = {} AND x < {}",
            rng.random_range(0..5),
            rng.random_range(0..10)
        ),
        _ => format!(
            "UPDATE a SET v = v + 1 WHERE k = {} AND v < 9",
            rng.random_range(0..5)
        ),
    }
}

/// What the comparisons covered, so a vacuous run is caught.
#[derive(Default)]
struct Coverage {
    comparisons: usize,
    rows: usize,
    /// Shapes seen with at least one row.
    nonempty: BTreeSet<&'static str>,
}

struct Failure {
    seed: u64,
    step: usize,
    view: String,
    detail: String,
}

async fn run_seed(seed: u64, pg: &Postgres, failures: &mut Vec<Failure>, cov: &mut Coverage) {
    let verbose = std::env::var("WEIR_PGDIFF_VERBOSE").is_ok();
    let mut rng = StdRng::seed_from_u64(seed);
    let db = format!("pgdiff_{seed}");
    let admin = connect(&pg.conninfo).await;
    exec(&admin, &format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
    exec(&admin, &format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let oracle = connect(&pg.conninfo_of(&db)).await;
    let weir = common::start(&format!("pgdiff-{seed}")).await;
    let writer = connect(&weir.conninfo).await;
    let reader = connect(&weir.conninfo).await;
    for t in TABLES {
        exec(&oracle, t).await.unwrap();
        exec(&writer, t).await.unwrap();
    }
    // Postgres: every shape as a plain view, in order.
    for s in SHAPES {
        exec(&oracle, &format!("CREATE VIEW {} AS {}", s.name, s.sql))
            .await
            .unwrap();
    }
    let total = steps();
    // When each Weir view is created: step 0 (before data) or later.
    let mut create_at: Vec<usize> = SHAPES
        .iter()
        .map(|_| {
            if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(1..total.max(2))
            }
        })
        .collect();
    // A view on views comes no earlier than what it reads.
    for (i, s) in SHAPES.iter().enumerate() {
        for r in s.reads {
            if let Some(j) = SHAPES.iter().position(|x| x.name == *r) {
                create_at[i] = create_at[i].max(create_at[j]);
            }
        }
    }
    let mut live: Vec<usize> = Vec::new();
    let mut broken: BTreeSet<usize> = BTreeSet::new();
    let mut ids = Ids {
        a: Vec::new(),
        b: Vec::new(),
        next: 0,
    };
    let mut log: Vec<String> = TABLES.iter().map(|s| s.to_string()).collect();
    for step in 0..=total {
        for (i, s) in SHAPES.iter().enumerate() {
            if create_at[i] != step {
                continue;
            }
            let p = rng.random_range(1..=4);
            let ddl = if s.plain {
                format!("CREATE VIEW {} AS {}", s.name, s.sql)
            } else {
                format!(
                    "CREATE MATERIALIZED VIEW {} WITH (parallelism = {p}) AS {}",
                    s.name, s.sql
                )
            };
            if verbose {
                eprintln!("seed {seed} step {step}: {ddl}");
            }
            log.push(ddl.clone());
            match exec(&writer, &ddl).await {
                Ok(()) => live.push(i),
                Err(e) => {
                    failures.push(Failure {
                        seed,
                        step,
                        view: s.name.into(),
                        detail: format!("CREATE failed: {e}"),
                    });
                    broken.insert(i);
                }
            }
        }
        if step > 0 {
            let sql = statement(&mut rng, &mut ids);
            if verbose {
                eprintln!("seed {seed} step {step}: {sql}");
            }
            log.push(sql.clone());
            let expected = exec(&oracle, &sql).await;
            let got = exec(&writer, &sql).await;
            if expected.is_ok() != got.is_ok() {
                failures.push(Failure {
                    seed,
                    step,
                    view: "(statement)".into(),
                    detail: format!("{sql}: postgres {expected:?}, weir {got:?}"),
                });
                return;
            }
        }
        for &i in &live {
            if broken.contains(&i) {
                continue;
            }
            let name = SHAPES[i].name;
            let q = format!("SELECT * FROM {name}");
            let want = rows(&oracle, &q).await;
            let have = rows(&reader, &q).await;
            cov.comparisons += 1;
            if let Ok(r) = &want {
                cov.rows += r.len();
                if !r.is_empty() {
                    cov.nonempty.insert(name);
                }
            }
            if want != have {
                let show = |r: &Result<Vec<Row>, String>| match r {
                    Ok(rows) => rows
                        .iter()
                        .map(|r| {
                            let cells: Vec<&str> =
                                r.iter().map(|c| c.as_deref().unwrap_or("NULL")).collect();
                            format!("({})", cells.join(", "))
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                    Err(e) => format!("error {e}"),
                };
                let detail = format!(
                    "after: {}\n  postgres: {}\n  weir:     {}\n  statements:\n    {}",
                    log.last().cloned().unwrap_or_default(),
                    show(&want),
                    show(&have),
                    log.join(";\n    ")
                );
                failures.push(Failure {
                    seed,
                    step,
                    view: name.into(),
                    detail,
                });
                broken.insert(i);
            }
        }
    }
    drop(reader);
    drop(writer);
    weir.server.engine().shutdown();
    drop(weir);
    let _ = exec(&admin, &format!("DROP DATABASE IF EXISTS {db}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_match_postgres() {
    let pg = Postgres::start("pgdiff");
    let mut failures = Vec::new();
    let mut cov = Coverage::default();
    let seeds = seeds();
    for &seed in &seeds {
        run_seed(seed, &pg, &mut failures, &mut cov).await;
    }
    if !failures.is_empty() {
        let mut text = String::new();
        for f in &failures {
            text.push_str(&format!(
                "\n--- seed {} step {} view {}:\n  {}\n",
                f.seed, f.step, f.view, f.detail
            ));
        }
        panic!(
            "{} view(s) differ from PostgreSQL over {} seeds:{text}",
            failures.len(),
            seeds.len()
        );
    }
    let empty: Vec<&str> = SHAPES
        .iter()
        .map(|s| s.name)
        .filter(|n| !cov.nonempty.contains(n))
        .collect();
    assert!(
        empty.is_empty() || steps() < 20,
        "these shapes never held a row, so their comparisons proved little: {empty:?}"
    );
    eprintln!(
        "{} shapes matched PostgreSQL after every statement, {} seeds x {} steps: \
         {} view comparisons, {} rows compared",
        SHAPES.len(),
        seeds.len(),
        steps(),
        cov.comparisons,
        cov.rows
    );
}
