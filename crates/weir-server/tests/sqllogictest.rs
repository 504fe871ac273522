//! Runs every `sql-tests/**/*.slt` file against a real Weir server, over the
//! Postgres wire protocol, twice: once with the simple query protocol (all
//! values arrive as text) and once with the extended protocol (values arrive
//! in binary and are formatted here exactly as Postgres prints them). Each
//! file gets a fresh server, so files are independent.
//!
//! ```text
//! cargo test --workspace --test sqllogictest
//! ```
//!
//! Environment:
//! - `WEIR_SLT_FILTER=<substring>[|<substring>...]`: only run files whose
//!   path contains one of them.
//! - `WEIR_SLT_MODE=simple|extended`: only run one protocol mode.
//! - Test `sqllogictest_postgres` runs the same files against a real
//!   Postgres, to check the expected results: a throwaway server it starts
//!   itself (`tests/common/postgres.rs`), or the one
//!   `WEIR_SLT_POSTGRES=<conninfo>` names. `CREATE/DROP MATERIALIZED VIEW` become plain
//!   `CREATE/DROP VIEW` there (a view's rows are exactly what an
//!   incrementally maintained materialized view must contain); records
//!   specific to Weir are marked `onlyif weir`; files under `streaming/`
//!   (sources, sinks) are Weir-only and skipped. Each file runs in a fresh
//!   database created through the given connection, e.g.
//!   `WEIR_SLT_POSTGRES="host=127.0.0.1 port=5499 user=postgres"`.
//!   Adding `WEIR_SLT_OVERRIDE=1 WEIR_SLT_MODE=simple` rewrites the files'
//!   expected results with Postgres' output (review the diff!).
//!
//! Conventions of the .slt files: NULL prints as `NULL`, the empty string as
//! `(empty)`, booleans as `t`/`f`; errors display as `<SQLSTATE>: <message>`,
//! so `statement error 42P01` matches on the SQLSTATE. Conditions: `onlyif
//! weir` / `skipif postgres` and `onlyif simple` / `onlyif extended`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod common;

use async_trait::async_trait;
use chrono::{NaiveDate, NaiveDateTime};
use sqllogictest::{DBOutput, DefaultColumnType, Record, Runner};
use tokio::task::JoinHandle;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// How long one statement may take before the file is abandoned.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Simple,
    Extended,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Simple => "simple",
            Mode::Extended => "extended",
        }
    }
}

/// Which server the files run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Weir,
    Postgres,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Weir => "weir",
            Engine::Postgres => "postgres",
        }
    }
}

/// An error as the .slt files see it: `<SQLSTATE>: <message>`.
#[derive(Debug)]
struct SqlError {
    code: Option<String>,
    message: String,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => write!(f, "(no SQLSTATE): {}", self.message),
        }
    }
}

impl std::error::Error for SqlError {}

impl SqlError {
    fn other(message: impl Into<String>) -> Self {
        SqlError {
            code: None,
            message: message.into(),
        }
    }
}

impl From<tokio_postgres::Error> for SqlError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => SqlError {
                code: Some(db.code().code().to_string()),
                message: db.message().to_string(),
            },
            None => SqlError {
                code: e.code().map(|c| c.code().to_string()),
                message: e.to_string(),
            },
        }
    }
}

/// One client connection, implementing [`sqllogictest::AsyncDB`].
struct Conn {
    client: Client,
    mode: Mode,
    engine: Engine,
    connection: JoinHandle<()>,
    /// Set once a statement timed out: the server may be stuck, so every
    /// further statement fails at once instead of waiting again.
    abandoned: bool,
}

impl Conn {
    async fn connect(config: &str, mode: Mode, engine: Engine) -> Result<Conn, SqlError> {
        let (client, connection) = tokio_postgres::connect(config, NoTls).await?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            client,
            mode,
            engine,
            connection,
            abandoned: false,
        })
    }

    async fn run_simple(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let messages = self.client.simple_query(sql).await?;
        let mut has_rows = false;
        let mut width = 0;
        let mut rows = Vec::new();
        let mut count = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(columns) => {
                    has_rows = true;
                    width = columns.len();
                }
                SimpleQueryMessage::Row(row) => {
                    has_rows = true;
                    width = row.len();
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(s) => s.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        if has_rows {
            Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; width],
                rows,
            })
        } else {
            Ok(DBOutput::StatementComplete(count))
        }
    }

    async fn run_extended(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let stmt = self.client.prepare(sql).await?;
        if stmt.columns().is_empty() {
            let n = self.client.execute(&stmt, &[]).await?;
            return Ok(DBOutput::StatementComplete(n));
        }
        let width = stmt.columns().len();
        let result = self.client.query(&stmt, &[]).await?;
        let mut rows = Vec::with_capacity(result.len());
        for row in &result {
            let mut out = Vec::with_capacity(width);
            for i in 0..row.len() {
                let raw: Raw = row.try_get(i)?;
                out.push(raw.to_text());
            }
            rows.push(out);
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; width],
            rows,
        })
    }
}

/// On Postgres, Weir's incrementally maintained materialized views become
/// plain views: their contents are by definition the defining query's result.
fn translate_for_postgres(sql: &str) -> String {
    let trimmed = sql.trim_start();
    let upper = trimmed.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().take(3).collect();
    if words.len() == 3
        && words[1] == "MATERIALIZED"
        && words[2] == "VIEW"
        && (words[0] == "CREATE" || words[0] == "DROP")
    {
        // Rebuild "<verb> VIEW <rest>".
        let mut rest = trimmed;
        for _ in 0..3 {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            rest = &rest[end..];
        }
        return format!("{} VIEW{}", words[0], rest);
    }
    sql.to_string()
}

#[async_trait]
impl sqllogictest::AsyncDB for Conn {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        if self.abandoned {
            return Err(SqlError::other(
                "connection abandoned after an earlier statement timed out",
            ));
        }
        let sql = match self.engine {
            Engine::Weir => sql.to_string(),
            Engine::Postgres => translate_for_postgres(sql),
        };
        let fut = async {
            match self.mode {
                Mode::Simple => self.run_simple(&sql).await,
                Mode::Extended => self.run_extended(&sql).await,
            }
        };
        match tokio::time::timeout(STATEMENT_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => {
                self.abandoned = true;
                Err(SqlError::other(format!(
                    "statement timed out after {STATEMENT_TIMEOUT:?} (the server hangs?)"
                )))
            }
        }
    }

    async fn shutdown(&mut self) {
        self.connection.abort();
    }

    fn engine_name(&self) -> &str {
        self.engine.name()
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &Self::Error) -> Option<String> {
        err.code.clone()
    }
}

/// A value of any type in its binary wire form.
struct Raw {
    ty: Type,
    bytes: Option<Vec<u8>>,
}

impl<'a> FromSql<'a> for Raw {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw {
            ty: ty.clone(),
            bytes: Some(raw.to_vec()),
        })
    }

    fn from_sql_null(ty: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw {
            ty: ty.clone(),
            bytes: None,
        })
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn be<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.get(..N)?.try_into().ok()
}

impl Raw {
    /// The text Postgres would print for this value.
    fn to_text(&self) -> String {
        let Some(b) = &self.bytes else {
            return "NULL".to_string();
        };
        self.format(b)
            .unwrap_or_else(|| format!("<undecodable {} value {:02x?}>", self.ty, b))
    }

    fn format(&self, b: &[u8]) -> Option<String> {
        let text = match self.ty {
            Type::BOOL => match b.first()? {
                0 => "f".to_string(),
                _ => "t".to_string(),
            },
            Type::INT2 => i16::from_be_bytes(be(b)?).to_string(),
            Type::INT4 => i32::from_be_bytes(be(b)?).to_string(),
            Type::INT8 => i64::from_be_bytes(be(b)?).to_string(),
            Type::OID => u32::from_be_bytes(be(b)?).to_string(),
            Type::UUID => uuid::Uuid::from_slice(b).ok()?.hyphenated().to_string(),
            Type::FLOAT4 => {
                let v = f32::from_be_bytes(be(b)?);
                format_float(v as f64, format!("{v:e}"), 6)
            }
            Type::FLOAT8 => {
                let v = f64::from_be_bytes(be(b)?);
                format_float(v, format!("{v:e}"), 15)
            }
            Type::NUMERIC => format_numeric(b)?,
            Type::DATE => format_date(i32::from_be_bytes(be(b)?))?,
            Type::TIME => format_time_of_day(i64::from_be_bytes(be(b)?)),
            Type::TIMESTAMP => format_timestamp(i64::from_be_bytes(be(b)?))?,
            Type::TIMESTAMPTZ => {
                // Sessions run with TimeZone = UTC.
                let ts = i64::from_be_bytes(be(b)?);
                let s = format_timestamp(ts)?;
                if ts == i64::MAX || ts == i64::MIN {
                    s
                } else {
                    format!("{s}+00")
                }
            }
            Type::INTERVAL => {
                let micros = i64::from_be_bytes(be(b)?);
                let days = i32::from_be_bytes(be(&b[8..])?);
                let months = i32::from_be_bytes(be(&b[12..])?);
                format_interval(micros, days, months)
            }
            // Text-like types (text, varchar, bpchar, name, unknown, ...)
            // are sent as their UTF-8 bytes.
            _ => std::str::from_utf8(b).ok()?.to_string(),
        };
        Some(if text.is_empty() {
            "(empty)".to_string()
        } else {
            text
        })
    }
}

/// Postgres' shortest-exact float output: fixed notation when the decimal
/// exponent is in `-4..max_fixed_exp`, otherwise `1.5e+20` style.
/// `sci` is Rust's shortest round-trip `{:e}` rendering of the value.
fn format_float(v: f64, sci: String, max_fixed_exp: i32) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    let (negative, sci) = match sci.strip_prefix('-') {
        Some(s) => (true, s.to_string()),
        None => (false, sci),
    };
    let sign = if negative { "-" } else { "" };
    if v == 0.0 {
        return format!("{sign}0");
    }
    let (mantissa, exp) = sci.split_once('e').expect("{:e} output has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..max_fixed_exp).contains(&exp) {
        let n = digits.len() as i32;
        if exp < 0 {
            format!("{sign}0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{sign}{}{}", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let (int, frac) = digits.split_at((exp + 1) as usize);
            format!("{sign}{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{esign}{:02}", exp.abs())
    }
}

/// Postgres' binary numeric: ndigits, weight, sign, dscale, then base-10000
/// digits.
fn format_numeric(b: &[u8]) -> Option<String> {
    let ndigits = i16::from_be_bytes(be(b)?) as usize;
    let weight = i16::from_be_bytes(be(&b[2..])?) as i32;
    let sign = u16::from_be_bytes(be(&b[4..])?);
    let dscale = u16::from_be_bytes(be(&b[6..])?) as usize;
    match sign {
        0xC000 => return Some("NaN".to_string()),
        0xD000 => return Some("Infinity".to_string()),
        0xF000 => return Some("-Infinity".to_string()),
        _ => {}
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(i16::from_be_bytes(be(&b[8 + 2 * i..])?) as i32);
    }
    // Digit group i has weight `weight - i`.
    let group = |w: i32| -> i32 {
        let idx = weight - w;
        if idx >= 0 && (idx as usize) < digits.len() {
            digits[idx as usize]
        } else {
            0
        }
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for w in (0..=weight).rev() {
            if w == weight {
                out.push_str(&group(w).to_string());
            } else {
                out.push_str(&format!("{:04}", group(w)));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut w = -1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", group(w)));
            w -= 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Some(out)
}

fn pg_epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .expect("valid date")
        .and_hms_opt(0, 0, 0)
        .expect("valid time")
}

fn format_date(days: i32) -> Option<String> {
    match days {
        i32::MAX => return Some("infinity".to_string()),
        i32::MIN => return Some("-infinity".to_string()),
        _ => {}
    }
    let d = pg_epoch().date() + chrono::Duration::days(days as i64);
    Some(d.format("%Y-%m-%d").to_string())
}

/// `.ffffff` with trailing zeros removed, or nothing for whole seconds.
fn fraction(micros: i64) -> String {
    if micros == 0 {
        return String::new();
    }
    let s = format!(".{:06}", micros.abs());
    s.trim_end_matches('0').to_string()
}

fn format_time_of_day(micros: i64) -> String {
    let secs = micros / 1_000_000;
    format!(
        "{:02}:{:02}:{:02}{}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        fraction(micros % 1_000_000)
    )
}

fn format_timestamp(micros: i64) -> Option<String> {
    match micros {
        i64::MAX => return Some("infinity".to_string()),
        i64::MIN => return Some("-infinity".to_string()),
        _ => {}
    }
    let ts = pg_epoch().checked_add_signed(chrono::Duration::microseconds(micros))?;
    let sub = ts.and_utc().timestamp_subsec_micros() as i64;
    Some(format!(
        "{}{}",
        ts.format("%Y-%m-%d %H:%M:%S"),
        fraction(sub)
    ))
}

/// Postgres' `IntervalStyle = postgres` output (EncodeInterval).
fn format_interval(micros: i64, days: i32, months: i32) -> String {
    let mut out = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |out: &mut String, value: i64, unit: &str| {
        if value == 0 {
            return;
        }
        out.push_str(&format!(
            "{}{}{} {}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            value,
            unit,
            if value != 1 { "s" } else { "" }
        ));
        is_before = value < 0;
        is_zero = false;
    };
    part(&mut out, (months / 12) as i64, "year");
    part(&mut out, (months % 12) as i64, "mon");
    part(&mut out, days as i64, "day");
    let hour = micros / 3_600_000_000;
    let min = (micros % 3_600_000_000) / 60_000_000;
    let sec = (micros % 60_000_000) / 1_000_000;
    let fsec = micros % 1_000_000;
    if is_zero || hour != 0 || min != 0 || sec != 0 || fsec != 0 {
        let minus = hour < 0 || min < 0 || sec < 0 || fsec < 0;
        out.push_str(&format!(
            "{}{}{:02}:{:02}:{:02}{}",
            if is_zero { "" } else { " " },
            if minus {
                "-"
            } else if is_before {
                "+"
            } else {
                ""
            },
            hour.abs(),
            min.abs(),
            sec.abs(),
            fraction(fsec)
        ));
    }
    out
}

/// Every `.slt` file under `sql-tests/`, sorted, filtered by `WEIR_SLT_FILTER`.
fn slt_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "slt") {
                out.push(p);
            }
        }
    }
    let root = sql_tests_root();
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    if let Ok(filter) = std::env::var("WEIR_SLT_FILTER") {
        let parts: Vec<&str> = filter.split('|').collect();
        files.retain(|f| {
            let path = f.to_string_lossy();
            parts.iter().any(|p| path.contains(p))
        });
    }
    files
}

fn sql_tests_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql-tests")
}

fn display_name(path: &Path) -> String {
    path.strip_prefix(sql_tests_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn modes() -> Vec<Mode> {
    match std::env::var("WEIR_SLT_MODE").as_deref() {
        Ok("simple") => vec![Mode::Simple],
        Ok("extended") => vec![Mode::Extended],
        _ => vec![Mode::Simple, Mode::Extended],
    }
}

/// Run every record of one file, continuing after failures; returns one
/// message per failed record.
async fn run_file(path: &Path, config: String, mode: Mode, engine: Engine) -> Vec<String> {
    let records = match sqllogictest::parse_file::<DefaultColumnType>(path) {
        Ok(r) => r,
        Err(e) => return vec![format!("cannot parse: {e}")],
    };
    let mut runner = Runner::new(move || {
        let config = config.clone();
        async move { Conn::connect(&config, mode, engine).await }
    });
    runner.add_label(engine.name());
    runner.add_label(mode.name());
    let mut failures = Vec::new();
    for record in records {
        if let Record::Halt { .. } = record {
            break;
        }
        if let Err(e) = runner.run_async(record).await {
            failures.push(e.display(false).to_string());
        }
    }
    runner.shutdown_async().await;
    failures
}

static SERVER_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Start a fresh Weir server, run one file against it, stop it.
async fn run_file_on_weir(path: &Path, mode: Mode) -> Vec<String> {
    let data_dir = std::env::temp_dir().join(format!(
        "weir-slt-{}-{}",
        std::process::id(),
        SERVER_COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let server = match weir_server::start(weir_server::ServerConfig::new(
        "127.0.0.1:0".parse().expect("valid address"),
        data_dir.clone(),
    ))
    .await
    {
        Ok(s) => s,
        Err(e) => return vec![format!("cannot start server: {e}")],
    };
    let addr = server.local_addr();
    let config = format!(
        "host={} port={} user=weir dbname=weir",
        addr.ip(),
        addr.port()
    );
    let failures = run_file(path, config, mode, Engine::Weir).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    failures
}

/// Create a fresh database on the Postgres at `admin`, run one file in it.
async fn run_file_on_postgres(admin: &str, path: &Path, mode: Mode, index: usize) -> Vec<String> {
    let db = format!("weir_slt_{}_{index}", mode.name());
    let setup = async {
        let (client, connection) = tokio_postgres::connect(admin, NoTls).await?;
        let task = tokio::spawn(connection);
        client
            .simple_query(&format!("DROP DATABASE IF EXISTS {db}"))
            .await?;
        client
            .simple_query(&format!("CREATE DATABASE {db}"))
            .await?;
        drop(client);
        let _ = task.await;
        Ok::<_, tokio_postgres::Error>(())
    };
    if let Err(e) = setup.await {
        return vec![format!(
            "cannot create database {db}: {}",
            SqlError::from(e)
        )];
    }
    let config = format!(
        "{admin} dbname={db} options='-c TimeZone=UTC -c IntervalStyle=postgres -c DateStyle=ISO'"
    );
    if std::env::var_os("WEIR_SLT_OVERRIDE").is_some() {
        // Rewrite the file's expected results with what Postgres returns.
        let engine = Engine::Postgres;
        let mut runner = Runner::new(move || {
            let config = config.clone();
            async move { Conn::connect(&config, mode, engine).await }
        });
        runner.add_label(engine.name());
        runner.add_label(mode.name());
        let result = runner
            .update_test_file(
                path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await;
        runner.shutdown_async().await;
        return match result {
            Ok(()) => vec![],
            Err(e) => vec![format!("cannot update: {e}")],
        };
    }
    run_file(path, config, mode, Engine::Postgres).await
}

fn report(engine: Engine, files: usize, failures: &[(String, Mode, String)]) {
    let runs = files * modes().len();
    if failures.is_empty() {
        eprintln!(
            "sqllogictest ({}): {runs} file runs, all passed",
            engine.name()
        );
        return;
    }
    let mut failed_runs: Vec<(String, Mode)> =
        failures.iter().map(|(f, m, _)| (f.clone(), *m)).collect();
    failed_runs.dedup();
    for (file, mode, message) in failures {
        eprintln!("==== {file} [{}] ====\n{message}\n", mode.name());
    }
    eprintln!(
        "sqllogictest ({}): {} failed records in {} of {runs} file runs:",
        engine.name(),
        failures.len(),
        failed_runs.len()
    );
    for (file, mode) in &failed_runs {
        let n = failures
            .iter()
            .filter(|(f, m, _)| f == file && m == mode)
            .count();
        eprintln!("  {file} [{}]: {n} failed", mode.name());
    }
    panic!("{} sqllogictest records failed", failures.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest() {
    let files = slt_files();
    assert!(
        !files.is_empty(),
        "no .slt files found under {}",
        sql_tests_root().display()
    );
    let mut failures = Vec::new();
    for file in &files {
        for mode in modes() {
            for message in run_file_on_weir(file, mode).await {
                failures.push((display_name(file), mode, message));
            }
        }
    }
    report(Engine::Weir, files.len(), &failures);
}

/// The same files against a real Postgres (see the module docs): the one
/// `WEIR_SLT_POSTGRES` names, or a throwaway server this test starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_postgres() {
    let mut _own = None;
    let admin = match std::env::var("WEIR_SLT_POSTGRES") {
        Ok(conninfo) => conninfo,
        Err(_) => {
            let pg = common::postgres::Postgres::start("slt");
            let admin = pg.admin_conninfo();
            _own = Some(pg);
            admin
        }
    };
    // Files under streaming/ use Weir's own statements (sources, sinks).
    let files: Vec<_> = slt_files()
        .into_iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "streaming"))
        .collect();
    let mut failures = Vec::new();
    for (i, file) in files.iter().enumerate() {
        for mode in modes() {
            for message in run_file_on_postgres(&admin, file, mode, i).await {
                failures.push((display_name(file), mode, message));
            }
        }
    }
    report(Engine::Postgres, files.len(), &failures);
}

#[test]
fn formats_like_postgres() {
    assert_eq!(format_float(1.5, format!("{:e}", 1.5f64), 15), "1.5");
    assert_eq!(format_float(1e15, format!("{:e}", 1e15f64), 15), "1e+15");
    assert_eq!(
        format_float(1e14, format!("{:e}", 1e14f64), 15),
        "100000000000000"
    );
    assert_eq!(
        format_float(0.0001, format!("{:e}", 0.0001f64), 15),
        "0.0001"
    );
    assert_eq!(
        format_float(0.00001, format!("{:e}", 0.00001f64), 15),
        "1e-05"
    );
    assert_eq!(
        format_float(-123.25, format!("{:e}", -123.25f64), 15),
        "-123.25"
    );
    assert_eq!(format_float(1e6, format!("{:e}", 1e6f32), 6), "1e+06");
    assert_eq!(
        format_float(123456.0, format!("{:e}", 123456f32), 6),
        "123456"
    );
    assert_eq!(format_interval(0, 0, 0), "00:00:00");
    assert_eq!(format_interval(7_200_000_000, 1, 0), "1 day 02:00:00");
    assert_eq!(
        format_interval(-1_500_000, 0, 14),
        "1 year 2 mons -00:00:01.5"
    );
    assert_eq!(format_interval(3_600_000_000, -1, 0), "-1 days +01:00:00");
    assert_eq!(format_interval(0, 3, -1), "-1 mons +3 days");
    assert_eq!(format_timestamp(0).unwrap(), "2000-01-01 00:00:00");
    assert_eq!(format_timestamp(-1).unwrap(), "1999-12-31 23:59:59.999999");
    assert_eq!(format_date(-1).unwrap(), "1999-12-31");
    // 12345.6780 as numeric(9,4): weight 1, digits [1, 2345, 6780].
    let mut b = vec![0, 3, 0, 1, 0, 0, 0, 4];
    for d in [1i16, 2345, 6780] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    assert_eq!(format_numeric(&b).unwrap(), "12345.6780");
    // -0.05 as numeric(3,2): weight -1, digits [500].
    let mut b = vec![0, 1, 0xff, 0xff, 0x40, 0, 0, 2];
    b.extend_from_slice(&500i16.to_be_bytes());
    assert_eq!(format_numeric(&b).unwrap(), "-0.05");
}

/// Column names are invisible to .slt files; check the ones clients rely on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_column_names() {
    let data_dir = std::env::temp_dir().join(format!("weir-slt-names-{}", std::process::id()));
    let server = weir_server::start(weir_server::ServerConfig::new(
        "127.0.0.1:0".parse().expect("valid address"),
        data_dir.clone(),
    ))
    .await
    .expect("server starts");
    let addr = server.local_addr();
    let config = format!(
        "host={} port={} user=weir dbname=weir",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&config, NoTls)
        .await
        .expect("connects");
    let task = tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE t (a INT); CREATE MATERIALIZED VIEW v AS SELECT a FROM t")
        .await
        .expect("setup");
    for sql in ["SHOW TABLES", "SHOW MATERIALIZED VIEWS"] {
        let messages = client.simple_query(sql).await.expect(sql);
        let names: Vec<String> = messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::RowDescription(cols) => {
                    Some(cols.iter().map(|c| c.name().to_string()).collect())
                }
                _ => None,
            })
            .expect("a row description");
        assert_eq!(names, vec!["Name".to_string()], "{sql} (simple protocol)");
        let stmt = client.prepare(sql).await.expect(sql);
        let names: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, vec!["Name"], "{sql} (extended protocol)");
    }
    drop(client);
    task.abort();
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
