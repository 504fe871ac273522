//! Wire-level fuzzing: connections that send random bytes, random
//! messages with wrong or huge lengths, and valid messages cut short. The
//! server must answer or drop each such connection without harm: a session
//! opened before keeps working with its data intact, and new connections
//! are served. Seeded (`WEIR_FUZZ_SEED`, `WEIR_FUZZ_CASES`) so a failure
//! can be replayed.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::{message, startup_with};

fn startup() -> Vec<u8> {
    startup_with(&[])
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let mut b = vec![0u8; rng.random_range(0..=max)];
    rng.fill_bytes(&mut b);
    b
}

/// The bytes one fuzz case sends.
fn case(rng: &mut StdRng) -> Vec<u8> {
    let kinds = b"QPBDEHSCXdcfpF";
    match rng.random_range(0..6) {
        // Garbage instead of a startup packet.
        0 => random_bytes(rng, 300),
        // A startup packet cut short, or with a wrong length.
        1 => {
            let mut s = startup();
            if rng.random_bool(0.5) {
                let cut = rng.random_range(0..s.len());
                s.truncate(cut);
            } else {
                let len = rng.random_range(-10i32..100_000);
                s[..4].copy_from_slice(&len.to_be_bytes());
            }
            s
        }
        // Startup, then a random message with a random body.
        2 => {
            let mut s = startup();
            let kind = kinds[rng.random_range(0..kinds.len())];
            s.extend(message(kind, &random_bytes(rng, 200)));
            s
        }
        // Startup, then a message whose length lies (short or huge).
        3 => {
            let mut s = startup();
            let kind = kinds[rng.random_range(0..kinds.len())];
            s.push(kind);
            let len = if rng.random_bool(0.5) {
                rng.random_range(i32::MIN..4)
            } else {
                rng.random_range(1 << 20..i32::MAX)
            };
            s.extend_from_slice(&len.to_be_bytes());
            s.extend(random_bytes(rng, 64));
            s
        }
        // Startup, valid Parse/Bind/Execute cut anywhere.
        4 => {
            let mut s = startup();
            let mut rest = Vec::new();
            rest.extend(message(b'P', b"\0SELECT $1::INT + 1\0\0\0"));
            rest.extend(message(b'B', b"\0\0\0\0\0\x01\0\0\0\x014\0\0"));
            rest.extend(message(b'E', b"\0\0\0\0\0"));
            rest.extend(message(b'S', b""));
            let cut = rng.random_range(0..=rest.len());
            rest.truncate(cut);
            s.extend(rest);
            s
        }
        // Startup, a query, then random bytes.
        _ => {
            let mut s = startup();
            s.extend(message(b'Q', b"SELECT 1\0"));
            s.extend(random_bytes(rng, 100));
            s
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_truncated_messages_harm_nobody() {
    let seed = env_u64("WEIR_FUZZ_SEED", 7);
    let cases = env_u64("WEIR_FUZZ_CASES", 400);
    let server = common::start("fuzz").await;
    let addr = server.server.local_addr();
    let config = server.conninfo.clone();
    let bystander = common::connect(&config).await;
    bystander
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, v TEXT);
             INSERT INTO t VALUES (1, 'a'), (2, 'b');
             CREATE MATERIALIZED VIEW n AS SELECT count(*) AS c FROM t;",
        )
        .await
        .unwrap();

    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..cases {
        let bytes = case(&mut rng);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The server may close the connection while we write: fine.
        let _ = stream.write_all(&bytes).await;
        if rng.random_bool(0.5) {
            let _ = stream.shutdown().await;
        }
        let mut buf = vec![0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await;
        drop(stream);
        if i % 50 == 0 {
            // The bystander is served throughout.
            let rows = bystander.query("SELECT c FROM n", &[]).await.unwrap();
            assert_eq!(rows[0].get::<_, i64>(0), 2, "seed {seed}, case {i}");
        }
    }

    // Everything still works: the old session, a new one, writes and views.
    bystander
        .execute("INSERT INTO t VALUES (3, 'c')", &[])
        .await
        .unwrap();
    let fresh = common::connect(&config).await;
    let rows = fresh.query("SELECT c FROM n", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 3, "seed {seed}");
    let rows = fresh
        .query("SELECT string_agg(v, ',' ORDER BY id) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "a,b,c");
}
