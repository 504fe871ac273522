//! Shared by the integration tests: an in-process server with a fresh
//! data directory on a free port, and client connections to it.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod postgres;

use tokio_postgres::{Client, NoTls};

/// A running server; its data directory is removed on drop.
pub struct TestServer {
    pub server: weir_server::RunningServer,
    /// `host=... port=... user=weir dbname=weir`.
    pub conninfo: String,
    pub dir: PathBuf,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server with the default configuration, its data in a directory
/// named after `name`.
pub async fn start(name: &str) -> TestServer {
    start_with(name, |_| {}).await
}

/// A server whose configuration `configure` adjusts first.
pub async fn start_with(
    name: &str,
    configure: impl FnOnce(&mut weir_server::ServerConfig),
) -> TestServer {
    let dir = std::env::temp_dir().join(format!("weir-{name}-{}", std::process::id()));
    let mut config = weir_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.clone());
    configure(&mut config);
    let server = weir_server::start(config).await.unwrap();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=weir dbname=weir",
        server.local_addr().port()
    );
    TestServer {
        server,
        conninfo,
        dir,
    }
}

/// A connection, or the error the server gave.
pub async fn try_connect(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A connection; fails the test if the server refuses it.
pub async fn connect(conninfo: &str) -> Client {
    try_connect(conninfo).await.unwrap()
}

/// A startup packet (protocol 3.0) for user `weir`, database `weir`, with
/// more `(name, value)` parameters.
pub fn startup_with(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes());
    for (k, v) in [("user", "weir"), ("database", "weir")]
        .iter()
        .chain(params)
    {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// A frontend message: type byte, length, body.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}
