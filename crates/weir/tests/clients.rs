//! Real Postgres clients against the `weir` binary: psycopg2, psycopg 3,
//! asyncpg, SQLAlchemy (Core and the inspector), pgJDBC (including
//! server-prepared binary statements and DatabaseMetaData) and psqlODBC
//! through pyodbc. Each runs its script in `tests/clients/` against a fresh
//! server (`tests/clients/run.sh`); every check asserts values, types and
//! SQLSTATEs. The drivers come from `scripts/install-client-deps.sh`
//! (called by `scripts/install-deps.sh`).

use std::process::Command;

#[test]
fn real_clients() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let out = Command::new("bash")
        .arg(dir.join("run.sh"))
        .arg(env!("CARGO_BIN_EXE_weir"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run tests/clients/run.sh: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "a client failed (setup: scripts/install-client-deps.sh):\n{stdout}\n{stderr}"
    );
    for client in [
        "psycopg2",
        "psycopg3",
        "asyncpg",
        "odbc",
        "jdbc",
        "sqlalchemy",
    ] {
        assert!(
            stdout.contains(&format!("PASS  {client} (")),
            "{client} did not pass:\n{stdout}"
        );
    }
}
