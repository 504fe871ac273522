//! The `weir` binary: command-line parsing and logging setup only. Everything
//! else lives in `weir-server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use weir_dataflow::restart::RestartStrategy;

/// jemalloc rather than glibc malloc: with a thread per operator instance
/// and RocksDB's background threads, glibc's arenas kept freed memory and
/// fragmented (see bench/RESULTS.md, "Memory"). It also replaces `malloc`
/// for the whole process, so RocksDB's C++ allocates from it too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: a background thread returns
/// freed pages to the system about a second after they are freed (by
/// default they stay resident for ten, and only while the arena is busy).
/// `MALLOC_CONF` in the environment still overrides them.
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: Option<&'static std::ffi::c_char> = Some(
    // SAFETY: a pointer to the first byte of a NUL-terminated static string,
    // which is what jemalloc reads `malloc_conf` as.
    unsafe { &*c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr() },
);

/// jemalloc's view of the heap, for `weir_catalog.memory`: Weir's and
/// RocksDB's allocations alike.
fn heap_stats() -> Vec<weir_server::MemoryUsage> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // Statistics are cached until the epoch advances.
    if epoch::advance().is_err() {
        return Vec::new();
    }
    let parts: [(&'static str, tikv_jemalloc_ctl::Result<usize>, &'static str); 3] = [
        (
            "heap_allocated",
            stats::allocated::read(),
            "bytes allocated by Weir and RocksDB (jemalloc)",
        ),
        (
            "heap_active",
            stats::active::read(),
            "bytes in pages jemalloc has handed out (allocated plus fragmentation)",
        ),
        (
            "heap_resident",
            stats::resident::read(),
            "bytes jemalloc keeps resident (active plus metadata plus unreturned free pages)",
        ),
    ];
    parts
        .into_iter()
        .filter_map(|(name, bytes, description)| {
            Some(weir_server::MemoryUsage {
                name,
                bytes: bytes.ok()? as u64,
                description,
            })
        })
        .collect()
}

/// Weir: a SQL-first streaming database that speaks the Postgres protocol.
#[derive(Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server.
    Serve {
        /// Address to listen on for Postgres clients.
        #[arg(long, default_value = "127.0.0.1:5466")]
        listen: SocketAddr,
        /// Directory for Weir's data (state, write-ahead log, checkpoints).
        #[arg(long, default_value = "./weir-data")]
        data_dir: PathBuf,
        /// How often to take a checkpoint, e.g. `1s`, `500ms`.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        checkpoint_interval: Duration,
        /// Memory budget for state, MiB: half RocksDB's block cache, a
        /// quarter its memtables, a quarter operators' caches of hot keys.
        #[arg(long, default_value_t = 256)]
        state_cache_mb: usize,
        /// Complete checkpoints kept on disk.
        #[arg(long, default_value_t = 3)]
        checkpoints_retained: usize,
        /// Default restart strategy of views: exponential-backoff,
        /// fixed-delay, failure-rate or none (Flink's defaults for each).
        #[arg(long, default_value = "exponential-backoff")]
        restart_strategy: String,
        /// Instances of each stateful operator of views that do not fix
        /// their own (`SET streaming_parallelism`); default: the number of
        /// cores.
        #[arg(long)]
        parallelism: Option<usize>,
        /// Connections served at once; more get FATAL 53300, as in Postgres.
        #[arg(long, default_value_t = 100)]
        max_connections: usize,
        /// Allow listening on a non-loopback address although clients are
        /// not authenticated (anyone who can reach the port can connect).
        #[arg(long)]
        insecure: bool,
        /// PEM certificate chain for TLS (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for TLS (with --tls-cert).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Refuse clients that do not use TLS.
        #[arg(long, requires = "tls_cert")]
        require_tls: bool,
        /// How clients authenticate: trust (anyone), scram-sha-256, md5
        /// (opt-in, for old clients) or password (cleartext, opt-in). The superuser `weir` gets its
        /// password from the WEIR_PASSWORD environment variable.
        #[arg(long, default_value = "trust")]
        auth: weir_server::AuthMethod,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            checkpoint_interval,
            state_cache_mb,
            checkpoints_retained,
            restart_strategy,
            parallelism,
            max_connections,
            insecure,
            tls_cert,
            tls_key,
            require_tls,
            auth,
        } => runtime.block_on(async move {
            if !listen.ip().is_loopback() && !insecure && auth == weir_server::AuthMethod::Trust {
                eprintln!(
                    "weir: refusing to listen on {listen}: clients are not authenticated, so \
                     anyone who can reach this address could read and change all data. \
                     Use --auth scram-sha-256 (with WEIR_PASSWORD), listen on 127.0.0.1, \
                     or pass --insecure to accept this."
                );
                return std::process::ExitCode::FAILURE;
            }
            let restart_strategy =
                match RestartStrategy::named(&restart_strategy, &Default::default()) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("weir: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                };
            let mut config = weir_server::ServerConfig::new(listen, data_dir);
            config.checkpoint_interval = checkpoint_interval;
            config.state_cache_mb = state_cache_mb.max(8);
            config.checkpoints_retained = checkpoints_retained.max(1);
            config.restart_strategy = restart_strategy;
            if let Some(p) = parallelism {
                config.parallelism = p.max(1);
            }
            config.max_connections = max_connections.max(1);
            config.tls = tls_cert.zip(tls_key);
            config.require_tls = require_tls;
            config.heap_stats = Some(heap_stats);
            config.auth = auth;
            config.superuser_password = std::env::var("WEIR_PASSWORD").ok().filter(|p| !p.is_empty());
            if auth != weir_server::AuthMethod::Trust && config.superuser_password.is_none() {
                tracing::warn!("authentication is on but WEIR_PASSWORD is not set: the superuser weir can log in only if a checkpoint gave it a password");
            }
            let server = match weir_server::start(config).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("weir: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            tracing::info!(addr = %server.local_addr(), "weir is listening");
            wait_for_shutdown_signal().await;
            tracing::info!("shutting down");
            server.shutdown().await;
            std::process::ExitCode::SUCCESS
        }),
    }
}

/// Ctrl-C or SIGTERM.
async fn wait_for_shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
