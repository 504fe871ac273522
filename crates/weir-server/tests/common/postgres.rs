#![allow(dead_code)]
//! A throwaway PostgreSQL server for oracle tests: `initdb` into a fresh
//! directory, started on a free loopback port, stopped and removed on drop.
//! It uses the Debian packages `install-deps.sh` installs
//! (`/usr/lib/postgresql/<version>/bin`); as root it runs the server as
//! the `postgres` user (Postgres refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running Postgres; stopped and its directory removed on drop.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    /// `host=127.0.0.1 port=... user=postgres dbname=postgres`.
    pub conninfo: String,
    pub port: u16,
}

/// The newest installed server's `bin` directory.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("WEIR_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args...`, as the `postgres` user when we are root.
fn run_as_postgres(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u")
            .arg("postgres")
            .arg("--")
            .arg(program)
            .args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl Postgres {
    /// Start a fresh server named after `name`. Panics with the reason
    /// when Postgres is not installed or does not start.
    pub fn start(name: &str) -> Postgres {
        let bin = bin_dir().expect(
            "PostgreSQL server binaries not found under /usr/lib/postgresql (scripts/install-deps.sh installs them)",
        );
        let dir = std::env::temp_dir().join(format!("weir-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the Postgres directory");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown of {} failed", dir.display());
        }
        let data = dir.join("data");
        let data_s = data.to_string_lossy().to_string();
        let out = run_as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        .stdout(Stdio::null())
        .output()
        .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = dir.join("log").to_string_lossy().to_string();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50 -c TimeZone=UTC -c IntervalStyle=postgres -c DateStyle=ISO",
            dir.to_string_lossy()
        );
        let out = run_as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D", &data_s, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        )
        .stdout(Stdio::null())
        .output()
        .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "Postgres did not start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Postgres {
            bin,
            dir,
            conninfo: format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            port,
        }
    }

    /// Connection string without a database (the `postgres` user's own).
    pub fn admin_conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres", self.port)
    }

    /// Connection string of a database `db` on this server.
    pub fn conninfo_of(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").to_string_lossy().to_string();
        let _ = run_as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "immediate", "stop"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
