//! `--max-connections`: connections past the limit get Postgres's FATAL
//! 53300 at startup; once one closes, a new one is served.

use std::time::Duration;

mod common;
use common::try_connect as connect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_get_53300() {
    let server = common::start_with("limits", |c| c.max_connections = 2).await;
    let conninfo = server.conninfo.clone();
    let a = connect(&conninfo).await.unwrap();
    let b = connect(&conninfo).await.unwrap();
    let Err(err) = connect(&conninfo).await else {
        panic!("a third connection was admitted");
    };
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53300");
    assert_eq!(db.message(), "sorry, too many clients already");
    assert_eq!(db.severity(), "FATAL");
    // The two admitted sessions work.
    assert_eq!(
        a.query_one("SELECT 1", &[]).await.unwrap().get::<_, i64>(0),
        1
    );
    assert_eq!(
        b.query_one("SELECT 2", &[]).await.unwrap().get::<_, i64>(0),
        2
    );
    // Closing one frees its slot.
    drop(a);
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(c) = connect(&conninfo).await {
            admitted = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = admitted.expect("a connection is served once another closed");
    assert_eq!(
        c.query_one("SELECT 3", &[]).await.unwrap().get::<_, i64>(0),
        3
    );
}
