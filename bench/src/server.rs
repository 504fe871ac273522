//! Starting `weir serve` for a benchmark, and reading a process's resource
//! use from /proc.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Boxed error of the benchmark binaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `bin`, or the `weir` binary next to the running program.
pub fn weir_binary(bin: Option<&Path>) -> Result<PathBuf, BoxError> {
    match bin {
        Some(b) => Ok(b.to_path_buf()),
        None => Ok(std::env::current_exe()?
            .parent()
            .ok_or("cannot locate this program's directory")?
            .join("weir")),
    }
}

/// A `weir serve` started by a benchmark, with a temporary data directory;
/// killed on drop.
pub struct SpawnedServer {
    /// The server process.
    pub child: Child,
    dir: PathBuf,
    keep: bool,
    name: String,
}

impl SpawnedServer {
    /// Bytes under the server's data directory (RocksDB state, checkpoint
    /// files, write-ahead log).
    pub fn data_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => std::fs::read_dir(p)
                    .map(|d| d.flatten().map(|e| walk(&e.path())).sum())
                    .unwrap_or(0),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        }
        walk(&self.dir.join("data"))
    }

    /// Start `bin` on a free port with `extra` arguments and wait until it
    /// listens. `name` prefixes the temporary directory.
    pub fn start(
        bin: &Path,
        name: &str,
        keep: bool,
        extra: &[String],
    ) -> Result<(SpawnedServer, SocketAddr), BoxError> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let dir = std::env::temp_dir().join(format!("weir-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.join("weir.log"))?;
        let child = Command::new(bin)
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(dir.join("data"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut server = SpawnedServer {
            child,
            dir,
            keep,
            name: name.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(
                    format!("weir exited at startup ({status}); log:\n{}", server.log()).into(),
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok((server, addr));
            }
            if Instant::now() > deadline {
                return Err(format!("weir did not listen on {addr} within 60s").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("weir.log")).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.keep {
            eprintln!(
                "{}: server data and log kept in {}",
                self.name,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Peak resident set size of a process in MiB (Linux `VmHWM`).
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parens.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks; USER_HZ is 100 on every platform Weir runs on.
    Some((utime + stime) / 100.0)
}
