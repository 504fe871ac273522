//! The extended query protocol with parameters, through a real client:
//! prepared INSERT / UPDATE / DELETE / SELECT with typed `$n` parameters
//! (binary, as tokio-postgres sends them), parameter types inferred by the
//! server, and a materialized view kept up to date by prepared writes.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_with_parameters() {
    let server = common::start("extended").await;
    let client = common::connect(&server.conninfo).await;

    client
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, g TEXT, v BIGINT, x DOUBLE PRECISION);
             CREATE MATERIALIZED VIEW by_g AS SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g;",
        )
        .await
        .unwrap();

    // The server infers $1..$4 from the target columns.
    let insert = client
        .prepare("INSERT INTO t VALUES ($1, $2, $3, $4)")
        .await
        .unwrap();
    let types: Vec<String> = insert
        .params()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    assert_eq!(types, vec!["int4", "text", "int8", "float8"]);
    for (id, g, v) in [(1, "a", 10i64), (2, "a", 5), (3, "b", 7)] {
        let n = client
            .execute(&insert, &[&id, &g, &v, &(id as f64 / 2.0)])
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    // A primary-key conflict through a prepared statement.
    let err = client
        .execute(&insert, &[&1i32, &"z", &0i64, &0.0f64])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"));

    let update = client
        .prepare("UPDATE t SET v = v + $1 WHERE g = $2")
        .await
        .unwrap();
    assert_eq!(client.execute(&update, &[&100i64, &"a"]).await.unwrap(), 2);
    let delete = client.prepare("DELETE FROM t WHERE id = $1").await.unwrap();
    assert_eq!(client.execute(&delete, &[&3i32]).await.unwrap(), 1);

    // Binary results, and the view reflects every prepared write.
    let select = client
        .prepare("SELECT g, n, s FROM by_g WHERE n >= $1 ORDER BY g")
        .await
        .unwrap();
    let rows = client.query(&select, &[&1i64]).await.unwrap();
    let got: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got, vec![("a".to_string(), 2, 215)]);

    let select = client
        .prepare("SELECT id, x FROM t WHERE x > $1 ORDER BY id")
        .await
        .unwrap();
    let rows = client.query(&select, &[&0.6f64]).await.unwrap();
    let got: Vec<(i32, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(2, 1.0)]);
}
