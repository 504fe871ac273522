//! CancelRequest: a client's cancel (tokio-postgres `cancel_query`, which
//! opens a new connection with the session's BackendKeyData) stops its
//! running SELECT with 57014; the session stays usable, other sessions are
//! untouched, and a cancel with a wrong key does nothing.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

mod common;
use common::connect;

/// A query that runs for many seconds.
const SLOW: &str = "SELECT count(*) FROM generate_series(1, 2000000000) a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_select() {
    let server = common::start("cancel").await;
    let config = server.conninfo.clone();
    let client = connect(&config).await;
    let other = connect(&config).await;
    client
        .batch_execute("CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();

    let token = client.cancel_token();
    let started = Instant::now();
    let (result, ()) = tokio::join!(client.simple_query(SLOW), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(NoTls).await.unwrap();
    });
    let err = result.expect_err("the query was canceled");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "57014", "{db:?}");
    assert!(db
        .message()
        .contains("canceling statement due to user request"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "cancel took {:?}",
        started.elapsed()
    );

    // The session goes on, and so does the other one.
    let rows = client.query("SELECT count(*) FROM t", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 2);
    let rows = other.query("SELECT sum(a) FROM t", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 3);

    // A cancel arriving when nothing runs is forgotten: the next query runs.
    client.cancel_token().cancel_query(NoTls).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rows = client.query("SELECT count(*) FROM t", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 2);

    // Cancelling one session leaves another's query alone.
    let token = other.cancel_token();
    let (slow, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(2), client.simple_query(SLOW)),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            token.cancel_query(NoTls).await.unwrap();
        }
    );
    assert!(
        slow.is_err(),
        "a cancel for another session stopped this query"
    );
}
