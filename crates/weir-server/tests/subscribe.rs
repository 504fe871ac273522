//! SUBSCRIBE cursors through a real client: the snapshot, then every
//! committed change with its epoch and diff, nothing skipped or repeated
//! (the snapshot plus all diffs equals the view at the end), one timestamp
//! per statement, FETCH timeouts, and the errors Postgres gives for
//! cursors.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

mod common;
use common::connect;

/// Rows of a simple query, as text.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// A server with table `t` (ids 1..3 in groups a, a, b) and view `per_g`
/// defined by `view`; a subscriber and a writer connection.
async fn start_with_view(name: &str, view: &str) -> (common::TestServer, Client, Client) {
    let server = common::start(name).await;
    let sub = connect(&server.conninfo).await;
    let writer = connect(&server.conninfo).await;
    writer
        .batch_execute(&format!(
            "CREATE TABLE t (id INT PRIMARY KEY, g TEXT, v INT);
             INSERT INTO t VALUES (1, 'a', 1), (2, 'a', 2), (3, 'b', 3);
             CREATE MATERIALIZED VIEW per_g AS {view};"
        ))
        .await
        .unwrap();
    (server, sub, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_cursor_streams_every_change_once() {
    let (_server, sub, writer) = start_with_view(
        "subscribe",
        "SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g",
    )
    .await;

    // Cursors need a transaction block, as in Postgres.
    let err = sub
        .simple_query("DECLARE c CURSOR FOR SUBSCRIBE per_g")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25P01"));

    sub.batch_execute("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE TO per_g")
        .await
        .unwrap();
    // The snapshot: every row once, diff 1, one timestamp.
    let snapshot = rows(&sub, "FETCH ALL c WITH (timeout = '0s')").await;
    assert_eq!(snapshot.len(), 2, "{snapshot:?}");
    assert!(snapshot
        .iter()
        .all(|r| r[1] == "1" && r[0] == snapshot[0][0]));
    let start: i64 = snapshot[0][0].parse().unwrap();

    // Nothing new: FETCH waits for its timeout and returns no row.
    let t = Instant::now();
    assert!(rows(&sub, "FETCH 10 c WITH (timeout = '300ms')")
        .await
        .is_empty());
    assert!(t.elapsed() >= Duration::from_millis(250));

    // Changes from another session.
    for sql in [
        "INSERT INTO t VALUES (4, 'b', 10)",
        "UPDATE t SET g = 'c' WHERE id = 1",
        "DELETE FROM t WHERE id = 2",
        "INSERT INTO t VALUES (5, 'd', 5), (6, 'd', 6)",
        "DELETE FROM t WHERE g = 'd'",
    ] {
        writer.batch_execute(sql).await.unwrap();
    }
    // Read in small pieces until the changes stop.
    let mut changes = Vec::new();
    loop {
        let got = rows(&sub, "FETCH 3 FROM c WITH (timeout = '500ms')").await;
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 3);
        changes.extend(got);
    }
    // Timestamps never go back and are after the snapshot's; each
    // statement's changes share one timestamp (5 statements, 5 epochs).
    let stamps: Vec<i64> = changes.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{changes:?}");
    assert!(stamps.iter().all(|s| *s > start));
    let mut distinct = stamps.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "{changes:?}");

    // Snapshot + diffs = the view now: nothing skipped, nothing twice.
    let mut state: BTreeMap<Vec<String>, i64> = BTreeMap::new();
    for r in snapshot.iter().chain(&changes) {
        let diff: i64 = r[1].parse().unwrap();
        *state.entry(r[2..].to_vec()).or_default() += diff;
    }
    state.retain(|_, n| *n != 0);
    assert!(state.values().all(|n| *n == 1), "{state:?}");
    let mut now = rows(&writer, "SELECT g, n, s FROM per_g").await;
    now.sort();
    assert_eq!(state.keys().cloned().collect::<Vec<_>>(), now);

    // Errors: unknown cursor, closing, and the block closes cursors.
    let err = sub.simple_query("FETCH 1 nope").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("34000"));
    sub.batch_execute("ROLLBACK; BEGIN; DECLARE c CURSOR FOR SUBSCRIBE per_g; CLOSE c")
        .await
        .unwrap();
    let err = sub.simple_query("FETCH 1 c").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("34000"));
    sub.batch_execute("ROLLBACK").await.unwrap();

    // A table can be subscribed to as well.
    sub.batch_execute("BEGIN; DECLARE d CURSOR FOR SUBSCRIBE t")
        .await
        .unwrap();
    assert_eq!(
        rows(&sub, "FETCH ALL d WITH (timeout = '0s')").await.len(),
        3
    );
    writer
        .batch_execute("INSERT INTO t VALUES (7, 'e', 7)")
        .await
        .unwrap();
    let got = rows(&sub, "FETCH ALL d WITH (timeout = '2s')").await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0][1..], ["1", "7", "e", "7"]);
    // Through the extended protocol too (Describe gives FETCH's columns).
    writer
        .batch_execute("DELETE FROM t WHERE id = 7")
        .await
        .unwrap();
    let got = sub
        .query("FETCH ALL d WITH (timeout = '2s')", &[])
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].get::<_, i64>("weir_diff"), -1);
    assert_eq!(got[0].get::<_, Option<i32>>("id"), Some(7));
    sub.batch_execute("COMMIT").await.unwrap();
}

/// `SUBSCRIBE name` as a simple query streams: rows arrive while the
/// statement runs (each flushed as it commits), until the client cancels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_subscribe_streams_until_cancelled() {
    use futures::StreamExt;
    let server = common::start("subscribe-plain").await;
    let config = server.conninfo.clone();
    let sub = connect(&config).await;
    let writer = connect(&config).await;
    writer
        .batch_execute("CREATE TABLE t (id INT, v TEXT); INSERT INTO t VALUES (1, 'a')")
        .await
        .unwrap();
    let stream = sub.simple_query_raw("SUBSCRIBE TO t").await.unwrap();
    futures::pin_mut!(stream);
    let mut next_row = async || -> Vec<String> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("a row within 10 s")
                .expect("the stream goes on")
                .expect("no error");
            if let SimpleQueryMessage::Row(r) = msg {
                return (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect();
            }
        }
    };
    // The snapshot row arrives while SUBSCRIBE runs.
    assert_eq!(&next_row().await[1..], ["1", "1", "a"]);
    // Then each committed change, as it commits.
    writer
        .batch_execute("INSERT INTO t VALUES (2, 'b')")
        .await
        .unwrap();
    assert_eq!(&next_row().await[1..], ["1", "2", "b"]);
    writer
        .batch_execute("DELETE FROM t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(&next_row().await[1..], ["-1", "1", "a"]);
    // Cancel ends it with 57014; the session goes on.
    sub.cancel_token().cancel_query(NoTls).await.unwrap();
    let mut error = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        if let Err(e) = msg {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("SUBSCRIBE ended with an error");
    assert_eq!(error.code().map(|c| c.code()), Some("57014"));
    assert_eq!(
        rows(&sub, "SELECT count(*) FROM t").await,
        vec![vec!["1".to_string()]]
    );
}

/// Fold a subscription's rows (`weir_timestamp`, `weir_diff`, columns...)
/// into the multiset they describe; every count must end at 0 or 1.
fn fold(rows: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut state: BTreeMap<Vec<String>, i64> = BTreeMap::new();
    for r in rows {
        let diff: i64 = r[1].parse().unwrap();
        *state.entry(r[2..].to_vec()).or_default() += diff;
    }
    state.retain(|_, n| *n != 0);
    assert!(state.values().all(|n| *n == 1), "{state:?}");
    state.into_keys().collect()
}

/// `SUBSCRIBE (query)`: a dataflow of the subscription's own, over a table
/// and over a view; first the query's result, then its changes, which fold
/// into the same query run as a batch at the end; a failing query ends
/// the subscription with its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_to_a_query() {
    let (_server, sub, writer) = start_with_view(
        "subscribe-query",
        "SELECT g, count(*) AS n FROM t GROUP BY g",
    )
    .await;
    const QUERY: &str = "SELECT g, count(*) AS n, sum(v) AS s FROM t WHERE v > 1 GROUP BY g";
    const OVER_VIEW: &str = "SELECT count(*) AS groups, sum(n) AS rows FROM per_g";
    sub.batch_execute(&format!(
        "BEGIN; DECLARE q CURSOR FOR SUBSCRIBE ({QUERY}); DECLARE w CURSOR FOR SUBSCRIBE TO ({OVER_VIEW})"
    ))
    .await
    .unwrap();
    let mut got_q = rows(&sub, "FETCH ALL q WITH (timeout = '5s')").await;
    let mut want = rows(&writer, QUERY).await;
    want.sort();
    assert_eq!(fold(&got_q), want);
    assert!(got_q.iter().all(|r| r[0] == got_q[0][0] && r[1] == "1"));
    let mut got_w = rows(&sub, "FETCH ALL w WITH (timeout = '5s')").await;
    assert_eq!(fold(&got_w), vec![vec!["2".to_string(), "3".into()]]);

    let statements = [
        "INSERT INTO t VALUES (4, 'b', 10)",
        "UPDATE t SET g = 'c' WHERE id = 1",
        "UPDATE t SET v = 0 WHERE id = 2",
        "DELETE FROM t WHERE id = 3",
        "INSERT INTO t VALUES (5, 'd', 5), (6, 'd', 6), (7, 'a', 7)",
        "DELETE FROM t WHERE g = 'd'",
    ];
    for sql in statements {
        writer.batch_execute(sql).await.unwrap();
    }
    // Read until both have caught up with the batch answers.
    let mut want = rows(&writer, QUERY).await;
    want.sort();
    let want_w = rows(&writer, OVER_VIEW).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while fold(&got_q) != want || fold(&got_w) != want_w {
        assert!(Instant::now() < deadline, "{got_q:?} / {got_w:?}");
        got_q.extend(rows(&sub, "FETCH ALL q WITH (timeout = '200ms')").await);
        got_w.extend(rows(&sub, "FETCH ALL w WITH (timeout = '200ms')").await);
    }
    // No change after the last one: nothing more comes.
    assert!(rows(&sub, "FETCH ALL q WITH (timeout = '300ms')")
        .await
        .is_empty());
    // Timestamps never go back, and one statement's changes share one.
    let stamps: Vec<i64> = got_q.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{got_q:?}");
    let mut distinct = stamps.clone();
    distinct.dedup();
    assert!(distinct.len() <= 1 + statements.len(), "{got_q:?}");
    sub.batch_execute("COMMIT").await.unwrap();

    // A query that fails on the data: FETCH reports the error.
    writer
        .batch_execute("INSERT INTO t VALUES (9, 'z', 9)")
        .await
        .unwrap();
    sub.batch_execute("BEGIN; DECLARE f CURSOR FOR SUBSCRIBE (SELECT 1 / (id - 9) AS x FROM t)")
        .await
        .unwrap();
    let err = sub
        .simple_query("FETCH ALL f WITH (timeout = '5s')")
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("division by zero")),
        "{err:?}"
    );
    sub.batch_execute("ROLLBACK").await.unwrap();
    // Bad queries are refused when declared.
    sub.batch_execute("BEGIN").await.unwrap();
    let err = sub
        .simple_query("DECLARE b CURSOR FOR SUBSCRIBE (SELECT nope FROM t)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42703"));
    sub.batch_execute("ROLLBACK").await.unwrap();
}
