//! The Weir server: the catalog of tables and views, statement execution,
//! read-your-writes consistency, and the Postgres wire front end.
//!
//! Entry point: [`start`] binds a listener and serves connections; each
//! statement goes through [`engine::Engine::execute`]. A row's path:
//! `wire` (pgwire) → `engine` (plans with DataFusion, applies DML to a
//! `TableStore`) → the table's `Outlet` → each view's operator pipeline
//! (`weir-dataflow`) → the view's `Materialize` state → SELECT via
//! `provider` (a DataFusion `TableProvider`).

pub mod catalog;
mod copy_format;
pub mod engine;
mod error;
mod log_record;
mod params;
pub mod pg_catalog;
pub mod provider;
pub mod session;
mod text_format;
pub mod users;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use engine::{Engine, QueryResult};
pub use error::ServerError;
pub use weir_state::MemoryUsage;

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address for Postgres clients (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory for Weir's data: `state/` (RocksDB, the working copy of
    /// operator state), `wal/` (the table write-ahead log) and
    /// `checkpoints/` (Parquet state files and manifests).
    pub data_dir: PathBuf,
    /// How often the coordinator takes a checkpoint.
    pub checkpoint_interval: Duration,
    /// Memory budget for state, in MiB: half for RocksDB's block cache, a
    /// quarter for its memtables, a quarter for operators' caches of
    /// decoded keys.
    pub state_cache_mb: usize,
    /// Complete checkpoints kept on disk.
    pub checkpoints_retained: usize,
    /// The restart strategy of views that do not name one.
    pub restart_strategy: weir_dataflow::restart::RestartStrategy,
    /// Instances of each stateful operator of a view that does not fix its
    /// own parallelism (the default of `streaming_parallelism`).
    pub parallelism: usize,
    /// Connections served at once; more are refused with FATAL 53300.
    pub max_connections: usize,
    /// PEM certificate chain and private key: clients may use TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Refuse clients that do not use TLS (FATAL 28000).
    pub require_tls: bool,
    /// How clients prove who they are.
    pub auth: AuthMethod,
    /// Password of the superuser `weir`, set at every start.
    pub superuser_password: Option<String>,
    /// The process allocator's statistics, for `weir_catalog.memory`: the
    /// binary chooses the allocator, so it says how to measure it.
    pub heap_stats: Option<fn() -> Vec<weir_state::MemoryUsage>>,
}

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Anyone connects as anyone (the default; loopback only unless
    /// `--insecure`).
    Trust,
    /// SCRAM-SHA-256, the password never crossing the wire.
    ScramSha256,
    /// The password in clear (opt-in: only over TLS or a trusted network).
    Password,
    /// Postgres's MD5 challenge (opt-in, for old clients: passwords are
    /// then also kept as MD5 hashes).
    Md5,
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "trust" => Ok(AuthMethod::Trust),
            "scram-sha-256" | "scram" => Ok(AuthMethod::ScramSha256),
            "password" => Ok(AuthMethod::Password),
            "md5" => Ok(AuthMethod::Md5),
            other => Err(format!(
                "unknown authentication method \"{other}\" (trust, scram-sha-256, md5, password)"
            )),
        }
    }
}

impl ServerConfig {
    /// Defaults: 1 s checkpoints, 256 MiB state cache, 3 checkpoints kept,
    /// exponential-backoff restarts.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        ServerConfig {
            listen,
            data_dir,
            checkpoint_interval: Duration::from_secs(1),
            state_cache_mb: 256,
            checkpoints_retained: 3,
            restart_strategy: weir_dataflow::restart::RestartStrategy::default(),
            parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_connections: 100,
            tls: None,
            require_tls: false,
            auth: AuthMethod::Trust,
            superuser_password: None,
            heap_stats: None,
        }
    }
}

/// A TLS acceptor for the PEM certificate chain `cert` and key `key`.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        ServerError::Startup(format!("cannot read TLS {what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", cert, &e))?;
    if certs.is_empty() {
        return Err(bad("certificate", cert, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, &e))?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Startup(format!("invalid TLS certificate or key: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// One open connection, counted while it lives.
struct ConnectionCount {
    active: Arc<std::sync::atomic::AtomicUsize>,
    /// Open connections, this one included.
    n: usize,
}

impl ConnectionCount {
    fn enter(active: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        let n = active.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        ConnectionCount {
            active: Arc::clone(active),
            n,
        }
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.active
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A server accepting connections in the background.
pub struct RunningServer {
    addr: SocketAddr,
    engine: Arc<Engine>,
    accept_task: JoinHandle<()>,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engine, for in-process use.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stop accepting connections and stop every dataflow.
    pub async fn shutdown(self) {
        self.accept_task.abort();
        self.engine.shutdown();
    }
}

/// Create the data directory, bind the listener and serve in the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        ServerError::Startup(format!(
            "cannot create data directory {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Startup(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Startup(e.to_string()))?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None if config.require_tls => {
            return Err(ServerError::Startup(
                "--require-tls needs --tls-cert and --tls-key".into(),
            ))
        }
        None => None,
    };
    let engine = Engine::open(&config).await?;
    let handlers = wire::WeirHandlers::new(Arc::clone(&engine), config.require_tls);
    let max_connections = config.max_connections;
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accept_task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((socket, _)) => {
                    let _ = socket.set_nodelay(true);
                    // Past the limit the connection is still read, so the
                    // client gets Postgres's FATAL 53300 at startup.
                    let count = ConnectionCount::enter(&active);
                    let over = count.n > max_connections;
                    let handlers = Arc::new(handlers.for_connection(over));
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let _count = count;
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(RunningServer {
        addr,
        engine,
        accept_task,
    })
}
