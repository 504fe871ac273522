//! Durability features through a real client, in process:
//! - a checkpoint read back with a plain Parquet reader equals the view's
//!   live contents (the open checkpoint format of docs/checkpoint-format.md);
//! - restart strategies: a transient failure is restarted and the view is
//!   exact again; `fixed-delay` gives up after its attempts and the view is
//!   FAILED with its last error; reading a restarting or failed view errors;
//! - a graceful restart on the same data directory recovers everything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_postgres::{Client, NoTls};
use weir_common::arrow::array::{Array, BinaryArray, UInt8Array};
use weir_common::arrow::datatypes::{DataType, Field, Schema};
use weir_dataflow::row_codec::RowCodec;
use weir_server::{RunningServer, ServerConfig};

fn data_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-durability-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn start(dir: &std::path::Path) -> (RunningServer, Client) {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    // Checkpoints only when a test asks (CHECKPOINT), so files are predictable.
    config.checkpoint_interval = Duration::from_secs(3600);
    // A server stopped in this process lets go of the directory once its
    // last connection task ends; retry briefly.
    let mut attempts = 0;
    let server = loop {
        match weir_server::start(config.clone()).await {
            Ok(s) => break s,
            Err(e) if attempts < 50 => {
                attempts += 1;
                eprintln!("retrying start: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("server does not start: {e}"),
        }
    };
    let conn = format!(
        "host=127.0.0.1 port={} user=weir dbname=weir",
        server.local_addr().port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls).await.unwrap();
    tokio::spawn(connection);
    (server, client)
}

async fn rows(client: &Client, sql: &str) -> Vec<String> {
    let mut out: Vec<String> = client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_files_are_plain_parquet_matching_live_state() {
    let dir = data_dir("parquet");
    let (server, client) = start(&dir).await;
    client
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, g INT, v BIGINT);
             CREATE MATERIALIZED VIEW agg AS SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g;
             INSERT INTO t SELECT value, value % 7, value * 3 FROM generate_series(1, 20000);
             CHECKPOINT;
             DELETE FROM t WHERE g = 3;
             UPDATE t SET v = v + 1 WHERE g = 4;
             CHECKPOINT;",
        )
        .await
        .unwrap();
    // The newest manifest names the view's state tables; the view's rows
    // live in its first one.
    let ck = dir.join("checkpoints");
    let mut manifests: Vec<_> = std::fs::read_dir(&ck)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("manifest-")
        })
        .collect();
    manifests.sort();
    let text = std::fs::read_to_string(manifests.last().unwrap()).unwrap();
    let outer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let manifest: serde_json::Value = match &outer["manifest"] {
        serde_json::Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    };
    let relations = manifest["catalog"]["relations"].as_array().unwrap();
    let view = relations.iter().find(|r| r["name"] == "agg").unwrap();
    let id = view["state_ids"][0].as_u64().unwrap();
    let chain = manifest["tables"][id.to_string()].as_array().unwrap();
    assert!(!chain.is_empty());
    assert_eq!(chain[0]["kind"], "full");
    // Apply the chain (full, then deltas) read with the plain Parquet reader.
    let mut state: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
    for file in chain {
        let f = std::fs::File::open(ck.join(file["name"].as_str().unwrap())).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let schema = batch.schema();
            assert_eq!(schema.field(0).name(), "vnode");
            assert_eq!(schema.field(1).name(), "key");
            assert_eq!(schema.field(2).name(), "value");
            let vnodes = batch
                .column(0)
                .as_any()
                .downcast_ref::<UInt8Array>()
                .unwrap();
            let keys = batch
                .column(1)
                .as_any()
                .downcast_ref::<BinaryArray>()
                .unwrap();
            let values = batch
                .column(2)
                .as_any()
                .downcast_ref::<BinaryArray>()
                .unwrap();
            for i in 0..batch.num_rows() {
                let mut k = vec![vnodes.value(i)];
                k.extend_from_slice(keys.value(i));
                if values.is_null(i) {
                    state.remove(&k);
                } else {
                    state.insert(k, values.value(i).to_vec());
                }
            }
        }
    }
    // Keys are the view's rows in Arrow's row format; values their count.
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int32, true),
        Field::new("n", DataType::Int64, true),
        Field::new("s", DataType::Int64, true),
    ]));
    let codec = RowCodec::for_schema(&schema).unwrap();
    let batch = codec
        .decode_batch(&schema, state.keys().map(|k| &k[1..]))
        .unwrap();
    let mut from_files = Vec::new();
    for i in 0..batch.num_rows() {
        let col = |c: usize| {
            weir_common::arrow::util::display::array_value_to_string(batch.column(c), i).unwrap()
        };
        let count = i64::from_be_bytes(state.values().nth(i).unwrap()[..8].try_into().unwrap());
        for _ in 0..count {
            from_files.push(format!("{}|{}|{}", col(0), col(1), col(2)));
        }
    }
    from_files.sort();
    let live = rows(&client, "SELECT g, n, s FROM agg").await;
    assert_eq!(live.len(), 6);
    assert_eq!(from_files, live);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn wait_status(client: &Client, view: &str, want: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = rows(
            client,
            &format!("SELECT status, restart_count, last_error FROM weir_catalog.dataflows WHERE name = '{view}'"),
        )
        .await;
        if got.first().is_some_and(|r| r.starts_with(want)) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{view} never became {want}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_views_restart_by_their_strategy() {
    let dir = data_dir("restart");
    let (server, client) = start(&dir).await;
    client
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, d INT);
             INSERT INTO t VALUES (1, 1), (2, 2), (3, 5);
             CREATE MATERIALIZED VIEW ratio WITH (restart_strategy = 'exponential-backoff', initial_backoff = '200ms') AS SELECT id, 100 / d AS r FROM t;
             CREATE MATERIALIZED VIEW on_ratio AS SELECT count(*) AS n, sum(r) AS s FROM ratio;
             CREATE MATERIALIZED VIEW doomed WITH (restart_strategy = 'fixed-delay', attempts = 2, delay = '50ms') AS SELECT id, 10 / d AS q FROM t;
             CREATE MATERIALIZED VIEW healthy AS SELECT count(*) AS n FROM t;",
        )
        .await
        .unwrap();
    assert_eq!(
        wait_status(&client, "ratio", "RUNNING").await,
        vec!["RUNNING|0|NULL"]
    );
    // A row that breaks both views: the write is acknowledged.
    client
        .batch_execute("INSERT INTO t VALUES (4, 0)")
        .await
        .unwrap();
    let err = client
        .simple_query("SELECT * FROM ratio")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"), "{err}");
    let err = client
        .simple_query("SELECT * FROM on_ratio")
        .await
        .unwrap_err();
    assert!(err.code().is_some(), "{err}");
    // Other views keep serving.
    assert_eq!(rows(&client, "SELECT n FROM healthy").await, vec!["4"]);
    // fixed-delay gives up after 2 restarts: FAILED, last error kept.
    let doomed = wait_status(&client, "doomed", "FAILED").await;
    assert_eq!(doomed.len(), 1);
    assert!(doomed[0].starts_with("FAILED|2|22012"), "{doomed:?}");
    let err = client
        .simple_query("SELECT * FROM doomed")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("has failed") || format!("{err:?}").contains("has failed"),
        "{err:?}"
    );
    // The bad row goes away: the next restart of `ratio` succeeds, and the
    // view on it is rebuilt with it.
    client
        .batch_execute("DELETE FROM t WHERE id = 4")
        .await
        .unwrap();
    let status = wait_status(&client, "ratio", "RUNNING").await;
    let restarts: u32 = status[0].split('|').nth(1).unwrap().parse().unwrap();
    assert!(restarts >= 1, "{status:?}");
    wait_status(&client, "on_ratio", "RUNNING").await;
    assert_eq!(
        rows(&client, "SELECT id, r FROM ratio").await,
        vec!["1|100", "2|50", "3|20"]
    );
    assert_eq!(
        rows(&client, "SELECT n, s FROM on_ratio").await,
        vec!["3|170"]
    );
    // And it keeps up afterwards.
    client
        .batch_execute("INSERT INTO t VALUES (5, 10)")
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT n, s FROM on_ratio").await,
        vec!["4|180"]
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_the_same_directory_recovers_everything() {
    let dir = data_dir("reopen");
    let mut plans = Vec::new();
    {
        let (server, client) = start(&dir).await;
        client
            .batch_execute(
                "CREATE TABLE t (id INT PRIMARY KEY, g TEXT, v DOUBLE PRECISION);
                 CREATE TABLE m (x INT);
                 CREATE MATERIALIZED VIEW by_g AS SELECT g, count(*) AS n, min(v) AS lo, max(v) AS hi FROM t GROUP BY g;
                 CREATE MATERIALIZED VIEW d AS SELECT DISTINCT x FROM m;
                 INSERT INTO t VALUES (1, 'a', 1.5), (2, 'a', -2), (3, 'b', 7);
                 INSERT INTO m VALUES (1), (1), (2);
                 CHECKPOINT;
                 DELETE FROM t WHERE id = 2;
                 INSERT INTO m VALUES (3);
                 DELETE FROM m WHERE x = 2;
                 CREATE MATERIALIZED VIEW late AS SELECT g, sum(v) AS s FROM t GROUP BY g;
                 DROP MATERIALIZED VIEW d;",
            )
            .await
            .unwrap();
        // The plans the catalog stores: by_g's in the checkpoint, late's
        // in the log.
        for view in ["by_g", "late"] {
            let plan = rows(&client, &format!("EXPLAIN MATERIALIZED VIEW {view}")).await;
            assert!(plan.iter().any(|l| l.contains("HashAggregate")), "{plan:?}");
            plans.push(plan);
        }
        drop(client);
        server.shutdown().await;
        // Let the engine and its data directory lock go.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (server, client) = start(&dir).await;
    assert_eq!(
        rows(&client, "SELECT g, n, lo, hi FROM by_g").await,
        vec!["a|1|1.5|1.5", "b|1|7|7"]
    );
    assert_eq!(
        rows(&client, "SELECT g, s FROM late").await,
        vec!["a|1.5", "b|7"]
    );
    assert_eq!(rows(&client, "SELECT x FROM m").await, vec!["1", "1", "3"]);
    // Recovery instantiated the stored plans: the same fragments,
    // operators and state tables.
    for (view, before) in ["by_g", "late"].iter().zip(&plans) {
        let after = rows(&client, &format!("EXPLAIN MATERIALIZED VIEW {view}")).await;
        assert_eq!(&after, before, "{view}");
    }
    let err = client.simple_query("SELECT * FROM d").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"));
    let rec = rows(
        &client,
        "SELECT checkpoint_epoch > 0, wal_records_replayed FROM weir_catalog.recovery",
    )
    .await;
    assert_eq!(rec, vec!["t|5"]);
    // Writes continue after recovery, views keep up.
    client
        .batch_execute("INSERT INTO t VALUES (9, 'b', 1)")
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT g, n FROM by_g").await,
        vec!["a|1", "b|2"]
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Views created over a view while checkpoints run every few milliseconds
/// and writes keep arriving: each CREATE succeeds (a checkpoint barrier
/// still passing through the upstream view once failed it, its file
/// collected as garbage) and each view counts every upstream row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_created_during_checkpoints_are_exact() {
    const VIEWS: usize = 40;
    let dir = data_dir("create-during-checkpoints");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.clone());
    config.checkpoint_interval = Duration::from_millis(5);
    let server = weir_server::start(config).await.unwrap();
    let conn = format!(
        "host=127.0.0.1 port={} user=weir dbname=weir",
        server.local_addr().port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, g INT);
             CREATE MATERIALIZED VIEW by_g AS SELECT g, count(*) AS n FROM t GROUP BY g;",
        )
        .await
        .unwrap();
    let (writer, connection) = tokio_postgres::connect(&conn, NoTls).await.unwrap();
    tokio::spawn(connection);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut id = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let values: Vec<String> = (id..id + 500)
                    .map(|i| format!("({i}, {})", i % 5000))
                    .collect();
                writer
                    .batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", ")))
                    .await
                    .unwrap();
                id += 500;
            }
        })
    };
    for i in 0..VIEWS {
        client
            .batch_execute(&format!(
                "CREATE MATERIALIZED VIEW total_{i} AS SELECT count(*) AS groups, sum(n) AS n FROM by_g"
            ))
            .await
            .unwrap_or_else(|e| panic!("CREATE of view {i} failed: {e:?}"));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writes.await.unwrap();
    let want = rows(&client, "SELECT count(DISTINCT g), count(*) FROM t").await;
    for i in 0..VIEWS {
        assert_eq!(
            rows(&client, &format!("SELECT groups, n FROM total_{i}")).await,
            want,
            "view total_{i}"
        );
    }
    drop(client);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
