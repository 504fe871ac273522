//! A minimal, blocking Postgres client: startup without authentication and
//! the simple query protocol, values as text. Enough to drive a benchmark
//! without pulling a client library into the workspace's dependency graph
//! (which would change feature unification and rebuild DataFusion).

use std::fmt;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An error: I/O, protocol, or an ErrorResponse from the server.
#[derive(Debug)]
pub enum PgError {
    Io(std::io::Error),
    Protocol(String),
    Server { code: String, message: String },
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Io(e) => write!(f, "I/O error: {e}"),
            PgError::Protocol(m) => write!(f, "protocol error: {m}"),
            PgError::Server { code, message } => write!(f, "ERROR {code}: {message}"),
        }
    }
}

impl std::error::Error for PgError {}

impl From<std::io::Error> for PgError {
    fn from(e: std::io::Error) -> Self {
        PgError::Io(e)
    }
}

/// The result of one statement of a simple query.
#[derive(Debug, Default, Clone)]
pub struct StatementResult {
    /// Data rows; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// The command tag, e.g. `INSERT 0 1000` or `SELECT 3`.
    pub tag: String,
}

impl StatementResult {
    /// The row count at the end of the command tag (0 if none).
    pub fn affected(&self) -> u64 {
        self.tag
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// One connection.
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl Connection {
    /// Connect and log in as `user` to `database` (no password).
    pub fn connect(addr: SocketAddr, user: &str, database: &str) -> Result<Connection, PgError> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
        };
        let mut body = Vec::new();
        body.extend_from_slice(&196_608i32.to_be_bytes()); // protocol 3.0
        for (k, v) in [
            ("user", user),
            ("database", database),
            ("application_name", "weir-bench"),
        ] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        conn.writer
            .write_all(&(body.len() as i32 + 4).to_be_bytes())?;
        conn.writer.write_all(&body)?;
        conn.writer.flush()?;
        let mut error = None;
        loop {
            let (tag, payload) = conn.read_message()?;
            match tag {
                b'R' => {
                    let code = read_i32(&payload, 0)?;
                    if code != 0 {
                        return Err(PgError::Protocol(format!(
                            "the server asks for authentication (method {code}), which this client does not do"
                        )));
                    }
                }
                b'E' => error = Some(server_error(&payload)),
                b'Z' => break,
                _ => {} // ParameterStatus, BackendKeyData, notices
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(conn),
        }
    }

    /// Run `sql` (one or more statements) with the simple query protocol.
    /// Returns one result per statement, or the first error.
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<StatementResult>, PgError> {
        let len = 4 + sql.len() + 1;
        self.writer.write_all(b"Q")?;
        self.writer.write_all(&(len as i32).to_be_bytes())?;
        self.writer.write_all(sql.as_bytes())?;
        self.writer.write_all(&[0])?;
        self.writer.flush()?;
        let mut results = Vec::new();
        let mut current = StatementResult::default();
        let mut error = None;
        loop {
            let (tag, payload) = self.read_message()?;
            match tag {
                b'D' => current.rows.push(data_row(&payload)?),
                b'C' => {
                    current.tag = cstring(&payload, 0)?.0;
                    results.push(std::mem::take(&mut current));
                }
                b'I' => results.push(std::mem::take(&mut current)),
                b'E' => error = Some(server_error(&payload)),
                b'Z' => break,
                _ => {} // RowDescription, notices, ParameterStatus
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(results),
        }
    }

    /// Run one statement and return its result.
    pub fn query_one(&mut self, sql: &str) -> Result<StatementResult, PgError> {
        let mut results = self.simple_query(sql)?;
        if results.len() != 1 {
            return Err(PgError::Protocol(format!(
                "expected 1 result, got {}",
                results.len()
            )));
        }
        Ok(results.remove(0))
    }

    fn read_message(&mut self) -> Result<(u8, Vec<u8>), PgError> {
        let mut head = [0u8; 5];
        self.reader.read_exact(&mut head)?;
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len < 4 {
            return Err(PgError::Protocol(format!("message length {len}")));
        }
        let mut payload = vec![0u8; len as usize - 4];
        self.reader.read_exact(&mut payload)?;
        Ok((head[0], payload))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Terminate.
        let _ = self.writer.write_all(&[b'X', 0, 0, 0, 4]);
        let _ = self.writer.flush();
    }
}

fn read_i32(buf: &[u8], at: usize) -> Result<i32, PgError> {
    buf.get(at..at + 4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| PgError::Protocol("truncated message".into()))
}

fn cstring(buf: &[u8], at: usize) -> Result<(String, usize), PgError> {
    let rest = buf
        .get(at..)
        .ok_or_else(|| PgError::Protocol("truncated message".into()))?;
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| PgError::Protocol("unterminated string".into()))?;
    Ok((
        String::from_utf8_lossy(&rest[..end]).into_owned(),
        at + end + 1,
    ))
}

fn data_row(buf: &[u8]) -> Result<Vec<Option<String>>, PgError> {
    let n = buf
        .get(0..2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| PgError::Protocol("truncated DataRow".into()))?;
    let mut at = 2;
    let mut values = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = read_i32(buf, at)?;
        at += 4;
        if len < 0 {
            values.push(None);
            continue;
        }
        let bytes = buf
            .get(at..at + len as usize)
            .ok_or_else(|| PgError::Protocol("truncated DataRow".into()))?;
        values.push(Some(String::from_utf8_lossy(bytes).into_owned()));
        at += len as usize;
    }
    Ok(values)
}

fn server_error(buf: &[u8]) -> PgError {
    let (mut code, mut message) = (String::new(), String::new());
    let mut at = 0;
    while at < buf.len() && buf[at] != 0 {
        let field = buf[at];
        match cstring(buf, at + 1) {
            Ok((value, next)) => {
                match field {
                    b'C' => code = value,
                    b'M' => message = value,
                    _ => {}
                }
                at = next;
            }
            Err(_) => break,
        }
    }
    PgError::Server { code, message }
}
