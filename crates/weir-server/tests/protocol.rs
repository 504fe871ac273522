//! Protocol details that drivers rely on, checked on the raw wire: the
//! ParameterStatus messages of the startup, GSSENCRequest and SSLRequest
//! answered with 'N' (no TLS configured here), errors in the extended
//! protocol skipping to Sync, and several statements in one Query.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::{message, startup_with};

/// A backend message: its type byte and body.
struct Msg {
    kind: u8,
    body: Vec<u8>,
}

impl Msg {
    /// The NUL-terminated strings of the body.
    fn strings(&self) -> Vec<String> {
        self.body
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    }

    /// The SQLSTATE of an ErrorResponse.
    fn sqlstate(&self) -> Option<String> {
        self.body
            .split(|b| *b == 0)
            .find_map(|f| f.strip_prefix(b"C"))
            .map(|c| String::from_utf8_lossy(c).into_owned())
    }
}

async fn read_msg(stream: &mut TcpStream) -> Msg {
    let read = async {
        let kind = stream.read_u8().await?;
        let len = stream.read_i32().await?;
        let mut body = vec![0u8; (len - 4) as usize];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(Msg { kind, body })
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server answers within 10 s")
        .expect("a whole message")
}

/// Messages up to and including the next ReadyForQuery.
async fn until_ready(stream: &mut TcpStream) -> Vec<Msg> {
    let mut out = Vec::new();
    loop {
        let m = read_msg(stream).await;
        let done = m.kind == b'Z';
        out.push(m);
        if done {
            return out;
        }
    }
}

fn kinds(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.kind as char).collect()
}

/// Send a startup packet with `params`; the messages until ReadyForQuery.
async fn start_session(stream: &mut TcpStream, params: &[(&str, &str)]) -> Vec<Msg> {
    stream.write_all(&startup_with(params)).await.unwrap();
    until_ready(stream).await
}

/// A request code packet (SSLRequest, GSSENCRequest): length 8, code.
fn request(code: i32) -> Vec<u8> {
    let mut p = 8i32.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_reports_what_drivers_read() {
    let server = common::start("protocol-startup").await;
    let mut stream = TcpStream::connect(server.server.local_addr())
        .await
        .unwrap();
    let msgs = start_session(
        &mut stream,
        &[
            ("application_name", "probe"),
            ("options", "-c TimeZone=Europe/Paris"),
        ],
    )
    .await;
    // AuthenticationOk first, then parameters, BackendKeyData, ready.
    assert_eq!(msgs[0].kind, b'R');
    assert_eq!(msgs[0].body, 0i32.to_be_bytes());
    let params: HashMap<String, String> = msgs
        .iter()
        .filter(|m| m.kind == b'S')
        .map(|m| {
            let s = m.strings();
            (s[0].clone(), s[1].clone())
        })
        .collect();
    for (name, value) in [
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", "probe"),
        ("is_superuser", "on"),
        ("session_authorization", "weir"),
        ("TimeZone", "Europe/Paris"),
    ] {
        assert_eq!(
            params.get(name).map(String::as_str),
            Some(value),
            "ParameterStatus {name} in {params:?}"
        );
    }
    let version = &params["server_version"];
    assert!(version.starts_with("14."), "server_version {version}");
    let key = msgs
        .iter()
        .find(|m| m.kind == b'K')
        .expect("BackendKeyData");
    assert_eq!(key.body.len(), 8, "process id and secret key");
    assert_eq!(msgs.last().map(|m| m.body.clone()), Some(b"I".to_vec()));

    // The same value through SHOW: one settings table.
    stream
        .write_all(&message(b'Q', b"SHOW server_version\0"))
        .await
        .unwrap();
    let reply = until_ready(&mut stream).await;
    assert_eq!(kinds(&reply), "TDCZ");
    let shown = String::from_utf8_lossy(&reply[1].body[6..]).into_owned();
    assert_eq!(&shown, version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_and_ssl_requests_get_n_then_startup_goes_on() {
    let server = common::start("protocol-requests").await;
    for code in [80_877_104, 80_877_103] {
        let mut stream = TcpStream::connect(server.server.local_addr())
            .await
            .unwrap();
        stream.write_all(&request(code)).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), stream.read_u8())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, b'N', "request code {code}");
        let msgs = start_session(&mut stream, &[]).await;
        assert_eq!(msgs[0].kind, b'R', "request code {code}");
        stream
            .write_all(&message(b'Q', b"SELECT 41 + 1\0"))
            .await
            .unwrap();
        let reply = until_ready(&mut stream).await;
        assert_eq!(kinds(&reply), "TDCZ", "request code {code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_errors_skip_to_sync() {
    let server = common::start("protocol-sync").await;
    let mut stream = TcpStream::connect(server.server.local_addr())
        .await
        .unwrap();
    start_session(&mut stream, &[]).await;

    // A Parse that fails: Bind, Describe and Execute after it are skipped
    // without answers until Sync, which gets ReadyForQuery.
    let mut batch = message(b'P', b"\0SELEC 1\0\0\0");
    batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(message(b'D', b"P\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    stream.write_all(&batch).await.unwrap();
    let reply = until_ready(&mut stream).await;
    assert_eq!(kinds(&reply), "EZ");
    assert_eq!(reply[0].sqlstate().as_deref(), Some("42601"));

    // An error at Execute: the rest up to Sync is skipped too, and the next
    // Sync-delimited batch runs normally.
    let mut batch = message(b'P', b"\0SELECT 1 / $1::INT\0\0\0");
    batch.extend(message(b'B', b"\0\0\0\0\0\x01\0\0\0\x010\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'P', b"\0SELECT 2\0\0\0"));
    batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    batch.extend(message(b'P', b"\0SELECT 3\0\0\0"));
    batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    stream.write_all(&batch).await.unwrap();
    let reply = until_ready(&mut stream).await;
    assert_eq!(kinds(&reply), "12EZ");
    assert_eq!(reply[2].sqlstate().as_deref(), Some("22012"));
    let reply = until_ready(&mut stream).await;
    assert_eq!(kinds(&reply), "12DCZ");
    assert_eq!(&reply[2].body[6..], b"3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_statements_in_one_query_stop_at_the_first_error() {
    let server = common::start("protocol-multi").await;
    let mut stream = TcpStream::connect(server.server.local_addr())
        .await
        .unwrap();
    start_session(&mut stream, &[]).await;
    stream
        .write_all(&message(
            b'Q',
            b"CREATE TABLE m (a INT); INSERT INTO m VALUES (1); SELECT a FROM m\0",
        ))
        .await
        .unwrap();
    let reply = until_ready(&mut stream).await;
    assert_eq!(kinds(&reply), "CCTDCZ");
    assert_eq!(reply[1].strings()[0], "INSERT 0 1");

    stream
        .write_all(&message(
            b'Q',
            b"INSERT INTO m VALUES (2); SELEC; INSERT INTO m VALUES (3)\0",
        ))
        .await
        .unwrap();
    let reply = until_ready(&mut stream).await;
    assert_eq!(kinds(&reply), "EZ", "a syntax error fails the whole string");
    stream
        .write_all(&message(b'Q', b"SELECT count(*) FROM m\0"))
        .await
        .unwrap();
    let reply = until_ready(&mut stream).await;
    assert_eq!(&reply[1].body[6..], b"1");
}
