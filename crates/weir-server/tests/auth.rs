//! Authentication: SCRAM-SHA-256 (and opt-in MD5 and cleartext) against users
//! made with CREATE / ALTER / DROP USER, failures with 28P01, users kept
//! across a restart, and only a superuser may manage them.

use tokio_postgres::{Client, NoTls};

async fn connect(port: u16, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
    let config = format!("host=127.0.0.1 port={port} user={user} password={password} dbname=weir");
    let (client, connection) = tokio_postgres::connect(&config, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn code(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

/// Logging in as `user` with `password` fails with 28P01.
async fn assert_refused(port: u16, user: &str, password: &str) {
    let e = connect(port, user, password)
        .await
        .map(|_| ())
        .expect_err("the login was refused");
    assert_eq!(code(&e), Some("28P01"), "{user}: {e:?}");
}

async fn server(
    dir: &std::path::Path,
    method: weir_server::AuthMethod,
) -> weir_server::RunningServer {
    let mut config =
        weir_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    config.auth = method;
    config.superuser_password = Some("root-pw".into());
    // A restarted server waits until the previous one let go of the data
    // directory (its connections end asynchronously).
    for _ in 0..100 {
        match weir_server::start(config.clone()).await {
            Ok(s) => return s,
            Err(e) if e.to_string().contains("another Weir server") => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the data directory stayed locked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_users_and_passwords() {
    let dir = std::env::temp_dir().join(format!("weir-auth-{}", std::process::id()));
    let s = server(&dir, weir_server::AuthMethod::ScramSha256).await;
    let port = s.local_addr().port();

    // The superuser, with the password from the configuration.
    let root = connect(port, "weir", "root-pw").await.unwrap();
    assert_refused(port, "weir", "wrong").await;
    assert_refused(port, "nobody", "x").await;

    root.batch_execute("CREATE USER alice WITH PASSWORD 'alice-pw'; CREATE TABLE t (a INT)")
        .await
        .unwrap();
    let alice = connect(port, "alice", "alice-pw").await.unwrap();
    alice
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // ParameterStatus and SHOW say who is a superuser; pg_roles lists both.
    for (client, expected) in [(&root, "on"), (&alice, "off")] {
        let rows = client.simple_query("SHOW is_superuser").await.unwrap();
        let value = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(value.as_deref(), Some(expected));
    }
    let rows = root
        .query(
            "SELECT rolname, rolsuper, rolcanlogin FROM pg_roles ORDER BY rolname",
            &[],
        )
        .await
        .unwrap();
    let roles: Vec<(String, bool, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("alice".to_string(), false, true),
            ("weir".to_string(), true, true)
        ]
    );
    // Only a superuser manages users.
    let e = alice
        .batch_execute("CREATE USER mallory PASSWORD 'x'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some("42501"));
    let e = root.batch_execute("CREATE USER alice").await.unwrap_err();
    assert_eq!(code(&e), Some("42710"));

    root.batch_execute("ALTER USER alice WITH PASSWORD 'new-pw'")
        .await
        .unwrap();
    assert_refused(port, "alice", "alice-pw").await;
    connect(port, "alice", "new-pw").await.unwrap();
    root.batch_execute("CREATE USER bob PASSWORD 'bob-pw'; DROP USER bob")
        .await
        .unwrap();
    assert_refused(port, "bob", "bob-pw").await;
    let e = root.batch_execute("DROP USER weir").await.unwrap_err();
    assert_eq!(code(&e), Some("55006"));
    // alice is in the checkpoint; carol only in the write-ahead log.
    root.batch_execute("CHECKPOINT").await.unwrap();
    root.batch_execute("CREATE USER carol PASSWORD 'carol-pw'")
        .await
        .unwrap();
    drop(root);
    drop(alice);
    s.shutdown().await;

    // After a restart (WAL replay), and with cleartext passwords opted in.
    let s = server(&dir, weir_server::AuthMethod::Password).await;
    let port = s.local_addr().port();
    let alice = connect(port, "alice", "new-pw").await.unwrap();
    let rows = alice.query("SELECT count(*) FROM t", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    assert_refused(port, "alice", "alice-pw").await;
    assert_refused(port, "bob", "bob-pw").await;
    connect(port, "carol", "carol-pw").await.unwrap();
    connect(port, "weir", "root-pw").await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--auth md5` (opt-in): Postgres's MD5 challenge with a per-connection
/// salt; passwords set under it keep their MD5 hash across a restart;
/// passwords set under another method have none and are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_passwords() {
    let dir = std::env::temp_dir().join(format!("weir-auth-md5-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = server(&dir, weir_server::AuthMethod::ScramSha256).await;
    let port = s.local_addr().port();
    let root = connect(port, "weir", "root-pw").await.unwrap();
    root.batch_execute("CREATE USER early PASSWORD 'early-pw'")
        .await
        .unwrap();
    drop(root);
    s.shutdown().await;

    let s = server(&dir, weir_server::AuthMethod::Md5).await;
    let port = s.local_addr().port();
    let root = connect(port, "weir", "root-pw").await.unwrap();
    assert_refused(port, "weir", "wrong").await;
    // Set before MD5 was on: no MD5 hash, refused until set again.
    assert_refused(port, "early", "early-pw").await;
    root.batch_execute("CREATE USER dave PASSWORD 'dave-pw'; ALTER USER early PASSWORD 'early-pw'")
        .await
        .unwrap();
    connect(port, "dave", "dave-pw").await.unwrap();
    connect(port, "early", "early-pw").await.unwrap();
    assert_refused(port, "dave", "Dave-pw").await;
    drop(root);
    s.shutdown().await;

    // Replayed from the WAL with their MD5 hashes; SCRAM still works too.
    let s = server(&dir, weir_server::AuthMethod::Md5).await;
    connect(s.local_addr().port(), "dave", "dave-pw")
        .await
        .unwrap();
    s.shutdown().await;
    let s = server(&dir, weir_server::AuthMethod::ScramSha256).await;
    connect(s.local_addr().port(), "dave", "dave-pw")
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
