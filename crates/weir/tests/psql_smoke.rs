//! End-to-end smoke test: the real `weir` binary, driven by the real `psql`.
//!
//! Starts `weir serve` on a free port with a fresh data directory, then runs
//! psql scripts against it and compares psql's exact output. Needs the
//! `psql` client on PATH (Debian: `apt-get install postgresql-client`;
//! `scripts/install-deps.sh` installs it).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A running `weir serve`; killed (and its data directory removed) on drop,
/// including when an assertion fails.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start() -> Server {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("weir-psql-smoke-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temporary directory");
        let port = free_port();
        let log = std::fs::File::create(dir.join("weir.log")).expect("create server log");
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the weir binary");
        let mut server = Server { child, port, dir };
        server.wait_until_accepting();
        server
    }

    fn wait_until_accepting(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "weir exited before accepting connections ({status}); log:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "weir did not accept connections on {addr} within 60s; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("weir.log")).unwrap_or_default()
    }

    /// Run `script` with psql (on stdin, stopping at the first error).
    fn psql(&self, script: &str) -> Output {
        self.psql_with_options(script, None)
    }

    /// [`Server::psql`] with `PGOPTIONS` set to `options`.
    fn psql_with_options(&self, script: &str, options: Option<&str>) -> Output {
        let mut command = Command::new("psql");
        match options {
            Some(o) => command.env("PGOPTIONS", o),
            None => command.env_remove("PGOPTIONS"),
        };
        let mut child = command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "weir", "-d", "weir"])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-q", "-f", "-"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `psql` ({e}): this test needs the PostgreSQL client on PATH \
                     (Debian: apt-get install postgresql-client, or run scripts/install-deps.sh)"
                )
            });
        child
            .stdin
            .take()
            .expect("psql stdin")
            .write_all(script.as_bytes())
            .expect("write the psql script");
        child.wait_with_output().expect("wait for psql")
    }

    /// Run `script`, require success and return stdout.
    fn psql_ok(&self, script: &str) -> String {
        let out = self.psql(script);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "psql failed ({}) on:\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
            out.status,
            self.log()
        );
        assert!(
            stderr.is_empty(),
            "psql wrote to stderr on:\n{script}\n{stderr}"
        );
        stdout
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("weir data and log kept in {}", self.dir.display());
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn require_psql() {
    match Command::new("psql").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`psql --version` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "this test needs the `psql` binary on PATH but running it failed ({e}); \
             install it with `apt-get install postgresql-client` or scripts/install-deps.sh"
        ),
    }
}

const BY_KEY: &str = "SELECT k, n, total FROM by_key ORDER BY k;";
const GLOBAL: &str = "SELECT n, total FROM overall;";

#[test]
fn psql_session_against_the_weir_binary() {
    require_psql();
    let server = Server::start();

    server.psql_ok(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, k TEXT NOT NULL, v BIGINT);
         CREATE MATERIALIZED VIEW by_key AS
             SELECT k, count(*) AS n, sum(v) AS total FROM t GROUP BY k;
         CREATE MATERIALIZED VIEW overall AS
             SELECT count(*) AS n, sum(v) AS total FROM t;",
    );

    // A global aggregate over an empty table has one row, as in Postgres.
    assert_eq!(server.psql_ok(BY_KEY), "");
    assert_eq!(server.psql_ok(GLOBAL), "0|\n");

    server.psql_ok(
        "INSERT INTO t VALUES (1, 'a', 10), (2, 'a', 20), (3, 'b', 5);
         INSERT INTO t VALUES (4, 'c', NULL);",
    );
    assert_eq!(server.psql_ok(BY_KEY), "a|2|30\nb|1|5\nc|1|\n");
    assert_eq!(server.psql_ok(GLOBAL), "4|35\n");

    // UPDATE moves a row between groups and changes a value.
    server.psql_ok("UPDATE t SET k = 'b', v = 7 WHERE id = 2;");
    assert_eq!(server.psql_ok(BY_KEY), "a|1|10\nb|2|12\nc|1|\n");
    assert_eq!(server.psql_ok(GLOBAL), "4|22\n");

    // DELETE empties a group: it disappears from the view.
    server.psql_ok("DELETE FROM t WHERE k = 'c';");
    assert_eq!(server.psql_ok(BY_KEY), "a|1|10\nb|2|12\n");
    assert_eq!(server.psql_ok(GLOBAL), "3|22\n");

    // Writes and reads in one script: each write is visible to the next read.
    let out = server.psql_ok(
        "DELETE FROM t WHERE id = 1;
         SELECT k, n, total FROM by_key ORDER BY k;
         INSERT INTO t VALUES (5, 'a', 1);
         SELECT k, n, total FROM by_key ORDER BY k;
         SELECT n, total FROM overall;",
    );
    assert_eq!(out, "b|2|12\na|1|1\nb|2|12\n3|13\n");

    let out = server.psql_ok("SHOW MATERIALIZED VIEWS;");
    let mut views: Vec<&str> = out.lines().collect();
    views.sort();
    assert_eq!(views, ["by_key", "overall"]);

    // Errors: psql exits non-zero and shows the SQLSTATE and the message.
    let out = server.psql("\\set VERBOSITY verbose\nSELECT * FROM missing;");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "SELECT from a missing table succeeded"
    );
    assert!(
        stderr.contains("42P01") && stderr.contains("relation \"missing\" does not exist"),
        "unexpected psql error output: {stderr}"
    );

    let out = server.psql("\\set VERBOSITY verbose\nINSERT INTO t VALUES (3, 'x', 1);");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "duplicate primary key was accepted");
    assert!(
        stderr.contains("23505"),
        "unexpected psql error output: {stderr}"
    );

    // The failed statements changed nothing, and the server still answers.
    assert_eq!(server.psql_ok(BY_KEY), "a|1|1\nb|2|12\n");
    assert_eq!(server.psql_ok(GLOBAL), "3|13\n");

    // A runtime error while maintaining a view: the write is acknowledged and
    // stored, that view fails with the original SQLSTATE, the others go on.
    server.psql_ok("CREATE MATERIALIZED VIEW ratio AS SELECT id, 100 / v AS r FROM t;");
    server.psql_ok("INSERT INTO t VALUES (6, 'a', 0);");
    let out = server.psql("\\set VERBOSITY verbose\nSELECT * FROM ratio;");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "SELECT from a failed view succeeded");
    assert!(
        stderr.contains("22012") && stderr.contains("ratio"),
        "unexpected psql error output: {stderr}"
    );
    assert_eq!(server.psql_ok("SELECT id, v FROM t WHERE id = 6;"), "6|0\n");
    assert_eq!(server.psql_ok(BY_KEY), "a|2|1\nb|2|12\n");
    assert_eq!(server.psql_ok(GLOBAL), "4|13\n");

    // What the server reports at startup (psql keeps server_version and
    // client_encoding from the ParameterStatus messages) agrees with SHOW
    // and version().
    assert_eq!(
        server.psql_ok("\\echo :SERVER_VERSION_NAME :SERVER_VERSION_NUM :ENCODING"),
        "14.13 140013 UTF8\n"
    );
    assert_eq!(
        server.psql_ok("SHOW server_version; SHOW server_version_num; SHOW DateStyle; SHOW TRANSACTION ISOLATION LEVEL;"),
        "14.13\n140013\nISO, MDY\nserializable\n"
    );
    assert!(server
        .psql_ok("SELECT version();")
        .starts_with("PostgreSQL 14.13 (Weir "));
    // Startup options (`-c name=value`) set the session's parameters.
    let out = server.psql_with_options(
        "SHOW extra_float_digits; SHOW statement_timeout; SHOW DateStyle;",
        Some("-c extra_float_digits=2 --statement-timeout=5 -c DateStyle=ISO,\\ DMY"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n5ms\nISO, DMY\n");
    let out = server.psql("SHOW no_such_setting;");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("unrecognized configuration parameter \"no_such_setting\""),
        "unexpected output for an unknown setting: {stderr}"
    );
}

/// psql's meta-commands read `pg_catalog` (`\d` issues a dozen catalog
/// queries): each lists what Weir has, as psql prints it for Postgres.
#[test]
fn psql_meta_commands() {
    require_psql();
    let server = Server::start();
    server.psql_ok(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, amount NUMERIC(10,2), at TIMESTAMPTZ);
         CREATE TABLE notes (body TEXT);
         CREATE MATERIALIZED VIEW per_customer AS
             SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer;",
    );
    // Unaligned, tuples only: one line per row, columns split by '|'.
    assert_eq!(
        server.psql_ok("\\dt"),
        "public|notes|table|weir\npublic|orders|table|weir\n"
    );
    assert_eq!(
        server.psql_ok("\\dm"),
        "public|per_customer|materialized view|weir\n"
    );
    assert_eq!(server.psql_ok("\\dv"), "");
    assert_eq!(
        server.psql_ok("\\d"),
        "public|notes|table|weir\npublic|orders|table|weir\npublic|per_customer|materialized view|weir\n"
    );
    // A plain view: listed by \dv and \d, described by \d+ with its query.
    server.psql_ok("CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 100;");
    assert_eq!(server.psql_ok("\\dv"), "public|big_orders|view|weir\n");
    let described = server.psql_ok("\\d+ big_orders");
    assert!(
        described.contains("id|bigint") && described.contains("amount|numeric(10,2)"),
        "\\d+ big_orders: {described}"
    );
    server.psql_ok("DROP VIEW big_orders;");
    assert_eq!(server.psql_ok("\\dv"), "");
    // \df lists user functions (Weir has none); \dfS the built-in ones,
    // one row per argument type, and \dfS+ adds volatility, language...
    assert_eq!(server.psql_ok("\\df"), "");
    let abs = server.psql_ok("\\dfS abs");
    assert!(
        abs.contains("pg_catalog|abs|bigint|bigint|func\n")
            && abs.contains("pg_catalog|abs|double precision|double precision|func\n"),
        "\\dfS abs: {abs}"
    );
    let upper = server.psql_ok("\\dfS+ upper");
    assert!(
        upper.starts_with(
            "pg_catalog|upper|text|text|func|immutable|safe|weir|invoker||internal|upper|"
        ),
        "\\dfS+ upper: {upper}"
    );
    let schemas = server.psql_ok("\\dn");
    assert!(schemas.contains("public|weir\n"), "\\dn: {schemas}");
    let databases = server.psql_ok("\\l");
    assert!(databases.starts_with("weir|weir|UTF8|"), "\\l: {databases}");
    // \d NAME: columns with Postgres's type names and nullability (the
    // footer listing the primary key's index is not printed with -t).
    assert_eq!(
        server.psql_ok("\\d orders"),
        "id|bigint||not null|\n\
         customer|text||not null|\n\
         amount|numeric(10,2)|||\n\
         at|timestamp with time zone|||\n"
    );
    assert_eq!(
        server.psql_ok("\\d per_customer"),
        "customer|text|||\nn|bigint|||\ntotal|numeric(20,2)|||\n"
    );
    // \d+ NAME adds storage, compression, statistics and description
    // columns (psql's extra query reads pg_class.reloptions).
    assert_eq!(
        server.psql_ok("\\d+ orders"),
        "id|bigint||not null||plain|||\n\
         customer|text||not null||extended|||\n\
         amount|numeric(10,2)||||main|||\n\
         at|timestamp with time zone||||plain|||\n"
    );
    let out = server.psql("\\pset tuples_only off\n\\d+ per_customer");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("Materialized view \"public.per_customer\"")
            && text.contains("View definition:")
            && text.contains("customer|text||||extended|||"),
        "\\d+ per_customer: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // TIMESTAMPTZ results are shown in the session's TimeZone (names in
    // any case, daylight saving time applied), as in Postgres.
    assert_eq!(
        server.psql_ok(
            "SET TimeZone = 'america/new_york';\n\
             SELECT TIMESTAMPTZ '2024-01-02 03:04:05+00', TIMESTAMPTZ '2024-07-02 03:04:05.5+00';\n\
             SHOW TimeZone;\n\
             SET TIME ZONE 'Asia/Kolkata';\n\
             SELECT TIMESTAMPTZ '2024-01-02 03:04:05+00';\n\
             RESET TimeZone;\n\
             SELECT TIMESTAMPTZ '2024-01-02 03:04:05+00';"
        ),
        "2024-01-01 22:04:05-05|2024-07-01 23:04:05.5-04\n\
         America/New_York\n\
         2024-01-02 08:34:05+05:30\n\
         2024-01-02 03:04:05+00\n"
    );
    let out = server.psql("SET TimeZone = 'Nowhere/Bad';");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid value for parameter \"TimeZone\": \"Nowhere/Bad\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Declared character types show as declared; values too long for them
    // are refused (22001).
    server.psql_ok("CREATE TABLE people (name VARCHAR(20), code CHAR(2), note CHARACTER VARYING);");
    assert_eq!(
        server.psql_ok("\\d people"),
        "name|character varying(20)|||\n\
         code|character(2)|||\n\
         note|character varying|||\n"
    );
    let out = server.psql("INSERT INTO people VALUES ('x', 'abc', NULL);");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("value too long for type character(2)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.psql_ok("DROP TABLE people;");
    // A column named twice keeps its name twice, as in Postgres (psql's
    // column header, printed with tuples_only off).
    assert_eq!(
        server.psql_ok("\\pset tuples_only off\nSELECT 1, 1, o.id, o.* FROM orders o LIMIT 0;"),
        "?column?|?column?|id|id|customer|amount|at\n(0 rows)\n"
    );
    // Window functions DataFusion types as unsigned are bigint, as in
    // Postgres (psql's \gdesc reads the RowDescription).
    assert_eq!(
        server.psql_ok(
            "SELECT row_number() OVER (ORDER BY id) AS r, rank() OVER (ORDER BY id) AS k, id FROM orders \\gdesc"
        ),
        "r|bigint\nk|bigint\nid|bigint\n"
    );
    // \x switches to expanded output.
    assert_eq!(
        server.psql_ok("\\x\nSELECT 1 AS a, 'x' AS b;"),
        "a|1\nb|x\n"
    );
    // Drivers' catalog questions.
    assert_eq!(
        server.psql_ok(
            "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' ORDER BY 1;"
        ),
        "notes|r\norders|r\norders_pkey|i\nper_customer|m\n"
    );
    assert_eq!(
        server.psql_ok(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = i.indkey[1] \
             WHERE i.indrelid = 'orders'::regclass AND i.indisprimary;"
        ),
        "id\n"
    );
}

/// psql's `\copy` (COPY FROM STDIN / TO STDOUT): text and CSV, NULLs,
/// escapes, a column list, bad data refused as a whole, and COPY inside a
/// transaction.
#[test]
fn psql_copy() {
    require_psql();
    let server = Server::start();
    server.psql_ok(
        "CREATE TABLE items (id INT PRIMARY KEY, name TEXT, price NUMERIC(8,2), ok BOOLEAN);
         CREATE MATERIALIZED VIEW stats AS SELECT count(*) AS n, sum(price) AS total FROM items;",
    );
    let dir = std::env::temp_dir().join(format!("weir-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let text = dir.join("items.tsv");
    std::fs::write(
        &text,
        "1\tpen\t1.50\tt\n2\ttab\\there\t\\N\tf\n3\t\\N\t2.25\t\\N\n",
    )
    .expect("write tsv");
    // (psql -q does not print the COPY tag; the rows are checked below.)
    server.psql_ok(&format!("\\copy items FROM '{}'", text.display()));
    assert_eq!(server.psql_ok("SELECT count(*) FROM items;"), "3\n");
    let csv = dir.join("items.csv");
    std::fs::write(&csv, "id,name,price\n4,\"comma, inside\",10\n5,,0.25\n").expect("write csv");
    server.psql_ok(&format!(
        "\\copy items (id, name, price) FROM '{}' WITH (FORMAT csv, HEADER true)",
        csv.display()
    ));
    assert_eq!(server.psql_ok("SELECT n, total FROM stats;"), "5|14.00\n");
    assert_eq!(
        server.psql_ok("SELECT id, name, ok FROM items ORDER BY id;"),
        "1|pen|t\n2|tab\there|f\n3||\n4|comma, inside|\n5||\n"
    );
    // COPY TO STDOUT, text and CSV.
    assert_eq!(
        server.psql_ok(
            "COPY (SELECT id, name, price FROM items WHERE id <= 3 ORDER BY id) TO STDOUT;"
        ),
        "1\tpen\t1.50\n2\ttab\\there\t\\N\n3\t\\N\t2.25\n"
    );
    assert_eq!(
        server.psql_ok("COPY (SELECT id, name FROM items WHERE id >= 4 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER false);"),
        "4,\"comma, inside\"\n5,\n"
    );
    // A bad value refuses the whole COPY: nothing is loaded.
    let bad = dir.join("bad.tsv");
    std::fs::write(&bad, "6\tok\t1\tt\n7\tbad\tnot-a-number\tt\n").expect("write bad");
    let out = server.psql(&format!("\\copy items FROM '{}'", bad.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("price"),
        "{stderr}"
    );
    let out = server.psql(&format!("\\copy items FROM '{}'", text.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("duplicate key"),
        "{stderr}"
    );
    assert_eq!(server.psql_ok("SELECT count(*) FROM items;"), "5\n");
    // Inside a transaction, COPY is one of its writes: ROLLBACK undoes it.
    let more = dir.join("more.tsv");
    std::fs::write(&more, "8\tx\t1\tt\n").expect("write more");
    server.psql_ok(&format!(
        "BEGIN;\n\\copy items FROM '{}'\nROLLBACK;",
        more.display()
    ));
    assert_eq!(server.psql_ok("SELECT count(*) FROM items;"), "5\n");
    server.psql_ok(&format!(
        "BEGIN;\n\\copy items FROM '{}'\nCOMMIT;",
        more.display()
    ));
    assert_eq!(server.psql_ok("SELECT n FROM stats;"), "6\n");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without authentication, the binary refuses a non-loopback address
/// unless `--insecure` is given.
#[test]
fn refuses_public_address_without_insecure() {
    let dir = std::env::temp_dir().join(format!("weir-insecure-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run the weir binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "weir started on 0.0.0.0 without --insecure"
    );
    assert!(stderr.contains("--insecure"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// TLS: with `--tls-cert`/`--tls-key` psql connects with
/// `sslmode=require`; with `--require-tls` a plain connection is refused
/// (FATAL 28000). The certificate is a throwaway one made by `openssl`.
#[test]
fn tls_connections() {
    require_psql();
    let dir = std::env::temp_dir().join(format!("weir-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--require-tls")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn weir");
    let psql = |sslmode: &str| {
        Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={port} user=weir dbname=weir sslmode={sslmode} connect_timeout=5"
            ))
            .args(["-X", "-A", "-t", "-c", "SELECT 40 + 2"])
            .output()
            .expect("run psql")
    };
    let mut secure = psql("require");
    for _ in 0..100 {
        if secure.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        secure = psql("require");
    }
    let plain = psql("disable");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        secure.status.success(),
        "{}",
        String::from_utf8_lossy(&secure.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&secure.stdout), "42\n");
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success() && stderr.contains("requires TLS"),
        "{stderr}"
    );
}
